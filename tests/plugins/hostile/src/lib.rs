//! Test fixture: a sink that misbehaves in the way its config's `mode`
//! names, to show that the host's sandbox and limits hold.
//!
//! | `mode`        | what `write` does                                                        |
//! |---------------|--------------------------------------------------------------------------|
//! | `trap`        | panics (a trap) on the first call of every instance                       |
//! | `sleep`       | sleeps in a host call (`wasi:clocks` poll) for `sleep_ms` (default 1h)    |
//! | `busy`        | computes on the CPU for `sleep_ms` (default 1 s), then delivers            |
//! | `fs-escape`   | reads `paths` (default `/etc/passwd`, `/out/../../etc/passwd`); any success is `fatal` ("escaped"), else `retry` with the errors |
//! | `env`         | logs which of `names` it can see (`NAME=value` or `NAME absent`), then delivers |
//! | `http`        | POSTs the batch's payloads as JSON lines to `url`; errors map as the SDK maps them (denied → `fatal`) |
//! | `partial-oob` | answers `partial` naming an index past the end of the batch             |
//! | `log-flood`   | logs `lines` lines (default 1000) of `size` bytes (default 100000), then delivers |
//! | `retry-huge`  | answers `retry` with a reason of `size` bytes (default 32 MiB) made of forged log lines |
//! | `partial-huge`| answers `partial`, every record rejected with a reason of `size` bytes (default 1 MiB) |
//! | `log-forge`   | logs a line holding a newline and a forged timestamp and level (and writes one to stderr), then delivers |
//! | `metrics-abuse` | tries every way to break `/metrics` (reserved labels, two types for one name, the host's own names, counter overflow), then delivers |
//! | `kv-flood`    | commits `lines` (default 1001) writes in one `kv.commit`; its error becomes `retry` |
//! | `kv-quota`    | commits `lines` (default 4) new keys of `size` bytes (default 100 000) per batch, expiring after `ttl_s` seconds if set; its error becomes `retry` |
//! | `fd-hoard`    | opens `lines` (default 10 000) files `/out/hoard-<n>` and keeps them open; when an open fails, answers `retry` naming how many it holds and the error |
//! | `http-hoard`  | starts `lines` (default 1000) GET requests to `url` and never reads them; answers `retry` naming the first request that failed and how |
//! | `symlink`     | creates `/out/planted -> ../../../../etc/passwd`; success is `fatal` ("planted"), a refusal `retry` with the error |
//! | `stderr-flood`| writes `lines` lines (default 1000) of `size` bytes (default 10 000) to stderr, made of quotes, braces and control characters, then delivers |
//! | `histogram-flood` | makes `lines` (default 10) `histogram-observe` calls of `size` values (default 1 000 000), then delivers |
//! | `socket-hoard` | connects `lines` (default 1000) TCP sockets to `url` (`host:port`) and keeps them; when a connect fails, answers `retry` naming how many it holds and the error |
//! | `stream-overrun` | hands stderr 64 KiB in one `blocking-write-and-flush`, past the 4096 bytes a call may copy (a trap) |
//!
//! With `init_lines`, `init` first logs that many lines and writes as many
//! to stderr (in any mode). With `init_needs`, `init` fails until that
//! path exists.
//!
//! Every mode accepts JSON batches.

use pumphouse_sdk::http::Request;
use pumphouse_sdk::{Batch, Config, Encoding, Error, FailedEvent, PluginInfo, Sink, WriteError};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HostileConfig {
    mode: String,
    #[serde(default)]
    sleep_ms: Option<u64>,
    #[serde(default)]
    paths: Option<Vec<String>>,
    #[serde(default)]
    names: Vec<String>,
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    lines: Option<u32>,
    #[serde(default)]
    size: Option<usize>,
    #[serde(default)]
    ttl_s: Option<u64>,
    #[serde(default)]
    init_lines: u32,
    #[serde(default)]
    init_needs: Option<String>,
}

pub struct Hostile {
    config: HostileConfig,
    /// `fd-hoard`: the files it keeps open.
    files: Vec<std::fs::File>,
    /// `http-hoard`: the requests it never reads.
    requests: raw::Requests,
    /// `socket-hoard`: the connections it keeps.
    sockets: Vec<pumphouse_sdk::net::Stream>,
}

impl Sink for Hostile {
    fn info() -> PluginInfo {
        PluginInfo {
            name: "hostile".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            accepts: Encoding::Json,
        }
    }

