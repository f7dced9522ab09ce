//! The poller: one reconciling cycle per target (scan → diff → one
//! transaction), and the loop that repeats it with jitter, an active pace
//! and a backoff for failing targets.

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use rand::Rng;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::Target;
use super::diff::{DiffOutcome, DiffSettings, Scan, TargetSnapshot, diff};
use super::event::{Event, EventKind};
use super::strategy::{ReadKind, ScanPlan, Strategy};
use crate::cloud::{Client, ClientError};
use crate::metrics::{EventLabels, Metrics, PollLabels, TargetLabels};
use crate::retry::Backoff;
use crate::route::{Routed, Router};
use crate::storage::{CycleCommit, CycleWrite, Fence, Storage, StoreError};

/// What one cycle of one target did; the CLI prints it, the loop paces on it.
#[derive(Debug, Clone)]
pub struct CycleReport {
    pub target: Target,
    pub events: Vec<Event>,
    pub commit: CycleCommit,
    pub complete: bool,
    /// Whether the cycle read the whole list or only what changed.
    pub read: ReadKind,
    pub tracked: usize,
    pub active: usize,
    pub requests: u32,
    /// This cycle recorded the target's baseline: what already existed is
    /// now known, silently (unless `notify_existing`).
    pub baselined_now: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum CycleError {
    #[error("{target}: {source}")]
    Api {
        target: Target,
        #[source]
        source: ClientError,
        /// Events from what the failed scan did see (already committed).
        partial: Box<Option<CycleReport>>,
    },
    #[error("{target}: {source}")]
    Store {
        target: Target,
        #[source]
        source: StoreError,
    },
}

/// Everything a cycle needs.
#[derive(Debug)]
pub struct CycleContext {
    pub client: Arc<Client>,
    pub store: Storage,
    pub router: Router,
    pub diff: DiffSettings,
    pub metrics: Arc<Metrics>,
    /// `once --dry-run`: scan and diff, write and send nothing.
    pub dry_run: bool,
    /// `poll.strategy` and `poll.full_scan_every`.
    pub strategy: Strategy,
    pub full_scan_every: Duration,
}

/// What a poll loop keeps about its target between cycles: when to read
/// it how, and its snapshot, loaded at the first cycle and then kept in
/// step with each commit, so a cycle costs what changed, not the history.
#[derive(Debug, Clone)]
pub struct TargetState {
    pub plan: ScanPlan,
    snapshot: Option<TargetSnapshot>,
    /// The right to commit this target's cycles.
    pub fence: Fence,
}

impl TargetState {
    pub fn new(plan: ScanPlan) -> TargetState {
        TargetState {
            plan,
            snapshot: None,
            fence: Fence::Sole,
        }
    }

