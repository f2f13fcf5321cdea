//! Hostile input for every parser: truncated packets must be refused, and
//! garbage must come back as a value or an error, never a panic.

use super::handshake::tests::mariadb_hello;
use super::reply::tests::{caps, column_def, lenenc};
use super::*;

/// xorshift64: reproducible garbage without a dependency.
struct Garbage(u64);

impl Garbage {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// Up to `max` random bytes, often starting with a header byte the
    /// parsers branch on.
    fn bytes(&mut self, max: usize) -> Vec<u8> {
        let len = (self.next() % (max as u64 + 1)) as usize;
        let mut out: Vec<u8> = (0..len).map(|_| self.next() as u8).collect();
        if let Some(first) = out.first_mut() {
            const HEADERS: [u8; 8] = [0x00, 0x01, 0x0A, 0xFB, 0xFC, 0xFD, 0xFE, 0xFF];
            if self.next().is_multiple_of(2) {
                *first = HEADERS[(self.next() % 8) as usize];
            }
        }
        out
    }

    /// `valid` with a few bytes overwritten.
    fn mutate(&mut self, valid: &[u8]) -> Vec<u8> {
        let mut out = valid.to_vec();
        for _ in 0..1 + self.next() % 4 {
            if out.is_empty() {
                break;
            }
            let i = (self.next() % out.len() as u64) as usize;
            out[i] = self.next() as u8;
        }
        out
    }
}

fn text_row() -> Vec<u8> {
    let mut row = Vec::new();
    lenenc(b"42", &mut row);
    row.push(0xFB);
    lenenc(&[b'v'; 300], &mut row);
    row
}

fn ok_packet() -> Vec<u8> {
    let mut p = vec![0, 1, 2, 2, 0, 0, 0];
    lenenc(b"Rows matched: 1  Changed: 1  Warnings: 0", &mut p);
    p
}

/// Every parser on one input; the results are dropped, panics are not.
fn parse_everything(p: &[u8]) {
    let _ = parse_hello(p);
    for plugin in ["mysql_native_password", "caching_sha2_password"] {
        for tls in [false, true] {
            let mut hello = parse_hello(&mariadb_hello()).unwrap();
            hello.auth_plugin = plugin.into();
            let _ = Auth::start(&hello, "pw", tls).0.step(p);
        }
    }
    let _ = parse_ok(p, caps(true));
    let _ = parse_err(p, caps(true));
    let _ = parse_text_row(p, 3);
    for deprecate_eof in [true, false] {
        // The reader in each of its states.
        let mut r = ResultReader::new(caps(deprecate_eof));
        let _ = r.push(p);
        let mut r = ResultReader::new(caps(deprecate_eof));
        r.push(&[3]).unwrap();
        let _ = r.push(p);
        let mut r = ResultReader::new(caps(deprecate_eof));
        r.push(&[1]).unwrap();
        r.push(&column_def("a")).unwrap();
        let _ = r.push(p);
        let _ = r.push(p);
    }
    let mut reader = PacketReader::new(1 << 16);
    reader.feed(p);
    while let Ok(Some(_)) = reader.next_packet() {}
}

#[test]
fn garbage_never_panics() {
    let mut g = Garbage(0x9E37_79B9_7F4A_7C15);
    for _ in 0..20_000 {
        parse_everything(&g.bytes(64));
    }
    let valid = [mariadb_hello(), column_def("name"), text_row(), ok_packet()];
    for _ in 0..5_000 {
        for v in &valid {
            parse_everything(&g.mutate(v));
        }
    }
}

#[test]
fn truncated_greeting_is_refused() {
    let hello = mariadb_hello();
    // Past part 2 of the auth data only the plugin name is cut, which
    // still parses (and fails later as an unknown plugin).
    let fixed = hello.len() - b"mysql_native_password\0".len();
    for n in 0..fixed {
        assert!(parse_hello(&hello[..n]).is_err(), "{n} bytes");
    }
    for n in fixed..hello.len() {
        let _ = parse_hello(&hello[..n]);
    }
}

#[test]
fn truncated_column_definition_row_and_ok_are_refused() {
    let column = column_def("name");
    for n in 0..column.len() {
        let mut r = ResultReader::new(caps(true));
        r.push(&[1]).unwrap();
        assert!(
            r.push(&column[..n]).is_err(),
            "column definition of {n} bytes"
        );
    }
    let row = text_row();
    for n in 0..row.len() {
        assert!(parse_text_row(&row[..n], 3).is_err(), "row of {n} bytes");
    }
    let ok = ok_packet();
    for n in 0..7 {
        assert!(parse_ok(&ok[..n], caps(true)).is_err(), "OK of {n} bytes");
    }
    for n in 8..ok.len() {
        assert!(
            parse_ok(&ok[..n], caps(true)).is_err(),
            "OK cut in its info at {n}"
        );
    }
}

#[test]
fn truncated_err_packet_is_a_protocol_error() {
    for n in 0..3 {
        let p = &[0xFF, 0x15, 0x04][..n];
        assert!(
            matches!(parse_err(p, caps(true)), MysqlError::Protocol(_)),
            "{n} bytes"
        );
    }
}

#[test]
fn truncated_auth_packets_are_refused() {
    let mut switch = b"\xFEcaching_sha2_password\0".to_vec();
    switch.extend(b"01234567890123456789\0");
    let hello = parse_hello(&mariadb_hello()).unwrap();
    // Cut inside the plugin name or before 20 bytes of nonce.
    for n in 1..switch.len() - 1 {
        let mut auth = Auth::start(&hello, "pw", false).0;
        assert!(auth.step(&switch[..n]).is_err(), "switch of {n} bytes");
    }
    assert!(Auth::start(&hello, "pw", false).0.step(&[]).is_err());
    assert!(Auth::start(&hello, "pw", false).0.step(&[1]).is_err());
}

#[test]
fn truncated_packet_waits_and_garbage_framing_is_bounded() {
    let mut out = bytes::BytesMut::new();
    write_packet(0, b"hello", &mut out);
    for n in 0..out.len() {
        let mut r = PacketReader::new(1024);
        r.feed(&out[..n]);
        assert_eq!(r.next_packet().unwrap(), None, "{n} bytes");
    }
    // A header announcing 16 MiB under a 64 KiB bound fails at once.
    let mut r = PacketReader::new(1 << 16);
    r.feed(&[0xFF, 0xFF, 0xFF, 0]);
    assert!(r.next_packet().is_err());
}
