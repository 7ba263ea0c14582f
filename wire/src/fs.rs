//! Payloads of the `core.fs.*` messages: requests, streamed data and
//! responses.

use core::fmt;

use minicbor::encode::Write;

use crate::cbor::{EncodeResult, Encoder, Put, Reader, Remaining, Res, key};
use crate::control::{decode_with, require};
use crate::error::{Error, ErrorKind, Layer};
use crate::message::MessageType;
use crate::{DecodePayload, Payload};

/// The largest `core.fs.data` payload in bytes: 3 MiB, which keeps a full
/// data frame (header, envelope, CBOR heads) under [`MAX_FRAME`](crate::MAX_FRAME).
pub const FS_CHUNK_SIZE: usize = 3 * 1024 * 1024;

/// `core.fs.request`: opens a filesystem session on a fresh id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FsRequest<'a> {
    /// The operation.
    pub op: FsOp<'a>,
    /// A generation-8 raw-bulk offer (the key is omitted when `None`).
    pub bulk: Option<BulkOffer>,
}

impl<'a> FsRequest<'a> {
    /// A request without a bulk offer.
    pub const fn new(op: FsOp<'a>) -> Self {
        FsRequest { op, bulk: None }
    }
}

/// A generation-8 raw-bulk offer on an opening request
/// (`{format, max_record_payload, guest_to_host_credit_limit}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BulkOffer {
    /// Bulk record format (generation 8 defines `1`).
    pub format: u8,
    /// Largest payload the host accepts in one raw record.
    pub max_record_payload: u32,
    /// Initial absolute guest-to-host exclusive send limit.
    pub guest_to_host_credit_limit: u64,
}

impl BulkOffer {
    const FIELDS: [&'static str; 3] = ["format", "max_record_payload", "guest_to_host_credit_limit"];

    fn read(r: &mut Reader<'_>) -> Res<Self> {
        let mut out = BulkOffer { format: 0, max_record_payload: 0, guest_to_host_credit_limit: 0 };
        let seen = r.record("BulkOffer", &Self::FIELDS, |r, i| {
            match i {
                0 => out.format = r.u8("BulkOffer.format")?,
                1 => out.max_record_payload = r.u32("BulkOffer.max_record_payload")?,
                _ => out.guest_to_host_credit_limit = r.u64("BulkOffer.guest_to_host_credit_limit")?,
            }
            Ok(())
        })?;
        require(r, seen, &Self::FIELDS, 0b111)?;
        Ok(out)
    }

    fn encode<W: Write>(&self, e: &mut Encoder<W>) -> EncodeResult<W> {
        e.map(3)?;
        e.raw(key!("format"))?.u8(self.format)?;
        e.raw(key!("max_record_payload"))?.u32(self.max_record_payload)?;
        e.raw(key!("guest_to_host_credit_limit"))?.u64(self.guest_to_host_credit_limit)?;
        Ok(())
    }
}

/// Attributes to change (`SetStat`, `FSetStat`); `None` leaves one as it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FsSetAttrs {
    /// Permission bits.
    pub mode: Option<u32>,
    /// Owner user id.
    pub uid: Option<u32>,
    /// Owner group id.
    pub gid: Option<u32>,
    /// New size (truncate or zero-extend).
    pub size: Option<u64>,
    /// Access time, Unix seconds.
    pub atime: Option<i64>,
    /// Modification time, Unix seconds.
    pub mtime: Option<i64>,
}

impl FsSetAttrs {
    const FIELDS: [&'static str; 6] = ["mode", "uid", "gid", "size", "atime", "mtime"];

    fn read(r: &mut Reader<'_>) -> Res<Self> {
        let mut out = FsSetAttrs::default();
        r.record("FsSetAttrs", &Self::FIELDS, |r, i| {
            match i {
                0 => out.mode = opt_u32(r, "FsSetAttrs.mode")?,
                1 => out.uid = opt_u32(r, "FsSetAttrs.uid")?,
                2 => out.gid = opt_u32(r, "FsSetAttrs.gid")?,
                3 => out.size = opt_u64(r, "FsSetAttrs.size")?,
                4 => out.atime = opt_i64(r, "FsSetAttrs.atime")?,
                _ => out.mtime = opt_i64(r, "FsSetAttrs.mtime")?,
            }
            Ok(())
        })?;
        Ok(out)
    }

    fn encode<W: Write>(&self, e: &mut Encoder<W>) -> EncodeResult<W> {
        e.map(6)?;
        e.raw(key!("mode"))?;
        put_u32(e, self.mode)?;
        e.raw(key!("uid"))?;
        put_u32(e, self.uid)?;
        e.raw(key!("gid"))?;
        put_u32(e, self.gid)?;
        e.raw(key!("size"))?;
        put_u64(e, self.size)?;
        e.raw(key!("atime"))?;
        put_i64(e, self.atime)?;
        e.raw(key!("mtime"))?;
        put_i64(e, self.mtime)?;
        Ok(())
    }
}

/// How `OpenFile` opens a file (Rust's `OpenOptions`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FsOpenOptions<'a> {
    /// Open for reading.
    pub read: bool,
    /// Open for writing.
    pub write: bool,
    /// Every write goes to the end.
    pub append: bool,
    /// Create the file if it is missing.
    pub create: bool,
    /// Truncate the file when it opens.
    pub truncate: bool,
    /// Create the file, failing if it exists.
    pub create_new: bool,
    /// Permission bits for a created file.
    pub mode: Option<u32>,
    /// Guest user (`user[:group]`) to open as; `None` is root.
    pub user: Option<&'a str>,
}

