//! The generic `webhook` kind: the event JSON in a versioned envelope, with
//! Standard Webhooks signature headers when a secret is set.

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, KeyInit, Mac};
use serde::Serialize;
use sha2::Sha256;

use crate::notify::http::{self, classify_status};
use crate::notify::kind::{self, BuildContext, BuildError, CheckContext, Kind};
use crate::notify::template::{self, Template, TemplateError};
use crate::notify::{Attempt, BoxedAttempt, Deliver, Message, Notifier};
use crate::config::check::Checker;
use crate::config::key::KeyPath;
use crate::config::raw::RawNotifier;
use crate::secret::{Secret, SecretUrl};

/// `[notifiers.NAME]` with `kind = "webhook"`.
#[derive(Debug, Clone, Serialize)]
pub struct Settings {
    pub url: SecretUrl,
    /// Standard Webhooks signing key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<Secret>,
    /// Extra headers. Values are secrets: they usually carry credentials.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, Secret>,
}

impl Kind for Settings {
    const NAME: &'static str = "webhook";
    const KEYS: &'static [&'static str] = &["url", "url_file", "secret", "secret_file", "headers"];
    const DEFAULT_CONCURRENCY: u32 = 4;

    /// The body is posted as `application/json` unless the user set another
    /// Content-Type, so then a template must render JSON.
    fn template_is_json(raw: &RawNotifier) -> bool {
        !raw.headers.iter().flatten().any(|(h, v)| {
            h.eq_ignore_ascii_case("content-type") && !v.to_ascii_lowercase().contains("json")
        })
    }

    fn check(
        ck: &mut Checker<'_>,
        key: &KeyPath,
        mut raw: RawNotifier,
        _: &CheckContext<'_>,
    ) -> Option<Settings> {
        let url = kind::url(ck, key, &mut raw, Self::NAME);
        let secret = kind::signing_secret(ck, key, &mut raw);
        let mut headers = BTreeMap::new();
        for (h, v) in raw.headers.unwrap_or_default() {
            let hk = key.f("headers").f(&h);
            if reqwest::header::HeaderName::from_bytes(h.as_bytes()).is_err() {
                ck.err(&hk, format!("{h:?} is not a valid HTTP header name"));
            } else if reqwest::header::HeaderValue::from_str(&v).is_err() {
                // The value is not shown: headers often carry credentials.
                ck.err(&hk, "the value is not a valid HTTP header value");
            } else {
                if looks_like_credential(&h) {
                    ck.inline_secret(hk);
                }
                headers.insert(h, Secret::new(v));
            }
        }
        Some(Settings {
            url: url?,
            secret,
            headers,
        })
    }

    fn build(&self, cx: BuildContext<'_>) -> Result<Notifier, BuildError> {
        Ok(Notifier::new(WebhookNotifier {
            url: self.url.clone(),
            secret: self.secret.clone(),
            headers: self.headers.clone().into_iter().collect(),
            http: http::client(cx.timeout)?,
            template: cx.template,
        }))
    }
}

/// Whether a header's name suggests its value is a credential. All header
/// values are redacted; only these count as inline secrets for the
/// file-permission warning, so `X-Team = "platform"` does not trigger it.
fn looks_like_credential(header: &str) -> bool {
    let h = header.to_ascii_lowercase();
    [
        "auth",
        "token",
        "key",
        "secret",
        "signature",
        "cookie",
        "password",
    ]
    .iter()
    .any(|w| h.contains(w))
}

#[derive(Debug, Clone)]
pub struct WebhookNotifier {
    pub url: SecretUrl,
    pub secret: Option<Secret>,
    /// Values are secrets: they usually carry credentials.
    pub headers: Vec<(String, Secret)>,
    pub http: reqwest::Client,
    /// When set, its rendering is the whole body instead of [`envelope`].
    pub template: Option<Template>,
}

impl Deliver for WebhookNotifier {
    fn deliver<'a>(&'a self, message: &'a Message) -> BoxedAttempt<'a> {
        Box::pin(self.send(message))
    }
}

impl WebhookNotifier {
    pub async fn send(&self, message: &Message) -> Attempt {
        let body = match self.body(message) {
            Ok(body) => body,
            Err(e) => return template::failed(&e),
        };
        let mut request = self.http.post(self.url.expose().clone());
        // A Content-Type of the user's replaces ours (reqwest would send
        // both: `header` appends).
        if !self
            .headers
            .iter()
            .any(|(name, _)| name.eq_ignore_ascii_case("content-type"))
        {
            request = request.header(reqwest::header::CONTENT_TYPE, "application/json");
        }
        for (name, value) in &self.headers {
            request = request.header(name, value.expose());
        }
        if let Some(secret) = &self.secret {
            let timestamp = jiff::Timestamp::now().as_second();
            request = request
                .header("webhook-id", &message.id)
                .header("webhook-timestamp", timestamp.to_string())
                .header(
                    "webhook-signature",
                    sign(secret, &message.id, timestamp, &body),
                );
        } else {
            // Receivers de-duplicate on it even unsigned.
            request = request.header("webhook-id", &message.id);
        }
        http::send(request.body(body), self.url.expose(), classify_status).await
    }
}

impl WebhookNotifier {
    /// What is posted: the template's rendering (the user writes JSON;
    /// `check` made sure the samples render to JSON), else [`envelope`].
    pub fn body(&self, message: &Message) -> Result<String, TemplateError> {
        match &self.template {
            Some(t) => t.render(message),
            None => Ok(envelope(message).to_string()),
        }
    }
}

/// `{"version":"1","test":false,"group":…,"events":[…]}`; `test` is true
/// only for `notify-test`'s sample.
pub fn envelope(message: &Message) -> serde_json::Value {
    serde_json::json!({
        "version": "1",
        "test": message.test,
        "group": message.group,
        "events": message.events,
    })
}

/// Standard Webhooks: `v1,` + base64(HMAC-SHA256(key, "{id}.{timestamp}.{body}")).
/// A `whsec_` secret is base64 of the key, as the spec's libraries expect;
/// any other secret is used as its UTF-8 bytes.
pub fn sign(secret: &Secret, id: &str, timestamp: i64, body: &str) -> String {
    let raw = secret.expose();
    let key = raw
        .strip_prefix("whsec_")
        .and_then(|b64| BASE64.decode(b64).ok())
        .unwrap_or_else(|| raw.as_bytes().to_vec());
    // HMAC accepts keys of any length.
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).expect("HMAC accepts any key length");
    mac.update(format!("{id}.{timestamp}.{body}").as_bytes());
    format!("v1,{}", BASE64.encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standard_webhooks_reference_vector() {
        // The example in the Standard Webhooks specification.
        let secret = Secret::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
        let body = r#"{"test": 2432232314}"#;
        assert_eq!(
            sign(&secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }
}
