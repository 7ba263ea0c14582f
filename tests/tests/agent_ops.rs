//! Every agent operation and error path, through real frames.

use agent_core::{Config, Event, PowerOff, RESYNC_QUIET_NS, State};
use tests::harness::{Host, TEST_ARENA};
use wire::{
    Body, CoreError, CoreErrorKind, Flags, FsData, FsOp, FsRequest, FsResponse, InitAck, MessageType, Ping,
    RelayClientDisconnected, Shutdown, encode_frame_as,
};

const S: u32 = 0o100_000;
const D: u32 = 0o040_000;

fn core_error(frames: &[tests::harness::Sent]) -> (CoreErrorKind, String, Option<String>) {
    let f = frames.iter().find(|f| f.message_type() == MessageType::Error).expect("a core.error");
    assert!(f.is_terminal());
    match f.message().body {
        Body::Error(CoreError { kind, message, offending_type }) => {
            (kind, message.to_string(), offending_type.map(str::to_string))
        }
        _ => unreachable!(),
    }
}

#[test]
fn handshake_reports_user_version_and_real_times() {
    let config =
        Config { default_user: wire::ResolvedUser { uid: 1000, gid: 100 }, boot_time_ns: 7_000, ..Config::default() };
    let mut host = Host::new(TEST_ARENA, config);
    host.now = 9_000;
    host.agent.start(host.now);
    let init = host.take();
    match init[0].message().body {
        Body::InitResolved(i) => assert_eq!((i.default_user.uid, i.default_user.gid), (1000, 100)),
        other => panic!("{other:?}"),
    }
    host.now = 50_000;
    host.send(0, &InitAck);
    let ready = host.take();
    match ready[0].message().body {
        Body::Ready(r) => {
            assert_eq!((r.boot_time_ns, r.init_time_ns, r.ready_time_ns), (7_000, 2_000, 50_000));
            assert_eq!(r.agent_version, agent_core::VERSION);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(host.agent.state(), State::Ready);
    // A second ack changes nothing.
    host.send(0, &InitAck);
    assert!(host.take().is_empty());
}

#[test]
fn an_unanswered_handshake_is_retried_then_powers_off() {
    let mut host = Host::new(TEST_ARENA, Config::default());
    host.agent.start(0);
    assert_eq!(host.take().len(), 1);
    for attempt in 2..=5u64 {
        let deadline = host.agent.poll_timeout().unwrap();
        assert_eq!(deadline, (attempt - 1) * 1_000_000_000);
        host.agent.handle_timeout(deadline - 1);
        assert!(host.take().is_empty(), "nothing before the deadline");
        host.agent.handle_timeout(deadline);
        let again = host.take();
        assert_eq!(again[0].message_type(), MessageType::InitResolved, "attempt {attempt}");
    }
    host.agent.handle_timeout(host.agent.poll_timeout().unwrap());
    host.take();
    assert_eq!(host.events, vec![Event::PowerOff(PowerOff::HandshakeTimeout)]);
    assert_eq!(host.agent.state(), State::Off);
}

#[test]
fn clock_sync_sets_the_wall_clock_and_file_times() {
    let mut host = Host::new(TEST_ARENA, Config::default());
    host.handshake();
    assert_eq!(host.events, vec![Event::SetWallClock(1_700_000_000_000_000_000)]);
    host.now += 5_000_000_000;
    host.ok(1, FsOp::Mkdir { path: "/d" });
    let (_, _, _, _, modified) = host.stat(2, "/d").unwrap();
    assert_eq!(modified, Some(1_700_000_005));
}

#[test]
fn file_times_are_none_before_the_first_sync_and_real_after() {
    let mut host = Host::new(TEST_ARENA, Config::default());
    host.agent.start(0);
    host.take();
    host.send(0, &InitAck);
    host.take();
    host.now = 3_000_000_000;
    host.ok(1, FsOp::Mkdir { path: "/early" });
    assert_eq!(host.stat(2, "/early").unwrap().4, None);
    host.now = 10_000_000_000;
    host.send(0, &wire::ClockSync { unix_time_nanos: 2_000_000_000_000_000_000 });
    // Made 7 s before the sync: its time is known now.
    assert_eq!(host.stat(3, "/early").unwrap().4, Some(1_999_999_993));
}

#[test]
fn mkdir_makes_parents_and_is_idempotent() {
    let mut host = Host::ready();
    host.ok(1, FsOp::Mkdir { path: "/a/b/c" });
    host.ok(2, FsOp::Mkdir { path: "/a/b/c" });
    host.ok(3, FsOp::Mkdir { path: "/" });
    let (path, kind, _, mode, _) = host.stat(4, "/a/b").unwrap();
    assert_eq!((path.as_str(), kind.as_str(), mode), ("/a/b", "dir", D | 0o755));
    host.write(5, "/a/f", None, b"x", 1);
    assert_eq!(host.fails(6, FsOp::Mkdir { path: "/a/f" }), "mkdir: File exists (os error 17)");
    assert_eq!(host.fails(7, FsOp::Mkdir { path: "/a/f/g" }), "mkdir: Not a directory (os error 20)");
}

#[test]
fn write_then_read_round_trips_with_modes() {
    let mut host = Host::ready();
    let data: Vec<u8> = (0..10_000u32).map(|i| (i * 7) as u8).collect();
    let r = host.write(1, "/dir/sub/file", None, &data, 999);
    assert!(matches!(r.message().body, Body::FsResponse(FsResponse { ok: true, .. })), "{r:?}");
    let (got, end) = host.read(2, "/dir/sub/file");
    assert_eq!(got, data);
    assert!(matches!(end.message().body, Body::FsResponse(FsResponse { ok: true, error: None, data: None })));
    assert_eq!(host.stat(3, "/dir/sub/file").unwrap().3, S | 0o644);
    // Replacing keeps the mode unless one is given; type bits in `mode` are ignored.
    host.write(4, "/dir/sub/file", Some(0o100_755), b"new", 2);
    assert_eq!(host.stat(5, "/dir/sub/file").unwrap().3, S | 0o755);
    host.write(6, "/dir/sub/file", None, b"newer", 5);
    let (_, kind, size, mode, _) = host.stat(7, "/dir/sub/file").unwrap();
    assert_eq!((kind.as_str(), size, mode), ("file", 5, S | 0o755));
    assert_eq!(host.read(8, "/dir/sub/file").0, b"newer");
}

#[test]
fn an_empty_file_reads_as_no_chunk_then_ok() {
    let mut host = Host::ready();
    host.write(1, "/empty", Some(0o600), &[], 1);
    let frames = host.request(2, FsOp::Read { path: "/empty" });
    assert_eq!(frames.len(), 1, "{frames:?}");
    assert!(matches!(frames[0].message().body, Body::FsResponse(FsResponse { ok: true, .. })));
    assert_eq!(host.stat(3, "/empty").unwrap().2, 0);
}

#[test]
fn reads_stream_in_chunks_of_the_configured_size() {
    let mut host = Host::new(TEST_ARENA, Config { read_chunk_size: 3 << 20, ..Config::default() });
    host.handshake();
    let data: Vec<u8> = (0..(7usize << 20)).map(|i| (i % 253) as u8).collect();
    host.write(1, "/big", None, &data, wire::FS_CHUNK_SIZE);
    let frames = host.request(2, FsOp::Read { path: "/big" });
    let sizes: Vec<usize> = frames
        .iter()
        .filter_map(|f| match f.message().body {
            Body::FsData(d) => Some(d.data.len()),
            _ => None,
        })
        .collect();
    assert_eq!(sizes, vec![3 << 20, 3 << 20, 1 << 20]);
    assert!(frames.iter().all(|f| f.bytes.len() <= wire::MAX_FRAME_BYTES));
    assert_eq!(host.read(3, "/big").0, data);
}

#[test]
fn write_errors_are_reported_early() {
    let mut host = Host::ready();
    host.ok(1, FsOp::Mkdir { path: "/d" });
    host.write(2, "/f", None, b"x", 1);
    for (id, path, want) in [
        (3, "/d", "write: Is a directory (os error 21)"),
        (4, "/f/x", "write: Not a directory (os error 20)"),
        (5, "/", "write: Is a directory (os error 21)"),
    ] {
        host.send(id, &FsRequest { bulk: None, op: FsOp::Write { path, mode: None } });
        let frames = host.until_terminal(id);
        match frames.last().unwrap().message().body {
            Body::FsResponse(FsResponse { ok: false, error: Some(e), .. }) => assert_eq!(e, want),
            other => panic!("{other:?}"),
        }
        // Later chunks on that id belong to no session.
        host.send(id, &FsData { data: b"late" });
        let late = host.until_terminal(id);
        assert!(matches!(
            late.last().unwrap().message().body,
            Body::FsResponse(FsResponse { ok: false, error: Some("write: unknown write session"), .. })
        ));
    }
}

#[test]
fn list_gives_direct_children_with_full_paths() {
    let mut host = Host::ready();
    host.ok(1, FsOp::Mkdir { path: "/d/sub/deeper" });
    host.write(2, "/d/f1", None, b"abc", 3);
    host.write(3, "/d/f2", None, b"", 1);
    assert_eq!(
        host.list(4, "/d/").unwrap(),
        vec![
            ("/d/f1".into(), "file".into(), 3),
            ("/d/f2".into(), "file".into(), 0),
            // tmpfs sizes: 40, and 20 per entry.
            ("/d/sub".into(), "dir".into(), 60)
        ]
    );
    assert_eq!(host.list(5, "/").unwrap(), vec![("/d".into(), "dir".into(), 100)]);
    assert_eq!(host.list(6, "/d/f1"), Err("list: Not a directory (os error 20)".into()));
    assert_eq!(host.list(7, "/nope"), Err("list: No such file or directory (os error 2)".into()));
    assert_eq!(host.list(8, "/d/sub/deeper").unwrap(), vec![]);
}

#[test]
fn stat_errors() {
    let mut host = Host::ready();
    host.write(1, "/f", None, b"x", 1);
    assert_eq!(host.stat(2, "/missing"), Err("stat: No such file or directory (os error 2)".into()));
    assert_eq!(host.stat(3, "/f/x"), Err("stat: Not a directory (os error 20)".into()));
    assert_eq!(host.stat(4, ""), Err("stat: No such file or directory (os error 2)".into()));
    let long = format!("/{}", "n".repeat(256));
    assert_eq!(host.stat(5, &long), Err("stat: File name too long (os error 36)".into()));
    let (path, kind, _, mode, _) = host.stat(6, "/").unwrap();
    assert_eq!((path.as_str(), kind.as_str(), mode), ("/", "dir", D | 0o755));
}

/// Paths resolve component by component as on Linux, and answers echo
/// them as sent (both dialects).
#[test]
fn paths_resolve_as_on_linux_and_are_echoed() {
    let mut host = Host::ready();
    host.write(1, "/a/b/c", None, b"1", 1);
    assert_eq!(host.stat(2, "/a/./b/../b/c").unwrap().0, "/a/./b/../b/c");
    assert_eq!(host.stat(3, "a/b/c").unwrap().0, "a/b/c", "relative to /");
    assert_eq!(host.stat(4, "/../../a/b/c").unwrap().0, "/../../a/b/c");
    assert_eq!(host.stat(5, "/a/b/c/"), Err("stat: Not a directory (os error 20)".into()));
    assert_eq!(host.stat(6, "/missing/../a"), Err("stat: No such file or directory (os error 2)".into()));
    assert_eq!(host.list(7, "/a/./").unwrap(), vec![("/a/./b".into(), "dir".into(), host.stat(8, "/a/b").unwrap().2)]);
    assert_eq!(host.list(9, "/a/b").unwrap(), vec![("/a/b/c".into(), "file".into(), 1)]);
    // A trailing slash on a new file is refused as open(2) refuses it.
    let last = host.write(10, "/a/d/", None, b"1", 1);
    match last.message().body {
        wire::Body::FsResponse(r) => assert_eq!(r.error, Some("write: Is a directory (os error 21)")),
        other => panic!("{other:?}"),
    }
}

#[test]
fn remove_and_remove_dir() {
    let mut host = Host::ready();
    host.write(1, "/t/a/f", None, b"x", 1);
    host.write(2, "/t/b", None, b"y", 1);
    assert_eq!(host.fails(3, FsOp::Remove { path: "/t" }), "remove: Is a directory (os error 21)");
    assert_eq!(host.fails(4, FsOp::Remove { path: "/none" }), "remove: No such file or directory (os error 2)");
    host.ok(5, FsOp::Remove { path: "/t/b" });
    assert_eq!(
        host.fails(6, FsOp::RemoveDir { path: "/t/a/f", recursive: None }),
        "remove_dir: Not a directory (os error 20)"
    );
    assert_eq!(
        host.fails(7, FsOp::RemoveDir { path: "/", recursive: None }),
        "remove_dir: Device or resource busy (os error 16)"
    );
    assert_eq!(
        host.fails(8, FsOp::RemoveDir { path: "/none", recursive: None }),
        "remove_dir: No such file or directory (os error 2)"
    );
    host.ok(9, FsOp::RemoveDir { path: "/t", recursive: None });
    assert_eq!(host.list(10, "/").unwrap(), vec![]);
    assert_eq!(host.agent.fs().usage().entries_used, 1);
    assert_eq!(host.agent.fs().usage().blocks_used, 0);
}

#[test]
fn copy_makes_parents_and_copies_content_and_mode() {
    let mut host = Host::ready();
    host.write(1, "/src", Some(0o640), b"payload", 3);
    host.ok(2, FsOp::Copy { src: "/src", dst: "/x/y/dst" });
    assert_eq!(host.read(3, "/x/y/dst").0, b"payload");
    assert_eq!(host.stat(4, "/x/y/dst").unwrap().3, S | 0o640);
    // The copy is independent of its source.
    host.write(5, "/src", None, b"changed", 7);
    assert_eq!(host.read(6, "/x/y/dst").0, b"payload");
    assert_eq!(
        host.fails(7, FsOp::Copy { src: "/x", dst: "/z" }),
        "copy: the source path is neither a regular file nor a symlink to a regular file"
    );
    assert_eq!(host.fails(8, FsOp::Copy { src: "/src", dst: "/x" }), "copy: Is a directory (os error 21)");
    assert_eq!(host.fails(9, FsOp::Copy { src: "/none", dst: "/z" }), "copy: No such file or directory (os error 2)");
}

#[test]
fn rename_makes_parents_and_follows_posix_rules() {
    let mut host = Host::ready();
    host.write(1, "/a/f", None, b"one", 3);
    host.ok(2, FsOp::Rename { src: "/a/f", dst: "/b/c/g" });
    assert_eq!(host.stat(3, "/a/f"), Err("stat: No such file or directory (os error 2)".into()));
    assert_eq!(host.read(4, "/b/c/g").0, b"one");
    host.write(5, "/a/h", None, b"two", 3);
    host.ok(6, FsOp::Rename { src: "/a/h", dst: "/b/c/g" });
    assert_eq!(host.read(7, "/b/c/g").0, b"two");
    assert_eq!(host.fails(8, FsOp::Rename { src: "/b", dst: "/b/c/inside" }), "rename: Invalid argument (os error 22)");
    host.ok(9, FsOp::Mkdir { path: "/e" });
    host.ok(10, FsOp::Rename { src: "/e", dst: "/a" });
    assert_eq!(host.fails(11, FsOp::Rename { src: "/a", dst: "/b" }), "rename: Directory not empty (os error 39)");
    assert_eq!(host.fails(12, FsOp::Rename { src: "/b/c/g", dst: "/a" }), "rename: Is a directory (os error 21)");
    assert_eq!(host.fails(13, FsOp::Rename { src: "/a", dst: "/b/c/g" }), "rename: Not a directory (os error 20)");
    assert_eq!(host.fails(14, FsOp::Rename { src: "/", dst: "/q" }), "rename: Device or resource busy (os error 16)");
    host.ok(15, FsOp::Rename { src: "/b", dst: "/moved" });
    assert_eq!(host.read(16, "/moved/c/g").0, b"two");
}

#[test]
fn a_failed_copy_or_rename_creates_no_parents() {
    let mut host = Host::ready();
    host.write(1, "/a/f", None, b"one", 3);
    assert_eq!(
        host.fails(2, FsOp::Copy { src: "/none", dst: "/p/q/r" }),
        "copy: No such file or directory (os error 2)"
    );
    assert_eq!(
        host.fails(3, FsOp::Copy { src: "/a", dst: "/p/q/r" }),
        "copy: the source path is neither a regular file nor a symlink to a regular file"
    );
    assert_eq!(host.fails(4, FsOp::Copy { src: "/a/f/x", dst: "/p/q/r" }), "copy: Not a directory (os error 20)");
    assert_eq!(
        host.fails(5, FsOp::Rename { src: "/none", dst: "/p/q/r" }),
        "rename: No such file or directory (os error 2)"
    );
    assert_eq!(
        host.fails(6, FsOp::Rename { src: "/a", dst: "/a/sub/inside" }),
        "rename: Invalid argument (os error 22)"
    );
    assert_eq!(host.fails(7, FsOp::Rename { src: "/", dst: "/p/q" }), "rename: Device or resource busy (os error 16)");
    assert_eq!(host.stat(8, "/p"), Err("stat: No such file or directory (os error 2)".into()));
    assert_eq!(host.stat(9, "/a/sub"), Err("stat: No such file or directory (os error 2)".into()));
    // A file onto a directory, found before any parent is made.
    host.ok(10, FsOp::Mkdir { path: "/d/e" });
    assert_eq!(host.fails(11, FsOp::Copy { src: "/a/f", dst: "/d/e" }), "copy: Is a directory (os error 21)");
    assert_eq!(host.fails(12, FsOp::Rename { src: "/d", dst: "/a/f" }), "rename: Not a directory (os error 20)");
    assert_eq!(host.list(13, "/").unwrap().len(), 2);
}

#[test]
fn a_copy_or_rename_without_entries_for_its_parents_creates_none() {
    // The root, /src and three free entries: /p/q/r needs /p, /q and the file.
    let arena: &'static mut [u8] = Box::leak(vec![0u8; 1 << 20].into_boxed_slice());
    let fs = agent_core::ramfs::Ramfs::with_entries(arena, 5, 0).unwrap();
    let mut host = Host::with_fs(fs, Config::default());
    host.handshake();
    host.write(1, "/src", None, b"x", 1);
    host.ok(2, FsOp::Mkdir { path: "/one" });
    assert_eq!(host.agent.fs().usage().entries_used, 3);
    assert_eq!(host.fails(3, FsOp::Copy { src: "/src", dst: "/p/q/r" }), "copy: No space left on device (os error 28)");
    assert_eq!(
        host.fails(4, FsOp::Rename { src: "/src", dst: "/p/q/r/s" }),
        "rename: No space left on device (os error 28)"
    );
    assert_eq!(host.agent.fs().usage().entries_used, 3);
    assert_eq!(host.stat(5, "/p"), Err("stat: No such file or directory (os error 2)".into()));
    // At the bound: exactly enough entries.
    host.ok(6, FsOp::Copy { src: "/src", dst: "/p/r" });
    assert_eq!(host.agent.fs().usage().entries_used, 5);
    host.ok(7, FsOp::Rename { src: "/one", dst: "/p/one" });
    assert_eq!(host.read(8, "/p/r").0, b"x");
}

#[test]
fn ping_answers_pong_on_the_same_id() {
    let mut host = Host::ready();
    host.send(77, &Ping);
    let frames = host.take();
    assert_eq!(frames.len(), 1);
    assert_eq!((frames[0].id(), frames[0].message_type(), frames[0].is_terminal()), (77, MessageType::Pong, true));
}

#[test]
fn protocol_errors_get_core_error_and_the_agent_goes_on() {
    let mut host = Host::ready();
    // Flags that do not match the type.
    let mut frame = vec![0u8; 64];
    let n = encode_frame_as(
        5,
        Flags::NONE,
        5,
        &FsRequest { bulk: None, op: FsOp::Stat { path: "/", follow_symlink: None } },
        &mut frame,
    )
    .unwrap();
    host.deliver(&frame[..n]);
    let (kind, message, offending) = core_error(&host.take());
    assert_eq!(kind, CoreErrorKind::InvalidFlags);
    assert_eq!(message, "invalid flags for core.fs.request: got 0, expected 2");
    assert_eq!(offending.as_deref(), Some("core.fs.request"));
    // A session id already in use.
    host.send(6, &FsRequest { bulk: None, op: FsOp::Write { path: "/w", mode: None } });
    host.send(6, &FsRequest { bulk: None, op: FsOp::Stat { path: "/", follow_symlink: None } });
    let (kind, _, _) = core_error(&host.take());
    assert_eq!(kind, CoreErrorKind::InvalidSession);
    // Data for a read session.
    host.write(7, "/r", None, &[1; 100], 100);
    host.send(8, &FsRequest { bulk: None, op: FsOp::Read { path: "/r" } });
    host.send(8, &FsData { data: b"x" });
    let (kind, _, _) = core_error(&host.take());
    assert_eq!(kind, CoreErrorKind::InvalidSession);
    // A guest-to-host type sent to the guest.
    host.send(9, &wire::Pong);
    let (kind, _, offending) = core_error(&host.take());
    assert_eq!((kind, offending.as_deref()), (CoreErrorKind::UnsupportedMessageType, Some("core.pong")));
    // A core.error from the host is never answered.
    host.send(10, &CoreError { kind: CoreErrorKind::InvalidPayload, message: "x", offending_type: None });
    assert!(host.take().is_empty());
    // Still serving, and the write on 6 still completes.
    host.send(6, &FsData { data: b"ok" });
    host.send(6, &FsData { data: &[] });
    host.until_terminal(6);
    assert_eq!(host.read(11, "/w").0, b"ok");
}

#[test]
fn a_peer_below_generation_5_is_never_sent_core_error() {
    let mut host = Host::new(TEST_ARENA, Config::default());
    host.agent.start(0);
    host.take();
    let mut frame = vec![0u8; 64];
    let n = encode_frame_as(0, Flags::NONE, 4, &InitAck, &mut frame).unwrap();
    host.deliver(&frame[..n]);
    host.take();
    // Garbage envelope (v unknown: falls back to the handshake's 4) and bad flags (v = 4).
    host.deliver(&[0, 0, 0, 6, 0, 0, 0, 3, 0, 0xff]);
    let n = encode_frame_as(
        4,
        Flags::NONE,
        4,
        &FsRequest { bulk: None, op: FsOp::Stat { path: "/", follow_symlink: None } },
        &mut frame,
    )
    .unwrap();
    host.deliver(&frame[..n]);
    assert!(host.take().is_empty());
    assert_eq!(host.agent.stats().core_errors_suppressed, 2);
    // The same frame from a generation-5 sender is answered.
    let n = encode_frame_as(
        4,
        Flags::NONE,
        5,
        &FsRequest { bulk: None, op: FsOp::Stat { path: "/", follow_symlink: None } },
        &mut frame,
    )
    .unwrap();
    host.deliver(&frame[..n]);
    assert_eq!(core_error(&host.take()).0, CoreErrorKind::InvalidFlags);
}

#[test]
fn frame_level_corruption_ends_the_stream_until_reset() {
    let mut host = Host::ready();
    host.send(1, &FsRequest { bulk: None, op: FsOp::Write { path: "/w", mode: None } });
    host.deliver(&0xffff_ffffu32.to_be_bytes());
    assert!(matches!(host.agent.state(), State::AwaitingStream { .. }));
    assert_eq!(host.agent.sessions(), 0);
    host.send(2, &Ping);
    assert!(host.take().is_empty(), "input is ignored until a fresh stream");
    host.agent.reset_stream(host.now);
    let init = host.take();
    assert_eq!(init[0].message_type(), MessageType::InitResolved);
    host.send(0, &InitAck);
    host.take();
    host.send(3, &Ping);
    assert_eq!(host.take()[0].message_type(), MessageType::Pong);
    assert_eq!(
        host.stat(4, "/w"),
        Err("stat: No such file or directory (os error 2)".into()),
        "the aborted write left nothing"
    );
}

#[test]
fn a_corrupt_stream_starts_over_only_after_the_link_is_quiet() {
    let mut host = Host::ready();
    host.deliver(&0xffff_ffffu32.to_be_bytes());
    let lost_at = host.now;
    assert_eq!(host.agent.poll_timeout(), Some(lost_at + RESYNC_QUIET_NS));
    // More of the dead stream arrives: the quiet starts over from it.
    host.now += RESYNC_QUIET_NS / 2;
    host.deliver(&[0xff; 9]);
    let deadline = host.now + RESYNC_QUIET_NS;
    assert_eq!(host.agent.poll_timeout(), Some(deadline));
    host.now = deadline - 1;
    host.agent.handle_timeout(host.now);
    assert!(matches!(host.agent.state(), State::AwaitingStream { .. }), "one ns early");
    assert!(host.take().is_empty());
    host.now = deadline;
    host.agent.handle_timeout(host.now);
    assert_eq!(host.agent.stats().stream_resets, 1);
    let init = host.take();
    assert_eq!(init[0].message_type(), MessageType::InitResolved, "the handshake starts again");
    host.send(0, &InitAck);
    host.take();
    host.send(3, &Ping);
    assert_eq!(host.take()[0].message_type(), MessageType::Pong);
}

/// The `n`-th id of relay slot `slot`.
fn slot_id(slot: usize, n: u32) -> u32 {
    wire::relay::slot_range(slot).0 + n
}

#[test]
fn too_many_sessions_is_answered_and_nothing_is_lost() {
    let mut host = Host::ready();
    // Seven clients with 32 writes each fill the table down to the reserve
    // (each below its share), eight small clients take the reserve.
    let mut ids = Vec::new();
    for slot in 0..7 {
        ids.extend((0..32).map(|n| slot_id(slot, n)));
    }
    let small = agent_core::SESSION_RESERVE / agent_core::RESERVE_CLIENT_MAX;
    for slot in 7..7 + small {
        ids.extend((0..agent_core::RESERVE_CLIENT_MAX as u32).map(|n| slot_id(slot, n)));
    }
    for &id in &ids {
        host.send(id, &FsRequest { bulk: None, op: FsOp::Write { path: &format!("/s/{id}"), mode: None } });
    }
    assert!(host.take().is_empty());
    assert_eq!(host.agent.sessions(), agent_core::MAX_SESSIONS);
    let over = slot_id(20, 0);
    let msg = host.fails(over, FsOp::Write { path: "/over", mode: None });
    assert_eq!(msg, format!("write: too many sessions in flight (max {})", agent_core::MAX_SESSIONS));
    let first = slot_id(0, 0);
    host.send(first, &FsData { data: b"first" });
    host.send(first, &FsData { data: &[] });
    host.until_terminal(first);
    assert_eq!(host.read(over + 1, &format!("/s/{first}")).0, b"first");
    assert_eq!(host.agent.stats().sessions_peak, agent_core::MAX_SESSIONS);
}

#[test]
fn one_client_cannot_take_every_session() {
    let mut host = Host::ready();
    // A hog opens 300 writes and never finishes them.
    let mut refused = 0;
    for n in 0..300 {
        host.send(slot_id(3, n), &FsRequest { bulk: None, op: FsOp::Write { path: &format!("/hog/{n}"), mode: None } });
        for sent in host.take() {
            assert!(sent.is_terminal());
            match sent.message().body {
                Body::FsResponse(FsResponse { ok: false, error: Some(e), .. }) => {
                    assert_eq!(
                        e,
                        format!(
                            "write: too many sessions for one client (max {})",
                            agent_core::MAX_SESSIONS_PER_CLIENT
                        )
                    );
                    refused += 1;
                }
                other => panic!("{other:?}"),
            }
        }
    }
    assert_eq!(refused, 300 - agent_core::MAX_SESSIONS_PER_CLIENT);
    assert_eq!(host.agent.sessions(), agent_core::MAX_SESSIONS_PER_CLIENT);
    // Another client still reads and writes.
    host.write(slot_id(4, 0), "/other", None, b"mine", 2);
    assert_eq!(host.read(slot_id(4, 1), "/other").0, b"mine");
}

#[test]
fn the_reserve_is_kept_for_clients_with_few_sessions() {
    let mut host = Host::ready();
    let share = agent_core::MAX_SESSIONS_PER_CLIENT as u32;
    let open = |host: &mut Host, id: u32| {
        host.send(id, &FsRequest { bulk: None, op: FsOp::Write { path: &format!("/r/{id}"), mode: None } });
        host.take()
    };
    // Hogs fill the table down to the reserve.
    let below_reserve = (agent_core::MAX_SESSIONS - agent_core::SESSION_RESERVE) as u32;
    for k in 0..below_reserve {
        assert!(open(&mut host, slot_id((k / share) as usize, k % share)).is_empty());
    }
    assert_eq!(host.agent.sessions(), below_reserve as usize);
    // The last hog (below its share) gets nothing from the reserve...
    let hog = (below_reserve / share) as usize;
    let answer = open(&mut host, slot_id(hog, below_reserve % share));
    match answer[0].message().body {
        Body::FsResponse(FsResponse { ok: false, error: Some(e), .. }) => {
            assert!(e.starts_with("write: too many sessions in flight (the last"), "{e}")
        }
        ref other => panic!("{other:?}"),
    }
    // ...while small clients share it, each up to the reserve's per-client bound.
    let small = agent_core::SESSION_RESERVE / agent_core::RESERVE_CLIENT_MAX;
    for c in 0..small {
        for n in 0..agent_core::RESERVE_CLIENT_MAX as u32 {
            assert!(open(&mut host, slot_id(100 + c, n)).is_empty(), "small client {c} session {n}");
        }
    }
    assert_eq!(host.agent.sessions(), agent_core::MAX_SESSIONS);
}

#[test]
fn an_idle_write_is_aborted_and_the_old_file_stays() {
    let timeout = 5_000_000_000;
    let mut host = Host::new(TEST_ARENA, Config { write_idle_timeout_ns: timeout, ..Config::default() });
    host.handshake();
    host.write(1, "/f", None, b"old", 3);
    host.send(2, &FsRequest { bulk: None, op: FsOp::Write { path: "/f", mode: None } });
    host.send(2, &FsData { data: b"partial" });
    assert_eq!(host.agent.poll_timeout(), Some(host.now + timeout));
    // Data keeps it alive.
    host.now += timeout - 1;
    host.agent.handle_timeout(host.now);
    host.send(2, &FsData { data: b" more" });
    assert!(host.take().is_empty());
    assert_eq!(host.agent.poll_timeout(), Some(host.now + timeout));
    host.now += timeout;
    host.agent.handle_timeout(host.now);
    let answer = host.take();
    assert_eq!(answer.len(), 1);
    match answer[0].message().body {
        Body::FsResponse(FsResponse { ok: false, error: Some(e), .. }) => {
            assert_eq!(e, "write: aborted: no data for 5 s (idle write bound)")
        }
        ref other => panic!("{other:?}"),
    }
    assert_eq!(host.agent.sessions(), 0);
    assert_eq!(host.agent.poll_timeout(), None);
    assert_eq!(host.read(3, "/f").0, b"old");
}

#[test]
fn host_only_messages_count_only_on_id_0() {
    let mut host = Host::ready();
    host.write(1, "/f", None, b"x", 1);
    let (_, _, _, _, before) = host.stat(2, "/f").unwrap();
    // A victim's write and read in flight, in another slot.
    let victim = slot_id(1, 0);
    host.send(victim, &FsRequest { bulk: None, op: FsOp::Write { path: "/v", mode: None } });
    for (id, body) in [
        (slot_id(2, 0), host_frame(&wire::ClockSync { unix_time_nanos: 0 })),
        (slot_id(2, 1), host_frame(&RelayClientDisconnected { id_start: 0, id_end_exclusive: u32::MAX })),
        (slot_id(2, 2), host_frame(&InitAck)),
        (slot_id(2, 3), host_frame(&wire::RelayFlow { id_start: 1, id_end_exclusive: u32::MAX, paused: true })),
    ] {
        let mut frame = body;
        frame[4..8].copy_from_slice(&id.to_be_bytes());
        host.deliver(&frame);
        let answer = host.take();
        assert_eq!(answer.len(), 1, "{answer:?}");
        assert_eq!(answer[0].id(), id);
        assert_eq!(core_error(&answer).0, CoreErrorKind::InvalidSession);
    }
    assert!(!host.events.iter().any(|e| matches!(e, Event::SetWallClock(0))));
    assert_eq!(host.stat(3, "/f").unwrap().4, before, "file times unchanged");
    assert_eq!(host.agent.sessions(), 1, "the victim's write survives");
    host.send(victim, &FsData { data: b"safe" });
    host.send(victim, &FsData { data: &[] });
    host.until_terminal(victim);
    assert_eq!(host.read(4, "/v").0, b"safe");
}

fn host_frame<P: wire::Payload>(payload: &P) -> Vec<u8> {
    let mut frame = vec![0u8; wire::frame_len(payload)];
    wire::encode_frame(0, payload, &mut frame).unwrap();
    frame
}

#[test]
fn no_space_fails_the_write_and_keeps_everything_stored() {
    let mut host = Host::new(1 << 20, Config::default());
    host.handshake();
    let capacity = host.agent.fs().capacity_bytes() as usize;
    let baseline = host.agent.fs().usage();
    let keep: Vec<u8> = (0..capacity / 4).map(|i| i as u8).collect();
    host.write(1, "/keep", None, &keep, 64 * 1024);
    let r = host.write(2, "/keep", None, &vec![9u8; capacity], 64 * 1024);
    match r.message().body {
        Body::FsResponse(FsResponse { ok: false, error: Some(e), .. }) => {
            assert_eq!(e, "write: No space left on device (os error 28)")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(host.read(3, "/keep").0, keep, "the old content survives");
    host.ok(4, FsOp::Remove { path: "/keep" });
    assert_eq!(host.agent.fs().usage(), baseline, "accounting returns to its baseline");
}

#[test]
fn a_filled_then_fragmented_filesystem_stores_the_same_data_again() {
    let mut host = Host::new(1 << 20, Config::default());
    host.handshake();
    let baseline = host.agent.fs().usage();
    let free_blocks = baseline.blocks_total;
    // Fill with single-block files, free every other one.
    let mut id = 1;
    let mut files = Vec::new();
    loop {
        let path = format!("/f{id}");
        let r = host.write(id, &path, None, &[id as u8; 4096], 4096);
        id += 1;
        if !matches!(r.message().body, Body::FsResponse(FsResponse { ok: true, .. })) {
            break;
        }
        files.push(path);
        if files.len() + 2 >= free_blocks || files.len() + 2 >= baseline.entries_total {
            break;
        }
    }
    let removed: Vec<_> = files.iter().step_by(2).cloned().collect();
    for path in &removed {
        host.ok(id, FsOp::Remove { path });
        id += 1;
    }
    // One file as large as all the holes together (minus the block for the staged path).
    let big: Vec<u8> = (0..(removed.len() - 1) * 4096).map(|i| (i / 7) as u8).collect();
    let r = host.write(id, "/big", None, &big, 50_000);
    assert!(matches!(r.message().body, Body::FsResponse(FsResponse { ok: true, .. })), "{r:?}");
    assert_eq!(host.read(id + 1, "/big").0, big);
}

#[test]
fn a_disconnected_write_leaves_the_old_content() {
    let mut host = Host::ready();
    host.write(1, "/f", None, b"old", 3);
    host.send(40, &FsRequest { bulk: None, op: FsOp::Write { path: "/f", mode: None } });
    host.send(40, &FsData { data: b"partial new content" });
    host.send(0, &RelayClientDisconnected { id_start: 33, id_end_exclusive: 66 });
    assert!(host.take().is_empty(), "a dropped session gets no response");
    assert_eq!(host.agent.sessions(), 0);
    assert_eq!(host.read(2, "/f").0, b"old");
    host.send(40, &FsData { data: &[] });
    assert!(matches!(
        host.until_terminal(40).last().unwrap().message().body,
        Body::FsResponse(FsResponse { ok: false, .. })
    ));
}

#[test]
fn shutdown_aborts_sessions_then_powers_off() {
    let mut host = Host::ready();
    host.write(1, "/big", None, &vec![3u8; 5 << 20], 1 << 20);
    host.write(2, "/kept", None, b"old", 3);
    host.send(3, &FsRequest { bulk: None, op: FsOp::Read { path: "/big" } });
    host.send(4, &FsRequest { bulk: None, op: FsOp::Write { path: "/kept", mode: None } });
    host.send(4, &FsData { data: b"never visible" });
    host.send(0, &Shutdown);
    let frames = host.take();
    let ends: Vec<_> = frames
        .iter()
        .filter_map(|f| match f.message().body {
            Body::FsResponse(FsResponse { ok: false, error: Some(e), .. }) => Some((f.id(), e.to_string())),
            _ => None,
        })
        .collect();
    assert!(ends.contains(&(3, "shutdown: session aborted".into())), "{frames:?}");
    assert!(ends.contains(&(4, "shutdown: session aborted".into())));
    assert_eq!(host.events.last(), Some(&Event::PowerOff(PowerOff::Shutdown)));
    assert_eq!(host.agent.state(), State::Off);
    assert_eq!(host.agent.fs().usage().contents_used, 2, "the staged write was dropped");
}

#[test]
fn the_agent_and_its_tables_have_fixed_small_sizes() {
    use agent_core::ramfs::{BLOCK_SIZE, CONTENT_BYTES, ENTRY_BYTES, Ramfs};
    let agent = std::mem::size_of::<agent_core::Agent<'static, Ramfs<'static>>>();
    println!(
        "Agent<Ramfs>: {agent} bytes (+ {} rx + outbox); ramfs: {ENTRY_BYTES} bytes per entry, \
         {CONTENT_BYTES} per file content, {BLOCK_SIZE}-byte blocks + 4 bytes each; {} sessions",
        agent_core::MIN_RX_BUFFER,
        agent_core::MAX_SESSIONS
    );
    assert!(agent <= 48 * 1024, "the agent grew to {agent} bytes");
    assert_eq!((ENTRY_BYTES, CONTENT_BYTES), (328, 24));
    // A file costs one entry, one content and its blocks; a directory one entry.
    let mut host = Host::new(1 << 20, Config::default());
    host.handshake();
    let before = host.agent.fs().usage();
    host.ok(1, FsOp::Mkdir { path: "/d" });
    host.write(2, "/d/f", None, &[1; 5000], 5000);
    let after = host.agent.fs().usage();
    assert_eq!(after.entries_used - before.entries_used, 2);
    assert_eq!(after.contents_used - before.contents_used, 1);
    assert_eq!(after.blocks_used - before.blocks_used, 2);
}

#[test]
fn the_smallest_ramfs_arena_is_min_arena_bytes_wherever_it_starts() {
    use agent_core::ramfs::{MIN_ARENA_BYTES, MIN_ENTRIES, Ramfs};
    let mut buf = vec![0u8; MIN_ARENA_BYTES + 64];
    let aligned = buf.as_ptr().align_offset(8);
    for offset in aligned..aligned + 8 {
        let fs = Ramfs::new(&mut buf[offset..offset + MIN_ARENA_BYTES], 0).expect("MIN_ARENA_BYTES is enough");
        assert_eq!((fs.usage().entries_total, fs.usage().blocks_total), (MIN_ENTRIES, 2));
    }
    // Aligned, the alignment room is not needed; one byte less than the
    // rest is too little, and the error says how much is.
    let short = MIN_ARENA_BYTES - 8 - 1;
    let e = Ramfs::new(&mut buf[aligned..aligned + short], 0).err().expect("too small");
    assert_eq!(e.needed, MIN_ARENA_BYTES);
}

#[test]
fn a_paused_client_gets_no_read_data_until_resumed_and_others_go_on() {
    let config = Config { read_chunk_size: 4096, ..Config::default() };
    let mut host = Host::new(TEST_ARENA, config);
    host.handshake();
    let file: Vec<u8> = (0..64 * 1024u32).map(|i| i as u8).collect();
    host.write(1, "/f", None, &file, 8192);
    let (slow, other) = (slot_id(1, 0), slot_id(2, 0));
    let (start, end) = wire::relay::slot_range(1);
    host.send(0, &wire::RelayFlow { id_start: start, id_end_exclusive: end, paused: true });
    host.send(slow, &FsRequest { bulk: None, op: FsOp::Read { path: "/f" } });
    host.send(other, &FsRequest { bulk: None, op: FsOp::Read { path: "/f" } });
    let frames = host.until_terminal(other);
    assert!(frames.iter().all(|f| f.id() == other), "read data went to a paused client");
    assert_eq!(host.agent.sessions(), 1, "the paused read waits");
    assert!(host.take().is_empty());
    // Small answers still reach the paused client.
    assert!(host.stat(slot_id(1, 1), "/f").is_ok());
    host.send(0, &wire::RelayFlow { id_start: start, id_end_exclusive: end, paused: false });
    let frames = host.until_terminal(slow);
    let data: Vec<u8> = frames
        .iter()
        .filter_map(|f| match f.message().body {
            Body::FsData(d) => Some(d.data.to_vec()),
            _ => None,
        })
        .flatten()
        .collect();
    assert_eq!(data, file);
}

#[test]
fn a_pause_ends_with_its_clients_disconnect() {
    let config = Config { read_chunk_size: 4096, ..Config::default() };
    let mut host = Host::new(TEST_ARENA, config);
    host.handshake();
    host.write(1, "/f", None, &[7u8; 20_000], 8192);
    let (start, end) = wire::relay::slot_range(1);
    host.send(0, &wire::RelayFlow { id_start: start, id_end_exclusive: end, paused: true });
    let base = start - 1;
    host.send(0, &RelayClientDisconnected { id_start: base, id_end_exclusive: base + wire::relay::SLOT_STEP });
    // The slot's next client is not paused.
    let (data, _) = host.read(slot_id(1, 0), "/f");
    assert_eq!(data.len(), 20_000);
}
