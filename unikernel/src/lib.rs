//! The picosandbox guest's platform, shared by the guest binaries: PVH
//! boot, descriptor tables and interrupts, the APICs and the clock, the
//! boot information, virtio-mmio discovery and the DMA [`hal`], the defmt
//! logger, and the exit paths (including the panic handler). With the
//! bench-only `stock-echo` feature, also a heap (`heap`).
//!
//! The binaries: `unikernel`, the guest (with its own console driver,
//! command line and free-RAM arena), and the bench-only `stock_echo`
//! (virtio-drivers' console driver). Each defines the Rust entry point the
//! boot trampoline calls (see [`boot`]) and invokes [`global_logger!`]
//! once. The bench-only `floor` boots on its own, without this library.

#![no_std]
#![deny(clippy::undocumented_unsafe_blocks)]

pub mod apic;
pub mod boot;
pub mod boot_info;
pub mod clock;
pub mod cpu;
pub mod hal;
#[cfg(feature = "stock-echo")]
pub mod heap;
pub mod interrupts;
pub mod log;
pub mod platform;
pub mod probe;
pub mod static_cell;
pub mod virtio;

use crate::platform::ExitCode;

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    match info.location() {
        Some(at) => {
            defmt::error!("panic at {=str}:{=u32}: {}", at.file(), at.line(), defmt::Display2Format(&info.message()))
        }
        None => defmt::error!("panic: {}", defmt::Display2Format(&info.message())),
    }
    platform::exit_failure(ExitCode::Panic)
}
