//! Shared test set-up: an in-process simulator on a loopback port and
//! clients pointed at it.

use std::time::Duration;

use jobwatch::cloud::auth::Credentials;
use jobwatch::cloud::{Client, ClientSettings};
use jobwatch::retry::Backoff;
use jobwatch::sim::{RunningSim, SimOptions};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

/// A running simulator that shuts down when dropped.
pub struct Sim {
    pub sim: RunningSim,
    stop: CancellationToken,
    http: reqwest::Client,
}

impl Drop for Sim {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Sim {
    pub async fn start(opts: SimOptions) -> Sim {
        jobwatch::install_crypto_provider();
        let stop = CancellationToken::new();
        let sim = jobwatch::sim::start(opts, stop.clone())
            .await
            .expect("simulator starts");
        Sim {
            sim,
            stop,
            http: reqwest::Client::new(),
        }
    }

    pub fn url(&self) -> String {
        self.sim.url()
    }

    /// A control-surface call that must succeed; returns its JSON.
    pub async fn control(&self, method: reqwest::Method, path: &str, body: Value) -> Value {
        let response = self
            .http
            .request(method, format!("{}{path}", self.url()))
            .json(&body)
            .send()
            .await
            .expect("control call");
        let status = response.status();
        let text = response.text().await.expect("control body");
        assert!(status.is_success(), "{path}: {status} {text}");
        serde_json::from_str(&text).unwrap_or(Value::Null)
    }

    pub async fn fault(&self, fault: Value) {
        self.control(reqwest::Method::POST, "/sim/faults", fault)
            .await;
    }

    pub async fn stats(&self) -> Value {
        self.control(reqwest::Method::GET, "/sim/stats", Value::Null)
            .await
    }

    /// A client with quick, jitter-free retries.
    pub fn client(&self, credentials: Credentials) -> Client {
        client_for(&self.url(), credentials, Duration::from_secs(5))
    }
}

pub fn client_for(url: &str, credentials: Credentials, timeout: Duration) -> Client {
    jobwatch::install_crypto_provider();
    let settings = ClientSettings {
        endpoint: url.parse().expect("simulator URL"),
        timeout,
        max_requests_per_minute: 60_000,
        backoff: Backoff {
            base: Duration::from_millis(10),
            cap: Duration::from_millis(100),
            max_attempts: 4,
            jitter: false,
        },
    };
    Client::new(settings, credentials).expect("client")
}

/// What a loopback receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub headers: axum::http::HeaderMap,
    pub body: String,
    pub at: std::time::Instant,
}

impl Received {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// One scripted answer: status, headers, body.
pub type Answer = (u16, Vec<(&'static str, String)>, String);

/// An HTTP receiver on loopback that hands every request back through a
/// channel and answers from a script (then 200 once the script runs out).
pub struct Receiver {
    pub url: String,
    pub rx: tokio::sync::mpsc::UnboundedReceiver<Received>,
    stop: CancellationToken,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Receiver {
    pub async fn start(script: Vec<Answer>) -> Receiver {
        use axum::response::IntoResponse;
        use std::sync::{Arc, Mutex};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind receiver");
        let url = format!("http://{}", listener.local_addr().expect("receiver addr"));
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let script = Arc::new(Mutex::new(std::collections::VecDeque::from(script)));
        let app = axum::Router::new().fallback(move |req: axum::extract::Request| {
            let tx = tx.clone();
            let script = script.clone();
            async move {
                let (parts, body) = req.into_parts();
                let body = axum::body::to_bytes(body, 16 << 20)
                    .await
                    .unwrap_or_default();
                let _ = tx.send(Received {
                    path: parts.uri.path().to_owned(),
                    headers: parts.headers,
                    body: String::from_utf8_lossy(&body).into_owned(),
                    at: std::time::Instant::now(),
                });
                let (status, headers, body) =
                    script
                        .lock()
                        .unwrap()
                        .pop_front()
                        .unwrap_or((200, vec![], "ok".into()));
                let mut response =
                    (axum::http::StatusCode::from_u16(status).unwrap(), body).into_response();
                for (name, value) in headers {
                    response.headers_mut().insert(name, value.parse().unwrap());
                }
                response
            }
        });
        let stop = CancellationToken::new();
        let token = stop.clone();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move { token.cancelled().await })
                .await;
        });
        Receiver { url, rx, stop }
    }

    /// The next request, or a panic after `within`.
    pub async fn next(&mut self, within: Duration) -> Received {
        tokio::time::timeout(within, self.rx.recv())
            .await
            .expect("the receiver waited in vain")
            .expect("receiver channel open")
    }
}

/// Polls `check` until it returns `Some`, or panics after `within`.
pub async fn eventually<T, F, Fut>(within: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out after {within:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
