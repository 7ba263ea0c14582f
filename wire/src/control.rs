//! Payloads of the `core.*` messages: handshake, clock, errors, relay,
//! shutdown and liveness.

use minicbor::encode::Write;

use crate::cbor::{EncodeResult, Encoder, Fail, Put, Reader, Res, key};
use crate::error::{Error, ErrorKind, Layer};
use crate::message::MessageType;
use crate::{DecodePayload, Payload};

/// Fails with [`ErrorKind::MissingField`] unless every bit of `required` is in `seen`.
pub(crate) fn require(r: &Reader<'_>, seen: u32, fields: &[&'static str], required: u32) -> Res<()> {
    // The first missing field in declaration order is the lowest missing
    // bit (none: 32, past every field list).
    match fields.get((required & !seen).trailing_zeros() as usize) {
        Some(field) => Err(r.error(ErrorKind::MissingField, field)),
        None => Ok(()),
    }
}

/// Decodes a payload the way the reference's `from_reader` does: one item,
/// trailing bytes ignored.
pub(crate) fn decode_with<'a, T>(p: &'a [u8], f: impl FnOnce(&mut Reader<'a>) -> Res<T>) -> Result<T, Error> {
    let mut r = Reader::new(p, Layer::Payload);
    f(&mut r).map_err(|Fail| r.take_error())
}

/// The user the guest resolved as the default for commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ResolvedUser {
    /// Numeric user id.
    pub uid: u32,
    /// Numeric group id.
    pub gid: u32,
}

/// `core.init.resolved`: the guest's first frame, naming its default user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct InitResolved {
    /// The default user of the guest.
    pub default_user: ResolvedUser,
}

impl ResolvedUser {
    const FIELDS: [&'static str; 2] = ["uid", "gid"];

    fn read(r: &mut Reader<'_>) -> Res<Self> {
        let mut user = ResolvedUser::default();
        let seen = r.record("ResolvedUser", &Self::FIELDS, |r, i| {
            match i {
                0 => user.uid = r.u32("ResolvedUser.uid")?,
                _ => user.gid = r.u32("ResolvedUser.gid")?,
            }
            Ok(())
        })?;
        require(r, seen, &Self::FIELDS, 0b11)?;
        Ok(user)
    }
}

impl Payload for InitResolved {
    const TYPE: MessageType = MessageType::InitResolved;

    fn encode<W: Write>(&self, e: &mut Encoder<W>) -> EncodeResult<W> {
        e.map(1)?;
        e.raw(key!("default_user"))?.map(2)?;
        e.raw(key!("uid"))?.u32(self.default_user.uid)?;
        e.raw(key!("gid"))?.u32(self.default_user.gid)?;
        Ok(())
    }
}

impl<'a> DecodePayload<'a> for InitResolved {
    fn decode(p: &'a [u8]) -> Result<Self, Error> {
        const FIELDS: [&str; 1] = ["default_user"];
        decode_with(p, |r| {
            let mut out = InitResolved::default();
            let seen = r.record("InitResolved", &FIELDS, |r, _| {
                out.default_user = ResolvedUser::read(r)?;
                Ok(())
            })?;
            require(r, seen, &FIELDS, 1)?;
            Ok(out)
        })
    }
}

/// Declares a payload that is an empty struct `{}` (encoded `a0`; a map
/// with unknown keys is accepted, anything else is not).
macro_rules! empty_struct_payload {
    ($(#[$doc:meta])* $name:ident, $t:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
        pub struct $name;

        impl Payload for $name {
            const TYPE: MessageType = $t;

            fn encode<W: Write>(&self, e: &mut Encoder<W>) -> EncodeResult<W> {
                e.map(0)?;
                Ok(())
            }
        }

        impl<'a> DecodePayload<'a> for $name {
            fn decode(p: &'a [u8]) -> Result<Self, Error> {
                decode_with(p, |r| r.record(stringify!($name), &[], |_, _| Ok(())).map(|_| $name))
            }
        }
    };
}

empty_struct_payload!(
    /// `core.init.ack`: the host's answer to `core.init.resolved`.
    InitAck,
    MessageType::InitAck
);
empty_struct_payload!(
    /// `core.ping`: a liveness probe; answered by `core.pong` on the same id.
    Ping,
    MessageType::Ping
);
empty_struct_payload!(
    /// `core.pong`: the answer to `core.ping` (TERMINAL).
    Pong,
    MessageType::Pong
);

/// `core.ready`: the guest is ready; carries its boot timings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Ready<'a> {
    /// Nanoseconds from power-on to the agent's entry.
    pub boot_time_ns: u64,
    /// Nanoseconds the agent spent initialising (entry to `core.init.resolved`).
    pub init_time_ns: u64,
    /// Nanoseconds from power-on to `core.ready`.
    pub ready_time_ns: u64,
    /// The agent's version; omitted on the wire when empty, empty when absent.
    pub agent_version: &'a str,
}

impl Ready<'_> {
    const FIELDS: [&'static str; 4] = ["boot_time_ns", "init_time_ns", "ready_time_ns", "agent_version"];
}

impl Payload for Ready<'_> {
    const TYPE: MessageType = MessageType::Ready;

