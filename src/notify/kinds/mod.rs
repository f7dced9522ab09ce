//! The notifier kinds, registered in one place, and what every
//! `[notifiers.NAME]` table has in common: `kind`, `template`, `rate_limit`,
//! `max_concurrency` and `timeout`.
//!
//! A kind is a settings type in its own file (`notify/kinds/<kind>.rs`)
//! that implements [`Kind`] (in `notify/kind.rs`): its name, the keys of
//! the table it reads, its properties (markup, default rate and
//! concurrency, what `template` means), how it checks its table and how it
//! builds its notifier. Adding a kind is that file plus one line in the
//! `register!` call below.

use std::time::Duration;

use jiff::tz::TimeZone;
use serde::Serialize;

use super::Notifier;
use super::kind::{BuildContext, BuildError, CheckContext, Kind, Templating, compile_template};
use super::template::{Markup, Template, TemplateSettings};
use crate::config::check::Checker;
use crate::config::dur;
use crate::config::key::KeyPath;
use crate::config::raw::RawNotifier;
use crate::ratelimit::RateLimit;

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
    const fn of<K: Kind + Into<NotifierSettings>>() -> KindInfo {
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

fn check_as<K: Kind + Into<NotifierSettings>>(
    ck: &mut Checker<'_>,
    key: &KeyPath,
    raw: RawNotifier,
    cx: &CheckContext<'_>,
) -> Option<NotifierSettings> {
    K::check(ck, key, raw, cx).map(Into::into)
}

/// Generates, from one list, the kinds' modules, the settings enum, its
/// dispatch to each kind and [`KINDS`]. An entry `Variant(module)` names
/// the kind's file `notify/kinds/module.rs`, whose `Settings` implements
/// [`Kind`].
macro_rules! register {
    ($($variant:ident($module:ident)),* $(,)?) => {
        $(pub mod $module;)*

        /// The settings of one notifier, by kind.
        #[derive(Debug, Clone, Serialize)]
        #[serde(untagged)]
        pub enum NotifierSettings {
            $($variant($module::Settings),)*
        }

        impl NotifierSettings {
            pub fn kind(&self) -> KindInfo {
                match self {
                    $(NotifierSettings::$variant(_) => KindInfo::of::<$module::Settings>(),)*
                }
            }

            fn build(&self, cx: BuildContext<'_>) -> Result<Notifier, BuildError> {
                match self {
                    $(NotifierSettings::$variant(s) => s.build(cx),)*
                }
            }
        }

        $(impl From<$module::Settings> for NotifierSettings {
            fn from(s: $module::Settings) -> NotifierSettings {
                NotifierSettings::$variant(s)
            }
        })*

        /// Every kind.
        pub const KINDS: &[KindInfo] = &[$(KindInfo::of::<$module::Settings>(),)*];
    };
}
// The one registration point: each kind's variant and module, in the
// order messages list the kinds. A new kind is its file and one line here.
register! {
    Webhook(webhook),
    Slack(slack),
    Discord(discord),
    Teams(teams),
    Feishu(feishu),
    Dingtalk(dingtalk),
    Wecom(wecom),
    Email(email),
    Log(log),
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
