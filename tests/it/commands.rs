//! The commands as a user runs them: `notify-test`, `once`, `state`, and
//! the heartbeat of `run`, against the simulator and loopback receivers.

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use crate::support::{
    Daemon, Receiver, Sim, eventually, jobwatch, jobwatch_as_reader, make_read_only,
};
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
async fn a_receiver_that_redirects_gets_nothing_sent_on_and_the_failure_names_where() {
    let elsewhere = crate::support::Recorder::start().await;
    let redirecting = Receiver::start(vec![(
        307,
        vec![("location", format!("{}/stolen?key=abc", elsewhere.url))],
        String::new(),
    )])
    .await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &format!(
            "[auth]\nmethod = \"none\"\n[notifiers.hook]\nkind = \"webhook\"\nurl = \"{}/in\"\nsecret = \"whsec_c2VjcmV0\"\n",
            redirecting.url
        ),
    );
    let out = jobwatch(&config, &["notify-test"]).await;
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    let origin = elsewhere.url.trim_end_matches('/');
    assert!(
        text.contains(&format!("hook: FAILED: HTTP 307: redirected to {origin}/…")),
        "{text}"
    );
    assert!(
        !text.contains("key=abc"),
        "the target's query is not shown: {text}"
    );
    assert_eq!(elsewhere.received().len(), 0, "nothing was re-sent there");
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
        r#"jobwatch_api_requests_total{account="default",status="200"}"#,
        r#"jobwatch_tracked_sub_jobs{target="demo/CREATE_SERVER"} 2"#,
        concat!(
            r#"jobwatch_build_info{version=""#,
            env!("CARGO_PKG_VERSION"),
            r#"",commit=""#
        ),
        r#"jobwatch_last_successful_poll_timestamp_seconds{target="demo/CREATE_SERVER"} 1"#,
        "jobwatch_config_last_reload_successful 1",
        "jobwatch_config_last_reload_success_timestamp_seconds 1",
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
    // Not ready while every target fails; still healthy (it can commit).
    let probe = |path: &'static str| {
        let http = http.clone();
        async move {
            let r = http
                .get(format!("http://{metrics_addr}{path}"))
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    let text = eventually(Duration::from_secs(30), "not ready", || async {
        let (status, text) = probe("/readyz").await;
        (status == 503).then_some(text)
    })
    .await;
    assert!(
        text.contains("every target's polls have failed for"),
        "{text}"
    );
    assert_eq!(probe("/healthz").await.0, 200);

    // Recovery brings the pings back, and readiness.
    sim.control(Method::DELETE, "/sim/faults", json!(null))
        .await;
    pings.next(Duration::from_secs(30)).await;
    eventually(Duration::from_secs(30), "ready again", || async {
        (probe("/readyz").await.0 == 200).then_some(())
    })
    .await;

    // A state file that refuses every commit: unhealthy, with SQLite's
    // own words in the log; healthy again once commits go through.
    let db = rusqlite::Connection::open(dir.path().join("state.db")).unwrap();
    db.execute_batch(
        "CREATE TRIGGER refuse_insert BEFORE INSERT ON targets
           BEGIN SELECT RAISE(ABORT, 'simulated: database or disk is full'); END;
         CREATE TRIGGER refuse_update BEFORE UPDATE ON targets
           BEGIN SELECT RAISE(ABORT, 'simulated: database or disk is full'); END;",
    )
    .unwrap();
    eventually(Duration::from_secs(30), "/healthz to fail", || async {
        (probe("/healthz").await.0 == 503).then_some(())
    })
    .await;
    assert_eq!(probe("/readyz").await.0, 503);
    assert!(
        daemon.log().contains("simulated: database or disk is full"),
        "{}",
        daemon.log()
    );
    db.execute_batch("DROP TRIGGER refuse_insert; DROP TRIGGER refuse_update;")
        .unwrap();
    eventually(Duration::from_secs(30), "/healthz to recover", || async {
        (probe("/healthz").await.0 == 200).then_some(())
    })
    .await;

    // A rejected reload shows in the metrics.
    std::fs::write(&config, "[api\nendpoint = ").unwrap();
    daemon.signal("HUP");
    eventually(
        Duration::from_secs(30),
        "the failed reload's metric",
        || async {
            let text = probe("/metrics").await.1;
            text.contains("jobwatch_config_last_reload_successful 0")
                .then_some(())
        },
    )
    .await;
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
    // The receiver refuses the first two deliveries for good.
    let refuse = (400, vec![], r#"{"error":"unknown channel"}"#.to_owned());
    let mut receiver = Receiver::start(vec![refuse.clone(), refuse]).await;
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
    // The same, for scripts.
    let json_of = |out: std::process::Output| -> serde_json::Value {
        serde_json::from_str(&stdout(&out)).expect("JSON")
    };
    let dead = json_of(jobwatch(&config, &["state", "--format", "json", "dead"]).await);
    assert_eq!(dead[0]["sub_job_id"], id.as_str(), "{dead}");
    assert_eq!(dead[0]["notifier"], "hook", "{dead}");
    assert!(
        dead[0]["last_answer"]
            .as_str()
            .unwrap()
            .contains("unknown channel")
    );
    assert_eq!(dead[0]["event"]["to"], "FAILED", "{dead}");
    let show = json_of(jobwatch(&config, &["state", "show", "--format", "json"]).await);
    assert_eq!(show["outbox"], json!({"pending": 0, "dead": 1}), "{show}");
    assert_eq!(show["targets"][0]["target"], "demo/CREATE_SERVER", "{show}");
    // Purging keeps what died more recently than asked.
    let purge =
        stdout(&jobwatch(&config, &["state", "purge", "--dead", "--older-than", "1h"]).await);
    assert!(purge.contains("purged 0 dead letter(s)"), "{purge}");

    let unknown = jobwatch(&config, &["state", "retry", "99999"]).await;
    assert_eq!(unknown.status.code(), Some(1), "an unknown id is an error");
    assert!(
        String::from_utf8_lossy(&unknown.stderr).contains("no dead letter with id 99999"),
        "{}",
        String::from_utf8_lossy(&unknown.stderr)
    );
    let retry = stdout(&jobwatch(&config, &["state", "retry"]).await);
    assert!(retry.contains("requeued 1"), "{retry}");
    // The next cycle delivers the requeued row; the receiver now accepts.
    assert!(jobwatch(&config, &["once"]).await.status.success());
    let again = receiver.next(Duration::from_secs(10)).await;
    assert_eq!(again.json()["events"][0]["to"], "FAILED");
    // Refused again: dead again, and this time purged.
    let show = stdout(&jobwatch(&config, &["state", "show"]).await);
    assert!(show.contains("0 pending, 1 dead"), "{show}");
    let purge =
        stdout(&jobwatch(&config, &["state", "purge", "--dead", "--older-than", "0s"]).await);
    assert!(purge.contains("purged 1 dead letter(s)"), "{purge}");
    let show = stdout(&jobwatch(&config, &["state", "show"]).await);
    assert!(show.contains("0 pending, 0 dead"), "{show}");

    // Looking needs no write access: a state file and directory that may
    // not be written still show, list dead letters and dry-run.
    make_read_only(dir.path());
    for args in [
        &["state", "show"][..],
        &["state", "dead"],
        &["once", "--dry-run"],
    ] {
        let out = jobwatch_as_reader(&config, args).await;
        assert!(
            out.status.success(),
            "{args:?} on a read-only state: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// A config for the simulator at `api`: project `demo` watched for
/// `job_types`, one webhook `hook` at `hook_url` taking FAILED.
fn sim_config(dir: &Path, api: &str, hook_url: &str, job_types: &[&str]) -> std::path::PathBuf {
    let job_types: Vec<String> = job_types.iter().map(|t| format!("{t:?}")).collect();
    write_config(
        dir,
        &format!(
            r#"
[api]
endpoint = "{api}"
[auth]
method = "none"
[state]
path = {state:?}
[[targets]]
project_id = "demo"
job_types = [{job_types}]
[notifiers.hook]
kind = "webhook"
url = "{hook_url}/hook"
[[routes]]
to = ["FAILED"]
notify = ["hook"]
"#,
            state = dir.join("state.db"),
            job_types = job_types.join(", "),
        ),
    )
}

/// Every item of a listing, read from the simulator itself page by page.
async fn sim_listing(sim: &Sim, query: &str) -> (u64, Vec<Value>) {
    let http = reqwest::Client::new();
    let mut items = Vec::new();
    loop {
        let url = format!(
            "{}/v1/demo/app-server-sub-jobs?{query}&limit=100&offset={}",
            sim.url(),
            items.len()
        );
        let page: Value = http.get(url).send().await.unwrap().json().await.unwrap();
        let count = page["count"].as_u64().unwrap();
        let got = page["items"].as_array().unwrap().clone();
        let empty = got.is_empty();
        items.extend(got);
        if empty || items.len() as u64 >= count {
            return (count, items);
        }
    }
}

// Pins README "Commands" `jobs`: every page straight from the API; `json` prints
// `{"count":N,"items":[…]}` with items as the API gave them, `table`
// one row per sub-job, `--status` filters.
#[tokio::test]
async fn jobs_lists_every_page_as_the_simulator_has_it_in_json_and_as_a_table() {
    // 110 finished sub-jobs of history and two waiting ones: two pages.
    let sim = Sim::start(SimOptions {
        history: 110,
        ..SimOptions::default()
    })
    .await;
    let waiting = sim.create_waiting("CREATE_SERVER", 2).await;
    let dir = tempfile::tempdir().unwrap();
    let config = sim_config(
        dir.path(),
        &sim.url(),
        "http://127.0.0.1:9",
        &["CREATE_SERVER"],
    );
    let jobs = |extra: &'static [&'static str]| {
        let config = config.clone();
        async move {
            let mut args = vec!["jobs", "--project", "demo", "--job-type", "CREATE_SERVER"];
            args.extend_from_slice(extra);
            let out = jobwatch(&config, &args).await;
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            stdout(&out)
        }
    };

    let (count, items) = sim_listing(&sim, "job_type=CREATE_SERVER").await;
    assert_eq!(count, 112);
    let listed: Value = serde_json::from_str(&jobs(&["--format", "json"]).await).unwrap();
    assert_eq!(listed["count"], count);
    assert_eq!(listed["items"].as_array().unwrap(), &items);

    let table = jobs(&["--format", "table"]).await;
    assert!(
        ["ID", "JOB", "STATUS", "BEGIN", "RESOURCE"]
            .iter()
            .all(|h| table.contains(h)),
        "{table}"
    );
    for item in &items {
        let id = item["id"].as_str().unwrap();
        let rows: Vec<&str> = table.lines().filter(|l| l.contains(id)).collect();
        assert_eq!(rows.len(), 1, "{id} in\n{table}");
        assert!(
            rows[0].contains(item["status"].as_str().unwrap()),
            "{}",
            rows[0]
        );
    }
    let data_rows = table
        .lines()
        .filter(|l| items.iter().any(|i| l.contains(i["id"].as_str().unwrap())))
        .count();
    assert_eq!(data_rows, items.len());
    // No rule between rows: one line per sub-job and a few for the frame.
    assert!(table.lines().count() <= items.len() + 5, "{table}");

    // As wide as the terminal: each row on one line, long cells cut.
    let mut narrow = tokio::process::Command::new(env!("CARGO_BIN_EXE_jobwatch"));
    for name in crate::support::inherited_settings() {
        narrow.env_remove(name);
    }
    narrow.env("COLUMNS", "100");
    let out = narrow
        .args(["-c"])
        .arg(&config)
        .args(["jobs", "--project", "demo", "--job-type", "CREATE_SERVER"])
        .output()
        .await
        .unwrap();
    let narrow = stdout(&out);
    assert!(narrow.lines().all(|l| l.chars().count() <= 100), "{narrow}");
    assert!(narrow.lines().count() <= items.len() + 5, "{narrow}");
    assert!(narrow.contains('…'), "long cells are cut: {narrow}");

    let only: Value =
        serde_json::from_str(&jobs(&["--status", "WAITING", "--format", "json"]).await).unwrap();
    let (count, items) = sim_listing(&sim, "job_type=CREATE_SERVER&status=WAITING").await;
    assert_eq!((only["count"].as_u64(), count), (Some(2), 2));
    assert_eq!(only["items"].as_array().unwrap(), &items);
    let ids: std::collections::BTreeSet<&str> =
        items.iter().map(|i| i["id"].as_str().unwrap()).collect();
    assert_eq!(ids, waiting.iter().map(String::as_str).collect());
}

// Pins README "Commands" `once --format table` (the transitions as a table, "no
// transitions" when there are none) and `state forget-target`: the target
// leaves `state show`, its pending alerts stay owed, and its next scan is
// a silent baseline.
#[tokio::test]
async fn once_prints_a_table_and_forget_target_drops_the_target_but_keeps_its_alerts() {
    let sim = Sim::start(SimOptions::default()).await;
    let create = sim.create_waiting("CREATE_SERVER", 1).await.remove(0);
    sim.create_waiting("DELETE_SERVER", 1).await;
    // The receiver is down for a minute: the alert stays pending.
    let busy = (
        503,
        vec![("retry-after", "60".to_owned())],
        "busy".to_owned(),
    );
    let mut receiver = Receiver::start(vec![busy; 10]).await;
    let dir = tempfile::tempdir().unwrap();
    let config = sim_config(
        dir.path(),
        &sim.url(),
        &receiver.url,
        &["CREATE_SERVER", "DELETE_SERVER"],
    );
    let once_table = || async {
        let out = jobwatch(&config, &["once", "--format", "table"]).await;
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout(&out)
    };
    let show = || async { stdout(&jobwatch(&config, &["state", "show"]).await) };

    assert_eq!(
        once_table().await.trim(),
        "no transitions (baseline recorded)",
        "the baseline"
    );
    sim.set_status(&create, "FAILED").await;
    let table = once_table().await;
    for header in ["KIND", "TARGET", "SUB-JOB", "FROM", "TO", "ERROR"] {
        assert!(table.contains(header), "{header} missing from\n{table}");
    }
    let rows: Vec<&str> = table.lines().filter(|l| l.contains(&create)).collect();
    assert_eq!(rows.len(), 1, "{table}");
    let cells: Vec<&str> = rows[0]
        .split(['|', '│'])
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .collect();
    assert_eq!(
        cells[..6],
        [
            "changed",
            "demo/CREATE_SERVER",
            create.as_str(),
            "WAITING",
            "FAILED",
            crate::support::SIM_ERROR_CODE
        ],
        "{table}"
    );
    receiver.next(Duration::from_secs(10)).await;

    let before = show().await;
    assert!(
        before.contains("demo/CREATE_SERVER")
            && before.contains("demo/DELETE_SERVER")
            && before.contains("1 pending, 0 dead"),
        "{before}"
    );
    let out = jobwatch(
        &config,
        &[
            "state",
            "forget-target",
            "--project",
            "demo",
            "--job-type",
            "CREATE_SERVER",
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert!(
        stdout(&out).contains("forgot demo/CREATE_SERVER: 1 tracked sub-job(s) dropped"),
        "{}",
        stdout(&out)
    );
    let after = show().await;
    assert!(!after.contains("demo/CREATE_SERVER"), "{after}");
    assert!(after.contains("demo/DELETE_SERVER"), "{after}");
    assert!(
        after.contains("1 pending, 0 dead"),
        "the alert is still owed: {after}"
    );

    // Its next scan is a new silent baseline; the alert is still owed.
    assert_eq!(
        once_table().await.trim(),
        "no transitions (baseline recorded)"
    );
    let after = show().await;
    assert!(
        after.contains("demo/CREATE_SERVER") && after.contains("1 pending, 0 dead"),
        "{after}"
    );
}

// Pins README "Commands" `demo`: zero-config, it starts, shows a transition on
// stdout, and stops cleanly with exit 0 on Ctrl-C (SIGINT). It binds its
// simulator, receiver and console on port 0, so parallel runs cannot collide.
#[tokio::test]
async fn demo_shows_a_transition_and_stops_cleanly_on_sigint() {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_jobwatch"));
    command
        .args(["demo", "--console-port", "0"])
        .env("NO_COLOR", "1")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::fs::File::create(dir.path().join("demo.log")).unwrap())
        .kill_on_drop(true);
    for name in crate::support::inherited_settings() {
        command.env_remove(name);
    }
    let mut child = command.spawn().expect("spawn jobwatch demo");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    let mut next_line = async || {
        tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .unwrap_or_else(|_| panic!("no line from demo within 30 s"))
            .expect("read demo stdout")
    };

    let first = next_line().await.expect("a first line");
    assert!(
        first.starts_with("jobwatch demo: simulator on http://127.0.0.1:"),
        "{first}"
    );
    seen.push(first);
    let transition = loop {
        let line = next_line().await.expect("demo ended early");
        seen.push(line.clone());
        if line.starts_with("receiver got: ") && line.contains('→') {
            break line;
        }
    };
    assert!(
        ["SUCCESS", "FAILED", "ABNORMAL"]
            .iter()
            .any(|s| transition.contains(s)),
        "{transition}"
    );

    let pid = child.id().expect("demo is running");
    let kill = std::process::Command::new("kill")
        .arg("-INT")
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(kill.success());
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("demo exits within 30 s of SIGINT")
        .unwrap();
    let mut rest = Vec::new();
    while let Some(line) = next_line().await {
        rest.push(line);
    }
    let log = std::fs::read_to_string(dir.path().join("demo.log")).unwrap_or_default();
    assert_eq!(
        status.code(),
        Some(0),
        "{status:?}\n{seen:?}\n{rest:?}\n{log}"
    );
    assert!(
        rest.iter().any(|l| l == "jobwatch demo: stopped cleanly"),
        "{rest:?}"
    );
}

#[tokio::test]
async fn check_counts_each_targets_pages_from_the_state_file_without_writing_it() {
    let sim = Sim::start(SimOptions {
        history: 1000,
        history_job_types: vec!["CREATE_SERVER".into()],
        ..SimOptions::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let config = sim_config(
        dir.path(),
        &sim.url(),
        "http://127.0.0.1:9",
        &["CREATE_SERVER"],
    );
    let stderr = |out: &Output| String::from_utf8_lossy(&out.stderr).into_owned();

    // No state file: one page each, and the file is not created.
    let out = jobwatch(&config, &["check"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("at one page of history each"),
        "{}",
        stderr(&out)
    );
    assert!(
        !dir.path().join("state.db").exists(),
        "check created the state file"
    );

    // A baseline of 1,000 sub-jobs: 10 pages. Polled every 5 s with full
    // scans that is 120 requests a minute, over the budget of 100.
    let out = jobwatch(&config, &["once"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = std::fs::read_to_string(&config).unwrap();
    let text = text.replacen("[api]\n", "[api]\nmax_requests_per_minute = 100\n", 1);
    std::fs::write(
        &config,
        format!("{text}[poll]\ninterval = \"5s\"\nstrategy = \"full\"\n"),
    )
    .unwrap();
    std::fs::set_permissions(
        dir.path().join("state.db"),
        std::os::unix::fs::PermissionsExt::from_mode(0o400),
    )
    .unwrap();
    let modified = std::fs::metadata(dir.path().join("state.db"))
        .unwrap()
        .modified()
        .unwrap();
    let out = jobwatch(&config, &["check"]).await;
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("pages counted from the state file"), "{err}");
    assert!(err.contains("first scans take 10 pages"), "{err}");
    assert!(
        err.contains("need 120 API requests/minute even when idle"),
        "{err}"
    );
    assert_eq!(
        std::fs::metadata(dir.path().join("state.db"))
            .unwrap()
            .modified()
            .unwrap(),
        modified,
        "check wrote the state file"
    );

    // The same under incremental: 12 a minute and one reconciliation of
    // 10 pages every 10 minutes fit.
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("strategy = \"full\"", "strategy = \"incremental\"");
    std::fs::write(&config, text).unwrap();
    let out = jobwatch(&config, &["check"]).await;
    let err = stderr(&out);
    assert!(err.contains("need about 13 requests/minute idle"), "{err}");
    assert!(!err.contains("warning: 1 targets"), "{err}");
}

#[tokio::test]
async fn check_run_and_once_refuse_a_config_that_watches_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &format!(
            "[auth]\nmethod = \"none\"\n[state]\npath = {:?}\n",
            dir.path().join("state.db")
        ),
    );
    for args in [&["check"][..], &["run"], &["once"]] {
        let out = jobwatch(&config, args).await;
        let text = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {text}");
        assert!(text.contains("targets: none"), "{args:?}: {text}");
    }
    assert!(!dir.path().join("state.db").exists(), "nothing was started");
}

#[tokio::test]
async fn jobs_refuses_a_lying_count_instead_of_listing_forever() {
    let sim = Sim::start(SimOptions {
        history: 30,
        ..SimOptions::default()
    })
    .await;
    // Every attempt of the first page; the client gives up after 4.
    sim.fault(json!({"fault": "patch", "page": {"count": 1_000_000_000u64}, "times": 4}))
        .await;
    let dir = tempfile::tempdir().unwrap();
    let config = sim_config(
        dir.path(),
        &sim.url(),
        "http://127.0.0.1:9",
        &["CREATE_SERVER"],
    );
    let out = jobwatch(
        &config,
        &["jobs", "--project", "demo", "--job-type", "CREATE_SERVER"],
    )
    .await;
    let text = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("1000000000") && text.contains("not believed"),
        "{text}"
    );
}

#[tokio::test]
async fn logs_have_no_colour_off_a_terminal_and_the_flags_set_level_and_format() {
    let receiver = Receiver::start(vec![]).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &format!(
            "[auth]\nmethod = \"none\"\n[log]\nlevel = \"info\"\n\
             [notifiers.hook]\nkind = \"webhook\"\nurl = \"{}/in\"\n",
            receiver.url
        ),
    );
    let stderr = |out: &Output| String::from_utf8_lossy(&out.stderr).into_owned();
    // A pipe, no NO_COLOR: still no escape codes.
    let mut plain = tokio::process::Command::new(env!("CARGO_BIN_EXE_jobwatch"));
    plain
        .arg("-c")
        .arg(&config)
        .args(["--log-level", "debug", "notify-test"]);
    for name in crate::support::inherited_settings() {
        plain.env_remove(name);
    }
    plain.env_remove("NO_COLOR");
    let out = plain.output().await.unwrap();
    let text = stderr(&out);
    assert!(text.contains("DEBUG"), "--log-level debug:\n{text}");
    assert!(!text.contains('\u{1b}'), "escape codes in a pipe:\n{text}");

    let out = jobwatch(&config, &["--log-level", "error", "notify-test"]).await;
    assert!(!stderr(&out).contains(" INFO "), "{}", stderr(&out));

    let out = jobwatch(
        &config,
        &[
            "--log-format",
            "json",
            "--log-level",
            "debug",
            "notify-test",
        ],
    )
    .await;
    let text = stderr(&out);
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty());
    for line in lines {
        serde_json::from_str::<Value>(line).unwrap_or_else(|e| panic!("{e}: {line}"));
    }
}

#[tokio::test]
async fn version_names_the_release_the_commit_and_its_date() {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_jobwatch"))
        .arg("--version")
        .output()
        .await
        .unwrap();
    let text = stdout(&out);
    let prefix = concat!("jobwatch ", env!("CARGO_PKG_VERSION"), " (commit ");
    let rest = text
        .trim()
        .strip_prefix(prefix)
        .unwrap_or_else(|| panic!("{text}"));
    let (commit, date) = rest
        .strip_suffix(')')
        .and_then(|r| r.split_once(", "))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        commit == "unknown"
            || (commit.len() == 12 && commit.bytes().all(|b| b.is_ascii_hexdigit())),
        "{text}"
    );
    assert!(date == "unknown" || date.len() == 10, "{text}");
}

// `once` as cron runs it: the first run says it recorded a baseline (not
// just "no transitions"); a run whose route groups waits for the window
// and sends the digest; a window longer than `--wait` is left for later,
// and said so without speaking of failures.
#[tokio::test]
async fn once_tells_a_baseline_and_waits_for_group_windows_up_to_wait() {
    let sim = Sim::start(SimOptions::default()).await;
    let first = sim.create_waiting("CREATE_SERVER", 2).await;
    let recorder = crate::support::Recorder::start().await;
    let dir = tempfile::tempdir().unwrap();
    let write = |window: &str| {
        failures_to_hook(
            dir.path(),
            &sim,
            &recorder.url,
            "",
            &format!("group_window = \"{window}\"\n"),
        )
    };
    let config = write("2s");
    let out = jobwatch(&config, &["once"]).await;
    assert!(out.status.success());
    assert_eq!(stdout(&out).trim(), "no transitions (baseline recorded)");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        err.contains("demo/CREATE_SERVER: recorded a baseline of 2 sub-jobs: no alerts for what already existed"),
        "{err}"
    );

    for id in &first {
        sim.set_status(id, "FAILED").await;
    }
    let out = jobwatch(&config, &["once"]).await;
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    let got = recorder.received();
    assert_eq!(
        got.len(),
        1,
        "one digest, sent before `once` returned: {err}"
    );
    assert_eq!(got[0].json()["events"].as_array().map(Vec::len), Some(2));
    assert!(!err.contains("deliveries"), "{err}");

    // A window longer than --wait: left for later, and said so.
    write("10m");
    let more = sim.create("CREATE_SERVER", 1, "FAILED").await;
    let out = jobwatch(&config, &["once", "--wait", "1s"]).await;
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        err.contains("1 deliveries wait for a group window that closes at ")
            && err.contains("after --wait 1s"),
        "{err}"
    );
    assert!(!err.contains("failed"), "{err}");
    assert_eq!(
        recorder.received().len(),
        1,
        "{more:?} waits for its window"
    );
}

