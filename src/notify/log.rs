//! The `log` kind: a `tracing` event per transition, WARN for failures and
//! stuck sub-jobs. It always succeeds.

use super::{Attempt, Message};
use crate::retry::Verdict;
use crate::watch::event::{Event, EventKind};

#[derive(Debug, Clone)]
pub struct LogNotifier {
    pub name: String,
}

impl LogNotifier {
    pub fn send(&self, message: &Message) -> Attempt {
        for event in &message.events {
            log_event(&self.name, event);
        }
        Attempt {
            verdict: Verdict::Success,
            answer: "logged".into(),
        }
    }
}

fn is_loud(event: &Event) -> bool {
    event.kind == EventKind::Stuck || event.to.as_ref().is_some_and(|s| s.is_failure())
}

fn log_event(notifier: &str, e: &Event) {
    let from = e
        .from
        .as_ref()
        .map(ToString::to_string)
        .unwrap_or_else(|| "-".into());
    let to =
        e.to.as_ref()
            .map(ToString::to_string)
            .unwrap_or_else(|| "-".into());
    let resource = e
        .resource_name
        .as_deref()
        .or(e.resource_id.as_deref())
        .unwrap_or(&e.sub_job_id);
    let error = match (&e.error_code, &e.error_message) {
        (Some(code), Some(msg)) => format!(" ({code}: {msg})"),
        (Some(code), None) => format!(" ({code})"),
        (None, Some(msg)) => format!(" ({msg})"),
        (None, None) => String::new(),
    };
    macro_rules! emit {
        ($level:ident) => {
            tracing::$level!(
                target: "jobwatch::transition",
                notifier,
                event_id = %e.event_id,
                project_id = %e.project_id,
                sub_job_id = %e.sub_job_id,
                "{} {resource} {}: {from} → {to}{error}",
                e.job_type,
                e.kind,
            )
        };
    }
    if is_loud(e) {
        emit!(warn);
    } else {
        emit!(info);
    }
}
