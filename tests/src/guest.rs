//! Booting the real guest (and the benchmark's baseline guests) under QEMU
//! for end-to-end tests: locating the ELFs, listening on the agent and log
//! sockets before QEMU starts (QEMU connects to them), bounded waits,
//! per-process CPU and memory readings, and decoding the guest's defmt log.

use std::io::Read;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use host_sync::qemu::{Accel, ConsolePort, LogSink, QemuConfig, SeccompPolicy, Tuning, find_qemu, seccomp_support};

/// The environment variable naming the guest ELF (overrides the default).
pub const GUEST_ENV: &str = "PICOSANDBOX_GUEST";
/// The environment variable naming the boot-floor ELF (the benchmark's
/// trivial PVH guest; overrides the default).
pub const FLOOR_ENV: &str = "PICOSANDBOX_FLOOR";
/// The environment variable naming the stock-driver echo ELF (the
/// benchmark's `VirtIOConsole` echo; overrides the default).
pub const STOCK_ECHO_ENV: &str = "PICOSANDBOX_STOCK_ECHO";

/// Guest RAM for test boots: room for the image, its buffers and an arena.
pub const TEST_MEMORY_MIB: u32 = 64;

/// How long QEMU may take to connect to the sockets after spawning.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);

/// How often bounded waits poll.
const POLL_INTERVAL: Duration = Duration::from_millis(5);

/// How often a pending accept polls: short, because the log reader starts
/// only once QEMU has connected both sockets, and a boot measured to the
/// first log byte must not wait out a long sleep first.
const ACCEPT_POLL_INTERVAL: Duration = Duration::from_micros(250);

/// The guest ELF: `$PICOSANDBOX_GUEST`, else the `guest`-profile build in
/// the workspace's target directory.
///
/// # Panics
///
/// If the file does not exist, with a message saying how to build it.
pub fn elf_path() -> PathBuf {
    locate_elf(GUEST_ENV, "unikernel", "run `cargo xtask guest`")
}

/// The boot-floor ELF: `$PICOSANDBOX_FLOOR`, else the `guest`-profile
/// build in the workspace's target directory.
///
/// # Panics
///
/// If the file does not exist, with a message saying how to build it.
pub fn floor_elf_path() -> PathBuf {
    locate_elf(
        FLOOR_ENV,
        "floor",
        "build it with `cargo build -p unikernel --target x86_64-unknown-none --profile guest --bin floor`",
    )
}

/// The stock-driver echo ELF: `$PICOSANDBOX_STOCK_ECHO`, else the
/// `guest`-profile build in the workspace's target directory.
///
/// # Panics
///
/// If the file does not exist, with a message saying how to build it.
pub fn stock_echo_elf_path() -> PathBuf {
    locate_elf(
        STOCK_ECHO_ENV,
        "stock_echo",
        "build it with `DEFMT_LOG=info cargo build -p unikernel --target x86_64-unknown-none --profile guest \
         --features stock-echo --bin stock_echo`",
    )
}

/// `$env`, else `binary` of the `guest`-profile build in the workspace's
/// target directory (`CARGO_TARGET_DIR` when set); panics with
/// `how_to_build` if there is no such file.
fn locate_elf(env: &str, binary: &str, how_to_build: &str) -> PathBuf {
    let path = match std::env::var_os(env) {
        Some(path) => PathBuf::from(path),
        None => {
            let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ has a parent");
            // Cargo's target directory, as cargo reads it: relative to the
            // workspace root.
            let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), |d| root.join(d));
            target.join("x86_64-unknown-none/guest").join(binary)
        }
    };
    assert!(path.is_file(), "ELF not found at {}: {how_to_build} (or set {env} to the ELF)", path.display());
    path
}

/// A unique directory for one boot's sockets.
fn socket_dir() -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("picosandbox-guest-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("creating a socket directory");
    dir
}

