//! Grouping and pacing in the dispatcher: a route's window gathers events
//! into one message per notifier, durably; a notifier's rate holds even
//! under a burst.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use jobwatch::cloud::model::SubJob;
use jobwatch::metrics::Metrics;
use jobwatch::notify::Notifier;
use jobwatch::notify::chat::ChatNotifier;
use jobwatch::notify::dispatch::{DispatchSettings, Dispatcher, Notifiers, Slot};
use jobwatch::notify::kinds::dingtalk::DingTalk;
use jobwatch::notify::kinds::webhook::WebhookNotifier;
use jobwatch::retry::Backoff;
use jobwatch::route::Grouping;
use jobwatch::store::{Delivery, SharedStore, Store};
use jobwatch::watch::Target;
use jobwatch::watch::diff::{DiffSettings, Scan, TargetSnapshot, diff};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::support::{Receiver, eventually};

fn job(id: usize, status: &str) -> SubJob {
    serde_json::from_value(json!({
        "id": format!("sub-{id:03}"), "job_type": "CREATE_SERVER", "status": status,
        "job_id": "8f2d6a3b-parent", "error_code": if status == "FAILED" { json!("WKS.00129901") } else { json!(null) },
        "job_resource_info": {"resource_name": format!("APS-20261129093902-{id:010}")},
        "begin_time": "2026-11-29T10:40:43.858Z"
    }))
    .unwrap()
}

/// Commits `n` RUNNING → FAILED transitions of one parent job, each routed
/// to every notifier in `notifiers` with `group_key` and `window`.
fn commit_failures(
    store: &mut Store,
    n: usize,
    notifiers: &[&str],
    group: Option<(&str, Duration)>,
) {
    let target = Target::new("p1", "CREATE_SERVER");
    let now = jiff::Timestamp::now();
    let settings = DiffSettings::default();
    let running: Vec<SubJob> = (0..n).map(|i| job(i, "RUNNING")).collect();
    let base = diff(
        &target,
        &TargetSnapshot::default(),
        &Scan::complete(running),
        now,
        &settings,
    );
    store.commit_cycle(&target, &base, &[], now).unwrap();
    let before = store.load_snapshot(&target).unwrap();
    let failed: Vec<SubJob> = (0..n).map(|i| job(i, "FAILED")).collect();
    let outcome = diff(&target, &before, &Scan::complete(failed), now, &settings);
    assert_eq!(outcome.events.len(), n);
    let grouping = group.map(|(key, window)| Grouping {
        key: key.parse().expect("every key reads"),
        window,
    });
    let grouping = grouping.as_ref();
    let deliveries: Vec<Delivery<'_>> = outcome
        .events
        .iter()
        .flat_map(|event| {
            notifiers.iter().map(move |notifier| Delivery {
                event,
                notifier,
                group: grouping,
            })
        })
        .collect();
    store
        .commit_cycle(&target, &outcome, &deliveries, now)
        .unwrap();
}

fn webhook(url: &str) -> Notifier {
    Notifier::new(WebhookNotifier {
        url: url.parse().unwrap(),
        secret: None,
        headers: vec![],
        http: reqwest::Client::new(),
        template: None,
    })
}

fn settings() -> DispatchSettings {
    DispatchSettings {
        backoff: Backoff::DELIVERY.without_jitter(),
        max_age: Duration::from_secs(3600),
    }
}

