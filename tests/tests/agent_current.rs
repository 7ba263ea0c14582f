//! The agent serving the current (0.7.13) filesystem dialect: handles and
//! their owners, offset reads and writes, directory batches, links,
//! attributes, and the rules where the two dialects meet.

use agent_core::Config;
use agent_core::handles::{
    DIR_RESERVE_SHARE, HANDLE_RESERVE_SHARE, MAX_HANDLES, MAX_HANDLES_PER_CLIENT, MAX_OPEN_DIRS, RESERVE_HOLDER_DIRS,
    RESERVE_HOLDER_HANDLES, SLOT_STEP,
};
use tests::harness::{Host, Sent, TEST_ARENA};
use wire::{
    Body, BulkOffer, FsData, FsEntryInfo, FsOp, FsOpenOptions, FsRequest, FsResponse, FsResponseData, FsSetAttrs,
    MessageType, RelayClientDisconnected, Shutdown,
};

/// The generation the 0.7.13 client writes on every frame.
const CURRENT_V: u8 = 10;

/// The first id of relay slot `slot`.
fn slot_id(slot: u32) -> u32 {
    slot * SLOT_STEP + 1
}

struct Client {
    host: Host,
    next: u32,
}

impl Client {
    fn new() -> Client {
        Client::with(Host::ready())
    }

    /// A client of `host`, whose filesystem gets the guest's starting
    /// directories (`/tmp` ...).
    fn with(mut host: Host) -> Client {
        host.agent.fs_mut().make_standard_dirs(host.now).unwrap();
        Client { host, next: slot_id(1) }
    }

    fn id(&mut self) -> u32 {
        self.next += 1;
        self.next
    }

    /// Sends `op` as the 0.7.13 client does (`v = 10`) on a fresh id of slot
    /// 1 and returns every frame of that id.
    fn call(&mut self, op: FsOp<'_>) -> Vec<Sent> {
        let id = self.id();
        self.call_on(id, op)
    }

    fn call_on(&mut self, id: u32, op: FsOp<'_>) -> Vec<Sent> {
        self.host.send_as(id, CURRENT_V, &FsRequest::new(op));
        self.host.until_terminal(id).into_iter().filter(|f| f.id() == id).collect()
    }

    fn response(frames: &[Sent]) -> Result<Option<String>, String> {
        match frames.last().unwrap().message().body {
            Body::FsResponse(FsResponse { ok: true, data: None, .. }) => Ok(None),
            Body::FsResponse(FsResponse { ok: true, data: Some(FsResponseData::Path(p)), .. }) => Ok(Some(p.into())),
            Body::FsResponse(FsResponse { ok: true, data: Some(FsResponseData::Handle(h)), .. }) => {
                Ok(Some(h.to_string()))
            }
            Body::FsResponse(FsResponse { ok: false, error: Some(e), .. }) => Err(e.into()),
            other => panic!("unexpected answer {other:?}"),
        }
    }

    fn ok(&mut self, op: FsOp<'_>) -> Option<String> {
        let frames = self.call(op);
        Client::response(&frames).unwrap_or_else(|e| panic!("{op:?}: {e}"))
    }

    fn fails(&mut self, op: FsOp<'_>) -> String {
        let frames = self.call(op);
        Client::response(&frames).expect_err("expected a failure")
    }

    fn open_on(&mut self, id: u32, path: &str, options: FsOpenOptions<'_>) -> Result<u64, String> {
        let frames = self.call_on(id, FsOp::OpenFile { path, options });
        Client::response(&frames).map(|h| h.unwrap().parse().unwrap())
    }

    fn open(&mut self, path: &str, options: FsOpenOptions<'_>) -> Result<u64, String> {
        let id = self.id();
        self.open_on(id, path, options)
    }

    fn write_on(
        &mut self,
        id: u32,
        handle: u64,
        offset: u64,
        len: Option<u64>,
        chunks: &[&[u8]],
    ) -> Result<(), String> {
        self.host.send_as(id, CURRENT_V, &FsRequest::new(FsOp::WriteHandle { handle, offset, len }));
        for chunk in chunks {
            self.host.send_as(id, CURRENT_V, &FsData { data: chunk });
        }
        self.host.send_as(id, CURRENT_V, &FsData { data: &[] });
        let frames: Vec<Sent> = self.host.until_terminal(id).into_iter().filter(|f| f.id() == id).collect();
        let terminal = frames.iter().find(|f| f.is_terminal()).unwrap().clone();
        Client::response(&[terminal]).map(|_| ())
    }

