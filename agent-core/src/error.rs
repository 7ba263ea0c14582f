//! Why a filesystem operation fails: [`FsError`] and the Linux [`errno`]
//! values it maps to. A leaf module: paths, the filesystem trait and the
//! ramfs all report these.

use core::fmt;

/// Linux errno values the filesystem reports.
pub mod errno {
    /// Operation not permitted.
    pub const EPERM: i32 = 1;
    /// No such file or directory.
    pub const ENOENT: i32 = 2;
    /// Input/output error.
    pub const EIO: i32 = 5;
    /// Bad file descriptor.
    pub const EBADF: i32 = 9;
    /// Device or resource busy.
    pub const EBUSY: i32 = 16;
    /// File exists.
    pub const EEXIST: i32 = 17;
    /// Not a directory.
    pub const ENOTDIR: i32 = 20;
    /// Is a directory.
    pub const EISDIR: i32 = 21;
    /// Invalid argument.
    pub const EINVAL: i32 = 22;
    /// Too many open files in system.
    pub const ENFILE: i32 = 23;
    /// File too large.
    pub const EFBIG: i32 = 27;
    /// No space left on device.
    pub const ENOSPC: i32 = 28;
    /// File name too long.
    pub const ENAMETOOLONG: i32 = 36;
    /// Directory not empty.
    pub const ENOTEMPTY: i32 = 39;
    /// Too many levels of symbolic links.
    pub const ELOOP: i32 = 40;
    /// Operation not supported.
    pub const EOPNOTSUPP: i32 = 95;
}

/// Why a filesystem operation failed.
///
/// [`Display`](fmt::Display) prints it as Rust's `std::io::Error` prints
/// the Linux error (`No such file or directory (os error 2)`), so the
/// agent can put the reference's op name in front.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FsError {
    /// No entry at that path (`ENOENT`).
    NotFound,
    /// A path component, or the target, is not a directory (`ENOTDIR`).
    NotADirectory,
    /// The target is a directory (`EISDIR`).
    IsADirectory,
    /// The target already exists and is not what the operation needs (`EEXIST`).
    AlreadyExists,
    /// The directory still has entries (`ENOTEMPTY`).
    DirectoryNotEmpty,
    /// The content store is full (`ENOSPC`).
    NoSpace,
    /// The entry table is full (`ENOSPC`, as tmpfs out of inodes).
    TooManyEntries,
    /// A path component is longer than [`MAX_NAME_LEN`](crate::path::MAX_NAME_LEN) (`ENAMETOOLONG`).
    NameTooLong,
    /// The path is longer than [`MAX_PATH_LEN`](crate::path::MAX_PATH_LEN) (`ENAMETOOLONG`).
    PathTooLong,
    /// The path contains a NUL byte (Rust's `InvalidInput` error).
    InvalidPath,
    /// The operation makes no sense for these paths or values (`EINVAL`).
    InvalidArgument,
    /// The entry is in use and cannot be removed or replaced (`EBUSY`).
    Busy,
    /// Any other failure of the underlying store (`EIO`).
    Io,
    /// More than [`MAX_SYMLINK_FOLLOWS`](crate::MAX_SYMLINK_FOLLOWS) symlinks in one resolution (`ELOOP`).
    Loop,
    /// The open file does not allow this (`EBADF`).
    BadHandle,
    /// Too many files open at once (`ENFILE`).
    TooManyOpen,
    /// The offset or length is beyond the largest file (`EFBIG`).
    FileTooLarge,
    /// Not allowed (`EPERM`).
    NotPermitted,
    /// Not supported (`EOPNOTSUPP`).
    Unsupported,
    /// A copy's source is not a regular file (Rust's `InvalidInput` error
    /// from `std::fs::copy`).
    NotRegularFile,
    /// A chmod that must not follow a symlink met one (the reference's
    /// own error).
    SymlinkChmod,
}

