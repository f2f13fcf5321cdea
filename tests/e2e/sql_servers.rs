//! Private SQL servers for the `sql` sink tests: PostgreSQL from Debian's
//! packages, in a temp dir on a free port, killed with SIGKILL and started
//! again on the same data. Queried back with the server's own client.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::harness::{free_port, wait_for};
use crate::sink_servers::{find_binary, ServerProcess};

const WAIT: Duration = Duration::from_secs(60);

/// The newest `/usr/lib/postgresql/<version>/bin/<program>`.
fn pg_binary(program: &str) -> Option<PathBuf> {
    let mut versions: Vec<u32> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    versions.sort();
    let candidates: Vec<String> = versions
        .iter()
        .rev()
        .map(|v| format!("/usr/lib/postgresql/{v}/bin/{program}"))
        .collect();
    let mut refs: Vec<&str> = candidates.iter().map(String::as_str).collect();
    // Listed last so a missing server is reported by its package's name.
    refs.push("postgres (Debian package postgresql)");
    find_binary(&refs)
}

/// Runs `program` as the `postgres` user: the server refuses to run as
/// root. `setpriv` execs, so killing the child kills the server itself.
fn as_postgres(program: &Path, args: &[String]) -> (PathBuf, Vec<String>) {
    let mut all = vec![
        "--reuid=postgres".to_string(),
        "--regid=postgres".to_string(),
        "--init-groups".to_string(),
        "--".to_string(),
        program.display().to_string(),
    ];
    all.extend(args.iter().cloned());
    (PathBuf::from("/usr/bin/setpriv"), all)
}

fn chown_postgres(path: &Path) {
    let status = Command::new("chown")
        .args(["-R", "postgres:postgres"])
        .arg(path)
        .status()
        .unwrap();
    assert!(status.success(), "chown {}", path.display());
}

/// Server-side TLS files (`server.crt`, `server.key`), copied in with
/// the owner and mode PostgreSQL demands.
pub struct PgTls<'a> {
    pub cert: &'a str,
    pub key: &'a str,
}

pub struct Postgres {
    process: ServerProcess,
    pub port: u16,
    socket_dir: PathBuf,
    _dir: tempfile::TempDir,
}

impl Postgres {
    /// A fresh cluster: superuser `postgres` over the socket (trust), and
    /// password (SCRAM) logins over TCP. `None` when PostgreSQL is missing.
    pub fn start(tls: Option<PgTls<'_>>) -> Option<Postgres> {
        let initdb = pg_binary("initdb")?;
        let postgres = pg_binary("postgres")?;
        let dir = tempfile::tempdir().unwrap();
        // The server's user must reach its data through the temp dir.
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        let data = dir.path().join("data");
        let socket_dir = dir.path().join("sock");
        std::fs::create_dir_all(&data).unwrap();
        std::fs::create_dir_all(&socket_dir).unwrap();
        chown_postgres(dir.path());
        let (program, args) = as_postgres(
            &initdb,
            &[
                "-D".into(),
                data.display().to_string(),
                "-U".into(),
                "postgres".into(),
                "--auth-local=trust".into(),
                "--auth-host=scram-sha-256".into(),
                "-E".into(),
                "UTF8".into(),
                "--no-sync".into(),
            ],
        );
        let out = Command::new(&program).args(&args).output().unwrap();
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let port = free_port();
        let mut server_args = vec![
            "-D".to_string(),
            data.display().to_string(),
            "-p".into(),
            port.to_string(),
            "-k".into(),
            socket_dir.display().to_string(),
            "-c".into(),
            "listen_addresses=127.0.0.1".into(),
            // The tests kill the server; durability on disk is not what
            // they measure, and fsync only slows them.
            "-c".into(),
            "fsync=off".into(),
        ];
        if let Some(tls) = tls {
            for (from, to) in [(tls.cert, "server.crt"), (tls.key, "server.key")] {
                let dest = data.join(to);
                std::fs::copy(from, &dest).unwrap();
                std::fs::set_permissions(
                    &dest,
                    std::os::unix::fs::PermissionsExt::from_mode(0o600),
                )
                .unwrap();
            }
            chown_postgres(&data);
            server_args.extend(["-c".into(), "ssl=on".into()]);
        }
        let (program, args) = as_postgres(&postgres, &server_args);
        let mut pg = Postgres {
            process: ServerProcess::new(program, args, dir.path().join("server.log")),
            port,
            socket_dir,
            _dir: dir,
        };
        pg.process.spawn();
        pg.wait_ready();
        Some(pg)
    }

    fn wait_ready(&mut self) {
        wait_for(WAIT, "PostgreSQL to accept queries", || {
            self.try_psql("postgres", "SELECT 1").ok()
        });
    }

    /// SIGKILL: a crash, no shutdown.
    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// Starts the server again on the same data and port. Its old backends
    /// notice the postmaster's death and exit; until they have, a new
    /// postmaster refuses to start, so it is started until it stays up.
    pub fn restart(&mut self) {
        wait_for(WAIT, "PostgreSQL to start again", || {
            self.process.spawn();
            std::thread::sleep(Duration::from_millis(500));
            if self.try_psql("postgres", "SELECT 1").is_ok() {
                return Some(());
            }
            self.process.kill();
            None
        });
        self.wait_ready();
    }

    /// Runs `sql` in database `db` as the superuser, over the socket.
    pub fn try_psql(&self, db: &str, sql: &str) -> Result<String, String> {
        let out = Command::new("psql")
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
            .arg("-h")
            .arg(&self.socket_dir)
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
            .map_err(|e| format!("run psql (Debian package postgresql-client): {e}"))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim_end().to_string())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// Like [`Postgres::try_psql`], failing the test on an error.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        self.try_psql(db, sql)
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    /// The rows of `select` as JSON objects.
    pub fn rows(&self, db: &str, select: &str) -> Vec<serde_json::Value> {
        let json = self.psql(
            db,
            &format!("SELECT coalesce(json_agg(t), '[]') FROM ({select}) t"),
        );
        serde_json::from_str::<Vec<serde_json::Value>>(&json).unwrap()
    }