    /// The state a poll loop of `ctx` starts with.
    pub fn for_loop(ctx: &CycleContext) -> TargetState {
        TargetState::new(ScanPlan::new(ctx.strategy, ctx.full_scan_every))
    }
}

/// One reconciling cycle: read the target's current state, compare it with
/// the stored one, and commit the snapshot and the outbox rows together.
/// Safe to repeat: the same transition yields the same event id, and the
/// outbox ignores copies.
pub async fn cycle(
    ctx: &CycleContext,
    target: &Target,
    state: &mut TargetState,
) -> Result<CycleReport, CycleError> {
    let before = match state.snapshot.take() {
        Some(snapshot) => snapshot,
        None => {
            let loaded =
                ctx.store
                    .load_snapshot(target)
                    .await
                    .map_err(|source| CycleError::Store {
                        target: target.clone(),
                        source,
                    })?;
            // Loading a large one used about as much again, now free.
            if loaded.jobs.len() >= RELEASE_AFTER_CHANGES {
                release_freed_memory();
            }
            loaded
        }
    };
    let started = std::time::Instant::now();
    let read = state.plan.read(&ctx.client, target, &before).await;
    let labels = TargetLabels {
        target: target.to_string(),
    };
    ctx.metrics
        .scan_seconds
        .get_or_create(&labels)
        .observe(started.elapsed().as_secs_f64());
    let (scan, kind, requests, failure) = match read {
        Ok(read) => {
            if let Some(reason) = &read.incomplete_reason {
                tracing::warn!(%target, %reason, "scan incomplete; nothing will be inferred from absences");
            }
            (read.scan, read.kind, read.requests, None)
        }
        // What a failed read saw still counts (its events are real), but
        // nothing is inferred from what it did not see.
        Err(failed) => (
            Scan::partial(failed.seen),
            ReadKind::Incremental,
            failed.requests,
            Some(failed.error),
        ),
    };
    let report = if scan.items.is_empty() && failure.is_some() {
        state.snapshot = Some(before);
        None
    } else {
        Some(apply(ctx, target, before, scan, kind, requests, state).await?)
    };
    match failure {
        Some(source) => Err(CycleError::Api {
            target: target.clone(),
            source,
            partial: Box::new(report),
        }),
        // `report` is `None` only when there was a failure.
        None => Ok(report.expect("a successful scan always yields a report")),
    }
}

async fn apply(
    ctx: &CycleContext,
    target: &Target,
    before: TargetSnapshot,
    scan: Scan,
    read: ReadKind,
    requests: u32,
    state: &mut TargetState,
) -> Result<CycleReport, CycleError> {
    let now = Timestamp::now();
    let mut outcome = diff(target, &before, &scan, now, &ctx.diff);
    fill_vanished(ctx, target, &mut outcome).await?;
    // Silences are read when there is something to hold: a cycle without
    // events costs no query.
    let silences = if outcome.events.is_empty() {
        Vec::new()
    } else {
        ctx.store
            .active_silences(now)
            .await
            .map_err(|source| CycleError::Store {
                target: target.clone(),
                source,
            })?
    };
    let routed: Vec<(usize, Routed)> = outcome
        .events
        .iter()
        .enumerate()
        .flat_map(|(i, e)| {
            ctx.router
                .route(e, now, &silences)
                .into_iter()
                .map(move |r| (i, r))
        })
        .collect();
    let baselined_now = !before.baselined && outcome.baselined;
    let mut after = before;
    after.apply(&outcome);
    let changes = outcome.changes.len();
    let (tracked, active) = (after.jobs.len(), after.active_count());
    let commit = if ctx.dry_run {
        CycleCommit::default()
    } else {
        // The write takes the changes (all of a baseline's rows); the
        // report keeps the events.
        let events = outcome.events.clone();
        let write = CycleWrite {
            target: target.clone(),
            outcome: std::mem::replace(
                &mut outcome,
                DiffOutcome {
                    events,
                    ..DiffOutcome::default()
                },
            ),
            routed,
            now,
            fence: state.fence.clone(),
        };
        // On a failed commit the snapshot is read again next cycle.
        ctx.store
            .commit_cycle(write)
            .await
            .map_err(|source| CycleError::Store {
                target: target.clone(),
                source,
            })?
    };
    let complete = scan.complete;
    // After a large cycle (a baseline) this cycle's memory goes back to the
    // OS and the snapshot is read back from the store next cycle: built
    // afresh it sits compactly, not among the holes the scan left.
    if changes >= RELEASE_AFTER_CHANGES && !ctx.dry_run {
        drop((after, scan));
        release_freed_memory();
    } else {
        state.snapshot = Some(after);
    }
    let labels = TargetLabels {
        target: target.to_string(),
    };
    ctx.metrics
        .tracked
        .get_or_create(&labels)
        .set(tracked as i64);
    for event in &outcome.events {
        ctx.metrics
            .events
            .get_or_create(&EventLabels {
                kind: event.kind.as_str(),
                to: Metrics::status_label(event.to.as_ref()),
            })
            .inc();
        tracing::debug!(%target, event_id = %event.event_id, kind = event.kind.as_str(), "detected");
    }
    Ok(CycleReport {
        target: target.clone(),
        events: outcome.events,
        commit,
        complete,
        read,
        tracked,
        active,
        requests,
        baselined_now,
    })
}

/// A cycle that changed at least this many rows (a large baseline) hands
/// the memory its scan and diff used back to the OS.
const RELEASE_AFTER_CHANGES: usize = 10_000;

/// glibc keeps what a large cycle freed (its pages, rows and JSON) for the
/// process, which would then stay at the scan's peak for good; the
/// snapshot it leaves is a fraction of that.
fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free heap pages to the OS; it
    // touches no memory in use.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// A `vanished` event comes from the in-memory snapshot, which keeps only
/// what the diff needs; its details come from the stored sub-job.
async fn fill_vanished(
    ctx: &CycleContext,
    target: &Target,
    outcome: &mut DiffOutcome,
) -> Result<(), CycleError> {
    let ids: Vec<String> = outcome
        .events
        .iter()
        .filter(|e| e.kind == EventKind::Vanished)
        .map(|e| e.sub_job_id.clone())
        .collect();
    if ids.is_empty() {
        return Ok(());
    }
    let stored = ctx
        .store
        .sub_jobs(target, ids)
        .await
        .map_err(|source| CycleError::Store {
            target: target.clone(),
            source,
        })?;
    for event in &mut outcome.events {
        if let Some(job) = stored.get(&event.sub_job_id) {
            event.fill_from(job);
        }
    }
    Ok(())
}

/// Pacing of the poll loop.
#[derive(Debug, Clone, Copy)]
pub struct Pace {
    pub interval: Duration,
    pub active_interval: Duration,
    pub max_backoff: Duration,
}

/// What a poll loop tells its owner (liveness, the dispatcher's wake-up,
/// the heartbeat).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Beat {
    CycleStarted,
    /// `store_failed`: the cycle could not read or commit the state.
    CycleFinished {
        ok: bool,
        store_failed: bool,
        summary: CycleSummary,
    },
    /// The target's lease went to another replica: this one no longer
    /// polls it (its health is the other's to report).
    Released,
}

