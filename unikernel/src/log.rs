//! The defmt global logger: raw defmt frames (rzCOBS-framed) written to
//! QEMU's debug console port, which the host reads from its own socket,
//! apart from the agent's byte stream. Also the fatal-path log lines.

use core::sync::atomic::{AtomicBool, Ordering};

use crate::cpu;
use crate::static_cell::StaticCell;

/// The I/O port of QEMU's `isa-debugcon` (host-sync's `DEBUGCON_PORT`).
const DEBUGCON_PORT: u16 = 0xe9;

/// Whether a frame is being written.
static TAKEN: AtomicBool = AtomicBool::new(false);

/// The frame encoder; used only between `acquire` and `release`.
static ENCODER: StaticCell<defmt::Encoder> = StaticCell::new(defmt::Encoder::new());

#[defmt::global_logger]
struct DebugconLogger;

fn write_debugcon(bytes: &[u8]) {
    cpu::outsb(DEBUGCON_PORT, bytes);
}

// SAFETY: one CPU; interrupt handlers never log. The only way to re-enter
// `acquire` is a fault or panic in the middle of a frame, on a path that
// never returns to the interrupted frame: there a fresh encoder starts
// with a frame separator, so the decoder drops the partial frame and reads
// the fatal message.
unsafe impl defmt::Logger for DebugconLogger {
    fn acquire() {
        let encoder = ENCODER.get();
        if TAKEN.swap(true, Ordering::Acquire) {
            // SAFETY: the interrupted frame is abandoned (see above), so
            // nothing else uses the encoder.
            unsafe { *encoder = defmt::Encoder::new() };
        }
        // SAFETY: the logger is held, so this context owns the encoder.
        unsafe { (*encoder).start_frame(write_debugcon) }
    }

    unsafe fn flush() {}

    unsafe fn release() {
        // SAFETY: the caller holds the logger, so it owns the encoder.
        unsafe { (*ENCODER.get()).end_frame(write_debugcon) };
        TAKEN.store(false, Ordering::Release);
    }

    unsafe fn write(bytes: &[u8]) {
        // SAFETY: the caller holds the logger, so it owns the encoder.
        unsafe { (*ENCODER.get()).write(bytes, write_debugcon) }
    }
}

defmt::timestamp!("{=u64:us}", crate::clock::uptime_us());

/// `defmt::panic!` and friends: log and exit like any panic.
#[defmt::panic_handler]
fn defmt_panic() -> ! {
    crate::platform::exit_failure(crate::platform::ExitCode::Panic)
}

/// Logs a CPU exception.
pub fn fatal_exception(vector: u64, error_code: u64, rip: u64, rsp: u64, fault_address: u64) {
    defmt::error!(
        "CPU exception {=u64} (error code {=u64:#x}) at rip {=u64:#x}, rsp {=u64:#x}, cr2 {=u64:#x}",
        vector,
        error_code,
        rip,
        rsp,
        fault_address
    );
}

/// Logs a main-stack overflow (a fault on its guard page).
pub fn fatal_stack_overflow(rip: u64, rsp: u64) {
    defmt::error!("stack overflow at rip {=u64:#x}, rsp {=u64:#x}", rip, rsp);
}