impl FsError {
    /// A short description, e.g. `"not found"` (the seed-era agent's text).
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
            FsError::Loop => "too many levels of symbolic links",
            FsError::BadHandle => "bad file descriptor",
            FsError::TooManyOpen => "too many open files",
            FsError::FileTooLarge => "file too large",
            FsError::NotPermitted => "operation not permitted",
            FsError::Unsupported => "operation not supported",
            FsError::NotRegularFile => "not a regular file",
            FsError::SymlinkChmod => "chmod on a symlink",
        }
    }

    /// The Linux errno, as `std::io::Error::raw_os_error` gives it; `None`
    /// for the errors Rust makes itself.
    pub const fn raw_os_error(self) -> Option<i32> {
        Some(match self {
            FsError::NotFound => errno::ENOENT,
            FsError::NotADirectory => errno::ENOTDIR,
            FsError::IsADirectory => errno::EISDIR,
            FsError::AlreadyExists => errno::EEXIST,
            FsError::DirectoryNotEmpty => errno::ENOTEMPTY,
            FsError::NoSpace | FsError::TooManyEntries => errno::ENOSPC,
            FsError::NameTooLong | FsError::PathTooLong => errno::ENAMETOOLONG,
            FsError::InvalidArgument => errno::EINVAL,
            FsError::Busy => errno::EBUSY,
            FsError::Io => errno::EIO,
            FsError::Loop => errno::ELOOP,
            FsError::BadHandle => errno::EBADF,
            FsError::TooManyOpen => errno::ENFILE,
            FsError::FileTooLarge => errno::EFBIG,
            FsError::NotPermitted => errno::EPERM,
            FsError::Unsupported => errno::EOPNOTSUPP,
            FsError::InvalidPath | FsError::NotRegularFile | FsError::SymlinkChmod => return None,
        })
    }

    /// The errno for a caller that needs one: [`FsError::raw_os_error`],
    /// or `EINVAL` for the errors Rust makes itself.
    pub const fn errno(self) -> i32 {
        match self.raw_os_error() {
            Some(e) => e,
            None => errno::EINVAL,
        }
    }

    /// The error for a Linux errno, if it is one this filesystem reports.
    pub const fn from_errno(errno: i32) -> Option<FsError> {
        Some(match errno {
            errno::ENOENT => FsError::NotFound,
            errno::ENOTDIR => FsError::NotADirectory,
            errno::EISDIR => FsError::IsADirectory,
            errno::EEXIST => FsError::AlreadyExists,
            errno::ENOTEMPTY => FsError::DirectoryNotEmpty,
            errno::ENOSPC => FsError::NoSpace,
            errno::ENAMETOOLONG => FsError::NameTooLong,
            errno::EINVAL => FsError::InvalidArgument,
            errno::EBUSY => FsError::Busy,
            errno::EIO => FsError::Io,
            errno::ELOOP => FsError::Loop,
            errno::EBADF => FsError::BadHandle,
            errno::ENFILE => FsError::TooManyOpen,
            errno::EFBIG => FsError::FileTooLarge,
            errno::EPERM => FsError::NotPermitted,
            errno::EOPNOTSUPP => FsError::Unsupported,
            _ => return None,
        })
    }

    /// The C library's text for an errno (glibc `strerror`), or the whole
    /// message of an error Rust makes itself.
    pub const fn description(self) -> &'static str {
        match self {
            FsError::NotFound => "No such file or directory",
            FsError::NotADirectory => "Not a directory",
            FsError::IsADirectory => "Is a directory",
            FsError::AlreadyExists => "File exists",
            FsError::DirectoryNotEmpty => "Directory not empty",
            FsError::NoSpace | FsError::TooManyEntries => "No space left on device",
            FsError::NameTooLong | FsError::PathTooLong => "File name too long",
            FsError::InvalidArgument => "Invalid argument",
            FsError::Busy => "Device or resource busy",
            FsError::Io => "Input/output error",
            FsError::Loop => "Too many levels of symbolic links",
            FsError::BadHandle => "Bad file descriptor",
            FsError::TooManyOpen => "Too many open files in system",
            FsError::FileTooLarge => "File too large",
            FsError::NotPermitted => "Operation not permitted",
            FsError::Unsupported => "Operation not supported",
            FsError::InvalidPath => "file name contained an unexpected NUL byte",
            FsError::NotRegularFile => "the source path is neither a regular file nor a symlink to a regular file",
            FsError::SymlinkChmod => "chmod on symlink without following is not supported",
        }
    }
}

/// As Rust's `std::io::Error` prints it: `"{strerror} (os error {errno})"`,
/// or the bare message of an error Rust makes itself.
impl fmt::Display for FsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.raw_os_error() {
            Some(code) => write!(f, "{} (os error {code})", self.description()),
            None => f.write_str(self.description()),
        }
    }
}
