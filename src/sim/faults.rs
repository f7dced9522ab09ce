//! Injected faults: what `POST /sim/faults` accepts and what each one does
//! to the next sub-job requests on the cloud surface.

use serde::Deserialize;

/// The throttling message the API gateway sends with `APIG.0308`.
pub const THROTTLE_MSG: &str =
    "The throttling threshold has been reached: policy user over ratelimit,limit:100,time:1 minute";

/// One fault as posted.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct FaultRequest {
    #[serde(flatten)]
    pub kind: FaultKind,
    /// How many requests it affects.
    #[serde(default = "one")]
    pub times: u32,
}

fn one() -> u32 {
    1
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "fault", rename_all = "lowercase")]
pub enum FaultKind {
    /// Answer with this status and an `{error_code, error_msg}` body.
    Status {
        status: u16,
        /// Seconds for a `Retry-After` header.
        #[serde(default)]
        retry_after: Option<u64>,
        #[serde(default)]
        error_code: Option<String>,
        #[serde(default)]
        error_msg: Option<String>,
    },
    /// Answer normally, this many milliseconds late.
    Delay { ms: u64 },
    /// 200 with a body that is not JSON.
    Malformed,
    /// 200 with the real body cut short, correctly framed.
    Truncated,
    /// Close the connection without any response.
    Reset,
    /// Answer a list request normally, then add a new sub-job to its
    /// project and job type, so the next page read is shifted by one.
    Shift,
    /// 200 with exactly this body, e.g. `{}` or `{"count":0,"items":[]}`:
    /// an answer that only looks like a page.
    Body { body: String },
    /// Answer normally, then set these fields on the page (`page`, e.g. a
    /// lying `count`) and on each of its items (`items`, e.g. a `null`
    /// status).
    Patch {
        #[serde(default)]
        page: serde_json::Map<String, serde_json::Value>,
        #[serde(default)]
        items: serde_json::Map<String, serde_json::Value>,
    },
    /// Answer a list request normally, then delete the newest sub-job of
    /// its project and job type, so the next page read is shifted back by
    /// one.
    Drop,
}

/// A queued fault and how many more requests it affects.
#[derive(Debug, Clone, PartialEq)]
pub struct Fault {
    pub kind: FaultKind,
    pub remaining: u32,
}

impl FaultRequest {
    /// Checks what serde cannot: a real status code and a positive count.
    pub fn validate(self) -> Result<Fault, String> {
        if self.times == 0 {
            return Err("\"times\" must be at least 1".to_owned());
        }
        if let FaultKind::Status { status, .. } = &self.kind
            && !(200..=599).contains(status)
        {
            return Err(format!("\"status\" must be in 200..=599, got {status}"));
        }
        Ok(Fault {
            kind: self.kind,
            remaining: self.times,
        })
    }
}

/// Default `(error_code, error_msg)` for a status fault.
pub fn default_error(status: u16) -> (&'static str, &'static str) {
    match status {
        429 => ("APIG.0308", THROTTLE_MSG),
        401 => (
            "APIG.0301",
            "Incorrect IAM authentication information: decrypt token fail",
        ),
        403 => ("WKS.00010403", "Permissions required."),
        404 => ("WKS.00010404", "No resources found."),
        500 => ("WKS.00000500", "An internal service error occurred."),
        502 => ("APIG.0202", "Backend unavailable."),
        503 => (
            "WKS.00129901",
            "The service is now unavailable to process the request.",
        ),
        504 => ("APIG.0203", "Backend timeout."),
        _ => ("WKS.00000001", "Simulated failure."),
    }
}

/// Takes the fault that applies to the next request from the queue front.
/// A `shift` waits at the front for a list request; anything else applies
/// to whichever sub-job request comes first.
pub fn take(queue: &mut std::collections::VecDeque<Fault>, is_list: bool) -> Option<FaultKind> {
    let front = queue.front_mut()?;
    if matches!(front.kind, FaultKind::Shift) && !is_list {
        return None;
    }
    let kind = front.kind.clone();
    front.remaining = front.remaining.saturating_sub(1);
    if front.remaining == 0 {
        queue.pop_front();
    }
    Some(kind)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: serde_json::Value) -> Result<Fault, String> {
        serde_json::from_value::<FaultRequest>(v)
            .map_err(|e| e.to_string())?
            .validate()
    }

    #[test]
    fn parses_every_kind() {
        let f = parse(json!({"fault":"status","status":503,"times":3,"retry_after":1})).unwrap();
        assert_eq!(f.remaining, 3);
        assert!(matches!(
            f.kind,
            FaultKind::Status {
                status: 503,
                retry_after: Some(1),
                ..
            }
        ));
        assert_eq!(
            parse(json!({"fault":"delay","ms":5})).unwrap().kind,
            FaultKind::Delay { ms: 5 }
        );
        for k in ["malformed", "truncated", "reset", "shift"] {
            assert_eq!(parse(json!({ "fault": k })).unwrap().remaining, 1);
        }
        assert!(parse(json!({"fault":"gremlins"})).is_err());
        assert!(parse(json!({"fault":"status","status":99})).is_err());
        assert!(parse(json!({"fault":"reset","times":0})).is_err());
    }

    #[test]
    fn shift_waits_for_a_list_request() {
        let mut q = std::collections::VecDeque::from([
            parse(json!({"fault":"shift"})).unwrap(),
            parse(json!({"fault":"malformed","times":2})).unwrap(),
        ]);
        assert_eq!(take(&mut q, false), None);
        assert_eq!(take(&mut q, true), Some(FaultKind::Shift));
        assert_eq!(take(&mut q, false), Some(FaultKind::Malformed));
        assert_eq!(take(&mut q, true), Some(FaultKind::Malformed));
        assert_eq!(take(&mut q, true), None);
    }
}
