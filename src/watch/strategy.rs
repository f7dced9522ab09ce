//! How a target is read each cycle: the poll strategies, and when each
//! runs (the [`ScanPlan`] a poll loop keeps between cycles).
//!
//! - `full`: every cycle reads the whole list ([`Client::scan`]).
//! - `incremental` (the default): a cycle reads the newest page(s) until
//!   they reach sub-jobs already known and `count` is accounted for by the
//!   new ids seen, then re-reads the sub-jobs that were active and fell
//!   outside those pages, by parent job or by status, whichever costs fewer
//!   requests. A steady target costs one request a cycle, whatever its
//!   history. A full scan still runs as the first scan of a target, as a
//!   reconciliation every `poll.full_scan_every` (spread over time, so
//!   targets do not reconcile together), and whenever the incremental read
//!   could not account for something. Only full scans infer absences, so
//!   `vanished` comes only from them.
//!
//! The incremental read relies on the list being newest first (`begin_time`
//! descending). It checks that on every page it reads; a list that breaks
//! it switches the target to full scans for good, with one log line.

use std::collections::{BTreeSet, HashSet};
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use rand::Rng;
use serde::Serialize;

use super::Target;
use super::diff::{Scan, TargetSnapshot, Tracked};
use crate::cloud::client::MAX_LIMIT;
use crate::cloud::model::{Status, SubJob};
use crate::cloud::scan::{FullScan, OrderCheck, ScanFailed, Unique};
use crate::cloud::{Client, ClientError, Filter};
use crate::ratelimit::{Lane, ScanKind};

/// `poll.strategy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Strategy {
    /// Every cycle reads the whole list.
    Full,
    /// Newest pages and active sub-jobs; full scans to reconcile.
    #[default]
    Incremental,
}

/// Why a full scan is owed after an incremental read that could not
/// account for everything (see [`ScanPlan::read`]).
const UNACCOUNTED: &str = "unaccounted";

/// A first scan that cannot cover a busy list is taken as the baseline
/// anyway at this attempt, so no target stays silent for good.
pub const BASELINE_AFTER_ATTEMPTS: u32 = 3;

/// Which read a cycle made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ReadKind {
    Full,
    Incremental,
}

/// What one cycle's read saw.
#[derive(Debug, Clone)]
pub struct Read {
    pub scan: Scan,
    pub kind: ReadKind,
    pub requests: u32,
    /// Why a full scan was incomplete, when it was.
    pub incomplete_reason: Option<String>,
}

/// A read that failed on an API error; `seen` is what it read before.
#[derive(Debug)]
pub struct ReadFailed {
    pub error: ClientError,
    pub seen: Vec<SubJob>,
    pub requests: u32,
}

impl From<ScanFailed> for ReadFailed {
    fn from(f: ScanFailed) -> ReadFailed {
        ReadFailed {
            error: f.error,
            seen: f.seen,
            requests: f.requests,
        }
    }
}

/// What a poll loop remembers about one target's reads between cycles.
#[derive(Debug, Clone)]
pub struct ScanPlan {
    strategy: Strategy,
    full_scan_every: Duration,
    /// A one-shot run (`once`): a reconciliation that is due runs now
    /// rather than at a spread-out moment.
    one_shot: bool,
    /// `count` at the last read.
    last_count: Option<u64>,
    /// When the next reconciliation runs; set at the first cycle.
    next_full: Option<Timestamp>,
    /// The incremental read could not account for something.
    full_next: bool,
    /// The API broke the newest-first order: full scans only.
    order_broken: bool,
    /// Full scans of a target not yet baselined that did not cover it.
    uncovered_attempts: u32,
    /// Since when a confirmed mass disappearance has held (see
    /// [`MASS_HOLD`]).
    mass_since: Option<Timestamp>,
}

impl ScanPlan {
    pub fn new(strategy: Strategy, full_scan_every: Duration) -> ScanPlan {
        ScanPlan {
            strategy,
            full_scan_every,
            one_shot: false,
            last_count: None,
            next_full: None,
            full_next: false,
            order_broken: false,
            uncovered_attempts: 0,
            mass_since: None,
        }
    }

    /// For a single cycle per process (`once`).
    pub fn one_shot(strategy: Strategy, full_scan_every: Duration) -> ScanPlan {
        ScanPlan {
            one_shot: true,
            ..ScanPlan::new(strategy, full_scan_every)
        }
    }

