//! A simulated relay client: one identity with its own subtree (`/c<k>`)
//! over a series of connections. Each connection reads the relay greeting,
//! takes its ids from `proto::Ids` in the slot's range, routes guest frames
//! with `proto::Calls`, keeps at most a few calls in flight (none behind an
//! older call that changes a related path, see `workload::conflicts`) and
//! checks every answer against the model.
//!
//! When a connection is lost, each call in flight is settled by what the
//! relay had forwarded: a forwarded request took effect (the agent handles
//! everything before the disconnect notice), an unforwarded one did not,
//! and a write whose end of stream was forwarded is probed (`Read` and
//! `Stat`) on the next connection, because only the answer that never
//! came could say whether it ran out of space.

use std::collections::{BTreeMap, VecDeque};

use agent_core::mode;
use host_sync::proto::{CallKind, Calls, Ids, ReadyInfo, Route, check_generation};
use host_sync::relay::{RelayCore, Slot};
use host_sync::relay_core::GREETING_RANGE_LEN;
use wire::{
    Body, DATA_FRAME_HEAD_MAX, FS_CHUNK_SIZE, Frame, FrameStatus, FsData, FsRequest, Message, MessageType, Payload,
    encode_data_frame_head, encode_frame, frame_len, parse_frame,
};

use super::calls::{self, Call, CorruptAnswer, OpenWrite, ReadCheck, Role, UNKNOWN_WRITE_SESSION, WriteStream};
use super::channel::{ByteQueue, Channel};
use super::corrupt;
use super::model::{Expect, Node, Op};
use super::params::{Behaviour, FLOOD_CALLS};
use super::space::Reservation;
use super::trace::{Mark, header_word};
use super::violation;
use super::workload::{self, Kind, Sizes};
use super::world::{Phase, Shared, ShutdownPlan, earliest};

/// Frames composed per step at most (keeps one client from hogging a step).
const COMPOSE_PER_STEP: usize = 8;

/// Bytes waiting to be written to the relay before the client stops
/// composing: enough to keep the link busy, little enough to interleave.
const OUTBOX_LOW_WATER: usize = 64 * 1024;

/// How long a client waits before it tries again to issue a call that
/// could run the ramfs out of entries, in ns (entries come back as calls
/// end, its own or other clients').
const ENTRIES_RETRY_NS: u64 = 1_000_000;

/// How long a flooding client stops reading once its burst begins, in ns: long
/// enough for the agent's receive buffer to fill, shorter than the relay's
/// patience with a full queue.
const FLOOD_PAUSE_NS: u64 = 3_000_000_000;

/// `next_issue_ns` of a client that waits for one of its calls to end
/// (its last pick conflicted with one in flight).
const AFTER_AN_ANSWER: u64 = u64::MAX;

/// Longest pause before a lost client connects again, in ns.
const RECONNECT_MAX_NS: u64 = 2_000_000;

/// Longest delay between scheduling a hang-up and doing it, in ns.
const HANG_UP_MAX_NS: u64 = 2_000_000;

/// The two directions of one client connection.
#[derive(Debug)]
pub struct Link {
    /// Client to relay.
    pub c2r: Channel,
    /// Relay to client.
    pub r2c: Channel,
    /// The client hung up: the relay's next write to it fails.
    pub hung_up: bool,
}

/// Why a connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Leave {
    /// The client hung up and the relay saw the end of its stream.
    HungUp,
    /// The client sent a corrupt length prefix.
    BadPrefix,
    /// The relay dropped the client for leaving its queue full too long.
    TooSlow,
    /// The host lost the guest stream (it corrupted it) and dropped everyone.
    Glitch,
}

/// What a frame written to the relay was, for the relay's notice that it
/// forwarded it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sent {
    Request,
    Data,
    End,
    Shutdown,
}

/// Where a relay peer of the simulation (honest or hostile) is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum State {
    /// Not connected; connects again from this time.
    Away { from_ns: u64 },
    /// Connected, reading the greeting.
    Greeting,
    /// Serving.
    Active,
    /// Hung up; waiting for the relay to notice.
    Leaving,
}

/// One connection.
#[derive(Debug)]
struct Conn {
    slot: Slot,
    ids: Ids,
    range: (u32, u32),
    calls: Calls,
    open: BTreeMap<u32, Call>,
    /// Open calls that must never be answered (corrupted, generation < 5).
    silent: usize,
    /// Ids of failed writes, and how many "unknown write session"
    /// answers their later chunks may still get.
    extra: BTreeMap<u32, u32>,
    inbox: ByteQueue,
    outbox: ByteQueue,
    /// Frames written (or being written) and not yet forwarded, in order.
    unforwarded: VecDeque<(u32, Sent)>,
    /// Writes with data still to send.
    streaming: Vec<u32>,
    /// Whether a call of this connection has been answered.
    answered: bool,
    /// Deadlines of the calls whose round trip is bounded (invariant (b)).
    deadlines: BTreeMap<u32, u64>,
}

