//! What holds an event back from a notifier: silences (matchers on the
//! event, for a while, stored in the state) and maintenance windows (a
//! route's `mute_time_intervals`, in `delivery.timezone`).
//!
//! Both are decided when an event is routed, once: a held event is written
//! to the history as held and never sent, then or later.

use std::fmt;
use std::str::FromStr;

use jiff::Timestamp;
use jiff::civil::{Time, Weekday};
use jiff::tz::TimeZone;
use serde::{Deserialize, Serialize};

use crate::watch::Event;

/// What a matcher looks at in an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Field {
    Target,
    Account,
    Project,
    JobType,
    /// The status entered.
    To,
    Kind,
    ErrorCode,
}

impl Field {
    pub const ALL: [Field; 7] = [
        Field::Target,
        Field::Account,
        Field::Project,
        Field::JobType,
        Field::To,
        Field::Kind,
        Field::ErrorCode,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Field::Target => "target",
            Field::Account => "account",
            Field::Project => "project",
            Field::JobType => "job_type",
            Field::To => "to",
            Field::Kind => "kind",
            Field::ErrorCode => "error_code",
        }
    }

    /// The event's value, `""` when it has none (as Alertmanager reads an
    /// absent label): `error_code=""` matches events without one.
    fn value<'a>(self, event: &'a Event) -> std::borrow::Cow<'a, str> {
        match self {
            Field::Target => event.target_name(),
            Field::Account => event.account.as_str().into(),
            Field::Project => event.project_id.as_str().into(),
            Field::JobType => event.job_type.as_str().into(),
            Field::To => event.to.as_ref().map_or("", |s| s.as_str()).into(),
            Field::Kind => event.kind.as_str().into(),
            Field::ErrorCode => event.error_code.as_deref().unwrap_or("").into(),
        }
    }
}

/// How a matcher compares: Alertmanager's four operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Equal,
    NotEqual,
    Regex,
    NotRegex,
}

impl Op {
    fn as_str(self) -> &'static str {
        match self {
            Op::Equal => "=",
            Op::NotEqual => "!=",
            Op::Regex => "=~",
            Op::NotRegex => "!~",
        }
    }
}

/// One condition of a silence, written `field=value`, `field!=value`,
/// `field=~regex` or `field!~regex`. A regex matches the whole value
/// (anchored, as Alertmanager's).
#[derive(Debug, Clone)]
pub struct Matcher {
    pub field: Field,
    pub op: Op,
    pub value: String,
    regex: Option<regex::Regex>,
}

impl PartialEq for Matcher {
    fn eq(&self, other: &Matcher) -> bool {
        self.field == other.field && self.op == other.op && self.value == other.value
    }
}

impl Matcher {
    pub fn matches(&self, event: &Event) -> bool {
        let value = self.field.value(event);
        match (self.op, &self.regex) {
            (Op::Equal, _) => value == self.value,
            (Op::NotEqual, _) => value != self.value,
            (Op::Regex, Some(re)) => re.is_match(&value),
            (Op::NotRegex, Some(re)) => !re.is_match(&value),
            // Parsing compiles every regex matcher.
            (Op::Regex | Op::NotRegex, None) => false,
        }
    }
}

/// A matcher that does not read, with what was wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MatcherError {
    #[error(
        "{0:?} is not a matcher: write FIELD=VALUE, FIELD!=VALUE, FIELD=~REGEX or FIELD!~REGEX"
    )]
    Form(String),
    #[error("unknown field {field:?} in {text:?}; matchers look at {known}")]
    Field {
        field: String,
        text: String,
        known: String,
    },
    #[error("{text:?}: the regex does not compile: {reason}")]
    Regex { text: String, reason: String },
}

impl FromStr for Matcher {
    type Err = MatcherError;

