//! The filesystem API, blocking, after microsandbox's `SandboxFs`.
//!
//! Streams never hold a whole file: [`Fs::read_to`] writes each chunk out
//! as it arrives and [`Fs::write_from`] sends the reader's bytes chunk by
//! chunk ([`wire::FS_CHUNK_SIZE`] at most in memory).

use std::io::{Read, Write};
use std::path::Path;

use wire::{Body, FsEntryInfo, FsOp, FsOpenOptions, FsRequest, FsResponse, FsResponseData, FsSetAttrs};

use crate::client::{Call, Client, decode};
use crate::error::{Error, Result};
use crate::local::Download;
use crate::proto::CallKind;

/// What an entry is: the protocol's kind, keeping a kind this client does
/// not know as the guest named it.
pub type EntryKind = wire::EntryKind<String>;

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
    /// Owner user id (answers of the current dialect carry it).
    pub uid: Option<u32>,
    /// Owner group id (answers of the current dialect carry it).
    pub gid: Option<u32>,
    /// Last access in Unix seconds (answers of the current dialect carry it).
    pub accessed: Option<i64>,
}

impl Entry {
    fn from_wire(e: &FsEntryInfo<'_>) -> Entry {
        let kind = e.kind.map(str::to_string);
        Entry {
            path: e.path.to_string(),
            kind,
            size: e.size,
            mode: e.mode,
            modified: e.modified,
            uid: e.extra.map(|x| x.uid),
            gid: e.extra.map(|x| x.gid),
            accessed: e.extra.and_then(|x| x.atime),
        }
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
        let call = self.client.begin(CallKind::Request, &FsRequest { op, bulk: None })?;
        call.recv()
    }

    fn simple(&self, name: &'static str, path: &str, op: FsOp<'_>) -> Result<()> {
        let frame = self.request(op)?;
        outcome(name, path, &frame).map(|_| ())
    }

    /// Metadata of `path` (a final symlink is not followed).
    pub fn stat(&self, path: &str) -> Result<Entry> {
        let frame = self.request(FsOp::Stat { path, follow_symlink: None })?;
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

    /// Removes directory `path`, which must be empty (`std::fs::remove_dir`).
    pub fn remove_dir(&self, path: &str) -> Result<()> {
        self.simple("remove_dir", path, FsOp::RemoveDir { path, recursive: Some(false) })
    }

    /// Removes directory `path` and everything in it (`std::fs::remove_dir_all`).
    pub fn remove_dir_all(&self, path: &str) -> Result<()> {
        self.simple("remove_dir", path, FsOp::RemoveDir { path, recursive: Some(true) })
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
        let call = self.client.begin(CallKind::Read, &FsRequest { bulk: None, op: FsOp::Read { path } })?;
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
        let call = self.client.begin(CallKind::Write, &FsRequest { bulk: None, op: FsOp::Write { path, mode } })?;
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
        let (mut file, mode) = open_host(host.as_ref())?;
        self.write_from_with_mode(path, &mut file, Some(mode)).map_err(|e| match e {
            Error::Io(e) => Error::local("read", host.as_ref(), e),
            other => other,
        })
    }

    /// Copies guest file `path` to host file `host`, replacing it only when
    /// the whole file arrived and the guest said ok: until then the bytes
    /// go to a temporary file next to it ([`Download`]), removed on any
    /// failure.
    pub fn copy_to_host(&self, path: &str, host: impl AsRef<Path>) -> Result<u64> {
        let mut download = Download::create(host)?;
        let n = self.read_to(path, &mut download).map_err(|e| download.name_error(e))?;
        download.commit()?;
        Ok(n)
    }
}

/// Opens a host file to send, with its permission bits; errors name it.
pub fn open_host(host: &Path) -> Result<(std::fs::File, u32)> {
    use std::os::unix::fs::PermissionsExt;
    let file = std::fs::File::open(host).map_err(|e| Error::local("open", host, e))?;
    let meta = file.metadata().map_err(|e| Error::local("open", host, e))?;
    if meta.is_dir() {
        return Err(Error::local(
            "read",
            host,
            std::io::Error::from_raw_os_error(rustix::io::Errno::ISDIR.raw_os_error()),
        ));
    }
    Ok((file, meta.permissions().mode() & 0o7777))
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

/// How [`Fs::open`] opens a file, as `std::fs::OpenOptions`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OpenOptions {
    read: bool,
    write: bool,
    append: bool,
    create: bool,
    truncate: bool,
    create_new: bool,
    mode: Option<u32>,
}

impl OpenOptions {
    /// All options off.
    pub fn new() -> Self {
        Self::default()
    }

