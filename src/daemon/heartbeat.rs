//! The dead-man switch (`[heartbeat]`): a GET after healthy cycles, at most
//! every `every`. While any target's polling fails it stays silent, so the
//! external monitor notices.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;
use url::Url;

use crate::watch::Target;

#[derive(Debug)]
pub struct Heartbeat {
    url: Url,
    every: Duration,
    http: reqwest::Client,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Each target's last cycle: healthy or not.
    healthy: HashMap<Target, bool>,
    last_ping: Option<Instant>,
    /// The last ping failed (logged once until it works again).
    failing: bool,
}

impl Heartbeat {
    pub fn new(url: Url, every: Duration, timeout: Duration) -> anyhow::Result<Heartbeat> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .user_agent(concat!("jobwatch/", env!("CARGO_PKG_VERSION")))
            // The URL carries the check's token: never re-sent elsewhere.
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Heartbeat {
            url,
            every,
            http,
            state: Mutex::default(),
        })
    }

    /// Records a finished cycle; true when a ping is due now: every target
    /// polled so far is healthy and the last ping is `every` old.
    pub fn record(&self, target: &Target, ok: bool) -> bool {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.healthy.insert(target.clone(), ok);
        let all_ok = state.healthy.values().all(|ok| *ok);
        let due = state.last_ping.is_none_or(|at| at.elapsed() >= self.every);
        if all_ok && due {
            state.last_ping = Some(Instant::now());
            return true;
        }
        false
    }

    pub async fn ping(&self) {
        let result = self.http.get(self.url.clone()).send().await;
        let error = match result {
            Ok(r) if r.status().is_success() => None,
            Ok(r) => Some(format!("HTTP {}", r.status().as_u16())),
            // Without the URL: a ping URL carries its check's token.
            Err(e) => Some(e.without_url().to_string()),
        };
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        match error {
            Some(e) if !state.failing => {
                state.failing = true;
                tracing::warn!(error = %e, "heartbeat ping failed");
            }
            None if state.failing => {
                state.failing = false;
                tracing::info!("heartbeat ping works again");
            }
            _ => {}
        }
    }
}
