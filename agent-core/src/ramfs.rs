//! `ramfs`: a bounded in-memory [`Filesystem`] over one caller-supplied
//! arena (in the guest: the free RAM from the memory map).
//!
//! # Layout
//!
//! The arena is carved once, at [`Ramfs::new`], into four tables:
//!
//! ```text
//! [entries: Entry x E][contents: Content x C][next: u32 x N][blocks: BLOCK_SIZE x N]
//! ```
//!
//! - An **entry** is a file, a directory or a symlink: kind, permissions,
//!   owner, times, its name inline, and links to its parent, first child
//!   and next sibling (directories are linked lists of children, newest
//!   first).
//! - A **content** is a file's bytes or a symlink's target: a chain of
//!   blocks, its length and a reference count. Files, staged writes and
//!   path reads hold references, so a copy shares its source's content, a
//!   path read keeps a snapshot even if the file is replaced or removed,
//!   and a staged write becomes visible by swapping one reference. A write
//!   through an open file changes the content in place, after copying it
//!   first if anything else holds it (copy on write).
//! - **Blocks** hold data, chained by the `next` table (like a FAT). Any
//!   free block serves any file, so a filesystem that was filled and
//!   emptied can store the same data again: fragmentation cannot strand
//!   space. Freeing a chain is O(1) (the content records its last block).
//!
//! Every table is used from a high-water mark first, then from its free
//! list, so `new` initializes nothing; nothing is ever allocated after it.
//!
//! # Linux semantics, and where they stop
//!
//! Paths resolve as the kernel resolves them (see [`crate::Filesystem`]),
//! and each operation follows the syscall, or the `std::fs` function, the
//! reference agent calls, down to the errno. What differs:
//!
//! - **Permissions are recorded, not enforced**: every caller acts as
//!   root (the reference agent's default identity). An [`Owner`] only
//!   sets who owns what is created.
//! - **Directory sizes** are tmpfs's: [`DIR_BASE_SIZE`] plus
//!   [`DIR_ENTRY_SIZE`] per entry (an ext4 root would report 4096).
//! - **No holes**: extending a file (a write past the end, `set_len`)
//!   stores the zeros, so a huge sparse file fails with `ENOSPC` where
//!   tmpfs would accept it.
//! - **No hard links, devices, fifos or sockets**; no extended attributes.
//! - **Access times** follow `relatime` on reads through an open file and
//!   path reads; listing a directory does not touch its access time.
//! - `remove_dir_all` of `/` (or a path resolving to it) fails with
//!   `EBUSY` before removing anything, where Linux would empty what it can.
//! - A path is at most [`MAX_PATH_LEN`]` - 1` bytes, a name
//!   [`MAX_NAME_LEN`] bytes, a symlink target [`MAX_PATH_LEN`]` - 1`
//!   bytes, as on Linux.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use crate::fs::{
    AttrError, AttrStep, EntryKind, Filesystem, FsError, MAX_SYMLINK_FOLLOWS, Metadata, MissingParents, Mtime,
    OpenOptions, Owner, SetAttrs, UMASK, mode,
};
use crate::path::{self, MAX_NAME_LEN, MAX_PATH_LEN, PathBuf};

/// Bytes per data block. A file uses whole blocks; 4 KiB keeps the waste
/// of small files low and the block table at 0.1% of the arena.
pub const BLOCK_SIZE: usize = 4096;

/// The most entries (files, directories and symlinks, the root included)
/// a ramfs holds, whatever its size: it bounds the entry table to ~1.3 MiB.
pub const MAX_ENTRIES: usize = 4096;

/// Arena bytes per entry when the entry count is derived from the arena
/// size (small arenas get proportionally fewer entries).
pub const ARENA_BYTES_PER_ENTRY: usize = 8 * 1024;

/// The fewest entries a ramfs is made with.
pub const MIN_ENTRIES: usize = 16;

/// Contents that can be open beyond one per entry: staged writes and
/// snapshots held by reads (the agent's session bound).
pub const MAX_OPEN: usize = crate::MAX_SESSIONS;

/// Files and directories open at once (through [`Filesystem::open`] and
/// [`Filesystem::open_dir`]); one more is [`FsError::TooManyOpen`].
pub const MAX_OPEN_FILES: usize = 4096;

/// The largest file offset (Linux `MAX_LFS_FILESIZE`): a write or length
/// beyond it is [`FsError::FileTooLarge`].
pub const MAX_FILE_SIZE: u64 = i64::MAX as u64;

/// The size an empty directory reports (tmpfs: two bogus entries).
pub const DIR_BASE_SIZE: u64 = 40;

/// What each entry adds to its directory's size (tmpfs `BOGO_DIRENT_SIZE`).
pub const DIR_ENTRY_SIZE: u64 = 20;

/// The directories [`Ramfs::make_standard_dirs`] creates, with their
/// permissions: what the reference's Linux guest has and SDK users write
/// into.
pub const STANDARD_DIRS: [(&str, u32); 5] =
    [("/tmp", 0o1777), ("/root", 0o700), ("/home", 0o755), ("/var", 0o755), ("/var/tmp", 0o1777)];

/// The setgid permission bit.
const SETGID: u32 = 0o2000;

/// Access times older than this are refreshed by a read (`relatime`).
const RELATIME_NS: u64 = 24 * 3600 * 1_000_000_000;

/// Bytes per entry of the table, name included.
pub const ENTRY_BYTES: usize = size_of::<Entry>();

/// Bytes of table space per content (on top of its blocks, and of the
/// unused tail of its last block).
pub const CONTENT_BYTES: usize = size_of::<Content>();

/// The smallest arena [`Ramfs::new`] accepts wherever it starts: the
/// tables for [`MIN_ENTRIES`] entries, two blocks, and room to align the
/// tables. What a guest must have left over for its filesystem.
pub const MIN_ARENA_BYTES: usize = arena_bytes_for(MIN_ENTRIES);

/// The arena bytes a ramfs of `entries` entries needs at least.
const fn arena_bytes_for(entries: usize) -> usize {
    let tables = entries * ENTRY_BYTES + (entries + MAX_OPEN) * CONTENT_BYTES;
    tables + align_of::<Entry>() + 2 * (BLOCK_SIZE + size_of::<u32>())
}

const NONE: u32 = u32::MAX;
const ROOT: u32 = 0;

const KIND_FREE: u8 = 0;
const KIND_FILE: u8 = 1;
const KIND_DIR: u8 = 2;
const KIND_SYMLINK: u8 = 3;

/// `Entry::flags`: which times are Unix seconds (else monotonic ns).
const ATIME_UNIX: u8 = 1;
const MTIME_UNIX: u8 = 2;
const CTIME_UNIX: u8 = 4;
/// `Entry::flags`: unlinked, kept while open.
const ORPHAN: u8 = 8;

/// One file, directory or symlink. 328 bytes, the per-entry overhead.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Clone, Copy)]
#[repr(C)]
struct Entry {
    kind: u8,
    name_len: u8,
    flags: u8,
    _pad: u8,
    /// Permission bits (no type bits).
    perm: u32,
    parent: u32,
    first_child: u32,
    /// Next sibling; the free-list link of a free entry.
    next_sibling: u32,
    /// The file's content or the symlink's target (`NONE`: empty).
    content: u32,
    uid: u32,
    gid: u32,
    /// A directory's entry count.
    children: u32,
    /// Open files and directories on this entry.
    open: u32,
    /// When it was linked into its directory: children are in decreasing
    /// order, which directory handles use as their position.
    seq: u64,
    atime: i64,
    mtime: i64,
    ctime: i64,
    name: [u8; MAX_NAME_LEN + 1],
}

/// A file's bytes: a chain of blocks. 24 bytes.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Clone, Copy)]
#[repr(C)]
struct Content {
    /// First block (`NONE`: no data); the free-list link of a free content.
    first: u32,
    last: u32,
    refs: u32,
    /// Changes whenever blocks may have left the chain: cursors into it
    /// are checked against it.
    epoch: u32,
    len: u64,
}

/// A position in a content's chain, so sequential access never walks the
/// chain from the start.
#[derive(Debug, Clone, Copy)]
struct Cursor {
    content: u32,
    epoch: u32,
    block: u32,
    /// File offset of `block`'s first byte.
    base: u64,
}

impl Cursor {
    const NONE: Cursor = Cursor { content: NONE, epoch: 0, block: NONE, base: 0 };
}

/// A read in progress: a snapshot of a file's content, and a cursor so
/// sequential reads never walk the chain from the start.
#[derive(Debug)]
pub struct RamfsReader {
    content: u32,
    cursor_block: u32,
    cursor_offset: u64,
}

/// A write in progress: staged content, and the target path kept in one
/// block of the arena until the commit.
#[derive(Debug)]
pub struct RamfsWriter {
    content: u32,
    path_block: u32,
    path_len: u16,
}

/// An open file: its entry (kept while open, even once unlinked), access
/// mode, and a cursor into its content.
#[derive(Debug)]
pub struct RamfsFile {
    entry: u32,
    read: bool,
    write: bool,
    append: bool,
    cursor: Cursor,
}

impl RamfsFile {
    /// Whether it was opened for reading.
    pub fn readable(&self) -> bool {
        self.read
    }

    /// Whether it was opened for writing (append included).
    pub fn writable(&self) -> bool {
        self.write || self.append
    }
}

