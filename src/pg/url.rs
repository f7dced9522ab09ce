//! `[state] url`: where the PostgreSQL state lives. The URL may hold a
//! password, so it is a secret: shown only without it.

use std::fmt;
use std::str::FromStr;

/// A parsed `postgres://` URL.
#[derive(Clone)]
pub struct PgUrl {
    pub(super) config: tokio_postgres::Config,
    /// `sslrootcert=PATH`: the only roots the server's certificate is
    /// checked against (a private CA), as libpq's; else the system's.
    pub(super) root_cert: Option<std::path::PathBuf>,
    /// What logs and errors may show: no password.
    shown: String,
}

impl PgUrl {
    /// The URL as it may be shown: user, hosts, port and database.
    pub fn shown(&self) -> &str {
        &self.shown
    }

    /// Whether TLS is asked for (`sslmode=require`, or the `verify-*`
    /// modes, which rustls always does).
    pub fn tls(&self) -> bool {
        self.config.get_ssl_mode() != tokio_postgres::config::SslMode::Disable
    }
}

impl fmt::Debug for PgUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("PgUrl").field(&self.shown).finish()
    }
}

impl fmt::Display for PgUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.shown)
    }
}

impl serde::Serialize for PgUrl {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.shown)
    }
}

/// Why a URL was refused; never quotes the URL (it may hold a password).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct PgUrlError(String);

impl FromStr for PgUrl {
    type Err = PgUrlError;

    fn from_str(text: &str) -> Result<PgUrl, PgUrlError> {
        let text = text.trim();
        if !(text.starts_with("postgres://") || text.starts_with("postgresql://")) {
            return Err(PgUrlError(
                "not a PostgreSQL URL; expected postgres://USER[:PASSWORD]@HOST:PORT/DB".into(),
            ));
        }
        // tokio-postgres knows `disable`, `prefer` and `require`; with rustls
        // every TLS connection verifies the server's certificate and name,
        // which is what libpq's `verify-full` means.
        let text = ["verify-full", "verify-ca"]
            .iter()
            .fold(text.to_owned(), |t, mode| {
                t.replace(&format!("sslmode={mode}"), "sslmode=require")
            });
        // `sslrootcert` is ours to read (tokio-postgres leaves TLS to its
        // connector): taken out of the query before the driver parses it.
        let (text, root_cert) = take_param(&text, "sslrootcert");
        let config = tokio_postgres::Config::from_str(&text)
            .map_err(|e| PgUrlError(format!("not a valid PostgreSQL URL: {e}")))?;
        if config.get_hosts().is_empty() {
            return Err(PgUrlError("names no host".into()));
        }
        let Some(db) = config.get_dbname() else {
            return Err(PgUrlError("names no database (…/DB at the end)".into()));
        };
        let hosts: Vec<String> = config
            .get_hosts()
            .iter()
            .map(|h| match h {
                tokio_postgres::config::Host::Tcp(name) => name.clone(),
                tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
            })
            .collect();
        let port = config
            .get_ports()
            .first()
            .map(|p| format!(":{p}"))
            .unwrap_or_default();
        let user = config
            .get_user()
            .map(|u| format!("{u}@"))
            .unwrap_or_default();
        let shown = format!("postgres://{user}{}{port}/{db}", hosts.join(","));
        Ok(PgUrl {
            config,
            root_cert: root_cert.map(Into::into),
            shown,
        })
    }
}

/// `url` without the query parameter `name`, and its (percent-decoded)
/// value.
fn take_param(url: &str, name: &str) -> (String, Option<String>) {
    let Some((base, query)) = url.split_once('?') else {
        return (url.to_owned(), None);
    };
    let mut value = None;
    let kept: Vec<&str> = query
        .split('&')
        .filter(|pair| match pair.split_once('=') {
            Some((key, v)) if key == name => {
                value = Some(
                    percent_encoding::percent_decode_str(v)
                        .decode_utf8_lossy()
                        .into_owned(),
                );
                false
            }
            _ => true,
        })
        .collect();
    let url = if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    (url, value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_password_is_never_shown() {
        let url: PgUrl = "postgres://jw:s3cret-pw@db.example:5433/jobwatch?sslmode=verify-full"
            .parse()
            .expect("valid");
        assert_eq!(url.shown(), "postgres://jw@db.example:5433/jobwatch");
        assert!(!format!("{url:?} {url}").contains("s3cret-pw"));
        assert!(url.tls());
        assert_eq!(url.root_cert, None);
    }

    #[test]
    fn sslrootcert_is_taken_out_for_our_tls_and_the_rest_kept() {
        let url: PgUrl =
            "postgres://jw@db:5432/jobwatch?sslmode=require&sslrootcert=%2Fetc%2Fjw%2Fca.pem&application_name=x"
                .parse()
                .expect("valid");
        assert_eq!(
            url.root_cert.as_deref(),
            Some(std::path::Path::new("/etc/jw/ca.pem"))
        );
        assert!(url.tls());
        assert_eq!(url.config.get_application_name(), Some("x"));
    }

    #[test]
    fn what_is_not_a_database_url_is_refused_without_quoting_it() {
        for bad in [
            "mysql://u:pw@h/db",
            "postgres://u:pw@h:notaport/db",
            "postgres://u:pw@h:5432",
        ] {
            let e = bad.parse::<PgUrl>().expect_err(bad).to_string();
            assert!(!e.contains("pw"), "{e}");
        }
    }
}
