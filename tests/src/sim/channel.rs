//! Simulated byte links: bounded, in-order pipes that cut every write into
//! pieces delivered after random delays. Readers therefore see arbitrary
//! boundaries: a frame over several reads, several frames in one read.

use std::collections::VecDeque;

use super::trace::{Mark, Trace};
use crate::rng::Rng;

/// Bytes consumed from the front of a [`ByteQueue`] before it moves its
/// remainder down: moving rarely keeps consumption amortized O(1).
const COMPACT_AT: usize = 64 * 1024;

/// A FIFO of bytes in one contiguous buffer, so frames parse in place.
#[derive(Debug, Default)]
pub struct ByteQueue {
    buf: Vec<u8>,
    head: usize,
}

impl ByteQueue {
    /// Bytes queued.
    pub fn len(&self) -> usize {
        self.buf.len() - self.head
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.head == self.buf.len()
    }

    /// The queued bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.buf[self.head..]
    }

    /// Appends bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Appends `n` zero bytes and returns them, to be filled in place.
    pub fn extend_zeroed(&mut self, n: usize) -> &mut [u8] {
        let start = self.buf.len();
        self.buf.resize(start + n, 0);
        &mut self.buf[start..]
    }

    /// Drops the first `n` bytes.
    pub fn consume(&mut self, n: usize) {
        assert!(n <= self.len(), "consumed {n} of {} queued bytes", self.len());
        self.head += n;
        if self.head == self.buf.len() {
            self.buf.clear();
            self.head = 0;
        } else if self.head >= COMPACT_AT && self.head * 2 >= self.buf.len() {
            self.buf.drain(..self.head);
            self.head = 0;
        }
    }

    /// Drops everything.
    pub fn clear(&mut self) {
        self.buf.clear();
        self.head = 0;
    }
}

/// How a link delays and cuts what is written into it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    /// Bytes written but not yet consumed, at most (the socket buffer or
    /// the virtqueue): a full link refuses writes, which is backpressure.
    pub capacity: usize,
    /// Shortest delay of a piece, in ns.
    pub delay_min_ns: u64,
    /// Longest delay of a piece, in ns.
    pub delay_max_ns: u64,
    /// Most pieces one write is cut into.
    pub pieces_max: u64,
    /// Arrival times are rounded up to a multiple of this (at least 1 ns):
    /// pieces that arrive together are read together, as from a real
    /// socket, and the simulation takes fewer steps.
    pub tick_ns: u64,
}

/// A one-way byte link.
#[derive(Debug)]
pub struct Channel {
    /// Names the link in the trace.
    tag: u64,
    shape: Shape,
    bytes: ByteQueue,
    /// Pieces in flight: (end position, arrival time), arrival times
    /// non-decreasing so bytes arrive in order.
    in_flight: VecDeque<(u64, u64)>,
    written: u64,
    arrived: u64,
    consumed: u64,
    last_arrival_ns: u64,
    closed: bool,
}

impl Channel {
    /// An empty, open link.
    pub fn new(tag: u64, shape: Shape) -> Channel {
        Channel {
            tag,
            shape,
            bytes: ByteQueue::default(),
            in_flight: VecDeque::new(),
            written: 0,
            arrived: 0,
            consumed: 0,
            last_arrival_ns: 0,
            closed: false,
        }
    }

    /// Bytes a write can take now.
    pub fn space(&self) -> usize {
        self.shape.capacity.saturating_sub(self.bytes.len())
    }

    /// Writes as much of `data` as fits, cut into pieces that arrive after
    /// random delays. Returns the bytes taken.
    pub fn write(&mut self, data: &[u8], now_ns: u64, rng: &mut Rng) -> usize {
        assert!(!self.closed, "write to a closed link {}", self.tag);
        let n = data.len().min(self.space());
        if n == 0 {
            return 0;
        }
        self.bytes.push(&data[..n]);
        let end = self.written + n as u64;
        let pieces = if self.shape.pieces_max > 1 && n > 1 && rng.chance(0.3) {
            rng.range(2, self.shape.pieces_max.min(n as u64))
        } else {
            1
        };
        let mut at = self.written;
        for left in (0..pieces).rev() {
            // Every piece still to cut keeps at least one byte.
            let piece_end = if left == 0 { end } else { rng.range(at + 1, end - left) };
            let delay = rng.range(self.shape.delay_min_ns, self.shape.delay_max_ns);
            let arrival = (now_ns + delay).next_multiple_of(self.shape.tick_ns);
            self.last_arrival_ns = self.last_arrival_ns.max(arrival);
            self.in_flight.push_back((piece_end, self.last_arrival_ns));
            at = piece_end;
        }
        self.written = end;
        n
    }

    /// The bytes that have arrived and not been consumed.
    pub fn readable(&mut self, now_ns: u64) -> &[u8] {
        while let Some(&(end, at)) = self.in_flight.front()
            && at <= now_ns
        {
            self.arrived = end;
            self.in_flight.pop_front();
        }
        let n = (self.arrived - self.consumed) as usize;
        &self.bytes.bytes()[..n]
    }

    /// Whether some bytes were written and not read yet.
    pub fn has_unread(&self) -> bool {
        self.written > self.consumed
    }

    /// Takes the first `n` readable bytes.
    pub fn consume(&mut self, n: usize, trace: &mut Trace) {
        assert!(self.consumed + n as u64 <= self.arrived, "link {} consumed bytes that had not arrived", self.tag);
        self.consumed += n as u64;
        self.bytes.consume(n);
        trace.record(Mark::Delivered, self.tag, n as u64);
    }

    /// When the next piece in flight arrives.
    pub fn next_arrival_ns(&self) -> Option<u64> {
        self.in_flight.front().map(|&(_, at)| at)
    }

    /// The writer is gone: the reader sees end-of-stream after the data.
    pub fn close(&mut self) {
        self.closed = true;
    }

    /// Whether the writer closed the link and every byte was read.
    pub fn at_eof(&self) -> bool {
        self.closed && self.consumed == self.written
    }

    /// Whether every byte written has been read.
    pub fn is_idle(&self) -> bool {
        self.consumed == self.written
    }

    /// Drops everything in flight and unread (a fresh connection).
    pub fn reset(&mut self) {
        self.bytes.clear();
        self.in_flight.clear();
        self.arrived = self.written;
        self.consumed = self.written;
        self.closed = false;
    }
}
