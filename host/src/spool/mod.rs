//! A disk-buffered pump's durable spool: batches written (fsynced) before
//! their Redis claim is released, read back in order by the pump's lane.
//!
//! Backed by redb, an embedded copy-on-write B-tree store: a commit is
//! atomic and durable when it returns, and after a crash (`kill -9`, power
//! loss mid-write) the file opens at its last commit. Each entry also
//! carries its own CRC-32 ([`frame`]), so damage the store did not catch is
//! found when the entry is read: it is counted, logged and skipped, never
//! delivered as garbage and never a crash loop. A file that cannot be
//! opened at all is moved aside (`<name>.corrupt-<unix-seconds>`) and a
//! fresh spool started, so the daemon keeps running.
//!
//! Blocking: call it from `spawn_blocking`, as [`crate::pump`]'s disk lanes do.

pub mod frame;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use crate::config::WhenFull;
use crate::telemetry;
pub use frame::SpooledBatch;

const BATCHES: TableDefinition<u64, &[u8]> = TableDefinition::new("batches");
/// Page cache per spool: the spool is written once and read once, so a
/// small cache is enough and keeps memory bounded.
const CACHE_BYTES: usize = 8 << 20;

/// A spool operation failed.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("spool {path}: cannot create its directory: {source}")]
    Dir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("spool {path} is in use by another process (give each instance its own spool_dir)")]
    InUse { path: PathBuf },
    #[error("spool {path}: {source}")]
    Store { path: PathBuf, source: redb::Error },
}

/// Live totals, mirrored into gauges.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Totals {
    pub batches: u64,
    pub records: u64,
    pub bytes: u64,
}

/// One pump's spool.
pub struct Spool {
    db: Database,
    path: PathBuf,
    pump: Arc<str>,
    max_bytes: u64,
    when_full: WhenFull,
    state: Mutex<State>,
}

struct State {
    next_seq: u64,
    totals: Totals,
    /// The entry the lane is delivering: `drop_oldest` leaves it alone.
    in_progress: Option<u64>,
}

impl Spool {
    /// Opens (or creates) `<dir>/<pump>.spool`, verifying every entry.
    pub fn open(
        dir: &Path,
        pump: &str,
        max_bytes: u64,
        when_full: WhenFull,
    ) -> Result<Spool, SpoolError> {
        std::fs::create_dir_all(dir).map_err(|source| SpoolError::Dir {
            path: dir.to_path_buf(),
            source,
        })?;
        let path = dir.join(format!("{pump}.spool"));
        let db = match open_db(&path) {
            Ok(db) => db,
            Err(redb::DatabaseError::DatabaseAlreadyOpen) => {
                return Err(SpoolError::InUse { path });
            }
            Err(e) if is_damage(&e) => {
                let aside = quarantine(&path).map_err(|source| SpoolError::Store {
                    path: path.clone(),
                    source: redb::StorageError::Io(source).into(),
                })?;
                metrics::counter!(telemetry::SPOOL_CORRUPT, "pump" => pump.to_string())
                    .increment(1);
                tracing::error!(pump, spool = %path.display(), moved_to = %aside.display(), "spool file is damaged beyond repair ({e}); moved it aside and started an empty spool");
                open_db(&path).map_err(|e| store_err(&path, e))?
            }
            Err(e) => return Err(store_err(&path, e)),
        };
        let spool = Spool {
            db,
            path,
            pump: Arc::from(pump),
            max_bytes,
            when_full,
            state: Mutex::new(State {
                next_seq: 0,
                totals: Totals::default(),
                in_progress: None,
            }),
        };
        spool.scan()?;
        Ok(spool)
    }

    fn err(&self, e: impl Into<redb::Error>) -> SpoolError {
        store_err(&self.path, e)
    }

