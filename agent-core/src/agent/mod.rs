//! The sans-IO agent: bytes in, bytes out, time passed in.
//!
//! The [`Agent`] never blocks and never calls the OS. A driver feeds it the
//! bytes it reads ([`Agent::rx_space`] + [`Agent::rx_commit`], or
//! [`Agent::receive`]), writes out what [`Agent::poll_transmit`] returns
//! (then [`Agent::transmitted`]), calls [`Agent::handle_timeout`] at
//! [`Agent::poll_timeout`], and applies the [`Event`]s it emits.
//!
//! # Sending order
//!
//! Control frames (responses, errors, pongs) wait in the outbox; read data
//! is produced on demand, one chunk at a time, straight from the
//! filesystem. The two take turns: every control frame queued while a
//! chunk was being sent goes out before the next chunk, and read sessions
//! take chunks round-robin. A `Stat` behind a 100 MiB read waits for at
//! most one chunk.
//!
//! # Two filesystem dialects
//!
//! Seed-era (path-based) and current (0.7.13, handle-based) requests share
//! the `core.fs.*` types. A request's shape picks its meaning (see the
//! `wire` crate docs); for the shapes both share, the request's `v` picks
//! the answer: from [`CURRENT_FS_GENERATION`] on, 9-field entries and
//! `Copy`/`Rename` without missing-parent creation. Paths go to the
//! [`Filesystem`] as sent and answers echo them. A raw-bulk offer is
//! declined as a peer without bulk support declines it: ignored, the op
//! served with `core.fs.data`. Open files and directories live in the
//! handle table ([`crate::handles`]), owned per relay client.
//!
//! # Bounds and what happens at them
//!
//! - Handles: [`MAX_HANDLES_PER_CLIENT`] per relay client (`EMFILE`
//!   beyond), the lent table (at most [`crate::handles::MAX_HANDLES`]) and
//!   [`crate::handles::MAX_OPEN_DIRS`] directories in all (`ENFILE`); the
//!   last sixteenth of the table and the last eighth of the directory
//!   places go only to clients holding few
//!   ([`crate::handles::HANDLE_RESERVE_SHARE`]), so a few clients cannot
//!   leave the others none. `ReadDir` answers at most
//!   [`READ_DIR_BATCH_MAX`] entries.
//!
//! - Sessions (reads and writes in flight): [`MAX_SESSIONS`] in all. Each
//!   relay client (the owner of an id's relay slot, [`wire::relay`]) holds
//!   at most [`MAX_SESSIONS_PER_CLIENT`], and the last [`SESSION_RESERVE`]
//!   sessions go only to clients holding fewer than
//!   [`RESERVE_CLIENT_MAX`]: one client, or a few, cannot take every
//!   session. A session over a bound is answered `ok: false` naming it.
//! - Read data to a relay client the relay reports as behind
//!   (`picosandbox.relay.flow`, paused) waits until it is resumed or the
//!   client leaves; other sessions' chunks and every small answer go on.
//! - A write that receives no data for [`Config::write_idle_timeout_ns`]
//!   ([`WRITE_IDLE_TIMEOUT_NS`] by default) is aborted: `ok: false`, its
//!   partial content dropped, the old file kept.
//! - Receive buffer: one frame of [`wire::MAX_FRAME`]; when frames pile up
//!   because the outbox is full, [`Agent::rx_space`] shrinks to nothing and
//!   the driver stops reading (backpressure).
//! - Outbox: the lent transmit buffer. An input frame is handled only when
//!   [`INPUT_RESERVE`] bytes are free, which also covers the last response
//!   of every open session. A `List` response larger than the outbox can
//!   ever hold is answered `ok: false` "too many entries for one frame".
//!
//! # Messages only the host may send
//!
//! `core.init.ack`, `core.clock.sync`, `core.relay.client.disconnected` and
//! `picosandbox.relay.flow` take effect only on id 0. A relay forwards a client's frames only on the
//! client's own ids, and on id 0 only with the `SHUTDOWN` flag, which the
//! agent accepts on `core.shutdown` alone (flags must match the type): so
//! no relay client can forge them. On any other id they are answered
//! `core.error` (`invalid_session`) and ignored.

use core::cell::RefCell;
use core::fmt::Write as _;

