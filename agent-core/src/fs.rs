//! The filesystem the agent serves: the [`Filesystem`] trait, its
//! metadata and errors.
//!
//! Paths handed to a `Filesystem` are normalized by the agent (see
//! [`path`](crate::path)): absolute, canonical, within the limits. Times are
//! the agent's monotonic nanoseconds since power-on; the agent turns them
//! into Unix seconds once the host has set the wall clock.

use core::fmt;

/// What a filesystem entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EntryKind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link.
    Symlink,
    /// Anything else (device, socket, fifo).
    Other,
}

/// `st_mode` type bits.
pub mod mode {
    /// Mask of the type bits.
    pub const TYPE_MASK: u32 = 0o170_000;
    /// Regular file.
    pub const FILE: u32 = 0o100_000;
    /// Directory.
    pub const DIR: u32 = 0o040_000;
    /// Symbolic link.
    pub const SYMLINK: u32 = 0o120_000;
    /// Permission bits (with setuid, setgid, sticky).
    pub const PERMISSIONS: u32 = 0o7777;
    /// A new file's permissions (0o666 under the usual umask 0o022).
    pub const DEFAULT_FILE: u32 = 0o644;
    /// A new directory's permissions (0o777 under the usual umask 0o022).
    pub const DEFAULT_DIR: u32 = 0o755;
}

/// When an entry was last modified.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mtime {
    /// Unknown.
    Unknown,
    /// Monotonic nanoseconds since power-on (the agent converts it to wall
    /// time once the wall clock is known).
    Monotonic(u64),
    /// Unix seconds.
    Unix(i64),
}

/// Metadata of one entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Metadata {
    /// What the entry is.
    pub kind: EntryKind,
    /// Size in bytes (content length for files).
    pub size: u64,
    /// The full `st_mode`, type bits included.
    pub mode: u32,
    /// Last modification.
    pub modified: Mtime,
}

/// Why a filesystem operation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FsError {
    /// No entry at that path.
    NotFound,
    /// A path component, or the target, is not a directory.
    NotADirectory,
    /// The target is a directory.
    IsADirectory,
    /// The target already exists and is not what the operation needs.
    AlreadyExists,
    /// The directory still has entries.
    DirectoryNotEmpty,
    /// The content store is full.
    NoSpace,
    /// The entry table is full.
    TooManyEntries,
    /// A path component is longer than [`MAX_NAME_LEN`](crate::path::MAX_NAME_LEN).
    NameTooLong,
    /// The path is longer than [`MAX_PATH_LEN`](crate::path::MAX_PATH_LEN).
    PathTooLong,
    /// The path cannot name an entry (e.g. it contains NUL).
    InvalidPath,
    /// The operation makes no sense for these paths (e.g. moving a
    /// directory into itself).
    InvalidArgument,
    /// The entry is in use and cannot be removed (the root).
    Busy,
    /// Any other failure of the underlying store.
    Io,
}

impl FsError {
    /// A short description, e.g. `"not found"`.
    pub const fn as_str(self) -> &'static str {
        match self {
            FsError::NotFound => "not found",
            FsError::NotADirectory => "not a directory",
            FsError::IsADirectory => "is a directory",
            FsError::AlreadyExists => "already exists",
            FsError::DirectoryNotEmpty => "directory not empty",
            FsError::NoSpace => "no space left on device",
            FsError::TooManyEntries => "no space left for entries",
            FsError::NameTooLong => "file name too long",
            FsError::PathTooLong => "path too long",
            FsError::InvalidPath => "invalid path",
            FsError::InvalidArgument => "invalid argument",
            FsError::Busy => "resource busy",
            FsError::Io => "input/output error",
        }
    }
}

impl fmt::Display for FsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A filesystem the agent can serve.
///
/// Semantics follow the reference agent (which calls Linux through
/// `std::fs`): `mkdir` creates parents and is idempotent, `remove_dir` is
/// recursive, `copy` copies a file's content and permissions, `rename`
/// replaces a file or an empty directory, `stat` does not follow a final
/// symlink. `copy`, `rename` and `commit_write` create the destination's
/// missing parents first (as `mkdir` would), even when they then fail.
///
/// Writes are staged: `begin_write` starts an invisible new content,
/// `write` appends to it, and only `commit_write` makes it the file's
/// content (atomically replacing the old one). `abort_write` drops it and
/// leaves the file as it was.
///
/// Reads are snapshots: content is fixed at `open_read` even if the file
/// is replaced or removed before the read ends.
pub trait Filesystem {
    /// A read in progress.
    type Reader;
    /// A write in progress.
    type Writer;

    /// Metadata of `path`, not following a final symlink.
    fn stat(&mut self, path: &str) -> Result<Metadata, FsError>;
    /// Calls `visit(name, metadata)` for each direct child of directory `path`.
    fn list(&mut self, path: &str, visit: &mut dyn FnMut(&str, &Metadata)) -> Result<(), FsError>;
    /// Creates directory `path` and its missing parents; succeeds if it exists.
    fn mkdir(&mut self, path: &str, now_ns: u64) -> Result<(), FsError>;
    /// Removes the file (or symlink) `path`.
    fn remove(&mut self, path: &str, now_ns: u64) -> Result<(), FsError>;
    /// Removes directory `path` and everything below it.
    fn remove_dir(&mut self, path: &str, now_ns: u64) -> Result<(), FsError>;
    /// Copies file `src` to `dst` (replacing a file there), with its
    /// permissions, after creating `dst`'s missing parents.
    fn copy(&mut self, src: &str, dst: &str, now_ns: u64) -> Result<(), FsError>;
    /// Moves `src` to `dst`, after creating `dst`'s missing parents.
    fn rename(&mut self, src: &str, dst: &str, now_ns: u64) -> Result<(), FsError>;
    /// Opens file `path` for reading; returns the reader and the size.
    fn open_read(&mut self, path: &str) -> Result<(Self::Reader, u64), FsError>;
    /// The next contiguous bytes at `offset` (at most `max`, at least one
    /// while `offset` is below the size).
    fn read_at(&mut self, reader: &mut Self::Reader, offset: u64, max: usize) -> Result<&[u8], FsError>;
    /// Ends a read.
    fn close_read(&mut self, reader: Self::Reader);
    /// Starts a write that will replace file `path`. Fails early for what
    /// can be known now (the target is a directory, a parent is a file).
    fn begin_write(&mut self, path: &str) -> Result<Self::Writer, FsError>;
    /// Appends to a staged write.
    fn write(&mut self, writer: &mut Self::Writer, data: &[u8]) -> Result<(), FsError>;
    /// Makes a staged write the file's content, creating missing parent
    /// directories and the file (with `mode`, or [`mode::DEFAULT_FILE`]),
    /// or replacing its content (and permissions when `mode` is given).
    /// On failure the staged content is dropped and the file is unchanged.
    fn commit_write(&mut self, writer: Self::Writer, mode: Option<u32>, now_ns: u64) -> Result<(), FsError>;
    /// Drops a staged write.
    fn abort_write(&mut self, writer: Self::Writer);
}