// `sim`, `demo` and `completions` read no configuration, so they offer no
// `-c`; the commands that read one take it before or after their name.
#[tokio::test]
async fn only_commands_that_read_a_config_offer_dash_c() {
    let help = |args: &'static [&'static str]| async move {
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_jobwatch"))
            .args(args)
            .output()
            .await
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    for command in ["sim", "demo", "completions"] {
        let text = help(match command {
            "sim" => &["sim", "--help"],
            "demo" => &["demo", "--help"],
            _ => &["completions", "--help"],
        })
        .await;
        assert!(!text.contains("--config"), "{command}: {text}");
    }
    for command in ["run", "once", "check", "jobs", "notify-test", "state"] {
        let text = help(match command {
            "run" => &["run", "--help"],
            "once" => &["once", "--help"],
            "check" => &["check", "--help"],
            "jobs" => &["jobs", "--help"],
            "notify-test" => &["notify-test", "--help"],
            _ => &["state", "--help"],
        })
        .await;
        assert!(text.contains("-c, --config <FILE>"), "{command}: {text}");
    }
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.toml");
    for args in [
        vec![
            "-c".to_owned(),
            missing.display().to_string(),
            "check".into(),
        ],
        vec!["check".into(), "-c".into(), missing.display().to_string()],
        vec![
            "state".into(),
            "show".into(),
            "--config".into(),
            missing.display().to_string(),
        ],
    ] {
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_jobwatch"))
            .args(&args)
            .output()
            .await
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(&missing.display().to_string()),
            "{args:?}: {err}"
        );
    }
}

