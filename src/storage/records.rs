//! The records the engine and its storage backends exchange: outbox rows,
//! targets, a cycle to commit, claims and outcomes. A backend builds on
//! these; the [`super::Storage`] enum above the backends dispatches to one.

use std::collections::BTreeMap;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::route::Routed;
use crate::silence::Hold;
use crate::watch::{DiffOutcome, Event, Target};

/// What [`Storage::commit_cycle`] wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CycleCommit {
    /// New outbox rows.
    pub inserted: usize,
    /// Deliveries already in the outbox (same event id and notifier).
    pub duplicates: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutboxState {
    Pending,
    Delivered,
    Dead,
}

impl OutboxState {
    pub fn as_str(self) -> &'static str {
        match self {
            OutboxState::Pending => "pending",
            OutboxState::Delivered => "delivered",
            OutboxState::Dead => "dead",
        }
    }
}

/// Where a due outbox row goes, without its payload: what the dispatcher
/// plans deliveries by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueRef {
    pub id: i64,
    pub notifier: String,
    /// The group's key as stored; rows sharing it (and the notifier) leave
    /// as one message.
    pub group_key: Option<String>,
}

/// One outbox row as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxRow {
    pub id: i64,
    pub event_id: String,
    pub notifier: String,
    /// The group's key as stored ([`crate::route::GroupKey`]'s text).
    pub group_key: Option<String>,
    pub target: Target,
    pub sub_job_id: String,
    /// The event's kind as stored (text, so a row of a kind this version
    /// does not know still lists).
    pub kind: String,
    /// The event's JSON (docs/events.md); see [`OutboxRow::event`].
    pub payload_json: String,
    pub state: OutboxState,
    /// Attempts that ended: each recorded outcome counts one.
    pub attempts: u32,
    pub created_at: Timestamp,
    /// When it last entered `pending` (creation or a requeue): the start
    /// of its `delivery.max_age`.
    pub queued_at: Timestamp,
    pub next_attempt_at: Timestamp,
    pub last_error: Option<String>,
    /// When it was delivered or declared dead.
    pub finished_at: Option<Timestamp>,
}

impl OutboxRow {
    /// The event to deliver. A payload that does not read is the
    /// dispatcher's to dead-letter; it does not stop other rows.
    pub fn event(&self) -> Result<Event, serde_json::Error> {
        serde_json::from_str(&self.payload_json)
    }
}

/// One target as `state show` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetSummary {
    pub target: Target,
    pub baselined: bool,
    pub updated_at: Timestamp,
    /// Sub-jobs in the snapshot.
    pub tracked: usize,
    /// Of those, in an active status.
    pub active: usize,
}

/// A target's snapshot counted by status, as both backends' `targets`
/// query returns it: (target, baselined, updated_at, status, sub-jobs).
pub(crate) type TargetCount = (Target, bool, Timestamp, Option<String>, usize);

/// Folds [`TargetCount`] rows (grouped by target, in order) into one
/// summary a target. Counted by status in SQL and classified here, so
/// "active" has one definition: `Status::is_active`.
pub(crate) fn summarize(rows: impl IntoIterator<Item = TargetCount>) -> Vec<TargetSummary> {
    let mut out: Vec<TargetSummary> = Vec::new();
    for (target, baselined, updated_at, status, count) in rows {
        if out.last().is_none_or(|last| last.target != target) {
            out.push(TargetSummary {
                target,
                baselined,
                updated_at,
                tracked: 0,
                active: 0,
            });
        }
        // Just pushed if it was missing.
        let summary = out.last_mut().expect("a summary for this target");
        summary.tracked += count;
        if status.is_some_and(|s| crate::cloud::model::Status::from(s).is_active()) {
            summary.active += count;
        }
    }
    out
}

/// The outbox backlog.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OutboxCounts {
    pub pending: u64,
    pub dead: u64,
}

/// The pending rows by why they wait: `untried` have never been sent
/// (their group window is open, or they are due now), `retrying` failed
/// and wait for their next attempt; each with the earliest next attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PendingOutlook {
    pub untried: u64,
    pub untried_next: Option<Timestamp>,
    pub retrying: u64,
    pub retrying_next: Option<Timestamp>,
}

