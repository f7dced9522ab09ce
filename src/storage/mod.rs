//! The engine's storage: what the poller, the dispatcher, the daemon and
//! the CLI need from durable state, named for what they do, not for SQL.
//! [`crate::store`] (one SQLite file) is the first backend, and
//! [`Storage::open`] is the one place a backend is opened.
//!
//! The operations are shaped for a replicated backend too (several daemons
//! sharing one PostgreSQL database):
//! - a cycle's commit carries a [`Fence`], the proof that this process may
//!   write the target now; SQLite's is its file lock ([`Fence::Sole`]), a
//!   replicated backend's would be a per-target lease's fencing token,
//!   checked in the commit's transaction;
//! - the dispatcher claims due rows as an [`Owner`] for a lease
//!   ([`Storage::claim`]) and records each outcome, so several replicas
//!   never send one row at once, and rows a dead replica held come back
//!   once its lease runs out.

pub mod records;

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::Timestamp;

use crate::cloud::model::SubJob;
use crate::config::StateConfig;
use crate::pg::PgStore;
use crate::store::{Delivery, SharedStore, Store};
use crate::watch::{Target, TargetSnapshot};

pub use crate::pg::cluster::{ClusterStore, LeaseRow, MemberRow};
pub use crate::store::StoreError;
pub use records::{
    AttemptRecord, CycleCommit, CycleWrite, DeliveryRecord, DueRef, Export, Fence, HistoryEntry,
    HistoryQuery, Lease, NotifierBacklog, OutboxCounts, OutboxRow, OutboxState, Outcome, Owner,
    PendingOutlook, RouteRecord, TargetSummary,
};

use crate::silence::{NewSilence, Silence};

/// How to open the state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenMode {
    /// `run` and `once`: [`OpenMode::ReadWrite`], as the one process that
    /// polls and delivers with this state; a second is refused.
    Exclusive,
    /// Create it if needed and bring its schema up to date (`state retry`,
    /// `state forget-target`: they may run beside a daemon).
    ReadWrite,
    /// `once --dry-run`: read what exists, create and write nothing (a
    /// missing state file is an empty store in memory).
    DryRun,
    /// `check`: read an existing file as it is; write nothing, ever.
    ReadOnly,
}

/// The engine's storage: one of the backends.
#[derive(Debug, Clone)]
pub enum Storage {
    /// One SQLite file, its calls on the blocking pool.
    Sqlite(SharedStore),
    /// A PostgreSQL database a cluster of replicas shares.
    Postgres(PgStore),
}

impl From<SharedStore> for Storage {
    fn from(store: SharedStore) -> Storage {
        Storage::Sqlite(store)
    }
}

impl From<Store> for Storage {
    fn from(store: Store) -> Storage {
        Storage::Sqlite(SharedStore::new(store))
    }
}