/// A symlink a lost connection left undecided: its call reached the agent,
/// its answer did not, and space may have run out, so it may or may not
/// exist until a later connection removes it.
#[derive(Debug)]
struct UndecidedLink {
    path: String,
    /// Whether the `Remove` was sent on this connection.
    sent: bool,
    /// The entry and block it may hold until that `Remove` is answered.
    reserve: Reservation,
}

/// A client identity and its current connection.
#[derive(Debug)]
pub struct Client {
    /// Its index, and its subtree `/c<index>`.
    pub index: usize,
    root: String,
    behaviour: Behaviour,
    /// The links of the current connection.
    pub link: Option<Link>,
    conn: Option<Conn>,
    state: State,
    /// Writes a lost connection left open, to probe.
    open_writes: Vec<OpenWrite>,
    /// Symlinks a lost connection left undecided (space may have run out),
    /// to remove.
    undecided_links: Vec<UndecidedLink>,
    /// Space the calls of lost connections may still hold in the agent.
    lingering: Reservation,
    next_issue_ns: u64,
    next_read_ns: u64,
    /// `List` calls it may still send beyond its usual number in flight
    /// (one burst of [`FLOOD_CALLS`] for a flooding client).
    flood_left: usize,
    /// A scheduled hang-up: when, and whether by a corrupt length prefix.
    hang_up: Option<(u64, bool)>,
    /// Whether this client is to send `core.shutdown`.
    pub shutdown_due: bool,
    /// The call removing its subtree at the end of the run, once sent.
    cleanup_id: Option<u32>,
    /// Whether its subtree has been removed at the end of the run.
    pub cleaned: bool,
}

impl Client {
    /// A client that connects as soon as the relay serves.
    pub fn new(index: usize, behaviour: Behaviour) -> Client {
        Client {
            index,
            root: format!("/c{index}"),
            behaviour,
            link: None,
            conn: None,
            state: State::Away { from_ns: 0 },
            open_writes: Vec::new(),
            undecided_links: Vec::new(),
            lingering: Reservation::default(),
            next_issue_ns: 0,
            next_read_ns: 0,
            flood_left: if behaviour.flood { FLOOD_CALLS } else { 0 },
            hang_up: None,
            shutdown_due: false,
            cleanup_id: None,
            cleaned: false,
        }
    }

    /// Whether it is connected and serving.
    pub fn is_active(&self) -> bool {
        self.state == State::Active
    }

    /// Whether it floods the agent (see [`Behaviour::flood`]).
    pub fn floods(&self) -> bool {
        self.behaviour.flood
    }

    /// Whether it hung up and the relay has not noticed yet.
    pub fn hung_up(&self) -> bool {
        self.state == State::Leaving
    }

    /// Its state, for a failure message.
    pub fn describe(&self) -> String {
        let calls: Vec<String> = self.conn.as_ref().map_or(Vec::new(), |conn| {
            conn.open.iter().map(|(id, c)| format!("#{id} {:?} {:?}/{:?}", c.op, c.request_seq, c.eof_seq)).collect()
        });
        let outbox = self.conn.as_ref().map_or(0, |conn| conn.outbox.len());
        format!(
            "c{} {:?} slot {:?}, outbox {outbox} B, {} open writes, calls [{}]",
            self.index,
            self.state,
            self.conn.as_ref().map(|c| c.slot),
            self.open_writes.len(),
            calls.join(", ")
        )
    }

    /// Whether it wants a connection now.
    pub fn wants_to_connect(&self, now_ns: u64) -> bool {
        matches!(self.state, State::Away { from_ns } if from_ns <= now_ns)
    }

    /// A new connection on `slot`; the greeting is on its way in `link`.
    pub fn connected(&mut self, slot: Slot, link: Link) {
        assert!(self.conn.is_none(), "client {} connected twice", self.index);
        self.link = Some(link);
        self.conn = Some(Conn {
            slot,
            ids: Ids::new(0, 0),
            range: (0, 0),
            calls: Calls::new(),
            open: BTreeMap::new(),
            silent: 0,
            extra: BTreeMap::new(),
            inbox: ByteQueue::default(),
            outbox: ByteQueue::default(),
            unforwarded: VecDeque::new(),
            streaming: Vec::new(),
            answered: false,
            deadlines: BTreeMap::new(),
        });
        self.state = State::Greeting;
    }

    /// Reads, checks answers, composes and sends; whether anything moved.
    pub fn step(&mut self, shared: &mut Shared) -> bool {
        if matches!(self.state, State::Away { .. } | State::Leaving) {
            return false;
        }
        if self.hang_up_now(shared) {
            return true;
        }
        let mut progress = self.receive(shared);
        if let Some(conn) = &self.conn
            && let Some((&id, &deadline)) = conn.deadlines.iter().min_by_key(|(_, d)| **d)
        {
            check_deadline(self.index, id, deadline, shared);
        }
        if self.state == State::Active {
            progress |= self.compose(shared);
        }
        progress | self.flush(shared)
    }

