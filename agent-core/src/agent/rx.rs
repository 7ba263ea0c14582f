//! The receive buffer: where the driver reads link bytes into, and the
//! pump that cuts them into frames and hands each to the dispatcher as the
//! outbox has room for its answer.

use super::*;

impl<F: Filesystem> Agent<'_, F> {
    /// The free part of the receive buffer: read bytes into it, then call
    /// [`Agent::rx_commit`].
    ///
    /// A large frame is offered room up to its own end and no further, so
    /// the frame after it starts at the front of the buffer: bulk data is
    /// never moved. Small leftovers are moved to the front to make room.
    pub fn rx_space(&mut self) -> &mut [u8] {
        let rx = &mut self.rx;
        // The end of the frame being received, once its length is in.
        let mut frame_end = match wire::parse_frame(&rx.buf[rx.start..rx.filled]) {
            Ok(wire::FrameStatus::Incomplete { needed }) if rx.filled - rx.start >= wire::LEN_PREFIX_SIZE => {
                Some(rx.filled + needed)
            }
            _ => None,
        };
        if rx.start > 0 {
            let pending = rx.filled - rx.start;
            if pending <= RX_COMPACT_BELOW || frame_end.is_some_and(|end| end > rx.buf.len()) {
                rx.buf.copy_within(rx.start..rx.filled, 0);
                frame_end = frame_end.map(|end| end - rx.start);
                rx.filled = pending;
                rx.start = 0;
            }
        }
        let end = match frame_end {
            Some(end) if end - rx.start > RX_COMPACT_BELOW => end.min(rx.buf.len()),
            _ => rx.buf.len(),
        };
        &mut rx.buf[rx.filled..end]
    }

    /// Takes `n` bytes written into [`Agent::rx_space`] and handles every
    /// complete frame that the outbox has room for.
    ///
    /// # Panics
    ///
    /// If `n` is more than [`Agent::rx_space`] offered: the driver claims
    /// bytes it never wrote.
    pub fn rx_commit(&mut self, n: usize, now_ns: u64) {
        assert!(self.rx.filled + n <= self.rx.buf.len(), "rx_commit past the receive buffer");
        self.rx.filled += n;
        self.pump(now_ns);
    }

    /// Copies as much of `bytes` as fits into the receive buffer and
    /// handles what it can. Returns how many bytes were taken.
    pub fn receive(&mut self, bytes: &[u8], now_ns: u64) -> usize {
        let space = self.rx_space();
        let n = space.len().min(bytes.len());
        space[..n].copy_from_slice(&bytes[..n]);
        self.rx_commit(n, now_ns);
        n
    }

    /// Handles buffered input frames as far as the outbox allows. Called by
    /// `rx_commit` and `transmitted`; a driver need not call it.
    pub fn pump(&mut self, now_ns: u64) {
        loop {
            if let State::AwaitingStream { quiet_since_ns } = &mut self.core.state
                && self.rx.filled > self.rx.start
            {
                // Input of a lost stream: dropped, and the quiet starts over.
                *quiet_since_ns = now_ns;
            }
            if matches!(self.core.state, State::AwaitingStream { .. } | State::ShuttingDown | State::Off) {
                self.rx.start = 0;
                self.rx.filled = 0;
                return;
            }
            let pending = &self.rx.buf[self.rx.start..self.rx.filled];
            let (frame, consumed) = match wire::parse_frame(pending) {
                Ok(wire::FrameStatus::Complete { frame, consumed }) => (frame, consumed),
                Ok(wire::FrameStatus::Incomplete { .. }) => break,
                Err(e) => {
                    self.core.stream_error(&e, now_ns);
                    continue;
                }
            };
            if self.core.out.free() < INPUT_RESERVE {
                break;
            }
            match self.core.handle(frame, now_ns, &mut self.paths) {
                Handled::Done => {
                    self.core.stats.frames_received += 1;
                    self.rx.start += consumed;
                }
                Handled::Later => break,
            }
        }
        if self.rx.start == self.rx.filled {
            self.rx.start = 0;
            self.rx.filled = 0;
        }
    }
}
