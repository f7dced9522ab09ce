//! The one integration-test binary (see STYLE.md): modules per area.

mod config;
mod signer;
