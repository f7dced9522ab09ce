//! The state file: each target's snapshot and the outbox of deliveries, in
//! SQLite. Nothing else in jobwatch writes SQL.
//!
//! Durability is the product: a cycle's snapshot changes and its outbox
//! rows are committed in one transaction ([`Store::commit_cycle`]), with
//! `synchronous=FULL`, so a crash at any instant loses no event and sends
//! none twice from our side. The API is synchronous; the daemon calls it
//! from one owner thread or `spawn_blocking` (`Store` is `Send`).

mod schema;
mod shared;

pub use crate::storage::records::{
    CycleCommit, OutboxRow, OutboxState, PendingOutlook, TargetSummary,
};
pub use shared::SharedStore;

use std::collections::{BTreeMap, HashMap};
use std::fs::{DirBuilder, OpenOptions};
use std::path::{Path, PathBuf};
use std::time::Duration;

use jiff::Timestamp;
use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSqlOutput, ValueRef};
use rusqlite::{Connection, OptionalExtension, ToSql, Transaction, TransactionBehavior, params};

use crate::cloud::model::{Status, SubJob};
use crate::route::Grouping;
use crate::silence::{NewSilence, Silence};
use crate::storage::records::{
    AttemptRecord, DueRef, Export, HistoryEntry, HistoryQuery, Outcome, Owner, RouteRecord,
    SnapshotRecord, TargetRecord, assemble_history, summarize,
};
use crate::watch::diff::keep_job_id;
use crate::watch::{Change, DiffOutcome, Event, Target, TargetSnapshot, Tracked, fingerprint_json};

/// How long a statement waits for another connection's lock (a `state`
/// command beside the daemon) before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot create {path}")]
    Create {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot open state file {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("state file {path}: migrating the schema to version {version} failed")]
    Migrate {
        path: PathBuf,
        version: u32,
        #[source]
        source: rusqlite::Error,
    },
    #[error(
        "state file {path} has schema version {found}, newer than the {supported} this jobwatch \
         supports; run a newer jobwatch or point state.path at another file"
    )]
    NewerSchema {
        path: PathBuf,
        found: u32,
        supported: u32,
    },
    #[error(
        "state file {path} has schema version {found}, older than the {supported} this jobwatch \
         reads without writing; `jobwatch run` or `once` brings it up to date"
    )]
    OlderSchema {
        path: PathBuf,
        found: u32,
        supported: u32,
    },
    #[error(
        "state file {path} is in use by another jobwatch{}; one daemon (or `once`) per state \
         file: stop it, or point state.path at another file",
        holder.map(|pid| format!(" (pid {pid})")).unwrap_or_default()
    )]
    Locked { path: PathBuf, holder: Option<u32> },
    /// SQLite's own words are part of the message (not only its source):
    /// a log line must say "database or disk is full", not just what we
    /// were doing.
    #[error("state store: {context}: {error}")]
    Sql {
        context: &'static str,
        error: rusqlite::Error,
    },
    /// PostgreSQL's words (severity, message, detail) are part of the
    /// message, as SQLite's are.
    #[error("state database: {context}: {words}")]
    Pg {
        context: &'static str,
        words: String,
    },
    #[error("state database {url}: cannot connect: {error}")]
    Connect { url: String, error: String },
    #[error(
        "state database {url} has schema version {found}, not the {supported} this jobwatch \
         reads without writing; `jobwatch run` brings an older one up to date"
    )]
    PgSchema {
        url: String,
        found: i32,
        supported: i32,
    },
    #[error("state database: migrating the schema to version {version} failed: {words}")]
    PgMigrate { version: i32, words: String },
    /// A stored value that does not read (a time, a payload).
    #[error("state store: {context}: {error}")]
    Value {
        context: &'static str,
        error: String,
    },
    /// The commit's lease on its target is no longer ours: another replica
    /// holds it, and this cycle's work is dropped (it re-detects the same).
    #[error("{target}: not committed: the target's lease is another replica's")]
    Fenced { target: String },
    /// What this backend does not do (`state cluster` on a file).
    #[error("{0}")]
    Unsupported(&'static str),
}

/// Creates the directory of a state file, private to the user (0700).
fn make_parent(path: &Path) -> Result<(), StoreError> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        let mut dir = DirBuilder::new();
        dir.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut dir, 0o700);
        dir.create(parent).map_err(|source| StoreError::Create {
            path: parent.to_owned(),
            source,
        })?;
    }
    Ok(())
}

/// Wraps a rusqlite error with what we were doing.
fn sql(context: &'static str) -> impl FnOnce(rusqlite::Error) -> StoreError {
    move |error| StoreError::Sql { context, error }
}

/// One outbox row to write: an event routed to a notifier.
#[derive(Debug, Clone, Copy)]
pub struct Delivery<'a> {
    pub event: &'a Event,
    pub notifier: &'a str,
    /// The route's grouping (`group_window`): the row is stored with the
    /// group's key and waits until the group's window closes, which
    /// [`Grouping::not_before`] decides. Kept in the row, so a crash inside
    /// the window loses nothing. `None`: sent alone, at once.
    pub group: Option<&'a Grouping>,
}

/// The state file. Owns one SQLite connection.
#[derive(Debug)]
pub struct Store {
    conn: Connection,
    path: PathBuf,
    /// Who holds which outbox rows ([`Store::claim_due`]). In memory: a
    /// state file belongs to one daemon, and a claim must not outlive its
    /// process (after a crash its rows are owed at once, not after a lease).
    claims: HashMap<i64, Claim>,
    /// Held by the one process that polls and delivers with this file.
    _lock: Option<StateLock>,
}

/// The lock of the one writer of a state file: `PATH.lock`, locked with
/// `flock` for the life of the process (the kernel drops it when the
/// process dies, however it dies), our pid written in it for the next one
/// to name.
#[derive(Debug)]
struct StateLock {
    _file: std::fs::File,
}

impl StateLock {
    fn take(path: &Path) -> Result<StateLock, StoreError> {
        use std::io::{Read, Seek, Write};
        let mut lock_path = path.as_os_str().to_owned();
        lock_path.push(".lock");
        let lock_path = PathBuf::from(lock_path);
        let mut options = OpenOptions::new();
        options.read(true).write(true).create(true).truncate(false);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let create = |source| StoreError::Create {
            path: lock_path.clone(),
            source,
        };
        let mut file = options.open(&lock_path).map_err(create)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                return Err(StoreError::Locked {
                    path: path.to_owned(),
                    holder: text.trim().parse().ok(),
                });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(create(e)),
        }
        file.set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| writeln!(file, "{}", std::process::id()))
            .map_err(create)?;
        Ok(StateLock { _file: file })
    }
}

