//! A property over random lifecycles: creations, steps, sub-jobs created
//! and failed between polls, active sub-jobs pushed past the first pages,
//! deletions. Two poll loops read the same simulator at the same moments,
//! one incremental, one full. Under `incremental` every final status is
//! reported, nothing false, and `vanished` only for deleted sub-jobs; both
//! strategies report the same (sub-job, status entered) set.

use std::collections::BTreeSet;

use jobwatch::sim::SimOptions;
use jobwatch::watch::strategy::Strategy as Poll;
use jobwatch::watch::{Event, EventKind};
use proptest::prelude::*;
use reqwest::Method;
use serde_json::json;

use crate::support::{PollLoop, Sim};

const CS: &str = "CREATE_SERVER";
const STATUSES: &[&str] = &[
    "WAITING", "RUNNING", "ROLLBACK", "SUCCESS", "FAILED", "ABNORMAL",
];

#[derive(Debug, Clone)]
enum Op {
    /// A parent job of this many WAITING sub-jobs.
    Create(u32),
    /// The `n`th sub-job made so far, unless it has ended, enters
    /// `STATUSES[s]`.
    Step(usize, usize),
    /// Created and failed before the next poll.
    CreateAndFail(u32),
    /// 120 new sub-jobs (more than a page of news): everything else moves
    /// more than a page down.
    Push,
    Delete(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => (1u32..6).prop_map(Op::Create),
        4 => (any::<usize>(), 0..STATUSES.len()).prop_map(|(n, s)| Op::Step(n, s)),
        1 => (1u32..3).prop_map(Op::CreateAndFail),
        1 => Just(Op::Push),
        1 => any::<usize>().prop_map(Op::Delete),
    ]
}

/// A poll loop and every event it reported.
struct Loop {
    poll: PollLoop,
    events: Vec<Event>,
}

impl Loop {
    fn new(sim: &Sim, strategy: Poll) -> Loop {
        Loop {
            poll: PollLoop::new(sim, strategy),
            events: Vec::new(),
        }
    }

    async fn cycle(&mut self) {
        let report = self.poll.cycle().await;
        self.events.extend(report.events);
    }

    async fn reconcile(&mut self) {
        let report = self.poll.reconcile().await;
        self.events.extend(report.events);
    }

    /// `(sub-job, status entered)` of every `appeared`/`changed`.
    fn entered(&self) -> BTreeSet<(String, String)> {
        self.events
            .iter()
            .filter(|e| matches!(e.kind, EventKind::Appeared | EventKind::Changed))
            .map(|e| (e.sub_job_id.clone(), status(e)))
            .collect()
    }

    fn vanished(&self) -> BTreeSet<String> {
        self.events
            .iter()
            .filter(|e| e.kind == EventKind::Vanished)
            .map(|e| e.sub_job_id.clone())
            .collect()
    }
}

fn status(e: &Event) -> String {
    e.to.as_ref().map(|s| s.to_string()).unwrap_or_default()
}

async fn run(history: u32, batches: Vec<Vec<Op>>) {
    let sim = Sim::start(SimOptions {
        history,
        history_job_types: vec![CS.into()],
        ..SimOptions::default()
    })
    .await;
    let mut incremental = Loop::new(&sim, Poll::Incremental);
    let mut full = Loop::new(&sim, Poll::Full);
    incremental.cycle().await;
    full.cycle().await;

    let mut made: Vec<String> = Vec::new();
    let mut deleted: BTreeSet<String> = BTreeSet::new();
    let mut ended: BTreeSet<String> = BTreeSet::new();
    for batch in batches {
        for op in batch {
            match op {
                Op::Create(n) => made.extend(sim.create(CS, n, "WAITING").await),
                Op::CreateAndFail(n) => {
                    let ids = sim.create(CS, n, "WAITING").await;
                    for id in &ids {
                        sim.set_status(id, "FAILED").await;
                        ended.insert(id.clone());
                    }
                    made.extend(ids);
                }
                Op::Push => made.extend(sim.create(CS, 120, "WAITING").await),
                // A terminal status is final, as in the API: the incremental
                // read relies on it.
                Op::Step(n, s) if !made.is_empty() => {
                    let id = &made[n % made.len()];
                    if !deleted.contains(id) && !ended.contains(id) {
                        sim.set_status(id, STATUSES[s]).await;
                        if ["SUCCESS", "FAILED", "ABNORMAL"].contains(&STATUSES[s]) {
                            ended.insert(id.clone());
                        }
                    }
                }
                Op::Delete(n) if !made.is_empty() => {
                    let id = made[n % made.len()].clone();
                    if deleted.insert(id.clone()) {
                        sim.control(Method::DELETE, &format!("/sim/jobs/{id}"), json!(null))
                            .await;
                    }
                }
                Op::Step(..) | Op::Delete(_) => {}
            }
        }
        // Both read the list as it is now.
        incremental.cycle().await;
        full.cycle().await;
    }
    // Two reconciliations: a deletion is `vanished` at the second miss.
    for _ in 0..2 {
        incremental.reconcile().await;
        full.cycle().await;
    }

    // Nothing false: every status entered is one the sub-job held.
    let held: BTreeSet<(String, String)> = sim
        .events()
        .await
        .iter()
        .map(|t| {
            (
                t["sub_job_id"].as_str().unwrap_or_default().to_owned(),
                t["to"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    let entered = incremental.entered();
    for pair in &entered {
        assert!(held.contains(pair), "{pair:?} was never true");
    }
    // Every final status reported.
    for id in made.iter().filter(|id| !deleted.contains(*id)) {
        let last = sim
            .events()
            .await
            .iter()
            .rev()
            .find(|t| t["sub_job_id"] == id.as_str())
            .and_then(|t| t["to"].as_str().map(str::to_owned))
            .expect("a made sub-job has a transition");
        assert!(
            entered.contains(&(id.clone(), last.clone())),
            "{id}'s final status {last} was never reported"
        );
    }
    // The same truth under full scans.
    let by_full = full.entered();
    let only_incremental: Vec<_> = entered.difference(&by_full).collect();
    let only_full: Vec<_> = by_full.difference(&entered).collect();
    assert!(
        only_incremental.is_empty() && only_full.is_empty(),
        "incremental and full differ: only incremental {only_incremental:?}, only full {only_full:?}"
    );
    // `vanished` only for deleted sub-jobs, under both.
    let vanished = incremental.vanished();
    assert!(vanished.is_subset(&deleted), "{vanished:?} ⊄ {deleted:?}");
    assert_eq!(vanished, full.vanished());
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 12,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn incremental_reports_what_full_scans_report(
        history in 0u32..250,
        batches in prop::collection::vec(prop::collection::vec(op(), 1..5), 1..8),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(run(history, batches));
    }
}
