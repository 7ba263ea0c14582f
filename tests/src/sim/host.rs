//! The host side: the boot handshake through `proto::Handshake`, then the
//! relay as host-sync's relay does it, around its sans-IO `RelayCore`:
//! greet each client with its range and the cached `core.ready`, forward
//! whole frames both ways by their length prefix without decoding CBOR,
//! queue at most a bounded number of bytes per client (a client that
//! leaves its queue full for `SLOW_CLIENT_TIMEOUT` is dropped), and tell
//! the guest `core.relay.client.disconnected` when a client leaves.
//!
//! Every frame written to the guest gets a sequence number; the agent's
//! count of handled frames then says exactly which frames it has handled,
//! which is how the checks know when a disconnect notice has taken effect.

use std::collections::VecDeque;

use host_sync::proto::{Handshake, HandshakeStep, ReadyInfo};
use host_sync::relay::{RELAY_SLOTS, RelayCore, SLOW_CLIENT_TIMEOUT, Slot};
use wire::{Flags, FrameStatus, parse_frame};

use super::Bug;
use super::channel::{ByteQueue, Channel, Shape};
use super::client::{Client, Leave, Link};
use super::corrupt;
use super::params::FLOOD_LINK_CAPACITY;
use super::trace::{Mark, header_word};
use super::violation;
use super::world::{Shared, UNIX_BASE_NS};

/// Bytes read from the guest ahead of routing, at most: one whole frame.
const GUEST_IN_MAX: usize = wire::MAX_FRAME_BYTES;

/// With [`Bug::FlipGuestData`]: guest frames with no flags (data chunks)
/// longer than this get their last byte flipped.
const FLIP_MIN_FRAME: usize = 1024;

/// Trace tags of links: the client's index is added.
const C2R_TAG: u64 = 1_000;
const R2C_TAG: u64 = 2_000;

/// Where the host is with the guest stream.
enum Phase {
    /// Waiting for `core.init.resolved` and `core.ready`.
    Handshake(Handshake),
    /// Relaying.
    Serving,
    /// The stream is corrupt: quiet until the agent starts over.
    Resync,
}

/// A frame of the host's own for the guest.
enum Own {
    /// A handshake frame.
    Frame(Vec<u8>),
    /// `core.relay.client.disconnected` for ids `start..end`.
    Notice { frame: Vec<u8>, start: u32, end: u32 },
}

/// One attached client.
struct Attached {
    client: usize,
    /// Bytes read from the client, up to one whole frame ahead.
    inbuf: ByteQueue,
    /// Guest frames for the client, not yet written to it.
    queue: ByteQueue,
}

/// After the agent has handled `after` frames, no session with an id in
/// `start..end` may remain.
#[derive(Debug, Clone, Copy)]
pub struct RangeCheck {
    /// First id of the range.
    pub start: u32,
    /// End of the range (exclusive).
    pub end: u32,
    /// Frames the agent must have handled.
    pub after: u64,
}

/// The host: handshake and relay.
pub struct Host {
    core: RelayCore,
    phase: Phase,
    ready: Option<ReadyInfo>,
    guest_in: ByteQueue,
    own: VecDeque<Own>,
    /// The frame being written to the guest.
    current: ByteQueue,
    slots: Vec<Option<Attached>>,
    /// Attached slots, in attach order.
    attached: Vec<Slot>,
    /// Frames written to the guest so far (the next sequence number).
    pub sent: u64,
    /// The slot whose full queue holds up the guest stream, and since when.
    blocked: Option<(Slot, u64)>,
    glitch_due: bool,
    /// Disconnect notices whose effect is to be checked.
    pub checks: Vec<RangeCheck>,
}

impl Host {
    /// A host waiting for the guest's handshake.
    pub fn new() -> Host {
        Host {
            core: RelayCore::new(),
            phase: Phase::Handshake(Handshake::new()),
            ready: None,
            guest_in: ByteQueue::default(),
            own: VecDeque::new(),
            current: ByteQueue::default(),
            slots: (0..RELAY_SLOTS).map(|_| None).collect(),
            attached: Vec::new(),
            sent: 0,
            blocked: None,
            glitch_due: false,
            checks: Vec::new(),
        }
    }

    /// Whether clients can attach.
    pub fn serving(&self) -> bool {
        matches!(self.phase, Phase::Serving)
    }

