//! The first stage: serde structs that mirror the file and `JOBWATCH_` env
//! exactly, with every value still in its written form.
//!
//! Nothing here judges a value beyond its shape: durations, URLs and names
//! stay strings so that `validate` can report every bad one with its key,
//! instead of serde stopping at the first. `deny_unknown_fields` everywhere
//! makes a misspelt key an error rather than a silently ignored setting.

use std::collections::BTreeMap;
use std::fmt;

use figment::value::magic::RelativePathBuf;
use serde::{Deserialize, Deserializer};

use crate::secret::Secret;

/// A duration as written (`"30s"`, `"1h 30m"`). Its own type so that a
/// number or a table there gets an error that says what is wanted.
#[derive(Debug, Clone)]
pub struct RawDuration(pub String);

impl<'de> Deserialize<'de> for RawDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = RawDuration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(r#"a duration string such as "30s", "5m" or "1h 30m""#)
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<RawDuration, E> {
                Ok(RawDuration(v.to_owned()))
            }
        }
        d.deserialize_str(V)
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawConfig {
    pub api: RawApi,
    pub auth: RawAuth,
    pub state: RawState,
    pub poll: RawPoll,
    pub delivery: RawDelivery,
    pub log: RawLog,
    pub targets: Vec<RawTarget>,
    pub notifiers: BTreeMap<String, RawNotifier>,
    pub routes: Vec<RawRoute>,
    pub heartbeat: Option<RawHeartbeat>,
    pub server: Option<RawServer>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawApi {
    pub region: Option<String>,
    pub endpoint: Option<String>,
    pub timeout: Option<RawDuration>,
    pub max_requests_per_minute: Option<i64>,
    pub iam_endpoint: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawAuth {
    pub method: Option<String>,
    pub ak: Option<String>,
    pub sk: Option<Secret>,
    pub sk_file: Option<RelativePathBuf>,
    pub security_token: Option<Secret>,
    pub security_token_file: Option<RelativePathBuf>,
    pub token: Option<Secret>,
    pub token_file: Option<RelativePathBuf>,
    pub user: Option<String>,
    pub password: Option<Secret>,
    pub password_file: Option<RelativePathBuf>,
    pub domain: Option<String>,
    pub project_id: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawState {
    pub path: Option<RelativePathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawPoll {
    pub interval: Option<RawDuration>,
    pub active_interval: Option<RawDuration>,
    pub notify_existing: Option<bool>,
    pub stuck_after: Option<RawDuration>,
    pub max_backoff: Option<RawDuration>,
    pub strategy: Option<String>,
    pub full_scan_every: Option<RawDuration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawDelivery {
    pub max_age: Option<RawDuration>,
    pub keep_delivered: Option<RawDuration>,
    pub shutdown_grace: Option<RawDuration>,
    pub timezone: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawLog {
    pub level: Option<String>,
    pub format: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawTarget {
    pub name: Option<String>,
    pub project_id: Option<String>,
    pub job_types: Option<Vec<String>>,
}

/// Every setting any notifier kind has, in one flat table: `validate`
/// then rejects settings the chosen kind does not use, which gives a
/// clearer message than an internally tagged serde enum would.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawNotifier {
    pub kind: Option<String>,
    pub url: Option<String>,
    pub secret: Option<Secret>,
    pub secret_file: Option<RelativePathBuf>,
    pub headers: Option<BTreeMap<String, String>>,
    pub template: Option<String>,
    pub rate_limit: Option<String>,
    pub max_concurrency: Option<i64>,
    pub timeout: Option<RawDuration>,
    pub smtp: Option<String>,
    pub password: Option<Secret>,
    pub password_file: Option<RelativePathBuf>,
    pub from: Option<String>,
    pub to: Option<Vec<String>>,
    pub subject_template: Option<String>,
    pub starttls: Option<bool>,
    pub level: Option<String>,
}

impl RawNotifier {
    /// The keys set that belong to some kinds but not to every one, in the
    /// order problems about them are reported. A kind with a key of its
    /// own adds it here and above.
    pub fn kind_keys(&self) -> Vec<&'static str> {
        [
            ("url", self.url.is_some()),
            ("secret", self.secret.is_some()),
            ("secret_file", self.secret_file.is_some()),
            ("headers", self.headers.is_some()),
            ("smtp", self.smtp.is_some()),
            ("password", self.password.is_some()),
            ("password_file", self.password_file.is_some()),
            ("from", self.from.is_some()),
            ("to", self.to.is_some()),
            ("subject_template", self.subject_template.is_some()),
            ("starttls", self.starttls.is_some()),
            ("level", self.level.is_some()),
        ]
        .into_iter()
        .filter_map(|(key, set)| set.then_some(key))
        .collect()
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawRoute {
    pub job_types: Option<Vec<String>>,
    pub to: Option<Vec<String>>,
    pub kinds: Option<Vec<String>>,
    pub notify: Option<Vec<String>>,
    pub group_window: Option<RawDuration>,
    pub group_by: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawHeartbeat {
    pub url: Option<String>,
    pub every: Option<RawDuration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawServer {
    pub listen: Option<String>,
}
