//! The `feishu` kind (Feishu/Lark custom bot): an interactive card, signed in
//! the body when a secret is set; success only on HTTP 200 with `code == 0`.

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
use crate::notify::template::Markup;
use crate::notify::text::{self, Tone};
use crate::notify::Message;
use crate::ratelimit::RateLimit;
use crate::retry::{Retryable, Verdict};
use crate::secret::Secret;

/// The documented request-body limit of a custom bot is 20 KB; we read it
/// as 20,000 bytes of the serialized body, the stricter reading.
pub const BODY_LIMIT_BYTES: usize = 20_000;

/// Room kept for `timestamp` and `sign`, added after the card is cut.
const SIGN_RESERVE: usize = 100;

/// "frequency limited": the bot is being throttled; retry later.
pub const RATE_LIMITED_CODES: &[i64] = &[11232];

/// `[notifiers.NAME]` with `kind = "feishu"`.
pub type Settings = ChatSettings<Feishu>;

/// The `feishu` kind.
#[derive(Debug, Clone, Copy, Default)]
pub struct Feishu;

impl Chat for Feishu {
    const NAME: &'static str = "feishu";
    const MARKUP: Markup = Markup::LarkMd;
    /// Documented: 100 requests a minute and 5 a second per bot. Pacing at
    /// 100/min (one every 0.6 s) keeps under both.
    const DEFAULT_RATE: Option<RateLimit> = Some(RateLimit::new(100, Duration::from_secs(60)));
    const SIGNS: bool = true;

    /// `{"msg_type":"interactive","card":{…}}`, at most
    /// [`BODY_LIMIT_BYTES`] once signed.
    fn built_in(message: &Message, tz: &TimeZone) -> Value {
        let room = Self::room(message);
        let lines = content_lines(message, tz);
        card(
            message,
            &text::fit_joined(&lines, room.budget, room.measure),
        )
    }

    /// What the card leaves of the body: a template's rendering replaces
    /// the card's text; the coloured header and the note stay.
    fn room(message: &Message) -> Room {
        let overhead = card(message, "").to_string().len() + SIGN_RESERVE;
        Room::json_body(BODY_LIMIT_BYTES, overhead)
    }

    fn templated(message: &Message, rendered: &str) -> Value {
        card(message, rendered)
    }

    fn classify(answer: &HttpAnswer) -> Verdict {
        classify(answer)
    }

    fn signed(url: Url, body: Value, secret: &Secret) -> (Url, Value) {
        (url, signed(body, secret, jiff::Timestamp::now().as_second()))
    }
}

fn card(message: &Message, content: &str) -> Value {
    let template = match text::tone(message) {
        Tone::Alert => "red",
        Tone::Warning => "orange",
        Tone::Good => "green",
        Tone::Info => "blue",
    };
    json!({
        "msg_type": "interactive",
        "card": {
            "config": {"wide_screen_mode": true},
            "header": {
                "template": template,
                "title": {"tag": "plain_text", "content": text::clip(&text::title(message), 200)},
            },
            "elements": [
                {"tag": "div", "text": {"tag": "lark_md", "content": content}},
                // Names us, so a bot with keyword security can require "jobwatch".
                {"tag": "note", "elements": [{"tag": "plain_text", "content": "jobwatch"}]},
            ],
        },
    })
}

/// A single event lists its fields; a group one line per event.
fn content_lines(message: &Message, tz: &TimeZone) -> Vec<String> {
    match message.events.as_slice() {
        [one] if message.group.is_none() => text::fields(one, tz)
            .into_iter()
            .map(|(label, value)| format!("**{label}:** {}", escape(&value)))
            .collect(),
        _ => text::lines(message, tz).iter().map(|l| escape(l)).collect(),
    }
}

/// lark_md reads `<at id=all>` and similar tags; text from the API must not
/// mention people.
fn escape(s: &str) -> String {
    s.replace('<', "&lt;").replace('>', "&gt;")
}

/// Adds `timestamp` (seconds, as a string) and `sign` to a body.
pub fn signed(mut body: Value, secret: &Secret, timestamp: i64) -> Value {
    if let Value::Object(map) = &mut body {
        map.insert("timestamp".into(), Value::String(timestamp.to_string()));
        map.insert("sign".into(), Value::String(sign(secret, timestamp)));
    }
    body
}

/// Feishu's signature: base64(HMAC-SHA256 with key `"{timestamp}\n{secret}"`
/// over an empty message). The key is the string, not the secret: unlike
/// DingTalk's.
pub fn sign(secret: &Secret, timestamp: i64) -> String {
    let key = format!("{timestamp}\n{}", secret.expose());
    // HMAC accepts keys of any length.
    let mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).expect("HMAC accepts any key length");
    BASE64.encode(mac.finalize().into_bytes())
}

/// Success only on HTTP 200 with `code == 0` (older bots answer
/// `StatusCode`); 11232 is a throttle; any other code is permanent.
pub fn classify(answer: &HttpAnswer) -> Verdict {
    let code = body_code(&answer.body);
    if let Some(code) = code.filter(|c| RATE_LIMITED_CODES.contains(c)) {
        return Verdict::Retry(Retryable::throttled(
            format!("Feishu rate limit (code {code}): {}", answer.describe()),
            answer.retry_after,
        ));
    }
    match (answer.status, code) {
        (200, Some(0)) => Verdict::Success,
        (200, _) => Verdict::DontRetry(answer.describe()),
        (201..=299, _) => Verdict::DontRetry(format!("unexpected answer: {}", answer.describe())),
        _ => classify_status(answer),
    }
}

fn body_code(body: &str) -> Option<i64> {
    let value: Value = serde_json::from_str(body).ok()?;
    value
        .get("code")
        .or_else(|| value.get("StatusCode"))
        .and_then(Value::as_i64)
}
