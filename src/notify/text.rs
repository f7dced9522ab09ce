//! The one vocabulary of the words people read: what every kind (chat,
//! email, templates' helpers) says. One line per event, a title for a
//! single event or a group, the fields of a focused message, a mail's
//! subject, times in the notifier's zone, the icons, and [`fit`], which
//! cuts a list of lines to a receiver's size limit with "… and N more".
//!
//! Everything here is pure, so every kind renders the same words and tests
//! can pin them; each kind only adds its receiver's markup.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use jiff::tz::TimeZone;

use super::{GroupInfo, JobTally, Message};
use crate::cloud::model::{ApiTime, Status};
use crate::watch::event::{Event, EventKind};

/// An error message longer than this (in chars) is clipped in event lines:
/// one verbose sub-job must not push its neighbours out of a group.
pub const MAX_ERROR_CHARS: usize = 200;

/// How a message should look: the kinds map it to a colour. It follows
/// from the message's [`Look`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Tone {
    /// Progress or anything not better described (blue).
    Info,
    /// Everything succeeded (green).
    Good,
    /// Something is stuck (orange).
    Warning,
    /// Something failed: FAILED or ABNORMAL (red).
    Alert,
}

/// Failures and stuck sub-jobs stand out.
pub fn is_loud(event: &Event) -> bool {
    event.kind == EventKind::Stuck || event.to.as_ref().is_some_and(Status::is_failure)
}

/// What an event, or a whole message, amounts to: the one classification
/// behind both the icons ([`icon`]) and the tones ([`Tone`]), for built-in
/// messages and templates' `|status_icon` alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Look {
    /// FAILED or ABNORMAL.
    Failure,
    /// Active for longer than `poll.stuck_after`.
    Stuck,
    /// SUCCESS.
    Success,
    /// In progress: WAITING, RUNNING, ROLLBACK, ABORTING.
    Active,
    /// Neither: vanished, an unknown status, a mixed group.
    Other,
}

/// The one icon table: ❌ failure, ⚠️ stuck, ✅ success, ⏳ active, 🔄
/// anything else.
pub fn icon(look: Look) -> &'static str {
    match look {
        Look::Failure => "❌",
        Look::Stuck => "⚠️",
        Look::Success => "✅",
        Look::Active => "⏳",
        Look::Other => "🔄",
    }
}

/// What an event of `kind` that left its sub-job in `to` amounts to: a
/// failure wins over being stuck; a vanished sub-job is neither.
pub fn look(kind: EventKind, to: Option<&Status>) -> Look {
    match (kind, to) {
        (_, Some(to)) if to.is_failure() => Look::Failure,
        (EventKind::Stuck, _) => Look::Stuck,
        (EventKind::Vanished, _) => Look::Other,
        (_, Some(Status::Success)) => Look::Success,
        (_, Some(to)) if to.is_active() => Look::Active,
        _ => Look::Other,
    }
}

pub fn look_of(event: &Event) -> Look {
    look(event.kind, event.to.as_ref())
}

/// A message's look: a failure or a stuck sub-job in it shows; otherwise
/// it is a success (or active) only when every event is.
pub fn look_of_message(message: &Message) -> Look {
    let looks: Vec<Look> = message.events.iter().map(look_of).collect();
    let all = |l: Look| !looks.is_empty() && looks.iter().all(|x| *x == l);
    if looks.contains(&Look::Failure) {
        Look::Failure
    } else if looks.contains(&Look::Stuck) {
        Look::Stuck
    } else if all(Look::Success) {
        Look::Success
    } else if all(Look::Active) {
        Look::Active
    } else {
        Look::Other
    }
}

fn tone_for(look: Look) -> Tone {
    match look {
        Look::Failure => Tone::Alert,
        Look::Stuck => Tone::Warning,
        Look::Success => Tone::Good,
        Look::Active | Look::Other => Tone::Info,
    }
}

pub fn tone_of(event: &Event) -> Tone {
    tone_for(look_of(event))
}

