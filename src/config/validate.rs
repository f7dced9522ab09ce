//! The second stage: turns a [`RawConfig`] into a typed [`Config`],
//! collecting every problem (not just the first) with its key path and,
//! where figment's metadata knows it, the file or variable it came from.
//!
//! Validation goes on after a problem by substituting the default, so one
//! run reports everything; the substitutes never escape because any
//! problem turns the result into an error.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::value::Value;
use figment::value::magic::RelativePathBuf;
use figment::{Figment, Metadata, Profile, Provider};
use jiff::fmt::friendly::{SpanParser, SpanPrinter};
use url::Url;

use super::env::{METADATA_NAME, SDK_PROFILE};
use super::raw::*;
use super::*;
use crate::cloud::model::{JobType, Status};
use crate::notify::template::{Markup, Template, TemplateSettings};
use crate::secret::Secret;

const SECOND: Duration = Duration::from_secs(1);

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
    let raw: RawConfig = f.extract_lossy().map_err(|e| figment_error(f, e))?;
    let root = f.find_value("").ok();
    Validator::new(Some(f), root).run(raw, SdkEnv::from_figment(f))
}

/// Validates a raw config without figment metadata (so problems carry no
/// origin). `sdk` stands for the Huawei Cloud SDK's environment variables.
pub fn validate(raw: RawConfig, sdk: SdkEnv) -> Result<Loaded, ConfigError> {
    Validator::new(None, None).run(raw, sdk)
}

/// Turns figment's extraction errors (unknown keys, wrong types) into
/// problems. serde stops at the first such error, so there is one here;
/// value-level problems are all collected later by the validator.
fn figment_error(f: &Figment, error: figment::Error) -> ConfigError {
    let problems = error
        .into_iter()
        .map(|e| {
            let mut path = e.path.clone();
            let message = match &e.kind {
                figment::error::Kind::UnknownField(field, expected) => {
                    // figment's path usually ends with the field already.
                    if path.last() != Some(field) {
                        path.push(field.clone());
                    }
                    format!("unknown key; expected one of: {}", expected.join(", "))
                }
                figment::error::Kind::MissingField(field) => {
                    if path.last().map(String::as_str) != Some(field.as_ref()) {
                        path.push(field.to_string());
                    }
                    "missing".to_owned()
                }
                kind => kind.to_string(),
            };
            let origin = e.metadata.as_ref().and_then(|md| {
                let profile = e.profile.clone().unwrap_or_else(|| f.profile().clone());
                origin_of(md, &profile, &path)
            });
            Problem {
                key: display_path(path.iter().map(String::as_str)),
                message,
                origin,
            }
        })
        .collect();
    ConfigError { problems }
}

/// `["routes", "0", "notify"]` → `routes[0].notify`.
fn display_path<'a>(segments: impl Iterator<Item = &'a str>) -> String {
    let mut out = String::new();
    for s in segments {
        if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
            out.push('[');
            out.push_str(s);
            out.push(']');
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(s);
        }
    }
    out
}

/// Names where a value came from: `in /etc/jobwatch/jobwatch.toml` or
/// `from env JOBWATCH_API__TIMEOUT`.
fn origin_of(md: &Metadata, profile: &Profile, keys: &[String]) -> Option<String> {
    if md.name == METADATA_NAME {
        return Some(format!("from env {}", md.interpolate(profile, keys)));
    }
    match md.source.as_ref().and_then(|s| s.file_path()) {
        Some(path) => Some(format!("in {}", path.display())),
        None => Some(format!("in {}", md.name)),
    }
}

/// A key path being validated.
#[derive(Debug, Clone, Default)]
struct Key(Vec<Seg>);

#[derive(Debug, Clone)]
enum Seg {
    Field(String),
    Index(usize),
}

impl Key {
    fn root() -> Key {
        Key::default()
    }

    fn f(&self, name: &str) -> Key {
        let mut k = self.clone();
        k.0.push(Seg::Field(name.to_owned()));
        k
    }

    fn i(&self, index: usize) -> Key {
        let mut k = self.clone();
        k.0.push(Seg::Index(index));
        k
    }

    fn segments(&self) -> Vec<String> {
        self.0
            .iter()
            .map(|s| match s {
                Seg::Field(f) => f.clone(),
                Seg::Index(i) => i.to_string(),
            })
            .collect()
    }

    fn display(&self) -> String {
        let mut out = String::new();
        for s in &self.0 {
            match s {
                Seg::Field(f) => {
                    if !out.is_empty() {
                        out.push('.');
                    }
                    out.push_str(f);
                }
                Seg::Index(i) => out.push_str(&format!("[{i}]")),
            }
        }
        out
    }
}

/// Formats a duration as it would be written.
fn human(d: Duration) -> String {
    SpanPrinter::new().unsigned_duration_to_string(&d)
}

struct Validator<'a> {
    figment: Option<&'a Figment>,
    root: Option<Value>,
    problems: Vec<Problem>,
    warnings: Vec<String>,
    /// Keys holding secrets written inline, for the file-permission warning.
    inline_secrets: Vec<Key>,
    /// The zone and region templates render with, once `api` and
    /// `delivery` are validated.
    template_settings: TemplateSettings,
}

