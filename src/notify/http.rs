//! What an HTTP receiver's answer means, for every HTTP notifier kind:
//! 2xx success; 408, 429 and 5xx retryable (429 throttles the notifier);
//! other statuses permanent, with the receiver's words kept.

use std::time::{Duration, SystemTime};

use reqwest::header::HeaderMap;

use url::Url;

use super::Attempt;
use crate::retry::{Retryable, Verdict, parse_retry_after};

/// The HTTP client of one notifier: `timeout` bounds a whole attempt, and
/// connecting gets at most ten seconds of it.
pub fn client(timeout: Duration) -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(10)))
        .user_agent(concat!("jobwatch/", env!("CARGO_PKG_VERSION")))
        // A redirect would re-send the message, signed, wherever a 3xx
        // points; it is a failure naming where (see `HttpAnswer::describe`).
        .redirect(reqwest::redirect::Policy::none())
        .build()
}

/// The receiver's answer, read whole (bounded) so its words can be kept.
#[derive(Debug, Clone)]
pub struct HttpAnswer {
    pub status: u16,
    pub retry_after: Option<Duration>,
    /// Where a 3xx points: its origin (see `redirect_target`).
    pub redirected_to: Option<String>,
    pub body: String,
}

/// Receivers' bodies beyond this are cut: we only keep them for messages.
const MAX_BODY: usize = 64 * 1024;

impl HttpAnswer {
    pub async fn read(response: reqwest::Response) -> HttpAnswer {
        let status = response.status().as_u16();
        let retry_after = retry_after(response.headers());
        let redirected_to = response
            .status()
            .is_redirection()
            .then(|| redirect_target(response.url(), response.headers()));
        let mut body = response
            .text()
            .await
            .unwrap_or_else(|e| format!("(unreadable body: {e})"));
        if body.len() > MAX_BODY {
            let mut cut = MAX_BODY;
            while !body.is_char_boundary(cut) {
                cut -= 1;
            }
            body.truncate(cut);
        }
        HttpAnswer {
            status,
            retry_after,
            redirected_to,
            body,
        }
    }

    /// `HTTP 400: {"error":"…"}`, shortened for logs and dead letters.
    pub fn describe(&self) -> String {
        if let Some(to) = &self.redirected_to {
            return format!(
                "HTTP {}: redirected to {to}; jobwatch follows no redirects (set the notifier's URL to where it points)",
                self.status
            );
        }
        let body = self.body.trim();
        if body.is_empty() {
            format!("HTTP {}", self.status)
        } else {
            let short: String = body.chars().take(500).collect();
            format!("HTTP {}: {short}", self.status)
        }
    }
}

/// A redirect's target as it may be shown: its origin only. The path can
/// be a credential (a redirect from http to https keeps Slack's token in
/// it), and the query too.
fn redirect_target(from: &Url, headers: &HeaderMap) -> String {
    let Some(location) = headers
        .get(reqwest::header::LOCATION)
        .and_then(|v| v.to_str().ok())
    else {
        return "nowhere (no Location header)".to_owned();
    };
    match from.join(location) {
        Ok(to) => format!("{}/…", to.origin().ascii_serialization()),
        Err(_) => "a Location that is not a URL".to_owned(),
    }
}

pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?;
    parse_retry_after(value, SystemTime::now())
}

/// The generic rule by status alone.
pub fn classify_status(answer: &HttpAnswer) -> Verdict {
    match answer.status {
        200..=299 => Verdict::Success,
        429 => Verdict::Retry(Retryable::throttled(answer.describe(), answer.retry_after)),
        408 | 500..=599 => Verdict::Retry(Retryable {
            reason: answer.describe(),
            retry_after: answer.retry_after,
            throttled: false,
        }),
        _ => Verdict::DontRetry(answer.describe()),
    }
}

