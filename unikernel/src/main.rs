//! The picosandbox guest: a PVH unikernel for QEMU microvm that serves the
//! agent (or, for measurements, a raw echo) over a virtio-console.
//!
//! The platform (boot, interrupts, clock, discovery, logging, exits) is
//! the `unikernel` library; this binary adds its console driver
//! ([`console`]), its command line ([`cmdline`]) and the free-RAM arena
//! ([`memory`]).
//!
//! Boot order: descriptor tables and the stack guard, the LAPIC (and the
//! start of the TSC calibration), the boot information, the console and its
//! interrupt route, the end of the calibration, the free-RAM arena; then
//! the mode the command line asks for ([`cmdline`]). In agent mode only
//! what the handshake needs comes before `core.ready` (the buffers, an
//! untouched ramfs, the agent); the handle table, the starting directories
//! and the boot log follow once `core.ready` is out
//! ([`driver::run_with`]): under emulation every code path run for the
//! first time is translated first, so each moved step is time the host no
//! longer waits for (the boot probes, [`probe`], show each step).

#![no_std]
#![deny(clippy::undocumented_unsafe_blocks)]
#![no_main]

mod cmdline;
mod console;
mod memory;

use agent_core::driver::{self, Clock, Exit, Platform, PowerOff};
use agent_core::handles::{HandleMemory, HandleSlot, MAX_HANDLES, MAX_OPEN_DIRS};
use agent_core::path::PathBuf;
use agent_core::ramfs::Ramfs;
use agent_core::{Agent, Config};
use embedded_io::{Read, ReadReady, Write};

use unikernel::boot_info::{self, BootInfo};
use unikernel::clock::{self, Timebase, TscClock};
use unikernel::platform::{self, ExitCode, MicrovmPlatform};
use unikernel::probe::{self, Step};
use unikernel::static_cell::StaticCell;
use unikernel::{apic, boot, cpu, interrupts, virtio};

use crate::cmdline::Mode;
use crate::console::Console;

unikernel::global_logger!();

/// Echo mode's copy buffer: one read drains up to 64 receive buffers (half
/// of those posted) and one write fills up to 8 transmit buffers, so the
/// device is notified about once per 256 KiB each way.
const ECHO_CHUNK: usize = 256 * 1024;
/// Used only by [`echo`], which never returns.
static ECHO_BUFFER: StaticCell<[u8; ECHO_CHUNK]> = StaticCell::new([0; ECHO_CHUNK]);

/// The agent's receive buffer: one whole frame of the largest size.
const AGENT_RX_BYTES: usize = agent_core::MIN_RX_BUFFER;

/// The agent's outbox: control frames, and `List` responses of up to about
/// 1 MiB less the agent's reserve.
const AGENT_TX_BYTES: usize = 1024 * 1024;

/// The Rust entry point, called by the boot trampoline with the address of
/// `hvm_start_info` (`%ebx` at the PVH entry). Interrupts are off.
// SAFETY: the one definition of the entry symbol the boot trampoline
// calls, with the signature it declares.
#[unsafe(no_mangle)]
extern "C" fn kernel_main(start_info: u32) -> ! {
    let tsc_origin = cpu::rdtsc();
    probe::mark(Step::Entry);
    interrupts::init();
    boot::install_stack_guard();
    apic::init_lapic();
    let calibration = clock::start_calibration();
    probe::mark(Step::Cpu);

    // SAFETY: `start_info` is the loader's `%ebx`, and nothing has written
    // memory outside the image yet.
    let boot_info = match unsafe { BootInfo::read(start_info) } {
        Ok(info) => info,
        Err(e) => {
            defmt::error!("no usable hvm_start_info at {=u32:#x}: {}", start_info, e);
            platform::exit_failure(ExitCode::BootInfo)
        }
    };
    let options = cmdline::parse(boot_info.cmdline());
    probe::mark(Step::BootInfo);
    let (console, found) = setup_console(&boot_info);
    probe::mark(Step::Console);
    // Monotonic time counts from power-on (the TSC starts at 0 at reset),
    // so the agent can report boot times from power-on.
    let timebase = calibration.finish(0);
    probe::mark(Step::Clock);
    let entry_ns = timebase.ns_from_tsc(tsc_origin);
    let arena = memory::take_arena(boot_info.ram()).unwrap_or_default();
    probe::mark(Step::Arena);
    let boot = Boot {
        info: boot_info,
        options,
        console: found,
        timebase,
        arena: (arena.as_ptr() as usize, arena.len()),
        boot_us: timebase.now_ns() / 1000,
    };

    let clock = TscClock::new(timebase);
    let platform = MicrovmPlatform::new(timebase);
    match options.mode {
        Mode::Echo => {
            log_boot(&boot);
            let idle_ns = options.exit_idle_ms.map(|ms| ms.saturating_mul(1_000_000));
            echo(console, clock, platform, EchoLimits { bytes: options.exit_after, idle_ns })
        }
        Mode::Panic => panic!("panic requested by mode=panic"),
        Mode::Agent => run_agent(console, clock, platform, arena, &boot, entry_ns),
    }
}

