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
use jobwatch::storage::{Fence, Lease, OpenMode, Storage};
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

/// Writes [`cluster_config`] to `path`.
fn write_cluster_config(path: &Path, sim: &Sim, hook: &str, pg: &Postgres, budget: u64) {
    std::fs::write(path, cluster_config(sim, hook, &pg.url("postgres"), budget))
        .expect("write config");
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

/// `n` replicas of `config`, each logging to `dir/replica-I.log`.
fn start_replicas(n: usize, config: &Path, dir: &Path) -> Vec<Replica> {
    (0..n)
        .map(|i| Replica::start(config, dir.join(format!("replica-{i}.log"))))
        .collect()
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

/// Waits until every target of [`JOB_TYPES`] has its baseline.
async fn baselined(pg: &Postgres) {
    eventually(WITHIN, "every target to be baselined", || {
        // Until a replica made the schema, there is no table to ask.
        let n = pg.try_psql("postgres", "SELECT count(*) FROM targets WHERE baselined");
        async move { (n == Ok(JOB_TYPES.len().to_string())).then_some(()) }
    })
    .await;
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
    let mut driver = Driver::new(&sim, 0x636c_7573, JOB_TYPES);
    driver.create_parent().await;
    driver.create_parent().await;
    driver.baseline = driver.status.keys().cloned().collect();
    let before_baseline = driver.baseline.clone();

    let config = dir.path().join("jobwatch.toml");
    let hook = format!("{}/hook", recorder.url);
    write_cluster_config(&config, &sim, &hook, &pg, BUDGET);
    let log = |i: usize| dir.path().join(format!("replica-{i}.log"));
    let mut replicas = start_replicas(3, &config, dir.path());
    let mut restarts = 3;

    baselined(&pg).await;
    let spread = settled(&pg, 3).await;
    let owners: BTreeSet<&str> = spread.iter().map(|l| l.owner.as_str()).collect();
    assert!(
        owners.len() >= 2,
        "all nine targets on one replica: {spread:?}"
    );
    // One poller per target: once every replica sees three members and
    // its beat has settled, the replicas' own counts add up to nine (read
    // until they do: the three beats are not at one instant).
    let mut addrs = Vec::new();
    for replica in &replicas {
        addrs.push(replica.daemon.served_addr(WITHIN).await);
    }
    let addrs = &addrs;
    let owned = eventually(
        WITHIN,
        "the targets owned, summed, to be nine",
        || async move {
            let mut owned = 0.0;
            for &addr in addrs {
                if metric(addr, "jobwatch_cluster_members").await != 3.0 {
                    return None;
                }
                owned += metric(addr, "jobwatch_cluster_targets_owned").await;
            }
            (owned == JOB_TYPES.len() as f64).then_some(owned)
        },
    )
    .await;
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
    write_cluster_config(&config, &sim, &hook, &pg, 6000);
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
        duplicates,
    } = check_truth(&true_events, &got, &driver, &before_baseline);
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
async fn storage(pg: &Postgres) -> Storage {
    let state = StateConfig::postgres(pg.url("postgres").parse().expect("a URL"));
    Storage::open(&state, OpenMode::ReadWrite)
        .await
        .expect("connects")
}

/// One cycle of `target` that saw sub-job `id` in `status`, committed
/// under `fence`, routed to notifier `hook`.
async fn commit_one(
    store: &Storage,
    target: &jobwatch::watch::Target,
    id: &str,
    status: &str,
    fence: Fence,
) -> Result<jobwatch::storage::CycleCommit, jobwatch::storage::StoreError> {
    let before = store.load_snapshot(target).await.expect("loads");
    let job: jobwatch::cloud::model::SubJob =
        serde_json::from_value(serde_json::json!({"id": id, "status": status, "job_id": "j1"}))
            .expect("a sub-job");
    let settings = jobwatch::watch::DiffSettings {
        notify_existing: true,
        stuck_after: Duration::from_secs(3600),
    };
    let outcome = jobwatch::watch::diff(
        target,
        &before,
        &jobwatch::watch::Scan::complete(vec![job]),
        jiff::Timestamp::now(),
        &settings,
    );
    let routed = (0..outcome.events.len())
        .map(|i| {
            (
                i,
                jobwatch::route::Routed {
                    notifier: "hook".to_owned(),
                    route: 0,
                    group: None,
                    held: None,
                },
            )
        })
        .collect();
    store
        .commit_cycle(jobwatch::storage::CycleWrite {
            target: target.clone(),
            outcome,
            routed,
            now: jiff::Timestamp::now(),
            fence,
        })
        .await
}

/// Fencing: a holder whose lease ran out and was taken over cannot
/// commit with its old grant, nor can a process outside the cluster while
/// a member holds the lease; the new holder can. Checked in the commit's
/// own transaction, so nothing of the refused cycle is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_lease_cannot_commit_and_its_successor_can() {
    let Some(pg) = Postgres::start() else {
        return;
    };
    let store = storage(&pg).await;
    let cluster = store.cluster().expect("a PostgreSQL state is a cluster's");
    let target = jobwatch::watch::Target::new("p1", "CREATE_SERVER");
    let short = Duration::from_millis(300);
    let fence = |member: &str, generation| {
        Fence::Lease(Lease {
            member: member.into(),
            generation,
        })
    };

    let a = cluster.acquire("a", &target, short).await.expect("acquire");
    assert_eq!(a, Some(1));
    assert_eq!(
        cluster.acquire("a", &target, short).await.expect("renew"),
        Some(1),
        "a renewal keeps the generation"
    );
    assert_eq!(
        cluster.acquire("b", &target, short).await.expect("try"),
        None
    );
    commit_one(&store, &target, "s1", "RUNNING", fence("a", 1))
        .await
        .expect("the holder commits");

    // a pauses past its lease; b takes it over as soon as it runs out.
    let b = eventually(WITHIN, "a's lease to run out for b", || {
        let cluster = cluster.clone();
        let target = target.clone();
        async move { cluster.acquire("b", &target, LEASE).await.expect("acquire") }
    })
    .await;
    assert_eq!(b, 2, "a new holder, a new generation");

    let stale = commit_one(&store, &target, "s1", "FAILED", fence("a", 1)).await;
    assert!(
        matches!(stale, Err(jobwatch::storage::StoreError::Fenced { .. })),
        "{stale:?}"
    );
    let outside = commit_one(&store, &target, "s1", "FAILED", Fence::Sole).await;
    assert!(
        matches!(outside, Err(jobwatch::storage::StoreError::Fenced { .. })),
        "{outside:?}"
    );
    // Nothing of the refused cycles: the stored status is a's RUNNING,
    // and the outbox holds the one appeared event.
    let snapshot = store.load_snapshot(&target).await.expect("loads");
    assert_eq!(
        snapshot.jobs["s1"].status.as_ref().map(|s| s.as_str()),
        Some("RUNNING")
    );
    assert_eq!(store.outbox_counts().await.expect("counts").pending, 1);

    let fresh = commit_one(&store, &target, "s1", "FAILED", fence("b", 2))
        .await
        .expect("the new holder commits");
    assert_eq!(fresh.inserted, 1, "the FAILED transition, once");
    assert_eq!(
        cluster.acquire("a", &target, short).await.expect("try"),
        None,
        "b's live lease is b's"
    );
    let leases = cluster.leases().await.expect("leases");
    assert_eq!(leases.len(), 1);
    assert_eq!(leases[0].owner.as_deref(), Some("b"));
    assert_eq!(leases[0].generation, 2);
}

/// `GET /readyz` of a replica: the status and the body.
async fn readyz(addr: std::net::SocketAddr) -> (u16, String) {
    match reqwest::get(format!("http://{addr}/readyz")).await {
        Ok(r) => (r.status().as_u16(), r.text().await.unwrap_or_default()),
        Err(e) => (0, e.to_string()),
    }
}

/// The database unreachable: the replica keeps running and retrying,
/// `/readyz` says not ready, and what happened meanwhile arrives once the
/// database is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_waits_out_its_database_and_loses_nothing() {
    let Some(pg) = Postgres::start() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let sim = Sim::start(SimOptions::default()).await;
    let recorder = Recorder::start().await;
    let mut driver = Driver::new(&sim, 0x6f75_7461, &["CREATE_SERVER", "DELETE_SERVER"]);
    let config = dir.path().join("jobwatch.toml");
    write_cluster_config(&config, &sim, &format!("{}/hook", recorder.url), &pg, 6000);
    let mut replica = Replica::start(&config, dir.path().join("replica.log"));
    let addr = replica.daemon.served_addr(WITHIN).await;
    baselined(&pg).await;
    settled(&pg, 1).await;
    eventually(WITHIN, "ready", || async move {
        (readyz(addr).await.0 == 200).then_some(())
    })
    .await;

    pg.stop();
    driver.create_parent().await;
    driver.create_parent().await;
    driver.steps(4).await;
    let body = eventually(WITHIN, "/readyz to say not ready", || async move {
        let (status, body) = readyz(addr).await;
        (status == 503).then_some(body)
    })
    .await;
    assert!(body.contains("state"), "{body}");
    // Longer than the lease: the replica's leases run out meanwhile.
    tokio::time::sleep(LEASE + Duration::from_secs(1)).await;
    assert!(replica.daemon.exited().is_none(), "the replica gave up");
    driver.steps(3).await;

    pg.restart();
    eventually(WITHIN, "ready again", || async move {
        (readyz(addr).await.0 == 200).then_some(())
    })
    .await;
    caught_up_within(
        &recorder,
        &driver,
        "what happened while the database was down",
        WITHIN,
    )
    .await;
    let log = replica.daemon.log();
    assert!(
        log.contains("cannot reach the state database") && log.contains("answers again"),
        "{log}"
    );
    let true_events = sim.events().await;
    check_truth(
        &true_events,
        &delivered(&recorder),
        &driver,
        &BTreeSet::new(),
    );
}