/// One notifier's pending rows: how many, and the earliest next attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NotifierBacklog {
    pub notifier: String,
    pub pending: u64,
    pub next_attempt_at: Option<Timestamp>,
}

/// The right to write a target's state in a commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fence {
    /// This process is the only writer: SQLite's state file belongs to one
    /// daemon (its file lock). On PostgreSQL, `once` and `state` commands
    /// outside a cluster: refused while a replica holds the target's lease.
    Sole,
    /// A cluster member's lease on the target: the commit is refused unless
    /// the lease is still this member's with this generation, checked in
    /// the commit's transaction.
    Lease(Lease),
}

/// A target's lease as its holder knows it: who, and which grant. Every
/// change of holder makes a new generation, so a holder that paused past
/// its lease, was replaced, and woke up cannot write with the old one.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Lease {
    pub member: std::sync::Arc<str>,
    pub generation: i64,
}

/// One cycle of one target to commit, atomically: the diff's snapshot
/// changes and an outbox row per routed event.
#[derive(Debug, Clone)]
pub struct CycleWrite {
    pub target: Target,
    pub outcome: DiffOutcome,
    /// Each delivery: the index of its event in `outcome.events`, and where
    /// the router sent it.
    pub routed: Vec<(usize, Routed)>,
    pub now: Timestamp,
    pub fence: Fence,
}

/// Who holds a claim on outbox rows: one dispatcher.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Owner(String);

impl Owner {
    /// A name no other dispatcher has, now or after a restart: its claims
    /// are its own, and a restarted process cannot mistake a dead one's
    /// claims for its own.
    pub fn unique() -> Owner {
        Owner(format!(
            "{}-{:016x}",
            std::process::id(),
            rand::random::<u64>()
        ))
    }

    /// A cluster member's dispatcher: its claims carry the member's id.
    pub fn named(name: impl Into<String>) -> Owner {
        Owner(name.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A time as the stores keep it: fixed-width UTC text with nanoseconds, so
/// text order is time order and a value reads back exactly (`since` feeds
/// event ids).
pub(crate) fn time_text(t: Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%S%.9fZ").to_string()
}

/// How a delivery attempt of claimed rows ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Delivered {
        at: Timestamp,
    },
    /// A retryable failure: the next attempt not before `at` (from
    /// [`crate::retry::Backoff::DELIVERY`] or the receiver's `Retry-After`).
    Retry {
        at: Timestamp,
        error: String,
        /// When the attempt that failed was made (the history's time).
        tried: Timestamp,
    },
    /// A permanent failure or `max_age` reached: a dead letter, with the
    /// receiver's words kept.
    Dead {
        at: Timestamp,
        reason: String,
    },
}

impl Outcome {
    /// When the attempt was made, its verdict as the history names it,
    /// the receiver's answer and the next attempt.
    pub(crate) fn attempt(&self) -> (Timestamp, &'static str, Option<&str>, Option<Timestamp>) {
        match self {
            Outcome::Delivered { at } => (*at, "delivered", None, None),
            Outcome::Retry { at, error, tried } => (*tried, "retry", Some(error), Some(*at)),
            Outcome::Dead { at, reason } => (*at, "dead", Some(reason), None),
        }
    }
}

/// Where one route sent one event, as the history keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteRecord {
    pub route: usize,
    pub notifier: String,
    /// The group it joined (`routes[N]`, `routes[N]/PROJECT/JOB`).
    #[serde(default)]
    pub group_key: Option<String>,
    /// What held it back, if anything: then it was never sent.
    #[serde(default)]
    pub held: Option<Hold>,
}

impl CycleWrite {
    /// The routes each event of this cycle took, by event index: what the
    /// history records beside the event (held ones included).
    pub(crate) fn route_records(&self) -> Vec<Vec<RouteRecord>> {
        let mut out = vec![Vec::new(); self.outcome.events.len()];
        for (i, r) in &self.routed {
            if let Some(list) = out.get_mut(*i) {
                list.push(RouteRecord {
                    route: r.route,
                    notifier: r.notifier.clone(),
                    group_key: r.group.as_ref().map(|g| g.key.to_string()),
                    held: r.held.clone(),
                });
            }
        }
        out
    }
}

