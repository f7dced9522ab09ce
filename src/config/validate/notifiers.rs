//! `[notifiers.NAME]`: the name, the kind, and the kind's own settings.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use figment::value::magic::RelativePathBuf;
use jiff::fmt::friendly::SpanParser;
use url::Url;

use crate::config::check::{Checker, is_word};
use crate::config::key::KeyPath;
use crate::config::raw::RawNotifier;
use crate::config::*;
use crate::notify::template::{Markup, Template, TemplateSettings};
use crate::ratelimit::RateLimit;
use crate::secret::{Secret, SecretUrl};

pub(super) fn check(
    ck: &mut Checker<'_>,
    key: &KeyPath,
    raw: BTreeMap<String, RawNotifier>,
    tpl: &TemplateSettings,
) -> BTreeMap<String, Notifier> {
    let mut out = BTreeMap::new();
    for (name, n) in raw {
        let k = key.f(&name);
        if !is_word(&name) {
            ck.err(
                &k,
                format!("notifier name {name:?} may only use letters, digits, '-' and '_'"),
            );
        }
        if let Some(notifier) = notifier(ck, &k, n, tpl) {
            out.insert(name, notifier);
        }
    }
    out
}

fn notifier(
    ck: &mut Checker<'_>,
    key: &KeyPath,
    n: RawNotifier,
    tpl: &TemplateSettings,
) -> Option<Notifier> {
    let kinds: Vec<_> = NotifierKind::ALL.iter().map(|k| (k.as_str(), *k)).collect();
    let kind = match n.kind.as_deref().map(str::trim) {
        None => {
            ck.err(
                &key.f("kind"),
                format!(
                    "missing: one of {}",
                    NotifierKind::ALL
                        .iter()
                        .map(|k| k.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            );
            return None;
        }
        Some(text) => match kinds.iter().find(|(n, _)| *n == text) {
            Some((_, k)) => *k,
            None => {
                ck.err(
                    &key.f("kind"),
                    format!(
                        "unknown notifier kind {text:?}; expected one of {}",
                        NotifierKind::ALL
                            .iter()
                            .map(|k| k.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                );
                return None;
            }
        },
    };
    let why = format!("by kind {:?}", kind.as_str());

    // Settings the kind does not use are errors, not silently ignored.
    let signed = matches!(
        kind,
        NotifierKind::Webhook | NotifierKind::Feishu | NotifierKind::Dingtalk
    );
    let is_email = kind == NotifierKind::Email;
    ck.unused(&key.f("url"), n.url.is_some() && !kind.is_http(), &why);
    ck.unused(&key.f("secret"), n.secret.is_some() && !signed, &why);
    ck.unused(
        &key.f("secret_file"),
        n.secret_file.is_some() && !signed,
        &why,
    );
    ck.unused(
        &key.f("headers"),
        n.headers.is_some() && kind != NotifierKind::Webhook,
        &why,
    );
    for (field, present) in [
        ("smtp", n.smtp.is_some()),
        ("password", n.password.is_some()),
        ("password_file", n.password_file.is_some()),
        ("from", n.from.is_some()),
        ("to", n.to.is_some()),
        ("subject_template", n.subject_template.is_some()),
        ("starttls", n.starttls.is_some()),
    ] {
        ck.unused(&key.f(field), present && !is_email, &why);
    }
    ck.unused(
        &key.f("level"),
        n.level.is_some() && kind != NotifierKind::Log,
        &why,
    );
    // The log kind writes structured fields, not a message to shape.
    ck.unused(
        &key.f("template"),
        n.template.is_some() && kind == NotifierKind::Log,
        &why,
    );
    // Email's body is built in (text and HTML parts); only its subject
    // takes a template. Refused rather than silently ignored.
    if n.template.is_some() && kind == NotifierKind::Email {
        ck.err(
            &key.f("template"),
            "not used by kind \"email\": its text and HTML parts are built in; use subject_template for the subject",
        );
    }

    // The generic webhook posts the rendering as `application/json`
    // unless the user set another Content-Type, so then it must be JSON.
    let json_body = kind == NotifierKind::Webhook
        && !n.headers.iter().flatten().any(|(h, v)| {
            h.eq_ignore_ascii_case("content-type") && !v.to_ascii_lowercase().contains("json")
        });
    let name = key.last_field().unwrap_or_default().to_owned();
    let template = match n.template {
        Some(t) if !matches!(kind, NotifierKind::Log | NotifierKind::Email) => template(
            ck,
            tpl,
            &key.f("template"),
            &name,
            Markup::of_kind(kind.as_str()),
            json_body,
            t,
        ),
        _ => None,
    };
    let rate_limit = match n.rate_limit {
        Some(text) => match parse_rate_limit(&text) {
            Ok(r) => Some(r),
            Err(message) => {
                ck.err(&key.f("rate_limit"), message);
                None
            }
        },
        None => kind.default_rate_limit(),
    };
    let max_concurrency = match n.max_concurrency {
        None => kind.default_concurrency(),
        Some(c) if (1..=64).contains(&c) => c as u32,
        Some(c) => {
            ck.err(
                &key.f("max_concurrency"),
                format!("{c} is out of range: must be between 1 and 64"),
            );
            1
        }
    };
    let timeout = ck.duration(
        &key.f("timeout"),
        n.timeout.as_ref(),
        Duration::from_secs(10),
        Duration::from_millis(1),
    );

    let url = if kind.is_http() {
        match &n.url {
            Some(text) => ck.http_url(&key.f("url"), text, false).map(SecretUrl::new),
            None => {
                ck.err(
                    &key.f("url"),
                    format!("missing: kind {:?} sends to a URL", kind.as_str()),
                );
                None
            }
        }
    } else {
        None
    };
    let secret = if signed {
        ck.secret(key, "secret", n.secret, n.secret_file, None)
    } else {
        None
    };

    let settings = match kind {
        NotifierKind::Webhook => {
            let mut headers = BTreeMap::new();
            for (h, v) in n.headers.unwrap_or_default() {
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
            NotifierSettings::Webhook(WebhookSettings {
                url: url?,
                secret,
                headers,
            })
        }
        NotifierKind::Slack => NotifierSettings::Slack(ChatSettings { url: url? }),
        NotifierKind::Discord => NotifierSettings::Discord(ChatSettings { url: url? }),
        NotifierKind::Teams => NotifierSettings::Teams(ChatSettings { url: url? }),
        NotifierKind::Wecom => NotifierSettings::Wecom(ChatSettings { url: url? }),
        NotifierKind::Feishu => NotifierSettings::Feishu(SignedChatSettings { url: url?, secret }),
        NotifierKind::Dingtalk => {
            NotifierSettings::Dingtalk(SignedChatSettings { url: url?, secret })
        }
        NotifierKind::Email => NotifierSettings::Email(email(
            ck,
            tpl,
            key,
            n.smtp,
            n.starttls,
            n.password,
            n.password_file,
            n.from,
            n.to,
            n.subject_template,
        )?),
        NotifierKind::Log => {
            let level = ck.choice(
                &key.f("level"),
                n.level.as_deref(),
                &[
                    ("trace", Some(LogLevel::Trace)),
                    ("debug", Some(LogLevel::Debug)),
                    ("info", Some(LogLevel::Info)),
                    ("warn", Some(LogLevel::Warn)),
                    ("error", Some(LogLevel::Error)),
                ],
                None,
            );
            NotifierSettings::Log(LogNotifierSettings { level })
        }
    };
    Some(Notifier {
        settings,
        template,
        rate_limit,
        max_concurrency,
        timeout,
    })
}

#[allow(clippy::too_many_arguments)]
fn email(
    ck: &mut Checker<'_>,
    tpl: &TemplateSettings,
    key: &KeyPath,
    smtp: Option<String>,
    starttls: Option<bool>,
    password: Option<Secret>,
    password_file: Option<RelativePathBuf>,
    from: Option<String>,
    to: Option<Vec<String>>,
    subject_template: Option<String>,
) -> Option<EmailSettings> {
    let server = match smtp {
        None => {
            ck.err(
                &key.f("smtp"),
                "missing: e.g. \"smtps://user@smtp.example.com:465\" or \"smtp://smtp.example.com:587\"",
            );
            None
        }
        Some(text) => smtp_server(ck, &key.f("smtp"), &text, starttls.unwrap_or(true)),
    };
    let password = ck.secret(key, "password", password, password_file, None);
    if let Some(server) = &server {
        match (&server.user, &password) {
            (Some(user), None) => ck.err(
                &key.f("password"),
                format!("missing: the smtp URL names user {user:?}; set password or password_file"),
            ),
            (None, Some(_)) => ck.err(
                &key.f("password"),
                "set, but the smtp URL names no user (write smtps://USER@host)",
            ),
            _ => {}
        }
    }
    let from = match from {
        None => {
            ck.err(
                &key.f("from"),
                "missing: the sender address, e.g. \"jobwatch@example.com\"",
            );
            None
        }
        Some(f) => mailbox(ck, &key.f("from"), f),
    };
    let to = match to {
        None => {
            ck.err(&key.f("to"), "missing: a list of recipient addresses");
            Vec::new()
        }
        Some(list) if list.is_empty() => {
            ck.err(&key.f("to"), "empty: give at least one recipient address");
            Vec::new()
        }
        Some(list) => list
            .into_iter()
            .enumerate()
            .filter_map(|(i, a)| mailbox(ck, &key.f("to").i(i), a))
            .collect(),
    };
    let name = key.last_field().unwrap_or_default().to_owned();
    let subject_template = subject_template.and_then(|t| {
        template(
            ck,
            tpl,
            &key.f("subject_template"),
            &name,
            Markup::Plain,
            false,
            t,
        )
    });
    Some(EmailSettings {
        smtp: server?,
        password,
        from: from?,
        to,
        subject_template,
    })
}

fn smtp_server(
    ck: &mut Checker<'_>,
    key: &KeyPath,
    text: &str,
    starttls: bool,
) -> Option<SmtpServer> {
    let url = match Url::parse(text.trim()) {
        Ok(u) => u,
        Err(e) => {
            // Not echoed: a malformed URL may still hold a password.
            ck.err(key, format!("invalid URL: {e}"));
            return None;
        }
    };
    if url.password().is_some() {
        ck.err(
            key,
            "the URL carries a password; remove it and set password or password_file instead",
        );
        return None;
    }
    let (tls, default_port) = match url.scheme() {
        "smtps" => (SmtpTls::Implicit, 465),
        "smtp" if starttls => (SmtpTls::Starttls, 587),
        "smtp" => (SmtpTls::None, 25),
        other => {
            ck.err(
                key,
                format!("scheme must be smtp:// (STARTTLS) or smtps:// (TLS), not {other}://"),
            );
            return None;
        }
    };
    let Some(host) = url.host_str().filter(|h| !h.is_empty()) else {
        ck.err(key, "the URL names no host");
        return None;
    };
    // url keeps IPv6 hosts bracketed; the mail client wants them bare.
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    if tls == SmtpTls::None && !is_loopback(&host) {
        ck.err(
            key,
            format!(
                "plain smtp:// with starttls = false would send the password and mail in clear text to {host:?}; \
                 use STARTTLS (the default) or smtps://, or a loopback relay"
            ),
        );
    }
    if url.path() != "" && url.path() != "/" {
        ck.err(key, "the URL must not have a path");
    }
    let user = match url.username() {
        "" => None,
        u => Some(
            percent_encoding::percent_decode_str(u)
                .decode_utf8_lossy()
                .into_owned(),
        ),
    };
    Some(SmtpServer {
        host,
        port: url.port().unwrap_or(default_port),
        tls,
        user,
    })
}

fn mailbox(ck: &mut Checker<'_>, key: &KeyPath, text: String) -> Option<String> {
    match text.trim().parse::<lettre::message::Mailbox>() {
        Ok(_) => Some(text.trim().to_owned()),
        Err(e) => {
            ck.err(key, format!("{text:?} is not an email address: {e}"));
            None
        }
    }
}

/// A template is compiled and rendered against the samples now, so a
/// syntax error, an undefined name or an unknown filter surfaces at
/// `check` rather than at the first delivery. The wiring compiles it
/// again from the source kept here.
fn template(
    ck: &mut Checker<'_>,
    tpl: &TemplateSettings,
    key: &KeyPath,
    name: &str,
    markup: Markup,
    json: bool,
    source: String,
) -> Option<String> {
    let template = match Template::compile(name, &source, tpl, markup) {
        Ok(t) => t,
        Err(e) => {
            ck.err(key, format!("invalid template: {e}"));
            return None;
        }
    };
    match template.check(json) {
        Ok(()) => Some(source),
        Err(message) => {
            ck.err(key, message);
            None
        }
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

fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Parses `"20/min"`, `"1/s"`, `"5/2s"`, `"100/h"`.
fn parse_rate_limit(text: &str) -> Result<RateLimit, String> {
    let bad = |why: &str| {
        format!("invalid rate limit {text:?}: {why} (write e.g. \"20/min\", \"1/s\" or \"5/2s\")")
    };
    let (count, per) = text.trim().split_once('/').ok_or_else(|| bad("no '/'"))?;
    let count: u32 = count
        .trim()
        .parse()
        .map_err(|_| bad("the count is not a whole number"))?;
    if count == 0 {
        return Err(bad("the count must be at least 1"));
    }
    let per = match per.trim() {
        "s" | "sec" | "second" => Duration::from_secs(1),
        "m" | "min" | "minute" => Duration::from_secs(60),
        "h" | "hour" => Duration::from_secs(3600),
        other => SpanParser::new()
            .parse_unsigned_duration(other)
            .map_err(|_| bad("unknown period"))?,
    };
    if per.is_zero() {
        return Err(bad("the period must be longer than zero"));
    }
    Ok(RateLimit::new(count, per))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limits_parse() {
        assert_eq!(
            parse_rate_limit("20/min").unwrap(),
            RateLimit::new(20, Duration::from_secs(60))
        );
        assert_eq!(
            parse_rate_limit("1/s").unwrap(),
            RateLimit::new(1, Duration::from_secs(1))
        );
        assert_eq!(
            parse_rate_limit("5/2s").unwrap(),
            RateLimit::new(5, Duration::from_secs(2))
        );
        assert!(parse_rate_limit("0/s").is_err());
        assert!(parse_rate_limit("fast").is_err());
        assert_eq!(
            RateLimit::new(20, Duration::from_secs(60)).to_string(),
            "20/min"
        );
        assert_eq!(
            RateLimit::new(5, Duration::from_secs(2)).to_string(),
            "5/2s"
        );
    }
}
