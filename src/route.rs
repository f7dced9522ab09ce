//! Routes and grouping: which notifiers an event goes to, which group it
//! joins, when that group's window closes, and which rows leave together.
//!
//! Everything about a route's `group_window` lives here: the [`GroupKey`]
//! and its one text encoding (the outbox's `group_key` column), the rule
//! that a later event joins a group's open window ([`Grouping::not_before`]),
//! and the batching of due rows into one message per group ([`batches`]).
//! The store keeps the key and the time as data; the dispatcher and the
//! message wording ask this module what they mean.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use jiff::Timestamp;
use serde::Serialize;

use crate::cloud::model::{JobType, Status};
use crate::silence::{Hold, Silence, TimeInterval};
use crate::watch::event::{Event, EventKind};

/// One `[[routes]]` entry.
#[derive(Debug, Clone, Serialize)]
pub struct Route {
    /// Target names (a target's `name`, or its `NAME/JOB_TYPE` when it
    /// watches several); empty: every target. Empty filters are not
    /// printed, as in the input.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub targets: Vec<String>,
    /// Project ids; empty: every project.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub projects: Vec<String>,
    /// Empty: every job type.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub job_types: Vec<JobType>,
    /// Exact error codes; empty: any (or none).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub error_codes: Vec<String>,
    /// Statuses entered; empty: every status.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub to: Vec<Status>,
    pub kinds: Vec<EventKind>,
    /// Notifier names, each checked to exist.
    pub notify: Vec<String>,
    /// Printed the way it is written (`"1h 30m"`), as the config's other
    /// durations are.
    #[serde(
        serialize_with = "jiff::fmt::serde::unsigned_duration::friendly::compact::optional::serialize",
        skip_serializing_if = "Option::is_none"
    )]
    pub group_window: Option<Duration>,
    pub group_by: GroupBy,
    /// `[time_intervals]` names: while one holds, what the route takes is
    /// recorded as held and not sent.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub mute_time_intervals: Vec<String>,
}

impl Route {
    /// Whether `event` takes this route: every filter given matches.
    pub fn matches(&self, event: &Event) -> bool {
        let to_matches = match &event.to {
            Some(to) => self.to.is_empty() || self.to.contains(to),
            // A route with a `to` filter never takes an event without a status.
            None => self.to.is_empty(),
        };
        let target_matches = self.targets.iter().any(|t| {
            *t == event.target
                || event
                    .target
                    .strip_prefix(t.as_str())
                    .and_then(|rest| rest.strip_prefix('/'))
                    == Some(event.job_type.as_str())
        });
        self.kinds.contains(&event.kind)
            && to_matches
            && (self.targets.is_empty() || target_matches)
            && (self.projects.is_empty() || self.projects.contains(&event.project_id))
            && (self.job_types.is_empty() || self.job_types.contains(&event.job_type))
            && (self.error_codes.is_empty()
                || event
                    .error_code
                    .as_ref()
                    .is_some_and(|c| self.error_codes.contains(c)))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum GroupBy {
    Route,
    JobId,
}

/// Which notifiers an event goes to, by the configured routes, and what
/// holds it back from them.
#[derive(Debug, Clone)]
pub struct Router {
    routes: Vec<Route>,
    /// `[time_intervals.NAME]`, which routes' `mute_time_intervals` name.
    intervals: BTreeMap<String, TimeInterval>,
    /// `delivery.timezone`: the zone the intervals' days and times are in.
    timezone: jiff::tz::TimeZone,
}

/// One event for one notifier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Routed {
    pub notifier: String,
    /// The index of the route that sent it there.
    pub route: usize,
    /// `Some` when the route groups (`group_window`).
    pub group: Option<Grouping>,
    /// `Some`: a silence or the route's maintenance window holds it; it is
    /// recorded in the history and never sent.
    pub held: Option<Hold>,
}

impl Router {
    pub fn new(
        routes: Vec<Route>,
        intervals: BTreeMap<String, TimeInterval>,
        timezone: jiff::tz::TimeZone,
    ) -> Router {
        Router {
            routes,
            intervals,
            timezone,
        }
    }

