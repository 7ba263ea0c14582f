//! The `picosandbox` binary as people and scripts use it, against the real
//! guest under QEMU: the shell in a pseudo-terminal (history recall with
//! Up, Tab completion of a guest path, Ctrl-C during a large `get`), the
//! shell reading a script from a pipe, and `fs ls|stat --json`.
//!
//! The guest ELF is `$PICOSANDBOX_GUEST`, else the one `cargo xtask guest`
//! builds in this target directory.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, MutexGuard};

use rexpect::process::WaitStatus;
use rexpect::session::{Options, PtySession, spawn_with_options};

mod common;
use common::guest_elf;

/// A hang guard for each expectation (a failing test ends instead of
/// waiting forever); not a speed requirement.
const EXPECT_TIMEOUT_MS: u64 = 120_000;

/// Guest memory for these boots: room for the large file of the Ctrl-C test.
const MEMORY_MIB: &str = "512";

/// The large file's size: big enough that a transfer is still running when
/// Ctrl-C arrives right after its progress bar appears.
const LARGE_BYTES: usize = 192 << 20;

const PROMPT: &str = "picosandbox> ";
/// A fresh prompt, escape codes stripped: the editor draws its prompt
/// after a carriage return, and a new one comes after a newline (the
/// terminal is wide enough that no line being edited wraps).
const NEW_PROMPT: &str = "\n\rpicosandbox> ";

/// The pseudo-terminal's width: wider than any line the tests type.
const COLUMNS: u16 = 400;
const UP: &str = "\x1b[A";

/// One sandbox at a time: the large transfer of one test must not slow
/// another's completion past its timeout on a machine with few cores.
fn one_sandbox() -> MutexGuard<'static, ()> {
    static SANDBOX: Mutex<()> = Mutex::new(());
    SANDBOX.lock().unwrap_or_else(|e| e.into_inner())
}

fn picosandbox() -> &'static str {
    env!("CARGO_BIN_EXE_picosandbox")
}

/// A scratch directory removed at the end.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("shell-e2e-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn command(args: &[&str], state: &Path) -> Command {
    let mut cmd = Command::new(picosandbox());
    cmd.args(args)
        .env("PICOSANDBOX_GUEST", guest_elf())
        .env("XDG_STATE_HOME", state)
        .env("TERM", "xterm")
        .env_remove("NO_COLOR");
    cmd
}

/// `picosandbox shell` in a pseudo-terminal, at its first prompt.
fn shell(state: &Path) -> PtySession {
    let cmd = command(&["shell", "--memory", MEMORY_MIB], state);
    let options = Options::new().timeout_ms(Some(EXPECT_TIMEOUT_MS)).strip_ansi_escape_codes(true);
    let mut session = spawn_with_options(cmd, options).expect("picosandbox starts in a pty");
    // Set before the shell's editor starts (the sandbox boots first).
    let size = rustix::termios::Winsize { ws_row: 50, ws_col: COLUMNS, ws_xpixel: 0, ws_ypixel: 0 };
    rustix::termios::tcsetwinsize(session.process().get_file_handle().unwrap(), size).unwrap();
    session.exp_string(NEW_PROMPT).expect("the first prompt");
    session
}

/// Runs `line` and waits for the next prompt; returns what came between.
fn run(session: &mut PtySession, line: &str) -> String {
    session.send_line(line).unwrap();
    session.exp_string(NEW_PROMPT).unwrap_or_else(|e| panic!("no prompt after {line:?}: {e}"))
}

fn exits_cleanly(mut session: PtySession) {
    session.exp_eof().expect("the shell ends");
    match session.process_mut().wait() {
        Ok(WaitStatus::Exited(_, 0)) => {}
        other => panic!("the shell ended with {other:?}"),
    }
}

