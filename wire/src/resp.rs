//! RESP2, the Redis wire protocol: encoding commands and parsing replies.
//! Pure byte work, no I/O. Shared by the `redis` sink plugin and the
//! reporter's workers, which each speak it over their own connection.

use std::fmt;

/// The largest bulk string or array we accept in a reply. Replies to the
/// commands this sink sends are tiny; a huge length means a confused peer,
/// and refusing it keeps a bad length from holding memory or the batch.
const MAX_REPLY_LEN: usize = 64 * 1024 * 1024;

/// Appends one command, an array of bulk strings, to `out`.
pub fn encode_command(out: &mut Vec<u8>, args: &[&[u8]]) {
    array_header(out, args.len());
    for arg in args {
        bulk(out, arg);
    }
}

/// Appends `*<n>\r\n`, the head of a command of `n` arguments whose bulk
/// strings follow.
pub fn array_header(out: &mut Vec<u8>, n: usize) {
    out.push(b'*');
    push_decimal(out, n);
    out.extend_from_slice(b"\r\n");
}

/// Appends one bulk string: `$<len>\r\n<bytes>\r\n`.
pub fn bulk(out: &mut Vec<u8>, bytes: &[u8]) {
    out.push(b'$');
    push_decimal(out, bytes.len());
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(bytes);
    out.extend_from_slice(b"\r\n");
}

fn push_decimal(out: &mut Vec<u8>, n: usize) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// One reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `+OK`
    Simple(String),
    /// `-ERR message`: the whole line, code first.
    Error(String),
    /// `:1`
    Integer(i64),
    /// `$3\r\nabc` (`None` for the null bulk string `$-1`).
    Bulk(Option<Vec<u8>>),
    /// `*2\r\n...` (`None` for the null array `*-1`).
    Array(Option<Vec<Reply>>),
}

impl Reply {
    /// The error code of an error reply (`WRONGTYPE`, `ERR`, ...).
    pub fn error_code(&self) -> Option<&str> {
        match self {
            Reply::Error(line) => Some(line.split(' ').next().unwrap_or("")),
            _ => None,
        }
    }
}

/// The peer sent something that is not RESP2; the connection is unusable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtocolError(pub String);

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Redis protocol error: {}", self.0)
    }
}

impl std::error::Error for ProtocolError {}

/// Parses one reply from the start of `buf`: the reply and the bytes it
/// took, or `None` when `buf` holds only part of it.
pub fn parse_reply(buf: &[u8]) -> Result<Option<(Reply, usize)>, ProtocolError> {
    let Some((line, mut used)) = line(buf)? else {
        return Ok(None);
    };
    let (&kind, rest) = line
        .split_first()
        .ok_or_else(|| ProtocolError("empty reply line".into()))?;
    let text = || {
        std::str::from_utf8(rest)
            .map(str::to_owned)
            .map_err(|_| ProtocolError("reply line is not UTF-8".into()))
    };
    let reply = match kind {
        b'+' => Reply::Simple(text()?),
        b'-' => Reply::Error(text()?),
        b':' => Reply::Integer(integer(rest)?),
        b'$' => match length(rest)? {
            None => Reply::Bulk(None),
            Some(len) => {
                let end = used + len + 2;
                if buf.len() < end {
                    return Ok(None);
                }
                if &buf[end - 2..end] != b"\r\n" {
                    return Err(ProtocolError("bulk string not ended by CRLF".into()));
                }
                let data = buf[used..end - 2].to_vec();
                used = end;
                Reply::Bulk(Some(data))
            }
        },
        b'*' => match length(rest)? {
            None => Reply::Array(None),
            Some(n) => {
                let mut items = Vec::with_capacity(n.min(1024));
                for _ in 0..n {
                    let Some((item, took)) = parse_reply(&buf[used..])? else {
                        return Ok(None);
                    };
                    items.push(item);
                    used += took;
                }
                Reply::Array(Some(items))
            }
        },
        other => {
            return Err(ProtocolError(format!(
                "unknown reply type byte 0x{other:02x}"
            )))
        }
    };
    Ok(Some((reply, used)))
}

/// The first CRLF-terminated line (without CRLF) and the bytes it took.
fn line(buf: &[u8]) -> Result<Option<(&[u8], usize)>, ProtocolError> {
    match buf.windows(2).position(|w| w == b"\r\n") {
        Some(at) => Ok(Some((&buf[..at], at + 2))),
        // A reply line is short; a long run without CRLF is not RESP.
        None if buf.len() > 64 * 1024 => Err(ProtocolError("reply line too long".into())),
        None => Ok(None),
    }
}

