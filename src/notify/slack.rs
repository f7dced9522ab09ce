//! The `slack` kind (incoming webhook): `text` plus Block Kit blocks;
//! 2xx is success, 429 with `Retry-After` throttles, other 4xx are permanent.

use std::time::Duration;

use jiff::tz::TimeZone;
use serde::Serialize;
use serde_json::{Value, json};

use super::chat::{ChatKind, Endpoint, Room};
use super::http::{HttpAnswer, classify_status};
use super::kind::{self, BuildContext, BuildError, CheckContext, Kind};
use super::template::{Markup, Template};
use super::text;
use super::{Message, Notifier};
use crate::config::check::Checker;
use crate::config::key::KeyPath;
use crate::config::raw::RawNotifier;
use crate::ratelimit::RateLimit;
use crate::retry::Verdict;
use crate::secret::SecretUrl;

/// Documented: a section's text is at most 3000 characters.
pub const SECTION_LIMIT_CHARS: usize = 3000;
/// Documented: at most 50 blocks per message.
pub const MAX_BLOCKS: usize = 50;
/// Documented: `text` beyond 40,000 characters is truncated.
pub const TEXT_LIMIT_CHARS: usize = 40_000;
/// Documented: a header block's text is at most 150 characters.
pub const HEADER_LIMIT_CHARS: usize = 150;
/// The event lines of one message, in characters. Well under what the
/// documented limits allow, because Slack also rejects messages whose
/// blocks total ~13,000 characters (`msg_blocks_too_long`, reported by
/// users below every documented limit).
pub const LINES_LIMIT_CHARS: usize = 12_000;

/// `[notifiers.NAME]` with `kind = "slack"`.
#[derive(Debug, Clone, Serialize)]
pub struct Settings {
    pub url: SecretUrl,
}

impl Kind for Settings {
    const NAME: &'static str = "slack";
    const KEYS: &'static [&'static str] = &["url"];
    const MARKUP: Markup = Markup::Slack;
    /// Documented: about one message a second per webhook, short bursts allowed.
    const DEFAULT_RATE: Option<RateLimit> = Some(RateLimit::new(1, Duration::from_secs(1)));

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
        Ok(Notifier::new(SlackNotifier {
            url: self.url.clone(),
            http: super::http::client(cx.timeout)?,
            tz: cx.tz.clone(),
            template: cx.template,
        }))
    }
}

#[derive(Debug, Clone)]
pub struct SlackNotifier {
    /// `https://hooks.slack.com/services/T…/B…/token`: the path is the credential.
    pub url: SecretUrl,
    pub http: reqwest::Client,
    pub tz: TimeZone,
    /// When set, its rendering replaces the built-in text (see `body`).
    pub template: Option<Template>,
}

impl ChatKind for SlackNotifier {
    fn endpoint(&self) -> Endpoint<'_> {
        Endpoint::new(&self.url, &self.http, self.template.as_ref())
    }

    /// `{"text": title, "blocks": [header, section…, context?]}`.
    fn built_in(&self, message: &Message) -> Value {
        let title = escape(&text::title(message));
        let lines: Vec<String> = match message.events.as_slice() {
            [one] if message.group.is_none() => text::fields(one, &self.tz)
                .into_iter()
                .map(|(label, value)| format!("*{label}:* {}", escape(&value)))
                .collect(),
            _ => text::lines(message, &self.tz)
                .iter()
                .map(|l| text::clip(&escape(l), SECTION_LIMIT_CHARS))
                .collect(),
        };
        let (kept, more) = text::fit(&lines, LINES_LIMIT_CHARS, text::chars);

        let mut blocks = vec![json!({
            "type": "header",
            "text": {"type": "plain_text", "text": text::clip(&text::title(message), HEADER_LIMIT_CHARS), "emoji": true},
        })];
        for section in pack(kept, SECTION_LIMIT_CHARS) {
            blocks.push(json!({"type": "section", "text": {"type": "mrkdwn", "text": section}}));
        }
        if let Some(more) = more {
            blocks.push(json!({"type": "context", "elements": [{"type": "mrkdwn", "text": more}]}));
        }
        // The 12,000-character cap keeps this far below 50; the check is
        // for whoever raises the cap.
        blocks.truncate(MAX_BLOCKS);
        json!({
            // Shown in notifications and where blocks cannot be.
            "text": text::clip(&title, TEXT_LIMIT_CHARS),
            "blocks": blocks,
        })
    }

    fn room(&self, _: &Message) -> Room {
        Room {
            budget: SECTION_LIMIT_CHARS,
            measure: text::chars,
        }
    }

    /// A template's rendering is the `text` and the one section.
    fn templated(&self, _: &Message, rendered: &str) -> Value {
        json!({
            "text": rendered,
            "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": rendered}}],
        })
    }

    /// 2xx (the body is `ok`) is success; a 429 throttles the notifier for
    /// `Retry-After`; 5xx retries; other 4xx (`invalid_payload`, `no_service`,
    /// `channel_is_archived`…) are permanent, with Slack's words kept.
    fn classify(answer: &HttpAnswer) -> Verdict {
        classify_status(answer)
    }
}

/// Joins lines into as few texts of at most `limit` chars as fit.
fn pack(lines: &[String], limit: usize) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut current = String::new();
    let mut current_chars = 0;
    for line in lines {
        let n = line.chars().count();
        if !current.is_empty() && current_chars + 1 + n > limit {
            out.push(std::mem::take(&mut current));
            current_chars = 0;
        }
        if !current.is_empty() {
            current.push('\n');
            current_chars += 1;
        }
        current.push_str(line);
        current_chars += n;
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

/// mrkdwn control characters: `<…>` would become links or mentions.
fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