    /// When, after now, this client next needs a step.
    pub fn next_event_ns(&self, shared: &Shared) -> Option<u64> {
        let mut next = None;
        let mut consider = |t: Option<u64>| next = earliest(next, t.filter(|&t| t > shared.now));
        if let Some(link) = &self.link {
            consider(link.c2r.next_arrival_ns());
            consider(link.r2c.next_arrival_ns());
        }
        match self.state {
            State::Away { from_ns } => consider(Some(from_ns)),
            State::Leaving => {}
            State::Greeting | State::Active => {
                consider(self.hang_up.map(|(at, _)| at));
                let deadlines = self.conn.as_ref().map(|c| c.deadlines.values());
                consider(deadlines.and_then(|d| d.min()).map(|d| d + 1));
                if self.may_issue(shared) && self.next_issue_ns != AFTER_AN_ANSWER {
                    consider(Some(self.next_issue_ns));
                }
                let unread = self.link.as_ref().is_some_and(|link| link.r2c.has_unread());
                if self.behaviour.read_every_ns > 0 && unread {
                    consider(Some(self.next_read_ns));
                }
            }
        }
        next
    }

    /// Whether it is connected, idle and owes nothing: no call in flight
    /// but silent ones, no open write, nothing unsent or unread.
    pub fn is_settled(&self) -> bool {
        let (Some(conn), Some(link)) = (&self.conn, &self.link) else { return false };
        self.state == State::Active
            && conn.open.len() == conn.silent
            && self.open_writes.is_empty()
            && self.undecided_links.is_empty()
            && conn.outbox.is_empty()
            && conn.inbox.is_empty()
            && conn.unforwarded.is_empty()
            && link.c2r.is_idle()
            && link.r2c.is_idle()
            && !self.shutdown_due
    }

    /// The relay forwarded this client's next frame as guest frame `seq`.
    pub fn forwarded(&mut self, id: u32, seq: u64, shared: &mut Shared) {
        let conn = self.conn.as_mut().expect("a forwarding client is connected");
        let Some((sent_id, sent)) = conn.unforwarded.pop_front() else {
            violation!("client {}: the relay forwarded #{id}, a frame it never sent", self.index);
        };
        if sent_id != id {
            violation!("client {}: the relay forwarded #{id} where #{sent_id} was next", self.index);
        }
        match sent {
            Sent::Shutdown => {
                shared.shutdown_seq = Some(seq);
                shared.shutdown = ShutdownPlan::Sent;
            }
            Sent::Request => {
                if let Some(call) = conn.open.get_mut(&id) {
                    call.request_seq = Some(seq);
                    let fast = self.behaviour.read_every_ns == 0 && !self.behaviour.flood;
                    let predicted = matches!(call.role, Role::Normal | Role::Probe { .. });
                    if fast && predicted && !matches!(call.op, Op::Read(_) | Op::Write { .. }) {
                        conn.deadlines.insert(id, shared.now + shared.params.response_bound_ns);
                    }
                }
            }
            Sent::End => {
                if let Some(call) = conn.open.get_mut(&id) {
                    call.eof_seq = Some(seq);
                }
            }
            Sent::Data => {}
        }
    }

    /// The relay detached this client: settle every call of the lost
    /// connection and plan the next one.
    pub fn left(&mut self, why: Leave, shared: &mut Shared) {
        let conn = self.conn.take().expect("a leaving client is connected");
        self.link = None;
        if self.shutdown_due || conn.unforwarded.iter().any(|&(_, sent)| sent == Sent::Shutdown) {
            self.shutdown_due = false;
            shared.shutdown = ShutdownPlan::Due;
        }
        for (_, call) in conn.open {
            self.settle_lost(call, shared);
        }
        for w in &mut self.open_writes {
            w.probing = false;
            w.probes_left = 0;
            w.alive = 0b11;
        }
        for link in &mut self.undecided_links {
            link.sent = false;
        }
        self.hang_up = None;
        self.cleanup_id = None;
        self.next_issue_ns = 0;
        self.state = State::Away { from_ns: shared.now + shared.rng.range(0, RECONNECT_MAX_NS) };
        shared.trace.record(Mark::Fault, 100 + why as u64, self.index as u64);
    }

    /// The agent dropped every session at once (a new stream): the space
    /// of lost connections is free.
    pub fn release_lingering(&mut self, shared: &mut Shared) {
        shared.space.release(std::mem::take(&mut self.lingering));
    }

    /// At the end of a run: every call still open must be excused.
    pub fn check_unanswered(&self, shared: &Shared) {
        let Some(conn) = &self.conn else { return };
        for (id, call) in &conn.open {
            let after_shutdown = shared.shutdown_seq.is_some_and(|s| call.request_seq.is_none_or(|r| r > s));
            if call.role != Role::Corrupt(CorruptAnswer::Silence) && !after_shutdown {
                violation!(
                    "client {} (slot {}): #{id} {:?} never got a terminal frame (request forwarded as {:?}, \
                     shutdown as {:?})",
                    self.index,
                    conn.slot,
                    call.op,
                    call.request_seq,
                    shared.shutdown_seq
                );
            }
        }
    }