use heapless::String;
use wire::{
    Body, CORE_ERROR_GENERATION, CoreError, CoreErrorKind, DATA_FRAME_HEAD_MAX, EntryExtra, EntrySource, Envelope,
    FsEntryInfo, FsEntryKind, FsOp, FsOpenOptions, FsResponse, FsResponseData, FsSetAttrs, InitResolved, MessageType,
    Pong, Ready, RelayClientDisconnected, RelayFlow, ResolvedUser,
};

use crate::fs::{AttrError, Filesystem, FsError, Metadata, MissingParents, Mtime, OpenOptions, Owner, SetAttrs};
use crate::handles::{Full, HandleMemory, Handles, MAX_HANDLES_PER_CLIENT, Open};
use crate::outbox::Outbox;
use crate::path::{MAX_NAME_LEN, MAX_PATH_LEN, PathBuf};
use crate::{MAX_SESSIONS, PlantedBug, log};

mod chunks;
mod dispatch;
mod rx;
mod sessions;

/// The lowest request `v` whose shared-shape filesystem ops (`List`,
/// `Remove`, `Copy`, `Rename`) get the current dialect: 9-field entries,
/// and `Copy`/`Rename` that do not make missing destination parents. This
/// contract's surface is generation 5 (our host writes `v = 5`); a peer
/// writing a later generation (the 0.7.13 client writes 10 on every frame)
/// is a current one. Ops whose shape exists only in the current dialect
/// get its answers whatever their `v`.
pub const CURRENT_FS_GENERATION: u8 = wire::PROTOCOL_GENERATION + 1;

/// Entries one `ReadDir` answers at most, and without a `limit` (the
/// reference's default): a larger `limit` gets this many, and the caller
/// reads on until an empty batch. Each is held with its name (on the
/// stack, about 43 KiB for a full batch) while the batch is built.
pub const READ_DIR_BATCH_MAX: usize = 128;

/// Outbox bytes that must be free before an input frame is handled: the
/// largest single response to it (a `Stat` with a 4 KiB path, an error),
/// plus the last response of every session that could end meanwhile.
pub const INPUT_RESERVE: usize = RESPONSE_MAX + MAX_SESSIONS * SESSION_END_MAX;

/// Sessions one relay client (one slot's id range) may hold at once.
pub const MAX_SESSIONS_PER_CLIENT: usize = 64;

/// Sessions kept for clients holding fewer than [`RESERVE_CLIENT_MAX`]:
/// when only this many are free, bigger holders get no more.
pub const SESSION_RESERVE: usize = 32;

/// A client holding fewer sessions than this may use the reserve.
pub const RESERVE_CLIENT_MAX: usize = 4;

/// How long a write may go without data before it is aborted (30 s: far
/// longer than any pause of a live sender, short enough that an abandoned
/// write does not hold its session and its staged blocks for long).
pub const WRITE_IDLE_TIMEOUT_NS: u64 = 30_000_000_000;

/// After a frame-level corruption, how long the link must stay quiet
/// before the stream counts as fresh and the handshake starts again: a
/// reconnecting host sends nothing until it sees `core.init.resolved`.
pub const RESYNC_QUIET_NS: u64 = 100_000_000;

const _: () = assert!(MAX_SESSIONS_PER_CLIENT + SESSION_RESERVE <= MAX_SESSIONS);
const _: () = assert!(RESERVE_CLIENT_MAX <= MAX_SESSIONS_PER_CLIENT);

/// The largest encoding of one entry apart from its path (keys, kind and
/// nine numbers at their widest).
const ENTRY_OVERHEAD_MAX: usize = 160;

/// The largest response to one input frame, other than a `List`.
const RESPONSE_MAX: usize = 8 * 1024;

/// The largest frame that ends a session (`ok: false` with a short message).
const SESSION_END_MAX: usize = 128;

/// The smallest outbox an agent accepts: room for [`INPUT_RESERVE`] and
/// as much again for `List` responses.
pub const MIN_OUTBOX: usize = 2 * INPUT_RESERVE;

/// Receive buffer needed: one whole frame of the largest size.
pub const MIN_RX_BUFFER: usize = wire::MAX_FRAME_BYTES;

