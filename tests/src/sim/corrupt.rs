//! Corrupted input: requests with flipped bytes in their CBOR body, and
//! length prefixes no frame may have. What the agent must answer to a
//! corrupted request is worked out with the codec itself, the way the
//! agent reads a frame: envelope, flags, payload.

use wire::{Body, Envelope, FsOp, FsRequest, HEADER_SIZE, MAX_FRAME, MessageType, PROTOCOL_GENERATION, hints};

use super::calls::CorruptAnswer;
use crate::rng::Rng;

/// Bytes flipped in one corrupted body, at most. Three cannot turn `Stat`
/// or `List` into an operation with effects (every other variant name
/// differs from them in four or more bytes).
const FLIPS_MAX: u64 = 3;

/// Tries at flipping before giving up on one request.
const TRIES: usize = 8;

/// The first generation that may be sent `core.error`.
const CORE_ERROR_GENERATION: u8 = wire::CORE_ERROR_GENERATION;

/// Flips bytes in the body of `frame` (a `Stat` or `List` request) and
/// returns what the agent must answer, or `None` if every try decoded to
/// an operation with effects (`frame` is then left corrupted but unused).
pub fn flip_body(frame: &mut [u8], rng: &mut Rng) -> Option<CorruptAnswer> {
    let original = frame.to_vec();
    for _ in 0..TRIES {
        frame.copy_from_slice(&original);
        for _ in 0..rng.range(1, FLIPS_MAX) {
            let at = rng.range(HEADER_SIZE as u64, frame.len() as u64 - 1) as usize;
            frame[at] ^= rng.range(1, 255) as u8;
        }
        if let Some(answer) = expected_answer(&frame[HEADER_SIZE..]) {
            return Some(answer);
        }
    }
    None
}

/// What the agent must answer to a request frame with this body (flags
/// `SESSION_START`), or `None` if it is a valid operation with effects.
fn expected_answer(body: &[u8]) -> Option<CorruptAnswer> {
    let error = |v: u8| if v < CORE_ERROR_GENERATION { CorruptAnswer::Silence } else { CorruptAnswer::Error };
    let envelope = match Envelope::decode(body) {
        Ok(envelope) => envelope,
        Err(_) => return Some(error(hints(body).v.unwrap_or(PROTOCOL_GENERATION))),
    };
    if envelope.t != MessageType::FsRequest {
        return Some(error(envelope.v));
    }
    match Body::decode(envelope.t, envelope.p) {
        Err(_) => Some(error(envelope.v)),
        Ok(Body::FsRequest(FsRequest { bulk: None, op: FsOp::Stat { .. } | FsOp::List { .. } })) => {
            Some(CorruptAnswer::Response)
        }
        Ok(_) => None,
    }
}

/// Four bytes that cannot start a frame, and a little garbage after them.
pub fn bad_length_prefix(rng: &mut Rng) -> Vec<u8> {
    let len = *rng.pick(&[0, 1, 4, MAX_FRAME + 1, u32::MAX]);
    let mut out = len.to_be_bytes().to_vec();
    out.extend((0..rng.range(0, 8)).map(|_| rng.next_u64() as u8));
    out
}
