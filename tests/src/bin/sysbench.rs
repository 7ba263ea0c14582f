//! The system benchmark: boot time against a trivial guest, throughput
//! against the device-path floor, the stock driver and a host socket pair,
//! small-op latency, footprint and idle cost, each measured side by side
//! with its baseline in the same run. Writes `system.json` into the output
//! directory; `cargo xtask bench` merges it into the report.
//!
//! `sysbench --guest ELF --floor ELF --stock ELF --out DIR [--runs N] [--only SECTION]`

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use host_sync::qemu::{Accel, ConsolePort, LogSink, QemuConfig, find_qemu};
use host_sync::{Sandbox, SandboxConfig};
use tests::bench::{Row, Samples, mb_per_s};
use tests::guest::{accept_until, cpu_time, rss_kib};

/// Guest RAM for the benchmark boots: room for 256 MiB files.
const MEMORY_MIB: u32 = 400;

/// What the stock-driver echo carries per run. QEMU's `virtconsole`
/// drops output when the host socket is full (its reader stalled for a
/// couple of milliseconds, e.g. descheduled on a busy machine), and such
/// stalls come up every few 64 MiB runs at the stock rate; a shorter run
/// (still well over 100 ms) rarely meets one.
const STOCK_ECHO_BYTES: u64 = 16 << 20;
/// Attempts per stock-echo run before the benchmark gives up.
const STOCK_ECHO_ATTEMPTS: usize = 5;
/// How long an echo may go without a byte coming back before its data
/// counts as lost.
const ECHO_STALL: Duration = Duration::from_secs(2);

/// How long QEMU may take to connect to its sockets, and a raw guest to
/// answer: a broken guest fails the run instead of hanging it.
const RAW_GUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// One section of the benchmark: measures and appends its rows.
type Step = fn(&Options, &mut Vec<Row>);

struct Options {
    guest: PathBuf,
    floor: PathBuf,
    stock: PathBuf,
    out: PathBuf,
    runs: usize,
    /// Run only this section.
    only: Option<String>,
}

fn options() -> Result<Options, String> {
    let mut args = std::env::args().skip(1);
    let (mut guest, mut floor, mut stock, mut out, mut runs) = (None, None, None, None, 3usize);
    let mut only = None;
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or(format!("{arg} needs a value"));
        match arg.as_str() {
            "--guest" => guest = Some(PathBuf::from(value()?)),
            "--floor" => floor = Some(PathBuf::from(value()?)),
            "--stock" => stock = Some(PathBuf::from(value()?)),
            "--out" => out = Some(PathBuf::from(value()?)),
            "--runs" => runs = value()?.parse().map_err(|e| format!("--runs: {e}"))?,
            "--only" => only = Some(value()?),
            other => return Err(format!("unknown option {other}")),
        }
    }
    Ok(Options {
        guest: guest.ok_or("--guest is required")?,
        floor: floor.ok_or("--floor is required")?,
        stock: stock.ok_or("--stock is required")?,
        out: out.ok_or("--out is required")?,
        runs: runs.max(1),
        only,
    })
}

fn main() {
    let options = match options() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("sysbench: {e}");
            std::process::exit(2);
        }
    };
    let mut rows = Vec::new();
    let steps: [(&str, Step); 5] =
        [("boot", boot), ("throughput", throughput), ("latency", latency), ("footprint", footprint), ("idle", idle)];
    for (name, step) in steps {
        if options.only.as_deref().is_some_and(|only| only != name) {
            continue;
        }
        eprintln!("sysbench: {name}");
        step(&options, &mut rows);
    }
    let json = serde_json::json!({ "rows": rows.iter().map(Row::json).collect::<Vec<_>>() });
    std::fs::create_dir_all(&options.out).expect("creating the output directory");
    let path = options.out.join("system.json");
    std::fs::write(&path, serde_json::to_string_pretty(&json).unwrap()).expect("writing system.json");
    eprintln!("sysbench: wrote {}", path.display());
}

