//! Several accounts in one daemon: two simulators standing for two regions,
//! one signing with AK/SK, one taking a token, each read within its own
//! budget, each target shown and routed by its name.

use std::time::{Duration, Instant};

use jobwatch::secret::Secret;
use jobwatch::sim::SimOptions;
use serde_json::{Value, json};

use crate::support::{Daemon, Recorder, SIM_ERROR_CODE, Sim, baselined, eventually};

/// The default account's budget and the named one's: each sim must see
/// its own, not a share of one.
const CN_BUDGET: u32 = 30;
const INTL_BUDGET: u32 = 20;
/// The client's burst: a budget lets this many through at once.
const BURST: u32 = 5;

async fn sim(project: &str, opts: SimOptions) -> Sim {
    Sim::start(SimOptions {
        projects: vec![project.to_owned()],
        ..opts
    })
    .await
}

async fn create_failed(sim: &Sim, project: &str) -> String {
    let made = sim
        .control(
            reqwest::Method::POST,
            "/sim/jobs",
            json!({"project_id": project, "job_type": "CREATE_SERVER", "count": 1, "status": "RUNNING"}),
        )
        .await;
    let id = made["sub_job_ids"][0].as_str().expect("an id").to_owned();
    sim.control(
        reqwest::Method::POST,
        &format!("/sim/jobs/{id}"),
        json!({"status": "FAILED", "error_code": SIM_ERROR_CODE, "error_message": "quota exceeded"}),
    )
    .await;
    id
}

fn requests(stats: &Value) -> u64 {
    stats["requests"].as_u64().expect("requests")
}

