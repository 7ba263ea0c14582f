//! Hostile relay clients: local processes that share the relay with the
//! honest ones and try to read, cancel, stall or starve them. They are not
//! modelled like honest clients: each checks only what it is owed (its own
//! answers, within [`Params::response_bound_ns`]) and that it never
//! receives a frame for an id it did not open on its own connection; the
//! honest clients' checks and the model show that they are unaffected.
//!
//! - [`Kind::Staller`] opens reads of [`HOSTILE_FILE`] whose data exceeds
//!   the run's relay queue bound (all clients') and never reads its socket; the relay
//!   cuts it off, it connects again and does it again.
//! - [`Kind::Churner`] connects, starts a read of the same file, hangs up
//!   at its first data frame and connects again: slots are reused while
//!   frames of their previous occupant are still in flight (while a
//!   staller holds up the relay, if the run has one).
//! - [`Kind::Forger`] sends `core.relay.client.disconnected` for every id,
//!   `core.clock.sync` to time 0 and `core.init.ack` on ids of its own (the
//!   agent owes `core.error` `invalid_session` for each), and frames on id 0
//!   without the lone `SHUTDOWN` flag (the relay owes that answer itself).
//! - [`Kind::Hog`] opens [`HOG_EXCESS_MAX`] or fewer writes beyond its share
//!   of sessions ([`MAX_SESSIONS_PER_CLIENT`]) and never ends them: each one
//!   past the share is owed "too many sessions for one client"; the others
//!   end with the hog's connection (or the agent's idle write bound).
//! - [`Kind::Thief`] sends `Read`, `Write`, `ReadDir`, `FStat`, `FSetStat`
//!   and `CloseHandle` on handle numbers it does not hold: numbers shaped
//!   as the agent makes them (a global serial above a table index, so
//!   numbers other clients hold are among them) and the numbers its own
//!   earlier connections opened (`OpenDir` of `/`), which a slot's next
//!   occupant may be. Each is owed `EBADF` ([`BAD_HANDLE`]) and nothing
//!   else: no data, no `ok`, no session (an answer that never comes is
//!   late); the model shows that no honest client's file changed.

use std::collections::{BTreeMap, VecDeque};

use agent_core::MAX_SESSIONS_PER_CLIENT;
use host_sync::proto::Ids;
use host_sync::relay::{RelayCore, Slot};
use host_sync::relay_core::GREETING_RANGE_LEN;
use wire::{
    Body, ClockSync, CoreError, CoreErrorKind, Flags, FrameStatus, FsData, FsOp, FsRequest, FsResponse, FsResponseData,
    InitAck, Message, Payload, RelayClientDisconnected, encode_frame, frame_len, parse_frame,
};

use super::calls::SHUTDOWN_ABORT;
use super::channel::ByteQueue;
use super::client::{Leave, Link, State};
use super::content::Content;
use super::trace::{Mark, header_word};
use super::violation;
use super::world::{Phase, Shared, earliest};

/// The file stallers and churners read: created before the run (in the
/// model too) and removed after the cleanup.
pub const HOSTILE_FILE: &str = "/hostile";

/// Writes a hog opens beyond its share, at most.
pub const HOG_EXCESS_MAX: u64 = 16;

/// How a write the ramfs had no room to stage is answered.
const NO_SPACE: &str = "write: No space left on device";

/// The answer a hog's writes past its share are owed.
pub const HOG_REFUSAL: &str = "write: too many sessions for one client (max 64)";

/// The answer of a write the agent aborted for receiving nothing.
const IDLE_ABORT: &str = "write: aborted: no data for";

/// Connections a hostile client makes in a run, at most (each costs the
/// sweep several MiB of simulated reads at most).
pub const HOSTILE_ROUNDS: u32 = 3;

/// Longest pause before a hostile client connects again, in ns.
const HOSTILE_PAUSE_MAX_NS: u64 = 50_000_000;

/// How long a forger or a hog stays once it has its answers, in ns.
const HOSTILE_STAY_NS: u64 = 20_000_000;

/// How the agent refuses a handle its requester does not hold (the
/// reference's op name goes in front).
pub const BAD_HANDLE: &str = "Bad file descriptor (os error 9)";

/// The answer to `OpenDir` when the agent's handle table is full
/// ([`SIM_HANDLES`](super::SIM_HANDLES) slots in the simulated guest).
const NO_HANDLE_TABLE: &str = "opendir: Too many open files in system (os error 23)";