#[derive(Debug)]
struct Claim {
    owner: Owner,
    until: Timestamp,
}

impl Store {
    /// The schema version this build writes.
    pub const SCHEMA_VERSION: u32 = schema::MIGRATIONS.len() as u32;

    /// Opens (creating if needed) the state file at `path` and brings its
    /// schema up to date. A new file and its directory are private to the
    /// user (0600, 0700); a file of a newer schema is refused.
    pub fn open(path: impl AsRef<Path>) -> Result<Store, StoreError> {
        let path = path.as_ref();
        make_parent(path)?;
        // Create the file ourselves so it is never, even briefly, readable
        // by others; SQLite gives its -wal and -shm files the same mode. An
        // existing file keeps the mode its owner chose.
        let mut file = OpenOptions::new();
        file.read(true).write(true).create(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut file, 0o600);
        file.open(path).map_err(|source| StoreError::Create {
            path: path.to_owned(),
            source,
        })?;

        let conn = Connection::open(path).map_err(|source| StoreError::Open {
            path: path.to_owned(),
            source,
        })?;
        Store::setup(conn, path.to_owned())
    }

    /// [`Store::open`] for the one process that polls and delivers with
    /// this file (`run`, `once`): a second one, while this one lives, is
    /// refused with [`StoreError::Locked`] naming the holder's pid.
    pub fn open_exclusive(path: impl AsRef<Path>) -> Result<Store, StoreError> {
        let path = path.as_ref();
        // Before anything is read or migrated.
        make_parent(path)?;
        let lock = StateLock::take(path)?;
        let mut store = Store::open(path)?;
        store._lock = Some(lock);
        Ok(store)
    }

