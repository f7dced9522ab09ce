//! The `email` kind: one mail per message (a text and an HTML part) over a
//! pooled lettre SMTP transport, and what the server's reply means.
//!
//! Rendering is a pure function ([`EmailNotifier::render`]): the words
//! come from `text`, or from the notifier's `template` (the text part; the
//! HTML part shows it escaped) and `subject_template`.

use std::fmt::Write as _;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use lettre::message::header::{ContentType, HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart, SinglePart};
use lettre::transport::smtp::AsyncSmtpTransportBuilder;
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::response::Response;
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use sha2::{Digest, Sha256};

use serde::Serialize;
use url::Url;

use crate::notify::kind::{self, BuildContext, BuildError, CheckContext, Kind};
use crate::notify::template::{self, Markup, Template, TemplateError};
use crate::notify::text;
use crate::notify::{Attempt, BoxedAttempt, Deliver, Message, Notifier};
use crate::config::check::Checker;
use crate::config::key::KeyPath;
use crate::config::raw::RawNotifier;
use crate::retry::{Retryable, Verdict};
use crate::secret::Secret;
use crate::watch::event::Event;

/// A group lists at most this many events; the rest are counted ("… and 37
/// more"). Mail servers take megabytes, but a reader does not.
pub const MAX_LISTED_EVENTS: usize = 200;

/// Subjects are cut here: mail clients show far less, and a long error
/// message must not make the header unwieldy.
const MAX_SUBJECT_CHARS: usize = 200;

/// `[notifiers.NAME]` with `kind = "email"`.
#[derive(Debug, Clone, Serialize)]
pub struct Settings {
    pub smtp: SmtpServer,
    /// Required exactly when the SMTP URL names a user.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password: Option<Secret>,
    /// A mailbox (`a@b` or `Name <a@b>`), checked to parse.
    pub from: String,
    pub to: Vec<String>,
    /// Compiled once; a subject has no markup.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject_template: Option<Template>,
}

/// Where mail goes, from the `smtp` URL (which may not carry a password).
#[derive(Debug, Clone, Serialize)]
pub struct SmtpServer {
    pub host: String,
    pub port: u16,
    pub tls: SmtpTls,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpTls {
    /// `smtps://`: TLS from the first byte (port 465 by default).
    Implicit,
    /// `smtp://` upgraded with STARTTLS, which must succeed (port 587).
    Starttls,
    /// `smtp://` with `starttls = false`: allowed to loopback hosts only.
    None,
}

impl Kind for Settings {
    const NAME: &'static str = "email";
    const KEYS: &'static [&'static str] = &[
        "smtp",
        "password",
        "password_file",
        "from",
        "to",
        "subject_template",
        "starttls",
    ];
    const DEFAULT_CONCURRENCY: u32 = 2;