/// Handle numbers a thief guesses per connection.
const THIEF_GUESSES: u64 = 8;

/// Handles a thief opens per connection, for its slot's next occupant to
/// try (itself, on its next connection).
const THIEF_OPENS: u64 = 2;

/// Bits of a handle number below its serial (`agent_core::handles`).
const HANDLE_INDEX_BITS: u32 = 16;

/// What a hostile client does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Opens big reads and never reads its socket.
    Staller,
    /// Leaves mid-read and comes back.
    Churner,
    /// Sends host-only messages.
    Forger,
    /// Holds more sessions than its share.
    Hog,
    /// Uses handle numbers it does not hold.
    Thief,
}

/// An answer a hostile client is owed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Owed {
    /// `core.error` `invalid_session` on the frame's id, from the agent.
    SessionError,
    /// `core.error` `invalid_session` on id 0, from the relay.
    RelayRefusal,
    /// The write is past the share: [`HOG_REFUSAL`].
    QuotaRefusal,
    /// Nothing (a write within the share).
    Nothing,
    /// `ok: false` with exactly "{op}: [`BAD_HANDLE`]": the op's name.
    BadHandle(&'static str),
    /// A handle of its own, or [`NO_HANDLE_TABLE`].
    Handle,
}

/// A hostile client identity and its current connection.
#[derive(Debug)]
pub struct Hostile {
    /// Its index among all peers of the relay (after the honest clients).
    pub index: usize,
    /// What it does.
    pub kind: Kind,
    /// The links of the current connection.
    pub link: Option<Link>,
    state: State,
    slot: Slot,
    ids: Ids,
    outbox: ByteQueue,
    inbox: ByteQueue,
    /// Frames written and not yet forwarded (or refused), in order.
    unforwarded: VecDeque<(u32, Owed)>,
    /// Answers owed, by id, with their deadline once forwarded (id-0
    /// refusals are counted in `owed_zero`).
    owed: BTreeMap<u32, (Owed, Option<u64>)>,
    /// Refusals owed on id 0: their deadlines (`None`: not refused yet).
    owed_zero: VecDeque<Option<u64>>,
    /// Open reads and the offset of their next byte.
    reads: BTreeMap<u32, u64>,
    /// Whether this connection's frames have been composed.
    sent: bool,
    /// When it hangs up, once it has what it came for.
    leave_at: Option<u64>,
    rounds_left: u32,
    /// The file it reads.
    file: Content,
    /// Handle numbers its earlier connections opened (a thief's).
    opened_before: Vec<u64>,
    /// Handle numbers this connection opened.
    opened: Vec<u64>,
}

impl Hostile {
    /// A hostile client that connects as soon as the relay serves.
    pub fn new(index: usize, kind: Kind, file: Content) -> Hostile {
        Hostile {
            index,
            kind,
            link: None,
            state: State::Away { from_ns: 0 },
            slot: 0,
            ids: Ids::new(0, 0),
            outbox: ByteQueue::default(),
            inbox: ByteQueue::default(),
            unforwarded: VecDeque::new(),
            owed: BTreeMap::new(),
            owed_zero: VecDeque::new(),
            reads: BTreeMap::new(),
            sent: false,
            leave_at: None,
            rounds_left: HOSTILE_ROUNDS,
            file,
            opened_before: Vec::new(),
            opened: Vec::new(),
        }
    }

    /// Whether it wants a connection now.
    pub fn wants_to_connect(&self, shared: &Shared) -> bool {
        shared.phase == Phase::Traffic
            && self.rounds_left > 0
            && matches!(self.state, State::Away { from_ns } if from_ns <= shared.now)
    }

    /// Whether it is away for good (the end of a run waits for that).
    pub fn is_gone(&self, shared: &Shared) -> bool {
        matches!(self.state, State::Away { .. }) && (shared.phase != Phase::Traffic || self.rounds_left == 0)
    }

    /// Its state, for a failure message.
    pub fn describe(&self) -> String {
        format!(
            "hostile {} {:?} {:?} slot {}, owed {:?} and {} on id 0",
            self.index,
            self.kind,
            self.state,
            self.slot,
            self.owed,
            self.owed_zero.len()
        )
    }