// A per-job digest counts the parent job's sub-jobs as tracked, whatever
// the route took: a failures-only route's digest of a job whose other two
// sub-jobs succeeded says 2/3 succeeded, not "0/1".
#[tokio::test]
async fn a_per_job_digest_counts_the_jobs_sub_jobs_from_the_snapshot() {
    let sim = Sim::start(SimOptions::default()).await;
    let ids = sim.create_waiting("CREATE_SERVER", 3).await;
    let recorder = crate::support::Recorder::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = failures_to_hook(
        dir.path(),
        &sim,
        &recorder.url,
        "template = '{\"title\": {{ title|tojson }}, \"group\": {{ group|tojson }}}'\n",
        "group_window = \"1s\"\ngroup_by = \"job_id\"\n",
    );
    assert!(jobwatch(&config, &["once"]).await.status.success());
    sim.set_status(&ids[0], "SUCCESS").await;
    sim.set_status(&ids[1], "SUCCESS").await;
    sim.set_status(&ids[2], "FAILED").await;
    let out = jobwatch(&config, &["once", "--wait", "20s"]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got = recorder.received();
    assert_eq!(got.len(), 1, "{got:?}");
    let body = got[0].json();
    let title = body["title"].as_str().unwrap();
    assert!(
        title.contains(": 2/3 succeeded, 1 FAILED (WKS.00129901)"),
        "{title}"
    );
    assert_eq!(
        body["group"]["job"],
        json!({"sub_jobs": 3, "by_status": {"FAILED": 1, "SUCCESS": 2}}),
        "{body}"
    );
}

// The log kind's `level` forces the level of every line it writes; without
// it a test is INFO (never the WARN of a failure) and says it is a test.
#[tokio::test]
async fn a_log_notifiers_level_forces_its_lines_level() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &format!(
            "[auth]\nmethod = \"none\"\n[state]\npath = {:?}\n[log]\nlevel = \"info\"\n\
             [notifiers.loud]\nkind = \"log\"\nlevel = \"error\"\n\
             [notifiers.plain]\nkind = \"log\"\n",
            dir.path().join("state.db")
        ),
    );
    let out = jobwatch(&config, &["notify-test"]).await;
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{err}");
    let line = |notifier: &str| {
        err.lines()
            .find(|l| {
                l.contains(&format!("notifier=\"{notifier}\""))
                    || l.contains(&format!("notifier={notifier}"))
            })
            .unwrap_or_else(|| panic!("no line of {notifier} in:\n{err}"))
            .to_owned()
    };
    let (loud, plain) = (line("loud"), line("plain"));
    assert!(loud.contains("ERROR"), "{loud}");
    assert!(plain.contains("INFO") && !plain.contains("WARN"), "{plain}");
    assert!(plain.contains(jobwatch::notify::text::TEST_MARK), "{plain}");
}

