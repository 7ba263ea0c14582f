//! The workload: random filesystem operations, seed-era and current,
//! over one client's subtree (`/c<k>/...`, a few short names, three levels
//! deep so paths collide often, and symlinks named `s`), file sizes that favour small files but reach the block and
//! chunk boundaries, and the rule that keeps predictions exact under
//! concurrency.

use agent_core::path::{is_within, split};
use wire::FS_CHUNK_SIZE;

use super::content::Content;
use super::model::{LINK_NAME, LINK_TARGETS, Model, Node, Op};
use super::world::UNIX_BASE_NS;
use crate::rng::Rng;

/// Names of the entries below a client's root.
const NAMES: [&str; 5] = ["a", "b", "c", "d", "e"];

/// Levels below a client's root (with [`NAMES`]: at most 155 entries, and
/// at most 5 per directory, so every `List` answer is small).
const MAX_DEPTH: u64 = 3;

/// The largest file: 10 MiB, a bit over three chunks.
pub const MAX_FILE: u64 = 10 << 20;

/// Sizes around the ramfs block size.
const BLOCK_EDGES: [u64; 6] = [4095, 4096, 4097, 8192, 65_535, 65_536];

/// Sizes around the chunk size, up to the largest file.
const CHUNK_EDGES: [u64; 8] = [
    FS_CHUNK_SIZE as u64 - 1,
    FS_CHUNK_SIZE as u64,
    FS_CHUNK_SIZE as u64 + 1,
    2 * FS_CHUNK_SIZE as u64 - 1,
    2 * FS_CHUNK_SIZE as u64,
    2 * FS_CHUNK_SIZE as u64 + 1,
    3 * FS_CHUNK_SIZE as u64 + 1,
    MAX_FILE,
];

/// The largest file of a bulk run.
pub const BULK_MAX: u64 = 1 << 20;

/// Most data frames one write is cut into (bounds the cost of a write).
const MAX_FRAMES_PER_WRITE: u64 = 64;

/// What a client does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `Stat`.
    Stat,
    /// `List`.
    List,
    /// `Read`.
    Read,
    /// `Write`.
    Write,
    /// `Mkdir`.
    Mkdir,
    /// `Remove`.
    Remove,
    /// `RemoveDir`.
    RemoveDir,
    /// `Copy`.
    Copy,
    /// `Rename`.
    Rename,
    /// A `Stat` or `List` with flipped bytes in its body.
    Corrupt,
    /// `Stat` of the current shape (`follow_symlink` given).
    StatAt,
    /// `RealPath`.
    RealPath,
    /// `SetStat` of a mode and/or a modification time.
    SetStat,
    /// `Mkdir` of the current shape (a mode, a user).
    MkdirWith,
    /// `RemoveDir` with `recursive: false`.
    RemoveEmptyDir,
    /// `Symlink`.
    Symlink,
    /// `ReadLink`.
    ReadLink,
}

/// Where [`Kind::Corrupt`] is in [`KINDS`].
const CORRUPT: usize = 9;

/// Where [`Kind::Symlink`] is in [`KINDS`].
const SYMLINK: usize = 15;

const KINDS: [Kind; 17] = [
    Kind::Stat,
    Kind::List,
    Kind::Read,
    Kind::Write,
    Kind::Mkdir,
    Kind::Remove,
    Kind::RemoveDir,
    Kind::Copy,
    Kind::Rename,
    Kind::Corrupt,
    Kind::StatAt,
    Kind::RealPath,
    Kind::SetStat,
    Kind::MkdirWith,
    Kind::RemoveEmptyDir,
    Kind::Symlink,
    Kind::ReadLink,
];

/// Base weights of [`KINDS`] (writes and reads dominate; the current
/// surface's path operations take about a seventh).
const BASE_WEIGHTS: [u64; 17] = [12, 8, 14, 24, 8, 8, 3, 8, 8, 0, 4, 3, 4, 3, 3, 3, 2];

/// The weights of the operation kinds in one run.
#[derive(Debug, Clone)]
pub struct Mix {
    weights: [u64; 17],
    total: u64,
}

impl Mix {
    /// Weights drawn around the base ones for the seed-era kinds; corrupt
    /// requests only with faults. The current kinds' weights come from
    /// [`Mix::draw_current`], drawn after the rest of a run's shape, so
    /// that adding them left the shape every seed had before unchanged.
    pub fn draw(rng: &mut Rng, faults: bool) -> Mix {
        let mut weights = [0; KINDS.len()];
        for (w, base) in weights.iter_mut().zip(BASE_WEIGHTS).take(CORRUPT + 1) {
            *w = base * rng.range(1, 3);
        }
        weights[CORRUPT] = if faults && rng.chance(0.5) { rng.range(1, 4) } else { 0 };
        Mix { weights, total: weights.iter().sum() }
    }