impl Storage {
    /// Opens the configured state (`state.url`, else `state.path`).
    pub async fn open(state: &StateConfig, mode: OpenMode) -> Result<Storage, StoreError> {
        if let Some(url) = &state.url {
            // Replicas share the database, so no mode is exclusive; only
            // `check` and `--dry-run` leave the schema as it is.
            let migrate = matches!(mode, OpenMode::Exclusive | OpenMode::ReadWrite);
            return Ok(Storage::Postgres(PgStore::connect(url, migrate).await?));
        }
        let path = state.path.clone();
        let store = tokio::task::spawn_blocking(move || match mode {
            OpenMode::DryRun if !path.exists() => Store::open_in_memory(),
            OpenMode::Exclusive => Store::open_exclusive(&path),
            OpenMode::ReadWrite => Store::open(&path),
            OpenMode::DryRun | OpenMode::ReadOnly => Store::open_read_only(&path),
        })
        .await;
        match store {
            Ok(store) => Ok(Storage::from(store?)),
            // Blocking tasks are never cancelled: a panic in `open`.
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }

    /// The cluster's tables, when the state is a database replicas share.
    pub fn cluster(&self) -> Option<ClusterStore> {
        match self {
            Storage::Sqlite(_) => None,
            Storage::Postgres(p) => Some(ClusterStore::new(p.clone())),
        }
    }

    /// Where the state is, as it may be shown.
    pub fn shown(&self) -> String {
        match self {
            Storage::Sqlite(s) => s.path_shown(),
            Storage::Postgres(p) => p.url().shown().to_owned(),
        }
    }

    /// The stored snapshot of `target`; empty and not baselined if the
    /// target was never scanned.
    pub async fn load_snapshot(&self, target: &Target) -> Result<TargetSnapshot, StoreError> {
        let target = target.clone();
        match self {
            Storage::Sqlite(s) => s.call(move |s| s.load_snapshot(&target)).await,
            Storage::Postgres(p) => p.load_snapshot(&target).await,
        }
    }

    /// The whole stored sub-jobs of `target` with these ids.
    pub async fn sub_jobs(
        &self,
        target: &Target,
        ids: Vec<String>,
    ) -> Result<BTreeMap<String, SubJob>, StoreError> {
        let target = target.clone();
        match self {
            Storage::Sqlite(s) => s.call(move |s| s.sub_jobs(&target, &ids)).await,
            Storage::Postgres(p) => p.sub_jobs(&target, &ids).await,
        }
    }

    /// Commits one cycle in one transaction; a delivery already in the
    /// outbox (same event id and notifier) counts as a duplicate. On any
    /// error nothing is written.
    pub async fn commit_cycle(&self, write: CycleWrite) -> Result<CycleCommit, StoreError> {
        match self {
            Storage::Sqlite(s) => {
                s.call(move |s| {
                    let routes = write.route_records();
                    let CycleWrite {
                        target,
                        outcome,
                        routed,
                        now,
                        // SQLite's fence is its file lock.
                        fence: _,
                    } = &write;
                    // What a silence or window holds is in the history only.
                    let deliveries: Vec<Delivery<'_>> = routed
                        .iter()
                        .filter(|(_, r)| r.held.is_none())
                        .map(|(i, r)| Delivery {
                            event: &outcome.events[*i],
                            notifier: &r.notifier,
                            group: r.group.as_ref(),
                        })
                        .collect();
                    s.commit_routed(target, outcome, &deliveries, &routes, *now)
                })
                .await
            }
            Storage::Postgres(p) => p.commit_cycle(&write).await,
        }
    }

    /// Where the first `limit` due pending rows with an id above `after`
    /// go, by id, without their payloads. Reading claims nothing.
    pub async fn due_refs(
        &self,
        now: Timestamp,
        after: i64,
        limit: usize,
    ) -> Result<Vec<DueRef>, StoreError> {
        match self {
            Storage::Sqlite(s) => s.call(move |s| s.due_refs(now, after, limit)).await,
            Storage::Postgres(p) => p.due_refs(now, after, limit).await,
        }
    }

    /// Claims for `owner` until `now + lease` those of `ids` still pending
    /// and due that nobody holds, and reads them whole (payloads are read
    /// here, when they are about to be sent). A row another owner holds is
    /// not claimed before that owner's lease runs out; a row `owner` holds
    /// stays its own until it records an outcome or releases it (its
    /// delivery may wait long for the rate), so it is never claimed twice
    /// by one owner. Reading and claiming are one step: a row recorded a
    /// moment ago is never handed out as still pending.
    pub async fn claim(
        &self,
        owner: &Owner,
        ids: Vec<i64>,
        now: Timestamp,
        lease: Duration,
    ) -> Result<Vec<OutboxRow>, StoreError> {
        let owner = owner.clone();
        match self {
            Storage::Sqlite(s) => s.call(move |s| s.claim(&owner, &ids, now, lease)).await,
            Storage::Postgres(p) => p.claim(&owner, &ids, now, lease).await,
        }
    }

    /// Records several attempts' outcomes (one attempt each of its rows)
    /// in one transaction, and releases their claims; a row no longer
    /// pending is left alone. On an error nothing is recorded and the rows
    /// are due again at their time.
    pub async fn record_many(
        &self,
        owner: &Owner,
        outcomes: Vec<(Vec<i64>, Outcome)>,
    ) -> Result<(), StoreError> {
        let owner = owner.clone();
        match self {
            Storage::Sqlite(s) => s.call(move |s| s.record_many(&owner, &outcomes)).await,
            Storage::Postgres(p) => p.record_many(&owner, &outcomes).await,
        }
    }

    /// Gives up `owner`'s claims on `ids` without an attempt: they are
    /// anyone's again at their time.
    pub async fn release(&self, owner: &Owner, ids: Vec<i64>) {
        let owner = owner.clone();
        match self {
            Storage::Sqlite(s) => s.call(move |s| s.release(&owner, &ids)).await,
            Storage::Postgres(p) => p.release(&owner, &ids).await,
        }
    }

    /// Every dead letter, oldest first.
    pub async fn dead_letters(&self) -> Result<Vec<OutboxRow>, StoreError> {
        match self {
            Storage::Sqlite(s) => s.call(|s| s.dead()).await,
            Storage::Postgres(p) => p.dead().await,
        }
    }

    /// The newest `limit` dead letters, newest first (what the console
    /// shows; `state dead` lists them all).
    pub async fn newest_dead_letters(&self, limit: usize) -> Result<Vec<OutboxRow>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        match self {
            Storage::Sqlite(s) => s.call(move |s| s.newest_dead(limit)).await,
            Storage::Postgres(p) => p.newest_dead(limit).await,
        }
    }

