//! User templates: the helpers and context, strictness, what `check` rejects
//! (naming `notifiers.NAME.template`), and what receivers get when a
//! notifier has a template — the rendering as the webhook's whole body, or
//! inside a chat kind's envelope, still within its size limit.

use std::time::Duration;

use figment::Figment;
use figment::providers::{Format, Toml};
use jiff::tz::TimeZone;
use jobwatch::config::{Config, ConfigError, EnvVars, Loaded};
use jobwatch::notify::chat::ChatNotifier;
use jobwatch::notify::kinds::slack::{self, Slack};
use jobwatch::notify::kinds::webhook::WebhookNotifier;
use jobwatch::notify::template::{
    Markup, Template, TemplateError, TemplateSettings, sample_group, sample_message,
};
use jobwatch::notify::{GroupInfo, Message, Notifier, text};
use jobwatch::retry::Verdict;
use serde_json::json;

use crate::support::Receiver;

fn shanghai() -> TemplateSettings {
    TemplateSettings {
        timezone: TimeZone::get("Asia/Shanghai").expect("the tz database has Asia/Shanghai"),
        region: "cn-north-4".into(),
        account_regions: Default::default(),
    }
}

fn compile(source: &str) -> Result<Template, TemplateError> {
    Template::compile("x", source, &shanghai(), Markup::Plain)
}

#[track_caller]
fn render(source: &str, message: &Message) -> String {
    let template = compile(source).unwrap_or_else(|e| panic!("{source:?} compiles: {e}"));
    template
        .render(message)
        .unwrap_or_else(|e| panic!("{source:?} renders: {e}"))
}

#[track_caller]
fn render_err(source: &str, message: &Message) -> String {
    match compile(source).and_then(|t| t.render(message)) {
        Ok(out) => panic!("{source:?} rendered {out:?}, expected an error"),
        Err(e) => e.to_string(),
    }
}

/// A message of `n` events copied from the sample group's, grouped.
fn group_of(n: usize) -> Message {
    let base = sample_group().events;
    let events: Vec<_> = (0..n)
        .map(|i| {
            let mut e = base[i % base.len()].clone();
            e.sub_job_id = format!("sub-{i:04}");
            e.event_id = format!("ev{i:04}");
            e
        })
        .collect();
    Message {
        test: false,
        id: "group-500".into(),
        group: Some(GroupInfo {
            job: None,
            id: "group-500".into(),
            key: "route".into(),
            count: n,
        }),
        events,
    }
}

// ------------------------------------------------------------ the context

#[test]
fn the_context_has_the_event_the_group_and_counts() {
    let one = sample_message();
    assert_eq!(
        render(
            "{{ notifier }} {{ id }} {{ count }} {{ group }} {{ event.to }} {{ events[0].sub_job_id }}",
            &one,
        ),
        format!("x {} 1  FAILED {}", one.id, one.events[0].sub_job_id)
    );
    let group = sample_group();
    assert_eq!(
        render(
            "{{ group.key }} {{ group.count }} {{ count }} F{{ counts.FAILED }} S{{ counts.SUCCESS }} \
             R{{ counts.RUNNING }} W{{ counts.WAITING }}",
            &group,
        ),
        "routes[0] 3 3 F1 S1 R1 W0"
    );
    // The event objects are docs/events.md's, field for field.
    let spec: serde_json::Value =
        serde_json::from_str(&render("{{ event|tojson }}", &one)).expect("tojson is JSON");
    assert_eq!(spec, serde_json::to_value(&one.events[0]).unwrap());
    // The built-in wording is there to reuse, word for word.
    assert_eq!(
        render("{{ title }}", &one),
        "❌ CREATE_SERVER FAILED on APS-20261129184043-SAMPLE1"
    );
    assert_eq!(
        render("{{ summary }}", &group),
        "CREATE_SERVER: 1 SUCCESS, 1 FAILED, 1 stuck"
    );
}

// ------------------------------------------------------------ the helpers

