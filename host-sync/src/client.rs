//! The client: one connection to a guest (direct, or through a relay),
//! usable from any number of threads at once.
//!
//! One reader thread reads frames and hands each to the call waiting for
//! its correlation id (a bounded mailbox per call); callers send their own
//! frames under a write lock. When the connection dies, every pending call
//! fails at once with the reason.
//!
//! Memory is bounded: a frame is at most [`wire::MAX_FRAME_BYTES`], and a
//! call's mailbox holds at most [`ClientOptions::mailbox_bytes`]; when a
//! caller falls behind, the reader waits (backpressure on the whole
//! connection) for up to the call timeout, then gives up on that call.

use std::collections::{HashMap, VecDeque};
use std::io::{self, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use wire::{Body, Flags, Frame, Message, Payload};

use crate::conn;
use crate::error::{Error, Result};
use crate::proto::{CallKind, Calls, Ids, Liveness, ReadyInfo, Route, check_generation};
use crate::relay_core::{GREETING_RANGE_LEN, GreetingError, RelayCore};
use crate::sync::{FrameQueue, Popped, lock};

/// Client settings.
#[derive(Debug, Clone, Copy)]
pub struct ClientOptions {
    /// How long a call waits for its next frame (not for its whole run: a
    /// long read keeps going while frames keep coming).
    pub call_timeout: Duration,
    /// Bytes a call's mailbox holds before the reader waits for the caller.
    pub mailbox_bytes: usize,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions { call_timeout: Duration::from_secs(30), mailbox_bytes: 4 * wire::MAX_FRAME_BYTES }
    }
}

/// A connection to a guest, cheap to clone and `Send + Sync`.
#[derive(Clone)]
pub struct Client {
    handle: Arc<Handle>,
}

/// Shuts the connection down when the last [`Client`] clone goes.
struct Handle {
    shared: Arc<Shared>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        let _ = self.shared.stream.shutdown(std::net::Shutdown::Both);
    }
}

/// Tells whether the VM behind a connection has exited, and why; consulted
/// when the connection ends so errors name the real cause. It may wait a
/// short, bounded time for a dying VM to finish exiting.
pub type ExitProbe = Arc<dyn Fn() -> Option<String> + Send + Sync>;

struct Shared {
    stream: UnixStream,
    exit_probe: Mutex<Option<ExitProbe>>,
    writer: Mutex<UnixStream>,
    state: Mutex<State>,
    ready: ReadyInfo,
    options: ClientOptions,
}

struct State {
    ids: Ids,
    calls: Calls,
    mailboxes: HashMap<u32, Arc<Mailbox>>,
    closed: Option<Closed>,
    /// Set by the owner when the VM exits, so errors name the real cause.
    vm_exit: Option<String>,
}

/// Why the connection ended.
#[derive(Debug, Clone)]
enum Closed {
    Vm(String),
    Disconnected(String),
    Protocol(String),
}

impl Closed {
    fn error(&self) -> Error {
        match self {
            Closed::Vm(why) => Error::VmExited(why.clone()),
            Closed::Disconnected(why) => Error::Disconnected(why.clone()),
            Closed::Protocol(why) => Error::Protocol(why.clone()),
        }
    }
}

/// Frames for one call: the reader pushes, the caller pops.
struct Mailbox {
    queue: FrameQueue<Closed>,
}

impl Mailbox {
    fn new() -> Arc<Mailbox> {
        Arc::new(Mailbox { queue: FrameQueue::new() })
    }

    /// Queues a frame, waiting up to `timeout` for room. Returns false if
    /// the caller never made room (the frame is dropped).
    fn push(&self, frame: Vec<u8>, limit: usize, timeout: Duration) -> bool {
        self.queue.push(frame, limit, Instant::now() + timeout)
    }

    /// Ends the call's stream. Queued frames are dropped unless the call's
    /// last frame is among them: without it the call cannot succeed, so it
    /// fails now rather than after draining data.
    fn close(&self, why: &Closed) {
        let complete = |frames: &VecDeque<Vec<u8>>| {
            frames.iter().any(|f| Frame::parse(f).is_ok_and(|frame| frame.flags.contains(Flags::TERMINAL)))
        };
        self.queue.close(why.clone(), complete);
    }