impl<'a> FsOpenOptions<'a> {
    const FIELDS: [&'static str; 8] = ["read", "write", "append", "create", "truncate", "create_new", "mode", "user"];

    fn read(r: &mut Reader<'a>) -> Res<Self> {
        const F: &str = "FsOpenOptions";
        let mut out = FsOpenOptions::default();
        let seen = r.record(F, &Self::FIELDS, |r, i| {
            match i {
                0 => out.read = r.bool("FsOpenOptions.read")?,
                1 => out.write = r.bool("FsOpenOptions.write")?,
                2 => out.append = r.bool("FsOpenOptions.append")?,
                3 => out.create = r.bool("FsOpenOptions.create")?,
                4 => out.truncate = r.bool("FsOpenOptions.truncate")?,
                5 => out.create_new = r.bool("FsOpenOptions.create_new")?,
                6 => out.mode = opt_u32(r, "FsOpenOptions.mode")?,
                _ => out.user = opt_str(r, "FsOpenOptions.user")?,
            }
            Ok(())
        })?;
        require(r, seen, &Self::FIELDS, 0b0011_1111)?;
        Ok(out)
    }

    fn encode<W: Write>(&self, e: &mut Encoder<W>) -> EncodeResult<W> {
        e.map(8)?;
        e.raw(key!("read"))?.bool(self.read)?;
        e.raw(key!("write"))?.bool(self.write)?;
        e.raw(key!("append"))?.bool(self.append)?;
        e.raw(key!("create"))?.bool(self.create)?;
        e.raw(key!("truncate"))?.bool(self.truncate)?;
        e.raw(key!("create_new"))?.bool(self.create_new)?;
        e.raw(key!("mode"))?;
        put_u32(e, self.mode)?;
        e.raw(key!("user"))?;
        put_str(e, self.user)?;
        Ok(())
    }
}

/// A filesystem operation (externally tagged: `{"Stat": {"path": "/a"}}`).
///
/// Variants of both dialects live here; see the [crate docs](crate#two-dialects-in-one-set-of-types)
/// for which shape each one has on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsOp<'a> {
    /// The canonical absolute path (symlinks resolved). Current.
    RealPath {
        /// Path to resolve.
        path: &'a str,
    },
    /// Metadata of a path. Seed shape (`None`): does not follow a final
    /// symlink. Current shape (`Some`): follows it when `true`.
    Stat {
        /// Absolute path.
        path: &'a str,
        /// Whether to follow a final symlink (the key is absent when `None`).
        follow_symlink: Option<bool>,
    },
    /// Change metadata of a path. Current.
    SetStat {
        /// Path to change.
        path: &'a str,
        /// Whether to follow a final symlink.
        follow_symlink: bool,
        /// What to change.
        attrs: FsSetAttrs,
    },
    /// The direct children of a directory, with full paths. Both dialects.
    List {
        /// Absolute path of the directory.
        path: &'a str,
    },
    /// A symlink's target. Current.
    ReadLink {
        /// Path of the symlink.
        path: &'a str,
    },
    /// Create a symlink. Current.
    Symlink {
        /// What the link points at (stored as given).
        target: &'a str,
        /// Where the link is created.
        link_path: &'a str,
        /// Guest user to create it as; `None` is root.
        user: Option<&'a str>,
    },
    /// Seed shape: stream a file's content as `core.fs.data` chunks.
    Read {
        /// Absolute path of the file.
        path: &'a str,
    },
    /// Seed shape: replace a file with the `core.fs.data` chunks that follow.
    Write {
        /// Absolute path of the file.
        path: &'a str,
        /// Permission bits to apply, if any.
        mode: Option<u32>,
    },
    /// Seed shape: create a directory and its missing parents (idempotent).
    Mkdir {
        /// Absolute path of the directory.
        path: &'a str,
    },
    /// Current shape of `Mkdir`: a directory and its missing parents.
    MkdirWith {
        /// Absolute path of the directory.
        path: &'a str,
        /// Permission bits for the created directories.
        mode: Option<u32>,
        /// Guest user to create them as; `None` is root.
        user: Option<&'a str>,
    },
    /// Remove a file (or symlink). Both dialects.
    Remove {
        /// Absolute path.
        path: &'a str,
    },
    /// Remove a directory. Seed shape (`None`): recursively. Current shape
    /// (`Some`): recursively only when `true`, else only if empty.
    RemoveDir {
        /// Absolute path of the directory.
        path: &'a str,
        /// Whether to remove recursively (the key is absent when `None`).
        recursive: Option<bool>,
    },
    /// Copy a file. Both dialects (same shape).
    Copy {
        /// Source path.
        src: &'a str,
        /// Destination path.
        dst: &'a str,
    },
    /// Move a file or directory. Both dialects (same shape).
    Rename {
        /// Source path.
        src: &'a str,
        /// Destination path.
        dst: &'a str,
    },
    /// Open a file and answer a handle. Current.
    OpenFile {
        /// Path of the file.
        path: &'a str,
        /// How to open it.
        options: FsOpenOptions<'a>,
    },
    /// Open a directory and answer a handle. Current.
    OpenDir {
        /// Path of the directory.
        path: &'a str,
    },
    /// Close a handle. Current.
    CloseHandle {
        /// The handle.
        handle: u64,
    },
    /// Current shape of `Read`: stream bytes of an open file from `offset`.
    ReadHandle {
        /// The file handle.
        handle: u64,
        /// Where to start.
        offset: u64,
        /// At most this many bytes; `None` reads to the end.
        len: Option<u64>,
    },
    /// Current shape of `Write`: write the chunks that follow at `offset`.
    WriteHandle {
        /// The file handle.
        handle: u64,
        /// Where to start.
        offset: u64,
        /// The exact number of bytes that will follow, if checked.
        len: Option<u64>,
    },
    /// The next batch of a directory handle's entries. Current.
    ReadDir {
        /// The directory handle.
        handle: u64,
        /// At most this many entries; `None` is the agent's default.
        limit: Option<u32>,
    },
    /// Metadata of an open handle. Current.
    FStat {
        /// The handle.
        handle: u64,
    },
    /// Change metadata through an open handle. Current.
    FSetStat {
        /// The handle.
        handle: u64,
        /// What to change.
        attrs: FsSetAttrs,
    },
}

fn opt_u32(r: &mut Reader<'_>, field: &'static str) -> Res<Option<u32>> {
    Ok(if r.none(field)? { None } else { Some(r.u32(field)?) })
}

fn opt_u64(r: &mut Reader<'_>, field: &'static str) -> Res<Option<u64>> {
    Ok(if r.none(field)? { None } else { Some(r.u64(field)?) })
}

fn opt_i64(r: &mut Reader<'_>, field: &'static str) -> Res<Option<i64>> {
    Ok(if r.none(field)? { None } else { Some(r.i64(field)?) })
}

fn opt_str<'a>(r: &mut Reader<'a>, field: &'static str) -> Res<Option<&'a str>> {
    Ok(if r.none(field)? { None } else { Some(r.str(field)?) })
}

