//! CBOR reading with the reference decoder's (serde + ciborium) tolerance,
//! and CBOR writing with the reference encoder's canonical output.
//!
//! Writing goes through minicbor's `Encoder` (and a counting sink for exact
//! lengths). Reading is a purpose-built head parser: it must mirror
//! ciborium's serde rules item by item (tags skipped in front of values,
//! integers of any head width or as bignums, structs as indefinite maps,
//! unknown keys skipped with `deserialize_any`'s checks, enums as a one-entry
//! map or bare text), and it is on the hot path of every frame: decoding a
//! `Stat` request through minicbor's `Decoder` measured ~100 ns, this
//! reader ~25 ns. The only forms it rejects where ciborium accepts are the
//! [`Deviation`]s.

use core::cell::Cell;

use minicbor::encode::Write;

use crate::error::{Deviation, Error, ErrorKind, Layer};

/// The deepest nesting of maps and arrays accepted in a skipped value (an
/// unknown field's), the reference decoder's recursion limit. The known
/// structure of every payload is far shallower and fixed.
pub const MAX_NESTING: usize = 256;

/// The longest map key accepted, the reference decoder's identifier
/// scratch buffer (longer keys are rejected there too).
pub(crate) const MAX_KEY_LEN: usize = 4096;

/// CBOR major types (RFC 8949 §3.1).
pub(crate) const UINT: u8 = 0;
pub(crate) const NINT: u8 = 1;
pub(crate) const BYTES: u8 = 2;
pub(crate) const TEXT: u8 = 3;
pub(crate) const ARRAY: u8 = 4;
pub(crate) const MAP: u8 = 5;
pub(crate) const TAG: u8 = 6;
pub(crate) const SIMPLE: u8 = 7;

/// Additional information 31: indefinite length, or break for major 7.
const INDEFINITE: u8 = 31;

/// Major-7 values the reference understands.
const FALSE: u8 = 20;
const TRUE: u8 = 21;
const NULL: u8 = 22;
const UNDEFINED: u8 = 23;

/// CBOR bignum tags (RFC 8949 §3.4.3).
const TAG_BIGNUM_POS: u64 = 2;
const TAG_BIGNUM_NEG: u64 = 3;

/// `str::from_utf8` with a fast path for ASCII, the common case for paths
/// and names (measured: ~100 instructions saved on a 10-byte path).
#[cfg_attr(not(feature = "compact"), inline(always))]
#[cfg_attr(feature = "compact", inline)]
#[allow(unsafe_code)]
pub(crate) fn utf8(bytes: &[u8]) -> Option<&str> {
    if bytes.is_ascii() {
        // SAFETY: every ASCII byte sequence is valid UTF-8.
        return Some(unsafe { core::str::from_utf8_unchecked(bytes) });
    }
    core::str::from_utf8(bytes).ok()
}

/// Byte-slice equality for short keys without a call into `memcmp`: two
/// overlapping word loads cover any length up to 16.
#[cfg_attr(not(feature = "compact"), inline(always))]
#[cfg_attr(feature = "compact", inline)]
fn bytes_eq(a: &[u8], b: &[u8]) -> bool {
    let n = a.len();
    if n != b.len() {
        return false;
    }
    let word = |s: &[u8], at: usize| s.get(at..at + 8).and_then(|w| w.first_chunk().copied()).map(u64::from_ne_bytes);
    let half = |s: &[u8], at: usize| s.get(at..at + 4).and_then(|w| w.first_chunk().copied()).map(u32::from_ne_bytes);
    match n {
        0..=3 => a == b,
        4..=7 => half(a, 0) == half(b, 0) && half(a, n - 4) == half(b, n - 4),
        8..=16 => word(a, 0) == word(b, 0) && word(a, n - 8) == word(b, n - 8),
        _ => a == b,
    }
}

/// One parsed CBOR head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Head {
    /// Major type, 0..=7.
    pub(crate) major: u8,
    /// Additional information, 0..=27 or 31.
    pub(crate) info: u8,
    /// The argument: a value, a length, a tag number or float bits.
    pub(crate) arg: u64,
    /// Bytes the head occupies.
    pub(crate) len: usize,
}

impl Head {
    /// Indefinite length (majors 2..=5) or break (major 7).
    pub(crate) const fn indefinite(&self) -> bool {
        self.info == INDEFINITE
    }

    /// Entries of a map or array: a count, or `None` until a break.
    const fn items(&self) -> Remaining {
        if self.indefinite() { None } else { Some(self.arg) }
    }
}

/// A decoding failure whose details ([`Error`]) wait in the reader's
/// error slot: keeping the `Err` side empty keeps every `Result` on the hot
/// path small enough for registers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Fail;

/// The result of a reader step.
pub(crate) type Res<T> = Result<T, Fail>;

/// A decoding cursor over one layer's bytes.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    layer: Layer,
    failure: Cell<Option<Error>>,
}