/// `state migrate`: a daemon on SQLite leaves pending deliveries and a dead
/// letter; its state moves to PostgreSQL, and two replicas deliver the rest
/// without a new baseline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_migrate_moves_a_file_to_a_cluster_that_delivers_the_rest() {
    let Some(pg) = Postgres::start() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let sim = Sim::start(SimOptions {
        history: 30,
        ..SimOptions::default()
    })
    .await;
    let recorder = Recorder::start().await;
    let refuses = crate::support::Receiver::start(
        (0..50)
            .map(|_| (400, vec![], "no such hook".to_owned()))
            .collect(),
    )
    .await;
    let mut driver = Driver::new(&sim, 0x6d69_6772, &["CREATE_SERVER"]);
    driver.create_parent().await;
    driver.baseline = driver.status.keys().cloned().collect();
    let before_baseline = driver.baseline.clone();

    // The file's daemon: `hook` at a port nobody listens on (every attempt
    // fails and is retried), `refused` answering 400 (dead letters).
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr").port()
    };
    let state = dir.path().join("state.db");
    let with_hook = |hook: &str| {
        daemon_config(&sim.url(), hook, &state, &["CREATE_SERVER"])
            + &format!(
                "\n[notifiers.refused]\nkind = \"webhook\"\nurl = \"{}/hook\"\n\n\
                 [[routes]]\nnotify = [\"refused\"]\nto = [\"FAILED\"]\n",
                refuses.url
            )
    };
    let file_config = dir.path().join("file.toml");
    std::fs::write(
        &file_config,
        with_hook(&format!("http://127.0.0.1:{closed}/hook")),
    )
    .expect("write config");
    let mut daemon = Daemon::spawn(&file_config, None, &dir.path().join("file.log"));
    crate::support::wait_baselined(&state, "CREATE_SERVER", WITHIN).await;
    driver.create_parent().await;
    driver.create_parent().await;
    // Until a FAILED has happened (a dead letter comes of it).
    while driver.step().await {}
    let owed = driver.owed().count() as u64;
    let (pending, dead) = eventually(WITHIN, "pending rows and a dead letter", || {
        let state = state.clone();
        async move {
            let (pending, dead) = crate::support::outbox(&state).await;
            (pending >= owed && dead >= 1).then_some((pending, dead))
        }
    })
    .await;
    daemon.signal("TERM");
    assert_eq!(daemon.exit_status(WITHIN).await.code(), Some(0));
    let (pending, dead) = {
        // A row still pending then may have died since (`refused`), so
        // only the two together, and the dead, can only have grown.
        let after = crate::support::outbox(&state).await;
        assert!(
            after.0 + after.1 >= pending + dead && after.1 >= dead,
            "{after:?} after {:?}",
            (pending, dead)
        );
        after
    };
    let dead_ids = pg_or_file_dead_ids(&file_config).await;
    // A silence (that holds nothing here) and the history move too.
    let added = crate::support::jobwatch(
        &file_config,
        &[
            "silence",
            "add",
            "--match",
            "target=nobody",
            "--for",
            "1h",
            "--comment",
            "kept across the move",
        ],
    )
    .await;
    assert!(
        added.status.success(),
        "{}",
        String::from_utf8_lossy(&added.stderr)
    );
    let history = |config: std::path::PathBuf| async move {
        let out = crate::support::jobwatch(
            &config,
            &["history", "--format", "json", "--limit", "100000"],
        )
        .await;
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<Vec<serde_json::Value>>(&out.stdout).expect("history is JSON")
    };
    let history_before = history(file_config.clone()).await;
    assert!(!history_before.is_empty());

    let url = pg.url("postgres");
    let out = crate::support::jobwatch(&file_config, &["state", "migrate", "--to", &url]).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(&format!("{pending} pending, {dead} dead")),
        "{stdout}"
    );
    let again = crate::support::jobwatch(&file_config, &["state", "migrate", "--to", &url]).await;
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("already holds a state"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );

    // The cluster: same notifiers, `hook` now the recorder, state in the
    // database.
    let cluster_toml = with_hook(&format!("{}/hook", recorder.url))
        .replace(&format!("path = {state:?}"), &format!("url = {url:?}"))
        + &format!("\n[cluster]\nlease = \"{}s\"\n", LEASE.as_secs());
    let config = dir.path().join("cluster.toml");
    std::fs::write(&config, cluster_toml).expect("write config");
    assert_eq!(
        pg_or_file_dead_ids(&config).await,
        dead_ids,
        "dead letters keep their ids"
    );
    assert!(stdout.contains("1 silence(s)"), "{stdout}");
    assert_eq!(
        history(config.clone()).await,
        history_before,
        "the history moved whole"
    );
    let listed = crate::support::jobwatch(&config, &["silence", "list", "--format", "json"]).await;
    let listed: serde_json::Value = serde_json::from_slice(&listed.stdout).expect("JSON");
    assert_eq!(listed[0]["id"], 1, "{listed}");
    assert_eq!(listed[0]["comment"], "kept across the move");
    let replicas: Vec<Replica> = start_replicas(2, &config, dir.path());
    caught_up_within(&recorder, &driver, "the migrated deliveries", WITHIN).await;
    // And the cluster goes on from the migrated snapshot.
    driver.create_parent().await;
    while driver.step().await {}
    caught_up_within(&recorder, &driver, "what happened after the move", WITHIN).await;
    eventually(WITHIN, "only the dead letters left", || {
        let n = pg.psql(
            "postgres",
            "SELECT count(*) FROM outbox WHERE state = 'pending'",
        );
        async move { (n == "0").then_some(()) }
    })
    .await;
    // No new baseline: nothing that existed before is news, and every
    // event is true (check_truth).
    let true_events = sim.events().await;
    check_truth(
        &true_events,
        &delivered(&recorder),
        &driver,
        &before_baseline,
    );
    let appeared_baseline = delivered(&recorder)
        .iter()
        .filter(|(_, e)| {
            e["kind"] == "appeared"
                && before_baseline.contains(e["sub_job_id"].as_str().unwrap_or_default())
        })
        .count();
    assert_eq!(appeared_baseline, 0);
    for replica in &replicas {
        let log = std::fs::read_to_string(&replica.log).unwrap_or_default();
        assert!(
            !log.contains("why=\"baseline\""),
            "a replica scanned a new baseline:\n{log}"
        );
    }
    // Wait for the leases: a first beat may still be under way.
    eventually(WITHIN, "the target's lease", || {
        let held = leases_live(&pg).len();
        async move { (held == 1).then_some(()) }
    })
    .await;

    // `once` beside the cluster writes nothing for a target a replica
    // holds: its commit is fenced.
    let once = crate::support::jobwatch(&config, &["once"]).await;
    let said =
        String::from_utf8_lossy(&once.stderr).into_owned() + &String::from_utf8_lossy(&once.stdout);
    assert!(!once.status.success(), "{said}");
    assert!(
        said.contains("the target's lease is another replica's"),
        "{said}"
    );

    // `state cluster` names both replicas and who polls the target.
    let out = crate::support::jobwatch(&config, &["state", "cluster"]).await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(text.matches("| live").count(), 2, "{text}");
    assert!(text.contains("demo/CREATE_SERVER"), "{text}");
    assert!(!text.contains("nobody"), "{text}");
}

