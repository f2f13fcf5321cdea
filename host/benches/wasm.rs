//! Micro-benchmark of the WASM boundary (run by `scripts/bench wasm`): what
//! the `blackhole` sink costs as a WebAssembly component compared with a
//! native no-op sink, per record.
//!
//! Both variants do the lane's host work for a batch: build the flat WIT
//! batch (every payload copied back to back into one buffer, plus one
//! `(id, timestamp, offset, len)` event per record) inside one
//! `block_on`. The native variant then hands it to a no-op; the WASM
//! variant calls `write` on a live `blackhole.wasm` instance (copy into the
//! guest, lift/lower, the guest's two `counter-add` host calls). The
//! difference between the two, divided by the batch size, is the boundary's
//! cost per record; `scripts/bench wasm` prints it from criterion's
//! estimates.
//!
//! Batch sizes 100 / 1000 / 10000 × record sizes 256 B / 1 KiB / 4 KiB.
//! Needs `target/plugins/blackhole.wasm` (`scripts/build`).

use std::path::Path;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use pumphouse::runtime::bindings::{Batch, Encoding, Event, Schema};
use pumphouse::runtime::{Runtime, Sandbox};

const BATCHES: [usize; 3] = [100, 1000, 10_000];
const SIZES: [usize; 3] = [256, 1024, 4096];

/// Records of `size` bytes: a msgpack bin8/bin16 header and filler.
fn records(n: usize, size: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| {
            let mut r = Vec::with_capacity(size);
            r.push(0xc5);
            r.extend_from_slice(&((size - 3) as u16).to_be_bytes());
            r.resize(size, (i % 251) as u8);
            r
        })
        .collect()
}

/// The lane's work for one sink call: one payload buffer, one event each.
fn flat_batch(records: &[Vec<u8>]) -> Batch {
    let total = records.iter().map(Vec::len).sum();
    let mut payloads = Vec::with_capacity(total);
    let mut events = Vec::with_capacity(records.len());
    for (i, r) in records.iter().enumerate() {
        events.push(Event {
            id: i as u64,
            timestamp: 1_763_700_000_000,
            offset: payloads.len() as u32,
            len: r.len() as u32,
        });
        payloads.extend_from_slice(r);
    }
    Batch {
        schema: Schema::Generic,
        encoding: Encoding::Msgpack,
        payloads,
        events,
    }
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let wasm = root.join("target/plugins/blackhole.wasm");
    let runtime = Runtime::new(false).unwrap();
    let plugin = rt
        .block_on(runtime.load(&wasm))
        .unwrap_or_else(|e| panic!("{}: {e} (run scripts/build)", wasm.display()));
    let mut inst = rt
        .block_on(plugin.start("bench", &Sandbox::default(), "{}"))
        .unwrap();

    let mut g = c.benchmark_group("wasm boundary");
    for size in SIZES {
        for n in BATCHES {
            let recs = records(n, size);
            let id = format!("{n}x{size}");
            g.throughput(Throughput::Elements(n as u64));
            g.bench_with_input(BenchmarkId::new("native no-op", &id), &recs, |b, recs| {
                b.iter(|| {
                    rt.block_on(async {
                        let batch = flat_batch(recs);
                        std::hint::black_box(&batch);
                    })
                })
            });
            g.bench_with_input(BenchmarkId::new("wasm blackhole", &id), &recs, |b, recs| {
                b.iter(|| {
                    rt.block_on(async {
                        let batch = flat_batch(recs);
                        inst.write(std::sync::Arc::new(batch))
                            .await
                            .unwrap()
                            .unwrap();
                    })
                })
            });
        }
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
