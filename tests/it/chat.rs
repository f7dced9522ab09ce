//! The chat notifier kinds against real HTTP receivers on loopback: what
//! each receiver gets (body shape, signature, size), and what each of its
//! documented answers means for delivery.
//!
//! A receiver is a small axum server, bound before it is spawned, that hands
//! every request back through a channel and answers from a script.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, KeyInit, Mac};
use jiff::tz::TimeZone;
use jobwatch::cloud::model::{ApiTime, JobType, Status};
use jobwatch::notify::chat::ChatNotifier;
use jobwatch::notify::kinds::dingtalk::DingTalk;
use jobwatch::notify::kinds::discord::Discord;
use jobwatch::notify::kinds::feishu::Feishu;
use jobwatch::notify::kinds::slack::Slack;
use jobwatch::notify::kinds::teams::Teams;
use jobwatch::notify::kinds::wecom::WeCom;
use jobwatch::notify::kinds::{dingtalk, discord, feishu, slack, teams, wecom};
use jobwatch::notify::{Attempt, GroupInfo, Message, Notifier, text};
use jobwatch::retry::{Retryable, Verdict};
use jobwatch::secret::{Secret, SecretUrl};
use jobwatch::watch::{Event, EventKind};
use serde_json::{Value, json};
use sha2::Sha256;
use tokio::sync::mpsc;
use url::Url;

// ---------------------------------------------------------------- fixtures

fn tz() -> TimeZone {
    TimeZone::fixed(jiff::tz::offset(8))
}

fn http() -> reqwest::Client {
    jobwatch::install_crypto_provider();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("a client builds once the crypto provider is installed")
}

/// Sub-job `i` of a CREATE_SERVER job, now in `to`; failures carry the
/// API's error (in Chinese, so byte limits meet multi-byte text).
fn event(i: usize, to: &str) -> Event {
    let failed = to == "FAILED" || to == "ABNORMAL";
    Event {
        event_id: format!("ev{i:04}"),
        kind: EventKind::Changed,
        target: String::new(),
        account: "default".into(),
        project_id: "0a1b2c3d".into(),
        job_type: JobType::CreateServer,
        sub_job_id: format!("sub-{i:04}"),
        job_id: Some("8f2e0c".into()),
        resource_id: Some(format!("res-{i:04}")),
        resource_name: Some(format!("APS-20220902093902-{i:05}")),
        from: Some(Status::Running),
        to: Some(Status::from(to)),
        error_code: failed.then(|| "WKS.00129901".into()),
        error_message: failed.then(|| "创建云服务器失败 (create server failed)".into()),
        begin_time: Some(ApiTime::parse("2026-11-29T02:00:00Z")),
        end_time: Some(ApiTime::parse("2026-11-29T02:40:43.858Z")),
        observed_at: "2026-11-29T02:40:50Z".parse().expect("a valid literal"),
    }
}

fn single(to: &str) -> Message {
    Message {
        test: false,
        id: "ev0001".into(),
        group: None,
        events: vec![event(1, to)],
    }
}

/// 500 events, every tenth FAILED: far more than any receiver takes.
fn big_group() -> Message {
    let events: Vec<Event> = (0..500)
        .map(|i| event(i, if i % 10 == 0 { "FAILED" } else { "SUCCESS" }))
        .collect();
    Message {
        test: false,
        id: "group-1".into(),
        group: Some(GroupInfo {
            job: None,
            id: "group-1".into(),
            key: "route".into(),
            count: events.len(),
        }),
        events,
    }
}

/// How many events a rendered text lists, and the N of its "… and N more".
fn listed_and_more(text: &str) -> (usize, usize) {
    let listed = text.matches("APS-20220902093902-").count();
    let more = text
        .rsplit("… and ")
        .next()
        .and_then(|tail| tail.split(" more").next())
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no \"… and N more\" in {text:?}"));
    (listed, more)
}

fn assert_cut_right(text: &str, total: usize) {
    let (listed, more) = listed_and_more(text);
    assert!(listed > 0, "nothing listed");
    assert_eq!(listed + more, total, "listed {listed} + more {more}");
}

