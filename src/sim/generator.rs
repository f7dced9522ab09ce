//! Deterministic sub-job data: ids, names, history and the lifecycle plan of
//! each generated sub-job. Pure: every function takes `now` and draws only
//! from its own seeded rng, so the same seed gives the same jobs.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::cloud::model::{ApiTime, JobResourceInfo, JobType, Status, SubJob};

/// Failure codes a failed sub-job may carry. The first is the one the API
/// documentation shows; the others are invented in the same `WKS.` style so
/// that notifications have some variety to group and display.
pub const FAILURES: &[(&str, &str)] = &[
    (
        "WKS.00129901",
        "The service is now unavailable to process the request.",
    ),
    (
        "WKS.00120011",
        "Failed to create the server: insufficient ECS capacity in the selected AZ.",
    ),
    (
        "WKS.00120023",
        "The server failed to join the domain. Check the domain account and DNS settings.",
    ),
    (
        "WKS.00120105",
        "The image does not exist or is not available.",
    ),
    (
        "WKS.00120210",
        "Timed out waiting for the HDA to report its status.",
    ),
    ("WKS.00120307", "The subnet has no free IP addresses."),
];

/// One future status change of a generated sub-job.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// How long after the previous step (or creation) this one happens.
    pub after: Duration,
    pub status: Status,
    /// `(error_code, error_message)` set with this status.
    pub error: Option<(String, String)>,
}

/// A sub-job as generated: its first state and what happens to it next.
#[derive(Debug, Clone, PartialEq)]
pub struct NewSubJob {
    pub job: SubJob,
    pub plan: Vec<Step>,
}

/// The seeded source of every generated value.
#[derive(Debug)]
pub struct Generator {
    rng: StdRng,
    fail_ratio: f64,
    step: Duration,
}

impl Generator {
    /// `fail_ratio` is clamped into `0..=1`; `step` is the mean time between
    /// a sub-job's status steps.
    pub fn new(seed: u64, fail_ratio: f64, step: Duration) -> Generator {
        let fail_ratio = if fail_ratio.is_nan() {
            0.0
        } else {
            fail_ratio.clamp(0.0, 1.0)
        };
        Generator {
            rng: StdRng::seed_from_u64(seed),
            fail_ratio,
            step,
        }
    }

    /// A random (version 4 shaped) UUID drawn from the seeded rng.
    pub fn uuid(&mut self) -> String {
        let mut b = [0u8; 16];
        self.rng.fill(&mut b);
        b[6] = (b[6] & 0x0f) | 0x40;
        b[8] = (b[8] & 0x3f) | 0x80;
        format!(
            "{}-{}-{}-{}-{}",
            hex::encode(&b[0..4]),
            hex::encode(&b[4..6]),
            hex::encode(&b[6..8]),
            hex::encode(&b[8..10]),
            hex::encode(&b[10..16])
        )
    }

    /// `count` terminal sub-jobs of one project and job type, newest first,
    /// with begin times spread over the past before `now`.
    pub fn history(
        &mut self,
        project: &str,
        job_type: &JobType,
        count: u32,
        now: Timestamp,
    ) -> Vec<SubJob> {
        let mut begin = now - secs(self.rng.random_range(1..120));
        let mut out = Vec::with_capacity(count as usize);
        // Parent jobs in history fan out to 1..=3 sub-jobs like live ones.
        let mut job_id = self.uuid();
        let mut left_in_parent = 0u32;
        for _ in 0..count {
            if left_in_parent == 0 {
                job_id = self.uuid();
                left_in_parent = self.rng.random_range(1..=3);
            }
            left_in_parent -= 1;
            let end = (begin + secs(self.rng.random_range(5..900))).min(now);
            let (status, error) = self.outcome();
            let mut job = self.sub_job(project, job_type, &job_id, status, begin);
            job.end_time = Some(ApiTime::from_timestamp(end));
            if let Some((code, message)) = error {
                job.error_code = Some(code);
                job.error_message = Some(message);
            }
            out.push(job);
            begin -= secs(self.rng.random_range(60..3600));
        }
        out
    }

