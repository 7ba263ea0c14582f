//! The outbox: whole encoded frames waiting to be sent, in a byte buffer
//! the caller lends. Frames are encoded in place at the tail and sent from
//! the head; the buffer compacts when the tail runs out of room.

use wire::{EncodeError, Flags, Payload};

/// Bytes queued for sending, in whole frames.
pub struct Outbox<'b> {
    buf: &'b mut [u8],
    head: usize,
    tail: usize,
    /// End of the frames that may be sent before the next data chunk
    /// (see [`Outbox::mark`]).
    mark: usize,
}

impl<'b> Outbox<'b> {
    /// An empty outbox over `buf`.
    pub fn new(buf: &'b mut [u8]) -> Self {
        Outbox { buf, head: 0, tail: 0, mark: 0 }
    }

    /// The buffer's size: the largest frame it can ever hold.
    pub fn capacity(&self) -> usize {
        self.buf.len()
    }

    /// Bytes queued.
    pub fn len(&self) -> usize {
        self.tail - self.head
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.head == self.tail
    }

    /// Bytes a new frame can use now (after compaction).
    pub fn free(&self) -> usize {
        self.buf.len() - self.len()
    }

    /// Encodes a frame at the tail. Fails without queuing anything when it
    /// does not fit now ([`EncodeError::BufferTooSmall`]).
    pub fn push<P: Payload + ?Sized>(&mut self, id: u32, payload: &P) -> Result<(), EncodeError> {
        self.push_as(id, P::TYPE.flags(), wire::PROTOCOL_GENERATION, payload)
    }

    /// Encodes a frame with explicit flags and generation.
    pub fn push_as<P: Payload + ?Sized>(
        &mut self,
        id: u32,
        flags: Flags,
        v: u8,
        payload: &P,
    ) -> Result<(), EncodeError> {
        // A frame that does not fit at the tail (the encoder may have
        // written part of it there, into free space) is encoded again
        // after compaction if the whole buffer has room.
        // One call site: the encoder is generic, and inlined per payload.
        let n = loop {
            match wire::encode_frame_as(id, flags, v, payload, &mut self.buf[self.tail..]) {
                Err(EncodeError::BufferTooSmall { needed, .. }) if needed <= self.free() && self.head > 0 => {
                    self.compact()
                }
                result => break result?,
            }
        };
        self.tail += n;
        Ok(())
    }

    fn compact(&mut self) {
        self.buf.copy_within(self.head..self.tail, 0);
        self.mark = self.mark.saturating_sub(self.head);
        self.tail -= self.head;
        self.head = 0;
    }

    /// Marks everything queued now as the batch to send before the next
    /// data chunk, so control frames and data chunks take turns.
    pub fn mark(&mut self) {
        self.mark = self.tail;
    }

    /// Whether the marked batch has been sent.
    pub fn batch_sent(&self) -> bool {
        self.head >= self.mark
    }

    /// The unsent part of the marked batch.
    pub fn batch(&self) -> &[u8] {
        &self.buf[self.head..self.mark.max(self.head)]
    }

    /// Drops the first `n` queued bytes (they were sent).
    pub fn consume(&mut self, n: usize) {
        assert!(self.head + n <= self.tail, "consume past the queued bytes");
        self.head += n;
        if self.head == self.tail {
            self.head = 0;
            self.tail = 0;
            self.mark = 0;
        }
    }

    /// Drops everything queued.
    pub fn clear(&mut self) {
        self.consume(self.len());
    }
}
