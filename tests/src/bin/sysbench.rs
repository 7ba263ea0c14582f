//! The system benchmark: boot time against a trivial guest, throughput
//! against the device-path floor, the stock driver and a host socket pair,
//! small-op latency, footprint and idle cost, each measured side by side
//! with its baseline in the same run. Writes `system.json` into the output
//! directory; `cargo xtask bench` merges it into the report.
//!
//! `sysbench --guest ELF --floor ELF --stock ELF --out DIR [--runs N] [--only SECTION]
//! [--stripped-size BYTES --size-budget BYTES] [--density-max N]`
//!
//! The guest's stripped size and its budget come from `cargo xtask bench`,
//! which computes them as `cargo xtask guest` does; without them the
//! footprint section leaves that row out.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use host_sync::pool::{PoolConfig, SandboxPool};
use host_sync::qemu::{ConsolePort, RamBackend, Tuning};
use host_sync::{GuestLog, Sandbox, SandboxConfig};
use tests::bench::{Row, Samples, mb_per_s};
use tests::guest::{BootOptions, Guest, PeakRss, cpu_share, rss_kib};

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

/// How long a raw guest (the floor, the echoes) may take to write its
/// first byte: a broken guest fails the run instead of hanging it.
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
    /// The guest ELF's stripped size and the budget it must stay within,
    /// in bytes.
    stripped: Option<(u64, u64)>,
    /// The density section's largest N (its steps stop there).
    density_max: usize,
}

