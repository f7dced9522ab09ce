//! The operator console on `server.listen`: a status page at `/` that
//! refreshes itself, a page per sub-job and per parent job, and the JSON
//! API under `/api/v1/` they are drawn from.
//!
//! Access: with `server.token` every path but `/healthz` and `/readyz`
//! needs it, as `Authorization: Bearer …` (scripts, Prometheus) or as the
//! session cookie `/login` sets (a browser). Without a token (loopback
//! only, `check` enforces it) reading needs nothing, but the `Host` must
//! be a loopback name, so a page elsewhere cannot read it through DNS
//! rebinding. Actions (requeue a dead letter, add or expire a silence)
//! always need the token: a bearer header, or the cookie together with the
//! page's CSRF value in `X-Jobwatch-Csrf` (a header another site's form
//! cannot send). Nothing here shows a secret or a webhook URL: notifiers
//! by name, the state without its password.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Redirect, Response};
use hmac::{KeyInit, Mac};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::cloud::model::Status;
use crate::config::Config;
use crate::notify::dispatch::Dispatcher;
use crate::secret::Secret;
use crate::silence::NewSilence;
use crate::storage::{HistoryEntry, HistoryQuery, Storage};
use crate::watch::Target;
use crate::watch::poller::CycleSummary;

/// How often the page asks for a fresh copy of itself.
pub const REFRESH: Duration = Duration::from_secs(2);

/// What the poll loops last did, per target, and the API requests each
/// account made in the last minute: what the console shows beside the
/// stored state.
#[derive(Debug, Default)]
pub struct Board {
    inner: Mutex<BoardInner>,
}

#[derive(Debug, Default)]
struct BoardInner {
    targets: HashMap<Target, Polled>,
    /// Each account's cycles of the last minute: when, and how many requests.
    requests: HashMap<String, VecDeque<(tokio::time::Instant, u32)>>,
}

#[derive(Debug, Clone)]
struct Polled {
    at: Timestamp,
    summary: CycleSummary,
}

impl Board {
    /// Records a finished cycle of `target`.
    pub fn cycle_finished(&self, target: &Target, summary: &CycleSummary) {
        let mut inner = lock(&self.inner);
        let now = tokio::time::Instant::now();
        let window = inner
            .requests
            .entry(target.account.to_string())
            .or_default();
        window.push_back((now, summary.requests));
        while window
            .front()
            .is_some_and(|(at, _)| now.duration_since(*at) > Duration::from_secs(60))
        {
            window.pop_front();
        }
        inner.targets.insert(
            target.clone(),
            Polled {
                at: Timestamp::now(),
                summary: summary.clone(),
            },
        );
    }

    /// Forgets a target another replica polls now.
    pub fn forget(&self, target: &Target) {
        lock(&self.inner).targets.remove(target);
    }

    fn used_last_minute(&self, account: &str) -> u32 {
        let inner = lock(&self.inner);
        let now = tokio::time::Instant::now();
        inner.requests.get(account).map_or(0, |w| {
            w.iter()
                .filter(|(at, _)| now.duration_since(*at) <= Duration::from_secs(60))
                .map(|(_, n)| n)
                .sum()
        })
    }