    fn check(
        ck: &mut Checker<'_>,
        key: &KeyPath,
        raw: RawNotifier,
        cx: &CheckContext<'_>,
    ) -> Option<Settings> {
        let server = match raw.smtp {
            None => {
                ck.err(
                    &key.f("smtp"),
                    "missing: e.g. \"smtps://user@smtp.example.com:465\" or \"smtp://smtp.example.com:587\"",
                );
                None
            }
            Some(text) => smtp_server(ck, &key.f("smtp"), &text, raw.starttls.unwrap_or(true)),
        };
        let password = ck.secret(key, "password", raw.password, raw.password_file, None);
        if let Some(server) = &server {
            match (&server.user, &password) {
                (Some(user), None) => ck.err(
                    &key.f("password"),
                    format!(
                        "missing: the smtp URL names user {user:?}; set password or password_file"
                    ),
                ),
                (None, Some(_)) => ck.err(
                    &key.f("password"),
                    "set, but the smtp URL names no user (write smtps://USER@host)",
                ),
                _ => {}
            }
        }
        let from = match raw.from {
            None => {
                ck.err(
                    &key.f("from"),
                    "missing: the sender address, e.g. \"jobwatch@example.com\"",
                );
                None
            }
            Some(f) => mailbox(ck, &key.f("from"), f),
        };
        let to = match raw.to {
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
        // Compiled under its own name, which is also what `notifier` renders as
        // in a subject.
        let name = format!("{}.subject_template", cx.name);
        let subject_template = raw.subject_template.and_then(|source| {
            let key = key.f("subject_template");
            kind::compile_template(ck, &key, cx.templates, &name, &source, Markup::Plain, false)
        });
        Some(Settings {
            smtp: server?,
            password,
            from: from?,
            to,
            subject_template,
        })
    }

    fn build(&self, cx: BuildContext<'_>) -> Result<Notifier, BuildError> {
        Ok(Notifier::new(EmailNotifier::from_settings(
            self,
            cx.timeout,
            cx.tz.clone(),
            cx.template,
        )?))
    }
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

fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// A notifier that could not be built from its (already validated) settings.
#[derive(Debug, thiserror::Error)]
pub enum EmailError {
    #[error("{field}: {value:?} is not an email address: {source}")]
    Address {
        field: &'static str,
        value: String,
        source: lettre::address::AddressError,
    },
    #[error("cannot set up TLS for SMTP server {host:?}: {source}")]
    Tls {
        host: String,
        source: lettre::transport::smtp::Error,
    },
    /// The pooled transport spawns its idle-connection reaper on the current
    /// tokio runtime; building it anywhere else would panic inside lettre.
    #[error("the SMTP transport must be built inside a tokio runtime")]
    NoRuntime,
}

/// A notifier's build fails with the email kind's own reason.
impl From<EmailError> for BuildError {
    fn from(e: EmailError) -> BuildError {
        BuildError::Kind(Box::new(e))
    }
}

/// Cheap to clone: clones share one transport and its pool.
#[derive(Clone)]
pub struct EmailNotifier {
    inner: Arc<Inner>,
}

struct Inner {
    /// The pooled transport in use, replaced after a timed-out attempt (see
    /// [`EmailNotifier::send`]).
    transport: Mutex<Pooled>,
    /// How to build a fresh transport when one must be retired.
    builder: AsyncSmtpTransportBuilder,
    /// Bounds a whole attempt, as `timeout` does for the HTTP kinds.
    timeout: Duration,
    from: Mailbox,
    to: Vec<Mailbox>,
    /// Times in messages are shown in this zone (`delivery.timezone`).
    tz: jiff::tz::TimeZone,
    /// Kept only to scrub it from answers: a server may echo what it got.
    password: Option<Secret>,
    /// Where the SMTP server is, for answers that name no reply.
    server: String,
    /// `subject_template`, compiled (plain text: a subject has no markup).
    subject_template: Option<Template>,
    /// `template`, compiled: its rendering is the text part, and the HTML
    /// part shows the same text, escaped.
    template: Option<Template>,
}

/// A transport and which one it is, so that of two attempts timing out on
/// the same transport only the first replaces it.
struct Pooled {
    generation: u64,
    transport: AsyncSmtpTransport<Tokio1Executor>,
}

impl std::fmt::Debug for EmailNotifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmailNotifier")
            .field("server", &self.inner.server)
            .field("from", &self.inner.from.to_string())
            .field("to", &self.inner.to.len())
            .finish_non_exhaustive()
    }
}

impl Deliver for EmailNotifier {
    fn deliver<'a>(&'a self, message: &'a Message) -> BoxedAttempt<'a> {
        Box::pin(self.send(message))
    }
}

