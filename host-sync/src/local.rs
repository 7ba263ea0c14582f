//! Host files the sandbox writes: a download lands whole or not at all,
//! and private names (downloads in progress, runtime directories) are
//! random, so nobody can guess or pre-create them.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::error::{Error, Result};
use crate::sync::lock;

/// How many fresh random names are tried before creating a private file or
/// directory gives up. A name collides only when someone made it first;
/// with 64 random bits, 16 collisions in a row mean the directory is being
/// attacked or broken, not unlucky.
pub const UNIQUE_NAME_ATTEMPTS: u32 = 16;

/// 64 random bits from the kernel (`getrandom`).
pub fn random_u64() -> io::Result<u64> {
    let mut bytes = [0u8; 8];
    let mut filled = 0;
    while filled < bytes.len() {
        match rustix::rand::getrandom(&mut bytes[filled..], rustix::rand::GetRandomFlags::empty()) {
            Ok(n) => filled += n,
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(u64::from_le_bytes(bytes))
}

/// Calls `create` with names made from fresh random numbers until one does
/// not exist yet (`create` fails with `AlreadyExists`), at most
/// [`UNIQUE_NAME_ATTEMPTS`] times; `random` supplies the numbers.
pub fn create_unique<T>(
    mut random: impl FnMut() -> io::Result<u64>,
    mut create: impl FnMut(u64) -> io::Result<T>,
) -> io::Result<T> {
    for _ in 0..UNIQUE_NAME_ATTEMPTS {
        match create(random()?) {
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            other => return other,
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AlreadyExists,
        format!("{UNIQUE_NAME_ATTEMPTS} random names in a row were already taken"),
    ))
}

/// Downloads in progress, so a signal handler can remove them before the
/// process exits ([`exit_removing_partial_downloads`]).
static PARTIAL: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

fn partial() -> std::sync::MutexGuard<'static, Vec<PathBuf>> {
    lock(&PARTIAL)
}

/// Removes the temporary files of every download still in progress in
/// this process, then exits with `code`: for a signal handler. No download
/// can start in between (starting one waits for the same lock).
pub fn exit_removing_partial_downloads(code: i32) -> ! {
    let mut registry = partial();
    remove_all(&mut registry);
    std::process::exit(code)
}

fn remove_all(registry: &mut Vec<PathBuf>) {
    for path in registry.drain(..) {
        let _ = std::fs::remove_file(path);
    }
}

/// A host file being downloaded: the bytes go to a temporary file next to
/// the destination (created exclusively, with a random name and the mode
/// of any new file), which replaces the destination only at
/// [`Download::commit`]. Dropped without a commit, it removes the
/// temporary file and the destination is untouched.
pub struct Download {
    dest: PathBuf,
    temp: PathBuf,
    file: BufWriter<File>,
    committed: bool,
}

impl Download {
    /// Starts a download to `dest`. Fails, naming `dest`, when it is a
    /// directory or its directory cannot take a new file.
    pub fn create(dest: impl AsRef<Path>) -> Result<Download> {
        let dest = dest.as_ref().to_path_buf();
        let named = |e: io::Error| Error::local("create", &dest, e);
        if std::fs::metadata(&dest).is_ok_and(|m| m.is_dir()) {
            return Err(named(io::Error::from_raw_os_error(rustix::io::Errno::ISDIR.raw_os_error())));
        }
        let name =
            dest.file_name().ok_or_else(|| named(io::Error::new(io::ErrorKind::InvalidInput, "not a file name")))?;
        let dir = match dest.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let mut registry = partial();
        let (temp, file) = create_unique(random_u64, |n| {
            let mut temp_name = std::ffi::OsString::from(".");
            temp_name.push(name);
            temp_name.push(format!(".{n:016x}.part"));
            let temp = dir.join(temp_name);
            OpenOptions::new().write(true).create_new(true).open(&temp).map(|f| (temp, f))
        })
        .map_err(named)?;
        registry.push(temp.clone());
        Ok(Download { dest, temp, file: BufWriter::new(file), committed: false })
    }

    /// The destination.
    pub fn dest(&self) -> &Path {
        &self.dest
    }

    /// The temporary file the bytes go to until the commit.
    pub fn temp_path(&self) -> &Path {
        &self.temp
    }

    /// Names the destination in a local I/O error that happened while
    /// writing the download; other errors pass unchanged.
    pub fn name_error(&self, e: Error) -> Error {
        match e {
            Error::Io(e) => Error::local("write", &self.dest, e),
            other => other,
        }
    }

    /// Flushes the bytes and renames the temporary file over the
    /// destination.
    pub fn commit(mut self) -> Result<()> {
        self.file.flush().map_err(|e| Error::local("write", &self.dest, e))?;
        std::fs::rename(&self.temp, &self.dest).map_err(|e| Error::local("replace", &self.dest, e))?;
        self.committed = true;
        Ok(())
    }
}

impl Write for Download {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

impl Drop for Download {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_file(&self.temp);
        }
        partial().retain(|p| p != &self.temp);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The registry is process-wide: tests that use it run one at a time.
    static SERIAL: Mutex<()> = Mutex::new(());

    fn serial() -> std::sync::MutexGuard<'static, ()> {
        lock(&SERIAL)
    }

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("local-{name}-{}-{:x}", std::process::id(), random_u64().unwrap()));
        std::fs::create_dir(&dir).unwrap();
        dir
    }

    fn entries(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> =
            std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        names.sort();
        names
    }

    #[test]
    fn a_committed_download_replaces_the_file() {
        let _serial = serial();
        let dir = scratch("commit");
        let dest = dir.join("out");
        std::fs::write(&dest, "old").unwrap();
        let mut d = Download::create(&dest).unwrap();
        d.write_all(b"new content").unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), b"old", "the destination changes only at the commit");
        assert_eq!(entries(&dir).len(), 2);
        d.commit().unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), b"new content");
        assert_eq!(entries(&dir), ["out"]);
        assert!(!partial().contains(&dir.join("out")));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_dropped_download_leaves_the_file_and_no_temporary() {
        let _serial = serial();
        let dir = scratch("drop");
        let dest = dir.join("out");
        std::fs::write(&dest, "old").unwrap();
        let mut d = Download::create(&dest).unwrap();
        d.write_all(&[7u8; 100_000]).unwrap();
        let temp = d.temp_path().to_path_buf();
        assert!(temp.starts_with(&dir) && temp.exists());
        drop(d);
        assert!(!temp.exists());
        assert_eq!(std::fs::read(&dest).unwrap(), b"old");
        assert_eq!(entries(&dir), ["out"]);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn the_temporary_file_has_a_new_files_mode() {
        let _serial = serial();
        use std::os::unix::fs::PermissionsExt;
        let dir = scratch("mode");
        let dest = dir.join("out");
        std::fs::write(&dest, "old").unwrap();
        std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(0o600)).unwrap();
        let fresh = dir.join("fresh");
        std::fs::write(&fresh, "").unwrap();
        let d = Download::create(&dest).unwrap();
        d.commit().unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode(&dest), mode(&fresh));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn signal_cleanup_removes_downloads_in_progress() {
        let _serial = serial();
        let dir = scratch("signal");
        let d = Download::create(dir.join("out")).unwrap();
        let temp = d.temp_path().to_path_buf();
        assert!(temp.exists());
        remove_all(&mut partial());
        assert!(!temp.exists());
        drop(d);
        assert!(entries(&dir).is_empty());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_directory_or_a_missing_directory_is_refused_by_name() {
        let _serial = serial();
        let dir = scratch("refused");
        let e = Download::create(&dir).err().unwrap();
        assert!(e.to_string().starts_with(&format!("cannot create {}: ", dir.display())), "{e}");
        let missing = dir.join("no/such/file");
        let e = Download::create(&missing).err().unwrap();
        assert_eq!(e.to_string(), format!("cannot create {}: No such file or directory", missing.display()));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn taken_names_are_skipped_up_to_the_bound() {
        let mut next = 0u64;
        let mut counter = || {
            next += 1;
            Ok(next)
        };
        let taken =
            |n: u64| if n < UNIQUE_NAME_ATTEMPTS as u64 { Err(io::ErrorKind::AlreadyExists.into()) } else { Ok(n) };
        assert_eq!(create_unique(&mut counter, taken).unwrap(), UNIQUE_NAME_ATTEMPTS as u64);
        let always_taken = |_| -> io::Result<u64> { Err(io::ErrorKind::AlreadyExists.into()) };
        let e = create_unique(random_u64, always_taken).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
        let other = |_| -> io::Result<u64> { Err(io::ErrorKind::PermissionDenied.into()) };
        assert_eq!(create_unique(random_u64, other).unwrap_err().kind(), io::ErrorKind::PermissionDenied);
    }
}
