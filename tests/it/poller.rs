//! The poller's real cycle (`watch::poller::cycle`: scan → diff → route →
//! one transaction) against the simulator and a real SQLite file: `stuck`
//! and `vanished` across restarts, failed and drifting scans.
//!
//! A "restart" drops the [`Store`] (the only handle on the file) and opens
//! the same file again, as the daemon does when it starts.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use jobwatch::cloud::auth::Credentials;
use jobwatch::cloud::model::{JobType, Status};
use jobwatch::cloud::{Client, Filter};
use jobwatch::config::{GroupBy, Route};
use jobwatch::metrics::Metrics;
use jobwatch::route::Router;
use jobwatch::sim::SimOptions;
use jobwatch::store::{OutboxRow, SharedStore, Store};
use jobwatch::watch::diff::{DiffSettings, TargetSnapshot};
use jobwatch::watch::poller::{CycleContext, CycleError, CycleReport, TargetState, cycle};
use jobwatch::watch::strategy::Strategy;
use jobwatch::watch::{EventKind, Target};
use reqwest::Method;
use serde_json::json;

use crate::support::Sim;

const CS: &str = "CREATE_SERVER";

fn target() -> Target {
    Target::new("demo", CS)
}

/// Every kind, `vanished` included, to one notifier `hook`: the outbox then
/// shows every event a cycle committed.
fn route_everything() -> Router {
    Router::from_routes(vec![Route {
        targets: vec![],
        projects: vec![],
        error_codes: vec![],
        job_types: vec![],
        to: vec![],
        kinds: EventKind::ALL.to_vec(),
        notify: vec!["hook".into()],
        group_window: None,
        group_by: GroupBy::Route,
        mute_time_intervals: vec![],
    }])
}

/// A poller's view of one state file; dropping it is the daemon stopping.
struct Poller {
    ctx: CycleContext,
    /// What the poll loop keeps between cycles.
    state: tokio::sync::Mutex<TargetState>,
    /// The same state as `ctx.store`, for looking at it directly.
    store: SharedStore,
}

impl Poller {
    /// Opens (or reopens, after a "restart") the state file at `path`.
    fn open(client: &Arc<Client>, path: &Path, diff: DiffSettings) -> Poller {
        Poller::open_routed(client, path, diff, route_everything())
    }

    fn open_routed(
        client: &Arc<Client>,
        path: &Path,
        diff: DiffSettings,
        router: Router,
    ) -> Poller {
        let store = SharedStore::new(Store::open(path).expect("open the state file"));
        // These pins are about full scans: every cycle reads the whole list.
        let ctx = CycleContext {
            client: Arc::clone(client),
            store: store.clone().into(),
            router,
            diff,
            metrics: Arc::new(Metrics::new()),
            dry_run: false,
            strategy: Strategy::Full,
            full_scan_every: Duration::from_secs(600),
        };
        Poller {
            state: tokio::sync::Mutex::new(TargetState::for_loop(&ctx)),
            store: store.clone(),
            ctx,
        }
    }

    /// One cycle that must succeed.
    async fn cycle(&self) -> CycleReport {
        match cycle(&self.ctx, &target(), &mut *self.state.lock().await).await {
            Ok(report) => report,
            Err(e) => panic!("cycle failed: {e}"),
        }
    }

    /// One cycle that must fail on the API; returns what it committed.
    async fn failing_cycle(&self) -> Option<CycleReport> {
        match cycle(&self.ctx, &target(), &mut *self.state.lock().await).await {
            Ok(report) => panic!("the cycle should have failed; it saw {report:?}"),
            Err(CycleError::Api { partial, .. }) => *partial,
            Err(e) => panic!("expected an API failure, got {e}"),
        }
    }

    async fn snapshot(&self) -> TargetSnapshot {
        self.store
            .call(|s| s.load_snapshot(&target()))
            .await
            .expect("load snapshot")
    }

    /// Every outbox row, pending or not.
    async fn outbox(&self) -> Vec<OutboxRow> {
        let horizon = jiff::Timestamp::now() + jiff::SignedDuration::from_hours(24 * 365);
        self.store
            .call(move |s| s.due(horizon, 100_000))
            .await
            .expect("outbox rows")
    }
}

