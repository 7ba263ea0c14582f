//! Boot probes: the TSC at each step from the trampoline's first
//! instruction to `core.ready` and the setup that follows it, logged once
//! as a table (`boot probe <step> <us> us` lines at info level, after
//! `core.ready`) so the host can say where boot time goes. A probe is one
//! `rdtsc` and one store.

use crate::clock::Timebase;
use crate::cpu;
use crate::static_cell::StaticCell;

/// The steps of a boot, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
pub enum Step {
    /// The trampoline's first instruction (stored by the trampoline itself).
    Trampoline,
    /// `kernel_main` entered: long mode, page tables, stack.
    Entry,
    /// Descriptor tables, stack guard and the local APIC set up.
    Cpu,
    /// The boot information read, logged, and the command line parsed.
    BootInfo,
    /// The virtio-console found among the virtio-mmio slots.
    Discovery,
    /// The virtio-console initialised (its receive buffers posted).
    Console,
    /// The clock calibrated.
    Clock,
    /// The free-RAM arena taken.
    Arena,
    /// The ramfs laid over the arena (no table touched).
    Ramfs,
    /// The agent built: next is its loop, whose first pass sends
    /// `core.init.resolved`.
    Agent,
    /// The handshake done and `core.ready` written to the console.
    Ready,
    /// After `core.ready`: the handle table initialised and lent.
    Handles,
    /// After `core.ready`: the starting directories made.
    Dirs,
}

/// Every step, in order, with the name the log line uses.
pub const STEPS: [(Step, &str); 13] = [
    (Step::Trampoline, "trampoline"),
    (Step::Entry, "entry"),
    (Step::Cpu, "cpu"),
    (Step::BootInfo, "boot-info"),
    (Step::Discovery, "discovery"),
    (Step::Console, "console"),
    (Step::Clock, "clock"),
    (Step::Arena, "arena"),
    (Step::Ramfs, "ramfs"),
    (Step::Agent, "agent"),
    (Step::Ready, "ready"),
    (Step::Handles, "handles"),
    (Step::Dirs, "dirs"),
];

/// The TSC at each step (0: not reached). Written by the trampoline (slot
/// 0, before Rust runs) and by [`mark`], read by [`log`]; one CPU, no
/// interrupt handler touches it.
pub static STAMPS: StaticCell<[u64; STEPS.len()]> = StaticCell::new([0; STEPS.len()]);

/// Records that `step` was reached now.
pub fn mark(step: Step) {
    let tsc = cpu::rdtsc();
    // SAFETY: see `STAMPS`: a single-CPU write of one element, in bounds
    // (`Step` indexes `STEPS`, which has the same length).
    unsafe { (*STAMPS.get())[step as usize] = tsc };
}

/// Logs every reached step as `boot probe <name> <us from power-on> us`.
pub fn log(timebase: &Timebase) {
    // SAFETY: see `STAMPS`: read once the trampoline and `mark` are done.
    let stamps = unsafe { *STAMPS.get() };
    for (step, name) in STEPS {
        let tsc = stamps[step as usize];
        if tsc != 0 {
            defmt::info!("boot probe {=str} {=u64} us", name, timebase.ns_from_tsc(tsc) / 1000);
        }
    }
}
