//! Replicas on one PostgreSQL state (docs/guarantees.md, "Several
//! replicas"): `jobwatch run` processes with one config and one database
//! share the targets by lease, fence stale writers, share the API budget,
//! and take a SIGKILLed replica's targets over within the lease. A real
//! PostgreSQL started by the tests, the simulator's real lifecycles, the
//! real binary.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use jobwatch::config::StateConfig;
use jobwatch::storage::{OpenMode, Storage};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::crash::{Driver, Truth, caught_up_within, check_truth, delivered};
use crate::postgres::Postgres;
use crate::support::{
    Daemon, HOOK_CONCURRENCY, Recorder, Sim, daemon_config, eventually, list_requests,
};
use jobwatch::sim::SimOptions;

const WITHIN: Duration = Duration::from_secs(60);
/// `cluster.lease`: the shortest allowed, so takeovers are quick.
const LEASE: Duration = Duration::from_secs(3);
/// `poll.interval` of the test configs.
const INTERVAL: Duration = Duration::from_secs(1);
/// Nine targets: one project, nine job types.
const JOB_TYPES: &[&str] = &[
    "CREATE_SERVER",
    "DELETE_SERVER",
    "REJOIN_DOMAIN",
    "CHANGE_SERVER_IMAGE",
    "REINSTALL_OS",
    "MIGRATE_SERVER",
    "SCHEDULED_TASK",
    "CREATE_SERVER_IMAGE",
    "BATCH_INSTALL_APP",
];
/// The cluster's API budget: well under what nine targets polled every
/// second would ask for (540 a minute), so it binds.
const BUDGET: u64 = 240;

/// The config every replica runs: the test daemons' usual one, with the
/// state in PostgreSQL, a short lease, a budget that binds, and a probe
/// server on a port of its own.
fn cluster_config(sim: &Sim, hook: &str, url: &str, budget: u64) -> String {
    let unused = Path::new("unused");
    daemon_config(&sim.url(), hook, unused, JOB_TYPES)
        .replace(&format!("path = {unused:?}"), &format!("url = {url:?}"))
        .replace(
            "max_requests_per_minute = 6000",
            &format!("max_requests_per_minute = {budget}"),
        )
        + &format!(
            "\n[cluster]\nlease = \"{}s\"\n\n[server]\nlisten = \"127.0.0.1:0\"\n",
            LEASE.as_secs()
        )
}

/// One lease as the database has it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Held {
    job_type: String,
    owner: String,
    live: bool,
}

fn leases(pg: &Postgres) -> Vec<Held> {
    pg.psql(
        "postgres",
        "SELECT job_type, coalesce(owner, ''), owner IS NOT NULL AND expires_at > now()
         FROM target_leases ORDER BY job_type",
    )
    .lines()
    .filter_map(|line| {
        let mut parts = line.split('|');
        Some(Held {
            job_type: parts.next()?.to_owned(),
            owner: parts.next()?.to_owned(),
            live: parts.next()? == "t",
        })
    })
    .collect()
}

/// Members seen within the lease.
fn live_members(pg: &Postgres) -> BTreeSet<String> {
    pg.psql(
        "postgres",
        &format!(
            "SELECT id FROM members WHERE seen_at > now() - interval '{} seconds'",
            LEASE.as_secs()
        ),
    )
    .lines()
    .map(str::to_owned)
    .collect()
}

/// Each target's last commit (every cycle writes it), by job type.
fn committed(pg: &Postgres) -> BTreeMap<String, String> {
    pg.psql(
        "postgres",
        "SELECT job_type, updated_at FROM targets ORDER BY job_type",
    )
    .lines()
    .filter_map(|line| {
        let (job_type, at) = line.split_once('|')?;
        Some((job_type.to_owned(), at.to_owned()))
    })
    .collect()
}

fn pending_event_ids(pg: &Postgres) -> BTreeSet<String> {
    pg.psql(
        "postgres",
        "SELECT event_id FROM outbox WHERE state = 'pending'",
    )
    .lines()
    .map(str::to_owned)
    .collect()
}

