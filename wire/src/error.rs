//! Typed decode and encode errors: which layer failed, why, and at which field.

use core::fmt;

/// The protocol layer at which a frame was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Layer {
    /// The 9-byte frame header (length prefix, id, flags).
    Frame,
    /// The CBOR envelope `{v, t, p}`.
    Envelope,
    /// The typed payload carried in `p`.
    Payload,
}

impl Layer {
    /// The layer's name as used in the vector files (`frame`, `envelope`, `payload`).
    pub const fn as_str(self) -> &'static str {
        match self {
            Layer::Frame => "frame",
            Layer::Envelope => "envelope",
            Layer::Payload => "payload",
        }
    }
}

/// A lenient input form that the reference decoder accepts and this codec
/// deliberately rejects, because accepting it would need a copy into an
/// allocation (see the crate documentation for the full list).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Deviation {
    /// An indefinite-length text string of two or more chunks where a
    /// contiguous `&str` is needed.
    ChunkedText,
    /// An indefinite-length byte string of two or more chunks where a
    /// contiguous `&[u8]` is needed.
    ChunkedBytes,
    /// A byte string sent as an array of small integers.
    BytesAsArray,
}

/// Why decoding failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The length prefix exceeds [`MAX_FRAME`](crate::MAX_FRAME).
    FrameTooLarge {
        /// The length prefix that was read.
        len: u32,
    },
    /// The length prefix is below the 5 bytes of id and flags.
    FrameTooShort {
        /// The length prefix that was read.
        len: u32,
    },
    /// The buffer ends before the frame does.
    Truncated {
        /// How many more bytes the frame needs.
        needed: usize,
    },
    /// The input ended in the middle of a CBOR item.
    UnexpectedEnd,
    /// Not well-formed CBOR: a reserved head, a misplaced break, a chunk of
    /// the wrong type inside an indefinite-length string.
    Malformed,
    /// A CBOR item of a different type than the field takes.
    InvalidType {
        /// What the field takes.
        expected: &'static str,
    },
    /// An integer outside the range of the field's type.
    OutOfRange,
    /// A text string that is not valid UTF-8.
    InvalidUtf8,
    /// A required field is absent.
    MissingField,
    /// A field appears twice in one map.
    DuplicateField,
    /// An enum variant name that the type does not have.
    UnknownVariant,
    /// A message type `t` that this protocol does not define.
    UnknownMessageType,
    /// A map key longer than the reference decoder's 4096-byte identifier limit.
    KeyTooLong,
    /// Items nested deeper than [`MAX_NESTING`](crate::MAX_NESTING).
    NestingTooDeep,
    /// A lenient form deliberately not accepted (see [`Deviation`]).
    Unsupported(Deviation),
}

/// A decode failure: the layer, the cause, the field and the byte offset.
///
/// `offset` counts from the start of the item being decoded at that layer
/// (the frame for [`Layer::Frame`], the body for [`Layer::Envelope`], the
/// payload for [`Layer::Payload`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Error {
    /// The layer that rejected the input.
    pub layer: Layer,
    /// Why it was rejected.
    pub kind: ErrorKind,
    /// The field being decoded, e.g. `"FsOp.Write.mode"`.
    pub field: &'static str,
    /// Byte offset of the failing item within its layer.
    pub offset: usize,
}

impl Error {
    pub(crate) const fn new(layer: Layer, kind: ErrorKind, field: &'static str, offset: usize) -> Self {
        Error { layer, kind, field, offset }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ErrorKind::FrameTooLarge { len } => {
                write!(f, "frame too large: {len} bytes (max {})", crate::MAX_FRAME)
            }
            ErrorKind::FrameTooShort { len } => {
                write!(f, "frame payload too short: {len} bytes (minimum {})", crate::MIN_FRAME)
            }
            ErrorKind::Truncated { needed } => write!(f, "frame truncated: {needed} more bytes needed"),
            ErrorKind::UnexpectedEnd => f.write_str("unexpected end of input"),
            ErrorKind::Malformed => f.write_str("malformed CBOR"),
            ErrorKind::InvalidType { expected } => write!(f, "invalid type, expected {expected}"),
            ErrorKind::OutOfRange => f.write_str("integer out of range"),
            ErrorKind::InvalidUtf8 => f.write_str("invalid UTF-8"),
            ErrorKind::MissingField => f.write_str("missing field"),
            ErrorKind::DuplicateField => f.write_str("duplicate field"),
            ErrorKind::UnknownVariant => f.write_str("unknown variant"),
            ErrorKind::UnknownMessageType => f.write_str("unknown message type"),
            ErrorKind::KeyTooLong => f.write_str("map key too long"),
            ErrorKind::NestingTooDeep => f.write_str("nesting too deep"),
            ErrorKind::Unsupported(Deviation::ChunkedText) => f.write_str("unsupported: text in several chunks"),
            ErrorKind::Unsupported(Deviation::ChunkedBytes) => f.write_str("unsupported: bytes in several chunks"),
            ErrorKind::Unsupported(Deviation::BytesAsArray) => {
                f.write_str("unsupported: bytes as an array of integers")
            }
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} error at {} (offset {}): {}", self.layer.as_str(), self.field, self.offset, self.kind)
    }
}

impl core::error::Error for Error {}

/// An encode failure. Encoding never fails on a buffer of
/// [`encoded_len`](crate::Message::encoded_len) bytes or more, unless the
/// frame would exceed [`MAX_FRAME`](crate::MAX_FRAME).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EncodeError {
    /// The output buffer is smaller than the encoded frame.
    BufferTooSmall {
        /// Bytes the frame needs.
        needed: usize,
        /// Bytes the buffer has.
        available: usize,
    },
    /// The frame's length prefix would exceed [`MAX_FRAME`](crate::MAX_FRAME).
    FrameTooLarge {
        /// The length prefix the frame would have.
        len: usize,
    },
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EncodeError::BufferTooSmall { needed, available } => {
                write!(f, "buffer too small: need {needed} bytes, have {available}")
            }
            EncodeError::FrameTooLarge { len } => {
                write!(f, "frame too large: {len} bytes (max {})", crate::MAX_FRAME)
            }
        }
    }
}

impl core::error::Error for EncodeError {}
