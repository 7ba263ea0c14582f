//! Any bytes, at every layer: never a panic, never a read past the input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wire::{
    ClockSync, CoreError, DecodePayload, Envelope, FsData, FsRequest, FsResponse, InitAck, InitResolved, Message, Ping,
    Pong, Ready, RelayClientDisconnected, Shutdown, hints, parse_frame,
};

fn payloads(p: &[u8]) {
    let _ = InitResolved::decode(p);
    let _ = InitAck::decode(p);
    let _ = Ready::decode(p);
    let _ = ClockSync::decode(p);
    let _ = CoreError::decode(p);
    let _ = RelayClientDisconnected::decode(p);
    let _ = FsRequest::decode(p);
    let _ = FsData::decode(p);
    let _ = Shutdown::decode(p);
    let _ = Ping::decode(p);
    let _ = Pong::decode(p);
    if let Ok(r) = FsResponse::decode(p)
        && let Some(wire::FsResponseData::List(list)) = r.data
    {
        // The lazy list must yield exactly the entries it counted.
        assert_eq!(list.iter().count(), list.len());
    }
}

fuzz_target!(|data: &[u8]| {
    let _ = parse_frame(data);
    let _ = Message::decode_bytes(data);
    let _ = Envelope::decode(data);
    let _ = hints(data);
    payloads(data);
});
