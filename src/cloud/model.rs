//! The API's data as it arrives: sub-jobs, pages, statuses and job types.
//!
//! Parsing is tolerant on purpose. The cloud adds statuses and job types
//! before clients learn them, so unknown values are kept as strings; times
//! that do not parse are kept as text; missing, `null` and empty fields are
//! normal. Unknown fields survive a round trip, so `jobs --format json`
//! prints items as the API gave them.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

/// Declares a string enum whose unknown values are kept in `Other`.
macro_rules! open_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name {
            $($variant,)+
            /// A value this version does not know, kept verbatim.
            Other(String),
        }

        impl $name {
            /// Every value this version knows, in documentation order.
            pub const KNOWN: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(&self) -> &str {
                match self {
                    $($name::$variant => $text,)+
                    $name::Other(s) => s,
                }
            }

            /// Whether this value is one the API documents.
            pub fn is_known(&self) -> bool {
                !matches!(self, $name::Other(_))
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                match s {
                    $($text => $name::$variant,)+
                    other => $name::Other(other.to_owned()),
                }
            }
        }

        impl From<String> for $name {
            fn from(s: String) -> Self {
                match $name::from(s.as_str()) {
                    $name::Other(_) => $name::Other(s),
                    known => known,
                }
            }
        }

        impl std::str::FromStr for $name {
            type Err = std::convert::Infallible;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Ok($name::from(s))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                String::deserialize(d).map($name::from)
            }
        }
    };
}

open_enum! {
    /// A sub-job's status.
    Status {
        Waiting => "WAITING",
        Running => "RUNNING",
        Success => "SUCCESS",
        Failed => "FAILED",
        Abnormal => "ABNORMAL",
        Rollback => "ROLLBACK",
        Aborting => "ABORTING",
    }
}

impl Status {
    /// Still in progress: WAITING, RUNNING, ROLLBACK, ABORTING.
    pub fn is_active(&self) -> bool {
        matches!(
            self,
            Status::Waiting | Status::Running | Status::Rollback | Status::Aborting
        )
    }

    /// Finished: SUCCESS, FAILED, ABNORMAL. An unknown status is neither
    /// active nor terminal.
    pub fn is_terminal(&self) -> bool {
        matches!(self, Status::Success | Status::Failed | Status::Abnormal)
    }

    /// A failure worth a louder message.
    pub fn is_failure(&self) -> bool {
        matches!(self, Status::Failed | Status::Abnormal)
    }
}

open_enum! {
    /// A sub-job's type: the API's list plus the SDK's.
    JobType {
        CreateServer => "CREATE_SERVER",
        DeleteServer => "DELETE_SERVER",
        RejoinDomain => "REJOIN_DOMAIN",
        ChangeServerImage => "CHANGE_SERVER_IMAGE",
        ReinstallOs => "REINSTALL_OS",
        MigrateServer => "MIGRATE_SERVER",
        UpdateServerTsvi => "UPDATE_SERVER_TSVI",
        UpgradeAccessAgent => "UPGRADE_ACCESS_AGENT",
        ScheduledTask => "SCHEDULED_TASK",
        UpdateFreezeStatus => "UPDATE_FREEZE_STATUS",
        CreateServerImage => "CREATE_SERVER_IMAGE",
        CollectHdaLog => "COLLECT_HDA_LOG",
        CollectApsLog => "COLLECT_APS_LOG",
        CreateServerSnapshot => "CREATE_SERVER_SNAPSHOT",
        DeleteServerSnapshot => "DELETE_SERVER_SNAPSHOT",
        RestoreServerSnapshot => "RESTORE_SERVER_SNAPSHOT",
        BatchInstallApp => "BATCH_INSTALL_APP",
        InstallCesAgent => "INSTALL_CES_AGENT",
        UninstallCesAgent => "UNINSTALL_CES_AGENT",
    }
}