// A Content-Type among a webhook's `headers` replaces the default one
// instead of being sent beside it.
#[tokio::test]
async fn a_webhooks_own_content_type_replaces_the_default() {
    let recorder = crate::support::Recorder::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &format!(
            "[auth]\nmethod = \"none\"\n[state]\npath = {:?}\n\
             [notifiers.own]\nkind = \"webhook\"\nurl = \"{}/own\"\n\
             headers = {{ \"Content-Type\" = \"application/cloudevents+json\" }}\n\
             [notifiers.plain]\nkind = \"webhook\"\nurl = \"{}/plain\"\n",
            dir.path().join("state.db"),
            recorder.url,
            recorder.url
        ),
    );
    let out = jobwatch(&config, &["notify-test"]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let types = |path: &str| -> Vec<String> {
        let got = recorder.received();
        let r = got.iter().find(|r| r.path == path).expect("a request");
        r.headers
            .get_all("content-type")
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(types("/own"), ["application/cloudevents+json"]);
    assert_eq!(types("/plain"), ["application/json"]);
}

/// `jobwatch.toml` in `dir`: `sim`'s demo/CREATE_SERVER, a webhook `hook`
/// at `url` (with `hook_extra` keys), one route of FAILED to it (with
/// `route_extra` keys). Written again on each call.
fn failures_to_hook(
    dir: &Path,
    sim: &Sim,
    url: &str,
    hook_extra: &str,
    route_extra: &str,
) -> std::path::PathBuf {
    let preamble = crate::support::daemon_preamble(&sim.url(), &dir.join("state.db"), None);
    let config = dir.join("jobwatch.toml");
    std::fs::write(
        &config,
        format!(
            r#"{preamble}
[[targets]]
project_id = "demo"
job_types = ["CREATE_SERVER"]

[notifiers.hook]
kind = "webhook"
url = "{url}"
{hook_extra}
[[routes]]
to = ["FAILED"]
notify = ["hook"]
{route_extra}"#
        ),
    )
    .unwrap();
    config
}
