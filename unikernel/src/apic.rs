//! The local APIC (timer, EOI) and the IOAPICs (routing a device's pin to
//! a vector), through their MMIO registers in the identity-mapped,
//! uncached window below 4 GiB.

use core::ptr::{read_volatile, write_volatile};

use crate::cpu;

/// The vector the virtio-console's IOAPIC pin is routed to.
pub const CONSOLE_VECTOR: u8 = 0x30;
/// The LAPIC timer's vector.
pub const TIMER_VECTOR: u8 = 0x31;
/// The LAPIC spurious-interrupt vector (must end in 0xf on old APICs).
pub const SPURIOUS_VECTOR: u8 = 0xff;

/// Where the LAPIC's registers are mapped (`IA32_APIC_BASE` is set to it).
const LAPIC_BASE: usize = 0xfee0_0000;
/// `IA32_APIC_BASE`: the LAPIC's base address and global enable.
const IA32_APIC_BASE_MSR: u32 = 0x1b;
/// `IA32_APIC_BASE` bit 11: the LAPIC is enabled.
const APIC_GLOBAL_ENABLE: u64 = 1 << 11;

/// LAPIC register offsets.
const LAPIC_ID: usize = 0x20;
const LAPIC_TASK_PRIORITY: usize = 0x80;
const LAPIC_EOI: usize = 0xb0;
const LAPIC_SPURIOUS: usize = 0xf0;
const LAPIC_LVT_TIMER: usize = 0x320;
const LAPIC_TIMER_INITIAL: usize = 0x380;
const LAPIC_TIMER_CURRENT: usize = 0x390;
const LAPIC_TIMER_DIVIDE: usize = 0x3e0;

/// Spurious-vector register bit 8: software enable.
const LAPIC_SOFTWARE_ENABLE: u32 = 1 << 8;
/// LVT bit 16: masked.
const LVT_MASKED: u32 = 1 << 16;
/// Timer divide configuration 0b1011: divide by 1 (the finest resolution;
/// QEMU's timer counts at 1 GHz, so one count is 1 ns).
const TIMER_DIVIDE_BY_1: u32 = 0b1011;

/// The IOAPICs of QEMU microvm: the first serves GSIs 0-23, the second
/// (present by default) GSIs 24-47, where the virtio-mmio slots sit.
pub const IOAPICS: [Ioapic; 2] =
    [Ioapic { base: 0xfec0_0000, first_gsi: 0 }, Ioapic { base: 0xfec1_0000, first_gsi: 24 }];

/// IOAPIC register offsets and indices.
const IOAPIC_SELECT: usize = 0x00;
const IOAPIC_WINDOW: usize = 0x10;
const IOAPIC_VERSION: u32 = 0x01;
const IOAPIC_REDIRECTION: u32 = 0x10;
/// Redirection entry bit 15: level-triggered (bit 13 clear: active high;
/// bits 8-10 clear: fixed delivery; bit 11 clear: physical destination).
const REDIRECTION_LEVEL: u32 = 1 << 15;

fn lapic_read(offset: usize) -> u32 {
    // SAFETY: the LAPIC's registers are identity-mapped and uncached;
    // reading them has no side effects on memory.
    unsafe { read_volatile((LAPIC_BASE + offset) as *const u32) }
}

fn lapic_write(offset: usize, value: u32) {
    // SAFETY: as for `lapic_read`; every caller writes a valid value for
    // the register.
    unsafe { write_volatile((LAPIC_BASE + offset) as *mut u32, value) }
}

/// Enables the LAPIC with the spurious vector, all priorities accepted and
/// the timer masked. Called once at boot, interrupts off.
pub fn init_lapic() {
    // SAFETY: IA32_APIC_BASE exists on every x86_64 CPU; the write keeps
    // the BSP flag and moves nothing (the base is the architectural one).
    unsafe {
        let base = cpu::rdmsr(IA32_APIC_BASE_MSR);
        let keep = base & 0xfff & !APIC_GLOBAL_ENABLE;
        cpu::wrmsr(IA32_APIC_BASE_MSR, LAPIC_BASE as u64 | keep | APIC_GLOBAL_ENABLE);
    }
    lapic_write(LAPIC_TASK_PRIORITY, 0);
    lapic_write(LAPIC_SPURIOUS, LAPIC_SOFTWARE_ENABLE | u32::from(SPURIOUS_VECTOR));
    lapic_write(LAPIC_TIMER_DIVIDE, TIMER_DIVIDE_BY_1);
    lapic_write(LAPIC_LVT_TIMER, LVT_MASKED | u32::from(TIMER_VECTOR));
}

/// This CPU's LAPIC id (the IOAPIC destination).
pub fn lapic_id() -> u8 {
    (lapic_read(LAPIC_ID) >> 24) as u8
}

/// Signals the end of the interrupt being handled.
pub fn end_of_interrupt() {
    lapic_write(LAPIC_EOI, 0);
}

/// Starts the timer counting down from `count` without raising an
/// interrupt (for calibration).
pub fn start_free_running(count: u32) {
    lapic_write(LAPIC_LVT_TIMER, LVT_MASKED | u32::from(TIMER_VECTOR));
    lapic_write(LAPIC_TIMER_INITIAL, count);
}

/// The timer's current count.
pub fn timer_current() -> u32 {
    lapic_read(LAPIC_TIMER_CURRENT)
}

/// Arms the one-shot timer to interrupt after `count` ticks (0 disarms).
pub fn arm_one_shot(count: u32) {
    lapic_write(LAPIC_LVT_TIMER, u32::from(TIMER_VECTOR));
    lapic_write(LAPIC_TIMER_INITIAL, count);
}

/// One IOAPIC: its register block and the first GSI it serves.
#[derive(Clone, Copy)]
pub struct Ioapic {
    base: usize,
    first_gsi: u32,
}

impl Ioapic {
    fn read(&self, register: u32) -> u32 {
        // SAFETY: the IOAPIC block is identity-mapped and uncached; the
        // select/window pair is only used with interrupts off.
        unsafe {
            write_volatile((self.base + IOAPIC_SELECT) as *mut u32, register);
            read_volatile((self.base + IOAPIC_WINDOW) as *const u32)
        }
    }

    fn write(&self, register: u32, value: u32) {
        // SAFETY: as for `read`.
        unsafe {
            write_volatile((self.base + IOAPIC_SELECT) as *mut u32, register);
            write_volatile((self.base + IOAPIC_WINDOW) as *mut u32, value);
        }
    }

    /// The number of pins, or `None` if no IOAPIC answers at this address
    /// (QEMU reads unassigned MMIO as all zeros or all ones).
    pub fn pins(&self) -> Option<u32> {
        let version = self.read(IOAPIC_VERSION);
        if version == 0 || version == u32::MAX {
            return None;
        }
        Some(((version >> 16) & 0xff) + 1)
    }

    /// The GSIs this IOAPIC serves, if it is present.
    pub fn gsis(&self) -> Option<core::ops::Range<u32>> {
        self.pins().map(|pins| self.first_gsi..self.first_gsi + pins)
    }

    /// Routes `gsi` (which this IOAPIC serves) to `vector` on the LAPIC
    /// `destination`: fixed delivery, level-triggered, active high,
    /// unmasked.
    pub fn route_level_high(&self, gsi: u32, vector: u8, destination: u8) {
        let register = IOAPIC_REDIRECTION + 2 * (gsi - self.first_gsi);
        self.write(register + 1, u32::from(destination) << 24);
        self.write(register, REDIRECTION_LEVEL | u32::from(vector));
    }
}
