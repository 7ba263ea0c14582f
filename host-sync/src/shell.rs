//! The shell: interactive at a terminal, a plain command reader otherwise.
//!
//! At a terminal the line editor is `rustyline`. It is chosen over
//! `reedline` because the shell is blocking code with one prompt: rustyline
//! is a synchronous `readline()` with the emacs keys people expect (arrows,
//! Home/End, Ctrl-A/E/W/U, Ctrl-R reverse search) by default, a
//! file-backed history that is bounded and merges concurrent sessions on
//! append, and a small completion trait; it pulls in a handful of crates
//! where reedline brings crossterm and a larger event loop. The shell
//! keeps [`HISTORY_MAX_ENTRIES`] lines in `$XDG_STATE_HOME/picosandbox/history`
//! (`~/.local/state/...` when unset).
//!
//! Keys: Ctrl-C at the prompt drops the line; Ctrl-C while a command runs
//! cancels its transfer (`get`, `put`, `cat`) and the shell goes on; Ctrl-D
//! on an empty line leaves. While a command runs the terminal does not turn
//! Ctrl-C into a signal (the QEMU process shares the terminal and would
//! stop); a watcher thread reads it as a key instead, and keeps what else
//! is typed meanwhile (up to [`MAX_TYPE_AHEAD_BYTES`]): whole lines run
//! next, as if typed at the prompt, and a partial line is put back on it.
//!
//! When standard input is not a terminal the shell reads commands line by
//! line with no prompt and no escape codes, and stops at the first failed
//! command unless asked to keep going.

use std::io::{BufRead, Write};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use rustyline::completion::{Completer, Pair};
use rustyline::error::ReadlineError;
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::history::FileHistory;
use rustyline::validate::Validator;
use rustyline::{CompletionType, Config, Context, Editor, Helper};

use crate::cancel::{self, Cancel};
use crate::cli::{self, Command, EXIT_LOCAL_IO, EXIT_OK, EXIT_USAGE, Options};
use crate::client::Client;
use crate::complete::{self, GUEST_LIST_TIMEOUT, GuestLister, HostLister};

/// The prompt.
pub const PROMPT: &str = "picosandbox> ";

/// Lines of history kept (in memory and in the file).
pub const HISTORY_MAX_ENTRIES: usize = 1000;

/// The longest line a script may have; a longer one fails.
pub const MAX_SCRIPT_LINE_BYTES: usize = 64 * 1024;

/// How often the Ctrl-C watcher checks whether its command has ended.
pub const CANCEL_POLL_INTERVAL: Duration = Duration::from_millis(50);

/// Bytes typed while a command runs that are kept for after it.
pub const MAX_TYPE_AHEAD_BYTES: usize = 4096;

/// The Ctrl-C byte (ETX) as the terminal sends it without `ISIG`.
const CTRL_C: u8 = 0x03;
/// Ctrl-U: drop the line typed so far.
const CTRL_U: u8 = 0x15;
/// Escape, which starts the sequences of arrows and function keys.
const ESC: u8 = 0x1b;
/// Backspace as terminals send it (DEL), and as some do (Ctrl-H).
const BACKSPACE: [u8; 2] = [0x7f, 0x08];

/// What was typed while a command ran, as editing keys would leave it:
/// the whole lines (to run next) and the partial last line. Ctrl-C drops
/// everything before it, Ctrl-U the line so far, Backspace a character;
/// escape sequences (arrows...) and other control keys are ignored.
pub fn typed_ahead(bytes: &[u8]) -> (Vec<String>, String) {
    let (mut lines, mut line) = (Vec::new(), Vec::<u8>::new());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        i += 1;
        match b {
            CTRL_C => {
                lines.clear();
                line.clear();
            }
            CTRL_U => line.clear(),
            b'\r' | b'\n' => lines.push(String::from_utf8_lossy(&std::mem::take(&mut line)).into_owned()),
            b if BACKSPACE.contains(&b) => {
                // Drop a whole UTF-8 character: its continuation bytes, then its lead.
                while line.pop().is_some_and(|c| c & 0xc0 == 0x80) {}
            }
            ESC => {
                // CSI (`ESC [`) and SS3 (`ESC O`) sequences end at a byte in 0x40..=0x7e.
                if matches!(bytes.get(i), Some(b'[' | b'O')) {
                    i += 1;
                    while i < bytes.len() && !(0x40..=0x7e).contains(&bytes[i]) {
                        i += 1;
                    }
                }
                i += 1;
            }
            b if b < 0x20 => {}
            b => line.push(b),
        }
    }
    (lines, String::from_utf8_lossy(&line).into_owned())
}

