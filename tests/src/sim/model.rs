//! The reference model: what the agent's filesystem must hold, as a sorted
//! map from path to node, and every filesystem operation applied to it with
//! the agent's documented semantics (agent-core's lib.rs and fs.rs,
//! PROTOCOL.md §6 and §10): writes replace a file whole, `Mkdir` makes
//! parents and is idempotent, `RemoveDir` is recursive, `Copy` and `Rename`
//! make the destination's parents first, `Rename` follows rename(2); of the
//! current surface, `RealPath` canonicalizes (a missing last component is
//! kept if its parent resolves), `Stat{follow_symlink}` stats, `SetStat`
//! chmods and sets times step by step as the reference does, `Mkdir{mode}`
//! is `create_dir_all` then a chmod, and `RemoveDir{recursive: false}` is
//! rmdir(2).

use std::collections::BTreeMap;

use agent_core::path::{is_within, split};
use agent_core::{FsError, mode};
use wire::FsOp;

use super::content::Content;

/// The setgid permission bit.
const SETGID: u32 = 0o2000;

/// The name every symlink of the workload has. No other operation names
/// it, so no path the workload makes leads through a symlink; only
/// `Symlink`, `ReadLink`, `Stat{follow_symlink}` and `RealPath` name one.
pub const LINK_NAME: &str = "s";

/// Targets of the workload's symlinks, relative to the link's directory:
/// entries the workload makes, names it never makes (dangling), paths
/// above the client's subtree where nothing is, and the link itself (a
/// loop: `ELOOP` when followed).
pub const LINK_TARGETS: [&str; 6] = ["a", "b/c", "../a", "../../../e", "nowhere", LINK_NAME];

/// Symlinks followed in one resolution before `ELOOP` (Linux's).
const MAX_FOLLOWS: usize = agent_core::MAX_SYMLINK_FOLLOWS as usize;

/// One file or directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Node {
    /// A directory with its permission bits.
    Dir {
        /// Permission bits.
        perm: u32,
    },
    /// A file with its permission bits and content.
    File {
        /// Permission bits.
        perm: u32,
        /// The bytes.
        content: Content,
    },
    /// A symlink (one of [`LINK_TARGETS`]; the ramfs keeps its target in a
    /// block of its own).
    Symlink {
        /// What it points at, as given.
        target: &'static str,
    },
}

/// Metadata of one entry as `Stat` and `List` report it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Info {
    /// Full path.
    pub path: String,
    /// `"file"`, `"dir"` or `"symlink"`.
    pub kind: &'static str,
    /// Size in bytes (for a directory, tmpfs's: 40 and 20 per entry).
    pub size: u64,
    /// The full `st_mode`.
    pub mode: u32,
}

impl Info {
    /// The metadata of `node` at `path` (`None`: the root), a directory
    /// with `entries` entries.
    fn of(path: &str, node: Option<&Node>, entries: usize) -> Info {
        use agent_core::ramfs::{DIR_BASE_SIZE, DIR_ENTRY_SIZE};
        let dir_size = DIR_BASE_SIZE + DIR_ENTRY_SIZE * entries as u64;
        let (kind, size, mode) = match node {
            None => ("dir", dir_size, mode::DIR | mode::DEFAULT_DIR),
            Some(Node::Dir { perm }) => ("dir", dir_size, mode::DIR | perm),
            Some(Node::File { perm, content }) => ("file", content.len, mode::FILE | perm),
            Some(Node::Symlink { target }) => {
                ("symlink", target.len() as u64, mode::SYMLINK | mode::SYMLINK_PERMISSIONS)
            }
        };
        Info { path: path.to_string(), kind, size, mode }
    }
}