fn put_u32<W: Write>(e: &mut Encoder<W>, v: Option<u32>) -> EncodeResult<W> {
    match v {
        Some(v) => e.u32(v)?,
        None => e.null()?,
    };
    Ok(())
}

fn put_u64<W: Write>(e: &mut Encoder<W>, v: Option<u64>) -> EncodeResult<W> {
    match v {
        Some(v) => e.u64(v)?,
        None => e.null()?,
    };
    Ok(())
}

fn put_i64<W: Write>(e: &mut Encoder<W>, v: Option<i64>) -> EncodeResult<W> {
    match v {
        Some(v) => e.i64(v)?,
        None => e.null()?,
    };
    Ok(())
}

fn put_str<W: Write>(e: &mut Encoder<W>, v: Option<&str>) -> EncodeResult<W> {
    match v {
        Some(v) => e.text(v)?,
        None => e.null()?,
    };
    Ok(())
}

/// Which variant a decoded op body becomes (the shape within it is
/// decided by the keys present).
#[derive(Clone, Copy)]
enum Shape {
    RealPath,
    Stat,
    SetStat,
    List,
    ReadLink,
    Symlink,
    Mkdir,
    Remove,
    RemoveDir,
    Copy,
    Rename,
    OpenFile,
    OpenDir,
    CloseHandle,
    Read,
    Write,
    ReadDir,
    FStat,
    FSetStat,
}

/// An op body's keys and, for each, its bit in [`op_keys::KEYS`].
type OpKeys = (&'static [&'static str], &'static [u8]);

/// The [`op_keys::KEYS`] bit of each name, found at compile time.
const fn key_bits<const N: usize>(names: [&str; N]) -> [u8; N] {
    let mut bits = [0u8; N];
    let mut i = 0;
    while i < N {
        let mut bit = 0;
        loop {
            assert!(bit < op_keys::KEYS.len(), "an op key missing from op_keys::KEYS");
            let (a, b) = (op_keys::KEYS[bit].as_bytes(), names[i].as_bytes());
            let mut same = a.len() == b.len();
            let mut j = 0;
            while same && j < a.len() {
                same = a[j] == b[j];
                j += 1;
            }
            if same {
                break;
            }
            bit += 1;
        }
        bits[i] = bit as u8;
        i += 1;
    }
    bits
}

/// `(keys, bits)` of an op body (see [`OpKeys`]).
macro_rules! op_body {
    ($($key:literal),*) => {
        (&[$($key),*], &key_bits([$($key),*]))
    };
}

/// Every op variant: its wire name, the keys of its body in declaration
/// order (an array body gives them by position; `Read` and `Write` list
/// the current keys, then the seed-era ones) with their bits, and its
/// shape.
const OP_BODIES: [(&str, OpKeys, Shape); 19] = [
    ("RealPath", op_body!("path"), Shape::RealPath),
    ("Stat", op_body!("path", "follow_symlink"), Shape::Stat),
    ("SetStat", op_body!("path", "follow_symlink", "attrs"), Shape::SetStat),
    ("List", op_body!("path"), Shape::List),
    ("ReadLink", op_body!("path"), Shape::ReadLink),
    ("Symlink", op_body!("target", "link_path", "user"), Shape::Symlink),
    ("Mkdir", op_body!("path", "mode", "user"), Shape::Mkdir),
    ("Remove", op_body!("path"), Shape::Remove),
    ("RemoveDir", op_body!("path", "recursive"), Shape::RemoveDir),
    ("Copy", op_body!("src", "dst"), Shape::Copy),
    ("Rename", op_body!("src", "dst"), Shape::Rename),
    ("OpenFile", op_body!("path", "options"), Shape::OpenFile),
    ("OpenDir", op_body!("path"), Shape::OpenDir),
    ("CloseHandle", op_body!("handle"), Shape::CloseHandle),
    ("Read", op_body!("handle", "offset", "len", "path"), Shape::Read),
    ("Write", op_body!("handle", "offset", "len", "path", "mode"), Shape::Write),
    ("ReadDir", op_body!("handle", "limit"), Shape::ReadDir),
    ("FStat", op_body!("handle"), Shape::FStat),
    ("FSetStat", op_body!("handle", "attrs"), Shape::FSetStat),
];

/// Every key of every op body, as bits of [`OpFields::seen`].
mod op_keys {
    pub(super) const KEYS: [&str; 15] = [
        "path",
        "follow_symlink",
        "attrs",
        "target",
        "link_path",
        "user",
        "mode",
        "recursive",
        "src",
        "dst",
        "options",
        "handle",
        "offset",
        "len",
        "limit",
    ];
    pub(super) const PATH: u32 = 1 << 0;
    pub(super) const FOLLOW: u32 = 1 << 1;
    pub(super) const ATTRS: u32 = 1 << 2;
    pub(super) const TARGET: u32 = 1 << 3;
    pub(super) const LINK_PATH: u32 = 1 << 4;
    pub(super) const USER: u32 = 1 << 5;
    pub(super) const MODE: u32 = 1 << 6;
    pub(super) const RECURSIVE: u32 = 1 << 7;
    pub(super) const SRC: u32 = 1 << 8;
    pub(super) const DST: u32 = 1 << 9;
    pub(super) const OPTIONS: u32 = 1 << 10;
    pub(super) const HANDLE: u32 = 1 << 11;
    pub(super) const OFFSET: u32 = 1 << 12;
    pub(super) const LEN: u32 = 1 << 13;
}

/// The fields of any op body: one decoder for all of them keeps the codec
/// small.
#[derive(Default)]
struct OpFields<'a> {
    path: &'a str,
    follow: bool,
    attrs: FsSetAttrs,
    target: &'a str,
    link_path: &'a str,
    user: Option<&'a str>,
    mode: Option<u32>,
    recursive: bool,
    src: &'a str,
    dst: &'a str,
    options: FsOpenOptions<'a>,
    handle: u64,
    offset: u64,
    len: Option<u64>,
    limit: Option<u32>,
    /// Keys seen, as [`op_keys`] bits.
    seen: u32,
}

