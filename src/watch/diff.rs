//! The diff: events and snapshot changes from a target's stored snapshot and
//! a fresh scan. A pure function — no I/O, no clock (`now` is an argument) —
//! so it is tested with data alone and safe to repeat.
//!
//! Rules (SPEC §4, §5):
//! - A sub-job new to the snapshot is tracked; it yields `appeared` once the
//!   target is baselined (or always, with `notify_existing`). Before the
//!   baseline, new sub-jobs are tracked silently.
//! - A complete scan sets the baseline, as does a full scan that covered
//!   the list (see [`Scan::baseline`]); only a complete scan counts a known
//!   sub-job as missing: `vanished` after two consecutive complete
//!   scans without it. An incomplete scan still updates what it saw.
//! - A status or error-code difference is `changed`; unknown statuses are
//!   ordinary values.
//! - `stuck` once per status: an active sub-job whose status was first
//!   observed at least `stuck_after` ago.
//!
//! `since` is the scan time at which the current status was first observed,
//! never the API's `begin_time`: the cloud's clock is not ours, `begin_time`
//! says when the job began rather than when it entered its current status,
//! and for jobs already active at the baseline it would fire a burst of
//! `stuck` alarms right after installation. The cost is that `stuck` can
//! come up to one poll interval late, never early. `since` and
//! `stuck_reported` are persisted, so a restart re-fires nothing.

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

use super::Target;
use super::event::{Event, EventKind, Transition};
use crate::cloud::model::{Status, SubJob};

/// A complete scan without a known sub-job bumps its miss counter; at this
/// many consecutive misses it has vanished.
pub const VANISH_AFTER_MISSES: u32 = 2;

/// What the snapshot knows about one sub-job.
#[derive(Debug, Clone, PartialEq)]
pub struct Tracked {
    /// The sub-job as last seen: the fields events carry.
    pub job: SubJob,
    /// When the current status was first observed (see the module docs).
    pub since: Timestamp,
    /// `stuck` was already emitted for the current status.
    pub stuck_reported: bool,
    /// Consecutive complete scans that did not list it.
    pub missing_scans: u32,
}

impl Tracked {
    /// A sub-job first seen at `now`.
    pub fn new(job: SubJob, now: Timestamp) -> Tracked {
        Tracked {
            job,
            since: now,
            stuck_reported: false,
            missing_scans: 0,
        }
    }

    pub fn sub_job_id(&self) -> &str {
        &self.job.id
    }

    pub fn status(&self) -> Option<&Status> {
        self.job.status.as_ref()
    }

    pub fn error_code(&self) -> Option<&str> {
        self.job.error_code.as_deref()
    }

    pub fn is_active(&self) -> bool {
        self.status().is_some_and(Status::is_active)
    }
}

/// The stored state of one target.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TargetSnapshot {
    /// A complete scan has been recorded; until then new sub-jobs are the
    /// existing history, not news.
    pub baselined: bool,
    /// By sub-job id.
    pub jobs: BTreeMap<String, Tracked>,
    /// When the last full scan that covered the list was committed: the
    /// incremental strategy reconciles a while after it.
    pub full_scan_at: Option<Timestamp>,
}

impl TargetSnapshot {
    /// Applies a diff's changes, as the store does in its transaction. The
    /// poller can keep its in-memory copy in step with this.
    pub fn apply(&mut self, outcome: &DiffOutcome) {
        for change in &outcome.changes {
            match change {
                Change::Upsert(tracked) => {
                    self.jobs
                        .insert(tracked.sub_job_id().to_owned(), tracked.clone());
                }
                Change::Remove(id) => {
                    self.jobs.remove(id);
                }
            }
        }
        self.baselined = outcome.baselined;
        self.full_scan_at = outcome.full_scan_at;
    }

    /// Sub-jobs in an active status: the poller polls faster while any are.
    pub fn active_count(&self) -> usize {
        self.jobs.values().filter(|t| t.is_active()).count()
    }
}

/// What one scan of a target saw.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Scan {
    pub items: Vec<SubJob>,
    /// Every page was read, no item was rejected and nothing was deleted
    /// meanwhile: only then does an absence mean anything.
    pub complete: bool,
    /// A full scan that read every sub-job the list holds, though the list
    /// changed under it (or one the poller takes as the baseline because
    /// the target's first scans could not cover it): what was not seen
    /// before is news from now on. Implied by `complete`.
    pub baseline: bool,
}

impl Scan {
    pub fn complete(items: Vec<SubJob>) -> Scan {
        Scan {
            items,
            complete: true,
            baseline: true,
        }
    }

    /// What an incremental read or a failed scan saw: nothing follows from
    /// what it did not see.
    pub fn partial(items: Vec<SubJob>) -> Scan {
        Scan {
            items,
            complete: false,
            baseline: false,
        }
    }

