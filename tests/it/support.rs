//! Shared test set-up: an in-process simulator on a loopback port and
//! clients pointed at it.

use std::time::Duration;

use jobwatch::cloud::auth::Credentials;
use jobwatch::cloud::{Client, ClientSettings};
use jobwatch::retry::Backoff;
use jobwatch::sim::{RunningSim, SimOptions};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

/// A running simulator that shuts down when dropped.
pub struct Sim {
    pub sim: RunningSim,
    stop: CancellationToken,
    http: reqwest::Client,
}

impl Drop for Sim {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Sim {
    pub async fn start(opts: SimOptions) -> Sim {
        jobwatch::install_crypto_provider();
        let stop = CancellationToken::new();
        let sim = jobwatch::sim::start(opts, stop.clone())
            .await
            .expect("simulator starts");
        Sim {
            sim,
            stop,
            http: reqwest::Client::new(),
        }
    }

    pub fn url(&self) -> String {
        self.sim.url()
    }

    /// A control-surface call that must succeed; returns its JSON.
    pub async fn control(&self, method: reqwest::Method, path: &str, body: Value) -> Value {
        let response = self
            .http
            .request(method, format!("{}{path}", self.url()))
            .json(&body)
            .send()
            .await
            .expect("control call");
        let status = response.status();
        let text = response.text().await.expect("control body");
        assert!(status.is_success(), "{path}: {status} {text}");
        serde_json::from_str(&text).unwrap_or(Value::Null)
    }

    pub async fn fault(&self, fault: Value) {
        self.control(reqwest::Method::POST, "/sim/faults", fault)
            .await;
    }

    pub async fn stats(&self) -> Value {
        self.control(reqwest::Method::GET, "/sim/stats", Value::Null)
            .await
    }

    /// A client with quick, jitter-free retries.
    pub fn client(&self, credentials: Credentials) -> Client {
        client_for(&self.url(), credentials, Duration::from_secs(5))
    }
}

pub fn client_for(url: &str, credentials: Credentials, timeout: Duration) -> Client {
    jobwatch::install_crypto_provider();
    let settings = ClientSettings {
        endpoint: url.parse().expect("simulator URL"),
        timeout,
        max_requests_per_minute: 60_000,
        backoff: Backoff {
            base: Duration::from_millis(10),
            cap: Duration::from_millis(100),
            max_attempts: 4,
            jitter: false,
        },
    };
    Client::new(settings, credentials).expect("client")
}

/// Serves `app` on `listener` until the returned token is cancelled (the
/// loopback servers of the tests cancel it when dropped).
pub fn serve(listener: tokio::net::TcpListener, app: axum::Router) -> CancellationToken {
    let stop = CancellationToken::new();
    let token = stop.clone();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async move { token.cancelled().await })
            .await;
    });
    stop
}

/// What a loopback receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub query: Option<String>,
    pub headers: axum::http::HeaderMap,
    pub body: String,
    pub at: std::time::Instant,
}

