//! The PostgreSQL backend: the state of a cluster of replicas in one
//! database (`[state] url`). The same records as the SQLite file, with the
//! checks a shared database needs made inside each transaction: a cycle's
//! commit checks its target's lease ([`Fence`]), claims on outbox rows
//! are rows' columns taken with `FOR UPDATE SKIP LOCKED`.
//!
//! Every call takes a pooled connection (deadpool-postgres); a database
//! that does not answer is an error of the call, which the engine retries
//! as it does a failing SQLite commit.

pub mod cluster;
mod schema;
pub mod url;

pub use url::{PgUrl, PgUrlError};

use std::collections::BTreeMap;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use jiff::Timestamp;
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use crate::cloud::model::{Status, SubJob};
use crate::silence::{NewSilence, Silence};
use crate::storage::records::{
    AttemptRecord, CycleCommit, CycleWrite, DueRef, Export, Fence, HistoryEntry, HistoryQuery,
    OutboxRow, OutboxState, Outcome, Owner, PendingOutlook, TargetSummary, assemble_history,
    matchers_json, read_matchers, summarize, time_text,
};
use crate::store::StoreError;
use crate::watch::diff::keep_job_id;
use crate::watch::{Change, Target, TargetSnapshot, Tracked, fingerprint_json};

/// How long a call waits for a connection (or to make one).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections per process: pollers, the dispatcher and the cluster's
/// renewals at once.
const POOL_SIZE: usize = 8;
/// Snapshot rows written per statement in a large cycle (a baseline).
const CHUNK: usize = 5_000;

/// The PostgreSQL state: a connection pool.
#[derive(Clone)]
pub struct PgStore {
    pool: Pool,
    url: std::sync::Arc<PgUrl>,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore").field("url", &self.url).finish()
    }
}

/// Wraps a driver error with what we were doing.
fn pg(context: &'static str) -> impl FnOnce(tokio_postgres::Error) -> StoreError {
    move |error| StoreError::Pg {
        context,
        words: pg_words(&error),
    }
}

/// A driver error with the server's own message and detail, not only
/// "db error".
fn pg_words(error: &tokio_postgres::Error) -> String {
    match error.as_db_error() {
        Some(db) => match db.detail() {
            Some(detail) => format!("{}: {} ({detail})", db.severity(), db.message()),
            None => format!("{}: {}", db.severity(), db.message()),
        },
        None => with_causes(error),
    }
}

/// An error and its causes: "error performing TLS handshake: invalid peer
/// certificate: UnknownIssuer", not only the first part.
fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(e) = cause {
        let part = e.to_string();
        if !text.contains(&part) {
            text = format!("{text}: {part}");
        }
        cause = e.source();
    }
    text
}

fn parse_time(context: &'static str, text: &str) -> Result<Timestamp, StoreError> {
    text.parse().map_err(|e: jiff::Error| StoreError::Value {
        context,
        error: format!("time {text:?}: {e}"),
    })
}

fn parse_opt_time(
    context: &'static str,
    text: Option<String>,
) -> Result<Option<Timestamp>, StoreError> {
    text.map(|t| parse_time(context, &t)).transpose()
}

fn count(n: i64) -> u64 {
    n.unsigned_abs()
}

impl PgStore {
    /// The schema version this build writes.
    pub const SCHEMA_VERSION: i32 = schema::MIGRATIONS.len() as i32;