impl<'a> OpFields<'a> {
    /// Reads a variant body whose keys are `fields` (with their bits).
    fn read(r: &mut Reader<'a>, (fields, bits): OpKeys) -> Res<Self> {
        let mut f = OpFields::default();
        r.variant_record("FsRequest.op", fields, |r, i| {
            let bit = bits.get(i).copied().unwrap_or(0);
            f.seen |= 1 << bit;
            match bit {
                0 => f.path = r.str("path")?,
                1 => f.follow = r.bool("follow_symlink")?,
                2 => f.attrs = FsSetAttrs::read(r)?,
                3 => f.target = r.str("target")?,
                4 => f.link_path = r.str("link_path")?,
                5 => f.user = opt_str(r, "user")?,
                6 => f.mode = opt_u32(r, "mode")?,
                7 => f.recursive = r.bool("recursive")?,
                8 => f.src = r.str("src")?,
                9 => f.dst = r.str("dst")?,
                10 => f.options = FsOpenOptions::read(r)?,
                11 => f.handle = r.u64("handle")?,
                12 => f.offset = r.u64("offset")?,
                13 => f.len = opt_u64(r, "len")?,
                _ => f.limit = opt_u32(r, "limit")?,
            }
            Ok(())
        })?;
        Ok(f)
    }
}