    /// Opens an existing state file only to read it: nothing is created,
    /// migrated or written, so it works on a file the caller cannot write.
    /// A file of another schema version is refused.
    pub fn open_read_only(path: impl AsRef<Path>) -> Result<Store, StoreError> {
        let path = path.as_ref().to_owned();
        let open_error = |source| StoreError::Open {
            path: path.clone(),
            source,
        };
        let conn = Connection::open_with_flags(
            &path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(open_error)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(open_error)?;
        let found = user_version(&conn).map_err(open_error)?;
        let supported = Store::SCHEMA_VERSION;
        if found > supported {
            return Err(StoreError::NewerSchema {
                path,
                found,
                supported,
            });
        }
        if found < supported {
            return Err(StoreError::OlderSchema {
                path,
                found,
                supported,
            });
        }
        Ok(Store {
            conn,
            path,
            claims: HashMap::new(),
            _lock: None,
        })
    }

    /// A store that lives in memory: for `once --dry-run` and tests.
    pub fn open_in_memory() -> Result<Store, StoreError> {
        let path = PathBuf::from(":memory:");
        let conn = Connection::open_in_memory().map_err(|source| StoreError::Open {
            path: path.clone(),
            source,
        })?;
        Store::setup(conn, path)
    }

    fn setup(mut conn: Connection, path: PathBuf) -> Result<Store, StoreError> {
        let open_error = |source| StoreError::Open {
            path: path.clone(),
            source,
        };
        conn.busy_timeout(BUSY_TIMEOUT).map_err(open_error)?;
        // The first statement that reads the file: a file that is not a
        // database fails here, as an `Open` error naming the path. In
        // memory the answer is "memory", which is fine.
        let _mode: String = conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
            .map_err(open_error)?;
        // FULL: a committed cycle survives power loss, not just a crash.
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(open_error)?;
        conn.pragma_update(None, "foreign_keys", true)
            .map_err(open_error)?;
        migrate(&mut conn, &path)?;
        Ok(Store {
            conn,
            path,
            claims: HashMap::new(),
            _lock: None,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file's schema version (`PRAGMA user_version`).
    pub fn schema_version(&self) -> Result<u32, StoreError> {
        user_version(&self.conn).map_err(sql("read schema version"))
    }

    /// The stored snapshot of `target`; empty and not baselined if the
    /// target was never scanned.
    pub fn load_snapshot(&self, target: &Target) -> Result<TargetSnapshot, StoreError> {
        let context = "load snapshot";
        let row: Option<(bool, Option<DbTime>)> = self
            .conn
            .query_row(
                "SELECT baselined, full_scan_at FROM targets
                 WHERE project_id = ?1 AND job_type = ?2",
                params![target.project_id, target.job_type.as_str()],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .optional()
            .map_err(sql(context))?;
        let Some((baselined, full_scan_at)) = row else {
            return Ok(TargetSnapshot::default());
        };
        // What the in-memory snapshot keeps, from the columns; the begin
        // time from the JSON by SQLite, and the JSON itself only hashed.
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT sub_job_id, status, error_code, job_id,
                        json_extract(job_json, '$.begin_time'),
                        since, stuck_reported, missing_scans, job_json
                 FROM snapshot WHERE project_id = ?1 AND job_type = ?2",
            )
            .map_err(sql(context))?;
        let mut rows = stmt
            .query(params![target.project_id, target.job_type.as_str()])
            .map_err(sql(context))?;
        // Collected, then built at once: full nodes (see `TargetSnapshot::apply`).
        let mut jobs = Vec::new();
        while let Some(row) = rows.next().map_err(sql(context))? {
            let read = || -> rusqlite::Result<(String, Tracked)> {
                let text = |i: usize| -> rusqlite::Result<Option<Box<str>>> {
                    Ok(row.get::<_, Option<String>>(i)?.map(String::into_boxed_str))
                };
                let begin = match row.get_ref(4)? {
                    ValueRef::Text(t) => std::str::from_utf8(t)
                        .ok()
                        .and_then(crate::cloud::model::parse_api_time),
                    _ => None,
                };
                let status = row.get::<_, Option<String>>(1)?.map(Status::from);
                let job_id = keep_job_id(status.as_ref(), text(3)?.as_deref());
                let tracked = Tracked {
                    status,
                    error_code: text(2)?,
                    job_id,
                    begin,
                    since: row.get::<_, DbTime>(5)?.0,
                    stuck_reported: row.get(6)?,
                    missing_scans: row.get(7)?,
                    fingerprint: fingerprint_json(row.get_ref(8)?.as_bytes()?),
                };
                Ok((row.get::<_, String>(0)?, tracked))
            };
            jobs.push(read().map_err(sql(context))?);
        }
        let jobs = jobs.into_iter().collect();
        Ok(TargetSnapshot {
            baselined,
            jobs,
            full_scan_at: full_scan_at.map(|t| t.0),
        })
    }

    /// The whole stored sub-jobs of `target` with these ids (those it
    /// tracks; an unknown id is left out).
    pub fn sub_jobs(
        &self,
        target: &Target,
        ids: &[String],
    ) -> Result<BTreeMap<String, SubJob>, StoreError> {
        let context = "read sub-jobs";
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT job_json FROM snapshot
                 WHERE project_id = ?1 AND job_type = ?2 AND sub_job_id = ?3",
            )
            .map_err(sql(context))?;
        let mut jobs = BTreeMap::new();
        for id in ids {
            let job = stmt
                .query_row(
                    params![target.project_id, target.job_type.as_str(), id],
                    |row| Ok(row.get::<_, JsonCol<SubJob>>(0)?.0),
                )
                .optional()
                .map_err(sql(context))?;
            if let Some(job) = job {
                jobs.insert(id.clone(), job);
            }
        }
        Ok(jobs)
    }

    /// Persists one cycle of `target` in ONE transaction: the snapshot
    /// changes, the baseline flag and an outbox row per delivery. A delivery
    /// already in the outbox (same event id and notifier) is counted as a
    /// duplicate and not added again. On any error nothing is written.
    pub fn commit_cycle(
        &mut self,
        target: &Target,
        outcome: &DiffOutcome,
        deliveries: &[Delivery<'_>],
        now: Timestamp,
    ) -> Result<CycleCommit, StoreError> {
        // The history's routes, as far as the deliveries tell them: the
        // route's index is in a group's key, else it reads as route 0.
        let mut routes = vec![Vec::new(); outcome.events.len()];
        for d in deliveries {
            if let Some(i) = outcome
                .events
                .iter()
                .position(|e| e.event_id == d.event.event_id)
            {
                let route = match d.group.map(|g| &g.key) {
                    Some(crate::route::GroupKey::Route { route })
                    | Some(crate::route::GroupKey::Job { route, .. }) => *route,
                    _ => 0,
                };
                routes[i].push(RouteRecord {
                    route,
                    notifier: d.notifier.to_owned(),
                    group_key: d.group.map(|g| g.key.to_string()),
                    held: None,
                });
            }
        }
        self.commit_routed(target, outcome, deliveries, &routes, now)
    }

    /// As [`Store::commit_cycle`], with each event's routes for the
    /// history given (held ones among them; `deliveries` are those sent).
    pub fn commit_routed(
        &mut self,
        target: &Target,
        outcome: &DiffOutcome,
        deliveries: &[Delivery<'_>],
        routes: &[Vec<RouteRecord>],
        now: Timestamp,
    ) -> Result<CycleCommit, StoreError> {
        // IMMEDIATE: take the write lock up front, so a concurrent writer
        // makes us wait (busy_timeout) rather than fail halfway.
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql("begin cycle"))?;
        // On error `tx` is dropped, which rolls everything back.
        let commit = write_cycle(&tx, target, outcome, deliveries, now)?;
        write_events(&tx, outcome, routes)?;
        tx.commit().map_err(sql("commit cycle"))?;
        Ok(commit)
    }

    /// Pending rows whose `next_attempt_at` has come, oldest first (by id,
    /// which is the order events were committed in).
    pub fn due(&self, now: Timestamp, limit: usize) -> Result<Vec<OutboxRow>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.outbox_rows(
            "due outbox rows",
            "WHERE state = 'pending' AND next_attempt_at <= ?1 ORDER BY id LIMIT ?2",
            params![DbTime(now), limit],
        )
    }

    /// The first `limit` due pending rows with an id above `after`, by id:
    /// only where each goes, not its payload (that is read when it is
    /// sent, [`Store::claim`]).
    pub fn due_refs(
        &self,
        now: Timestamp,
        after: i64,
        limit: usize,
    ) -> Result<Vec<DueRef>, StoreError> {
        let context = "due outbox rows";
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT id, notifier, group_key FROM outbox
                 WHERE state = 'pending' AND next_attempt_at <= ?1 AND id > ?2
                 ORDER BY id LIMIT ?3",
            )
            .map_err(sql(context))?;
        let rows = stmt
            .query_map(params![DbTime(now), after, limit], |row| {
                Ok(DueRef {
                    id: row.get(0)?,
                    notifier: row.get(1)?,
                    group_key: row.get(2)?,
                })
            })
            .map_err(sql(context))?;
        rows.collect::<Result<_, _>>().map_err(sql(context))
    }

    /// Claims for `owner` until `now + lease` those of `ids` that are
    /// still pending and due and that nobody holds, and reads them whole.
    /// A row another owner holds is free once that owner's lease runs out;
    /// one `owner` holds stays its own until it records or releases it, so
    /// it is never handed to one owner twice. The claims live in this
    /// handle, so reading and claiming are one step under `&mut self`.
    pub fn claim(
        &mut self,
        owner: &Owner,
        ids: &[i64],
        now: Timestamp,
        lease: Duration,
    ) -> Result<Vec<OutboxRow>, StoreError> {
        let until = now + lease;
        let mut claimed = Vec::with_capacity(ids.len());
        for &id in ids {
            let free = self
                .claims
                .get(&id)
                .is_none_or(|c| c.owner != *owner && c.until <= now);
            if !free {
                continue;
            }
            let row = self
                .outbox_rows(
                    "claim outbox row",
                    "WHERE id = ?1 AND state = 'pending' AND next_attempt_at <= ?2",
                    params![id, DbTime(now)],
                )?
                .pop();
            if let Some(row) = row {
                let owner = owner.clone();
                self.claims.insert(id, Claim { owner, until });
                claimed.push(row);
            }
        }
        Ok(claimed)
    }

    /// The first `limit` due rows ([`Store::due`]) that `owner` can claim,
    /// claimed ([`Store::claim`]).
    pub fn claim_due(
        &mut self,
        owner: &Owner,
        now: Timestamp,
        lease: Duration,
        limit: usize,
    ) -> Result<Vec<OutboxRow>, StoreError> {
        let ids: Vec<i64> = self.due_refs(now, 0, limit)?.iter().map(|r| r.id).collect();
        self.claim(owner, &ids, now, lease)
    }

    /// Records how the attempt at `ids` ended and releases `owner`'s claims
    /// on them ([`Store::record_many`] of one).
    pub fn record(
        &mut self,
        owner: &Owner,
        ids: &[i64],
        outcome: &Outcome,
    ) -> Result<(), StoreError> {
        self.record_many(owner, &[(ids.to_vec(), outcome.clone())])
    }

    /// Records several attempts' outcomes in ONE transaction (one sync of
    /// the file for all of them), and releases `owner`'s claims on their
    /// rows whatever happens: on an error nothing is recorded, and the rows
    /// are due again at their time (sent again: at least once).
    pub fn record_many(
        &mut self,
        owner: &Owner,
        outcomes: &[(Vec<i64>, Outcome)],
    ) -> Result<(), StoreError> {
        let context = "record deliveries";
        let result = (|| {
            let tx = self.conn.transaction().map_err(sql(context))?;
            for (ids, outcome) in outcomes {
                for &id in ids {
                    mark(&tx, id, outcome)?;
                }
            }
            tx.commit().map_err(sql(context))
        })();
        for (ids, _) in outcomes {
            self.release(owner, ids);
        }
        result
    }

    /// Drops `owner`'s claims on `ids`.
    pub fn release(&mut self, owner: &Owner, ids: &[i64]) {
        for id in ids {
            if self.claims.get(id).is_some_and(|c| c.owner == *owner) {
                self.claims.remove(id);
            }
        }
    }

    /// One outbox row by id.
    pub fn outbox_row(&self, id: i64) -> Result<Option<OutboxRow>, StoreError> {
        Ok(self
            .outbox_rows("read outbox row", "WHERE id = ?1", params![id])?
            .pop())
    }

    /// Every dead letter, oldest first.
    pub fn dead(&self) -> Result<Vec<OutboxRow>, StoreError> {
        self.outbox_rows(
            "list dead letters",
            "WHERE state = 'dead' ORDER BY id",
            params![],
        )
    }

    /// The newest `limit` dead letters, newest first.
    pub fn newest_dead(&self, limit: i64) -> Result<Vec<OutboxRow>, StoreError> {
        self.outbox_rows(
            "list dead letters",
            "WHERE state = 'dead' ORDER BY id DESC LIMIT ?1",
            params![limit],
        )
    }

    /// Records a successful delivery. Returns whether a pending row with
    /// this id existed.
    pub fn mark_delivered(&mut self, id: i64, now: Timestamp) -> Result<bool, StoreError> {
        mark(&self.conn, id, &Outcome::Delivered { at: now })
    }

    /// Records a retryable failure: one more attempt, the next not before
    /// `next_attempt_at` (from [`crate::retry::Backoff::DELIVERY`] or the
    /// receiver's `Retry-After`). Returns whether a pending row existed.
    pub fn mark_retry(
        &mut self,
        id: i64,
        next_attempt_at: Timestamp,
        error: &str,
    ) -> Result<bool, StoreError> {
        let outcome = Outcome::Retry {
            at: next_attempt_at,
            error: error.to_owned(),
            tried: Timestamp::now(),
        };
        mark(&self.conn, id, &outcome)
    }

    /// Records a permanent failure (or `max_age` reached): a dead letter,
    /// with the receiver's message kept. Returns whether a pending row existed.
    pub fn mark_dead(&mut self, id: i64, error: &str, now: Timestamp) -> Result<bool, StoreError> {
        let outcome = Outcome::Dead {
            at: now,
            reason: error.to_owned(),
        };
        mark(&self.conn, id, &outcome)
    }

    /// Requeues dead letters (`ids`, or all of them when empty) for delivery
    /// now, with a fresh attempt count and `max_age`. The last error is kept
    /// until the next attempt replaces it. Returns how many were requeued.
    pub fn retry_dead(&mut self, ids: &[i64], now: Timestamp) -> Result<usize, StoreError> {
        let context = "requeue dead letters";
        let tx = self.conn.transaction().map_err(sql(context))?;
        // The history first, while the rows still say `dead`.
        let note = "INSERT INTO attempts (outbox_id, event_id, notifier, at, verdict)
                    SELECT id, event_id, notifier, ?1, 'requeued' FROM outbox
                    WHERE state = 'dead'";
        let update = "UPDATE outbox SET state = 'pending', attempts = 0, queued_at = ?1,
                          next_attempt_at = ?1, finished_at = NULL
                      WHERE state = 'dead'";
        let n = if ids.is_empty() {
            tx.execute(note, params![DbTime(now)])
                .map_err(sql(context))?;
            tx.execute(update, params![DbTime(now)])
                .map_err(sql(context))?
        } else {
            let mut noted = tx
                .prepare(&format!("{note} AND id = ?2"))
                .map_err(sql(context))?;
            let mut stmt = tx
                .prepare(&format!("{update} AND id = ?2"))
                .map_err(sql(context))?;
            let mut n = 0;
            for id in ids {
                noted
                    .execute(params![DbTime(now), id])
                    .map_err(sql(context))?;
                n += stmt
                    .execute(params![DbTime(now), id])
                    .map_err(sql(context))?;
            }
            n
        };
        tx.commit().map_err(sql(context))?;
        Ok(n)
    }

    /// What is still pending, split by why: never tried (waiting for a
    /// group window, or just due) or failed before (waiting to retry),
    /// and the earliest next attempt of each.
    pub fn pending_outlook(&self) -> Result<PendingOutlook, StoreError> {
        self.conn
            .query_row(
                "SELECT count(*) FILTER (WHERE attempts = 0),
                        MIN(next_attempt_at) FILTER (WHERE attempts = 0),
                        count(*) FILTER (WHERE attempts > 0),
                        MIN(next_attempt_at) FILTER (WHERE attempts > 0)
                 FROM outbox WHERE state = 'pending'",
                [],
                |row| {
                    Ok(PendingOutlook {
                        untried: row.get::<_, i64>(0)? as u64,
                        untried_next: row.get::<_, Option<DbTime>>(1)?.map(|t| t.0),
                        retrying: row.get::<_, i64>(2)? as u64,
                        retrying_next: row.get::<_, Option<DbTime>>(3)?.map(|t| t.0),
                    })
                },
            )
            .map_err(sql("pending outlook"))
    }

    pub fn pending_count(&self) -> Result<u64, StoreError> {
        self.count_state(OutboxState::Pending)
    }

    pub fn dead_count(&self) -> Result<u64, StoreError> {
        self.count_state(OutboxState::Dead)
    }

    fn count_state(&self, state: OutboxState) -> Result<u64, StoreError> {
        self.conn
            .query_row(
                "SELECT count(*) FROM outbox WHERE state = ?1",
                params![state.as_str()],
                // SQLite integers are i64; a count is never negative.
                |row| row.get::<_, i64>(0).map(|n| n.unsigned_abs()),
            )
            .map_err(sql("count outbox rows"))
    }

    /// Every target with a stored snapshot, by project then job type.
    pub fn targets(&self) -> Result<Vec<TargetSummary>, StoreError> {
        let context = "list targets";
        // Counted by status here, classified by `summarize`.
        let mut stmt = self
            .conn
            .prepare(
                "SELECT t.project_id, t.job_type, t.baselined, t.updated_at, s.status,
                        count(s.sub_job_id)
                 FROM targets t LEFT JOIN snapshot s USING (project_id, job_type)
                 GROUP BY t.project_id, t.job_type, s.status
                 ORDER BY t.project_id, t.job_type",
            )
            .map_err(sql(context))?;
        let rows = stmt
            .query_map([], |row| {
                let target = Target::new(row.get::<_, String>(0)?, row.get::<_, String>(1)?);
                let baselined: bool = row.get(2)?;
                let updated_at = row.get::<_, DbTime>(3)?.0;
                let status: Option<String> = row.get(4)?;
                let count = usize::try_from(row.get::<_, i64>(5)?).unwrap_or(0);
                Ok((target, baselined, updated_at, status, count))
            })
            .map_err(sql(context))?;
        let rows = rows.collect::<Result<Vec<_>, _>>().map_err(sql(context))?;
        Ok(summarize(rows))
    }

    /// Forgets a target's snapshot (its next scan is a new baseline). Its
    /// outbox rows stay: those alerts are still owed. Returns how many
    /// sub-jobs were forgotten.
    pub fn forget_target(&mut self, target: &Target) -> Result<usize, StoreError> {
        let context = "forget target";
        let tx = self.conn.transaction().map_err(sql(context))?;
        let key = (target.project_id.as_str(), target.job_type.as_str());
        let n = tx
            .execute(
                "DELETE FROM snapshot WHERE project_id = ?1 AND job_type = ?2",
                key,
            )
            .map_err(sql(context))?;
        tx.execute(
            "DELETE FROM targets WHERE project_id = ?1 AND job_type = ?2",
            key,
        )
        .map_err(sql(context))?;
        tx.commit().map_err(sql(context))?;
        Ok(n)
    }

    /// Deletes delivered rows finished before `older_than`. Until then they
    /// show in `state show` and keep a re-detected transition from being
    /// sent again. Returns how many were deleted.
    /// Deletes the history (events, attempts) from before `older_than`,
    /// and silences that ended before it. Returns how many rows went.
    pub fn prune_history(&mut self, older_than: Timestamp) -> Result<usize, StoreError> {
        let context = "prune history";
        let tx = self.conn.transaction().map_err(sql(context))?;
        let mut n = 0;
        for stmt in [
            "DELETE FROM events WHERE observed_at < ?1",
            "DELETE FROM attempts WHERE at < ?1",
            "DELETE FROM silences WHERE ends_at < ?1",
        ] {
            n += tx
                .execute(stmt, params![DbTime(older_than)])
                .map_err(sql(context))?;
        }
        tx.commit().map_err(sql(context))?;
        Ok(n)
    }

    /// The pending rows by notifier.
    pub fn backlog(&self) -> Result<Vec<crate::storage::records::NotifierBacklog>, StoreError> {
        let context = "outbox backlog";
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT notifier, count(*), MIN(next_attempt_at) FROM outbox
                 WHERE state = 'pending' GROUP BY notifier ORDER BY notifier",
            )
            .map_err(sql(context))?;
        let rows = stmt
            .query_map([], |row| {
                Ok(crate::storage::records::NotifierBacklog {
                    notifier: row.get(0)?,
                    pending: row.get::<_, i64>(1)?.unsigned_abs(),
                    next_attempt_at: row.get::<_, Option<DbTime>>(2)?.map(|t| t.0),
                })
            })
            .map_err(sql(context))?;
        rows.collect::<Result<_, _>>().map_err(sql(context))
    }

    /// The events `query` asks for, each with its routes and deliveries.
    pub fn history(&self, query: &HistoryQuery) -> Result<Vec<HistoryEntry>, StoreError> {
        let context = "read history";
        let limit = i64::try_from(query.limit.max(1)).unwrap_or(i64::MAX);
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT event_id, payload_json, routes_json FROM events
                 WHERE (?1 IS NULL OR sub_job_id = ?1)
                   AND (?2 IS NULL OR job_id = ?2 OR (job_id IS NULL AND sub_job_id = ?2))
                   AND (?3 IS NULL OR observed_at >= ?3)
                 ORDER BY observed_at DESC, event_id DESC LIMIT ?4",
            )
            .map_err(sql(context))?;
        let mut events: Vec<(String, String, String)> = stmt
            .query_map(
                params![
                    query.sub_job_id,
                    query.job_id,
                    query.since.map(DbTime),
                    limit
                ],
                |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
            )
            .map_err(sql(context))?
            .collect::<Result<_, _>>()
            .map_err(sql(context))?;
        events.reverse();
        let mut outbox = Vec::new();
        let mut attempts = Vec::new();
        let mut rows = self
            .conn
            .prepare_cached(
                "SELECT id, event_id, notifier, state FROM outbox WHERE event_id = ?1 ORDER BY id",
            )
            .map_err(sql(context))?;
        let mut tries = self
            .conn
            .prepare_cached(
                "SELECT outbox_id, event_id, notifier, at, verdict, answer, next_at
                 FROM attempts WHERE event_id = ?1 ORDER BY id",
            )
            .map_err(sql(context))?;
        for (event_id, _, _) in &events {
            let found = rows
                .query_map(params![event_id], |row| {
                    Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
                })
                .map_err(sql(context))?;
            for row in found {
                outbox.push(row.map_err(sql(context))?);
            }
            let found = tries
                .query_map(params![event_id], |row| {
                    Ok((
                        row.get(0)?,
                        row.get(1)?,
                        row.get(2)?,
                        AttemptRecord {
                            at: row.get::<_, DbTime>(3)?.0,
                            verdict: row.get(4)?,
                            answer: row.get(5)?,
                            next_at: row.get::<_, Option<DbTime>>(6)?.map(|t| t.0),
                        },
                    ))
                })
                .map_err(sql(context))?;
            for row in found {
                attempts.push(row.map_err(sql(context))?);
            }
        }
        let events = events.into_iter().map(|(_, p, r)| (p, r)).collect();
        assemble_history(events, outbox, attempts)
            .map_err(|e| StoreError::Value { context, error: e })
    }