    /// The next frame, waiting up to `timeout` (`None`: do not wait).
    fn pop(&self, timeout: Option<Duration>) -> Result<Option<Vec<u8>>> {
        match self.queue.pop(Some(Instant::now() + timeout.unwrap_or_default())) {
            Popped::Frame(frame) => Ok(Some(frame)),
            Popped::Closed(why) => Err(why.error()),
            Popped::TimedOut if timeout.is_none() => Ok(None),
            Popped::TimedOut => Err(Error::Timeout(timeout.unwrap_or_default())),
        }
    }
}

/// One call in flight: receives its frames; forgets the call when dropped.
pub(crate) struct Call<'c> {
    shared: &'c Shared,
    id: u32,
    mailbox: Arc<Mailbox>,
}

impl Call<'_> {
    /// The next frame of this call.
    pub(crate) fn recv(&self) -> Result<Vec<u8>> {
        self.mailbox.pop(Some(self.shared.options.call_timeout)).map(Option::unwrap_or_default)
    }

    /// The next frame if one is already here.
    pub(crate) fn try_recv(&self) -> Result<Option<Vec<u8>>> {
        self.mailbox.pop(None)
    }

    /// Sends a frame that belongs to this call.
    pub(crate) fn send<P: Payload>(&self, payload: &P) -> Result<()> {
        self.shared.send(&crate::proto::try_frame(self.id, payload)?)
    }

    /// Sends one `core.fs.data` chunk straight from `data` (no copy).
    pub(crate) fn send_data(&self, data: &[u8]) -> Result<()> {
        let mut head = [0u8; wire::DATA_FRAME_HEAD_MAX];
        let n = wire::encode_data_frame_head(self.id, data.len(), &mut head)
            .map_err(|e| Error::Protocol(format!("data chunk: {e}")))?;
        self.shared.send_parts(&[&head[..n], data])
    }
}

impl Drop for Call<'_> {
    fn drop(&mut self) {
        let mut state = lock(&self.shared.state);
        state.calls.close(self.id);
        state.mailboxes.remove(&self.id);
        drop(state);
        self.mailbox.queue.discard();
    }
}

impl Shared {
    fn closed_error(&self) -> Error {
        let state = lock(&self.state);
        match (&state.vm_exit, &state.closed) {
            (Some(why), _) => Error::VmExited(why.clone()),
            (None, Some(closed)) => closed.error(),
            (None, None) => Error::Disconnected("the connection failed".into()),
        }
    }

    fn send(&self, frame: &[u8]) -> Result<()> {
        self.send_parts(&[frame])
    }

    fn send_parts(&self, parts: &[&[u8]]) -> Result<()> {
        let mut writer = lock(&self.writer);
        for part in parts {
            if let Err(e) = writer.write_all(part) {
                drop(writer);
                self.close(self.explain(Closed::Disconnected(e.to_string())));
                return Err(self.closed_error());
            }
        }
        Ok(())
    }

    /// Why the stream ended: the VM's exit when the probe sees one (a
    /// protocol violation is reported as such either way).
    fn explain(&self, why: Closed) -> Closed {
        if let Closed::Protocol(_) = why {
            return why;
        }
        let probe = lock(&self.exit_probe).clone();
        match probe.and_then(|p| p()) {
            Some(exit) => Closed::Vm(exit),
            None => why,
        }
    }

    /// Ends the connection: every pending call fails with `why`.
    fn close(&self, why: Closed) {
        let mut state = lock(&self.state);
        let why = match &state.vm_exit {
            Some(exit) => Closed::Vm(exit.clone()),
            None => why,
        };
        state.closed.get_or_insert(why.clone());
        for mailbox in state.mailboxes.values() {
            mailbox.close(&why);
        }
        drop(state);
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
    }
}