/// The loudest tone of a message, except that a group is only "good" when
/// every event in it succeeded.
pub fn tone(message: &Message) -> Tone {
    if message.test {
        // A test is no failure: no red card.
        return Tone::Info;
    }
    tone_for(look_of_message(message))
}

/// `2026-11-29 10:40:43 +08:00`.
pub fn format_time(at: jiff::Timestamp, tz: &TimeZone) -> String {
    at.to_zoned_datetime(tz.clone())
        .strftime("%Y-%m-%d %H:%M:%S %:z")
        .to_string()
}

/// An API time in the notifier's zone, or the API's text when it did not
/// parse (never dropped: it may be the only clue).
pub fn format_api_time(time: &ApiTime, tz: &TimeZone) -> String {
    match time.parsed {
        Some(at) => format_time(at, tz),
        None => time.raw.clone(),
    }
}

/// When the transition happened as far as we can tell: the sub-job's end
/// for a terminal status, otherwise when jobwatch saw it.
pub fn happened_at(event: &Event) -> jiff::Timestamp {
    let terminal = event.to.as_ref().is_some_and(Status::is_terminal);
    match (&event.end_time, terminal) {
        (
            Some(ApiTime {
                parsed: Some(at), ..
            }),
            true,
        ) => *at,
        _ => event.observed_at,
    }
}

/// `FAILED`, `stuck in RUNNING`, `vanished (was RUNNING)`.
fn what(event: &Event) -> String {
    let status = |s: &Option<Status>| s.as_ref().map_or("?", Status::as_str).to_owned();
    match event.kind {
        EventKind::Stuck => format!("stuck in {}", status(&event.to)),
        EventKind::Vanished => format!("vanished (was {})", status(&event.from)),
        EventKind::Appeared | EventKind::Changed => status(&event.to),
    }
}

/// The resource's name, its id, or at least the sub-job's id.
pub fn resource(event: &Event) -> &str {
    event
        .resource_name
        .as_deref()
        .filter(|s| !s.is_empty())
        .or(event.resource_id.as_deref().filter(|s| !s.is_empty()))
        .unwrap_or(&event.sub_job_id)
}

/// `WKS.00129901: message`, clipped; `None` when the API gave neither.
pub fn error_text(event: &Event) -> Option<String> {
    error_within(event, MAX_ERROR_CHARS)
}

/// `WKS.00129901: message`, the message cut to `max` chars.
fn error_within(event: &Event, max: usize) -> Option<String> {
    let code = event.error_code.as_deref().filter(|s| !s.is_empty());
    let message = event
        .error_message
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|m| clip(m, max));
    match (code, message) {
        (Some(c), Some(m)) => Some(format!("{c}: {m}")),
        (Some(c), None) => Some(c.to_owned()),
        (None, Some(m)) => Some(m),
        (None, None) => None,
    }
}

/// `WKS.00129901: message`, the whole message (a mail or a log line has
/// room for it); `None` when the API gave neither.
pub fn whole_error(event: &Event) -> Option<String> {
    error_within(event, usize::MAX)
}

/// A log line's text: `CREATE_SERVER APS-… changed: RUNNING → FAILED
/// (WKS.00129901: …)`, `-` standing for a missing status.
pub fn log_line(event: &Event) -> String {
    let status = |s: &Option<Status>| s.as_ref().map_or("-", Status::as_str).to_owned();
    let mut line = format!(
        "{} {} {}: {} → {}",
        event.job_type,
        resource(event),
        event.kind,
        status(&event.from),
        status(&event.to)
    );
    if let Some(error) = whole_error(event) {
        let _ = write!(line, " ({error})");
    }
    line
}

/// What happened, without an icon: `CREATE_SERVER FAILED on APS-…`, the
/// words an operator scans for (an email subject and heading).
pub fn what_happened(event: &Event) -> String {
    format!("{} {} on {}", event.job_type, what(event), resource(event))
}