fn sandbox(guest: &Path, memory_mib: u32, cmdline: &str) -> Sandbox {
    let mut config = SandboxConfig::new(guest);
    config.memory_mib = memory_mib;
    config.accel = Accel::Auto;
    config.cmdline = cmdline.into();
    Sandbox::start(config).expect("the guest boots")
}

/// A QEMU with the product's command line and a raw agent stream (for the
/// floor guest and the echo guests, which speak no protocol).
struct RawGuest {
    child: std::process::Child,
    agent: UnixStream,
    log: UnixStream,
    spawned: Instant,
    _dir: TempDir,
}

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Boots `elf` with the agent console on `console`; QEMU's connections
/// and every later read and write on them are bounded by
/// [`RAW_GUEST_TIMEOUT`].
fn raw_guest(elf: &Path, console: ConsolePort, cmdline: &str, memory_mib: u32) -> RawGuest {
    static N: AtomicU64 = AtomicU64::new(0);
    let dir =
        std::env::temp_dir().join(format!("sysbench-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed)));
    std::fs::create_dir_all(&dir).unwrap();
    let dir = TempDir(dir);
    let (agent_path, log_path) = (dir.0.join("agent.sock"), dir.0.join("log.sock"));
    let agent_listener = UnixListener::bind(&agent_path).unwrap();
    let log_listener = UnixListener::bind(&log_path).unwrap();
    let config = QemuConfig {
        qemu: find_qemu().expect("qemu-system-x86_64 on PATH"),
        guest: elf.to_path_buf(),
        memory_mib,
        accel: Accel::Auto,
        agent_socket: agent_path,
        console,
        log: LogSink::Socket(log_path),
        cmdline: cmdline.into(),
    };
    let spawned = Instant::now();
    let mut child = config.command().stdin(Stdio::null()).stderr(Stdio::null()).spawn().expect("spawning QEMU");
    let deadline = spawned + RAW_GUEST_TIMEOUT;
    let connected = accept_until(&agent_listener, &mut child, deadline)
        .and_then(|agent| Ok((agent, accept_until(&log_listener, &mut child, deadline)?)));
    let (agent, log) = match connected {
        Ok(streams) => streams,
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("booting {}: {e}", elf.display());
        }
    };
    for stream in [&agent, &log] {
        stream.set_read_timeout(Some(RAW_GUEST_TIMEOUT)).unwrap();
        stream.set_write_timeout(Some(RAW_GUEST_TIMEOUT)).unwrap();
    }
    RawGuest { child, agent, log, spawned, _dir: dir }
}

impl Drop for RawGuest {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn boot(o: &Options, rows: &mut Vec<Row>) {
    let (mut ours, mut floor) = (Vec::new(), Vec::new());
    let (mut guest_boot, mut guest_ready) = (Vec::new(), Vec::new());
    let (mut first_rtt, mut warm_rtt) = (Vec::new(), Vec::new());
    for _ in 0..o.runs + 2 {
        let s = sandbox(&o.guest, MEMORY_MIB, "");
        let t = s.boot_times();
        ours.push(t.spawn_to_ready.as_secs_f64() * 1e3);
        guest_boot.push(t.guest_boot_ns as f64 / 1e6);
        guest_ready.push(t.guest_ready_ns as f64 / 1e6);
        // The first request runs guest code for the first time (under TCG:
        // translated on the spot); later ones show the warm round trip.
        let rtt = |s: &Sandbox| {
            let start = Instant::now();
            s.fs().stat("/").expect("stat /");
            start.elapsed().as_secs_f64() * 1e3
        };
        first_rtt.push(rtt(&s));
        let warm = Samples::collect(20, || rtt(&s));
        warm_rtt.push(warm.median());
        drop(s);
        // The floor: the same command line booting a guest that writes
        // one byte to its debug console and halts.
        let mut g = raw_guest(&o.floor, ConsolePort::SerialPort, "", MEMORY_MIB);
        let mut byte = [0u8; 1];
        g.log.read_exact(&mut byte).expect("the floor guest's byte");
        floor.push(g.spawned.elapsed().as_secs_f64() * 1e3);
    }
    let (ours, floor) = (Samples::new(ours), Samples::new(floor));
    let gap = ours.median() - floor.median();
    rows.push(
        Row::plain("boot", "spawn -> core.ready", "ms", ours)
            .against("trivial PVH guest: spawn -> first byte", floor)
            .compared(format!("+{gap:.1} ms"))
            .target("within 5 ms of the floor", gap <= 5.0),
    );
    rows.push(Row::plain("boot", "guest-reported power-on -> agent entry", "ms", Samples::new(guest_boot)));
    rows.push(Row::plain("boot", "guest-reported power-on -> core.ready", "ms", Samples::new(guest_ready)));
    rows.push(
        Row::plain("boot", "first request after boot, round trip", "ms", Samples::new(first_rtt))
            .against("the same request once warm", Samples::new(warm_rtt)),
    );
}

/// Echoes `len` bytes through a stream whose far end echoes: MB/s of the
/// round trip (each byte crosses both ways, concurrently). An error if the
/// echo stalls for [`ECHO_STALL`] (bytes were lost) or the stream fails.
fn echo_through(stream: UnixStream, len: u64) -> Result<f64, String> {
    stream.set_read_timeout(Some(ECHO_STALL)).map_err(|e| e.to_string())?;
    stream.set_write_timeout(Some(ECHO_STALL)).map_err(|e| e.to_string())?;
    let mut reader = stream.try_clone().map_err(|e| e.to_string())?;
    let mut writer_stream = stream;
    let start = Instant::now();
    let writer = std::thread::spawn(move || -> std::io::Result<()> {
        let chunk = vec![0x5au8; 1 << 20];
        let mut left = len;
        while left > 0 {
            let n = left.min(chunk.len() as u64) as usize;
            writer_stream.write_all(&chunk[..n])?;
            left -= n as u64;
        }
        Ok(())
    });
    let mut buf = vec![0u8; 1 << 20];
    let mut got = 0u64;
    let read = loop {
        if got >= len {
            break Ok(());
        }
        match reader.read(&mut buf) {
            Ok(0) => break Err(format!("the echo ended after {got} of {len} bytes")),
            Ok(n) => got += n as u64,
            Err(e) => break Err(format!("the echo stalled after {got} of {len} bytes: {e}")),
        }
    };
    let elapsed = start.elapsed();
    if read.is_err() {
        // Unblocks the writer if it waits on a guest that stopped reading.
        let _ = reader.shutdown(std::net::Shutdown::Both);
    }
    let written = writer.join().map_err(|_| "the echo writer panicked".to_owned())?;
    read?;
    written.map_err(|e| format!("sending the echo: {e}"))?;
    Ok(mb_per_s(len, elapsed))
}

/// MB/s of an echo guest's round trip. The clock starts once one byte has
/// come back, so the guest's boot is not counted as echo time.
fn guest_echo(elf: &Path, console: ConsolePort, len: u64) -> Result<f64, String> {
    let mut g = raw_guest(elf, console, "mode=echo", 64);
    let mut first = [0x5au8];
    g.agent.write_all(&first).map_err(|e| format!("sending a first byte: {e}"))?;
    g.agent.read_exact(&mut first).map_err(|e| format!("reading the first byte back: {e}"))?;
    let agent = g.agent.try_clone().map_err(|e| e.to_string())?;
    echo_through(agent, len)
}

/// The stock-driver echo's MB/s over [`STOCK_ECHO_BYTES`], and how many
/// attempts lost data first: QEMU's `virtconsole` drops output whenever
/// the host socket is full, so a run whose reader stalled is repeated on a
/// fresh guest, up to [`STOCK_ECHO_ATTEMPTS`] times.
fn stock_echo(elf: &Path) -> (f64, usize) {
    let mut lost = 0;
    for _ in 0..STOCK_ECHO_ATTEMPTS {
        match guest_echo(elf, ConsolePort::Console, STOCK_ECHO_BYTES) {
            Ok(rate) => return (rate, lost),
            Err(e) => {
                eprintln!("sysbench: the stock echo lost data ({e}); trying again");
                lost += 1;
            }
        }
    }
    panic!("the stock echo lost data in all {STOCK_ECHO_ATTEMPTS} attempts");
}

fn socketpair_echo(len: u64) -> f64 {
    let (a, mut b) = UnixStream::pair().unwrap();
    let echo = std::thread::spawn(move || {
        let mut buf = vec![0u8; 1 << 20];
        loop {
            match b.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => b.write_all(&buf[..n]).unwrap(),
            }
        }
    });
    let r = echo_through(a, len).expect("the socket-pair echo");
    echo.join().unwrap();
    r
}

/// Streams a fixed byte pattern of a given length without holding it.
struct Zeroes(u64);

impl Read for Zeroes {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = (buf.len() as u64).min(self.0) as usize;
        buf[..n].fill(0x33);
        self.0 -= n as u64;
        Ok(n)
    }
}