/// The ids `jobwatch state dead --format json` lists under `config`.
async fn pg_or_file_dead_ids(config: &Path) -> Vec<i64> {
    let out = crate::support::jobwatch(config, &["state", "dead", "--format", "json"]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    rows.as_array()
        .expect("an array")
        .iter()
        .map(|r| r["id"].as_i64().expect("an id"))
        .collect()
}

/// A receiver's 429 seen by one replica holds every replica: after the
/// others' next beat nobody sends until `Retry-After` has passed (and the
/// notifier's rate is the cluster's: each replica sends its part of it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receivers_throttle_seen_by_one_replica_holds_them_all() {
    let Some(pg) = Postgres::start() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let sim = Sim::start(SimOptions::default()).await;
    let pause = Duration::from_secs(8);
    let mut receiver = crate::support::Receiver::start(vec![(
        429,
        vec![("retry-after", pause.as_secs().to_string())],
        "slow down".to_owned(),
    )])
    .await;
    let config = dir.path().join("jobwatch.toml");
    // 120 a minute for the cluster: each replica sends one a second, so
    // the twelve take a while and one that did not obey the pause would
    // send inside it.
    std::fs::write(
        &config,
        cluster_config(
            &sim,
            &format!("{}/hook", receiver.url),
            &pg.url("postgres"),
            6000,
        )
        .replace(
            "max_concurrency = ",
            "rate_limit = \"120/min\"\nmax_concurrency = ",
        ),
    )
    .expect("write config");
    let _replicas: Vec<Replica> = start_replicas(2, &config, dir.path());
    baselined(&pg).await;
    settled(&pg, 2).await;
    // Twelve events at once, on targets of both replicas.
    for job_type in JOB_TYPES.iter().take(6) {
        sim.create_waiting(job_type, 2).await;
    }
    let first = receiver.next(WITHIN).await;
    let throttled_at = first.at;
    let mut arrivals = Vec::new();
    while arrivals.len() < 11 {
        arrivals.push(receiver.next(WITHIN).await.at);
    }
    // The throttled replica publishes the pause at once; the other reads
    // it at its next beat, and may send once before.
    let told = LEASE / 3 + Duration::from_millis(500);
    let inside: Vec<Duration> = arrivals
        .iter()
        .map(|at| at.duration_since(throttled_at))
        .filter(|d| *d > told && *d < pause - Duration::from_millis(200))
        .collect();
    assert!(
        inside.is_empty(),
        "requests {inside:?} after the 429 (Retry-After: {pause:?}, told within {told:?})"
    );
}