/// The headline of one event:
/// `❌ CREATE_SERVER FAILED on APS-20220902093902-AYOASWQDEJ`.
pub fn headline(event: &Event) -> String {
    format!("{} {}", icon(look_of(event)), what_happened(event))
}

/// One line per event, as a group lists them:
/// `❌ CREATE_SERVER FAILED on APS-… (WKS.00129901: …) project p1 at 2026-11-29 10:40:43 +08:00`.
pub fn event_line(event: &Event, tz: &TimeZone) -> String {
    let mut line = headline(event);
    if let Some(error) = error_text(event) {
        let _ = write!(line, " ({error})");
    }
    let _ = write!(
        line,
        " {} at {}",
        where_(event),
        format_time(happened_at(event), tz)
    );
    line
}

/// Where an event happened, in a line or a subject: `target prod-desktops`
/// for a named target, `project 0a1b2c3d…` for one named by its project.
fn where_(event: &Event) -> String {
    if event.target_is_named() {
        format!("target {}", event.target)
    } else {
        format!("project {}", short_id(&event.project_id))
    }
}

/// How many facts [`facts`] gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Detail {
    /// A chat message's: the error clipped, the resource by one name.
    Brief,
    /// A mail's, which has room: the whole error, and the resource's id
    /// beside its name.
    Full,
}

/// The labelled facts of a focused (single-event) chat message, in
/// reading order.
pub fn fields(event: &Event, tz: &TimeZone) -> Vec<(&'static str, String)> {
    facts(event, tz, Detail::Brief)
}

/// [`fields`] with everything a mail has room for: the whole error
/// message, and the resource's id when the name stood for it.
pub fn all_fields(event: &Event, tz: &TimeZone) -> Vec<(&'static str, String)> {
    facts(event, tz, Detail::Full)
}

fn facts(event: &Event, tz: &TimeZone, detail: Detail) -> Vec<(&'static str, String)> {
    let status = |s: &Option<Status>| s.as_ref().map_or("—", Status::as_str).to_owned();
    let mut out = vec![
        ("Job type", event.job_type.to_string()),
        (
            "Transition",
            format!(
                "{} → {} ({})",
                status(&event.from),
                status(&event.to),
                event.kind
            ),
        ),
        ("Resource", resource(event).to_owned()),
    ];
    if detail == Detail::Full
        && let Some(id) = event.resource_id.as_deref().filter(|s| !s.is_empty())
        && id != resource(event)
    {
        out.push(("Resource id", id.to_owned()));
    }
    let error = match detail {
        Detail::Brief => error_text(event),
        Detail::Full => whole_error(event),
    };
    if let Some(error) = error {
        out.push(("Error", error));
    }
    if event.target_is_named() {
        out.push(("Target", event.target.clone()));
    }
    out.push(("Project", event.project_id.clone()));
    if let Some(job) = &event.job_id {
        out.push(("Job", job.clone()));
    }
    out.push(("Sub-job", event.sub_job_id.clone()));
    if let Some(t) = &event.begin_time {
        out.push(("Began", format_api_time(t, tz)));
    }
    if let Some(t) = &event.end_time {
        out.push(("Ended", format_api_time(t, tz)));
    }
    out.push(("Observed", format_time(event.observed_at, tz)));
    out.push(("Event id", event.event_id.clone()));
    out
}

