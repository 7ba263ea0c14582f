//! Framing: `[len: u32 BE][id: u32 BE][flags: u8][body: CBOR]`.
//!
//! `len` counts the id, the flags and the body. Parsing never copies: a
//! complete frame is a view into the caller's buffer.

use core::fmt;

use crate::error::{Error, ErrorKind, Layer};

/// The largest length prefix accepted or produced: 4 MiB. A larger prefix
/// is a frame-level error; the stream can no longer be trusted.
pub const MAX_FRAME: u32 = 4 * 1024 * 1024;

/// The smallest length prefix: the id and the flags with an empty body.
pub const MIN_FRAME: u32 = 5;

/// Bytes of the length prefix.
pub const LEN_PREFIX_SIZE: usize = 4;

/// Bytes before the body: the length prefix, the id and the flags.
pub const HEADER_SIZE: usize = 9;

/// The largest complete frame in bytes, length prefix included.
pub const MAX_FRAME_BYTES: usize = MAX_FRAME as usize + LEN_PREFIX_SIZE;

/// The frame flag bits. They live outside the CBOR body so a relay can
/// route frames without decoding it.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Flags(pub u8);

impl Flags {
    /// No flag set.
    pub const NONE: Flags = Flags(0);
    /// Last frame of a correlation id (`core.error`, `core.fs.response`, `core.pong`).
    pub const TERMINAL: Flags = Flags(0x01);
    /// First frame of a session (`core.fs.request`).
    pub const SESSION_START: Flags = Flags(0x02);
    /// `core.shutdown`.
    pub const SHUTDOWN: Flags = Flags(0x04);

    /// Whether every bit of `other` is set in `self`.
    pub const fn contains(self, other: Flags) -> bool {
        self.0 & other.0 == other.0
    }

    /// The raw bit set.
    pub const fn bits(self) -> u8 {
        self.0
    }
}

impl fmt::Debug for Flags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Flags({:#04x})", self.0)
    }
}

/// A complete frame borrowed from the input: header fields and CBOR body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    /// The correlation id.
    pub id: u32,
    /// The flag bits.
    pub flags: Flags,
    /// The CBOR envelope `{v, t, p}`.
    pub body: &'a [u8],
}

/// The outcome of looking for a frame at the start of a byte stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameStatus<'a> {
    /// The buffer holds only the start of a frame; at least `needed` more
    /// bytes are required before a frame can complete.
    Incomplete {
        /// Bytes still missing (a lower bound while the prefix is partial).
        needed: usize,
    },
    /// A frame is complete; it used the first `consumed` bytes of the buffer.
    Complete {
        /// The frame.
        frame: Frame<'a>,
        /// Bytes of the buffer the frame occupies, length prefix included.
        consumed: usize,
    },
}

/// Validates a length prefix: the only frame-level check.
pub fn check_len(len: u32) -> Result<(), Error> {
    if len > MAX_FRAME {
        return Err(Error::new(Layer::Frame, ErrorKind::FrameTooLarge { len }, "len", 0));
    }
    if len < MIN_FRAME {
        return Err(Error::new(Layer::Frame, ErrorKind::FrameTooShort { len }, "len", 0));
    }
    Ok(())
}

/// Looks for one frame at the start of `buf` (a stream buffer that may hold
/// a partial frame or several frames). A bad length prefix is reported as
/// soon as its 4 bytes are present.
pub fn parse_frame(buf: &[u8]) -> Result<FrameStatus<'_>, Error> {
    let Some(prefix) = buf.first_chunk::<LEN_PREFIX_SIZE>() else {
        return Ok(FrameStatus::Incomplete { needed: HEADER_SIZE - buf.len() });
    };
    let len = u32::from_be_bytes(*prefix);
    check_len(len)?;
    let total = LEN_PREFIX_SIZE + len as usize;
    let Some(bytes) = buf.get(..total) else {
        return Ok(FrameStatus::Incomplete { needed: total - buf.len() });
    };
    debug_assert!(total >= HEADER_SIZE, "check_len lets no frame shorter than its header through");
    let id = u32::from_be_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
    let frame = Frame { id, flags: Flags(bytes[8]), body: &bytes[HEADER_SIZE..] };
    Ok(FrameStatus::Complete { frame, consumed: total })
}

impl<'a> Frame<'a> {
    /// Parses a buffer that holds one whole frame. Trailing bytes after the
    /// frame are ignored; a short buffer is [`ErrorKind::Truncated`].
    pub fn parse(buf: &'a [u8]) -> Result<Frame<'a>, Error> {
        match parse_frame(buf)? {
            FrameStatus::Complete { frame, .. } => Ok(frame),
            FrameStatus::Incomplete { needed } => {
                Err(Error::new(Layer::Frame, ErrorKind::Truncated { needed }, "frame", buf.len()))
            }
        }
    }

    /// The frame's length prefix.
    pub fn len_prefix(&self) -> u32 {
        (self.body.len() + HEADER_SIZE - LEN_PREFIX_SIZE) as u32
    }

    /// The frame's size in bytes, length prefix included.
    pub fn size(&self) -> usize {
        self.body.len() + HEADER_SIZE
    }
}

/// Writes a frame header for a body of `body_len` bytes into `out[..9]`.
///
/// The caller has checked that `out` holds at least [`HEADER_SIZE`] bytes
/// and that the frame fits [`MAX_FRAME`].
pub(crate) fn write_header(out: &mut [u8], id: u32, flags: Flags, body_len: usize) {
    let len = body_len + HEADER_SIZE - LEN_PREFIX_SIZE;
    assert!(len <= MAX_FRAME as usize, "a header for a frame over MAX_FRAME");
    let len = len as u32;
    out[0..4].copy_from_slice(&len.to_be_bytes());
    out[4..8].copy_from_slice(&id.to_be_bytes());
    out[8] = flags.0;
}
