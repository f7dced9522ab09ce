//! `jobwatch check`: validate the configuration, print it redacted, and
//! say what its targets ask of the API budget.

use anyhow::Context;

use super::Cli;
use crate::config::{Config, budget_warnings};
use crate::storage::{OpenMode, Storage};
use crate::watch::strategy::{budget_need, pages_for};

/// Loads `-c` (which must exist: checking a file that is not there is a
/// mistake worth exit code 2), prints warnings to stderr and the effective
/// config as TOML to stdout. Secrets print as `***` because `Secret` and
/// `SecretUrl` serialise redacted; nothing here has to remember to redact.
pub async fn run(cli: &Cli) -> anyhow::Result<()> {
    let loaded = Config::load(cli.config_path())?.require_targets()?;
    for warning in &loaded.warnings {
        eprintln!("warning: {warning}");
    }
    budget(&loaded.config).await;
    let text = toml::to_string_pretty(&loaded.config)
        .context("cannot print the effective configuration")?;
    print!("{text}");
    Ok(())
}

/// The API budget each account's targets need, with each target's pages
/// taken from the state file when it is there (read only, never written).
async fn budget(config: &Config) {
    let targets = config.watched();
    if targets.is_empty() {
        return;
    }
    let mut basis = "at one page of history each: no state file yet";
    let mut pages = vec![1; targets.len()];
    if config.state.url.is_some() || config.state.path.exists() {
        match Storage::open(&config.state, OpenMode::ReadOnly).await {
            Ok(store) => {
                if let Ok(known) = store.targets().await {
                    for (target, pages) in targets.iter().zip(pages.iter_mut()) {
                        if let Some(summary) = known.iter().find(|k| &k.target == target) {
                            *pages = pages_for(summary.tracked as u64);
                        }
                    }
                    basis = if config.state.url.is_some() {
                        "pages counted from the state database"
                    } else {
                        "pages counted from the state file"
                    };
                }
            }
            Err(e) => eprintln!("note: the API budget below assumes one page per target: {e}"),
        }
    }
    let several = config.accounts().count() > 1;
    for account in config.accounts() {
        let pages: Vec<u64> = targets
            .iter()
            .zip(&pages)
            .filter(|(t, _)| *t.account == *account.name)
            .map(|(_, p)| *p)
            .collect();
        if pages.is_empty() {
            if several {
                eprintln!("warning: account {:?} has no targets", account.name);
            }
            continue;
        }
        let poll = &config.poll;
        let need = budget_need(
            poll.strategy,
            &pages,
            poll.interval,
            poll.active_interval,
            poll.full_scan_every,
        );
        let budget = account.api.max_requests_per_minute;
        let whose = if several {
            format!(" (account {})", account.name)
        } else {
            String::new()
        };
        eprintln!(
            "API budget{whose}: {} target(s) need about {:.0} requests/minute idle and {:.0} with all active \
             ({basis}{}); first scans take {} pages, {:.1} min at {budget}/minute",
            pages.len(),
            need.idle,
            need.active,
            if need.reconcile > 0.0 {
                format!(", {:.0}/minute of it reconciliation", need.reconcile)
            } else {
                String::new()
            },
            need.baseline_pages,
            need.baseline_pages as f64 / f64::from(budget.max(1)),
        );
        // The config's own check assumed one page each; say more only when
        // the real pages change the verdict.
        if basis.starts_with("pages counted")
            && budget_warnings(config, account, &vec![1; pages.len()], "").is_empty()
        {
            for warning in budget_warnings(config, account, &pages, basis) {
                eprintln!("warning: {warning}");
            }
        }
    }
}
