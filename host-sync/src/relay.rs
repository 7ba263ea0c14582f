//! The relay: one guest stream shared by many clients (threads of this
//! process and other processes) through a Unix socket, speaking the
//! reference relay protocol.
//!
//! - Up to [`RELAY_SLOTS`] clients; slot `i` owns the ids of
//!   [`wire::relay::slot_range`]`(i)`.
//! - On accept the relay writes the slot's range (`u32 BE` start, `u32 BE`
//!   end) and the guest's cached `core.ready` frame. A full relay writes the
//!   empty range [`FULL_GREETING`] and closes.
//! - Frames are forwarded both ways without decoding their CBOR.
//!
//! Every decision — who gets a slot and when a slot may be reused, which
//! client frames reach the guest, where a guest frame goes, who is cut off
//! when a memory bound is reached — is [`RelayCore`]'s; see
//! [`relay_core`](crate::relay_core) for the guarantees:
//!
//! - A client receives only frames of ids it sent on its own connection: a
//!   slot is reused only after the guest confirmed (a barrier `core.pong`)
//!   that nothing of the previous client's is in flight.
//! - Host-only messages cannot come from a client: a client's frames reach
//!   the guest only on its own ids, plus `core.shutdown` on id 0 (which
//!   [`RelayOptions::client_shutdown`] can forbid).
//! - The thread that reads the guest never waits for a client. A client
//!   that falls behind by half its queue has its read data paused in the
//!   guest until it catches up (`picosandbox.relay.flow`); one that falls
//!   [`CLIENT_QUEUE_BYTES`] behind anyway (a guest without flow control) is
//!   disconnected, and all clients together hold at most
//!   [`RELAY_QUEUE_BYTES`].
//!
//! Threads: one reads the guest and routes; one writes the relay's own
//! flow frames to the guest; per client, one reads its frames
//! and writes them to the guest (under one lock, so frames are whole and a
//! client's disconnect notice follows its last frame), one writes its queue.
//! A client frame is at most [`wire::MAX_FRAME_BYTES`] and each client
//! thread holds one at a time.

use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

pub use wire::relay::{RELAY_SLOTS, SLOT_STEP};

pub use crate::relay_core::{
    Admit, CLIENT_QUEUE_BYTES, Eviction, FULL_GREETING, Lease, PAUSED_CLIENT_TIMEOUT_NS, PlantedBug, RELAY_QUEUE_BYTES,
    RelayCore, RelayOptions, RelayStats, Route, Slot, SlotState, barrier_id,
};

use crate::client::{Client, ClientOptions};
use crate::conn::{self, header};
use crate::error::Result;
use crate::proto::ReadyInfo;
use crate::sync::{FrameQueue, Popped, lock};

/// How long the relay waits to write a greeting to a new client.
const GREETING_TIMEOUT: Duration = Duration::from_secs(5);

/// Frames waiting to be written to one client. Its size is bounded by
/// [`RelayCore`], which counts every frame before it is queued, so a push
/// never waits; a close drops what is queued.
struct Outbound {
    queue: FrameQueue<()>,
}

impl Outbound {
    fn new() -> Arc<Outbound> {
        Arc::new(Outbound { queue: FrameQueue::new() })
    }

    /// Queues a frame (never waits; dropped once the queue is closed).
    fn push(&self, frame: Vec<u8>) {
        self.queue.push(frame, usize::MAX, Instant::now());
    }

    /// The next frame, waiting for one; `None` once closed.
    fn pop(&self) -> Option<Vec<u8>> {
        match self.queue.pop(None) {
            Popped::Frame(frame) => Some(frame),
            Popped::Closed(()) | Popped::TimedOut => None,
        }
    }

    /// Closes the queue and drops what it holds.
    fn close(&self) {
        self.queue.close((), |_| false);
    }
}

/// One attached client.
struct Attached {
    lease: Lease,
    stream: UnixStream,
    out: Arc<Outbound>,
}

impl Attached {
    /// Cuts the client off: its queue goes, its connection closes (its
    /// reader then detaches it).
    fn disconnect(&self) {
        self.out.close();
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
    }
}

struct Shared {
    core: Mutex<RelayCore>,
    /// Signalled when `core` has frames of the relay's own for the guest.
    for_guest: Condvar,
    clients: Mutex<Vec<Option<Attached>>>,
    /// Writes to the guest. Taken before `core` wherever both are held.
    guest: Mutex<UnixStream>,
    ready: ReadyInfo,
    stopped: AtomicBool,
    /// The relay's time origin, for [`RelayCore::tick`].
    started: std::time::Instant,
}

/// A running relay.
pub struct Relay {
    shared: Arc<Shared>,
    socket: Option<PathBuf>,
}

impl Relay {
    /// Starts relaying `guest` (a stream whose handshake is done) with the
    /// default [`RelayOptions`]. With a socket path, other processes can
    /// connect there (mode 0600).
    pub fn start(guest: UnixStream, ready: ReadyInfo, socket: Option<&Path>) -> Result<Relay> {
        Relay::start_with(guest, ready, socket, RelayOptions::default())
    }