/// What the boot found, for the boot log.
struct Boot {
    info: BootInfo,
    options: cmdline::Options,
    console: ConsoleSlot,
    timebase: Timebase,
    /// The free-RAM arena: address and bytes.
    arena: (usize, usize),
    /// Power-on -> the mode starting.
    boot_us: u64,
}

/// Where the virtio-console was found.
#[derive(Clone, Copy)]
struct ConsoleSlot {
    slot: usize,
    base: usize,
    gsi: u32,
}

/// Logs what the boot found: the image, the command line, the memory map,
/// the console, the clock and the arena.
fn log_boot(boot: &Boot) {
    log_boot_info(&boot.info);
    let ConsoleSlot { slot, base, gsi } = boot.console;
    defmt::info!("virtio-console in slot {=usize} at {=usize:#x}, GSI {=u32}", slot, base, gsi);
    let timebase = &boot.timebase;
    defmt::info!(
        "clock: TSC {=u64} Hz ({}), LAPIC timer {=u64} Hz",
        timebase.tsc_hz(),
        timebase.source(),
        timebase.lapic_hz()
    );
    defmt::info!(
        "picosandbox guest ready: mode={}, arena {=usize} KiB at {=usize:#x}, boot took {=u64} us",
        boot.options.mode,
        boot.arena.1 / 1024,
        boot.arena.0,
        boot.boot_us
    );
}

/// Logs the image, the command line and the memory map.
fn log_boot_info(boot_info: &BootInfo) {
    let image = memory::image_range();
    let cmdline = cmdline::printable(boot_info.cmdline());
    defmt::info!("image {=u64:#x}..{=u64:#x}, command line \"{=str}\"", image.start, image.end, cmdline);
    for region in boot_info.ram() {
        defmt::debug!("RAM {=u64:#x}..{=u64:#x}", region.start, region.end);
    }
    if boot_info.entries_skipped > 0 {
        defmt::debug!("{=usize} memory-map entries were not usable RAM", boot_info.entries_skipped);
    }
    if boot_info.cmdline_truncated {
        defmt::warn!("command line cut at {=usize} bytes", boot_info::CMDLINE_MAX);
    }
}

/// Finds the virtio-console, routes its interrupt and initialises it.
fn setup_console(boot_info: &BootInfo) -> (Console, ConsoleSlot) {
    let Some(found) = virtio::find_console(boot_info.acpi_present()) else {
        defmt::error!("no virtio-console found");
        platform::exit_failure(ExitCode::Console)
    };
    interrupts::set_console_mmio(found.base);
    found.ioapic.route_level_high(found.gsi, apic::CONSOLE_VECTOR, apic::lapic_id());
    probe::mark(Step::Discovery);
    let slot = ConsoleSlot { slot: found.slot, base: found.base, gsi: found.gsi };
    match Console::new(found.transport) {
        Ok(console) => (console, slot),
        Err(e) => {
            defmt::error!("virtio-console setup failed: {}", e);
            platform::exit_failure(ExitCode::Console)
        }
    }
}

