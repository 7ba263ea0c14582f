//! A sandbox: a QEMU process running the guest, its handshake, a client,
//! and (optionally) a relay that shares it with other processes.
//!
//! The VM never outlives its owner: dropping the [`Sandbox`] kills it, and
//! QEMU gets `SIGKILL` if the owning process dies (`PR_SET_PDEATHSIG`, set
//! from a thread that lives as long as the VM). A thread watches QEMU's
//! exit (pidfd + poll) so every pending call fails at once when the VM
//! dies, with the exit status and the last lines of its log.

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, mpsc};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rustix::event::{PollFd, PollFlags};

use crate::client::{Client, ClientOptions};
use crate::conn;
use crate::error::{Error, Result};
use crate::fs::Fs;
use crate::guest_log::{self, GuestLog, LogTail};
use crate::proto::{Handshake, HandshakeStep, ReadyInfo};
use crate::qemu::{Accel, ConsolePort, LogSink, QemuConfig, find_qemu};
use crate::relay::Relay;

/// How long a broken guest stream waits for QEMU's exit to be seen, so
/// the error names the exit rather than a reset connection.
const EXIT_GRACE: Duration = Duration::from_millis(300);

/// Bytes of QEMU's standard error kept for error reports.
const STDERR_TAIL_BYTES: usize = 8 * 1024;

/// How to boot a sandbox.
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    /// The guest ELF.
    pub guest: PathBuf,
    /// `qemu-system-x86_64`; found on `PATH` when `None`.
    pub qemu: Option<PathBuf>,
    /// Guest RAM in MiB (the ramfs gets all but a few MiB).
    pub memory_mib: u32,
    /// CPU acceleration.
    pub accel: Accel,
    /// Spawn to `core.ready`, at most.
    pub boot_timeout: Duration,
    /// Share the guest through a relay socket (see [`Sandbox::relay_socket`]).
    pub relay: bool,
    /// Where the decoded guest log goes.
    pub guest_log: GuestLog,
    /// Settings of the sandbox's own client.
    pub client: ClientOptions,
    /// Extra guest command line options.
    pub cmdline: String,
}

impl SandboxConfig {
    /// Defaults for a guest ELF: 512 MiB, accel auto, 30 s boot timeout,
    /// no relay, quiet log.
    pub fn new(guest: impl Into<PathBuf>) -> SandboxConfig {
        SandboxConfig {
            guest: guest.into(),
            qemu: None,
            memory_mib: 512,
            accel: Accel::Auto,
            boot_timeout: Duration::from_secs(30),
            relay: false,
            guest_log: GuestLog::Quiet,
            client: ClientOptions::default(),
            cmdline: String::new(),
        }
    }
}

/// How long booting took, seen from the host and reported by the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BootTimes {
    /// QEMU spawned -> `core.ready` received.
    pub spawn_to_ready: Duration,
    /// Guest: power-on -> agent entry.
    pub guest_boot_ns: u64,
    /// Guest: agent initialisation.
    pub guest_init_ns: u64,
    /// Guest: power-on -> `core.ready`.
    pub guest_ready_ns: u64,
}

/// The QEMU process and what is known of its end.
struct Vm {
    pid: u32,
    exit: Mutex<Option<ExitStatus>>,
    exited: Condvar,
    stderr: Mutex<VecDeque<u8>>,
    pidfd: OwnedFd,
}

impl Vm {
    fn status(&self) -> Option<ExitStatus> {
        *self.exit.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn wait(&self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        let mut exit = self.exit.lock().unwrap_or_else(|e| e.into_inner());
        while exit.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            exit = self.exited.wait_timeout(exit, left).unwrap_or_else(|e| e.into_inner()).0;
        }
        *exit
    }

    fn kill(&self) {
        let _ = rustix::process::pidfd_send_signal(&self.pidfd, rustix::process::Signal::KILL);
    }

