//! The `email` notifier against a real SMTP server on loopback (the sink in
//! `smtp_sink.rs`): what arrives, and what each server reply means.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use jobwatch::cloud::model::{ApiTime, Status};
use jobwatch::notify::kinds::email::{EmailNotifier, Settings, SmtpServer, SmtpTls};
use jobwatch::notify::template::{Markup, Template, TemplateSettings};
use jobwatch::notify::{Attempt, GroupInfo, Message};
use jobwatch::retry::Verdict;
use jobwatch::secret::Secret;
use jobwatch::watch::event::{Event, EventKind};

use crate::smtp_sink::{Auth, Mail, Scripted, SmtpSink, Verb};

const PASSWORD: &str = "s3cret-Pa55word";
const PROJECT: &str = "0a1b2c3d4e5f60718293a4b5c6d7e8f9";

fn settings(port: u16, user: Option<&str>) -> Settings {
    Settings {
        smtp: SmtpServer {
            host: "127.0.0.1".into(),
            port,
            tls: SmtpTls::None,
            user: user.map(str::to_owned),
        },
        password: user.map(|_| Secret::new(PASSWORD)),
        from: "jobwatch <jobwatch@example.com>".into(),
        to: vec!["oncall@example.com".into(), "ops@example.org".into()],
        subject_template: None,
    }
}

fn notifier(port: u16, user: Option<&str>) -> EmailNotifier {
    notifier_with(settings(port, user), Duration::from_secs(5))
}

fn notifier_with(settings: Settings, timeout: Duration) -> EmailNotifier {
    templated(settings, timeout, None)
}

fn templated(settings: Settings, timeout: Duration, body: Option<Template>) -> EmailNotifier {
    jobwatch::install_crypto_provider();
    EmailNotifier::from_settings(&settings, timeout, shanghai(), body).expect("email notifier")
}

fn shanghai() -> jiff::tz::TimeZone {
    jiff::tz::TimeZone::get("Asia/Shanghai").expect("tzdb has Asia/Shanghai")
}

/// A template as the config would compile it (a subject or body has no
/// markup).
fn compile(name: &str, source: &str) -> Template {
    let settings = TemplateSettings {
        timezone: shanghai(),
        region: "cn-north-4".into(),
        account_regions: Default::default(),
    };
    Template::compile(name, source, &settings, Markup::Plain).expect("the template compiles")
}

fn event(sub_job: &str, to: Status) -> Event {
    let failed = to == Status::Failed;
    Event {
        event_id: format!("e{sub_job}"),
        kind: EventKind::Changed,
        target: String::new(),
        account: "default".into(),
        project_id: PROJECT.into(),
        job_type: "CREATE_SERVER".into(),
        sub_job_id: format!("sub-{sub_job}"),
        job_id: Some("job-8f2".into()),
        resource_id: Some(format!("res-{sub_job}")),
        resource_name: Some(format!("APS-20220902093902-{sub_job}")),
        from: Some(Status::Running),
        to: Some(to),
        error_code: failed.then(|| "WKS.00129901".into()),
        error_message: failed.then(|| "Quota <exceeded> & \"more\"".into()),
        begin_time: Some(ApiTime::parse("2022-03-07T10:40:43.858Z")),
        end_time: Some(ApiTime::parse("2022-03-07T10:45:00Z")),
        observed_at: "2022-03-07T10:45:30Z".parse().expect("timestamp"),
    }
}

fn single(e: Event) -> Message {
    Message {
        test: false,
        id: e.event_id.clone(),
        group: None,
        events: vec![e],
    }
}

/// Every answer must be free of the password, whatever it says.
fn checked(attempt: Attempt) -> Attempt {
    assert!(
        !attempt.answer.contains(PASSWORD),
        "password in answer: {}",
        attempt.answer
    );
    assert!(!format!("{:?}", attempt.verdict).contains(PASSWORD));
    attempt
}

// --- A little MIME reading, enough for what lettre writes ---------------

