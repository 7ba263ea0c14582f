//! The PVH entry: the ELF note QEMU reads to find the 32-bit entry point,
//! the 32-bit trampoline into long mode, the boot page tables and the main
//! stack (with an unmapped guard page below it).
//!
//! PVH enters in 32-bit protected mode with paging off and `%ebx` holding
//! the physical address of `hvm_start_info`. The trampoline identity-maps
//! the first 4 GiB with 2 MiB pages (RAM and, above 3 GiB, the uncached
//! MMIO window: virtio-mmio at 0xfeb00000, the IOAPICs at 0xfec00000 and
//! 0xfec10000, the LAPIC at 0xfee00000), enables long mode, loads the GDT
//! and calls `kernel_main` with the `hvm_start_info` address.
//!
//! `kernel_main` is the binary's entry point: every binary that links this
//! library defines it, unmangled, as
//! `extern "C" fn kernel_main(start_info: u32) -> !`. It is called on the
//! main stack with interrupts off.

use core::arch::{asm, global_asm};
use core::mem::size_of;

use crate::static_cell::StaticCell;

/// The GDT's code segment selector (64-bit, ring 0).
pub const CODE_SELECTOR: u16 = 0x08;
/// The GDT's data segment selector.
pub const DATA_SELECTOR: u16 = 0x10;
/// The TSS selector (a 16-byte system descriptor at index 3).
pub const TSS_SELECTOR: u16 = 0x18;
/// GDT entries: null, code, data, and the two halves of the TSS descriptor.
pub const GDT_ENTRIES: usize = 5;
/// The GDT's size in bytes (for its pseudo-descriptor).
pub const GDT_SIZE: usize = GDT_ENTRIES * size_of::<u64>();

/// The GDT: null, 64-bit code, data, TSS (the TSS filled in by [`interrupts::init`](crate::interrupts::init)). The
/// boot trampoline loads it as is; `interrupts::init` adds the TSS and reloads it.
pub static GDT: StaticCell<[u64; GDT_ENTRIES]> =
    StaticCell::new([0, 0x00af_9a00_0000_ffff, 0x00cf_9200_0000_ffff, 0, 0]);

/// 4 KiB: the smallest x86 page.
pub const PAGE_SIZE: usize = 4096;

/// Entries in one page table at any level.
const ENTRIES: usize = 512;

/// The identity map covers 4 GiB: four page directories of 2 MiB pages.
const IDENTITY_GIB: usize = 4;

/// The main stack: the agent's decode and encode paths and their bounded
/// buffers run on it. It is `.bss`, so its size costs nothing in the image.
const MAIN_STACK_SIZE: usize = 256 * 1024;

/// Page-table entry bits.
const PRESENT: u64 = 1 << 0;
const WRITABLE: u64 = 1 << 1;

/// The boot page tables: PML4 -> one PDPT -> four PDs of 2 MiB pages, plus
/// one 4 KiB table that replaces the 2 MiB page holding the stack guard.
#[repr(C, align(4096))]
struct PageTables {
    pml4: [u64; ENTRIES],
    pdpt: [u64; ENTRIES],
    pd: [[u64; ENTRIES]; IDENTITY_GIB],
    guard_pt: [u64; ENTRIES],
}

/// Written by the trampoline (before Rust runs) and by
/// [`install_stack_guard`] (once, before interrupts are enabled).
static PAGE_TABLES: StaticCell<PageTables> = StaticCell::new(PageTables {
    pml4: [0; ENTRIES],
    pdpt: [0; ENTRIES],
    pd: [[0; ENTRIES]; IDENTITY_GIB],
    guard_pt: [0; ENTRIES],
});

/// The main stack, preceded by a page that [`install_stack_guard`] unmaps
/// so that an overflow faults instead of corrupting memory below it.
#[repr(C, align(4096))]
struct GuardedStack {
    guard: [u8; PAGE_SIZE],
    stack: [u8; MAIN_STACK_SIZE],
}

/// Used only as the CPU stack (set up by the trampoline).
static MAIN_STACK: StaticCell<GuardedStack> =
    StaticCell::new(GuardedStack { guard: [0; PAGE_SIZE], stack: [0; MAIN_STACK_SIZE] });

unsafe extern "C" {
    /// The binary's entry point (see the module documentation).
    fn kernel_main(start_info: u32) -> !;
}

global_asm!(include_str!("pvh_note.s"));

