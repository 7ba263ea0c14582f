//! Space accounting for the checks: an upper bound on the ramfs blocks and
//! entries in use, so "no space left" can be judged plausible or not, and
//! the workload never runs the entry table out (whose partial `Mkdir -p`
//! effects the model could not predict).
//!
//! The bound is the model's contents plus a reservation for every call
//! that may hold space in the agent: a write its staged content and path
//! block, a read its snapshot, a call that creates entries those entries.
//! A reservation is released only once the agent has surely let go.

use std::collections::BTreeMap;

/// Space one call may hold in the agent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reservation {
    /// Data blocks.
    pub blocks: u64,
    /// Entries.
    pub entries: u64,
}

impl Reservation {
    /// The sum of two reservations.
    pub fn plus(self, other: Reservation) -> Reservation {
        Reservation { blocks: self.blocks + other.blocks, entries: self.entries + other.entries }
    }
}

/// The bound and what it is measured against.
#[derive(Debug, Default)]
pub struct Space {
    /// Data blocks of the ramfs.
    pub blocks_total: u64,
    /// Entries of the ramfs.
    pub entries_total: u64,
    reserved: Reservation,
    /// Writes in flight, by token: the highest block bound seen since each
    /// began (a write may fail for lack of space only if it exceeded the total).
    watched: BTreeMap<u64, u64>,
    next_token: u64,
}

impl Space {
    /// Accounting for a ramfs of this size.
    pub fn new(blocks_total: u64, entries_total: u64) -> Space {
        Space { blocks_total, entries_total, ..Space::default() }
    }

    /// Adds a reservation; `model_blocks` is the model's content blocks now.
    pub fn reserve(&mut self, r: Reservation, model_blocks: u64) {
        self.reserved = self.reserved.plus(r);
        self.observe(model_blocks);
    }

    /// Releases a reservation.
    pub fn release(&mut self, r: Reservation) {
        assert!(
            r.blocks <= self.reserved.blocks && r.entries <= self.reserved.entries,
            "released more space than was reserved"
        );
        self.reserved.blocks -= r.blocks;
        self.reserved.entries -= r.entries;
    }

    /// The bound on blocks in use, given the model's content blocks.
    pub fn blocks_bound(&self, model_blocks: u64) -> u64 {
        model_blocks + self.reserved.blocks
    }

    /// Whether `extra` more entries could still be created without
    /// reaching the end of the entry table (none always can).
    pub fn entries_fit(&self, model_entries: u64, extra: u64) -> bool {
        extra == 0 || model_entries + self.reserved.entries + extra <= self.entries_total
    }

    /// Records the current bound in every watched write.
    pub fn observe(&mut self, model_blocks: u64) {
        let bound = self.blocks_bound(model_blocks);
        for peak in self.watched.values_mut() {
            *peak = (*peak).max(bound);
        }
    }

    /// Starts watching a write; returns its token.
    pub fn watch(&mut self, model_blocks: u64) -> u64 {
        self.next_token += 1;
        self.watched.insert(self.next_token, self.blocks_bound(model_blocks));
        self.next_token
    }

    /// Stops watching a write; whether it could have run out of space.
    pub fn unwatch(&mut self, token: u64) -> bool {
        let peak = self.watched.remove(&token).expect("a watched write");
        peak > self.blocks_total
    }
}