fn options() -> Result<Options, String> {
    let mut args = std::env::args().skip(1);
    let (mut guest, mut floor, mut stock, mut out, mut runs) = (None, None, None, None, 3usize);
    let (mut only, mut stripped_size, mut size_budget) = (None, None, None);
    let mut density_max = usize::MAX;
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or(format!("{arg} needs a value"));
        match arg.as_str() {
            "--guest" => guest = Some(PathBuf::from(value()?)),
            "--floor" => floor = Some(PathBuf::from(value()?)),
            "--stock" => stock = Some(PathBuf::from(value()?)),
            "--out" => out = Some(PathBuf::from(value()?)),
            "--runs" => runs = value()?.parse().map_err(|e| format!("--runs: {e}"))?,
            "--only" => only = Some(value()?),
            "--density-max" => density_max = value()?.parse().map_err(|e| format!("--density-max: {e}"))?,
            "--stripped-size" => stripped_size = Some(value()?.parse().map_err(|e| format!("--stripped-size: {e}"))?),
            "--size-budget" => size_budget = Some(value()?.parse().map_err(|e| format!("--size-budget: {e}"))?),
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
        density_max,
        stripped: match (stripped_size, size_budget) {
            (Some(size), Some(budget)) => Some((size, budget)),
            (None, None) => None,
            _ => return Err("--stripped-size and --size-budget go together".into()),
        },
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
    let steps: [(&str, Step); 7] = [
        ("boot", boot),
        ("throughput", throughput),
        ("latency", latency),
        ("fairness", fairness),
        ("footprint", footprint),
        ("idle", idle),
        ("density", density),
    ];
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

fn sandbox(guest: &Path, memory_mib: u32) -> Sandbox {
    let mut config = SandboxConfig::new(guest);
    config.memory_mib = memory_mib;
    Sandbox::start(config).expect("the guest boots")
}

/// Boots `elf`, which speaks no protocol (the floor, the echo guests), as
/// `options` say; a guest that does not boot fails the run.
fn raw_guest(elf: &Path, options: &BootOptions) -> Guest {
    Guest::boot_elf(elf, options).unwrap_or_else(|e| panic!("booting {}: {e}", elf.display()))
}

/// The guest's boot probes in one log: `(step, us from power-on)`, in
/// the order logged (`boot probe <step> <us> us` lines).
fn boot_probes(log: &[String]) -> Vec<(String, f64)> {
    log.iter()
        .filter_map(|line| {
            let rest = line.split("boot probe ").nth(1)?;
            let mut words = rest.split_whitespace();
            let (step, us) = (words.next()?, words.next()?.parse::<f64>().ok()?);
            Some((step.to_string(), us))
        })
        .collect()
}

/// Boots `runs * 3 + 2` times, each next to a floor boot: the gap is the
/// difference of two medians of noisy process start-ups, so it takes more
/// samples than the other sections to settle (a boot is about 50 ms).
fn boot(o: &Options, rows: &mut Vec<Row>) {
    let (mut ours, mut floor) = (Vec::new(), Vec::new());
    let (mut guest_boot, mut guest_ready) = (Vec::new(), Vec::new());
    let (mut first_rtt, mut warm_rtt) = (Vec::new(), Vec::new());
    let mut probes: Vec<(String, Vec<f64>)> = Vec::new();
    for _ in 0..o.runs * 3 + 2 {
        let log = Arc::new(Mutex::new(Vec::<String>::new()));
        let mut config = SandboxConfig::new(&o.guest);
        config.memory_mib = MEMORY_MIB;
        let sink = Arc::clone(&log);
        config.guest_log = GuestLog::Callback(Arc::new(move |line: &str| sink.lock().unwrap().push(line.to_string())));
        let s = Sandbox::start(config).expect("the guest boots");
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
        // The probe table is logged after core.ready and flushed when the
        // guest idles: wait for its last line.
        let logged = Instant::now();
        while !boot_probes(&log.lock().unwrap()).iter().any(|(step, _)| step == "dirs")
            && logged.elapsed() < Duration::from_secs(5)
        {
            std::thread::sleep(Duration::from_millis(5));
        }
        drop(s);
        for (step, us) in boot_probes(&log.lock().unwrap()) {
            match probes.iter_mut().find(|(s, _)| *s == step) {
                Some((_, samples)) => samples.push(us / 1e3),
                None => probes.push((step, vec![us / 1e3])),
            }
        }
        // The floor: the same command line booting a guest that writes
        // one byte to its debug console and halts.
        let options = BootOptions { memory_mib: MEMORY_MIB, ..BootOptions::default() };
        let g = raw_guest(&o.floor, &options);
        g.wait_for_log_bytes(1, RAW_GUEST_TIMEOUT).expect("the floor guest's byte");
        let first_byte = g.first_log_at().expect("a log byte arrived");
        floor.push((first_byte - g.spawned_at).as_secs_f64() * 1e3);
    }
    // Each boot is paired with the floor boot right after it: the median
    // of the pairs' differences does not move with the host's load the way
    // the difference of the two medians does.
    let pairs: Vec<f64> = ours.iter().zip(&floor).map(|(a, b)| a - b).collect();
    let gap = Samples::new(pairs).median();
    let (ours, floor) = (Samples::new(ours), Samples::new(floor));
    rows.push(
        Row::plain("boot", "spawn -> core.ready", "ms", ours)
            .against("trivial PVH guest: spawn -> first byte", floor)
            .compared(format!("{gap:+.1} ms (median of paired boots)"))
            .target("within 5 ms of the floor", gap <= 5.0),
    );
    rows.push(Row::plain("boot", "guest-reported power-on -> agent entry", "ms", Samples::new(guest_boot)));
    rows.push(Row::plain("boot", "guest-reported power-on -> core.ready", "ms", Samples::new(guest_ready)));
    rows.push(
        Row::plain("boot", "first request after boot, round trip", "ms", Samples::new(first_rtt))
            .against("the same request once warm", Samples::new(warm_rtt)),
    );
    // The guest's own probes: power-on -> each step (the last ones come
    // after core.ready, set up before the first request is read).
    assert!(!probes.is_empty(), "the guest logged no boot probes");
    for (step, samples) in probes {
        rows.push(Row::plain("boot probes", &format!("power-on -> {step}"), "ms", Samples::new(samples)));
    }
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
    let mut g = raw_guest(elf, &BootOptions { console, cmdline: "mode=echo".into(), ..BootOptions::default() });
    g.agent.set_read_timeout(Some(RAW_GUEST_TIMEOUT)).map_err(|e| e.to_string())?;
    g.agent.set_write_timeout(Some(RAW_GUEST_TIMEOUT)).map_err(|e| e.to_string())?;
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

/// `len` bytes of a fixed value, streamed without being held.
fn filler(len: u64) -> impl Read {
    std::io::repeat(0x33).take(len)
}

fn throughput(o: &Options, rows: &mut Vec<Row>) {
    let (mut stock_runs, mut stock_lost) = (0, 0);
    for mib in [64u64, 256] {
        let len = mib << 20;
        let (mut write, mut read, mut echo, mut stock, mut pair) = (vec![], vec![], vec![], vec![], vec![]);
        let mut rewrite = vec![];
        let (mut handle_write, mut handle_read) = (vec![], vec![]);
        for _ in 0..o.runs {
            let s = sandbox(&o.guest, MEMORY_MIB);
            let start = Instant::now();
            s.fs().write_from("/bench", &mut filler(len)).unwrap();
            write.push(mb_per_s(len, start.elapsed()));
            let start = Instant::now();
            s.fs().read_to("/bench", &mut std::io::sink()).unwrap();
            read.push(mb_per_s(len, start.elapsed()));
            if mib == 64 {
                // The current dialect: the same bytes through an open file.
                let options = *host_sync::OpenOptions::new().read(true).write(true).create(true);
                let file = s.fs().open("/bench-handle", &options).unwrap();
                let start = Instant::now();
                file.write_from_at(0, &mut filler(len)).unwrap();
                handle_write.push(mb_per_s(len, start.elapsed()));
                let start = Instant::now();
                file.read_at_to(0, None, &mut std::io::sink()).unwrap();
                handle_read.push(mb_per_s(len, start.elapsed()));
                file.close().unwrap();
                s.fs().remove("/bench-handle").unwrap();
            }
            // The first write lands in guest RAM nobody has touched: the host
            // kernel zeroes each page on first touch. Written again, the file
            // reuses the blocks just freed, which shows the path without it.
            s.fs().remove("/bench").unwrap();
            let start = Instant::now();
            s.fs().write_from("/bench", &mut filler(len)).unwrap();
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
        if mib == 64 {
            rows.push(
                Row::plain(
                    "throughput",
                    "write 64 MiB through a handle (Write{handle})",
                    "MB/s",
                    Samples::new(handle_write),
                )
                .against("path write_from", Samples::new(write.clone())),
            );
            rows.push(
                Row::plain(
                    "throughput",
                    "read 64 MiB through a handle (Read{handle})",
                    "MB/s",
                    Samples::new(handle_read),
                )
                .against("path read_to", Samples::new(read.clone())),
            );
        }
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

/// One operation of a throughput run, given the thread's index and its
/// operation count.
type Op<'a> = dyn Fn(usize, u64) + Sync + 'a;

/// Operations per second of `op` (given the thread's index and its
/// operation count), run by `threads` threads for `window`.
fn ops_per_second(threads: usize, window: Duration, op: impl Fn(usize, u64) + Sync) -> f64 {
    let (stop, count) = (AtomicBool::new(false), AtomicU64::new(0));
    let start = Instant::now();
    std::thread::scope(|scope| {
        for t in 0..threads {
            let (op, stop, count) = (&op, &stop, &count);
            scope.spawn(move || {
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    op(t, i);
                    i += 1;
                    count.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
        std::thread::sleep(window);
        stop.store(true, Ordering::Relaxed);
    });
    count.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}

fn latency(o: &Options, rows: &mut Vec<Row>) {
    const WINDOW: Duration = Duration::from_secs(2);
    let s = sandbox(&o.guest, 128);
    s.fs().write("/small", vec![1u8; 4096]).unwrap();
    let ops: [(&str, &Op); 3] = [
        ("stat round trips", &|_, _| {
            s.fs().stat("/small").unwrap();
        }),
        ("4 KiB writes", &|t, i| {
            s.fs().write(&format!("/w{t}-{}", i % 64), [7u8; 4096]).unwrap();
        }),
        ("4 KiB reads", &|_, _| {
            s.fs().read("/small").unwrap();
        }),
    ];
    for threads in [1usize, 8] {
        for (label, op) in ops {
            let rate = Samples::collect(o.runs, || ops_per_second(threads, WINDOW, op));
            rows.push(Row::plain("latency", &format!("{label}, {threads} thread(s)"), "ops/s", rate));
        }
    }
}

/// Stat round trips timed one by one for `window`, in microseconds.
fn stat_latencies(client: &host_sync::Client, window: Duration) -> Vec<f64> {
    let mut out = Vec::new();
    let end = Instant::now() + window;
    while Instant::now() < end {
        let t = Instant::now();
        client.fs().stat("/small").expect("stat");
        out.push(t.elapsed().as_secs_f64() * 1e6);
    }
    out
}

/// The `p`-th percentile (0..=100) of `values`.
fn percentile(values: &[f64], p: f64) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * (v.len() - 1) as f64).round() as usize;
    v[rank.min(v.len() - 1)]
}

/// A relay client's stat round trip alone, and while four other clients
/// each hold two 48 MiB reads open and never read their sockets (they are
/// cut off at their queue bound and reconnect, over and over).
fn fairness(o: &Options, rows: &mut Vec<Row>) {
    const WINDOW: Duration = Duration::from_secs(2);
    const STALLERS: usize = 4;
    let mut config = SandboxConfig::new(&o.guest);
    config.memory_mib = 256;
    config.relay = true;
    let s = Sandbox::start(config).expect("the guest boots");
    s.fs().write("/small", vec![1u8; 4096]).unwrap();
    s.fs().write_from("/big", &mut filler(48 << 20)).unwrap();
    let socket = s.relay_socket().unwrap().to_path_buf();
    let good = host_sync::Client::connect(&socket).unwrap();
    let (mut alone, mut stalled, mut held) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..o.runs {
        alone.extend(stat_latencies(&good, WINDOW));
        let stop = AtomicBool::new(false);
        std::thread::scope(|scope| {
            for _ in 0..STALLERS {
                let (socket, stop) = (&socket, &stop);
                scope.spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        let Ok(mut raw) = UnixStream::connect(socket) else { continue };
                        let mut greeting = [0u8; 8];
                        if raw.read_exact(&mut greeting).is_err() || greeting == host_sync::relay::FULL_GREETING {
                            std::thread::sleep(Duration::from_millis(5));
                            continue;
                        }
                        let start = u32::from_be_bytes(greeting[..4].try_into().unwrap());
                        for id in [start, start + 1] {
                            let read = wire::FsRequest { bulk: None, op: wire::FsOp::Read { path: "/big" } };
                            let _ = raw.write_all(&host_sync::proto::frame(id, &read));
                        }
                        // Never read; probe with a stat now and then until
                        // the relay cuts the connection, then come back.
                        let mut id = start + 2;
                        while !stop.load(Ordering::Relaxed) {
                            std::thread::sleep(Duration::from_millis(20));
                            let stat = wire::FsRequest {
                                bulk: None,
                                op: wire::FsOp::Stat { path: "/small", follow_symlink: None },
                            };
                            if raw.write_all(&host_sync::proto::frame(id, &stat)).is_err() {
                                break;
                            }
                            id += 1;
                        }
                    }
                });
            }
            std::thread::sleep(Duration::from_millis(100));
            stalled.extend(stat_latencies(&good, WINDOW));
            held.push(s.relay().unwrap().queued_bytes() as f64 / (1 << 20) as f64);
            stop.store(true, Ordering::Relaxed);
        });
    }
    for (p, label) in [(50.0, "p50"), (99.0, "p99")] {
        let ours = Samples::new(vec![percentile(&stalled, p)]);
        let base = Samples::new(vec![percentile(&alone, p)]);
        rows.push(
            Row::plain("fairness", &format!("relay stat round trip {label}, {STALLERS} clients stalling"), "us", ours)
                .against("the same client alone", base),
        );
    }
    let bound = host_sync::relay::RELAY_QUEUE_BYTES as f64 / (1 << 20) as f64;
    let held = Samples::new(held);
    let within = held.max() <= bound;
    rows.push(
        Row::plain("fairness", "relay memory held for the stalling clients", "MiB", held)
            .target(&format!("<= {bound:.0} MiB (RELAY_QUEUE_BYTES)"), within),
    );
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

fn footprint(o: &Options, rows: &mut Vec<Row>) {
    let elf = std::fs::read(&o.guest).expect("reading the guest ELF");
    match o.stripped {
        Some((size, budget)) => rows.push(
            Row::plain("footprint", "guest ELF, stripped", "KiB", Samples::new(vec![size as f64 / 1024.0]))
                .target(&format!("<= {} KiB", budget as f64 / 1024.0), size <= budget),
        ),
        None => eprintln!("sysbench: no --stripped-size and --size-budget: the stripped-size row is left out"),
    }
    rows.push(Row::plain(
        "footprint",
        "guest static memory (code, data, bss)",
        "KiB",
        Samples::new(vec![static_memory(&elf) as f64 / 1024.0]),
    ));
    let s = sandbox(&o.guest, MEMORY_MIB);
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
    let peaks = PeakRss::start(&[s.pid(), std::process::id()]);
    s.fs().write_from("/rss", &mut filler(256 << 20)).unwrap();
    s.fs().read_to("/rss", &mut std::io::sink()).unwrap();
    let peaks = peaks.finish();
    let (qemu_peak, host_peak) = (peaks[0] as f64 / 1024.0, peaks[1] as f64 / 1024.0);
    rows.push(Row::plain(
        "footprint",
        "QEMU RSS during a 256 MiB transfer (peak)",
        "MiB",
        Samples::new(vec![qemu_peak]),
    ));
    rows.push(Row::plain(
        "footprint",
        "host-sync client process RSS during it (peak)",
        "MiB",
        Samples::new(vec![host_peak]),
    ));
}

fn idle(o: &Options, rows: &mut Vec<Row>) {
    const WINDOW: Duration = Duration::from_secs(5);
    let s = sandbox(&o.guest, 128);
    std::thread::sleep(Duration::from_millis(300));
    let share = cpu_share(s.pid(), WINDOW).expect("reading QEMU's CPU time") * 100.0;
    rows.push(
        Row::plain("idle", "QEMU CPU with an idle guest, 5 s", "% of a core", Samples::new(vec![share]))
            .target("< 1% of a core", share < 1.0),
    );
}

/// The numbers of sandboxes the density section boots side by side.
const DENSITY_STEPS: [usize; 3] = [1, 8, 32];
/// Guest RAM of the density boots: the CLI's default.
const DENSITY_MEMORY_MIB: u32 = 512;
/// How long booted sandboxes settle before they are measured.
const DENSITY_SETTLE: Duration = Duration::from_millis(500);
/// The window the idle CPU of all sandboxes together is measured over.
const DENSITY_IDLE_WINDOW: Duration = Duration::from_secs(2);
/// The goal: PSS per idle sandbox at the largest step, in MiB.
const DENSITY_PSS_GOAL_MIB: f64 = 16.0;
/// How many sandboxes each setting of the sweep is measured with.
const SWEEP_N: usize = 8;
/// Pool acquisitions (and cold boots) timed for the latency percentiles.
const POOL_SAMPLES: usize = 100;
/// The pool's size in the acquire measurement.
const POOL_SIZE: usize = 4;

/// `Pss` and `Private_Dirty` of a process in KiB, from `smaps_rollup`.
fn pss_private_kib(pid: u32) -> (u64, u64) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).expect("reading smaps_rollup");
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("a smaps_rollup field")
    };
    (field("Pss:"), field("Private_Dirty:"))
}

/// `MemTotal` of the host in MiB.
fn host_memory_mib() -> u64 {
    let text = std::fs::read_to_string("/proc/meminfo").expect("reading /proc/meminfo");
    let kib: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("MemTotal");
    kib / 1024
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// What N idle sandboxes (or floor guests) cost.
struct Idle {
    /// PSS of each QEMU, MiB.
    pss: Vec<f64>,
    /// Private dirty memory of each QEMU, MiB.
    private: Vec<f64>,
    /// CPU of all of them together, % of a core.
    cpu: f64,
}

/// Measures the idle QEMUs `pids` after they settle.
fn measure_idle(pids: &[u32]) -> Idle {
    std::thread::sleep(DENSITY_SETTLE);
    let mem: Vec<(u64, u64)> = pids.iter().map(|&p| pss_private_kib(p)).collect();
    let before: Vec<Duration> = pids.iter().map(|&p| tests::guest::cpu_time(p).expect("QEMU's CPU time")).collect();
    let started = Instant::now();
    std::thread::sleep(DENSITY_IDLE_WINDOW);
    let used: Duration = pids
        .iter()
        .zip(before)
        .map(|(&p, b)| tests::guest::cpu_time(p).expect("QEMU's CPU time").saturating_sub(b))
        .sum();
    Idle {
        pss: mem.iter().map(|m| m.0 as f64 / 1024.0).collect(),
        private: mem.iter().map(|m| m.1 as f64 / 1024.0).collect(),
        cpu: used.as_secs_f64() / started.elapsed().as_secs_f64() * 100.0,
    }
}

fn density_config(o: &Options, memory_mib: u32, tuning: Tuning) -> SandboxConfig {
    let mut config = SandboxConfig::new(&o.guest);
    config.memory_mib = memory_mib;
    config.tuning = tuning;
    config
}

/// Boots `n` sandboxes one at a time (`parallel` false) or all at once;
/// the sandboxes and the creations per second per busy core.
fn boot_sandboxes(config: &SandboxConfig, n: usize, parallel: bool) -> (Vec<Sandbox>, f64) {
    let checked = config.check().expect("the density settings pass");
    // The once-per-process probe of QEMU's -sandbox is not a creation cost.
    let _ = host_sync::qemu::seccomp_support(&checked.qemu);
    let started = Instant::now();
    let sandboxes: Vec<Sandbox> = if parallel {
        std::thread::scope(|scope| {
            let handles: Vec<_> =
                (0..n).map(|_| scope.spawn(|| Sandbox::start_checked(checked.clone()).expect("a boot"))).collect();
            handles.into_iter().map(|h| h.join().expect("a boot thread")).collect()
        })
    } else {
        (0..n).map(|_| Sandbox::start_checked(checked.clone()).expect("a boot")).collect()
    };
    let busy = if parallel { n.min(cores()) } else { 1 };
    (sandboxes, n as f64 / started.elapsed().as_secs_f64() / busy as f64)
}

/// Boots `n` floor guests under the same QEMU flags, likewise; a guest is
/// created when its byte arrives.
fn boot_floors(o: &Options, memory_mib: u32, tuning: Tuning, n: usize, parallel: bool) -> (Vec<Guest>, f64) {
    let options = BootOptions { memory_mib, tuning, ..BootOptions::default() };
    let boot = || {
        let g = raw_guest(&o.floor, &options);
        g.wait_for_log_bytes(1, RAW_GUEST_TIMEOUT).expect("the floor guest's byte");
        g
    };
    let started = Instant::now();
    let guests: Vec<Guest> = if parallel {
        std::thread::scope(|scope| {
            let handles: Vec<_> = (0..n).map(|_| scope.spawn(boot)).collect();
            handles.into_iter().map(|h| h.join().expect("a boot thread")).collect()
        })
    } else {
        (0..n).map(|_| boot()).collect()
    };
    let busy = if parallel { n.min(cores()) } else { 1 };
    (guests, n as f64 / started.elapsed().as_secs_f64() / busy as f64)
}

fn own_pss_mib() -> f64 {
    pss_private_kib(std::process::id()).0 as f64 / 1024.0
}

/// N sandboxes side by side at each step, next to N floor guests under the
/// same flags; the pool's acquire latency next to a cold boot; the effect
/// of each QEMU setting on memory per sandbox.
fn density(o: &Options, rows: &mut Vec<Row>) {
    let half_ram_mib = host_memory_mib() as f64 / 2.0;
    let tuning = Tuning::default();
    // Before anything is measured, a sandbox may touch all its RAM.
    let mut per_sandbox_mib = f64::from(DENSITY_MEMORY_MIB);
    for n in DENSITY_STEPS.into_iter().filter(|&n| n <= o.density_max) {
        if per_sandbox_mib * n as f64 > half_ram_mib {
            let text = format!(
                "stopped before N = {n}: {n} x {per_sandbox_mib:.0} MiB would pass half the host's RAM \
                 ({half_ram_mib:.0} MiB)"
            );
            eprintln!("sysbench: density {text}");
            rows.push(Row::plain("density", &text, "sandboxes", Samples::new(vec![n as f64])));
            break;
        }
        eprintln!("sysbench: density N = {n}");
        let config = density_config(o, DENSITY_MEMORY_MIB, tuning);
        let host_before = own_pss_mib();
        let (sandboxes, seq_rate) = boot_sandboxes(&config, n, false);
        let pids: Vec<u32> = sandboxes.iter().map(Sandbox::pid).collect();
        let ours = measure_idle(&pids);
        let host_share = (own_pss_mib() - host_before).max(0.0) / n as f64;
        per_sandbox_mib = pids.iter().map(|&p| rss_kib(p).unwrap_or(0) as f64 / 1024.0).fold(0.0, f64::max);
        drop(sandboxes);
        let (sandboxes, par_rate) = boot_sandboxes(&config, n, true);
        drop(sandboxes);
        let (floors, floor_seq_rate) = boot_floors(o, DENSITY_MEMORY_MIB, tuning, n, false);
        let floor_pids: Vec<u32> = floors.iter().map(Guest::pid).collect();
        let floor = measure_idle(&floor_pids);
        drop(floors);
        let (floors, floor_par_rate) = boot_floors(o, DENSITY_MEMORY_MIB, tuning, n, true);
        drop(floors);
        let floor_name = "trivial PVH guest, same QEMU flags";
        let pss = Samples::new(ours.pss);
        let pss_met = pss.median() <= DENSITY_PSS_GOAL_MIB;
        let mut row = Row::plain("density", &format!("N = {n}: QEMU PSS per idle sandbox"), "MiB", pss)
            .against(floor_name, Samples::new(floor.pss));
        if n == DENSITY_STEPS[DENSITY_STEPS.len() - 1] {
            // The goal is for the largest step only.
            row = row.target(&format!("<= {DENSITY_PSS_GOAL_MIB} MiB at N = {n}"), pss_met);
        }
        rows.push(row);
        rows.push(
            Row::plain(
                "density",
                &format!("N = {n}: QEMU private dirty per idle sandbox"),
                "MiB",
                Samples::new(ours.private),
            )
            .against(floor_name, Samples::new(floor.private)),
        );
        rows.push(Row::plain(
            "density",
            &format!("N = {n}: host-sync share per sandbox (PSS growth of the owning process / N)"),
            "MiB",
            Samples::new(vec![host_share]),
        ));
        rows.push(
            Row::plain(
                "density",
                &format!("N = {n}: creations per second per core, one at a time"),
                "/s",
                Samples::new(vec![seq_rate]),
            )
            .against(floor_name, Samples::new(vec![floor_seq_rate])),
        );
        rows.push(
            Row::plain(
                "density",
                &format!("N = {n}: creations per second per core, {n} in flight"),
                "/s",
                Samples::new(vec![par_rate]),
            )
            .against(floor_name, Samples::new(vec![floor_par_rate])),
        );
        rows.push(
            Row::plain(
                "density",
                &format!("N = {n}: idle CPU of all {n} together (10 ms ticks per process)"),
                "% of a core",
                Samples::new(vec![ours.cpu]),
            )
            .against(floor_name, Samples::new(vec![floor.cpu]))
            .compared(format!("{:+.2} points", ours.cpu - floor.cpu)),
        );
    }
    pool_latency(o, rows);
    sweep(o, rows);
}

/// The pool's acquire latency (a ready sandbox waiting) next to a cold
/// boot, both in microseconds, in the same run.
fn pool_latency(o: &Options, rows: &mut Vec<Row>) {
    eprintln!("sysbench: density: pool acquire");
    let config = density_config(o, DENSITY_MEMORY_MIB, Tuning::default());
    let checked = config.check().expect("the settings pass");
    let pool = SandboxPool::new(PoolConfig { sandbox: config, size: POOL_SIZE, max_booting: 1 }).expect("a pool");
    let (mut acquire, mut cold) = (Vec::new(), Vec::new());
    for _ in 0..POOL_SAMPLES {
        assert_eq!(pool.wait_ready(POOL_SIZE, RAW_GUEST_TIMEOUT), POOL_SIZE, "the pool refills");
        let started = Instant::now();
        let s = pool.acquire(RAW_GUEST_TIMEOUT).expect("a sandbox");
        acquire.push(started.elapsed().as_secs_f64() * 1e6);
        pool.release(s);
    }
    drop(pool);
    for _ in 0..POOL_SAMPLES / 4 {
        let started = Instant::now();
        let s = Sandbox::start_checked(checked.clone()).expect("a boot");
        cold.push(started.elapsed().as_secs_f64() * 1e6);
        drop(s);
    }
    for (p, label) in [(50.0, "p50"), (99.0, "p99")] {
        let ours = percentile(&acquire, p);
        rows.push(
            Row::plain("density", &format!("pool acquire {label}, {POOL_SIZE} ready"), "us", Samples::new(vec![ours]))
                .against(&format!("cold boot (Sandbox::start) {label}"), Samples::new(vec![percentile(&cold, p)]))
                .target("< 1 ms", ours < 1000.0),
        );
    }
}

/// The effect of each QEMU setting on memory per idle sandbox, with
/// [`SWEEP_N`] side by side: each against the defaults.
fn sweep(o: &Options, rows: &mut Vec<Row>) {
    let base = Tuning::default();
    let settings: [(&str, u32, Tuning); 8] = [
        (
            "defaults (acpi=off, huge pages off, QEMU's translation cache, anonymous RAM, 512 MiB)",
            DENSITY_MEMORY_MIB,
            base,
        ),
        ("ACPI on (microvm's default)", DENSITY_MEMORY_MIB, Tuning { acpi: true, ..base }),
        ("transparent huge pages on", DENSITY_MEMORY_MIB, Tuning { huge_pages: true, ..base }),
        ("tb-size=4 (MiB)", DENSITY_MEMORY_MIB, Tuning { tb_size_mib: Some(4), ..base }),
        ("tb-size=32 (MiB)", DENSITY_MEMORY_MIB, Tuning { tb_size_mib: Some(32), ..base }),
        ("memory-backend-memfd", DENSITY_MEMORY_MIB, Tuning { ram: RamBackend::Memfd, ..base }),
        ("guest RAM 64 MiB", 64, base),
        ("guest RAM 2048 MiB", 2048, base),
    ];
    let mut baseline: Option<(Samples, Samples)> = None;
    for (name, memory_mib, tuning) in settings {
        eprintln!("sysbench: density sweep: {name}");
        let (sandboxes, _) = boot_sandboxes(&density_config(o, memory_mib, tuning), SWEEP_N, false);
        let pids: Vec<u32> = sandboxes.iter().map(Sandbox::pid).collect();
        let idle = measure_idle(&pids);
        drop(sandboxes);
        let (pss, private) = (Samples::new(idle.pss), Samples::new(idle.private));
        let metric = |what: &str| format!("N = {SWEEP_N}, {name}: {what} per idle sandbox");
        match &baseline {
            None => {
                rows.push(Row::plain("density", &metric("QEMU PSS"), "MiB", pss.clone()));
                rows.push(Row::plain("density", &metric("QEMU private dirty"), "MiB", private.clone()));
                baseline = Some((pss, private));
            }
            Some((base_pss, base_private)) => {
                let delta = |ours: &Samples, base: &Samples| format!("{:+.1} MiB", ours.median() - base.median());
                let (d_pss, d_private) = (delta(&pss, base_pss), delta(&private, base_private));
                rows.push(
                    Row::plain("density", &metric("QEMU PSS"), "MiB", pss)
                        .against("defaults", base_pss.clone())
                        .compared(d_pss),
                );
                rows.push(
                    Row::plain("density", &metric("QEMU private dirty"), "MiB", private)
                        .against("defaults", base_private.clone())
                        .compared(d_private),
                );
            }
        }
    }
}