    fn from_str(text: &str) -> Result<Matcher, MatcherError> {
        let text = text.trim();
        // The first operator character splits field from value; `!~` and
        // `=~` before `!=` and `=`, so `a=~b` is a regex, not `a = "~b"`.
        let at = text
            .find(['=', '!'])
            .ok_or_else(|| MatcherError::Form(text.to_owned()))?;
        let (field, rest) = text.split_at(at);
        let (op, value) = [Op::Regex, Op::NotRegex, Op::NotEqual, Op::Equal]
            .into_iter()
            .find_map(|op| rest.strip_prefix(op.as_str()).map(|v| (op, v)))
            .ok_or_else(|| MatcherError::Form(text.to_owned()))?;
        let field = field.trim();
        let value = value.trim().trim_matches('"').to_owned();
        let field = match field {
            "project_id" => Field::Project,
            "status" => Field::To,
            name => Field::ALL
                .into_iter()
                .find(|f| f.as_str() == name)
                .ok_or_else(|| MatcherError::Field {
                    field: name.to_owned(),
                    text: text.to_owned(),
                    known: Field::ALL.map(Field::as_str).join(", "),
                })?,
        };
        let regex = match op {
            Op::Regex | Op::NotRegex => {
                Some(regex::Regex::new(&format!("^(?:{value})$")).map_err(|e| {
                    MatcherError::Regex {
                        text: text.to_owned(),
                        reason: e.to_string().lines().last().unwrap_or("").trim().to_owned(),
                    }
                })?)
            }
            Op::Equal | Op::NotEqual => None,
        };
        Ok(Matcher {
            field,
            op,
            value,
            regex,
        })
    }
}

impl fmt::Display for Matcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}{}{}",
            self.field.as_str(),
            self.op.as_str(),
            self.value
        )
    }
}

impl Serialize for Matcher {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Matcher {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Matcher, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// A silence as stored: every matcher must match, between `starts_at` and
/// `ends_at`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Silence {
    pub id: i64,
    pub matchers: Vec<Matcher>,
    pub starts_at: Timestamp,
    /// Expiring a silence moves this to the moment it was expired.
    pub ends_at: Timestamp,
    pub comment: String,
    /// Who added it (`user@host` for the CLI, `console` for the page).
    pub created_by: String,
    pub created_at: Timestamp,
}

impl Silence {
    pub fn is_active(&self, now: Timestamp) -> bool {
        self.starts_at <= now && now < self.ends_at
    }

    /// Whether it holds `event` at `now`.
    pub fn holds(&self, event: &Event, now: Timestamp) -> bool {
        self.is_active(now) && self.matchers.iter().all(|m| m.matches(event))
    }

    /// `active`, `pending` (not started) or `expired`.
    pub fn state(&self, now: Timestamp) -> &'static str {
        if now < self.starts_at {
            "pending"
        } else if now < self.ends_at {
            "active"
        } else {
            "expired"
        }
    }
}

/// A silence to add.
#[derive(Debug, Clone, PartialEq)]
pub struct NewSilence {
    pub matchers: Vec<Matcher>,
    pub starts_at: Timestamp,
    pub ends_at: Timestamp,
    pub comment: String,
    pub created_by: String,
}

impl NewSilence {
    /// The silence as stored under `id`, added at `created_at`.
    pub fn stored(&self, id: i64, created_at: Timestamp) -> Silence {
        Silence {
            id,
            matchers: self.matchers.clone(),
            starts_at: self.starts_at,
            ends_at: self.ends_at,
            comment: self.comment.clone(),
            created_by: self.created_by.clone(),
            created_at,
        }
    }

