//! The same operation sequences against the ramfs and against a real Linux
//! directory (through `std::fs`, as the reference agent works): every
//! outcome must match (ok or the same error, listings as sets, kinds, file
//! sizes, permission bits, contents).
//!
//! Known, documented divergence left out of the sequences: copying a file
//! onto itself (Linux truncates it; the ramfs keeps it).

use agent_core::Config;
use tests::harness::Host;
use tests::hostfs::HostFs;
use tests::rng::Rng;
use wire::{Body, FsOp, FsResponse, FsResponseData};

/// An observable outcome, comparable across filesystems.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Ok,
    Err(String),
    Stat { path: String, kind: String, size: Option<u64>, mode: u32 },
    List(Vec<(String, String, Option<u64>)>),
    Read(Vec<u8>),
}

/// Runs one op against a host; sizes are compared for files only (a
/// directory's size is the filesystem's own business).
fn run<F: agent_core::Filesystem + 'static>(host: &mut Host<F>, id: u32, op: &Op) -> Outcome {
    let frames = match op {
        Op::Write(path, mode, data) => {
            let r = host.write(id, path, *mode, data, 7_000);
            vec![r]
        }
        Op::Fs(op) => host.request(id, op.as_fs_op()),
    };
    let mut read = Vec::new();
    for f in &frames {
        let message = f.message();
        match message.body {
            Body::FsData(d) if f.id() == id => read.extend_from_slice(d.data),
            Body::FsResponse(FsResponse { ok: false, error: Some(e), .. }) if f.id() == id => {
                return Outcome::Err(e.to_string());
            }
            Body::FsResponse(FsResponse { ok: true, data: Some(FsResponseData::Stat(i)), .. }) => {
                let size = (i.kind.as_str() == "file").then_some(i.size);
                return Outcome::Stat { path: i.path.into(), kind: i.kind.as_str().into(), size, mode: i.mode };
            }
            Body::FsResponse(FsResponse { ok: true, data: Some(FsResponseData::List(list)), .. }) => {
                let mut v: Vec<_> = list
                    .iter()
                    .map(|e| {
                        (e.path.to_string(), e.kind.as_str().to_string(), (e.kind.as_str() == "file").then_some(e.size))
                    })
                    .collect();
                v.sort();
                return Outcome::List(v);
            }
            Body::FsResponse(FsResponse { ok: true, .. }) if f.id() == id => {
                if matches!(op, Op::Fs(OwnedOp::Read(_))) {
                    return Outcome::Read(read);
                }
                return Outcome::Ok;
            }
            _ => {}
        }
    }
    panic!("no response to {op:?}: {frames:?}")
}

/// An op with owned strings.
#[derive(Debug, Clone)]
enum OwnedOp {
    Stat(String),
    List(String),
    Read(String),
    Mkdir(String),
    Remove(String),
    RemoveDir(String),
    Copy(String, String),
    Rename(String, String),
}

impl OwnedOp {
    fn as_fs_op(&self) -> FsOp<'_> {
        match self {
            OwnedOp::Stat(p) => FsOp::Stat { path: p, follow_symlink: None },
            OwnedOp::List(p) => FsOp::List { path: p },
            OwnedOp::Read(p) => FsOp::Read { path: p },
            OwnedOp::Mkdir(p) => FsOp::Mkdir { path: p },
            OwnedOp::Remove(p) => FsOp::Remove { path: p },
            OwnedOp::RemoveDir(p) => FsOp::RemoveDir { path: p, recursive: None },
            OwnedOp::Copy(s, d) => FsOp::Copy { src: s, dst: d },
            OwnedOp::Rename(s, d) => FsOp::Rename { src: s, dst: d },
        }
    }
}

#[derive(Clone)]
enum Op {
    Fs(OwnedOp),
    Write(String, Option<u32>, Vec<u8>),
}

impl std::fmt::Debug for Op {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Op::Fs(op) => write!(f, "{op:?}"),
            Op::Write(path, mode, data) => {
                write!(f, "Write({path:?}, {:?}, {} bytes)", mode.map(|m| format!("{m:o}")), data.len())
            }
        }
    }
}