    /// [`Relay::start`] with settings.
    pub fn start_with(
        guest: UnixStream,
        ready: ReadyInfo,
        socket: Option<&Path>,
        options: RelayOptions,
    ) -> Result<Relay> {
        let reader = guest.try_clone()?;
        let shared = Arc::new(Shared {
            core: Mutex::new(RelayCore::new(options)),
            for_guest: Condvar::new(),
            clients: Mutex::new((0..RELAY_SLOTS).map(|_| None).collect()),
            guest: Mutex::new(guest),
            ready,
            stopped: AtomicBool::new(false),
            started: std::time::Instant::now(),
        });
        let s = Arc::clone(&shared);
        thread::Builder::new().name("picosandbox-relay-guest".into()).spawn(move || guest_loop(s, reader))?;
        let s = Arc::clone(&shared);
        thread::Builder::new().name("picosandbox-relay-flow".into()).spawn(move || flow_loop(s))?;
        if let Some(path) = socket {
            let listener = UnixListener::bind(path)?;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
            let s = Arc::clone(&shared);
            thread::Builder::new().name("picosandbox-relay-accept".into()).spawn(move || accept_loop(s, listener))?;
        }
        Ok(Relay { shared, socket: socket.map(Path::to_path_buf) })
    }

    /// The socket other processes connect to, if any.
    pub fn socket(&self) -> Option<&Path> {
        self.socket.as_deref()
    }

    /// A client in this process, attached like any other (one slot), but
    /// always allowed to send `core.shutdown`: it is the host's own.
    pub fn client(&self, options: ClientOptions) -> Result<Client> {
        let (ours, theirs) = UnixStream::pair()?;
        attach(&self.shared, theirs, true)?;
        Client::over_relay(ours, options)
    }

    /// Clients attached now.
    pub fn clients(&self) -> usize {
        lock(&self.shared.core).clients()
    }

    /// Counters: refused client frames, dropped guest frames, evictions,
    /// drained slots.
    pub fn stats(&self) -> RelayStats {
        lock(&self.shared.core).stats()
    }

    /// Bytes queued for all clients now (at most [`RelayOptions::total_queue_bytes`]).
    pub fn queued_bytes(&self) -> usize {
        lock(&self.shared.core).queued_bytes()
    }

    /// Slots whose client left and whose drain the guest has not confirmed yet.
    pub fn draining(&self) -> usize {
        lock(&self.shared.core).draining()
    }

    /// Guest frames dropped because no attached client owned their id.
    pub fn dropped_frames(&self) -> u64 {
        self.stats().dropped
    }