#[test]
fn up_recalls_history_and_history_outlives_the_session() {
    let _one = one_sandbox();
    let state = Scratch::new("history");
    let mut shell = shell(&state.0);
    run(&mut shell, "mkdir /recall");
    let stat = run(&mut shell, "stat /recall");
    assert!(stat.contains("kind:     dir"), "{stat}");
    assert!(stat.contains("modified: 20"), "an ISO 8601 date: {stat}");
    run(&mut shell, "rmdir /recall");
    // Up twice, then Enter: the stat again, which now finds nothing.
    shell.send(&format!("{UP}{UP}")).unwrap();
    shell.send_line("").unwrap();
    let again = shell.exp_string(NEW_PROMPT).unwrap();
    assert!(again.contains("error: stat /recall"), "the recalled line ran: {again}");
    shell.send_control('d').unwrap();
    exits_cleanly(shell);
    let history = std::fs::read_to_string(state.0.join("picosandbox/history")).expect("the history file");
    let lines: Vec<&str> = history.lines().collect();
    assert!(lines.ends_with(&["mkdir /recall", "stat /recall", "rmdir /recall", "stat /recall"]), "{history}");
}

#[test]
fn tab_completes_a_guest_path() {
    let _one = one_sandbox();
    let state = Scratch::new("complete");
    let mut shell = shell(&state.0);
    run(&mut shell, "mkdir /complete/alpha");
    let host = state.0.join("bravo.txt");
    std::fs::write(&host, "bravo\n").unwrap();
    run(&mut shell, &format!("put {} /complete/bravo-file.txt", host.display()));
    shell.send("stat /complete/br\t").unwrap();
    shell.send_line("").unwrap();
    let out = shell.exp_string(NEW_PROMPT).unwrap();
    assert!(out.contains("path:     /complete/bravo-file.txt"), "{out}");
    assert!(out.contains("kind:     file"), "{out}");
    shell.send_line("exit").unwrap();
    exits_cleanly(shell);
}

/// Puts a large file in the guest, starts `get`ting it to `dest` in
/// `state`, presses Ctrl-C while it runs, and checks that the transfer
/// stopped and the shell and the guest go on.
fn cancel_a_large_get(state: &Path, dest: &Path) {
    let source = state.join("large.bin");
    let data: Vec<u8> = (0..LARGE_BYTES).map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8).collect();
    std::fs::write(&source, &data).unwrap();
    drop(data);

    let mut shell = shell(state);
    let put = run(&mut shell, &format!("put {} /large.bin", source.display()));
    assert!(put.contains(&format!("{LARGE_BYTES} bytes -> /large.bin")), "{put}");
    shell.send_line(&format!("get /large.bin {}", dest.display())).unwrap();
    // The progress bar's label (the echoed line has the host path there instead).
    shell.exp_string("get /large.bin [").expect("the transfer's progress bar");
    shell.send_control('c').unwrap();
    let out = shell.exp_string(NEW_PROMPT).unwrap();
    assert!(out.contains("cancelled"), "{out}");
    assert!(!out.contains(&format!("{LARGE_BYTES} bytes")), "the get did not finish: {out}");

    let pong = run(&mut shell, "ping");
    assert!(pong.contains("pong in"), "the shell and the guest go on: {pong}");
    let stat = run(&mut shell, "stat /large.bin");
    assert!(stat.contains(&format!("size:     {LARGE_BYTES} ")), "{stat}");
    shell.send_line("exit").unwrap();
    exits_cleanly(shell);
}

#[test]
fn ctrl_c_cancels_a_large_get_and_the_shell_goes_on() {
    let _one = one_sandbox();
    let state = Scratch::new("cancel");
    cancel_a_large_get(&state.0, &state.0.join("new.bin"));
}

/// Ctrl-C during a `get` over an existing host file leaves that file as it
/// was, and no partial file behind.
#[test]
fn ctrl_c_leaves_an_existing_destination_untouched() {
    let _one = one_sandbox();
    let state = Scratch::new("untouched");
    let dest = state.0.join("dest.bin");
    std::fs::write(&dest, "the host's own content\n").unwrap();
    cancel_a_large_get(&state.0, &dest);

    let after = std::fs::read(&dest).unwrap();
    assert!(after == b"the host's own content\n", "the destination is untouched (it now holds {} bytes)", after.len());
    let mut names: Vec<String> =
        std::fs::read_dir(&state.0).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    names.sort();
    assert_eq!(names, ["dest.bin", "large.bin", "picosandbox"], "no partial file is left behind");
}

