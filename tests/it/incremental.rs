//! The incremental strategy against the simulator and a real SQLite file:
//! what a steady cycle costs, what it still finds (new sub-jobs, active
//! ones pushed past the pages it reads), that only full scans say
//! `vanished`, and the fall-back when the API does not list newest first.

use jobwatch::sim::SimOptions;
use jobwatch::watch::EventKind;
use jobwatch::watch::poller::CycleReport;
use jobwatch::watch::strategy::{ReadKind, Strategy};
use reqwest::Method;
use serde_json::json;

use crate::support::{PollLoop, Sim, list_requests};

const CS: &str = "CREATE_SERVER";

fn history(n: u32) -> SimOptions {
    SimOptions {
        history: n,
        ..SimOptions::default()
    }
}

/// `(kind, sub_job_id, to)` of each event.
fn events(report: &CycleReport) -> Vec<(EventKind, String, String)> {
    report
        .events
        .iter()
        .map(|e| {
            let to = e.to.as_ref().map(|s| s.to_string()).unwrap_or_default();
            (e.kind, e.sub_job_id.clone(), to)
        })
        .collect()
}

#[tokio::test]
async fn a_steady_cycle_costs_one_request_whatever_the_history() {
    let sim = Sim::start(history(1000)).await;
    let mut poll = PollLoop::new(&sim, Strategy::Incremental);
    let baseline = poll.cycle().await;
    assert_eq!((baseline.read, baseline.requests), (ReadKind::Full, 10));
    for _ in 0..3 {
        let before = list_requests(&sim).await;
        let steady = poll.cycle().await;
        assert_eq!(steady.read, ReadKind::Incremental);
        assert!(steady.events.is_empty(), "{:?}", events(&steady));
        // Counted by the simulator, not only by the client.
        assert_eq!(list_requests(&sim).await - before, 1);
        assert_eq!(steady.requests, 1);
        assert_eq!(steady.tracked, 1000);
    }
}

#[tokio::test]
async fn new_sub_jobs_and_their_failures_are_found_in_one_or_two_requests() {
    let sim = Sim::start(history(500)).await;
    let mut poll = PollLoop::new(&sim, Strategy::Incremental);
    poll.cycle().await;
    let ids = sim.create_waiting(CS, 3).await;
    let appeared = poll.cycle().await;
    assert_eq!(appeared.read, ReadKind::Incremental);
    assert_eq!(appeared.requests, 1);
    let mut found: Vec<String> = appeared
        .events
        .iter()
        .map(|e| e.sub_job_id.clone())
        .collect();
    found.sort();
    let mut want = ids.clone();
    want.sort();
    assert_eq!(found, want);
    assert!(
        appeared
            .events
            .iter()
            .all(|e| e.kind == EventKind::Appeared)
    );

    sim.set_status(&ids[1], "FAILED").await;
    let failed = poll.cycle().await;
    assert_eq!(
        events(&failed),
        [(EventKind::Changed, ids[1].clone(), "FAILED".into())]
    );
    assert_eq!(failed.requests, 1);
}

#[tokio::test]
async fn a_burst_of_new_sub_jobs_larger_than_a_page_is_read_to_the_end() {
    let sim = Sim::start(history(300)).await;
    let mut poll = PollLoop::new(&sim, Strategy::Incremental);
    poll.cycle().await;
    // 250 new sub-jobs: the newest page is all new, so `count` is not yet
    // accounted for and the read goes on until it reaches known ones.
    let mut made = Vec::new();
    for _ in 0..5 {
        made.extend(sim.create_waiting(CS, 50).await);
    }
    let burst = poll.cycle().await;
    assert_eq!(burst.read, ReadKind::Incremental);
    assert_eq!(burst.events.len(), 250, "{} events", burst.events.len());
    assert_eq!(burst.requests, 3);
    assert_eq!(burst.tracked, 550);
}

/// Two active sub-jobs of one parent job pushed `newer` places down by
/// newer ones, then changing: found by the newest page and one request
/// more.
async fn pushed_down_then_changed(newer: u32) {
    let sim = Sim::start(history(200)).await;
    let mut poll = PollLoop::new(&sim, Strategy::Incremental);
    poll.cycle().await;
    let running = sim.create_waiting(CS, 2).await;
    sim.set_status(&running[0], "RUNNING").await;
    poll.cycle().await;
    let mut made = Vec::new();
    while made.len() < newer as usize {
        made.extend(sim.create_waiting(CS, 50).await);
    }
    let pushed = poll.cycle().await;
    assert_eq!(pushed.events.len(), made.len());
    // The newer ones end; the two old ones then change deep down.
    for id in &made {
        sim.set_status(id, "SUCCESS").await;
    }
    poll.cycle().await;
    sim.set_status(&running[0], "FAILED").await;
    sim.set_status(&running[1], "SUCCESS").await;
    let before = list_requests(&sim).await;
    let deep = poll.cycle().await;
    let mut got = events(&deep);
    got.sort();
    let mut want = vec![
        (EventKind::Changed, running[0].clone(), "FAILED".to_owned()),
        (EventKind::Changed, running[1].clone(), "SUCCESS".to_owned()),
    ];
    want.sort();
    assert_eq!(got, want);
    assert_eq!(deep.requests, 2);
    assert_eq!(list_requests(&sim).await - before, 2);
    assert_eq!(deep.read, ReadKind::Incremental);
}

