//! The configuration layer: every bad config names its key, env overrides,
//! secrets from files, redaction, and `jobwatch check` end to end.
//!
//! Configs are built from explicit providers (`Toml::string` plus an
//! [`EnvVars`] snapshot), never from the process environment, so tests do
//! not race each other or leak variables into child processes.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Format, Toml};
use jobwatch::cloud::auth::TokenSource;
use jobwatch::config::{AuthConfig, Config, ConfigError, EnvVars, GroupBy, Loaded};
use jobwatch::notify::kinds::NotifierSettings;
use jobwatch::notify::kinds::email::SmtpTls;
use jobwatch::watch::strategy::Strategy;

/// AK/SK from the SDK variables, so a snippet needs no `[auth]` to be valid.
const SDK_CREDS: &[(&str, &str)] = &[
    ("HUAWEICLOUD_SDK_AK", "AKFROMENV"),
    ("HUAWEICLOUD_SDK_SK", "sk-from-env"),
];

fn load_with(toml: &str, env: &[(&str, &str)]) -> Result<Loaded, ConfigError> {
    let figment = Figment::new()
        .merge(Toml::string(toml))
        .merge(EnvVars::from_pairs(env.iter().copied()));
    Config::from_figment(figment)
}

fn load(toml: &str) -> Loaded {
    match load_with(toml, SDK_CREDS) {
        Ok(l) => l,
        Err(e) => panic!("expected a valid config, got:\n{e}"),
    }
}

/// Asserts `toml` is rejected with a problem whose text contains `fragment`.
#[track_caller]
fn check_bad(toml: &str, fragment: &str) {
    match load_with(toml, SDK_CREDS) {
        Ok(_) => panic!("config was accepted, expected {fragment:?}:\n{toml}"),
        Err(e) => {
            let text = e.to_string();
            assert!(
                text.contains(fragment),
                "expected {fragment:?} in:\n{text}\nfor config:\n{toml}"
            );
        }
    }
}

/// A file in a fresh temp dir; the dir lives as long as the returned guard.
fn temp_file(name: &str, content: &str, mode: u32) -> (tempfile::TempDir, PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    let mut f = std::fs::File::create(&path).unwrap();
    f.write_all(content.as_bytes()).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    (dir, path)
}

const LOG_NOTIFIER: &str = "[notifiers.journal]\nkind = \"log\"\n";