fn throughput(o: &Options, rows: &mut Vec<Row>) {
    let (mut stock_runs, mut stock_lost) = (0, 0);
    for mib in [64u64, 256] {
        let len = mib << 20;
        let (mut write, mut read, mut echo, mut stock, mut pair) = (vec![], vec![], vec![], vec![], vec![]);
        let mut rewrite = vec![];
        for _ in 0..o.runs {
            let s = sandbox(&o.guest, MEMORY_MIB, "");
            let start = Instant::now();
            s.fs().write_from("/bench", &mut Zeroes(len)).unwrap();
            write.push(mb_per_s(len, start.elapsed()));
            let start = Instant::now();
            s.fs().read_to("/bench", &mut std::io::sink()).unwrap();
            read.push(mb_per_s(len, start.elapsed()));
            // The first write lands in guest RAM nobody has touched: the host
            // kernel zeroes each page on first touch. Written again, the file
            // reuses the blocks just freed, which shows the path without it.
            s.fs().remove("/bench").unwrap();
            let start = Instant::now();
            s.fs().write_from("/bench", &mut Zeroes(len)).unwrap();
            rewrite.push(mb_per_s(len, start.elapsed()));
            drop(s);
            echo.push(guest_echo(&o.guest, ConsolePort::SerialPort, len).unwrap_or_else(|e| panic!("our echo: {e}")));
            let (rate, lost) = stock_echo(&o.stock);
            stock.push(rate);
            stock_runs += 1;
            stock_lost += lost;
            pair.push(socketpair_echo(len));
        }
        let (echo, stock, pair) = (Samples::new(echo), Samples::new(stock), Samples::new(pair));
        let (w, r, rw) = (Samples::new(write), Samples::new(read), Samples::new(rewrite));
        let half = |s: &Samples| s.median() >= 0.5 * echo.median();
        let (w_met, r_met, rw_met) = (half(&w), half(&r), half(&rw));
        rows.push(
            Row::plain("throughput", &format!("write_from {mib} MiB"), "MB/s", w)
                .against("raw echo, our driver", echo.clone())
                .target(">= 50% of our echo", w_met),
        );
        rows.push(
            Row::plain("throughput", &format!("write_from {mib} MiB again, into RAM freed by the first"), "MB/s", rw)
                .against("raw echo, our driver", echo.clone())
                .target(">= 50% of our echo", rw_met),
        );
        rows.push(
            Row::plain("throughput", &format!("read_to {mib} MiB"), "MB/s", r)
                .against("raw echo, our driver", echo.clone())
                .target(">= 50% of our echo", r_met),
        );
        let four_x = echo.median() >= 4.0 * stock.median();
        rows.push(
            Row::plain("throughput", &format!("raw echo {mib} MiB, our driver"), "MB/s", echo.clone())
                .against(&format!("stock VirtIOConsole echo, {} MiB", STOCK_ECHO_BYTES >> 20), stock)
                .target(">= 4x the stock driver", four_x),
        );
        rows.push(
            Row::plain("throughput", &format!("raw echo {mib} MiB, our driver"), "MB/s", echo)
                .against("host Unix socket pair (ceiling)", pair),
        );
    }
    rows.push(Row::plain(
        "throughput",
        &format!("stock echo attempts that lost data (virtconsole drops), of {stock_runs} runs"),
        "attempts",
        Samples::new(vec![stock_lost as f64]),
    ));
}

