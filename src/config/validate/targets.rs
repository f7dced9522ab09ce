//! `[[targets]]`: projects and the job types watched in each; no
//! (project, job type) pair twice.

use std::collections::HashMap;

use super::SdkEnv;
use crate::cloud::model::JobType;
use crate::config::TargetConfig;
use crate::config::check::{Checker, is_word};
use crate::config::key::KeyPath;
use crate::config::raw::RawTarget;

pub(super) fn check(
    ck: &mut Checker<'_>,
    key: &KeyPath,
    raw: Vec<RawTarget>,
    sdk: &SdkEnv,
) -> Vec<TargetConfig> {
    let mut seen: HashMap<(String, JobType), usize> = HashMap::new();
    let mut out = Vec::new();
    for (i, t) in raw.into_iter().enumerate() {
        let k = key.i(i);
        let name = ck.non_empty(&k.f("name"), t.name);
        // A target may leave out its project and take the SDK's.
        let project_id = match t.project_id.or_else(|| sdk.project_id.clone()) {
            None => {
                ck.err(
                    &k.f("project_id"),
                    "missing: set it, or HUAWEICLOUD_SDK_PROJECT_ID",
                );
                String::new()
            }
            Some(p) if p.trim().is_empty() => {
                ck.err(&k.f("project_id"), "must not be empty");
                String::new()
            }
            Some(p) if !is_word(p.trim()) => {
                // It goes into the request path: no `/`, `?` or spaces.
                ck.err(
                    &k.f("project_id"),
                    format!("{p:?} is not a project id (letters, digits, '-' and '_' only)"),
                );
                String::new()
            }
            Some(p) => p.trim().to_owned(),
        };
        let job_types = match ck.required_list(
            &k.f("job_types"),
            t.job_types,
            "a target watches at least one job type, e.g. [\"CREATE_SERVER\"]",
        ) {
            Some(list) => job_types(ck, &k.f("job_types"), list),
            None => Vec::new(),
        };
        for jt in &job_types {
            if project_id.is_empty() {
                continue;
            }
            if let Some(first) = seen.insert((project_id.clone(), jt.clone()), i) {
                let where_ = if first == i {
                    "listed twice here".to_owned()
                } else {
                    format!("already watched by targets[{first}]")
                };
                ck.err(
                    &k.f("job_types"),
                    format!("duplicate target: project {project_id:?}, job type {jt} is {where_}"),
                );
            }
        }
        out.push(TargetConfig {
            name,
            project_id,
            job_types,
        });
    }
    out
}

pub(super) fn job_types(ck: &mut Checker<'_>, key: &KeyPath, list: Vec<String>) -> Vec<JobType> {
    let mut out = Vec::new();
    for (i, s) in list.into_iter().enumerate() {
        let s = s.trim().to_owned();
        if s.is_empty() {
            ck.err(&key.i(i), "must not be empty");
            continue;
        }
        let jt = JobType::from(s);
        if !jt.is_known() {
            ck.warn(format!(
                "{}: unknown job type {:?} (kept: the cloud may have added it; known: {})",
                key.i(i),
                jt.as_str(),
                JobType::KNOWN
                    .iter()
                    .map(JobType::as_str)
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        out.push(jt);
    }
    out
}