/// A time field: the text as the API sent it, and its parsed value when it
/// parses. A value without an offset is read as UTC, as the SDK does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiTime {
    pub raw: String,
    pub parsed: Option<jiff::Timestamp>,
}

impl ApiTime {
    pub fn parse(raw: &str) -> ApiTime {
        ApiTime {
            raw: raw.to_owned(),
            parsed: parse_api_time(raw),
        }
    }

    pub fn from_timestamp(at: jiff::Timestamp) -> ApiTime {
        // The API's own shape: milliseconds and a `Z`.
        let raw = at.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string();
        ApiTime {
            raw,
            parsed: Some(at),
        }
    }
}

impl fmt::Display for ApiTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

/// RFC 3339 with optional fraction; no offset means UTC; a space instead of
/// `T` is accepted. Anything else is `None`, never an error.
pub fn parse_api_time(raw: &str) -> Option<jiff::Timestamp> {
    let raw = raw.trim();
    if raw.is_empty() {
        return None;
    }
    if let Ok(ts) = raw.parse::<jiff::Timestamp>() {
        return Some(ts);
    }
    let civil: jiff::civil::DateTime = raw.parse().ok()?;
    civil
        .to_zoned_datetime(jiff::tz::TimeZone::UTC)
        .ok()
        .map(|z| z.timestamp())
}

impl Serialize for ApiTime {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.raw)
    }
}

impl<'de> Deserialize<'de> for ApiTime {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(|raw| ApiTime::parse(&raw))
    }
}

/// `JobResourceInfo`: which resource the sub-job works on. Its fields vary
/// by job type; the ones we do not name are kept in `extra`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct JobResourceInfo {
    #[serde(
        default,
        deserialize_with = "lenient_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub resource_id: Option<String>,
    #[serde(
        default,
        deserialize_with = "lenient_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub resource_name: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// One sub-job (`JobDetailInfo` / `SubJobDetailInfo`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubJob {
    /// Required: without an id a sub-job cannot be tracked. A numeric id is
    /// accepted and kept as its decimal text.
    #[serde(deserialize_with = "required_string")]
    pub id: String,
    #[serde(
        default,
        deserialize_with = "lenient",
        skip_serializing_if = "Option::is_none"
    )]
    pub job_type: Option<JobType>,
    #[serde(
        default,
        deserialize_with = "lenient",
        skip_serializing_if = "Option::is_none"
    )]
    pub job_resource_info: Option<JobResourceInfo>,
    #[serde(
        default,
        deserialize_with = "lenient_time",
        skip_serializing_if = "Option::is_none"
    )]
    pub begin_time: Option<ApiTime>,
    #[serde(
        default,
        deserialize_with = "lenient_time",
        skip_serializing_if = "Option::is_none"
    )]
    pub end_time: Option<ApiTime>,
    #[serde(
        default,
        deserialize_with = "lenient",
        skip_serializing_if = "Option::is_none"
    )]
    pub status: Option<Status>,
    #[serde(
        default,
        deserialize_with = "lenient_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub error_code: Option<String>,
    #[serde(
        default,
        deserialize_with = "lenient_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub error_message: Option<String>,
    #[serde(
        default,
        deserialize_with = "lenient_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub project_id: Option<String>,
    #[serde(
        default,
        deserialize_with = "lenient_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub job_id: Option<String>,
    /// Fields this version does not know, kept for a faithful round trip.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// The largest `count` believed: a scan reads `count / limit` pages, so a
/// lying count would otherwise be an endless scan. A million sub-jobs is
/// far beyond what a project keeps.
pub const MAX_COUNT: u64 = 1_000_000;

/// The longest value kept of a sub-job's short fields (status, job type,
/// error code, parent job): no documented one comes near it.
pub const MAX_SHORT_FIELD: usize = 128;
/// The longest value kept of its text fields (names, messages, times).
pub const MAX_TEXT_FIELD: usize = 2048;

