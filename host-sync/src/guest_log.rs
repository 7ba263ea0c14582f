//! The guest's log: defmt frames from the debug console, decoded with the
//! guest ELF's table and forwarded to the host's log sink.

use crate::sync::lock;
use std::collections::VecDeque;
use std::io::Read;
use std::sync::{Arc, Mutex};

/// Lines of guest log kept for error reports.
pub const LOG_TAIL_LINES: usize = 64;

/// Where decoded guest log lines go.
#[derive(Clone, Default)]
pub enum GuestLog {
    /// Dropped (still kept in the tail for error reports).
    #[default]
    Quiet,
    /// Printed to standard error, prefixed with `guest: `.
    Stderr,
    /// Handed to a callback.
    Callback(Arc<dyn Fn(&str) + Send + Sync>),
}

impl std::fmt::Debug for GuestLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            GuestLog::Quiet => "Quiet",
            GuestLog::Stderr => "Stderr",
            GuestLog::Callback(_) => "Callback",
        })
    }
}

/// The last lines of guest log.
#[derive(Debug, Default)]
pub struct LogTail {
    lines: Mutex<VecDeque<String>>,
}

impl LogTail {
    fn push(&self, line: String) {
        let mut lines = lock(&self.lines);
        if lines.len() == LOG_TAIL_LINES {
            lines.pop_front();
        }
        lines.push_back(line);
    }

    /// The kept lines, oldest first.
    pub fn lines(&self) -> Vec<String> {
        lock(&self.lines).iter().cloned().collect()
    }
}

/// Decodes the log stream until it ends. Without a defmt table in the ELF,
/// the bytes are read and dropped.
pub fn pump(elf: &[u8], mut input: impl Read, sink: &GuestLog, tail: &LogTail) {
    let table = defmt_decoder::Table::parse(elf).ok().flatten();
    let mut decoder = table.as_ref().map(|t| t.new_stream_decoder());
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let Some(decoder) = decoder.as_mut() else { continue };
        decoder.received(&buf[..n]);
        loop {
            match decoder.decode() {
                Ok(frame) => {
                    let line = frame.display(false).to_string();
                    match sink {
                        GuestLog::Quiet => {}
                        GuestLog::Stderr => eprintln!("guest: {line}"),
                        GuestLog::Callback(f) => f(&line),
                    }
                    tail.push(line);
                }
                Err(defmt_decoder::DecodeError::UnexpectedEof) => break,
                Err(defmt_decoder::DecodeError::Malformed) => {
                    tail.push("(malformed guest log frame)".into());
                    break;
                }
            }
        }
    }
}