/// Bytes before the receive buffer compacts a partial frame that still
/// fits where it is (moving a small remainder is cheap).
const RX_COMPACT_BELOW: usize = 64 * 1024;

/// Longest error or log message the agent formats.
const MESSAGE_MAX: usize = 160;

/// Agent settings.
#[derive(Debug, Clone, Copy)]
pub struct Config {
    /// The user reported in `core.init.resolved`.
    pub default_user: ResolvedUser,
    /// How long to wait for `core.init.ack` before sending
    /// `core.init.resolved` again.
    pub ack_timeout_ns: u64,
    /// How many times `core.init.resolved` is sent before the agent gives
    /// up and asks for power-off ([`PowerOff::HandshakeTimeout`]).
    pub ack_attempts: u32,
    /// Bytes per `core.fs.data` chunk of a read (at most [`wire::FS_CHUNK_SIZE`]).
    pub read_chunk_size: usize,
    /// Nanoseconds from power-on to the platform's entry point, reported
    /// as `boot_time_ns`.
    pub boot_time_ns: u64,
    /// Reported as `agent_version`.
    pub agent_version: &'static str,
    /// How long a write may receive nothing before it is aborted.
    pub write_idle_timeout_ns: u64,
    /// A defect planted on purpose, so the simulator can show that it
    /// catches it. Always [`PlantedBug::None`] in the product.
    #[doc(hidden)]
    pub planted: PlantedBug,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            default_user: ResolvedUser { uid: 0, gid: 0 },
            ack_timeout_ns: 1_000_000_000,
            ack_attempts: 5,
            read_chunk_size: wire::FS_CHUNK_SIZE,
            boot_time_ns: 0,
            agent_version: crate::VERSION,
            write_idle_timeout_ns: WRITE_IDLE_TIMEOUT_NS,
            planted: PlantedBug::None,
        }
    }
}

/// Why the agent asks the platform to power off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(all(feature = "defmt", target_os = "none"), derive(defmt::Format))]
pub enum PowerOff {
    /// The host sent `core.shutdown`: a clean exit.
    Shutdown,
    /// The host never answered the handshake: a failed boot.
    HandshakeTimeout,
}

/// Something the driver must do for the agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// Set the platform's wall clock to this many Unix nanoseconds.
    SetWallClock(u64),
    /// Flush the link, then power off.
    PowerOff(PowerOff),
}

/// Where the agent is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Created; [`Agent::start`] not called yet.
    Idle,
    /// `core.init.resolved` sent; waiting for `core.init.ack`.
    AwaitingAck {
        /// Times `core.init.resolved` was sent.
        attempts: u32,
        /// When to send it again (or give up).
        deadline_ns: u64,
    },
    /// Serving.
    Ready,
    /// The stream was corrupt at the frame level: input is discarded until
    /// the link has been quiet for [`RESYNC_QUIET_NS`], then the agent
    /// starts over ([`Agent::handle_timeout`] calls [`Agent::reset_stream`]).
    AwaitingStream {
        /// When the last input byte was discarded (or the corruption seen).
        quiet_since_ns: u64,
    },
    /// `core.shutdown` received: draining the outbox, then power-off.
    ShuttingDown,
    /// Power-off requested; nothing more happens.
    Off,
}

/// Counters, for tests and the guest log.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Complete frames received and handled (a frame deferred for outbox
    /// room counts once, when it is handled).
    pub frames_received: u64,
    /// `core.error` frames sent.
    pub core_errors_sent: u64,
    /// Errors that could not be reported (peer generation below 5).
    pub core_errors_suppressed: u64,
    /// Frame-level corruptions (each ends a stream).
    pub stream_errors: u64,
    /// Fresh streams started after a corruption ([`Agent::reset_stream`]).
    pub stream_resets: u64,
    /// Sessions open at most at once.
    pub sessions_peak: usize,
    /// Bytes of read data sent.
    pub read_bytes: u64,
    /// Bytes of write data received.
    pub write_bytes: u64,
}

/// Why the agent cannot be built with the given buffers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BufferError {
    /// The receive buffer is smaller than [`MIN_RX_BUFFER`].
    RxTooSmall,
    /// The transmit buffer is smaller than [`MIN_OUTBOX`].
    OutboxTooSmall,
}

