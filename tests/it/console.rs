//! The operator console, history and silences, end to end: a daemon on the
//! simulator, a recording receiver, the `history`, `silence` and `routes
//! test` commands, the console's access rules, and a real browser.

use std::time::Duration;

use serde_json::Value;

use crate::support::{
    Daemon, Recorder, SIM_ERROR_CODE, Sim, daemon_preamble, eventually, jobwatch, wait_baselined,
};
use jobwatch::sim::SimOptions;

const WITHIN: Duration = Duration::from_secs(30);

/// A daemon on the simulator with the console on a free loopback port and
/// `extra` (notifiers, routes, server keys) after the target.
struct Setup {
    sim: Sim,
    dir: tempfile::TempDir,
    config: std::path::PathBuf,
    daemon: Daemon,
}

impl Setup {
    async fn start(server: &str, extra: impl FnOnce(&Sim) -> String) -> Setup {
        Setup::start_with(server, "", extra).await
    }

    /// [`Setup::start`] with more `[delivery]` keys.
    async fn start_with(server: &str, delivery: &str, extra: impl FnOnce(&Sim) -> String) -> Setup {
        let sim = Sim::start(SimOptions::default()).await;
        let dir = tempfile::tempdir().expect("tempdir");
        let state = dir.path().join("state.db");
        let config = dir.path().join("jobwatch.toml");
        std::fs::write(
            &config,
            format!(
                "{}\n[delivery]\nshutdown_grace = \"2s\"\n{delivery}\n\n[server]\nlisten = \"127.0.0.1:0\"\n{server}\n\n[[targets]]\nproject_id = \"demo\"\njob_types = [\"CREATE_SERVER\"]\n\n{}",
                daemon_preamble(&sim.url(), &state, None),
                extra(&sim)
            ),
        )
        .expect("write config");
        let daemon = Daemon::spawn(&config, None, &dir.path().join("daemon.log"));
        Setup {
            sim,
            dir,
            config,
            daemon,
        }
    }

    fn state(&self) -> std::path::PathBuf {
        self.dir.path().join("state.db")
    }

    async fn run(&self, args: &[&str]) -> (String, String) {
        let out = jobwatch(&self.config, args).await;
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        );
        assert!(out.status.success(), "jobwatch {args:?}: {stdout}{stderr}");
        (stdout, stderr)
    }

    /// `history --sub-job ID --format json`.
    async fn history(&self, sub_job: &str) -> Vec<Value> {
        let (out, _) = self
            .run(&["history", "--sub-job", sub_job, "--format", "json"])
            .await;
        match serde_json::from_str(&out).expect("history is JSON") {
            Value::Array(entries) => entries,
            other => panic!("history: {other}"),
        }
    }
}

/// The statuses entered of the events the recorder got for `sub_job`.
fn received_for(recorder: &Recorder, sub_job: &str) -> Vec<String> {
    recorder
        .received()
        .iter()
        .filter_map(|r| serde_json::from_str::<Value>(&r.body).ok())
        .flat_map(|body| match body.get("events") {
            Some(Value::Array(events)) => events.clone(),
            _ => vec![body.get("event").cloned().unwrap_or(body)],
        })
        .filter(|e| e["sub_job_id"] == sub_job)
        .map(|e| e["to"].as_str().unwrap_or("").to_owned())
        .collect()
}