/// Runs the agent over the console until it powers off: its receive
/// buffer and outbox come first from the free-RAM arena, then the handle
/// table's memory (set aside, not touched), and the ramfs gets the rest.
/// Once `core.ready` is out, the handle table is set up and lent, the
/// starting directories are made and the boot is logged with its probes.
/// `entry_ns` is power-on -> `kernel_main`.
fn run_agent(
    mut console: Console,
    mut clock: TscClock,
    mut platform: MicrovmPlatform,
    arena: &'static mut [u8],
    boot: &Boot,
    entry_ns: u64,
) -> ! {
    if arena.len() < AGENT_RX_BYTES + AGENT_TX_BYTES {
        defmt::error!("{=usize} KiB of free RAM cannot hold the agent's buffers", arena.len() / 1024);
        platform::exit_failure(ExitCode::Memory)
    }
    let (rx, rest) = arena.split_at_mut(AGENT_RX_BYTES);
    let (tx, rest) = rest.split_at_mut(AGENT_TX_BYTES);
    let (slot_count, dir_count) = handle_table_size(rest.len());
    let reserved = reserve::<HandleSlot<Ramfs<'static>>>(rest, slot_count)
        .and_then(|(slots, rest)| reserve::<PathBuf>(rest, dir_count).map(|(dirs, fs)| (slots, dirs, fs)));
    let Some((slot_memory, dir_memory, fs_arena)) = reserved else {
        defmt::error!("free RAM cannot hold the agent's handle table");
        platform::exit_failure(ExitCode::Memory)
    };
    let fs_bytes = fs_arena.len();
    let fs = match Ramfs::new(fs_arena, clock.monotonic_ns()) {
        Ok(fs) => fs,
        Err(e) => {
            defmt::error!("{=usize} KiB cannot hold a ramfs (needs {=usize})", fs_bytes / 1024, e.needed);
            platform::exit_failure(ExitCode::Memory)
        }
    };
    probe::mark(Step::Ramfs);
    let config = Config { boot_time_ns: entry_ns, ..Config::default() };
    let mut agent = match Agent::new(fs, rx, tx, config) {
        Ok(agent) => agent,
        Err(e) => {
            defmt::error!("agent buffers rejected: {}", defmt::Debug2Format(&e));
            platform::exit_failure(ExitCode::Memory)
        }
    };
    probe::mark(Step::Agent);
    let after_ready = move |agent: &mut Agent<'static, Ramfs<'static>>, now_ns: u64| {
        probe::mark(Step::Ready);
        // Moved out of the closure (no reborrow), so it is `FnOnce`.
        let (slot_memory, dir_memory) = (slot_memory, dir_memory);
        let slots = carve(slot_memory, slot_count, || HandleSlot::EMPTY);
        let dir_paths = carve(dir_memory, dir_count, PathBuf::new);
        agent.lend_handles(HandleMemory { slots, dir_paths });
        probe::mark(Step::Handles);
        // The directories SDK users write into (`/tmp` ...), as a Linux guest has them.
        if let Err(e) = agent.fs_mut().make_standard_dirs(now_ns) {
            defmt::error!("the starting directories do not fit the ramfs: {}", defmt::Display2Format(&e));
            platform::exit_failure(ExitCode::Memory)
        }
        probe::mark(Step::Dirs);
        log_boot(boot);
        defmt::info!("agent: serving a host of generation {=u8}", agent.peer_generation().unwrap_or(0));
        let usage = agent.fs().usage();
        defmt::info!(
            "agent: ramfs arena {=usize} KiB ({=usize} blocks of 4 KiB, {=usize} entries), rx {=usize} KiB, outbox {=usize} KiB",
            fs_bytes / 1024,
            usage.blocks_total,
            usage.entries_total,
            AGENT_RX_BYTES / 1024,
            AGENT_TX_BYTES / 1024
        );
        probe::log(&boot.timebase);
    };
    match driver::run_with(&mut agent, &mut console, &mut clock, &mut platform, after_ready) {
        Exit::PowerOff(reason) => {
            // The platform powers off and does not return; in case it did:
            defmt::error!("power-off ({}) returned", reason);
            platform::shutdown()
        }
        Exit::EndOfStream => {
            defmt::error!("the console reported end of stream");
            platform::exit_failure(ExitCode::Console)
        }
        Exit::Link(e) => {
            defmt::error!("console failed: {}", e);
            platform::exit_failure(ExitCode::Console)
        }
    }
}

/// When echo mode powers off by itself (for tests); never by default.
#[derive(Clone, Copy, Default)]
struct EchoLimits {
    /// After this many bytes have been echoed and sent.
    bytes: Option<u64>,
    /// After this long without input.
    idle_ns: Option<u64>,
}

/// The share of the free RAM left after the agent's buffers that its
/// handle table may take: the full table (about 800 KiB) from 8 MiB
/// on, a smaller one below, so the smallest guest still boots.
const HANDLE_TABLE_SHARE: usize = 8;

