//! Cancelling a transfer from another thread: a shared flag, and reader
//! and writer adapters that fail with [`Cancelled`] once it is set.
//!
//! A transfer checks the flag each time it moves a chunk, so a cancel
//! takes effect within one chunk ([`wire::FS_CHUNK_SIZE`] at most). The
//! call is then dropped, which the client turns into "forget this id":
//! frames the guest still sends for it are counted as strays and dropped.

use std::io::{self, Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::error::Error;

/// A cancel flag shared between the thread running a command and the one
/// watching for Ctrl-C. Clones share the flag.
#[derive(Debug, Clone, Default)]
pub struct Cancel {
    flag: Arc<AtomicBool>,
}

impl Cancel {
    /// A flag that is not set.
    pub fn new() -> Cancel {
        Cancel::default()
    }

    /// Sets the flag: transfers through [`CancelReader`] and
    /// [`CancelWriter`] fail at their next chunk.
    pub fn cancel(&self) {
        self.flag.store(true, Ordering::SeqCst);
    }

    /// Clears the flag (before the next command).
    pub fn reset(&self) {
        self.flag.store(false, Ordering::SeqCst);
    }

    /// Whether the flag is set.
    pub fn is_cancelled(&self) -> bool {
        self.flag.load(Ordering::SeqCst)
    }

    fn check(&self) -> io::Result<()> {
        if self.is_cancelled() { Err(io::Error::other(Cancelled)) } else { Ok(()) }
    }
}

/// The error a cancelled transfer fails with (inside an [`io::Error`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("cancelled")]
pub struct Cancelled;

/// Whether `e` is a transfer that was cancelled (rather than one that failed).
pub fn is_cancelled(e: &Error) -> bool {
    match e {
        Error::Io(io) => io.get_ref().is_some_and(|inner| inner.is::<Cancelled>()),
        _ => false,
    }
}

/// A reader that fails with [`Cancelled`] once its flag is set.
pub struct CancelReader<R> {
    inner: R,
    cancel: Cancel,
}

impl<R> CancelReader<R> {
    /// Wraps `inner`.
    pub fn new(inner: R, cancel: &Cancel) -> CancelReader<R> {
        CancelReader { inner, cancel: cancel.clone() }
    }
}

impl<R: Read> Read for CancelReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.cancel.check()?;
        self.inner.read(buf)
    }
}

/// A writer that fails with [`Cancelled`] once its flag is set.
pub struct CancelWriter<W> {
    inner: W,
    cancel: Cancel,
}

impl<W> CancelWriter<W> {
    /// Wraps `inner`.
    pub fn new(inner: W, cancel: &Cancel) -> CancelWriter<W> {
        CancelWriter { inner, cancel: cancel.clone() }
    }

    /// The wrapped writer.
    pub fn into_inner(self) -> W {
        self.inner
    }
}

impl<W: Write> Write for CancelWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.cancel.check()?;
        self.inner.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.cancel.check()?;
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_set_flag_stops_reads_and_writes_and_is_recognised() {
        let cancel = Cancel::new();
        let mut out = CancelWriter::new(Vec::new(), &cancel);
        let mut input = CancelReader::new(&b"abcdef"[..], &cancel);
        let mut buf = [0u8; 3];
        assert_eq!(input.read(&mut buf).unwrap(), 3);
        out.write_all(&buf).unwrap();
        cancel.clone().cancel();
        let read = input.read(&mut buf).unwrap_err();
        let write = out.write_all(b"x").unwrap_err();
        assert!(is_cancelled(&Error::Io(read)));
        assert!(is_cancelled(&Error::Io(write)));
        assert!(!is_cancelled(&Error::Io(io::ErrorKind::Other.into())));
        assert!(!is_cancelled(&Error::Timeout(std::time::Duration::from_secs(1))));
        cancel.reset();
        out.write_all(b"z").unwrap();
        assert_eq!(out.into_inner(), b"abcz");
    }
}