    /// Whether the host corrupted the stream and waits for the agent.
    pub fn resyncing(&self) -> bool {
        matches!(self.phase, Phase::Resync) || self.glitch_due
    }

    /// Corrupts the guest stream at the next frame boundary.
    pub fn glitch(&mut self) {
        self.glitch_due = true;
    }

    /// The agent started over: a fresh stream and handshake.
    pub fn new_stream(&mut self) {
        assert!(self.attached.is_empty(), "clients attached across a stream reset");
        self.phase = Phase::Handshake(Handshake::new());
        self.guest_in.clear();
        self.current.clear();
        self.own.clear();
        self.checks.clear();
        self.blocked = None;
    }

    /// Whether nothing waits anywhere in the relay.
    pub fn is_idle(&self) -> bool {
        self.guest_in.is_empty()
            && self.current.is_empty()
            && self.own.is_empty()
            && self.blocked.is_none()
            && self.slots.iter().flatten().all(|a| a.inbuf.is_empty() && a.queue.is_empty())
    }

    /// When the host next has something to do without new input.
    pub fn next_event_ns(&self) -> Option<u64> {
        self.blocked.map(|(_, since)| since + SLOW_CLIENT_TIMEOUT.as_nanos() as u64)
    }

    /// Attaches `client` to a free slot and queues its greeting.
    pub fn attach(&mut self, client: &mut Client, shared: &mut Shared) {
        let ready = self.ready.as_ref().expect("attach while serving");
        let slot = self.core.attach(shared.now).expect("a free relay slot");
        assert!(shared.attaches < RELAY_SLOTS as u64, "relay slots would be reused within a run");
        shared.attaches += 1;
        let mut queue = ByteQueue::default();
        queue.push(&RelayCore::greeting(slot, &ready.frame));
        self.slots[slot] = Some(Attached { client: client.index, inbuf: ByteQueue::default(), queue });
        self.attached.push(slot);
        let shape = shared.params.client_link;
        let index = client.index as u64;
        let to_client = if client.floods() { Shape { capacity: FLOOD_LINK_CAPACITY, ..shape } } else { shape };
        let link = Link {
            c2r: Channel::new(C2R_TAG + index, shape),
            r2c: Channel::new(R2C_TAG + index, to_client),
            hung_up: false,
        };
        client.connected(slot, link);
        shared.trace.record(Mark::Fault, 200, slot as u64);
    }

    /// Moves bytes and frames everywhere the relay can; whether any moved.
    pub fn step(&mut self, clients: &mut [Client], h2g: &mut Channel, g2h: &mut Channel, shared: &mut Shared) -> bool {
        let mut progress = self.read_guest(clients, g2h, shared);
        progress |= self.read_clients(clients, shared);
        progress |= self.write_guest(clients, h2g, shared);
        progress | self.write_clients(clients, shared)
    }

    fn read_guest(&mut self, clients: &mut [Client], g2h: &mut Channel, shared: &mut Shared) -> bool {
        let mut progress = false;
        if self.blocked.is_none() && self.guest_in.len() < GUEST_IN_MAX {
            let arrived = g2h.readable(shared.now);
            let n = arrived.len().min(GUEST_IN_MAX);
            if n > 0 {
                self.guest_in.push(&arrived[..n]);
                g2h.consume(n, &mut shared.trace);
                progress = true;
            }
        }
        if let Phase::Resync = self.phase {
            self.guest_in.clear();
            return progress;
        }
        let mut input = std::mem::take(&mut self.guest_in);
        loop {
            let consumed = match parse_frame(input.bytes()) {
                Ok(FrameStatus::Complete { consumed, .. }) => consumed,
                Ok(FrameStatus::Incomplete { .. }) => break,
                Err(e) => violation!("the agent sent a bad length prefix: {e}"),
            };
            let frame = &input.bytes()[..consumed];
            shared.trace.record(Mark::FromGuest, header_word(frame), consumed as u64);
            let taken = match self.phase {
                Phase::Handshake(_) => self.handshake(frame, shared),
                _ => self.route(frame, clients, shared),
            };
            if !taken {
                break;
            }
            input.consume(consumed);
            progress = true;
        }
        self.guest_in = input;
        progress
    }