fn client(sim: &Sim) -> Arc<Client> {
    Arc::new(sim.client(Credentials::None))
}

fn state_file(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("state.db")
}

/// `(kind, sub_job_id)` of each event, for readable assertions.
fn kinds(report: &CycleReport) -> Vec<(EventKind, String)> {
    report
        .events
        .iter()
        .map(|e| (e.kind, e.sub_job_id.clone()))
        .collect()
}

/// Queues faults so that the next list request is answered normally and
/// every attempt at the one after it fails with a 500: a scan dies on its
/// second page. (A 0 ms `delay` is the simulator's pass-through fault.)
async fn fail_second_page(sim: &Sim) {
    sim.fault(json!({"fault":"delay","ms":0,"times":1})).await;
    // The test client makes 4 attempts per request.
    sim.fault(json!({"fault":"status","status":500,"times":4}))
        .await;
}

async fn delete_job(sim: &Sim, id: &str) {
    sim.control(Method::DELETE, &format!("/sim/jobs/{id}"), json!(null))
        .await;
}

/// Ids on one page of the list, as the API orders them (newest first).
async fn page_ids(client: &Client, offset: u64) -> Vec<String> {
    client
        .list_page("demo", &JobType::from(CS), &Filter::default(), offset, 100)
        .await
        .expect("list a page")
        .items
        .into_iter()
        .map(|j| j.id)
        .collect()
}

#[tokio::test]
async fn stuck_fires_once_per_status_and_not_again_after_a_restart() {
    // Pins docs/events.md `stuck`: "once per status", and the diff module's promise
    // that `since`/`stuck_reported` are persisted so a restart re-fires
    // nothing. A zero `stuck_after` makes every active sub-job stuck at its
    // second sighting (the first only starts its clock), with no waiting.
    let sim = Sim::start(SimOptions::default()).await;
    let ids = sim.create_waiting(CS, 1).await;
    let dir = tempfile::tempdir().unwrap();
    let client = client(&sim);
    let settings = DiffSettings {
        notify_existing: false,
        stuck_after: Duration::ZERO,
    };

    let poller = Poller::open(&client, &state_file(&dir), settings.clone());
    assert_eq!(kinds(&poller.cycle().await), [], "the baseline is silent");
    let second = poller.cycle().await;
    assert_eq!(kinds(&second), [(EventKind::Stuck, ids[0].clone())]);
    assert_eq!(second.events[0].to, Some(Status::Waiting));
    assert_eq!(kinds(&poller.cycle().await), [], "stuck fires once");
    drop(poller);

    let poller = Poller::open(&client, &state_file(&dir), settings);
    for n in 1..=2 {
        let report = poller.cycle().await;
        assert_eq!(kinds(&report), [], "cycle {n} after the restart");
    }
    let stuck: Vec<_> = poller
        .outbox()
        .await
        .into_iter()
        .filter(|r| r.kind == "stuck")
        .collect();
    assert_eq!(stuck.len(), 1, "{stuck:?}");
}

#[tokio::test]
async fn a_deleted_sub_job_vanishes_at_the_second_complete_scan_across_a_restart() {
    // Pins docs/events.md `vanished`: "absent from two consecutive complete scans",
    // with the count of missing scans surviving a restart, and a simulator
    // `DELETE /sim/jobs/{id}` ending in exactly one `vanished`.
    let sim = Sim::start(SimOptions::default()).await;
    let ids = sim.create_waiting(CS, 2).await;
    let (gone, kept) = (ids[0].clone(), ids[1].clone());
    let dir = tempfile::tempdir().unwrap();
    let client = client(&sim);

    let poller = Poller::open(&client, &state_file(&dir), DiffSettings::default());
    poller.cycle().await;
    let listed = client
        .list_page("demo", &JobType::from(CS), &Filter::default(), 0, 100)
        .await
        .unwrap();
    let as_listed = listed.items.into_iter().find(|j| j.id == gone).unwrap();
    delete_job(&sim, &gone).await;
    let first_miss = poller.cycle().await;
    assert!(first_miss.complete);
    assert_eq!(kinds(&first_miss), [], "one missing scan is not enough");
    assert_eq!(poller.snapshot().await.jobs[&gone].missing_scans, 1);
    drop(poller);

    let poller = Poller::open(&client, &state_file(&dir), DiffSettings::default());
    let second_miss = poller.cycle().await;
    assert_eq!(kinds(&second_miss), [(EventKind::Vanished, gone.clone())]);
    assert_eq!(second_miss.events[0].from, Some(Status::Waiting));
    assert_eq!(second_miss.events[0].to, None);
    // The in-memory snapshot keeps no details; they come from the store.
    let event = &second_miss.events[0];
    assert_eq!(
        (event.job_id.as_ref(), event.resource_name.as_deref()),
        (as_listed.job_id.as_ref(), as_listed.resource_name())
    );
    assert!(event.resource_name.is_some() && event.begin_time.is_some());
    let snapshot = poller.snapshot().await;
    assert!(
        !snapshot.jobs.contains_key(&gone),
        "a vanished job is forgotten"
    );
    assert!(snapshot.jobs.contains_key(&kept));
    assert_eq!(kinds(&poller.cycle().await), [], "vanished fires once");
    let vanished: Vec<_> = poller
        .outbox()
        .await
        .into_iter()
        .filter(|r| r.kind == "vanished")
        .map(|r| r.sub_job_id)
        .collect();
    assert_eq!(vanished, [gone]);
}

