//! Commands and what the server answers them (pure): COM_QUERY, COM_PING
//! and COM_QUIT; OK and ERR packets; text result sets, terminated by an
//! EOF packet or, with CLIENT_DEPRECATE_EOF, an OK packet.

use mysql_common::constants::{CapabilityFlags, StatusFlags};
use mysql_common::io::ParseBuf;
use mysql_common::packets::{
    Column, CommonOkPacket, ErrPacket, OkPacket, OkPacketDeserializer, OldEofPacket,
    ResultSetTerminator,
};
use mysql_common::proto::MyDeserialize;

use super::packet::MAX_CHUNK;
use super::MysqlError;

const COM_QUIT: u8 = 0x01;
const COM_QUERY: u8 = 0x03;
const COM_PING: u8 = 0x0E;

/// MySQL and MariaDB allow 4096 columns per table; a count far beyond is
/// garbage, and would size the column list.
const MAX_COLUMNS: u64 = 8192;

/// The COM_QUERY payload for `sql`.
pub fn com_query(sql: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + sql.len());
    out.push(COM_QUERY);
    out.extend_from_slice(sql.as_bytes());
    out
}

/// The COM_PING payload; the server answers OK.
pub fn com_ping() -> Vec<u8> {
    vec![COM_PING]
}

/// The COM_QUIT payload; the server closes the connection.
pub fn com_quit() -> Vec<u8> {
    vec![COM_QUIT]
}

/// An OK packet's fields.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OkInfo {
    pub affected_rows: u64,
    /// 0 when the statement generated no AUTO_INCREMENT value.
    pub last_insert_id: u64,
    /// SERVER_STATUS_* flags, e.g. more results exist (0x0008).
    pub status: u16,
    pub warnings: u16,
    /// Human-readable detail, e.g. "Records: 3  Duplicates: 1  Warnings: 0".
    pub info: String,
}

impl OkInfo {
    fn from_packet(ok: OkPacket<'_>) -> OkInfo {
        OkInfo {
            affected_rows: ok.affected_rows(),
            last_insert_id: ok.last_insert_id().unwrap_or(0),
            status: ok.status_flags().bits(),
            warnings: ok.warnings(),
            info: ok.info_str().map(|s| s.into_owned()).unwrap_or_default(),
        }
    }

    /// Another result of the same statement follows.
    pub fn more_results(&self) -> bool {
        StatusFlags::from_bits_truncate(self.status)
            .contains(StatusFlags::SERVER_MORE_RESULTS_EXISTS)
    }
}

/// Parses an OK packet (header 0x00).
pub fn parse_ok(payload: &[u8], caps: CapabilityFlags) -> Result<OkInfo, MysqlError> {
    OkPacketDeserializer::<CommonOkPacket>::deserialize(caps, &mut ParseBuf(payload))
        .map(|ok| OkInfo::from_packet(ok.into_inner()))
        .map_err(|e| MysqlError::protocol(format!("OK packet: {e}")))
}

/// Parses an ERR packet (header 0xFF) into the server's error; a packet
/// that does not parse is a protocol error.
pub fn parse_err(payload: &[u8], caps: CapabilityFlags) -> MysqlError {
    // Errors sent before the handshake (too many connections, host not
    // allowed) carry no SQLSTATE even to a 4.1 client.
    let caps = if payload.get(3) == Some(&b'#') {
        caps
    } else {
        caps - CapabilityFlags::CLIENT_PROTOCOL_41
    };
    // Without CLIENT_PROGRESS_OBSOLETE in `caps` no progress report comes.
    match ErrPacket::deserialize(caps, &mut ParseBuf(payload)) {
        Ok(ErrPacket::Error(e)) => MysqlError::Server {
            code: e.error_code(),
            sql_state: e
                .sql_state_ref()
                .map(|s| s.as_str().into_owned())
                .unwrap_or_else(|| "HY000".into()),
            message: e.message_str().into_owned(),
        },
        Ok(ErrPacket::Progress(_)) => MysqlError::protocol("unrequested progress report"),
        Err(e) => MysqlError::protocol(format!("ERR packet: {e}")),
    }
}

/// One value of a text row: `None` is SQL NULL.
pub type Value = Option<Vec<u8>>;

/// What a statement returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueryResult {
    /// A statement without rows (INSERT, CREATE, SET, ...).
    Ok {
        affected_rows: u64,
        last_insert_id: u64,
        warnings: u16,
        info: String,
    },
    /// A result set (SELECT, SHOW, DESCRIBE, ...), values in text form.
    Rows {
        columns: Vec<String>,
        rows: Vec<Vec<Value>>,
    },
}

