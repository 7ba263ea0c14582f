//! The ramfs's own rules and bounds; Linux conformance of everything else
//! is checked against a real directory in `tests/tests/agent_conformance.rs`.

extern crate std;

use std::string::{String, ToString};
use std::vec::Vec;
use std::{format, vec};

use super::*;
use crate::fs::{AttrError, AttrStep, MissingParents, OpenOptions, Owner, SetAttrs};

fn arena(bytes: usize) -> &'static mut [u8] {
    std::boxed::Box::leak(vec![0u8; bytes].into_boxed_slice())
}

fn fs() -> Ramfs<'static> {
    Ramfs::new(arena(4 << 20), 0).unwrap()
}

fn write(fs: &mut Ramfs<'_>, path: &str, data: &[u8]) {
    let mut w = fs.begin_write(path).unwrap();
    fs.write(&mut w, data).unwrap();
    fs.commit_write(w, None, 1).unwrap();
}

fn read(fs: &mut Ramfs<'_>, path: &str) -> Result<Vec<u8>, FsError> {
    let (mut r, size) = fs.open_read(path)?;
    let mut out = Vec::new();
    while (out.len() as u64) < size {
        let chunk = fs.read_at(&mut r, out.len() as u64, 1 << 20)?;
        out.extend_from_slice(chunk);
    }
    fs.close_read(r);
    Ok(out)
}

fn file_read(fs: &mut Ramfs<'_>, f: &mut RamfsFile, offset: u64, max: usize) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let chunk = fs.file_read(f, offset + out.len() as u64, max - out.len(), 1).unwrap();
        if chunk.is_empty() {
            return out;
        }
        out.extend_from_slice(chunk);
    }
}

const RW: OpenOptions = OpenOptions {
    read: true,
    write: true,
    append: false,
    create: true,
    truncate: false,
    create_new: false,
    mode: None,
    owner: None,
};

#[test]
fn paths_resolve_per_component_not_lexically() {
    let mut fs = fs();
    fs.mkdir("/a", 0).unwrap();
    write(&mut fs, "/file", b"x");
    assert_eq!(fs.stat("/file/"), Err(FsError::NotADirectory));
    assert_eq!(fs.stat("/file/."), Err(FsError::NotADirectory));
    assert_eq!(fs.stat("/missing/../a").unwrap_err(), FsError::NotFound);
    assert_eq!(fs.stat("/a/../file").unwrap().kind, EntryKind::File);
    assert_eq!(fs.stat("a//./").unwrap().kind, EntryKind::Dir, "relative paths start at /");
    assert_eq!(fs.stat("/..").unwrap().kind, EntryKind::Dir, "/.. is /");
    assert_eq!(fs.remove_dir_at("/a/.", false, 0), Err(FsError::InvalidArgument));
    assert_eq!(fs.remove_dir_at("/a/..", false, 0), Err(FsError::DirectoryNotEmpty));
    assert_eq!(fs.remove_dir_at("/", false, 0), Err(FsError::Busy));
    assert_eq!(fs.remove_dir_at("/a/.", true, 0), Err(FsError::InvalidArgument));
    assert!(fs.stat("/a").is_ok(), "a failed rmdir of /a/. leaves /a");
    assert_eq!(fs.remove("/a/.", 0), Err(FsError::IsADirectory));
    assert_eq!(fs.stat(""), Err(FsError::NotFound));
    assert_eq!(fs.stat("/a\0"), Err(FsError::InvalidPath));
}

