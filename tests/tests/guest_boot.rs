//! End-to-end tests of the real guest under QEMU (TCG unless a hardware
//! KVM module is loaded): it boots, echoes bytes over the virtio-console,
//! logs decodable defmt frames, idles without burning CPU, and exits with
//! status 0 on a clean power-off and non-zero on a panic. Also the
//! benchmark's two baseline guests: the boot floor writes its byte, and
//! the stock-driver echo echoes correctly.
//!
//! They need the guest ELF (`cargo xtask guest`, or `PICOSANDBOX_GUEST`),
//! the baseline ELFs (`PICOSANDBOX_FLOOR`, `PICOSANDBOX_STOCK_ECHO`; see
//! `tests::guest` for how to build them) and `qemu-system-x86_64`. Runs
//! are serialised: measurements would otherwise compete for the machine's
//! cores. Every wait is bounded.

use std::io::{Read, Write};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use host_sync::qemu::ConsolePort;
use tests::bench::mb_per_s;
use tests::guest::{BootOptions, Guest, cpu_share, floor_elf_path, rss_kib, stock_echo_elf_path};
use tests::rng::Rng;

/// How long the guest may take from spawn to its "ready" log line.
const BOOT_TIMEOUT: Duration = Duration::from_secs(30);
/// The longest silence tolerated while echoing.
const IO_TIMEOUT: Duration = Duration::from_secs(60);
/// How long QEMU may take to exit once the guest asks it to.
const EXIT_TIMEOUT: Duration = Duration::from_secs(30);
/// The log line the guest prints when it starts serving.
const READY: &str = "picosandbox guest ready";
/// The stock-driver echo's equivalent.
const STOCK_READY: &str = "stock echo ready";
/// The one byte the boot floor writes to its debug console.
const FLOOR_BYTE: u8 = b'!';
/// What the stock-driver echo test sends.
const STOCK_ECHO_BYTES: usize = 256 * 1024;
/// The stock-driver echo test sends in lock-step pieces of this size: well
/// under the socket buffer QEMU writes the echo into (about 208 KiB by
/// Linux's default), so QEMU's `virtconsole`, which drops what the socket
/// cannot take at once, has nothing to drop however late the test reads.
const STOCK_ECHO_STEP: usize = 64 * 1024;
/// The idle measurement window and the CPU share allowed in it.
const IDLE_WINDOW: Duration = Duration::from_secs(2);
const IDLE_CPU_MAX: f64 = 0.05;
/// How far from its deadline an idle power-off may land, as seen from the
/// host (echo latency, QEMU's exit, scheduling on a loaded machine).
const IDLE_SLACK: Duration = Duration::from_millis(150);

/// One QEMU at a time.
static QEMU: Mutex<()> = Mutex::new(());

fn one_qemu() -> MutexGuard<'static, ()> {
    QEMU.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn boot(cmdline: &str) -> Guest {
    Guest::boot(cmdline).unwrap_or_else(|e| panic!("booting the guest with `{cmdline}`: {e}"))
}

fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut data = vec![0u8; len];
    Rng::new(seed).fill(&mut data);
    data
}

/// Sends `data` from a writer thread while reading the echo back; returns
/// what came back and how long the round trip took.
fn echo(guest: &mut Guest, data: &[u8]) -> (Vec<u8>, Duration) {
    let mut writer = guest.agent.try_clone().expect("cloning the agent stream");
    // Both directions time out, so a stalled guest fails the test instead
    // of leaving the writer blocked (and the scope waiting for it).
    guest.agent.set_read_timeout(Some(IO_TIMEOUT)).expect("setting a read timeout");
    guest.agent.set_write_timeout(Some(IO_TIMEOUT)).expect("setting a write timeout");
    let started = Instant::now();
    let echoed = std::thread::scope(|scope| {
        scope.spawn(|| writer.write_all(data).expect("sending to the guest"));
        let mut echoed = vec![0u8; data.len()];
        guest.agent.read_exact(&mut echoed).expect("reading the echo");
        echoed
    });
    (echoed, started.elapsed())
}

fn assert_same(echoed: &[u8], sent: &[u8]) {
    assert_eq!(echoed.len(), sent.len());
    if let Some(at) = echoed.iter().zip(sent).position(|(a, b)| a != b) {
        panic!("echo differs from what was sent at byte {at} of {}", sent.len());
    }
}

fn echo_throughput(size: usize) {
    let _qemu = one_qemu();
    let mut guest = boot("mode=echo");
    let (first, _) = echo(&mut guest, b"!");
    assert_eq!(first, b"!");
    println!("spawn -> first echoed byte: {:.1} ms", guest.spawned_at.elapsed().as_secs_f64() * 1e3);

    let data = pseudo_random(size, 0x5eed);
    let (echoed, elapsed) = echo(&mut guest, &data);
    assert_same(&echoed, &data);
    println!(
        "echo of {} MiB: {:.1} ms, {:.1} MB/s (each byte crosses the link twice)",
        size >> 20,
        elapsed.as_secs_f64() * 1e3,
        mb_per_s(size as u64, elapsed)
    );
    println!("QEMU RSS: {} KiB", rss_kib(guest.pid()).unwrap_or(0));
}

#[test]
fn echo_mode_round_trips_one_mebibyte() {
    echo_throughput(1 << 20);
}

/// The sustained figure.
#[test]
fn echo_mode_throughput_64_mebibytes() {
    echo_throughput(64 << 20);
}

