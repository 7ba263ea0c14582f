//! `picosandbox run --pool K` against the real guest: K sockets, one line
//! each as it becomes ready; a sandbox a client powers off is replaced by
//! a fresh one; SIGTERM stops every QEMU and exits 0.
//!
//! Needs the guest ELF (`cargo xtask guest`, or `PICOSANDBOX_GUEST`) and
//! `qemu-system-x86_64`. Every wait is bounded.

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

mod common;
use common::guest_elf;

/// Spawn to a socket line, at most (TCG on a shared machine).
const BOOT_TIMEOUT: Duration = Duration::from_secs(120);

fn picosandbox() -> Command {
    Command::new(env!("CARGO_BIN_EXE_picosandbox"))
}

/// Lines of a stream, as they arrive.
fn lines(stream: impl std::io::Read + Send + 'static) -> Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    rx
}

/// The next line starting with `prefix`, without the prefix.
fn next_with(rx: &Receiver<String>, prefix: &str) -> String {
    let deadline = Instant::now() + BOOT_TIMEOUT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                if let Some(rest) = line.strip_prefix(prefix) {
                    return rest.to_string();
                }
            }
            Err(e) => panic!("no {prefix} line: {e}"),
        }
    }
}

fn fs(socket: &str, args: &[&str]) -> std::process::Output {
    picosandbox().arg("fs").arg("--socket").arg(socket).args(args).output().unwrap()
}

fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn run_pool_serves_k_sockets_replaces_a_stopped_one_and_stops_all_on_sigterm() {
    let mut child = picosandbox()
        .args(["run", "--memory", "64", "--pool", "2"])
        .arg("--guest")
        .arg(guest_elf())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (out, err) = (lines(child.stdout.take().unwrap()), lines(child.stderr.take().unwrap()));
    let mut child = Killed(child);
    let mut pids = HashSet::new();
    let mut sockets = Vec::new();
    for _ in 0..2 {
        let socket = next_with(&out, "PICOSANDBOX_SOCKET=");
        let ready = next_with(&err, "picosandbox: sandbox ready at ");
        assert!(ready.starts_with(&socket), "{ready}");
        pids.insert(ready.split("QEMU pid ").nth(1).unwrap().trim().parse::<u32>().unwrap());
        sockets.push(socket);
    }
    assert_ne!(sockets[0], sockets[1]);
    for socket in &sockets {
        let put = fs(socket, &["mkdir", "/mine"]);
        assert!(put.status.success(), "{}", String::from_utf8_lossy(&put.stderr));
    }
    // A client powers the first one off: it is reported and replaced by a
    // fresh sandbox behind a new socket.
    assert!(fs(&sockets[0], &["shutdown"]).status.success());
    assert_eq!(next_with(&out, "PICOSANDBOX_STOPPED="), sockets[0]);
    let fresh = next_with(&out, "PICOSANDBOX_SOCKET=");
    let ready = next_with(&err, "picosandbox: sandbox ready at ");
    pids.insert(ready.split("QEMU pid ").nth(1).unwrap().trim().parse::<u32>().unwrap());
    assert!(!sockets.contains(&fresh));
    let stat = fs(&fresh, &["stat", "/mine"]);
    assert!(!stat.status.success(), "the replacement is fresh, not the stopped one");
    // SIGTERM: everything stops, exit 0, no QEMU left.
    let child = &mut child.0;
    let pid = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    let deadline = Instant::now() + BOOT_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "run --pool did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status}");
    // Every served QEMU is gone (the spare's pid is never printed;
    // `tests/tests/guest_pool.rs` checks that dropping a pool kills it).
    for pid in &pids {
        assert!(!alive(*pid), "QEMU {pid} outlived run --pool");
    }
    for socket in sockets.iter().chain([&fresh]) {
        assert!(!Path::new(socket).exists(), "{socket} was left behind");
    }
}
