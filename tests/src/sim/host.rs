//! The host side: the boot handshake through `proto::Handshake`, then the
//! relay as host-sync's relay threads do it, with every decision taken by
//! its sans-IO `RelayCore`: which slot a client gets (a slot is reused only
//! after the guest's barrier pong), which client frames reach the guest,
//! where each guest frame goes and who is cut off at a queue bound, and the
//! notice and barrier ping sent to the guest when a client leaves. This
//! file only moves bytes, for honest and hostile clients alike ([`Peers`]):
//! a frame the relay refuses is answered with its own `core.error` (a
//! violation for an honest client), and with [`Bug::RelayWaits`] it holds
//! back guest frames while their client's queue is full, as an earlier
//! relay did.
//!
//! Every frame written to the guest gets a sequence number; the agent's
//! count of handled frames then says exactly which frames it has handled,
//! which is how the checks know when a disconnect notice has taken effect.

use std::collections::VecDeque;

use host_sync::proto::{Handshake, HandshakeStep, ReadyInfo};
use host_sync::relay::{Admit, Eviction, Lease, RELAY_SLOTS, RelayCore, RelayOptions, Route, Slot};
use wire::{Flags, FrameStatus, parse_frame};

use super::Bug;
use super::channel::{ByteQueue, Channel, Shape};
use super::client::{Client, Leave, Link};
use super::corrupt;
use super::hostile::Hostile;
use super::params::FLOOD_LINK_CAPACITY;
use super::trace::{Mark, header_word};
use super::violation;
use super::world::{Shared, UNIX_BASE_NS};

/// Bytes read from the guest ahead of routing, at most: one whole frame.
const GUEST_IN_MAX: usize = wire::MAX_FRAME_BYTES;

/// With [`Bug::FlipGuestData`]: guest frames with no flags (data chunks)
/// longer than this get their last byte flipped.
const FLIP_MIN_FRAME: usize = 1024;

/// With [`Bug::RelayWaits`]: how long the relay waits for a client whose
/// queue is full before it cuts it off (an earlier relay's
/// `SLOW_CLIENT_TIMEOUT`).
pub const OLD_RELAY_PATIENCE_NS: u64 = 10_000_000_000;

/// Pieces of a corrupt stream's tail, at most (see [`Host::write_stale`]).
const STALE_PIECES_MAX: u64 = 4;

/// A corrupt stream's tail arrives within this long of the corruption:
/// well inside the agent's quiet period (`agent_core::RESYNC_QUIET_NS`).
const STALE_TAIL_NS: u64 = 40_000_000;
const _: () = assert!(STALE_TAIL_NS < agent_core::RESYNC_QUIET_NS / 2);

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
    lease: Lease,
    client: usize,
    /// Bytes read from the client, up to one whole frame ahead.
    inbuf: ByteQueue,
    /// Guest frames for the client, not yet written to it.
    queue: ByteQueue,
    /// Bytes at the front of `queue` that `RelayCore` does not count (the greeting).
    uncounted: usize,
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
    /// When the (slow) host reads the guest next.
    next_read_ns: u64,
    glitch_due: bool,
    /// The rest of a corrupt stream still on its way (what a dying writer
    /// had queued): pieces of bad length prefixes, each written to the
    /// guest when its time comes, on a frame boundary.
    stale: VecDeque<(u64, Vec<u8>)>,
    /// With [`Bug::RelayWaits`]: since when the relay waits for a client.
    waiting_since: Option<u64>,
    /// Disconnect notices whose effect is to be checked.
    pub checks: Vec<RangeCheck>,
}