#[test]
fn symlinks_follow_up_to_the_bound_then_loop() {
    let mut fs = fs();
    fs.mkdir("/d", 0).unwrap();
    write(&mut fs, "/d/f", b"data");
    // l0 -> d, l1 -> l0, ... : resolving l{n} follows n + 1 links.
    fs.symlink("d", "/l0", Owner::ROOT, 0).unwrap();
    for n in 1..=MAX_SYMLINK_FOLLOWS {
        fs.symlink(&format!("l{}", n - 1), &format!("/l{n}"), Owner::ROOT, 0).unwrap();
    }
    let last_ok = format!("/l{}/f", MAX_SYMLINK_FOLLOWS - 1);
    assert_eq!(read(&mut fs, &last_ok).unwrap(), b"data", "{} links are followed", MAX_SYMLINK_FOLLOWS);
    let one_more = format!("/l{}/f", MAX_SYMLINK_FOLLOWS);
    assert_eq!(read(&mut fs, &one_more), Err(FsError::Loop));
    // Final component: followed or not per call.
    let link = format!("/l{}", MAX_SYMLINK_FOLLOWS);
    assert_eq!(fs.stat_at(&link, true), Err(FsError::Loop));
    assert_eq!(fs.stat_at(&link, false).unwrap().kind, EntryKind::Symlink);
    fs.symlink("self", "/self", Owner::ROOT, 0).unwrap();
    assert_eq!(fs.stat_at("/self", true), Err(FsError::Loop));
    assert_eq!(fs.stat_at("/self/", false), Err(FsError::Loop), "a trailing / follows");
}

#[test]
fn symlinks_report_their_target() {
    let mut fs = fs();
    fs.symlink("../x/y/", "/l", Owner { uid: 7, gid: 8 }, 0).unwrap();
    let m = fs.stat("/l").unwrap();
    assert_eq!((m.kind, m.size, m.mode, m.uid, m.gid), (EntryKind::Symlink, 7, 0o120_777, 7, 8));
    let mut out = PathBuf::new();
    fs.read_link("/l", &mut out).unwrap();
    assert_eq!(out.as_str(), "../x/y/");
    assert_eq!(fs.read_link("/", &mut out), Err(FsError::InvalidArgument));
    assert_eq!(fs.symlink("", "/e", Owner::ROOT, 0), Err(FsError::NotFound));
    assert_eq!(fs.symlink("t", "/l", Owner::ROOT, 0), Err(FsError::AlreadyExists));
    let longest = "t".repeat(MAX_PATH_LEN - 1);
    fs.symlink(&longest, "/long", Owner::ROOT, 0).unwrap();
    fs.read_link("/long", &mut out).unwrap();
    assert_eq!(out.len(), MAX_PATH_LEN - 1);
    assert_eq!(fs.symlink(&(longest + "t"), "/longer", Owner::ROOT, 0), Err(FsError::PathTooLong));
    fs.mkdir("/x", 0).unwrap();
    fs.symlink("/x", "/to-x", Owner::ROOT, 0).unwrap();
    fs.canonicalize("/to-x/../to-x/.", &mut out).unwrap();
    assert_eq!(out.as_str(), "/x");
}

#[test]
fn names_and_paths_are_bounded_as_on_linux() {
    let mut fs = fs();
    let name = "n".repeat(MAX_NAME_LEN);
    fs.create_dir_all(&format!("/{name}"), None, Owner::ROOT, 0).unwrap();
    assert_eq!(fs.stat(&format!("/{name}n")), Err(FsError::NameTooLong));
    assert_eq!(fs.create_dir_all(&format!("/{name}n"), None, Owner::ROOT, 0), Err(FsError::NameTooLong));
    // The longest path: MAX_PATH_LEN - 1 bytes (PATH_MAX counts the NUL).
    let deep = format!("/{}", "a/".repeat((MAX_PATH_LEN - 2) / 2));
    assert_eq!(deep.len(), MAX_PATH_LEN - 1);
    assert_eq!(fs.stat(&deep), Err(FsError::NotFound));
    assert_eq!(fs.stat(&format!("{deep}a")), Err(FsError::PathTooLong));
}