/// What the console shows of a cycle that ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CycleSummary {
    /// Requests the cycle made (a failed one: none counted).
    pub requests: u32,
    /// Sub-jobs tracked and active after it (a failed one: unknown).
    pub tracked: Option<usize>,
    pub active: Option<usize>,
    pub read: Option<ReadKind>,
    /// Why it failed.
    pub error: Option<String>,
    /// When the next cycle starts.
    pub next_in: Duration,
}

/// Whether this process may poll a target now, and the fence its commits
/// carry: always [`Fence::Sole`] on SQLite ([`sole_gate`]), the target's
/// lease while this replica holds it in a cluster (`None` otherwise).
pub type Gate = watch::Receiver<Option<Fence>>;

/// The gate of a process that is the only writer of its state.
pub fn sole_gate() -> Gate {
    watch::channel(Some(Fence::Sole)).1
}

/// The gate's fence once there is one; `None` at shutdown.
async fn granted(gate: &mut Gate, shutdown: &CancellationToken) -> Option<Fence> {
    loop {
        if let Some(fence) = gate.borrow_and_update().clone() {
            return Some(fence);
        }
        tokio::select! {
            changed = gate.changed() => {
                if changed.is_err() {
                    // Nobody will open it again.
                    shutdown.cancelled().await;
                    return None;
                }
            }
            _ = shutdown.cancelled() => return None,
        }
    }
}

/// Resolves once the gate no longer holds `fence` (the lease was lost or
/// handed over).
async fn revoked(mut gate: Gate, fence: &Fence) {
    loop {
        if gate.borrow_and_update().as_ref() != Some(fence) {
            return;
        }
        if gate.changed().await.is_err() {
            return std::future::pending().await;
        }
    }
}