#[test]
fn time_is_shown_in_the_configured_zone() {
    let one = sample_message();
    // end_time 2026-11-29T10:40:43.858Z is 18:40:43 in Shanghai.
    assert_eq!(
        render("{{ event.end_time|time }}", &one),
        "2026-11-29 18:40:43 +08:00"
    );
    assert_eq!(
        render("{{ time(event.observed_at) }}", &one),
        "2026-11-29 18:40:50 +08:00"
    );
    assert_eq!(render("{{ event.end_time|time('%H:%M') }}", &one), "18:40");
    // A missing time is empty; a time the API wrote that does not parse is
    // shown as it came, never an error.
    let stuck = Message {
        test: false,
        events: vec![sample_group().events[2].clone()],
        ..sample_message()
    };
    assert_eq!(render("[{{ event.end_time|time }}]", &stuck), "[]");
    let mut odd = sample_message();
    odd.events[0].end_time = Some(jobwatch::cloud::model::ApiTime::parse("yesterday-ish"));
    assert_eq!(render("{{ event.end_time|time }}", &odd), "yesterday-ish");
    // A bad format is a render error, which `check` reports.
    assert!(render_err("{{ event.end_time|time('%H:%') }}", &one).contains("bad time format"));
}

#[test]
fn duration_in_state_uses_begin_and_end_or_observed() {
    let group = sample_group();
    // FAILED: 10:00:00 → 10:40:43.858 (end_time).
    assert_eq!(render("{{ event|duration }}", &group), "40m 43s");
    assert_eq!(render("{{ duration_in_state(event) }}", &group), "40m 43s");
    // Stuck, no end: 10:00:00 → observed 10:40:50.
    assert_eq!(
        render("{{ duration_in_state(events[2]) }}", &group),
        "40m 50s"
    );
    // Numbers of seconds format the same way.
    assert_eq!(render("{{ 3725|duration }}", &group), "1h 2m 5s");
    // Unknown (no begin_time) is empty, so `or` can fill it.
    let mut no_begin = sample_message();
    no_begin.events[0].begin_time = None;
    assert_eq!(
        render("{{ event|duration or 'unknown' }}", &no_begin),
        "unknown"
    );
}

#[test]
fn console_link_points_at_the_region() {
    let one = sample_message();
    assert_eq!(
        render("{{ console_link(event) }}", &one),
        "https://console.huaweicloud.com/workspace/?region=cn-north-4#/app/server"
    );
    let intl = TemplateSettings {
        region: "ap-southeast-1".into(),
        ..shanghai()
    };
    let t = Template::compile("x", "{{ console_link() }}", &intl, Markup::Plain).unwrap();
    assert_eq!(
        t.render(&one).unwrap(),
        "https://console-intl.huaweicloud.com/workspace/?region=ap-southeast-1#/app/server"
    );
}

#[test]
fn status_icons() {
    let group = sample_group();
    assert_eq!(
        render(
            "{% for s in ['FAILED','ABNORMAL','SUCCESS','WAITING','RUNNING','ROLLBACK','ABORTING','stuck','NEW_ONE'] %}\
             {{ s|status_icon }}{% endfor %}",
            &group,
        ),
        "❌❌✅⏳⏳⏳⏳⚠️🔄"
    );
    // Of an event: a stuck one is stuck whatever its status.
    assert_eq!(
        render(
            "{% for e in events %}{{ e|status_icon }}{% endfor %}",
            &group
        ),
        "❌✅⚠️"
    );
    // No status (an appeared event's `from`) has no icon, and prints as
    // nothing itself.
    assert_eq!(
        render("[{{ none|status_icon }}][{{ none }}]", &group),
        "[][]"
    );
}

