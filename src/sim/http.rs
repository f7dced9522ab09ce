//! The cloud surface: the sub-job list and count endpoints with the API's
//! validation and error bodies, IAM's token endpoint, and the gate every
//! request passes (request ids, statistics, injected faults).

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{MatchedPath, Path, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use jiff::{SignedDuration, Timestamp};
use serde_json::{Value, json};

use super::answer::{ErrorAnswer, json_response};
use super::faults::{self, FaultKind};
use super::state::ListQuery;
use super::{ConnKill, Shared, auth};
use crate::cloud::model::{JobType, Status};

pub const LIST_PATH: &str = "/v1/{project_id}/app-server-sub-jobs";
pub const COUNT_PATH: &str = "/v1/{project_id}/app-server-sub-jobs/actions/count";
pub const IAM_PATH: &str = "/v3/auth/tokens";

/// Request bodies above this are refused; the API takes none at all.
const MAX_BODY: usize = 1 << 20;
/// IAM tokens live this long, as real ones do.
const TOKEN_LIFETIME: SignedDuration = SignedDuration::from_hours(24);

/// Every request: an `X-Request-Id` on the answer; for the cloud surface
/// also statistics and, on the sub-job endpoints, the next queued fault.
pub async fn gate(State(sim): State<Arc<Shared>>, request: Request, next: Next) -> Response {
    let path = request.uri().path();
    let control = path == "/sim" || path.starts_with("/sim/");
    let mut response = if control {
        next.run(request).await
    } else {
        cloud_gate(&sim, request, next).await
    };
    let mut id = [0u8; 16];
    rand::Rng::fill(&mut rand::rng(), &mut id);
    if let Ok(value) = HeaderValue::from_str(&hex::encode(id)) {
        response.headers_mut().insert("x-request-id", value);
    }
    response
}

async fn cloud_gate(sim: &Arc<Shared>, request: Request, next: Next) -> Response {
    let template = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |m| m.as_str())
        .to_owned();
    let is_list = template == LIST_PATH;
    let fault = if request.method() == Method::GET && (is_list || template == COUNT_PATH) {
        faults::take(&mut sim.store().faults, is_list)
    } else {
        None
    };
    let response = match fault {
        None => next.run(request).await,
        Some(FaultKind::Status {
            status,
            retry_after,
            error_code,
            error_msg,
        }) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
            let (code, msg) = faults::default_error(status.as_u16());
            let mut response = ErrorAnswer::new(
                status,
                error_code.as_deref().unwrap_or(code),
                error_msg.unwrap_or_else(|| msg.to_owned()),
            )
            .into_response();
            if let Some(seconds) = retry_after {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
            }
            response
        }
        Some(FaultKind::Delay { ms }) => {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            next.run(request).await
        }
        Some(FaultKind::Malformed) => {
            // Looks like the start of a page, then stops being JSON.
            let mut response = (
                StatusCode::OK,
                "{\"count\": 1, \"items\": [{\"id\": \"7f3a\", status: RUNNING,]}",
            )
                .into_response();
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json;charset=UTF-8"),
            );
            response
        }
        Some(FaultKind::Body { body }) => {
            let mut response = (StatusCode::OK, body).into_response();
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json;charset=UTF-8"),
            );
            response
        }
        Some(FaultKind::Patch { page, items }) => {
            patch(next.run(request).await, &page, &items).await
        }
        Some(FaultKind::Truncated) => truncate(next.run(request).await).await,
        Some(FaultKind::Reset) => {
            sim.store().stats.record(&template, "reset");
            if let Some(kill) = request.extensions().get::<ConnKill>() {
                // The connection task drops the connection, and this
                // future with it, before any byte of an answer is written.
                kill.0.cancel();
                std::future::pending::<()>().await;
            }
            // Only reachable when served without our accept loop: fail the
            // body instead, which also ends in a transport error.
            return Response::new(Body::from_stream(futures_util::stream::once(async {
                Err::<Bytes, _>(std::io::Error::other("simulated reset"))
            })));
        }
        Some(FaultKind::Shift) => {
            let project = project_of(request.uri().path());
            let job_type = first_query_value(request.uri().query(), "job_type");
            let response = next.run(request).await;
            if response.status() == StatusCode::OK
                && let (Some(project), Some(job_type)) = (project, job_type)
            {
                sim.insert_control_job(&project, &JobType::from(job_type));
            }
            response
        }
        Some(FaultKind::Drop) => {
            let project = project_of(request.uri().path());
            let job_type = first_query_value(request.uri().query(), "job_type");
            let response = next.run(request).await;
            if response.status() == StatusCode::OK
                && let (Some(project), Some(job_type)) = (project, job_type)
            {
                sim.store().delete_newest(&project, &job_type);
            }
            response
        }
    };
    sim.store()
        .stats
        .record(&template, response.status().as_str());
    response
}