    /// A new parent job in one of `projects`: its type (mostly
    /// CREATE_SERVER), `fanout` WAITING sub-jobs beginning at `now`, and
    /// each one's plan.
    pub fn parent_job(
        &mut self,
        projects: &[String],
        fanout: u32,
        now: Timestamp,
    ) -> Vec<NewSubJob> {
        let Some(project) = pick(&mut self.rng, projects).cloned() else {
            return Vec::new();
        };
        let job_type = self.job_type();
        let job_id = self.uuid();
        (0..fanout.max(1))
            .map(|_| self.planned(&project, &job_type, &job_id, now))
            .collect()
    }

    /// One WAITING sub-job with a plan, e.g. the job a `shift` fault inserts.
    pub fn planned(
        &mut self,
        project: &str,
        job_type: &JobType,
        job_id: &str,
        now: Timestamp,
    ) -> NewSubJob {
        let job = self.sub_job(project, job_type, job_id, Status::Waiting, now);
        let plan = self.plan();
        NewSubJob { job, plan }
    }

    /// A sub-job in `status` that began at `begin`, with a fresh id and
    /// resource; no end time and no error.
    pub fn sub_job(
        &mut self,
        project: &str,
        job_type: &JobType,
        job_id: &str,
        status: Status,
        begin: Timestamp,
    ) -> SubJob {
        let id = self.uuid();
        let resource_id = self.uuid();
        let suffix: String = (0..10)
            .map(|_| char::from(b'A' + self.rng.random_range(0..26u8)))
            .collect();
        let prefix = match job_type {
            JobType::CreateServerImage => "IMG",
            JobType::CreateServerSnapshot
            | JobType::DeleteServerSnapshot
            | JobType::RestoreServerSnapshot => "SNAP",
            _ => "APS",
        };
        let stamp = begin.strftime("%Y%m%d%H%M%S");
        SubJob {
            id,
            job_type: Some(job_type.clone()),
            job_resource_info: Some(JobResourceInfo {
                resource_id: Some(resource_id),
                resource_name: Some(format!("{prefix}-{stamp}-{suffix}")),
                extra: Default::default(),
            }),
            begin_time: Some(ApiTime::from_timestamp(begin)),
            end_time: None,
            status: Some(status),
            error_code: None,
            error_message: None,
            project_id: Some(project.to_owned()),
            job_id: Some(job_id.to_owned()),
            extra: Default::default(),
        }
    }

    /// Mostly CREATE_SERVER, some DELETE_SERVER, the rest spread evenly.
    fn job_type(&mut self) -> JobType {
        let r: f64 = self.rng.random();
        if r < 0.55 {
            JobType::CreateServer
        } else if r < 0.70 {
            JobType::DeleteServer
        } else {
            let others: Vec<&JobType> = JobType::KNOWN
                .iter()
                .filter(|t| !matches!(t, JobType::CreateServer | JobType::DeleteServer))
                .collect();
            pick(&mut self.rng, &others)
                .map(|t| (*t).clone())
                .unwrap_or(JobType::CreateServer)
        }
    }

    /// A terminal status: FAILED at `fail_ratio` (a tenth of those
    /// ABNORMAL instead), SUCCESS otherwise.
    fn outcome(&mut self) -> (Status, Option<(String, String)>) {
        if self.rng.random_bool(self.fail_ratio) {
            let error = self.failure();
            if self.rng.random_range(0..10) == 0 {
                (Status::Abnormal, Some(error))
            } else {
                (Status::Failed, Some(error))
            }
        } else {
            (Status::Success, None)
        }
    }