    fn polled(&self, target: &Target) -> Option<Polled> {
        lock(&self.inner).targets.get(target).cloned()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// What the console takes from the config (replaced on reload).
#[derive(Debug, Clone)]
struct View {
    targets: Vec<(Target, &'static str)>,
    budgets: Vec<(String, u32)>,
    timezone: jiff::tz::TimeZone,
    token: Option<Secret>,
    /// Where the state is, without a password.
    state: String,
}

impl View {
    fn from_config(config: &Config) -> View {
        let strategy = match config.poll.strategy {
            crate::watch::strategy::Strategy::Full => "full",
            crate::watch::strategy::Strategy::Incremental => "incremental",
        };
        View {
            targets: config
                .watched()
                .into_iter()
                .map(|t| (t, strategy))
                .collect(),
            budgets: config
                .accounts()
                .map(|a| (a.name.to_owned(), a.api.max_requests_per_minute))
                .collect(),
            timezone: config.delivery.timezone.clone(),
            token: config.server.as_ref().and_then(|s| s.token.clone()),
            state: config.state.shown(),
        }
    }
}

/// The console's shared state: the store, the dispatcher (its notifiers'
/// pauses), the board and the config's view.
pub struct Console {
    store: Storage,
    dispatcher: Arc<Dispatcher>,
    board: Arc<Board>,
    view: Mutex<Arc<View>>,
    templates: minijinja::Environment<'static>,
}

impl Console {
    pub fn new(
        config: &Config,
        store: Storage,
        dispatcher: Arc<Dispatcher>,
        board: Arc<Board>,
    ) -> Console {
        let mut templates = minijinja::Environment::new();
        for (name, text) in [
            ("layout.html", include_str!("console/layout.html")),
            ("status.html", include_str!("console/status.html")),
            ("history.html", include_str!("console/history.html")),
            ("login.html", include_str!("console/login.html")),
        ] {
            templates
                .add_template(name, text)
                .expect("the console's templates compile (tested)");
        }
        // `value|time(tz)`: an RFC 3339 time in the zone named, `–` for
        // none; `|clock(tz)` only its time of day when that day is today.
        templates.add_filter("time", |value: Option<String>, tz: String| {
            shown_time(value, &tz, false)
        });
        templates.add_filter("clock", |value: Option<String>, tz: String| {
            shown_time(value, &tz, true)
        });
        // `id|short`: a long id's first 8 characters and `…` (the whole id
        // is in the link's title and on its page).
        templates.add_filter("short", |id: String| -> String {
            match id.char_indices().nth(8) {
                Some((at, _)) if id.chars().count() > 9 => format!("{}…", &id[..at]),
                _ => id,
            }
        });
        Console {
            store,
            dispatcher,
            board,
            view: Mutex::new(Arc::new(View::from_config(config))),
            templates,
        }
    }

    /// Takes a reloaded config's targets, budgets and token.
    pub fn reload(&self, config: &Config) {
        *lock(&self.view) = Arc::new(View::from_config(config));
    }

    fn view(&self) -> Arc<View> {
        lock(&self.view).clone()
    }

    fn render(&self, name: &str, context: minijinja::Value) -> Response {
        match self.render_text(name, context) {
            Ok(html) => Html(html).into_response(),
            Err(failed) => failed.into_response(),
        }
    }

    /// A template rendered, or why not (logged here).
    fn render_text(&self, name: &str, context: minijinja::Value) -> Result<String, RenderFailed> {
        self.templates
            .get_template(name)
            .and_then(|t| t.render(context))
            .map_err(|e| {
                tracing::error!(error = %e, template = name, "console template failed");
                RenderFailed
            })
    }

    /// `body` alone (the page's refresh asks for `?fragment`), or in the
    /// layout with its title and CSRF value.
    fn page(&self, headers: &HeaderMap, fragment: bool, title: &str, body: String) -> Response {
        if fragment {
            return Html(body).into_response();
        }
        let context = page_context(self, headers, title, body);
        self.render("layout.html", context)
    }

    fn timezone_name(&self) -> String {
        self.view().timezone.iana_name().unwrap_or("UTC").to_owned()
    }

    /// Everything `/` and `/api/v1/status` show.
    async fn status(&self) -> Result<StatusDoc, String> {
        let view = self.view();
        let now = Timestamp::now();
        let stored = self.store.targets().await.map_err(|e| e.to_string())?;
        let targets = view
            .targets
            .iter()
            .map(|(t, strategy)| {
                let polled = self.board.polled(t);
                let stored = stored.iter().find(|s| s.target == *t);
                let summary = polled.as_ref().map(|p| &p.summary);
                TargetDoc {
                    name: t.name.to_string(),
                    account: t.account.to_string(),
                    project_id: t.project_id.clone(),
                    job_type: t.job_type.as_str().to_owned(),
                    strategy,
                    polled_here: polled.is_some(),
                    last_poll: polled.as_ref().map(|p| p.at),
                    next_poll: polled.as_ref().and_then(|p| {
                        jiff::SignedDuration::try_from(p.summary.next_in)
                            .ok()
                            .and_then(|d| p.at.checked_add(d).ok())
                    }),
                    requests_last_cycle: summary.map(|s| s.requests),
                    tracked: summary
                        .and_then(|s| s.tracked)
                        .or(stored.map(|s| s.tracked)),
                    active: summary.and_then(|s| s.active).or(stored.map(|s| s.active)),
                    last_error: summary.and_then(|s| s.error.clone()),
                }
            })
            .collect();
        let accounts = view
            .budgets
            .iter()
            .filter(|(name, _)| view.targets.iter().any(|(t, _)| *t.account == **name))
            .map(|(name, budget)| AccountDoc {
                name: name.clone(),
                budget_per_minute: *budget,
                used_last_minute: self.board.used_last_minute(name),
            })
            .collect();
        let backlog = self.store.backlog().await.map_err(|e| e.to_string())?;
        let mut notifiers: BTreeMap<String, NotifierDoc> = BTreeMap::new();
        let instant = tokio::time::Instant::now();
        for (name, limiter) in self.dispatcher.limiters() {
            let paused_until = limiter.paused_until().and_then(|until| {
                let left = until.saturating_duration_since(instant);
                jiff::SignedDuration::try_from(left)
                    .ok()
                    .and_then(|d| now.checked_add(d).ok())
            });
            notifiers.insert(
                name.clone(),
                NotifierDoc {
                    notifier: name,
                    pending: 0,
                    next_attempt_at: None,
                    paused_until,
                },
            );
        }
        for b in backlog {
            let doc = notifiers
                .entry(b.notifier.clone())
                .or_insert_with(|| NotifierDoc {
                    notifier: b.notifier.clone(),
                    pending: 0,
                    next_attempt_at: None,
                    paused_until: None,
                });
            doc.pending = b.pending;
            doc.next_attempt_at = b.next_attempt_at;
        }
        let notifiers: Vec<NotifierDoc> = notifiers.into_values().collect();
        let pending = notifiers.iter().map(|n| n.pending).sum();
        let dead_count = self
            .store
            .outbox_counts()
            .await
            .map_err(|e| e.to_string())?
            .dead;
        let dead_letters = self
            .store
            .newest_dead_letters(50)
            .await
            .map_err(|e| e.to_string())?
            .into_iter()
            .map(|row| DeadDoc {
                target: row
                    .event()
                    .map(|e| e.target_name().into_owned())
                    .unwrap_or_else(|_| row.target.to_string()),
                id: row.id,
                notifier: row.notifier,
                sub_job_id: row.sub_job_id,
                kind: row.kind,
                created_at: row.created_at,
                finished_at: row.finished_at,
                attempts: row.attempts,
                answer: row.last_error,
            })
            .collect();
        let silences = self
            .store
            .silences()
            .await
            .map_err(|e| e.to_string())?
            .into_iter()
            .filter(|s| s.ends_at > now - jiff::SignedDuration::from_hours(24))
            .rev()
            .map(|s| SilenceDoc {
                id: s.id,
                state: s.state(now),
                matchers: s.matchers.iter().map(ToString::to_string).collect(),
                starts_at: s.starts_at,
                ends_at: s.ends_at,
                comment: s.comment,
                created_by: s.created_by,
            })
            .collect();
        let recent = self
            .store
            .history(HistoryQuery {
                since: Some(now - jiff::SignedDuration::from_hours(24)),
                limit: 300,
                ..HistoryQuery::default()
            })
            .await
            .map_err(|e| e.to_string())?;
        let jobs = self.jobs(recent).await;
        Ok(StatusDoc {
            generated_at: now,
            state: view.state.clone(),
            actions: view.token.is_some(),
            targets,
            accounts,
            notifiers,
            pending,
            dead: dead_count,
            dead_letters,
            silences,
            jobs,
        })
    }

    /// Recent events grouped by parent job, newest job first, each with
    /// its sub-jobs tallied by what they are now.
    async fn jobs(&self, recent: Vec<HistoryEntry>) -> Vec<JobDoc> {
        let mut order: Vec<(String, String)> = Vec::new();
        let mut by_job: HashMap<(String, String), Vec<HistoryEntry>> = HashMap::new();
        for entry in recent.into_iter().rev() {
            let e = &entry.event;
            let key = (
                e.project_id.clone(),
                e.job_id.clone().unwrap_or_else(|| e.sub_job_id.clone()),
            );
            if !by_job.contains_key(&key) {
                order.push(key.clone());
            }
            by_job.entry(key).or_default().push(entry);
        }
        let mut out = Vec::new();
        for key in order.into_iter().take(20) {
            let entries = by_job.remove(&key).unwrap_or_default();
            let (project_id, job_id) = key;
            let tally = self
                .store
                .job_tally(&project_id, &job_id)
                .await
                .unwrap_or_default();
            let (mut succeeded, mut failed, mut active, mut other) = (0, 0, 0, 0);
            for (status, n) in &tally {
                let status = Status::from(status.as_str());
                if status.is_failure() {
                    failed += n;
                } else if status.is_active() {
                    active += n;
                } else if status.is_terminal() {
                    succeeded += n;
                } else {
                    other += n;
                }
            }
            if tally.is_empty() {
                // A sub-job without a parent (or one no longer tracked):
                // its latest event says where it is.
                if let Some(to) = entries.first().and_then(|e| e.event.to.clone()) {
                    if to.is_failure() {
                        failed = 1;
                    } else if to.is_active() {
                        active = 1;
                    } else if to.is_terminal() {
                        succeeded = 1;
                    } else {
                        other = 1;
                    }
                }
            }
            let total = (succeeded + failed + active + other).max(1);
            let pct = |n: u64| (n * 100 / total) as u32;
            out.push(JobDoc {
                target: entries
                    .first()
                    .map(|e| e.event.target_name().into_owned())
                    .unwrap_or_default(),
                project_id,
                job_id,
                last_event_at: entries.first().map(|e| e.event.observed_at),
                succeeded,
                failed,
                active,
                other,
                bar: [pct(succeeded), pct(failed), pct(active), pct(other)],
                events: entries.iter().take(10).map(EventDoc::from).collect(),
            });
        }
        out
    }

    fn csrf(&self, token: &Secret) -> String {
        derive(token, "csrf")
    }
}

/// A template that failed to render: a 500 (the log has minijinja's words).
#[derive(Debug)]
struct RenderFailed;

impl IntoResponse for RenderFailed {
    fn into_response(self) -> Response {
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            "the page failed to render\n",
        )
            .into_response()
    }
}

/// A stored time as the page shows it, in `tz`; `short`: without the
/// date when it is today there.
fn shown_time(value: Option<String>, tz: &str, short: bool) -> String {
    let Some(text) = value else {
        return "–".to_owned();
    };
    let (Ok(at), Ok(zone)) = (text.parse::<Timestamp>(), jiff::tz::TimeZone::get(tz)) else {
        return text;
    };
    let zoned = at.to_zoned_datetime(zone.clone());
    let today = Timestamp::now().to_zoned_datetime(zone).date() == zoned.date();
    let format = if short && today {
        "%H:%M:%S"
    } else {
        "%Y-%m-%d %H:%M:%S"
    };
    zoned.strftime(format).to_string()
}

/// A value derived from the token for one purpose (the session cookie, the
/// CSRF value): shows nothing of the token, and cannot be made without it.
fn derive(token: &Secret, purpose: &str) -> String {
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(token.expose().as_bytes())
        .expect("HMAC takes a key of any length");
    mac.update(purpose.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// Compares two texts without an early exit, so the time taken does not
/// tell how much of a guess was right.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

const SESSION_COOKIE: &str = "jobwatch_session";

#[derive(Debug, Serialize)]
struct StatusDoc {
    generated_at: Timestamp,
    state: String,
    /// Whether actions are open (a token is configured).
    actions: bool,
    targets: Vec<TargetDoc>,
    accounts: Vec<AccountDoc>,
    notifiers: Vec<NotifierDoc>,
    pending: u64,
    dead: u64,
    dead_letters: Vec<DeadDoc>,
    silences: Vec<SilenceDoc>,
    jobs: Vec<JobDoc>,
}

#[derive(Debug, Serialize)]
struct TargetDoc {
    name: String,
    account: String,
    project_id: String,
    job_type: String,
    strategy: &'static str,
    /// This process polls it (in a cluster: holds its lease).
    polled_here: bool,
    last_poll: Option<Timestamp>,
    next_poll: Option<Timestamp>,
    requests_last_cycle: Option<u32>,
    tracked: Option<usize>,
    active: Option<usize>,
    last_error: Option<String>,
}

#[derive(Debug, Serialize)]
struct AccountDoc {
    name: String,
    budget_per_minute: u32,
    used_last_minute: u32,
}

#[derive(Debug, Serialize)]
struct NotifierDoc {
    notifier: String,
    pending: u64,
    next_attempt_at: Option<Timestamp>,
    /// Held by its receiver's throttle until then.
    paused_until: Option<Timestamp>,
}

#[derive(Debug, Serialize)]
struct DeadDoc {
    id: i64,
    notifier: String,
    target: String,
    sub_job_id: String,
    kind: String,
    created_at: Timestamp,
    finished_at: Option<Timestamp>,
    attempts: u32,
    /// The receiver's answer.
    answer: Option<String>,
}

#[derive(Debug, Serialize)]
struct SilenceDoc {
    id: i64,
    state: &'static str,
    matchers: Vec<String>,
    starts_at: Timestamp,
    ends_at: Timestamp,
    comment: String,
    created_by: String,
}

#[derive(Debug, Serialize)]
struct JobDoc {
    target: String,
    project_id: String,
    job_id: String,
    last_event_at: Option<Timestamp>,
    succeeded: u64,
    failed: u64,
    active: u64,
    other: u64,
    /// Percentages of the bar: succeeded, failed, active, other.
    bar: [u32; 4],
    events: Vec<EventDoc>,
}

#[derive(Debug, Serialize)]
struct EventDoc {
    observed_at: Timestamp,
    sub_job_id: String,
    kind: String,
    from: Option<String>,
    to: Option<String>,
    error_code: Option<String>,
    /// `failed`, `succeeded`, `active` or `other`: how the page colours it.
    class: &'static str,
    outcomes: Vec<(String, String)>,
    /// Each notifier with one word: delivered, pending, retrying, dead,
    /// held (by a silence or window).
    short: Vec<(String, &'static str)>,
}

impl From<&HistoryEntry> for EventDoc {
    fn from(entry: &HistoryEntry) -> EventDoc {
        let e = &entry.event;
        let class = match &e.to {
            Some(s) if s.is_failure() => "failed",
            Some(s) if s.is_active() => "active",
            Some(s) if s.is_terminal() => "succeeded",
            _ => "other",
        };
        EventDoc {
            observed_at: e.observed_at,
            sub_job_id: e.sub_job_id.clone(),
            kind: e.kind.to_string(),
            from: e.from.as_ref().map(|s| s.as_str().to_owned()),
            to: e.to.as_ref().map(|s| s.as_str().to_owned()),
            error_code: e.error_code.clone(),
            class,
            outcomes: entry.outcomes(),
            short: entry
                .routes
                .iter()
                .map(|r| {
                    let word = if r.held.is_some() {
                        "held"
                    } else {
                        match entry.deliveries.iter().find(|d| d.notifier == r.notifier) {
                            None => "pending",
                            Some(d) => {
                                match (d.state, d.attempts.last().map(|a| a.verdict.as_str())) {
                                    (Some("delivered"), _) | (None, Some("delivered")) => {
                                        "delivered"
                                    }
                                    (Some("dead"), _) | (None, Some("dead")) => "dead",
                                    (Some("pending"), Some("retry")) => "retrying",
                                    _ => "pending",
                                }
                            }
                        }
                    };
                    (r.notifier.clone(), word)
                })
                .collect(),
        }
    }
}

/// The console's routes, for `server::serve` to merge under its guard.
pub fn routes(console: Arc<Console>) -> axum::Router {
    use axum::routing::{get, post};
    axum::Router::new()
        .route("/", get(page))
        .route("/sub-jobs/{id}", get(sub_job_page))
        .route("/jobs/{id}", get(job_page))
        .route("/login", get(login_page).post(login))
        .route("/api/v1/status", get(status_api))
        .route("/api/v1/history", get(history_api))
        .route("/api/v1/silences", get(silences_api).post(add_silence))
        .route("/api/v1/silences/{id}/expire", post(expire_silence))
        .route("/api/v1/dead/{id}/requeue", post(requeue_dead))
        .with_state(console)
}

/// What a request proved: nothing, the session cookie, or the bearer token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Proof {
    None,
    Cookie,
    Bearer,
}

fn proof(console: &Console, headers: &HeaderMap) -> Proof {
    let Some(token) = console.view().token.clone() else {
        return Proof::None;
    };
    if let Some(bearer) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        && same(bearer.trim(), token.expose())
    {
        return Proof::Bearer;
    }
    let session = derive(&token, "session");
    let cookie = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .any(|(name, value)| name == SESSION_COOKIE && same(value, &session));
    if cookie { Proof::Cookie } else { Proof::None }
}

/// Whether the `Host` names this machine's loopback (DNS rebinding gives
/// another page a name of its own, never one of these).
fn loopback_host(headers: &HeaderMap) -> bool {
    let Some(host) = headers.get(header::HOST).and_then(|v| v.to_str().ok()) else {
        // HTTP/1.0 without a Host: only a local tool sends that.
        return true;
    };
    let name = match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    };
    let name = name.trim_start_matches('[').trim_end_matches(']');
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The guard in front of everything but `/healthz` and `/readyz`.
pub async fn guard(State(console): State<Arc<Console>>, request: Request, next: Next) -> Response {
    let path = request.uri().path();
    if path == "/healthz" || path == "/readyz" || path == "/login" {
        return next.run(request).await;
    }
    let headers = request.headers();
    let has_token = console.view().token.is_some();
    if !has_token {
        if !loopback_host(headers) {
            return (
                StatusCode::FORBIDDEN,
                "this console answers only to a loopback Host (localhost, 127.0.0.1, [::1]); set server.token to reach it by another name\n",
            )
                .into_response();
        }
        return next.run(request).await;
    }
    if proof(&console, headers) != Proof::None {
        return next.run(request).await;
    }
    let wants_html = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/html"));
    if wants_html && request.method() == axum::http::Method::GET && !path.starts_with("/api/") {
        return Redirect::to("/login").into_response();
    }
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer realm=\"jobwatch\"")],
        "401: this server needs its token (server.token) as `Authorization: Bearer …`\n",
    )
        .into_response()
}

/// Why an action may not run, if it may not. It may when a token is
/// configured and the request carries it as a bearer header, or the
/// session cookie with the page's CSRF value.
fn denied(console: &Console, headers: &HeaderMap) -> Option<Response> {
    let Some(token) = console.view().token.clone() else {
        return Some((
            StatusCode::FORBIDDEN,
            Json(serde_json::json!({
                "error": "actions need server.token; without one, use the command line (jobwatch silence, jobwatch state retry)"
            })),
        )
            .into_response());
    };
    match proof(console, headers) {
        Proof::Bearer => None,
        Proof::Cookie
            if headers
                .get("x-jobwatch-csrf")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| same(v, &console.csrf(&token))) =>
        {
            None
        }
        Proof::Cookie => Some((
            StatusCode::FORBIDDEN,
            Json(serde_json::json!({"error": "an action from the page needs its X-Jobwatch-Csrf value"})),
        )
            .into_response()),
        Proof::None => Some((
            StatusCode::UNAUTHORIZED,
            Json(serde_json::json!({"error": "an action needs server.token as `Authorization: Bearer …`"})),
        )
            .into_response()),
    }
}