/// One icon table: a built-in title starts with the icon a template's
/// `|status_icon` gives the same event (❌ failure, ✅ success, ⚠️ stuck,
/// ⏳ active, 🔄 vanished). Before, ⏳ meant stuck in built-in titles.
#[test]
fn built_in_titles_and_status_icon_share_one_table() {
    let mut events = sample_group().events;
    let mut running = events[1].clone();
    running.to = Some(jobwatch::cloud::model::Status::Running);
    let mut vanished = events[1].clone();
    vanished.kind = jobwatch::watch::EventKind::Vanished;
    vanished.to = None;
    events.extend([running, vanished]);
    let expected = ["❌", "✅", "⚠️", "⏳", "🔄"];
    for (event, icon) in events.into_iter().zip(expected) {
        let one = Message {
            test: false,
            id: event.event_id.clone(),
            group: None,
            events: vec![event],
        };
        assert_eq!(render("{{ event|status_icon }}", &one), icon);
        let title = text::title(&one);
        assert!(title.starts_with(&format!("{icon} ")), "{title}");
    }
    let stuck = Message {
        test: false,
        id: "s".into(),
        group: None,
        events: vec![sample_group().events.remove(2)],
    };
    assert_eq!(
        text::title(&stuck),
        "⚠️ CREATE_SERVER stuck in RUNNING on 6c2e7b1a-1f0d-4a5e-9c3b-2d4f6a8b0c03"
    );
}

// ------------------------------------------------------------ strictness

#[test]
fn undefined_names_are_errors_with_the_line() {
    let one = sample_message();
    let e = render_err("first line\n{{ evnt.to }}", &one);
    assert!(
        e.contains("line 2") && e.contains("undefined") && e.contains("`evnt.to`"),
        "{e}"
    );
    let e = render_err("{{ event.statuss }}", &one);
    assert!(e.contains("undefined"), "{e}");
    let e = render_err("{{ event.to|shout }}", &one);
    assert!(e.contains("unknown filter"), "{e}");
    // Testing for a key is how a template asks.
    assert_eq!(
        render(
            "{% if event.nope is defined %}yes{% else %}no{% endif %}",
            &one
        ),
        "no"
    );
}

// ------------------------------------------------------------ check

fn load(toml: &str) -> Result<Loaded, ConfigError> {
    let figment = Figment::new()
        .merge(Toml::string(toml))
        .merge(EnvVars::from_pairs([
            ("HUAWEICLOUD_SDK_AK", "AK"),
            ("HUAWEICLOUD_SDK_SK", "sk"),
        ]));
    Config::from_figment(figment)
}

fn notifier(kind: &str, template: &str) -> String {
    format!(
        "[delivery]\ntimezone = \"Asia/Shanghai\"\n[notifiers.x]\nkind = \"{kind}\"\nurl = \"https://hooks.example.com/x\"\ntemplate = '''{template}'''\n"
    )
}

#[track_caller]
fn rejected(kind: &str, template: &str, fragments: &[&str]) {
    match load(&notifier(kind, template)) {
        Ok(_) => panic!("{template:?} was accepted for {kind}"),
        Err(e) => {
            let text = e.to_string();
            for f in fragments {
                assert!(text.contains(f), "expected {f:?} in:\n{text}");
            }
        }
    }
}

#[test]
fn check_rejects_bad_templates_naming_the_key() {
    rejected(
        "slack",
        "ok\n{% for e in events %}{{ e.to }}",
        &[
            "notifiers.x.template: invalid template",
            "syntax error",
            "line 2",
        ],
    );
    rejected(
        "slack",
        "{{ event.to }}\n{{ evnt.to }}",
        &[
            "notifiers.x.template",
            "sample event",
            "line 2",
            "undefined",
        ],
    );
    rejected(
        "discord",
        "{{ event.to|shout }}",
        &["notifiers.x.template", "unknown filter"],
    );
    // Fine for one event, broken for a group: both samples are rendered.
    rejected(
        "teams",
        "{{ event.to }}{% if group %}{{ group.nope }}{% endif %}",
        &["notifiers.x.template", "sample group", "undefined"],
    );
    // The webhook posts the rendering as application/json.
    rejected(
        "webhook",
        "{\"events\": [{% for e in events %}{{ e.sub_job_id|tojson }},{% endfor %}]}",
        &["notifiers.x.template", "invalid JSON"],
    );
    // The log kind has no message to shape.
    let log = "[notifiers.x]\nkind = \"log\"\ntemplate = \"{{ event.to }}\"\n";
    let e = load(log)
        .expect_err("a template on log is rejected")
        .to_string();
    assert!(e.contains("notifiers.x.template"), "{e}");
}