/// Sets `page`'s fields on a JSON answer and `items`' on each of its items.
async fn patch(
    response: Response,
    page: &serde_json::Map<String, serde_json::Value>,
    items: &serde_json::Map<String, serde_json::Value>,
) -> Response {
    let (mut parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, MAX_BODY * 16)
        .await
        .unwrap_or_default();
    let Ok(serde_json::Value::Object(mut answer)) = serde_json::from_slice(&bytes) else {
        return Response::from_parts(parts, Body::from(bytes));
    };
    if let Some(serde_json::Value::Array(list)) = answer.get_mut("items") {
        for item in list.iter_mut().filter_map(serde_json::Value::as_object_mut) {
            item.extend(items.clone());
        }
    }
    answer.extend(page.clone());
    parts.headers.remove(header::CONTENT_LENGTH);
    let body = serde_json::to_vec(&answer).unwrap_or_default();
    Response::from_parts(parts, Body::from(body))
}

/// Cuts a body in half and frames what is left correctly, so the client
/// reads a complete HTTP message holding broken JSON.
async fn truncate(response: Response) -> Response {
    let (mut parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, MAX_BODY * 16)
        .await
        .unwrap_or_default();
    let cut = bytes.slice(..bytes.len() / 2);
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(cut))
}

fn project_of(path: &str) -> Option<String> {
    let rest = path.strip_prefix("/v1/")?;
    let (project, _) = rest.split_once('/')?;
    Some(
        percent_encoding::percent_decode_str(project)
            .decode_utf8_lossy()
            .into_owned(),
    )
}

fn first_query_value(query: Option<&str>, key: &str) -> Option<String> {
    url::form_urlencoded::parse(query?.as_bytes())
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
}

/// Reads the request, checks its credentials and returns its query pairs.
async fn admit(sim: &Shared, request: Request) -> Result<Vec<(String, String)>, ErrorAnswer> {
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, MAX_BODY).await.map_err(|_| {
        ErrorAnswer::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "APIG.0201",
            "Request entity too large.",
        )
    })?;
    {
        let store = sim.store();
        auth::check(&sim.auth, &store.tokens, &parts, &body, Timestamp::now())?;
    }
    Ok(
        url::form_urlencoded::parse(parts.uri.query().unwrap_or_default().as_bytes())
            .into_owned()
            .collect(),
    )
}

/// The first value of a query parameter; an empty value counts as absent,
/// as the service's parameter binding treats it.
fn param<'a>(query: &'a [(String, String)], key: &str) -> Option<&'a str> {
    query
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .filter(|v| !v.is_empty())
}

fn invalid(name: &str, value: &str, why: &str) -> ErrorAnswer {
    ErrorAnswer::bad_request(
        "WKS.00010002",
        format!("Invalid parameter {name}: '{value}', {why}."),
    )
}

fn known_job_type(value: &str) -> Result<JobType, ErrorAnswer> {
    let job_type = JobType::from(value);
    if job_type.is_known() {
        Ok(job_type)
    } else {
        Err(invalid("job_type", value, "not a supported job type"))
    }
}

fn status_filter(query: &[(String, String)]) -> Result<Option<Status>, ErrorAnswer> {
    match param(query, "status") {
        None => Ok(None),
        Some(value) => {
            let status = Status::from(value);
            if status.is_known() {
                Ok(Some(status))
            } else {
                Err(invalid("status", value, "not a supported job status"))
            }
        }
    }
}

fn project_known(sim: &Shared, project: &str) -> Result<(), ErrorAnswer> {
    if sim.store().has_project(project) {
        Ok(())
    } else {
        Err(ErrorAnswer::new(
            StatusCode::NOT_FOUND,
            "WKS.00010404",
            format!("The project {project} does not exist."),
        ))
    }
}

/// `GET /v1/{project_id}/app-server-sub-jobs`.
pub async fn list(
    State(sim): State<Arc<Shared>>,
    Path(project): Path<String>,
    request: Request,
) -> Result<Response, ErrorAnswer> {
    let query = admit(&sim, request).await?;
    let job_type = param(&query, "job_type")
        .ok_or_else(|| ErrorAnswer::bad_request("WKS.00010001", "Missing parameter: job_type."))?;
    let job_type = known_job_type(job_type)?;
    let status = status_filter(&query)?;
    let offset = match param(&query, "offset") {
        None => 0,
        Some(v) => v
            .parse::<u64>()
            .map_err(|_| invalid("offset", v, "must be an integer of at least 0"))?,
    };
    let limit = match param(&query, "limit") {
        None => 10,
        Some(v) => v
            .parse::<u64>()
            .ok()
            .filter(|n| (1..=100).contains(n))
            .ok_or_else(|| invalid("limit", v, "must be an integer from 1 to 100"))?,
    };
    project_known(&sim, &project)?;
    let filter = ListQuery {
        status: status.as_ref(),
        job_id: param(&query, "job_id"),
    };
    let store = sim.store();
    let (count, items) = store.list(&project, &[job_type.as_str()], &filter, offset, limit);
    // Serialised from the structs, not through `Value`, so fields keep the
    // API's documented order.
    #[derive(serde::Serialize)]
    struct Page<'a> {
        count: u64,
        items: Vec<&'a crate::cloud::model::SubJob>,
    }
    let body = serde_json::to_string(&Page { count, items }).unwrap_or_default();
    let mut response = (StatusCode::OK, body).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json;charset=UTF-8"),
    );
    Ok(response)
}