impl<'a> Validator<'a> {
    fn new(figment: Option<&'a Figment>, root: Option<Value>) -> Validator<'a> {
        Validator {
            figment,
            root,
            problems: Vec::new(),
            warnings: Vec::new(),
            inline_secrets: Vec::new(),
            template_settings: TemplateSettings {
                timezone: jiff::tz::TimeZone::UTC,
                region: String::new(),
            },
        }
    }

    /// Where the value at `key` (or its nearest present ancestor) came from.
    fn origin(&self, key: &Key) -> Option<String> {
        let (figment, mut cur) = (self.figment?, self.root.as_ref()?);
        let segments = key.segments();
        let mut depth = 0;
        for seg in &key.0 {
            let next = match (seg, cur) {
                (Seg::Field(name), Value::Dict(_, d)) => d.get(name),
                (Seg::Index(i), Value::Array(_, a)) => a.get(*i),
                _ => None,
            };
            match next {
                Some(v) => {
                    cur = v;
                    depth += 1;
                }
                None => break,
            }
        }
        if depth == 0 {
            return None;
        }
        let md = figment.get_metadata(cur.tag())?;
        origin_of(md, &Profile::Default, &segments[..depth])
    }

    fn err(&mut self, key: &Key, message: impl Into<String>) {
        let origin = self.origin(key);
        self.problems.push(Problem {
            key: key.display(),
            message: message.into(),
            origin,
        });
    }

    /// A problem with a value from one of the SDK variables.
    fn err_sdk(&mut self, key: &Key, var: &str, message: impl Into<String>) {
        self.problems.push(Problem {
            key: key.display(),
            message: message.into(),
            origin: Some(format!("from env {var}")),
        });
    }

    fn warn(&mut self, message: impl Into<String>) {
        self.warnings.push(message.into());
    }

    fn run(mut self, raw: RawConfig, sdk: SdkEnv) -> Result<Loaded, ConfigError> {
        let root = Key::root();
        let api = self.api(&root.f("api"), raw.api, &sdk);
        let auth = self.auth(&root.f("auth"), raw.auth, &sdk);
        let state = StateConfig {
            path: raw
                .state
                .path
                .map(|p| p.relative())
                .unwrap_or_else(|| PathBuf::from("/var/lib/jobwatch/state.db")),
        };
        let poll = self.poll(&root.f("poll"), raw.poll);
        let delivery = self.delivery(&root.f("delivery"), raw.delivery);
        let log = self.log(&root.f("log"), raw.log);
        let targets = self.targets(&root.f("targets"), raw.targets, &sdk);
        self.template_settings = TemplateSettings {
            timezone: delivery.timezone.clone(),
            region: api.region.clone(),
        };
        let notifiers = self.notifiers(&root.f("notifiers"), raw.notifiers);
        let routes = self.routes(&root.f("routes"), raw.routes, &notifiers);
        let heartbeat = raw
            .heartbeat
            .map(|h| self.heartbeat(&root.f("heartbeat"), h));
        let server = raw.server.and_then(|s| self.server(&root.f("server"), s));

        if !self.problems.is_empty() {
            return Err(ConfigError {
                problems: self.problems,
            });
        }
        let config = Config {
            api,
            auth,
            state,
            poll,
            delivery,
            log,
            targets,
            notifiers,
            routes,
            heartbeat: heartbeat.flatten(),
            server,
        };
        self.overall_warnings(&config);
        Ok(Loaded {
            config,
            warnings: self.warnings,
        })
    }

    // ---- value helpers: each reports its own problem and returns a
    // ---- placeholder so validation can go on.

    fn duration(
        &mut self,
        key: &Key,
        raw: Option<&RawDuration>,
        default: Duration,
        min: Duration,
    ) -> Duration {
        let Some(RawDuration(text)) = raw else {
            return default;
        };
        match SpanParser::new().parse_unsigned_duration(text.trim()) {
            Ok(d) if d < min => {
                self.err(
                    key,
                    format!("{text:?} is too short: the minimum is {}", human(min)),
                );
                default
            }
            Ok(d) => d,
            Err(e) => {
                self.err(
                    key,
                    format!(
                        "invalid duration {text:?}: {e} (write e.g. \"300ms\", \"30s\", \"5m\" or \"1h 30m\")"
                    ),
                );
                default
            }
        }
    }

    /// An http(s) URL. `echo`: whether the value may appear in the message
    /// (not for notifier URLs, which often carry their credential).
    fn http_url(&mut self, key: &Key, text: &str, echo: bool) -> Option<Url> {
        let shown = if echo {
            format!(" {text:?}")
        } else {
            String::new()
        };
        match Url::parse(text.trim()) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Some(u),
            Ok(u) => {
                self.err(
                    key,
                    format!(
                        "URL{shown} must be http:// or https://, not {}://",
                        u.scheme()
                    ),
                );
                None
            }
            Err(e) => {
                self.err(key, format!("invalid URL{shown}: {e}"));
                None
            }
        }
    }

    /// One of a fixed set of words.
    fn choice<T: Copy>(
        &mut self,
        key: &Key,
        raw: Option<&str>,
        options: &[(&str, T)],
        default: T,
    ) -> T {
        let Some(text) = raw else { return default };
        if let Some((_, v)) = options.iter().find(|(name, _)| *name == text.trim()) {
            return *v;
        }
        let names: Vec<_> = options.iter().map(|(n, _)| format!("\"{n}\"")).collect();
        self.err(
            key,
            format!(
                "unknown value {text:?}; expected one of {}",
                names.join(", ")
            ),
        );
        default
    }

    /// A non-empty string.
    fn non_empty(&mut self, key: &Key, raw: Option<String>) -> Option<String> {
        match raw {
            Some(s) if s.trim().is_empty() => {
                self.err(key, "must not be empty");
                None
            }
            other => other,
        }
    }

    /// Resolves a secret given inline as `name`, as `name_file`, or by an
    /// environment variable (the fallback when neither key is set).
    fn secret(
        &mut self,
        parent: &Key,
        name: &str,
        inline: Option<Secret>,
        file: Option<RelativePathBuf>,
        env: Option<(&str, &str)>,
    ) -> Option<Secret> {
        let key = parent.f(name);
        let file_key = parent.f(&format!("{name}_file"));
        match (inline, file) {
            (Some(_), Some(_)) => {
                self.err(
                    &key,
                    format!("both `{name}` and `{name}_file` are set; keep one"),
                );
                None
            }
            (Some(s), None) => {
                if s.is_empty() {
                    self.err(&key, "must not be empty");
                    return None;
                }
                self.inline_secrets.push(key);
                Some(s)
            }
            (None, Some(path)) => self.read_secret_file(&file_key, &path.relative()),
            (None, None) => env.map(|(_, v)| Secret::new(v)),
        }
    }

    /// Reads a secret file, dropping the trailing newline editors add.
    fn read_secret_file(&mut self, key: &Key, path: &Path) -> Option<Secret> {
        match std::fs::read_to_string(path) {
            Ok(text) => {
                let value = text.trim_end_matches(['\n', '\r']);
                if value.is_empty() {
                    self.err(key, format!("{} is empty", path.display()));
                    None
                } else {
                    Some(Secret::new(value))
                }
            }
            Err(e) => {
                self.err(key, format!("cannot read {}: {e}", path.display()));
                None
            }
        }
    }

    /// Reports a key the context does not use (e.g. `auth.token` with
    /// `method = "aksk"`): silently ignoring it would hide a mistake.
    /// A list that must be present and non-empty; `None` (after recording
    /// "missing: {what}" or "empty: {what}") otherwise.
    fn required_list<T>(&mut self, key: &Key, list: Option<Vec<T>>, what: &str) -> Option<Vec<T>> {
        match list {
            None => {
                self.err(key, format!("missing: {what}"));
                None
            }
            Some(list) if list.is_empty() => {
                self.err(key, format!("empty: {what}"));
                None
            }
            Some(list) => Some(list),
        }
    }

    fn unused(&mut self, key: &Key, present: bool, why: &str) {
        if present {
            self.err(key, format!("not used {why}"));
        }
    }

    // ---- sections