    fn encode<W: Write>(&self, e: &mut Encoder<W>) -> EncodeResult<W> {
        let with_version = !self.agent_version.is_empty();
        e.map(if with_version { 4 } else { 3 })?;
        e.raw(key!("boot_time_ns"))?.uint(self.boot_time_ns)?;
        e.raw(key!("init_time_ns"))?.uint(self.init_time_ns)?;
        e.raw(key!("ready_time_ns"))?.uint(self.ready_time_ns)?;
        if with_version {
            e.raw(key!("agent_version"))?.text(self.agent_version)?;
        }
        Ok(())
    }
}

impl<'a> DecodePayload<'a> for Ready<'a> {
    fn decode(p: &'a [u8]) -> Result<Self, Error> {
        decode_with(p, |r| {
            let mut out = Ready::default();
            let seen = r.record("Ready", &Self::FIELDS, |r, i| {
                match i {
                    0 => out.boot_time_ns = r.u64("Ready.boot_time_ns")?,
                    1 => out.init_time_ns = r.u64("Ready.init_time_ns")?,
                    2 => out.ready_time_ns = r.u64("Ready.ready_time_ns")?,
                    _ => out.agent_version = r.str("Ready.agent_version")?,
                }
                Ok(())
            })?;
            require(r, seen, &Self::FIELDS, 0b0111)?;
            Ok(out)
        })
    }
}

/// `core.clock.sync`: the host's wall clock, to set the guest's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ClockSync {
    /// Nanoseconds since the Unix epoch.
    pub unix_time_nanos: u64,
}

impl Payload for ClockSync {
    const TYPE: MessageType = MessageType::ClockSync;

    fn encode<W: Write>(&self, e: &mut Encoder<W>) -> EncodeResult<W> {
        e.map(1)?;
        e.raw(key!("unix_time_nanos"))?.uint(self.unix_time_nanos)?;
        Ok(())
    }
}

impl<'a> DecodePayload<'a> for ClockSync {
    fn decode(p: &'a [u8]) -> Result<Self, Error> {
        const FIELDS: [&str; 1] = ["unix_time_nanos"];
        decode_with(p, |r| {
            let mut out = ClockSync::default();
            let seen = r.record("ClockSync", &FIELDS, |r, _| {
                out.unix_time_nanos = r.u64("ClockSync.unix_time_nanos")?;
                Ok(())
            })?;
            require(r, seen, &FIELDS, 1)?;
            Ok(out)
        })
    }
}

/// The kind of a `core.error` (snake_case text on the wire).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CoreErrorKind {
    /// The envelope could not be decoded.
    MalformedMessage,
    /// `t` names a type the receiver does not implement.
    UnsupportedMessageType,
    /// The message needs a newer protocol generation.
    UnsupportedProtocolGeneration,
    /// The frame flags do not match the message type.
    InvalidFlags,
    /// The payload could not be decoded as the type's payload.
    InvalidPayload,
    /// The id names no session, or a session that is already open.
    InvalidSession,
}

