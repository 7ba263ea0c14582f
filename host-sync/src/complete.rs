//! Tab completion for the shell: command names, guest paths (from a
//! `List` of the directory being typed, given up after
//! [`GUEST_LIST_TIMEOUT`] so a slow guest never freezes the prompt) and
//! host paths for `put` and `get`.
//!
//! The logic is plain functions over a [`Lister`], so it is tested without
//! a terminal or a guest; the shell plugs it into the line editor.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use crate::client::Client;

/// The shell's command names, as completed.
pub const COMMANDS: &[&str] = &[
    "cat", "chmod", "clear", "cp", "exit", "get", "help", "ln", "ls", "mkdir", "mv", "ping", "put", "readlink", "rm",
    "rmdir", "stat", "touch", "truncate",
];

/// How long a guest path completion waits for its `List`; past it the
/// prompt goes on with no candidates.
pub const GUEST_LIST_TIMEOUT: Duration = Duration::from_millis(500);

/// At most this many entries of one host directory are read for a
/// completion (a huge directory must not stall the prompt either).
pub const MAX_HOST_ENTRIES: usize = 4096;

/// What the word under the cursor names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// A command name.
    Command,
    /// A path in the guest.
    Guest,
    /// A path on the host.
    Host,
    /// Nothing that completes (an argument past the last one).
    Nothing,
}

/// What argument `index` (1 = the first after the command) of `command` is.
pub fn target(command: &str, index: usize) -> Target {
    match (command, index) {
        (_, 0) => Target::Command,
        ("put", 1) | ("get", 2) => Target::Host,
        ("put", 2) | ("get", 1) => Target::Guest,
        ("cp" | "mv", 1 | 2) => Target::Guest,
        ("ls" | "stat" | "cat" | "mkdir" | "rm" | "rmdir" | "readlink" | "touch", 1) => Target::Guest,
        ("ln", 2 | 3) | ("chmod" | "truncate", 2) => Target::Guest,
        _ => Target::Nothing,
    }
}

/// The word the cursor is in, parsed with the shell's quoting rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Word {
    /// Byte offset in the line where the word starts (its opening quote,
    /// if it has one).
    pub start: usize,
    /// The word so far, without quotes.
    pub text: String,
    /// Whether the word is inside double quotes.
    pub quoted: bool,
    /// Its index on the line (0 = the command).
    pub index: usize,
    /// The first word of the line (the command), if the cursor is past it.
    pub command: Option<String>,
}

/// The word that ends at byte `pos` of `line`.
pub fn word_at(line: &str, pos: usize) -> Word {
    let head = line.get(..pos).unwrap_or(line);
    let (mut words, mut text, mut start) = (Vec::<String>::new(), String::new(), None::<usize>);
    let mut quoted = false;
    let mut opened_quote = false;
    for (i, c) in head.char_indices() {
        match c {
            '"' => {
                quoted = !quoted;
                if start.is_none() {
                    start = Some(i);
                    opened_quote = true;
                }
            }
            c if c.is_whitespace() && !quoted => {
                if start.take().is_some() {
                    words.push(std::mem::take(&mut text));
                    opened_quote = false;
                }
            }
            c => {
                start.get_or_insert(i);
                text.push(c);
            }
        }
    }
    Word {
        start: start.unwrap_or(head.len()),
        text,
        quoted: quoted || opened_quote,
        index: words.len(),
        command: words.into_iter().next(),
    }
}

/// One name in a directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Name {
    /// The name (no slashes).
    pub name: String,
    /// Whether it is a directory (completed with a trailing `/`).
    pub dir: bool,
}

/// Lists a directory for completion; `None` when it cannot (not there,
/// too slow, ...), which completes nothing.
pub trait Lister {
    /// The names in directory `dir`.
    fn names(&self, dir: &str) -> Option<Vec<Name>>;
}

/// One completion: what the list shows and what replaces the word.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completion {
    /// Shown in the candidate list (the name, `/` after a directory).
    pub display: String,
    /// Replaces the word (from [`Word::start`] to the cursor).
    pub replacement: String,
}

