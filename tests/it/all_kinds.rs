//! Every notifier kind at once, as a user would wire them: `notify-test`
//! reports ok for each loopback stand-in, and a route CREATE_SERVER → FAILED
//! brings three failures to all of them, signed as each vendor documents.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, KeyInit, Mac};
use jobwatch::sim::SimOptions;
use reqwest::Method;
use serde_json::json;
use sha2::Sha256;

use crate::smtp_sink::SmtpSink;
use crate::support::{Answer, Receiver, Sim, jobwatch};

const FEISHU_SECRET: &str = "feishu-secret-1";
const DING_SECRET: &str = "SEC0123456789abcdef";
const HOOK_SECRET: &str = "whsec_aG9vay1zZWNyZXQtZm9yLXRlc3Rz";

fn hmac_b64(key: &[u8], message: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
    mac.update(message);
    BASE64.encode(mac.finalize().into_bytes())
}

fn answers(status: u16, body: &str) -> Vec<Answer> {
    vec![(status, vec![], body.to_owned()); 20]
}

#[tokio::test]
async fn every_kind_reports_ok_and_three_failures_reach_all_of_them_signed() {
    let sim = Sim::start(SimOptions::default()).await;
    let made = sim
        .control(
            Method::POST,
            "/sim/jobs",
            json!({"project_id":"demo","job_type":"CREATE_SERVER","count":3,"status":"RUNNING"}),
        )
        .await;
    let mut webhook = Receiver::start(answers(200, "ok")).await;
    let mut feishu = Receiver::start(answers(200, r#"{"code":0,"msg":"success","data":{}}"#)).await;
    let mut dingtalk = Receiver::start(answers(200, r#"{"errcode":0,"errmsg":"ok"}"#)).await;
    let mut wecom = Receiver::start(answers(200, r#"{"errcode":0,"errmsg":"ok"}"#)).await;
    let mut slack = Receiver::start(answers(200, "ok")).await;
    let mut discord = Receiver::start(answers(204, "")).await;
    let mut teams = Receiver::start(answers(202, "")).await;
    let mut smtp = SmtpSink::start(vec![]).await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("jobwatch.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[api]
endpoint = "{sim}"
[auth]
method = "none"
[state]
path = "{state}"
[[targets]]
project_id = "demo"
job_types = ["CREATE_SERVER"]
[notifiers.hook]
kind = "webhook"
url = "{webhook}/hook"
secret = "{HOOK_SECRET}"
[notifiers.feishu]
kind = "feishu"
url = "{feishu}/open-apis/bot/v2/hook/abc"
secret = "{FEISHU_SECRET}"
[notifiers.ding]
kind = "dingtalk"
url = "{dingtalk}/robot/send?access_token=tok"
secret = "{DING_SECRET}"
[notifiers.wecom]
kind = "wecom"
url = "{wecom}/cgi-bin/webhook/send?key=k3y"
[notifiers.slack]
kind = "slack"
url = "{slack}/services/T0/B0/xyz"
[notifiers.discord]
kind = "discord"
url = "{discord}/api/webhooks/1/tok"
[notifiers.teams]
kind = "teams"
url = "{teams}/workflows/run"
[notifiers.mail]
kind = "email"
smtp = "smtp://127.0.0.1:{smtp_port}"
starttls = false
from = "jobwatch@example.com"
to = ["oncall@example.com"]
[[routes]]
job_types = ["CREATE_SERVER"]
to = ["FAILED"]
notify = ["hook", "feishu", "ding", "wecom", "slack", "discord", "teams", "mail"]
"#,
            sim = sim.url(),
            state = dir.path().join("state.db").display(),
            webhook = webhook.url,
            feishu = feishu.url,
            dingtalk = dingtalk.url,
            wecom = wecom.url,
            slack = slack.url,
            discord = discord.url,
            teams = teams.url,
            smtp_port = smtp.port,
        ),
    )
    .unwrap();

    let out = jobwatch(&config, &["notify-test"]).await;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for name in [
        "hook", "feishu", "ding", "wecom", "slack", "discord", "teams", "mail",
    ] {
        assert!(text.contains(&format!("{name}: ok")), "{name}: {text}");
    }
    // Every kind says it is a test, and none is a red card.
    let wait = Duration::from_secs(10);
    let mark = jobwatch::notify::text::TEST_MARK;
    assert_eq!(webhook.next(wait).await.json()["test"], true);
    let card = feishu.next(wait).await.json();
    assert!(card.to_string().contains(mark), "{card}");
    assert_eq!(card["card"]["header"]["template"], "blue", "{card}");
    for r in [
        &mut dingtalk,
        &mut wecom,
        &mut slack,
        &mut discord,
        &mut teams,
    ] {
        let body = r.next(wait).await.body;
        assert!(body.contains(mark), "{body}");
    }
    let mail = tokio::time::timeout(wait, smtp.rx.recv())
        .await
        .unwrap()
        .unwrap();
    let subject = crate::email::subject_of(&mail);
    assert!(
        subject.starts_with(&format!("[jobwatch] {mark} ")),
        "{subject}"
    );

    // Baseline, then three failures.
    assert!(jobwatch(&config, &["once"]).await.status.success());
    for id in made["sub_job_ids"].as_array().unwrap() {
        sim.control(
            Method::POST,
            &format!("/sim/jobs/{}", id.as_str().unwrap()),
            json!({"status":"FAILED","error_code":"WKS.00129901"}),
        )
        .await;
    }
    let out = jobwatch(&config, &["once", "--format", "json"]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 3);

    for _ in 0..3 {
        let got = webhook.next(wait).await;
        let id = got.header("webhook-id").unwrap();
        let ts: i64 = got.header("webhook-timestamp").unwrap().parse().unwrap();
        let key = BASE64
            .decode(HOOK_SECRET.trim_start_matches("whsec_"))
            .unwrap();
        let expected = format!(
            "v1,{}",
            hmac_b64(&key, format!("{id}.{ts}.{}", got.body).as_bytes())
        );
        assert_eq!(got.header("webhook-signature"), Some(expected.as_str()));
        assert_eq!(got.json()["events"][0]["to"], "FAILED");
        assert_eq!(got.json()["test"], false);

        let got = feishu.next(wait).await.json();
        let ts = got["timestamp"].as_str().unwrap();
        assert_eq!(
            got["sign"].as_str().unwrap(),
            hmac_b64(format!("{ts}\n{FEISHU_SECRET}").as_bytes(), b"")
        );

        let got = dingtalk.next(wait).await;
        let query: std::collections::HashMap<String, String> =
            url::form_urlencoded::parse(got.query.as_deref().unwrap().as_bytes())
                .into_owned()
                .collect();
        let ts = &query["timestamp"];
        assert_eq!(
            query["sign"],
            hmac_b64(
                DING_SECRET.as_bytes(),
                format!("{ts}\n{DING_SECRET}").as_bytes()
            )
        );
        assert_eq!(query["access_token"], "tok");

        for r in [&mut wecom, &mut slack, &mut discord, &mut teams] {
            let body = r.next(wait).await.body;
            assert!(body.contains("FAILED"), "{body}");
            assert!(!body.contains(mark), "{body}");
        }
        let mail = tokio::time::timeout(wait, smtp.rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert!(mail.data.contains("FAILED"));
    }
}