/// A random path over a small namespace, so ops collide often.
fn path(rng: &mut Rng) -> String {
    let depth = rng.range(0, 3);
    let mut p = String::new();
    for _ in 0..depth {
        p.push('/');
        let name = *rng.pick(&["a", "b", "c"]);
        p.push_str(name);
    }
    if p.is_empty() || rng.chance(0.1) {
        p.push('/');
    }
    if rng.chance(0.1) {
        p = p.replace("/a", "/./x/../a");
    }
    p
}

fn op(rng: &mut Rng) -> Op {
    let p = path(rng);
    match rng.below(10) {
        0 => Op::Fs(OwnedOp::Stat(p)),
        1 => Op::Fs(OwnedOp::List(p)),
        2 => Op::Fs(OwnedOp::Read(p)),
        3 => Op::Fs(OwnedOp::Mkdir(p)),
        4 => Op::Fs(OwnedOp::Remove(p)),
        5 => Op::Fs(OwnedOp::RemoveDir(p)),
        6 => {
            let dst = path(rng);
            let norm = |p: &str| {
                let mut out = agent_core::path::PathBuf::new();
                agent_core::path::normalize(p, &mut out).map(|()| out)
            };
            if norm(&dst) == norm(&p) { Op::Fs(OwnedOp::Stat(p)) } else { Op::Fs(OwnedOp::Copy(p, dst)) }
        }
        7 => Op::Fs(OwnedOp::Rename(p, path(rng))),
        _ => {
            let mut data = vec![0u8; rng.below(20_000) as usize];
            rng.fill(&mut data);
            let mode = rng.chance(0.3).then(|| *rng.pick(&[0o600, 0o644, 0o755, 0o4711]));
            Op::Write(p, mode, data)
        }
    }
}

#[test]
fn ramfs_matches_a_linux_directory_on_random_sequences() {
    let seeds = 60u64;
    let ops_per_seed = 150u32;
    let mut compared = 0;
    for seed in 0..seeds {
        let mut rng = Rng::new(seed);
        let mut ram = Host::new(16 << 20, Config::default());
        let mut real = Host::with_fs(HostFs::new().expect("temp dir"), Config::default());
        ram.handshake();
        real.handshake();
        let mut history = Vec::new();
        for id in 1..=ops_per_seed {
            let op = op(&mut rng);
            let (a, b) = (run(&mut ram, id, &op), run(&mut real, id, &op));
            history.push(format!(
                "{op:?} -> {}",
                match &a {
                    Outcome::Read(data) => format!("Read({} bytes)", data.len()),
                    other => format!("{other:?}"),
                }
            ));
            assert_eq!(a, b, "seed {seed}, op #{id} {op:?}\nhistory:\n{}", history.join("\n"));
            compared += 1;
        }
    }
    println!("{compared} operations compared over {seeds} seeds");
}

// ---- The whole Filesystem trait against a Linux directory ----

mod fs_level {
    use agent_core::path::PathBuf as FsPath;
    use agent_core::ramfs::Ramfs;
    use agent_core::{EntryKind, Filesystem, FsError, Metadata, MissingParents, Mtime, OpenOptions, Owner, SetAttrs};
    use tests::hostfs::HostFs;
    use tests::rng::Rng;

    /// What one op observably did.
    #[derive(Debug, PartialEq, Eq, Clone)]
    pub enum Seen {
        Ok,
        Err(String),
        /// kind, size (files and symlinks only), mode, uid, gid, mtime when
        /// the ramfs holds it as Unix time (explicitly set).
        Stat(EntryKind, Option<u64>, u32, u32, u32, Option<i64>),
        Data(Blob),
        Path(String),
        Offset(u64),
        Count(usize),
        Names(Vec<(String, String, Option<u64>)>),
        /// The oracle cannot do it (a symlink's own times): not compared.
        Skip,
    }

    /// Bytes, shown by length.
    #[derive(Clone, PartialEq, Eq)]
    pub struct Blob(pub Vec<u8>);