impl SubJob {
    /// Bounds what the API can make us store and send. An over-long status
    /// or job type is no usable value (the sub-job keeps its last known
    /// status); other fields are cut. Returns the names of the fields it
    /// touched, for a log line; an over-long id is the caller's to reject.
    pub fn bound(&mut self) -> Vec<&'static str> {
        let mut touched = Vec::new();
        if self
            .status
            .as_ref()
            .is_some_and(|s| s.as_str().len() > MAX_SHORT_FIELD)
        {
            self.status = None;
            touched.push("status");
        }
        if self
            .job_type
            .as_ref()
            .is_some_and(|t| t.as_str().len() > MAX_SHORT_FIELD)
        {
            self.job_type = None;
            touched.push("job_type");
        }
        let mut cut = |field: &mut Option<String>, max: usize, name: &'static str| {
            if let Some(value) = field
                && value.len() > max
            {
                let mut at = max;
                while !value.is_char_boundary(at) {
                    at -= 1;
                }
                value.truncate(at);
                value.push('…');
                touched.push(name);
            }
        };
        cut(&mut self.error_code, MAX_SHORT_FIELD, "error_code");
        cut(&mut self.job_id, MAX_SHORT_FIELD, "job_id");
        cut(&mut self.project_id, MAX_SHORT_FIELD, "project_id");
        cut(&mut self.error_message, MAX_TEXT_FIELD, "error_message");
        if let Some(info) = &mut self.job_resource_info {
            cut(&mut info.resource_id, MAX_TEXT_FIELD, "resource_id");
            cut(&mut info.resource_name, MAX_TEXT_FIELD, "resource_name");
        }
        for (time, name) in [
            (&mut self.begin_time, "begin_time"),
            (&mut self.end_time, "end_time"),
        ] {
            if time.as_ref().is_some_and(|t| t.raw.len() > MAX_SHORT_FIELD) {
                *time = None;
                touched.push(name);
            }
        }
        // Fields this version does not know are kept for a round trip,
        // but not a huge one.
        let extra = serde_json::to_string(&self.extra).map_or(0, |t| t.len());
        if extra > MAX_TEXT_FIELD {
            self.extra.clear();
            touched.push("(unknown fields)");
        }
        touched
    }

    pub fn resource_id(&self) -> Option<&str> {
        self.job_resource_info.as_ref()?.resource_id.as_deref()
    }

    pub fn resource_name(&self) -> Option<&str> {
        self.job_resource_info.as_ref()?.resource_name.as_deref()
    }
}

/// One item of a page that could not be read as a sub-job. It is reported,
/// never silently dropped: a scan with rejected items is incomplete.
#[derive(Debug, Clone, PartialEq)]
pub struct RejectedItem {
    /// Position on its page.
    pub index: usize,
    /// What was wrong, e.g. `missing field "id"`.
    pub reason: String,
    pub raw: Value,
}

/// One page of `GET /v1/{project_id}/app-server-sub-jobs`.
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    pub count: u64,
    pub items: Vec<SubJob>,
    pub rejected: Vec<RejectedItem>,
}

/// The envelope of a page as it arrives, its parts still unread text:
/// each item is decoded on its own, so one bad item cannot hide the rest.
#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(default, borrow)]
    count: Option<&'a RawValue>,
    #[serde(default, borrow)]
    items: Option<&'a RawValue>,
    #[serde(default, borrow)]
    error_code: Option<&'a RawValue>,
    #[serde(default, borrow)]
    error_msg: Option<&'a RawValue>,
}