/// Reads frames until the connection ends, routing each to its call.
fn read_loop(shared: Arc<Shared>, mut stream: UnixStream) {
    let why = loop {
        let frame = match conn::read_frame(&mut stream) {
            Ok(Some(frame)) => frame,
            Ok(None) => break Closed::Disconnected("the peer closed the connection".into()),
            Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                break Closed::Protocol(format!("the peer sent a bad frame: {e}"));
            }
            Err(e) => break Closed::Disconnected(e.to_string()),
        };
        let Ok(parsed) = Frame::parse(&frame) else { continue };
        let mailbox = {
            let mut state = lock(&shared.state);
            match state.calls.route(&parsed) {
                Route::Call { id, last: true } => state.mailboxes.remove(&id),
                Route::Call { id, last: false } => state.mailboxes.get(&id).cloned(),
                Route::Stray { .. } => None,
            }
        };
        if let Some(mailbox) = mailbox
            && !mailbox.push(frame, shared.options.mailbox_bytes, shared.options.call_timeout)
        {
            let stalled = Closed::Disconnected("the caller stopped taking this call's data".into());
            mailbox.close(&stalled);
        }
    };
    // A stream that broke because the VM died should say so.
    let why = shared.explain(why);
    shared.close(why);
}

impl Client {
    /// A client over a guest stream whose handshake is done: it owns every
    /// correlation id but 0.
    pub fn over_guest(stream: UnixStream, ready: ReadyInfo, options: ClientOptions) -> Result<Client> {
        Client::start(stream, ready, Ids::new(1, u32::MAX), options)
    }

    /// Connects to a sandbox's relay socket (`picosandbox run` prints it).
    pub fn connect(socket: impl AsRef<Path>) -> Result<Client> {
        let stream = UnixStream::connect(socket.as_ref())?;
        Client::over_relay(stream, ClientOptions::default())
    }

    /// A client over a stream to a relay: reads the greeting (id range and
    /// the guest's cached `core.ready`).
    pub fn over_relay(mut stream: UnixStream, options: ClientOptions) -> Result<Client> {
        stream.set_read_timeout(Some(options.call_timeout))?;
        let mut range = [0u8; GREETING_RANGE_LEN];
        io::Read::read_exact(&mut stream, &mut range).map_err(|e| match e.kind() {
            io::ErrorKind::UnexpectedEof => {
                Error::Disconnected("the relay closed the connection before its greeting".into())
            }
            _ => Error::Protocol(format!("relay greeting: {e}")),
        })?;
        let (start, end) = RelayCore::parse_greeting(&range).map_err(|e| match e {
            GreetingError::Full => Error::Disconnected(e.to_string()),
            GreetingError::BadRange { .. } => Error::Protocol(e.to_string()),
        })?;
        let ready = match conn::read_frame(&mut stream) {
            Ok(Some(frame)) => ReadyInfo::from_frame(&frame)?,
            Ok(None) => return Err(Error::Disconnected("the relay closed before its greeting".into())),
            Err(e) => return Err(Error::Protocol(format!("relay greeting: {e}"))),
        };
        stream.set_read_timeout(None)?;
        Client::start(stream, ready, Ids::new(start, end), options)
    }

    fn start(stream: UnixStream, ready: ReadyInfo, ids: Ids, options: ClientOptions) -> Result<Client> {
        let reader = stream.try_clone()?;
        let shared = Arc::new(Shared {
            exit_probe: Mutex::new(None),
            writer: Mutex::new(stream.try_clone()?),
            stream,
            state: Mutex::new(State {
                ids,
                calls: Calls::new(),
                mailboxes: HashMap::new(),
                closed: None,
                vm_exit: None,
            }),
            ready,
            options,
        });
        let for_reader = Arc::clone(&shared);
        thread::Builder::new().name("picosandbox-client".into()).spawn(move || read_loop(for_reader, reader))?;
        Ok(Client { handle: Arc::new(Handle { shared }) })
    }

    fn shared(&self) -> &Shared {
        &self.handle.shared
    }