    /// A new connection on `slot`.
    pub fn connected(&mut self, slot: Slot, link: Link) {
        let (start, end) = wire::relay::slot_range(slot);
        self.link = Some(link);
        self.slot = slot;
        self.ids = Ids::new(start, end);
        self.rounds_left -= 1;
        self.sent = false;
        self.leave_at = None;
        // A staller never reads, not even the greeting.
        self.state = if self.kind == Kind::Staller { State::Active } else { State::Greeting };
    }

    /// The relay forwarded its next frame.
    pub fn forwarded(&mut self, id: u32, shared: &mut Shared) {
        let Some((sent, owed)) = self.unforwarded.pop_front() else {
            violation!("hostile {}: the relay forwarded #{id}, a frame it never sent", self.index);
        };
        if sent != id || owed == Owed::RelayRefusal {
            violation!("hostile {}: the relay forwarded #{id} where #{sent} ({owed:?}) was next", self.index);
        }
        if let Some(entry) = self.owed.get_mut(&id) {
            entry.1 = Some(shared.now + shared.params.response_bound_ns);
        }
    }

    /// The relay refused its next frame (and queued its answer).
    pub fn refused(&mut self, id: u32, shared: &mut Shared) {
        let next = self.unforwarded.pop_front();
        if next != Some((id, Owed::RelayRefusal)) {
            violation!("hostile {}: the relay refused #{id}; its next frame was {next:?}", self.index);
        }
        let deadline = self.owed_zero.iter_mut().find(|d| d.is_none()).expect("a refusal owed");
        *deadline = Some(shared.now + shared.params.response_bound_ns);
    }

    /// The relay detached it: everything owed is void; plan the next round.
    pub fn left(&mut self, why: Leave, shared: &mut Shared) {
        self.link = None;
        self.outbox.clear();
        self.inbox.clear();
        self.unforwarded.clear();
        self.owed.clear();
        self.owed_zero.clear();
        self.reads.clear();
        self.opened_before.append(&mut self.opened);
        if self.kind == Kind::Staller && why == Leave::TooSlow {
            shared.faults.stallers_cut_off += 1;
        }
        self.state = State::Away { from_ns: shared.now + shared.rng.range(0, HOSTILE_PAUSE_MAX_NS) };
        shared.trace.record(Mark::Fault, 300 + why as u64, self.index as u64);
    }

    /// When, after now, it next needs a step.
    pub fn next_event_ns(&self, shared: &Shared) -> Option<u64> {
        let mut next = None;
        let mut consider = |t: Option<u64>| next = earliest(next, t.filter(|&t| t > shared.now));
        if let Some(link) = &self.link {
            consider(link.c2r.next_arrival_ns());
            if self.kind != Kind::Staller {
                consider(link.r2c.next_arrival_ns());
            }
        }
        match self.state {
            State::Away { from_ns } if self.rounds_left > 0 && shared.phase == Phase::Traffic => {
                consider(Some(from_ns))
            }
            State::Active => {
                consider(self.leave_at);
                consider(self.owed.values().filter_map(|(_, d)| *d).min());
                consider(self.owed_zero.iter().flatten().copied().min());
            }
            _ => {}
        }
        next
    }

    /// Reads, checks, composes and sends; whether anything moved.
    pub fn step(&mut self, shared: &mut Shared) -> bool {
        if matches!(self.state, State::Away { .. } | State::Leaving) {
            return false;
        }
        self.check_deadlines(shared);
        // At the end of the traffic it leaves, but only once what it is
        // owed has come (or its deadline has passed and failed the run).
        let done = shared.phase != Phase::Traffic && (self.owes_nothing() || shared.shutdown_seq.is_some());
        let leave = done || self.leave_at.is_some_and(|t| t <= shared.now);
        if leave {
            let link = self.link.as_mut().expect("connected");
            link.c2r.close();
            link.hung_up = true;
            self.state = State::Leaving;
            return true;
        }
        let mut progress = false;
        if self.kind != Kind::Staller {
            progress |= self.receive(shared);
        }
        if self.state == State::Active && !self.sent {
            self.compose(shared);
            self.sent = true;
            progress = true;
        }
        if !self.outbox.is_empty() {
            let link = self.link.as_mut().expect("connected");
            let n = link.c2r.write(self.outbox.bytes(), shared.now, &mut shared.rng);
            self.outbox.consume(n);
            progress |= n > 0;
        }
        if self.leave_at.is_none() && self.sent && self.satisfied() {
            self.leave_at = Some(shared.now + HOSTILE_STAY_NS);
        }
        progress
    }

