//! The relay: one guest stream shared by many clients (threads of this
//! process and other processes) through a Unix socket, speaking the
//! reference relay protocol.
//!
//! - Up to [`RELAY_SLOTS`] clients; slot `i` owns the ids
//!   `[i*SLOT_STEP + 1, i*SLOT_STEP + SLOT_STEP)`.
//! - On accept the relay writes the slot's range (`u32 BE` start, `u32 BE`
//!   end) and the guest's cached `core.ready` frame.
//! - Frames are forwarded both ways without decoding CBOR: guest frames go
//!   to the client whose range holds their id; a client frame whose id is
//!   outside its range is dropped, except `core.shutdown` (id 0, SHUTDOWN
//!   flag).
//! - When a client leaves, the guest gets `core.relay.client.disconnected`
//!   for the slot's range and drops its sessions; the slot then rests for
//!   [`SLOT_QUARANTINE_NS`] before a new client gets its ids.
//!
//! Bounds: a frame is at most [`wire::MAX_FRAME_BYTES`]; each client has an
//! outgoing queue of [`CLIENT_QUEUE_BYTES`]; a client that leaves it full
//! for [`SLOW_CLIENT_TIMEOUT`] is disconnected, so one stalled client cannot
//! stall the others for long. A client that sends a bad length prefix is
//! disconnected.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use wire::{Flags, RelayClientDisconnected};

use crate::client::{Client, ClientOptions};
use crate::conn::{self, header};
use crate::error::Result;
use crate::proto::{ReadyInfo, frame};

/// Client slots (the reference's 128).
pub const RELAY_SLOTS: usize = 128;

/// Ids per slot: `u32::MAX / 128`.
pub const SLOT_STEP: u32 = u32::MAX / RELAY_SLOTS as u32;

/// Bytes queued for one client before the guest reader waits for it.
pub const CLIENT_QUEUE_BYTES: usize = 4 * wire::MAX_FRAME_BYTES;

/// How long a client may leave its queue full before it is disconnected.
pub const SLOW_CLIENT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a freed slot rests before another client gets it. Frames the
/// guest sent for the departed client before it handled the disconnect
/// notice may still be on their way; a new client in the same slot reuses
/// the same ids, so it must not see them. The guest-to-relay pipeline
/// drains in milliseconds; a second leaves a wide margin.
pub const SLOT_QUARANTINE_NS: u64 = 1_000_000_000;

/// A client slot index.
pub type Slot = usize;

/// The relay's routing decisions, without I/O. Time is passed in as
/// monotonic nanoseconds.
#[derive(Debug, Clone)]
pub struct RelayCore {
    attached: [bool; RELAY_SLOTS],
    /// When each slot was last freed (`None`: never used).
    freed_at: [Option<u64>; RELAY_SLOTS],
    /// Client frames dropped for an id outside the client's range.
    pub refused: u64,
}

impl Default for RelayCore {
    fn default() -> Self {
        RelayCore { attached: [false; RELAY_SLOTS], freed_at: [None; RELAY_SLOTS], refused: 0 }
    }
}

impl RelayCore {
    /// No clients.
    pub fn new() -> RelayCore {
        RelayCore::default()
    }

    /// The ids slot `slot` may use: `[start, end)`.
    pub fn range(slot: Slot) -> (u32, u32) {
        let base = slot as u32 * SLOT_STEP;
        (base + 1, base + SLOT_STEP)
    }

    /// The slot whose range holds `id`, attached or not.
    pub fn slot_of(id: u32) -> Option<Slot> {
        let slot = (id / SLOT_STEP) as Slot;
        (slot < RELAY_SLOTS && !id.is_multiple_of(SLOT_STEP)).then_some(slot)
    }

    /// Takes a free slot, if any: a never-used slot first (lowest index),
    /// else the one freed longest ago, once its [`SLOT_QUARANTINE_NS`] has
    /// passed. `None` when every slot is taken or resting.
    pub fn attach(&mut self, now_ns: u64) -> Option<Slot> {
        let slot = (0..RELAY_SLOTS)
            .filter(|&s| !self.attached[s])
            .filter(|&s| self.freed_at[s].is_none_or(|t| now_ns.saturating_sub(t) >= SLOT_QUARANTINE_NS))
            .min_by_key(|&s| (self.freed_at[s].is_some(), self.freed_at[s], s))?;
        self.attached[slot] = true;
        Some(slot)
    }

