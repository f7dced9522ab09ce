//! No secret reaches a log, at any level, ours or our dependencies'
//! (docs/guarantees.md): the daemon runs at `trace` with every kind of secret
//! configured, does real work with each, and its whole log is searched for
//! every secret value, raw and base64-encoded.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use jobwatch::secret::Secret;
use jobwatch::sim::SimOptions;

use crate::smtp_sink::SmtpSink;
use crate::support::{Answer, Daemon, Receiver, Sim, eventually, wait_baselined};

const WITHIN: Duration = Duration::from_secs(30);

const IAM_PASSWORD: &str = "iamPa55-SECRET-0001";
const STATIC_TOKEN: &str = "static-token-SECRET-0002";
const SK: &str = "sk-SECRET-0003-abcdefghijklmnopqrstuv";
const HOOK_SECRET: &str = "whsec_c2VjcmV0LWhvb2stU0VDUkVULTAwMDQ=";
const HOOK_URL_TOKEN: &str = "hookurl-SECRET-0005";
const FEISHU_SECRET: &str = "feishu-SECRET-0006";
const FEISHU_HOOK: &str = "feishuhook-SECRET-0007";
const DING_SECRET: &str = "SECding-SECRET-0008";
const DING_TOKEN: &str = "dingtoken-SECRET-0009";
const WECOM_KEY: &str = "wecomkey-SECRET-0010";
const SLACK_TOKEN: &str = "slacktoken-SECRET-0011";
const DISCORD_TOKEN: &str = "discordtoken-SECRET-0012";
const TEAMS_SIG: &str = "teamssig-SECRET-0013";
const SMTP_PASSWORD: &str = "smtpPa55-SECRET-0014";
/// A receiver that refuses connections: its URL's secret is in a
/// connection error, retried and logged.
const DOWN_TOKEN: &str = "downhook-SECRET-0015";
/// A dead-man switch's URL is its credential, like a chat webhook's.
const HEARTBEAT_UUID: &str = "hbuuid-SECRET-0016";
/// The prefix of every IAM token the simulator issues.
const ISSUED_TOKEN_PREFIX: &str = "MIIsim";

const ALL: &[&str] = &[
    IAM_PASSWORD,
    STATIC_TOKEN,
    SK,
    HOOK_SECRET,
    HOOK_URL_TOKEN,
    FEISHU_SECRET,
    FEISHU_HOOK,
    DING_SECRET,
    DING_TOKEN,
    WECOM_KEY,
    SLACK_TOKEN,
    DISCORD_TOKEN,
    TEAMS_SIG,
    SMTP_PASSWORD,
    DOWN_TOKEN,
    HEARTBEAT_UUID,
];

/// The ways `secret` could show in a log: as it is, and inside any
/// base64 text (SMTP `AUTH PLAIN` carries `\0user\0password` so), at each
/// of the three alignments, without the characters shared with what
/// surrounds it.
fn forms(secret: &str) -> Vec<String> {
    let mut forms = vec![secret.to_owned()];
    for shift in 0..3 {
        let mut bytes = vec![0u8; shift];
        bytes.extend_from_slice(secret.as_bytes());
        let encoded = BASE64.encode(&bytes);
        // Characters carrying bits of the padding bytes or of what
        // follows are not the secret's own.
        let skip = if shift == 0 { 0 } else { shift + 1 };
        let keep = (secret.len() * 4 / 3).saturating_sub(skip + 2);
        forms.push(encoded[skip..skip + keep].to_owned());
    }
    forms
}

#[track_caller]
fn assert_no_secret(log: &str, extra: &[&str]) {
    assert!(
        log.contains("TRACE"),
        "the log is not at trace level:\n{log}"
    );
    for secret in ALL.iter().chain(extra) {
        for form in forms(secret) {
            if let Some(at) = log.find(&form) {
                let start = log[..at].rfind('\n').map_or(0, |n| n + 1);
                let end = log[at..].find('\n').map_or(log.len(), |n| at + n);
                panic!(
                    "{secret:?} is in the log (as {form:?}):\n{}",
                    &log[start..end]
                );
            }
        }
    }
    assert!(
        !log.contains(ISSUED_TOKEN_PREFIX),
        "an issued IAM token is in the log"
    );
}