    /// Whether no answer is owed to it (any more).
    fn owes_nothing(&self) -> bool {
        self.unforwarded.iter().all(|(_, o)| *o == Owed::Nothing)
            && self.owed.values().all(|(o, _)| *o == Owed::Nothing)
            && self.owed_zero.is_empty()
    }

    /// Whether it has every answer it is owed (a staller and a churner
    /// wait for the relay or for data instead).
    fn satisfied(&self) -> bool {
        matches!(self.kind, Kind::Forger | Kind::Hog | Kind::Thief)
            && self.unforwarded.is_empty()
            && self.owes_nothing()
    }

    fn check_deadlines(&self, shared: &Shared) {
        if shared.shutdown_seq.is_some() {
            return;
        }
        let late = |d: &Option<u64>| d.is_some_and(|d| shared.now > d);
        let bound = shared.params.response_bound_ns;
        if let Some((id, (owed, _))) = self.owed.iter().find(|(_, (o, d))| *o != Owed::Nothing && late(d)) {
            violation!(
                "hostile {} {:?} (slot {}): #{id} was owed {owed:?} and got no answer within {bound} ns",
                self.index,
                self.kind,
                self.slot
            );
        }
        if self.owed_zero.iter().any(late) {
            violation!(
                "hostile {} {:?} (slot {}): the relay's refusal on id 0 did not come within {bound} ns",
                self.index,
                self.kind,
                self.slot
            );
        }
    }

    fn compose(&mut self, shared: &mut Shared) {
        match self.kind {
            Kind::Staller => {
                // Enough to pass the relay's total bound (so a relay that
                // never cuts it off shows); the relay cuts it off at its own
                // queue's bound, so only that much data moves.
                let reads = shared.params.relay_total_bytes as u64 / self.file.len + 1;
                for _ in 0..reads {
                    self.read();
                }
            }
            Kind::Churner => self.read(),
            Kind::Forger => {
                let everything = RelayClientDisconnected { id_start: 0, id_end_exclusive: u32::MAX };
                self.own(&everything);
                self.own(&ClockSync { unix_time_nanos: 0 });
                self.own(&InitAck);
                self.zero(&ClockSync { unix_time_nanos: 0 }, None);
                let flags = Flags(Flags::SHUTDOWN.bits() | Flags::TERMINAL.bits());
                self.zero(&everything, Some(flags));
            }
            Kind::Hog => {
                let excess = shared.rng.range(1, HOG_EXCESS_MAX);
                for n in 0..MAX_SESSIONS_PER_CLIENT as u64 + excess {
                    let id = self.ids.allocate().expect("a slot has ids enough");
                    let path = format!("/hog{}-{n}", self.index);
                    let request = FsRequest { bulk: None, op: FsOp::Write { path: &path, mode: None } };
                    push(&mut self.outbox, id, &request, None);
                    let owed = if n < MAX_SESSIONS_PER_CLIENT as u64 { Owed::Nothing } else { Owed::QuotaRefusal };
                    self.owed.insert(id, (owed, None));
                    self.unforwarded.push_back((id, owed));
                }
            }
            Kind::Thief => self.steal(shared),
        }
    }

    /// A thief's requests: every handle op on numbers it does not hold
    /// (guessed ones, then its earlier connections'), then a few handles of
    /// its own for its next connection to try.
    fn steal(&mut self, shared: &mut Shared) {
        let guesses = (0..THIEF_GUESSES).map(|_| match shared.rng.below(8) {
            0 => *shared.rng.pick(&[0, 1, u64::MAX]),
            n => (shared.rng.range(1, 64 * n) << HANDLE_INDEX_BITS) | shared.rng.below(8),
        });
        let numbers: Vec<u64> = guesses.collect::<Vec<_>>().into_iter().chain(self.opened_before.clone()).collect();
        for handle in numbers {
            let attrs = wire::FsSetAttrs { mode: Some(0o777), size: Some(0), ..wire::FsSetAttrs::default() };
            let (op, name) = match shared.rng.below(6) {
                0 => (FsOp::ReadHandle { handle, offset: 0, len: None }, "read"),
                1 => (FsOp::WriteHandle { handle, offset: 0, len: Some(1) }, "write"),
                2 => (FsOp::ReadDir { handle, limit: None }, "readdir"),
                3 => (FsOp::FStat { handle }, "fstat"),
                4 => (FsOp::FSetStat { handle, attrs }, "fsetstat"),
                _ => (FsOp::CloseHandle { handle }, "close"),
            };
            self.request(op, Owed::BadHandle(name));
        }
        for _ in 0..THIEF_OPENS {
            self.request(FsOp::OpenDir { path: "/" }, Owed::Handle);
        }
    }

