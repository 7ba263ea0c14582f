//! The relay against an in-process agent: several clients on one guest,
//! disconnects, id-range enforcement and its bounds.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::{booted_guest, read_frame};
use host_sync::relay::RELAY_SLOTS;
use host_sync::{Client, ClientOptions, Relay};

fn socket_path(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("relay-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir.join("relay.sock")
}

fn relay(name: &str, arena_mib: usize) -> (common::Guest, Relay) {
    let (guest, stream, ready) = booted_guest(arena_mib);
    let path = socket_path(name);
    (guest, Relay::start(stream, ready, Some(&path)).unwrap())
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn clients_share_one_guest_each_in_its_own_range() {
    let (_guest, relay) = relay("share", 32);
    let socket = relay.socket().unwrap().to_path_buf();
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&socket).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);
    let local = relay.client(ClientOptions::default()).unwrap();
    let a = Client::connect(&socket).unwrap();
    let b = Client::connect(&socket).unwrap();
    assert_eq!(relay.clients(), 3);
    a.fs().write("/shared", "from a").unwrap();
    assert_eq!(b.fs().read("/shared").unwrap(), b"from a");
    assert_eq!(local.fs().read("/shared").unwrap(), b"from a");
    assert_eq!(a.ready().frame, b.ready().frame, "every client gets the cached core.ready");
    let threads: Vec<_> = [a.clone(), b.clone(), local.clone()]
        .into_iter()
        .enumerate()
        .map(|(i, c)| {
            std::thread::spawn(move || {
                for n in 0..30 {
                    let p = format!("/c{i}/{n}");
                    c.fs().write(&p, p.as_bytes()).unwrap();
                    assert_eq!(c.fs().read(&p).unwrap(), p.as_bytes());
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    drop(a);
    wait_until("the departed client to free its slot", || relay.clients() == 2);
    assert_eq!(relay.refused_frames(), 0);
}

#[test]
fn a_client_leaving_mid_read_is_dropped_by_the_guest() {
    let (_guest, relay) = relay("midread", 96);
    let socket = relay.socket().unwrap().to_path_buf();
    let a = Client::connect(&socket).unwrap();
    a.fs().write_from("/big", &mut std::io::repeat(3).take(64 << 20)).unwrap();
    // B reads a little of it with a raw connection, then leaves.
    let mut b = UnixStream::connect(&socket).unwrap();
    let mut greeting = [0u8; 8];
    b.read_exact(&mut greeting).unwrap();
    let start = u32::from_be_bytes(greeting[..4].try_into().unwrap());
    let _ready = read_frame(&mut b);
    b.write_all(&host_sync::proto::frame(
        start,
        &wire::FsRequest { bulk: None, op: wire::FsOp::Read { path: "/big" } },
    ))
    .unwrap();
    let first = read_frame(&mut b);
    assert!(matches!(wire::Message::decode_bytes(&first).unwrap().body, wire::Body::FsData(_)));
    drop(b);
    wait_until("the relay to notice", || relay.clients() == 1);
    // The guest stops the read: at most the chunks already in flight arrive late.
    let settle = |relay: &Relay| {
        let before = relay.dropped_frames();
        std::thread::sleep(Duration::from_millis(300));
        relay.dropped_frames() - before
    };
    settle(&relay);
    assert_eq!(settle(&relay), 0, "the guest kept sending for a departed client");
    assert!(relay.dropped_frames() <= 4, "{} late frames", relay.dropped_frames());
    // The other client is unaffected, and a new client can use the freed slot.
    assert_eq!(a.fs().stat("/big").unwrap().size, 64 << 20);
    let c = Client::connect(&socket).unwrap();
    c.ping().unwrap();
}

#[test]
fn frames_outside_a_clients_range_are_refused_with_an_answer() {
    let (_guest, relay) = relay("range", 16);
    let mut raw = UnixStream::connect(relay.socket().unwrap()).unwrap();
    let mut greeting = [0u8; 8];
    raw.read_exact(&mut greeting).unwrap();
    let (start, end) = wire::relay::slot_range(0);
    assert_eq!(greeting, [start.to_be_bytes(), end.to_be_bytes()].concat()[..]);
    let _ready = read_frame(&mut raw);
    raw.write_all(&host_sync::proto::frame(end, &wire::Ping)).unwrap();
    raw.write_all(&host_sync::proto::frame(0, &wire::Ping)).unwrap();
    raw.write_all(&host_sync::proto::frame(
        start,
        &wire::FsRequest { bulk: None, op: wire::FsOp::Stat { path: "/", follow_symlink: None } },
    ))
    .unwrap();
    // The refused frames are answered by the relay (core.error on their id),
    // only the in-range request reaches the guest.
    for id in [end, 0] {
        let answer = read_frame(&mut raw);
        assert_eq!(u32::from_be_bytes(answer[4..8].try_into().unwrap()), id);
        let m = wire::Message::decode_bytes(&answer).unwrap();
        assert!(matches!(m.body, wire::Body::Error(ref e) if e.kind == wire::CoreErrorKind::InvalidSession), "{m:?}");
    }
    let answer = read_frame(&mut raw);
    assert_eq!(u32::from_be_bytes(answer[4..8].try_into().unwrap()), start);
    assert!(matches!(wire::Message::decode_bytes(&answer).unwrap().body, wire::Body::FsResponse(_)));
    assert_eq!(relay.refused_frames(), 2);
}

#[test]
fn a_client_sending_a_bad_frame_is_disconnected_alone() {
    let (_guest, relay) = relay("bad", 16);
    let good = Client::connect(relay.socket().unwrap()).unwrap();
    let mut bad = UnixStream::connect(relay.socket().unwrap()).unwrap();
    let mut greeting = [0u8; 8];
    bad.read_exact(&mut greeting).unwrap();
    let _ready = read_frame(&mut bad);
    bad.write_all(&[0xff, 0xff, 0xff, 0xff]).unwrap();
    let mut rest = Vec::new();
    bad.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    assert_eq!(bad.read_to_end(&mut rest).unwrap(), 0, "the relay closed the connection");
    wait_until("the slot to be freed", || relay.clients() == 1);
    good.ping().unwrap();
}

#[test]
fn the_relay_holds_128_clients_and_refuses_the_next() {
    let (_guest, relay) = relay("full", 16);
    let socket = relay.socket().unwrap().to_path_buf();
    let mut clients = Vec::new();
    for _ in 0..RELAY_SLOTS {
        let mut s = UnixStream::connect(&socket).unwrap();
        let mut greeting = [0u8; 8];
        s.read_exact(&mut greeting).unwrap();
        let _ready = read_frame(&mut s);
        clients.push(s);
    }
    assert_eq!(relay.clients(), RELAY_SLOTS);
    let mut extra = UnixStream::connect(&socket).unwrap();
    extra.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut buf = Vec::new();
    extra.read_to_end(&mut buf).unwrap();
    assert_eq!(buf, host_sync::relay::FULL_GREETING, "the 129th client is told the relay is full");
    let full = Client::connect(&socket).err().expect("a full relay refuses");
    assert!(full.to_string().contains("the relay is full"), "{full}");
    drop(clients.pop());
    // The slot is handed out again once the guest confirmed its drain.
    wait_until("the slot to drain", || relay.clients() == RELAY_SLOTS - 1 && relay.draining() == 0);
    Client::connect(&socket).unwrap().ping().unwrap();
}

#[test]
fn a_relay_client_can_shut_the_guest_down() {
    let (guest, relay) = relay("shutdown", 16);
    let a = Client::connect(relay.socket().unwrap()).unwrap();
    a.shutdown().unwrap();
    let exit = guest.thread.join().unwrap();
    assert!(matches!(exit, agent_core::driver::Exit::PowerOff(agent_core::driver::PowerOff::Shutdown)));
}

#[test]
fn a_client_in_a_freed_slot_cannot_use_the_old_clients_handles() {
    let (_guest, relay) = relay("handles", 16);
    let socket = relay.socket().unwrap().to_path_buf();
    // The first client of slot 0 opens a file and leaves with it open.
    let old = Client::connect(&socket).unwrap();
    let fs = old.fs();
    let file = fs.open("/secret", host_sync::OpenOptions::new().read(true).write(true).create(true)).unwrap();
    file.write_at(0, b"the old client's secret").unwrap();
    let number = file.handle();
    std::mem::forget(file);
    old.close();
    drop(old);
    wait_until("the slot to drain", || relay.clients() == 0 && relay.draining() == 0);
    // The next client gets the same slot, so the same ids, and tries the
    // old handle number every way it can.
    let mut raw = UnixStream::connect(&socket).unwrap();
    let mut greeting = [0u8; 8];
    raw.read_exact(&mut greeting).unwrap();
    let (start, _) = wire::relay::slot_range(0);
    assert_eq!(greeting[..4], start.to_be_bytes(), "the freed slot is reused");
    let _ready = read_frame(&mut raw);
    let ops = [
        wire::FsOp::ReadHandle { handle: number, offset: 0, len: None },
        wire::FsOp::FStat { handle: number },
        wire::FsOp::CloseHandle { handle: number },
    ];
    for (i, op) in ops.into_iter().enumerate() {
        let id = start + i as u32;
        raw.write_all(&host_sync::proto::frame(id, &wire::FsRequest { bulk: None, op })).unwrap();
        let answer = read_frame(&mut raw);
        assert_eq!(u32::from_be_bytes(answer[4..8].try_into().unwrap()), id);
        match wire::Message::decode_bytes(&answer).unwrap().body {
            wire::Body::FsResponse(r) => {
                assert!(!r.ok, "{op:?} on the old client's handle succeeded");
                assert!(r.error.unwrap().ends_with("Bad file descriptor (os error 9)"), "{op:?}");
            }
            other => panic!("{op:?} got {other:?}"),
        }
    }
    // The file is untouched and its handle is gone with its client.
    let new = Client::connect(&socket).unwrap();
    assert_eq!(new.fs().read("/secret").unwrap(), b"the old client's secret");
}