/// A replica: the daemon, and its member id's prefix (its pid).
struct Replica {
    daemon: Daemon,
    log: PathBuf,
}

impl Replica {
    fn start(config: &Path, log: PathBuf) -> Replica {
        Replica {
            daemon: Daemon::spawn(config, None, &log),
            log,
        }
    }

    fn holds(&self, lease: &Held) -> bool {
        lease.owner.starts_with(&format!("{}-", self.daemon.pid()))
    }
}

/// Waits until every target has exactly one live holder, each a live
/// member, and returns the leases.
async fn settled(pg: &Postgres, members: usize) -> Vec<Held> {
    eventually(WITHIN, "every target held by one live member", || {
        let leases = leases(pg);
        let live = live_members(pg);
        let ok = live.len() == members
            && leases.len() == JOB_TYPES.len()
            && leases.iter().all(|l| l.live && live.contains(&l.owner));
        async move { ok.then_some(leases) }
    })
    .await
}

/// One SIGKILL of one or more replicas, and how long their targets went
/// unpolled.
struct Takeover {
    killed: usize,
    targets: usize,
    /// From the kill to the last of their targets' leases taken by a
    /// survivor.
    retaken: f64,
    /// From the kill to the last of their targets' first commit by a
    /// survivor.
    seconds: f64,
    pending_at_death: BTreeSet<String>,
}

/// Kills `victims` (indexes into `replicas`) at once and waits until each
/// target they held has been committed again by a survivor.
async fn kill_and_measure(pg: &Postgres, replicas: &mut [Replica], victims: &[usize]) -> Takeover {
    let held: Vec<Held> = leases(pg)
        .into_iter()
        .filter(|l| victims.iter().any(|v| replicas[*v].holds(l)))
        .collect();
    let dead: Vec<String> = held.iter().map(|l| l.owner.clone()).collect();
    let killed_at = Instant::now();
    let since = jiff::Timestamp::now().to_string();
    for v in victims {
        replicas[*v].daemon.kill9();
    }
    let pending_at_death = pending_event_ids(pg);
    let mut retaken_at = None;
    eventually(
        WITHIN,
        "the killed replicas' targets to be polled again",
        || {
            let leases = leases(pg);
            let commits = committed(pg);
            let retaken = held.iter().all(|h| {
                leases
                    .iter()
                    .any(|l| l.job_type == h.job_type && l.live && !dead.contains(&l.owner))
            });
            if retaken && retaken_at.is_none() {
                retaken_at = Some(killed_at.elapsed());
            }
            // Times are fixed-width UTC text: text order is time order.
            let polled = held.iter().all(|h| {
                commits
                    .get(&h.job_type)
                    .is_some_and(|at| at.as_str() > since.as_str())
            });
            async move { (retaken && polled).then_some(()) }
        },
    )
    .await;
    let seconds = killed_at.elapsed().as_secs_f64();
    Takeover {
        killed: victims.len(),
        targets: held.len(),
        retaken: retaken_at.map_or(seconds, |d| d.as_secs_f64()),
        seconds,
        pending_at_death,
    }
}