#[tokio::test]
async fn a_silence_holds_what_it_matches_in_the_history_and_its_expiry_resends_nothing() {
    let hook = Recorder::start().await;
    let url = hook.url.clone();
    let setup = Setup::start("", |_| {
        format!(
            "[notifiers.hook]\nkind = \"webhook\"\nurl = \"{url}/hook\"\n\n[[routes]]\nnotify = [\"hook\"]\nkinds = [\"appeared\", \"changed\"]\n"
        )
    })
    .await;
    let ids = setup.sim.create("CREATE_SERVER", 3, "RUNNING").await;
    let (held, passed, after) = (&ids[0], &ids[1], &ids[2]);
    wait_baselined(&setup.state(), "CREATE_SERVER", WITHIN).await;

    // A regex on the error code, and an equality on the job type: both
    // must match.
    let (out, _) = setup
        .run(&[
            "silence",
            "add",
            "--match",
            "job_type=CREATE_SERVER",
            "--match",
            r"error_code=~WKS\.0012.*",
            "--for",
            "1h",
            "--comment",
            "quota incident",
        ])
        .await;
    assert!(
        out.starts_with("silence 1 holds job_type=CREATE_SERVER error_code=~WKS\\.0012.* until "),
        "{out}"
    );
    let (out, _) = setup
        .run(&[
            "routes",
            "test",
            "--job-type",
            "CREATE_SERVER",
            "--to",
            "FAILED",
            "--error-code",
            SIM_ERROR_CODE,
        ])
        .await;
    assert!(out.contains("hook (routes[0]): HELD by silence 1"), "{out}");
    let (out, _) = setup
        .run(&[
            "routes",
            "test",
            "--job-type",
            "CREATE_SERVER",
            "--to",
            "SUCCESS",
        ])
        .await;
    assert!(out.contains("hook (routes[0]): sent"), "{out}");

    // FAILED with WKS.00129901 is held; SUCCESS (no error code) is not.
    setup.sim.set_status(held, "FAILED").await;
    setup.sim.set_status(passed, "SUCCESS").await;
    eventually(WITHIN, "SUCCESS to be delivered", || async {
        (received_for(&hook, passed) == ["SUCCESS"]).then_some(())
    })
    .await;
    let history = eventually(WITHIN, "the held event in the history", || async {
        let h = setup.history(held).await;
        (!h.is_empty()).then_some(h)
    })
    .await;
    assert_eq!(history.len(), 1, "{history:?}");
    assert_eq!(history[0]["event"]["to"], "FAILED");
    assert_eq!(history[0]["event"]["error_code"], SIM_ERROR_CODE);
    assert_eq!(history[0]["routes"][0]["notifier"], "hook");
    assert_eq!(
        history[0]["routes"][0]["held"],
        serde_json::json!({"silence": 1})
    );
    assert_eq!(
        history[0]["deliveries"],
        serde_json::json!([]),
        "a held event has no delivery"
    );
    let (table, _) = setup.run(&["history", "--sub-job", held]).await;
    assert!(table.contains("held by silence 1; not sent"), "{table}");
    let delivered = setup.history(passed).await;
    assert_eq!(
        delivered[0]["deliveries"][0]["attempts"][0]["verdict"],
        "delivered"
    );

    // Expired: the next matching event goes out, and the held one never does.
    let (out, _) = setup.run(&["silence", "expire", "1"]).await;
    assert!(out.starts_with("silence 1 ended at "), "{out}");
    let (out, _) = setup.run(&["silence", "list"]).await;
    assert!(out.contains("no silences active or pending"), "{out}");
    let (out, _) = setup.run(&["silence", "list", "--all"]).await;
    assert!(
        out.contains("expired") && out.contains("quota incident"),
        "{out}"
    );
    setup.sim.set_status(after, "FAILED").await;
    eventually(
        WITHIN,
        "FAILED after the expiry to be delivered",
        || async { (received_for(&hook, after) == ["FAILED"]).then_some(()) },
    )
    .await;
    let (out, _) = setup.run(&["state", "--format", "json"]).await;
    let show: Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(show["outbox"]["pending"], 0, "{show}");
    assert!(
        received_for(&hook, held).is_empty(),
        "the held FAILED was sent"
    );
    // By parent job: all three sub-jobs' events.
    let job = history[0]["event"]["job_id"]
        .as_str()
        .expect("a parent job")
        .to_owned();
    let (out, _) = setup
        .run(&["history", "--job", &job, "--format", "json"])
        .await;
    let by_job: Vec<Value> = serde_json::from_str(&out).expect("JSON");
    assert_eq!(by_job.len(), 3, "{by_job:?}");
    drop(setup);
}