#[test]
fn errors_print_as_std_io_error_does() {
    assert_eq!(FsError::NotFound.to_string(), "No such file or directory (os error 2)");
    assert_eq!(FsError::Loop.to_string(), "Too many levels of symbolic links (os error 40)");
    assert_eq!(FsError::TooManyEntries.to_string(), "No space left on device (os error 28)");
    assert_eq!(FsError::InvalidPath.to_string(), "file name contained an unexpected NUL byte");
    assert_eq!(FsError::InvalidPath.raw_os_error(), None);
    for e in [FsError::NotFound, FsError::IsADirectory, FsError::Loop, FsError::BadHandle] {
        assert_eq!(FsError::from_errno(e.errno()), Some(e));
    }
    let e = AttrError { step: AttrStep::Chmod, error: FsError::NotFound };
    assert_eq!(e.to_string(), "chmod: No such file or directory (os error 2)");
    let e = AttrError { step: AttrStep::LstatBeforeChmod, error: FsError::SymlinkChmod };
    assert_eq!(e.to_string(), "chmod on symlink without following is not supported");
    // The seed-era agent's texts stay.
    assert_eq!(FsError::NotFound.as_str(), "not found");
}

#[test]
fn handle_writes_are_visible_at_once_and_path_reads_keep_their_snapshot() {
    let mut fs = fs();
    write(&mut fs, "/f", b"hello world");
    let (mut snapshot, size) = fs.open_read("/f").unwrap();
    let mut w = fs.open("/f", &RW, 1).unwrap();
    let mut r = fs.open("/f", &OpenOptions { read: true, ..OpenOptions::default() }, 1).unwrap();
    assert_eq!(fs.file_write(&mut w, 6, b"WORLD!", 2), Ok(12));
    assert_eq!(file_read(&mut fs, &mut r, 0, 100), b"hello WORLD!");
    assert_eq!(read(&mut fs, "/f").unwrap(), b"hello WORLD!");
    let mut old = Vec::new();
    while (old.len() as u64) < size {
        old.extend_from_slice(fs.read_at(&mut snapshot, old.len() as u64, 100).unwrap());
    }
    assert_eq!(old, b"hello world", "the path read opened before keeps its content");
    fs.close_read(snapshot);
    // Past the end: zeros up to the offset.
    assert_eq!(fs.file_write(&mut w, 14, b"!", 3), Ok(15));
    assert_eq!(file_read(&mut fs, &mut r, 10, 100), b"D!\0\0!");
    assert_eq!(fs.file_write(&mut r, 0, b"x", 3), Err(FsError::BadHandle), "read-only handle");
    assert_eq!(fs.file_read(&mut w, 0, 1, 3).map(<[u8]>::to_vec), Ok(b"h".to_vec()));
    fs.close(w);
    fs.close(r);
    assert_eq!(fs.usage().open_files, 0);
}

#[test]
fn big_handle_writes_cross_blocks_and_set_len_truncates_and_extends() {
    let mut fs = fs();
    let data: Vec<u8> = (0..3 * BLOCK_SIZE + 100).map(|i| (i % 251) as u8).collect();
    let mut f = fs.open("/big", &RW, 0).unwrap();
    // Written out of order, in odd pieces.
    for (start, end) in [(5000, 9000), (0, 5000), (9000, data.len())] {
        fs.file_write(&mut f, start as u64, &data[start..end], 0).unwrap();
    }
    assert_eq!(file_read(&mut fs, &mut f, 0, data.len() + 10), data);
    let blocks = fs.usage().blocks_used;
    fs.file_set_len(&mut f, 10, 0).unwrap();
    assert_eq!(fs.usage().blocks_used, blocks - 3, "the tail blocks are freed");
    fs.file_set_len(&mut f, BLOCK_SIZE as u64 + 1, 0).unwrap();
    let grown = file_read(&mut fs, &mut f, 0, 2 * BLOCK_SIZE);
    assert_eq!(&grown[..10], &data[..10]);
    assert!(grown[10..].iter().all(|&b| b == 0) && grown.len() == BLOCK_SIZE + 1, "extended with zeros");
    fs.file_set_len(&mut f, 0, 0).unwrap();
    assert_eq!(fs.file_stat(&f).size, 0);
    let ro = fs.open("/big", &OpenOptions { read: true, ..OpenOptions::default() }, 0).unwrap();
    let mut ro = ro;
    assert_eq!(fs.file_set_len(&mut ro, 5, 0), Err(FsError::InvalidArgument), "set_len needs write access");
    fs.close(ro);
    fs.close(f);
}

