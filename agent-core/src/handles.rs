//! Open files and directories of the current filesystem dialect
//! (`OpenFile`, `OpenDir`), each owned by the relay client that opened it.
//!
//! # Ownership
//!
//! A relay gives client slot `i` the ids `[i * SLOT_STEP + 1, (i + 1) *
//! SLOT_STEP)` ([`wire::relay`]); the owner of a request is the slot of its
//! id, and the ids no client owns (the multiples of `SLOT_STEP`) belong to
//! the host itself, one more owner. Every handle records its owner and the owner's
//! *incarnation*, a counter bumped by every `core.relay.client.disconnected`
//! that covers the slot. A handle number used by any other owner, or by a
//! later client of the same slot, is `EBADF`: it never reaches the file,
//! whatever number it guesses (numbers are not secret; they carry the table
//! index and a global serial, so a closed number is never reissued).
//!
//! # Bounds
//!
//! [`MAX_HANDLES_PER_CLIENT`] per owner (one more is `EMFILE`, as a Linux
//! process at its descriptor limit), [`MAX_HANDLES`] in all and
//! [`MAX_OPEN_DIRS`] directories in all (one more is `ENFILE`). An open
//! directory keeps the path it was opened with (`ReadDir` answers full
//! paths, as `std::fs::read_dir` entries have them), which is why
//! directories have their own, smaller bound.
//!
//! Neither pool can be emptied by a few clients: the last
//! [`HANDLE_RESERVE_SHARE`]th of the table and the last
//! [`DIR_RESERVE_SHARE`]th of the long-path places go only to owners that
//! hold few ([`RESERVE_HOLDER_HANDLES`] handles, [`RESERVE_HOLDER_DIRS`]
//! places); others are refused there with `ENFILE`, as if the table were
//! full, and a long-path file gets no place (its `FStat` answers an empty
//! path).

use crate::fs::Filesystem;
use crate::path::PathBuf;

pub use wire::relay::SLOT_STEP;

/// Owners an id can map to: every relay slot, and the host.
pub const OWNERS: usize = wire::relay::RELAY_SLOTS + 1;

/// The owner of the ids no relay client owns.
const HOST_OWNER: usize = wire::relay::RELAY_SLOTS;

/// Handles one relay client may hold open at once (as the reference).
pub const MAX_HANDLES_PER_CLIENT: usize = 1024;

/// The largest handle table: handles open at once across all clients.
pub const MAX_HANDLES: usize = 4096;

/// Long paths kept at once across all clients: a directory's path is
/// needed (`ReadDir` answers full paths), so a directory whose path does
/// not fit [`INLINE_PATH`] takes one of these or is refused (`ENFILE`); a
/// file's is only reported (`FStat`), so a file takes one if one is free.
pub const MAX_OPEN_DIRS: usize = 128;

/// The share of the table kept for owners holding fewer than
/// [`RESERVE_HOLDER_HANDLES`]: the last sixteenth (256 of 4096 slots).
pub const HANDLE_RESERVE_SHARE: usize = 16;

/// Owners holding this many handles or more get no slot of the reserve.
pub const RESERVE_HOLDER_HANDLES: usize = 64;

/// The share of the long-path places kept for owners holding fewer than
/// [`RESERVE_HOLDER_DIRS`] of them: the last eighth (16 of 128).
pub const DIR_RESERVE_SHARE: usize = 8;

/// Owners holding this many long-path places or more get none of the
/// reserve.
pub const RESERVE_HOLDER_DIRS: usize = 4;

/// Bytes of path every handle keeps in its own slot.
pub const INLINE_PATH: usize = 64;

/// Bits of a handle number that hold its table index.
const INDEX_BITS: u32 = 16;

const _: () = assert!(MAX_HANDLES <= 1 << INDEX_BITS);

/// An open file or directory.
pub enum Open<F: Filesystem> {
    /// From `OpenFile`.
    File(F::File),
    /// From `OpenDir`.
    Dir(F::Dir),
}

/// One place of a handle table.
pub struct HandleSlot<F: Filesystem>(Option<Entry<F>>);

impl<F: Filesystem> HandleSlot<F> {
    /// An unused place.
    pub const EMPTY: Self = HandleSlot(None);
}

/// The memory of a handle table, lent to the agent (see
/// [`Agent::with_handles`](crate::Agent::with_handles)): up to
/// [`MAX_HANDLES`] slots (more are not used) and up to [`MAX_OPEN_DIRS`]
/// directory paths (each an empty [`PathBuf`]).
pub struct HandleMemory<'b, F: Filesystem> {
    /// The slots.
    pub slots: &'b mut [HandleSlot<F>],
    /// Paths of open directories.
    pub dir_paths: &'b mut [PathBuf],
}