    /// Creates the table, drops damaged entries and computes the totals.
    fn scan(&self) -> Result<(), SpoolError> {
        let txn = self.db.begin_write().map_err(|e| self.err(e))?;
        let mut totals = Totals::default();
        let mut last = None;
        let mut damaged = Vec::new();
        {
            let table = txn.open_table(BATCHES).map_err(|e| self.err(e))?;
            for entry in table.iter().map_err(|e| self.err(e))? {
                let (k, v) = entry.map_err(|e| self.err(e))?;
                let seq = k.value();
                last = Some(seq);
                match frame::decode(v.value()) {
                    Ok(b) => {
                        totals.batches += 1;
                        totals.records += b.records.len() as u64;
                        totals.bytes += v.value().len() as u64;
                    }
                    Err(e) => damaged.push((seq, e)),
                }
            }
        }
        if !damaged.is_empty() {
            let mut table = txn.open_table(BATCHES).map_err(|e| self.err(e))?;
            for (seq, e) in &damaged {
                table.remove(seq).map_err(|e| self.err(e))?;
                self.count_corrupt(*seq, e);
            }
        }
        txn.commit().map_err(|e| self.err(e))?;
        if totals.batches > 0 {
            tracing::info!(
                pump = &*self.pump,
                batches = totals.batches,
                records = totals.records,
                "spool holds batches from an earlier run; delivering them first"
            );
        }
        let mut st = self.state.lock().expect("spool lock");
        st.next_seq = last.map_or(0, |s| s + 1);
        st.totals = totals;
        drop(st);
        self.publish(totals);
        Ok(())
    }

    fn count_corrupt(&self, seq: u64, e: &frame::FrameError) {
        metrics::counter!(telemetry::SPOOL_CORRUPT, "pump" => self.pump.to_string()).increment(1);
        tracing::error!(pump = &*self.pump, spool = %self.path.display(), entry = seq, "skipped a damaged spool entry: {e}");
    }

    fn publish(&self, t: Totals) {
        let pump = self.pump.to_string();
        metrics::gauge!(telemetry::SPOOL_RECORDS, "pump" => pump.clone()).set(t.records as f64);
        metrics::gauge!(telemetry::SPOOL_BYTES, "pump" => pump.clone()).set(t.bytes as f64);
        metrics::gauge!(telemetry::SPOOL_MAX_BYTES, "pump" => pump).set(self.max_bytes as f64);
    }

    /// Current totals.
    pub fn totals(&self) -> Totals {
        self.state.lock().expect("spool lock").totals
    }

    /// True when `bytes` more fit (an empty spool takes anything, so one
    /// oversized batch cannot wedge the pump).
    pub fn has_room(&self, bytes: u64) -> bool {
        let t = self.totals();
        t.bytes == 0 || t.bytes + bytes <= self.max_bytes
    }

    /// What a full spool does.
    pub fn when_full(&self) -> WhenFull {
        self.when_full
    }

    /// Appends batches in one durable commit (one fsync for all of them).
    pub fn append<R: AsRef<[u8]>>(&self, batches: &[(&str, i64, &[R])]) -> Result<(), SpoolError> {
        let frames: Vec<(Vec<u8>, u64)> = batches
            .iter()
            .map(|(key, at, records)| (frame::encode(key, *at, records), records.len() as u64))
            .collect();
        let first = self.state.lock().expect("spool lock").next_seq;
        let txn = self.db.begin_write().map_err(|e| self.err(e))?;
        {
            let mut table = txn.open_table(BATCHES).map_err(|e| self.err(e))?;
            for (i, (f, _)) in frames.iter().enumerate() {
                table
                    .insert(first + i as u64, f.as_slice())
                    .map_err(|e| self.err(e))?;
            }
        }
        txn.commit().map_err(|e| self.err(e))?;
        let mut st = self.state.lock().expect("spool lock");
        st.next_seq = first + frames.len() as u64;
        for (f, n) in &frames {
            st.totals.batches += 1;
            st.totals.records += n;
            st.totals.bytes += f.len() as u64;
        }
        let t = st.totals;
        drop(st);
        self.publish(t);
        Ok(())
    }

