//! The one integration-test binary (see STYLE.md): modules per area.

mod client;
mod config;
mod delivery;
mod diff;
mod email;
mod signer;
mod sim;
mod smtp_sink;
mod store;
mod support;