impl Host {
    /// A host waiting for the guest's handshake, relaying with `options`.
    pub fn new(options: RelayOptions) -> Host {
        Host {
            core: RelayCore::new(options),
            phase: Phase::Handshake(Handshake::new()),
            ready: None,
            guest_in: ByteQueue::default(),
            own: VecDeque::new(),
            current: ByteQueue::default(),
            slots: (0..RELAY_SLOTS).map(|_| None).collect(),
            attached: Vec::new(),
            sent: 0,
            next_read_ns: 0,
            glitch_due: false,
            stale: VecDeque::new(),
            waiting_since: None,
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
        self.core.reset_stream();
    }

    /// Whether nothing waits anywhere in the relay.
    pub fn is_idle(&self) -> bool {
        self.guest_in.is_empty()
            && self.current.is_empty()
            && self.stale.is_empty()
            && self.own.is_empty()
            && self.slots.iter().flatten().all(|a| a.inbuf.is_empty() && a.queue.is_empty())
    }

    /// When the host next has something to do without new input: its next
    /// (slow) read of the guest, or the relay's check of paused clients.
    /// Each is taken only if it is later than `now`: one in the past (a read
    /// the host is free to do already) must not hide a later one.
    pub fn next_event_ns(&self, now: u64) -> Option<u64> {
        let after = |t: Option<u64>| t.filter(|&t| t > now);
        let patience = self.waiting_since.map(|t| t + OLD_RELAY_PATIENCE_NS);
        let next = super::world::earliest(after((self.next_read_ns > 0).then_some(self.next_read_ns)), after(patience));
        let next = super::world::earliest(next, after(self.stale.front().map(|&(due, _)| due)));
        super::world::earliest(next, after(self.core.next_deadline()))
    }

    /// Attaches peer `index` to a free slot and queues its greeting;
    /// returns the slot and the connection's links, or `None` when every
    /// slot is attached or draining (the peer tries again later).
    pub fn attach(&mut self, index: usize, floods: bool, shared: &mut Shared) -> Option<(Slot, Link)> {
        let ready = self.ready.as_ref().expect("attach while serving");
        let lease = self.core.attach()?;
        let slot = lease.slot;
        let mut queue = ByteQueue::default();
        // The greeting is the relay's own, not counted in the client's queue.
        queue.push(&RelayCore::greeting(lease, &ready.frame));
        let uncounted = queue.len();
        self.slots[slot] = Some(Attached { lease, client: index, inbuf: ByteQueue::default(), queue, uncounted });
        self.attached.push(slot);
        let shape = shared.params.client_link;
        let tag = index as u64;
        let to_client = if floods { Shape { capacity: FLOOD_LINK_CAPACITY, ..shape } } else { shape };
        let link = Link {
            c2r: Channel::new(C2R_TAG + tag, shape),
            r2c: Channel::new(R2C_TAG + tag, to_client),
            hung_up: false,
        };
        shared.trace.record(Mark::Fault, 200, slot as u64);
        Some((slot, link))
    }

    /// Moves bytes and frames everywhere the relay can; whether any moved.
    pub fn step(&mut self, peers: &mut Peers<'_>, h2g: &mut Channel, g2h: &mut Channel, shared: &mut Shared) -> bool {
        let mut progress = false;
        while let Some(stalled) = self.core.tick(shared.now) {
            shared.faults.slow_client_kicks += 1;
            self.detach(stalled.slot, Leave::TooSlow, peers, shared);
            progress = true;
        }
        progress |= self.read_guest(peers, g2h, shared);
        progress |= self.read_clients(peers, shared);
        progress |= self.write_stale(h2g, shared);
        progress |= self.write_guest(peers, h2g, shared);
        progress | self.write_clients(peers, shared)
    }

    fn read_guest(&mut self, peers: &mut Peers<'_>, g2h: &mut Channel, shared: &mut Shared) -> bool {
        let mut progress = false;
        let (budget, every) = (shared.params.host_read_bytes, shared.params.host_read_every_ns);
        if self.guest_in.len() < GUEST_IN_MAX && shared.now >= self.next_read_ns {
            let arrived = g2h.readable(shared.now);
            let n = arrived.len().min(GUEST_IN_MAX).min(budget);
            if n > 0 {
                self.guest_in.push(&arrived[..n]);
                g2h.consume(n, &mut shared.trace);
                progress = true;
                if every > 0 {
                    self.next_read_ns = shared.now + every;
                }
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
                _ => {
                    let waits = shared.params.bug == Bug::RelayWaits && self.waits_for_a_client(frame, shared);
                    !waits && self.route(frame, peers, shared)
                }
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
            Ok(HandshakeStep::Ready { ready, clock_sync }) => {
                self.ready = Some(ready);
                self.own.push_back(Own::Frame(clock_sync));
                self.phase = Phase::Serving;
            }
            Err(e) => violation!("the host's handshake failed: {e}"),
        }
        true
    }

    /// With [`Bug::RelayWaits`]: whether the relay holds `frame` back
    /// because its client's queue is full (it waits up to
    /// [`OLD_RELAY_PATIENCE_NS`], then lets `RelayCore` cut the client off).
    fn waits_for_a_client(&mut self, frame: &[u8], shared: &Shared) -> bool {
        let id = wire::Frame::parse(frame).expect("the relay routes whole frames").id;
        let full = wire::relay::slot_of(id).and_then(|slot| self.slots[slot].as_ref()).is_some_and(|a| {
            self.core.is_current(a.lease)
                && self.core.client_queued(a.lease) + frame.len() > self.core.options().client_queue_bytes
        });
        if !full {
            self.waiting_since = None;
            return false;
        }
        let since = *self.waiting_since.get_or_insert(shared.now);
        if shared.now < since + OLD_RELAY_PATIENCE_NS {
            return true;
        }
        self.waiting_since = None;
        false
    }

    /// Queues a guest frame for its client, as `RelayCore` decides; never
    /// waits for a client.
    fn route(&mut self, frame: &[u8], peers: &mut Peers<'_>, shared: &mut Shared) -> bool {
        match self.core.route(frame) {
            Route::Deliver { lease, evict } => {
                if let Some((evicted, why)) = evict {
                    count_eviction(why, shared);
                    self.detach(evicted.slot, Leave::TooSlow, peers, shared);
                }
                let attached = self.slots[lease.slot].as_mut().expect("routed to an attached slot");
                if shared.params.bug == Bug::FlipGuestData && frame.len() > FLIP_MIN_FRAME && frame[8] == 0 {
                    let mut flipped = frame.to_vec();
                    flipped[frame.len() - 1] ^= 1;
                    attached.queue.push(&flipped);
                } else {
                    attached.queue.push(frame);
                }
            }
            Route::Evict(lease, why) => {
                count_eviction(why, shared);
                self.detach(lease.slot, Leave::TooSlow, peers, shared);
            }
            Route::Drop | Route::Drained(_) => {}
        }
        if self.core.queued_bytes() > self.core.options().total_queue_bytes {
            violation!("the relay holds {} bytes for its clients, over its bound", self.core.queued_bytes());
        }
        true
    }

    fn read_clients(&mut self, peers: &mut Peers<'_>, shared: &mut Shared) -> bool {
        let mut progress = false;
        for slot in self.attached.clone() {
            let attached = self.slots[slot].as_mut().expect("an attached slot");
            let link = peers.link(attached.client);
            if link.hung_up && !attached.queue.is_empty() {
                self.detach(slot, Leave::HungUp, peers, shared);
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
            self.detach(slot, leave, peers, shared);
            progress = true;
        }
        progress
    }

    /// Writes the pieces of a corrupt stream's tail that are due, between
    /// frames. They keep coming after the agent has seen the corruption,
    /// all within [`STALE_TAIL_NS`], so an agent that started over before
    /// the link was quiet takes them for its fresh stream.
    fn write_stale(&mut self, h2g: &mut Channel, shared: &mut Shared) -> bool {
        let mut progress = false;
        while self.current.is_empty()
            && let Some((due, piece)) = self.stale.front_mut()
            && *due <= shared.now
        {
            let n = h2g.write(piece, shared.now, &mut shared.rng);
            if n == 0 {
                break;
            }
            progress = true;
            piece.drain(..n);
            if piece.is_empty() {
                self.stale.pop_front();
            }
        }
        progress
    }

    fn write_guest(&mut self, peers: &mut Peers<'_>, h2g: &mut Channel, shared: &mut Shared) -> bool {
        let mut progress = false;
        loop {
            if self.current.is_empty() && !self.next_to_guest(peers, shared) {
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
    fn next_to_guest(&mut self, peers: &mut Peers<'_>, shared: &mut Shared) -> bool {
        match self.phase {
            Phase::Resync => false,
            Phase::Serving if self.glitch_due => {
                self.corrupt_stream(peers, shared);
                true
            }
            _ => self.next_own(shared) || (self.serving() && self.next_from_client(peers, shared)),
        }
    }

    fn next_own(&mut self, shared: &mut Shared) -> bool {
        // The relay's flow changes, in order with its notices.
        while let Some(flow) = self.core.poll_guest() {
            if matches!(wire::Message::decode_bytes(&flow).map(|m| m.body), Ok(wire::Body::RelayFlow(f)) if f.paused) {
                shared.faults.relay_pauses += 1;
            }
            self.own.push_back(Own::Frame(flow));
        }
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
    /// the relay's client threads), if any has one; frames the relay
    /// refuses are answered (or cost their client its connection) on the way.
    fn next_from_client(&mut self, peers: &mut Peers<'_>, shared: &mut Shared) -> bool {
        loop {
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
            let lease = self.slots[slot].as_ref().expect("attached").lease;
            let admit = self.core.admit(lease, id, flags);
            if admit == Admit::Forward {
                self.send(&inbuf.bytes()[..consumed], shared);
            }
            inbuf.consume(consumed);
            let attached = self.slots[slot].as_mut().expect("attached");
            attached.inbuf = inbuf;
            let client = attached.client;
            match admit {
                Admit::Forward => {
                    peers.forwarded(client, id, self.sent - 1, shared);
                    if frame_is_shutdown(id, flags) {
                        shared.faults.shutdowns += 1;
                    }
                    return true;
                }
                Admit::Refuse(answer) => {
                    if let Some(answer) = answer {
                        attached.queue.push(&answer);
                    }
                    peers.refused(client, id, flags, shared);
                }
                Admit::Evict(why) => {
                    peers.refused(client, id, flags, shared);
                    count_eviction(why, shared);
                    self.detach(slot, Leave::TooSlow, peers, shared);
                }
            }
        }
    }

    /// Starts writing a whole frame to the guest.
    fn send(&mut self, frame: &[u8], shared: &mut Shared) {
        shared.trace.record(Mark::ToGuest, header_word(frame), self.sent);
        self.current.push(frame);
        self.sent += 1;
    }

    /// Writes a length prefix no frame may have and drops every client:
    /// the stream is lost until the agent starts over.
    fn corrupt_stream(&mut self, peers: &mut Peers<'_>, shared: &mut Shared) {
        self.glitch_due = false;
        self.current.push(&corrupt::bad_length_prefix(&mut shared.rng));
        let mut due = shared.now;
        for _ in 0..shared.rng.range(0, STALE_PIECES_MAX) {
            due += shared.rng.range(1, STALE_TAIL_NS / STALE_PIECES_MAX);
            self.stale.push_back((due, corrupt::bad_length_prefix(&mut shared.rng)));
        }
        self.phase = Phase::Resync;
        self.own.clear();
        self.checks.clear();
        for slot in self.attached.clone() {
            self.detach(slot, Leave::Glitch, peers, shared);
        }
        shared.faults.stream_glitches += 1;
    }

    /// Frees a slot, tells the guest (unless the stream is lost) and the client.
    fn detach(&mut self, slot: Slot, why: Leave, peers: &mut Peers<'_>, shared: &mut Shared) {
        let attached = self.slots[slot].take().expect("detach an attached slot");
        self.attached.retain(|&s| s != slot);
        let bye = self.core.detach(attached.lease);
        // The notice, then the barrier ping.
        let notice_len = match parse_frame(&bye) {
            Ok(FrameStatus::Complete { consumed, .. }) => consumed,
            other => unreachable!("the relay's own notice is a whole frame: {other:?}"),
        };
        let (notice, barrier) = bye.split_at(notice_len);
        let (start, end) = wire::relay::slot_block(slot);
        match (why, shared.params.bug) {
            (Leave::Glitch, _) => {}
            (_, Bug::DropDisconnectNotice) => self.checks.push(RangeCheck { start, end, after: self.sent }),
            _ => {
                self.own.push_back(Own::Notice { frame: notice.to_vec(), start, end });
                self.own.push_back(Own::Frame(barrier.to_vec()));
            }
        }
        peers.left(attached.client, why, shared);
    }

    fn write_clients(&mut self, peers: &mut Peers<'_>, shared: &mut Shared) -> bool {
        let mut progress = false;
        for &slot in &self.attached {
            let attached = self.slots[slot].as_mut().expect("an attached slot");
            if attached.queue.is_empty() {
                continue;
            }
            let link = peers.link(attached.client);
            if link.hung_up {
                continue;
            }
            let n = link.r2c.write(attached.queue.bytes(), shared.now, &mut shared.rng);
            attached.queue.consume(n);
            let own = n.min(attached.uncounted);
            attached.uncounted -= own;
            self.core.delivered(attached.lease, n - own);
            progress |= n > 0;
        }
        progress
    }
}

/// Every relay client of a run: the honest ones, then the hostile ones
/// (a peer's index counts across both).
pub struct Peers<'a> {
    /// The honest clients.
    pub honest: &'a mut [Client],
    /// The hostile clients.
    pub hostile: &'a mut [Hostile],
}

impl Peers<'_> {
    /// The links of attached peer `i`.
    fn link(&mut self, i: usize) -> &mut Link {
        let link = match i.checked_sub(self.honest.len()) {
            None => self.honest[i].link.as_mut(),
            Some(h) => self.hostile[h].link.as_mut(),
        };
        link.expect("an attached client has links")
    }

    fn forwarded(&mut self, i: usize, id: u32, seq: u64, shared: &mut Shared) {
        match i.checked_sub(self.honest.len()) {
            None => self.honest[i].forwarded(id, seq, shared),
            Some(h) => self.hostile[h].forwarded(id, shared),
        }
    }

    /// The relay refused a frame of peer `i`: a violation for an honest one.
    fn refused(&mut self, i: usize, id: u32, flags: Flags, shared: &mut Shared) {
        match i.checked_sub(self.honest.len()) {
            None => violation!("the relay refused client frame #{id} {flags:?} of honest client {i}"),
            Some(h) => self.hostile[h].refused(id, shared),
        }
    }

    fn left(&mut self, i: usize, why: Leave, shared: &mut Shared) {
        match i.checked_sub(self.honest.len()) {
            None => self.honest[i].left(why, shared),
            Some(h) => self.hostile[h].left(why, shared),
        }
    }
}

fn count_eviction(why: Eviction, shared: &mut Shared) {
    match why {
        Eviction::ClientQueueFull | Eviction::Stalled => shared.faults.slow_client_kicks += 1,
        Eviction::RelayQueueFull => shared.faults.relay_full_kicks += 1,
    }
}

/// Whether a client frame is `core.shutdown` (the one frame a client may
/// send on id 0).
fn frame_is_shutdown(id: u32, flags: Flags) -> bool {
    id == 0 && flags.contains(Flags::SHUTDOWN)
}
