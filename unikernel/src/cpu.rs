//! Thin wrappers over the x86_64 instructions the guest needs: port I/O,
//! CPUID, the TSC, MSRs and the idle/interrupt-flag pair.

use core::arch::asm;
use core::arch::x86_64::{__cpuid_count, _rdtsc, CpuidResult};

/// Writes one byte to an I/O port.
pub fn outb(port: u16, value: u8) {
    // SAFETY: the guest only addresses ports of devices it owns (debugcon,
    // isa-debug-exit); a port write touches no memory.
    unsafe { asm!("out dx, al", in("dx") port, in("al") value, options(nomem, nostack, preserves_flags)) }
}

/// Writes a run of bytes to one I/O port (`rep outsb`).
pub fn outsb(port: u16, bytes: &[u8]) {
    // SAFETY: `rep outsb` reads exactly `bytes.len()` bytes from `bytes`
    // (the direction flag is clear, as the ABI requires) and writes them to
    // a port the guest owns.
    unsafe {
        asm!(
            "rep outsb",
            in("dx") port,
            inout("rsi") bytes.as_ptr() => _,
            inout("rcx") bytes.len() => _,
            options(readonly, nostack, preserves_flags)
        )
    }
}

/// CPUID leaf `leaf`, sub-leaf `sub_leaf`.
pub fn cpuid(leaf: u32, sub_leaf: u32) -> CpuidResult {
    __cpuid_count(leaf, sub_leaf)
}

/// The time-stamp counter.
pub fn rdtsc() -> u64 {
    // SAFETY: RDTSC exists on every x86_64 CPU and has no side effects.
    unsafe { _rdtsc() }
}

/// Reads a model-specific register.
///
/// # Safety
///
/// `msr` must exist on this CPU (reading an absent MSR faults).
pub unsafe fn rdmsr(msr: u32) -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: the caller guarantees the MSR exists.
    unsafe { asm!("rdmsr", in("ecx") msr, out("eax") lo, out("edx") hi, options(nomem, nostack, preserves_flags)) };
    (u64::from(hi) << 32) | u64::from(lo)
}

/// Writes a model-specific register.
///
/// # Safety
///
/// `msr` must exist and `value` must be valid for it; the write must not
/// break memory safety (e.g. by remapping memory).
pub unsafe fn wrmsr(msr: u32, value: u64) {
    // SAFETY: the caller guarantees the MSR and value are valid.
    unsafe {
        asm!(
            "wrmsr",
            in("ecx") msr,
            in("eax") value as u32,
            in("edx") (value >> 32) as u32,
            options(nostack, preserves_flags)
        )
    };
}

/// Sleeps until the next interrupt: `sti; hlt`, then `cli` again.
///
/// The guest runs with interrupts disabled everywhere else, so the
/// handlers (which only acknowledge and EOI) run exactly here. `sti` takes
/// effect after the following instruction, so an interrupt that became
/// pending before this call wakes the `hlt` at once instead of being lost.
pub fn wait_for_interrupt() {
    // SAFETY: the interrupt handlers save every register they use and only
    // touch MMIO and atomics; interrupts are off again when this returns.
    // Not `nomem`: the handlers write memory, so this is a compiler barrier.
    unsafe { asm!("sti", "hlt", "cli", options(nostack)) }
}

/// Disables interrupts and halts forever.
pub fn halt_forever() -> ! {
    loop {
        // SAFETY: with interrupts disabled `hlt` only ends on NMI/reset.
        unsafe { asm!("cli", "hlt", options(nomem, nostack)) }
    }
}
