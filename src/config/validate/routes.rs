//! `[[routes]]`: which events go to which notifiers, and how grouped.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use super::targets::job_types;
use crate::cloud::model::Status;
use crate::config::TargetConfig;
use crate::config::check::{Checker, closest, did_you_mean};
use crate::config::key::KeyPath;
use crate::config::raw::{RawRoute, RawTimeInterval};
use crate::config::{EventKind, GroupBy, Route};
use crate::notify::kinds::NotifierConfig;
use crate::silence::{TimeInterval, TimeRange, weekdays};

/// `[time_intervals.NAME]`: each a maintenance window of weekdays and
/// times of day; at least one of the two.
pub(super) fn intervals(
    ck: &mut Checker<'_>,
    key: &KeyPath,
    raw: BTreeMap<String, RawTimeInterval>,
) -> BTreeMap<String, TimeInterval> {
    let mut out = BTreeMap::new();
    for (name, r) in raw {
        let k = key.f(&name);
        if r.weekdays.is_none() && r.times.is_none() {
            ck.err(
                &k,
                "empty: give `weekdays` (such as [\"saturday\", \"sunday\"] or [\"monday:friday\"]), `times` (such as [\"22:00-24:00\"]) or both",
            );
            continue;
        }
        let mut interval = TimeInterval::default();
        for (j, text) in r.weekdays.unwrap_or_default().iter().enumerate() {
            match weekdays(text) {
                Ok(days) => {
                    for d in days {
                        if !interval.weekdays.contains(&d) {
                            interval.weekdays.push(d);
                        }
                    }
                }
                Err(e) => ck.err(&k.f("weekdays").i(j), e),
            }
        }
        for (j, text) in r.times.unwrap_or_default().iter().enumerate() {
            match text.parse::<TimeRange>() {
                Ok(range) => interval.times.push(range),
                Err(e) => ck.err(&k.f("times").i(j), e),
            }
        }
        out.insert(name, interval);
    }
    out
}

pub(super) fn check(
    ck: &mut Checker<'_>,
    key: &KeyPath,
    raw: Vec<RawRoute>,
    notifiers: &BTreeMap<String, NotifierConfig>,
    targets: &[TargetConfig],
    intervals: &BTreeSet<String>,
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
        let mute_time_intervals = listed(
            ck,
            &k.f("mute_time_intervals"),
            r.mute_time_intervals,
            "time",
        );
        for (j, name) in mute_time_intervals.iter().enumerate() {
            if !intervals.contains(name) {
                let hint = did_you_mean(name, intervals.iter().map(String::as_str));
                let defined = if intervals.is_empty() {
                    "no [time_intervals] are defined".to_owned()
                } else {
                    format!(
                        "defined: {}",
                        intervals.iter().cloned().collect::<Vec<_>>().join(", ")
                    )
                };
                ck.err(
                    &k.f("mute_time_intervals").i(j),
                    format!("unknown time interval {name:?}{hint}; {defined}"),
                );
            }
        }
        out.push(Route {
            mute_time_intervals,
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
