//! An in-process guest for host-side tests: agent-core over a ramfs,
//! driven by its blocking driver on a thread, at the far end of a Unix
//! socket pair.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use agent_core::driver::{self, Clock, Exit, Platform, PowerOff};
use agent_core::ramfs::Ramfs;
use agent_core::{Agent, Config};
use host_sync::proto::ReadyInfo;
use rustix::event::{PollFd, PollFlags};

/// The `picosandbox` binary under test.
pub const PICOSANDBOX: &str = env!("CARGO_BIN_EXE_picosandbox");

/// `$PICOSANDBOX_GUEST`, else the `guest`-profile build in the target
/// directory the binary under test sits in; a panic says how to build it.
pub fn guest_elf() -> PathBuf {
    let path = match std::env::var_os("PICOSANDBOX_GUEST") {
        Some(path) => PathBuf::from(path),
        None => {
            let target = Path::new(PICOSANDBOX).parent().and_then(Path::parent);
            target.expect("the binary sits in <target>/<profile>/").join("x86_64-unknown-none/guest/unikernel")
        }
    };
    assert!(path.is_file(), "guest ELF not found at {}: run `cargo xtask guest`", path.display());
    path
}

/// One QEMU at a time within a test binary (TCG on a small machine).
pub fn one_qemu() -> MutexGuard<'static, ()> {
    static QEMU: Mutex<()> = Mutex::new(());
    QEMU.lock().unwrap_or_else(|e| e.into_inner())
}

/// The agent's side of the socket pair, as an `embedded_io` link.
pub struct Link(pub UnixStream);

/// A link error (the socket's `io::Error`).
#[derive(Debug)]
pub struct LinkError(pub std::io::Error);

impl std::fmt::Display for LinkError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for LinkError {}

impl embedded_io::Error for LinkError {
    fn kind(&self) -> embedded_io::ErrorKind {
        embedded_io::ErrorKind::Other
    }
}

impl embedded_io::ErrorType for Link {
    type Error = LinkError;
}

impl embedded_io::Read for Link {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, LinkError> {
        self.0.read(buf).map_err(LinkError)
    }
}

impl embedded_io::Write for Link {
    fn write(&mut self, buf: &[u8]) -> Result<usize, LinkError> {
        self.0.write(buf).map_err(LinkError)
    }

    fn flush(&mut self) -> Result<(), LinkError> {
        Ok(())
    }
}

impl embedded_io::ReadReady for Link {
    fn read_ready(&mut self) -> Result<bool, LinkError> {
        let mut fds = [PollFd::new(&self.0, PollFlags::IN)];
        let zero = rustix::time::Timespec { tv_sec: 0, tv_nsec: 0 };
        rustix::event::poll(&mut fds, Some(&zero)).map_err(|e| LinkError(e.into()))?;
        Ok(!fds[0].revents().is_empty())
    }
}

impl embedded_io::WriteReady for Link {
    fn write_ready(&mut self) -> Result<bool, LinkError> {
        Ok(true)
    }
}

/// Monotonic time from an `Instant`, and a settable wall clock.
pub struct StdClock {
    start: Instant,
    wall: Option<(u64, u64)>,
}

impl Clock for StdClock {
    fn monotonic_ns(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    fn set_wall_clock_ns(&mut self, unix_ns: u64) {
        self.wall = Some((self.monotonic_ns(), unix_ns));
    }

    fn wall_clock_ns(&self) -> Option<u64> {
        self.wall.map(|(mono, unix)| unix + (self.monotonic_ns() - mono))
    }
}

/// Sleeps in `poll` on the link; records power-off.
pub struct StdPlatform {
    fd: UnixStream,
    start: Instant,
    pub powered_off: Option<PowerOff>,
}

impl Platform for StdPlatform {
    fn wait(&mut self, deadline_ns: Option<u64>) {
        let now = self.start.elapsed().as_nanos() as u64;
        let wait = deadline_ns.map(|d| d.saturating_sub(now)).unwrap_or(u64::MAX).min(20_000_000);
        let timeout = rustix::time::Timespec { tv_sec: 0, tv_nsec: wait as i64 };
        let mut fds = [PollFd::new(&self.fd, PollFlags::IN)];
        let _ = rustix::event::poll(&mut fds, Some(&timeout));
    }

    fn power_off(&mut self, reason: PowerOff) {
        self.powered_off = Some(reason);
    }
}

/// A running in-process guest.
pub struct Guest {
    /// The host's end of the stream.
    pub host: Option<UnixStream>,
    /// The agent thread; returns why the driver stopped.
    pub thread: JoinHandle<Exit<LinkError>>,
}

/// Starts an agent over a ramfs of `arena_mib` MiB on a thread.
pub fn spawn_guest(arena_mib: usize) -> Guest {
    spawn_guest_with(arena_mib, Config::default())
}

/// [`spawn_guest`] with an agent configuration.
pub fn spawn_guest_with(arena_mib: usize, config: Config) -> Guest {
    let (host, guest) = UnixStream::pair().unwrap();
    let thread = std::thread::spawn(move || {
        let arena: &'static mut [u8] = Box::leak(vec![0u8; arena_mib << 20].into_boxed_slice());
        let rx: &'static mut [u8] = Box::leak(vec![0u8; agent_core::MIN_RX_BUFFER].into_boxed_slice());
        let tx: &'static mut [u8] = Box::leak(vec![0u8; 1 << 20].into_boxed_slice());
        let start = Instant::now();
        let fs = Ramfs::new(arena, 0).unwrap();
        let mut agent = Agent::new(fs, rx, tx, config).unwrap();
        let mut link = Link(guest.try_clone().unwrap());
        let mut clock = StdClock { start, wall: None };
        let mut platform = StdPlatform { fd: guest, start, powered_off: None };
        // As the real guest: the handle table and the starting directories
        // are set up once core.ready is out, before any request is read.
        let after_ready = |agent: &mut Agent<'static, Ramfs<'static>>, now_ns| {
            let handles = Box::leak(Box::new(agent_core::handles::HandleTable::EMPTY));
            agent.lend_handles(handles.memory());
            agent.fs_mut().make_standard_dirs(now_ns).unwrap();
        };
        driver::run_with(&mut agent, &mut link, &mut clock, &mut platform, after_ready)
    });
    Guest { host: Some(host), thread }
}

/// Boots an in-process guest and completes the handshake on its stream.
pub fn booted_guest(arena_mib: usize) -> (Guest, UnixStream, ReadyInfo) {
    let mut guest = spawn_guest(arena_mib);
    let mut stream = guest.host.take().unwrap();
    let ready = host_sync::sandbox::handshake(&mut stream, Instant::now() + Duration::from_secs(10)).unwrap();
    (guest, stream, ready)
}

/// Reads one whole frame (length prefix included) from `s`.
pub fn read_frame(s: &mut UnixStream) -> Vec<u8> {
    let mut prefix = [0u8; 4];
    s.read_exact(&mut prefix).unwrap();
    let mut rest = vec![0u8; u32::from_be_bytes(prefix) as usize];
    s.read_exact(&mut rest).unwrap();
    [&prefix[..], &rest].concat()
}
