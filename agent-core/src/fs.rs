//! The filesystem the agent serves: the [`Filesystem`] trait, its
//! metadata, options and errors.
//!
//! # Paths
//!
//! Paths are taken as sent and resolved component by component, as the
//! Linux kernel does (`path_lookupat`): a relative path starts at `/` (the
//! reference agent's working directory), `.` and `..` are looked up in the
//! directory reached so far (`..` of `/` is `/`), a symlink met in the
//! middle of a path is followed (at most [`MAX_SYMLINK_FOLLOWS`] in one
//! resolution, then [`FsError::Loop`]), and a trailing `/` asks for a
//! directory (a file there is [`FsError::NotADirectory`]) and follows a
//! final symlink. Whether a final symlink is followed otherwise is the
//! operation's business, as in the corresponding syscall.
//!
//! # Times
//!
//! Operations get `now_ns`, the agent's monotonic nanoseconds since
//! power-on. Once [`Filesystem::set_wall_clock`] has been called, a change
//! is stamped with the Unix time it happens at, and the stamp never moves
//! again: a later clock sync only dates later changes. Changes made before
//! the first sync are dated by that first sync, once. Times are reported
//! in whole seconds, as the reference reports them.

use core::fmt;

pub use crate::error::{FsError, errno};

/// The most symlinks followed while resolving one path (Linux `MAXSYMLINKS`);
/// one more is [`FsError::Loop`].
pub const MAX_SYMLINK_FOLLOWS: u32 = 40;

/// The process umask the reference agent runs with: new files get
/// `0o666 & !UMASK` (or the requested mode without these bits), new
/// directories `0o777 & !UMASK`.
pub const UMASK: u32 = 0o022;

/// What a filesystem entry is: the protocol's kind, of which this
/// filesystem never makes an unknown one.
pub type EntryKind = wire::EntryKind<core::convert::Infallible>;

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
    /// A symlink's permissions (always 0o777 on Linux).
    pub const SYMLINK_PERMISSIONS: u32 = 0o777;
}

/// A point in time of an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mtime {
    /// Unknown.
    Unknown,
    /// Monotonic nanoseconds since power-on, for a change made before the
    /// wall clock was known.
    Monotonic(u64),
    /// Unix seconds.
    Unix(i64),
}

/// Metadata of one entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Metadata {
    /// What the entry is.
    pub kind: EntryKind,
    /// Size in bytes: a file's content length, a symlink's target length,
    /// a directory's size as the filesystem reports it.
    pub size: u64,
    /// The full `st_mode`, type bits included.
    pub mode: u32,
    /// Last modification of the content (`st_mtime`).
    pub modified: Mtime,
    /// Last access (`st_atime`).
    pub accessed: Mtime,
    /// Last change of the entry itself (`st_ctime`).
    pub changed: Mtime,
    /// Owner user id.
    pub uid: u32,
    /// Owner group id.
    pub gid: u32,
}

/// Who owns what an operation creates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Owner {
    /// User id.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
}

impl Owner {
    /// `root:root`, the reference agent's identity when no user is named.
    pub const ROOT: Owner = Owner { uid: 0, gid: 0 };
}

/// What `copy` and `rename` do about a destination whose parent directory
/// is missing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MissingParents {
    /// Create them first, as `mkdir -p` would (the seed-era reference). A
    /// failed operation leaves none of them behind.
    Create,
    /// Fail with [`FsError::NotFound`], as `std::fs::copy` and
    /// `std::fs::rename` do (the current reference).
    Fail,
}

/// How to open a file, as `std::fs::OpenOptions` (plus the mode given to
/// `OpenOptionsExt::mode`, and the owner of a file it creates).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OpenOptions {
    /// Open for reading.
    pub read: bool,
    /// Open for writing.
    pub write: bool,
    /// Every write goes to the end of the file (implies writing).
    pub append: bool,
    /// Create the file if it is missing.
    pub create: bool,
    /// Truncate the file to zero length once opened.
    pub truncate: bool,
    /// Create the file; fail if anything exists at the path.
    pub create_new: bool,
    /// A created file's permissions before the umask (`0o666` if `None`).
    pub mode: Option<u32>,
    /// A created file's owner (`None`: root).
    pub owner: Option<Owner>,
}

/// Attributes to change (`FsSetAttrs`): each `None` is left alone. They are
/// applied in this order, stopping at the first failure (the earlier ones
/// stay applied), as the reference does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SetAttrs {
    /// New length: truncate, or extend with zeros.
    pub size: Option<u64>,
    /// New permission bits.
    pub mode: Option<u32>,
    /// New owner user id.
    pub uid: Option<u32>,
    /// New owner group id.
    pub gid: Option<u32>,
    /// New access time, Unix seconds.
    pub atime: Option<i64>,
    /// New modification time, Unix seconds.
    pub mtime: Option<i64>,
}

