//! Builds the running parts from a validated `Config`: the cloud client,
//! the notifiers with their limits, the router. Shared by `run`, `once`,
//! `jobs`, `notify-test` and `demo`.

use std::sync::Arc;

use crate::cloud::auth::{Credentials, PasswordCredentials};
use crate::cloud::{Client, ClientSettings};
use crate::config::{AuthConfig, Config};
use crate::notify::dispatch::{DispatchSettings, Notifiers, Slot};
use crate::retry::Backoff;
use crate::route::Router;
use crate::watch::diff::DiffSettings;
use crate::watch::poller::Pace;

pub fn credentials(config: &Config) -> Credentials {
    match &config.auth {
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
            iam_endpoint: config.api.iam_endpoint.clone(),
            scope_project: password.project_id.clone(),
        }),
    }
}

pub fn client(config: &Config) -> anyhow::Result<Client> {
    let settings = ClientSettings {
        endpoint: config.api.endpoint.clone(),
        timeout: config.api.timeout,
        max_requests_per_minute: config.api.max_requests_per_minute,
        backoff: Backoff::API,
    };
    Ok(Client::new(settings, credentials(config))?)
}

pub fn router(config: &Config) -> Router {
    Router::new(config.routes.clone())
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
