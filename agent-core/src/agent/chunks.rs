//! The read-chunk scheduler: one `core.fs.data` chunk at a time, round
//! robin over the reads in flight (paused relay clients skipped), its head
//! encoded here and its bytes sent straight from the filesystem.

use super::*;

impl<F: Filesystem> Core<'_, F> {
    /// Starts the next read chunk, round-robin by id: the read with the
    /// smallest id above the last one served, else the smallest id.
    /// Returns whether one started.
    pub(super) fn start_chunk(&mut self) -> bool {
        let last = self.last_read_id;
        let (mut next, mut first) = (None::<(u32, usize)>, None::<(u32, usize)>);
        for (i, s) in self.sessions.iter().enumerate() {
            if let Session::Read { id, reader: Some(_), .. } | Session::HandleRead { id, sending: false, .. } = s {
                if self.paused.iter().any(|&(start, end)| (start..end).contains(id)) {
                    continue;
                }
                if first.is_none_or(|(f, _)| *id < f) {
                    first = Some((*id, i));
                }
                if *id > last && next.is_none_or(|(n, _)| *id < n) {
                    next = Some((*id, i));
                }
            }
        }
        let Some((id, index)) = next.or(first) else { return false };
        let chunk_size = self.config.read_chunk_size as u64;
        let (source, offset, len) = match &mut self.sessions[index] {
            Session::Read { reader, size, offset, .. } => {
                assert!(*offset < *size, "a read picked with nothing left");
                let len = (*size - *offset).min(chunk_size) as usize;
                let reader = reader.take().expect("the picker takes only reads whose reader is in");
                (Source::Snapshot(reader), *offset, len)
            }
            Session::HandleRead { handle, offset, end, sending, .. } => {
                assert!(!*sending && *offset < *end, "a handle read picked while sending or done");
                *sending = true;
                (Source::Handle(*handle), *offset, (*end - *offset).min(chunk_size) as usize)
            }
            _ => unreachable!("the picker takes only reads"),
        };
        assert!(len <= wire::FS_CHUNK_SIZE, "a chunk over FS_CHUNK_SIZE");
        let mut head = [0u8; DATA_FRAME_HEAD_MAX];
        // A chunk is at most FS_CHUNK_SIZE, whose head fits by construction.
        let head_len = wire::encode_data_frame_head(id, len, &mut head).expect("a chunk's head fits its buffer");
        self.chunk = Some(Chunk { id, source, offset, len, head, head_len, sent: 0, failed: false });
        self.last_read_id = id;
        true
    }

    pub(super) fn chunk_done(&self) -> bool {
        self.chunk.as_ref().is_some_and(|c| c.sent >= c.head_len + c.len)
    }

    /// The unsent part of the current chunk: head bytes, then file bytes.
    pub(super) fn chunk_bytes(&mut self) -> Option<&[u8]> {
        let chunk = self.chunk.as_mut()?;
        if chunk.sent < chunk.head_len {
            return Some(&chunk.head[chunk.sent..chunk.head_len]);
        }
        let done = chunk.sent - chunk.head_len;
        let left = chunk.len - done;
        if !chunk.failed {
            let at = chunk.offset + done as u64;
            let bytes = match &mut chunk.source {
                Source::Snapshot(reader) => self.fs.read_at(reader, at, left),
                Source::Handle(handle) => match self.handles.get(chunk.id, *handle) {
                    Some((Open::File(file), _)) => self.fs.file_read(file, at, left, self.now_ns),
                    _ => Err(FsError::BadHandle),
                },
            };
            match bytes {
                Ok(bytes) if !bytes.is_empty() => {
                    // Lifetime: the slice borrows the filesystem only.
                    let n = bytes.len().min(left);
                    return Some(&bytes[..n]);
                }
                _ => chunk.failed = true,
            }
        }
        Some(&ZEROS[..left.min(ZEROS.len())])
    }

    /// After the last byte of a chunk: advance the read; end it if done.
    pub(super) fn finish_chunk(&mut self) {
        let chunk = self.chunk.take().expect("finish_chunk with a chunk in flight");
        assert!(chunk.sent == chunk.head_len + chunk.len, "a chunk finished before its last byte");
        self.stats.read_bytes += chunk.len as u64;
        // The session whose chunk this is: the read with this id whose
        // reader is out. If it was dropped while its chunk was in flight
        // there is none, even if a new session took the id meanwhile.
        let owner = self.sessions.iter().position(|s| match s {
            Session::Read { id, reader: None, .. } => *id == chunk.id && matches!(chunk.source, Source::Snapshot(_)),
            Session::HandleRead { id, sending: true, .. } => {
                *id == chunk.id && matches!(chunk.source, Source::Handle(_))
            }
            _ => false,
        });
        let Some(index) = owner else {
            self.release(chunk.source);
            self.check_drained();
            return;
        };
        let finished = match &mut self.sessions[index] {
            Session::Read { size, offset, .. } | Session::HandleRead { end: size, offset, .. } => {
                *offset += chunk.len as u64;
                *offset >= *size || chunk.failed
            }
            _ => return,
        };
        // A handle read that failed mid-chunk failed because the handle was
        // closed under it (or the file shrank): say so.
        let cause = match chunk.source {
            Source::Handle(_) => FsError::BadHandle,
            Source::Snapshot(_) => FsError::Io,
        };
        self.put_back(index, chunk.source);
        if finished {
            let session = self.sessions.swap_remove(index);
            self.close(session);
            let result = if chunk.failed { Err(("read", cause)) } else { Ok(()) };
            self.respond(chunk.id, result);
        }
    }

    /// Gives a chunk's source back to its session.
    pub(super) fn put_back(&mut self, index: usize, source: Source<F::Reader>) {
        match (&mut self.sessions[index], source) {
            (Session::Read { reader, .. }, Source::Snapshot(r)) => *reader = Some(r),
            (Session::HandleRead { sending, .. }, Source::Handle(_)) => *sending = false,
            (_, source) => self.release(source),
        }
    }
}