#[tokio::test]
async fn a_scan_that_failed_mid_way_never_counts_as_a_missing_scan() {
    // Pins docs/guarantees.md "a scan that cannot complete never produces `vanished`"
    // and the stronger rule under it: a failed scan is not one of the "two
    // consecutive complete scans" either. Sequence: baseline, delete, a
    // scan that dies on page 2, then two complete scans; `vanished` comes
    // at the second complete one, not before.
    let sim = Sim::start(SimOptions {
        history: 150,
        ..SimOptions::default()
    })
    .await;
    let gone = sim.create_waiting(CS, 1).await.remove(0);
    let dir = tempfile::tempdir().unwrap();
    let client = client(&sim);
    let poller = Poller::open(&client, &state_file(&dir), DiffSettings::default());
    assert_eq!(poller.cycle().await.tracked, 151);
    delete_job(&sim, &gone).await;

    fail_second_page(&sim).await;
    let partial = poller.failing_cycle().await.expect("page 1 was committed");
    assert!(!partial.complete);
    assert_eq!(kinds(&partial), []);
    let snapshot = poller.snapshot().await;
    assert_eq!(
        snapshot.jobs[&gone].missing_scans, 0,
        "the failed scan counted"
    );
    assert!(snapshot.jobs.values().all(|t| t.missing_scans == 0));

    let first_complete = poller.cycle().await;
    assert!(first_complete.complete);
    assert_eq!(
        kinds(&first_complete),
        [],
        "the failed scan was counted as the first miss"
    );
    let second_complete = poller.cycle().await;
    assert_eq!(kinds(&second_complete), [(EventKind::Vanished, gone)]);
}

#[tokio::test]
async fn a_cycle_failing_on_page_two_of_three_commits_what_it_saw_and_nothing_more() {
    // Pins docs/guarantees.md "a scan that cannot complete never produces `vanished`
    // and never loses what it did see": the real change on page 1 is
    // committed with its event; nothing on pages 2–3 is counted missing,
    // nothing is invented.
    let sim = Sim::start(SimOptions {
        history: 250,
        ..SimOptions::default()
    })
    .await;
    let moving = sim.create_waiting(CS, 1).await.remove(0);
    let dir = tempfile::tempdir().unwrap();
    let client = client(&sim);
    let poller = Poller::open(&client, &state_file(&dir), DiffSettings::default());
    let baseline = poller.cycle().await;
    assert_eq!((baseline.tracked, baseline.requests), (251, 3));

    // On page 1 (the newest): a real change. On page 3: a deletion the
    // failed scan cannot see.
    assert!(page_ids(&client, 0).await.contains(&moving));
    let old = page_ids(&client, 200).await.pop().expect("a page-3 item");
    sim.set_status(&moving, "RUNNING").await;
    delete_job(&sim, &old).await;

    fail_second_page(&sim).await;
    let partial = poller.failing_cycle().await.expect("page 1 was committed");
    assert!(!partial.complete);
    assert_eq!(kinds(&partial), [(EventKind::Changed, moving.clone())]);

    let snapshot = poller.snapshot().await;
    assert!(snapshot.baselined);
    assert_eq!(snapshot.jobs.len(), 251, "nothing was dropped");
    assert_eq!(snapshot.jobs[&moving].status(), Some(&Status::Running));
    assert!(snapshot.jobs.contains_key(&old));
    let counted: Vec<_> = snapshot
        .jobs
        .iter()
        .filter(|(_, t)| t.missing_scans > 0)
        .map(|(id, _)| id.clone())
        .collect();
    assert_eq!(counted, Vec::<String>::new(), "unseen is not missing");
    let outbox: Vec<_> = poller
        .outbox()
        .await
        .into_iter()
        .map(|r| (r.kind, r.sub_job_id))
        .collect();
    assert_eq!(outbox, [("changed".to_owned(), moving)]);
}

