//! What a notifier kind is: the [`Kind`] trait its settings type
//! implements, what its check and build are given, and the checks several
//! kinds share (`url`, a signing `secret`, a template). The kinds use this
//! module; the registry in `kinds/mod.rs` lists them.

use std::time::Duration;

use jiff::tz::TimeZone;

use super::Notifier;
use super::template::{Markup, Template, TemplateSettings};
use crate::config::check::Checker;
use crate::config::key::KeyPath;
use crate::config::raw::RawNotifier;
use crate::ratelimit::RateLimit;
use crate::secret::{Secret, SecretUrl};

/// What `template` means for a kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Templating {
    /// It replaces the built-in text (an email's text part); printed
    /// values are escaped for the kind's [`Kind::MARKUP`].
    Body,
    /// The kind has no text to shape (the log kind writes fields).
    NotUsed,
}

/// A notifier kind, implemented by its settings type.
pub trait Kind: Sized {
    /// The value of `kind`.
    const NAME: &'static str;
    /// The keys of the table it reads besides the common ones; any other
    /// kind's key set here is a problem ("not used by kind …").
    const KEYS: &'static [&'static str];
    /// How values a template prints are escaped.
    const MARKUP: Markup = Markup::Plain;
    const TEMPLATE: Templating = Templating::Body;
    /// The receiver's documented limit, used when `rate_limit` is absent.
    const DEFAULT_RATE: Option<RateLimit> = None;
    /// Deliveries at once when `max_concurrency` is absent: one keeps chat
    /// messages in order.
    const DEFAULT_CONCURRENCY: u32 = 1;

    /// Whether the samples a template renders must be JSON (because the
    /// kind sends the rendering as `application/json`).
    fn template_is_json(_raw: &RawNotifier) -> bool {
        false
    }

    /// Checks the kind's own keys of `raw` (the table at `key`), reporting
    /// every problem to `ck`; `None` when one is fatal.
    fn check(
        ck: &mut Checker<'_>,
        key: &KeyPath,
        raw: RawNotifier,
        cx: &CheckContext<'_>,
    ) -> Option<Self>;

    /// The running notifier.
    fn build(&self, cx: BuildContext<'_>) -> Result<Notifier, BuildError>;
}

/// What a kind's check may need besides its table.
pub struct CheckContext<'a> {
    /// The notifier's name.
    pub name: &'a str,
    /// What templates render with.
    pub templates: &'a TemplateSettings,
}

/// What a kind's build may need besides its settings.
pub struct BuildContext<'a> {
    pub name: &'a str,
    /// Bounds one delivery attempt.
    pub timeout: Duration,
    /// `delivery.timezone`: times in messages.
    pub tz: &'a TimeZone,
    /// The compiled `template`, if any.
    pub template: Option<Template>,
}

/// A notifier that could not be built from its (validated) settings.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Http(#[from] reqwest::Error),
    /// A kind's own reason (the email kind's SMTP set-up).
    #[error(transparent)]
    Kind(Box<dyn std::error::Error + Send + Sync>),
}

/// Compiles a template and renders it against the samples now (`json`:
/// each must render to JSON), so a syntax error, an undefined name or an
/// unknown filter surfaces at `check` rather than at the first delivery.
pub fn compile_template(
    ck: &mut Checker<'_>,
    key: &KeyPath,
    templates: &TemplateSettings,
    name: &str,
    source: &str,
    markup: Markup,
    json: bool,
) -> Option<Template> {
    let template = match Template::compile(name, source, templates, markup) {
        Ok(t) => t,
        Err(e) => {
            ck.err(key, format!("invalid template: {e}"));
            return None;
        }
    };
    match template.check(json) {
        Ok(()) => Some(template),
        Err(message) => {
            ck.err(key, message);
            None
        }
    }
}

/// `url` (or `url_file`, the URL read from a file or a systemd
/// credential) of a kind that sends to one (`kind`: its name, for the
/// message). Never echoed: chat URLs carry their credential.
pub fn url(
    ck: &mut Checker<'_>,
    key: &KeyPath,
    raw: &mut RawNotifier,
    kind: &str,
) -> Option<SecretUrl> {
    match (raw.url.take(), raw.url_file.take()) {
        (Some(_), Some(_)) => {
            ck.err(&key.f("url"), "both `url` and `url_file` are set; keep one");
            None
        }
        (Some(text), None) => ck.http_url(&key.f("url"), &text, false).map(SecretUrl::new),
        (None, Some(file)) => {
            let text = ck.secret(key, "url", None, Some(file), None)?;
            ck.http_url(&key.f("url_file"), text.expose(), false)
                .map(SecretUrl::new)
        }
        (None, None) => {
            ck.err(
                &key.f("url"),
                format!("missing: kind {kind:?} sends to a URL (`url`, or `url_file`)"),
            );
            None
        }
    }
}

/// The optional signing `secret` (or `secret_file`) of a kind that signs.
pub fn signing_secret(
    ck: &mut Checker<'_>,
    key: &KeyPath,
    raw: &mut RawNotifier,
) -> Option<Secret> {
    ck.secret(
        key,
        "secret",
        raw.secret.take(),
        raw.secret_file.take(),
        None,
    )
}
