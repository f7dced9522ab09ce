//! User templates (`notifiers.NAME.template`): a minijinja template, compiled
//! once at start, that renders a [`Message`] into the text a notifier sends
//! instead of its built-in wording.
//!
//! The context is the docs/events.md event JSON plus a few derived values, and the
//! helpers cover what templates otherwise get wrong (time zones, durations,
//! links). Undefined values are errors, not empty strings, and `check`
//! renders every template against [`sample_message`] and [`sample_group`],
//! so a typo fails at `jobwatch check` rather than at the first real alert.
//!
//! | name | what |
//! |---|---|
//! | `id` | the message id (event id, or group id), stable across retries |
//! | `events` | the docs/events.md event objects of the message |
//! | `event` | the first of them: handy when a route does not group |
//! | `group` | `none`, or `{id, key, count}` for a grouped message |
//! | `count` | how many events |
//! | `counts` | events by the status they entered: `counts.FAILED`; every known status is present (0 when none) |
//! | `notifier` | the notifier's name |
//! | `test` | true for `notify-test`'s sample (its `title` already says so) |
//! | `title`, `summary` | the built-in title and per-job-type summary |
//! | `time(ts, fmt?)`, `\|time` | an RFC 3339 time in `delivery.timezone`: `2026-11-29 18:40:43 +08:00` |
//! | `duration_in_state(event)`, `\|duration` | how long the sub-job ran before this event: `40m 43s` |
//! | `console_link(event?)` | the Workspace console of the event's account's region (`api.region` without an event) |
//! | `\|status_icon` | ❌ FAILED/ABNORMAL, ✅ SUCCESS, ⏳ active, ⚠️ stuck, 🔄 anything else (vanished, an unknown status) |
//!
//! plus minijinja's built-ins (`tojson`, `urlencode`, `join`, `length`, …).

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use jiff::tz::TimeZone;
use minijinja::value::{Serde, ValueKind};
use minijinja::{Environment, Error, ErrorKind, UndefinedBehavior, Value};

use super::{Attempt, GroupInfo, Message, text};
use crate::cloud::model::{ApiTime, JobType, Status, parse_api_time};
use crate::retry::Verdict;
use crate::watch::event::{Event, EventKind};

/// What the helpers need from the configuration.
#[derive(Debug, Clone)]
pub struct TemplateSettings {
    /// `delivery.timezone`: the zone of `time`.
    pub timezone: TimeZone,
    /// `api.region`: the region of `console_link`.
    pub region: String,
    /// The regions of the other accounts (`[accounts.NAME]`), by name: an
    /// event's `account` picks its console there.
    pub account_regions: BTreeMap<String, String>,
}

/// How interpolated text is escaped for the receiver's markup. Only the
/// values a template prints are escaped, never its own literal text, so a
/// template can still write `<{{ console_link() }}|open>` for Slack while a
/// resource named `<!channel>` cannot ping anyone. `|safe` opts out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Markup {
    /// Printed as is (webhook JSON, DingTalk, WeCom, Discord, Teams: the
    /// built-in messages do not escape there either).
    Plain,
    /// Slack mrkdwn: `&`, `<`, `>` become entities.
    Slack,
    /// Feishu lark_md: `<` and `>` (which start `<at>` mentions).
    LarkMd,
}

impl Markup {
    fn escape(self, s: &str) -> String {
        match self {
            Markup::Plain => s.to_owned(),
            Markup::Slack => s
                .replace('&', "&amp;")
                .replace('<', "&lt;")
                .replace('>', "&gt;"),
            Markup::LarkMd => s.replace('<', "&lt;").replace('>', "&gt;"),
        }
    }
}

/// A compiled user template. Cloning is cheap: notifiers are cloned into
/// every delivery task, the environment is shared.
#[derive(Clone)]
pub struct Template {
    env: Arc<Environment<'static>>,
    /// The notifier's name: the template's name in the environment (so
    /// minijinja's errors name it) and `notifier` in the context.
    name: String,
    /// What was written: `check` prints it.
    source: Arc<str>,
}