    /// Requeues dead letters (`ids`, or all of them when empty) for
    /// delivery now, with a fresh attempt count and `max_age`. Returns how
    /// many were requeued.
    pub async fn requeue_dead(&self, ids: Vec<i64>, now: Timestamp) -> Result<usize, StoreError> {
        match self {
            Storage::Sqlite(s) => s.call(move |s| s.retry_dead(&ids, now)).await,
            Storage::Postgres(p) => p.retry_dead(&ids, now).await,
        }
    }

    /// Why the pending rows wait (see [`PendingOutlook`]).
    pub async fn pending_outlook(&self) -> Result<PendingOutlook, StoreError> {
        match self {
            Storage::Sqlite(s) => s.call(|s| s.pending_outlook()).await,
            Storage::Postgres(p) => p.pending_outlook().await,
        }
    }

    pub async fn outbox_counts(&self) -> Result<OutboxCounts, StoreError> {
        match self {
            Storage::Sqlite(s) => {
                s.call(|s| {
                    Ok(OutboxCounts {
                        pending: s.pending_count()?,
                        dead: s.dead_count()?,
                    })
                })
                .await
            }
            Storage::Postgres(p) => {
                let (pending, dead) = p.counts().await?;
                Ok(OutboxCounts { pending, dead })
            }
        }
    }

    /// The pending rows by notifier, by name.
    pub async fn backlog(&self) -> Result<Vec<NotifierBacklog>, StoreError> {
        match self {
            Storage::Sqlite(s) => s.call(|s| s.backlog()).await,
            Storage::Postgres(p) => p.backlog().await,
        }
    }

    /// Every target with a stored snapshot, by project then job type.
    pub async fn targets(&self) -> Result<Vec<TargetSummary>, StoreError> {
        match self {
            Storage::Sqlite(s) => s.call(|s| s.targets()).await,
            Storage::Postgres(p) => p.targets().await,
        }
    }

    /// Forgets a target's snapshot (its next scan is a new baseline); its
    /// outbox rows stay. Returns how many sub-jobs were forgotten.
    pub async fn forget_target(&self, target: &Target) -> Result<usize, StoreError> {
        let target = target.clone();
        match self {
            Storage::Sqlite(s) => s.call(move |s| s.forget_target(&target)).await,
            Storage::Postgres(p) => p.forget_target(&target).await,
        }
    }

    /// A parent job's sub-jobs in the snapshot, by status.
    pub async fn job_tally(
        &self,
        project_id: &str,
        job_id: &str,
    ) -> Result<BTreeMap<String, u64>, StoreError> {
        let (project_id, job_id) = (project_id.to_owned(), job_id.to_owned());
        match self {
            Storage::Sqlite(s) => s.call(move |s| s.job_tally(&project_id, &job_id)).await,
            Storage::Postgres(p) => p.job_tally(&project_id, &job_id).await,
        }
    }

