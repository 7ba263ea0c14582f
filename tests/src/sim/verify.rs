//! Checks against the filesystem itself, at the end of a run: the whole
//! tree equals the model (nothing acknowledged was lost, nothing appeared),
//! and the ramfs accounting is exactly what the tree holds (no staged
//! write, snapshot or entry leaked).

use agent_core::ramfs::{Ramfs, Usage};
use agent_core::{EntryKind, Filesystem, Metadata, mode};

use super::calls::OpenWrite;
use super::content::Content;
use super::model::{Model, Node};
use super::violation;

/// Compares every entry of `fs` with the model, contents byte for byte.
pub fn compare_tree(fs: &mut Ramfs<'_>, model: &Model) {
    let mut dirs = vec!["/".to_string()];
    let mut seen = 0u64;
    while let Some(dir) = dirs.pop() {
        let mut children: Vec<(String, Metadata)> = Vec::new();
        let base = if dir == "/" { "" } else { dir.as_str() };
        if let Err(e) = fs.list(&dir, &mut |name, m| children.push((format!("{base}/{name}"), *m))) {
            violation!("the ramfs cannot list {dir}: {e}");
        }
        for (path, meta) in children {
            seen += 1;
            match (model.node(&path), meta.kind) {
                (Some(Node::Dir { perm }), EntryKind::Dir) if meta.mode == mode::DIR | perm => dirs.push(path),
                (Some(Node::File { perm, content }), EntryKind::File)
                    if meta.mode == mode::FILE | perm && meta.size == content.len =>
                {
                    if !content_is(fs, &path, *content) {
                        violation!("the ramfs holds other bytes in {path} than the model ({content:?})");
                    }
                }
                (Some(Node::Symlink { target }), EntryKind::Symlink) if meta.size == target.len() as u64 => {
                    let mut got = agent_core::path::PathBuf::new();
                    if fs.read_link(&path, &mut got).is_err() || got.as_str() != *target {
                        violation!("the ramfs has {path} -> {:?}; the model -> {target}", got.as_str());
                    }
                }
                (node, _) => violation!("the ramfs has {path} as {meta:?}; the model has {node:?}"),
            }
        }
    }
    if seen + 1 != model.entries() {
        let lost = model.nodes().map(|(p, _)| p).find(|p| fs.stat(p).is_err());
        violation!("the ramfs holds {seen} entries, the model {}; lost: {lost:?}", model.entries() - 1);
    }
}

/// Whether file `path` holds exactly `content`.
fn content_is(fs: &mut Ramfs<'_>, path: &str, content: Content) -> bool {
    let Ok((mut reader, size)) = fs.open_read(path) else { return false };
    let mut offset = 0;
    let mut same = size == content.len;
    while same && offset < size {
        match fs.read_at(&mut reader, offset, usize::MAX) {
            Ok(bytes) if !bytes.is_empty() && content.matches(offset, bytes) => offset += bytes.len() as u64,
            _ => same = false,
        }
    }
    fs.close_read(reader);
    same
}

/// Decides an open write from the file itself (when no connection is
/// left to probe it): sets which of "before" and "after" the file fits.
pub fn inspect_open_write(fs: &mut Ramfs<'_>, w: &mut OpenWrite) {
    let actual = match fs.stat(&w.path) {
        Ok(m) if m.kind == EntryKind::File => Some((m.mode & mode::PERMISSIONS, m.size)),
        _ => None,
    };
    let mut fits = |candidate: Option<(u32, Content)>| match (candidate, actual) {
        (None, None) => true,
        (Some((perm, content)), Some((p, size))) => {
            perm == p && content.len == size && content_is(fs, &w.path, content)
        }
        _ => false,
    };
    let before = fits(w.before);
    let after = fits(Some((w.after_perm, w.content)));
    w.alive = u8::from(before) | u8::from(after) << 1;
}

/// The ramfs uses exactly the blocks, entries and contents of the tree.
pub fn check_usage(usage: Usage, model: &Model) {
    let got = (usage.blocks_used as u64, usage.entries_used as u64, usage.contents_used);
    let want = (model.content_blocks(), model.entries(), model.distinct_contents());
    if got != want {
        violation!("ramfs usage (blocks, entries, contents) is {got:?}; the tree holds {want:?}");
    }
}

/// Creates file `path` holding `content` directly in the ramfs (before a
/// run; the model is told separately).
pub fn put_file(fs: &mut Ramfs<'_>, path: &str, content: Content) {
    let mut writer = fs.begin_write(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let mut buf = vec![0; 1 << 16];
    let mut offset = 0;
    while offset < content.len {
        let n = (content.len - offset).min(buf.len() as u64) as usize;
        content.fill(offset, &mut buf[..n]);
        fs.write(&mut writer, &buf[..n]).unwrap_or_else(|e| panic!("{path}: {e}"));
        offset += n as u64;
    }
    fs.commit_write(writer, None, 0).unwrap_or_else(|e| panic!("{path}: {e}"));
}

/// Removes file `path` directly from the ramfs (after a run).
pub fn remove_file(fs: &mut Ramfs<'_>, path: &str, now_ns: u64) {
    if let Err(e) = fs.remove(path, now_ns) {
        violation!("the ramfs cannot remove {path}: {e}");
    }
}
