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
//! # Bounds and what happens at them
//!
//! - Sessions (reads and writes in flight): [`MAX_SESSIONS`]; one more is
//!   answered `ok: false` "too many sessions in flight".
//! - Receive buffer: one frame of [`wire::MAX_FRAME`]; when frames pile up
//!   because the outbox is full, [`Agent::rx_space`] shrinks to nothing and
//!   the driver stops reading (backpressure).
//! - Outbox: the lent transmit buffer. An input frame is handled only when
//!   [`INPUT_RESERVE`] bytes are free, which also covers the last response
//!   of every open session. A `List` response larger than the outbox can
//!   ever hold is answered `ok: false` "too many entries for one frame".

use core::cell::RefCell;
use core::fmt::Write as _;

use heapless::String;
use wire::{
    Body, CORE_ERROR_GENERATION, CoreError, CoreErrorKind, DATA_FRAME_HEAD_MAX, EntrySource, Envelope, FsEntryInfo,
    FsEntryKind, FsOp, FsResponse, FsResponseData, InitResolved, MessageType, Pong, Ready, RelayClientDisconnected,
    ResolvedUser,
};

use crate::driver::PowerOff;
use crate::fs::{EntryKind, Filesystem, FsError, Metadata, Mtime};
use crate::outbox::Outbox;
use crate::path::{self, MAX_NAME_LEN, MAX_PATH_LEN, PathBuf};
use crate::{MAX_SESSIONS, log};

/// Outbox bytes that must be free before an input frame is handled: the
/// largest single response to it (a `Stat` with a 4 KiB path, an error),
/// plus the last response of every session that could end meanwhile.
pub const INPUT_RESERVE: usize = RESPONSE_MAX + MAX_SESSIONS * SESSION_END_MAX;

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
        }
    }
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
    /// The stream was corrupt at the frame level; input is discarded until
    /// [`Agent::reset_stream`].
    AwaitingStream,
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
    },
}

impl<F: Filesystem> Session<F> {
    fn id(&self) -> u32 {
        match self {
            Session::Read { id, .. } | Session::Write { id, .. } => *id,
        }
    }
}