impl<'a> FsOp<'a> {
    /// The variant name as on the wire, e.g. `"RemoveDir"`.
    pub const fn name(&self) -> &'static str {
        match self {
            FsOp::RealPath { .. } => "RealPath",
            FsOp::Stat { .. } => "Stat",
            FsOp::SetStat { .. } => "SetStat",
            FsOp::List { .. } => "List",
            FsOp::ReadLink { .. } => "ReadLink",
            FsOp::Symlink { .. } => "Symlink",
            FsOp::Read { .. } | FsOp::ReadHandle { .. } => "Read",
            FsOp::Write { .. } | FsOp::WriteHandle { .. } => "Write",
            FsOp::Mkdir { .. } | FsOp::MkdirWith { .. } => "Mkdir",
            FsOp::Remove { .. } => "Remove",
            FsOp::RemoveDir { .. } => "RemoveDir",
            FsOp::Copy { .. } => "Copy",
            FsOp::Rename { .. } => "Rename",
            FsOp::OpenFile { .. } => "OpenFile",
            FsOp::OpenDir { .. } => "OpenDir",
            FsOp::CloseHandle { .. } => "CloseHandle",
            FsOp::ReadDir { .. } => "ReadDir",
            FsOp::FStat { .. } => "FStat",
            FsOp::FSetStat { .. } => "FSetStat",
        }
    }

    /// The operation's name as the reference agent puts it in front of its
    /// error messages (`"remove_dir: Directory not empty (os error 39)"`).
    pub const fn error_prefix(&self) -> &'static str {
        match self {
            FsOp::Stat { .. } => "stat",
            FsOp::List { .. } => "list",
            FsOp::Read { .. } => "read",
            FsOp::Write { .. } => "write",
            FsOp::Mkdir { .. } => "mkdir",
            FsOp::Remove { .. } => "remove",
            FsOp::RemoveDir { .. } => "remove_dir",
            FsOp::Copy { .. } => "copy",
            FsOp::Rename { .. } => "rename",
            FsOp::RealPath { .. } => "realpath",
            FsOp::SetStat { .. } => "setstat",
            FsOp::ReadLink { .. } => "readlink",
            FsOp::Symlink { .. } => "symlink",
            FsOp::MkdirWith { .. } => "mkdir",
            FsOp::OpenFile { .. } => "open",
            FsOp::OpenDir { .. } => "opendir",
            FsOp::CloseHandle { .. } => "close",
            FsOp::ReadHandle { .. } => "read",
            FsOp::WriteHandle { .. } => "write",
            FsOp::ReadDir { .. } => "readdir",
            FsOp::FStat { .. } => "fstat",
            FsOp::FSetStat { .. } => "fsetstat",
        }
    }

    /// Whether this is a shape only the current dialect has (its answers
    /// carry 9-field entries).
    pub const fn is_current_shape(&self) -> bool {
        !matches!(
            self,
            FsOp::Stat { follow_symlink: None, .. }
                | FsOp::RemoveDir { recursive: None, .. }
                | FsOp::Read { .. }
                | FsOp::Write { .. }
                | FsOp::Mkdir { .. }
                | FsOp::List { .. }
                | FsOp::Remove { .. }
                | FsOp::Copy { .. }
                | FsOp::Rename { .. }
        )
    }

    /// The op for a body of only a path, if `shape` takes one and the body
    /// is exactly `{"path": text}`; the reader is untouched otherwise.
    #[inline]
    fn path_only(r: &mut Reader<'a>, shape: Shape) -> Option<Self> {
        let make = match shape {
            Shape::RealPath => |path| FsOp::RealPath { path },
            Shape::Stat => |path| FsOp::Stat { path, follow_symlink: None },
            Shape::List => |path| FsOp::List { path },
            Shape::ReadLink => |path| FsOp::ReadLink { path },
            Shape::Mkdir => |path| FsOp::Mkdir { path },
            Shape::Remove => |path| FsOp::Remove { path },
            Shape::RemoveDir => |path| FsOp::RemoveDir { path, recursive: None },
            Shape::OpenDir => |path| FsOp::OpenDir { path },
            Shape::Read => |path| FsOp::Read { path },
            Shape::Write => |path| FsOp::Write { path, mode: None },
            _ => return None,
        };
        r.path_only_body().map(make)
    }

    fn read(r: &mut Reader<'a>) -> Res<Self> {
        use op_keys::*;
        const FIELD: &str = "FsRequest.op";
        let at = r.position();
        let name = r.variant(FIELD)?;
        // The keys of each variant's body, in declaration order (an array
        // body gives them by position).
        let Some(&(_, (mut fields, mut bits), shape)) = OP_BODIES.iter().find(|(n, _, _)| n.as_bytes() == name) else {
            return Err(r.unknown_variant(name, FIELD, at));
        };
        // Most requests carry just a path: `{"path": text}` skips the
        // general body decoder (same result, a fifth of the work).
        if let Some(op) = Self::path_only(r, shape) {
            return Ok(op);
        }
        // A `Read`/`Write` array body whose first element is text is the
        // seed shape, whose keys come first by position.
        if matches!(shape, Shape::Read | Shape::Write) && r.array_body_starts_with_text() {
            (fields, bits) = (&fields[3..], &bits[3..]);
        }
        let f = OpFields::read(r, (fields, bits))?;
        let need = |r: &Reader<'a>, keys: u32| require(r, f.seen, &KEYS, keys);
        let path = f.path;
        Ok(match shape {
            Shape::RealPath => need(r, PATH).map(|()| FsOp::RealPath { path })?,
            Shape::List => need(r, PATH).map(|()| FsOp::List { path })?,
            Shape::ReadLink => need(r, PATH).map(|()| FsOp::ReadLink { path })?,
            Shape::Remove => need(r, PATH).map(|()| FsOp::Remove { path })?,
            Shape::OpenDir => need(r, PATH).map(|()| FsOp::OpenDir { path })?,
            Shape::CloseHandle => need(r, HANDLE).map(|()| FsOp::CloseHandle { handle: f.handle })?,
            Shape::FStat => need(r, HANDLE).map(|()| FsOp::FStat { handle: f.handle })?,
            Shape::Copy => need(r, SRC | DST).map(|()| FsOp::Copy { src: f.src, dst: f.dst })?,
            Shape::Rename => need(r, SRC | DST).map(|()| FsOp::Rename { src: f.src, dst: f.dst })?,
            Shape::Stat => {
                let follow_symlink = (f.seen & FOLLOW != 0).then_some(f.follow);
                need(r, PATH).map(|()| FsOp::Stat { path, follow_symlink })?
            }
            Shape::RemoveDir => {
                let recursive = (f.seen & RECURSIVE != 0).then_some(f.recursive);
                need(r, PATH).map(|()| FsOp::RemoveDir { path, recursive })?
            }
            Shape::Mkdir if f.seen & (MODE | USER) != 0 => {
                need(r, PATH).map(|()| FsOp::MkdirWith { path, mode: f.mode, user: f.user })?
            }
            Shape::Mkdir => need(r, PATH).map(|()| FsOp::Mkdir { path })?,
            Shape::SetStat => need(r, PATH | FOLLOW | ATTRS).map(|()| FsOp::SetStat {
                path,
                follow_symlink: f.follow,
                attrs: f.attrs,
            })?,
            Shape::Symlink => need(r, TARGET | LINK_PATH).map(|()| FsOp::Symlink {
                target: f.target,
                link_path: f.link_path,
                user: f.user,
            })?,
            Shape::OpenFile => need(r, PATH | OPTIONS).map(|()| FsOp::OpenFile { path, options: f.options })?,
            Shape::ReadDir => need(r, HANDLE).map(|()| FsOp::ReadDir { handle: f.handle, limit: f.limit })?,
            Shape::FSetStat => need(r, HANDLE | ATTRS).map(|()| FsOp::FSetStat { handle: f.handle, attrs: f.attrs })?,
            Shape::Read | Shape::Write if f.seen & (HANDLE | OFFSET | LEN) != 0 => {
                need(r, HANDLE | OFFSET)?;
                let (handle, offset, len) = (f.handle, f.offset, f.len);
                match shape {
                    Shape::Read => FsOp::ReadHandle { handle, offset, len },
                    _ => FsOp::WriteHandle { handle, offset, len },
                }
            }
            Shape::Read => need(r, PATH).map(|()| FsOp::Read { path })?,
            Shape::Write => need(r, PATH).map(|()| FsOp::Write { path, mode: f.mode })?,
        })
    }

    fn encode<W: Write>(&self, e: &mut Encoder<W>) -> EncodeResult<W> {
        // {"<variant>": ...}; variant names are shorter than 24 bytes.
        let name = self.name();
        debug_assert!(name.len() < 24, "a one-byte text head");
        e.raw(&[0xa1, 0x60 | name.len() as u8])?.raw(name.as_bytes())?;
        match *self {
            FsOp::RealPath { path }
            | FsOp::List { path }
            | FsOp::ReadLink { path }
            | FsOp::Read { path }
            | FsOp::Mkdir { path }
            | FsOp::Remove { path }
            | FsOp::OpenDir { path }
            | FsOp::Stat { path, follow_symlink: None }
            | FsOp::RemoveDir { path, recursive: None } => {
                // {"path": path}
                e.raw(b"\xa1\x64path")?.text(path)?;
            }
            FsOp::Stat { path, follow_symlink: Some(flag) } => {
                e.map(2)?;
                e.raw(key!("path"))?.text(path)?;
                e.raw(key!("follow_symlink"))?.bool(flag)?;
            }
            FsOp::RemoveDir { path, recursive: Some(flag) } => {
                e.map(2)?;
                e.raw(key!("path"))?.text(path)?;
                e.raw(key!("recursive"))?.bool(flag)?;
            }
            FsOp::SetStat { path, follow_symlink, attrs } => {
                e.map(3)?;
                e.raw(key!("path"))?.text(path)?;
                e.raw(key!("follow_symlink"))?.bool(follow_symlink)?;
                e.raw(key!("attrs"))?;
                attrs.encode(e)?;
            }
            FsOp::Symlink { target, link_path, user } => {
                e.map(3)?;
                e.raw(key!("target"))?.text(target)?;
                e.raw(key!("link_path"))?.text(link_path)?;
                e.raw(key!("user"))?;
                put_str(e, user)?;
            }
            FsOp::Write { path, mode } => {
                e.map(2)?;
                e.raw(key!("path"))?.text(path)?;
                e.raw(key!("mode"))?;
                put_u32(e, mode)?;
            }
            FsOp::MkdirWith { path, mode, user } => {
                e.map(3)?;
                e.raw(key!("path"))?.text(path)?;
                e.raw(key!("mode"))?;
                put_u32(e, mode)?;
                e.raw(key!("user"))?;
                put_str(e, user)?;
            }
            FsOp::Copy { src, dst } | FsOp::Rename { src, dst } => {
                e.map(2)?;
                e.raw(key!("src"))?.text(src)?;
                e.raw(key!("dst"))?.text(dst)?;
            }
            FsOp::OpenFile { path, options } => {
                e.map(2)?;
                e.raw(key!("path"))?.text(path)?;
                e.raw(key!("options"))?;
                options.encode(e)?;
            }
            FsOp::CloseHandle { handle } | FsOp::FStat { handle } => {
                e.map(1)?;
                e.raw(key!("handle"))?.u64(handle)?;
            }
            FsOp::ReadHandle { handle, offset, len } | FsOp::WriteHandle { handle, offset, len } => {
                e.map(3)?;
                e.raw(key!("handle"))?.u64(handle)?;
                e.raw(key!("offset"))?.u64(offset)?;
                e.raw(key!("len"))?;
                put_u64(e, len)?;
            }
            FsOp::ReadDir { handle, limit } => {
                e.map(2)?;
                e.raw(key!("handle"))?.u64(handle)?;
                e.raw(key!("limit"))?;
                put_u32(e, limit)?;
            }
            FsOp::FSetStat { handle, attrs } => {
                e.map(2)?;
                e.raw(key!("handle"))?.u64(handle)?;
                e.raw(key!("attrs"))?;
                attrs.encode(e)?;
            }
        }
        Ok(())
    }
}