    fn init(config: Config) -> Result<Self, Error> {
        let config: HostileConfig = config.parse()?;
        let known = [
            "trap",
            "sleep",
            "busy",
            "fs-escape",
            "env",
            "http",
            "partial-oob",
            "log-flood",
            "retry-huge",
            "partial-huge",
            "log-forge",
            "metrics-abuse",
            "histogram-flood",
            "kv-flood",
            "kv-quota",
            "fd-hoard",
            "http-hoard",
            "symlink",
            "stderr-flood",
            "stream-overrun",
            "socket-hoard",
        ];
        if !known.contains(&config.mode.as_str()) {
            return Err(Error::fatal(format!("unknown mode {:?}", config.mode)));
        }
        if let Some(path) = &config.init_needs {
            std::fs::metadata(path).map_err(|e| Error::fatal(format!("init needs {path}: {e}")))?;
        }
        for i in 0..config.init_lines {
            pumphouse_sdk::info!("init {i} {}", json_breaker(100));
            eprintln!("init {i} {}", json_breaker(100));
        }
        let needs_url = ["http", "http-hoard", "socket-hoard"];
        if needs_url.contains(&config.mode.as_str()) && config.url.is_none() {
            return Err(Error::fatal(
                "modes http, http-hoard and socket-hoard need url",
            ));
        }
        Ok(Hostile {
            config,
            files: Vec::new(),
            requests: raw::Requests::default(),
            sockets: Vec::new(),
        })
    }

