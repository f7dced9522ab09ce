//! The daemon end to end (SPEC §5): the `jobwatch run` binary's lifecycle
//! under systemd's protocol and signals, and catching up after downtime.
//! Real simulator and receiver on loopback; waits are polls with timeouts.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use jobwatch::config::{Config, EnvVars};
use jobwatch::sim::SimOptions;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

use crate::support::{
    Daemon, NotifySocket, Receiver, Recorder, SIM_ERROR_CODE, Sim, daemon_config, eventually,
    list_requests, outbox, wait_baselined,
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
