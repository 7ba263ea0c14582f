//! The host side's protocol decisions, without I/O: the boot handshake,
//! correlation id allocation, generation gating and call routing. The
//! threads in [`client`](crate::client) and [`relay`](crate::relay) are
//! shells around these; the simulator drives them directly.

use std::collections::HashMap;

use wire::{Body, ClockSync, Flags, Frame, InitAck, Message, MessageType, Payload, encode_frame};

use crate::error::{Error, Result};

/// The newest generation whose message types this host implements
/// (`core.ping`/`core.pong` came with 6). The generation agreed with a
/// guest is the smaller of this and the `v` of its `core.ready`.
pub const HOST_GENERATION: u8 = 6;

/// What the host keeps of the guest's `core.ready`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadyInfo {
    /// The whole `core.ready` frame, as the relay hands it to clients.
    pub frame: Vec<u8>,
    /// The guest's generation (`v` of the frame).
    pub v: u8,
    /// Guest-reported nanoseconds from power-on to the agent's entry.
    pub boot_time_ns: u64,
    /// Guest-reported nanoseconds of agent initialisation.
    pub init_time_ns: u64,
    /// Guest-reported nanoseconds from power-on to `core.ready`.
    pub ready_time_ns: u64,
    /// The agent's version.
    pub agent_version: String,
}

impl ReadyInfo {
    /// Reads a `core.ready` frame.
    pub fn from_frame(frame: &[u8]) -> Result<ReadyInfo> {
        let message = Message::decode_bytes(frame).map_err(|e| Error::Protocol(format!("core.ready: {e}")))?;
        match message.body {
            Body::Ready(r) => Ok(ReadyInfo {
                frame: frame.to_vec(),
                v: message.v,
                boot_time_ns: r.boot_time_ns,
                init_time_ns: r.init_time_ns,
                ready_time_ns: r.ready_time_ns,
                agent_version: r.agent_version.to_string(),
            }),
            other => Err(Error::Protocol(format!("expected core.ready, got {}", other.message_type()))),
        }
    }

    /// The generation agreed with this guest.
    pub fn generation(&self) -> u8 {
        self.v.min(HOST_GENERATION)
    }
}

/// Encodes one frame into a new buffer, or says why it cannot be sent (a
/// request whose paths make it larger than [`wire::MAX_FRAME_BYTES`]).
pub fn try_frame<P: Payload>(id: u32, payload: &P) -> Result<Vec<u8>> {
    let len = wire::frame_len(payload);
    if len > wire::MAX_FRAME_BYTES {
        return Err(Error::Protocol(format!(
            "{} of {len} bytes is larger than a frame may be ({} bytes)",
            P::TYPE,
            wire::MAX_FRAME_BYTES
        )));
    }
    let mut out = vec![0u8; len];
    let n = encode_frame(id, payload, &mut out).map_err(|e| Error::Protocol(format!("encoding {}: {e}", P::TYPE)))?;
    assert_eq!(n, len, "frame_len and encode_frame disagree for {}", P::TYPE);
    Ok(out)
}

/// Encodes one frame of the host's own (control frames, far below
/// [`wire::MAX_FRAME_BYTES`]).
///
/// # Panics
/// If the payload cannot be encoded: a bug, since these payloads are small
/// and fixed in shape. Requests built from caller input go through
/// [`try_frame`].
pub fn frame<P: Payload>(id: u32, payload: &P) -> Vec<u8> {
    try_frame(id, payload).unwrap_or_else(|e| panic!("a control frame must encode: {e}"))
}

/// The host half of the boot handshake: `core.init.resolved` ->
/// `core.init.ack` -> `core.ready` -> `core.clock.sync`.
#[derive(Debug, Default)]
pub struct Handshake {
    acked: bool,
}

/// What the handshake wants next.
#[derive(Debug, PartialEq, Eq)]
pub enum HandshakeStep {
    /// Send these bytes and keep reading.
    Send(Vec<u8>),
    /// Done: send `clock_sync` and start serving.
    Ready {
        /// The guest's `core.ready`.
        ready: ReadyInfo,
        /// The `core.clock.sync` frame to send.
        clock_sync: Vec<u8>,
    },
}

impl Handshake {
    /// A handshake waiting for `core.init.resolved`.
    pub fn new() -> Handshake {
        Handshake::default()
    }

