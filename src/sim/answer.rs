//! What the simulator answers besides sub-jobs: the API's error bodies
//! (`{error_code, error_msg}` with a status) and JSON responses. Shared by
//! the cloud surface, its authentication and the control surface.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// An error answer: a status and the API's `{error_code, error_msg}` body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorAnswer {
    pub status: StatusCode,
    pub code: String,
    pub msg: String,
}

impl ErrorAnswer {
    pub fn new(status: StatusCode, code: &str, msg: impl Into<String>) -> ErrorAnswer {
        ErrorAnswer {
            status,
            code: code.to_owned(),
            msg: msg.into(),
        }
    }

    pub(super) fn bad_request(code: &str, msg: impl Into<String>) -> ErrorAnswer {
        ErrorAnswer::new(StatusCode::BAD_REQUEST, code, msg)
    }
}

impl IntoResponse for ErrorAnswer {
    fn into_response(self) -> Response {
        json_response(
            self.status,
            &json!({"error_code": self.code, "error_msg": self.msg}),
        )
    }
}

pub fn json_response(status: StatusCode, body: &Value) -> Response {
    let mut response = (status, body.to_string()).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json;charset=UTF-8"),
    );
    response
}