/// A one-key map and its key, `{"op": ...`: how a request without a bulk
/// offer starts.
const REQUEST_OP: &[u8] = b"\xa1\x62op";

impl Payload for FsRequest<'_> {
    const TYPE: MessageType = MessageType::FsRequest;

    fn encode<W: Write>(&self, e: &mut Encoder<W>) -> EncodeResult<W> {
        match &self.bulk {
            None => {
                // {"op": ...}
                e.raw(REQUEST_OP)?;
                self.op.encode(e)
            }
            Some(offer) => {
                e.map(2)?;
                e.raw(key!("op"))?;
                self.op.encode(e)?;
                e.raw(key!("bulk"))?;
                offer.encode(e)
            }
        }
    }
}

impl<'a> DecodePayload<'a> for FsRequest<'a> {
    fn decode(p: &'a [u8]) -> Result<Self, Error> {
        const FIELDS: [&str; 2] = ["op", "bulk"];
        decode_with(p, |r| {
            // The canonical form of a request without a bulk offer,
            // `{"op": ...}`, needs no field bookkeeping (same result).
            if r.skip_prefix(REQUEST_OP) {
                return Ok(FsRequest { op: FsOp::read(r)?, bulk: None });
            }
            let (mut op, mut bulk) = (None, None);
            r.record("FsRequest", &FIELDS, |r, i| {
                match i {
                    0 => op = Some(FsOp::read(r)?),
                    _ => bulk = if r.none("FsRequest.bulk")? { None } else { Some(BulkOffer::read(r)?) },
                }
                Ok(())
            })?;
            match op {
                Some(op) => Ok(FsRequest { op, bulk }),
                None => Err(r.error(ErrorKind::MissingField, "op")),
            }
        })
    }
}

/// `core.fs.data`: one chunk of a stream; an empty chunk ends a write stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FsData<'a> {
    /// The chunk, at most [`FS_CHUNK_SIZE`] bytes from a conforming sender.
    pub data: &'a [u8],
}

impl FsData<'_> {
    /// The CBOR bytes in front of the data: `{"data": <bytes head>}`.
    pub fn head(data_len: usize) -> ([u8; 15], usize) {
        let mut out = [0u8; 15];
        out[..6].copy_from_slice(&[0xa1, 0x64, b'd', b'a', b't', b'a']);
        let n = 6 + crate::cbor::write_head(&mut out[6..], 2, data_len as u64);
        (out, n)
    }
}

impl Payload for FsData<'_> {
    const TYPE: MessageType = MessageType::FsData;

    fn encode<W: Write>(&self, e: &mut Encoder<W>) -> EncodeResult<W> {
        e.map(1)?;
        e.raw(key!("data"))?.bytes(self.data)?;
        Ok(())
    }

    fn known_len(&self) -> Option<usize> {
        // a1 | 64 "data" | bytes head | data
        Some(1 + 1 + "data".len() + crate::cbor::head_len(self.data.len() as u64) + self.data.len())
    }
}

impl<'a> DecodePayload<'a> for FsData<'a> {
    fn decode(p: &'a [u8]) -> Result<Self, Error> {
        const FIELDS: [&str; 1] = ["data"];
        decode_with(p, |r| {
            let mut out = FsData::default();
            let seen = r.record("FsData", &FIELDS, |r, _| {
                out.data = r.bytes("FsData.data")?;
                Ok(())
            })?;
            require(r, seen, &FIELDS, 1)?;
            Ok(out)
        })
    }
}

/// The kind of a filesystem entry: text on the wire, and the one kind
/// type of the whole stack. `S` holds a text this protocol does not
/// define, kept as sent: `&str` when decoding ([`FsEntryKind`]), `String`
/// in a host that keeps it, and a guest never makes one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EntryKind<S> {
    /// A regular file (`"file"`).
    File,
    /// A directory (`"dir"`).
    Dir,
    /// A symbolic link (`"symlink"`).
    Symlink,
    /// Anything else (`"other"`).
    Other,
    /// A text this protocol does not define, kept as sent.
    Unknown(S),
}

/// An entry kind as decoded: an unknown text borrows the frame.
pub type FsEntryKind<'a> = EntryKind<&'a str>;

impl<S: AsRef<str>> EntryKind<S> {
    /// The wire text.
    pub fn as_str(&self) -> &str {
        match self {
            EntryKind::File => "file",
            EntryKind::Dir => "dir",
            EntryKind::Symlink => "symlink",
            EntryKind::Other => "other",
            EntryKind::Unknown(s) => s.as_ref(),
        }
    }
}

impl<S> EntryKind<S> {
    /// The same kind with an unknown text turned by `f` (e.g. into an
    /// owned string).
    pub fn map<T>(self, f: impl FnOnce(S) -> T) -> EntryKind<T> {
        match self {
            EntryKind::File => EntryKind::File,
            EntryKind::Dir => EntryKind::Dir,
            EntryKind::Symlink => EntryKind::Symlink,
            EntryKind::Other => EntryKind::Other,
            EntryKind::Unknown(s) => EntryKind::Unknown(f(s)),
        }
    }
}

impl<'a> EntryKind<&'a str> {
    /// The kind for a wire text.
    pub fn from_wire(s: &'a str) -> Self {
        match s {
            "file" => EntryKind::File,
            "dir" => EntryKind::Dir,
            "symlink" => EntryKind::Symlink,
            "other" => EntryKind::Other,
            s => EntryKind::Unknown(s),
        }
    }
}