#[derive(Debug, Deserialize)]
struct Fragment {
    #[serde(default)]
    fragment: Option<String>,
}

fn page_context(
    console: &Console,
    headers: &HeaderMap,
    title: &str,
    body: String,
) -> minijinja::Value {
    let view = console.view();
    let csrf = match (&view.token, proof(console, headers)) {
        (Some(token), Proof::Cookie | Proof::Bearer) => console.csrf(token),
        _ => String::new(),
    };
    minijinja::context! {
        title => title,
        body => minijinja::Value::from_safe_string(body),
        csrf => csrf,
        refresh_ms => REFRESH.as_millis() as u64,
    }
}

async fn page(
    State(console): State<Arc<Console>>,
    headers: HeaderMap,
    Query(q): Query<Fragment>,
) -> Response {
    let doc = match console.status().await {
        Ok(doc) => doc,
        Err(e) => return store_error(&e),
    };
    let context = minijinja::context! {
        s => minijinja::Value::from(minijinja::value::Serde(&doc)),
        tz => console.timezone_name(),
    };
    match console.render_text("status.html", context) {
        Ok(body) => console.page(&headers, q.fragment.is_some(), "jobwatch", body),
        Err(failed) => failed.into_response(),
    }
}

async fn history_page(
    console: Arc<Console>,
    headers: HeaderMap,
    fragment: bool,
    title: String,
    query: HistoryQuery,
) -> Response {
    let entries = match console.store.history(query).await {
        Ok(entries) => entries,
        Err(e) => return store_error(&e.to_string()),
    };
    let events: Vec<serde_json::Value> = entries
        .iter()
        .map(|entry| {
            serde_json::json!({
                "event": EventDoc::from(entry),
                "target": entry.event.target_name(),
                "job_id": entry.event.job_id,
                "error_message": entry.event.error_message,
                "deliveries": entry.deliveries,
                "routes": entry.routes,
            })
        })
        .collect();
    let context = minijinja::context! {
        title => &title,
        events => minijinja::Value::from(minijinja::value::Serde(&events)),
        tz => console.timezone_name(),
    };
    match console.render_text("history.html", context) {
        Ok(body) => console.page(&headers, fragment, &title, body),
        Err(failed) => failed.into_response(),
    }
}

