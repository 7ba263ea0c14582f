//! The relay's decisions, without I/O: which client gets a slot, which
//! client frames may reach the guest, where each guest frame goes, how many
//! bytes wait for whom, and who is disconnected when a bound is reached.
//! [`relay`](crate::relay) wraps it in threads; the simulator drives it
//! directly.
//!
//! # Ids are never ambiguous
//!
//! Slot `i` owns the ids of [`wire::relay::slot_range`]. A slot is handed to
//! a new client only once the guest has confirmed that nothing of the
//! previous client's is left in flight: when a client leaves, the relay
//! sends the guest `core.relay.client.disconnected` for the slot's range and
//! then a `core.ping` on the slot's *barrier id* (the slot range's end, a
//! multiple of `SLOT_STEP` that no client may use). The guest handles frames
//! in order and sends every frame of a dropped session before the `core.pong`
//! it queues after the notice, so when the relay reads that pong, every
//! frame the guest ever sent for the old client has passed and was dropped.
//! Until then the slot is [`SlotState::Draining`]: its frames are dropped and
//! nobody can attach to it. This needs no timing assumption (a rest period
//! fails when a stalled pipeline outlasts it) and no change to the greeting
//! (reference clients get the whole range). A guest that never answers keeps
//! the slot draining: safe, and visible in [`RelayCore::draining`].
//!
//! # Messages only the host may send
//!
//! A client frame goes to the guest only on an id of the client's own range,
//! or on id 0 with exactly the `SHUTDOWN` flag (which the guest accepts for
//! `core.shutdown` alone), and that one only while
//! [`RelayOptions::client_shutdown`] allows it. The guest takes
//! `core.init.ack`, `core.clock.sync` and `core.relay.client.disconnected`
//! only on id 0, so no client can forge them. A refused frame is answered
//! with `core.error` (`invalid_session`) on its id, so the client's call ends
//! at once instead of timing out.
//!
//! # Bounded memory and fairness
//!
//! The guest reader never waits for a client: each guest frame is queued for
//! its client at once or dropped. Read data is pushed by the guest at its
//! own pace, so a client that reads slower than that (a busy process, a slow
//! disk) must be slowed down at the source: once half of its bound is
//! queued, the relay tells the guest `picosandbox.relay.flow{paused: true}`
//! for the client's range (the guest then sends no read chunks to it; other
//! clients' chunks and all small answers go on), and resumes it when the
//! queue is down to an eighth. The pause arrives while at most a chunk or two
//! are already on the way, which the other half of the bound absorbs.
//!
//! Hard bounds stay: a client may have at most
//! [`RelayOptions::client_queue_bytes`] queued, and all clients together at
//! most [`RelayOptions::total_queue_bytes`]. A frame that would pass its
//! client's bound disconnects that client (its calls fail; the guest drops
//! its sessions) — with a guest that honours the pause this happens only to
//! a client flooding the relay with requests it never reads answers to; one
//! that would pass the total bound disconnects the client with the most
//! bytes queued. A paused client that never reads again keeps its slot and
//! at most its bound of memory, and nobody waits for it.

use wire::relay::{RELAY_SLOTS, SLOT_STEP, slot_of, slot_range};
use wire::{Body, CoreError, CoreErrorKind, Flags, Message, MessageType, Ping, RelayClientDisconnected, RelayFlow};

use crate::proto::frame;

/// Bytes queued for one client at most (four largest frames): a client that
/// falls further behind is disconnected.
pub const CLIENT_QUEUE_BYTES: usize = 4 * wire::MAX_FRAME_BYTES;

/// Bytes queued for all clients together at most.
pub const RELAY_QUEUE_BYTES: usize = 16 * wire::MAX_FRAME_BYTES;

/// The greeting's size: the slot's range as two `u32 BE`.
pub const GREETING_RANGE_LEN: usize = 8;

/// What a full relay writes instead of a range (then it closes): the empty
/// range `0..0`, which no slot has.
pub const FULL_GREETING: [u8; GREETING_RANGE_LEN] = [0; GREETING_RANGE_LEN];

/// A client slot index.
pub type Slot = usize;

/// Relay settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelayOptions {
    /// Whether clients may send `core.shutdown` (the reference allows it).
    pub client_shutdown: bool,
    /// Bytes queued for one client before it is disconnected.
    pub client_queue_bytes: usize,
    /// Bytes queued for all clients together.
    pub total_queue_bytes: usize,
    /// How long a paused client may read nothing before it is cut off.
    pub paused_client_timeout_ns: u64,
    /// A defect planted on purpose, so the simulator can show that it
    /// catches it. Always [`PlantedBug::None`] in the product.
    #[doc(hidden)]
    pub planted: PlantedBug,
}