    /// Feeds the host half of the handshake; always takes the frame.
    fn handshake(&mut self, frame: &[u8], shared: &mut Shared) -> bool {
        let Phase::Handshake(handshake) = &mut self.phase else { unreachable!("in the handshake") };
        match handshake.receive(frame, UNIX_BASE_NS + shared.now) {
            Ok(HandshakeStep::Send(bytes)) => self.own.push_back(Own::Frame(bytes)),
            Ok(HandshakeStep::Continue) => {}
            Ok(HandshakeStep::Ready { ready, clock_sync }) => {
                self.ready = Some(ready);
                self.own.push_back(Own::Frame(clock_sync));
                self.phase = Phase::Serving;
            }
            Err(e) => violation!("the host's handshake failed: {e}"),
        }
        true
    }

    /// Queues a guest frame for its client; false while that client's
    /// queue is full (the relay stops reading the guest meanwhile).
    fn route(&mut self, frame: &[u8], clients: &mut [Client], shared: &mut Shared) -> bool {
        let id = u32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
        let Some(slot) = self.core.route(id) else {
            return true;
        };
        let attached = self.slots[slot].as_mut().expect("routed to an attached slot");
        let full = attached.queue.len() + frame.len() > shared.params.relay_queue_bytes && !attached.queue.is_empty();
        if !full {
            self.blocked = None;
            if shared.params.bug == Bug::FlipGuestData && frame.len() > FLIP_MIN_FRAME && frame[8] == 0 {
                let mut flipped = frame.to_vec();
                flipped[frame.len() - 1] ^= 1;
                attached.queue.push(&flipped);
            } else {
                attached.queue.push(frame);
            }
            return true;
        }
        match self.blocked {
            Some((s, since)) if s == slot && shared.now - since >= SLOW_CLIENT_TIMEOUT.as_nanos() as u64 => {
                self.blocked = None;
                shared.faults.slow_client_kicks += 1;
                self.detach(slot, Leave::TooSlow, clients, shared);
                true
            }
            Some((s, _)) if s == slot => false,
            _ => {
                self.blocked = Some((slot, shared.now));
                shared.faults.relay_stalls += 1;
                false
            }
        }
    }

    fn read_clients(&mut self, clients: &mut [Client], shared: &mut Shared) -> bool {
        let mut progress = false;
        for slot in self.attached.clone() {
            let attached = self.slots[slot].as_mut().expect("an attached slot");
            let link = clients[attached.client].link.as_mut().expect("an attached client has links");
            if link.hung_up && !attached.queue.is_empty() {
                self.detach(slot, Leave::HungUp, clients, shared);
                progress = true;
                continue;
            }
            let status = parse_frame(attached.inbuf.bytes());
            if let Ok(FrameStatus::Incomplete { .. }) = status {
                let arrived = link.c2r.readable(shared.now);
                if !arrived.is_empty() {
                    let n = arrived.len();
                    attached.inbuf.push(&arrived[..n]);
                    link.c2r.consume(n, &mut shared.trace);
                    progress = true;
                }
            }
            let leave = match parse_frame(attached.inbuf.bytes()) {
                Err(_) => Leave::BadPrefix,
                Ok(FrameStatus::Incomplete { .. }) if link.c2r.at_eof() => {
                    shared.faults.truncated_frames += u64::from(!attached.inbuf.is_empty());
                    Leave::HungUp
                }
                Ok(_) => continue,
            };
            self.detach(slot, leave, clients, shared);
            progress = true;
        }
        progress
    }

    fn write_guest(&mut self, clients: &mut [Client], h2g: &mut Channel, shared: &mut Shared) -> bool {
        let mut progress = false;
        loop {
            if self.current.is_empty() && !self.next_to_guest(clients, shared) {
                break;
            }
            let n = h2g.write(self.current.bytes(), shared.now, &mut shared.rng);
            if n == 0 {
                break;
            }
            self.current.consume(n);
            progress = true;
        }
        progress
    }

    /// Puts the next frame for the guest into `current`; false if none.
    fn next_to_guest(&mut self, clients: &mut [Client], shared: &mut Shared) -> bool {
        match self.phase {
            Phase::Resync => false,
            Phase::Serving if self.glitch_due => {
                self.corrupt_stream(clients, shared);
                true
            }
            _ => self.next_own(shared) || (self.serving() && self.next_from_client(clients, shared)),
        }
    }

    fn next_own(&mut self, shared: &mut Shared) -> bool {
        let Some(own) = self.own.pop_front() else { return false };
        let frame = match own {
            Own::Frame(frame) => frame,
            Own::Notice { frame, start, end } => {
                self.checks.push(RangeCheck { start, end, after: self.sent + 1 });
                frame
            }
        };
        self.send(&frame, shared);
        true
    }

