//! The storage interface as the engine uses it (`jobwatch::storage::Storage`,
//! async), one suite for every backend: each test runs against each of
//! [`backends`]: SQLite, and PostgreSQL where a server can be started
//! (always in CI).

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use jobwatch::cloud::model::{JobType, SubJob};
use jobwatch::config::StateConfig;
use jobwatch::route::{GroupKey, Grouping, Routed};
use jobwatch::storage::{CycleWrite, Fence, OpenMode, Outcome, Owner, PendingOutlook, Storage};
use jobwatch::watch::{DiffSettings, Scan, Target, diff};
use serde_json::json;

use crate::postgres::Postgres;

/// What a backend's state lives in, kept as long as the storage is used.
#[allow(dead_code)]
pub enum Keep {
    Dir(tempfile::TempDir),
    Server(Postgres),
}

/// A fresh, empty state of each backend, named for the failure message.
pub async fn backends() -> Vec<(&'static str, Storage, Keep)> {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = StateConfig::file(dir.path().join("state.db"));
    let sqlite = Storage::open(&state, OpenMode::ReadWrite)
        .await
        .expect("opens");
    let mut all = vec![("sqlite", sqlite, Keep::Dir(dir))];
    if let Some(pg) = Postgres::start() {
        let state = StateConfig::postgres(pg.url("postgres").parse().expect("a valid URL"));
        let postgres = Storage::open(&state, OpenMode::ReadWrite)
            .await
            .expect("connects and migrates");
        all.push(("postgres", postgres, Keep::Server(pg)));
    }
    all
}

fn t(minutes: i64) -> Timestamp {
    let start: Timestamp = "2026-01-05T10:00:00Z".parse().expect("a valid literal");
    start + SignedDuration::from_mins(minutes)
}

fn target() -> Target {
    Target::new("p1", JobType::CreateServer)
}

/// Sub-jobs `(id, status)`, all of parent job `j1`.
fn scan(jobs: &[(&str, &str)]) -> Scan {
    Scan::complete(
        jobs.iter()
            .map(|(id, status)| {
                serde_json::from_value::<SubJob>(
                    json!({"id": id, "status": status, "job_id": "j1"}),
                )
                .expect("a valid sub-job")
            })
            .collect(),
    )
}

/// One cycle as the poller commits it: load, diff, each event to each of
/// `notifiers` (grouped by parent job when `window` is given).
async fn cycle(
    store: &Storage,
    jobs: &[(&str, &str)],
    now: Timestamp,
    notifiers: &[&str],
    window: Option<Duration>,
) -> usize {
    let before = store.load_snapshot(&target()).await.expect("loads");
    let settings = DiffSettings {
        notify_existing: false,
        stuck_after: Duration::from_secs(3600),
    };
    let outcome = diff(&target(), &before, &scan(jobs), now, &settings);
    let routed = outcome
        .events
        .iter()
        .enumerate()
        .flat_map(|(i, event)| {
            notifiers.iter().map(move |notifier| {
                let group = window.map(|window| Grouping {
                    key: GroupKey::new(0, jobwatch::route::GroupBy::JobId, event),
                    window,
                });
                (
                    i,
                    Routed {
                        notifier: (*notifier).to_owned(),
                        route: 0,
                        group,
                        held: None,
                    },
                )
            })
        })
        .collect();
    let commit = store
        .commit_cycle(CycleWrite {
            target: target(),
            outcome,
            routed,
            now,
            fence: Fence::Sole,
        })
        .await
        .expect("commits");
    commit.inserted
}