/// A filesystem operation with owned paths: what a client asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// `FsOp::Stat`.
    Stat(String),
    /// `FsOp::List`.
    List(String),
    /// `FsOp::Read`.
    Read(String),
    /// `FsOp::Write` and the content streamed after it.
    Write {
        /// Target file.
        path: String,
        /// Permission bits to apply.
        mode: Option<u32>,
        /// The bytes sent.
        content: Content,
    },
    /// `FsOp::Mkdir`.
    Mkdir(String),
    /// `FsOp::Remove`.
    Remove(String),
    /// `FsOp::RemoveDir`.
    RemoveDir(String),
    /// `FsOp::Copy`.
    Copy {
        /// Source file.
        src: String,
        /// Destination.
        dst: String,
    },
    /// `FsOp::Rename`.
    Rename {
        /// What moves.
        src: String,
        /// Where to.
        dst: String,
    },
    /// `FsOp::Stat` of the current shape (`follow_symlink` given).
    StatAt {
        /// The path.
        path: String,
        /// Whether a final symlink is followed.
        follow: bool,
        /// Where the symlink at `path` led when the call was made (its
        /// answer depends on that path too).
        via: Option<String>,
    },
    /// `FsOp::RealPath`.
    RealPath {
        /// The path.
        path: String,
        /// As for [`Op::StatAt`].
        via: Option<String>,
    },
    /// `FsOp::Symlink`.
    Symlink {
        /// What it points at.
        target: &'static str,
        /// Where it is made.
        link: String,
    },
    /// `FsOp::ReadLink`.
    ReadLink(String),
    /// `FsOp::SetStat` with a mode and/or a modification time.
    SetStat {
        /// The path.
        path: String,
        /// Whether a final symlink is followed.
        follow: bool,
        /// Permission bits to set (type and high bits are masked).
        mode: Option<u32>,
        /// Modification time to set, Unix seconds.
        mtime: Option<i64>,
    },
    /// `FsOp::MkdirWith`: the current `Mkdir`.
    MkdirWith {
        /// The directory.
        path: String,
        /// Its permission bits (also when it exists already).
        mode: Option<u32>,
        /// The user it is made as (a name the guest does not know is refused).
        user: Option<&'static str>,
    },
    /// `FsOp::RemoveDir` with `recursive: false`: only an empty directory.
    RemoveEmptyDir(String),
}

impl Op {
    /// The name the agent puts in front of its error messages.
    pub fn name(&self) -> &'static str {
        match self {
            Op::Stat(_) => "stat",
            Op::List(_) => "list",
            Op::Read(_) => "read",
            Op::Write { .. } => "write",
            Op::Mkdir(_) => "mkdir",
            Op::Remove(_) => "remove",
            Op::RemoveDir(_) => "remove_dir",
            Op::Copy { .. } => "copy",
            Op::Rename { .. } => "rename",
            Op::StatAt { .. } => "stat",
            Op::RealPath { .. } => "realpath",
            Op::Symlink { .. } => "symlink",
            Op::ReadLink(_) => "readlink",
            Op::SetStat { .. } => "setstat",
            Op::MkdirWith { .. } => "mkdir",
            Op::RemoveEmptyDir(_) => "remove_dir",
        }
    }

    /// The paths the operation names (for `RealPath`, also the one it
    /// depends on).
    pub fn paths(&self) -> (&str, Option<&str>) {
        match self {
            Op::Stat(p)
            | Op::List(p)
            | Op::Read(p)
            | Op::Mkdir(p)
            | Op::Remove(p)
            | Op::RemoveDir(p)
            | Op::ReadLink(p)
            | Op::RemoveEmptyDir(p) => (p, None),
            Op::StatAt { path, via, .. } => (path, via.as_deref()),
            // Its answer depends on where a symlink leads, else on whether
            // the parent resolves, which a write or mkdir of a sibling may
            // change.
            Op::RealPath { path, via } => (path, via.as_deref().or_else(|| parent(path))),
            // It fails unless the parent is there, which a write or mkdir
            // of a sibling may make.
            Op::Symlink { link, .. } => (link, parent(link)),
            Op::Write { path, .. } | Op::SetStat { path, .. } | Op::MkdirWith { path, .. } => (path, None),
            Op::Copy { src, dst } | Op::Rename { src, dst } => (src, Some(dst)),
        }
    }

    /// Whether the operation can change the filesystem.
    pub fn mutates(&self) -> bool {
        !matches!(
            self,
            Op::Stat(_) | Op::List(_) | Op::Read(_) | Op::StatAt { .. } | Op::RealPath { .. } | Op::ReadLink(_)
        )
    }

    /// Whether the operation is of the current surface (PROTOCOL.md §10).
    pub fn is_current(&self) -> bool {
        self.as_wire().is_current_shape()
    }

    /// The request as it goes on the wire.
    pub fn as_wire(&self) -> FsOp<'_> {
        match self {
            Op::Stat(path) => FsOp::Stat { path, follow_symlink: None },
            Op::List(path) => FsOp::List { path },
            Op::Read(path) => FsOp::Read { path },
            Op::Write { path, mode, .. } => FsOp::Write { path, mode: *mode },
            Op::Mkdir(path) => FsOp::Mkdir { path },
            Op::Remove(path) => FsOp::Remove { path },
            Op::RemoveDir(path) => FsOp::RemoveDir { path, recursive: None },
            Op::Copy { src, dst } => FsOp::Copy { src, dst },
            Op::Rename { src, dst } => FsOp::Rename { src, dst },
            Op::StatAt { path, follow, .. } => FsOp::Stat { path, follow_symlink: Some(*follow) },
            Op::RealPath { path, .. } => FsOp::RealPath { path },
            Op::Symlink { target, link } => FsOp::Symlink { target, link_path: link, user: None },
            Op::ReadLink(path) => FsOp::ReadLink { path },
            Op::SetStat { path, follow, mode, mtime } => {
                let attrs = wire::FsSetAttrs { mode: *mode, mtime: *mtime, ..wire::FsSetAttrs::default() };
                FsOp::SetStat { path, follow_symlink: *follow, attrs }
            }
            Op::MkdirWith { path, mode, user } => FsOp::MkdirWith { path, mode: *mode, user: *user },
            Op::RemoveEmptyDir(path) => FsOp::RemoveDir { path, recursive: Some(false) },
        }
    }
}

