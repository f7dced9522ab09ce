//! The Workspace API client: one request path (budget → auth → send →
//! classify → retry) for the list and count endpoints and IAM.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde_json::Value;
use tokio::sync::Mutex;
use url::Url;

use super::auth::{
    Credentials, IamToken, TokenCache, TokenSource, password_token_request, read_token_file,
};
use super::error::{ApiError, ClientError, MAX_ANSWER_BYTES};
use super::model::{JobType, Page, Status, json_kind};
use super::signer;
use crate::metrics::{ApiLabels, Metrics};
use crate::ratelimit::RateLimiter;
use crate::retry::{self, Backoff, THROTTLE_WAIT_MIN, parse_retry_after};
use crate::secret::Secret;

/// The page size of full scans: the API's maximum.
pub const MAX_LIMIT: u32 = 100;

const USER_AGENT: &str = concat!("jobwatch/", env!("CARGO_PKG_VERSION"));

/// How to reach the API.
#[derive(Debug, Clone)]
pub struct ClientSettings {
    /// e.g. `https://appstream.cn-north-4.myhuaweicloud.com`.
    pub endpoint: Url,
    /// Per request, connection included.
    pub timeout: Duration,
    /// The account-wide budget, shared by every request of this client.
    pub max_requests_per_minute: u32,
    pub backoff: Backoff,
}

/// Optional filters of a list or count request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    pub status: Option<Status>,
    pub job_id: Option<String>,
}

/// Requests the API budget lets start at once after a quiet spell.
pub const BUDGET_BURST: u32 = 5;

/// A client for one account. Cheap to share behind an `Arc`; every request
/// it makes (IAM included) passes its one budget.
#[derive(Debug)]
pub struct Client {
    http: reqwest::Client,
    endpoint: Url,
    timeout: Duration,
    credentials: Credentials,
    tokens: Mutex<TokenCache>,
    /// Until when the gateway's throttle holds us, while it does: its
    /// start and its end are logged once each.
    throttled_until: std::sync::Mutex<Option<tokio::time::Instant>>,
    budget: Arc<RateLimiter>,
    backoff: Backoff,
    /// Where requests are counted, and the account they are counted for.
    metrics: Option<(Arc<Metrics>, String)>,
}

/// One answer, before it is read as a page or a count.
struct Answer {
    body: Vec<u8>,
    request_id: Option<String>,
}

impl Answer {
    /// The error for a body that is not what `url` promises.
    fn undecodable(&self, url: String, reason: String) -> ClientError {
        ClientError::Decode {
            url,
            request_id: self.request_id.clone(),
            reason,
            snippet: snippet(&self.body),
        }
    }
}

impl Client {
    pub fn new(settings: ClientSettings, credentials: Credentials) -> Result<Client, ClientError> {
        // A one-off `jobs` of a few pages need not wait for its pacing.
        let budget = Arc::new(
            RateLimiter::per_minute(settings.max_requests_per_minute).with_burst(BUDGET_BURST),
        );
        Client::with_budget(settings, credentials, budget)
    }

    /// A client that shares `budget` with others (several clients of one
    /// account must not exceed its limit together).
    pub fn with_budget(
        settings: ClientSettings,
        credentials: Credentials,
        budget: Arc<RateLimiter>,
    ) -> Result<Client, ClientError> {
        if !matches!(settings.endpoint.scheme(), "http" | "https")
            || settings.endpoint.host_str().is_none()
        {
            return Err(ClientError::Invalid(format!(
                "endpoint {} is not an http(s) URL with a host",
                settings.endpoint
            )));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(settings.timeout)
            .user_agent(USER_AGENT)
            // A redirect would carry our signature or token elsewhere.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| ClientError::Invalid(format!("cannot build the HTTP client: {e}")))?;
        Ok(Client {
            http,
            endpoint: settings.endpoint,
            timeout: settings.timeout,
            credentials,
            tokens: Mutex::new(TokenCache::default()),
            throttled_until: std::sync::Mutex::new(None),
            budget,
            backoff: settings.backoff,
            metrics: None,
        })
    }

    /// Counts every request by its HTTP status in `metrics`, labelled
    /// with `account`.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>, account: &str) -> Client {
        self.metrics = Some((metrics, account.to_owned()));
        self
    }

    pub fn budget(&self) -> &Arc<RateLimiter> {
        &self.budget
    }

    pub fn endpoint(&self) -> &Url {
        &self.endpoint
    }