#[tokio::test]
async fn claims_outcomes_and_why_rows_wait() {
    for (backend, store, _dir) in backends().await {
        // A baseline, then two failures: two rows for each of two notifiers.
        cycle(
            &store,
            &[("s1", "RUNNING"), ("s2", "RUNNING")],
            t(0),
            &["a", "b"],
            None,
        )
        .await;
        let inserted = cycle(
            &store,
            &[("s1", "FAILED"), ("s2", "FAILED")],
            t(1),
            &["a", "b"],
            None,
        )
        .await;
        assert_eq!(inserted, 4, "{backend}");
        let due = store.due_refs(t(1), 0, 100).await.expect("due");
        assert_eq!(due.len(), 4, "{backend}");
        let ids: Vec<i64> = due.iter().map(|r| r.id).collect();

        // One owner's claim keeps another's off the rows until its lease ends.
        let (mine, theirs) = (Owner::unique(), Owner::unique());
        let lease = Duration::from_secs(60);
        let claimed = store
            .claim(&mine, ids.clone(), t(1), lease)
            .await
            .expect("claims");
        assert_eq!(claimed.len(), 4, "{backend}");
        assert!(
            store
                .claim(&theirs, ids.clone(), t(1), lease)
                .await
                .expect("claims")
                .is_empty(),
            "{backend}: claimed twice"
        );

        // Delivered, retrying, dead: what each leaves.
        let outcomes = vec![
            (vec![ids[0]], Outcome::Delivered { at: t(2) }),
            (
                vec![ids[1]],
                Outcome::Retry {
                    at: t(10),
                    error: "HTTP 503".into(),
                    tried: t(2),
                },
            ),
            (
                vec![ids[2]],
                Outcome::Dead {
                    at: t(2),
                    reason: "HTTP 400".into(),
                },
            ),
        ];
        store.record_many(&mine, outcomes).await.expect("records");
        store.release(&mine, vec![ids[3]]).await;
        let counts = store.outbox_counts().await.expect("counts");
        assert_eq!((counts.pending, counts.dead), (2, 1), "{backend}");
        assert_eq!(
            store.pending_outlook().await.expect("outlook"),
            PendingOutlook {
                untried: 1,
                untried_next: Some(t(1)),
                retrying: 1,
                retrying_next: Some(t(10)),
            },
            "{backend}"
        );
        // The released row is anyone's again; the retrying one not before its time.
        let again = store
            .claim(&theirs, ids.clone(), t(3), lease)
            .await
            .expect("claims");
        assert_eq!(
            again.iter().map(|r| r.id).collect::<Vec<_>>(),
            [ids[3]],
            "{backend}"
        );

        // A dead letter: listed, purged only once older than asked, or requeued.
        let dead = store.dead_letters().await.expect("dead");
        assert_eq!(dead.len(), 1, "{backend}");
        assert_eq!(dead[0].last_error.as_deref(), Some("HTTP 400"), "{backend}");
        assert_eq!(
            store.purge_dead(t(1)).await.expect("purges"),
            0,
            "{backend}"
        );
        assert_eq!(
            store.requeue_dead(vec![], t(4)).await.expect("requeues"),
            1,
            "{backend}"
        );
        assert_eq!(
            store.outbox_counts().await.expect("counts").dead,
            0,
            "{backend}"
        );
        store
            .record_many(
                &theirs,
                vec![(
                    vec![ids[3]],
                    Outcome::Dead {
                        at: t(5),
                        reason: "HTTP 410".into(),
                    },
                )],
            )
            .await
            .expect("records");
        assert_eq!(
            store.purge_dead(t(6)).await.expect("purges"),
            1,
            "{backend}"
        );
        assert_eq!(
            store.outbox_counts().await.expect("counts").dead,
            0,
            "{backend}"
        );
    }
}