#[tokio::test]
async fn a_maintenance_window_holds_what_its_route_takes_and_routes_test_shows_when() {
    let (hook, other) = (Recorder::start().await, Recorder::start().await);
    let (a, b) = (hook.url.clone(), other.url.clone());
    let setup = Setup::start_with("", "timezone = \"Asia/Shanghai\"", |_| {
        format!(
            r#"[time_intervals.always]
weekdays = ["monday:sunday"]

[time_intervals.weekend]
weekdays = ["saturday", "sunday"]
times = ["00:00-24:00"]

[notifiers.hook]
kind = "webhook"
url = "{a}/hook"

[notifiers.other]
kind = "webhook"
url = "{b}/other"

[[routes]]
notify = ["hook"]
mute_time_intervals = ["always"]

[[routes]]
notify = ["other"]
mute_time_intervals = ["weekend"]
"#
        )
    })
    .await;
    // The daemon made its state (which `routes test` reads) once it has
    // baselined the target.
    let ids = setup.sim.create("CREATE_SERVER", 1, "RUNNING").await;
    wait_baselined(&setup.state(), "CREATE_SERVER", WITHIN).await;
    // A Saturday and a Monday in Shanghai (the clock is the argument).
    let at = |time: &str| {
        let setup = &setup;
        let time = time.to_owned();
        async move {
            setup
                .run(&[
                    "routes",
                    "test",
                    "--job-type",
                    "CREATE_SERVER",
                    "--to",
                    "FAILED",
                    "--at",
                    &time,
                ])
                .await
                .0
        }
    };
    let saturday = at("2026-12-05T02:00:00Z").await;
    assert!(
        saturday.contains("hook (routes[0]): HELD by maintenance window \"always\""),
        "{saturday}"
    );
    assert!(
        saturday.contains("other (routes[1]): HELD by maintenance window \"weekend\""),
        "{saturday}"
    );
    // 23:30 UTC on Sunday is Monday 07:30 in Shanghai.
    let monday = at("2026-12-06T23:30:00Z").await;
    assert!(monday.contains("other (routes[1]): sent"), "{monday}");

    // The daemon holds what the always-on window mutes, now.
    setup.sim.set_status(&ids[0], "FAILED").await;
    let history = eventually(WITHIN, "the FAILED event in the history", || async {
        let h = setup.history(&ids[0]).await;
        (!h.is_empty()).then_some(h)
    })
    .await;
    assert_eq!(
        history[0]["routes"][0]["held"],
        serde_json::json!({"window": "always"}),
        "{history:?}"
    );
    // `other` is muted only at weekends in Shanghai; what it gets depends
    // on today, so only `hook` is asserted: it never gets the event.
    eventually(WITHIN, "the other notifier's verdict", || async {
        let h = setup.history(&ids[0]).await;
        let routed = h[0]["routes"][1].clone();
        (routed["held"] != Value::Null || !h[0]["deliveries"].as_array()?.is_empty()).then_some(())
    })
    .await;
    assert!(
        received_for(&hook, &ids[0]).is_empty(),
        "a muted route's notifier got the event"
    );
}

#[tokio::test]
async fn check_names_every_console_and_window_mistake() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("jobwatch.toml");
    std::fs::write(
        &config,
        format!(
            r#"{}
[server]
listen = "0.0.0.0:9464"

[time_intervals.weekend]
weekdays = ["saturday", "sundy"]
times = ["22:00-06:00"]

[[targets]]
project_id = "demo"
job_types = ["CREATE_SERVER"]

[notifiers.log]
kind = "log"

[[routes]]
notify = ["log"]
mute_time_intervals = ["wekend"]
"#,
            daemon_preamble("http://127.0.0.1:1", &dir.path().join("state.db"), None)
        ),
    )
    .expect("write");
    let out = jobwatch(&config, &["check"]).await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    for expected in [
        "server.token: missing: 0.0.0.0:9464 is reachable beyond this machine",
        "time_intervals.weekend.weekdays[1]: \"sundy\" is not a weekday",
        "time_intervals.weekend.times[0]: \"22:00-06:00\" ends before it starts; a window across midnight is two ranges",
        "routes[0].mute_time_intervals[0]: unknown time interval \"wekend\" (did you mean \"weekend\"?)",
    ] {
        assert!(err.contains(expected), "missing {expected:?} in:\n{err}");
    }
}

