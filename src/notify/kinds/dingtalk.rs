//! The `dingtalk` kind (DingTalk custom robot): markdown, signed in the
//! query when a secret is set; success only with body `errcode == 0`.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, KeyInit, Mac};
use jiff::tz::TimeZone;
use serde_json::{Value, json};
use sha2::Sha256;
use url::Url;

use crate::notify::chat::{Chat, ChatSettings, Room};
use crate::notify::http::{HttpAnswer, classify_status};
use crate::notify::text;
use crate::notify::Message;
use crate::ratelimit::RateLimit;
use crate::retry::{Retryable, Verdict};
use crate::secret::Secret;

/// DingTalk documents no size for markdown text; this conservative bound
/// (UTF-8 bytes of `markdown.text`) keeps well inside what robots accept.
pub const TEXT_LIMIT_BYTES: usize = 20_000;

/// "send too fast, exceed 20 times per minute".
pub const RATE_LIMITED_CODES: &[i64] = &[130101];

/// How long a throttled robot stays blocked (documented: 10 minutes);
/// asking earlier only meets the same answer.
pub const THROTTLE_WAIT: Duration = Duration::from_secs(600);

/// `[notifiers.NAME]` with `kind = "dingtalk"`.
pub type Settings = ChatSettings<DingTalk>;

/// The `dingtalk` kind.
#[derive(Debug, Clone, Copy, Default)]
pub struct DingTalk;

impl Chat for DingTalk {
    const NAME: &'static str = "dingtalk";
    /// Documented: at most 20 messages a minute per robot; exceeding it blocks
    /// the robot for 10 minutes, so we never burst past it.
    const DEFAULT_RATE: Option<RateLimit> = Some(RateLimit::new(20, Duration::from_secs(60)));
    const SIGNS: bool = true;

    /// `{"msgtype":"markdown","markdown":{"title","text"}}`, with `text` at
    /// most [`TEXT_LIMIT_BYTES`].
    fn built_in(message: &Message, tz: &TimeZone) -> Value {
        let title = text::clip(&text::title(message), 200);
        // The title heads the text (the `title` field only shows in the chat
        // list); the footer names us, for robots with keyword security.
        let head = format!("#### {title}\n\n");
        let foot = "\n\n###### jobwatch";
        let lines = content_lines(message, tz);
        let budget = TEXT_LIMIT_BYTES.saturating_sub(head.len() + foot.len());
        let content = text::fit_joined(&lines, budget, text::bytes);
        markdown(&title, &format!("{head}{content}{foot}"))
    }

    fn room(_: &Message) -> Room {
        Room {
            budget: TEXT_LIMIT_BYTES,
            measure: text::bytes,
        }
    }

    /// A template's rendering is the whole `text` (so a robot with keyword
    /// security needs the keyword in it); `title`, shown only in the chat
    /// list, stays ours.
    fn templated(message: &Message, rendered: &str) -> Value {
        markdown(&text::clip(&text::title(message), 200), rendered)
    }

    fn classify(answer: &HttpAnswer) -> Verdict {
        classify(answer)
    }

    fn signed(url: Url, body: Value, secret: &Secret) -> (Url, Value) {
        let at = jiff::Timestamp::now().as_millisecond();
        (signed_url(&url, secret, at), body)
    }
}

fn markdown(title: &str, text: &str) -> Value {
    json!({"msgtype": "markdown", "markdown": {"title": title, "text": text}})
}

/// Markdown list items: DingTalk joins bare lines into one paragraph.
fn content_lines(message: &Message, tz: &TimeZone) -> Vec<String> {
    match message.events.as_slice() {
        [one] if message.group.is_none() => text::fields(one, tz)
            .into_iter()
            .map(|(label, value)| format!("- **{label}:** {value}"))
            .collect(),
        _ => text::lines(message, tz)
            .into_iter()
            .map(|l| format!("- {l}"))
            .collect(),
    }
}

/// The webhook URL with `timestamp` (milliseconds) and `sign` appended;
/// the query encoding is the `urlEncode` DingTalk asks for.
pub fn signed_url(url: &Url, secret: &Secret, timestamp_ms: i64) -> Url {
    let mut url = url.clone();
    url.query_pairs_mut()
        .append_pair("timestamp", &timestamp_ms.to_string())
        .append_pair("sign", &sign(secret, timestamp_ms));
    url
}

/// DingTalk's signature: base64(HMAC-SHA256 with the secret as key over
/// `"{timestamp}\n{secret}"`), before URL encoding.
pub fn sign(secret: &Secret, timestamp_ms: i64) -> String {
    // HMAC accepts keys of any length.
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.expose().as_bytes())
        .expect("HMAC accepts any key length");
    mac.update(format!("{timestamp_ms}\n{}", secret.expose()).as_bytes());
    BASE64.encode(mac.finalize().into_bytes())
}

/// Success only with `errcode == 0`; 130101 is a throttle that pauses the
/// notifier for the documented block; any other code is permanent.
pub fn classify(answer: &HttpAnswer) -> Verdict {
    let code = errcode(&answer.body);
    if let Some(code) = code.filter(|c| RATE_LIMITED_CODES.contains(c)) {
        return Verdict::Retry(Retryable::throttled(
            format!(
                "DingTalk rate limit (errcode {code}): {}",
                answer.describe()
            ),
            Some(answer.retry_after.unwrap_or(THROTTLE_WAIT)),
        ));
    }
    match (answer.status, code) {
        (200..=299, Some(0)) => Verdict::Success,
        (200..=299, _) => Verdict::DontRetry(answer.describe()),
        _ => classify_status(answer),
    }
}

pub(crate) fn errcode(body: &str) -> Option<i64> {
    let value: Value = serde_json::from_str(body).ok()?;
    value.get("errcode").and_then(Value::as_i64)
}
