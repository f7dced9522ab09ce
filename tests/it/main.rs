//! The one integration-test binary (see STYLE.md): modules per area.

mod accounts;
mod all_kinds;
mod architecture;
mod chat;
mod client;
mod commands;
mod config;
mod crash;
mod daemon;
mod delivery;
mod diff;
mod email;
mod grouping;
mod hostile;
mod incremental;
mod lifecycles;
mod poller;
mod router;
mod secrets;
mod service;
mod signer;
mod sim;
mod smtp_sink;
mod store;
mod support;
mod templates;
