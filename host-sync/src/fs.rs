//! The filesystem API, blocking, after microsandbox's `SandboxFs`.
//!
//! Streams never hold a whole file: [`Fs::read_to`] writes each chunk out
//! as it arrives and [`Fs::write_from`] sends the reader's bytes chunk by
//! chunk ([`wire::FS_CHUNK_SIZE`] at most in memory).

use std::io::{Read, Write};
use std::path::Path;

use wire::{Body, FsEntryInfo, FsEntryKind, FsOp, FsRequest, FsResponse, FsResponseData};

use crate::client::{Call, Client, decode};
use crate::error::{Error, Result};
use crate::proto::CallKind;

/// What an entry is.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum EntryKind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link.
    Symlink,
    /// Something else.
    Other,
    /// A kind this client does not know, as the guest named it.
    Unknown(String),
}

/// Metadata of one guest entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Full path in the guest.
    pub path: String,
    /// What it is.
    pub kind: EntryKind,
    /// Size in bytes.
    pub size: u64,
    /// The full `st_mode` (type bits included).
    pub mode: u32,
    /// Modification time in Unix seconds, if the guest knows it.
    pub modified: Option<i64>,
}

impl Entry {
    fn from_wire(e: &FsEntryInfo<'_>) -> Entry {
        let kind = match e.kind {
            FsEntryKind::File => EntryKind::File,
            FsEntryKind::Dir => EntryKind::Dir,
            FsEntryKind::Symlink => EntryKind::Symlink,
            FsEntryKind::Other => EntryKind::Other,
            FsEntryKind::Unknown(s) => EntryKind::Unknown(s.to_string()),
        };
        Entry { path: e.path.to_string(), kind, size: e.size, mode: e.mode, modified: e.modified }
    }

    /// Whether it is a regular file.
    pub fn is_file(&self) -> bool {
        self.kind == EntryKind::File
    }

    /// Whether it is a directory.
    pub fn is_dir(&self) -> bool {
        self.kind == EntryKind::Dir
    }

    /// The permission bits (`mode & 0o7777`).
    pub fn permissions(&self) -> u32 {
        self.mode & 0o7777
    }
}

/// The guest filesystem, through a [`Client`].
#[derive(Clone, Copy)]
pub struct Fs<'c> {
    client: &'c Client,
}

impl Client {
    /// The guest filesystem.
    pub fn fs(&self) -> Fs<'_> {
        Fs { client: self }
    }
}

/// The guest's answer to a call, as a result.
fn outcome<'f>(op: &'static str, path: &str, frame: &'f [u8]) -> Result<FsResponse<'f>> {
    match decode(frame)?.body {
        Body::FsResponse(r) if r.ok => Ok(r),
        Body::FsResponse(r) => Err(Error::Fs {
            op,
            path: path.to_string(),
            message: r.error.unwrap_or("failed without a message").to_string(),
        }),
        other => Err(Error::Protocol(format!("{op}: expected core.fs.response, got {}", other.message_type()))),
    }
}

impl<'c> Fs<'c> {
    fn request(&self, op: FsOp<'_>) -> Result<Vec<u8>> {
        let call = self.client.begin(CallKind::Request, &FsRequest { op })?;
        call.recv()
    }

    fn simple(&self, name: &'static str, path: &str, op: FsOp<'_>) -> Result<()> {
        let frame = self.request(op)?;
        outcome(name, path, &frame).map(|_| ())
    }

    /// Metadata of `path` (a final symlink is not followed).
    pub fn stat(&self, path: &str) -> Result<Entry> {
        let frame = self.request(FsOp::Stat { path })?;
        match outcome("stat", path, &frame)?.data {
            Some(FsResponseData::Stat(info)) => Ok(Entry::from_wire(&info)),
            _ => Err(Error::Protocol("stat: the response carries no metadata".into())),
        }
    }