    /// Writes a lost connection left open (resolved from the filesystem
    /// itself when no connection remains to probe them).
    pub fn take_open_writes(&mut self) -> Vec<OpenWrite> {
        std::mem::take(&mut self.open_writes)
    }

    fn settle_lost(&mut self, mut call: Call, shared: &mut Shared) {
        let took_effect = |seq: Option<u64>| seq.is_some_and(|s| shared.shutdown_seq.is_none_or(|sh| s < sh));
        if let (Role::Normal, Op::Symlink { link, .. }) = (&call.role, &call.op)
            && took_effect(call.request_seq)
            && shared.model.symlink_check(link).is_ok()
            && call.watch.take().is_some_and(|token| shared.space.unwatch(token))
        {
            // It may have run out of space: a later connection removes it.
            // Until then it may hold its entry and block (not only while
            // the agent holds sessions, as the lingering space).
            self.undecided_links.push(UndecidedLink { path: link.clone(), sent: false, reserve: call.reserve });
            return;
        }
        match (&call.role, &call.op) {
            (Role::Normal, Op::Write { path, mode, content })
                if took_effect(call.eof_seq) && shared.model.write_check(path).is_ok() =>
            {
                let before = match shared.model.node(path) {
                    Some(Node::File { perm, content }) => Some((*perm, *content)),
                    _ => None,
                };
                let after_perm = match (before, mode) {
                    (Some((perm, _)), None) => perm,
                    (_, Some(m)) => m & mode::PERMISSIONS,
                    (None, None) => mode::DEFAULT_FILE,
                };
                self.open_writes.push(OpenWrite {
                    path: path.clone(),
                    content: *content,
                    before,
                    after_perm,
                    alive: 0b11,
                    probes_left: 0,
                    probing: false,
                    inconclusive: false,
                    reserve: call.reserve,
                    watch: call.watch.expect("a write is watched"),
                });
                return;
            }
            (Role::Normal, op) if op.mutates() && !matches!(op, Op::Write { .. }) && took_effect(call.request_seq) => {
                shared.model.apply(op);
                shared.space.observe(shared.model.content_blocks());
            }
            _ => {}
        }
        if let Some(token) = call.watch {
            shared.space.unwatch(token);
        }
        self.lingering = self.lingering.plus(call.reserve);
    }

    fn hang_up_now(&mut self, shared: &mut Shared) -> bool {
        let Some((at, bad_prefix)) = self.hang_up else { return false };
        if !shared.faults_allowed() {
            self.hang_up = None;
            return false;
        }
        let conn = self.conn.as_mut().expect("connected");
        if shared.now < at || (bad_prefix && !conn.outbox.is_empty()) {
            return false;
        }
        let link = self.link.as_mut().expect("connected");
        if bad_prefix {
            let garbage = corrupt::bad_length_prefix(&mut shared.rng);
            if link.c2r.space() < garbage.len() {
                return false;
            }
            link.c2r.write(&garbage, shared.now, &mut shared.rng);
            shared.faults.bad_client_prefixes += 1;
        } else {
            link.c2r.close();
            link.hung_up = true;
            shared.faults.disconnects += 1;
        }
        self.hang_up = None;
        self.state = State::Leaving;
        true
    }

    fn receive(&mut self, shared: &mut Shared) -> bool {
        let now = shared.now;
        let slow = self.behaviour.read_every_ns > 0 && self.state == State::Active && shared.slow_readers_allowed();
        if slow && now < self.next_read_ns {
            return false;
        }
        let link = self.link.as_mut().expect("connected");
        let conn = self.conn.as_mut().expect("connected");
        let arrived = link.r2c.readable(now);
        if arrived.is_empty() {
            return false;
        }
        let n = if slow { arrived.len().min(self.behaviour.read_bytes) } else { arrived.len() };
        conn.inbox.push(&arrived[..n]);
        link.r2c.consume(n, &mut shared.trace);
        if slow {
            self.next_read_ns = now + self.behaviour.read_every_ns;
        }
        if self.state == State::Greeting {
            self.greet();
        }
        if self.state == State::Active {
            self.take_frames(shared);
        }
        true
    }

