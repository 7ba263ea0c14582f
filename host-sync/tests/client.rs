//! The client against an in-process agent over a socket pair: every API
//! call, many threads at once, and what happens when the guest goes away.

mod common;

use std::io::Read;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::booted_guest;
use host_sync::{Client, ClientOptions, EntryKind, Error};

fn client(arena_mib: usize) -> (common::Guest, Client) {
    let (guest, stream, ready) = booted_guest(arena_mib);
    assert_eq!(ready.v, 5);
    assert_eq!(ready.agent_version, agent_core::VERSION);
    (guest, Client::over_guest(stream, ready, ClientOptions::default()).unwrap())
}

#[test]
fn every_filesystem_call_works() {
    let (_guest, client) = client(64);
    let fs = client.fs();
    fs.mkdir("/work/sub").unwrap();
    fs.write("/work/a.txt", "hello").unwrap();
    assert_eq!(fs.read("/work/a.txt").unwrap(), b"hello");
    assert_eq!(fs.read_to_string("/work/a.txt").unwrap(), "hello");
    let mut out = Vec::new();
    assert_eq!(fs.read_to("/work/a.txt", &mut out).unwrap(), 5);
    assert_eq!(out, b"hello");
    let big: Vec<u8> = (0..(7 << 20)).map(|i: u32| (i % 249) as u8).collect();
    assert_eq!(fs.write_from("/work/big", &mut &big[..]).unwrap(), big.len() as u64);
    assert_eq!(fs.read("/work/big").unwrap(), big);
    let st = fs.stat("/work/a.txt").unwrap();
    assert_eq!((st.kind.clone(), st.size, st.permissions()), (EntryKind::File, 5, 0o644));
    assert!(st.modified.is_some(), "the handshake synced the clock");
    assert!(fs.exists("/work/sub").unwrap());
    assert!(!fs.exists("/nope").unwrap());
    let mut names: Vec<_> = fs.list("/work").unwrap().into_iter().map(|e| (e.path.clone(), e.is_dir())).collect();
    names.sort();
    assert_eq!(names, [("/work/a.txt".into(), false), ("/work/big".into(), false), ("/work/sub".into(), true)]);
    fs.copy("/work/a.txt", "/copies/a").unwrap();
    fs.rename("/copies/a", "/moved/a").unwrap();
    assert_eq!(fs.read("/moved/a").unwrap(), b"hello");
    fs.remove("/moved/a").unwrap();
    fs.remove_dir_all("/work").unwrap();
    assert!(!fs.exists("/work/a.txt").unwrap());
    // Host files in and out, with permissions.
    let dir = std::env::temp_dir().join(format!("host-sync-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let src = dir.join("in.bin");
    std::fs::write(&src, &big[..100_000]).unwrap();
    std::fs::set_permissions(&src, std::os::unix::fs::PermissionsExt::from_mode(0o640)).unwrap();
    assert_eq!(fs.copy_from_host(&src, "/host/in.bin").unwrap(), 100_000);
    assert_eq!(fs.stat("/host/in.bin").unwrap().permissions(), 0o640);
    let back = dir.join("out.bin");
    assert_eq!(fs.copy_to_host("/host/in.bin", &back).unwrap(), 100_000);
    assert_eq!(std::fs::read(&back).unwrap(), &big[..100_000]);
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(client.ping().unwrap() < Duration::from_secs(5));
}

#[test]
fn guest_errors_carry_the_guest_message() {
    let (_guest, client) = client(16);
    let fs = client.fs();
    match fs.stat("/missing") {
        Err(Error::Fs { op: "stat", path, message }) => {
            assert_eq!((path.as_str(), message.as_str()), ("/missing", "stat: No such file or directory (os error 2)"));
        }
        other => panic!("{other:?}"),
    }
    fs.write("/f", "x").unwrap();
    let e = fs.read("/").unwrap_err();
    assert_eq!(e.to_string(), "read /: read: Is a directory (os error 21)");
    assert!(matches!(fs.mkdir("/f/g"), Err(Error::Fs { .. })));
    assert!(client.is_open(), "errors do not end the connection");
}

#[test]
fn eight_threads_share_one_client() {
    let (_guest, client) = client(128);
    let client = Arc::new(client);
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let client = Arc::clone(&client);
            std::thread::spawn(move || {
                let fs = client.fs();
                for i in 0..40 {
                    let path = format!("/t{t}/f{i}");
                    let data: Vec<u8> = (0..(i * 997 + t * 13)).map(|b| (b % 251) as u8).collect();
                    fs.write(&path, &data).unwrap();
                    assert_eq!(fs.read(&path).unwrap(), data);
                    assert_eq!(fs.stat(&path).unwrap().size, data.len() as u64);
                    if i % 10 == 0 {
                        client.ping().unwrap();
                    }
                }
                assert_eq!(fs.list(&format!("/t{t}")).unwrap().len(), 40);
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

#[test]
fn a_large_read_streams_with_bounded_memory() {
    let (_guest, client) = client(96);
    let fs = client.fs();
    let size = 64u64 << 20;
    let mut source = std::io::repeat(7).take(size);
    fs.write_from("/big", &mut source).unwrap();
    /// Counts bytes and checks them without keeping them.
    struct Check(u64);
    impl std::io::Write for Check {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            assert!(b.iter().all(|&x| x == 7));
            self.0 += b.len() as u64;
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut sink = Check(0);
    assert_eq!(fs.read_to("/big", &mut sink).unwrap(), size);
    assert_eq!(sink.0, size);
}

#[test]
fn calls_fail_at_once_when_the_guest_goes_away() {
    let (guest, client) = client(64);
    let fs = client.fs();
    fs.write_from("/big", &mut std::io::repeat(1).take(48 << 20)).unwrap();
    // A reader that stalls mid-read, then the guest stream dies.
    let c2 = client.clone();
    let reader = std::thread::spawn(move || {
        struct Slow;
        impl std::io::Write for Slow {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                std::thread::sleep(Duration::from_millis(200));
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let start = Instant::now();
        let r = c2.fs().read_to("/big", &mut Slow);
        (r, start.elapsed())
    });
    std::thread::sleep(Duration::from_millis(300));
    let killed = Instant::now();
    client.vm_exited("test: the VM was killed".into());
    let (result, _) = reader.join().unwrap();
    assert!(killed.elapsed() < Duration::from_secs(1), "the call took {:?} to fail", killed.elapsed());
    assert!(matches!(result, Err(Error::VmExited(ref why)) if why.contains("killed")), "{result:?}");
    assert!(matches!(fs.stat("/"), Err(Error::VmExited(_))));
    drop(client);
    assert!(matches!(
        guest.thread.join().unwrap(),
        agent_core::driver::Exit::EndOfStream | agent_core::driver::Exit::Link(_)
    ));
}

#[test]
fn shutdown_powers_the_guest_off() {
    let (guest, client) = client(16);
    client.fs().write("/x", "y").unwrap();
    client.shutdown().unwrap();
    let exit = guest.thread.join().unwrap();
    assert!(matches!(exit, agent_core::driver::Exit::PowerOff(agent_core::driver::PowerOff::Shutdown)));
    // The stream is gone: calls fail with a clear error, not a hang.
    let start = Instant::now();
    assert!(client.fs().stat("/").is_err());
    assert!(start.elapsed() < Duration::from_secs(2));
}

#[test]
fn ping_uses_a_stat_round_trip_below_generation_6() {
    let (_guest, client) = client(16);
    assert_eq!(client.generation(), 5);
    // core.ping needs generation 6: refused locally, ping falls back.
    assert!(client.ping().is_ok());
}

#[test]
fn open_files_directories_links_and_attributes() {
    use host_sync::OpenOptions;
    let (_guest, client) = client(32);
    let fs = client.fs();
    let file = fs.open("/tmp/f", OpenOptions::new().read(true).write(true).create(true)).unwrap();
    file.write_at(0, b"hello world").unwrap();
    file.write_at(6, b"W").unwrap();
    assert_eq!(file.read_at(0, 100).unwrap(), b"hello World");
    assert_eq!(file.read_at(6, 3).unwrap(), b"Wor");
    assert_eq!(file.read_at(50, 3).unwrap(), b"", "past the end: nothing");
    let streamed = file.write_from_at(11, &mut &b"!!"[..]).unwrap();
    assert_eq!(streamed, 2);
    file.set_len(5).unwrap();
    file.set_permissions(0o600).unwrap();
    file.set_times(Some(10), Some(20)).unwrap();
    let meta = file.metadata().unwrap();
    assert_eq!((meta.size, meta.mode, meta.accessed, meta.modified), (5, 0o100600, Some(10), Some(20)));
    assert_eq!((meta.uid, meta.gid), (Some(0), Some(0)));
    file.close().unwrap();
    // create_new refuses an existing file; OpenFile makes no parents.
    let e = fs.open("/tmp/f", OpenOptions::new().write(true).create_new(true)).err().unwrap();
    assert!(e.to_string().contains("File exists"), "{e}");
    assert!(fs.open("/tmp/none/f", OpenOptions::new().write(true).create(true)).is_err());

    fs.symlink("f", "/tmp/l").unwrap();
    assert_eq!(fs.read_link("/tmp/l").unwrap(), "f");
    assert_eq!(fs.canonicalize("/tmp/./l").unwrap(), "/tmp/f");
    assert!(fs.symlink_metadata("/tmp/l").unwrap().kind == host_sync::EntryKind::Symlink);
    assert_eq!(fs.metadata("/tmp/l").unwrap().size, 5);
    fs.set_permissions("/tmp/l", 0o640).unwrap();
    fs.set_times("/tmp/f", None, Some(99)).unwrap();
    assert_eq!(fs.metadata("/tmp/f").unwrap().mode, 0o100640);
    assert_eq!(fs.metadata("/tmp/f").unwrap().modified, Some(99));
    fs.set_len("/tmp/f", 8).unwrap();
    assert_eq!(fs.read("/tmp/f").unwrap(), b"hello\0\0\0");

    fs.mkdir("/tmp/d").unwrap();
    for i in 0..150 {
        fs.write(&format!("/tmp/d/{i}"), b"x").unwrap();
    }
    let mut names: Vec<String> = fs.read_dir("/tmp/d").unwrap().map(|e| e.unwrap().path).collect();
    names.sort();
    assert_eq!(names.len(), 150, "three batches and the end");
    assert!(names.iter().all(|p| p.starts_with("/tmp/d/")));
    // remove_dir is empty-only; remove_dir_all takes everything.
    let e = fs.remove_dir("/tmp/d").unwrap_err();
    assert!(e.to_string().contains("Directory not empty"), "{e}");
    fs.remove_dir_all("/tmp/d").unwrap();
    assert!(!fs.exists("/tmp/d").unwrap());
}

#[test]
fn a_request_too_large_for_a_frame_fails_at_once_and_the_client_goes_on() {
    let (_guest, client) = client(8);
    let path = format!("/{}", "a".repeat(wire::MAX_FRAME_BYTES));
    match client.fs().stat(&path) {
        Err(Error::Protocol(why)) => assert!(why.contains("larger than a frame may be"), "{why}"),
        other => panic!("{other:?}"),
    }
    client.fs().write("/ok", "fine").unwrap();
    assert_eq!(client.fs().read("/ok").unwrap(), b"fine");
}

#[test]
fn setup_deferred_past_core_ready_is_done_before_the_first_request() {
    // The guest lends its handle table and makes /tmp only once core.ready
    // is out (driver::run_with); the very first requests must see both.
    let (_guest, client) = client(4);
    let fs = client.fs();
    assert_eq!(fs.stat("/tmp").unwrap().kind, EntryKind::Dir, "the starting directories exist at once");
    let file = fs.open("/tmp/first", host_sync::OpenOptions::new().write(true).create(true)).unwrap();
    file.write_at(0, b"handles work from the first request").unwrap();
    drop(file);
    assert_eq!(fs.read("/tmp/first").unwrap(), b"handles work from the first request");
}
