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
//! An I/O error (a full disk, above all) leaves a redb handle refusing
//! every later operation ("previous I/O error"), so the spool then closes
//! the file and reopens it on its next operation: once space returns, the
//! file is back at its last commit and the caller's retry goes through.
//!
//! The spool does not wait for that error, though. redb grows its file
//! with a sparse `set_len`, so once the disk is full any later commit,
//! even one that only removes, may need a page the disk cannot back, and
//! nothing could make room any more. An append therefore first asks the
//! filesystem for its free space and refuses, as a full disk, to take it
//! below twice the batch plus [`DISK_MARGIN`]: removals always find room,
//! and `drop_oldest` frees pages inside the file for the next write.
//!
//! Blocking: call it from `spawn_blocking`, as [`crate::pump`]'s disk lanes do.

pub mod frame;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use crate::config::WhenFull;
use crate::telemetry;
pub use frame::SpooledBatch;

const BATCHES: TableDefinition<u64, &[u8]> = TableDefinition::new("batches");
/// Page cache per spool: the spool is written once and read once, so a
/// small cache is enough and keeps memory bounded.
const CACHE_BYTES: usize = 8 << 20;
/// Free disk space an append leaves beyond twice its own size: room for
/// the pages a commit rewrites (tree, allocator state) and for removals.
pub const DISK_MARGIN: u64 = 1 << 20;

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
    #[error("spool {path}: No space left on device ({free} bytes free; an append of {bytes} bytes keeps {keep} free)")]
    DiskFull {
        path: PathBuf,
        free: u64,
        bytes: u64,
        keep: u64,
    },
}

impl SpoolError {
    /// Whether the disk (or the user's quota) is out of space.
    pub fn is_out_of_space(&self) -> bool {
        match self {
            SpoolError::Store {
                source: redb::Error::Io(io),
                ..
            }
            | SpoolError::Dir { source: io, .. } => matches!(
                io.kind(),
                std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
            ),
            SpoolError::DiskFull { .. } => true,
            _ => false,
        }
    }

    /// What failed, without the path: an I/O error's own text ("No space
    /// left on device (os error 28)"), for the pump's status.
    pub fn cause(&self) -> String {
        match self {
            SpoolError::Store {
                source: redb::Error::Io(io),
                ..
            } => io.to_string(),
            SpoolError::Store { source, .. } => source.to_string(),
            SpoolError::Dir { source, .. } => source.to_string(),
            SpoolError::InUse { .. } => "in use by another process".to_string(),
            SpoolError::DiskFull { free, .. } => {
                format!("No space left on device ({free} bytes free)")
            }
        }
    }
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
    /// `None` after an I/O error, until the next operation reopens it.
    db: RwLock<Option<Database>>,
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
            db: RwLock::new(Some(db)),
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

    /// Runs `op` on the open store, reopening it first if an I/O error
    /// closed it. An I/O error from `op` closes the store: redb refuses
    /// every later operation on that handle.
    fn with_db<T>(
        &self,
        op: impl FnOnce(&Database) -> Result<T, redb::Error>,
    ) -> Result<T, SpoolError> {
        let mut guard = self.db.read().expect("spool db lock");
        if guard.is_none() {
            drop(guard);
            self.reopen()?;
            guard = self.db.read().expect("spool db lock");
        }
        let db = guard
            .as_ref()
            .ok_or_else(|| store_err(&self.path, redb::StorageError::DatabaseClosed))?;
        match op(db) {
            Ok(v) => Ok(v),
            Err(e) => {
                drop(guard);
                if needs_reopen(&e) {
                    // The handle is done for; the next operation reopens.
                    self.db.write().expect("spool db lock").take();
                }
                Err(store_err(&self.path, e))
            }
        }
    }

    /// Opens the file again after an I/O error closed it. redb reopens it
    /// at its last commit (repairing it when the close was not clean), and
    /// the totals are counted again: a commit that reported an error may
    /// still have reached the disk.
    fn reopen(&self) -> Result<(), SpoolError> {
        let mut slot = self.db.write().expect("spool db lock");
        if slot.is_some() {
            return Ok(());
        }
        let db = open_db(&self.path).map_err(|e| store_err(&self.path, e))?;
        let totals = count(&db).map_err(|e| store_err(&self.path, e))?;
        *slot = Some(db);
        drop(slot);
        self.state.lock().expect("spool lock").totals = totals;
        self.publish(totals);
        tracing::info!(
            pump = &*self.pump,
            spool = %self.path.display(),
            batches = totals.batches,
            records = totals.records,
            "reopened the spool after an I/O error"
        );
        Ok(())
    }

