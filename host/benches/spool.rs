//! What redb's quick repair costs a spool commit: the spool commits with
//! `set_quick_repair(true)` (see `spool::begin_write`), which makes redb
//! commit in two phases and write its allocator state, for one more fsync
//! per commit; in exchange a file reopened after `kill -9` is not walked
//! page by page, a walk that refuses the whole file for one bad byte.
//!
//! Both variants run in the same process on the same disk (a directory
//! under `target/`, not `/tmp`, which may be a tmpfs where fsync is free),
//! with the spool's table shape and steady state: each commit inserts one
//! batch and removes the one spooled `WINDOW` commits earlier, as a lane
//! that keeps up does. `scripts/bench spool` prints the ratio.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use redb::{Database, TableDefinition};

const BATCHES: TableDefinition<u64, &[u8]> = TableDefinition::new("batches");
/// Batches spooled and not yet delivered, in the steady state.
const WINDOW: u64 = 8;

struct Spool {
    db: Database,
    next: u64,
}

impl Spool {
    fn open(dir: &std::path::Path, name: &str) -> Spool {
        let db = Database::builder()
            .set_cache_size(8 << 20)
            .create(dir.join(name))
            .unwrap();
        Spool { db, next: 0 }
    }

    /// One commit: this batch in, the one `WINDOW` back out.
    fn commit(&mut self, value: &[u8], quick_repair: bool) {
        let mut txn = self.db.begin_write().unwrap();
        txn.set_quick_repair(quick_repair);
        {
            let mut table = txn.open_table(BATCHES).unwrap();
            table.insert(self.next, value).unwrap();
            if let Some(old) = self.next.checked_sub(WINDOW) {
                table.remove(old).unwrap();
            }
        }
        txn.commit().unwrap();
        self.next += 1;
    }
}

fn bench(c: &mut Criterion) {
    std::fs::create_dir_all("../target").unwrap();
    let dir = tempfile::tempdir_in("../target").unwrap();
    let mut g = c.benchmark_group("spool commit");
    // One record of 336 B (an iam record) and a batch of 500 of them.
    for bytes in [336usize, 500 * 336] {
        let value = vec![0xa5u8; bytes];
        g.throughput(Throughput::Bytes(bytes as u64));
        for (variant, quick) in [("plain", false), ("quick repair", true)] {
            let mut spool = Spool::open(dir.path(), &format!("{variant}-{bytes}.redb"));
            g.bench_with_input(BenchmarkId::new(variant, bytes), &value, |b, v| {
                b.iter(|| spool.commit(v, quick))
            });
        }
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