#[test]
fn boot_log_arrives_and_decodes() {
    let _qemu = one_qemu();
    let guest = boot("mode=echo no-such-option=1");
    let ready = guest.wait_for_log(READY, BOOT_TIMEOUT);
    let lines = guest.log_lines();
    for line in &lines {
        println!("guest: {line}");
    }
    let ready = ready.unwrap_or_else(|| panic!("no `{READY}` line in the guest log"));
    assert!(ready.starts_with("INFO"), "unexpected level: {ready}");
    assert!(ready.contains("mode=Echo"), "unexpected mode: {ready}");
    assert!(
        lines.iter().any(|l| l.contains("ignoring unknown option no-such-option=1")),
        "unknown option not reported"
    );
    assert!(lines.iter().any(|l| l.contains("clock: TSC")), "no clock line");
}

#[test]
fn idle_guest_uses_almost_no_cpu() {
    let _qemu = one_qemu();
    let guest = boot("mode=echo");
    guest.wait_for_log(READY, BOOT_TIMEOUT).expect("the guest never became ready");
    let share = cpu_share(guest.pid(), IDLE_WINDOW).expect("reading QEMU's CPU time");
    println!("idle QEMU CPU: {:.2}% of one core; RSS {} KiB", share * 100.0, rss_kib(guest.pid()).unwrap_or(0));
    assert!(share < IDLE_CPU_MAX, "an idle guest used {:.1}% of a core", share * 100.0);
}

#[test]
fn clean_power_off_exits_zero() {
    let _qemu = one_qemu();
    let size = 256 * 1024;
    let mut guest = boot(&format!("mode=echo exit-after={size}"));
    let data = pseudo_random(size, 7);
    let (echoed, _) = echo(&mut guest, &data);
    assert_same(&echoed, &data);
    let status = guest.wait_exit(EXIT_TIMEOUT).expect("QEMU did not exit after the guest powered off");
    assert_eq!(status.code(), Some(0), "clean power-off: {status}; log: {:#?}", guest.log_lines());
    assert!(guest.log_lines().iter().any(|l| l.contains("power off: Shutdown")));
}

#[test]
fn idle_deadline_powers_off_on_time() {
    let _qemu = one_qemu();
    let idle = Duration::from_millis(300);
    let mut guest = boot(&format!("mode=echo exit-idle-ms={}", idle.as_millis()));
    let (echoed, _) = echo(&mut guest, b"ping");
    assert_eq!(echoed, b"ping");
    let last_byte = Instant::now();
    let status = guest.wait_exit(EXIT_TIMEOUT).expect("QEMU did not exit after the idle deadline");
    let waited = last_byte.elapsed();
    println!("idle deadline {idle:?}: QEMU exited {waited:?} after the last byte");
    assert_eq!(status.code(), Some(0), "idle power-off: {status}; log: {:#?}", guest.log_lines());
    // The guest timestamps its last input just before echoing it, and QEMU
    // takes a few milliseconds to exit: allow that much either way.
    assert!(waited + IDLE_SLACK >= idle && waited <= idle + IDLE_SLACK, "exited {waited:?} after the last byte");
}

#[test]
fn panic_exits_non_zero() {
    let _qemu = one_qemu();
    let mut guest = boot("mode=panic");
    let status = guest.wait_exit(EXIT_TIMEOUT).expect("QEMU did not exit after the guest panicked");
    let lines = guest.log_lines();
    // isa-debug-exit: value 1 (panic) -> status (1 << 1) | 1.
    assert_eq!(status.code(), Some(3), "panic exit: {status}; log: {lines:#?}");
    assert!(lines.iter().any(|l| l.contains("panic at") && l.contains("panic requested by mode=panic")), "{lines:#?}");
}

#[test]
fn floor_guest_writes_its_byte() {
    let _qemu = one_qemu();
    let elf = floor_elf_path();
    let guest = Guest::boot_elf(&elf, &BootOptions::default())
        .unwrap_or_else(|e| panic!("booting the floor guest {}: {e}", elf.display()));
    let log = guest.wait_for_log_bytes(1, BOOT_TIMEOUT).expect("the floor guest wrote nothing to its debug console");
    assert_eq!(log, [FLOOR_BYTE], "the floor guest's debug console output");
    let arrived = guest.first_log_at().expect("a log byte arrived");
    println!("spawn -> floor byte: {:.1} ms", (arrived - guest.spawned_at).as_secs_f64() * 1e3);
}

#[test]
fn stock_echo_round_trips_256_kibibytes() {
    let _qemu = one_qemu();
    let elf = stock_echo_elf_path();
    let mut guest = Guest::boot_elf(&elf, &BootOptions { console: ConsolePort::Console, ..BootOptions::default() })
        .unwrap_or_else(|e| panic!("booting the stock echo guest {}: {e}", elf.display()));
    let ready = guest.wait_for_log(STOCK_READY, BOOT_TIMEOUT);
    println!("spawn -> `{STOCK_READY}`: {:.1} ms", guest.spawned_at.elapsed().as_secs_f64() * 1e3);
    assert!(ready.is_some(), "no `{STOCK_READY}` line; log: {:#?}", guest.log_lines());
    let data = pseudo_random(STOCK_ECHO_BYTES, 0x570c);
    let started = Instant::now();
    for piece in data.chunks(STOCK_ECHO_STEP) {
        let (echoed, _) = echo(&mut guest, piece);
        assert_same(&echoed, piece);
    }
    let elapsed = started.elapsed();
    println!(
        "stock echo of {} KiB in {} KiB steps: {:.1} ms, {:.1} MB/s",
        STOCK_ECHO_BYTES / 1024,
        STOCK_ECHO_STEP / 1024,
        elapsed.as_secs_f64() * 1e3,
        mb_per_s(STOCK_ECHO_BYTES as u64, elapsed)
    );
}
