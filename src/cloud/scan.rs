//! The drift-safe full scan (SPEC §5): every page at `limit=100` until
//! `offset >= count`, duplicates across pages dropped by id, the whole scan
//! repeated (a bounded number of times) when `count` changes or pages
//! disagree. A scan that cannot complete says so and still returns what it
//! saw, so the caller can update what it saw without inferring absences.

use std::collections::HashMap;

use super::client::{Client, Filter, MAX_LIMIT};
use super::error::ClientError;
use super::model::{JobType, RejectedItem, SubJob};

/// Passes before a drifting scan is given up as incomplete.
pub const MAX_PASSES: u32 = 3;

/// Where a scan stands, for progress bars.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScanProgress {
    pub pass: u32,
    pub fetched: u64,
    pub total: u64,
}

/// What a full scan found.
#[derive(Debug, Clone)]
pub struct FullScan {
    /// Unique by id, in the API's order (newest first).
    pub items: Vec<SubJob>,
    /// The API's `count` on the last pass.
    pub count: u64,
    /// Every page read with one stable `count`, every item readable, and
    /// as many unique items as `count` says. Only a complete scan may be
    /// used to infer that a sub-job is gone.
    pub complete: bool,
    /// Items that could not be read (each makes the scan incomplete).
    pub rejected: Vec<RejectedItem>,
    /// Why the scan is incomplete, when it is.
    pub incomplete_reason: Option<String>,
    pub passes: u32,
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
#[derive(Default)]
struct Unique {
    items: Vec<SubJob>,
    index: HashMap<String, usize>,
}

impl Unique {
    fn insert(&mut self, job: SubJob) -> bool {
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
}

enum Pass {
    Complete {
        count: u64,
        rejected: Vec<RejectedItem>,
    },
    Drifted {
        count: u64,
        reason: String,
    },
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
        // Everything seen on any pass, for an incomplete result.
        let mut everything = Unique::default();
        let mut requests = 0u32;
        let mut last_reason = String::new();
        let mut last_count = 0;
        for pass in 1..=MAX_PASSES {
            let mut this_pass = Unique::default();
            let outcome = self
                .scan_pass(
                    project_id,
                    job_type,
                    filter,
                    pass,
                    &mut this_pass,
                    &mut requests,
                    &mut progress,
                )
                .await;
            let outcome = match outcome {
                Ok(outcome) => outcome,
                Err(error) => {
                    for job in this_pass.items {
                        everything.insert(job);
                    }
                    return Err(ScanFailed {
                        error,
                        seen: everything.items,
                        requests,
                    });
                }
            };
            match outcome {
                Pass::Complete { count, rejected } => {
                    let incomplete_reason = (!rejected.is_empty()).then(|| {
                        format!(
                            "{} item(s) could not be read, e.g. {}",
                            rejected.len(),
                            rejected[0].reason
                        )
                    });
                    return Ok(FullScan {
                        items: this_pass.items,
                        count,
                        complete: rejected.is_empty(),
                        rejected,
                        incomplete_reason,
                        passes: pass,
                        requests,
                    });
                }
                Pass::Drifted { count, reason } => {
                    tracing::debug!(project_id, %job_type, pass, %reason, "list drifted during a scan; reading again");
                    for job in this_pass.items {
                        everything.insert(job);
                    }
                    last_reason = reason;
                    last_count = count;
                }
            }
        }
        Ok(FullScan {
            items: everything.items,
            count: last_count,
            complete: false,
            rejected: Vec::new(),
            incomplete_reason: Some(format!(
                "the list kept changing during {MAX_PASSES} passes ({last_reason})"
            )),
            passes: MAX_PASSES,
            requests,
        })
    }

    #[allow(clippy::too_many_arguments)]
    async fn scan_pass(
        &self,
        project_id: &str,
        job_type: &JobType,
        filter: &Filter,
        pass: u32,
        seen: &mut Unique,
        requests: &mut u32,
        progress: &mut impl FnMut(ScanProgress),
    ) -> Result<Pass, ClientError> {
        let mut offset = 0u64;
        let mut first_count = None;
        let mut rejected = Vec::new();
        let mut read = 0u64;
        loop {
            let page = self
                .list_page(project_id, job_type, filter, offset, MAX_LIMIT)
                .await?;
            *requests += 1;
            let count = *first_count.get_or_insert(page.count);
            if page.count != count {
                return Ok(Pass::Drifted {
                    count: page.count,
                    reason: format!(
                        "count went from {count} to {} at offset {offset}",
                        page.count
                    ),
                });
            }
            let on_page = (page.items.len() + page.rejected.len()) as u64;
            read += on_page;
            rejected.extend(page.rejected.into_iter().map(|mut r| {
                r.index += offset as usize;
                r
            }));
            for job in page.items {
                seen.insert(job);
            }
            progress(ScanProgress {
                pass,
                fetched: seen.items.len() as u64,
                total: count,
            });
            offset += u64::from(MAX_LIMIT);
            if offset >= count {
                break;
            }
            if on_page < u64::from(MAX_LIMIT) {
                return Ok(Pass::Drifted {
                    count,
                    reason: format!(
                        "a page at offset {} held {on_page} items of {count}",
                        offset - u64::from(MAX_LIMIT)
                    ),
                });
            }
        }
        // The loop ran at least once, so the first page set the count.
        let count = first_count.unwrap_or_default();
        let unique = seen.items.len() as u64 + rejected.len() as u64;
        if unique != count || read < count {
            return Ok(Pass::Drifted {
                count,
                reason: format!("{unique} unique items for a count of {count}"),
            });
        }
        Ok(Pass::Complete { count, rejected })
    }
}
