//! The commands as a user runs them: `notify-test`, `once`, `state`, and
//! the heartbeat of `run`, against the simulator and loopback receivers.

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use crate::support::{Daemon, Receiver, Sim, eventually, jobwatch};
use jobwatch::sim::SimOptions;
use reqwest::Method;
use serde_json::{Value, json};

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn write_config(dir: &Path, body: &str) -> std::path::PathBuf {
    let path = dir.join("jobwatch.toml");
    std::fs::write(&path, body).unwrap();
    path
}

#[tokio::test]
async fn notify_test_reports_each_notifier_and_fails_when_one_does() {
    let good = Receiver::start(vec![]).await;
    let bad = Receiver::start(vec![(400, vec![], "no such hook".into())]).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &format!(
            r#"
[auth]
method = "none"
[notifiers.good]
kind = "webhook"
url = "{}/in"
[notifiers.bad]
kind = "webhook"
url = "{}/in"
"#,
            good.url, bad.url
        ),
    );
    let out = jobwatch(&config, &["notify-test"]).await;
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("good: ok"), "{text}");
    assert!(
        text.contains("bad: FAILED: HTTP 400: no such hook"),
        "{text}"
    );

    let out = jobwatch(&config, &["notify-test", "good"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    let out = jobwatch(&config, &["notify-test", "nope"]).await;
    assert_eq!(out.status.code(), Some(2));
}

#[tokio::test]
async fn once_takes_a_baseline_then_reports_and_delivers_what_changed() {
    let sim = Sim::start(SimOptions::default()).await;
    let made = sim
        .control(
            Method::POST,
            "/sim/jobs",
            json!({"project_id":"demo","job_type":"CREATE_SERVER","count":2,"status":"RUNNING"}),
        )
        .await;
    let ids: Vec<String> = made["sub_job_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    let mut receiver = Receiver::start(vec![]).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &format!(
            r#"
[api]
endpoint = "{}"
[auth]
method = "none"
[state]
path = "{}"
[[targets]]
project_id = "demo"
job_types = ["CREATE_SERVER"]
[notifiers.hook]
kind = "webhook"
url = "{}/hook"
[[routes]]
to = ["FAILED"]
notify = ["hook"]
"#,
            sim.url(),
            dir.path().join("state.db").display(),
            receiver.url
        ),
    );
    // First cycle: a silent baseline.
    let out = jobwatch(&config, &["once", "--format", "json"]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout(&out).trim(), "");

    sim.control(
        Method::POST,
        &format!("/sim/jobs/{}", ids[0]),
        json!({"status":"FAILED","error_code":"WKS.00129901","error_message":"boom"}),
    )
    .await;
    // A dry run sees it, but writes and sends nothing.
    let out = jobwatch(&config, &["once", "--format", "json", "--dry-run"]).await;
    assert!(out.status.success());
    assert_eq!(stdout(&out).lines().count(), 1);
    assert!(receiver.rx.try_recv().is_err());

    let out = jobwatch(&config, &["once", "--format", "json"]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1);
    assert_eq!(
        (lines[0]["from"].as_str(), lines[0]["to"].as_str()),
        (Some("RUNNING"), Some("FAILED"))
    );
    assert_eq!(lines[0]["sub_job_id"], ids[0].as_str());
    let got = receiver.next(Duration::from_secs(10)).await;
    assert_eq!(got.json()["events"][0]["event_id"], lines[0]["event_id"]);

    // Nothing new: nothing printed, nothing sent.
    let out = jobwatch(&config, &["once", "--format", "json"]).await;
    assert_eq!(stdout(&out).trim(), "");
    let out = jobwatch(&config, &["state", "show"]).await;
    let text = stdout(&out);
    assert!(
        text.contains("demo/CREATE_SERVER") && text.contains("0 pending, 0 dead"),
        "{text}"
    );
}