/// Where a [`ResultReader`] is in the server's answer.
#[derive(Debug)]
enum State {
    /// Waiting for OK, ERR or a column count.
    Start,
    /// Column definitions still to come.
    Columns(u64),
    /// The EOF packet after the definitions (without DEPRECATE_EOF).
    ColumnsEnd,
    Rows,
}

/// Reads the server's answer to one COM_QUERY, a packet at a time.
#[derive(Debug)]
pub struct ResultReader {
    caps: CapabilityFlags,
    state: State,
    columns: Vec<String>,
    rows: Vec<Vec<Value>>,
}

/// A finished result, and whether another one follows.
#[derive(Debug, PartialEq, Eq)]
pub struct Finished {
    pub result: QueryResult,
    pub more_results: bool,
}

impl ResultReader {
    /// A reader for a connection that agreed on `caps`.
    pub fn new(caps: CapabilityFlags) -> ResultReader {
        ResultReader {
            caps,
            state: State::Start,
            columns: Vec::new(),
            rows: Vec::new(),
        }
    }

    /// Takes the next packet of the answer; `Some` when the result is
    /// complete. A server error ends it with `Err`.
    pub fn push(&mut self, payload: &[u8]) -> Result<Option<Finished>, MysqlError> {
        let first = *payload
            .first()
            .ok_or_else(|| MysqlError::protocol("empty packet in a result"))?;
        if first == 0xFF {
            return Err(parse_err(payload, self.caps));
        }
        match self.state {
            State::Start => match first {
                0x00 => {
                    let ok = parse_ok(payload, self.caps)?;
                    let more_results = ok.more_results();
                    Ok(Some(Finished {
                        result: QueryResult::Ok {
                            affected_rows: ok.affected_rows,
                            last_insert_id: ok.last_insert_id,
                            warnings: ok.warnings,
                            info: ok.info,
                        },
                        more_results,
                    }))
                }
                0xFB => Err(MysqlError::protocol(
                    "the server asks for a local file, which this client never offers",
                )),
                _ => {
                    let mut buf = ParseBuf(payload);
                    let count = buf
                        .checked_eat_lenenc_int()
                        .filter(|&n| (1..=MAX_COLUMNS).contains(&n) && buf.is_empty())
                        .ok_or_else(|| MysqlError::protocol("bad column count"))?;
                    self.columns.reserve(count as usize);
                    self.state = State::Columns(count);
                    Ok(None)
                }
            },
            State::Columns(left) => {
                let column = Column::deserialize((), &mut ParseBuf(payload))
                    .map_err(|e| MysqlError::protocol(format!("column definition: {e}")))?;
                self.columns.push(column.name_str().into_owned());
                self.state = match left - 1 {
                    0 if self.deprecate_eof() => State::Rows,
                    0 => State::ColumnsEnd,
                    n => State::Columns(n),
                };
                Ok(None)
            }
            State::ColumnsEnd => {
                OkPacketDeserializer::<OldEofPacket>::deserialize(
                    self.caps,
                    &mut ParseBuf(payload),
                )
                .map_err(|e| MysqlError::protocol(format!("EOF after columns: {e}")))?;
                self.state = State::Rows;
                Ok(None)
            }
            State::Rows if self.is_terminator(payload) => {
                let mut buf = ParseBuf(payload);
                let end: OkPacket<'_> = if self.deprecate_eof() {
                    OkPacketDeserializer::<ResultSetTerminator>::deserialize(self.caps, &mut buf)
                        .map(Into::into)
                } else {
                    OkPacketDeserializer::<OldEofPacket>::deserialize(self.caps, &mut buf)
                        .map(Into::into)
                }
                .map_err(|e| MysqlError::protocol(format!("end of rows: {e}")))?;
                let more_results = OkInfo::from_packet(end).more_results();
                Ok(Some(Finished {
                    result: QueryResult::Rows {
                        columns: std::mem::take(&mut self.columns),
                        rows: std::mem::take(&mut self.rows),
                    },
                    more_results,
                }))
            }
            State::Rows => {
                let row = parse_text_row(payload, self.columns.len())?;
                self.rows.push(row);
                Ok(None)
            }
        }
    }

    fn deprecate_eof(&self) -> bool {
        self.caps.contains(CapabilityFlags::CLIENT_DEPRECATE_EOF)
    }

    /// 0xFE also starts a row whose first value is 2^24 bytes or longer
    /// (an 8-byte length); such a row is itself at least that long, while
    /// the terminator is an OK packet (shorter than a chunk) or an EOF
    /// packet (shorter than 9 bytes).
    fn is_terminator(&self, payload: &[u8]) -> bool {
        let limit = if self.deprecate_eof() { MAX_CHUNK } else { 9 };
        payload[0] == 0xFE && payload.len() < limit
    }
}

