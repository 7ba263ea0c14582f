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
            OwnedOp::Stat(p) => FsOp::Stat { path: p },
            OwnedOp::List(p) => FsOp::List { path: p },
            OwnedOp::Read(p) => FsOp::Read { path: p },
            OwnedOp::Mkdir(p) => FsOp::Mkdir { path: p },
            OwnedOp::Remove(p) => FsOp::Remove { path: p },
            OwnedOp::RemoveDir(p) => FsOp::RemoveDir { path: p },
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
