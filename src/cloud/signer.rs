//! The `SDK-HMAC-SHA256` request signer, byte-identical to the official
//! Huawei Cloud SDK signer (`huaweicloudsdkcore/signer/signer.py`).
//!
//! Everything here is a pure function of its inputs: the caller supplies the
//! `X-Sdk-Date` header, so tests can pin it and the simulator can verify a
//! signature with the very same code that produced it.

use hmac::{Hmac, KeyInit, Mac};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
use sha2::{Digest, Sha256};

/// The algorithm name that opens the `Authorization` header.
pub const ALGORITHM: &str = "SDK-HMAC-SHA256";
/// Header carrying the signing time, `YYYYMMDDTHHMMSSZ`.
pub const HEADER_SDK_DATE: &str = "X-Sdk-Date";

/// Characters left bare by the signer: `A-Za-z0-9-_.~` (RFC 3986 unreserved).
/// Everything else, space included, is percent-encoded (`%20`, never `+`).
const ENCODE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// One request as the signer sees it.
#[derive(Debug, Clone, Copy)]
pub struct RequestToSign<'a> {
    pub method: &'a str,
    /// `host[:port]` as sent in the `Host` header.
    pub host: &'a str,
    /// The URI path, e.g. `/v1/{project_id}/app-server-sub-jobs`.
    pub path: &'a str,
    /// Query parameters in any order; the signer sorts them.
    pub query: &'a [(String, String)],
    /// Headers to send (besides `Host`), including `X-Sdk-Date`. Every one
    /// whose name has no `_` is signed.
    pub headers: &'a [(String, String)],
    pub body: &'a [u8],
}

/// What signing produced; the intermediate strings are kept so tests can
/// compare them with the official signer's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    pub canonical_request: String,
    pub string_to_sign: String,
    /// Lower-case, sorted, `;`-joined.
    pub signed_headers: String,
    /// Lower-case hex HMAC.
    pub signature: String,
    /// The full `Authorization` header value.
    pub authorization: String,
}

/// Signs `req` with the access key `ak` and secret key `sk`.
///
/// The `X-Sdk-Date` header must be among `req.headers`; it is read from there
/// for the string to sign (an absent date signs as an empty one, which no
/// gateway accepts, so callers always set it).
pub fn sign(req: &RequestToSign<'_>, ak: &str, sk: &str) -> Signature {
    // Lower-case names, trimmed values; `Host` is always signed.
    let mut headers: Vec<(String, String)> = req
        .headers
        .iter()
        .filter(|(name, _)| !name.contains('_'))
        .map(|(name, value)| (name.to_ascii_lowercase(), value.trim().to_owned()))
        .collect();
    if !headers.iter().any(|(name, _)| name == "host") {
        headers.push(("host".to_owned(), req.host.to_owned()));
    }
    headers.sort();
    headers.dedup_by(|a, b| a.0 == b.0);

    let date = headers
        .iter()
        .find(|(name, _)| name == "x-sdk-date")
        .map(|(_, value)| value.clone())
        .unwrap_or_default();

    let signed_headers = headers
        .iter()
        .map(|(name, _)| name.as_str())
        .collect::<Vec<_>>()
        .join(";");
    let canonical_headers: String = headers
        .iter()
        .map(|(name, value)| format!("{name}:{value}\n"))
        .collect();

    let canonical_request = format!(
        "{}\n{}\n{}\n{}\n{}\n{}",
        req.method.to_ascii_uppercase(),
        canonical_uri(req.path),
        canonical_query(req.query),
        canonical_headers,
        signed_headers,
        hex::encode(Sha256::digest(req.body)),
    );
    let string_to_sign = format!(
        "{ALGORITHM}\n{date}\n{}",
        hex::encode(Sha256::digest(canonical_request.as_bytes()))
    );
    let signature = hex_hmac(sk.as_bytes(), string_to_sign.as_bytes());
    let authorization =
        format!("{ALGORITHM} Access={ak}, SignedHeaders={signed_headers}, Signature={signature}");
    Signature {
        canonical_request,
        string_to_sign,
        signed_headers,
        signature,
        authorization,
    }
}