impl CoreErrorKind {
    /// Every kind, in declaration order.
    pub const ALL: [CoreErrorKind; 6] = [
        CoreErrorKind::MalformedMessage,
        CoreErrorKind::UnsupportedMessageType,
        CoreErrorKind::UnsupportedProtocolGeneration,
        CoreErrorKind::InvalidFlags,
        CoreErrorKind::InvalidPayload,
        CoreErrorKind::InvalidSession,
    ];

    /// The wire text, e.g. `"invalid_flags"`.
    pub const fn as_str(self) -> &'static str {
        match self {
            CoreErrorKind::MalformedMessage => "malformed_message",
            CoreErrorKind::UnsupportedMessageType => "unsupported_message_type",
            CoreErrorKind::UnsupportedProtocolGeneration => "unsupported_protocol_generation",
            CoreErrorKind::InvalidFlags => "invalid_flags",
            CoreErrorKind::InvalidPayload => "invalid_payload",
            CoreErrorKind::InvalidSession => "invalid_session",
        }
    }

    /// The kind for a wire text (exact match).
    pub fn from_wire(name: &[u8]) -> Option<CoreErrorKind> {
        CoreErrorKind::ALL.into_iter().find(|k| k.as_str().as_bytes() == name)
    }
}

/// `core.error`: a protocol error, sent on the offending id (TERMINAL).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CoreError<'a> {
    /// What went wrong.
    pub kind: CoreErrorKind,
    /// A readable description.
    pub message: &'a str,
    /// The `t` of the offending message; omitted on the wire when `None`.
    pub offending_type: Option<&'a str>,
}

impl CoreError<'_> {
    const FIELDS: [&'static str; 3] = ["kind", "message", "offending_type"];
}

impl Payload for CoreError<'_> {
    const TYPE: MessageType = MessageType::Error;

    fn encode<W: Write>(&self, e: &mut Encoder<W>) -> EncodeResult<W> {
        e.map(if self.offending_type.is_some() { 3 } else { 2 })?;
        e.raw(key!("kind"))?.text(self.kind.as_str())?;
        e.raw(key!("message"))?.text(self.message)?;
        if let Some(t) = self.offending_type {
            e.raw(key!("offending_type"))?.text(t)?;
        }
        Ok(())
    }
}

impl<'a> DecodePayload<'a> for CoreError<'a> {
    fn decode(p: &'a [u8]) -> Result<Self, Error> {
        decode_with(p, |r| {
            let mut out = CoreError { kind: CoreErrorKind::MalformedMessage, message: "", offending_type: None };
            let seen = r.record("CoreError", &Self::FIELDS, |r, i| {
                match i {
                    0 => {
                        // A unit variant: bare text, or a one-entry map whose
                        // value the reference leaves unread.
                        let at = r.position();
                        let name = r.variant("CoreError.kind")?;
                        out.kind = CoreErrorKind::from_wire(name)
                            .ok_or_else(|| r.unknown_variant(name, "CoreError.kind", at))?;
                    }
                    1 => out.message = r.str("CoreError.message")?,
                    _ => {
                        out.offending_type = if r.none("CoreError.offending_type")? {
                            None
                        } else {
                            Some(r.str("CoreError.offending_type")?)
                        }
                    }
                }
                Ok(())
            })?;
            require(r, seen, &Self::FIELDS, 0b011)?;
            Ok(out)
        })
    }
}

/// `core.relay.client.disconnected`: a relay client left; the guest drops
/// every session whose id is in `[id_start, id_end_exclusive)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RelayClientDisconnected {
    /// First id of the client's range.
    pub id_start: u32,
    /// One past the last id of the client's range.
    pub id_end_exclusive: u32,
}

