//! Credentials and what they put on a request: an AK/SK signature, a static
//! token (inline or from a file that is re-read when it changes), or an IAM
//! user token fetched with a password, cached and refreshed before expiry.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use url::Url;

use crate::secret::Secret;

/// IAM tokens live 24 h; we fetch a new one this long before expiry so a
/// long scan never runs into the edge.
pub const REFRESH_BEFORE_EXPIRY: Duration = Duration::from_secs(40 * 60);

/// How requests prove who they come from.
#[derive(Debug, Clone)]
pub enum Credentials {
    /// No authentication (a simulator or an authenticating proxy).
    None,
    /// `SDK-HMAC-SHA256` signing, as the official SDK does.
    AkSk {
        ak: String,
        sk: Secret,
        /// For temporary credentials (`X-Security-Token`).
        security_token: Option<Secret>,
    },
    /// A static `X-Auth-Token`.
    Token(TokenSource),
    /// An IAM user token from `POST {iam}/v3/auth/tokens`.
    Password(PasswordCredentials),
}

/// Where a static token comes from. A file is kept as a path and re-read
/// whenever its modification time or size changes, so a token rotated by
/// another process is picked up without a restart. Serialised as the
/// config key it was given by (`check` prints it, the token as `***`).
#[derive(Debug, Clone, serde::Serialize)]
pub enum TokenSource {
    #[serde(rename = "token")]
    Inline(Secret),
    #[serde(rename = "token_file")]
    File(PathBuf),
}

#[derive(Debug, Clone)]
pub struct PasswordCredentials {
    pub user: String,
    pub password: Secret,
    /// The account (domain) name the user belongs to.
    pub domain: String,
    pub iam_endpoint: Url,
    /// Scope every token to this project instead of each request's own.
    pub scope_project: Option<String>,
}

/// An IAM token and when it stops working.
#[derive(Debug, Clone)]
pub struct IamToken {
    pub value: Secret,
    pub expires_at: jiff::Timestamp,
}

impl IamToken {
    pub fn is_fresh(&self, now: jiff::Timestamp) -> bool {
        let refresh_at = self
            .expires_at
            .checked_sub(jiff::SignedDuration::try_from(REFRESH_BEFORE_EXPIRY).unwrap_or_default())
            .unwrap_or(self.expires_at);
        now < refresh_at
    }
}

/// The body IAM wants for a project-scoped password token.
pub fn password_token_request(creds: &PasswordCredentials, project_id: &str) -> serde_json::Value {
    serde_json::json!({
        "auth": {
            "identity": {
                "methods": ["password"],
                "password": {
                    "user": {
                        "name": creds.user,
                        "password": creds.password.expose(),
                        "domain": {"name": creds.domain}
                    }
                }
            },
            "scope": {"project": {"id": project_id}}
        }
    })
}

/// Tokens cached per project scope, and the last token file read.
#[derive(Debug, Default)]
pub(crate) struct TokenCache {
    pub iam: HashMap<String, IamToken>,
    pub file: Option<FileToken>,
}

#[derive(Debug, Clone)]
pub(crate) struct FileToken {
    pub path: PathBuf,
    pub modified: Option<SystemTime>,
    pub len: u64,
    pub value: Secret,
}

/// Reads a token file unless the cached copy is still current.
pub(crate) fn read_token_file(
    path: &PathBuf,
    cached: Option<&FileToken>,
) -> Result<FileToken, String> {
    let meta = std::fs::metadata(path)
        .map_err(|e| format!("cannot read token file {}: {e}", path.display()))?;
    let modified = meta.modified().ok();
    if let Some(cached) = cached
        && cached.path == *path
        && cached.modified == modified
        && cached.len == meta.len()
    {
        return Ok(cached.clone());
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read token file {}: {e}", path.display()))?;
    let value = text.trim();
    if value.is_empty() {
        return Err(format!("token file {} is empty", path.display()));
    }
    Ok(FileToken {
        path: path.clone(),
        modified,
        len: meta.len(),
        value: Secret::new(value),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_refresh_forty_minutes_early() {
        let expires_at: jiff::Timestamp = "2026-11-30T12:00:00Z".parse().unwrap();
        let token = IamToken {
            value: Secret::new("t"),
            expires_at,
        };
        assert!(token.is_fresh("2026-11-30T11:19:59Z".parse().unwrap()));
        assert!(!token.is_fresh("2026-11-30T11:20:00Z".parse().unwrap()));
    }

    #[test]
    fn token_file_is_reread_when_it_changes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "first\n").unwrap();
        let first = read_token_file(&path, None).unwrap();
        assert_eq!(first.value.expose(), "first");
        std::fs::write(&path, "second-token\n").unwrap();
        let second = read_token_file(&path, Some(&first)).unwrap();
        assert_eq!(second.value.expose(), "second-token");
        std::fs::write(&path, "\n").unwrap();
        assert!(
            read_token_file(&path, Some(&second))
                .unwrap_err()
                .contains("empty")
        );
    }
}
