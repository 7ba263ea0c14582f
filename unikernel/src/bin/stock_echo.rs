//! Bench-only: the guest's raw echo (`mode=echo`), but through
//! virtio-drivers' own `VirtIOConsole`, the baseline the benchmark sets our
//! console driver against. Built only with the `stock-echo` feature, which
//! gives virtio-drivers its `alloc` feature; the guest itself has no heap.
//!
//! The stock driver speaks only port 0 and no multiport: QEMU must attach
//! the agent's chardev as a `virtconsole` (host-sync's
//! `ConsolePort::Console`). It has two-entry queues and one 4 KiB receive
//! buffer, posted again only when a `read` finds it drained; `send_bytes`
//! spins until the device has taken the data. So the echo busy-polls: a
//! blocking `read`, then a blocking `write_all` of what it returned. The
//! driver's heap is the library's [`unikernel::heap`]. The command line is
//! ignored; log timestamps stay 0 (the clock is not calibrated: nothing
//! here needs time).

#![no_std]
#![deny(clippy::undocumented_unsafe_blocks)]
#![no_main]

use embedded_io::{Read, Write};
use unikernel::boot_info::BootInfo;
use unikernel::hal::IdentityHal;
use unikernel::platform::{self, ExitCode};
use unikernel::{boot, interrupts, virtio};
use virtio_drivers::device::console::VirtIOConsole;

unikernel::global_logger!();

/// The echo's copy buffer: one `read` of the stock driver returns at most
/// its one receive buffer (a page).
const ECHO_CHUNK: usize = virtio_drivers::PAGE_SIZE;

/// The Rust entry point, called by the boot trampoline with the address of
/// `hvm_start_info`. Interrupts are off, and stay off: the stock driver
/// polls.
// SAFETY: the one definition of the entry symbol the boot trampoline
// calls, with the signature it declares.
#[unsafe(no_mangle)]
extern "C" fn kernel_main(start_info: u32) -> ! {
    interrupts::init();
    boot::install_stack_guard();
    // SAFETY: `start_info` is the loader's `%ebx`, and nothing has written
    // memory outside the image yet.
    let boot_info = match unsafe { BootInfo::read(start_info) } {
        Ok(info) => info,
        Err(e) => {
            defmt::error!("no usable hvm_start_info at {=u32:#x}: {}", start_info, e);
            platform::exit_failure(ExitCode::BootInfo)
        }
    };
    let Some(found) = virtio::find_console(boot_info.acpi_present()) else {
        defmt::error!("no virtio-console found");
        platform::exit_failure(ExitCode::Console)
    };
    let mut console = match VirtIOConsole::<IdentityHal, _>::new(found.transport) {
        Ok(console) => console,
        Err(e) => {
            defmt::error!("VirtIOConsole setup failed: {}", defmt::Display2Format(&e));
            platform::exit_failure(ExitCode::Console)
        }
    };
    defmt::info!("stock echo ready: VirtIOConsole in slot {=usize} at {=usize:#x}", found.slot, found.base);
    // It busy-polls and never idles, so the buffered log goes out now.
    unikernel::log::flush();
    let mut buffer = [0u8; ECHO_CHUNK];
    loop {
        let echoed = console.read(&mut buffer).and_then(|n| console.write_all(&buffer[..n]));
        if let Err(e) = echoed {
            defmt::error!("console failed: {}", defmt::Display2Format(&e));
            platform::exit_failure(ExitCode::Console)
        }
    }
}