impl Page {
    /// Reads a page body straight into the model. The envelope must be
    /// right: an integer `count` and an `items` array, no error body; a bad
    /// item is kept in `rejected` so the rest of the page still counts.
    pub fn from_slice(body: &[u8]) -> Result<Page, String> {
        let start = body.trim_ascii_start();
        if !start.starts_with(b"{") {
            return Err(format!("expected a JSON object, got {}", kind_of(start)));
        }
        let envelope: Envelope<'_> = serde_json::from_slice(body).map_err(|e| e.to_string())?;
        // An error body under HTTP 200 is an error, not an empty page.
        if let Some(code) = envelope.error_code.or(envelope.error_msg) {
            let msg = envelope.error_msg.map_or("none", RawValue::get);
            return Err(format!(
                "an error answer under HTTP 200: error_code {}, error_msg {msg}",
                code.get()
            ));
        }
        // Without both a page says nothing: taking it as empty would make
        // the whole history vanish.
        let count = match envelope.count.map(RawValue::get) {
            // serde reads a `null` as absent.
            None => return Err("\"count\" is missing or null".to_owned()),
            Some(raw) => raw
                .parse::<u64>()
                .map_err(|_| match kind_of(raw.as_bytes()) {
                    "a number" => format!("\"count\" is not a non-negative integer: {raw}"),
                    kind => format!("\"count\" is {kind}, not a number"),
                })?,
        };
        if count > MAX_COUNT {
            return Err(format!(
                "\"count\" is {count}, beyond any target's history (at most {MAX_COUNT} sub-jobs); the answer is not believed"
            ));
        }
        let raw_items: Vec<&RawValue> = match envelope.items.map(RawValue::get) {
            None => return Err("\"items\" is missing or null".to_owned()),
            Some(raw) if raw.starts_with('[') => {
                serde_json::from_str(raw).map_err(|e| format!("\"items\": {e}"))?
            }
            Some(raw) => {
                let kind = kind_of(raw.as_bytes());
                return Err(format!("\"items\" is {kind}, not an array"));
            }
        };
        let mut items = Vec::with_capacity(raw_items.len());
        let mut rejected = Vec::new();
        let mut bounded = 0;
        let mut fields: Vec<&'static str> = Vec::new();
        for (index, raw) in raw_items.into_iter().enumerate() {
            match serde_json::from_str::<SubJob>(raw.get()) {
                Ok(job) if job.id.len() > MAX_SHORT_FIELD => rejected.push(RejectedItem {
                    index,
                    reason: format!("\"id\" is {} bytes long, beyond any real id", job.id.len()),
                    raw: Value::Null,
                }),
                Ok(mut job) => {
                    let touched = job.bound();
                    if !touched.is_empty() {
                        bounded += 1;
                        fields.extend(touched);
                    }
                    items.push(job);
                }
                Err(e) => rejected.push(RejectedItem {
                    index,
                    reason: e.to_string(),
                    raw: serde_json::from_str(raw.get()).unwrap_or(Value::Null),
                }),
            }
        }
        if bounded > 0 {
            fields.sort_unstable();
            fields.dedup();
            tracing::warn!(
                sub_jobs = bounded,
                fields = %fields.join(", "),
                "the API sent over-long values; they were cut (an over-long status counts as none)"
            );
        }
        Ok(Page {
            count,
            items,
            rejected,
        })
    }
}

/// Names the kind of the JSON text `raw` by its first character.
fn kind_of(raw: &[u8]) -> &'static str {
    match raw.first() {
        None => "nothing",
        Some(b'n') => "null",
        Some(b't' | b'f') => "a boolean",
        Some(b'"') => "a string",
        Some(b'[') => "an array",
        Some(b'{') => "an object",
        Some(b'-' | b'0'..=b'9') => "a number",
        Some(_) => "not JSON",
    }
}

/// Names a JSON value's kind for error messages.
pub fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// `null`, `""` → `None`; a string or number → its text; anything else is
/// kept as its JSON text rather than failing the item.
fn lenient_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::Null => None,
        Value::String(s) if s.is_empty() => None,
        Value::String(s) => Some(s),
        other => Some(other.to_string()),
    })
}

