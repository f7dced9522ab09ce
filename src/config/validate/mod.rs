//! The second stage: turns a [`RawConfig`] into a typed [`Config`],
//! collecting every problem (not just the first) with its key path and,
//! where figment's metadata knows it, the file or variable it came from.
//!
//! One file per section; each checks its raw table with the toolkit in
//! [`super::check`]. Notifier tables are checked by their kinds (see
//! `notify::kinds`); this layer only dispatches on `kind`.

mod accounts;
mod api;
mod auth;
mod notifiers;
mod routes;
mod sections;
mod targets;
mod warnings;

pub use warnings::{budget_key, budget_warnings};

use figment::{Figment, Profile, Provider};

use super::check::{Checker, ConfigError, did_you_mean, figment_error};
use super::env::SDK_PROFILE;
use super::key::KeyPath;
use super::raw::{Part, RawConfig, WithUnknown, known_keys};
use super::{Config, Loaded};
use crate::notify::template::TemplateSettings;

/// The Huawei Cloud SDK variables, as found in the [`SDK_PROFILE`] profile.
/// They are fallbacks: a key in the file or a `JOBWATCH_` variable wins.
#[derive(Debug, Clone, Default)]
pub struct SdkEnv {
    pub ak: Option<String>,
    pub sk: Option<String>,
    pub security_token: Option<String>,
    pub project_id: Option<String>,
    pub iam_endpoint: Option<String>,
}

impl SdkEnv {
    fn from_figment(f: &Figment) -> SdkEnv {
        let data = f.data().unwrap_or_default();
        let Some(dict) = data.get(&Profile::new(SDK_PROFILE)) else {
            return SdkEnv::default();
        };
        // Empty variables count as unset, as a shell user would expect of
        // `HUAWEICLOUD_SDK_SK= jobwatch …`.
        let get = |name: &str| {
            dict.get(&name.to_ascii_lowercase())
                .and_then(|v| v.as_str().map(str::to_owned))
                .filter(|s| !s.trim().is_empty())
        };
        SdkEnv {
            ak: get("HUAWEICLOUD_SDK_AK"),
            sk: get("HUAWEICLOUD_SDK_SK"),
            security_token: get("HUAWEICLOUD_SDK_SECURITY_TOKEN"),
            project_id: get("HUAWEICLOUD_SDK_PROJECT_ID"),
            iam_endpoint: get("HUAWEICLOUD_SDK_IAM_ENDPOINT"),
        }
    }
}

/// Extracts the raw config from `f` and validates it.
pub(super) fn from_figment(f: &Figment) -> Result<Loaded, ConfigError> {
    // Lossy: environment values arrive as strings, and `"100"` or `"true"`
    // must still fill a number or a bool.
    let raw: WithUnknown = f.extract_lossy().map_err(|e| figment_error(f, e))?;
    let mut ck = Checker::new(Some(f));
    for path in &raw.unknown {
        unknown_key(&mut ck, path);
    }
    run(ck, raw.config, SdkEnv::from_figment(f))
}

/// A key no table of ours has: a problem like any other (so the rest are
/// still reported), with the key meant when one is close.
fn unknown_key(ck: &mut Checker<'_>, path: &[Part]) {
    let Some((Part::Key(name), parent)) = path.split_last() else {
        return;
    };
    let mut key = KeyPath::root();
    for part in path {
        key = match part {
            Part::Key(k) => key.f(k),
            Part::Index(i) => key.i(*i),
        };
    }
    let known = known_keys(parent);
    let message = if known.is_empty() {
        "unknown key".to_owned()
    } else {
        format!(
            "unknown key{}; expected one of: {}",
            did_you_mean(name, known.iter().copied()),
            known.join(", ")
        )
    };
    ck.err(&key, message);
}

/// Validates a raw config without figment metadata (so problems carry no
/// origin). `sdk` stands for the Huawei Cloud SDK's environment variables.
pub fn validate(raw: RawConfig, sdk: SdkEnv) -> Result<Loaded, ConfigError> {
    run(Checker::new(None), raw, sdk)
}

fn run(mut ck: Checker<'_>, raw: RawConfig, sdk: SdkEnv) -> Result<Loaded, ConfigError> {
    let root = KeyPath::root();
    let api = api::check(&mut ck, &root.f("api"), raw.api, &sdk);
    let auth = auth::check(&mut ck, &root.f("auth"), raw.auth, &sdk);
    let accounts = accounts::check(&mut ck, &root.f("accounts"), raw.accounts);
    let state = sections::state(&mut ck, &root.f("state"), raw.state);
    let shared = state.url.is_some();
    let cluster = sections::cluster(&mut ck, &root.f("cluster"), raw.cluster, shared);
    let poll = sections::poll(&mut ck, &root.f("poll"), raw.poll);
    let delivery = sections::delivery(&mut ck, &root.f("delivery"), raw.delivery);
    let log = sections::log(&mut ck, &root.f("log"), raw.log);
    // Targets are checked against the accounts written, so an account
    // that is itself invalid does not also make its targets' errors.
    let account_names = ck
        .written_keys(&root.f("accounts"))
        .unwrap_or_else(|| accounts.keys().cloned().collect());
    let targets = targets::check(
        &mut ck,
        &root.f("targets"),
        raw.targets,
        &sdk,
        &account_names,
    );
    // Templates are compiled (once) as their notifiers are checked, with
    // the zone and region they render with.
    let template_settings = TemplateSettings {
        timezone: delivery.timezone.clone(),
        region: api.region.clone(),
        account_regions: accounts
            .iter()
            .map(|(name, a)| (name.clone(), a.api.region.clone()))
            .collect(),
    };
    let notifiers = notifiers::check(
        &mut ck,
        &root.f("notifiers"),
        raw.notifiers,
        &template_settings,
    );
    let written_intervals: std::collections::BTreeSet<String> =
        raw.time_intervals.keys().cloned().collect();
    let time_intervals = routes::intervals(&mut ck, &root.f("time_intervals"), raw.time_intervals);
    let routes = routes::check(
        &mut ck,
        &root.f("routes"),
        raw.routes,
        &notifiers,
        &targets,
        &written_intervals,
    );
    let heartbeat = raw
        .heartbeat
        .and_then(|h| sections::heartbeat(&mut ck, &root.f("heartbeat"), h));
    let server = raw
        .server
        .and_then(|s| sections::server(&mut ck, &root.f("server"), s));

    ck.no_problems()?;
    let config = Config {
        api,
        auth,
        accounts,
        state,
        cluster,
        poll,
        delivery,
        log,
        targets,
        notifiers,
        routes,
        time_intervals,
        heartbeat,
        server,
    };
    warnings::overall(&mut ck, &config);
    Ok(Loaded {
        config,
        warnings: ck.into_warnings(),
    })
}
