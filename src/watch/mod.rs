//! Watching sub-jobs: what a target is, the events a transition becomes,
//! and the pure diff that finds them (the poller will live here too).

pub mod diff;
pub mod event;
pub mod poller;
pub mod strategy;

use std::fmt;

use crate::cloud::model::JobType;

pub use diff::{
    Change, DiffOutcome, DiffSettings, Row, Scan, TargetSnapshot, Tracked, diff, fingerprint,
    fingerprint_json,
};
pub use event::{Event, EventKind};

/// What one poll loop watches: one project's sub-jobs of one type. The API
/// needs both (`job_type` is a required query parameter).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Target {
    pub project_id: String,
    pub job_type: JobType,
}

impl Target {
    pub fn new(project_id: impl Into<String>, job_type: impl Into<JobType>) -> Target {
        Target {
            project_id: project_id.into(),
            job_type: job_type.into(),
        }
    }
}

/// `project/JOB_TYPE`, the form logs and `state show` use.
impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.project_id, self.job_type)
    }
}