/// A webhook URL with a secret in its path, at a closed port (every
/// attempt fails, and the receiver's "answer" is the connection error).
const SECRET_PATH: &str = "hooks/T0KEN-IN-THE-PATH-8f3a";
const TOKEN: &str = "console-token-5b1e0c";

#[tokio::test]
async fn beyond_the_token_nothing_answers_and_no_page_or_answer_shows_a_secret() {
    let setup = Setup::start(&format!("token = \"{TOKEN}\""), |_| {
        format!(
            "[notifiers.hook]\nkind = \"webhook\"\nurl = \"http://127.0.0.1:9/{SECRET_PATH}\"\nsecret = \"whsec_c2VjcmV0LXNpZ25pbmcta2V5\"\n\n[[routes]]\nnotify = [\"hook\"]\n"
        )
    })
    .await;
    let ids = setup.sim.create("CREATE_SERVER", 1, "RUNNING").await;
    let addr = setup.daemon.served_addr(WITHIN).await;
    let base = format!("http://{addr}");
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("a client");
    let get = |path: &str, auth: Option<&str>| {
        let mut req = http.get(format!("{base}{path}"));
        if let Some(auth) = auth {
            req = req.header("Authorization", auth);
        }
        req.send()
    };
    // Without the token: 401, but for the probes.
    for path in [
        "/",
        "/api/v1/status",
        "/api/v1/history",
        "/api/v1/silences",
        "/metrics",
        "/sub-jobs/x",
    ] {
        let r = get(path, None).await.expect("answers");
        assert_eq!(r.status(), 401, "{path}");
        let r = get(path, Some("Bearer wrong")).await.expect("answers");
        assert_eq!(r.status(), 401, "{path} with a wrong token");
    }
    assert_eq!(get("/healthz", None).await.expect("answers").status(), 200);
    assert_ne!(get("/readyz", None).await.expect("answers").status(), 401);
    // A browser is sent to sign in.
    let r = http
        .get(format!("{base}/"))
        .header("Accept", "text/html")
        .send()
        .await
        .expect("answers");
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/login");

    // Let an event fail to be delivered a few times, so the history holds
    // the receiver's "answer".
    wait_baselined(&setup.state(), "CREATE_SERVER", WITHIN).await;
    setup.sim.set_status(&ids[0], "FAILED").await;
    eventually(WITHIN, "a failed attempt in the history", || async {
        let h = setup.history(&ids[0]).await;
        h.first()?["deliveries"][0]["attempts"][0]["answer"]
            .as_str()
            .map(str::to_owned)
    })
    .await;

    let bearer = format!("Bearer {TOKEN}");
    let mut bodies = Vec::new();
    for path in [
        "/".to_owned(),
        "/?fragment=1".to_owned(),
        "/api/v1/status".to_owned(),
        "/api/v1/history".to_owned(),
        format!("/api/v1/history?sub_job={}", ids[0]),
        format!("/sub-jobs/{}", ids[0]),
        "/api/v1/silences".to_owned(),
        "/metrics".to_owned(),
    ] {
        let r = get(&path, Some(&bearer)).await.expect("answers");
        assert_eq!(r.status(), 200, "{path}");
        bodies.push((path, r.text().await.expect("a body")));
    }
    let status: Value = serde_json::from_str(&bodies[2].1).expect("status is JSON");
    assert_eq!(
        status["targets"][0]["name"], "demo/CREATE_SERVER",
        "{status}"
    );
    assert_eq!(status["notifiers"][0]["notifier"], "hook");
    assert!(
        bodies[5].1.contains("FAILED"),
        "the sub-job's page shows its event"
    );

    // Actions: a bearer may; a cookie needs the page's CSRF value; nothing
    // may not.
    let silence =
        serde_json::json!({"matchers": ["to=FAILED"], "for": "1h", "comment": "from a script"});
    let post = |path: &str| http.post(format!("{base}{path}"));
    let r = post("/api/v1/silences")
        .json(&silence)
        .send()
        .await
        .expect("answers");
    assert_eq!(r.status(), 401);
    let r = post("/api/v1/silences")
        .header("Authorization", &bearer)
        .json(&silence)
        .send()
        .await
        .expect("answers");
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap_or_default());
    let r = post("/login")
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(format!("token={TOKEN}"))
        .send()
        .await
        .expect("answers");
    assert_eq!(r.status(), 303);
    let cookie = r.headers()["set-cookie"].to_str().expect("text").to_owned();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    assert!(!cookie.contains(TOKEN), "the cookie is not the token");
    let session = cookie.split(';').next().expect("a pair").to_owned();
    let page = http
        .get(format!("{base}/"))
        .header("Cookie", &session)
        .send()
        .await
        .expect("answers")
        .text()
        .await
        .expect("a page");
    let csrf = page
        .split("<meta name=\"csrf\" content=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("the page carries its CSRF value")
        .to_owned();
    assert_eq!(csrf.len(), 64, "{csrf}");
    let r = post("/api/v1/silences/1/expire")
        .header("Cookie", &session)
        .send()
        .await
        .expect("answers");
    assert_eq!(
        r.status(),
        403,
        "a cookie alone is what a forged form would carry"
    );
    let r = post("/api/v1/silences/1/expire")
        .header("Cookie", &session)
        .header("X-Jobwatch-Csrf", &csrf)
        .send()
        .await
        .expect("answers");
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap_or_default());
    bodies.push(("/ (signed in)".to_owned(), page));

    for (path, body) in &bodies {
        for secret in [SECRET_PATH, TOKEN, "c2VjcmV0LXNpZ25pbmcta2V5"] {
            assert!(!body.contains(secret), "{path} shows {secret:?}:\n{body}");
        }
    }
    let log = setup.daemon.log();
    assert!(!log.contains(TOKEN), "the daemon's log shows the token");
}

