//! The simulator over real loopback HTTP: validation, paging, auth modes,
//! faults, the control surface and determinism (docs/simulator.md).

use std::time::{Duration, Instant};

use jobwatch::cloud::signer::{self, RequestToSign};
use jobwatch::secret::Secret;
use jobwatch::sim::{RunningSim, SimOptions};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

const LIST: &str = "/v1/demo/app-server-sub-jobs";

/// A simulator on port 0 and a client for it; cancelled when dropped.
struct Sim {
    url: String,
    addr: std::net::SocketAddr,
    http: reqwest::Client,
    shutdown: CancellationToken,
    running: Option<RunningSim>,
}

impl Drop for Sim {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn sim(opts: SimOptions) -> Sim {
    jobwatch::install_crypto_provider();
    let shutdown = CancellationToken::new();
    let running = jobwatch::sim::start(opts, shutdown.clone())
        .await
        .expect("simulator starts");
    Sim {
        url: running.url(),
        addr: running.addr(),
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("client"),
        shutdown,
        running: Some(running),
    }
}

fn history(n: u32) -> SimOptions {
    SimOptions {
        history: n,
        ..SimOptions::default()
    }
}

impl Sim {
    async fn get(&self, path_and_query: &str) -> reqwest::Response {
        self.http
            .get(format!("{}{path_and_query}", self.url))
            .send()
            .await
            .expect("request")
    }

    /// Status and JSON body; the request id must be there on every answer.
    async fn get_json(&self, path_and_query: &str) -> (StatusCode, Value) {
        let response = self.get(path_and_query).await;
        let status = response.status();
        let id = response
            .headers()
            .get("x-request-id")
            .expect("X-Request-Id");
        assert_eq!(id.len(), 32, "{id:?}");
        (status, response.json().await.expect("JSON body"))
    }

    async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        let response = self
            .http
            .post(format!("{}{path}", self.url))
            .json(&body)
            .send()
            .await
            .expect("request");
        let status = response.status();
        let text = response.text().await.expect("body");
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn fault(&self, body: Value) {
        let (status, _) = self.post("/sim/faults", body).await;
        assert_eq!(status, StatusCode::OK);
    }

