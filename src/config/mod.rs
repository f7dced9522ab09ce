//! Configuration: raw serde structs from TOML + `JOBWATCH_` env, validated
//! into a typed [`Config`].
//!
//! Two stages (STYLE.md item 9): [`raw`] mirrors what was written, with
//! unknown keys rejected; [`validate`] turns it into the typed values below,
//! collecting every problem with the key it concerns and, where figment's
//! metadata knows it, the file or variable it came from. Every type here
//! derives `Serialize` so `jobwatch check` can print the effective config;
//! secrets serialise as `***` and secret-bearing URLs keep only their origin.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Format, Toml};
use serde::Serialize;
use url::Url;

use crate::cloud::auth::TokenSource;
use crate::cloud::model::JobType;
use crate::notify::kinds::NotifierConfig;
use crate::secret::Secret;
use crate::watch::strategy::Strategy;
use crate::watch::{DEFAULT_ACCOUNT, Target};

pub mod check;
pub mod dur;
mod env;
pub mod key;
pub mod raw;
mod validate;

pub use check::{ConfigError, Problem};
pub use env::{CONFIG_VAR, EnvVars, SDK_PROFILE, SDK_VARS};
pub use validate::{SdkEnv, budget_key, budget_warnings, validate};

pub use crate::ratelimit::RateLimit;
pub use crate::secret::SecretUrl;

/// The validated configuration.
#[derive(Debug, Clone, Serialize)]
pub struct Config {
    /// The default account's API settings.
    pub api: ApiConfig,
    /// The default account's credentials.
    pub auth: AuthConfig,
    /// `[accounts.NAME]`: further accounts, each with its own region,
    /// credentials and budget.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub accounts: BTreeMap<String, AccountConfig>,
    pub state: StateConfig,
    pub cluster: ClusterConfig,
    pub poll: PollConfig,
    pub delivery: DeliveryConfig,
    pub log: LogConfig,
    pub targets: Vec<TargetConfig>,
    pub notifiers: BTreeMap<String, NotifierConfig>,
    pub routes: Vec<Route>,
    /// `[time_intervals.NAME]`: maintenance windows routes mute in.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub time_intervals: BTreeMap<String, crate::silence::TimeInterval>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub heartbeat: Option<HeartbeatConfig>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server: Option<ServerConfig>,
}

/// A validated configuration and what `check` should warn about.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: Config,
    pub warnings: Vec<String>,
}