/// The step of a set-attrs operation that failed: its [`AttrStep::prefix`]
/// is what the reference puts before the error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AttrStep {
    /// Opening the path for writing before a truncation.
    OpenForTruncate,
    /// The truncation or extension.
    SetLen,
    /// Looking at the entry before a chmod that must not follow a symlink.
    LstatBeforeChmod,
    /// The chmod.
    Chmod,
    /// The chown (of a path).
    Chown,
    /// The chown (of an open file).
    Fchown,
    /// Looking at the entry before setting its times (a path).
    StatBeforeUtimensat,
    /// Setting the times (of a path).
    Utimensat,
    /// Setting the times (of an open file).
    Futimens,
}

impl AttrStep {
    /// The reference's name of the step, e.g. `"chmod"`.
    pub const fn prefix(self) -> &'static str {
        match self {
            AttrStep::OpenForTruncate => "open for truncate",
            AttrStep::SetLen => "set_len",
            AttrStep::LstatBeforeChmod => "lstat before chmod",
            AttrStep::Chmod => "chmod",
            AttrStep::Chown => "chown",
            AttrStep::Fchown => "fchown",
            AttrStep::StatBeforeUtimensat => "stat before utimensat",
            AttrStep::Utimensat => "utimensat",
            AttrStep::Futimens => "futimens",
        }
    }
}

/// A failed set-attrs: which step, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AttrError {
    /// The step that failed.
    pub step: AttrStep,
    /// Why.
    pub error: FsError,
}

impl fmt::Display for AttrError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.error {
            // The reference's own message, without a step prefix.
            FsError::SymlinkChmod => fmt::Display::fmt(&self.error, f),
            e => write!(f, "{}: {e}", self.step.prefix()),
        }
    }
}

/// A filesystem the agent can serve.
///
/// Paths are resolved as the module docs describe. Two surfaces share it:
///
/// **Seed-era, path-based** (`stat` .. `abort_write`): `mkdir` creates
/// parents and is idempotent, `remove_dir` is recursive, `copy` copies a
/// file's content and permissions, `rename` replaces a file or an empty
/// directory, `stat` does not follow a final symlink; `copy`, `rename` and
/// `commit_write` create the destination's missing parents. Writes are
/// staged: `begin_write` starts an invisible new content, `write` appends
/// to it, and only `commit_write` makes it the file's content (atomically
/// replacing the old one); `abort_write` drops it. Reads are snapshots:
/// content is fixed at `open_read` even if the file is replaced or removed
/// before the read ends.
///
/// **Current** (`stat_at` .. `close_dir`): the calls the reference makes
/// on Linux `std::fs`, with their semantics, and open files whose writes
/// are visible to every later read at once (POSIX), while a path read
/// keeps its snapshot.
pub trait Filesystem {
    /// A read in progress.
    type Reader;
    /// A write in progress.
    type Writer;
    /// An open file (`OpenFile`).
    type File;
    /// An open directory (`OpenDir`).
    type Dir;

    /// Metadata of `path`, not following a final symlink.
    fn stat(&mut self, path: &str) -> Result<Metadata, FsError>;
    /// Calls `visit(name, metadata)` for each direct child of directory
    /// `path` (metadata not following symlinks).
    fn list(&mut self, path: &str, visit: &mut dyn FnMut(&str, &Metadata)) -> Result<(), FsError>;
    /// Creates directory `path` and its missing parents; succeeds if it
    /// exists (`std::fs::create_dir_all`).
    fn mkdir(&mut self, path: &str, now_ns: u64) -> Result<(), FsError>;
    /// Removes the file (or symlink) `path` (`std::fs::remove_file`).
    fn remove(&mut self, path: &str, now_ns: u64) -> Result<(), FsError>;
    /// Removes directory `path` and everything below it (`std::fs::remove_dir_all`).
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