    /// Reads the greeting: the slot's id range, then the cached `core.ready`.
    fn greet(&mut self) {
        let conn = self.conn.as_mut().expect("connected");
        let bytes = conn.inbox.bytes();
        let Some((range, rest)) = bytes.split_first_chunk::<GREETING_RANGE_LEN>() else { return };
        let consumed = match parse_frame(rest) {
            Ok(FrameStatus::Complete { consumed, .. }) => consumed,
            Ok(FrameStatus::Incomplete { .. }) => return,
            Err(e) => violation!("client {}: the greeting's core.ready is broken: {e}", self.index),
        };
        let range = RelayCore::parse_greeting(range)
            .unwrap_or_else(|e| violation!("client {}: slot {} greeting: {e}", self.index, conn.slot));
        if range != wire::relay::slot_range(conn.slot) {
            violation!("client {}: slot {} greeted with ids {range:?}", self.index, conn.slot);
        }
        let (start, end) = range;
        let ready = ReadyInfo::from_frame(&rest[..consumed])
            .unwrap_or_else(|e| violation!("client {}: greeting: {e}", self.index));
        if let Err(e) = check_generation(MessageType::FsRequest, ready.generation()) {
            violation!("client {}: the agent cannot take filesystem requests: {e}", self.index);
        }
        conn.ids = Ids::new(start, end);
        conn.range = (start, end);
        conn.inbox.consume(8 + consumed);
        self.state = State::Active;
    }

    fn take_frames(&mut self, shared: &mut Shared) {
        let mut inbox = std::mem::take(&mut self.conn.as_mut().expect("connected").inbox);
        loop {
            let (frame, consumed) = match parse_frame(inbox.bytes()) {
                Ok(FrameStatus::Complete { frame, consumed }) => (frame, consumed),
                Ok(FrameStatus::Incomplete { .. }) => break,
                Err(e) => violation!("client {}: the relay passed on a bad length prefix: {e}", self.index),
            };
            shared.trace.record(Mark::ToClient, self.index as u64, header_word(inbox.bytes()));
            self.handle(frame, shared);
            inbox.consume(consumed);
        }
        self.conn.as_mut().expect("connected").inbox = inbox;
    }

    fn handle(&mut self, frame: Frame<'_>, shared: &mut Shared) {
        let conn = self.conn.as_mut().expect("connected");
        let id = frame.id;
        if !conn.ids.issued(id) {
            violation!(
                "client {} (slot {}, ids {}..{}) got a frame for #{id}, an id it did not open on this connection",
                self.index,
                conn.slot,
                conn.range.0,
                conn.range.1
            );
        }
        let message =
            Message::decode(frame).unwrap_or_else(|e| violation!("client {}: undecodable frame: {e}", self.index));
        if !message.flags_match() {
            violation!("client {}: #{id} {} with flags {:?}", self.index, message.message_type(), message.flags);
        }
        match conn.calls.route(&frame) {
            Route::Stray { id } => self.stray(id, &message),
            Route::Call { id, last: false } => self.data(id, &message, shared),
            Route::Call { id, last: true } => self.finish(id, &message, shared),
        }
    }

    fn stray(&mut self, id: u32, message: &Message<'_>) {
        let conn = self.conn.as_mut().expect("connected");
        let unknown_session = matches!(
            message.body,
            Body::FsResponse(wire::FsResponse { ok: false, error: Some(UNKNOWN_WRITE_SESSION), data: None })
        );
        match conn.extra.get_mut(&id) {
            Some(left) if *left > 0 && unknown_session => *left -= 1,
            _ => violation!(
                "client {} (slot {}): #{id} got {:?} after its terminal frame, or without a call",
                self.index,
                conn.slot,
                message.body
            ),
        }
    }

    fn data(&mut self, id: u32, message: &Message<'_>, shared: &Shared) {
        let conn = self.conn.as_mut().expect("connected");
        let call = conn.open.get_mut(&id).expect("Calls routes only open calls");
        let (Body::FsData(data), Some(check)) = (&message.body, call.read.as_mut()) else {
            violation!("client {}: #{id} {:?} got the non-terminal {:?}", self.index, call.op, message.body);
        };
        if data.data.is_empty() || data.data.len() > shared.params.read_chunk_size {
            violation!("client {}: #{id} read chunk of {} bytes", self.index, data.data.len());
        }
        check.data(data.data);
        if call.role == Role::Normal && check.alive == 0 {
            violation!("client {}: #{id} {:?}: the data differs from the model's", self.index, call.op);
        }
    }

    fn finish(&mut self, id: u32, message: &Message<'_>, shared: &mut Shared) {
        let conn = self.conn.as_mut().expect("connected");
        let mut call = conn.open.remove(&id).expect("Calls routes only open calls");
        conn.streaming.retain(|&s| s != id);
        if let Some(deadline) = conn.deadlines.remove(&id) {
            check_deadline(self.index, id, deadline, shared);
        }
        let who = format!("client {} (slot {}) #{id}", self.index, conn.slot);
        let ended = calls::finish(&mut call, message, &who, shared, &mut self.open_writes);
        if ended.extra_answers > 0 {
            conn.extra.insert(id, ended.extra_answers);
        }
        if let Some(token) = call.watch {
            shared.space.unwatch(token);
        }
        shared.space.release(call.reserve);
        if self.next_issue_ns == AFTER_AN_ANSWER {
            self.next_issue_ns = shared.now;
        }
        if !conn.answered {
            conn.answered = true;
            shared.space.release(std::mem::take(&mut self.lingering));
        }
        if self.cleanup_id == Some(id) {
            self.cleaned = true;
        }
        if let (Role::LinkProbe, Op::Remove(link)) = (&call.role, &call.op)
            && let Some(at) = self.undecided_links.iter().position(|u| u.path == *link)
        {
            shared.space.release(self.undecided_links.remove(at).reserve);
        }
        shared.completed += 1;
        shared.trace.record(Mark::Finished, self.index as u64, u64::from(id));
        let probes_done = self.open_writes.iter().all(|w| w.probes_left == 0 && w.probing);
        if matches!(call.role, Role::Probe { .. }) && probes_done {
            self.resolve_open_writes(shared);
        }
    }