#[test]
fn check_accepts_good_templates() {
    for (kind, template) in [
        (
            "slack",
            "{{ event|status_icon }} *{{ event.job_type }}* {{ event.to }} ({{ event|duration }})\n<{{ console_link(event) }}|console>",
        ),
        (
            "webhook",
            "{\"text\": {{ (title ~ ' at ' ~ (event.observed_at|time))|tojson }}, \"count\": {{ count }}}",
        ),
        (
            "feishu",
            "{% for e in events %}- {{ e.sub_job_id }} {{ e.to }}\n{% endfor %}",
        ),
    ] {
        if let Err(e) = load(&notifier(kind, template)) {
            panic!("{kind} {template:?} rejected:\n{e}");
        }
    }
    // A webhook with a non-JSON Content-Type may send anything.
    let text = "[notifiers.x]\nkind = \"webhook\"\nurl = \"https://h.example.com/\"\n\
                headers = { \"Content-Type\" = \"text/plain\" }\ntemplate = \"{{ title }}\"\n";
    load(text).unwrap_or_else(|e| panic!("{e}"));
}

// ------------------------------------------------------------ receivers

fn http() -> reqwest::Client {
    jobwatch::install_crypto_provider();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client")
}

#[tokio::test]
async fn a_webhook_template_is_the_whole_body() {
    let mut rx = Receiver::start(vec![]).await;
    let source = r#"{"msg_type": "text", "content": {"text": {{ (event|status_icon ~ " " ~ event.sub_job_id ~ " " ~ event.to ~ " at " ~ (event.end_time|time))|tojson }}}}"#;
    let notifier = Notifier::new(WebhookNotifier {
        url: format!("{}/hook", rx.url).parse().unwrap(),
        secret: None,
        headers: vec![],
        http: http(),
        template: Some(compile(source).unwrap()),
    });
    let message = sample_message();
    let attempt = notifier.send(&message).await;
    assert_eq!(attempt.verdict, Verdict::Success, "{}", attempt.answer);
    let got = rx.next(Duration::from_secs(5)).await;
    assert_eq!(got.path, "/hook");
    assert_eq!(
        got.json(),
        json!({"msg_type": "text", "content": {"text": format!(
            "❌ {} FAILED at 2026-11-29 18:40:43 +08:00",
            message.events[0].sub_job_id
        )}})
    );
    assert_eq!(got.header("webhook-id"), Some(message.id.as_str()));
}