/// SIGTERM: a replica gives its targets up as soon as it stops polling,
/// not when its last delivery is done, so the others poll them while it
/// drains.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_replica_hands_its_targets_over_while_its_deliveries_finish() {
    let Some(pg) = Postgres::start() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let sim = Sim::start(SimOptions::default()).await;
    let recorder = Recorder::start().await;
    let config = dir.path().join("jobwatch.toml");
    write_cluster_config(&config, &sim, &format!("{}/hook", recorder.url), &pg, 6000);
    let mut replicas: Vec<Replica> = start_replicas(2, &config, dir.path());
    baselined(&pg).await;
    let leases = settled(&pg, 2).await;
    let stopping = (0..2)
        .find(|i| leases.iter().any(|l| replicas[*i].holds(l)))
        .expect("a replica holds targets");
    // Slow deliveries on every target: both replicas have some under way,
    // longer than the 5 s shutdown grace, so the stopping one drains for it.
    recorder.set_delay(Duration::from_secs(8));
    for job_type in JOB_TYPES {
        sim.create_waiting(job_type, 2).await;
    }
    eventually(WITHIN, "deliveries under way", || {
        let n = recorder.in_flight();
        async move { (n >= 2 * HOOK_CONCURRENCY - 1).then_some(()) }
    })
    .await;
    replicas[stopping].daemon.signal("TERM");
    eventually(WITHIN, "the other replica to hold every target", || {
        let leases = leases_live(&pg);
        let all =
            leases.len() == JOB_TYPES.len() && leases.iter().all(|l| !replicas[stopping].holds(l));
        async move { all.then_some(()) }
    })
    .await;
    assert!(
        replicas[stopping].daemon.exited().is_none(),
        "the targets moved only once the stopping replica had exited"
    );
    let status = replicas[stopping].daemon.exit_status(WITHIN).await;
    assert_eq!(status.code(), Some(0), "{status:?}");
}