    /// Adds a silence; returns it with its id.
    pub fn add_silence(&mut self, new: &NewSilence, now: Timestamp) -> Result<Silence, StoreError> {
        let context = "add silence";
        self.conn
            .execute(
                "INSERT INTO silences (matchers, starts_at, ends_at, comment, created_by, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    crate::storage::records::matchers_json(&new.matchers),
                    DbTime(new.starts_at),
                    DbTime(new.ends_at),
                    new.comment,
                    new.created_by,
                    DbTime(now)
                ],
            )
            .map_err(sql(context))?;
        Ok(new.stored(self.conn.last_insert_rowid(), now))
    }

    /// Every silence kept (expired ones until the history is pruned), by
    /// id; `active_at`: only those active then.
    pub fn silences(&self, active_at: Option<Timestamp>) -> Result<Vec<Silence>, StoreError> {
        let context = "read silences";
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT id, matchers, starts_at, ends_at, comment, created_by, created_at
                 FROM silences WHERE ?1 IS NULL OR (starts_at <= ?1 AND ?1 < ends_at)
                 ORDER BY id",
            )
            .map_err(sql(context))?;
        let rows = stmt
            .query_map(params![active_at.map(DbTime)], |row| {
                Ok((
                    row.get::<_, i64>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, DbTime>(2)?.0,
                    row.get::<_, DbTime>(3)?.0,
                    row.get::<_, String>(4)?,
                    row.get::<_, String>(5)?,
                    row.get::<_, DbTime>(6)?.0,
                ))
            })
            .map_err(sql(context))?;
        let mut out = Vec::new();
        for row in rows {
            let (id, matchers, starts_at, ends_at, comment, created_by, created_at) =
                row.map_err(sql(context))?;
            let matchers = crate::storage::records::read_matchers(&matchers).map_err(|error| {
                StoreError::Value {
                    context,
                    error: format!("silence {id}: {error}"),
                }
            })?;
            out.push(Silence {
                id,
                matchers,
                starts_at,
                ends_at,
                comment,
                created_by,
                created_at,
            });
        }
        Ok(out)
    }

    /// Ends silence `id` at `now` if it has not ended; returns it as it is
    /// now, or `None` if there is no such silence.
    pub fn expire_silence(
        &mut self,
        id: i64,
        now: Timestamp,
    ) -> Result<Option<Silence>, StoreError> {
        self.conn
            .execute(
                "UPDATE silences SET ends_at = ?2 WHERE id = ?1 AND ends_at > ?2",
                params![id, DbTime(now)],
            )
            .map_err(sql("expire silence"))?;
        Ok(self.silences(None)?.into_iter().find(|s| s.id == id))
    }

    pub fn prune_delivered(&mut self, older_than: Timestamp) -> Result<usize, StoreError> {
        self.conn
            .execute(
                "DELETE FROM outbox WHERE state = 'delivered' AND finished_at < ?1",
                params![DbTime(older_than)],
            )
            .map_err(sql("prune delivered rows"))
    }

    /// How many sub-jobs of parent job `job_id` in `project_id` the
    /// snapshot holds, by status (every job type; `""` for none).
    pub fn job_tally(
        &self,
        project_id: &str,
        job_id: &str,
    ) -> Result<BTreeMap<String, u64>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT coalesce(status, ''), count(*) FROM snapshot
                 WHERE project_id = ?1 AND job_id = ?2 GROUP BY 1",
            )
            .map_err(sql("job tally"))?;
        let rows = stmt
            .query_map(params![project_id, job_id], |row| {
                Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)? as u64))
            })
            .map_err(sql("job tally"))?;
        rows.collect::<Result<_, _>>().map_err(sql("job tally"))
    }

    /// Deletes dead letters that died before `older_than` (`state purge`).
    pub fn purge_dead(&mut self, older_than: Timestamp) -> Result<usize, StoreError> {
        self.conn
            .execute(
                "DELETE FROM outbox WHERE state = 'dead' AND finished_at < ?1",
                params![DbTime(older_than)],
            )
            .map_err(sql("purge dead letters"))
    }

    /// Everything the file holds, whole (`state migrate`).
    pub fn export(&self) -> Result<Export, StoreError> {
        let context = "export the state";
        let mut stmt = self
            .conn
            .prepare(
                "SELECT project_id, job_type, baselined, updated_at, full_scan_at
                 FROM targets ORDER BY project_id, job_type",
            )
            .map_err(sql(context))?;
        let targets = stmt
            .query_map([], |row| {
                Ok(TargetRecord {
                    project_id: row.get(0)?,
                    job_type: row.get(1)?,
                    baselined: row.get(2)?,
                    updated_at: row.get::<_, DbTime>(3)?.0,
                    full_scan_at: row.get::<_, Option<DbTime>>(4)?.map(|t| t.0),
                })
            })
            .map_err(sql(context))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(sql(context))?;
        let mut stmt = self
            .conn
            .prepare(
                "SELECT project_id, job_type, sub_job_id, job_id, status, error_code, since,
                        stuck_reported, missing_scans, job_json
                 FROM snapshot ORDER BY project_id, job_type, sub_job_id",
            )
            .map_err(sql(context))?;
        let snapshot = stmt
            .query_map([], |row| {
                Ok(SnapshotRecord {
                    project_id: row.get(0)?,
                    job_type: row.get(1)?,
                    sub_job_id: row.get(2)?,
                    job_id: row.get(3)?,
                    status: row.get(4)?,
                    error_code: row.get(5)?,
                    since: row.get::<_, DbTime>(6)?.0,
                    stuck_reported: row.get(7)?,
                    missing_scans: row.get(8)?,
                    job_json: row.get(9)?,
                })
            })
            .map_err(sql(context))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(sql(context))?;
        let outbox = self.outbox_rows(context, "ORDER BY id", params![])?;
        let mut stmt = self
            .conn
            .prepare(
                "SELECT event_id, project_id, job_type, sub_job_id, job_id, observed_at,
                        payload_json, routes_json
                 FROM events ORDER BY observed_at, rowid",
            )
            .map_err(sql(context))?;
        let events = stmt
            .query_map([], |row| {
                Ok(crate::storage::records::EventRow {
                    event_id: row.get(0)?,
                    project_id: row.get(1)?,
                    job_type: row.get(2)?,
                    sub_job_id: row.get(3)?,
                    job_id: row.get(4)?,
                    observed_at: row.get(5)?,
                    payload_json: row.get(6)?,
                    routes_json: row.get(7)?,
                })
            })
            .map_err(sql(context))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(sql(context))?;
        let mut stmt = self
            .conn
            .prepare(
                "SELECT outbox_id, event_id, notifier, at, verdict, answer, next_at
                 FROM attempts ORDER BY id",
            )
            .map_err(sql(context))?;
        let attempts = stmt
            .query_map([], |row| {
                Ok(crate::storage::records::AttemptRow {
                    outbox_id: row.get(0)?,
                    event_id: row.get(1)?,
                    notifier: row.get(2)?,
                    at: row.get(3)?,
                    verdict: row.get(4)?,
                    answer: row.get(5)?,
                    next_at: row.get(6)?,
                })
            })
            .map_err(sql(context))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(sql(context))?;
        let silences = self.silences(None)?;
        Ok(Export {
            targets,
            snapshot,
            outbox,
            events,
            attempts,
            silences,
        })
    }

    fn outbox_rows(
        &self,
        context: &'static str,
        filter: &str,
        params: &[&dyn ToSql],
    ) -> Result<Vec<OutboxRow>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(&format!(
                "SELECT id, event_id, notifier, group_key, project_id, job_type, sub_job_id,
                        kind, payload_json, state, attempts, created_at, queued_at,
                        next_attempt_at, last_error, finished_at
                 FROM outbox {filter}"
            ))
            .map_err(sql(context))?;
        let rows = stmt
            .query_map(params, |row| {
                Ok(OutboxRow {
                    id: row.get(0)?,
                    event_id: row.get(1)?,
                    notifier: row.get(2)?,
                    group_key: row.get(3)?,
                    target: Target::new(row.get::<_, String>(4)?, row.get::<_, String>(5)?),
                    sub_job_id: row.get(6)?,
                    kind: row.get(7)?,
                    payload_json: row.get(8)?,
                    state: row.get(9)?,
                    attempts: row.get(10)?,
                    created_at: row.get::<_, DbTime>(11)?.0,
                    queued_at: row.get::<_, DbTime>(12)?.0,
                    next_attempt_at: row.get::<_, DbTime>(13)?.0,
                    last_error: row.get(14)?,
                    finished_at: row.get::<_, Option<DbTime>>(15)?.map(|t| t.0),
                })
            })
            .map_err(sql(context))?;
        rows.collect::<Result<_, _>>().map_err(sql(context))
    }
}

