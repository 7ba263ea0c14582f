//! Guest path completion against a guest that does not answer: the
//! prompt gets no candidates instead of waiting, and a slow `List` is not
//! joined by another one.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use common::read_frame;
use host_sync::complete::{GuestLister, Lister};
use host_sync::proto::{ReadyInfo, frame};
use host_sync::{Client, ClientOptions};
use wire::{Body, Flags, FsOp, InitResolved, Message, Ready};

/// How long a completion waits here: the guest never answers in time.
const LIST_TIMEOUT: Duration = Duration::from_millis(50);

/// A guest that completes the handshake and then answers nothing by itself.
fn silent_guest() -> (Client, UnixStream) {
    let (mut host, mut guest) = UnixStream::pair().unwrap();
    let g = std::thread::spawn(move || {
        guest.write_all(&frame(0, &InitResolved::default())).unwrap();
        let _ack = read_frame(&mut guest);
        let ready = Ready { boot_time_ns: 1, init_time_ns: 1, ready_time_ns: 1, agent_version: "silent" };
        let mut out = vec![0u8; wire::frame_len(&ready)];
        wire::encode_frame_as(0, Flags::NONE, 5, &ready, &mut out).unwrap();
        guest.write_all(&out).unwrap();
        let _clock = read_frame(&mut guest);
        guest
    });
    let ready: ReadyInfo = host_sync::sandbox::handshake(&mut host, Instant::now() + Duration::from_secs(5)).unwrap();
    let options = ClientOptions { call_timeout: Duration::from_secs(60), ..ClientOptions::default() };
    (Client::over_guest(host, ready, options).unwrap(), g.join().unwrap())
}

fn listed_path(request: &[u8]) -> String {
    match Message::decode_bytes(request).unwrap().body {
        Body::FsRequest(r) => match r.op {
            FsOp::List { path } => path.to_string(),
            other => panic!("expected a List, got {other:?}"),
        },
        other => panic!("expected a request, got {other:?}"),
    }
}

#[test]
fn a_silent_guest_completes_nothing_and_gets_one_list_at_a_time() {
    let (client, mut guest) = silent_guest();
    let lister = GuestLister::new(client, LIST_TIMEOUT);
    // The client waits up to a minute for an answer; the completion does not.
    assert_eq!(lister.names("/slow"), None);
    assert_eq!(listed_path(&read_frame(&mut guest)), "/slow");

    // While that List is still pending, another completion sends nothing.
    assert_eq!(lister.names("/other"), None);
    guest.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let mut byte = [0u8; 1];
    match guest.read(&mut byte) {
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
        other => panic!("a second List went out while the first was pending: {other:?}"),
    }
}