/// The completions for the cursor at `pos` of `line`: the byte offset
/// where the replaced word starts, and the candidates, sorted.
pub fn complete(line: &str, pos: usize, guest: &impl Lister, host: &impl Lister) -> (usize, Vec<Completion>) {
    let word = word_at(line, pos);
    let target = target(word.command.as_deref().unwrap_or(""), word.index);
    let candidates = match target {
        Target::Command => commands(&word),
        Target::Guest => paths(&word, guest, true),
        Target::Host => paths(&word, host, false),
        Target::Nothing => Vec::new(),
    };
    (word.start, candidates)
}

fn commands(word: &Word) -> Vec<Completion> {
    COMMANDS
        .iter()
        .filter(|c| c.starts_with(&word.text))
        .map(|c| Completion { display: (*c).to_string(), replacement: format!("{c} ") })
        .collect()
}

/// Splits a typed path into the directory to list, the text that stands
/// for it in the replacement, and the name prefix. A guest path without a
/// slash is taken from `/` (guest paths are absolute).
fn split_path(text: &str, guest: bool) -> (String, String, &str) {
    match text.rfind('/') {
        Some(slash) => {
            let base = &text[..=slash];
            let dir = if slash == 0 { "/" } else { &text[..slash] };
            (dir.to_string(), base.to_string(), &text[slash + 1..])
        }
        None if guest => ("/".into(), "/".into(), text),
        None => (".".into(), String::new(), text),
    }
}

fn paths(word: &Word, lister: &impl Lister, guest: bool) -> Vec<Completion> {
    let (dir, base, prefix) = split_path(&word.text, guest);
    let Some(names) = lister.names(&dir) else { return Vec::new() };
    let mut out: Vec<Completion> = names
        .into_iter()
        .filter(|n| n.name.starts_with(prefix) && n.name != "." && n.name != "..")
        .filter(|n| prefix.starts_with('.') || !n.name.starts_with('.'))
        .filter(|n| !n.name.contains('"'))
        .map(|n| {
            let slash = if n.dir { "/" } else { "" };
            let path = format!("{base}{}{slash}", n.name);
            let replacement = if word.quoted || path.contains(char::is_whitespace) {
                // A directory keeps its quote open: the path goes on.
                let close = if n.dir { "" } else { "\"" };
                format!("\"{path}{close}")
            } else {
                path
            };
            Completion { display: format!("{}{slash}", n.name), replacement }
        })
        .collect();
    out.sort_by(|a, b| a.display.cmp(&b.display));
    out
}

/// Lists guest directories through a client, giving up after a timeout.
/// At most one `List` is in flight: while a slow one is still pending, a
/// new completion gets no candidates rather than another thread.
pub struct GuestLister {
    client: Client,
    timeout: Duration,
    busy: Arc<AtomicBool>,
}

impl GuestLister {
    /// A lister over `client` that waits at most `timeout` per completion.
    pub fn new(client: Client, timeout: Duration) -> GuestLister {
        GuestLister { client, timeout, busy: Arc::new(AtomicBool::new(false)) }
    }
}

impl Lister for GuestLister {
    fn names(&self, dir: &str) -> Option<Vec<Name>> {
        if self.busy.swap(true, Ordering::SeqCst) {
            return None;
        }
        let (tx, rx) = mpsc::channel();
        let (client, busy, dir) = (self.client.clone(), Arc::clone(&self.busy), dir.to_string());
        let spawned = std::thread::Builder::new().name("picosandbox-complete".into()).spawn(move || {
            let listed = client.fs().list(&dir);
            busy.store(false, Ordering::SeqCst);
            let _ = tx.send(listed);
        });
        if spawned.is_err() {
            self.busy.store(false, Ordering::SeqCst);
            return None;
        }
        let entries = rx.recv_timeout(self.timeout).ok()?.ok()?;
        Some(
            entries
                .iter()
                .map(|e| Name { name: crate::format::file_name(&e.path).to_string(), dir: e.is_dir() })
                .collect(),
        )
    }
}