/// The history file: `$XDG_STATE_HOME/picosandbox/history`, else
/// `$HOME/.local/state/picosandbox/history`; `None` without either (or
/// with a relative `XDG_STATE_HOME`, which the XDG rules say to ignore).
pub fn history_path(xdg_state_home: Option<&std::ffi::OsStr>, home: Option<&std::ffi::OsStr>) -> Option<PathBuf> {
    let state = match xdg_state_home.map(Path::new) {
        Some(dir) if dir.is_absolute() => dir.to_path_buf(),
        _ => Path::new(home?).join(".local/state"),
    };
    Some(state.join("picosandbox").join("history"))
}

/// What one line did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Line {
    /// Nothing to run (blank).
    Blank,
    /// It ran and succeeded.
    Done,
    /// `exit`.
    Exit,
    /// `clear`.
    Clear,
    /// The transfer was cancelled (not a failure of the command).
    Cancelled,
    /// It failed; the exit status it stands for.
    Failed(u8),
}

/// Parses and runs one line, reporting errors on `err`.
fn execute(client: &Client, line: &str, out: &mut impl Write, err: &mut impl Write, options: &Options) -> Line {
    let words = match cli::words(line) {
        Ok(w) if w.is_empty() => return Line::Blank,
        Ok(w) => w,
        Err(e) => {
            let _ = writeln!(err, "{e}");
            return Line::Failed(EXIT_USAGE);
        }
    };
    let command = match Command::parse(&words) {
        Ok(command) => command,
        Err(e) => {
            let _ = writeln!(err, "{e}");
            return Line::Failed(EXIT_USAGE);
        }
    };
    match command {
        Command::Exit => return Line::Exit,
        Command::Clear => return Line::Clear,
        _ => {}
    }
    let result = cli::run_with(client, &command, out, options);
    let _ = out.flush();
    match result {
        Ok(()) => Line::Done,
        Err(e) if cancel::is_cancelled(&e) => {
            let _ = writeln!(err, "cancelled");
            Line::Cancelled
        }
        Err(e) => {
            let _ = writeln!(err, "error: {e}");
            Line::Failed(cli::exit_code(&e))
        }
    }
}

/// How a script run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScriptOutcome {
    /// Commands that failed.
    pub failures: usize,
    /// The exit status: [`EXIT_OK`], or that of the first failure.
    pub exit_code: u8,
}

/// Reads a line of at most [`MAX_SCRIPT_LINE_BYTES`] (without its
/// newline). `Ok(None)` at the end of input; `Ok(Some(Err(..)))` for a line
/// that is too long or not UTF-8 (the rest of it is skipped).
fn read_line(input: &mut impl BufRead) -> std::io::Result<Option<Result<String, String>>> {
    let mut line = Vec::new();
    let mut too_long = false;
    let mut any = false;
    loop {
        let buf = input.fill_buf()?;
        if buf.is_empty() {
            break;
        }
        any = true;
        let (take, end) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => (i, true),
            None => (buf.len(), false),
        };
        if line.len() + take > MAX_SCRIPT_LINE_BYTES {
            too_long = true;
        } else {
            line.extend_from_slice(&buf[..take]);
        }
        input.consume(take + usize::from(end));
        if end {
            break;
        }
    }
    if !any {
        return Ok(None);
    }
    if too_long {
        return Ok(Some(Err(format!("line longer than {MAX_SCRIPT_LINE_BYTES} bytes"))));
    }
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    Ok(Some(String::from_utf8(line).map_err(|_| "line is not UTF-8".to_string())))
}

