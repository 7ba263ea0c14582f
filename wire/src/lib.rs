//! `wire`: a zero-allocation codec for the microsandbox host<->guest agent
//! protocol, byte-identical to the reference encoder (serde + ciborium).
//!
//! `#![no_std]`, no `alloc`. Decoding borrows from the frame (`&'a str`,
//! `&'a [u8]`); encoding writes into a caller's `&mut [u8]` whose exact size
//! is known first.
//!
//! # Layers
//!
//! ```text
//! [len: u32 BE][id: u32 BE][flags: u8][body: CBOR {"v": u8, "t": text, "p": bytes}]
//!                                                                        p = payload CBOR
//! ```
//!
//! - [`parse_frame`] finds a frame in a stream buffer (or says how many
//!   bytes are missing) and checks the length prefix.
//! - [`Envelope::decode`] reads `{v, t, p}`.
//! - each payload type implements [`DecodePayload`] and [`Payload`].
//! - [`Message`] does all three at once and re-encodes.
//!
//! ```
//! use wire::{encode_frame, frame_len, FsOp, FsRequest, Message, Body};
//!
//! let request = FsRequest::new(FsOp::Stat { path: "/a", follow_symlink: None });
//! let mut buf = [0u8; 64];
//! let n = encode_frame(1, &request, &mut buf).unwrap();
//! assert_eq!(n, frame_len(&request));
//!
//! let message = Message::decode_bytes(&buf[..n]).unwrap();
//! assert_eq!(message.id, 1);
//! assert_eq!(message.body, Body::FsRequest(request));
//! ```
//!
//! # Two dialects in one set of types
//!
//! The same three message types carry two generations of filesystem
//! payloads: the seed-era, path-based surface and the current,
//! handle-based one (the reference changed the shapes without a
//! generation bump). The payload's shape tells them apart, and the types
//! here keep that shape so that a value re-encodes to the bytes it came
//! from:
//!
//! | wire | seed-era shape | current shape |
//! |---|---|---|
//! | `Stat` | `follow_symlink: None` | `follow_symlink: Some(_)` |
//! | `RemoveDir` | `recursive: None` | `recursive: Some(_)` |
//! | `Mkdir` | [`FsOp::Mkdir`] (`{path}`) | [`FsOp::MkdirWith`] (`{path, mode, user}`) |
//! | `Read` | [`FsOp::Read`] (`{path}`) | [`FsOp::ReadHandle`] (`{handle, offset, len}`) |
//! | `Write` | [`FsOp::Write`] (`{path, mode}`) | [`FsOp::WriteHandle`] (`{handle, offset, len}`) |
//! | `FsEntryInfo` | `extra: None` (5 keys) | `extra: Some(_)` (9 keys) |
//!
//! Decoding picks the shape by the keys present: `follow_symlink`,
//! `recursive`, `mode`/`user` (for `Mkdir`) and `handle`/`offset`/`len`
//! (for `Read` and `Write`) select the current meaning; an entry with
//! `uid` or `gid` is a 9-field entry (and then needs both). A `Read` or
//! `Write` body given as an array (which the reference accepts) is the
//! seed shape when its first element is text, else the current one. A
//! `Read`/`Write` map with both `path` and `handle` is the current shape.
//!
//! `FsRequest.bulk` (a generation-8 raw-bulk offer) is decoded and
//! re-encoded as the reference does; accepting it is the agent's business.
//!
//! # Decoding tolerance
//!
//! The decoder accepts what the reference decoder accepts: keys in any
//! order, unknown keys skipped, missing `Option` fields as `None`,
//! non-minimal integer and length heads, bignum-tagged integers, any tag in
//! front of a value, indefinite-length maps and arrays, byte-string map
//! keys, trailing bytes after the envelope or the payload, and the
//! reference's enum quirks (a struct variant given as bare text takes its
//! body from the next item; a unit variant given as a map leaves the value
//! unread). It rejects what the reference rejects: duplicate keys, integer
//! keys, indefinite-length keys, structs as arrays, out-of-range integers,
//! invalid UTF-8, unknown variants and message types.
//!
//! # Deliberate deviations
//!
//! Each is rejected with [`ErrorKind::Unsupported`]; each would need a copy
//! into an allocation to become one contiguous borrowed slice:
//!
//! 1. [`Deviation::ChunkedText`]: a text field (a path, a message) sent as
//!    an indefinite-length string of two or more chunks. A single chunk is
//!    accepted (it is contiguous), and the envelope's `t` is accepted in
//!    any number of chunks (it is matched chunk by chunk, never copied).
//! 2. [`Deviation::ChunkedBytes`]: `p` or `FsData.data` as an
//!    indefinite-length byte string of two or more chunks (one chunk is
//!    accepted).
//! 3. [`Deviation::BytesAsArray`]: `p` or `FsData.data` as an array of
//!    integers instead of a byte string. The array is validated first, so
//!    an element above 255 is still [`ErrorKind::OutOfRange`] as in the
//!    reference.
//!
//! One acceptance goes beyond the reference's typed decoder: an empty
//! `core.shutdown` payload decodes as [`Shutdown`], as the reference agent
//! (which never decodes that payload) accepts it.
//!
//! # Encoding
//!
//! Output is canonical as the reference writes it: definite lengths,
//! shortest integer heads, text keys in declaration order, `None` as
//! `null` except the two omitted fields (`CoreError.offending_type` when
//! `None`, `Ready.agent_version` when empty).