impl RelayClientDisconnected {
    const FIELDS: [&'static str; 2] = ["id_start", "id_end_exclusive"];

    /// Whether `id` falls in the range.
    pub const fn contains(&self, id: u32) -> bool {
        self.id_start <= id && id < self.id_end_exclusive
    }
}

impl Payload for RelayClientDisconnected {
    const TYPE: MessageType = MessageType::RelayClientDisconnected;

    fn encode<W: Write>(&self, e: &mut Encoder<W>) -> EncodeResult<W> {
        e.map(2)?;
        e.raw(key!("id_start"))?.u32(self.id_start)?;
        e.raw(key!("id_end_exclusive"))?.u32(self.id_end_exclusive)?;
        Ok(())
    }
}

impl<'a> DecodePayload<'a> for RelayClientDisconnected {
    fn decode(p: &'a [u8]) -> Result<Self, Error> {
        decode_with(p, |r| {
            let mut out = RelayClientDisconnected::default();
            let seen = r.record("RelayClientDisconnected", &Self::FIELDS, |r, i| {
                match i {
                    0 => out.id_start = r.u32("RelayClientDisconnected.id_start")?,
                    _ => out.id_end_exclusive = r.u32("RelayClientDisconnected.id_end_exclusive")?,
                }
                Ok(())
            })?;
            require(r, seen, &Self::FIELDS, 0b11)?;
            Ok(out)
        })
    }
}

/// `picosandbox.relay.flow` (an extension; relay -> guest, id 0 only):
/// while `paused`, the guest sends no read data to the ids in
/// `[id_start, id_end_exclusive)` (a relay client that has fallen behind);
/// other answers still flow. A peer that does not know the type answers
/// `core.error` and the relay falls back to cutting the client off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RelayFlow {
    /// First id of the client's range.
    pub id_start: u32,
    /// One past the last id of the client's range.
    pub id_end_exclusive: u32,
    /// Whether read data to the range waits.
    pub paused: bool,
}

impl RelayFlow {
    const FIELDS: [&'static str; 3] = ["id_start", "id_end_exclusive", "paused"];
}

impl Payload for RelayFlow {
    const TYPE: MessageType = MessageType::RelayFlow;

    fn encode<W: Write>(&self, e: &mut Encoder<W>) -> EncodeResult<W> {
        e.map(3)?;
        e.raw(key!("id_start"))?.u32(self.id_start)?;
        e.raw(key!("id_end_exclusive"))?.u32(self.id_end_exclusive)?;
        e.raw(key!("paused"))?.bool(self.paused)?;
        Ok(())
    }
}

impl<'a> DecodePayload<'a> for RelayFlow {
    fn decode(p: &'a [u8]) -> Result<Self, Error> {
        decode_with(p, |r| {
            let mut out = RelayFlow::default();
            let seen = r.record("RelayFlow", &Self::FIELDS, |r, i| {
                match i {
                    0 => out.id_start = r.u32("RelayFlow.id_start")?,
                    1 => out.id_end_exclusive = r.u32("RelayFlow.id_end_exclusive")?,
                    _ => out.paused = r.bool("RelayFlow.paused")?,
                }
                Ok(())
            })?;
            require(r, seen, &Self::FIELDS, 0b111)?;
            Ok(out)
        })
    }
}

/// `core.shutdown`: power off. The payload is the unit value, CBOR `null`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Shutdown;

impl Payload for Shutdown {
    const TYPE: MessageType = MessageType::Shutdown;

    fn encode<W: Write>(&self, e: &mut Encoder<W>) -> EncodeResult<W> {
        e.null()?;
        Ok(())
    }
}

impl<'a> DecodePayload<'a> for Shutdown {
    /// Accepts `null` or `undefined`, and also an empty payload, which the
    /// reference agent accepts because it never decodes this payload.
    fn decode(p: &'a [u8]) -> Result<Self, Error> {
        if p.is_empty() {
            return Ok(Shutdown);
        }
        decode_with(p, |r| r.unit("Shutdown").map(|()| Shutdown))
    }
}
