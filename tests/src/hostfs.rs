//! A [`Filesystem`] over a real Linux directory (test-only): the oracle
//! the ramfs is checked against. It maps each path below a private root
//! and lets `std::fs` decide, as the reference agent does.
//!
//! The mapping prefixes the root's own path, so a path must not climb
//! above `/` with `..` (the kernel would leave the private root), and an
//! absolute symlink target is stored with the prefix (and read back
//! without it). Only a path of slashes is special: it maps to `<root>/.`,
//! which every call treats as Linux treats `/` except `rmdir` (`EINVAL`
//! for `.`, `EBUSY` for `/`), answered here.

use std::ffi::OsString;
use std::fs::{self, File, FileTimes, OpenOptions as StdOpenOptions, ReadDir};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use agent_core::{
    AttrError, AttrStep, EntryKind, Filesystem, FsError, Metadata, MissingParents, Mtime, OpenOptions, Owner, SetAttrs,
    mode,
};

/// A directory tree served as a filesystem; removed on drop.
pub struct HostFs {
    root: PathBuf,
    staging: PathBuf,
    buf: Vec<u8>,
    next_stage: u64,
}

/// An open file being read (Linux keeps its content even if the path is
/// replaced or removed: a snapshot, like the ramfs).
pub struct HostReader {
    file: File,
}

/// A staged write: a file outside the tree, renamed into place at commit.
pub struct HostWriter {
    file: File,
    staged: PathBuf,
    target: PathBuf,
}

/// An open file.
pub struct HostFile {
    file: File,
    append: bool,
}

/// An open directory, and its path (for its metadata, as the reference
/// takes it).
pub struct HostDir {
    iter: ReadDir,
    path: PathBuf,
}

static UNIQUE: AtomicU64 = AtomicU64::new(0);

/// The [`FsError`] for an `io::Error` of `std::fs`.
pub fn map(e: io::Error) -> FsError {
    if let Some(errno) = e.raw_os_error() {
        return FsError::from_errno(errno).unwrap_or(FsError::Io);
    }
    let text = e.to_string();
    if text == FsError::InvalidPath.description() {
        FsError::InvalidPath
    } else if text == FsError::NotRegularFile.description() {
        FsError::NotRegularFile
    } else if e.kind() == io::ErrorKind::InvalidInput {
        FsError::InvalidArgument
    } else {
        FsError::Io
    }
}

impl HostFs {
    /// A new empty tree under the system temp dir, root mode 0755.
    pub fn new() -> io::Result<HostFs> {
        let base = std::env::temp_dir().join(format!(
            "picosandbox-hostfs-{}-{}",
            std::process::id(),
            UNIQUE.fetch_add(1, Ordering::Relaxed)
        ));
        let root = base.join("root");
        let staging = base.join("staging");
        fs::create_dir_all(&root)?;
        fs::create_dir_all(&staging)?;
        fs::set_permissions(&root, fs::Permissions::from_mode(0o755))?;
        Ok(HostFs { root, staging, buf: vec![0; 64 * 1024], next_stage: 0 })
    }

    fn at(&self, path: &str) -> PathBuf {
        self.host(path)
    }

    /// The host path for a path as sent (see the module docs).
    pub fn host(&self, path: &str) -> PathBuf {
        if path.is_empty() {
            return PathBuf::new();
        }
        let mut out = self.root.clone().into_os_string().into_vec();
        if path.bytes().all(|b| b == b'/') {
            out.extend_from_slice(b"/.");
        } else {
            if !path.starts_with('/') {
                out.push(b'/');
            }
            out.extend_from_slice(path.as_bytes());
        }
        PathBuf::from(OsString::from_vec(out))
    }

    /// A path of the tree for a host path below the root.
    fn guest(&self, host: &Path) -> String {
        let text = host.to_string_lossy();
        let root = self.root.to_string_lossy();
        match text.strip_prefix(root.as_ref()) {
            Some("") => "/".to_string(),
            Some(rest) => rest.to_string(),
            None => text.into_owned(),
        }
    }

    /// `m` of the entry at host path `at`, a symlink's size as the tree
    /// sees its target (without the root's prefix).
    fn seen(&self, at: &Path, m: &fs::Metadata) -> Metadata {
        let mut out = metadata(m);
        if m.is_symlink()
            && let Ok(target) = fs::read_link(at)
            && target.is_absolute()
        {
            out.size = self.guest(&target).len() as u64;
        }
        out
    }

