//! Private database servers for the sink tests: a process on free ports
//! in a temp dir, killed on drop and restartable on the same ports and
//! data; the harness's `http` sets them up and queries them back.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// The first of `candidates` (absolute paths or names on `PATH`) that
/// exists; `None` after a loud `SKIPPED` line, so a machine without the
/// server still runs the rest of the suite.
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
        eprintln!(
            "\n\n******** SKIPPED: {} not installed (scripts/lib/ensure-deps installs it) ********\n",
            candidates[0]
        );
    }
    found
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

/// Dead-letter entries of `key`'s records.
pub fn dead_letters(
    conn: &mut redis::Connection,
    key: &str,
) -> Vec<pumphouse::pipeline::deadletter::Entry> {
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