async fn sub_job_page(
    State(console): State<Arc<Console>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<Fragment>,
) -> Response {
    let query = HistoryQuery {
        sub_job_id: Some(id.clone()),
        limit: 500,
        ..HistoryQuery::default()
    };
    history_page(
        console,
        headers,
        q.fragment.is_some(),
        format!("sub-job {id}"),
        query,
    )
    .await
}

async fn job_page(
    State(console): State<Arc<Console>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<Fragment>,
) -> Response {
    let query = HistoryQuery {
        job_id: Some(id.clone()),
        limit: 500,
        ..HistoryQuery::default()
    };
    history_page(
        console,
        headers,
        q.fragment.is_some(),
        format!("job {id}"),
        query,
    )
    .await
}

async fn login_page(State(console): State<Arc<Console>>) -> Response {
    console.render(
        "login.html",
        minijinja::context! { token_needed => console.view().token.is_some(), wrong => false },
    )
}

#[derive(Debug, Deserialize)]
struct LoginForm {
    token: String,
}

async fn login(
    State(console): State<Arc<Console>>,
    axum::Form(form): axum::Form<LoginForm>,
) -> Response {
    let Some(token) = console.view().token.clone() else {
        return Redirect::to("/").into_response();
    };
    if !same(form.token.trim(), token.expose()) {
        let mut page = console.render(
            "login.html",
            minijinja::context! { token_needed => true, wrong => true },
        );
        *page.status_mut() = StatusCode::UNAUTHORIZED;
        return page;
    }
    let cookie = format!(
        "{SESSION_COOKIE}={}; Path=/; HttpOnly; SameSite=Strict",
        derive(&token, "session")
    );
    ([(header::SET_COOKIE, cookie)], Redirect::to("/")).into_response()
}