/// Handle slots and open-directory paths for `free` bytes of RAM: up to
/// [`MAX_HANDLES`] and [`MAX_OPEN_DIRS`], within `free / HANDLE_TABLE_SHARE`
/// (half of it for directory paths), and at least one of each.
fn handle_table_size(free: usize) -> (usize, usize) {
    let budget = free / HANDLE_TABLE_SHARE;
    let path_bytes = core::mem::size_of::<PathBuf>();
    let dirs = (budget / 2 / path_bytes).clamp(1, MAX_OPEN_DIRS);
    let slot_bytes = core::mem::size_of::<HandleSlot<Ramfs<'static>>>();
    let slots = (budget.saturating_sub(dirs * path_bytes) / slot_bytes).clamp(1, MAX_HANDLES);
    (slots, dirs)
}

/// Sets aside room for `count` values of `T` at the front of `arena`,
/// aligned, without touching it: the room and the rest of the arena, or
/// `None` if they do not fit.
type Reserved = (&'static mut [u8], &'static mut [u8]);

fn reserve<T>(arena: &'static mut [u8], count: usize) -> Option<Reserved> {
    let pad = arena.as_ptr().align_offset(core::mem::align_of::<T>());
    let bytes = count.checked_mul(core::mem::size_of::<T>()).and_then(|n| n.checked_add(pad))?;
    (bytes <= arena.len()).then(|| arena.split_at_mut(bytes))
}

/// Fills room set aside by [`reserve`] with `count` values of `T` (each
/// made by `init`, one at a time, so no large temporary lands on the stack).
///
/// # Panics
///
/// If `room` is not what `reserve::<T>(_, count)` returned.
fn carve<T>(room: &'static mut [u8], count: usize, init: impl Fn() -> T) -> &'static mut [T] {
    let pad = room.as_ptr().align_offset(core::mem::align_of::<T>());
    assert!(pad + count * core::mem::size_of::<T>() <= room.len(), "room for the values");
    let first = room[pad..].as_mut_ptr().cast::<T>();
    for i in 0..count {
        // SAFETY: `first` is aligned for `T` and `room[pad..]` holds
        // `count` of them (asserted); each is written once before any is read.
        unsafe { first.add(i).write(init()) };
    }
    // SAFETY: all `count` values were initialized above, the memory is
    // borrowed for 'static and handed out once.
    unsafe { core::slice::from_raw_parts_mut(first, count) }
}

/// Raw echo: every byte read is written back, until a limit (if any).
fn echo(mut console: Console, clock: TscClock, mut platform: MicrovmPlatform, limits: EchoLimits) -> ! {
    // SAFETY: `echo` runs once and never returns; nothing else uses the
    // buffer.
    let buffer = unsafe { &mut *ECHO_BUFFER.get() };
    let mut echoed: u64 = 0;
    let mut last_input_ns = clock.monotonic_ns();
    loop {
        let want = match limits.bytes {
            Some(limit) if echoed >= limit => power_off_after_echo(&mut console, &mut platform, echoed),
            Some(limit) => ECHO_CHUNK.min((limit - echoed) as usize),
            None => ECHO_CHUNK,
        };
        if !console_or_exit(console.read_ready()) {
            let deadline = limits.idle_ns.map(|idle| last_input_ns.saturating_add(idle));
            if deadline.is_some_and(|d| clock.monotonic_ns() >= d) {
                power_off_after_echo(&mut console, &mut platform, echoed);
            }
            platform.wait(deadline);
            continue;
        }
        let n = console_or_exit(console.read(&mut buffer[..want]));
        console_or_exit(console.write_all(&buffer[..n]));
        echoed += n as u64;
        last_input_ns = clock.monotonic_ns();
    }
}

/// Sends what is left, then powers off cleanly.
fn power_off_after_echo(console: &mut Console, platform: &mut MicrovmPlatform, echoed: u64) -> ! {
    console_or_exit(console.flush());
    defmt::info!("echoed {=u64} bytes", echoed);
    platform.power_off(PowerOff::Shutdown);
    platform::shutdown()
}

/// The value of a console operation, or a logged failure exit.
fn console_or_exit<T>(result: Result<T, console::ConsoleError>) -> T {
    result.unwrap_or_else(|e| {
        defmt::error!("console failed: {}", e);
        platform::exit_failure(ExitCode::Console)
    })
}
