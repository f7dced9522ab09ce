//! The accept loop. It serves each connection itself instead of using
//! `axum::serve`, so that a request can have its connection dropped with no
//! answer at all (the `reset` fault), and every connection is a tracked task
//! that ends at shutdown.

use std::time::Duration;

use axum::Router;
use axum::body::Body;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use super::ConnKill;

pub(super) async fn serve(
    listener: TcpListener,
    app: Router,
    tracker: TaskTracker,
    shutdown: CancellationToken,
) {
    loop {
        let stream = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Usually too many open files: wait a little rather
                    // than spin, and keep serving.
                    tracing::warn!(error = %e, "simulator: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        tracker.spawn(connection(stream, app.clone(), shutdown.clone()));
    }
}

async fn connection(stream: tokio::net::TcpStream, app: Router, shutdown: CancellationToken) {
    let kill = CancellationToken::new();
    let kill_for_requests = kill.clone();
    let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        request
            .extensions_mut()
            .insert(ConnKill(kill_for_requests.clone()));
        app.clone().oneshot(request.map(Body::new))
    });
    let conn =
        hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    let mut draining = false;
    loop {
        tokio::select! {
            // Ends on its own: the client closed, or an I/O error that only
            // concerns this connection.
            _ = conn.as_mut() => return,
            // Dropping `conn` closes the socket mid-request.
            _ = kill.cancelled() => return,
            _ = shutdown.cancelled(), if !draining => {
                draining = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}