fn store_error(error: &str) -> Response {
    tracing::warn!(error = %error, "the console cannot read the state");
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(serde_json::json!({"error": format!("cannot read the state: {error}")})),
    )
        .into_response()
}

async fn status_api(State(console): State<Arc<Console>>) -> Response {
    match console.status().await {
        Ok(doc) => Json(doc).into_response(),
        Err(e) => store_error(&e),
    }
}

#[derive(Debug, Deserialize)]
struct HistoryParams {
    sub_job: Option<String>,
    job: Option<String>,
    /// A duration back from now (`1h`).
    since: Option<String>,
    limit: Option<usize>,
}

async fn history_api(
    State(console): State<Arc<Console>>,
    Query(p): Query<HistoryParams>,
) -> Response {
    let since = match p.since.as_deref().map(parse_ago) {
        Some(Ok(t)) => Some(t),
        Some(Err(e)) => return bad_request(e),
        None => None,
    };
    let query = HistoryQuery {
        sub_job_id: p.sub_job,
        job_id: p.job,
        since,
        limit: p.limit.unwrap_or(200).min(5000),
    };
    match console.store.history(query).await {
        Ok(entries) => Json(entries).into_response(),
        Err(e) => store_error(&e.to_string()),
    }
}

fn parse_ago(text: &str) -> Result<Timestamp, String> {
    let span: jiff::Span = text
        .parse()
        .map_err(|e| format!("since: {text:?} is not a duration such as 1h: {e}"))?;
    let d = jiff::SignedDuration::try_from(span).map_err(|e| format!("since: {e}"))?;
    Timestamp::now()
        .checked_sub(d)
        .map_err(|e| format!("since: {e}"))
}

