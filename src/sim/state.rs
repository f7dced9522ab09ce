//! The simulator's whole state: sub-jobs with a newest-first index per
//! project and job type, pending lifecycle steps, the transition log,
//! queued faults, request statistics and issued IAM tokens.
//!
//! One `World` lives behind one mutex; nothing here awaits, so the lock is
//! never held across a suspension point.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use jiff::Timestamp;
use serde::Serialize;
use tokio::time::Instant;

use super::faults::Fault;
use super::generator::{Generator, NewSubJob, Step};
use crate::cloud::model::{ApiTime, JobType, Status, SubJob};

/// Position in a listing: `begin_time` descending, then id.
type ListKey = (Reverse<i128>, String);

/// One true status transition; creation has `from: None`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TransitionRecord {
    pub sub_job_id: String,
    pub project_id: String,
    pub job_type: String,
    pub from: Option<String>,
    pub to: String,
    pub at: String,
}

/// Requests on the cloud surface.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Stats {
    pub requests: u64,
    pub by_status: BTreeMap<String, u64>,
    pub by_path: BTreeMap<String, u64>,
}

impl Stats {
    pub fn record(&mut self, path: &str, status: &str) {
        self.requests += 1;
        *self.by_status.entry(status.to_owned()).or_default() += 1;
        *self.by_path.entry(path.to_owned()).or_default() += 1;
    }
}

/// What a listing matches on besides project and job type.
#[derive(Debug, Default, Clone)]
pub struct ListQuery<'a> {
    pub status: Option<&'a Status>,
    pub job_id: Option<&'a str>,
}

impl ListQuery<'_> {
    fn matches(&self, job: &SubJob) -> bool {
        self.status.is_none_or(|s| job.status.as_ref() == Some(s))
            && self.job_id.is_none_or(|j| job.job_id.as_deref() == Some(j))
    }
}

#[derive(Debug)]
struct Entry {
    job: SubJob,
    key: ListKey,
    plan: VecDeque<Step>,
    /// When the next plan step is due, with its tie-breaking sequence.
    due: Option<(Instant, u64)>,
}

#[derive(Debug)]
pub struct World {
    /// project → job type → listing order.
    projects: BTreeMap<String, HashMap<String, BTreeSet<ListKey>>>,
    jobs: HashMap<String, Entry>,
    schedule: BTreeSet<(Instant, u64, String)>,
    seq: u64,
    events: Vec<TransitionRecord>,
    pub faults: VecDeque<Fault>,
    pub stats: Stats,
    /// Issued IAM tokens and when they expire.
    pub tokens: HashMap<String, Timestamp>,
    /// Draws generated jobs (`--history`, `--rate`).
    pub generator: Generator,
    /// Draws control-made and fault-made jobs, apart from `generator` so
    /// that using the control surface leaves the generated stream unchanged.
    pub control: Generator,
    /// List oldest first (`--oldest-first`): an API that breaks the order
    /// the incremental strategy relies on.
    pub oldest_first: bool,
}

impl World {
    pub fn new(generator: Generator, control: Generator) -> World {
        World {
            projects: BTreeMap::new(),
            jobs: HashMap::new(),
            schedule: BTreeSet::new(),
            seq: 0,
            events: Vec::new(),
            faults: VecDeque::new(),
            stats: Stats::default(),
            tokens: HashMap::new(),
            generator,
            control,
            oldest_first: false,
        }
    }

    pub fn ensure_project(&mut self, project: &str) {
        if !self.projects.contains_key(project) {
            self.projects.insert(project.to_owned(), HashMap::new());
        }
    }

    pub fn has_project(&self, project: &str) -> bool {
        self.projects.contains_key(project)
    }

    /// Adds a sub-job (its project is created if needed), logs its creation
    /// and schedules its plan from `now`. A duplicate id replaces nothing:
    /// ids come from the seeded generator, and a clash would be a bug.
    pub fn insert(&mut self, new: NewSubJob, now: Instant) {
        let NewSubJob { job, plan } = new;
        if self.jobs.contains_key(&job.id) {
            return;
        }
        let project = job.project_id.clone().unwrap_or_default();
        let job_type = job_type_of(&job);
        let begin = job
            .begin_time
            .as_ref()
            .and_then(|t| t.parsed)
            .map_or(0, |t| t.as_nanosecond());
        let key: ListKey = (Reverse(begin), job.id.clone());
        self.ensure_project(&project);
        if let Some(index) = self.projects.get_mut(&project) {
            index
                .entry(job_type.clone())
                .or_default()
                .insert(key.clone());
        }
        let status = job
            .status
            .as_ref()
            .map(|s| s.to_string())
            .unwrap_or_default();
        let at = job
            .end_time
            .as_ref()
            .or(job.begin_time.as_ref())
            .map(|t| t.raw.clone())
            .unwrap_or_default();
        self.events.push(TransitionRecord {
            sub_job_id: job.id.clone(),
            project_id: project,
            job_type,
            from: None,
            to: status,
            at,
        });
        let mut entry = Entry {
            job,
            key,
            plan: plan.into(),
            due: None,
        };
        self.schedule_next(&mut entry, now);
        self.jobs.insert(entry.job.id.clone(), entry);
    }

