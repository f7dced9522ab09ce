//! The notifier kinds, registered in one place, and what every
//! `[notifiers.NAME]` table has in common: `kind`, `template`, `rate_limit`,
//! `max_concurrency` and `timeout`.
//!
//! A kind is a settings type in its own file (`notify/<kind>.rs`) that
//! implements [`Kind`]: its name, the keys of the table it reads, its
//! properties (markup, default rate and concurrency, what `template`
//! means), how it checks its table and how it builds its notifier.
//! Adding a kind is that file plus one line in the `register!` call below.

use std::time::Duration;

use jiff::tz::TimeZone;
use serde::Serialize;

use super::email::EmailError;
use super::template::{Markup, Template, TemplateSettings};
use super::{Notifier, dingtalk, discord, email, feishu, log, slack, teams, webhook, wecom};
use crate::config::check::Checker;
use crate::config::dur;
use crate::config::key::KeyPath;
use crate::config::raw::RawNotifier;
use crate::ratelimit::RateLimit;
use crate::secret::{Secret, SecretUrl};

/// What `template` means for a kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Templating {
    /// It replaces the built-in text; printed values are escaped for the
    /// kind's [`Kind::MARKUP`].
    Body,
    /// The kind has no text to shape (the log kind writes fields).
    NotUsed,
    /// Refused, with this message.
    Refused(&'static str),
}

/// A notifier kind, implemented by its settings type.
pub trait Kind: Sized + Into<NotifierSettings> {
    /// The value of `kind`.
    const NAME: &'static str;
    /// The keys of the table it reads besides the common ones; any other
    /// kind's key set here is a problem ("not used by kind …").
    const KEYS: &'static [&'static str];
    /// How values a template prints are escaped.
    const MARKUP: Markup = Markup::Plain;
    const TEMPLATE: Templating = Templating::Body;
    /// The receiver's documented limit, used when `rate_limit` is absent.
    const DEFAULT_RATE: Option<RateLimit> = None;
    /// Deliveries at once when `max_concurrency` is absent: one keeps chat
    /// messages in order.
    const DEFAULT_CONCURRENCY: u32 = 1;

    /// Whether the samples a template renders must be JSON (because the
    /// kind sends the rendering as `application/json`).
    fn template_is_json(_raw: &RawNotifier) -> bool {
        false
    }

    /// Checks the kind's own keys of `raw` (the table at `key`), reporting
    /// every problem to `ck`; `None` when one is fatal.
    fn check(
        ck: &mut Checker<'_>,
        key: &KeyPath,
        raw: RawNotifier,
        cx: &CheckContext<'_>,
    ) -> Option<Self>;

    /// The running notifier.
    fn build(&self, cx: BuildContext<'_>) -> Result<Notifier, BuildError>;
}

/// What a kind's check may need besides its table.
pub struct CheckContext<'a> {
    /// The notifier's name.
    pub name: &'a str,
    /// What templates render with.
    pub templates: &'a TemplateSettings,
}

/// What a kind's build may need besides its settings.
pub struct BuildContext<'a> {
    pub name: &'a str,
    /// Bounds one delivery attempt.
    pub timeout: Duration,
    /// `delivery.timezone`: times in messages.
    pub tz: &'a TimeZone,
    /// The compiled `template`, if any.
    pub template: Option<Template>,
}

/// A notifier that could not be built from its (validated) settings.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Http(#[from] reqwest::Error),
    #[error(transparent)]
    Email(#[from] EmailError),
}

/// A kind as data, for dispatching on the `kind` written.
#[derive(Debug, Clone, Copy)]
pub struct KindInfo {
    pub name: &'static str,
    pub keys: &'static [&'static str],
    pub markup: Markup,
    pub template: Templating,
    pub default_rate: Option<RateLimit>,
    pub default_concurrency: u32,
    template_is_json: fn(&RawNotifier) -> bool,
    check:
        fn(&mut Checker<'_>, &KeyPath, RawNotifier, &CheckContext<'_>) -> Option<NotifierSettings>,
}