/// Defects the simulator plants in [`RelayCore`] to prove its checks find
/// them (each is how an earlier relay behaved).
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PlantedBug {
    /// None: the product.
    #[default]
    None,
    /// A slot is free again as soon as its client leaves, without waiting
    /// for the guest's barrier (late frames of the old client reach the next).
    ReuseBeforeDrain,
    /// No client is ever cut off or paused: queues grow without bound.
    NoEviction,
    /// No client is ever paused in the guest (the relay before flow
    /// control; the simulator's host adapter adds the old relay's waiting).
    NoFlowControl,
}

impl Default for RelayOptions {
    fn default() -> Self {
        RelayOptions {
            client_shutdown: true,
            client_queue_bytes: CLIENT_QUEUE_BYTES,
            total_queue_bytes: RELAY_QUEUE_BYTES,
            paused_client_timeout_ns: PAUSED_CLIENT_TIMEOUT_NS,
            planted: PlantedBug::None,
        }
    }
}

/// One client's hold on a slot. Stale leases (of a client that left) are
/// recognised and ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Lease {
    /// The slot.
    pub slot: Slot,
    /// Which occupant of the slot: counts up across the relay's life.
    pub incarnation: u64,
}

/// Where a slot is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotState {
    /// Nobody's, and nothing of anybody's in flight: can be handed out.
    Free,
    /// A client's.
    Attached {
        /// Which occupant.
        incarnation: u64,
        /// Bytes queued for it.
        queued: usize,
        /// Cut off for falling behind: its frames are dropped until it is
        /// detached.
        evicted: bool,
        /// Whether it may send `core.shutdown`.
        shutdown: bool,
        /// Whether the guest was told to hold its read data.
        paused: bool,
        /// Bytes written to it so far (progress, for the stall check).
        delivered: u64,
    },
    /// Its client left; waiting for the guest's barrier pong.
    Draining,
}

/// Why a client is disconnected by the relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Eviction {
    /// It fell [`RelayOptions::client_queue_bytes`] behind.
    ClientQueueFull,
    /// All clients together reached [`RelayOptions::total_queue_bytes`] and
    /// it had the most queued.
    RelayQueueFull,
    /// Its read data was paused and it read nothing for
    /// [`RelayOptions::paused_client_timeout_ns`]: it holds guest sessions (and the file
    /// contents they read) for nothing.
    Stalled,
}

/// How long a paused client may read nothing before it is disconnected, by
/// default (30 s: far longer than any pause of a live reader).
pub const PAUSED_CLIENT_TIMEOUT_NS: u64 = 30_000_000_000;

/// What to do with a client frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admit {
    /// Write it to the guest.
    Forward,
    /// Drop it; queue this answer for the client (if any; it is already
    /// counted in the client's queue).
    Refuse(Option<Vec<u8>>),
    /// Drop it and disconnect the client: its refusals piled up unread.
    Evict(Eviction),
}

/// What to do with a guest frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// Queue it for this client (already counted in its queue); first
    /// disconnect `evict`, if any, to make room.
    Deliver {
        /// The client.
        lease: Lease,
        /// A client to disconnect first.
        evict: Option<(Lease, Eviction)>,
    },
    /// Drop it; disconnect this client, which it was for.
    Evict(Lease, Eviction),
    /// Drop it (no attached client owns its id, or it is the host's own).
    Drop,
    /// The guest's barrier pong for this slot: it is free again.
    Drained(Slot),
}

/// Counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RelayStats {
    /// Client frames refused (outside the client's ids, or a forbidden
    /// `core.shutdown`).
    pub refused: u64,
    /// Guest frames dropped (no attached client owned their id).
    pub dropped: u64,
    /// Clients disconnected for falling behind.
    pub evicted: u64,
    /// Slots drained and freed after a client left.
    pub drained: u64,
}

/// The relay's state machine.
#[derive(Debug, Clone)]
pub struct RelayCore {
    slots: [SlotState; RELAY_SLOTS],
    options: RelayOptions,
    /// Bytes queued for all clients.
    queued: usize,
    incarnations: u64,
    stats: RelayStats,
    /// Flow changes to tell the guest, oldest first: (slot, paused). One
    /// per slot at most (a newer change replaces an unsent one).
    flow: std::collections::VecDeque<(Slot, bool)>,
    /// Per paused slot: its delivered count when last seen to move, and when.
    watch: [Option<(u64, u64)>; RELAY_SLOTS],
    /// Attached slots whose read data is paused.
    paused: usize,
}

impl Default for RelayCore {
    fn default() -> Self {
        RelayCore::new(RelayOptions::default())
    }
}

