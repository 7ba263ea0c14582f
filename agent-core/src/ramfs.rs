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
//! - An **entry** is a file or a directory: kind, permissions, mtime, its
//!   name inline, and links to its parent, first child and next sibling
//!   (directories are linked lists of children).
//! - A **content** is a file's bytes: a chain of blocks, its length and a
//!   reference count. Files, staged writes and open reads hold references,
//!   so a copy shares its source's content, a read keeps a snapshot even if
//!   the file is replaced or removed, and a write becomes visible by
//!   swapping one reference.
//! - **Blocks** hold data, chained by the `next` table (like a FAT). Any
//!   free block serves any file, so a filesystem that was filled and
//!   emptied can store the same data again: fragmentation cannot strand
//!   space. Freeing a chain is O(1) (the content records its last block).
//!
//! Every table is used from a high-water mark first, then from its free
//! list, so `new` initializes nothing; nothing is ever allocated after it.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use crate::fs::{EntryKind, Filesystem, FsError, Metadata, Mtime, mode};
use crate::path::{self, MAX_NAME_LEN, MAX_PATH_LEN};

/// Bytes per data block. A file uses whole blocks; 4 KiB keeps the waste
/// of small files low and the block table at 0.1% of the arena.
pub const BLOCK_SIZE: usize = 4096;

/// The most entries (files and directories, the root included) a ramfs
/// holds, whatever its size: it bounds the entry table to ~1.1 MiB.
pub const MAX_ENTRIES: usize = 4096;

/// Arena bytes per entry when the entry count is derived from the arena
/// size (small arenas get proportionally fewer entries).
pub const ARENA_BYTES_PER_ENTRY: usize = 8 * 1024;

/// The fewest entries a ramfs is made with.
pub const MIN_ENTRIES: usize = 16;

/// Contents that can be open beyond one per entry: staged writes and
/// snapshots held by reads (the agent's session bound).
pub const MAX_OPEN: usize = crate::MAX_SESSIONS;

/// Bytes of table space per entry (file or directory), name included.
pub const ENTRY_BYTES: usize = size_of::<Entry>();

/// Bytes of table space per file content (on top of its blocks, and of the
/// unused tail of its last block).
pub const CONTENT_BYTES: usize = size_of::<Content>();

const NONE: u32 = u32::MAX;
const ROOT: u32 = 0;

const KIND_FREE: u8 = 0;
const KIND_FILE: u8 = 1;
const KIND_DIR: u8 = 2;

/// One file or directory. 288 bytes, the per-entry overhead.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Clone, Copy)]
#[repr(C)]
struct Entry {
    kind: u8,
    name_len: u8,
    _pad: [u8; 2],
    /// Permission bits (no type bits).
    perm: u32,
    parent: u32,
    first_child: u32,
    /// Next sibling; the free-list link of a free entry.
    next_sibling: u32,
    /// The file's content (`NONE`: empty).
    content: u32,
    /// Monotonic ns of the last modification.
    mtime_ns: u64,
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
    _pad: u32,
    len: u64,
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

/// Space in use and in total, for accounting checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    /// Data blocks in use (contents and staged paths).
    pub blocks_used: usize,
    /// Data blocks in the arena.
    pub blocks_total: usize,
    /// Entries in use, the root included.
    pub entries_used: usize,
    /// Entry table size.
    pub entries_total: usize,
    /// Contents in use (file contents, staged writes, read snapshots).
    pub contents_used: usize,
}

/// Why an arena cannot hold a ramfs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArenaTooSmall {
    /// Bytes the tables need at least.
    pub needed: usize,
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
    usage: Usage,
}

impl<'a> Ramfs<'a> {
    /// A ramfs over `arena`, with an entry count derived from its size
    /// (one per [`ARENA_BYTES_PER_ENTRY`], between [`MIN_ENTRIES`] and
    /// [`MAX_ENTRIES`]). The root directory's mtime is `now_ns`.
    pub fn new(arena: &'a mut [u8], now_ns: u64) -> Result<Self, ArenaTooSmall> {
        let entries = (arena.len() / ARENA_BYTES_PER_ENTRY).clamp(MIN_ENTRIES, MAX_ENTRIES);
        Ramfs::with_entries(arena, entries, now_ns)
    }

