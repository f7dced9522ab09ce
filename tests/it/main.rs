//! The one integration-test binary (see STYLE.md): modules per area.

mod chat;
mod diff;
mod signer;
mod store;
