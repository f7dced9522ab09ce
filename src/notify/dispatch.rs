//! The dispatcher: reads due outbox rows and hands each to its notifier,
//! with per-notifier concurrency and pacing, then records the outcome with
//! the shared retry policy (docs/guarantees.md).
//!
//! Built for a burst (a mass failure is thousands of events at once):
//! - it reads where due rows go (id, notifier, group), not their payloads,
//!   in batches after a cursor, into a queue per notifier;
//! - a delivery is spawned only with its notifier's permit in hand, so
//!   there are never more deliveries under way than permits; its rows are
//!   claimed, and their payloads read, right before it sends;
//! - outcomes are recorded in shared transactions: a delivery that ends
//!   while another's outcome is being written has its own written with the
//!   next one, all in one sync of the state file (group commit).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use jiff::Timestamp;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use sha2::{Digest, Sha256};

use super::{GroupInfo, JobTally, Message, Notifier};
use crate::metrics::{DeliveryLabels, Metrics};
use crate::ratelimit::RateLimiter;
use crate::retry::{Backoff, Verdict};
use crate::route::GroupKey;
use crate::storage::{DueRef, OutboxRow, Outcome, Owner, Storage};

/// How often the outbox is looked at when nothing wakes the dispatcher:
/// retries come due without anyone telling us.
const IDLE_POLL: Duration = Duration::from_millis(500);
/// Due rows' addresses read per look.
const BATCH: usize = 500;
/// The queue reads no more once it holds this many (rows of notifiers
/// that are busy or paced wait in the store, not in memory).
const QUEUE_CAP: usize = 10_000;
/// How long a claim keeps other dispatchers off our rows when we neither
/// record nor release them (we died). Our own claims hold until we do,
/// however long a delivery waits for a permit or the rate; in a cluster
/// the lease is `cluster.lease`, renewed by the membership's beat
/// ([`Dispatcher::with_claim_lease`]).
const CLAIM_LEASE: Duration = Duration::from_secs(60);

/// One configured notifier with its limits.
#[derive(Debug)]
pub struct Slot {
    pub notifier: Notifier,
    /// Shared with the other replicas of a cluster (each takes its part).
    pub limiter: Arc<RateLimiter>,
    pub concurrency: Arc<Semaphore>,
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
            limiter: Arc::new(limiter),
            concurrency: Arc::new(Semaphore::new(max_concurrency.max(1))),
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
    /// How long our claims keep others off when we neither record nor
    /// release them.
    claim_lease: Duration,
    notifiers: RwLock<Arc<Notifiers>>,
    settings: RwLock<DispatchSettings>,
    wake: Notify,
    /// Rows launched and not yet settled (for `once` and the shutdown log;
    /// the claims themselves are the storage's).
    in_flight: AtomicUsize,
    queue: Mutex<Queue>,
    recorder: Recorder,
    metrics: Arc<Metrics>,
    /// Cancelled at shutdown: deliveries still waiting for their
    /// notifier's rate or pause give their rows back instead of sending,
    /// so shutdown waits only for what is being sent.
    stop_waiting: CancellationToken,
    /// The last look at the outbox failed: the next failure is not news.
    unreadable: std::sync::atomic::AtomicBool,
}

/// Due rows read and not yet launched, by notifier, oldest first.
#[derive(Debug, Default)]
struct Queue {
    by_notifier: HashMap<String, BTreeMap<i64, DueRef>>,
    len: usize,
    /// Reading goes on after this id; back to 0 once a read reaches the
    /// end, so rows that came due behind it (retries, group windows that
    /// closed) are found on the next pass.
    cursor: i64,
}

impl Queue {
    fn add(&mut self, row: DueRef) {
        let rows = self.by_notifier.entry(row.notifier.clone()).or_default();
        if rows.insert(row.id, row).is_none() {
            self.len += 1;
        }
    }

    /// The oldest queued row of `notifier` and, if it is grouped, every
    /// queued row of its group: one message.
    fn take_next(&mut self, notifier: &str) -> Vec<i64> {
        let Some(rows) = self.by_notifier.get_mut(notifier) else {
            return Vec::new();
        };
        let Some((_, first)) = rows.pop_first() else {
            return Vec::new();
        };
        let mut ids = vec![first.id];
        if let Some(key) = &first.group_key {
            let mates: Vec<i64> = rows
                .values()
                .filter(|r| r.group_key.as_ref() == Some(key))
                .map(|r| r.id)
                .collect();
            for id in &mates {
                rows.remove(id);
            }
            ids.extend(mates);
        }
        if rows.is_empty() {
            self.by_notifier.remove(notifier);
        }
        self.len -= ids.len();
        ids
    }
}

