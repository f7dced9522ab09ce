//! `[[targets]]`: projects and the job types watched in each; no
//! (project, job type) pair twice.

use std::collections::{BTreeSet, HashMap};

use super::SdkEnv;
use crate::cloud::model::JobType;
use crate::config::TargetConfig;
use crate::config::check::{Checker, closest, did_you_mean, is_word};
use crate::config::key::KeyPath;
use crate::config::raw::RawTarget;
use crate::watch::DEFAULT_ACCOUNT;

pub(super) fn check(
    ck: &mut Checker<'_>,
    key: &KeyPath,
    raw: Vec<RawTarget>,
    sdk: &SdkEnv,
    accounts: &BTreeSet<String>,
) -> Vec<TargetConfig> {
    let mut seen: HashMap<(String, JobType), usize> = HashMap::new();
    let mut names: HashMap<String, usize> = HashMap::new();
    let mut out = Vec::new();
    for (i, t) in raw.into_iter().enumerate() {
        let k = key.i(i);
        let name = ck
            .non_empty(&k.f("name"), t.name)
            .map(|n| n.trim().to_owned());
        if let Some(name) = &name
            && let Some(first) = names.insert(name.clone(), i)
        {
            ck.err(
                &k.f("name"),
                format!("{name:?} already names targets[{first}]; names tell targets apart in logs, metrics and routes"),
            );
        }
        let account = ck
            .non_empty(&k.f("account"), t.account)
            .map(|a| a.trim().to_owned());
        if let Some(account) = &account
            && account != DEFAULT_ACCOUNT
            && !accounts.contains(account)
        {
            let known: Vec<&str> = std::iter::once(DEFAULT_ACCOUNT)
                .chain(accounts.iter().map(String::as_str))
                .collect();
            ck.err(
                &k.f("account"),
                format!(
                    "unknown account {account:?}{}; defined: {} (add an [accounts.{account}] table)",
                    did_you_mean(account, known.iter().copied()),
                    known.join(", ")
                ),
            );
        }
        // "default" written out is the same as leaving it out.
        let account = account.filter(|a| a != DEFAULT_ACCOUNT);
        // A target of the default account may leave out its project and
        // take the SDK's (the SDK's variables are that account's).
        let sdk_project = sdk.project_id.clone().filter(|_| account.is_none());
        let project_id = match t.project_id.or(sdk_project) {
            None if account.is_some() => {
                ck.err(
                    &k.f("project_id"),
                    "missing: set the project of this account",
                );
                String::new()
            }
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
            account,
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
        let known = JobType::KNOWN.iter().map(JobType::as_str);
        if let Some(meant) = closest(jt.as_str(), known) {
            // CREATE_SERVR: a typo, not a job type the cloud added.
            ck.err(
                &key.i(i),
                format!(
                    "unknown job type {:?} (did you mean {meant:?}?); as written it would never match",
                    jt.as_str()
                ),
            );
        } else if !jt.is_known() {
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
