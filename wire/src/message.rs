//! Message types: wire string, expected flags, introducing generation.

use crate::frame::Flags;

/// The protocol generation picosandbox writes as `v` on every frame.
pub const PROTOCOL_GENERATION: u8 = 5;

/// The first generation whose peers may be sent `core.error`.
pub const CORE_ERROR_GENERATION: u8 = 5;

/// Every message type of the protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MessageType {
    /// `core.init.resolved`: guest -> host, starts the handshake.
    InitResolved,
    /// `core.init.ack`: host -> guest, answers `core.init.resolved`.
    InitAck,
    /// `core.ready`: guest -> host, boot timings; the host caches it.
    Ready,
    /// `core.clock.sync`: host -> guest, sets the guest's wall clock.
    ClockSync,
    /// `core.error`: either way, a protocol error on the offending id.
    Error,
    /// `core.relay.client.disconnected`: relay -> guest, drop a client's id range.
    RelayClientDisconnected,
    /// `core.fs.request`: host -> guest, opens a filesystem session.
    FsRequest,
    /// `core.fs.data`: either way, one chunk of a read or write stream.
    FsData,
    /// `core.fs.response`: guest -> host, ends a filesystem session.
    FsResponse,
    /// `core.shutdown`: host -> guest, power off.
    Shutdown,
    /// `core.ping`: host -> guest, liveness probe.
    Ping,
    /// `core.pong`: guest -> host, answers `core.ping` on the same id.
    Pong,
    /// `picosandbox.relay.flow`: relay -> guest (an extension of this
    /// project's relay and guest), pause or resume read data to a client.
    RelayFlow,
}

impl MessageType {
    /// Every message type, in declaration order.
    pub const ALL: [MessageType; 13] = [
        MessageType::InitResolved,
        MessageType::InitAck,
        MessageType::Ready,
        MessageType::ClockSync,
        MessageType::Error,
        MessageType::RelayClientDisconnected,
        MessageType::FsRequest,
        MessageType::FsData,
        MessageType::FsResponse,
        MessageType::Shutdown,
        MessageType::Ping,
        MessageType::Pong,
        MessageType::RelayFlow,
    ];

    /// The longest wire string of any type, in bytes.
    pub const MAX_NAME_LEN: usize = 30;

    /// The wire string, e.g. `"core.fs.request"`.
    pub const fn as_str(self) -> &'static str {
        match self {
            MessageType::InitResolved => "core.init.resolved",
            MessageType::InitAck => "core.init.ack",
            MessageType::Ready => "core.ready",
            MessageType::ClockSync => "core.clock.sync",
            MessageType::Error => "core.error",
            MessageType::RelayClientDisconnected => "core.relay.client.disconnected",
            MessageType::FsRequest => "core.fs.request",
            MessageType::FsData => "core.fs.data",
            MessageType::FsResponse => "core.fs.response",
            MessageType::Shutdown => "core.shutdown",
            MessageType::Ping => "core.ping",
            MessageType::Pong => "core.pong",
            MessageType::RelayFlow => "picosandbox.relay.flow",
        }
    }

    /// The type for a wire string (exact, case-sensitive match).
    #[inline]
    pub fn from_wire(name: &[u8]) -> Option<MessageType> {
        if name == b"picosandbox.relay.flow" {
            return Some(MessageType::RelayFlow);
        }
        // Every other name starts with "core."; match the rest, which the
        // compiler turns into a switch on length and a few compares.
        Some(match name.strip_prefix(b"core.")? {
            b"init.resolved" => MessageType::InitResolved,
            b"init.ack" => MessageType::InitAck,
            b"ready" => MessageType::Ready,
            b"clock.sync" => MessageType::ClockSync,
            b"error" => MessageType::Error,
            b"relay.client.disconnected" => MessageType::RelayClientDisconnected,
            b"fs.request" => MessageType::FsRequest,
            b"fs.data" => MessageType::FsData,
            b"fs.response" => MessageType::FsResponse,
            b"shutdown" => MessageType::Shutdown,
            b"ping" => MessageType::Ping,
            b"pong" => MessageType::Pong,
            _ => return None,
        })
    }

    /// The flags every frame of this type must carry.
    pub const fn flags(self) -> Flags {
        match self {
            MessageType::Error | MessageType::FsResponse | MessageType::Pong => Flags::TERMINAL,
            MessageType::FsRequest => Flags::SESSION_START,
            MessageType::Shutdown => Flags::SHUTDOWN,
            _ => Flags::NONE,
        }
    }

    /// The protocol generation that introduced this type: core = 1, fs = 2,
    /// `core.error` = 5, ping/pong = 6. A peer below it must not be sent it.
    pub const fn generation(self) -> u8 {
        match self {
            MessageType::FsRequest | MessageType::FsData | MessageType::FsResponse => 2,
            MessageType::Error => CORE_ERROR_GENERATION,
            MessageType::Ping | MessageType::Pong => 6,
            // Only this project's relay sends it, and only to its own guest.
            MessageType::RelayFlow => PROTOCOL_GENERATION,
            _ => 1,
        }
    }
}

impl core::fmt::Display for MessageType {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.as_str())
    }
}
