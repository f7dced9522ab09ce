//! What the chat kinds (feishu, dingtalk, wecom, slack, discord, teams)
//! share: the [`Chat`] trait each implements, their one settings type
//! ([`ChatSettings`]: `url`, and `secret` for the kinds that sign), their
//! one notifier ([`ChatNotifier`]) and the one send path every one of them
//! takes: template or built-in body, signing, post, classify. A kind's
//! file says only what is its own: the body's shape and size, how it
//! signs, and what its receiver's answers mean.

use std::fmt;

use jiff::tz::TimeZone;
use serde::Serialize;
use serde_json::Value;
use url::Url;

use super::http::{self, HttpAnswer};
use super::kind::{self, BuildContext, BuildError, CheckContext, Kind};
use super::template::{self, Markup, Template, TemplateError};
use super::text;
use super::{Attempt, BoxedAttempt, Deliver, Message, Notifier};
use crate::config::check::Checker;
use crate::config::key::KeyPath;
use crate::config::raw::RawNotifier;
use crate::ratelimit::RateLimit;
use crate::retry::Verdict;
use crate::secret::{Secret, SecretUrl};

/// How much of a receiver's body a template's rendering may fill, in the
/// receiver's own unit (bytes, chars, UTF-16 units, JSON-escaped bytes:
/// one of `text`'s measures).
#[derive(Debug, Clone, Copy)]
pub struct Room {
    pub budget: usize,
    pub measure: fn(&str) -> usize,
}

impl Room {
    /// What a limit of `limit` bytes on the whole JSON body leaves once
    /// `used` of them are taken (the envelope with empty text, and any
    /// signature added later): for Feishu and Teams.
    pub fn json_body(limit: usize, used: usize) -> Room {
        Room {
            budget: limit.saturating_sub(used),
            measure: text::json_bytes,
        }
    }
}

/// A chat receiver: a JSON body posted to one URL. Implemented by a unit
/// type per kind (`Slack`, `Feishu`, …).
pub trait Chat: fmt::Debug + Clone + Copy + Default + Send + Sync + 'static {
    /// The value of `kind`.
    const NAME: &'static str;
    /// How values a template prints are escaped.
    const MARKUP: Markup = Markup::Plain;
    /// The receiver's documented limit, used when `rate_limit` is absent.
    const DEFAULT_RATE: Option<RateLimit>;
    /// Whether the kind reads a signing `secret` (see [`Chat::signed`]).
    const SIGNS: bool = false;

    /// The built-in body, its times shown in `tz`.
    fn built_in(message: &Message, tz: &TimeZone) -> Value;
    /// Where a template's rendering may go in this message's body.
    fn room(message: &Message) -> Room;
    /// The body around a rendering already cut to [`Chat::room`].
    fn templated(message: &Message, rendered: &str) -> Value;
    /// What the receiver's answer means.
    fn classify(answer: &HttpAnswer) -> Verdict;

    /// The request as sent when a `secret` is set: the kinds that sign add
    /// the signature here (Feishu in the body, DingTalk in the query), at
    /// send time.
    fn signed(url: Url, body: Value, _secret: &Secret) -> (Url, Value) {
        (url, body)
    }
}

/// `[notifiers.NAME]` of a chat kind `C`.
#[derive(Debug, Clone, Serialize)]
#[serde(bound = "")]
pub struct ChatSettings<C> {
    /// The webhook URL; it carries the credential, so it is never shown.
    pub url: SecretUrl,
    /// The signing key, for the kinds that sign.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<Secret>,
    #[serde(skip)]
    pub kind: C,
}

impl<C: Chat> Kind for ChatSettings<C> {
    const NAME: &'static str = C::NAME;
    const KEYS: &'static [&'static str] = if C::SIGNS {
        &["url", "url_file", "secret", "secret_file"]
    } else {
        &["url", "url_file"]
    };
    const MARKUP: Markup = C::MARKUP;
    const DEFAULT_RATE: Option<RateLimit> = C::DEFAULT_RATE;

    fn check(
        ck: &mut Checker<'_>,
        key: &KeyPath,
        mut raw: RawNotifier,
        _: &CheckContext<'_>,
    ) -> Option<ChatSettings<C>> {
        let url = kind::url(ck, key, &mut raw, C::NAME);
        let secret = if C::SIGNS {
            kind::signing_secret(ck, key, &mut raw)
        } else {
            None
        };
        Some(ChatSettings {
            url: url?,
            secret,
            kind: C::default(),
        })
    }

    fn build(&self, cx: BuildContext<'_>) -> Result<Notifier, BuildError> {
        Ok(Notifier::new(ChatNotifier {
            url: self.url.clone(),
            secret: self.secret.clone(),
            http: http::client(cx.timeout)?,
            tz: cx.tz.clone(),
            template: cx.template,
            kind: self.kind,
        }))
    }
}

/// The running notifier of a chat kind `C`.
#[derive(Debug, Clone)]
pub struct ChatNotifier<C> {
    pub url: SecretUrl,
    pub secret: Option<Secret>,
    pub http: reqwest::Client,
    /// `delivery.timezone`: times in the built-in text.
    pub tz: TimeZone,
    /// When set, its rendering replaces the built-in text inside the
    /// kind's envelope.
    pub template: Option<Template>,
    pub kind: C,
}

impl<C: Chat> ChatNotifier<C> {
    /// The unsigned body of `message`: the template's rendering, cut to
    /// the kind's room, in its envelope; or the built-in body.
    pub fn body(&self, message: &Message) -> Result<Value, TemplateError> {
        match &self.template {
            Some(t) => {
                let room = C::room(message);
                let rendered =
                    template::fit_rendered(&t.render(message)?, room.budget, room.measure);
                Ok(C::templated(message, &rendered))
            }
            None => Ok(C::built_in(message, &self.tz)),
        }
    }

    /// The one send path of every chat kind: body (a template that cannot
    /// render is a dead letter at once), signature, post, the kind's verdict.
    pub async fn send(&self, message: &Message) -> Attempt {
        let body = match self.body(message) {
            Ok(body) => body,
            Err(e) => return template::failed(&e),
        };
        let url = self.url.expose().clone();
        let (url, body) = match &self.secret {
            Some(secret) => C::signed(url, body, secret),
            None => (url, body),
        };
        http::post_json(&self.http, &url, &body, C::classify).await
    }
}

impl<C: Chat> Deliver for ChatNotifier<C> {
    fn deliver<'a>(&'a self, message: &'a Message) -> BoxedAttempt<'a> {
        Box::pin(self.send(message))
    }
}