    /// A silence from an operator's words (the command line's, the
    /// console's): every matcher must read, and there must be a reason
    /// and a time. Every problem is named at once.
    pub fn build(
        matchers: &[String],
        duration: std::time::Duration,
        comment: &str,
        author: String,
        now: Timestamp,
    ) -> Result<NewSilence, String> {
        let mut parsed = Vec::new();
        let mut errors = Vec::new();
        for text in matchers.iter().filter(|t| !t.trim().is_empty()) {
            match text.parse::<Matcher>() {
                Ok(m) => parsed.push(m),
                Err(e) => errors.push(e.to_string()),
            }
        }
        if parsed.is_empty() && errors.is_empty() {
            errors.push("a silence needs at least one matcher".to_owned());
        }
        if comment.trim().is_empty() {
            errors.push("a silence needs a comment saying why".to_owned());
        }
        if duration.is_zero() {
            errors.push("a silence must last longer than 0s".to_owned());
        }
        let ends_at = jiff::SignedDuration::try_from(duration)
            .ok()
            .and_then(|d| now.checked_add(d).ok());
        if ends_at.is_none() {
            errors.push("the silence would end after the year 9999".to_owned());
        }
        if !errors.is_empty() {
            return Err(errors.join("; "));
        }
        Ok(NewSilence {
            matchers: parsed,
            starts_at: now,
            ends_at: ends_at.unwrap_or(now),
            comment: comment.trim().to_owned(),
            created_by: author,
        })
    }
}

/// Why an event was not sent to a notifier.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Hold {
    /// A silence, by id.
    Silence(i64),
    /// A route's maintenance window, by name.
    Window(String),
}

impl fmt::Display for Hold {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Hold::Silence(id) => write!(f, "silence {id}"),
            Hold::Window(name) => write!(f, "maintenance window {name:?}"),
        }
    }
}

/// A time of day range `[start, end)`; `end` may be `24:00`, the end of
/// the day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeRange {
    pub start: Time,
    /// `None`: the end of the day (`24:00`).
    pub end: Option<Time>,
}

impl TimeRange {
    fn contains(&self, t: Time) -> bool {
        self.start <= t && self.end.is_none_or(|end| t < end)
    }
}

impl FromStr for TimeRange {
    type Err = String;

    /// `HH:MM-HH:MM`, the start before the end on the same day.
    fn from_str(text: &str) -> Result<TimeRange, String> {
        let form = || format!("{text:?} is not a time range such as \"09:00-17:30\"");
        let (start, end) = text.trim().split_once('-').ok_or_else(form)?;
        let time = |s: &str| -> Result<Time, String> {
            let s = s.trim();
            let (h, m) = s.split_once(':').ok_or_else(form)?;
            let (h, m): (i8, i8) = (
                h.parse().map_err(|_| form())?,
                m.parse().map_err(|_| form())?,
            );
            if h == 24 && m == 0 {
                return Ok(Time::MAX);
            }
            Time::new(h, m, 0, 0).map_err(|_| form())
        };
        let start = time(start)?;
        let end = time(end)?;
        if start == Time::MAX {
            return Err(form());
        }
        if end <= start {
            return Err(format!(
                "{text:?} ends before it starts; a window across midnight is two ranges, such as \"22:00-24:00\" and \"00:00-06:00\""
            ));
        }
        Ok(TimeRange {
            start,
            end: (end != Time::MAX).then_some(end),
        })
    }
}

impl fmt::Display for TimeRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hm = |t: Time| format!("{:02}:{:02}", t.hour(), t.minute());
        match self.end {
            Some(end) => write!(f, "{}-{}", hm(self.start), hm(end)),
            None => write!(f, "{}-24:00", hm(self.start)),
        }
    }
}

/// `[time_intervals.NAME]`: when a route that names it in
/// `mute_time_intervals` sends nothing. Empty `weekdays`: every day;
/// empty `times`: the whole day.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TimeInterval {
    pub weekdays: Vec<Weekday>,
    pub times: Vec<TimeRange>,
}

impl TimeInterval {
    /// Whether `now`, in `tz`, falls inside.
    pub fn contains(&self, now: Timestamp, tz: &TimeZone) -> bool {
        let local = now.to_zoned_datetime(tz.clone()).datetime();
        (self.weekdays.is_empty() || self.weekdays.contains(&local.weekday()))
            && (self.times.is_empty() || self.times.iter().any(|r| r.contains(local.time())))
    }
}