    /// Routes alone: no maintenance windows.
    pub fn from_routes(routes: Vec<Route>) -> Router {
        Router::new(routes, BTreeMap::new(), jiff::tz::TimeZone::UTC)
    }

    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    /// Every notifier the event is routed to, once each, each with what
    /// holds it at `now`: the first of `silences` that matches (it holds
    /// every notifier), else its route's first maintenance window that is
    /// on. The first route naming a notifier decides its grouping, unless
    /// a window mutes that route and a later one naming it is not muted:
    /// then that one sends it.
    pub fn route(&self, event: &Event, now: Timestamp, silences: &[Silence]) -> Vec<Routed> {
        let silenced = silences
            .iter()
            .find(|s| s.holds(event, now))
            .map(|s| Hold::Silence(s.id));
        let mut seen = BTreeSet::new();
        let mut out = Vec::new();
        for (index, route) in self.routes.iter().enumerate() {
            if !route.matches(event) {
                continue;
            }
            let group = route.group_window.map(|window| Grouping {
                key: GroupKey::new(index, route.group_by, event),
                window,
            });
            let held = silenced.clone().or_else(|| {
                route
                    .mute_time_intervals
                    .iter()
                    .find(|name| {
                        self.intervals
                            .get(name.as_str())
                            .is_some_and(|i| i.contains(now, &self.timezone))
                    })
                    .map(|name| Hold::Window(name.clone()))
            });
            for notifier in &route.notify {
                let routed = Routed {
                    notifier: notifier.clone(),
                    route: index,
                    group: group.clone(),
                    held: held.clone(),
                };
                if seen.insert(notifier.clone()) {
                    out.push(routed);
                } else if routed.held.is_none()
                    && let Some(first) = out
                        .iter_mut()
                        .find(|r| r.notifier == *notifier && r.held.is_some())
                {
                    // A window mutes its route, not the notifier: a later
                    // route that is not muted still sends (and groups).
                    *first = routed;
                }
            }
        }
        out
    }
}

/// The group an outbox row belongs to: rows of one notifier sharing a key
/// may leave as one message.
///
/// Stored as text ([`fmt::Display`] writes it, [`FromStr`] reads it back):
/// `routes[N]` or `routes[N]/PROJECT/JOB`, as jobwatch has always written
/// them. That text is a compatibility promise (state files in the field
/// hold it); change it only by adding a form that still reads the old ones.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum GroupKey {
    /// `routes[N]`: every event route `N` takes (`group_by = "route"`).
    Route { route: usize },
    /// `routes[N]/PROJECT/JOB`: route `N`'s events of one parent job
    /// (`group_by = "job_id"`). `job_id` is the sub-job's own id when the
    /// API gave no parent.
    Job {
        route: usize,
        project_id: String,
        job_id: String,
    },
    /// Any other text, kept verbatim so its rows still group together: a
    /// form this version does not write. A bare key reads as a parent job
    /// id, as the wording always took it (`tests/data/state-v1.db` keys
    /// its rows that way).
    Other(String),
}

impl GroupKey {
    /// The key of `event` in route `index`, grouped `by`.
    pub fn new(route: usize, by: GroupBy, event: &Event) -> GroupKey {
        match by {
            GroupBy::Route => GroupKey::Route { route },
            GroupBy::JobId => GroupKey::Job {
                route,
                project_id: event.project_id.clone(),
                job_id: event
                    .job_id
                    .clone()
                    .unwrap_or_else(|| event.sub_job_id.clone()),
            },
        }
    }

    /// The parent job the group gathers, if it gathers one.
    pub fn job_id(&self) -> Option<&str> {
        match self {
            GroupKey::Route { .. } => None,
            GroupKey::Job { job_id, .. } => Some(job_id),
            GroupKey::Other(text) => Some(text),
        }
    }
}

impl fmt::Display for GroupKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GroupKey::Route { route } => write!(f, "routes[{route}]"),
            GroupKey::Job {
                route,
                project_id,
                job_id,
            } => write!(f, "routes[{route}]/{project_id}/{job_id}"),
            GroupKey::Other(text) => f.write_str(text),
        }
    }
}

