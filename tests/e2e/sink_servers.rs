//! Private database servers for the sink tests: a process on free ports
//! in a temp dir, killed on drop and restartable on the same ports and
//! data; the harness's `http` sets them up and queries them back.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// The first of `candidates` (absolute paths or names on `PATH`) that
/// exists; `None` after a loud `SKIPPED` line (see [`skip`]; in CI a
/// failure), so a machine without the server still runs the rest of the
/// suite.
pub fn find_binary(candidates: &[&str]) -> Option<PathBuf> {
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
        skip(candidates[0]);
    }
    found
}

/// A test that cannot run because `program` is missing. In CI (`CI=true`)
/// that fails the test: a skip there would pass without testing anything.
/// Elsewhere the test passes with a loud `SKIPPED` line, and the skip is
/// appended to `$PUMPHOUSE_SKIP_LOG` so `scripts/test` lists it at the end.
fn skip(program: &str) {
    let test = std::thread::current()
        .name()
        .unwrap_or("a test")
        .to_string();
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{program} is not installed, and CI=true: {test} must not be skipped in CI (scripts/lib/ensure-deps installs it)");
    }
    eprintln!(
        "\n\n******** SKIPPED: {program} not installed (scripts/lib/ensure-deps installs it) ********\n"
    );
    if let Some(log) = std::env::var_os("PUMPHOUSE_SKIP_LOG") {
        use std::io::Write;
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
        {
            // One short line per skip; appends this small are atomic.
            let _ = writeln!(f, "{test}: {program} not installed");
        }
    }
}

/// A server process that can be killed and started again.
pub struct ServerProcess {
    program: PathBuf,
    args: Vec<String>,
    log: PathBuf,
    child: Option<Child>,
}

impl ServerProcess {
    pub fn new(program: PathBuf, args: Vec<String>, log: PathBuf) -> ServerProcess {
        ServerProcess {
            program,
            args,
            log,
            child: None,
        }
    }

    pub fn spawn(&mut self) {
        assert!(self.child.is_none(), "already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(&self.program)
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", self.program.display()));
        self.child = Some(child);
    }

    /// SIGKILL, like a crash: no clean shutdown.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            let text = self.log_text();
            let tail: String = text
                .lines()
                .rev()
                .take(40)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<Vec<_>>()
                .join("\n");
            eprintln!(
                "---- {} log tail ({}) ----\n{tail}",
                self.program.display(),
                self.log.display()
            );
        }
    }
}

/// A sink's server as the crash scenario drives it.
pub trait Restartable {
    /// Kills the server process at once.
    fn kill(&mut self);
    /// Starts it again on the same data and port, and waits until it serves.
    fn restart(&mut self);
    /// How many records `table` (or measurement) holds.
    fn held(&self, table: &str) -> u64;
}

/// The crash each server-backed sink goes through: 300 iam records
/// delivered, the server killed, 300 more produced while it is down (the
/// pump's writes fail and are retried), the server back, all 600 in
/// `table` and acknowledged. `seed` picks the records (`seed + 1` the
/// later ones). Returns the 600 records in `seq` order, and the host.
pub fn deliver_across_a_restart(
    server: &mut impl Restartable,
    conn: &mut redis::Connection,
    key: &str,
    table: &str,
    pump: &str,
    seed: u64,
    start_host: impl FnOnce() -> crate::harness::Host,
) -> (Vec<pumphouse::produce::IamRecord>, crate::harness::Host) {
    use crate::harness::{left_in_redis, push_iam_records, wait_for};
    let wait = std::time::Duration::from_secs(120);
    let mut records = iam_records(seed, 0..300);
    push_iam_records(conn, key, &records);
    let host = start_host();
    wait_for(wait, "the first 300 records", || {
        (server.held(table) == 300).then_some(())
    });

    // A crash: the records produced meanwhile wait in Redis, retried.
    server.kill();
    let later = iam_records(seed + 1, 300..600);
    push_iam_records(conn, key, &later);
    records.extend(later);
    let retries = format!("pumphouse_pump_errors_total{{pump=\"{pump}\",kind=\"retry\"}}");
    wait_for(wait, "writes failing while the server is down", || {
        (host.metric(&retries) >= 1.0).then_some(())
    });
    server.restart();
    wait_for(wait, "all 600 records", || {
        (server.held(table) == 600).then_some(())
    });
    wait_for(wait, "acks", || {
        (left_in_redis(conn, key) == (0, 0)).then_some(())
    });
    (records, host)
}

/// Records carrying sequence numbers `range`, as the producers encode
/// them; a seed of its own keeps later ranges distinct from earlier ones.
pub fn iam_records(seed: u64, range: std::ops::Range<u64>) -> Vec<pumphouse::produce::IamRecord> {
    let mut sampler = pumphouse::produce::Sampler::new(seed);
    range.map(|i| sampler.iam(i, crate::harness::T0)).collect()
}

