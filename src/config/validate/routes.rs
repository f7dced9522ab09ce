//! `[[routes]]`: which events go to which notifiers, and how grouped.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use super::targets::job_types;
use crate::cloud::model::Status;
use crate::config::check::Checker;
use crate::config::key::KeyPath;
use crate::config::raw::RawRoute;
use crate::config::{EventKind, GroupBy, Route};
use crate::notify::kinds::NotifierConfig;

pub(super) fn check(
    ck: &mut Checker<'_>,
    key: &KeyPath,
    raw: Vec<RawRoute>,
    notifiers: &BTreeMap<String, NotifierConfig>,
) -> Vec<Route> {
    // Names are checked against what was written, so a notifier that is
    // itself invalid does not also produce "unknown notifier" errors.
    let written: BTreeSet<String> = ck
        .written_keys(&KeyPath::root().f("notifiers"))
        .unwrap_or_else(|| notifiers.keys().cloned().collect());
    let mut out = Vec::new();
    for (i, r) in raw.into_iter().enumerate() {
        let k = key.i(i);
        let job_types = job_types(ck, &k.f("job_types"), r.job_types.unwrap_or_default());
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
                    if !status.is_known() {
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
                            format!("unknown notifier {name:?}; {known}"),
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
            job_types,
            to,
            kinds,
            notify,
            group_window,
            group_by,
        });
    }
    out
}
