//! Test harness: a private redis-server per test, the real `pumphouse`
//! binary run with a generated config, real `.wasm` plugins.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub use super::config::{strings, HostConfig, Pump};
pub use pumphouse::demo::RedisServer;

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Builds the plugins once per test run if `scripts/build` has not.
fn ensure_plugins() {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let r = root();
        if r.join("target/plugins/file.wasm").exists()
            && r.join("target/test-plugins/trap.wasm").exists()
            && r.join("target/test-plugins/hostile.wasm").exists()
            && r.join("target/test-plugins/hostile-filter.wasm").exists()
        {
            return;
        }
        let status = Command::new(r.join("scripts/build"))
            .arg("--plugins-only")
            .status()
            .expect("run scripts/build");
        assert!(status.success(), "scripts/build --plugins-only failed");
    });
}

/// Path of a plugin from `plugins/`.
pub fn plugin(name: &str) -> String {
    ensure_plugins();
    root()
        .join("target/plugins")
        .join(format!("{name}.wasm"))
        .display()
        .to_string()
}

/// Path of a hostile fixture from `tests/plugins/`.
pub fn fixture(name: &str) -> String {
    ensure_plugins();
    root()
        .join("target/test-plugins")
        .join(format!("{name}.wasm"))
        .display()
        .to_string()
}

/// Runs the `pumphouse` binary: exit code, stdout, stderr.
pub fn pumphouse(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_pumphouse"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn redis_conn(r: &RedisServer) -> redis::Connection {
    redis::Client::open(r.url())
        .unwrap()
        .get_connection()
        .unwrap()
}

