//! The daemon: pollers per target, the dispatcher, the metrics server,
//! signals and systemd, and reload — all tasks tracked, shutdown an argument.

pub mod cluster;
pub mod console;
pub mod heartbeat;
pub mod server;
pub mod systemd;
pub mod wiring;

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::notify::dispatch::Dispatcher;
use crate::ratelimit::RateLimiter;
use crate::storage::{OpenMode, Storage};
use crate::watch::Target;
use crate::watch::poller::{Beat, CycleContext, Gate, Pace, poll_loop, sole_gate};
use cluster::Membership;
use heartbeat::Heartbeat;
use server::Health;
use systemd::Systemd;

/// A cycle running longer than this means a poller is stuck: the
/// watchdog stops being fed and systemd restarts us.
const STUCK_CYCLE: Duration = Duration::from_secs(600);

/// Where the daemon's config comes from, for SIGHUP.
#[derive(Debug, Clone)]
pub struct ReloadSource {
    pub path: PathBuf,
    pub must_exist: bool,
}

/// Runs the daemon until `shutdown` resolves. Each message on `reload`
/// re-reads the config from `source`; an invalid one is logged and the old
/// one kept. `systemd` is what to tell the service manager: the binary
/// passes [`Systemd::from_env`], an embedded daemon [`Systemd::off`].
pub async fn run(
    config: Config,
    source: Option<ReloadSource>,
    systemd: Systemd,
    shutdown: impl Future<Output = ()>,
    mut reload: mpsc::Receiver<()>,
) -> anyhow::Result<()> {
    let metrics = Arc::new(Metrics::new());
    let health = Arc::new(Health::default());
    let store = Storage::open(&config.state, OpenMode::Exclusive).await?;

    let stop_all = CancellationToken::new();
    // The probe server outlives the drain: while deliveries finish,
    // `/readyz` answers 503 and `/healthz` and `/metrics` still answer.
    let stop_server = CancellationToken::new();
    let services = TaskTracker::new();
    let deliveries = TaskTracker::new();

    let mut dispatcher = Dispatcher::new(
        store.clone(),
        wiring::notifiers(&config)?,
        wiring::dispatch_settings(&config),
        metrics.clone(),
    );
    // On a shared database: this process is one member of a cluster.
    let membership = match store.cluster() {
        Some(cluster) => {
            dispatcher = dispatcher.with_claim_lease(config.cluster.lease);
            let membership = Arc::new(Membership::new(
                cluster,
                dispatcher.owner(),
                config.cluster.lease,
                metrics.clone(),
                health.clone(),
            ));
            tracing::info!(member = membership.member(), database = %store.shown(), lease_s = config.cluster.lease.as_secs(), "joining the cluster on the state database");
            Some(membership)
        }
        None => None,
    };
    let dispatcher = Arc::new(dispatcher);
    let board = Arc::new(console::Board::default());
    let console = match &config.server {
        Some(server) => {
            let console = Arc::new(console::Console::new(
                &config,
                store.clone(),
                dispatcher.clone(),
                board.clone(),
            ));
            let addr = server::serve(
                server.listen,
                metrics.clone(),
                health.clone(),
                console.clone(),
                &services,
                stop_server.clone(),
            )
            .await
            .with_context(|| format!("server.listen: cannot listen on {}", server.listen))?;
            tracing::info!(%addr, token = server.token.is_some(), "serving /metrics, /healthz, /readyz, the console at / and its API under /api/v1/");
            Some(console)
        }
        None => None,
    };
    let stop_cluster = CancellationToken::new();
    if let Some(membership) = &membership {
        let (membership, stop) = (membership.clone(), stop_cluster.clone());
        services.spawn(async move { membership.run(stop).await });
    }
    {
        let dispatcher = dispatcher.clone();
        let deliveries = deliveries.clone();
        let stop = stop_all.clone();
        services.spawn(async move { dispatcher.run(deliveries, stop).await });
    }

    let liveness = Arc::new(Liveness::default());
    let parts = Parts {
        store: store.clone(),
        metrics: metrics.clone(),
        dispatcher: dispatcher.clone(),
        liveness: liveness.clone(),
        health: health.clone(),
        board: board.clone(),
        services: services.clone(),
        membership: membership.clone(),
    };
    let mut pollers = Pollers::start(&config, &parts)?;
    spawn_gauges(&services, store.clone(), metrics.clone(), stop_all.clone());
    let keep_delivered = Arc::new(AtomicU64::new(config.delivery.keep_delivered.as_secs()));
    spawn_pruner(
        &services,
        store.clone(),
        Prune::Delivered,
        keep_delivered.clone(),
        stop_all.clone(),
    );
    let keep_history = Arc::new(AtomicU64::new(config.state.keep_history.as_secs()));
    spawn_pruner(
        &services,
        store.clone(),
        Prune::History,
        keep_history.clone(),
        stop_all.clone(),
    );
    if let Some(every) = systemd.watchdog_interval() {
        spawn_watchdog(
            &services,
            systemd,
            liveness.clone(),
            every,
            stop_all.clone(),
        );
    }

    health.ready.store(true, Ordering::Relaxed);
    systemd.ready();
    let status = format!("watching {} target(s)", pollers.len());
    systemd.status(&status);
    tracing::info!(
        targets = pollers.len(),
        notifiers = config.notifiers.len(),
        "jobwatch is running"
    );

    let mut config = config;
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            Some(()) = reload.recv() => {
                let Some(source) = &source else {
                    tracing::warn!("reload asked for, but this daemon has no config file to re-read");
                    continue;
                };
                systemd.reloading();
                // Everything the new config needs is built before the old
                // pollers stop: a failure leaves the old ones running.
                let built = reload_config(source).and_then(|new| {
                    let notifiers = wiring::notifiers(&new)?;
                    let next = Pollers::prepare(&new, &parts)?;
                    Ok((new, notifiers, next))
                });
                match built {
                    Ok((new, notifiers, next)) => {
                        pollers.stop().await;
                        dispatcher.replace(notifiers, wiring::dispatch_settings(&new));
                        pollers = next.launch(&parts);
                        keep_delivered.store(new.delivery.keep_delivered.as_secs(), Ordering::Relaxed);
                        keep_history.store(new.state.keep_history.as_secs(), Ordering::Relaxed);
                        if let Some(console) = &console {
                            console.reload(&new);
                        }
                        config = new;
                        metrics.reloaded(true);
                        tracing::info!(targets = pollers.len(), "configuration reloaded");
                    }
                    Err(e) => {
                        metrics.reloaded(false);
                        tracing::error!(error = %format!("{e:#}"), "reload rejected; keeping the old configuration");
                    }
                }
                systemd.ready();
                systemd.status(&format!("watching {} target(s)", pollers.len()));
            }
        }
    }

    // Stop polling, give deliveries under way their grace, then stop.
    tracing::info!("shutting down");
    systemd.stopping();
    health.stopping.store(true, Ordering::Relaxed);
    pollers.stop().await;
    if let Some(membership) = &membership {
        membership.stop_polling().await;
    }
    stop_all.cancel();
    // What only waits for a rate or a receiver's pause stays queued; the
    // grace is for what is being sent.
    dispatcher.stop_waiting();
    deliveries.close();
    let grace = config.delivery.shutdown_grace;
    if tokio::time::timeout(grace, deliveries.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            in_flight = dispatcher.in_flight(),
            "deliveries still under way after shutdown_grace; they stay queued and go out after the restart"
        );
    }
    // The membership goes last: it renews the claims of what was sending.
    stop_cluster.cancel();
    stop_server.cancel();
    services.close();
    let _ = tokio::time::timeout(Duration::from_secs(5), services.wait()).await;
    Ok(())
}

