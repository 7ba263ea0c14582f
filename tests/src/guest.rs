//! Booting the real guest (and the benchmark's baseline guests) under QEMU
//! for end-to-end tests: locating the ELFs, listening on the agent and log
//! sockets before QEMU starts (QEMU connects to them), bounded waits,
//! per-process CPU and memory readings, and decoding the guest's defmt log.

use std::io::Read;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use host_sync::qemu::{Accel, ConsolePort, LogSink, QemuConfig, find_qemu};

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

/// Decodes a defmt byte stream from the guest with the table in its ELF,
/// one line per frame (`LEVEL message`). Malformed frames are skipped (the
/// encoding resynchronises at the next frame boundary).
pub fn decode_log(elf: &[u8], stream: &[u8]) -> Result<Vec<String>, String> {
    let table = defmt_decoder::Table::parse(elf)
        .map_err(|e| format!("reading the defmt table: {e}"))?
        .ok_or("the guest ELF has no defmt table")?;
    let mut decoder = table.new_stream_decoder();
    decoder.received(stream);
    let mut lines = Vec::new();
    // Every decoded or dropped frame consumes at least one byte, so this
    // bound is never reached on a well-formed stream; it only guarantees
    // termination.
    for _ in 0..=stream.len() {
        match decoder.decode() {
            Ok(frame) => {
                let level = frame.level().map_or("PRINT", |l| l.as_str());
                lines.push(format!("{} {}", level.to_uppercase(), frame.display_message()));
            }
            Err(defmt_decoder::DecodeError::UnexpectedEof) => break,
            Err(defmt_decoder::DecodeError::Malformed) => lines.push("(malformed log frame)".into()),
        }
    }
    Ok(lines)
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
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// A running guest: QEMU, its agent stream, and its log as it arrives.
/// Dropping it kills QEMU if it still runs and removes the sockets.
pub struct Guest {
    child: Child,
    /// The agent console's byte stream.
    pub agent: UnixStream,
    log: Arc<Mutex<Vec<u8>>>,
    first_log_at: Arc<OnceLock<Instant>>,
    log_reader: Option<JoinHandle<()>>,
    elf: Vec<u8>,
    dir: PathBuf,
    /// When QEMU was spawned.
    pub spawned_at: Instant,
}

impl Guest {
    /// Boots the guest ELF with `cmdline` under TCG (or KVM when a hardware
    /// module is loaded), its log on a socket.
    pub fn boot(cmdline: &str) -> Result<Guest, String> {
        Guest::boot_elf(&elf_path(), ConsolePort::SerialPort, cmdline)
    }

    /// Boots `elf_path` like [`Guest::boot`], with the agent console on
    /// `console`.
    pub fn boot_elf(elf_path: &Path, console: ConsolePort, cmdline: &str) -> Result<Guest, String> {
        let elf = std::fs::read(elf_path).map_err(|e| format!("{}: {e}", elf_path.display()))?;
        let qemu = find_qemu().ok_or("qemu-system-x86_64 not found on PATH")?;
        let dir = socket_dir();
        let agent_socket = dir.join("agent.sock");
        let log_socket = dir.join("log.sock");
        let agent_listener = UnixListener::bind(&agent_socket).map_err(|e| format!("bind agent socket: {e}"))?;
        let log_listener = UnixListener::bind(&log_socket).map_err(|e| format!("bind log socket: {e}"))?;
        let config = QemuConfig {
            qemu,
            guest: elf_path.to_path_buf(),
            memory_mib: TEST_MEMORY_MIB,
            accel: Accel::Auto,
            agent_socket,
            console,
            log: LogSink::Socket(log_socket),
            cmdline: cmdline.to_owned(),
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
        let (agent, mut log_stream) = match connected {
            Ok(streams) => streams,
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                let _ = std::fs::remove_dir_all(&dir);
                return Err(e);
            }
        };
        let log = Arc::new(Mutex::new(Vec::new()));
        let first_log_at = Arc::new(OnceLock::new());
        let (sink, first) = (Arc::clone(&log), Arc::clone(&first_log_at));
        let log_reader = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = log_stream.read(&mut buf) {
                if n == 0 {
                    break;
                }
                first.get_or_init(Instant::now);
                sink.lock().expect("log lock").extend_from_slice(&buf[..n]);
            }
        });
        Ok(Guest { child, agent, log, first_log_at, log_reader: Some(log_reader), elf, dir, spawned_at })
    }

    /// QEMU's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The raw log bytes received so far.
    pub fn log_bytes(&self) -> Vec<u8> {
        self.log.lock().expect("log lock").clone()
    }

    /// When the first log byte arrived (as its reader saw it), if one has.
    pub fn first_log_at(&self) -> Option<Instant> {
        self.first_log_at.get().copied()
    }

    /// Waits until at least `n` raw log bytes have arrived; returns them.
    pub fn wait_for_log_bytes(&self, n: usize, timeout: Duration) -> Option<Vec<u8>> {
        let deadline = Instant::now() + timeout;
        loop {
            let bytes = self.log_bytes();
            if bytes.len() >= n {
                return Some(bytes);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(POLL_INTERVAL);
        }
    }

    /// The log decoded so far, one line per frame.
    pub fn log_lines(&self) -> Vec<String> {
        decode_log(&self.elf, &self.log_bytes()).unwrap_or_else(|e| vec![format!("(undecodable log: {e})")])
    }

    /// Waits until a decoded log line contains `needle`; returns that line.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(line) = self.log_lines().into_iter().find(|l| l.contains(needle)) {
                return Some(line);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(POLL_INTERVAL);
        }
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
