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
    macro_rules! emit {
        ($level:ident) => {
            tracing::$level!(
                target: "jobwatch::transition",
                notifier,
                event_id = %e.event_id,
                kind = %e.kind,
                project_id = %e.project_id,
                job_type = %e.job_type,
                sub_job_id = %e.sub_job_id,
                job_id = e.job_id.as_deref().unwrap_or(""),
                resource = e.resource_name.as_deref().or(e.resource_id.as_deref()).unwrap_or(""),
                error_code = e.error_code.as_deref().unwrap_or(""),
                error_message = e.error_message.as_deref().unwrap_or(""),
                "{} {} {} {from} → {to}",
                e.job_type,
                e.sub_job_id,
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