#[test]
fn bad_configs_name_their_key() {
    let cases: &[(&str, &str)] = &[
        // unknown keys, top level and nested
        ("bogus = 1", "bogus: unknown key"),
        // An email's body template is checked like any other.
        (
            "[notifiers.m]\nkind = \"email\"\nsmtp = \"smtp://127.0.0.1:25\"\nstarttls = false\nfrom = \"a@example.com\"\nto = [\"b@example.com\"]\ntemplate = \"{{ event.nope }}\"",
            "notifiers.m.template: rendering the sample event: line 1: undefined value",
        ),
        ("[api]\ntimeoutt = \"1s\"", "api.timeoutt: unknown key"),
        (
            "[notifiers.x]\nkind = \"log\"\nurll = \"https://a\"",
            "notifiers.x.urll: unknown key",
        ),
        (
            "[[targets]]\nproject_id = \"p\"\njob_types = [\"CREATE_SERVER\"]\nproject = \"p\"",
            "targets[0].project: unknown key",
        ),
        // durations
        (
            "[poll]\ninterval = \"5 minutes please\"",
            "poll.interval: invalid duration \"5 minutes please\"",
        ),
        ("[poll]\ninterval = 30", "duration string"),
        (
            "[poll]\ninterval = \"500ms\"",
            "poll.interval: \"500ms\" is too short",
        ),
        (
            "[poll]\ninterval = \"30s\"\nactive_interval = \"1m\"",
            "poll.active_interval: 1m is longer than poll.interval",
        ),
        (
            "[poll]\nstrategy = \"lazy\"",
            "poll.strategy: unknown value \"lazy\"",
        ),
        (
            "[poll]\nnotify_existing = \"maybe\"",
            "poll.notify_existing",
        ),
        // api
        (
            "[api]\nendpoint = \"not a url\"",
            "api.endpoint: invalid URL",
        ),
        (
            "[api]\nendpoint = \"ftp://example.com\"",
            "api.endpoint: URL \"ftp://example.com\" must be http:// or https://",
        ),
        (
            "[api]\nregion = \"mars-1\"",
            "api.region: unknown region \"mars-1\"",
        ),
        (
            "[api]\nmax_requests_per_minute = 0",
            "api.max_requests_per_minute: 0 is out of range",
        ),
        // auth
        (
            "[auth]\nmethod = \"magic\"",
            "auth.method: unknown method \"magic\"",
        ),
        (
            "[auth]\nsk_file = \"/nonexistent/jobwatch/sk\"",
            "auth.sk_file: cannot read /nonexistent/jobwatch/sk",
        ),
        (
            "[auth]\nsk = \"x\"\nsk_file = \"/etc/hostname\"",
            "auth.sk: both `sk` and `sk_file` are set",
        ),
        (
            "[auth]\ntoken = \"t\"",
            "auth.token: not used by auth.method = \"aksk\"",
        ),
        ("[auth]\nmethod = \"token\"", "auth.token: missing"),
        (
            "[auth]\nmethod = \"token\"\ntoken_file = \"/nonexistent/token\"",
            "auth.token_file: cannot read /nonexistent/token",
        ),
        (
            "[auth]\nmethod = \"password\"\npassword = \"p\"",
            "auth.user: missing",
        ),
        // delivery, log, server
        (
            "[delivery]\ntimezone = \"Mars/Olympus\"",
            "delivery.timezone: unknown time zone \"Mars/Olympus\"",
        ),
        (
            "[log]\nlevel = \"verbose\"",
            "log.level: \"verbose\" is not a level",
        ),
        (
            "[log]\nlevel = \"jobwatch=loud\"",
            "log.level: invalid log filter",
        ),
        (
            "[log]\nformat = \"xml\"",
            "log.format: unknown value \"xml\"",
        ),
        (
            "[server]\nlisten = \"localhost:http\"",
            "server.listen: \"localhost:http\"",
        ),
        ("[server]", "server.listen: missing"),
        (
            "[heartbeat]\nurl = \"hc-ping\"",
            "heartbeat.url: invalid URL",
        ),
        (
            "[heartbeat]\nurl = \"https://hc.example/x\"\nevery = \"0s\"",
            "heartbeat.every",
        ),
        // targets
        (
            "[[targets]]\nproject_id = \"p\"",
            "targets[0].job_types: missing",
        ),
        (
            "[[targets]]\nproject_id = \"p\"\njob_types = []",
            "targets[0].job_types: empty",
        ),
        (
            "[[targets]]\njob_types = [\"CREATE_SERVER\"]",
            "targets[0].project_id: missing",
        ),
        (
            "[[targets]]\nproject_id = \"a/../b\"\njob_types = [\"CREATE_SERVER\"]",
            "targets[0].project_id: \"a/../b\" is not a project id",
        ),
        (
            "[[targets]]\nproject_id = \"p\"\njob_types = [\"CREATE_SERVER\"]\n\
             [[targets]]\nproject_id = \"p\"\njob_types = [\"DELETE_SERVER\", \"CREATE_SERVER\"]",
            "targets[1].job_types: duplicate target: project \"p\", job type CREATE_SERVER is already watched by targets[0]",
        ),
        (
            "[[targets]]\nproject_id = \"p\"\njob_types = [\"CREATE_SERVER\", \"CREATE_SERVER\"]",
            "job type CREATE_SERVER is listed twice here",
        ),
        // notifiers
        (
            "[notifiers.x]\nkind = \"chaat\"",
            "notifiers.x.kind: unknown notifier kind \"chaat\"",
        ),
        (
            "[notifiers.x]\nurl = \"https://a\"",
            "notifiers.x.kind: missing",
        ),
        (
            "[notifiers.\"a b\"]\nkind = \"log\"",
            "notifier name \"a b\" may only use",
        ),
        (
            "[notifiers.s]\nkind = \"slack\"",
            "notifiers.s.url: missing",
        ),
        (
            "[notifiers.s]\nkind = \"slack\"\nurl = \"gopher://hooks.example\"",
            "notifiers.s.url: URL must be http:// or https://",
        ),
        (
            "[notifiers.s]\nkind = \"slack\"\nurl = \"https://a\"\nheaders = { X = \"y\" }",
            "notifiers.s.headers: not used by kind \"slack\"",
        ),
        (
            "[notifiers.w]\nkind = \"webhook\"\nurl = \"https://a\"\nheaders = { \"bad header\" = \"y\" }",
            "is not a valid HTTP header name",
        ),
        (
            "[notifiers.f]\nkind = \"feishu\"\nurl = \"https://a\"\nsecret = \"s\"\nsecret_file = \"/etc/hostname\"",
            "notifiers.f.secret: both `secret` and `secret_file` are set",
        ),
        (
            "[notifiers.d]\nkind = \"dingtalk\"\nurl = \"https://a\"\nsecret_file = \"/nonexistent/ding\"",
            "notifiers.d.secret_file: cannot read /nonexistent/ding",
        ),
        (
            "[notifiers.s]\nkind = \"slack\"\nurl = \"https://a\"\ntemplate = \"{{ oops\"",
            "notifiers.s.template: invalid template",
        ),
        (
            "[notifiers.s]\nkind = \"slack\"\nurl = \"https://a\"\nrate_limit = \"fast\"",
            "notifiers.s.rate_limit: invalid rate limit \"fast\"",
        ),
        (
            "[notifiers.s]\nkind = \"slack\"\nurl = \"https://a\"\nmax_concurrency = 0",
            "notifiers.s.max_concurrency: 0 is out of range",
        ),
        (
            "[notifiers.l]\nkind = \"log\"\nlevel = \"loud\"",
            "notifiers.l.level: unknown value \"loud\"",
        ),
        (
            "[notifiers.m]\nkind = \"email\"\nsmtp = \"smtps://u:hunter2@smtp.example.com\"\nfrom = \"a@example.com\"\nto = [\"b@example.com\"]",
            "notifiers.m.smtp: the URL carries a password",
        ),
        (
            "[notifiers.m]\nkind = \"email\"\nsmtp = \"smtp://smtp.example.com\"\nstarttls = false\nfrom = \"a@example.com\"\nto = [\"b@example.com\"]",
            "clear text",
        ),
        (
            "[notifiers.m]\nkind = \"email\"\nsmtp = \"imap://mail.example.com\"\nfrom = \"a@example.com\"\nto = [\"b@example.com\"]",
            "notifiers.m.smtp: scheme must be smtp://",
        ),
        (
            "[notifiers.m]\nkind = \"email\"\nsmtp = \"smtps://u@smtp.example.com\"\nfrom = \"a@example.com\"\nto = [\"b@example.com\"]",
            "notifiers.m.password: missing",
        ),
        (
            "[notifiers.m]\nkind = \"email\"\nsmtp = \"smtps://smtp.example.com\"\nfrom = \"a@example.com\"\nto = [\"nobody\"]",
            "notifiers.m.to[0]: \"nobody\" is not an email address",
        ),
        (
            "[notifiers.m]\nkind = \"email\"\nsmtp = \"smtps://smtp.example.com\"\nfrom = \"a@example.com\"\nto = []",
            "notifiers.m.to: empty",
        ),
        // routes
        (
            "[notifiers.chat]\nkind = \"log\"\n[[routes]]\nnotify = [\"chaat\"]",
            "routes[0].notify: unknown notifier \"chaat\"",
        ),
        ("[[routes]]\nnotify = []", "routes[0].notify: empty"),
        ("[[routes]]\nto = [\"FAILED\"]", "routes[0].notify: missing"),
        (
            &format!("{LOG_NOTIFIER}[[routes]]\nnotify = [\"journal\"]\nkinds = [\"created\"]"),
            "routes[0].kinds[0]: unknown event kind \"created\"",
        ),
        (
            &format!("{LOG_NOTIFIER}[[routes]]\nnotify = [\"journal\"]\nto = []"),
            "routes[0].to: empty",
        ),
        (
            &format!("{LOG_NOTIFIER}[[routes]]\nnotify = [\"journal\"]\ngroup_by = \"job\""),
            "routes[0].group_by: unknown value \"job\"",
        ),
        (
            &format!("{LOG_NOTIFIER}[[routes]]\nnotify = [\"journal\"]\ngroup_window = \"soon\""),
            "routes[0].group_window: invalid duration \"soon\"",
        ),
    ];
    for (toml, fragment) in cases {
        check_bad(toml, fragment);
    }
}

#[test]
fn no_credentials_and_no_method_is_an_error_that_says_how_to_fix() {
    let e = load_with("", &[]).unwrap_err().to_string();
    assert!(e.contains("auth.method: not set"), "{e}");
    assert!(e.contains("HUAWEICLOUD_SDK_AK"), "{e}");
}