#[tokio::test]
async fn fifty_failures_in_a_window_become_one_message_per_notifier_even_across_a_crash() {
    jobwatch::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let mut a = Receiver::start(vec![]).await;
    let mut b = Receiver::start(vec![]).await;
    {
        // The daemon commits and dies inside the window: only the file is left.
        let mut store = Store::open(&path).unwrap();
        commit_failures(
            &mut store,
            50,
            &["a", "b"],
            Some(("routes[0]/p1/8f2d6a3b-parent", Duration::from_millis(800))),
        );
    }
    let store = SharedStore::new(Store::open(&path).unwrap());
    let mut notifiers: Notifiers = HashMap::new();
    notifiers.insert("a".into(), Arc::new(Slot::new(webhook(&a.url), None, 4)));
    notifiers.insert("b".into(), Arc::new(Slot::new(webhook(&b.url), None, 4)));
    let dispatcher = Arc::new(Dispatcher::new(
        store.clone().into(),
        notifiers,
        settings(),
        Arc::new(Metrics::new()),
    ));
    let stop = CancellationToken::new();
    let run = tokio::spawn(dispatcher.clone().run(TaskTracker::new(), stop.clone()));

    for receiver in [&mut a, &mut b] {
        let got = receiver.next(Duration::from_secs(10)).await;
        let body = got.json();
        assert_eq!(body["events"].as_array().unwrap().len(), 50);
        assert_eq!(body["group"]["count"], 50);
        assert_eq!(
            got.header("webhook-id").unwrap(),
            body["group"]["id"].as_str().unwrap()
        );
    }
    eventually(Duration::from_secs(10), "both groups delivered", || {
        let store = store.clone();
        async move { (store.call(|s| s.pending_count()).await.unwrap() == 0).then_some(()) }
    })
    .await;
    // One message each, not fifty.
    assert!(a.rx.try_recv().is_err() && b.rx.try_recv().is_err());
    stop.cancel();
    run.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_dingtalk_burst_never_exceeds_twenty_a_minute_and_drops_nothing() {
    jobwatch::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path().join("state.db")).unwrap();
    commit_failures(&mut store, 30, &["ding"], None);
    let store = SharedStore::new(store);
    let ok = (200, vec![], r#"{"errcode":0,"errmsg":"ok"}"#.to_owned());
    let mut receiver = Receiver::start(vec![ok; 30]).await;
    let ding = Notifier::new(ChatNotifier {
        url: format!("{}/robot/send?access_token=t0k3n", receiver.url)
            .parse()
            .unwrap(),
        secret: None,
        http: reqwest::Client::new(),
        tz: jiff::tz::TimeZone::UTC,
        template: None,
        kind: DingTalk,
    });
    use jobwatch::notify::kind::Kind;
    let rate = jobwatch::notify::kinds::dingtalk::Settings::DEFAULT_RATE
        .map(|r| (r.count, r.per))
        .expect("DingTalk has a documented limit");
    assert_eq!(rate, (20, Duration::from_secs(60)));
    let mut notifiers: Notifiers = HashMap::new();
    notifiers.insert("ding".into(), Arc::new(Slot::new(ding, Some(rate), 1)));
    let dispatcher = Arc::new(Dispatcher::new(
        store.clone().into(),
        notifiers,
        settings(),
        Arc::new(Metrics::new()),
    ));
    let stop = CancellationToken::new();
    let run = tokio::spawn(dispatcher.clone().run(TaskTracker::new(), stop.clone()));

    let start = tokio::time::Instant::now();
    let mut at = Vec::new();
    for _ in 0..30 {
        // The receiver answers DingTalk's success body.
        let got = receiver.next(Duration::from_secs(600)).await;
        assert_eq!(got.json()["msgtype"], "markdown");
        at.push(tokio::time::Instant::now() - start);
    }
    for (i, t) in at.iter().enumerate() {
        let in_a_minute = at[i..]
            .iter()
            .filter(|u| **u < *t + Duration::from_secs(60))
            .count();
        assert!(
            in_a_minute <= 20,
            "{in_a_minute} messages within a minute from {t:?}"
        );
    }
    // Nothing dropped: every row delivered, none dead.
    eventually(Duration::from_secs(60), "all 30 rows delivered", || {
        let store = store.clone();
        async move {
            let (pending, dead) = store
                .call(|s| (s.pending_count().unwrap(), s.dead_count().unwrap()))
                .await;
            assert_eq!(dead, 0);
            (pending == 0).then_some(())
        }
    })
    .await;
    stop.cancel();
    run.await.unwrap();
}