    /// Whether `path` resolves to the root itself.
    fn is_root(&self, path: &str) -> bool {
        fs::canonicalize(self.host(path)).is_ok_and(|p| p == self.root)
    }

    /// The topmost missing directory `create_dir_all(parent of dst)` would make.
    fn topmost_missing_parent(&self, dst: &str) -> Option<PathBuf> {
        let mut top = None;
        let mut at = agent_core::path::std_parent(dst)?;
        while !at.is_empty() && fs::symlink_metadata(self.host(at)).is_err() {
            top = Some(self.host(at));
            at = agent_core::path::std_parent(at)?;
        }
        top
    }

    fn make_parents(&mut self, dst: &str, parents: MissingParents) -> Result<Option<PathBuf>, FsError> {
        if parents == MissingParents::Fail {
            return Ok(None);
        }
        let top = self.topmost_missing_parent(dst);
        match agent_core::path::std_parent(dst) {
            Some(parent) if !parent.is_empty() => fs::create_dir_all(self.host(parent)).map_err(map)?,
            _ => {}
        }
        Ok(top)
    }
}

fn unix_time(secs: i64) -> SystemTime {
    if secs >= 0 {
        UNIX_EPOCH + Duration::from_secs(secs as u64)
    } else {
        UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
    }
}

fn times(atime: Option<i64>, mtime: Option<i64>) -> FileTimes {
    let mut t = FileTimes::new();
    if let Some(a) = atime {
        t = t.set_accessed(unix_time(a));
    }
    if let Some(m) = mtime {
        t = t.set_modified(unix_time(m));
    }
    t
}

impl Drop for HostFs {
    fn drop(&mut self) {
        if let Some(base) = self.root.parent() {
            let _ = fs::remove_dir_all(base);
        }
    }
}

fn metadata(m: &fs::Metadata) -> Metadata {
    let t = m.file_type();
    let kind = if t.is_dir() {
        EntryKind::Dir
    } else if t.is_file() {
        EntryKind::File
    } else if t.is_symlink() {
        EntryKind::Symlink
    } else {
        EntryKind::Other
    };
    Metadata {
        kind,
        size: m.len(),
        mode: m.mode(),
        modified: Mtime::Unix(m.mtime()),
        accessed: Mtime::Unix(m.atime()),
        changed: Mtime::Unix(m.ctime()),
        uid: m.uid(),
        gid: m.gid(),
    }
}

impl Filesystem for HostFs {
    type Reader = HostReader;
    type Writer = HostWriter;
    type File = HostFile;
    type Dir = HostDir;

    fn stat(&mut self, path: &str) -> Result<Metadata, FsError> {
        self.stat_at(path, false)
    }

    fn list(&mut self, path: &str, visit: &mut dyn FnMut(&str, &Metadata)) -> Result<(), FsError> {
        for entry in fs::read_dir(self.at(path)).map_err(map)? {
            let entry = entry.map_err(map)?;
            let m = fs::symlink_metadata(entry.path()).map_err(map)?;
            visit(&entry.file_name().to_string_lossy(), &self.seen(&entry.path(), &m));
        }
        Ok(())
    }

    fn mkdir(&mut self, path: &str, now_ns: u64) -> Result<(), FsError> {
        self.create_dir_all(path, None, Owner::ROOT, now_ns)
    }

    fn remove(&mut self, path: &str, _now_ns: u64) -> Result<(), FsError> {
        fs::remove_file(self.at(path)).map_err(map)
    }

    fn remove_dir(&mut self, path: &str, now_ns: u64) -> Result<(), FsError> {
        self.remove_dir_at(path, true, now_ns)
    }

    fn copy(&mut self, src: &str, dst: &str, now_ns: u64) -> Result<(), FsError> {
        self.copy_at(src, dst, MissingParents::Create, now_ns).map_err(|e| match e {
            FsError::NotRegularFile => FsError::IsADirectory,
            e => e,
        })
    }

    fn rename(&mut self, src: &str, dst: &str, now_ns: u64) -> Result<(), FsError> {
        self.rename_at(src, dst, MissingParents::Create, now_ns)
    }