global_asm!(
    // The GDT pseudo-descriptor, shared by the 32-bit `lgdt` (which reads
    // the low 4 bytes of the base) and the 64-bit one.
    ".pushsection .rodata.gdt_pointer, \"a\"",
    ".balign 8",
    ".global gdt_pointer",
    "gdt_pointer:",
    ".word {gdt_size} - 1",
    ".quad {gdt}",
    ".popsection",
    //
    ".pushsection .text.boot32, \"ax\"",
    ".code32",
    ".global pvh_start32",
    "pvh_start32:",
    "cli",
    "cld",
    "mov esi, ebx",
    // The first boot probe (`probe::Step::Trampoline`, slot 0).
    "rdtsc",
    "mov dword ptr [{probes}], eax",
    "mov dword ptr [{probes} + 4], edx",
    // Page directories: 2 MiB pages, identity. Below 3 GiB: RAM,
    // write-back. 3-4 GiB: the MMIO window, uncached (PWT | PCD).
    "mov edi, offset {tables} + {pd_offset}",
    "mov eax, 0x83",
    "mov ecx, 1536",
    "2:",
    "mov dword ptr [edi], eax",
    "mov dword ptr [edi + 4], 0",
    "add eax, 0x200000",
    "add edi, 8",
    "dec ecx",
    "jnz 2b",
    "or eax, 0x18",
    "mov ecx, 512",
    "3:",
    "mov dword ptr [edi], eax",
    "mov dword ptr [edi + 4], 0",
    "add eax, 0x200000",
    "add edi, 8",
    "dec ecx",
    "jnz 3b",
    // PDPT: four entries, one per page directory.
    "mov edi, offset {tables} + {pdpt_offset}",
    "mov eax, offset {tables} + {pd_offset} + 3",
    "mov ecx, 4",
    "4:",
    "mov dword ptr [edi], eax",
    "mov dword ptr [edi + 4], 0",
    "add eax, 4096",
    "add edi, 8",
    "dec ecx",
    "jnz 4b",
    // PML4[0] -> PDPT.
    "mov eax, offset {tables} + {pdpt_offset} + 3",
    "mov dword ptr [{tables}], eax",
    "mov dword ptr [{tables} + 4], 0",
    "mov eax, offset {tables}",
    "mov cr3, eax",
    // CR4.PAE, EFER.LME, then CR0.PG | WP | PE: long mode (compatibility).
    "mov eax, cr4",
    "or eax, 0x20",
    "mov cr4, eax",
    "mov ecx, 0xc0000080",
    "rdmsr",
    "or eax, 0x100",
    "wrmsr",
    "mov eax, cr0",
    "or eax, 0x80010001",
    "mov cr0, eax",
    // Load the GDT and far-return into its 64-bit code segment.
    "lgdt [gdt_pointer]",
    "mov eax, offset long_mode_entry",
    "push {code_selector}",
    "push eax",
    "retf",
    ".code64",
    "long_mode_entry:",
    "mov eax, {data_selector}",
    "mov ds, eax",
    "mov es, eax",
    "mov ss, eax",
    "xor eax, eax",
    "mov fs, eax",
    "mov gs, eax",
    "lea rsp, [rip + {stack} + {stack_top}]",
    "mov edi, esi",
    "call {main}",
    "ud2",
    ".popsection",
    tables = sym PAGE_TABLES,
    pdpt_offset = const size_of::<[u64; ENTRIES]>(),
    pd_offset = const 2 * size_of::<[u64; ENTRIES]>(),
    stack = sym MAIN_STACK,
    stack_top = const size_of::<GuardedStack>(),
    gdt = sym GDT,
    gdt_size = const GDT_SIZE,
    code_selector = const CODE_SELECTOR,
    data_selector = const DATA_SELECTOR,
    main = sym kernel_main,
    probes = sym crate::probe::STAMPS,
);

/// Unmaps the page below the main stack: the 2 MiB page that holds it is
/// replaced by a table of 4 KiB pages with that one entry not present.
///
/// Called once at boot, before interrupts are enabled.
pub fn install_stack_guard() {
    let guard = MAIN_STACK.get() as u64;
    let large_page = 2 * 1024 * 1024;
    let base = guard & !(large_page - 1);
    let pd_index = (guard / large_page) as usize;
    let tables = PAGE_TABLES.get();
    // SAFETY: single CPU, interrupts off, and nothing else holds a reference
    // into the page tables. `pd_index` < 2048 since the image is below 4 GiB.
    // The new table maps the same addresses as the 2 MiB page did, except
    // the guard page, which nothing uses; reloading CR3 flushes the TLB.
    unsafe {
        let pt = &mut (*tables).guard_pt;
        for (i, entry) in pt.iter_mut().enumerate() {
            *entry = (base + (i * PAGE_SIZE) as u64) | PRESENT | WRITABLE;
        }
        pt[((guard - base) as usize) / PAGE_SIZE] = 0;
        let pt_address = pt.as_ptr() as u64;
        (*tables).pd[pd_index / ENTRIES][pd_index % ENTRIES] = pt_address | PRESENT | WRITABLE;
        asm!("mov {0}, cr3", "mov cr3, {0}", out(reg) _, options(nostack, preserves_flags));
    }
}

/// The address range of the main stack's guard page.
pub fn stack_guard_page() -> core::ops::Range<u64> {
    let guard = MAIN_STACK.get() as u64;
    guard..guard + PAGE_SIZE as u64
}
