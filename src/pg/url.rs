//! `[state] url`: where the PostgreSQL state lives. The URL may hold a
//! password, so it is a secret: shown only without it.

use std::fmt;
use std::str::FromStr;

/// A parsed `postgres://` URL (or libpq `key=value` string).
#[derive(Clone)]
pub struct PgUrl {
    pub(super) config: tokio_postgres::Config,
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
        Ok(PgUrl { config, shown })
    }
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