impl Loaded {
    /// For what watches (`run`, `once`, `check`): a config without
    /// `[[targets]]` is an error there, not the warning other commands
    /// (`notify-test`, `state`) give.
    pub fn require_targets(self) -> Result<Loaded, ConfigError> {
        if self.config.targets.is_empty() {
            return Err(ConfigError::new(
                "targets",
                "none: add a [[targets]] table (project_id, job_types); without one nothing is watched",
            ));
        }
        Ok(self)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ApiConfig {
    pub region: String,
    /// The effective endpoint: `api.endpoint`, else the region's.
    pub endpoint: Url,
    #[serde(serialize_with = "dur::ser")]
    pub timeout: Duration,
    pub max_requests_per_minute: u32,
    /// `api.iam_endpoint`, else `HUAWEICLOUD_SDK_IAM_ENDPOINT`, else the region's.
    pub iam_endpoint: Url,
}

/// One `[accounts.NAME]`: where its API is, how it authenticates, its
/// own request budget.
#[derive(Debug, Clone, Serialize)]
pub struct AccountConfig {
    #[serde(flatten)]
    pub api: ApiConfig,
    pub auth: AuthConfig,
}

/// How requests authenticate.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "method", rename_all = "lowercase")]
pub enum AuthConfig {
    Aksk(AkSk),
    Token(TokenAuth),
    Password(PasswordAuth),
    /// No authentication: for simulators and authenticating proxies.
    None,
}

#[derive(Debug, Clone, Serialize)]
pub struct AkSk {
    pub ak: String,
    pub sk: Secret,
    /// Set for temporary credentials (sent as `X-Security-Token`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub security_token: Option<Secret>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TokenAuth {
    #[serde(flatten)]
    pub source: TokenSource,
}

#[derive(Debug, Clone, Serialize)]
pub struct PasswordAuth {
    pub user: String,
    pub password: Secret,
    /// The account (domain) name; defaults to `user`.
    pub domain: String,
    /// The project the token is scoped to; `None`: each target's own.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub project_id: Option<String>,
}

pub use crate::pg::url::PgUrl;

#[derive(Debug, Clone, Serialize)]
pub struct StateConfig {
    /// The SQLite file; unused when `url` is set.
    pub path: PathBuf,
    /// `state.url`: a PostgreSQL database several replicas share.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<crate::pg::url::PgUrl>,
    /// `state.keep_history`: how long events, delivery attempts and
    /// expired silences are kept.
    #[serde(serialize_with = "dur::ser")]
    pub keep_history: Duration,
}

impl StateConfig {
    /// The default of `state.keep_history`: 30 days.
    pub const KEEP_HISTORY: Duration = Duration::from_secs(30 * 24 * 3600);

    /// One SQLite file.
    pub fn file(path: impl Into<PathBuf>) -> StateConfig {
        StateConfig {
            path: path.into(),
            url: None,
            keep_history: StateConfig::KEEP_HISTORY,
        }
    }

    /// A PostgreSQL database.
    pub fn postgres(url: crate::pg::url::PgUrl) -> StateConfig {
        StateConfig {
            path: PathBuf::new(),
            url: Some(url),
            keep_history: StateConfig::KEEP_HISTORY,
        }
    }

    /// Where the state is, as it may be shown (no password).
    pub fn shown(&self) -> String {
        match &self.url {
            Some(url) => url.shown().to_owned(),
            None => self.path.display().to_string(),
        }
    }
}

/// `[cluster]`: how replicas sharing a PostgreSQL state share the work.
#[derive(Debug, Clone, Serialize)]
pub struct ClusterConfig {
    /// How long a dead replica's targets and claims wait before others
    /// take them; leases are renewed at a third of it.
    #[serde(serialize_with = "dur::ser")]
    pub lease: Duration,
}

#[derive(Debug, Clone, Serialize)]
pub struct PollConfig {
    #[serde(serialize_with = "dur::ser")]
    pub interval: Duration,
    #[serde(serialize_with = "dur::ser")]
    pub active_interval: Duration,
    pub notify_existing: bool,
    #[serde(serialize_with = "dur::ser")]
    pub stuck_after: Duration,
    #[serde(serialize_with = "dur::ser")]
    pub max_backoff: Duration,
    pub strategy: Strategy,
    #[serde(serialize_with = "dur::ser")]
    pub full_scan_every: Duration,
}

#[derive(Debug, Clone, Serialize)]
pub struct DeliveryConfig {
    #[serde(serialize_with = "dur::ser")]
    pub max_age: Duration,
    /// Delivered outbox rows are deleted this long after delivery.
    #[serde(serialize_with = "dur::ser")]
    pub keep_delivered: Duration,
    #[serde(serialize_with = "dur::ser")]
    pub shutdown_grace: Duration,
    #[serde(serialize_with = "jiff::fmt::serde::tz::required::serialize")]
    pub timezone: jiff::tz::TimeZone,
}

#[derive(Debug, Clone, Serialize)]
pub struct LogConfig {
    /// A valid `EnvFilter` directive (kept as text: `EnvFilter` is not `Clone`).
    pub level: String,
    pub format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// One `[[targets]]` entry: a project and the job types watched in it.
/// Each (project, job type) pair is one poll loop.
#[derive(Debug, Clone, Serialize)]
pub struct TargetConfig {
    /// `None`: the default account.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub project_id: String,
    pub job_types: Vec<JobType>,
}

impl TargetConfig {
    /// The account's name, [`DEFAULT_ACCOUNT`] when none is given.
    pub fn account_name(&self) -> &str {
        self.account.as_deref().unwrap_or(DEFAULT_ACCOUNT)
    }

    /// Its poll loops, named: `name` when it watches one job type,
    /// `name/JOB_TYPE` for each of several, `project/JOB_TYPE` without one.
    pub fn watched(&self) -> impl Iterator<Item = Target> + '_ {
        self.job_types.iter().map(move |job_type| {
            let name = match &self.name {
                Some(name) if self.job_types.len() == 1 => name.clone(),
                Some(name) => format!("{name}/{job_type}"),
                None => Target::default_name(&self.project_id, job_type),
            };
            Target::new(self.project_id.clone(), job_type.clone()).named(name, self.account_name())
        })
    }
}

/// One account's API settings and credentials, borrowed from the config.
#[derive(Debug, Clone, Copy)]
pub struct Account<'a> {
    pub name: &'a str,
    pub api: &'a ApiConfig,
    pub auth: &'a AuthConfig,
}

impl Config {
    /// Every poll loop, named and with its account, in config order.
    /// Validation guarantees no (project, job type) pair is there twice.
    pub fn watched(&self) -> Vec<Target> {
        self.targets
            .iter()
            .flat_map(TargetConfig::watched)
            .collect()
    }

