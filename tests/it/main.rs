//! The one integration-test binary (see STYLE.md): modules per area.

mod chat;
mod client;
mod config;
mod delivery;
mod diff;
mod signer;
mod sim;
mod store;
mod support;
mod templates;