#![no_std]
#![deny(unsafe_code)]

mod cbor;
mod control;
mod envelope;
mod error;
mod frame;
mod fs;
mod message;
pub mod relay;

use minicbor::encode::Write;

pub use cbor::{EncodeResult, Encoder, EndOfBuffer, MAX_NESTING};
pub use control::{
    ClockSync, CoreError, CoreErrorKind, InitAck, InitResolved, Ping, Pong, Ready, RelayClientDisconnected, RelayFlow,
    ResolvedUser, Shutdown,
};
pub use envelope::{Envelope, Hints, hints};
pub use error::{Deviation, EncodeError, Error, ErrorKind, Layer};
pub use frame::{
    Flags, Frame, FrameStatus, HEADER_SIZE, LEN_PREFIX_SIZE, MAX_FRAME, MAX_FRAME_BYTES, MIN_FRAME, check_len,
    parse_frame,
};
pub use fs::{
    BulkOffer, EntryExtra, EntryIter, EntryKind, EntryList, EntrySource, FS_CHUNK_SIZE, FsData, FsEntryInfo,
    FsEntryKind, FsOp, FsOpenOptions, FsRequest, FsResponse, FsResponseData, FsSetAttrs, IterEntries,
};
pub use message::{CORE_ERROR_GENERATION, MessageType, PROTOCOL_GENERATION};

/// A payload that can be encoded: its message type and its CBOR.
pub trait Payload {
    /// The message type this payload travels as.
    const TYPE: MessageType;

    /// Writes the payload's CBOR.
    fn encode<W: Write>(&self, e: &mut Encoder<W>) -> EncodeResult<W>;

    /// The exact size of the payload's CBOR in bytes.
    fn encoded_len(&self) -> usize {
        if let Some(len) = self.known_len() {
            return len;
        }
        let mut e = Encoder::new(cbor::Counter(0));
        // Counting cannot fail.
        let _ = self.encode(&mut e);
        e.into_writer().0
    }

    /// The exact size of the payload's CBOR when it is known without
    /// encoding (a data chunk: a fixed head and its bytes). With `None`,
    /// [`encode_frame`] encodes once where a payload of
    /// [`GUESSED_PAYLOAD_LEN`] bytes would start and moves the bytes when
    /// the length head turns out another size; with `Some`, it writes them
    /// in place (moving a large chunk would cost as much as writing it).
    fn known_len(&self) -> Option<usize> {
        None
    }
}