    /// Forwards one whole frame of a client picked at random (the order of
    /// the relay's client threads), if any has one.
    fn next_from_client(&mut self, clients: &mut [Client], shared: &mut Shared) -> bool {
        let ready: Vec<Slot> = self
            .attached
            .iter()
            .copied()
            .filter(|&s| {
                let inbuf = &self.slots[s].as_ref().expect("attached").inbuf;
                matches!(parse_frame(inbuf.bytes()), Ok(FrameStatus::Complete { .. }))
            })
            .collect();
        if ready.is_empty() {
            return false;
        }
        let slot = *shared.rng.pick(&ready);
        let mut inbuf = std::mem::take(&mut self.slots[slot].as_mut().expect("attached").inbuf);
        let (id, flags, consumed) = match parse_frame(inbuf.bytes()) {
            Ok(FrameStatus::Complete { frame, consumed }) => (frame.id, frame.flags, consumed),
            _ => unreachable!("a slot picked for its complete frame"),
        };
        if !self.core.admit(slot, id, flags) {
            violation!("the relay refused client frame #{id} {flags:?} of slot {slot}");
        }
        let seq = self.sent;
        self.send(&inbuf.bytes()[..consumed], shared);
        inbuf.consume(consumed);
        let attached = self.slots[slot].as_mut().expect("attached");
        attached.inbuf = inbuf;
        let client = attached.client;
        clients[client].forwarded(id, seq, shared);
        if frame_is_shutdown(id, flags) {
            shared.faults.shutdowns += 1;
        }
        true
    }

    /// Starts writing a whole frame to the guest.
    fn send(&mut self, frame: &[u8], shared: &mut Shared) {
        shared.trace.record(Mark::ToGuest, header_word(frame), self.sent);
        self.current.push(frame);
        self.sent += 1;
    }

    /// Writes a length prefix no frame may have and drops every client:
    /// the stream is lost until the agent starts over.
    fn corrupt_stream(&mut self, clients: &mut [Client], shared: &mut Shared) {
        self.glitch_due = false;
        self.current.push(&corrupt::bad_length_prefix(&mut shared.rng));
        self.phase = Phase::Resync;
        self.own.clear();
        self.checks.clear();
        self.blocked = None;
        for slot in self.attached.clone() {
            self.detach(slot, Leave::Glitch, clients, shared);
        }
        shared.faults.stream_glitches += 1;
    }

    /// Frees a slot, tells the guest (unless the stream is lost) and the client.
    fn detach(&mut self, slot: Slot, why: Leave, clients: &mut [Client], shared: &mut Shared) {
        let attached = self.slots[slot].take().expect("detach an attached slot");
        self.attached.retain(|&s| s != slot);
        if self.blocked.is_some_and(|(s, _)| s == slot) {
            self.blocked = None;
        }
        let notice = self.core.detach(slot, shared.now);
        let (base, step) = (slot as u32 * host_sync::relay::SLOT_STEP, host_sync::relay::SLOT_STEP);
        let (start, end) = (base, base.saturating_add(step));
        match (why, shared.params.bug) {
            (Leave::Glitch, _) => {}
            (_, Bug::DropDisconnectNotice) => self.checks.push(RangeCheck { start, end, after: self.sent }),
            _ => self.own.push_back(Own::Notice { frame: notice, start, end }),
        }
        clients[attached.client].left(why, shared);
    }

    fn write_clients(&mut self, clients: &mut [Client], shared: &mut Shared) -> bool {
        let mut progress = false;
        for &slot in &self.attached {
            let attached = self.slots[slot].as_mut().expect("an attached slot");
            if attached.queue.is_empty() {
                continue;
            }
            let link = clients[attached.client].link.as_mut().expect("an attached client has links");
            if link.hung_up {
                continue;
            }
            let n = link.r2c.write(attached.queue.bytes(), shared.now, &mut shared.rng);
            attached.queue.consume(n);
            progress |= n > 0;
        }
        progress
    }
}

/// Whether a client frame is `core.shutdown` (the one frame a client may
/// send on id 0).
fn frame_is_shutdown(id: u32, flags: Flags) -> bool {
    id == 0 && flags.contains(Flags::SHUTDOWN)
}
