//! The dispatcher: reads due outbox rows and hands each to its notifier,
//! with per-notifier concurrency and pacing, then records the outcome with
//! the shared retry policy (SPEC §5).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use jiff::Timestamp;
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use sha2::{Digest, Sha256};

use super::{GroupInfo, Message, Notifier};
use crate::metrics::{DeliveryLabels, Metrics};
use crate::ratelimit::RateLimiter;
use crate::retry::{Backoff, Verdict};
use crate::route;
use crate::storage::{OutboxRow, Outcome, Owner, Storage};

/// How often the outbox is looked at when nothing wakes the dispatcher:
/// retries come due without anyone telling us.
const IDLE_POLL: Duration = Duration::from_millis(500);
/// Rows read per look.
const BATCH: usize = 200;
/// How long a claim keeps other dispatchers off our rows when we neither
/// record nor release them (we died). Our own claims hold until we do,
/// however long a delivery waits for a permit or the rate; a replicated
/// backend whose deliveries wait longer than this would renew them.
const CLAIM_LEASE: Duration = Duration::from_secs(60);

/// One configured notifier with its limits.
#[derive(Debug)]
pub struct Slot {
    pub notifier: Notifier,
    pub limiter: RateLimiter,
    pub concurrency: Semaphore,
}

impl Slot {
    pub fn new(notifier: Notifier, rate: Option<(u32, Duration)>, max_concurrency: usize) -> Slot {
        let limiter = match rate {
            Some((n, period)) => RateLimiter::new(n, period),
            // Unlimited in practice: a microsecond apart.
            None => RateLimiter::new(1_000_000, Duration::from_secs(1)),
        };
        Slot {
            notifier,
            limiter,
            concurrency: Semaphore::new(max_concurrency.max(1)),
        }
    }
}

/// The notifiers by name; replaced whole on reload.
pub type Notifiers = HashMap<String, Arc<Slot>>;

#[derive(Debug, Clone, Copy)]
pub struct DispatchSettings {
    pub backoff: Backoff,
    /// Retryable failures become dead letters this long after queuing.
    pub max_age: Duration,
}

#[derive(Debug)]
pub struct Dispatcher {
    store: Storage,
    /// Whose claims on outbox rows are ours.
    owner: Owner,
    notifiers: RwLock<Arc<Notifiers>>,
    settings: RwLock<DispatchSettings>,
    wake: Notify,
    /// Rows claimed and not yet settled (for `once` and the shutdown log;
    /// the claims themselves are the storage's).
    in_flight: AtomicUsize,
    metrics: Arc<Metrics>,
}

impl Dispatcher {
    pub fn new(
        store: Storage,
        notifiers: Notifiers,
        settings: DispatchSettings,
        metrics: Arc<Metrics>,
    ) -> Dispatcher {
        Dispatcher {
            store,
            owner: Owner::unique(),
            notifiers: RwLock::new(Arc::new(notifiers)),
            settings: RwLock::new(settings),
            wake: Notify::new(),
            in_flight: AtomicUsize::new(0),
            metrics,
        }
    }

    /// Looks at the outbox now (a poller just committed rows).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Swaps in a reloaded set of notifiers; deliveries already sending
    /// finish with the old ones, those still waiting for a permit or the
    /// rate go with the new set (or die if their notifier is gone).
    pub fn replace(&self, notifiers: Notifiers, settings: DispatchSettings) {
        *self.notifiers.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(notifiers);
        *self.settings.write().unwrap_or_else(|p| p.into_inner()) = settings;
        self.wake();
    }

    /// Deliveries under way.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }

    /// Runs until `shutdown`; each delivery is a task on `tracker`, so the
    /// caller can give them `shutdown_grace` to finish.
    pub async fn run(self: Arc<Self>, tracker: TaskTracker, shutdown: CancellationToken) {
        while !shutdown.is_cancelled() {
            self.launch_due(&tracker).await;
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(IDLE_POLL) => {}
                _ = shutdown.cancelled() => {}
            }
        }
    }

    /// Claims every due row not already under way and starts its delivery
    /// — rows of one group (same notifier and group key) leave as one
    /// message — and returns how many deliveries started.
    pub async fn launch_due(self: &Arc<Self>, tracker: &TaskTracker) -> usize {
        let now = Timestamp::now();
        let claimed = self
            .store
            .claim_due(&self.owner, now, CLAIM_LEASE, BATCH)
            .await;
        let rows = match claimed {
            Ok(rows) => rows,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the outbox");
                return 0;
            }
        };
        self.in_flight.fetch_add(rows.len(), Ordering::SeqCst);
        let batches = route::batches(rows, |row| {
            row.group_key
                .as_deref()
                .map(|key| (row.notifier.as_str(), key))
        });
        let launched = batches.len();
        for batch in batches {
            let this = Arc::clone(self);
            tracker.spawn(async move { this.deliver(batch).await });
        }
        launched
    }

    async fn deliver(self: Arc<Self>, rows: Vec<OutboxRow>) {
        // The rows are current: claiming read them and claimed them in one
        // step, so none was recorded since (a stale read once re-sent a
        // delivered row; see crash.rs).
        let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
        self.deliver_batch(rows).await;
        // What was not recorded (a notifier replaced meanwhile) is owed
        // still: anyone's at its time, ours included.
        let n = ids.len();
        self.store.release(&self.owner, ids).await;
        self.in_flight.fetch_sub(n, Ordering::SeqCst);
        // What this delivery freed (a permit, a pause) may let others go.
        self.wake();
    }

    /// Delivers rows of one notifier as one message (one row, or a group).
    async fn deliver_batch(&self, rows: Vec<OutboxRow>) {
        let Some(first) = rows.first() else { return };
        let notifier = first.notifier.clone();
        let group_key = first.group_key.clone();
        let slot = self
            .notifiers
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&notifier)
            .cloned();
        let Some(slot) = slot else {
            let reason = format!("notifier {notifier:?} is no longer configured");
            return self.settle_dead(&rows, &reason).await;
        };
        let mut events = Vec::with_capacity(rows.len());
        let mut sendable = Vec::with_capacity(rows.len());
        for row in rows {
            match row.event() {
                Ok(event) => {
                    events.push(event);
                    sendable.push(row);
                }
                Err(e) => {
                    self.settle_dead(
                        std::slice::from_ref(&row),
                        &format!("unreadable event payload: {e}"),
                    )
                    .await
                }
            }
        }
        if sendable.is_empty() {
            return;
        }
        let message = match &group_key {
            None => Message {
                id: sendable[0].event_id.clone(),
                group: None,
                events,
            },
            Some(key) => {
                let id = group_id(sendable.iter().map(|r| r.event_id.as_str()));
                Message {
                    group: Some(GroupInfo {
                        id: id.clone(),
                        key: key.clone(),
                        count: events.len(),
                    }),
                    id,
                    events,
                }
            }
        };
        // The semaphore is never closed, so acquiring cannot fail.
        let _permit = slot
            .concurrency
            .acquire()
            .await
            .expect("notifier semaphore is never closed");
        slot.limiter.acquire().await;
        // A reload may have removed or replaced this notifier while we
        // waited for a permit or the rate: send only with the one
        // configured now. The rows stay pending; the next look settles
        // them with what is configured then (a dead letter if nothing).
        let configured = self
            .notifiers
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&notifier)
            .is_some_and(|now| Arc::ptr_eq(now, &slot));
        if !configured {
            return;
        }
        let attempt = slot.notifier.send(&message).await;
        let settings = *self.settings.read().unwrap_or_else(|p| p.into_inner());
        let rows = sendable;
        match attempt.verdict {
            Verdict::Success => {
                self.count(&notifier, "delivered", rows.len());
                let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
                let outcome = Outcome::Delivered {
                    at: Timestamp::now(),
                };
                if let Err(e) = self.store.record(&self.owner, ids, outcome).await {
                    tracing::error!(error = %e, "cannot record a delivery; it will be sent again");
                }
            }
            Verdict::DontRetry(_) => {
                tracing::warn!(notifier = %notifier, message_id = %message.id, events = rows.len(), answer = %attempt.answer, "delivery failed permanently; kept as a dead letter");
                self.settle_dead(&rows, &attempt.answer).await;
            }
            Verdict::Retry(retryable) => {
                let failures = rows.iter().map(|r| r.attempts).max().unwrap_or(0) + 1;
                let wait = settings.backoff.delay_for(failures, &retryable);
                if retryable.throttled {
                    // The receiver throttles the notifier, not one message.
                    slot.limiter.pause_until(tokio::time::Instant::now() + wait);
                }
                let now = Timestamp::now();
                let next = now + wait;
                let queued_at = rows.iter().map(|r| r.queued_at).min().unwrap_or(now);
                if next > queued_at + settings.max_age {
                    let reason = format!(
                        "gave up after {:#} (delivery.max_age); last answer: {}",
                        jiff::SignedDuration::try_from(settings.max_age).unwrap_or_default(),
                        attempt.answer
                    );
                    tracing::warn!(notifier = %notifier, message_id = %message.id, %reason, "delivery expired");
                    return self.settle_dead(&rows, &reason).await;
                }
                tracing::info!(notifier = %notifier, message_id = %message.id, attempt = failures, wait_ms = wait.as_millis() as u64, answer = %attempt.answer, "delivery failed; will retry");
                self.count(&notifier, "retry", rows.len());
                let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
                let outcome = Outcome::Retry {
                    at: next,
                    error: attempt.answer,
                };
                if let Err(e) = self.store.record(&self.owner, ids, outcome).await {
                    tracing::error!(error = %e, "cannot record a retry");
                }
            }
        }
    }

    async fn settle_dead(&self, rows: &[OutboxRow], reason: &str) {
        for row in rows {
            self.dead(row, reason).await;
        }
    }

    async fn dead(&self, row: &OutboxRow, reason: &str) {
        self.count(&row.notifier, "dead", 1);
        let outcome = Outcome::Dead {
            at: Timestamp::now(),
            reason: reason.to_owned(),
        };
        if let Err(e) = self.store.record(&self.owner, vec![row.id], outcome).await {
            tracing::error!(error = %e, "cannot record a dead letter");
        }
    }

    fn count(&self, notifier: &str, result: &'static str, n: usize) {
        self.metrics
            .deliveries
            .get_or_create(&DeliveryLabels {
                notifier: notifier.to_owned(),
                result,
            })
            .inc_by(n as u64);
    }
}

/// A group's message id: a hash of its members, so a retry of the same
/// group carries the same id (`webhook-id`) and receivers can de-duplicate.
fn group_id<'a>(event_ids: impl Iterator<Item = &'a str>) -> String {
    let mut ids: Vec<&str> = event_ids.collect();
    ids.sort_unstable();
    let mut hash = Sha256::new();
    for id in ids {
        hash.update(id.as_bytes());
        hash.update(b"\n");
    }
    format!("grp_{}", &hex::encode(hash.finalize())[..32])
}