/// `jobwatch_NAME VALUE` from a replica's `/metrics`.
async fn metric(addr: std::net::SocketAddr, name: &str) -> f64 {
    let text = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .expect("scrape")
        .text()
        .await
        .expect("metrics text");
    text.lines()
        .find_map(|line| {
            let (key, value) = line.split_once(' ')?;
            (key == name).then(|| value.parse().ok()).flatten()
        })
        .unwrap_or_else(|| panic!("{name} not in:\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_share_the_targets_survive_sigkills_and_hold_the_budget() {
    let Some(pg) = Postgres::start() else {
        return;
    };
    let started = Instant::now();
    let dir = tempfile::tempdir().expect("tempdir");
    let sim = Sim::start(SimOptions {
        history: 20,
        ..SimOptions::default()
    })
    .await;
    let recorder = Recorder::start().await;
    let mut driver = Driver {
        sim: &sim,
        rng: StdRng::seed_from_u64(0x636c_7573),
        status: BTreeMap::new(),
        open: Vec::new(),
        baseline: BTreeSet::new(),
        job_types: JOB_TYPES,
    };
    driver.create_parent().await;
    driver.create_parent().await;
    driver.baseline = driver.status.keys().cloned().collect();
    let before_baseline = driver.baseline.clone();

    let config = dir.path().join("jobwatch.toml");
    std::fs::write(
        &config,
        cluster_config(
            &sim,
            &format!("{}/hook", recorder.url),
            &pg.url("postgres"),
            BUDGET,
        ),
    )
    .expect("write config");
    let log = |i: usize| dir.path().join(format!("replica-{i}.log"));
    let mut replicas: Vec<Replica> = (0..3).map(|i| Replica::start(&config, log(i))).collect();
    let mut restarts = 3;

    eventually(WITHIN, "every target to be baselined", || {
        // Until a replica made the schema, there is no table to ask.
        let n = pg.try_psql("postgres", "SELECT count(*) FROM targets WHERE baselined");
        async move { (n == Ok(JOB_TYPES.len().to_string())).then_some(()) }
    })
    .await;
    let spread = settled(&pg, 3).await;
    let owners: BTreeSet<&str> = spread.iter().map(|l| l.owner.as_str()).collect();
    assert!(
        owners.len() >= 2,
        "all nine targets on one replica: {spread:?}"
    );
    // One poller per target: the replicas' own counts add up to nine.
    let mut owned = 0.0;
    for replica in &replicas {
        let addr = replica.daemon.served_addr(WITHIN).await;
        owned += eventually(WITHIN, "a replica's lease count", || async move {
            let members = metric(addr, "jobwatch_cluster_members").await;
            (members == 3.0).then_some(metric(addr, "jobwatch_cluster_targets_owned").await)
        })
        .await;
    }
    assert_eq!(
        owned,
        JOB_TYPES.len() as f64,
        "targets owned, summed over replicas"
    );

    // The budget is the cluster's: over a steady window, three replicas
    // together stay within one budget (each alone would take all of it).
    let window = Duration::from_secs(40);
    let before = list_requests(&sim).await;
    let window_start = Instant::now();
    for _ in 0..4 {
        driver.create_parent().await;
        driver.steps(4).await;
        tokio::time::sleep(window / 4).await;
    }
    let requests = list_requests(&sim).await - before;
    let elapsed = window_start.elapsed();
    let per_minute = requests as f64 * 60.0 / elapsed.as_secs_f64();
    // A replica may start a burst of five after a quiet spell.
    let allowed = BUDGET as f64 * elapsed.as_secs_f64() / 60.0 + 3.0 * 5.0;
    assert!(
        (requests as f64) <= allowed,
        "{requests} requests in {elapsed:?} ({per_minute:.0}/min) against a cluster budget of {BUDGET}/min"
    );
    caught_up_within(&recorder, &driver, "catch-up before the kills", WITHIN).await;

    // For the kills, a budget that does not bind (a reload): how soon a
    // target is polled again is then the lease's doing, not the budget's.
    std::fs::write(
        &config,
        cluster_config(
            &sim,
            &format!("{}/hook", recorder.url),
            &pg.url("postgres"),
            6000,
        ),
    )
    .expect("write config");
    for replica in &replicas {
        replica.daemon.signal("HUP");
    }
    for replica in &replicas {
        eventually(WITHIN, "each replica to reload", || {
            let log = replica.daemon.log();
            async move { log.contains("configuration reloaded").then_some(()) }
        })
        .await;
    }

    // SIGKILLs: one at a time at seeded moments, then two at once; each
    // followed by a restart.
    let mut takeovers = Vec::new();
    let mut rng = StdRng::seed_from_u64(0x6b69_6c6c);
    for round in 0..4 {
        driver.create_parent().await;
        driver.steps(rng.random_range(2..8)).await;
        // Victims among the replicas that hold targets (rendezvous may
        // leave one with none).
        let now = leases(&pg);
        let holding: Vec<usize> = (0..3)
            .filter(|i| now.iter().any(|l| replicas[*i].holds(l)))
            .collect();
        let first = holding[rng.random_range(0..holding.len())];
        let victims: Vec<usize> = if round == 2 {
            vec![first, (first + 1 + rng.random_range(0..2)) % 3]
        } else {
            vec![first]
        };
        // Transitions while the victims die and their targets move.
        let takeover = kill_and_measure(&pg, &mut replicas, &victims).await;
        driver.steps(3).await;
        for v in &victims {
            replicas[*v] = Replica::start(&config, log(*v));
            restarts += 1;
        }
        takeovers.push(takeover);
        settled(&pg, 3).await;
        caught_up_within(
            &recorder,
            &driver,
            &format!("catch-up after round {round}"),
            WITHIN,
        )
        .await;
    }

    // The end: everything finishes, every final status arrives.
    driver.create_parent().await;
    while driver.step().await {}
    caught_up_within(&recorder, &driver, "every final status to arrive", WITHIN).await;
    eventually(WITHIN, "an empty outbox", || {
        let empty = pending_event_ids(&pg).is_empty();
        async move { empty.then_some(()) }
    })
    .await;
    for replica in &mut replicas {
        replica.daemon.signal("TERM");
    }
    for replica in &mut replicas {
        let status = replica.daemon.exit_status(WITHIN).await;
        assert_eq!(
            status.code(),
            Some(0),
            "{status:?}: {}",
            replica.log.display()
        );
    }
    // Leaving frees the leases at once.
    assert!(leases_live(&pg).is_empty(), "{:?}", leases(&pg));

    let true_events = sim.events().await;
    let got = delivered(&recorder);
    let Truth {
        copies,
        transitions,
    } = check_truth(&true_events, &got, &driver, &before_baseline);
    let duplicates: usize = copies.values().map(|n| n - 1).sum();
    let kills: usize = takeovers.iter().map(|t| t.killed).sum();
    for (id, n) in &copies {
        let excused = takeovers
            .iter()
            .filter(|t| t.pending_at_death.contains(id))
            .count();
        assert!(
            *n <= 1 + excused,
            "event {id} went out {n} times but was pending at only {excused} kill(s)"
        );
    }
    let bound = kills * HOOK_CONCURRENCY;
    assert!(duplicates <= bound, "{duplicates} duplicates > {bound}");
    let worst = takeovers.iter().map(|t| t.seconds).fold(0.0, f64::max);
    println!(
        "cluster test: 3 replicas, {kills} SIGKILLs in {} rounds ({restarts} starts), {} sub-jobs, \
         {transitions} true transitions",
        takeovers.len(),
        driver.status.len()
    );
    println!(
        "  delivered {} events, {} distinct; lost 0, false 0, duplicates {duplicates} (bound {bound})",
        got.len(),
        copies.len()
    );
    for (i, t) in takeovers.iter().enumerate() {
        println!(
            "  round {}: killed {}; their {} target(s) leased again after {:.1} s, polled after {:.1} s",
            i + 1,
            t.killed,
            t.targets,
            t.retaken,
            t.seconds
        );
    }
    println!(
        "  API: {requests} requests in {:.0} s with three replicas ({per_minute:.0}/min; budget {BUDGET}/min)",
        elapsed.as_secs_f64()
    );
    println!("  took {:.1?}", started.elapsed());
    // Within the lease and an interval, with room for a loaded machine.
    let limit = (LEASE + LEASE / 3 + INTERVAL).as_secs_f64() + 3.0;
    assert!(
        worst <= limit,
        "a takeover took {worst:.1} s (limit {limit:.1} s)"
    );
}

fn leases_live(pg: &Postgres) -> Vec<Held> {
    leases(pg).into_iter().filter(|l| l.live).collect()
}

/// A connection to the test's database, as the daemon opens it.
#[allow(dead_code)]
async fn storage(pg: &Postgres) -> Storage {
    let state = StateConfig::postgres(pg.url("postgres").parse().expect("a URL"));
    Storage::open(&state, OpenMode::ReadWrite)
        .await
        .expect("connects")
}