    /// Whether this cycle reads the whole list, and why ([`UNACCOUNTED`],
    /// "strategy", "baseline", "order", "reconcile").
    fn full_reason(&mut self, snapshot: &TargetSnapshot, now: Timestamp) -> Option<&'static str> {
        if self.strategy == Strategy::Full {
            return Some("strategy");
        }
        if !snapshot.baselined {
            return Some("baseline");
        }
        if self.order_broken {
            return Some("order");
        }
        if std::mem::take(&mut self.full_next) {
            return Some(UNACCOUNTED);
        }
        let next = *self.next_full.get_or_insert_with(|| {
            let every = span(self.full_scan_every);
            let due = snapshot.full_scan_at.map_or(now, |at| at + every);
            if due > now || self.one_shot {
                due
            } else {
                // Overdue at start-up (the daemon was down): spread the
                // reconciliations of all targets over one period.
                now + span(
                    self.full_scan_every
                        .mul_f64(rand::rng().random_range(0.0..1.0)),
                )
            }
        });
        (now >= next).then_some("reconcile")
    }

    /// Reads `target` for one cycle, given what the snapshot holds.
    pub async fn read(
        &mut self,
        client: &Client,
        target: &Target,
        snapshot: &TargetSnapshot,
    ) -> Result<Read, ReadFailed> {
        let now = Timestamp::now();
        if let Some(why) = self.full_reason(snapshot, now) {
            tracing::debug!(%target, why, "full scan");
            let read = self.full(client, target, snapshot, 0).await;
            // What was unaccounted for still is: the next cycle tries again.
            if read.is_err() && why == UNACCOUNTED {
                self.full_next = true;
            }
            return read;
        }
        let reference = self.last_count.unwrap_or(snapshot.jobs.len() as u64);
        let read = incremental(client, target, snapshot, reference).await?;
        match read {
            Incremental::Read {
                items,
                count,
                requests,
                unaccounted,
            } => {
                self.last_count = Some(count);
                if let Some(what) = unaccounted {
                    tracing::debug!(%target, %what, "a full scan comes next");
                    self.full_next = true;
                }
                Ok(Read {
                    scan: Scan::partial(items),
                    kind: ReadKind::Incremental,
                    requests,
                    incomplete_reason: None,
                })
            }
            Incremental::OrderBroken { requests, example } => {
                self.order_broken = true;
                tracing::warn!(
                    %target,
                    %example,
                    "the API does not list this target's sub-jobs newest first; using full scans for it from now on"
                );
                self.full(client, target, snapshot, requests).await
            }
        }
    }

    async fn full(
        &mut self,
        client: &Client,
        target: &Target,
        snapshot: &TargetSnapshot,
        requests_before: u32,
    ) -> Result<Read, ReadFailed> {
        // A full scan waits behind every foreground request, and behind
        // scans with fewer pages left.
        let pages = |n: u64| n.div_ceil(u64::from(MAX_LIMIT));
        let kind = if snapshot.baselined {
            ScanKind::Reconcile
        } else {
            ScanKind::First
        };
        let lane = Lane::background(
            kind,
            pages(self.last_count.unwrap_or(snapshot.jobs.len() as u64)),
        );
        let all = Filter::default();
        let scan = || {
            lane.run(
                client.scan(&target.project_id, &target.job_type, &all, |p| {
                    lane.set_pages_left(pages(p.total.saturating_sub(p.fetched)))
                }),
            )
        };
        let mut full = scan().await.map_err(|f| ReadFailed {
            requests: f.requests + requests_before,
            ..ReadFailed::from(f)
        })?;
        let missing = |full: &FullScan| missing_from(snapshot, full);
        let suspect =
            snapshot.baselined && full.complete && is_mass_disappearance(snapshot, missing(&full));
        if !suspect && full.complete {
            self.mass_since = None;
        }
        if suspect {
            let tracked = snapshot.jobs.len();
            tracing::warn!(
                %target,
                missing = missing(&full),
                tracked,
                count = full.count,
                "a complete scan would take away more than half of the tracked sub-jobs; confirming with the count endpoint and a second scan"
            );
            let count = lane
                .run(client.count(&target.project_id, &target.job_type, &all))
                .await;
            let second = scan().await;
            let requests =
                full.requests + 1 + second.as_ref().map_or_else(|f| f.requests, |s| s.requests);
            match (count, second) {
                (Ok(count), Ok(second))
                    if second.complete
                        && count == second.count
                        && is_mass_disappearance(snapshot, missing(&second)) =>
                {
                    let now = Timestamp::now();
                    let since = *self.mass_since.get_or_insert(now);
                    full = second;
                    full.requests = requests;
                    if now.duration_since(since) < span(MASS_HOLD) {
                        let reason = format!(
                            "the count endpoint and a second scan agree that {} of {tracked} tracked sub-jobs are gone; held until that has lasted {}s before any counts as missing",
                            missing(&full),
                            MASS_HOLD.as_secs()
                        );
                        tracing::warn!(%target, %reason, "mass disappearance held");
                        full.complete = false;
                        full.incomplete_reason = Some(reason);
                    } else {
                        tracing::warn!(%target, count, "confirmed and lasting: the sub-jobs are gone from the API");
                    }
                }
                (count, second) => {
                    let reason = format!(
                        "a complete scan would take away {} of {tracked} tracked sub-jobs, and the count endpoint ({}) and a second scan ({}) did not confirm it; nothing is inferred from what it did not list",
                        missing(&full),
                        count.map_or_else(|e| format!("failed: {e}"), |c| format!("count {c}")),
                        match &second {
                            Ok(s) => format!("count {}, {} listed", s.count, s.items.len()),
                            Err(e) => format!("failed: {e}"),
                        },
                    );
                    tracing::warn!(%target, %reason, "not confirmed; no sub-job counts as missing");
                    self.mass_since = None;
                    if let Ok(second) = second
                        && second.items.len() > full.items.len()
                    {
                        full = second;
                    }
                    full.complete = false;
                    full.requests = requests;
                    full.incomplete_reason = Some(reason);
                }
            }
        }
        self.last_count = Some(full.count);
        let jitter = rand::rng().random_range(0.9..1.1);
        self.next_full = Some(Timestamp::now() + span(self.full_scan_every.mul_f64(jitter)));
        if self.strategy == Strategy::Incremental
            && !self.order_broken
            && let Some(example) = full.misordered.clone()
        {
            self.order_broken = true;
            tracing::warn!(
                %target,
                %example,
                "the API does not list this target's sub-jobs newest first; using full scans for it from now on"
            );
        }
        let mut covering = full.covering;
        if !snapshot.baselined && !full.complete && !covering {
            self.uncovered_attempts += 1;
            if self.uncovered_attempts >= BASELINE_AFTER_ATTEMPTS {
                tracing::warn!(
                    %target,
                    attempts = self.uncovered_attempts,
                    seen = full.items.len(),
                    count = full.count,
                    "the list keeps changing under the first scans; taking what was seen as the baseline"
                );
                covering = true;
            }
        }
        Ok(Read {
            scan: Scan::full(full.items, full.complete, covering),
            kind: ReadKind::Full,
            requests: full.requests + requests_before,
            incomplete_reason: full.incomplete_reason,
        })
    }
}