    /// Connects and, with `migrate`, brings the schema up to date; without,
    /// a database of another version is refused (`check`, `--dry-run`).
    pub async fn connect(url: &PgUrl, migrate: bool) -> Result<PgStore, StoreError> {
        let manager_config = ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        };
        let mut config = url.config.clone();
        config.connect_timeout(CONNECT_TIMEOUT);
        config.application_name("jobwatch");
        let manager = if url.tls() {
            Manager::from_config(config, tls(url)?, manager_config)
        } else {
            Manager::from_config(config, tokio_postgres::NoTls, manager_config)
        };
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(CONNECT_TIMEOUT))
            .create_timeout(Some(CONNECT_TIMEOUT))
            .recycle_timeout(Some(CONNECT_TIMEOUT))
            .build()
            .map_err(|e| StoreError::Connect {
                url: url.shown().to_owned(),
                error: e.to_string(),
            })?;
        let store = PgStore {
            pool,
            url: std::sync::Arc::new(url.clone()),
        };
        if migrate {
            store.migrate().await?;
        } else {
            let found = store.schema_version().await?;
            if found != PgStore::SCHEMA_VERSION {
                return Err(StoreError::PgSchema {
                    url: url.shown().to_owned(),
                    found,
                    supported: PgStore::SCHEMA_VERSION,
                });
            }
        }
        Ok(store)
    }

    pub fn url(&self) -> &PgUrl {
        &self.url
    }

    pub(crate) async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        self.pool.get().await.map_err(|e| StoreError::Connect {
            url: self.url.shown().to_owned(),
            error: match e {
                deadpool_postgres::PoolError::Backend(e) => with_causes(&e),
                deadpool_postgres::PoolError::Timeout(_) => {
                    format!("no connection within {CONNECT_TIMEOUT:?}")
                }
                other => other.to_string(),
            },
        })
    }

    /// The database's schema version (0: none yet).
    pub async fn schema_version(&self) -> Result<i32, StoreError> {
        let client = self.client().await?;
        let exists: bool = client
            .query_one("SELECT to_regclass('jobwatch_schema') IS NOT NULL", &[])
            .await
            .map_err(pg("read schema version"))?
            .get(0);
        if !exists {
            return Ok(0);
        }
        let row = client
            .query_one("SELECT version FROM jobwatch_schema", &[])
            .await
            .map_err(pg("read schema version"))?;
        Ok(row.get(0))
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg("migrate"))?;
        tx.execute(
            "SELECT pg_advisory_xact_lock($1)",
            &[&schema::MIGRATION_LOCK],
        )
        .await
        .map_err(pg("migrate"))?;
        tx.batch_execute("CREATE TABLE IF NOT EXISTS jobwatch_schema (version integer NOT NULL)")
            .await
            .map_err(pg("migrate"))?;
        let found: Option<i32> = tx
            .query_opt("SELECT version FROM jobwatch_schema", &[])
            .await
            .map_err(pg("migrate"))?
            .map(|r| r.get(0));
        let found = match found {
            Some(v) => v,
            None => {
                tx.execute("INSERT INTO jobwatch_schema VALUES (0)", &[])
                    .await
                    .map_err(pg("migrate"))?;
                0
            }
        };
        if found > PgStore::SCHEMA_VERSION {
            return Err(StoreError::PgSchema {
                url: self.url.shown().to_owned(),
                found,
                supported: PgStore::SCHEMA_VERSION,
            });
        }
        for (version, step) in (1..).zip(schema::MIGRATIONS).skip(found as usize) {
            tx.batch_execute(step)
                .await
                .map_err(|error| StoreError::PgMigrate {
                    version,
                    words: pg_words(&error),
                })?;
            tx.execute("UPDATE jobwatch_schema SET version = $1", &[&version])
                .await
                .map_err(pg("migrate"))?;
        }
        tx.commit().await.map_err(pg("migrate"))
    }

    pub async fn load_snapshot(&self, target: &Target) -> Result<TargetSnapshot, StoreError> {
        let context = "load snapshot";
        let client = self.client().await?;
        let key: [&(dyn ToSql + Sync); 2] = [&target.project_id, &target.job_type.as_str()];
        let head = client
            .query_opt(
                "SELECT baselined, full_scan_at FROM targets
                 WHERE project_id = $1 AND job_type = $2",
                &key,
            )
            .await
            .map_err(pg(context))?;
        let Some(head) = head else {
            return Ok(TargetSnapshot::default());
        };
        let rows = client
            .query(
                "SELECT sub_job_id, status, error_code, job_id, job_json->>'begin_time',
                        since, stuck_reported, missing_scans, job_json::text
                 FROM snapshot WHERE project_id = $1 AND job_type = $2",
                &key,
            )
            .await
            .map_err(pg(context))?;
        let mut jobs = Vec::with_capacity(rows.len());
        for row in rows {
            let text = |i: usize| row.get::<_, Option<String>>(i).map(String::into_boxed_str);
            let status = row.get::<_, Option<String>>(1).map(Status::from);
            let job_id = keep_job_id(status.as_ref(), text(3).as_deref());
            let begin = row
                .get::<_, Option<String>>(4)
                .as_deref()
                .and_then(crate::cloud::model::parse_api_time);
            let missing: i32 = row.get(7);
            let tracked = Tracked {
                status,
                error_code: text(2),
                job_id,
                begin,
                since: parse_time(context, row.get(5))?,
                stuck_reported: row.get(6),
                missing_scans: missing.unsigned_abs(),
                fingerprint: fingerprint_json(row.get::<_, &str>(8).as_bytes()),
            };
            jobs.push((row.get::<_, String>(0), tracked));
        }
        Ok(TargetSnapshot {
            baselined: head.get(0),
            jobs: jobs.into_iter().collect(),
            full_scan_at: parse_opt_time(context, head.get(1))?,
        })
    }

    pub async fn sub_jobs(
        &self,
        target: &Target,
        ids: &[String],
    ) -> Result<BTreeMap<String, SubJob>, StoreError> {
        let context = "read sub-jobs";
        let rows = self
            .client()
            .await?
            .query(
                "SELECT sub_job_id, job_json::text FROM snapshot
                 WHERE project_id = $1 AND job_type = $2 AND sub_job_id = ANY($3)",
                &[&target.project_id, &target.job_type.as_str(), &ids],
            )
            .await
            .map_err(pg(context))?;
        rows.iter()
            .map(|row| {
                let job = serde_json::from_str(row.get(1)).map_err(|e| StoreError::Value {
                    context,
                    error: e.to_string(),
                })?;
                Ok((row.get(0), job))
            })
            .collect()
    }

    /// One cycle in one transaction, after checking `write.fence` in it.
    pub async fn commit_cycle(&self, write: &CycleWrite) -> Result<CycleCommit, StoreError> {
        let context = "commit cycle";
        let CycleWrite {
            target,
            outcome,
            routed,
            now,
            fence,
        } = write;
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg(context))?;
        let project = target.project_id.as_str();
        let job_type = target.job_type.as_str();
        // FOR SHARE: a takeover (an UPDATE of the lease) waits for this
        // commit, and its holder then reads what we wrote.
        let lease = tx
            .query_opt(
                "SELECT owner, generation, expires_at > now() FROM target_leases
                 WHERE project_id = $1 AND job_type = $2 FOR SHARE",
                &[&project, &job_type],
            )
            .await
            .map_err(pg(context))?;
        let holder = lease.as_ref().map(|r| {
            (
                r.get::<_, Option<String>>(0),
                r.get::<_, i64>(1),
                r.get::<_, bool>(2),
            )
        });
        let allowed = match (fence, &holder) {
            (Fence::Lease(mine), Some((Some(owner), generation, _))) => {
                **owner == *mine.member && *generation == mine.generation
            }
            (Fence::Lease(_), _) => false,
            (Fence::Sole, Some((Some(_), _, true))) => false,
            (Fence::Sole, _) => true,
        };
        if !allowed {
            return Err(StoreError::Fenced {
                target: target.to_string(),
            });
        }

        tx.execute(
            "INSERT INTO targets (project_id, job_type, baselined, updated_at, full_scan_at)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (project_id, job_type)
             DO UPDATE SET baselined = excluded.baselined, updated_at = excluded.updated_at,
                           full_scan_at = excluded.full_scan_at",
            &[
                &project,
                &job_type,
                &outcome.baselined,
                &time_text(*now),
                &outcome.full_scan_at.map(time_text),
            ],
        )
        .await
        .map_err(pg("write target"))?;

        // Upserts by id (the last of an id wins, as applying them in order
        // would), then misses, then removals.
        let mut upserts = BTreeMap::new();
        let mut missed: Vec<(&str, i32)> = Vec::new();
        let mut removed: Vec<&str> = Vec::new();
        for change in &outcome.changes {
            match change {
                Change::Upsert(row) => {
                    upserts.insert(row.sub_job_id(), row);
                }
                Change::Missed { id, missing_scans } => {
                    missed.push((id, i32::try_from(*missing_scans).unwrap_or(i32::MAX)));
                }
                Change::Remove(id) => removed.push(id),
            }
        }
        let upserts: Vec<_> = upserts.into_values().collect();
        for chunk in upserts.chunks(CHUNK) {
            let mut ids = Vec::with_capacity(chunk.len());
            let mut job_ids = Vec::with_capacity(chunk.len());
            let mut statuses = Vec::with_capacity(chunk.len());
            let mut codes = Vec::with_capacity(chunk.len());
            let mut since = Vec::with_capacity(chunk.len());
            let mut stuck = Vec::with_capacity(chunk.len());
            let mut misses = Vec::with_capacity(chunk.len());
            let mut json = Vec::with_capacity(chunk.len());
            for row in chunk {
                ids.push(row.sub_job_id());
                job_ids.push(row.job.job_id.as_deref());
                statuses.push(row.status().map(Status::as_str));
                codes.push(row.error_code());
                since.push(time_text(row.since));
                stuck.push(row.stuck_reported);
                misses.push(i32::try_from(row.missing_scans).unwrap_or(i32::MAX));
                json.push(
                    serde_json::to_string(&row.job).map_err(|e| StoreError::Value {
                        context: "write snapshot",
                        error: e.to_string(),
                    })?,
                );
            }
            tx.execute(
                "INSERT INTO snapshot (project_id, job_type, sub_job_id, job_id, status,
                     error_code, since, stuck_reported, missing_scans, job_json)
                 SELECT $1, $2, u.id, u.job_id, u.status, u.code, u.since, u.stuck, u.missing,
                        u.json::json
                 FROM unnest($3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
                             $8::bool[], $9::int4[], $10::text[])
                      AS u(id, job_id, status, code, since, stuck, missing, json)
                 ON CONFLICT (project_id, job_type, sub_job_id) DO UPDATE SET
                     job_id = excluded.job_id, status = excluded.status,
                     error_code = excluded.error_code, since = excluded.since,
                     stuck_reported = excluded.stuck_reported,
                     missing_scans = excluded.missing_scans, job_json = excluded.job_json",
                &[
                    &project, &job_type, &ids, &job_ids, &statuses, &codes, &since, &stuck,
                    &misses, &json,
                ],
            )
            .await
            .map_err(pg("write snapshot"))?;
        }
        if !missed.is_empty() {
            let (ids, counts): (Vec<&str>, Vec<i32>) = missed.into_iter().unzip();
            tx.execute(
                "UPDATE snapshot s SET missing_scans = u.missing
                 FROM unnest($3::text[], $4::int4[]) AS u(id, missing)
                 WHERE s.project_id = $1 AND s.job_type = $2 AND s.sub_job_id = u.id",
                &[&project, &job_type, &ids, &counts],
            )
            .await
            .map_err(pg("write snapshot"))?;
        }
        if !removed.is_empty() {
            tx.execute(
                "DELETE FROM snapshot
                 WHERE project_id = $1 AND job_type = $2 AND sub_job_id = ANY($3)",
                &[&project, &job_type, &removed],
            )
            .await
            .map_err(pg("write snapshot"))?;
        }

        let insert = tx
            .prepare(
                "INSERT INTO outbox (event_id, notifier, group_key, project_id, job_type,
                     sub_job_id, kind, payload_json, created_at, queued_at, next_attempt_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8::text::json, $9, $9, $10)
                 ON CONFLICT (event_id, notifier) DO NOTHING",
            )
            .await
            .map_err(pg("write outbox"))?;
        let mut commit = CycleCommit::default();
        // What a silence or window holds is in the history only.
        for (i, routed) in routed.iter().filter(|(_, r)| r.held.is_none()) {
            let event = &outcome.events[*i];
            let group_key = routed.group.as_ref().map(|g| g.key.to_string());
            let not_before = match (&routed.group, &group_key) {
                (Some(group), Some(key)) => {
                    // Two cycles (of two replicas) opening one group's window
                    // at once: the second waits here and joins the first's.
                    tx.execute(
                        "SELECT pg_advisory_xact_lock(hashtextextended($1 || '\x1f' || $2, 0))",
                        &[&routed.notifier, key],
                    )
                    .await
                    .map_err(pg("find open group"))?;
                    let open: Option<String> = tx
                        .query_one(
                            "SELECT MIN(next_attempt_at) FROM outbox
                             WHERE state = 'pending' AND notifier = $1 AND group_key = $2
                               AND attempts = 0 AND next_attempt_at > $3",
                            &[&routed.notifier, key, &time_text(*now)],
                        )
                        .await
                        .map_err(pg("find open group"))?
                        .get(0);
                    group.not_before(*now, parse_opt_time("find open group", open)?)
                }
                _ => *now,
            };
            let payload = serde_json::to_string(event).map_err(|e| StoreError::Value {
                context: "write outbox",
                error: e.to_string(),
            })?;
            let n = tx
                .execute(
                    &insert,
                    &[
                        &event.event_id,
                        &routed.notifier,
                        &group_key,
                        &event.project_id,
                        &event.job_type.as_str(),
                        &event.sub_job_id,
                        &event.kind.as_str(),
                        &payload,
                        &time_text(*now),
                        &time_text(not_before),
                    ],
                )
                .await
                .map_err(pg("write outbox"))?;
            if n == 0 {
                commit.duplicates += 1;
            } else {
                commit.inserted += 1;
            }
        }
        let routes = write.route_records();
        if !outcome.events.is_empty() {
            let history = tx
                .prepare(
                    "INSERT INTO events (event_id, project_id, job_type, sub_job_id, job_id,
                         observed_at, payload_json, routes_json)
                     VALUES ($1, $2, $3, $4, $5, $6, $7::text::json, $8::text::json)
                     ON CONFLICT (event_id) DO NOTHING",
                )
                .await
                .map_err(pg("write history"))?;
            for (i, event) in outcome.events.iter().enumerate() {
                let json = |e: serde_json::Error| StoreError::Value {
                    context: "write history",
                    error: e.to_string(),
                };
                let payload = serde_json::to_string(event).map_err(json)?;
                let routes = serde_json::to_string(&routes[i]).map_err(json)?;
                tx.execute(
                    &history,
                    &[
                        &event.event_id,
                        &event.project_id,
                        &event.job_type.as_str(),
                        &event.sub_job_id,
                        &event.job_id,
                        &time_text(event.observed_at),
                        &payload,
                        &routes,
                    ],
                )
                .await
                .map_err(pg("write history"))?;
            }
        }
        tx.commit().await.map_err(pg(context))?;
        Ok(commit)
    }

    /// Due pending rows above `after`, by id, that no live claim holds.
    pub async fn due_refs(
        &self,
        now: Timestamp,
        after: i64,
        limit: usize,
    ) -> Result<Vec<DueRef>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let now = time_text(now);
        let rows = self
            .client()
            .await?
            .query(
                "SELECT id, notifier, group_key FROM outbox
                 WHERE state = 'pending' AND next_attempt_at <= $1 AND id > $2
                   AND (claim_until IS NULL OR claim_until <= $1)
                 ORDER BY id LIMIT $3",
                &[&now, &after, &limit],
            )
            .await
            .map_err(pg("due outbox rows"))?;
        Ok(rows
            .iter()
            .map(|r| DueRef {
                id: r.get(0),
                notifier: r.get(1),
                group_key: r.get(2),
            })
            .collect())
    }

    /// Claims those of `ids` still pending, due and free: unclaimed, or
    /// another owner's whose lease ran out. Rows another transaction is
    /// claiming right now are skipped, not waited for.
    pub async fn claim(
        &self,
        owner: &Owner,
        ids: &[i64],
        now: Timestamp,
        lease: Duration,
    ) -> Result<Vec<OutboxRow>, StoreError> {
        let context = "claim outbox rows";
        let until = now + lease;
        let now = time_text(now);
        let rows = self
            .client()
            .await?
            .query(
                &format!(
                    "WITH free AS (
                         SELECT id AS free_id FROM outbox
                         WHERE id = ANY($1) AND state = 'pending' AND next_attempt_at <= $2
                           AND (claim_owner IS NULL
                                OR (claim_owner <> $3 AND claim_until <= $2))
                         FOR UPDATE SKIP LOCKED)
                     UPDATE outbox o SET claim_owner = $3, claim_until = $4
                     FROM free WHERE o.id = free.free_id
                     RETURNING {OUTBOX_COLUMNS}"
                ),
                &[&ids, &now, &owner.as_str(), &time_text(until)],
            )
            .await
            .map_err(pg(context))?;
        let mut rows = rows
            .iter()
            .map(|r| outbox_row(context, r))
            .collect::<Result<Vec<_>, _>>()?;
        rows.sort_by_key(|r| r.id);
        Ok(rows)
    }

    /// Keeps `owner`'s claims from running out: they hold until `until`.
    pub async fn renew_claims(&self, owner: &Owner, until: Timestamp) -> Result<u64, StoreError> {
        self.client()
            .await?
            .execute(
                "UPDATE outbox SET claim_until = $2
                 WHERE claim_owner = $1 AND state = 'pending'",
                &[&owner.as_str(), &time_text(until)],
            )
            .await
            .map_err(pg("renew claims"))
    }

    pub async fn record_many(
        &self,
        owner: &Owner,
        outcomes: &[(Vec<i64>, Outcome)],
    ) -> Result<(), StoreError> {
        let context = "record deliveries";
        let result = async {
            let mut client = self.client().await?;
            let tx = client.transaction().await.map_err(pg(context))?;
            for (ids, outcome) in outcomes {
                let (tried, verdict, answer, next) = outcome.attempt();
                let (sql, at, text) = match outcome {
                    Outcome::Delivered { at } => (
                        "UPDATE outbox SET state = 'delivered', attempts = attempts + 1,
                             finished_at = $2, last_error = $3,
                             claim_owner = NULL, claim_until = NULL
                         WHERE id = ANY($1) AND state = 'pending'",
                        at,
                        None,
                    ),
                    Outcome::Retry { at, error, .. } => (
                        "UPDATE outbox SET attempts = attempts + 1, next_attempt_at = $2,
                             last_error = $3, claim_owner = NULL, claim_until = NULL
                         WHERE id = ANY($1) AND state = 'pending'",
                        at,
                        Some(error.as_str()),
                    ),
                    Outcome::Dead { at, reason } => (
                        "UPDATE outbox SET state = 'dead', attempts = attempts + 1,
                             finished_at = $2, last_error = $3,
                             claim_owner = NULL, claim_until = NULL
                         WHERE id = ANY($1) AND state = 'pending'",
                        at,
                        Some(reason.as_str()),
                    ),
                };
                // The attempt goes into the history for the rows it changed.
                let sql = format!(
                    "WITH done AS ({sql} RETURNING id, event_id, notifier)
                     INSERT INTO attempts (outbox_id, event_id, notifier, at, verdict, answer, next_at)
                     SELECT id, event_id, notifier, $4, $5, $6, $7 FROM done"
                );
                tx.execute(
                    &sql,
                    &[
                        ids,
                        &time_text(*at),
                        &text,
                        &time_text(tried),
                        &verdict,
                        &answer,
                        &next.map(time_text),
                    ],
                )
                .await
                .map_err(pg(context))?;
            }
            tx.commit().await.map_err(pg(context))
        }
        .await;
        if result.is_err() {
            let ids: Vec<i64> = outcomes.iter().flat_map(|(ids, _)| ids).copied().collect();
            self.release(owner, &ids).await;
        }
        result
    }

    /// Gives up `owner`'s claims on `ids`; a failure leaves them to run out.
    pub async fn release(&self, owner: &Owner, ids: &[i64]) {
        let released = async {
            self.client()
                .await?
                .execute(
                    "UPDATE outbox SET claim_owner = NULL, claim_until = NULL
                     WHERE id = ANY($1) AND claim_owner = $2",
                    &[&ids, &owner.as_str()],
                )
                .await
                .map_err(pg("release claims"))
        }
        .await;
        if let Err(e) = released {
            tracing::warn!(error = %e, "cannot release claims; they run out with their lease");
        }
    }

    async fn outbox_rows(
        &self,
        context: &'static str,
        filter: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<OutboxRow>, StoreError> {
        let rows = self
            .client()
            .await?
            .query(
                &format!("SELECT {OUTBOX_COLUMNS} FROM outbox {filter}"),
                params,
            )
            .await
            .map_err(pg(context))?;
        rows.iter().map(|r| outbox_row(context, r)).collect()
    }

    pub async fn dead(&self) -> Result<Vec<OutboxRow>, StoreError> {
        self.outbox_rows("list dead letters", "WHERE state = 'dead' ORDER BY id", &[])
            .await
    }

    pub async fn newest_dead(&self, limit: i64) -> Result<Vec<OutboxRow>, StoreError> {
        self.outbox_rows(
            "list dead letters",
            "WHERE state = 'dead' ORDER BY id DESC LIMIT $1",
            &[&limit],
        )
        .await
    }

    pub async fn retry_dead(&self, ids: &[i64], now: Timestamp) -> Result<usize, StoreError> {
        let update = "UPDATE outbox SET state = 'pending', attempts = 0, queued_at = $1,
                          next_attempt_at = $1, finished_at = NULL,
                          claim_owner = NULL, claim_until = NULL
                      WHERE state = 'dead'";
        let context = "requeue dead letters";
        let now = time_text(now);
        let filter = if ids.is_empty() {
            ""
        } else {
            " AND id = ANY($2)"
        };
        // The requeue goes into the history with the rows it changed.
        let sql = format!(
            "WITH done AS ({update}{filter} RETURNING id, event_id, notifier)
             INSERT INTO attempts (outbox_id, event_id, notifier, at, verdict)
             SELECT id, event_id, notifier, $1, 'requeued' FROM done"
        );
        let client = self.client().await?;
        let n = if ids.is_empty() {
            client.execute(&sql, &[&now]).await
        } else {
            client.execute(&sql, &[&now, &ids]).await
        };
        n.map(|n| n as usize).map_err(pg(context))
    }

    pub async fn backlog(
        &self,
    ) -> Result<Vec<crate::storage::records::NotifierBacklog>, StoreError> {
        let context = "outbox backlog";
        let rows = self
            .client()
            .await?
            .query(
                "SELECT notifier, count(*), MIN(next_attempt_at) FROM outbox
                 WHERE state = 'pending' GROUP BY notifier ORDER BY notifier",
                &[],
            )
            .await
            .map_err(pg(context))?;
        rows.iter()
            .map(|r| {
                Ok(crate::storage::records::NotifierBacklog {
                    notifier: r.get(0),
                    pending: count(r.get(1)),
                    next_attempt_at: parse_opt_time(context, r.get(2))?,
                })
            })
            .collect()
    }

    pub async fn prune_history(&self, older_than: Timestamp) -> Result<usize, StoreError> {
        let context = "prune history";
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg(context))?;
        let at = time_text(older_than);
        let mut n = 0;
        for sql in [
            "DELETE FROM events WHERE observed_at < $1",
            "DELETE FROM attempts WHERE at < $1",
            "DELETE FROM silences WHERE ends_at < $1",
        ] {
            n += tx.execute(sql, &[&at]).await.map_err(pg(context))?;
        }
        tx.commit().await.map_err(pg(context))?;
        Ok(n as usize)
    }

    pub async fn history(&self, query: &HistoryQuery) -> Result<Vec<HistoryEntry>, StoreError> {
        let context = "read history";
        let client = self.client().await?;
        let limit = i64::try_from(query.limit.max(1)).unwrap_or(i64::MAX);
        let rows = client
            .query(
                "SELECT event_id, payload_json::text, routes_json::text FROM events
                 WHERE ($1::text IS NULL OR sub_job_id = $1)
                   AND ($2::text IS NULL OR job_id = $2 OR (job_id IS NULL AND sub_job_id = $2))
                   AND ($3::text IS NULL OR observed_at >= $3)
                 ORDER BY observed_at DESC, event_id DESC LIMIT $4",
                &[
                    &query.sub_job_id,
                    &query.job_id,
                    &query.since.map(time_text),
                    &limit,
                ],
            )
            .await
            .map_err(pg(context))?;
        let mut ids: Vec<String> = Vec::with_capacity(rows.len());
        let mut events = Vec::with_capacity(rows.len());
        for row in rows.iter().rev() {
            ids.push(row.get(0));
            events.push((row.get(1), row.get(2)));
        }
        let outbox = client
            .query(
                "SELECT id, event_id, notifier, state FROM outbox
                 WHERE event_id = ANY($1) ORDER BY id",
                &[&ids],
            )
            .await
            .map_err(pg(context))?
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
            .collect();
        let mut attempts = Vec::new();
        for r in client
            .query(
                "SELECT outbox_id, event_id, notifier, at, verdict, answer, next_at
                 FROM attempts WHERE event_id = ANY($1) ORDER BY id",
                &[&ids],
            )
            .await
            .map_err(pg(context))?
        {
            attempts.push((
                r.get(0),
                r.get(1),
                r.get(2),
                AttemptRecord {
                    at: parse_time(context, r.get::<_, &str>(3))?,
                    verdict: r.get(4),
                    answer: r.get(5),
                    next_at: parse_opt_time(context, r.get(6))?,
                },
            ));
        }
        assemble_history(events, outbox, attempts)
            .map_err(|error| StoreError::Value { context, error })
    }

    pub async fn add_silence(
        &self,
        new: &NewSilence,
        now: Timestamp,
    ) -> Result<Silence, StoreError> {
        let context = "add silence";
        let matchers = matchers_json(&new.matchers);
        let row = self
            .client()
            .await?
            .query_one(
                "INSERT INTO silences (matchers, starts_at, ends_at, comment, created_by, created_at)
                 VALUES ($1::text::json, $2, $3, $4, $5, $6) RETURNING id",
                &[
                    &matchers,
                    &time_text(new.starts_at),
                    &time_text(new.ends_at),
                    &new.comment,
                    &new.created_by,
                    &time_text(now),
                ],
            )
            .await
            .map_err(pg(context))?;
        Ok(new.stored(row.get(0), now))
    }

    pub async fn silences(&self, active_at: Option<Timestamp>) -> Result<Vec<Silence>, StoreError> {
        let context = "read silences";
        let rows = self
            .client()
            .await?
            .query(
                "SELECT id, matchers::text, starts_at, ends_at, comment, created_by, created_at
                 FROM silences
                 WHERE $1::text IS NULL OR (starts_at <= $1 AND $1 < ends_at)
                 ORDER BY id",
                &[&active_at.map(time_text)],
            )
            .await
            .map_err(pg(context))?;
        rows.iter()
            .map(|r| {
                let id: i64 = r.get(0);
                Ok(Silence {
                    id,
                    matchers: read_matchers(r.get(1)).map_err(|error| StoreError::Value {
                        context,
                        error: format!("silence {id}: {error}"),
                    })?,
                    starts_at: parse_time(context, r.get(2))?,
                    ends_at: parse_time(context, r.get(3))?,
                    comment: r.get(4),
                    created_by: r.get(5),
                    created_at: parse_time(context, r.get(6))?,
                })
            })
            .collect()
    }

    pub async fn expire_silence(
        &self,
        id: i64,
        now: Timestamp,
    ) -> Result<Option<Silence>, StoreError> {
        self.client()
            .await?
            .execute(
                "UPDATE silences SET ends_at = $2 WHERE id = $1 AND ends_at > $2",
                &[&id, &time_text(now)],
            )
            .await
            .map_err(pg("expire silence"))?;
        Ok(self.silences(None).await?.into_iter().find(|s| s.id == id))
    }

    pub async fn pending_outlook(&self) -> Result<PendingOutlook, StoreError> {
        let context = "pending outlook";
        let row = self
            .client()
            .await?
            .query_one(
                "SELECT count(*) FILTER (WHERE attempts = 0),
                        MIN(next_attempt_at) FILTER (WHERE attempts = 0),
                        count(*) FILTER (WHERE attempts > 0),
                        MIN(next_attempt_at) FILTER (WHERE attempts > 0)
                 FROM outbox WHERE state = 'pending'",
                &[],
            )
            .await
            .map_err(pg(context))?;
        Ok(PendingOutlook {
            untried: count(row.get(0)),
            untried_next: parse_opt_time(context, row.get(1))?,
            retrying: count(row.get(2)),
            retrying_next: parse_opt_time(context, row.get(3))?,
        })
    }

    /// Pending and dead rows.
    pub async fn counts(&self) -> Result<(u64, u64), StoreError> {
        let row = self
            .client()
            .await?
            .query_one(
                "SELECT count(*) FILTER (WHERE state = 'pending'),
                        count(*) FILTER (WHERE state = 'dead')
                 FROM outbox",
                &[],
            )
            .await
            .map_err(pg("count outbox rows"))?;
        Ok((count(row.get(0)), count(row.get(1))))
    }

    pub async fn targets(&self) -> Result<Vec<TargetSummary>, StoreError> {
        let context = "list targets";
        let rows = self
            .client()
            .await?
            .query(
                "SELECT t.project_id, t.job_type, t.baselined, t.updated_at, s.status,
                        count(s.sub_job_id)
                 FROM targets t LEFT JOIN snapshot s USING (project_id, job_type)
                 GROUP BY t.project_id, t.job_type, t.baselined, t.updated_at, s.status
                 ORDER BY t.project_id, t.job_type",
                &[],
            )
            .await
            .map_err(pg(context))?;
        let counts = rows
            .iter()
            .map(|row| {
                Ok((
                    Target::new(row.get::<_, String>(0), row.get::<_, String>(1)),
                    row.get(2),
                    parse_time(context, row.get(3))?,
                    row.get(4),
                    count(row.get(5)) as usize,
                ))
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        Ok(summarize(counts))
    }

    pub async fn forget_target(&self, target: &Target) -> Result<usize, StoreError> {
        let context = "forget target";
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg(context))?;
        let key: [&(dyn ToSql + Sync); 2] = [&target.project_id, &target.job_type.as_str()];
        let n = tx
            .execute(
                "DELETE FROM snapshot WHERE project_id = $1 AND job_type = $2",
                &key,
            )
            .await
            .map_err(pg(context))?;
        tx.execute(
            "DELETE FROM targets WHERE project_id = $1 AND job_type = $2",
            &key,
        )
        .await
        .map_err(pg(context))?;
        tx.commit().await.map_err(pg(context))?;
        Ok(n as usize)
    }

    pub async fn prune_delivered(&self, older_than: Timestamp) -> Result<usize, StoreError> {
        self.delete_finished("delivered", older_than).await
    }

    pub async fn purge_dead(&self, older_than: Timestamp) -> Result<usize, StoreError> {
        self.delete_finished("dead", older_than).await
    }

    async fn delete_finished(
        &self,
        state: &str,
        older_than: Timestamp,
    ) -> Result<usize, StoreError> {
        self.client()
            .await?
            .execute(
                "DELETE FROM outbox WHERE state = $1 AND finished_at < $2",
                &[&state, &time_text(older_than)],
            )
            .await
            .map(|n| n as usize)
            .map_err(pg("delete finished rows"))
    }

    pub async fn job_tally(
        &self,
        project_id: &str,
        job_id: &str,
    ) -> Result<BTreeMap<String, u64>, StoreError> {
        let rows = self
            .client()
            .await?
            .query(
                "SELECT coalesce(status, ''), count(*) FROM snapshot
                 WHERE project_id = $1 AND job_id = $2 GROUP BY 1",
                &[&project_id, &job_id],
            )
            .await
            .map_err(pg("job tally"))?;
        Ok(rows.iter().map(|r| (r.get(0), count(r.get(1)))).collect())
    }
}