    /// Handles one guest frame. `unix_time_ns` is the host's wall clock,
    /// for the `core.clock.sync` that ends the handshake. A guest that
    /// resends `core.init.resolved` (it timed out) is acknowledged again;
    /// anything else before `core.ready` is a protocol error.
    pub fn receive(&mut self, frame: &[u8], unix_time_ns: u64) -> Result<HandshakeStep> {
        let message =
            Message::decode_bytes(frame).map_err(|e| Error::Protocol(format!("during the handshake: {e}")))?;
        match message.body {
            Body::InitResolved(_) => {
                self.acked = true;
                Ok(HandshakeStep::Send(self::frame(0, &InitAck)))
            }
            Body::Ready(_) if self.acked => Ok(HandshakeStep::Ready {
                ready: ReadyInfo::from_frame(frame)?,
                clock_sync: self::frame(0, &ClockSync { unix_time_nanos: unix_time_ns }),
            }),
            Body::Error(e) => Err(Error::Protocol(format!("guest error during the handshake: {}", e.message))),
            other => Err(Error::Protocol(format!("unexpected {} during the handshake", other.message_type()))),
        }
    }
}

/// Refuses locally to send a type the agreed generation lacks.
pub fn check_generation(t: MessageType, agreed: u8) -> Result<()> {
    if t.generation() > agreed {
        return Err(Error::Unsupported { message_type: t, needed: t.generation(), agreed });
    }
    Ok(())
}

/// Correlation ids of one connection: fresh, increasing, never reused,
/// inside `[start, end)`.
#[derive(Debug, Clone)]
pub struct Ids {
    start: u32,
    next: u32,
    end: u32,
}

impl Ids {
    /// Ids in `[start, end)`; 0 is never handed out (it is the control id).
    pub fn new(start: u32, end: u32) -> Ids {
        Ids { start: start.max(1), next: start.max(1), end }
    }

    /// The next fresh id.
    pub fn allocate(&mut self) -> Result<u32> {
        if self.next >= self.end {
            return Err(Error::IdsExhausted);
        }
        self.next += 1;
        Ok(self.next - 1)
    }

    /// Whether `id` lies in this range (allocated or not).
    pub fn contains(&self, id: u32) -> bool {
        (self.start..self.end).contains(&id)
    }

    /// Whether `id` has been handed out by [`Ids::allocate`].
    pub fn issued(&self, id: u32) -> bool {
        (self.start..self.next).contains(&id)
    }
}

/// How to check that the guest is alive, by the agreed generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    /// `core.ping` -> `core.pong` (generation 6 and later).
    Ping,
    /// A `Stat` of `/`, which every generation with a filesystem answers.
    StatRoot,
}

impl Liveness {
    /// The probe a guest of `generation` answers.
    pub fn for_generation(generation: u8) -> Liveness {
        if generation >= MessageType::Ping.generation() { Liveness::Ping } else { Liveness::StatRoot }
    }
}

/// How a call ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallKind {
    /// One request, one terminal frame.
    Request,
    /// A read: data frames, then a terminal frame.
    Read,
    /// A write: the host streams data, the guest answers once.
    Write,
}

/// Where an incoming guest frame goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// To the call with this id; `last` when the frame ends the call.
    Call {
        /// The call's id.
        id: u32,
        /// Whether this frame ends the call.
        last: bool,
    },
    /// No call waits for this id (a late frame of an abandoned call, or a
    /// stray one): dropped.
    Stray {
        /// The frame's id.
        id: u32,
    },
}

/// The calls in flight on one connection.
#[derive(Debug, Default)]
pub struct Calls {
    open: HashMap<u32, CallKind>,
    /// Frames dropped because no call waited for them.
    pub strays: u64,
}

impl Calls {
    /// No calls.
    pub fn new() -> Calls {
        Calls::default()
    }

    /// Registers a call.
    pub fn open(&mut self, id: u32, kind: CallKind) {
        self.open.insert(id, kind);
    }

    /// Forgets a call (finished or abandoned). Returns whether it was open.
    pub fn close(&mut self, id: u32) -> bool {
        self.open.remove(&id).is_some()
    }

    /// Calls in flight.
    pub fn len(&self) -> usize {
        self.open.len()
    }

    /// Whether no call is in flight.
    pub fn is_empty(&self) -> bool {
        self.open.is_empty()
    }

