//! The bytes of one spooled batch. Pure: no I/O.
//!
//! ```text
//! crc32 (u32 LE, of everything after it) | version u8 = 1
//! claimed_at_ms i64 LE | key_len u16 LE | key
//! count u32 LE | count × (len u32 LE | record bytes)
//! ```
//! The checksum catches a torn or damaged entry that the store itself did
//! not, so it is skipped and counted instead of delivered as garbage.

/// A batch as kept in a spool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpooledBatch {
    /// The source key the records came from (for dead letters).
    pub key: String,
    /// When the batch was claimed: the timestamp of records without one.
    pub claimed_at_ms: i64,
    pub records: Vec<Vec<u8>>,
}

/// Why an entry could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("entry of {0} bytes is too short")]
    Short(usize),
    #[error("checksum mismatch (stored {stored:08x}, computed {computed:08x})")]
    Checksum { stored: u32, computed: u32 },
    #[error("unknown entry version {0}")]
    Version(u8),
    #[error("entry is truncated at byte {0}")]
    Truncated(usize),
    #[error("source key is not UTF-8")]
    Key,
}

const VERSION: u8 = 1;

impl SpooledBatch {
    /// Record bytes in the batch (what the spool size limit counts).
    pub fn record_bytes(&self) -> u64 {
        self.records.iter().map(|r| r.len() as u64).sum()
    }
}

/// Encodes a batch of `records` from `key`.
pub fn encode<R: AsRef<[u8]>>(key: &str, claimed_at_ms: i64, records: &[R]) -> Vec<u8> {
    let key = &key.as_bytes()[..key.len().min(u16::MAX as usize)];
    let body: usize = records.iter().map(|r| 4 + r.as_ref().len()).sum();
    let mut out = Vec::with_capacity(4 + 1 + 8 + 2 + key.len() + 4 + body);
    out.extend_from_slice(&[0; 4]);
    out.push(VERSION);
    out.extend_from_slice(&claimed_at_ms.to_le_bytes());
    out.extend_from_slice(&(key.len() as u16).to_le_bytes());
    out.extend_from_slice(key);
    out.extend_from_slice(&(records.len() as u32).to_le_bytes());
    for r in records {
        let r = r.as_ref();
        out.extend_from_slice(&(r.len() as u32).to_le_bytes());
        out.extend_from_slice(r);
    }
    let crc = crc32fast::hash(&out[4..]);
    out[..4].copy_from_slice(&crc.to_le_bytes());
    out
}

/// Decodes and verifies an entry.
pub fn decode(bytes: &[u8]) -> Result<SpooledBatch, FrameError> {
    if bytes.len() < 4 + 1 + 8 + 2 + 4 {
        return Err(FrameError::Short(bytes.len()));
    }
    let stored = u32::from_le_bytes(bytes[..4].try_into().expect("4 bytes"));
    let computed = crc32fast::hash(&bytes[4..]);
    if stored != computed {
        return Err(FrameError::Checksum { stored, computed });
    }
    let mut r = Reader { bytes, at: 4 };
    let version = r.take(1)?[0];
    if version != VERSION {
        return Err(FrameError::Version(version));
    }
    let claimed_at_ms = i64::from_le_bytes(r.take(8)?.try_into().expect("8 bytes"));
    let key_len = u16::from_le_bytes(r.take(2)?.try_into().expect("2 bytes")) as usize;
    let key = std::str::from_utf8(r.take(key_len)?)
        .map_err(|_| FrameError::Key)?
        .to_string();
    let count = r.u32()? as usize;
    // Every record needs at least its length prefix: bounds the allocation.
    let mut records = Vec::with_capacity(count.min(bytes.len() / 4));
    for _ in 0..count {
        let len = r.u32()? as usize;
        records.push(r.take(len)?.to_vec());
    }
    if r.at != bytes.len() {
        return Err(FrameError::Truncated(r.at));
    }
    Ok(SpooledBatch {
        key,
        claimed_at_ms,
        records,
    })
}

/// The record count of an entry, read from its header without decoding the
/// records (for totals when an entry is removed).
pub fn record_count(bytes: &[u8]) -> Option<u64> {
    let key_len = u16::from_le_bytes(bytes.get(13..15)?.try_into().ok()?) as usize;
    let at = 15 + key_len;
    Some(u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?) as u64)
}

/// How many records a damaged entry held, as far as its bytes still say:
/// the header's count when the length prefixes after it still add up to
/// the entry (a flipped byte inside a record), else the header's count
/// capped at what the entry could hold (each record takes at least its
/// 4-byte length prefix), and 0 when not even the header is there.
pub fn damaged_count(bytes: &[u8]) -> u64 {
    let Some(count) = record_count(bytes) else {
        return 0;
    };
    let key_len = u16::from_le_bytes([bytes[13], bytes[14]]) as usize;
    let mut r = Reader {
        bytes,
        at: 15 + key_len + 4,
    };
    let whole = (0..count).all(|_| r.u32().and_then(|n| r.take(n as usize)).is_ok());
    if whole && r.at == bytes.len() {
        count
    } else {
        count.min(bytes.len() as u64 / 4)
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], FrameError> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&e| e <= self.bytes.len())
            .ok_or(FrameError::Truncated(self.at))?;
        let s = &self.bytes[self.at..end];
        self.at = end;
        Ok(s)
    }

    fn u32(&mut self) -> Result<u32, FrameError> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_any_damage() {
        let records = vec![b"one".to_vec(), Vec::new(), vec![0xc1; 300]];
        let bytes = encode("analytics", 1_700_000_000_123, &records);
        let back = decode(&bytes).unwrap();
        assert_eq!(back.key, "analytics");
        assert_eq!(back.claimed_at_ms, 1_700_000_000_123);
        assert_eq!(back.records, records);
        assert_eq!(back.record_bytes(), 303);
        assert_eq!(record_count(&bytes), Some(3));
        // Every single-byte flip and every truncation is detected.
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x40;
            assert!(decode(&bad).is_err(), "flip at {i} went unnoticed");
            assert!(decode(&bytes[..i]).is_err(), "cut at {i} went unnoticed");
        }
    }

    #[test]
    fn a_damaged_entry_still_tells_how_many_records_it_held() {
        let records = vec![vec![7u8; 40]; 5];
        let bytes = encode("k", 1, &records);
        // A flip inside a record: the structure still adds up.
        let mut inside = bytes.clone();
        let last = inside.len() - 3;
        inside[last] ^= 1;
        assert!(decode(&inside).is_err());
        assert_eq!(damaged_count(&inside), 5);
        // A count blown up by damage is capped by the entry's size.
        let mut count = bytes.clone();
        let at = 15 + 1 + 3;
        count[at] = 0xff;
        assert_eq!(damaged_count(&count), count.len() as u64 / 4);
        assert_eq!(damaged_count(&bytes[..10]), 0);
    }
}