    /// Client frames refused.
    pub fn refused_frames(&self) -> u64 {
        self.stats().refused
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        stop(&self.shared);
        if let Some(path) = &self.socket {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Stops relaying: disconnects every client and the guest stream.
fn stop(shared: &Shared) {
    shared.stopped.store(true, Ordering::SeqCst);
    shared.for_guest.notify_all();
    let _ = lock(&shared.guest).shutdown(std::net::Shutdown::Both);
    for client in lock(&shared.clients).iter().flatten() {
        client.disconnect();
    }
}

fn accept_loop(shared: Arc<Shared>, listener: UnixListener) {
    for stream in listener.incoming() {
        if shared.stopped.load(Ordering::SeqCst) {
            return;
        }
        if let Ok(stream) = stream {
            let _ = attach(&shared, stream, false);
        }
    }
}

/// Greets a new client and starts its threads; a full relay says so and
/// closes the connection.
fn attach(shared: &Arc<Shared>, mut stream: UnixStream, host: bool) -> Result<()> {
    stream.set_write_timeout(Some(GREETING_TIMEOUT))?;
    let lease = {
        let mut core = lock(&shared.core);
        if host { core.attach_host() } else { core.attach() }
    };
    let Some(lease) = lease else {
        let _ = stream.write_all(&FULL_GREETING);
        let _ = stream.shutdown(std::net::Shutdown::Both);
        return Err(
            io::Error::new(io::ErrorKind::QuotaExceeded, crate::relay_core::GreetingError::Full.to_string()).into()
        );
    };
    let greeting = RelayCore::greeting(lease, &shared.ready.frame);
    if let Err(e) = stream.write_all(&greeting).and_then(|()| stream.set_write_timeout(None)) {
        let _ = stream.shutdown(std::net::Shutdown::Both);
        detach(shared, lease);
        return Err(e.into());
    }
    let out = Outbound::new();
    let (reader, writer) = (stream.try_clone()?, stream.try_clone()?);
    lock(&shared.clients)[lease.slot] = Some(Attached { lease, stream, out: Arc::clone(&out) });
    let s = Arc::clone(shared);
    let slot = lease.slot;
    thread::Builder::new().name(format!("picosandbox-relay-{slot}")).spawn(move || client_loop(s, lease, reader))?;
    let s = Arc::clone(shared);
    thread::Builder::new()
        .name(format!("picosandbox-relay-{slot}-out"))
        .spawn(move || write_loop(s, lease, out, writer))?;
    Ok(())
}

/// Writes a client's queued frames until its queue closes.
fn write_loop(shared: Arc<Shared>, lease: Lease, out: Arc<Outbound>, mut stream: UnixStream) {
    while let Some(frame) = out.pop() {
        let written = stream.write_all(&frame);
        {
            let mut core = lock(&shared.core);
            core.delivered(lease, frame.len());
            if core.wants_guest() {
                shared.for_guest.notify_all();
            }
        }
        if written.is_err() {
            out.close();
            let _ = stream.shutdown(std::net::Shutdown::Both);
            return;
        }
    }
}

/// Forwards a client's frames to the guest until it leaves, then detaches it.
fn client_loop(shared: Arc<Shared>, lease: Lease, mut stream: UnixStream) {
    while let Ok(Some(frame)) = conn::read_frame(&mut stream) {
        let (id, flags) = header(&frame);
        // Admission and the write happen under the guest lock, so a frame
        // admitted before the client is detached reaches the guest before
        // its disconnect notice.
        let mut guest = lock(&shared.guest);
        let admit = lock(&shared.core).admit(lease, id, flags);
        match admit {
            Admit::Forward => {
                if guest.write_all(&frame).is_err() {
                    break;
                }
            }
            Admit::Refuse(answer) => {
                drop(guest);
                if let Some(answer) = answer {
                    queue_for(&shared, lease, answer);
                }
            }
            Admit::Evict(_) => {
                drop(guest);
                disconnect(&shared, lease);
                break;
            }
        }
    }
    detach(&shared, lease);
}

/// Frees a client's slot: closes its connection and tells the guest (the
/// notice and the barrier ping), unless the relay is stopping.
fn detach(shared: &Shared, lease: Lease) {
    let mut guest = lock(&shared.guest);
    {
        let mut clients = lock(&shared.clients);
        if clients[lease.slot].as_ref().is_some_and(|a| a.lease == lease) {
            let attached = clients[lease.slot].take().expect("checked above");
            attached.disconnect();
        }
    }
    let bye = lock(&shared.core).detach(lease);
    if !bye.is_empty() && !shared.stopped.load(Ordering::SeqCst) {
        let _ = guest.write_all(&bye);
    }
}

/// Queues a counted frame for a client, if it is still attached.
fn queue_for(shared: &Shared, lease: Lease, frame: Vec<u8>) {
    let clients = lock(&shared.clients);
    match clients[lease.slot].as_ref() {
        Some(a) if a.lease == lease => a.out.push(frame),
        // Gone meanwhile: its detach dropped the count with its queue.
        _ => {}
    }
}

/// Cuts a client off (it stays attached until its reader ends).
fn disconnect(shared: &Shared, lease: Lease) {
    if let Some(a) = lock(&shared.clients)[lease.slot].as_ref().filter(|a| a.lease == lease) {
        a.disconnect();
    }
}

/// How long the flow thread sleeps at most before it looks again (a
/// safety net against a missed wake-up at stop).
const FLOW_POLL: Duration = Duration::from_millis(100);

/// Writes the relay's own frames (pause and resume of a client's read data)
/// to the guest, and cuts off paused clients that stopped reading. Under the guest lock, as a detach's notice is, so a change
/// for a slot never follows that slot's disconnect notice.
fn flow_loop(shared: Arc<Shared>) {
    while !shared.stopped.load(Ordering::SeqCst) {
        // Paused clients that read nothing for too long are cut off.
        loop {
            let now = shared.started.elapsed().as_nanos() as u64;
            let Some(stalled) = lock(&shared.core).tick(now) else { break };
            disconnect(&shared, stalled);
        }
        {
            let core = lock(&shared.core);
            if !core.wants_guest() {
                let _ = shared.for_guest.wait_timeout(core, FLOW_POLL);
                continue;
            }
        }
        let mut guest = lock(&shared.guest);
        let frames: Vec<Vec<u8>> = {
            let mut core = lock(&shared.core);
            std::iter::from_fn(|| core.poll_guest()).collect()
        };
        for frame in frames {
            if guest.write_all(&frame).is_err() {
                return;
            }
        }
    }
}

/// Routes guest frames to their clients until the guest stream ends. Never
/// waits for a client.
fn guest_loop(shared: Arc<Shared>, mut guest: UnixStream) {
    while let Ok(Some(frame)) = conn::read_frame(&mut guest) {
        let route = {
            let mut core = lock(&shared.core);
            let route = core.route(&frame);
            if core.wants_guest() {
                shared.for_guest.notify_all();
            }
            route
        };
        match route {
            Route::Deliver { lease, evict } => {
                if let Some((evicted, _)) = evict {
                    disconnect(&shared, evicted);
                }
                queue_for(&shared, lease, frame);
            }
            Route::Evict(lease, _) => disconnect(&shared, lease),
            Route::Drop | Route::Drained(_) => {}
        }
    }
    stop(&shared);
}