    /// Open for reading.
    pub fn read(&mut self, on: bool) -> &mut Self {
        self.read = on;
        self
    }

    /// Open for writing.
    pub fn write(&mut self, on: bool) -> &mut Self {
        self.write = on;
        self
    }

    /// Every write goes to the end.
    pub fn append(&mut self, on: bool) -> &mut Self {
        self.append = on;
        self
    }

    /// Create the file if it is missing (its directory must exist).
    pub fn create(&mut self, on: bool) -> &mut Self {
        self.create = on;
        self
    }

    /// Truncate the file when it opens.
    pub fn truncate(&mut self, on: bool) -> &mut Self {
        self.truncate = on;
        self
    }

    /// Create the file, failing if anything exists at the path.
    pub fn create_new(&mut self, on: bool) -> &mut Self {
        self.create_new = on;
        self
    }

    /// Permission bits of a created file (before the guest's umask 022).
    pub fn mode(&mut self, mode: u32) -> &mut Self {
        self.mode = Some(mode);
        self
    }

    fn wire(&self) -> FsOpenOptions<'static> {
        FsOpenOptions {
            read: self.read,
            write: self.write,
            append: self.append,
            create: self.create,
            truncate: self.truncate,
            create_new: self.create_new,
            mode: self.mode,
            user: None,
        }
    }
}

/// Entries one `ReadDir` round trip asks for.
pub const READ_DIR_BATCH: u32 = 64;

impl<'c> Fs<'c> {
    fn handle_answer(&self, op: &'static str, path: &str, frame: &[u8]) -> Result<u64> {
        match outcome(op, path, frame)?.data {
            Some(FsResponseData::Handle(h)) => Ok(h),
            _ => Err(Error::Protocol(format!("{op}: the response carries no handle"))),
        }
    }

    fn path_answer(&self, op: &'static str, path: &str, frame: &[u8]) -> Result<String> {
        match outcome(op, path, frame)?.data {
            Some(FsResponseData::Path(p)) => Ok(p.to_string()),
            _ => Err(Error::Protocol(format!("{op}: the response carries no path"))),
        }
    }

    fn stat_answer(&self, op: &'static str, path: &str, frame: &[u8]) -> Result<Entry> {
        match outcome(op, path, frame)?.data {
            Some(FsResponseData::Stat(info)) => Ok(Entry::from_wire(&info)),
            _ => Err(Error::Protocol(format!("{op}: the response carries no metadata"))),
        }
    }

    /// Metadata of `path`, following a final symlink (`std::fs::metadata`),
    /// with owner and access time.
    pub fn metadata(&self, path: &str) -> Result<Entry> {
        let frame = self.request(FsOp::Stat { path, follow_symlink: Some(true) })?;
        self.stat_answer("stat", path, &frame)
    }

    /// Metadata of `path` itself, a symlink included (`std::fs::symlink_metadata`).
    pub fn symlink_metadata(&self, path: &str) -> Result<Entry> {
        let frame = self.request(FsOp::Stat { path, follow_symlink: Some(false) })?;
        self.stat_answer("stat", path, &frame)
    }

    /// The absolute path with every symlink, `.` and `..` resolved.
    pub fn canonicalize(&self, path: &str) -> Result<String> {
        let frame = self.request(FsOp::RealPath { path })?;
        self.path_answer("realpath", path, &frame)
    }

    /// Creates symlink `link` pointing at `target` (stored as given).
    pub fn symlink(&self, target: &str, link: &str) -> Result<()> {
        self.simple("symlink", link, FsOp::Symlink { target, link_path: link, user: None })
    }

    /// The target of symlink `path`.
    pub fn read_link(&self, path: &str) -> Result<String> {
        let frame = self.request(FsOp::ReadLink { path })?;
        self.path_answer("readlink", path, &frame)
    }