/// Outcomes waiting to be written, and the turn to write them.
#[derive(Debug, Default)]
struct Recorder {
    waiting: Mutex<Vec<Waiting>>,
    turn: tokio::sync::Mutex<()>,
}

#[derive(Debug)]
struct Waiting {
    ids: Vec<i64>,
    outcome: Outcome,
    written: oneshot::Sender<Result<(), String>>,
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
            claim_lease: CLAIM_LEASE,
            notifiers: RwLock::new(Arc::new(notifiers)),
            settings: RwLock::new(settings),
            wake: Notify::new(),
            in_flight: AtomicUsize::new(0),
            queue: Mutex::default(),
            recorder: Recorder::default(),
            metrics,
            stop_waiting: CancellationToken::new(),
            unreadable: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Claims that run out after `lease` unless renewed (a cluster's
    /// members renew theirs at each beat).
    pub fn with_claim_lease(mut self, lease: Duration) -> Dispatcher {
        self.claim_lease = lease;
        self
    }

    /// Whose claims are this dispatcher's.
    pub fn owner(&self) -> &Owner {
        &self.owner
    }

    /// Each notifier's rate limiter, by name (a cluster shares them).
    pub fn limiters(&self) -> Vec<(String, Arc<RateLimiter>)> {
        let notifiers = self.notifiers.read().unwrap_or_else(|p| p.into_inner());
        notifiers
            .iter()
            .map(|(name, slot)| (name.clone(), slot.limiter.clone()))
            .collect()
    }

    /// At shutdown: deliveries not yet sending (waiting for a rate or a
    /// receiver's pause) stop and leave their rows pending; those sending
    /// finish.
    pub fn stop_waiting(&self) {
        self.stop_waiting.cancel();
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

    /// Starts a delivery of due rows for every free permit — rows of one
    /// group (same notifier and group key) leave as one message — reading
    /// more due rows when a notifier with a free permit has none queued;
    /// returns how many deliveries started.
    pub async fn launch_due(self: &Arc<Self>, tracker: &TaskTracker) -> usize {
        let notifiers = Arc::clone(&self.notifiers.read().unwrap_or_else(|p| p.into_inner()));
        let mut launched = self.launch_queued(&notifiers, tracker);
        if self.wants_more(&notifiers) {
            self.refill().await;
            launched += self.launch_queued(&notifiers, tracker);
        }
        launched
    }

    /// Whether a read could give a free permit work: one has nothing
    /// queued, or nothing is queued at all, and the queue has room.
    fn wants_more(&self, notifiers: &Notifiers) -> bool {
        let queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        queue.len == 0
            || (queue.len < QUEUE_CAP
                && notifiers.iter().any(|(name, slot)| {
                    slot.concurrency.available_permits() > 0
                        && !queue.by_notifier.contains_key(name)
                }))
    }

    /// Reads the next due rows after the cursor into the queue.
    async fn refill(&self) {
        let cursor = self.queue.lock().unwrap_or_else(|p| p.into_inner()).cursor;
        let read = self.store.due_refs(Timestamp::now(), cursor, BATCH).await;
        let rows = match read {
            Ok(rows) => {
                if self.unreadable.swap(false, Ordering::Relaxed) {
                    tracing::info!("the outbox reads again");
                }
                rows
            }
            Err(e) => {
                // Once per outage, not twice a second.
                if self.unreadable.swap(true, Ordering::Relaxed) {
                    tracing::debug!(error = %e, "still cannot read the outbox");
                } else {
                    tracing::error!(error = %e, "cannot read the outbox; retrying");
                }
                return;
            }
        };
        let mut queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        queue.cursor = match rows.last() {
            Some(last) if rows.len() == BATCH => last.id,
            _ => 0,
        };
        // A row under way may be read again: its claim is ours, so
        // claiming it again hands nothing out.
        for row in rows {
            queue.add(row);
        }
    }

    /// Launches what the queue holds for every free permit.
    fn launch_queued(self: &Arc<Self>, notifiers: &Notifiers, tracker: &TaskTracker) -> usize {
        let mut queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        let names: Vec<String> = queue.by_notifier.keys().cloned().collect();
        let mut launched = 0;
        for name in names {
            let slot = notifiers.get(&name).cloned();
            loop {
                let permit = match &slot {
                    // Gone from the config: settled as dead letters.
                    None => None,
                    Some(slot) => match Arc::clone(&slot.concurrency).try_acquire_owned() {
                        Ok(permit) => Some(permit),
                        Err(_) => break,
                    },
                };
                let ids = queue.take_next(&name);
                if ids.is_empty() {
                    break;
                }
                self.in_flight.fetch_add(ids.len(), Ordering::SeqCst);
                let this = Arc::clone(self);
                let (name, slot) = (name.clone(), slot.clone());
                tracker.spawn(async move { this.deliver(name, slot, permit, ids).await });
                launched += 1;
            }
        }
        launched
    }

    async fn deliver(
        self: Arc<Self>,
        notifier: String,
        slot: Option<Arc<Slot>>,
        permit: Option<OwnedSemaphorePermit>,
        ids: Vec<i64>,
    ) {
        let n = ids.len();
        // Claiming reads the rows as they are now: one recorded since it
        // was queued is not handed out (a stale read once re-sent a
        // delivered row; see crash.rs).
        let claimed = self
            .store
            .claim(&self.owner, ids, Timestamp::now(), self.claim_lease)
            .await;
        match claimed {
            Ok(rows) if rows.is_empty() => {}
            Ok(rows) => {
                let owed = match slot {
                    Some(slot) => self.deliver_batch(&notifier, slot, permit, rows).await,
                    None => {
                        let reason = format!("notifier {notifier:?} is no longer configured");
                        self.settle_dead(&rows, &reason).await;
                        Vec::new()
                    }
                };
                // What was not recorded (a notifier replaced meanwhile) is
                // owed still: anyone's at its time, ours included.
                if !owed.is_empty() {
                    self.store.release(&self.owner, owed).await;
                }
            }
            Err(e) => tracing::error!(error = %e, "cannot claim outbox rows"),
        }
        self.in_flight.fetch_sub(n, Ordering::SeqCst);
        // What this delivery freed (a permit, a pause) may let others go.
        self.wake();
    }

    /// For a per-job group's key, the parent job's sub-jobs as tracked
    /// now; `None` for other groups, or when the store cannot say (the
    /// digest then counts the message's events, as it can).
    async fn job_tally(&self, key: &str) -> Option<JobTally> {
        let GroupKey::Job {
            project_id, job_id, ..
        } = key.parse::<GroupKey>().ok()?
        else {
            return None;
        };
        match self.store.job_tally(&project_id, &job_id).await {
            Ok(by_status) if !by_status.is_empty() => Some(JobTally {
                sub_jobs: by_status.values().sum(),
                by_status,
            }),
            Ok(_) => None,
            Err(e) => {
                tracing::warn!(error = %e, "cannot count the parent job's sub-jobs; the digest counts the message's events");
                None
            }
        }
    }

    /// Delivers rows of one notifier as one message (one row, or a group);
    /// returns the ids it recorded nothing for.
    async fn deliver_batch(
        &self,
        notifier: &str,
        slot: Arc<Slot>,
        permit: Option<OwnedSemaphorePermit>,
        rows: Vec<OutboxRow>,
    ) -> Vec<i64> {
        let group_key = rows.first().and_then(|r| r.group_key.clone());
        let mut events = Vec::with_capacity(rows.len());
        let mut sendable = Vec::with_capacity(rows.len());
        let mut unreadable = Vec::new();
        for row in rows {
            match row.event() {
                Ok(event) => {
                    events.push(event);
                    sendable.push(row);
                }
                Err(e) => unreadable.push((row, e)),
            }
        }
        for (row, e) in unreadable {
            let reason = format!("unreadable event payload: {e}");
            self.settle_dead(std::slice::from_ref(&row), &reason).await;
        }
        if sendable.is_empty() {
            return Vec::new();
        }
        let message = match &group_key {
            None => Message {
                test: false,
                id: sendable[0].event_id.clone(),
                group: None,
                events,
            },
            Some(key) => {
                let id = group_id(sendable.iter().map(|r| r.event_id.as_str()));
                let job = self.job_tally(key).await;
                Message {
                    test: false,
                    group: Some(GroupInfo {
                        job,
                        id: id.clone(),
                        key: key.clone(),
                        count: events.len(),
                    }),
                    id,
                    events,
                }
            }
        };
        tokio::select! {
            biased;
            _ = self.stop_waiting.cancelled() => {
                return sendable.iter().map(|r| r.id).collect();
            }
            _ = slot.limiter.acquire() => {}
        }
        // A reload may have removed or replaced this notifier while we
        // waited for the rate: send only with the one configured now. The
        // rows stay pending; the next look settles them with what is
        // configured then (a dead letter if nothing).
        let configured = self
            .notifiers
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(notifier)
            .is_some_and(|now| Arc::ptr_eq(now, &slot));
        if !configured {
            return sendable.iter().map(|r| r.id).collect();
        }
        let attempt = slot.notifier.send(&message).await;
        // Sent: the next delivery may go while this one's outcome is written.
        drop(permit);
        let settings = *self.settings.read().unwrap_or_else(|p| p.into_inner());
        let rows = sendable;
        let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
        match attempt.verdict {
            Verdict::Success => {
                self.count(notifier, "delivered", rows.len());
                let outcome = Outcome::Delivered {
                    at: Timestamp::now(),
                };
                if let Err(e) = self.record(ids, outcome).await {
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
                    self.settle_dead(&rows, &reason).await;
                    return Vec::new();
                }
                tracing::info!(notifier = %notifier, message_id = %message.id, attempt = failures, wait_ms = wait.as_millis() as u64, answer = %attempt.answer, "delivery failed; will retry");
                self.count(notifier, "retry", rows.len());
                let outcome = Outcome::Retry {
                    at: next,
                    error: attempt.answer,
                    tried: now,
                };
                if let Err(e) = self.record(ids, outcome).await {
                    tracing::error!(error = %e, "cannot record a retry");
                }
            }
        }
        Vec::new()
    }

    /// Records an outcome, in one transaction with whatever other outcomes
    /// are waiting meanwhile: whoever gets the turn writes everything
    /// waiting, so a burst costs one sync of the file per turn, not per
    /// delivery. Returns once this outcome is written (or failed to be).
    async fn record(&self, ids: Vec<i64>, outcome: Outcome) -> Result<(), String> {
        let (written, result) = oneshot::channel();
        self.recorder
            .waiting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Waiting {
                ids,
                outcome,
                written,
            });
        {
            let _turn = self.recorder.turn.lock().await;
            let waiting = std::mem::take(
                &mut *self
                    .recorder
                    .waiting
                    .lock()
                    .unwrap_or_else(|p| p.into_inner()),
            );
            // Empty when an earlier turn wrote ours with its own.
            if !waiting.is_empty() {
                let (outcomes, senders): (Vec<_>, Vec<_>) = waiting
                    .into_iter()
                    .map(|w| ((w.ids, w.outcome), w.written))
                    .unzip();
                let result = self
                    .store
                    .record_many(&self.owner, outcomes)
                    .await
                    .map_err(|e| e.to_string());
                for sender in senders {
                    let _ = sender.send(result.clone());
                }
            }
        }
        result
            .await
            .unwrap_or_else(|_| Err("the write of this outcome was abandoned".to_owned()))
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
        if let Err(e) = self.record(vec![row.id], outcome).await {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A group leaves whole, whatever lies between its rows; a row of no
    /// group alone; each notifier's rows oldest first, apart from others'.
    #[test]
    fn the_queue_hands_out_groups_whole_and_rows_oldest_first() {
        let mut queue = Queue::default();
        for (id, notifier, key) in [
            (1, "a", Some("g")),
            (2, "a", None),
            (3, "b", Some("g")),
            (4, "a", Some("g")),
            (5, "a", None),
        ] {
            queue.add(DueRef {
                id,
                notifier: notifier.into(),
                group_key: key.map(str::to_owned),
            });
        }
        queue.add(DueRef {
            id: 2,
            notifier: "a".into(),
            group_key: None,
        });
        assert_eq!(queue.len, 5, "a row read twice is queued once");
        let a: Vec<Vec<i64>> = std::iter::from_fn(|| Some(queue.take_next("a")))
            .take_while(|ids| !ids.is_empty())
            .collect();
        assert_eq!(a, [vec![1, 4], vec![2], vec![5]]);
        assert_eq!(queue.take_next("b"), [3]);
        assert_eq!(queue.len, 0);
        assert!(queue.by_notifier.is_empty());
    }
}