impl Template {
    /// The template as written.
    pub fn source(&self) -> &str {
        &self.source
    }
}

impl serde::Serialize for Template {
    /// As written, so `check` prints the effective config as the user wrote it.
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.source)
    }
}

impl fmt::Debug for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Template")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// A template that does not compile or render, with minijinja's line.
#[derive(Debug, thiserror::Error)]
#[error("{}", describe(.0))]
pub struct TemplateError(#[source] Error);

impl TemplateError {
    /// The line of the template the error is on, when minijinja knows it.
    pub fn line(&self) -> Option<usize> {
        self.0.line()
    }
}

/// `line 3: undefined value: …`, without minijinja's `(in NAME:3)` suffix,
/// which repeats the name that `check` already puts in front.
fn describe(e: &Error) -> String {
    let what = match e.detail() {
        Some(detail) => format!("{}: {detail}", e.kind()),
        None => e.kind().to_string(),
    };
    let mut out = match e.line() {
        Some(line) if line > 0 => format!("line {line}: {what}"),
        _ => what,
    };
    // `undefined value` alone does not say which; the expression does.
    let snippet = e
        .template_source()
        .zip(e.range())
        .and_then(|(source, range)| source.get(range));
    let said = e.detail().unwrap_or_default();
    if let Some(snippet) = snippet
        .map(str::trim)
        .filter(|s| !s.is_empty() && !said.contains(s))
    {
        out.push_str(&format!(" in `{}`", text::clip(snippet, 60)));
    }
    // Our helpers' own errors, and serde's, come as a source.
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        out.push_str(&format!(": {s}"));
        source = s.source();
    }
    out
}

impl Template {
    /// Compiles `source` for the notifier `name`. Syntax errors surface
    /// here; undefined names and unknown filters only when rendering (see
    /// [`Template::check`]).
    pub fn compile(
        name: &str,
        source: &str,
        settings: &TemplateSettings,
        markup: Markup,
    ) -> Result<Template, TemplateError> {
        let mut env = Environment::new();
        // A typo must be an error, not an empty string in a 3 a.m. alert.
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        // Templates live in multi-line TOML strings; without these, every
        // `{% for %}` line leaves a blank line or stray indentation behind.
        env.set_syntax(
            minijinja::syntax::SyntaxConfig::builder()
                .trim_blocks(true)
                .lstrip_blocks(true)
                .build()
                .map_err(TemplateError)?,
        );
        // Debug mode keeps the span of a failing expression, which `check`
        // quotes; its cost (copying state into the error) is paid only on
        // errors.
        env.set_debug(true);
        // A null field (`from` of an appeared event, `end_time` of a running
        // one) prints as nothing rather than minijinja's `None`, so
        // `{{ event.from or "—" }}` is all a template needs.
        env.set_formatter(move |out, state, value| {
            if value.is_none() {
                return Ok(());
            }
            match value.as_str() {
                Some(s) if markup != Markup::Plain && !value.is_safe() => out
                    .write_str(&markup.escape(s))
                    .map_err(|_| Error::from(ErrorKind::WriteFailure)),
                _ => minijinja::escape_formatter(out, state, value),
            }
        });
        add_helpers(&mut env, settings);
        env.add_template_owned(name.to_owned(), source.to_owned())
            .map_err(TemplateError)?;
        Ok(Template {
            env: Arc::new(env),
            name: name.to_owned(),
            source: source.into(),
        })
    }

    /// Renders `message`.
    pub fn render(&self, message: &Message) -> Result<String, TemplateError> {
        let template = self.env.get_template(&self.name).map_err(TemplateError)?;
        template
            .render(self.context(message))
            .map_err(TemplateError)
    }

