//! Checks the credentials of a cloud request the way the API gateway does:
//! an `SDK-HMAC-SHA256` signature rebuilt from the request and verified with
//! the same signer the client uses, a static token, or an issued IAM token.

use std::collections::HashMap;
use std::time::Duration;

use axum::http::request::Parts;
use jiff::Timestamp;

use super::answer::ErrorAnswer;
use crate::cloud::signer::{self, RequestToSign};
use crate::secret::Secret;

/// The gateway rejects a signing time further than this from its clock.
pub const MAX_SKEW: Duration = Duration::from_secs(15 * 60);

/// Which credentials the cloud surface accepts. All `None`: anything goes.
#[derive(Debug, Clone, Default)]
pub struct AuthRules {
    pub aksk: Option<(String, Secret)>,
    pub token: Option<Secret>,
    pub iam: Option<(String, Secret)>,
}

impl AuthRules {
    pub fn is_open(&self) -> bool {
        self.aksk.is_none() && self.token.is_none() && self.iam.is_none()
    }
}

/// Accepts or rejects one request. `tokens` are the issued IAM tokens.
pub fn check(
    config: &AuthRules,
    tokens: &HashMap<String, Timestamp>,
    parts: &Parts,
    body: &[u8],
    now: Timestamp,
) -> Result<(), ErrorAnswer> {
    if config.is_open() {
        return Ok(());
    }
    if let Some(value) = parts.headers.get("authorization")
        && let Some((ak, sk)) = &config.aksk
    {
        let value = value
            .to_str()
            .map_err(|_| unauthorized("Authorization header is not valid text"))?;
        return check_signature(ak, sk, value, parts, body, now);
    }
    if let Some(value) = parts.headers.get("x-auth-token")
        && (config.token.is_some() || config.iam.is_some())
    {
        let token = value.to_str().unwrap_or_default();
        let static_ok = config
            .token
            .as_ref()
            .is_some_and(|t| signer::constant_time_eq(t.expose(), token));
        let issued_ok = tokens.get(token).is_some_and(|expires| *expires > now);
        return if static_ok || issued_ok {
            Ok(())
        } else {
            Err(unauthorized("decrypt token fail"))
        };
    }
    Err(unauthorized(if config.aksk.is_some() {
        "Authorization header missing"
    } else {
        "X-Auth-Token header missing"
    }))
}

fn check_signature(
    ak: &str,
    sk: &Secret,
    value: &str,
    parts: &Parts,
    body: &[u8],
    now: Timestamp,
) -> Result<(), ErrorAnswer> {
    let auth = signer::parse_authorization(value)
        .ok_or_else(|| unauthorized("Authorization header is not SDK-HMAC-SHA256"))?;
    if !signer::constant_time_eq(&auth.access, ak) {
        return Err(unauthorized(&format!(
            "Get secretKey failed,ak:{},err:ak not exist",
            auth.access
        )));
    }
    if !auth.signed_headers.iter().any(|h| h == "x-sdk-date") {
        return Err(unauthorized("x-sdk-date is not signed"));
    }
    let mut headers = Vec::with_capacity(auth.signed_headers.len());
    for name in &auth.signed_headers {
        let value = parts
            .headers
            .get(name.as_str())
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| unauthorized(&format!("signed header {name} is missing")))?;
        headers.push((name.clone(), value.to_owned()));
    }
    let date = headers
        .iter()
        .find(|(name, _)| name == "x-sdk-date")
        .and_then(|(_, v)| signer::parse_sdk_date(v))
        .ok_or_else(|| unauthorized("x-sdk-date is not YYYYMMDDTHHMMSSZ"))?;
    let skew = now.duration_since(date).unsigned_abs();
    if skew > MAX_SKEW {
        return Err(unauthorized("the request time is more than 15 minutes off"));
    }
    let host = parts
        .headers
        .get("host")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let query: Vec<(String, String)> =
        url::form_urlencoded::parse(parts.uri.query().unwrap_or_default().as_bytes())
            .into_owned()
            .collect();
    let request = RequestToSign {
        method: parts.method.as_str(),
        host,
        path: parts.uri.path(),
        query: &query,
        headers: &headers,
        body,
    };
    let expected = signer::sign(&request, ak, sk.expose());
    if signer::constant_time_eq(&expected.signature, &auth.signature) {
        Ok(())
    } else {
        Err(unauthorized("verify aksk signature fail"))
    }
}

/// The gateway's 401: `APIG.0301` with the reason after a colon.
pub fn unauthorized(reason: &str) -> ErrorAnswer {
    ErrorAnswer::new(
        axum::http::StatusCode::UNAUTHORIZED,
        "APIG.0301",
        format!("Incorrect IAM authentication information: {reason}"),
    )
}