/// Runs commands from `input`, one a line, with no prompt and no escape
/// codes, until `exit` or the end of input. Stops at the first failed
/// command unless `keep_going`; every failure is reported on `err`.
pub fn run_script(
    client: &Client,
    mut input: impl BufRead,
    out: &mut impl Write,
    err: &mut impl Write,
    keep_going: bool,
) -> ScriptOutcome {
    let options = Options { quiet: true, colour: false, cancel: Cancel::new() };
    let mut outcome = ScriptOutcome { failures: 0, exit_code: EXIT_OK };
    loop {
        let result = match read_line(&mut input) {
            Ok(None) => break,
            Ok(Some(Ok(line))) => execute(client, &line, out, err, &options),
            Ok(Some(Err(why))) => {
                let _ = writeln!(err, "{why}");
                Line::Failed(EXIT_USAGE)
            }
            Err(e) => {
                let _ = writeln!(err, "reading commands: {e}");
                Line::Failed(EXIT_LOCAL_IO)
            }
        };
        match result {
            Line::Exit => break,
            Line::Failed(code) => {
                outcome.failures += 1;
                if outcome.exit_code == EXIT_OK {
                    outcome.exit_code = code;
                }
                if !keep_going {
                    break;
                }
            }
            Line::Blank | Line::Done | Line::Clear | Line::Cancelled => {}
        }
    }
    outcome
}

/// The line editor's helper: completion, nothing else.
struct ShellHelper {
    guest: GuestLister,
    host: HostLister,
}

impl Completer for ShellHelper {
    type Candidate = Pair;

    fn complete(&self, line: &str, pos: usize, _: &Context<'_>) -> rustyline::Result<(usize, Vec<Pair>)> {
        let (start, candidates) = complete::complete(line, pos, &self.guest, &self.host);
        Ok((start, candidates.into_iter().map(|c| Pair { display: c.display, replacement: c.replacement }).collect()))
    }
}

impl Hinter for ShellHelper {
    type Hint = String;
}

impl Highlighter for ShellHelper {}

impl Validator for ShellHelper {}

impl Helper for ShellHelper {}

/// While alive, the terminal sends Ctrl-C as a byte rather than a signal,
/// and a thread turns that byte into a cancel. Dropping it stops the
/// thread and restores the terminal.
struct CtrlCWatch {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Vec<u8>>>,
    saved: Option<rustix::termios::Termios>,
}

impl CtrlCWatch {
    fn start(cancel: &Cancel) -> CtrlCWatch {
        use rustix::termios::{LocalModes, OptionalActions, tcgetattr, tcsetattr};
        let stdin = std::io::stdin();
        let saved = tcgetattr(stdin.as_fd()).ok();
        if let Some(saved) = &saved {
            let mut keys = saved.clone();
            keys.local_modes -= LocalModes::ISIG | LocalModes::ICANON | LocalModes::ECHO;
            let _ = tcsetattr(stdin.as_fd(), OptionalActions::Now, &keys);
        }
        let stop = Arc::new(AtomicBool::new(false));
        let (flag, cancel) = (Arc::clone(&stop), cancel.clone());
        let thread = std::thread::Builder::new()
            .name("picosandbox-ctrl-c".into())
            .spawn(move || watch(&stdin, &flag, &cancel))
            .ok();
        CtrlCWatch { stop, thread, saved }
    }
}

/// Reads the terminal until `stop`, cancelling on a Ctrl-C byte; returns
/// what was typed (the first [`MAX_TYPE_AHEAD_BYTES`]).
fn watch(stdin: &std::io::Stdin, stop: &AtomicBool, cancel: &Cancel) -> Vec<u8> {
    use rustix::event::{PollFd, PollFlags, poll};
    let timeout = rustix::time::Timespec::try_from(CANCEL_POLL_INTERVAL).unwrap_or_default();
    let mut typed = Vec::new();
    let mut buf = [0u8; 256];
    while !stop.load(Ordering::SeqCst) {
        let mut fds = [PollFd::new(stdin, PollFlags::IN)];
        match poll(&mut fds, Some(&timeout)) {
            Ok(0) | Err(rustix::io::Errno::INTR) => continue,
            Ok(_) => {}
            Err(_) => break,
        }
        match rustix::io::read(stdin.as_fd(), &mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if buf[..n].contains(&CTRL_C) {
                    cancel.cancel();
                }
                keep_typed(&mut typed, &buf[..n]);
            }
            Err(rustix::io::Errno::INTR | rustix::io::Errno::AGAIN) => {}
            Err(_) => break,
        }
    }
    typed
}