    fn write(&mut self, batch: &Batch) -> Result<(), WriteError> {
        match self.config.mode.as_str() {
            "fd-hoard" => return self.hoard_files(),
            "socket-hoard" => return self.hoard_sockets(),
            "http-hoard" => {
                let url = self.config.url.clone().unwrap_or_default();
                return self.requests.hoard(&url, self.config.lines.unwrap_or(1000));
            }
            _ => {}
        }
        let c = &self.config;
        match c.mode.as_str() {
            "trap" => panic!("fixture-hostile: trapping on purpose"),
            "sleep" => {
                std::thread::sleep(std::time::Duration::from_millis(
                    c.sleep_ms.unwrap_or(3_600_000),
                ));
                Ok(())
            }
            "busy" => {
                // Computes (no host call to wait in) for sleep_ms, then
                // succeeds: a CPU-bound plugin just under its timeout.
                let until = std::time::Instant::now()
                    + std::time::Duration::from_millis(c.sleep_ms.unwrap_or(1_000));
                let mut n = batch.len() as u64;
                while std::time::Instant::now() < until {
                    for _ in 0..10_000 {
                        n = std::hint::black_box(n.wrapping_mul(31).wrapping_add(7));
                    }
                }
                std::hint::black_box(n);
                Ok(())
            }
            "fs-escape" => {
                let default = [
                    "/etc/passwd".to_string(),
                    "/out/../../etc/passwd".to_string(),
                ];
                let paths = c.paths.as_deref().unwrap_or(&default);
                let mut denied = Vec::new();
                for p in paths {
                    match std::fs::read(p) {
                        Ok(bytes) => {
                            return Err(WriteError::Fatal(format!(
                                "escaped: read {} bytes from {p}",
                                bytes.len()
                            )))
                        }
                        Err(e) => denied.push(format!("{p}: {e}")),
                    }
                }
                Err(WriteError::Retry(format!(
                    "filesystem denied: {}",
                    denied.join("; ")
                )))
            }
            "env" => {
                let seen: Vec<String> = c
                    .names
                    .iter()
                    .map(|n| match std::env::var(n) {
                        Ok(v) => format!("{n}={v}"),
                        Err(_) => format!("{n} absent"),
                    })
                    .collect();
                pumphouse_sdk::info!("env probe: {}", seen.join(", "));
                Ok(())
            }
            "http" => {
                let mut body = Vec::with_capacity(batch.payloads.len() + batch.len());
                for rec in batch.records() {
                    body.extend_from_slice(rec.payload());
                    body.push(b'\n');
                }
                let url = c.url.clone().unwrap_or_default();
                Request::post(url)
                    .header("content-type", "application/x-ndjson")
                    .body(body)
                    .send()?
                    .error_for_status()?;
                Ok(())
            }
            "partial-oob" => Err(WriteError::Partial(vec![FailedEvent {
                index: batch.len() as u32 + 7,
                reason: "no such record".into(),
                retryable: true,
            }])),
            "log-flood" => {
                let line = "x".repeat(c.size.unwrap_or(100_000));
                for i in 0..c.lines.unwrap_or(1000) {
                    pumphouse_sdk::info!("flood {i} {line}");
                }
                Ok(())
            }
            "retry-huge" => Err(WriteError::Retry(forged(c.size.unwrap_or(32 << 20)))),
            "partial-huge" => {
                let reason = forged(c.size.unwrap_or(1 << 20));
                Err(WriteError::Partial(
                    (0..batch.len() as u32)
                        .map(|index| FailedEvent {
                            index,
                            reason: reason.clone(),
                            retryable: false,
                        })
                        .collect(),
                ))
            }
            "log-forge" => {
                pumphouse_sdk::info!(
                    "innocent\n2026-01-01T00:00:00.000000Z ERROR pumphouse: forged line\rcarriage"
                );
                eprintln!(
                    "on stderr\n2026-01-01T00:00:00.000000Z ERROR pumphouse: forged on stderr"
                );
                Ok(())
            }
            "metrics-abuse" => {
                use pumphouse_sdk::metrics::{counter_add, gauge_set, histogram_observe};
                histogram_observe("abuse_latency", &[1.0], &[("le", "5")]);
                histogram_observe("abuse_quantile", &[1.0], &[("quantile", "0.5")]);
                counter_add("abuse_name", 1, &[("__name__", "up")]);
                counter_add("abuse_pump", 1, &[("pump", "healthy")]);
                counter_add("abuse_dup", 1, &[("a", "1"), ("a", "2")]);
                // One name, two types: the second is refused.
                counter_add("abuse_typed", 1, &[]);
                gauge_set("abuse_typed", 1.0, &[]);
                gauge_set("abuse_typed_total", 1.0, &[]);
                histogram_observe("abuse_typed", &[1.0], &[]);
                // The host's own series, from a plugin.
                counter_add("log_suppressed", 1, &[]);
                counter_add("../pumphouse_records_acked", 1, &[]);
                // Past u64::MAX.
                counter_add("abuse_overflow", u64::MAX, &[]);
                counter_add("abuse_overflow", u64::MAX, &[]);
                counter_add("abuse_ok", 1, &[("label", "line\nbreak \"quoted\"")]);
                Ok(())
            }
            "kv-flood" => {
                let writes: Vec<_> = (0..c.lines.unwrap_or(1001))
                    .map(|i| pumphouse_sdk::kv::Write::set(format!("k{i}"), b"v".to_vec()))
                    .collect();
                pumphouse_sdk::kv::commit(&writes)?;
                Ok(())
            }
            "kv-quota" => {
                // Keys named after the batch's first record: a redelivered
                // batch writes the same keys, a new one new keys.
                let first = batch.records().next().map_or(0, |r| r.id());
                let value = vec![b'v'; c.size.unwrap_or(100_000)];
                let writes: Vec<_> = (0..c.lines.unwrap_or(4))
                    .map(|i| {
                        let w =
                            pumphouse_sdk::kv::Write::set(format!("{first}:{i}"), value.clone());
                        match c.ttl_s {
                            Some(s) => w.expire_after(std::time::Duration::from_secs(s)),
                            None => w,
                        }
                    })
                    .collect();
                pumphouse_sdk::kv::commit(&writes)?;
                Ok(())
            }
            "symlink" => raw::plant_symlink(),
            "stream-overrun" => raw::overrun_stderr(),
            "stderr-flood" => {
                let line = json_breaker(c.size.unwrap_or(10_000));
                for i in 0..c.lines.unwrap_or(1000) {
                    eprintln!("stderr flood {i} {line}");
                }
                Ok(())
            }
            "histogram-flood" => {
                let values = vec![5.0; c.size.unwrap_or(1_000_000)];
                for _ in 0..c.lines.unwrap_or(10) {
                    pumphouse_sdk::metrics::histogram_observe("flood_ms", &values, &[]);
                }
                Ok(())
            }
            other => Err(WriteError::Fatal(format!("unknown mode {other}"))),
        }
    }
}

impl Hostile {
    fn hoard_sockets(&mut self) -> Result<(), WriteError> {
        let url = self.config.url.clone().unwrap_or_default();
        for _ in 0..self.config.lines.unwrap_or(1000) {
            match pumphouse_sdk::net::Stream::connect(&url, std::time::Duration::from_secs(5)) {
                Ok(s) => self.sockets.push(s),
                Err(e) => {
                    return Err(WriteError::Retry(format!(
                        "holding {} sockets; connecting to {url}: {e}",
                        self.sockets.len()
                    )))
                }
            }
        }
        Ok(())
    }

    fn hoard_files(&mut self) -> Result<(), WriteError> {
        for _ in 0..self.config.lines.unwrap_or(10_000) {
            let path = format!("/out/hoard-{}", self.files.len());
            match std::fs::File::create(&path) {
                Ok(f) => self.files.push(f),
                Err(e) => {
                    return Err(WriteError::Retry(format!(
                        "holding {} files; opening {path}: {e}",
                        self.files.len()
                    )))
                }
            }
        }
        Ok(())
    }
}