    /// Creates the table, drops damaged entries and computes the totals.
    fn scan(&self) -> Result<(), SpoolError> {
        let (totals, last, damaged) = self.with_db(|db| {
            let txn = begin_write(db)?;
            let mut totals = Totals::default();
            let mut last = None;
            let mut damaged = Vec::new();
            {
                let table = txn.open_table(BATCHES)?;
                for entry in table.iter()? {
                    let (k, v) = entry?;
                    let seq = k.value();
                    last = Some(seq);
                    match frame::decode(v.value()) {
                        Ok(b) => {
                            totals.batches += 1;
                            totals.records += b.records.len() as u64;
                            totals.bytes += v.value().len() as u64;
                        }
                        Err(e) => damaged.push((seq, e, frame::damaged_count(v.value()))),
                    }
                }
            }
            if !damaged.is_empty() {
                let mut table = txn.open_table(BATCHES)?;
                for (seq, _, _) in &damaged {
                    table.remove(seq)?;
                }
            }
            txn.commit()?;
            Ok((totals, last, damaged))
        })?;
        for (seq, e, records) in &damaged {
            self.count_corrupt(*seq, e, *records);
        }
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

    /// Counts a damaged entry and the records it held, which are lost.
    fn count_corrupt(&self, seq: u64, e: &frame::FrameError, records: u64) {
        let pump = self.pump.to_string();
        metrics::counter!(telemetry::SPOOL_CORRUPT, "pump" => pump.clone()).increment(1);
        metrics::counter!(telemetry::SPOOL_RECORDS_LOST, "pump" => pump).increment(records);
        tracing::error!(pump = &*self.pump, spool = %self.path.display(), entry = seq, records, "skipped a damaged spool entry; its {records} records are lost: {e}");
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
        let bytes: u64 = frames.iter().map(|(f, _)| f.len() as u64).sum();
        self.check_disk(bytes)?;
        let first = self.state.lock().expect("spool lock").next_seq;
        self.with_db(|db| {
            let txn = begin_write(db)?;
            {
                let mut table = txn.open_table(BATCHES)?;
                for (i, (f, _)) in frames.iter().enumerate() {
                    table.insert(first + i as u64, f.as_slice())?;
                }
            }
            txn.commit()?;
            Ok(())
        })?;
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
            let found = self.with_db(|db| {
                let txn = db.begin_read()?;
                let table = txn.open_table(BATCHES)?;
                let first = table.first()?;
                Ok(first.map(|(k, v)| {
                    let decoded = frame::decode(v.value());
                    let lost = match decoded {
                        Ok(_) => 0,
                        Err(_) => frame::damaged_count(v.value()),
                    };
                    (k.value(), decoded, lost)
                }))
            })?;
            match found {
                None => return Ok(None),
                Some((seq, Ok(batch), _)) => {
                    self.state.lock().expect("spool lock").in_progress = Some(seq);
                    return Ok(Some((seq, batch)));
                }
                Some((seq, Err(e), lost)) => {
                    self.remove(seq)?;
                    self.count_corrupt(seq, &e, lost);
                }
            }
        }
    }

    /// Refuses an append of `bytes` that would leave the disk with less
    /// than twice that plus [`DISK_MARGIN`] free (see the module doc). A
    /// filesystem that cannot say is taken at its word at commit time.
    fn check_disk(&self, bytes: u64) -> Result<(), SpoolError> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        let Some(free) = free_bytes(dir) else {
            return Ok(());
        };
        let keep = bytes.saturating_mul(2).saturating_add(DISK_MARGIN);
        if free >= keep {
            return Ok(());
        }
        Err(SpoolError::DiskFull {
            path: self.path.clone(),
            free,
            bytes,
            keep,
        })
    }

    /// Removes a delivered (or dropped) batch. Idempotent.
    pub fn remove(&self, seq: u64) -> Result<(), SpoolError> {
        self.remove_many(&[seq]).map(|_| ())
    }

    /// Removes entries; returns the records they held.
    fn remove_many(&self, seqs: &[u64]) -> Result<u64, SpoolError> {
        let gone = self.with_db(|db| {
            let txn = begin_write(db)?;
            let mut gone = Totals::default();
            {
                let mut table = txn.open_table(BATCHES)?;
                for seq in seqs {
                    if let Some(v) = table.remove(seq)? {
                        gone.batches += 1;
                        gone.bytes += v.value().len() as u64;
                        gone.records += frame::record_count(v.value()).unwrap_or(0);
                    }
                }
            }
            txn.commit()?;
            Ok(gone)
        })?;
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
        let need = {
            let st = self.state.lock().expect("spool lock");
            (st.totals.bytes + bytes).saturating_sub(self.max_bytes)
        };
        if need == 0 {
            return Ok(0);
        }
        self.discard(
            need,
            "spool full (when_full = \"drop_oldest\"): discarded the oldest records",
        )
    }

    /// `drop_oldest` on a disk without space: discards the oldest batches
    /// (except the one being delivered) holding at least `bytes`, so their
    /// pages take the next write. Returns the records discarded.
    pub fn discard_oldest(&self, bytes: u64) -> Result<u64, SpoolError> {
        self.discard(
            bytes.max(1),
            "spool's disk is full (when_full = \"drop_oldest\"): discarded the oldest records",
        )
    }

    fn discard(&self, need: u64, why: &str) -> Result<u64, SpoolError> {
        let skip = self.state.lock().expect("spool lock").in_progress;
        let victims = self.with_db(|db| {
            let txn = db.begin_read()?;
            let table = txn.open_table(BATCHES)?;
            let mut victims = Vec::new();
            let mut freed = 0u64;
            for entry in table.iter()? {
                let (k, v) = entry?;
                if Some(k.value()) == skip {
                    continue;
                }
                victims.push(k.value());
                freed += v.value().len() as u64;
                if freed >= need {
                    break;
                }
            }
            Ok(victims)
        })?;
        let dropped = self.remove_many(&victims)?;
        if dropped > 0 {
            metrics::counter!(telemetry::SPOOL_DROPPED_RECORDS, "pump" => self.pump.to_string())
                .increment(dropped);
            tracing::warn!(
                pump = &*self.pump,
                records = dropped,
                batches = victims.len(),
                "{why}"
            );
        }
        Ok(dropped)
    }
}

