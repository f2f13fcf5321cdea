//! Packet framing (pure): a 3-byte little-endian length and a sequence id
//! before each chunk; a payload of 16 MiB - 1 or more goes out as several
//! chunks, the last one shorter (empty if need be).

use bytes::BytesMut;
use mysql_common::proto::codec::error::PacketCodecError;
use mysql_common::proto::codec::{packet_to_chunks, ChunkDecoder, ChunkInfo};

use super::MysqlError;

/// The largest chunk; a chunk this long says another one follows.
pub const MAX_CHUNK: usize = 0xFF_FFFF;

/// The default bound on one received payload: MariaDB's and MySQL's own
/// `max_allowed_packet` ceiling is 1 GiB, but nothing a sink reads back
/// comes near this.
pub const DEFAULT_MAX_PACKET: usize = 64 * 1024 * 1024;

/// Accumulates received bytes and yields whole packets.
#[derive(Debug)]
pub struct PacketReader {
    /// Received bytes not yet consumed.
    input: BytesMut,
    decoder: ChunkDecoder,
    /// The packet being assembled from its chunks.
    payload: Vec<u8>,
    /// The sequence ids of the first chunk of `payload` and of the next.
    seqs: Option<(u8, u8)>,
    limit: usize,
}

impl PacketReader {
    /// A reader that refuses payloads over `limit` bytes before buffering
    /// them.
    pub fn new(limit: usize) -> PacketReader {
        PacketReader {
            input: BytesMut::new(),
            decoder: ChunkDecoder::default(),
            payload: Vec::new(),
            seqs: None,
            limit,
        }
    }

    /// Appends received bytes.
    pub fn feed(&mut self, bytes: &[u8]) {
        self.input.extend_from_slice(bytes);
    }

    /// True when no received byte waits to be parsed: what must hold before
    /// the stream switches to TLS.
    pub fn is_empty(&self) -> bool {
        self.input.is_empty() && self.payload.is_empty() && self.seqs.is_none()
    }

    /// The next whole packet as `(sequence id of its first chunk, payload)`,
    /// or `None` until more bytes are fed. The packet took
    /// [`chunks`]`(payload.len())` sequence ids.
    pub fn next_packet(&mut self) -> Result<Option<(u8, Vec<u8>)>, MysqlError> {
        loop {
            let chunk = self
                .decoder
                .decode(&mut self.input, &mut self.payload, self.limit)
                .map_err(|e| match e {
                    PacketCodecError::PacketTooLarge => MysqlError::protocol(format!(
                        "the server sent a packet over the {} MiB limit",
                        self.limit >> 20
                    )),
                    other => MysqlError::protocol(other.to_string()),
                })?;
            let (seq, last) = match chunk {
                None => return Ok(None),
                Some(ChunkInfo::Middle(seq)) => (seq, false),
                Some(ChunkInfo::Last(seq)) => (seq, true),
            };
            let first = match self.seqs {
                Some((first, want)) if seq == want => first,
                Some((_, want)) => {
                    return Err(MysqlError::protocol(format!(
                        "chunk with sequence id {seq} where {want} was due"
                    )))
                }
                None => seq,
            };
            if last {
                self.seqs = None;
                return Ok(Some((first, std::mem::take(&mut self.payload))));
            }
            self.seqs = Some((first, seq.wrapping_add(1)));
        }
    }
}

/// How many chunks, and so sequence ids, a payload of `len` bytes takes:
/// one more than the full chunks, since a shorter (maybe empty) one ends it.
pub fn chunks(len: usize) -> usize {
    len / MAX_CHUNK + 1
}

