//! Builds the running parts from a validated `Config`: the cloud client,
//! the notifiers with their limits, the router. Shared by `run`, `once`,
//! `jobs`, `notify-test` and `demo`.

use std::sync::Arc;
use std::time::Duration;

use crate::cloud::auth::{Credentials, PasswordCredentials, TokenSource};
use crate::cloud::{Client, ClientSettings};
use crate::config::{self, AuthConfig, Config, NotifierSettings};
use crate::notify::Notifier;
use crate::notify::dingtalk::DingTalkNotifier;
use crate::notify::discord::DiscordNotifier;
use crate::notify::dispatch::{DispatchSettings, Notifiers, Slot};
use crate::notify::email::EmailNotifier;
use crate::notify::feishu::FeishuNotifier;
use crate::notify::log::LogNotifier;
use crate::notify::slack::SlackNotifier;
use crate::notify::teams::TeamsNotifier;
use crate::notify::template::{Markup, Template, TemplateSettings};
use crate::notify::webhook::WebhookNotifier;
use crate::notify::wecom::WeComNotifier;
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
        AuthConfig::Token(token) => Credentials::Token(match &token.source {
            config::TokenSource::Inline(secret) => TokenSource::Inline(secret.clone()),
            config::TokenSource::File(path) => TokenSource::File(path.clone()),
        }),
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

/// What templates need from the config: the zone of times, the region of
/// console links.
pub fn template_settings(config: &Config) -> TemplateSettings {
    TemplateSettings {
        timezone: config.delivery.timezone.clone(),
        region: config.api.region.clone(),
    }
}

/// Every configured notifier, ready to send.
pub fn notifiers(config: &Config) -> anyhow::Result<Notifiers> {
    let mut out = Notifiers::new();
    let settings = template_settings(config);
    for (name, cfg) in &config.notifiers {
        // Validation already compiled and rendered it; an error here means
        // the config did not come through `Config::load`.
        let template = cfg
            .template
            .as_deref()
            .map(|source| {
                let markup = Markup::of_kind(cfg.kind().as_str());
                Template::compile(name, source, &settings, markup)
                    .map_err(|e| anyhow::anyhow!("notifiers.{name}.template: {e}"))
            })
            .transpose()?;
        let http = reqwest::Client::builder()
            .timeout(cfg.timeout)
            .connect_timeout(cfg.timeout.min(Duration::from_secs(10)))
            .user_agent(concat!("jobwatch/", env!("CARGO_PKG_VERSION")))
            .build()?;
        let tz = config.delivery.timezone.clone();
        let notifier = match &cfg.settings {
            NotifierSettings::Log(_) => Notifier::Log(LogNotifier { name: name.clone() }),
            NotifierSettings::Webhook(w) => Notifier::Webhook(WebhookNotifier {
                url: w.url.expose().clone(),
                secret: w.secret.clone(),
                headers: w
                    .headers
                    .iter()
                    .map(|(k, v)| (k.clone(), v.expose().to_owned()))
                    .collect(),
                http,
                template,
            }),
            NotifierSettings::Feishu(c) => Notifier::Feishu(FeishuNotifier {
                url: c.url.expose().clone(),
                secret: c.secret.clone(),
                http,
                tz,
                template,
            }),
            NotifierSettings::Dingtalk(c) => Notifier::DingTalk(DingTalkNotifier {
                url: c.url.expose().clone(),
                secret: c.secret.clone(),
                http,
                tz,
                template,
            }),
            NotifierSettings::Wecom(c) => Notifier::WeCom(WeComNotifier {
                url: c.url.expose().clone(),
                http,
                tz,
                template,
            }),
            NotifierSettings::Slack(c) => Notifier::Slack(SlackNotifier {
                url: c.url.expose().clone(),
                http,
                tz,
                template,
            }),
            NotifierSettings::Discord(c) => Notifier::Discord(DiscordNotifier {
                url: c.url.expose().clone(),
                http,
                tz,
                template,
            }),
            NotifierSettings::Teams(c) => Notifier::Teams(TeamsNotifier {
                url: c.url.expose().clone(),
                http,
                tz,
                template,
            }),
            NotifierSettings::Email(e) => {
                let subject = e
                    .subject_template
                    .as_deref()
                    .map(|src| {
                        Template::compile(
                            &format!("{name}.subject_template"),
                            src,
                            &settings,
                            Markup::Plain,
                        )
                    })
                    .transpose()?;
                Notifier::Email(EmailNotifier::from_settings(
                    e,
                    cfg.timeout,
                    config.delivery.timezone.clone(),
                    subject,
                )?)
            }
        };
        let rate = cfg
            .rate_limit
            .or_else(|| cfg.kind().default_rate_limit())
            .map(|r| (r.count, r.per));
        out.insert(
            name.clone(),
            Arc::new(Slot::new(notifier, rate, cfg.max_concurrency as usize)),
        );
    }
    Ok(out)
}
