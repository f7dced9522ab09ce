//! The `wecom` kind (WeCom group robot): markdown of at most 4096 UTF-8
//! bytes; the key lives in the URL; success only with body `errcode == 0`.

use std::time::Duration;

use jiff::tz::TimeZone;
use serde::Serialize;
use serde_json::{Value, json};

use super::chat::{ChatKind, Endpoint, Room};
use super::dingtalk::errcode;
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
#[derive(Debug, Clone, Serialize)]
pub struct Settings {
    pub url: SecretUrl,
}

impl Kind for Settings {
    const NAME: &'static str = "wecom";
    const KEYS: &'static [&'static str] = &["url"];
    /// Documented: at most 20 messages a minute per robot.
    const DEFAULT_RATE: Option<RateLimit> = Some(RateLimit::new(20, Duration::from_secs(60)));

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
        Ok(Notifier::new(WeComNotifier {
            url: self.url.clone(),
            http: super::http::client(cx.timeout)?,
            tz: cx.tz.clone(),
            template: cx.template,
        }))
    }
}

#[derive(Debug, Clone)]
pub struct WeComNotifier {
    /// `…/cgi-bin/webhook/send?key=…`: the key is the credential.
    pub url: SecretUrl,
    pub http: reqwest::Client,
    pub tz: TimeZone,
    /// When set, its rendering replaces the built-in text (see `body`).
    pub template: Option<Template>,
}

impl ChatKind for WeComNotifier {
    fn endpoint(&self) -> Endpoint<'_> {
        Endpoint::new(&self.url, &self.http, self.template.as_ref())
    }

    /// `{"msgtype":"markdown","markdown":{"content"}}`, content at most
    /// [`CONTENT_LIMIT_BYTES`].
    fn built_in(&self, message: &Message) -> Value {
        // WeCom markdown colours: warning (orange), info (green), comment (grey).
        let colour = match text::tone(message) {
            Tone::Alert | Tone::Warning => "warning",
            Tone::Good => "info",
            Tone::Info => "comment",
        };
        let title = text::clip(&text::title(message), 200);
        let head = format!("**<font color=\"{colour}\">{title}</font>**\n");
        let lines: Vec<String> = match message.events.as_slice() {
            [one] if message.group.is_none() => text::fields(one, &self.tz)
                .into_iter()
                .map(|(label, value)| format!("> {label}: {value}"))
                .collect(),
            _ => text::lines(message, &self.tz),
        };
        let budget = CONTENT_LIMIT_BYTES.saturating_sub(head.len());
        markdown(&(head + &text::fit_joined(&lines, budget, text::bytes)))
    }

    fn room(&self, _: &Message) -> Room {
        Room {
            budget: CONTENT_LIMIT_BYTES,
            measure: text::bytes,
        }
    }

    /// A template's rendering is the whole content.
    fn templated(&self, _: &Message, rendered: &str) -> Value {
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