/// The bytes an unprivileged writer may still use on `dir`'s filesystem.
#[cfg(unix)]
fn free_bytes(dir: &Path) -> Option<u64> {
    let fs = nix::sys::statvfs::statvfs(dir).ok()?;
    Some((fs.blocks_available() as u64).saturating_mul(fs.fragment_size() as u64))
}

#[cfg(not(unix))]
fn free_bytes(_dir: &Path) -> Option<u64> {
    None
}

fn open_db(path: &Path) -> Result<Database, redb::DatabaseError> {
    Database::builder().set_cache_size(CACHE_BYTES).create(path)
}

/// A write transaction whose commit also records redb's allocator state
/// (its "quick repair", with two-phase commit). Reopening after `kill -9`
/// then loads that state instead of walking and checksumming every page,
/// a walk that refuses the whole file for one damaged byte ("All roots
/// are corrupted"); damage inside an entry is instead caught by the
/// entry's own CRC when it is read, and costs that entry alone.
fn begin_write(db: &Database) -> Result<redb::WriteTransaction, redb::Error> {
    let mut txn = db.begin_write()?;
    txn.set_quick_repair(true);
    Ok(txn)
}

/// The totals of what `db` holds, from the entries' headers.
fn count(db: &Database) -> Result<Totals, redb::Error> {
    let txn = db.begin_read()?;
    let table = match txn.open_table(BATCHES) {
        // A file whose first commit never made it holds nothing yet.
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Totals::default()),
        table => table?,
    };
    let mut totals = Totals::default();
    for entry in table.iter()? {
        let (_, v) = entry?;
        totals.batches += 1;
        totals.bytes += v.value().len() as u64;
        totals.records += frame::record_count(v.value()).unwrap_or(0);
    }
    Ok(totals)
}

/// Errors after which redb's handle refuses all further work until the
/// file is closed and reopened.
fn needs_reopen(e: &redb::Error) -> bool {
    matches!(
        e,
        redb::Error::Io(_)
            | redb::Error::PreviousIo
            | redb::Error::DatabaseClosed
            | redb::Error::TransactionPoisoned
    )
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
    fn one_damaged_byte_after_a_crash_costs_only_the_entry_holding_it() {
        let (dir, crashed) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let s = Spool::open(dir.path(), "p", 1 << 30, WhenFull::Block).unwrap();
        let marked = |i: i64| -> Vec<Vec<u8>> {
            (0..3)
                .map(|r| format!("entry-{i:02}-record-{r}-{}", "x".repeat(500)).into_bytes())
                .collect()
        };
        for i in 0..20 {
            s.append(&[("k", i, &marked(i))]).unwrap();
        }
        // A copy taken while the spool is open is the file as `kill -9`
        // leaves it: not closed cleanly, so the next open must recover it.
        let file = crashed.path().join("p.spool");
        std::fs::copy(dir.path().join("p.spool"), &file).unwrap();
        let mut bytes = std::fs::read(&file).unwrap();
        let needle = b"entry-07-record-1";
        let mut flipped = 0;
        for at in 0..bytes.len() - needle.len() {
            if &bytes[at..at + needle.len()] == needle {
                bytes[at + 12] ^= 0x01;
                flipped += 1;
            }
        }
        assert!(flipped >= 1, "the record is in the file");
        std::fs::write(&file, bytes).unwrap();

        let back = Spool::open(crashed.path(), "p", 1 << 30, WhenFull::Block).unwrap();
        assert_eq!(back.totals().batches, 19, "only the damaged entry is gone");
        assert_eq!(back.totals().records, 57);
        let mut seen = Vec::new();
        while let Some((seq, b)) = back.oldest().unwrap() {
            assert_eq!(b.records, marked(b.claimed_at_ms));
            seen.push(b.claimed_at_ms);
            back.remove(seq).unwrap();
        }
        let want: Vec<i64> = (0..20).filter(|i| *i != 7).collect();
        assert_eq!(seen, want);
        drop(s);
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