#[tokio::test]
async fn without_a_token_the_console_reads_on_loopback_names_only_and_refuses_actions() {
    let setup = Setup::start("", |_| {
        "[notifiers.log]\nkind = \"log\"\n\n[[routes]]\nnotify = [\"log\"]\n".to_owned()
    })
    .await;
    let addr = setup.daemon.served_addr(WITHIN).await;
    let http = reqwest::Client::new();
    let r = http
        .get(format!("http://{addr}/api/v1/status"))
        .send()
        .await
        .expect("answers");
    assert_eq!(r.status(), 200);
    let r = http
        .get(format!("http://{addr}/"))
        .header("Host", "rebound.example:80")
        .send()
        .await
        .expect("answers");
    assert_eq!(
        r.status(),
        403,
        "a page under another name must not read the console"
    );
    let r = http
        .post(format!("http://{addr}/api/v1/silences"))
        .json(&serde_json::json!({"matchers": ["to=FAILED"], "for": "1h", "comment": "x"}))
        .send()
        .await
        .expect("answers");
    assert_eq!(r.status(), 403);
    let body = r.text().await.expect("a body");
    assert!(body.contains("actions need server.token"), "{body}");
}

/// A ChromeDriver session over plain HTTP+JSON (WebDriver is no more).
struct Browser {
    http: reqwest::Client,
    base: String,
    session: String,
    _driver: tokio::process::Child,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// ChromeDriver and headless Chromium, or `None` (said in one line)
    /// where they are not installed; CI installs them and sets
    /// `CI_REQUIRE_CHROMIUM=1`, under which their absence fails.
    async fn start() -> Option<Browser> {
        jobwatch::install_crypto_provider();
        let (chromium, driver) = ("/usr/bin/chromium", "/usr/bin/chromedriver");
        if !std::path::Path::new(chromium).exists() || !std::path::Path::new(driver).exists() {
            if std::env::var_os("CI_REQUIRE_CHROMIUM").is_some() {
                panic!("CI_REQUIRE_CHROMIUM=1, but {chromium} or {driver} is missing");
            }
            eprintln!(
                "skipped: no {chromium} and {driver} (Debian's chromium and chromium-driver)"
            );
            return None;
        }
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
            l.local_addr().expect("addr").port()
        };
        let driver = tokio::process::Command::new(driver)
            .arg(format!("--port={port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start chromedriver");
        let http = reqwest::Client::new();
        let base = format!("http://127.0.0.1:{port}");
        eventually(WITHIN, "chromedriver to be ready", || {
            let (http, base) = (http.clone(), base.clone());
            async move {
                let status: Value = http
                    .get(format!("{base}/status"))
                    .send()
                    .await
                    .ok()?
                    .json()
                    .await
                    .ok()?;
                (status["value"]["ready"] == true).then_some(())
            }
        })
        .await;
        let profile = tempfile::tempdir().expect("a profile directory");
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--window-size=1100,900",
        ]
        .iter()
        .map(|a| a.to_string())
        .chain([format!("--user-data-dir={}", profile.path().display())])
        .collect::<Vec<_>>();
        let caps = serde_json::json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": chromium, "args": args},
        }}});
        let made: Value = http
            .post(format!("{base}/session"))
            .json(&caps)
            .send()
            .await
            .expect("a session")
            .json()
            .await
            .expect("JSON");
        let session = made["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {made}"))
            .to_owned();
        Some(Browser {
            http,
            base,
            session,
            _driver: driver,
            _profile: profile,
        })
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Value) -> Value {
        let url = format!("{}/session/{}{path}", self.base, self.session);
        let mut req = self.http.request(method, url);
        if !body.is_null() {
            req = req.json(&body);
        }
        let answer: Value = req
            .send()
            .await
            .expect("WebDriver answers")
            .json()
            .await
            .expect("JSON");
        if answer["value"]["error"].is_string() {
            panic!("WebDriver {path}: {answer}");
        }
        answer["value"].clone()
    }

    async fn go(&self, url: &str) {
        self.call(
            reqwest::Method::POST,
            "/url",
            serde_json::json!({ "url": url }),
        )
        .await;
    }

    async fn script(&self, script: &str) -> Value {
        self.call(
            reqwest::Method::POST,
            "/execute/sync",
            serde_json::json!({"script": script, "args": []}),
        )
        .await
    }

    async fn click(&self, css: &str) {
        let element = self
            .call(
                reqwest::Method::POST,
                "/element",
                serde_json::json!({"using": "css selector", "value": css}),
            )
            .await;
        let id = element["element-6066-11e4-a52e-4f735466cecf"]
            .as_str()
            .expect("an element")
            .to_owned();
        self.call(
            reqwest::Method::POST,
            &format!("/element/{id}/click"),
            serde_json::json!({}),
        )
        .await;
    }

    async fn screenshot(&self, path: &std::path::Path) {
        use base64::Engine;
        let png = self
            .call(reqwest::Method::GET, "/screenshot", Value::Null)
            .await;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(png.as_str().expect("base64"))
            .expect("a PNG");
        std::fs::create_dir_all(path.parent().expect("a directory")).expect("mkdir");
        std::fs::write(path, bytes).expect("write the screenshot");
    }
}

