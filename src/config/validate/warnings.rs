//! Warnings that look at the validated config as a whole: nothing watched
//! or routed, unused notifiers, the API budget, readable inline secrets.

use crate::watch::strategy::{Strategy, budget_need};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use crate::config::check::Checker;
use crate::config::dur::human;
use crate::config::{Account, AuthConfig, Config};
use crate::watch::DEFAULT_ACCOUNT;

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

/// API calls are the scarce resource: warns when the targets, at one page
/// of history each (`check` counts pages from the state file), need more
/// than the budget.
fn budget(ck: &mut Checker<'_>, config: &Config) {
    let watched = config.watched();
    for account in config.accounts() {
        let pairs = watched
            .iter()
            .filter(|t| *t.account == *account.name)
            .count();
        if pairs == 0 {
            continue;
        }
        for warning in budget_warnings(
            config,
            account,
            &vec![1; pairs],
            "at one page of history each",
        ) {
            ck.warn(warning);
        }
    }
}

/// What does not fit in `account`'s budget, when `pages` (per target of
/// that account) are the pages of each target's full scan; `basis` says
/// where they came from.
pub fn budget_warnings(
    config: &Config,
    account: Account<'_>,
    pages: &[u64],
    basis: &str,
) -> Vec<String> {
    let poll = &config.poll;
    let budget_key = budget_key(account.name);
    let whose = if account.name == DEFAULT_ACCOUNT {
        String::new()
    } else {
        format!(" of account {:?}", account.name)
    };
    let need = budget_need(
        poll.strategy,
        pages,
        poll.interval,
        poll.active_interval,
        poll.full_scan_every,
    );
    let budget = f64::from(account.api.max_requests_per_minute);
    let targets = pages.len();
    let strategy = match poll.strategy {
        Strategy::Full => "full",
        Strategy::Incremental => "incremental",
    };
    let reconcile = if need.reconcile > 0.0 {
        format!(
            ", {:.0} of them reconciliation scans every {}",
            need.reconcile,
            human(poll.full_scan_every)
        )
    } else {
        String::new()
    };
    // The interval at which the cycles fit beside reconciliation, rounded
    // up.
    let per_cycle = match poll.strategy {
        Strategy::Full => need.baseline_pages as f64,
        Strategy::Incremental => targets as f64,
    };
    let room = budget - need.reconcile;
    let fits = if room > 0.0 {
        format!(" to at least {}s", (per_cycle * 60.0 / room).ceil() as u64)
    } else {
        String::new()
    };
    let mut out = Vec::new();
    if need.idle > budget {
        out.push(format!(
            "{targets} targets (project × job type){whose} under strategy {strategy:?} need {:.0} API requests/minute even \
             when idle ({basis}{reconcile}), over {budget_key} = {}: every target will poll slower \
             than configured; raise poll.interval{fits}{}, watch fewer job types, or raise the budget if your \
             account allows",
            need.idle,
            account.api.max_requests_per_minute,
            match poll.strategy {
                Strategy::Full => ", use strategy \"incremental\"",
                Strategy::Incremental => " or poll.full_scan_every",
            },
        ));
    } else if need.active > budget {
        out.push(format!(
            "{targets} targets (project × job type){whose} under strategy {strategy:?} need up to {:.0} API \
             requests/minute while all are active ({basis}{reconcile}), over {budget_key} = {}: \
             when many are active they will poll slower than configured; raise poll.active_interval{fits} to fit",
            need.active,
            account.api.max_requests_per_minute,
        ));
    }
    out
}

/// Where an account's budget is set: `api.max_requests_per_minute` for
/// the default account, `accounts.NAME.max_requests_per_minute` for others.
pub fn budget_key(account: &str) -> String {
    if account == DEFAULT_ACCOUNT {
        "api.max_requests_per_minute".to_owned()
    } else {
        format!("accounts.{account}.max_requests_per_minute")
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
