//! Message types: wire string, expected flags, introducing generation.

use crate::frame::Flags;

/// The protocol generation picosandbox writes as `v` on every frame.
pub const PROTOCOL_GENERATION: u8 = 5;

/// The first generation whose peers may be sent `core.error`.
pub const CORE_ERROR_GENERATION: u8 = 5;

/// Declares [`MessageType`] from one table: each type's variant, wire
/// string, required flags and introducing generation, so the list is
/// spelled out once.
macro_rules! message_types {
    ($($(#[doc = $doc:literal])* $variant:ident = $name:literal, $flags:ident, $generation:expr;)*) => {
        /// Every message type of the protocol.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum MessageType {
            $($(#[doc = $doc])* $variant,)*
        }

        impl MessageType {
            /// Every message type, in declaration order.
            pub const ALL: [MessageType; [$(MessageType::$variant),*].len()] = [$(MessageType::$variant),*];

            /// The wire string, e.g. `"core.fs.request"`.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(MessageType::$variant => $name,)*
                }
            }

            /// The flags every frame of this type must carry.
            pub const fn flags(self) -> Flags {
                match self {
                    $(MessageType::$variant => Flags::$flags,)*
                }
            }

            /// The protocol generation that introduced this type: core = 1,
            /// fs = 2, `core.error` = 5, ping/pong = 6. A peer below it must
            /// not be sent it.
            pub const fn generation(self) -> u8 {
                match self {
                    $(MessageType::$variant => $generation,)*
                }
            }
        }
    };
}

message_types! {
    /// `core.init.resolved`: guest -> host, starts the handshake.
    InitResolved = "core.init.resolved", NONE, 1;
    /// `core.init.ack`: host -> guest, answers `core.init.resolved`.
    InitAck = "core.init.ack", NONE, 1;
    /// `core.ready`: guest -> host, boot timings; the host caches it.
    Ready = "core.ready", NONE, 1;
    /// `core.clock.sync`: host -> guest, sets the guest's wall clock.
    ClockSync = "core.clock.sync", NONE, 1;
    /// `core.error`: either way, a protocol error on the offending id.
    Error = "core.error", TERMINAL, CORE_ERROR_GENERATION;
    /// `core.relay.client.disconnected`: relay -> guest, drop a client's id range.
    RelayClientDisconnected = "core.relay.client.disconnected", NONE, 1;
    /// `core.fs.request`: host -> guest, opens a filesystem session.
    FsRequest = "core.fs.request", SESSION_START, 2;
    /// `core.fs.data`: either way, one chunk of a read or write stream.
    FsData = "core.fs.data", NONE, 2;
    /// `core.fs.response`: guest -> host, ends a filesystem session.
    FsResponse = "core.fs.response", TERMINAL, 2;
    /// `core.shutdown`: host -> guest, power off.
    Shutdown = "core.shutdown", SHUTDOWN, 1;
    /// `core.ping`: host -> guest, liveness probe.
    Ping = "core.ping", NONE, 6;
    /// `core.pong`: guest -> host, answers `core.ping` on the same id.
    Pong = "core.pong", TERMINAL, 6;
    /// `picosandbox.relay.flow`: relay -> guest (an extension of this
    /// project's relay and guest, sent only to its own guest), pause or
    /// resume read data to a client.
    RelayFlow = "picosandbox.relay.flow", NONE, PROTOCOL_GENERATION;
}

impl MessageType {
    /// The longest wire string of any type, in bytes.
    pub const MAX_NAME_LEN: usize = {
        let (mut max, mut i) = (0, 0);
        while i < MessageType::ALL.len() {
            let len = MessageType::ALL[i].as_str().len();
            if len > max {
                max = len;
            }
            i += 1;
        }
        max
    };

    /// The type for a wire string (exact, case-sensitive match). Written
    /// out for speed on the decode path; a test checks it against
    /// [`MessageType::as_str`] for every type.
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
}

impl core::fmt::Display for MessageType {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.as_str())
    }
}
