//! Stamps the binary with the commit it was built from and that commit's
//! date (or `SOURCE_DATE_EPOCH`, for reproducible package builds), for
//! `--version` and `jobwatch_build_info`. Outside a git checkout both are
//! `unknown`.

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    (out.status.success() && !text.trim().is_empty()).then(|| text.trim().to_owned())
}

fn main() {
    let commit = git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".into());
    let date = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.parse::<i64>().ok())
        .and_then(|secs| jiff::Timestamp::from_second(secs).ok())
        .map(|at| at.strftime("%F").to_string())
        .or_else(|| git(&["log", "-1", "--format=%cs"]))
        .unwrap_or_else(|| "unknown".into());
    // Not `JOBWATCH_…`: cargo also sets these for `cargo run/test/bench`,
    // and the config would read a `JOBWATCH_` variable as a key.
    println!("cargo:rustc-env=BUILT_FROM_COMMIT={commit}");
    println!("cargo:rustc-env=BUILT_FROM_DATE={date}");
    println!("cargo:rerun-if-env-changed=SOURCE_DATE_EPOCH");
    // A new commit or checkout moves HEAD's log.
    println!("cargo:rerun-if-changed=.git/logs/HEAD");
    println!("cargo:rerun-if-changed=.git/HEAD");
}