/// Metadata of one filesystem entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FsEntryInfo<'a> {
    /// The entry's path.
    pub path: &'a str,
    /// What the entry is.
    pub kind: FsEntryKind<'a>,
    /// Size in bytes.
    pub size: u64,
    /// The full `st_mode`, type bits included (e.g. `0o100644`).
    pub mode: u32,
    /// Modification time in Unix seconds, if known.
    pub modified: Option<i64>,
    /// The current dialect's four extra fields; `None` is the seed-era
    /// 5-field entry.
    pub extra: Option<EntryExtra>,
}

/// Owner and times of an entry: the fields the current dialect's
/// `FsEntryInfo` adds (`uid` and `gid` are required there).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct EntryExtra {
    /// Owner user id.
    pub uid: u32,
    /// Owner group id.
    pub gid: u32,
    /// Last access, Unix seconds.
    pub atime: Option<i64>,
    /// Last modification, Unix seconds.
    pub mtime: Option<i64>,
}

impl<'a> FsEntryInfo<'a> {
    const FIELDS: [&'static str; 9] = ["path", "kind", "size", "mode", "modified", "uid", "gid", "atime", "mtime"];

    fn read(r: &mut Reader<'a>) -> Res<Self> {
        let mut out = FsEntryInfo { path: "", kind: FsEntryKind::File, size: 0, mode: 0, modified: None, extra: None };
        let mut extra = EntryExtra::default();
        let seen = r.record("FsEntryInfo", &Self::FIELDS, |r, i| {
            match i {
                0 => out.path = r.str("FsEntryInfo.path")?,
                1 => out.kind = FsEntryKind::from_wire(r.str("FsEntryInfo.kind")?),
                2 => out.size = r.u64("FsEntryInfo.size")?,
                3 => out.mode = r.u32("FsEntryInfo.mode")?,
                4 => out.modified = opt_i64(r, "FsEntryInfo.modified")?,
                5 => extra.uid = r.u32("FsEntryInfo.uid")?,
                6 => extra.gid = r.u32("FsEntryInfo.gid")?,
                7 => extra.atime = opt_i64(r, "FsEntryInfo.atime")?,
                _ => extra.mtime = opt_i64(r, "FsEntryInfo.mtime")?,
            }
            Ok(())
        })?;
        // `uid` or `gid` makes it a current-dialect entry, which needs both;
        // `atime`/`mtime` alone are extra keys a seed-era reader skips.
        const OWNER: u32 = 0b0_0110_0000;
        const BASE: u32 = 0b0_0000_1111;
        let current = seen & OWNER != 0;
        require(r, seen, &Self::FIELDS, if current { BASE | OWNER } else { BASE })?;
        if current {
            out.extra = Some(extra);
        }
        Ok(out)
    }

    /// Encodes this entry as a CBOR map (5 or 9 keys, see [`FsEntryInfo::extra`]).
    pub fn encode<W: Write>(&self, e: &mut Encoder<W>) -> EncodeResult<W> {
        e.map(if self.extra.is_some() { 9 } else { 5 })?;
        e.raw(key!("path"))?.text(self.path)?;
        e.raw(key!("kind"))?.text(self.kind.as_str())?;
        e.raw(key!("size"))?.uint(self.size)?;
        e.raw(key!("mode"))?.uint(u64::from(self.mode))?;
        e.raw(key!("modified"))?;
        put_i64(e, self.modified)?;
        if let Some(extra) = &self.extra {
            e.raw(key!("uid"))?.uint(u64::from(extra.uid))?;
            e.raw(key!("gid"))?.uint(u64::from(extra.gid))?;
            e.raw(key!("atime"))?;
            put_i64(e, extra.atime)?;
            e.raw(key!("mtime"))?;
            put_i64(e, extra.mtime)?;
        }
        Ok(())
    }
}

/// A source of directory entries to encode in a `List` response.
///
/// Entries are visited through a callback so a source can build each one
/// in a temporary buffer (e.g. a full path from a directory and a name).
/// Encoding visits the source twice (length, then bytes): both visits must
/// yield the same entries in the same order.
pub trait EntrySource {
    /// The number of entries.
    fn count(&self) -> usize;
    /// Calls `f` with each entry in order.
    fn for_each_entry(&self, f: &mut dyn FnMut(&FsEntryInfo<'_>));
}

impl EntrySource for [FsEntryInfo<'_>] {
    fn count(&self) -> usize {
        self.len()
    }

    fn for_each_entry(&self, f: &mut dyn FnMut(&FsEntryInfo<'_>)) {
        self.iter().for_each(f);
    }
}

impl<const N: usize> EntrySource for [FsEntryInfo<'_>; N] {
    fn count(&self) -> usize {
        N
    }

    fn for_each_entry(&self, f: &mut dyn FnMut(&FsEntryInfo<'_>)) {
        self.iter().for_each(f);
    }
}

impl<S: EntrySource + ?Sized> EntrySource for &S {
    fn count(&self) -> usize {
        (**self).count()
    }

    fn for_each_entry(&self, f: &mut dyn FnMut(&FsEntryInfo<'_>)) {
        (**self).for_each_entry(f);
    }
}

/// Entries from any cloneable iterator (cloned once per visit).
#[derive(Debug, Clone)]
pub struct IterEntries<I>(pub I);

impl<'e, I: Iterator<Item = FsEntryInfo<'e>> + Clone> EntrySource for IterEntries<I> {
    fn count(&self) -> usize {
        self.0.clone().count()
    }

    fn for_each_entry(&self, f: &mut dyn FnMut(&FsEntryInfo<'_>)) {
        self.0.clone().for_each(|e| f(&e));
    }
}

/// A decoded `List`: a lazy view over the entries in the payload. Every
/// entry was validated when the payload was decoded; iterating decodes
/// them again, one at a time, without copying. There is no cap on the
/// number of entries.
#[derive(Clone, Copy)]
pub struct EntryList<'a> {
    payload: &'a [u8],
    start: usize,
    items: Remaining,
    count: usize,
}

impl<'a> EntryList<'a> {
    fn read(r: &mut Reader<'a>) -> Res<Self> {
        let mut items = r.array_start("FsResponseData.List")?;
        let list = EntryList { payload: r.input(), start: r.position(), items, count: 0 };
        let mut count = 0usize;
        while r.has_next(&mut items, "FsResponseData.List")? {
            FsEntryInfo::read(r)?;
            count += 1;
        }
        Ok(EntryList { count, ..list })
    }

    /// The number of entries.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether the list is empty.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Iterates over the entries.
    pub fn iter(&self) -> EntryIter<'a> {
        EntryIter { r: Reader::at(self.payload, self.start, Layer::Payload), items: self.items, left: self.count }
    }
}

impl<'a> IntoIterator for EntryList<'a> {
    type Item = FsEntryInfo<'a>;
    type IntoIter = EntryIter<'a>;

    fn into_iter(self) -> EntryIter<'a> {
        self.iter()
    }
}

impl<'a> IntoIterator for &EntryList<'a> {
    type Item = FsEntryInfo<'a>;
    type IntoIter = EntryIter<'a>;

    fn into_iter(self) -> EntryIter<'a> {
        self.iter()
    }
}

impl PartialEq for EntryList<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.count == other.count && self.iter().eq(other.iter())
    }
}

impl Eq for EntryList<'_> {}

impl fmt::Debug for EntryList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl EntrySource for EntryList<'_> {
    fn count(&self) -> usize {
        self.count
    }