    fn write(&mut self, handle: u64, offset: u64, len: Option<u64>, chunks: &[&[u8]]) -> Result<(), String> {
        let id = self.id();
        self.write_on(id, handle, offset, len, chunks)
    }

    /// Reads through a handle: the chunks' sizes, the bytes, the outcome.
    fn read_on(
        &mut self,
        id: u32,
        handle: u64,
        offset: u64,
        len: Option<u64>,
    ) -> (Vec<usize>, Vec<u8>, Result<(), String>) {
        let frames = self.call_on(id, FsOp::ReadHandle { handle, offset, len });
        let (mut sizes, mut data) = (Vec::new(), Vec::new());
        for f in &frames[..frames.len() - 1] {
            match f.message().body {
                Body::FsData(d) => {
                    sizes.push(d.data.len());
                    data.extend_from_slice(d.data);
                }
                other => panic!("unexpected frame in a read: {other:?}"),
            }
        }
        (sizes, data, Client::response(&frames).map(|_| ()))
    }

    fn read(&mut self, handle: u64, offset: u64, len: Option<u64>) -> (Vec<usize>, Vec<u8>, Result<(), String>) {
        let id = self.id();
        self.read_on(id, handle, offset, len)
    }

    fn stat(&mut self, op: FsOp<'_>) -> Result<OwnedEntry, String> {
        let frames = self.call(op);
        match frames.last().unwrap().message().body {
            Body::FsResponse(FsResponse { ok: true, data: Some(FsResponseData::Stat(e)), .. }) => {
                Ok(OwnedEntry::of(&e))
            }
            Body::FsResponse(FsResponse { ok: false, error: Some(e), .. }) => Err(e.into()),
            other => panic!("unexpected stat answer {other:?}"),
        }
    }

