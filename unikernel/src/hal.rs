//! virtio-drivers' [`Hal`] for an identity-mapped guest with no allocator:
//! physical addresses equal virtual ones, buffers are shared in place, and
//! virtqueue rings come from a static pool of pages that is never freed.

use core::ptr::NonNull;
use core::sync::atomic::{AtomicUsize, Ordering};

use virtio_drivers::{BufferDirection, Hal, PAGE_SIZE, PhysAddr};

use crate::static_cell::StaticCell;

/// Pages for virtqueue rings: the console's four split queues (control in
/// and out, agent port in and out) of at most 128 entries need two pages
/// each (descriptor table and available ring in one, used ring in the
/// other); the rest is headroom.
const DMA_POOL_PAGES: usize = 12;

#[repr(C, align(4096))]
struct DmaPool([[u8; PAGE_SIZE]; DMA_POOL_PAGES]);

/// Handed out page by page by [`IdentityHal::dma_alloc`], never reused.
static DMA_POOL: StaticCell<DmaPool> = StaticCell::new(DmaPool([[0; PAGE_SIZE]; DMA_POOL_PAGES]));
/// Pages of [`DMA_POOL`] handed out so far.
static DMA_PAGES_USED: AtomicUsize = AtomicUsize::new(0);

/// The identity-mapped, allocation-free [`Hal`].
pub struct IdentityHal;

// SAFETY: `dma_alloc` returns zeroed, page-aligned, never-aliased pages
// from a static pool (each page is handed out at most once); addresses are
// identity-mapped, so the pointer is the device address; `share` returns
// the buffer's own address, valid for the device as the memory is RAM.
unsafe impl Hal for IdentityHal {
    fn dma_alloc(pages: usize, _direction: BufferDirection) -> (PhysAddr, NonNull<u8>) {
        let claimed = DMA_PAGES_USED.fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
            used.checked_add(pages).filter(|&end| end <= DMA_POOL_PAGES)
        });
        let Ok(first) = claimed else {
            // Address 0 tells virtio-drivers the allocation failed.
            return (0, NonNull::dangling());
        };
        // SAFETY: pages `first..first + pages` are in bounds and were never
        // handed out before, so nothing else references them.
        unsafe {
            let start = DMA_POOL.get().cast::<u8>().add(first * PAGE_SIZE);
            start.write_bytes(0, pages * PAGE_SIZE);
            (start as PhysAddr, NonNull::new_unchecked(start))
        }
    }

    unsafe fn dma_dealloc(_paddr: PhysAddr, _vaddr: NonNull<u8>, _pages: usize) -> i32 {
        // Rings live as long as the guest; their pages are simply not reused.
        0
    }

    unsafe fn mmio_phys_to_virt(paddr: PhysAddr, _size: usize) -> NonNull<u8> {
        NonNull::new(paddr as usize as *mut u8).unwrap_or(NonNull::dangling())
    }

    unsafe fn share(buffer: NonNull<[u8]>, _direction: BufferDirection) -> PhysAddr {
        buffer.cast::<u8>().as_ptr() as PhysAddr
    }

    unsafe fn unshare(_paddr: PhysAddr, _buffer: NonNull<[u8]>, _direction: BufferDirection) {}
}
