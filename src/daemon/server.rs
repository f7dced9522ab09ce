//! `/metrics`, `/healthz` and `/readyz` on `server.listen`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
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
    /// How each target's last cycle ended (true: it polled and committed).
    targets: Mutex<HashMap<Target, bool>>,
    /// A cycle could not read or commit the state, and none has since.
    store_failing: AtomicBool,
}

impl Health {
    /// Forgets the targets (a reload replaces them).
    pub fn reset_targets(&self) {
        lock(&self.targets).clear();
    }

    /// Records how a target's cycle ended, `store_failed` when it could
    /// not read or commit the state.
    pub fn record(&self, target: &Target, ok: bool, store_failed: bool) {
        lock(&self.targets).insert(target.clone(), ok);
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
        let targets = lock(&self.targets);
        if !targets.is_empty() && targets.values().all(|ok| !ok) {
            return Some(format!(
                "every target's last poll failed ({})",
                targets.len()
            ));
        }
        None
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
    tracker: &TaskTracker,
    shutdown: CancellationToken,
) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    let app = Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(health_handler))
        .route("/readyz", get(ready_handler))
        .with_state(AppState { metrics, health });
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