    fn stderr_tail(&self) -> String {
        let bytes: Vec<u8> = self.stderr.lock().unwrap_or_else(|e| e.into_inner()).iter().copied().collect();
        String::from_utf8_lossy(&bytes).trim().to_string()
    }
}

/// A private directory for the sandbox's sockets, removed on drop.
struct RuntimeDir(PathBuf);

static SANDBOXES: AtomicU64 = AtomicU64::new(0);

impl RuntimeDir {
    fn new() -> Result<RuntimeDir> {
        let base = std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from).unwrap_or_else(std::env::temp_dir);
        let n = SANDBOXES.fetch_add(1, Ordering::Relaxed);
        let dir = base.join(format!("picosandbox-{}-{n}", std::process::id()));
        std::fs::DirBuilder::new().mode(0o700).create(&dir)?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
        Ok(RuntimeDir(dir))
    }
}

impl Drop for RuntimeDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running guest.
pub struct Sandbox {
    client: Client,
    relay: Option<Relay>,
    vm: Arc<Vm>,
    boot: BootTimes,
    log: Arc<LogTail>,
    _dir: RuntimeDir,
}

impl Sandbox {
    /// Boots a guest and completes the handshake.
    pub fn start(config: SandboxConfig) -> Result<Sandbox> {
        let qemu = match &config.qemu {
            Some(q) => q.clone(),
            None => find_qemu().ok_or_else(|| Error::Boot("qemu-system-x86_64 not found on PATH".into()))?,
        };
        let elf =
            std::fs::read(&config.guest).map_err(|e| Error::Boot(format!("guest {}: {e}", config.guest.display())))?;
        let dir = RuntimeDir::new()?;
        let agent_path = dir.0.join("agent.sock");
        let log_path = dir.0.join("log.sock");
        let agent_listener = UnixListener::bind(&agent_path)?;
        let log_listener = UnixListener::bind(&log_path)?;
        let qemu_config = QemuConfig {
            qemu,
            guest: config.guest.clone(),
            memory_mib: config.memory_mib,
            accel: config.accel,
            agent_socket: agent_path,
            console: ConsolePort::SerialPort,
            log: LogSink::Socket(log_path),
            cmdline: config.cmdline.clone(),
        };
        let spawned = Instant::now();
        let vm = spawn(qemu_config)?;
        let deadline = spawned + config.boot_timeout;
        let booted = (|| {
            let log_stream = accept(&log_listener, &vm, deadline, "the log console")?;
            let mut guest = accept(&agent_listener, &vm, deadline, "the agent console")?;
            let log = Arc::new(LogTail::default());
            let (sink, tail) = (config.guest_log.clone(), Arc::clone(&log));
            thread::Builder::new()
                .name("picosandbox-guest-log".into())
                .spawn(move || guest_log::pump(&elf, log_stream, &sink, &tail))?;
            let ready = handshake(&mut guest, deadline).map_err(|e| match e {
                Error::Timeout(t) => Error::Boot(format!("no core.ready within {t:?}")),
                other => other,
            })?;
            Ok::<_, Error>((guest, ready, log))
        })();
        let (guest, ready, log) = match booted {
            Ok(b) => b,
            Err(e) => {
                vm.kill();
                vm.wait(Duration::from_secs(5));
                return Err(match vm.status() {
                    Some(status) => Error::Boot(format!("{e}; QEMU exited ({status}): {}", vm.stderr_tail())),
                    None => e,
                });
            }
        };
        let boot = BootTimes {
            spawn_to_ready: spawned.elapsed(),
            guest_boot_ns: ready.boot_time_ns,
            guest_init_ns: ready.init_time_ns,
            guest_ready_ns: ready.ready_time_ns,
        };
        let (client, relay) = if config.relay {
            let relay = Relay::start(guest, ready, Some(&dir.0.join("relay.sock")))?;
            (relay.client(config.client)?, Some(relay))
        } else {
            (Client::over_guest(guest, ready, config.client)?, None)
        };
        let probe_vm = Arc::clone(&vm);
        client.set_exit_probe(Arc::new(move || {
            probe_vm.wait(EXIT_GRACE).map(|status| format!("QEMU exited ({status}): {}", probe_vm.stderr_tail()))
        }));
        watch_exit(Arc::clone(&vm), client.clone(), Arc::clone(&log));
        Ok(Sandbox { client, relay, vm, boot, log, _dir: dir })
    }