/// An open directory and its position.
#[derive(Debug)]
pub struct RamfsDir {
    entry: u32,
    /// Entries with a `seq` below this are still to be returned.
    before: u64,
}

/// Space in use and in total, for accounting checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    /// Data blocks in use (contents and staged paths).
    pub blocks_used: usize,
    /// Data blocks in the arena.
    pub blocks_total: usize,
    /// Entries in use, the root and unlinked open ones included.
    pub entries_used: usize,
    /// Entry table size.
    pub entries_total: usize,
    /// Contents in use (file contents, symlink targets, staged writes,
    /// read snapshots).
    pub contents_used: usize,
    /// Files and directories open.
    pub open_files: usize,
}

/// Why an arena cannot hold a ramfs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArenaTooSmall {
    /// Bytes the tables need at least.
    pub needed: usize,
}

/// Where a path's walk ended: the directory holding its final component.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Last {
    /// The path names `/` (only slashes).
    Root,
    /// The final component is `.`.
    Dot,
    /// The final component is `..`.
    DotDot,
    /// The final component is a name.
    Name,
}

#[derive(Debug, Clone, Copy)]
struct Walk<'x> {
    dir: u32,
    last: Last,
    name: &'x [u8],
    /// The path ended with `/` after its final component.
    slash: bool,
}

/// A name copied out of a path or a symlink target, so the tables can be
/// changed while it is used.
struct Name {
    buf: [u8; MAX_NAME_LEN],
    len: usize,
}

impl Name {
    fn new(name: &[u8]) -> Name {
        let mut buf = [0; MAX_NAME_LEN];
        let len = name.len().min(MAX_NAME_LEN);
        buf[..len].copy_from_slice(&name[..len]);
        Name { buf, len }
    }

    fn bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

/// What a time stamp is, as stored.
#[derive(Debug, Clone, Copy)]
struct Stamp {
    value: i64,
    unix: bool,
}

/// The in-memory filesystem.
pub struct Ramfs<'a> {
    entries: &'a mut [Entry],
    contents: &'a mut [Content],
    next: &'a mut [u32],
    blocks: &'a mut [u8],
    free_entry: u32,
    free_content: u32,
    free_block: u32,
    /// Entries at or above this index have never been used.
    fresh_entry: u32,
    /// Contents at or above this index have never been used.
    fresh_content: u32,
    /// Blocks at or above this index have never been used.
    fresh_block: u32,
    /// The next directory position (`Entry::seq`).
    next_seq: u64,
    /// The next content epoch.
    next_epoch: u32,
    /// The wall clock: (monotonic ns, Unix ns) at the last sync.
    wall: Option<(u64, i64)>,
    usage: Usage,
}

/// Which times an operation touches.
#[derive(Clone, Copy)]
struct Touch {
    atime: bool,
    mtime: bool,
    ctime: bool,
}

const TOUCH_MC: Touch = Touch { atime: false, mtime: true, ctime: true };
const TOUCH_C: Touch = Touch { atime: false, mtime: false, ctime: true };

impl<'a> Ramfs<'a> {
    /// A ramfs over `arena`, with an entry count derived from its size
    /// (one per [`ARENA_BYTES_PER_ENTRY`], between [`MIN_ENTRIES`] and
    /// [`MAX_ENTRIES`]). The root directory's times are `now_ns`.
    pub fn new(arena: &'a mut [u8], now_ns: u64) -> Result<Self, ArenaTooSmall> {
        let entries = (arena.len() / ARENA_BYTES_PER_ENTRY).clamp(MIN_ENTRIES, MAX_ENTRIES);
        Ramfs::with_entries(arena, entries, now_ns)
    }

    /// A ramfs over `arena` with exactly `entries` entries (at most
    /// [`MAX_ENTRIES`]).
    pub fn with_entries(arena: &'a mut [u8], entries: usize, now_ns: u64) -> Result<Self, ArenaTooSmall> {
        let entries = entries.clamp(1, MAX_ENTRIES);
        let contents = entries + MAX_OPEN;
        let too_small = ArenaTooSmall { needed: arena_bytes_for(entries) };
        let pad = arena.as_ptr().align_offset(align_of::<Entry>());
        let arena = arena.get_mut(pad..).ok_or(too_small)?;
        let (entry_table, rest) = <[Entry]>::mut_from_prefix_with_elems(arena, entries).map_err(|_| too_small)?;
        let (content_table, rest) = <[Content]>::mut_from_prefix_with_elems(rest, contents).map_err(|_| too_small)?;
        let block_count = (rest.len() / (BLOCK_SIZE + 4)).min(NONE as usize - 1);
        if block_count < 2 {
            return Err(too_small);
        }
        let (next, rest) = <[u32]>::mut_from_prefix_with_elems(rest, block_count).map_err(|_| too_small)?;
        let blocks = &mut rest[..block_count * BLOCK_SIZE];

        // Nothing is initialized here: entries, contents and blocks are
        // handed out from a high-water mark first (initialized as they are
        // taken), then from their free lists. Start-up touches no table
        // memory, which in a fresh VM is also memory the host never faults in.
        let mut fs = Ramfs {
            entries: entry_table,
            contents: content_table,
            next,
            blocks,
            free_entry: NONE,
            free_content: NONE,
            free_block: NONE,
            fresh_entry: 0,
            fresh_content: 0,
            fresh_block: 0,
            next_seq: 1,
            next_epoch: 0,
            wall: None,
            usage: Usage {
                blocks_used: 0,
                blocks_total: block_count,
                entries_used: 0,
                entries_total: entries,
                contents_used: 0,
                open_files: 0,
            },
        };
        let root = fs.alloc_entry().map_err(|_| too_small)?;
        debug_assert_eq!(root, ROOT);
        let stamp = fs.stamp(now_ns);
        fs.entries[ROOT as usize] = Entry::new(KIND_DIR, b"", ROOT, mode::DEFAULT_DIR, Owner::ROOT, stamp);
        Ok(fs)
    }