    /// One page of `GET /v1/{project_id}/app-server-sub-jobs`.
    pub async fn list_page(
        &self,
        project_id: &str,
        job_type: &JobType,
        filter: &Filter,
        offset: u64,
        limit: u32,
    ) -> Result<Page, ClientError> {
        let mut query = filter_query(job_type, filter);
        query.push(("offset".into(), offset.to_string()));
        query.push(("limit".into(), limit.to_string()));
        let path = format!("/v1/{}/app-server-sub-jobs", encode_segment(project_id));
        self.get(project_id, &path, &query, Page::from_slice).await
    }

    /// `GET /v1/{project_id}/app-server-sub-jobs/actions/count`.
    pub async fn count(
        &self,
        project_id: &str,
        job_type: &JobType,
        filter: &Filter,
    ) -> Result<u64, ClientError> {
        let query = filter_query(job_type, filter);
        let path = format!(
            "/v1/{}/app-server-sub-jobs/actions/count",
            encode_segment(project_id)
        );
        self.get(project_id, &path, &query, |body| {
            let body: Value = serde_json::from_slice(body).map_err(|e| e.to_string())?;
            match body.get("count") {
                Some(Value::Number(n)) if n.as_u64().is_some() => {
                    Ok(n.as_u64().unwrap_or_default())
                }
                other => Err(format!(
                    "\"count\" is {}, not a non-negative integer",
                    other.map_or("missing", json_kind)
                )),
            }
        })
        .await
    }

    /// A GET with the shared retry policy around it, its answer read by
    /// `decode`: an answer that does not read is a failure like any other,
    /// tried again.
    async fn get<T>(
        &self,
        project_id: &str,
        path: &str,
        query: &[(String, String)],
        decode: impl Fn(&[u8]) -> Result<T, String>,
    ) -> Result<T, ClientError> {
        retry::run(&self.backoff, ClientError::verdict, |_| async {
            let answer = self.get_once(project_id, path, query).await?;
            decode(&answer.body).map_err(|reason| answer.undecodable(self.url(path, query), reason))
        })
        .await
    }

    /// One attempt; a 401 with an IAM token refreshes the token and tries
    /// once more (docs/guarantees.md), inside the same attempt.
    async fn get_once(
        &self,
        project_id: &str,
        path: &str,
        query: &[(String, String)],
    ) -> Result<Answer, ClientError> {
        match self.send(project_id, path, query).await {
            Err(ClientError::Api(api))
                if api.status == 401 && self.forget_token(project_id).await =>
            {
                tracing::info!(project_id, "the API rejected our token; fetching a new one");
                self.send(project_id, path, query).await
            }
            other => other,
        }
    }

    async fn send(
        &self,
        project_id: &str,
        path: &str,
        query: &[(String, String)],
    ) -> Result<Answer, ClientError> {
        let url = self.url(path, query);
        let mut headers: Vec<(String, String)> = vec![
            ("Content-Type".into(), "application/json".into()),
            ("User-Agent".into(), USER_AGENT.into()),
            ("X-Project-Id".into(), project_id.into()),
        ];
        self.authenticate(project_id, path, query, &mut headers)
            .await?;
        self.budget.acquire().await;
        self.note_throttle_over();
        let request = self
            .http
            .get(&url)
            .headers(header_map(&headers)?)
            .timeout(self.timeout);
        let reply = self.exchange(&url, request).await?;
        if !(200..300).contains(&reply.status) {
            let api = reply.api_error();
            if api.is_throttle() {
                // The gateway limits the whole account: everyone waits.
                let wait = api.retry_after.unwrap_or(THROTTLE_WAIT_MIN);
                let until = tokio::time::Instant::now() + wait;
                self.budget.pause_until(until);
                let mut throttled = self
                    .throttled_until
                    .lock()
                    .unwrap_or_else(|p| p.into_inner());
                if throttled.is_none() {
                    tracing::warn!(
                        wait_s = wait.as_secs(),
                        answer = %api,
                        "the API gateway throttles this account; every request to it waits"
                    );
                }
                *throttled = Some(throttled.map_or(until, |t| t.max(until)));
            }
            return Err(ClientError::Api(api));
        }
        Ok(Answer {
            body: reply.body,
            request_id: reply.request_id,
        })
    }

    /// Logs, once, that a throttle pause has ended (at the first request
    /// after it).
    fn note_throttle_over(&self) {
        let mut throttled = self
            .throttled_until
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if throttled.is_some_and(|until| until <= tokio::time::Instant::now()) {
            *throttled = None;
            tracing::info!(
                "the API throttle pause is over; requests go at the budget's pace again"
            );
        }
    }

