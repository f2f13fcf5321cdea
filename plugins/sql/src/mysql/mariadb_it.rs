//! The MySQL client against a real MariaDB: each test starts its own
//! server in a temp dir on a free loopback port, sets up users over the
//! server's socket with the `mariadb` command-line client, then speaks to
//! it over TCP through `crate::mysql::Client`.

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

use crate::mysql::{Client, ErrorClass, MysqlError, Options, QueryResult, Transport, Value};

/// The first of `candidates` (names on `PATH` or absolute paths) that
/// exists. When none does, the test is skipped loudly, or fails under
/// `CI=true`, where a skip would pass without testing anything.
fn find_binary(candidates: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found = candidates.iter().find_map(|c| {
        let c = Path::new(c);
        if c.is_absolute() {
            return c.is_file().then(|| c.to_path_buf());
        }
        std::env::split_paths(&path)
            .map(|dir| dir.join(c))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        let test = std::thread::current()
            .name()
            .unwrap_or("a test")
            .to_string();
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!(
                "{} is not installed, and CI=true: {test} must not be skipped",
                candidates[0]
            );
        }
        eprintln!(
            "\n\n******** SKIPPED {test}: {} not installed (Debian: mariadb-server, mariadb-client) ********\n",
            candidates[0]
        );
    }
    found
}

/// A private MariaDB, killed on drop.
struct MariaDb {
    child: Child,
    port: u16,
    socket: PathBuf,
    client: PathBuf,
    dir: tempfile::TempDir,
}

impl MariaDb {
    /// Installs a fresh data dir and starts the server; `None` when MariaDB
    /// is not installed (see [`find_binary`]).
    fn start() -> Option<MariaDb> {
        MariaDb::start_with(&[])
    }

    /// [`start`](MariaDb::start) with more server options.
    fn start_with(extra: &[String]) -> Option<MariaDb> {
        let server = find_binary(&["mariadbd", "/usr/sbin/mariadbd", "/usr/sbin/mysqld"])?;
        let install = find_binary(&["mariadb-install-db", "mysql_install_db"])?;
        let client = find_binary(&["mariadb", "mysql"])?;
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        // The server refuses to run as root unless told to; as anyone
        // else --user only draws a warning.
        let user = String::from_utf8(Command::new("id").arg("-un").output().unwrap().stdout)
            .unwrap()
            .trim()
            .to_string();
        // Small InnoDB files: each test has its own server. Its own tmpdir
        // too: a starting server deletes the `#sql*` files it finds there,
        // which breaks another server's set-up.
        let tmp = dir.path().join("tmp");
        std::fs::create_dir(&tmp).unwrap();
        let innodb = [
            "--innodb-log-file-size=32M".to_string(),
            "--innodb-buffer-pool-size=32M".to_string(),
            format!("--tmpdir={}", tmp.display()),
        ];
        let out = Command::new(&install)
            .arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .arg("--auth-root-authentication-method=normal")
            .arg("--skip-test-db")
            .arg(format!("--user={user}"))
            .args(&innodb)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{} failed: {}{}",
            install.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let socket = dir.path().join("sock");
        let log = dir.path().join("error.log");
        let child = Command::new(&server)
            .arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--port={port}"))
            .arg("--bind-address=127.0.0.1")
            .arg(format!("--socket={}", socket.display()))
            .arg(format!("--pid-file={}", dir.path().join("pid").display()))
            .arg(format!("--log-error={}", log.display()))
            .arg(format!("--user={user}"))
            .arg("--skip-name-resolve")
            // Room for the 20 MiB value.
            .arg("--max-allowed-packet=64M")
            .args(&innodb)
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut db = MariaDb {
            child,
            port,
            socket,
            client,
            dir,
        };
        db.wait_ready(&log);
        Some(db)
    }

    /// Waits for the server to accept connections on its socket.
    fn wait_ready(&mut self, log: &Path) {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!(
                    "mariadbd exited ({status}): {}",
                    std::fs::read_to_string(log).unwrap_or_default()
                );
            }
            if self.try_sql("SELECT 1").is_ok() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "mariadbd not ready: {}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn try_sql(&self, sql: &str) -> Result<String, String> {
        let out = Command::new(&self.client)
            .arg("--no-defaults")
            .arg(format!("--socket={}", self.socket.display()))
            .args(["-uroot", "--batch", "--skip-column-names", "-e", sql])
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// Runs `sql` as root over the socket (set-up, outside the client
    /// under test).
    fn sql(&self, sql: &str) -> String {
        self.try_sql(sql)
            .unwrap_or_else(|e| panic!("{sql}: {e} (data in {})", self.dir.path().display()))
    }