fn required_string<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    match Value::deserialize(d)? {
        Value::String(s) if !s.is_empty() => Ok(s),
        Value::Number(n) => Ok(n.to_string()),
        other => Err(serde::de::Error::custom(format!(
            "\"id\" must be a non-empty string, got {}",
            json_kind(&other)
        ))),
    }
}

fn lenient_time<'de, D: Deserializer<'de>>(d: D) -> Result<Option<ApiTime>, D::Error> {
    Ok(lenient_string(d)?.map(|raw| ApiTime::parse(&raw)))
}

/// A value of the wrong shape becomes `None` instead of failing the item:
/// one odd field must not hide a sub-job's status.
fn lenient<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: serde::de::DeserializeOwned,
{
    let value = Value::deserialize(d)?;
    if value.is_null() || value.as_str() == Some("") {
        return Ok(None);
    }
    Ok(serde_json::from_value(value).ok())
}

/// Metric labels take a status only when the API documents it.
impl crate::metrics::BoundedLabel for Status {
    fn bounded(&self) -> Option<&str> {
        self.is_known().then(|| self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn unknown_status_and_job_type_round_trip() {
        let item = json!({"id":"1","job_type":"RESIZE_SERVER","status":"PAUSED","x_new":{"a":1}});
        let job: SubJob = serde_json::from_value(item.clone()).unwrap();
        assert_eq!(job.status, Some(Status::Other("PAUSED".into())));
        assert_eq!(job.job_type, Some(JobType::Other("RESIZE_SERVER".into())));
        assert_eq!(serde_json::to_value(&job).unwrap(), item);
    }

    #[test]
    fn times_are_tolerant() {
        for raw in [
            "2022-03-07T10:40:43.858Z",
            "2022-03-07T10:40:43Z",
            "2022-03-07T10:40:43",
            "2022-03-07T18:40:43+08:00",
        ] {
            assert!(parse_api_time(raw).is_some(), "{raw}");
        }
        assert_eq!(
            parse_api_time("2022-03-07T10:40:43"),
            parse_api_time("2022-03-07T10:40:43Z")
        );
        assert_eq!(parse_api_time("yesterday"), None);
        let job: SubJob =
            serde_json::from_value(json!({"id":"1","begin_time":"soon","end_time":null})).unwrap();
        assert_eq!(job.begin_time.unwrap().raw, "soon");
        assert!(job.end_time.is_none());
    }

    #[test]
    fn a_bad_item_is_rejected_not_fatal() {
        let page = Page::from_slice(
            br#"{"count":2,"items":[{"id":"a","status":"RUNNING"},{"status":"FAILED"}]}"#,
        )
        .unwrap();
        assert_eq!(page.items.len(), 1);
        assert_eq!(page.rejected.len(), 1);
        assert_eq!(page.rejected[0].index, 1);
        let error = |body: &str| Page::from_slice(body.as_bytes()).unwrap_err();
        assert_eq!(
            error(r#"{"count":"x"}"#),
            r#""count" is a string, not a number"#
        );
        assert_eq!(
            error(r#"{"count":-1}"#),
            r#""count" is not a non-negative integer: -1"#
        );
        assert_eq!(
            error(r#"{"count":1,"items":{}}"#),
            r#""items" is an object, not an array"#
        );
        assert_eq!(error("[]"), "expected a JSON object, got an array");
        assert_eq!(error("{}"), r#""count" is missing or null"#);
        assert_eq!(
            error(r#"{"count":null,"items":null}"#),
            r#""count" is missing or null"#
        );
        assert_eq!(error(r#"{"count":3}"#), r#""items" is missing or null"#);
        assert_eq!(
            error(r#"{"count":3,"items":null}"#),
            r#""items" is missing or null"#
        );
        assert_eq!(
            error(r#"{"error_code":"WKS.0001","error_msg":"internal error"}"#),
            r#"an error answer under HTTP 200: error_code "WKS.0001", error_msg "internal error""#
        );
        assert_eq!(error("  "), "expected a JSON object, got nothing");
    }
}