    /// A full scan: how complete it was.
    pub fn full(items: Vec<SubJob>, complete: bool, covering: bool) -> Scan {
        Scan {
            items,
            complete,
            baseline: complete || covering,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiffSettings {
    /// The first scan of a target reports every existing sub-job as
    /// `appeared` instead of being a silent baseline.
    pub notify_existing: bool,
    pub stuck_after: Duration,
}

impl Default for DiffSettings {
    /// SPEC §3's defaults.
    fn default() -> Self {
        DiffSettings {
            notify_existing: false,
            stuck_after: Duration::from_secs(3600),
        }
    }
}

/// One change to a target's snapshot.
#[derive(Debug, Clone, PartialEq)]
#[allow(
    clippy::large_enum_variant,
    reason = "nearly every change is an upsert; boxing would only add an allocation to each"
)]
pub enum Change {
    /// Insert or replace the entry with this sub-job id.
    Upsert(Tracked),
    /// Forget a sub-job (it vanished).
    Remove(String),
}

impl Change {
    pub fn sub_job_id(&self) -> &str {
        match self {
            Change::Upsert(t) => t.sub_job_id(),
            Change::Remove(id) => id,
        }
    }
}

/// Everything a cycle must persist, in one transaction.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DiffOutcome {
    /// Oldest sub-job first (by `begin_time`, then id, then kind); sub-jobs
    /// without a parseable `begin_time` come first.
    pub events: Vec<Event>,
    /// Only entries that differ from the snapshot, by sub-job id.
    pub changes: Vec<Change>,
    /// The target's baseline flag after this scan.
    pub baselined: bool,
    /// The snapshot's `full_scan_at` after this scan: `now` when the scan
    /// was a full one that covered the list.
    pub full_scan_at: Option<Timestamp>,
}

/// Compares a target's snapshot with a scan taken at `now`.
///
/// If a scan lists an id twice (the scanner should have dropped the copy),
/// the first listing wins: pages come newest first.
pub fn diff(
    target: &Target,
    before: &TargetSnapshot,
    scan: &Scan,
    now: Timestamp,
    settings: &DiffSettings,
) -> DiffOutcome {
    let stuck_after = SignedDuration::try_from(settings.stuck_after).unwrap_or(SignedDuration::MAX);
    let mut seen: BTreeMap<&str, &SubJob> = BTreeMap::new();
    for job in &scan.items {
        seen.entry(job.id.as_str()).or_insert(job);
    }

    let mut events = Vec::new();
    let mut changes = Vec::new();

    for (&id, &job) in &seen {
        let Some(old) = before.jobs.get(id) else {
            if before.baselined || settings.notify_existing {
                let t = Transition {
                    kind: EventKind::Appeared,
                    from: None,
                    to: job.status.as_ref(),
                    error_code: job.error_code.as_deref(),
                    since: None,
                };
                events.push(Event::new(target, job, t, now));
            }
            changes.push(Change::Upsert(Tracked::new(job.clone(), now)));
            continue;
        };

        let status_changed = old.status() != job.status.as_ref();
        let code_changed = old.error_code() != job.error_code.as_deref();
        let mut new = Tracked {
            job: job.clone(),
            since: old.since,
            stuck_reported: old.stuck_reported,
            missing_scans: 0,
        };
        if status_changed {
            new.since = now;
            new.stuck_reported = false;
        }
        if status_changed || code_changed {
            let t = Transition {
                kind: EventKind::Changed,
                from: old.status(),
                to: job.status.as_ref(),
                error_code: job.error_code.as_deref(),
                since: Some(old.since),
            };
            events.push(Event::new(target, job, t, now));
        }
        if new.is_active() && !new.stuck_reported && now.duration_since(new.since) >= stuck_after {
            let t = Transition {
                kind: EventKind::Stuck,
                from: new.status(),
                to: new.status(),
                error_code: new.error_code(),
                since: Some(new.since),
            };
            events.push(Event::new(target, job, t, now));
            new.stuck_reported = true;
        }
        if new != *old {
            changes.push(Change::Upsert(new));
        }
    }

    // Absence means something only when every page was read.
    if scan.complete {
        for (id, old) in &before.jobs {
            if seen.contains_key(id.as_str()) {
                continue;
            }
            let missing_scans = old.missing_scans.saturating_add(1);
            if missing_scans >= VANISH_AFTER_MISSES {
                let t = Transition {
                    kind: EventKind::Vanished,
                    from: old.status(),
                    to: None,
                    error_code: old.error_code(),
                    since: Some(old.since),
                };
                events.push(Event::new(target, &old.job, t, now));
                changes.push(Change::Remove(id.clone()));
            } else {
                changes.push(Change::Upsert(Tracked {
                    missing_scans,
                    ..old.clone()
                }));
            }
        }
    }

    events.sort_by(|a, b| order_key(a).cmp(&order_key(b)));
    changes.sort_by(|a, b| a.sub_job_id().cmp(b.sub_job_id()));

    let covered = scan.complete || scan.baseline;
    DiffOutcome {
        events,
        changes,
        baselined: before.baselined || covered,
        full_scan_at: if covered {
            Some(now)
        } else {
            before.full_scan_at
        },
    }
}

/// Events' order: oldest sub-job first, so the outbox and tests are stable.
fn order_key(e: &Event) -> (Option<Timestamp>, &str, EventKind) {
    (
        e.begin_time.as_ref().and_then(|t| t.parsed),
        &e.sub_job_id,
        e.kind,
    )
}