/// Calls straight to WASI, for what the SDK does not offer.
#[cfg(target_arch = "wasm32")]
mod raw {
    use pumphouse_sdk::WriteError;
    use wasip2::http::types::{Fields, FutureIncomingResponse, OutgoingRequest, Scheme};

    /// Requests started and never read.
    #[derive(Default)]
    pub struct Requests(Vec<FutureIncomingResponse>);

    impl Requests {
        /// Starts `n` GETs to `url` (`http://host:port`) and keeps them.
        pub fn hoard(&mut self, url: &str, n: u32) -> Result<(), WriteError> {
            let authority = url.trim_start_matches("http://").trim_end_matches('/');
            for _ in 0..n {
                let req = OutgoingRequest::new(Fields::new());
                let _ = req.set_scheme(Some(&Scheme::Http));
                let _ = req.set_authority(Some(authority));
                let _ = req.set_path_with_query(Some("/hoard"));
                match wasip2::http::outgoing_handler::handle(req, None) {
                    Ok(f) => self.0.push(f),
                    Err(e) => {
                        return Err(WriteError::Retry(format!(
                            "request {} not started: {e:?}",
                            self.0.len()
                        )))
                    }
                }
            }
            // Requests run as soon as they are started; waiting on the
            // newest shows whether the host let it through.
            let Some(newest) = self.0.last() else {
                return Ok(());
            };
            newest.subscribe().block();
            match newest.get() {
                Some(Ok(Err(e))) => Err(WriteError::Retry(format!(
                    "request {} failed: {e:?}",
                    self.0.len() - 1
                ))),
                _ => Ok(()),
            }
        }
    }

    /// 64 KiB in one `blocking-write-and-flush`, which wasi:io caps at
    /// 4096 bytes per call; std's stderr never asks for more.
    pub fn overrun_stderr() -> Result<(), WriteError> {
        let stderr = wasip2::cli::stderr::get_stderr();
        match stderr.blocking_write_and_flush(&[b'x'; 64 << 10]) {
            Ok(()) => Err(WriteError::Fatal("wrote 64 KiB in one call".into())),
            Err(e) => Err(WriteError::Retry(format!("overrun refused: {e:?}"))),
        }
    }

    /// `/out/planted -> ../../../../etc/passwd`.
    pub fn plant_symlink() -> Result<(), WriteError> {
        let out = wasip2::filesystem::preopens::get_directories()
            .into_iter()
            .find(|(_, path)| path == "/out")
            .map(|(dir, _)| dir)
            .ok_or_else(|| WriteError::Fatal("no /out preopen".into()))?;
        match out.symlink_at("../../../../etc/passwd", "planted") {
            Ok(()) => Err(WriteError::Fatal("planted /out/planted".into())),
            Err(e) => Err(WriteError::Retry(format!("symlink refused: {e:?}"))),
        }
    }
}

/// The fixture runs only as a component; natively (workspace checks) these
/// do nothing.
#[cfg(not(target_arch = "wasm32"))]
mod raw {
    use pumphouse_sdk::WriteError;

    /// Not a unit struct, so both builds construct it alike.
    #[derive(Default)]
    pub struct Requests(());

    impl Requests {
        pub fn hoard(&mut self, _url: &str, _n: u32) -> Result<(), WriteError> {
            Err(WriteError::Fatal("wasm32 only".into()))
        }
    }

    pub fn plant_symlink() -> Result<(), WriteError> {
        Err(WriteError::Fatal("wasm32 only".into()))
    }

    pub fn overrun_stderr() -> Result<(), WriteError> {
        Err(WriteError::Fatal("wasm32 only".into()))
    }
}

/// `size` bytes that would break a JSON log line copied in verbatim
/// (quotes, braces, backslashes, control characters), without a newline.
fn json_breaker(size: usize) -> String {
    let piece = "\"}{\"level\":\"ERROR\",\\\r\t\u{1b}[31m\u{0}";
    let mut s = String::with_capacity(size + piece.len());
    while s.len() < size {
        s.push_str(piece);
    }
    s
}

/// `size` bytes of lines that look like the host's own log lines.
fn forged(size: usize) -> String {
    let line = "\n2026-01-01T00:00:00.000000Z ERROR pumphouse: forged";
    let mut s = String::with_capacity(size + line.len());
    while s.len() < size {
        s.push_str(line);
    }
    s
}

pumphouse_sdk::export_sink!(Hostile);
