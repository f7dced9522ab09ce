//! What a hostile or broken API can hand the poller, served by the
//! simulator's `body` and `patch` faults between true answers: answers that
//! only look like pages, odd statuses, a lying `count`, over-long values.
//! After each, no event that is not true, nothing lost, bounded requests.

use jobwatch::cloud::ClientError;
use jobwatch::sim::SimOptions;
use jobwatch::watch::poller::{CycleError, CycleReport, cycle};
use jobwatch::watch::strategy::Strategy;
use jobwatch::watch::{EventKind, Target};
use serde_json::{Value, json};

use crate::support::{PollLoop, Sim, list_requests};

const CS: &str = "CREATE_SERVER";
const HISTORY: u32 = 150;

async fn baselined() -> (Sim, PollLoop) {
    let sim = Sim::start(SimOptions {
        history: HISTORY,
        history_job_types: vec![CS.into()],
        ..SimOptions::default()
    })
    .await;
    let mut poll = PollLoop::new(&sim, Strategy::Incremental);
    let baseline = poll.cycle().await;
    assert_eq!(baseline.tracked, HISTORY as usize);
    (sim, poll)
}

/// A cycle that may fail (the fault outlasted the retries).
async fn try_cycle(poll: &mut PollLoop) -> Result<CycleReport, CycleError> {
    cycle(&poll.ctx, &Target::new("demo", CS), &mut poll.state).await
}

/// The events of a report, failed or not.
fn events(result: &Result<CycleReport, CycleError>) -> Vec<(EventKind, String)> {
    let report = match result {
        Ok(report) => Some(report),
        Err(CycleError::Api { partial, .. }) => partial.as_ref().as_ref(),
        Err(e) => panic!("{e}"),
    };
    report
        .map(|r| {
            r.events
                .iter()
                .map(|e| (e.kind, e.sub_job_id.clone()))
                .collect()
        })
        .unwrap_or_default()
}

/// Cycles with the truth again, a reconciliation among them: no events,
/// every sub-job still tracked, none counted as missing.
async fn nothing_invented(poll: &mut PollLoop) {
    for report in [
        poll.cycle().await,
        poll.reconcile().await,
        poll.cycle().await,
    ] {
        assert_eq!(events(&Ok(report.clone())), [], "{:?}", report.read);
        assert_eq!(report.tracked, HISTORY as usize);
    }
    let snapshot = poll
        .ctx
        .store
        .load_snapshot(&Target::new("demo", CS))
        .await
        .unwrap();
    assert!(snapshot.jobs.values().all(|t| t.missing_scans == 0));
}

#[tokio::test]
async fn answers_that_only_look_like_pages_fail_the_page_and_invent_nothing() {
    let (sim, mut poll) = baselined().await;
    for body in [
        json!({}),
        json!({"error_code": "WKS.0001", "error_msg": "internal error"}),
        json!({"count": null, "items": null}),
        json!({"count": 150}),
    ] {
        // Twice the client's attempts: a cycle and a reconciliation fail.
        sim.fault(json!({"fault": "body", "body": body.to_string(), "times": 8}))
            .await;
        for run in [try_cycle(&mut poll).await, {
            let _ = poll.reconcile_may_fail().await;
            try_cycle(&mut poll).await
        }] {
            assert_eq!(events(&run), [], "{body}");
            if let Err(CycleError::Api { source, .. }) = &run {
                let ClientError::Decode {
                    request_id, reason, ..
                } = source
                else {
                    panic!("{body}: {source}")
                };
                assert!(request_id.is_some(), "{body}: the request id is kept");
                assert!(!reason.is_empty());
            }
        }
        nothing_invented(&mut poll).await;
    }
}

#[tokio::test]
async fn a_valid_but_empty_answer_is_not_a_mass_disappearance_until_confirmed() {
    let (sim, mut poll) = baselined().await;
    // One empty page, then the truth: the count endpoint and a second
    // scan do not confirm it, so nobody counts as missing.
    sim.fault(json!({"fault": "body", "body": r#"{"count":0,"items":[]}"#, "times": 1}))
        .await;
    let suspect = poll.reconcile().await;
    assert_eq!(events(&Ok(suspect.clone())), []);
    assert!(
        !suspect.complete,
        "an unconfirmed disappearance is no complete scan"
    );
    nothing_invented(&mut poll).await;
}

#[tokio::test]
async fn a_sub_job_without_a_usable_status_keeps_the_one_last_seen() {
    let (sim, mut poll) = baselined().await;
    for status in [
        Value::Null,
        json!(5),
        json!({"a": 1}),
        json!("X".repeat(1000)),
    ] {
        sim.fault(json!({"fault": "patch", "items": {"status": status}, "times": 1}))
            .await;
        let odd = poll.cycle().await;
        assert_eq!(events(&Ok(odd)), [], "status {status}");
        nothing_invented(&mut poll).await;
    }
}

#[tokio::test]
async fn a_lying_count_fails_the_page_naming_it_and_the_requests_stay_bounded() {
    let (sim, mut poll) = baselined().await;
    let before = list_requests(&sim).await;
    // As many as the client's attempts.
    sim.fault(json!({"fault": "patch", "page": {"count": 1_000_000_000u64}, "times": 4}))
        .await;
    let lied = try_cycle(&mut poll).await;
    let Err(CycleError::Api { source, .. }) = &lied else {
        panic!(
            "a count of 10^9 was believed: {:?}",
            lied.map(|r| r.requests)
        )
    };
    let text = source.to_string();
    assert!(
        text.contains("1000000000") && text.contains("not believed"),
        "{text}"
    );
    assert!(
        list_requests(&sim).await - before <= 4,
        "the client's retries only"
    );
    nothing_invented(&mut poll).await;
}

#[tokio::test]
async fn over_long_values_are_cut_before_they_are_stored() {
    let (sim, mut poll) = baselined().await;
    sim.fault(
        json!({"fault": "patch", "items": {"error_message": "m".repeat(20_000)}, "times": 1}),
    )
    .await;
    let cut = poll.cycle().await;
    assert_eq!(events(&Ok(cut)), []);
    let target = Target::new("demo", CS);
    let ids: Vec<String> = poll
        .ctx
        .store
        .load_snapshot(&target)
        .await
        .unwrap()
        .jobs
        .into_keys()
        .collect();
    let stored = poll.ctx.store.sub_jobs(&target, ids).await.unwrap();
    let longest = stored
        .values()
        .filter_map(|j| j.error_message.as_ref().map(String::len))
        .max()
        .unwrap_or(0);
    assert!(
        (1..=jobwatch::cloud::model::MAX_TEXT_FIELD + 4).contains(&longest),
        "the longest stored message is {longest} bytes"
    );
}

#[tokio::test]
async fn an_empty_answer_the_count_endpoint_repeats_is_held_not_believed() {
    let (sim, mut poll) = baselined().await;
    // A lie told consistently, the count endpoint too, over several
    // reconciliations: held, so nobody counts as missing, let alone
    // vanishes.
    sim.fault(json!({"fault": "body", "body": r#"{"count":0,"items":[]}"#, "times": 9}))
        .await;
    for _ in 0..3 {
        let held = poll.reconcile().await;
        assert_eq!(events(&Ok(held.clone())), []);
        assert!(!held.complete);
    }
    nothing_invented(&mut poll).await;
}
