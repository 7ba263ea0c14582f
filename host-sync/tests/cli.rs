//! The command line's shell, one-shot commands and demo against an
//! in-process agent.

mod common;

use host_sync::cancel::{self, Cancel};
use host_sync::cli::{self, Command, EXIT_GUEST_REFUSED, EXIT_OK, EXIT_USAGE};
use host_sync::shell::{self, ScriptOutcome};
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
        "help\nclear\nmkdir /d/e\nput \"{}\" /d/f.txt\nls /d\nstat /d/f.txt\ncat /d/f.txt\ncp /d/f.txt /d/g.txt\n\
         mv /d/g.txt /h.txt\nget /h.txt {}\nrm /h.txt\nrmdir /d\nls\nping\nexit\nls /never-run\n",
        host_in.display(),
        host_out.display()
    );
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let outcome = shell::run_script(&client, script.as_bytes(), &mut out, &mut err, false);
    let (out, err) = (String::from_utf8(out).unwrap(), String::from_utf8(err).unwrap());
    assert_eq!(outcome, ScriptOutcome { failures: 0, exit_code: EXIT_OK }, "stderr: {err}");
    assert!(out.contains("commands:"));
    assert!(!out.contains('\x1b'), "no escape codes in a script's output: {out:?}");
    let line = |name: &str| out.lines().find(|l| l.ends_with(name)).unwrap_or_else(|| panic!("no {name} in {out}"));
    assert!(line(" f.txt").starts_with("-rw-r--r-- 11 "), "{out}");
    assert!(line(" e").starts_with("drwxr-xr-x 40 "), "{out}");
    assert!(out.contains("kind:     file\n"), "{out}");
    assert!(out.contains("size:     11"));
    assert!(out.contains("shell data\n"));
    assert!(out.contains("pong in"));
    assert_eq!(std::fs::read_to_string(&host_out).unwrap(), "shell data\n");
    assert!(!client.fs().exists("/d").unwrap());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn with_keep_going_errors_are_reported_and_the_script_goes_on() {
    let (_guest, client) = client();
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let script = "cat /nope\nbogus\ncp /a\nstat \"x\nmkdir /ok\n";
    let outcome = shell::run_script(&client, script.as_bytes(), &mut out, &mut err, true);
    let err = String::from_utf8(err).unwrap();
    assert_eq!(outcome, ScriptOutcome { failures: 4, exit_code: EXIT_GUEST_REFUSED }, "{err}");
    assert!(err.contains("error: read /nope: read: No such file or directory (os error 2)"), "{err}");
    assert!(err.contains("unknown command \"bogus\""));
    assert!(client.fs().exists("/ok").unwrap());
}

#[test]
fn a_script_stops_at_its_first_failed_command() {
    let (_guest, client) = client();
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let outcome = shell::run_script(&client, "mkdir /a\nfrobnicate\nmkdir /b\n".as_bytes(), &mut out, &mut err, false);
    assert_eq!(outcome, ScriptOutcome { failures: 1, exit_code: EXIT_USAGE });
    assert!(client.fs().exists("/a").unwrap());
    assert!(!client.fs().exists("/b").unwrap(), "nothing runs after the failure");
}

#[test]
fn a_cancelled_transfer_stops_and_the_client_stays_usable() {
    let (_guest, client) = client();
    let data: Vec<u8> = (0..(wire::FS_CHUNK_SIZE as u32) * 2 + 7).map(|i| (i % 251) as u8).collect();
    client.fs().write("/big.bin", &data).unwrap();
    let options = cli::Options { cancel: Cancel::new(), quiet: true, colour: false };
    options.cancel.cancel();
    let mut out = Vec::new();
    let e = cli::run_with(&client, &Command::Cat("/big.bin".into()), &mut out, &options).unwrap_err();
    assert!(cancel::is_cancelled(&e), "{e}");
    assert!(out.is_empty(), "nothing is written after a cancel");

    let dir = std::env::temp_dir().join(format!("cli-cancel-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let host = dir.join("up.bin");
    std::fs::write(&host, &data).unwrap();
    let put = Command::Put(host.display().to_string(), "/big.bin".into());
    let e = cli::run_with(&client, &put, &mut out, &options).unwrap_err();
    assert!(cancel::is_cancelled(&e), "{e}");

    // The client goes on, and the guest file is as it was.
    assert_eq!(client.fs().read("/big.bin").unwrap(), data);
    options.cancel.reset();
    cli::run_with(&client, &Command::Cat("/big.bin".into()), &mut out, &options).unwrap();
    assert_eq!(out, data);
    std::fs::remove_dir_all(&dir).unwrap();
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

#[test]
fn links_modes_times_and_sizes_from_the_shell() {
    let (_guest, client) = client();
    let options = cli::Options { cancel: Cancel::new(), quiet: true, colour: false };
    let run = |line: &str| {
        let mut out = Vec::new();
        let command = Command::parse(&cli::words(line).unwrap()).unwrap();
        cli::run_with(&client, &command, &mut out, &options).map(|()| String::from_utf8(out).unwrap())
    };
    run("touch /t").unwrap();
    assert_eq!(client.fs().stat("/t").unwrap().size, 0, "touch makes an empty file");
    run("truncate 5 /t").unwrap();
    assert_eq!(client.fs().read("/t").unwrap(), [0u8; 5], "extended with zeros");
    client.fs().write("/t", "hello world").unwrap();
    run("truncate 5 /t").unwrap();
    assert_eq!(client.fs().read("/t").unwrap(), b"hello");
    run("truncate 3 /new").unwrap();
    assert_eq!(client.fs().stat("/new").unwrap().size, 3, "truncate makes a missing file");
    run("chmod 600 /t").unwrap();
    assert_eq!(client.fs().stat("/t").unwrap().mode & 0o7777, 0o600);
    run("ln -s /t /link").unwrap();
    assert_eq!(run("readlink /link").unwrap(), "/t\n");
    assert_eq!(client.fs().read("/link").unwrap(), b"hello", "reads follow the link");
    // touch on an existing file keeps its content and moves its time.
    let before = client.fs().stat("/t").unwrap().modified;
    run("touch /t").unwrap();
    assert_eq!(client.fs().read("/t").unwrap(), b"hello");
    assert!(client.fs().stat("/t").unwrap().modified >= before);
    // Errors are the guest's.
    assert!(run("readlink /t").is_err(), "not a link");
    assert!(run("chmod 644 /missing").is_err());
}

#[test]
fn the_new_commands_check_their_arguments() {
    let parse = |line: &str| Command::parse(&cli::words(line).unwrap());
    assert_eq!(parse("ln -s a b"), Ok(Command::Symlink("a".into(), "b".into())));
    assert!(parse("ln a b").unwrap_err().contains("only symbolic links"));
    assert!(parse("ln -s a b c").unwrap_err().contains("too many"));
    assert_eq!(parse("chmod 1777 /tmp"), Ok(Command::Chmod(0o1777, "/tmp".into())));
    assert!(parse("chmod 9 /x").unwrap_err().contains("not an octal mode"));
    assert!(parse("chmod 17777 /x").unwrap_err().contains("not an octal mode"));
    assert_eq!(parse("truncate 0 /x"), Ok(Command::Truncate(0, "/x".into())));
    assert!(parse("truncate -1 /x").unwrap_err().contains("not a size"));
    assert_eq!(parse("touch /x"), Ok(Command::Touch("/x".into())));
    assert_eq!(parse("readlink /x"), Ok(Command::Readlink("/x".into())));
}