    /// The sandbox's own client.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The guest filesystem.
    pub fn fs(&self) -> Fs<'_> {
        self.client.fs()
    }

    /// The relay socket other processes connect to ([`Client::connect`]).
    pub fn relay_socket(&self) -> Option<&Path> {
        self.relay.as_ref().and_then(Relay::socket)
    }

    /// The relay, when the sandbox shares its guest.
    pub fn relay(&self) -> Option<&Relay> {
        self.relay.as_ref()
    }

    /// Boot timings.
    pub fn boot_times(&self) -> BootTimes {
        self.boot
    }

    /// QEMU's process id.
    pub fn pid(&self) -> u32 {
        self.vm.pid
    }

    /// QEMU's exit status, once it has exited.
    pub fn exit_status(&self) -> Option<ExitStatus> {
        self.vm.status()
    }

    /// The last lines of the guest's log.
    pub fn log_tail(&self) -> Vec<String> {
        self.log.lines()
    }

    /// A liveness round trip.
    pub fn ping(&self) -> Result<Duration> {
        self.client.ping()
    }

    /// Kills QEMU now (the guest gets no chance to finish anything).
    pub fn kill(&self) {
        self.vm.kill();
    }

    /// Asks the guest to power off and waits for QEMU to exit; kills it
    /// after `deadline`. Returns QEMU's exit status.
    pub fn shutdown(self, deadline: Duration) -> Result<ExitStatus> {
        self.client.shutdown()?;
        if let Some(status) = self.vm.wait(deadline) {
            return Ok(status);
        }
        self.vm.kill();
        self.vm.wait(Duration::from_secs(5)).ok_or_else(|| Error::VmExited("QEMU did not die after SIGKILL".into()))
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        if self.vm.status().is_none() {
            self.vm.kill();
            self.vm.wait(Duration::from_secs(5));
        }
        self.client.close();
    }
}

/// Waits for QEMU to connect to a socket the host listens on, giving up at
/// `deadline` or when QEMU exits.
fn accept(listener: &UnixListener, vm: &Vm, deadline: Instant, what: &str) -> Result<UnixStream> {
    listener.set_nonblocking(true)?;
    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                stream.set_nonblocking(false)?;
                return Ok(stream);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e.into()),
        }
        if let Some(status) = vm.status() {
            return Err(Error::Boot(format!("QEMU exited ({status}) before connecting {what}: {}", vm.stderr_tail())));
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Error::Boot(format!("QEMU did not connect {what} in time")));
        }
        let timeout = rustix::time::Timespec::try_from(left.min(Duration::from_millis(50))).unwrap_or_default();
        let mut fds = [PollFd::new(listener, PollFlags::IN), PollFd::new(&vm.pidfd, PollFlags::IN)];
        let _ = rustix::event::poll(&mut fds, Some(&timeout));
    }
}

/// The host half of the boot handshake over a raw guest stream, bounded by
/// `deadline`.
pub fn handshake(guest: &mut UnixStream, deadline: Instant) -> Result<ReadyInfo> {
    let mut handshake = Handshake::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Error::Timeout(left));
        }
        guest.set_read_timeout(Some(left))?;
        let frame = match conn::read_frame(guest) {
            Ok(Some(frame)) => frame,
            Ok(None) => return Err(Error::Disconnected("the guest closed the stream during the handshake".into())),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                return Err(Error::Timeout(left));
            }
            Err(e) => return Err(Error::Protocol(format!("during the handshake: {e}"))),
        };
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0);
        match handshake.receive(&frame, now)? {
            HandshakeStep::Send(reply) => guest.write_all(&reply)?,
            HandshakeStep::Continue => {}
            HandshakeStep::Ready { ready, clock_sync } => {
                guest.write_all(&clock_sync)?;
                guest.set_read_timeout(None)?;
                return Ok(ready);
            }
        }
    }
}

