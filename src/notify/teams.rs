//! The `teams` kind (a Power Automate "Workflows" webhook): an Adaptive Card
//! 1.4 in a `message` envelope; 2xx (usually 202 Accepted) is success.

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
use crate::retry::Verdict;
use crate::secret::SecretUrl;

/// Documented: a posted message is limited to about 28 KB ("Request Entity
/// too large" beyond). Users report rejections below it, so we keep the
/// serialized body to 24,000 bytes.
pub const BODY_LIMIT_BYTES: usize = 24_000;

/// `[notifiers.NAME]` with `kind = "teams"`.
#[derive(Debug, Clone, Serialize)]
pub struct Settings {
    pub url: SecretUrl,
}

impl Kind for Settings {
    const NAME: &'static str = "teams";
    const KEYS: &'static [&'static str] = &["url"];
    /// Documented for Teams webhooks: more than four requests a second are
    /// throttled.
    const DEFAULT_RATE: Option<RateLimit> = Some(RateLimit::new(4, Duration::from_secs(1)));

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
        Ok(Notifier::new(TeamsNotifier {
            url: self.url.clone(),
            http: super::http::client(cx.timeout)?,
            tz: cx.tz.clone(),
            template: cx.template,
        }))
    }
}

#[derive(Debug, Clone)]
pub struct TeamsNotifier {
    /// The Workflows trigger URL; its `sig=` query is the credential.
    pub url: SecretUrl,
    pub http: reqwest::Client,
    pub tz: TimeZone,
    /// When set, its rendering replaces the built-in text (see `body`).
    pub template: Option<Template>,
}

impl ChatKind for TeamsNotifier {
    fn endpoint(&self) -> Endpoint<'_> {
        Endpoint::new(&self.url, &self.http, self.template.as_ref())
    }

    /// `{"type":"message","attachments":[{"contentType":
    /// "application/vnd.microsoft.card.adaptive","content":{AdaptiveCard}}]}`,
    /// at most [`BODY_LIMIT_BYTES`].
    fn built_in(&self, message: &Message) -> Value {
        let lines: Vec<String> = match message.events.as_slice() {
            [one] if message.group.is_none() => text::fields(one, &self.tz)
                .into_iter()
                .map(|(label, value)| format!("**{label}:** {value}"))
                .collect(),
            // A markdown list: bare lines would run into one paragraph.
            _ => text::lines(message, &self.tz)
                .into_iter()
                .map(|l| format!("- {l}"))
                .collect(),
        };
        let room = self.room(message);
        envelope(
            message,
            &text::fit_joined(&lines, room.budget, room.measure),
        )
    }

    /// What the card leaves of the body: a template's rendering is the
    /// card's text block; the coloured title stays.
    fn room(&self, message: &Message) -> Room {
        Room::json_body(BODY_LIMIT_BYTES, envelope(message, "").to_string().len())
    }

    fn templated(&self, message: &Message, rendered: &str) -> Value {
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