impl RelayCore {
    /// No clients.
    pub fn new(options: RelayOptions) -> RelayCore {
        assert!(options.client_queue_bytes >= wire::MAX_FRAME_BYTES, "a client queue must hold one whole frame");
        assert!(options.total_queue_bytes >= options.client_queue_bytes, "the total bound covers one client");
        RelayCore {
            slots: [SlotState::Free; RELAY_SLOTS],
            options,
            queued: 0,
            incarnations: 0,
            stats: RelayStats::default(),
            flow: std::collections::VecDeque::new(),
            watch: [None; RELAY_SLOTS],
            paused: 0,
        }
    }

    /// The settings.
    pub fn options(&self) -> RelayOptions {
        self.options
    }

    /// Counters.
    pub fn stats(&self) -> RelayStats {
        self.stats
    }

    /// A slot's state.
    pub fn state(&self, slot: Slot) -> SlotState {
        self.slots[slot]
    }

    /// Clients attached.
    pub fn clients(&self) -> usize {
        self.slots.iter().filter(|s| matches!(s, SlotState::Attached { .. })).count()
    }

    /// Slots waiting for the guest's barrier.
    pub fn draining(&self) -> usize {
        self.slots.iter().filter(|s| matches!(s, SlotState::Draining)).count()
    }

    /// Bytes queued for all clients.
    pub fn queued_bytes(&self) -> usize {
        self.queued
    }

    /// Bytes queued for one client (0 for a stale lease).
    pub fn client_queued(&self, lease: Lease) -> usize {
        match self.slots[lease.slot] {
            SlotState::Attached { incarnation, queued, .. } if incarnation == lease.incarnation => queued,
            _ => 0,
        }
    }

    /// Whether the lease is its slot's current, not-evicted occupant.
    pub fn is_current(&self, lease: Lease) -> bool {
        matches!(self.slots[lease.slot], SlotState::Attached { incarnation, evicted: false, .. } if incarnation == lease.incarnation)
    }

    /// Takes the lowest free slot, if any (`None`: every slot is attached
    /// or draining; answer with [`FULL_GREETING`]).
    pub fn attach(&mut self) -> Option<Lease> {
        self.attach_as(self.options.client_shutdown)
    }

    /// [`RelayCore::attach`] for the host's own client, which may always
    /// send `core.shutdown` (it is how the host powers the guest off).
    pub fn attach_host(&mut self) -> Option<Lease> {
        self.attach_as(true)
    }

    fn attach_as(&mut self, shutdown: bool) -> Option<Lease> {
        let slot = self.slots.iter().position(|s| *s == SlotState::Free)?;
        self.incarnations += 1;
        let incarnation = self.incarnations;
        self.slots[slot] =
            SlotState::Attached { incarnation, queued: 0, evicted: false, shutdown, paused: false, delivered: 0 };
        self.watch[slot] = None;
        Some(Lease { slot, incarnation })
    }

    /// The greeting for a new client: its range (`u32 BE` start, end), then
    /// the guest's cached `core.ready` frame.
    pub fn greeting(lease: Lease, ready_frame: &[u8]) -> Vec<u8> {
        let (start, end) = slot_range(lease.slot);
        let mut out = Vec::with_capacity(GREETING_RANGE_LEN + ready_frame.len());
        out.extend_from_slice(&start.to_be_bytes());
        out.extend_from_slice(&end.to_be_bytes());
        out.extend_from_slice(ready_frame);
        out
    }

    /// Reads the range part of a greeting: `Ok((start, end))`, or why it
    /// is no range a client can use.
    pub fn parse_greeting(range: &[u8; GREETING_RANGE_LEN]) -> Result<(u32, u32), GreetingError> {
        if *range == FULL_GREETING {
            return Err(GreetingError::Full);
        }
        let start = u32::from_be_bytes([range[0], range[1], range[2], range[3]]);
        let end = u32::from_be_bytes([range[4], range[5], range[6], range[7]]);
        if start == 0 || start >= end {
            return Err(GreetingError::BadRange { start, end });
        }
        Ok((start, end))
    }

    /// Decides on a client frame with this header.
    pub fn admit(&mut self, lease: Lease, id: u32, flags: Flags) -> Admit {
        if !self.is_current(lease) {
            self.stats.refused += 1;
            return Admit::Refuse(None);
        }
        let (start, end) = slot_range(lease.slot);
        let why = if (start..end).contains(&id) {
            return Admit::Forward;
        } else if id == 0 && flags == Flags::SHUTDOWN {
            if matches!(self.slots[lease.slot], SlotState::Attached { shutdown: true, .. }) {
                return Admit::Forward;
            }
            "relay: core.shutdown from relay clients is turned off for this sandbox".to_string()
        } else {
            format!("relay: id {id} is not this client's (its ids are {start}..{end})")
        };
        self.stats.refused += 1;
        let answer = frame(id, &CoreError { kind: CoreErrorKind::InvalidSession, message: &why, offending_type: None });
        match self.charge(lease, answer.len()) {
            Ok(()) => Admit::Refuse(Some(answer)),
            Err(why) => {
                self.evict(lease);
                Admit::Evict(why)
            }
        }
    }