    /// A database `t` and a user `pump` who may do anything in it.
    fn add_pump_user(&self) {
        self.sql(
            "CREATE DATABASE t; \
             CREATE USER pump@'%' IDENTIFIED BY 'pump-pw'; \
             GRANT ALL ON t.* TO pump@'%';",
        );
    }

    fn tcp(&self) -> TcpStream {
        let stream = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        // A hang fails the test instead of blocking it forever.
        stream
            .set_read_timeout(Some(Duration::from_secs(120)))
            .unwrap();
        stream
    }

    fn login<T: Transport>(
        &self,
        transport: T,
        user: &str,
        password: &str,
        tls: bool,
    ) -> Result<Client<T>, MysqlError> {
        let options = Options {
            user: user.into(),
            password: password.into(),
            database: Some("t".into()),
            tls,
            server_name: "127.0.0.1".into(),
            ..Options::default()
        };
        Client::connect(transport, &options)
    }

    fn connect(&self, user: &str, password: &str) -> Result<Client<TcpStream>, MysqlError> {
        self.login(self.tcp(), user, password, false)
    }

    fn pump(&self) -> Client<TcpStream> {
        self.connect("pump", "pump-pw").unwrap()
    }
}

impl Drop for MariaDb {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn rows_of(result: QueryResult) -> (Vec<String>, Vec<Vec<Value>>) {
    match result {
        QueryResult::Rows { columns, rows } => (columns, rows),
        other => panic!("rows expected, got {other:?}"),
    }
}

fn affected(result: QueryResult) -> u64 {
    match result {
        QueryResult::Ok { affected_rows, .. } => affected_rows,
        other => panic!("OK expected, got {other:?}"),
    }
}

fn text(v: &Value) -> &str {
    std::str::from_utf8(v.as_deref().expect("not NULL")).unwrap()
}

fn server_code(e: &MysqlError) -> u16 {
    match e {
        MysqlError::Server { code, .. } => *code,
        other => panic!("server error expected, got {other:?}"),
    }
}

#[test]
fn logs_in_and_refuses_bad_credentials_and_missing_grants() {
    let Some(db) = MariaDb::start() else { return };
    db.add_pump_user();
    db.sql(
        "CREATE TABLE t.items (id INT PRIMARY KEY); \
         CREATE USER reader@'%' IDENTIFIED BY 'reader-pw'; \
         GRANT SELECT ON t.* TO reader@'%';",
    );

    let mut pump = db.pump();
    assert!(
        pump.server_version().contains("MariaDB"),
        "{}",
        pump.server_version()
    );
    pump.ping().unwrap();
    let (columns, rows) = rows_of(
        pump.query("SELECT CURRENT_USER(), DATABASE(), NULL")
            .unwrap(),
    );
    assert_eq!(columns, ["CURRENT_USER()", "DATABASE()", "NULL"]);
    assert_eq!(text(&rows[0][0]), "pump@%");
    assert_eq!(text(&rows[0][1]), "t");
    assert_eq!(rows[0][2], None);
    let (columns, rows) = rows_of(pump.query("DESCRIBE items").unwrap());
    assert_eq!(columns[0], "Field");
    assert_eq!(text(&rows[0][0]), "id");
    let (_, rows) = rows_of(pump.query("SHOW TABLES").unwrap());
    assert_eq!(text(&rows[0][0]), "items");
    pump.close().unwrap();

    let e = db
        .connect("pump", "wrong")
        .err()
        .expect("a wrong password logs in");
    assert_eq!(server_code(&e), 1045, "{e}");
    assert_eq!(e.class(), ErrorClass::Fatal);

    let mut reader = db.connect("reader", "reader-pw").unwrap();
    let (_, rows) = rows_of(reader.query("SELECT COUNT(*) FROM items").unwrap());
    assert_eq!(text(&rows[0][0]), "0");
    let e = reader.query("INSERT INTO items VALUES (1)").unwrap_err();
    assert_eq!(server_code(&e), 1142, "{e}");
    assert_eq!(e.class(), ErrorClass::Fatal);
    // A server error leaves the connection usable.
    reader.ping().unwrap();
}

#[test]
fn auth_switch_to_a_plugin_the_client_lacks_names_it() {
    let Some(db) = MariaDb::start() else { return };
    db.sql(
        "INSTALL SONAME 'auth_ed25519'; \
         CREATE USER edu@'%' IDENTIFIED VIA ed25519 USING PASSWORD('edu-pw'); \
         CREATE DATABASE t; GRANT ALL ON t.* TO edu@'%';",
    );
    let e = db.connect("edu", "edu-pw").err().expect("ed25519 logs in");
    match &e {
        MysqlError::Unsupported(m) => assert!(m.contains("client_ed25519"), "{m}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(e.class(), ErrorClass::Fatal);
}

#[test]
fn upserts_rows_reads_them_back_and_names_a_bad_row() {
    let Some(db) = MariaDb::start() else { return };
    db.add_pump_user();
    let mut c = db.pump();
    c.query("CREATE TABLE events (id INT PRIMARY KEY, v VARCHAR(16) NOT NULL)")
        .unwrap();

    let values: Vec<String> = (1..=1000).map(|i| format!("({i}, 'v{i}')")).collect();
    let upsert = format!(
        "INSERT INTO events (id, v) VALUES {} ON DUPLICATE KEY UPDATE id = id",
        values.join(", ")
    );
    assert_eq!(affected(c.query(&upsert).unwrap()), 1000);
    let (columns, rows) = rows_of(c.query("SELECT id, v FROM events ORDER BY id").unwrap());
    assert_eq!(columns, ["id", "v"]);
    assert_eq!(rows.len(), 1000);
    for (i, row) in rows.iter().enumerate() {
        assert_eq!(text(&row[0]), (i + 1).to_string());
        assert_eq!(text(&row[1]), format!("v{}", i + 1));
    }

    // The same rows again: the key exists, nothing changes.
    assert_eq!(affected(c.query(&upsert).unwrap()), 0);
    let (_, rows) = rows_of(c.query("SELECT COUNT(*) FROM events").unwrap());
    assert_eq!(text(&rows[0][0]), "1000");

    // Strict mode refuses a value too long for VARCHAR(16) in row 3.
    let e = c
        .query(
            "INSERT INTO events (id, v) VALUES (2001, 'a'), (2002, 'b'), \
             (2003, 'this value is far too long'), (2004, 'd')",
        )
        .unwrap_err();
    assert_eq!(server_code(&e), 1406, "{e}");
    assert_eq!(e.class(), ErrorClass::BadRow { row: Some(3) });
    let (_, rows) = rows_of(
        c.query("SELECT COUNT(*) FROM events WHERE id > 2000")
            .unwrap(),
    );
    assert_eq!(text(&rows[0][0]), "0");
}

#[test]
fn many_rows_and_a_value_over_one_packet() {
    let Some(db) = MariaDb::start() else { return };
    db.add_pump_user();
    let mut c = db.pump();

    // 100 000 rows: as many packets, read across many transport reads.
    let (_, rows) = rows_of(
        c.query("SELECT seq, REPEAT('x', 100) FROM seq_1_to_100000")
            .unwrap(),
    );
    assert_eq!(rows.len(), 100_000);
    assert_eq!(text(&rows[99_999][0]), "100000");
    assert!(rows
        .iter()
        .all(|r| r[1].as_ref().is_some_and(|v| v.len() == 100)));

    // 20 MiB goes out and comes back as two chunks of a packet each way.
    let big: String = (0..20 << 20)
        .map(|i| (b'a' + (i % 26) as u8) as char)
        .collect();
    c.query("CREATE TABLE blobs (id INT PRIMARY KEY, b LONGBLOB)")
        .unwrap();
    let insert = format!("INSERT INTO blobs VALUES (1, '{big}')");
    assert_eq!(affected(c.query(&insert).unwrap()), 1);
    let (_, rows) = rows_of(c.query("SELECT LENGTH(b), b FROM blobs").unwrap());
    assert_eq!(text(&rows[0][0]), (20 << 20).to_string());
    assert!(
        rows[0][1].as_deref() == Some(big.as_bytes()),
        "the value came back changed"
    );
    c.ping().unwrap();
}

#[test]
fn server_killed_mid_query_is_an_io_error_to_retry() {
    let Some(mut db) = MariaDb::start() else {
        return;
    };
    db.add_pump_user();
    let mut sleeper = db.pump();
    let worker = std::thread::spawn(move || sleeper.query("SELECT SLEEP(600)"));
    // Wait until the server runs the query, then kill it.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let running = db.sql(
            "SELECT COUNT(*) FROM information_schema.processlist WHERE info = 'SELECT SLEEP(600)'",
        );
        if running.trim() == "1" {
            break;
        }
        assert!(Instant::now() < deadline, "the query never started");
        std::thread::sleep(Duration::from_millis(50));
    }
    db.child.kill().unwrap();
    db.child.wait().unwrap();
    let e = worker.join().unwrap().unwrap_err();
    assert!(matches!(e, MysqlError::Io(_)), "{e:?}");
    assert_eq!(e.class(), ErrorClass::Retry);
}

/// Runs openssl in `dir`, failing the test with its output.
fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run openssl (Debian package openssl)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A test CA, and a server certificate it signed for 127.0.0.1.
fn server_pki(dir: &Path) {
    const EC: [&str; 5] = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let ca = [
        "req",
        "-x509",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "2",
        "-subj",
        "/CN=pump-sql test ca",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign",
    ];
    openssl(dir, &[&ca[..], &EC].concat());
    let csr = [
        "req",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    ];
    openssl(dir, &[&csr[..], &EC].concat());
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.crt",
            "-days",
            "2",
            "-extfile",
            "server.ext",
        ],
    );
}

