//! Builds the running parts from a validated `Config`: the cloud client,
//! the notifiers with their limits, the router. Shared by `run`, `once`,
//! `jobs`, `notify-test` and `demo`.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::cloud::auth::{Credentials, PasswordCredentials};
use crate::cloud::{Client, ClientSettings};
use crate::config::{Account, AuthConfig, Config};
use crate::metrics::Metrics;
use crate::notify::dispatch::{DispatchSettings, Notifiers, Slot};
use crate::retry::Backoff;
use crate::route::Router;
use crate::storage::Storage;
use crate::watch::diff::DiffSettings;
use crate::watch::poller::{CycleContext, Pace};

/// An account's credentials, as the client uses them.
fn account_credentials(account: Account<'_>) -> Credentials {
    match account.auth {
        AuthConfig::None => Credentials::None,
        AuthConfig::Aksk(aksk) => Credentials::AkSk {
            ak: aksk.ak.clone(),
            sk: aksk.sk.clone(),
            security_token: aksk.security_token.clone(),
        },
        AuthConfig::Token(token) => Credentials::Token(token.source.clone()),
        AuthConfig::Password(password) => Credentials::Password(PasswordCredentials {
            user: password.user.clone(),
            password: password.password.clone(),
            domain: password.domain.clone(),
            iam_endpoint: account.api.iam_endpoint.clone(),
            scope_project: password.project_id.clone(),
        }),
    }
}

/// An account's client, with the account's own budget.
pub fn account_client(account: Account<'_>) -> anyhow::Result<Client> {
    let settings = ClientSettings {
        endpoint: account.api.endpoint.clone(),
        timeout: account.api.timeout,
        max_requests_per_minute: account.api.max_requests_per_minute,
        backoff: Backoff::API,
    };
    Ok(Client::new(settings, account_credentials(account))?)
}

/// A cycle context per account, by name: the same store, router and
/// settings, each account's own client (and so its own budget). `metrics`
/// also counts each client's requests.
pub fn cycle_contexts(
    config: &Config,
    store: &Storage,
    metrics: &Arc<Metrics>,
    dry_run: bool,
) -> anyhow::Result<BTreeMap<String, Arc<CycleContext>>> {
    let router = router(config);
    config
        .accounts()
        .map(|account| {
            let client = account_client(account)?.with_metrics(metrics.clone(), account.name);
            let ctx = CycleContext {
                client: Arc::new(client),
                store: store.clone(),
                router: router.clone(),
                diff: diff_settings(config),
                metrics: metrics.clone(),
                dry_run,
                strategy: config.poll.strategy,
                full_scan_every: config.poll.full_scan_every,
            };
            Ok((account.name.to_owned(), Arc::new(ctx)))
        })
        .collect()
}

pub fn router(config: &Config) -> Router {
    Router::new(
        config.routes.clone(),
        config.time_intervals.clone(),
        config.delivery.timezone.clone(),
    )
}

pub fn diff_settings(config: &Config) -> DiffSettings {
    DiffSettings {
        notify_existing: config.poll.notify_existing,
        stuck_after: config.poll.stuck_after,
    }
}

pub fn pace(config: &Config) -> Pace {
    Pace {
        interval: config.poll.interval,
        active_interval: config.poll.active_interval,
        max_backoff: config.poll.max_backoff,
    }
}

pub fn dispatch_settings(config: &Config) -> DispatchSettings {
    DispatchSettings {
        backoff: Backoff::DELIVERY,
        max_age: config.delivery.max_age,
    }
}

/// Every configured notifier, ready to send.
pub fn notifiers(config: &Config) -> anyhow::Result<Notifiers> {
    let mut out = Notifiers::new();
    for (name, cfg) in &config.notifiers {
        let notifier = cfg.build(name, &config.delivery.timezone)?;
        let rate = cfg
            .rate_limit
            .or(cfg.kind().default_rate)
            .map(|r| (r.count, r.per));
        out.insert(
            name.clone(),
            Arc::new(Slot::new(notifier, rate, cfg.max_concurrency as usize)),
        );
    }
    Ok(out)
}