/// Accepts one connection, giving up at `deadline` or if `child` exits.
pub fn accept_until(listener: &UnixListener, child: &mut Child, deadline: Instant) -> Result<UnixStream, String> {
    listener.set_nonblocking(true).map_err(|e| e.to_string())?;
    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                stream.set_nonblocking(false).map_err(|e| e.to_string())?;
                return Ok(stream);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(format!("accept: {e}")),
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("QEMU exited before connecting: {status}"));
        }
        if Instant::now() >= deadline {
            return Err("QEMU did not connect in time".into());
        }
        std::thread::sleep(ACCEPT_POLL_INTERVAL);
    }
}

/// How to boot a guest ELF: which port carries the agent console, the
/// kernel command line, and guest RAM.
#[derive(Debug, Clone)]
pub struct BootOptions {
    /// The port the agent console is attached as.
    pub console: ConsolePort,
    /// The guest kernel command line.
    pub cmdline: String,
    /// Guest RAM in MiB.
    pub memory_mib: u32,
    /// QEMU's seccomp filter.
    pub seccomp: Option<SeccompPolicy>,
    /// QEMU's memory and translation settings.
    pub tuning: Tuning,
}

impl Default for BootOptions {
    /// The agent console on its serial port, no command line,
    /// [`TEST_MEMORY_MIB`] of RAM, QEMU confined as a sandbox's is by
    /// default (the seccomp policy the installed QEMU supports), default
    /// tuning.
    fn default() -> BootOptions {
        BootOptions {
            console: ConsolePort::SerialPort,
            cmdline: String::new(),
            memory_mib: TEST_MEMORY_MIB,
            seccomp: find_qemu().and_then(|qemu| seccomp_support(&qemu).ok()),
            tuning: Tuning::default(),
        }
    }
}

/// What has arrived on a guest's log socket.
#[derive(Default)]
struct Log {
    /// The raw bytes, as received.
    bytes: Vec<u8>,
    /// The bytes decoded so far, one line per defmt frame (`LEVEL
    /// message`), or the one line saying why they cannot be decoded.
    lines: Vec<String>,
    /// When the first byte arrived.
    first_at: Option<Instant>,
}

/// A guest's log, filled by its reader thread; waiters are woken on every
/// arrival.
#[derive(Default)]
struct SharedLog {
    log: Mutex<Log>,
    arrived: Condvar,
}

impl SharedLog {
    fn lock(&self) -> MutexGuard<'_, Log> {
        self.log.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until `found` returns something for the log, up to `timeout`.
    fn wait_for<T>(&self, timeout: Duration, mut found: impl FnMut(&Log) -> Option<T>) -> Option<T> {
        let deadline = Instant::now() + timeout;
        let mut log = self.lock();
        loop {
            if let Some(t) = found(&log) {
                return Some(t);
            }
            let left = deadline.checked_duration_since(Instant::now()).filter(|d| !d.is_zero())?;
            log = self.arrived.wait_timeout(log, left).unwrap_or_else(|e| e.into_inner()).0;
        }
    }
}

/// The reader thread: keeps every byte of the log stream and decodes it as
/// it arrives, with the table parsed once at boot.
fn read_log(mut stream: UnixStream, table: Result<defmt_decoder::Table, String>, shared: &SharedLog) {
    let mut decoder = match &table {
        Ok(table) => Some(table.new_stream_decoder()),
        Err(e) => {
            shared.lock().lines.push(format!("(undecodable log: {e})"));
            None
        }
    };
    let mut received = 0usize;
    let mut buf = [0u8; 4096];
    while let Ok(n) = stream.read(&mut buf) {
        if n == 0 {
            break;
        }
        let arrived = Instant::now();
        received += n;
        let mut lines = Vec::new();
        if let Some(decoder) = decoder.as_mut() {
            decoder.received(&buf[..n]);
            // Every decoded or dropped frame consumes at least one byte, so
            // this bound is never reached on a well-formed stream; it only
            // guarantees termination.
            for _ in 0..=received {
                match decoder.decode() {
                    Ok(frame) => {
                        let level = frame.level().map_or("PRINT", |l| l.as_str());
                        lines.push(format!("{} {}", level.to_uppercase(), frame.display_message()));
                    }
                    Err(defmt_decoder::DecodeError::UnexpectedEof) => break,
                    Err(defmt_decoder::DecodeError::Malformed) => lines.push("(malformed log frame)".into()),
                }
            }
        }
        let mut log = shared.lock();
        log.first_at.get_or_insert(arrived);
        log.bytes.extend_from_slice(&buf[..n]);
        log.lines.append(&mut lines);
        drop(log);
        shared.arrived.notify_all();
    }
}

