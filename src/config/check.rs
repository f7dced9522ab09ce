//! The checking toolkit every section and every notifier kind validates
//! with: problems and warnings keyed by [`KeyPath`], where a value came
//! from (figment's metadata), and the checks values share (durations, URLs,
//! choices, secrets given inline, as `NAME_file` or by environment).
//!
//! It knows nothing of the sections themselves: `validate` and the kinds in
//! `notify` call it, never the other way round.

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::value::Value;
use figment::value::magic::RelativePathBuf;
use figment::{Figment, Metadata, Profile};
use jiff::fmt::friendly::SpanParser;
use jiff::{SignedDuration, SpanRelativeTo};
use url::Url;

use super::dur::human;
use super::env::METADATA_NAME;
use super::key::{KeyPath, Seg, is_secret_leaf};
use super::raw::RawDuration;
use crate::secret::Secret;

/// A duration as written: `"300ms"`, `"30s"`, `"1h 30m"`, and days or
/// weeks (`"7d"`, `"2w"`), counted as 24 hours and 7 such days.
pub fn parse_duration(text: &str) -> Result<Duration, jiff::Error> {
    let parser = SpanParser::new();
    match parser.parse_unsigned_duration(text) {
        Ok(d) => Ok(d),
        Err(e) => {
            let Ok(span) = parser.parse_span(text) else {
                return Err(e);
            };
            let signed: SignedDuration = span.to_duration(SpanRelativeTo::days_are_24_hours())?;
            Duration::try_from(signed).map_err(|_| e)
        }
    }
}

/// One thing wrong with the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The key path, e.g. `routes[0].notify`; empty for the file as a whole.
    pub key: String,
    pub message: String,
    /// Where the value came from, e.g. `in /etc/jobwatch/jobwatch.toml` or
    /// `from env JOBWATCH_API__TIMEOUT`, when known.
    pub origin: Option<String>,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.key.is_empty() {
            write!(f, "{}: ", self.key)?;
        }
        f.write_str(&self.message)?;
        if let Some(origin) = &self.origin {
            write!(f, " ({origin})")?;
        }
        Ok(())
    }
}

/// A configuration error: every problem found, each naming its key and,
/// where known, its origin. `cli::exit_code` maps it to exit code 2.
#[derive(Debug, Clone, thiserror::Error)]
pub struct ConfigError {
    pub problems: Vec<Problem>,
}

impl ConfigError {
    /// A single problem with a key (may be empty) and no known origin.
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
        ConfigError {
            problems: vec![Problem {
                key: key.into(),
                message: message.into(),
                origin: None,
            }],
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.problems.as_slice() {
            // A problem with no key is about the file as a whole (missing,
            // unreadable) and says so itself.
            [one] if one.key.is_empty() => write!(f, "{one}"),
            [one] => write!(f, "invalid configuration: {one}"),
            many => {
                write!(f, "invalid configuration, {} problems:", many.len())?;
                for p in many {
                    write!(f, "\n  {p}")?;
                }
                Ok(())
            }
        }
    }
}

/// Turns figment's extraction errors (unknown keys, wrong types) into
/// problems. serde stops at the first such error, so there is one here;
/// value-level problems are all collected later by the validator.
pub fn figment_error(f: &Figment, error: figment::Error) -> ConfigError {
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
                // figment's words echo the value: not for a secret.
                figment::error::Kind::InvalidType(_, expected)
                    if path.last().is_some_and(|leaf| is_secret_leaf(leaf)) =>
                {
                    format!("expected {expected}; the value is not shown (a secret; quote it)")
                }
                _ if path.last().is_some_and(|leaf| is_secret_leaf(leaf)) => {
                    "invalid; the value is not shown (a secret)".to_owned()
                }
                kind => kind.to_string(),
            };
            let origin = e.metadata.as_ref().and_then(|md| {
                let profile = e.profile.clone().unwrap_or_else(|| f.profile().clone());
                origin_of(md, &profile, &path)
            });
            Problem {
                key: KeyPath::from_figment(&path).to_string(),
                message,
                origin,
            }
        })
        .collect();
    ConfigError { problems }
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