impl KindInfo {
    const fn of<K: Kind>() -> KindInfo {
        KindInfo {
            name: K::NAME,
            keys: K::KEYS,
            markup: K::MARKUP,
            template: K::TEMPLATE,
            default_rate: K::DEFAULT_RATE,
            default_concurrency: K::DEFAULT_CONCURRENCY,
            template_is_json: K::template_is_json,
            check: check_as::<K>,
        }
    }
}

fn check_as<K: Kind>(
    ck: &mut Checker<'_>,
    key: &KeyPath,
    raw: RawNotifier,
    cx: &CheckContext<'_>,
) -> Option<NotifierSettings> {
    K::check(ck, key, raw, cx).map(Into::into)
}

/// Generates, from one list, the settings enum, its dispatch to each kind
/// and [`KINDS`].
macro_rules! register {
    ($($variant:ident($settings:ty)),* $(,)?) => {
        /// The settings of one notifier, by kind.
        #[derive(Debug, Clone, Serialize)]
        #[serde(untagged)]
        pub enum NotifierSettings {
            $($variant($settings),)*
        }

        impl NotifierSettings {
            pub fn kind(&self) -> KindInfo {
                match self {
                    $(NotifierSettings::$variant(_) => KindInfo::of::<$settings>(),)*
                }
            }

            fn build(&self, cx: BuildContext<'_>) -> Result<Notifier, BuildError> {
                match self {
                    $(NotifierSettings::$variant(s) => s.build(cx),)*
                }
            }
        }

        $(impl From<$settings> for NotifierSettings {
            fn from(s: $settings) -> NotifierSettings {
                NotifierSettings::$variant(s)
            }
        })*

        /// Every kind.
        pub const KINDS: &[KindInfo] = &[$(KindInfo::of::<$settings>(),)*];
    };
}
// The one registration point: each kind's variant and settings type, in
// the order messages list the kinds.
register! {
    Webhook(webhook::Settings),
    Slack(slack::Settings),
    Discord(discord::Settings),
    Teams(teams::Settings),
    Feishu(feishu::Settings),
    Dingtalk(dingtalk::Settings),
    Wecom(wecom::Settings),
    Email(email::Settings),
    Log(log::Settings),
}

/// One validated `[notifiers.NAME]` table.
#[derive(Debug, Clone)]
pub struct NotifierConfig {
    pub settings: NotifierSettings,
    /// Replaces the kind's built-in text; compiled once, here.
    pub template: Option<Template>,
    /// The configured limit, else the kind's known receiver limit.
    pub rate_limit: Option<RateLimit>,
    pub max_concurrency: u32,
    pub timeout: Duration,
}

impl NotifierConfig {
    pub fn kind(&self) -> KindInfo {
        self.settings.kind()
    }

    /// The running notifier named `name`, its times shown in `tz`.
    pub fn build(&self, name: &str, tz: &TimeZone) -> Result<Notifier, BuildError> {
        self.settings.build(BuildContext {
            name,
            timeout: self.timeout,
            tz,
            template: self.template.clone(),
        })
    }
}

impl Serialize for NotifierConfig {
    /// `kind` first, then the kind's settings, then the common ones.
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Shown<'a> {
            kind: &'static str,
            #[serde(flatten)]
            settings: &'a NotifierSettings,
            #[serde(skip_serializing_if = "Option::is_none")]
            template: Option<&'a Template>,
            #[serde(skip_serializing_if = "Option::is_none")]
            rate_limit: Option<RateLimit>,
            max_concurrency: u32,
            #[serde(serialize_with = "dur::ser")]
            timeout: Duration,
        }
        Shown {
            kind: self.kind().name,
            settings: &self.settings,
            template: self.template.as_ref(),
            rate_limit: self.rate_limit,
            max_concurrency: self.max_concurrency,
            timeout: self.timeout,
        }
        .serialize(s)
    }
}

