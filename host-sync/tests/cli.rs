//! The command line's shell, one-shot commands and demo against an
//! in-process agent.

mod common;

use host_sync::cli;
use host_sync::{Client, ClientOptions};

fn client() -> (common::Guest, Client) {
    let (guest, stream, ready) = common::booted_guest(32);
    (guest, Client::over_guest(stream, ready, ClientOptions::default()).unwrap())
}

#[test]
fn every_shell_command_works() {
    let (_guest, client) = client();
    let dir = std::env::temp_dir().join(format!("cli-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let host_in = dir.join("in file.txt");
    let host_out = dir.join("out.txt");
    std::fs::write(&host_in, "shell data\n").unwrap();
    let script = format!(
        "help\nmkdir /d/e\nput \"{}\" /d/f.txt\nls /d\nstat /d/f.txt\ncat /d/f.txt\ncp /d/f.txt /d/g.txt\n\
         mv /d/g.txt /h.txt\nget /h.txt {}\nrm /h.txt\nrmdir /d\nls\nping\nexit\nls /never-run\n",
        host_in.display(),
        host_out.display()
    );
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let failures = cli::shell(&client, script.as_bytes(), &mut out, &mut err, false);
    let (out, err) = (String::from_utf8(out).unwrap(), String::from_utf8(err).unwrap());
    assert_eq!(failures, 0, "stderr: {err}");
    assert!(out.contains("commands:"));
    assert!(out.contains("-rw-r--r--           11 /d/f.txt"), "{out}");
    assert!(out.contains("drwxr-xr-x            0 /d/e"), "{out}");
    assert!(out.contains("size:     11"));
    assert!(out.contains("shell data\n"));
    assert!(out.contains("pong in"));
    assert_eq!(std::fs::read_to_string(&host_out).unwrap(), "shell data\n");
    assert!(!client.fs().exists("/d").unwrap());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn shell_errors_are_reported_and_the_shell_goes_on() {
    let (_guest, client) = client();
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let failures =
        cli::shell(&client, "cat /nope\nbogus\ncp /a\nstat \"x\nmkdir /ok\n".as_bytes(), &mut out, &mut err, false);
    let err = String::from_utf8(err).unwrap();
    assert_eq!(failures, 4, "{err}");
    assert!(err.contains("error: read /nope: read: not found"), "{err}");
    assert!(err.contains("unknown command \"bogus\""));
    assert!(client.fs().exists("/ok").unwrap());
}

#[test]
fn the_demo_checks_out() {
    let (_guest, client) = client();
    let mut out = Vec::new();
    let steps = cli::demo(&client, &mut out);
    let out = String::from_utf8(out).unwrap();
    assert!(steps.iter().all(|s| s.failure.is_none()), "{out}");
    assert_eq!(steps.len(), 9);
    assert!(!out.contains("FAIL"));
}