fn reload_config(source: &ReloadSource) -> anyhow::Result<Config> {
    let loaded = Config::load_optional(&source.path, source.must_exist)?.require_targets()?;
    for warning in &loaded.warnings {
        tracing::warn!("config: {warning}");
    }
    Ok(loaded.config)
}

/// What every generation of pollers shares.
struct Parts {
    store: Storage,
    metrics: Arc<Metrics>,
    dispatcher: Arc<Dispatcher>,
    liveness: Arc<Liveness>,
    health: Arc<Health>,
    /// What the console shows of each poll loop.
    board: Arc<console::Board>,
    /// Heartbeat pings run here, so shutdown waits for them.
    services: TaskTracker,
    /// This replica's part in a cluster (PostgreSQL state only).
    membership: Option<Arc<Membership>>,
}

/// The running poll loops, stoppable as a set (reload replaces them).
struct Pollers {
    stop: CancellationToken,
    tracker: TaskTracker,
    count: usize,
}

/// A generation of pollers built from a config but not started: building
/// can fail (a client, a heartbeat), starting cannot.
struct Prepared {
    heartbeat: Option<Arc<Heartbeat>>,
    pace: Pace,
    /// Each target with its account's context (client and budget).
    targets: Vec<(Arc<CycleContext>, Target)>,
    /// Each account's API budget, by scope (`api:ACCOUNT`).
    budgets: Vec<(String, Arc<RateLimiter>)>,
}