/// What the agent must answer to an operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expect {
    /// `ok: true` without data.
    Done,
    /// `ok: false` with exactly this message.
    Failed(String),
    /// `ok: true` with this `Stat` data.
    Stat(Info),
    /// `ok: true` with these `List` entries (sorted by path; the agent's
    /// order is unspecified).
    List(Vec<Info>),
    /// Data chunks with exactly this content, then `ok: true`.
    Read(Content),
    /// `ok: true` with this path (`RealPath`).
    Path(String),
}

/// The filesystem as it must be.
#[derive(Debug, Default, Clone)]
pub struct Model {
    nodes: BTreeMap<String, Node>,
    /// Files holding each non-empty content, by seed (a copy shares its
    /// source's content, as in the ramfs).
    refs: BTreeMap<u64, u32>,
    /// Data blocks of the distinct contents.
    content_blocks: u64,
    /// Symlinks (each holds its target in a content of one block).
    links: u64,
}

/// The prefixes of a normalized path, shortest first: `/a/b` -> `/a`, `/a/b`.
fn prefixes(path: &str) -> impl Iterator<Item = &str> {
    let inner = path.char_indices().skip(1).filter(|&(_, c)| c == '/').map(move |(i, _)| &path[..i]);
    inner.chain((path != "/").then_some(path))
}

/// The parent of a normalized path (`None` for `/`).
fn parent(path: &str) -> Option<&str> {
    split(path).map(|(parent, _)| parent)
}

impl Model {
    /// The node at `path` (never the root).
    pub fn node(&self, path: &str) -> Option<&Node> {
        self.nodes.get(path)
    }

    /// Every node, by path.
    pub fn nodes(&self) -> impl Iterator<Item = (&String, &Node)> {
        self.nodes.iter()
    }

    /// Entries the ramfs uses for this tree (the root included).
    pub fn entries(&self) -> u64 {
        self.nodes.len() as u64 + 1
    }