fn throttled_for(attempt: &Attempt) -> Option<Duration> {
    match &attempt.verdict {
        Verdict::Retry(Retryable {
            throttled: true,
            retry_after,
            ..
        }) => *retry_after,
        other => panic!("expected a throttle, got {other:?} ({})", attempt.answer),
    }
}

// ---------------------------------------------------------------- receiver

/// What a receiver got.
#[derive(Debug)]
struct Got {
    path: String,
    query: Option<String>,
    headers: HeaderMap,
    raw: Bytes,
}

impl Got {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.raw).expect("the notifier sent JSON")
    }

    fn query_pairs(&self) -> Vec<(String, String)> {
        let q = self.query.clone().unwrap_or_default();
        url::form_urlencoded::parse(q.as_bytes())
            .into_owned()
            .collect()
    }

    fn query(&self, key: &str) -> Option<String> {
        self.query_pairs()
            .into_iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v)
    }
}

/// One scripted answer.
struct Reply {
    status: u16,
    headers: Vec<(&'static str, &'static str)>,
    body: String,
}

fn reply(status: u16, body: impl Into<String>) -> Reply {
    Reply {
        status,
        headers: Vec::new(),
        body: body.into(),
    }
}

struct Shared {
    script: Mutex<VecDeque<Reply>>,
    got: mpsc::UnboundedSender<Got>,
}

struct Receiver {
    base: Url,
    got: mpsc::UnboundedReceiver<Got>,
}

impl Receiver {
    /// Binds first, then serves, so the address is ready when this returns.
    async fn start(script: Vec<Reply>) -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("loopback bind");
        let addr = listener.local_addr().expect("a bound address");
        let (tx, rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            script: Mutex::new(script.into()),
            got: tx,
        });
        let app = Router::new().fallback(answer).with_state(shared);
        tokio::spawn(async move {
            axum::serve(listener, app)
                .await
                .expect("the receiver serves");
        });
        Receiver {
            base: format!("http://{addr}/").parse().expect("a valid url"),
            got: rx,
        }
    }

    fn url(&self, path_and_query: &str) -> SecretUrl {
        SecretUrl::new(self.base.join(path_and_query).expect("a valid url"))
    }

    /// The next request; a panic, not a hang, if none comes.
    async fn next(&mut self) -> Got {
        tokio::time::timeout(Duration::from_secs(30), self.got.recv())
            .await
            .expect("the notifier sent a request within 30 s")
            .expect("the receiver got a request")
    }
}

async fn answer(
    State(shared): State<Arc<Shared>>,
    uri: Uri,
    headers: HeaderMap,
    raw: Bytes,
) -> Response {
    let _ = shared.got.send(Got {
        path: uri.path().to_owned(),
        query: uri.query().map(str::to_owned),
        headers,
        raw,
    });
    let next = shared
        .script
        .lock()
        .expect("script lock")
        .pop_front()
        .unwrap_or_else(|| reply(500, "script exhausted"));
    let status = StatusCode::from_u16(next.status).expect("a valid status");
    let mut response = (status, next.body).into_response();
    for (name, value) in next.headers {
        response.headers_mut().insert(
            HeaderName::from_static(name),
            HeaderValue::from_static(value),
        );
    }
    response
}

/// A loopback port that refuses connections for as long as the socket
/// lives: bound, so no parallel test can take the port, but never
/// listening.
fn closed_port() -> (tokio::net::TcpSocket, u16) {
    let socket = tokio::net::TcpSocket::new_v4().expect("a socket");
    socket
        .bind("127.0.0.1:0".parse().expect("an address"))
        .expect("loopback bind");
    let port = socket.local_addr().expect("a bound address").port();
    (socket, port)
}

// ---------------------------------------------------------------- the words

#[test]
fn an_event_line_reads_well() {
    let line = text::event_line(&event(7, "FAILED"), &tz());
    assert_eq!(
        line,
        "❌ CREATE_SERVER FAILED on APS-20220902093902-00007 (WKS.00129901: 创建云服务器失败 \
         (create server failed)) project 0a1b2c3d at 2026-11-29 10:40:43 +08:00"
    );
    assert_eq!(
        text::title(&big_group()),
        "❌ CREATE_SERVER: 450 SUCCESS, 50 FAILED"
    );
}

