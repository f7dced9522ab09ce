//! The drift-safe full scan: every page at `limit=100` until `offset >=
//! count`, in one walk that survives a list changing under it.
//!
//! The list is newest first, so a sub-job created during the walk pushes
//! the rest down one place: the next page repeats an item (dropped by id),
//! nothing is skipped, and the walk goes on instead of starting again. A
//! deletion pulls the rest up, so the walk steps back by as many places as
//! `count` fell before reading on: that re-reads an overlap and skips
//! nothing either. When the walk ends, the newest pages are read again
//! until they show nothing unseen, to pick up what was created meanwhile.
//! Every id is accounted for: the scan is complete only when it read as
//! many unique items as the final `count`, none unreadable, with no
//! deletion during the walk. It is *covering* (enough to take as a
//! baseline) when it read at least that many, none unreadable. A scan that
//! is not complete still returns what it saw, so the caller can update
//! what it saw without inferring absences.

use std::collections::HashMap;

use jiff::{SignedDuration, Timestamp};

use super::client::{Client, Filter, MAX_LIMIT};
use super::error::ClientError;
use super::model::{JobType, RejectedItem, SubJob};

/// How many times the newest pages are read again at the end of a walk,
/// at most, to catch what was created during it.
pub const MAX_TOP_UPS: u32 = 5;

/// How far a sub-job listed later may begin after one listed earlier
/// before the list counts as not newest first: clocks of one parent job's
/// sub-jobs may differ by a little.
pub const ORDER_TOLERANCE: SignedDuration = SignedDuration::from_secs(1);

/// Checks, item by item, that a list is newest first (within
/// [`ORDER_TOLERANCE`]); items without a readable `begin_time` are skipped.
#[derive(Debug, Default)]
pub struct OrderCheck {
    /// The earliest `begin_time` listed so far, and whose it is.
    earliest: Option<(Timestamp, String)>,
}

impl OrderCheck {
    /// The first item listed out of order, described.
    pub fn see(&mut self, job: &SubJob) -> Option<String> {
        let begin = job.begin_time.as_ref().and_then(|t| t.parsed)?;
        if let Some((before, id)) = &self.earliest {
            if begin.duration_since(*before) > ORDER_TOLERANCE {
                return Some(format!(
                    "{} (begun {begin}) is listed after {id} (begun {before})",
                    job.id
                ));
            }
            if begin >= *before {
                return None;
            }
        }
        self.earliest = Some((begin, job.id.clone()));
        None
    }
}

/// Where a scan stands, for progress bars.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScanProgress {
    pub fetched: u64,
    pub total: u64,
}

/// What a full scan found.
#[derive(Debug, Clone)]
pub struct FullScan {
    /// Unique by id, in the API's order (newest first).
    pub items: Vec<SubJob>,
    /// The API's `count` on the last page read.
    pub count: u64,
    /// Every id the final `count` accounts for was read, none unreadable,
    /// and nothing was deleted during the walk. Only a complete scan may
    /// be used to infer that a sub-job is gone.
    pub complete: bool,
    /// At least as many unique items as `count` were read, none
    /// unreadable: what was not seen before is news from now on.
    pub covering: bool,
    /// Items that could not be read (each makes the scan incomplete).
    pub rejected: Vec<RejectedItem>,
    /// A page listed an item out of newest-first order: the first such,
    /// described.
    pub misordered: Option<String>,
    /// Why the scan is incomplete, when it is.
    pub incomplete_reason: Option<String>,
    pub requests: u32,
}

/// A scan that failed on an API error; `seen` is what it read before.
#[derive(Debug, thiserror::Error)]
#[error("{error}")]
pub struct ScanFailed {
    #[source]
    pub error: ClientError,
    pub seen: Vec<SubJob>,
    pub requests: u32,
}

/// Items unique by id, later reads replacing earlier ones in place.
#[derive(Debug, Default)]
pub struct Unique {
    items: Vec<SubJob>,
    index: HashMap<String, usize>,
}

impl Unique {
    /// Adds or replaces `job`; true when its id is new.
    pub fn insert(&mut self, job: SubJob) -> bool {
        match self.index.get(&job.id) {
            Some(&at) => {
                self.items[at] = job;
                false
            }
            None => {
                self.index.insert(job.id.clone(), self.items.len());
                self.items.push(job);
                true
            }
        }
    }