    /// Creates [`STANDARD_DIRS`] (missing ones only; existing ones keep
    /// their permissions), owned by root.
    pub fn make_standard_dirs(&mut self, now_ns: u64) -> Result<(), FsError> {
        for (dir, perm) in STANDARD_DIRS {
            match self.mkdir_one(dir.as_bytes(), perm, Owner::ROOT, now_ns) {
                Ok(_) | Err(FsError::AlreadyExists) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Space in use and in total.
    pub fn usage(&self) -> Usage {
        self.usage
    }

    /// Bytes of file data the arena can hold in total.
    pub fn capacity_bytes(&self) -> u64 {
        (self.usage.blocks_total * BLOCK_SIZE) as u64
    }

    fn entry(&self, i: u32) -> &Entry {
        &self.entries[i as usize]
    }

    fn entry_mut(&mut self, i: u32) -> &mut Entry {
        &mut self.entries[i as usize]
    }

    fn kind(&self, i: u32) -> u8 {
        self.entry(i).kind
    }

    fn children(&self, dir: u32) -> Children<'_, 'a> {
        Children { fs: self, next: self.entry(dir).first_child }
    }

    // ---- time ----

    fn stamp(&self, now_ns: u64) -> Stamp {
        match self.wall {
            Some((mono, unix)) => Stamp { value: unix_secs(mono, unix, now_ns), unix: true },
            None => Stamp { value: now_ns.min(i64::MAX as u64) as i64, unix: false },
        }
    }

    fn touch(&mut self, i: u32, which: Touch, now_ns: u64) {
        let s = self.stamp(now_ns);
        let e = self.entry_mut(i);
        if which.atime {
            e.atime = s.value;
            e.flags = (e.flags & !ATIME_UNIX) | if s.unix { ATIME_UNIX } else { 0 };
        }
        if which.mtime {
            e.mtime = s.value;
            e.flags = (e.flags & !MTIME_UNIX) | if s.unix { MTIME_UNIX } else { 0 };
        }
        if which.ctime {
            e.ctime = s.value;
            e.flags = (e.flags & !CTIME_UNIX) | if s.unix { CTIME_UNIX } else { 0 };
        }
    }

    /// `relatime`: a read refreshes the access time if it is not after the
    /// last modification or change, or is a day old.
    fn accessed(&mut self, i: u32, now_ns: u64) {
        let e = self.entry(i);
        let now = self.stamp(now_ns);
        let same = |flag: u8| (e.flags & flag != 0) == (e.flags & ATIME_UNIX != 0);
        let stale = if !same(MTIME_UNIX) || !same(CTIME_UNIX) || (e.flags & ATIME_UNIX != 0) != now.unix {
            true
        } else {
            let day = if now.unix { (RELATIME_NS / 1_000_000_000) as i64 } else { RELATIME_NS as i64 };
            e.atime <= e.mtime || e.atime <= e.ctime || now.value.saturating_sub(e.atime) >= day
        };
        if stale {
            self.touch(i, Touch { atime: true, mtime: false, ctime: false }, now_ns);
        }
    }

    fn set_unix_times(&mut self, i: u32, atime: Option<i64>, mtime: Option<i64>, now_ns: u64) {
        let e = self.entry_mut(i);
        if let Some(t) = atime {
            e.atime = t;
            e.flags |= ATIME_UNIX;
        }
        if let Some(t) = mtime {
            e.mtime = t;
            e.flags |= MTIME_UNIX;
        }
        self.touch(i, TOUCH_C, now_ns);
    }

    // ---- resolution ----

    /// The target of symlink `i`.
    fn link_target(&self, i: u32) -> &[u8] {
        let content = self.entry(i).content;
        if content == NONE {
            return b"";
        }
        let c = &self.contents[content as usize];
        // A target is at most MAX_PATH_LEN - 1 bytes: one block.
        let start = c.first as usize * BLOCK_SIZE;
        &self.blocks[start..start + c.len as usize]
    }

    fn parent_of(&self, dir: u32) -> u32 {
        match self.entry(dir).parent {
            NONE => dir,
            p => p,
        }
    }

    /// The child `name` of directory `dir`, if any.
    fn lookup(&self, dir: u32, name: &[u8]) -> Result<Option<u32>, FsError> {
        if name.len() > MAX_NAME_LEN {
            return Err(FsError::NameTooLong);
        }
        Ok(self.children(dir).find(|&c| self.entry(c).name() == name))
    }

    /// Walks `path` from `start` (or `/`) to the directory holding its
    /// final component, following symlinks on the way.
    fn walk<'x>(&'x self, start: u32, path: &'x [u8], budget: &mut u32) -> Result<Walk<'x>, FsError> {
        let mut dir = if path.first() == Some(&b'/') { ROOT } else { start };
        let mut end = path.len();
        while end > 0 && path[end - 1] == b'/' {
            end -= 1;
        }
        if end == 0 {
            return Ok(Walk { dir: ROOT, last: Last::Root, name: b"", slash: false });
        }
        let slash = end < path.len();
        let name_at = path[..end].iter().rposition(|&b| b == b'/').map_or(0, |at| at + 1);
        for component in path[..name_at].split(|&b| b == b'/') {
            dir = match component {
                b"" | b"." => dir,
                b".." => self.parent_of(dir),
                name => {
                    let mut at = self.lookup(dir, name)?.ok_or(FsError::NotFound)?;
                    if self.kind(at) == KIND_SYMLINK {
                        at = self.follow(dir, at, budget)?;
                    }
                    if self.kind(at) != KIND_DIR {
                        return Err(FsError::NotADirectory);
                    }
                    at
                }
            };
        }
        let name = &path[name_at..end];
        let last = match name {
            b"." => Last::Dot,
            b".." => Last::DotDot,
            _ => Last::Name,
        };
        Ok(Walk { dir, last, name, slash })
    }

    /// Resolves symlink `link` found in `dir` to what it finally names.
    fn follow(&self, dir: u32, link: u32, budget: &mut u32) -> Result<u32, FsError> {
        if *budget == 0 {
            return Err(FsError::Loop);
        }
        *budget -= 1;
        self.resolve_in(dir, self.link_target(link), true, budget)
    }

    /// The entry `w`'s final component names, if any.
    fn last_entry(&self, w: &Walk<'_>) -> Result<Option<u32>, FsError> {
        match w.last {
            Last::Root => Ok(Some(ROOT)),
            Last::Dot => Ok(Some(w.dir)),
            Last::DotDot => Ok(Some(self.parent_of(w.dir))),
            Last::Name => self.lookup(w.dir, w.name),
        }
    }

    /// The entry `path` names, following a final symlink if `follow` (or
    /// if the path ends with `/`).
    fn resolve_in(&self, start: u32, path: &[u8], follow: bool, budget: &mut u32) -> Result<u32, FsError> {
        if path.is_empty() {
            return Err(FsError::NotFound);
        }
        let w = self.walk(start, path, budget)?;
        let mut at = self.last_entry(&w)?.ok_or(FsError::NotFound)?;
        if self.kind(at) == KIND_SYMLINK && (follow || w.slash) {
            at = self.follow(w.dir, at, budget)?;
        }
        if w.slash && self.kind(at) != KIND_DIR {
            return Err(FsError::NotADirectory);
        }
        Ok(at)
    }

    /// Resolves a path as sent.
    fn resolve(&self, path: &str, follow: bool) -> Result<u32, FsError> {
        let path = check(path)?;
        self.resolve_in(ROOT, path, follow, &mut budget())
    }

    /// Where a path's final component is, following final symlinks when
    /// `follow` (as `open` does, also to a missing target): the walk that
    /// ends there and the entry, if it exists. With `create`, a final name
    /// with a trailing `/` stops the walk (not looked up).
    fn locate<'x>(
        &'x self,
        path: &'x [u8],
        follow: bool,
        create: bool,
        budget: &mut u32,
    ) -> Result<(Walk<'x>, Option<u32>), FsError> {
        let mut w = self.walk(ROOT, path, budget)?;
        loop {
            if create && w.last == Last::Name && w.slash {
                // `O_CREAT` refuses a trailing `/` before looking it up.
                return Ok((w, None));
            }
            let found = self.last_entry(&w)?;
            match found {
                Some(link) if follow && self.kind(link) == KIND_SYMLINK => {
                    if *budget == 0 {
                        return Err(FsError::Loop);
                    }
                    *budget -= 1;
                    let slash = w.slash;
                    w = self.walk(w.dir, self.link_target(link), budget)?;
                    w.slash |= slash;
                }
                _ => return Ok((w, found)),
            }
        }
    }

    /// Whether `path` names a directory (following symlinks), as
    /// `Path::is_dir`.
    fn is_dir(&self, path: &[u8]) -> bool {
        let mut budget = MAX_SYMLINK_FOLLOWS;
        !path.is_empty() && self.resolve_in(ROOT, path, true, &mut budget).is_ok_and(|i| self.kind(i) == KIND_DIR)
    }

    /// Whether entry `i` is `ancestor` or lies below it.
    fn is_within(&self, mut i: u32, ancestor: u32) -> bool {
        loop {
            if i == ancestor {
                return true;
            }
            if i == ROOT || self.entry(i).parent == NONE {
                return false;
            }
            i = self.entry(i).parent;
        }
    }

    // ---- tables ----

    fn alloc_entry(&mut self) -> Result<u32, FsError> {
        let i = if self.free_entry != NONE {
            let i = self.free_entry;
            self.free_entry = self.entry(i).next_sibling;
            i
        } else if (self.fresh_entry as usize) < self.entries.len() {
            self.fresh_entry += 1;
            self.fresh_entry - 1
        } else {
            return Err(FsError::TooManyEntries);
        };
        self.usage.entries_used += 1;
        Ok(i)
    }

    fn free_entries(&self) -> usize {
        self.usage.entries_total - self.usage.entries_used
    }

    /// Links entry `i` into directory `dir` as its newest child.
    fn link(&mut self, dir: u32, i: u32, now_ns: u64) {
        let first = self.entry(dir).first_child;
        let seq = self.next_seq;
        self.next_seq += 1;
        let e = self.entry_mut(i);
        e.parent = dir;
        e.next_sibling = first;
        e.seq = seq;
        let d = self.entry_mut(dir);
        d.first_child = i;
        d.children += 1;
        self.touch(dir, TOUCH_MC, now_ns);
    }

    /// Creates an entry named `name` in directory `dir`.
    fn create(
        &mut self,
        dir: u32,
        name: &[u8],
        kind: u8,
        perm: u32,
        owner: Owner,
        now_ns: u64,
    ) -> Result<u32, FsError> {
        // As Linux's `inode_init_owner`: in a setgid directory the entry
        // takes the directory's group, and a directory the setgid bit too.
        let (mut owner, mut perm) = (owner, perm);
        if self.entry(dir).perm & SETGID != 0 {
            owner.gid = self.entry(dir).gid;
            if kind == KIND_DIR {
                perm |= SETGID;
            }
        }
        let i = self.alloc_entry()?;
        let stamp = self.stamp(now_ns);
        *self.entry_mut(i) = Entry::new(kind, name, dir, perm, owner, stamp);
        self.link(dir, i, now_ns);
        Ok(i)
    }

    /// Takes entry `i` out of its parent's list of children.
    fn unlink(&mut self, i: u32, now_ns: u64) {
        let parent = self.entry(i).parent;
        let after = self.entry(i).next_sibling;
        if self.entry(parent).first_child == i {
            self.entry_mut(parent).first_child = after;
        } else if let Some(prev) = self.children(parent).find(|&c| self.entry(c).next_sibling == i) {
            self.entry_mut(prev).next_sibling = after;
        }
        let p = self.entry_mut(parent);
        p.children = p.children.saturating_sub(1);
        self.touch(parent, TOUCH_MC, now_ns);
    }

    /// Frees an unlinked entry with no children, or keeps it as an orphan
    /// while it is open.
    fn drop_entry(&mut self, i: u32, now_ns: u64) {
        if self.entry(i).open > 0 {
            self.touch(i, TOUCH_C, now_ns);
            let e = self.entry_mut(i);
            e.flags |= ORPHAN;
            e.parent = NONE;
            e.next_sibling = NONE;
            return;
        }
        let content = self.entry(i).content;
        self.release(content);
        *self.entry_mut(i) = Entry::free(self.free_entry);
        self.free_entry = i;
        self.usage.entries_used -= 1;
    }

    /// Unlinks and drops `top` and everything below it, without recursion:
    /// descend along first children, drop a leaf (always its parent's
    /// first child), climb back.
    fn remove_tree(&mut self, top: u32, now_ns: u64) {
        self.unlink(top, now_ns);
        let mut at = top;
        loop {
            let child = self.entry(at).first_child;
            if child != NONE {
                at = child;
                continue;
            }
            let (parent, after) = (self.entry(at).parent, self.entry(at).next_sibling);
            self.drop_entry(at, now_ns);
            if at == top {
                return;
            }
            let p = self.entry_mut(parent);
            p.first_child = after;
            p.children = p.children.saturating_sub(1);
            at = parent;
        }
    }

    /// Drops every entry below directory `dir`, which stays.
    fn empty_dir(&mut self, dir: u32, now_ns: u64) {
        loop {
            let child = self.entry(dir).first_child;
            if child == NONE {
                return;
            }
            self.remove_tree(child, now_ns);
        }
    }

    fn alloc_content(&mut self) -> Result<u32, FsError> {
        let i = if self.free_content != NONE {
            let i = self.free_content;
            self.free_content = self.contents[i as usize].first;
            i
        } else if (self.fresh_content as usize) < self.contents.len() {
            self.fresh_content += 1;
            self.fresh_content - 1
        } else {
            return Err(FsError::TooManyEntries);
        };
        let epoch = self.bump_epoch();
        self.contents[i as usize] = Content { first: NONE, last: NONE, refs: 1, epoch, len: 0 };
        self.usage.contents_used += 1;
        Ok(i)
    }

    fn bump_epoch(&mut self) -> u32 {
        self.next_epoch = self.next_epoch.wrapping_add(1);
        self.next_epoch
    }

    fn retain(&mut self, content: u32) {
        if content != NONE {
            self.contents[content as usize].refs += 1;
        }
    }

    /// Drops one reference; frees the content and its blocks at zero.
    fn release(&mut self, content: u32) {
        if content == NONE {
            return;
        }
        let c = &mut self.contents[content as usize];
        c.refs -= 1;
        if c.refs > 0 {
            return;
        }
        let (first, last, blocks) = (c.first, c.last, blocks_for(c.len));
        *c = Content { first: self.free_content, last: NONE, refs: 0, epoch: 0, len: 0 };
        self.free_content = content;
        self.usage.contents_used -= 1;
        self.free_chain(first, last, blocks as usize);
    }

    fn alloc_block(&mut self) -> Result<u32, FsError> {
        let b = if self.free_block != NONE {
            let b = self.free_block;
            self.free_block = self.next[b as usize];
            b
        } else if (self.fresh_block as usize) < self.usage.blocks_total {
            self.fresh_block += 1;
            self.fresh_block - 1
        } else {
            return Err(FsError::NoSpace);
        };
        self.next[b as usize] = NONE;
        self.usage.blocks_used += 1;
        Ok(b)
    }

    fn free_blocks(&self) -> u64 {
        (self.usage.blocks_total - self.usage.blocks_used) as u64
    }

    /// Returns the chain `first..=last` of `count` blocks to the free list, in O(1).
    fn free_chain(&mut self, first: u32, last: u32, count: usize) {
        if first == NONE {
            return;
        }
        self.next[last as usize] = self.free_block;
        self.free_block = first;
        self.usage.blocks_used -= count;
    }

    fn block(&self, b: u32) -> &[u8] {
        let start = b as usize * BLOCK_SIZE;
        &self.blocks[start..start + BLOCK_SIZE]
    }

    fn block_mut(&mut self, b: u32) -> &mut [u8] {
        let start = b as usize * BLOCK_SIZE;
        &mut self.blocks[start..start + BLOCK_SIZE]
    }

    /// Appends `n` bytes from `source` to a content, taking blocks as
    /// needed. On `NoSpace` the content keeps what fitted.
    fn append_from(&mut self, content: u32, mut source: Source<'_>) -> Result<(), FsError> {
        while source.len() > 0 {
            let c = self.contents[content as usize];
            let used = (c.len % BLOCK_SIZE as u64) as usize;
            let (block, used) = if c.first == NONE || used == 0 {
                let b = self.alloc_block()?;
                let c = &mut self.contents[content as usize];
                if c.first == NONE {
                    c.first = b;
                } else {
                    self.next[c.last as usize] = b;
                }
                self.contents[content as usize].last = b;
                (b, 0)
            } else {
                (c.last, used)
            };
            let n = source.len().min((BLOCK_SIZE - used) as u64) as usize;
            let at = block as usize * BLOCK_SIZE + used;
            match &mut source {
                Source::Bytes(data) => {
                    self.blocks[at..at + n].copy_from_slice(&data[..n]);
                    *data = &data[n..];
                }
                Source::Zeros(left) => {
                    self.blocks[at..at + n].fill(0);
                    *left -= n as u64;
                }
                Source::Block { block: from, offset, left } => {
                    let src = *from as usize * BLOCK_SIZE + *offset;
                    self.blocks.copy_within(src..src + n, at);
                    *offset += n;
                    *left -= n;
                }
            }
            self.contents[content as usize].len += n as u64;
        }
        Ok(())
    }

    fn append(&mut self, content: u32, data: &[u8]) -> Result<(), FsError> {
        self.append_from(content, Source::Bytes(data))
    }

    /// Moves `cursor` to the block holding `offset` (below the length) of
    /// `content`, walking from where it was if it is still valid.
    fn seek(&self, content: u32, cursor: &mut Cursor, offset: u64) -> u32 {
        let c = &self.contents[content as usize];
        let block_size = BLOCK_SIZE as u64;
        if cursor.content != content || cursor.epoch != c.epoch || cursor.block == NONE || offset < cursor.base {
            *cursor = Cursor { content, epoch: c.epoch, block: c.first, base: 0 };
        }
        while offset >= cursor.base + block_size {
            cursor.block = self.next[cursor.block as usize];
            cursor.base += block_size;
        }
        cursor.block
    }

    /// A copy of content `from` (one reference), for copy on write.
    fn clone_content(&mut self, from: u32) -> Result<u32, FsError> {
        let len = self.contents[from as usize].len;
        if blocks_for(len) > self.free_blocks() {
            return Err(FsError::NoSpace);
        }
        let to = self.alloc_content()?;
        let mut block = self.contents[from as usize].first;
        let mut left = len;
        while left > 0 {
            let n = left.min(BLOCK_SIZE as u64) as usize;
            // Cannot fail: the space was checked above.
            let _ = self.append_from(to, Source::Block { block, offset: 0, left: n });
            left -= n as u64;
            block = self.next[block as usize];
        }
        Ok(to)
    }

    /// Entry `i`'s content, held by nothing else, ready to change in place.
    fn own_content(&mut self, i: u32) -> Result<u32, FsError> {
        let content = self.entry(i).content;
        if content == NONE {
            let c = self.alloc_content()?;
            self.entry_mut(i).content = c;
            return Ok(c);
        }
        if self.contents[content as usize].refs == 1 {
            return Ok(content);
        }
        let copy = self.clone_content(content)?;
        self.entry_mut(i).content = copy;
        self.release(content);
        Ok(copy)
    }

    /// Writes `data` at `offset` of entry `i`'s content (zero-filling up to
    /// `offset`), all or nothing.
    fn write_content(&mut self, i: u32, cursor: &mut Cursor, offset: u64, data: &[u8]) -> Result<(), FsError> {
        let end = offset.checked_add(data.len() as u64).filter(|&e| e <= MAX_FILE_SIZE).ok_or(FsError::FileTooLarge)?;
        let len = self.content_len(self.entry(i).content);
        let shared = self.entry(i).content != NONE && self.contents[self.entry(i).content as usize].refs > 1;
        let copy_blocks = if shared { blocks_for(len) } else { 0 };
        if blocks_for(end.max(len)) - blocks_for(len) + copy_blocks > self.free_blocks() {
            return Err(FsError::NoSpace);
        }
        let content = self.own_content(i)?;
        if offset > len {
            self.append_from(content, Source::Zeros(offset - len))?;
        }
        let mut at = offset;
        let mut rest = data;
        while at < len && !rest.is_empty() {
            let block = self.seek(content, cursor, at);
            let start = (at - cursor.base) as usize;
            let n = rest.len().min(BLOCK_SIZE - start).min((len - at) as usize);
            self.block_mut(block)[start..start + n].copy_from_slice(&rest[..n]);
            at += n as u64;
            rest = &rest[n..];
        }
        self.append(content, rest)
    }

    /// Truncates or zero-extends entry `i`'s content to `size`.
    fn set_content_len(&mut self, i: u32, size: u64) -> Result<(), FsError> {
        if size > MAX_FILE_SIZE {
            return Err(FsError::InvalidArgument);
        }
        let len = self.content_len(self.entry(i).content);
        if size == len {
            return Ok(());
        }
        if size == 0 {
            let old = core::mem::replace(&mut self.entry_mut(i).content, NONE);
            self.release(old);
            return Ok(());
        }
        if size > len {
            let mut cursor = Cursor::NONE;
            return self.write_content(i, &mut cursor, size, &[]);
        }
        let content = self.own_content(i)?;
        let keep = blocks_for(size);
        let mut cursor = Cursor::NONE;
        let new_last = self.seek(content, &mut cursor, (keep - 1) * BLOCK_SIZE as u64);
        let c = self.contents[content as usize];
        let after = self.next[new_last as usize];
        if after != NONE {
            self.free_chain(after, c.last, (blocks_for(len) - keep) as usize);
        }
        self.next[new_last as usize] = NONE;
        let epoch = self.bump_epoch();
        let c = &mut self.contents[content as usize];
        c.last = new_last;
        c.len = size;
        c.epoch = epoch;
        Ok(())
    }

    fn metadata(&self, i: u32) -> Metadata {
        let e = self.entry(i);
        let (kind, type_bits, size) = match e.kind {
            KIND_DIR => (EntryKind::Dir, mode::DIR, DIR_BASE_SIZE + DIR_ENTRY_SIZE * u64::from(e.children)),
            KIND_SYMLINK => (EntryKind::Symlink, mode::SYMLINK, self.content_len(e.content)),
            _ => (EntryKind::File, mode::FILE, self.content_len(e.content)),
        };
        let time = |value: i64, flag: u8| {
            if e.flags & flag != 0 { Mtime::Unix(value) } else { Mtime::Monotonic(value as u64) }
        };
        Metadata {
            kind,
            size,
            mode: type_bits | e.perm,
            modified: time(e.mtime, MTIME_UNIX),
            accessed: time(e.atime, ATIME_UNIX),
            changed: time(e.ctime, CTIME_UNIX),
            uid: e.uid,
            gid: e.gid,
        }
    }

    fn content_len(&self, content: u32) -> u64 {
        if content == NONE { 0 } else { self.contents[content as usize].len }
    }

    /// The target path a writer stored at `begin_write`.
    fn writer_path(&self, w: &RamfsWriter) -> &[u8] {
        &self.block(w.path_block)[..usize::from(w.path_len)]
    }

    /// The path of entry `i` from the root, into `out`.
    fn path_of(&self, i: u32, out: &mut PathBuf) -> Result<(), FsError> {
        out.clear();
        if i == ROOT {
            let _ = out.push('/');
            return Ok(());
        }
        // Build it backwards in a byte buffer, then copy it out.
        let mut buf = [0u8; MAX_PATH_LEN];
        let mut at = buf.len();
        let mut e = i;
        while e != ROOT {
            let name = self.entry(e).name();
            if at < name.len() + 1 {
                return Err(FsError::PathTooLong);
            }
            at -= name.len();
            buf[at..at + name.len()].copy_from_slice(name);
            at -= 1;
            buf[at] = b'/';
            e = self.entry(e).parent;
            if e == NONE {
                return Err(FsError::NotFound);
            }
        }
        let text = core::str::from_utf8(&buf[at..]).map_err(|_| FsError::Io)?;
        out.push_str(text).map_err(|_| FsError::PathTooLong)
    }

    // ---- operations, as their syscalls ----

    /// `mkdir(2)`: creates one directory; returns it.
    fn mkdir_one(&mut self, path: &[u8], perm: u32, owner: Owner, now_ns: u64) -> Result<u32, FsError> {
        let (dir, name) = self.creation_target(path, true)?;
        self.create(dir, name.bytes(), KIND_DIR, perm, owner, now_ns)
    }

    /// Where `mkdir`, `symlink` create: the directory and the new name
    /// (`filename_create`).
    fn creation_target(&self, path: &[u8], want_dir: bool) -> Result<(u32, Name), FsError> {
        let w = self.walk(ROOT, path, &mut budget())?;
        if w.last != Last::Name {
            return Err(FsError::AlreadyExists);
        }
        if self.lookup(w.dir, w.name)?.is_some() {
            return Err(FsError::AlreadyExists);
        }
        if w.slash && !want_dir {
            return Err(FsError::NotFound);
        }
        Ok((w.dir, Name::new(w.name)))
    }

    /// `std::fs::create_dir_all`; returns the topmost directory it
    /// created, if any.
    fn create_dirs(&mut self, path: &[u8], owner: Owner, now_ns: u64) -> Result<Option<u32>, FsError> {
        let text = core::str::from_utf8(path).map_err(|_| FsError::InvalidPath)?;
        // Paths to make once their parent exists, innermost first.
        let mut pending = heapless::Vec::<u16, { MAX_PATH_LEN / 2 + 1 }>::new();
        let mut at = text;
        let mut first = None;
        loop {
            if at.is_empty() {
                break;
            }
            match self.mkdir_one(at.as_bytes(), 0o777 & !UMASK, owner, now_ns) {
                Ok(made) => {
                    first = Some(made);
                    break;
                }
                Err(FsError::NotFound) => {}
                Err(_) if self.is_dir(at.as_bytes()) => break,
                Err(e) => return Err(e),
            }
            // A prefix of `path`: its length fits in u16.
            pending.push(at.len() as u16).map_err(|_| FsError::PathTooLong)?;
            at = path::std_parent(at).ok_or(FsError::Io)?;
        }
        while let Some(len) = pending.pop() {
            let at = &path[..usize::from(len)];
            match self.mkdir_one(at, 0o777 & !UMASK, owner, now_ns) {
                Ok(made) => {
                    first.get_or_insert(made);
                }
                Err(_) if self.is_dir(at) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(first)
    }

    /// Makes the missing parents of `dst` if asked to; returns the topmost
    /// one made, to remove if the operation then fails.
    ///
    /// When parents are missing, fails with `NoSpace` before making any
    /// when the entries left cannot hold them all plus `extra` new entries
    /// (the destination itself, which is then new too), so a failed copy or
    /// rename leaves nothing behind.
    fn make_parents(
        &mut self,
        dst: &str,
        parents: MissingParents,
        extra: usize,
        now_ns: u64,
    ) -> Result<Option<u32>, FsError> {
        match (parents, path::std_parent(dst)) {
            (MissingParents::Create, Some(parent)) if !parent.is_empty() => {
                let missing = self.missing_dirs(parent);
                if missing > 0 && missing + extra > self.free_entries() {
                    return Err(FsError::NoSpace);
                }
                self.create_dirs(parent.as_bytes(), Owner::ROOT, now_ns)
            }
            _ => Ok(None),
        }
    }

    /// How many directories `create_dir_all(path)` would make: the prefixes
    /// of `path` that do not resolve, from the longest one up.
    fn missing_dirs(&self, path: &str) -> usize {
        let mut missing = 0;
        let mut at = path;
        while !at.is_empty() && self.resolve(at, true).is_err() {
            missing += 1;
            match path::std_parent(at) {
                Some(up) => at = up,
                None => break,
            }
        }
        missing
    }

    fn undo_parents(&mut self, made: Option<u32>, now_ns: u64) {
        if let Some(top) = made {
            self.remove_tree(top, now_ns);
        }
    }

    /// `unlink(2)`.
    fn unlink_path(&mut self, path: &str, now_ns: u64) -> Result<(), FsError> {
        let path = check(path)?;
        let w = self.walk(ROOT, path, &mut budget())?;
        if w.last != Last::Name {
            return Err(FsError::IsADirectory);
        }
        let found = self.lookup(w.dir, w.name)?;
        let i = match found {
            None => return Err(FsError::NotFound),
            Some(i) if self.kind(i) == KIND_DIR => return Err(FsError::IsADirectory),
            Some(_) if w.slash => return Err(FsError::NotADirectory),
            Some(i) => i,
        };
        self.unlink(i, now_ns);
        self.drop_entry(i, now_ns);
        Ok(())
    }

    /// `rmdir(2)`; with `empty_first`, what `std::fs::remove_dir_all` does
    /// on Linux: empty the directory the path leads to, then `rmdir` it.
    fn rmdir_path(&mut self, path: &str, empty_first: bool, now_ns: u64) -> Result<(), FsError> {
        let bytes = check(path)?;
        if empty_first {
            // `remove_dir_all`: an `lstat` first; a symlink is unlinked.
            let top = self.resolve(path, false)?;
            match self.kind(top) {
                KIND_SYMLINK => return self.unlink_path(path, now_ns),
                KIND_DIR if top == ROOT => return Err(FsError::Busy),
                KIND_DIR => self.empty_dir(top, now_ns),
                _ => return Err(FsError::NotADirectory),
            }
            // Rust ignores a final `rmdir` that finds nothing (the path
            // may have led through what was just removed).
            return match self.rmdir_path(path, false, now_ns) {
                Err(FsError::NotFound) => Ok(()),
                other => other,
            };
        }
        let w = self.walk(ROOT, bytes, &mut budget())?;
        let i = match w.last {
            Last::Root => return Err(FsError::Busy),
            Last::Dot => return Err(FsError::InvalidArgument),
            Last::DotDot => return Err(FsError::DirectoryNotEmpty),
            Last::Name => self.lookup(w.dir, w.name)?.ok_or(FsError::NotFound)?,
        };
        if self.kind(i) != KIND_DIR {
            return Err(FsError::NotADirectory);
        }
        if self.entry(i).first_child != NONE {
            return Err(FsError::DirectoryNotEmpty);
        }
        self.unlink(i, now_ns);
        self.drop_entry(i, now_ns);
        Ok(())
    }

    /// `open(2)` as `OpenOptions::open` calls it; returns the entry and
    /// whether it was created.
    fn open_entry(&mut self, path: &str, o: &OpenOptions, now_ns: u64) -> Result<u32, FsError> {
        // `OpenOptions`'s own checks, before any syscall.
        let bytes = check(path)?;
        let writes = o.write || o.append;
        if !o.read && !writes {
            return Err(FsError::InvalidArgument);
        }
        if (!writes && (o.truncate || o.create || o.create_new)) || (o.append && o.truncate && !o.create_new) {
            return Err(FsError::InvalidArgument);
        }
        let create = o.create || o.create_new;
        let truncate = o.truncate && !o.create_new;
        let mut budget = MAX_SYMLINK_FOLLOWS;
        // A trailing `/` with `O_CREAT` is refused before any lookup.
        let first = self.walk(ROOT, bytes, &mut { MAX_SYMLINK_FOLLOWS })?;
        if create && first.last == Last::Name && first.slash {
            return Err(FsError::IsADirectory);
        }
        let (w, found) = self.locate(bytes, !o.create_new, create, &mut budget)?;
        // Also at the end of a symlink followed.
        if create && w.last == Last::Name && w.slash {
            return Err(FsError::IsADirectory);
        }
        let i = match found {
            Some(_) if o.create_new => return Err(FsError::AlreadyExists),
            Some(i) => {
                if self.kind(i) == KIND_DIR && (create || writes) {
                    return Err(FsError::IsADirectory);
                }
                if w.slash && self.kind(i) != KIND_DIR {
                    return Err(FsError::NotADirectory);
                }
                if truncate && self.kind(i) == KIND_FILE {
                    self.set_content_len(i, 0)?;
                    self.touch(i, TOUCH_MC, now_ns);
                }
                i
            }
            None if !create => return Err(FsError::NotFound),
            None => {
                let (dir, name) = (w.dir, Name::new(w.name));
                let perm = o.mode.unwrap_or(0o666) & mode::PERMISSIONS & !UMASK;
                self.create(dir, name.bytes(), KIND_FILE, perm, o.owner.unwrap_or(Owner::ROOT), now_ns)?
            }
        };
        Ok(i)
    }

    fn open_count(&mut self, i: u32) -> Result<(), FsError> {
        if self.usage.open_files >= MAX_OPEN_FILES {
            return Err(FsError::TooManyOpen);
        }
        self.usage.open_files += 1;
        self.entry_mut(i).open += 1;
        Ok(())
    }

    fn close_entry(&mut self, i: u32, now_ns: u64) {
        self.usage.open_files -= 1;
        let e = self.entry_mut(i);
        e.open -= 1;
        if e.open == 0 && e.flags & ORPHAN != 0 {
            self.drop_entry(i, now_ns);
        }
    }

    /// `chmod(2)` of entry `i`.
    fn chmod(&mut self, i: u32, perm: u32, now_ns: u64) {
        self.entry_mut(i).perm = perm & mode::PERMISSIONS;
        self.touch(i, TOUCH_C, now_ns);
    }

    /// `chown(2)` of entry `i`: as on Linux, a non-directory loses its
    /// setuid bit, and its setgid bit if it is group-executable.
    fn chown(&mut self, i: u32, uid: Option<u32>, gid: Option<u32>, now_ns: u64) {
        let e = self.entry_mut(i);
        if let Some(uid) = uid {
            e.uid = uid;
        }
        if let Some(gid) = gid {
            e.gid = gid;
        }
        if e.kind != KIND_DIR && e.kind != KIND_SYMLINK {
            e.perm &= !0o4000;
            if e.perm & 0o010 != 0 {
                e.perm &= !SETGID;
            }
        }
        self.touch(i, TOUCH_C, now_ns);
    }

    /// A truncation or extension through `set_len` of entry `i`.
    fn set_len(&mut self, i: u32, size: u64, now_ns: u64) -> Result<(), FsError> {
        self.set_content_len(i, size)?;
        self.touch(i, TOUCH_MC, now_ns);
        Ok(())
    }

    /// `std::fs::copy` (the source checked by the caller).
    fn copy_file(&mut self, from: u32, dst: &str, now_ns: u64) -> Result<(), FsError> {
        let perm = self.entry(from).perm;
        let options =
            OpenOptions { write: true, create: true, truncate: true, mode: Some(perm), ..OpenOptions::default() };
        // Opening for writing refuses a directory: `to` is a file.
        let to = self.open_entry(dst, &options, now_ns)?;
        // Copied after the truncation, as Linux does: `copy(a, a)` empties `a`.
        let content = self.entry(from).content;
        if content != NONE {
            self.accessed(from, now_ns);
        }
        if to != from {
            self.retain(content);
            let old = core::mem::replace(&mut self.entry_mut(to).content, content);
            self.release(old);
            self.touch(to, TOUCH_MC, now_ns);
        }
        self.chmod(to, perm, now_ns);
        Ok(())
    }

    /// `rename(2)`.
    fn rename_paths(&mut self, src: &str, dst: &str, now_ns: u64) -> Result<(), FsError> {
        // Rust refuses a NUL in either before the kernel looks at them.
        if src.contains('\0') || dst.contains('\0') {
            return Err(FsError::InvalidPath);
        }
        let (src, dst) = (check(src)?, check(dst)?);
        let mut budget = MAX_SYMLINK_FOLLOWS;
        let old = self.walk(ROOT, src, &mut budget)?;
        let mut budget = MAX_SYMLINK_FOLLOWS;
        let new = self.walk(ROOT, dst, &mut budget)?;
        if old.last != Last::Name || new.last != Last::Name {
            return Err(FsError::Busy);
        }
        let from = self.lookup(old.dir, old.name)?.ok_or(FsError::NotFound)?;
        let to = self.lookup(new.dir, new.name)?;
        let from_dir = self.kind(from) == KIND_DIR;
        if !from_dir && (old.slash || new.slash) {
            return Err(FsError::NotADirectory);
        }
        if from_dir && self.is_within(new.dir, from) {
            return Err(FsError::InvalidArgument);
        }
        if let Some(to) = to {
            if self.kind(to) == KIND_DIR && self.is_within(old.dir, to) {
                return Err(FsError::DirectoryNotEmpty);
            }
            if to == from {
                return Ok(());
            }
            match (from_dir, self.kind(to) == KIND_DIR) {
                (true, false) => return Err(FsError::NotADirectory),
                (false, true) => return Err(FsError::IsADirectory),
                (true, true) if self.entry(to).first_child != NONE => return Err(FsError::DirectoryNotEmpty),
                _ => {}
            }
        }
        let (new_dir, name) = (new.dir, Name::new(new.name));
        if let Some(to) = to {
            self.unlink(to, now_ns);
            self.drop_entry(to, now_ns);
        }
        self.unlink(from, now_ns);
        let e = self.entry_mut(from);
        e.name[..name.len].copy_from_slice(name.bytes());
        e.name_len = name.len as u8;
        self.link(new_dir, from, now_ns);
        self.touch(from, TOUCH_C, now_ns);
        Ok(())
    }

    /// The path-based `SetStat`, step by step as the reference runs it.
    fn set_path_attrs(&mut self, path: &str, follow: bool, a: &SetAttrs, now_ns: u64) -> Result<(), AttrError> {
        let fail = |step| move |error| AttrError { step, error };
        if let Some(size) = a.size {
            let options = OpenOptions { write: true, ..OpenOptions::default() };
            let i = self.open_entry(path, &options, now_ns).map_err(fail(AttrStep::OpenForTruncate))?;
            self.set_len(i, size, now_ns).map_err(fail(AttrStep::SetLen))?;
        }
        if let Some(perm) = a.mode {
            if !follow {
                let i = self.resolve(path, false).map_err(fail(AttrStep::LstatBeforeChmod))?;
                if self.kind(i) == KIND_SYMLINK {
                    return Err(fail(AttrStep::LstatBeforeChmod)(FsError::SymlinkChmod));
                }
            }
            let i = self.resolve(path, true).map_err(fail(AttrStep::Chmod))?;
            self.chmod(i, perm, now_ns);
        }
        if a.uid.is_some() || a.gid.is_some() {
            let i = self.resolve(path, follow).map_err(fail(AttrStep::Chown))?;
            self.chown(i, a.uid, a.gid, now_ns);
        }
        if a.atime.is_some() || a.mtime.is_some() {
            let i = self.resolve(path, follow).map_err(fail(AttrStep::StatBeforeUtimensat))?;
            self.set_unix_times(i, a.atime, a.mtime, now_ns);
        }
        Ok(())
    }
}

/// Checks a path as sent: Rust refuses NUL bytes before any syscall, then
/// the kernel an empty path and one of [`MAX_PATH_LEN`] bytes or more
/// (`PATH_MAX` counts the terminating NUL).
fn check(path: &str) -> Result<&[u8], FsError> {
    let bytes = path.as_bytes();
    if bytes.contains(&0) {
        return Err(FsError::InvalidPath);
    }
    if bytes.is_empty() {
        return Err(FsError::NotFound);
    }
    if bytes.len() >= MAX_PATH_LEN {
        return Err(FsError::PathTooLong);
    }
    Ok(bytes)
}

/// A fresh symlink budget for one resolution.
fn budget() -> u32 {
    MAX_SYMLINK_FOLLOWS
}

fn blocks_for(len: u64) -> u64 {
    len.div_ceil(BLOCK_SIZE as u64)
}

/// Unix seconds at monotonic `now_ns`, given a sync point.
fn unix_secs(sync_mono: u64, sync_unix: i64, now_ns: u64) -> i64 {
    let ns = i128::from(sync_unix) + i128::from(now_ns) - i128::from(sync_mono);
    i64::try_from(ns.div_euclid(1_000_000_000)).unwrap_or(i64::MAX)
}

/// Bytes to append.
enum Source<'d> {
    Bytes(&'d [u8]),
    Zeros(u64),
    /// From a block of the arena.
    Block {
        block: u32,
        offset: usize,
        left: usize,
    },
}

impl Source<'_> {
    fn len(&self) -> u64 {
        match self {
            Source::Bytes(d) => d.len() as u64,
            Source::Zeros(n) => *n,
            Source::Block { left, .. } => *left as u64,
        }
    }
}

impl Entry {
    fn free(next: u32) -> Entry {
        Entry {
            kind: KIND_FREE,
            name_len: 0,
            flags: 0,
            _pad: 0,
            perm: 0,
            parent: NONE,
            first_child: NONE,
            next_sibling: next,
            content: NONE,
            uid: 0,
            gid: 0,
            children: 0,
            open: 0,
            seq: 0,
            atime: 0,
            mtime: 0,
            ctime: 0,
            name: [0; MAX_NAME_LEN + 1],
        }
    }

    /// A new entry; `name` is at most [`MAX_NAME_LEN`] bytes (checked by
    /// the lookup before it).
    fn new(kind: u8, name: &[u8], parent: u32, perm: u32, owner: Owner, at: Stamp) -> Entry {
        let mut e = Entry::free(NONE);
        let n = name.len().min(MAX_NAME_LEN);
        e.name[..n].copy_from_slice(&name[..n]);
        e.name_len = n as u8;
        e.kind = kind;
        e.perm = perm & mode::PERMISSIONS;
        e.parent = parent;
        e.uid = owner.uid;
        e.gid = owner.gid;
        e.atime = at.value;
        e.mtime = at.value;
        e.ctime = at.value;
        e.flags = if at.unix { ATIME_UNIX | MTIME_UNIX | CTIME_UNIX } else { 0 };
        e
    }

    fn name(&self) -> &[u8] {
        &self.name[..usize::from(self.name_len)]
    }
}

/// Iterator over a directory's children.
struct Children<'f, 'a> {
    fs: &'f Ramfs<'a>,
    next: u32,
}

impl Iterator for Children<'_, '_> {
    type Item = u32;

    fn next(&mut self) -> Option<u32> {
        if self.next == NONE {
            return None;
        }
        let i = self.next;
        self.next = self.fs.entry(i).next_sibling;
        Some(i)
    }
}

impl<'a> Filesystem for Ramfs<'a> {
    type Reader = RamfsReader;
    type Writer = RamfsWriter;
    type File = RamfsFile;
    type Dir = RamfsDir;

    fn stat(&mut self, path: &str) -> Result<Metadata, FsError> {
        self.stat_at(path, false)
    }

    fn list(&mut self, path: &str, visit: &mut dyn FnMut(&str, &Metadata)) -> Result<(), FsError> {
        let dir = self.resolve(path, true)?;
        if self.kind(dir) != KIND_DIR {
            return Err(FsError::NotADirectory);
        }
        for child in self.children(dir) {
            let name = core::str::from_utf8(self.entry(child).name()).unwrap_or("");
            visit(name, &self.metadata(child));
        }
        Ok(())
    }

    fn mkdir(&mut self, path: &str, now_ns: u64) -> Result<(), FsError> {
        self.create_dir_all(path, None, Owner::ROOT, now_ns)
    }

    fn remove(&mut self, path: &str, now_ns: u64) -> Result<(), FsError> {
        self.unlink_path(path, now_ns)
    }

    fn remove_dir(&mut self, path: &str, now_ns: u64) -> Result<(), FsError> {
        self.remove_dir_at(path, true, now_ns)
    }

    fn copy(&mut self, src: &str, dst: &str, now_ns: u64) -> Result<(), FsError> {
        // The seed-era agent's text for a directory source.
        self.copy_at(src, dst, MissingParents::Create, now_ns).map_err(|e| match e {
            FsError::NotRegularFile => FsError::IsADirectory,
            e => e,
        })
    }

    fn rename(&mut self, src: &str, dst: &str, now_ns: u64) -> Result<(), FsError> {
        self.rename_at(src, dst, MissingParents::Create, now_ns)
    }

    fn open_read(&mut self, path: &str) -> Result<(RamfsReader, u64), FsError> {
        let i = self.resolve(path, true)?;
        if self.kind(i) == KIND_DIR {
            return Err(FsError::IsADirectory);
        }
        let content = self.entry(i).content;
        self.retain(content);
        let (first, len) = if content == NONE {
            (NONE, 0)
        } else {
            (self.contents[content as usize].first, self.content_len(content))
        };
        Ok((RamfsReader { content, cursor_block: first, cursor_offset: 0 }, len))
    }

    fn read_at(&mut self, r: &mut RamfsReader, offset: u64, max: usize) -> Result<&[u8], FsError> {
        let len = self.content_len(r.content);
        if offset >= len || max == 0 {
            return Ok(&[]);
        }
        let block_size = BLOCK_SIZE as u64;
        if offset < r.cursor_offset {
            r.cursor_block = self.contents[r.content as usize].first;
            r.cursor_offset = 0;
        }
        while offset >= r.cursor_offset + block_size {
            r.cursor_block = self.next[r.cursor_block as usize];
            r.cursor_offset += block_size;
        }
        // Serve as far as the chain runs through adjacent blocks (a file
        // written in one go usually does): one large slice instead of many
        // 4 KiB ones keeps the driver's writes, and the device's
        // notifications, few.
        let start = (offset - r.cursor_offset) as usize;
        let want = max.min((len - offset) as usize);
        let (first, mut last, mut avail) = (r.cursor_block, r.cursor_block, BLOCK_SIZE - start);
        while avail < want && self.next[last as usize] == last + 1 {
            last += 1;
            avail += BLOCK_SIZE;
        }
        let base = first as usize * BLOCK_SIZE + start;
        Ok(&self.blocks[base..base + avail.min(want)])
    }

    fn close_read(&mut self, r: RamfsReader) {
        self.release(r.content);
    }

    fn begin_write(&mut self, path: &str) -> Result<RamfsWriter, FsError> {
        // Fail early for what is already known: a file where a parent
        // directory must be, or a directory at the target. Missing parents
        // are fine: the commit creates them.
        let bytes = check(path)?;
        match self.locate(bytes, true, true, &mut budget()) {
            Ok((w, _)) if w.slash || w.last != Last::Name => return Err(FsError::IsADirectory),
            Ok((_, Some(i))) if self.kind(i) == KIND_DIR => return Err(FsError::IsADirectory),
            // A symlink loop is left to the commit, where making the
            // parents meets it first.
            Ok(_) | Err(FsError::NotFound | FsError::Loop) => {}
            Err(e) => return Err(e),
        }
        let content = self.alloc_content()?;
        let path_block = match self.alloc_block() {
            Ok(b) => b,
            Err(e) => {
                self.release(content);
                return Err(e);
            }
        };
        // `check` kept it below MAX_PATH_LEN <= BLOCK_SIZE bytes.
        let n = bytes.len().min(BLOCK_SIZE);
        self.block_mut(path_block)[..n].copy_from_slice(&bytes[..n]);
        Ok(RamfsWriter { content, path_block, path_len: n as u16 })
    }

    fn write(&mut self, w: &mut RamfsWriter, data: &[u8]) -> Result<(), FsError> {
        self.append(w.content, data)
    }

    fn commit_write(&mut self, w: RamfsWriter, perm: Option<u32>, now_ns: u64) -> Result<(), FsError> {
        let mut target = [0u8; MAX_PATH_LEN];
        let n = usize::from(w.path_len);
        target[..n].copy_from_slice(self.writer_path(&w));
        self.free_chain(w.path_block, w.path_block, 1);
        let result = (|| {
            let target = core::str::from_utf8(&target[..n]).map_err(|_| FsError::InvalidPath)?;
            if let Some(parent) = path::std_parent(target).filter(|p| !p.is_empty()) {
                self.create_dirs(parent.as_bytes(), Owner::ROOT, now_ns)?;
            }
            let (w_at, found) = self.locate(target.as_bytes(), true, true, &mut budget())?;
            if w_at.slash || w_at.last != Last::Name {
                return Err(FsError::IsADirectory);
            }
            let file = match found {
                Some(i) if self.kind(i) == KIND_DIR => return Err(FsError::IsADirectory),
                Some(i) => i,
                None => {
                    let (dir, name) = (w_at.dir, Name::new(w_at.name));
                    let perm = perm.unwrap_or(mode::DEFAULT_FILE);
                    self.create(dir, name.bytes(), KIND_FILE, perm, Owner::ROOT, now_ns)?
                }
            };
            let content = if self.content_len(w.content) == 0 { NONE } else { w.content };
            self.retain(content);
            let old = core::mem::replace(&mut self.entry_mut(file).content, content);
            self.release(old);
            if let Some(perm) = perm {
                self.entry_mut(file).perm = perm & mode::PERMISSIONS;
            }
            self.touch(file, TOUCH_MC, now_ns);
            Ok(())
        })();
        // The writer's own reference goes either way.
        self.release(w.content);
        result
    }

    fn abort_write(&mut self, w: RamfsWriter) {
        self.free_chain(w.path_block, w.path_block, 1);
        self.release(w.content);
    }

    fn set_wall_clock(&mut self, now_ns: u64, unix_ns: i64) {
        let first = self.wall.is_none();
        self.wall = Some((now_ns, unix_ns));
        if !first {
            return;
        }
        // Date what was stamped before, once: monotonic -> Unix seconds.
        for i in 0..self.fresh_entry {
            let e = &mut self.entries[i as usize];
            if e.kind == KIND_FREE {
                continue;
            }
            for (flag, t) in [(ATIME_UNIX, &mut e.atime), (MTIME_UNIX, &mut e.mtime), (CTIME_UNIX, &mut e.ctime)] {
                if e.flags & flag == 0 {
                    *t = unix_secs(now_ns, unix_ns, *t as u64);
                }
            }
            e.flags |= ATIME_UNIX | MTIME_UNIX | CTIME_UNIX;
        }
    }

    fn stat_at(&mut self, path: &str, follow: bool) -> Result<Metadata, FsError> {
        self.resolve(path, follow).map(|i| self.metadata(i))
    }

    fn read_link(&mut self, path: &str, out: &mut PathBuf) -> Result<(), FsError> {
        let i = self.resolve(path, false)?;
        if self.kind(i) != KIND_SYMLINK {
            return Err(FsError::InvalidArgument);
        }
        let target = core::str::from_utf8(self.link_target(i)).map_err(|_| FsError::Io)?;
        out.clear();
        out.push_str(target).map_err(|_| FsError::PathTooLong)
    }

    fn canonicalize(&mut self, path: &str, out: &mut PathBuf) -> Result<(), FsError> {
        let i = self.resolve(path, true)?;
        self.path_of(i, out)
    }

    fn symlink(&mut self, target: &str, link: &str, owner: Owner, now_ns: u64) -> Result<(), FsError> {
        // Rust refuses a NUL in either first; then, as symlink(2), the
        // target is checked, and never resolved.
        if target.contains('\0') || link.contains('\0') {
            return Err(FsError::InvalidPath);
        }
        let target = check(target)?;
        let (dir, name) = self.creation_target(check(link)?, false)?;
        if self.free_entries() == 0 {
            return Err(FsError::TooManyEntries);
        }
        let content = self.alloc_content()?;
        if let Err(e) = self.append(content, target) {
            self.release(content);
            return Err(e);
        }
        match self.create(dir, name.bytes(), KIND_SYMLINK, mode::SYMLINK_PERMISSIONS, owner, now_ns) {
            Ok(i) => {
                self.entry_mut(i).content = content;
                Ok(())
            }
            Err(e) => {
                self.release(content);
                Err(e)
            }
        }
    }

    fn create_dir_all(&mut self, path: &str, perm: Option<u32>, owner: Owner, now_ns: u64) -> Result<(), FsError> {
        // `create_dir_all("")` succeeds in Rust; the chmod then fails.
        let bytes = path.as_bytes();
        if bytes.contains(&0) {
            return Err(FsError::InvalidPath);
        }
        if bytes.len() >= MAX_PATH_LEN {
            return Err(FsError::PathTooLong);
        }
        self.create_dirs(bytes, owner, now_ns)?;
        if let Some(perm) = perm {
            let i = self.resolve(path, true)?;
            self.chmod(i, perm, now_ns);
        }
        Ok(())
    }

    fn remove_dir_at(&mut self, path: &str, recursive: bool, now_ns: u64) -> Result<(), FsError> {
        self.rmdir_path(path, recursive, now_ns)
    }

    fn copy_at(&mut self, src: &str, dst: &str, parents: MissingParents, now_ns: u64) -> Result<(), FsError> {
        // The source is opened first (and checked before parents are made).
        let from = self.resolve(src, true)?;
        if self.kind(from) != KIND_FILE {
            return Err(FsError::NotRegularFile);
        }
        check(dst)?;
        // A copy to a new name takes one more entry.
        let made = self.make_parents(dst, parents, 1, now_ns)?;
        let result = self.copy_file(from, dst, now_ns);
        if result.is_err() {
            self.undo_parents(made, now_ns);
        }
        result
    }

    fn rename_at(&mut self, src: &str, dst: &str, parents: MissingParents, now_ns: u64) -> Result<(), FsError> {
        if parents == MissingParents::Create {
            // The source must be there before anything is made.
            self.resolve(src, false)?;
            check(dst)?;
        }
        let made = self.make_parents(dst, parents, 0, now_ns)?;
        let result = self.rename_paths(src, dst, now_ns);
        if result.is_err() {
            self.undo_parents(made, now_ns);
        }
        result
    }

    fn set_attrs(&mut self, path: &str, follow: bool, attrs: &SetAttrs, now_ns: u64) -> Result<(), AttrError> {
        self.set_path_attrs(path, follow, attrs, now_ns)
    }

    fn open(&mut self, path: &str, options: &OpenOptions, now_ns: u64) -> Result<RamfsFile, FsError> {
        if self.usage.open_files >= MAX_OPEN_FILES {
            return Err(FsError::TooManyOpen);
        }
        let entry = self.open_entry(path, options, now_ns)?;
        self.open_count(entry)?;
        Ok(RamfsFile { entry, read: options.read, write: options.write, append: options.append, cursor: Cursor::NONE })
    }

    fn file_read(&mut self, f: &mut RamfsFile, offset: u64, max: usize, now_ns: u64) -> Result<&[u8], FsError> {
        if !f.read {
            return Err(FsError::BadHandle);
        }
        match self.kind(f.entry) {
            KIND_DIR => return Err(FsError::IsADirectory),
            KIND_FILE => {}
            _ => return Err(FsError::InvalidArgument),
        }
        if offset > MAX_FILE_SIZE {
            return Err(FsError::InvalidArgument);
        }
        if max > 0 {
            self.accessed(f.entry, now_ns);
        }
        let content = self.entry(f.entry).content;
        let len = self.content_len(content);
        if offset >= len || max == 0 {
            return Ok(&[]);
        }
        let block = self.seek(content, &mut f.cursor, offset);
        let start = (offset - f.cursor.base) as usize;
        let want = max.min((len - offset) as usize);
        // As far as the chain runs through adjacent blocks.
        let (mut last, mut avail) = (block, BLOCK_SIZE - start);
        while avail < want && self.next[last as usize] == last + 1 {
            last += 1;
            avail += BLOCK_SIZE;
        }
        let base = block as usize * BLOCK_SIZE + start;
        Ok(&self.blocks[base..base + avail.min(want)])
    }

    fn file_write(&mut self, f: &mut RamfsFile, offset: u64, data: &[u8], now_ns: u64) -> Result<u64, FsError> {
        if !f.write && !f.append {
            return Err(FsError::BadHandle);
        }
        if self.kind(f.entry) != KIND_FILE {
            return Err(FsError::BadHandle);
        }
        let offset = if f.append { self.content_len(self.entry(f.entry).content) } else { offset };
        if offset > MAX_FILE_SIZE {
            return Err(FsError::InvalidArgument);
        }
        if data.is_empty() {
            return Ok(offset);
        }
        self.write_content(f.entry, &mut f.cursor, offset, data)?;
        self.touch(f.entry, TOUCH_MC, now_ns);
        Ok(offset + data.len() as u64)
    }

    fn file_stat(&mut self, f: &RamfsFile) -> Metadata {
        self.metadata(f.entry)
    }

    fn file_set_len(&mut self, f: &mut RamfsFile, size: u64, now_ns: u64) -> Result<(), FsError> {
        if (!f.write && !f.append) || self.kind(f.entry) != KIND_FILE {
            return Err(FsError::InvalidArgument);
        }
        self.set_len(f.entry, size, now_ns)
    }

    fn file_set_attrs(&mut self, f: &mut RamfsFile, a: &SetAttrs, now_ns: u64) -> Result<(), AttrError> {
        if let Some(size) = a.size {
            self.file_set_len(f, size, now_ns).map_err(|error| AttrError { step: AttrStep::SetLen, error })?;
        }
        if let Some(perm) = a.mode {
            self.chmod(f.entry, perm, now_ns);
        }
        if a.uid.is_some() || a.gid.is_some() {
            self.chown(f.entry, a.uid, a.gid, now_ns);
        }
        if a.atime.is_some() || a.mtime.is_some() {
            self.set_unix_times(f.entry, a.atime, a.mtime, now_ns);
        }
        Ok(())
    }

    fn close(&mut self, f: RamfsFile) {
        // An unlinked file's times no longer matter: any stamp will do.
        self.close_entry(f.entry, 0);
    }

    fn open_dir(&mut self, path: &str) -> Result<RamfsDir, FsError> {
        if self.usage.open_files >= MAX_OPEN_FILES {
            return Err(FsError::TooManyOpen);
        }
        let i = self.resolve(path, true)?;
        if self.kind(i) != KIND_DIR {
            return Err(FsError::NotADirectory);
        }
        self.open_count(i)?;
        Ok(RamfsDir { entry: i, before: u64::MAX })
    }

    fn read_dir(
        &mut self,
        d: &mut RamfsDir,
        limit: usize,
        visit: &mut dyn FnMut(&str, &Metadata),
    ) -> Result<usize, FsError> {
        let mut n = 0;
        for child in self.children(d.entry) {
            if n == limit {
                break;
            }
            let e = self.entry(child);
            if e.seq >= d.before {
                continue;
            }
            d.before = e.seq;
            let name = core::str::from_utf8(e.name()).unwrap_or("");
            visit(name, &self.metadata(child));
            n += 1;
        }
        Ok(n)
    }

    fn dir_stat(&mut self, d: &RamfsDir) -> Metadata {
        self.metadata(d.entry)
    }

    fn close_dir(&mut self, d: RamfsDir) {
        self.close_entry(d.entry, 0);
    }
}

#[cfg(test)]
mod tests;