    /// Every probe answered: adopt what each write left (those a shutdown
    /// left undecided wait for the end of the run).
    fn resolve_open_writes(&mut self, shared: &mut Shared) {
        let (undecided, decided): (Vec<OpenWrite>, Vec<OpenWrite>) =
            std::mem::take(&mut self.open_writes).into_iter().partition(|w| w.inconclusive);
        self.open_writes = undecided;
        for w in decided {
            settle_open_write(&w, &format!("client {}", self.index), shared);
        }
    }

    fn may_issue(&self, shared: &Shared) -> bool {
        let Some(conn) = &self.conn else { return false };
        let (budget, most) = match self.flood_left {
            0 => (shared.issued < shared.params.ops, self.behaviour.calls),
            _ => (true, FLOOD_CALLS),
        };
        self.state == State::Active
            && shared.phase == Phase::Traffic
            && budget
            && self.open_writes.is_empty()
            && self.undecided_links.is_empty()
            && conn.open.len() - conn.silent < most
    }

    fn compose(&mut self, shared: &mut Shared) -> bool {
        let mut progress = false;
        for _ in 0..COMPOSE_PER_STEP {
            let conn = self.conn.as_ref().expect("connected");
            if conn.outbox.len() >= OUTBOX_LOW_WATER || self.hang_up.is_some_and(|(at, bad)| bad && at <= shared.now) {
                break;
            }
            let composed = if self.shutdown_due {
                self.send_shutdown()
            } else if self.open_writes.iter().any(|w| !w.probing) {
                self.send_probes(shared)
            } else if let Some(at) = self.undecided_links.iter().position(|u| !u.sent) {
                self.undecided_links[at].sent = true;
                let op = Op::Remove(self.undecided_links[at].path.clone());
                self.send_call(op, Role::LinkProbe, Reservation::default(), shared);
                true
            } else {
                self.next_frame(shared)
            };
            if !composed {
                break;
            }
            progress = true;
        }
        progress
    }

    fn next_frame(&mut self, shared: &mut Shared) -> bool {
        let streaming = &self.conn.as_ref().expect("connected").streaming;
        let issue = self.may_issue(shared) && shared.now >= self.next_issue_ns;
        if !streaming.is_empty() && (!issue || shared.rng.chance(0.5)) {
            let id = *shared.rng.pick(streaming);
            self.send_chunk(id);
            return true;
        }
        if issue {
            return self.issue(shared);
        }
        self.cleanup(shared)
    }

    /// At the end of a run: removes this client's subtree.
    fn cleanup(&mut self, shared: &mut Shared) -> bool {
        let conn = self.conn.as_ref().expect("connected");
        if shared.phase != Phase::Cleanup || self.cleaned || self.cleanup_id.is_some() || conn.open.len() > conn.silent
        {
            return false;
        }
        let op = match shared.model.node(&self.root) {
            None => {
                self.cleaned = true;
                return false;
            }
            Some(Node::File { .. } | Node::Symlink { .. }) => Op::Remove(self.root.clone()),
            Some(Node::Dir { .. }) => Op::RemoveDir(self.root.clone()),
        };
        self.cleanup_id = Some(self.send_call(op, Role::Normal, Reservation::default(), shared));
        true
    }

    /// Issues the next call of the workload.
    fn issue(&mut self, shared: &mut Shared) -> bool {
        if self.flood_left > 0 {
            return self.issue_flood(shared);
        }
        self.next_issue_ns = shared.now + shared.rng.range(0, self.behaviour.think_max_ns);
        let op = match shared.params.mix.pick(&mut shared.rng) {
            Kind::Corrupt => return self.issue_corrupt(shared),
            kind => workload::generate(&mut shared.rng, &shared.model, &self.root, kind, shared.params.sizes),
        };
        let Some(reserve) = self.admit(&op, shared) else { return false };
        self.send_call(op, Role::Normal, reserve, shared);
        shared.issued += 1;
        self.maybe_schedule_hang_up(shared);
        true
    }