#[test]
fn every_problem_is_reported_together() {
    let e = load_with(
        "[poll]\ninterval = \"soon\"\n[log]\nformat = \"xml\"\n[[routes]]\nnotify = [\"nowhere\"]\n",
        SDK_CREDS,
    )
    .unwrap_err();
    assert_eq!(e.problems.len(), 3, "{e}");
    let text = e.to_string();
    assert!(
        text.starts_with("invalid configuration, 3 problems:"),
        "{text}"
    );
    for key in ["poll.interval", "log.format", "routes[0].notify"] {
        assert!(text.contains(key), "{key} missing from:\n{text}");
    }
}

#[test]
fn a_bad_value_does_not_cause_a_second_derived_problem() {
    // The default standing in for the bad interval (30s) is shorter than
    // active_interval; that comparison must not be reported as well.
    let e = load_with(
        "[poll]\ninterval = \"soon\"\nactive_interval = \"1m\"\n",
        SDK_CREDS,
    )
    .unwrap_err();
    assert_eq!(e.problems.len(), 1, "{e}");
}

#[test]
fn env_values_that_look_like_numbers_stay_strings() {
    let env = [
        ("JOBWATCH_AUTH__AK", "0123456789"),
        ("JOBWATCH_AUTH__SK", "42"),
    ];
    let c = load_with("", &env).unwrap().config;
    let AuthConfig::Aksk(a) = &c.auth else {
        panic!("expected aksk")
    };
    assert_eq!((a.ak.as_str(), a.sk.expose()), ("0123456789", "42"));
}

#[test]
fn problems_name_the_file_or_variable_they_came_from() {
    let (_dir, path) = temp_file(
        "jobwatch.toml",
        "[notifiers.chat]\nkind = \"log\"\n[[routes]]\nnotify = [\"chaat\"]\n",
        0o600,
    );
    let e = Config::load_with_env(&path, true, EnvVars::from_pairs(SDK_CREDS.iter().copied()))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains(&format!(
            "routes[0].notify: unknown notifier \"chaat\" (did you mean \"chat\"?); defined: chat (in {})",
            path.display()
        )),
        "{e}"
    );

    // An unknown key in the file: serde's error carries figment's metadata.
    let (_dir, path) = temp_file("jobwatch.toml", "[api]\ntimeoutt = \"1s\"\n", 0o600);
    let e = Config::load_with_env(&path, true, EnvVars::from_pairs(SDK_CREDS.iter().copied()))
        .unwrap_err()
        .to_string();
    assert!(e.contains("api.timeoutt: unknown key"), "{e}");
    assert!(e.contains(&path.display().to_string()), "{e}");

    let mut env = SDK_CREDS.to_vec();
    env.push(("JOBWATCH_API__TIMEOUT", "soon"));
    let e = load_with("", &env).unwrap_err().to_string();
    assert!(e.contains("api.timeout: invalid duration \"soon\""), "{e}");
    assert!(e.contains("(from env JOBWATCH_API__TIMEOUT)"), "{e}");

    let mut env = SDK_CREDS.to_vec();
    env.push(("HUAWEICLOUD_SDK_IAM_ENDPOINT", "iam.example.com"));
    let e = load_with("", &env).unwrap_err().to_string();
    assert!(
        e.contains("api.iam_endpoint") && e.contains("from env HUAWEICLOUD_SDK_IAM_ENDPOINT"),
        "{e}"
    );
}

#[test]
fn defaults_fill_every_section() {
    let l = load("");
    let c = &l.config;
    assert_eq!(c.api.region, "cn-north-4");
    assert_eq!(
        c.api.endpoint.as_str(),
        "https://appstream.cn-north-4.myhuaweicloud.com/"
    );
    assert_eq!(
        c.api.iam_endpoint.as_str(),
        "https://iam.cn-north-4.myhuaweicloud.com/"
    );
    assert_eq!(c.api.timeout, Duration::from_secs(10));
    assert_eq!(c.api.max_requests_per_minute, 100);
    assert_eq!(c.state.path, Path::new("/var/lib/jobwatch/state.db"));
    assert_eq!(c.poll.interval, Duration::from_secs(30));
    assert_eq!(c.poll.active_interval, Duration::from_secs(5));
    assert!(!c.poll.notify_existing);
    assert_eq!(c.poll.stuck_after, Duration::from_secs(3600));
    assert_eq!(c.poll.max_backoff, Duration::from_secs(300));
    assert_eq!(c.poll.strategy, Strategy::Incremental);
    assert_eq!(c.poll.full_scan_every, Duration::from_secs(600));
    assert_eq!(c.delivery.max_age, Duration::from_secs(86400));
    assert_eq!(c.delivery.shutdown_grace, Duration::from_secs(10));
    assert_eq!(c.delivery.timezone.iana_name(), Some("UTC"));
    assert_eq!(c.log.level, "info");
    assert!(c.heartbeat.is_none() && c.server.is_none());
    match &c.auth {
        AuthConfig::Aksk(a) => {
            assert_eq!(a.ak, "AKFROMENV");
            assert_eq!(a.sk.expose(), "sk-from-env");
            assert!(a.security_token.is_none());
        }
        other => panic!("expected aksk, got {other:?}"),
    }
    // Nothing to watch and nowhere to send: both are worth a warning.
    assert!(l.warnings.iter().any(|w| w.contains("no [[targets]]")));
    assert!(l.warnings.iter().any(|w| w.contains("no [[routes]]")));
}

#[test]
fn human_durations_parse() {
    let c = load(
        "[poll]\ninterval = \"1h 30m\"\nactive_interval = \"2s\"\n[api]\ntimeout = \"300ms\"\n",
    )
    .config;
    assert_eq!(c.poll.interval, Duration::from_secs(5400));
    assert_eq!(c.poll.active_interval, Duration::from_secs(2));
    assert_eq!(c.api.timeout, Duration::from_millis(300));
    // Days and weeks are 24 hours and 7 such days.
    let c = load("[delivery]\nkeep_delivered = \"7d\"\nmax_age = \"1w 12h\"\n").config;
    assert_eq!(c.delivery.keep_delivered, Duration::from_secs(7 * 86400));
    assert_eq!(
        c.delivery.max_age,
        Duration::from_secs(7 * 86400 + 12 * 3600)
    );
    assert_eq!(
        load("").config.delivery.keep_delivered,
        Duration::from_secs(7 * 86400)
    );
    check_bad(
        "[delivery]\nkeep_delivered = \"-1d\"\n",
        "delivery.keep_delivered",
    );
}