    impl std::fmt::Debug for Blob {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "{} bytes", self.0.len())
        }
    }

    #[derive(Debug, Clone)]
    pub enum Op {
        Stat(String, bool),
        ReadLink(String),
        Canonicalize(String),
        Symlink(String, String),
        Mkdir(String, Option<u32>),
        RemoveDir(String, bool),
        Remove(String),
        Copy(String, String, MissingParents),
        Rename(String, String, MissingParents),
        SetAttrs(String, bool, SetAttrs),
        List(String),
        PathRead(String),
        PathWrite(String, Option<u32>, Blob),
        Open(String, OpenOptions),
        Close(usize),
        Read(usize, u64, usize),
        Write(usize, u64, Blob),
        FStat(usize),
        SetLen(usize, u64),
        FSetAttrs(usize, SetAttrs),
        OpenDir(String),
        ReadDir(usize, usize),
        CloseDir(usize),
    }

    /// One side: a filesystem and its open files and directories.
    pub struct Side<F: Filesystem> {
        pub fs: F,
        files: Vec<Option<F::File>>,
        dirs: Vec<Option<F::Dir>>,
        /// Names each open directory returned so far.
        seen: Vec<Vec<(String, String, Option<u64>)>>,
    }

    impl<F: Filesystem> Side<F> {
        pub fn new(fs: F) -> Self {
            Side { fs, files: Vec::new(), dirs: Vec::new(), seen: Vec::new() }
        }
    }

    fn stat(m: &Metadata, unix_mtime: Option<i64>) -> Seen {
        let size = matches!(m.kind, EntryKind::File | EntryKind::Symlink).then_some(m.size);
        Seen::Stat(m.kind, size, m.mode, m.uid, m.gid, unix_mtime)
    }

    fn err(e: FsError) -> Seen {
        Seen::Err(e.to_string())
    }

    fn done(r: Result<(), FsError>) -> Seen {
        r.map_or_else(err, |()| Seen::Ok)
    }

    fn entry(name: &str, m: &Metadata) -> (String, String, Option<u64>) {
        (
            name.to_string(),
            format!("{:?}", m.kind),
            matches!(m.kind, EntryKind::File | EntryKind::Symlink).then_some(m.size),
        )
    }

    /// Runs `op`; `mtime` gives the mtime to compare for a stat (the
    /// ramfs's, when explicitly set).
    pub fn run<F: Filesystem>(s: &mut Side<F>, op: &Op, mtime: &dyn Fn(&Metadata) -> Option<i64>) -> Seen {
        let now = 1_000;
        let mut out = FsPath::new();
        match op {
            Op::Stat(p, follow) => s.fs.stat_at(p, *follow).map_or_else(err, |m| stat(&m, mtime(&m))),
            Op::ReadLink(p) => s.fs.read_link(p, &mut out).map_or_else(err, |()| Seen::Path(out.to_string())),
            Op::Canonicalize(p) => s.fs.canonicalize(p, &mut out).map_or_else(err, |()| Seen::Path(out.to_string())),
            Op::Symlink(t, l) => done(s.fs.symlink(t, l, Owner::ROOT, now)),
            Op::Mkdir(p, m) => done(s.fs.create_dir_all(p, *m, Owner::ROOT, now)),
            Op::RemoveDir(p, r) => done(s.fs.remove_dir_at(p, *r, now)),
            Op::Remove(p) => done(s.fs.remove(p, now)),
            Op::Copy(a, b, m) => done(s.fs.copy_at(a, b, *m, now)),
            Op::Rename(a, b, m) => done(s.fs.rename_at(a, b, *m, now)),
            Op::SetAttrs(p, follow, a) => match s.fs.set_attrs(p, *follow, a, now) {
                Ok(()) => Seen::Ok,
                Err(e) if e.error == FsError::Unsupported => Seen::Skip,
                Err(e) => Seen::Err(e.to_string()),
            },
            Op::List(p) => {
                let mut names = Vec::new();
                match s.fs.list(p, &mut |n, m| names.push(entry(n, m))) {
                    Ok(()) => {
                        names.sort();
                        Seen::Names(names)
                    }
                    Err(e) => err(e),
                }
            }
            Op::PathRead(p) => match s.fs.open_read(p) {
                Ok((mut r, size)) => {
                    let mut data = Vec::new();
                    while (data.len() as u64) < size {
                        match s.fs.read_at(&mut r, data.len() as u64, 5000) {
                            Ok([]) => break,
                            Ok(chunk) => data.extend_from_slice(chunk),
                            Err(e) => return err(e),
                        }
                    }
                    s.fs.close_read(r);
                    Seen::Data(Blob(data))
                }
                Err(e) => err(e),
            },
            Op::PathWrite(p, mode, data) => match s.fs.begin_write(p) {
                Ok(mut w) => {
                    if let Err(e) = s.fs.write(&mut w, &data.0) {
                        s.fs.abort_write(w);
                        return err(e);
                    }
                    done(s.fs.commit_write(w, *mode, now))
                }
                Err(e) => err(e),
            },
            Op::Open(p, o) => match s.fs.open(p, o, now) {
                Ok(f) => {
                    s.files.push(Some(f));
                    Seen::Count(s.files.len() - 1)
                }
                Err(e) => err(e),
            },
            Op::Close(h) => match s.files.get_mut(*h).and_then(Option::take) {
                Some(f) => {
                    s.fs.close(f);
                    Seen::Ok
                }
                None => Seen::Skip,
            },
            Op::Read(h, offset, max) => {
                let Some(Some(f)) = s.files.get_mut(*h) else { return Seen::Skip };
                let mut data = Vec::new();
                while data.len() < *max {
                    match s.fs.file_read(f, offset + data.len() as u64, max - data.len(), now) {
                        Ok([]) => break,
                        Ok(chunk) => data.extend_from_slice(chunk),
                        Err(e) => return err(e),
                    }
                }
                Seen::Data(Blob(data))
            }
            Op::Write(h, offset, data) => {
                let Some(Some(f)) = s.files.get_mut(*h) else { return Seen::Skip };
                s.fs.file_write(f, *offset, &data.0, now).map_or_else(err, Seen::Offset)
            }
            Op::FStat(h) => {
                let Some(Some(f)) = s.files.get(*h) else { return Seen::Skip };
                let m = s.fs.file_stat(f);
                stat(&m, mtime(&m))
            }
            Op::SetLen(h, size) => {
                let Some(Some(f)) = s.files.get_mut(*h) else { return Seen::Skip };
                done(s.fs.file_set_len(f, *size, now))
            }
            Op::FSetAttrs(h, a) => {
                let Some(Some(f)) = s.files.get_mut(*h) else { return Seen::Skip };
                s.fs.file_set_attrs(f, a, now).map_or_else(|e| Seen::Err(e.to_string()), |()| Seen::Ok)
            }
            Op::OpenDir(p) => match s.fs.open_dir(p) {
                Ok(d) => {
                    s.dirs.push(Some(d));
                    s.seen.push(Vec::new());
                    Seen::Count(s.dirs.len() - 1)
                }
                Err(e) => err(e),
            },
            Op::ReadDir(h, limit) => {
                let Some(Some(d)) = s.dirs.get_mut(*h) else { return Seen::Skip };
                let seen = &mut s.seen[*h];
                s.fs.read_dir(d, *limit, &mut |n, m| seen.push(entry(n, m))).map_or_else(err, Seen::Count)
            }
            Op::CloseDir(h) => match s.dirs.get_mut(*h).and_then(Option::take) {
                Some(d) => {
                    s.fs.close_dir(d);
                    Seen::Ok
                }
                None => Seen::Skip,
            },
        }
    }

    const NAMES: [&str; 5] = ["a", "b", "c", "l", "m"];

    fn name(rng: &mut Rng) -> &'static str {
        NAMES[rng.below(NAMES.len() as u64) as usize]
    }

    /// A path over a small namespace. `..` only ever follows a name, and
    /// no symlink target has `.` or `..`, so no path climbs above `/`
    /// (where the oracle would leave its directory).
    pub fn path(rng: &mut Rng) -> String {
        if rng.chance(0.03) {
            return "/".into();
        }
        let mut p = String::new();
        for _ in 0..rng.range(1, 3) {
            p.push('/');
            p.push_str(name(rng));
            if rng.chance(0.07) {
                p.push_str("/.");
            }
            if rng.chance(0.07) {
                p.push_str("/..");
            }
        }
        if rng.chance(0.1) {
            p.push('/');
        }
        p
    }

    fn target(rng: &mut Rng) -> String {
        let mut t = if rng.chance(0.3) { "/".to_string() } else { String::new() };
        t.push_str(name(rng));
        if rng.chance(0.3) {
            t.push('/');
            t.push_str(name(rng));
        }
        if rng.chance(0.1) {
            t.push('/');
        }
        t
    }

    fn data(rng: &mut Rng) -> Blob {
        let mut d = vec![0u8; rng.below(9000) as usize];
        rng.fill(&mut d);
        Blob(d)
    }

    fn attrs(rng: &mut Rng) -> SetAttrs {
        SetAttrs {
            size: rng.chance(0.3).then(|| rng.below(12_000)),
            mode: rng.chance(0.4).then(|| *rng.pick(&[0o600, 0o644, 0o755, 0o4755, 0o2775, 0o1777])),
            uid: rng.chance(0.2).then(|| *rng.pick(&[0, 1000])),
            gid: rng.chance(0.2).then(|| *rng.pick(&[0, 1000])),
            atime: rng.chance(0.2).then(|| rng.range(0, 2_000_000_000) as i64),
            mtime: rng.chance(0.3).then(|| rng.range(0, 2_000_000_000) as i64),
        }
    }

    fn parents(rng: &mut Rng) -> MissingParents {
        if rng.chance(0.5) { MissingParents::Create } else { MissingParents::Fail }
    }

    pub fn op(rng: &mut Rng, files: usize, dirs: usize) -> Op {
        let handle = |rng: &mut Rng, n: usize| if n == 0 { 0 } else { rng.below(n as u64) as usize };
        let mut pick = rng.below(24);
        if (files == 0 && (17..=21).contains(&pick)) || (dirs == 0 && pick == 23) {
            // Something to use first.
            pick = if pick == 23 { 22 } else { 15 };
        }
        match pick {
            0 | 1 => Op::Stat(path(rng), rng.chance(0.5)),
            2 => Op::ReadLink(path(rng)),
            3 => Op::Canonicalize(path(rng)),
            4 | 5 => Op::Symlink(target(rng), path(rng)),
            6 => Op::Mkdir(path(rng), rng.chance(0.3).then(|| *rng.pick(&[0o700, 0o755, 0o1777]))),
            7 => Op::RemoveDir(path(rng), rng.chance(0.5)),
            8 => Op::Remove(path(rng)),
            9 => Op::Copy(path(rng), path(rng), parents(rng)),
            10 => Op::Rename(path(rng), path(rng), parents(rng)),
            11 => {
                // std cannot set a symlink's own times: not following, no times.
                let follow = rng.chance(0.5);
                let a = attrs(rng);
                let a = if follow { a } else { SetAttrs { atime: None, mtime: None, ..a } };
                Op::SetAttrs(path(rng), follow, a)
            }
            12 => Op::List(path(rng)),
            13 => Op::PathRead(path(rng)),
            14 => {
                let p: String = path(rng).replace("/.", "/").trim_end_matches('/').to_string();
                let p = if p.is_empty() { "/a".to_string() } else { p };
                Op::PathWrite(p, rng.chance(0.3).then(|| *rng.pick(&[0o600, 0o755])), data(rng))
            }
            15 | 16 => Op::Open(
                path(rng),
                OpenOptions {
                    read: rng.chance(0.7),
                    write: rng.chance(0.6),
                    append: rng.chance(0.15),
                    create: rng.chance(0.5),
                    truncate: rng.chance(0.2),
                    create_new: rng.chance(0.1),
                    mode: rng.chance(0.3).then(|| *rng.pick(&[0o600, 0o777, 0o4755])),
                    owner: None,
                },
            ),
            17 => Op::Close(handle(rng, files)),
            18 => Op::Read(handle(rng, files), rng.below(12_000), rng.below(9_000) as usize),
            19 => Op::Write(handle(rng, files), rng.below(12_000), data(rng)),
            20 => Op::FStat(handle(rng, files)),
            21 => {
                if rng.chance(0.5) {
                    Op::SetLen(handle(rng, files), rng.below(12_000))
                } else {
                    Op::FSetAttrs(handle(rng, files), attrs(rng))
                }
            }
            22 => Op::OpenDir(path(rng)),
            _ => {
                if rng.chance(0.8) {
                    Op::ReadDir(handle(rng, dirs), rng.range(1, 3) as usize)
                } else {
                    Op::CloseDir(handle(rng, dirs))
                }
            }
        }
    }

    /// Ops after which an open directory's listing (names, kinds, sizes)
    /// is no longer fixed.
    pub fn changes_names(op: &Op) -> bool {
        matches!(
            op,
            Op::Write(..)
                | Op::SetLen(..)
                | Op::FSetAttrs(..)
                | Op::SetAttrs(..)
                | Op::Symlink(..)
                | Op::Mkdir(..)
                | Op::RemoveDir(..)
                | Op::Remove(..)
                | Op::Copy(..)
                | Op::Rename(..)
                | Op::PathWrite(..)
                | Op::Open(..)
        )
    }

    pub fn ramfs_mtime(m: &Metadata) -> Option<i64> {
        match m.modified {
            Mtime::Unix(s) => Some(s),
            _ => None,
        }
    }

    pub fn host_mtime(m: &Metadata) -> Option<i64> {
        match m.modified {
            Mtime::Unix(s) => Some(s),
            _ => None,
        }
    }

    pub type RamSide = Side<Ramfs<'static>>;
    pub type HostSide = Side<HostFs>;

    pub fn ramfs() -> Ramfs<'static> {
        let arena: &'static mut [u8] = Box::leak(vec![0u8; 16 << 20].into_boxed_slice());
        Ramfs::new(arena, 0).expect("arena large enough")
    }

    /// The listing an open directory returned in full, if it was not
    /// changed while open.
    pub fn listing<F: Filesystem>(s: &Side<F>, h: usize) -> Vec<(String, String, Option<u64>)> {
        let mut v = s.seen[h].clone();
        v.sort();
        v
    }
}