#[test]
fn a_copy_shares_content_until_a_handle_writes() {
    let mut fs = fs();
    write(&mut fs, "/a", &[7; 5000]);
    fs.copy_at("/a", "/b", MissingParents::Fail, 0).unwrap();
    let blocks = fs.usage().blocks_used;
    let mut f = fs.open("/b", &RW, 0).unwrap();
    fs.file_write(&mut f, 0, b"x", 0).unwrap();
    assert_eq!(fs.usage().blocks_used, blocks + 2, "copied on the first write");
    assert_eq!(read(&mut fs, "/a").unwrap(), [7; 5000], "the source is untouched");
    assert_eq!(read(&mut fs, "/b").unwrap()[..2], *b"x\x07");
    fs.close(f);
    // copy(a, a) empties a, as on Linux.
    fs.copy_at("/a", "/a", MissingParents::Fail, 0).unwrap();
    assert_eq!(fs.stat("/a").unwrap().size, 0);
}

#[test]
fn a_full_ramfs_refuses_a_handle_write_whole() {
    let mut fs = Ramfs::new(arena(64 * 1024 + 48 * ENTRY_BYTES), 0).unwrap();
    let mut f = fs.open("/f", &RW, 0).unwrap();
    let free = fs.capacity_bytes() as usize - fs.usage().blocks_used * BLOCK_SIZE;
    assert_eq!(fs.file_write(&mut f, 0, &vec![1; free + 1], 0), Err(FsError::NoSpace));
    assert_eq!(fs.file_stat(&f).size, 0, "nothing of a refused write is kept");
    assert_eq!(fs.file_write(&mut f, 0, &vec![1; free], 0), Ok(free as u64));
    assert_eq!(fs.file_set_len(&mut f, free as u64 + 1, 0), Err(FsError::NoSpace));
    fs.close(f);
}

#[test]
fn an_unlinked_open_file_lives_until_closed() {
    let mut fs = fs();
    let before = fs.usage();
    let mut f = fs.open("/f", &RW, 0).unwrap();
    fs.file_write(&mut f, 0, b"still here", 0).unwrap();
    fs.remove("/f", 0).unwrap();
    assert_eq!(fs.stat("/f"), Err(FsError::NotFound));
    assert_eq!(file_read(&mut fs, &mut f, 0, 100), b"still here");
    fs.file_write(&mut f, 10, b"!", 0).unwrap();
    assert_eq!(fs.file_stat(&f).size, 11);
    // A new file of the same name is another file.
    write(&mut fs, "/f", b"new");
    assert_eq!(file_read(&mut fs, &mut f, 0, 100), b"still here!");
    fs.remove("/f", 0).unwrap();
    fs.close(f);
    assert_eq!(fs.usage(), before, "everything is returned at the close");
    // A directory removed while open reads as empty.
    fs.create_dir_all("/d/e", None, Owner::ROOT, 0).unwrap();
    let mut d = fs.open_dir("/d").unwrap();
    fs.remove_dir_at("/d", true, 0).unwrap();
    assert_eq!(fs.read_dir(&mut d, 10, &mut |_, _| {}), Ok(0));
    fs.close_dir(d);
    assert_eq!(fs.usage(), before);
}

#[test]
fn open_files_are_bounded() {
    let mut fs = fs();
    write(&mut fs, "/f", b"");
    let ro = OpenOptions { read: true, ..OpenOptions::default() };
    let mut open = Vec::new();
    for _ in 0..MAX_OPEN_FILES {
        open.push(fs.open("/f", &ro, 0).unwrap());
    }
    assert_eq!(fs.open("/f", &ro, 0).err(), Some(FsError::TooManyOpen));
    assert_eq!(fs.open_dir("/").err(), Some(FsError::TooManyOpen));
    assert_eq!(fs.open("/new", &RW, 0).err(), Some(FsError::TooManyOpen));
    assert_eq!(fs.stat("/new"), Err(FsError::NotFound), "nothing is created when no file can be open");
    fs.close(open.pop().unwrap());
    let d = fs.open_dir("/").unwrap();
    fs.close_dir(d);
    for f in open {
        fs.close(f);
    }
    assert_eq!(fs.usage().open_files, 0);
}

