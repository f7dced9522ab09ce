//! The delivery core against a loopback receiver: retries with the shared
//! policy, Retry-After, dead letters and their requeue.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use jobwatch::cloud::model::{Status, SubJob};
use jobwatch::metrics::Metrics;
use jobwatch::notify::Notifier;
use jobwatch::notify::dispatch::{DispatchSettings, Dispatcher, Notifiers, Slot};
use jobwatch::notify::webhook::{self, WebhookNotifier};
use jobwatch::retry::Backoff;
use jobwatch::secret::Secret;
use jobwatch::store::{Delivery, SharedStore, Store};
use jobwatch::watch::Target;
use jobwatch::watch::diff::{DiffSettings, Scan, TargetSnapshot, diff};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::support::{Receiver, eventually};

const SECRET: &str = "whsec_dGVzdC1zZWNyZXQtZm9yLXdlYmhvb2tz";

fn job(id: &str, status: &str) -> SubJob {
    serde_json::from_value(json!({
        "id": id, "job_type": "CREATE_SERVER", "status": status, "job_id": "parent-1",
        "job_resource_info": {"resource_id": "r-1", "resource_name": "APS-20261129093902-AYOASWQDEJ"},
        "begin_time": "2026-11-29T10:40:43.858Z", "project_id": "p1"
    }))
    .unwrap()
}

/// A store holding one queued event (`x` RUNNING → FAILED) for notifier `hook`.
fn queued_store(dir: &std::path::Path) -> Store {
    let mut store = Store::open(dir.join("state.db")).unwrap();
    let target = Target::new("p1", "CREATE_SERVER");
    let now = jiff::Timestamp::now();
    let settings = DiffSettings::default();
    let base = diff(
        &target,
        &TargetSnapshot::default(),
        &Scan::complete(vec![job("x", "RUNNING")]),
        now,
        &settings,
    );
    store.commit_cycle(&target, &base, &[], now).unwrap();
    let before = store.load_snapshot(&target).unwrap();
    let outcome = diff(
        &target,
        &before,
        &Scan::complete(vec![job("x", "FAILED")]),
        now,
        &settings,
    );
    assert_eq!(outcome.events.len(), 1);
    let deliveries = [Delivery {
        event: &outcome.events[0],
        notifier: "hook",
        group_key: None,
        not_before: None,
    }];
    store
        .commit_cycle(&target, &outcome, &deliveries, now)
        .unwrap();
    store
}

fn dispatcher(store: &SharedStore, url: &str) -> Arc<Dispatcher> {
    jobwatch::install_crypto_provider();
    let notifier = Notifier::Webhook(WebhookNotifier {
        url: format!("{url}/hook").parse().unwrap(),
        secret: Some(Secret::new(SECRET)),
        headers: vec![("X-Team".into(), "ops".into())],
        http: reqwest::Client::new(),
        template: None,
    });
    let mut notifiers: Notifiers = HashMap::new();
    notifiers.insert("hook".into(), Arc::new(Slot::new(notifier, None, 2)));
    let settings = DispatchSettings {
        backoff: Backoff {
            base: Duration::from_millis(20),
            cap: Duration::from_millis(200),
            max_attempts: 0,
            jitter: false,
        },
        max_age: Duration::from_secs(3600),
    };
    Arc::new(Dispatcher::new(
        store.clone(),
        notifiers,
        settings,
        Arc::new(Metrics::new()),
    ))
}

#[tokio::test]
async fn transient_failures_are_retried_until_delivered_honouring_retry_after() {
    let dir = tempfile::tempdir().unwrap();
    let store = SharedStore::new(queued_store(dir.path()));
    let mut receiver = Receiver::start(vec![
        (503, vec![], "busy".into()),
        (503, vec![], "busy".into()),
        (429, vec![("retry-after", "1".into())], "slow down".into()),
        (500, vec![], "oops".into()),
        (200, vec![], "ok".into()),
    ])
    .await;
    let dispatcher = dispatcher(&store, &receiver.url);
    let stop = CancellationToken::new();
    let tracker = TaskTracker::new();
    let run = tokio::spawn(dispatcher.clone().run(tracker.clone(), stop.clone()));

    let mut got = Vec::new();
    for _ in 0..5 {
        got.push(receiver.next(Duration::from_secs(20)).await);
    }
    eventually(Duration::from_secs(10), "the row to be delivered", || {
        let store = store.clone();
        async move { (store.call(|s| s.pending_count()).await.unwrap() == 0).then_some(()) }
    })
    .await;
    stop.cancel();
    run.await.unwrap();

    // One id across every attempt, so the receiver can de-duplicate.
    let ids: Vec<&str> = got
        .iter()
        .map(|r| r.header("webhook-id").unwrap())
        .collect();
    assert!(ids.iter().all(|id| *id == ids[0]), "{ids:?}");
    // The 429's Retry-After (1 s) held the next attempt back.
    assert!(
        got[3].at - got[2].at >= Duration::from_secs(1),
        "{:?}",
        got[3].at - got[2].at
    );
    // Every attempt is signed and verifiable, and carries the extra header.
    for r in &got {
        let ts: i64 = r.header("webhook-timestamp").unwrap().parse().unwrap();
        let expected = webhook::sign(&Secret::new(SECRET), ids[0], ts, &r.body);
        assert_eq!(r.header("webhook-signature"), Some(expected.as_str()));
        assert_eq!(r.header("x-team"), Some("ops"));
        assert_eq!(r.path, "/hook");
        let body = r.json();
        assert_eq!(body["version"], "1");
        assert_eq!(body["events"][0]["to"], "FAILED");
        assert_eq!(body["events"][0]["from"], "RUNNING");
    }
    // No sixth request: delivered means done.
    assert!(receiver.rx.try_recv().is_err());
    let dead = store.call(|s| s.dead_count()).await.unwrap();
    assert_eq!(dead, 0);
}

