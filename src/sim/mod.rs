//! The embedded Workspace API simulator (`jobwatch sim`, docs/simulator.md): a
//! faithful, deterministic stand-in for the sub-job API with a control
//! surface for tests and demos.
//!
//! Layout: `generator` makes the data (pure, seeded), `state` holds it,
//! `http` is the cloud surface, `auth` checks its credentials, `faults`
//! what can go wrong on it, `control` the `/sim/*` side channel, `serve`
//! the accept loop.

mod answer;
mod auth;
mod control;
mod faults;
pub mod generator;
mod http;
mod serve;
mod state;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::routing::{get, post};
use jiff::Timestamp;
use tokio::net::TcpListener;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use auth::MAX_SKEW;
pub use faults::THROTTLE_MSG;
pub use generator::Generator;
pub use http::{COUNT_PATH, IAM_PATH, LIST_PATH};

use crate::cloud::model::JobType;
use crate::secret::Secret;
use auth::AuthRules;
use state::World;

/// Everything `jobwatch sim` can be told.
#[derive(Debug, Clone)]
pub struct SimOptions {
    pub listen: SocketAddr,
    pub seed: u64,
    /// Empty means one project, `demo`.
    pub projects: Vec<String>,
    /// Terminal sub-jobs pre-made per project × known job type.
    pub history: u32,
    /// Only these job types get `history` (empty: every known one).
    pub history_job_types: Vec<JobType>,
    /// New parent jobs per second; 0 = none.
    pub rate: f64,
    /// Sub-jobs per generated parent job.
    pub fanout: u32,
    /// Mean milliseconds between a generated sub-job's status steps.
    pub step_ms: u64,
    /// Share of generated sub-jobs that fail, `0..=1`.
    pub fail_ratio: f64,
    pub ak: Option<String>,
    pub sk: Option<Secret>,
    pub token: Option<Secret>,
    pub iam_user: Option<String>,
    pub iam_password: Option<Secret>,
    /// List oldest first, breaking the documented order.
    pub oldest_first: bool,
}

impl Default for SimOptions {
    fn default() -> SimOptions {
        SimOptions {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            seed: 1,
            projects: vec!["demo".to_owned()],
            history: 0,
            history_job_types: Vec::new(),
            rate: 0.0,
            fanout: 3,
            step_ms: 2000,
            fail_ratio: 0.2,
            ak: None,
            sk: None,
            token: None,
            iam_user: None,
            iam_password: None,
            oldest_first: false,
        }
    }
}

impl SimOptions {
    /// The projects to serve, `demo` when none are named.
    fn project_list(&self) -> Vec<String> {
        let projects: Vec<String> = self
            .projects
            .iter()
            .map(|p| p.trim().to_owned())
            .filter(|p| !p.is_empty())
            .collect();
        if projects.is_empty() {
            vec!["demo".to_owned()]
        } else {
            projects
        }
    }

    fn validate(&self) -> Result<AuthRules, String> {
        if !(self.rate.is_finite() && self.rate >= 0.0) {
            return Err(format!("rate must be a number ≥ 0, got {}", self.rate));
        }
        if !(0.0..=1.0).contains(&self.fail_ratio) {
            return Err(format!(
                "fail ratio must be within 0..=1, got {}",
                self.fail_ratio
            ));
        }
        let pair = |a: &Option<String>, b: &Option<Secret>, what: &str| match (a, b) {
            (Some(a), Some(b)) => Ok(Some((a.clone(), b.clone()))),
            (None, None) => Ok(None),
            _ => Err(format!("{what} must be given together")),
        };
        Ok(AuthRules {
            aksk: pair(&self.ak, &self.sk, "ak and sk")?,
            token: self.token.clone(),
            iam: pair(&self.iam_user, &self.iam_password, "iam user and password")?,
        })
    }
}

/// State shared by every handler and the generator task.
pub(crate) struct Shared {
    store: Mutex<World>,
    auth: AuthRules,
    /// Wakes the generator task when a planned job arrives from elsewhere.
    wake: tokio::sync::Notify,
}