fn bad_request(error: String) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(serde_json::json!({ "error": error })),
    )
        .into_response()
}

async fn silences_api(State(console): State<Arc<Console>>) -> Response {
    match console.store.silences().await {
        Ok(s) => Json(s).into_response(),
        Err(e) => store_error(&e.to_string()),
    }
}

#[derive(Debug, Deserialize)]
struct SilenceForm {
    matchers: Vec<String>,
    /// How long (`2h`).
    #[serde(rename = "for")]
    duration: String,
    comment: String,
    created_by: Option<String>,
}

async fn add_silence(
    State(console): State<Arc<Console>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    if let Some(denied) = denied(&console, &headers) {
        return denied;
    }
    let form: SilenceForm = match serde_json::from_slice(&body) {
        Ok(f) => f,
        Err(e) => {
            return bad_request(format!(
                "the body is not a silence ({{\"matchers\": [\"job_type=CREATE_SERVER\"], \"for\": \"2h\", \"comment\": \"…\"}}): {e}"
            ));
        }
    };
    let duration = match crate::config::check::parse_duration(form.duration.trim()) {
        Ok(d) => d,
        Err(e) => return bad_request(format!("for: {:?} is not a duration: {e}", form.duration)),
    };
    let now = Timestamp::now();
    let author = form
        .created_by
        .filter(|a| !a.trim().is_empty())
        .unwrap_or_else(|| "console".to_owned());
    let new = match NewSilence::build(&form.matchers, duration, &form.comment, author, now) {
        Ok(new) => new,
        Err(e) => return bad_request(e),
    };
    match console.store.add_silence(new, now).await {
        Ok(s) => {
            tracing::info!(silence = s.id, matchers = ?s.matchers.iter().map(ToString::to_string).collect::<Vec<_>>(), by = %s.created_by, "silence added from the console");
            (StatusCode::CREATED, Json(s)).into_response()
        }
        Err(e) => store_error(&e.to_string()),
    }
}

