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
use std::sync::{Arc, Condvar, Mutex, mpsc};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rustix::event::{PollFd, PollFlags};

use crate::client::Client;
use crate::config::{CheckedConfig, SandboxConfig};
use crate::conn;
use crate::error::{Error, Result};
use crate::fs::Fs;
use crate::guest_log::{self, LogTail};
use crate::local;
use crate::proto::{Handshake, HandshakeStep, ReadyInfo};
use crate::qemu::{self, ConsolePort, LogSink, QemuConfig, SeccompPolicy};
use crate::relay::Relay;
use crate::sync::{lock, wait_timeout};

/// How long a broken guest stream waits for QEMU's exit to be seen, so
/// the error names the exit rather than a reset connection.
const EXIT_GRACE: Duration = Duration::from_millis(300);

/// Bytes of QEMU's standard error kept for error reports.
const STDERR_TAIL_BYTES: usize = 8 * 1024;

/// The seccomp policy for `qemu` when `confine` asks for one: the one it
/// supports, with a warning (once per process and message) for anything
/// short of the full policy.
fn seccomp_for(qemu: &Path, confine: bool) -> Option<SeccompPolicy> {
    if !confine {
        return None;
    }
    match qemu::seccomp_support(qemu) {
        Ok(policy) => {
            if let Some(shortfall) = policy.shortfall() {
                warn_once(format!("{shortfall} ({})", qemu.display()));
            }
            Some(policy)
        }
        Err(why) => {
            warn_once(format!(
                "{} cannot confine itself with -sandbox (its seccomp filter), so the sandbox runs unconfined: {why}",
                qemu.display()
            ));
            None
        }
    }
}

/// Prints a warning on standard error, once per process.
fn warn_once(message: String) {
    static SHOWN: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let mut shown = lock(&SHOWN);
    if !shown.contains(&message) {
        eprintln!("picosandbox: warning: {message}");
        shown.push(message);
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
        *lock(&self.exit)
    }

    fn wait(&self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        let mut exit = lock(&self.exit);
        while exit.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            exit = wait_timeout(&self.exited, exit, left);
        }
        *exit
    }

    fn kill(&self) {
        let _ = rustix::process::pidfd_send_signal(&self.pidfd, rustix::process::Signal::KILL);
    }

    fn stderr_tail(&self) -> String {
        let bytes: Vec<u8> = lock(&self.stderr).iter().copied().collect();
        String::from_utf8_lossy(&bytes).trim().to_string()
    }
}

/// A private directory for the sandbox's sockets, removed on drop. Its
/// name has a random suffix, so nobody can pre-create it: a name already
/// taken is skipped for a fresh one.
struct RuntimeDir(PathBuf);

impl RuntimeDir {
    /// In `$XDG_RUNTIME_DIR`, else the temporary directory.
    fn new() -> Result<RuntimeDir> {
        let base = std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from).unwrap_or_else(std::env::temp_dir);
        RuntimeDir::create_in(&base, local::random_u64)
    }

    /// `base/picosandbox-<random>` with mode 0700, the suffix from `random`.
    fn create_in(base: &Path, random: impl FnMut() -> std::io::Result<u64>) -> Result<RuntimeDir> {
        let dir = local::create_unique(random, |n| {
            let dir = base.join(format!("picosandbox-{n:016x}"));
            std::fs::DirBuilder::new().mode(0o700).create(&dir).map(|()| dir)
        })
        .map_err(|e| {
            Error::Boot(format!(
                "cannot create a runtime directory in {}: {}",
                base.display(),
                crate::error::os_text(&e)
            ))
        })?;
        let dir = RuntimeDir(dir);
        std::fs::set_permissions(&dir.0, std::fs::Permissions::from_mode(0o700))?;
        Ok(dir)
    }
}

impl Drop for RuntimeDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running guest.
pub struct Sandbox {
    seccomp: Option<SeccompPolicy>,
    client: Client,
    relay: Option<Relay>,
    vm: Arc<Vm>,
    boot: BootTimes,
    log: Arc<LogTail>,
    _dir: RuntimeDir,
}

impl Sandbox {
    /// Checks the configuration ([`SandboxConfig::check`]), boots a guest
    /// and completes the handshake. The check's warnings are not shown:
    /// call `check` and [`Sandbox::start_checked`] to see them.
    pub fn start(config: SandboxConfig) -> Result<Sandbox> {
        Sandbox::start_checked(config.check()?)
    }

