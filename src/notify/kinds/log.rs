//! The `log` kind: a `tracing` event per transition (its text from
//! `text::log_line`), WARN for failures and stuck sub-jobs. It always succeeds.

use serde::Serialize;

use crate::notify::kind::{BuildContext, BuildError, CheckContext, Kind, Templating};
use crate::notify::text;
use crate::notify::{Attempt, BoxedAttempt, Deliver, Message, Notifier};
use crate::config::check::Checker;
use crate::config::key::KeyPath;
use crate::config::raw::RawNotifier;
use crate::retry::Verdict;
use crate::watch::event::Event;

/// `[notifiers.NAME]` with `kind = "log"`.
#[derive(Debug, Clone, Serialize)]
pub struct Settings {
    /// Overrides the level chosen per event (WARN for failures and stuck).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub level: Option<LogLevel>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

impl Kind for Settings {
    const NAME: &'static str = "log";
    const KEYS: &'static [&'static str] = &["level"];
    /// It writes structured fields, not a message to shape.
    const TEMPLATE: Templating = Templating::NotUsed;

    fn check(
        ck: &mut Checker<'_>,
        key: &KeyPath,
        raw: RawNotifier,
        _: &CheckContext<'_>,
    ) -> Option<Settings> {
        let level = ck.choice(
            &key.f("level"),
            raw.level.as_deref(),
            &[
                ("trace", Some(LogLevel::Trace)),
                ("debug", Some(LogLevel::Debug)),
                ("info", Some(LogLevel::Info)),
                ("warn", Some(LogLevel::Warn)),
                ("error", Some(LogLevel::Error)),
            ],
            None,
        );
        Some(Settings { level })
    }

    fn build(&self, cx: BuildContext<'_>) -> Result<Notifier, BuildError> {
        Ok(Notifier::new(LogNotifier {
            name: cx.name.to_owned(),
            level: self.level,
        }))
    }
}

#[derive(Debug, Clone)]
pub struct LogNotifier {
    pub name: String,
    /// `level`: every event at this level instead of the one chosen per
    /// event.
    pub level: Option<LogLevel>,
}

impl Deliver for LogNotifier {
    fn deliver<'a>(&'a self, message: &'a Message) -> BoxedAttempt<'a> {
        let attempt = self.send(message);
        Box::pin(async move { attempt })
    }
}

impl LogNotifier {
    pub fn send(&self, message: &Message) -> Attempt {
        for event in &message.events {
            log_event(&self.name, event, message.test, self.level);
        }
        Attempt {
            verdict: Verdict::Success,
            answer: "logged".into(),
        }
    }
}

fn log_event(notifier: &str, e: &Event, test: bool, forced: Option<LogLevel>) {
    let mut line = text::log_line(e);
    if test {
        line = format!("{} {line}", text::TEST_MARK);
    }
    macro_rules! emit {
        ($level:ident) => {
            tracing::$level!(
                target: "jobwatch::transition",
                notifier,
                event_id = %e.event_id,
                target = %e.target_name(),
                project_id = %e.project_id,
                sub_job_id = %e.sub_job_id,
                "{line}",
            )
        };
    }
    let chosen = if text::is_loud(e) && !test {
        LogLevel::Warn
    } else {
        LogLevel::Info
    };
    match forced.unwrap_or(chosen) {
        LogLevel::Trace => emit!(trace),
        LogLevel::Debug => emit!(debug),
        LogLevel::Info => emit!(info),
        LogLevel::Warn => emit!(warn),
        LogLevel::Error => emit!(error),
    }
}
