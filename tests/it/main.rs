//! The one integration-test binary (see STYLE.md): modules per area.

mod signer;
mod sim;