/// Appends `payload` framed as chunks numbered from `seq` to `out`;
/// returns the sequence id the next packet of this exchange takes.
pub fn write_packet(seq: u8, payload: &[u8], out: &mut BytesMut) -> u8 {
    packet_to_chunks(seq, &mut &payload[..], out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(seq: u8, payload: &[u8]) -> (Vec<u8>, u8) {
        let mut out = BytesMut::new();
        let next = write_packet(seq, payload, &mut out);
        (out.to_vec(), next)
    }

    #[test]
    fn small_packet_round_trips_fed_byte_by_byte() {
        let (wire, next) = framed(7, b"\x03SELECT 1");
        assert_eq!(&wire[..4], &[9, 0, 0, 7]);
        assert_eq!(next, 8);
        let mut r = PacketReader::new(1024);
        for (i, b) in wire.iter().enumerate() {
            assert!(r.next_packet().unwrap().is_none(), "whole after {i} bytes");
            r.feed(&[*b]);
        }
        assert_eq!(
            r.next_packet().unwrap(),
            Some((7, b"\x03SELECT 1".to_vec()))
        );
        assert!(r.is_empty());
        assert!(r.next_packet().unwrap().is_none());
    }

    #[test]
    fn two_packets_in_one_read() {
        let (mut wire, _) = framed(1, b"one");
        wire.extend(framed(2, b"").0);
        wire.extend(framed(3, b"three").0);
        let mut r = PacketReader::new(1024);
        r.feed(&wire);
        assert_eq!(r.next_packet().unwrap(), Some((1, b"one".to_vec())));
        assert_eq!(r.next_packet().unwrap(), Some((2, Vec::new())));
        assert_eq!(r.next_packet().unwrap(), Some((3, b"three".to_vec())));
        assert!(r.next_packet().unwrap().is_none());
    }

    #[test]
    fn payload_of_exactly_one_max_chunk_ends_with_an_empty_chunk() {
        let payload = vec![0xAB; MAX_CHUNK];
        let (wire, next) = framed(0, &payload);
        assert_eq!(wire.len(), 4 + MAX_CHUNK + 4);
        assert_eq!(&wire[..4], &[0xFF, 0xFF, 0xFF, 0]);
        assert_eq!(&wire[wire.len() - 4..], &[0, 0, 0, 1]);
        assert_eq!(next, 2);
        let mut r = PacketReader::new(DEFAULT_MAX_PACKET);
        r.feed(&wire);
        let (seq, got) = r.next_packet().unwrap().unwrap();
        assert_eq!(seq, 0);
        assert_eq!(chunks(got.len()), 2);
        assert!(got == payload);
    }

    #[test]
    fn payload_over_two_chunks_splits_and_joins() {
        let payload: Vec<u8> = (0..MAX_CHUNK * 2 + 10).map(|i| i as u8).collect();
        let (wire, next) = framed(255, &payload);
        assert_eq!(wire.len(), payload.len() + 12);
        assert_eq!(next, 2, "sequence ids wrap: 255, 0, 1");
        let mut r = PacketReader::new(DEFAULT_MAX_PACKET);
        for part in wire.chunks(65536) {
            assert!(r.next_packet().unwrap().is_none());
            r.feed(part);
        }
        let (seq, got) = r.next_packet().unwrap().unwrap();
        assert_eq!(seq, 255);
        assert_eq!(chunks(got.len()), 3);
        assert!(got == payload);
    }

    #[test]
    fn header_over_the_limit_is_refused_before_its_body_arrives() {
        let mut r = PacketReader::new(1000);
        r.feed(&[0xE9, 0x03, 0x00, 0x00]); // 1001 bytes announced
        let e = r.next_packet().unwrap_err();
        assert!(matches!(e, MysqlError::Protocol(_)), "{e}");
    }

    #[test]
    fn chunks_over_the_limit_together_are_refused() {
        let payload = vec![1u8; MAX_CHUNK + 1];
        let (wire, _) = framed(0, &payload);
        let mut r = PacketReader::new(MAX_CHUNK);
        r.feed(&wire);
        assert!(matches!(r.next_packet(), Err(MysqlError::Protocol(_))));
    }

    #[test]
    fn a_chunk_out_of_sequence_is_refused() {
        let mut wire = vec![0xFF, 0xFF, 0xFF, 4];
        wire.extend(vec![0u8; MAX_CHUNK]);
        wire.extend([1, 0, 0, 9, b'x']); // 5 is due
        let mut r = PacketReader::new(DEFAULT_MAX_PACKET);
        r.feed(&wire);
        assert!(matches!(r.next_packet(), Err(MysqlError::Protocol(_))));
    }
}
