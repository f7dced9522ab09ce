//! The one integration-test binary (see STYLE.md): modules per area.

mod client;
mod config;
mod crash;
mod daemon;
mod delivery;
mod diff;
mod signer;
mod sim;
mod store;
mod support;