/// A handle table of the full size with its own memory (about 800 KiB for
/// a `Ramfs`: keep it on the heap or in static memory, not on a stack).
pub struct HandleTable<F: Filesystem> {
    slots: [HandleSlot<F>; MAX_HANDLES],
    dir_paths: [PathBuf; MAX_OPEN_DIRS],
}

impl<F: Filesystem> HandleTable<F> {
    /// An empty table.
    pub const EMPTY: Self = HandleTable {
        slots: [const { HandleSlot::EMPTY }; MAX_HANDLES],
        dir_paths: [const { PathBuf::new() }; MAX_OPEN_DIRS],
    };

    /// The table's memory, to lend to an agent.
    pub fn memory(&mut self) -> HandleMemory<'_, F> {
        HandleMemory { slots: &mut self.slots, dir_paths: &mut self.dir_paths }
    }
}

struct Entry<F: Filesystem> {
    number: u64,
    owner: u8,
    incarnation: u32,
    /// The path it was opened with, when it fits here.
    inline_path: heapless::String<INLINE_PATH>,
    /// Else the index of its path in `dir_paths`, if it has one.
    dir_path: Option<u8>,
    open: Open<F>,
}

/// Why a handle could not be added.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Full {
    /// The client holds [`MAX_HANDLES_PER_CLIENT`].
    Client,
    /// The table (or the directory paths) is full.
    Table,
}

/// The handle table.
pub(crate) struct Handles<'b, F: Filesystem> {
    slots: &'b mut [HandleSlot<F>],
    dir_paths: &'b mut [PathBuf],
    incarnation: [u32; OWNERS],
    held: [u16; OWNERS],
    /// Long-path places each owner holds.
    places_held: [u8; OWNERS],
    serial: u64,
    open: usize,
}

/// The owner of a request id.
pub(crate) fn owner_of(id: u32) -> usize {
    wire::relay::slot_of(id).unwrap_or(HOST_OWNER)
}

impl<'b, F: Filesystem> Handles<'b, F> {
    pub(crate) fn new(memory: Option<HandleMemory<'b, F>>) -> Self {
        let (slots, dir_paths): (&'b mut [HandleSlot<F>], &'b mut [PathBuf]) = match memory {
            Some(m) => {
                let (slots, paths) = (m.slots.len().min(MAX_HANDLES), m.dir_paths.len().min(MAX_OPEN_DIRS));
                for path in m.dir_paths.iter_mut() {
                    path.clear();
                }
                for slot in m.slots.iter_mut() {
                    slot.0 = None;
                }
                (&mut m.slots[..slots], &mut m.dir_paths[..paths])
            }
            None => (&mut [], &mut []),
        };
        Handles {
            slots,
            dir_paths,
            incarnation: [0; OWNERS],
            held: [0; OWNERS],
            places_held: [0; OWNERS],
            serial: 0,
            open: 0,
        }
    }

    /// Handles open in all.
    pub(crate) fn len(&self) -> usize {
        self.open
    }

    /// Handles the owner of `id` holds.
    pub(crate) fn held_by(&self, id: u32) -> usize {
        usize::from(self.held[owner_of(id)])
    }

    /// Whether the owner of `id` may open one more (a directory if `dir`)
    /// at `path`.
    pub(crate) fn check_room(&self, id: u32, dir: bool, path: &str) -> Result<(), Full> {
        let held = self.held_by(id);
        let free = self.slots.len() - self.open;
        let reserved = free <= self.slots.len() / HANDLE_RESERVE_SHARE && held >= RESERVE_HOLDER_HANDLES;
        if held >= MAX_HANDLES_PER_CLIENT {
            Err(Full::Client)
        } else if free == 0 || reserved || (dir && path.len() > INLINE_PATH && !self.may_take_place(owner_of(id))) {
            Err(Full::Table)
        } else {
            Ok(())
        }
    }

    /// Whether `owner` may take a long-path place: one is free, and it is
    /// not the reserve or the owner holds few.
    fn may_take_place(&self, owner: usize) -> bool {
        let free = self.dir_paths.iter().filter(|p| p.is_empty()).count();
        let reserved = free <= self.dir_paths.len() / DIR_RESERVE_SHARE
            && usize::from(self.places_held[owner]) >= RESERVE_HOLDER_DIRS;
        free > 0 && !reserved
    }