/// Polls `f` until it returns `Some`, panicking with `what` after `within`.
pub fn wait_for<T>(within: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {within:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// A `pumphouse run` child process.
pub struct Host {
    child: Option<Child>,
    pub http: String,
    /// Where the config, log and `out/` live.
    pub dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
    log: PathBuf,
}

impl Host {
    /// Writes `config` (a TOML document; `[server]` is added) and starts
    /// the host on it.
    pub fn start(config: impl std::fmt::Display) -> Host {
        let dir = tempfile::tempdir().unwrap();
        Self::start_in(dir, config)
    }

    pub fn start_in(dir: tempfile::TempDir, config: impl std::fmt::Display) -> Host {
        Self::start_in_env(dir, config, &[])
    }

    /// Like [`Host::start_in`], with extra environment variables for the
    /// host process.
    pub fn start_in_env(
        dir: tempfile::TempDir,
        config: impl std::fmt::Display,
        env: &[(&str, &str)],
    ) -> Host {
        let mut host = Self::start_at_env(dir.path(), config, env);
        host._tmp = Some(dir);
        host
    }

    /// Starts a host in `dir`, which outlives it: a restarted host finds
    /// its spool and output there.
    pub fn start_at(dir: &Path, config: impl std::fmt::Display) -> Host {
        Self::start_at_env(dir, config, &[])
    }

    /// Like [`Host::start`], logging JSON lines (`--log-json`).
    pub fn start_json(config: impl std::fmt::Display) -> Host {
        let dir = tempfile::tempdir().unwrap();
        let mut host = Self::start_with(dir.path(), config, &[], &["--log-json"]);
        host._tmp = Some(dir);
        host
    }

    fn start_at_env(dir: &Path, config: impl std::fmt::Display, env: &[(&str, &str)]) -> Host {
        Self::start_with(dir, config, env, &[])
    }

    /// Like [`Host::start`], the host process joining the cgroup (v2)
    /// directory `cgroup` before it runs: everything it ever allocates is
    /// charged to, and limited by, that cgroup.
    pub fn start_in_cgroup(cgroup: &Path, config: impl std::fmt::Display) -> Host {
        let dir = tempfile::tempdir().unwrap();
        let mut host = Self::launch(dir.path(), config, &[], &[], Some(cgroup));
        host._tmp = Some(dir);
        host
    }

    fn start_with(
        dir: &Path,
        config: impl std::fmt::Display,
        env: &[(&str, &str)],
        args: &[&str],
    ) -> Host {
        Self::launch(dir, config, env, args, None)
    }

    fn launch(
        dir: &Path,
        config: impl std::fmt::Display,
        env: &[(&str, &str)],
        args: &[&str],
        cgroup: Option<&Path>,
    ) -> Host {
        let port = free_port();
        let http = format!("127.0.0.1:{port}");
        let text = format!("{config}\n[server]\nlisten = \"{http}\"\n");
        let cfg = dir.join("pumphouse.toml");
        std::fs::write(&cfg, text).unwrap();
        let log = dir.join(format!("host-{port}.log"));
        let bin = env!("CARGO_BIN_EXE_pumphouse");
        let mut command = match cgroup {
            // The shell moves itself into the cgroup, then becomes the host
            // (same pid), so not one page of the host is charged elsewhere.
            Some(cgroup) => {
                let mut c = Command::new("sh");
                c.arg("-c")
                    .arg(r#"echo $$ > "$0/cgroup.procs" && exec "$@""#)
                    .arg(cgroup)
                    .arg(bin);
                c
            }
            None => Command::new(bin),
        };
        let child = command
            .args(args)
            .args(["run", "--config"])
            .arg(&cfg)
            .env("PUMPHOUSE_LOG", "info,pumphouse=debug")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("spawn pumphouse");
        let host = Host {
            child: Some(child),
            http,
            dir: dir.to_path_buf(),
            _tmp: None,
            log,
        };
        host.wait_http();
        host
    }

    fn wait_http(&self) {
        wait_for(
            Duration::from_secs(60),
            &format!("host HTTP on {} (log: {})", self.http, self.log_text()),
            || http_get(&self.http, "/healthz").ok().map(|_| ()),
        );
    }

    pub fn out(&self) -> PathBuf {
        self.dir.join("out")
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().expect("running").id() as i32
    }

    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), sig).unwrap();
    }

    /// Waits for the process to exit and returns its exit code.
    pub fn wait_exit(&mut self, within: Duration) -> Option<i32> {
        let mut child = self.child.take().expect("running");
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status.code();
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!(
                    "host did not exit within {within:?}; log:\n{}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().unwrap().is_none())
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn metrics(&self) -> String {
        http_get(&self.http, "/metrics")
            .map(|(_, b)| b)
            .unwrap_or_default()
    }

    /// A metric's value (exact name and label text), 0 when absent.
    pub fn metric(&self, name_with_labels: &str) -> f64 {
        pumphouse::demo::metric_value(&self.metrics(), name_with_labels)
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        self.kill9();
        if std::thread::panicking() {
            eprintln!(
                "---- host log ({}) ----\n{}",
                self.log.display(),
                self.log_text()
            );
        }
    }
}

/// A GET to the host: status code and body.
pub fn http_get(addr: &str, path: &str) -> std::io::Result<(u16, String)> {
    http_request("GET", addr, path, &[], b"", Duration::from_secs(5))
}

/// A POST without a body (admin calls may take a while).
pub fn http_post(addr: &str, path: &str) -> (u16, String) {
    http_request("POST", addr, path, &[], b"", Duration::from_secs(60)).unwrap()
}

/// One request to a test server, waiting up to 30 s for the answer.
pub fn http(
    method: &str,
    addr: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<(u16, String)> {
    http_request(method, addr, path, headers, body, Duration::from_secs(30))
}

/// One HTTP/1.0 request (so the answer is never chunked and the server
/// closes the connection after it): status and body.
pub fn http_request(
    method: &str,
    addr: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    timeout: Duration,
) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(timeout))?;
    let mut head = format!(
        "{method} {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes())?;
    s.write_all(body)?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad HTTP response: {text:?}")))?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((code, body))
}

/// Percent-encodes a query parameter.
pub fn url_encode(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Sample iam records `range` (seq = index) from generator `seed`, encoded
/// as the producer does.
pub fn iam_bytes(seed: u64, range: std::ops::Range<u64>) -> Vec<Vec<u8>> {
    let mut sampler = pumphouse::produce::Sampler::new(seed);
    range
        .map(|i| pumphouse::produce::encode_iam(&sampler.iam(i, T0)))
        .collect()
}

/// Lines of a JSON Lines file, parsed.
pub fn read_jsonl(path: &Path) -> Vec<serde_json::Value> {
    parse_jsonl(&std::fs::read_to_string(path).unwrap_or_default())
}

fn parse_jsonl(text: &str) -> Vec<serde_json::Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}")))
        .collect()
}

/// Waits until `path` holds at least `n` lines and returns them.
pub fn wait_lines(path: &Path, n: usize, within: Duration) -> Vec<serde_json::Value> {
    wait_for(within, &format!("{n} lines in {}", path.display()), || {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        // Only whole lines count: the sink may be mid-write.
        (text.ends_with('\n') && text.lines().count() >= n).then(|| parse_jsonl(&text))
    })
}

/// A time as the host's JSON writes it: RFC 3339, UTC.
pub fn rfc3339(secs: i64, nanos: u32) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(
        i128::from(secs) * 1_000_000_000 + i128::from(nanos),
    )
    .unwrap();
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

/// The JSON line the file sink writes for an iam record.
pub fn iam_json(r: &pumphouse::produce::IamRecord) -> serde_json::Value {
    serde_json::json!({
        "TimeStamp": rfc3339(r.timestamp, 0),
        "Username": r.username,
        "Effect": r.effect,
        "Conclusion": r.conclusion,
        "Request": r.request,
        "Policies": r.policies,
        "Deciders": r.deciders,
        "ExpireAt": rfc3339(r.expire_at.0, r.expire_at.1),
    })
}

/// Asserts that `lines` are the file sink's JSON lines of `records`
/// (sample iam records, seq 0..n), each exactly once.
pub fn assert_iam_lines(lines: &[serde_json::Value], records: &[pumphouse::produce::IamRecord]) {
    assert_eq!(lines.len(), records.len());
    let mut by_seq = vec![None; records.len()];
    for l in lines {
        let seq = iam_seq(l) as usize;
        assert!(by_seq[seq].is_none(), "seq {seq} delivered twice");
        by_seq[seq] = Some(l);
    }
    for (i, r) in records.iter().enumerate() {
        let got = by_seq[i].unwrap_or_else(|| panic!("seq {i} missing"));
        assert_eq!(got, &iam_json(r), "record {i}");
    }
}

/// The `seq` embedded in an iam record's Request by the sample generator.
pub fn iam_seq(line: &serde_json::Value) -> u64 {
    let req: serde_json::Value =
        serde_json::from_str(line["Request"].as_str().expect("Request")).expect("Request is JSON");
    req["context"]["seq"].as_u64().expect("seq")
}

/// Pushes records with one RPUSH each, pipelined, like the producers.
/// Every element of a list.
pub fn lrange(conn: &mut redis::Connection, key: &str) -> Vec<Vec<u8>> {
    redis::cmd("LRANGE")
        .arg(key)
        .arg(0)
        .arg(-1)
        .query(conn)
        .unwrap()
}

pub fn push(conn: &mut redis::Connection, key: &str, records: &[Vec<u8>]) {
    let mut pipe = redis::pipe();
    for r in records {
        pipe.cmd("RPUSH").arg(key).arg(r.as_slice()).ignore();
    }
    pipe.query::<()>(conn).unwrap();
}

/// Pushes iam records to `key` as iam-authz-server encodes them, 5000 to
/// a pipeline.
pub fn push_iam_records(
    conn: &mut redis::Connection,
    key: &str,
    records: &[pumphouse::produce::IamRecord],
) {
    for chunk in records.chunks(5000) {
        let bytes: Vec<_> = chunk.iter().map(pumphouse::produce::encode_iam).collect();
        push(conn, key, &bytes);
    }
}

/// Records left in Redis for `key`: the list plus every claimed batch.
pub fn left_in_redis(conn: &mut redis::Connection, key: &str) -> (u64, u64) {
    // One script, so a claim moving a batch between the list and its
    // lease cannot land between the reads and count that batch twice.
    let (len, claimed): (u64, u64) = redis::Script::new(
        r"
        local claimed = 0
        for _, b in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
            claimed = claimed + redis.call('LLEN', b)
        end
        return {redis.call('LLEN', KEYS[1]), claimed}
        ",
    )
    .key(key)
    .key(pumphouse::source::redis::lease_key(key))
    .invoke(conn)
    .unwrap();
    (len, claimed)
}

/// The sample time of generated records.
pub const T0: i64 = 1_763_700_000;

/// Pushes `n` sample iam records (seq 0..n) to the iam key and returns them.
pub fn push_iam(
    conn: &mut redis::Connection,
    n: u64,
    seed: u64,
) -> Vec<pumphouse::produce::IamRecord> {
    let mut sampler = pumphouse::produce::Sampler::new(seed);
    let records: Vec<_> = (0..n).map(|i| sampler.iam(i, T0)).collect();
    push_iam_records(conn, pumphouse::record::IAM_KEY, &records);
    records
}

/// Pushes `n` sample Tyk records (seq 0..n) to `key` and returns them.
pub fn push_tyk(
    conn: &mut redis::Connection,
    key: &str,
    n: u64,
    seed: u64,
) -> Vec<pumphouse::produce::TykRecord> {
    let mut sampler = pumphouse::produce::Sampler::new(seed);
    let records: Vec<_> = (0..n).map(|i| sampler.tyk(i, T0)).collect();
    let bytes: Vec<_> = records.iter().map(pumphouse::produce::encode_tyk).collect();
    push(conn, key, &bytes);
    records
}

/// Dead-letter entries of `key`'s records.
pub fn dead_letters(conn: &mut redis::Connection, key: &str) -> Vec<pumphouse::dlq::Entry> {
    let raw: Vec<Vec<u8>> = redis::cmd("LRANGE")
        .arg(format!("pumphouse:dead-letter:{key}"))
        .arg(0)
        .arg(-1)
        .query(conn)
        .unwrap();
    raw.iter()
        .map(|r| serde_json::from_slice(r).unwrap())
        .collect()
}

/// Scaffolds a sink and a filter with `plugins new --lang LANG` in a clean
/// directory, runs each project's `./build` (its own tests, then the
/// component; `env` adds to its environment) and expects `passed` in that
/// output, then checks the component with `plugins inspect` and
/// `plugins test` on 30 iam records.
pub fn scaffolds_build_and_pass(lang: &str, prefix: &str, passed: &str, env: &[(&str, &Path)]) {
    let dir = tempfile::tempdir().unwrap();
    let samples = dir.path().join("iam.jsonl");
    let samples = samples.to_str().unwrap();
    let (code, _, err) = pumphouse(&[
        "produce",
        "--format",
        "iam",
        "--count",
        "30",
        "--to-file",
        samples,
    ]);
    assert_eq!(code, 0, "{err}");
    for (kind, expect) in [
        ("sink", "ok (30 records written)"),
        ("filter", "(30 of 30)"),
    ] {
        let name = format!("{prefix}-{kind}");
        let (code, out, err) = pumphouse(&[
            "plugins",
            "new",
            &name,
            "--kind",
            kind,
            "--lang",
            lang,
            "--dir",
            dir.path().to_str().unwrap(),
        ]);
        assert_eq!(code, 0, "{out}{err}");
        assert!(out.contains("./build"), "{out}");
        let project = dir.path().join(&name);
        let mut build = std::process::Command::new(project.join("build"));
        build.env_remove("PYTHONPATH").current_dir(Path::new("/"));
        for (k, v) in env {
            build.env(k, v);
        }
        let build = build.output().unwrap();
        let log = format!(
            "{}{}",
            String::from_utf8_lossy(&build.stdout),
            String::from_utf8_lossy(&build.stderr)
        );
        assert!(build.status.success(), "./build of {name} failed:\n{log}");
        assert!(log.contains(passed), "its own tests ran:\n{log}");
        let wasm = project.join(format!("{name}.wasm"));
        let wasm = wasm.to_str().unwrap();
        let (code, out, err) = pumphouse(&["plugins", "inspect", wasm]);
        assert_eq!(code, 0, "{err}");
        assert!(out.contains(&format!("pump-{kind}@0.1.0")), "{out}");
        assert!(out.contains(&format!("name:     {name}")), "{out}");
        let (code, out, err) = pumphouse(&[
            "plugins", "test", wasm, "--input", samples, "--format", "iam",
        ]);
        assert_eq!(code, 0, "{out}{err}");
        assert!(out.contains(expect), "{out}");
    }
}
