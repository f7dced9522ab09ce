//! The small sections: `[state]`, `[cluster]`, `[poll]`, `[delivery]`,
//! `[log]`, `[heartbeat]` and `[server]`.

use std::net::SocketAddr;
use std::time::Duration;

use crate::config::check::Checker;
use crate::config::dur::human;
use crate::config::key::KeyPath;
use crate::config::raw::{
    RawCluster, RawDelivery, RawHeartbeat, RawLog, RawPoll, RawServer, RawState,
};
use crate::config::{
    ClusterConfig, DeliveryConfig, HeartbeatConfig, LogConfig, LogFormat, PollConfig, ServerConfig,
    StateConfig,
};
use crate::secret::SecretUrl;
use crate::watch::strategy::Strategy;

const SECOND: Duration = Duration::from_secs(1);

/// Where the SQLite file is when `state.path` is not set.
const DEFAULT_STATE_PATH: &str = "/var/lib/jobwatch/state.db";

pub(super) fn state(ck: &mut Checker<'_>, key: &KeyPath, raw: RawState) -> StateConfig {
    let has_path = raw.path.is_some();
    let path = raw
        .path
        .map(|p| p.relative())
        .unwrap_or_else(|| DEFAULT_STATE_PATH.into());
    if path.as_os_str().is_empty() {
        ck.err(
            &key.f("path"),
            format!("empty; give the state file's path (default {DEFAULT_STATE_PATH})"),
        );
    }
    let secret = ck.secret(key, "url", raw.url, raw.url_file, None);
    let url = secret.and_then(
        |text| match text.expose().parse::<crate::pg::url::PgUrl>() {
            Ok(url) => Some(url),
            Err(e) => {
                ck.err(&key.f("url"), format!("{e} (the value is not shown)"));
                None
            }
        },
    );
    if has_path && (url.is_some() || ck.has_secret_problem(key, "url")) {
        ck.err(
            &key.f("url"),
            "both `path` and `url` are set; keep one (`url` puts the state in PostgreSQL)",
        );
    }
    let keep_history = ck.duration(
        &key.f("keep_history"),
        raw.keep_history.as_ref(),
        StateConfig::KEEP_HISTORY,
        Duration::from_secs(60),
    );
    StateConfig {
        path,
        url,
        keep_history,
    }
}

/// `[cluster]`; `shared`: the state is a database replicas share.
pub(super) fn cluster(
    ck: &mut Checker<'_>,
    key: &KeyPath,
    raw: RawCluster,
    shared: bool,
) -> ClusterConfig {
    if raw.lease.is_some() && !shared {
        ck.warn(format!(
            "{}: has no effect with a state file (one daemon polls alone); replicas share a \
             PostgreSQL state (state.url)",
            key.f("lease")
        ));
    }
    ClusterConfig {
        lease: ck.duration(
            &key.f("lease"),
            raw.lease.as_ref(),
            Duration::from_secs(10),
            Duration::from_secs(3),
        ),
    }
}

pub(super) fn poll(ck: &mut Checker<'_>, key: &KeyPath, raw: RawPoll) -> PollConfig {
    let interval = ck.duration(
        &key.f("interval"),
        raw.interval.as_ref(),
        Duration::from_secs(30),
        SECOND,
    );
    let active_interval = ck.duration(
        &key.f("active_interval"),
        raw.active_interval.as_ref(),
        Duration::from_secs(5),
        SECOND,
    );
    // Only compare values that parsed: a default standing in for a bad
    // value would produce a second, confusing problem.
    let both_parsed =
        !ck.has_problem(&key.f("interval")) && !ck.has_problem(&key.f("active_interval"));
    if both_parsed && active_interval > interval {
        ck.err(
            &key.f("active_interval"),
            format!(
                "{} is longer than poll.interval ({}): active sub-jobs are polled at least as often as idle ones",
                human(active_interval),
                human(interval)
            ),
        );
    }
    let stuck_after = ck.duration(
        &key.f("stuck_after"),
        raw.stuck_after.as_ref(),
        Duration::from_secs(3600),
        SECOND,
    );
    let max_backoff = ck.duration(
        &key.f("max_backoff"),
        raw.max_backoff.as_ref(),
        Duration::from_secs(300),
        SECOND,
    );
    let strategy = ck.choice(
        &key.f("strategy"),
        raw.strategy.as_deref(),
        &[
            ("full", Strategy::Full),
            ("incremental", Strategy::Incremental),
        ],
        Strategy::Incremental,
    );
    let full_scan_every = ck.duration(
        &key.f("full_scan_every"),
        raw.full_scan_every.as_ref(),
        Duration::from_secs(600),
        SECOND,
    );
    PollConfig {
        interval,
        active_interval,
        notify_existing: raw.notify_existing.unwrap_or(false),
        stuck_after,
        max_backoff,
        strategy,
        full_scan_every,
    }
}

