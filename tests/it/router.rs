//! The `Router` on its own, as data: routes written as the user writes
//! them (`[[routes]]` TOML through the real config validation, so its
//! defaults apply), one event, and the deliveries expected.

use std::time::Duration;

use figment::Figment;
use figment::providers::{Format, Toml};
use jobwatch::cloud::model::{Status, SubJob};
use jobwatch::config::{Config, EnvVars};
use jobwatch::route::Router;
use jobwatch::watch::Target;
use jobwatch::watch::event::{Event, EventKind, Transition};
use serde_json::json;

/// A valid config around `routes`: notifiers `a`, `b` and `c` exist.
fn router(routes: &str) -> Router {
    let toml = format!(
        r#"
[auth]
method = "none"
[[targets]]
project_id = "p1"
job_types = ["CREATE_SERVER", "DELETE_SERVER"]
[notifiers.a]
kind = "log"
[notifiers.b]
kind = "log"
[notifiers.c]
kind = "log"
{routes}
"#
    );
    let figment = Figment::new()
        .merge(Toml::string(&toml))
        .merge(EnvVars::default());
    match Config::from_figment(figment) {
        Ok(loaded) => Router::from_routes(loaded.config.routes),
        Err(e) => panic!("routes rejected: {e}\n{routes}"),
    }
}

/// An event of `kind` for sub-job `s-1` (parent `j-1` unless `job_id` is
/// `None`) of `job_type` in `p1`.
fn event(
    kind: EventKind,
    job_type: &str,
    from: Option<&str>,
    to: Option<&str>,
    job_id: Option<&str>,
) -> Event {
    let job: SubJob = serde_json::from_value(json!({
        "id": "s-1", "job_type": job_type, "status": to.or(from), "job_id": job_id,
        "begin_time": "2026-11-29T10:40:43.858Z", "project_id": "p1"
    }))
    .unwrap();
    let (from, to) = (from.map(Status::from), to.map(Status::from));
    let transition = Transition {
        kind,
        from: from.as_ref(),
        to: to.as_ref(),
        error_code: None,
        since: None,
    };
    Event::new(
        &Target::new("p1", job_type),
        &job,
        transition,
        jiff::Timestamp::now(),
    )
}

fn changed(job_type: &str, from: &str, to: &str) -> Event {
    event(
        EventKind::Changed,
        job_type,
        Some(from),
        Some(to),
        Some("j-1"),
    )
}

/// One expected delivery: notifier, group key, window.
type Expect<'a> = (&'a str, Option<&'a str>, Option<Duration>);

