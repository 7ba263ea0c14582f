//! The defmt logger: raw defmt frames (rzCOBS-framed) written to QEMU's
//! debug console port, which the host reads from its own socket, apart
//! from the agent's byte stream. Also the fatal-path log lines.
//!
//! defmt's entry points (`_defmt_acquire`, `_defmt_write`, ...) are
//! defined by [`global_logger!`](crate::global_logger), which each guest
//! binary invokes once at its root: defined in the binary, they resolve
//! inside the image and log calls stay direct, where definitions in this
//! library would be reached through GOT slots.

use core::sync::atomic::{AtomicBool, Ordering};

use crate::cpu;
use crate::static_cell::StaticCell;

/// The I/O port of QEMU's `isa-debugcon` (host-sync's `DEBUGCON_PORT`).
const DEBUGCON_PORT: u16 = 0xe9;

/// Whether a frame is being written.
static TAKEN: AtomicBool = AtomicBool::new(false);

/// The frame encoder; used only between [`acquire`] and [`release`].
static ENCODER: StaticCell<defmt::Encoder> = StaticCell::new(defmt::Encoder::new());

/// Log bytes waiting for the debug console. Each byte written to the port
/// is an exit to QEMU and a host system call (about 15 us under TCG, so a
/// log line costs ~0.4 ms): logging only copies into this buffer, and the
/// bytes go out in [`flush`] once they have waited [`FLUSH_DELAY_US`] and
/// the guest is about to idle, on every exit path, or when the buffer
/// fills. Boot logging thus stays off the boot's critical path.
const PENDING_BYTES: usize = 16 * 1024;

/// How long log bytes may wait in RAM (the host sees them this late).
pub const FLUSH_DELAY_US: u64 = 20_000;

/// The buffer, how much of it is used, and since when.
struct Pending {
    bytes: [u8; PENDING_BYTES],
    len: usize,
    since_us: u64,
}

/// Used only by [`write_debugcon`], [`flush`] and [`flush_due_us`]: one
/// CPU, and interrupt handlers never log.
static PENDING: StaticCell<Pending> = StaticCell::new(Pending { bytes: [0; PENDING_BYTES], len: 0, since_us: 0 });

fn write_debugcon(bytes: &[u8]) {
    // SAFETY: see `PENDING`: nothing else holds it while this runs.
    let pending = unsafe { &mut *PENDING.get() };
    if pending.len + bytes.len() > PENDING_BYTES {
        flush();
    }
    if pending.len == 0 {
        pending.since_us = crate::clock::uptime_us();
    }
    match pending.bytes.get_mut(pending.len..pending.len + bytes.len()) {
        Some(room) => {
            room.copy_from_slice(bytes);
            pending.len += bytes.len();
        }
        // Larger than the whole buffer: straight out.
        None => cpu::outsb(DEBUGCON_PORT, bytes),
    }
}

/// When the buffered log bytes are due out (uptime in microseconds), if
/// there are any.
pub fn flush_due_us() -> Option<u64> {
    // SAFETY: see `PENDING`: nothing else holds it while this runs.
    let pending = unsafe { &*PENDING.get() };
    (pending.len > 0).then(|| pending.since_us + FLUSH_DELAY_US)
}

/// Sends the buffered log bytes to the debug console now.
pub fn flush() {
    // SAFETY: see `PENDING`: nothing else holds it while this runs.
    let pending = unsafe { &mut *PENDING.get() };
    cpu::outsb(DEBUGCON_PORT, &pending.bytes[..pending.len]);
    pending.len = 0;
}

/// Starts a frame ([`defmt::Logger::acquire`]).
///
/// One CPU; interrupt handlers never log. The only way to re-enter
/// `acquire` is a fault or panic in the middle of a frame, on a path that
/// never returns to the interrupted frame: there a fresh encoder starts
/// with a frame separator, so the decoder drops the partial frame and reads
/// the fatal message.
pub fn acquire() {
    let encoder = ENCODER.get();
    if TAKEN.swap(true, Ordering::Acquire) {
        // SAFETY: the interrupted frame is abandoned (see above), so
        // nothing else uses the encoder.
        unsafe { *encoder = defmt::Encoder::new() };
    }
    // SAFETY: the logger is held, so this context owns the encoder.
    unsafe { (*encoder).start_frame(write_debugcon) }
}

/// Ends the frame ([`defmt::Logger::release`]).
///
/// # Safety
///
/// The caller holds the logger (called [`acquire`], not yet `release`).
pub unsafe fn release() {
    // SAFETY: the caller holds the logger, so it owns the encoder.
    unsafe { (*ENCODER.get()).end_frame(write_debugcon) };
    TAKEN.store(false, Ordering::Release);
}

/// Adds bytes to the frame ([`defmt::Logger::write`]).
///
/// # Safety
///
/// The caller holds the logger (called [`acquire`], not yet [`release`]).
pub unsafe fn write(bytes: &[u8]) {
    // SAFETY: the caller holds the logger, so it owns the encoder.
    unsafe { (*ENCODER.get()).write(bytes, write_debugcon) }
}

/// Defines the binary's defmt global logger (frames to the debug console
/// through [`acquire`], [`write`] and [`release`]) and its timestamp (the
/// uptime in microseconds). Invoke once, at the root of each guest binary.
#[macro_export]
macro_rules! global_logger {
    () => {
        #[defmt::global_logger]
        struct DebugconLogger;

        // SAFETY: the library's logger functions keep the frame state and
        // uphold `Logger`'s contract (see `unikernel::log::acquire`); each
        // unsafe call passes on the caller's guarantee that it holds the
        // logger.
        unsafe impl defmt::Logger for DebugconLogger {
            fn acquire() {
                $crate::log::acquire()
            }

            unsafe fn flush() {}

            unsafe fn release() {
                // SAFETY: the caller holds the logger.
                unsafe { $crate::log::release() }
            }

            unsafe fn write(bytes: &[u8]) {
                // SAFETY: the caller holds the logger.
                unsafe { $crate::log::write(bytes) }
            }
        }

        defmt::timestamp!("{=u64:us}", $crate::clock::uptime_us());
    };
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
