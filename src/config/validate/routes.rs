//! `[[routes]]`: which events go to which notifiers, and how grouped.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use super::targets::job_types;
use crate::cloud::model::Status;
use crate::config::TargetConfig;
use crate::config::check::{Checker, closest, did_you_mean};
use crate::config::key::KeyPath;
use crate::config::raw::RawRoute;
use crate::config::{EventKind, GroupBy, Route};
use crate::notify::kinds::NotifierConfig;

pub(super) fn check(
    ck: &mut Checker<'_>,
    key: &KeyPath,
    raw: Vec<RawRoute>,
    notifiers: &BTreeMap<String, NotifierConfig>,
    targets: &[TargetConfig],
) -> Vec<Route> {
    // What `targets` and `projects` may name: a filter naming nothing
    // configured would silently never match.
    let mut target_names: BTreeSet<String> = BTreeSet::new();
    for t in targets {
        target_names.extend(t.name.clone());
        target_names.extend(t.watched().map(|w| w.name.to_string()));
    }
    let projects: BTreeSet<String> = targets.iter().map(|t| t.project_id.clone()).collect();
    // Names are checked against what was written, so a notifier that is
    // itself invalid does not also produce "unknown notifier" errors.
    let written: BTreeSet<String> = ck
        .written_keys(&KeyPath::root().f("notifiers"))
        .unwrap_or_else(|| notifiers.keys().cloned().collect());
    let mut out = Vec::new();
    for (i, r) in raw.into_iter().enumerate() {
        let k = key.i(i);
        let targets = known_names(ck, &k.f("targets"), r.targets, "target", &target_names);
        let projects = known_names(ck, &k.f("projects"), r.projects, "project", &projects);
        let job_types = job_types(ck, &k.f("job_types"), r.job_types.unwrap_or_default());
        let error_codes = listed(ck, &k.f("error_codes"), r.error_codes, "error code");
        let to = match r.to {
            None => Vec::new(),
            Some(list) if list.is_empty() => {
                ck.err(
                    &k.f("to"),
                    "empty: it would match nothing; leave it out to match every status",
                );
                Vec::new()
            }
            Some(list) => list
                .into_iter()
                .enumerate()
                .filter_map(|(j, s)| {
                    let s = s.trim().to_owned();
                    if s.is_empty() {
                        ck.err(&k.f("to").i(j), "must not be empty");
                        return None;
                    }
                    let status = Status::from(s);
                    let known = Status::KNOWN.iter().map(Status::as_str);
                    if let Some(meant) = closest(status.as_str(), known) {
                        // FAILD, SUCESS: a typo, not a status the cloud added.
                        ck.err(
                            &k.f("to").i(j),
                            format!(
                                "unknown status {:?} (did you mean {meant:?}?); as written the route would never match",
                                status.as_str()
                            ),
                        );
                    } else if !status.is_known() {
                        ck.warn(format!(
                            "{}: unknown status {:?} (kept: the cloud may have added it; known: {})",
                            k.f("to").i(j),
                            status.as_str(),
                            Status::KNOWN.iter().map(Status::as_str).collect::<Vec<_>>().join(", ")
                        ));
                    }
                    Some(status)
                })
                .collect(),
        };
        let kinds = match r.kinds {
            None => vec![EventKind::Appeared, EventKind::Changed, EventKind::Stuck],
            Some(list) if list.is_empty() => {
                ck.err(
                    &k.f("kinds"),
                    "empty: it would match nothing; leave it out for appeared, changed, stuck",
                );
                Vec::new()
            }
            Some(list) => {
                let mut kinds = Vec::new();
                for (j, s) in list.iter().enumerate() {
                    match EventKind::ALL.iter().find(|e| e.as_str() == s.trim()) {
                        Some(e) if !kinds.contains(e) => kinds.push(*e),
                        Some(_) => {}
                        None => ck.err(
                            &k.f("kinds").i(j),
                            format!(
                                "unknown event kind {s:?}; expected one of \"appeared\", \"changed\", \"stuck\", \"vanished\""
                            ),
                        ),
                    }
                }
                kinds
            }
        };
        let notify = match ck.required_list(
            &k.f("notify"),
            r.notify,
            "a route must notify at least one notifier",
        ) {
            None => Vec::new(),
            Some(list) => {
                for name in &list {
                    if !written.contains(name) {
                        let hint = did_you_mean(name, written.iter().map(String::as_str));
                        let known = if written.is_empty() {
                            "no notifiers are defined".to_owned()
                        } else {
                            format!(
                                "defined: {}",
                                written.iter().cloned().collect::<Vec<_>>().join(", ")
                            )
                        };
                        ck.err(
                            &k.f("notify"),
                            format!("unknown notifier {name:?}{hint}; {known}"),
                        );
                    }
                }
                let mut unique = Vec::new();
                for name in list {
                    if !unique.contains(&name) {
                        unique.push(name);
                    }
                }
                unique
            }
        };
        let group_window = r.group_window.as_ref().map(|w| {
            ck.duration(
                &k.f("group_window"),
                Some(w),
                Duration::ZERO,
                Duration::from_millis(1),
            )
        });
        let group_by = ck.choice(
            &k.f("group_by"),
            r.group_by.as_deref(),
            &[("route", GroupBy::Route), ("job_id", GroupBy::JobId)],
            GroupBy::Route,
        );
        out.push(Route {
            targets,
            projects,
            job_types,
            error_codes,
            to,
            kinds,
            notify,
            group_window,
            group_by,
        });
    }
    out
}

/// A list filter's values, trimmed; an empty list or value is an error
/// (it would match nothing, or everything by mistake).
fn listed(
    ck: &mut Checker<'_>,
    key: &KeyPath,
    raw: Option<Vec<String>>,
    what: &str,
) -> Vec<String> {
    let Some(list) = raw else {
        return Vec::new();
    };
    if list.is_empty() {
        ck.err(
            key,
            format!("empty: it would match nothing; leave it out to match every {what}"),
        );
    }
    let mut out = Vec::new();
    for (j, s) in list.into_iter().enumerate() {
        let s = s.trim().to_owned();
        if s.is_empty() {
            ck.err(&key.i(j), "must not be empty");
        } else if !out.contains(&s) {
            out.push(s);
        }
    }
    out
}

/// As [`listed`], each value one of `known` (a target or project the
/// config watches), with a "did you mean" for a near miss.
fn known_names(
    ck: &mut Checker<'_>,
    key: &KeyPath,
    raw: Option<Vec<String>>,
    what: &str,
    known: &BTreeSet<String>,
) -> Vec<String> {
    let list = listed(ck, key, raw, what);
    for (j, name) in list.iter().enumerate() {
        if !known.contains(name) {
            let hint = did_you_mean(name, known.iter().map(String::as_str));
            let watched = if known.is_empty() {
                "none is configured".to_owned()
            } else {
                format!(
                    "watched: {}",
                    known.iter().cloned().collect::<Vec<_>>().join(", ")
                )
            };
            ck.err(
                &key.i(j),
                format!(
                    "no {what} {name:?} is watched{hint}, so the route would never match; {watched}"
                ),
            );
        }
    }
    list
}
