//! The shipped systemd unit's layout, without systemd as PID 1: the
//! directories as its directives make them (a root-owned, world-readable
//! config directory; a credentials directory only the service's user
//! reads; a state directory it owns), and the daemon run as an
//! unprivileged user against them, its secret given as `credential:NAME`.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use jobwatch::secret::Secret;
use jobwatch::sim::SimOptions;

use crate::support::{AS_NOBODY, Sim, baselined, eventually, inherited_settings};

const NOBODY: u32 = 65534;
const SK: &str = "sk-from-a-credential";

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// `jobwatch ARGS` with `env`, as `nobody` (through `setpriv`).
fn as_nobody(args: &[&str], env: &[(&str, &Path)]) -> std::process::Command {
    let mut command = std::process::Command::new("setpriv");
    command
        .args(AS_NOBODY)
        .arg(env!("CARGO_BIN_EXE_jobwatch"))
        .args(args);
    for name in inherited_settings() {
        command.env_remove(name);
    }
    command.env("NO_COLOR", "1");
    for (name, value) in env {
        command.env(name, value);
    }
    command
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_runs_as_an_unprivileged_user_in_the_units_layout() {
    // SAFETY: geteuid only reads the process's credentials.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: laying out root-owned directories needs root (CI runs as root)");
        return;
    }
    let sim = Sim::start(SimOptions {
        ak: Some("AKUNIT".into()),
        sk: Some(Secret::new(SK)),
        ..SimOptions::default()
    })
    .await;
    let root = tempfile::tempdir().unwrap();
    chmod(root.path(), 0o755);
    // ConfigurationDirectory=jobwatch, ConfigurationDirectoryMode=0755:
    // root's, and a config without secrets, 0644.
    let etc = root.path().join("etc/jobwatch");
    std::fs::create_dir_all(&etc).unwrap();
    chmod(&root.path().join("etc"), 0o755);
    chmod(&etc, 0o755);
    // StateDirectory=jobwatch, StateDirectoryMode=0700: the user's.
    let state_dir = root.path().join("var/lib/jobwatch");
    std::fs::create_dir_all(&state_dir).unwrap();
    for dir in [root.path().join("var"), root.path().join("var/lib")] {
        chmod(&dir, 0o755);
    }
    std::os::unix::fs::chown(&state_dir, Some(NOBODY), Some(NOBODY)).unwrap();
    chmod(&state_dir, 0o700);
    // LoadCredential=sk:…: a directory and file only the user reads.
    let creds = root.path().join("run/credentials/jobwatch.service");
    std::fs::create_dir_all(&creds).unwrap();
    chmod(&root.path().join("run"), 0o755);
    chmod(&root.path().join("run/credentials"), 0o755);
    std::fs::write(creds.join("sk"), format!("{SK}\n")).unwrap();
    for path in [creds.join("sk"), creds.clone()] {
        std::os::unix::fs::chown(&path, Some(NOBODY), Some(NOBODY)).unwrap();
    }
    chmod(&creds.join("sk"), 0o400);
    chmod(&creds, 0o500);
    let config = etc.join("jobwatch.toml");
    std::fs::write(
        &config,
        format!(
            "[api]\nendpoint = \"{}\"\nmax_requests_per_minute = 6000\n\
             [auth]\nmethod = \"aksk\"\nak = \"AKUNIT\"\nsk_file = \"credential:sk\"\n\
             [poll]\ninterval = \"1s\"\nactive_interval = \"1s\"\n\
             [[targets]]\nproject_id = \"demo\"\njob_types = [\"CREATE_SERVER\"]\n",
            sim.url()
        ),
    )
    .unwrap();
    chmod(&config, 0o644);
    let state = state_dir.join("state.db");
    let env = [
        ("CREDENTIALS_DIRECTORY", creds.as_path()),
        // The unit's Environment= line.
        ("JOBWATCH_STATE__PATH", state.as_path()),
    ];
    let config_arg = config.to_str().unwrap();

    // ExecReload's check: passes, and says nothing of the secret.
    let check = as_nobody(&["check", "--config", config_arg], &env)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&check.stdout).into_owned()
        + &String::from_utf8_lossy(&check.stderr);
    assert!(check.status.success(), "{text}");
    assert!(!text.contains(SK), "{text}");
    // Without the credentials the config is refused, naming why.
    let bare = as_nobody(&["check", "--config", config_arg], &env[1..])
        .output()
        .unwrap();
    assert_eq!(bare.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&bare.stderr).contains("CREDENTIALS_DIRECTORY is not set"),
        "{}",
        String::from_utf8_lossy(&bare.stderr)
    );

    // ExecStart: polls with the signed requests the simulator checks.
    let log = root.path().join("jobwatch.log");
    let out = std::fs::File::create(&log).unwrap();
    let mut daemon = as_nobody(&["run", "--config", config_arg], &env)
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap();
    let read_log = || std::fs::read_to_string(&log).unwrap_or_default();
    eventually(
        Duration::from_secs(30),
        "a baseline by the unprivileged daemon",
        || {
            let state = state.clone();
            async move {
                baselined(&state, "demo", "CREATE_SERVER")
                    .await
                    .then_some(())
            }
        },
    )
    .await;
    let _ = daemon.kill();
    let _ = daemon.wait();
    let owner = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(&state).unwrap());
    assert_eq!(owner, NOBODY, "the state is the service user's");
    assert!(!read_log().contains(SK), "{}", read_log());
}