/// A read or write in flight.
enum Session<F: Filesystem> {
    Read {
        id: u32,
        /// `None` while a chunk of this read is being sent (the chunk holds it).
        reader: Option<F::Reader>,
        size: u64,
        offset: u64,
    },
    Write {
        id: u32,
        writer: F::Writer,
        mode: Option<u32>,
        /// When the write last received data (or opened).
        active_ns: u64,
    },
    /// `Read{handle}`: chunks of an open file's current content.
    HandleRead {
        id: u32,
        handle: u64,
        /// The next byte to send.
        offset: u64,
        /// Where the read stops (the size when it started, or `offset + len`).
        end: u64,
        /// Whether a chunk of this read is being sent.
        sending: bool,
    },
    /// `Write{handle}`: chunks written at `offset` as they come.
    HandleWrite {
        id: u32,
        handle: u64,
        offset: u64,
        /// Bytes the request announced, if any.
        expected: Option<u64>,
        received: u64,
        /// When the write last received data (or opened).
        active_ns: u64,
    },
}

impl<F: Filesystem> Session<F> {
    fn id(&self) -> u32 {
        match self {
            Session::Read { id, .. }
            | Session::Write { id, .. }
            | Session::HandleRead { id, .. }
            | Session::HandleWrite { id, .. } => *id,
        }
    }
}

/// A `core.fs.data` frame of a read being sent: its head, then `len`
/// bytes read from the filesystem as they are sent.
struct Chunk<R> {
    id: u32,
    source: Source<R>,
    /// File offset of the chunk's first byte.
    offset: u64,
    len: usize,
    head: [u8; DATA_FRAME_HEAD_MAX],
    head_len: usize,
    /// Bytes of the frame (head included) already sent.
    sent: usize,
    /// Set when the filesystem failed mid-frame: the rest is zeros and the
    /// read ends with `ok: false`.
    failed: bool,
}

/// Where a chunk's bytes come from.
enum Source<R> {
    /// A path read's snapshot.
    Snapshot(R),
    /// An open file (looked up again for every piece: it may be closed).
    Handle(u64),
}

/// Zeros to finish a data frame whose source failed mid-frame, sent a
/// piece at a time (small: this lives in the guest image).
static ZEROS: [u8; 256] = [0; 256];

/// The receive buffer: whole frames are decoded in place.
struct Rx<'b> {
    buf: &'b mut [u8],
    start: usize,
    filled: usize,
}

/// Everything but the receive buffer, so a frame borrowed from it can be
/// handled with `&mut` access to the rest.
struct Core<'b, F: Filesystem> {
    fs: F,
    config: Config,
    state: State,
    out: Outbox<'b>,
    sessions: heapless::Vec<Session<F>, MAX_SESSIONS>,
    handles: Handles<'b, F>,
    /// The time of the frame being handled (handle reads stamp atime).
    now_ns: u64,
    chunk: Option<Chunk<F::Reader>>,
    /// Id of the read session that sent the last chunk (round-robin).
    last_read_id: u32,
    /// Id ranges whose read data waits (`picosandbox.relay.flow`): a relay
    /// client that fell behind. One per relay slot at most.
    paused: heapless::Vec<(u32, u32), { wire::relay::RELAY_SLOTS }>,
    events: heapless::Deque<Event, 4>,
    /// (monotonic ns, Unix ns) at the last `core.clock.sync`.
    wall: Option<(u64, u64)>,
    /// `v` of the handshake's `core.init.ack`.
    peer_generation: Option<u8>,
    start_ns: u64,
    stats: Stats,
}

/// The guest agent.
pub struct Agent<'b, F: Filesystem> {
    rx: Rx<'b>,
    core: Core<'b, F>,
    /// Scratch paths for answers (kept here, not on the stack: 2 x 4 KiB).
    paths: [PathBuf; 2],
}

/// What became of one input frame.
enum Handled {
    Done,
    /// Not now: the response does not fit the outbox yet.
    Later,
}