    /// A ramfs over `arena` with exactly `entries` entries (at most
    /// [`MAX_ENTRIES`]).
    pub fn with_entries(arena: &'a mut [u8], entries: usize, now_ns: u64) -> Result<Self, ArenaTooSmall> {
        let entries = entries.clamp(1, MAX_ENTRIES);
        let contents = entries + MAX_OPEN;
        let tables = entries * size_of::<Entry>() + contents * size_of::<Content>();
        let too_small = ArenaTooSmall { needed: tables + 8 + 2 * (BLOCK_SIZE + 4) };
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
            usage: Usage {
                blocks_used: 0,
                blocks_total: block_count,
                entries_used: 0,
                entries_total: entries,
                contents_used: 0,
            },
        };
        let root = fs.alloc_entry().map_err(|_| too_small)?;
        debug_assert_eq!(root, ROOT);
        fs.entries[ROOT as usize] = Entry::new(KIND_DIR, "", ROOT, mode::DEFAULT_DIR, now_ns);
        Ok(fs)
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

    fn children(&self, dir: u32) -> Children<'_, 'a> {
        Children { fs: self, next: self.entry(dir).first_child }
    }

    fn lookup(&self, dir: u32, name: &str) -> Option<u32> {
        self.children(dir).find(|&c| self.entry(c).name() == name.as_bytes())
    }

    /// The entry at a normalized path.
    fn resolve(&self, path: &str) -> Result<u32, FsError> {
        let mut at = ROOT;
        for name in path::components(path) {
            if self.entry(at).kind != KIND_DIR {
                return Err(FsError::NotADirectory);
            }
            at = self.lookup(at, name).ok_or(FsError::NotFound)?;
        }
        Ok(at)
    }

    /// Creates directory `path` and its missing parents (`mkdir`); returns
    /// the directory.
    fn make_dirs(&mut self, path: &str, now_ns: u64) -> Result<u32, FsError> {
        let mut at = ROOT;
        let mut components = path::components(path).peekable();
        while let Some(name) = components.next() {
            at = match self.lookup(at, name) {
                Some(i) if self.entry(i).kind == KIND_DIR => i,
                Some(_) if components.peek().is_none() => return Err(FsError::AlreadyExists),
                Some(_) => return Err(FsError::NotADirectory),
                None => self.create(at, name, KIND_DIR, mode::DEFAULT_DIR, now_ns)?,
            };
        }
        Ok(at)
    }

    /// The parent directory of a normalized path, created with its own
    /// missing parents as `mkdir` would, and the final name. Parents are
    /// made first, as the reference agent does, even if the operation
    /// then fails.
    fn make_parent<'p>(&mut self, path: &'p str, now_ns: u64) -> Result<(u32, &'p str), FsError> {
        let (parent, name) = path::split(path).ok_or(FsError::Busy)?;
        Ok((self.make_dirs(parent, now_ns)?, name))
    }

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

    /// Creates an entry named `name` in directory `dir`.
    fn create(&mut self, dir: u32, name: &str, kind: u8, perm: u32, now_ns: u64) -> Result<u32, FsError> {
        let i = self.alloc_entry()?;
        let first = self.entry(dir).first_child;
        *self.entry_mut(i) = Entry { next_sibling: first, ..Entry::new(kind, name, dir, perm, now_ns) };
        let d = self.entry_mut(dir);
        d.first_child = i;
        d.mtime_ns = now_ns;
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
        self.entry_mut(parent).mtime_ns = now_ns;
    }

    /// Frees an unlinked entry with no children.
    fn free_entry(&mut self, i: u32) {
        let content = self.entry(i).content;
        self.release(content);
        *self.entry_mut(i) = Entry::free(self.free_entry);
        self.free_entry = i;
        self.usage.entries_used -= 1;
    }

    /// Unlinks and frees `top` and everything below it, without recursion:
    /// descend along first children, free a leaf (always its parent's
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
            self.free_entry(at);
            if at == top {
                return;
            }
            self.entry_mut(parent).first_child = after;
            at = parent;
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
        self.contents[i as usize] = Content { first: NONE, last: NONE, refs: 1, _pad: 0, len: 0 };
        self.usage.contents_used += 1;
        Ok(i)
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
        let (first, last, blocks) = (c.first, c.last, c.len.div_ceil(BLOCK_SIZE as u64) as usize);
        *c = Content { first: self.free_content, last: NONE, refs: 0, _pad: 0, len: 0 };
        self.free_content = content;
        self.usage.contents_used -= 1;
        self.free_chain(first, last, blocks);
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

    /// Appends `data` to a content, taking blocks as needed. On `NoSpace`
    /// the content keeps what fitted; the caller drops it.
    fn append(&mut self, content: u32, mut data: &[u8]) -> Result<(), FsError> {
        while !data.is_empty() {
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
            let n = data.len().min(BLOCK_SIZE - used);
            self.block_mut(block)[used..used + n].copy_from_slice(&data[..n]);
            self.contents[content as usize].len += n as u64;
            data = &data[n..];
        }
        Ok(())
    }

    fn metadata(&self, i: u32) -> Metadata {
        let e = self.entry(i);
        let (kind, type_bits, size) = match e.kind {
            KIND_DIR => (EntryKind::Dir, mode::DIR, 0),
            _ => (EntryKind::File, mode::FILE, self.content_len(e.content)),
        };
        Metadata { kind, size, mode: type_bits | e.perm, modified: Mtime::Monotonic(e.mtime_ns) }
    }

    fn content_len(&self, content: u32) -> u64 {
        if content == NONE { 0 } else { self.contents[content as usize].len }
    }

    /// The target path a writer stored at `begin_write`.
    fn writer_path(&self, w: &RamfsWriter) -> &str {
        let bytes = &self.block(w.path_block)[..usize::from(w.path_len)];
        core::str::from_utf8(bytes).unwrap_or("/")
    }
}