impl Pollers {
    fn start(config: &Config, parts: &Parts) -> anyhow::Result<Pollers> {
        Ok(Pollers::prepare(config, parts)?.launch(parts))
    }

    fn prepare(config: &Config, parts: &Parts) -> anyhow::Result<Prepared> {
        let Parts { store, metrics, .. } = parts;
        let heartbeat = match &config.heartbeat {
            Some(hb) => Some(Arc::new(Heartbeat::new(
                hb.url.expose().clone(),
                hb.every,
                config.api.timeout,
            )?)),
            None => None,
        };
        let contexts = wiring::cycle_contexts(config, store, metrics, false)?;
        for account in config.accounts() {
            metrics
                .api_budget
                .get_or_create(&crate::metrics::AccountLabels {
                    account: account.name.to_owned(),
                })
                .set(i64::from(account.api.max_requests_per_minute));
        }
        let targets = config
            .watched()
            .into_iter()
            .map(|target| {
                let ctx = contexts
                    .get(&*target.account)
                    .expect("validation: every target's account exists")
                    .clone();
                (ctx, target)
            })
            .collect();
        let budgets = contexts
            .iter()
            .map(|(name, ctx)| (format!("api:{name}"), ctx.client.budget().clone()))
            .collect();
        Ok(Prepared {
            heartbeat,
            pace: wiring::pace(config),
            targets,
            budgets,
        })
    }
}

impl Prepared {
    fn launch(self, parts: &Parts) -> Pollers {
        let Parts {
            dispatcher,
            liveness,
            health,
            board,
            services,
            ..
        } = parts;
        let Prepared {
            heartbeat,
            pace,
            targets,
            budgets,
        } = self;
        // Shut until this replica holds the target's lease, in a cluster.
        let mut gates: HashMap<Target, Gate> = match &parts.membership {
            Some(membership) => {
                let watched: Vec<Target> = targets.iter().map(|(_, t)| t.clone()).collect();
                let mut limits = budgets;
                limits.extend(
                    dispatcher
                        .limiters()
                        .into_iter()
                        .map(|(name, limiter)| (format!("notifier:{name}"), limiter)),
                );
                membership.set_limiters(limits);
                membership.set_targets(&watched).into_iter().collect()
            }
            None => HashMap::new(),
        };
        let stop = CancellationToken::new();
        let tracker = TaskTracker::new();
        let count = targets.len();
        liveness.reset();
        health.reset_targets(pace.interval);
        for (ctx, target) in targets {
            let (stop, dispatcher, liveness) = (stop.clone(), dispatcher.clone(), liveness.clone());
            let (heartbeat, services, health, board) = (
                heartbeat.clone(),
                services.clone(),
                health.clone(),
                board.clone(),
            );
            liveness.idle(&target);
            let gate = gates.remove(&target).unwrap_or_else(sole_gate);
            tracker.spawn(async move {
                let live = liveness.clone();
                poll_loop(
                    ctx,
                    target,
                    pace,
                    gate,
                    stop,
                    move |target, beat| match beat {
                        Beat::CycleStarted => live.busy(target),
                        Beat::Released => {
                            live.idle(target);
                            health.forget(target);
                            board.forget(target);
                        }
                        Beat::CycleFinished {
                            ok,
                            store_failed,
                            summary,
                        } => {
                            live.idle(target);
                            health.record(target, ok, store_failed);
                            board.cycle_finished(target, &summary);
                            dispatcher.wake();
                            if let Some(hb) = &heartbeat
                                && hb.record(target, ok)
                            {
                                let hb = hb.clone();
                                services.spawn(async move { hb.ping().await });
                            }
                        }
                    },
                )
                .await
            });
        }
        tracker.close();
        Pollers {
            stop,
            tracker,
            count,
        }
    }
}

