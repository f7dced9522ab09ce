//! The event a detected transition becomes: its kinds, its JSON (docs/events.md)
//! and its deterministic id.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::Target;
use crate::cloud::model::{ApiTime, JobType, Status, SubJob};

/// What happened to a sub-job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    /// Not seen before (after the baseline). `from` is null.
    Appeared,
    /// Status or error code differs from the snapshot.
    Changed,
    /// Active in one status for longer than `poll.stuck_after`.
    Stuck,
    /// Absent from two consecutive complete scans. `to` is null.
    Vanished,
}

impl EventKind {
    pub const ALL: [EventKind; 4] = [
        EventKind::Appeared,
        EventKind::Changed,
        EventKind::Stuck,
        EventKind::Vanished,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Appeared => "appeared",
            EventKind::Changed => "changed",
            EventKind::Stuck => "stuck",
            EventKind::Vanished => "vanished",
        }
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An unknown kind name, e.g. in config (`kinds = ["apeared"]`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown event kind {0:?} (expected appeared, changed, stuck or vanished)")]
pub struct UnknownKind(pub String);

impl FromStr for EventKind {
    type Err = UnknownKind;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        EventKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| UnknownKind(s.to_owned()))
    }
}

/// One transition, as notifiers and `once --format json` see it. The field
/// order is docs/events.md's; absent values serialize as `null`, never omitted, so
/// receivers see a fixed shape.
///
/// This is the event's own type, apart from the API model and the store's
/// rows: it is what the outbox keeps as `payload_json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Stable across retries and restarts; see [`event_id`].
    pub event_id: String,
    pub kind: EventKind,
    /// The target's display name (its `name`, else `project/JOB_TYPE`).
    /// Absent from events stored by versions before it: those read as "".
    #[serde(default)]
    pub target: String,
    /// The target's account (`default` for `[api]`/`[auth]`).
    #[serde(default = "default_account")]
    pub account: String,
    pub project_id: String,
    /// The target's job type (an item may omit its own).
    pub job_type: JobType,
    pub sub_job_id: String,
    pub job_id: Option<String>,
    pub resource_id: Option<String>,
    pub resource_name: Option<String>,
    pub from: Option<Status>,
    pub to: Option<Status>,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    /// RFC 3339 (UTC) when the API's time parses, the API's text otherwise.
    pub begin_time: Option<ApiTime>,
    pub end_time: Option<ApiTime>,
    /// When jobwatch saw it. Not part of the id: a re-detection later is
    /// still the same transition.
    pub observed_at: jiff::Timestamp,
}

fn default_account() -> String {
    super::DEFAULT_ACCOUNT.to_owned()
}

impl Event {
    /// The target as messages name it: its own name, or `project/JOB_TYPE`
    /// for an event stored before events carried one.
    pub fn target_name(&self) -> std::borrow::Cow<'_, str> {
        if self.target.is_empty() {
            super::Target::default_name(&self.project_id, &self.job_type).into()
        } else {
            self.target.as_str().into()
        }
    }

    /// Whether the target has a name of its own (not `project/JOB_TYPE`).
    pub fn target_is_named(&self) -> bool {
        !self.target.is_empty()
            && self.target != super::Target::default_name(&self.project_id, &self.job_type)
    }
}

/// The parts of a transition that identify it.
#[derive(Debug, Clone, Copy)]
pub struct Transition<'a> {
    pub kind: EventKind,
    pub from: Option<&'a Status>,
    pub to: Option<&'a Status>,
    pub error_code: Option<&'a str>,
    /// When the sub-job entered the status it leaves (changed, vanished) or
    /// stays in (stuck), as the snapshot recorded it; `None` for appeared.
    /// It tells a repeated transition (RUNNING→WAITING→RUNNING→WAITING) from
    /// a re-detection of the same one, and it is persisted, so a transition
    /// re-detected after a crash gets the same id.
    pub since: Option<jiff::Timestamp>,
}

/// The deterministic id of a transition: SHA-256 over an unambiguous
/// encoding (a JSON array, so no separator can be forged by a value) of
/// target, sub-job and [`Transition`], as 32 hex characters. The clock is not
/// part of it.
pub fn event_id(target: &Target, sub_job_id: &str, t: &Transition<'_>) -> String {
    let since = t.since.map(|s| s.as_nanosecond().to_string());
    let parts: [Option<&str>; 9] = [
        Some("jobwatch-event-v1"),
        Some(&target.project_id),
        Some(target.job_type.as_str()),
        Some(sub_job_id),
        Some(t.kind.as_str()),
        t.from.map(Status::as_str),
        t.to.map(Status::as_str),
        t.error_code,
        since.as_deref(),
    ];
    // Serializing an array of optional strings cannot fail.
    let encoded = serde_json::to_vec(&parts).expect("strings serialize");
    let digest = Sha256::digest(&encoded);
    hex::encode(&digest[..16])
}

impl Event {
    /// Builds the event for `job` (the sub-job as last seen) and a transition.
    pub fn new(
        target: &Target,
        job: &SubJob,
        t: Transition<'_>,
        observed_at: jiff::Timestamp,
    ) -> Event {
        Event {
            event_id: event_id(target, &job.id, &t),
            kind: t.kind,
            target: target.name.to_string(),
            account: target.account.to_string(),
            project_id: target.project_id.clone(),
            job_type: target.job_type.clone(),
            sub_job_id: job.id.clone(),
            job_id: job.job_id.clone(),
            resource_id: job.resource_id().map(str::to_owned),
            resource_name: job.resource_name().map(str::to_owned),
            from: t.from.cloned(),
            to: t.to.cloned(),
            error_code: job.error_code.clone(),
            error_message: job.error_message.clone(),
            begin_time: job.begin_time.as_ref().map(rfc3339),
            end_time: job.end_time.as_ref().map(rfc3339),
            observed_at,
        }
    }

    /// Takes the descriptive fields (parent job, resource, message, times)
    /// from `job`, the whole stored sub-job: a `vanished` event is built
    /// from what the in-memory snapshot keeps, which has none of them. The
    /// id and the transition stay as they are.
    pub fn fill_from(&mut self, job: &SubJob) {
        self.job_id = job.job_id.clone();
        self.resource_id = job.resource_id().map(str::to_owned);
        self.resource_name = job.resource_name().map(str::to_owned);
        self.error_message = job.error_message.clone();
        self.begin_time = job.begin_time.as_ref().map(rfc3339);
        self.end_time = job.end_time.as_ref().map(rfc3339);
    }
}

/// Normalizes an API time to RFC 3339 UTC (`2022-03-07T10:40:43.858Z`); a
/// value that did not parse is passed on as the API wrote it.
fn rfc3339(time: &ApiTime) -> ApiTime {
    match time.parsed {
        Some(at) => ApiTime {
            raw: at.to_string(),
            parsed: Some(at),
        },
        None => time.clone(),
    }
}