/// TCP that switches to rustls in place, as the plugin SDK's stream does
/// with `wasi:tls`.
enum TlsTransport {
    Plain(TcpStream, Arc<rustls::ClientConfig>),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
    /// An upgrade failed half way: the client gives up on the connection.
    Broken,
}

impl TlsTransport {
    fn new(tcp: TcpStream, ca: &Path) -> TlsTransport {
        let mut roots = rustls::RootCertStore::empty();
        if let Ok(cert) = CertificateDer::from_pem_file(ca) {
            roots.add(cert).unwrap();
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        TlsTransport::Plain(tcp, Arc::new(config))
    }

    fn stream(&mut self) -> io::Result<&mut dyn ReadWrite> {
        match self {
            TlsTransport::Plain(tcp, _) => Ok(tcp),
            TlsTransport::Tls(tls) => Ok(tls),
            TlsTransport::Broken => Err(io::Error::from(io::ErrorKind::NotConnected)),
        }
    }
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

impl Read for TlsTransport {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.stream()?.read(buf)
    }
}

impl Write for TlsTransport {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.stream()?.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.stream()?.flush()
    }
}

impl Transport for TlsTransport {
    fn upgrade_tls(&mut self, server_name: &str) -> io::Result<()> {
        let TlsTransport::Plain(tcp, config) = std::mem::replace(self, TlsTransport::Broken) else {
            return Err(io::Error::other("not a plain stream"));
        };
        let name = ServerName::try_from(server_name.to_owned())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let conn = rustls::ClientConnection::new(config, name).map_err(io::Error::other)?;
        let mut tls = rustls::StreamOwned::new(conn, tcp);
        // Handshake now, so a bad certificate fails here, not on a write.
        while tls.conn.is_handshaking() {
            tls.conn.complete_io(&mut tls.sock)?;
        }
        *self = TlsTransport::Tls(Box::new(tls));
        Ok(())
    }
}

