//! `jobwatch demo`: zero-config. The simulator in-process with a lively
//! scenario, a temporary state file, the log notifier and a local webhook
//! receiver that prints what it gets — and the real daemon watching it.

use std::io::Write;

use anyhow::Context;
use axum::Router;
use axum::routing::post;
use figment::Figment;
use figment::providers::{Format as _, Toml};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::daemon;
use crate::secret::Secret;
use crate::sim::{self, SimOptions};

#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Seed of the simulated scenario.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// New parent jobs per second.
    #[arg(long, default_value_t = 0.3)]
    pub rate: f64,
    /// The console's port on 127.0.0.1 (0, or taken: any free one).
    #[arg(long, default_value_t = 9464)]
    pub console_port: u16,
}

const DEMO_AK: &str = "DEMOACCESSKEY0000001";
const DEMO_SK: &str = "demo-secret-key";

pub async fn run(cli: &super::Cli, args: &DemoArgs) -> anyhow::Result<()> {
    let stop = CancellationToken::new();
    let tracker = TaskTracker::new();

    let sim = sim::start(
        SimOptions {
            listen: "127.0.0.1:0".parse()?,
            seed: args.seed,
            history: 12,
            rate: args.rate,
            fanout: 4,
            step_ms: 1500,
            fail_ratio: 0.3,
            ak: Some(DEMO_AK.into()),
            sk: Some(Secret::new(DEMO_SK)),
            ..SimOptions::default()
        },
        stop.clone(),
    )
    .await
    .context("starting the simulator")?;

    let receiver = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let receiver_addr = receiver.local_addr()?;
    let app = Router::new().route("/hook", post(print_delivery));
    let receiver_stop = stop.clone();
    tracker.spawn(async move {
        let _ = axum::serve(receiver, app)
            .with_graceful_shutdown(async move { receiver_stop.cancelled().await })
            .await;
    });

    // The console on the asked port, or on a free one when that is taken
    // (another jobwatch, say): the demo starts anyway, and says where.
    let console_port = match std::net::TcpListener::bind(("127.0.0.1", args.console_port)) {
        Ok(free) => free.local_addr()?.port(),
        Err(_) => std::net::TcpListener::bind(("127.0.0.1", 0))?
            .local_addr()?
            .port(),
    };
    let dir = tempfile::tempdir().context("creating a temporary state directory")?;
    let toml = format!(
        r#"
[api]
endpoint = "{sim}"
max_requests_per_minute = 600

[auth]
method = "aksk"
ak = "{DEMO_AK}"
sk = "{DEMO_SK}"

[state]
path = "{state}"

[poll]
interval = "3s"
active_interval = "1s"

[log]
level = "info"

[server]
listen = "127.0.0.1:{console_port}"

[[targets]]
project_id = "demo"
job_types = ["CREATE_SERVER", "DELETE_SERVER", "REINSTALL_OS"]

[notifiers.log]
kind = "log"

[notifiers.receiver]
kind = "webhook"
url = "http://{receiver_addr}/hook"
secret = "whsec_ZGVtby13ZWJob29rLXNlY3JldA=="

[[routes]]
notify = ["log"]

[[routes]]
to = ["FAILED", "ABNORMAL", "SUCCESS"]
notify = ["receiver"]
"#,
        sim = sim.url(),
        state = dir.path().join("state.db").display(),
        console_port = console_port,
    );
    let loaded = Config::from_figment(Figment::from(Toml::string(&toml)))
        .context("the demo's own configuration")?;
    cli.init_logging(&loaded.config.log);
    println!(
        "jobwatch demo: simulator on {}, receiver on http://{receiver_addr}/hook, state in {}",
        sim.url(),
        dir.path().display()
    );
    println!(
        "  failures and successes go to the receiver; every transition is logged. Ctrl-C stops."
    );
    println!("  the console: http://127.0.0.1:{console_port}/");
    let _ = std::io::stdout().flush();

    let (_reload_tx, reload_rx) = mpsc::channel(1);
    let result = daemon::run(
        loaded.config,
        None,
        // The demo is run from a terminal, not as a unit.
        daemon::systemd::Systemd::off(),
        async {
            let _ = tokio::signal::ctrl_c().await;
        },
        reload_rx,
    )
    .await;
    stop.cancel();
    tracker.close();
    tracker.wait().await;
    sim.wait().await;
    println!("jobwatch demo: stopped cleanly");
    result
}

async fn print_delivery(body: String) -> &'static str {
    let line = match serde_json::from_str::<serde_json::Value>(&body) {
        Ok(v) => v["events"]
            .as_array()
            .map(|events| {
                events
                    .iter()
                    .map(|e| {
                        format!(
                            "{} {} {} {} → {} {}",
                            e["job_type"].as_str().unwrap_or("?"),
                            e["resource_name"].as_str().unwrap_or("?"),
                            e["kind"].as_str().unwrap_or("?"),
                            e["from"].as_str().unwrap_or("-"),
                            e["to"].as_str().unwrap_or("-"),
                            e["error_code"].as_str().unwrap_or(""),
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("; ")
            })
            .unwrap_or_default(),
        Err(_) => body,
    };
    println!("receiver got: {line}");
    "ok"
}