    /// Decides where a whole guest frame goes (its length prefix included).
    pub fn route(&mut self, frame: &[u8]) -> Route {
        let Ok(wire::FrameStatus::Complete { frame: parsed, .. }) = wire::parse_frame(frame) else {
            self.stats.dropped += 1;
            return Route::Drop;
        };
        let id = parsed.id;
        let Some(slot) = slot_of(id) else {
            return self.host_frame(id, frame);
        };
        let SlotState::Attached { incarnation, evicted: false, .. } = self.slots[slot] else {
            self.stats.dropped += 1;
            return Route::Drop;
        };
        let lease = Lease { slot, incarnation };
        let mut evict = None;
        if self.client_queued(lease) + frame.len() <= self.options.client_queue_bytes
            && self.queued + frame.len() > self.options.total_queue_bytes
        {
            // Room for this client, none in all: cut off the biggest holder.
            let biggest = self.biggest_holder();
            if biggest != lease {
                self.evict(biggest);
                evict = Some((biggest, Eviction::RelayQueueFull));
            }
        }
        let route = match self.charge(lease, frame.len()) {
            Ok(()) => {
                self.update_flow(lease.slot);
                Route::Deliver { lease, evict }
            }
            Err(why) => {
                self.evict(lease);
                self.stats.dropped += 1;
                Route::Evict(lease, why)
            }
        };
        self.check_invariants();
        route
    }

    /// A frame queued for `lease` was written to it (or dropped with its
    /// queue); a stale lease is ignored.
    pub fn delivered(&mut self, lease: Lease, len: usize) {
        // An evicted client's queue was dropped (and uncounted) at once; its
        // writer may still finish a frame it had taken.
        if let SlotState::Attached { incarnation, queued, evicted: false, delivered, .. } = &mut self.slots[lease.slot]
            && *incarnation == lease.incarnation
        {
            assert!(len <= *queued, "delivered more than was queued for slot {}", lease.slot);
            *queued -= len;
            *delivered += len as u64;
            self.queued -= len;
            self.update_flow(lease.slot);
        }
        self.check_invariants();
    }

    /// The client left (or was cut off and its connection closed): its slot
    /// drains. Returns the bytes to write to the guest, in order: the
    /// disconnect notice and the barrier ping. Whatever was queued for the
    /// client is dropped with it. A stale lease returns nothing.
    pub fn detach(&mut self, lease: Lease) -> Vec<u8> {
        let SlotState::Attached { incarnation, queued, paused, .. } = self.slots[lease.slot] else { return Vec::new() };
        if incarnation != lease.incarnation {
            return Vec::new();
        }
        self.paused -= usize::from(paused);
        self.watch[lease.slot] = None;
        self.queued -= queued;
        // The disconnect notice ends any pause in the guest; an unsent
        // change must not reach the slot's next client.
        self.flow.retain(|&(slot, _)| slot != lease.slot);
        self.slots[lease.slot] = match self.options.planted {
            PlantedBug::ReuseBeforeDrain => SlotState::Free,
            _ => SlotState::Draining,
        };
        self.check_invariants();
        let (id_start, id_end_exclusive) = wire::relay::slot_block(lease.slot);
        let mut out = frame(0, &RelayClientDisconnected { id_start, id_end_exclusive });
        out.extend_from_slice(&frame(barrier_id(lease.slot), &Ping));
        out
    }

    /// The guest stream started over (a fresh handshake): nothing of any
    /// departed client can still be in flight, so draining slots are free.
    ///
    /// # Panics
    /// If a client is still attached: a new stream starts with none.
    pub fn reset_stream(&mut self) {
        assert_eq!(self.clients(), 0, "clients attached across a stream reset");
        for slot in &mut self.slots {
            *slot = SlotState::Free;
        }
        self.flow.clear();
        self.watch = [None; RELAY_SLOTS];
        self.paused = 0;
        assert_eq!(self.queued, 0, "bytes counted for departed clients");
    }

    /// The next frame the relay itself must write to the guest (a
    /// `picosandbox.relay.flow` change), if any. The shell takes it and
    /// writes it under the same lock as a detach's notice, so a change
    /// never reaches the guest after its slot's disconnect notice.
    pub fn poll_guest(&mut self) -> Option<Vec<u8>> {
        let (slot, paused) = self.flow.pop_front()?;
        let (id_start, id_end_exclusive) = slot_range(slot);
        Some(frame(0, &RelayFlow { id_start, id_end_exclusive, paused }))
    }

    /// Whether [`RelayCore::poll_guest`] has a frame.
    pub fn wants_guest(&self) -> bool {
        !self.flow.is_empty()
    }

