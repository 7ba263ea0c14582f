//! Descriptor tables and interrupt entry: the TSS (added to the boot
//! GDT; its interrupt stack catches faults even on a blown stack), the IDT, the
//! exception stubs (every CPU exception is fatal: log, exit non-zero) and
//! the two device interrupts (virtio-console, LAPIC timer).
//!
//! The guest runs with interrupts disabled except inside
//! [`wait_for_interrupt`](crate::cpu::wait_for_interrupt), so the
//! handlers stay minimal: acknowledge the device, EOI, return. The code
//! that slept then looks at the device itself.

use core::arch::{asm, global_asm};
use core::mem::size_of;
use core::sync::atomic::{AtomicUsize, Ordering};

use crate::apic::{self, CONSOLE_VECTOR, SPURIOUS_VECTOR, TIMER_VECTOR};
use crate::boot::{CODE_SELECTOR, GDT, GDT_SIZE, TSS_SELECTOR};
use crate::static_cell::StaticCell;

/// The exception vectors (0-31), all routed to the fatal handler.
const EXCEPTIONS: usize = 32;
/// The interrupt stack exceptions run on: big enough for the fatal path
/// (format and log one line), independent of the main stack so a stack
/// overflow still reports.
const FAULT_STACK_SIZE: usize = 16 * 1024;
/// The IST slot (1-based) of the fault stack.
const FAULT_IST: u8 = 1;
/// Interrupt gate, present, ring 0.
const INTERRUPT_GATE: u64 = 0x8e;

/// The 64-bit task-state segment: only the interrupt stack table is used.
#[repr(C, packed)]
struct TaskStateSegment {
    reserved0: u32,
    privilege_stacks: [u64; 3],
    reserved1: u64,
    interrupt_stacks: [u64; 7],
    reserved2: u64,
    reserved3: u16,
    io_map_base: u16,
}

/// Written once by [`init`], then read only by the CPU.
static TSS: StaticCell<TaskStateSegment> = StaticCell::new(TaskStateSegment {
    reserved0: 0,
    privilege_stacks: [0; 3],
    reserved1: 0,
    interrupt_stacks: [0; 7],
    reserved2: 0,
    reserved3: 0,
    io_map_base: size_of::<TaskStateSegment>() as u16,
});

/// Used only as the CPU's fault stack.
#[repr(C, align(16))]
struct FaultStack([u8; FAULT_STACK_SIZE]);
static FAULT_STACK: StaticCell<FaultStack> = StaticCell::new(FaultStack([0; FAULT_STACK_SIZE]));

/// One IDT gate: `[low, high]` quadwords.
type Gate = [u64; 2];
/// Vectors the IDT covers.
const VECTORS: usize = 256;
/// Written once by [`init`], then read only by the CPU.
static IDT: StaticCell<[Gate; VECTORS]> = StaticCell::new([[0; 2]; VECTORS]);

/// The virtio-mmio register block the console interrupt acknowledges
/// (0: no device yet).
static CONSOLE_MMIO: AtomicUsize = AtomicUsize::new(0);

/// Offsets in a virtio-mmio register block.
const VIRTIO_MMIO_INTERRUPT_STATUS: usize = 0x60;
const VIRTIO_MMIO_INTERRUPT_ACK: usize = 0x64;

unsafe extern "C" {
    /// The 32 exception entry stubs, in vector order (defined below).
    static exception_stubs: [u64; EXCEPTIONS];
    fn console_interrupt_entry();
    fn timer_interrupt_entry();
    fn spurious_interrupt_entry();
}

global_asm!(
    // Exceptions without an error code push a zero in its place, then the
    // vector; all land in `exception_common` with the same frame layout.
    ".pushsection .text.exceptions, \"ax\"",
    ".irp n, 0,1,2,3,4,5,6,7,9,15,16,18,19,20,22,23,24,25,26,27,28,31",
    "exception_\\n:",
    "push 0",
    "push \\n",
    "jmp exception_common",
    ".endr",
    ".irp n, 8,10,11,12,13,14,17,21,29,30",
    "exception_\\n:",
    "push \\n",
    "jmp exception_common",
    ".endr",
    "exception_common:",
    "mov rdi, rsp",
    "and rsp, -16",
    "call {fatal}",
    "ud2",
    // Device interrupts: save the caller-saved registers, call the Rust
    // handler, restore. The CPU aligned the stack to 16 and pushed 5
    // quadwords; 9 more keep the call aligned.
    ".macro interrupt_entry name, handler",
    ".global \\name",
    "\\name:",
    "push rax",
    "push rcx",
    "push rdx",
    "push rsi",
    "push rdi",
    "push r8",
    "push r9",
    "push r10",
    "push r11",
    "call \\handler",
    "pop r11",
    "pop r10",
    "pop r9",
    "pop r8",
    "pop rdi",
    "pop rsi",
    "pop rdx",
    "pop rcx",
    "pop rax",
    "iretq",
    ".endm",
    "interrupt_entry console_interrupt_entry, {console}",
    "interrupt_entry timer_interrupt_entry, {timer}",
    ".global spurious_interrupt_entry",
    "spurious_interrupt_entry:",
    "iretq",
    ".popsection",
    ".pushsection .rodata.exception_stubs, \"a\"",
    ".balign 8",
    ".global exception_stubs",
    "exception_stubs:",
    ".irp n, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31",
    ".quad exception_\\n",
    ".endr",
    ".popsection",
    fatal = sym exception,
    console = sym console_interrupt,
    timer = sym timer_interrupt,
);