/// `GET /v1/{project_id}/app-server-sub-jobs/actions/count`. As the SDK's
/// `CountSubJobsRequest` documents, `job_type` is optional here and may
/// name several types separated by commas.
pub async fn count(
    State(sim): State<Arc<Shared>>,
    Path(project): Path<String>,
    request: Request,
) -> Result<Response, ErrorAnswer> {
    let query = admit(&sim, request).await?;
    let job_types: Vec<JobType> = match param(&query, "job_type") {
        None => JobType::KNOWN.to_vec(),
        Some(list) => list
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(known_job_type)
            .collect::<Result<_, _>>()?,
    };
    let status = status_filter(&query)?;
    project_known(&sim, &project)?;
    let filter = ListQuery {
        status: status.as_ref(),
        job_id: param(&query, "job_id"),
    };
    let names: Vec<&str> = job_types.iter().map(JobType::as_str).collect();
    let (count, _) = sim.store().list(&project, &names, &filter, 0, 0);
    Ok(json_response(StatusCode::OK, &json!({"count": count})))
}

/// `POST /v3/auth/tokens`: IAM's password method, scoped to a project.
pub async fn iam_tokens(State(sim): State<Arc<Shared>>, body: Bytes) -> Response {
    let Some((user, password)) = &sim.auth.iam else {
        return not_found().await;
    };
    let iam_error = |status: StatusCode, message: &str| {
        // IAM answers in Keystone's shape, not the gateway's.
        json_response(
            status,
            &json!({"error": {"code": status.as_u16(), "title": status.canonical_reason(), "message": message}}),
        )
    };
    let Ok(doc) = serde_json::from_slice::<Value>(&body) else {
        return iam_error(
            StatusCode::BAD_REQUEST,
            "The request body is not valid JSON.",
        );
    };
    let identity = &doc["auth"]["identity"];
    let by_password = identity["methods"]
        .as_array()
        .is_some_and(|m| m.iter().any(|v| v == "password"));
    let given_user = &identity["password"]["user"];
    let (Some(name), Some(given)) = (given_user["name"].as_str(), given_user["password"].as_str())
    else {
        return iam_error(
            StatusCode::BAD_REQUEST,
            "The request must name a user and a password.",
        );
    };
    if !by_password
        || name != user
        || !crate::cloud::signer::constant_time_eq(given, password.expose())
    {
        return iam_error(
            StatusCode::UNAUTHORIZED,
            "The username or password is wrong.",
        );
    }
    let domain = given_user["domain"]["name"].as_str().unwrap_or(name);
    let project = doc["auth"]["scope"]["project"]["id"]
        .as_str()
        .map(str::to_owned);
    let issued = Timestamp::now();
    let expires = issued + TOKEN_LIFETIME;
    let token = {
        let mut raw = [0u8; 48];
        rand::Rng::fill(&mut rand::rng(), &mut raw);
        // Real tokens are long opaque strings starting "MII".
        format!("MIIsim{}", hex::encode(raw))
    };
    sim.store().tokens.insert(token.clone(), expires);
    let iam_time = |t: Timestamp| t.strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string();
    let mut token_body = json!({
        "expires_at": iam_time(expires),
        "issued_at": iam_time(issued),
        "methods": ["password"],
        "user": {"name": name, "id": "0c5e6d0b8f8f4b1a9e3c2a1b0f9e8d7c", "domain": {"name": domain, "id": "1d6f7e1c9a9a5c2bae4d3b2c1a0f9e8d"}},
        "catalog": [],
        "roles": [{"name": "te_admin", "id": "0"}],
    });
    if let Some(id) = project {
        token_body["project"] = json!({"id": id, "name": "cn-north-4", "domain": {"name": domain}});
    }
    let mut response = json_response(StatusCode::CREATED, &json!({"token": token_body}));
    if let Ok(value) = HeaderValue::from_str(&token) {
        response.headers_mut().insert("x-subject-token", value);
    }
    response
}

/// An unknown path, as the API gateway answers it.
pub async fn not_found() -> Response {
    ErrorAnswer::new(
        StatusCode::NOT_FOUND,
        "APIG.0101",
        "The API does not exist or has not been published in the environment.",
    )
    .into_response()
}

/// A known path with another method. The gateway has no such API either;
/// the documented status for it is 405.
pub async fn method_not_allowed() -> Response {
    ErrorAnswer::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "APIG.0101",
        "The API does not exist.",
    )
    .into_response()
}