#[test]
fn the_whole_filesystem_trait_matches_a_linux_directory_on_random_sequences() {
    use fs_level::*;
    let seeds = 80u64;
    let ops_per_seed = 250;
    let mut compared = 0;
    let mut skipped = 0;
    for seed in 0..seeds {
        let mut rng = Rng::new(1000 + seed);
        let mut ram: RamSide = Side::new(ramfs());
        let mut real: HostSide = Side::new(HostFs::new().expect("temp dir"));
        let mut history = Vec::new();
        // Per open directory: whether its names may have changed.
        let mut dirty: Vec<bool> = Vec::new();
        let (mut files, mut dirs) = (0, 0);
        for n in 0..ops_per_seed {
            let op = op(&mut rng, files, dirs);
            let a = run(&mut ram, &op, &ramfs_mtime);
            // The oracle's mtime is compared where the ramfs holds a Unix one.
            let b = run(&mut real, &op, &host_mtime);
            let b = match (&a, b) {
                (Seen::Stat(.., None), Seen::Stat(k, s, m, u, g, _)) => Seen::Stat(k, s, m, u, g, None),
                (_, b) => b,
            };
            history.push(format!("{op:?} -> {a:?}"));
            // What a directory changed while open returns is unspecified.
            let unspecified = matches!(op, Op::ReadDir(h, _) if dirty.get(h).copied().unwrap_or(false));
            if a == Seen::Skip || b == Seen::Skip || unspecified {
                skipped += 1;
                continue;
            }
            assert_eq!(a, b, "seed {seed}, op #{n} {op:?}\nhistory:\n{}", history.join("\n"));
            compared += 1;
            if changes_names(&op) {
                dirty.iter_mut().for_each(|d| *d = true);
            }
            match (&op, &a) {
                (Op::Open(..), Seen::Count(_)) => files += 1,
                (Op::OpenDir(..), Seen::Count(_)) => {
                    dirs += 1;
                    dirty.push(false);
                }
                (Op::ReadDir(h, _), Seen::Count(0)) if !dirty[*h] => {
                    assert_eq!(listing(&ram, *h), listing(&real, *h), "seed {seed}, op #{n}: a whole listing");
                }
                _ => {}
            }
        }
    }
    println!("{compared} operations compared over {seeds} seeds ({skipped} not comparable)");
    assert!(compared > skipped * 5, "most operations are compared");
}