/// ` (did you mean "FAILED"?)` when one of `known` is close to `written`
/// (at most two edits, case aside, and not more edits than half its
/// length), else nothing: the tail of an "unknown …" message.
pub fn did_you_mean<'k>(written: &str, known: impl IntoIterator<Item = &'k str>) -> String {
    match closest(written, known) {
        Some(best) => format!(" (did you mean {best:?}?)"),
        None => String::new(),
    }
}

/// The one of `known` nearest to `written`, if it is near enough to be
/// what was meant (see [`did_you_mean`]).
pub fn closest<'k>(written: &str, known: impl IntoIterator<Item = &'k str>) -> Option<&'k str> {
    let lower = written.to_lowercase();
    known
        .into_iter()
        .filter(|k| *k != written)
        .map(|k| (strsim::damerau_levenshtein(&lower, &k.to_lowercase()), k))
        .filter(|(d, k)| *d <= 2 && *d * 2 <= k.chars().count().max(written.chars().count()))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// Letters, digits, `-` and `_`, at least one.
pub fn is_word(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Collects problems and warnings while a configuration is checked.
///
/// Checks go on after a problem by substituting a default, so one run
/// reports everything; the substitutes never escape because any problem
/// turns the result into an error. Whether a key already has a problem is
/// asked of [`Checker::has_problem`], so a check can avoid a second,
/// derived complaint about the same value.
pub struct Checker<'a> {
    figment: Option<&'a Figment>,
    /// The merged value tree, for origins and the names actually written.
    root: Option<Value>,
    problems: Vec<Problem>,
    /// The keys of `problems`, for [`Checker::has_problem`].
    flagged: BTreeSet<KeyPath>,
    warnings: Vec<String>,
    /// Keys holding secrets written inline, for the file-permission warning.
    inline_secrets: Vec<KeyPath>,
}