    /// Adds `open` for the owner of `id` (a directory with the path it was
    /// opened with); gives it back if there is no room.
    pub(crate) fn insert(&mut self, id: u32, open: Open<F>, path: &str) -> Result<u64, (Open<F>, Full)> {
        let dir = matches!(open, Open::Dir(_));
        if let Err(full) = self.check_room(id, dir, path) {
            return Err((open, full));
        }
        let Some(index) = self.slots.iter().position(|s| s.0.is_none()) else {
            return Err((open, Full::Table));
        };
        let owner = owner_of(id);
        let mut inline_path = heapless::String::new();
        let mut dir_path = None;
        if inline_path.push_str(path).is_err() {
            let place = self.dir_paths.iter().position(|p| p.is_empty()).filter(|_| self.may_take_place(owner));
            match place {
                Some(at) if self.dir_paths[at].push_str(path).is_ok() && !path.is_empty() => dir_path = Some(at as u8),
                Some(at) => self.dir_paths[at].clear(),
                None => {}
            }
            if dir && dir_path.is_none() {
                return Err((open, Full::Table));
            }
        }
        if dir_path.is_some() {
            self.places_held[owner] += 1;
        }
        self.serial += 1;
        let number = (self.serial << INDEX_BITS) | index as u64;
        let incarnation = self.incarnation[owner];
        self.slots[index].0 = Some(Entry { number, owner: owner as u8, incarnation, inline_path, dir_path, open });
        self.held[owner] += 1;
        self.open += 1;
        Ok(number)
    }

    fn index_for(&self, id: u32, number: u64) -> Option<usize> {
        let index = usize::try_from(number & ((1 << INDEX_BITS) - 1)).ok()?;
        let owner = owner_of(id);
        match &self.slots.get(index)?.0 {
            Some(e)
                if e.number == number && usize::from(e.owner) == owner && e.incarnation == self.incarnation[owner] =>
            {
                Some(index)
            }
            _ => None,
        }
    }

    /// The handle `number` if the owner of `id` holds it, with the path it
    /// was opened with (empty for a file whose long path was not kept).
    pub(crate) fn get(&mut self, id: u32, number: u64) -> Option<(&mut Open<F>, &str)> {
        let index = self.index_for(id, number)?;
        let entry = self.slots[index].0.as_mut()?;
        let path = match entry.dir_path.and_then(|at| self.dir_paths.get(usize::from(at))) {
            Some(long) => long.as_str(),
            None => entry.inline_path.as_str(),
        };
        Some((&mut entry.open, path))
    }

    /// Takes handle `number` out if the owner of `id` holds it.
    pub(crate) fn remove(&mut self, id: u32, number: u64) -> Option<Open<F>> {
        let index = self.index_for(id, number)?;
        self.take(index)
    }

    fn take(&mut self, index: usize) -> Option<Open<F>> {
        let entry = self.slots[index].0.take()?;
        if let Some(path) = entry.dir_path.and_then(|at| self.dir_paths.get_mut(usize::from(at))) {
            path.clear();
            self.places_held[usize::from(entry.owner)] -= 1;
        }
        self.held[usize::from(entry.owner)] -= 1;
        self.open -= 1;
        Some(entry.open)
    }

    /// A client's ids `[start, end)` are gone: every owner they cover gets
    /// a new incarnation and its handles are passed to `close`.
    pub(crate) fn drop_range(&mut self, start: u32, end: u32, close: &mut dyn FnMut(Open<F>)) {
        if end <= start {
            return;
        }
        // The relay slots the range touches (a host id inside it names none).
        let first = (start / SLOT_STEP) as usize;
        let last = (((end - 1) / SLOT_STEP) as usize).min(HOST_OWNER - 1);
        if first > last {
            return;
        }
        for owner in first..=last {
            self.incarnation[owner] = self.incarnation[owner].wrapping_add(1);
        }
        for index in 0..self.slots.len() {
            let covered = self.slots[index].0.as_ref().is_some_and(|e| (first..=last).contains(&usize::from(e.owner)));
            if covered && let Some(open) = self.take(index) {
                close(open);
            }
        }
    }

    /// Closes every handle (shutdown, a new stream); every owner gets a new
    /// incarnation.
    pub(crate) fn clear(&mut self, close: &mut dyn FnMut(Open<F>)) {
        for n in &mut self.incarnation {
            *n = n.wrapping_add(1);
        }
        for index in 0..self.slots.len() {
            if let Some(open) = self.take(index) {
                close(open);
            }
        }
    }
}