    /// Everything the state holds, whole (`state migrate` reads a file).
    pub async fn export(&self) -> Result<Export, StoreError> {
        match self {
            Storage::Sqlite(s) => s.call(|s| s.export()).await,
            Storage::Postgres(_) => Err(StoreError::Unsupported(
                "state migrate copies from an SQLite state file (state.path), not from PostgreSQL",
            )),
        }
    }

    /// Whether nothing is stored yet: no target, no outbox row, no silence.
    pub async fn is_empty(&self) -> Result<bool, StoreError> {
        match self {
            Storage::Sqlite(s) => {
                s.call(|s| {
                    let e = s.export()?;
                    Ok(e.targets.is_empty() && e.outbox.is_empty() && e.silences.is_empty())
                })
                .await
            }
            Storage::Postgres(p) => p.is_empty().await,
        }
    }

    /// Writes a whole state into this empty one, in one transaction.
    pub async fn import(&self, export: &Export) -> Result<(), StoreError> {
        match self {
            Storage::Sqlite(_) => Err(StoreError::Unsupported(
                "state migrate writes to PostgreSQL (--to postgres://…)",
            )),
            Storage::Postgres(p) => p.import(export).await,
        }
    }

    /// Deletes dead letters that died before `older_than`.
    pub async fn purge_dead(&self, older_than: Timestamp) -> Result<usize, StoreError> {
        match self {
            Storage::Sqlite(s) => s.call(move |s| s.purge_dead(older_than)).await,
            Storage::Postgres(p) => p.purge_dead(older_than).await,
        }
    }

    /// The history `query` asks for: events with their routes and
    /// deliveries, oldest first.
    pub async fn history(&self, query: HistoryQuery) -> Result<Vec<HistoryEntry>, StoreError> {
        match self {
            Storage::Sqlite(s) => s.call(move |s| s.history(&query)).await,
            Storage::Postgres(p) => p.history(&query).await,
        }
    }

    /// Deletes events and attempts from before `older_than`, and silences
    /// that ended before it.
    pub async fn prune_history(&self, older_than: Timestamp) -> Result<usize, StoreError> {
        match self {
            Storage::Sqlite(s) => s.call(move |s| s.prune_history(older_than)).await,
            Storage::Postgres(p) => p.prune_history(older_than).await,
        }
    }

    /// Adds a silence; returns it with its id.
    pub async fn add_silence(
        &self,
        new: NewSilence,
        now: Timestamp,
    ) -> Result<Silence, StoreError> {
        match self {
            Storage::Sqlite(s) => s.call(move |s| s.add_silence(&new, now)).await,
            Storage::Postgres(p) => p.add_silence(&new, now).await,
        }
    }

    /// Every silence kept, by id (expired ones until the history is pruned).
    pub async fn silences(&self) -> Result<Vec<Silence>, StoreError> {
        match self {
            Storage::Sqlite(s) => s.call(|s| s.silences(None)).await,
            Storage::Postgres(p) => p.silences(None).await,
        }
    }

    /// The silences active at `now`: what routing holds events by.
    pub async fn active_silences(&self, now: Timestamp) -> Result<Vec<Silence>, StoreError> {
        match self {
            Storage::Sqlite(s) => s.call(move |s| s.silences(Some(now))).await,
            Storage::Postgres(p) => p.silences(Some(now)).await,
        }
    }

    /// Ends silence `id` now (one already ended stays as it is); `None`
    /// if there is no such silence.
    pub async fn expire_silence(
        &self,
        id: i64,
        now: Timestamp,
    ) -> Result<Option<Silence>, StoreError> {
        match self {
            Storage::Sqlite(s) => s.call(move |s| s.expire_silence(id, now)).await,
            Storage::Postgres(p) => p.expire_silence(id, now).await,
        }
    }

    /// Deletes delivered rows finished before `older_than`. Returns how
    /// many were deleted.
    pub async fn prune_delivered(&self, older_than: Timestamp) -> Result<usize, StoreError> {
        match self {
            Storage::Sqlite(s) => s.call(move |s| s.prune_delivered(older_than)).await,
            Storage::Postgres(p) => p.prune_delivered(older_than).await,
        }
    }
}