/// Which events `history` returns: every filter given must match; the
/// newest `limit`, listed oldest first (events of one cycle, observed at
/// one instant, by event id: the same order on every backend).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HistoryQuery {
    pub sub_job_id: Option<String>,
    /// A parent job: its sub-jobs' events (and a sub-job's own id when the
    /// API gave it no parent).
    pub job_id: Option<String>,
    pub since: Option<Timestamp>,
    pub limit: usize,
}

/// One delivery attempt, or an operator's requeue, as the history keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AttemptRecord {
    pub at: Timestamp,
    /// `delivered`, `retry`, `dead` or `requeued`.
    pub verdict: String,
    /// The receiver's answer (or why it was given up).
    pub answer: Option<String>,
    /// For `retry`: when the next attempt was due.
    pub next_at: Option<Timestamp>,
}

/// One event's delivery to one notifier: its outbox row's state (absent
/// once the row is pruned) and every attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeliveryRecord {
    pub outbox_id: i64,
    pub notifier: String,
    /// `pending`, `delivered` or `dead`; `None` once the row was pruned
    /// (the attempts still say how it went).
    pub state: Option<&'static str>,
    pub attempts: Vec<AttemptRecord>,
}

/// One event in the history: what was observed, where the routes sent it
/// (and what held it), and how each delivery went.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HistoryEntry {
    pub event: Event,
    pub routes: Vec<RouteRecord>,
    pub deliveries: Vec<DeliveryRecord>,
}

impl HistoryEntry {
    /// `changed RUNNING → FAILED`.
    pub fn transition(&self) -> String {
        format!("{} {}", self.event.kind, transition_text(&self.event))
    }

    /// One line per notifier the event went to (or was held from): its
    /// name and how it went. An event no route took is one line.
    pub fn outcomes(&self) -> Vec<(String, String)> {
        if self.routes.is_empty() {
            return vec![(String::new(), "no route takes it".to_owned())];
        }
        self.routes
            .iter()
            .map(|r| {
                if let Some(held) = &r.held {
                    return (r.notifier.clone(), format!("held by {held}; not sent"));
                }
                let delivery = self.deliveries.iter().find(|d| d.notifier == r.notifier);
                let text = match delivery {
                    None => "not in the outbox".to_owned(),
                    Some(d) => d.summary(),
                };
                (r.notifier.clone(), text)
            })
            .collect()
    }
}

impl DeliveryRecord {
    /// How it went, in a few words: `delivered at …`, `retrying after 2
    /// attempt(s): HTTP 503`, `dead: HTTP 400 …`.
    pub fn summary(&self) -> String {
        let tries = self
            .attempts
            .iter()
            .filter(|a| a.verdict != "requeued")
            .count();
        let last = self.attempts.last();
        let answer = last
            .and_then(|a| a.answer.as_deref())
            .map(|a| format!(": {a}"))
            .unwrap_or_default();
        match (self.state, last) {
            (Some("pending"), None) => "pending".to_owned(),
            (Some("pending"), Some(a)) if a.verdict == "requeued" => "requeued, pending".to_owned(),
            (Some("pending"), Some(_)) => format!("retrying after {tries} attempt(s){answer}"),
            (_, Some(a)) if a.verdict == "delivered" => {
                format!("delivered at {} (attempt {tries})", a.at)
            }
            (_, Some(a)) if a.verdict == "dead" => format!("dead{answer}"),
            (Some(state), _) => state.to_owned(),
            (None, _) => "pruned".to_owned(),
        }
    }
}

/// `RUNNING → FAILED` (`–` for no status).
pub fn transition_text(e: &Event) -> String {
    let status = |s: &Option<crate::cloud::model::Status>| {
        s.as_ref().map_or("–".to_owned(), |s| s.as_str().to_owned())
    };
    format!("{} → {}", status(&e.from), status(&e.to))
}