#[tokio::test]
async fn a_render_failure_at_send_time_is_a_dead_letter_with_the_reason() {
    // `check` would have rejected this (the sample event has no group);
    // a message can still differ from the samples in ways they miss. The
    // whole path: a committed outbox row, the dispatcher, the notifier's
    // render failure, a dead letter at the first attempt that says why.
    use jobwatch::metrics::Metrics;
    use jobwatch::notify::dispatch::{DispatchSettings, Dispatcher, Notifiers, Slot};
    use jobwatch::store::{Delivery, SharedStore, Store};
    use jobwatch::watch::Target;
    use jobwatch::watch::diff::{DiffSettings, Scan, TargetSnapshot, diff};
    use std::sync::Arc;

    let mut rx = Receiver::start(vec![]).await;
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path().join("state.db")).unwrap();
    let target = Target::new("p1", "CREATE_SERVER");
    let failed = serde_json::from_value(json!({
        "id": "sub-1", "job_type": "CREATE_SERVER", "status": "FAILED", "job_id": "parent-1",
        "error_code": "WKS.00129901", "begin_time": "2026-11-29T10:40:43.858Z"
    }))
    .unwrap();
    let now = jiff::Timestamp::now();
    let settings = DiffSettings {
        notify_existing: true,
        ..DiffSettings::default()
    };
    let outcome = diff(
        &target,
        &TargetSnapshot::default(),
        &Scan::complete(vec![failed]),
        now,
        &settings,
    );
    let deliveries = [Delivery {
        event: &outcome.events[0],
        notifier: "slack",
        group: None,
    }];
    store
        .commit_cycle(&target, &outcome, &deliveries, now)
        .unwrap();
    let store = SharedStore::new(store);

    let notifier = Notifier::new(ChatNotifier {
        url: format!("{}/hook", rx.url).parse().unwrap(),
        http: http(),
        tz: TimeZone::UTC,
        template: Some(compile("{{ group.key|upper }}").unwrap()),
        secret: None,
        kind: Slack,
    });
    let mut notifiers: Notifiers = std::collections::HashMap::new();
    notifiers.insert("slack".into(), Arc::new(Slot::new(notifier, None, 1)));
    let dispatcher = Arc::new(Dispatcher::new(
        store.clone().into(),
        notifiers,
        DispatchSettings {
            backoff: jobwatch::retry::Backoff {
                base: Duration::from_millis(10),
                cap: Duration::from_millis(100),
                max_attempts: 0,
                jitter: false,
            },
            max_age: Duration::from_secs(3600),
        },
        Arc::new(Metrics::new()),
    ));
    let stop = tokio_util::sync::CancellationToken::new();
    let run = tokio::spawn(
        dispatcher
            .clone()
            .run(tokio_util::task::TaskTracker::new(), stop.clone()),
    );
    let dead = crate::support::eventually(Duration::from_secs(30), "a dead letter", || {
        let store = store.clone();
        async move {
            let dead = store.call(|s| s.dead()).await.unwrap();
            (!dead.is_empty()).then_some(dead)
        }
    })
    .await;
    stop.cancel();
    run.await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].attempts, 1, "a render failure is not retried");
    let reason = dead[0].last_error.as_deref().unwrap_or_default();
    assert!(reason.starts_with("template error: "), "{reason}");
    assert!(
        reason.contains("group"),
        "it names what was undefined: {reason}"
    );
    // Nothing was sent.
    assert!(rx.rx.try_recv().is_err());
}

#[tokio::test]
async fn a_slack_template_goes_in_the_envelope_and_fits_with_500_events() {
    let mut rx = Receiver::start(vec![]).await;
    let source = "*{{ count }} sub-jobs* {{ summary }}\n\
                  {% for e in events %}{{ e|status_icon }} {{ e.sub_job_id }} {{ e.to }} <{{ console_link(e) }}|{{ e.resource_name or e.resource_id }}>\n{% endfor %}";
    let template = Template::compile("slack", source, &shanghai(), Markup::Slack).unwrap();
    let notifier = ChatNotifier {
        url: format!("{}/hook", rx.url).parse().unwrap(),
        http: http(),
        tz: TimeZone::UTC,
        template: Some(template),
        secret: None,
        kind: Slack,
    };
    let mut message = group_of(500);
    // API text is escaped for mrkdwn; the template's own `<…|…>` is not.
    message.events[0].resource_name = Some("<!channel>".into());
    let attempt = Notifier::new(notifier).send(&message).await;
    assert_eq!(attempt.verdict, Verdict::Success, "{}", attempt.answer);
    let body = rx.next(Duration::from_secs(5)).await.json();
    let text_field = body["text"].as_str().expect("text");
    let blocks = body["blocks"].as_array().expect("blocks");
    assert_eq!(blocks.len(), 1);
    assert_eq!(blocks[0]["type"], "section");
    let section = blocks[0]["text"]["text"].as_str().expect("section text");
    assert_eq!(section, text_field);
    assert!(text::chars(section) <= slack::SECTION_LIMIT_CHARS);
    assert!(
        section.starts_with("*500 sub-jobs* CREATE_SERVER:"),
        "{section}"
    );
    assert!(section.contains("|&lt;!channel&gt;>"), "{section}");
    assert!(!section.contains("<!channel>"));
    // Cut between lines, saying how many were left out.
    let listed = section.matches("\n❌ ").count()
        + section.matches("\n✅ ").count()
        + section.matches("\n⚠️ ").count();
    let more: usize = section
        .rsplit("… and ")
        .next()
        .and_then(|t| t.strip_suffix(" more lines"))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no tail in {section:?}"));
    // 1 header line + 500 event lines + the trailing empty line.
    assert_eq!(1 + listed + more, 502, "listed {listed}, more {more}");
    assert!(listed > 10);
}
