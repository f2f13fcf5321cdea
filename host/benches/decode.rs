//! Micro-benchmarks of the per-record host work: decode once, and the
//! re-encodings pumps ask for.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use pumphouse::produce::{encode_iam, encode_tyk, Sampler};
use pumphouse::record::{self, Schema};

fn bench(c: &mut Criterion) {
    let mut s = Sampler::new(1);
    let iam: Vec<Vec<u8>> = (0..1000)
        .map(|i| encode_iam(&s.iam(i, 1_763_700_000)))
        .collect();
    let tyk: Vec<Vec<u8>> = (0..1000)
        .map(|i| encode_tyk(&s.tyk(i, 1_763_700_000)))
        .collect();
    let mut g = c.benchmark_group("per record");
    g.throughput(Throughput::Elements(1000));
    g.bench_function("decode iam ×1000", |b| {
        b.iter(|| {
            iam.iter()
                .map(|r| record::decode(Schema::Iam, r).unwrap().id)
                .sum::<u64>()
        })
    });
    g.bench_function("decode tyk ×1000", |b| {
        b.iter(|| {
            tyk.iter()
                .map(|r| record::decode(Schema::Tyk, r).unwrap().id)
                .sum::<u64>()
        })
    });
    g.bench_function("iam → json ×1000", |b| {
        b.iter_batched(
            || Vec::with_capacity(1 << 20),
            |mut out| {
                for r in &iam {
                    record::write_json(Schema::Iam, r, &[], &mut out).unwrap();
                }
                out
            },
            BatchSize::SmallInput,
        )
    });
    g.bench_function("tyk omit detail ×1000", |b| {
        b.iter_batched(
            || Vec::with_capacity(1 << 20),
            |mut out| {
                for r in &tyk {
                    record::omit_fields(r, Schema::Tyk.detail_fields(), &mut out).unwrap();
                }
                out
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