#[tokio::test]
async fn active_sub_jobs_one_page_down_are_reached_by_reading_one_page_more() {
    pushed_down_then_changed(150).await;
}

#[tokio::test]
async fn active_sub_jobs_far_down_are_rechecked_by_their_parent_job() {
    // Five pages down: one request for their parent job is cheaper.
    pushed_down_then_changed(450).await;
}

#[tokio::test]
async fn many_active_parent_jobs_far_down_are_rechecked_by_status() {
    let sim = Sim::start(history(100)).await;
    let mut poll = PollLoop::new(&sim, Strategy::Incremental);
    poll.cycle().await;
    // Six parent jobs, all RUNNING, then 450 newer sub-jobs above them.
    let mut running = Vec::new();
    for _ in 0..6 {
        let id = sim.create_waiting(CS, 1).await.remove(0);
        sim.set_status(&id, "RUNNING").await;
        running.push(id);
    }
    poll.cycle().await;
    let mut made = Vec::new();
    while made.len() < 450 {
        made.extend(sim.create_waiting(CS, 50).await);
    }
    poll.cycle().await;
    for id in &made {
        sim.set_status(id, "SUCCESS").await;
    }
    poll.cycle().await;
    // One of the six fails: the RUNNING list, then its parent job.
    sim.set_status(&running[3], "FAILED").await;
    let deep = poll.cycle().await;
    assert_eq!(
        events(&deep),
        [(EventKind::Changed, running[3].clone(), "FAILED".into())]
    );
    assert_eq!(deep.requests, 3, "newest page, RUNNING, one parent job");
}

#[tokio::test]
async fn a_full_scan_owed_for_something_unaccounted_is_owed_still_after_it_fails() {
    let sim = Sim::start(history(150)).await;
    let mut poll = PollLoop::new(&sim, Strategy::Incremental);
    poll.cycle().await;
    let active = sim.create_waiting(CS, 1).await.remove(0);
    poll.cycle().await;
    // An active sub-job gone from every list the incremental read tries:
    // unaccounted for, so a full scan comes next.
    sim.control(Method::DELETE, &format!("/sim/jobs/{active}"), json!(null))
        .await;
    let unaccounted = poll.cycle().await;
    assert_eq!(unaccounted.read, ReadKind::Incremental);
    sim.fault(json!({"fault":"status","status":400,"times":1}))
        .await;
    let target = jobwatch::watch::Target::new("demo", CS);
    let failed = jobwatch::watch::poller::cycle(&poll.ctx, &target, &mut poll.state).await;
    assert!(failed.is_err(), "the full scan met the fault");
    assert_eq!(poll.cycle().await.read, ReadKind::Full, "still owed");
    assert_eq!(poll.cycle().await.read, ReadKind::Incremental);
}

#[tokio::test]
async fn only_a_full_scan_says_vanished() {
    let sim = Sim::start(history(150)).await;
    let mut poll = PollLoop::new(&sim, Strategy::Incremental);
    poll.cycle().await;
    let gone = sim.create_waiting(CS, 1).await.remove(0);
    sim.set_status(&gone, "SUCCESS").await;
    poll.cycle().await;
    sim.control(Method::DELETE, &format!("/sim/jobs/{gone}"), json!(null))
        .await;
    for _ in 0..3 {
        let steady = poll.cycle().await;
        assert_eq!(steady.read, ReadKind::Incremental);
        assert!(steady.events.is_empty(), "{:?}", events(&steady));
    }
    let first = poll.reconcile().await;
    assert_eq!(first.read, ReadKind::Full);
    assert!(first.events.is_empty(), "{:?}", events(&first));
    let second = poll.reconcile().await;
    assert_eq!(
        events(&second),
        [(EventKind::Vanished, gone, String::new())]
    );
}

#[tokio::test]
async fn an_api_listing_oldest_first_is_detected_and_full_scans_still_find_a_deep_change() {
    let sim = Sim::start(SimOptions {
        history: 300,
        oldest_first: true,
        ..SimOptions::default()
    })
    .await;
    let mut poll = PollLoop::new(&sim, Strategy::Incremental);
    let baseline = poll.cycle().await;
    assert_eq!(baseline.read, ReadKind::Full);
    // The newest sub-job is now at the end of the list, where an
    // incremental read would never look.
    let new = sim.create_waiting(CS, 1).await.remove(0);
    let next = poll.cycle().await;
    assert_eq!(
        next.read,
        ReadKind::Full,
        "the broken order was not noticed"
    );
    assert_eq!(
        events(&next),
        [(EventKind::Appeared, new.clone(), "WAITING".into())]
    );
    // A change deep in the history: found, by full scans from now on.
    sim.set_status(&new, "FAILED").await;
    let deep = poll.cycle().await;
    assert_eq!(deep.read, ReadKind::Full);
    assert_eq!(events(&deep), [(EventKind::Changed, new, "FAILED".into())]);
}

#[tokio::test]
async fn the_full_strategy_reads_everything_every_cycle() {
    let sim = Sim::start(history(250)).await;
    let mut poll = PollLoop::new(&sim, Strategy::Full);
    for _ in 0..2 {
        let report = poll.cycle().await;
        assert_eq!((report.read, report.requests), (ReadKind::Full, 3));
    }
}