/// The page of a daemon watching the simulator shows a FAILED transition
/// without being reloaded, and its sub-job link leads to that sub-job's
/// history. Screenshots go to `target/console/`.
#[tokio::test]
async fn a_browser_sees_a_failure_appear_and_follows_it_to_the_sub_jobs_history() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let setup = Setup::start("", |_| {
        "[notifiers.log]\nkind = \"log\"\n\n[[routes]]\nnotify = [\"log\"]\nkinds = [\"appeared\", \"changed\"]\n".to_owned()
    })
    .await;
    let ids = setup.sim.create("CREATE_SERVER", 3, "RUNNING").await;
    wait_baselined(&setup.state(), "CREATE_SERVER", WITHIN).await;
    setup.sim.set_status(&ids[1], "SUCCESS").await;
    let addr = setup.daemon.served_addr(WITHIN).await;
    browser.go(&format!("http://{addr}/")).await;
    // A mark that a reload would wipe.
    browser
        .script("window.__loadedOnce = 'yes'; return null;")
        .await;
    let title = browser.script("return document.title;").await;
    assert_eq!(title, "jobwatch");

    setup.sim.set_status(&ids[0], "FAILED").await;
    let link = format!("a.sub-job[href=\"/sub-jobs/{}\"]", ids[0]);
    let check = format!(
        "const a = document.querySelector('{link}'); if (!a) return null; \
         const row = a.closest('tr'); return row && row.querySelector('.failed') ? row.innerText : null;"
    );
    let row = eventually(WITHIN, "the FAILED row to appear on the page", || {
        let (browser, check) = (&browser, check.clone());
        async move {
            match browser.script(&check).await {
                Value::String(text) => Some(text),
                _ => None,
            }
        }
    })
    .await;
    assert!(
        row.contains("FAILED") && row.contains(SIM_ERROR_CODE),
        "{row}"
    );
    assert_eq!(
        browser.script("return window.__loadedOnce || null;").await,
        "yes",
        "the page was reloaded rather than refreshed in place"
    );
    let shots = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/console");
    browser.screenshot(&shots.join("status.png")).await;

    browser.click(&link).await;
    let path = eventually(WITHIN, "the sub-job's page", || async {
        let url = browser
            .call(reqwest::Method::GET, "/url", Value::Null)
            .await;
        let url = url.as_str()?.to_owned();
        url.ends_with(&format!("/sub-jobs/{}", ids[0]))
            .then_some(url)
    })
    .await;
    let text = eventually(WITHIN, "the sub-job's history", || async {
        match browser
            .script("const h = document.querySelector('#history'); return h ? h.innerText : null;")
            .await
        {
            Value::String(t) if t.contains("FAILED") => Some(t),
            _ => None,
        }
    })
    .await;
    assert!(
        text.contains(&format!("History of sub-job {}", ids[0])),
        "{path}: {text}"
    );
    assert!(
        text.contains("RUNNING → FAILED") && text.contains("log: delivered"),
        "{text}"
    );
    browser.screenshot(&shots.join("sub-job.png")).await;
}