/// A running guest: QEMU, its agent stream, and its log as it arrives.
/// Dropping it kills QEMU if it still runs and removes the sockets.
pub struct Guest {
    child: Child,
    /// The agent console's byte stream.
    pub agent: UnixStream,
    log: Arc<SharedLog>,
    log_reader: Option<JoinHandle<()>>,
    dir: PathBuf,
    /// When QEMU was spawned.
    pub spawned_at: Instant,
}

impl Guest {
    /// Boots the guest ELF with `cmdline` under TCG (or KVM when a hardware
    /// module is loaded), its log on a socket.
    pub fn boot(cmdline: &str) -> Result<Guest, String> {
        Guest::boot_elf(&elf_path(), &BootOptions { cmdline: cmdline.to_owned(), ..BootOptions::default() })
    }

    /// Boots `elf_path` like [`Guest::boot`], as `options` say.
    pub fn boot_elf(elf_path: &Path, options: &BootOptions) -> Result<Guest, String> {
        let elf = std::fs::read(elf_path).map_err(|e| format!("{}: {e}", elf_path.display()))?;
        let table = defmt_decoder::Table::parse(&elf)
            .map_err(|e| format!("reading the defmt table: {e}"))
            .and_then(|table| table.ok_or_else(|| "the guest ELF has no defmt table".to_owned()));
        let qemu = find_qemu().ok_or("qemu-system-x86_64 not found on PATH")?;
        let dir = socket_dir();
        let agent_socket = dir.join("agent.sock");
        let log_socket = dir.join("log.sock");
        let agent_listener = UnixListener::bind(&agent_socket).map_err(|e| format!("bind agent socket: {e}"))?;
        let log_listener = UnixListener::bind(&log_socket).map_err(|e| format!("bind log socket: {e}"))?;
        let config = QemuConfig {
            qemu,
            guest: elf_path.to_path_buf(),
            memory_mib: options.memory_mib,
            accel: Accel::Auto,
            agent_socket,
            console: options.console,
            log: LogSink::Socket(log_socket),
            cmdline: options.cmdline.clone(),
            seccomp: options.seccomp.clone(),
            tuning: options.tuning,
        };
        let spawned_at = Instant::now();
        let mut child = config
            .command()
            .stdin(Stdio::null())
            .spawn()
            .map_err(|e| format!("spawning {}: {e}", config.qemu.display()))?;
        let deadline = spawned_at + CONNECT_TIMEOUT;
        let connected = accept_until(&agent_listener, &mut child, deadline)
            .and_then(|agent| Ok((agent, accept_until(&log_listener, &mut child, deadline)?)));
        let (agent, log_stream) = match connected {
            Ok(streams) => streams,
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                let _ = std::fs::remove_dir_all(&dir);
                return Err(e);
            }
        };
        let log = Arc::new(SharedLog::default());
        let shared = Arc::clone(&log);
        let log_reader = std::thread::spawn(move || read_log(log_stream, table, &shared));
        Ok(Guest { child, agent, log, log_reader: Some(log_reader), dir, spawned_at })
    }

    /// QEMU's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The raw log bytes received so far.
    pub fn log_bytes(&self) -> Vec<u8> {
        self.log.lock().bytes.clone()
    }

    /// When the first log byte arrived (as its reader saw it), if one has.
    pub fn first_log_at(&self) -> Option<Instant> {
        self.log.lock().first_at
    }

    /// Waits until at least `n` raw log bytes have arrived; returns them.
    pub fn wait_for_log_bytes(&self, n: usize, timeout: Duration) -> Option<Vec<u8>> {
        self.log.wait_for(timeout, |log| (log.bytes.len() >= n).then(|| log.bytes.clone()))
    }

    /// The log decoded so far, one line per frame.
    pub fn log_lines(&self) -> Vec<String> {
        self.log.lock().lines.clone()
    }

    /// Waits until a decoded log line contains `needle`; returns that line.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> Option<String> {
        self.log.wait_for(timeout, |log| log.lines.iter().find(|l| l.contains(needle)).cloned())
    }

    /// Waits for QEMU to exit; `None` if it still runs at the timeout.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(POLL_INTERVAL);
        }
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
        if let Some(reader) = self.log_reader.take() {
            let _ = reader.join();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// CPU time (user + system) a process has used, from `/proc/PID/stat`.
pub fn cpu_time(pid: u32) -> Result<Duration, String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).map_err(|e| format!("/proc/{pid}/stat: {e}"))?;
    // Fields after the parenthesised command name; utime and stime are
    // fields 14 and 15 of the whole line, in clock ticks.
    let rest = stat.rsplit_once(')').ok_or("malformed /proc stat")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok()).ok_or("malformed /proc stat");
    let total = ticks(11)? + ticks(12)?;
    Ok(Duration::from_secs_f64(total as f64 / CLOCK_TICKS_PER_SECOND))
}