/// Adds `new` to what was typed, up to [`MAX_TYPE_AHEAD_BYTES`] in all.
fn keep_typed(typed: &mut Vec<u8>, new: &[u8]) {
    let room = MAX_TYPE_AHEAD_BYTES.saturating_sub(typed.len());
    typed.extend_from_slice(&new[..new.len().min(room)]);
}

impl CtrlCWatch {
    /// Stops watching; returns what was typed meanwhile.
    fn finish(mut self) -> Vec<u8> {
        self.stop();
        self.thread.take().and_then(|t| t.join().ok()).unwrap_or_default()
    }

    fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

impl Drop for CtrlCWatch {
    fn drop(&mut self) {
        self.stop();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        if let Some(saved) = &self.saved {
            let _ = rustix::termios::tcsetattr(std::io::stdin().as_fd(), rustix::termios::OptionalActions::Now, saved);
        }
    }
}

/// Runs the interactive shell on the terminal until `exit` or Ctrl-D.
/// `history`: the history file (its directory is created), or `None` to
/// keep none. Errors of commands are printed and the shell goes on.
pub fn interactive(client: &Client, history: Option<&Path>) -> rustyline::Result<()> {
    let mut editor: Editor<ShellHelper, FileHistory> = Editor::with_config(editor_config()?)?;
    editor.set_helper(Some(ShellHelper {
        guest: GuestLister::new(client.clone(), GUEST_LIST_TIMEOUT),
        host: HostLister,
    }));
    let history = history.filter(|path| prepare_history(path));
    if let Some(path) = history {
        // A missing or unreadable file starts an empty history.
        let _ = editor.load_history(path);
    }
    let options = Options { quiet: false, colour: crate::format::colour_for_stdout(), cancel: Cancel::new() };
    let (mut out, mut err) = (std::io::stdout(), std::io::stderr());
    let mut history_warned = false;
    // Lines typed while the last command ran, and the partial one after them.
    let (mut queued, mut partial) = (std::collections::VecDeque::<String>::new(), String::new());
    loop {
        let line = match queued.pop_front() {
            Some(line) => {
                let _ = writeln!(out, "{PROMPT}{line}");
                let _ = editor.add_history_entry(line.as_str());
                line
            }
            None => match editor.readline_with_initial(PROMPT, (&std::mem::take(&mut partial), "")) {
                Ok(line) => line,
                Err(ReadlineError::Interrupted) => continue,
                Err(ReadlineError::Eof) => return Ok(()),
                Err(e) => return Err(e),
            },
        };
        if let Some(path) = history
            && let Err(e) = editor.append_history(path)
            && !history_warned
        {
            let _ = writeln!(err, "picosandbox: history not saved to {}: {e}", path.display());
            history_warned = true;
        }
        options.cancel.reset();
        let watch = CtrlCWatch::start(&options.cancel);
        let result = execute(client, &line, &mut out, &mut err, &options);
        let typed = watch.finish();
        if typed.contains(&CTRL_C) {
            // Ctrl-C also drops the lines still queued.
            queued.clear();
            partial.clear();
        }
        let (lines, rest) = typed_ahead(&[std::mem::take(&mut partial).as_bytes(), &typed].concat());
        queued.extend(lines);
        partial = rest;
        match result {
            Line::Exit => return Ok(()),
            Line::Clear => editor.clear_screen()?,
            Line::Blank | Line::Done | Line::Cancelled | Line::Failed(_) => {}
        }
    }
}

/// The line editor's settings: bounded history without repeats (a line
/// starting with a space is not kept), completions listed as a shell lists
/// them.
fn editor_config() -> rustyline::Result<Config> {
    Ok(Config::builder()
        .max_history_size(HISTORY_MAX_ENTRIES)?
        .history_ignore_dups(true)?
        .history_ignore_space(true)
        .auto_add_history(true)
        .completion_type(CompletionType::List)
        .build())
}

/// Creates the history file's directory (owner-only); false if it cannot.
fn prepare_history(path: &Path) -> bool {
    use std::os::unix::fs::DirBuilderExt;
    match path.parent() {
        Some(dir) => std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).is_ok(),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use std::ffi::OsStr;

    use super::*;

    #[test]
    fn history_lives_in_the_xdg_state_directory() {
        let home = Some(OsStr::new("/home/ada"));
        assert_eq!(history_path(None, home).unwrap(), Path::new("/home/ada/.local/state/picosandbox/history"));
        assert_eq!(
            history_path(Some(OsStr::new("/var/state")), home).unwrap(),
            Path::new("/var/state/picosandbox/history")
        );
        // A relative XDG_STATE_HOME is ignored, as the spec says.
        assert_eq!(
            history_path(Some(OsStr::new("rel")), home).unwrap(),
            Path::new("/home/ada/.local/state/picosandbox/history")
        );
        assert!(history_path(None, None).is_none());
    }

    fn lines(input: &[u8]) -> Vec<Result<String, String>> {
        let mut input = input;
        let mut out = Vec::new();
        while let Some(line) = read_line(&mut input).unwrap() {
            out.push(line);
        }
        out
    }

    #[test]
    fn the_history_file_keeps_the_last_lines_up_to_its_bound() {
        use rustyline::history::History;
        let dir = std::env::temp_dir().join(format!("shell-history-{}", std::process::id()));
        let path = dir.join("picosandbox/history");
        assert!(prepare_history(&path));
        let config = editor_config().unwrap();
        let mut history = FileHistory::with_config(&config);
        for i in 0..=HISTORY_MAX_ENTRIES {
            history.add(&format!("stat /{i}")).unwrap();
        }
        history.save(&path).unwrap();
        let mut reloaded = FileHistory::with_config(&config);
        reloaded.load(&path).unwrap();
        assert_eq!(reloaded.len(), HISTORY_MAX_ENTRIES);
        let first = reloaded.get(0, rustyline::history::SearchDirection::Forward).unwrap().unwrap();
        assert_eq!(first.entry, "stat /1", "the oldest line went");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn type_ahead_is_kept_up_to_its_bound() {
        let mut typed = Vec::new();
        keep_typed(&mut typed, &[b'a'; MAX_TYPE_AHEAD_BYTES - 1]);
        keep_typed(&mut typed, b"bc");
        assert_eq!(typed.len(), MAX_TYPE_AHEAD_BYTES);
        assert_eq!(typed.last(), Some(&b'b'));
        keep_typed(&mut typed, b"d");
        assert_eq!(typed.len(), MAX_TYPE_AHEAD_BYTES);
    }

    #[test]
    fn keys_typed_during_a_command_are_replayed_as_edited() {
        assert_eq!(typed_ahead(b"ls /\rstat /x\rca"), (vec!["ls /".into(), "stat /x".into()], "ca".into()));
        assert_eq!(typed_ahead(b"ls /a\x03stat /"), (vec![], "stat /".into()), "Ctrl-C drops what came before");
        assert_eq!(typed_ahead(b"lx\x7fs\x1b[A\x1bOB\t\x04\n"), (vec!["ls".into()], String::new()));
        assert_eq!(typed_ahead("caté\x7f\x7fat".as_bytes()), (vec![], "caat".into()));
        assert_eq!(typed_ahead(b"junk\x15ping\n"), (vec!["ping".into()], String::new()));
        assert_eq!(typed_ahead(b"\x1b["), (vec![], String::new()), "a cut escape sequence is ignored");
        assert_eq!(typed_ahead(b""), (vec![], String::new()));
    }

    #[test]
    fn script_lines_are_bounded_and_utf8() {
        assert_eq!(lines(b"ls\r\n\nstat /x"), [Ok("ls".into()), Ok(String::new()), Ok("stat /x".into())]);
        let mut at_bound = vec![b'a'; MAX_SCRIPT_LINE_BYTES];
        at_bound.extend_from_slice(b"\nping\n");
        let got = lines(&at_bound);
        assert_eq!(got[0].as_ref().map(String::len), Ok(MAX_SCRIPT_LINE_BYTES));
        assert_eq!(got[1], Ok("ping".into()));
        let mut over = vec![b'a'; MAX_SCRIPT_LINE_BYTES + 1];
        over.extend_from_slice(b"\nping\n");
        let got = lines(&over);
        assert!(got[0].as_ref().unwrap_err().contains("longer than"));
        assert_eq!(got[1], Ok("ping".into()), "the rest of a long line is skipped, not run");
        assert!(lines(b"cat \xff\n")[0].is_err());
        assert!(lines(b"").is_empty());
    }
}