    /// A request on an id of its own that is owed `owed`.
    fn request(&mut self, op: FsOp<'_>, owed: Owed) {
        let id = self.ids.allocate().expect("a slot has ids enough");
        push(&mut self.outbox, id, &FsRequest { bulk: None, op }, None);
        self.owed.insert(id, (owed, None));
        self.unforwarded.push_back((id, owed));
    }

    /// Opens a read of the hostile file.
    fn read(&mut self) {
        let id = self.ids.allocate().expect("a slot has ids enough");
        push(&mut self.outbox, id, &FsRequest { bulk: None, op: FsOp::Read { path: HOSTILE_FILE } }, None);
        self.reads.insert(id, 0);
        self.unforwarded.push_back((id, Owed::Nothing));
    }

    /// A host-only message on an id of its own.
    fn own<P: Payload>(&mut self, payload: &P) {
        let id = self.ids.allocate().expect("a slot has ids enough");
        push(&mut self.outbox, id, payload, None);
        self.owed.insert(id, (Owed::SessionError, None));
        self.unforwarded.push_back((id, Owed::SessionError));
    }

    /// A frame on id 0 that the relay must refuse.
    fn zero<P: Payload>(&mut self, payload: &P, flags: Option<Flags>) {
        push(&mut self.outbox, 0, payload, flags);
        self.owed_zero.push_back(None);
        self.unforwarded.push_back((0, Owed::RelayRefusal));
    }

    fn receive(&mut self, shared: &mut Shared) -> bool {
        let link = self.link.as_mut().expect("connected");
        let arrived = link.r2c.readable(shared.now);
        if arrived.is_empty() {
            return false;
        }
        let n = arrived.len();
        self.inbox.push(&arrived[..n]);
        link.r2c.consume(n, &mut shared.trace);
        if self.state == State::Greeting {
            let Some(consumed) = self.greeting() else { return true };
            self.inbox.consume(consumed);
            self.state = State::Active;
        }
        let mut inbox = std::mem::take(&mut self.inbox);
        loop {
            let consumed = match parse_frame(inbox.bytes()) {
                Ok(FrameStatus::Complete { consumed, .. }) => consumed,
                Ok(FrameStatus::Incomplete { .. }) => break,
                Err(e) => violation!("hostile {}: the relay passed on a bad length prefix: {e}", self.index),
            };
            shared.trace.record(Mark::ToClient, self.index as u64, header_word(inbox.bytes()));
            self.handle(&inbox.bytes()[..consumed], shared);
            inbox.consume(consumed);
            if self.state == State::Leaving {
                break;
            }
        }
        self.inbox = inbox;
        true
    }

    /// The greeting's length, once whole; checks its range.
    fn greeting(&self) -> Option<usize> {
        let bytes = self.inbox.bytes();
        let (range, rest) = bytes.split_first_chunk::<GREETING_RANGE_LEN>()?;
        let Ok(FrameStatus::Complete { consumed, .. }) = parse_frame(rest) else { return None };
        let range = RelayCore::parse_greeting(range)
            .unwrap_or_else(|e| violation!("hostile {}: slot {} greeting: {e}", self.index, self.slot));
        if range != wire::relay::slot_range(self.slot) {
            violation!("hostile {}: slot {} greeted with ids {range:?}", self.index, self.slot);
        }
        Some(GREETING_RANGE_LEN + consumed)
    }

