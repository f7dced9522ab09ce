//! The `discord` kind (execute webhook): one embed, no mentions; 2xx is
//! success, and a 429's body `retry_after` (seconds) pauses the notifier.

use std::time::Duration;

use jiff::tz::TimeZone;
use serde_json::{Value, json};

use crate::notify::chat::{Chat, ChatSettings, Room};
use crate::notify::http::{HttpAnswer, classify_status};
use crate::notify::text::{self, Tone};
use crate::notify::Message;
use crate::ratelimit::RateLimit;
use crate::retry::{Retryable, Verdict};

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
pub type Settings = ChatSettings<Discord>;

/// The `discord` kind.
///
/// URL: `https://discord.com/api/webhooks/{id}/{token}`: the path is the credential.
#[derive(Debug, Clone, Copy, Default)]
pub struct Discord;

impl Chat for Discord {
    const NAME: &'static str = "discord";
    /// Discord asks clients to follow its rate-limit headers rather than a
    /// fixed figure; 30 a minute per webhook is the commonly observed channel
    /// limit, and every 429's `retry_after` is honoured on top.
    const DEFAULT_RATE: Option<RateLimit> = Some(RateLimit::new(30, Duration::from_secs(60)));


    /// `{"allowed_mentions":{"parse":[]},"embeds":[{title, description, color}]}`.
    /// Lengths are counted in UTF-16 units, never fewer than Discord's
    /// characters.
    fn built_in(message: &Message, tz: &TimeZone) -> Value {
        let title = text::clip(&text::title(message), TITLE_LIMIT_CHARS);
        let lines: Vec<String> = match message.events.as_slice() {
            [one] if message.group.is_none() => text::fields(one, tz)
                .into_iter()
                .map(|(label, value)| format!("**{label}:** {value}"))
                .collect(),
            _ => text::lines(message, tz),
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

    fn room(_: &Message) -> Room {
        Room {
            budget: CONTENT_LIMIT_CHARS,
            measure: text::utf16,
        }
    }

    /// A template's rendering is the message's `content` (cut to 2000),
    /// with no embed.
    fn templated(_: &Message, rendered: &str) -> Value {
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