/// Checks one `[notifiers.NAME]` table at `key`: the kind, the keys it
/// does not use, the template, the common settings, then the kind's own.
pub fn check(
    ck: &mut Checker<'_>,
    key: &KeyPath,
    mut raw: RawNotifier,
    templates: &TemplateSettings,
) -> Option<NotifierConfig> {
    let names = KINDS.iter().map(|k| k.name).collect::<Vec<_>>().join(", ");
    let kind = match raw.kind.as_deref().map(str::trim) {
        None => {
            ck.err(&key.f("kind"), format!("missing: one of {names}"));
            return None;
        }
        Some(text) => match KINDS.iter().find(|k| k.name == text) {
            Some(kind) => *kind,
            None => {
                ck.err(
                    &key.f("kind"),
                    format!("unknown notifier kind {text:?}; expected one of {names}"),
                );
                return None;
            }
        },
    };
    let why = format!("by kind {:?}", kind.name);
    // Settings the kind does not use are errors, not silently ignored.
    for field in raw.kind_keys() {
        if !kind.keys.contains(&field) {
            ck.unused(&key.f(field), true, &why);
        }
    }
    let name = key.last_field().unwrap_or_default();
    let template = match (kind.template, raw.template.take()) {
        (_, None) => None,
        (Templating::NotUsed, Some(_)) => {
            ck.unused(&key.f("template"), true, &why);
            None
        }
        (Templating::Refused(message), Some(_)) => {
            ck.err(&key.f("template"), message);
            None
        }
        (Templating::Body, Some(source)) => {
            let json = (kind.template_is_json)(&raw);
            let key = key.f("template");
            compile_template(ck, &key, templates, name, &source, kind.markup, json)
        }
    };
    let rate_limit = match raw.rate_limit.take() {
        Some(text) => match parse_rate_limit(&text) {
            Ok(r) => Some(r),
            Err(message) => {
                ck.err(&key.f("rate_limit"), message);
                None
            }
        },
        None => kind.default_rate,
    };
    let max_concurrency = match raw.max_concurrency {
        None => kind.default_concurrency,
        Some(c) if (1..=64).contains(&c) => c as u32,
        Some(c) => {
            ck.err(
                &key.f("max_concurrency"),
                format!("{c} is out of range: must be between 1 and 64"),
            );
            1
        }
    };
    let timeout = ck.duration(
        &key.f("timeout"),
        raw.timeout.as_ref(),
        Duration::from_secs(10),
        Duration::from_millis(1),
    );
    let cx = CheckContext { name, templates };
    let settings = (kind.check)(ck, key, raw, &cx)?;
    Some(NotifierConfig {
        settings,
        template,
        rate_limit,
        max_concurrency,
        timeout,
    })
}

/// Compiles a template and renders it against the samples now (`json`:
/// each must render to JSON), so a syntax error, an undefined name or an
/// unknown filter surfaces at `check` rather than at the first delivery.
pub fn compile_template(
    ck: &mut Checker<'_>,
    key: &KeyPath,
    templates: &TemplateSettings,
    name: &str,
    source: &str,
    markup: Markup,
    json: bool,
) -> Option<Template> {
    let template = match Template::compile(name, source, templates, markup) {
        Ok(t) => t,
        Err(e) => {
            ck.err(key, format!("invalid template: {e}"));
            return None;
        }
    };
    match template.check(json) {
        Ok(()) => Some(template),
        Err(message) => {
            ck.err(key, message);
            None
        }
    }
}

/// `url` of a kind that sends to one (`kind`: its name, for the message).
/// Never echoed: chat URLs carry their credential.
pub fn url(
    ck: &mut Checker<'_>,
    key: &KeyPath,
    raw: Option<&str>,
    kind: &str,
) -> Option<SecretUrl> {
    match raw {
        Some(text) => ck.http_url(&key.f("url"), text, false).map(SecretUrl::new),
        None => {
            ck.err(
                &key.f("url"),
                format!("missing: kind {kind:?} sends to a URL"),
            );
            None
        }
    }
}

/// The optional signing `secret` (or `secret_file`) of a kind that signs.
pub fn signing_secret(
    ck: &mut Checker<'_>,
    key: &KeyPath,
    raw: &mut RawNotifier,
) -> Option<Secret> {
    ck.secret(
        key,
        "secret",
        raw.secret.take(),
        raw.secret_file.take(),
        None,
    )
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
        other => jiff::fmt::friendly::SpanParser::new()
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
    fn kind_names_are_unique() {
        let mut names: Vec<_> = KINDS.iter().map(|k| k.name).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), KINDS.len());
    }
}