/// A text row: each value is 0xFB for NULL or a length-encoded string.
pub fn parse_text_row(payload: &[u8], columns: usize) -> Result<Vec<Value>, MysqlError> {
    let mut buf = ParseBuf(payload);
    let mut row = Vec::with_capacity(columns);
    for _ in 0..columns {
        match buf.0.first() {
            Some(0xFB) => {
                buf.skip(1);
                row.push(None);
                continue;
            }
            Some(0xFF) => return Err(MysqlError::protocol("0xFF as a length in a text row")),
            _ => {}
        }
        let len = buf
            .checked_eat_lenenc_int()
            .filter(|&n| n <= buf.len() as u64)
            .ok_or_else(|| MysqlError::protocol("text row shorter than its columns"))?;
        row.push(Some(buf.eat(len as usize).to_vec()));
    }
    if !buf.is_empty() {
        return Err(MysqlError::protocol(format!(
            "{} bytes after the last value of a text row",
            buf.len()
        )));
    }
    Ok(row)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn caps(deprecate_eof: bool) -> CapabilityFlags {
        let mut caps = CapabilityFlags::CLIENT_PROTOCOL_41 | CapabilityFlags::CLIENT_TRANSACTIONS;
        if deprecate_eof {
            caps |= CapabilityFlags::CLIENT_DEPRECATE_EOF;
        }
        caps
    }

    pub(crate) fn lenenc(s: &[u8], out: &mut Vec<u8>) {
        match s.len() {
            n if n < 251 => out.push(n as u8),
            n if n < 1 << 16 => {
                out.push(0xFC);
                out.extend((n as u16).to_le_bytes());
            }
            n if n < 1 << 24 => {
                out.push(0xFD);
                out.extend(&(n as u32).to_le_bytes()[..3]);
            }
            n => {
                out.push(0xFE);
                out.extend((n as u64).to_le_bytes());
            }
        }
        out.extend_from_slice(s);
    }

    pub(crate) fn column_def(name: &str) -> Vec<u8> {
        let mut p = Vec::new();
        for s in ["def", "db", "t", "t", name, name] {
            lenenc(s.as_bytes(), &mut p);
        }
        p.push(0x0C);
        p.extend(45u16.to_le_bytes());
        p.extend(255u32.to_le_bytes());
        p.push(0xFD); // VAR_STRING
        p.extend(0u16.to_le_bytes());
        p.push(0);
        p.extend([0, 0]);
        p
    }

    fn ok_packet(
        header: u8,
        affected: u8,
        id: u8,
        status: u16,
        warnings: u16,
        info: &str,
    ) -> Vec<u8> {
        let mut p = vec![header, affected, id];
        p.extend(status.to_le_bytes());
        p.extend(warnings.to_le_bytes());
        if !info.is_empty() {
            lenenc(info.as_bytes(), &mut p);
        }
        p
    }

    fn eof_packet(status: u16) -> Vec<u8> {
        let mut p = vec![0xFE, 0, 0];
        p.extend(status.to_le_bytes());
        p
    }

    #[test]
    fn commands_are_one_byte_and_the_text() {
        assert_eq!(com_query("SELECT 1"), b"\x03SELECT 1");
        assert_eq!(com_ping(), [0x0E]);
        assert_eq!(com_quit(), [0x01]);
    }

    #[test]
    fn ok_packet_fields() {
        let p = ok_packet(0, 3, 9, 0x0002, 1, "Records: 3  Duplicates: 0  Warnings: 1");
        let ok = parse_ok(&p, caps(true)).unwrap();
        assert_eq!(
            ok,
            OkInfo {
                affected_rows: 3,
                last_insert_id: 9,
                status: 2,
                warnings: 1,
                info: "Records: 3  Duplicates: 0  Warnings: 1".into(),
            }
        );
        assert!(!ok.more_results());
    }

    #[test]
    fn err_packet_fields_with_and_without_sqlstate() {
        let mut p = vec![0xFF];
        p.extend(1406u16.to_le_bytes());
        p.extend(b"#22001Data too long for column 'v' at row 2");
        match parse_err(&p, caps(true)) {
            MysqlError::Server {
                code,
                sql_state,
                message,
            } => {
                assert_eq!(code, 1406);
                assert_eq!(sql_state, "22001");
                assert_eq!(message, "Data too long for column 'v' at row 2");
            }
            e => panic!("{e:?}"),
        }
        let mut p = vec![0xFF];
        p.extend(1040u16.to_le_bytes());
        p.extend(b"Too many connections");
        assert!(matches!(
            parse_err(&p, caps(true)),
            MysqlError::Server { code: 1040, ref sql_state, .. } if sql_state == "HY000"
        ));
    }

    #[test]
    fn statement_without_rows_is_ok() {
        let mut r = ResultReader::new(caps(true));
        let got = r.push(&ok_packet(0, 5, 0, 0, 0, "")).unwrap().unwrap();
        assert_eq!(
            got.result,
            QueryResult::Ok {
                affected_rows: 5,
                last_insert_id: 0,
                warnings: 0,
                info: String::new()
            }
        );
        assert!(!got.more_results);
    }

    fn result_set(deprecate_eof: bool) -> Vec<Vec<u8>> {
        let mut packets = vec![vec![2], column_def("id"), column_def("v")];
        if !deprecate_eof {
            packets.push(eof_packet(0));
        }
        let mut row = Vec::new();
        lenenc(b"1", &mut row);
        row.push(0xFB);
        packets.push(row);
        let mut row = Vec::new();
        lenenc(b"2", &mut row);
        lenenc(b"", &mut row);
        packets.push(row);
        packets.push(if deprecate_eof {
            ok_packet(0xFE, 0, 0, 0x0008, 0, "")
        } else {
            eof_packet(0x0008)
        });
        packets
    }

    #[test]
    fn text_result_set_with_either_terminator() {
        for deprecate_eof in [true, false] {
            let mut r = ResultReader::new(caps(deprecate_eof));
            let packets = result_set(deprecate_eof);
            let (last, head) = packets.split_last().unwrap();
            for p in head {
                assert_eq!(r.push(p).unwrap(), None);
            }
            let got = r.push(last).unwrap().unwrap();
            assert_eq!(
                got.result,
                QueryResult::Rows {
                    columns: vec!["id".into(), "v".into()],
                    rows: vec![
                        vec![Some(b"1".to_vec()), None],
                        vec![Some(b"2".to_vec()), Some(Vec::new())],
                    ],
                }
            );
            assert!(got.more_results, "deprecate_eof {deprecate_eof}");
        }
    }

    #[test]
    fn a_row_starting_with_a_long_value_is_not_the_terminator() {
        let mut r = ResultReader::new(caps(true));
        r.push(&[1]).unwrap();
        r.push(&column_def("big")).unwrap();
        let value = vec![b'x'; 1 << 24];
        let mut row = Vec::new();
        lenenc(&value, &mut row);
        assert_eq!(row[0], 0xFE);
        assert_eq!(r.push(&row).unwrap(), None);
        let got = r.push(&ok_packet(0xFE, 0, 0, 0, 0, "")).unwrap().unwrap();
        match got.result {
            QueryResult::Rows { rows, .. } => assert!(rows[0][0].as_deref() == Some(&value[..])),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_error_mid_result_set_is_the_server_error() {
        let mut r = ResultReader::new(caps(true));
        r.push(&[1]).unwrap();
        r.push(&column_def("n")).unwrap();
        let mut p = vec![0xFF];
        p.extend(1317u16.to_le_bytes());
        p.extend(b"#70100Query execution was interrupted");
        assert!(matches!(
            r.push(&p),
            Err(MysqlError::Server { code: 1317, .. })
        ));
    }

    #[test]
    fn rows_must_match_the_column_count() {
        let mut two = Vec::new();
        lenenc(b"a", &mut two);
        lenenc(b"b", &mut two);
        assert!(parse_text_row(&two, 2).is_ok());
        assert!(parse_text_row(&two, 1).is_err(), "bytes left over");
        assert!(parse_text_row(&two, 3).is_err(), "values missing");
        assert!(parse_text_row(&[0xFE, 1, 0, 0, 0, 0, 0, 0, 0], 1).is_err());
        assert!(parse_text_row(&[0xFF], 1).is_err());
    }

    #[test]
    fn local_infile_and_absurd_column_counts_are_refused() {
        for p in [&[0xFB, b'f'][..], &[0xFC, 0xFF, 0xFF], &[0], &[5, 5]] {
            let mut r = ResultReader::new(caps(true));
            assert!(r.push(p).is_err(), "{p:?}");
        }
    }
}