    /// Sends a request and reads the whole answer.
    async fn exchange(
        &self,
        url: &str,
        request: reqwest::RequestBuilder,
    ) -> Result<Reply, ClientError> {
        let transport = |e: reqwest::Error| {
            if e.is_timeout() {
                ClientError::Timeout {
                    url: url.to_owned(),
                    timeout: self.timeout,
                }
            } else {
                ClientError::Transport {
                    url: url.to_owned(),
                    message: error_chain(&e),
                }
            }
        };
        let response = request.send().await.map_err(transport);
        if let Some((metrics, account)) = &self.metrics {
            let status = match &response {
                Ok(r) => r.status().as_u16().to_string(),
                Err(_) => "error".to_owned(),
            };
            metrics
                .api_requests
                .get_or_create(&ApiLabels {
                    account: account.clone(),
                    status,
                })
                .inc();
        }
        let mut response = response?;
        let status = response.status().as_u16();
        if response.status().is_redirection() {
            return Err(ClientError::Redirect {
                url: url.to_owned(),
                status,
                location: header(response.headers(), "location"),
            });
        }
        let too_large = || ClientError::TooLarge {
            url: url.to_owned(),
        };
        if response
            .content_length()
            .is_some_and(|n| n > MAX_ANSWER_BYTES as u64)
        {
            return Err(too_large());
        }
        let request_id = header(response.headers(), "x-request-id");
        let retry_after = header(response.headers(), "retry-after")
            .and_then(|v| parse_retry_after(&v, SystemTime::now()));
        let subject_token = header(response.headers(), "x-subject-token").map(Secret::new);
        // Read in chunks, so a body without a length is bounded too.
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(transport)? {
            if body.len() + chunk.len() > MAX_ANSWER_BYTES {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Reply {
            status,
            request_id,
            retry_after,
            subject_token,
            body,
        })
    }

    /// Adds the credentials' headers (the AK/SK signature last, over all
    /// the others).
    async fn authenticate(
        &self,
        project_id: &str,
        path: &str,
        query: &[(String, String)],
        headers: &mut Vec<(String, String)>,
    ) -> Result<(), ClientError> {
        match &self.credentials {
            Credentials::None => {}
            Credentials::AkSk {
                ak,
                sk,
                security_token,
            } => {
                headers.push((
                    signer::HEADER_SDK_DATE.into(),
                    signer::sdk_date(jiff::Timestamp::now()),
                ));
                if let Some(token) = security_token {
                    headers.push(("X-Security-Token".into(), token.expose().into()));
                }
                let host = self.host();
                let signature = signer::sign(
                    &signer::RequestToSign {
                        method: "GET",
                        host: &host,
                        path,
                        query,
                        headers,
                        body: b"",
                    },
                    ak,
                    sk.expose(),
                );
                headers.push(("Authorization".into(), signature.authorization));
            }
            Credentials::Token(source) => {
                let token = match source {
                    TokenSource::Inline(token) => token.clone(),
                    TokenSource::File(path) => {
                        let mut cache = self.tokens.lock().await;
                        let file = read_token_file(path, cache.file.as_ref())
                            .map_err(ClientError::Auth)?;
                        let value = file.value.clone();
                        cache.file = Some(file);
                        value
                    }
                };
                headers.push(("X-Auth-Token".into(), token.expose().into()));
            }
            Credentials::Password(_) => {
                let token = self.iam_token(project_id).await?;
                headers.push(("X-Auth-Token".into(), token.expose().into()));
            }
        }
        Ok(())
    }

    /// Drops a cached IAM token; true if there was one to drop (only then
    /// is a 401 worth one more try).
    async fn forget_token(&self, project_id: &str) -> bool {
        let Credentials::Password(creds) = &self.credentials else {
            return false;
        };
        let project_id = creds.scope_project.as_deref().unwrap_or(project_id);
        self.tokens.lock().await.iam.remove(project_id).is_some()
    }

    /// A fresh project-scoped IAM token, from the cache or from IAM.
    async fn iam_token(&self, project_id: &str) -> Result<Secret, ClientError> {
        let Credentials::Password(creds) = &self.credentials else {
            return Err(ClientError::Auth("no password credentials".into()));
        };
        let project_id = creds.scope_project.as_deref().unwrap_or(project_id);
        // Held across the fetch so concurrent pollers wait for one token
        // instead of each fetching their own.
        let mut cache = self.tokens.lock().await;
        if let Some(token) = cache.iam.get(project_id)
            && token.is_fresh(jiff::Timestamp::now())
        {
            return Ok(token.value.clone());
        }
        let mut url = creds.iam_endpoint.clone();
        url.set_path("/v3/auth/tokens");
        let url = url.to_string();
        self.budget.acquire().await;
        let request = self
            .http
            .post(&url)
            .json(&password_token_request(creds, project_id))
            .timeout(self.timeout);
        let reply = self.exchange(&url, request).await?;
        if matches!(reply.status, 400 | 401 | 403) {
            return Err(ClientError::Auth(format!(
                "IAM refused a token for user {:?} in domain {:?}: {}",
                creds.user,
                creds.domain,
                reply.api_error()
            )));
        }
        if !(200..300).contains(&reply.status) {
            return Err(ClientError::Api(reply.api_error()));
        }
        let bad = |reason: &str| ClientError::Decode {
            url: url.clone(),
            request_id: reply.request_id.clone(),
            reason: reason.to_owned(),
            snippet: snippet(&reply.body),
        };
        // The token arrives in a header; its expiry in the body.
        let value = reply
            .subject_token
            .clone()
            .ok_or_else(|| bad("IAM answered without an X-Subject-Token header"))?;
        let body: Value = serde_json::from_slice(&reply.body).map_err(|e| bad(&e.to_string()))?;
        let expires_at = body["token"]["expires_at"]
            .as_str()
            .and_then(super::model::parse_api_time)
            .ok_or_else(|| bad("IAM answered without a readable token.expires_at"))?;
        tracing::info!(project_id, %expires_at, "fetched an IAM token");
        let token = IamToken { value, expires_at };
        cache.iam.insert(project_id.to_owned(), token.clone());
        Ok(token.value)
    }

    fn host(&self) -> String {
        let host = self.endpoint.host_str().unwrap_or_default();
        match self.endpoint.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_owned(),
        }
    }

