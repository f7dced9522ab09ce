//! The control surface under `/sim/`: make and change sub-jobs, queue
//! faults, read the transition log and request statistics. No auth, no
//! faults: it is the test's side channel, not the cloud.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use jiff::Timestamp;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::json;
use tokio::time::Instant;

use super::Shared;
use super::answer::{ErrorAnswer, json_response};
use super::faults::FaultRequest;
use crate::cloud::model::{JobType, Status};

/// The most sub-jobs one `POST /sim/jobs` makes.
const MAX_COUNT: u32 = 100_000;

fn bad(msg: impl Into<String>) -> ErrorAnswer {
    ErrorAnswer::new(StatusCode::BAD_REQUEST, "SIM.0400", msg)
}

fn parse<T: DeserializeOwned>(body: &Bytes) -> Result<T, ErrorAnswer> {
    serde_json::from_slice(body).map_err(|e| bad(format!("bad request body: {e}")))
}

#[derive(Deserialize)]
struct CreateJobs {
    project_id: String,
    job_type: String,
    #[serde(default = "one")]
    count: u32,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    error_code: Option<String>,
    #[serde(default)]
    error_message: Option<String>,
}

fn one() -> u32 {
    1
}

/// `POST /sim/jobs`: one parent job with `count` sub-jobs beginning now.
/// They keep their status until told otherwise; unknown projects are made.
pub async fn create_jobs(
    State(sim): State<Arc<Shared>>,
    body: Bytes,
) -> Result<Response, ErrorAnswer> {
    let req: CreateJobs = parse(&body)?;
    if req.project_id.is_empty() || req.job_type.is_empty() {
        return Err(bad("project_id and job_type must not be empty"));
    }
    if !(1..=MAX_COUNT).contains(&req.count) {
        return Err(bad(format!("count must be in 1..={MAX_COUNT}")));
    }
    let status = Status::from(req.status.unwrap_or_else(|| "WAITING".to_owned()));
    let job_type = JobType::from(req.job_type);
    let now = Timestamp::now();
    let mut store = sim.store();
    let job_id = store.control.uuid();
    let mut ids = Vec::with_capacity(req.count as usize);
    for _ in 0..req.count {
        let mut job =
            store
                .control
                .sub_job(&req.project_id, &job_type, &job_id, status.clone(), now);
        if status.is_terminal() {
            job.end_time = Some(crate::cloud::model::ApiTime::from_timestamp(now));
        }
        job.error_code.clone_from(&req.error_code);
        job.error_message.clone_from(&req.error_message);
        ids.push(job.id.clone());
        store.insert(
            super::generator::NewSubJob { job, plan: vec![] },
            Instant::now(),
        );
    }
    Ok(json_response(
        StatusCode::OK,
        &json!({"job_id": job_id, "sub_job_ids": ids}),
    ))
}

#[derive(Deserialize)]
struct UpdateJob {
    status: String,
    #[serde(default)]
    error_code: Option<String>,
    #[serde(default)]
    error_message: Option<String>,
}

/// `POST /sim/jobs/{sub_job_id}`: set a status (any text: the cloud adds
/// values); answers with the sub-job as the API would list it.
pub async fn update_job(
    State(sim): State<Arc<Shared>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ErrorAnswer> {
    let req: UpdateJob = parse(&body)?;
    if req.status.is_empty() {
        return Err(bad("status must not be empty"));
    }
    let job = sim
        .store()
        .set_status(
            &id,
            Status::from(req.status),
            req.error_code,
            req.error_message,
            Timestamp::now(),
        )
        .ok_or_else(|| no_such_job(&id))?;
    Ok(json_response(StatusCode::OK, &json!(job)))
}

/// `DELETE /sim/jobs/{sub_job_id}`.
pub async fn delete_job(
    State(sim): State<Arc<Shared>>,
    Path(id): Path<String>,
) -> Result<Response, ErrorAnswer> {
    if sim.store().delete(&id) {
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        Err(no_such_job(&id))
    }
}

fn no_such_job(id: &str) -> ErrorAnswer {
    ErrorAnswer::new(
        StatusCode::NOT_FOUND,
        "SIM.0404",
        format!("no sub-job {id}"),
    )
}

/// `POST /sim/faults`: queue one fault behind those already queued.
pub async fn add_fault(
    State(sim): State<Arc<Shared>>,
    body: Bytes,
) -> Result<Response, ErrorAnswer> {
    let fault = parse::<FaultRequest>(&body)?.validate().map_err(bad)?;
    let mut store = sim.store();
    store.faults.push_back(fault);
    Ok(json_response(
        StatusCode::OK,
        &json!({"queued": store.faults.len()}),
    ))
}

/// `DELETE /sim/faults`: forget every queued fault.
pub async fn clear_faults(State(sim): State<Arc<Shared>>) -> Response {
    sim.store().faults.clear();
    StatusCode::NO_CONTENT.into_response()
}

#[derive(Deserialize)]
pub struct EventsQuery {
    /// Skip this many events: a poller passes how many it has seen, so
    /// long runs do not resend the whole log every time.
    #[serde(default)]
    since: usize,
}

/// `GET /sim/events[?since=N]`: every transition so far, oldest first.
pub async fn events(
    State(sim): State<Arc<Shared>>,
    axum::extract::Query(query): axum::extract::Query<EventsQuery>,
) -> Response {
    let store = sim.store();
    let events = store.events();
    let body =
        serde_json::to_value(events.get(query.since..).unwrap_or_default()).unwrap_or_default();
    json_response(StatusCode::OK, &body)
}

/// `GET /sim/stats`: cloud-surface requests by status and route.
pub async fn stats(State(sim): State<Arc<Shared>>) -> Response {
    let body = serde_json::to_value(&sim.store().stats).unwrap_or_default();
    json_response(StatusCode::OK, &body)
}

/// Anything else under `/sim/`.
pub async fn not_found() -> Response {
    ErrorAnswer::new(
        StatusCode::NOT_FOUND,
        "SIM.0404",
        "no such control endpoint",
    )
    .into_response()
}