    /// Renders the samples `check` uses: one event, then a group of three
    /// (whose first event is the same). When `json` is set (the webhook
    /// sends `application/json`), each must also render to valid JSON.
    pub fn check(&self, json: bool) -> Result<(), String> {
        for (what, message) in [
            ("the sample event", sample_message()),
            ("the sample group", sample_group()),
        ] {
            let text = self
                .render(&message)
                .map_err(|e| format!("rendering {what}: {e}"))?;
            if json && let Err(e) = serde_json::from_str::<serde::de::IgnoredAny>(&text) {
                return Err(format!(
                    "{what} renders to invalid JSON ({e}), and the webhook sends it as \
                     application/json; use |tojson for values"
                ));
            }
        }
        Ok(())
    }

    fn context(&self, message: &Message) -> Value {
        let mut counts: BTreeMap<&str, usize> =
            Status::KNOWN.iter().map(|s| (s.as_str(), 0)).collect();
        for to in message.events.iter().filter_map(|e| e.to.as_ref()) {
            *counts.entry(to.as_str()).or_default() += 1;
        }
        minijinja::context! {
            id => message.id.clone(),
            events => Value::from(Serde(&message.events)),
            event => Value::from(Serde(message.events.first())),
            group => Value::from(Serde(&message.group)),
            count => message.events.len(),
            counts => counts,
            notifier => self.name.clone(),
            test => message.test,
            title => text::title(message),
            summary => text::summary(&message.events),
        }
    }
}

/// A render failure at send time: permanent, since retrying renders the
/// same template again. The message dead-letters with the reason; after a
/// config fix, `jobwatch state retry` sends it.
pub fn failed(error: &TemplateError) -> Attempt {
    let reason = format!("template error: {error}");
    Attempt {
        verdict: Verdict::DontRetry(reason.clone()),
        answer: reason,
    }
}

/// The rendered text cut to `budget` in the receiver's unit: whole lines
/// while they fit, then `… and N more lines`. A template's lines need not
/// be events, so the tail counts lines, not events. A single line too long
/// for the budget is cut inside, ending in `…`.
pub fn fit_rendered(rendered: &str, budget: usize, measure: impl Fn(&str) -> usize) -> String {
    if measure(rendered) <= budget {
        return rendered.to_owned();
    }
    let lines: Vec<&str> = rendered.split('\n').collect();
    let tail = text::and_more_lines;
    let sep = measure("\n");
    let mut best = None;
    let mut prefix = 0;
    for k in 1..lines.len() {
        prefix += measure(lines[k - 1]) + if k > 1 { sep } else { 0 };
        if prefix > budget {
            break;
        }
        if prefix + sep + measure(&tail(lines.len() - k)) <= budget {
            best = Some(k);
        }
    }
    match best {
        Some(k) => format!("{}\n{}", lines[..k].join("\n"), tail(lines.len() - k)),
        None => {
            // Every measure we use adds up char by char.
            let room = budget.saturating_sub(measure("…"));
            let mut used = 0;
            let mut out = String::new();
            let mut buf = [0u8; 4];
            for c in rendered.chars() {
                let n = measure(c.encode_utf8(&mut buf));
                if used + n > room {
                    break;
                }
                used += n;
                out.push(c);
            }
            out.push('…');
            out
        }
    }
}

// ---------------------------------------------------------------- helpers

fn add_helpers(env: &mut Environment<'static>, settings: &TemplateSettings) {
    let tz = settings.timezone.clone();
    let time = move |value: &Value, format: Option<&str>| format_time(value, format, &tz);
    env.add_function("time", time.clone());
    env.add_filter("time", time);

    env.add_function("duration_in_state", |event: &Value| {
        Ok(in_state(event)?.map(human_seconds).unwrap_or_default())
    });
    env.add_filter("duration", duration);

    let default = settings.region.clone();
    let regions = settings.account_regions.clone();
    env.add_function("console_link", move |event: Option<&Value>| {
        let account = event
            .and_then(|e| e.get_attr("account").ok())
            .and_then(|a| a.as_str().map(str::to_owned));
        let region = account.and_then(|a| regions.get(&a)).unwrap_or(&default);
        console_link(region)
    });

    env.add_filter("status_icon", status_icon);
}

