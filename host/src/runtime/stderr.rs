//! A plugin's standard error, as host log lines: split into lines, each
//! escaped and cut like any plugin text and admitted by the pump's log
//! budget, so stderr cannot forge, flood or break (`--log-json`) the log.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};

use super::loglimit::LogLimiter;
use super::text::{PluginText, MAX_PLUGIN_TEXT};

/// The stderr of a pump's plugin instances.
pub(super) struct PluginStderr {
    pub pump: Arc<str>,
    pub logs: Arc<LogLimiter>,
}

impl IsTerminal for PluginStderr {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for PluginStderr {
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(Lines {
            pump: self.pump.clone(),
            logs: self.logs.clone(),
            line: Vec::new(),
            cut: 0,
        })
    }
}

/// Collects one line at a time, keeping at most [`MAX_PLUGIN_TEXT`] bytes
/// of it.
struct Lines {
    pump: Arc<str>,
    logs: Arc<LogLimiter>,
    line: Vec<u8>,
    /// Bytes of the current line beyond what is kept.
    cut: usize,
}

impl Lines {
    fn feed(&mut self, buf: &[u8]) {
        for chunk in buf.split_inclusive(|b| *b == b'\n') {
            let (body, ends) = match chunk.strip_suffix(b"\n") {
                Some(body) => (body, true),
                None => (chunk, false),
            };
            let take = body.len().min(MAX_PLUGIN_TEXT - self.line.len());
            self.line.extend_from_slice(&body[..take]);
            self.cut += body.len() - take;
            if ends {
                self.emit();
            }
        }
    }

    fn emit(&mut self) {
        if (!self.line.is_empty() || self.cut > 0) && self.logs.admit() {
            let text = PluginText::new(&String::from_utf8_lossy(&self.line));
            let pump = &*self.pump;
            if self.cut > 0 {
                tracing::warn!(target: "plugin", pump, stream = "stderr", "{text}… [{} bytes cut]", self.cut);
            } else {
                tracing::warn!(target: "plugin", pump, stream = "stderr", "{text}");
            }
        }
        self.line.clear();
        self.cut = 0;
    }
}

impl AsyncWrite for Lines {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.feed(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.emit();
        Poll::Ready(Ok(()))
    }
}

impl Drop for Lines {
    /// A last line without a newline is still logged.
    fn drop(&mut self) {
        self.emit();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines() -> Lines {
        Lines {
            pump: Arc::from("p"),
            logs: Arc::new(LogLimiter::new(
                "p",
                std::num::NonZeroU32::new(1).unwrap(),
                std::num::NonZeroU32::new(2).unwrap(),
            )),
            line: Vec::new(),
            cut: 0,
        }
    }

    #[test]
    fn lines_are_cut_and_rate_limited() {
        let mut l = lines();
        l.feed(&vec![b'x'; MAX_PLUGIN_TEXT + 10]);
        assert_eq!((l.line.len(), l.cut), (MAX_PLUGIN_TEXT, 10));
        l.feed(b"\nsecond\nthird\nfourth");
        // Two lines fit the burst; the third is counted, not logged.
        assert_eq!(l.logs.pending(), 1);
        assert_eq!(l.line, b"fourth");
    }
}