#[test]
fn endpoint_wins_over_region_even_an_unknown_one() {
    let c = load("[api]\nregion = \"xx-new-1\"\nendpoint = \"http://127.0.0.1:18080\"\n").config;
    assert_eq!(c.api.endpoint.as_str(), "http://127.0.0.1:18080/");
    assert_eq!(c.api.region, "xx-new-1");
}

#[test]
fn env_overrides_the_file() {
    let toml = "[api]\ntimeout = \"10s\"\n\
                [notifiers.chat]\nkind = \"slack\"\nurl = \"https://hooks.example.com/old\"\n\
                [[routes]]\nnotify = [\"chat\"]\n";
    let mut env = SDK_CREDS.to_vec();
    env.extend([
        ("JOBWATCH_API__TIMEOUT", "20s"),
        ("JOBWATCH_API__MAX_REQUESTS_PER_MINUTE", "50"),
        ("JOBWATCH_POLL__NOTIFY_EXISTING", "true"),
        (
            "JOBWATCH_NOTIFIERS__CHAT__URL",
            "https://hooks.example.com/new",
        ),
        // The CLI's config path: must not be read as a key.
        ("JOBWATCH_CONFIG", "/etc/jobwatch/jobwatch.toml"),
    ]);
    let c = load_with(toml, &env).unwrap().config;
    assert_eq!(c.api.timeout, Duration::from_secs(20));
    assert_eq!(c.api.max_requests_per_minute, 50);
    assert!(c.poll.notify_existing);
    match &c.notifiers["chat"].settings {
        NotifierSettings::Slack(s) => {
            assert_eq!(s.url.expose().as_str(), "https://hooks.example.com/new")
        }
        other => panic!("expected slack, got {other:?}"),
    }
}

#[test]
fn a_notifier_can_come_from_env_alone() {
    let env = [
        ("JOBWATCH_AUTH__METHOD", "none"),
        ("JOBWATCH_NOTIFIERS__OPS__KIND", "webhook"),
        (
            "JOBWATCH_NOTIFIERS__OPS__URL",
            "https://hooks.example.com/x",
        ),
    ];
    let l = load_with("", &env).unwrap();
    assert!(matches!(l.config.auth, AuthConfig::None));
    assert!(
        l.warnings
            .iter()
            .any(|w| w.contains("auth.method = \"none\""))
    );
    assert!(l.config.notifiers.contains_key("ops"));
}

#[test]
fn sdk_variables_are_fallbacks() {
    let env = [
        ("HUAWEICLOUD_SDK_AK", "AKENV"),
        ("HUAWEICLOUD_SDK_SK", "skenv"),
        ("HUAWEICLOUD_SDK_SECURITY_TOKEN", "tokenenv"),
        ("HUAWEICLOUD_SDK_PROJECT_ID", "projenv"),
        ("HUAWEICLOUD_SDK_IAM_ENDPOINT", "https://iam.example.com"),
    ];
    let c = load_with("[[targets]]\njob_types = [\"CREATE_SERVER\"]\n", &env)
        .unwrap()
        .config;
    let AuthConfig::Aksk(a) = &c.auth else {
        panic!("expected aksk")
    };
    assert_eq!(a.ak, "AKENV");
    assert_eq!(a.sk.expose(), "skenv");
    assert_eq!(a.security_token.as_ref().unwrap().expose(), "tokenenv");
    assert_eq!(c.targets[0].project_id, "projenv");
    assert_eq!(c.api.iam_endpoint.as_str(), "https://iam.example.com/");

    // Keys in the file win; and the SDK's temporary token is not paired
    // with an AK that did not come from the SDK.
    let c = load_with(
        "[auth]\nak = \"AKFILE\"\nsk = \"skfile\"\n[[targets]]\nproject_id = \"p\"\njob_types = [\"CREATE_SERVER\"]\n",
        &env,
    )
    .unwrap()
    .config;
    let AuthConfig::Aksk(a) = &c.auth else {
        panic!("expected aksk")
    };
    assert_eq!(a.ak, "AKFILE");
    assert_eq!(a.sk.expose(), "skfile");
    assert!(a.security_token.is_none());
    assert_eq!(c.targets[0].project_id, "p");

    // An SK from the environment is not a conflict with an sk_file.
    let (_dir, sk) = temp_file("sk", "skfromfile\n", 0o600);
    let c = load_with(
        &format!("[auth]\nsk_file = {:?}\n", sk.display().to_string()),
        &env,
    )
    .unwrap()
    .config;
    let AuthConfig::Aksk(a) = &c.auth else {
        panic!("expected aksk")
    };
    assert_eq!(a.sk.expose(), "skfromfile");
}

#[test]
fn secret_files_are_read_and_trimmed() {
    let (_d1, sk) = temp_file("sk", "s3cret-sk\n", 0o600);
    let (_d2, fs) = temp_file("feishu", "feishu-s3cret\r\n", 0o600);
    let (_d3, pw) = temp_file("smtp", "smtp-s3cret\n\n", 0o600);
    let toml = format!(
        "[auth]\nak = \"AK\"\nsk_file = {sk:?}\n\
         [notifiers.chat]\nkind = \"feishu\"\nurl = \"https://open.feishu.cn/hook/x\"\nsecret_file = {fs:?}\n\
         [notifiers.mail]\nkind = \"email\"\nsmtp = \"smtps://jobwatch@smtp.example.com\"\npassword_file = {pw:?}\n\
         from = \"jobwatch@example.com\"\nto = [\"ops@example.com\"]\n",
        sk = sk.display().to_string(),
        fs = fs.display().to_string(),
        pw = pw.display().to_string(),
    );
    let c = load_with(&toml, &[]).unwrap().config;
    let AuthConfig::Aksk(a) = &c.auth else {
        panic!("expected aksk")
    };
    assert_eq!(a.sk.expose(), "s3cret-sk");
    let NotifierSettings::Feishu(f) = &c.notifiers["chat"].settings else {
        panic!("expected feishu")
    };
    assert_eq!(f.secret.as_ref().unwrap().expose(), "feishu-s3cret");
    let NotifierSettings::Email(m) = &c.notifiers["mail"].settings else {
        panic!("expected email")
    };
    assert_eq!(m.password.as_ref().unwrap().expose(), "smtp-s3cret");
    assert_eq!(m.smtp.tls, SmtpTls::Implicit);
    assert_eq!(m.smtp.port, 465);
    assert_eq!(m.smtp.user.as_deref(), Some("jobwatch"));
}