/// What a whole group amounts to, per job type in first-seen order:
/// `CREATE_SERVER: 18 SUCCESS, 2 FAILED`. Stuck and vanished sub-jobs are
/// counted by what happened to them, not by their status.
pub fn summary(events: &[Event]) -> String {
    #[derive(PartialEq, Eq, PartialOrd, Ord)]
    enum Bucket<'a> {
        To(&'a Status),
        Stuck,
        Vanished,
    }
    let mut order: Vec<&str> = Vec::new();
    let mut counts: BTreeMap<&str, BTreeMap<Bucket<'_>, usize>> = BTreeMap::new();
    for e in events {
        let job_type = e.job_type.as_str();
        if !order.contains(&job_type) {
            order.push(job_type);
        }
        let bucket = match (&e.kind, &e.to) {
            (EventKind::Stuck, _) => Bucket::Stuck,
            (EventKind::Vanished, _) | (_, None) => Bucket::Vanished,
            (_, Some(to)) => Bucket::To(to),
        };
        *counts
            .entry(job_type)
            .or_default()
            .entry(bucket)
            .or_default() += 1;
    }
    let parts: Vec<String> = order
        .iter()
        .map(|job_type| {
            let by: Vec<String> = counts[job_type]
                .iter()
                .map(|(bucket, n)| match bucket {
                    Bucket::To(s) => format!("{n} {s}"),
                    Bucket::Stuck => format!("{n} stuck"),
                    Bucket::Vanished => format!("{n} vanished"),
                })
                .collect();
            format!("{job_type}: {}", by.join(", "))
        })
        .collect();
    parts.join("; ")
}

/// What a `notify-test` message says first, in its title, subject and
/// log line: on-call must not take it for an alert.
pub const TEST_MARK: &str = "🧪 TEST, not a real alert:";

/// The title of a message: the headline of a single event, or the icon
/// and summary of a group (naming the parent job when grouped by it);
/// after [`TEST_MARK`] for a test.
pub fn title(message: &Message) -> String {
    let title = plain_title(message);
    if message.test {
        format!("{TEST_MARK} {title}")
    } else {
        title
    }
}

fn plain_title(message: &Message) -> String {
    match message.events.as_slice() {
        [] => "jobwatch: no events".to_owned(),
        [one] if message.group.is_none() => headline(one),
        events => {
            // A per-job group (`group_by = "job_id"`) gets the digest; its
            // key names the parent job.
            let job = common_job(events).filter(|job| {
                message
                    .group
                    .as_ref()
                    .is_some_and(|g| g.group_key().job_id() == Some(*job))
            });
            match job {
                Some(job) => {
                    let tally = message.group.as_ref().and_then(|g| g.job.as_ref());
                    format!(
                        "{} {}",
                        icon(look_of_message(message)),
                        digest(events, job, tally)
                    )
                }
                None => format!("{} {}", icon(look_of_message(message)), summary(events)),
            }
        }
    }
}

/// A parent job's digest:
/// `CREATE_SERVER job 8f2d6a3b…: 18/20 succeeded, 2 FAILED (WKS.00129901)`.
/// With `tally` (the job's sub-jobs as tracked) it counts all of them,
/// whatever the route took; the error codes come from the events.
pub fn digest(events: &[Event], job: &str, tally: Option<&JobTally>) -> String {
    match tally {
        Some(tally) => digest_of_job(events, job, tally),
        None => digest_of_events(events, job),
    }
}

fn job_types_of(events: &[Event]) -> String {
    let mut job_types: Vec<&str> = Vec::new();
    for e in events {
        if !job_types.contains(&e.job_type.as_str()) {
            job_types.push(e.job_type.as_str());
        }
    }
    job_types.join("+")
}

fn digest_of_job(events: &[Event], job: &str, tally: &JobTally) -> String {
    let succeeded = tally
        .by_status
        .get(Status::Success.as_str())
        .copied()
        .unwrap_or(0);
    let mut text = format!(
        "{} job {}: {succeeded}/{} succeeded",
        job_types_of(events),
        short_id(job),
        tally.sub_jobs
    );
    for (status, n) in &tally.by_status {
        if status == Status::Success.as_str() {
            continue;
        }
        let shown = if status.is_empty() {
            "without status"
        } else {
            status
        };
        let _ = write!(text, ", {n} {shown}");
        let mut codes: Vec<&str> = Vec::new();
        for e in events {
            if e.to.as_ref().map(Status::as_str) == Some(status.as_str())
                && let Some(code) = e.error_code.as_deref()
                && !codes.contains(&code)
            {
                codes.push(code);
            }
        }
        if !codes.is_empty() {
            let _ = write!(text, " ({})", codes.join(", "));
        }
    }
    text
}

