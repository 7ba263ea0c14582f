//! The `picosandbox` binary's exit codes and messages where no guest is
//! needed: each case fails at once, before anything boots.

use std::path::PathBuf;
use std::process::{Command, Output};

use host_sync::cli::EXIT_SANDBOX;

fn picosandbox(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_picosandbox")).args(args).env_remove("PICOSANDBOX_SOCKET").output().unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("cli-binary-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn a_missing_socket_is_an_unreachable_sandbox() {
    let dir = scratch("missing");
    let socket = dir.join("relay.sock");
    for args in [&["ls"][..], &["put", "/etc/hostname", "/x"], &["get", "/x", "./y"], &["shutdown"]] {
        let out = picosandbox(&[&["fs", "--socket", socket.to_str().unwrap()][..], args].concat());
        assert_eq!(out.status.code(), Some(i32::from(EXIT_SANDBOX)), "{args:?}: {}", stderr(&out));
        assert_eq!(
            stderr(&out).trim(),
            format!("picosandbox: cannot reach the sandbox at {}: No such file or directory", socket.display())
        );
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_socket_nobody_listens_on_is_an_unreachable_sandbox() {
    let dir = scratch("refused");
    let socket = dir.join("relay.sock");
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    let out = picosandbox(&["fs", "--socket", socket.to_str().unwrap(), "stat", "/"]);
    assert_eq!(out.status.code(), Some(i32::from(EXIT_SANDBOX)), "{}", stderr(&out));
    assert!(stderr(&out).contains("cannot reach the sandbox at") && stderr(&out).contains("Connection refused"));
    std::fs::remove_dir_all(dir).unwrap();
}
