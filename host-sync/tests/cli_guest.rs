//! The `picosandbox` binary against the real guest under QEMU: `run`
//! serving a relay, `fs` commands driving it, and what happens to host
//! files and the runtime directory when things go wrong.
//!
//! They need the guest ELF (`cargo xtask guest`, or `PICOSANDBOX_GUEST`)
//! and `qemu-system-x86_64`. One QEMU at a time; every wait is bounded.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use host_sync::cli::{EXIT_GUEST_REFUSED, EXIT_INTERRUPTED, EXIT_LOCAL_IO, EXIT_SANDBOX};

mod common;
use common::{guest_elf, one_qemu};

/// Spawn to the socket line, at most.
const BOOT_TIMEOUT: Duration = Duration::from_secs(60);
/// A command or a shutdown, at most.
const EXIT_TIMEOUT: Duration = Duration::from_secs(60);
/// Big enough that the guest is still sending when the test acts: far
/// more than the relay queues for one client and the sockets hold.
const BIG_FILE_BYTES: usize = 64 << 20;

const OLD: &[u8] = b"the old host file\n";

fn picosandbox() -> Command {
    Command::new(env!("CARGO_BIN_EXE_picosandbox"))
}

/// Waits for `child` to exit, killing it after `timeout`.
fn wait(child: &mut Child, timeout: Duration) -> ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("pid {} did not exit within {timeout:?}", child.id());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn signal(pid: u32, signal: rustix::process::Signal) {
    let pid = rustix::process::Pid::from_raw(pid as i32).unwrap();
    rustix::process::kill_process(pid, signal).unwrap();
}

/// A `picosandbox run` serving its relay.
struct Run {
    child: Child,
    socket: PathBuf,
    qemu_pid: u32,
    stderr: Receiver<String>,
}