    /// Whether `path` exists.
    pub fn exists(&self, path: &str) -> Result<bool> {
        match self.stat(path) {
            Ok(_) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The direct children of directory `path`, with full paths.
    pub fn list(&self, path: &str) -> Result<Vec<Entry>> {
        let frame = self.request(FsOp::List { path })?;
        match outcome("list", path, &frame)?.data {
            Some(FsResponseData::List(entries)) => Ok(entries.iter().map(|e| Entry::from_wire(&e)).collect()),
            _ => Err(Error::Protocol("list: the response carries no entries".into())),
        }
    }

    /// Creates directory `path` and its missing parents.
    pub fn mkdir(&self, path: &str) -> Result<()> {
        self.simple("mkdir", path, FsOp::Mkdir { path })
    }

    /// Removes file `path`.
    pub fn remove(&self, path: &str) -> Result<()> {
        self.simple("remove", path, FsOp::Remove { path })
    }

    /// Removes directory `path` and everything in it.
    pub fn remove_dir(&self, path: &str) -> Result<()> {
        self.simple("remove_dir", path, FsOp::RemoveDir { path })
    }

    /// Copies file `src` to `dst` (creating `dst`'s parents).
    pub fn copy(&self, src: &str, dst: &str) -> Result<()> {
        self.simple("copy", src, FsOp::Copy { src, dst })
    }

    /// Moves `src` to `dst` (creating `dst`'s parents).
    pub fn rename(&self, src: &str, dst: &str) -> Result<()> {
        self.simple("rename", src, FsOp::Rename { src, dst })
    }

    /// Streams file `path` into `out`, chunk by chunk; returns the bytes read.
    pub fn read_to(&self, path: &str, out: &mut impl Write) -> Result<u64> {
        let call = self.client.begin(CallKind::Read, &FsRequest { op: FsOp::Read { path } })?;
        let mut total = 0u64;
        loop {
            let frame = call.recv()?;
            match decode(&frame)?.body {
                Body::FsData(d) => {
                    out.write_all(d.data)?;
                    total += d.data.len() as u64;
                }
                _ => {
                    outcome("read", path, &frame)?;
                    out.flush()?;
                    return Ok(total);
                }
            }
        }
    }

    /// The whole content of file `path`.
    pub fn read(&self, path: &str) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        self.read_to(path, &mut out)?;
        Ok(out)
    }

    /// The whole content of file `path`, as UTF-8.
    pub fn read_to_string(&self, path: &str) -> Result<String> {
        String::from_utf8(self.read(path)?).map_err(|e| {
            Error::Io(std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{path}: not UTF-8: {e}")))
        })
    }

    /// Replaces file `path` with `data` (creating parents). The new content
    /// appears at once when the write completes; until then readers see the
    /// old one.
    pub fn write(&self, path: &str, data: impl AsRef<[u8]>) -> Result<()> {
        self.write_from(path, &mut data.as_ref()).map(|_| ())
    }

    /// Replaces file `path` with everything `input` yields, streamed in
    /// chunks; returns the bytes written.
    pub fn write_from(&self, path: &str, input: &mut impl Read) -> Result<u64> {
        self.write_from_with_mode(path, input, None)
    }

    /// [`Fs::write_from`], also setting the permission bits (`0o644`...).
    pub fn write_from_with_mode(&self, path: &str, input: &mut impl Read, mode: Option<u32>) -> Result<u64> {
        let call = self.client.begin(CallKind::Write, &FsRequest { op: FsOp::Write { path, mode } })?;
        let mut buf = vec![0u8; wire::FS_CHUNK_SIZE];
        let mut total = 0u64;
        loop {
            let n = fill(input, &mut buf)?;
            // The guest answers early when the write fails (e.g. no space).
            if let Some(frame) = call.try_recv()? {
                outcome("write", path, &frame)?;
                return Err(Error::Protocol("write: the guest ended the write before its end".into()));
            }
            if n == 0 {
                break;
            }
            call.send_data(&buf[..n])?;
            total += n as u64;
        }
        call.send_data(&[])?;
        finish(&call, "write", path).map(|()| total)
    }

    /// Copies host file `host` into the guest at `path`, with its permissions.
    pub fn copy_from_host(&self, host: impl AsRef<Path>, path: &str) -> Result<u64> {
        use std::os::unix::fs::PermissionsExt;
        let mut file = std::fs::File::open(host.as_ref())?;
        let mode = file.metadata()?.permissions().mode() & 0o7777;
        self.write_from_with_mode(path, &mut file, Some(mode))
    }

    /// Copies guest file `path` to host file `host` (replacing it).
    pub fn copy_to_host(&self, path: &str, host: impl AsRef<Path>) -> Result<u64> {
        let mut file = std::io::BufWriter::new(std::fs::File::create(host.as_ref())?);
        self.read_to(path, &mut file)
    }
}

/// Waits for a write's answer.
fn finish(call: &Call<'_>, op: &'static str, path: &str) -> Result<()> {
    let frame = call.recv()?;
    outcome(op, path, &frame).map(|_| ())
}

/// Reads until `buf` is full or the input ends; returns the bytes read.
fn fill(input: &mut impl Read, buf: &mut [u8]) -> Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match input.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(n)
}
