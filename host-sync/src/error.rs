//! One error type for everything the host side can run into.

use std::time::Duration;

use wire::{CoreErrorKind, MessageType};

/// A host-side failure.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The guest's filesystem refused the operation; `message` is the
    /// guest's own text (e.g. `"stat: not found"`).
    #[error("{op} {path}: {message}")]
    Fs {
        /// The operation (`stat`, `write`, ...).
        op: &'static str,
        /// The guest path it was applied to.
        path: String,
        /// The guest's message.
        message: String,
    },
    /// The guest answered with `core.error`.
    #[error("guest protocol error ({kind:?}): {message}")]
    Guest {
        /// The kind the guest reported.
        kind: CoreErrorKind,
        /// The guest's message.
        message: String,
    },
    /// The peer broke the protocol (bad frame, unexpected message).
    #[error("protocol error: {0}")]
    Protocol(String),
    /// No answer in time.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// The virtual machine is gone.
    #[error("the VM exited: {0}")]
    VmExited(String),
    /// The connection to the guest or relay closed.
    #[error("connection closed: {0}")]
    Disconnected(String),
    /// The guest's protocol generation lacks this message type.
    #[error("{message_type} needs protocol generation {needed}, the guest speaks {agreed}")]
    Unsupported {
        /// The type that was not sent.
        message_type: MessageType,
        /// The generation that introduced it.
        needed: u8,
        /// The generation agreed with the guest.
        agreed: u8,
    },
    /// Booting the sandbox failed.
    #[error("boot failed: {0}")]
    Boot(String),
    /// No more correlation ids in this connection's range.
    #[error("correlation ids exhausted")]
    IdsExhausted,
    /// A local I/O error (host files, sockets).
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl Error {
    /// Whether this is the guest saying the path does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::Fs { message, .. } if message.contains("not found") || message.contains("No such file"))
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