    /// Draws the weights of the current surface's kinds.
    pub fn draw_current(&mut self, rng: &mut Rng) {
        for (w, base) in self.weights.iter_mut().zip(BASE_WEIGHTS).skip(CORRUPT + 1) {
            *w = base * rng.range(1, 3);
        }
        self.total = self.weights.iter().sum();
    }

    /// No `Symlink` in this run: a symlink takes a block, so one whose
    /// answer was lost may or may not have been made when space was short,
    /// and only a later connection can look (a run that ends with a
    /// shutdown may have none).
    pub fn without_symlinks(&mut self) {
        self.weights[SYMLINK] = 0;
        self.total = self.weights.iter().sum();
    }

    /// The next kind.
    pub fn pick(&self, rng: &mut Rng) -> Kind {
        let mut roll = rng.below(self.total);
        for (kind, weight) in KINDS.iter().zip(self.weights) {
            if roll < weight {
                return *kind;
            }
            roll -= weight;
        }
        unreachable!("the roll is below the total weight")
    }
}

/// A path below `root`, one to three levels deep.
pub fn random_path(rng: &mut Rng, root: &str) -> String {
    let mut path = root.to_string();
    for _ in 0..rng.range(1, MAX_DEPTH) {
        path.push('/');
        let name = *rng.pick(&NAMES);
        path.push_str(name);
    }
    path
}

/// An existing path at or below `root`, found by walking down the model
/// (never a symlink).
fn existing_path(rng: &mut Rng, model: &Model, root: &str) -> String {
    let mut at = root.to_string();
    for _ in 0..MAX_DEPTH {
        let not_link = |(_, node): &(&String, &Node)| !matches!(node, Node::Symlink { .. });
        let n = model.children(&at).filter(not_link).count() as u64;
        if n == 0 || rng.chance(0.2) {
            break;
        }
        let pick = rng.below(n) as usize;
        at = model.children(&at).filter(not_link).nth(pick).map(|(p, _)| p.clone()).unwrap_or(at);
    }
    at
}

/// An existing path most of the time, else a random one.
fn some_path(rng: &mut Rng, model: &Model, root: &str) -> String {
    if rng.chance(0.6) { existing_path(rng, model, root) } else { random_path(rng, root) }
}

/// A path strictly below `root`.
fn below_root(rng: &mut Rng, model: &Model, root: &str) -> String {
    let path = some_path(rng, model, root);
    if path == root { random_path(rng, root) } else { path }
}

/// Which file sizes a run writes, besides mostly small ones.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sizes {
    /// Share of writes of several MiB, at the chunk boundaries.
    pub big: f64,
    /// Share of writes of up to [`BULK_MAX`].
    pub bulk: f64,
}

/// An operation of `kind` (not [`Kind::Corrupt`]) on `root`'s subtree.
pub fn generate(rng: &mut Rng, model: &Model, root: &str, kind: Kind, sizes: Sizes) -> Op {
    match kind {
        Kind::Stat | Kind::Corrupt => Op::Stat(some_path(rng, model, root)),
        Kind::List => Op::List(some_path(rng, model, root)),
        Kind::Read => Op::Read(some_path(rng, model, root)),
        Kind::Write => {
            let path = below_root(rng, model, root);
            let content = Content::new(rng.next_u64(), file_size(rng, sizes));
            Op::Write { path, mode: write_mode(rng), content }
        }
        Kind::Mkdir => Op::Mkdir(below_root(rng, model, root)),
        Kind::Remove => Op::Remove(below_root(rng, model, root)),
        Kind::RemoveDir if rng.chance(0.05) => Op::RemoveDir(root.to_string()),
        Kind::RemoveDir => Op::RemoveDir(below_root(rng, model, root)),
        Kind::Copy => Op::Copy { src: below_root(rng, model, root), dst: some_path(rng, model, root) },
        Kind::Rename => Op::Rename { src: some_path(rng, model, root), dst: some_path(rng, model, root) },
        Kind::StatAt => {
            let path = path_or_link(rng, model, root);
            Op::StatAt { via: model.link_leads_to(&path), path, follow: rng.chance(0.5) }
        }
        Kind::RealPath => {
            let path = path_or_link(rng, model, root);
            Op::RealPath { via: model.link_leads_to(&path), path }
        }
        Kind::Symlink => {
            let target: &&'static str = rng.pick(&LINK_TARGETS);
            Op::Symlink { target, link: link_path(rng, model, root) }
        }
        Kind::ReadLink => Op::ReadLink(path_or_link(rng, model, root)),
        Kind::SetStat => {
            let mode = rng.chance(0.7).then(|| *rng.pick(&MODES));
            let mtime = (mode.is_none() || rng.chance(0.3)).then(|| *rng.pick(&MTIMES));
            Op::SetStat { path: some_path(rng, model, root), follow: rng.chance(0.5), mode, mtime }
        }
        Kind::MkdirWith => {
            let mode = rng.chance(0.5).then(|| *rng.pick(&MODES));
            Op::MkdirWith { path: below_root(rng, model, root), mode, user: *rng.pick(&USERS) }
        }
        Kind::RemoveEmptyDir => Op::RemoveEmptyDir(below_root(rng, model, root)),
    }
}

