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

use std::collections::BTreeSet;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use rand::Rng;
use serde::Serialize;

use super::Target;
use super::diff::{Scan, TargetSnapshot, Tracked};
use crate::cloud::client::MAX_LIMIT;
use crate::cloud::model::{Status, SubJob};
use crate::cloud::scan::{ScanFailed, Unique};
use crate::cloud::{Client, ClientError, Filter};

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

/// A first scan that cannot cover a busy list is taken as the baseline
/// anyway at this attempt, so no target stays silent for good.
pub const BASELINE_AFTER_ATTEMPTS: u32 = 3;

/// How far a sub-job listed later may begin after one listed earlier
/// before the list counts as not newest first: clocks of one parent job's
/// sub-jobs may differ by a little.
pub const ORDER_TOLERANCE: SignedDuration = SignedDuration::from_secs(1);

/// Which read a cycle made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ReadKind {
    Full,
    Incremental,
}

impl ReadKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ReadKind::Full => "full",
            ReadKind::Incremental => "incremental",
        }
    }
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
        }
    }

    /// For a single cycle per process (`once`).
    pub fn one_shot(strategy: Strategy, full_scan_every: Duration) -> ScanPlan {
        ScanPlan {
            one_shot: true,
            ..ScanPlan::new(strategy, full_scan_every)
        }
    }

    /// Whether this cycle reads the whole list, and why.
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
            return Some("unaccounted");
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
            return self.full(client, target, snapshot, 0).await;
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
        let full = client
            .scan(
                &target.project_id,
                &target.job_type,
                &Filter::default(),
                |_| {},
            )
            .await
            .map_err(|f| ReadFailed {
                requests: f.requests + requests_before,
                ..ReadFailed::from(f)
            })?;
        self.last_count = Some(full.count);
        let jitter = rand::rng().random_range(0.9..1.1);
        self.next_full = Some(Timestamp::now() + span(self.full_scan_every.mul_f64(jitter)));
        if self.strategy == Strategy::Incremental
            && !self.order_broken
            && let Some(example) = order_break(&full.items)
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

fn span(d: Duration) -> SignedDuration {
    SignedDuration::try_from(d).unwrap_or(SignedDuration::MAX)
}

/// The first pair of items listed out of newest-first order, described.
fn order_break<'a>(items: impl IntoIterator<Item = &'a SubJob>) -> Option<String> {
    let mut earliest: Option<(Timestamp, &str)> = None;
    for job in items {
        let Some(begin) = job.begin_time.as_ref().and_then(|t| t.parsed) else {
            continue;
        };
        if let Some((before, id)) = earliest
            && begin.duration_since(before) > ORDER_TOLERANCE
        {
            return Some(format!(
                "{} (begun {begin}) is listed after {id} (begun {before})",
                job.id
            ));
        }
        if earliest.is_none_or(|(t, _)| begin < t) {
            earliest = Some((begin, job.id.as_str()));
        }
    }
    None
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
    let limit = u64::from(MAX_LIMIT);
    let mut seen = Unique::default();
    let mut read: Vec<SubJob> = Vec::new();
    let mut requests = 0u32;
    let failed = |error, seen: Unique, requests| ReadFailed {
        error,
        seen: seen.into_items(),
        requests,
    };
    // The newest pages.
    let mut offset = 0u64;
    let mut new_ids = 0u64;
    let mut reached_known = false;
    let count = loop {
        let page = match client
            .list_page(
                &target.project_id,
                &target.job_type,
                &Filter::default(),
                offset,
                MAX_LIMIT,
            )
            .await
        {
            Ok(page) => page,
            Err(e) => return Err(failed(e, seen, requests)),
        };
        requests += 1;
        let on_page = (page.items.len() + page.rejected.len()) as u64;
        // Unreadable items exist all the same: count them as new.
        new_ids += page.rejected.len() as u64;
        read.extend(page.items.iter().cloned());
        for job in page.items {
            if snapshot.jobs.contains_key(&job.id) {
                reached_known = true;
            } else if !seen.contains(&job.id) {
                new_ids += 1;
            }
            seen.insert(job);
        }
        if let Some(example) = order_break(&read) {
            return Ok(Incremental::OrderBroken { requests, example });
        }
        offset += limit;
        let accounted = page.count <= reference + new_ids;
        if offset >= page.count || on_page < limit || (reached_known && accounted) {
            break page.count;
        }
    };
    let mut unaccounted = (count > reference + new_ids).then(|| {
        format!("count is {count}, but only {new_ids} new sub-job(s) were seen since {reference}")
    });

    // The sub-jobs that were active (or in a status we do not know) and
    // fell outside the pages read.
    let outside: Vec<&Tracked> = snapshot
        .jobs
        .values()
        .filter(|t| !t.status().is_some_and(Status::is_terminal) && !seen.contains(t.sub_job_id()))
        .collect();
    if !outside.is_empty() {
        let by_job: BTreeSet<&str> = outside
            .iter()
            .filter_map(|t| t.job.job_id.as_deref())
            .collect();
        let all_have_job = outside.iter().all(|t| t.job.job_id.is_some());
        let statuses: BTreeSet<&Status> = outside.iter().filter_map(|t| t.status()).collect();
        let all_have_status = outside.iter().all(|t| t.status().is_some());
        let filters: Vec<Filter> =
            if all_have_job && (by_job.len() <= statuses.len() || !all_have_status) {
                by_job
                    .iter()
                    .map(|j| Filter {
                        job_id: Some((*j).to_owned()),
                        ..Filter::default()
                    })
                    .collect()
            } else if all_have_status {
                statuses
                    .iter()
                    .map(|s| Filter {
                        status: Some((*s).clone()),
                        ..Filter::default()
                    })
                    .collect()
            } else {
                Vec::new()
            };
        for filter in &filters {
            match recheck(client, target, filter, &mut seen).await {
                Ok(n) => requests += n,
                Err(f) => return Err(failed(f.error, seen, requests + f.requests)),
            }
        }
        // By status, a sub-job missing from its status's list has left it:
        // its parent job tells where it went.
        let left: BTreeSet<&str> = outside
            .iter()
            .filter(|t| !seen.contains(t.sub_job_id()))
            .filter_map(|t| t.job.job_id.as_deref())
            .collect();
        if filters.iter().any(|f| f.status.is_some()) {
            for job_id in left {
                let filter = Filter {
                    job_id: Some(job_id.to_owned()),
                    ..Filter::default()
                };
                match recheck(client, target, &filter, &mut seen).await {
                    Ok(n) => requests += n,
                    Err(f) => return Err(failed(f.error, seen, requests + f.requests)),
                }
            }
        }
        let missing = outside
            .iter()
            .filter(|t| !seen.contains(t.sub_job_id()))
            .count();
        if missing > 0 && unaccounted.is_none() {
            unaccounted = Some(format!("{missing} active sub-job(s) were not found"));
        }
    }
    Ok(Incremental::Read {
        items: seen.into_items(),
        count,
        requests,
        unaccounted,
    })
}

/// Every sub-job matching `filter`, into `seen`; the requests it took.
async fn recheck(
    client: &Client,
    target: &Target,
    filter: &Filter,
    seen: &mut Unique,
) -> Result<u32, ScanFailed> {
    let found = client
        .scan(&target.project_id, &target.job_type, filter, |_| {})
        .await?;
    for job in found.items {
        seen.insert(job);
    }
    Ok(found.requests)
}
