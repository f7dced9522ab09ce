//! Detection latency: from a sub-job failing in the simulator to its event
//! reaching a webhook, with many busy targets (each has a sub-job under
//! way, so each polls at `active_interval`) sharing one API budget. The
//! same run measures the incremental strategy and its peer, full scans.
//!
//! `cargo bench --bench latency` (20 targets × 1,000 sub-jobs, 100
//! requests/min, `interval = 30s`, `active_interval = 5s`); `-- --quick`
//! for a smoke run (4 targets, 200 sub-jobs, a few samples).

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::State;
use axum::routing::post;
use serde_json::{Value, json};

use common::{Proc, baselined, run_daemon, start_sim};

struct Plan {
    targets: usize,
    history: u32,
    samples: usize,
    /// Between two failures.
    every: Duration,
}

fn start_sim_for(plan: &Plan) -> (Proc, String) {
    let projects: Vec<String> = (0..plan.targets).map(|i| format!("p{i:02}")).collect();
    let history = plan.history.to_string();
    start_sim(&[
        "--projects",
        &projects.join(","),
        "--history",
        &history,
        "--history-job-type",
        "CREATE_SERVER",
    ])
}

type Arrivals = Arc<Mutex<HashMap<String, Instant>>>;

async fn hook(State(got): State<Arrivals>, Json(body): Json<Value>) -> &'static str {
    let now = Instant::now();
    let mut got = got.lock().expect("arrivals");
    for event in body["events"].as_array().into_iter().flatten() {
        if event["to"] == "FAILED"
            && let Some(id) = event["sub_job_id"].as_str()
        {
            got.entry(id.to_owned()).or_insert(now);
        }
    }
    "ok"
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let at = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[at.min(sorted.len() - 1)]
}

async fn run(plan: &Plan, strategy: &str) -> Vec<Duration> {
    let (_sim, sim_url) = start_sim_for(plan);
    let arrivals: Arrivals = Arc::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the receiver");
    let hook_url = format!("http://{}/hook", listener.local_addr().expect("addr"));
    let app = axum::Router::new()
        .route("/hook", post(hook))
        .with_state(arrivals.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });

    // One job in every target that stays WAITING: the targets are busy,
    // so each polls at `active_interval` and they compete for the budget.
    let http = reqwest::Client::new();
    for i in 0..plan.targets {
        http.post(format!("{sim_url}/sim/jobs"))
            .json(&json!({"project_id": format!("p{i:02}"), "job_type": "CREATE_SERVER", "count": 1, "status": "WAITING"}))
            .send()
            .await
            .expect("create a long-running job");
    }

    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state.db");
    let mut config = format!(
        "[api]\nendpoint = \"{sim_url}\"\nmax_requests_per_minute = 100\n\n\
         [auth]\nmethod = \"none\"\n\n[state]\npath = {state:?}\n\n\
         [poll]\ninterval = \"30s\"\nactive_interval = \"5s\"\nstrategy = \"{strategy}\"\n\n\
         [log]\nlevel = \"warn\"\n\n\
         [notifiers.hook]\nkind = \"webhook\"\nurl = \"{hook_url}\"\nmax_concurrency = 8\n\n\
         [[routes]]\nnotify = [\"hook\"]\nkinds = [\"appeared\", \"changed\"]\n"
    );
    for i in 0..plan.targets {
        config.push_str(&format!(
            "\n[[targets]]\nproject_id = \"p{i:02}\"\njob_types = [\"CREATE_SERVER\"]\n"
        ));
    }
    let config_path = dir.path().join("jobwatch.toml");
    std::fs::write(&config_path, config).expect("write the config");
    let _daemon = run_daemon(&config_path);

    let started = Instant::now();
    while baselined(&state) < plan.targets {
        assert!(
            started.elapsed() < Duration::from_secs(900),
            "the baselines took over 15 minutes"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!(
        "{strategy}: {} targets baselined in {:.0} s",
        plan.targets,
        started.elapsed().as_secs_f64()
    );

    // Each sample is a job that starts WAITING (its target then polls at
    // `active_interval`) and fails two steps later; latency counts from
    // the failure.
    let mut waiting: Vec<String> = Vec::new();
    let mut failed_at: Vec<(String, Instant)> = Vec::new();
    for n in 0..plan.samples + 2 {
        if n < plan.samples {
            let project = format!("p{:02}", (n * 7) % plan.targets);
            let made: Value = http
                .post(format!("{sim_url}/sim/jobs"))
                .json(&json!({"project_id": project, "job_type": "CREATE_SERVER", "count": 1, "status": "WAITING"}))
                .send()
                .await
                .expect("create a job")
                .json()
                .await
                .expect("its ids");
            waiting.push(made["sub_job_ids"][0].as_str().expect("an id").to_owned());
        }
        if n >= 2 {
            let id = waiting[n - 2].clone();
            http.post(format!("{sim_url}/sim/jobs/{id}"))
                .json(&json!({"status": "FAILED", "error_code": "WKS.0001", "error_message": "quota"}))
                .send()
                .await
                .expect("fail a job");
            failed_at.push((id, Instant::now()));
        }
        tokio::time::sleep(plan.every).await;
    }
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let done = {
            let got = arrivals.lock().expect("arrivals");
            failed_at.iter().all(|(id, _)| got.contains_key(id))
        };
        if done || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let got = arrivals.lock().expect("arrivals");
    let mut latencies: Vec<Duration> = failed_at
        .iter()
        .map(|(id, at)| {
            got.get(id)
                .map_or(Duration::from_secs(600), |arrived| *arrived - *at)
        })
        .collect();
    latencies.sort();
    latencies
}

fn main() {
    jobwatch::install_crypto_provider();
    let quick = std::env::args().any(|a| a == "--quick");
    let plan = if quick {
        Plan {
            targets: 4,
            history: 200,
            samples: 6,
            every: Duration::from_secs(3),
        }
    } else {
        Plan {
            targets: 20,
            history: 1000,
            samples: 40,
            every: Duration::from_secs(3),
        }
    };
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    println!(
        "{} targets × {} sub-jobs, 100 requests/min, interval 30s, active_interval 5s, {} failures:",
        plan.targets, plan.history, plan.samples
    );
    println!("| strategy | p50 | p95 | max |");
    println!("|---|---:|---:|---:|");
    for strategy in ["full", "incremental"] {
        let l = rt.block_on(run(&plan, strategy));
        println!(
            "| {strategy} | {:.1} s | {:.1} s | {:.1} s |",
            percentile(&l, 0.5).as_secs_f64(),
            percentile(&l, 0.95).as_secs_f64(),
            l.last().copied().unwrap_or_default().as_secs_f64(),
        );
    }
}
