//! The daemon end to end (docs/guarantees.md): the `jobwatch run` binary's lifecycle
//! under systemd's protocol and signals, and catching up after downtime.
//! Real simulator and receiver on loopback; waits are polls with timeouts.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jobwatch::config::{Config, EnvVars};
use jobwatch::sim::SimOptions;
use jobwatch::store::OutboxRow;
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::support::{
    Daemon, NotifySocket, Receiver, Recorder, SIM_ERROR_CODE, Sim, baselined, daemon_config,
    eventually, list_requests, outbox, wait_baselined,
};

/// Generous: a loaded 2-core machine builds other crates beside us.
const WITHIN: Duration = Duration::from_secs(30);

/// The one event of a webhook request.
fn only_event(body: &Value) -> &Value {
    let events = body["events"].as_array().expect("events");
    assert_eq!(events.len(), 1, "{body}");
    &events[0]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_signals_readiness_reloads_on_sighup_and_drains_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let sim = Sim::start(SimOptions::default()).await;
    let mut receiver = Receiver::start(vec![]).await;
    // There before the daemon: part of each target's silent baseline.
    let create_server = sim.create_waiting("CREATE_SERVER", 1).await.remove(0);
    let delete_server = sim.create_waiting("DELETE_SERVER", 1).await.remove(0);

    let state = dir.path().join("state.db");
    let config = dir.path().join("jobwatch.toml");
    let hook = format!("{}/hook", receiver.url);
    let write_config = |job_types: &[&str]| {
        std::fs::write(&config, daemon_config(&sim.url(), &hook, &state, job_types)).unwrap()
    };
    write_config(&["CREATE_SERVER"]);
    let mut notify = NotifySocket::bind(dir.path());
    let mut daemon = Daemon::spawn(
        &config,
        Some(&notify.path),
        &dir.path().join("jobwatch.log"),
    );

    notify.expect("READY=1", WITHIN).await;
    wait_baselined(&state, "CREATE_SERVER", WITHIN).await;

    // SIGHUP with a broken file: rejected, the old config keeps running.
    std::fs::write(&config, "[api\nendpoint = ").unwrap();
    daemon.signal("HUP");
    let lines = notify.expect("READY=1", WITHIN).await;
    let reloading = lines.iter().position(|l| l == "RELOADING=1");
    assert!(
        reloading.is_some_and(|at| at < lines.len() - 1),
        "RELOADING=1 before READY=1: {lines:?}"
    );
    assert!(daemon.exited().is_none(), "a bad reload must not stop it");
    sim.set_status(&create_server, "FAILED").await;
    let got = receiver.next(WITHIN).await;
    let event = only_event(&got.json()).clone();
    assert_eq!(event["sub_job_id"], create_server.as_str());
    assert_eq!(event["kind"], "changed");
    assert_eq!(event["from"], "WAITING");
    assert_eq!(event["to"], "FAILED");
    assert_eq!(event["error_code"], SIM_ERROR_CODE);
    assert_eq!(got.header("webhook-id"), event["event_id"].as_str());
    assert!(
        daemon.log().contains("reload rejected"),
        "the rejection is logged"
    );

    // SIGHUP with a valid file that adds a job type: it is watched.
    write_config(&["CREATE_SERVER", "DELETE_SERVER"]);
    daemon.signal("HUP");
    let lines = notify.expect("READY=1", WITHIN).await;
    assert!(lines.iter().any(|l| l == "RELOADING=1"), "{lines:?}");
    wait_baselined(&state, "DELETE_SERVER", WITHIN).await;
    sim.set_status(&delete_server, "FAILED").await;
    let got = receiver.next(WITHIN).await;
    let event = only_event(&got.json()).clone();
    assert_eq!(event["sub_job_id"], delete_server.as_str());
    assert_eq!(event["job_type"], "DELETE_SERVER");
    assert_eq!(event["from"], "WAITING");
    assert_eq!(event["to"], "FAILED");

    // SIGTERM: STOPPING=1, drain, exit 0.
    daemon.signal("TERM");
    notify.expect("STOPPING=1", WITHIN).await;
    let status = daemon.exit_status(WITHIN).await;
    assert_eq!(status.code(), Some(0), "{status:?}");
    // Two transitions, two deliveries: the reloads re-sent nothing.
    assert!(
        receiver.rx.try_recv().is_err(),
        "nothing more was delivered"
    );
}