/// How long a confirmed mass disappearance must last before any of its
/// sub-jobs counts as missing: an API that lies consistently for a few
/// seconds (the count endpoint too) must not make a history vanish.
pub const MASS_HOLD: Duration = Duration::from_secs(300);

/// Tracked sub-jobs a full scan did not list.
fn missing_from(snapshot: &TargetSnapshot, full: &FullScan) -> usize {
    let listed: HashSet<&str> = full.items.iter().map(|j| j.id.as_str()).collect();
    snapshot
        .jobs
        .keys()
        .filter(|id| !listed.contains(id.as_str()))
        .count()
}

/// A complete scan that would take away more than half of the tracked
/// sub-jobs (two at least) is suspect: an answer that only looks empty (a
/// gateway's `{"count":0,"items":[]}` for a few seconds) must not become
/// a storm of `vanished`. It is confirmed before any sub-job counts as
/// missing (see [`ScanPlan::read`]).
pub fn is_mass_disappearance(snapshot: &TargetSnapshot, missing: usize) -> bool {
    missing >= 2 && missing * 2 > snapshot.jobs.len()
}

fn span(d: Duration) -> SignedDuration {
    SignedDuration::try_from(d).unwrap_or(SignedDuration::MAX)
}

enum Incremental {
    Read {
        items: Vec<SubJob>,
        count: u64,
        requests: u32,
        /// What the read could not account for, when it could not.
        unaccounted: Option<String>,
    },
    OrderBroken {
        requests: u32,
        example: String,
    },
}

