//! Bench-only: the boot floor. A PVH guest that writes one byte to QEMU's
//! debug console and halts, so the benchmark can set the guest's
//! spawn -> `core.ready` against spawn -> this byte under the same QEMU
//! command line: what booting costs before any guest code of substance.
//!
//! Nothing but the PVH note and a few 32-bit instructions: no long mode,
//! no page tables, no stack, no Rust code at run time. It links with the
//! guest's linker script (load address 1 MiB, `pvh_start32` as entry).

#![no_std]
#![deny(clippy::undocumented_unsafe_blocks)]
#![no_main]

use core::arch::global_asm;

/// The I/O port of QEMU's `isa-debugcon` (host-sync's `DEBUGCON_PORT`),
/// which the host reads from its log socket.
const DEBUGCON_PORT: u8 = 0xe9;

/// The byte the floor writes: any byte will do, the host only waits for one.
const FLOOR_BYTE: u8 = b'!';

// The PVH note, the same as the guest's.
global_asm!(include_str!("../pvh_note.s"));

global_asm!(
    // PVH enters here in 32-bit protected mode, paging off.
    ".pushsection .text.boot32, \"ax\"",
    ".code32",
    ".global pvh_start32",
    "pvh_start32:",
    "mov al, {byte}",
    "out {port}, al",
    "2:",
    "cli",
    "hlt",
    "jmp 2b",
    ".code64",
    ".popsection",
    byte = const FLOOR_BYTE,
    port = const DEBUGCON_PORT,
);

/// Required of every `no_std` binary; nothing in the floor can panic.
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {
        core::hint::spin_loop();
    }
}