impl<'b, F: Filesystem> Agent<'b, F> {
    /// An agent serving `fs`, receiving into `rx` (at least
    /// [`MIN_RX_BUFFER`] bytes) and queuing control frames in `tx` (at
    /// least [`MIN_OUTBOX`] bytes), without a handle table: `OpenFile` and
    /// `OpenDir` answer "Too many open files in system".
    pub fn new(fs: F, rx: &'b mut [u8], tx: &'b mut [u8], config: Config) -> Result<Self, BufferError> {
        Self::build(fs, rx, tx, None, config)
    }

    /// [`Agent::new`] with a handle table for the current dialect's open
    /// files and directories.
    pub fn with_handles(
        fs: F,
        rx: &'b mut [u8],
        tx: &'b mut [u8],
        handles: HandleMemory<'b, F>,
        config: Config,
    ) -> Result<Self, BufferError> {
        Self::build(fs, rx, tx, Some(handles), config)
    }

    fn build(
        fs: F,
        rx: &'b mut [u8],
        tx: &'b mut [u8],
        handles: Option<HandleMemory<'b, F>>,
        config: Config,
    ) -> Result<Self, BufferError> {
        if rx.len() < MIN_RX_BUFFER {
            return Err(BufferError::RxTooSmall);
        }
        if tx.len() < MIN_OUTBOX {
            return Err(BufferError::OutboxTooSmall);
        }
        let config = Config { read_chunk_size: config.read_chunk_size.clamp(1, wire::FS_CHUNK_SIZE), ..config };
        Ok(Agent {
            rx: Rx { buf: rx, start: 0, filled: 0 },
            core: Core {
                fs,
                config,
                state: State::Idle,
                out: Outbox::new(tx),
                sessions: heapless::Vec::new(),
                handles: Handles::new(handles),
                now_ns: 0,
                chunk: None,
                last_read_id: 0,
                paused: heapless::Vec::new(),
                events: heapless::Deque::new(),
                wall: None,
                peer_generation: None,
                start_ns: 0,
                stats: Stats::default(),
            },
            paths: [PathBuf::new(), PathBuf::new()],
        })
    }

    /// Lends the handle table's memory to an agent built without it, for a
    /// guest that sets the table up once `core.ready` is out instead of
    /// before (see [`driver::run_with`](crate::driver::run_with)): until
    /// then `OpenFile` and `OpenDir` answer "Too many open files in system".
    ///
    /// # Panics
    ///
    /// If a handle is open (the table it replaces must be empty).
    pub fn lend_handles(&mut self, memory: HandleMemory<'b, F>) {
        assert!(self.core.handles.len() == 0, "handle memory lent while handles are open");
        self.core.handles = Handles::new(Some(memory));
    }

    /// Starts the handshake: queues `core.init.resolved`.
    pub fn start(&mut self, now_ns: u64) {
        self.core.start_ns = now_ns;
        self.core.send_init(1, now_ns);
    }

    /// Where the agent is.
    pub fn state(&self) -> State {
        self.core.state
    }

    /// The generation the host's `core.init.ack` carried, once received.
    pub fn peer_generation(&self) -> Option<u8> {
        self.core.peer_generation
    }

    /// Counters.
    pub fn stats(&self) -> Stats {
        self.core.stats
    }

    /// Sessions in flight.
    pub fn sessions(&self) -> usize {
        self.core.sessions.len()
    }

    /// Handles open (`OpenFile`, `OpenDir`) in all.
    pub fn open_handles(&self) -> usize {
        self.core.handles.len()
    }

    /// Handles the relay client owning `id` holds open.
    pub fn open_handles_of(&self, id: u32) -> usize {
        self.core.handles.held_by(id)
    }