fn undefined(helper: &str) -> Error {
    Error::new(
        ErrorKind::UndefinedError,
        format!("{helper} was given an undefined value"),
    )
}

/// `time(ts)`: an RFC 3339 text (as events carry) in the configured zone,
/// `2026-11-29 18:40:43 +08:00`, or in a `strftime` format. `none` is "",
/// and a time the API wrote that does not parse is shown as it came.
fn format_time(value: &Value, format: Option<&str>, tz: &TimeZone) -> Result<String, Error> {
    if value.is_undefined() {
        return Err(undefined("time"));
    }
    if value.is_none() {
        return Ok(String::new());
    }
    let Some(raw) = value.as_str() else {
        return Err(Error::new(
            ErrorKind::InvalidOperation,
            format!("time expects an RFC 3339 string, not {}", value.kind()),
        ));
    };
    let Some(at) = parse_api_time(raw) else {
        return Ok(raw.to_owned());
    };
    match format {
        None => Ok(text::format_time(at, tz)),
        Some(f) => jiff::fmt::strtime::format(f, &at.to_zoned_datetime(tz.clone())).map_err(|e| {
            Error::new(
                ErrorKind::InvalidOperation,
                format!("bad time format {f:?}: {e}"),
            )
        }),
    }
}

/// How long the sub-job was in the status it left (or, for `stuck`, is
/// in), in seconds, as far as the event tells: from `begin_time` to
/// `end_time`, or to `observed_at` while it has no end. The API gives no
/// per-status times, so for a job that waited before running this is its
/// whole life so far; `None` when the times are missing or do not parse.
fn in_state(event: &Value) -> Result<Option<i64>, Error> {
    if event.is_undefined() {
        return Err(undefined("duration_in_state"));
    }
    if event.kind() != ValueKind::Map {
        return Err(Error::new(
            ErrorKind::InvalidOperation,
            format!("duration_in_state expects an event, not {}", event.kind()),
        ));
    }
    let time = |field: &str| -> Result<Option<jiff::Timestamp>, Error> {
        Ok(event.get_attr(field)?.as_str().and_then(parse_api_time))
    };
    let Some(begin) = time("begin_time")? else {
        return Ok(None);
    };
    let Some(end) = time("end_time")?.or(time("observed_at")?) else {
        return Ok(None);
    };
    let seconds = end.as_second() - begin.as_second();
    Ok((seconds >= 0).then_some(seconds))
}

/// `|duration`: an event (as `duration_in_state`) or a number of seconds,
/// as `1h 2m 3s`; "" when unknown.
fn duration(value: &Value) -> Result<String, Error> {
    match value.kind() {
        ValueKind::Undefined => Err(undefined("duration")),
        ValueKind::None => Ok(String::new()),
        ValueKind::Number => {
            let seconds = f64::try_from(value.clone())?;
            Ok(human_seconds(seconds.max(0.0).round() as i64))
        }
        ValueKind::Map => Ok(in_state(value)?.map(human_seconds).unwrap_or_default()),
        other => Err(Error::new(
            ErrorKind::InvalidOperation,
            format!("duration expects an event or a number of seconds, not {other}"),
        )),
    }
}

