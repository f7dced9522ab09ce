//! The `discord` kind (execute webhook): one embed, no mentions; 2xx is
//! success, and a 429's body `retry_after` (seconds) pauses the notifier.

use std::time::Duration;

use jiff::tz::TimeZone;
use serde::Serialize;
use serde_json::{Value, json};

use super::chat::{ChatKind, Endpoint, Room};
use super::http::{HttpAnswer, classify_status};
use super::kind::{self, BuildContext, BuildError, CheckContext, Kind};
use super::template::Template;
use super::text::{self, Tone};
use super::{Message, Notifier};
use crate::config::check::Checker;
use crate::config::key::KeyPath;
use crate::config::raw::RawNotifier;
use crate::ratelimit::RateLimit;
use crate::retry::{Retryable, Verdict};
use crate::secret::SecretUrl;

/// Documented: message `content` is at most 2000 characters. We send the
/// text as an embed instead (more room, a colour), and leave `content` out.
pub const CONTENT_LIMIT_CHARS: usize = 2000;
/// Documented: an embed's description is at most 4096 characters.
pub const DESCRIPTION_LIMIT_CHARS: usize = 4096;
/// Documented: an embed's title is at most 256 characters.
pub const TITLE_LIMIT_CHARS: usize = 256;
/// Documented: all embeds of a message total at most 6000 characters.
pub const EMBEDS_TOTAL_LIMIT_CHARS: usize = 6000;

const FOOTER: &str = "jobwatch";

/// `[notifiers.NAME]` with `kind = "discord"`.
#[derive(Debug, Clone, Serialize)]
pub struct Settings {
    pub url: SecretUrl,
}

impl Kind for Settings {
    const NAME: &'static str = "discord";
    const KEYS: &'static [&'static str] = &["url"];
    /// Discord asks clients to follow its rate-limit headers rather than a
    /// fixed figure; 30 a minute per webhook is the commonly observed channel
    /// limit, and every 429's `retry_after` is honoured on top.
    const DEFAULT_RATE: Option<RateLimit> = Some(RateLimit::new(30, Duration::from_secs(60)));

    fn check(
        ck: &mut Checker<'_>,
        key: &KeyPath,
        raw: RawNotifier,
        _: &CheckContext<'_>,
    ) -> Option<Settings> {
        Some(Settings {
            url: kind::url(ck, key, raw.url.as_deref(), Self::NAME)?,
        })
    }

    fn build(&self, cx: BuildContext<'_>) -> Result<Notifier, BuildError> {
        Ok(Notifier::new(DiscordNotifier {
            url: self.url.clone(),
            http: super::http::client(cx.timeout)?,
            tz: cx.tz.clone(),
            template: cx.template,
        }))
    }
}

#[derive(Debug, Clone)]
pub struct DiscordNotifier {
    /// `https://discord.com/api/webhooks/{id}/{token}`: the path is the credential.
    pub url: SecretUrl,
    pub http: reqwest::Client,
    pub tz: TimeZone,
    /// When set, its rendering replaces the built-in text (see `body`).
    pub template: Option<Template>,
}

impl ChatKind for DiscordNotifier {
    fn endpoint(&self) -> Endpoint<'_> {
        Endpoint::new(&self.url, &self.http, self.template.as_ref())
    }

    /// `{"allowed_mentions":{"parse":[]},"embeds":[{title, description, color}]}`.
    /// Lengths are counted in UTF-16 units, never fewer than Discord's
    /// characters.
    fn built_in(&self, message: &Message) -> Value {
        let title = text::clip(&text::title(message), TITLE_LIMIT_CHARS);
        let lines: Vec<String> = match message.events.as_slice() {
            [one] if message.group.is_none() => text::fields(one, &self.tz)
                .into_iter()
                .map(|(label, value)| format!("**{label}:** {value}"))
                .collect(),
            _ => text::lines(message, &self.tz),
        };
        let total_left = EMBEDS_TOTAL_LIMIT_CHARS - text::utf16(&title) - text::utf16(FOOTER);
        let budget = DESCRIPTION_LIMIT_CHARS.min(total_left);
        let description = text::fit_joined(&lines, budget, text::utf16);
        let color = match text::tone(message) {
            Tone::Alert => 0xE7_4C_3C,
            Tone::Warning => 0xF3_9C_12,
            Tone::Good => 0x2E_CC_71,
            Tone::Info => 0x34_98_DB,
        };
        json!({
            // Text from the API must not ping @everyone or anyone else.
            "allowed_mentions": {"parse": []},
            "embeds": [{
                "title": title,
                "description": description,
                "color": color,
                "footer": {"text": FOOTER},
            }],
        })
    }

    fn room(&self, _: &Message) -> Room {
        Room {
            budget: CONTENT_LIMIT_CHARS,
            measure: text::utf16,
        }
    }

    /// A template's rendering is the message's `content` (cut to 2000),
    /// with no embed.
    fn templated(&self, _: &Message, rendered: &str) -> Value {
        json!({"allowed_mentions": {"parse": []}, "content": rendered})
    }

    fn classify(answer: &HttpAnswer) -> Verdict {
        classify(answer)
    }
}

/// 2xx (204, or 200 with `?wait=true`) is success. A 429 names its wait in
/// the body (`{"retry_after": 1.5, "global": false}`, seconds), which wins
/// over the header; other statuses follow the generic rule.
pub fn classify(answer: &HttpAnswer) -> Verdict {
    if answer.status == 429 {
        let body: Option<Value> = serde_json::from_str(&answer.body).ok();
        let wait = body
            .as_ref()
            .and_then(|b| b.get("retry_after"))
            .and_then(Value::as_f64)
            .and_then(|s| Duration::try_from_secs_f64(s).ok())
            .or(answer.retry_after);
        let global = body
            .as_ref()
            .and_then(|b| b.get("global"))
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let scope = if global { "global" } else { "webhook" };
        return Verdict::Retry(Retryable::throttled(
            format!("Discord {scope} rate limit: {}", answer.describe()),
            wait,
        ));
    }
    classify_status(answer)
}