/// See [`iam_records`].
pub fn tyk_records(seed: u64, range: std::ops::Range<u64>) -> Vec<pumphouse::produce::TykRecord> {
    let mut sampler = pumphouse::produce::Sampler::new(seed);
    range.map(|i| sampler.tyk(i, crate::harness::T0)).collect()
}

/// The `seq` of a sample Tyk record: the last segment of its path.
pub fn tyk_seq(path: &str) -> u64 {
    path.rsplit('/')
        .next()
        .unwrap()
        .parse()
        .expect("seq in path")
}

/// A Tyk record whose `Path` is a number: the host passes it on, the
/// database refuses it for a text column or field.
pub fn tyk_with_numeric_path(r: &pumphouse::produce::TykRecord) -> Vec<u8> {
    let bytes = pumphouse::produce::encode_tyk(r);
    let mut value = rmpv::decode::read_value(&mut bytes.as_slice()).unwrap();
    let rmpv::Value::Map(entries) = &mut value else {
        panic!("a Tyk record is a map")
    };
    for (k, v) in entries.iter_mut() {
        if k.as_str() == Some("Path") {
            *v = rmpv::Value::from(42);
        }
    }
    let mut out = Vec::new();
    rmpv::encode::write_value(&mut out, &value).unwrap();
    out
}

/// A private Prometheus server scraping one target every second (job
/// `pumphouse`), optionally with alert rule files evaluated every second.
pub struct PrometheusServer {
    _process: ServerProcess,
    pub addr: String,
    _dir: tempfile::TempDir,
}

impl PrometheusServer {
    /// `None` (after a loud SKIPPED line) when `prometheus` is not installed.
    pub fn start(target: &str, rule_files: &[PathBuf]) -> Option<PrometheusServer> {
        let program = find_binary(&["prometheus"])?;
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("prometheus.yml");
        let rules: String = rule_files
            .iter()
            .map(|r| format!("  - {}\n", r.display()))
            .collect();
        let rules = if rules.is_empty() {
            String::new()
        } else {
            format!("rule_files:\n{rules}")
        };
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n{rules}\
                 scrape_configs:\n  - job_name: pumphouse\n    scrape_interval: 1s\n    \
                 metrics_path: /metrics\n    static_configs:\n      - targets: [\"{target}\"]\n"
            ),
        )
        .unwrap();
        let addr = format!("127.0.0.1:{}", crate::harness::free_port());
        let mut process = ServerProcess::new(
            program,
            vec![
                format!("--config.file={}", config.display()),
                format!("--storage.tsdb.path={}", dir.path().join("data").display()),
                format!("--web.listen-address={addr}"),
            ],
            dir.path().join("prometheus.log"),
        );
        process.spawn();
        crate::harness::wait_for(
            std::time::Duration::from_secs(60),
            "prometheus ready",
            || matches!(crate::harness::http_get(&addr, "/-/ready"), Ok((200, _))).then_some(()),
        );
        Some(PrometheusServer {
            _process: process,
            addr,
            _dir: dir,
        })
    }

    /// `GET <path>` of the HTTP API, as JSON whose `status` is `success`.
    pub fn api(&self, path: &str) -> serde_json::Value {
        let (code, body) = crate::harness::http_get(&self.addr, path).unwrap();
        assert_eq!(code, 200, "{path}: {body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["status"], "success", "{path}: {body}");
        v["data"].clone()
    }

    /// An instant PromQL query: each result's labels and value.
    pub fn query(&self, promql: &str) -> Vec<(BTreeMap<String, String>, f64)> {
        let data = self.api(&format!(
            "/api/v1/query?query={}",
            crate::harness::url_encode(promql)
        ));
        data["result"]
            .as_array()
            .unwrap_or_else(|| panic!("{promql:?} gave no vector: {data}"))
            .iter()
            .map(|r| {
                let labels = r["metric"]
                    .as_object()
                    .unwrap()
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
                    .collect();
                let value = r["value"][1].as_str().unwrap().parse().unwrap();
                (labels, value)
            })
            .collect()
    }

    /// A query's single value, `None` while it has no result.
    pub fn scalar(&self, promql: &str) -> Option<f64> {
        let result = self.query(promql);
        assert!(result.len() <= 1, "{promql:?} gave {result:?}");
        result.first().map(|(_, v)| *v)
    }

    /// The alerts now firing: each one's labels.
    pub fn firing(&self) -> Vec<BTreeMap<String, String>> {
        self.api("/api/v1/alerts")["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["state"] == "firing")
            .map(|a| {
                a["labels"]
                    .as_object()
                    .unwrap()
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
                    .collect()
            })
            .collect()
    }
}