#[test]
fn read_dir_batches_return_each_unchanged_entry_once() {
    let mut fs = fs();
    for i in 0..20 {
        write(&mut fs, &format!("/d/{i}"), b"");
    }
    let mut d = fs.open_dir("/d").unwrap();
    let mut seen: Vec<String> = Vec::new();
    assert_eq!(fs.read_dir(&mut d, 7, &mut |n, _| seen.push(n.to_string())), Ok(7));
    // Changes while open: one seen entry and one unseen one go, two come.
    fs.remove(&format!("/d/{}", seen[0]), 0).unwrap();
    let unseen = (0..20).map(|i| format!("{i}")).find(|n| !seen.contains(n)).unwrap();
    fs.remove(&format!("/d/{unseen}"), 0).unwrap();
    write(&mut fs, "/d/new1", b"");
    write(&mut fs, "/d/new2", b"");
    while fs.read_dir(&mut d, 3, &mut |n, _| seen.push(n.to_string())).unwrap() > 0 {}
    fs.close_dir(d);
    let mut unique = seen.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), seen.len(), "no entry twice: {seen:?}");
    for i in 0..20 {
        let name = format!("{i}");
        if name != unseen {
            assert!(seen.contains(&name), "{name} was there throughout");
        }
    }
    assert!(!seen.contains(&unseen));
    let dir = fs.stat("/d").unwrap();
    assert_eq!(dir.size, DIR_BASE_SIZE + 20 * DIR_ENTRY_SIZE, "tmpfs-like size: 20 entries now");
}

#[test]
fn times_are_fixed_when_the_change_happens() {
    let mut fs = fs();
    write(&mut fs, "/early", b"x"); // at monotonic 1 ns, before any clock sync
    assert_eq!(fs.stat("/early").unwrap().modified, Mtime::Monotonic(1));
    // Sync: monotonic 10 s is Unix 1_700_000_000 s.
    fs.set_wall_clock(10_000_000_000, 1_700_000_000_000_000_000);
    assert_eq!(fs.stat("/early").unwrap().modified, Mtime::Unix(1_699_999_990), "dated by the first sync");
    fs.mkdir("/later", 12_000_000_000).unwrap();
    assert_eq!(fs.stat("/later").unwrap().modified, Mtime::Unix(1_700_000_002));
    // A second sync, an hour off, re-dates nothing.
    fs.set_wall_clock(13_000_000_000, 1_700_003_600_000_000_000);
    assert_eq!(fs.stat("/early").unwrap().modified, Mtime::Unix(1_699_999_990));
    assert_eq!(fs.stat("/later").unwrap().modified, Mtime::Unix(1_700_000_002));
    let m = fs.stat("/").unwrap();
    assert_eq!(m.modified, Mtime::Unix(1_700_000_002), "the root changed when /later was made");
    fs.mkdir("/last", 14_000_000_000).unwrap();
    assert_eq!(fs.stat("/last").unwrap().changed, Mtime::Unix(1_700_003_601));
    // Explicit times, and ctime of the change.
    let attrs = SetAttrs { atime: Some(5), mtime: Some(-6), ..SetAttrs::default() };
    fs.set_attrs("/early", true, &attrs, 15_000_000_000).unwrap();
    let m = fs.stat("/early").unwrap();
    assert_eq!((m.accessed, m.modified, m.changed), (Mtime::Unix(5), Mtime::Unix(-6), Mtime::Unix(1_700_003_602)));
}