    fn set_attrs(&self, path: &str, attrs: FsSetAttrs) -> Result<()> {
        self.simple("setstat", path, FsOp::SetStat { path, follow_symlink: true, attrs })
    }

    /// Sets the permission bits of `path` (following a symlink).
    pub fn set_permissions(&self, path: &str, mode: u32) -> Result<()> {
        self.set_attrs(path, FsSetAttrs { mode: Some(mode), ..FsSetAttrs::default() })
    }

    /// Sets the access and modification times of `path` (Unix seconds;
    /// `None` leaves one as it is).
    pub fn set_times(&self, path: &str, accessed: Option<i64>, modified: Option<i64>) -> Result<()> {
        self.set_attrs(path, FsSetAttrs { atime: accessed, mtime: modified, ..FsSetAttrs::default() })
    }

    /// Truncates or zero-extends file `path` to `size` bytes.
    pub fn set_len(&self, path: &str, size: u64) -> Result<()> {
        self.set_attrs(path, FsSetAttrs { size: Some(size), ..FsSetAttrs::default() })
    }

    /// Opens file `path` with `options`: reads and writes at offsets go
    /// through the handle, and are visible to other readers at once.
    pub fn open(&self, path: &str, options: &OpenOptions) -> Result<File<'c>> {
        let frame = self.request(FsOp::OpenFile { path, options: options.wire() })?;
        let handle = self.handle_answer("open", path, &frame)?;
        Ok(File { fs: *self, handle, path: path.to_string(), open: true })
    }

    /// The entries of directory `path`, streamed in batches of
    /// [`READ_DIR_BATCH`] from an open directory handle.
    pub fn read_dir(&self, path: &str) -> Result<ReadDir<'c>> {
        let frame = self.request(FsOp::OpenDir { path })?;
        let handle = self.handle_answer("opendir", path, &frame)?;
        Ok(ReadDir {
            fs: *self,
            handle,
            path: path.to_string(),
            batch: Vec::new().into_iter(),
            done: false,
            closed: false,
        })
    }

    fn close_handle(&self, handle: u64, path: &str) -> Result<()> {
        self.simple("close", path, FsOp::CloseHandle { handle })
    }
}

/// An open guest file ([`Fs::open`]); closed by [`File::close`] or on drop.
pub struct File<'c> {
    fs: Fs<'c>,
    handle: u64,
    path: String,
    open: bool,
}