impl PgStore {
    /// Whether the database holds no state yet (no target, no outbox row).
    pub async fn is_empty(&self) -> Result<bool, StoreError> {
        let row = self
            .client()
            .await?
            .query_one(
                "SELECT NOT EXISTS (SELECT 1 FROM targets) AND NOT EXISTS (SELECT 1 FROM outbox)
                        AND NOT EXISTS (SELECT 1 FROM silences)",
                &[],
            )
            .await
            .map_err(pg("look at the database"))?;
        Ok(row.get(0))
    }

    /// Writes a whole state into this empty database in one transaction
    /// (`state migrate`): outbox ids are kept, so `state dead` shows the
    /// same ids, and the id sequence continues after the highest.
    pub async fn import(&self, export: &Export) -> Result<(), StoreError> {
        let context = "import the state";
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg(context))?;
        for t in &export.targets {
            tx.execute(
                "INSERT INTO targets (project_id, job_type, baselined, updated_at, full_scan_at)
                 VALUES ($1, $2, $3, $4, $5)",
                &[
                    &t.project_id,
                    &t.job_type,
                    &t.baselined,
                    &time_text(t.updated_at),
                    &t.full_scan_at.map(time_text),
                ],
            )
            .await
            .map_err(pg(context))?;
        }
        let snapshot = tx
            .prepare(
                "INSERT INTO snapshot (project_id, job_type, sub_job_id, job_id, status,
                     error_code, since, stuck_reported, missing_scans, job_json)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10::text::json)",
            )
            .await
            .map_err(pg(context))?;
        for r in &export.snapshot {
            let missing = i32::try_from(r.missing_scans).unwrap_or(i32::MAX);
            tx.execute(
                &snapshot,
                &[
                    &r.project_id,
                    &r.job_type,
                    &r.sub_job_id,
                    &r.job_id,
                    &r.status,
                    &r.error_code,
                    &time_text(r.since),
                    &r.stuck_reported,
                    &missing,
                    &r.job_json,
                ],
            )
            .await
            .map_err(pg(context))?;
        }
        let outbox = tx
            .prepare(
                "INSERT INTO outbox (id, event_id, notifier, group_key, project_id, job_type,
                     sub_job_id, kind, payload_json, state, attempts, created_at, queued_at,
                     next_attempt_at, last_error, finished_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9::text::json, $10, $11, $12, $13,
                         $14, $15, $16)",
            )
            .await
            .map_err(pg(context))?;
        for r in &export.outbox {
            let attempts = i32::try_from(r.attempts).unwrap_or(i32::MAX);
            tx.execute(
                &outbox,
                &[
                    &r.id,
                    &r.event_id,
                    &r.notifier,
                    &r.group_key,
                    &r.target.project_id,
                    &r.target.job_type.as_str(),
                    &r.sub_job_id,
                    &r.kind,
                    &r.payload_json,
                    &r.state.as_str(),
                    &attempts,
                    &time_text(r.created_at),
                    &time_text(r.queued_at),
                    &time_text(r.next_attempt_at),
                    &r.last_error,
                    &r.finished_at.map(time_text),
                ],
            )
            .await
            .map_err(pg(context))?;
        }
        let events = tx
            .prepare(
                "INSERT INTO events (event_id, project_id, job_type, sub_job_id, job_id,
                     observed_at, payload_json, routes_json)
                 VALUES ($1, $2, $3, $4, $5, $6, $7::text::json, $8::text::json)",
            )
            .await
            .map_err(pg(context))?;
        for e in &export.events {
            tx.execute(
                &events,
                &[
                    &e.event_id,
                    &e.project_id,
                    &e.job_type,
                    &e.sub_job_id,
                    &e.job_id,
                    &e.observed_at,
                    &e.payload_json,
                    &e.routes_json,
                ],
            )
            .await
            .map_err(pg(context))?;
        }
        let attempts = tx
            .prepare(
                "INSERT INTO attempts (outbox_id, event_id, notifier, at, verdict, answer, next_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .await
            .map_err(pg(context))?;
        for a in &export.attempts {
            tx.execute(
                &attempts,
                &[
                    &a.outbox_id,
                    &a.event_id,
                    &a.notifier,
                    &a.at,
                    &a.verdict,
                    &a.answer,
                    &a.next_at,
                ],
            )
            .await
            .map_err(pg(context))?;
        }
        for s in &export.silences {
            let matchers = matchers_json(&s.matchers);
            tx.execute(
                "INSERT INTO silences (id, matchers, starts_at, ends_at, comment, created_by, created_at)
                 VALUES ($1, $2::text::json, $3, $4, $5, $6, $7)",
                &[
                    &s.id,
                    &matchers,
                    &time_text(s.starts_at),
                    &time_text(s.ends_at),
                    &s.comment,
                    &s.created_by,
                    &time_text(s.created_at),
                ],
            )
            .await
            .map_err(pg(context))?;
        }
        // Ids go on after the highest copied, so `state dead` and `silence
        // list` show the same ids.
        for table in ["outbox", "silences"] {
            tx.execute(
                &format!(
                    "SELECT setval(pg_get_serial_sequence('{table}', 'id'),
                               GREATEST((SELECT MAX(id) FROM {table}), 1),
                               (SELECT MAX(id) FROM {table}) IS NOT NULL)"
                ),
                &[],
            )
            .await
            .map_err(pg(context))?;
        }
        tx.commit().await.map_err(pg(context))
    }
}

