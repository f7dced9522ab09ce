//! A real PostgreSQL for the tests, as Debian's `postgresql` package has
//! it: `initdb` and `pg_ctl` on a temporary directory, a loopback port,
//! trust authentication, run as the `postgres` user (`initdb` refuses
//! root). Stopped when dropped. `.ci/run` installs the package when it is
//! missing; elsewhere a test without it says so in one line and passes.

use std::path::{Path, PathBuf};
use std::process::Command;

pub struct Postgres {
    /// Holds the cluster's data, socket and log; removed after the stop.
    dir: tempfile::TempDir,
    bin: PathBuf,
    pub port: u16,
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = self
            .as_postgres(&self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(self.data())
            .args(["-m", "immediate", "stop"])
            .output();
    }
}

impl Postgres {
    /// Starts a cluster, or says in one line why it cannot (no server
    /// installed, not root) and returns `None`.
    pub fn start() -> Option<Postgres> {
        let Some(bin) = server_bin() else {
            eprintln!(
                "skipped: no PostgreSQL server (Debian's `postgresql` package; .ci/run installs it)"
            );
            return None;
        };
        // SAFETY: geteuid only reads the process's credentials.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: starting PostgreSQL as its own user needs root (CI runs as root)");
            return None;
        }
        let dir = tempfile::tempdir().expect("a temporary directory");
        let owner = user_ids("postgres").expect("the postgresql package makes a postgres user");
        std::os::unix::fs::chown(dir.path(), Some(owner.0), Some(owner.1))
            .expect("give the directory to postgres");
        let port = free_port();
        let pg = Postgres { dir, bin, port };
        let init = pg
            .as_postgres(&pg.bin.join("initdb"))
            .arg("-D")
            .arg(pg.data())
            .args([
                "--auth=trust",
                "--username=postgres",
                "--encoding=UTF8",
                "--no-sync",
            ])
            .output()
            .expect("run initdb");
        assert!(
            init.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&init.stderr)
        );
        pg.run_server();
        Some(pg)
    }

    /// `pg_ctl start` on the cluster's directory and port, waiting until
    /// it accepts connections.
    fn run_server(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off",
            self.port,
            self.dir.path().display()
        );
        let start = self
            .as_postgres(&self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(self.data())
            .arg("-l")
            .arg(self.dir.path().join("server.log"))
            .args(["-o", &options, "-w", "start"])
            .output()
            .expect("run pg_ctl");
        assert!(
            start.status.success(),
            "pg_ctl start: {}{}",
            String::from_utf8_lossy(&start.stderr),
            std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
        );
    }

    /// Stops the server (its clients' connections drop), keeping its data.
    pub fn stop(&self) {
        let stop = self
            .as_postgres(&self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(self.data())
            .args(["-m", "fast", "-w", "stop"])
            .output()
            .expect("run pg_ctl");
        assert!(
            stop.status.success(),
            "pg_ctl stop: {}",
            String::from_utf8_lossy(&stop.stderr)
        );
    }

    /// Starts the stopped server again, on the same port with the same data.
    pub fn restart(&self) {
        self.run_server();
    }

    /// A connection URL for database `db` (`postgres` always exists).
    pub fn url(&self, db: &str) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/{db}?sslmode=disable",
            self.port
        )
    }

    /// Runs `sql` with `psql`, returning its unaligned output.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        self.try_psql(db, sql)
            .unwrap_or_else(|e| panic!("psql {sql:?}: {e}"))
    }

    /// [`Postgres::psql`], with psql's complaint as the error (a table not
    /// made yet, the server stopped).
    pub fn try_psql(&self, db: &str, sql: &str) -> Result<String, String> {
        let out = Command::new(self.bin.join("psql"))
            .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1"])
            .args([
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-d",
                db,
                "-c",
                sql,
            ])
            .output()
            .expect("run psql");
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).trim().to_owned());
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// `program` run as the `postgres` user, in the cluster's directory.
    fn as_postgres(&self, program: &Path) -> Command {
        let mut command = Command::new("runuser");
        command
            .args(["-u", "postgres", "--"])
            .arg(program)
            .current_dir(self.dir.path());
        command
    }
}

/// The newest installed server's `bin` directory (Debian keeps them per
/// major version), else the directory of an `initdb` on PATH.
fn server_bin() -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Some(bin);
    }
    std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .find(|dir| dir.join("initdb").exists() && dir.join("pg_ctl").exists())
    })
}

/// A user's uid and gid, from the password database.
fn user_ids(name: &str) -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        (fields.first() == Some(&name) && fields.len() > 3)
            .then(|| Some((fields[2].parse().ok()?, fields[3].parse().ok()?)))
            .flatten()
    })
}

/// A loopback port nobody listens on now.
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a port");
    listener.local_addr().expect("its address").port()
}

#[test]
fn a_real_server_starts_for_the_tests_and_answers() {
    let Some(pg) = Postgres::start() else {
        return;
    };
    assert_eq!(pg.psql("postgres", "SELECT 1 + 1"), "2");
    pg.psql("postgres", "CREATE DATABASE jobwatch_test");
    assert_eq!(
        pg.psql("jobwatch_test", "SELECT current_database()"),
        "jobwatch_test"
    );
    assert!(
        pg.url("jobwatch_test")
            .starts_with("postgres://postgres@127.0.0.1:")
    );
}