    /// Boots a guest from a checked configuration and completes the
    /// handshake. A failure says why (the guest's own reason when it gave
    /// one, with its last log lines), then what to do.
    pub fn start_checked(checked: CheckedConfig) -> Result<Sandbox> {
        let CheckedConfig { config, qemu, elf, .. } = checked;
        let dir = RuntimeDir::new()?;
        let agent_path = dir.0.join("agent.sock");
        let log_path = dir.0.join("log.sock");
        let agent_listener = listen(&agent_path)?;
        let log_listener = listen(&log_path)?;
        let seccomp = seccomp_for(&qemu, config.confine);
        let qemu_config = QemuConfig {
            qemu,
            guest: config.guest.clone(),
            memory_mib: config.memory_mib,
            accel: config.accel,
            agent_socket: agent_path,
            console: ConsolePort::SerialPort,
            log: LogSink::Socket(log_path),
            cmdline: config.cmdline.clone(),
            seccomp: seccomp.clone(),
            tuning: config.tuning,
        };
        let spawned = Instant::now();
        let vm = spawn(qemu_config)?;
        let deadline = spawned + config.boot_timeout;
        let log = Arc::new(LogTail::default());
        let mut pump = None;
        let booted = (|| {
            let log_stream = accept(&log_listener, &vm, deadline, "the log console")?;
            let mut guest = accept(&agent_listener, &vm, deadline, "the agent console")?;
            let (sink, tail) = (config.guest_log.clone(), Arc::clone(&log));
            pump = Some(
                thread::Builder::new()
                    .name("picosandbox-guest-log".into())
                    .spawn(move || guest_log::pump(&elf, log_stream, &sink, &tail))?,
            );
            let ready = handshake(&mut guest, deadline)?;
            Ok::<_, Error>((guest, ready))
        })();
        let (guest, ready) = match booted {
            Ok(b) => b,
            Err(e) => {
                // A closed stream usually means QEMU is exiting: wait for
                // its status, which says why. Otherwise it is stuck.
                let own_exit = match e {
                    Error::Timeout(_) => vm.status(),
                    _ => vm.wait(EXIT_GRACE),
                };
                vm.kill();
                vm.wait(Duration::from_secs(5));
                // QEMU is gone, so the log stream ends: take its last lines.
                let drain_until = Instant::now() + LOG_DRAIN_TIMEOUT;
                while pump.as_ref().is_some_and(|p| !p.is_finished()) && Instant::now() < drain_until {
                    thread::sleep(Duration::from_millis(5));
                }
                return Err(boot_failure(&e, own_exit, &vm.stderr_tail(), &log.lines(), &config));
            }
        };
        let boot = BootTimes {
            spawn_to_ready: spawned.elapsed(),
            guest_boot_ns: ready.boot_time_ns,
            guest_init_ns: ready.init_time_ns,
            guest_ready_ns: ready.ready_time_ns,
        };
        let (client, relay) = if config.relay {
            let relay = Relay::start_with(guest, ready, Some(&dir.0.join("relay.sock")), config.relay_options)?;
            (relay.client(config.client)?, Some(relay))
        } else {
            (Client::over_guest(guest, ready, config.client)?, None)
        };
        let probe_vm = Arc::clone(&vm);
        client.set_exit_probe(Arc::new(move || {
            probe_vm.wait(EXIT_GRACE).map(|status| format!("QEMU exited ({status}): {}", probe_vm.stderr_tail()))
        }));
        watch_exit(Arc::clone(&vm), client.clone(), Arc::clone(&log));
        Ok(Sandbox { seccomp, client, relay, vm, boot, log, _dir: dir })
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

    /// The seccomp policy QEMU runs under, `None` when it runs unconfined
    /// (turned off in [`SandboxConfig::confine`], or not supported by the
    /// installed QEMU).
    pub fn seccomp(&self) -> Option<&SeccompPolicy> {
        self.seccomp.as_ref()
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

/// Guest log lines a boot failure carries.
pub const BOOT_FAILURE_LOG_LINES: usize = 8;

/// How long a failed boot waits for the rest of the guest's log.
const LOG_DRAIN_TIMEOUT: Duration = Duration::from_millis(500);

/// A listening socket for QEMU to connect to.
fn listen(path: &Path) -> Result<UnixListener> {
    UnixListener::bind(path)
        .map_err(|e| Error::Boot(format!("cannot listen on {}: {}", path.display(), crate::error::os_text(&e))))
}

/// The error for a boot that failed with `e`: why (QEMU's exit status
/// decoded when QEMU exited by itself: the guest's own reason, or QEMU's
/// error), what to do, and the guest's last log lines.
fn boot_failure(
    e: &Error,
    own_exit: Option<ExitStatus>,
    stderr: &str,
    log: &[String],
    config: &SandboxConfig,
) -> Error {
    let qemu_said = if stderr.is_empty() { String::new() } else { format!("; QEMU said: {stderr}") };
    let (why, fix) = match own_exit.map(|s| (s, s.code())) {
        Some((_, Some(code))) if qemu::guest_exit_reason(code).is_some() => {
            let reason = qemu::guest_exit_reason(code).unwrap_or_default();
            let fix = if code == qemu::debug_exit_status(qemu::GUEST_EXIT_MEMORY) {
                Some(format!("give it more than {} MiB", config.memory_mib))
            } else {
                None
            };
            (format!("{reason} (QEMU exit status {code}){qemu_said}"), fix)
        }
        Some((status, _)) if log.is_empty() => {
            (format!("QEMU stopped before the guest ran ({status}){qemu_said}"), None)
        }
        Some((status, _)) => (format!("QEMU exited ({status}){qemu_said}"), None),
        None => match e {
            Error::Timeout(_) => (
                format!("the guest sent no core.ready within {:?}", config.boot_timeout),
                Some("a slow host may need a longer boot timeout".to_string()),
            ),
            Error::Boot(m) => (m.clone(), None),
            other => (other.to_string(), None),
        },
    };
    let mut message = why;
    if let Some(fix) = fix {
        message.push_str("; ");
        message.push_str(&fix);
    }
    let tail = &log[log.len().saturating_sub(BOOT_FAILURE_LOG_LINES)..];
    if !tail.is_empty() {
        message.push_str("\nthe guest's last log lines:");
        for line in tail {
            message.push_str("\n  ");
            message.push_str(line);
        }
    }
    Error::Boot(message)
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
            return Err(Error::Boot(format!("QEMU exited ({status}) before connecting {what}")));
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Error::Timeout(left));
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
        // A process group of its own: Ctrl-C in a terminal reaches the
        // owner, which shuts the guest down cleanly, and not QEMU, which
        // would quit at once. QEMU still dies with its owner (below).
        cmd.process_group(0);
        // SAFETY: the closure runs in the forked child before exec and only
        // makes async-signal-safe system calls (prctl, close_range, fcntl).
        unsafe {
            cmd.pre_exec(|| {
                rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))
                    .map_err(std::io::Error::from)?;
                close_on_exec_from(3);
                Ok(())
            });
        }
        let mut child: Child = match cmd.spawn() {
            Ok(child) => child,
            Err(e) => {
                let why = crate::error::os_text(&e);
                let _ = tx.send(Err(Error::Boot(format!("cannot start {}: {why}", config.qemu.display()))));
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
                    let mut tail = lock(&vm.stderr);
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
        *lock(&vm.exit) = status;
        vm.exited.notify_all();
    })?;
    rx.recv().map_err(|_| Error::Boot("the VM thread died".into()))?
}