    /// Frees a slot at `now_ns`; returns the frame that tells the guest.
    pub fn detach(&mut self, slot: Slot, now_ns: u64) -> Vec<u8> {
        self.attached[slot] = false;
        self.freed_at[slot] = Some(now_ns);
        let base = slot as u32 * SLOT_STEP;
        let end = base.saturating_add(SLOT_STEP);
        frame(0, &RelayClientDisconnected { id_start: base, id_end_exclusive: end })
    }

    /// Clients attached.
    pub fn clients(&self) -> usize {
        self.attached.iter().filter(|a| **a).count()
    }

    /// The greeting for a new client of `slot`.
    pub fn greeting(slot: Slot, ready_frame: &[u8]) -> Vec<u8> {
        let (start, end) = RelayCore::range(slot);
        let mut out = Vec::with_capacity(8 + ready_frame.len());
        out.extend_from_slice(&start.to_be_bytes());
        out.extend_from_slice(&end.to_be_bytes());
        out.extend_from_slice(ready_frame);
        out
    }

    /// The attached client a guest frame with this id goes to.
    pub fn route(&self, id: u32) -> Option<Slot> {
        RelayCore::slot_of(id).filter(|&s| self.attached[s])
    }

    /// Whether a frame from `slot` may go to the guest.
    pub fn admit(&mut self, slot: Slot, id: u32, flags: Flags) -> bool {
        let (start, end) = RelayCore::range(slot);
        let ok = (start..end).contains(&id) || (id == 0 && flags.contains(Flags::SHUTDOWN));
        if !ok {
            self.refused += 1;
        }
        ok
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Frames waiting to be written to one client.
struct Outbound {
    queue: Mutex<Queue>,
    changed: Condvar,
}

#[derive(Default)]
struct Queue {
    frames: VecDeque<Vec<u8>>,
    bytes: usize,
    closed: bool,
}

impl Outbound {
    /// Queues a frame; false if the client stayed full too long or is gone.
    fn push(&self, frame: Vec<u8>) -> bool {
        let deadline = Instant::now() + SLOW_CLIENT_TIMEOUT;
        let mut q = lock(&self.queue);
        while q.bytes + frame.len() > CLIENT_QUEUE_BYTES && !q.frames.is_empty() && !q.closed {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            q = self.changed.wait_timeout(q, left).unwrap_or_else(|e| e.into_inner()).0;
        }
        if q.closed {
            return false;
        }
        q.bytes += frame.len();
        q.frames.push_back(frame);
        self.changed.notify_all();
        true
    }

    fn pop(&self) -> Option<Vec<u8>> {
        let mut q = lock(&self.queue);
        loop {
            if let Some(frame) = q.frames.pop_front() {
                q.bytes -= frame.len();
                self.changed.notify_all();
                return Some(frame);
            }
            if q.closed {
                return None;
            }
            q = self.changed.wait(q).unwrap_or_else(|e| e.into_inner());
        }
    }

    fn close(&self) {
        lock(&self.queue).closed = true;
        self.changed.notify_all();
    }
}

/// One attached client.
struct Attached {
    stream: UnixStream,
    out: Arc<Outbound>,
}

struct Shared {
    core: Mutex<RelayCore>,
    /// The relay's time origin, for [`RelayCore`]'s clock.
    started: Instant,
    clients: Mutex<Vec<Option<Attached>>>,
    guest: Mutex<UnixStream>,
    ready: ReadyInfo,
    stopped: AtomicBool,
    /// Guest frames that no attached client owned.
    dropped: AtomicU64,
}

impl Shared {
    fn now_ns(&self) -> u64 {
        self.started.elapsed().as_nanos() as u64
    }
}

/// A running relay.
pub struct Relay {
    shared: Arc<Shared>,
    socket: Option<PathBuf>,
}

impl Relay {
    /// Starts relaying `guest` (a stream whose handshake is done). With a
    /// socket path, other processes can connect there (mode 0600).
    pub fn start(guest: UnixStream, ready: ReadyInfo, socket: Option<&Path>) -> Result<Relay> {
        let reader = guest.try_clone()?;
        let shared = Arc::new(Shared {
            core: Mutex::new(RelayCore::new()),
            started: Instant::now(),
            clients: Mutex::new((0..RELAY_SLOTS).map(|_| None).collect()),
            guest: Mutex::new(guest),
            ready,
            stopped: AtomicBool::new(false),
            dropped: AtomicU64::new(0),
        });
        let s = Arc::clone(&shared);
        thread::Builder::new().name("picosandbox-relay-guest".into()).spawn(move || guest_loop(s, reader))?;
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

    /// A client in this process, attached like any other (one slot).
    pub fn client(&self, options: ClientOptions) -> Result<Client> {
        let (ours, theirs) = UnixStream::pair()?;
        attach(&self.shared, theirs)?;
        Client::over_relay(ours, options)
    }

    /// Clients attached now.
    pub fn clients(&self) -> usize {
        lock(&self.shared.core).clients()
    }

    /// Guest frames dropped because no attached client owned their id.
    pub fn dropped_frames(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    /// Client frames refused for an id outside the client's range.
    pub fn refused_frames(&self) -> u64 {
        lock(&self.shared.core).refused
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
    let _ = lock(&shared.guest).shutdown(std::net::Shutdown::Both);
    for client in lock(&shared.clients).iter().flatten() {
        client.out.close();
        let _ = client.stream.shutdown(std::net::Shutdown::Both);
    }
}

fn accept_loop(shared: Arc<Shared>, listener: UnixListener) {
    for stream in listener.incoming() {
        if shared.stopped.load(Ordering::SeqCst) {
            return;
        }
        if let Ok(stream) = stream {
            // A full relay closes the connection: the client sees no greeting.
            let _ = attach(&shared, stream);
        }
    }
}

/// Greets a new client and starts its threads.
fn attach(shared: &Arc<Shared>, mut stream: UnixStream) -> Result<()> {
    let Some(slot) = lock(&shared.core).attach(shared.now_ns()) else {
        return Err(io::Error::new(io::ErrorKind::QuotaExceeded, "the relay has no free client slot").into());
    };
    let greeting = RelayCore::greeting(slot, &shared.ready.frame);
    if let Err(e) = stream.write_all(&greeting) {
        lock(&shared.core).detach(slot, shared.now_ns());
        return Err(e.into());
    }
    let out = Arc::new(Outbound { queue: Mutex::new(Queue::default()), changed: Condvar::new() });
    let (reader, writer) = (stream.try_clone()?, stream.try_clone()?);
    lock(&shared.clients)[slot] = Some(Attached { stream, out: Arc::clone(&out) });
    let s = Arc::clone(shared);
    thread::Builder::new().name(format!("picosandbox-relay-{slot}")).spawn(move || client_loop(s, slot, reader))?;
    thread::Builder::new().name(format!("picosandbox-relay-{slot}-out")).spawn(move || write_loop(out, writer))?;
    Ok(())
}

/// Writes a client's queued frames until its queue closes.
fn write_loop(out: Arc<Outbound>, mut stream: UnixStream) {
    while let Some(frame) = out.pop() {
        if stream.write_all(&frame).is_err() {
            out.close();
            let _ = stream.shutdown(std::net::Shutdown::Both);
            return;
        }
    }
}

/// Forwards a client's frames to the guest until it leaves.
fn client_loop(shared: Arc<Shared>, slot: Slot, mut stream: UnixStream) {
    while let Ok(Some(frame)) = conn::read_frame(&mut stream) {
        let (id, flags) = header(&frame);
        if !lock(&shared.core).admit(slot, id, flags) {
            continue;
        }
        if lock(&shared.guest).write_all(&frame).is_err() {
            break;
        }
    }
    // Gone (or sent a bad frame): free the slot and tell the guest.
    let attached = lock(&shared.clients)[slot].take();
    if let Some(a) = attached {
        a.out.close();
        let _ = a.stream.shutdown(std::net::Shutdown::Both);
    }
    let bye = lock(&shared.core).detach(slot, shared.now_ns());
    if !shared.stopped.load(Ordering::SeqCst) {
        let _ = lock(&shared.guest).write_all(&bye);
    }
}

/// Routes guest frames to their clients until the guest stream ends.
fn guest_loop(shared: Arc<Shared>, mut guest: UnixStream) {
    while let Ok(Some(frame)) = conn::read_frame(&mut guest) {
        let (id, _) = header(&frame);
        let out = match lock(&shared.core).route(id) {
            Some(slot) => lock(&shared.clients)[slot].as_ref().map(|a| (slot, Arc::clone(&a.out))),
            None => None,
        };
        let Some((slot, out)) = out else {
            shared.dropped.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        if !out.push(frame) {
            // Too slow or gone: disconnect it (its reader frees the slot).
            if let Some(a) = lock(&shared.clients)[slot].as_ref() {
                a.out.close();
                let _ = a.stream.shutdown(std::net::Shutdown::Both);
            }
        }
    }
    stop(&shared);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_own_disjoint_ranges() {
        assert_eq!(SLOT_STEP, 33_554_431);
        assert_eq!(RelayCore::range(0), (1, 33_554_431));
        assert_eq!(RelayCore::range(127), (127 * 33_554_431 + 1, 128 * 33_554_431));
        assert_eq!(RelayCore::slot_of(1), Some(0));
        assert_eq!(RelayCore::slot_of(33_554_430), Some(0));
        assert_eq!(RelayCore::slot_of(33_554_431), None, "a slot base belongs to nobody");
        assert_eq!(RelayCore::slot_of(33_554_432), Some(1));
        assert_eq!(RelayCore::slot_of(u32::MAX), None);
    }

    #[test]
    fn attach_is_bounded_and_freed_slots_rest_before_reuse() {
        let mut core = RelayCore::new();
        let slots: Vec<_> = (0..RELAY_SLOTS).map(|_| core.attach(0).unwrap()).collect();
        assert_eq!(slots, (0..RELAY_SLOTS).collect::<Vec<_>>());
        assert_eq!(core.attach(0), None, "the 129th client is refused");
        core.detach(5, 100);
        core.detach(3, 200);
        assert_eq!(core.attach(100 + SLOT_QUARANTINE_NS - 1), None, "both still resting");
        assert_eq!(core.attach(200 + SLOT_QUARANTINE_NS), Some(5), "the one freed first");
        assert_eq!(core.attach(200 + SLOT_QUARANTINE_NS), Some(3));
        assert_eq!(core.clients(), RELAY_SLOTS);
    }

    #[test]
    fn never_used_slots_go_before_freed_ones() {
        let mut core = RelayCore::new();
        let a = core.attach(0).unwrap();
        core.detach(a, 0);
        assert_eq!(core.attach(10 * SLOT_QUARANTINE_NS), Some(1));
    }

    #[test]
    fn routing_and_admission_follow_the_ranges() {
        let mut core = RelayCore::new();
        let a = core.attach(0).unwrap();
        let b = core.attach(0).unwrap();
        let (b_start, b_end) = RelayCore::range(b);
        assert_eq!(core.route(b_start), Some(b));
        assert_eq!(core.route(b_end - 1), Some(b));
        assert_eq!(core.route(RelayCore::range(7).0), None, "slot 7 is free");
        assert!(core.admit(a, 1, Flags::SESSION_START));
        assert!(!core.admit(a, b_start, Flags::SESSION_START));
        assert!(!core.admit(a, 0, Flags::NONE), "id 0 only for core.shutdown");
        assert!(core.admit(a, 0, Flags::SHUTDOWN));
        assert_eq!(core.refused, 2);
    }

    #[test]
    fn greeting_and_goodbye_are_the_reference_bytes() {
        let ready = crate::proto::frame(0, &wire::Ready::default());
        let g = RelayCore::greeting(5, &ready);
        assert_eq!(&g[..4], &167_772_156u32.to_be_bytes());
        assert_eq!(&g[4..8], &201_326_586u32.to_be_bytes());
        assert_eq!(&g[8..], &ready[..]);
        let mut core = RelayCore::new();
        let bye = core.detach(5, 0);
        let m = wire::Message::decode_bytes(&bye).unwrap();
        assert_eq!(
            m.body,
            wire::Body::RelayClientDisconnected(RelayClientDisconnected {
                id_start: 167_772_155,
                id_end_exclusive: 201_326_586
            })
        );
    }
}
