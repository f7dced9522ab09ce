//! systemd integration: `READY=1`, `STATUS=`, `RELOADING=1`, `STOPPING=1`
//! and `WATCHDOG=1` over `$NOTIFY_SOCKET`. Without the variable every call
//! is a no-op, so the daemon runs the same outside systemd.

use std::time::Duration;

use sd_notify::NotifyState;

#[derive(Debug, Clone, Copy)]
pub struct Systemd {
    enabled: bool,
    watchdog: Option<Duration>,
}

impl Systemd {
    pub fn from_env() -> Systemd {
        Systemd {
            enabled: std::env::var_os("NOTIFY_SOCKET").is_some(),
            watchdog: sd_notify::watchdog_enabled(),
        }
    }

    /// Tells nobody anything: for a daemon embedded in another process
    /// (tests, `demo`), whose environment belongs to someone else.
    pub fn off() -> Systemd {
        Systemd {
            enabled: false,
            watchdog: None,
        }
    }

    /// How often to send `WATCHDOG=1`: half the configured `WatchdogSec`.
    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.watchdog.map(|d| d / 2)
    }

    pub fn ready(&self) {
        self.send(&[NotifyState::Ready]);
    }

    pub fn status(&self, status: &str) {
        self.send(&[NotifyState::Status(status)]);
    }

    pub fn reloading(&self) {
        let mut states = vec![NotifyState::Reloading];
        // systemd ≥ 253 wants the time of the reload with it.
        if let Ok(now) = NotifyState::monotonic_usec_now() {
            states.push(now);
        }
        self.send(&states);
    }

    pub fn stopping(&self) {
        self.send(&[NotifyState::Stopping]);
    }

    pub fn watchdog(&self) {
        self.send(&[NotifyState::Watchdog]);
    }

    fn send(&self, states: &[NotifyState<'_>]) {
        if !self.enabled {
            return;
        }
        if let Err(e) = sd_notify::notify(states) {
            tracing::warn!(error = %e, "cannot notify systemd");
        }
    }
}