    fn schedule_next(&mut self, entry: &mut Entry, from: Instant) {
        entry.due = entry.plan.front().map(|step| {
            self.seq += 1;
            (from + step.after, self.seq)
        });
        if let Some((at, seq)) = entry.due {
            self.schedule.insert((at, seq, entry.job.id.clone()));
        }
    }

    fn unschedule(&mut self, id: &str) {
        if let Some(entry) = self.jobs.get_mut(id)
            && let Some((at, seq)) = entry.due.take()
        {
            entry.plan.clear();
            self.schedule.remove(&(at, seq, id.to_owned()));
        }
    }

    /// Applies every plan step due by `now` (`at` is the matching wall
    /// time); returns how many steps were taken.
    pub fn step_due(&mut self, now: Instant, at: Timestamp) -> usize {
        let mut taken = 0;
        while let Some(first) = self.schedule.first().cloned() {
            if first.0 > now {
                break;
            }
            self.schedule.pop_first();
            let (due, _, id) = first;
            let Some(mut entry) = self.jobs.remove(&id) else {
                continue;
            };
            entry.due = None;
            if let Some(step) = entry.plan.pop_front() {
                let (code, message) = step.error.unzip();
                self.transition(&mut entry.job, step.status, code, message, at);
                taken += 1;
            }
            // The next step counts from when this one was due, so a late
            // tick does not stretch a job's life.
            self.schedule_next(&mut entry, due);
            self.jobs.insert(id, entry);
        }
        taken
    }

    /// Sets a sub-job's status from the control surface; its own plan, if
    /// any, stops. `None` if there is no such sub-job.
    pub fn set_status(
        &mut self,
        id: &str,
        status: Status,
        error_code: Option<String>,
        error_message: Option<String>,
        at: Timestamp,
    ) -> Option<SubJob> {
        self.unschedule(id);
        let mut entry = self.jobs.remove(id)?;
        self.transition(&mut entry.job, status, error_code, error_message, at);
        let job = entry.job.clone();
        self.jobs.insert(id.to_owned(), entry);
        Some(job)
    }

    /// Changes a job's status; a true change is logged. A terminal status
    /// sets `end_time`, an active one clears it; error fields follow the
    /// new status unless given.
    fn transition(
        &mut self,
        job: &mut SubJob,
        status: Status,
        error_code: Option<String>,
        error_message: Option<String>,
        at: Timestamp,
    ) {
        let from = job.status.clone();
        let keep_error = status.is_failure() || !status.is_known();
        if error_code.is_some() || !keep_error {
            job.error_code = error_code;
        }
        if error_message.is_some() || !keep_error {
            job.error_message = error_message;
        }
        job.end_time = status.is_terminal().then(|| ApiTime::from_timestamp(at));
        job.status = Some(status.clone());
        if from.as_ref() != Some(&status) {
            self.events.push(TransitionRecord {
                sub_job_id: job.id.clone(),
                project_id: job.project_id.clone().unwrap_or_default(),
                job_type: job_type_of(job),
                from: from.map(|s| s.to_string()),
                to: status.to_string(),
                at: ApiTime::from_timestamp(at).raw,
            });
        }
    }

    /// Removes a sub-job; `false` if there was none.
    pub fn delete(&mut self, id: &str) -> bool {
        self.unschedule(id);
        let Some(entry) = self.jobs.remove(id) else {
            return false;
        };
        let project = entry.job.project_id.clone().unwrap_or_default();
        if let Some(set) = self
            .projects
            .get_mut(&project)
            .and_then(|index| index.get_mut(&job_type_of(&entry.job)))
        {
            set.remove(&entry.key);
        }
        true
    }

    /// Deletes the sub-job listed first (the newest) of `project` and
    /// `job_type`; false when there is none.
    pub fn delete_newest(&mut self, project: &str, job_type: &str) -> bool {
        let newest = self
            .projects
            .get(project)
            .and_then(|index| index.get(job_type))
            .and_then(|set| set.iter().next())
            .map(|(_, id)| id.clone());
        newest.is_some_and(|id| self.delete(&id))
    }