    pub fn contains(&self, id: &str) -> bool {
        self.index.contains_key(id)
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn into_items(self) -> Vec<SubJob> {
        self.items
    }
}

impl Client {
    /// Reads every sub-job of `job_type` in `project_id` (see the module
    /// docs for the guarantees). `progress` is called after each page.
    pub async fn scan(
        &self,
        project_id: &str,
        job_type: &JobType,
        filter: &Filter,
        mut progress: impl FnMut(ScanProgress),
    ) -> Result<FullScan, ScanFailed> {
        let mut walk = Walk::default();
        match walk
            .run(self, project_id, job_type, filter, &mut progress)
            .await
        {
            Ok(()) => Ok(walk.finish()),
            Err(error) => Err(ScanFailed {
                error,
                seen: walk.seen.into_items(),
                requests: walk.requests,
            }),
        }
    }
}

/// One walk over the list and what it found.
#[derive(Debug, Default)]
struct Walk {
    seen: Unique,
    /// Unreadable items, by their place in the list when read.
    rejected: HashMap<u64, RejectedItem>,
    requests: u32,
    count: u64,
    /// `count` fell at some point: something was deleted meanwhile.
    shrank: bool,
    /// The walk gave up before reaching the end (see `run`).
    stopped: Option<String>,
    misordered: Option<String>,
}

impl Walk {
    /// Reads the page at `offset`; returns how many items it held and how
    /// many of them were new.
    async fn page(
        &mut self,
        client: &Client,
        project_id: &str,
        job_type: &JobType,
        filter: &Filter,
        offset: u64,
    ) -> Result<(usize, usize), ClientError> {
        let page = client
            .list_page(project_id, job_type, filter, offset, MAX_LIMIT)
            .await?;
        self.requests += 1;
        self.count = page.count;
        let on_page = page.items.len() + page.rejected.len();
        for mut r in page.rejected {
            let at = offset + r.index as u64;
            r.index = usize::try_from(at).unwrap_or(usize::MAX);
            self.rejected.insert(at, r);
        }
        let mut new = 0;
        // Within one page: pages read again at other offsets interleave.
        let mut order = OrderCheck::default();
        for job in page.items {
            if self.misordered.is_none() {
                self.misordered = order.see(&job);
            }
            if self.seen.insert(job) {
                new += 1;
            }
        }
        Ok((on_page, new))
    }

    async fn run(
        &mut self,
        client: &Client,
        project_id: &str,
        job_type: &JobType,
        filter: &Filter,
        progress: &mut impl FnMut(ScanProgress),
    ) -> Result<(), ClientError> {
        let limit = u64::from(MAX_LIMIT);
        let mut offset = 0u64;
        let mut last_count: Option<u64> = None;
        let mut budget = u64::MAX;
        loop {
            if u64::from(self.requests) >= budget {
                self.stopped = Some(format!(
                    "the list kept changing: stopped after {} requests at offset {offset} of {}",
                    self.requests, self.count
                ));
                return Ok(());
            }
            let (on_page, _) = self
                .page(client, project_id, job_type, filter, offset)
                .await?;
            progress(ScanProgress {
                fetched: self.seen.len() as u64,
                total: self.count,
            });
            let count = self.count;
            // A walk that keeps stepping back could go on for ever: it may
            // take twice the pages the first count needs, and a few more.
            budget = budget.min(2 * count.div_ceil(limit) + 10);
            if let Some(last) = last_count
                && count < last
            {
                // Deletions since the last page pulled what this page holds
                // up by as many places, past where it starts: step back and
                // read the overlap again.
                self.shrank = true;
                last_count = Some(count);
                offset = offset.saturating_sub(last - count);
                continue;
            }
            last_count = Some(count);
            if on_page == 0 && offset < count {
                self.stopped = Some(format!(
                    "the list ended at offset {offset} though its count is {count}"
                ));
                return Ok(());
            }
            offset += limit;
            if offset >= count {
                break;
            }
        }
        // What was created during the walk sits above where it started.
        for _ in 0..MAX_TOP_UPS {
            if self.seen.len() as u64 + self.rejected.len() as u64 >= self.count {
                break;
            }
            let before = self.seen.len();
            let mut offset = 0;
            // The newest pages, down to one that reaches what was read.
            loop {
                let (on_page, new) = self
                    .page(client, project_id, job_type, filter, offset)
                    .await?;
                offset += limit;
                if new < on_page || offset >= self.count {
                    break;
                }
            }
            if self.seen.len() == before {
                break;
            }
        }
        progress(ScanProgress {
            fetched: self.seen.len() as u64,
            total: self.count,
        });
        Ok(())
    }

    fn finish(self) -> FullScan {
        let unique = self.seen.len() as u64;
        let readable = self.rejected.is_empty();
        let covering = readable && self.stopped.is_none() && unique >= self.count;
        let complete = covering && !self.shrank && unique == self.count;
        let incomplete_reason = if complete {
            None
        } else if let Some(stopped) = self.stopped {
            Some(stopped)
        } else if !readable {
            let first = self.rejected.values().min_by_key(|r| r.index);
            Some(format!(
                "{} item(s) could not be read, e.g. {}",
                self.rejected.len(),
                first.map(|r| r.reason.as_str()).unwrap_or_default()
            ))
        } else if unique < self.count {
            Some(format!(
                "the list kept changing: {unique} unique items for a count of {}",
                self.count
            ))
        } else {
            Some(format!(
                "sub-jobs were deleted during the scan ({unique} read, {} now)",
                self.count
            ))
        };
        let mut rejected: Vec<RejectedItem> = self.rejected.into_values().collect();
        rejected.sort_by_key(|r| r.index);
        FullScan {
            items: self.seen.into_items(),
            count: self.count,
            complete,
            covering,
            rejected,
            misordered: self.misordered,
            incomplete_reason,
            requests: self.requests,
        }
    }
}
