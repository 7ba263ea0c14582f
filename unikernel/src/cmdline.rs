//! The guest's command-line options: whitespace-separated `key=value`
//! words. Unknown or malformed words are logged and ignored.
//!
//! - `mode=agent` (default): serve the agent protocol.
//! - `mode=echo`: write back every byte read from the console, as fast as
//!   possible (the throughput floor the agent is measured against).
//! - `mode=panic`: panic right after boot (tests the failure exit path).
//! - `exit-after=N` (echo mode): once `N` bytes have been echoed and sent,
//!   power off cleanly (tests the shutdown exit path).
//! - `exit-idle-ms=N` (echo mode): power off cleanly after `N` ms without
//!   input (tests deadlines: the LAPIC timer and the clock).

/// What the guest runs after boot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, defmt::Format)]
pub enum Mode {
    /// The agent (the default).
    Agent,
    /// Raw echo.
    Echo,
    /// A deliberate panic.
    Panic,
}

/// The parsed options.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Options {
    /// What to run.
    pub mode: Mode,
    /// Echo mode: power off after this many bytes.
    pub exit_after: Option<u64>,
    /// Echo mode: power off after this many milliseconds without input.
    pub exit_idle_ms: Option<u64>,
}

/// Parses the command line.
pub fn parse(cmdline: &[u8]) -> Options {
    let mut options = Options { mode: Mode::Agent, exit_after: None, exit_idle_ms: None };
    for word in cmdline.split(u8::is_ascii_whitespace).filter(|w| !w.is_empty()) {
        let (key, value) = match word.iter().position(|&b| b == b'=') {
            Some(at) => (&word[..at], &word[at + 1..]),
            None => (word, &[][..]),
        };
        match (key, value) {
            (b"mode", b"agent") => options.mode = Mode::Agent,
            (b"mode", b"echo") => options.mode = Mode::Echo,
            (b"mode", b"panic") => options.mode = Mode::Panic,
            (b"exit-after", digits) => match parse_u64(digits) {
                Some(n) => options.exit_after = Some(n),
                None => defmt::warn!("ignoring malformed option {=str}", printable(word)),
            },
            (b"exit-idle-ms", digits) => match parse_u64(digits) {
                Some(n) => options.exit_idle_ms = Some(n),
                None => defmt::warn!("ignoring malformed option {=str}", printable(word)),
            },
            // QEMU's microvm describes its virtio-mmio devices for Linux;
            // the guest finds them by scanning the slots itself.
            (b"virtio_mmio.device", _) => {}
            _ => defmt::warn!("ignoring unknown option {=str}", printable(word)),
        }
    }
    options
}

/// `bytes` as text for the log, or a placeholder if it is not UTF-8.
pub fn printable(bytes: &[u8]) -> &str {
    core::str::from_utf8(bytes).unwrap_or("(not UTF-8)")
}

/// A decimal `u64`; `None` if empty, not all digits, or too large.
fn parse_u64(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u64, |n, &d| {
        let digit = d.checked_sub(b'0').filter(|&v| v < 10)?;
        n.checked_mul(10)?.checked_add(u64::from(digit))
    })
}