    /// The space `op` may hold, if it may be issued now: it must not
    /// conflict with a call in flight, nor risk the end of the entry table.
    fn admit(&mut self, op: &Op, shared: &Shared) -> Option<Reservation> {
        let conn = self.conn.as_ref().expect("connected");
        let predicted = |c: &Call| matches!(c.role, Role::Normal | Role::Probe { .. });
        if conn.open.values().any(|c| predicted(c) && workload::conflicts(&c.op, op)) {
            self.next_issue_ns = AFTER_AN_ANSWER;
            return None;
        }
        let entries = workload::new_entries(&shared.model, op);
        if !shared.space.entries_fit(shared.model.entries(), entries) {
            self.next_issue_ns = shared.now + ENTRIES_RETRY_NS;
            return None;
        }
        let blocks = match op {
            Op::Write { content, .. } => 1 + content.blocks(),
            Op::Symlink { .. } => 1,
            Op::Read(path) => match shared.model.node(path) {
                Some(Node::File { content, .. }) => content.blocks(),
                _ => 0,
            },
            _ => 0,
        };
        Some(Reservation { blocks, entries })
    }

    /// The burst of a flooding client, on top of the run's budget: `List`
    /// calls of the root (the largest answers that hold no session), then
    /// a 10 MiB write in whole chunks. The client stops reading meanwhile,
    /// so the answers back up into the relay and the agent while the write
    /// fills the agent's receive buffer.
    fn issue_flood(&mut self, shared: &mut Shared) -> bool {
        if self.flood_left == FLOOD_CALLS {
            self.next_read_ns = shared.now + FLOOD_PAUSE_NS;
        }
        self.flood_left -= 1;
        if self.flood_left > 0 {
            self.send_call(Op::List("/".to_string()), Role::Flood, Reservation::default(), shared);
            return true;
        }
        let op = workload::flood_write(&mut shared.rng, &self.root);
        let Some(reserve) = self.admit(&op, shared) else { return false };
        let id = self.send_call(op, Role::Normal, reserve, shared);
        let conn = self.conn.as_mut().expect("connected");
        conn.open.get_mut(&id).and_then(|c| c.stream.as_mut()).expect("the flood's write").chunk = FS_CHUNK_SIZE;
        true
    }

    fn maybe_schedule_hang_up(&mut self, shared: &mut Shared) {
        let p = shared.params.disconnect_chance;
        if self.hang_up.is_none() && shared.faults_allowed() && shared.rng.chance(p) {
            let at = shared.now + shared.rng.range(0, HANG_UP_MAX_NS);
            let bad_prefix = shared.rng.chance(shared.params.bad_prefix_share);
            self.hang_up = Some((at, bad_prefix));
        }
    }

    /// Opens a call and queues its request.
    fn send_call(&mut self, op: Op, role: Role, reserve: Reservation, shared: &mut Shared) -> u32 {
        let conn = self.conn.as_mut().expect("connected");
        let id = conn.ids.allocate().unwrap_or_else(|e| violation!("client {}: {e}", self.index));
        let kind = match op {
            Op::Read(_) => CallKind::Read,
            Op::Write { .. } => CallKind::Write,
            _ => CallKind::Request,
        };
        conn.calls.open(id, kind);
        push_frame(&mut conn.outbox, id, &FsRequest { bulk: None, op: op.as_wire() });
        conn.unforwarded.push_back((id, Sent::Request));
        let mut call = Call {
            op,
            role,
            request_seq: None,
            eof_seq: None,
            reserve,
            watch: None,
            expect: None,
            read: None,
            stream: None,
        };
        match &call.op {
            op if role == Role::Normal && !op.mutates() => {
                let expect = shared.model.apply(op);
                if let Expect::Read(content) = expect {
                    call.read = Some(ReadCheck::one(content));
                }
                call.expect = Some(expect);
            }
            Op::Write { content, .. } => {
                conn.streaming.push(id);
                let chunk = workload::chunk_size(&mut shared.rng, content.len);
                call.stream = Some(WriteStream { content: *content, chunk, sent: 0, frames: 0, ended: false });
                call.watch = Some(shared.space.watch(shared.model.content_blocks()));
            }
            Op::Symlink { .. } if role == Role::Normal => {
                call.watch = Some(shared.space.watch(shared.model.content_blocks()));
            }
            _ => {}
        }
        shared.space.reserve(reserve, shared.model.content_blocks());
        conn.open.insert(id, call);
        id
    }

    fn issue_corrupt(&mut self, shared: &mut Shared) -> bool {
        let kind = if shared.rng.chance(0.5) { Kind::Stat } else { Kind::List };
        let op = workload::generate(&mut shared.rng, &shared.model, &self.root, kind, Sizes::default());
        let conn = self.conn.as_mut().expect("connected");
        let id = conn.ids.allocate().unwrap_or_else(|e| violation!("client {}: {e}", self.index));
        let mut frame = vec![0u8; frame_len(&FsRequest { bulk: None, op: op.as_wire() })];
        encode_frame(id, &FsRequest { bulk: None, op: op.as_wire() }, &mut frame)
            .expect("a request fits its own length");
        let Some(answer) = corrupt::flip_body(&mut frame, &mut shared.rng) else { return false };
        conn.calls.open(id, CallKind::Request);
        conn.outbox.push(&frame);
        conn.unforwarded.push_back((id, Sent::Request));
        if answer == CorruptAnswer::Silence {
            conn.silent += 1;
        }
        let call = Call {
            op,
            role: Role::Corrupt(answer),
            request_seq: None,
            eof_seq: None,
            reserve: Reservation::default(),
            watch: None,
            expect: None,
            read: None,
            stream: None,
        };
        conn.open.insert(id, call);
        shared.faults.corrupt_bodies += 1;
        shared.issued += 1;
        true
    }