    /// Rows in `table`, 0 while it does not exist.
    pub fn count(&self, db: &str, table: &str) -> u64 {
        self.try_psql(db, &format!("SELECT count(*) FROM {table}"))
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    }

    /// `postgres://user:password@127.0.0.1:port/db` plus `params`.
    pub fn url(&self, user: &str, password: &str, db: &str, params: &str) -> String {
        format!(
            "postgres://{user}:{password}@127.0.0.1:{}/{db}{params}",
            self.port
        )
    }
}

/// A MariaDB of its own: data, socket and a tmpdir in a temp dir, TCP on
/// a free port; users are set up over the socket as root.
pub struct MariaDb {
    process: ServerProcess,
    pub port: u16,
    socket: PathBuf,
    client: PathBuf,
    _dir: tempfile::TempDir,
}

impl MariaDb {
    /// `None` when MariaDB is not installed.
    pub fn start() -> Option<MariaDb> {
        let server = find_binary(&["mariadbd", "/usr/sbin/mariadbd"])?;
        let install = find_binary(&["mariadb-install-db", "/usr/bin/mariadb-install-db"])?;
        let client = find_binary(&["mariadb", "/usr/bin/mariadb"])?;
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        // A starting server empties its tmpdir of `#sql*` files: each
        // server gets its own, so parallel tests do not break each other.
        let tmp = dir.path().join("tmp");
        std::fs::create_dir(&tmp).unwrap();
        let common = [
            "--innodb-log-file-size=32M".to_string(),
            "--innodb-buffer-pool-size=64M".to_string(),
            format!("--tmpdir={}", tmp.display()),
            // Root may run the server when it says so.
            "--user=root".to_string(),
        ];
        let out = Command::new(&install)
            .arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .arg("--auth-root-authentication-method=normal")
            .arg("--skip-test-db")
            .args(&common)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "mariadb-install-db: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let port = free_port();
        let socket = dir.path().join("sock");
        let mut args = vec![
            "--no-defaults".to_string(),
            format!("--datadir={}", data.display()),
            format!("--port={port}"),
            "--bind-address=127.0.0.1".into(),
            format!("--socket={}", socket.display()),
            format!("--pid-file={}", dir.path().join("pid").display()),
            "--skip-name-resolve".into(),
            // Commits reach the OS at once, so killing the server loses
            // none, but are not synced to disk: the tests kill processes,
            // not machines.
            "--innodb-flush-log-at-trx-commit=2".into(),
        ];
        args.extend(common);
        let mut db = MariaDb {
            process: ServerProcess::new(server, args, dir.path().join("server.log")),
            port,
            socket,
            client,
            _dir: dir,
        };
        db.process.spawn();
        db.wait_ready();
        Some(db)
    }

    fn wait_ready(&self) {
        wait_for(WAIT, "MariaDB to accept queries", || {
            self.try_sql("SELECT 1").ok()
        });
    }

    /// SIGKILL: a crash, no shutdown.
    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// Starts the server again on the same data and port.
    pub fn restart(&mut self) {
        self.process.spawn();
        self.wait_ready();
    }

    /// Runs `sql` as root over the socket; the output in `--batch` form
    /// with a header line.
    pub fn try_sql(&self, sql: &str) -> Result<String, String> {
        let out = Command::new(&self.client)
            .arg("--no-defaults")
            .arg(format!("--socket={}", self.socket.display()))
            .args(["-uroot", "--batch", "-e", sql])
            .output()
            .map_err(|e| format!("run mariadb (Debian package mariadb-client): {e}"))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    pub fn sql(&self, sql: &str) -> String {
        self.try_sql(sql).unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    /// The rows of `select`: column name to value (`None` for NULL),
    /// unescaped from `--batch` output.
    pub fn rows(&self, select: &str) -> Vec<std::collections::BTreeMap<String, Option<String>>> {
        let out = self.sql(select);
        let mut lines = out.lines();
        let Some(header) = lines.next() else {
            return Vec::new();
        };
        let names: Vec<&str> = header.split('\t').collect();
        lines
            .map(|line| {
                names
                    .iter()
                    .zip(line.split('\t'))
                    .map(|(n, v)| (n.to_string(), unescape_batch(v)))
                    .collect()
            })
            .collect()
    }

    /// Rows in `table`, 0 while it does not exist.
    pub fn count(&self, table: &str) -> u64 {
        self.try_sql(&format!("SELECT count(*) FROM {table}"))
            .ok()
            .and_then(|out| out.lines().nth(1)?.trim().parse().ok())
            .unwrap_or(0)
    }

    /// `mysql://user:password@127.0.0.1:port/db` plus `params`.
    pub fn url(&self, user: &str, password: &str, db: &str, params: &str) -> String {
        format!(
            "mysql://{user}:{password}@127.0.0.1:{}/{db}{params}",
            self.port
        )
    }
}

/// A `--batch` value: `NULL` is NULL, and `\t`, `\n`, `\\`, `\0` are
/// escapes.
fn unescape_batch(v: &str) -> Option<String> {
    if v == "NULL" {
        return None;
    }
    let mut out = String::with_capacity(v.len());
    let mut chars = v.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('t') => out.push('\t'),
            Some('n') => out.push('\n'),
            Some('0') => out.push('\0'),
            Some(other) => out.push(other),
            None => out.push('\\'),
        }
    }
    Some(out)
}