/// The payload length [`encode_frame`] assumes for a payload without a
/// [`Payload::known_len`]: 24..=255 bytes (a two-byte length head) covers
/// most requests and answers; others cost one `memmove` of the payload.
pub const GUESSED_PAYLOAD_LEN: usize = 24;

/// A payload that can be decoded from `p`, borrowing from it.
pub trait DecodePayload<'a>: Sized {
    /// Decodes one CBOR item from `p`; trailing bytes are ignored.
    fn decode(p: &'a [u8]) -> Result<Self, Error>;
}

/// The size of a whole frame (length prefix included) carrying `payload`.
pub fn frame_len<P: Payload + ?Sized>(payload: &P) -> usize {
    HEADER_SIZE + Envelope::encoded_len(P::TYPE, PROTOCOL_GENERATION, payload.encoded_len())
}

/// Encodes a frame with the type's own flags and `v` = [`PROTOCOL_GENERATION`].
/// Returns the frame's size; on an error (the frame does not fit `out`, or
/// passes [`MAX_FRAME`]) `out` may hold a partial frame.
pub fn encode_frame<P: Payload + ?Sized>(id: u32, payload: &P, out: &mut [u8]) -> Result<usize, EncodeError> {
    encode_frame_as(id, P::TYPE.flags(), PROTOCOL_GENERATION, payload, out)
}

/// Encodes a frame with explicit flags and generation (for relays, tests
/// and peers that speak another generation). Returns the frame's size (on
/// an error, as [`encode_frame`]).
pub fn encode_frame_as<P: Payload + ?Sized>(
    id: u32,
    flags: Flags,
    v: u8,
    payload: &P,
    out: &mut [u8],
) -> Result<usize, EncodeError> {
    // With `compact` (the guest), one measured path serves every payload:
    // half the code per payload type, for a second pass over small ones.
    if cfg!(feature = "compact") {
        return encode_frame_measured(id, flags, v, payload, payload.encoded_len(), out);
    }
    if let Some(payload_len) = payload.known_len() {
        return encode_frame_measured(id, flags, v, payload, payload_len, out);
    }
    // One pass: the payload goes where it would start after a head for
    // GUESSED_PAYLOAD_LEN bytes, bounded by the largest frame, and moves
    // once its length (so its head) is known.
    let guessed = Envelope::encoded_len(P::TYPE, v, GUESSED_PAYLOAD_LEN) - GUESSED_PAYLOAD_LEN;
    let start = HEADER_SIZE + guessed;
    let end = out.len().min(MAX_FRAME_BYTES);
    let written = match out.get_mut(start..end) {
        Some(room) => {
            let mut e = Encoder::new(cbor::SliceWriter::new(room));
            payload.encode(&mut e).ok().map(|_| e.writer().position())
        }
        None => None,
    };
    let Some(payload_len) = written else {
        // Out of room (or too large): measuring says which, and by how much.
        return encode_frame_measured(id, flags, v, payload, payload.encoded_len(), out);
    };
    let body_len = Envelope::encoded_len(P::TYPE, v, payload_len);
    let total = reserve(out, body_len)?;
    let head = body_len - payload_len;
    if head != guessed {
        out.copy_within(start..start + payload_len, HEADER_SIZE + head);
    }
    frame::write_header(out, id, flags, body_len);
    let written_head = Envelope::write_head(&mut out[HEADER_SIZE..], P::TYPE, v, payload_len);
    assert!(written_head == head, "envelope head wrote another length than it measured");
    Ok(total)
}