    /// Every item of one job type, paging with `limit`.
    async fn all_items(&self, job_type: &str, limit: u32) -> Vec<Value> {
        let mut items = Vec::new();
        let mut offset = 0;
        loop {
            let (status, page) = self
                .get_json(&format!(
                    "{LIST}?job_type={job_type}&offset={offset}&limit={limit}"
                ))
                .await;
            assert_eq!(status, StatusCode::OK, "{page}");
            let got = page["items"].as_array().unwrap().clone();
            offset += got.len();
            items.extend(got);
            if offset as u64 >= page["count"].as_u64().unwrap() {
                return items;
            }
        }
    }
}

fn ids(items: &[Value]) -> Vec<String> {
    items
        .iter()
        .map(|i| i["id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn every_validation_rule_has_its_status_and_code() {
    let s = sim(history(2)).await;
    let cases: &[(&str, u16, &str)] = &[
        (LIST, 400, "WKS.00010001"),
        (&format!("{LIST}?job_type="), 400, "WKS.00010001"),
        (
            &format!("{LIST}?job_type=RESIZE_SERVER"),
            400,
            "WKS.00010002",
        ),
        (
            &format!("{LIST}?job_type=CREATE_SERVER&limit=0"),
            400,
            "WKS.00010002",
        ),
        (
            &format!("{LIST}?job_type=CREATE_SERVER&limit=101"),
            400,
            "WKS.00010002",
        ),
        (
            &format!("{LIST}?job_type=CREATE_SERVER&limit=ten"),
            400,
            "WKS.00010002",
        ),
        (
            &format!("{LIST}?job_type=CREATE_SERVER&offset=-1"),
            400,
            "WKS.00010002",
        ),
        (
            &format!("{LIST}?job_type=CREATE_SERVER&offset=x"),
            400,
            "WKS.00010002",
        ),
        (
            &format!("{LIST}?job_type=CREATE_SERVER&status=PAUSED"),
            400,
            "WKS.00010002",
        ),
        (
            "/v1/nobody/app-server-sub-jobs?job_type=CREATE_SERVER",
            404,
            "WKS.00010404",
        ),
        (
            "/v1/demo/app-server-sub-jobs/actions/count?job_type=CREATE_SERVER,NOPE",
            400,
            "WKS.00010002",
        ),
        (
            "/v1/demo/app-server-sub-jobs/actions/count?status=x",
            400,
            "WKS.00010002",
        ),
        (
            "/v1/nobody/app-server-sub-jobs/actions/count",
            404,
            "WKS.00010404",
        ),
        ("/v1/demo/servers", 404, "APIG.0101"),
        ("/", 404, "APIG.0101"),
    ];
    for (path, status, code) in cases {
        let (got, body) = s.get_json(path).await;
        assert_eq!(got.as_u16(), *status, "{path}: {body}");
        assert_eq!(body["error_code"], *code, "{path}: {body}");
        assert!(body["error_msg"].as_str().is_some_and(|m| !m.is_empty()));
    }
    for method in [
        reqwest::Method::POST,
        reqwest::Method::DELETE,
        reqwest::Method::PUT,
    ] {
        let response = s
            .http
            .request(
                method.clone(),
                format!("{}{LIST}?job_type=CREATE_SERVER", s.url),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.status(),
            StatusCode::METHOD_NOT_ALLOWED,
            "{method}"
        );
        assert!(response.headers().contains_key("x-request-id"));
        let body: Value = response.json().await.unwrap();
        assert!(body["error_code"].is_string());
    }
}

#[tokio::test]
async fn pages_cover_everything_newest_first() {
    let s = sim(history(25)).await;
    let (status, page) = s
        .get_json(&format!("{LIST}?job_type=CREATE_SERVER&limit=100"))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page["count"], 25);
    let all = page["items"].as_array().unwrap().clone();
    assert_eq!(all.len(), 25);
    // begin_time descending, ties by id ascending.
    for pair in all.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        let ta = jobwatch::cloud::model::parse_api_time(a["begin_time"].as_str().unwrap());
        let tb = jobwatch::cloud::model::parse_api_time(b["begin_time"].as_str().unwrap());
        assert!(ta > tb || (ta == tb && a["id"].as_str() < b["id"].as_str()));
    }
    for item in &all {
        assert_eq!(item["project_id"], "demo");
        assert_eq!(item["job_type"], "CREATE_SERVER");
        assert!(item["end_time"].is_string(), "history is terminal");
        assert!(item["job_id"].is_string());
        assert!(item["job_resource_info"]["resource_id"].is_string());
    }

    // Default limit is 10; paging by 7 and by 1 gives the same sequence.
    let (_, first) = s.get_json(&format!("{LIST}?job_type=CREATE_SERVER")).await;
    assert_eq!(first["items"].as_array().unwrap().len(), 10);
    assert_eq!(ids(&s.all_items("CREATE_SERVER", 7).await), ids(&all));
    assert_eq!(ids(&s.all_items("CREATE_SERVER", 1).await), ids(&all));

    let (_, end) = s
        .get_json(&format!("{LIST}?job_type=CREATE_SERVER&offset=25"))
        .await;
    assert_eq!(end["count"], 25);
    assert_eq!(end["items"], json!([]));
    let (_, far) = s
        .get_json(&format!("{LIST}?job_type=CREATE_SERVER&offset=1000000"))
        .await;
    assert_eq!(far["items"], json!([]));

    // Filters: status and job_id narrow both items and count.
    let failed = all.iter().filter(|i| i["status"] == "FAILED").count();
    let (_, only_failed) = s
        .get_json(&format!(
            "{LIST}?job_type=CREATE_SERVER&status=FAILED&limit=100"
        ))
        .await;
    assert_eq!(only_failed["count"], failed as u64);
    let job_id = all[0]["job_id"].as_str().unwrap();
    let (_, by_job) = s
        .get_json(&format!(
            "{LIST}?job_type=CREATE_SERVER&job_id={job_id}&limit=100"
        ))
        .await;
    let siblings = all.iter().filter(|i| i["job_id"] == job_id).count();
    assert_eq!(by_job["count"], siblings as u64);

    // The count endpoint: one type, a comma list, all types.
    let count = |q: &str| {
        let s = &s;
        let q = q.to_owned();
        async move {
            let (status, body) = s
                .get_json(&format!("/v1/demo/app-server-sub-jobs/actions/count{q}"))
                .await;
            assert_eq!(status, StatusCode::OK, "{body}");
            body["count"].as_u64().unwrap()
        }
    };
    assert_eq!(count("?job_type=CREATE_SERVER").await, 25);
    assert_eq!(count("?job_type=CREATE_SERVER%2CDELETE_SERVER").await, 50);
    assert_eq!(
        count("").await,
        25 * jobwatch::cloud::model::JobType::KNOWN.len() as u64
    );
    assert_eq!(
        count("?job_type=CREATE_SERVER&status=FAILED").await,
        failed as u64
    );
}

#[tokio::test]
async fn an_empty_project_has_count_zero() {
    let s = sim(SimOptions {
        projects: vec!["a".into(), "b".into()],
        ..SimOptions::default()
    })
    .await;
    for p in ["a", "b"] {
        let (status, page) = s
            .get_json(&format!(
                "/v1/{p}/app-server-sub-jobs?job_type=SCHEDULED_TASK&limit=1"
            ))
            .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(page, json!({"count": 0, "items": []}));
    }
    let (status, _) = s.get_json(&format!("{LIST}?job_type=CREATE_SERVER")).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "demo is only the default");
}