    /// One page: the total matching and the items at `offset..offset+limit`
    /// in listing order, over every job type in `job_types`.
    pub fn list(
        &self,
        project: &str,
        job_types: &[&str],
        filter: &ListQuery<'_>,
        offset: u64,
        limit: u64,
    ) -> (u64, Vec<&SubJob>) {
        let Some(index) = self.projects.get(project) else {
            return (0, Vec::new());
        };
        let sets: Vec<&BTreeSet<ListKey>> =
            job_types.iter().filter_map(|t| index.get(*t)).collect();
        let unfiltered = filter.status.is_none() && filter.job_id.is_none();
        if unfiltered && limit == 0 {
            // A count: no walk at all.
            return (sets.iter().map(|s| s.len() as u64).sum(), Vec::new());
        }
        if unfiltered && sets.len() == 1 && !self.oldest_first {
            // The common case: no scan, just a walk to the page.
            let set = sets[0];
            let items = set
                .iter()
                .skip(usize::try_from(offset).unwrap_or(usize::MAX))
                .take(usize::try_from(limit).unwrap_or(usize::MAX))
                .filter_map(|(_, id)| self.jobs.get(id).map(|e| &e.job))
                .collect();
            return (set.len() as u64, items);
        }
        let mut keys: Vec<&ListKey> = sets.into_iter().flatten().collect();
        if job_types.len() > 1 && limit > 0 {
            // Merged listing order across types; a count needs none.
            keys.sort();
        }
        if self.oldest_first {
            keys.reverse();
        }
        let mut count = 0u64;
        let mut items = Vec::new();
        for (_, id) in keys {
            let Some(entry) = self.jobs.get(id) else {
                continue;
            };
            if !filter.matches(&entry.job) {
                continue;
            }
            if count >= offset && (count - offset) < limit {
                items.push(&entry.job);
            }
            count += 1;
        }
        (count, items)
    }

    /// When the earliest planned step is due.
    pub fn next_due(&self) -> Option<Instant> {
        self.schedule.first().map(|(at, _, _)| *at)
    }

    #[cfg(test)]
    pub fn get(&self, id: &str) -> Option<&SubJob> {
        self.jobs.get(id).map(|e| &e.job)
    }

    pub fn events(&self) -> &[TransitionRecord] {
        &self.events
    }
}

fn job_type_of(job: &SubJob) -> String {
    job.job_type
        .as_ref()
        .map(JobType::to_string)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn store() -> World {
        World::new(
            Generator::new(1, 0.0, Duration::from_secs(1)),
            Generator::new(2, 0.0, Duration::from_secs(1)),
        )
    }

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn lists_newest_first_with_filters() {
        let mut s = store();
        let now = Instant::now();
        let t = at("2026-11-29T08:00:00Z");
        let jobs = s.generator.history("p", &JobType::CreateServer, 30, t);
        for job in jobs.iter().rev() {
            s.insert(
                NewSubJob {
                    job: job.clone(),
                    plan: vec![],
                },
                now,
            );
        }
        let (count, page) = s.list("p", &["CREATE_SERVER"], &ListQuery::default(), 0, 10);
        assert_eq!(count, 30);
        let ids: Vec<&str> = page.iter().map(|j| j.id.as_str()).collect();
        let expected: Vec<&str> = jobs[..10].iter().map(|j| j.id.as_str()).collect();
        assert_eq!(ids, expected);
        let (count, page) = s.list("p", &["CREATE_SERVER"], &ListQuery::default(), 30, 10);
        assert_eq!((count, page.len()), (30, 0));
        let success = Status::Success;
        let filter = ListQuery {
            status: Some(&success),
            job_id: None,
        };
        let (count, _) = s.list("p", &["CREATE_SERVER"], &filter, 0, 100);
        assert_eq!(count, 30, "fail ratio 0 makes only successes");
        let (count, _) = s.list("p", &["DELETE_SERVER"], &ListQuery::default(), 0, 100);
        assert_eq!(count, 0);
    }

    #[test]
    fn plans_step_when_due_and_log_transitions() {
        let mut s = store();
        let start = Instant::now();
        let t = at("2026-11-29T08:00:00Z");
        let new = s.generator.planned("p", &JobType::CreateServer, "j", t);
        let id = new.job.id.clone();
        s.insert(new, start);
        assert_eq!(s.step_due(start, t), 0);
        assert_eq!(s.step_due(start + Duration::from_secs(10), t), 2);
        let job = s.get(&id).unwrap();
        assert_eq!(job.status, Some(Status::Success));
        assert!(job.end_time.is_some());
        let tos: Vec<&str> = s.events().iter().map(|e| e.to.as_str()).collect();
        assert_eq!(tos, ["WAITING", "RUNNING", "SUCCESS"]);
        assert_eq!(s.events()[0].from, None);
        assert_eq!(s.events()[2].from.as_deref(), Some("RUNNING"));
    }

    #[test]
    fn control_updates_stop_the_plan_and_same_status_is_no_event() {
        let mut s = store();
        let start = Instant::now();
        let t = at("2026-11-29T08:00:00Z");
        let new = s.generator.planned("p", &JobType::CreateServer, "j", t);
        let id = new.job.id.clone();
        s.insert(new, start);
        s.set_status(&id, Status::Waiting, None, None, t).unwrap();
        assert_eq!(s.events().len(), 1);
        s.set_status(&id, "PAUSED".into(), None, None, t).unwrap();
        assert_eq!(s.step_due(start + Duration::from_secs(60), t), 0);
        assert_eq!(s.events().len(), 2);
        assert!(s.delete(&id));
        assert!(!s.delete(&id));
        assert_eq!(
            s.list("p", &["CREATE_SERVER"], &ListQuery::default(), 0, 10)
                .0,
            0
        );
    }
}