/// What the exception stubs leave on the fault stack.
#[repr(C)]
struct ExceptionFrame {
    vector: u64,
    error_code: u64,
    rip: u64,
    cs: u64,
    rflags: u64,
    rsp: u64,
    ss: u64,
}

/// The page-fault vector, whose faulting address is in CR2.
const PAGE_FAULT: u64 = 14;

/// Every CPU exception: log what and where, then exit QEMU non-zero.
extern "C" fn exception(frame: &ExceptionFrame) -> ! {
    let mut fault_address: u64 = 0;
    if frame.vector == PAGE_FAULT {
        // SAFETY: reading CR2 has no side effects.
        unsafe { asm!("mov {}, cr2", out(reg) fault_address, options(nomem, nostack, preserves_flags)) };
    }
    if crate::boot::stack_guard_page().contains(&fault_address) {
        crate::log::fatal_stack_overflow(frame.rip, frame.rsp);
    } else {
        crate::log::fatal_exception(frame.vector, frame.error_code, frame.rip, frame.rsp, fault_address);
    }
    crate::platform::exit_failure(crate::platform::ExitCode::Exception)
}

/// The virtio-console interrupt: acknowledge the device's interrupt status
/// (which lowers the level-triggered line), then EOI.
extern "C" fn console_interrupt() {
    let base = CONSOLE_MMIO.load(Ordering::Relaxed);
    if base != 0 {
        // SAFETY: `base` is the console's virtio-mmio block (set by
        // `set_console_mmio`), identity-mapped and uncached; reading the
        // status and writing it back to the ack register is the virtio-mmio
        // acknowledgement, which the driver's own code never does.
        unsafe {
            let status = core::ptr::read_volatile((base + VIRTIO_MMIO_INTERRUPT_STATUS) as *const u32);
            core::ptr::write_volatile((base + VIRTIO_MMIO_INTERRUPT_ACK) as *mut u32, status);
        }
    }
    apic::end_of_interrupt();
}

/// The LAPIC timer interrupt: it only ends a `hlt`.
extern "C" fn timer_interrupt() {
    apic::end_of_interrupt();
}

/// Records the virtio-mmio block the console interrupt acknowledges.
pub fn set_console_mmio(base: usize) {
    CONSOLE_MMIO.store(base, Ordering::Relaxed);
}

/// An interrupt gate to `handler` on the current stack (`ist` 0) or an
/// interrupt stack.
fn gate(handler: u64, ist: u8) -> Gate {
    let low = (handler & 0xffff)
        | (u64::from(CODE_SELECTOR) << 16)
        | (u64::from(ist) << 32)
        | (INTERRUPT_GATE << 40)
        | ((handler >> 16) & 0xffff) << 48;
    [low, handler >> 32]
}

/// The 16-byte TSS descriptor for `base`.
fn tss_descriptor(base: u64) -> [u64; 2] {
    let limit = (size_of::<TaskStateSegment>() - 1) as u64;
    let available_tss_present = 0x89;
    let low = (limit & 0xffff)
        | ((base & 0xff_ffff) << 16)
        | (available_tss_present << 40)
        | ((limit >> 16) & 0xf) << 48
        | ((base >> 24) & 0xff) << 56;
    [low, base >> 32]
}

/// The operand of `lgdt`/`lidt`.
#[repr(C, packed)]
struct DescriptorPointer {
    limit: u16,
    base: u64,
}

/// Installs the TSS and the IDT. Called once at boot, interrupts off.
pub fn init() {
    let tss = TSS.get();
    let gdt = GDT.get();
    let idt = IDT.get();
    // SAFETY: single CPU, interrupts off, called once: nothing else reads
    // or writes these tables yet (the CPU only reads the GDT's code and
    // data entries, which stay unchanged). The fault stack is used by
    // nothing but the CPU. The selectors and tables are valid for
    // `lgdt`/`ltr`/`lidt`, and they are statics, so they outlive their use.
    unsafe {
        let fault_stack_top = FAULT_STACK.get() as u64 + FAULT_STACK_SIZE as u64;
        (*tss).interrupt_stacks[usize::from(FAULT_IST) - 1] = fault_stack_top;
        let [low, high] = tss_descriptor(tss as u64);
        (*gdt)[3] = low;
        (*gdt)[4] = high;
        let gdt_pointer = DescriptorPointer { limit: (GDT_SIZE - 1) as u16, base: gdt as u64 };
        asm!("lgdt [{}]", in(reg) &gdt_pointer, options(readonly, nostack, preserves_flags));
        asm!("ltr {0:x}", in(reg) TSS_SELECTOR, options(nomem, nostack, preserves_flags));

        for (vector, stub) in exception_stubs.iter().enumerate() {
            (*idt)[vector] = gate(*stub, FAULT_IST);
        }
        (*idt)[usize::from(CONSOLE_VECTOR)] = gate(console_interrupt_entry as *const () as u64, 0);
        (*idt)[usize::from(TIMER_VECTOR)] = gate(timer_interrupt_entry as *const () as u64, 0);
        (*idt)[usize::from(SPURIOUS_VECTOR)] = gate(spurious_interrupt_entry as *const () as u64, 0);
        let idt_pointer = DescriptorPointer { limit: (size_of::<[Gate; VECTORS]>() - 1) as u16, base: idt as u64 };
        asm!("lidt [{}]", in(reg) &idt_pointer, options(readonly, nostack, preserves_flags));
    }
}
