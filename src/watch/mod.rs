//! Watching sub-jobs: what a target is, the events a transition becomes,
//! and the pure diff that finds them (the poller will live here too).

pub mod diff;
pub mod event;
pub mod poller;
pub mod strategy;

use std::fmt;
use std::sync::Arc;

use crate::cloud::model::JobType;

pub use diff::{
    Change, DiffOutcome, DiffSettings, Row, Scan, TargetSnapshot, Tracked, diff, fingerprint,
    fingerprint_json,
};
pub use event::{Event, EventKind};

/// What one poll loop watches: one project's sub-jobs of one type. The API
/// needs both (`job_type` is a required query parameter).
///
/// A target is identified by its project and job type alone: those key its
/// state and go into every `event_id`, so renaming a target or moving it to
/// another account re-alerts nothing. `name` (what logs, metrics, messages
/// and templates show) and `account` (whose credentials and budget read it)
/// come along for display and are left out of equality, hashing and order.
#[derive(Debug, Clone)]
pub struct Target {
    pub project_id: String,
    pub job_type: JobType,
    /// The display name: the configured `name` (with `/JOB_TYPE` when the
    /// entry watches several job types), else `project/JOB_TYPE`.
    pub name: Arc<str>,
    /// The account's name ([`DEFAULT_ACCOUNT`] for the top-level one).
    pub account: Arc<str>,
}

/// The name of the account `[api]` and `[auth]` describe.
pub const DEFAULT_ACCOUNT: &str = "default";

impl Target {
    /// A target of the default account, named `project/JOB_TYPE`.
    pub fn new(project_id: impl Into<String>, job_type: impl Into<JobType>) -> Target {
        let project_id = project_id.into();
        let job_type = job_type.into();
        Target {
            name: Target::default_name(&project_id, &job_type).into(),
            project_id,
            job_type,
            account: DEFAULT_ACCOUNT.into(),
        }
    }

    /// The same target shown as `name` and read through `account`.
    pub fn named(mut self, name: impl Into<Arc<str>>, account: impl Into<Arc<str>>) -> Target {
        self.name = name.into();
        self.account = account.into();
        self
    }

    /// `project/JOB_TYPE`, the name of a target given none.
    pub fn default_name(project_id: &str, job_type: &JobType) -> String {
        format!("{project_id}/{job_type}")
    }

    fn key(&self) -> (&str, &JobType) {
        (&self.project_id, &self.job_type)
    }
}

impl PartialEq for Target {
    fn eq(&self, other: &Target) -> bool {
        self.key() == other.key()
    }
}

impl Eq for Target {}

impl std::hash::Hash for Target {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.key().hash(state);
    }
}

impl PartialOrd for Target {
    fn partial_cmp(&self, other: &Target) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Target {
    fn cmp(&self, other: &Target) -> std::cmp::Ordering {
        self.key().cmp(&other.key())
    }
}

/// The display name, the form logs, metrics and `state show` use.
impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}
