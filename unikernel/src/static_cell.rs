//! Storage for the guest's statically allocated, mutable state (page
//! tables, descriptor tables, stacks, DMA memory), reached through raw
//! pointers.
//!
//! The guest has one CPU and takes interrupts only inside
//! [`wait_for_interrupt`](crate::cpu::wait_for_interrupt), whose handlers
//! touch only MMIO and atomics; each user of a cell documents who may
//! access it and when.

use core::cell::UnsafeCell;

/// A `static` whose contents the guest mutates through raw pointers.
#[repr(transparent)]
pub struct StaticCell<T>(UnsafeCell<T>);

// SAFETY: the guest is single-threaded (one vCPU) and interrupt handlers do
// not touch cells; every access site states why it does not alias another.
unsafe impl<T> Sync for StaticCell<T> {}

impl<T> StaticCell<T> {
    /// A cell holding `value`.
    pub const fn new(value: T) -> Self {
        Self(UnsafeCell::new(value))
    }

    /// A raw pointer to the contents.
    pub const fn get(&self) -> *mut T {
        self.0.get()
    }
}
