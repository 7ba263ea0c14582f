//! A broken or malicious guest gets typed errors and bounded memory from
//! the client, never a panic or a hang. The guest here is scripted: it
//! completes the handshake, then does what each test wants.

mod common;

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::read_frame;
use host_sync::proto::{ReadyInfo, frame};
use host_sync::{Client, ClientOptions, Error};
use wire::{CoreError, CoreErrorKind, Flags, FsData, FsEntryInfo, FsResponse, InitResolved, Pong, Ready};

fn id_of(frame: &[u8]) -> u32 {
    u32::from_be_bytes(frame[4..8].try_into().unwrap())
}

/// A scripted guest with generation `v`; returns the host's client and the guest's stream.
fn scripted(v: u8, timeout: Duration) -> (Client, UnixStream) {
    let (mut host, mut guest) = UnixStream::pair().unwrap();
    let g = std::thread::spawn(move || {
        guest.write_all(&frame(0, &InitResolved::default())).unwrap();
        let _ack = read_frame(&mut guest);
        let ready = Ready { boot_time_ns: 1, init_time_ns: 1, ready_time_ns: 1, agent_version: "scripted" };
        let mut out = vec![0u8; wire::frame_len(&ready)];
        wire::encode_frame_as(0, Flags::NONE, v, &ready, &mut out).unwrap();
        guest.write_all(&out).unwrap();
        let _clock = read_frame(&mut guest);
        guest
    });
    let ready: ReadyInfo = host_sync::sandbox::handshake(&mut host, Instant::now() + Duration::from_secs(5)).unwrap();
    let options = ClientOptions { call_timeout: timeout, ..ClientOptions::default() };
    (Client::over_guest(host, ready, options).unwrap(), g.join().unwrap())
}

/// Starts `call` with a clone of `client` on its own thread and reads the
/// request it sends `guest`: the pending call and that request.
fn pending_call<T: Send + 'static>(
    client: &Client,
    guest: &mut UnixStream,
    call: impl FnOnce(Client) -> T + Send + 'static,
) -> (JoinHandle<T>, Vec<u8>) {
    let c = client.clone();
    let pending = std::thread::spawn(move || call(c));
    (pending, read_frame(guest))
}

#[test]
fn an_oversized_frame_ends_the_connection_with_a_protocol_error() {
    let (client, mut guest) = scripted(5, Duration::from_secs(5));
    let (pending, _request) = pending_call(&client, &mut guest, |c| c.fs().stat("/"));
    guest.write_all(&[0x7f, 0xff, 0xff, 0xff]).unwrap();
    let start = Instant::now();
    let result = pending.join().unwrap();
    assert!(matches!(result, Err(Error::Protocol(ref m)) if m.contains("bad frame")), "{result:?}");
    assert!(start.elapsed() < Duration::from_secs(2));
    assert!(!client.is_open());
    assert!(matches!(client.fs().stat("/"), Err(Error::Protocol(_))));
}

#[test]
fn an_undecodable_answer_is_a_protocol_error_and_the_connection_goes_on() {
    let (client, mut guest) = scripted(5, Duration::from_secs(5));
    let (pending, request) = pending_call(&client, &mut guest, |c| c.fs().stat("/"));
    // A terminal frame whose body is not CBOR.
    let mut bad = vec![0, 0, 0, 8];
    bad.extend_from_slice(&id_of(&request).to_be_bytes());
    bad.extend_from_slice(&[Flags::TERMINAL.bits(), 0xff, 0xff, 0xff]);
    guest.write_all(&bad).unwrap();
    assert!(matches!(pending.join().unwrap(), Err(Error::Protocol(_))));
    assert!(client.is_open());
}

#[test]
fn a_core_error_answer_is_a_typed_guest_error() {
    let (client, mut guest) = scripted(5, Duration::from_secs(5));
    let (pending, request) = pending_call(&client, &mut guest, |c| c.fs().mkdir("/x"));
    let error = CoreError { kind: CoreErrorKind::InvalidPayload, message: "no", offending_type: None };
    guest.write_all(&frame(id_of(&request), &error)).unwrap();
    match pending.join().unwrap() {
        Err(Error::Guest { kind: CoreErrorKind::InvalidPayload, message }) => assert_eq!(message, "no"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_silent_guest_times_calls_out() {
    let (client, _guest) = scripted(5, Duration::from_millis(200));
    let start = Instant::now();
    assert!(matches!(client.fs().stat("/"), Err(Error::Timeout(_))));
    assert!(start.elapsed() < Duration::from_secs(2));
}

#[test]
fn a_flood_of_stray_frames_is_dropped_and_real_answers_still_arrive() {
    let (client, mut guest) = scripted(5, Duration::from_secs(10));
    let (pending, request) = pending_call(&client, &mut guest, |c| c.fs().read("/f"));
    let id = id_of(&request);
    // 200 MiB of data for ids nobody asked for: far more than any buffer.
    let junk = vec![0u8; 1 << 20];
    for n in 0..200u32 {
        guest.write_all(&frame(id + 1000 + n, &FsData { data: &junk })).unwrap();
    }
    guest.write_all(&frame(id, &FsData { data: b"real" })).unwrap();
    guest.write_all(&frame(id, &FsResponse::<[FsEntryInfo<'_>; 0]>::ok())).unwrap();
    assert_eq!(pending.join().unwrap().unwrap(), b"real");
    assert_eq!(client.stray_frames(), 200);
}

#[test]
fn a_newer_guest_gets_core_ping() {
    let (client, mut guest) = scripted(10, Duration::from_secs(5));
    assert_eq!(client.generation(), 6);
    let (pending, request) = pending_call(&client, &mut guest, |c| c.ping());
    let m = wire::Message::decode_bytes(&request).unwrap();
    assert_eq!(m.message_type(), wire::MessageType::Ping);
    guest.write_all(&frame(id_of(&request), &Pong)).unwrap();
    assert!(pending.join().unwrap().is_ok());
}

#[test]
fn a_guest_that_hangs_up_fails_pending_calls_at_once() {
    let (client, mut guest) = scripted(5, Duration::from_secs(30));
    let (pending, _request) = pending_call(&client, &mut guest, |c| c.fs().read("/f"));
    let start = Instant::now();
    drop(guest);
    assert!(matches!(pending.join().unwrap(), Err(Error::Disconnected(_))));
    assert!(start.elapsed() < Duration::from_secs(1));
}

#[test]
fn data_frames_on_a_call_that_takes_none_end_it_at_once() {
    // A guest that answers a Stat with core.fs.data cannot keep the call
    // (and its caller) waiting: the frame ends the call as a protocol
    // error, and the real answer that follows is dropped as a stray.
    let (client, mut guest) = scripted(5, Duration::from_secs(30));
    let (pending, request) = pending_call(&client, &mut guest, |c| c.fs().stat("/"));
    let id = id_of(&request);
    let start = Instant::now();
    guest.write_all(&frame(id, &FsData { data: b"not a stat answer" })).unwrap();
    let result = pending.join().unwrap();
    assert!(matches!(result, Err(Error::Protocol(_))), "{result:?}");
    assert!(start.elapsed() < Duration::from_secs(5), "the call waited for a terminal frame");
    guest.write_all(&frame(id, &FsResponse::<[FsEntryInfo<'_>; 0]>::ok())).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while client.stray_frames() == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(client.stray_frames(), 1, "the late answer reached no call");
    assert!(client.is_open(), "one bad answer does not end the connection");
}
