//! Payloads of the `core.fs.*` messages: requests, streamed data and
//! responses.

use core::fmt;

use minicbor::encode::Write;

use crate::cbor::{EncodeResult, Encoder, Reader, Remaining, Res};
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
}

/// A filesystem operation (externally tagged: `{"Stat": {"path": "/a"}}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsOp<'a> {
    /// Metadata of a path, not following a final symlink.
    Stat {
        /// Absolute path.
        path: &'a str,
    },
    /// The direct children of a directory, with full paths.
    List {
        /// Absolute path of the directory.
        path: &'a str,
    },
    /// Stream a file's content as `core.fs.data` chunks.
    Read {
        /// Absolute path of the file.
        path: &'a str,
    },
    /// Replace a file with the `core.fs.data` chunks that follow.
    Write {
        /// Absolute path of the file.
        path: &'a str,
        /// Permission bits to apply, if any.
        mode: Option<u32>,
    },
    /// Create a directory and its missing parents (idempotent).
    Mkdir {
        /// Absolute path of the directory.
        path: &'a str,
    },
    /// Remove a file (or symlink).
    Remove {
        /// Absolute path.
        path: &'a str,
    },
    /// Remove a directory and everything below it.
    RemoveDir {
        /// Absolute path of the directory.
        path: &'a str,
    },
    /// Copy a file, creating the destination's parents.
    Copy {
        /// Source path.
        src: &'a str,
        /// Destination path.
        dst: &'a str,
    },
    /// Move a file or directory, creating the destination's parents.
    Rename {
        /// Source path.
        src: &'a str,
        /// Destination path.
        dst: &'a str,
    },
}

impl<'a> FsOp<'a> {
    /// The variant name as on the wire, e.g. `"RemoveDir"`.
    pub const fn name(&self) -> &'static str {
        match self {
            FsOp::Stat { .. } => "Stat",
            FsOp::List { .. } => "List",
            FsOp::Read { .. } => "Read",
            FsOp::Write { .. } => "Write",
            FsOp::Mkdir { .. } => "Mkdir",
            FsOp::Remove { .. } => "Remove",
            FsOp::RemoveDir { .. } => "RemoveDir",
            FsOp::Copy { .. } => "Copy",
            FsOp::Rename { .. } => "Rename",
        }
    }

    fn read(r: &mut Reader<'a>) -> Res<Self> {
        const FIELD: &str = "FsRequest.op";
        const PATH: [&str; 1] = ["path"];
        const WRITE: [&str; 2] = ["path", "mode"];
        const SRC_DST: [&str; 2] = ["src", "dst"];
        let at = r.position();
        let name = r.variant(FIELD)?;
        let single = |r: &mut Reader<'a>, field: &'static str| -> Res<&'a str> {
            let mut path = "";
            let seen = r.variant_record(field, &PATH, |r, _| {
                path = r.str(field)?;
                Ok(())
            })?;
            require(r, seen, &PATH, 1)?;
            Ok(path)
        };
        let pair = |r: &mut Reader<'a>, field: &'static str| -> Res<(&'a str, &'a str)> {
            let (mut src, mut dst) = ("", "");
            let seen = r.variant_record(field, &SRC_DST, |r, i| {
                match i {
                    0 => src = r.str(field)?,
                    _ => dst = r.str(field)?,
                }
                Ok(())
            })?;
            require(r, seen, &SRC_DST, 0b11)?;
            Ok((src, dst))
        };
        Ok(match name {
            b"Stat" => FsOp::Stat { path: single(r, "FsOp.Stat.path")? },
            b"List" => FsOp::List { path: single(r, "FsOp.List.path")? },
            b"Read" => FsOp::Read { path: single(r, "FsOp.Read.path")? },
            b"Mkdir" => FsOp::Mkdir { path: single(r, "FsOp.Mkdir.path")? },
            b"Remove" => FsOp::Remove { path: single(r, "FsOp.Remove.path")? },
            b"RemoveDir" => FsOp::RemoveDir { path: single(r, "FsOp.RemoveDir.path")? },
            b"Copy" => {
                let (src, dst) = pair(r, "FsOp.Copy")?;
                FsOp::Copy { src, dst }
            }
            b"Rename" => {
                let (src, dst) = pair(r, "FsOp.Rename")?;
                FsOp::Rename { src, dst }
            }
            b"Write" => {
                let (mut path, mut mode) = ("", None);
                let seen = r.variant_record("FsOp.Write", &WRITE, |r, i| {
                    match i {
                        0 => path = r.str("FsOp.Write.path")?,
                        _ => mode = if r.none("FsOp.Write.mode")? { None } else { Some(r.u32("FsOp.Write.mode")?) },
                    }
                    Ok(())
                })?;
                require(r, seen, &WRITE, 0b01)?;
                FsOp::Write { path, mode }
            }
            _ => return Err(r.unknown_variant(name, FIELD, at)),
        })
    }

    fn encode<W: Write>(&self, e: &mut Encoder<W>) -> EncodeResult<W> {
        e.map(1)?.str(self.name())?;
        match *self {
            FsOp::Stat { path }
            | FsOp::List { path }
            | FsOp::Read { path }
            | FsOp::Mkdir { path }
            | FsOp::Remove { path }
            | FsOp::RemoveDir { path } => {
                e.map(1)?.str("path")?.str(path)?;
            }
            FsOp::Write { path, mode } => {
                e.map(2)?.str("path")?.str(path)?.str("mode")?;
                match mode {
                    Some(mode) => e.u32(mode)?,
                    None => e.null()?,
                };
            }
            FsOp::Copy { src, dst } | FsOp::Rename { src, dst } => {
                e.map(2)?.str("src")?.str(src)?.str("dst")?.str(dst)?;
            }
        }
        Ok(())
    }
}