/// An email's `template` was refused once; now it is its body (the text
/// part), compiled at check like every kind's, beside `subject_template`.
#[test]
fn an_email_takes_a_body_template_and_a_subject_template() {
    let toml = "[auth]\nak = \"AK\"\nsk = \"SK\"\n\
                [notifiers.mail]\nkind = \"email\"\nsmtp = \"smtp://127.0.0.1:25\"\nstarttls = false\n\
                from = \"a@example.com\"\nto = [\"b@example.com\"]\n\
                template = \"{{ title }}\"\nsubject_template = \"{{ count }} events\"\n";
    let c = load_with(toml, &[]).unwrap().config;
    let mail = &c.notifiers["mail"];
    assert_eq!(
        mail.template.as_ref().map(|t| t.source()),
        Some("{{ title }}")
    );
    let NotifierSettings::Email(m) = &mail.settings else {
        panic!("expected email")
    };
    assert_eq!(
        m.subject_template.as_ref().map(|t| t.source()),
        Some("{{ count }} events")
    );
}

#[test]
fn a_token_file_stays_a_path() {
    let (_dir, token) = temp_file("token", "tok\n", 0o600);
    let c = load_with(
        &format!(
            "[auth]\nmethod = \"token\"\ntoken_file = {:?}\n",
            token.display().to_string()
        ),
        &[],
    )
    .unwrap()
    .config;
    match &c.auth {
        AuthConfig::Token(t) => match &t.source {
            TokenSource::File(p) => assert_eq!(p, &token),
            other => panic!("expected a file, got {other:?}"),
        },
        other => panic!("expected token auth, got {other:?}"),
    }
}

#[test]
fn relative_secret_files_are_relative_to_the_config_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("sk"), "relative-sk\n").unwrap();
    let path = dir.path().join("jobwatch.toml");
    std::fs::write(&path, "[auth]\nak = \"AK\"\nsk_file = \"sk\"\n").unwrap();
    let c = Config::load_with_env(&path, true, EnvVars::default())
        .unwrap()
        .config;
    let AuthConfig::Aksk(a) = &c.auth else {
        panic!("expected aksk")
    };
    assert_eq!(a.sk.expose(), "relative-sk");
}

#[test]
fn smtp_to_loopback_may_skip_starttls_and_starttls_is_the_default() {
    let c = load(
        "[notifiers.relay]\nkind = \"email\"\nsmtp = \"smtp://127.0.0.1:2525\"\nstarttls = false\n\
         from = \"a@example.com\"\nto = [\"b@example.com\"]\n\
         [notifiers.isp]\nkind = \"email\"\nsmtp = \"smtp://smtp.example.com\"\n\
         from = \"a@example.com\"\nto = [\"b@example.com\"]\n",
    )
    .config;
    let NotifierSettings::Email(relay) = &c.notifiers["relay"].settings else {
        panic!()
    };
    assert_eq!((relay.smtp.tls, relay.smtp.port), (SmtpTls::None, 2525));
    let NotifierSettings::Email(isp) = &c.notifiers["isp"].settings else {
        panic!()
    };
    assert_eq!((isp.smtp.tls, isp.smtp.port), (SmtpTls::Starttls, 587));
}

#[test]
fn routes_defaults_and_notifier_defaults() {
    let c = load(
        "[notifiers.ding]\nkind = \"dingtalk\"\nurl = \"https://oapi.dingtalk.com/robot/send?access_token=x\"\n\
         [[routes]]\nnotify = [\"ding\"]\n\
         [[routes]]\nnotify = [\"ding\"]\njob_types = [\"CREATE_SERVER\"]\nto = [\"FAILED\"]\n\
         kinds = [\"vanished\"]\ngroup_window = \"30s\"\ngroup_by = \"job_id\"\n",
    )
    .config;
    let r = &c.routes[0];
    assert!(r.job_types.is_empty() && r.to.is_empty());
    assert_eq!(
        r.kinds.iter().map(|k| k.as_str()).collect::<Vec<_>>(),
        ["appeared", "changed", "stuck"]
    );
    assert_eq!(r.group_by, GroupBy::Route);
    assert_eq!(r.group_window, None);
    let r = &c.routes[1];
    assert_eq!(r.group_window, Some(Duration::from_secs(30)));
    assert_eq!(r.group_by, GroupBy::JobId);
    let ding = &c.notifiers["ding"];
    assert_eq!(ding.rate_limit.unwrap().to_string(), "20/min");
    assert_eq!(ding.max_concurrency, 1);
    assert_eq!(ding.timeout, Duration::from_secs(10));
}

#[test]
fn unknown_job_types_and_statuses_are_kept_with_a_warning() {
    let l = load(
        "[[targets]]\nproject_id = \"p\"\njob_types = [\"CREATE_SERVER\", \"TELEPORT_SERVER\"]\n\
         [notifiers.j]\nkind = \"log\"\n[[routes]]\nnotify = [\"j\"]\nto = [\"EXPLODED\"]\n",
    );
    assert_eq!(l.config.targets[0].job_types[1].as_str(), "TELEPORT_SERVER");
    assert_eq!(l.config.routes[0].to[0].as_str(), "EXPLODED");
    assert!(
        l.warnings
            .iter()
            .any(|w| w.contains("targets[0].job_types[1]: unknown job type \"TELEPORT_SERVER\"")),
        "{:?}",
        l.warnings
    );
    assert!(
        l.warnings
            .iter()
            .any(|w| w.contains("routes[0].to[0]: unknown status \"EXPLODED\"")),
        "{:?}",
        l.warnings
    );
}

#[test]
fn the_api_budget_is_checked() {
    // 30 targets every 5 s while active: 360 requests/minute, and 3 more
    // for a one-page reconciliation of each every 10 minutes, > 100.
    let types: Vec<String> = jobwatch::cloud::model::JobType::KNOWN
        .iter()
        .take(15)
        .map(|t| format!("{:?}", t.as_str()))
        .collect();
    let toml = format!(
        "[[targets]]\nproject_id = \"a\"\njob_types = [{0}]\n[[targets]]\nproject_id = \"b\"\njob_types = [{0}]\n",
        types.join(", ")
    );
    let l = load(&toml);
    let w = l
        .warnings
        .iter()
        .find(|w| w.contains("max_requests_per_minute"))
        .unwrap_or_else(|| panic!("no budget warning in {:?}", l.warnings));
    assert!(
        w.contains("30 targets") && w.contains("363") && w.contains("at least 19s"),
        "{w}"
    );

    // Within the budget: no warning.
    let l = load("[[targets]]\nproject_id = \"a\"\njob_types = [\"CREATE_SERVER\"]\n");
    assert!(
        !l.warnings
            .iter()
            .any(|w| w.contains("max_requests_per_minute"))
    );
}

