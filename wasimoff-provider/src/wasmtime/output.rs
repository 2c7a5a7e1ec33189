//! Captured stdout and stderr with a cap: [`CappedOutput`] keeps the first `cap` bytes a guest
//! writes, counts and discards the rest and remembers that it cut something.
//!
//! Writes past the cap still succeed from the guest's point of view, so a guest flooding its
//! output runs on (or ends) normally instead of failing on a write error, and the host never
//! holds more than `cap` bytes per stream.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use bytes::Bytes;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// What one stream captured.
#[derive(Debug, Default)]
struct Captured {
    kept: Vec<u8>,
    truncated: bool,
}

/// An in-memory output stream keeping at most `cap` bytes; clones share the buffer.
#[derive(Clone, Debug)]
pub(crate) struct CappedOutput {
    cap: usize,
    captured: Arc<Mutex<Captured>>,
}

impl CappedOutput {
    /// A stream keeping at most `cap` bytes.
    pub(crate) fn new(cap: usize) -> Self {
        CappedOutput {
            cap,
            captured: Arc::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Captured> {
        // A poisoned lock only means a writer panicked mid-append; the bytes are still usable.
        self.captured
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Appends what fits under the cap and flags the rest as cut.
    fn append(&self, bytes: &[u8]) {
        let mut captured = self.lock();
        let room = self.cap.saturating_sub(captured.kept.len());
        if bytes.len() > room {
            captured.truncated = true;
        }
        let take = bytes.len().min(room);
        captured.kept.extend_from_slice(&bytes[..take]);
    }

    /// The kept bytes and whether anything was cut.
    pub(crate) fn take(&self) -> (Bytes, bool) {
        let mut captured = self.lock();
        let kept = std::mem::take(&mut captured.kept);
        (Bytes::from(kept), captured.truncated)
    }
}

impl IsTerminal for CappedOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for CappedOutput {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for CappedOutput {
    async fn ready(&mut self) {}
}

#[wasmtime_wasi::async_trait]
impl OutputStream for CappedOutput {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.append(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        // Always ready; anything past the cap is discarded in `write`.
        Ok(1 << 20)
    }
}

impl tokio::io::AsyncWrite for CappedOutput {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.append(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_up_to_the_cap_and_flags_the_rest() {
        let out = CappedOutput::new(5);
        out.append(b"abc");
        assert_eq!(out.take(), (Bytes::from_static(b"abc"), false));
        let out = CappedOutput::new(5);
        out.append(b"abc");
        out.append(b"defg");
        out.append(b"hij");
        assert_eq!(out.take(), (Bytes::from_static(b"abcde"), true));
        let out = CappedOutput::new(0);
        out.append(b"");
        assert_eq!(out.take(), (Bytes::new(), false));
    }
}