#[test]
fn logs_in_over_tls_after_the_ssl_request() {
    let pki = tempfile::tempdir().unwrap();
    server_pki(pki.path());
    let file = |name: &str| pki.path().join(name).display().to_string();
    let ssl = [
        format!("--ssl-cert={}", file("server.crt")),
        format!("--ssl-key={}", file("server.key")),
    ];
    let Some(db) = MariaDb::start_with(&ssl) else {
        return;
    };
    db.add_pump_user();
    db.sql("CREATE USER tls@'%' IDENTIFIED BY 'tls-pw' REQUIRE SSL; GRANT ALL ON t.* TO tls@'%';");

    let transport = TlsTransport::new(db.tcp(), &pki.path().join("ca.crt"));
    let mut c = db.login(transport, "tls", "tls-pw", true).unwrap();
    let (_, rows) = rows_of(c.query("SHOW SESSION STATUS LIKE 'Ssl_version'").unwrap());
    assert!(text(&rows[0][1]).starts_with("TLSv1."), "{rows:?}");
    c.ping().unwrap();

    // The account requires TLS: without it the server refuses the login.
    let e = db
        .connect("tls", "tls-pw")
        .err()
        .expect("logged in without TLS");
    assert_eq!(server_code(&e), 1045, "{e}");

    // A certificate the client does not trust fails the upgrade.
    let untrusting = TlsTransport::new(db.tcp(), Path::new("/nonexistent"));
    let e = db
        .login(untrusting, "tls", "tls-pw", true)
        .err()
        .expect("an untrusted certificate");
    assert!(matches!(e, MysqlError::Io(_)), "{e:?}");

    // Plain TCP cannot switch: a setup error, not one to retry.
    let e = db
        .login(db.tcp(), "pump", "pump-pw", true)
        .err()
        .expect("TLS over plain TCP");
    assert!(
        matches!(&e, MysqlError::Unsupported(m) if m.contains("TLS")),
        "{e:?}"
    );
    assert_eq!(e.class(), ErrorClass::Fatal);
}

#[test]
fn tls_against_a_server_without_it_is_a_setup_error() {
    let Some(db) = MariaDb::start() else {
        return;
    };
    db.add_pump_user();
    let transport = TlsTransport::new(db.tcp(), Path::new("/nonexistent"));
    let e = db
        .login(transport, "pump", "pump-pw", true)
        .err()
        .expect("TLS without a certificate");
    assert!(
        matches!(&e, MysqlError::Unsupported(m) if m.contains("does not offer TLS")),
        "{e:?}"
    );
    assert_eq!(e.class(), ErrorClass::Fatal);
}
