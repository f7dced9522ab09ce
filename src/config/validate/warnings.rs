//! Warnings that look at the validated config as a whole: nothing watched
//! or routed, unused notifiers, the API budget, readable inline secrets.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::config::check::Checker;
use crate::config::dur::human;
use crate::config::{AuthConfig, Config};

pub(super) fn overall(ck: &mut Checker<'_>, config: &Config) {
    if matches!(config.auth, AuthConfig::None) {
        ck.warn(
            "auth.method = \"none\": requests are sent unauthenticated (fine for the simulator or an \
             authenticating proxy; the real API will answer 401)",
        );
    }
    if config.targets.is_empty() {
        ck.warn("no [[targets]]: nothing will be watched");
    }
    if config.routes.is_empty() {
        ck.warn("no [[routes]]: events are detected and stored but sent nowhere");
    }
    let used: BTreeSet<&str> = config
        .routes
        .iter()
        .flat_map(|r| r.notify.iter().map(String::as_str))
        .collect();
    for name in config.notifiers.keys() {
        if !used.contains(name.as_str()) {
            ck.warn(format!(
                "notifiers.{name}: no route uses it (notify-test can still reach it)"
            ));
        }
    }
    budget(ck, config);
    permissions(ck);
}

/// SPEC §1: API calls are the scarce resource. Each target scans at least
/// one page per cycle, so in the worst case (every target active) the
/// targets need `pairs × 60 / active_interval` requests a minute.
fn budget(ck: &mut Checker<'_>, config: &Config) {
    let pairs = config.watch_pairs().count();
    if pairs == 0 {
        return;
    }
    let budget = f64::from(config.api.max_requests_per_minute);
    let per_minute = |every: Duration| pairs as f64 * 60.0 / every.as_secs_f64();
    let active = per_minute(config.poll.active_interval);
    let idle = per_minute(config.poll.interval);
    // The interval at which the pairs fit the budget, rounded up.
    let fits = (pairs as f64 * 60.0 / budget).ceil() as u64;
    if idle > budget {
        ck.warn(format!(
            "{pairs} targets (project × job type) polled every {} even when idle need {idle:.0} API requests/minute \
             (at one page per scan), over api.max_requests_per_minute = {}: every target will poll slower than \
             configured; raise poll.interval to at least {fits}s, watch fewer job types, or raise the budget if your \
             account allows",
            human(config.poll.interval),
            config.api.max_requests_per_minute,
        ));
    } else if active > budget {
        ck.warn(format!(
            "{pairs} targets (project × job type) polled every {} while active need up to {active:.0} API \
             requests/minute (at one page per scan), over api.max_requests_per_minute = {}: when many are \
             active they will poll slower than configured; raise poll.active_interval to at least {fits}s to fit",
            human(config.poll.active_interval),
            config.api.max_requests_per_minute,
        ));
    }
}

/// Inline secrets in a file others can read deserve a warning: the file is
/// usually in /etc and world-readable by default.
fn permissions(ck: &mut Checker<'_>) {
    let mut by_file: BTreeMap<PathBuf, Vec<String>> = BTreeMap::new();
    for key in ck.inline_secrets() {
        if let Some(path) = ck.file_of(key) {
            by_file.entry(path).or_default().push(key.to_string());
        }
    }
    for (path, keys) in by_file {
        if let Some(mode) = group_or_other_readable(&path) {
            ck.warn(format!(
                "{} holds inline secrets ({}) and is readable by other users (mode {mode:o}): \
                 chmod 600 it, or move the secrets to *_file settings or the environment",
                path.display(),
                keys.join(", ")
            ));
        }
    }
}

#[cfg(unix)]
fn group_or_other_readable(path: &Path) -> Option<u32> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path).ok()?.permissions().mode() & 0o777;
    (mode & 0o044 != 0).then_some(mode)
}

#[cfg(not(unix))]
fn group_or_other_readable(_: &Path) -> Option<u32> {
    None
}