    /// The guest's `core.ready`.
    pub fn ready(&self) -> &ReadyInfo {
        &self.shared().ready
    }

    /// The protocol generation agreed with the guest.
    pub fn generation(&self) -> u8 {
        self.shared().ready.generation()
    }

    /// Whether the connection is still up.
    pub fn is_open(&self) -> bool {
        lock(&self.shared().state).closed.is_none()
    }

    /// Frames that arrived for no waiting call (late frames of abandoned calls).
    pub fn stray_frames(&self) -> u64 {
        lock(&self.shared().state).calls.strays
    }

    /// Sets how the client learns, when its stream ends, whether the VM
    /// exited (so calls fail with [`Error::VmExited`] and the reason).
    pub fn set_exit_probe(&self, probe: ExitProbe) {
        *lock(&self.shared().exit_probe) = Some(probe);
    }

    /// Records that the VM exited: pending and later calls fail with
    /// [`Error::VmExited`] and this reason.
    pub fn vm_exited(&self, why: String) {
        lock(&self.shared().state).vm_exit.get_or_insert(why);
        self.shared().close(Closed::Disconnected(String::new()));
    }

    /// Closes the connection; pending calls fail.
    pub fn close(&self) {
        self.shared().close(Closed::Disconnected("closed by the host".into()));
    }

    /// Opens a call of type `t` and sends its first frame.
    pub(crate) fn begin<P: Payload>(&self, kind: CallKind, payload: &P) -> Result<Call<'_>> {
        let shared = self.shared();
        check_generation(P::TYPE, shared.ready.generation())?;
        let mailbox = Mailbox::new();
        let id = {
            let mut state = lock(&shared.state);
            if let Some(closed) = &state.closed {
                return Err(match &state.vm_exit {
                    Some(why) => Error::VmExited(why.clone()),
                    None => closed.error(),
                });
            }
            let id = state.ids.allocate()?;
            state.calls.open(id, kind);
            state.mailboxes.insert(id, Arc::clone(&mailbox));
            id
        };
        let call = Call { shared, id, mailbox };
        call.send(payload)?;
        Ok(call)
    }

    /// Sends a frame that is no call (`core.shutdown`).
    pub(crate) fn send_control<P: Payload>(&self, payload: &P) -> Result<()> {
        check_generation(P::TYPE, self.generation())?;
        self.shared().send(&crate::proto::try_frame(0, payload)?)
    }

    /// A liveness round trip; returns its duration. Uses `core.ping` when
    /// the agreed generation has it (6 and later), else a `Stat` of `/`,
    /// which every generation with a filesystem answers.
    pub fn ping(&self) -> Result<Duration> {
        let start = Instant::now();
        if Liveness::for_generation(self.generation()) == Liveness::Ping {
            let call = self.begin(CallKind::Request, &wire::Ping)?;
            let frame = call.recv()?;
            match Message::decode_bytes(&frame).map(|m| m.body) {
                Ok(Body::Pong(_)) => {}
                Ok(Body::Error(e)) => return Err(Error::Guest { kind: e.kind, message: e.message.into() }),
                other => return Err(Error::Protocol(format!("expected core.pong, got {other:?}"))),
            }
        } else {
            self.fs().stat("/")?;
        }
        Ok(start.elapsed())
    }

    /// Asks the guest to power off (`core.shutdown`). Nothing answers it;
    /// the connection ends when the VM stops.
    pub fn shutdown(&self) -> Result<()> {
        self.send_control(&wire::Shutdown)
    }
}

/// Decodes a frame a call received, turning `core.error` into an error.
pub(crate) fn decode(frame: &[u8]) -> Result<Message<'_>> {
    let message = Message::decode_bytes(frame).map_err(|e| Error::Protocol(format!("undecodable frame: {e}")))?;
    if let Body::Error(e) = message.body {
        return Err(Error::Guest { kind: e.kind, message: e.message.into() });
    }
    if !message.flags_match() {
        return Err(Error::Protocol(format!("{} with flags {:#x}", message.message_type(), message.flags.bits())));
    }
    Ok(message)
}
