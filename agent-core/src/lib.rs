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
//! - **File times** are stamped when the change happens. Before the
//!   filesystem knows the wall clock ([`Filesystem::set_wall_clock`]) a
//!   stamp is monotonic nanoseconds since power-on, which the first clock
//!   given dates once; from then on stamps are Unix seconds and a later
//!   clock sync re-dates nothing. (An agent that never passes the clock
//!   on reports monotonic stamps converted with the latest sync; before
//!   the first sync, `modified` is `None`.)
//! - **Handshake timeout:** `core.init.resolved` is sent again every
//!   [`Config::ack_timeout_ns`] (1 s); after [`Config::ack_attempts`] (5)
//!   unanswered sends the agent asks for power-off
//!   ([`PowerOff::HandshakeTimeout`]).
//! - **Shutdown:** every open session is answered `ok: false` "shutdown:
//!   session aborted" (uncommitted writes are dropped), queued frames are
//!   sent, then the agent asks for power-off.
//! - **Protocol errors** get `core.error` on the offending id (or `ok:
//!   false` for stray write data) and the agent goes on; a peer whose
//!   generation is below 5 gets no `core.error`. Only frame-level
//!   corruption (a bad length prefix) ends the stream: the agent drops all
//!   sessions and input, and once the link has been quiet for
//!   [`RESYNC_QUIET_NS`] (a deadline of [`Agent::poll_timeout`]) it starts
//!   over with a new handshake ([`Agent::reset_stream`]).
//!
//! # The filesystem and Linux
//!
//! The [`Filesystem`] calls are the ones the reference agent makes on
//! Linux `std::fs`, with their semantics and errors: paths resolve
//! component by component as the kernel resolves them (`.`, `..`,
//! trailing `/`, symlinks in the middle followed, at most
//! [`MAX_SYMLINK_FOLLOWS`] per resolution, then `ELOOP`; a final symlink
//! followed or not as the call does), and an [`FsError`] prints as Rust's
//! `std::io::Error` prints the errno (`No such file or directory (os error
//! 2)`). `tests/tests/agent_conformance.rs` runs every call in random
//! sequences against a real Linux directory and compares each outcome and
//! error text. What still differs, in the [`ramfs`]:
//!
//! - **No permission checks.** Every caller acts as root, the reference
//!   agent's default identity: modes and owners are recorded and
//!   reported, never enforced. An [`Owner`] given to a call only owns
//!   what it creates (the reference switches the filesystem identity).
//! - **Directory sizes** are tmpfs's (40 bytes, and 20 per entry); the
//!   reference's root filesystem may report 4096.
//! - **No holes.** Zeros up to a write past the end, or up to a larger
//!   `set_len`, are stored: a large sparse file fails with `ENOSPC`.
//!   Space is the arena's; a copy shares its source's blocks until either
//!   is written through an open file.
//! - **Access times** follow `relatime` for reads through an open file
//!   and for `copy`'s source; path reads (`open_read`) and listings leave
//!   them alone.
//! - **Only files, directories and symlinks**: no hard links, devices,
//!   fifos or sockets, no extended attributes, one filesystem (no
//!   `EXDEV`).
//! - **`remove_dir_all` of `/`** (or of a path that resolves to it) fails
//!   with `EBUSY` before removing anything; Linux would empty what it can.
//! - **`/` starts empty** unless [`ramfs::Ramfs::make_standard_dirs`]
//!   makes [`ramfs::STANDARD_DIRS`] (`/tmp` and `/var/tmp` 1777, `/root`
//!   700, `/home` and `/var` 755), as the reference's Linux guest has them.
//! - **Open files and directories are the entries opened.** A set-attrs
//!   on an open file sets its times without looking up its path again,
//!   and the metadata of an open directory is the directory opened; the
//!   reference looks the path up again for both (and fails, or reports
//!   another entry, once it was renamed or removed). A length beyond
//!   `i64::MAX` is `EINVAL` where Rust reports its own conversion error.
//! - **The seed-era `copy`/`rename`** ([`MissingParents::Create`]) check
//!   the source before making the destination's parents and remove the
//!   parents they made if they then fail; the seed-era reference made them
//!   first and left them. A path `write` stays all-or-nothing at its end,
//!   and a path read keeps the content it opened.
//! - **Bounds**: names up to 255 bytes, paths and symlink targets up to
//!   4095 (Linux's), [`ramfs::MAX_ENTRIES`] entries, [`ramfs::MAX_OPEN_FILES`]
//!   open files and directories (`ENFILE` beyond), the arena's blocks.

#![no_std]
#![forbid(unsafe_code)]

mod agent;
pub mod driver;
mod error;
mod fs;
pub mod handles;
mod log;
mod outbox;
pub mod path;
pub mod ramfs;

pub use agent::{
    Agent, BufferError, CURRENT_FS_GENERATION, Config, Event, INPUT_RESERVE, MAX_SESSIONS_PER_CLIENT, MIN_OUTBOX,
    MIN_RX_BUFFER, PowerOff, READ_DIR_BATCH_MAX, RESERVE_CLIENT_MAX, RESYNC_QUIET_NS, SESSION_RESERVE, State, Stats,
    WRITE_IDLE_TIMEOUT_NS,
};
pub use fs::{
    AttrError, AttrStep, EntryKind, Filesystem, FsError, MAX_SYMLINK_FOLLOWS, Metadata, MissingParents, Mtime,
    OpenOptions, Owner, SetAttrs, UMASK, errno, mode, real_path,
};

/// Defects the simulator plants in the agent to prove its checks find them
/// (each is how an earlier agent behaved).
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PlantedBug {
    /// None: the product.
    #[default]
    None,
    /// Host-only messages take effect on any id.
    HostMessagesAnyId,
    /// A relay client may hold any number of sessions.
    NoSessionQuota,
    /// A corrupt stream is taken for a fresh one at once, without waiting
    /// for the link to be quiet.
    ResyncWithoutQuiet,
    /// A disconnected relay client's handles stay open, and the next
    /// client of its slot may use them.
    HandlesSurviveDisconnect,
}

/// Reads and writes in flight at once. Each holds a reader or a staged
/// write; 256 covers many clients with a few streams each, in ~16 KiB.
pub const MAX_SESSIONS: usize = 256;

/// This crate's version, reported as `agent_version` in `core.ready`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