/// The parts of an `Authorization: SDK-HMAC-SHA256 …` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthorizationHeader {
    pub access: String,
    /// Lower-case header names, in the order given.
    pub signed_headers: Vec<String>,
    pub signature: String,
}

/// Parses an `Authorization` header value; `None` if it is not a
/// well-formed `SDK-HMAC-SHA256` header.
pub fn parse_authorization(value: &str) -> Option<AuthorizationHeader> {
    let rest = value.strip_prefix(ALGORITHM)?.strip_prefix(' ')?;
    let (mut access, mut signed, mut signature) = (None, None, None);
    for part in rest.split(',') {
        let (key, val) = part.trim().split_once('=')?;
        match key {
            "Access" => access = Some(val.to_owned()),
            "SignedHeaders" => signed = Some(val.split(';').map(str::to_ascii_lowercase).collect()),
            "Signature" => signature = Some(val.to_owned()),
            _ => return None,
        }
    }
    Some(AuthorizationHeader {
        access: access?,
        signed_headers: signed?,
        signature: signature?,
    })
}

/// Formats a time as `X-Sdk-Date` wants it: `YYYYMMDDTHHMMSSZ` in UTC.
pub fn sdk_date(at: jiff::Timestamp) -> String {
    at.strftime("%Y%m%dT%H%M%SZ").to_string()
}

/// Parses an `X-Sdk-Date` value.
pub fn parse_sdk_date(value: &str) -> Option<jiff::Timestamp> {
    jiff::fmt::strtime::parse("%Y%m%dT%H%M%SZ", value)
        .ok()?
        .to_datetime()
        .ok()?
        .to_zoned_datetime(jiff::tz::TimeZone::UTC)
        .ok()
        .map(|z| z.timestamp())
}

/// Compares two signatures in time independent of where they differ.
pub fn constant_time_eq(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

fn hex_hmac(key: &[u8], message: &[u8]) -> String {
    // An HMAC key may be of any length, so this cannot fail.
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC accepts any key length");
    mac.update(message);
    hex::encode(mac.finalize().into_bytes())
}

/// Each path segment is decoded, then re-encoded; the result always ends
/// in `/`, as the official signer makes it.
fn canonical_uri(path: &str) -> String {
    let mut uri = path
        .split('/')
        .map(|segment| {
            let decoded = percent_decode_str(segment).decode_utf8_lossy();
            utf8_percent_encode(&decoded, ENCODE).to_string()
        })
        .collect::<Vec<_>>()
        .join("/");
    if !uri.ends_with('/') {
        uri.push('/');
    }
    uri
}

/// The sorted, encoded query string; also what the client puts in its URLs,
/// so the signed query and the sent one are the same bytes.
pub fn canonical_query(query: &[(String, String)]) -> String {
    let mut pairs: Vec<&(String, String)> = query.iter().collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(key, value)| {
            format!(
                "{}={}",
                utf8_percent_encode(key, ENCODE),
                utf8_percent_encode(value, ENCODE)
            )
        })
        .collect::<Vec<_>>()
        .join("&")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uri_always_ends_in_slash() {
        assert_eq!(
            canonical_uri("/v1/p/app-server-sub-jobs"),
            "/v1/p/app-server-sub-jobs/"
        );
        assert_eq!(canonical_uri("/"), "/");
    }

    #[test]
    fn authorization_round_trips() {
        let parsed = parse_authorization(
            "SDK-HMAC-SHA256 Access=AK, SignedHeaders=host;x-sdk-date, Signature=abc",
        )
        .unwrap();
        assert_eq!(parsed.access, "AK");
        assert_eq!(parsed.signed_headers, ["host", "x-sdk-date"]);
        assert_eq!(parsed.signature, "abc");
        assert!(parse_authorization("Bearer x").is_none());
    }

    #[test]
    fn sdk_date_round_trips() {
        let at: jiff::Timestamp = "2026-11-29T08:09:10Z".parse().unwrap();
        assert_eq!(sdk_date(at), "20261129T080910Z");
        assert_eq!(parse_sdk_date("20261129T080910Z"), Some(at));
        assert_eq!(parse_sdk_date("2026-11-29"), None);
    }
}
