//! The envelope: the frame body, a CBOR map `{"v": u8, "t": text, "p": bytes}`
//! whose `p` holds the payload as a complete CBOR item of its own.

use crate::cbor::{Fail, Reader, Res, TEXT, head_len, write_head};
use crate::error::{Error, ErrorKind, Layer};
use crate::message::MessageType;

/// A decoded envelope, borrowing its payload from the frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Envelope<'a> {
    /// The sender's protocol generation.
    pub v: u8,
    /// The message type.
    pub t: MessageType,
    /// The payload's CBOR bytes (decode with the type's payload decoder).
    pub p: &'a [u8],
}

const FIELDS: [&str; 3] = ["v", "t", "p"];
const V: u32 = 1 << 0;
const T: u32 = 1 << 1;
const P: u32 = 1 << 2;

impl<'a> Envelope<'a> {
    /// Decodes a frame body. Keys may come in any order, unknown keys are
    /// skipped, tags are skipped, trailing bytes after the map are ignored
    /// (all as in the reference). An unknown `t` is
    /// [`ErrorKind::UnknownMessageType`]; use [`hints`] to recover the raw
    /// `t` and `v` for an error reply.
    pub fn decode(body: &'a [u8]) -> Result<Envelope<'a>, Error> {
        if let Some(envelope) = Envelope::decode_canonical(body) {
            return Ok(envelope);
        }
        let mut r = Reader::new(body, Layer::Envelope);
        let mut v = 0u8;
        let mut t = MessageType::Ping;
        let mut p: &[u8] = &[];
        let seen = r
            .record("envelope", &FIELDS, |r, i| {
                match i {
                    0 => v = r.u8("envelope.v")?,
                    1 => t = message_type(r)?,
                    _ => p = r.bytes("envelope.p")?,
                }
                Ok(())
            })
            .map_err(|Fail| r.take_error())?;
        for (bit, field) in [(V, "envelope.v"), (T, "envelope.t"), (P, "envelope.p")] {
            if seen & bit == 0 {
                return Err(Error::new(Layer::Envelope, ErrorKind::MissingField, field, r.position()));
            }
        }
        Ok(Envelope { v, t, p })
    }

    /// The fast path for the canonical layout every conforming encoder
    /// writes (`a3 "v" uint "t" text "p" bytes`). Returns `None` for
    /// anything else, which the general decoder then handles; whatever it
    /// accepts, the general decoder accepts with the same result.
    #[inline]
    fn decode_canonical(body: &'a [u8]) -> Option<Envelope<'a>> {
        let rest = body.strip_prefix(&[0xa3, 0x61, b'v'])?;
        let (v, rest) = match rest {
            [b @ 0..=0x17, rest @ ..] => (*b, rest),
            [0x18, b, rest @ ..] => (*b, rest),
            _ => return None,
        };
        let rest = rest.strip_prefix(&[0x61, b't'])?;
        let (name_len, rest) = match rest {
            [b @ 0x60..=0x77, rest @ ..] => (usize::from(b - 0x60), rest),
            [0x78, n, rest @ ..] => (usize::from(*n), rest),
            _ => return None,
        };
        let t = MessageType::from_wire(rest.get(..name_len)?)?;
        let rest = rest[name_len..].strip_prefix(&[0x61, b'p'])?;
        let (&head, rest) = rest.split_first()?;
        let (p_len, rest) = match head {
            0x40..=0x57 => (usize::from(head - 0x40), rest),
            0x58 => (usize::from(*rest.first()?), rest.get(1..)?),
            0x59 => (usize::from(u16::from_be_bytes(*rest.first_chunk()?)), rest.get(2..)?),
            0x5a => (u32::from_be_bytes(*rest.first_chunk()?) as usize, rest.get(4..)?),
            _ => return None,
        };
        Some(Envelope { v, t, p: rest.get(..p_len)? })
    }

    /// The exact encoded size of an envelope around a payload of `payload_len` bytes.
    pub const fn encoded_len(t: MessageType, v: u8, payload_len: usize) -> usize {
        // a3 | 61 'v' <u8> | 61 't' <text> | 61 'p' <bytes head> <payload>
        let name = t.as_str().len();
        1 + 2 + head_len(v as u64) + 2 + head_len(name as u64) + name + 2 + head_len(payload_len as u64) + payload_len
    }

    /// Writes the envelope head (everything before the payload bytes) into
    /// `out` and returns its length. `out` must hold
    /// `encoded_len(t, v, payload_len) - payload_len` bytes.
    pub(crate) fn write_head(out: &mut [u8], t: MessageType, v: u8, payload_len: usize) -> usize {
        let name = t.as_str().as_bytes();
        out[..3].copy_from_slice(&[0xa3, 0x61, b'v']);
        let mut n = 3 + write_head(&mut out[3..], 0, u64::from(v));
        out[n..n + 2].copy_from_slice(&[0x61, b't']);
        n += 2;
        n += write_head(&mut out[n..], 3, name.len() as u64);
        out[n..n + name.len()].copy_from_slice(name);
        n += name.len();
        out[n..n + 2].copy_from_slice(&[0x61, b'p']);
        n += 2;
        n + write_head(&mut out[n..], 2, payload_len as u64)
    }
}

/// Reads `t`: text (definite or in chunks), matched against the known
/// names without copying. A name that matches none is reported as invalid
/// UTF-8 if it is not UTF-8 (as the reference reports it), else unknown.
fn message_type(r: &mut Reader<'_>) -> Res<MessageType> {
    const FIELD: &str = "envelope.t";
    let at = r.position();
    let head = r.skip_tags(FIELD)?;
    if head.major == TEXT && head.indefinite() {
        // Concatenate the chunks into a buffer as long as the longest name;
        // anything longer cannot be a known type.
        let mut name = [0u8; MessageType::MAX_NAME_LEN];
        let mut len = 0usize;
        let mut fits = true;
        r.text_chunks(FIELD, |chunk| match name.get_mut(len..len + chunk.len()) {
            Some(dst) if fits => {
                dst.copy_from_slice(chunk.as_bytes());
                len += chunk.len();
            }
            _ => fits = false,
        })?;
        let known = if fits { MessageType::from_wire(&name[..len]) } else { None };
        return known.ok_or_else(|| r.error_at(ErrorKind::UnknownMessageType, FIELD, at));
    }
    let name = r.raw_str(FIELD)?;
    MessageType::from_wire(name).ok_or_else(|| {
        let kind = match core::str::from_utf8(name) {
            Ok(_) => ErrorKind::UnknownMessageType,
            Err(_) => ErrorKind::InvalidUtf8,
        };
        r.error_at(kind, FIELD, at)
    })
}

/// What could be read of an envelope that failed to decode: used to
/// answer with a `core.error` that names the offending type, and to
/// respect the sender's generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Hints<'a> {
    /// The sender's `v`, if it could be read.
    pub v: Option<u8>,
    /// The raw `t` text, if it is a definite UTF-8 string.
    pub t: Option<&'a str>,
}

/// Best-effort scan of a frame body for `v` and `t`, for error replies.
/// Never fails: fields that cannot be read are `None`.
pub fn hints(body: &[u8]) -> Hints<'_> {
    let mut out = Hints::default();
    let mut r = Reader::new(body, Layer::Envelope);
    // Stop quietly at the first malformed item; keep what was read before it.
    let _ = r.record("envelope", &FIELDS, |r, i| {
        match i {
            0 => out.v = Some(r.u8("envelope.v")?),
            1 => out.t = Some(r.str("envelope.t")?),
            _ => r.skip("envelope.p")?,
        }
        Ok(())
    });
    out
}
