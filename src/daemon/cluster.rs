//! Replicas on one PostgreSQL state: who is a member, who polls which
//! target, and the limits they share.
//!
//! Every third of `cluster.lease` each replica says it is alive, reads
//! who else is, and for every target computes its holder by rendezvous
//! hashing over the live members (each target goes to the member with the
//! highest hash of the pair): targets spread evenly, and a member coming
//! or going moves only its own share. The holder takes or renews the
//! target's lease; a replica that is no longer the holder gives it up. The
//! poll loop of a target runs only while its gate holds the lease, and its
//! commits carry the lease's generation ([`Fence::Lease`]), checked in the
//! commit's transaction.
//!
//! The same beat shares the API budgets and the notifiers' rates (each
//! replica takes `1/members` of them), spreads a gateway's or receiver's
//! pause seen by one to all, and renews the dispatcher's claims.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use sha2::{Digest, Sha256};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::server::Health;
use crate::metrics::Metrics;
use crate::ratelimit::RateLimiter;
use crate::storage::{ClusterStore, Fence, Lease, Owner};
use crate::watch::Target;

/// The member of `members` that holds `target`: the highest hash of
/// (member, target). Every replica computes the same from the same list.
pub fn holder<'a>(members: &[&'a str], target: &Target) -> Option<&'a str> {
    members
        .iter()
        .max_by_key(|member| {
            let digest = Sha256::new()
                .chain_update(member.as_bytes())
                .chain_update([0])
                .chain_update(target.project_id.as_bytes())
                .chain_update([0])
                .chain_update(target.job_type.as_str().as_bytes())
                .finalize();
            let mut score = [0u8; 8];
            score.copy_from_slice(&digest[..8]);
            (u64::from_be_bytes(score), **member)
        })
        .copied()
}

/// One target's gate and when its lease was last granted.
struct Held {
    gate: watch::Sender<Option<Fence>>,
    granted: Option<Instant>,
}

/// This replica's part in the cluster.
pub struct Membership {
    store: ClusterStore,
    member: Arc<str>,
    host: String,
    lease: Duration,
    targets: Mutex<BTreeMap<Target, Held>>,
    /// The limits replicas share, by scope (`api:ACCOUNT`, `notifier:NAME`).
    limiters: Mutex<Vec<(String, Arc<RateLimiter>)>>,
    /// Pauses this replica published, so it publishes each once.
    published: Mutex<HashMap<String, SystemTime>>,
    metrics: Arc<Metrics>,
    /// Told whether the beats reach the database (`/readyz`).
    health: Arc<Health>,
    /// Shutting down: polling has stopped, so no target lease is taken or
    /// kept; the beat goes on for the claims of deliveries finishing.
    polling_stopped: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for Membership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Membership")
            .field("member", &self.member)
            .finish_non_exhaustive()
    }
}

