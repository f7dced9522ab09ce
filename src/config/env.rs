//! The environment as a figment provider: `JOBWATCH_A__B=v` becomes key
//! `a.b`, and the Huawei Cloud SDK's own variables ride along in a
//! profile of their own.
//!
//! figment's `Env` reads the process environment at extraction time, which
//! makes tests race on a process-wide resource. This provider reads a
//! snapshot taken once (from the process, or from pairs a test hands in),
//! so tests build configs from explicit variables without touching the
//! environment of the test process (which child processes inherit).

use figment::value::{Dict, Map, Value};
use figment::{Error, Metadata, Profile, Provider};

/// The prefix of jobwatch's own variables.
pub const PREFIX: &str = "JOBWATCH_";

/// The variable `-c/--config` reads; a path, never a config key.
pub const CONFIG_VAR: &str = "JOBWATCH_CONFIG";

/// The profile the SDK variables are emitted to, so the extraction of the
/// default profile (with its unknown-key check) never sees them.
pub const SDK_PROFILE: &str = "huaweicloud_sdk";

/// The Huawei Cloud SDK variables jobwatch honours (docs/configuration.md).
pub const SDK_VARS: &[&str] = &[
    "HUAWEICLOUD_SDK_AK",
    "HUAWEICLOUD_SDK_SK",
    "HUAWEICLOUD_SDK_SECURITY_TOKEN",
    "HUAWEICLOUD_SDK_PROJECT_ID",
    "HUAWEICLOUD_SDK_IAM_ENDPOINT",
];

/// The name this provider's metadata carries; `validate` recognises it to
/// name the variable a bad value came from.
pub(crate) const METADATA_NAME: &str = "environment";

/// A snapshot of environment variables, usable as a figment provider.
#[derive(Debug, Clone, Default)]
pub struct EnvVars {
    vars: Vec<(String, String)>,
}

impl EnvVars {
    /// The process environment, now. Variables that are not valid UTF-8
    /// cannot be config values and are skipped.
    pub fn from_process() -> EnvVars {
        EnvVars::from_pairs(
            std::env::vars_os()
                .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?))),
        )
    }

    /// Explicit variables, e.g. from a test.
    pub fn from_pairs<K: Into<String>, V: Into<String>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> EnvVars {
        EnvVars {
            vars: pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        }
    }

    /// The config key a `JOBWATCH_` variable sets, if it sets one.
    fn key_of(name: &str) -> Option<String> {
        let upper = name.to_ascii_uppercase();
        if upper == CONFIG_VAR {
            return None;
        }
        let rest = upper.strip_prefix(PREFIX)?;
        let key = rest.to_ascii_lowercase().replace("__", ".");
        // `JOBWATCH_A____B` or a trailing `__` would make an empty segment.
        if key.is_empty() || key.split('.').any(str::is_empty) {
            return None;
        }
        Some(key)
    }
}

/// Parses a variable's value the way figment's `Env` does (so `[a, b]` is
/// a list), except that scalars stay strings: lossy extraction turns
/// `"100"` or `"true"` into a number or bool where one is wanted, and an
/// access key that happens to be all digits stays a string.
fn parse_value(key: &str, raw: &str) -> Value {
    // A secret is a string whatever it looks like: a token may begin `[`.
    if key
        .rsplit('.')
        .next()
        .is_some_and(super::key::is_secret_leaf)
    {
        return Value::from(raw.to_owned());
    }
    // figment's parser is infallible; the Err arm only satisfies the type.
    match raw.parse::<Value>() {
        Ok(v @ (Value::Array(..) | Value::Dict(..))) => v,
        _ => Value::from(raw.to_owned()),
    }
}

/// Merges `from` into `into`, descending into tables, so that
/// `JOBWATCH_API__TIMEOUT` and `JOBWATCH_API__REGION` both land in `api`.
fn merge_into(into: &mut Dict, from: Dict) {
    for (k, v) in from {
        match (into.get_mut(&k), v) {
            (Some(Value::Dict(_, existing)), Value::Dict(_, new)) => merge_into(existing, new),
            (_, v) => {
                into.insert(k, v);
            }
        }
    }
}

impl Provider for EnvVars {
    fn metadata(&self) -> Metadata {
        Metadata::named(METADATA_NAME).interpolater(|profile: &Profile, keys: &[&str]| {
            if profile == SDK_PROFILE {
                return keys.join(".").to_ascii_uppercase();
            }
            format!("{PREFIX}{}", keys.join("__").to_ascii_uppercase())
        })
    }

    fn data(&self) -> Result<Map<Profile, Dict>, Error> {
        let mut own = Dict::new();
        let mut sdk = Dict::new();
        for (name, value) in &self.vars {
            if SDK_VARS.contains(&name.as_str()) {
                sdk.insert(name.to_ascii_lowercase(), Value::from(value.clone()));
            } else if let Some(key) = EnvVars::key_of(name) {
                let nested = figment::util::nest(&key, parse_value(&key, value));
                // `nest` of a non-empty key always yields a dict.
                if let Some(dict) = nested.into_dict() {
                    merge_into(&mut own, dict);
                }
            }
        }
        let mut map = Map::new();
        map.insert(Profile::Default, own);
        map.insert(Profile::new(SDK_PROFILE), sdk);
        Ok(map)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_split_on_double_underscore_and_skip_the_config_path() {
        assert_eq!(
            EnvVars::key_of("JOBWATCH_API__TIMEOUT").as_deref(),
            Some("api.timeout")
        );
        assert_eq!(
            EnvVars::key_of("JOBWATCH_POLL__ACTIVE_INTERVAL").as_deref(),
            Some("poll.active_interval")
        );
        assert_eq!(EnvVars::key_of("JOBWATCH_CONFIG"), None);
        assert_eq!(EnvVars::key_of("JOBWATCH_A____B"), None);
        assert_eq!(EnvVars::key_of("PATH"), None);
    }

    #[test]
    fn scalars_stay_strings_lists_parse() {
        assert_eq!(
            parse_value("auth.ak", "0123"),
            Value::from("0123".to_owned())
        );
        assert!(matches!(parse_value("targets", "[a, b]"), Value::Array(..)));
        assert_eq!(
            parse_value("auth.token", "[abc"),
            Value::from("[abc".to_owned()),
            "a secret is a string whatever it looks like"
        );
        assert_eq!(
            parse_value("notifiers.hook.secret", "[a, b]"),
            Value::from("[a, b]".to_owned())
        );
    }
}
