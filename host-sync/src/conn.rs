//! Whole frames over a blocking byte stream.

use std::io::{self, Read};

/// Reads one whole frame (length prefix included). `Ok(None)`: the stream
/// ended cleanly between frames. A bad length prefix is
/// `ErrorKind::InvalidData`; a stream that ends inside a frame is
/// `ErrorKind::UnexpectedEof`. Memory per frame is bounded by
/// [`wire::MAX_FRAME_BYTES`].
pub fn read_frame(r: &mut impl Read) -> io::Result<Option<Vec<u8>>> {
    let mut prefix = [0u8; wire::LEN_PREFIX_SIZE];
    let mut got = 0;
    while got < prefix.len() {
        match r.read(&mut prefix[got..]) {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let len = u32::from_be_bytes(prefix);
    wire::check_len(len).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    let total = wire::LEN_PREFIX_SIZE + len as usize;
    let mut frame = Vec::with_capacity(total);
    frame.extend_from_slice(&prefix);
    r.take(u64::from(len)).read_to_end(&mut frame)?;
    if frame.len() != total {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    Ok(Some(frame))
}

/// The id and flags of a whole frame, as [`read_frame`] returns it.
///
/// # Panics
/// If `frame` is shorter than [`wire::HEADER_SIZE`] (never true of a frame
/// from [`read_frame`], which checks the length prefix).
pub fn header(frame: &[u8]) -> (u32, wire::Flags) {
    let parsed = wire::Frame::parse(frame).unwrap_or_else(|e| panic!("a whole frame from read_frame: {e}"));
    (parsed.id, parsed.flags)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_frames_and_reports_bad_ones() {
        let ping = crate::proto::frame(3, &wire::Ping);
        let mut two = ping.clone();
        two.extend_from_slice(&ping);
        let mut r = &two[..];
        assert_eq!(read_frame(&mut r).unwrap(), Some(ping.clone()));
        assert_eq!(read_frame(&mut r).unwrap(), Some(ping.clone()));
        assert_eq!(read_frame(&mut r).unwrap(), None);
        assert_eq!(header(&ping), (3, wire::Flags::NONE));
        let mut cut = &ping[..ping.len() - 1];
        assert_eq!(read_frame(&mut cut).unwrap_err().kind(), io::ErrorKind::UnexpectedEof);
        let mut huge = &[0xff, 0xff, 0xff, 0xff, 0][..];
        assert_eq!(read_frame(&mut huge).unwrap_err().kind(), io::ErrorKind::InvalidData);
        let mut half = &[0, 0][..];
        assert_eq!(read_frame(&mut half).unwrap_err().kind(), io::ErrorKind::UnexpectedEof);
    }
}