fn aksk_opts() -> SimOptions {
    SimOptions {
        history: 3,
        ak: Some("SIMAK".into()),
        sk: Some(Secret::new("SIMSK")),
        ..SimOptions::default()
    }
}

/// Sends GET `path?query` signed at `date` with `ak`/`sk`; `tamper` may
/// change the query after signing.
async fn signed_get(
    s: &Sim,
    path: &str,
    query: &[(&str, &str)],
    date: jiff::Timestamp,
    (ak, sk): (&str, &str),
    tamper: Option<(&str, &str)>,
) -> (StatusCode, Value) {
    let host = s.addr.to_string();
    let pairs: Vec<(String, String)> = query
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let headers = vec![
        ("Content-Type".to_owned(), "application/json".to_owned()),
        ("X-Project-Id".to_owned(), "demo".to_owned()),
        ("X-Sdk-Date".to_owned(), signer::sdk_date(date)),
    ];
    let signature = signer::sign(
        &RequestToSign {
            method: "GET",
            host: &host,
            path,
            query: &pairs,
            headers: &headers,
            body: b"",
        },
        ak,
        sk,
    );
    let sent: Vec<(String, String)> = pairs
        .into_iter()
        .map(|(k, v)| match tamper {
            Some((tk, tv)) if tk == k => (k, tv.to_owned()),
            _ => (k, v),
        })
        .collect();
    let mut request = s
        .http
        .get(format!("{}{path}", s.url))
        .query(&sent)
        .header("Authorization", signature.authorization);
    for (name, value) in &headers {
        request = request.header(name, value);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    (status, response.json().await.unwrap())
}

#[tokio::test]
async fn aksk_mode_verifies_signatures() {
    let s = sim(aksk_opts()).await;
    let now = jiff::Timestamp::now();
    let good = ("SIMAK", "SIMSK");
    let query = [("job_type", "CREATE_SERVER"), ("limit", "2")];
    let (status, body) = signed_get(&s, LIST, &query, now, good, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["count"], 3);

    // A value that needs encoding signs and verifies too (space is %20).
    let (status, body) = signed_get(
        &s,
        LIST,
        &[("job_type", "CREATE_SERVER"), ("job_id", "a b/c")],
        now,
        good,
        None,
    )
    .await;
    assert_eq!(
        (status, &body["count"]),
        (StatusCode::OK, &json!(0)),
        "{body}"
    );

    let reject = |(status, body): (StatusCode, Value), why: &str| {
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{why}: {body}");
        assert_eq!(body["error_code"], "APIG.0301", "{why}");
        assert!(
            body["error_msg"]
                .as_str()
                .unwrap()
                .starts_with("Incorrect IAM authentication information"),
            "{why}"
        );
    };
    reject(
        signed_get(&s, LIST, &query, now, good, Some(("limit", "3"))).await,
        "tampered query",
    );
    reject(
        signed_get(
            &s,
            LIST,
            &query,
            now - jiff::SignedDuration::from_mins(20),
            good,
            None,
        )
        .await,
        "stale date",
    );
    reject(
        signed_get(
            &s,
            LIST,
            &query,
            now + jiff::SignedDuration::from_mins(20),
            good,
            None,
        )
        .await,
        "future date",
    );
    reject(
        signed_get(&s, LIST, &query, now, ("SIMAK", "wrong"), None).await,
        "wrong sk",
    );
    reject(
        signed_get(&s, LIST, &query, now, ("OTHER", "SIMSK"), None).await,
        "wrong ak",
    );
    reject(
        s.get_json(&format!("{LIST}?job_type=CREATE_SERVER")).await,
        "unsigned",
    );
    // 14 minutes off is still inside the gateway's window.
    let (status, _) = signed_get(
        &s,
        LIST,
        &query,
        now - jiff::SignedDuration::from_mins(14),
        good,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    // The control surface needs no credentials.
    let (status, _) = s.get_json("/sim/stats").await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn token_mode_wants_the_token() {
    let s = sim(SimOptions {
        token: Some(Secret::new("T0KEN")),
        ..history(1)
    })
    .await;
    let url = format!("{}{LIST}?job_type=CREATE_SERVER", s.url);
    let with = |token: &'static str| s.http.get(&url).header("X-Auth-Token", token).send();
    assert_eq!(with("T0KEN").await.unwrap().status(), StatusCode::OK);
    let wrong = with("nope").await.unwrap();
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    let body: Value = wrong.json().await.unwrap();
    assert_eq!(body["error_code"], "APIG.0301");
    assert_eq!(
        s.http.get(&url).send().await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn iam_issues_tokens_the_cloud_accepts() {
    let s = sim(SimOptions {
        iam_user: Some("alice".into()),
        iam_password: Some(Secret::new("s3cret")),
        ..history(1)
    })
    .await;
    let body = |password: &str| {
        json!({"auth": {"identity": {"methods": ["password"], "password": {"user": {
            "name": "alice", "password": password, "domain": {"name": "acme"}}}},
            "scope": {"project": {"id": "demo"}}}})
    };
    let response = s
        .http
        .post(format!("{}/v3/auth/tokens", s.url))
        .json(&body("s3cret"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let token = response.headers()["x-subject-token"]
        .to_str()
        .unwrap()
        .to_owned();
    let doc: Value = response.json().await.unwrap();
    let expires: jiff::Timestamp = doc["token"]["expires_at"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let issued: jiff::Timestamp = doc["token"]["issued_at"].as_str().unwrap().parse().unwrap();
    assert_eq!(
        expires.duration_since(issued),
        jiff::SignedDuration::from_hours(24)
    );
    assert_eq!(doc["token"]["project"]["id"], "demo");

    let list = format!("{}{LIST}?job_type=CREATE_SERVER", s.url);
    let with = |t: String| s.http.get(&list).header("X-Auth-Token", t).send();
    assert_eq!(with(token).await.unwrap().status(), StatusCode::OK);
    assert_eq!(
        with("MIIforged".into()).await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );

    let (status, doc) = s.post("/v3/auth/tokens", body("wrong")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(doc["error"]["code"], 401);
}

#[tokio::test]
async fn iam_endpoint_is_absent_without_iam_options() {
    let s = sim(history(0)).await;
    let (status, body) = s.post("/v3/auth/tokens", json!({})).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error_code"], "APIG.0101");
}

#[tokio::test]
async fn status_faults_answer_in_order_then_clear() {
    let s = sim(history(3)).await;
    let list = format!("{LIST}?job_type=CREATE_SERVER");
    s.fault(json!({"fault":"status","status":503,"times":2,"retry_after":1}))
        .await;
    s.fault(json!({"fault":"status","status":429})).await;
    s.fault(json!({"fault":"status","status":500,"error_code":"WKS.X","error_msg":"boom"}))
        .await;
    for _ in 0..2 {
        let response = s.get(&list).await;
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()["retry-after"], "1");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error_code"], "WKS.00129901");
    }
    // Faults apply to the count endpoint as well.
    let (status, body) = s
        .get_json("/v1/demo/app-server-sub-jobs/actions/count")
        .await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(body["error_code"], "APIG.0308");
    assert_eq!(body["error_msg"], jobwatch::sim::THROTTLE_MSG);
    let (status, body) = s.get_json(&list).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(body, json!({"error_code":"WKS.X","error_msg":"boom"}));
    assert_eq!(s.get(&list).await.status(), StatusCode::OK);

    s.fault(json!({"fault":"status","status":503,"times":5}))
        .await;
    let response = s
        .http
        .delete(format!("{}/sim/faults", s.url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_eq!(s.get(&list).await.status(), StatusCode::OK);

    let (status, body) = s.post("/sim/faults", json!({"fault":"gremlins"})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
}

#[tokio::test]
async fn body_faults_break_the_body_not_the_framing() {
    let s = sim(history(5)).await;
    let list = format!("{LIST}?job_type=CREATE_SERVER&limit=5");
    let whole = s.get(&list).await.text().await.unwrap();

    s.fault(json!({"fault":"malformed"})).await;
    let response = s.get(&list).await;
    assert_eq!(response.status(), StatusCode::OK);
    let text = response.text().await.expect("a complete body");
    assert!(serde_json::from_str::<Value>(&text).is_err(), "{text}");

    s.fault(json!({"fault":"truncated"})).await;
    let response = s.get(&list).await;
    assert_eq!(response.status(), StatusCode::OK);
    let text = response.text().await.expect("correctly framed");
    assert!(!text.is_empty() && text.len() < whole.len());
    assert!(whole.starts_with(&text));
    assert!(serde_json::from_str::<Value>(&text).is_err());

    s.fault(json!({"fault":"delay","ms":300})).await;
    let started = Instant::now();
    assert_eq!(s.get(&list).await.status(), StatusCode::OK);
    assert!(started.elapsed() >= Duration::from_millis(300));
}

#[tokio::test]
async fn reset_drops_the_connection_without_an_answer() {
    let s = sim(history(1)).await;
    s.fault(json!({"fault":"reset","times":2})).await;
    let url = format!("{}{LIST}?job_type=CREATE_SERVER", s.url);
    for _ in 0..2 {
        let err = s.http.get(&url).send().await.expect_err("no response");
        assert!(!err.is_timeout(), "{err:?}");
        assert!(err.status().is_none());
    }
    assert_eq!(s.get(&url[s.url.len()..]).await.status(), StatusCode::OK);
    let (_, stats) = s.get_json("/sim/stats").await;
    assert_eq!(stats["by_status"]["reset"], 2);
}

#[tokio::test]
async fn shift_inserts_a_job_between_two_page_reads() {
    let s = sim(history(10)).await;
    let page = |offset: u32| {
        let s = &s;
        async move {
            let (status, body) = s
                .get_json(&format!(
                    "{LIST}?job_type=DELETE_SERVER&limit=5&offset={offset}"
                ))
                .await;
            assert_eq!(status, StatusCode::OK);
            body
        }
    };
    // A shift waits for a list request: the count endpoint passes it by.
    s.fault(json!({"fault":"shift"})).await;
    let (_, c) = s
        .get_json("/v1/demo/app-server-sub-jobs/actions/count?job_type=DELETE_SERVER")
        .await;
    assert_eq!(c["count"], 10);
    let first = page(0).await;
    assert_eq!(first["count"], 10, "answered before the insert");
    let second = page(5).await;
    assert_eq!(second["count"], 11);
    // Everything moved down by one: page 2 starts with page 1's last item.
    assert_eq!(second["items"][0]["id"], first["items"][4]["id"]);
    let newest = page(0).await;
    assert_eq!(newest["items"][0]["status"], "WAITING");
    assert!(newest["items"][0].get("end_time").is_none());
}

#[tokio::test]
async fn control_surface_round_trip_and_events() {
    let s = sim(history(0)).await;
    let (status, made) = s
        .post(
            "/sim/jobs",
            json!({"project_id":"p-new","job_type":"CREATE_SERVER","count":3,"status":"WAITING"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{made}");
    let job_id = made["job_id"].as_str().unwrap().to_owned();
    let sub: Vec<String> = made["sub_job_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(sub.len(), 3);
    let list = "/v1/p-new/app-server-sub-jobs?job_type=CREATE_SERVER";
    let (status, page) = s.get_json(list).await;
    assert_eq!(status, StatusCode::OK, "an unknown project is created");
    assert_eq!(page["count"], 3);
    for item in page["items"].as_array().unwrap() {
        assert_eq!(item["status"], "WAITING");
        assert_eq!(item["job_id"], job_id.as_str());
        assert!(item.get("end_time").is_none());
    }

    let (status, job) = s
        .post(
            &format!("/sim/jobs/{}", sub[0]),
            json!({"status":"FAILED","error_code":"WKS.00129901","error_message":"down"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(job["status"], "FAILED");
    assert!(job["end_time"].is_string());
    let (_, page) = s.get_json(&format!("{list}&status=FAILED")).await;
    assert_eq!(page["count"], 1);
    assert_eq!(page["items"][0]["error_code"], "WKS.00129901");
    assert_eq!(page["items"][0]["error_message"], "down");

    // The cloud adds statuses before clients learn them.
    let (status, job) = s
        .post(&format!("/sim/jobs/{}", sub[1]), json!({"status":"PAUSED"}))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(job["status"], "PAUSED");
    // Same status again: not a transition.
    s.post(&format!("/sim/jobs/{}", sub[1]), json!({"status":"PAUSED"}))
        .await;

    let delete = |id: String| s.http.delete(format!("{}/sim/jobs/{id}", s.url)).send();
    assert_eq!(
        delete(sub[2].clone()).await.unwrap().status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        delete(sub[2].clone()).await.unwrap().status(),
        StatusCode::NOT_FOUND
    );
    let (_, page) = s.get_json(list).await;
    assert_eq!(page["count"], 2);
    let (status, _) = s
        .post("/sim/jobs/no-such-id", json!({"status":"FAILED"}))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = s.post("/sim/jobs", json!({"project_id":"p"})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    let (_, events) = s.get_json("/sim/events").await;
    let seen: Vec<(String, Value, Value)> = events
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            assert_eq!(e["project_id"], "p-new");
            assert_eq!(e["job_type"], "CREATE_SERVER");
            assert!(e["at"].is_string());
            (
                e["sub_job_id"].as_str().unwrap().to_owned(),
                e["from"].clone(),
                e["to"].clone(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        vec![
            (sub[0].clone(), Value::Null, json!("WAITING")),
            (sub[1].clone(), Value::Null, json!("WAITING")),
            (sub[2].clone(), Value::Null, json!("WAITING")),
            (sub[0].clone(), json!("WAITING"), json!("FAILED")),
            (sub[1].clone(), json!("WAITING"), json!("PAUSED")),
        ]
    );
    let (_, tail) = s.get_json("/sim/events?since=4").await;
    assert_eq!(tail.as_array().unwrap().len(), 1);
    assert_eq!(tail[0]["to"], "PAUSED");
    let (_, none) = s.get_json("/sim/events?since=99").await;
    assert_eq!(none, json!([]));
}

#[tokio::test]
async fn stats_count_cloud_requests_by_status_and_route() {
    let s = sim(history(1)).await;
    s.get(&format!("{LIST}?job_type=CREATE_SERVER")).await;
    s.get(&format!("{LIST}?job_type=CREATE_SERVER&limit=0"))
        .await;
    s.get("/v1/demo/app-server-sub-jobs/actions/count").await;
    s.get("/nowhere").await;
    s.get("/sim/events").await; // the control surface is not counted
    let (_, stats) = s.get_json("/sim/stats").await;
    assert_eq!(
        stats,
        json!({
            "requests": 4,
            "by_status": {"200": 2, "400": 1, "404": 1},
            "by_path": {
                "/v1/{project_id}/app-server-sub-jobs": 2,
                "/v1/{project_id}/app-server-sub-jobs/actions/count": 1,
                "unmatched": 1
            }
        })
    );
}

#[tokio::test]
async fn the_generator_runs_jobs_through_their_lifecycle() {
    let s = sim(SimOptions {
        rate: 50.0,
        fanout: 2,
        step_ms: 10,
        fail_ratio: 0.5,
        ..SimOptions::default()
    })
    .await;
    // Poll until some generated sub-job has finished, or give up.
    let deadline = Instant::now() + Duration::from_secs(10);
    let events = loop {
        let (_, events) = s.get_json("/sim/events").await;
        let done = events
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["from"] == "RUNNING" || e["from"] == "ROLLBACK");
        if done {
            break events;
        }
        assert!(Instant::now() < deadline, "no sub-job finished: {events}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // Every transition follows the lifecycle.
    for e in events.as_array().unwrap() {
        let step = (e["from"].as_str(), e["to"].as_str().unwrap());
        assert!(
            matches!(
                step,
                (None, "WAITING")
                    | (Some("WAITING"), "RUNNING")
                    | (
                        Some("RUNNING"),
                        "SUCCESS" | "FAILED" | "ABNORMAL" | "ROLLBACK"
                    )
                    | (Some("ROLLBACK"), "FAILED")
            ),
            "{e}"
        );
    }
}

// Regression: it compared whole resource names, whose time stamp follows
// the wall clock, and failed when the two starts straddled a second.
#[tokio::test]
async fn same_seed_same_data() {
    let snapshot = |seed: u64| async move {
        let s = sim(SimOptions {
            seed,
            history: 4,
            projects: vec!["x".into(), "y".into()],
            ..SimOptions::default()
        })
        .await;
        let mut out = Vec::new();
        for p in ["x", "y"] {
            for t in jobwatch::cloud::model::JobType::KNOWN {
                let (_, page) = s
                    .get_json(&format!(
                        "/v1/{p}/app-server-sub-jobs?job_type={t}&limit=100"
                    ))
                    .await;
                for item in page["items"].as_array().unwrap() {
                    let mut resource = item["job_resource_info"].clone();
                    // Names carry their begin time, which is relative to
                    // the simulator's start ("APS-20261201093531-KSDUNVFQAE"):
                    // two starts a second apart differ there, by design.
                    if let Some(name) = resource["resource_name"].as_str() {
                        let parts: Vec<&str> = name.split('-').collect();
                        assert_eq!(parts.len(), 3, "{name}");
                        assert_eq!(parts[1].len(), 14, "a yyyymmddHHMMSS stamp: {name}");
                        resource["resource_name"] = format!("{}-*-{}", parts[0], parts[2]).into();
                    }
                    out.push((
                        item["id"].clone(),
                        item["status"].clone(),
                        item["job_id"].clone(),
                        resource,
                        item["error_code"].clone(),
                    ));
                }
            }
        }
        out
    };
    let a = snapshot(42).await;
    assert_eq!(
        a.len(),
        2 * 4 * jobwatch::cloud::model::JobType::KNOWN.len()
    );
    assert_eq!(a, snapshot(42).await);
    assert_ne!(a, snapshot(43).await);
}

#[tokio::test]
async fn shutdown_ends_every_task() {
    let mut s = sim(SimOptions {
        rate: 5.0,
        ..history(1)
    })
    .await;
    // An idle keep-alive connection must not hold shutdown up.
    assert_eq!(
        s.get(&format!("{LIST}?job_type=CREATE_SERVER"))
            .await
            .status(),
        StatusCode::OK
    );
    s.shutdown.cancel();
    let running = s.running.take().unwrap();
    tokio::time::timeout(Duration::from_secs(5), running.wait())
        .await
        .expect("the simulator stops");
}

#[tokio::test]
async fn bad_options_are_invalid_input() {
    for opts in [
        SimOptions {
            rate: -1.0,
            ..SimOptions::default()
        },
        SimOptions {
            fail_ratio: 1.5,
            ..SimOptions::default()
        },
        SimOptions {
            ak: Some("a".into()),
            ..SimOptions::default()
        },
    ] {
        let err = jobwatch::sim::start(opts, CancellationToken::new())
            .await
            .expect_err("rejected");
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
    }
}

#[tokio::test]
async fn the_binary_prints_its_address_first_and_exits_cleanly_on_sigterm() {
    use tokio::io::AsyncBufReadExt;
    const WITHIN: Duration = Duration::from_secs(30);
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_jobwatch"));
    command
        .args(["sim", "--listen", "127.0.0.1:0", "--history", "1"])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true);
    for name in crate::support::inherited_settings() {
        command.env_remove(name);
    }
    let mut child = command.spawn().expect("jobwatch runs");
    let mut line = String::new();
    let mut stdout = tokio::io::BufReader::new(child.stdout.take().expect("piped stdout"));
    let read = tokio::time::timeout(WITHIN, stdout.read_line(&mut line))
        .await
        .expect("a first line within 30 s");
    assert!(
        read.is_ok() && line.starts_with("listening on http://"),
        "unexpected first line {line:?} ({read:?})"
    );
    let addr: std::net::SocketAddr = line
        .trim_end()
        .trim_start_matches("listening on http://")
        .parse()
        .expect("an address");
    assert_ne!(addr.port(), 0);
    // SIGTERM straight after the first line: handlers are already in place.
    let killed = tokio::process::Command::new("kill")
        .args(["-TERM", &child.id().expect("running").to_string()])
        .status()
        .await
        .expect("kill runs");
    assert!(killed.success());
    let status = tokio::time::timeout(WITHIN, child.wait())
        .await
        .expect("it exits within 30 s of SIGTERM")
        .expect("exit status");
    assert_eq!(status.code(), Some(0), "{status:?}");
}