    fn api(&mut self, key: &Key, raw: RawApi, sdk: &SdkEnv) -> ApiConfig {
        let region = match raw.region {
            Some(r) if r.trim().is_empty() => {
                self.err(&key.f("region"), "must not be empty");
                "cn-north-4".to_owned()
            }
            Some(r) => r.trim().to_owned(),
            None => "cn-north-4".to_owned(),
        };
        let placeholder = || Url::parse("http://127.0.0.1/").expect("a valid literal URL");
        let endpoint = match &raw.endpoint {
            Some(text) => self
                .http_url(&key.f("endpoint"), text, true)
                .unwrap_or_else(placeholder),
            None => match crate::cloud::region::endpoint_for(&region) {
                Some(e) => Url::parse(e).unwrap_or_else(|_| placeholder()),
                None => {
                    self.err(
                        &key.f("region"),
                        format!(
                            "unknown region {region:?}; check the spelling, or set api.endpoint to the \
                             Workspace endpoint of that region (e.g. \"https://workspace.{region}.myhuaweicloud.com\")"
                        ),
                    );
                    placeholder()
                }
            },
        };
        let timeout = self.duration(
            &key.f("timeout"),
            raw.timeout.as_ref(),
            Duration::from_secs(10),
            Duration::from_millis(1),
        );
        let max_requests_per_minute = match raw.max_requests_per_minute {
            None => 100,
            Some(n) if (1..=100_000).contains(&n) => n as u32,
            Some(n) => {
                self.err(
                    &key.f("max_requests_per_minute"),
                    format!("{n} is out of range: must be between 1 and 100000"),
                );
                100
            }
        };
        let iam_endpoint = match (&raw.iam_endpoint, &sdk.iam_endpoint) {
            (Some(text), _) => self.http_url(&key.f("iam_endpoint"), text, true),
            (None, Some(text)) => match Url::parse(text.trim()) {
                Ok(u) if matches!(u.scheme(), "http" | "https") => Some(u),
                _ => {
                    self.err_sdk(
                        &key.f("iam_endpoint"),
                        "HUAWEICLOUD_SDK_IAM_ENDPOINT",
                        format!("{text:?} is not an http(s) URL"),
                    );
                    None
                }
            },
            (None, None) => Url::parse(&crate::cloud::region::iam_endpoint_for(&region)).ok(),
        }
        .unwrap_or_else(placeholder);
        ApiConfig {
            region,
            endpoint,
            timeout,
            max_requests_per_minute,
            iam_endpoint,
        }
    }

    fn auth(&mut self, key: &Key, raw: RawAuth, sdk: &SdkEnv) -> AuthConfig {
        let method = raw.method.as_deref().map(str::trim);
        let has_aksk_keys = raw.ak.is_some() || raw.sk.is_some() || raw.sk_file.is_some();
        let has_sdk_aksk = sdk.ak.is_some() || sdk.sk.is_some();
        let method = match method {
            Some("aksk") => "aksk",
            Some("token") => "token",
            Some("password") => "password",
            Some("none") => "none",
            Some(other) => {
                self.err(
                    &key.f("method"),
                    format!(
                        "unknown method {other:?}; expected \"aksk\", \"token\", \"password\" or \"none\""
                    ),
                );
                return AuthConfig::None;
            }
            None if has_aksk_keys || has_sdk_aksk => "aksk",
            None => {
                self.err(
                    &key.f("method"),
                    "not set, and no AK/SK found: set auth.method (\"aksk\", \"token\", \"password\" \
                     or \"none\"), or give auth.ak and auth.sk (or HUAWEICLOUD_SDK_AK and HUAWEICLOUD_SDK_SK)",
                );
                return AuthConfig::None;
            }
        };
        let why = format!("by auth.method = {method:?}");

        if method != "aksk" {
            self.unused(&key.f("ak"), raw.ak.is_some(), &why);
            self.unused(&key.f("sk"), raw.sk.is_some(), &why);
            self.unused(&key.f("sk_file"), raw.sk_file.is_some(), &why);
            self.unused(&key.f("security_token"), raw.security_token.is_some(), &why);
            self.unused(
                &key.f("security_token_file"),
                raw.security_token_file.is_some(),
                &why,
            );
        }
        if method != "token" {
            self.unused(&key.f("token"), raw.token.is_some(), &why);
            self.unused(&key.f("token_file"), raw.token_file.is_some(), &why);
        }
        if method != "password" {
            self.unused(&key.f("user"), raw.user.is_some(), &why);
            self.unused(&key.f("password"), raw.password.is_some(), &why);
            self.unused(&key.f("password_file"), raw.password_file.is_some(), &why);
            self.unused(&key.f("domain"), raw.domain.is_some(), &why);
            self.unused(&key.f("project_id"), raw.project_id.is_some(), &why);
        }

        match method {
            "aksk" => {
                let ak_from_sdk = raw.ak.is_none() && sdk.ak.is_some();
                let ak = self.non_empty(&key.f("ak"), raw.ak.or_else(|| sdk.ak.clone()));
                let sk = self.secret(
                    key,
                    "sk",
                    raw.sk,
                    raw.sk_file,
                    sdk.sk.as_deref().map(|v| ("HUAWEICLOUD_SDK_SK", v)),
                );
                // The SDK's temporary token belongs with the SDK's AK: pairing
                // it with an AK from the file would sign with mismatched
                // credentials and fail with a confusing 401.
                let sdk_token = sdk
                    .security_token
                    .as_deref()
                    .filter(|_| ak_from_sdk)
                    .map(|v| ("HUAWEICLOUD_SDK_SECURITY_TOKEN", v));
                let security_token = self.secret(
                    key,
                    "security_token",
                    raw.security_token,
                    raw.security_token_file,
                    sdk_token,
                );
                if ak.is_none() {
                    self.err(&key.f("ak"), "missing: set auth.ak or HUAWEICLOUD_SDK_AK");
                }
                if sk.is_none() && !self.problems.iter().any(|p| p.key.starts_with("auth.sk")) {
                    self.err(
                        &key.f("sk"),
                        "missing: set auth.sk, auth.sk_file or HUAWEICLOUD_SDK_SK",
                    );
                }
                AuthConfig::Aksk(AkSk {
                    ak: ak.unwrap_or_default(),
                    sk: sk.unwrap_or_default(),
                    security_token,
                })
            }
            "token" => {
                let source = match (raw.token, raw.token_file) {
                    (Some(_), Some(_)) => {
                        self.err(
                            &key.f("token"),
                            "both `token` and `token_file` are set; keep one",
                        );
                        None
                    }
                    (Some(t), None) if t.is_empty() => {
                        self.err(&key.f("token"), "must not be empty");
                        None
                    }
                    (Some(t), None) => {
                        self.inline_secrets.push(key.f("token"));
                        Some(TokenSource::Inline(t))
                    }
                    (None, Some(path)) => {
                        // Kept as a path: it is re-read when it changes. Only
                        // check now that it can be read at all.
                        let path = path.relative();
                        match std::fs::File::open(&path) {
                            Ok(_) => Some(TokenSource::File(path)),
                            Err(e) => {
                                self.err(
                                    &key.f("token_file"),
                                    format!("cannot read {}: {e}", path.display()),
                                );
                                None
                            }
                        }
                    }
                    (None, None) => {
                        self.err(
                            &key.f("token"),
                            "missing: set auth.token or auth.token_file",
                        );
                        None
                    }
                };
                AuthConfig::Token(TokenAuth {
                    source: source.unwrap_or(TokenSource::Inline(Secret::default())),
                })
            }
            "password" => {
                let user = self.non_empty(&key.f("user"), raw.user);
                if user.is_none() && !self.problems.iter().any(|p| p.key == "auth.user") {
                    self.err(
                        &key.f("user"),
                        "missing: password auth needs an IAM user name",
                    );
                }
                let password = self.secret(key, "password", raw.password, raw.password_file, None);
                if password.is_none()
                    && !self
                        .problems
                        .iter()
                        .any(|p| p.key.starts_with("auth.password"))
                {
                    self.err(
                        &key.f("password"),
                        "missing: set auth.password or auth.password_file",
                    );
                }
                let domain = self
                    .non_empty(&key.f("domain"), raw.domain)
                    .or_else(|| user.clone())
                    .unwrap_or_default();
                let project_id = self.non_empty(&key.f("project_id"), raw.project_id);
                AuthConfig::Password(PasswordAuth {
                    user: user.unwrap_or_default(),
                    password: password.unwrap_or_default(),
                    domain,
                    project_id,
                })
            }
            _ => AuthConfig::None,
        }
    }

