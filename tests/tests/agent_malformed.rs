//! Every malformed vector fed to a running agent: each gets the documented
//! reaction, and the agent serves a valid request afterwards.
//!
//! Reactions: a bad length prefix ends the stream (served again after
//! `reset_stream` and a new handshake); a truncated frame waits for more
//! bytes; an undecodable envelope is `core.error` `malformed_message` (or
//! `unsupported_message_type` for an unknown `t`); an undecodable payload
//! is `core.error` `invalid_payload` naming the type (a type only the guest
//! sends is `unsupported_message_type` whatever its payload); wrong flags are
//! `core.error` `invalid_flags`; an accepted frame is handled like any
//! other (a deviation from the reference is answered as undecodable).

use agent_core::driver::PowerOff;
use agent_core::{Config, Event, State};
use tests::harness::{Host, Sent};
use tests::vectors::{self, unhex};
use wire::{Body, CoreErrorKind, ErrorKind, FsOp, FsResponse, FsResponseData, InitAck, Layer, Message, MessageType};

/// What the agent must do with a frame.
#[derive(Debug, PartialEq)]
enum Reaction {
    /// Stop reading the stream.
    StreamError,
    /// Wait for the rest of the frame; send nothing.
    Wait,
    /// Send `core.error` of this kind on the frame's id.
    CoreError(CoreErrorKind, Option<String>),
    /// Send one terminal frame of this type on the frame's id.
    Answer(MessageType),
    /// Send nothing.
    Nothing,
    /// Power off.
    PowerOff,
}

/// The documented reaction, derived from the codec's verdict on the frame.
fn expected(frame: &[u8]) -> Reaction {
    let parsed = match wire::parse_frame(frame) {
        Err(_) => return Reaction::StreamError,
        Ok(wire::FrameStatus::Incomplete { .. }) => return Reaction::Wait,
        Ok(wire::FrameStatus::Complete { frame, .. }) => frame,
    };
    let t = wire::hints(parsed.body).t.map(str::to_string);
    let message = match Message::decode(parsed) {
        Ok(m) => m,
        Err(e) if e.layer == Layer::Envelope && e.kind == ErrorKind::UnknownMessageType => {
            return Reaction::CoreError(CoreErrorKind::UnsupportedMessageType, t);
        }
        Err(e) if e.layer == Layer::Envelope => return Reaction::CoreError(CoreErrorKind::MalformedMessage, t),
        Err(_) => {
            // Flags are checked before the payload, as in the reference agent.
            let env = wire::Envelope::decode(parsed.body).unwrap();
            if parsed.flags != env.t.flags() {
                return Reaction::CoreError(CoreErrorKind::InvalidFlags, t);
            }
            // A type only the guest sends is refused before its payload is read.
            if matches!(
                env.t,
                MessageType::InitResolved | MessageType::Ready | MessageType::FsResponse | MessageType::Pong
            ) {
                return Reaction::CoreError(CoreErrorKind::UnsupportedMessageType, t);
            }
            return Reaction::CoreError(CoreErrorKind::InvalidPayload, t);
        }
    };
    if !message.flags_match() {
        return Reaction::CoreError(CoreErrorKind::InvalidFlags, t);
    }
    match message.message_type() {
        MessageType::Ping => Reaction::Answer(MessageType::Pong),
        // A write opens a session and answers at its end of stream.
        MessageType::FsRequest if matches!(message.body, Body::FsRequest(r) if matches!(r.op, FsOp::Write { .. })) => {
            Reaction::Nothing
        }
        MessageType::FsRequest | MessageType::FsData => Reaction::Answer(MessageType::FsResponse),
        MessageType::Shutdown => Reaction::PowerOff,
        MessageType::Error | MessageType::InitAck | MessageType::ClockSync | MessageType::RelayClientDisconnected => {
            Reaction::Nothing
        }
        other => Reaction::CoreError(CoreErrorKind::UnsupportedMessageType, Some(other.as_str().to_string())),
    }
}

fn observed(host: &mut Host, id: u32, frames: &[Sent]) -> Reaction {
    if matches!(host.agent.state(), State::AwaitingStream { .. }) {
        return Reaction::StreamError;
    }
    if host.events.contains(&Event::PowerOff(PowerOff::Shutdown)) {
        return Reaction::PowerOff;
    }
    match frames {
        [] => Reaction::Nothing,
        [f] if f.id() == id && f.is_terminal() => match f.message().body {
            Body::Error(e) => Reaction::CoreError(e.kind, e.offending_type.map(str::to_string)),
            _ => Reaction::Answer(f.message_type()),
        },
        more => panic!("more than one frame: {more:?}"),
    }
}

/// A valid request must be answered (after a new stream if needed).
fn still_serves(host: &mut Host) {
    let frames = host.request(4242, FsOp::Stat { path: "/", follow_symlink: None });
    assert!(matches!(
        frames.last().unwrap().message().body,
        Body::FsResponse(FsResponse { ok: true, data: Some(FsResponseData::Stat(_)), .. })
    ));
}

#[test]
fn every_malformed_vector_gets_the_documented_reaction() {
    let (path, vectors) = vectors::invalid();
    let mut failures = Vec::new();
    let mut counts = std::collections::BTreeMap::<String, usize>::new();
    for v in &vectors {
        let name = v["name"].as_str().unwrap();
        let frame = unhex(v["frame_hex"].as_str().unwrap());
        let id = frame.get(4..8).map(|b| u32::from_be_bytes(b.try_into().unwrap())).unwrap_or(0);
        let want = expected(&frame);
        let mut host = Host::new(1 << 20, Config::default());
        host.handshake();
        host.events.clear();
        host.deliver(&frame);
        let frames = host.take();
        let got = match observed(&mut host, id, &frames) {
            Reaction::Nothing if want == Reaction::Wait => Reaction::Wait,
            other => other,
        };
        *counts.entry(format!("{want:?}").split('(').next().unwrap().to_string()).or_default() += 1;
        if got != want {
            failures.push(format!("{name}: expected {want:?}, got {got:?}"));
            continue;
        }
        match want {
            Reaction::PowerOff => continue,
            Reaction::StreamError | Reaction::Wait => {
                host.agent.reset_stream(host.now);
                let init = host.take();
                assert_eq!(init[0].message_type(), MessageType::InitResolved, "{name}");
                host.send(0, &InitAck);
                host.take();
            }
            _ => {}
        }
        still_serves(&mut host);
    }
    println!("{}: {} malformed vectors, reactions {counts:?}", path.display(), vectors.len());
    assert!(failures.is_empty(), "{} failures:\n{}", failures.len(), failures.join("\n"));
}
