//! The one integration-test binary (see STYLE.md): modules per area.

mod diff;
mod config;
mod signer;
mod store;
mod sim;