impl EmailNotifier {
    /// Builds the transport once; its pool keeps connections for reuse.
    /// `timeout` bounds the TCP connect and the whole attempt; `template`
    /// (the notifier's `template`) replaces the built-in body. Must run
    /// inside a tokio runtime (see [`EmailError::NoRuntime`]).
    pub fn from_settings(
        settings: &Settings,
        timeout: Duration,
        tz: jiff::tz::TimeZone,
        template: Option<Template>,
    ) -> Result<EmailNotifier, EmailError> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(EmailError::NoRuntime);
        }
        let from = parse_mailbox("from", &settings.from)?;
        let to = settings
            .to
            .iter()
            .map(|a| parse_mailbox("to", a))
            .collect::<Result<Vec<_>, _>>()?;
        let server = &settings.smtp;
        let tls_error = |source| EmailError::Tls {
            host: server.host.clone(),
            source,
        };
        let builder = match server.tls {
            SmtpTls::Implicit => {
                AsyncSmtpTransport::<Tokio1Executor>::relay(&server.host).map_err(tls_error)?
            }
            // `Tls::Required`: no credentials or mail before the upgrade.
            SmtpTls::Starttls => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&server.host)
                .map_err(tls_error)?,
            // Config validation allows this to loopback hosts only.
            SmtpTls::None => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&server.host),
        };
        let mut builder = builder.port(server.port).timeout(Some(timeout));
        if let (Some(user), Some(password)) = (&server.user, &settings.password) {
            builder = builder
                .credentials(Credentials::new(user.clone(), password.expose().to_owned()))
                .authentication(vec![Mechanism::Plain, Mechanism::Login]);
        }
        Ok(EmailNotifier {
            inner: Arc::new(Inner {
                transport: Mutex::new(Pooled {
                    generation: 0,
                    transport: builder.clone().build(),
                }),
                builder,
                timeout,
                from,
                to,
                tz,
                password: settings.password.clone(),
                server: format!("{}:{}", server.host, server.port),
                subject_template: settings.subject_template.clone(),
                template,
            }),
        })
    }

    pub async fn send(&self, message: &Message) -> Attempt {
        // A template that cannot render this message will not render it on
        // a retry either: a dead letter with the reason.
        let parts = match self.render(message) {
            Ok(parts) => parts,
            Err(e) => return template::failed(&e),
        };
        let mail = match self.build(message, parts) {
            Ok(mail) => mail,
            // Our own addresses and a body we built: a bug or bad config,
            // and sending it again would build the same thing.
            Err(e) => {
                return Attempt {
                    verdict: Verdict::DontRetry(format!("cannot build the mail: {e}")),
                    answer: format!("cannot build the mail: {e}"),
                };
            }
        };
        let (generation, transport) = {
            let pooled = self
                .inner
                .transport
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            (pooled.generation, pooled.transport.clone())
        };
        // lettre's async transport times out the TCP connect only; a server
        // that stops answering would hold the attempt forever, so the whole
        // send is bounded here.
        let sent = tokio::time::timeout(self.inner.timeout, transport.send(mail)).await;
        let attempt = match sent {
            Err(_elapsed) => {
                self.retire(generation, transport).await;
                let reason = format!(
                    "SMTP {} timed out after {:?} (the mail may have been accepted; \
                     a retry keeps its Message-ID)",
                    self.inner.server, self.inner.timeout
                );
                Attempt {
                    verdict: Verdict::Retry(Retryable::new(reason.clone())),
                    answer: reason,
                }
            }
            Ok(Ok(response)) => Attempt {
                verdict: Verdict::Success,
                answer: describe_reply(&response),
            },
            Ok(Err(error)) => {
                let verdict = classify(&error, &self.inner.server);
                let answer = match &verdict {
                    Verdict::Retry(r) => r.reason.clone(),
                    Verdict::DontRetry(reason) => reason.clone(),
                    Verdict::Success => String::new(),
                };
                Attempt { verdict, answer }
            }
        };
        self.scrub(attempt)
    }

    /// Replaces a transport after an attempt on it was cut short. The cut
    /// connection goes back to lettre's pool mid-conversation, with a reply
    /// still unread; reused, every later reply would answer the command
    /// before it, and a rejection could read as acceptance. A shut-down pool
    /// closes every connection returned to it, so none is reused.
    async fn retire(&self, generation: u64, old: AsyncSmtpTransport<Tokio1Executor>) {
        {
            let mut pooled = self
                .inner
                .transport
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if pooled.generation == generation {
                pooled.generation += 1;
                pooled.transport = self.inner.builder.clone().build();
            }
        }
        old.shutdown().await;
    }

    /// The whole mail: headers, envelope (From and every To) and both parts.
    fn build(
        &self,
        message: &Message,
        (subject, text, html): (String, String, String),
    ) -> Result<lettre::Message, lettre::error::Error> {
        let mut builder = lettre::Message::builder()
            .from(self.inner.from.clone())
            .subject(subject)
            .message_id(Some(message_id(&message.id)))
            // RFC 3834: vacation responders and the like must not answer.
            .raw_header(HeaderValue::new(
                HeaderName::new_from_ascii_str("Auto-Submitted"),
                "auto-generated".to_owned(),
            ))
            .user_agent(concat!("jobwatch/", env!("CARGO_PKG_VERSION")).to_owned());
        for to in &self.inner.to {
            builder = builder.to(to.clone());
        }
        builder.multipart(
            MultiPart::alternative()
                .singlepart(
                    SinglePart::builder()
                        .header(ContentType::TEXT_PLAIN)
                        .body(text),
                )
                .singlepart(
                    SinglePart::builder()
                        .header(ContentType::TEXT_HTML)
                        .body(html),
                ),
        )
    }

    /// Subject, text part and HTML part for a message: the templates'
    /// renderings where set, else the built-in ones. Pure.
    pub fn render(&self, message: &Message) -> Result<(String, String, String), TemplateError> {
        let subject = match self.templated_subject(message) {
            Some(subject) => subject?,
            None => bounded_subject(&text::mail_subject(message)),
        };
        let (text, html) = match &self.inner.template {
            Some(t) => {
                let rendered = t.render(message)?;
                let html = html_page(
                    &subject,
                    &format!(
                        "<div style=\"white-space: pre-wrap;\">{}</div>\n",
                        escape(&rendered)
                    ),
                );
                (rendered, html)
            }
            None => (
                render_text(message, &self.inner.tz),
                render_html(message, &subject, &self.inner.tz),
            ),
        };
        Ok((subject, text, html))
    }

    /// The `subject_template` rendered, on one bounded line.
    fn templated_subject(&self, message: &Message) -> Option<Result<String, TemplateError>> {
        let template = self.inner.subject_template.as_ref()?;
        Some(template.render(message).map(|s| bounded_subject(&s)))
    }

    /// Removes the password (and the AUTH encodings that carry it) from an
    /// answer. lettre never puts it in an error, but a server's reply is
    /// outside input and could echo what it received.
    fn scrub(&self, mut attempt: Attempt) -> Attempt {
        let Some(password) = self.inner.password.as_ref().filter(|p| !p.is_empty()) else {
            return attempt;
        };
        let scrub = |s: &mut String| *s = redact(s, password);
        scrub(&mut attempt.answer);
        match &mut attempt.verdict {
            Verdict::Retry(r) => scrub(&mut r.reason),
            Verdict::DontRetry(reason) => scrub(reason),
            Verdict::Success => {}
        }
        attempt
    }
}