// Pins: `run` pings the heartbeat after healthy cycles only, and serves
// /healthz, /readyz and /metrics on `server.listen`.
// Regression (test set-up): this test once bound a port, closed it and gave
// the number to the daemon, so a parallel test could take it in between;
// now the daemon binds port 0 itself and the test reads the address it
// logged.
#[tokio::test]
async fn heartbeat_pings_after_healthy_cycles_and_falls_silent_while_polling_fails() {
    let sim = Sim::start(SimOptions {
        history: 2,
        ..SimOptions::default()
    })
    .await;
    let mut pings = Receiver::start(vec![]).await;
    let dir = tempfile::tempdir().unwrap();
    let toml = format!(
        r#"
[api]
endpoint = "{}"
max_requests_per_minute = 6000
[auth]
method = "none"
[state]
path = "{}"
[poll]
interval = "1s"
active_interval = "1s"
max_backoff = "1s"
[[targets]]
project_id = "demo"
job_types = ["CREATE_SERVER"]
[heartbeat]
url = "{}/ping/uuid-1234"
every = "1s"
[server]
listen = "127.0.0.1:0"
"#,
        sim.url(),
        dir.path().join("state.db").display(),
        pings.url
    );
    let config = write_config(dir.path(), &toml);
    let mut daemon = Daemon::spawn(&config, None, &dir.path().join("jobwatch.log"));
    let metrics_addr = daemon.served_addr(Duration::from_secs(30)).await;

    let first = pings.next(Duration::from_secs(15)).await;
    assert_eq!(first.path, "/ping/uuid-1234");

    // The probes and the metrics, while healthy.
    let http = reqwest::Client::new();
    let get = |path: &str| http.get(format!("http://{metrics_addr}{path}")).send();
    assert_eq!(get("/healthz").await.unwrap().status(), 200);
    assert_eq!(get("/readyz").await.unwrap().status(), 200);
    let metrics = get("/metrics").await.unwrap().text().await.unwrap();
    for needle in [
        r#"jobwatch_polls_total{target="demo/CREATE_SERVER",result="ok"}"#,
        r#"jobwatch_api_requests_total{status="200"}"#,
        r#"jobwatch_tracked_sub_jobs{target="demo/CREATE_SERVER"} 2"#,
    ] {
        assert!(metrics.contains(needle), "{needle} missing from\n{metrics}");
    }

    // Every request fails from now on.
    sim.fault(json!({"fault":"status","status":503,"times":100000}))
        .await;
    let failures = |stats: &Value| stats["by_status"]["503"].as_u64().unwrap_or(0);
    eventually(Duration::from_secs(20), "a failing cycle", || async {
        (failures(&sim.stats().await) >= 4).then_some(())
    })
    .await;
    while pings.rx.try_recv().is_ok() {}
    let seen = failures(&sim.stats().await);
    eventually(
        Duration::from_secs(30),
        "two more failing cycles",
        || async { (failures(&sim.stats().await) >= seen + 8).then_some(()) },
    )
    .await;
    assert!(pings.rx.try_recv().is_err(), "a ping while polling failed");

    // Recovery brings the pings back.
    sim.control(Method::DELETE, "/sim/faults", json!(null))
        .await;
    pings.next(Duration::from_secs(30)).await;
    daemon.signal("TERM");
    let status = daemon.exit_status(Duration::from_secs(30)).await;
    assert_eq!(status.code(), Some(0), "{status:?}");
}

#[tokio::test]
async fn a_rejected_delivery_shows_in_state_dead_and_state_retry_requeues_it() {
    let sim = Sim::start(SimOptions::default()).await;
    let made = sim
        .control(
            Method::POST,
            "/sim/jobs",
            json!({"project_id":"demo","job_type":"CREATE_SERVER","count":1,"status":"RUNNING"}),
        )
        .await;
    let id = made["sub_job_ids"][0].as_str().unwrap().to_owned();
    // The receiver refuses the first delivery for good, then accepts.
    let mut receiver =
        Receiver::start(vec![(400, vec![], r#"{"error":"unknown channel"}"#.into())]).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &format!(
            r#"
[api]
endpoint = "{}"
[auth]
method = "none"
[state]
path = "{}"
[[targets]]
project_id = "demo"
job_types = ["CREATE_SERVER"]
[notifiers.hook]
kind = "webhook"
url = "{}/hook"
[[routes]]
notify = ["hook"]
"#,
            sim.url(),
            dir.path().join("state.db").display(),
            receiver.url
        ),
    );
    assert!(jobwatch(&config, &["once"]).await.status.success());
    sim.control(
        Method::POST,
        &format!("/sim/jobs/{id}"),
        json!({"status":"FAILED"}),
    )
    .await;
    assert!(jobwatch(&config, &["once"]).await.status.success());
    receiver.next(Duration::from_secs(10)).await;

    let dead = stdout(&jobwatch(&config, &["state", "dead"]).await);
    assert!(
        dead.contains("hook") && dead.contains("unknown channel") && dead.contains(&id),
        "{dead}"
    );
    let show = stdout(&jobwatch(&config, &["state", "show"]).await);
    assert!(show.contains("0 pending, 1 dead"), "{show}");

    let retry = stdout(&jobwatch(&config, &["state", "retry"]).await);
    assert!(retry.contains("requeued 1"), "{retry}");
    // The next cycle delivers the requeued row; the receiver now accepts.
    assert!(jobwatch(&config, &["once"]).await.status.success());
    let again = receiver.next(Duration::from_secs(10)).await;
    assert_eq!(again.json()["events"][0]["to"], "FAILED");
    let show = stdout(&jobwatch(&config, &["state", "show"]).await);
    assert!(show.contains("0 pending, 0 dead"), "{show}");
}