/// Polls one target until `shutdown`, while `gate` lets it; `beat` hears
/// when each cycle starts and ends. A new grant of the gate (another
/// replica may have written meanwhile) starts from the stored snapshot,
/// at once.
pub async fn poll_loop(
    ctx: Arc<CycleContext>,
    target: Target,
    pace: Pace,
    mut gate: Gate,
    shutdown: CancellationToken,
    beat: impl Fn(&Target, Beat) + Send,
) {
    // Spread targets over the first active interval rather than all at once.
    let first = jitter_up_to(pace.active_interval.min(pace.interval));
    if sleep_or_stop(first, &shutdown).await {
        return;
    }
    let backoff = Backoff {
        base: pace.active_interval,
        cap: pace.max_backoff,
        max_attempts: 0,
        jitter: true,
    };
    let mut failures = 0u32;
    let mut last_problem: Option<String> = None;
    let mut state = TargetState::for_loop(&ctx);
    loop {
        if gate.borrow().is_none() && matches!(state.fence, Fence::Lease(_)) {
            // Handed over between cycles.
            state = TargetState::for_loop(&ctx);
            beat(&target, Beat::Released);
        }
        let Some(fence) = granted(&mut gate, &shutdown).await else {
            return;
        };
        if fence != state.fence {
            if let Fence::Lease(lease) = &fence {
                tracing::info!(%target, generation = lease.generation, "polling: this replica holds the target's lease");
            }
            state = TargetState::for_loop(&ctx);
            state.fence = fence.clone();
        }
        beat(&target, Beat::CycleStarted);
        // Dropping a cycle half-way is safe: its commit is one transaction
        // that either happened or did not.
        let result = tokio::select! {
            result = cycle(&ctx, &target, &mut state) => result,
            _ = shutdown.cancelled() => return,
            _ = revoked(gate.clone(), &fence) => Err(CycleError::Store {
                target: target.clone(),
                source: StoreError::Fenced { target: target.to_string() },
            }),
        };
        if let Err(CycleError::Store {
            source: StoreError::Fenced { .. },
            ..
        }) = &result
        {
            // Another replica polls it now; what this cycle saw, it sees.
            tracing::info!(%target, "lease lost; another replica polls this target now");
            state = TargetState::for_loop(&ctx);
            state.fence = Fence::Sole;
            beat(&target, Beat::Released);
            // A commit refused while the gate still says ours (the
            // membership has not heard yet) is not retried at once: the
            // next try waits for the gate to change, or an active interval.
            tokio::select! {
                _ = gate.changed() => {}
                _ = tokio::time::sleep(pace.active_interval) => {}
                _ = shutdown.cancelled() => return,
            }
            continue;
        }
        let poll_labels = |result| PollLabels {
            target: target.to_string(),
            result,
        };
        let next = match &result {
            Ok(report) => {
                ctx.metrics.polls.get_or_create(&poll_labels("ok")).inc();
                ctx.metrics
                    .last_successful_poll
                    .get_or_create(&TargetLabels {
                        target: target.to_string(),
                    })
                    .set(crate::metrics::unix_now());
                if last_problem.take().is_some() {
                    tracing::info!(%target, "polling recovered");
                }
                failures = 0;
                if !report.events.is_empty() {
                    tracing::info!(%target, events = report.events.len(), queued = report.commit.inserted, "transitions detected");
                }
                if report.active > 0 {
                    pace.active_interval
                } else {
                    pace.interval
                }
            }
            Err(error) => {
                ctx.metrics.polls.get_or_create(&poll_labels("error")).inc();
                failures += 1;
                // Logged once per change of state, not once per poll.
                let problem = problem_key(error);
                if last_problem.as_ref() != Some(&problem) {
                    tracing::warn!(%target, error = %error, "polling failed; backing off");
                    last_problem = Some(problem);
                } else {
                    tracing::debug!(%target, error = %error, "polling still failing");
                }
                backoff.delay(failures).max(pace.active_interval)
            }
        };
        let store_failed = matches!(result, Err(CycleError::Store { .. }));
        let next = with_jitter(next);
        let summary = match &result {
            Ok(report) => CycleSummary {
                requests: report.requests,
                tracked: Some(report.tracked),
                active: Some(report.active),
                read: Some(report.read),
                error: None,
                next_in: next,
            },
            Err(error) => CycleSummary {
                requests: 0,
                tracked: None,
                active: None,
                read: None,
                error: Some(error.to_string()),
                next_in: next,
            },
        };
        beat(
            &target,
            Beat::CycleFinished {
                ok: result.is_ok(),
                store_failed,
                summary,
            },
        );
        if sleep_or_stop(next, &shutdown).await {
            return;
        }
    }
}

/// What makes two failures "the same" for logging: status and error code,
/// or the kind of failure when the API did not answer.
fn problem_key(error: &CycleError) -> String {
    match error {
        CycleError::Api { source, .. } => match source {
            ClientError::Api(api) => {
                format!("{} {}", api.status, api.error_code.as_deref().unwrap_or(""))
            }
            ClientError::Transport { .. } => "transport".into(),
            ClientError::Timeout { .. } => "timeout".into(),
            ClientError::Decode { .. } => "decode".into(),
            ClientError::Auth(_) => "auth".into(),
            ClientError::Invalid(_) => "invalid".into(),
            ClientError::Redirect { .. } => "redirect".into(),
            ClientError::TooLarge { .. } => "too large".into(),
        },
        CycleError::Store { .. } => "store".into(),
    }
}

/// ±10 % so targets that started together drift apart.
fn with_jitter(d: Duration) -> Duration {
    let factor = rand::rng().random_range(0.9..=1.1);
    d.mul_f64(factor)
}

fn jitter_up_to(d: Duration) -> Duration {
    if d.is_zero() {
        return d;
    }
    rand::rng().random_range(Duration::ZERO..d)
}

/// Sleeps; true if `shutdown` came first.
async fn sleep_or_stop(d: Duration, shutdown: &CancellationToken) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => false,
        _ = shutdown.cancelled() => true,
    }
}