    fn for_each_entry(&self, f: &mut dyn FnMut(&FsEntryInfo<'_>)) {
        self.iter().for_each(|e| f(&e));
    }
}

/// Iterator over a decoded [`EntryList`].
pub struct EntryIter<'a> {
    r: Reader<'a>,
    items: Remaining,
    left: usize,
}

impl<'a> Iterator for EntryIter<'a> {
    type Item = FsEntryInfo<'a>;

    fn next(&mut self) -> Option<FsEntryInfo<'a>> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        // Validated at decode time, so neither call can fail; stop cleanly if
        // one ever did rather than yield garbage.
        match self.r.has_next(&mut self.items, "FsResponseData.List") {
            Ok(true) => FsEntryInfo::read(&mut self.r).ok(),
            _ => None,
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left, Some(self.left))
    }
}

impl ExactSizeIterator for EntryIter<'_> {}

/// The data of a successful response: `{"Stat": {...}}`, `{"List": [...]}`,
/// `{"Handle": n}` or `{"Path": "..."}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsResponseData<'a, L = EntryList<'a>> {
    /// The metadata of one entry.
    Stat(FsEntryInfo<'a>),
    /// The entries of a directory.
    List(L),
    /// A handle that `OpenFile`/`OpenDir` opened (current dialect).
    Handle(u64),
    /// A resolved path (`RealPath`) or a symlink target (`ReadLink`).
    Path(&'a str),
}

/// `core.fs.response`: the end of a filesystem session (TERMINAL).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FsResponse<'a, L = EntryList<'a>> {
    /// Whether the operation succeeded.
    pub ok: bool,
    /// A readable error (`null` when none).
    pub error: Option<&'a str>,
    /// Result data for Stat, List, handle opens, RealPath and ReadLink
    /// (`null` otherwise).
    pub data: Option<FsResponseData<'a, L>>,
}

impl<'a, L> FsResponse<'a, L> {
    /// A success without data.
    pub const fn ok() -> Self {
        FsResponse { ok: true, error: None, data: None }
    }

    /// A failure with a readable message.
    pub const fn err(message: &'a str) -> Self {
        FsResponse { ok: false, error: Some(message), data: None }
    }
}

impl<L: EntrySource> Payload for FsResponse<'_, L> {
    const TYPE: MessageType = MessageType::FsResponse;

    fn encode<W: Write>(&self, e: &mut Encoder<W>) -> EncodeResult<W> {
        e.map(3)?;
        e.raw(key!("ok"))?.bool(self.ok)?;
        e.raw(key!("error"))?;
        match self.error {
            Some(text) => e.text(text)?,
            None => e.null()?,
        };
        e.raw(key!("data"))?;
        match &self.data {
            None => {
                e.null()?;
            }
            Some(FsResponseData::Stat(info)) => {
                e.map(1)?;
                e.raw(key!("Stat"))?;
                info.encode(e)?;
            }
            Some(FsResponseData::List(entries)) => {
                e.map(1)?;
                e.raw(key!("List"))?.array(entries.count() as u64)?;
                let mut result = Ok(());
                entries.for_each_entry(&mut |info| {
                    if result.is_ok() {
                        result = info.encode(e);
                    }
                });
                result?;
            }
            Some(FsResponseData::Handle(handle)) => {
                e.map(1)?;
                e.raw(key!("Handle"))?.u64(*handle)?;
            }
            Some(FsResponseData::Path(path)) => {
                e.map(1)?;
                e.raw(key!("Path"))?.text(path)?;
            }
        }
        Ok(())
    }
}

impl<'a> DecodePayload<'a> for FsResponse<'a> {
    fn decode(p: &'a [u8]) -> Result<Self, Error> {
        const FIELDS: [&str; 3] = ["ok", "error", "data"];
        decode_with(p, |r| {
            let mut out = FsResponse::ok();
            let seen = r.record("FsResponse", &FIELDS, |r, i| {
                match i {
                    0 => out.ok = r.bool("FsResponse.ok")?,
                    1 => out.error = if r.none("FsResponse.error")? { None } else { Some(r.str("FsResponse.error")?) },
                    _ => out.data = if r.none("FsResponse.data")? { None } else { Some(read_data(r)?) },
                }
                Ok(())
            })?;
            require(r, seen, &FIELDS, 0b001)?;
            Ok(out)
        })
    }
}

fn read_data<'a>(r: &mut Reader<'a>) -> Res<FsResponseData<'a>> {
    const FIELD: &str = "FsResponse.data";
    let at = r.position();
    match r.variant(FIELD)? {
        b"Stat" => Ok(FsResponseData::Stat(FsEntryInfo::read(r)?)),
        b"List" => Ok(FsResponseData::List(EntryList::read(r)?)),
        b"Handle" => Ok(FsResponseData::Handle(r.u64("FsResponseData.Handle")?)),
        b"Path" => Ok(FsResponseData::Path(r.str("FsResponseData.Path")?)),
        name => Err(r.unknown_variant(name, FIELD, at)),
    }
}
