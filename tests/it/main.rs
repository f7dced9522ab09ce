//! The one integration-test binary (see STYLE.md): modules per area.

mod diff;
mod signer;
mod store;
