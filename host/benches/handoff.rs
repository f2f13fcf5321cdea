//! What handing a plugin call to the instance's own thread costs (run by
//! `scripts/bench handoff`). Plugin calls run off the async runtime's
//! worker threads ([`pumphouse::runtime::Instance`]): each call is a send
//! to the instance's thread, a wake-up there, and an answer back that
//! wakes the caller. The reference, in the same run, is the same call on
//! the caller's thread ([`pumphouse::runtime::Inline`]): the difference is
//! the hand-off, and the ratio what it adds to a call.
//!
//! Calls `write` on a live `blackhole.wasm` instance with an empty batch
//! (the hand-off against the least a call costs) and with 1000 records of
//! 256 bytes (against an ordinary batch). Needs
//! `target/plugins/blackhole.wasm` (`scripts/build`).

use std::path::Path;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use pumphouse::runtime::bindings::{Batch, Encoding, Event, Schema};
use pumphouse::runtime::{Runtime, Sandbox};

/// `n` records of 256 bytes (msgpack bin8 and filler), as one flat batch.
fn batch(n: usize) -> Batch {
    let mut payloads = Vec::with_capacity(n * 256);
    let mut events = Vec::with_capacity(n);
    for i in 0..n {
        events.push(Event {
            id: i as u64,
            timestamp: 1_763_700_000_000,
            offset: payloads.len() as u32,
            len: 256,
        });
        payloads.extend_from_slice(&[0xc4, 253]);
        payloads.resize(payloads.len() + 254, (i % 251) as u8);
    }
    Batch {
        schema: Schema::Generic,
        encoding: Encoding::Msgpack,
        payloads,
        events,
    }
}

fn bench(c: &mut Criterion) {
    // The host's runtime is multi-threaded; one worker is the caller.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let wasm = root.join("target/plugins/blackhole.wasm");
    let runtime = Runtime::new(false).unwrap();
    let plugin = rt
        .block_on(runtime.load(&wasm))
        .unwrap_or_else(|e| panic!("{}: {e} (run scripts/build)", wasm.display()));
    let sandbox = Sandbox::default();
    let mut threaded = rt.block_on(plugin.start("bench", &sandbox, "{}")).unwrap();
    let mut inline = rt
        .block_on(plugin.start_inline("bench", &sandbox, "{}"))
        .unwrap();

    let mut g = c.benchmark_group("plugin call");
    for n in [0, 1000] {
        let b = Arc::new(batch(n));
        g.bench_with_input(BenchmarkId::new("direct", n), &b, |bench, b| {
            bench.iter(|| rt.block_on(async { inline.write(b).await.unwrap().unwrap() }))
        });
        g.bench_with_input(BenchmarkId::new("handed off", n), &b, |bench, b| {
            bench.iter(|| rt.block_on(async { threaded.write(b.clone()).await.unwrap().unwrap() }))
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