impl File<'_> {
    /// The guest's handle number.
    pub fn handle(&self) -> u64 {
        self.handle
    }

    /// Streams up to `len` bytes from `offset` (to the end if `None`) into
    /// `out`; returns how many. Nothing at or past the end.
    pub fn read_at_to(&self, offset: u64, len: Option<u64>, out: &mut impl Write) -> Result<u64> {
        let request = FsRequest::new(FsOp::ReadHandle { handle: self.handle, offset, len });
        let call = self.fs.client.begin(CallKind::Read, &request)?;
        let mut total = 0u64;
        loop {
            let frame = call.recv()?;
            match decode(&frame)?.body {
                Body::FsData(d) => {
                    out.write_all(d.data)?;
                    total += d.data.len() as u64;
                }
                _ => {
                    outcome("read", &self.path, &frame)?;
                    return Ok(total);
                }
            }
        }
    }

    /// Up to `len` bytes from `offset`.
    pub fn read_at(&self, offset: u64, len: u64) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        self.read_at_to(offset, Some(len), &mut out)?;
        Ok(out)
    }

    /// Writes everything `input` yields at `offset` (at the end for an
    /// append file), streamed in chunks; returns the bytes written.
    pub fn write_from_at(&self, offset: u64, input: &mut impl Read) -> Result<u64> {
        let request = FsRequest::new(FsOp::WriteHandle { handle: self.handle, offset, len: None });
        let call = self.fs.client.begin(CallKind::Write, &request)?;
        let mut buf = vec![0u8; wire::FS_CHUNK_SIZE];
        let mut total = 0u64;
        loop {
            let n = fill(input, &mut buf)?;
            if let Some(frame) = call.try_recv()? {
                outcome("write", &self.path, &frame)?;
                return Err(Error::Protocol("write: the guest ended the write before its end".into()));
            }
            if n == 0 {
                break;
            }
            call.send_data(&buf[..n])?;
            total += n as u64;
        }
        call.send_data(&[])?;
        finish(&call, "write", &self.path).map(|()| total)
    }

    /// Writes `data` at `offset`; the guest checks the byte count.
    pub fn write_at(&self, offset: u64, data: &[u8]) -> Result<()> {
        let len = Some(data.len() as u64);
        let call = self
            .fs
            .client
            .begin(CallKind::Write, &FsRequest::new(FsOp::WriteHandle { handle: self.handle, offset, len }))?;
        for chunk in data.chunks(wire::FS_CHUNK_SIZE) {
            if let Some(frame) = call.try_recv()? {
                outcome("write", &self.path, &frame)?;
                return Err(Error::Protocol("write: the guest ended the write before its end".into()));
            }
            call.send_data(chunk)?;
        }
        call.send_data(&[])?;
        finish(&call, "write", &self.path)
    }

    fn set_attrs(&self, attrs: FsSetAttrs) -> Result<()> {
        self.fs.simple("fsetstat", &self.path, FsOp::FSetStat { handle: self.handle, attrs })
    }

    /// Truncates or zero-extends the file to `size` bytes.
    pub fn set_len(&self, size: u64) -> Result<()> {
        self.set_attrs(FsSetAttrs { size: Some(size), ..FsSetAttrs::default() })
    }

    /// Sets the permission bits.
    pub fn set_permissions(&self, mode: u32) -> Result<()> {
        self.set_attrs(FsSetAttrs { mode: Some(mode), ..FsSetAttrs::default() })
    }

    /// Sets the access and modification times (Unix seconds).
    pub fn set_times(&self, accessed: Option<i64>, modified: Option<i64>) -> Result<()> {
        self.set_attrs(FsSetAttrs { atime: accessed, mtime: modified, ..FsSetAttrs::default() })
    }

    /// Metadata of the open file (its `path` is the one it was opened with).
    pub fn metadata(&self) -> Result<Entry> {
        let frame = self.fs.request(FsOp::FStat { handle: self.handle })?;
        self.fs.stat_answer("fstat", &self.path, &frame)
    }

    /// Closes the handle, reporting a failure (drop closes it silently).
    pub fn close(mut self) -> Result<()> {
        self.open = false;
        self.fs.close_handle(self.handle, &self.path)
    }
}

impl Drop for File<'_> {
    fn drop(&mut self) {
        if self.open {
            let _ = self.fs.close_handle(self.handle, &self.path);
        }
    }
}

/// The entries of a guest directory ([`Fs::read_dir`]), fetched in
/// batches; the handle closes at the end or on drop.
pub struct ReadDir<'c> {
    fs: Fs<'c>,
    handle: u64,
    path: String,
    batch: std::vec::IntoIter<Entry>,
    done: bool,
    closed: bool,
}

impl Iterator for ReadDir<'_> {
    type Item = Result<Entry>;

    fn next(&mut self) -> Option<Result<Entry>> {
        loop {
            if let Some(entry) = self.batch.next() {
                return Some(Ok(entry));
            }
            if self.done {
                return None;
            }
            let frame = match self.fs.request(FsOp::ReadDir { handle: self.handle, limit: Some(READ_DIR_BATCH) }) {
                Ok(frame) => frame,
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            };
            let entries = match outcome("readdir", &self.path, &frame).map(|r| r.data) {
                Ok(Some(FsResponseData::List(list))) => list.iter().map(|e| Entry::from_wire(&e)).collect::<Vec<_>>(),
                Ok(_) => {
                    self.done = true;
                    return Some(Err(Error::Protocol("readdir: the response carries no entries".into())));
                }
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            };
            if entries.is_empty() {
                self.done = true;
                self.closed = true;
                let _ = self.fs.close_handle(self.handle, &self.path);
                return None;
            }
            self.batch = entries.into_iter();
        }
    }
}

impl Drop for ReadDir<'_> {
    fn drop(&mut self) {
        if !self.closed {
            let _ = self.fs.close_handle(self.handle, &self.path);
        }
    }
}