/// Runs `picosandbox shell` on a script from a pipe; returns its exit
/// status and standard output.
fn script(script: &str, extra: &[&str]) -> (Option<i32>, String) {
    let state = Scratch::new(&format!("script{}", extra.len()));
    let mut args = vec!["shell", "--memory", MEMORY_MIB];
    args.extend_from_slice(extra);
    let mut child =
        command(&args, &state.0).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap();
    child.stdin.take().unwrap().write_all(script.as_bytes()).unwrap();
    let mut out = String::new();
    child.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    (child.wait().unwrap().code(), out)
}

#[test]
fn a_piped_script_has_no_prompt_and_stops_at_the_first_failure() {
    let _one = one_sandbox();
    let lines = "mkdir /s/t\nls /s\nfrobnicate\nls /\n";
    let (code, out) = script(lines, &[]);
    assert_eq!(code, Some(2), "the failed command's status (bad usage): {out}");
    assert!(!out.contains(PROMPT) && !out.contains('\x1b'), "no prompt, no escape codes: {out:?}");
    assert!(out.contains(" t\n"), "{out}");
    assert!(!out.contains(" s\n"), "nothing ran after the failure: {out}");

    let (code, out) = script(lines, &["--keep-going"]);
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains(" s\n"), "the rest ran: {out}");
}

#[test]
fn fs_ls_and_stat_print_json() {
    let _one = one_sandbox();
    let state = Scratch::new("json");
    let mut serve =
        command(&["run", "--memory", "64"], &state.0).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap();
    let mut first = String::new();
    BufReader::new(serve.stdout.take().unwrap()).read_line(&mut first).unwrap();
    let socket = first.trim().strip_prefix("PICOSANDBOX_SOCKET=").expect("run prints the socket").to_string();
    let fs = |args: &[&str]| {
        let out = command(&[&["fs", "--socket", &socket], args].concat(), &state.0).output().unwrap();
        assert!(out.status.success(), "fs {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    fs(&["mkdir", "/j/sub"]);
    let host = state.0.join("f.txt");
    std::fs::write(&host, "json\n").unwrap();
    fs(&["put", host.to_str().unwrap(), "/j/f.txt"]);

    let listing: serde_json::Value = serde_json::from_str(&fs(&["ls", "/j", "--json"])).unwrap();
    assert_eq!(listing["path"], "/j");
    let entries = listing["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 2, "{listing}");
    assert_eq!(entries[0]["path"], "/j/f.txt");
    assert_eq!(entries[0]["kind"], "file");
    assert_eq!(entries[0]["size"], 5);
    assert_eq!(entries[0]["mode"].as_u64().map(|m| m & 0o777), Some(0o644));
    assert!(entries[0]["modified"].is_i64() || entries[0]["modified"].is_null());
    assert_eq!(entries[1]["path"], "/j/sub");
    assert_eq!(entries[1]["kind"], "dir");

    let stat: serde_json::Value = serde_json::from_str(&fs(&["stat", "/j/sub", "--json"])).unwrap();
    assert_eq!(stat["kind"], "dir");
    let mut keys: Vec<&str> = stat.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort();
    let mut expected = ["path", "kind", "size", "mode", "modified"];
    expected.sort();
    assert_eq!(keys, expected);

    let missing = command(&["fs", "--socket", &socket, "stat", "/nope", "--json"], &state.0).output().unwrap();
    assert_eq!(missing.status.code(), Some(1), "the guest refused");
    assert!(missing.stdout.is_empty(), "no document on failure");

    // `run` stops the sandbox on Ctrl-C (SIGINT to it alone here).
    let pid = rustix::process::Pid::from_child(&serve);
    rustix::process::kill_process(pid, rustix::process::Signal::INT).unwrap();
    assert!(serve.wait().unwrap().success());
}