/// One incremental read (see the module docs). `reference` is the `count`
/// the last read saw (or the number of sub-jobs tracked).
async fn incremental(
    client: &Client,
    target: &Target,
    snapshot: &TargetSnapshot,
    reference: u64,
) -> Result<Incremental, ReadFailed> {
    let mut r = Reader {
        client,
        target,
        snapshot,
        seen: Unique::default(),
        order: OrderCheck::default(),
        requests: 0,
        new_ids: 0,
        reached_known: false,
        count: 0,
        offset: 0,
    };
    // The newest pages, until they reach known sub-jobs and `count` is
    // accounted for.
    loop {
        if let Some(example) = r.next_page().await? {
            return Ok(Incremental::OrderBroken {
                requests: r.requests,
                example,
            });
        }
        let accounted = r.count <= reference + r.new_ids;
        if r.at_end() || (r.reached_known && accounted) {
            break;
        }
    }
    let mut unaccounted = (r.count > reference + r.new_ids).then(|| {
        format!(
            "count is {}, but only {} new sub-job(s) were seen since {reference}",
            r.count, r.new_ids
        )
    });

    // The sub-jobs that were active (or in a status we do not know) and
    // fell outside the pages read: by further pages, by parent job or by
    // status, whichever costs fewer requests.
    let outside = r.outside();
    if !outside.is_empty() {
        let jobs: BTreeSet<String> = outside
            .iter()
            .filter_map(|t| t.job_id.as_deref().map(str::to_owned))
            .collect();
        let statuses: BTreeSet<Status> =
            outside.iter().filter_map(|t| t.status().cloned()).collect();
        let never = usize::MAX;
        let by_job = if outside.iter().all(|t| t.job_id.is_some()) {
            jobs.len()
        } else {
            never
        };
        // At best one request per status; one that left it costs one more
        // (by its parent job).
        let by_status = if outside.iter().all(|t| t.status().is_some()) {
            statuses.len()
        } else {
            never
        };
        let deeper = r.pages_to_reach(&outside);
        if deeper <= by_job && deeper <= by_status {
            // Read on to the deepest of them, and a page more for drift.
            for _ in 0..=deeper {
                if r.at_end() || r.outside().is_empty() {
                    break;
                }
                if let Some(example) = r.next_page().await? {
                    return Ok(Incremental::OrderBroken {
                        requests: r.requests,
                        example,
                    });
                }
            }
        } else if by_job <= by_status {
            for job in jobs {
                r.recheck(Filter {
                    job_id: Some(job),
                    ..Filter::default()
                })
                .await?;
            }
        } else {
            for status in statuses {
                r.recheck(Filter {
                    status: Some(status),
                    ..Filter::default()
                })
                .await?;
            }
            // One missing from its status's list has left it: its parent
            // job tells where it went.
            let left: BTreeSet<String> = r
                .outside()
                .iter()
                .filter_map(|t| t.job_id.as_deref().map(str::to_owned))
                .collect();
            for job in left {
                r.recheck(Filter {
                    job_id: Some(job),
                    ..Filter::default()
                })
                .await?;
            }
        }
        let missing = r.outside().len();
        if missing > 0 && unaccounted.is_none() {
            unaccounted = Some(format!("{missing} active sub-job(s) were not found"));
        }
    }
    Ok(Incremental::Read {
        count: r.count,
        requests: r.requests,
        items: r.seen.into_items(),
        unaccounted,
    })
}

/// An incremental read under way.
struct Reader<'a> {
    client: &'a Client,
    target: &'a Target,
    snapshot: &'a TargetSnapshot,
    seen: Unique,
    order: OrderCheck,
    requests: u32,
    /// Ids on the pages read that the snapshot does not know (and
    /// unreadable items, which exist all the same).
    new_ids: u64,
    reached_known: bool,
    /// `count` on the last page.
    count: u64,
    /// Where the next page starts.
    offset: u64,
}

