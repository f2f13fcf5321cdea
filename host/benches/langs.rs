//! The same filter in Rust, Python and JavaScript (run by `scripts/bench
//! langs`): keep the records whose `ResponseCode` is at least 500, over
//! 200 000 Tyk records (`BENCH_LANG_RECORDS`) in batches of 1000.
//!
//! Each language runs in a child process of its own, so its peak RSS is
//! its own, with a private wasmtime cache directory (`XDG_CACHE_HOME`):
//!
//! * first compile: `Runtime::load` with the cache empty (compile, link,
//!   `describe`);
//! * cached compile: the same load by a fresh runtime once the cache holds
//!   the machine code, which is what a restart or a reload of an unchanged
//!   plugin costs;
//! * instance start: a new instance plus `init` (median of 10), what the
//!   host pays after a trap and per pump;
//! * records/s and ns/record over the `process` calls (the host encodes
//!   the batches before the clock starts, in the encoding the plugin
//!   `accepts`, as the lane does once per batch);
//! * peak RSS (`VmHWM`) of the child.
//!
//! Every filter must keep the same records, so a faster one cannot be
//! wrong. The table prints each figure's ratio to Rust.
//!
//! Needs `target/test-plugins/keep-5xx{,-py,-js}.wasm` (`scripts/build`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pumphouse::record::{write_json, Schema};
use pumphouse::runtime::bindings::{Batch, Encoding, Event, Schema as WitSchema, Verdict};
use pumphouse::runtime::{Runtime, Sandbox};

const BATCH: usize = 1000;
const LANGS: [(&str, &str); 3] = [
    ("Rust", "keep-5xx"),
    ("Python", "keep-5xx-py"),
    ("JavaScript", "keep-5xx-js"),
];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn records() -> usize {
    std::env::var("BENCH_LANG_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000)
}

/// Batches of the sample Tyk records in `encoding`, and how many of them
/// have `ResponseCode >= 500`.
fn batches(n: usize, encoding: Encoding) -> (Vec<Arc<Batch>>, usize) {
    let mut sampler = pumphouse::produce::Sampler::new(7);
    let recs: Vec<_> = (0..n as u64)
        .map(|i| sampler.tyk(i, 1_763_700_000))
        .collect();
    let want = recs.iter().filter(|r| r.response_code >= 500).count();
    let mut out = Vec::new();
    for chunk in recs.chunks(BATCH) {
        let mut payloads = Vec::new();
        let mut events = Vec::with_capacity(chunk.len());
        for (i, r) in chunk.iter().enumerate() {
            let bytes = pumphouse::produce::encode_tyk(r);
            let offset = payloads.len();
            match encoding {
                Encoding::Msgpack => payloads.extend_from_slice(&bytes),
                Encoding::Json => write_json(Schema::Tyk, &bytes, &[], &mut payloads).unwrap(),
            }
            events.push(Event {
                id: i as u64,
                timestamp: 1_763_700_000_000,
                offset: offset as u32,
                len: (payloads.len() - offset) as u32,
            });
        }
        out.push(Arc::new(Batch {
            schema: WitSchema::Tyk,
            encoding,
            payloads,
            events,
        }));
    }
    (out, want)
}

fn vm_hwm_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("VmHWM:")
                .and_then(|v| v.trim().trim_end_matches(" kB").parse().ok())
        })
        .unwrap_or(0)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// One language, in this (child) process: prints one line of figures.
fn one(file: &str) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let wasm = root().join(format!("target/test-plugins/{file}.wasm"));
    let t = Instant::now();
    let plugin = rt
        .block_on(Runtime::new(true).unwrap().load(&wasm))
        .unwrap_or_else(|e| panic!("{}: {e} (run scripts/build)", wasm.display()));
    let first = t.elapsed();
    drop(plugin);
    // A fresh runtime: what a restart finds is the cache on disk.
    let runtime = Runtime::new(true).unwrap();
    let t = Instant::now();
    let plugin = rt.block_on(runtime.load(&wasm)).unwrap();
    let cached = t.elapsed();
    let mut starts: Vec<Duration> = (0..10)
        .map(|_| {
            let t = Instant::now();
            let inst = rt
                .block_on(plugin.start("bench", &Sandbox::default(), "{}"))
                .unwrap();
            let d = t.elapsed();
            drop(inst);
            d
        })
        .collect();
    starts.sort();
    let (batches, want) = batches(records(), plugin.info.accepts);
    let mut inst = rt
        .block_on(plugin.start("bench", &Sandbox::default(), "{}"))
        .unwrap();
    let n: usize = batches.iter().map(|b| b.events.len()).sum();
    let mut kept = 0;
    let t = Instant::now();
    for b in &batches {
        let shared: pumphouse::runtime::SharedBatch = b.clone();
        match rt.block_on(inst.process(shared)).unwrap().unwrap() {
            Verdict::Keep(idx) => kept += idx.len(),
            Verdict::KeepAll => kept += b.events.len(),
            Verdict::Replace(r) => kept += r.events.len(),
        }
    }
    let took = t.elapsed();
    assert_eq!(
        kept, want,
        "{file} kept {kept} records, {want} have ResponseCode >= 500"
    );
    println!(
        "RESULT {} {} {:.3} {:.3} {:.3} {} {}",
        n,
        took.as_nanos(),
        ms(first),
        ms(cached),
        ms(starts[starts.len() / 2]),
        vm_hwm_kib(),
        plugin.size
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--one") {
        one(&args[i + 1]);
        return;
    }
    let exe = std::env::current_exe().unwrap();
    println!(
        "same filter (keep ResponseCode >= 500), {} Tyk records in batches of {BATCH}, one process per language",
        records()
    );
    println!(
        "{:<11} {:>9} {:>11} {:>11} {:>14} {:>15} {:>15} {:>10} {:>9}",
        "language",
        "size MB",
        "records/s",
        "ns/record",
        "vs Rust",
        "first compile",
        "cached compile",
        "start",
        "peak RSS"
    );
    let mut rust_ns = None;
    for (lang, file) in LANGS {
        let cache = tempfile::tempdir().unwrap();
        let out = Command::new(&exe)
            .args(["--one", file])
            .env("XDG_CACHE_HOME", cache.path())
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let Some(line) = text.lines().find_map(|l| l.strip_prefix("RESULT ")) else {
            println!(
                "{lang:<11} failed: {}{}",
                text,
                String::from_utf8_lossy(&out.stderr)
            );
            continue;
        };
        let f: Vec<f64> = line.split(' ').map(|x| x.parse().unwrap()).collect();
        let (n, nanos, first, cached, start, hwm, size) =
            (f[0], f[1], f[2], f[3], f[4], f[5], f[6]);
        let ns = nanos / n;
        let rust = *rust_ns.get_or_insert(ns);
        println!(
            "{lang:<11} {:>9.1} {:>11.0} {:>11.0} {:>13.1}x {:>12.0} ms {:>12.1} ms {:>7.1} ms {:>6.0} MiB",
            size / 1e6,
            n / (nanos / 1e9),
            ns,
            ns / rust,
            first,
            cached,
            start,
            hwm / 1024.0
        );
    }
}