fn parse_mailbox(field: &'static str, value: &str) -> Result<Mailbox, EmailError> {
    value.trim().parse().map_err(|source| EmailError::Address {
        field,
        value: value.to_owned(),
        source,
    })
}

/// `<{id}@jobwatch>`: the same message id on every retry, so mail clients
/// and archives fold duplicates. Ids outside the safe `msg-id` characters
/// (event ids are hex; group ids are ours too, but make no promise) are
/// replaced by a hash of themselves.
pub fn message_id(id: &str) -> String {
    let safe = !id.is_empty()
        && id.len() <= 64
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && !id.starts_with('.')
        && !id.ends_with('.')
        && !id.contains("..");
    if safe {
        format!("<{id}@jobwatch>")
    } else {
        let digest = Sha256::digest(id.as_bytes());
        format!("<{}@jobwatch>", hex::encode(&digest[..16]))
    }
}

/// What lettre's error means for the next attempt. SMTP 4xx is transient by
/// definition (RFC 5321 §4.2.1) and 5xx permanent; a client-side refusal
/// (STARTTLS not offered, no common AUTH mechanism, 8-bit mail to a 7-bit
/// server) is configuration and will not change by itself; everything else
/// (connect, DNS, timeout, TLS handshake, a garbled or cut reply) is the
/// network and worth another try.
fn classify(error: &lettre::transport::smtp::Error, server: &str) -> Verdict {
    if error.is_transient() {
        return Verdict::Retry(Retryable::new(describe_negative(error)));
    }
    if error.is_permanent() {
        return Verdict::DontRetry(describe_negative(error));
    }
    let what = if error.is_timeout() {
        "timed out"
    } else if error.is_client() {
        "refused by the client"
    } else {
        "failed"
    };
    let reason = format!("SMTP {server} {what}: {}", error_chain(error));
    if error.is_client() {
        Verdict::DontRetry(reason)
    } else {
        Verdict::Retry(Retryable::new(reason))
    }
}