    /// The oldest batch, marked in progress. Damaged entries on the way are
    /// removed and counted.
    pub fn oldest(&self) -> Result<Option<(u64, SpooledBatch)>, SpoolError> {
        loop {
            let found = {
                let txn = self.db.begin_read().map_err(|e| self.err(e))?;
                let table = txn.open_table(BATCHES).map_err(|e| self.err(e))?;
                let first = table.first().map_err(|e| self.err(e))?;
                first.map(|(k, v)| (k.value(), frame::decode(v.value())))
            };
            match found {
                None => return Ok(None),
                Some((seq, Ok(batch))) => {
                    self.state.lock().expect("spool lock").in_progress = Some(seq);
                    return Ok(Some((seq, batch)));
                }
                Some((seq, Err(e))) => {
                    self.count_corrupt(seq, &e);
                    self.remove(seq)?;
                }
            }
        }
    }

    /// Removes a delivered (or dropped) batch. Idempotent.
    pub fn remove(&self, seq: u64) -> Result<(), SpoolError> {
        self.remove_many(&[seq]).map(|_| ())
    }

    /// Removes entries; returns the records they held.
    fn remove_many(&self, seqs: &[u64]) -> Result<u64, SpoolError> {
        let txn = self.db.begin_write().map_err(|e| self.err(e))?;
        let mut gone = Totals::default();
        {
            let mut table = txn.open_table(BATCHES).map_err(|e| self.err(e))?;
            for seq in seqs {
                if let Some(v) = table.remove(seq).map_err(|e| self.err(e))? {
                    gone.batches += 1;
                    gone.bytes += v.value().len() as u64;
                    gone.records += frame::record_count(v.value()).unwrap_or(0);
                }
            }
        }
        txn.commit().map_err(|e| self.err(e))?;
        let mut st = self.state.lock().expect("spool lock");
        st.totals.batches = st.totals.batches.saturating_sub(gone.batches);
        st.totals.records = st.totals.records.saturating_sub(gone.records);
        st.totals.bytes = st.totals.bytes.saturating_sub(gone.bytes);
        if st.in_progress.is_some_and(|p| seqs.contains(&p)) {
            st.in_progress = None;
        }
        let t = st.totals;
        drop(st);
        self.publish(t);
        Ok(gone.records)
    }

    /// `drop_oldest`: discards the oldest batches (except the one being
    /// delivered) until `bytes` more fit. Returns the records discarded.
    pub fn make_room(&self, bytes: u64) -> Result<u64, SpoolError> {
        let (need, skip) = {
            let st = self.state.lock().expect("spool lock");
            let over = (st.totals.bytes + bytes).saturating_sub(self.max_bytes);
            (over, st.in_progress)
        };
        if need == 0 {
            return Ok(0);
        }
        let mut victims = Vec::new();
        {
            let txn = self.db.begin_read().map_err(|e| self.err(e))?;
            let table = txn.open_table(BATCHES).map_err(|e| self.err(e))?;
            let mut freed = 0u64;
            for entry in table.iter().map_err(|e| self.err(e))? {
                let (k, v) = entry.map_err(|e| self.err(e))?;
                if Some(k.value()) == skip {
                    continue;
                }
                victims.push(k.value());
                freed += v.value().len() as u64;
                if freed >= need {
                    break;
                }
            }
        }
        let dropped = self.remove_many(&victims)?;
        if dropped > 0 {
            metrics::counter!(telemetry::SPOOL_DROPPED_RECORDS, "pump" => self.pump.to_string())
                .increment(dropped);
            tracing::warn!(
                pump = &*self.pump,
                records = dropped,
                batches = victims.len(),
                "spool full (when_full = \"drop_oldest\"): discarded the oldest records"
            );
        }
        Ok(dropped)
    }
}

fn open_db(path: &Path) -> Result<Database, redb::DatabaseError> {
    Database::builder().set_cache_size(CACHE_BYTES).create(path)
}

fn store_err(path: &Path, e: impl Into<redb::Error>) -> SpoolError {
    SpoolError::Store {
        path: path.to_path_buf(),
        source: e.into(),
    }
}