impl Received {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// One scripted answer: status, headers, body.
pub type Answer = (u16, Vec<(&'static str, String)>, String);

/// An HTTP receiver on loopback that hands every request back through a
/// channel and answers from a script (then 200 once the script runs out).
pub struct Receiver {
    pub url: String,
    pub rx: tokio::sync::mpsc::UnboundedReceiver<Received>,
    stop: CancellationToken,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Receiver {
    pub async fn start(script: Vec<Answer>) -> Receiver {
        use axum::response::IntoResponse;
        use std::sync::{Arc, Mutex};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind receiver");
        let url = format!("http://{}", listener.local_addr().expect("receiver addr"));
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let script = Arc::new(Mutex::new(std::collections::VecDeque::from(script)));
        let app = axum::Router::new().fallback(move |req: axum::extract::Request| {
            let tx = tx.clone();
            let script = script.clone();
            async move {
                let (parts, body) = req.into_parts();
                let body = axum::body::to_bytes(body, 16 << 20)
                    .await
                    .unwrap_or_default();
                let _ = tx.send(Received {
                    path: parts.uri.path().to_owned(),
                    query: parts.uri.query().map(str::to_owned),
                    headers: parts.headers,
                    body: String::from_utf8_lossy(&body).into_owned(),
                    at: std::time::Instant::now(),
                });
                let (status, headers, body) =
                    script
                        .lock()
                        .unwrap()
                        .pop_front()
                        .unwrap_or((200, vec![], "ok".into()));
                let mut response =
                    (axum::http::StatusCode::from_u16(status).unwrap(), body).into_response();
                for (name, value) in headers {
                    response.headers_mut().insert(name, value.parse().unwrap());
                }
                response
            }
        });
        let stop = serve(listener, app);
        Receiver { url, rx, stop }
    }

    /// The next request, or a panic after `within`.
    pub async fn next(&mut self, within: Duration) -> Received {
        tokio::time::timeout(within, self.rx.recv())
            .await
            .expect("the receiver waited in vain")
            .expect("receiver channel open")
    }
}

/// Polls `check` until it returns `Some`, or panics after `within`.
pub async fn eventually<T, F, Fut>(within: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out after {within:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ---- The daemon as a process, and what it tells systemd ----------------

/// A daemon config for tests: the simulator at `api`, one webhook notifier
/// `hook` at `hook_url`, `appeared` and `changed` routed to it, 1 s polls
/// (the minimum) and the `demo` project watched for `job_types`.
pub fn daemon_config(
    api: &str,
    hook_url: &str,
    state: &std::path::Path,
    job_types: &[&str],
) -> String {
    let job_types: Vec<String> = job_types.iter().map(|t| format!("{t:?}")).collect();
    format!(
        r#"{preamble}
[[targets]]
project_id = "demo"
job_types = [{job_types}]

[notifiers.hook]
kind = "webhook"
url = "{hook_url}"
max_concurrency = {HOOK_CONCURRENCY}

[[routes]]
notify = ["hook"]
kinds = ["appeared", "changed"]
"#,
        preamble = daemon_preamble(api, state, Some("5s")),
        job_types = job_types.join(", "),
    )
}

/// What every daemon config of the tests starts with: the simulator at
/// `api` without auth and with a budget that never binds, the state file,
/// 1 s polls (the minimum), `debug` logs of our own, and, when given,
/// `delivery.shutdown_grace`. Targets, notifiers and routes follow it.
pub fn daemon_preamble(api: &str, state: &std::path::Path, shutdown_grace: Option<&str>) -> String {
    let delivery = shutdown_grace
        .map(|grace| format!("[delivery]\nshutdown_grace = \"{grace}\"\n\n"))
        .unwrap_or_default();
    format!(
        r#"[api]
endpoint = "{api}"
max_requests_per_minute = 6000
timeout = "10s"

[auth]
method = "none"

[state]
path = {state:?}

[poll]
interval = "1s"
active_interval = "1s"

{delivery}[log]
level = "info,jobwatch=debug"
"#
    )
}

/// `max_concurrency` of the `hook` notifier in [`daemon_config`]: at most
/// this many deliveries can be under way when the daemon dies.
pub const HOOK_CONCURRENCY: usize = 4;

/// `jobwatch run -c CONFIG` as a child process, its stdout and stderr
/// appended to one log file (shared by restarts). Killed when dropped; the
/// log is printed if the test is failing.
pub struct Daemon {
    child: std::process::Child,
    log: std::path::PathBuf,
}

impl Daemon {
    pub fn spawn(
        config: &std::path::Path,
        notify_socket: Option<&std::path::Path>,
        log: &std::path::Path,
    ) -> Daemon {
        Daemon::spawn_with_env(config, notify_socket, log, &[])
    }

    /// [`Daemon::spawn`] with extra environment variables (e.g.
    /// `WATCHDOG_USEC`), set after the inherited ones are removed.
    pub fn spawn_with_env(
        config: &std::path::Path,
        notify_socket: Option<&std::path::Path>,
        log: &std::path::Path,
        env: &[(&str, &str)],
    ) -> Daemon {
        use std::process::{Command, Stdio};
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("daemon log file");
        let err = out.try_clone().expect("daemon log file");
        let mut command = Command::new(env!("CARGO_BIN_EXE_jobwatch"));
        command
            .arg("run")
            .arg("-c")
            .arg(config)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        for name in inherited_settings() {
            command.env_remove(name);
        }
        if let Some(socket) = notify_socket {
            command.env("NOTIFY_SOCKET", socket);
        }
        command.envs(env.iter().copied());
        let child = command.spawn().expect("spawn jobwatch run");
        Daemon {
            child,
            log: log.to_owned(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal by name (`TERM`, `HUP`, …) with kill(1).
    pub fn signal(&self, name: &str) {
        let status = std::process::Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} {} failed", self.pid());
    }

    /// SIGKILL, and reap the process: when this returns it is gone.
    pub fn kill9(&mut self) {
        // `Child::kill` is SIGKILL on Unix.
        self.child.kill().expect("SIGKILL the daemon");
        self.child.wait().expect("reap the daemon");
    }

    /// `None` while it runs.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().expect("poll the daemon")
    }

    /// Its exit status, or a panic after `within`.
    pub async fn exit_status(&mut self, within: Duration) -> std::process::ExitStatus {
        eventually(within, "the daemon to exit", || {
            let status = self.exited();
            async move { status }
        })
        .await
    }

    /// Everything the daemon (and its restarts) logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The address `[server] listen` bound, as the daemon logged it
    /// (`serving /metrics, /healthz and /readyz addr=…`): with port 0 the
    /// daemon picks a free port itself, so no test hands out a port that
    /// another test may take first. The last such line counts (restarts
    /// share the log). Panics after `within`.
    pub async fn served_addr(&self, within: Duration) -> std::net::SocketAddr {
        eventually(within, "the daemon to log its server address", || {
            let log = strip_ansi(&self.log());
            let addr = log
                .lines()
                .filter(|l| l.contains("serving /metrics"))
                .filter_map(|l| l.split("addr=").nth(1))
                .filter_map(|rest| rest.split_whitespace().next())
                .filter_map(|a| a.parse().ok())
                .next_back();
            async move { addr }
        })
        .await
    }
}

/// `text` without ANSI colour sequences (`ESC [ … m`), which the text log
/// format writes even to a file.
pub fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // Skip to the end of the sequence: a letter ends it.
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.exited().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if std::thread::panicking() {
            eprintln!(
                "---- jobwatch log ({}) ----\n{}",
                self.log.display(),
                self.log()
            );
        }
    }
}

/// A `NOTIFY_SOCKET` the test owns: a datagram socket that collects what
/// the daemon tells systemd.
pub struct NotifySocket {
    pub path: std::path::PathBuf,
    socket: tokio::net::UnixDatagram,
}

impl NotifySocket {
    pub fn bind(dir: &std::path::Path) -> NotifySocket {
        let path = dir.join("notify.sock");
        let socket = tokio::net::UnixDatagram::bind(&path).expect("bind NOTIFY_SOCKET");
        NotifySocket { path, socket }
    }

    /// Reads datagrams until a line equal to `line` arrives; returns every
    /// line read on the way, that one included. Panics after `within`.
    pub async fn expect(&mut self, line: &str, within: Duration) -> Vec<String> {
        let mut lines = Vec::new();
        let mut buf = vec![0u8; 4096];
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let n = tokio::time::timeout_at(deadline, self.socket.recv(&mut buf))
                .await
                .unwrap_or_else(|_| {
                    panic!("timed out after {within:?} waiting for {line:?}; got {lines:?}")
                })
                .expect("read NOTIFY_SOCKET");
            let text = String::from_utf8_lossy(&buf[..n]).into_owned();
            let mut found = false;
            for l in text.lines() {
                found |= l == line;
                lines.push(l.to_owned());
            }
            if found {
                return lines;
            }
        }
    }
}

/// The daemon's state file, read beside it (SQLite allows a second
/// connection): is the target baselined?
pub async fn baselined(state: &std::path::Path, project: &str, job_type: &str) -> bool {
    let (state, project, job_type) = (state.to_owned(), project.to_owned(), job_type.to_owned());
    tokio::task::spawn_blocking(move || {
        if !state.exists() {
            return false;
        }
        let store = jobwatch::store::Store::open(&state).expect("open the state file");
        let targets = store.targets().expect("list targets");
        targets.iter().any(|t| {
            t.baselined && t.target.project_id == project && t.target.job_type.as_str() == job_type
        })
    })
    .await
    .expect("store query")
}

/// `(pending, dead)` rows in the daemon's outbox.
pub async fn outbox(state: &std::path::Path) -> (u64, u64) {
    let state = state.to_owned();
    tokio::task::spawn_blocking(move || {
        let store = jobwatch::store::Store::open(&state).expect("open the state file");
        (
            store.pending_count().expect("pending"),
            store.dead_count().expect("dead"),
        )
    })
    .await
    .expect("store query")
}

/// Requests to the simulator's list endpoint so far.
pub async fn list_requests(sim: &Sim) -> u64 {
    sim.stats().await["by_path"][jobwatch::sim::LIST_PATH]
        .as_u64()
        .unwrap_or(0)
}

/// A webhook receiver that records every request as it arrives (before
/// answering) and answers 200 after a delay the test can change: a slow
/// receiver keeps deliveries in flight.
pub struct Recorder {
    pub url: String,
    got: std::sync::Arc<std::sync::Mutex<Vec<Received>>>,
    delay_ms: std::sync::Arc<std::sync::atomic::AtomicU64>,
    in_flight: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    stop: CancellationToken,
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Recorder {
    pub async fn start() -> Recorder {
        use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
        use std::sync::{Arc, Mutex};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind recorder");
        let url = format!("http://{}", listener.local_addr().expect("recorder addr"));
        let got = Arc::new(Mutex::new(Vec::new()));
        let delay_ms = Arc::new(AtomicU64::new(0));
        let in_flight = Arc::new(AtomicUsize::new(0));
        /// Counts a request as in flight until its handler ends or is
        /// dropped (the client went away).
        struct InFlight(Arc<AtomicUsize>);
        impl Drop for InFlight {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::SeqCst);
            }
        }
        let app = {
            let (got, delay_ms, in_flight) = (got.clone(), delay_ms.clone(), in_flight.clone());
            axum::Router::new().fallback(move |req: axum::extract::Request| {
                let (got, delay_ms, in_flight) = (got.clone(), delay_ms.clone(), in_flight.clone());
                async move {
                    in_flight.fetch_add(1, Ordering::SeqCst);
                    let _guard = InFlight(in_flight);
                    let (parts, body) = req.into_parts();
                    let body = axum::body::to_bytes(body, 16 << 20)
                        .await
                        .unwrap_or_default();
                    got.lock().unwrap().push(Received {
                        path: parts.uri.path().to_owned(),
                        query: parts.uri.query().map(str::to_owned),
                        headers: parts.headers,
                        body: String::from_utf8_lossy(&body).into_owned(),
                        at: std::time::Instant::now(),
                    });
                    // A slow receiver, not synchronisation.
                    let delay = delay_ms.load(Ordering::SeqCst);
                    if delay > 0 {
                        tokio::time::sleep(Duration::from_millis(delay)).await;
                    }
                    "ok"
                }
            })
        };
        let stop = serve(listener, app);
        Recorder {
            url,
            got,
            delay_ms,
            in_flight,
            stop,
        }
    }

    /// Every request so far, in order of arrival.
    pub fn received(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }

    pub fn set_delay(&self, delay: Duration) {
        self.delay_ms.store(
            delay.as_millis() as u64,
            std::sync::atomic::Ordering::SeqCst,
        );
    }

    /// Requests received and not yet answered.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// Control-surface shorthands for the daemon tests (project `demo`).
impl Sim {
    /// Makes one parent job of `count` WAITING sub-jobs; returns their ids.
    pub async fn create_waiting(&self, job_type: &str, count: u32) -> Vec<String> {
        self.create(job_type, count, "WAITING").await
    }

    /// Makes one parent job of `count` sub-jobs in `status`; returns their ids.
    pub async fn create(&self, job_type: &str, count: u32, status: &str) -> Vec<String> {
        let made = self
            .control(
                reqwest::Method::POST,
                "/sim/jobs",
                serde_json::json!({"project_id": "demo", "job_type": job_type, "count": count, "status": status}),
            )
            .await;
        made["sub_job_ids"]
            .as_array()
            .expect("sub_job_ids")
            .iter()
            .map(|id| id.as_str().expect("an id").to_owned())
            .collect()
    }

    /// Sets a sub-job's status; a FAILED one gets [`SIM_ERROR_CODE`].
    pub async fn set_status(&self, id: &str, status: &str) {
        let body = if status == "FAILED" {
            serde_json::json!({"status": status, "error_code": SIM_ERROR_CODE, "error_message": "quota exceeded"})
        } else {
            serde_json::json!({ "status": status })
        };
        self.control(reqwest::Method::POST, &format!("/sim/jobs/{id}"), body)
            .await;
    }

    /// Every true transition so far (`GET /sim/events`).
    pub async fn events(&self) -> Vec<Value> {
        match self
            .control(reqwest::Method::GET, "/sim/events", Value::Null)
            .await
        {
            Value::Array(events) => events,
            other => panic!("/sim/events: {other}"),
        }
    }
}

/// The error code [`Sim::set_status`] gives failures.
pub const SIM_ERROR_CODE: &str = "WKS.00129901";

/// Waits until the daemon's state file shows `demo/{job_type}` baselined.
pub async fn wait_baselined(state: &std::path::Path, job_type: &str, within: Duration) {
    eventually(within, &format!("demo/{job_type} to be baselined"), || {
        let state = state.to_owned();
        let job_type = job_type.to_owned();
        async move { baselined(&state, "demo", &job_type).await.then_some(()) }
    })
    .await;
}

/// Event ids of every row still pending in the daemon's outbox.
pub async fn pending_event_ids(state: &std::path::Path) -> std::collections::BTreeSet<String> {
    let state = state.to_owned();
    tokio::task::spawn_blocking(move || {
        let store = jobwatch::store::Store::open(&state).expect("open the state file");
        // Due or not: anything pending, however far its next attempt.
        let horizon = jiff::Timestamp::now() + jiff::SignedDuration::from_hours(24 * 365);
        store
            .due(horizon, usize::MAX >> 1)
            .expect("pending rows")
            .into_iter()
            .map(|row| row.event_id)
            .collect()
    })
    .await
    .expect("store query")
}

/// Runs the `jobwatch` binary with `-c config` and `args`, to completion.
pub async fn jobwatch(config: &std::path::Path, args: &[&str]) -> std::process::Output {
    let command = tokio::process::Command::new(env!("CARGO_BIN_EXE_jobwatch"));
    run_to_completion(command, config, args).await
}

/// `command` (our binary, or a wrapper that runs it) with `-c config` and
/// `args`, no colour and none of the runner's own settings, to completion.
async fn run_to_completion(
    mut command: tokio::process::Command,
    config: &std::path::Path,
    args: &[&str],
) -> std::process::Output {
    command
        .arg("-c")
        .arg(config)
        .args(args)
        .env("NO_COLOR", "1");
    for name in inherited_settings() {
        command.env_remove(name);
    }
    command.output().await.expect("run jobwatch")
}

/// The arguments that make util-linux's `setpriv` run a command as
/// `nobody` (for tests that need a user who cannot write what root can).
pub const AS_NOBODY: [&str; 3] = ["--reuid=65534", "--regid=65534", "--clear-groups"];

/// The variables of the test runner's own environment that would change
/// what a `jobwatch` child does (a systemd unit's socket and watchdog,
/// `JOBWATCH_` overrides, SDK credentials, `RUST_LOG`). Every child the
/// tests start removes them: a test sets what it needs, explicitly.
pub fn inherited_settings() -> Vec<std::ffi::OsString> {
    std::env::vars_os()
        .map(|(name, _)| name)
        .filter(|name| {
            let name = name.to_string_lossy();
            name.starts_with("JOBWATCH_")
                || name.starts_with("HUAWEICLOUD_SDK_")
                || [
                    "NOTIFY_SOCKET",
                    "WATCHDOG_USEC",
                    "WATCHDOG_PID",
                    "RUST_LOG",
                    // A table's width.
                    "COLUMNS",
                ]
                .contains(&name.as_ref())
        })
        .collect()
}

/// One target (`demo`/CREATE_SERVER) of `sim` polled cycle by cycle, as
/// its poll loop would, on a state file of its own and no routes.
pub struct PollLoop {
    pub ctx: jobwatch::watch::poller::CycleContext,
    pub state: jobwatch::watch::poller::TargetState,
    _dir: tempfile::TempDir,
}

impl PollLoop {
    pub fn new(sim: &Sim, strategy: jobwatch::watch::strategy::Strategy) -> PollLoop {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = jobwatch::store::SharedStore::new(
            jobwatch::store::Store::open(dir.path().join("state.db")).expect("state file"),
        );
        let ctx = jobwatch::watch::poller::CycleContext {
            client: std::sync::Arc::new(sim.client(Credentials::None)),
            store: store.into(),
            router: jobwatch::route::Router::from_routes(vec![]),
            diff: jobwatch::watch::diff::DiffSettings::default(),
            metrics: std::sync::Arc::new(jobwatch::metrics::Metrics::new()),
            dry_run: false,
            strategy,
            full_scan_every: Duration::from_secs(3600),
        };
        PollLoop {
            state: jobwatch::watch::poller::TargetState::for_loop(&ctx),
            ctx,
            _dir: dir,
        }
    }

    /// One cycle that must succeed.
    pub async fn cycle(&mut self) -> jobwatch::watch::poller::CycleReport {
        let target = jobwatch::watch::Target::new("demo", "CREATE_SERVER");
        jobwatch::watch::poller::cycle(&self.ctx, &target, &mut self.state)
            .await
            .unwrap_or_else(|e| panic!("cycle failed: {e}"))
    }

    /// [`PollLoop::reconcile`] that may fail.
    pub async fn reconcile_may_fail(
        &mut self,
    ) -> Result<jobwatch::watch::poller::CycleReport, jobwatch::watch::poller::CycleError> {
        let plan = std::mem::replace(
            &mut self.state.plan,
            jobwatch::watch::strategy::ScanPlan::new(self.ctx.strategy, Duration::ZERO),
        );
        let target = jobwatch::watch::Target::new("demo", "CREATE_SERVER");
        let result = jobwatch::watch::poller::cycle(&self.ctx, &target, &mut self.state).await;
        self.state.plan = plan;
        result
    }

    /// A cycle that reconciles at once (a full scan), as after
    /// `full_scan_every`; the plan is as before afterwards.
    pub async fn reconcile(&mut self) -> jobwatch::watch::poller::CycleReport {
        let plan = std::mem::replace(
            &mut self.state.plan,
            jobwatch::watch::strategy::ScanPlan::new(self.ctx.strategy, Duration::ZERO),
        );
        let report = self.cycle().await;
        self.state.plan = plan;
        report
    }
}

/// Makes `dir` and the files in it read-only (0555, 0444) for whoever is
/// not root; [`jobwatch_as_reader`] runs a command as such a user.
pub fn make_read_only(dir: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    for entry in std::fs::read_dir(dir).expect("list dir") {
        let path = entry.expect("entry").path();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o444)).expect("chmod");
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o555)).expect("chmod");
}

/// [`jobwatch`] as a user who cannot write what [`make_read_only`] made
/// read-only: as root (who writes anything) the command runs as `nobody`
/// through util-linux's `setpriv`; otherwise as ourselves.
pub async fn jobwatch_as_reader(config: &std::path::Path, args: &[&str]) -> std::process::Output {
    // SAFETY: geteuid only reads the process's credentials.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        return jobwatch(config, args).await;
    }
    let mut command = tokio::process::Command::new("setpriv");
    command.args(AS_NOBODY).arg(env!("CARGO_BIN_EXE_jobwatch"));
    run_to_completion(command, config, args).await
}
