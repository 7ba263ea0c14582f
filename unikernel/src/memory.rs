//! The free-RAM arena: the largest usable region of the memory map, minus
//! everything the guest image owns (code, data, page tables, stacks, DMA
//! rings and buffers: all of it lies between `__image_start` and
//! `__image_end`), handed out once as a `&'static mut [u8]`.

use core::ops::Range;
use core::sync::atomic::{AtomicBool, Ordering};

use unikernel::boot::PAGE_SIZE;
use unikernel::boot_info::RamRegion;

/// Below 1 MiB lie the legacy areas, the loader's own data and the boot
/// information; the arena never starts there (nor at address 0).
const LOW_MEMORY_END: u64 = 0x10_0000;
/// The arena stays in write-back RAM: from 3 GiB up the identity map is
/// the uncached MMIO window, and above 4 GiB nothing is mapped.
const ARENA_LIMIT: u64 = 0xc000_0000;

unsafe extern "C" {
    /// First byte of the image (linker script).
    static __image_start: u8;
    /// One past the image's last byte, page-aligned (linker script).
    static __image_end: u8;
}

/// Whether the arena was handed out.
static ARENA_TAKEN: AtomicBool = AtomicBool::new(false);

/// The physical range the guest image occupies (identity-mapped).
pub fn image_range() -> Range<u64> {
    (&raw const __image_start) as u64..(&raw const __image_end) as u64
}

/// The largest page-aligned part of `ram` outside `reserved`, below
/// [`ARENA_LIMIT`] and above [`LOW_MEMORY_END`].
pub fn largest_free(ram: &[RamRegion], reserved: &Range<u64>) -> Option<Range<u64>> {
    let page = PAGE_SIZE as u64;
    let mut best: Option<Range<u64>> = None;
    for region in ram {
        let start = region.start.max(LOW_MEMORY_END);
        let end = region.end.min(ARENA_LIMIT);
        let below = start..end.min(reserved.start);
        let above = start.max(reserved.end)..end;
        for candidate in [below, above] {
            let aligned = candidate.start.next_multiple_of(page)..candidate.end / page * page;
            let size = aligned.end.saturating_sub(aligned.start);
            if size > 0 && best.as_ref().is_none_or(|b| size > b.end - b.start) {
                best = Some(aligned);
            }
        }
    }
    best
}

/// Hands out the arena: the largest free RAM region as a byte slice. Its
/// contents are unspecified (not necessarily zero). Returns `None` on the
/// second call, or if the memory map has no free RAM.
pub fn take_arena(ram: &[RamRegion]) -> Option<&'static mut [u8]> {
    let range = largest_free(ram, &image_range())?;
    if ARENA_TAKEN.swap(true, Ordering::AcqRel) {
        return None;
    }
    // SAFETY: the range is usable RAM per the memory map, identity-mapped
    // write-back, disjoint from the image (and so from every static, stack,
    // page table and DMA buffer), above 1 MiB (not null, not the loader's
    // data), and handed out only once, so nothing else aliases it.
    Some(unsafe {
        core::slice::from_raw_parts_mut(range.start as usize as *mut u8, (range.end - range.start) as usize)
    })
}