fn write_cycle(
    tx: &Transaction<'_>,
    target: &Target,
    outcome: &DiffOutcome,
    deliveries: &[Delivery<'_>],
    now: Timestamp,
) -> Result<CycleCommit, StoreError> {
    let project = target.project_id.as_str();
    let job_type = target.job_type.as_str();
    // An upsert, never INSERT OR REPLACE: replacing the row would cascade
    // and delete the target's snapshot.
    tx.execute(
        "INSERT INTO targets (project_id, job_type, baselined, updated_at, full_scan_at)
         VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (project_id, job_type)
         DO UPDATE SET baselined = excluded.baselined, updated_at = excluded.updated_at,
                       full_scan_at = excluded.full_scan_at",
        params![
            project,
            job_type,
            outcome.baselined,
            DbTime(now),
            outcome.full_scan_at.map(DbTime)
        ],
    )
    .map_err(sql("write target"))?;

    let mut upsert = tx
        .prepare_cached(
            "INSERT OR REPLACE INTO snapshot (project_id, job_type, sub_job_id, job_id, status,
                 error_code, since, stuck_reported, missing_scans, job_json)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        )
        .map_err(sql("write snapshot"))?;
    let mut missed = tx
        .prepare_cached(
            "UPDATE snapshot SET missing_scans = ?4
             WHERE project_id = ?1 AND job_type = ?2 AND sub_job_id = ?3",
        )
        .map_err(sql("write snapshot"))?;
    let mut remove = tx
        .prepare_cached(
            "DELETE FROM snapshot WHERE project_id = ?1 AND job_type = ?2 AND sub_job_id = ?3",
        )
        .map_err(sql("write snapshot"))?;
    for change in &outcome.changes {
        match change {
            Change::Upsert(row) => {
                upsert
                    .execute(params![
                        project,
                        job_type,
                        row.sub_job_id(),
                        row.job.job_id,
                        row.status().map(Status::as_str),
                        row.error_code(),
                        DbTime(row.since),
                        row.stuck_reported,
                        row.missing_scans,
                        JsonCol(&row.job),
                    ])
                    .map_err(sql("write snapshot"))?;
            }
            Change::Missed { id, missing_scans } => {
                missed
                    .execute(params![project, job_type, id, missing_scans])
                    .map_err(sql("write snapshot"))?;
            }
            Change::Remove(id) => {
                remove
                    .execute(params![project, job_type, id])
                    .map_err(sql("write snapshot"))?;
            }
        }
    }

    // ON CONFLICT on the key, not INSERT OR IGNORE: OR IGNORE would also
    // swallow a CHECK failure (a bad row) and count it as a duplicate.
    let mut insert = tx
        .prepare_cached(
            "INSERT INTO outbox (event_id, notifier, group_key, project_id, job_type,
                 sub_job_id, kind, payload_json, created_at, queued_at, next_attempt_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?9, ?10)
             ON CONFLICT (event_id, notifier) DO NOTHING",
        )
        .map_err(sql("write outbox"))?;
    // The group's rows still waiting for their first attempt, in this
    // transaction so two cycles cannot both think they open the window;
    // what that means for a new row is `Grouping::not_before`'s to say.
    let mut waiting_until = tx
        .prepare_cached(
            "SELECT MIN(next_attempt_at) FROM outbox
             WHERE state = 'pending' AND notifier = ?1 AND group_key = ?2
               AND attempts = 0 AND next_attempt_at > ?3",
        )
        .map_err(sql("find open group"))?;
    let mut commit = CycleCommit::default();
    for d in deliveries {
        let e = d.event;
        let group_key = d.group.map(|g| g.key.to_string());
        let not_before = match (d.group, &group_key) {
            (Some(group), Some(key)) => {
                let open: Option<DbTime> = waiting_until
                    .query_row(params![d.notifier, key, DbTime(now)], |row| row.get(0))
                    .map_err(sql("find open group"))?;
                group.not_before(now, open.map(|t| t.0))
            }
            _ => now,
        };
        let n = insert
            .execute(params![
                e.event_id,
                d.notifier,
                group_key,
                e.project_id,
                e.job_type.as_str(),
                e.sub_job_id,
                e.kind.as_str(),
                JsonCol(e),
                DbTime(now),
                DbTime(not_before),
            ])
            .map_err(sql("write outbox"))?;
        if n == 0 {
            commit.duplicates += 1;
        } else {
            commit.inserted += 1;
        }
    }
    Ok(commit)
}

