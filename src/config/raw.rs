//! The first stage: serde structs that mirror the file and `JOBWATCH_` env
//! exactly, with every value still in its written form.
//!
//! Nothing here judges a value beyond its shape: durations, URLs and names
//! stay strings so that `validate` can report every bad one with its key,
//! instead of serde stopping at the first. A key none of these structs has
//! is not skipped silently: [`WithUnknown`] collects every one (serde's
//! `deny_unknown_fields` would stop at the first), and `validate` reports
//! them as problems beside all the others, each with the keys its table
//! does have ([`known_keys`]).

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
#[serde(default)]
pub struct RawConfig {
    pub api: RawApi,
    pub auth: RawAuth,
    pub accounts: BTreeMap<String, RawAccount>,
    pub state: RawState,
    pub cluster: RawCluster,
    pub poll: RawPoll,
    pub delivery: RawDelivery,
    pub log: RawLog,
    pub targets: Vec<RawTarget>,
    pub notifiers: BTreeMap<String, RawNotifier>,
    pub routes: Vec<RawRoute>,
    pub time_intervals: BTreeMap<String, RawTimeInterval>,
    pub heartbeat: Option<RawHeartbeat>,
    pub server: Option<RawServer>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawApi {
    pub region: Option<String>,
    pub endpoint: Option<String>,
    pub timeout: Option<RawDuration>,
    pub max_requests_per_minute: Option<i64>,
    pub iam_endpoint: Option<String>,
}

/// `[accounts.NAME]`: the `[api]` keys and an `auth` table. Written out
/// rather than a flattened `RawApi`: a flattened struct's unknown keys are
/// not reported one by one.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawAccount {
    pub region: Option<String>,
    pub endpoint: Option<String>,
    pub timeout: Option<RawDuration>,
    pub max_requests_per_minute: Option<i64>,
    pub iam_endpoint: Option<String>,
    pub auth: RawAuth,
}

