//! jobwatch: watches Huawei Cloud Workspace sub-jobs and delivers every
//! status transition, durably and with backoff. See `ARCHITECTURE.md`.

pub mod cli;
pub mod cloud;
pub mod config;
pub mod daemon;
pub mod metrics;
pub mod notify;
pub mod pg;
pub mod ratelimit;
pub mod retry;
pub mod route;
pub mod secret;
pub mod silence;
pub mod sim;
pub mod storage;
pub mod store;
pub mod watch;

/// Installs the one TLS crypto provider (ring) for the process. reqwest and
/// lettre would otherwise disagree and panic at the first client built.
/// Safe to call more than once.
pub fn install_crypto_provider() {
    // `Err` only means a provider is already installed, which is fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
}