#[test]
fn linux_corner_cases_match_a_linux_directory() {
    use agent_core::{MAX_SYMLINK_FOLLOWS, MissingParents::*, SetAttrs};
    use fs_level::*;
    let mut ram: RamSide = Side::new(ramfs());
    let mut real: HostSide = Side::new(HostFs::new().expect("temp dir"));
    let s = |p: &str| p.to_string();
    let mut ops = vec![
        Op::PathWrite(s("/file"), None, Blob(b"data".to_vec())),
        Op::Stat(s("/file/"), false),
        Op::Stat(s("/missing/../file"), false),
        Op::Mkdir(s("/a/b"), Some(0o1777)),
        Op::Stat(s("/a/b"), false),
        Op::RemoveDir(s("/a/."), false),
        Op::RemoveDir(s("/a/.."), false),
        Op::RemoveDir(s("/a/b/.."), true),
        Op::Stat(s("/a"), false),
        Op::Stat(s("/a/b"), false),
        Op::Copy(s("/file"), s("/file"), Fail),
        Op::PathRead(s("/file")),
        Op::Copy(s("/a"), s("/x"), Fail),
        Op::Copy(s("/none"), s("/p/q"), Create),
        Op::Stat(s("/p"), false),
        Op::Rename(s("/a"), s("/a/c/d"), Create),
        Op::Stat(s("/a/c"), false),
        Op::Symlink(s("l0"), s("/loop")),
        Op::Symlink(s("loop"), s("/l0")),
        Op::Stat(s("/loop"), true),
        Op::Open(
            s("/new/"),
            agent_core::OpenOptions { write: true, create: true, ..agent_core::OpenOptions::default() },
        ),
        Op::SetAttrs(s("/file"), true, SetAttrs { size: Some(9000), mode: Some(0o4711), ..SetAttrs::default() }),
        Op::SetAttrs(s("/file"), true, SetAttrs { uid: Some(1000), mtime: Some(1_234_567), ..SetAttrs::default() }),
        Op::Stat(s("/file"), true),
        Op::Mkdir(s("/m/../n/./o"), None),
        Op::Symlink(s(""), s("/nul\0")),
        Op::Rename(s(""), s("/nul\0"), Fail),
        Op::Copy(s("/none"), s("/nul\0"), Fail),
        Op::Copy(s("/file"), s("/nul\0"), Fail),
        Op::Symlink(s("t"), s("")),
        Op::Stat(s(&"x".repeat(4096)), false),
        Op::Stat(s("/m"), false),
        Op::Stat(s("/n/o"), false),
    ];
    // A chain of symlinks: the last one followed is the bound.
    ops.push(Op::Mkdir(s("/t"), None));
    ops.push(Op::Symlink(s("t"), s("/c0")));
    for n in 1..=MAX_SYMLINK_FOLLOWS {
        ops.push(Op::Symlink(format!("c{}", n - 1), format!("/c{n}")));
    }
    ops.push(Op::List(format!("/c{}/", MAX_SYMLINK_FOLLOWS - 1)));
    ops.push(Op::List(format!("/c{}/", MAX_SYMLINK_FOLLOWS)));
    for op in &ops {
        let a = run(&mut ram, op, &ramfs_mtime);
        let b = run(&mut real, op, &host_mtime);
        let b = match (&a, b) {
            (Seen::Stat(.., None), Seen::Stat(k, s, m, u, g, _)) => Seen::Stat(k, s, m, u, g, None),
            (_, b) => b,
        };
        assert_eq!(a, b, "{op:?}");
    }
}