#[test]
fn inline_secrets_in_a_readable_file_are_warned_about() {
    let toml = "[auth]\nak = \"AK\"\nsk = \"inline-sk\"\n";
    let (_d, open) = temp_file("open.toml", toml, 0o644);
    let l = Config::load_with_env(&open, true, EnvVars::default()).unwrap();
    let w = l
        .warnings
        .iter()
        .find(|w| w.contains("inline secrets"))
        .unwrap_or_else(|| panic!("no permission warning in {:?}", l.warnings));
    assert!(w.contains("auth.sk") && w.contains("644"), "{w}");

    let (_d, closed) = temp_file("closed.toml", toml, 0o600);
    let l = Config::load_with_env(&closed, true, EnvVars::default()).unwrap();
    assert!(!l.warnings.iter().any(|w| w.contains("inline secrets")));
}

#[test]
fn a_missing_file_is_fine_only_when_allowed() {
    let missing = Path::new("/nonexistent/jobwatch/jobwatch.toml");
    let e = Config::load_with_env(missing, true, EnvVars::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("/nonexistent/jobwatch/jobwatch.toml"), "{e}");
    let l = Config::load_with_env(
        missing,
        false,
        EnvVars::from_pairs(SDK_CREDS.iter().copied()),
    )
    .unwrap();
    assert!(matches!(l.config.auth, AuthConfig::Aksk(_)));
}

/// Every secret of a config that has one of each.
const SECRETS: &[&str] = &[
    "inline-sk-VALUE",
    "inline-sectoken-VALUE",
    "feishu-secret-VALUE",
    "webhook-secret-VALUE",
    "header-token-VALUE",
    "smtp-password-VALUE",
    "slack-path-VALUE",
    "heartbeat-uuid-VALUE",
];

const SECRET_CONFIG: &str = r#"
[auth]
ak = "AKVISIBLE"
sk = "inline-sk-VALUE"
security_token = "inline-sectoken-VALUE"

[[targets]]
project_id = "p"
job_types = ["CREATE_SERVER"]

[notifiers.chat]
kind = "feishu"
url = "https://open.feishu.cn/hook/x"
secret = "feishu-secret-VALUE"

[notifiers.hook]
kind = "webhook"
url = "https://hooks.example.com/x"
secret = "webhook-secret-VALUE"
headers = { Authorization = "Bearer header-token-VALUE" }

[notifiers.slack]
kind = "slack"
url = "https://hooks.slack.com/services/slack-path-VALUE"

[notifiers.mail]
kind = "email"
smtp = "smtps://jobwatch@smtp.example.com"
password = "smtp-password-VALUE"
from = "jobwatch@example.com"
to = ["ops@example.com"]

[[routes]]
notify = ["chat", "hook", "slack", "mail"]

[heartbeat]
url = "https://hc-ping.example.com/heartbeat-uuid-VALUE"
"#;

#[test]
fn debug_and_serialisation_redact_every_secret() {
    let c = load_with(SECRET_CONFIG, &[]).unwrap().config;
    let debug = format!("{c:?} {c:#?}");
    let toml = toml::to_string_pretty(&c).unwrap();
    let json = serde_json::to_string(&c).unwrap();
    for secret in SECRETS {
        assert!(!debug.contains(secret), "{secret} in Debug output");
        assert!(!toml.contains(secret), "{secret} in TOML output");
        assert!(!json.contains(secret), "{secret} in JSON output");
    }
    assert!(toml.contains("sk = \"***\""), "{toml}");
    assert!(toml.contains("AKVISIBLE"), "{toml}");
    assert!(toml.contains("https://hooks.slack.com/***"), "{toml}");
}

#[test]
fn the_example_config_validates() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/jobwatch.example.toml");
    let env = EnvVars::from_pairs([
        ("HUAWEICLOUD_SDK_AK", "AKEXAMPLE"),
        ("HUAWEICLOUD_SDK_SK", "example"),
        ("JOBWATCH_NOTIFIERS__ONCALL__PASSWORD", "example"),
    ]);
    let l = match Config::load_with_env(&path, true, env) {
        Ok(l) => l,
        Err(e) => panic!("the example config does not validate:\n{e}"),
    };
    // Every notifier kind is shown, and the example fits the API budget.
    let mut kinds: Vec<_> = l.config.notifiers.values().map(|n| n.kind().name).collect();
    kinds.sort();
    kinds.dedup();
    assert_eq!(kinds.len(), jobwatch::notify::kinds::KINDS.len());
    assert_eq!(l.warnings, Vec::<String>::new());
}

fn jobwatch() -> assert_cmd::Command {
    let mut cmd = assert_cmd::Command::new(env!("CARGO_BIN_EXE_jobwatch"));
    // Only the variables a test sets: a developer's own JOBWATCH_ or
    // HUAWEICLOUD_SDK_ variables must not change the outcome.
    cmd.env_clear();
    cmd
}

#[test]
fn check_prints_the_config_without_secrets() {
    let (_d, path) = temp_file("jobwatch.toml", SECRET_CONFIG, 0o644);
    let out = jobwatch()
        .arg("-c")
        .arg(&path)
        .arg("check")
        .assert()
        .success()
        .get_output()
        .clone();
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    for secret in SECRETS {
        assert!(!stdout.contains(secret), "{secret} in stdout:\n{stdout}");
        assert!(!stderr.contains(secret), "{secret} in stderr:\n{stderr}");
    }
    assert!(
        stdout.contains("[api]") && stdout.contains("sk = \"***\""),
        "{stdout}"
    );
    // The file is 0644 with inline secrets.
    assert!(
        stderr.contains("warning: ") && stderr.contains("inline secrets"),
        "{stderr}"
    );
    // What check prints is itself valid input, up to the redacted values.
    assert!(stdout.parse::<toml::Table>().is_ok(), "{stdout}");
}

#[test]
fn check_on_a_broken_file_exits_2_naming_the_keys() {
    let (_d, path) = temp_file(
        "jobwatch.toml",
        "[poll]\ninterval = \"5 minutes please\"\n[notifiers.chat]\nkind = \"log\"\n[[routes]]\nnotify = [\"chaat\"]\n",
        0o600,
    );
    let out = jobwatch()
        .arg("-c")
        .arg(&path)
        .arg("check")
        .env("HUAWEICLOUD_SDK_AK", "AK")
        .env("HUAWEICLOUD_SDK_SK", "sk-never-printed")
        .assert()
        .code(2)
        .get_output()
        .clone();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains("poll.interval: invalid duration"),
        "{stderr}"
    );
    assert!(
        stderr.contains("routes[0].notify: unknown notifier \"chaat\""),
        "{stderr}"
    );
    assert!(stderr.contains(&path.display().to_string()), "{stderr}");
    assert!(!stderr.contains("sk-never-printed"));
    assert!(out.stdout.is_empty());
}