impl Entry {
    fn free(next: u32) -> Entry {
        Entry {
            kind: KIND_FREE,
            name_len: 0,
            _pad: [0; 2],
            perm: 0,
            parent: NONE,
            first_child: NONE,
            next_sibling: next,
            content: NONE,
            mtime_ns: 0,
            name: [0; MAX_NAME_LEN + 1],
        }
    }

    /// A new entry; `name` is at most [`MAX_NAME_LEN`] bytes (checked by
    /// path normalization).
    fn new(kind: u8, name: &str, parent: u32, perm: u32, now_ns: u64) -> Entry {
        let mut e = Entry::free(NONE);
        let n = name.len().min(MAX_NAME_LEN);
        e.name[..n].copy_from_slice(&name.as_bytes()[..n]);
        e.name_len = n as u8;
        e.kind = kind;
        e.perm = perm & mode::PERMISSIONS;
        e.parent = parent;
        e.mtime_ns = now_ns;
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

    fn stat(&mut self, path: &str) -> Result<Metadata, FsError> {
        self.resolve(path).map(|i| self.metadata(i))
    }

    fn list(&mut self, path: &str, visit: &mut dyn FnMut(&str, &Metadata)) -> Result<(), FsError> {
        let dir = self.resolve(path)?;
        if self.entry(dir).kind != KIND_DIR {
            return Err(FsError::NotADirectory);
        }
        for child in self.children(dir) {
            let name = core::str::from_utf8(self.entry(child).name()).unwrap_or("");
            visit(name, &self.metadata(child));
        }
        Ok(())
    }

    fn mkdir(&mut self, path: &str, now_ns: u64) -> Result<(), FsError> {
        self.make_dirs(path, now_ns).map(|_| ())
    }

    fn remove(&mut self, path: &str, now_ns: u64) -> Result<(), FsError> {
        let i = self.resolve(path)?;
        if self.entry(i).kind == KIND_DIR {
            return Err(FsError::IsADirectory);
        }
        self.unlink(i, now_ns);
        self.free_entry(i);
        Ok(())
    }

    fn remove_dir(&mut self, path: &str, now_ns: u64) -> Result<(), FsError> {
        let i = self.resolve(path)?;
        if self.entry(i).kind != KIND_DIR {
            return Err(FsError::NotADirectory);
        }
        if i == ROOT {
            return Err(FsError::Busy);
        }
        self.remove_tree(i, now_ns);
        Ok(())
    }

    fn copy(&mut self, src: &str, dst: &str, now_ns: u64) -> Result<(), FsError> {
        let parent = if dst == "/" { None } else { Some(self.make_parent(dst, now_ns)?) };
        let from = self.resolve(src)?;
        let Some((dir, name)) = parent.filter(|_| self.entry(from).kind != KIND_DIR) else {
            return Err(FsError::IsADirectory);
        };
        let (content, perm) = (self.entry(from).content, self.entry(from).perm);
        let to = match self.lookup(dir, name) {
            Some(i) if self.entry(i).kind == KIND_DIR => return Err(FsError::IsADirectory),
            Some(i) => i,
            None => self.create(dir, name, KIND_FILE, perm, now_ns)?,
        };
        // Contents are immutable once committed: the copy shares them.
        self.retain(content);
        let old = core::mem::replace(&mut self.entry_mut(to).content, content);
        self.release(old);
        let e = self.entry_mut(to);
        e.perm = perm;
        e.mtime_ns = now_ns;
        Ok(())
    }

    fn rename(&mut self, src: &str, dst: &str, now_ns: u64) -> Result<(), FsError> {
        let parent = if dst == "/" { None } else { Some(self.make_parent(dst, now_ns)?) };
        let from = self.resolve(src)?;
        if from == ROOT {
            return Err(FsError::Busy);
        }
        if src == dst {
            return Ok(());
        }
        // As rename(2): into itself is EINVAL, onto an ancestor ENOTEMPTY.
        if path::is_within(dst, src) {
            return Err(FsError::InvalidArgument);
        }
        if path::is_within(src, dst) {
            return Err(FsError::DirectoryNotEmpty);
        }
        let from_dir = self.entry(from).kind == KIND_DIR;
        // `dst == "/"` was refused above: every path is within the root.
        let (dir, name) = parent.ok_or(FsError::Busy)?;
        if let Some(to) = self.lookup(dir, name) {
            match (from_dir, self.entry(to).kind == KIND_DIR) {
                (false, true) => return Err(FsError::IsADirectory),
                (true, false) => return Err(FsError::NotADirectory),
                (true, true) if self.entry(to).first_child != NONE => return Err(FsError::DirectoryNotEmpty),
                _ => {}
            }
            self.unlink(to, now_ns);
            self.free_entry(to);
        }
        self.unlink(from, now_ns);
        let first = self.entry(dir).first_child;
        let moved = Entry::new(self.entry(from).kind, name, dir, 0, 0);
        let e = self.entry_mut(from);
        e.name = moved.name;
        e.name_len = moved.name_len;
        e.parent = dir;
        e.next_sibling = first;
        let d = self.entry_mut(dir);
        d.first_child = from;
        d.mtime_ns = now_ns;
        Ok(())
    }

    fn open_read(&mut self, path: &str) -> Result<(RamfsReader, u64), FsError> {
        let i = self.resolve(path)?;
        if self.entry(i).kind == KIND_DIR {
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
        // are fine: the agent creates them at the commit.
        match self.resolve(path) {
            Ok(i) if self.entry(i).kind == KIND_DIR => return Err(FsError::IsADirectory),
            Ok(_) | Err(FsError::NotFound) => {}
            Err(e) => return Err(e),
        }
        debug_assert!(path.len() <= MAX_PATH_LEN && MAX_PATH_LEN <= BLOCK_SIZE);
        let content = self.alloc_content()?;
        let path_block = match self.alloc_block() {
            Ok(b) => b,
            Err(e) => {
                self.release(content);
                return Err(e);
            }
        };
        let n = path.len().min(BLOCK_SIZE);
        self.block_mut(path_block)[..n].copy_from_slice(&path.as_bytes()[..n]);
        Ok(RamfsWriter { content, path_block, path_len: n as u16 })
    }

    fn write(&mut self, w: &mut RamfsWriter, data: &[u8]) -> Result<(), FsError> {
        self.append(w.content, data)
    }

    fn commit_write(&mut self, w: RamfsWriter, perm: Option<u32>, now_ns: u64) -> Result<(), FsError> {
        let mut target = heapless::String::<MAX_PATH_LEN>::new();
        // The stored path fits: it was a normalized path of at most MAX_PATH_LEN.
        let _ = target.push_str(self.writer_path(&w));
        self.free_chain(w.path_block, w.path_block, 1);
        let result = (|| {
            let (dir, name) = self.make_parent(&target, now_ns)?;
            let file = match self.lookup(dir, name) {
                Some(i) if self.entry(i).kind == KIND_DIR => return Err(FsError::IsADirectory),
                Some(i) => i,
                None => self.create(dir, name, KIND_FILE, perm.unwrap_or(mode::DEFAULT_FILE), now_ns)?,
            };
            let content = if self.content_len(w.content) == 0 { NONE } else { w.content };
            if content != NONE {
                self.retain(content);
            }
            let old = core::mem::replace(&mut self.entry_mut(file).content, content);
            self.release(old);
            let e = self.entry_mut(file);
            if let Some(perm) = perm {
                e.perm = perm & mode::PERMISSIONS;
            }
            e.mtime_ns = now_ns;
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
}