    /// Every account, the default first; validation guarantees each
    /// target's account is among them.
    pub fn accounts(&self) -> impl Iterator<Item = Account<'_>> {
        std::iter::once(Account {
            name: DEFAULT_ACCOUNT,
            api: &self.api,
            auth: &self.auth,
        })
        .chain(self.accounts.iter().map(|(name, a)| Account {
            name,
            api: &a.api,
            auth: &a.auth,
        }))
    }

    /// The account called `name`, if there is one.
    pub fn account(&self, name: &str) -> Option<Account<'_>> {
        self.accounts().find(|a| a.name == name)
    }
}

/// What happened to a sub-job (docs/events.md), as routes name it: the events'
/// own kind, so a route and an event can never disagree on the names.
pub use crate::watch::event::EventKind;

/// Routes live with the grouping they decide (`crate::route`); named here
/// too, as the config is where they come from.
pub use crate::route::{GroupBy, Route};

#[derive(Debug, Clone, Serialize)]
pub struct HeartbeatConfig {
    pub url: SecretUrl,
    #[serde(serialize_with = "dur::ser")]
    pub every: Duration,
}

#[derive(Debug, Clone, Serialize)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// `server.token`: the bearer token the console and its API ask for
    /// (required beyond loopback; actions always need it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<crate::secret::Secret>,
}

impl Config {
    /// Loads `path` (which must exist) merged with the process environment.
    pub fn load(path: &Path) -> Result<Loaded, ConfigError> {
        Config::load_optional(path, true)
    }

    /// Loads `path` merged with the process environment. When `must_exist`
    /// is false a missing file is fine and the config comes from the
    /// environment alone (e.g. `jobs` with only `HUAWEICLOUD_SDK_*` set).
    pub fn load_optional(path: &Path, must_exist: bool) -> Result<Loaded, ConfigError> {
        Config::load_with_env(path, must_exist, EnvVars::from_process())
    }

    /// As [`Config::load_optional`], with the environment given explicitly.
    pub fn load_with_env(
        path: &Path,
        must_exist: bool,
        env: EnvVars,
    ) -> Result<Loaded, ConfigError> {
        let exists = match std::fs::metadata(path) {
            Ok(m) if m.is_dir() => {
                return Err(ConfigError::new(
                    "",
                    format!("config file {}: is a directory", path.display()),
                ));
            }
            Ok(_) => {
                // figment would report an unreadable file without the reason.
                if let Err(e) = std::fs::File::open(path) {
                    return Err(ConfigError::new(
                        "",
                        format!("cannot read config file {}: {e}", path.display()),
                    ));
                }
                true
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !must_exist => false,
            Err(e) => {
                return Err(ConfigError::new(
                    "",
                    format!(
                        "cannot read config file {}: {e} (set it with -c/--config or {CONFIG_VAR})",
                        path.display()
                    ),
                ));
            }
        };
        Config::from_figment(Config::figment(exists.then_some(path), env))
    }

    /// The providers `load` uses: the file (if any), then the environment,
    /// which overrides it. Exposed so tests build the same thing.
    pub fn figment(path: Option<&Path>, env: EnvVars) -> Figment {
        let mut f = Figment::new();
        if let Some(path) = path {
            // `file_exact`: `file` would search parent directories for a
            // relative path, which is surprising for an explicit `-c`.
            f = f.merge(Toml::file_exact(path));
        }
        f.merge(env)
    }

    /// Extracts and validates a figment. SDK variables are read from the
    /// [`SDK_PROFILE`] profile (see [`EnvVars`]).
    pub fn from_figment(f: Figment) -> Result<Loaded, ConfigError> {
        validate::from_figment(&f)
    }
}