    /// Checks paused clients at `now_ns`; returns one that read nothing for
    /// [`RelayOptions::paused_client_timeout_ns`] while paused, cut off now (the shell
    /// closes its connection). Call it until it returns `None`, at least as
    /// often as [`RelayCore::next_deadline`] says.
    pub fn tick(&mut self, now_ns: u64) -> Option<Lease> {
        if self.paused == 0 {
            return None;
        }
        for slot in 0..RELAY_SLOTS {
            let SlotState::Attached { incarnation, paused, evicted: false, delivered, .. } = self.slots[slot] else {
                self.watch[slot] = None;
                continue;
            };
            if !paused {
                self.watch[slot] = None;
                continue;
            }
            match self.watch[slot] {
                Some((seen, since)) if seen == delivered => {
                    if now_ns.saturating_sub(since) >= self.options.paused_client_timeout_ns {
                        let lease = Lease { slot, incarnation };
                        self.evict(lease);
                        self.watch[slot] = None;
                        return Some(lease);
                    }
                }
                _ => self.watch[slot] = Some((delivered, now_ns)),
            }
        }
        None
    }

    /// When [`RelayCore::tick`] may next cut a client off (`None`: no
    /// client is paused and being watched).
    pub fn next_deadline(&self) -> Option<u64> {
        let timeout = self.options.paused_client_timeout_ns;
        self.watch.iter().flatten().map(|&(_, since)| since.saturating_add(timeout)).min()
    }

    /// Pauses a client's read data in the guest once half its queue bound is
    /// queued, and resumes it below an eighth: a client that reads slowly
    /// is slowed down, not cut off, and nobody else waits.
    fn update_flow(&mut self, slot: Slot) {
        if matches!(self.options.planted, PlantedBug::NoEviction | PlantedBug::NoFlowControl) {
            return;
        }
        let pause_at = self.options.client_queue_bytes / 2;
        let resume_at = self.options.client_queue_bytes / 8;
        let SlotState::Attached { queued, paused, evicted: false, .. } = &mut self.slots[slot] else { return };
        let want = if *paused { *queued > resume_at } else { *queued >= pause_at };
        if want != *paused {
            *paused = want;
            if want {
                self.paused += 1;
            } else {
                self.paused -= 1;
                self.watch[slot] = None;
            }
            self.flow.retain(|&(s, _)| s != slot);
            self.flow.push_back((slot, want));
        }
    }

    /// Marks a client cut off: its queue is dropped now (the shell closes
    /// its connection; [`RelayCore::detach`] follows when its reader ends).
    /// The accounting invariants: the total is the sum of the clients'
    /// queues, the paused count counts paused slots, and (unless a defect
    /// is planted to break them) every queue is within its bound. Checked
    /// after every change in builds with debug assertions (the tests and
    /// the simulator); a scan of [`RELAY_SLOTS`] slots.
    fn check_invariants(&self) {
        if !cfg!(debug_assertions) {
            return;
        }
        let (mut queued, mut paused) = (0, 0);
        for state in &self.slots {
            if let SlotState::Attached { queued: q, paused: p, evicted, .. } = *state {
                assert!(!evicted || q == 0, "an evicted client still has {q} bytes counted");
                if self.options.planted != PlantedBug::NoEviction {
                    assert!(q <= self.options.client_queue_bytes, "a client queue of {q} bytes is over its bound");
                }
                queued += q;
                paused += usize::from(p);
            }
        }
        assert_eq!(queued, self.queued, "the relay's total is not the sum of its clients' queues");
        assert_eq!(paused, self.paused, "the paused count does not match the paused slots");
        if self.options.planted != PlantedBug::NoEviction {
            assert!(self.queued <= self.options.total_queue_bytes, "{} bytes queued, over the bound", self.queued);
        }
    }

    fn evict(&mut self, lease: Lease) {
        if let SlotState::Attached { incarnation, queued, evicted, .. } = &mut self.slots[lease.slot]
            && *incarnation == lease.incarnation
            && !*evicted
        {
            self.queued -= *queued;
            *queued = 0;
            *evicted = true;
            self.stats.evicted += 1;
        }
    }

    /// Counts `len` more bytes queued for `lease`, within the bounds.
    fn charge(&mut self, lease: Lease, len: usize) -> Result<(), Eviction> {
        let SlotState::Attached { queued, .. } = &mut self.slots[lease.slot] else {
            unreachable!("charge an attached slot")
        };
        if self.options.planted == PlantedBug::NoEviction {
            *queued += len;
            self.queued += len;
            return Ok(());
        }
        if *queued + len > self.options.client_queue_bytes {
            return Err(Eviction::ClientQueueFull);
        }
        if self.queued + len > self.options.total_queue_bytes {
            return Err(Eviction::RelayQueueFull);
        }
        *queued += len;
        self.queued += len;
        Ok(())
    }