/// Every text reads: what is not one of the written forms is
/// [`GroupKey::Other`]. Only the canonical spelling of a form reads as that
/// form (`routes[01]` is `Other`), so writing a key back gives its text.
impl FromStr for GroupKey {
    type Err = std::convert::Infallible;

    fn from_str(text: &str) -> Result<GroupKey, Self::Err> {
        let other = || GroupKey::Other(text.to_owned());
        let Some((route, rest)) = text
            .strip_prefix("routes[")
            .and_then(|rest| rest.split_once(']'))
        else {
            return Ok(other());
        };
        let canonical = !route.is_empty()
            && route.bytes().all(|b| b.is_ascii_digit())
            && (route == "0" || !route.starts_with('0'));
        let Some(route) = canonical.then(|| route.parse::<usize>().ok()).flatten() else {
            return Ok(other());
        };
        if rest.is_empty() {
            return Ok(GroupKey::Route { route });
        }
        // Project ids never hold a `/`; a job id may, so it takes the rest.
        match rest.strip_prefix('/').and_then(|r| r.split_once('/')) {
            Some((project_id, job_id)) if !project_id.is_empty() && !job_id.is_empty() => {
                Ok(GroupKey::Job {
                    route,
                    project_id: project_id.to_owned(),
                    job_id: job_id.to_owned(),
                })
            }
            _ => Ok(other()),
        }
    }
}

/// How a route groups one event: the group it joins and how long a new
/// group's window stays open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grouping {
    pub key: GroupKey,
    /// The route's `group_window`: the first row waits this long for company.
    pub window: Duration,
}

impl Grouping {
    /// When a new row of this group may leave, given when the group's open
    /// window closes (`open`: the earliest time a row of this group and
    /// notifier still waits for, if any does).
    ///
    /// The rule: a window opens with its group's first row; a later event
    /// joins the open window rather than opening its own, so the whole
    /// group leaves together when it closes.
    pub fn not_before(&self, now: Timestamp, open: Option<Timestamp>) -> Timestamp {
        open.unwrap_or(now + self.window)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every form reads back as written, and what jobwatch never wrote
    /// keeps its text.
    #[test]
    fn group_keys_read_back_as_written() {
        let cases = [
            ("routes[0]", GroupKey::Route { route: 0 }),
            ("routes[12]", GroupKey::Route { route: 12 }),
            (
                "routes[0]/p1/8f2d6a3b-parent",
                GroupKey::Job {
                    route: 0,
                    project_id: "p1".into(),
                    job_id: "8f2d6a3b-parent".into(),
                },
            ),
            (
                "routes[3]/p1/a/b",
                GroupKey::Job {
                    route: 3,
                    project_id: "p1".into(),
                    job_id: "a/b".into(),
                },
            ),
        ];
        for (text, key) in cases {
            assert_eq!(text.parse::<GroupKey>(), Ok(key.clone()), "{text}");
            assert_eq!(key.to_string(), text);
        }
        for text in [
            "ff8080818a1b2c3d018a1b9e5b7a0f00",
            "routes[01]",
            "routes[+1]",
            "routes[]",
            "routes[1]x",
            "routes[1]/p1",
            "routes[1]//j",
            "routes[1]/p1/",
            "",
        ] {
            let key: GroupKey = text.parse().expect("infallible");
            assert_eq!(key, GroupKey::Other(text.to_owned()));
            assert_eq!(key.to_string(), text);
        }
    }

    #[test]
    fn a_later_row_joins_the_open_window() {
        let now: Timestamp = "2026-01-05T10:00:00Z".parse().expect("a valid literal");
        let grouping = Grouping {
            key: GroupKey::Route { route: 0 },
            window: Duration::from_secs(30),
        };
        assert_eq!(
            grouping.not_before(now, None),
            now + Duration::from_secs(30)
        );
        let open = now + Duration::from_secs(5);
        assert_eq!(grouping.not_before(now, Some(open)), open);
    }
}
