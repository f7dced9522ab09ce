//! The records the engine and its storage backends exchange: outbox rows,
//! targets, a cycle to commit, claims and outcomes. A backend builds on
//! these; the [`super::Storage`] enum above the backends dispatches to one.

use jiff::Timestamp;

use crate::route::Routed;
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
    },
    /// A permanent failure or `max_age` reached: a dead letter, with the
    /// receiver's words kept.
    Dead {
        at: Timestamp,
        reason: String,
    },
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

/// Everything a state holds: what `state migrate` reads from SQLite and
/// writes to PostgreSQL.
#[derive(Debug, Clone, Default)]
pub struct Export {
    pub targets: Vec<TargetRecord>,
    pub snapshot: Vec<SnapshotRecord>,
    /// Every outbox row (pending, delivered and dead), by id.
    pub outbox: Vec<OutboxRow>,
}