    fn send_chunk(&mut self, id: u32) {
        let conn = self.conn.as_mut().expect("connected");
        let stream = conn.open.get_mut(&id).and_then(|c| c.stream.as_mut()).expect("a streaming write");
        let n = (stream.content.len - stream.sent).min(stream.chunk as u64) as usize;
        if n == 0 {
            push_frame(&mut conn.outbox, id, &FsData { data: &[] });
            stream.ended = true;
            conn.streaming.retain(|&s| s != id);
            conn.unforwarded.push_back((id, Sent::End));
        } else {
            let mut head = [0u8; DATA_FRAME_HEAD_MAX];
            let head_len = encode_data_frame_head(id, n, &mut head).expect("a chunk fits a frame");
            conn.outbox.push(&head[..head_len]);
            stream.content.fill(stream.sent, conn.outbox.extend_zeroed(n));
            stream.sent += n as u64;
            conn.unforwarded.push_back((id, Sent::Data));
        }
        stream.frames += 1;
    }

    fn send_shutdown(&mut self) -> bool {
        let conn = self.conn.as_mut().expect("connected");
        push_frame(&mut conn.outbox, 0, &wire::Shutdown);
        conn.unforwarded.push_back((0, Sent::Shutdown));
        self.shutdown_due = false;
        true
    }

    fn send_probes(&mut self, shared: &mut Shared) -> bool {
        for target in 0..self.open_writes.len() {
            let w = &mut self.open_writes[target];
            if w.probing {
                continue;
            }
            w.probing = true;
            w.probes_left = 2;
            let (path, check) = (w.path.clone(), ReadCheck::either(w.before.map(|(_, c)| c), w.content));
            let id = self.send_call(
                Op::Read(path.clone()),
                Role::Probe { target, stat: false },
                Reservation::default(),
                shared,
            );
            let conn = self.conn.as_mut().expect("connected");
            conn.open.get_mut(&id).expect("just opened").read = Some(check);
            self.send_call(Op::Stat(path), Role::Probe { target, stat: true }, Reservation::default(), shared);
        }
        true
    }

    fn flush(&mut self, shared: &mut Shared) -> bool {
        let (Some(conn), Some(link)) = (self.conn.as_mut(), self.link.as_mut()) else { return false };
        if conn.outbox.is_empty() || self.state == State::Leaving {
            return false;
        }
        let bytes = conn.outbox.bytes();
        let limit =
            if self.behaviour.split_writes { shared.rng.range(1, bytes.len() as u64) as usize } else { bytes.len() };
        let n = link.c2r.write(&bytes[..limit], shared.now, &mut shared.rng);
        conn.outbox.consume(n);
        n > 0
    }
}

/// Invariant (b): a bounded call ends by its deadline, whatever other
/// clients do (after a shutdown, calls may go unanswered).
fn check_deadline(index: usize, id: u32, deadline: u64, shared: &Shared) {
    if shared.now > deadline && shared.shutdown_seq.is_none() {
        let bound = shared.params.response_bound_ns;
        let late = shared.now - (deadline - bound);
        violation!(
            "client {}: #{id} waited {late} ns for its answer since the relay forwarded it, over the bound of \
             {bound} ns (what other clients do must not hold it up)",
            index
        );
    }
}

/// Encodes a frame at the end of `out`.
fn push_frame<P: Payload>(out: &mut ByteQueue, id: u32, payload: &P) {
    let n = frame_len(payload);
    encode_frame(id, payload, out.extend_zeroed(n)).expect("a request fits its own length");
}

/// Adopts what an open write left: its content if the probes (or the
/// filesystem) show it committed, else the old file, which is legitimate
/// only if the write could have run out of space.
pub fn settle_open_write(w: &OpenWrite, who: &str, shared: &mut Shared) {
    let could_run_out = shared.space.unwatch(w.watch);
    if w.alive & 0b10 != 0 {
        let mode = Some(w.after_perm);
        if let Err(e) = shared.model.write(&w.path, mode, w.content) {
            violation!("{who}: the model cannot commit the probed write of {}: {e}", w.path);
        }
    } else if w.alive & 0b01 == 0 {
        violation!("{who}: {} is neither as before nor as written by a write that reached the agent: {w:?}", w.path);
    } else if !could_run_out {
        violation!("{who}: a write of {} reached its end of stream but was lost, with space to spare", w.path);
    } else {
        shared.faults.no_space += 1;
    }
    shared.space.release(w.reserve);
    shared.space.observe(shared.model.content_blocks());
}