/// Every receiver stand-in, answering success as each vendor does.
struct Receivers {
    hook: Receiver,
    feishu: Receiver,
    ding: Receiver,
    wecom: Receiver,
    slack: Receiver,
    discord: Receiver,
    teams: Receiver,
    heartbeat: Receiver,
    smtp: SmtpSink,
    /// Bound, never listening: the `down` notifier's port.
    _down: tokio::net::TcpSocket,
    down_port: u16,
}

fn answers(status: u16, body: &str) -> Vec<Answer> {
    vec![(status, vec![], body.to_owned()); 50]
}

impl Receivers {
    async fn start() -> Receivers {
        let down = tokio::net::TcpSocket::new_v4().expect("a socket");
        down.bind("127.0.0.1:0".parse().expect("an address"))
            .expect("bind");
        let down_port = down.local_addr().expect("addr").port();
        Receivers {
            hook: Receiver::start(answers(200, "ok")).await,
            feishu: Receiver::start(answers(200, r#"{"code":0,"msg":"success","data":{}}"#)).await,
            ding: Receiver::start(answers(200, r#"{"errcode":0,"errmsg":"ok"}"#)).await,
            wecom: Receiver::start(answers(200, r#"{"errcode":0,"errmsg":"ok"}"#)).await,
            slack: Receiver::start(answers(200, "ok")).await,
            discord: Receiver::start(answers(204, "")).await,
            teams: Receiver::start(answers(202, "")).await,
            heartbeat: Receiver::start(answers(200, "OK")).await,
            smtp: SmtpSink::start(vec![]).await,
            _down: down,
            down_port,
        }
    }

    /// `[notifiers…]`, a route from every failure to all of them, and
    /// the heartbeat.
    fn config(&self) -> String {
        format!(
            r#"
[notifiers.hook]
kind = "webhook"
url = "{hook}/hook?token={HOOK_URL_TOKEN}"
secret = "{HOOK_SECRET}"
[notifiers.feishu]
kind = "feishu"
url = "{feishu}/open-apis/bot/v2/hook/{FEISHU_HOOK}"
secret = "{FEISHU_SECRET}"
[notifiers.ding]
kind = "dingtalk"
url = "{ding}/robot/send?access_token={DING_TOKEN}"
secret = "{DING_SECRET}"
[notifiers.wecom]
kind = "wecom"
url = "{wecom}/cgi-bin/webhook/send?key={WECOM_KEY}"
[notifiers.slack]
kind = "slack"
url = "{slack}/services/T0/B0/{SLACK_TOKEN}"
[notifiers.discord]
kind = "discord"
url = "{discord}/api/webhooks/1/{DISCORD_TOKEN}"
[notifiers.teams]
kind = "teams"
url = "{teams}/workflows/run?sig={TEAMS_SIG}"
[notifiers.mail]
kind = "email"
smtp = "smtp://mailer@127.0.0.1:{smtp_port}"
starttls = false
password = "{SMTP_PASSWORD}"
from = "jobwatch@example.com"
to = ["oncall@example.com"]
[notifiers.down]
kind = "webhook"
url = "http://127.0.0.1:{down_port}/hook?token={DOWN_TOKEN}"
[[routes]]
to = ["FAILED"]
notify = ["hook", "feishu", "ding", "wecom", "slack", "discord", "teams", "mail", "down"]
[heartbeat]
url = "{heartbeat}/ping/{HEARTBEAT_UUID}"
every = "1s"
"#,
            hook = self.hook.url,
            feishu = self.feishu.url,
            ding = self.ding.url,
            wecom = self.wecom.url,
            slack = self.slack.url,
            discord = self.discord.url,
            teams = self.teams.url,
            heartbeat = self.heartbeat.url,
            smtp_port = self.smtp.port,
            down_port = self.down_port,
        )
    }

    /// Waits until a failure reached every working receiver.
    async fn each_got_one(&mut self) {
        for r in [
            &mut self.hook,
            &mut self.feishu,
            &mut self.ding,
            &mut self.wecom,
            &mut self.slack,
            &mut self.discord,
            &mut self.teams,
        ] {
            // A request whose body never arrived whole (the delivery timed
            // out on a loaded machine and is retried) reads as empty here.
            loop {
                let got = r.next(WITHIN).await;
                if got.body.contains("FAILED") {
                    break;
                }
                assert!(got.body.is_empty(), "{}", got.body);
            }
        }
        let mail = tokio::time::timeout(WITHIN, self.smtp.rx.recv())
            .await
            .expect("a mail")
            .expect("the sink runs");
        let auth = mail.auth.expect("the session authenticated");
        assert_eq!(auth.password, SMTP_PASSWORD);
        self.heartbeat.next(WITHIN).await;
    }
}

/// Runs `jobwatch run` at `trace` with `auth` against `sim`, makes one
/// CREATE_SERVER sub-job fail, waits until every receiver has it and the
/// unreachable one has been retried, stops the daemon; returns its log.
async fn trace_log_of_a_run(sim: &Sim, auth: &str) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut receivers = Receivers::start().await;
    let sub_job = sim.create_waiting("CREATE_SERVER", 1).await.remove(0);
    let state = dir.path().join("state.db");
    let config = dir.path().join("jobwatch.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[api]
endpoint = "{sim}"
iam_endpoint = "{sim}"
max_requests_per_minute = 6000
{auth}
[state]
path = {state:?}
[poll]
interval = "1s"
active_interval = "1s"
[delivery]
shutdown_grace = "2s"
[log]
level = "trace"
[[targets]]
project_id = "demo"
job_types = ["CREATE_SERVER"]
{notifiers}"#,
            sim = sim.url(),
            notifiers = receivers.config(),
        ),
    )
    .expect("write config");
    let log = dir.path().join("jobwatch.log");
    let mut daemon = Daemon::spawn(&config, None, &log);
    wait_baselined(&state, "CREATE_SERVER", WITHIN).await;
    sim.set_status(&sub_job, "FAILED").await;
    receivers.each_got_one().await;
    eventually(WITHIN, "a retry of the unreachable notifier", || {
        let retried = daemon
            .log()
            .lines()
            .any(|l| l.contains("will retry") && l.contains("down"));
        async move { retried.then_some(()) }
    })
    .await;
    daemon.signal("TERM");
    let status = daemon.exit_status(WITHIN).await;
    assert_eq!(status.code(), Some(0), "{status:?}");
    let text = daemon.log();
    assert!(
        text.contains("transitions detected"),
        "the failure was handled"
    );
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trace_log_with_password_auth_and_every_notifier_holds_no_secret() {
    let sim = Sim::start(SimOptions {
        iam_user: Some("ops".into()),
        iam_password: Some(Secret::new(IAM_PASSWORD)),
        ..SimOptions::default()
    })
    .await;
    let auth = format!(
        "[auth]\nmethod = \"password\"\nuser = \"ops\"\ndomain = \"acme\"\npassword = \"{IAM_PASSWORD}\""
    );
    let log = trace_log_of_a_run(&sim, &auth).await;
    let issued = sim.stats().await["by_path"]["/v3/auth/tokens"]
        .as_u64()
        .unwrap_or(0);
    assert!(issued >= 1, "the daemon fetched an IAM token");
    assert_no_secret(&log, &[]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trace_log_with_token_auth_holds_no_secret() {
    let sim = Sim::start(SimOptions {
        token: Some(Secret::new(STATIC_TOKEN)),
        ..SimOptions::default()
    })
    .await;
    let auth = format!("[auth]\nmethod = \"token\"\ntoken = \"{STATIC_TOKEN}\"");
    let log = trace_log_of_a_run(&sim, &auth).await;
    assert_no_secret(&log, &[]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trace_log_with_aksk_auth_holds_no_secret() {
    let sim = Sim::start(SimOptions {
        ak: Some("AKTEST0000000000".into()),
        sk: Some(Secret::new(SK)),
        ..SimOptions::default()
    })
    .await;
    let auth = format!("[auth]\nmethod = \"aksk\"\nak = \"AKTEST0000000000\"\nsk = \"{SK}\"");
    let log = trace_log_of_a_run(&sim, &auth).await;
    let signed = sim.stats().await["by_status"]["200"].as_u64().unwrap_or(0);
    assert!(signed >= 2, "signed requests were accepted");
    assert_no_secret(&log, &[]);
}

#[test]
fn the_search_finds_a_secret_in_auth_plain() {
    // The check itself: lettre's trace once logged `AUTH PLAIN` with
    // base64 of "\0user\0password".
    let line = format!(
        "DEBUG lettre: >> AUTH PLAIN {}",
        BASE64.encode(format!("\0mailer\0{SMTP_PASSWORD}"))
    );
    assert!(
        forms(SMTP_PASSWORD).iter().any(|form| line.contains(form)),
        "{line}"
    );
}

/// `{:?}` of every notifier, configured and running, shows no URL
/// credential and no header value: chat URLs are their credential, and
/// they end up in panics and debug logs.
#[tokio::test]
async fn debug_of_every_notifier_hides_urls_and_header_values() {
    use figment::Figment;
    use figment::providers::{Format, Toml};
    use jobwatch::config::{Config, EnvVars};
    use jobwatch::notify::kinds::KINDS;

    jobwatch::install_crypto_provider();
    let toml = format!(
        r#"
[auth]
method = "none"
[notifiers.hook]
kind = "webhook"
url = "https://hooks.example.com/{HOOK_URL_TOKEN}"
secret = "{HOOK_SECRET}"
headers = {{ Authorization = "Bearer {STATIC_TOKEN}" }}
[notifiers.feishu]
kind = "feishu"
url = "https://open.feishu.cn/open-apis/bot/v2/hook/{FEISHU_HOOK}"
secret = "{FEISHU_SECRET}"
[notifiers.ding]
kind = "dingtalk"
url = "https://oapi.dingtalk.com/robot/send?access_token={DING_TOKEN}"
secret = "{DING_SECRET}"
[notifiers.wecom]
kind = "wecom"
url = "https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key={WECOM_KEY}"
[notifiers.slack]
kind = "slack"
url = "https://hooks.slack.com/services/T0/B0/{SLACK_TOKEN}"
[notifiers.discord]
kind = "discord"
url = "https://discord.com/api/webhooks/1/{DISCORD_TOKEN}"
[notifiers.teams]
kind = "teams"
url = "https://example.logic.azure.com/workflows/x/invoke?sig={TEAMS_SIG}"
[notifiers.mail]
kind = "email"
smtp = "smtps://jobwatch@smtp.example.com"
password = "{SMTP_PASSWORD}"
from = "jobwatch@example.com"
to = ["oncall@example.com"]
[notifiers.journal]
kind = "log"
"#
    );
    let figment = Figment::new()
        .merge(Toml::string(&toml))
        .merge(EnvVars::default());
    let config = Config::from_figment(figment)
        .expect("a valid config")
        .config;
    let kinds: std::collections::BTreeSet<_> =
        config.notifiers.values().map(|n| n.kind().name).collect();
    assert_eq!(kinds.len(), KINDS.len(), "every kind is covered");
    let running = jobwatch::daemon::wiring::notifiers(&config).expect("notifiers build");
    for (name, slot) in &running {
        let shown = format!("{:?} {:?}", config.notifiers[name], slot.notifier);
        for secret in ALL {
            assert!(!shown.contains(secret), "{name} shows {secret}: {shown}");
        }
        assert!(
            !shown.contains("Bearer"),
            "{name} shows a header value: {shown}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notify_test_and_once_at_trace_hold_no_secret() {
    let sim = Sim::start(SimOptions::default()).await;
    let receivers = Receivers::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("jobwatch.toml");
    std::fs::write(
        &config,
        format!(
            "[api]\nendpoint = \"{}\"\n[auth]\nmethod = \"token\"\ntoken = \"{STATIC_TOKEN}\"\n\
             [state]\npath = {:?}\n[log]\nlevel = \"trace\"\n\
             [[targets]]\nproject_id = \"demo\"\njob_types = [\"CREATE_SERVER\"]\n{}",
            sim.url(),
            dir.path().join("state.db"),
            receivers.config()
        ),
    )
    .expect("write config");
    for args in [&["notify-test"][..], &["once"]] {
        let out = crate::support::jobwatch(&config, args).await;
        let log = String::from_utf8_lossy(&out.stderr).into_owned()
            + &String::from_utf8_lossy(&out.stdout);
        if args == ["notify-test"] {
            assert!(
                log.contains("mail: ok"),
                "the mail went through AUTH:\n{log}"
            );
        }
        assert_no_secret(&log, &[]);
    }
}