impl Shared {
    /// The store. A handler that panicked while holding the lock cannot
    /// have left it half-changed in a way that matters for a simulator, so
    /// a poisoned lock is used as is rather than panicking every request.
    fn store(&self) -> MutexGuard<'_, World> {
        self.store.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds one planned WAITING sub-job drawn from the control rng (the
    /// `shift` fault's newcomer).
    fn insert_control_job(&self, project: &str, job_type: &JobType) {
        let mut store = self.store();
        let job_id = store.control.uuid();
        let new = store
            .control
            .planned(project, job_type, &job_id, Timestamp::now());
        store.insert(new, Instant::now());
        drop(store);
        self.wake.notify_one();
    }
}

/// A simulator that is listening.
#[derive(Debug)]
pub struct RunningSim {
    addr: SocketAddr,
    tracker: TaskTracker,
}

impl RunningSim {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR`, the endpoint to point a client at.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Returns once the shutdown token is cancelled and every task of the
    /// simulator (accept loop, connections, generator) has finished.
    pub async fn wait(self) {
        self.tracker.wait().await;
    }
}

/// Binds `opts.listen`, builds the history, and spawns the server and the
/// generator; they run until `shutdown` is cancelled. Bad options are an
/// `InvalidInput` error.
pub async fn start(opts: SimOptions, shutdown: CancellationToken) -> std::io::Result<RunningSim> {
    let auth = opts
        .validate()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let listener = TcpListener::bind(opts.listen).await?;
    let addr = listener.local_addr()?;
    let projects = opts.project_list();
    let step = Duration::from_millis(opts.step_ms.max(1));
    let mut store = World::new(
        Generator::new(opts.seed, opts.fail_ratio, step),
        // A different stream for control-made jobs (see `World::control`).
        Generator::new(opts.seed ^ 0x5eed_c0de_0000_0001, opts.fail_ratio, step),
    );
    store.oldest_first = opts.oldest_first;
    let now = Timestamp::now();
    let started = Instant::now();
    for project in &projects {
        store.ensure_project(project);
        for job_type in JobType::KNOWN {
            if !opts.history_job_types.is_empty() && !opts.history_job_types.contains(job_type) {
                continue;
            }
            let jobs = store
                .generator
                .history(project, job_type, opts.history, now);
            for job in jobs {
                store.insert(generator::NewSubJob { job, plan: vec![] }, started);
            }
        }
    }
    let shared = Arc::new(Shared {
        store: Mutex::new(store),
        auth,
        wake: tokio::sync::Notify::new(),
    });
    let tracker = TaskTracker::new();
    tracker.spawn(serve::serve(
        listener,
        router(shared.clone()),
        tracker.clone(),
        shutdown.clone(),
    ));
    tracker.spawn(generate(shared, projects, opts.rate, opts.fanout, shutdown));
    // Closed now so `wait` can finish; connection tasks spawned later
    // still keep it waiting while they run.
    tracker.close();
    Ok(RunningSim { addr, tracker })
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route(
            LIST_PATH,
            get(http::list).fallback(http::method_not_allowed),
        )
        .route(
            COUNT_PATH,
            get(http::count).fallback(http::method_not_allowed),
        )
        .route(
            IAM_PATH,
            post(http::iam_tokens).fallback(http::method_not_allowed),
        )
        .route(
            "/sim/jobs",
            post(control::create_jobs).fallback(http::method_not_allowed),
        )
        .route(
            "/sim/jobs/{sub_job_id}",
            post(control::update_job)
                .delete(control::delete_job)
                .fallback(http::method_not_allowed),
        )
        .route(
            "/sim/faults",
            post(control::add_fault)
                .delete(control::clear_faults)
                .fallback(http::method_not_allowed),
        )
        .route(
            "/sim/events",
            get(control::events).fallback(http::method_not_allowed),
        )
        .route(
            "/sim/stats",
            get(control::stats).fallback(http::method_not_allowed),
        )
        .route("/sim/{*rest}", axum::routing::any(control::not_found))
        .fallback(http::not_found)
        .layer(axum::middleware::from_fn_with_state(
            shared.clone(),
            http::gate,
        ))
        .with_state(shared)
}

/// Makes new parent jobs at `rate` per second and steps every planned
/// sub-job when due, until `shutdown`. It sleeps until the next thing is
/// due; a newly planned job outside this task (`shift`) wakes it.
async fn generate(
    shared: Arc<Shared>,
    projects: Vec<String>,
    rate: f64,
    fanout: u32,
    shutdown: CancellationToken,
) {
    // At most a thousand parent jobs a second: more would only burn CPU.
    let every = (rate > 0.0).then(|| Duration::from_secs_f64(1.0 / rate.min(1000.0)));
    let mut next_spawn = every.map(|every| Instant::now() + every);
    loop {
        let next_due = shared.store().next_due();
        let wake = match (next_spawn, next_due) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let sleep = async {
            match wake {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = sleep => {}
            _ = shared.wake.notified() => {}
        }
        let now = Instant::now();
        let wall = Timestamp::now();
        let mut store = shared.store();
        if let (Some(every), Some(at)) = (every, next_spawn.as_mut()) {
            // After a stall (a suspended laptop), carry on from now rather
            // than make up for lost time in one burst.
            if now.saturating_duration_since(*at) > Duration::from_secs(1) {
                *at = now;
            }
            while *at <= now {
                *at += every;
                for job in store.generator.parent_job(&projects, fanout, wall) {
                    store.insert(job, now);
                }
            }
        }
        store.step_due(now, wall);
    }
}

/// Put on each request by its connection task: cancelling it makes that
/// task drop the connection without answering (the `reset` fault).
#[derive(Clone)]
pub(crate) struct ConnKill(pub CancellationToken);