/// Assembles history entries from a backend's rows: events (with their
/// routes' JSON), outbox rows (id, event id, notifier, state) and
/// attempts (outbox id, event id, notifier, the attempt), each in order.
pub(crate) fn assemble_history(
    events: Vec<(String, String)>,
    outbox: Vec<(i64, String, String, String)>,
    attempts: Vec<(i64, String, String, AttemptRecord)>,
) -> Result<Vec<HistoryEntry>, String> {
    use std::collections::HashMap;
    // Each event's deliveries by outbox id, built in one pass over each
    // list (a long history is not a product of its lengths).
    let mut by_event: HashMap<String, BTreeMap<i64, DeliveryRecord>> = HashMap::new();
    for (id, event_id, notifier, state) in outbox {
        let state = match state.as_str() {
            "pending" => OutboxState::Pending,
            "delivered" => OutboxState::Delivered,
            _ => OutboxState::Dead,
        };
        by_event.entry(event_id).or_default().insert(
            id,
            DeliveryRecord {
                outbox_id: id,
                notifier,
                state: Some(state.as_str()),
                attempts: Vec::new(),
            },
        );
    }
    for (outbox_id, event_id, notifier, attempt) in attempts {
        by_event
            .entry(event_id)
            .or_default()
            .entry(outbox_id)
            .or_insert_with(|| DeliveryRecord {
                outbox_id,
                notifier,
                // The row was pruned; its attempts say how it went.
                state: None,
                attempts: Vec::new(),
            })
            .attempts
            .push(attempt);
    }
    let mut out = Vec::with_capacity(events.len());
    for (payload, routes) in events {
        let event: Event = serde_json::from_str(&payload)
            .map_err(|e| format!("a stored event does not read: {e}"))?;
        let routes: Vec<RouteRecord> = serde_json::from_str(&routes).map_err(|e| {
            format!(
                "event {}: its stored routes do not read: {e}",
                event.event_id
            )
        })?;
        let deliveries = by_event
            .remove(&event.event_id)
            .map(|d| d.into_values().collect())
            .unwrap_or_default();
        out.push(HistoryEntry {
            event,
            routes,
            deliveries,
        });
    }
    Ok(out)
}

/// A silence's matchers as stored: a JSON list of their texts.
pub(crate) fn matchers_json(matchers: &[crate::silence::Matcher]) -> String {
    let texts: Vec<String> = matchers.iter().map(ToString::to_string).collect();
    serde_json::Value::from(texts).to_string()
}

/// Reads what [`matchers_json`] wrote.
pub(crate) fn read_matchers(text: &str) -> Result<Vec<crate::silence::Matcher>, String> {
    let texts: Vec<String> =
        serde_json::from_str(text).map_err(|e| format!("its matchers do not read: {e}"))?;
    texts
        .iter()
        .map(|t| {
            t.parse()
                .map_err(|e: crate::silence::MatcherError| e.to_string())
        })
        .collect()
}

/// A target's row, whole, as `state migrate` copies it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetRecord {
    pub project_id: String,
    pub job_type: String,
    pub baselined: bool,
    pub updated_at: Timestamp,
    pub full_scan_at: Option<Timestamp>,
}

/// A snapshot row, whole (the sub-job's JSON as stored), as `state
/// migrate` copies it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotRecord {
    pub project_id: String,
    pub job_type: String,
    pub sub_job_id: String,
    pub job_id: Option<String>,
    pub status: Option<String>,
    pub error_code: Option<String>,
    pub since: Timestamp,
    pub stuck_reported: bool,
    pub missing_scans: u32,
    pub job_json: String,
}

/// A history row, whole (times as stored), as `state migrate` copies it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRow {
    pub event_id: String,
    pub project_id: String,
    pub job_type: String,
    pub sub_job_id: String,
    pub job_id: Option<String>,
    pub observed_at: String,
    pub payload_json: String,
    pub routes_json: String,
}

/// A delivery attempt's row, whole, as `state migrate` copies it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptRow {
    pub outbox_id: i64,
    pub event_id: String,
    pub notifier: String,
    pub at: String,
    pub verdict: String,
    pub answer: Option<String>,
    pub next_at: Option<String>,
}

/// Everything a state holds: what `state migrate` reads from SQLite and
/// writes to PostgreSQL.
#[derive(Debug, Clone, Default)]
pub struct Export {
    pub targets: Vec<TargetRecord>,
    pub snapshot: Vec<SnapshotRecord>,
    /// Every outbox row (pending, delivered and dead), by id.
    pub outbox: Vec<OutboxRow>,
    /// The history: events and attempts, oldest first.
    pub events: Vec<EventRow>,
    pub attempts: Vec<AttemptRow>,
    /// Every silence kept, by id.
    pub silences: Vec<crate::silence::Silence>,
}