impl Serialize for TimeInterval {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("TimeInterval", 2)?;
        let days: Vec<&str> = self.weekdays.iter().map(|d| weekday_name(*d)).collect();
        let times: Vec<String> = self.times.iter().map(ToString::to_string).collect();
        st.serialize_field("weekdays", &days)?;
        st.serialize_field("times", &times)?;
        st.end()
    }
}

pub const WEEKDAYS: [(&str, Weekday); 7] = [
    ("monday", Weekday::Monday),
    ("tuesday", Weekday::Tuesday),
    ("wednesday", Weekday::Wednesday),
    ("thursday", Weekday::Thursday),
    ("friday", Weekday::Friday),
    ("saturday", Weekday::Saturday),
    ("sunday", Weekday::Sunday),
];

pub fn weekday_name(day: Weekday) -> &'static str {
    WEEKDAYS
        .iter()
        .find(|(_, d)| *d == day)
        .map_or("?", |(n, _)| n)
}

/// A `weekdays` entry: a day (`saturday`) or a range (`monday:friday`,
/// which may wrap: `friday:monday`). Returns the days, or the day names
/// that did not read.
pub fn weekdays(text: &str) -> Result<Vec<Weekday>, String> {
    let day = |s: &str| {
        let s = s.trim().to_ascii_lowercase();
        WEEKDAYS
            .iter()
            .find(|(n, _)| *n == s)
            .map(|(_, d)| *d)
            .ok_or_else(|| {
                format!(
                    "{s:?} is not a weekday; write monday … sunday, or a range such as \"monday:friday\""
                )
            })
    };
    match text.split_once(':') {
        None => Ok(vec![day(text)?]),
        Some((from, to)) => {
            let (from, to) = (day(from)?, day(to)?);
            let mut out = vec![from];
            let mut d = from;
            while d != to {
                d = d.next();
                out.push(d);
            }
            Ok(out)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cloud::model::{JobType, Status};
    use crate::watch::EventKind;

    fn event(job_type: &str, to: &str, error_code: Option<&str>) -> Event {
        Event {
            event_id: "e".into(),
            kind: EventKind::Changed,
            target: "prod".into(),
            account: "default".into(),
            project_id: "p1".into(),
            job_type: JobType::from(job_type),
            sub_job_id: "s".into(),
            job_id: None,
            resource_id: None,
            resource_name: None,
            from: Some(Status::from("RUNNING")),
            to: Some(Status::from(to)),
            error_code: error_code.map(str::to_owned),
            error_message: None,
            begin_time: None,
            end_time: None,
            observed_at: Timestamp::UNIX_EPOCH,
        }
    }

    fn m(text: &str) -> Matcher {
        text.parse().expect("a matcher")
    }

    #[test]
    fn matchers_compare_whole_values_and_anchor_their_regexes() {
        let failed = event("CREATE_SERVER", "FAILED", Some("WKS.0012.3"));
        assert!(m("job_type=CREATE_SERVER").matches(&failed));
        assert!(!m("job_type=CREATE").matches(&failed));
        assert!(m(r"error_code=~WKS\.0012.*").matches(&failed));
        // Anchored: a regex must match the whole value.
        assert!(!m(r"error_code=~0012").matches(&failed));
        assert!(m(r"error_code!~WKS\.9.*").matches(&failed));
        assert!(m("to!=SUCCESS").matches(&failed));
        assert!(m("status=FAILED").matches(&failed));
        assert!(m("project_id=p1").matches(&failed));
        assert!(m("kind=changed").matches(&failed));
        assert!(m("target=prod").matches(&failed));
        assert!(m("account=default").matches(&failed));
        // An absent value is "".
        let plain = event("CREATE_SERVER", "SUCCESS", None);
        assert!(m("error_code=").matches(&plain));
        assert!(!m(r"error_code=~WKS.*").matches(&plain));
        assert_eq!(
            m(r"error_code=~WKS\.0012.*").to_string(),
            r"error_code=~WKS\.0012.*"
        );
    }

    #[test]
    fn a_bad_matcher_says_what_is_wrong() {
        let err = |t: &str| t.parse::<Matcher>().expect_err(t).to_string();
        assert!(
            err("job_type").contains("is not a matcher"),
            "{}",
            err("job_type")
        );
        assert!(err("jobtype=X").contains("unknown field \"jobtype\""));
        assert!(err("jobtype=X").contains("job_type"));
        assert!(err("error_code=~WKS(").contains("does not compile"));
    }

    #[test]
    fn a_silence_holds_what_all_its_matchers_match_while_it_lasts() {
        let t = |s: &str| s.parse::<Timestamp>().expect("a time");
        let silence = Silence {
            id: 1,
            matchers: vec![m("job_type=CREATE_SERVER"), m(r"error_code=~WKS\.0012.*")],
            starts_at: t("2026-12-01T10:00:00Z"),
            ends_at: t("2026-12-01T12:00:00Z"),
            comment: String::new(),
            created_by: String::new(),
            created_at: t("2026-12-01T10:00:00Z"),
        };
        let failed = event("CREATE_SERVER", "FAILED", Some("WKS.0012.3"));
        let other = event("CREATE_SERVER", "FAILED", Some("WKS.0013"));
        assert!(silence.holds(&failed, t("2026-12-01T11:00:00Z")));
        assert!(!silence.holds(&other, t("2026-12-01T11:00:00Z")));
        assert!(!silence.holds(&failed, t("2026-12-01T09:59:59Z")));
        assert!(!silence.holds(&failed, t("2026-12-01T12:00:00Z")));
        assert_eq!(silence.state(t("2026-12-01T12:00:00Z")), "expired");
    }

    /// The clock is an argument: a window is checked at chosen instants, in
    /// the configured zone.
    #[test]
    fn a_window_is_checked_in_its_timezone_on_its_weekdays() {
        let shanghai = TimeZone::get("Asia/Shanghai").expect("tzdb");
        let window = TimeInterval {
            weekdays: weekdays("saturday:sunday").expect("days"),
            times: vec![
                "22:00-24:00".parse().expect("range"),
                "00:00-06:00".parse().expect("range"),
            ],
        };
        let t = |s: &str| s.parse::<Timestamp>().expect("a time");
        // Saturday 23:30 in Shanghai is Saturday 15:30 UTC.
        assert!(window.contains(t("2026-12-05T15:30:00Z"), &shanghai));
        // Saturday 23:30 UTC is Sunday 07:30 in Shanghai: outside the times.
        assert!(!window.contains(t("2026-12-05T23:30:00Z"), &shanghai));
        // Friday 23:00 in Shanghai: not a listed day.
        assert!(!window.contains(t("2026-12-04T15:00:00Z"), &shanghai));
        // Sunday 05:59 in Shanghai, and 06:00 (the end is not inside).
        assert!(window.contains(t("2026-12-05T21:59:00Z"), &shanghai));
        assert!(!window.contains(t("2026-12-05T22:00:00Z"), &shanghai));
        assert_eq!(weekdays("friday:monday").expect("days").len(), 4);
        assert!(
            "22:00-06:00"
                .parse::<TimeRange>()
                .expect_err("wraps")
                .contains("two ranges")
        );
        assert!("9-17".parse::<TimeRange>().is_err());
        assert_eq!(
            "00:00-24:00"
                .parse::<TimeRange>()
                .expect("whole day")
                .to_string(),
            "00:00-24:00"
        );
        assert!(weekdays("mon").is_err());
    }
}
