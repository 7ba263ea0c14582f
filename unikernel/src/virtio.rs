//! virtio-mmio discovery on QEMU microvm: the transports sit in 512-byte
//! slots from 0xfeb00000; QEMU passes no hints, so the guest scans them for
//! the virtio magic. Each slot's interrupt line is fixed by its index.

use core::ptr::{NonNull, read_volatile};

use virtio_drivers::transport::mmio::{MmioTransport, VirtIOHeader};
use virtio_drivers::transport::{DeviceType, Transport};

use crate::apic::{IOAPICS, Ioapic};

/// The first virtio-mmio slot.
const VIRTIO_MMIO_BASE: usize = 0xfeb0_0000;
/// The distance between slots (and the size of each register block).
const VIRTIO_MMIO_SLOT_SIZE: usize = 0x200;
/// Slots with the second IOAPIC (microvm's default): one per pin of it.
const SLOTS_WITH_IOAPIC2: usize = 24;
/// Slots without it.
const SLOTS_WITHOUT_IOAPIC2: usize = 8;
/// `"virt"`, little-endian: the first register of every transport.
const VIRTIO_MAGIC: u32 = 0x7472_6976;
/// Register offset of the device id (0: empty slot).
const DEVICE_ID_OFFSET: usize = 0x08;
/// The virtio device id of a console.
const VIRTIO_ID_CONSOLE: u32 = 3;

/// microvm's first virtio GSI: 24 (the second IOAPIC's first pin) when
/// that IOAPIC exists; otherwise 16 with ACPI, 5 without.
const GSI_BASE_IOAPIC2: u32 = 24;
const GSI_BASE_ACPI: u32 = 16;
const GSI_BASE_LEGACY: u32 = 5;

/// A discovered virtio-console.
pub struct ConsoleSlot {
    /// Its transport, ready for driver initialisation.
    pub transport: MmioTransport<'static>,
    /// The slot index.
    pub slot: usize,
    /// The register block's address.
    pub base: usize,
    /// Its interrupt line.
    pub gsi: u32,
    /// The IOAPIC serving that line.
    pub ioapic: Ioapic,
}

/// Scans the slots for the first virtio-console. `acpi` says whether the
/// machine has ACPI tables (it moves the interrupt lines when there is no
/// second IOAPIC).
pub fn find_console(acpi: bool) -> Option<ConsoleSlot> {
    let (slots, gsi_base) = if IOAPICS[1].pins().is_some() {
        (SLOTS_WITH_IOAPIC2, GSI_BASE_IOAPIC2)
    } else if acpi {
        (SLOTS_WITHOUT_IOAPIC2, GSI_BASE_ACPI)
    } else {
        (SLOTS_WITHOUT_IOAPIC2, GSI_BASE_LEGACY)
    };
    for slot in 0..slots {
        let base = VIRTIO_MMIO_BASE + slot * VIRTIO_MMIO_SLOT_SIZE;
        // SAFETY: the slot's registers are identity-mapped, uncached MMIO;
        // reading the magic and device id has no side effects.
        let (magic, device_id) =
            unsafe { (read_volatile(base as *const u32), read_volatile((base + DEVICE_ID_OFFSET) as *const u32)) };
        if magic != VIRTIO_MAGIC || device_id != VIRTIO_ID_CONSOLE {
            continue;
        }
        let header = NonNull::new(base as *mut VirtIOHeader)?;
        // SAFETY: a virtio-mmio register block of `VIRTIO_MMIO_SLOT_SIZE`
        // bytes lives at `base` for the guest's lifetime, and no other
        // transport is ever created for it (the scan stops here).
        let transport = match unsafe { MmioTransport::new(header, VIRTIO_MMIO_SLOT_SIZE) } {
            Ok(t) if t.device_type() == DeviceType::Console => t,
            _ => continue,
        };
        let gsi = gsi_base + slot as u32;
        let ioapic = *IOAPICS.iter().find(|io| io.gsis().is_some_and(|gsis| gsis.contains(&gsi)))?;
        return Some(ConsoleSlot { transport, slot, base, gsi, ioapic });
    }
    None
}