    /// Data blocks the ramfs uses for this tree's contents (symlink
    /// targets included).
    pub fn content_blocks(&self) -> u64 {
        self.content_blocks + self.links
    }

    /// Distinct non-empty contents (ramfs content records in use).
    pub fn distinct_contents(&self) -> usize {
        self.refs.len() + self.links as usize
    }

    /// Where the symlink at `path` leads (`None`: no symlink there).
    pub fn link_leads_to(&self, path: &str) -> Option<String> {
        match self.nodes.get(path) {
            Some(Node::Symlink { target }) => Some(target_path(path, target)),
            _ => None,
        }
    }

    /// The direct children of `dir`, by path.
    pub fn children<'m>(&'m self, dir: &str) -> impl Iterator<Item = (&'m String, &'m Node)> + use<'m> {
        let prefix = if dir == "/" { "/".to_string() } else { format!("{dir}/") };
        let depth = prefix.len();
        self.nodes
            .range(prefix.clone()..)
            .take_while(move |(path, _)| path.starts_with(&prefix))
            .filter(move |(path, _)| !path[depth..].contains('/'))
    }

    /// Components of `path` that do not exist yet.
    pub fn missing_components(&self, path: &str) -> u64 {
        prefixes(path).filter(|p| !self.nodes.contains_key(*p)).count() as u64
    }

    /// Applies `op` and returns what the agent must answer. A `Write` is
    /// applied as if it succeeds (see [`Model::write`]).
    pub fn apply(&mut self, op: &Op) -> Expect {
        let result = match op {
            Op::Stat(path) => return self.stat(path).map_or_else(|e| failed(op, e), Expect::Stat),
            Op::List(path) => return self.list(path).map_or_else(|e| failed(op, e), Expect::List),
            Op::Read(path) => return self.read(path).map_or_else(|e| failed(op, e), Expect::Read),
            Op::Write { path, mode, content } => self.write(path, *mode, *content),
            Op::Mkdir(path) => self.mkdir(path),
            Op::Remove(path) => self.remove(path),
            Op::RemoveDir(path) => self.remove_dir(path),
            Op::Copy { src, dst } => self.copy(src, dst),
            Op::Rename { src, dst } => self.rename(src, dst),
            Op::StatAt { path, follow, .. } => {
                return self.stat_at(path, *follow).map_or_else(|e| failed(op, e), Expect::Stat);
            }
            Op::RealPath { path, .. } => return self.real_path(path).map_or_else(|e| failed(op, e), Expect::Path),
            Op::ReadLink(path) => return self.read_link(path).map_or_else(|e| failed(op, e), Expect::Path),
            Op::Symlink { target, link } => self.symlink(target, link),
            Op::SetStat { path, follow, mode, mtime } => {
                return self
                    .set_stat(path, *follow, *mode, mtime.is_some())
                    .map_or_else(|(step, e)| Expect::Failed(format!("setstat: {step}: {e}")), |()| Expect::Done);
            }
            Op::MkdirWith { user: Some(user), .. } if *user != "root" && user.parse::<u32>().is_err() => {
                return Expect::Failed(format!("mkdir: unknown user \"{user}\""));
            }
            Op::MkdirWith { path, mode, .. } => self.mkdir_with(path, *mode),
            Op::RemoveEmptyDir(path) => self.remove_empty_dir(path),
        };
        result.map_or_else(|e| failed(op, e), |()| Expect::Done)
    }

    /// Metadata of `path`.
    pub fn stat(&self, path: &str) -> Result<Info, FsError> {
        self.resolve(path).map(|node| Info::of(path, node, self.children(path).count()))
    }

    /// What a write of `path` fails with before any data (the agent's
    /// `begin_write`): a directory there, or a file where a parent must be.
    pub fn write_check(&self, path: &str) -> Result<(), FsError> {
        match self.resolve(path) {
            Ok(None | Some(Node::Dir { .. })) => Err(FsError::IsADirectory),
            Ok(Some(Node::File { .. })) | Err(FsError::NotFound) => Ok(()),
            Ok(Some(Node::Symlink { .. })) => unreachable!("the workload writes no symlink: {path}"),
            Err(e) => Err(e),
        }
    }

    /// A whole write: the check at its start, then the commit at its end
    /// (parents made, content replaced, `mode` applied).
    pub fn write(&mut self, path: &str, mode: Option<u32>, content: Content) -> Result<(), FsError> {
        self.write_check(path)?;
        if let Some(parent) = parent(path) {
            self.mkdir(parent)?;
        }
        let perm = match self.nodes.get(path) {
            Some(Node::File { perm, .. }) => mode.map_or(*perm, |m| m & mode::PERMISSIONS),
            Some(Node::Dir { .. }) => return Err(FsError::IsADirectory),
            Some(Node::Symlink { .. }) => unreachable!("the workload writes no symlink: {path}"),
            None => mode.unwrap_or(mode::DEFAULT_FILE) & mode::PERMISSIONS,
        };
        self.put(path, Node::File { perm, content });
        Ok(())
    }

    /// The entry at `path`: `None` for the root.
    fn resolve(&self, path: &str) -> Result<Option<&Node>, FsError> {
        let mut at: Option<&Node> = None;
        for prefix in prefixes(path) {
            match at {
                Some(Node::File { .. }) => return Err(FsError::NotADirectory),
                Some(Node::Symlink { .. }) => panic!("the workload made a path through a symlink: {path}"),
                _ => {}
            }
            at = Some(self.nodes.get(prefix).ok_or(FsError::NotFound)?);
        }
        Ok(at)
    }

    fn list(&self, path: &str) -> Result<Vec<Info>, FsError> {
        if let Some(Node::File { .. }) = self.resolve(path)? {
            return Err(FsError::NotADirectory);
        }
        Ok(self.children(path).map(|(p, node)| Info::of(p, Some(node), self.children(p).count())).collect())
    }

    fn read(&self, path: &str) -> Result<Content, FsError> {
        match self.resolve(path)? {
            Some(Node::File { content, .. }) => Ok(*content),
            _ => Err(FsError::IsADirectory),
        }
    }

    /// `RealPath`: where the path leads, symlinks followed; also the path
    /// itself when that fails but its parent resolves (to anything: the
    /// reference canonicalizes the parent and appends the name, so a
    /// dangling symlink is its own real path); else the error of resolving
    /// the whole path.
    fn real_path(&self, path: &str) -> Result<String, FsError> {
        match (self.follow(path), parent(path).map(|p| self.resolve(p))) {
            (Ok((at, _)), _) => Ok(at),
            (Err(_), Some(Ok(_))) => Ok(path.to_string()),
            (Err(e), _) => Err(e),
        }
    }

    /// `Stat` with `follow_symlink`: the path as given, the entry a final
    /// symlink leads to if followed.
    fn stat_at(&self, path: &str, follow: bool) -> Result<Info, FsError> {
        if !follow {
            return self.stat(path);
        }
        let (at, node) = self.follow(path)?;
        Ok(Info::of(path, node, self.children(&at).count()))
    }

    /// The entry at `path` with a final symlink followed (as often as
    /// Linux follows), and its own path.
    fn follow(&self, path: &str) -> Result<(String, Option<&Node>), FsError> {
        let mut at = path.to_string();
        for _ in 0..=MAX_FOLLOWS {
            match self.resolve(&at)? {
                Some(Node::Symlink { target }) => at = target_path(&at, target),
                node => return Ok((at, node)),
            }
        }
        Err(FsError::Loop)
    }

    /// `ReadLink`: a symlink's target; anything else is `EINVAL`.
    fn read_link(&self, path: &str) -> Result<String, FsError> {
        match self.resolve(path)? {
            Some(Node::Symlink { target }) => Ok(target.to_string()),
            _ => Err(FsError::InvalidArgument),
        }
    }

    /// What a `Symlink` at `link` fails with before it needs space: the
    /// parent must be a directory and the name free.
    pub fn symlink_check(&self, link: &str) -> Result<(), FsError> {
        self.resolve_parent(link)?;
        if self.nodes.contains_key(link) {
            return Err(FsError::AlreadyExists);
        }
        Ok(())
    }

    /// symlink(2).
    fn symlink(&mut self, target: &'static str, link: &str) -> Result<(), FsError> {
        self.symlink_check(link)?;
        self.put(link, Node::Symlink { target });
        Ok(())
    }

    /// `SetStat` of a mode and/or times: each step resolves the path
    /// again and names itself in a failure (the times are not modelled:
    /// every answer checks only that they are plausible).
    fn set_stat(
        &mut self,
        path: &str,
        follow: bool,
        mode: Option<u32>,
        times: bool,
    ) -> Result<(), (&'static str, FsError)> {
        if let Some(m) = mode {
            let step = if follow { "chmod" } else { "lstat before chmod" };
            self.resolve(path).map_err(|e| (step, e))?;
            self.chmod(path, m);
        }
        if times {
            self.resolve(path).map_err(|e| ("stat before utimensat", e))?;
        }
        Ok(())
    }

    /// Sets the permission bits of the entry at `path` (which exists).
    fn chmod(&mut self, path: &str, m: u32) {
        let perm = m & mode::PERMISSIONS;
        match self.nodes.get_mut(path) {
            Some(Node::Dir { perm: p } | Node::File { perm: p, .. }) => *p = perm,
            Some(Node::Symlink { .. }) => unreachable!("the workload chmods no symlink: {path}"),
            None => {}
        }
    }

    /// The current `Mkdir`: `create_dir_all`, then a chmod of the
    /// directory if a mode is given (also when it existed).
    fn mkdir_with(&mut self, path: &str, mode: Option<u32>) -> Result<(), FsError> {
        self.mkdir(path)?;
        if let Some(m) = mode {
            self.chmod(path, m);
        }
        Ok(())
    }

    /// rmdir(2): an empty directory only.
    fn remove_empty_dir(&mut self, path: &str) -> Result<(), FsError> {
        match self.resolve(path)? {
            None => Err(FsError::Busy),
            Some(Node::File { .. } | Node::Symlink { .. }) => Err(FsError::NotADirectory),
            Some(Node::Dir { .. }) if self.children(path).next().is_some() => Err(FsError::DirectoryNotEmpty),
            Some(Node::Dir { .. }) => {
                self.take(path);
                Ok(())
            }
        }
    }

    /// `create_dir_all`. As Linux, a directory made in a setgid directory
    /// is setgid too (a `chmod` may set the bit).
    fn mkdir(&mut self, path: &str) -> Result<(), FsError> {
        let mut setgid = 0;
        for prefix in prefixes(path) {
            match self.nodes.get(prefix) {
                Some(Node::Dir { perm }) => setgid = perm & SETGID,
                Some(Node::File { .. }) if prefix.len() == path.len() => return Err(FsError::AlreadyExists),
                Some(Node::File { .. }) => return Err(FsError::NotADirectory),
                Some(Node::Symlink { .. }) => unreachable!("the workload makes no directory at a symlink: {path}"),
                None => self.put(prefix, Node::Dir { perm: mode::DEFAULT_DIR | setgid }),
            }
        }
        Ok(())
    }

    fn remove(&mut self, path: &str) -> Result<(), FsError> {
        match self.resolve(path)? {
            Some(Node::File { .. }) => {
                self.take(path);
                Ok(())
            }
            _ => Err(FsError::IsADirectory),
        }
    }

    fn remove_dir(&mut self, path: &str) -> Result<(), FsError> {
        match self.resolve(path)? {
            None => Err(FsError::Busy),
            Some(Node::File { .. }) => Err(FsError::NotADirectory),
            // `remove_dir_all` unlinks a symlink.
            Some(Node::Symlink { .. }) => {
                self.take(path);
                Ok(())
            }
            Some(Node::Dir { .. }) => {
                for p in self.subtree(path) {
                    self.take(&p);
                }
                Ok(())
            }
        }
    }

    /// `op` on a copy of the model, kept only if it succeeds: a failed
    /// copy or rename leaves no parents behind.
    fn or_nothing(&mut self, op: impl FnOnce(&mut Model) -> Result<(), FsError>) -> Result<(), FsError> {
        let mut next = self.clone();
        op(&mut next)?;
        *self = next;
        Ok(())
    }

    fn copy(&mut self, src: &str, dst: &str) -> Result<(), FsError> {
        // The source is checked before any parent is made.
        // As `std::fs::copy`: a source that is not a regular file is
        // refused with its own error.
        let (perm, content) = match self.resolve(src)? {
            Some(Node::File { perm, content }) if dst != "/" => (*perm, *content),
            Some(Node::File { .. }) => return Err(FsError::IsADirectory),
            _ => return Err(FsError::NotRegularFile),
        };
        // As Linux: the destination is truncated before the copy, so a
        // file copied onto itself ends empty.
        let content = if src == dst { Content::EMPTY } else { content };
        self.or_nothing(|m| m.copy_to(perm, content, dst))
    }

    fn copy_to(&mut self, perm: u32, content: Content, dst: &str) -> Result<(), FsError> {
        self.make_parents(dst)?;
        self.resolve_parent(dst)?;
        if let Some(Node::Dir { .. }) = self.nodes.get(dst) {
            return Err(FsError::IsADirectory);
        }
        self.put(dst, Node::File { perm, content });
        Ok(())
    }

    fn rename(&mut self, src: &str, dst: &str) -> Result<(), FsError> {
        // The source is checked before any parent is made.
        self.resolve(src)?;
        self.or_nothing(|m| m.rename_made(src, dst))
    }

    fn rename_made(&mut self, src: &str, dst: &str) -> Result<(), FsError> {
        self.make_parents(dst)?;
        let from_dir = match self.resolve(src)? {
            None => return Err(FsError::Busy),
            Some(node) => matches!(node, Node::Dir { .. }),
        };
        if src == dst {
            return Ok(());
        }
        if is_within(dst, src) {
            return Err(FsError::InvalidArgument);
        }
        if is_within(src, dst) {
            return Err(FsError::DirectoryNotEmpty);
        }
        self.resolve_parent(dst)?;
        if let Some(to) = self.nodes.get(dst) {
            match (from_dir, matches!(to, Node::Dir { .. })) {
                (false, true) => return Err(FsError::IsADirectory),
                (true, false) => return Err(FsError::NotADirectory),
                (true, true) if self.children(dst).next().is_some() => return Err(FsError::DirectoryNotEmpty),
                _ => {}
            }
            self.take(dst);
        }
        for old in self.subtree(src) {
            let node = self.nodes.remove(&old).expect("a path of the subtree");
            self.nodes.insert(format!("{dst}{}", &old[src.len()..]), node);
        }
        Ok(())
    }

    fn make_parents(&mut self, path: &str) -> Result<(), FsError> {
        parent(path).map_or(Ok(()), |p| self.mkdir(p))
    }

    fn resolve_parent(&self, path: &str) -> Result<(), FsError> {
        let parent = parent(path).ok_or(FsError::Busy)?;
        match self.resolve(parent)? {
            Some(Node::File { .. }) => Err(FsError::NotADirectory),
            _ => Ok(()),
        }
    }

    /// `path` and every path below it.
    fn subtree(&self, path: &str) -> Vec<String> {
        let below = format!("{path}/");
        let mut out = vec![path.to_string()];
        out.extend(
            self.nodes.range(below.clone()..).take_while(|(p, _)| p.starts_with(&below)).map(|(p, _)| p.clone()),
        );
        out
    }

    /// Sets the node at `path`, keeping content references counted.
    fn put(&mut self, path: &str, node: Node) {
        match node {
            Node::File { content, .. } => self.retain(content),
            Node::Symlink { .. } => self.links += 1,
            Node::Dir { .. } => {}
        }
        if let Some(old) = self.nodes.insert(path.to_string(), node) {
            self.release(old);
        }
    }

    /// Removes the node at `path`, keeping content references counted.
    fn take(&mut self, path: &str) {
        if let Some(old) = self.nodes.remove(path) {
            self.release(old);
        }
    }

    fn retain(&mut self, content: Content) {
        if content == Content::EMPTY {
            return;
        }
        let refs = self.refs.entry(content.seed).or_insert(0);
        if *refs == 0 {
            self.content_blocks += content.blocks();
        }
        *refs += 1;
    }

    fn release(&mut self, node: Node) {
        if let Node::Symlink { .. } = node {
            self.links -= 1;
        }
        let Node::File { content, .. } = node else { return };
        if content == Content::EMPTY {
            return;
        }
        let refs = self.refs.get_mut(&content.seed).expect("a counted content");
        *refs -= 1;
        if *refs == 0 {
            self.refs.remove(&content.seed);
            self.content_blocks -= content.blocks();
        }
    }
}