#[tokio::test]
async fn a_first_scan_failing_on_page_two_tracks_page_one_without_a_baseline() {
    // Pins "never loses what it did see" before the baseline: the items of
    // page 1 are tracked, nothing else, no event, and the target is not
    // baselined (so the rest is not announced as new later).
    let sim = Sim::start(SimOptions {
        history: 250,
        ..SimOptions::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let client = client(&sim);
    let first_page = page_ids(&client, 0).await;
    assert_eq!(first_page.len(), 100);

    let poller = Poller::open(&client, &state_file(&dir), DiffSettings::default());
    fail_second_page(&sim).await;
    let partial = poller.failing_cycle().await.expect("page 1 was committed");
    assert_eq!(kinds(&partial), []);
    let snapshot = poller.snapshot().await;
    assert!(!snapshot.baselined, "an incomplete scan set the baseline");
    let mut tracked: Vec<_> = snapshot.jobs.keys().cloned().collect();
    let mut expected = first_page;
    tracked.sort();
    expected.sort();
    assert_eq!(tracked, expected);
    assert!(poller.outbox().await.is_empty());

    // The next, complete scan baselines silently: pages 2–3 are history.
    let baseline = poller.cycle().await;
    assert_eq!((kinds(&baseline), baseline.tracked), (vec![], 250));
    assert!(poller.snapshot().await.baselined);
}

#[tokio::test]
async fn a_list_growing_under_every_page_still_scans_complete_in_one_walk() {
    // A busy target: a `shift` after every list request adds a sub-job at
    // the top. The walk does not start over; it reads the newest page again
    // at the end, and accounts for every id.
    let sim = Sim::start(SimOptions {
        history: 250,
        ..SimOptions::default()
    })
    .await;
    let client = client(&sim);
    let before: Vec<String> = page_ids(&client, 0).await;
    sim.fault(json!({"fault":"shift","times":1000})).await;
    let scan = client
        .scan("demo", &JobType::from(CS), &Filter::default(), |_| {})
        .await
        .expect("a drifting scan is not an error");
    assert!(scan.complete, "{:?}", scan.incomplete_reason);
    // Three pages and the newest one again, whatever the drift.
    assert_eq!(scan.requests, 4);
    let seen: std::collections::HashSet<&str> = scan.items.iter().map(|j| j.id.as_str()).collect();
    assert_eq!(seen.len(), scan.items.len(), "duplicates");
    assert_eq!(seen.len() as u64, scan.count);
    assert!(before.iter().all(|id| seen.contains(id.as_str())));
}

#[tokio::test]
async fn a_scan_during_deletions_covers_the_list_but_is_never_used_for_vanished() {
    // Pins "a scan that cannot complete never produces `vanished` and
    // never loses what it did see": a `drop` after every list request
    // deletes the newest sub-job, so `count` falls between pages. The walk
    // steps back and misses nothing, but absences prove nothing.
    let sim = Sim::start(SimOptions {
        history: 250,
        ..SimOptions::default()
    })
    .await;
    let client = client(&sim);
    let dir = tempfile::tempdir().unwrap();
    let poller = Poller::open(&client, &state_file(&dir), DiffSettings::default());
    let baseline = poller.cycle().await;
    assert!(baseline.complete);
    let gone = page_ids(&client, 100).await.remove(50);
    delete_job(&sim, &gone).await;

    sim.fault(json!({"fault":"drop","times":3})).await;
    let scan = client
        .scan("demo", &JobType::from(CS), &Filter::default(), |_| {})
        .await
        .expect("a shrinking list is not an error");
    assert!(!scan.complete);
    assert!(scan.covering, "{:?}", scan.incomplete_reason);
    let reason = scan.incomplete_reason.clone().unwrap_or_default();
    assert!(reason.contains("deleted"), "{reason}");
    let left = sim
        .client(Credentials::None)
        .scan("demo", &JobType::from(CS), &Filter::default(), |_| {})
        .await
        .unwrap();
    let seen: std::collections::HashSet<&str> = scan.items.iter().map(|j| j.id.as_str()).collect();
    assert!(
        left.items.iter().all(|j| seen.contains(j.id.as_str())),
        "the walk skipped a sub-job that is still listed"
    );

    // The cycle: a shrinking scan counts no miss.
    sim.fault(json!({"fault":"drop","times":3})).await;
    let drifting = poller.cycle().await;
    assert!(!drifting.complete);
    assert!(drifting.events.is_empty(), "{:?}", kinds(&drifting));
    let snapshot = poller.snapshot().await;
    assert!(snapshot.jobs.contains_key(&gone), "an absence was inferred");
    assert!(snapshot.jobs.values().all(|t| t.missing_scans == 0));
    sim.control(Method::DELETE, "/sim/faults", json!(null))
        .await;

    let first_complete = poller.cycle().await;
    assert!(first_complete.complete);
    assert!(
        first_complete
            .events
            .iter()
            .all(|e| e.kind != EventKind::Vanished),
        "the shrinking scan counted as a miss: {:?}",
        kinds(&first_complete)
    );
    let second_complete = poller.cycle().await;
    let vanished: Vec<&str> = second_complete
        .events
        .iter()
        .filter(|e| e.kind == EventKind::Vanished)
        .map(|e| e.sub_job_id.as_str())
        .collect();
    assert!(vanished.contains(&gone.as_str()), "{vanished:?}");
    // The others are the sub-jobs the drops deleted: truly gone.
    let listed: std::collections::HashSet<String> = sim
        .client(Credentials::None)
        .scan("demo", &JobType::from(CS), &Filter::default(), |_| {})
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|j| j.id)
        .collect();
    assert!(vanished.iter().all(|id| !listed.contains(*id)));
    assert_eq!(vanished.len(), 1 + 3 + 3, "{vanished:?}");
}

#[tokio::test]
async fn a_grouped_route_queues_rows_under_its_group_key_until_the_window_ends() {
    // Pins the cycle's half of `group_window`: the Router's group key is
    // written to each row, and the row is not due before commit time plus
    // the window (kept in the row, so a restart inside the window loses
    // nothing).
    let sim = Sim::start(SimOptions::default()).await;
    let ids = sim.create_waiting(CS, 2).await;
    let dir = tempfile::tempdir().unwrap();
    let client = client(&sim);
    let window = Duration::from_secs(600);
    let router = Router::from_routes(vec![Route {
        targets: vec![],
        projects: vec![],
        error_codes: vec![],
        job_types: vec![],
        to: vec![],
        kinds: vec![EventKind::Changed],
        notify: vec!["hook".into()],
        group_window: Some(window),
        group_by: GroupBy::JobId,
        mute_time_intervals: vec![],
    }]);
    let poller = Poller::open_routed(&client, &state_file(&dir), DiffSettings::default(), router);
    poller.cycle().await;
    for id in &ids {
        sim.set_status(id, "FAILED").await;
    }
    let report = poller.cycle().await;
    assert_eq!(report.events.len(), 2);
    let job_id = report.events[0].job_id.clone().expect("a parent job id");
    let rows = poller.outbox().await;
    assert_eq!(rows.len(), 2);
    for row in &rows {
        assert_eq!(
            row.group_key.as_deref(),
            Some(format!("routes[0]/demo/{job_id}").as_str())
        );
        assert_eq!(
            row.next_attempt_at,
            row.created_at + jiff::SignedDuration::try_from(window).unwrap(),
            "not before the window ends"
        );
    }
    let now = jiff::Timestamp::now();
    let due = poller.store.call(move |s| s.due(now, 10)).await.unwrap();
    assert!(due.is_empty(), "a row is due inside its window: {due:?}");
}