async fn expire_silence(
    State(console): State<Arc<Console>>,
    headers: HeaderMap,
    Path(id): Path<i64>,
) -> Response {
    if let Some(denied) = denied(&console, &headers) {
        return denied;
    }
    match console.store.expire_silence(id, Timestamp::now()).await {
        Ok(Some(s)) => Json(s).into_response(),
        Ok(None) => (
            StatusCode::NOT_FOUND,
            Json(serde_json::json!({"error": format!("no silence {id}")})),
        )
            .into_response(),
        Err(e) => store_error(&e.to_string()),
    }
}

async fn requeue_dead(
    State(console): State<Arc<Console>>,
    headers: HeaderMap,
    Path(id): Path<i64>,
) -> Response {
    if let Some(denied) = denied(&console, &headers) {
        return denied;
    }
    match console.store.requeue_dead(vec![id], Timestamp::now()).await {
        Ok(0) => (
            StatusCode::NOT_FOUND,
            Json(serde_json::json!({"error": format!("no dead letter {id}")})),
        )
            .into_response(),
        Ok(n) => {
            console.dispatcher.wake();
            Json(serde_json::json!({ "requeued": n })).into_response()
        }
        Err(e) => store_error(&e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_names_pass_without_a_token() {
        let host = |h: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::HOST, h.parse().expect("a header value"));
            loopback_host(&headers)
        };
        assert!(host("localhost:9464"));
        assert!(host("127.0.0.1:9464"));
        assert!(host("[::1]:9464"));
        assert!(host("LOCALHOST"));
        assert!(!host("evil.example:9464"));
        assert!(!host("192.168.1.5:9464"));
        assert!(!host("localhost.evil.example"));
    }

    #[test]
    fn derived_values_differ_by_purpose_and_compare_whole() {
        let token = Secret::new("s3cret-token");
        assert_ne!(derive(&token, "csrf"), derive(&token, "session"));
        assert!(!derive(&token, "csrf").contains("s3cret"));
        assert!(same("abc", "abc"));
        assert!(!same("abc", "abd"));
        assert!(!same("abc", "ab"));
    }
}