    fn handle(&mut self, frame: &[u8], shared: &mut Shared) {
        let message = Message::decode_bytes(frame)
            .unwrap_or_else(|e| violation!("hostile {}: undecodable frame: {e}", self.index));
        let id = wire::Frame::parse(frame).expect("a whole frame").id;
        let who = format!("hostile {} {:?} (slot {})", self.index, self.kind, self.slot);
        let session_error = matches!(message.body, Body::Error(CoreError { kind: CoreErrorKind::InvalidSession, .. }));
        if id == 0 {
            if !session_error || self.owed_zero.front().is_none_or(Option::is_none) {
                violation!("{who}: got {} on id 0, which it was not owed", brief(&message));
            }
            self.owed_zero.pop_front();
            return;
        }
        if !self.ids.issued(id) {
            violation!("{who} got a frame for #{id}, an id it did not open on this connection: {}", brief(&message));
        }
        let aborted = matches!(&message.body, Body::FsResponse(FsResponse { ok: false, error: Some(e), .. }) if *e == SHUTDOWN_ABORT);
        if aborted && (self.reads.remove(&id).is_some() || self.owed.get(&id).is_some_and(|(o, _)| *o == Owed::Nothing))
        {
            // A shutdown ends every session.
            self.owed.remove(&id);
            return;
        }
        if let Some(offset) = self.reads.get_mut(&id) {
            match &message.body {
                Body::FsData(FsData { data }) if self.file.matches(*offset, data) => {
                    *offset += data.len() as u64;
                    if self.kind == Kind::Churner {
                        // Mid-read: leave, with the rest still in flight.
                        let link = self.link.as_mut().expect("connected");
                        link.c2r.close();
                        link.hung_up = true;
                        self.state = State::Leaving;
                        shared.faults.churns += 1;
                    }
                }
                Body::FsResponse(FsResponse { ok: true, .. }) if *offset == self.file.len => {
                    self.reads.remove(&id);
                }
                _ => violation!("{who}: #{id}, a read of {HOSTILE_FILE} at {offset}, got {}", brief(&message)),
            }
            return;
        }
        let refusal = |m: &str| matches!(&message.body, Body::FsResponse(FsResponse { ok: false, error: Some(e), data: None }) if e.starts_with(m));
        let exactly = |op: &str, m: &str| {
            matches!(&message.body, Body::FsResponse(FsResponse { ok: false, error: Some(e), data: None })
                if e.strip_prefix(op).and_then(|e| e.strip_prefix(": ")) == Some(m))
        };
        match self.owed.get(&id).map(|(o, _)| *o) {
            Some(Owed::BadHandle(op)) if exactly(op, BAD_HANDLE) => shared.faults.handle_thefts += 1,
            Some(Owed::Handle) if refusal(NO_HANDLE_TABLE) => {}
            Some(Owed::Handle) => match &message.body {
                Body::FsResponse(FsResponse { ok: true, error: None, data: Some(FsResponseData::Handle(n)) }) => {
                    self.opened.push(*n)
                }
                _ => violation!("{who}: #{id}, an OpenDir of /, got {}", brief(&message)),
            },
            Some(Owed::SessionError) if session_error => shared.faults.forged_frames_refused += 1,
            Some(Owed::QuotaRefusal) if refusal(HOG_REFUSAL) => shared.faults.hog_refusals += 1,
            Some(Owed::Nothing | Owed::QuotaRefusal) if refusal(IDLE_ABORT) || refusal(NO_SPACE) => {
                // The agent's idle bound ended a write, or the ramfs had no
                // entry left to stage it in (the hog's many writes take
                // theirs): later writes past the share may have taken its
                // place.
                for (owed, _) in self.owed.values_mut() {
                    *owed = Owed::Nothing;
                }
            }
            owed => violation!("{who}: #{id} (owed {owed:?}) got {}", brief(&message)),
        }
        self.owed.remove(&id);
    }
}

/// A message in a few words, for a failure message (no data bytes).
fn brief(message: &Message<'_>) -> String {
    match &message.body {
        Body::FsData(FsData { data }) => format!("core.fs.data of {} bytes", data.len()),
        Body::FsResponse(r) => format!("core.fs.response ok: {}, error: {:?}", r.ok, r.error),
        Body::Error(e) => format!("core.error {:?}: {}", e.kind, e.message),
        body => body.message_type().to_string(),
    }
}

/// Encodes a frame at the end of `out`, with other flags if given.
fn push<P: Payload>(out: &mut ByteQueue, id: u32, payload: &P, flags: Option<Flags>) {
    let n = frame_len(payload);
    let frame = out.extend_zeroed(n);
    encode_frame(id, payload, frame).expect("a frame fits its own length");
    if let Some(flags) = flags {
        frame[8] = flags.bits();
    }
}