    fn poll(&mut self, key: &Key, raw: RawPoll) -> PollConfig {
        let before = self.problems.len();
        let interval = self.duration(
            &key.f("interval"),
            raw.interval.as_ref(),
            Duration::from_secs(30),
            SECOND,
        );
        let active_interval = self.duration(
            &key.f("active_interval"),
            raw.active_interval.as_ref(),
            Duration::from_secs(5),
            SECOND,
        );
        // Only compare values that parsed: a default standing in for a bad
        // value would produce a second, confusing problem.
        if self.problems.len() == before && active_interval > interval {
            self.err(
                &key.f("active_interval"),
                format!(
                    "{} is longer than poll.interval ({}): active sub-jobs are polled at least as often as idle ones",
                    human(active_interval),
                    human(interval)
                ),
            );
        }
        let stuck_after = self.duration(
            &key.f("stuck_after"),
            raw.stuck_after.as_ref(),
            Duration::from_secs(3600),
            SECOND,
        );
        let max_backoff = self.duration(
            &key.f("max_backoff"),
            raw.max_backoff.as_ref(),
            Duration::from_secs(300),
            SECOND,
        );
        let strategy = self.choice(
            &key.f("strategy"),
            raw.strategy.as_deref(),
            &[
                ("full", PollStrategy::Full),
                ("incremental", PollStrategy::Incremental),
            ],
            PollStrategy::Full,
        );
        let full_scan_every = self.duration(
            &key.f("full_scan_every"),
            raw.full_scan_every.as_ref(),
            Duration::from_secs(600),
            SECOND,
        );
        PollConfig {
            interval,
            active_interval,
            notify_existing: raw.notify_existing.unwrap_or(false),
            stuck_after,
            max_backoff,
            strategy,
            full_scan_every,
        }
    }

    fn delivery(&mut self, key: &Key, raw: RawDelivery) -> DeliveryConfig {
        let max_age = self.duration(
            &key.f("max_age"),
            raw.max_age.as_ref(),
            Duration::from_secs(24 * 3600),
            SECOND,
        );
        let shutdown_grace = self.duration(
            &key.f("shutdown_grace"),
            raw.shutdown_grace.as_ref(),
            Duration::from_secs(10),
            Duration::ZERO,
        );
        let timezone = match raw.timezone.as_deref().map(str::trim) {
            None => jiff::tz::TimeZone::UTC,
            Some(name) => match jiff::tz::TimeZone::get(name) {
                Ok(tz) => tz,
                Err(e) => {
                    self.err(
                        &key.f("timezone"),
                        format!("unknown time zone {name:?} (an IANA name such as \"Asia/Shanghai\" is expected): {e}"),
                    );
                    jiff::tz::TimeZone::UTC
                }
            },
        };
        DeliveryConfig {
            max_age,
            shutdown_grace,
            timezone,
        }
    }

    fn log(&mut self, key: &Key, raw: RawLog) -> LogConfig {
        let level = raw.level.unwrap_or_else(|| "info".to_owned());
        if let Err(message) = check_filter(&level) {
            self.err(&key.f("level"), message);
        }
        let format = self.choice(
            &key.f("format"),
            raw.format.as_deref(),
            &[("text", LogFormat::Text), ("json", LogFormat::Json)],
            LogFormat::Text,
        );
        LogConfig { level, format }
    }

    fn targets(&mut self, key: &Key, raw: Vec<RawTarget>, sdk: &SdkEnv) -> Vec<Target> {
        let mut seen: HashMap<(String, JobType), usize> = HashMap::new();
        let mut out = Vec::new();
        for (i, t) in raw.into_iter().enumerate() {
            let k = key.i(i);
            let name = self.non_empty(&k.f("name"), t.name);
            // A target may leave out its project and take the SDK's.
            let project_id = match t.project_id.or_else(|| sdk.project_id.clone()) {
                None => {
                    self.err(
                        &k.f("project_id"),
                        "missing: set it, or HUAWEICLOUD_SDK_PROJECT_ID",
                    );
                    String::new()
                }
                Some(p) if p.trim().is_empty() => {
                    self.err(&k.f("project_id"), "must not be empty");
                    String::new()
                }
                Some(p) if !is_word(p.trim()) => {
                    // It goes into the request path: no `/`, `?` or spaces.
                    self.err(
                        &k.f("project_id"),
                        format!("{p:?} is not a project id (letters, digits, '-' and '_' only)"),
                    );
                    String::new()
                }
                Some(p) => p.trim().to_owned(),
            };
            let job_types = match self.required_list(
                &k.f("job_types"),
                t.job_types,
                "a target watches at least one job type, e.g. [\"CREATE_SERVER\"]",
            ) {
                Some(list) => self.job_types(&k.f("job_types"), list),
                None => Vec::new(),
            };
            for jt in &job_types {
                if project_id.is_empty() {
                    continue;
                }
                if let Some(first) = seen.insert((project_id.clone(), jt.clone()), i) {
                    let where_ = if first == i {
                        "listed twice here".to_owned()
                    } else {
                        format!("already watched by targets[{first}]")
                    };
                    self.err(
                        &k.f("job_types"),
                        format!(
                            "duplicate target: project {project_id:?}, job type {jt} is {where_}"
                        ),
                    );
                }
            }
            out.push(Target {
                name,
                project_id,
                job_types,
            });
        }
        out
    }