    fn entries(frames: &[Sent]) -> Vec<OwnedEntry> {
        match frames.last().unwrap().message().body {
            Body::FsResponse(FsResponse { ok: true, data: Some(FsResponseData::List(list)), .. }) => {
                list.iter().map(|e| OwnedEntry::of(&e)).collect()
            }
            other => panic!("unexpected list answer {other:?}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
struct OwnedEntry {
    path: String,
    kind: String,
    size: u64,
    mode: u32,
    /// uid, gid, atime, mtime when the entry has 9 fields.
    extra: Option<(u32, u32, Option<i64>, Option<i64>)>,
}

impl OwnedEntry {
    fn of(e: &FsEntryInfo<'_>) -> OwnedEntry {
        OwnedEntry {
            path: e.path.into(),
            kind: e.kind.as_str().into(),
            size: e.size,
            mode: e.mode,
            extra: e.extra.map(|x| (x.uid, x.gid, x.atime, x.mtime)),
        }
    }
}

fn rw_create() -> FsOpenOptions<'static> {
    FsOpenOptions { read: true, write: true, create: true, ..FsOpenOptions::default() }
}

fn read_only() -> FsOpenOptions<'static> {
    FsOpenOptions { read: true, ..FsOpenOptions::default() }
}

#[test]
fn a_handle_writes_at_offsets_and_reads_back_ranges() {
    let mut c = Client::new();
    let h = c.open("/tmp/f", rw_create()).unwrap();
    c.write(h, 0, Some(10), &[b"hello", b" wor", b"d"]).unwrap();
    // A write at an offset replaces bytes there, visible at once.
    c.write(h, 6, None, &[b"W"]).unwrap();
    assert_eq!(c.read(h, 0, None).1, b"hello Word");
    assert_eq!(c.read(h, 6, Some(2)).1, b"Wo");
    // Past the end: zero-extended.
    c.write(h, 12, None, &[b"!"]).unwrap();
    assert_eq!(c.read(h, 9, None).1, b"d\0\0!");
    // At or past EOF: ok, no data, and no empty chunk.
    let (sizes, data, outcome) = c.read(h, 13, None);
    assert!(sizes.is_empty() && data.is_empty() && outcome.is_ok(), "{sizes:?}");
    let (sizes, _, outcome) = c.read(h, 1000, Some(5));
    assert!(sizes.is_empty() && outcome.is_ok());
    // Stat of the path and of the handle agree, in 9 fields.
    let by_path = c.stat(FsOp::Stat { path: "/tmp/f", follow_symlink: Some(true) }).unwrap();
    assert_eq!((by_path.size, by_path.kind.as_str(), by_path.mode), (13, "file", 0o100644));
    let (uid, gid, atime, mtime) = by_path.extra.expect("a current Stat answers 9 fields");
    assert_eq!((uid, gid), (0, 0));
    assert!(atime.is_some() && mtime.is_some_and(|t| t >= 1_700_000_000), "{mtime:?}");
    let by_handle = c.stat(FsOp::FStat { handle: h }).unwrap();
    assert_eq!((by_handle.size, by_handle.mode, by_handle.path.as_str()), (13, 0o100644, "/tmp/f"));
    // A path longer than a slot keeps is kept in the shared long-path places.
    let long = format!("/tmp/{}", "x".repeat(agent_core::handles::INLINE_PATH));
    let l = c.open(&long, rw_create()).unwrap();
    assert_eq!(c.stat(FsOp::FStat { handle: l }).unwrap().path, long);
    c.ok(FsOp::CloseHandle { handle: l });
    c.ok(FsOp::CloseHandle { handle: h });
    assert_eq!(c.host.agent.open_handles(), 0);
    assert!(c.fails(FsOp::CloseHandle { handle: h }).contains("Bad file descriptor (os error 9)"));
}

#[test]
fn a_handle_read_streams_chunks_then_the_terminal_answer() {
    let config = Config { read_chunk_size: 4, ..Config::default() };
    let mut host = Host::new(TEST_ARENA, config);
    host.handshake();
    let mut c = Client::with(host);
    let h = c.open("/tmp/big", rw_create()).unwrap();
    c.write(h, 0, None, &[b"0123456789"]).unwrap();
    let (sizes, data, outcome) = c.read(h, 1, Some(8));
    assert_eq!((sizes, data, outcome), (vec![4, 4], b"12345678".to_vec(), Ok(())));
    let (sizes, _, _) = c.read(h, 0, None);
    assert_eq!(sizes, [4, 4, 2], "the last chunk is short and no empty chunk follows");
}

#[test]
fn a_write_with_another_byte_count_than_announced_fails() {
    let mut c = Client::new();
    let h = c.open("/tmp/n", rw_create()).unwrap();
    let short = c.write(h, 0, Some(5), &[b"abc"]).unwrap_err();
    assert_eq!(short, "write length mismatch: expected 5, wrote 3");
    // More than announced is refused before it is written.
    let long = c.write(h, 0, Some(2), &[b"xyz"]).unwrap_err();
    assert_eq!(long, "write length mismatch: expected 2, received at least 3");
    assert_eq!(c.read(h, 0, None).1, b"abc", "the short write's bytes stay; the long one wrote nothing");
}

#[test]
fn open_options_behave_as_on_linux() {
    let mut c = Client::new();
    let h = c.open("/tmp/o", rw_create()).unwrap();
    c.write(h, 0, None, &[b"abcdef"]).unwrap();
    // create_new on an existing file fails.
    let new = FsOpenOptions { write: true, create_new: true, ..FsOpenOptions::default() };
    assert!(c.open("/tmp/o", new).unwrap_err().contains("File exists (os error 17)"));
    // A read-only handle refuses writes, and reads.
    let r = c.open("/tmp/o", read_only()).unwrap();
    let refused = c.write(r, 0, None, &[b"x"]).unwrap_err();
    assert!(refused.contains("Bad file descriptor (os error 9)"), "{refused}");
    assert_eq!(c.read(r, 0, None).1, b"abcdef");
    // A write-only handle refuses reads.
    let w = c.open("/tmp/o", FsOpenOptions { write: true, ..FsOpenOptions::default() }).unwrap();
    assert!(c.read(w, 0, None).2.unwrap_err().contains("Bad file descriptor"));
    // Append writes at the end whatever the offset.
    let a = c.open("/tmp/o", FsOpenOptions { append: true, ..FsOpenOptions::default() }).unwrap();
    c.write(a, 0, None, &[b"XY"]).unwrap();
    assert_eq!(c.read(r, 0, None).1, b"abcdefXY");
    // Truncate empties it on open.
    let t = FsOpenOptions { write: true, truncate: true, ..FsOpenOptions::default() };
    c.open("/tmp/o", t).unwrap();
    assert_eq!(c.read(r, 0, None).1, b"");
    // Unlike the seed-era Write, OpenFile does not make parents.
    assert!(c.open("/tmp/no/such", rw_create()).unwrap_err().contains("No such file or directory (os error 2)"));
}

#[test]
fn a_handle_is_bad_for_every_other_client_and_after_its_client_leaves() {
    let mut c = Client::new();
    let mine = slot_id(3) + 10;
    let h = c.open_on(mine, "/tmp/secret", rw_create()).unwrap();
    c.write_on(mine + 1, h, 0, None, &[b"secret"]).unwrap();
    // Another slot, the id between slots, and the direct id space all fail.
    for other in [slot_id(4) + 1, slot_id(2) + 5, 4 * SLOT_STEP, 1] {
        let (sizes, _, outcome) = c.read_on(other, h, 0, None);
        assert!(sizes.is_empty(), "no byte of another client's file leaks");
        assert!(outcome.unwrap_err().contains("Bad file descriptor (os error 9)"));
        let w = c.write_on(other + 1, h, 0, None, &[b"x"]).unwrap_err();
        assert!(w.contains("Bad file descriptor"));
        let frames = c.call_on(other + 2, FsOp::CloseHandle { handle: h });
        assert!(Client::response(&frames).is_err());
    }
    // A handle guessed from the number sequence is no better.
    for guess in [h + 1, h - 1, h ^ 1, h + (1 << 16)] {
        let (_, _, outcome) = c.read_on(mine + 5, guess, 0, None);
        assert!(outcome.is_err(), "{guess}");
    }
    assert_eq!(c.read_on(mine + 6, h, 0, None).1, b"secret");
    assert_eq!(c.host.agent.open_handles_of(mine), 1);
    // The client leaves: its handles close; the next client of the slot
    // cannot use the number.
    c.host.send(0, &RelayClientDisconnected { id_start: slot_id(3), id_end_exclusive: slot_id(4) - 1 });
    assert_eq!(c.host.agent.open_handles(), 0);
    let next_client = slot_id(3) + 1;
    let (_, _, outcome) = c.read_on(next_client, h, 0, None);
    assert!(outcome.unwrap_err().contains("Bad file descriptor"));
    // The file itself is still there for a path read.
    assert_eq!(c.host.read(next_client + 1, "/tmp/secret").0, b"secret");
}

#[test]
fn a_client_holds_at_most_its_bound_of_handles() {
    let mut c = Client::new();
    let first = slot_id(5);
    let mut handles = Vec::new();
    for i in 0..MAX_HANDLES_PER_CLIENT as u32 {
        handles.push(c.open_on(first + 1 + i, "/tmp/many", rw_create()).unwrap());
    }
    let over = c.open_on(first + 5000, "/tmp/many-more", rw_create()).unwrap_err();
    assert!(over.contains("Too many open files (os error 24"), "{over}");
    let ghost = c.host.stat(first + 5001, "/tmp/many-more");
    assert!(ghost.is_err(), "a refused open creates nothing");
    // Another client is not held back.
    c.open_on(slot_id(6) + 1, "/tmp/many", rw_create()).unwrap();
    // Closing one makes room again.
    let close = c.call_on(first + 5002, FsOp::CloseHandle { handle: handles[0] });
    assert!(Client::response(&close).is_ok());
    c.open_on(first + 5003, "/tmp/many", rw_create()).unwrap();
    // Shutdown closes everything.
    c.host.send(0, &Shutdown);
    c.host.take();
    assert_eq!(c.host.agent.open_handles(), 0);
}

/// A directory path longer than a handle's inline path.
const LONG_DIR: &str = "/tmp/a-directory-whose-path-is-longer-than-the-sixty-four-bytes-kept-inline";

#[test]
fn clients_that_fill_the_table_leave_its_reserve_to_the_others() {
    let mut c = Client::new();
    let id = |slot: u32, n: u32| slot_id(slot) + 1 + n;
    // Three clients take their whole share, a fourth all it can get.
    for slot in 10..13 {
        for n in 0..MAX_HANDLES_PER_CLIENT as u32 {
            c.open_on(id(slot, n), "/tmp/f", rw_create()).unwrap();
        }
    }
    let reserve = MAX_HANDLES / HANDLE_RESERVE_SHARE;
    let mut got = 0;
    let refusal = loop {
        match c.open_on(id(13, got), "/tmp/f", rw_create()) {
            Ok(_) => got += 1,
            Err(e) => break e,
        }
    };
    assert_eq!(got as usize, MAX_HANDLES - 3 * MAX_HANDLES_PER_CLIENT - reserve);
    assert!(refusal.contains("Too many open files in system (os error 23"), "{refusal}");
    // Another client still opens files, up to what the reserve gives one holder.
    for n in 0..RESERVE_HOLDER_HANDLES as u32 {
        c.open_on(id(14, n), "/tmp/f", rw_create()).unwrap();
    }
    assert!(c.open_on(id(14, 10_000), "/tmp/f", rw_create()).is_err());
    // And so does the next one.
    c.open_on(id(15, 0), "/tmp/f", rw_create()).unwrap();
}

#[test]
fn one_client_cannot_take_every_long_directory_path() {
    let mut c = Client::new();
    c.ok(FsOp::MkdirWith { path: LONG_DIR, mode: None, user: None });
    let hog = slot_id(20);
    let mut held = 0;
    let refusal = loop {
        let frames = c.call_on(hog + 1 + held, FsOp::OpenDir { path: LONG_DIR });
        match Client::response(&frames) {
            Ok(_) => held += 1,
            Err(e) => break e,
        }
    };
    assert_eq!(held as usize, MAX_OPEN_DIRS - MAX_OPEN_DIRS / DIR_RESERVE_SHARE);
    assert!(refusal.contains("Too many open files in system (os error 23"), "{refusal}");
    // Its short paths and files are not refused (a long file path just
    // is not kept: FStat answers an empty path).
    let short = c.call_on(hog + 1000, FsOp::OpenDir { path: "/tmp" });
    assert!(Client::response(&short).is_ok());
    let file = format!("{LONG_DIR}/file");
    c.open_on(hog + 1001, &file, rw_create()).unwrap();
    // Others still open long directories, a few each.
    for other in [21, 22] {
        for n in 0..RESERVE_HOLDER_DIRS as u32 {
            let frames = c.call_on(slot_id(other) + 1 + n, FsOp::OpenDir { path: LONG_DIR });
            assert!(Client::response(&frames).is_ok(), "client {other}, directory {n}");
        }
    }
    // Once the hog leaves, its places are free again.
    c.host.send(0, &RelayClientDisconnected { id_start: slot_id(20), id_end_exclusive: slot_id(21) - 1 });
    let frames = c.call_on(slot_id(23) + 1, FsOp::OpenDir { path: LONG_DIR });
    assert!(Client::response(&frames).is_ok());
    // A new client in the hog's freed slot starts from nothing held: it
    // gets places again, and the hog's old handle numbers are not its own.
    let frames = c.call_on(hog + 2000, FsOp::OpenDir { path: LONG_DIR });
    assert!(Client::response(&frames).is_ok());
    assert_eq!(c.host.agent.open_handles_of(hog), 1);
}

#[test]
fn read_dir_returns_batches_of_at_most_the_limit_then_an_empty_one() {
    let mut c = Client::new();
    c.ok(FsOp::MkdirWith { path: "/tmp/d", mode: None, user: None });
    for i in 0..5 {
        let h = c.open(&format!("/tmp/d/f{i}"), rw_create()).unwrap();
        c.ok(FsOp::CloseHandle { handle: h });
    }
    let dir = c.ok(FsOp::OpenDir { path: "/tmp/d/" }).unwrap().parse().unwrap();
    let mut seen = Vec::new();
    loop {
        let batch = Client::entries(&c.call(FsOp::ReadDir { handle: dir, limit: Some(2) }));
        assert!(batch.len() <= 2);
        if batch.is_empty() {
            break;
        }
        seen.extend(batch);
    }
    let mut paths: Vec<_> = seen.iter().map(|e| e.path.clone()).collect();
    paths.sort();
    assert_eq!(paths, ["/tmp/d/f0", "/tmp/d/f1", "/tmp/d/f2", "/tmp/d/f3", "/tmp/d/f4"], "joined as sent, once each");
    assert!(seen.iter().all(|e| e.extra.is_some()));
    // A file handle is not a directory.
    let f = c.open("/tmp/d/f0", read_only()).unwrap();
    assert!(c.fails(FsOp::ReadDir { handle: f, limit: None }).contains("Not a directory"));
}

#[test]
fn links_real_paths_and_attributes() {
    let mut c = Client::new();
    c.ok(FsOp::MkdirWith { path: "/tmp/a/b", mode: Some(0o700), user: Some("1000:100") });
    let b = c.stat(FsOp::Stat { path: "/tmp/a/b", follow_symlink: Some(false) }).unwrap();
    assert_eq!((b.mode, b.extra.unwrap().0, b.extra.unwrap().1), (0o040700, 1000, 100));
    c.ok(FsOp::Symlink { target: "a/b", link_path: "/tmp/l", user: None });
    assert_eq!(c.ok(FsOp::ReadLink { path: "/tmp/l" }).as_deref(), Some("a/b"));
    assert_eq!(c.ok(FsOp::RealPath { path: "/tmp/l/../b/./" }).as_deref(), Some("/tmp/a/b"));
    // A path that does not exist yet: its parent's real path and its name.
    assert_eq!(c.ok(FsOp::RealPath { path: "/tmp/l/new" }).as_deref(), Some("/tmp/a/b/new"));
    assert!(c.fails(FsOp::RealPath { path: "/tmp/none/new" }).contains("No such file or directory"));
    let link = c.stat(FsOp::Stat { path: "/tmp/l", follow_symlink: Some(false) }).unwrap();
    assert_eq!((link.kind.as_str(), link.size, link.path.as_str()), ("symlink", 3, "/tmp/l"));
    let target = c.stat(FsOp::Stat { path: "/tmp/l", follow_symlink: Some(true) }).unwrap();
    assert_eq!(target.kind, "dir");
    // SetStat: mode, owner, times; a size change truncates or zero-extends.
    let h = c.open("/tmp/s", rw_create()).unwrap();
    c.write(h, 0, None, &[b"abcdef"]).unwrap();
    let attrs =
        FsSetAttrs { mode: Some(0o600), uid: Some(7), gid: Some(8), size: Some(2), atime: Some(5), mtime: Some(6) };
    c.ok(FsOp::SetStat { path: "/tmp/s", follow_symlink: true, attrs });
    let s = c.stat(FsOp::FStat { handle: h }).unwrap();
    assert_eq!((s.mode, s.size, s.extra), (0o100600, 2, Some((7, 8, Some(5), Some(6)))));
    c.ok(FsOp::FSetStat { handle: h, attrs: FsSetAttrs { size: Some(4), ..FsSetAttrs::default() } });
    assert_eq!(c.read(h, 0, None).1, b"ab\0\0");
    let missing = c.fails(FsOp::SetStat { path: "/tmp/none", follow_symlink: true, attrs });
    assert!(missing.contains("No such file or directory"), "{missing}");
    assert!(c.fails(FsOp::FStat { handle: 12345 }).contains("Bad file descriptor (os error 9)"));
}

#[test]
fn remove_dir_is_recursive_only_when_asked() {
    let mut c = Client::new();
    c.ok(FsOp::MkdirWith { path: "/tmp/r/sub", mode: None, user: None });
    let kept = c.fails(FsOp::RemoveDir { path: "/tmp/r", recursive: Some(false) });
    assert!(kept.contains("Directory not empty (os error 39)"), "{kept}");
    assert!(c.stat(FsOp::Stat { path: "/tmp/r/sub", follow_symlink: Some(false) }).is_ok(), "nothing was removed");
    c.ok(FsOp::RemoveDir { path: "/tmp/r/sub", recursive: Some(false) });
    c.ok(FsOp::MkdirWith { path: "/tmp/r/sub2/deeper", mode: None, user: None });
    c.ok(FsOp::RemoveDir { path: "/tmp/r", recursive: Some(true) });
    assert!(c.stat(FsOp::Stat { path: "/tmp/r", follow_symlink: Some(false) }).is_err());
    // The seed shape keeps its meaning: recursive.
    c.host.ok(3, FsOp::Mkdir { path: "/x/y/z" });
    c.host.ok(4, FsOp::RemoveDir { path: "/x", recursive: None });
    assert!(c.host.stat(5, "/x").is_err());
}

/// List, Copy and Rename have one shape in both dialects: the request's
/// `v` picks the answer (9-field entries from generation 6 on) and whether
/// missing destination parents are made (only below 6).
#[test]
fn the_shared_shapes_follow_the_request_generation() {
    let mut c = Client::new();
    c.host.ok(2, FsOp::Mkdir { path: "/s" });
    c.host.write(3, "/s/f", None, b"data", 64);
    // Our own host (v = 5): 5-field entries, parents made.
    let seed = c.host.request(4, FsOp::List { path: "/s" });
    assert!(Client::entries(&seed).iter().all(|e| e.extra.is_none()));
    c.host.ok(5, FsOp::Copy { src: "/s/f", dst: "/s/new/copy" });
    c.host.ok(6, FsOp::Rename { src: "/s/new/copy", dst: "/s/other/moved" });
    // The 0.7.13 client (v = 10): 9-field entries, no parents made.
    let current = Client::entries(&c.call(FsOp::List { path: "/s" }));
    assert!(!current.is_empty() && current.iter().all(|e| e.extra.is_some()));
    let copy = c.fails(FsOp::Copy { src: "/s/f", dst: "/s/missing/copy" });
    assert!(copy.contains("No such file or directory (os error 2)"), "{copy}");
    let rename = c.fails(FsOp::Rename { src: "/s/f", dst: "/s/missing/moved" });
    assert!(rename.contains("No such file or directory (os error 2)"), "{rename}");
    assert!(c.host.stat(7, "/s/missing").is_err(), "no parent was left behind");
    // A seed-shaped Stat from a current peer (whose types need uid and
    // gid) gets 9 fields; from our host, 5.
    let stat = c.stat(FsOp::Stat { path: "/s/f", follow_symlink: None }).unwrap();
    assert!(stat.extra.is_some());
    let frames = c.host.request(8, FsOp::Stat { path: "/s/f", follow_symlink: None });
    match frames.last().unwrap().message().body {
        Body::FsResponse(FsResponse { data: Some(FsResponseData::Stat(e)), .. }) => assert!(e.extra.is_none()),
        other => panic!("{other:?}"),
    }
}

/// A raw-bulk offer is declined as a peer without bulk support declines
/// it: the read is served with `core.fs.data` chunks, nothing else.
#[test]
fn a_bulk_offer_is_declined_by_serving_inline_data() {
    let mut c = Client::new();
    let h = c.open("/tmp/b", rw_create()).unwrap();
    c.write(h, 0, None, &[b"bulk?"]).unwrap();
    let id = c.id();
    let offer = BulkOffer { format: 1, max_record_payload: 3 << 20, guest_to_host_credit_limit: 8 << 20 };
    let request = FsRequest { op: FsOp::ReadHandle { handle: h, offset: 0, len: None }, bulk: Some(offer) };
    c.host.send_as(id, CURRENT_V, &request);
    let frames = c.host.until_terminal(id);
    let types: Vec<MessageType> = frames.iter().map(Sent::message_type).collect();
    assert_eq!(types, [MessageType::FsData, MessageType::FsResponse]);
    match frames[0].message().body {
        Body::FsData(d) => assert_eq!(d.data, b"bulk?"),
        other => panic!("{other:?}"),
    }
}

/// Without a `limit` a batch is the reference's default of 128 entries
/// (`READ_DIR_BATCH_MAX`), and a larger `limit` gets no more.
#[test]
fn read_dir_batches_stop_at_the_bound() {
    let mut c = Client::new();
    let bound = agent_core::READ_DIR_BATCH_MAX;
    c.ok(FsOp::MkdirWith { path: "/tmp/many", mode: None, user: None });
    for i in 0..bound + 2 {
        c.host.write(1_000 + i as u32, &format!("/tmp/many/{i}"), None, b"", 1);
    }
    let dir = c.ok(FsOp::OpenDir { path: "/tmp/many" }).unwrap().parse().unwrap();
    let sizes: Vec<usize> = [None, Some(u32::MAX), Some(5)]
        .into_iter()
        .map(|limit| Client::entries(&c.call(FsOp::ReadDir { handle: dir, limit })).len())
        .collect();
    assert_eq!(sizes, [bound, 2, 0]);
    // The current List names the reference's readdir in its errors.
    assert_eq!(c.fails(FsOp::List { path: "/tmp/none" }), "readdir: opendir: No such file or directory (os error 2)");
    assert_eq!(c.host.list(9, "/tmp/none"), Err("list: No such file or directory (os error 2)".into()));
}