/// `550 5.1.1 <x@example.com>: Recipient address rejected`: the code and
/// the server's own words, as a mail admin would quote them.
fn describe_negative(error: &lettre::transport::smtp::Error) -> String {
    let text = std::error::Error::source(error)
        .map(|s| s.to_string())
        .unwrap_or_default();
    match error.status() {
        Some(code) if text.is_empty() => code.to_string(),
        Some(code) => format!("{code} {text}"),
        None => error.to_string(),
    }
}

fn describe_reply(response: &Response) -> String {
    let text = response.message().collect::<Vec<_>>().join(" ");
    format!("{} {text}", response.code()).trim_end().to_owned()
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut out = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        let next = e.to_string();
        // lettre's Display already appends its source.
        if !out.contains(&next) {
            out.push_str(": ");
            out.push_str(&next);
        }
        source = e.source();
    }
    out
}

/// Replaces the password and the base64 forms AUTH PLAIN and LOGIN send it
/// in. The PLAIN blob also holds the user, which we do not know here, so
/// every base64 run that decodes to text containing the password goes too.
fn redact(text: &str, password: &Secret) -> String {
    let secret = password.expose();
    let mut out = text.replace(secret, "***");
    let encoded = BASE64.encode(secret);
    out = out.replace(&encoded, "***");
    out.split_inclusive(|c: char| c.is_whitespace() || matches!(c, ':' | '<' | '>' | '"' | '\''))
        .map(|piece| {
            let word = piece.trim_end_matches(|c: char| {
                c.is_whitespace() || matches!(c, ':' | '<' | '>' | '"' | '\'')
            });
            let carries = word.len() >= 8
                && BASE64
                    .decode(word)
                    .is_ok_and(|raw| String::from_utf8_lossy(&raw).contains(secret));
            if carries {
                piece.replacen(word, "***", 1)
            } else {
                piece.to_owned()
            }
        })
        .collect()
}

// ---------------------------------------------------------------------------
// Rendering: the words come from `text`; this is only the mail's layout.
// ---------------------------------------------------------------------------

/// A subject on one line, cut to [`MAX_SUBJECT_CHARS`].
fn bounded_subject(subject: &str) -> String {
    text::clip(&text::one_line(subject), MAX_SUBJECT_CHARS)
}

fn listed(message: &Message) -> (&[Event], usize) {
    let shown = message.events.len().min(MAX_LISTED_EVENTS);
    (&message.events[..shown], message.events.len() - shown)
}

