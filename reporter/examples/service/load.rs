//! A small HTTP/1.1 client for loopback load: keep-alive connections,
//! `Content-Length` bodies only (what the example service sends). Used by
//! the example's `--demo`, the tests and the benchmark.

// Each user (example, tests, benchmark) uses part of this module.
#![allow(dead_code)]

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One keep-alive connection.
pub struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    req: Vec<u8>,
}

/// A response: status and body.
pub struct Reply {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Conn {
    pub async fn connect(addr: SocketAddr) -> io::Result<Conn> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Conn {
            stream,
            buf: Vec::with_capacity(4096),
            req: Vec::with_capacity(256),
        })
    }

    /// Sends one request and reads its response.
    pub async fn request(&mut self, method: &str, path: &str, body: &[u8]) -> io::Result<Reply> {
        self.req.clear();
        self.req.extend_from_slice(method.as_bytes());
        self.req.push(b' ');
        self.req.extend_from_slice(path.as_bytes());
        self.req
            .extend_from_slice(b" HTTP/1.1\r\nHost: localhost\r\nUser-Agent: pumphouse-load/1\r\n");
        if !body.is_empty() || method == "POST" {
            self.req
                .extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
        }
        self.req.extend_from_slice(b"\r\n");
        self.req.extend_from_slice(body);
        self.stream.write_all(&self.req).await?;
        self.read_reply().await
    }

    async fn read_reply(&mut self) -> io::Result<Reply> {
        let head_end = loop {
            if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                break i + 4;
            }
            self.fill().await?;
        };
        let head = std::str::from_utf8(&self.buf[..head_end])
            .map_err(|_| io::Error::other("response head is not UTF-8"))?;
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| io::Error::other(format!("bad status line in {head:?}")))?;
        let len: usize = head
            .lines()
            .find_map(|l| {
                let (name, value) = l.split_once(':')?;
                name.eq_ignore_ascii_case("content-length")
                    .then(|| value.trim().parse().ok())?
            })
            .ok_or_else(|| io::Error::other(format!("no Content-Length in {head:?}")))?;
        while self.buf.len() < head_end + len {
            self.fill().await?;
        }
        let body = self.buf[head_end..head_end + len].to_vec();
        self.buf.drain(..head_end + len);
        Ok(Reply { status, body })
    }

    async fn fill(&mut self) -> io::Result<()> {
        if self.stream.read_buf(&mut self.buf).await? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        Ok(())
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// What a load run did.
pub struct Load {
    pub requests: u64,
    pub errors: u64,
    pub elapsed: Duration,
}

impl Load {
    pub fn per_second(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }
}

/// `connections` keep-alive connections each sending `GET path` back to
/// back until `duration` has passed or `max_requests` were sent in all.
pub async fn run(
    addr: SocketAddr,
    path: &str,
    connections: usize,
    duration: Duration,
    max_requests: u64,
) -> io::Result<Load> {
    use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
    use std::sync::Arc;
    let budget = Arc::new(AtomicU64::new(max_requests));
    let path: Arc<str> = Arc::from(path);
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let mut conn = Conn::connect(addr).await?;
        let budget = Arc::clone(&budget);
        let path = Arc::clone(&path);
        tasks.push(tokio::spawn(async move {
            let (mut ok, mut errors) = (0u64, 0u64);
            while Instant::now() < deadline
                && budget
                    .fetch_update(Relaxed, Relaxed, |n| n.checked_sub(1))
                    .is_ok()
            {
                match conn.request("GET", &path, b"").await {
                    Ok(r) if r.status == 200 => ok += 1,
                    Ok(_) => errors += 1,
                    Err(_) => {
                        errors += 1;
                        break;
                    }
                }
            }
            (ok, errors)
        }));
    }
    let mut load = Load {
        requests: 0,
        errors: 0,
        elapsed: Duration::ZERO,
    };
    for t in tasks {
        let (ok, errors) = t.await.map_err(io::Error::other)?;
        load.requests += ok;
        load.errors += errors;
    }
    load.elapsed = started.elapsed();
    Ok(load)
}