/// The unit of `/proc` CPU times (`sysconf(_SC_CLK_TCK)`): the kernel's
/// USER_HZ, 100 on every Linux architecture.
const CLOCK_TICKS_PER_SECOND: f64 = 100.0;

/// A process's resident set size in KiB, from `/proc/PID/status`.
pub fn rss_kib(pid: u32) -> Result<u64, String> {
    let status =
        std::fs::read_to_string(format!("/proc/{pid}/status")).map_err(|e| format!("/proc/{pid}/status: {e}"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| "no VmRSS in /proc status".into())
}

/// The share of one core a process uses over `window` (1.0 is a whole
/// core): its CPU time across the window over the wall time that passed.
pub fn cpu_share(pid: u32, window: Duration) -> Result<f64, String> {
    let (started, before) = (Instant::now(), cpu_time(pid)?);
    std::thread::sleep(window);
    let used = cpu_time(pid)?.saturating_sub(before);
    Ok(used.as_secs_f64() / started.elapsed().as_secs_f64())
}

/// Peak resident set sizes: a thread samples [`rss_kib`] of each process
/// every [`PeakRss::INTERVAL`] until [`PeakRss::finish`] (a process that
/// cannot be read counts as 0).
pub struct PeakRss {
    peaks: Arc<Vec<AtomicU64>>,
    stop: Arc<AtomicBool>,
    sampler: Option<JoinHandle<()>>,
}

impl PeakRss {
    /// How often the sampler reads `/proc`.
    pub const INTERVAL: Duration = Duration::from_millis(20);

    /// Starts sampling `pids`; the first sample is taken at once.
    pub fn start(pids: &[u32]) -> PeakRss {
        let peaks: Arc<Vec<AtomicU64>> = Arc::new(pids.iter().map(|_| AtomicU64::new(0)).collect());
        let stop = Arc::new(AtomicBool::new(false));
        let (pids, sampled, stopped) = (pids.to_vec(), Arc::clone(&peaks), Arc::clone(&stop));
        let sampler = std::thread::spawn(move || {
            loop {
                for (pid, peak) in pids.iter().zip(sampled.iter()) {
                    peak.fetch_max(rss_kib(*pid).unwrap_or(0), Ordering::Relaxed);
                }
                if stopped.load(Ordering::Relaxed) {
                    return;
                }
                std::thread::sleep(PeakRss::INTERVAL);
            }
        });
        PeakRss { peaks, stop, sampler: Some(sampler) }
    }

    /// Stops sampling (after one last sample) and returns each process's
    /// peak RSS in KiB, in the order the pids were given.
    pub fn finish(mut self) -> Vec<u64> {
        self.stop_sampler();
        self.peaks.iter().map(|p| p.load(Ordering::Relaxed)).collect()
    }

    fn stop_sampler(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(sampler) = self.sampler.take() {
            let _ = sampler.join();
        }
    }
}

impl Drop for PeakRss {
    fn drop(&mut self) {
        self.stop_sampler();
    }
}