/// `2d 3h`, `1h 2m 3s`, `40m 43s`, `0s`: every non-zero unit.
pub fn human_seconds(total: i64) -> String {
    let units = [("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)];
    let mut left = total.max(0);
    let mut parts = Vec::new();
    for (name, size) in units {
        let n = left / size;
        left %= size;
        if n > 0 {
            parts.push(format!("{n}{name}"));
        }
    }
    if parts.is_empty() {
        "0s".to_owned()
    } else {
        parts.join(" ")
    }
}

/// The Workspace console of the region, on its list of application
/// servers. The `?region=` query is how every Huawei Cloud console link
/// selects a region; `cn-` regions live on the Chinese site, the rest on
/// the international one. The fragment is the console's single-page route:
/// Huawei documents no deep links, so we link to the list, never to one
/// sub-job, and the same link serves every event.
pub fn console_link(region: &str) -> String {
    let host = if region.starts_with("cn-") {
        "console.huaweicloud.com"
    } else {
        "console-intl.huaweicloud.com"
    };
    let region: String = url::form_urlencoded::byte_serialize(region.as_bytes()).collect();
    format!("https://{host}/workspace/?region={region}#/app/server")
}

/// `|status_icon` of a status (`"FAILED"`), of `"stuck"`, or of an event,
/// from the one icon table ([`text::icon`]) by the one classification
/// ([`text::look`]) the built-in messages use.
fn status_icon(value: &Value) -> Result<String, Error> {
    let look = match value.kind() {
        ValueKind::Undefined => return Err(undefined("status_icon")),
        ValueKind::None => return Ok(String::new()),
        ValueKind::Map => {
            let kind = value.get_attr("kind")?;
            let kind = kind
                .as_str()
                .and_then(|k| k.parse().ok())
                .unwrap_or(EventKind::Changed);
            let to = value.get_attr("to")?;
            text::look(kind, to.as_str().map(Status::from).as_ref())
        }
        _ => match value.as_str().unwrap_or("") {
            "stuck" => text::Look::Stuck,
            status => text::look(EventKind::Changed, Some(&Status::from(status))),
        },
    };
    Ok(text::icon(look).to_owned())
}

// ---------------------------------------------------------------- samples

/// The events of the samples: a CREATE_SERVER job whose first sub-job
/// failed, the second succeeded and the third is stuck. Every field a real
/// event can carry is set somewhere, and each that can be null is null
/// somewhere, so a template that renders these renders real messages.
fn sample_events() -> Vec<Event> {
    let at = |s: &str| -> jiff::Timestamp { s.parse().expect("a valid sample time") };
    let event = |i: usize, kind: EventKind, from: Status, to: Status| Event {
        event_id: format!("3f9a0c1e5b7d42a8b6c0d2e4f6a8b0c{i}"),
        kind,
        target: "prod-desktops".into(),
        account: "default".into(),
        project_id: "0a1b2c3d4e5f60718293a4b5c6d7e8f9".into(),
        job_type: JobType::CreateServer,
        sub_job_id: format!("ff8080818c2a6f3a018c2b1e4d7a00{i:02}"),
        job_id: Some("ff8080818c2a6f3a018c2b1e4d6f0001".into()),
        resource_id: Some(format!("6c2e7b1a-1f0d-4a5e-9c3b-2d4f6a8b0c{i:02}")),
        resource_name: Some(format!("APS-20261129184043-SAMPLE{i}")),
        from: Some(from),
        to: Some(to),
        error_code: None,
        error_message: None,
        begin_time: Some(ApiTime::parse("2026-11-29T10:00:00.000Z")),
        end_time: None,
        observed_at: at("2026-11-29T10:40:50Z"),
    };
    let mut failed = event(1, EventKind::Changed, Status::Running, Status::Failed);
    failed.error_code = Some("WKS.00129901".into());
    failed.error_message = Some("Failed to create the server: insufficient capacity.".into());
    failed.end_time = Some(ApiTime::parse("2026-11-29T10:40:43.858Z"));
    let mut succeeded = event(2, EventKind::Changed, Status::Running, Status::Success);
    succeeded.end_time = Some(ApiTime::parse("2026-11-29T10:38:12.120Z"));
    let mut stuck = event(3, EventKind::Stuck, Status::Running, Status::Running);
    stuck.from = None;
    stuck.resource_name = None;
    stuck.job_id = None;
    vec![failed, succeeded, stuck]
}

/// The sample single-event message: what `check` renders every template
/// against (with [`sample_group`]) and what `notify-test` sends.
pub fn sample_message() -> Message {
    let event = sample_events().remove(0);
    Message {
        test: false,
        id: event.event_id.clone(),
        group: None,
        events: vec![event],
    }
}

/// The sample group: three events of one route's window, the first being
/// [`sample_message`]'s.
pub fn sample_group() -> Message {
    let events = sample_events();
    Message {
        test: false,
        id: "group-3f9a0c1e5b7d42a8".into(),
        group: Some(GroupInfo {
            job: None,
            id: "group-3f9a0c1e5b7d42a8".into(),
            key: "routes[0]".into(),
            count: events.len(),
        }),
        events,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> TemplateSettings {
        TemplateSettings {
            timezone: TimeZone::get("Asia/Shanghai").expect("tzdb has Shanghai"),
            region: "cn-north-4".into(),
            account_regions: BTreeMap::new(),
        }
    }

    fn render(source: &str, message: &Message) -> Result<String, TemplateError> {
        Template::compile("t", source, &settings(), Markup::Plain)?.render(message)
    }

    #[test]
    fn human_seconds_shows_each_non_zero_unit() {
        assert_eq!(human_seconds(0), "0s");
        assert_eq!(human_seconds(2443), "40m 43s");
        assert_eq!(human_seconds(3600 + 3), "1h 3s");
        assert_eq!(human_seconds(2 * 86_400 + 3 * 3600), "2d 3h");
    }

    #[test]
    fn fit_rendered_keeps_whole_lines_and_counts_the_rest() {
        let text: Vec<String> = (0..100).map(|i| format!("line {i:03}")).collect();
        let cut = fit_rendered(&text.join("\n"), 100, text::chars);
        assert!(text::chars(&cut) <= 100, "{cut}");
        let kept = cut.lines().count() - 1;
        assert!(
            cut.ends_with(&format!("… and {} more lines", 100 - kept)),
            "{cut}"
        );
        let one_line = "x".repeat(50);
        assert_eq!(fit_rendered(&one_line, 10, text::chars), "xxxxxxxxx…");
    }

    #[test]
    fn counts_list_every_known_status() {
        let out = render(
            "{{ counts.FAILED }}/{{ counts.SUCCESS }}/{{ counts.ABORTING }}",
            &sample_group(),
        )
        .expect("renders");
        assert_eq!(out, "1/1/0");
    }

    #[test]
    fn the_samples_render_with_the_documented_helpers() {
        let source = "{% for e in events %}{{ e|status_icon }} {{ e.resource_name or e.sub_job_id }} \
                      {{ e.end_time|time }} {{ e|duration }}\n{% endfor %}{{ console_link(event) }}";
        let out = render(source, &sample_group()).expect("renders");
        assert!(out.contains("❌ APS-20261129184043-SAMPLE1 2026-11-29 18:40:43 +08:00 40m 43s"));
        assert!(
            out.contains("⚠️ ff8080818c2a6f3a018c2b1e4d7a0003  40m 50s"),
            "{out}"
        );
        assert!(
            out.ends_with(
                "https://console.huaweicloud.com/workspace/?region=cn-north-4#/app/server"
            )
        );
    }

    #[test]
    fn slack_markup_escapes_values_not_the_template() {
        let mut message = sample_message();
        message.events[0].resource_name = Some("<!channel> & co".into());
        let t = Template::compile(
            "s",
            "<{{ console_link() }}|{{ event.resource_name }}> {{ '<b>'|safe }}",
            &settings(),
            Markup::Slack,
        )
        .expect("compiles");
        let out = t.render(&message).expect("renders");
        assert!(out.starts_with("<https://"), "{out}");
        assert!(out.ends_with("|&lt;!channel&gt; &amp; co> <b>"), "{out}");
    }
}