#[tokio::test]
async fn a_parent_jobs_sub_jobs_are_counted_by_status_and_grouped_rows_wait_for_their_window() {
    for (backend, store, _dir) in backends().await {
        let jobs = [("s1", "RUNNING"), ("s2", "RUNNING"), ("s3", "RUNNING")];
        cycle(&store, &jobs, t(0), &["a"], None).await;
        let window = Duration::from_secs(120);
        let done = [("s1", "SUCCESS"), ("s2", "SUCCESS"), ("s3", "FAILED")];
        assert_eq!(
            cycle(&store, &done, t(1), &["a"], Some(window)).await,
            3,
            "{backend}"
        );
        let tally = store.job_tally("p1", "j1").await.expect("tallies");
        assert_eq!(
            tally.into_iter().collect::<Vec<_>>(),
            [("FAILED".to_owned(), 1), ("SUCCESS".to_owned(), 2)],
            "{backend}"
        );
        assert!(
            store
                .job_tally("p1", "other")
                .await
                .expect("tallies")
                .is_empty()
        );
        // The group's window is open: nothing due yet, all untried.
        assert!(
            store.due_refs(t(2), 0, 100).await.expect("due").is_empty(),
            "{backend}"
        );
        let outlook = store.pending_outlook().await.expect("outlook");
        assert_eq!((outlook.untried, outlook.retrying), (3, 0), "{backend}");
        assert_eq!(outlook.untried_next, Some(t(3)), "{backend}");
        let due = store.due_refs(t(3), 0, 100).await.expect("due");
        assert_eq!(due.len(), 3, "{backend}");
        assert!(
            due.iter()
                .all(|r| r.group_key == due[0].group_key && r.group_key.is_some()),
            "{backend}: one group {due:?}"
        );

        // Forgetting the target drops its snapshot, not what it owes.
        assert_eq!(
            store.forget_target(&target()).await.expect("forgets"),
            3,
            "{backend}"
        );
        assert!(
            store
                .job_tally("p1", "j1")
                .await
                .expect("tallies")
                .is_empty()
        );
        assert_eq!(
            store.outbox_counts().await.expect("counts").pending,
            3,
            "{backend}"
        );
    }
}