/// Errors that mean the file's content is damaged, not that the disk or
/// permissions are failing (those are reported, not worked around).
fn is_damage(e: &redb::DatabaseError) -> bool {
    match e {
        redb::DatabaseError::Storage(redb::StorageError::Corrupted(_)) => true,
        redb::DatabaseError::Storage(redb::StorageError::Io(io)) => matches!(
            io.kind(),
            std::io::ErrorKind::InvalidData | std::io::ErrorKind::UnexpectedEof
        ),
        redb::DatabaseError::RepairAborted | redb::DatabaseError::UpgradeRequired(_) => true,
        _ => false,
    }
}

fn quarantine(path: &Path) -> std::io::Result<PathBuf> {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut aside = path.as_os_str().to_owned();
    aside.push(format!(".corrupt-{secs}"));
    let aside = PathBuf::from(aside);
    std::fs::rename(path, &aside)?;
    Ok(aside)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recs(n: usize, size: usize) -> Vec<Vec<u8>> {
        (0..n).map(|i| vec![i as u8; size]).collect()
    }

    #[test]
    fn batches_come_back_in_order_and_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let a = recs(3, 10);
        let b = recs(2, 20);
        {
            let s = Spool::open(dir.path(), "p", 1 << 20, WhenFull::Block).unwrap();
            s.append(&[("k", 1, &a), ("k", 2, &b)]).unwrap();
            let (seq, first) = s.oldest().unwrap().unwrap();
            assert_eq!(first.records, a);
            s.remove(seq).unwrap();
            assert_eq!(s.totals().records, 2);
        }
        let s = Spool::open(dir.path(), "p", 1 << 20, WhenFull::Block).unwrap();
        assert_eq!(s.totals().batches, 1);
        let (seq, second) = s.oldest().unwrap().unwrap();
        assert_eq!((second.claimed_at_ms, second.records), (2, b));
        s.remove(seq).unwrap();
        s.remove(seq).unwrap();
        assert!(s.oldest().unwrap().is_none());
        assert_eq!(s.totals(), Totals::default());
        // New entries continue after the old ones.
        s.append(&[("k", 3, &recs(1, 1))]).unwrap();
        assert_eq!(s.oldest().unwrap().unwrap().1.claimed_at_ms, 3);
    }

    #[test]
    fn drop_oldest_discards_whole_batches_but_not_the_one_in_delivery() {
        let dir = tempfile::tempdir().unwrap();
        let s = Spool::open(dir.path(), "p", 3000, WhenFull::DropOldest).unwrap();
        for i in 0..3 {
            s.append(&[("k", i, &recs(10, 90))]).unwrap();
        }
        let (in_delivery, _) = s.oldest().unwrap().unwrap();
        assert!(!s.has_room(1000));
        let dropped = s.make_room(1000).unwrap();
        assert_eq!(dropped, 10);
        assert!(s.has_room(1000));
        // The batch being delivered is still there; the second one is gone.
        assert_eq!(s.oldest().unwrap().unwrap().0, in_delivery);
        s.remove(in_delivery).unwrap();
        assert_eq!(s.oldest().unwrap().unwrap().1.claimed_at_ms, 2);
    }

    #[test]
    fn an_unreadable_file_is_moved_aside_and_a_fresh_spool_started() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("p.spool"), vec![0x5a; 8192]).unwrap();
        let s = Spool::open(dir.path(), "p", 1 << 20, WhenFull::Block).unwrap();
        assert_eq!(s.totals(), Totals::default());
        let aside: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().contains(".corrupt-"))
            .collect();
        assert_eq!(aside.len(), 1);
        s.append(&[("k", 1, &recs(1, 1))]).unwrap();
    }

    #[test]
    fn a_second_open_of_the_same_spool_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let _a = Spool::open(dir.path(), "p", 1 << 20, WhenFull::Block).unwrap();
        match Spool::open(dir.path(), "p", 1 << 20, WhenFull::Block) {
            Err(e @ SpoolError::InUse { .. }) => assert!(e.to_string().contains("p.spool")),
            Err(e) => panic!("unexpected error {e}"),
            Ok(_) => panic!("opened twice"),
        }
    }
}