/// Where a symlink is (or may be): in an existing directory most of the
/// time.
fn link_path(rng: &mut Rng, model: &Model, root: &str) -> String {
    let dir = if rng.chance(0.8) { existing_path(rng, model, root) } else { random_path(rng, root) };
    format!("{dir}/{LINK_NAME}")
}

/// A symlink's path half of the time, else any path.
fn path_or_link(rng: &mut Rng, model: &Model, root: &str) -> String {
    if rng.chance(0.5) { link_path(rng, model, root) } else { some_path(rng, model, root) }
}

/// Modes a `SetStat` or `Mkdir` sets (type and high bits are masked).
const MODES: [u32; 7] = [0o644, 0o600, 0o755, 0o700, 0o4755, 0o100_600, u32::MAX];

/// Modification times a `SetStat` sets: within the run's clock (an
/// answer's times are checked to be), Unix seconds.
const MTIMES: [i64; 2] = [(UNIX_BASE_NS / 1_000_000_000) as i64, (UNIX_BASE_NS / 1_000_000_000) as i64 - 1];

/// Users a current `Mkdir` names: root by default, by name or number, and
/// a name the guest has no user database for (refused).
const USERS: [Option<&str>; 4] = [None, Some("root"), Some("1000"), Some("nobody")];

/// The write that opens a flood: the largest file, at a random path.
pub fn flood_write(rng: &mut Rng, root: &str) -> Op {
    Op::Write { path: random_path(rng, root), mode: None, content: Content::new(rng.next_u64(), MAX_FILE) }
}

/// A file size: mostly tiny, sometimes at a block edge, a share of them
/// at a chunk edge up to [`MAX_FILE`] or large.
fn file_size(rng: &mut Rng, sizes: Sizes) -> u64 {
    if rng.chance(sizes.big) {
        return *rng.pick(&CHUNK_EDGES);
    }
    if rng.chance(sizes.bulk) {
        return rng.range(65_536, BULK_MAX);
    }
    match rng.below(1000) {
        0..50 => 0,
        50..550 => rng.range(1, 64),
        550..820 => rng.range(65, 4096),
        820..940 => rng.range(4097, 65_536),
        940..990 => *rng.pick(&BLOCK_EDGES),
        _ => rng.range(65_537, 262_144),
    }
}

/// Permission bits for a write: usually none, sometimes odd ones (type
/// bits and high bits are masked by the agent).
fn write_mode(rng: &mut Rng) -> Option<u32> {
    if rng.chance(0.6) {
        return None;
    }
    Some(*rng.pick(&[0o644, 0o600, 0o755, 0o640, 0o4755, 0o100_600, 0o7777, u32::MAX]))
}

/// Bytes per data frame for a write of `size` bytes (at most
/// [`FS_CHUNK_SIZE`], and few enough frames to keep writes cheap).
pub fn chunk_size(rng: &mut Rng, size: u64) -> usize {
    let whole = size.clamp(1, FS_CHUNK_SIZE as u64);
    let chunk = match rng.below(4) {
        0 | 1 => whole,
        2 => rng.range(1, whole),
        _ => (*rng.pick(&[1, 7, 512, 4096, 65_536])).min(whole),
    };
    chunk.max(size.div_ceil(MAX_FRAMES_PER_WRITE)).min(FS_CHUNK_SIZE as u64) as usize
}

/// Whether operation `new` must wait for `in_flight` to end: the older
/// one mutates and they name related paths (equal, or one below the
/// other). Operations on unrelated paths commute, even when both create
/// the same missing parents, so the model can apply them in any order. An
/// older read-only operation never blocks: the agent handles it (a read
/// takes its snapshot) before anything sent after it, and the answer it
/// must give was fixed when it was sent. So a file may be replaced,
/// renamed or removed while it is being read.
pub fn conflicts(in_flight: &Op, new: &Op) -> bool {
    if !in_flight.mutates() {
        return false;
    }
    let related = |x: &str, y: &str| is_within(x, y) || is_within(y, x);
    let (a1, a2) = in_flight.paths();
    let (b1, b2) = new.paths();
    [Some(a1), a2].into_iter().flatten().any(|x| [Some(b1), b2].into_iter().flatten().any(|y| related(x, y)))
}

/// Entries `op` may create (parents included).
pub fn new_entries(model: &Model, op: &Op) -> u64 {
    match op {
        Op::Write { path, .. } | Op::Mkdir(path) | Op::MkdirWith { path, .. } => model.missing_components(path),
        Op::Copy { dst, .. } => model.missing_components(dst),
        Op::Symlink { link, .. } => u64::from(model.node(link).is_none()),
        Op::Rename { dst, .. } => split(dst).map_or(0, |(parent, _)| model.missing_components(parent)),
        _ => 0,
    }
}
