//! What the benchmarks share: child processes of our own binary, the
//! simulator among them, and this process's CPU time.

#![allow(dead_code, reason = "each benchmark uses a part")]

use std::io::BufRead;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// `jobwatch …` of this build.
pub fn jobwatch() -> Command {
    Command::new(env!("CARGO_BIN_EXE_jobwatch"))
}

/// A child process, killed on drop.
pub struct Proc(pub Child);

impl Proc {
    pub fn id(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `jobwatch run -c CONFIG`, its output discarded, killed on drop.
pub fn run_daemon(config: &Path) -> Proc {
    Proc(
        jobwatch()
            .args(["run", "-c"])
            .arg(config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start jobwatch run"),
    )
}

/// Targets with a baseline in the state file at `state` (0 before it exists).
pub fn baselined(state: &Path) -> usize {
    let Ok(conn) =
        rusqlite::Connection::open_with_flags(state, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
    else {
        return 0;
    };
    conn.query_row(
        "SELECT count(*) FROM targets WHERE baselined = 1",
        [],
        |row| row.get::<_, i64>(0),
    )
    .map(|n| n as usize)
    .unwrap_or(0)
}

/// `jobwatch sim --listen 127.0.0.1:0 --seed 1` with `args`, and its URL
/// (from its first line).
pub fn start_sim(args: &[&str]) -> (Proc, String) {
    let mut child = jobwatch()
        .args(["sim", "--listen", "127.0.0.1:0", "--seed", "1"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start jobwatch sim");
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("the simulator's first line");
    let url = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_owned();
    (Proc(child), url)
}

/// User + system CPU of this process so far.
pub fn cpu() -> Duration {
    // SAFETY: getrusage only writes the struct it is given.
    let usage = unsafe {
        let mut usage = std::mem::zeroed::<libc::rusage>();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// `VmRSS` and `VmHWM` of a process, in MB.
pub fn rss_mb(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}
