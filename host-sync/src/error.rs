//! One error type for everything the host side can run into.

use std::path::PathBuf;
use std::time::Duration;

use wire::{CoreErrorKind, MessageType};

/// A host-side failure.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The guest's filesystem refused the operation; `message` is the
    /// guest's own text (e.g. `"stat: No such file or directory (os error 2)"`).
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
    /// A setting that cannot work, found before anything started.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Booting the sandbox failed: why, then what to do, then the guest's
    /// last log lines when it logged anything.
    #[error("cannot boot the sandbox: {0}")]
    Boot(String),
    /// No more correlation ids in this connection's range.
    #[error("correlation ids exhausted")]
    IdsExhausted,
    /// Nothing answers at a sandbox's relay socket (missing, refused).
    #[error("cannot reach the sandbox at {}: {}", socket.display(), os_text(source))]
    Unreachable {
        /// The relay socket.
        socket: PathBuf,
        /// Why not.
        source: std::io::Error,
    },
    /// A host file could not be read or written; names the file.
    #[error("cannot {action} {}: {}", path.display(), os_text(source))]
    LocalFile {
        /// What was being done (`open`, `create`, `write`, `replace`).
        action: &'static str,
        /// The host file.
        path: PathBuf,
        /// Why not.
        source: std::io::Error,
    },
    /// A local I/O error (host files, sockets).
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl Error {
    /// A host-file error naming the file.
    pub fn local(action: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Error {
        Error::LocalFile { action, path: path.into(), source }
    }

    /// Whether this is the guest saying the path does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::Fs { message, .. } if message.contains("not found") || message.contains("No such file"))
    }
}

/// An I/O error as the C library words it: "No such file or directory",
/// without Rust's " (os error 2)".
pub(crate) fn os_text(e: &std::io::Error) -> String {
    let text = e.to_string();
    match e.raw_os_error() {
        Some(code) => text.strip_suffix(&format!(" (os error {code})")).unwrap_or(&text).to_string(),
        None => text,
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The setting a [`ConfigError`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Setting {
    /// The guest ELF.
    Guest,
    /// Guest memory in MiB.
    Memory,
    /// CPU acceleration.
    Accel,
}

impl Setting {
    /// The [`SandboxConfig`](crate::SandboxConfig) field.
    pub fn field(self) -> &'static str {
        match self {
            Setting::Guest => "guest",
            Setting::Memory => "memory_mib",
            Setting::Accel => "accel",
        }
    }

    /// The command-line option.
    pub fn flag(self) -> &'static str {
        match self {
            Setting::Guest => "--guest",
            Setting::Memory => "--memory",
            Setting::Accel => "--accel",
        }
    }
}

/// A setting that cannot work, with what to do instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{} {value}: {problem}; {fix}", setting.field())]
pub struct ConfigError {
    /// Which setting.
    pub setting: Setting,
    /// Its value, as given.
    pub value: String,
    /// What is wrong with it, and why.
    pub problem: String,
    /// What to do.
    pub fix: String,
}

impl ConfigError {
    /// The message with the command-line option's name (`--memory 1: ...`).
    pub fn for_cli(&self) -> String {
        format!("{} {}: {}; {}", self.setting.flag(), self.value, self.problem, self.fix)
    }
}