    /// The attached client with the most bytes queued.
    fn biggest_holder(&self) -> Lease {
        let (slot, incarnation, _) = self
            .slots
            .iter()
            .enumerate()
            .filter_map(|(slot, s)| match *s {
                SlotState::Attached { incarnation, queued, evicted: false, .. } => Some((slot, incarnation, queued)),
                _ => None,
            })
            .max_by_key(|&(_, _, queued)| queued)
            .expect("bytes are queued, so some client holds them");
        Lease { slot, incarnation }
    }

    /// A guest frame on an id no client owns: a barrier pong frees its slot;
    /// anything else is dropped.
    fn host_frame(&mut self, id: u32, frame: &[u8]) -> Route {
        let slot = (id / SLOT_STEP) as usize;
        let is_barrier = id != 0 && id.is_multiple_of(SLOT_STEP) && (1..=RELAY_SLOTS).contains(&slot);
        if is_barrier && self.slots[slot - 1] == SlotState::Draining {
            let pong = Message::decode_bytes(frame)
                .is_ok_and(|m| matches!(m.body, Body::Pong(_)) && m.message_type() == MessageType::Pong);
            if pong {
                self.slots[slot - 1] = SlotState::Free;
                self.stats.drained += 1;
                return Route::Drained(slot - 1);
            }
        }
        self.stats.dropped += 1;
        Route::Drop
    }
}

/// The id of slot `slot`'s barrier ping: the end of its range, which no
/// client may use.
pub const fn barrier_id(slot: Slot) -> u32 {
    slot_range(slot).1
}

/// Why a greeting gives no usable range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GreetingError {
    /// The relay had no free slot.
    Full,
    /// A range no client can use.
    BadRange {
        /// Its start.
        start: u32,
        /// Its end.
        end: u32,
    },
}