impl Run {
    fn start(extra: &[&str], env: &[(&str, &Path)]) -> Run {
        let mut cmd = picosandbox();
        cmd.arg("run").arg("--guest").arg(guest_elf()).args(extra);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        let (tx, stderr) = mpsc::channel();
        let err = BufReader::new(child.stderr.take().unwrap());
        std::thread::spawn(move || {
            for line in err.lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let (socket_tx, socket_rx) = mpsc::channel();
        let out = BufReader::new(child.stdout.take().unwrap());
        std::thread::spawn(move || {
            for line in out.lines().map_while(Result::ok) {
                if let Some(path) = line.strip_prefix("PICOSANDBOX_SOCKET=") {
                    let _ = socket_tx.send(PathBuf::from(path));
                }
            }
        });
        let mut run = Run { child, socket: PathBuf::new(), qemu_pid: 0, stderr };
        run.socket = match socket_rx.recv_timeout(BOOT_TIMEOUT) {
            Ok(socket) => socket,
            Err(_) => panic!("no socket line; stderr: {:?}", run.stderr_lines()),
        };
        // The ready line goes to standard error just before the socket line.
        let line = loop {
            match run.stderr.recv_timeout(BOOT_TIMEOUT) {
                Ok(line) if line.contains("QEMU pid ") => break line,
                Ok(_) => {}
                Err(e) => panic!("no ready line on standard error: {e}"),
            }
        };
        run.qemu_pid = line.split("QEMU pid ").nth(1).and_then(|p| p.trim().parse().ok()).expect("QEMU's pid");
        run
    }

    fn stderr_lines(&self) -> Vec<String> {
        self.stderr.try_iter().collect()
    }

    fn fs(&self, args: &[&str]) -> std::process::Output {
        picosandbox().arg("fs").arg("--socket").arg(&self.socket).args(args).output().unwrap()
    }

    fn fs_ok(&self, args: &[&str]) {
        let out = self.fs(args);
        assert!(out.status.success(), "fs {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }

    fn spawn_fs(&self, args: &[&str]) -> Child {
        picosandbox().arg("fs").arg("--socket").arg(&self.socket).args(args).stderr(Stdio::piped()).spawn().unwrap()
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A fresh host directory holding `existing` with [`OLD`] in it.
fn scratch(name: &str) -> (PathBuf, PathBuf) {
    let dir = std::env::temp_dir().join(format!("cli-guest-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let existing = dir.join("existing");
    std::fs::write(&existing, OLD).unwrap();
    (dir, existing)
}

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    names
}

/// Puts a [`BIG_FILE_BYTES`] file at guest `/big`.
fn put_big(run: &Run, dir: &Path) {
    let big = dir.join("big-source");
    std::fs::write(&big, vec![0x5au8; BIG_FILE_BYTES]).unwrap();
    run.fs_ok(&["put", big.to_str().unwrap(), "/big"]);
    std::fs::remove_file(big).unwrap();
}

/// Waits until a download's temporary file in `dir` has bytes in it.
fn wait_for_partial(dir: &Path) -> PathBuf {
    let deadline = Instant::now() + EXIT_TIMEOUT;
    loop {
        let partial = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.to_string_lossy().ends_with(".part") && std::fs::metadata(p).is_ok_and(|m| m.len() > 0));
        if let Some(p) = partial {
            return p;
        }
        assert!(Instant::now() < deadline, "no partial download appeared in {}", dir.display());
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// The old host file is intact and nothing else is in its directory.
fn assert_untouched(dir: &Path, existing: &Path) {
    assert_eq!(std::fs::read(existing).unwrap(), OLD, "the host file changed");
    assert_eq!(names(dir), ["existing"], "left behind in {}", dir.display());
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn get_of_a_guest_directory_leaves_the_host_file() {
    let _q = one_qemu();
    let run = Run::start(&["--memory", "64"], &[]);
    let (dir, existing) = scratch("directory");
    run.fs_ok(&["mkdir", "/d"]);
    let out = run.fs(&["get", "/d", existing.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(i32::from(EXIT_GUEST_REFUSED)), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("Is a directory (os error 21)"), "{out:?}");
    assert_untouched(&dir, &existing);
}

#[test]
fn killing_qemu_mid_get_leaves_the_host_file() {
    let _q = one_qemu();
    let mut run = Run::start(&["--memory", "256"], &[]);
    let (dir, existing) = scratch("killed");
    put_big(&run, &dir);
    let mut get = run.spawn_fs(&["get", "/big", existing.to_str().unwrap()]);
    wait_for_partial(&dir);
    // Hold the download where it is while the VM dies under it.
    signal(get.id(), rustix::process::Signal::STOP);
    signal(run.qemu_pid, rustix::process::Signal::KILL);
    let run_status = wait(&mut run.child, EXIT_TIMEOUT);
    assert_eq!(run_status.code(), Some(i32::from(EXIT_SANDBOX)));
    signal(get.id(), rustix::process::Signal::CONT);
    let status = wait(&mut get, EXIT_TIMEOUT);
    assert_eq!(status.code(), Some(i32::from(EXIT_SANDBOX)), "get: {status}");
    assert_untouched(&dir, &existing);
}

#[test]
fn interrupting_get_removes_its_partial_file() {
    let _q = one_qemu();
    let run = Run::start(&["--memory", "256"], &[]);
    let (dir, existing) = scratch("interrupted");
    put_big(&run, &dir);
    for sig in [rustix::process::Signal::INT, rustix::process::Signal::TERM, rustix::process::Signal::HUP] {
        let mut get = run.spawn_fs(&["get", "/big", existing.to_str().unwrap()]);
        wait_for_partial(&dir);
        signal(get.id(), rustix::process::Signal::STOP);
        signal(get.id(), sig);
        signal(get.id(), rustix::process::Signal::CONT);
        let status = wait(&mut get, EXIT_TIMEOUT);
        assert_eq!(status.code(), Some(i32::from(EXIT_INTERRUPTED)), "get after {sig:?}: {status}");
        assert_eq!(std::fs::read(&existing).unwrap(), OLD, "after {sig:?}");
        assert_eq!(names(&dir), ["existing"], "after {sig:?}");
    }
    // A get left alone replaces the file.
    run.fs_ok(&["get", "/big", existing.to_str().unwrap()]);
    assert_eq!(std::fs::metadata(&existing).unwrap().len(), BIG_FILE_BYTES as u64);
    assert_eq!(names(&dir), ["existing"]);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Whether process `pid` still exists (as anything but a zombie we own).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z "))
}

#[test]
fn sigterm_sighup_and_sigint_stop_run_cleanly() {
    let _q = one_qemu();
    for sig in [rustix::process::Signal::TERM, rustix::process::Signal::HUP, rustix::process::Signal::INT] {
        let mut run = Run::start(&["--memory", "64"], &[]);
        let dir = run.socket.parent().unwrap().to_path_buf();
        assert!(run.socket.exists() && dir.join("agent.sock").exists());
        signal(run.child.id(), sig);
        let status = wait(&mut run.child, EXIT_TIMEOUT);
        // Exit 0 only when QEMU exited 0: the guest powered off cleanly.
        assert_eq!(status.code(), Some(0), "after {sig:?}: {status}; stderr: {:?}", run.stderr_lines());
        assert!(!dir.exists(), "{} left behind after {sig:?}", dir.display());
        assert!(!alive(run.qemu_pid), "QEMU still running after {sig:?}");
    }
}

#[test]
fn sigterm_stops_a_waiting_shell_cleanly() {
    let _q = one_qemu();
    let mut shell = picosandbox()
        .arg("shell")
        .arg("--guest")
        .arg(guest_elf())
        .args(["--memory", "64"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let err = BufReader::new(shell.stderr.take().unwrap());
    std::thread::spawn(move || {
        for line in err.lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + BOOT_TIMEOUT;
    let socket = loop {
        let line =
            rx.recv_timeout(deadline.saturating_duration_since(Instant::now())).expect("the shell's socket line");
        if let Some(path) = line.split("PICOSANDBOX_SOCKET=").nth(1) {
            break PathBuf::from(path);
        }
    };
    let dir = socket.parent().unwrap().to_path_buf();
    assert!(dir.exists());
    // The shell waits for a line on its (open) standard input.
    signal(shell.id(), rustix::process::Signal::TERM);
    let status = wait(&mut shell, EXIT_TIMEOUT);
    assert_eq!(status.code(), Some(0), "{status}; stderr: {:?}", rx.try_iter().collect::<Vec<_>>());
    assert!(!dir.exists(), "{} left behind", dir.display());
}

#[test]
fn run_makes_a_private_random_runtime_dir_in_xdg_runtime_dir() {
    let _q = one_qemu();
    let base = std::env::temp_dir().join(format!("cli-guest-xdg-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    std::fs::create_dir(&base).unwrap();
    // The names an older picosandbox would have used are no obstacle.
    for n in 0..4 {
        std::fs::create_dir(base.join(format!("picosandbox-{}-{n}", std::process::id() + 1))).unwrap();
    }
    let mut run = Run::start(&["--memory", "64"], &[("XDG_RUNTIME_DIR", &base)]);
    let dir = run.socket.parent().unwrap().to_path_buf();
    assert_eq!(dir.parent(), Some(base.as_path()));
    let name = dir.file_name().unwrap().to_str().unwrap();
    let suffix = name.strip_prefix("picosandbox-").unwrap();
    assert!(suffix.len() == 16 && suffix.bytes().all(|c| c.is_ascii_hexdigit()), "{name}");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777, 0o700);
    signal(run.child.id(), rustix::process::Signal::TERM);
    assert_eq!(wait(&mut run.child, EXIT_TIMEOUT).code(), Some(0));
    assert!(!dir.exists());
    assert_eq!(names(&base).len(), 4);
    std::fs::remove_dir_all(base).unwrap();
}

#[test]
fn local_file_errors_name_the_file_and_exit_5() {
    let _q = one_qemu();
    let run = Run::start(&["--memory", "64"], &[]);
    let dir = scratch("local").0;
    let missing = dir.join("x");
    let no_dir = dir.join("no/such/y");
    run.fs_ok(&["put", dir.join("existing").to_str().unwrap(), "/f"]);
    let cases = [
        (
            vec!["put", missing.to_str().unwrap(), "/x"],
            format!("cannot open {}: No such file or directory", missing.display()),
        ),
        (vec!["put", dir.to_str().unwrap(), "/x"], format!("cannot read {}: Is a directory", dir.display())),
        (vec!["get", "/f", dir.to_str().unwrap()], format!("cannot create {}: Is a directory", dir.display())),
        (
            vec!["get", "/f", no_dir.to_str().unwrap()],
            format!("cannot create {}: No such file or directory", no_dir.display()),
        ),
    ];
    for (args, message) in cases {
        let out = run.fs(&args);
        assert_eq!(out.status.code(), Some(i32::from(EXIT_LOCAL_IO)), "{args:?}: {out:?}");
        assert_eq!(String::from_utf8_lossy(&out.stderr).trim(), format!("picosandbox: {message}"), "{args:?}");
    }
    assert_eq!(names(&dir), ["existing"]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn stopping_run_mid_get_never_leaves_a_partial_file() {
    let _q = one_qemu();
    let mut run = Run::start(&["--memory", "256"], &[]);
    let (dir, existing) = scratch("run-stopped");
    put_big(&run, &dir);
    let mut get = run.spawn_fs(&["get", "/big", existing.to_str().unwrap()]);
    wait_for_partial(&dir);
    signal(run.child.id(), rustix::process::Signal::INT);
    let run_status = wait(&mut run.child, EXIT_TIMEOUT);
    let status = wait(&mut get, EXIT_TIMEOUT);
    println!("get while run stopped: {status}");
    // The guest shut down cleanly, under the download or just after it:
    // the host file is the old one or the whole new one, never a part.
    assert_eq!(run_status.code(), Some(0));
    let now = std::fs::read(&existing).unwrap();
    if status.success() {
        assert_eq!(now.len(), BIG_FILE_BYTES, "a get that succeeded left a partial file");
    } else {
        // Either the guest's shutdown answered the read ("shutdown: session
        // aborted", a refusal) or the connection ended first.
        let mut stderr = String::new();
        std::io::Read::read_to_string(get.stderr.as_mut().unwrap(), &mut stderr).unwrap();
        let aborted =
            status.code() == Some(i32::from(EXIT_GUEST_REFUSED)) && stderr.contains("shutdown: session aborted");
        assert!(aborted || status.code() == Some(i32::from(EXIT_SANDBOX)), "get: {status}: {stderr}");
        assert_eq!(now, OLD, "a get that failed changed the file");
    }
    assert_eq!(names(&dir), ["existing"]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn sigterm_to_a_shell_mid_get_leaves_the_host_file() {
    use std::io::Write;
    let _q = one_qemu();
    let (dir, existing) = scratch("shell-get");
    let big = dir.join("big-source");
    std::fs::write(&big, vec![0x5au8; BIG_FILE_BYTES]).unwrap();
    let mut shell = picosandbox()
        .arg("shell")
        .arg("--guest")
        .arg(guest_elf())
        .args(["--memory", "256"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Standard input stays open: the shell waits for more after the get.
    let mut input = shell.stdin.take().unwrap();
    writeln!(input, "put {} /big\nget /big {}", big.display(), existing.display()).unwrap();
    wait_for_partial(&dir);
    signal(shell.id(), rustix::process::Signal::TERM);
    let status = wait(&mut shell, EXIT_TIMEOUT);
    assert_eq!(status.code(), Some(0), "{status}");
    std::fs::remove_file(&big).unwrap();
    assert_untouched(&dir, &existing);
    drop(input);
}