/// The history keeps every event with where it went (held ones too) and
/// every attempt; silences are stored, listed by time and expired; both
/// are pruned by age. The same on every backend.
#[tokio::test]
async fn the_history_keeps_events_routes_and_attempts_and_silences_come_and_go() {
    use jobwatch::silence::{Hold, NewSilence};
    use jobwatch::storage::HistoryQuery;
    for (backend, store, _dir) in backends().await {
        let silence = store
            .add_silence(
                NewSilence {
                    matchers: vec!["job_type=CREATE_SERVER".parse().expect("a matcher")],
                    starts_at: t(0),
                    ends_at: t(60),
                    comment: "maintenance".into(),
                    created_by: "ops@host".into(),
                },
                t(0),
            )
            .await
            .expect("adds");
        assert_eq!(
            store.active_silences(t(1)).await.expect("reads"),
            vec![silence.clone()],
            "{backend}"
        );
        assert!(
            store
                .active_silences(t(60))
                .await
                .expect("reads")
                .is_empty()
        );

        // A baseline, then s1 fails: `a` is sent, `b` is held.
        let settings = DiffSettings {
            notify_existing: false,
            stuck_after: Duration::from_secs(3600),
        };
        for (jobs, now) in [
            (&[("s1", "RUNNING"), ("s2", "RUNNING")][..], t(0)),
            (&[("s1", "FAILED"), ("s2", "RUNNING")][..], t(1)),
        ] {
            let before = store.load_snapshot(&target()).await.expect("loads");
            let outcome = diff(&target(), &before, &scan(jobs), now, &settings);
            let routed = (0..outcome.events.len())
                .flat_map(|i| {
                    [("a", None), ("b", Some(Hold::Silence(silence.id)))]
                        .into_iter()
                        .map(move |(notifier, held)| {
                            (
                                i,
                                Routed {
                                    notifier: notifier.to_owned(),
                                    route: 0,
                                    group: None,
                                    held,
                                },
                            )
                        })
                })
                .collect();
            store
                .commit_cycle(CycleWrite {
                    target: target(),
                    outcome,
                    routed,
                    now,
                    fence: Fence::Sole,
                })
                .await
                .expect("commits");
        }
        // Only `a` is owed.
        let due = store.due_refs(t(1), 0, 100).await.expect("due");
        assert_eq!(
            due.len(),
            1,
            "{backend}: the held delivery is not in the outbox"
        );
        assert_eq!(due[0].notifier, "a");
        let id = due[0].id;
        let owner = Owner::unique();
        store
            .claim(&owner, vec![id], t(1), Duration::from_secs(60))
            .await
            .expect("claims");
        store
            .record_many(
                &owner,
                vec![(
                    vec![id],
                    Outcome::Retry {
                        at: t(3),
                        error: "HTTP 503: busy".into(),
                        tried: t(2),
                    },
                )],
            )
            .await
            .expect("records");
        store
            .claim(&owner, vec![id], t(3), Duration::from_secs(60))
            .await
            .expect("claims");
        store
            .record_many(
                &owner,
                vec![(
                    vec![id],
                    Outcome::Dead {
                        at: t(3),
                        reason: "HTTP 400: no".into(),
                    },
                )],
            )
            .await
            .expect("records");
        assert_eq!(
            store.requeue_dead(vec![id], t(4)).await.expect("requeues"),
            1
        );

        let query =
            |sub_job: Option<&str>, job: Option<&str>, since: Option<Timestamp>| HistoryQuery {
                sub_job_id: sub_job.map(str::to_owned),
                job_id: job.map(str::to_owned),
                since,
                limit: 50,
            };
        let history = store
            .history(query(Some("s1"), None, None))
            .await
            .expect("reads");
        assert_eq!(history.len(), 1, "{backend}: one event for s1");
        let entry = &history[0];
        assert_eq!(entry.event.sub_job_id, "s1");
        assert_eq!(entry.event.to.as_ref().map(|s| s.as_str()), Some("FAILED"));
        assert_eq!(entry.event.observed_at, t(1));
        let held: Vec<(&str, Option<&Hold>)> = entry
            .routes
            .iter()
            .map(|r| (r.notifier.as_str(), r.held.as_ref()))
            .collect();
        assert_eq!(
            held,
            vec![("a", None), ("b", Some(&Hold::Silence(silence.id)))],
            "{backend}"
        );
        assert_eq!(entry.deliveries.len(), 1, "{backend}: only `a` was sent");
        let d = &entry.deliveries[0];
        assert_eq!((d.notifier.as_str(), d.state), ("a", Some("pending")));
        let attempts: Vec<(Timestamp, &str, Option<&str>)> = d
            .attempts
            .iter()
            .map(|a| (a.at, a.verdict.as_str(), a.answer.as_deref()))
            .collect();
        assert_eq!(
            attempts,
            vec![
                (t(2), "retry", Some("HTTP 503: busy")),
                (t(3), "dead", Some("HTTP 400: no")),
                (t(4), "requeued", None),
            ],
            "{backend}"
        );
        assert_eq!(d.attempts[0].next_at, Some(t(3)));
        // By parent job, and by time.
        assert_eq!(
            store
                .history(query(None, Some("j1"), None))
                .await
                .expect("reads")
                .len(),
            1
        );
        assert!(
            store
                .history(query(None, Some("j2"), None))
                .await
                .expect("reads")
                .is_empty()
        );
        assert!(
            store
                .history(query(None, None, Some(t(2))))
                .await
                .expect("reads")
                .is_empty()
        );

        // Expiring ends a silence now; an unknown id is `None`.
        let expired = store
            .expire_silence(silence.id, t(5))
            .await
            .expect("expires");
        assert_eq!(expired.map(|s| s.ends_at), Some(t(5)), "{backend}");
        assert!(store.active_silences(t(6)).await.expect("reads").is_empty());
        assert_eq!(
            store
                .expire_silence(silence.id + 100, t(5))
                .await
                .expect("reads"),
            None
        );
        assert_eq!(store.silences().await.expect("reads").len(), 1);

        // Pruning what is older than t(2) takes the event (t(1)) …
        let pruned = store.prune_history(t(2)).await.expect("prunes");
        assert!(pruned >= 1, "{backend}");
        assert!(
            store
                .history(query(Some("s1"), None, None))
                .await
                .expect("reads")
                .is_empty()
        );
        // … and the silence that ended at t(5) goes once that is old.
        assert_eq!(store.silences().await.expect("reads").len(), 1);
        store.prune_history(t(6)).await.expect("prunes");
        assert!(
            store.silences().await.expect("reads").is_empty(),
            "{backend}"
        );
    }
}
