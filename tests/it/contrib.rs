//! `contrib/`: the Grafana dashboard and the Prometheus rules name only
//! metrics a daemon really exports, and promtool accepts the rules.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::support::{Daemon, Sim, daemon_preamble, eventually};
use jobwatch::sim::SimOptions;

/// Every sample name a daemon's `/metrics` can carry, from its `# TYPE`
/// lines (a counter `x` is sampled as `x_total`, a histogram as
/// `x_bucket`, `x_sum` and `x_count`).
async fn exported() -> BTreeSet<String> {
    let sim = Sim::start(SimOptions::default()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("jobwatch.toml");
    std::fs::write(
        &config,
        format!(
            "{}\n[server]\nlisten = \"127.0.0.1:0\"\n\n[[targets]]\nproject_id = \"demo\"\njob_types = [\"CREATE_SERVER\"]\n\n[notifiers.log]\nkind = \"log\"\n\n[[routes]]\nnotify = [\"log\"]\n",
            daemon_preamble(&sim.url(), &dir.path().join("state.db"), None)
        ),
    )
    .expect("write config");
    let ids = sim.create("CREATE_SERVER", 1, "RUNNING").await;
    let daemon = Daemon::spawn(&config, None, &dir.path().join("daemon.log"));
    let within = Duration::from_secs(30);
    let addr = daemon.served_addr(within).await;
    crate::support::wait_baselined(&dir.path().join("state.db"), "CREATE_SERVER", within).await;
    // A labelled family shows only once it has a sample: an event that is
    // delivered gives every family one.
    sim.set_status(&ids[0], "SUCCESS").await;
    let text = eventually(within, "every family to have a sample", || async move {
        let text = reqwest::get(format!("http://{addr}/metrics"))
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        (text.contains("jobwatch_deliveries_total")
            && text.contains("jobwatch_scan_duration_seconds_bucket"))
        .then_some(text)
    })
    .await;
    let mut names = BTreeSet::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        if let (Some("#"), Some("TYPE"), Some(name), Some(kind)) =
            (words.next(), words.next(), words.next(), words.next())
        {
            match kind {
                "counter" => {
                    names.insert(format!("{name}_total"));
                }
                "histogram" => {
                    for suffix in ["_bucket", "_sum", "_count"] {
                        names.insert(format!("{name}{suffix}"));
                    }
                }
                _ => {
                    names.insert(name.to_owned());
                }
            }
        }
    }
    assert!(names.contains("jobwatch_polls_total"), "{text}");
    names
}

/// The `jobwatch_…` names in a text.
fn named(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(at) = text[i..].find("jobwatch_") {
        let start = i + at;
        let mut end = start;
        while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_') {
            end += 1;
        }
        out.insert(text[start..end].to_owned());
        i = end;
    }
    out
}

#[tokio::test]
async fn the_dashboard_and_the_rules_name_only_exported_metrics() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib");
    let dashboard = std::fs::read_to_string(root.join("grafana-dashboard.json")).expect("read");
    let parsed: serde_json::Value =
        serde_json::from_str(&dashboard).expect("the dashboard is JSON");
    let exprs: Vec<String> = parsed["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .filter_map(|t| t["expr"].as_str().map(str::to_owned))
        .collect();
    assert!(exprs.len() >= 10, "{exprs:?}");
    let rules = std::fs::read_to_string(root.join("prometheus-rules.yml")).expect("read");
    let exported = exported().await;
    for (file, text) in [
        ("grafana-dashboard.json", exprs.join("\n")),
        ("prometheus-rules.yml", rules),
    ] {
        let names = named(&text);
        assert!(!names.is_empty(), "{file} names no metric");
        let unknown: Vec<&String> = names.iter().filter(|n| !exported.contains(*n)).collect();
        assert!(
            unknown.is_empty(),
            "{file} names metrics jobwatch does not export: {unknown:?}; exported: {exported:?}"
        );
    }
}

#[test]
fn promtool_accepts_the_rules() {
    let Ok(out) = std::process::Command::new("promtool")
        .args(["check", "rules"])
        .arg(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/prometheus-rules.yml"))
        .output()
    else {
        if std::env::var_os("CI_REQUIRE_PROMTOOL").is_some() {
            panic!("CI_REQUIRE_PROMTOOL=1, but promtool (Debian's prometheus) is missing");
        }
        eprintln!("skipped: no promtool (Debian's prometheus package)");
        return;
    };
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(text.contains("SUCCESS: 5 rules found"), "{text}");
}
