//! `server.listen`: `/metrics`, `/healthz`, `/readyz`, and the console
//! ([`super::console`]) behind its guard.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::metrics::Metrics;
use crate::watch::Target;

/// What the probes report.
#[derive(Debug, Default)]
pub struct Health {
    /// The store is open and the config valid (systemd's READY=1).
    pub ready: AtomicBool,
    /// Set while shutting down, so load balancers stop sending.
    pub stopping: AtomicBool,
    /// Since when each target's cycles have been failing (`None`: its
    /// last one polled and committed).
    targets: Mutex<HashMap<Target, Option<Instant>>>,
    /// How long every target must have been failing before the daemon
    /// says it is not ready: [`NOT_READY_AFTER_INTERVALS`] poll intervals,
    /// so one failed cycle is no outage.
    failing_for: Mutex<Duration>,
    /// A cycle could not read or commit the state, and none has since.
    store_failing: AtomicBool,
    /// The cluster's last beat did not reach the state database.
    database_unreachable: AtomicBool,
}

/// How many poll intervals of failures, on every target, make the daemon
/// not ready.
pub const NOT_READY_AFTER_INTERVALS: u32 = 3;

impl Health {
    /// Forgets the targets (a reload replaces them) and takes the poll
    /// interval they run at.
    pub fn reset_targets(&self, interval: Duration) {
        lock(&self.targets).clear();
        *lock(&self.failing_for) = interval * NOT_READY_AFTER_INTERVALS;
    }

    /// Forgets a target another replica polls now.
    pub fn forget(&self, target: &Target) {
        lock(&self.targets).remove(target);
    }

    /// Whether the cluster's beat reaches the state database.
    pub fn database_reachable(&self, reachable: bool) {
        self.database_unreachable
            .store(!reachable, Ordering::Relaxed);
    }

    /// Records how a target's cycle ended, `store_failed` when it could
    /// not read or commit the state.
    pub fn record(&self, target: &Target, ok: bool, store_failed: bool) {
        {
            let mut targets = lock(&self.targets);
            let since = targets.entry(target.clone()).or_insert(None);
            if ok {
                *since = None;
            } else if since.is_none() {
                *since = Some(Instant::now());
            }
        }
        if ok {
            self.store_failing.store(false, Ordering::Relaxed);
        } else if store_failed {
            self.store_failing.store(true, Ordering::Relaxed);
        }
    }

    /// Why the daemon is not healthy: the state cannot be committed.
    fn unhealthy(&self) -> Option<String> {
        self.store_failing
            .load(Ordering::Relaxed)
            .then(|| "the state store cannot commit (the log says why)".to_owned())
    }

    /// Why the daemon is not ready, if it is not.
    fn not_ready(&self) -> Option<String> {
        if !self.ready.load(Ordering::Relaxed) {
            return Some("starting".to_owned());
        }
        if self.stopping.load(Ordering::Relaxed) {
            return Some("stopping".to_owned());
        }
        if let Some(why) = self.unhealthy() {
            return Some(why);
        }
        if self.database_unreachable.load(Ordering::Relaxed) {
            return Some("the state database does not answer (the log says why)".to_owned());
        }
        let targets = lock(&self.targets);
        let failing_for = *lock(&self.failing_for);
        let shortest = targets
            .values()
            .map(|since| since.map(|s| s.elapsed()))
            .min()
            .flatten();
        match shortest {
            Some(failing) if failing >= failing_for => Some(format!(
                "every target's polls have failed for {}s or more ({} target(s); the log says why)",
                failing.as_secs(),
                targets.len()
            )),
            _ => None,
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[derive(Clone)]
struct AppState {
    metrics: Arc<Metrics>,
    health: Arc<Health>,
}

/// Binds `listen` and serves until `shutdown`; the task is tracked.
pub async fn serve(
    listen: SocketAddr,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    console: Arc<super::console::Console>,
    tracker: &TaskTracker,
    shutdown: CancellationToken,
) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    let app = Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(health_handler))
        .route("/readyz", get(ready_handler))
        .with_state(AppState { metrics, health })
        .merge(super::console::routes(console.clone()))
        .layer(axum::middleware::from_fn_with_state(
            console,
            super::console::guard,
        ));
    tracker.spawn(async move {
        let result = axum::serve(listener, app)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await;
        if let Err(e) = result {
            tracing::error!(error = %e, "metrics server stopped");
        }
    });
    Ok(addr)
}

async fn metrics_handler(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
}

async fn health_handler(State(state): State<AppState>) -> impl IntoResponse {
    match state.health.unhealthy() {
        None => (StatusCode::OK, "ok\n".to_owned()),
        Some(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("unhealthy: {why}\n"),
        ),
    }
}

async fn ready_handler(State(state): State<AppState>) -> impl IntoResponse {
    match state.health.not_ready() {
        None => (StatusCode::OK, "ready\n".to_owned()),
        Some(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn not_ready_only_once_every_target_has_failed_for_three_intervals() {
        let health = Health::default();
        health.ready.store(true, Ordering::Relaxed);
        health.reset_targets(Duration::from_secs(10));
        let (a, b) = (
            Target::new("p", "CREATE_SERVER"),
            Target::new("p", "DELETE_SERVER"),
        );
        health.record(&a, false, false);
        health.record(&b, false, false);
        assert_eq!(health.not_ready(), None, "one failed cycle is no outage");
        tokio::time::advance(Duration::from_secs(20)).await;
        health.record(&a, false, false);
        assert_eq!(
            health.not_ready(),
            None,
            "20 s of failures, under 3 intervals"
        );
        tokio::time::advance(Duration::from_secs(10)).await;
        let why = health
            .not_ready()
            .expect("30 s of failures on every target");
        assert!(why.contains("failed for 30s"), "{why}");
        // One target polling again is enough to be ready.
        health.record(&b, true, false);
        assert_eq!(health.not_ready(), None);
        health.record(&b, false, false);
        assert_eq!(health.not_ready(), None, "b's new streak has only begun");
    }
}
