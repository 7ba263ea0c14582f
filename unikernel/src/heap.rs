//! The heap of the bench-only `stock-echo` build (virtio-drivers'
//! `VirtIOConsole` boxes its receive buffer): a bump allocator over a
//! static buffer, installed as the global allocator. Compiled only with
//! that feature; the guest itself has no heap.

use core::alloc::{GlobalAlloc, Layout};
use core::sync::atomic::{AtomicUsize, Ordering};

use crate::static_cell::StaticCell;

/// The heap's size: the stock driver allocates its 4 KiB receive buffer
/// here (once, at setup); the rest is headroom.
const HEAP_BYTES: usize = 16 * 1024;

/// The heap's memory, page-aligned (the receive buffer is shared with the
/// device in place).
#[repr(C, align(4096))]
struct HeapMemory([u8; HEAP_BYTES]);

/// Handed out by [`BumpAllocator`] only, each byte at most once.
static HEAP_MEMORY: StaticCell<HeapMemory> = StaticCell::new(HeapMemory([0; HEAP_BYTES]));

/// A bump allocator over [`HEAP_MEMORY`]: allocations are never reused (the
/// driver allocates once and keeps it), and it fails with a null pointer
/// once the heap is used up.
struct BumpAllocator {
    /// Bytes of [`HEAP_MEMORY`] handed out so far (with alignment gaps).
    used: AtomicUsize,
}

impl BumpAllocator {
    /// The offset at which an allocation of `layout` would start after
    /// `used` bytes, and the offset it would end at, if it fits.
    fn place(used: usize, layout: Layout) -> Option<(usize, usize)> {
        let base = HEAP_MEMORY.get() as usize;
        let start = base.checked_add(used)?.checked_next_multiple_of(layout.align())? - base;
        let end = start.checked_add(layout.size())?;
        (end <= HEAP_BYTES).then_some((start, end))
    }
}

// SAFETY: every allocation is a distinct, in-bounds range of the static
// heap aligned as `layout` asks (or null when it does not fit); ranges are
// claimed atomically and never handed out again, so no two allocations
// overlap; `dealloc` does nothing, which is sound (the memory just stays
// unused).
unsafe impl GlobalAlloc for BumpAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let claimed = self
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| Self::place(used, layout).map(|(_, end)| end));
        match claimed.ok().and_then(|used| Self::place(used, layout)) {
            // SAFETY: `start + size <= HEAP_BYTES`, inside the heap.
            Some((start, _)) => unsafe { HEAP_MEMORY.get().cast::<u8>().add(start) },
            None => core::ptr::null_mut(),
        }
    }

    unsafe fn dealloc(&self, _ptr: *mut u8, _layout: Layout) {}
}

#[global_allocator]
static ALLOCATOR: BumpAllocator = BumpAllocator { used: AtomicUsize::new(0) };