    /// Job types as written; unknown ones are kept (the cloud adds values
    /// before clients learn them) but warned about, as they may be typos.
    fn job_types(&mut self, key: &Key, list: Vec<String>) -> Vec<JobType> {
        let mut out = Vec::new();
        for (i, s) in list.into_iter().enumerate() {
            let s = s.trim().to_owned();
            if s.is_empty() {
                self.err(&key.i(i), "must not be empty");
                continue;
            }
            let jt = JobType::from(s);
            if !jt.is_known() {
                self.warn(format!(
                    "{}: unknown job type {:?} (kept: the cloud may have added it; known: {})",
                    key.i(i).display(),
                    jt.as_str(),
                    JobType::KNOWN
                        .iter()
                        .map(JobType::as_str)
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
            out.push(jt);
        }
        out
    }

    fn notifiers(
        &mut self,
        key: &Key,
        raw: BTreeMap<String, RawNotifier>,
    ) -> BTreeMap<String, Notifier> {
        let mut out = BTreeMap::new();
        for (name, n) in raw {
            let k = key.f(&name);
            if !is_word(&name) {
                self.err(
                    &k,
                    format!("notifier name {name:?} may only use letters, digits, '-' and '_'"),
                );
            }
            if let Some(notifier) = self.notifier(&k, n) {
                out.insert(name, notifier);
            }
        }
        out
    }

    fn notifier(&mut self, key: &Key, n: RawNotifier) -> Option<Notifier> {
        let kinds: Vec<_> = NotifierKind::ALL.iter().map(|k| (k.as_str(), *k)).collect();
        let kind = match n.kind.as_deref().map(str::trim) {
            None => {
                self.err(
                    &key.f("kind"),
                    format!(
                        "missing: one of {}",
                        NotifierKind::ALL
                            .iter()
                            .map(|k| k.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                );
                return None;
            }
            Some(text) => match kinds.iter().find(|(n, _)| *n == text) {
                Some((_, k)) => *k,
                None => {
                    self.err(
                        &key.f("kind"),
                        format!(
                            "unknown notifier kind {text:?}; expected one of {}",
                            NotifierKind::ALL
                                .iter()
                                .map(|k| k.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    );
                    return None;
                }
            },
        };
        let why = format!("by kind {:?}", kind.as_str());

        // Settings the kind does not use are errors, not silently ignored.
        let signed = matches!(
            kind,
            NotifierKind::Webhook | NotifierKind::Feishu | NotifierKind::Dingtalk
        );
        let email = kind == NotifierKind::Email;
        self.unused(&key.f("url"), n.url.is_some() && !kind.is_http(), &why);
        self.unused(&key.f("secret"), n.secret.is_some() && !signed, &why);
        self.unused(
            &key.f("secret_file"),
            n.secret_file.is_some() && !signed,
            &why,
        );
        self.unused(
            &key.f("headers"),
            n.headers.is_some() && kind != NotifierKind::Webhook,
            &why,
        );
        for (field, present) in [
            ("smtp", n.smtp.is_some()),
            ("password", n.password.is_some()),
            ("password_file", n.password_file.is_some()),
            ("from", n.from.is_some()),
            ("to", n.to.is_some()),
            ("subject_template", n.subject_template.is_some()),
            ("starttls", n.starttls.is_some()),
        ] {
            self.unused(&key.f(field), present && !email, &why);
        }
        self.unused(
            &key.f("level"),
            n.level.is_some() && kind != NotifierKind::Log,
            &why,
        );
        // The log kind writes structured fields, not a message to shape.
        self.unused(
            &key.f("template"),
            n.template.is_some() && kind == NotifierKind::Log,
            &why,
        );
        // Email's body is built in (text and HTML parts); only its subject
        // takes a template. Refused rather than silently ignored.
        if n.template.is_some() && kind == NotifierKind::Email {
            self.err(
                &key.f("template"),
                "not used by kind \"email\": its text and HTML parts are built in; use subject_template for the subject",
            );
        }

        // The generic webhook posts the rendering as `application/json`
        // unless the user set another Content-Type, so then it must be JSON.
        let json_body = kind == NotifierKind::Webhook
            && !n.headers.iter().flatten().any(|(h, v)| {
                h.eq_ignore_ascii_case("content-type") && !v.to_ascii_lowercase().contains("json")
            });
        let name = key.segments().last().cloned().unwrap_or_default();
        let template = match n.template {
            Some(t) if !matches!(kind, NotifierKind::Log | NotifierKind::Email) => self.template(
                &key.f("template"),
                &name,
                Markup::of_kind(kind.as_str()),
                json_body,
                t,
            ),
            _ => None,
        };
        let rate_limit = match n.rate_limit {
            Some(text) => match parse_rate_limit(&text) {
                Ok(r) => Some(r),
                Err(message) => {
                    self.err(&key.f("rate_limit"), message);
                    None
                }
            },
            None => kind.default_rate_limit(),
        };
        let max_concurrency = match n.max_concurrency {
            None => kind.default_concurrency(),
            Some(c) if (1..=64).contains(&c) => c as u32,
            Some(c) => {
                self.err(
                    &key.f("max_concurrency"),
                    format!("{c} is out of range: must be between 1 and 64"),
                );
                1
            }
        };
        let timeout = self.duration(
            &key.f("timeout"),
            n.timeout.as_ref(),
            Duration::from_secs(10),
            Duration::from_millis(1),
        );

        let url = if kind.is_http() {
            match &n.url {
                Some(text) => self
                    .http_url(&key.f("url"), text, false)
                    .map(SecretUrl::new),
                None => {
                    self.err(
                        &key.f("url"),
                        format!("missing: kind {:?} sends to a URL", kind.as_str()),
                    );
                    None
                }
            }
        } else {
            None
        };
        let secret = if signed {
            self.secret(key, "secret", n.secret, n.secret_file, None)
        } else {
            None
        };

        let settings = match kind {
            NotifierKind::Webhook => {
                let mut headers = BTreeMap::new();
                for (h, v) in n.headers.unwrap_or_default() {
                    let hk = key.f("headers").f(&h);
                    if reqwest::header::HeaderName::from_bytes(h.as_bytes()).is_err() {
                        self.err(&hk, format!("{h:?} is not a valid HTTP header name"));
                    } else if reqwest::header::HeaderValue::from_str(&v).is_err() {
                        // The value is not shown: headers often carry credentials.
                        self.err(&hk, "the value is not a valid HTTP header value");
                    } else {
                        if looks_like_credential(&h) {
                            self.inline_secrets.push(hk);
                        }
                        headers.insert(h, Secret::new(v));
                    }
                }
                NotifierSettings::Webhook(WebhookSettings {
                    url: url?,
                    secret,
                    headers,
                })
            }
            NotifierKind::Slack => NotifierSettings::Slack(ChatSettings { url: url? }),
            NotifierKind::Discord => NotifierSettings::Discord(ChatSettings { url: url? }),
            NotifierKind::Teams => NotifierSettings::Teams(ChatSettings { url: url? }),
            NotifierKind::Wecom => NotifierSettings::Wecom(ChatSettings { url: url? }),
            NotifierKind::Feishu => {
                NotifierSettings::Feishu(SignedChatSettings { url: url?, secret })
            }
            NotifierKind::Dingtalk => {
                NotifierSettings::Dingtalk(SignedChatSettings { url: url?, secret })
            }
            NotifierKind::Email => NotifierSettings::Email(self.email(
                key,
                n.smtp,
                n.starttls,
                n.password,
                n.password_file,
                n.from,
                n.to,
                n.subject_template,
            )?),
            NotifierKind::Log => {
                let level = self.choice(
                    &key.f("level"),
                    n.level.as_deref(),
                    &[
                        ("trace", Some(LogLevel::Trace)),
                        ("debug", Some(LogLevel::Debug)),
                        ("info", Some(LogLevel::Info)),
                        ("warn", Some(LogLevel::Warn)),
                        ("error", Some(LogLevel::Error)),
                    ],
                    None,
                );
                NotifierSettings::Log(LogNotifierSettings { level })
            }
        };
        Some(Notifier {
            settings,
            template,
            rate_limit,
            max_concurrency,
            timeout,
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn email(
        &mut self,
        key: &Key,
        smtp: Option<String>,
        starttls: Option<bool>,
        password: Option<Secret>,
        password_file: Option<RelativePathBuf>,
        from: Option<String>,
        to: Option<Vec<String>>,
        subject_template: Option<String>,
    ) -> Option<EmailSettings> {
        let server = match smtp {
            None => {
                self.err(
                    &key.f("smtp"),
                    "missing: e.g. \"smtps://user@smtp.example.com:465\" or \"smtp://smtp.example.com:587\"",
                );
                None
            }
            Some(text) => self.smtp_server(&key.f("smtp"), &text, starttls.unwrap_or(true)),
        };
        let password = self.secret(key, "password", password, password_file, None);
        if let Some(server) = &server {
            match (&server.user, &password) {
                (Some(user), None) => self.err(
                    &key.f("password"),
                    format!(
                        "missing: the smtp URL names user {user:?}; set password or password_file"
                    ),
                ),
                (None, Some(_)) => self.err(
                    &key.f("password"),
                    "set, but the smtp URL names no user (write smtps://USER@host)",
                ),
                _ => {}
            }
        }
        let from = match from {
            None => {
                self.err(
                    &key.f("from"),
                    "missing: the sender address, e.g. \"jobwatch@example.com\"",
                );
                None
            }
            Some(f) => self.mailbox(&key.f("from"), f),
        };
        let to = match to {
            None => {
                self.err(&key.f("to"), "missing: a list of recipient addresses");
                Vec::new()
            }
            Some(list) if list.is_empty() => {
                self.err(&key.f("to"), "empty: give at least one recipient address");
                Vec::new()
            }
            Some(list) => list
                .into_iter()
                .enumerate()
                .filter_map(|(i, a)| self.mailbox(&key.f("to").i(i), a))
                .collect(),
        };
        let name = key.segments().last().cloned().unwrap_or_default();
        let subject_template = subject_template.and_then(|t| {
            self.template(&key.f("subject_template"), &name, Markup::Plain, false, t)
        });
        Some(EmailSettings {
            smtp: server?,
            password,
            from: from?,
            to,
            subject_template,
        })
    }

    fn smtp_server(&mut self, key: &Key, text: &str, starttls: bool) -> Option<SmtpServer> {
        let url = match Url::parse(text.trim()) {
            Ok(u) => u,
            Err(e) => {
                // Not echoed: a malformed URL may still hold a password.
                self.err(key, format!("invalid URL: {e}"));
                return None;
            }
        };
        if url.password().is_some() {
            self.err(
                key,
                "the URL carries a password; remove it and set password or password_file instead",
            );
            return None;
        }
        let (tls, default_port) = match url.scheme() {
            "smtps" => (SmtpTls::Implicit, 465),
            "smtp" if starttls => (SmtpTls::Starttls, 587),
            "smtp" => (SmtpTls::None, 25),
            other => {
                self.err(
                    key,
                    format!("scheme must be smtp:// (STARTTLS) or smtps:// (TLS), not {other}://"),
                );
                return None;
            }
        };
        let Some(host) = url.host_str().filter(|h| !h.is_empty()) else {
            self.err(key, "the URL names no host");
            return None;
        };
        // url keeps IPv6 hosts bracketed; the mail client wants them bare.
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        if tls == SmtpTls::None && !is_loopback(&host) {
            self.err(
                key,
                format!(
                    "plain smtp:// with starttls = false would send the password and mail in clear text to {host:?}; \
                     use STARTTLS (the default) or smtps://, or a loopback relay"
                ),
            );
        }
        if url.path() != "" && url.path() != "/" {
            self.err(key, "the URL must not have a path");
        }
        let user = match url.username() {
            "" => None,
            u => Some(
                percent_encoding::percent_decode_str(u)
                    .decode_utf8_lossy()
                    .into_owned(),
            ),
        };
        Some(SmtpServer {
            host,
            port: url.port().unwrap_or(default_port),
            tls,
            user,
        })
    }

    fn mailbox(&mut self, key: &Key, text: String) -> Option<String> {
        match text.trim().parse::<lettre::message::Mailbox>() {
            Ok(_) => Some(text.trim().to_owned()),
            Err(e) => {
                self.err(key, format!("{text:?} is not an email address: {e}"));
                None
            }
        }
    }

    /// A template is compiled and rendered against the samples now, so a
    /// syntax error, an undefined name or an unknown filter surfaces at
    /// `check` rather than at the first delivery. The wiring compiles it
    /// again from the source kept here.
    fn template(
        &mut self,
        key: &Key,
        name: &str,
        markup: Markup,
        json: bool,
        source: String,
    ) -> Option<String> {
        let template = match Template::compile(name, &source, &self.template_settings, markup) {
            Ok(t) => t,
            Err(e) => {
                self.err(key, format!("invalid template: {e}"));
                return None;
            }
        };
        match template.check(json) {
            Ok(()) => Some(source),
            Err(message) => {
                self.err(key, message);
                None
            }
        }
    }

    fn routes(
        &mut self,
        key: &Key,
        raw: Vec<RawRoute>,
        notifiers: &BTreeMap<String, Notifier>,
    ) -> Vec<Route> {
        // Names are checked against what was written, so a notifier that is
        // itself invalid does not also produce "unknown notifier" errors.
        let written: BTreeSet<String> = self
            .root
            .as_ref()
            .and_then(|r| r.as_dict()?.get("notifiers")?.as_dict().cloned())
            .map(|d| d.keys().cloned().collect())
            .unwrap_or_else(|| notifiers.keys().cloned().collect());
        let mut out = Vec::new();
        for (i, r) in raw.into_iter().enumerate() {
            let k = key.i(i);
            let job_types = self.job_types(&k.f("job_types"), r.job_types.unwrap_or_default());
            let to = match r.to {
                None => Vec::new(),
                Some(list) if list.is_empty() => {
                    self.err(
                        &k.f("to"),
                        "empty: it would match nothing; leave it out to match every status",
                    );
                    Vec::new()
                }
                Some(list) => list
                    .into_iter()
                    .enumerate()
                    .filter_map(|(j, s)| {
                        let s = s.trim().to_owned();
                        if s.is_empty() {
                            self.err(&k.f("to").i(j), "must not be empty");
                            return None;
                        }
                        let status = Status::from(s);
                        if !status.is_known() {
                            self.warn(format!(
                                "{}: unknown status {:?} (kept: the cloud may have added it; known: {})",
                                k.f("to").i(j).display(),
                                status.as_str(),
                                Status::KNOWN.iter().map(Status::as_str).collect::<Vec<_>>().join(", ")
                            ));
                        }
                        Some(status)
                    })
                    .collect(),
            };
            let kinds = match r.kinds {
                None => vec![EventKind::Appeared, EventKind::Changed, EventKind::Stuck],
                Some(list) if list.is_empty() => {
                    self.err(
                        &k.f("kinds"),
                        "empty: it would match nothing; leave it out for appeared, changed, stuck",
                    );
                    Vec::new()
                }
                Some(list) => {
                    let mut kinds = Vec::new();
                    for (j, s) in list.iter().enumerate() {
                        match EventKind::ALL.iter().find(|e| e.as_str() == s.trim()) {
                            Some(e) if !kinds.contains(e) => kinds.push(*e),
                            Some(_) => {}
                            None => self.err(
                                &k.f("kinds").i(j),
                                format!(
                                    "unknown event kind {s:?}; expected one of \"appeared\", \"changed\", \"stuck\", \"vanished\""
                                ),
                            ),
                        }
                    }
                    kinds
                }
            };
            let notify = match self.required_list(
                &k.f("notify"),
                r.notify,
                "a route must notify at least one notifier",
            ) {
                None => Vec::new(),
                Some(list) => {
                    for name in &list {
                        if !written.contains(name) {
                            let known = if written.is_empty() {
                                "no notifiers are defined".to_owned()
                            } else {
                                format!(
                                    "defined: {}",
                                    written.iter().cloned().collect::<Vec<_>>().join(", ")
                                )
                            };
                            self.err(
                                &k.f("notify"),
                                format!("unknown notifier {name:?}; {known}"),
                            );
                        }
                    }
                    let mut unique = Vec::new();
                    for name in list {
                        if !unique.contains(&name) {
                            unique.push(name);
                        }
                    }
                    unique
                }
            };
            let group_window = r.group_window.as_ref().map(|w| {
                self.duration(
                    &k.f("group_window"),
                    Some(w),
                    Duration::ZERO,
                    Duration::from_millis(1),
                )
            });
            let group_by = self.choice(
                &k.f("group_by"),
                r.group_by.as_deref(),
                &[("route", GroupBy::Route), ("job_id", GroupBy::JobId)],
                GroupBy::Route,
            );
            out.push(Route {
                job_types,
                to,
                kinds,
                notify,
                group_window,
                group_by,
            });
        }
        out
    }

    fn heartbeat(&mut self, key: &Key, raw: RawHeartbeat) -> Option<Heartbeat> {
        let every = self.duration(
            &key.f("every"),
            raw.every.as_ref(),
            Duration::from_secs(60),
            SECOND,
        );
        let url = match raw.url {
            None => {
                self.err(
                    &key.f("url"),
                    "missing: the URL to GET after healthy cycles",
                );
                None
            }
            Some(text) => self.http_url(&key.f("url"), &text, false),
        };
        Some(Heartbeat {
            url: SecretUrl::new(url?),
            every,
        })
    }

    fn server(&mut self, key: &Key, raw: RawServer) -> Option<ServerConfig> {
        let Some(text) = raw.listen else {
            self.err(
                &key.f("listen"),
                "missing: an address such as \"127.0.0.1:9464\" (leave out [server] to turn it off)",
            );
            return None;
        };
        match text.trim().parse::<SocketAddr>() {
            Ok(listen) => Some(ServerConfig { listen }),
            Err(e) => {
                self.err(
                    &key.f("listen"),
                    format!(
                        "{text:?} is not an IP address and port such as \"127.0.0.1:9464\": {e}"
                    ),
                );
                None
            }
        }
    }

    /// Warnings that look at the config as a whole.
    fn overall_warnings(&mut self, config: &Config) {
        if matches!(config.auth, AuthConfig::None) {
            self.warn(
                "auth.method = \"none\": requests are sent unauthenticated (fine for the simulator or an \
                 authenticating proxy; the real API will answer 401)",
            );
        }
        if config.targets.is_empty() {
            self.warn("no [[targets]]: nothing will be watched");
        }
        if config.routes.is_empty() {
            self.warn("no [[routes]]: events are detected and stored but sent nowhere");
        }
        let used: BTreeSet<&str> = config
            .routes
            .iter()
            .flat_map(|r| r.notify.iter().map(String::as_str))
            .collect();
        for name in config.notifiers.keys() {
            if !used.contains(name.as_str()) {
                self.warn(format!(
                    "notifiers.{name}: no route uses it (notify-test can still reach it)"
                ));
            }
        }
        self.budget_warning(config);
        self.permission_warning();
    }

    /// SPEC §1: API calls are the scarce resource. Each target scans at
    /// least one page per cycle, so in the worst case (every target active)
    /// the targets need `pairs × 60 / active_interval` requests a minute.
    fn budget_warning(&mut self, config: &Config) {
        let pairs = config.watch_pairs().count();
        if pairs == 0 {
            return;
        }
        let budget = f64::from(config.api.max_requests_per_minute);
        let per_minute = |every: Duration| pairs as f64 * 60.0 / every.as_secs_f64();
        let active = per_minute(config.poll.active_interval);
        let idle = per_minute(config.poll.interval);
        // The interval at which the pairs fit the budget, rounded up.
        let fits = |_: ()| (pairs as f64 * 60.0 / budget).ceil() as u64;
        if idle > budget {
            self.warn(format!(
                "{pairs} targets (project × job type) polled every {} even when idle need {idle:.0} API requests/minute \
                 (at one page per scan), over api.max_requests_per_minute = {}: every target will poll slower than \
                 configured; raise poll.interval to at least {}s, watch fewer job types, or raise the budget if your \
                 account allows",
                human(config.poll.interval),
                config.api.max_requests_per_minute,
                fits(())
            ));
        } else if active > budget {
            self.warn(format!(
                "{pairs} targets (project × job type) polled every {} while active need up to {active:.0} API \
                 requests/minute (at one page per scan), over api.max_requests_per_minute = {}: when many are \
                 active they will poll slower than configured; raise poll.active_interval to at least {}s to fit",
                human(config.poll.active_interval),
                config.api.max_requests_per_minute,
                fits(())
            ));
        }
    }

    /// Inline secrets in a file others can read deserve a warning: the
    /// file is usually in /etc and world-readable by default.
    fn permission_warning(&mut self) {
        let mut by_file: BTreeMap<PathBuf, Vec<String>> = BTreeMap::new();
        for key in &self.inline_secrets {
            if let Some(path) = self.file_of(key) {
                by_file.entry(path).or_default().push(key.display());
            }
        }
        for (path, keys) in by_file {
            if let Some(mode) = group_or_other_readable(&path) {
                self.warnings.push(format!(
                    "{} holds inline secrets ({}) and is readable by other users (mode {mode:o}): \
                     chmod 600 it, or move the secrets to *_file settings or the environment",
                    path.display(),
                    keys.join(", ")
                ));
            }
        }
    }

    /// The file the value at `key` was read from, if any.
    fn file_of(&self, key: &Key) -> Option<PathBuf> {
        let (figment, root) = (self.figment?, self.root.as_ref()?);
        let mut cur = root;
        for seg in &key.0 {
            cur = match (seg, cur) {
                (Seg::Field(name), Value::Dict(_, d)) => d.get(name)?,
                (Seg::Index(i), Value::Array(_, a)) => a.get(*i)?,
                _ => return None,
            };
        }
        let md = figment.get_metadata(cur.tag())?;
        md.source.as_ref()?.file_path().map(Path::to_path_buf)
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

/// Whether a header's name suggests its value is a credential. All header
/// values are redacted; only these count as inline secrets for the
/// file-permission warning, so `X-Team = "platform"` does not trigger it.
fn looks_like_credential(header: &str) -> bool {
    let h = header.to_ascii_lowercase();
    [
        "auth",
        "token",
        "key",
        "secret",
        "signature",
        "cookie",
        "password",
    ]
    .iter()
    .any(|w| h.contains(w))
}

/// Letters, digits, `-` and `_`, at least one.
fn is_word(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Checks a log filter. `EnvFilter` accepts a bare word as a target name
/// (so `level = "verbose"` would silently mean "trace for target
/// verbose"); here a bare word must be a level, and targets are written
/// `target=level`.
fn check_filter(text: &str) -> Result<(), String> {
    const LEVELS: &[&str] = &["off", "error", "warn", "info", "debug", "trace"];
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        if !part.contains('=')
            && !part.contains('[')
            && !LEVELS.contains(&part.to_ascii_lowercase().as_str())
        {
            return Err(format!(
                "{part:?} is not a level; use one of {} or a directive such as \"jobwatch=debug\"",
                LEVELS.join(", ")
            ));
        }
    }
    tracing_subscriber::EnvFilter::try_new(text)
        .map(|_| ())
        .map_err(|e| format!("invalid log filter {text:?}: {e}"))
}

/// Parses `"20/min"`, `"1/s"`, `"5/2s"`, `"100/h"`.
fn parse_rate_limit(text: &str) -> Result<RateLimit, String> {
    let bad = |why: &str| {
        format!("invalid rate limit {text:?}: {why} (write e.g. \"20/min\", \"1/s\" or \"5/2s\")")
    };
    let (count, per) = text.trim().split_once('/').ok_or_else(|| bad("no '/'"))?;
    let count: u32 = count
        .trim()
        .parse()
        .map_err(|_| bad("the count is not a whole number"))?;
    if count == 0 {
        return Err(bad("the count must be at least 1"));
    }
    let per = match per.trim() {
        "s" | "sec" | "second" => Duration::from_secs(1),
        "m" | "min" | "minute" => Duration::from_secs(60),
        "h" | "hour" => Duration::from_secs(3600),
        other => SpanParser::new()
            .parse_unsigned_duration(other)
            .map_err(|_| bad("unknown period"))?,
    };
    if per.is_zero() {
        return Err(bad("the period must be longer than zero"));
    }
    Ok(RateLimit::new(count, per))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limits_parse() {
        assert_eq!(
            parse_rate_limit("20/min").unwrap(),
            RateLimit::new(20, Duration::from_secs(60))
        );
        assert_eq!(
            parse_rate_limit("1/s").unwrap(),
            RateLimit::new(1, Duration::from_secs(1))
        );
        assert_eq!(
            parse_rate_limit("5/2s").unwrap(),
            RateLimit::new(5, Duration::from_secs(2))
        );
        assert!(parse_rate_limit("0/s").is_err());
        assert!(parse_rate_limit("fast").is_err());
        assert_eq!(
            RateLimit::new(20, Duration::from_secs(60)).to_string(),
            "20/min"
        );
        assert_eq!(
            RateLimit::new(5, Duration::from_secs(2)).to_string(),
            "5/2s"
        );
    }

    #[test]
    fn log_filters() {
        assert!(check_filter("info").is_ok());
        assert!(check_filter("warn,jobwatch=debug").is_ok());
        assert!(check_filter("verbose").is_err());
        assert!(check_filter("jobwatch=loud").is_err());
    }

    #[test]
    fn paths_display_with_indices() {
        assert_eq!(
            display_path(["routes", "0", "notify"].into_iter()),
            "routes[0].notify"
        );
        assert_eq!(
            Key::root().f("routes").i(2).f("to").i(0).display(),
            "routes[2].to[0]"
        );
    }
}