/// A receiver's throttle (429 with `Retry-After`) shows on the status as
/// the notifier's pause and until when, beside its pending row.
#[tokio::test]
async fn a_receivers_throttle_shows_as_its_notifiers_pause_until_it_ends() {
    let throttled = crate::support::Receiver::start(vec![(
        429,
        vec![("Retry-After", "60".to_owned())],
        "slow down".to_owned(),
    )])
    .await;
    let url = throttled.url.clone();
    let setup = Setup::start("", |_| {
        format!("[notifiers.hook]\nkind = \"webhook\"\nurl = \"{url}/hook\"\n\n[[routes]]\nnotify = [\"hook\"]\n")
    })
    .await;
    let ids = setup.sim.create("CREATE_SERVER", 1, "RUNNING").await;
    wait_baselined(&setup.state(), "CREATE_SERVER", WITHIN).await;
    let addr = setup.daemon.served_addr(WITHIN).await;
    setup.sim.set_status(&ids[0], "FAILED").await;
    let hook = eventually(WITHIN, "the hook's pause on the status", || async move {
        let status: Value = reqwest::get(format!("http://{addr}/api/v1/status"))
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        let hook = status["notifiers"]
            .as_array()?
            .iter()
            .find(|n| n["notifier"] == "hook")?
            .clone();
        (!hook["paused_until"].is_null()).then_some(hook)
    })
    .await;
    let until: jiff::Timestamp = hook["paused_until"]
        .as_str()
        .expect("a time")
        .parse()
        .expect("RFC 3339");
    let left = until.duration_since(jiff::Timestamp::now());
    assert!(
        left > jiff::SignedDuration::from_secs(30) && left <= jiff::SignedDuration::from_secs(61),
        "paused for {left:#} more: {hook}"
    );
    assert_eq!(hook["pending"], 1, "{hook}");
    let page = reqwest::get(format!("http://{addr}/?fragment=1"))
        .await
        .expect("answers")
        .text()
        .await
        .expect("a page");
    assert!(
        page.contains("<span class=\"pill warn\">"),
        "the pause is not on the page:\n{page}"
    );
}