/// Spawns QEMU from a thread that outlives it: `PR_SET_PDEATHSIG` fires
/// when the spawning *thread* ends, so that thread waits for the VM.
fn spawn(config: QemuConfig) -> Result<Arc<Vm>> {
    let (tx, rx) = mpsc::channel::<Result<Arc<Vm>>>();
    thread::Builder::new().name("picosandbox-vm".into()).spawn(move || {
        let mut cmd = config.command();
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
        // SAFETY: the closure runs in the forked child before exec and only
        // makes one async-signal-safe system call (prctl).
        unsafe {
            cmd.pre_exec(|| {
                rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))
                    .map_err(std::io::Error::from)
            });
        }
        let mut child: Child = match cmd.spawn() {
            Ok(child) => child,
            Err(e) => {
                let _ = tx.send(Err(Error::Boot(format!("cannot start {}: {e}", config.qemu.display()))));
                return;
            }
        };
        let pid = child.id();
        let pidfd = match rustix::process::Pid::from_raw(pid as i32)
            .ok_or(rustix::io::Errno::INVAL)
            .and_then(|p| rustix::process::pidfd_open(p, rustix::process::PidfdFlags::empty()))
        {
            Ok(fd) => fd,
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                let _ = tx.send(Err(Error::Boot(format!("pidfd_open: {e}"))));
                return;
            }
        };
        let vm = Arc::new(Vm {
            pid,
            exit: Mutex::new(None),
            exited: Condvar::new(),
            stderr: Mutex::new(VecDeque::new()),
            pidfd,
        });
        if let Some(mut stderr) = child.stderr.take() {
            let vm = Arc::clone(&vm);
            let _ = thread::Builder::new().name("picosandbox-qemu-stderr".into()).spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = stderr.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    let mut tail = vm.stderr.lock().unwrap_or_else(|e| e.into_inner());
                    tail.extend(&buf[..n]);
                    let excess = tail.len().saturating_sub(STDERR_TAIL_BYTES);
                    tail.drain(..excess);
                }
            });
        }
        let _ = tx.send(Ok(Arc::clone(&vm)));
        // Wait for the exit without holding anything: poll the pidfd.
        loop {
            let mut fds = [PollFd::new(&vm.pidfd, PollFlags::IN)];
            match rustix::event::poll(&mut fds, None) {
                Ok(_) if fds[0].revents().contains(PollFlags::IN) => break,
                Ok(_) | Err(rustix::io::Errno::INTR) => {}
                Err(_) => break,
            }
        }
        let status = child.wait().ok();
        *vm.exit.lock().unwrap_or_else(|e| e.into_inner()) = status;
        vm.exited.notify_all();
    })?;
    rx.recv().map_err(|_| Error::Boot("the VM thread died".into()))?
}

/// When QEMU exits, fails every pending and later call with the reason.
fn watch_exit(vm: Arc<Vm>, client: Client, log: Arc<LogTail>) {
    let _ = thread::Builder::new().name("picosandbox-exit".into()).spawn(move || {
        let status = loop {
            if let Some(status) = vm.wait(Duration::from_secs(3600)) {
                break status;
            }
        };
        let mut why = format!("QEMU exited ({status})");
        let stderr = vm.stderr_tail();
        if !stderr.is_empty() {
            why.push_str(&format!("; stderr: {stderr}"));
        }
        if let Some(last) = log.lines().last() {
            why.push_str(&format!("; last guest log line: {last}"));
        }
        client.vm_exited(why);
    });
}
