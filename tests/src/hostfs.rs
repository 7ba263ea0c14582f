//! A [`Filesystem`] over a real Linux directory (test-only): the oracle
//! the ramfs is checked against. It maps each normalized path below a
//! private root and lets `std::fs` decide, as the reference agent does.

use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use agent_core::{EntryKind, Filesystem, FsError, Metadata, Mtime, mode};

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

static UNIQUE: AtomicU64 = AtomicU64::new(0);

fn map(e: io::Error) -> FsError {
    match e.raw_os_error() {
        Some(2) => FsError::NotFound,
        Some(20) => FsError::NotADirectory,
        Some(21) => FsError::IsADirectory,
        Some(17) => FsError::AlreadyExists,
        Some(39) => FsError::DirectoryNotEmpty,
        Some(28) => FsError::NoSpace,
        Some(36) => FsError::NameTooLong,
        Some(22) => FsError::InvalidArgument,
        Some(16) => FsError::Busy,
        _ => FsError::Io,
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

    /// Creates the missing parents of `path`, as the reference agent does
    /// (`create_dir_all` on the parent) before a copy or rename.
    fn make_parent(&mut self, path: &str, now_ns: u64) -> Result<(), FsError> {
        match agent_core::path::split(path) {
            Some((parent, _)) => self.mkdir(parent, now_ns),
            None => Ok(()),
        }
    }

    fn at(&self, path: &str) -> PathBuf {
        match path.trim_start_matches('/') {
            // `join("")` would add a trailing `/`, which changes rename(2).
            "" => self.root.clone(),
            rest => self.root.join(rest),
        }
    }
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
    Metadata { kind, size: m.len(), mode: m.mode(), modified: Mtime::Unix(m.mtime()) }
}

impl Filesystem for HostFs {
    type Reader = HostReader;
    type Writer = HostWriter;

    fn stat(&mut self, path: &str) -> Result<Metadata, FsError> {
        fs::symlink_metadata(self.at(path)).map(|m| metadata(&m)).map_err(map)
    }

    fn list(&mut self, path: &str, visit: &mut dyn FnMut(&str, &Metadata)) -> Result<(), FsError> {
        for entry in fs::read_dir(self.at(path)).map_err(map)? {
            let entry = entry.map_err(map)?;
            let m = entry.metadata().map_err(map)?;
            visit(&entry.file_name().to_string_lossy(), &metadata(&m));
        }
        Ok(())
    }

    fn mkdir(&mut self, path: &str, _now_ns: u64) -> Result<(), FsError> {
        fs::create_dir_all(self.at(path)).map_err(map)
    }

    fn remove(&mut self, path: &str, _now_ns: u64) -> Result<(), FsError> {
        fs::remove_file(self.at(path)).map_err(map)
    }

    fn remove_dir(&mut self, path: &str, _now_ns: u64) -> Result<(), FsError> {
        let at = self.at(path);
        if !fs::symlink_metadata(&at).map_err(map)?.is_dir() {
            return Err(FsError::NotADirectory);
        }
        if path == "/" {
            return Err(FsError::Busy);
        }
        fs::remove_dir_all(at).map_err(map)
    }

    fn copy(&mut self, src: &str, dst: &str, now_ns: u64) -> Result<(), FsError> {
        self.make_parent(dst, now_ns)?;
        let (from, to) = (self.at(src), self.at(dst));
        if fs::metadata(&from).map_err(map)?.is_dir() {
            return Err(FsError::IsADirectory);
        }
        fs::copy(from, to).map(|_| ()).map_err(map)
    }

    fn rename(&mut self, src: &str, dst: &str, now_ns: u64) -> Result<(), FsError> {
        self.make_parent(dst, now_ns)?;
        if src == "/" {
            return Err(FsError::Busy);
        }
        fs::rename(self.at(src), self.at(dst)).map_err(map)
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
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                // A file where a parent directory must be?
                let mut at = self.root.clone();
                for c in agent_core::path::components(path) {
                    at.push(c);
                    match fs::symlink_metadata(&at) {
                        Ok(m) if !m.is_dir() && at != target => return Err(FsError::NotADirectory),
                        Ok(_) => {}
                        Err(_) => break,
                    }
                }
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
            let mode = match (perm, fs::symlink_metadata(&w.target)) {
                (_, Ok(m)) if m.is_dir() => return Err(FsError::IsADirectory),
                (Some(p), _) => p & mode::PERMISSIONS,
                (None, Ok(m)) => m.mode() & mode::PERMISSIONS,
                (None, Err(_)) => mode::DEFAULT_FILE,
            };
            fs::set_permissions(&w.staged, fs::Permissions::from_mode(mode)).map_err(map)?;
            fs::rename(&w.staged, &w.target).map_err(map)
        })();
        if result.is_err() {
            let _ = fs::remove_file(&w.staged);
        }
        result
    }

    fn abort_write(&mut self, w: HostWriter) {
        let _ = fs::remove_file(w.staged);
    }
}