#[test]
fn check_on_a_missing_file_exits_2_naming_the_path() {
    let out = jobwatch()
        .args(["-c", "/nonexistent/jobwatch.toml", "check"])
        .assert()
        .code(2)
        .get_output()
        .clone();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("/nonexistent/jobwatch.toml"), "{stderr}");
}

#[test]
fn check_passes_on_the_example_with_env_credentials() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/jobwatch.example.toml");
    jobwatch()
        .arg("-c")
        .arg(&path)
        .arg("check")
        .env("HUAWEICLOUD_SDK_AK", "AKEXAMPLE")
        .env("HUAWEICLOUD_SDK_SK", "example")
        .env("JOBWATCH_NOTIFIERS__ONCALL__PASSWORD", "example")
        .assert()
        .success();
}

#[test]
fn an_empty_state_path_is_an_error_naming_the_key() {
    check_bad("[state]\npath = \"\"\n", "state.path: empty");
}

#[test]
fn a_secret_of_the_wrong_type_is_not_echoed() {
    let e = load_with(
        "[auth]\nmethod = \"aksk\"\nak = \"AKX\"\nsk = 987654321\n",
        &[],
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("auth.sk"), "{e}");
    assert!(!e.contains("987654321"), "the value is echoed:\n{e}");
    assert!(e.contains("not shown"), "{e}");
}

#[test]
fn a_secret_from_the_environment_is_a_string_whatever_it_looks_like() {
    let env = [
        ("JOBWATCH_AUTH__METHOD", "token"),
        ("JOBWATCH_AUTH__TOKEN", "[abc]"),
    ];
    let c = load_with("", &env).unwrap().config;
    let AuthConfig::Token(t) = &c.auth else {
        panic!("expected token auth, got {:?}", c.auth)
    };
    let jobwatch::cloud::auth::TokenSource::Inline(token) = &t.source else {
        panic!("expected an inline token")
    };
    assert_eq!(token.expose(), "[abc]");
}

const TWO_ACCOUNTS: &str = r#"
[accounts.intl]
region = "ap-southeast-1"
max_requests_per_minute = 60
[accounts.intl.auth]
method = "token"
token = "t"

[[targets]]
name = "cn-prod"
project_id = "p-cn"
job_types = ["CREATE_SERVER", "DELETE_SERVER"]

[[targets]]
account = "intl"
name = "intl-prod"
project_id = "p-intl"
job_types = ["CREATE_SERVER"]
"#;

#[test]
fn accounts_give_targets_their_own_region_budget_and_name() {
    let loaded = load(TWO_ACCOUNTS);
    let config = &loaded.config;
    let intl = config.account("intl").expect("the intl account");
    assert_eq!(
        intl.api.endpoint.as_str(),
        "https://workspace.ap-southeast-1.myhuaweicloud.com/"
    );
    assert_eq!(intl.api.max_requests_per_minute, 60);
    assert!(matches!(intl.auth, jobwatch::config::AuthConfig::Token(_)));
    assert_eq!(config.account("default").unwrap().api.region, "cn-north-4");
    let watched: Vec<(String, String)> = config
        .watched()
        .iter()
        .map(|t| (t.name.to_string(), t.account.to_string()))
        .collect();
    assert_eq!(
        watched,
        [
            ("cn-prod/CREATE_SERVER".to_owned(), "default".to_owned()),
            ("cn-prod/DELETE_SERVER".to_owned(), "default".to_owned()),
            ("intl-prod".to_owned(), "intl".to_owned()),
        ]
    );
    // The SDK's project is the default account's: an intl target must name its own.
    let env = [SDK_CREDS, &[("HUAWEICLOUD_SDK_PROJECT_ID", "p-sdk")]].concat();
    let without_project = "[accounts.intl]\nregion = \"ap-southeast-1\"\n[accounts.intl.auth]\n\
        method = \"none\"\n[[targets]]\naccount = \"intl\"\njob_types = [\"CREATE_SERVER\"]\n";
    let e = load_with(without_project, &env).unwrap_err().to_string();
    assert!(
        e.contains("targets[0].project_id: missing: set the project of this account"),
        "{e}"
    );
    let default_account = load_with(&without_project.replace("account = \"intl\"\n", ""), &env)
        .expect("the default account takes the SDK's project");
    assert_eq!(default_account.config.targets[0].project_id, "p-sdk");
}

#[test]
fn account_and_route_names_that_name_nothing_are_errors_with_a_suggestion() {
    check_bad(
        &TWO_ACCOUNTS.replace("account = \"intl\"", "account = \"intll\""),
        "targets[1].account: unknown account \"intll\" (did you mean \"intl\"?); defined: default, intl",
    );
    check_bad(
        "[accounts.default]\nregion = \"cn-north-4\"\n",
        "accounts.default: \"default\" is the account of [api] and [auth]",
    );
    check_bad(
        &format!(
            "{TWO_ACCOUNTS}{LOG_NOTIFIER}[[routes]]\ntargets = [\"intl-prdo\"]\nnotify = [\"journal\"]\n"
        ),
        "routes[0].targets[0]: no target \"intl-prdo\" is watched (did you mean \"intl-prod\"?)",
    );
    check_bad(
        &format!(
            "{TWO_ACCOUNTS}{LOG_NOTIFIER}[[routes]]\nprojects = [\"p-nope\"]\nnotify = [\"journal\"]\n"
        ),
        "routes[0].projects[0]: no project \"p-nope\" is watched",
    );
    check_bad(
        &format!(
            "{TWO_ACCOUNTS}{LOG_NOTIFIER}[[routes]]\nto = [\"FAILD\"]\nnotify = [\"journal\"]\n"
        ),
        "routes[0].to[0]: unknown status \"FAILD\" (did you mean \"FAILED\"?)",
    );
    // A target's own name and its per-job-type names both route.
    load(&format!(
        "{TWO_ACCOUNTS}{LOG_NOTIFIER}[[routes]]\ntargets = [\"cn-prod\", \"cn-prod/DELETE_SERVER\"]\n\
         error_codes = [\"WKS.0012\"]\nnotify = [\"journal\"]\n"
    ));
}