/// Headers (unfolded, names lower-cased) and the body after the blank line.
fn split_headers(raw: &str) -> (Vec<(String, String)>, String) {
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((raw, ""));
    let mut headers: Vec<(String, String)> = Vec::new();
    for line in head.split("\r\n") {
        if line.starts_with([' ', '\t']) {
            if let Some(last) = headers.last_mut() {
                last.1.push_str(line);
            }
        } else if let Some((name, value)) = line.split_once(':') {
            headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
        }
    }
    (headers, body.to_owned())
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

/// RFC 2047 `=?utf-8?b?…?=` words (lettre's choice), joined as a reader
/// would see them; plain text passes through.
fn decode_words(value: &str) -> String {
    let mut out = String::new();
    let mut previous_encoded = None;
    for word in value.split([' ', '\t']).filter(|w| !w.is_empty()) {
        let encoded = word.len() > 12
            && word[..10].eq_ignore_ascii_case("=?utf-8?b?")
            && word.ends_with("?=");
        // Space between two encoded words is folding, not text.
        if previous_encoded.is_some() && !(encoded && previous_encoded == Some(true)) {
            out.push(' ');
        }
        if encoded {
            let raw = BASE64
                .decode(&word[10..word.len() - 2])
                .expect("encoded word is base64");
            out.push_str(&String::from_utf8(raw).expect("utf-8 encoded word"));
        } else {
            out.push_str(word);
        }
        previous_encoded = Some(encoded);
    }
    out
}

fn decode_body(encoding: Option<&str>, body: &str) -> String {
    match encoding.map(str::to_ascii_lowercase).as_deref() {
        Some("base64") => {
            let compact: String = body.split_whitespace().collect();
            String::from_utf8(BASE64.decode(compact).expect("base64 part")).expect("utf-8 part")
        }
        Some("quoted-printable") => {
            let mut bytes = Vec::new();
            let soft = body.replace("=\r\n", "");
            let mut chars = soft.as_bytes().iter().copied();
            while let Some(b) = chars.next() {
                if b == b'=' {
                    let hi = chars.next().expect("qp escape");
                    let lo = chars.next().expect("qp escape");
                    let hex = [hi, lo];
                    let hex = std::str::from_utf8(&hex).expect("qp hex");
                    bytes.push(u8::from_str_radix(hex, 16).expect("qp hex"));
                } else {
                    bytes.push(b);
                }
            }
            String::from_utf8(bytes).expect("utf-8 part")
        }
        _ => body.to_owned(),
    }
}

/// A received mail, taken apart.
struct Parsed {
    headers: Vec<(String, String)>,
    subject: String,
    content_type: String,
    text: String,
    html: String,
}

fn parse(mail: &Mail) -> Parsed {
    let (headers, body) = split_headers(&mail.data);
    let content_type = header(&headers, "content-type")
        .expect("Content-Type")
        .to_owned();
    let boundary = content_type
        .split("boundary=")
        .nth(1)
        .expect("a multipart boundary")
        .trim_matches('"')
        .to_owned();
    let mut text = None;
    let mut html = None;
    for part in body.split(&format!("--{boundary}")).skip(1) {
        if part.starts_with("--") {
            break;
        }
        let (part_headers, part_body) = split_headers(part.trim_start_matches("\r\n"));
        let decoded = decode_body(
            header(&part_headers, "content-transfer-encoding"),
            part_body.trim_end_matches("\r\n"),
        );
        let kind = header(&part_headers, "content-type").unwrap_or("");
        if kind.starts_with("text/plain") {
            text = Some(decoded);
        } else if kind.starts_with("text/html") {
            html = Some(decoded);
        }
    }
    Parsed {
        subject: decode_words(header(&headers, "subject").expect("Subject")),
        content_type,
        text: text.expect("a text/plain part").replace("\r\n", "\n"),
        html: html.expect("a text/html part").replace("\r\n", "\n"),
        headers,
    }
}

/// A received mail's subject, decoded.
pub fn subject_of(mail: &Mail) -> String {
    parse(mail).subject
}

// --- Tests ----------------------------------------------------------------

#[tokio::test]
async fn one_event_arrives_as_a_readable_two_part_mail() {
    let mut sink = SmtpSink::start(vec![]).await;
    let email = notifier(sink.port, None);
    let message = single(event("A1", Status::Failed));

    let attempt = checked(email.send(&message).await);
    assert_eq!(attempt.verdict, Verdict::Success, "{}", attempt.answer);
    assert!(attempt.answer.starts_with("250"), "{}", attempt.answer);

    let mail = sink.next().await;
    assert_eq!(mail.mail_from, "jobwatch@example.com");
    assert_eq!(mail.rcpt_to, ["oncall@example.com", "ops@example.org"]);
    assert_eq!(mail.auth, None);
    let parsed = parse(&mail);
    assert_eq!(
        parsed.subject,
        "[jobwatch] CREATE_SERVER FAILED on APS-20220902093902-A1 (project 0a1b2c3d…)"
    );
    let from = header(&parsed.headers, "from").expect("From");
    assert!(from.contains("<jobwatch@example.com>"), "{from}");
    let to = header(&parsed.headers, "to").expect("To");
    assert!(
        to.contains("oncall@example.com") && to.contains("ops@example.org"),
        "{to}"
    );
    assert_eq!(
        header(&parsed.headers, "message-id"),
        Some("<eA1@jobwatch>")
    );
    assert_eq!(
        header(&parsed.headers, "auto-submitted"),
        Some("auto-generated")
    );
    assert!(parsed.content_type.starts_with("multipart/alternative"));

    // The text part lists every fact, times in the notifier's zone.
    for needle in [
        "CREATE_SERVER FAILED on APS-20220902093902-A1",
        "changed",
        "RUNNING → FAILED",
        "WKS.00129901: Quota <exceeded> & \"more\"",
        "res-A1",
        "sub-A1",
        "job-8f2",
        PROJECT,
        "2022-03-07 18:40:43 +08:00",
        "2022-03-07 18:45:00 +08:00",
        "2022-03-07 18:45:30 +08:00",
    ] {
        assert!(
            parsed.text.contains(needle),
            "text lacks {needle:?}:\n{}",
            parsed.text
        );
    }
    // The HTML part has the same facts, escaped.
    assert!(
        parsed
            .html
            .contains("WKS.00129901: Quota &lt;exceeded&gt; &amp; &quot;more&quot;"),
        "{}",
        parsed.html
    );
    assert!(!parsed.html.contains("<exceeded>"));
    for needle in [
        "sub-A1",
        "job-8f2",
        "2022-03-07 18:40:43 +08:00",
        "RUNNING → FAILED",
    ] {
        assert!(parsed.html.contains(needle), "html lacks {needle:?}");
    }

    // A retry of the same message keeps its Message-ID.
    checked(email.send(&message).await);
    let again = parse(&sink.next().await);
    assert_eq!(header(&again.headers, "message-id"), Some("<eA1@jobwatch>"));
}

#[tokio::test]
async fn a_group_is_one_mail_listing_every_event() {
    let mut sink = SmtpSink::start(vec![]).await;
    let email = notifier(sink.port, None);
    let mut odd = event("C3", Status::Success);
    odd.resource_name = Some("<b>bold</b> & co".into());
    let message = Message {
        test: false,
        id: "group-1".into(),
        group: Some(GroupInfo {
            job: None,
            id: "group-1".into(),
            key: "route".into(),
            count: 3,
        }),
        events: vec![
            event("A1", Status::Success),
            event("B2", Status::Failed),
            odd,
        ],
    };

    let attempt = checked(email.send(&message).await);
    assert_eq!(attempt.verdict, Verdict::Success, "{}", attempt.answer);
    let parsed = parse(&sink.next().await);
    assert_eq!(
        parsed.subject,
        "[jobwatch] 3 CREATE_SERVER transitions: 2 SUCCESS, 1 FAILED"
    );
    assert_eq!(
        header(&parsed.headers, "message-id"),
        Some("<group-1@jobwatch>")
    );
    for sub in ["sub-A1", "sub-B2", "sub-C3"] {
        assert!(parsed.text.contains(sub), "text lacks {sub}");
        assert!(parsed.html.contains(sub), "html lacks {sub}");
    }
    assert!(parsed.text.contains("<b>bold</b> & co"));
    assert!(parsed.html.contains("&lt;b&gt;bold&lt;/b&gt; &amp; co"));
    assert!(!parsed.html.contains("<b>bold</b>"));
}

#[tokio::test]
async fn auth_credentials_reach_the_server() {
    let mut sink = SmtpSink::start(vec![]).await;
    let email = notifier(sink.port, Some("jobwatch-user"));
    let attempt = checked(email.send(&single(event("A1", Status::Failed))).await);
    assert_eq!(attempt.verdict, Verdict::Success, "{}", attempt.answer);
    let mail = sink.next().await;
    assert_eq!(
        mail.auth,
        Some(Auth {
            mechanism: "PLAIN".into(),
            user: "jobwatch-user".into(),
            password: PASSWORD.into(),
        })
    );
}

#[tokio::test]
async fn a_transient_4xx_is_retryable_and_the_next_attempt_succeeds() {
    let mut sink = SmtpSink::start(vec![Scripted::once(
        Verb::MailFrom,
        "451 4.3.0 try again later",
    )])
    .await;
    let email = notifier(sink.port, Some("u"));
    let message = single(event("A1", Status::Failed));

    let attempt = checked(email.send(&message).await);
    match &attempt.verdict {
        Verdict::Retry(r) => {
            assert_eq!(r.reason, "451 4.3.0 try again later");
            assert!(!r.throttled);
        }
        other => panic!("expected Retry, got {other:?}"),
    }
    assert_eq!(attempt.answer, "451 4.3.0 try again later");

    let attempt = checked(email.send(&message).await);
    assert_eq!(attempt.verdict, Verdict::Success, "{}", attempt.answer);
    sink.next().await;
}

#[tokio::test]
async fn a_permanent_5xx_is_not_retried_and_keeps_the_servers_words() {
    let reply = "550 5.1.1 <oncall@example.com>: Recipient address rejected";
    let sink = SmtpSink::start(vec![Scripted::once(Verb::RcptTo, reply)]).await;
    let email = notifier(sink.port, Some("u"));
    let attempt = checked(email.send(&single(event("A1", Status::Failed))).await);
    assert_eq!(attempt.verdict, Verdict::DontRetry(reply.into()));
    assert_eq!(attempt.answer, reply);
}

#[tokio::test]
async fn a_5xx_after_data_is_permanent_too() {
    let reply = "554 5.6.0 Message rejected as spam";
    let sink = SmtpSink::start(vec![Scripted::once(Verb::Data, reply)]).await;
    let email = notifier(sink.port, None);
    let attempt = checked(email.send(&single(event("A1", Status::Failed))).await);
    assert_eq!(attempt.verdict, Verdict::DontRetry(reply.into()));
}

#[tokio::test]
async fn a_closed_port_is_retryable() {
    // Bound but never listening: connections are refused, and no
    // parallel test can take the port while the socket lives.
    let closed = tokio::net::TcpSocket::new_v4().expect("a socket");
    closed
        .bind("127.0.0.1:0".parse().expect("an address"))
        .expect("bind");
    let port = closed.local_addr().expect("addr").port();
    let email = notifier(port, Some("u"));
    let attempt = checked(email.send(&single(event("A1", Status::Failed))).await);
    match &attempt.verdict {
        Verdict::Retry(r) => assert!(r.reason.contains("127.0.0.1"), "{}", r.reason),
        other => panic!("expected Retry, got {other:?}"),
    }
}

#[tokio::test]
async fn a_silent_server_times_out_and_is_retryable() {
    // Accepts TCP (the kernel does, from the backlog) but never greets.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let email = notifier_with(settings(port, None), Duration::from_millis(300));
    let attempt = checked(email.send(&single(event("A1", Status::Failed))).await);
    match &attempt.verdict {
        Verdict::Retry(r) => assert!(r.reason.contains("timed out"), "{}", r.reason),
        other => panic!("expected Retry, got {other:?}"),
    }
    drop(listener);
}

#[tokio::test]
async fn the_password_never_reaches_an_answer_even_when_the_server_echoes_it() {
    // A hostile or buggy server quoting the credentials in its refusal.
    let sink = SmtpSink::start(vec![Scripted::always(
        Verb::Auth,
        "535 5.7.8 authentication failed for password {auth}",
    )])
    .await;
    let email = notifier(sink.port, Some("jobwatch-user"));
    let attempt = checked(email.send(&single(event("A1", Status::Failed))).await);
    match &attempt.verdict {
        Verdict::DontRetry(reason) => {
            assert!(
                reason.starts_with("535 5.7.8 authentication failed"),
                "{reason}"
            );
            assert!(reason.contains("***"), "{reason}");
        }
        other => panic!("expected DontRetry, got {other:?}"),
    }
}

#[tokio::test]
async fn after_a_timed_out_attempt_the_next_one_uses_a_fresh_connection() {
    // The server answers MAIL FROM only after the client has given up; that
    // late reply must not be read as the answer to a later command, so the
    // cut connection is never reused.
    //
    // The timeout bounds a whole attempt, so it is generous (a loaded
    // machine must finish the second session within it); the late reply
    // lands inside the second attempt, where a reused connection would
    // read it.
    let timeout = Duration::from_secs(3);
    let mut sink = SmtpSink::start(vec![Scripted::late(
        Verb::MailFrom,
        "250 2.1.0 Ok",
        timeout + Duration::from_millis(1500),
    )])
    .await;
    let email = notifier_with(settings(sink.port, None), timeout);
    let message = single(event("A1", Status::Failed));

    let attempt = checked(email.send(&message).await);
    assert!(
        matches!(&attempt.verdict, Verdict::Retry(r) if r.reason.contains("timed out")),
        "{attempt:?}"
    );
    // lettre hands a dropped connection back to its pool from a spawned
    // task; let it run, so that a bug reusing the cut connection would
    // show. (The right outcome does not depend on it.)
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    let attempt = checked(email.send(&message).await);
    assert_eq!(attempt.verdict, Verdict::Success, "{}", attempt.answer);
    assert_eq!(sink.next().await.rcpt_to.len(), 2);
    assert_eq!(
        sink.connections.load(std::sync::atomic::Ordering::SeqCst),
        2,
        "the cut connection was reused"
    );
}

#[tokio::test]
async fn a_subject_template_names_the_subject_and_a_broken_one_is_a_dead_letter() {
    let mut sink = SmtpSink::start(vec![]).await;
    let compile = |src: &str| compile("oncall.subject_template", src);
    let good = compile("{{ event.job_type }} {{ event.to }}\non {{ event.resource_name }}");
    let port = sink.port;
    let with_subject = |template| Settings {
        subject_template: Some(template),
        ..settings(port, None)
    };
    let email = notifier_with(with_subject(good), Duration::from_secs(5));
    let attempt = email.send(&single(event("T1", Status::Failed))).await;
    assert_eq!(attempt.verdict, Verdict::Success, "{}", attempt.answer);
    // Newlines in a rendered subject are folded: one header line.
    assert_eq!(
        parse(&sink.next().await).subject,
        "CREATE_SERVER FAILED on APS-20220902093902-T1"
    );

    let broken = compile("{{ event.nope.deeper }}");
    let email = notifier_with(with_subject(broken), Duration::from_secs(5));
    let attempt = email.send(&single(event("T2", Status::Failed))).await;
    assert!(
        matches!(attempt.verdict, Verdict::DontRetry(ref r) if r.starts_with("template error")),
        "{attempt:?}"
    );
}

#[tokio::test]
async fn a_body_template_is_the_text_part_and_the_html_part_shows_it_escaped() {
    let mut sink = SmtpSink::start(vec![]).await;
    let body = compile(
        "oncall",
        "{{ event|status_icon }} {{ event.resource_name }}: {{ event.error_message }}\n\
         ended {{ event.end_time|time }}",
    );
    let email = templated(
        settings(sink.port, None),
        Duration::from_secs(5),
        Some(body),
    );
    let attempt = checked(email.send(&single(event("B1", Status::Failed))).await);
    assert_eq!(attempt.verdict, Verdict::Success, "{}", attempt.answer);
    let parsed = parse(&sink.next().await);
    // The subject stays built in (subject_template sets it).
    assert_eq!(
        parsed.subject,
        "[jobwatch] CREATE_SERVER FAILED on APS-20220902093902-B1 (project 0a1b2c3d…)"
    );
    // The text part is the rendering, nothing added.
    assert_eq!(
        parsed.text,
        "❌ APS-20220902093902-B1: Quota <exceeded> & \"more\"\nended 2022-03-07 18:45:00 +08:00"
    );
    // The HTML part is the same text, escaped, its lines kept.
    assert!(
        parsed.html.contains(
            "<div style=\"white-space: pre-wrap;\">❌ APS-20220902093902-B1: Quota &lt;exceeded&gt; &amp; &quot;more&quot;\nended 2022-03-07 18:45:00 +08:00</div>"
        ),
        "{}",
        parsed.html
    );
    assert!(!parsed.html.contains("<exceeded>"));

    // A body template that cannot render this message is a dead letter,
    // and nothing is sent.
    let broken = compile("oncall", "{{ event.nope.deeper }}");
    let email = templated(
        settings(sink.port, None),
        Duration::from_secs(5),
        Some(broken),
    );
    let attempt = email.send(&single(event("B2", Status::Failed))).await;
    assert!(
        matches!(attempt.verdict, Verdict::DontRetry(ref r) if r.starts_with("template error")),
        "{attempt:?}"
    );
}