fn integer(digits: &[u8]) -> Result<i64, ProtocolError> {
    std::str::from_utf8(digits)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| ProtocolError(format!("bad integer {:?}", String::from_utf8_lossy(digits))))
}

/// A bulk or array length: `None` for `-1` (null).
fn length(digits: &[u8]) -> Result<Option<usize>, ProtocolError> {
    match integer(digits)? {
        -1 => Ok(None),
        n if n < 0 => Err(ProtocolError(format!("negative length {n}"))),
        n if n as u64 > MAX_REPLY_LEN as u64 => Err(ProtocolError(format!(
            "length {n} is beyond any reply we expect"
        ))),
        n => Ok(Some(n as usize)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(mut buf: &[u8]) -> Vec<Reply> {
        let mut out = Vec::new();
        while let Some((reply, used)) = parse_reply(buf).unwrap() {
            out.push(reply);
            buf = &buf[used..];
        }
        assert!(buf.is_empty(), "left over: {buf:?}");
        out
    }

    #[test]
    fn encodes_commands_as_arrays_of_bulk_strings() {
        let mut out = Vec::new();
        encode_command(&mut out, &[b"RPUSH", b"k", b"a\r\nb", b""]);
        assert_eq!(
            out,
            b"*4\r\n$5\r\nRPUSH\r\n$1\r\nk\r\n$4\r\na\r\nb\r\n$0\r\n\r\n".to_vec()
        );
        let payload: Vec<u8> = (0..=255).collect();
        let mut out = Vec::new();
        encode_command(&mut out, &[b"PUBLISH", b"c", &payload]);
        assert!(out.starts_with(b"*3\r\n$7\r\nPUBLISH\r\n$1\r\nc\r\n$256\r\n"));
        assert!(out.ends_with(&[254, 255, b'\r', b'\n']));
        // A command built a piece at a time is the same command.
        let mut pieces = Vec::new();
        array_header(&mut pieces, 3);
        for arg in [&b"PUBLISH"[..], b"c", &payload] {
            bulk(&mut pieces, arg);
        }
        assert_eq!(pieces, out);
    }

    #[test]
    fn parses_every_reply_type() {
        let replies = parse_all(
            b"+OK\r\n-WRONGTYPE Operation against a key\r\n:42\r\n:-3\r\n$3\r\na\r\n\r\n$-1\r\n$0\r\n\r\n*2\r\n$2\r\nid\r\n*1\r\n:1\r\n*-1\r\n*0\r\n",
        );
        assert_eq!(
            replies,
            vec![
                Reply::Simple("OK".into()),
                Reply::Error("WRONGTYPE Operation against a key".into()),
                Reply::Integer(42),
                Reply::Integer(-3),
                Reply::Bulk(Some(b"a\r\n".to_vec())),
                Reply::Bulk(None),
                Reply::Bulk(Some(Vec::new())),
                Reply::Array(Some(vec![
                    Reply::Bulk(Some(b"id".to_vec())),
                    Reply::Array(Some(vec![Reply::Integer(1)])),
                ])),
                Reply::Array(None),
                Reply::Array(Some(vec![])),
            ]
        );
        assert_eq!(replies[1].error_code(), Some("WRONGTYPE"));
        assert_eq!(replies[0].error_code(), None);
    }

    #[test]
    fn a_partial_reply_asks_for_more_at_every_cut() {
        let whole = b"*3\r\n:1\r\n$5\r\nhello\r\n+OK\r\n";
        for cut in 0..whole.len() {
            assert_eq!(parse_reply(&whole[..cut]).unwrap(), None, "cut at {cut}");
        }
        let (reply, used) = parse_reply(whole).unwrap().unwrap();
        assert_eq!(used, whole.len());
        assert!(matches!(reply, Reply::Array(Some(items)) if items.len() == 3));
    }

    #[test]
    fn garbage_is_a_protocol_error() {
        for bad in [
            &b"?x\r\n"[..],
            b"\r\n",
            b":12a\r\n",
            b"$-2\r\n",
            b"$3\r\nabcde\r\n",
            b"*99999999999\r\n",
            b"+\xff\r\n",
        ] {
            assert!(parse_reply(bad).is_err(), "{bad:?}");
        }
        assert!(parse_reply(&vec![b'+'; 70_000]).is_err());
    }
}