    fn url(&self, path: &str, query: &[(String, String)]) -> String {
        let base = self.endpoint.as_str().trim_end_matches('/');
        let query = signer::canonical_query(query);
        if query.is_empty() {
            format!("{base}{path}")
        } else {
            format!("{base}{path}?{query}")
        }
    }
}

/// A whole HTTP answer.
struct Reply {
    status: u16,
    request_id: Option<String>,
    retry_after: Option<Duration>,
    subject_token: Option<Secret>,
    body: Vec<u8>,
}

impl Reply {
    /// Reads an error answer: `{error_code, error_msg}`, or
    /// `{error:{code,message}}`, or whatever text came.
    fn api_error(&self) -> ApiError {
        let json: Option<Value> = serde_json::from_slice(&self.body).ok();
        let field = |value: Option<&Value>| match value {
            Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
            Some(Value::Number(n)) => Some(n.to_string()),
            _ => None,
        };
        let (error_code, error_msg) = match &json {
            Some(v) => (
                field(v.get("error_code")).or_else(|| field(v.pointer("/error/code"))),
                field(v.get("error_msg"))
                    .or_else(|| field(v.pointer("/error/message")))
                    .or_else(|| field(v.get("message"))),
            ),
            None => (None, None),
        };
        let error_msg = error_msg.or_else(|| {
            let text = snippet(&self.body);
            (!text.is_empty()).then_some(text)
        });
        ApiError {
            status: self.status,
            error_code,
            error_msg,
            request_id: self.request_id.clone(),
            retry_after: self.retry_after,
        }
    }
}

fn filter_query(job_type: &JobType, filter: &Filter) -> Vec<(String, String)> {
    let mut query = vec![("job_type".to_owned(), job_type.to_string())];
    if let Some(status) = &filter.status {
        query.push(("status".into(), status.to_string()));
    }
    if let Some(job_id) = &filter.job_id {
        query.push(("job_id".into(), job_id.clone()));
    }
    query
}

/// A project id goes into the path; encode it so an odd one cannot change
/// the path's shape.
fn encode_segment(segment: &str) -> String {
    signer::canonical_query(&[(String::new(), segment.to_owned())])
        .trim_start_matches('=')
        .to_owned()
}

fn header_map(headers: &[(String, String)]) -> Result<HeaderMap, ClientError> {
    let mut map = HeaderMap::new();
    for (name, value) in headers {
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| ClientError::Invalid(format!("bad header name {name:?}")))?;
        // Never echo the value: it may be a token.
        let value = HeaderValue::from_str(value).map_err(|_| {
            ClientError::Invalid(format!("header {name} has characters HTTP does not allow"))
        })?;
        map.insert(name, value);
    }
    Ok(map)
}

fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers.get(name)?.to_str().ok().map(str::to_owned)
}

/// The first 200 characters of a body, for error messages.
fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    match text.char_indices().nth(200) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

/// reqwest's error with its sources ("connection reset by peer" is three
/// levels down).
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        message.push_str(": ");
        message.push_str(&e.to_string());
        source = e.source();
    }
    message
}
