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
    /// Server options beyond the port and socket (TLS).
    options: String,
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
        Postgres::start_with(|_| String::new())
    }

    /// A server that speaks TLS with a certificate for `127.0.0.1` from a
    /// CA of its own, and that CA's certificate (PEM) for clients.
    pub fn start_with_tls() -> Option<(Postgres, PathBuf)> {
        let mut ca = None;
        let pg = Postgres::start_with(|dir| {
            ca = Some(make_certificates(dir));
            format!(
                " -c ssl=on -c ssl_cert_file={0}/server.crt -c ssl_key_file={0}/server.key",
                dir.display()
            )
        })?;
        Some((pg, ca.expect("made with the server")))
    }

    /// Starts a cluster with the options `extra` returns, given the
    /// cluster's directory (owned by `postgres`).
    fn start_with(extra: impl FnOnce(&Path) -> String) -> Option<Postgres> {
        let Some(bin) = server_bin() else {
            return skip(
                "no PostgreSQL server (Debian's `postgresql` package; .ci/run installs it)",
            );
        };
        // SAFETY: geteuid only reads the process's credentials.
        if unsafe { libc::geteuid() } != 0 {
            return skip("starting PostgreSQL as its own user needs root (CI runs as root)");
        }
        let dir = tempfile::tempdir().expect("a temporary directory");
        let owner = user_ids("postgres").expect("the postgresql package makes a postgres user");
        std::os::unix::fs::chown(dir.path(), Some(owner.0), Some(owner.1))
            .expect("give the directory to postgres");
        let port = free_port();
        let options = extra(dir.path());
        chown_all(dir.path(), owner);
        let pg = Postgres {
            dir,
            bin,
            port,
            options,
        };
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
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off{}",
            self.port,
            self.dir.path().display(),
            self.options
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

/// Gives every file directly in `dir` to `owner` (the server reads its key
/// as itself, and refuses one others may read).
fn chown_all(dir: &Path, owner: (u32, u32)) {
    for entry in std::fs::read_dir(dir)
        .expect("read the directory")
        .flatten()
    {
        std::os::unix::fs::chown(entry.path(), Some(owner.0), Some(owner.1)).expect("chown");
    }
}

/// A CA and a server certificate for `127.0.0.1` it signed, with
/// openssl, in `dir`: `ca.pem`, `server.crt`, `server.key` (0600).
/// Returns the CA's path.
pub fn make_certificates(dir: &Path) -> PathBuf {
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("run openssl");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509"];
    ca.extend(ec);
    ca.extend([
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=jobwatch test CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    openssl(&ca);
    let mut csr = vec!["req"];
    csr.extend(ec);
    csr.extend([
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    openssl(&csr);
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .expect("write the extensions");
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.crt",
        "-days",
        "2",
        "-extfile",
        "server.ext",
    ]);
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        dir.join("server.key"),
        std::fs::Permissions::from_mode(0o600),
    )
    .expect("chmod the key");
    dir.join("ca.pem")
}

/// Says in one line why no server starts here, and starts none; under
/// `.ci/run` (`CI_REQUIRE_POSTGRES=1`) that is a failure, so CI can never
/// pass with the PostgreSQL tests skipped.
fn skip<T>(why: &str) -> Option<T> {
    if std::env::var_os("CI_REQUIRE_POSTGRES").is_some_and(|v| v == "1") {
        panic!("CI_REQUIRE_POSTGRES=1, but {why}");
    }
    eprintln!("skipped: {why}");
    None
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

/// `[state] url` with `sslmode=require`: the connection is TLS, verified
/// against `sslrootcert`; a server whose certificate another CA signed is
/// refused with rustls's reason, and the password is in no error.
#[tokio::test]
async fn a_tls_database_is_verified_against_its_sslrootcert() {
    use jobwatch::config::StateConfig;
    use jobwatch::storage::{OpenMode, Storage};
    let Some((pg, ca)) = Postgres::start_with_tls() else {
        return;
    };
    let url = |ca: &Path| {
        format!(
            "postgres://postgres:pw-not-shown@127.0.0.1:{}/postgres?sslmode=require&sslrootcert={}",
            pg.port,
            ca.display()
        )
    };
    let state = StateConfig::postgres(url(&ca).parse().expect("a valid URL"));
    let store = Storage::open(&state, OpenMode::ReadWrite)
        .await
        .expect("connects over TLS");
    assert_eq!(store.outbox_counts().await.expect("counts").pending, 0);
    assert_eq!(
        pg.psql(
            "postgres",
            "SELECT bool_and(s.ssl) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid)
             WHERE a.application_name = 'jobwatch'"
        ),
        "t",
        "every connection of ours is TLS"
    );

    let other = tempfile::tempdir().expect("tempdir");
    let wrong_ca = make_certificates(other.path());
    let state = StateConfig::postgres(url(&wrong_ca).parse().expect("a valid URL"));
    let refused = Storage::open(&state, OpenMode::ReadWrite)
        .await
        .expect_err("another CA's server is refused")
        .to_string();
    assert!(refused.contains("certificate"), "{refused}");
    assert!(!refused.contains("pw-not-shown"), "{refused}");
}