    fn open_read(&mut self, path: &str) -> Result<(HostReader, u64), FsError> {
        let file = File::open(self.at(path)).map_err(map)?;
        let m = file.metadata().map_err(map)?;
        if m.is_dir() {
            return Err(FsError::IsADirectory);
        }
        Ok((HostReader { file }, m.len()))
    }

    fn read_at(&mut self, r: &mut HostReader, offset: u64, max: usize) -> Result<&[u8], FsError> {
        r.file.seek(SeekFrom::Start(offset)).map_err(map)?;
        let n = max.min(self.buf.len());
        let got = r.file.read(&mut self.buf[..n]).map_err(map)?;
        Ok(&self.buf[..got])
    }

    fn close_read(&mut self, _r: HostReader) {}

    fn begin_write(&mut self, path: &str) -> Result<HostWriter, FsError> {
        let target = self.at(path);
        match fs::symlink_metadata(&target) {
            Ok(m) if m.is_dir() => return Err(FsError::IsADirectory),
            // What a symlink leads to, the commit's open decides.
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                // A file where a parent directory must be?
                let mut at = self.root.clone();
                for c in agent_core::path::components(path) {
                    at.push(c);
                    match fs::metadata(&at) {
                        Ok(m) if !m.is_dir() && at != target => return Err(FsError::NotADirectory),
                        Ok(_) => {}
                        Err(_) => break,
                    }
                }
            }
            // A loop is met again where the commit makes the parents.
            Err(e) if e.raw_os_error() == Some(agent_core::errno::ELOOP) => {}
            // `file/`: creating it is `open(O_CREAT)` with a trailing slash,
            // which Linux refuses with EISDIR.
            Err(e)
                if e.raw_os_error() == Some(agent_core::errno::ENOTDIR)
                    && path.ends_with('/')
                    && fs::metadata(self.at(path.trim_end_matches('/'))).is_ok_and(|m| m.is_file()) =>
            {
                return Err(FsError::IsADirectory);
            }
            Err(e) => return Err(map(e)),
        }
        self.next_stage += 1;
        let staged = self.staging.join(self.next_stage.to_string());
        let file = File::create(&staged).map_err(map)?;
        Ok(HostWriter { file, staged, target })
    }

    fn write(&mut self, w: &mut HostWriter, data: &[u8]) -> Result<(), FsError> {
        w.file.write_all(data).map_err(map)
    }

    fn commit_write(&mut self, w: HostWriter, perm: Option<u32>, _now_ns: u64) -> Result<(), FsError> {
        let result = (|| {
            if let Some(parent) = w.target.parent() {
                fs::create_dir_all(parent).map_err(map)?;
            }
            // Through a symlink, as `File::create` writes.
            let mode = match (perm, fs::metadata(&w.target)) {
                (_, Ok(m)) if m.is_dir() => return Err(FsError::IsADirectory),
                (Some(p), _) => p & mode::PERMISSIONS,
                (None, Ok(m)) => m.mode() & mode::PERMISSIONS,
                (None, Err(_)) => mode::DEFAULT_FILE,
            };
            fs::set_permissions(&w.staged, fs::Permissions::from_mode(mode)).map_err(map)?;
            fs::copy(&w.staged, &w.target).map(|_| ()).map_err(map)
        })();
        let _ = fs::remove_file(&w.staged);
        result
    }

    fn abort_write(&mut self, w: HostWriter) {
        let _ = fs::remove_file(w.staged);
    }

    fn set_wall_clock(&mut self, _now_ns: u64, _unix_ns: i64) {}

    fn stat_at(&mut self, path: &str, follow: bool) -> Result<Metadata, FsError> {
        let at = self.host(path);
        let m = if follow { fs::metadata(&at) } else { fs::symlink_metadata(&at) };
        m.map(|m| self.seen(&at, &m)).map_err(map)
    }

    fn read_link(&mut self, path: &str, out: &mut agent_core::path::PathBuf) -> Result<(), FsError> {
        let target = fs::read_link(self.host(path)).map_err(map)?;
        let text = if target.is_absolute() { self.guest(&target) } else { target.to_string_lossy().into_owned() };
        out.clear();
        out.push_str(&text).map_err(|_| FsError::PathTooLong)
    }

    fn canonicalize(&mut self, path: &str, out: &mut agent_core::path::PathBuf) -> Result<(), FsError> {
        let real = fs::canonicalize(self.host(path)).map_err(map)?;
        let text = self.guest(&real);
        out.clear();
        out.push_str(&text).map_err(|_| FsError::PathTooLong)
    }

    fn symlink(&mut self, target: &str, link: &str, owner: Owner, _now_ns: u64) -> Result<(), FsError> {
        let target = if target.starts_with('/') { self.host(target) } else { PathBuf::from(target) };
        let link = self.host(link);
        std::os::unix::fs::symlink(target, &link).map_err(map)?;
        if owner != Owner::ROOT {
            std::os::unix::fs::lchown(&link, Some(owner.uid), Some(owner.gid)).map_err(map)?;
        }
        Ok(())
    }

    fn create_dir_all(&mut self, path: &str, perm: Option<u32>, _owner: Owner, _now_ns: u64) -> Result<(), FsError> {
        let at = self.host(path);
        fs::create_dir_all(&at).map_err(map)?;
        if let Some(perm) = perm {
            fs::set_permissions(&at, fs::Permissions::from_mode(perm)).map_err(map)?;
        }
        Ok(())
    }

    fn remove_dir_at(&mut self, path: &str, recursive: bool, _now_ns: u64) -> Result<(), FsError> {
        let at = self.host(path);
        if !recursive {
            if !path.is_empty() && path.bytes().all(|b| b == b'/') {
                return Err(FsError::Busy);
            }
            return fs::remove_dir(at).map_err(map);
        }
        let m = fs::symlink_metadata(&at).map_err(map)?;
        if m.is_dir() && self.is_root(path) {
            return Err(FsError::Busy);
        }
        fs::remove_dir_all(at).map_err(map)
    }

    fn copy_at(&mut self, src: &str, dst: &str, parents: MissingParents, _now_ns: u64) -> Result<(), FsError> {
        let from = self.host(src);
        if parents == MissingParents::Create {
            if !fs::metadata(&from).map_err(map)?.is_file() {
                return Err(FsError::NotRegularFile);
            }
            if dst.contains('\0') {
                return Err(FsError::InvalidPath);
            }
        }
        let made = self.make_parents(dst, parents)?;
        let result = fs::copy(from, self.host(dst)).map(|_| ()).map_err(map);
        if let (Err(_), Some(top)) = (&result, made) {
            let _ = fs::remove_dir_all(top);
        }
        result
    }

    fn rename_at(&mut self, src: &str, dst: &str, parents: MissingParents, _now_ns: u64) -> Result<(), FsError> {
        let from = self.host(src);
        if parents == MissingParents::Create {
            fs::symlink_metadata(&from).map_err(map)?;
            if dst.contains('\0') {
                return Err(FsError::InvalidPath);
            }
        }
        let made = self.make_parents(dst, parents)?;
        let result = fs::rename(from, self.host(dst)).map_err(map);
        if let (Err(_), Some(top)) = (&result, made) {
            let _ = fs::remove_dir_all(top);
        }
        result
    }

    fn set_attrs(&mut self, path: &str, follow: bool, a: &SetAttrs, _now_ns: u64) -> Result<(), AttrError> {
        let fail = |step| move |e: io::Error| AttrError { step, error: map(e) };
        let at = self.host(path);
        if let Some(size) = a.size {
            let file = StdOpenOptions::new().write(true).open(&at).map_err(fail(AttrStep::OpenForTruncate))?;
            file.set_len(size).map_err(fail(AttrStep::SetLen))?;
        }
        if let Some(perm) = a.mode {
            if !follow && fs::symlink_metadata(&at).map_err(fail(AttrStep::LstatBeforeChmod))?.is_symlink() {
                return Err(AttrError { step: AttrStep::LstatBeforeChmod, error: FsError::SymlinkChmod });
            }
            fs::set_permissions(&at, fs::Permissions::from_mode(perm)).map_err(fail(AttrStep::Chmod))?;
        }
        if a.uid.is_some() || a.gid.is_some() {
            let result = if follow {
                std::os::unix::fs::chown(&at, a.uid, a.gid)
            } else {
                std::os::unix::fs::lchown(&at, a.uid, a.gid)
            };
            result.map_err(fail(AttrStep::Chown))?;
        }
        if a.atime.is_some() || a.mtime.is_some() {
            let m = if follow { fs::metadata(&at) } else { fs::symlink_metadata(&at) };
            let m = m.map_err(fail(AttrStep::StatBeforeUtimensat))?;
            if m.is_symlink() {
                // std cannot set a symlink's own times: not compared.
                return Err(AttrError { step: AttrStep::Utimensat, error: FsError::Unsupported });
            }
            let file = File::open(&at).map_err(fail(AttrStep::Utimensat))?;
            file.set_times(times(a.atime, a.mtime)).map_err(fail(AttrStep::Utimensat))?;
        }
        Ok(())
    }

    fn open(&mut self, path: &str, o: &OpenOptions, _now_ns: u64) -> Result<HostFile, FsError> {
        let mut options = StdOpenOptions::new();
        options
            .read(o.read)
            .write(o.write)
            .append(o.append)
            .create(o.create)
            .truncate(o.truncate)
            .create_new(o.create_new);
        if let Some(m) = o.mode {
            options.mode(m);
        }
        let file = options.open(self.host(path)).map_err(map)?;
        Ok(HostFile { file, append: o.append })
    }

    fn file_read(&mut self, f: &mut HostFile, offset: u64, max: usize, _now_ns: u64) -> Result<&[u8], FsError> {
        let n = max.min(self.buf.len());
        let got = f.file.read_at(&mut self.buf[..n], offset).map_err(map)?;
        Ok(&self.buf[..got])
    }

    fn file_write(&mut self, f: &mut HostFile, offset: u64, data: &[u8], _now_ns: u64) -> Result<u64, FsError> {
        f.file.write_all_at(data, offset).map_err(map)?;
        if f.append {
            return Ok(f.file.metadata().map_err(map)?.len());
        }
        Ok(offset + data.len() as u64)
    }

    fn file_stat(&mut self, f: &HostFile) -> Metadata {
        metadata(&f.file.metadata().expect("fstat of an open file"))
    }

    fn file_set_len(&mut self, f: &mut HostFile, size: u64, _now_ns: u64) -> Result<(), FsError> {
        f.file.set_len(size).map_err(map)
    }

    fn file_set_attrs(&mut self, f: &mut HostFile, a: &SetAttrs, _now_ns: u64) -> Result<(), AttrError> {
        let fail = |step| move |e: io::Error| AttrError { step, error: map(e) };
        if let Some(size) = a.size {
            f.file.set_len(size).map_err(fail(AttrStep::SetLen))?;
        }
        if let Some(perm) = a.mode {
            f.file.set_permissions(fs::Permissions::from_mode(perm)).map_err(fail(AttrStep::Chmod))?;
        }
        if a.uid.is_some() || a.gid.is_some() {
            std::os::unix::fs::fchown(&f.file, a.uid, a.gid).map_err(fail(AttrStep::Fchown))?;
        }
        if a.atime.is_some() || a.mtime.is_some() {
            f.file.set_times(times(a.atime, a.mtime)).map_err(fail(AttrStep::Futimens))?;
        }
        Ok(())
    }

    fn close(&mut self, _f: HostFile) {}

    fn open_dir(&mut self, path: &str) -> Result<HostDir, FsError> {
        let at = self.host(path);
        let iter = fs::read_dir(&at).map_err(map)?;
        Ok(HostDir { iter, path: at })
    }

    fn read_dir(
        &mut self,
        d: &mut HostDir,
        limit: usize,
        visit: &mut dyn FnMut(&str, &Metadata),
    ) -> Result<usize, FsError> {
        let mut n = 0;
        while n < limit {
            let Some(entry) = d.iter.next() else { break };
            let entry = entry.map_err(map)?;
            let m = fs::symlink_metadata(entry.path()).map_err(map)?;
            visit(&entry.file_name().to_string_lossy(), &self.seen(&entry.path(), &m));
            n += 1;
        }
        Ok(n)
    }

    fn dir_stat(&mut self, d: &HostDir) -> Metadata {
        metadata(&fs::metadata(&d.path).expect("stat of an open directory"))
    }

    fn close_dir(&mut self, _d: HostDir) {}
}
