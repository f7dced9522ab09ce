//! Delivery throughput: a burst of events reaching a loopback webhook, with
//! the daemon's defaults (durable outbox, `synchronous=FULL`; the webhook
//! kind's 4 deliveries at once). Its peer, in the same run against the
//! same receiver, is the ceiling: the same number of POSTs from a bare
//! `reqwest` loop, 4 at a time, nothing recorded.
//!
//! `cargo bench --bench burst` (10,000 events); `-- --quick` for a smoke
//! run (1,000). The rate is from the first arrival to the last.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::State;
use axum::routing::post;
use serde_json::{Value, json};

use common::{baselined, run_daemon, start_sim};

/// When each POST arrived.
#[derive(Default)]
struct Arrivals {
    at: Vec<Instant>,
    events: usize,
}

type Shared = Arc<Mutex<Arrivals>>;

async fn hook(State(got): State<Shared>, Json(body): Json<Value>) -> &'static str {
    let events = body["events"].as_array().map_or(1, Vec::len);
    let mut got = got.lock().expect("arrivals");
    got.at.push(Instant::now());
    got.events += events;
    "ok"
}

/// Events a second from the first arrival to the one that made `n`.
async fn rate_when(got: &Shared, n: usize, within: Duration) -> f64 {
    let started = Instant::now();
    loop {
        {
            let got = got.lock().expect("arrivals");
            if got.events >= n {
                let (first, last) = (got.at[0], got.at[got.at.len() - 1]);
                return n as f64 / (last - first).as_secs_f64();
            }
        }
        assert!(
            started.elapsed() < within,
            "only {} of {n} events in {within:?}",
            got.lock().expect("arrivals").events
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn receiver() -> (String, Shared) {
    let got = Shared::default();
    let app = axum::Router::new()
        .route("/hook", post(hook))
        .with_state(Arc::clone(&got));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, got)
}

/// The ceiling: `n` POSTs of an event-sized body, 4 at a time.
async fn peer(n: usize) -> f64 {
    let (url, got) = receiver().await;
    let http = reqwest::Client::new();
    let body = json!({"events": [{"event_id": "x".repeat(64), "kind": "appeared",
        "project_id": "demo", "job_type": "CREATE_SERVER", "sub_job_id": "y".repeat(36),
        "to": "FAILED", "error_code": "WKS.0012", "error_message": "quota exceeded"}]});
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let (http, url, body, next) =
                (http.clone(), url.clone(), body.clone(), Arc::clone(&next));
            tokio::spawn(async move {
                while next.fetch_add(1, std::sync::atomic::Ordering::SeqCst) < n {
                    http.post(&url).json(&body).send().await.expect("POST");
                }
            })
        })
        .collect();
    for w in workers {
        w.await.expect("worker");
    }
    rate_when(&got, n, Duration::from_secs(60)).await
}

/// The daemon, baselined on an empty history, then `n` sub-jobs FAILED at
/// once: one cycle commits `n` events, the dispatcher sends them.
async fn daemon(n: usize) -> f64 {
    let (url, got) = receiver().await;
    let (_sim, sim_url) = start_sim(&["--history", "0"]);
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state.db");
    let config = dir.path().join("jobwatch.toml");
    std::fs::write(
        &config,
        format!(
            "[api]\nendpoint = \"{sim_url}\"\nmax_requests_per_minute = 100000\n\
             [auth]\nmethod = \"none\"\n[state]\npath = {state:?}\n\
             [poll]\ninterval = \"1s\"\nactive_interval = \"1s\"\n[log]\nlevel = \"warn\"\n\
             [[targets]]\nproject_id = \"demo\"\njob_types = [\"CREATE_SERVER\"]\n\
             [notifiers.hook]\nkind = \"webhook\"\nurl = \"{url}\"\n\
             [[routes]]\nnotify = [\"hook\"]\n"
        ),
    )
    .expect("config");
    let _daemon = run_daemon(&config);
    let started = Instant::now();
    while baselined(&state) == 0 {
        assert!(started.elapsed() < Duration::from_secs(60), "no baseline");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let made = reqwest::Client::new()
        .post(format!("{sim_url}/sim/jobs"))
        .json(&json!({"project_id": "demo", "job_type": "CREATE_SERVER", "count": n, "status": "FAILED"}))
        .send()
        .await
        .expect("create");
    assert!(
        made.status().is_success(),
        "{}",
        made.text().await.unwrap_or_default()
    );
    rate_when(&got, n, Duration::from_secs(600)).await
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let n = if quick { 1_000 } else { 10_000 };
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    jobwatch::install_crypto_provider();
    let ours = rt.block_on(daemon(n));
    let ceiling = rt.block_on(peer(n));
    println!("| burst of {n} events to a loopback webhook | events/s |");
    println!("|---|---:|");
    println!("| jobwatch run, defaults (durable outbox) | {ours:.0} |");
    println!("| bare reqwest loop, 4 at a time, nothing recorded | {ceiling:.0} |");
}