impl Reader<'_> {
    /// Reads the next page of the unfiltered list; `Some` describes an item
    /// listed out of newest-first order.
    async fn next_page(&mut self) -> Result<Option<String>, ReadFailed> {
        let page = match self
            .client
            .list_page(
                &self.target.project_id,
                &self.target.job_type,
                &Filter::default(),
                self.offset,
                MAX_LIMIT,
            )
            .await
        {
            Ok(page) => page,
            Err(e) => return Err(self.failed(e, 0)),
        };
        self.requests += 1;
        self.count = page.count;
        let on_page = page.items.len() + page.rejected.len();
        self.offset = if on_page < MAX_LIMIT as usize {
            // A short page is the end of the list.
            u64::MAX
        } else {
            self.offset + u64::from(MAX_LIMIT)
        };
        self.new_ids += page.rejected.len() as u64;
        let mut broken = None;
        for job in page.items {
            if broken.is_none() {
                broken = self.order.see(&job);
            }
            if self.snapshot.jobs.contains_key(job.id.as_str()) {
                self.reached_known = true;
            } else if !self.seen.contains(&job.id) {
                self.new_ids += 1;
            }
            self.seen.insert(job);
        }
        Ok(broken)
    }

    fn at_end(&self) -> bool {
        self.offset >= self.count
    }

    /// Known sub-jobs not terminal and not seen by this read.
    fn outside(&self) -> Vec<&Tracked> {
        let seen = &self.seen;
        self.snapshot
            .jobs
            .iter()
            .filter(|(id, t)| {
                !t.status().is_some_and(Status::is_terminal) && !seen.contains(id.as_str())
            })
            .map(|(_, t)| t)
            .collect()
    }

    /// Further pages to read to reach the deepest of `outside`, estimated
    /// from the snapshot: a sub-job's place is how many known ones began
    /// no earlier than it, plus the new ones above.
    fn pages_to_reach(&self, outside: &[&Tracked]) -> usize {
        let begin = |t: &Tracked| t.begin;
        let mut deepest = None;
        for t in outside {
            match begin(t) {
                None => return usize::MAX,
                Some(b) => deepest = Some(deepest.map_or(b, |d: Timestamp| d.min(b))),
            }
        }
        let Some(deepest) = deepest else {
            return usize::MAX;
        };
        let above = self
            .snapshot
            .jobs
            .values()
            .filter(|t| begin(t).is_none_or(|b| b >= deepest))
            .count() as u64;
        let limit = u64::from(MAX_LIMIT);
        let pages_needed = (above + self.new_ids) / limit + 1;
        let pages_read = self.offset.min(self.count).div_ceil(limit);
        usize::try_from(pages_needed.saturating_sub(pages_read)).unwrap_or(usize::MAX)
    }

    /// Every sub-job matching `filter`, into `seen`.
    async fn recheck(&mut self, filter: Filter) -> Result<(), ReadFailed> {
        let scanned = self
            .client
            .scan(
                &self.target.project_id,
                &self.target.job_type,
                &filter,
                |_| {},
            )
            .await;
        match scanned {
            Ok(found) => {
                self.requests += found.requests;
                for job in found.items {
                    self.seen.insert(job);
                }
                Ok(())
            }
            Err(f) => {
                for job in f.seen {
                    self.seen.insert(job);
                }
                Err(self.failed(f.error, f.requests))
            }
        }
    }

    /// The read failed: what it saw so far, and the requests it made.
    fn failed(&mut self, error: ClientError, more_requests: u32) -> ReadFailed {
        ReadFailed {
            error,
            seen: std::mem::take(&mut self.seen).into_items(),
            requests: self.requests + more_requests,
        }
    }
}

/// What the configured targets ask of the API budget, in requests a
/// minute: the arithmetic `check` prints.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BudgetNeed {
    /// Every target idle (polled every `interval`).
    pub idle: f64,
    /// Every target active (polled every `active_interval`).
    pub active: f64,
    /// Of each, what reconciliation scans take (incremental only).
    pub reconcile: f64,
    /// Pages of one full scan of every target: the first scans' cost.
    pub baseline_pages: u64,
}

/// The budget `pages` (one entry per target: the pages of its full scan)
/// need under `strategy`. A steady incremental cycle costs one request;
/// a full one costs every page, and incremental targets add a full scan
/// every `full_scan_every`.
pub fn budget_need(
    strategy: Strategy,
    pages: &[u64],
    interval: Duration,
    active_interval: Duration,
    full_scan_every: Duration,
) -> BudgetNeed {
    let per_minute =
        |requests: f64, every: Duration| requests * 60.0 / every.as_secs_f64().max(1e-3);
    let all_pages: u64 = pages.iter().sum();
    let (per_cycle, reconcile) = match strategy {
        Strategy::Full => (all_pages as f64, 0.0),
        Strategy::Incremental => (
            pages.len() as f64,
            per_minute(all_pages as f64, full_scan_every),
        ),
    };
    BudgetNeed {
        idle: per_minute(per_cycle, interval) + reconcile,
        active: per_minute(per_cycle, active_interval) + reconcile,
        reconcile,
        baseline_pages: all_pages,
    }
}

/// The pages of a full scan of `tracked` sub-jobs (at least one).
pub fn pages_for(tracked: u64) -> u64 {
    tracked.div_ceil(u64::from(MAX_LIMIT)).max(1)
}