impl Payload for FsRequest<'_> {
    const TYPE: MessageType = MessageType::FsRequest;

    fn encode<W: Write>(&self, e: &mut Encoder<W>) -> EncodeResult<W> {
        e.map(1)?.str("op")?;
        self.op.encode(e)
    }
}

impl<'a> DecodePayload<'a> for FsRequest<'a> {
    fn decode(p: &'a [u8]) -> Result<Self, Error> {
        const FIELDS: [&str; 1] = ["op"];
        decode_with(p, |r| {
            let mut op = None;
            r.record("FsRequest", &FIELDS, |r, _| {
                op = Some(FsOp::read(r)?);
                Ok(())
            })?;
            match op {
                Some(op) => Ok(FsRequest { op }),
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
        e.map(1)?.str("data")?.bytes(self.data)?;
        Ok(())
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

/// The kind of a filesystem entry (text on the wire; unknown texts are kept).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FsEntryKind<'a> {
    /// A regular file (`"file"`).
    File,
    /// A directory (`"dir"`).
    Dir,
    /// A symbolic link (`"symlink"`).
    Symlink,
    /// Anything else (`"other"`).
    Other,
    /// A text this protocol does not define, kept as sent.
    Unknown(&'a str),
}

impl<'a> FsEntryKind<'a> {
    /// The wire text.
    pub const fn as_str(&self) -> &'a str {
        match self {
            FsEntryKind::File => "file",
            FsEntryKind::Dir => "dir",
            FsEntryKind::Symlink => "symlink",
            FsEntryKind::Other => "other",
            FsEntryKind::Unknown(s) => s,
        }
    }

    /// The kind for a wire text.
    pub fn from_wire(s: &'a str) -> Self {
        match s {
            "file" => FsEntryKind::File,
            "dir" => FsEntryKind::Dir,
            "symlink" => FsEntryKind::Symlink,
            "other" => FsEntryKind::Other,
            s => FsEntryKind::Unknown(s),
        }
    }
}

/// Metadata of one filesystem entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FsEntryInfo<'a> {
    /// The entry's full path.
    pub path: &'a str,
    /// What the entry is.
    pub kind: FsEntryKind<'a>,
    /// Size in bytes.
    pub size: u64,
    /// The full `st_mode`, type bits included (e.g. `0o100644`).
    pub mode: u32,
    /// Modification time in Unix seconds, if known.
    pub modified: Option<i64>,
}

impl<'a> FsEntryInfo<'a> {
    const FIELDS: [&'static str; 5] = ["path", "kind", "size", "mode", "modified"];

    fn read(r: &mut Reader<'a>) -> Res<Self> {
        let mut out = FsEntryInfo { path: "", kind: FsEntryKind::File, size: 0, mode: 0, modified: None };
        let seen = r.record("FsEntryInfo", &Self::FIELDS, |r, i| {
            match i {
                0 => out.path = r.str("FsEntryInfo.path")?,
                1 => out.kind = FsEntryKind::from_wire(r.str("FsEntryInfo.kind")?),
                2 => out.size = r.u64("FsEntryInfo.size")?,
                3 => out.mode = r.u32("FsEntryInfo.mode")?,
                _ => {
                    out.modified =
                        if r.none("FsEntryInfo.modified")? { None } else { Some(r.i64("FsEntryInfo.modified")?) }
                }
            }
            Ok(())
        })?;
        require(r, seen, &Self::FIELDS, 0b01111)?;
        Ok(out)
    }

    /// Encodes this entry as a CBOR map.
    pub fn encode<W: Write>(&self, e: &mut Encoder<W>) -> EncodeResult<W> {
        e.map(5)?;
        e.str("path")?.str(self.path)?;
        e.str("kind")?.str(self.kind.as_str())?;
        e.str("size")?.u64(self.size)?;
        e.str("mode")?.u32(self.mode)?;
        e.str("modified")?;
        match self.modified {
            Some(t) => e.i64(t)?,
            None => e.null()?,
        };
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

/// The data of a successful response: `{"Stat": {...}}` or `{"List": [...]}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsResponseData<'a, L = EntryList<'a>> {
    /// The metadata of one entry.
    Stat(FsEntryInfo<'a>),
    /// The entries of a directory.
    List(L),
}

/// `core.fs.response`: the end of a filesystem session (TERMINAL).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FsResponse<'a, L = EntryList<'a>> {
    /// Whether the operation succeeded.
    pub ok: bool,
    /// A readable error (`null` when none).
    pub error: Option<&'a str>,
    /// Result data for Stat and List (`null` otherwise).
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
        e.map(3)?.str("ok")?.bool(self.ok)?.str("error")?;
        match self.error {
            Some(text) => e.str(text)?,
            None => e.null()?,
        };
        e.str("data")?;
        match &self.data {
            None => {
                e.null()?;
            }
            Some(FsResponseData::Stat(info)) => {
                e.map(1)?.str("Stat")?;
                info.encode(e)?;
            }
            Some(FsResponseData::List(entries)) => {
                e.map(1)?.str("List")?.array(entries.count() as u64)?;
                let mut result = Ok(());
                entries.for_each_entry(&mut |info| {
                    if result.is_ok() {
                        result = info.encode(e);
                    }
                });
                result?;
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
        name => Err(r.unknown_variant(name, FIELD, at)),
    }
}