fn render_text(message: &Message, tz: &jiff::tz::TimeZone) -> String {
    let mut out = String::new();
    // `write!` to a String cannot fail.
    let (events, more) = listed(message);
    if let Some(group) = &message.group {
        let _ = writeln!(
            out,
            "{} ({})",
            text::transitions(&message.events),
            text::group_note(group)
        );
        let _ = writeln!(out, "{}\n", text::tally(&message.events));
    }
    for (i, event) in events.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        let _ = writeln!(out, "{}", text::one_line(&text::what_happened(event)));
        let rows = text::all_fields(event, tz);
        let width = rows.iter().map(|(l, _)| l.len()).max().unwrap_or(0);
        for (label, value) in rows {
            let _ = writeln!(out, "  {label:<width$}  {}", text::one_line(&value));
        }
    }
    if more > 0 {
        let _ = writeln!(out, "\n{}", text::and_more(more));
    }
    let _ = write!(out, "\n-- \n{}\n", text::signature());
    out
}

/// HTML with every value escaped: error messages and resource names come
/// from the cloud and are outside input.
fn render_html(message: &Message, subject: &str, tz: &jiff::tz::TimeZone) -> String {
    let mut out = String::new();
    let (events, more) = listed(message);
    if let Some(group) = &message.group {
        let _ = writeln!(
            out,
            "<p><strong>{}</strong>: {} <span style=\"color: #666;\">({})</span></p>",
            escape(&text::transitions(&message.events)),
            escape(&text::tally(&message.events)),
            escape(&text::group_note(group))
        );
    }
    for event in events {
        let colour = if text::is_loud(event) {
            "#b00020"
        } else {
            "#1b5e20"
        };
        let _ = writeln!(
            out,
            "<h3 style=\"color: {colour}; margin-bottom: 4px;\">{}</h3>",
            escape(&text::what_happened(event))
        );
        out.push_str("<table style=\"border-collapse: collapse;\">\n");
        for (label, value) in text::all_fields(event, tz) {
            let _ = writeln!(
                out,
                "<tr><th style=\"text-align: left; padding: 2px 12px 2px 0; color: #555;\">{}</th><td style=\"padding: 2px 0;\">{}</td></tr>",
                escape(label),
                escape(&value)
            );
        }
        out.push_str("</table>\n");
    }
    if more > 0 {
        let _ = writeln!(out, "<p>{}</p>", escape(&text::and_more(more)));
    }
    let _ = writeln!(
        out,
        "<p style=\"color: #888; font-size: 12px;\">{}</p>",
        escape(&text::signature())
    );
    html_page(subject, &out)
}

/// A whole HTML document titled `subject` around `body` (already HTML).
fn html_page(subject: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{}</title></head>\n\
         <body style=\"font-family: sans-serif; font-size: 14px;\">\n{body}</body></html>\n",
        escape(subject)
    )
}