/// The one check: `routes` send `event` to exactly `expected`, in order.
#[track_caller]
fn check(routes: &str, event: &Event, expected: &[Expect<'_>]) {
    // The key as stored (its text encoding), so the check also pins the
    // form state files hold.
    let got: Vec<(String, Option<String>, Option<Duration>)> = router(routes)
        .route(event, jiff::Timestamp::now(), &[])
        .into_iter()
        .map(|r| {
            let key = r.group.as_ref().map(|g| g.key.to_string());
            (r.notifier, key, r.group.map(|g| g.window))
        })
        .collect();
    let expected: Vec<(String, Option<String>, Option<Duration>)> = expected
        .iter()
        .map(|(notifier, key, window)| ((*notifier).to_owned(), key.map(str::to_owned), *window))
        .collect();
    assert_eq!(
        got, expected,
        "\nroutes:{routes}\nevent: {} {:?}→{:?} {}",
        event.kind, event.from, event.to, event.job_type
    );
}

const PLAIN: &str = r#"
[[routes]]
notify = ["a"]
"#;

#[test]
fn kinds_default_to_appeared_changed_and_stuck_and_vanished_is_not_routed_by_default() {
    // Pins docs/events.md: `vanished` is "default: not routed"; a route without
    // `kinds` takes the other three.
    let a: &[Expect<'_>] = &[("a", None, None)];
    check(PLAIN, &changed("CREATE_SERVER", "RUNNING", "FAILED"), a);
    check(
        PLAIN,
        &event(
            EventKind::Appeared,
            "CREATE_SERVER",
            None,
            Some("WAITING"),
            Some("j-1"),
        ),
        a,
    );
    check(
        PLAIN,
        &event(
            EventKind::Stuck,
            "CREATE_SERVER",
            Some("RUNNING"),
            Some("RUNNING"),
            Some("j-1"),
        ),
        a,
    );
    check(
        PLAIN,
        &event(
            EventKind::Vanished,
            "CREATE_SERVER",
            Some("RUNNING"),
            None,
            Some("j-1"),
        ),
        &[],
    );
    // Asked for, it is routed.
    let vanished = r#"
[[routes]]
notify = ["a"]
kinds = ["vanished"]
"#;
    check(
        vanished,
        &event(
            EventKind::Vanished,
            "CREATE_SERVER",
            Some("RUNNING"),
            None,
            Some("j-1"),
        ),
        a,
    );
    check(
        vanished,
        &changed("CREATE_SERVER", "RUNNING", "FAILED"),
        &[],
    );
}

#[test]
fn job_types_filter() {
    // Pins `routes.job_types`: only those job types; empty means all.
    let routes = r#"
[[routes]]
notify = ["a"]
job_types = ["CREATE_SERVER"]
[[routes]]
notify = ["b"]
"#;
    check(
        routes,
        &changed("CREATE_SERVER", "RUNNING", "FAILED"),
        &[("a", None, None), ("b", None, None)],
    );
    check(
        routes,
        &changed("DELETE_SERVER", "RUNNING", "FAILED"),
        &[("b", None, None)],
    );
}

#[test]
fn to_filter() {
    // Pins `routes.to` (the status entered), including docs/events.md's case of a
    // sub-job created and failed between two polls: `appeared` with
    // `to = FAILED` must be caught by a route on `to`.
    let failures = r#"
[[routes]]
notify = ["a"]
to = ["FAILED", "ABNORMAL"]
"#;
    let a: &[Expect<'_>] = &[("a", None, None)];
    check(failures, &changed("CREATE_SERVER", "RUNNING", "FAILED"), a);
    check(
        failures,
        &changed("CREATE_SERVER", "RUNNING", "ABNORMAL"),
        a,
    );
    check(
        failures,
        &changed("CREATE_SERVER", "RUNNING", "SUCCESS"),
        &[],
    );
    check(
        failures,
        &changed("CREATE_SERVER", "FAILED", "RUNNING"),
        &[],
    );
    check(
        failures,
        &event(
            EventKind::Appeared,
            "CREATE_SERVER",
            None,
            Some("FAILED"),
            Some("j-1"),
        ),
        a,
    );
    // A `vanished` has no `to`: a route on `to` never takes it.
    let vanished_failures = r#"
[[routes]]
notify = ["a"]
kinds = ["vanished", "changed"]
to = ["FAILED"]
"#;
    check(
        vanished_failures,
        &event(
            EventKind::Vanished,
            "CREATE_SERVER",
            Some("FAILED"),
            None,
            Some("j-1"),
        ),
        &[],
    );
    // An unknown status is an ordinary value (docs/configuration.md).
    let unknown = r#"
[[routes]]
notify = ["a"]
to = ["HIBERNATING"]
"#;
    check(
        unknown,
        &changed("CREATE_SERVER", "RUNNING", "HIBERNATING"),
        a,
    );
    check(unknown, &changed("CREATE_SERVER", "RUNNING", "FAILED"), &[]);
}

#[test]
fn several_routes_to_one_notifier_give_one_delivery() {
    // Pins "never a repeated alert": an event matching several routes that
    // name one notifier is delivered to it once; the first matching route
    // decides its grouping.
    let routes = r#"
[[routes]]
notify = ["a", "b"]
to = ["FAILED"]
[[routes]]
notify = ["b", "c"]
group_window = "30s"
[[routes]]
notify = ["a"]
job_types = ["CREATE_SERVER"]
"#;
    check(
        routes,
        &changed("CREATE_SERVER", "RUNNING", "FAILED"),
        &[
            ("a", None, None),
            ("b", None, None),
            ("c", Some("routes[1]"), Some(Duration::from_secs(30))),
        ],
    );
    // When the first route does not match, the second one groups `b`.
    check(
        routes,
        &changed("CREATE_SERVER", "WAITING", "RUNNING"),
        &[
            ("b", Some("routes[1]"), Some(Duration::from_secs(30))),
            ("c", Some("routes[1]"), Some(Duration::from_secs(30))),
            ("a", None, None),
        ],
    );
}

#[test]
fn group_window_and_group_by_give_the_group_key_and_window() {
    // Pins `group_window` (rows wait this long for company) and `group_by`:
    // `route` (default) keys by the route, `job_id` by project and parent
    // job, falling back to the sub-job when the API gave no parent.
    let by_route = r#"
[[routes]]
notify = ["a"]
to = ["SUCCESS"]
[[routes]]
notify = ["a"]
group_window = "2m"
"#;
    let two_minutes = Some(Duration::from_secs(120));
    check(
        by_route,
        &changed("CREATE_SERVER", "RUNNING", "FAILED"),
        &[("a", Some("routes[1]"), two_minutes)],
    );
    let by_job = r#"
[[routes]]
notify = ["a"]
group_window = "10s"
group_by = "job_id"
"#;
    let ten_seconds = Some(Duration::from_secs(10));
    check(
        by_job,
        &changed("CREATE_SERVER", "RUNNING", "FAILED"),
        &[("a", Some("routes[0]/p1/j-1"), ten_seconds)],
    );
    check(
        by_job,
        &event(
            EventKind::Changed,
            "CREATE_SERVER",
            Some("RUNNING"),
            Some("FAILED"),
            None,
        ),
        &[("a", Some("routes[0]/p1/s-1"), ten_seconds)],
    );
    // Without a window, group_by alone groups nothing.
    let no_window = r#"
[[routes]]
notify = ["a"]
group_by = "job_id"
"#;
    check(
        no_window,
        &changed("CREATE_SERVER", "RUNNING", "FAILED"),
        &[("a", None, None)],
    );
}

#[test]
fn no_routes_route_nothing() {
    // Pins that routing is opt-in: a config without routes sends nothing.
    check("", &changed("CREATE_SERVER", "RUNNING", "FAILED"), &[]);
}

/// A window mutes its route, not its notifiers: a notifier that a muted
/// route and an unmuted one both name is sent to by the unmuted one (with
/// its grouping); one only muted routes name is held. A silence holds
/// every notifier.
#[test]
fn a_muted_route_leaves_its_notifiers_to_the_routes_that_are_not() {
    use jobwatch::silence::{Hold, Silence};
    let toml = r#"
[auth]
method = "none"
[[targets]]
project_id = "p1"
job_types = ["CREATE_SERVER"]
[notifiers.a]
kind = "log"
[notifiers.b]
kind = "log"
[time_intervals.always]
weekdays = ["monday:sunday"]
[[routes]]
notify = ["a", "b"]
mute_time_intervals = ["always"]
[[routes]]
to = ["FAILED"]
notify = ["a"]
group_window = "30s"
"#;
    let loaded = Config::from_figment(
        Figment::new()
            .merge(Toml::string(toml))
            .merge(EnvVars::default()),
    )
    .expect("valid");
    let c = &loaded.config;
    let router = Router::new(
        c.routes.clone(),
        c.time_intervals.clone(),
        c.delivery.timezone.clone(),
    );
    let now = jiff::Timestamp::now();
    let routed =
        |event: &Event, silences: &[Silence]| -> Vec<(String, usize, Option<Hold>, bool)> {
            router
                .route(event, now, silences)
                .into_iter()
                .map(|r| (r.notifier, r.route, r.held, r.group.is_some()))
                .collect()
        };
    let window = Some(Hold::Window("always".into()));
    assert_eq!(
        routed(&changed("CREATE_SERVER", "RUNNING", "FAILED"), &[]),
        vec![
            ("a".into(), 1, None, true),
            ("b".into(), 0, window.clone(), false)
        ]
    );
    assert_eq!(
        routed(&changed("CREATE_SERVER", "RUNNING", "SUCCESS"), &[]),
        vec![
            ("a".into(), 0, window.clone(), false),
            ("b".into(), 0, window, false)
        ]
    );
    let silence = Silence {
        id: 7,
        matchers: vec!["to=FAILED".parse().expect("a matcher")],
        starts_at: now - jiff::SignedDuration::from_hours(1),
        ends_at: now + jiff::SignedDuration::from_hours(1),
        comment: String::new(),
        created_by: String::new(),
        created_at: now,
    };
    let held = Some(Hold::Silence(7));
    assert_eq!(
        routed(&changed("CREATE_SERVER", "RUNNING", "FAILED"), &[silence]),
        vec![
            ("a".into(), 0, held.clone(), false),
            ("b".into(), 0, held, false)
        ]
    );
}