#[test]
fn default_rates_follow_the_receivers() {
    use jobwatch::notify::kind::Kind;
    use jobwatch::notify::kinds::{dingtalk, log, slack, wecom};
    use jobwatch::ratelimit::RateLimit;
    let per_minute = |n| Some(RateLimit::new(n, Duration::from_secs(60)));
    assert_eq!(dingtalk::Settings::DEFAULT_RATE, per_minute(20));
    assert_eq!(wecom::Settings::DEFAULT_RATE, per_minute(20));
    assert_eq!(
        slack::Settings::DEFAULT_RATE,
        Some(RateLimit::new(1, Duration::from_secs(1)))
    );
    assert_eq!(log::Settings::DEFAULT_RATE, None);
}

// ---------------------------------------------------------------- feishu

/// Feishu's algorithm, written here from its documentation: HMAC-SHA256
/// keyed by "{timestamp}\n{secret}" over nothing, base64.
fn feishu_expected_sign(secret: &str, timestamp: &str) -> String {
    let mac = Hmac::<Sha256>::new_from_slice(format!("{timestamp}\n{secret}").as_bytes())
        .expect("any key length");
    BASE64.encode(mac.finalize().into_bytes())
}

#[tokio::test]
async fn feishu_signs_the_card_and_reads_the_body_code() {
    let mut rx = Receiver::start(vec![
        reply(200, r#"{"code":0,"data":{},"msg":"success"}"#),
        reply(
            200,
            r#"{"code":19021,"data":{},"msg":"sign match fail or timestamp is not within one hour from current time"}"#,
        ),
        reply(200, r#"{"code":11232,"data":{},"msg":"frequency limited"}"#),
        Reply {
            headers: vec![("retry-after", "7")],
            ..reply(200, r#"{"code":11232,"data":{},"msg":"frequency limited"}"#)
        },
        reply(500, "upstream broke"),
    ])
    .await;
    let notifier = ChatNotifier {
        url: rx.url("open-apis/bot/v2/hook/hook-token"),
        secret: Some(Secret::new("feishu-s3cret")),
        http: http(),
        tz: tz(),
        template: None,
        kind: Feishu,
    };

    let attempt = notifier.send(&single("FAILED")).await;
    assert_eq!(attempt.verdict, Verdict::Success, "{}", attempt.answer);
    let got = rx.next().await;
    assert_eq!(got.path, "/open-apis/bot/v2/hook/hook-token");
    let body = got.json();
    assert_eq!(body["msg_type"], "interactive");
    assert_eq!(body["card"]["header"]["template"], "red");
    let title = body["card"]["header"]["title"]["content"]
        .as_str()
        .expect("a title");
    assert!(
        title.contains("CREATE_SERVER FAILED on APS-20220902093902-00001"),
        "{title}"
    );
    let content = body["card"]["elements"][0]["text"]["content"]
        .as_str()
        .expect("content");
    assert!(content.contains("WKS.00129901"), "{content}");
    assert!(content.contains("2026-11-29 10:40:43 +08:00"), "{content}");

    // The signature, checked with Feishu's algorithm: timestamp in seconds,
    // as a string, close to now.
    let timestamp = body["timestamp"].as_str().expect("timestamp is a string");
    let seconds: i64 = timestamp.parse().expect("seconds");
    assert!((jiff::Timestamp::now().as_second() - seconds).abs() < 300);
    assert_eq!(
        body["sign"].as_str(),
        Some(feishu_expected_sign("feishu-s3cret", timestamp).as_str())
    );
    assert_eq!(
        feishu::sign(&Secret::new("feishu-s3cret"), 1_599_360_473),
        feishu_expected_sign("feishu-s3cret", "1599360473")
    );

    // An error code at HTTP 200 is a failure, kept in Feishu's words.
    let attempt = notifier.send(&single("FAILED")).await;
    match &attempt.verdict {
        Verdict::DontRetry(reason) => assert!(reason.contains("sign match fail"), "{reason}"),
        other => panic!("expected permanent, got {other:?}"),
    }
    // 11232 throttles the whole notifier. Feishu names no wait of its
    // own, so the dispatcher's backoff decides; a `Retry-After` is kept.
    let attempt = notifier.send(&single("FAILED")).await;
    assert_eq!(throttled_for(&attempt), None);
    assert!(attempt.answer.contains("frequency limited"));
    let attempt = notifier.send(&single("FAILED")).await;
    assert_eq!(throttled_for(&attempt), Some(Duration::from_secs(7)));
    // 5xx is worth another try.
    let attempt = notifier.send(&single("FAILED")).await;
    assert!(matches!(
        attempt.verdict,
        Verdict::Retry(Retryable {
            throttled: false,
            ..
        })
    ));
}

#[tokio::test]
async fn feishu_cuts_a_big_group_to_its_body_limit() {
    let mut rx = Receiver::start(vec![reply(200, r#"{"code":0,"msg":"success"}"#)]).await;
    let notifier = ChatNotifier {
        url: rx.url("hook"),
        secret: Some(Secret::new("k")),
        http: http(),
        tz: tz(),
        template: None,
        kind: Feishu,
    };
    let attempt = notifier.send(&big_group()).await;
    assert_eq!(attempt.verdict, Verdict::Success);
    let got = rx.next().await;
    assert!(
        got.raw.len() <= feishu::BODY_LIMIT_BYTES,
        "{} bytes",
        got.raw.len()
    );
    let body = got.json();
    let content = body["card"]["elements"][0]["text"]["content"]
        .as_str()
        .expect("content");
    assert!(content.ends_with(" more"), "{content}");
    assert_cut_right(content, 500);
    assert_eq!(
        body["card"]["header"]["title"]["content"],
        "❌ CREATE_SERVER: 450 SUCCESS, 50 FAILED"
    );
}

// ---------------------------------------------------------------- dingtalk

/// DingTalk's algorithm, written here from its documentation: HMAC-SHA256
/// keyed by the secret over "{timestamp}\n{secret}", base64 (then URL
/// encoding, which the query parser undoes).
fn dingtalk_expected_sign(secret: &str, timestamp: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(format!("{timestamp}\n{secret}").as_bytes());
    BASE64.encode(mac.finalize().into_bytes())
}

#[tokio::test]
async fn dingtalk_signs_the_query_and_reads_errcode() {
    let secret = "SEC0123456789abcdef";
    let mut rx = Receiver::start(vec![
        reply(200, r#"{"errcode":0,"errmsg":"ok"}"#),
        reply(
            200,
            r#"{"errcode":130101,"errmsg":"send too fast, exceed 20 times per minute"}"#,
        ),
        reply(
            200,
            r#"{"errcode":310000,"errmsg":"sign not match, more: [https://ding-doc.dingtalk.com/doc#/serverapi2/qf2nxq]"}"#,
        ),
    ])
    .await;
    let notifier = ChatNotifier {
        url: rx.url("robot/send?access_token=ding-token"),
        secret: Some(Secret::new(secret)),
        http: http(),
        tz: tz(),
        template: None,
        kind: DingTalk,
    };

    let attempt = notifier.send(&single("ABNORMAL")).await;
    assert_eq!(attempt.verdict, Verdict::Success, "{}", attempt.answer);
    let got = rx.next().await;
    assert_eq!(got.query("access_token").as_deref(), Some("ding-token"));
    let timestamp = got.query("timestamp").expect("a timestamp");
    let ms: i64 = timestamp.parse().expect("milliseconds");
    assert!((jiff::Timestamp::now().as_millisecond() - ms).abs() < 300_000);
    assert_eq!(
        got.query("sign"),
        Some(dingtalk_expected_sign(secret, &timestamp))
    );
    // A base64 HMAC-SHA256 always ends in "=": it must arrive URL-encoded.
    let raw_query = got.query.clone().unwrap_or_default();
    assert!(raw_query.contains("%3D"), "{raw_query}");
    let body = got.json();
    assert_eq!(body["msgtype"], "markdown");
    let md = body["markdown"]["text"].as_str().expect("markdown text");
    assert!(md.contains("CREATE_SERVER ABNORMAL on APS-"), "{md}");
    assert!(body["markdown"]["title"].as_str().is_some());

    let attempt = notifier.send(&single("FAILED")).await;
    assert_eq!(throttled_for(&attempt), Some(dingtalk::THROTTLE_WAIT));
    assert!(attempt.answer.contains("send too fast"));

    let attempt = notifier.send(&single("FAILED")).await;
    match &attempt.verdict {
        Verdict::DontRetry(reason) => assert!(reason.contains("sign not match"), "{reason}"),
        other => panic!("expected permanent, got {other:?}"),
    }
}

#[tokio::test]
async fn dingtalk_cuts_a_big_group() {
    let mut rx = Receiver::start(vec![reply(200, r#"{"errcode":0,"errmsg":"ok"}"#)]).await;
    let notifier = ChatNotifier {
        url: rx.url("robot/send?access_token=t"),
        secret: None,
        http: http(),
        tz: tz(),
        template: None,
        kind: DingTalk,
    };
    assert_eq!(notifier.send(&big_group()).await.verdict, Verdict::Success);
    let got = rx.next().await;
    assert_eq!(got.query("sign"), None, "unsigned without a secret");
    let body = got.json();
    let md = body["markdown"]["text"].as_str().expect("markdown text");
    assert!(md.len() <= dingtalk::TEXT_LIMIT_BYTES, "{} bytes", md.len());
    assert_cut_right(md, 500);
}

// ---------------------------------------------------------------- wecom

#[tokio::test]
async fn wecom_fits_4096_bytes_and_reads_errcode() {
    let mut rx = Receiver::start(vec![
        reply(200, r#"{"errcode":0,"errmsg":"ok"}"#),
        reply(200, r#"{"errcode":45009,"errmsg":"api freq out of limit"}"#),
        reply(
            200,
            r#"{"errcode":93000,"errmsg":"invalid webhook url, hint: [1755605200056773468916791]"}"#,
        ),
    ])
    .await;
    let notifier = ChatNotifier {
        url: rx.url("cgi-bin/webhook/send?key=wecom-key-123"),
        http: http(),
        tz: tz(),
        template: None,
        secret: None,
        kind: WeCom,
    };

    assert_eq!(notifier.send(&big_group()).await.verdict, Verdict::Success);
    let got = rx.next().await;
    assert_eq!(got.query("key").as_deref(), Some("wecom-key-123"));
    let body = got.json();
    assert_eq!(body["msgtype"], "markdown");
    let content = body["markdown"]["content"].as_str().expect("content");
    // The limit is in UTF-8 bytes, and the lines carry Chinese text.
    assert!(
        content.len() <= wecom::CONTENT_LIMIT_BYTES,
        "{} bytes",
        content.len()
    );
    assert!(content.contains("创建云服务器失败"));
    assert_cut_right(content, 500);

    // 45009: the bot's 20 messages a minute are used up; wait the minute.
    let attempt = notifier.send(&single("FAILED")).await;
    assert_eq!(throttled_for(&attempt), Some(wecom::THROTTLE_WAIT));
    assert_eq!(wecom::THROTTLE_WAIT, Duration::from_secs(60));
    assert!(attempt.answer.contains("api freq out of limit"));
    let attempt = notifier.send(&single("FAILED")).await;
    match &attempt.verdict {
        Verdict::DontRetry(reason) => assert!(reason.contains("invalid webhook url"), "{reason}"),
        other => panic!("expected permanent, got {other:?}"),
    }
}

// ---------------------------------------------------------------- slack

#[tokio::test]
async fn slack_blocks_fit_and_429_waits_for_retry_after() {
    let mut rx = Receiver::start(vec![
        reply(200, "ok"),
        Reply {
            status: 429,
            headers: vec![("retry-after", "3")],
            body: "rate_limited".into(),
        },
        reply(500, "internal_error"),
        reply(400, "invalid_payload"),
        reply(404, "no_service"),
    ])
    .await;
    let notifier = ChatNotifier {
        url: rx.url("services/T000/B000/slack-token"),
        http: http(),
        tz: tz(),
        template: None,
        secret: None,
        kind: Slack,
    };

    assert_eq!(notifier.send(&big_group()).await.verdict, Verdict::Success);
    let body = rx.next().await.json();
    let text_field = body["text"].as_str().expect("text");
    assert!(text_field.chars().count() <= slack::TEXT_LIMIT_CHARS);
    assert!(text_field.starts_with("❌"), "{text_field}");
    let blocks = body["blocks"].as_array().expect("blocks");
    assert!(blocks.len() <= slack::MAX_BLOCKS);
    let mut listed = String::new();
    for block in blocks.iter().filter(|b| b["type"] == "section") {
        let t = block["text"]["text"].as_str().expect("section text");
        assert!(t.chars().count() <= slack::SECTION_LIMIT_CHARS);
        listed.push_str(t);
        listed.push('\n');
    }
    let last = blocks.last().expect("a last block");
    assert_eq!(last["type"], "context");
    listed.push_str(last["elements"][0]["text"].as_str().expect("context text"));
    assert_cut_right(&listed, 500);

    let attempt = notifier.send(&single("FAILED")).await;
    assert_eq!(throttled_for(&attempt), Some(Duration::from_secs(3)));
    let attempt = notifier.send(&single("FAILED")).await;
    assert!(matches!(
        attempt.verdict,
        Verdict::Retry(Retryable {
            throttled: false,
            ..
        })
    ));
    for words in ["invalid_payload", "no_service"] {
        let attempt = notifier.send(&single("FAILED")).await;
        match &attempt.verdict {
            Verdict::DontRetry(reason) => assert!(reason.contains(words), "{reason}"),
            other => panic!("expected permanent, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn slack_escapes_control_characters_from_the_api() {
    let mut rx = Receiver::start(vec![reply(200, "ok")]).await;
    let notifier = ChatNotifier {
        url: rx.url("hook"),
        http: http(),
        tz: tz(),
        template: None,
        secret: None,
        kind: Slack,
    };
    let mut message = single("FAILED");
    message.events[0].error_message = Some("<!channel> disk > 90% & rising".into());
    notifier.send(&message).await;
    let raw = String::from_utf8(rx.next().await.raw.to_vec()).expect("utf-8");
    assert!(!raw.contains("<!channel>"), "{raw}");
    assert!(raw.contains("&lt;!channel&gt; disk &gt; 90% &amp; rising"));
}

// ---------------------------------------------------------------- discord

#[tokio::test]
async fn discord_embed_fits_and_429_body_sets_the_wait() {
    let mut rx = Receiver::start(vec![
        reply(204, ""),
        reply(
            429,
            r#"{"message":"You are being rate limited.","retry_after":1.5,"global":false}"#,
        ),
        reply(400, r#"{"message":"Invalid Form Body","code":50035}"#),
    ])
    .await;
    let notifier = ChatNotifier {
        url: rx.url("api/webhooks/123/discord-token"),
        http: http(),
        tz: tz(),
        template: None,
        secret: None,
        kind: Discord,
    };

    assert_eq!(notifier.send(&big_group()).await.verdict, Verdict::Success);
    let body = rx.next().await.json();
    assert_eq!(body["allowed_mentions"], json!({"parse": []}));
    let embed = &body["embeds"][0];
    assert_eq!(embed["color"], 0xE7_4C_3C);
    let description = embed["description"].as_str().expect("description");
    assert!(description.encode_utf16().count() <= discord::DESCRIPTION_LIMIT_CHARS);
    let title = embed["title"].as_str().expect("title");
    assert!(title.chars().count() <= discord::TITLE_LIMIT_CHARS);
    assert!(
        title.chars().count() + description.chars().count() <= discord::EMBEDS_TOTAL_LIMIT_CHARS
    );
    assert_cut_right(description, 500);

    let attempt = notifier.send(&single("FAILED")).await;
    assert_eq!(throttled_for(&attempt), Some(Duration::from_millis(1500)));
    assert!(attempt.answer.contains("You are being rate limited"));
    let attempt = notifier.send(&single("FAILED")).await;
    match &attempt.verdict {
        Verdict::DontRetry(reason) => assert!(reason.contains("Invalid Form Body"), "{reason}"),
        other => panic!("expected permanent, got {other:?}"),
    }
}

// ---------------------------------------------------------------- teams

#[tokio::test]
async fn teams_sends_an_adaptive_card_within_its_limit() {
    let mut rx = Receiver::start(vec![
        reply(202, ""),
        reply(202, ""),
        reply(413, "Request Entity Too Large"),
    ])
    .await;
    let notifier = ChatNotifier {
        url: rx.url("workflows/abc/triggers/manual/paths/invoke?api-version=1&sig=teams-sig"),
        http: http(),
        tz: tz(),
        template: None,
        secret: None,
        kind: Teams,
    };

    assert_eq!(
        notifier.send(&single("FAILED")).await.verdict,
        Verdict::Success
    );
    let got = rx.next().await;
    assert_eq!(
        got.headers
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/json")
    );
    let body = got.json();
    assert_eq!(body["type"], "message");
    let attachment = &body["attachments"][0];
    assert_eq!(
        attachment["contentType"],
        "application/vnd.microsoft.card.adaptive"
    );
    let card = &attachment["content"];
    assert_eq!(card["type"], "AdaptiveCard");
    assert_eq!(card["version"], "1.4");
    assert_eq!(card["body"][0]["style"], "attention");
    assert_eq!(card["body"][0]["items"][0]["color"], "attention");

    assert_eq!(notifier.send(&big_group()).await.verdict, Verdict::Success);
    let got = rx.next().await;
    assert!(
        got.raw.len() <= teams::BODY_LIMIT_BYTES,
        "{} bytes",
        got.raw.len()
    );
    let listed = got.json()["attachments"][0]["content"]["body"][1]["text"]
        .as_str()
        .expect("the list")
        .to_owned();
    assert_cut_right(&listed, 500);

    let attempt = notifier.send(&big_group()).await;
    match &attempt.verdict {
        Verdict::DontRetry(reason) => assert!(reason.contains("Too Large"), "{reason}"),
        other => panic!("expected permanent, got {other:?}"),
    }
}

// ---------------------------------------------------------------- secrets

/// Regression: reqwest's connection errors name the URL, and a chat
/// webhook's URL is its credential.
#[tokio::test]
async fn a_connection_error_never_shows_the_url_secret() {
    let (_closed, port) = closed_port();
    let base = format!("http://127.0.0.1:{port}");
    let url = |rest: &str| -> SecretUrl { format!("{base}{rest}").parse().expect("a valid url") };
    let notifiers = [
        (
            "wecom-key-123",
            Notifier::new(ChatNotifier {
                url: url("/cgi-bin/webhook/send?key=wecom-key-123"),
                http: http(),
                tz: tz(),
                template: None,
                secret: None,
                kind: WeCom,
            }),
        ),
        (
            "slack-token-456",
            Notifier::new(ChatNotifier {
                url: url("/services/T000/B000/slack-token-456"),
                http: http(),
                tz: tz(),
                template: None,
                secret: None,
                kind: Slack,
            }),
        ),
        (
            "discord-token-789",
            Notifier::new(ChatNotifier {
                url: url("/api/webhooks/1/discord-token-789"),
                http: http(),
                tz: tz(),
                template: None,
                secret: None,
                kind: Discord,
            }),
        ),
        (
            "ding-token-000",
            Notifier::new(ChatNotifier {
                url: url("/robot/send?access_token=ding-token-000"),
                secret: Some(Secret::new("SECxyz")),
                http: http(),
                tz: tz(),
                template: None,
                kind: DingTalk,
            }),
        ),
        (
            "feishu-hook-111",
            Notifier::new(ChatNotifier {
                url: url("/open-apis/bot/v2/hook/feishu-hook-111"),
                secret: None,
                http: http(),
                tz: tz(),
                template: None,
                kind: Feishu,
            }),
        ),
        (
            "teams-sig-222",
            Notifier::new(ChatNotifier {
                url: url("/workflows/x/invoke?sig=teams-sig-222"),
                http: http(),
                tz: tz(),
                template: None,
                secret: None,
                kind: Teams,
            }),
        ),
    ];
    for (secret, notifier) in notifiers {
        let attempt = notifier.send(&single("FAILED")).await;
        assert!(
            matches!(attempt.verdict, Verdict::Retry(_)),
            "{secret}: {:?}",
            attempt.verdict
        );
        let all = format!("{} {:?}", attempt.answer, attempt.verdict);
        assert!(!all.contains(secret), "{secret} leaked: {all}");
    }
}
