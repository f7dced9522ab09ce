//! API economy: what one steady cycle of one target costs (API requests,
//! and this process's CPU), for the incremental strategy beside the full
//! one, measured in the same run against the simulator in a child process.
//!
//! `cargo bench --bench economy` (1k, 10k and 100k sub-jobs of history);
//! `-- --quick` for a smoke run (1k only). Prints a Markdown table.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use jobwatch::cloud::auth::Credentials;
use jobwatch::cloud::{Client, ClientSettings};
use jobwatch::metrics::Metrics;
use jobwatch::retry::Backoff;
use jobwatch::route::Router;
use jobwatch::store::{SharedStore, Store};
use jobwatch::watch::Target;
use jobwatch::watch::diff::DiffSettings;
use jobwatch::watch::poller::{CycleContext, TargetState, cycle};
use jobwatch::watch::strategy::Strategy;

use common::{Proc, cpu, rss_mb, run_daemon, start_sim};

/// Steady cycles measured per row; the figure is their median.
const CYCLES: usize = 9;

/// `jobwatch sim` with `history` sub-jobs of CREATE_SERVER, killed on drop.
struct SimProcess {
    _child: Proc,
    url: String,
}

impl SimProcess {
    fn start(history: u32) -> SimProcess {
        let history = history.to_string();
        let (child, url) =
            start_sim(&["--history", &history, "--history-job-type", "CREATE_SERVER"]);
        SimProcess { _child: child, url }
    }
}

struct Row {
    baseline_requests: u32,
    requests: u32,
    cpu: Duration,
    wall: Duration,
}

async fn measure(url: &str, strategy: Strategy) -> Row {
    jobwatch::install_crypto_provider();
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SharedStore::new(Store::open(dir.path().join("state.db")).expect("state file"));
    let client = Client::new(
        ClientSettings {
            endpoint: url.parse().expect("URL"),
            timeout: Duration::from_secs(30),
            max_requests_per_minute: 1_000_000,
            backoff: Backoff {
                base: Duration::from_millis(10),
                cap: Duration::from_millis(100),
                max_attempts: 4,
                jitter: false,
            },
        },
        Credentials::None,
    )
    .expect("client");
    let ctx = CycleContext {
        client: Arc::new(client),
        store: store.into(),
        router: Router::from_routes(vec![]),
        diff: DiffSettings::default(),
        metrics: Arc::new(Metrics::new()),
        dry_run: false,
        strategy,
        full_scan_every: Duration::from_secs(3600),
    };
    let target = Target::new("demo", "CREATE_SERVER");
    let mut state = TargetState::for_loop(&ctx);
    let baseline = cycle(&ctx, &target, &mut state).await.expect("baseline");
    let mut runs = Vec::new();
    for _ in 0..CYCLES {
        let (c, t) = (cpu(), Instant::now());
        let report = cycle(&ctx, &target, &mut state).await.expect("cycle");
        assert!(report.events.is_empty(), "a steady cycle found events");
        runs.push((report.requests, cpu() - c, t.elapsed()));
    }
    runs.sort_by_key(|r| r.1);
    let (requests, cpu, wall) = runs[CYCLES / 2];
    Row {
        baseline_requests: baseline.requests,
        requests,
        cpu,
        wall,
    }
}

/// `jobwatch run` on one target of `sim`: its memory once the baseline is
/// in and a few steady cycles have passed.
fn daemon_rss(sim: &SimProcess, strategy: &str, tracked: u32) -> (f64, f64) {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state.db");
    let config = dir.path().join("jobwatch.toml");
    std::fs::write(
        &config,
        format!(
            "[api]\nendpoint = \"{}\"\nmax_requests_per_minute = 100000\n[auth]\nmethod = \"none\"\n\
             [state]\npath = {state:?}\n[poll]\ninterval = \"1s\"\nactive_interval = \"1s\"\n\
             strategy = \"{strategy}\"\n[log]\nlevel = \"warn\"\n\
             [[targets]]\nproject_id = \"demo\"\njob_types = [\"CREATE_SERVER\"]\n",
            sim.url
        ),
    )
    .expect("config");
    let daemon = run_daemon(&config);
    let started = Instant::now();
    let tracked_now = || {
        rusqlite::Connection::open_with_flags(&state, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .and_then(|c| c.query_row("SELECT count(*) FROM snapshot", [], |r| r.get::<_, i64>(0)))
            .unwrap_or(0)
    };
    while tracked_now() < i64::from(tracked) {
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "no baseline in 10 minutes"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    std::thread::sleep(Duration::from_secs(10));
    rss_mb(daemon.id())
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let histories: &[u32] = if quick {
        &[1_000]
    } else {
        &[1_000, 10_000, 100_000]
    };
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    println!(
        "| history | strategy | requests, baseline | requests per steady cycle | CPU per steady cycle | wall per steady cycle |"
    );
    println!("|---:|---|---:|---:|---:|---:|");
    let mut largest = None;
    for &history in histories {
        let sim = SimProcess::start(history);
        for strategy in [Strategy::Full, Strategy::Incremental] {
            let row = rt.block_on(measure(&sim.url, strategy));
            println!(
                "| {history} | {} | {} | {} | {:.1} ms | {:.1} ms |",
                match strategy {
                    Strategy::Full => "full",
                    Strategy::Incremental => "incremental",
                },
                row.baseline_requests,
                row.requests,
                row.cpu.as_secs_f64() * 1e3,
                row.wall.as_secs_f64() * 1e3,
            );
        }
        largest = Some((history, sim));
    }
    let Some((history, sim)) = largest else {
        return;
    };
    println!();
    println!("| daemon, {history} tracked | RSS | peak RSS |");
    println!("|---|---:|---:|");
    for strategy in ["full", "incremental"] {
        let (rss, peak) = daemon_rss(&sim, strategy, history);
        println!("| {strategy} | {rss:.0} MB | {peak:.0} MB |");
    }
}