/// [`encode_frame_as`] for a payload whose size is known: checks the
/// frame fits, writes the heads, then the payload in place.
fn encode_frame_measured<P: Payload + ?Sized>(
    id: u32,
    flags: Flags,
    v: u8,
    payload: &P,
    payload_len: usize,
    out: &mut [u8],
) -> Result<usize, EncodeError> {
    let body_len = Envelope::encoded_len(P::TYPE, v, payload_len);
    let total = reserve(out, body_len)?;
    frame::write_header(out, id, flags, body_len);
    let head = Envelope::write_head(&mut out[HEADER_SIZE..], P::TYPE, v, payload_len);
    let start = HEADER_SIZE + head;
    let mut e = Encoder::new(cbor::SliceWriter::new(&mut out[start..total]));
    // The sink is exactly `payload_len` long, which is what encoding writes.
    payload.encode(&mut e).map_err(|_| EncodeError::BufferTooSmall { needed: total, available: total })?;
    // Postcondition: the payload wrote exactly what it measured, so the
    // length prefix written first is true.
    assert!(start + e.writer().position() == total, "payload wrote another length than it measured");
    Ok(total)
}

/// Checks that a frame with a body of `body_len` bytes is within
/// [`MAX_FRAME`] and fits `out`; returns the frame's size.
fn reserve(out: &[u8], body_len: usize) -> Result<usize, EncodeError> {
    let len = body_len + HEADER_SIZE - LEN_PREFIX_SIZE;
    if len > MAX_FRAME as usize {
        return Err(EncodeError::FrameTooLarge { len });
    }
    let total = body_len + HEADER_SIZE;
    if out.len() < total {
        return Err(EncodeError::BufferTooSmall { needed: total, available: out.len() });
    }
    Ok(total)
}

/// The largest head [`encode_data_frame_head`] writes.
pub const DATA_FRAME_HEAD_MAX: usize = 64;

/// Encodes everything of a `core.fs.data` frame except the data itself, so
/// a sender can write the head and then the data straight from its own
/// buffer (no copy). Returns the head's size; the frame is that plus
/// `data_len` bytes.
pub fn encode_data_frame_head(
    id: u32,
    data_len: usize,
    out: &mut [u8; DATA_FRAME_HEAD_MAX],
) -> Result<usize, EncodeError> {
    let (payload_head, payload_head_len) = FsData::head(data_len);
    let payload_len = payload_head_len + data_len;
    let body_len = Envelope::encoded_len(MessageType::FsData, PROTOCOL_GENERATION, payload_len);
    let len = body_len + HEADER_SIZE - LEN_PREFIX_SIZE;
    if len > MAX_FRAME as usize {
        return Err(EncodeError::FrameTooLarge { len });
    }
    frame::write_header(out, id, MessageType::FsData.flags(), body_len);
    let n = HEADER_SIZE
        + Envelope::write_head(&mut out[HEADER_SIZE..], MessageType::FsData, PROTOCOL_GENERATION, payload_len);
    out[n..n + payload_head_len].copy_from_slice(&payload_head[..payload_head_len]);
    // Postcondition: the head plus `data_len` bytes is the whole frame.
    debug_assert_eq!(n + payload_head_len + data_len, LEN_PREFIX_SIZE + len);
    Ok(n + payload_head_len)
}