fn digest_of_events(events: &[Event], job: &str) -> String {
    let short = short_id(job);
    let succeeded = events
        .iter()
        .filter(|e| e.to == Some(Status::Success))
        .count();
    let mut text = format!(
        "{} job {short}: {succeeded}/{} succeeded",
        job_types_of(events),
        events.len()
    );
    // Each other status entered, with the error codes seen for it.
    let mut others: BTreeMap<&str, (usize, Vec<&str>)> = BTreeMap::new();
    for e in events {
        let status = match &e.to {
            Some(Status::Success) => continue,
            Some(to) => to.as_str(),
            None => "VANISHED",
        };
        let entry = others.entry(status).or_default();
        entry.0 += 1;
        if let Some(code) = e.error_code.as_deref()
            && !entry.1.contains(&code)
        {
            entry.1.push(code);
        }
    }
    for (status, (n, codes)) in others {
        let _ = write!(text, ", {n} {status}");
        if !codes.is_empty() {
            let _ = write!(text, " ({})", codes.join(", "));
        }
    }
    text
}

/// `18 SUCCESS, 2 FAILED`: what a group's events entered (`stuck` and
/// `vanished` for those), largest count first, then by name, so it is the
/// same for the same events.
pub fn tally(events: &[Event]) -> String {
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for e in events {
        let label = match e.kind {
            EventKind::Appeared | EventKind::Changed => {
                e.to.as_ref().map_or("?", Status::as_str).to_owned()
            }
            EventKind::Stuck => "stuck".to_owned(),
            EventKind::Vanished => "vanished".to_owned(),
        };
        *counts.entry(label).or_default() += 1;
    }
    let mut counts: Vec<_> = counts.into_iter().collect();
    counts.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    counts
        .iter()
        .map(|(label, n)| format!("{n} {label}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `20 transitions`, or `20 CREATE_SERVER transitions` when they share a
/// job type.
pub fn transitions(events: &[Event]) -> String {
    match events.first() {
        Some(first) if events.iter().all(|e| e.job_type == first.job_type) => {
            format!("{} {} transitions", events.len(), first.job_type)
        }
        _ => format!("{} transitions", events.len()),
    }
}

/// `group g1, key routes[0]`: which group a message is.
pub fn group_note(group: &GroupInfo) -> String {
    format!("group {}, key {}", group.id, group.key)
}

/// A mail's subject, on one line (not yet cut to a length):
/// `[jobwatch] CREATE_SERVER FAILED on APS-… (project 0a1b2c3d…)` for one
/// event; `[jobwatch] 20 CREATE_SERVER transitions: 18 SUCCESS, 2 FAILED`
/// for several.
pub fn mail_subject(message: &Message) -> String {
    let text = match message.events.as_slice() {
        [] => "no events".to_owned(),
        [event] => format!("{} ({})", what_happened(event), where_(event)),
        events => format!("{}: {}", transitions(events), tally(events)),
    };
    if message.test {
        one_line(&format!("[jobwatch] {TEST_MARK} {text}"))
    } else {
        one_line(&format!("[jobwatch] {text}"))
    }
}

/// `jobwatch 0.4.1`: how a mail signs off.
pub fn signature() -> String {
    concat!("jobwatch ", env!("CARGO_PKG_VERSION")).to_owned()
}

/// An id short enough for a title: ids of more than 12 chars (project ids
/// are 32 hex characters) are cut to their first eight and `…`, which
/// still tells them apart.
pub fn short_id(id: &str) -> String {
    if id.chars().count() <= 12 {
        id.to_owned()
    } else {
        let mut s: String = id.chars().take(8).collect();
        s.push('…');
        s
    }
}

/// Control characters (a newline in an error message) would break a
/// header or a line; every run of them and of white space becomes one
/// space.
pub fn one_line(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for word in s.split(|c: char| c.is_control() || c.is_whitespace()) {
        if word.is_empty() {
            continue;
        }
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
    }
    out
}

/// The parent job every event shares, if they share one.
fn common_job(events: &[Event]) -> Option<&str> {
    let first = events.first()?.job_id.as_deref()?;
    events
        .iter()
        .all(|e| e.job_id.as_deref() == Some(first))
        .then_some(first)
}

/// The event lines of a message in the notifier's zone.
pub fn lines(message: &Message, tz: &TimeZone) -> Vec<String> {
    message.events.iter().map(|e| event_line(e, tz)).collect()
}

/// `… and 37 more`.
pub fn and_more(n: usize) -> String {
    format!("… and {n} more")
}

/// `… and 37 more lines`: the tail of a cut template rendering, whose
/// lines need not be events.
pub fn and_more_lines(n: usize) -> String {
    format!("… and {n} more lines")
}

/// Keeps the longest prefix of `lines` that fits `budget` when joined by
/// `"\n"`, measured by `measure` (bytes, chars, JSON-escaped bytes: the
/// receiver's unit). When not all fit, the second value is the line to add
/// after them (`… and N more`, naming how many were left out), and the
/// budget covers it too. Lines are never split: a group is cut between
/// events. If not even the tail fits, nothing is kept and the tail is still
/// returned — the caller's budget is wrong, and a short message beats none.
pub fn fit<S: AsRef<str>>(
    lines: &[S],
    budget: usize,
    measure: impl Fn(&str) -> usize,
) -> (&[S], Option<String>) {
    let sep = measure("\n");
    let sizes: Vec<usize> = lines.iter().map(|l| measure(l.as_ref())).collect();
    let all: usize = sizes.iter().sum::<usize>() + sep * lines.len().saturating_sub(1);
    if all <= budget {
        return (lines, None);
    }
    // `prefix` is the size of the first `k` lines joined; the tail for `k`
    // names `n - k`, so its length shrinks as `k` grows. Take the largest
    // `k` whose prefix and tail fit together.
    let mut best = 0;
    let mut prefix = 0usize;
    for k in 0..lines.len() {
        if k > 0 {
            prefix += sep + sizes[k - 1];
        }
        if prefix > budget {
            break;
        }
        let tail = measure(&and_more(lines.len() - k));
        let joined = if k == 0 { tail } else { prefix + sep + tail };
        if joined <= budget {
            best = k;
        }
    }
    (&lines[..best], Some(and_more(lines.len() - best)))
}

/// [`fit`], joined: the text to put in the message.
pub fn fit_joined<S: AsRef<str>>(
    lines: &[S],
    budget: usize,
    measure: impl Fn(&str) -> usize,
) -> String {
    let (kept, more) = fit(lines, budget, &measure);
    let mut out: Vec<&str> = kept.iter().map(AsRef::as_ref).collect();
    if let Some(more) = &more {
        out.push(more);
    }
    out.join("\n")
}

/// Measures: UTF-8 bytes (WeCom, DingTalk).
pub fn bytes(s: &str) -> usize {
    s.len()
}

/// Measures: Unicode scalar values (Slack's "characters").
pub fn chars(s: &str) -> usize {
    s.chars().count()
}

/// Measures: UTF-16 code units, what JavaScript's `length` counts. Discord
/// limits "characters"; counting UTF-16 never undercounts those, so it is
/// the safe reading.
pub fn utf16(s: &str) -> usize {
    s.encode_utf16().count()
}

/// Measures: the bytes `s` takes inside a JSON string (escapes included),
/// for receivers whose limit is on the whole request body (Feishu, Teams).
pub fn json_bytes(s: &str) -> usize {
    // Serializing a `&str` cannot fail; minus the two quotes.
    serde_json::to_string(s).map_or(s.len(), |j| j.len() - 2)
}

/// Cuts `s` to at most `max` chars, ending in `…` when cut.
pub fn clip(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_owned();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_group_reads_as_a_digest() {
        let mut sample = crate::notify::sample_message().events.remove(0);
        sample.job_id = Some("8f2d6a3b-b1c9-4a61-b0e9-c7d4e5f60718".into());
        sample.to = Some(Status::Failed);
        sample.error_code = Some("WKS.00129901".into());
        let events: Vec<Event> = (0..20)
            .map(|i| {
                let mut e = sample.clone();
                e.sub_job_id = format!("sub-{i}");
                if i < 18 {
                    e.to = Some(Status::Success);
                    e.error_code = None;
                }
                e
            })
            .collect();
        let job = sample.job_id.clone().unwrap();
        let message = Message {
            test: false,
            id: "g".into(),
            group: Some(crate::notify::GroupInfo {
                job: None,
                id: "g".into(),
                key: format!("routes[0]/{}/{job}", sample.project_id),
                count: 20,
            }),
            events,
        };
        assert_eq!(
            title(&message),
            "❌ CREATE_SERVER job 8f2d6a3b…: 18/20 succeeded, 2 FAILED (WKS.00129901)"
        );
    }

    #[test]
    fn a_group_looks_like_its_loudest_event_or_what_all_share() {
        let group = |tos: &[Status]| {
            let sample = crate::notify::sample_message().events.remove(0);
            Message {
                test: false,
                id: "g".into(),
                group: None,
                events: tos
                    .iter()
                    .map(|to| Event {
                        to: Some(to.clone()),
                        ..sample.clone()
                    })
                    .collect(),
            }
        };
        let of = |tos: &[Status]| look_of_message(&group(tos));
        assert_eq!(of(&[Status::Success, Status::Failed]), Look::Failure);
        assert_eq!(of(&[Status::Success, Status::Success]), Look::Success);
        assert_eq!(of(&[Status::Running, Status::Waiting]), Look::Active);
        assert_eq!(of(&[Status::Success, Status::Running]), Look::Other);
        assert_eq!(of(&[]), Look::Other);
        assert_eq!(tone(&group(&[])), Tone::Info);
        assert_eq!(tone(&group(&[Status::Running])), Tone::Info);
    }

    fn lines(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("line {i:03}")).collect()
    }

    #[test]
    fn fit_keeps_everything_that_fits() {
        let l = lines(3);
        let (kept, more) = fit(&l, 100, bytes);
        assert_eq!(kept.len(), 3);
        assert_eq!(more, None);
        // Exactly the joined size fits: 3 × 8 + 2 separators.
        assert_eq!(fit(&l, 26, bytes).0.len(), 3);
    }

    #[test]
    fn fit_cuts_and_counts_what_it_left_out() {
        let l = lines(100);
        let budget = 200;
        let text = fit_joined(&l, budget, bytes);
        assert!(text.len() <= budget, "{} > {budget}", text.len());
        let (kept, more) = fit(&l, budget, bytes);
        assert_eq!(more, Some(and_more(100 - kept.len())));
        assert!(text.ends_with(&and_more(100 - kept.len())));
        // One more line would not have fitted.
        let one_more = fit_joined(&l[..kept.len() + 1], usize::MAX, bytes).len()
            + 1
            + and_more(100 - kept.len() - 1).len();
        assert!(one_more > budget);
    }

    #[test]
    fn fit_measures_in_the_given_unit() {
        let l = vec!["é".repeat(10); 10];
        let (by_chars, _) = fit(&l, 60, chars);
        let (by_bytes, _) = fit(&l, 60, bytes);
        assert!(by_bytes.len() < by_chars.len());
    }

    #[test]
    fn fit_with_a_tiny_budget_still_says_how_many() {
        let l = lines(5);
        let (kept, more) = fit(&l, 3, bytes);
        assert!(kept.is_empty());
        assert_eq!(more.as_deref(), Some("… and 5 more"));
    }

    #[test]
    fn clip_marks_the_cut() {
        assert_eq!(clip("abcdef", 4), "abc…");
        assert_eq!(clip("abc", 4), "abc");
    }
}
