//! A download to the host (`Fs::copy_to_host`, the shell's `get`) replaces
//! the host file only when the guest's terminal response says ok: on any
//! failure the old file stays as it was and no temporary file is left.

mod common;

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::read_frame;
use host_sync::proto::frame;
use host_sync::{Client, ClientOptions, Error, cli};
use wire::{FsData, FsEntryInfo, FsResponse, InitResolved, Ready};

const OLD: &[u8] = b"the old host file\n";

/// A fresh directory holding `existing` with [`OLD`] in it.
fn scratch(name: &str) -> (PathBuf, PathBuf) {
    let dir = std::env::temp_dir().join(format!("download-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let existing = dir.join("existing");
    std::fs::write(&existing, OLD).unwrap();
    (dir, existing)
}

/// The old file is intact and nothing else is in its directory.
fn assert_untouched(dir: &Path, existing: &Path) {
    assert_eq!(std::fs::read(existing).unwrap(), OLD, "the host file changed");
    let names: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names, ["existing"], "left behind in {}", dir.display());
    std::fs::remove_dir_all(dir).unwrap();
}

fn in_process() -> (common::Guest, Client) {
    let (guest, stream, ready) = common::booted_guest(32);
    (guest, Client::over_guest(stream, ready, ClientOptions::default()).unwrap())
}

/// A guest that completes the handshake; the test plays the rest.
fn scripted() -> (Client, UnixStream) {
    let (mut host, mut guest) = UnixStream::pair().unwrap();
    let g = std::thread::spawn(move || {
        guest.write_all(&frame(0, &InitResolved::default())).unwrap();
        let _ack = read_frame(&mut guest);
        let ready = Ready { boot_time_ns: 1, init_time_ns: 1, ready_time_ns: 1, agent_version: "scripted" };
        guest.write_all(&frame(0, &ready)).unwrap();
        let _clock = read_frame(&mut guest);
        guest
    });
    let ready = host_sync::sandbox::handshake(&mut host, Instant::now() + Duration::from_secs(5)).unwrap();
    let options = ClientOptions { call_timeout: Duration::from_secs(10), ..ClientOptions::default() };
    (Client::over_guest(host, ready, options).unwrap(), g.join().unwrap())
}

fn id_of(frame: &[u8]) -> u32 {
    u32::from_be_bytes(frame[4..8].try_into().unwrap())
}

#[test]
fn a_completed_download_replaces_the_file() {
    let (_guest, client) = in_process();
    let (dir, existing) = scratch("complete");
    client.fs().write("/f", vec![9u8; 5 << 20]).unwrap();
    assert_eq!(client.fs().copy_to_host("/f", &existing).unwrap(), 5 << 20);
    assert_eq!(std::fs::read(&existing).unwrap(), vec![9u8; 5 << 20]);
    std::fs::write(&existing, OLD).unwrap();
    assert_untouched(&dir, &existing);
}

#[test]
fn a_guest_directory_as_source_leaves_the_host_file() {
    let (_guest, client) = in_process();
    let (dir, existing) = scratch("directory");
    client.fs().mkdir("/d").unwrap();
    let e = client.fs().copy_to_host("/d", &existing).unwrap_err();
    assert!(matches!(e, Error::Fs { .. }), "{e}");
    assert_untouched(&dir, &existing);
}

#[test]
fn a_missing_guest_file_leaves_the_host_file() {
    let (_guest, client) = in_process();
    let (dir, existing) = scratch("missing");
    assert!(client.fs().copy_to_host("/none", &existing).unwrap_err().is_not_found());
    assert_untouched(&dir, &existing);
}

#[test]
fn a_guest_that_stops_mid_transfer_leaves_the_host_file() {
    let (client, mut guest) = scripted();
    let (dir, existing) = scratch("stops");
    let target = existing.clone();
    let c = client.clone();
    let pending = std::thread::spawn(move || c.fs().copy_to_host("/f", target));
    let request = read_frame(&mut guest);
    guest.write_all(&frame(id_of(&request), &FsData { data: &[1u8; 100_000] })).unwrap();
    guest.write_all(&frame(id_of(&request), &FsData { data: &[2u8; 100_000] })).unwrap();
    drop(guest);
    assert!(matches!(pending.join().unwrap(), Err(Error::Disconnected(_))));
    assert_untouched(&dir, &existing);
}

#[test]
fn a_guest_error_after_some_data_leaves_the_host_file() {
    let (client, mut guest) = scripted();
    let (dir, existing) = scratch("error");
    let target = existing.clone();
    let c = client.clone();
    let pending = std::thread::spawn(move || c.fs().copy_to_host("/f", target));
    let request = read_frame(&mut guest);
    guest.write_all(&frame(id_of(&request), &FsData { data: &[1u8; 100_000] })).unwrap();
    let failed = FsResponse::<[FsEntryInfo<'_>; 0]> { ok: false, error: Some("read: i/o error"), data: None };
    guest.write_all(&frame(id_of(&request), &failed)).unwrap();
    match pending.join().unwrap() {
        Err(Error::Fs { message, .. }) => assert_eq!(message, "read: i/o error"),
        other => panic!("{other:?}"),
    }
    assert_untouched(&dir, &existing);
}

#[test]
fn the_shells_get_leaves_the_host_file_on_failure() {
    let (_guest, client) = in_process();
    let (dir, existing) = scratch("shell");
    client.fs().mkdir("/d").unwrap();
    let script = format!("get /d {0}\nget /none {0}\n", existing.display());
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let outcome = host_sync::shell::run_script(&client, script.as_bytes(), &mut out, &mut err, true);
    assert_eq!(outcome.failures, 2);
    let err = String::from_utf8(err).unwrap();
    assert!(err.contains("read /d: read: Is a directory (os error 21)"), "{err}");
    assert_untouched(&dir, &existing);
}

#[test]
fn a_host_directory_as_destination_is_refused_before_the_transfer() {
    let (_guest, client) = in_process();
    let (dir, existing) = scratch("host-dir");
    client.fs().write("/f", "x").unwrap();
    let e = client.fs().copy_to_host("/f", &dir).unwrap_err();
    assert_eq!(e.to_string(), format!("cannot create {}: Is a directory", dir.display()));
    assert_eq!(cli::exit_code(&e), cli::EXIT_LOCAL_IO);
    assert_untouched(&dir, &existing);
}