    /// WAITING → RUNNING → SUCCESS | FAILED | ABNORMAL, sometimes through
    /// ROLLBACK before FAILED, each step `step` ± 50 %.
    fn plan(&mut self) -> Vec<Step> {
        let mut plan = vec![self.step_to(Status::Running, None)];
        if self.rng.random_bool(self.fail_ratio) {
            let error = self.failure();
            match self.rng.random_range(0..10) {
                0 | 1 => {
                    plan.push(self.step_to(Status::Rollback, None));
                    plan.push(self.step_to(Status::Failed, Some(error)));
                }
                2 => plan.push(self.step_to(Status::Abnormal, Some(error))),
                _ => plan.push(self.step_to(Status::Failed, Some(error))),
            }
        } else {
            plan.push(self.step_to(Status::Success, None));
        }
        plan
    }

    fn step_to(&mut self, status: Status, error: Option<(String, String)>) -> Step {
        let factor: f64 = self.rng.random_range(0.5..1.5);
        Step {
            after: self.step.mul_f64(factor),
            status,
            error,
        }
    }

    fn failure(&mut self) -> (String, String) {
        let (code, message) = FAILURES[self.rng.random_range(0..FAILURES.len())];
        (code.to_owned(), message.to_owned())
    }
}

fn pick<'a, T>(rng: &mut StdRng, items: &'a [T]) -> Option<&'a T> {
    if items.is_empty() {
        None
    } else {
        Some(&items[rng.random_range(0..items.len())])
    }
}

fn secs(n: i64) -> SignedDuration {
    SignedDuration::from_secs(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> Timestamp {
        "2026-11-29T08:00:00Z".parse().unwrap()
    }

    #[test]
    fn same_seed_same_jobs() {
        let projects = vec!["p1".to_owned(), "p2".to_owned()];
        let run = |seed| {
            let mut g = Generator::new(seed, 0.3, Duration::from_millis(100));
            let mut out = g.history("p1", &JobType::CreateServer, 5, now());
            for _ in 0..5 {
                out.extend(g.parent_job(&projects, 3, now()).into_iter().map(|n| n.job));
            }
            out
        };
        assert_eq!(run(7), run(7));
        assert_ne!(run(7), run(8));
    }

    #[test]
    fn history_is_terminal_newest_first_and_in_the_past() {
        let mut g = Generator::new(1, 0.5, Duration::from_secs(1));
        let jobs = g.history("p", &JobType::DeleteServer, 50, now());
        assert_eq!(jobs.len(), 50);
        for pair in jobs.windows(2) {
            assert!(
                pair[0].begin_time.as_ref().unwrap().parsed
                    > pair[1].begin_time.as_ref().unwrap().parsed
            );
        }
        for job in &jobs {
            let status = job.status.as_ref().unwrap();
            assert!(status.is_terminal(), "{status}");
            assert_eq!(status.is_failure(), job.error_code.is_some());
            let end = job.end_time.as_ref().unwrap().parsed.unwrap();
            assert!(end <= now());
            assert!(end >= job.begin_time.as_ref().unwrap().parsed.unwrap());
            assert!(job.resource_name().unwrap().starts_with("APS-"));
        }
    }

    #[test]
    fn plans_end_terminal_and_fail_at_the_ratio() {
        let mut g = Generator::new(3, 0.0, Duration::from_millis(10));
        let ok = g.planned("p", &JobType::CreateServer, "j", now());
        assert_eq!(ok.job.status, Some(Status::Waiting));
        assert!(ok.job.end_time.is_none());
        assert_eq!(
            ok.plan.iter().map(|s| s.status.clone()).collect::<Vec<_>>(),
            [Status::Running, Status::Success]
        );
        let mut g = Generator::new(3, 1.0, Duration::from_millis(10));
        for _ in 0..20 {
            let plan = g.planned("p", &JobType::CreateServer, "j", now()).plan;
            let last = plan.last().unwrap();
            assert!(last.status.is_failure());
            assert!(last.error.is_some());
        }
    }

    #[test]
    fn uuids_look_like_uuids() {
        let id = Generator::new(1, 0.0, Duration::ZERO).uuid();
        assert_eq!(id.len(), 36);
        assert_eq!(id.as_bytes()[14], b'4');
        assert_eq!(id.matches('-').count(), 4);
    }
}
