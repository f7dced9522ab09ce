//! Typed errors of the cloud client, and what the retry policy makes of them.

use std::fmt;
use std::time::Duration;

use crate::retry::{Retryable, Verdict};

/// An error answer from the API: its HTTP status and the body's
/// `{error_code, error_msg}` (or `{error:{code,message}}`), with the
/// `X-Request-Id` that Huawei support asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: u16,
    pub error_code: Option<String>,
    pub error_msg: Option<String>,
    pub request_id: Option<String>,
    /// The `Retry-After` the answer carried, capped at ten minutes.
    pub retry_after: Option<Duration>,
}

impl ApiError {
    /// The gateway's flow control: HTTP 429 or an `APIG.0308`-style code.
    pub fn is_throttle(&self) -> bool {
        self.status == 429
            || self
                .error_code
                .as_deref()
                .is_some_and(|code| code.ends_with(".0308"))
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HTTP {}", self.status)?;
        if let Some(code) = &self.error_code {
            write!(f, " {code}")?;
        }
        if let Some(msg) = &self.error_msg {
            write!(f, ": {msg}")?;
        }
        if let Some(id) = &self.request_id {
            write!(f, " (request id {id})")?;
        }
        Ok(())
    }
}

impl std::error::Error for ApiError {}

/// The largest answer read from the API. A page of 100 sub-jobs is some
/// 50 KB; this leaves room for long messages and is still far from what
/// would hurt the daemon's memory.
pub const MAX_ANSWER_BYTES: usize = 8 << 20;

/// Everything a cloud call can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("the API answered {0}")]
    Api(ApiError),
    #[error("request to {url} failed: {message}")]
    Transport { url: String, message: String },
    #[error("no answer from {url} within {timeout:?}")]
    Timeout { url: String, timeout: Duration },
    /// A 2xx answer whose body is not what the API documents (malformed or
    /// truncated JSON, wrong shape).
    #[error("unreadable answer from {url}{}: {reason}; body starts {snippet:?}", request_id.as_deref().map(|id| format!(" (request id {id})")).unwrap_or_default())]
    Decode {
        url: String,
        request_id: Option<String>,
        reason: String,
        snippet: String,
    },
    /// A 3xx: the client follows no redirect, so the credentials it signs
    /// or sends never reach another origin.
    #[error("{url} answered HTTP {status}, a redirect to {}; jobwatch follows no redirects from the API (credentials go to the configured endpoint only)", location.as_deref().unwrap_or("nowhere (no Location header)"))]
    Redirect {
        url: String,
        status: u16,
        location: Option<String>,
    },
    /// An answer beyond [`MAX_ANSWER_BYTES`]: no API page is that large.
    #[error("the answer from {url} is larger than {} MiB; nothing of it was used", MAX_ANSWER_BYTES >> 20)]
    TooLarge { url: String },
    #[error("authentication failed: {0}")]
    Auth(String),
    #[error("invalid request: {0}")]
    Invalid(String),
}

impl ClientError {
    /// The shared retry classification (docs/guarantees.md): 429/`APIG.0308`, 408, 5xx,
    /// timeouts, connection errors and unreadable bodies are retried;
    /// other 4xx are not.
    pub fn verdict(&self) -> Verdict {
        match self {
            ClientError::Api(api) if api.is_throttle() => {
                Verdict::Retry(Retryable::throttled(api.to_string(), api.retry_after))
            }
            ClientError::Api(api) if api.status == 408 || api.status >= 500 => {
                let mut retryable = Retryable::new(api.to_string());
                retryable.retry_after = api.retry_after;
                Verdict::Retry(retryable)
            }
            ClientError::Api(api) => Verdict::DontRetry(api.to_string()),
            ClientError::Transport { .. }
            | ClientError::Timeout { .. }
            | ClientError::Decode { .. } => Verdict::Retry(Retryable::new(self.to_string())),
            ClientError::Auth(_)
            | ClientError::Invalid(_)
            | ClientError::Redirect { .. }
            | ClientError::TooLarge { .. } => Verdict::DontRetry(self.to_string()),
        }
    }

    /// The API's own answer, when there was one.
    pub fn api(&self) -> Option<&ApiError> {
        match self {
            ClientError::Api(api) => Some(api),
            _ => None,
        }
    }
}
