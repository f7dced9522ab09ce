//! The `slack` kind (incoming webhook): `text` plus Block Kit blocks;
//! 2xx is success, 429 with `Retry-After` throttles, other 4xx are permanent.

use std::time::Duration;

use jiff::tz::TimeZone;
use serde_json::{Value, json};

use crate::notify::chat::{Chat, ChatSettings, Room};
use crate::notify::http::{HttpAnswer, classify_status};
use crate::notify::template::Markup;
use crate::notify::text;
use crate::notify::Message;
use crate::ratelimit::RateLimit;
use crate::retry::Verdict;

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
pub type Settings = ChatSettings<Slack>;

/// The `slack` kind.
///
/// URL: `https://hooks.slack.com/services/T…/B…/token`: the path is the credential.
#[derive(Debug, Clone, Copy, Default)]
pub struct Slack;

impl Chat for Slack {
    const NAME: &'static str = "slack";
    const MARKUP: Markup = Markup::Slack;
    /// Documented: about one message a second per webhook, short bursts allowed.
    const DEFAULT_RATE: Option<RateLimit> = Some(RateLimit::new(1, Duration::from_secs(1)));


    /// `{"text": title, "blocks": [header, section…, context?]}`.
    fn built_in(message: &Message, tz: &TimeZone) -> Value {
        let title = escape(&text::title(message));
        let lines: Vec<String> = match message.events.as_slice() {
            [one] if message.group.is_none() => text::fields(one, tz)
                .into_iter()
                .map(|(label, value)| format!("*{label}:* {}", escape(&value)))
                .collect(),
            _ => text::lines(message, tz)
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

    fn room(_: &Message) -> Room {
        Room {
            budget: SECTION_LIMIT_CHARS,
            measure: text::chars,
        }
    }

    /// A template's rendering is the `text` and the one section.
    fn templated(_: &Message, rendered: &str) -> Value {
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
