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
//!   [`crate::handles::MAX_OPEN_DIRS`] directories in all (`ENFILE`).
//!   `ReadDir` answers at most [`READ_DIR_BATCH_MAX`] entries.
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

    /// Starts the handshake: queues `core.init.resolved`.
    pub fn start(&mut self, now_ns: u64) {
        self.core.start_ns = now_ns;
        self.core.send_init(1, now_ns);
    }

    /// Where the agent is.
    pub fn state(&self) -> State {
        self.core.state
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

    /// The free part of the receive buffer: read bytes into it, then call
    /// [`Agent::rx_commit`].
    ///
    /// A large frame is offered room up to its own end and no further, so
    /// the frame after it starts at the front of the buffer: bulk data is
    /// never moved. Small leftovers are moved to the front to make room.
    pub fn rx_space(&mut self) -> &mut [u8] {
        let rx = &mut self.rx;
        // The end of the frame being received, once its length is in.
        let mut frame_end = match wire::parse_frame(&rx.buf[rx.start..rx.filled]) {
            Ok(wire::FrameStatus::Incomplete { needed }) if rx.filled - rx.start >= wire::LEN_PREFIX_SIZE => {
                Some(rx.filled + needed)
            }
            _ => None,
        };
        if rx.start > 0 {
            let pending = rx.filled - rx.start;
            if pending <= RX_COMPACT_BELOW || frame_end.is_some_and(|end| end > rx.buf.len()) {
                rx.buf.copy_within(rx.start..rx.filled, 0);
                frame_end = frame_end.map(|end| end - rx.start);
                rx.filled = pending;
                rx.start = 0;
            }
        }
        let end = match frame_end {
            Some(end) if end - rx.start > RX_COMPACT_BELOW => end.min(rx.buf.len()),
            _ => rx.buf.len(),
        };
        &mut rx.buf[rx.filled..end]
    }

    /// Takes `n` bytes written into [`Agent::rx_space`] and handles every
    /// complete frame that the outbox has room for.
    ///
    /// # Panics
    ///
    /// If `n` is more than [`Agent::rx_space`] offered: the driver claims
    /// bytes it never wrote.
    pub fn rx_commit(&mut self, n: usize, now_ns: u64) {
        assert!(self.rx.filled + n <= self.rx.buf.len(), "rx_commit past the receive buffer");
        self.rx.filled += n;
        self.pump(now_ns);
    }

    /// Copies as much of `bytes` as fits into the receive buffer and
    /// handles what it can. Returns how many bytes were taken.
    pub fn receive(&mut self, bytes: &[u8], now_ns: u64) -> usize {
        let space = self.rx_space();
        let n = space.len().min(bytes.len());
        space[..n].copy_from_slice(&bytes[..n]);
        self.rx_commit(n, now_ns);
        n
    }

    /// Handles buffered input frames as far as the outbox allows. Called by
    /// `rx_commit` and `transmitted`; a driver need not call it.
    pub fn pump(&mut self, now_ns: u64) {
        loop {
            if let State::AwaitingStream { quiet_since_ns } = &mut self.core.state
                && self.rx.filled > self.rx.start
            {
                // Input of a lost stream: dropped, and the quiet starts over.
                *quiet_since_ns = now_ns;
            }
            if matches!(self.core.state, State::AwaitingStream { .. } | State::ShuttingDown | State::Off) {
                self.rx.start = 0;
                self.rx.filled = 0;
                return;
            }
            let pending = &self.rx.buf[self.rx.start..self.rx.filled];
            let (frame, consumed) = match wire::parse_frame(pending) {
                Ok(wire::FrameStatus::Complete { frame, consumed }) => (frame, consumed),
                Ok(wire::FrameStatus::Incomplete { .. }) => break,
                Err(e) => {
                    self.core.stream_error(&e, now_ns);
                    continue;
                }
            };
            if self.core.out.free() < INPUT_RESERVE {
                break;
            }
            match self.core.handle(frame, now_ns, &mut self.paths) {
                Handled::Done => {
                    self.core.stats.frames_received += 1;
                    self.rx.start += consumed;
                }
                Handled::Later => break,
            }
        }
        if self.rx.start == self.rx.filled {
            self.rx.start = 0;
            self.rx.filled = 0;
        }
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

impl<F: Filesystem> Core<'_, F> {
    fn push_event(&mut self, event: Event) {
        // Events are few (clock syncs overwrite each other, power-off is
        // final); drop the oldest on overflow.
        if self.events.is_full() {
            self.events.pop_front();
        }
        let _ = self.events.push_back(event);
    }

    fn send_init(&mut self, attempts: u32, now_ns: u64) {
        let init = InitResolved { default_user: self.config.default_user };
        self.push(0, &init);
        self.state = State::AwaitingAck { attempts, deadline_ns: now_ns.saturating_add(self.config.ack_timeout_ns) };
    }

    /// Queues a frame. The reserve policy guarantees room; a frame that
    /// still does not fit is dropped and counted rather than panicking.
    fn push<P: wire::Payload + ?Sized>(&mut self, id: u32, payload: &P) -> bool {
        match self.out.push(id, payload) {
            Ok(()) => true,
            Err(e) => {
                log::error!("outbox full, frame dropped: {}", defmt_display(&e));
                debug_assert!(false, "outbox overflow: {e}");
                false
            }
        }
    }

    /// When a corrupt stream quiet since `quiet_since_ns` counts as fresh.
    fn resync_deadline(&self, quiet_since_ns: u64) -> u64 {
        match self.config.planted {
            // The planted defect: no quiet period, so the rest of a corrupt
            // stream still in flight is taken for a fresh one.
            PlantedBug::ResyncWithoutQuiet => quiet_since_ns,
            _ => quiet_since_ns.saturating_add(RESYNC_QUIET_NS),
        }
    }

    fn stream_error(&mut self, e: &wire::Error, now_ns: u64) {
        log::error!("frame-level error, awaiting a fresh stream: {}", defmt_display(e));
        self.stats.stream_errors += 1;
        self.state = State::AwaitingStream { quiet_since_ns: now_ns };
        self.abort_all(None);
    }

    /// Sends `core.error` on `id` unless the peer is older than
    /// generation 5 (whose agents treat errors as fatal instead).
    fn core_error(&mut self, id: u32, v: Option<u8>, kind: CoreErrorKind, message: &str, offending: Option<&str>) {
        let generation = v.or(self.peer_generation).unwrap_or(wire::PROTOCOL_GENERATION);
        if generation < CORE_ERROR_GENERATION {
            self.stats.core_errors_suppressed += 1;
            return;
        }
        if self.push(id, &CoreError { kind, message, offending_type: offending }) {
            self.stats.core_errors_sent += 1;
        }
    }

    fn respond(&mut self, id: u32, result: Result<(), (&str, FsError)>) {
        match result {
            Ok(()) => {
                self.push(id, &FsResponse::<[FsEntryInfo<'_>; 0]>::ok());
            }
            Err((op, e)) => self.respond_error(id, op, &e),
        }
    }

    /// Answers `ok: false` with `"{op}: {cause}"`: a filesystem error prints
    /// as Linux `io::Error` does (`No such file or directory (os error 2)`).
    fn respond_error(&mut self, id: u32, op: &str, cause: &dyn core::fmt::Display) {
        let mut message = String::<MESSAGE_MAX>::new();
        if write!(message, "{op}: {cause}").is_err() {
            // Cut at a character boundary rather than drop the answer.
            let mut end = message.len();
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            message.truncate(end);
        }
        self.push(id, &FsResponse::<[FsEntryInfo<'_>; 0]>::err(&message));
    }

    /// Answers a handle number and the data shape of a current op.
    fn respond_data(&mut self, id: u32, data: FsResponseData<'_, [FsEntryInfo<'_>; 0]>) {
        self.push(id, &FsResponse { ok: true, error: None, data: Some(data) });
    }

    fn handle(&mut self, frame: wire::Frame<'_>, now_ns: u64, paths: &mut [PathBuf; 2]) -> Handled {
        let envelope = match Envelope::decode(frame.body) {
            Ok(envelope) => envelope,
            Err(e) => {
                let hints = wire::hints(frame.body);
                let kind = match e.kind {
                    wire::ErrorKind::UnknownMessageType => CoreErrorKind::UnsupportedMessageType,
                    _ => CoreErrorKind::MalformedMessage,
                };
                let mut message = String::<MESSAGE_MAX>::new();
                let _ = write!(message, "decode message for id {}: {e}", frame.id);
                self.core_error(frame.id, hints.v, kind, &message, hints.t);
                return Handled::Done;
            }
        };
        let t = envelope.t;
        if frame.flags != t.flags() {
            let mut message = String::<MESSAGE_MAX>::new();
            let _ = write!(message, "invalid flags for {t}: got {}, expected {}", frame.flags.bits(), t.flags().bits());
            self.core_error(frame.id, Some(envelope.v), CoreErrorKind::InvalidFlags, &message, Some(t.as_str()));
            return Handled::Done;
        }
        let body = match decode_inbound(t, envelope.p) {
            Ok(Some(body)) => body,
            Ok(None) => {
                // A type only the guest sends: its payload is never decoded
                // here (which also keeps those decoders out of the guest).
                let mut message = String::<MESSAGE_MAX>::new();
                let _ = write!(message, "{t} is sent by the guest, not to it");
                self.core_error(
                    frame.id,
                    Some(envelope.v),
                    CoreErrorKind::UnsupportedMessageType,
                    &message,
                    Some(t.as_str()),
                );
                return Handled::Done;
            }
            Err(e) => {
                let mut message = String::<MESSAGE_MAX>::new();
                let _ = write!(message, "decode payload for {t}: {e}");
                self.core_error(frame.id, Some(envelope.v), CoreErrorKind::InvalidPayload, &message, Some(t.as_str()));
                return Handled::Done;
            }
        };
        self.dispatch(frame.id, envelope.v, body, now_ns, paths)
    }

    fn dispatch(&mut self, id: u32, v: u8, body: Body<'_>, now_ns: u64, paths: &mut [PathBuf; 2]) -> Handled {
        let host_only = self.config.planted != PlantedBug::HostMessagesAnyId;
        if id != 0
            && host_only
            && matches!(
                body,
                Body::InitAck(_) | Body::ClockSync(_) | Body::RelayClientDisconnected(_) | Body::RelayFlow(_)
            )
        {
            let t = body.message_type();
            let mut message = String::<MESSAGE_MAX>::new();
            let _ = write!(message, "{t} is taken from the host only, on id 0 (got id {id})");
            log::warning!("ignored {} on id {}", t.as_str(), id);
            self.core_error(id, Some(v), CoreErrorKind::InvalidSession, &message, Some(t.as_str()));
            return Handled::Done;
        }
        match body {
            Body::InitAck(_) => {
                if let State::AwaitingAck { .. } = self.state {
                    self.peer_generation = Some(v);
                    self.state = State::Ready;
                    let ready = Ready {
                        boot_time_ns: self.config.boot_time_ns,
                        init_time_ns: self.start_ns.saturating_sub(self.config.boot_time_ns),
                        ready_time_ns: now_ns,
                        agent_version: self.config.agent_version,
                    };
                    self.push(0, &ready);
                    log::info!("ready: peer generation {}", v);
                }
            }
            Body::ClockSync(sync) => {
                self.wall = Some((now_ns, sync.unix_time_nanos));
                self.fs.set_wall_clock(now_ns, i64::try_from(sync.unix_time_nanos).unwrap_or(i64::MAX));
                self.push_event(Event::SetWallClock(sync.unix_time_nanos));
            }
            Body::RelayClientDisconnected(range) => self.drop_range(range),
            Body::RelayFlow(flow) => self.flow(flow),
            Body::FsRequest(request) => {
                // A raw-bulk offer (generation 8) is declined as a peer
                // without bulk support declines it: the op is served over
                // `core.fs.data` and no `core.bulk.accepted` is ever sent.
                self.now_ns = now_ns;
                return self.fs_request(id, v, request.op, now_ns, paths);
            }
            Body::FsData(data) => self.fs_data(id, data.data, now_ns),
            Body::Shutdown(_) => self.shutdown(),
            Body::Ping(_) => {
                self.push(id, &Pong);
            }
            Body::Error(e) => {
                log::warning!("core.error from the host on id {}: {}", id, defmt_display(&e.message));
            }
            Body::InitResolved(_) | Body::Ready(_) | Body::FsResponse(_) | Body::Pong(_) => {
                let t = body.message_type();
                let mut message = String::<MESSAGE_MAX>::new();
                let _ = write!(message, "{t} is sent by the guest, not to it");
                self.core_error(id, Some(v), CoreErrorKind::UnsupportedMessageType, &message, Some(t.as_str()));
            }
        }
        Handled::Done
    }

    fn session_index(&self, id: u32) -> Option<usize> {
        self.sessions.iter().position(|s| s.id() == id)
    }

    fn fs_request(&mut self, id: u32, v: u8, op: FsOp<'_>, now_ns: u64, paths: &mut [PathBuf; 2]) -> Handled {
        // An id is in use while it has a session, and also while a data
        // frame of a dropped session still goes out on it.
        if self.session_index(id).is_some() || self.chunk.as_ref().is_some_and(|c| c.id == id) {
            let mut message = String::<MESSAGE_MAX>::new();
            let _ = write!(message, "session id {id} is already in use");
            let t = Some(MessageType::FsRequest.as_str());
            self.core_error(id, None, CoreErrorKind::InvalidSession, &message, t);
            return Handled::Done;
        }
        let name = op.error_prefix();
        // Paths are passed as sent (the filesystem resolves them as Linux
        // does); one longer than any path could be is refused before an
        // answer would echo it.
        let too_long = match op {
            FsOp::Copy { src: a, dst: b }
            | FsOp::Rename { src: a, dst: b }
            | FsOp::Symlink { target: a, link_path: b, .. } => a.len() > MAX_PATH_LEN || b.len() > MAX_PATH_LEN,
            FsOp::RealPath { path }
            | FsOp::Stat { path, .. }
            | FsOp::SetStat { path, .. }
            | FsOp::List { path }
            | FsOp::ReadLink { path }
            | FsOp::Read { path }
            | FsOp::Write { path, .. }
            | FsOp::Mkdir { path }
            | FsOp::MkdirWith { path, .. }
            | FsOp::Remove { path }
            | FsOp::RemoveDir { path, .. }
            | FsOp::OpenFile { path, .. }
            | FsOp::OpenDir { path } => path.len() > MAX_PATH_LEN,
            _ => false,
        };
        if too_long {
            self.respond(id, Err((name, FsError::PathTooLong)));
            return Handled::Done;
        }
        let current = op.is_current_shape() || v >= CURRENT_FS_GENERATION;
        let parents = if current { MissingParents::Fail } else { MissingParents::Create };
        let result = match op {
            FsOp::Stat { path, follow_symlink } => {
                let meta = match follow_symlink {
                    None => self.fs.stat(path),
                    Some(follow) => self.fs.stat_at(path, follow),
                };
                return self.stat_answer(id, name, path, meta, current);
            }
            FsOp::List { path } => return self.list(id, path, current),
            FsOp::Read { path } => {
                self.open_read(id, path);
                return Handled::Done;
            }
            FsOp::Write { path, mode } => {
                self.open_write(id, path, mode, now_ns);
                return Handled::Done;
            }
            FsOp::Mkdir { path } => self.fs.mkdir(path, now_ns),
            FsOp::MkdirWith { path, mode, user } => match parse_user(user) {
                Ok(owner) => self.fs.create_dir_all(path, mode, owner, now_ns),
                Err(()) => return self.unknown_user(id, name, user),
            },
            FsOp::Remove { path } => self.fs.remove(path, now_ns),
            FsOp::RemoveDir { path, recursive: None } => self.fs.remove_dir(path, now_ns),
            FsOp::RemoveDir { path, recursive: Some(recursive) } => self.fs.remove_dir_at(path, recursive, now_ns),
            FsOp::Copy { src, dst } => self.fs.copy_at(src, dst, parents, now_ns),
            FsOp::Rename { src, dst } => self.fs.rename_at(src, dst, parents, now_ns),
            FsOp::RealPath { path } | FsOp::ReadLink { path } => {
                let out = &mut paths[0];
                let found = match op {
                    FsOp::RealPath { .. } => crate::fs::real_path(&mut self.fs, path, out),
                    _ => self.fs.read_link(path, out),
                };
                match found {
                    Ok(()) => self.respond_data(id, FsResponseData::Path(out.as_str())),
                    Err(e) => self.respond(id, Err((name, e))),
                }
                return Handled::Done;
            }
            FsOp::Symlink { target, link_path, user } => match parse_user(user) {
                Ok(owner) => self.fs.symlink(target, link_path, owner, now_ns),
                Err(()) => return self.unknown_user(id, name, user),
            },
            FsOp::SetStat { path, follow_symlink, attrs } => {
                let result = self.fs.set_attrs(path, follow_symlink, &set_attrs(&attrs), now_ns);
                return self.attr_answer(id, name, result);
            }
            FsOp::OpenFile { path, options } => return self.open_file(id, name, path, &options, now_ns),
            FsOp::OpenDir { path } => return self.open_dir(id, name, path),
            FsOp::CloseHandle { handle } => match self.handles.remove(id, handle) {
                Some(open) => {
                    self.release_open(open);
                    Ok(())
                }
                None => Err(FsError::BadHandle),
            },
            FsOp::ReadHandle { handle, offset, len } => return self.read_handle(id, name, handle, offset, len),
            FsOp::WriteHandle { handle, offset, len } => {
                return self.write_handle(id, name, handle, offset, len, now_ns);
            }
            FsOp::ReadDir { handle, limit } => return self.read_dir(id, name, handle, limit),
            FsOp::FStat { handle } => {
                // The path the handle was opened with, as the reference answers.
                let out = &mut paths[0];
                out.clear();
                let meta = match self.handles.get(id, handle) {
                    Some((Open::File(file), path)) => {
                        let _ = out.push_str(path);
                        Ok(self.fs.file_stat(file))
                    }
                    Some((Open::Dir(dir), path)) => {
                        let _ = out.push_str(path);
                        Ok(self.fs.dir_stat(dir))
                    }
                    None => Err(FsError::BadHandle),
                };
                return self.stat_answer(id, name, out.as_str(), meta, true);
            }
            FsOp::FSetStat { handle, attrs } => {
                let result = match self.handles.get(id, handle) {
                    Some((Open::File(file), _)) => self.fs.file_set_attrs(file, &set_attrs(&attrs), now_ns),
                    // The reference opens only files for FSetStat.
                    Some((Open::Dir(_), _)) | None => {
                        Err(AttrError { step: crate::fs::AttrStep::Fchown, error: FsError::BadHandle })
                    }
                };
                return match result {
                    Err(AttrError { error: FsError::BadHandle, .. }) => {
                        self.respond(id, Err((name, FsError::BadHandle)));
                        Handled::Done
                    }
                    result => self.attr_answer(id, name, result),
                };
            }
        };
        self.respond(id, result.map_err(|e| (name, e)));
        Handled::Done
    }

    fn unknown_user(&mut self, id: u32, op: &str, user: Option<&str>) -> Handled {
        let mut cause = String::<MESSAGE_MAX>::new();
        let _ = write!(cause, "unknown user \"{}\"", user.unwrap_or(""));
        self.respond_error(id, op, &cause);
        Handled::Done
    }

    fn attr_answer(&mut self, id: u32, op: &str, result: Result<(), AttrError>) -> Handled {
        match result {
            Ok(()) => self.respond(id, Ok(())),
            Err(e) => self.respond_error(id, op, &e),
        }
        Handled::Done
    }

    fn stat_answer(
        &mut self,
        id: u32,
        op: &str,
        path: &str,
        meta: Result<Metadata, FsError>,
        current: bool,
    ) -> Handled {
        match meta {
            Ok(m) => {
                let info = entry_info(path, &m, self.wall, current);
                self.respond_data(id, FsResponseData::Stat(info));
            }
            Err(e) => self.respond(id, Err((op, e))),
        }
        Handled::Done
    }

    fn list(&mut self, id: u32, dir: &str, current: bool) -> Handled {
        let mut count = 0usize;
        if let Err(e) = self.fs.list(dir, &mut |_, _| count += 1) {
            // The current reference lists by opening the directory inside
            // its `readdir` (both name the failure).
            self.respond(id, Err((if current { "readdir: opendir" } else { "list" }, e)));
            return Handled::Done;
        }
        let wall = self.wall;
        let source = ListSource { fs: RefCell::new(&mut self.fs), dir, count, wall, current };
        let response = FsResponse { ok: true, error: None, data: Some(FsResponseData::List(&source)) };
        let len = wire::frame_len(&response);
        let limit = self.out.capacity() - INPUT_RESERVE;
        if len > limit || len > wire::MAX_FRAME_BYTES {
            let mut message = String::<MESSAGE_MAX>::new();
            let _ = write!(message, "list: too many entries for one frame ({count} entries, {len} bytes)");
            self.push(id, &FsResponse::<[FsEntryInfo<'_>; 0]>::err(&message));
            return Handled::Done;
        }
        if len > self.out.free() - (INPUT_RESERVE - RESPONSE_MAX) {
            return Handled::Later;
        }
        if let Err(e) = self.out.push(id, &response) {
            debug_assert!(false, "list response did not fit: {e}");
        }
        Handled::Done
    }

    /// Answers a handle-table bound: `EMFILE` for the client's own bound,
    /// `ENFILE` for the table's.
    fn table_full(&mut self, id: u32, op: &str, full: Full) {
        match full {
            Full::Client => {
                let mut cause = String::<MESSAGE_MAX>::new();
                let _ = write!(cause, "Too many open files (os error 24; {MAX_HANDLES_PER_CLIENT} per client)");
                self.respond_error(id, op, &cause);
            }
            Full::Table => self.respond(id, Err((op, FsError::TooManyOpen))),
        }
    }

    fn open_file(&mut self, id: u32, op: &str, path: &str, options: &FsOpenOptions<'_>, now_ns: u64) -> Handled {
        // The bound is checked first, so a refused open creates nothing.
        if let Err(full) = self.handles.check_room(id, false, path) {
            self.table_full(id, op, full);
            return Handled::Done;
        }
        let Ok(owner) = parse_user(options.user) else { return self.unknown_user(id, op, options.user) };
        let options = OpenOptions {
            read: options.read,
            write: options.write,
            append: options.append,
            create: options.create,
            truncate: options.truncate,
            create_new: options.create_new,
            mode: options.mode,
            owner: Some(owner),
        };
        match self.fs.open(path, &options, now_ns) {
            Ok(file) => match self.handles.insert(id, Open::File(file), path) {
                Ok(handle) => self.respond_data(id, FsResponseData::Handle(handle)),
                Err((open, full)) => {
                    self.release_open(open);
                    self.table_full(id, op, full);
                }
            },
            Err(e) => self.respond(id, Err((op, e))),
        }
        Handled::Done
    }

    fn open_dir(&mut self, id: u32, op: &str, path: &str) -> Handled {
        if let Err(full) = self.handles.check_room(id, true, path) {
            self.table_full(id, op, full);
            return Handled::Done;
        }
        match self.fs.open_dir(path) {
            Ok(dir) => match self.handles.insert(id, Open::Dir(dir), path) {
                Ok(handle) => self.respond_data(id, FsResponseData::Handle(handle)),
                Err((open, full)) => {
                    self.release_open(open);
                    self.table_full(id, op, full);
                }
            },
            Err(e) => self.respond(id, Err((op, e))),
        }
        Handled::Done
    }

    fn read_handle(&mut self, id: u32, op: &str, handle: u64, offset: u64, len: Option<u64>) -> Handled {
        if !self.admit_session(id, op) {
            return Handled::Done;
        }
        let size = match self.handles.get(id, handle) {
            Some((Open::File(file), _)) => self.fs.file_stat(file).size,
            Some((Open::Dir(_), _)) => return self.answer(id, Err((op, FsError::IsADirectory))),
            None => return self.answer(id, Err((op, FsError::BadHandle))),
        };
        // A zero-length probe checks the handle can read (EBADF on a
        // write-only file) without moving anything.
        if let Some((Open::File(file), _)) = self.handles.get(id, handle)
            && let Err(e) = self.fs.file_read(file, offset.min(size), 0, self.now_ns)
        {
            return self.answer(id, Err((op, e)));
        }
        let end = len.map_or(size, |len| offset.saturating_add(len).min(size));
        if offset >= end {
            // At or past the end: no data, and no empty chunk.
            return self.answer(id, Ok(()));
        }
        let _ = self.sessions.push(Session::HandleRead { id, handle, offset, end, sending: false });
        self.stats.sessions_peak = self.stats.sessions_peak.max(self.sessions.len());
        Handled::Done
    }

    fn write_handle(&mut self, id: u32, op: &str, handle: u64, offset: u64, len: Option<u64>, now_ns: u64) -> Handled {
        if !self.admit_session(id, op) {
            return Handled::Done;
        }
        match self.handles.get(id, handle) {
            Some((Open::File(_), _)) => {}
            Some((Open::Dir(_), _)) => return self.answer(id, Err((op, FsError::BadHandle))),
            None => return self.answer(id, Err((op, FsError::BadHandle))),
        }
        let session = Session::HandleWrite { id, handle, offset, expected: len, received: 0, active_ns: now_ns };
        let _ = self.sessions.push(session);
        self.stats.sessions_peak = self.stats.sessions_peak.max(self.sessions.len());
        Handled::Done
    }

    fn answer(&mut self, id: u32, result: Result<(), (&str, FsError)>) -> Handled {
        self.respond(id, result);
        Handled::Done
    }

    fn read_dir(&mut self, id: u32, op: &str, handle: u64, limit: Option<u32>) -> Handled {
        let mut limit = limit.map_or(READ_DIR_BATCH_MAX, |l| (l as usize).min(READ_DIR_BATCH_MAX));
        let (free, capacity) = (self.out.free(), self.out.capacity());
        let mut batch = heapless::Vec::<(String<MAX_NAME_LEN>, Metadata), READ_DIR_BATCH_MAX>::new();
        let (dir, path) = match self.handles.get(id, handle) {
            Some((Open::Dir(dir), path)) => (dir, path),
            Some((Open::File(_), _)) => return self.answer(id, Err((op, FsError::NotADirectory))),
            None => return self.answer(id, Err((op, FsError::BadHandle))),
        };
        // Entries are taken from the directory only once there is room for
        // their answer at its largest: no more than the outbox can ever hold,
        // and none until the outbox has room for them.
        let per_entry = path.len() + 1 + MAX_NAME_LEN + ENTRY_OVERHEAD_MAX;
        limit = limit.min((capacity - INPUT_RESERVE) / per_entry).max(1);
        if limit * per_entry + RESPONSE_MAX > free - (INPUT_RESERVE - RESPONSE_MAX) {
            return Handled::Later;
        }
        let read = self.fs.read_dir(dir, limit, &mut |name, m| {
            let mut owned = String::new();
            // Names are at most MAX_NAME_LEN bytes; the batch holds `limit`.
            let _ = owned.push_str(name);
            let _ = batch.push((owned, *m));
        });
        if let Err(e) = read {
            return self.answer(id, Err((op, e)));
        }
        let source = BatchSource { dir: path, batch: &batch, wall: self.wall };
        let response = FsResponse { ok: true, error: None, data: Some(FsResponseData::List(&source)) };
        // The room for it was checked above.
        if let Err(e) = self.out.push(id, &response) {
            log::error!("readdir answer dropped: {}", defmt_display(&e));
        }
        Handled::Done
    }

    fn open_read(&mut self, id: u32, path: &str) {
        if !self.admit_session(id, "read") {
            return;
        }
        let (reader, size) = match self.fs.open_read(path) {
            Ok(opened) => opened,
            Err(e) => return self.respond(id, Err(("read", e))),
        };
        if size == 0 {
            self.fs.close_read(reader);
            return self.respond(id, Ok(()));
        }
        let session = Session::Read { id, reader: Some(reader), size, offset: 0 };
        if let Err(Session::Read { reader: Some(reader), .. }) = self.sessions.push(session) {
            // Not reached: the table had room above.
            self.fs.close_read(reader);
            self.too_many_sessions(id, "read");
        }
        self.stats.sessions_peak = self.stats.sessions_peak.max(self.sessions.len());
    }

    fn too_many_sessions(&mut self, id: u32, op: &str) {
        let mut message = String::<MESSAGE_MAX>::new();
        let _ = write!(message, "{op}: too many sessions in flight (max {MAX_SESSIONS})");
        self.push(id, &FsResponse::<[FsEntryInfo<'_>; 0]>::err(&message));
    }

    /// Sessions held by the relay client that owns `id`'s slot.
    fn client_sessions(&self, id: u32) -> usize {
        let owner = wire::relay::slot_of(id);
        self.sessions.iter().filter(|s| wire::relay::slot_of(s.id()) == owner).count()
    }

    /// Whether `id` may open a session: the table has room, its client is
    /// below its share, and the reserve is left to small holders. If not,
    /// answers `ok: false` naming the bound.
    fn admit_session(&mut self, id: u32, op: &str) -> bool {
        if self.sessions.is_full() {
            self.too_many_sessions(id, op);
            return false;
        }
        let held = self.client_sessions(id);
        let free = MAX_SESSIONS - self.sessions.len();
        let mut message = String::<MESSAGE_MAX>::new();
        if held >= MAX_SESSIONS_PER_CLIENT && self.config.planted != PlantedBug::NoSessionQuota {
            let _ = write!(message, "{op}: too many sessions for one client (max {MAX_SESSIONS_PER_CLIENT})");
        } else if free <= SESSION_RESERVE && held >= RESERVE_CLIENT_MAX {
            let _ = write!(
                message,
                "{op}: too many sessions in flight (the last {SESSION_RESERVE} are kept for clients with fewer than {RESERVE_CLIENT_MAX})"
            );
        } else {
            return true;
        }
        self.push(id, &FsResponse::<[FsEntryInfo<'_>; 0]>::err(&message));
        false
    }

    fn open_write(&mut self, id: u32, path: &str, mode: Option<u32>, now_ns: u64) {
        if !self.admit_session(id, "write") {
            return;
        }
        match self.fs.begin_write(path) {
            Ok(writer) => {
                let session = Session::Write { id, writer, mode, active_ns: now_ns };
                if let Err(Session::Write { writer, .. }) = self.sessions.push(session) {
                    self.fs.abort_write(writer);
                }
                self.stats.sessions_peak = self.stats.sessions_peak.max(self.sessions.len());
            }
            Err(e) => self.respond(id, Err(("write", e))),
        }
    }

    fn fs_data(&mut self, id: u32, data: &[u8], now_ns: u64) {
        let Some(index) = self.session_index(id) else {
            return self.respond_error(id, "write", &"unknown write session");
        };
        if let Session::HandleWrite { handle, offset, expected, received, .. } = &mut self.sessions[index] {
            let (handle, at, expected) = (*handle, *offset, *expected);
            let total = *received + data.len() as u64;
            let outcome = if data.is_empty() {
                match expected {
                    Some(n) if n != total => Err(LenMismatch { expected: n, got: total, at_end: true }.into()),
                    _ => Ok(true),
                }
            } else if expected.is_some_and(|n| total > n) {
                // More than announced: refused before any of it is written.
                Err(LenMismatch { expected: expected.unwrap_or(0), got: total, at_end: false }.into())
            } else {
                self.stats.write_bytes += data.len() as u64;
                match self.handles.get(id, handle) {
                    Some((Open::File(file), _)) => match self.fs.file_write(file, at, data, now_ns) {
                        Ok(next) => {
                            if let Session::HandleWrite { offset, received, active_ns, .. } = &mut self.sessions[index]
                            {
                                *offset = next;
                                *received = total;
                                *active_ns = now_ns;
                            }
                            Ok(false)
                        }
                        Err(e) => Err(WriteFailure::Fs(e)),
                    },
                    _ => Err(WriteFailure::Fs(FsError::BadHandle)),
                }
            };
            match outcome {
                Ok(false) => {}
                Ok(true) => {
                    self.sessions.swap_remove(index);
                    self.respond(id, Ok(()));
                }
                Err(failure) => {
                    self.sessions.swap_remove(index);
                    match failure {
                        WriteFailure::Fs(e) => self.respond(id, Err(("write", e))),
                        WriteFailure::Len(m) => {
                            let mut message = String::<MESSAGE_MAX>::new();
                            let _ = write!(message, "{m}");
                            self.push(id, &FsResponse::<[FsEntryInfo<'_>; 0]>::err(&message));
                        }
                    }
                }
            }
            return;
        }
        let Session::Write { writer, active_ns, .. } = &mut self.sessions[index] else {
            // A read (path or handle) session.
            let t = Some(MessageType::FsData.as_str());
            let message = "core.fs.data sent to a read session";
            return self.core_error(id, None, CoreErrorKind::InvalidSession, message, t);
        };
        *active_ns = now_ns;
        if !data.is_empty() {
            self.stats.write_bytes += data.len() as u64;
            if let Err(e) = self.fs.write(writer, data) {
                if let Session::Write { writer, .. } = self.sessions.swap_remove(index) {
                    self.fs.abort_write(writer);
                }
                return self.respond(id, Err(("write", e)));
            }
            return;
        }
        let Session::Write { writer, mode, .. } = self.sessions.swap_remove(index) else {
            unreachable!("write data routed to a session that is no write")
        };

        let result = self.fs.commit_write(writer, mode, now_ns);
        self.respond(id, result.map_err(|e| ("write", e)));
    }

    /// Pauses or resumes read data to a relay client's range.
    fn flow(&mut self, flow: RelayFlow) {
        let range = (flow.id_start, flow.id_end_exclusive);
        self.paused.retain(|r| *r != range);
        if flow.paused && self.paused.push(range).is_err() {
            // More ranges than relay slots: not a relay of this project's.
            log::warning!("too many paused ranges: {}..{} not paused", range.0, range.1);
        }
    }

    fn drop_range(&mut self, range: RelayClientDisconnected) {
        self.paused.retain(|&(start, end)| !(range.contains(start) && end <= range.id_end_exclusive));
        let mut i = 0;
        while i < self.sessions.len() {
            if range.contains(self.sessions[i].id()) {
                let session = self.sessions.swap_remove(i);
                self.close(session);
            } else {
                i += 1;
            }
        }
        let fs = &mut self.fs;
        self.handles.drop_range(range.id_start, range.id_end_exclusive, &mut |open| release_open(fs, open));
        log::info!("relay client {}..{} disconnected", range.id_start, range.id_end_exclusive);
    }

    /// When the quietest write reaches its idle bound.
    fn write_deadline(&self) -> Option<u64> {
        let timeout = self.config.write_idle_timeout_ns;
        self.sessions
            .iter()
            .filter_map(|s| match s {
                Session::Write { active_ns, .. } | Session::HandleWrite { active_ns, .. } => {
                    Some(active_ns.saturating_add(timeout))
                }
                Session::Read { .. } | Session::HandleRead { .. } => None,
            })
            .min()
    }

    /// Aborts every write that has received nothing for the idle bound:
    /// `ok: false`, staged content dropped (the old file stays).
    fn abort_idle_writes(&mut self, now_ns: u64) {
        let timeout = self.config.write_idle_timeout_ns;
        let mut i = 0;
        while i < self.sessions.len() {
            let idle = matches!(self.sessions[i], Session::Write { active_ns, .. } | Session::HandleWrite { active_ns, .. }
                if now_ns.saturating_sub(active_ns) >= timeout);
            if !idle {
                i += 1;
                continue;
            }
            let session = self.sessions.swap_remove(i);
            let id = session.id();
            self.close(session);
            let mut message = String::<MESSAGE_MAX>::new();
            let _ = write!(message, "write: aborted: no data for {} s (idle write bound)", timeout / 1_000_000_000);
            log::warning!("write {} idle: aborted", id);
            self.push(id, &FsResponse::<[FsEntryInfo<'_>; 0]>::err(&message));
        }
    }

    /// Ends a session without a response. A read whose chunk is being sent
    /// keeps its reader in the chunk until the frame is complete. A handle
    /// session leaves its handle open.
    fn close(&mut self, session: Session<F>) {
        match session {
            Session::Read { reader: Some(reader), .. } => self.fs.close_read(reader),
            Session::Read { reader: None, .. } | Session::HandleRead { .. } | Session::HandleWrite { .. } => {}
            Session::Write { writer, .. } => self.fs.abort_write(writer),
        }
    }

    /// Releases what a chunk read from.
    fn release(&mut self, source: Source<F::Reader>) {
        if let Source::Snapshot(reader) = source {
            self.fs.close_read(reader);
        }
    }

    fn release_open(&mut self, open: Open<F>) {
        release_open(&mut self.fs, open);
    }

    /// Closes every handle (shutdown, a new stream).
    fn close_handles(&mut self) {
        let fs = &mut self.fs;
        self.handles.clear(&mut |open| release_open(fs, open));
    }

    /// Aborts every session; with a message, each gets `ok: false`.
    fn abort_all(&mut self, message: Option<&str>) {
        while let Some(session) = self.sessions.pop() {
            let id = session.id();
            self.close(session);
            if let Some(message) = message {
                self.push(id, &FsResponse::<[FsEntryInfo<'_>; 0]>::err(message));
            }
        }
    }

    fn shutdown(&mut self) {
        log::info!("core.shutdown: aborting {} sessions", self.sessions.len());
        self.abort_all(Some("shutdown: session aborted"));
        self.close_handles();
        self.state = State::ShuttingDown;
        self.check_drained();
    }

    /// Asks for power-off once a shutdown has sent everything.
    fn check_drained(&mut self) {
        if self.state == State::ShuttingDown && self.out.is_empty() && self.chunk.is_none() {
            self.state = State::Off;
            self.push_event(Event::PowerOff(PowerOff::Shutdown));
        }
    }

    /// Starts the next read chunk, round-robin by id: the read with the
    /// smallest id above the last one served, else the smallest id.
    /// Returns whether one started.
    fn start_chunk(&mut self) -> bool {
        let last = self.last_read_id;
        let (mut next, mut first) = (None::<(u32, usize)>, None::<(u32, usize)>);
        for (i, s) in self.sessions.iter().enumerate() {
            if let Session::Read { id, reader: Some(_), .. } | Session::HandleRead { id, sending: false, .. } = s {
                if self.paused.iter().any(|&(start, end)| (start..end).contains(id)) {
                    continue;
                }
                if first.is_none_or(|(f, _)| *id < f) {
                    first = Some((*id, i));
                }
                if *id > last && next.is_none_or(|(n, _)| *id < n) {
                    next = Some((*id, i));
                }
            }
        }
        let Some((id, index)) = next.or(first) else { return false };
        let chunk_size = self.config.read_chunk_size as u64;
        let (source, offset, len) = match &mut self.sessions[index] {
            Session::Read { reader, size, offset, .. } => {
                assert!(*offset < *size, "a read picked with nothing left");
                let len = (*size - *offset).min(chunk_size) as usize;
                let reader = reader.take().expect("the picker takes only reads whose reader is in");
                (Source::Snapshot(reader), *offset, len)
            }
            Session::HandleRead { handle, offset, end, sending, .. } => {
                assert!(!*sending && *offset < *end, "a handle read picked while sending or done");
                *sending = true;
                (Source::Handle(*handle), *offset, (*end - *offset).min(chunk_size) as usize)
            }
            _ => unreachable!("the picker takes only reads"),
        };
        assert!(len <= wire::FS_CHUNK_SIZE, "a chunk over FS_CHUNK_SIZE");
        let mut head = [0u8; DATA_FRAME_HEAD_MAX];
        // A chunk is at most FS_CHUNK_SIZE, whose head fits by construction.
        let head_len = wire::encode_data_frame_head(id, len, &mut head).expect("a chunk's head fits its buffer");
        self.chunk = Some(Chunk { id, source, offset, len, head, head_len, sent: 0, failed: false });
        self.last_read_id = id;
        true
    }

    fn chunk_done(&self) -> bool {
        self.chunk.as_ref().is_some_and(|c| c.sent >= c.head_len + c.len)
    }

    /// The unsent part of the current chunk: head bytes, then file bytes.
    fn chunk_bytes(&mut self) -> Option<&[u8]> {
        let chunk = self.chunk.as_mut()?;
        if chunk.sent < chunk.head_len {
            return Some(&chunk.head[chunk.sent..chunk.head_len]);
        }
        let done = chunk.sent - chunk.head_len;
        let left = chunk.len - done;
        if !chunk.failed {
            let at = chunk.offset + done as u64;
            let bytes = match &mut chunk.source {
                Source::Snapshot(reader) => self.fs.read_at(reader, at, left),
                Source::Handle(handle) => match self.handles.get(chunk.id, *handle) {
                    Some((Open::File(file), _)) => self.fs.file_read(file, at, left, self.now_ns),
                    _ => Err(FsError::BadHandle),
                },
            };
            match bytes {
                Ok(bytes) if !bytes.is_empty() => {
                    // Lifetime: the slice borrows the filesystem only.
                    let n = bytes.len().min(left);
                    return Some(&bytes[..n]);
                }
                _ => chunk.failed = true,
            }
        }
        Some(&ZEROS[..left.min(ZEROS.len())])
    }

    /// After the last byte of a chunk: advance the read; end it if done.
    fn finish_chunk(&mut self) {
        let chunk = self.chunk.take().expect("finish_chunk with a chunk in flight");
        assert!(chunk.sent == chunk.head_len + chunk.len, "a chunk finished before its last byte");
        self.stats.read_bytes += chunk.len as u64;
        // The session whose chunk this is: the read with this id whose
        // reader is out. If it was dropped while its chunk was in flight
        // there is none, even if a new session took the id meanwhile.
        let owner = self.sessions.iter().position(|s| match s {
            Session::Read { id, reader: None, .. } => *id == chunk.id && matches!(chunk.source, Source::Snapshot(_)),
            Session::HandleRead { id, sending: true, .. } => {
                *id == chunk.id && matches!(chunk.source, Source::Handle(_))
            }
            _ => false,
        });
        let Some(index) = owner else {
            self.release(chunk.source);
            self.check_drained();
            return;
        };
        let finished = match &mut self.sessions[index] {
            Session::Read { size, offset, .. } | Session::HandleRead { end: size, offset, .. } => {
                *offset += chunk.len as u64;
                *offset >= *size || chunk.failed
            }
            _ => return,
        };
        // A handle read that failed mid-chunk failed because the handle was
        // closed under it (or the file shrank): say so.
        let cause = match chunk.source {
            Source::Handle(_) => FsError::BadHandle,
            Source::Snapshot(_) => FsError::Io,
        };
        self.put_back(index, chunk.source);
        if finished {
            let session = self.sessions.swap_remove(index);
            self.close(session);
            let result = if chunk.failed { Err(("read", cause)) } else { Ok(()) };
            self.respond(chunk.id, result);
        }
    }

    /// Gives a chunk's source back to its session.
    fn put_back(&mut self, index: usize, source: Source<F::Reader>) {
        match (&mut self.sessions[index], source) {
            (Session::Read { reader, .. }, Source::Snapshot(r)) => *reader = Some(r),
            (Session::HandleRead { sending, .. }, Source::Handle(_)) => *sending = false,
            (_, source) => self.release(source),
        }
    }
}

/// A `List` response's entries, read from the filesystem on each visit.
struct ListSource<'x, F> {
    fs: RefCell<&'x mut F>,
    dir: &'x str,
    count: usize,
    wall: Option<(u64, u64)>,
    current: bool,
}

/// A child's path as Rust's `Path::join` makes it (what the reference's
/// `read_dir` entries carry): the directory as sent, a `/` unless it ends
/// with one, the name.
fn join<'p>(full: &'p mut String<{ MAX_PATH_LEN + MAX_NAME_LEN + 1 }>, dir: &str, name: &str) -> &'p str {
    full.clear();
    let _ = full.push_str(dir);
    if !dir.ends_with('/') {
        let _ = full.push('/');
    }
    let _ = full.push_str(name);
    full.as_str()
}

impl<F: Filesystem> EntrySource for ListSource<'_, F> {
    fn count(&self) -> usize {
        self.count
    }

    fn for_each_entry(&self, f: &mut dyn FnMut(&FsEntryInfo<'_>)) {
        let mut fs = self.fs.borrow_mut();
        let mut n = 0usize;
        let mut full = String::<{ MAX_PATH_LEN + MAX_NAME_LEN + 1 }>::new();
        let _ = fs.list(self.dir, &mut |name, m| {
            // Never more entries than counted: the array head says `count`.
            if n == self.count {
                return;
            }
            n += 1;
            f(&entry_info(join(&mut full, self.dir, name), m, self.wall, self.current));
        });
    }
}

/// A `ReadDir` batch, taken from the directory once and held by name.
struct BatchSource<'x> {
    dir: &'x str,
    batch: &'x [(String<MAX_NAME_LEN>, Metadata)],
    wall: Option<(u64, u64)>,
}

impl EntrySource for BatchSource<'_> {
    fn count(&self) -> usize {
        self.batch.len()
    }

    fn for_each_entry(&self, f: &mut dyn FnMut(&FsEntryInfo<'_>)) {
        let mut full = String::<{ MAX_PATH_LEN + MAX_NAME_LEN + 1 }>::new();
        for (name, m) in self.batch {
            f(&entry_info(join(&mut full, self.dir, name), m, self.wall, true));
        }
    }
}

/// Unix seconds of a time. `wall` is the last clock sync (monotonic ns,
/// Unix ns): a monotonic time (a change before any sync) is unknown until
/// then.
fn unix_seconds(t: Mtime, wall: Option<(u64, u64)>) -> Option<i64> {
    match t {
        Mtime::Unknown => None,
        Mtime::Unix(secs) => Some(secs),
        Mtime::Monotonic(ns) => wall.and_then(|(sync_mono, sync_unix)| {
            let unix_ns = i128::from(sync_unix) + i128::from(ns) - i128::from(sync_mono);
            i64::try_from(unix_ns.div_euclid(1_000_000_000)).ok()
        }),
    }
}

/// The wire form of an entry's metadata: 9 fields for the current
/// dialect, the seed-era 5 otherwise.
fn entry_info<'p>(path: &'p str, m: &Metadata, wall: Option<(u64, u64)>, current: bool) -> FsEntryInfo<'p> {
    let kind: FsEntryKind<'p> = m.kind.map(|never| match never {});
    let modified = unix_seconds(m.modified, wall);
    let extra =
        current.then(|| EntryExtra { uid: m.uid, gid: m.gid, atime: unix_seconds(m.accessed, wall), mtime: modified });
    FsEntryInfo { path, kind, size: m.size, mode: m.mode, modified, extra }
}

/// The owner a `user` field names: `None` is root (as the reference); a
/// numeric `uid[:gid]` (gid defaults to uid) or `root`. The guest has no
/// user database, so any other name is refused.
fn parse_user(user: Option<&str>) -> Result<Owner, ()> {
    let Some(user) = user else { return Ok(Owner::ROOT) };
    let (u, g) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    // Decimal digits only (a small parser: this runs in the guest).
    let id = |s: &str| -> Result<u32, ()> {
        if s == "root" {
            return Ok(0);
        }
        if s.is_empty() {
            return Err(());
        }
        s.bytes().try_fold(0u32, |n, b| match b {
            b'0'..=b'9' => n.checked_mul(10).and_then(|n| n.checked_add(u32::from(b - b'0'))).ok_or(()),
            _ => Err(()),
        })
    };
    let uid = id(u)?;
    let gid = match g {
        Some(g) => id(g)?,
        None => uid,
    };
    Ok(Owner { uid, gid })
}

fn set_attrs(a: &FsSetAttrs) -> SetAttrs {
    SetAttrs { size: a.size, mode: a.mode, uid: a.uid, gid: a.gid, atime: a.atime, mtime: a.mtime }
}

fn release_open<F: Filesystem>(fs: &mut F, open: Open<F>) {
    match open {
        Open::File(file) => fs.close(file),
        Open::Dir(dir) => fs.close_dir(dir),
    }
}

/// A handle write that got another byte count than it announced.
struct LenMismatch {
    expected: u64,
    got: u64,
    /// Found at the empty chunk (else when a chunk went past `expected`).
    at_end: bool,
}

/// The reference's texts (without an op prefix).
impl core::fmt::Display for LenMismatch {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self.at_end {
            true => write!(f, "write length mismatch: expected {}, wrote {}", self.expected, self.got),
            false => write!(f, "write length mismatch: expected {}, received at least {}", self.expected, self.got),
        }
    }
}

/// Why a handle write ended early.
enum WriteFailure {
    Fs(FsError),
    Len(LenMismatch),
}

impl From<LenMismatch> for WriteFailure {
    fn from(m: LenMismatch) -> Self {
        WriteFailure::Len(m)
    }
}

/// Decodes the payload of a type the host sends to the guest; `None` for
/// the types only the guest sends.
fn decode_inbound(t: MessageType, p: &[u8]) -> Result<Option<Body<'_>>, wire::Error> {
    use wire::DecodePayload;
    Ok(Some(match t {
        MessageType::InitAck => Body::InitAck(DecodePayload::decode(p)?),
        MessageType::ClockSync => Body::ClockSync(DecodePayload::decode(p)?),
        MessageType::Error => Body::Error(DecodePayload::decode(p)?),
        MessageType::RelayClientDisconnected => Body::RelayClientDisconnected(DecodePayload::decode(p)?),
        MessageType::FsRequest => Body::FsRequest(DecodePayload::decode(p)?),
        MessageType::FsData => Body::FsData(DecodePayload::decode(p)?),
        MessageType::Shutdown => Body::Shutdown(DecodePayload::decode(p)?),
        MessageType::Ping => Body::Ping(DecodePayload::decode(p)?),
        MessageType::RelayFlow => Body::RelayFlow(DecodePayload::decode(p)?),
        MessageType::InitResolved | MessageType::Ready | MessageType::FsResponse | MessageType::Pong => {
            return Ok(None);
        }
    }))
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