/// Operations per second of `op`, run by `threads` threads for `window`.
fn ops_per_second(threads: usize, window: Duration, op: impl Fn(usize, u64) + Send + Sync + 'static) -> f64 {
    let op = Arc::new(op);
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let workers: Vec<_> = (0..threads)
        .map(|t| {
            let (op, stop, count) = (Arc::clone(&op), Arc::clone(&stop), Arc::clone(&count));
            std::thread::spawn(move || {
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    op(t, i);
                    i += 1;
                    count.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    std::thread::sleep(window);
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().unwrap();
    }
    count.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}

fn latency(o: &Options, rows: &mut Vec<Row>) {
    const WINDOW: Duration = Duration::from_secs(2);
    let s = Arc::new(sandbox(&o.guest, 128, ""));
    s.fs().write("/small", vec![1u8; 4096]).unwrap();
    for threads in [1usize, 8] {
        let stat = {
            let s = Arc::clone(&s);
            Samples::collect(o.runs, move || {
                let s = Arc::clone(&s);
                ops_per_second(threads, WINDOW, move |_, _| {
                    s.fs().stat("/small").unwrap();
                })
            })
        };
        rows.push(Row::plain("latency", &format!("stat round trips, {threads} thread(s)"), "ops/s", stat));
        let write = {
            let s = Arc::clone(&s);
            Samples::collect(o.runs, move || {
                let s = Arc::clone(&s);
                ops_per_second(threads, WINDOW, move |t, i| {
                    s.fs().write(&format!("/w{t}-{}", i % 64), [7u8; 4096]).unwrap();
                })
            })
        };
        rows.push(Row::plain("latency", &format!("4 KiB writes, {threads} thread(s)"), "ops/s", write));
        let read = {
            let s = Arc::clone(&s);
            Samples::collect(o.runs, move || {
                let s = Arc::clone(&s);
                ops_per_second(threads, WINDOW, move |_, _| {
                    s.fs().read("/small").unwrap();
                })
            })
        };
        rows.push(Row::plain("latency", &format!("4 KiB reads, {threads} thread(s)"), "ops/s", read));
    }
}

/// Bytes of the ELF's allocated sections (code, data, bss): the guest's
/// static memory.
fn static_memory(elf: &[u8]) -> u64 {
    const SHF_ALLOC: u64 = 2;
    let u16_at = |at: usize| u16::from_le_bytes(elf[at..at + 2].try_into().unwrap()) as usize;
    let u64_at = |at: usize| u64::from_le_bytes(elf[at..at + 8].try_into().unwrap());
    let (shoff, shentsize, shnum) = (u64_at(0x28) as usize, u16_at(0x3a), u16_at(0x3c));
    (0..shnum).map(|i| shoff + i * shentsize).filter(|&h| u64_at(h + 8) & SHF_ALLOC != 0).map(|h| u64_at(h + 32)).sum()
}

fn stripped_size(elf: &Path) -> Option<u64> {
    let copy = std::env::temp_dir().join(format!("sysbench-strip-{}", std::process::id()));
    std::fs::copy(elf, &copy).ok()?;
    let ok = ["llvm-strip", "strip"]
        .into_iter()
        .any(|tool| std::process::Command::new(tool).arg(&copy).status().is_ok_and(|s| s.success()));
    let size = std::fs::metadata(&copy).ok().map(|m| m.len());
    let _ = std::fs::remove_file(&copy);
    ok.then_some(size).flatten()
}

fn footprint(o: &Options, rows: &mut Vec<Row>) {
    let elf = std::fs::read(&o.guest).expect("reading the guest ELF");
    if let Some(size) = stripped_size(&o.guest) {
        let kib = size as f64 / 1024.0;
        rows.push(
            Row::plain("footprint", "guest ELF, stripped", "KiB", Samples::new(vec![kib]))
                .target("<= 128 KiB", kib <= 128.0),
        );
    }
    rows.push(Row::plain(
        "footprint",
        "guest static memory (code, data, bss)",
        "KiB",
        Samples::new(vec![static_memory(&elf) as f64 / 1024.0]),
    ));
    let s = sandbox(&o.guest, MEMORY_MIB, "");
    std::thread::sleep(Duration::from_millis(300));
    let arena_kib = s
        .log_tail()
        .iter()
        .find_map(|l| {
            let at = l.find("ramfs arena ")?;
            l[at + 12..].split_whitespace().next()?.parse::<f64>().ok()
        })
        .unwrap_or(0.0);
    let beyond = f64::from(MEMORY_MIB) - arena_kib / 1024.0;
    rows.push(
        Row::plain("footprint", "guest RAM not given to the ramfs", "MiB", Samples::new(vec![beyond]))
            .target("<= 8 MiB", arena_kib > 0.0 && beyond <= 8.0),
    );
    let booted = rss_kib(s.pid()).unwrap_or(0) as f64 / 1024.0;
    rows.push(Row::plain("footprint", "QEMU RSS after boot", "MiB", Samples::new(vec![booted])));
    let me = std::process::id();
    let (qemu_peak, host_peak) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (q, h, done, pid) = (Arc::clone(&qemu_peak), Arc::clone(&host_peak), Arc::clone(&done), s.pid());
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                q.fetch_max(rss_kib(pid).unwrap_or(0), Ordering::Relaxed);
                h.fetch_max(rss_kib(me).unwrap_or(0), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    s.fs().write_from("/rss", &mut Zeroes(256 << 20)).unwrap();
    s.fs().read_to("/rss", &mut std::io::sink()).unwrap();
    done.store(true, Ordering::Relaxed);
    sampler.join().unwrap();
    let mib = |a: &AtomicU64| a.load(Ordering::Relaxed) as f64 / 1024.0;
    rows.push(Row::plain(
        "footprint",
        "QEMU RSS during a 256 MiB transfer (peak)",
        "MiB",
        Samples::new(vec![mib(&qemu_peak)]),
    ));
    rows.push(Row::plain(
        "footprint",
        "host-sync client process RSS during it (peak)",
        "MiB",
        Samples::new(vec![mib(&host_peak)]),
    ));
}

fn idle(o: &Options, rows: &mut Vec<Row>) {
    const WINDOW: Duration = Duration::from_secs(5);
    let s = sandbox(&o.guest, 128, "");
    std::thread::sleep(Duration::from_millis(300));
    let (t0, c0) = (Instant::now(), cpu_time(s.pid()).unwrap());
    std::thread::sleep(WINDOW);
    let share = (cpu_time(s.pid()).unwrap() - c0).as_secs_f64() / t0.elapsed().as_secs_f64() * 100.0;
    rows.push(
        Row::plain("idle", "QEMU CPU with an idle guest, 5 s", "% of a core", Samples::new(vec![share]))
            .target("< 1% of a core", share < 1.0),
    );
}