/// Lists host directories (`~/` is the home directory), reading at most
/// [`MAX_HOST_ENTRIES`] entries.
#[derive(Debug, Clone, Copy, Default)]
pub struct HostLister;

impl HostLister {
    fn resolve(dir: &str) -> PathBuf {
        match (dir.strip_prefix('~'), std::env::var_os("HOME")) {
            (Some(rest), Some(home)) if rest.is_empty() || rest.starts_with('/') => {
                PathBuf::from(home).join(rest.trim_start_matches('/'))
            }
            _ => PathBuf::from(dir),
        }
    }
}

impl Lister for HostLister {
    fn names(&self, dir: &str) -> Option<Vec<Name>> {
        let read = std::fs::read_dir(HostLister::resolve(dir)).ok()?;
        Some(
            read.take(MAX_HOST_ENTRIES)
                .filter_map(Result::ok)
                .filter_map(|e| {
                    let name = e.file_name().into_string().ok()?;
                    // Follows symlinks, so a link to a directory completes as one.
                    let dir = std::fs::metadata(e.path()).is_ok_and(|m| m.is_dir());
                    Some(Name { name, dir })
                })
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::collections::HashMap;

    use super::*;

    /// A directory tree in memory that records which directories it was asked for.
    #[derive(Default)]
    struct Tree {
        dirs: HashMap<&'static str, Vec<Name>>,
        asked: RefCell<Vec<String>>,
    }

    impl Tree {
        fn with(mut self, dir: &'static str, names: &[(&str, bool)]) -> Tree {
            let names = names.iter().map(|(n, d)| Name { name: (*n).into(), dir: *d }).collect();
            self.dirs.insert(dir, names);
            self
        }
    }

    impl Lister for Tree {
        fn names(&self, dir: &str) -> Option<Vec<Name>> {
            self.asked.borrow_mut().push(dir.to_string());
            self.dirs.get(dir).cloned()
        }
    }

    fn guest_tree() -> Tree {
        Tree::default()
            .with("/", &[("data", true), ("demo.txt", false), (".hidden", false)])
            .with("/data", &[("big.bin", false), ("bigger.bin", false), ("my file.txt", false), ("sub", true)])
    }

    fn replacements(line: &str, guest: &Tree, host: &Tree) -> (usize, Vec<String>) {
        let (start, c) = complete(line, line.len(), guest, host);
        (start, c.into_iter().map(|c| c.replacement).collect())
    }

    #[test]
    fn words_are_found_with_the_shells_quoting() {
        let w = word_at("put \"my fi", 10);
        assert_eq!((w.start, w.text.as_str(), w.quoted, w.index), (4, "my fi", true, 1));
        assert_eq!(w.command.as_deref(), Some("put"));
        let w = word_at("get /a ", 7);
        assert_eq!((w.start, w.text.as_str(), w.index), (7, "", 2));
        let w = word_at("st", 2);
        assert_eq!((w.start, w.text.as_str(), w.index, w.command), (0, "st", 0, None));
        // The cursor in the middle of the line: only what is before it counts.
        assert_eq!(word_at("cat /data/big.bin", 9).text, "/data");
    }

    #[test]
    fn arguments_complete_by_their_meaning() {
        assert_eq!(target("anything", 0), Target::Command);
        assert_eq!(target("put", 1), Target::Host);
        assert_eq!(target("put", 2), Target::Guest);
        assert_eq!(target("get", 1), Target::Guest);
        assert_eq!(target("get", 2), Target::Host);
        assert_eq!(target("mv", 2), Target::Guest);
        assert_eq!(target("stat", 2), Target::Nothing);
        assert_eq!(target("ping", 1), Target::Nothing);
    }

    #[test]
    fn command_names_complete() {
        let none = Tree::default();
        assert_eq!(
            replacements("c", &none, &none),
            (0, vec!["cat ".into(), "chmod ".into(), "clear ".into(), "cp ".into()])
        );
        assert_eq!(replacements("tr", &none, &none).1, ["truncate "]);
        assert_eq!(replacements("rmd", &none, &none).1, ["rmdir "]);
        assert!(replacements("zz", &none, &none).1.is_empty());
        assert!(none.asked.borrow().is_empty(), "command names need no listing");
    }

    #[test]
    fn guest_paths_complete_from_the_directory_being_typed() {
        let (guest, host) = (guest_tree(), Tree::default());
        assert_eq!(replacements("ls /d", &guest, &host), (3, vec!["/data/".into(), "/demo.txt".into()]));
        assert_eq!(replacements("cat /data/bigg", &guest, &host).1, ["/data/bigger.bin"]);
        assert_eq!(replacements("cat /data/", &guest, &host).1.len(), 4);
        // A path with a space gets quotes; an open quote is kept.
        assert_eq!(replacements("stat /data/my", &guest, &host).1, ["\"/data/my file.txt\""]);
        assert_eq!(replacements("stat \"/data/my", &guest, &host), (5, vec!["\"/data/my file.txt\"".into()]));
        // Without a slash the name is looked up under `/`.
        assert_eq!(replacements("ls da", &guest, &host).1, ["/data/"]);
        // Hidden names only when asked for.
        assert_eq!(replacements("cat /", &guest, &host).1, ["/data/", "/demo.txt"]);
        assert_eq!(replacements("cat /.", &guest, &host).1, ["/.hidden"]);
        assert_eq!(*guest.asked.borrow(), ["/", "/data", "/data", "/data", "/data", "/", "/", "/"]);
        assert!(host.asked.borrow().is_empty());
    }

    #[test]
    fn put_and_get_complete_host_paths_where_the_host_is() {
        let guest = guest_tree();
        let host = Tree::default().with(".", &[("notes.txt", false), ("out", true)]).with("out", &[("x.bin", false)]);
        assert_eq!(replacements("put no", &guest, &host).1, ["notes.txt"]);
        assert_eq!(replacements("put notes.txt /da", &guest, &host).1, ["/data/"]);
        assert_eq!(replacements("get /data/big.bin o", &guest, &host).1, ["out/"]);
        assert_eq!(replacements("get /data/big.bin out/", &guest, &host).1, ["out/x.bin"]);
        assert_eq!(*host.asked.borrow(), [".", ".", "out"]);
    }

    #[test]
    fn nothing_completes_when_the_listing_fails_or_past_the_last_argument() {
        let (guest, host) = (guest_tree(), Tree::default());
        assert!(replacements("ls /nowhere/x", &guest, &host).1.is_empty());
        assert!(replacements("ping /", &guest, &host).1.is_empty());
        assert!(replacements("stat /data /", &guest, &host).1.is_empty());
    }

    #[test]
    fn host_lister_reads_real_directories() {
        let dir = std::env::temp_dir().join(format!("complete-test-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::fs::write(dir.join("file.txt"), "x").unwrap();
        let mut names = HostLister.names(dir.to_str().unwrap()).unwrap();
        names.sort_by(|a, b| a.name.cmp(&b.name));
        assert_eq!(names, [Name { name: "file.txt".into(), dir: false }, Name { name: "sub".into(), dir: true }]);
        assert!(HostLister.names(dir.join("missing").to_str().unwrap()).is_none());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn host_listings_stop_at_their_bound() {
        let dir = std::env::temp_dir().join(format!("complete-bound-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for i in 0..MAX_HOST_ENTRIES {
            std::fs::File::create(dir.join(i.to_string())).unwrap();
        }
        assert_eq!(HostLister.names(dir.to_str().unwrap()).unwrap().len(), MAX_HOST_ENTRIES);
        std::fs::File::create(dir.join("one-more")).unwrap();
        assert_eq!(HostLister.names(dir.to_str().unwrap()).unwrap().len(), MAX_HOST_ENTRIES);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