/// Where a symlink at `link` with `target` (relative) leads: resolved
/// against the link's directory, `..` stopping at `/`, as Linux resolves
/// it (no directory on the way is a symlink).
fn target_path(link: &str, target: &str) -> String {
    let mut parts: Vec<&str> = parent(link).unwrap_or("/").split('/').filter(|p| !p.is_empty()).collect();
    for part in target.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            name => parts.push(name),
        }
    }
    format!("/{}", parts.join("/"))
}

/// The failure answer for `op`.
fn failed(op: &Op, e: FsError) -> Expect {
    Expect::Failed(format!("{}: {e}", op.name()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(len: u64) -> Content {
        Content::new(len + 1, len)
    }

    #[test]
    fn follows_the_documented_semantics() {
        let mut m = Model::default();
        assert_eq!(m.apply(&Op::Mkdir("/c/a/b".into())), Expect::Done);
        assert_eq!(m.apply(&Op::Mkdir("/c/a".into())), Expect::Done, "idempotent");
        let w = Op::Write { path: "/c/x/y".into(), mode: Some(0o100600), content: file(5) };
        assert_eq!(m.apply(&w), Expect::Done, "parents made");
        assert_eq!(m.stat("/c/x/y").unwrap().mode, 0o100600);
        assert_eq!(m.apply(&Op::Mkdir("/c/x/y".into())), Expect::Failed("mkdir: File exists (os error 17)".into()));
        assert_eq!(m.apply(&Op::Stat("/c/x/y/z".into())), Expect::Failed("stat: Not a directory (os error 20)".into()));
        let cp = Op::Copy { src: "/c/nope".into(), dst: "/c/n/e/w".into() };
        assert_eq!(m.apply(&cp), Expect::Failed("copy: No such file or directory (os error 2)".into()));
        assert!(m.node("/c/n").is_none(), "a copy whose source is missing makes no parent");
        assert_eq!(m.apply(&Op::Mkdir("/c/n/e".into())), Expect::Done);
        let mv = Op::Rename { src: "/c/a".into(), dst: "/c/a/b/c".into() };
        assert_eq!(m.apply(&mv), Expect::Failed("rename: Invalid argument (os error 22)".into()));
        let mv = Op::Rename { src: "/c/x".into(), dst: "/c/n".into() };
        assert_eq!(m.apply(&mv), Expect::Failed("rename: Directory not empty (os error 39)".into()));
        let mv = Op::Rename { src: "/c/x".into(), dst: "/c/n/e".into() };
        assert_eq!(m.apply(&mv), Expect::Done, "onto an empty directory");
        assert_eq!(m.read("/c/n/e/y"), Ok(file(5)));
        assert_eq!(m.content_blocks(), 1);
        assert_eq!(m.apply(&Op::Copy { src: "/c/n/e/y".into(), dst: "/c/z".into() }), Expect::Done);
        assert_eq!((m.content_blocks(), m.distinct_contents()), (1, 1), "a copy shares");
        assert_eq!(m.apply(&Op::RemoveDir("/c".into())), Expect::Done);
        assert_eq!((m.entries(), m.content_blocks(), m.distinct_contents()), (1, 0, 0));
    }
}
