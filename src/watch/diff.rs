//! The diff: events and snapshot changes from a target's stored snapshot and
//! a fresh scan. A pure function — no I/O, no clock (`now` is an argument) —
//! so it is tested with data alone and safe to repeat.
//!
//! Rules (docs/events.md, docs/guarantees.md):
//! - A sub-job new to the snapshot is tracked; it yields `appeared` once the
//!   target is baselined (or always, with `notify_existing`). Before the
//!   baseline, new sub-jobs are tracked silently.
//! - A complete scan sets the baseline, as does a full scan that covered
//!   the list (see [`Scan::baseline`]); only a complete scan counts a known
//!   sub-job as missing: `vanished` after two consecutive complete
//!   scans without it. An incomplete scan still updates what it saw.
//! - A status or error-code difference is `changed`; unknown statuses are
//!   ordinary values. An item without a usable status (missing, `null`,
//!   not a string, over-long) keeps the status last seen: no event.
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

/// What the snapshot keeps in memory of one sub-job, under its id: what the
/// diff compares and the incremental strategy plans by, not the whole
/// sub-job (at 100k tracked that would be hundreds of MB). The whole one
/// is in the store ([`Row`]); a `vanished` event, the only one built from
/// the snapshot rather than a scan, gets its details from there.
#[derive(Debug, Clone, PartialEq)]
pub struct Tracked {
    pub status: Option<Status>,
    pub error_code: Option<Box<str>>,
    /// The parent job, for re-checking it by `job_id`: kept only while the
    /// status is not terminal (terminal statuses are final), which for a
    /// long history is nearly never.
    pub job_id: Option<Box<str>>,
    /// The API's `begin_time`, parsed: where the sub-job sits in the list.
    pub begin: Option<Timestamp>,
    /// When the current status was first observed (see the module docs).
    pub since: Timestamp,
    /// `stuck` was already emitted for the current status.
    pub stuck_reported: bool,
    /// Consecutive complete scans that did not list it.
    pub missing_scans: u32,
    /// A hash of the stored sub-job ([`fingerprint`]): a change in a field
    /// the snapshot does not keep (an end time, a message) still rewrites
    /// the stored copy.
    pub fingerprint: u64,
}

impl Tracked {
    pub fn status(&self) -> Option<&Status> {
        self.status.as_ref()
    }

    pub fn error_code(&self) -> Option<&str> {
        self.error_code.as_deref()
    }

    pub fn is_active(&self) -> bool {
        self.status().is_some_and(Status::is_active)
    }

    /// A stand-in for the stored sub-job, from what the snapshot keeps.
    pub fn brief(&self, id: &str) -> SubJob {
        SubJob {
            id: id.to_owned(),
            job_type: None,
            job_resource_info: None,
            begin_time: None,
            end_time: None,
            status: self.status.clone(),
            error_code: self.error_code.as_deref().map(str::to_owned),
            error_message: None,
            project_id: None,
            job_id: self.job_id.as_deref().map(str::to_owned),
            extra: Default::default(),
        }
    }
}

/// One snapshot row as the store writes it: the whole sub-job as last
/// seen (the fields events carry) and how it is tracked.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub job: SubJob,
    /// When the current status was first observed (see the module docs).
    pub since: Timestamp,
    /// `stuck` was already emitted for the current status.
    pub stuck_reported: bool,
    /// Consecutive complete scans that did not list it.
    pub missing_scans: u32,
}

impl Row {
    /// A sub-job first seen at `now`.
    pub fn new(job: SubJob, now: Timestamp) -> Row {
        Row {
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

    /// What the snapshot keeps of it in memory.
    pub fn tracked(&self) -> Tracked {
        self.tracked_with(fingerprint(&self.job))
    }

    fn tracked_with(&self, fingerprint: u64) -> Tracked {
        Tracked {
            status: self.job.status.clone(),
            error_code: self.job.error_code.as_deref().map(Box::from),
            job_id: keep_job_id(self.job.status.as_ref(), self.job.job_id.as_deref()),
            begin: self.job.begin_time.as_ref().and_then(|b| b.parsed),
            since: self.since,
            stuck_reported: self.stuck_reported,
            missing_scans: self.missing_scans,
            fingerprint,
        }
    }
}

/// [`Tracked::job_id`]: the parent job of a sub-job not (yet) final.
pub fn keep_job_id(status: Option<&Status>, job_id: Option<&str>) -> Option<Box<str>> {
    if status.is_some_and(Status::is_terminal) {
        return None;
    }
    job_id.map(Box::from)
}

/// A hash of a sub-job as the store writes it (its JSON): equal for equal
/// sub-jobs. Computed in this process only, never stored, so the hasher
/// need not be stable across builds.
pub fn fingerprint(job: &SubJob) -> u64 {
    let json = serde_json::to_vec(job).unwrap_or_default();
    fingerprint_json(&json)
}

/// [`fingerprint`] of a sub-job's stored JSON text, without decoding it.
pub fn fingerprint_json(json: &[u8]) -> u64 {
    use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
    BuildHasherDefault::<DefaultHasher>::default().hash_one(json)
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
        if self.jobs.is_empty() {
            // A first scan: the map built at once has full nodes, where
            // inserting one by one leaves them about half empty. (On an
            // empty map only upserts do anything.)
            self.jobs = outcome
                .changes
                .iter()
                .filter_map(|change| match change {
                    Change::Upsert(row) => Some((row.sub_job_id().to_owned(), row.tracked())),
                    Change::Missed { .. } | Change::Remove(_) => None,
                })
                .collect();
        } else {
            for change in &outcome.changes {
                match change {
                    Change::Upsert(row) => {
                        self.jobs.insert(row.sub_job_id().to_owned(), row.tracked());
                    }
                    Change::Missed { id, missing_scans } => {
                        if let Some(tracked) = self.jobs.get_mut(id.as_str()) {
                            tracked.missing_scans = *missing_scans;
                        }
                    }
                    Change::Remove(id) => {
                        self.jobs.remove(id.as_str());
                    }
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
    /// docs/configuration.md's defaults.
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
    /// Insert or replace the row with this sub-job id.
    Upsert(Row),
    /// A complete scan did not list a known sub-job; nothing else changed.
    Missed { id: String, missing_scans: u32 },
    /// Forget a sub-job (it vanished).
    Remove(String),
}

impl Change {
    pub fn sub_job_id(&self) -> &str {
        match self {
            Change::Upsert(row) => row.sub_job_id(),
            Change::Missed { id, .. } | Change::Remove(id) => id,
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
            changes.push(Change::Upsert(Row::new(job.clone(), now)));
            continue;
        };

        // No usable status (missing, null, not a string, over-long) says
        // nothing about the sub-job: it keeps the one last seen.
        let kept;
        let job = if job.status.is_none() && old.status.is_some() {
            kept = SubJob {
                status: old.status.clone(),
                ..job.clone()
            };
            &kept
        } else {
            job
        };
        let status_changed = old.status() != job.status.as_ref();
        let code_changed = old.error_code() != job.error_code.as_deref();
        let mut new = Row {
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
        if new.tracked() != *old {
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
                // The details come from the store: see `Event::fill_from`.
                events.push(Event::new(target, &old.brief(id), t, now));
                changes.push(Change::Remove(id.clone()));
            } else {
                changes.push(Change::Missed {
                    id: id.clone(),
                    missing_scans,
                });
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