/// The highest descriptor the fallback of [`close_on_exec_from`] marks,
/// for kernels without `close_range` (before 5.11).
const FALLBACK_MAX_FD: i32 = 65_536;

/// Marks every descriptor from `first` on close-on-exec, so QEMU starts
/// with only its standard input, output and error: nothing the owning
/// process holds (other sandboxes' sockets, files, descriptors inherited
/// without `O_CLOEXEC`) reaches it. Async-signal-safe: it runs between
/// fork and exec.
fn close_on_exec_from(first: u32) {
    // SAFETY: plain system calls on integers; no memory is touched.
    unsafe {
        if libc::syscall(libc::SYS_close_range, first, u32::MAX, libc::CLOSE_RANGE_CLOEXEC) == 0 {
            return;
        }
        let limit = match libc::sysconf(libc::_SC_OPEN_MAX) {
            n if n > 0 => (n as i32).min(FALLBACK_MAX_FD),
            _ => FALLBACK_MAX_FD,
        };
        for fd in first as i32..limit {
            let flags = libc::fcntl(fd, libc::F_GETFD);
            if flags >= 0 {
                libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC);
            }
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let base = std::env::temp_dir().join(format!("runtime-{name}-{:016x}", local::random_u64().unwrap()));
        std::fs::create_dir(&base).unwrap();
        base
    }

    fn failure(e: Error, exit: Option<i32>, stderr: &str, log: &[&str]) -> String {
        use std::os::unix::process::ExitStatusExt;
        let mut config = SandboxConfig::new("guest");
        config.memory_mib = 7;
        config.boot_timeout = Duration::from_secs(30);
        let log: Vec<String> = log.iter().map(|l| l.to_string()).collect();
        boot_failure(&e, exit.map(ExitStatus::from_raw), stderr, &log, &config).to_string()
    }

    #[test]
    fn boot_failures_say_why_then_what_to_do_then_the_log() {
        let closed = || Error::Disconnected("the guest closed the stream during the handshake".into());
        assert_eq!(
            failure(
                closed(),
                Some(13 << 8),
                "",
                &["INFO image", "ERROR 1280 KiB of free RAM cannot hold the agent's buffers"]
            ),
            "cannot boot the sandbox: the guest ran out of memory (QEMU exit status 13); give it more than 7 MiB\n\
             the guest's last log lines:\n  INFO image\n  ERROR 1280 KiB of free RAM cannot hold the agent's buffers"
        );
        assert_eq!(
            failure(closed(), Some(1 << 8), "qemu: invalid kernel header", &[]),
            "cannot boot the sandbox: QEMU stopped before the guest ran (exit status: 1); QEMU said: qemu: invalid \
             kernel header"
        );
        let many: Vec<String> = (0..20).map(|i| format!("line {i}")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        let timeout = failure(Error::Timeout(Duration::ZERO), None, "", &many);
        assert!(
            timeout.starts_with(
                "cannot boot the sandbox: the guest sent no core.ready within 30s; a slow host may need a longer boot \
                 timeout\nthe guest's last log lines:\n  line 12\n"
            ),
            "{timeout}"
        );
        assert_eq!(timeout.lines().count(), 2 + BOOT_FAILURE_LOG_LINES);
        assert_eq!(
            failure(Error::Boot("cannot listen on /x: Permission denied".into()), None, "", &[]),
            "cannot boot the sandbox: cannot listen on /x: Permission denied"
        );
    }

    #[test]
    fn a_runtime_dir_is_private_random_and_removed_on_drop() {
        let base = scratch("private");
        let (a, b) = (RuntimeDir::create_in(&base, local::random_u64).unwrap(), RuntimeDir::new().unwrap());
        let name = a.0.file_name().unwrap().to_str().unwrap().to_string();
        let suffix = name.strip_prefix("picosandbox-").unwrap();
        assert!(suffix.len() == 16 && suffix.bytes().all(|c| c.is_ascii_hexdigit()), "{name}");
        assert_ne!(a.0.file_name(), b.0.file_name());
        assert_eq!(std::fs::metadata(&a.0).unwrap().permissions().mode() & 0o777, 0o700);
        let path = a.0.clone();
        drop(a);
        assert!(!path.exists());
        std::fs::remove_dir(base).unwrap();
    }

    #[test]
    fn pre_created_names_are_skipped() {
        let base = scratch("taken");
        // A directory and a symlink where the first two names would go.
        std::fs::create_dir(base.join(format!("picosandbox-{:016x}", 1))).unwrap();
        std::os::unix::fs::symlink("/", base.join(format!("picosandbox-{:016x}", 2))).unwrap();
        let mut next = 0;
        let dir = RuntimeDir::create_in(&base, || {
            next += 1;
            Ok(next)
        })
        .unwrap();
        assert_eq!(dir.0, base.join(format!("picosandbox-{:016x}", 3)));
        drop(dir);
        // Every name taken: an error naming the base, after the bound.
        let e = RuntimeDir::create_in(&base, || Ok(1)).err().unwrap();
        assert!(e.to_string().contains(&format!("cannot create a runtime directory in {}", base.display())), "{e}");
        std::fs::remove_dir_all(base).unwrap();
    }
}