/// A request that got no answer is always worth another try.
pub fn classify_transport(error: &reqwest::Error) -> Verdict {
    let mut message = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(e) = source {
        message.push_str(": ");
        message.push_str(&e.to_string());
        source = e.source();
    }
    Verdict::Retry(Retryable::new(message))
}

/// Posts `body` as JSON to `url` and judges the answer with `classify`:
/// what every chat kind sends (see `chat::send`).
pub async fn post_json(
    http: &reqwest::Client,
    url: &Url,
    body: &serde_json::Value,
    classify: impl Fn(&HttpAnswer) -> Verdict,
) -> Attempt {
    send(http.post(url.clone()).json(body), url, classify).await
}

/// Sends a request built for `url` and judges the answer with `classify`:
/// the one request path of every HTTP kind. Nothing that names the URL
/// reaches the attempt's text (see [`transport_failure`]).
pub async fn send(
    request: reqwest::RequestBuilder,
    url: &Url,
    classify: impl Fn(&HttpAnswer) -> Verdict,
) -> Attempt {
    match request.send().await {
        Ok(response) => {
            let mut answer = HttpAnswer::read(response).await;
            // An unreadable body's error text names the URL.
            answer.body = scrub(&answer.body, url);
            // A redirect is no kind's to read as success or a retry.
            let verdict = match &answer.redirected_to {
                Some(_) => Verdict::DontRetry(answer.describe()),
                None => classify(&answer),
            };
            Attempt {
                verdict,
                answer: answer.describe(),
            }
        }
        Err(error) => transport_failure(error, url),
    }
}

/// The attempt for a request that got no answer. reqwest's errors name the
/// URL, and a chat webhook's URL is its credential (WeCom's `?key=`, the
/// token in Slack's and Discord's paths), so the URL is stripped from the
/// error and, in case a source error repeats it, scrubbed from the text.
pub fn transport_failure(error: reqwest::Error, url: &Url) -> Attempt {
    let verdict = match classify_transport(&error.without_url()) {
        Verdict::Retry(mut r) => {
            r.reason = scrub(&r.reason, url);
            Verdict::Retry(r)
        }
        Verdict::DontRetry(reason) => Verdict::DontRetry(scrub(&reason, url)),
        Verdict::Success => Verdict::Success,
    };
    let answer = match &verdict {
        Verdict::Retry(r) => r.reason.clone(),
        Verdict::DontRetry(reason) => reason.clone(),
        Verdict::Success => "sent".to_owned(),
    };
    Attempt { verdict, answer }
}

/// Removes the URL and its secret-bearing parts (path, query) from `text`.
pub fn scrub(text: &str, url: &Url) -> String {
    let mut out = text.replace(url.as_str(), "<webhook url>");
    let path = url.path();
    if path.len() > 1 {
        out = out.replace(path, "/<redacted>");
    }
    if let Some(query) = url.query().filter(|q| !q.is_empty()) {
        out = out.replace(query, "<redacted>");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16) -> HttpAnswer {
        HttpAnswer {
            status,
            retry_after: None,
            redirected_to: None,
            body: "nope".into(),
        }
    }

    #[test]
    fn statuses() {
        assert_eq!(classify_status(&answer(204)), Verdict::Success);
        assert!(matches!(classify_status(&answer(503)), Verdict::Retry(r) if !r.throttled));
        assert!(matches!(classify_status(&answer(408)), Verdict::Retry(_)));
        assert!(matches!(classify_status(&answer(429)), Verdict::Retry(r) if r.throttled));
        assert_eq!(
            classify_status(&answer(400)),
            Verdict::DontRetry("HTTP 400: nope".into())
        );
    }

    #[test]
    fn scrub_removes_keys() {
        let url: Url = "https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=s3cr3t"
            .parse()
            .expect("a valid literal");
        let text = format!("error sending request for url ({url}): key=s3cr3t");
        let clean = scrub(&text, &url);
        assert!(!clean.contains("s3cr3t"), "{clean}");
    }
}