#[test]
fn check_reports_unknown_keys_beside_every_other_problem_with_suggestions() {
    let toml = r#"
[api]
regoin = "cn-north-4"
timeout = "soon"

[poll]
intervall = "30s"

[[targets]]
project_id = "p1"
job_types = ["CREATE_SERVR"]

[notifiers.chat]
kind = "log"
levle = "info"

[[routes]]
to = ["FAILD"]
notify = ["chta"]
"#;
    let e = load_with(toml, SDK_CREDS).unwrap_err().to_string();
    for fragment in [
        "api.regoin: unknown key (did you mean \"region\"?); expected one of: region, endpoint",
        "api.timeout: ",
        "poll.intervall: unknown key (did you mean \"interval\"?)",
        "targets[0].job_types[0]: unknown job type \"CREATE_SERVR\" (did you mean \"CREATE_SERVER\"?)",
        "notifiers.chat.levle: unknown key (did you mean \"level\"?)",
        "routes[0].to[0]: unknown status \"FAILD\" (did you mean \"FAILED\"?)",
        "routes[0].notify: unknown notifier \"chta\" (did you mean \"chat\"?)",
    ] {
        assert!(e.contains(fragment), "{fragment:?} missing from:\n{e}");
    }
    check_bad(
        "[api]\nregion = \"cn-nroth-4\"\n",
        "api.region: unknown region \"cn-nroth-4\" (did you mean \"cn-north-4\"?); known: ",
    );
}

#[test]
fn a_chat_url_can_be_read_from_a_file_and_is_never_echoed() {
    let (_d, hook) = temp_file(
        "hook",
        "https://open.feishu.cn/open-apis/bot/v2/hook/t0ken\n",
        0o600,
    );
    let toml = format!(
        "[notifiers.chat]\nkind = \"feishu\"\nurl_file = {:?}\n",
        hook.display().to_string()
    );
    let c = load(&toml).config;
    let NotifierSettings::Feishu(f) = &c.notifiers["chat"].settings else {
        panic!("expected feishu")
    };
    assert_eq!(
        f.url.expose().as_str(),
        "https://open.feishu.cn/open-apis/bot/v2/hook/t0ken"
    );
    check_bad(
        &format!("{toml}url = \"https://open.feishu.cn/x\"\n"),
        "notifiers.chat.url: both `url` and `url_file` are set",
    );
    let (_d2, bad) = temp_file("bad", "not a url s3cr3t-t0ken\n", 0o600);
    let e = load_with(
        &format!(
            "[notifiers.chat]\nkind = \"slack\"\nurl_file = {:?}\n",
            bad.display().to_string()
        ),
        SDK_CREDS,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("notifiers.chat.url_file"), "{e}");
    assert!(!e.contains("s3cr3t"), "{e}");
}

// README's "Running as a service" writes a config with a heredoc; as pasted
// (its YOUR-… placeholders are syntactically valid), with the two
// credentials the same sequence installs, it passes `check`.
#[test]
fn the_readmes_service_config_passes_check_with_its_credentials() {
    let readme = include_str!("../../README.md");
    let start = readme.find("<<'TOML'\n").expect("README's config heredoc") + "<<'TOML'\n".len();
    let len = readme[start..].find("\nTOML\n").expect("its end");
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("jobwatch.toml");
    std::fs::write(&config, &readme[start..start + len]).unwrap();
    let creds = dir.path().join("credentials");
    std::fs::create_dir(&creds).unwrap();
    std::fs::write(creds.join("sk"), "YOUR-SECRET-KEY").unwrap();
    std::fs::write(
        creds.join("oncall-url"),
        "https://open.feishu.cn/open-apis/bot/v2/hook/YOUR-HOOK",
    )
    .unwrap();
    let out = jobwatch()
        .arg("check")
        .arg("-c")
        .arg(&config)
        .env("CREDENTIALS_DIRECTORY", &creds)
        .env("JOBWATCH_STATE__PATH", dir.path().join("state.db"))
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert!(
        !text.contains("YOUR-SECRET-KEY") && !text.contains("YOUR-HOOK"),
        "{text}"
    );
}

#[test]
fn a_postgres_state_comes_from_url_url_file_or_the_environment_and_hides_its_password() {
    let shown = "postgres://jw@db.internal:5433/jobwatch";
    let url = "postgres://jw:pg-s3cret@db.internal:5433/jobwatch?sslmode=require";
    let c = load(&format!("[state]\nurl = {url:?}\n")).config;
    let state_url = c.state.url.as_ref().expect("a PostgreSQL state");
    assert_eq!(state_url.shown(), shown);
    assert!(state_url.tls());
    assert_eq!(c.cluster.lease, std::time::Duration::from_secs(10));

    let (_dir, file) = temp_file("pg-url", &format!("{url}\n"), 0o600);
    let c = load(&format!(
        "[state]\nurl_file = {:?}\n[cluster]\nlease = \"30s\"\n",
        file.display().to_string()
    ))
    .config;
    assert_eq!(c.state.url.as_ref().map(|u| u.shown()), Some(shown));
    assert_eq!(c.cluster.lease, std::time::Duration::from_secs(30));

    let mut env = SDK_CREDS.to_vec();
    env.push(("JOBWATCH_STATE__URL", url));
    let c = load_with("", &env).expect("valid").config;
    assert_eq!(c.state.url.as_ref().map(|u| u.shown()), Some(shown));
    let printed = toml::to_string_pretty(&c).expect("serialises");
    assert!(printed.contains(shown), "{printed}");
    assert!(!printed.contains("pg-s3cret") && !format!("{c:?}").contains("pg-s3cret"));
}

#[test]
fn a_bad_postgres_state_is_an_error_naming_the_key_without_its_password() {
    check_bad(
        "[state]\npath = \"/tmp/x.db\"\nurl = \"postgres://u@h/db\"\n",
        "state.url: both `path` and `url` are set",
    );
    check_bad(
        "[state]\nurl = \"mysql://u:pw@h/db\"\n",
        "state.url: not a PostgreSQL URL",
    );
    check_bad(
        "[state]\nurl = \"postgres://u:pw@h:5432\"\n",
        "state.url: names no database",
    );
    check_bad(
        "[state]\nurl = \"postgres://u@h/db\"\n[cluster]\nlease = \"1s\"\n",
        "cluster.lease",
    );
    let alone = load("[cluster]\nlease = \"30s\"\n");
    assert!(
        alone
            .warnings
            .iter()
            .any(|w| w.contains("cluster.lease: has no effect with a state file")),
        "{:?}",
        alone.warnings
    );
    let e = load_with(
        "[state]\nurl = \"postgres://u:hunter22@h:port/db\"\n",
        SDK_CREDS,
    )
    .expect_err("a bad port")
    .to_string();
    assert!(e.contains("state.url") && !e.contains("hunter22"), "{e}");
}