pub(super) fn delivery(ck: &mut Checker<'_>, key: &KeyPath, raw: RawDelivery) -> DeliveryConfig {
    let max_age = ck.duration(
        &key.f("max_age"),
        raw.max_age.as_ref(),
        Duration::from_secs(24 * 3600),
        SECOND,
    );
    let keep_delivered = ck.duration(
        &key.f("keep_delivered"),
        raw.keep_delivered.as_ref(),
        Duration::from_secs(7 * 24 * 3600),
        Duration::ZERO,
    );
    let shutdown_grace = ck.duration(
        &key.f("shutdown_grace"),
        raw.shutdown_grace.as_ref(),
        Duration::from_secs(10),
        Duration::ZERO,
    );
    let timezone = match raw.timezone.as_deref().map(str::trim) {
        None => jiff::tz::TimeZone::UTC,
        Some(name) => match jiff::tz::TimeZone::get(name) {
            Ok(tz) => tz,
            Err(e) => {
                ck.err(
                    &key.f("timezone"),
                    format!("unknown time zone {name:?} (an IANA name such as \"Asia/Shanghai\" is expected): {e}"),
                );
                jiff::tz::TimeZone::UTC
            }
        },
    };
    DeliveryConfig {
        max_age,
        keep_delivered,
        shutdown_grace,
        timezone,
    }
}

pub(super) fn log(ck: &mut Checker<'_>, key: &KeyPath, raw: RawLog) -> LogConfig {
    let level = raw.level.unwrap_or_else(|| "info".to_owned());
    if let Err(message) = check_filter(&level) {
        ck.err(&key.f("level"), message);
    }
    let format = ck.choice(
        &key.f("format"),
        raw.format.as_deref(),
        &[("text", LogFormat::Text), ("json", LogFormat::Json)],
        LogFormat::Text,
    );
    LogConfig { level, format }
}

pub(super) fn heartbeat(
    ck: &mut Checker<'_>,
    key: &KeyPath,
    raw: RawHeartbeat,
) -> Option<HeartbeatConfig> {
    let every = ck.duration(
        &key.f("every"),
        raw.every.as_ref(),
        Duration::from_secs(60),
        SECOND,
    );
    let url = match raw.url {
        None => {
            ck.err(
                &key.f("url"),
                "missing: the URL to GET after healthy cycles",
            );
            None
        }
        Some(text) => ck.http_url(&key.f("url"), &text, false),
    };
    Some(HeartbeatConfig {
        url: SecretUrl::new(url?),
        every,
    })
}

pub(super) fn server(ck: &mut Checker<'_>, key: &KeyPath, raw: RawServer) -> Option<ServerConfig> {
    let Some(text) = raw.listen else {
        ck.err(
            &key.f("listen"),
            "missing: an address such as \"127.0.0.1:9464\" (leave out [server] to turn it off)",
        );
        return None;
    };
    let token = ck.secret(key, "token", raw.token, raw.token_file, None);
    let token_problem = ck.has_secret_problem(key, "token");
    match text.trim().parse::<SocketAddr>() {
        Ok(listen) if !listen.ip().is_loopback() && token.is_none() && !token_problem => {
            ck.err(
                &key.f("token"),
                format!(
                    "missing: {listen} is reachable beyond this machine, so the console and its API need a bearer token (token, token_file or JOBWATCH_SERVER__TOKEN); or listen on 127.0.0.1"
                ),
            );
            None
        }
        Ok(listen) => Some(ServerConfig { listen, token }),
        Err(e) => {
            ck.err(
                &key.f("listen"),
                format!("{text:?} is not an IP address and port such as \"127.0.0.1:9464\": {e}"),
            );
            None
        }
    }
}

/// Checks a log filter. `EnvFilter` accepts a bare word as a target name
/// (so `level = "verbose"` would silently mean "trace for target
/// verbose"); here a bare word must be a level, and targets are written
/// `target=level`.
fn check_filter(text: &str) -> Result<(), String> {
    const LEVELS: &[&str] = &["off", "error", "warn", "info", "debug", "trace"];
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        if !part.contains('=')
            && !part.contains('[')
            && !LEVELS.contains(&part.to_ascii_lowercase().as_str())
        {
            return Err(format!(
                "{part:?} is not a level; use one of {} or a directive such as \"jobwatch=debug\"",
                LEVELS.join(", ")
            ));
        }
    }
    tracing_subscriber::EnvFilter::try_new(text)
        .map(|_| ())
        .map_err(|e| format!("invalid log filter {text:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_filters() {
        assert!(check_filter("info").is_ok());
        assert!(check_filter("warn,jobwatch=debug").is_ok());
        assert!(check_filter("verbose").is_err());
        assert!(check_filter("jobwatch=loud").is_err());
    }
}