    /// The host's wall clock: Unix nanoseconds `unix_ns` at monotonic
    /// `now_ns` (`core.clock.sync`). Changes are dated with it from now on;
    /// existing dates do not move (those made before the first call are
    /// dated by it, once).
    fn set_wall_clock(&mut self, now_ns: u64, unix_ns: i64);
    /// Metadata of `path`, following a final symlink if `follow`
    /// (`std::fs::metadata` / `symlink_metadata`).
    fn stat_at(&mut self, path: &str, follow: bool) -> Result<Metadata, FsError>;
    /// The target of symlink `path`, written to `out` (`std::fs::read_link`).
    fn read_link(&mut self, path: &str, out: &mut crate::path::PathBuf) -> Result<(), FsError>;
    /// The absolute path of `path` with every symlink, `.` and `..`
    /// resolved, written to `out` (`std::fs::canonicalize`).
    fn canonicalize(&mut self, path: &str, out: &mut crate::path::PathBuf) -> Result<(), FsError>;
    /// Creates symlink `link` pointing at `target` (`std::os::unix::fs::symlink`).
    fn symlink(&mut self, target: &str, link: &str, owner: Owner, now_ns: u64) -> Result<(), FsError>;
    /// `std::fs::create_dir_all(path)`, then, with `mode`, a chmod of
    /// `path` (the reference's `Mkdir{path, mode}`). Directories it
    /// creates belong to `owner`. (A caller that must tell a failed chmod
    /// apart, as the reference's error text does, passes no `mode` and
    /// follows with [`Filesystem::set_attrs`].)
    fn create_dir_all(&mut self, path: &str, mode: Option<u32>, owner: Owner, now_ns: u64) -> Result<(), FsError>;
    /// `std::fs::remove_dir` (empty only) or, with `recursive`,
    /// `std::fs::remove_dir_all`.
    fn remove_dir_at(&mut self, path: &str, recursive: bool, now_ns: u64) -> Result<(), FsError>;
    /// `std::fs::copy(src, dst)`; with [`MissingParents::Create`], `dst`'s
    /// missing parents are made first (and removed again on failure).
    fn copy_at(&mut self, src: &str, dst: &str, parents: MissingParents, now_ns: u64) -> Result<(), FsError>;
    /// `std::fs::rename(src, dst)`; with [`MissingParents::Create`],
    /// `dst`'s missing parents are made first (and removed again on failure).
    fn rename_at(&mut self, src: &str, dst: &str, parents: MissingParents, now_ns: u64) -> Result<(), FsError>;
    /// Changes attributes of `path` as the reference's `SetStat` does
    /// (following a final symlink if `follow`; a size change always
    /// follows).
    fn set_attrs(&mut self, path: &str, follow: bool, attrs: &SetAttrs, now_ns: u64) -> Result<(), AttrError>;
    /// Opens `path` as `std::fs::OpenOptions::open` does.
    fn open(&mut self, path: &str, options: &OpenOptions, now_ns: u64) -> Result<Self::File, FsError>;
    /// Reads the file's current content at `offset`: the next contiguous
    /// bytes (at most `max`; none at or past the end).
    fn file_read(&mut self, file: &mut Self::File, offset: u64, max: usize, now_ns: u64) -> Result<&[u8], FsError>;
    /// Writes `data` at `offset` (at the end for an append file), extending
    /// the file with zeros if `offset` is past its end; visible to every
    /// read from then on. Returns the offset after the written bytes.
    fn file_write(&mut self, file: &mut Self::File, offset: u64, data: &[u8], now_ns: u64) -> Result<u64, FsError>;
    /// Metadata of an open file (`fstat`).
    fn file_stat(&mut self, file: &Self::File) -> Metadata;
    /// Truncates or zero-extends an open file (`File::set_len`).
    fn file_set_len(&mut self, file: &mut Self::File, size: u64, now_ns: u64) -> Result<(), FsError>;
    /// Changes attributes of an open file as the reference's `FSetStat` does.
    fn file_set_attrs(&mut self, file: &mut Self::File, attrs: &SetAttrs, now_ns: u64) -> Result<(), AttrError>;
    /// Closes an open file.
    fn close(&mut self, file: Self::File);
    /// Opens directory `path` for [`Filesystem::read_dir`] (`std::fs::read_dir`).
    fn open_dir(&mut self, path: &str) -> Result<Self::Dir, FsError>;
    /// Calls `visit(name, metadata)` for up to `limit` entries not yet
    /// returned (never `.` or `..`; metadata not following symlinks) and
    /// returns how many; 0 at the end. An entry added or removed meanwhile
    /// may or may not be returned, none is returned twice (POSIX `readdir`).
    fn read_dir(
        &mut self,
        dir: &mut Self::Dir,
        limit: usize,
        visit: &mut dyn FnMut(&str, &Metadata),
    ) -> Result<usize, FsError>;
    /// Metadata of an open directory.
    fn dir_stat(&mut self, dir: &Self::Dir) -> Metadata;
    /// Closes an open directory.
    fn close_dir(&mut self, dir: Self::Dir);
}

/// The reference's `RealPath`: [`Filesystem::canonicalize`] of `path`, or,
/// if that fails, the canonical form of its parent joined with its final
/// name (a path that does not exist yet), as Rust's `Path::parent` and
/// `Path::file_name` split it. Fails with the first error when the parent
/// cannot be resolved either.
pub fn real_path<F: Filesystem + ?Sized>(
    fs: &mut F,
    path: &str,
    out: &mut crate::path::PathBuf,
) -> Result<(), FsError> {
    let error = match fs.canonicalize(path, out) {
        Ok(()) => return Ok(()),
        Err(e) => e,
    };
    let parent = crate::path::std_parent(path).ok_or(error)?;
    fs.canonicalize(parent, out).map_err(|_| error)?;
    if let Some(name) = crate::path::std_file_name(path) {
        if !out.ends_with('/') {
            out.push('/').map_err(|_| FsError::PathTooLong)?;
        }
        out.push_str(name).map_err(|_| FsError::PathTooLong)?;
    }
    Ok(())
}
