//! The dispatcher: reads due outbox rows and hands each to its notifier,
//! with per-notifier concurrency and pacing, then records the outcome with
//! the shared retry policy (SPEC §5).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use jiff::Timestamp;
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{Message, Notifier};
use crate::metrics::{DeliveryLabels, Metrics};
use crate::ratelimit::RateLimiter;
use crate::retry::{Backoff, Verdict};
use crate::store::{OutboxRow, OutboxState, SharedStore};

/// How often the outbox is looked at when nothing wakes the dispatcher:
/// retries come due without anyone telling us.
const IDLE_POLL: Duration = Duration::from_millis(500);
/// Rows read per look.
const BATCH: usize = 200;

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
    store: SharedStore,
    notifiers: RwLock<Arc<Notifiers>>,
    settings: RwLock<DispatchSettings>,
    wake: Notify,
    in_flight: Mutex<HashSet<i64>>,
    metrics: Arc<Metrics>,
}

impl Dispatcher {
    pub fn new(
        store: SharedStore,
        notifiers: Notifiers,
        settings: DispatchSettings,
        metrics: Arc<Metrics>,
    ) -> Dispatcher {
        Dispatcher {
            store,
            notifiers: RwLock::new(Arc::new(notifiers)),
            settings: RwLock::new(settings),
            wake: Notify::new(),
            in_flight: Mutex::new(HashSet::new()),
            metrics,
        }
    }

    /// Looks at the outbox now (a poller just committed rows).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Swaps in a reloaded set of notifiers; deliveries in flight finish
    /// with the old ones.
    pub fn replace(&self, notifiers: Notifiers, settings: DispatchSettings) {
        *self.notifiers.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(notifiers);
        *self.settings.write().unwrap_or_else(|p| p.into_inner()) = settings;
        self.wake();
    }

    /// Deliveries under way.
    pub fn in_flight(&self) -> usize {
        self.in_flight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len()
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

    /// Starts a delivery for every due row not already under way; returns
    /// how many started.
    pub async fn launch_due(self: &Arc<Self>, tracker: &TaskTracker) -> usize {
        let now = Timestamp::now();
        let rows = match self.store.call(move |s| s.due(now, BATCH)).await {
            Ok(rows) => rows,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the outbox");
                return 0;
            }
        };
        let mut launched = 0;
        for row in rows {
            let fresh = self
                .in_flight
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(row.id);
            if fresh {
                launched += 1;
                let this = Arc::clone(self);
                tracker.spawn(async move { this.deliver(row).await });
            }
        }
        launched
    }

    async fn deliver(self: Arc<Self>, row: OutboxRow) {
        let id = row.id;
        // `row` may be stale. The `due` read that produced it can run just
        // before this row's previous delivery is recorded and dropped from
        // `in_flight`; then it looks fresh here and would go out a second
        // time. Now that `in_flight` holds it, nobody else can change it:
        // read it again and go only if it is still pending and due.
        let now = Timestamp::now();
        match self.store.call(move |s| s.outbox_row(id)).await {
            Ok(Some(current))
                if current.state == OutboxState::Pending && current.next_attempt_at <= now =>
            {
                self.deliver_row(current).await;
            }
            // Delivered, dead or rescheduled meanwhile: nothing to do.
            Ok(_) => {}
            Err(e) => {
                // At least once: rather a possible repeat than a stall.
                tracing::error!(error = %e, "cannot re-read an outbox row; delivering it as read");
                self.deliver_row(row).await;
            }
        }
        self.in_flight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
        // What this delivery freed (a permit, a pause) may let others go.
        self.wake();
    }

    async fn deliver_row(&self, row: OutboxRow) {
        let slot = self
            .notifiers
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&row.notifier)
            .cloned();
        let Some(slot) = slot else {
            let reason = format!("notifier {:?} is no longer configured", row.notifier);
            return self.dead(&row, &reason).await;
        };
        let event = match row.event() {
            Ok(event) => event,
            Err(e) => {
                return self
                    .dead(&row, &format!("unreadable event payload: {e}"))
                    .await;
            }
        };
        // The semaphore is never closed, so acquiring cannot fail.
        let _permit = slot
            .concurrency
            .acquire()
            .await
            .expect("notifier semaphore is never closed");
        slot.limiter.acquire().await;
        let message = Message {
            id: row.event_id.clone(),
            group: None,
            events: vec![event],
        };
        let attempt = slot.notifier.send(&message).await;
        let settings = *self.settings.read().unwrap_or_else(|p| p.into_inner());
        match attempt.verdict {
            Verdict::Success => {
                self.count(&row.notifier, "delivered");
                let id = row.id;
                let now = Timestamp::now();
                if let Err(e) = self.store.call(move |s| s.mark_delivered(id, now)).await {
                    tracing::error!(error = %e, "cannot record a delivery; it will be sent again");
                }
            }
            Verdict::DontRetry(_) => {
                tracing::warn!(notifier = %row.notifier, event_id = %row.event_id, answer = %attempt.answer, "delivery failed permanently; kept as a dead letter");
                self.dead(&row, &attempt.answer).await;
            }
            Verdict::Retry(retryable) => {
                let failures = row.attempts + 1;
                let wait = settings.backoff.delay_for(failures, &retryable);
                if retryable.throttled {
                    // The receiver throttles the notifier, not one message.
                    slot.limiter.pause_until(tokio::time::Instant::now() + wait);
                }
                let now = Timestamp::now();
                let next = now + wait;
                let deadline = row.queued_at + settings.max_age;
                if next > deadline {
                    let reason = format!(
                        "gave up after {} (delivery.max_age); last answer: {}",
                        jiff::SignedDuration::try_from(settings.max_age).unwrap_or_default(),
                        attempt.answer
                    );
                    tracing::warn!(notifier = %row.notifier, event_id = %row.event_id, %reason, "delivery expired");
                    return self.dead(&row, &reason).await;
                }
                tracing::info!(notifier = %row.notifier, event_id = %row.event_id, attempt = failures, wait_ms = wait.as_millis() as u64, answer = %attempt.answer, "delivery failed; will retry");
                self.count(&row.notifier, "retry");
                let id = row.id;
                let answer = attempt.answer;
                if let Err(e) = self
                    .store
                    .call(move |s| s.mark_retry(id, next, &answer))
                    .await
                {
                    tracing::error!(error = %e, "cannot record a retry");
                }
            }
        }
    }

    async fn dead(&self, row: &OutboxRow, reason: &str) {
        self.count(&row.notifier, "dead");
        let (id, reason, now) = (row.id, reason.to_owned(), Timestamp::now());
        if let Err(e) = self
            .store
            .call(move |s| s.mark_dead(id, &reason, now))
            .await
        {
            tracing::error!(error = %e, "cannot record a dead letter");
        }
    }

    fn count(&self, notifier: &str, result: &'static str) {
        self.metrics
            .deliveries
            .get_or_create(&DeliveryLabels {
                notifier: notifier.to_owned(),
                result,
            })
            .inc();
    }
}