    /// Routes a guest frame by its header. A TERMINAL frame closes the
    /// call; so does any frame of a call whose kind takes no data frames
    /// (only a [`CallKind::Read`] does), so a guest cannot keep a request
    /// or a write open with frames it does not owe: the caller gets that
    /// frame as the call's last and reports it as a protocol error.
    pub fn route(&mut self, frame: &Frame<'_>) -> Route {
        let id = frame.id;
        let Some(&kind) = self.open.get(&id) else {
            self.strays += 1;
            return Route::Stray { id };
        };
        let last = frame.flags.contains(Flags::TERMINAL) || kind != CallKind::Read;
        if last {
            self.open.remove(&id);
        }
        Route::Call { id, last }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wire::{FsData, FsResponse, InitResolved, Ready};

    fn ready_frame(v: u8) -> Vec<u8> {
        let ready = Ready { boot_time_ns: 1, init_time_ns: 2, ready_time_ns: 3, agent_version: "9.9" };
        let mut out = vec![0u8; wire::frame_len(&ready)];
        wire::encode_frame_as(0, Flags::NONE, v, &ready, &mut out).unwrap();
        out
    }

    #[test]
    fn handshake_acks_then_caches_ready() {
        let mut h = Handshake::new();
        assert_eq!(h.receive(&frame(0, &InitResolved::default()), 0).unwrap(), HandshakeStep::Send(frame(0, &InitAck)));
        // A resent init.resolved is acknowledged again.
        assert!(matches!(h.receive(&frame(0, &InitResolved::default()), 0).unwrap(), HandshakeStep::Send(_)));
        let HandshakeStep::Ready { ready, clock_sync } = h.receive(&ready_frame(5), 42).unwrap() else { panic!() };
        assert_eq!((ready.v, ready.generation(), ready.agent_version.as_str()), (5, 5, "9.9"));
        assert_eq!(ready.frame, ready_frame(5));
        assert_eq!(clock_sync, frame(0, &ClockSync { unix_time_nanos: 42 }));
        assert_eq!(ReadyInfo::from_frame(&ready_frame(10)).unwrap().generation(), HOST_GENERATION);
    }

    #[test]
    fn handshake_rejects_anything_else() {
        let mut h = Handshake::new();
        assert!(h.receive(&ready_frame(5), 0).is_err(), "ready before init.resolved");
        assert!(Handshake::new().receive(&frame(0, &wire::Ping), 0).is_err());
        assert!(Handshake::new().receive(&[0, 0, 0, 5, 0, 0, 0, 0, 0], 0).is_err());
    }

    #[test]
    fn generation_gating_follows_the_type_table() {
        assert!(check_generation(MessageType::Ping, 5).is_err());
        assert!(check_generation(MessageType::Ping, 6).is_ok());
        assert!(check_generation(MessageType::FsRequest, 2).is_ok());
        assert!(matches!(
            check_generation(MessageType::FsRequest, 1),
            Err(Error::Unsupported { needed: 2, agreed: 1, .. })
        ));
    }

    #[test]
    fn ids_are_fresh_in_range_and_run_out() {
        let mut ids = Ids::new(0, 4);
        assert!(!ids.issued(1), "nothing handed out yet");
        assert_eq!([ids.allocate().unwrap(), ids.allocate().unwrap(), ids.allocate().unwrap()], [1, 2, 3]);
        assert!(matches!(ids.allocate(), Err(Error::IdsExhausted)));
        assert!(ids.contains(3) && !ids.contains(0) && !ids.contains(4));
        assert!(ids.issued(1) && ids.issued(3) && !ids.issued(0) && !ids.issued(4));
        let mut fresh = Ids::new(10, 20);
        fresh.allocate().unwrap();
        assert!(fresh.issued(10) && !fresh.issued(11), "only what was allocated");
        let slot = Ids::new(33_554_432, 67_108_863);
        assert!(slot.contains(33_554_432) && !slot.contains(1) && !slot.contains(67_108_863));
    }

    #[test]
    fn liveness_uses_ping_from_the_generation_that_has_it() {
        let first = MessageType::Ping.generation();
        assert_eq!(Liveness::for_generation(first - 1), Liveness::StatRoot);
        assert_eq!(Liveness::for_generation(first), Liveness::Ping);
        assert_eq!(Liveness::for_generation(u8::MAX), Liveness::Ping);
    }

    #[test]
    fn calls_route_until_their_terminal_frame() {
        let mut calls = Calls::new();
        calls.open(7, CallKind::Read);
        let data = frame(7, &FsData { data: b"x" });
        let end = frame(7, &FsResponse::<[wire::FsEntryInfo<'_>; 0]>::ok());
        fn f(b: &[u8]) -> wire::Frame<'_> {
            wire::Frame::parse(b).unwrap()
        }
        assert_eq!(calls.route(&f(&data)), Route::Call { id: 7, last: false });
        assert_eq!(calls.route(&f(&end)), Route::Call { id: 7, last: true });
        assert_eq!(calls.route(&f(&end)), Route::Stray { id: 7 });
        assert_eq!((calls.strays, calls.len()), (1, 0));
        // A data frame on a call that takes none ends it.
        calls.open(8, CallKind::Request);
        calls.open(9, CallKind::Write);
        let stray_data = |id| frame(id, &FsData { data: b"x" });
        assert_eq!(calls.route(&f(&stray_data(8))), Route::Call { id: 8, last: true });
        assert_eq!(calls.route(&f(&stray_data(9))), Route::Call { id: 9, last: true });
        assert_eq!(calls.len(), 0);
    }
}