impl<'a> Checker<'a> {
    pub fn new(figment: Option<&'a Figment>) -> Checker<'a> {
        Checker {
            figment,
            root: figment.and_then(|f| f.find_value("").ok()),
            problems: Vec::new(),
            flagged: BTreeSet::new(),
            warnings: Vec::new(),
            inline_secrets: Vec::new(),
        }
    }

    /// The value at `key`, or its nearest present ancestor, and how many
    /// segments of `key` were found.
    fn walk(&self, key: &KeyPath) -> Option<(&Value, usize)> {
        let mut cur = self.root.as_ref()?;
        let mut depth = 0;
        for seg in key.segments() {
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
        Some((cur, depth))
    }

    /// Where the value at `key` (or its nearest present ancestor) came from.
    fn origin(&self, key: &KeyPath) -> Option<String> {
        let (value, depth) = self.walk(key)?;
        if depth == 0 {
            return None;
        }
        let md = self.figment?.get_metadata(value.tag())?;
        origin_of(md, &Profile::Default, &key.names()[..depth])
    }

    /// The file the value at `key` was read from, if any.
    pub fn file_of(&self, key: &KeyPath) -> Option<PathBuf> {
        let (value, depth) = self.walk(key)?;
        if depth < key.segments().len() {
            return None;
        }
        let md = self.figment?.get_metadata(value.tag())?;
        md.source.as_ref()?.file_path().map(Path::to_path_buf)
    }

    /// The keys written in the table at `key` (file and environment
    /// merged), when the checker has the value tree.
    pub fn written_keys(&self, key: &KeyPath) -> Option<BTreeSet<String>> {
        match self.walk(key)? {
            (Value::Dict(_, d), depth) if depth == key.segments().len() => {
                Some(d.keys().cloned().collect())
            }
            _ => None,
        }
    }

    pub fn err(&mut self, key: &KeyPath, message: impl Into<String>) {
        let origin = self.origin(key);
        self.push(key, message.into(), origin);
    }

    /// A problem with a value from an environment variable the config
    /// falls back to (e.g. one of the Huawei Cloud SDK's).
    pub fn err_from_env(&mut self, key: &KeyPath, var: &str, message: impl Into<String>) {
        self.push(key, message.into(), Some(format!("from env {var}")));
    }

    fn push(&mut self, key: &KeyPath, message: String, origin: Option<String>) {
        self.flagged.insert(key.clone());
        self.problems.push(Problem {
            key: key.to_string(),
            message,
            origin,
        });
    }

    /// Whether a problem was already reported at `key`.
    pub fn has_problem(&self, key: &KeyPath) -> bool {
        self.flagged.contains(key)
    }

    pub fn warn(&mut self, message: impl Into<String>) {
        self.warnings.push(message.into());
    }

    /// Records that `key` holds a secret written inline.
    pub fn inline_secret(&mut self, key: KeyPath) {
        self.inline_secrets.push(key);
    }

    pub fn inline_secrets(&self) -> &[KeyPath] {
        &self.inline_secrets
    }

    /// `Err` with every problem found so far, if there is one.
    pub fn no_problems(&mut self) -> Result<(), ConfigError> {
        if self.problems.is_empty() {
            return Ok(());
        }
        Err(ConfigError {
            problems: std::mem::take(&mut self.problems),
        })
    }

    pub fn into_warnings(self) -> Vec<String> {
        self.warnings
    }

    // ---- value checks: each reports its own problem and returns a
    // ---- placeholder so validation can go on.

    pub fn duration(
        &mut self,
        key: &KeyPath,
        raw: Option<&RawDuration>,
        default: Duration,
        min: Duration,
    ) -> Duration {
        let Some(RawDuration(text)) = raw else {
            return default;
        };
        match parse_duration(text.trim()) {
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
    pub fn http_url(&mut self, key: &KeyPath, text: &str, echo: bool) -> Option<Url> {
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
    pub fn choice<T: Copy>(
        &mut self,
        key: &KeyPath,
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
    pub fn non_empty(&mut self, key: &KeyPath, raw: Option<String>) -> Option<String> {
        match raw {
            Some(s) if s.trim().is_empty() => {
                self.err(key, "must not be empty");
                None
            }
            other => other,
        }
    }

    /// A list that must be present and non-empty; `None` (after recording
    /// "missing: {what}" or "empty: {what}") otherwise.
    pub fn required_list<T>(
        &mut self,
        key: &KeyPath,
        list: Option<Vec<T>>,
        what: &str,
    ) -> Option<Vec<T>> {
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

    /// Reports a key the context does not use (e.g. `auth.token` with
    /// `method = "aksk"`): silently ignoring it would hide a mistake.
    pub fn unused(&mut self, key: &KeyPath, present: bool, why: &str) {
        if present {
            self.err(key, format!("not used {why}"));
        }
    }

    /// Resolves a secret given inline as `name`, as `name_file`, or by an
    /// environment variable (`env`: its name and value, the fallback when
    /// neither key is set).
    pub fn secret(
        &mut self,
        parent: &KeyPath,
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
                self.inline_secret(key);
                Some(s)
            }
            (None, Some(path)) => match secret_file_path(&path) {
                Ok(path) => self.read_secret_file(&file_key, &path),
                Err(e) => {
                    self.err(&file_key, e);
                    None
                }
            },
            (None, None) => env.map(|(_, v)| Secret::new(v)),
        }
    }

    /// Whether [`Checker::secret`] reported a problem with `name` or
    /// `name_file` under `parent`.
    pub fn has_secret_problem(&self, parent: &KeyPath, name: &str) -> bool {
        self.has_problem(&parent.f(name)) || self.has_problem(&parent.f(&format!("{name}_file")))
    }

    /// Reads a secret file, dropping the trailing newline editors add.
    fn read_secret_file(&mut self, key: &KeyPath, path: &Path) -> Option<Secret> {
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
}

/// Where a `*_file` key points: a path, relative to the config file; or
/// `credential:NAME`, a systemd credential (`LoadCredential=` in the
/// unit), read from `$CREDENTIALS_DIRECTORY`, so a secret need not sit in a
/// file the service's dynamic user can read.
pub fn secret_file_path(path: &RelativePathBuf) -> Result<PathBuf, String> {
    let Some(name) = path
        .original()
        .to_str()
        .and_then(|p| p.strip_prefix("credential:"))
    else {
        return Ok(path.relative());
    };
    if name.is_empty() || name.contains('/') || name == "." || name == ".." {
        return Err(format!(
            "credential:{name} is not a credential name (a file name, as in LoadCredential=NAME:PATH)"
        ));
    }
    match std::env::var_os("CREDENTIALS_DIRECTORY") {
        Some(dir) => Ok(PathBuf::from(dir).join(name)),
        None => Err(format!(
            "credential:{name} needs systemd's credentials: CREDENTIALS_DIRECTORY is not set (LoadCredential={name}:PATH in the unit)"
        )),
    }
}