#[test]
fn set_attrs_apply_in_the_references_order() {
    let mut fs = fs();
    write(&mut fs, "/f", b"0123456789");
    fs.symlink("f", "/l", Owner::ROOT, 0).unwrap();
    let attrs = SetAttrs { size: Some(4), mode: Some(0o4755), uid: Some(1000), gid: Some(100), ..SetAttrs::default() };
    fs.set_attrs("/l", true, &attrs, 0).unwrap();
    let m = fs.stat("/f").unwrap();
    // chown after chmod drops setuid, as Linux does.
    assert_eq!((m.size, m.mode, m.uid, m.gid), (4, 0o100_755, 1000, 100));
    // Not following: the size still follows; a mode refuses the symlink.
    let err = fs.set_attrs("/l", false, &SetAttrs { size: Some(2), mode: Some(0o600), ..SetAttrs::default() }, 0);
    assert_eq!(err, Err(AttrError { step: AttrStep::LstatBeforeChmod, error: FsError::SymlinkChmod }));
    assert_eq!(fs.stat("/f").unwrap().size, 2, "steps before the failing one stay applied");
    fs.set_attrs("/l", false, &SetAttrs { uid: Some(5), mtime: Some(77), ..SetAttrs::default() }, 0).unwrap();
    assert_eq!((fs.stat("/l").unwrap().uid, fs.stat("/f").unwrap().uid), (5, 1000), "lchown");
    assert_eq!(fs.stat("/l").unwrap().modified, Mtime::Unix(77), "utimensat(AT_SYMLINK_NOFOLLOW)");
    assert_ne!(fs.stat("/f").unwrap().modified, Mtime::Unix(77));
    let err = fs.set_attrs("/missing", true, &SetAttrs { size: Some(1), ..SetAttrs::default() }, 0);
    assert_eq!(err.unwrap_err().to_string(), "open for truncate: No such file or directory (os error 2)");
}

#[test]
fn a_failed_copy_or_rename_leaves_nothing_behind() {
    let mut fs = fs();
    let before = fs.usage();
    // Missing source: checked before any parent is made.
    assert_eq!(fs.copy_at("/none", "/p/q/r", MissingParents::Create, 0), Err(FsError::NotFound));
    assert_eq!(fs.rename_at("/none", "/p/q/r", MissingParents::Create, 0), Err(FsError::NotFound));
    // Failing after the parents were made: they are removed again.
    fs.mkdir("/d", 0).unwrap();
    let with_d = fs.usage();
    assert_eq!(fs.rename_at("/d", "/d/x/y", MissingParents::Create, 0), Err(FsError::InvalidArgument));
    assert_eq!(fs.stat("/d/x"), Err(FsError::NotFound));
    assert_eq!(fs.usage(), with_d);
    write(&mut fs, "/f", b"x");
    fs.mkdir("/p/q/dir", 0).unwrap();
    fs.remove_dir("/p", 0).unwrap();
    // Seed dialect: parents made; current dialect: ENOENT.
    assert_eq!(fs.copy_at("/f", "/p/q/f", MissingParents::Fail, 0), Err(FsError::NotFound));
    fs.copy_at("/f", "/p/q/f", MissingParents::Create, 0).unwrap();
    assert_eq!(read(&mut fs, "/p/q/f").unwrap(), b"x");
    fs.rename_at("/p/q/f", "/r/s/f", MissingParents::Create, 0).unwrap();
    assert_eq!(fs.stat("/p/q/f"), Err(FsError::NotFound));
    fs.remove_dir("/p", 0).unwrap();
    fs.remove_dir("/r", 0).unwrap();
    fs.remove_dir("/d", 0).unwrap();
    fs.remove("/f", 0).unwrap();
    assert_eq!(fs.usage(), before);
}

#[test]
fn remove_dir_is_empty_only_or_recursive() {
    let mut fs = fs();
    write(&mut fs, "/d/e/f", b"x");
    assert_eq!(fs.remove_dir_at("/d", false, 0), Err(FsError::DirectoryNotEmpty));
    assert!(fs.stat("/d/e/f").is_ok());
    fs.symlink("d", "/l", Owner::ROOT, 0).unwrap();
    fs.remove_dir_at("/l", true, 0).unwrap();
    assert!(fs.stat("/d/e/f").is_ok(), "remove_dir_all of a symlink removes only the symlink");
    fs.remove_dir_at("/d", true, 0).unwrap();
    assert_eq!(fs.stat("/d"), Err(FsError::NotFound));
    assert_eq!(fs.remove_dir_at("/", true, 0), Err(FsError::Busy));
}