/// A `core.fs.data` frame of a read being sent: its head, then `len`
/// bytes read from the filesystem as they are sent.
struct Chunk<R> {
    id: u32,
    reader: R,
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

/// Zeros to finish a data frame whose source failed mid-frame.
static ZEROS: [u8; 4096] = [0; 4096];

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
    chunk: Option<Chunk<F::Reader>>,
    /// Id of the read session that sent the last chunk (round-robin).
    last_read_id: u32,
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
    /// Normalized request paths (kept here, not on the stack: 2 x 4 KiB).
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
    /// least [`MIN_OUTBOX`] bytes).
    pub fn new(fs: F, rx: &'b mut [u8], tx: &'b mut [u8], config: Config) -> Result<Self, BufferError> {
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
                chunk: None,
                last_read_id: 0,
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
    pub fn rx_commit(&mut self, n: usize, now_ns: u64) {
        self.rx.filled = (self.rx.filled + n).min(self.rx.buf.len());
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
            if matches!(self.core.state, State::AwaitingStream | State::ShuttingDown | State::Off) {
                self.rx.start = 0;
                self.rx.filled = 0;
                return;
            }
            let pending = &self.rx.buf[self.rx.start..self.rx.filled];
            let (frame, consumed) = match wire::parse_frame(pending) {
                Ok(wire::FrameStatus::Complete { frame, consumed }) => (frame, consumed),
                Ok(wire::FrameStatus::Incomplete { .. }) => break,
                Err(e) => {
                    self.core.stream_error(&e);
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
    pub fn transmitted(&mut self, n: usize, now_ns: u64) {
        match &mut self.core.chunk {
            // Chunk bytes free no outbox room: nothing deferred can go on.
            Some(chunk) => chunk.sent += n,
            None => {
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

    /// When [`Agent::handle_timeout`] must next be called.
    pub fn poll_timeout(&self) -> Option<u64> {
        match self.core.state {
            State::AwaitingAck { deadline_ns, .. } => Some(deadline_ns),
            _ => None,
        }
    }

    /// Handles a deadline that passed: resends `core.init.resolved`, or
    /// gives up after [`Config::ack_attempts`] and asks for power-off.
    pub fn handle_timeout(&mut self, now_ns: u64) {
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

    /// Starts over on a fresh stream after a frame-level corruption:
    /// input and output are dropped, every session is aborted without a
    /// response, and the handshake starts again.
    pub fn reset_stream(&mut self, now_ns: u64) {
        self.rx.start = 0;
        self.rx.filled = 0;
        self.core.out.clear();
        self.core.abort_all(None);
        if let Some(chunk) = self.core.chunk.take() {
            self.core.fs.close_read(chunk.reader);
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

    fn stream_error(&mut self, e: &wire::Error) {
        log::error!("frame-level error, awaiting a fresh stream: {}", defmt_display(e));
        self.stats.stream_errors += 1;
        self.state = State::AwaitingStream;
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
            Err((op, e)) => self.respond_error(id, op, e.as_str()),
        }
    }

    fn respond_error(&mut self, id: u32, op: &str, cause: &str) {
        let mut message = String::<MESSAGE_MAX>::new();
        let _ = write!(message, "{op}: {cause}");
        self.push(id, &FsResponse::<[FsEntryInfo<'_>; 0]>::err(&message));
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
        let body = match Body::decode(t, envelope.p) {
            Ok(body) => body,
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
                self.push_event(Event::SetWallClock(sync.unix_time_nanos));
            }
            Body::RelayClientDisconnected(range) => self.drop_range(range),
            Body::FsRequest(request) => return self.fs_request(id, request.op, now_ns, paths),
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

    fn fs_request(&mut self, id: u32, op: FsOp<'_>, now_ns: u64, paths: &mut [PathBuf; 2]) -> Handled {
        // An id is in use while it has a session, and also while a data
        // frame of a dropped session still goes out on it.
        if self.session_index(id).is_some() || self.chunk.as_ref().is_some_and(|c| c.id == id) {
            let mut message = String::<MESSAGE_MAX>::new();
            let _ = write!(message, "session id {id} is already in use");
            let t = Some(MessageType::FsRequest.as_str());
            self.core_error(id, None, CoreErrorKind::InvalidSession, &message, t);
            return Handled::Done;
        }
        let name = op_name(&op);
        let (first, second) = match op {
            FsOp::Copy { src, dst } | FsOp::Rename { src, dst } => (src, Some(dst)),
            FsOp::Stat { path }
            | FsOp::List { path }
            | FsOp::Read { path }
            | FsOp::Write { path, .. }
            | FsOp::Mkdir { path }
            | FsOp::Remove { path }
            | FsOp::RemoveDir { path } => (path, None),
        };
        let [a, b] = paths;
        let normalized = path::normalize(first, a).and_then(|()| match second {
            Some(second) => path::normalize(second, b),
            None => Ok(()),
        });
        if let Err(e) = normalized {
            self.respond(id, Err((name, e)));
            return Handled::Done;
        }
        let (a, b) = (a.as_str(), b.as_str());
        let result = match op {
            FsOp::Stat { .. } => return self.stat(id, a),
            FsOp::List { .. } => return self.list(id, a),
            FsOp::Read { .. } => {
                self.open_read(id, a);
                return Handled::Done;
            }
            FsOp::Write { mode, .. } => {
                self.open_write(id, a, mode);
                return Handled::Done;
            }
            FsOp::Mkdir { .. } => self.fs.mkdir(a, now_ns),
            FsOp::Remove { .. } => self.fs.remove(a, now_ns),
            FsOp::RemoveDir { .. } => self.fs.remove_dir(a, now_ns),
            FsOp::Copy { .. } => self.fs.copy(a, b, now_ns),
            FsOp::Rename { .. } => self.fs.rename(a, b, now_ns),
        };
        self.respond(id, result.map_err(|e| (name, e)));
        Handled::Done
    }

    fn stat(&mut self, id: u32, path: &str) -> Handled {
        match self.fs.stat(path) {
            Ok(m) => {
                let info = entry_info(path, &m, self.wall);
                let response = FsResponse::<[FsEntryInfo<'_>; 0]> {
                    ok: true,
                    error: None,
                    data: Some(FsResponseData::Stat(info)),
                };
                self.push(id, &response);
            }
            Err(e) => self.respond(id, Err(("stat", e))),
        }
        Handled::Done
    }

    fn list(&mut self, id: u32, dir: &str) -> Handled {
        let mut count = 0usize;
        if let Err(e) = self.fs.list(dir, &mut |_, _| count += 1) {
            self.respond(id, Err(("list", e)));
            return Handled::Done;
        }
        let wall = self.wall;
        let source = ListSource { fs: RefCell::new(&mut self.fs), dir, count, wall };
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

    fn open_read(&mut self, id: u32, path: &str) {
        if self.sessions.is_full() {
            return self.too_many_sessions(id, "read");
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

    fn open_write(&mut self, id: u32, path: &str, mode: Option<u32>) {
        if self.sessions.is_full() {
            return self.too_many_sessions(id, "write");
        }
        match self.fs.begin_write(path) {
            Ok(writer) => {
                if let Err(Session::Write { writer, .. }) = self.sessions.push(Session::Write { id, writer, mode }) {
                    self.fs.abort_write(writer);
                }
                self.stats.sessions_peak = self.stats.sessions_peak.max(self.sessions.len());
            }
            Err(e) => self.respond(id, Err(("write", e))),
        }
    }

    fn fs_data(&mut self, id: u32, data: &[u8], now_ns: u64) {
        let Some(index) = self.session_index(id) else {
            return self.respond_error(id, "write", "unknown write session");
        };
        let Session::Write { writer, .. } = &mut self.sessions[index] else {
            let t = Some(MessageType::FsData.as_str());
            let message = "core.fs.data sent to a read session";
            return self.core_error(id, None, CoreErrorKind::InvalidSession, message, t);
        };
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
        let Session::Write { writer, mode, .. } = self.sessions.swap_remove(index) else { return };
        let result = self.fs.commit_write(writer, mode, now_ns);
        self.respond(id, result.map_err(|e| ("write", e)));
    }

    fn drop_range(&mut self, range: RelayClientDisconnected) {
        let mut i = 0;
        while i < self.sessions.len() {
            if range.contains(self.sessions[i].id()) {
                let session = self.sessions.swap_remove(i);
                self.close(session);
            } else {
                i += 1;
            }
        }
        log::info!("relay client {}..{} disconnected", range.id_start, range.id_end_exclusive);
    }

    /// Ends a session without a response. A read whose chunk is being sent
    /// keeps its reader in the chunk until the frame is complete.
    fn close(&mut self, session: Session<F>) {
        match session {
            Session::Read { reader: Some(reader), .. } => self.fs.close_read(reader),
            Session::Read { reader: None, .. } => {}
            Session::Write { writer, .. } => self.fs.abort_write(writer),
        }
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
            if let Session::Read { id, reader: Some(_), .. } = s {
                if first.is_none_or(|(f, _)| *id < f) {
                    first = Some((*id, i));
                }
                if *id > last && next.is_none_or(|(n, _)| *id < n) {
                    next = Some((*id, i));
                }
            }
        }
        let Some((id, index)) = next.or(first) else { return false };
        let Session::Read { reader, size, offset, .. } = &mut self.sessions[index] else { return false };
        let len = (*size - *offset).min(self.config.read_chunk_size as u64) as usize;
        let mut head = [0u8; DATA_FRAME_HEAD_MAX];
        let head_len = match wire::encode_data_frame_head(id, len, &mut head) {
            Ok(n) => n,
            Err(_) => return false,
        };
        let Some(reader) = reader.take() else { return false };
        self.chunk = Some(Chunk { id, reader, offset: *offset, len, head, head_len, sent: 0, failed: false });
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
            match self.fs.read_at(&mut chunk.reader, chunk.offset + done as u64, left) {
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
        let Some(chunk) = self.chunk.take() else { return };
        self.stats.read_bytes += chunk.len as u64;
        // The session whose chunk this is: the read with this id whose
        // reader is out. If it was dropped while its chunk was in flight
        // there is none, even if a new session took the id meanwhile.
        let owner =
            self.sessions.iter().position(|s| matches!(s, Session::Read { id, reader: None, .. } if *id == chunk.id));
        let Some(index) = owner else {
            self.fs.close_read(chunk.reader);
            self.check_drained();
            return;
        };
        let Session::Read { reader, size, offset, .. } = &mut self.sessions[index] else { return };
        *offset += chunk.len as u64;
        let finished = *offset >= *size || chunk.failed;
        *reader = Some(chunk.reader);
        if finished {
            let session = self.sessions.swap_remove(index);
            self.close(session);
            let result = if chunk.failed { Err(("read", FsError::Io)) } else { Ok(()) };
            self.respond(chunk.id, result);
        }
    }
}

/// A `List` response's entries, read from the filesystem on each visit.
struct ListSource<'x, F> {
    fs: RefCell<&'x mut F>,
    dir: &'x str,
    count: usize,
    wall: Option<(u64, u64)>,
}

impl<F: Filesystem> EntrySource for ListSource<'_, F> {
    fn count(&self) -> usize {
        self.count
    }

    fn for_each_entry(&self, f: &mut dyn FnMut(&FsEntryInfo<'_>)) {
        let mut fs = self.fs.borrow_mut();
        let mut n = 0usize;
        let mut full = String::<{ MAX_PATH_LEN + MAX_NAME_LEN + 1 }>::new();
        let _ = full.push_str(if self.dir == "/" { "" } else { self.dir });
        let _ = full.push('/');
        let prefix = full.len();
        let _ = fs.list(self.dir, &mut |name, m| {
            // Never more entries than counted: the array head says `count`.
            if n == self.count {
                return;
            }
            n += 1;
            full.truncate(prefix);
            let _ = full.push_str(name);
            f(&entry_info(&full, m, self.wall));
        });
    }
}

/// The wire form of an entry's metadata. `wall` is the last clock sync
/// (monotonic ns, Unix ns): monotonic mtimes before any sync are unknown.
fn entry_info<'p>(path: &'p str, m: &Metadata, wall: Option<(u64, u64)>) -> FsEntryInfo<'p> {
    let kind = match m.kind {
        EntryKind::File => FsEntryKind::File,
        EntryKind::Dir => FsEntryKind::Dir,
        EntryKind::Symlink => FsEntryKind::Symlink,
        EntryKind::Other => FsEntryKind::Other,
    };
    let modified = match m.modified {
        Mtime::Unknown => None,
        Mtime::Unix(secs) => Some(secs),
        Mtime::Monotonic(ns) => wall.and_then(|(sync_mono, sync_unix)| {
            let unix_ns = i128::from(sync_unix) + i128::from(ns) - i128::from(sync_mono);
            i64::try_from(unix_ns.div_euclid(1_000_000_000)).ok()
        }),
    };
    FsEntryInfo { path, kind, size: m.size, mode: m.mode, modified }
}

fn op_name(op: &FsOp<'_>) -> &'static str {
    match op {
        FsOp::Stat { .. } => "stat",
        FsOp::List { .. } => "list",
        FsOp::Read { .. } => "read",
        FsOp::Write { .. } => "write",
        FsOp::Mkdir { .. } => "mkdir",
        FsOp::Remove { .. } => "remove",
        FsOp::RemoveDir { .. } => "remove_dir",
        FsOp::Copy { .. } => "copy",
        FsOp::Rename { .. } => "rename",
    }
}

/// Formats a value for a log line (defmt gets a `Display2Format`).
#[cfg(feature = "defmt")]
fn defmt_display<T: core::fmt::Display + ?Sized>(v: &T) -> defmt::Display2Format<'_, T> {
    defmt::Display2Format(v)
}

#[cfg(not(feature = "defmt"))]
fn defmt_display<T: ?Sized>(v: &T) -> &T {
    v
}