fn user_version(conn: &Connection) -> rusqlite::Result<u32> {
    conn.pragma_query_value(None, "user_version", |row| row.get(0))
}

/// Brings the schema up to [`Store::SCHEMA_VERSION`], all steps in one
/// IMMEDIATE transaction: two processes opening a new file at once cannot
/// both run a step, and a failed step leaves the file as it was.
fn migrate(conn: &mut Connection, path: &Path) -> Result<(), StoreError> {
    let supported = Store::SCHEMA_VERSION;
    let open_error = |source| StoreError::Open {
        path: path.to_owned(),
        source,
    };
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(open_error)?;
    let found = user_version(&tx).map_err(open_error)?;
    if found > supported {
        return Err(StoreError::NewerSchema {
            path: path.to_owned(),
            found,
            supported,
        });
    }
    for (version, step) in (1..).zip(schema::MIGRATIONS).skip(found as usize) {
        let migrate_error = |source| StoreError::Migrate {
            path: path.to_owned(),
            version,
            source,
        };
        tx.execute_batch(step).map_err(migrate_error)?;
        tx.pragma_update(None, "user_version", version)
            .map_err(migrate_error)?;
    }
    tx.commit().map_err(open_error)
}

/// Records one outcome of the pending row `id`: delivered, retried later
/// or dead, one more attempt each. Returns whether a pending row existed.
fn mark(conn: &Connection, id: i64, outcome: &Outcome) -> Result<bool, StoreError> {
    let n = match outcome {
        Outcome::Delivered { at } => conn
            .prepare_cached(
                "UPDATE outbox SET state = 'delivered', attempts = attempts + 1,
                     finished_at = ?2, last_error = NULL
                 WHERE id = ?1 AND state = 'pending'",
            )
            .and_then(|mut stmt| stmt.execute(params![id, DbTime(*at)]))
            .map_err(sql("mark delivered"))?,
        Outcome::Retry { at, error, .. } => conn
            .prepare_cached(
                "UPDATE outbox SET attempts = attempts + 1, next_attempt_at = ?2,
                     last_error = ?3
                 WHERE id = ?1 AND state = 'pending'",
            )
            .and_then(|mut stmt| stmt.execute(params![id, DbTime(*at), error]))
            .map_err(sql("mark retry"))?,
        Outcome::Dead { at, reason } => conn
            .prepare_cached(
                "UPDATE outbox SET state = 'dead', attempts = attempts + 1,
                     finished_at = ?2, last_error = ?3
                 WHERE id = ?1 AND state = 'pending'",
            )
            .and_then(|mut stmt| stmt.execute(params![id, DbTime(*at), reason]))
            .map_err(sql("mark dead"))?,
    };
    if n > 0 {
        let (tried, verdict, answer, next) = outcome.attempt();
        conn.prepare_cached(
            "INSERT INTO attempts (outbox_id, event_id, notifier, at, verdict, answer, next_at)
             SELECT id, event_id, notifier, ?2, ?3, ?4, ?5 FROM outbox WHERE id = ?1",
        )
        .and_then(|mut stmt| {
            stmt.execute(params![
                id,
                DbTime(tried),
                verdict,
                answer,
                next.map(DbTime)
            ])
        })
        .map_err(sql("record attempt"))?;
    }
    Ok(n > 0)
}