    /// Ids of the sessions in flight, in no particular order.
    pub fn session_ids(&self) -> impl Iterator<Item = u32> + '_ {
        self.core.sessions.iter().map(Session::id)
    }

    /// The filesystem.
    pub fn fs(&self) -> &F {
        &self.core.fs
    }

    /// The filesystem, mutably (for set-up before `start`).
    pub fn fs_mut(&mut self) -> &mut F {
        &mut self.core.fs
    }

    /// The next bytes to send, if any. After writing some or all of them,
    /// call [`Agent::transmitted`] with the count.
    pub fn poll_transmit(&mut self) -> Option<&[u8]> {
        let core = &mut self.core;
        loop {
            if core.chunk.is_some() {
                if core.chunk_done() {
                    core.finish_chunk();
                    core.out.mark();
                    continue;
                }
                return core.chunk_bytes();
            }
            if !core.out.batch_sent() {
                return Some(core.out.batch());
            }
            if !matches!(core.state, State::ShuttingDown | State::Off) && core.start_chunk() {
                continue;
            }
            if core.out.is_empty() {
                return None;
            }
            core.out.mark();
        }
    }

    /// Records that the first `n` bytes returned by the last
    /// [`Agent::poll_transmit`] were sent.
    ///
    /// # Panics
    ///
    /// If `n` is more than the last [`Agent::poll_transmit`] returned.
    pub fn transmitted(&mut self, n: usize, now_ns: u64) {
        match &mut self.core.chunk {
            // Chunk bytes free no outbox room: nothing deferred can go on.
            Some(chunk) => {
                assert!(chunk.sent + n <= chunk.head_len + chunk.len, "transmitted past the chunk");
                chunk.sent += n;
            }
            None => {
                assert!(n <= self.core.out.batch().len(), "transmitted past the batch");
                self.core.out.consume(n);
                self.core.check_drained();
                self.pump(now_ns);
            }
        }
    }

    /// The next event for the driver.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.core.events.pop_front()
    }

    /// When [`Agent::handle_timeout`] must next be called: the handshake's
    /// deadline, the idle deadline of the quietest write, or the end of the
    /// quiet period after a corrupt stream.
    pub fn poll_timeout(&self) -> Option<u64> {
        match self.core.state {
            State::AwaitingAck { deadline_ns, .. } => Some(deadline_ns),
            State::Ready => self.core.write_deadline(),
            State::AwaitingStream { quiet_since_ns } => Some(self.core.resync_deadline(quiet_since_ns)),
            _ => None,
        }
    }

    /// Handles a deadline that passed: resends `core.init.resolved`, or
    /// gives up after [`Config::ack_attempts`] and asks for power-off;
    /// aborts every write idle for [`Config::write_idle_timeout_ns`];
    /// starts over on a fresh stream once a corrupt one has been quiet for
    /// [`RESYNC_QUIET_NS`].
    pub fn handle_timeout(&mut self, now_ns: u64) {
        if let State::AwaitingStream { quiet_since_ns } = self.core.state {
            if now_ns >= self.core.resync_deadline(quiet_since_ns) {
                self.reset_stream(now_ns);
            }
            return;
        }
        if self.core.state == State::Ready {
            self.core.abort_idle_writes(now_ns);
            self.pump(now_ns);
        }
        if let State::AwaitingAck { attempts, deadline_ns } = self.core.state
            && now_ns >= deadline_ns
        {
            if attempts >= self.core.config.ack_attempts {
                log::warning!("no core.init.ack after {} attempts: powering off", attempts);
                self.core.state = State::Off;
                self.core.push_event(Event::PowerOff(PowerOff::HandshakeTimeout));
            } else {
                self.core.send_init(attempts + 1, now_ns);
            }
        }
    }

    /// Starts over on a fresh stream: input and output are dropped, every
    /// session is aborted without a response, and the handshake starts
    /// again. [`Agent::handle_timeout`] calls it once a corrupt stream has
    /// been quiet for [`RESYNC_QUIET_NS`]; a host that knows the link is
    /// fresh (a test) may call it at once.
    pub fn reset_stream(&mut self, now_ns: u64) {
        self.core.stats.stream_resets += 1;
        self.rx.start = 0;
        self.rx.filled = 0;
        self.core.out.clear();
        self.core.abort_all(None);
        self.core.close_handles();
        self.core.paused.clear();
        if let Some(chunk) = self.core.chunk.take() {
            self.core.release(chunk.source);
        }
        self.core.send_init(1, now_ns);
    }
}

/// Formats a value for a log line (defmt gets a `Display2Format`).
#[cfg(all(feature = "defmt", target_os = "none"))]
fn defmt_display<T: core::fmt::Display + ?Sized>(v: &T) -> defmt::Display2Format<'_, T> {
    defmt::Display2Format(v)
}

#[cfg(not(all(feature = "defmt", target_os = "none")))]
fn defmt_display<T: ?Sized>(v: &T) -> &T {
    v
}
