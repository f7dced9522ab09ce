//! The `wecom` kind (WeCom group robot): markdown of at most 4096 UTF-8
//! bytes; the key lives in the URL; success only with body `errcode == 0`.

use std::time::Duration;

use jiff::tz::TimeZone;
use serde_json::{Value, json};

use crate::notify::chat::{Chat, ChatSettings, Room};
use super::dingtalk::errcode;
use crate::notify::http::{HttpAnswer, classify_status};
use crate::notify::text::{self, Tone};
use crate::notify::Message;
use crate::ratelimit::RateLimit;
use crate::retry::{Retryable, Verdict};

/// Documented: markdown content at most 4096 bytes, UTF-8 (error 40058
/// "markdown.content exceed max length 4096" otherwise).
pub const CONTENT_LIMIT_BYTES: usize = 4096;

/// "api freq out of limit".
pub const RATE_LIMITED_CODES: &[i64] = &[45009];

/// "system busy": WeCom's global code for a transient failure, documented
/// as worth a retry.
pub const BUSY_CODE: i64 = -1;

/// The limit is per minute; a throttled robot gets its next slot within one.
pub const THROTTLE_WAIT: Duration = Duration::from_secs(60);

/// `[notifiers.NAME]` with `kind = "wecom"`.
pub type Settings = ChatSettings<WeCom>;

/// The `wecom` kind.
///
/// URL: `…/cgi-bin/webhook/send?key=…`: the key is the credential.
#[derive(Debug, Clone, Copy, Default)]
pub struct WeCom;

impl Chat for WeCom {
    const NAME: &'static str = "wecom";
    /// Documented: at most 20 messages a minute per robot.
    const DEFAULT_RATE: Option<RateLimit> = Some(RateLimit::new(20, Duration::from_secs(60)));


    /// `{"msgtype":"markdown","markdown":{"content"}}`, content at most
    /// [`CONTENT_LIMIT_BYTES`].
    fn built_in(message: &Message, tz: &TimeZone) -> Value {
        // WeCom markdown colours: warning (orange), info (green), comment (grey).
        let colour = match text::tone(message) {
            Tone::Alert | Tone::Warning => "warning",
            Tone::Good => "info",
            Tone::Info => "comment",
        };
        let title = text::clip(&text::title(message), 200);
        let head = format!("**<font color=\"{colour}\">{title}</font>**\n");
        let lines: Vec<String> = match message.events.as_slice() {
            [one] if message.group.is_none() => text::fields(one, tz)
                .into_iter()
                .map(|(label, value)| format!("> {label}: {value}"))
                .collect(),
            _ => text::lines(message, tz),
        };
        let budget = CONTENT_LIMIT_BYTES.saturating_sub(head.len());
        markdown(&(head + &text::fit_joined(&lines, budget, text::bytes)))
    }

    fn room(_: &Message) -> Room {
        Room {
            budget: CONTENT_LIMIT_BYTES,
            measure: text::bytes,
        }
    }

    /// A template's rendering is the whole content.
    fn templated(_: &Message, rendered: &str) -> Value {
        markdown(rendered)
    }

    fn classify(answer: &HttpAnswer) -> Verdict {
        classify(answer)
    }
}

fn markdown(content: &str) -> Value {
    json!({"msgtype": "markdown", "markdown": {"content": content}})
}

/// Success only with `errcode == 0`; 45009 is a throttle and -1 a transient
/// failure; any other code (93000 "invalid webhook url", 40058 too long…)
/// is permanent.
pub fn classify(answer: &HttpAnswer) -> Verdict {
    let code = errcode(&answer.body);
    match code {
        Some(c) if RATE_LIMITED_CODES.contains(&c) => {
            return Verdict::Retry(Retryable::throttled(
                format!("WeCom rate limit (errcode {c}): {}", answer.describe()),
                Some(answer.retry_after.unwrap_or(THROTTLE_WAIT)),
            ));
        }
        Some(BUSY_CODE) => {
            return Verdict::Retry(Retryable {
                reason: format!("WeCom busy: {}", answer.describe()),
                retry_after: answer.retry_after,
                throttled: false,
            });
        }
        _ => {}
    }
    match (answer.status, code) {
        (200..=299, Some(0)) => Verdict::Success,
        (200..=299, _) => Verdict::DontRetry(answer.describe()),
        _ => classify_status(answer),
    }
}
