//! The same filter in Rust, Python and JavaScript (run by `scripts/bench
//! langs`): keep the records whose `ResponseCode` is at least 500, over
//! 200 000 Tyk records (`BENCH_LANG_RECORDS`) in batches of 1000.
//!
//! Each language runs in a child process of its own, so its peak RSS is
//! its own, with a private compilation cache directory (`XDG_CACHE_HOME`):
//!
//! * first compile: `Runtime::load` with the cache empty (compile, link,
//!   `describe`), in a process of its own;
//! * cached compile: the same load in a second process, once the cache
//!   holds the machine code, which is what a restart or a reload of an
//!   unchanged plugin costs;
//! * instance start: a new instance plus `init` (median of 10), what the
//!   host pays after a trap and per pump;
//! * records/s and ns/record over the `process` calls (each batch is made
//!   and encoded outside the clock, in the encoding the plugin `accepts`,
//!   as the lane does once per batch);
//! * peak RSS (`VmHWM`) of the second child: the runtime, the plugin
//!   from the cache and one batch (a first compile takes more, once);
//! * restarts: calls that failed (a trap, the memory limit) and were
//!   retried on a fresh instance, as the host does, with the default
//!   sandbox (128 MiB).
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

/// Batch `i` of the sample Tyk records in `encoding`, and how many of its
/// records have `ResponseCode >= 500`. Made one at a time (outside the
/// clock), so peak RSS is the plugin's and one batch's, not the data set's.
fn batch(
    sampler: &mut pumphouse::produce::Sampler,
    i: usize,
    n: usize,
    encoding: Encoding,
) -> (Arc<Batch>, usize) {
    let first = i * BATCH;
    let mut payloads = Vec::new();
    let mut events = Vec::new();
    let mut want = 0;
    for seq in first..(first + BATCH).min(n) {
        let r = sampler.tyk(seq as u64, 1_763_700_000);
        want += usize::from(r.response_code >= 500);
        let bytes = pumphouse::produce::encode_tyk(&r);
        let offset = payloads.len();
        match encoding {
            Encoding::Msgpack => payloads.extend_from_slice(&bytes),
            Encoding::Json => write_json(Schema::Tyk, &bytes, &[], &mut payloads).unwrap(),
        }
        events.push(Event {
            id: seq as u64,
            timestamp: 1_763_700_000_000,
            offset: offset as u32,
            len: (payloads.len() - offset) as u32,
        });
    }
    let b = Batch {
        schema: WitSchema::Tyk,
        encoding,
        payloads,
        events,
    };
    (Arc::new(b), want)
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

fn current_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn wasm_of(file: &str) -> PathBuf {
    root().join(format!("target/test-plugins/{file}.wasm"))
}

/// The first compile, in a child process of its own (compiling takes far
/// more memory than running): prints its time.
fn compile(file: &str) {
    let wasm = wasm_of(file);
    let t = Instant::now();
    current_thread()
        .block_on(Runtime::new(true).unwrap().load(&wasm))
        .unwrap_or_else(|e| panic!("{}: {e} (run scripts/build)", wasm.display()));
    println!("COMPILED {:.3}", ms(t.elapsed()));
}

/// One language, in this (child) process, once [`compile`] filled the
/// cache: what a restart costs, then the run. Prints one line of figures.
fn one(file: &str) {
    let rt = current_thread();
    let wasm = wasm_of(file);
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
    let n = records();
    let mut sampler = pumphouse::produce::Sampler::new(7);
    let start = || {
        rt.block_on(plugin.start("bench", &Sandbox::default(), "{}"))
            .unwrap()
    };
    let mut inst = start();
    let (mut kept, mut want, mut restarts) = (0, 0, 0);
    let mut took = Duration::ZERO;
    for i in 0..n.div_ceil(BATCH) {
        let (b, w) = batch(&mut sampler, i, n, plugin.info.accepts);
        want += w;
        let verdict = loop {
            let t = Instant::now();
            let r = rt.block_on(inst.process(b.clone()));
            took += t.elapsed();
            match r {
                Ok(v) => break v.unwrap(),
                // As the host does: a fresh instance, the same batch again.
                Err(e) => {
                    eprintln!("{file}: batch {i}: {e}; a fresh instance retries it");
                    restarts += 1;
                    assert!(restarts <= 100, "{file}: more than 100 restarts");
                    inst = start();
                }
            }
        };
        kept += match verdict {
            Verdict::Keep(idx) => idx.len(),
            Verdict::KeepAll => b.events.len(),
            Verdict::Replace(r) => r.events.len(),
        };
    }
    assert_eq!(
        kept, want,
        "{file} kept {kept} records, {want} have ResponseCode >= 500"
    );
    println!(
        "RESULT {} {} {:.3} {:.3} {} {} {}",
        n,
        took.as_nanos(),
        ms(cached),
        ms(starts[starts.len() / 2]),
        vm_hwm_kib(),
        plugin.size,
        restarts
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--one") {
        one(&args[i + 1]);
        return;
    }
    if let Some(i) = args.iter().position(|a| a == "--compile") {
        compile(&args[i + 1]);
        return;
    }
    let exe = std::env::current_exe().unwrap();
    println!(
        "same filter (keep ResponseCode >= 500), {} Tyk records in batches of {BATCH}, one process per language",
        records()
    );
    println!(
        "{:<11} {:>9} {:>11} {:>11} {:>14} {:>15} {:>15} {:>10} {:>9} {:>9}",
        "language",
        "size MB",
        "records/s",
        "ns/record",
        "vs Rust",
        "first compile",
        "cached compile",
        "start",
        "peak RSS",
        "restarts"
    );
    let mut rust_ns = None;
    for (lang, file) in LANGS {
        let cache = tempfile::tempdir().unwrap();
        let child = |mode: &str| {
            let out = Command::new(&exe)
                .args([mode, file])
                .env("XDG_CACHE_HOME", cache.path())
                .stderr(std::process::Stdio::inherit())
                .output()
                .unwrap();
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        let compiled = child("--compile");
        let Some(first) = compiled
            .lines()
            .find_map(|l| l.strip_prefix("COMPILED "))
            .and_then(|v| v.parse::<f64>().ok())
        else {
            println!("{lang:<11} failed to compile: {compiled}");
            continue;
        };
        let text = child("--one");
        let Some(line) = text.lines().find_map(|l| l.strip_prefix("RESULT ")) else {
            println!("{lang:<11} failed: {text}");
            continue;
        };
        let f: Vec<f64> = line.split(' ').map(|x| x.parse().unwrap()).collect();
        let (n, nanos, cached, start, hwm, size, restarts) =
            (f[0], f[1], f[2], f[3], f[4], f[5], f[6]);
        let ns = nanos / n;
        let rust = *rust_ns.get_or_insert(ns);
        println!(
            "{lang:<11} {:>9.1} {:>11.0} {:>11.0} {:>13.1}x {:>12.0} ms {:>12.1} ms {:>7.1} ms {:>6.0} MiB {:>9}",
            size / 1e6,
            n / (nanos / 1e9),
            ns,
            ns / rust,
            first,
            cached,
            start,
            hwm / 1024.0,
            restarts
        );
    }
}
