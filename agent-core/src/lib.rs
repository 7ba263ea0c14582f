//! `agent-core`: the picosandbox guest agent, `#![no_std]` and heap-free.
//!
//! - [`Agent`]: the sans-IO state machine that speaks the whole `core.*` and
//!   `core.fs.*` surface (bytes in, bytes out, time passed in).
//! - [`driver`]: the thin blocking loop around it, over an
//!   `embedded_io` link, a [`Clock`](driver::Clock) and a
//!   [`Platform`](driver::Platform).
//! - [`Filesystem`] and [`ramfs`]: what the agent serves, and a bounded
//!   in-memory implementation over one arena.
//!
//! The same code runs in the unikernel, in-process in tests and under the
//! deterministic simulator.
//!
//! # Semantics worth knowing
//!
//! - **Writes are atomic.** A write's content becomes visible only at its
//!   end-of-stream chunk; an aborted, failed or disconnected write leaves
//!   the previous file intact. (The reference agent truncates the file
//!   when the write opens.)
//! - **Reads are snapshots.** A read streams the content the file had when
//!   the read opened, even if the file is replaced or removed meanwhile.
//! - **File times** are kept as monotonic nanoseconds since power-on and
//!   reported as Unix seconds once the host has sent `core.clock.sync`
//!   (also for files made before it); before the first sync, `modified`
//!   is `None`.
//! - **Handshake timeout:** `core.init.resolved` is sent again every
//!   [`Config::ack_timeout_ns`] (1 s); after [`Config::ack_attempts`] (5)
//!   unanswered sends the agent asks for power-off
//!   ([`PowerOff::HandshakeTimeout`](driver::PowerOff)).
//! - **Shutdown:** every open session is answered `ok: false` "shutdown:
//!   session aborted" (uncommitted writes are dropped), queued frames are
//!   sent, then the agent asks for power-off.
//! - **Protocol errors** get `core.error` on the offending id (or `ok:
//!   false` for stray write data) and the agent goes on; a peer whose
//!   generation is below 5 gets no `core.error`. Only frame-level
//!   corruption (a bad length prefix) ends the stream: the agent drops all
//!   sessions and input and waits for [`Agent::reset_stream`]; the
//!   [`driver`] calls it once the link has been quiet for
//!   [`driver::RESYNC_QUIET_NS`], and the handshake starts again.

#![no_std]
#![forbid(unsafe_code)]

mod agent;
pub mod driver;
mod fs;
mod log;
mod outbox;
pub mod path;
pub mod ramfs;

pub use agent::{Agent, BufferError, Config, Event, INPUT_RESERVE, MIN_OUTBOX, MIN_RX_BUFFER, State, Stats};
pub use fs::{EntryKind, Filesystem, FsError, Metadata, Mtime, mode};

/// Reads and writes in flight at once. Each holds a reader or a staged
/// write; 256 covers many clients with a few streams each, in ~16 KiB.
pub const MAX_SESSIONS: usize = 256;

/// This crate's version, reported as `agent_version` in `core.ready`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