impl Membership {
    /// `owner` is the dispatcher's: the member's id is its claims' owner.
    pub fn new(
        store: ClusterStore,
        owner: &Owner,
        lease: Duration,
        metrics: Arc<Metrics>,
        health: Arc<Health>,
    ) -> Membership {
        let host = hostname();
        Membership {
            store,
            member: Arc::from(owner.as_str()),
            host,
            lease,
            targets: Mutex::new(BTreeMap::new()),
            limiters: Mutex::new(Vec::new()),
            published: Mutex::new(HashMap::new()),
            metrics,
            health,
            polling_stopped: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Polling has stopped (shutdown): leaves the members and gives every
    /// target lease up now, so the others take the targets at their next
    /// beat while this replica's deliveries finish (their claims are still
    /// renewed).
    pub async fn stop_polling(&self) {
        self.polling_stopped
            .store(true, std::sync::atomic::Ordering::SeqCst);
        for held in lock(&self.targets).values_mut() {
            held.granted = None;
            held.gate.send_replace(None);
        }
        if let Err(e) = self.store.leave(&self.member).await {
            tracing::warn!(error = %e, "cluster: cannot give the leases up; they run out instead");
        }
    }

    pub fn member(&self) -> &str {
        &self.member
    }

    /// The targets to share (a reload replaces them) and their gates, shut
    /// until this replica holds the target's lease. A target no longer
    /// configured keeps its lease until it runs out.
    pub fn set_targets(&self, targets: &[Target]) -> Vec<(Target, watch::Receiver<Option<Fence>>)> {
        let mut held = lock(&self.targets);
        held.retain(|t, _| targets.contains(t));
        targets
            .iter()
            .map(|target| {
                let entry = held.entry(target.clone()).or_insert_with(|| Held {
                    gate: watch::channel(None).0,
                    granted: None,
                });
                (target.clone(), entry.gate.subscribe())
            })
            .collect()
    }

    /// The limits to share with the other replicas.
    pub fn set_limiters(&self, limiters: Vec<(String, Arc<RateLimiter>)>) {
        *lock(&self.limiters) = limiters;
    }

    /// Beats every third of the lease until `stop`, then leaves the
    /// cluster (its leases free at once).
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        let every = self.lease / 3;
        let mut failing = false;
        loop {
            match self.beat().await {
                Ok(()) => {
                    if failing {
                        tracing::info!("the state database answers again");
                    }
                    failing = false;
                    self.health.database_reachable(true);
                }
                Err(e) => {
                    if !failing {
                        tracing::warn!(error = %e, "cluster: cannot reach the state database; retrying");
                    }
                    failing = true;
                    self.health.database_reachable(false);
                }
            }
            // A lease not renewed within what is left of it is given up
            // here, before it runs out: others may hold it then.
            self.expire_unrenewed(every);
            let next = tokio::time::sleep(every);
            tokio::pin!(next);
            loop {
                tokio::select! {
                    _ = &mut next => break,
                    // A throttle is news for the others now, not at the
                    // next beat.
                    _ = self.pause_begins() => {
                        if let Err(e) = self.publish_pauses().await {
                            tracing::debug!(error = %e, "cluster: cannot publish a pause yet");
                        }
                    }
                    _ = stop.cancelled() => return self.leave().await,
                }
            }
        }
    }

    /// Resolves when a pause begins on any shared limit.
    async fn pause_begins(&self) {
        let limiters = lock(&self.limiters).clone();
        if limiters.is_empty() {
            return std::future::pending().await;
        }
        let waits = limiters
            .iter()
            .map(|(_, limiter)| Box::pin(limiter.pause_begins()));
        futures_util::future::select_all(waits).await;
    }

    async fn leave(&self) {
        for held in lock(&self.targets).values() {
            held.gate.send_replace(None);
        }
        if let Err(e) = self.store.leave(&self.member).await {
            tracing::warn!(error = %e, "cluster: cannot leave; this replica's leases run out instead");
        }
    }

    /// Shuts every gate whose lease would run out before the next beat.
    fn expire_unrenewed(&self, every: Duration) {
        let mut targets = lock(&self.targets);
        for (target, held) in targets.iter_mut() {
            let stale = held
                .granted
                .is_some_and(|at| at.elapsed() + every >= self.lease);
            if stale {
                held.granted = None;
                if held.gate.send_replace(None).is_some() {
                    self.metrics.cluster_lease_losses.inc();
                    tracing::warn!(%target, "cluster: lease not renewed in time; no longer polling");
                }
            }
        }
    }

    async fn beat(&self) -> Result<(), crate::storage::StoreError> {
        if self
            .polling_stopped
            .load(std::sync::atomic::Ordering::SeqCst)
        {
            // No longer a member: only what is still being sent is ours.
            return self.renew_claims().await;
        }
        let members = self
            .store
            .beat(&self.member, &self.host, self.lease)
            .await?;
        let ids: Vec<&str> = members.iter().map(|m| m.id.as_str()).collect();
        self.metrics.cluster_members.set(ids.len() as i64);
        let targets: Vec<Target> = lock(&self.targets).keys().cloned().collect();
        let mut owned = 0;
        for target in targets {
            let mine = holder(&ids, &target) == Some(&*self.member);
            // Asked before it is sent: the lease runs from no earlier.
            let asked = Instant::now();
            let grant = if mine {
                self.store
                    .acquire(&self.member, &target, self.lease)
                    .await?
            } else {
                None
            };
            let hand_over = {
                let mut held_all = lock(&self.targets);
                let Some(held) = held_all.get_mut(&target) else {
                    continue;
                };
                let had = held.gate.borrow().is_some();
                match grant {
                    Some(generation) => {
                        owned += 1;
                        held.granted = Some(asked);
                        self.metrics.cluster_lease_renewals.inc();
                        let fence = Fence::Lease(Lease {
                            member: self.member.clone(),
                            generation,
                        });
                        held.gate.send_if_modified(|f| {
                            let changed = f.as_ref() != Some(&fence);
                            *f = Some(fence);
                            changed
                        });
                        false
                    }
                    None => {
                        held.granted = None;
                        held.gate.send_replace(None);
                        if had && mine {
                            // Another replica took it while ours ran out.
                            self.metrics.cluster_lease_losses.inc();
                        }
                        had && !mine
                    }
                }
            };
            if hand_over {
                tracing::info!(%target, "cluster: handing the target to another replica");
                self.store.release(&self.member, &target).await?;
            }
        }
        self.metrics.cluster_targets_owned.set(owned);
        self.share(ids.len() as u32).await?;
        self.renew_claims().await
    }

    /// Keeps the dispatcher's claims for another lease.
    async fn renew_claims(&self) -> Result<(), crate::storage::StoreError> {
        let until = jiff::Timestamp::now() + self.lease;
        self.store
            .store()
            .renew_claims(&Owner::named(self.member.to_string()), until)
            .await?;
        Ok(())
    }

    /// Publishes the pauses of this replica's limits not yet published.
    async fn publish_pauses(&self) -> Result<(), crate::storage::StoreError> {
        let limiters = lock(&self.limiters).clone();
        for (scope, limiter) in &limiters {
            let Some(until) = limiter.paused_until() else {
                continue;
            };
            let until = SystemTime::now() + until.saturating_duration_since(Instant::now());
            let known = lock(&self.published).get(scope).copied();
            let news = known.is_none_or(|k| {
                until
                    .duration_since(k)
                    .is_ok_and(|d| d > Duration::from_secs(1))
            });
            if news {
                self.store.pause(scope, until).await?;
                lock(&self.published).insert(scope.clone(), until);
            }
        }
        Ok(())
    }

    /// Each replica's share of the shared limits, and the pauses all obey:
    /// an account's API budget in proportion to its targets this replica
    /// polls (the holders of all of them together have all of it), a
    /// notifier's rate in equal parts (any replica may deliver any row).
    async fn share(&self, members: u32) -> Result<(), crate::storage::StoreError> {
        let limiters = lock(&self.limiters).clone();
        let polled: Vec<(Arc<str>, bool)> = lock(&self.targets)
            .iter()
            .map(|(t, held)| (t.account.clone(), held.gate.borrow().is_some()))
            .collect();
        for (scope, limiter) in &limiters {
            match scope.strip_prefix("api:") {
                Some(account) => {
                    let of = polled.iter().filter(|(a, _)| **a == *account).count();
                    let mine = polled.iter().filter(|(a, p)| **a == *account && *p).count();
                    limiter.set_share(mine as u32, of.max(1) as u32);
                }
                None => limiter.set_share(1, members),
            }
        }
        self.publish_pauses().await?;
        for (scope, until) in self.store.pauses().await? {
            let Ok(left) = until.duration_since(SystemTime::now()) else {
                continue;
            };
            for (_, limiter) in limiters.iter().filter(|(s, _)| *s == scope) {
                limiter.pause_until(Instant::now() + left);
            }
            // What others published counts as published here too.
            lock(&self.published)
                .entry(scope)
                .and_modify(|k| *k = (*k).max(until))
                .or_insert(until);
        }
        Ok(())
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown".to_owned())
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cloud::model::JobType;

    fn targets(n: usize) -> Vec<Target> {
        (0..n)
            .map(|i| Target::new(format!("project-{i}"), JobType::CreateServer))
            .collect()
    }

    #[test]
    fn targets_spread_evenly_and_a_member_leaving_moves_only_its_own() {
        let three = ["a-1", "b-2", "c-3"];
        let all = targets(300);
        let owners: Vec<&str> = all
            .iter()
            .map(|t| holder(&three, t).expect("one"))
            .collect();
        for member in three {
            let n = owners.iter().filter(|o| **o == member).count();
            assert!((70..=130).contains(&n), "{member} holds {n} of 300");
        }
        let two = ["a-1", "c-3"];
        for (target, before) in all.iter().zip(&owners) {
            let after = holder(&two, target).expect("one");
            if *before != "b-2" {
                assert_eq!(after, *before, "{target} moved though its holder stayed");
            }
        }
        assert_eq!(holder(&[], &all[0]), None);
    }
}