impl Pollers {
    fn len(&self) -> usize {
        self.count
    }

    async fn stop(&mut self) {
        self.stop.cancel();
        self.tracker.wait().await;
    }
}

/// When each poller's current cycle began (`None`: between cycles).
#[derive(Debug, Default)]
struct Liveness {
    busy_since: Mutex<HashMap<Target, Option<Instant>>>,
}

impl Liveness {
    fn reset(&self) {
        self.busy_since
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    fn busy(&self, target: &Target) {
        self.busy_since
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(target.clone(), Some(Instant::now()));
    }

    fn idle(&self, target: &Target) {
        self.busy_since
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(target.clone(), None);
    }

    /// True while no cycle has run longer than [`STUCK_CYCLE`].
    fn healthy(&self) -> bool {
        self.busy_since
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .all(|since| since.is_none_or(|s| s.elapsed() < STUCK_CYCLE))
    }
}

fn spawn_watchdog(
    tracker: &TaskTracker,
    systemd: Systemd,
    liveness: Arc<Liveness>,
    every: Duration,
    stop: CancellationToken,
) {
    tracker.spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    if liveness.healthy() {
                        systemd.watchdog();
                    } else {
                        tracing::error!("a poll cycle is stuck; no longer feeding the systemd watchdog");
                    }
                }
                _ = stop.cancelled() => return,
            }
        }
    });
}

/// What a pruner deletes.
#[derive(Debug, Clone, Copy)]
enum Prune {
    /// Delivered outbox rows (`delivery.keep_delivered`).
    Delivered,
    /// Events, attempts and ended silences (`state.keep_history`).
    History,
}

/// Deletes what `what` names once older than `keep` (seconds, changed by
/// a reload), every tenth of it, between once a second and once an hour.
fn spawn_pruner(
    tracker: &TaskTracker,
    store: Storage,
    what: Prune,
    keep: Arc<AtomicU64>,
    stop: CancellationToken,
) {
    tracker.spawn(async move {
        loop {
            let keep_for = Duration::from_secs(keep.load(Ordering::Relaxed));
            let every = (keep_for / 10).clamp(Duration::from_secs(1), Duration::from_secs(3600));
            let older_than = jiff::Timestamp::now()
                - jiff::SignedDuration::try_from(keep_for).unwrap_or(jiff::SignedDuration::MAX);
            let pruned = match what {
                Prune::Delivered => store.prune_delivered(older_than).await,
                Prune::History => store.prune_history(older_than).await,
            };
            match pruned {
                Ok(0) => {}
                Ok(pruned) => tracing::debug!(pruned, ?what, "pruned old rows"),
                Err(e) => tracing::warn!(error = %e, ?what, "pruning old rows failed"),
            }
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = stop.cancelled() => return,
            }
        }
    });
}

/// Keeps the outbox gauges current.
fn spawn_gauges(
    tracker: &TaskTracker,
    store: Storage,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) {
    tracker.spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    if let Ok(counts) = store.outbox_counts().await {
                        metrics.outbox_pending.set(counts.pending as i64);
                        metrics.outbox_dead.set(counts.dead as i64);
                    }
                }
                _ = stop.cancelled() => return,
            }
        }
    });
}