/// The events every body `recorder` got carries, flattened.
fn events(recorder: &Recorder) -> Vec<Value> {
    recorder
        .received()
        .iter()
        .flat_map(|r| r.json()["events"].as_array().cloned().unwrap_or_default())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_daemon_watches_two_accounts_each_with_its_own_auth_budget_and_name() {
    let cn = sim(
        "cn-proj",
        SimOptions {
            ak: Some("AK-CN".into()),
            sk: Some(Secret::new("SK-CN")),
            ..SimOptions::default()
        },
    )
    .await;
    let intl = sim(
        "intl-proj",
        SimOptions {
            token: Some(Secret::new("TOKEN-INTL")),
            ..SimOptions::default()
        },
    )
    .await;
    let by_name = Recorder::start().await;
    let by_code = Recorder::start().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("cn.sk"), "SK-CN\n").unwrap();
    std::fs::write(dir.path().join("intl.token"), "TOKEN-INTL\n").unwrap();
    let state = dir.path().join("state.db");
    let config = dir.path().join("jobwatch.toml");
    std::fs::write(
        &config,
        format!(
            r#"[api]
endpoint = "{cn}"
max_requests_per_minute = {CN_BUDGET}

[auth]
method = "aksk"
ak = "AK-CN"
sk_file = "cn.sk"

[accounts.intl]
endpoint = "{intl}"
max_requests_per_minute = {INTL_BUDGET}
[accounts.intl.auth]
method = "token"
token_file = "intl.token"

[state]
path = {state:?}

[poll]
interval = "1s"
active_interval = "1s"

[log]
level = "info,jobwatch=debug"

[server]
listen = "127.0.0.1:0"

[[targets]]
name = "cn-prod"
project_id = "cn-proj"
job_types = ["CREATE_SERVER"]

[[targets]]
account = "intl"
name = "intl-prod"
project_id = "intl-proj"
job_types = ["CREATE_SERVER"]

[notifiers.by_name]
kind = "webhook"
url = "{by_name}"

[notifiers.by_code]
kind = "webhook"
url = "{by_code}"

# Only the intl target's failures, by name.
[[routes]]
targets = ["intl-prod"]
to = ["FAILED"]
notify = ["by_name"]

# Only the cn project's failures with this code.
[[routes]]
projects = ["cn-proj"]
error_codes = ["{SIM_ERROR_CODE}"]
notify = ["by_code"]
"#,
            cn = cn.url(),
            intl = intl.url(),
            by_name = by_name.url,
            by_code = by_code.url,
        ),
    )
    .unwrap();

    let started = Instant::now();
    let log = dir.path().join("daemon.log");
    let daemon = Daemon::spawn(&config, None, &log);
    eventually(Duration::from_secs(30), "both targets baselined", || {
        let state = state.clone();
        async move {
            (baselined(&state, "cn-proj", "CREATE_SERVER").await
                && baselined(&state, "intl-proj", "CREATE_SERVER").await)
                .then_some(())
        }
    })
    .await;

    let cn_failed = create_failed(&cn, "cn-proj").await;
    let intl_failed = create_failed(&intl, "intl-proj").await;
    let got = eventually(Duration::from_secs(30), "each failure at its route", || {
        let (a, b) = (events(&by_name), events(&by_code));
        async move { (!a.is_empty() && !b.is_empty()).then_some((a, b)) }
    })
    .await;
    let (named, coded) = got;
    assert_eq!(named.len(), 1, "{named:?}");
    assert_eq!(named[0]["sub_job_id"], intl_failed.as_str());
    assert_eq!(named[0]["target"], "intl-prod");
    assert_eq!(named[0]["account"], "intl");
    assert_eq!(coded.len(), 1, "{coded:?}");
    assert_eq!(coded[0]["sub_job_id"], cn_failed.as_str());
    assert_eq!(coded[0]["target"], "cn-prod");
    assert_eq!(coded[0]["account"], "default");

    // Each account authenticated its own way and was paced by its own
    // budget: both targets want a request a second, so each sim sees its
    // account's budget used up, never more; one budget shared would have
    // held both together to the larger one.
    let window = Duration::from_secs(30);
    tokio::time::sleep(window.saturating_sub(started.elapsed())).await;
    let (cn_stats, intl_stats) = (cn.stats().await, intl.stats().await);
    let minutes = started.elapsed().as_secs_f64() / 60.0;
    let most = |budget: u32| (f64::from(BURST) + f64::from(budget) * minutes).ceil() as u64 + 1;
    assert!(
        requests(&cn_stats) <= most(CN_BUDGET),
        "cn: {cn_stats} in {minutes:.2} min"
    );
    assert!(
        requests(&intl_stats) <= most(INTL_BUDGET),
        "intl: {intl_stats} in {minutes:.2} min"
    );
    let shared = most(CN_BUDGET);
    assert!(
        requests(&cn_stats) + requests(&intl_stats) > shared + 3,
        "together {} requests, no more than one budget ({shared}) would allow: cn {cn_stats}, intl {intl_stats}",
        requests(&cn_stats) + requests(&intl_stats)
    );
    for stats in [&cn_stats, &intl_stats] {
        assert!(
            stats["by_status"].get("401").is_none(),
            "a request was refused: {stats}"
        );
    }

    // Metrics count each account's requests and name targets by name.
    let addr = daemon.served_addr(Duration::from_secs(10)).await;
    let metrics = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for needle in [
        r#"jobwatch_api_requests_total{account="default",status="200"}"#,
        r#"jobwatch_api_requests_total{account="intl",status="200"}"#,
        r#"jobwatch_tracked_sub_jobs{target="intl-prod"} 1"#,
        r#"jobwatch_tracked_sub_jobs{target="cn-prod"} 1"#,
    ] {
        assert!(metrics.contains(needle), "{needle} missing from\n{metrics}");
    }

    // Logs name the targets by their names.
    let log = daemon.log();
    assert!(log.contains("intl-prod"), "{log}");
    assert!(log.contains("cn-prod"), "{log}");

    // `jobs` lists through any account, with that account's auth.
    let listed = crate::support::jobwatch(
        &config,
        &[
            "jobs",
            "--account",
            "intl",
            "--project",
            "intl-proj",
            "--job-type",
            "CREATE_SERVER",
            "--format",
            "json",
        ],
    )
    .await;
    assert!(
        listed.status.success(),
        "{}",
        String::from_utf8_lossy(&listed.stderr)
    );
    let listing: Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(listing["items"][0]["id"], intl_failed.as_str(), "{listing}");
    let unknown = crate::support::jobwatch(
        &config,
        &[
            "jobs",
            "--account",
            "intll",
            "--project",
            "p",
            "--job-type",
            "CREATE_SERVER",
        ],
    )
    .await;
    assert_eq!(unknown.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&unknown.stderr).contains("no account \"intll\""),
        "{}",
        String::from_utf8_lossy(&unknown.stderr)
    );
}
