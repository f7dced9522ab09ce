//! What the chat kinds (feishu, dingtalk, wecom, slack, discord, teams)
//! share: the [`ChatKind`] trait each implements, and the one send path
//! that every one of them takes — template or built-in body, signing,
//! post, classify. A kind's file says only what is its own: the body's
//! shape and size, how it signs, and what its receiver's answers mean.
//!
//! Every `ChatKind` is a [`Deliver`], so `Notifier::new` takes one as is.

use serde_json::Value;
use url::Url;

use super::http::{self, HttpAnswer};
use super::template::{self, Template, TemplateError};
use super::text;
use super::{Attempt, BoxedAttempt, Deliver, Message};
use crate::retry::Verdict;
use crate::secret::SecretUrl;

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

/// What the send path needs of a chat notifier besides its body.
#[derive(Debug, Clone, Copy)]
pub struct Endpoint<'a> {
    /// The webhook URL (it carries the credential).
    pub url: &'a SecretUrl,
    pub http: &'a reqwest::Client,
    /// The user's `template`, when set: its rendering replaces the
    /// built-in text inside the kind's envelope.
    pub template: Option<&'a Template>,
}

impl<'a> Endpoint<'a> {
    pub fn new(
        url: &'a SecretUrl,
        http: &'a reqwest::Client,
        template: Option<&'a Template>,
    ) -> Endpoint<'a> {
        Endpoint {
            url,
            http,
            template,
        }
    }
}

/// A chat receiver: a JSON body posted to one URL.
pub trait ChatKind: std::fmt::Debug + Send + Sync {
    fn endpoint(&self) -> Endpoint<'_>;

    /// The built-in body.
    fn built_in(&self, message: &Message) -> Value;
    /// Where a template's rendering may go in this message's body.
    fn room(&self, message: &Message) -> Room;
    /// The body around a rendering already cut to [`ChatKind::room`].
    fn templated(&self, message: &Message, rendered: &str) -> Value;
    /// What the receiver's answer means.
    fn classify(answer: &HttpAnswer) -> Verdict;

    /// The request as sent: the kinds that sign add the signature here
    /// (Feishu in the body, DingTalk in the query), at send time.
    fn signed(&self, url: Url, body: Value) -> (Url, Value) {
        (url, body)
    }

    /// The unsigned body of `message` (see [`body`]).
    fn body(&self, message: &Message) -> Result<Value, TemplateError>
    where
        Self: Sized,
    {
        body(self, message)
    }

    /// One delivery attempt (see [`send`]).
    fn send(&self, message: &Message) -> impl Future<Output = Attempt> + Send
    where
        Self: Sized,
    {
        send(self, message)
    }
}

/// The template's rendering, cut to the kind's room, in its envelope; or
/// the built-in body.
pub fn body<K: ChatKind>(kind: &K, message: &Message) -> Result<Value, TemplateError> {
    match kind.endpoint().template {
        Some(t) => {
            let room = kind.room(message);
            let rendered = template::fit_rendered(&t.render(message)?, room.budget, room.measure);
            Ok(kind.templated(message, &rendered))
        }
        None => Ok(kind.built_in(message)),
    }
}

/// The one send path of every chat kind: body (a template that cannot
/// render is a dead letter at once), signature, post, the kind's verdict.
pub async fn send<K: ChatKind>(kind: &K, message: &Message) -> Attempt {
    let body = match body(kind, message) {
        Ok(body) => body,
        Err(e) => return template::failed(&e),
    };
    let endpoint = kind.endpoint();
    let (url, body) = kind.signed(endpoint.url.expose().clone(), body);
    http::post_json(endpoint.http, &url, &body, K::classify).await
}

impl<K: ChatKind> Deliver for K {
    fn deliver<'a>(&'a self, message: &'a Message) -> BoxedAttempt<'a> {
        Box::pin(send(self, message))
    }
}