impl std::fmt::Display for GreetingError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GreetingError::Full => write!(
                f,
                "the relay is full: all {RELAY_SLOTS} client slots are in use (or draining); try again when a client leaves"
            ),
            GreetingError::BadRange { start, end } => write!(f, "relay greeting: bad id range {start}..{end}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::frame as encode;
    use wire::{FsData, Pong};

    fn options(client: usize, total: usize) -> RelayOptions {
        RelayOptions { client_queue_bytes: client, total_queue_bytes: total, ..RelayOptions::default() }
    }

    fn data(id: u32, len: usize) -> Vec<u8> {
        encode(id, &FsData { data: &vec![7u8; len] })
    }

    fn drain(core: &mut RelayCore, lease: Lease) {
        assert_eq!(core.route(&encode(barrier_id(lease.slot), &Pong)), Route::Drained(lease.slot));
    }

    #[test]
    fn a_slot_is_reused_only_after_the_guest_barrier() {
        let mut core = RelayCore::default();
        let a = core.attach().unwrap();
        assert_eq!(a, Lease { slot: 0, incarnation: 1 });
        let (start, _) = slot_range(0);
        let bye = core.detach(a);
        // The notice for the whole range, then the barrier ping.
        let notice = wire::Message::decode_bytes(&bye).unwrap();
        let n = u32::from_be_bytes(bye[..4].try_into().unwrap()) as usize + 4;
        assert_eq!(
            notice.body,
            Body::RelayClientDisconnected(RelayClientDisconnected { id_start: 0, id_end_exclusive: SLOT_STEP })
        );
        let ping = wire::Frame::parse(&bye[n..]).unwrap();
        assert_eq!(
            (ping.id, wire::Message::decode_bytes(&bye[n..]).unwrap().message_type()),
            (barrier_id(0), MessageType::Ping)
        );
        assert_eq!(core.state(0), SlotState::Draining);
        let b = core.attach().unwrap();
        assert_eq!(b.slot, 1, "slot 0 drains: the next client gets another");
        // A late frame of the old client is dropped, not given to anybody.
        assert_eq!(core.route(&data(start, 10)), Route::Drop);
        // A forged pong on another id does not free it; a core.error on the barrier id neither.
        assert_eq!(core.route(&encode(0, &Pong)), Route::Drop);
        let err =
            encode(barrier_id(0), &CoreError { kind: CoreErrorKind::InvalidFlags, message: "x", offending_type: None });
        assert_eq!(core.route(&err), Route::Drop);
        assert_eq!(core.state(0), SlotState::Draining);
        drain(&mut core, a);
        let c = core.attach().unwrap();
        assert_eq!((c.slot, c.incarnation), (0, 3));
        assert!(core.is_current(c) && !core.is_current(a));
        assert_eq!(core.detach(a), Vec::<u8>::new(), "a stale lease detaches nothing");
    }

    #[test]
    fn attach_is_bounded_by_attached_and_draining_slots() {
        let mut core = RelayCore::default();
        let leases: Vec<_> = (0..RELAY_SLOTS).map(|_| core.attach().unwrap()).collect();
        assert_eq!(core.attach(), None, "the 129th client is refused");
        core.detach(leases[5]);
        assert_eq!(core.attach(), None, "a draining slot is not free");
        drain(&mut core, leases[5]);
        assert_eq!(core.attach().map(|l| l.slot), Some(5));
        assert_eq!(core.clients(), RELAY_SLOTS);
    }

    #[test]
    fn clients_reach_the_guest_only_on_their_ids_and_host_messages_never() {
        let mut core = RelayCore::default();
        let a = core.attach().unwrap();
        let b = core.attach().unwrap();
        let (b_start, b_end) = slot_range(b.slot);
        assert_eq!(core.admit(b, b_start, Flags::SESSION_START), Admit::Forward);
        assert_eq!(core.admit(b, b_end - 1, Flags::NONE), Admit::Forward);
        for (id, flags) in [
            (b_start, Flags::SESSION_START),
            (0, Flags::NONE),
            (0, Flags(Flags::SHUTDOWN.bits() | Flags::TERMINAL.bits())),
            (barrier_id(a.slot), Flags::NONE),
            (u32::MAX, Flags::NONE),
        ] {
            let Admit::Refuse(Some(answer)) = core.admit(a, id, flags) else { panic!("{id} {flags:?} admitted") };
            let m = wire::Message::decode_bytes(&answer).unwrap();
            assert_eq!(wire::Frame::parse(&answer).unwrap().id, id);
            assert!(matches!(m.body, Body::Error(CoreError { kind: CoreErrorKind::InvalidSession, .. })), "{m:?}");
            core.delivered(a, answer.len());
        }
        assert_eq!(core.admit(a, 0, Flags::SHUTDOWN), Admit::Forward);
        assert_eq!(core.stats().refused, 5);
        let mut strict = RelayCore::new(RelayOptions { client_shutdown: false, ..RelayOptions::default() });
        let s = strict.attach().unwrap();
        assert!(matches!(strict.admit(s, 0, Flags::SHUTDOWN), Admit::Refuse(Some(_))));
        let host = strict.attach_host().unwrap();
        assert_eq!(strict.admit(host, 0, Flags::SHUTDOWN), Admit::Forward, "the host's own client may");
    }

    #[test]
    fn a_client_that_falls_behind_is_cut_off_and_the_others_go_on() {
        let frame_len = data(1, 1000).len();
        let mut core = RelayCore::new(options(wire::MAX_FRAME_BYTES, 4 * wire::MAX_FRAME_BYTES));
        let slow = core.attach().unwrap();
        let fast = core.attach().unwrap();
        let (s0, _) = slot_range(slow.slot);
        let (f0, _) = slot_range(fast.slot);
        let per_client = wire::MAX_FRAME_BYTES / frame_len;
        for _ in 0..per_client {
            assert!(matches!(core.route(&data(s0, 1000)), Route::Deliver { lease, evict: None } if lease == slow));
        }
        assert_eq!(core.route(&data(s0, 1000)), Route::Evict(slow, Eviction::ClientQueueFull));
        assert_eq!(core.client_queued(slow), 0);
        assert_eq!(core.route(&data(s0, 1000)), Route::Drop, "an evicted client gets nothing more");
        assert!(matches!(core.route(&data(f0, 1000)), Route::Deliver { lease, .. } if lease == fast));
        core.delivered(fast, frame_len);
        assert_eq!(core.queued_bytes(), 0);
        assert_eq!(core.stats().evicted, 1);
        // Its refusals count too: a client that floods bad frames and reads nothing is cut off.
        let mut n = 0;
        loop {
            match core.admit(fast, 0, Flags::NONE) {
                Admit::Refuse(Some(_)) => n += 1,
                Admit::Evict(Eviction::ClientQueueFull) => break,
                other => panic!("{other:?}"),
            }
        }
        assert!(n > 1000);
    }

    fn flow(frame: &[u8]) -> (u32, RelayFlow) {
        let m = wire::Message::decode_bytes(frame).unwrap();
        match m.body {
            Body::RelayFlow(f) => (m.id, f),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_slow_reader_is_paused_in_the_guest_then_resumed() {
        let chunk = data(1, 1_000_000).len();
        let mut core = RelayCore::default();
        let slow = core.attach().unwrap();
        let (s0, s_end) = slot_range(slow.slot);
        let mut queued = 0;
        while queued + chunk < CLIENT_QUEUE_BYTES / 2 {
            assert!(matches!(core.route(&data(s0, 1_000_000)), Route::Deliver { .. }));
            queued += chunk;
            assert!(!core.wants_guest());
        }
        assert!(matches!(core.route(&data(s0, 1_000_000)), Route::Deliver { .. }));
        queued += chunk;
        let (id, f) = flow(&core.poll_guest().expect("a pause"));
        assert_eq!((id, f), (0, RelayFlow { id_start: s0, id_end_exclusive: s_end, paused: true }));
        assert_eq!(core.poll_guest(), None, "one change, told once");
        // Chunks already on the way still fit (the other half of the bound).
        for _ in 0..3 {
            assert!(matches!(core.route(&data(s0, 1_000_000)), Route::Deliver { .. }));
            queued += chunk;
        }
        assert!(!core.wants_guest(), "still paused");
        // Draining to an eighth resumes it.
        while queued > CLIENT_QUEUE_BYTES / 8 {
            core.delivered(slow, chunk);
            queued -= chunk;
        }
        let (_, f) = flow(&core.poll_guest().expect("a resume"));
        assert!(!f.paused);
        // A pause not yet sent is dropped when the client leaves.
        while queued + chunk < CLIENT_QUEUE_BYTES / 2 + chunk {
            core.route(&data(s0, 1_000_000));
            queued += chunk;
        }
        assert!(core.wants_guest());
        core.detach(slow);
        assert_eq!(core.poll_guest(), None, "no flow change after the disconnect notice");
    }

    #[test]
    fn a_paused_client_that_reads_nothing_is_cut_off_in_time() {
        let mut core = RelayCore::default();
        let idle = core.attach().unwrap();
        let busy = core.attach().unwrap();
        for lease in [idle, busy] {
            let (start, _) = slot_range(lease.slot);
            while core.poll_guest().is_none() {
                assert!(matches!(core.route(&data(start, 1_000_000)), Route::Deliver { .. }));
            }
        }
        assert_eq!(core.tick(0), None, "watching starts");
        assert_eq!(core.next_deadline(), Some(PAUSED_CLIENT_TIMEOUT_NS));
        core.delivered(busy, 1000);
        assert_eq!(core.tick(PAUSED_CLIENT_TIMEOUT_NS - 1), None);
        // The busy one read something meanwhile: its clock starts again.
        assert_eq!(core.tick(PAUSED_CLIENT_TIMEOUT_NS), Some(idle));
        assert_eq!(core.tick(PAUSED_CLIENT_TIMEOUT_NS), None);
        assert!(!core.is_current(idle) && core.is_current(busy));
        assert_eq!(core.next_deadline(), Some(2 * PAUSED_CLIENT_TIMEOUT_NS - 1));
        core.detach(idle);
        core.detach(busy);
        assert_eq!((core.tick(u64::MAX), core.next_deadline()), (None, None));
    }

    #[test]
    fn the_total_bound_cuts_off_the_biggest_holder() {
        let big = data(1, 100_000).len();
        let mut core = RelayCore::new(options(wire::MAX_FRAME_BYTES, wire::MAX_FRAME_BYTES + 2 * big));
        let hog = core.attach().unwrap();
        let other = core.attach().unwrap();
        let (h0, _) = slot_range(hog.slot);
        let (o0, _) = slot_range(other.slot);
        let mut queued = 0;
        while queued + big <= wire::MAX_FRAME_BYTES {
            assert!(matches!(core.route(&data(h0, 100_000)), Route::Deliver { .. }));
            queued += big;
        }
        // The other client stays below its own bound; when all together
        // reach the total, the hog (the biggest holder) is cut off.
        let mut sent = 0;
        let evicted = loop {
            match core.route(&data(o0, 100_000)) {
                Route::Deliver { lease, evict: None } if lease == other => sent += 1,
                Route::Deliver { lease, evict: Some(e) } if lease == other => break e,
                r => panic!("{r:?}"),
            }
            assert!(core.queued_bytes() <= core.options().total_queue_bytes);
        };
        assert_eq!(evicted, (hog, Eviction::RelayQueueFull));
        assert_eq!(core.queued_bytes(), (sent + 1) * big);
        assert_eq!(core.client_queued(hog), 0);
        assert!(!core.is_current(hog) && core.is_current(other));
    }

    #[test]
    fn greetings_round_trip_and_the_full_relay_says_so() {
        let ready = encode(0, &wire::Ready::default());
        let g = RelayCore::greeting(Lease { slot: 5, incarnation: 9 }, &ready);
        assert_eq!(&g[..4], &167_772_156u32.to_be_bytes());
        assert_eq!(&g[4..8], &201_326_586u32.to_be_bytes());
        assert_eq!(&g[8..], &ready[..]);
        assert_eq!(RelayCore::parse_greeting(g[..8].try_into().unwrap()), Ok(slot_range(5)));
        assert_eq!(RelayCore::parse_greeting(&FULL_GREETING), Err(GreetingError::Full));
        assert!(GreetingError::Full.to_string().starts_with("the relay is full"));
        let bad = [0, 0, 0, 9, 0, 0, 0, 9];
        assert_eq!(RelayCore::parse_greeting(&bad), Err(GreetingError::BadRange { start: 9, end: 9 }));
    }
}
