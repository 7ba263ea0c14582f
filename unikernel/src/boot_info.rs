//! What the PVH loader tells the guest (`hvm_start_info`): the memory map
//! and the kernel command line, copied into bounded static storage at boot
//! so that nothing later depends on where the loader put them.

use core::ptr::read_unaligned;

/// `hvm_start_info.magic`.
const START_INFO_MAGIC: u32 = 0x336e_c578;
/// Field offsets in `hvm_start_info`.
const OFFSET_VERSION: usize = 4;
const OFFSET_CMDLINE: usize = 24;
const OFFSET_RSDP: usize = 32;
const OFFSET_MEMMAP: usize = 40;
const OFFSET_MEMMAP_ENTRIES: usize = 48;
/// The first version with a memory map.
const VERSION_WITH_MEMMAP: u32 = 1;
/// Bytes per `hvm_memmap_table_entry` (addr, size, type, reserved).
const MEMMAP_ENTRY_SIZE: usize = 24;
/// Memory-map type of usable RAM.
const MEMMAP_TYPE_RAM: u32 = 1;

/// Memory-map entries kept: QEMU's maps have a handful; more are dropped
/// (and reported), costing only the regions beyond the bound.
pub const MEMMAP_MAX: usize = 32;
/// Command-line bytes kept: options are short words; a longer line is cut
/// (and reported).
pub const CMDLINE_MAX: usize = 512;
/// Where an RSDP may sit when the loader does not report one.
const BIOS_AREA_START: usize = 0xe_0000;
const BIOS_AREA_END: usize = 0x10_0000;
const RSDP_ALIGN: usize = 16;
const RSDP_SIGNATURE: &[u8; 8] = b"RSD PTR ";
/// Everything the guest reads must lie in the identity map.
const IDENTITY_MAPPED_END: u64 = 1 << 32;

/// One usable RAM region from the memory map.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RamRegion {
    /// First byte.
    pub start: u64,
    /// One past the last byte.
    pub end: u64,
}

/// The boot information, copied.
pub struct BootInfo {
    ram: [RamRegion; MEMMAP_MAX],
    ram_count: usize,
    /// Memory-map entries that did not fit or were not RAM-typed.
    pub entries_skipped: usize,
    cmdline: [u8; CMDLINE_MAX],
    cmdline_len: usize,
    /// Whether the command line was longer than [`CMDLINE_MAX`].
    pub cmdline_truncated: bool,
    /// The ACPI RSDP's address as the loader reports it (0: not reported).
    rsdp_address: u64,
}

/// Why the boot information could not be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, defmt::Format)]
pub enum BootInfoError {
    /// `%ebx` did not point at an `hvm_start_info` (bad magic).
    BadMagic,
    /// The structure is version 0: no memory map.
    NoMemoryMap,
}

impl BootInfo {
    /// Reads `hvm_start_info` at `address`.
    ///
    /// # Safety
    ///
    /// `address` must be the value the PVH loader passed in `%ebx`, and the
    /// memory it describes must not have been overwritten yet.
    pub unsafe fn read(address: u32) -> Result<BootInfo, BootInfoError> {
        let base = address as usize as *const u8;
        // SAFETY: the caller guarantees `base` is the loader's start info,
        // identity-mapped (it is below 4 GiB), at least 56 bytes long for
        // version 1. Reads are unaligned-safe.
        let (magic, version, cmdline_address, rsdp_address, memmap_address, memmap_entries) = unsafe {
            (
                read_unaligned(base.cast::<u32>()),
                read_unaligned(base.add(OFFSET_VERSION).cast::<u32>()),
                read_unaligned(base.add(OFFSET_CMDLINE).cast::<u64>()),
                read_unaligned(base.add(OFFSET_RSDP).cast::<u64>()),
                read_unaligned(base.add(OFFSET_MEMMAP).cast::<u64>()),
                read_unaligned(base.add(OFFSET_MEMMAP_ENTRIES).cast::<u32>()),
            )
        };
        if magic != START_INFO_MAGIC {
            return Err(BootInfoError::BadMagic);
        }
        if version < VERSION_WITH_MEMMAP {
            return Err(BootInfoError::NoMemoryMap);
        }
        let mut info = BootInfo {
            ram: [RamRegion::default(); MEMMAP_MAX],
            ram_count: 0,
            entries_skipped: 0,
            cmdline: [0; CMDLINE_MAX],
            cmdline_len: 0,
            cmdline_truncated: false,
            rsdp_address,
        };
        // SAFETY: the loader's memory map and command line, as the caller
        // guarantees; `copy_*` check they lie in the identity map.
        unsafe {
            info.copy_memmap(memmap_address, memmap_entries as usize);
            info.copy_cmdline(cmdline_address);
        }
        Ok(info)
    }

    /// # Safety
    ///
    /// `address` must point at `entries` memory-map entries (if in range).
    unsafe fn copy_memmap(&mut self, address: u64, entries: usize) {
        let bytes = entries.saturating_mul(MEMMAP_ENTRY_SIZE) as u64;
        if address.saturating_add(bytes) > IDENTITY_MAPPED_END {
            self.entries_skipped = entries;
            return;
        }
        for i in 0..entries {
            let entry = (address as usize + i * MEMMAP_ENTRY_SIZE) as *const u8;
            // SAFETY: within the table the caller vouches for, identity-mapped.
            let (start, size, kind) = unsafe {
                (
                    read_unaligned(entry.cast::<u64>()),
                    read_unaligned(entry.add(8).cast::<u64>()),
                    read_unaligned(entry.add(16).cast::<u32>()),
                )
            };
            if kind != MEMMAP_TYPE_RAM || size == 0 || self.ram_count == MEMMAP_MAX {
                self.entries_skipped += 1;
                continue;
            }
            self.ram[self.ram_count] = RamRegion { start, end: start.saturating_add(size) };
            self.ram_count += 1;
        }
    }

    /// # Safety
    ///
    /// `address` must be 0 or point at a NUL-terminated string.
    unsafe fn copy_cmdline(&mut self, address: u64) {
        if address == 0 || address >= IDENTITY_MAPPED_END {
            return;
        }
        let source = address as usize as *const u8;
        for i in 0..=CMDLINE_MAX {
            if address + i as u64 >= IDENTITY_MAPPED_END {
                break;
            }
            // SAFETY: bytes up to and including the NUL are the string.
            let byte = unsafe { source.add(i).read() };
            if byte == 0 {
                return;
            }
            if i == CMDLINE_MAX {
                self.cmdline_truncated = true;
                return;
            }
            self.cmdline[i] = byte;
            self.cmdline_len = i + 1;
        }
    }

    /// The usable RAM regions.
    pub fn ram(&self) -> &[RamRegion] {
        &self.ram[..self.ram_count]
    }

    /// Whether the machine has ACPI tables: the loader reported an RSDP, or
    /// one sits in the BIOS area (0xe0000-0xfffff, on a 16-byte boundary),
    /// where microvm's firmware places it.
    pub fn acpi_present(&self) -> bool {
        if self.rsdp_address != 0 {
            return true;
        }
        (BIOS_AREA_START..BIOS_AREA_END).step_by(RSDP_ALIGN).any(|address| {
            // SAFETY: the BIOS area is identity-mapped RAM/ROM; reading it
            // has no side effects.
            unsafe { read_unaligned(address as *const [u8; 8]) == *RSDP_SIGNATURE }
        })
    }

    /// The kernel command line (bytes; options are ASCII words).
    pub fn cmdline(&self) -> &[u8] {
        &self.cmdline[..self.cmdline_len]
    }
}