#[tokio::test]
async fn a_permanent_failure_is_a_dead_letter_at_once_and_can_be_requeued() {
    let dir = tempfile::tempdir().unwrap();
    let store = SharedStore::new(queued_store(dir.path()));
    let mut receiver =
        Receiver::start(vec![(400, vec![], r#"{"error":"bad payload"}"#.into())]).await;
    let dispatcher = dispatcher(&store, &receiver.url);
    let stop = CancellationToken::new();
    let tracker = TaskTracker::new();
    let run = tokio::spawn(dispatcher.clone().run(tracker.clone(), stop.clone()));

    receiver.next(Duration::from_secs(10)).await;
    let dead = eventually(Duration::from_secs(10), "a dead letter", || {
        let store = store.clone();
        async move {
            let dead = store.call(|s| s.dead()).await.unwrap();
            (!dead.is_empty()).then_some(dead)
        }
    })
    .await;
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].attempts, 1, "a 400 is not retried");
    assert!(
        dead[0]
            .last_error
            .as_deref()
            .unwrap()
            .contains("bad payload"),
        "{:?}",
        dead[0].last_error
    );

    // `state retry` requeues it; the receiver now accepts.
    let id = dead[0].id;
    store
        .call(move |s| s.retry_dead(&[id], jiff::Timestamp::now()))
        .await
        .unwrap();
    dispatcher.wake();
    let second = receiver.next(Duration::from_secs(10)).await;
    assert_eq!(second.json()["events"][0]["to"], Status::Failed.to_string());
    eventually(Duration::from_secs(10), "delivery after requeue", || {
        let store = store.clone();
        async move {
            let (pending, dead) = store
                .call(|s| (s.pending_count().unwrap(), s.dead_count().unwrap()))
                .await;
            (pending == 0 && dead == 0).then_some(())
        }
    })
    .await;
    stop.cancel();
    run.await.unwrap();
}

#[tokio::test]
async fn an_expired_retry_becomes_a_dead_letter() {
    let dir = tempfile::tempdir().unwrap();
    let store = SharedStore::new(queued_store(dir.path()));
    let mut receiver = Receiver::start(vec![(503, vec![], "down".into()); 50]).await;
    let mut notifiers: Notifiers = HashMap::new();
    jobwatch::install_crypto_provider();
    notifiers.insert(
        "hook".into(),
        Arc::new(Slot::new(
            Notifier::Webhook(WebhookNotifier {
                url: format!("{}/hook", receiver.url).parse().unwrap(),
                secret: None,
                headers: vec![],
                http: reqwest::Client::new(),
                template: None,
            }),
            None,
            1,
        )),
    );
    let settings = DispatchSettings {
        backoff: Backoff {
            base: Duration::from_millis(50),
            cap: Duration::from_millis(50),
            max_attempts: 0,
            jitter: false,
        },
        max_age: Duration::from_millis(300),
    };
    let dispatcher = Arc::new(Dispatcher::new(
        store.clone(),
        notifiers,
        settings,
        Arc::new(Metrics::new()),
    ));
    let stop = CancellationToken::new();
    let run = tokio::spawn(dispatcher.clone().run(TaskTracker::new(), stop.clone()));
    receiver.next(Duration::from_secs(10)).await;
    let dead = eventually(Duration::from_secs(10), "max_age to expire the row", || {
        let store = store.clone();
        async move {
            let dead = store.call(|s| s.dead()).await.unwrap();
            (!dead.is_empty()).then_some(dead)
        }
    })
    .await;
    assert!(
        dead[0].last_error.as_deref().unwrap().contains("max_age"),
        "{:?}",
        dead[0].last_error
    );
    assert!(dead[0].attempts >= 2);
    stop.cancel();
    run.await.unwrap();
}
