//! The `teams` kind (a Power Automate "Workflows" webhook): an Adaptive Card
//! 1.4 in a `message` envelope; 2xx (usually 202 Accepted) is success.

use std::time::Duration;

use jiff::tz::TimeZone;
use serde_json::{Value, json};

use crate::notify::chat::{Chat, ChatSettings, Room};
use crate::notify::http::{HttpAnswer, classify_status};
use crate::notify::text::{self, Tone};
use crate::notify::Message;
use crate::ratelimit::RateLimit;
use crate::retry::Verdict;

/// Documented: a posted message is limited to about 28 KB ("Request Entity
/// too large" beyond). Users report rejections below it, so we keep the
/// serialized body to 24,000 bytes.
pub const BODY_LIMIT_BYTES: usize = 24_000;

/// `[notifiers.NAME]` with `kind = "teams"`.
pub type Settings = ChatSettings<Teams>;

/// The `teams` kind.
///
/// URL: the Workflows trigger URL; its `sig=` query is the credential.
#[derive(Debug, Clone, Copy, Default)]
pub struct Teams;

impl Chat for Teams {
    const NAME: &'static str = "teams";
    /// Documented for Teams webhooks: more than four requests a second are
    /// throttled.
    const DEFAULT_RATE: Option<RateLimit> = Some(RateLimit::new(4, Duration::from_secs(1)));


    /// `{"type":"message","attachments":[{"contentType":
    /// "application/vnd.microsoft.card.adaptive","content":{AdaptiveCard}}]}`,
    /// at most [`BODY_LIMIT_BYTES`].
    fn built_in(message: &Message, tz: &TimeZone) -> Value {
        let lines: Vec<String> = match message.events.as_slice() {
            [one] if message.group.is_none() => text::fields(one, tz)
                .into_iter()
                .map(|(label, value)| format!("**{label}:** {value}"))
                .collect(),
            // A markdown list: bare lines would run into one paragraph.
            _ => text::lines(message, tz)
                .into_iter()
                .map(|l| format!("- {l}"))
                .collect(),
        };
        let room = Self::room(message);
        envelope(
            message,
            &text::fit_joined(&lines, room.budget, room.measure),
        )
    }

    /// What the card leaves of the body: a template's rendering is the
    /// card's text block; the coloured title stays.
    fn room(message: &Message) -> Room {
        Room::json_body(BODY_LIMIT_BYTES, envelope(message, "").to_string().len())
    }

    fn templated(message: &Message, rendered: &str) -> Value {
        envelope(message, rendered)
    }

    /// 2xx (202 Accepted from Workflows) is success; the rest follows the
    /// generic rule (429 throttles, 5xx retries, other 4xx are permanent).
    fn classify(answer: &HttpAnswer) -> Verdict {
        classify_status(answer)
    }
}

fn envelope(message: &Message, content: &str) -> Value {
    let (style, colour) = match text::tone(message) {
        Tone::Alert => ("attention", "attention"),
        Tone::Warning => ("warning", "warning"),
        Tone::Good => ("good", "good"),
        Tone::Info => ("emphasis", "default"),
    };
    json!({
        "type": "message",
        "attachments": [{
            "contentType": "application/vnd.microsoft.card.adaptive",
            "contentUrl": null,
            "content": {
                "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                "type": "AdaptiveCard",
                "version": "1.4",
                "msteams": {"width": "Full"},
                "body": [
                    {
                        "type": "Container",
                        "style": style,
                        "bleed": true,
                        "items": [{
                            "type": "TextBlock",
                            "text": text::clip(&text::title(message), 200),
                            "weight": "Bolder",
                            "size": "Medium",
                            "color": colour,
                            "wrap": true,
                        }],
                    },
                    {"type": "TextBlock", "text": content, "wrap": true},
                    {"type": "TextBlock", "text": "jobwatch", "isSubtle": true, "size": "Small"},
                ],
            },
        }],
    })
}