#[test]
fn open_follows_the_options_as_std_does() {
    let mut fs = fs();
    let none = OpenOptions::default();
    assert_eq!(fs.open("/f", &none, 0).err(), Some(FsError::InvalidArgument), "no access mode");
    let create_ro = OpenOptions { read: true, create: true, ..none };
    assert_eq!(fs.open("/f", &create_ro, 0).err(), Some(FsError::InvalidArgument));
    let new = OpenOptions { write: true, create_new: true, mode: Some(0o777), ..none };
    let f = fs.open("/f", &new, 0).unwrap();
    fs.close(f);
    assert_eq!(fs.stat("/f").unwrap().mode, 0o100_755, "the umask applies to a created file");
    assert_eq!(fs.open("/f", &new, 0).err(), Some(FsError::AlreadyExists));
    let append = OpenOptions { append: true, ..none };
    let mut a = fs.open("/f", &append, 0).unwrap();
    fs.file_write(&mut a, 100, b"ab", 0).unwrap();
    assert_eq!(fs.file_write(&mut a, 0, b"cd", 0), Ok(4), "append writes at the end");
    fs.close(a);
    let trunc = OpenOptions { write: true, truncate: true, ..none };
    let t = fs.open("/f", &trunc, 0).unwrap();
    assert_eq!(fs.file_stat(&t).size, 0);
    fs.close(t);
    assert_eq!(fs.open("/", &RW, 0).err(), Some(FsError::IsADirectory));
    assert_eq!(fs.open("/g/", &RW, 0).err(), Some(FsError::IsADirectory));
    let mut d = fs.open("/", &OpenOptions { read: true, ..none }, 0).unwrap();
    assert_eq!(fs.file_read(&mut d, 0, 1, 0).err(), Some(FsError::IsADirectory));
    fs.close(d);
    // A dangling symlink: open(O_CREAT) creates its target.
    fs.symlink("made", "/dangling", Owner::ROOT, 0).unwrap();
    let f = fs.open(
        "/dangling",
        &OpenOptions { write: true, create: true, owner: Some(Owner { uid: 9, gid: 9 }), ..none },
        0,
    );
    fs.close(f.unwrap());
    assert_eq!(fs.stat("/made").unwrap().uid, 9);
}

#[test]
fn the_standard_dirs_are_there_with_their_modes() {
    let mut fs = fs();
    fs.make_standard_dirs(0).unwrap();
    for (dir, perm) in STANDARD_DIRS {
        assert_eq!(fs.stat(dir).unwrap().mode, mode::DIR | perm, "{dir}");
    }
    assert_eq!(fs.stat("/tmp").unwrap().mode, 0o041_777);
    fs.make_standard_dirs(0).unwrap();
    let f = fs.open("/tmp/x", &RW, 0).unwrap();
    fs.close(f);
}

#[test]
fn real_path_resolves_what_exists_and_names_what_does_not() {
    let mut fs = fs();
    fs.mkdir("/d", 0).unwrap();
    fs.symlink("/d", "/l", Owner::ROOT, 0).unwrap();
    let mut out = PathBuf::new();
    crate::fs::real_path(&mut fs, "/l/./", &mut out).unwrap();
    assert_eq!(out.as_str(), "/d");
    crate::fs::real_path(&mut fs, "/l/new/", &mut out).unwrap();
    assert_eq!(out.as_str(), "/d/new", "a missing final name is joined to its parent");
    crate::fs::real_path(&mut fs, "/new", &mut out).unwrap();
    assert_eq!(out.as_str(), "/new");
    assert_eq!(crate::fs::real_path(&mut fs, "/x/y", &mut out), Err(FsError::NotFound));
    // Path::parent of /d/missing/.. is /d/missing, which does not resolve.
    assert_eq!(crate::fs::real_path(&mut fs, "/d/missing/..", &mut out), Err(FsError::NotFound));
    crate::fs::real_path(&mut fs, "/d/..", &mut out).unwrap();
    assert_eq!(out.as_str(), "/");
}