impl RawAccount {
    /// The account's `[api]` keys and its `auth` table, apart.
    pub fn split(self) -> (RawApi, RawAuth) {
        let api = RawApi {
            region: self.region,
            endpoint: self.endpoint,
            timeout: self.timeout,
            max_requests_per_minute: self.max_requests_per_minute,
            iam_endpoint: self.iam_endpoint,
        };
        (api, self.auth)
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
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
#[serde(default)]
pub struct RawState {
    pub path: Option<RelativePathBuf>,
    pub url: Option<Secret>,
    pub url_file: Option<RelativePathBuf>,
    pub keep_history: Option<RawDuration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawCluster {
    pub lease: Option<RawDuration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
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
#[serde(default)]
pub struct RawDelivery {
    pub max_age: Option<RawDuration>,
    pub keep_delivered: Option<RawDuration>,
    pub shutdown_grace: Option<RawDuration>,
    pub timezone: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawLog {
    pub level: Option<String>,
    pub format: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawTarget {
    pub account: Option<String>,
    pub name: Option<String>,
    pub project_id: Option<String>,
    pub job_types: Option<Vec<String>>,
}

/// Every setting any notifier kind has, in one flat table: `validate`
/// then rejects settings the chosen kind does not use, which gives a
/// clearer message than an internally tagged serde enum would.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawNotifier {
    pub kind: Option<String>,
    pub url: Option<String>,
    /// The URL read from a file: chat URLs carry their credential.
    pub url_file: Option<RelativePathBuf>,
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
            ("url_file", self.url_file.is_some()),
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
#[serde(default)]
pub struct RawRoute {
    pub targets: Option<Vec<String>>,
    pub projects: Option<Vec<String>>,
    pub job_types: Option<Vec<String>>,
    pub error_codes: Option<Vec<String>>,
    pub to: Option<Vec<String>>,
    pub kinds: Option<Vec<String>>,
    pub notify: Option<Vec<String>>,
    pub group_window: Option<RawDuration>,
    pub group_by: Option<String>,
    pub mute_time_intervals: Option<Vec<String>>,
}

/// `[time_intervals.NAME]`: a maintenance window routes can name.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawTimeInterval {
    pub weekdays: Option<Vec<String>>,
    pub times: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawHeartbeat {
    pub url: Option<String>,
    pub every: Option<RawDuration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawServer {
    pub listen: Option<String>,
    pub token: Option<Secret>,
    pub token_file: Option<RelativePathBuf>,
}

/// A step of a key's path: a table's key or an array's index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    Key(String),
    Index(usize),
}

/// A [`RawConfig`] and every key in the input that none of its structs
/// has, in the order met.
#[derive(Debug, Default)]
pub struct WithUnknown {
    pub config: RawConfig,
    pub unknown: Vec<Vec<Part>>,
}

impl<'de> Deserialize<'de> for WithUnknown {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mut unknown = Vec::new();
        let config = serde_ignored::deserialize(d, |path| unknown.push(parts(&path)))?;
        Ok(WithUnknown { config, unknown })
    }
}

fn parts(path: &serde_ignored::Path<'_>) -> Vec<Part> {
    use serde_ignored::Path;
    let mut out = match path {
        Path::Root => return Vec::new(),
        Path::Seq { parent, .. }
        | Path::Map { parent, .. }
        | Path::Some { parent }
        | Path::NewtypeStruct { parent }
        | Path::NewtypeVariant { parent } => parts(parent),
    };
    match path {
        Path::Seq { index, .. } => out.push(Part::Index(*index)),
        Path::Map { key, .. } => out.push(Part::Key(key.clone())),
        _ => {}
    }
    out
}

/// The keys the table at `parent` has, for "did you mean" and "expected
/// one of": the field names serde itself would accept there.
pub fn known_keys(parent: &[Part]) -> &'static [&'static str] {
    use Part::{Index, Key};
    fn key(k: &Part) -> Option<&str> {
        match k {
            Key(k) => Some(k.as_str()),
            Index(_) => None,
        }
    }
    match parent {
        [] => fields::<RawConfig>(),
        [k] => match key(k) {
            Some("api") => fields::<RawApi>(),
            Some("auth") => fields::<RawAuth>(),
            Some("state") => fields::<RawState>(),
            Some("poll") => fields::<RawPoll>(),
            Some("delivery") => fields::<RawDelivery>(),
            Some("log") => fields::<RawLog>(),
            Some("heartbeat") => fields::<RawHeartbeat>(),
            Some("server") => fields::<RawServer>(),
            Some("cluster") => fields::<RawCluster>(),
            _ => &[],
        },
        [k, Index(_)] => match key(k) {
            Some("targets") => fields::<RawTarget>(),
            Some("routes") => fields::<RawRoute>(),
            _ => &[],
        },
        [k, Key(_)] => match key(k) {
            Some("accounts") => fields::<RawAccount>(),
            Some("notifiers") => fields::<RawNotifier>(),
            Some("time_intervals") => fields::<RawTimeInterval>(),
            _ => &[],
        },
        [k, Key(_), Key(auth)] if key(k) == Some("accounts") && auth == "auth" => {
            fields::<RawAuth>()
        }
        _ => &[],
    }
}

/// The field names of a struct deriving `Deserialize`, as serde's derive
/// hands them to `deserialize_struct`. A deserializer that only listens.
fn fields<T: serde::de::DeserializeOwned>() -> &'static [&'static str] {
    struct Listen<'a>(&'a mut &'static [&'static str]);

    #[derive(Debug)]
    struct Heard;
    impl fmt::Display for Heard {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("heard the fields")
        }
    }
    impl std::error::Error for Heard {}
    impl serde::de::Error for Heard {
        fn custom<M: fmt::Display>(_: M) -> Heard {
            Heard
        }
    }

    impl<'de> Deserializer<'de> for Listen<'_> {
        type Error = Heard;
        fn deserialize_any<V: serde::de::Visitor<'de>>(self, _: V) -> Result<V::Value, Heard> {
            Err(Heard)
        }
        fn deserialize_struct<V: serde::de::Visitor<'de>>(
            self,
            _name: &'static str,
            fields: &'static [&'static str],
            _visitor: V,
        ) -> Result<V::Value, Heard> {
            *self.0 = fields;
            Err(Heard)
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
            bytes byte_buf option unit unit_struct newtype_struct seq tuple
            tuple_struct map enum identifier ignored_any
        }
    }

    let mut heard: &'static [&'static str] = &[];
    let _ = T::deserialize(Listen(&mut heard));
    heard
}