/// The remaining entries of a map or array: a count, or `None` until a break.
pub(crate) type Remaining = Option<u64>;

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8], layer: Layer) -> Self {
        Reader { buf, pos: 0, layer, failure: Cell::new(None) }
    }

    /// A reader at `pos` within `buf` (used to re-read list entries lazily).
    pub(crate) fn at(buf: &'a [u8], pos: usize, layer: Layer) -> Self {
        Reader { buf, pos, layer, failure: Cell::new(None) }
    }

    pub(crate) fn position(&self) -> usize {
        self.pos
    }

    pub(crate) fn input(&self) -> &'a [u8] {
        self.buf
    }

    /// Records a failure at the cursor.
    #[cold]
    #[inline(never)]
    pub(crate) fn error(&self, kind: ErrorKind, field: &'static str) -> Fail {
        self.error_at(kind, field, self.pos)
    }

    /// Records a failure at `at`. The first failure recorded is the one
    /// reported.
    #[cold]
    #[inline(never)]
    pub(crate) fn error_at(&self, kind: ErrorKind, field: &'static str, at: usize) -> Fail {
        if self.failure.get().is_none() {
            self.failure.set(Some(Error::new(self.layer, kind, field, at)));
        }
        Fail
    }

    /// The failure recorded by the step that returned [`Fail`].
    #[cold]
    pub(crate) fn take_error(&self) -> Error {
        let fallback = Error::new(self.layer, ErrorKind::Malformed, "?", self.pos);
        self.failure.take().unwrap_or(fallback)
    }

    /// Parses the head at the cursor without consuming it.
    #[cfg_attr(not(feature = "compact"), inline(always))]
    #[cfg_attr(feature = "compact", inline)]
    pub(crate) fn peek(&self, field: &'static str) -> Res<Head> {
        let Some(&b) = self.buf.get(self.pos) else {
            return Err(self.error(ErrorKind::UnexpectedEnd, field));
        };
        let (major, info) = (b >> 5, b & 0x1f);
        if info < 24 {
            return Ok(Head { major, info, arg: u64::from(info), len: 1 });
        }
        let rest = self.buf.get(self.pos + 1..).unwrap_or(&[]);
        let (arg, width) = match info {
            24 => rest.first().map(|&b| (u64::from(b), 1)),
            25 => rest.first_chunk().map(|b| (u64::from(u16::from_be_bytes(*b)), 2)),
            26 => rest.first_chunk().map(|b| (u64::from(u32::from_be_bytes(*b)), 4)),
            27 => rest.first_chunk().map(|b| (u64::from_be_bytes(*b), 8)),
            INDEFINITE if matches!(major, BYTES | TEXT | ARRAY | MAP | SIMPLE) => {
                return Ok(Head { major, info, arg: 0, len: 1 });
            }
            _ => return Err(self.error(ErrorKind::Malformed, field)),
        }
        .ok_or_else(|| self.error(ErrorKind::UnexpectedEnd, field))?;
        Ok(Head { major, info, arg, len: 1 + width })
    }

    /// Parses and consumes the head at the cursor.
    #[cfg_attr(not(feature = "compact"), inline(always))]
    #[cfg_attr(feature = "compact", inline)]
    fn head(&mut self, field: &'static str) -> Res<Head> {
        let h = self.peek(field)?;
        self.pos += h.len;
        Ok(h)
    }

    /// Consumes `len` content bytes.
    #[cfg_attr(not(feature = "compact"), inline(always))]
    #[cfg_attr(feature = "compact", inline)]
    fn take(&mut self, len: u64, field: &'static str) -> Res<&'a [u8]> {
        let end = usize::try_from(len).ok().and_then(|n| self.pos.checked_add(n));
        match end.and_then(|end| self.buf.get(self.pos..end)) {
            Some(bytes) => {
                self.pos += bytes.len();
                Ok(bytes)
            }
            None => Err(self.error(ErrorKind::UnexpectedEnd, field)),
        }
    }

    /// Consumes any tags in front of the next item and returns its head
    /// (not consumed).
    #[cfg_attr(not(feature = "compact"), inline(always))]
    #[cfg_attr(feature = "compact", inline)]
    pub(crate) fn skip_tags(&mut self, field: &'static str) -> Res<Head> {
        loop {
            let h = self.peek(field)?;
            if h.major != TAG {
                return Ok(h);
            }
            self.pos += h.len;
        }
    }

    /// Starts a struct: a map of either length form, after any tags.
    #[cfg_attr(not(feature = "compact"), inline(always))]
    #[cfg_attr(feature = "compact", inline)]
    fn map_start(&mut self, field: &'static str) -> Res<Remaining> {
        let h = self.skip_tags(field)?;
        if h.major != MAP {
            return Err(self.error(ErrorKind::InvalidType { expected: "map" }, field));
        }
        self.pos += h.len;
        Ok(h.items())
    }

    /// Starts a sequence: an array of either length form, after any tags.
    pub(crate) fn array_start(&mut self, field: &'static str) -> Res<Remaining> {
        let h = self.skip_tags(field)?;
        if h.major != ARRAY {
            return Err(self.error(ErrorKind::InvalidType { expected: "array" }, field));
        }
        self.pos += h.len;
        Ok(h.items())
    }

    /// Whether another entry follows; consumes the break of an indefinite item.
    #[cfg_attr(not(feature = "compact"), inline(always))]
    #[cfg_attr(feature = "compact", inline)]
    pub(crate) fn has_next(&mut self, remaining: &mut Remaining, field: &'static str) -> Res<bool> {
        match remaining {
            Some(0) => Ok(false),
            Some(n) => {
                *n -= 1;
                Ok(true)
            }
            None => match self.buf.get(self.pos) {
                Some(0xff) => {
                    self.pos += 1;
                    Ok(false)
                }
                Some(_) => Ok(true),
                None => Err(self.error(ErrorKind::UnexpectedEnd, field)),
            },
        }
    }

    /// A map key or enum variant name: definite text or bytes, after tags.
    /// Text is returned unvalidated with `true`: a key equal to an ASCII
    /// field name is valid UTF-8; the caller validates any other.
    #[cfg_attr(not(feature = "compact"), inline(always))]
    #[cfg_attr(feature = "compact", inline)]
    fn raw_identifier(&mut self, field: &'static str) -> Res<(&'a [u8], bool)> {
        if let Some(key) = self.short_text() {
            return Ok((key, true));
        }
        let h = self.skip_tags(field)?;
        if !matches!(h.major, TEXT | BYTES) || h.indefinite() {
            return Err(self.error(ErrorKind::InvalidType { expected: "str or bytes" }, field));
        }
        let at = self.pos;
        self.pos += h.len;
        let key = self.take(h.arg, field)?;
        if key.len() > MAX_KEY_LEN {
            return Err(self.error_at(ErrorKind::KeyTooLong, field, at));
        }
        Ok((key, h.major == TEXT))
    }

    /// Fast path: consumes a definite text string shorter than 24 bytes (a
    /// one-byte head), the form of nearly every key and name.
    #[cfg_attr(not(feature = "compact"), inline(always))]
    #[cfg_attr(feature = "compact", inline)]
    fn short_text(&mut self) -> Option<&'a [u8]> {
        let b = *self.buf.get(self.pos)?;
        if !(0x60..=0x77).contains(&b) {
            return None;
        }
        let start = self.pos + 1;
        let text = self.buf.get(start..start + usize::from(b - 0x60))?;
        self.pos = start + text.len();
        Some(text)
    }

    /// Consumes one definite string's content of major type `major` (a chunk).
    fn chunk(&mut self, major: u8, field: &'static str) -> Res<&'a [u8]> {
        let h = self.head(field)?;
        if h.major != major || h.indefinite() {
            return Err(self.error(ErrorKind::Malformed, field));
        }
        self.take(h.arg, field)
    }

    /// Visits the chunks of an indefinite-length string of major type `major`
    /// whose head was just consumed, up to and including the break.
    fn chunks(
        &mut self,
        major: u8,
        field: &'static str,
        mut f: impl FnMut(&'a [u8]) -> Result<(), ErrorKind>,
    ) -> Res<()> {
        let at = self.pos;
        loop {
            match self.buf.get(self.pos) {
                Some(0xff) => {
                    self.pos += 1;
                    return Ok(());
                }
                Some(_) => {
                    let chunk = self.chunk(major, field)?;
                    f(chunk).map_err(|kind| self.error_at(kind, field, at))?;
                }
                None => return Err(self.error(ErrorKind::UnexpectedEnd, field)),
            }
        }
    }

    #[cfg_attr(not(feature = "compact"), inline(always))]
    #[cfg_attr(feature = "compact", inline)]
    fn utf8(&self, bytes: &'a [u8], field: &'static str, at: usize) -> Res<&'a str> {
        utf8(bytes).ok_or_else(|| self.error_at(ErrorKind::InvalidUtf8, field, at))
    }

    /// Visits the chunks of an indefinite-length text string at the cursor
    /// (its head not yet consumed).
    pub(crate) fn text_chunks(&mut self, field: &'static str, mut f: impl FnMut(&'a str)) -> Res<()> {
        let h = self.head(field)?;
        debug_assert!(h.major == TEXT && h.indefinite());
        self.chunks(TEXT, field, |chunk| {
            f(core::str::from_utf8(chunk).map_err(|_| ErrorKind::InvalidUtf8)?);
            Ok(())
        })
    }

    /// A text field (`String` in the reference) borrowed from the input.
    #[cfg_attr(not(feature = "compact"), inline(always))]
    #[cfg_attr(feature = "compact", inline)]
    pub(crate) fn str(&mut self, field: &'static str) -> Res<&'a str> {
        let at = self.pos;
        let bytes = self.raw_str(field)?;
        self.utf8(bytes, field, at)
    }

    /// The bytes of a text item, not yet checked for UTF-8: a definite
    /// string, or an indefinite one of at most one chunk.
    #[cfg_attr(not(feature = "compact"), inline(always))]
    #[cfg_attr(feature = "compact", inline)]
    pub(crate) fn raw_str(&mut self, field: &'static str) -> Res<&'a [u8]> {
        if let Some(text) = self.short_text() {
            return Ok(text);
        }
        let h = self.skip_tags(field)?;
        let at = self.pos;
        if h.major != TEXT {
            return Err(self.error(ErrorKind::InvalidType { expected: "string" }, field));
        }
        self.pos += h.len;
        if !h.indefinite() {
            return self.take(h.arg, field);
        }
        let (mut first, mut count): (&'a [u8], usize) = (&[], 0);
        self.chunks(TEXT, field, |chunk| {
            first = chunk;
            count += 1;
            Ok(())
        })?;
        if count > 1 {
            return Err(self.error_at(ErrorKind::Unsupported(Deviation::ChunkedText), field, at));
        }
        Ok(first)
    }

    /// A byte-string field (`serde_bytes` in the reference) borrowed from the input.
    #[inline]
    pub(crate) fn bytes(&mut self, field: &'static str) -> Res<&'a [u8]> {
        let h = self.skip_tags(field)?;
        let at = self.pos;
        match h.major {
            BYTES if !h.indefinite() => {
                self.pos += h.len;
                self.take(h.arg, field)
            }
            BYTES => {
                self.pos += h.len;
                let (mut first, mut count): (&'a [u8], usize) = (&[], 0);
                self.chunks(BYTES, field, |chunk| {
                    first = chunk;
                    count += 1;
                    Ok(())
                })?;
                if count > 1 {
                    return Err(self.error_at(ErrorKind::Unsupported(Deviation::ChunkedBytes), field, at));
                }
                Ok(first)
            }
            ARRAY => {
                // The reference accepts a sequence of u8; validate it as the
                // reference would, then decline it (it would need a copy).
                let mut remaining = self.array_start(field)?;
                while self.has_next(&mut remaining, field)? {
                    self.u8(field)?;
                }
                Err(self.error_at(ErrorKind::Unsupported(Deviation::BytesAsArray), field, at))
            }
            _ => Err(self.error(ErrorKind::InvalidType { expected: "bytes" }, field)),
        }
    }

    /// An integer of any head width or bignum: `(negative, magnitude)` where a
    /// negative value is `-1 - magnitude`.
    #[cfg_attr(not(feature = "compact"), inline(always))]
    #[cfg_attr(feature = "compact", inline)]
    fn integer(&mut self, field: &'static str) -> Res<(bool, u128)> {
        if let Some(&b) = self.buf.get(self.pos)
            && b < 0x18
        {
            self.pos += 1;
            return Ok((false, u128::from(b)));
        }
        loop {
            let h = self.peek(field)?;
            match h.major {
                UINT | NINT => {
                    self.pos += h.len;
                    return Ok((h.major == NINT, u128::from(h.arg)));
                }
                TAG => {
                    self.pos += h.len;
                    if h.arg == TAG_BIGNUM_POS || h.arg == TAG_BIGNUM_NEG {
                        return Ok((h.arg == TAG_BIGNUM_NEG, self.bignum(field)?));
                    }
                }
                _ => return Err(self.error(ErrorKind::InvalidType { expected: "integer" }, field)),
            }
        }
    }

    /// The byte string of a bignum: big-endian, leading zeros ignored, at
    /// most 16 significant bytes (the reference's `u128`).
    fn bignum(&mut self, field: &'static str) -> Res<u128> {
        let at = self.pos;
        let h = self.head(field)?;
        if h.major != BYTES {
            return Err(self.error_at(ErrorKind::InvalidType { expected: "bytes" }, field, at));
        }
        let mut value: u128 = 0;
        let mut significant = 0usize;
        let mut push = |chunk: &[u8]| {
            for &b in chunk {
                if significant == 0 && b == 0 {
                    continue;
                }
                if significant == 16 {
                    return Err(ErrorKind::OutOfRange);
                }
                value = (value << 8) | u128::from(b);
                significant += 1;
            }
            Ok(())
        };
        if h.indefinite() {
            self.chunks(BYTES, field, push)?;
        } else {
            let bytes = self.take(h.arg, field)?;
            push(bytes).map_err(|kind| self.error_at(kind, field, at))?;
        }
        Ok(value)
    }

    #[cfg_attr(not(feature = "compact"), inline(always))]
    #[cfg_attr(feature = "compact", inline)]
    fn unsigned(&mut self, field: &'static str, max: u128) -> Res<u128> {
        let at = self.pos;
        match self.integer(field)? {
            (false, v) if v <= max => Ok(v),
            _ => Err(self.error_at(ErrorKind::OutOfRange, field, at)),
        }
    }

    #[inline]
    pub(crate) fn u8(&mut self, field: &'static str) -> Res<u8> {
        self.unsigned(field, u8::MAX.into()).map(|v| v as u8)
    }

    #[inline]
    pub(crate) fn u32(&mut self, field: &'static str) -> Res<u32> {
        self.unsigned(field, u32::MAX.into()).map(|v| v as u32)
    }

    #[inline]
    pub(crate) fn u64(&mut self, field: &'static str) -> Res<u64> {
        self.unsigned(field, u64::MAX.into()).map(|v| v as u64)
    }

    #[inline]
    pub(crate) fn i64(&mut self, field: &'static str) -> Res<i64> {
        let at = self.pos;
        match self.integer(field)? {
            (false, v) if v <= i64::MAX as u128 => Ok(v as i64),
            (true, v) if v <= i64::MAX as u128 => Ok(!(v as i64)),
            _ => Err(self.error_at(ErrorKind::OutOfRange, field, at)),
        }
    }

    pub(crate) fn bool(&mut self, field: &'static str) -> Res<bool> {
        let h = self.skip_tags(field)?;
        match (h.major, h.info) {
            (SIMPLE, FALSE) | (SIMPLE, TRUE) => {
                self.pos += 1;
                Ok(h.info == TRUE)
            }
            _ => Err(self.error(ErrorKind::InvalidType { expected: "bool" }, field)),
        }
    }

    /// For an `Option` field: consumes a `null` or `undefined` and returns
    /// true. Tags are not skipped first (as in the reference).
    #[inline]
    pub(crate) fn none(&mut self, field: &'static str) -> Res<bool> {
        match self.buf.get(self.pos) {
            Some(0xf6 | 0xf7) => {
                self.pos += 1;
                Ok(true)
            }
            Some(_) => Ok(false),
            None => Err(self.error(ErrorKind::UnexpectedEnd, field)),
        }
    }

    /// The unit value `()`: `null` or `undefined`, after tags.
    pub(crate) fn unit(&mut self, field: &'static str) -> Res<()> {
        let h = self.skip_tags(field)?;
        match (h.major, h.info) {
            (SIMPLE, NULL) | (SIMPLE, UNDEFINED) => {
                self.pos += 1;
                Ok(())
            }
            _ => Err(self.error(ErrorKind::InvalidType { expected: "unit" }, field)),
        }
    }

    /// The variant name of an externally tagged enum: a definite one-entry
    /// map `{name: body}` or bare text `name`. In both forms the body (if
    /// the variant has one) is the next item, exactly as in the reference.
    ///
    /// The name is returned unvalidated: callers match it against ASCII
    /// names and report an unknown one with [`Reader::unknown_variant`].
    #[cfg_attr(not(feature = "compact"), inline(always))]
    #[cfg_attr(feature = "compact", inline)]
    pub(crate) fn variant(&mut self, field: &'static str) -> Res<&'a [u8]> {
        let h = self.skip_tags(field)?;
        match h.major {
            MAP if h.items() == Some(1) => self.pos += h.len,
            TEXT => {}
            _ => return Err(self.error(ErrorKind::InvalidType { expected: "enum" }, field)),
        }
        self.raw_identifier(field).map(|(name, _)| name)
    }

    /// The error for a variant name that matched none: invalid UTF-8 if it
    /// is not UTF-8 (as the reference reports it), else unknown.
    #[cold]
    pub(crate) fn unknown_variant(&self, name: &[u8], field: &'static str, at: usize) -> Fail {
        let kind = match core::str::from_utf8(name) {
            Ok(_) => ErrorKind::UnknownVariant,
            Err(_) => ErrorKind::InvalidUtf8,
        };
        self.error_at(kind, field, at)
    }

    /// Reads a struct: a map whose known keys (`fields`) are passed to `f`
    /// by index, unknown keys skipped, duplicates rejected. Returns the
    /// bit set of the fields seen.
    #[inline]
    pub(crate) fn record(
        &mut self,
        field: &'static str,
        fields: &[&'static str],
        f: impl FnMut(&mut Self, usize) -> Res<()>,
    ) -> Res<u32> {
        let remaining = self.map_start(field)?;
        self.record_entries(field, fields, remaining, f)
    }

    /// Whether the next item is an array whose first element is text (the
    /// seed-era array form of a `Read`/`Write` body). Never fails: anything
    /// else, or a malformed item, answers false and is reported by the read
    /// that follows.
    pub(crate) fn array_body_starts_with_text(&self) -> bool {
        // A scratch reader, so a failure here is never the one reported.
        let mut probe = Reader { buf: self.buf, pos: self.pos, layer: self.layer, failure: Cell::new(None) };
        match probe.peek("") {
            Ok(h) if h.major == ARRAY && h.items() != Some(0) => {
                probe.pos += h.len;
                matches!(probe.peek(""), Ok(first) if first.major == TEXT)
            }
            _ => false,
        }
    }

    /// Consumes `bytes` if the input continues with them (a canonical map
    /// head and key, for a fast path); `false`, consuming nothing, if not.
    #[inline]
    pub(crate) fn skip_prefix(&mut self, bytes: &[u8]) -> bool {
        let found = self.buf.get(self.pos..).is_some_and(|rest| rest.starts_with(bytes));
        if found {
            self.pos += bytes.len();
        }
        found
    }

    /// The text of a struct-variant body that is exactly `{"path": text}`
    /// with a definite-length, valid UTF-8 text of under 64 KiB (what
    /// canonical encoders write for most filesystem requests), consumed;
    /// `None`, with nothing consumed, for anything else. What it accepts,
    /// [`Reader::variant_record`] accepts with the same result.
    #[inline]
    pub(crate) fn path_only_body(&mut self) -> Option<&'a str> {
        const PREFIX: &[u8] = b"\xa1\x64path";
        let rest = self.buf.get(self.pos..)?.strip_prefix(PREFIX)?;
        let (len, head) = match *rest.first()? {
            b @ 0x60..=0x77 => (usize::from(b - 0x60), 1),
            0x78 => (usize::from(*rest.get(1)?), 2),
            0x79 => (usize::from(u16::from_be_bytes([*rest.get(1)?, *rest.get(2)?])), 3),
            _ => return None,
        };
        let text = utf8(rest.get(head..head + len)?)?;
        self.pos += PREFIX.len() + head + len;
        Some(text)
    }

    /// Reads the body of a struct variant, which the reference decodes as
    /// "any": a map (like a struct) or an array of the fields in order.
    /// Tags are not skipped here (the reference rejects them).
    #[inline]
    pub(crate) fn variant_record(
        &mut self,
        field: &'static str,
        fields: &[&'static str],
        mut f: impl FnMut(&mut Self, usize) -> Res<()>,
    ) -> Res<u32> {
        let h = self.peek(field)?;
        if !matches!(h.major, MAP | ARRAY) {
            return Err(self.error(ErrorKind::InvalidType { expected: "struct variant" }, field));
        }
        self.pos += h.len;
        let seen = if h.major == MAP {
            self.record_entries(field, fields, h.items(), f)?
        } else {
            // serde's `visit_seq` asks for exactly one element per field and
            // leaves any surplus unread, as here.
            let mut remaining = h.items();
            let mut seen = 0u32;
            for i in 0..fields.len() {
                if !self.has_next(&mut remaining, field)? {
                    break;
                }
                f(self, i)?;
                seen |= 1 << i;
            }
            seen
        };
        Ok(seen)
    }

    #[cfg(not(feature = "compact"))]
    #[inline]
    fn record_entries(
        &mut self,
        field: &'static str,
        fields: &[&'static str],
        remaining: Remaining,
        mut f: impl FnMut(&mut Self, usize) -> Res<()>,
    ) -> Res<u32> {
        self.record_entries_with(field, fields, remaining, &mut f)
    }

    /// With `compact`, one copy of the entry loop serves every struct (the
    /// field callback is called through a pointer).
    #[cfg(feature = "compact")]
    fn record_entries(
        &mut self,
        field: &'static str,
        fields: &[&'static str],
        remaining: Remaining,
        mut f: impl FnMut(&mut Self, usize) -> Res<()>,
    ) -> Res<u32> {
        self.record_entries_dyn(field, fields, remaining, &mut f)
    }

    #[cfg(feature = "compact")]
    #[inline(never)]
    fn record_entries_dyn(
        &mut self,
        field: &'static str,
        fields: &[&'static str],
        remaining: Remaining,
        f: &mut dyn FnMut(&mut Self, usize) -> Res<()>,
    ) -> Res<u32> {
        self.record_entries_with(field, fields, remaining, f)
    }

    #[inline(always)]
    fn record_entries_with<G: FnMut(&mut Self, usize) -> Res<()> + ?Sized>(
        &mut self,
        field: &'static str,
        fields: &[&'static str],
        mut remaining: Remaining,
        f: &mut G,
    ) -> Res<u32> {
        let mut seen = 0u32;
        // Canonical encoders write fields in declaration order: try the
        // field after the last one matched before searching them all.
        let mut expected = 0usize;
        while self.has_next(&mut remaining, field)? {
            let at = self.pos;
            let (key, text) = self.raw_identifier(field)?;
            let index = match fields.get(expected) {
                Some(name) if bytes_eq(name.as_bytes(), key) => Some(expected),
                _ => fields.iter().position(|name| bytes_eq(name.as_bytes(), key)),
            };
            if let Some(i) = index {
                expected = i + 1;
            }
            match index {
                Some(i) if seen & (1 << i) != 0 => {
                    return Err(self.error_at(ErrorKind::DuplicateField, fields[i], at));
                }
                Some(i) => {
                    seen |= 1 << i;
                    f(self, i)?;
                }
                None => {
                    if text && core::str::from_utf8(key).is_err() {
                        return Err(self.error_at(ErrorKind::InvalidUtf8, field, at));
                    }
                    self.skip(field)?;
                }
            }
        }
        Ok(seen)
    }

    /// Skips one well-formed item the way the reference ignores an unknown
    /// field's value (its `deserialize_any`): text must be UTF-8, only the
    /// simple values false/true/null/undefined are allowed, nesting is
    /// bounded by [`MAX_NESTING`]. Iterative: open containers live in a
    /// fixed array, not on the call stack.
    #[inline(never)]
    pub(crate) fn skip(&mut self, field: &'static str) -> Res<()> {
        // Open containers: items left (`Some`) or items until a break (`None`).
        let mut open: [Remaining; MAX_NESTING] = [None; MAX_NESTING];
        let mut depth = 0usize;
        loop {
            if let Some(items) = self.skip_item(field)? {
                if depth >= MAX_NESTING {
                    return Err(self.error(ErrorKind::NestingTooDeep, field));
                }
                open[depth] = items;
                depth += 1;
            }
            // Close every complete container; stop at the next item to read.
            loop {
                if depth == 0 {
                    return Ok(());
                }
                if self.has_next(&mut open[depth - 1], field)? {
                    break;
                }
                depth -= 1;
            }
        }
    }

    /// Consumes one scalar item, or the head of a container and returns how
    /// many items it holds (`Some(None)` for indefinite length).
    fn skip_item(&mut self, field: &'static str) -> Res<Option<Remaining>> {
        let h = self.skip_tags(field)?;
        let at = self.pos;
        self.pos += h.len;
        match h.major {
            UINT | NINT => Ok(None),
            BYTES if h.indefinite() => self.chunks(BYTES, field, |_| Ok(())).map(|()| None),
            BYTES => self.take(h.arg, field).map(|_| None),
            TEXT if h.indefinite() => self
                .chunks(TEXT, field, |chunk| match core::str::from_utf8(chunk) {
                    Ok(_) => Ok(()),
                    Err(_) => Err(ErrorKind::InvalidUtf8),
                })
                .map(|()| None),
            TEXT => {
                let bytes = self.take(h.arg, field)?;
                self.utf8(bytes, field, at).map(|_| None)
            }
            ARRAY => Ok(Some(h.items())),
            MAP => Ok(Some(h.items().map(|n| n.saturating_mul(2)))),
            // Simple values: only those the reference knows, and floats.
            _ => match h.info {
                FALSE | TRUE | NULL | UNDEFINED | 25 | 26 | 27 => Ok(None),
                _ => Err(self.error_at(ErrorKind::Malformed, field, at)),
            },
        }
    }
}

/// A [`Write`] sink that only counts bytes: used to compute exact encoded
/// lengths with the same code that encodes.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Counter(pub(crate) usize);

impl Write for Counter {
    type Error = core::convert::Infallible;

    #[inline]
    fn write_all(&mut self, buf: &[u8]) -> Result<(), Self::Error> {
        self.0 += buf.len();
        Ok(())
    }
}

/// A [`Write`] sink over a byte slice whose writes inline to plain copies
/// (minicbor's own `&mut [u8]` sink measured ~2x slower on list entries).
pub(crate) struct SliceWriter<'b> {
    buf: &'b mut [u8],
    pos: usize,
}

/// The slice was too small: encoding stopped at that point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EndOfBuffer;

impl<'b> SliceWriter<'b> {
    pub(crate) fn new(buf: &'b mut [u8]) -> Self {
        SliceWriter { buf, pos: 0 }
    }

    pub(crate) fn position(&self) -> usize {
        self.pos
    }
}

impl Write for SliceWriter<'_> {
    type Error = EndOfBuffer;

    #[cfg_attr(not(feature = "compact"), inline(always))]
    #[cfg_attr(feature = "compact", inline)]
    fn write_all(&mut self, data: &[u8]) -> Result<(), EndOfBuffer> {
        let end = self.pos + data.len();
        match self.buf.get_mut(self.pos..end) {
            Some(dst) => {
                dst.copy_from_slice(data);
                self.pos = end;
                Ok(())
            }
            None => Err(EndOfBuffer),
        }
    }
}

/// The encoder type every payload writes to.
pub type Encoder<W> = minicbor::Encoder<W>;

/// The result of one encoding step into a sink `W`.
pub type EncodeResult<W> = Result<(), minicbor::encode::Error<<W as Write>::Error>>;

/// The CBOR of a constant text string of up to 255 bytes (a map key): its
/// head and its bytes, built at compile time, so writing it ([`Put::raw`])
/// is one fixed-size copy instead of a head and a string.
macro_rules! key {
    ($s:literal) => {{
        const KEY: &str = $s;
        const LEN: usize = KEY.len();
        const HEAD: usize = if LEN < 24 { 1 } else { 2 };
        const CBOR: [u8; HEAD + LEN] = {
            assert!(LEN <= 0xff, "a key with a head of at most two bytes");
            let mut out = [0u8; HEAD + LEN];
            if HEAD == 1 {
                out[0] = 0x60 | LEN as u8;
            } else {
                out[0] = 0x78;
                out[1] = LEN as u8;
            }
            let mut i = 0;
            while i < LEN {
                out[HEAD + i] = KEY.as_bytes()[i];
                i += 1;
            }
            out
        };
        &CBOR
    }};
}
pub(crate) use key;

/// The result of a chainable encoding step into a sink `W`.
pub(crate) type Step<'e, W> = Result<&'e mut Encoder<W>, minicbor::encode::Error<<W as Write>::Error>>;

/// Encoding steps of this crate, chainable as minicbor's own
/// (`e.raw(key!("path"))?.text(path)?`).
pub(crate) trait Put<W: Write> {
    /// Writes bytes that already are CBOR (a constant key from [`key!`]) in
    /// one write instead of one per head and string.
    fn raw(&mut self, cbor: &[u8]) -> Step<'_, W>;
    /// Writes an unsigned integer: its head in one fixed-size write
    /// (minicbor's `u64` goes through a general head writer per call);
    /// with `compact`, minicbor's, the smaller code.
    fn uint(&mut self, x: u64) -> Step<'_, W>;
    /// Writes a text string (as [`Put::uint`] for its head).
    fn text(&mut self, text: &str) -> Step<'_, W>;
}

impl<W: Write> Put<W> for Encoder<W> {
    #[inline]
    fn raw(&mut self, cbor: &[u8]) -> Step<'_, W> {
        self.writer_mut().write_all(cbor).map_err(minicbor::encode::Error::write)?;
        Ok(self)
    }

    #[cfg(not(feature = "compact"))]
    #[inline]
    fn uint(&mut self, x: u64) -> Step<'_, W> {
        put_head(self, 0, x)
    }

    #[cfg(not(feature = "compact"))]
    #[inline]
    fn text(&mut self, text: &str) -> Step<'_, W> {
        put_head(self, 0x60, text.len() as u64)?.raw(text.as_bytes())
    }

    #[cfg(feature = "compact")]
    #[inline]
    fn uint(&mut self, x: u64) -> Step<'_, W> {
        self.u64(x)
    }

    #[cfg(feature = "compact")]
    #[inline]
    fn text(&mut self, text: &str) -> Step<'_, W> {
        self.str(text)
    }
}

/// Writes a CBOR head (`major` is the major type's top three bits, e.g.
/// `0x60` for text) with one fixed-size write per head size: the same
/// head as [`write_head`], but without its variable-length copy out of a
/// scratch buffer (9% more instructions for a whole Stat request).
#[cfg(not(feature = "compact"))]
#[inline]
fn put_head<W: Write>(e: &mut Encoder<W>, major: u8, x: u64) -> Step<'_, W> {
    match x {
        0..=23 => e.raw(&[major | x as u8]),
        24..=0xff => e.raw(&[major | 24, x as u8]),
        0x100..=0xffff => {
            let [a, b] = (x as u16).to_be_bytes();
            e.raw(&[major | 25, a, b])
        }
        0x1_0000..=0xffff_ffff => {
            let [a, b, c, d] = (x as u32).to_be_bytes();
            e.raw(&[major | 26, a, b, c, d])
        }
        _ => {
            let [a, b, c, d, f, g, h, i] = x.to_be_bytes();
            e.raw(&[major | 27, a, b, c, d, f, g, h, i])
        }
    }
}

/// The exact length of a CBOR head (major type + argument) for `arg`.
pub(crate) const fn head_len(arg: u64) -> usize {
    match arg {
        0..=23 => 1,
        24..=0xff => 2,
        0x100..=0xffff => 3,
        0x1_0000..=0xffff_ffff => 5,
        _ => 9,
    }
}

/// Writes a CBOR head of major type `major` (0..=7) into `out`; returns its length.
pub(crate) fn write_head(out: &mut [u8], major: u8, arg: u64) -> usize {
    let m = major << 5;
    match head_len(arg) {
        1 => out[0] = m | arg as u8,
        2 => {
            out[0] = m | 24;
            out[1] = arg as u8;
        }
        3 => {
            out[0] = m | 25;
            out[1..3].copy_from_slice(&(arg as u16).to_be_bytes());
        }
        5 => {
            out[0] = m | 26;
            out[1..5].copy_from_slice(&(arg as u32).to_be_bytes());
        }
        _ => {
            out[0] = m | 27;
            out[1..9].copy_from_slice(&arg.to_be_bytes());
        }
    }
    head_len(arg)
}