const OUTBOX_COLUMNS: &str = "id, event_id, notifier, group_key, project_id, job_type, sub_job_id,
     kind, payload_json::text, state, attempts, created_at, queued_at,
     next_attempt_at, last_error, finished_at";

fn outbox_row(context: &'static str, row: &Row) -> Result<OutboxRow, StoreError> {
    let state = match row.get::<_, &str>(9) {
        "pending" => OutboxState::Pending,
        "delivered" => OutboxState::Delivered,
        "dead" => OutboxState::Dead,
        other => {
            return Err(StoreError::Value {
                context,
                error: format!("unknown outbox state {other:?}"),
            });
        }
    };
    Ok(OutboxRow {
        id: row.get(0),
        event_id: row.get(1),
        notifier: row.get(2),
        group_key: row.get(3),
        target: Target::new(row.get::<_, String>(4), row.get::<_, String>(5)),
        sub_job_id: row.get(6),
        kind: row.get(7),
        payload_json: row.get(8),
        state,
        attempts: row.get::<_, i32>(10).unsigned_abs(),
        created_at: parse_time(context, row.get(11))?,
        queued_at: parse_time(context, row.get(12))?,
        next_attempt_at: parse_time(context, row.get(13))?,
        last_error: row.get(14),
        finished_at: parse_opt_time(context, row.get(15))?,
    })
}

/// TLS for the database on the rustls already in the tree: the server is
/// verified against `sslrootcert`'s certificates when given, else as the
/// platform verifies (the API client's verifier).
fn tls(url: &PgUrl) -> Result<tokio_postgres_rustls::MakeRustlsConnect, StoreError> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    use rustls_platform_verifier::BuilderVerifierExt;
    let failed = |error: String| StoreError::Connect {
        url: url.shown().to_owned(),
        error,
    };
    let builder = rustls::ClientConfig::builder();
    let config = match &url.root_cert {
        Some(path) => {
            let mut roots = rustls::RootCertStore::empty();
            let certs = CertificateDer::pem_file_iter(path)
                .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                .map_err(|e| failed(format!("sslrootcert {}: {e}", path.display())))?;
            let (added, _) = roots.add_parsable_certificates(certs);
            if added == 0 {
                return Err(failed(format!(
                    "sslrootcert {}: no certificate in it",
                    path.display()
                )));
            }
            builder.with_root_certificates(roots)
        }
        None => builder
            .with_platform_verifier()
            .map_err(|e| failed(format!("cannot set up TLS: {e}")))?,
    }
    .with_no_client_auth();
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}
