//! The relay's id layout (the reference's): one guest stream is shared by
//! up to [`RELAY_SLOTS`] clients, and slot `i` owns the correlation ids
//! `[i * SLOT_STEP + 1, (i + 1) * SLOT_STEP)`.
//!
//! Ids that are a multiple of [`SLOT_STEP`] (0 among them) belong to no
//! client: a relay never forwards a client frame on them (but `core.shutdown`
//! on id 0), so the guest can trust frames on them to come from the host
//! itself. Id 0 carries the host's own control messages; the other slot
//! bases are free for the host's own requests (e.g. a relay's barrier pings).

/// Client slots of a relay.
pub const RELAY_SLOTS: usize = 128;

/// Ids per slot: `u32::MAX / 128`.
pub const SLOT_STEP: u32 = u32::MAX / RELAY_SLOTS as u32;

/// The ids slot `slot` may use: `[start, end)`.
///
/// # Panics
/// If `slot >= RELAY_SLOTS` (a caller's bug: slots come from a table of that size).
pub const fn slot_range(slot: usize) -> (u32, u32) {
    assert!(slot < RELAY_SLOTS, "relay slot out of range");
    let base = slot as u32 * SLOT_STEP;
    (base + 1, base + SLOT_STEP)
}

/// The block of ids a slot's disconnect notice covers: its client ids
/// ([`slot_range`]) and the host id just below them.
pub const fn slot_block(slot: usize) -> (u32, u32) {
    assert!(slot < RELAY_SLOTS, "relay slot out of range");
    let base = slot as u32 * SLOT_STEP;
    (base, base + SLOT_STEP)
}

/// The slot whose range holds `id`; `None` for ids no client owns (the
/// multiples of [`SLOT_STEP`], 0 among them, and the ids past the last slot).
pub const fn slot_of(id: u32) -> Option<usize> {
    let slot = (id / SLOT_STEP) as usize;
    if slot < RELAY_SLOTS && !id.is_multiple_of(SLOT_STEP) { Some(slot) } else { None }
}

/// Whether `id` belongs to the host itself: no relay client may send on it.
pub const fn is_host_id(id: u32) -> bool {
    slot_of(id).is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_own_disjoint_ranges_and_bases_belong_to_the_host() {
        assert_eq!(SLOT_STEP, 33_554_431);
        assert_eq!(slot_range(0), (1, 33_554_431));
        assert_eq!(slot_range(127), (127 * 33_554_431 + 1, 128 * 33_554_431));
        assert_eq!(slot_of(0), None);
        assert_eq!(slot_of(1), Some(0));
        assert_eq!(slot_of(33_554_430), Some(0));
        assert_eq!(slot_of(33_554_431), None, "a slot base belongs to nobody");
        assert_eq!(slot_of(33_554_432), Some(1));
        assert_eq!(slot_of(128 * SLOT_STEP), None);
        assert_eq!(slot_of(u32::MAX), None);
        assert!(is_host_id(0) && is_host_id(5 * SLOT_STEP) && !is_host_id(7));
        for slot in 0..RELAY_SLOTS {
            let (start, end) = slot_range(slot);
            assert_eq!((slot_of(start), slot_of(end - 1), slot_of(end)), (Some(slot), Some(slot), None));
        }
    }
}
