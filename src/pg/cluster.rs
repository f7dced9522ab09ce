//! The cluster's tables: members, per-target leases and shared pauses.
//! Lease times are the database's clock (`now()`), so replicas whose
//! clocks disagree still agree on when a lease ran out.

use std::time::{Duration, SystemTime};

use super::{PgStore, pg};
use crate::store::StoreError;
use crate::watch::Target;

/// A replica as the members table has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberRow {
    pub id: String,
    pub host: String,
    pub pid: i32,
    pub started_at: SystemTime,
    pub seen_at: SystemTime,
    /// Seen within the lease.
    pub live: bool,
}

/// A target's lease as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseRow {
    pub project_id: String,
    pub job_type: String,
    pub owner: Option<String>,
    pub generation: i64,
    /// When the current holder took it.
    pub since: SystemTime,
    pub expires_at: SystemTime,
    pub live: bool,
}

/// The cluster's view of a PostgreSQL state.
#[derive(Debug, Clone)]
pub struct ClusterStore {
    store: PgStore,
}

fn interval(d: Duration) -> f64 {
    d.as_secs_f64()
}

impl ClusterStore {
    pub fn new(store: PgStore) -> ClusterStore {
        ClusterStore { store }
    }

    pub fn store(&self) -> &PgStore {
        &self.store
    }

    /// Says `member` is alive now, and returns the members seen within
    /// `lease` (this one included), by id. Members gone for an hour are
    /// forgotten.
    pub async fn beat(
        &self,
        member: &str,
        host: &str,
        lease: Duration,
    ) -> Result<Vec<MemberRow>, StoreError> {
        let client = self.store.client().await?;
        client
            .execute(
                "INSERT INTO members (id, host, pid, started_at, seen_at)
                 VALUES ($1, $2, $3, now(), now())
                 ON CONFLICT (id) DO UPDATE SET seen_at = now()",
                &[&member, &host, &(std::process::id() as i32)],
            )
            .await
            .map_err(pg("join the cluster"))?;
        client
            .execute(
                "DELETE FROM members WHERE seen_at < now() - interval '1 hour'",
                &[],
            )
            .await
            .map_err(pg("forget gone members"))?;
        let members = self.members(lease).await?;
        Ok(members.into_iter().filter(|m| m.live).collect())
    }

    /// Every member the table remembers, live or not, by id.
    pub async fn members(&self, lease: Duration) -> Result<Vec<MemberRow>, StoreError> {
        let rows = self
            .store
            .client()
            .await?
            .query(
                "SELECT id, host, pid, started_at, seen_at,
                        seen_at > now() - make_interval(secs => $1)
                 FROM members ORDER BY id",
                &[&interval(lease)],
            )
            .await
            .map_err(pg("list members"))?;
        Ok(rows
            .iter()
            .map(|r| MemberRow {
                id: r.get(0),
                host: r.get(1),
                pid: r.get(2),
                started_at: r.get(3),
                seen_at: r.get(4),
                live: r.get(5),
            })
            .collect())
    }

    /// Takes or renews `member`'s lease on `target` for `lease`: granted
    /// when it is already the member's, free, or run out. Returns the
    /// grant's generation, which changes with every change of holder; `None`
    /// while another member holds it.
    pub async fn acquire(
        &self,
        member: &str,
        target: &Target,
        lease: Duration,
    ) -> Result<Option<i64>, StoreError> {
        let row = self
            .store
            .client()
            .await?
            .query_opt(
                "INSERT INTO target_leases AS l
                     (project_id, job_type, owner, generation, since, expires_at)
                 VALUES ($1, $2, $3, 1, now(), now() + make_interval(secs => $4))
                 ON CONFLICT (project_id, job_type) DO UPDATE SET
                     owner = $3,
                     generation = CASE WHEN l.owner IS NOT DISTINCT FROM $3
                                       THEN l.generation ELSE l.generation + 1 END,
                     since = CASE WHEN l.owner IS NOT DISTINCT FROM $3
                                  THEN l.since ELSE now() END,
                     expires_at = excluded.expires_at
                 WHERE l.owner IS NOT DISTINCT FROM $3 OR l.owner IS NULL
                       OR l.expires_at <= now()
                 RETURNING generation",
                &[
                    &target.project_id,
                    &target.job_type.as_str(),
                    &member,
                    &interval(lease),
                ],
            )
            .await
            .map_err(pg("take a target's lease"))?;
        Ok(row.map(|r| r.get(0)))
    }

    /// Gives up `member`'s lease on `target` (another member should hold
    /// it now): free at once for the next holder.
    pub async fn release(&self, member: &str, target: &Target) -> Result<(), StoreError> {
        self.store
            .client()
            .await?
            .execute(
                "UPDATE target_leases SET owner = NULL, expires_at = now()
                 WHERE project_id = $1 AND job_type = $2 AND owner = $3",
                &[&target.project_id, &target.job_type.as_str(), &member],
            )
            .await
            .map_err(pg("release a target's lease"))?;
        Ok(())
    }

    /// Frees every target lease of `member` at once: the others take its
    /// targets at their next beat rather than after the lease.
    pub async fn release_all(&self, member: &str) -> Result<(), StoreError> {
        self.store
            .client()
            .await?
            .execute(
                "UPDATE target_leases SET owner = NULL, expires_at = now() WHERE owner = $1",
                &[&member],
            )
            .await
            .map_err(pg("release the leases"))?;
        Ok(())
    }

    /// Leaves the cluster: every lease of `member` is free at once and it
    /// is no longer a member.
    pub async fn leave(&self, member: &str) -> Result<(), StoreError> {
        self.release_all(member).await?;
        let client = self.store.client().await?;
        client
            .execute("DELETE FROM members WHERE id = $1", &[&member])
            .await
            .map_err(pg("leave the cluster"))?;
        Ok(())
    }

    /// Every target's lease, by project then job type.
    pub async fn leases(&self) -> Result<Vec<LeaseRow>, StoreError> {
        let rows = self
            .store
            .client()
            .await?
            .query(
                "SELECT project_id, job_type, owner, generation, since, expires_at,
                        owner IS NOT NULL AND expires_at > now()
                 FROM target_leases ORDER BY project_id, job_type",
                &[],
            )
            .await
            .map_err(pg("list leases"))?;
        Ok(rows
            .iter()
            .map(|r| LeaseRow {
                project_id: r.get(0),
                job_type: r.get(1),
                owner: r.get(2),
                generation: r.get(3),
                since: r.get(4),
                expires_at: r.get(5),
                live: r.get(6),
            })
            .collect())
    }

    /// Publishes a pause every replica obeys (`scope` is `api:ACCOUNT` or
    /// `notifier:NAME`); a longer one already there stays.
    pub async fn pause(&self, scope: &str, until: SystemTime) -> Result<(), StoreError> {
        self.store
            .client()
            .await?
            .execute(
                "INSERT INTO pauses (scope, until) VALUES ($1, $2)
                 ON CONFLICT (scope) DO UPDATE SET until = GREATEST(pauses.until, excluded.until)",
                &[&scope, &until],
            )
            .await
            .map_err(pg("publish a pause"))?;
        Ok(())
    }

    /// The pauses that still hold, by scope; those over are deleted.
    pub async fn pauses(&self) -> Result<Vec<(String, SystemTime)>, StoreError> {
        let client = self.store.client().await?;
        client
            .execute("DELETE FROM pauses WHERE until <= now()", &[])
            .await
            .map_err(pg("read pauses"))?;
        let rows = client
            .query("SELECT scope, until FROM pauses ORDER BY scope", &[])
            .await
            .map_err(pg("read pauses"))?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }
}