/// A daemon running in-process until its oneshot fires.
struct InProcess {
    stop: oneshot::Sender<()>,
    run: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl InProcess {
    fn start(config: &Path) -> InProcess {
        let config = Config::load_with_env(config, true, EnvVars::from_pairs::<&str, &str>([]))
            .expect("a valid config")
            .config;
        let (stop, stopped) = oneshot::channel::<()>();
        // Never sent on: no reloads here.
        let (_reload_tx, reload_rx) = mpsc::channel(1);
        let run = tokio::spawn(async move {
            let _keep = _reload_tx;
            jobwatch::daemon::run(
                config,
                None,
                jobwatch::daemon::systemd::Systemd::off(),
                async move {
                    let _ = stopped.await;
                },
                reload_rx,
            )
            .await
        });
        InProcess { stop, run }
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        tokio::time::timeout(WITHIN, self.run)
            .await
            .expect("the daemon stops within its grace")
            .expect("the daemon task")
            .expect("the daemon ends cleanly");
    }
}

/// `(sub_job_id, kind, from, to)` of a delivered event.
type Key = (String, &'static str, Option<&'static str>, String);

fn key(event: &Value) -> (String, String, Option<String>, String) {
    let text = |v: &Value| v.as_str().map(str::to_owned);
    (
        text(&event["sub_job_id"]).unwrap_or_default(),
        text(&event["kind"]).unwrap_or_default(),
        text(&event["from"]),
        text(&event["to"]).unwrap_or_default(),
    )
}

fn owned((sub, kind, from, to): Key) -> (String, String, Option<String>, String) {
    (sub, kind.to_owned(), from.map(str::to_owned), to)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_changed_while_the_daemon_was_down_is_reported_once_on_restart() {
    let dir = tempfile::tempdir().unwrap();
    let sim = Sim::start(SimOptions {
        history: 5,
        ..SimOptions::default()
    })
    .await;
    let mut receiver = Receiver::start(vec![]).await;
    // The fourth sub-job is never touched: it must never be reported.
    let jobs = sim.create_waiting("CREATE_SERVER", 4).await;
    let (live, failed, finished) = (&jobs[0], &jobs[1], &jobs[2]);
    let state = dir.path().join("state.db");
    let config = dir.path().join("jobwatch.toml");
    std::fs::write(
        &config,
        daemon_config(
            &sim.url(),
            &format!("{}/hook", receiver.url),
            &state,
            &["CREATE_SERVER"],
        ),
    )
    .unwrap();

    // First run: the baseline, and one live transition delivered.
    let first = InProcess::start(&config);
    wait_baselined(&state, "CREATE_SERVER", WITHIN).await;
    sim.set_status(live, "RUNNING").await;
    let got = receiver.next(WITHIN).await;
    assert_eq!(
        key(only_event(&got.json())),
        owned((live.clone(), "changed", Some("WAITING"), "RUNNING".into()))
    );
    eventually(WITHIN, "the delivery to be recorded", || {
        let state = state.clone();
        async move { (outbox(&state).await == (0, 0)).then_some(()) }
    })
    .await;
    first.stop().await;

    // While it is down: a failure, a job that ran to its end unseen, and
    // two new jobs, one of which was created and failed between polls.
    sim.set_status(failed, "FAILED").await;
    sim.set_status(finished, "RUNNING").await;
    sim.set_status(finished, "SUCCESS").await;
    let new_waiting = sim.create_waiting("CREATE_SERVER", 1).await.remove(0);
    let new_failed = sim.create_waiting("CREATE_SERVER", 1).await.remove(0);
    sim.set_status(&new_failed, "FAILED").await;

    let second = InProcess::start(&config);
    let mut got = BTreeSet::new();
    let mut ids = BTreeSet::new();
    for _ in 0..4 {
        let request = receiver.next(WITHIN).await;
        let event = only_event(&request.json()).clone();
        ids.insert(event["event_id"].as_str().unwrap().to_owned());
        got.insert(key(&event));
    }
    let expected = BTreeSet::from(
        [
            (failed.clone(), "changed", Some("WAITING"), "FAILED".into()),
            (
                finished.clone(),
                "changed",
                Some("WAITING"),
                "SUCCESS".into(),
            ),
            (new_waiting.clone(), "appeared", None, "WAITING".into()),
            (new_failed.clone(), "appeared", None, "FAILED".into()),
        ]
        .map(owned),
    );
    assert_eq!(got, expected);
    assert_eq!(ids.len(), 4, "four distinct events");

    // Exactly those: two more scans and a drained outbox bring nothing else
    // (not `live` again, not `untouched`).
    let scans = list_requests(&sim).await;
    eventually(WITHIN, "two more scans and an empty outbox", || {
        let (sim, state) = (&sim, state.clone());
        async move {
            (list_requests(sim).await >= scans + 2 && outbox(&state).await == (0, 0)).then_some(())
        }
    })
    .await;
    second.stop().await;
    let extra: Vec<Value> = std::iter::from_fn(|| receiver.rx.try_recv().ok())
        .map(|r| r.json())
        .collect();
    assert!(extra.is_empty(), "unexpected deliveries: {extra:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_target_with_10k_history_at_100_requests_a_minute_baselines_and_alerts() {
    // New sub-jobs keep arriving while the first scan pages through 10,000
    // at the default budget (a minute of pages): a `shift` after every
    // list request adds one at the top. The scan must still finish, set
    // the baseline, and a failure after it must reach the receiver.
    let dir = tempfile::tempdir().unwrap();
    let sim = Sim::start(SimOptions {
        history: 10_000,
        history_job_types: vec!["CREATE_SERVER".into()],
        ..SimOptions::default()
    })
    .await;
    sim.fault(json!({"fault":"shift","times":200})).await;
    let mut receiver = Receiver::start(vec![]).await;
    let state = dir.path().join("state.db");
    let config = dir.path().join("jobwatch.toml");
    let text = daemon_config(
        &sim.url(),
        &format!("{}/hook", receiver.url),
        &state,
        &["CREATE_SERVER"],
    )
    .replace(
        "max_requests_per_minute = 6000",
        "max_requests_per_minute = 100",
    );
    std::fs::write(&config, text).unwrap();
    let daemon = InProcess::start(&config);
    // 100 pages at 100 a minute, and a few more for the drift.
    wait_baselined(&state, "CREATE_SERVER", Duration::from_secs(150)).await;
    let job = sim.create_waiting("CREATE_SERVER", 1).await.remove(0);
    sim.set_status(&job, "FAILED").await;
    until_failed_arrives(&mut receiver, &job).await;
    daemon.stop().await;
}

/// Receives until a delivery carries `job` entering FAILED (others may
/// come first), within [`WITHIN`].
async fn until_failed_arrives(receiver: &mut Receiver, job: &str) {
    let deadline = tokio::time::Instant::now() + WITHIN;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let got = receiver.next(left).await;
        let events = got.json()["events"].as_array().cloned().unwrap_or_default();
        if events
            .iter()
            .any(|e| e["sub_job_id"] == job && e["to"] == "FAILED")
        {
            return;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_10k_baseline_does_not_hold_up_alerts_of_a_small_target() {
    // Both targets share the default budget of 100 requests a minute; the
    // CREATE_SERVER baseline alone needs a minute of it. The small
    // DELETE_SERVER target must alert within its active interval anyway.
    let dir = tempfile::tempdir().unwrap();
    let sim = Sim::start(SimOptions {
        history: 10_000,
        history_job_types: vec!["CREATE_SERVER".into()],
        ..SimOptions::default()
    })
    .await;
    let mut receiver = Receiver::start(vec![]).await;
    let state = dir.path().join("state.db");
    let config = dir.path().join("jobwatch.toml");
    let text = daemon_config(
        &sim.url(),
        &format!("{}/hook", receiver.url),
        &state,
        &["CREATE_SERVER", "DELETE_SERVER"],
    )
    .replace(
        "max_requests_per_minute = 6000",
        "max_requests_per_minute = 100",
    );
    std::fs::write(&config, text).unwrap();
    let daemon = InProcess::start(&config);
    wait_baselined(&state, "DELETE_SERVER", WITHIN).await;
    for _ in 0..3 {
        let job = sim.create_waiting("DELETE_SERVER", 1).await.remove(0);
        sim.set_status(&job, "FAILED").await;
        let failed_at = tokio::time::Instant::now();
        // `appeared` as FAILED or WAITING then `changed`: wait for FAILED.
        until_failed_arrives(&mut receiver, &job).await;
        // A 1 s active interval, a few 0.6 s slots, the delivery; far from
        // the minute the baseline takes.
        let took = failed_at.elapsed();
        assert!(took < Duration::from_secs(10), "took {took:?}");
    }
    assert!(
        !baselined(&state, "demo", "CREATE_SERVER").await,
        "the large baseline was meant to be still under way"
    );
    daemon.stop().await;
}

/// Outbox rows in state `delivered`, read beside the running daemon.
async fn delivered_rows(state: &Path) -> i64 {
    let state = state.to_owned();
    tokio::task::spawn_blocking(move || {
        let conn = rusqlite::Connection::open(&state).expect("open the state file");
        conn.query_row(
            "SELECT count(*) FROM outbox WHERE state = 'delivered'",
            [],
            |row| row.get(0),
        )
        .expect("count delivered rows")
    })
    .await
    .expect("store query")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivered_rows_are_deleted_after_keep_delivered() {
    let dir = tempfile::tempdir().unwrap();
    let sim = Sim::start(SimOptions::default()).await;
    let mut receiver = Receiver::start(vec![]).await;
    let job = sim.create_waiting("CREATE_SERVER", 1).await.remove(0);
    let state = dir.path().join("state.db");
    let config = dir.path().join("jobwatch.toml");
    let hook = format!("{}/hook", receiver.url);
    let write = |keep: &str| {
        let text = daemon_config(&sim.url(), &hook, &state, &["CREATE_SERVER"]).replace(
            "[delivery]\n",
            &format!("[delivery]\nkeep_delivered = \"{keep}\"\n"),
        );
        std::fs::write(&config, text).unwrap();
    };

    // Kept for a day: the delivered row stays.
    write("1d");
    let daemon = InProcess::start(&config);
    wait_baselined(&state, "CREATE_SERVER", WITHIN).await;
    sim.set_status(&job, "RUNNING").await;
    receiver.next(WITHIN).await;
    eventually(WITHIN, "the delivery to be recorded", || {
        let state = state.clone();
        async move { (delivered_rows(&state).await == 1).then_some(()) }
    })
    .await;
    daemon.stop().await;

    // Kept for no time: deleted by the daemon's own timer.
    write("0s");
    let daemon = InProcess::start(&config);
    sim.set_status(&job, "FAILED").await;
    receiver.next(WITHIN).await;
    // Its outcome is written after the receiver answers: wait for it, or
    // the old row's pruning could pass while the new one is still pending.
    eventually(WITHIN, "the new delivery to be recorded", || {
        let state = state.clone();
        async move { (outbox(&state).await.0 == 0).then_some(()) }
    })
    .await;
    eventually(WITHIN, "delivered rows to be pruned", || {
        let state = state.clone();
        async move { (delivered_rows(&state).await == 0).then_some(()) }
    })
    .await;
    assert_eq!(outbox(&state).await, (0, 0), "nothing pending or dead");
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_a_delivery_under_way_finish_and_a_second_signal_exits_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let sim = Sim::start(SimOptions::default()).await;
    let recorder = Recorder::start().await;
    let jobs = sim.create_waiting("CREATE_SERVER", 2).await;
    let state = dir.path().join("state.db");
    let config = dir.path().join("jobwatch.toml");
    std::fs::write(
        &config,
        daemon_config(
            &sim.url(),
            &format!("{}/hook", recorder.url),
            &state,
            &["CREATE_SERVER"],
        ),
    )
    .unwrap();
    let log = dir.path().join("jobwatch.log");
    let mut notify = NotifySocket::bind(dir.path());
    let in_flight = |n: usize| {
        let recorder = &recorder;
        move || async move { (recorder.in_flight() >= n).then_some(()) }
    };

    // A delivery under way when SIGTERM comes is finished and recorded
    // (shutdown_grace is 5 s, the receiver takes 2 s).
    let mut daemon = Daemon::spawn(&config, Some(&notify.path), &log);
    notify.expect("READY=1", WITHIN).await;
    wait_baselined(&state, "CREATE_SERVER", WITHIN).await;
    recorder.set_delay(Duration::from_secs(2));
    sim.set_status(&jobs[0], "FAILED").await;
    eventually(WITHIN, "a delivery in flight", in_flight(1)).await;
    daemon.signal("TERM");
    let status = daemon.exit_status(WITHIN).await;
    assert_eq!(status.code(), Some(0), "{status:?}");
    assert_eq!(recorder.received().len(), 1);
    assert_eq!(
        outbox(&state).await,
        (0, 0),
        "the delivery was recorded, so no restart will send it again"
    );

    // One that outlasts the grace: a second SIGTERM ends the process at
    // once (exit 1 rather than the drained 0), and the row stays owed.
    recorder.set_delay(Duration::from_secs(60));
    let mut daemon = Daemon::spawn(&config, Some(&notify.path), &log);
    notify.expect("READY=1", WITHIN).await;
    sim.set_status(&jobs[1], "FAILED").await;
    eventually(WITHIN, "a second delivery in flight", in_flight(1)).await;
    daemon.signal("TERM");
    notify.expect("STOPPING=1", WITHIN).await;
    daemon.signal("TERM");
    let status = daemon.exit_status(WITHIN).await;
    assert_eq!(status.code(), Some(1), "{status:?}");
    assert_eq!(
        outbox(&state).await,
        (1, 0),
        "still pending for the next run"
    );
}

// SIGTERM waits for what is being sent, not for what only waits: a
// delivery held by a receiver's pause (a 429 with Retry-After: 120) gives
// its row back at once, and the process exits long before its grace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_does_not_wait_for_deliveries_held_by_a_paused_notifier() {
    let dir = tempfile::tempdir().unwrap();
    let sim = Sim::start(SimOptions::default()).await;
    let slow_down = (
        429,
        vec![("retry-after", "120".to_owned())],
        "slow down".to_owned(),
    );
    let mut receiver = Receiver::start(vec![slow_down]).await;
    let jobs = sim.create_waiting("CREATE_SERVER", 2).await;
    let state = dir.path().join("state.db");
    let config = dir.path().join("jobwatch.toml");
    let text = daemon_config(
        &sim.url(),
        &format!("{}/hook", receiver.url),
        &state,
        &["CREATE_SERVER"],
    );
    assert!(text.contains("shutdown_grace = \"5s\""));
    std::fs::write(
        &config,
        text.replace("shutdown_grace = \"5s\"", "shutdown_grace = \"60s\""),
    )
    .unwrap();
    let log = dir.path().join("jobwatch.log");
    let mut notify = NotifySocket::bind(dir.path());
    let mut daemon = Daemon::spawn(&config, Some(&notify.path), &log);
    notify.expect("READY=1", WITHIN).await;
    wait_baselined(&state, "CREATE_SERVER", WITHIN).await;

    sim.set_status(&jobs[0], "FAILED").await;
    receiver.next(WITHIN).await;
    // The notifier is paused now; the next failure's delivery waits.
    sim.set_status(&jobs[1], "FAILED").await;
    eventually(WITHIN, "both alerts in the outbox", || {
        let state = state.clone();
        async move { (crate::support::pending_event_ids(&state).await.len() == 2).then_some(()) }
    })
    .await;
    let asked = std::time::Instant::now();
    daemon.signal("TERM");
    let status = daemon.exit_status(WITHIN).await;
    assert_eq!(status.code(), Some(0), "{status:?}\n{}", daemon.log());
    assert!(
        asked.elapsed() < Duration::from_secs(20),
        "took {:?} of a 60 s grace with nothing being sent",
        asked.elapsed()
    );
    assert_eq!(outbox(&state).await, (2, 0), "both still owed");
}

// ---- Reload that removes things, grouping across a crash, lifecycle -----

/// A loopback proxy in front of the simulator that records the path of
/// every cloud request: the simulator counts requests by route, not by
/// project, and these tests must tell one target's polls from another's.
struct Proxy {
    url: String,
    paths: Arc<Mutex<Vec<String>>>,
    stop: CancellationToken,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Proxy {
    async fn start(upstream: String) -> Proxy {
        use axum::response::IntoResponse;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind proxy");
        let url = format!("http://{}", listener.local_addr().expect("proxy addr"));
        let paths = Arc::new(Mutex::new(Vec::new()));
        let http = reqwest::Client::new();
        let app = {
            let paths = paths.clone();
            axum::Router::new().fallback(move |req: axum::extract::Request| {
                let (paths, http, upstream) = (paths.clone(), http.clone(), upstream.clone());
                async move {
                    paths.lock().unwrap().push(req.uri().path().to_owned());
                    let target = format!(
                        "{upstream}{}",
                        req.uri().path_and_query().map_or("/", |p| p.as_str())
                    );
                    let mut forward = http.request(req.method().clone(), target);
                    for (name, value) in req.headers() {
                        if name != axum::http::header::HOST {
                            forward = forward.header(name, value);
                        }
                    }
                    let answer = match forward.send().await {
                        Ok(answer) => answer,
                        Err(e) => {
                            return (axum::http::StatusCode::BAD_GATEWAY, e.to_string())
                                .into_response();
                        }
                    };
                    let status = answer.status();
                    let headers = answer.headers().clone();
                    let body = answer.bytes().await.unwrap_or_default();
                    let mut response = (status, body).into_response();
                    for name in ["content-type", "x-request-id", "retry-after"] {
                        if let Some(value) = headers.get(name) {
                            response.headers_mut().insert(name, value.clone());
                        }
                    }
                    response
                }
            })
        };
        let stop = crate::support::serve(listener, app);
        Proxy { url, paths, stop }
    }

    /// Cloud requests for `project` so far.
    fn requests_for(&self, project: &str) -> usize {
        let prefix = format!("/v1/{project}/");
        self.paths
            .lock()
            .unwrap()
            .iter()
            .filter(|p| p.starts_with(&prefix))
            .count()
    }
}

/// `(pending, dead)` outbox rows, read beside the daemon.
async fn outbox_rows(state: &Path) -> (Vec<OutboxRow>, Vec<OutboxRow>) {
    let state = state.to_owned();
    tokio::task::spawn_blocking(move || {
        let store = jobwatch::store::Store::open(&state).expect("open the state file");
        let horizon = jiff::Timestamp::now() + jiff::SignedDuration::from_hours(24 * 365);
        (
            store.due(horizon, usize::MAX >> 1).expect("pending rows"),
            store.dead().expect("dead rows"),
        )
    })
    .await
    .expect("store query")
}

/// Makes one WAITING sub-job in `project`; returns its id.
async fn create_in(sim: &Sim, project: &str) -> String {
    let made = sim
        .control(
            reqwest::Method::POST,
            "/sim/jobs",
            serde_json::json!({"project_id": project, "job_type": "CREATE_SERVER", "count": 1, "status": "WAITING"}),
        )
        .await;
    made["sub_job_ids"][0]
        .as_str()
        .expect("a sub-job id")
        .to_owned()
}

/// Two targets, two notifiers, every event to both; `with_removed` adds
/// the target `other/CREATE_SERVER` and the notifier `gone`.
fn two_of_each(api: &str, keep: &str, gone: &str, state: &Path, with_removed: bool) -> String {
    let (target, notifier, to) = if with_removed {
        (
            "[[targets]]\nproject_id = \"other\"\njob_types = [\"CREATE_SERVER\"]\n",
            format!(
                "[notifiers.gone]\nkind = \"webhook\"\nurl = \"{gone}/hook\"\nmax_concurrency = 1\ntimeout = \"30s\"\n"
            ),
            r#"["keep", "gone"]"#,
        )
    } else {
        ("", String::new(), r#"["keep"]"#)
    };
    let preamble = crate::support::daemon_preamble(api, state, Some("5s"));
    format!(
        r#"{preamble}
[[targets]]
project_id = "demo"
job_types = ["CREATE_SERVER"]

{target}
[notifiers.keep]
kind = "webhook"
url = "{keep}/hook"

{notifier}
[[routes]]
notify = {to}
kinds = ["appeared", "changed"]
"#
    )
}

// Pins docs/guarantees.md "SIGHUP reloads config" for what a reload takes away: the
// removed target is no longer polled, rows still owed to the removed
// notifier become dead letters that say why, and nothing more reaches
// the removed notifier's receiver — not even rows that were already
// waiting for one of its delivery slots when the reload came.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_drops_a_target_and_a_notifier_stops_both() {
    let dir = tempfile::tempdir().unwrap();
    let sim = Sim::start(SimOptions::default()).await;
    let proxy = Proxy::start(sim.url()).await;
    let mut keep = Receiver::start(vec![]).await;
    // `gone` holds each request: one delivery in flight (its concurrency
    // is 1), the others waiting behind it when the reload comes.
    let gone = Recorder::start().await;
    let demo = sim.create_waiting("CREATE_SERVER", 2).await;
    let other = create_in(&sim, "other").await;

    let state = dir.path().join("state.db");
    let config = dir.path().join("jobwatch.toml");
    std::fs::write(
        &config,
        two_of_each(&proxy.url, &keep.url, &gone.url, &state, true),
    )
    .unwrap();
    let mut notify = NotifySocket::bind(dir.path());
    let mut daemon = Daemon::spawn(
        &config,
        Some(&notify.path),
        &dir.path().join("jobwatch.log"),
    );
    notify.expect("READY=1", WITHIN).await;
    wait_baselined(&state, "CREATE_SERVER", WITHIN).await;
    eventually(WITHIN, "other/CREATE_SERVER to be baselined", || {
        let state = state.clone();
        async move {
            crate::support::baselined(&state, "other", "CREATE_SERVER")
                .await
                .then_some(())
        }
    })
    .await;

    // Three events, each owed to both notifiers.
    gone.set_delay(Duration::from_secs(6));
    sim.set_status(&demo[0], "FAILED").await;
    sim.set_status(&demo[1], "RUNNING").await;
    sim.set_status(&other, "FAILED").await;
    let mut kept = BTreeSet::new();
    while kept.len() < 3 {
        let got = keep.next(WITHIN).await;
        kept.insert(
            only_event(&got.json())["event_id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    eventually(WITHIN, "three rows owed to `gone`, one in flight", || {
        let (state, gone) = (state.clone(), &gone);
        async move {
            let (pending, _) = outbox_rows(&state).await;
            let owed = pending.iter().filter(|r| r.notifier == "gone").count();
            (owed == 3 && gone.in_flight() == 1).then_some(())
        }
    })
    .await;

    // The reload drops `other` and `gone`.
    std::fs::write(
        &config,
        two_of_each(&proxy.url, &keep.url, &gone.url, &state, false),
    )
    .unwrap();
    daemon.signal("HUP");
    let lines = notify.expect("READY=1", WITHIN).await;
    assert!(lines.iter().any(|l| l == "RELOADING=1"), "{lines:?}");
    // The request in flight arrived before the reload; it may finish.
    let sent_to_gone = gone.received().len();
    assert_eq!(sent_to_gone, 1, "one request to `gone` before the reload");

    // The two rows that were waiting become dead letters, the one in
    // flight is recorded as delivered, and `gone` hears nothing more.
    let reason = r#"notifier "gone" is no longer configured"#;
    let dead = eventually(WITHIN, "the rows owed to `gone` to die", || {
        let (state, gone) = (state.clone(), &gone);
        async move {
            assert_eq!(
                gone.received().len(),
                sent_to_gone,
                "a request reached the removed notifier after the reload"
            );
            let (pending, dead) = outbox_rows(&state).await;
            (pending.is_empty() && dead.len() == 2).then_some(dead)
        }
    })
    .await;
    for row in &dead {
        assert_eq!(row.notifier, "gone", "{row:?}");
        assert_eq!(row.last_error.as_deref(), Some(reason), "{row:?}");
    }
    let listing = crate::support::jobwatch(&config, &["state", "dead"]).await;
    let listing = String::from_utf8_lossy(&listing.stdout).into_owned();
    assert_eq!(listing.matches(reason).count(), 2, "{listing}");

    // Polls of `other` stop. A request already on the wire at the reload
    // may still land, so the count is taken once `demo` has been polled
    // twice more, then must hold while `demo` is polled three more times.
    let demo_polls = proxy.requests_for("demo");
    eventually(WITHIN, "two more polls of demo", || {
        let done = proxy.requests_for("demo") >= demo_polls + 2;
        async move { done.then_some(()) }
    })
    .await;
    let other_polls = proxy.requests_for("other");
    let demo_polls = proxy.requests_for("demo");
    // A new event after the reload goes to `keep` only.
    sim.set_status(&demo[1], "SUCCESS").await;
    let got = keep.next(WITHIN).await;
    assert_eq!(only_event(&got.json())["to"], "SUCCESS");
    eventually(WITHIN, "three more polls of demo", || {
        let done = proxy.requests_for("demo") >= demo_polls + 3;
        async move { done.then_some(()) }
    })
    .await;
    assert_eq!(
        proxy.requests_for("other"),
        other_polls,
        "the removed target is still polled"
    );
    assert_eq!(gone.received().len(), sent_to_gone);
    let (pending, dead) = outbox_rows(&state).await;
    assert!(
        pending.is_empty() && dead.len() == 2,
        "{pending:?} {dead:?}"
    );

    daemon.signal("TERM");
    let status = daemon.exit_status(WITHIN).await;
    assert_eq!(status.code(), Some(0), "{status:?}");
}

/// The group window of [`grouped_config`]: long enough that two poll
/// cycles, a SIGKILL and a restart fit inside it on a loaded machine.
const WINDOW: Duration = Duration::from_secs(8);

/// One target, notifiers `a` and `b`, one grouping route to both.
fn grouped_config(api: &str, a: &str, b: &str, state: &Path) -> String {
    let preamble = crate::support::daemon_preamble(api, state, None);
    format!(
        r#"{preamble}
[[targets]]
project_id = "demo"
job_types = ["CREATE_SERVER"]

[notifiers.a]
kind = "webhook"
url = "{a}/hook"

[notifiers.b]
kind = "webhook"
url = "{b}/hook"

[[routes]]
notify = ["a", "b"]
kinds = ["appeared", "changed"]
group_window = "{}s"
"#,
        WINDOW.as_secs()
    )
}

// Pins docs/configuration.md `group_window` with durability: events of one route
// from two different poll cycles inside the window leave as one message
// per notifier, even when the daemon is SIGKILLed inside the window and
// restarted, and no message leaves before the window (opened by the
// first event) has closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_window_spans_two_cycles_and_a_sigkill_and_sends_once_when_it_closes() {
    let dir = tempfile::tempdir().unwrap();
    let sim = Sim::start(SimOptions::default()).await;
    let mut a = Receiver::start(vec![]).await;
    let mut b = Receiver::start(vec![]).await;
    let jobs = sim.create_waiting("CREATE_SERVER", 2).await;
    let state = dir.path().join("state.db");
    let config = dir.path().join("jobwatch.toml");
    std::fs::write(&config, grouped_config(&sim.url(), &a.url, &b.url, &state)).unwrap();
    let log = dir.path().join("jobwatch.log");
    let mut daemon = Daemon::spawn(&config, None, &log);
    wait_baselined(&state, "CREATE_SERVER", WITHIN).await;

    // The first event: the window opens when its cycle commits, which is
    // after `opened`, so `opened + WINDOW` is a lower bound of its close.
    let opened = std::time::Instant::now();
    sim.set_status(&jobs[0], "FAILED").await;
    // Waits for `n` pending rows; no message may leave meanwhile.
    let pending_rows = |n: usize, what: &'static str| {
        let (state, a, b) = (&state, &a, &b);
        eventually(WITHIN, what, move || async move {
            let (pending, _) = outbox_rows(state).await;
            assert!(
                a.rx.is_empty() && b.rx.is_empty(),
                "a message left before the window closed"
            );
            (pending.len() == n).then_some(pending)
        })
    };
    let first = pending_rows(2, "the first event's rows").await;
    // The second, set only once the first was committed: a later cycle.
    sim.set_status(&jobs[1], "FAILED").await;
    let rows = pending_rows(4, "the second event's rows").await;
    let closes = first[0].next_attempt_at;
    let events: BTreeSet<String> = rows.iter().map(|r| r.event_id.clone()).collect();
    assert_eq!(events.len(), 2, "{rows:?}");
    let windows: Vec<_> = rows
        .iter()
        .map(|r| {
            (
                &r.notifier,
                &r.event_id,
                r.group_key.as_deref(),
                r.next_attempt_at,
            )
        })
        .collect();
    for row in &rows {
        assert_eq!(
            row.next_attempt_at, closes,
            "one window for all: {windows:?}"
        );
        assert_eq!(row.group_key.as_deref(), Some("routes[0]"), "{windows:?}");
    }
    assert!(
        rows.iter().any(|r| r.created_at > first[0].created_at),
        "the second event came from a later cycle: {rows:?}"
    );

    // SIGKILL inside the window, and a restart.
    daemon.kill9();
    assert!(
        jiff::Timestamp::now() < closes,
        "the test was too slow: the window closed before the kill"
    );
    assert!(
        a.rx.try_recv().is_err() && b.rx.try_recv().is_err(),
        "a message left before the window closed"
    );
    let mut daemon = Daemon::spawn(&config, None, &log);

    for receiver in [&mut a, &mut b] {
        let got = receiver.next(WITHIN).await;
        assert!(
            got.at.duration_since(opened) >= WINDOW,
            "sent {:?} after the first event, inside its {WINDOW:?} window",
            got.at.duration_since(opened)
        );
        let body = got.json();
        let carried: BTreeSet<String> = body["events"]
            .as_array()
            .expect("events")
            .iter()
            .map(|e| e["event_id"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(carried, events, "{body}");
        assert_eq!(body["group"]["count"], 2, "{body}");
        assert_eq!(got.header("webhook-id"), body["group"]["id"].as_str());
    }
    // Once every row is recorded nothing is left to send: one message each.
    eventually(WITHIN, "every row delivered", || {
        let state = state.clone();
        async move { (outbox(&state).await == (0, 0)).then_some(()) }
    })
    .await;
    assert!(
        a.rx.try_recv().is_err() && b.rx.try_recv().is_err(),
        "more than one message per notifier"
    );
    daemon.signal("TERM");
    let status = daemon.exit_status(WITHIN).await;
    assert_eq!(status.code(), Some(0), "{status:?}");
}

/// `GET http://{addr}{path}` on a fresh connection: its status, or why
/// there was none.
async fn probe(addr: std::net::SocketAddr, path: &str) -> Result<u16, String> {
    reqwest::Client::new()
        .get(format!("http://{addr}{path}"))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .map(|r| r.status().as_u16())
        .map_err(|e| format!("{e:#}"))
}

// Pins docs/guarantees.md's systemd and signal contract beyond READY/RELOADING:
// `WATCHDOG=1` keeps coming while the loops live and `STATUS=` says what
// is watched; SIGINT stops like SIGTERM (STOPPING=1, the delivery under
// way finishes, exit 0); and `/readyz` answers non-200 as soon as
// stopping begins, while the process is still draining.
// Regression: the probe server used to close with the pollers, before
// the drain, so during it `/readyz` refused connections instead of
// answering 503 (and the `stopping` flag it reads was never seen).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watchdog_is_fed_sigint_drains_like_sigterm_and_readyz_fails_while_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let sim = Sim::start(SimOptions::default()).await;
    let recorder = Recorder::start().await;
    let job = sim.create_waiting("CREATE_SERVER", 1).await.remove(0);
    let state = dir.path().join("state.db");
    let config = dir.path().join("jobwatch.toml");
    let mut toml = daemon_config(
        &sim.url(),
        &format!("{}/hook", recorder.url),
        &state,
        &["CREATE_SERVER"],
    );
    // Port 0: the daemon picks a free port and logs it.
    toml.push_str("\n[server]\nlisten = \"127.0.0.1:0\"\n");
    std::fs::write(&config, toml).unwrap();
    let mut notify = NotifySocket::bind(dir.path());
    // WatchdogSec=2: the daemon feeds it every second.
    let mut daemon = Daemon::spawn_with_env(
        &config,
        Some(&notify.path),
        &dir.path().join("jobwatch.log"),
        &[("WATCHDOG_USEC", "2000000")],
    );

    let mut lines = notify.expect("READY=1", WITHIN).await;
    lines.extend(notify.expect("STATUS=watching 1 target(s)", WITHIN).await);
    // Two more feeds after READY=1: the watchdog is fed repeatedly, not once.
    for _ in 0..2 {
        lines.extend(notify.expect("WATCHDOG=1", WITHIN).await);
    }
    let ready_at = lines.iter().position(|l| l == "READY=1").unwrap();
    assert!(
        lines[ready_at..]
            .iter()
            .filter(|l| *l == "WATCHDOG=1")
            .count()
            >= 2,
        "{lines:?}"
    );

    let addr = daemon.served_addr(WITHIN).await;
    assert_eq!(probe(addr, "/readyz").await, Ok(200));
    assert_eq!(probe(addr, "/healthz").await, Ok(200));

    // A delivery under way (the receiver takes 4 s, shutdown_grace is 5 s).
    wait_baselined(&state, "CREATE_SERVER", WITHIN).await;
    recorder.set_delay(Duration::from_secs(4));
    sim.set_status(&job, "FAILED").await;
    eventually(WITHIN, "a delivery in flight", || {
        let busy = recorder.in_flight() >= 1;
        async move { busy.then_some(()) }
    })
    .await;

    daemon.signal("INT");
    notify.expect("STOPPING=1", WITHIN).await;
    let status = eventually(WITHIN, "/readyz to turn non-200", || async {
        match probe(addr, "/readyz").await {
            Ok(200) => None,
            Ok(status) => Some(status),
            // Either the server closed before the drain, or `/readyz`
            // kept answering 200 until the process was gone.
            Err(e) => panic!("no non-200 answer from /readyz while the daemon was stopping: {e}"),
        }
    })
    .await;
    assert_eq!(status, 503);
    assert!(
        daemon.exited().is_none() && recorder.in_flight() >= 1,
        "/readyz was read while the delivery was still draining"
    );

    let status = daemon.exit_status(WITHIN).await;
    assert_eq!(
        status.code(),
        Some(0),
        "SIGINT drains and exits 0: {status:?}"
    );
    assert_eq!(recorder.received().len(), 1);
    assert_eq!(
        outbox(&state).await,
        (0, 0),
        "the delivery under way finished and was recorded"
    );
}

/// Writes `dir`'s [`daemon_config`]: `sim` watched for CREATE_SERVER, the
/// webhook at `receiver`'s `/hook`; returns the state file and the config.
fn create_server_config(dir: &Path, sim: &Sim, receiver: &str) -> (PathBuf, PathBuf) {
    let state = dir.join("state.db");
    let config = dir.join("jobwatch.toml");
    let hook = format!("{receiver}/hook");
    std::fs::write(
        &config,
        daemon_config(&sim.url(), &hook, &state, &["CREATE_SERVER"]),
    )
    .unwrap();
    (state, config)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_daemon_or_once_on_the_same_state_file_is_refused_naming_the_first() {
    let dir = tempfile::tempdir().unwrap();
    let sim = Sim::start(SimOptions::default()).await;
    let receiver = Receiver::start(vec![]).await;
    let (state, config) = create_server_config(dir.path(), &sim, &receiver.url);
    let mut first = Daemon::spawn(&config, None, &dir.path().join("first.log"));
    wait_baselined(&state, "CREATE_SERVER", WITHIN).await;

    let mut second = Daemon::spawn(&config, None, &dir.path().join("second.log"));
    let status = second.exit_status(WITHIN).await;
    assert_eq!(status.code(), Some(1), "{}", second.log());
    let holder = format!("in use by another jobwatch (pid {})", first.pid());
    assert!(second.log().contains(&holder), "{}", second.log());
    let once = crate::support::jobwatch(&config, &["once"]).await;
    assert_eq!(once.status.code(), Some(1));
    let text = String::from_utf8_lossy(&once.stderr);
    assert!(text.contains(&holder), "{text}");
    assert!(first.exited().is_none(), "the first keeps running");

    // Its lock dies with it, however it dies.
    first.kill9();
    let once = crate::support::jobwatch(&config, &["once"]).await;
    assert!(
        once.status.success(),
        "{}",
        String::from_utf8_lossy(&once.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_throttle_is_logged_when_it_starts_and_when_it_ends() {
    let dir = tempfile::tempdir().unwrap();
    let sim = Sim::start(SimOptions::default()).await;
    let receiver = Receiver::start(vec![]).await;
    let (state, config) = create_server_config(dir.path(), &sim, &receiver.url);
    let mut daemon = Daemon::spawn(&config, None, &dir.path().join("jobwatch.log"));
    wait_baselined(&state, "CREATE_SERVER", WITHIN).await;
    sim.fault(
        json!({"fault":"status","status":429,"times":1,"retry_after":2,
        "error_code":"APIG.0308","error_msg":jobwatch::sim::THROTTLE_MSG}),
    )
    .await;
    eventually(WITHIN, "the pause's start and end in the log", || {
        let log = daemon.log();
        async move {
            let started = log.find("the API gateway throttles this account")?;
            let over = log.find("the API throttle pause is over")?;
            (started < over).then_some(())
        }
    })
    .await;
    assert_eq!(
        daemon
            .log()
            .matches("the API gateway throttles this account")
            .count(),
        1,
        "once"
    );
    assert!(daemon.exited().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_fed_hostile_answers_sends_nothing_false_and_says_why() {
    // The hostile answers of tests/it/hostile.rs, to a running daemon that
    // routes every kind: between true answers, each lie is told for 8
    // attempts; the receiver gets nothing, the log names each lie, and
    // the polls count as failed.
    let dir = tempfile::tempdir().unwrap();
    let sim = Sim::start(SimOptions {
        history: 150,
        history_job_types: vec!["CREATE_SERVER".into()],
        ..SimOptions::default()
    })
    .await;
    let receiver = Recorder::start().await;
    let state = dir.path().join("state.db");
    let config = dir.path().join("jobwatch.toml");
    let hook = format!("{}/hook", receiver.url);
    let text = daemon_config(&sim.url(), &hook, &state, &["CREATE_SERVER"])
        .replace("kinds = [\"appeared\", \"changed\"]\n", "")
        + "\n[server]\nlisten = \"127.0.0.1:0\"\n";
    assert!(!text.contains("kinds ="), "every kind is routed");
    std::fs::write(&config, text).unwrap();
    // Back to the truth at once after failed polls.
    let mut daemon = Daemon::spawn_with_env(
        &config,
        None,
        &dir.path().join("jobwatch.log"),
        // Full scans: every lie reaches the part that could believe it.
        &[
            ("JOBWATCH_POLL__MAX_BACKOFF", "1s"),
            ("JOBWATCH_POLL__STRATEGY", "full"),
        ],
    );
    let addr = daemon.served_addr(WITHIN).await;
    wait_baselined(&state, "CREATE_SERVER", WITHIN).await;
    let lies = [
        (
            json!({"fault": "body", "body": "{}"}),
            r#""count" is missing or null"#,
        ),
        (
            json!({"fault": "body", "body": r#"{"error_code":"WKS.0001","error_msg":"internal error"}"#}),
            "an error answer under HTTP 200",
        ),
        (
            json!({"fault": "body", "body": r#"{"count":0,"items":[]}"#}),
            "a complete scan would take away more than half of the tracked sub-jobs",
        ),
        (json!({"fault": "patch", "items": {"status": null}}), ""),
        (
            json!({"fault": "patch", "page": {"count": 1_000_000_000u64}}),
            "not believed",
        ),
    ];
    for (mut lie, said) in lies {
        // Two requests' worth of attempts (the client tries 4 times).
        lie["times"] = json!(8);
        let before = list_requests(&sim).await;
        sim.fault(lie.clone()).await;
        // The lie told 20 times, then the truth a few times.
        eventually(2 * WITHIN, "the lie told, then the truth", || async {
            (list_requests(&sim).await >= before + 12).then_some(())
        })
        .await;
        assert_eq!(
            receiver.received().len(),
            0,
            "after {lie}: something was sent"
        );
        assert!(
            daemon.log().contains(said),
            "after {lie}: no {said:?} in the log:\n{}",
            daemon.log()
        );
    }
    let metrics = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(r#"jobwatch_polls_total{target="demo/CREATE_SERVER",result="error"}"#),
        "{metrics}"
    );
    let tracked = r#"jobwatch_tracked_sub_jobs{target="demo/CREATE_SERVER"} 150"#;
    assert!(metrics.contains(tracked), "{metrics}");
    assert!(daemon.exited().is_none());
}