/// The five characters that matter in element content and attributes.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cloud::model::{ApiTime, Status};
    use crate::notify::GroupInfo;
    use crate::watch::event::EventKind;

    /// The built-in subject, as `render` makes it.
    fn subject(message: &Message) -> String {
        bounded_subject(&text::mail_subject(message))
    }

    fn event(sub_job: &str, to: &str) -> Event {
        Event {
            event_id: format!("ev-{sub_job}"),
            kind: EventKind::Changed,
            target: String::new(),
            account: "default".into(),
            project_id: "0a1b2c3d4e5f60718293a4b5c6d7e8f9".into(),
            job_type: "CREATE_SERVER".into(),
            sub_job_id: sub_job.into(),
            job_id: Some("8f2e0000".into()),
            resource_id: Some("res-1".into()),
            resource_name: Some("APS-20220902093902-AYOASWQDEJ".into()),
            from: Some(Status::Running),
            to: Some(Status::from(to)),
            error_code: None,
            error_message: None,
            begin_time: Some(ApiTime::parse("2022-03-07T10:40:43.858Z")),
            end_time: None,
            observed_at: "2022-03-07T10:41:00Z".parse().expect("a valid timestamp"),
        }
    }

    fn settings(tls: SmtpTls) -> Settings {
        Settings {
            smtp: SmtpServer {
                host: "smtp.example.com".into(),
                port: 465,
                tls,
                user: Some("jobwatch".into()),
            },
            password: Some(Secret::new("hunter2-hunter2")),
            from: "jobwatch@example.com".into(),
            to: vec!["oncall@example.com".into()],
            subject_template: None,
        }
    }

    fn single(e: Event) -> Message {
        Message {
            test: false,
            id: e.event_id.clone(),
            group: None,
            events: vec![e],
        }
    }

    #[test]
    fn one_event_subject_names_type_status_resource_and_project() {
        let s = subject(&single(event("s1", "FAILED")));
        assert_eq!(
            s,
            "[jobwatch] CREATE_SERVER FAILED on APS-20220902093902-AYOASWQDEJ (project 0a1b2c3d…)"
        );
    }

    #[test]
    fn group_subject_counts_statuses_largest_first() {
        let mut events: Vec<Event> = (0..18)
            .map(|i| event(&format!("s{i}"), "SUCCESS"))
            .collect();
        events.push(event("f1", "FAILED"));
        events.push(event("f2", "FAILED"));
        let m = Message {
            test: false,
            id: "g1".into(),
            group: Some(GroupInfo {
                job: None,
                id: "g1".into(),
                key: "route".into(),
                count: 20,
            }),
            events,
        };
        assert_eq!(
            subject(&m),
            "[jobwatch] 20 CREATE_SERVER transitions: 18 SUCCESS, 2 FAILED"
        );
    }

    #[test]
    fn stuck_and_vanished_read_as_such() {
        let mut stuck = event("s1", "RUNNING");
        stuck.kind = EventKind::Stuck;
        assert!(subject(&single(stuck)).contains("CREATE_SERVER stuck in RUNNING on"));
        let mut gone = event("s2", "RUNNING");
        gone.kind = EventKind::Vanished;
        gone.to = None;
        assert!(subject(&single(gone)).contains("vanished (was RUNNING)"));
    }

    #[test]
    fn subject_is_one_bounded_line() {
        let mut e = event("s1", "FAILED");
        e.resource_name = Some(format!("evil\r\nBcc: x@example.com {}", "y".repeat(500)));
        let s = subject(&single(e));
        assert!(!s.contains(['\r', '\n']));
        assert_eq!(s.chars().count(), MAX_SUBJECT_CHARS);
    }

    #[test]
    fn message_ids_are_stable_and_always_valid() {
        assert_eq!(message_id("abc123"), "<abc123@jobwatch>");
        assert_eq!(message_id("abc123"), message_id("abc123"));
        let odd = message_id("group <x> @ y");
        assert!(odd.starts_with('<') && odd.ends_with("@jobwatch>"));
        assert!(!odd[1..].contains(['<', ' ']));
        assert_ne!(message_id("a b"), message_id("a c"));
    }

    #[test]
    fn html_escapes_values_and_times_use_the_zone() {
        let mut e = event("s1", "FAILED");
        e.error_code = Some("WKS.001".into());
        e.error_message = Some("<script>alert('x')</script> & \"more\"".into());
        let tz = jiff::tz::TimeZone::get("Asia/Shanghai").expect("tzdb has Asia/Shanghai");
        let html = render_html(&single(e.clone()), "s", &tz);
        assert!(!html.contains("<script>"));
        assert!(
            html.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;more&quot;")
        );
        assert!(html.contains("2022-03-07 18:40:43 +08:00"));
        let text = render_text(&single(e), &tz);
        assert!(text.contains("WKS.001: <script>"));
        assert!(text.contains("Observed"));
        assert!(text.contains("2022-03-07 18:41:00 +08:00"));
        assert!(text.contains("RUNNING → FAILED"));
    }

    /// The text part is the vocabulary's: the chat kinds' headline and
    /// labels, with the mail's extras (the resource id, the whole error).
    #[test]
    fn the_text_part_speaks_the_one_vocabulary() {
        let mut e = event("s1", "FAILED");
        e.error_code = Some("WKS.001".into());
        e.error_message = Some("x".repeat(300));
        let text = render_text(&single(e), &jiff::tz::TimeZone::UTC);
        let rows: Vec<&str> = text.lines().collect();
        assert_eq!(
            rows[0],
            "CREATE_SERVER FAILED on APS-20220902093902-AYOASWQDEJ"
        );
        assert_eq!(rows[1], "  Job type     CREATE_SERVER");
        assert_eq!(rows[2], "  Transition   RUNNING → FAILED (changed)");
        assert_eq!(rows[4], "  Resource id  res-1");
        assert_eq!(
            rows[5],
            format!("  Error        WKS.001: {}", "x".repeat(300))
        );
        assert!(text.contains("\n  Sub-job      s1\n"), "{text}");
        assert!(text.ends_with(&format!("\n-- \njobwatch {}\n", env!("CARGO_PKG_VERSION"))));
    }

    #[test]
    fn an_unparsed_api_time_is_shown_as_written() {
        let mut e = event("s1", "FAILED");
        e.end_time = Some(ApiTime::parse("yesterday-ish"));
        let text = render_text(&single(e), &jiff::tz::TimeZone::UTC);
        assert!(text.contains("yesterday-ish"));
    }

    #[test]
    fn long_groups_are_cut_with_a_count() {
        let events: Vec<Event> = (0..MAX_LISTED_EVENTS + 37)
            .map(|i| event(&format!("s{i}"), "SUCCESS"))
            .collect();
        let m = Message {
            test: false,
            id: "g".into(),
            group: None,
            events,
        };
        let text = render_text(&m, &jiff::tz::TimeZone::UTC);
        assert!(text.contains("… and 37 more"));
        assert_eq!(text.matches("Sub-job").count(), MAX_LISTED_EVENTS);
    }

    #[test]
    fn redact_removes_password_and_its_auth_encodings() {
        let pw = Secret::new("hunter2-hunter2");
        let plain = BASE64.encode("\0jobwatch\0hunter2-hunter2");
        let login = BASE64.encode("hunter2-hunter2");
        let text = format!("535 5.7.8 bad: hunter2-hunter2 {plain} <{login}>");
        let out = redact(&text, &pw);
        assert!(!out.contains("hunter2"), "{out}");
        assert!(!out.contains(&plain) && !out.contains(&login), "{out}");
        assert!(out.starts_with("535 5.7.8 bad: *** *** <***>"), "{out}");
    }

    /// Building the TLS transports runs lettre's rustls set-up; with our
    /// one provider installed it must not panic (the DEPENDENCIES gotcha).
    #[tokio::test]
    async fn tls_transports_build_with_the_ring_provider() {
        crate::install_crypto_provider();
        for tls in [SmtpTls::Implicit, SmtpTls::Starttls] {
            let n = EmailNotifier::from_settings(
                &settings(tls),
                Duration::from_secs(5),
                jiff::tz::TimeZone::UTC,
                None,
            )
            .expect("transport builds without connecting");
            assert!(!format!("{n:?}").contains("hunter2"));
        }
    }

    #[test]
    fn building_outside_a_runtime_is_an_error_not_a_panic() {
        let e = EmailNotifier::from_settings(
            &settings(SmtpTls::None),
            Duration::from_secs(5),
            jiff::tz::TimeZone::UTC,
            None,
        )
        .expect_err("no runtime here");
        assert!(matches!(e, EmailError::NoRuntime));
    }
}