/// Writes each event of a cycle into the history, with its routes. An
/// event already there (re-detected) keeps its first record.
fn write_events(
    tx: &Transaction<'_>,
    outcome: &DiffOutcome,
    routes: &[Vec<RouteRecord>],
) -> Result<(), StoreError> {
    let mut insert = tx
        .prepare_cached(
            "INSERT INTO events (event_id, project_id, job_type, sub_job_id, job_id,
                 observed_at, payload_json, routes_json)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
             ON CONFLICT (event_id) DO NOTHING",
        )
        .map_err(sql("write history"))?;
    for (i, e) in outcome.events.iter().enumerate() {
        let none = Vec::new();
        let routes = routes.get(i).unwrap_or(&none);
        insert
            .execute(params![
                e.event_id,
                e.project_id,
                e.job_type.as_str(),
                e.sub_job_id,
                e.job_id,
                DbTime(e.observed_at),
                JsonCol(e),
                JsonCol(routes),
            ])
            .map_err(sql("write history"))?;
    }
    Ok(())
}

/// A time column: fixed-width UTC text with nanoseconds, so string order is
/// time order and a value reads back exactly (`since` feeds event ids).
struct DbTime(Timestamp);

impl ToSql for DbTime {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::from(crate::storage::records::time_text(
            self.0,
        )))
    }
}

