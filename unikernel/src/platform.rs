//! The machine around the agent: sleeping until an interrupt or a
//! deadline, and powering QEMU off with a meaningful exit status.
//!
//! Exit statuses: a clean shutdown goes through microvm's ACPI generic
//! event device (sleep type S5), which makes QEMU exit with status 0.
//! Failures write an [`ExitCode`] `v` to `isa-debug-exit`, which makes QEMU
//! exit with `(v << 1) | 1`: always odd, never 0.

use agent_core::driver::{Platform, PowerOff};

use crate::clock::Timebase;
use crate::{apic, cpu};

/// The I/O port of QEMU's `isa-debug-exit` (host-sync's `DEBUG_EXIT_PORT`).
const DEBUG_EXIT_PORT: u16 = 0xf4;

/// microvm's ACPI generic event device: its sleep-control register.
const GED_SLEEP_CONTROL: usize = 0xfea0_0200;
/// Sleep control: SLP_EN (bit 5) with SLP_TYP 5 (bits 2-4), i.e. S5: off.
const GED_SLEEP_S5: u8 = (1 << 5) | (5 << 2);

/// Why the guest failed; QEMU exits with status `(code << 1) | 1`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, defmt::Format)]
#[repr(u8)]
pub enum ExitCode {
    /// A Rust panic (status 3).
    Panic = 1,
    /// The host never completed the handshake (status 5).
    HandshakeTimeout = 2,
    /// A CPU exception (status 7).
    Exception = 3,
    /// The console is missing, could not be set up, or broke (status 9).
    Console = 4,
    /// The loader passed no usable `hvm_start_info` (status 11).
    BootInfo = 5,
    /// Too little free RAM for the agent's buffers and filesystem (status 13).
    Memory = 6,
}

/// Makes QEMU exit with a failure status.
pub fn exit_failure(code: ExitCode) -> ! {
    crate::log::flush();
    cpu::outb(DEBUG_EXIT_PORT, code as u8);
    cpu::halt_forever()
}

/// Makes QEMU exit with status 0.
pub fn shutdown() -> ! {
    crate::log::flush();
    // SAFETY: the GED's registers are identity-mapped and uncached; a
    // write of S5 to sleep control asks QEMU to shut down.
    unsafe { core::ptr::write_volatile(GED_SLEEP_CONTROL as *mut u8, GED_SLEEP_S5) };
    // Without the GED (microvm with acpi=off) the write is ignored; a
    // triple fault then ends QEMU, which `-no-reboot` turns into exit 0.
    triple_fault()
}

/// Loads an empty IDT and raises an exception: no handler, no double-fault
/// handler, so the CPU shuts down.
fn triple_fault() -> ! {
    let empty = [0u16; 5];
    // SAFETY: deliberately fatal; nothing runs afterwards.
    unsafe { core::arch::asm!("lidt [{}]", "int3", in(reg) &empty, options(readonly, nostack)) };
    cpu::halt_forever()
}

/// The [`Platform`] of a microvm guest.
pub struct MicrovmPlatform {
    timebase: Timebase,
}

impl MicrovmPlatform {
    /// The platform, converting deadlines with `timebase`.
    pub fn new(timebase: Timebase) -> Self {
        MicrovmPlatform { timebase }
    }
}

impl Platform for MicrovmPlatform {
    /// Arms the LAPIC one-shot timer for the deadline (longer waits are cut
    /// at the timer's 32-bit range, about 4.3 s, and the caller waits
    /// again), then halts until any interrupt. Buffered log bytes that are
    /// due go out first (then it returns: the caller checks again).
    fn wait(&mut self, deadline_ns: Option<u64>) {
        let now = self.timebase.now_ns();
        // Buffered log bytes go out when due, and the wait ends by then.
        let log_due = crate::log::flush_due_us().map(|us| us.saturating_mul(1000));
        if log_due.is_some_and(|due| due <= now) {
            crate::log::flush();
            return;
        }
        let deadline = match (deadline_ns, log_due) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        match deadline {
            Some(deadline) => {
                if deadline <= now {
                    return;
                }
                let ticks = self.timebase.lapic_ticks(deadline - now).clamp(1, u64::from(u32::MAX));
                apic::arm_one_shot(ticks as u32);
            }
            None => apic::arm_one_shot(0),
        }
        cpu::wait_for_interrupt();
    }

    fn power_off(&mut self, reason: PowerOff) {
        defmt::info!("power off: {}", reason);
        match reason {
            PowerOff::Shutdown => shutdown(),
            PowerOff::HandshakeTimeout => exit_failure(ExitCode::HandshakeTimeout),
        }
    }
}

/// `defmt::panic!` and friends: log and exit like any panic.
#[defmt::panic_handler]
fn defmt_panic() -> ! {
    exit_failure(ExitCode::Panic)
}