/// Any decoded payload, tagged by its message type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Body<'a> {
    InitResolved(InitResolved),
    InitAck(InitAck),
    Ready(Ready<'a>),
    ClockSync(ClockSync),
    Error(CoreError<'a>),
    RelayClientDisconnected(RelayClientDisconnected),
    FsRequest(FsRequest<'a>),
    FsData(FsData<'a>),
    FsResponse(FsResponse<'a>),
    Shutdown(Shutdown),
    Ping(Ping),
    Pong(Pong),
    RelayFlow(RelayFlow),
}

/// Applies `$f` to the payload inside a [`Body`], whatever its type.
macro_rules! with_payload {
    ($body:expr, $p:ident => $f:expr) => {
        match $body {
            Body::InitResolved($p) => $f,
            Body::InitAck($p) => $f,
            Body::Ready($p) => $f,
            Body::ClockSync($p) => $f,
            Body::Error($p) => $f,
            Body::RelayClientDisconnected($p) => $f,
            Body::FsRequest($p) => $f,
            Body::FsData($p) => $f,
            Body::FsResponse($p) => $f,
            Body::Shutdown($p) => $f,
            Body::Ping($p) => $f,
            Body::Pong($p) => $f,
            Body::RelayFlow($p) => $f,
        }
    };
}

impl<'a> Body<'a> {
    /// Decodes `p` as the payload of type `t`.
    pub fn decode(t: MessageType, p: &'a [u8]) -> Result<Self, Error> {
        Ok(match t {
            MessageType::InitResolved => Body::InitResolved(DecodePayload::decode(p)?),
            MessageType::InitAck => Body::InitAck(DecodePayload::decode(p)?),
            MessageType::Ready => Body::Ready(DecodePayload::decode(p)?),
            MessageType::ClockSync => Body::ClockSync(DecodePayload::decode(p)?),
            MessageType::Error => Body::Error(DecodePayload::decode(p)?),
            MessageType::RelayClientDisconnected => Body::RelayClientDisconnected(DecodePayload::decode(p)?),
            MessageType::FsRequest => Body::FsRequest(DecodePayload::decode(p)?),
            MessageType::FsData => Body::FsData(DecodePayload::decode(p)?),
            MessageType::FsResponse => Body::FsResponse(DecodePayload::decode(p)?),
            MessageType::Shutdown => Body::Shutdown(DecodePayload::decode(p)?),
            MessageType::Ping => Body::Ping(DecodePayload::decode(p)?),
            MessageType::Pong => Body::Pong(DecodePayload::decode(p)?),
            MessageType::RelayFlow => Body::RelayFlow(DecodePayload::decode(p)?),
        })
    }

    /// The message type of this payload.
    pub fn message_type(&self) -> MessageType {
        fn t<P: Payload>(_: &P) -> MessageType {
            P::TYPE
        }
        with_payload!(self, p => t(p))
    }
}

/// A whole decoded frame: header, envelope and typed payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Message<'a> {
    /// The correlation id.
    pub id: u32,
    /// The flags as received (not checked against the type; see [`Message::flags_match`]).
    pub flags: Flags,
    /// The sender's protocol generation.
    pub v: u8,
    /// The payload.
    pub body: Body<'a>,
}

impl<'a> Message<'a> {
    /// Decodes the envelope and the payload of a frame.
    pub fn decode(frame: Frame<'a>) -> Result<Self, Error> {
        let envelope = Envelope::decode(frame.body)?;
        let body = Body::decode(envelope.t, envelope.p)?;
        Ok(Message { id: frame.id, flags: frame.flags, v: envelope.v, body })
    }

    /// Parses and decodes a buffer holding one whole frame.
    pub fn decode_bytes(buf: &'a [u8]) -> Result<Self, Error> {
        Message::decode(Frame::parse(buf)?)
    }

    /// The message type.
    pub fn message_type(&self) -> MessageType {
        self.body.message_type()
    }

    /// Whether the flags are exactly those the type requires.
    pub fn flags_match(&self) -> bool {
        self.flags == self.message_type().flags()
    }

    /// The size of the encoded frame, length prefix included.
    pub fn encoded_len(&self) -> usize {
        let payload_len = with_payload!(&self.body, p => p.encoded_len());
        HEADER_SIZE + Envelope::encoded_len(self.message_type(), self.v, payload_len)
    }

    /// Encodes the frame with this message's id, flags and `v`.
    pub fn encode(&self, out: &mut [u8]) -> Result<usize, EncodeError> {
        with_payload!(&self.body, p => encode_frame_as(self.id, self.flags, self.v, p, out))
    }
}

#[cfg(test)]
mod tests;