impl FromSql for DbTime {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        value
            .as_str()?
            .parse::<Timestamp>()
            .map(DbTime)
            .map_err(|e| FromSqlError::Other(Box::new(e)))
    }
}

/// A JSON column holding a serde value.
struct JsonCol<T>(T);

impl<T: serde::Serialize> ToSql for JsonCol<&T> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        serde_json::to_string(self.0)
            .map(ToSqlOutput::from)
            .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))
    }
}

impl<T: serde::de::DeserializeOwned> FromSql for JsonCol<T> {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        serde_json::from_str(value.as_str()?)
            .map(JsonCol)
            .map_err(|e| FromSqlError::Other(Box::new(e)))
    }
}

impl FromSql for OutboxState {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        match value.as_str()? {
            "pending" => Ok(OutboxState::Pending),
            "delivered" => Ok(OutboxState::Delivered),
            "dead" => Ok(OutboxState::Dead),
            other => Err(FromSqlError::Other(
                format!("unknown outbox state {other:?}").into(),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `due` and `prune_delivered` compare time columns as text, which is
    /// only right if every value has the same width. jiff's own display
    /// drops trailing zeros (`…:00Z` sorts after `…:00.5Z`), hence `DbTime`.
    #[test]
    fn stored_times_sort_as_text_in_time_order() {
        let conn = Connection::open_in_memory().expect("opens");
        let base: Timestamp = "2026-01-05T10:00:00Z".parse().expect("a valid literal");
        let times = [
            base,
            base + jiff::SignedDuration::from_nanos(1),
            base + jiff::SignedDuration::from_millis(500),
            base + jiff::SignedDuration::from_secs(1),
        ];
        let text: Vec<String> = times
            .iter()
            .map(|t| {
                conn.query_row("SELECT ?1", [DbTime(*t)], |r| r.get(0))
                    .expect("round trips")
            })
            .collect();
        assert!(text.windows(2).all(|w| w[0] < w[1]), "{text:?}");
        assert_eq!(text[0], "2026-01-05T10:00:00.000000000Z");
        for (t, s) in times.iter().zip(&text) {
            let back: DbTime = conn
                .query_row("SELECT ?1", [s], |r| r.get(0))
                .expect("round trips");
            assert_eq!(back.0, *t);
        }
    }
}
