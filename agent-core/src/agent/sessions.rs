//! Filesystem requests and their sessions: each op of both dialects, the
//! session table and its per-client quota, handles, write streams and
//! their idle bound, and what a disconnect or shutdown ends.

use super::*;

impl<F: Filesystem> Core<'_, F> {
    pub(super) fn session_index(&self, id: u32) -> Option<usize> {
        self.sessions.iter().position(|s| s.id() == id)
    }

    pub(super) fn fs_request(
        &mut self,
        id: u32,
        v: u8,
        op: FsOp<'_>,
        now_ns: u64,
        paths: &mut [PathBuf; 2],
    ) -> Handled {
        // An id is in use while it has a session, and also while a data
        // frame of a dropped session still goes out on it.
        if self.session_index(id).is_some() || self.chunk.as_ref().is_some_and(|c| c.id == id) {
            let mut message = String::<MESSAGE_MAX>::new();
            let _ = write!(message, "session id {id} is already in use");
            let t = Some(MessageType::FsRequest.as_str());
            self.core_error(id, None, CoreErrorKind::InvalidSession, &message, t);
            return Handled::Done;
        }
        let name = op.error_prefix();
        // Paths are passed as sent (the filesystem resolves them as Linux
        // does); one longer than any path could be is refused before an
        // answer would echo it.
        let too_long = match op {
            FsOp::Copy { src: a, dst: b }
            | FsOp::Rename { src: a, dst: b }
            | FsOp::Symlink { target: a, link_path: b, .. } => a.len() > MAX_PATH_LEN || b.len() > MAX_PATH_LEN,
            FsOp::RealPath { path }
            | FsOp::Stat { path, .. }
            | FsOp::SetStat { path, .. }
            | FsOp::List { path }
            | FsOp::ReadLink { path }
            | FsOp::Read { path }
            | FsOp::Write { path, .. }
            | FsOp::Mkdir { path }
            | FsOp::MkdirWith { path, .. }
            | FsOp::Remove { path }
            | FsOp::RemoveDir { path, .. }
            | FsOp::OpenFile { path, .. }
            | FsOp::OpenDir { path } => path.len() > MAX_PATH_LEN,
            _ => false,
        };
        if too_long {
            self.respond(id, Err((name, FsError::PathTooLong)));
            return Handled::Done;
        }
        let current = op.is_current_shape() || v >= CURRENT_FS_GENERATION;
        let parents = if current { MissingParents::Fail } else { MissingParents::Create };
        let result = match op {
            FsOp::Stat { path, follow_symlink } => {
                let meta = match follow_symlink {
                    None => self.fs.stat(path),
                    Some(follow) => self.fs.stat_at(path, follow),
                };
                return self.stat_answer(id, name, path, meta, current);
            }
            FsOp::List { path } => return self.list(id, path, current),
            FsOp::Read { path } => {
                self.open_read(id, path);
                return Handled::Done;
            }
            FsOp::Write { path, mode } => {
                self.open_write(id, path, mode, now_ns);
                return Handled::Done;
            }
            FsOp::Mkdir { path } => self.fs.mkdir(path, now_ns),
            FsOp::MkdirWith { path, mode, user } => match parse_user(user) {
                Ok(owner) => self.fs.create_dir_all(path, mode, owner, now_ns),
                Err(()) => return self.unknown_user(id, name, user),
            },
            FsOp::Remove { path } => self.fs.remove(path, now_ns),
            FsOp::RemoveDir { path, recursive: None } => self.fs.remove_dir(path, now_ns),
            FsOp::RemoveDir { path, recursive: Some(recursive) } => self.fs.remove_dir_at(path, recursive, now_ns),
            FsOp::Copy { src, dst } => self.fs.copy_at(src, dst, parents, now_ns),
            FsOp::Rename { src, dst } => self.fs.rename_at(src, dst, parents, now_ns),
            FsOp::RealPath { path } | FsOp::ReadLink { path } => {
                let out = &mut paths[0];
                let found = match op {
                    FsOp::RealPath { .. } => crate::fs::real_path(&mut self.fs, path, out),
                    _ => self.fs.read_link(path, out),
                };
                match found {
                    Ok(()) => self.respond_data(id, FsResponseData::Path(out.as_str())),
                    Err(e) => self.respond(id, Err((name, e))),
                }
                return Handled::Done;
            }
            FsOp::Symlink { target, link_path, user } => match parse_user(user) {
                Ok(owner) => self.fs.symlink(target, link_path, owner, now_ns),
                Err(()) => return self.unknown_user(id, name, user),
            },
            FsOp::SetStat { path, follow_symlink, attrs } => {
                let result = self.fs.set_attrs(path, follow_symlink, &set_attrs(&attrs), now_ns);
                return self.attr_answer(id, name, result);
            }
            FsOp::OpenFile { path, options } => return self.open_file(id, name, path, &options, now_ns),
            FsOp::OpenDir { path } => return self.open_dir(id, name, path),
            FsOp::CloseHandle { handle } => match self.handles.remove(id, handle) {
                Some(open) => {
                    self.release_open(open);
                    Ok(())
                }
                None => Err(FsError::BadHandle),
            },
            FsOp::ReadHandle { handle, offset, len } => return self.read_handle(id, name, handle, offset, len),
            FsOp::WriteHandle { handle, offset, len } => {
                return self.write_handle(id, name, handle, offset, len, now_ns);
            }
            FsOp::ReadDir { handle, limit } => return self.read_dir(id, name, handle, limit),
            FsOp::FStat { handle } => {
                // The path the handle was opened with, as the reference answers.
                let out = &mut paths[0];
                out.clear();
                let meta = match self.handles.get(id, handle) {
                    Some((Open::File(file), path)) => {
                        let _ = out.push_str(path);
                        Ok(self.fs.file_stat(file))
                    }
                    Some((Open::Dir(dir), path)) => {
                        let _ = out.push_str(path);
                        Ok(self.fs.dir_stat(dir))
                    }
                    None => Err(FsError::BadHandle),
                };
                return self.stat_answer(id, name, out.as_str(), meta, true);
            }
            FsOp::FSetStat { handle, attrs } => {
                let result = match self.handles.get(id, handle) {
                    Some((Open::File(file), _)) => self.fs.file_set_attrs(file, &set_attrs(&attrs), now_ns),
                    // The reference opens only files for FSetStat.
                    Some((Open::Dir(_), _)) | None => {
                        Err(AttrError { step: crate::fs::AttrStep::Fchown, error: FsError::BadHandle })
                    }
                };
                return match result {
                    Err(AttrError { error: FsError::BadHandle, .. }) => {
                        self.respond(id, Err((name, FsError::BadHandle)));
                        Handled::Done
                    }
                    result => self.attr_answer(id, name, result),
                };
            }
        };
        self.respond(id, result.map_err(|e| (name, e)));
        Handled::Done
    }

    pub(super) fn unknown_user(&mut self, id: u32, op: &str, user: Option<&str>) -> Handled {
        let mut cause = String::<MESSAGE_MAX>::new();
        let _ = write!(cause, "unknown user \"{}\"", user.unwrap_or(""));
        self.respond_error(id, op, &cause);
        Handled::Done
    }

    pub(super) fn attr_answer(&mut self, id: u32, op: &str, result: Result<(), AttrError>) -> Handled {
        match result {
            Ok(()) => self.respond(id, Ok(())),
            Err(e) => self.respond_error(id, op, &e),
        }
        Handled::Done
    }

    pub(super) fn stat_answer(
        &mut self,
        id: u32,
        op: &str,
        path: &str,
        meta: Result<Metadata, FsError>,
        current: bool,
    ) -> Handled {
        match meta {
            Ok(m) => {
                let info = entry_info(path, &m, self.wall, current);
                self.respond_data(id, FsResponseData::Stat(info));
            }
            Err(e) => self.respond(id, Err((op, e))),
        }
        Handled::Done
    }

    pub(super) fn list(&mut self, id: u32, dir: &str, current: bool) -> Handled {
        let mut count = 0usize;
        if let Err(e) = self.fs.list(dir, &mut |_, _| count += 1) {
            // The current reference lists by opening the directory inside
            // its `readdir` (both name the failure).
            self.respond(id, Err((if current { "readdir: opendir" } else { "list" }, e)));
            return Handled::Done;
        }
        let wall = self.wall;
        let source = ListSource { fs: RefCell::new(&mut self.fs), dir, count, wall, current };
        let response = FsResponse { ok: true, error: None, data: Some(FsResponseData::List(&source)) };
        let len = wire::frame_len(&response);
        let limit = self.out.capacity() - INPUT_RESERVE;
        if len > limit || len > wire::MAX_FRAME_BYTES {
            let mut message = String::<MESSAGE_MAX>::new();
            let _ = write!(message, "list: too many entries for one frame ({count} entries, {len} bytes)");
            self.push(id, &FsResponse::<[FsEntryInfo<'_>; 0]>::err(&message));
            return Handled::Done;
        }
        if len > self.out.free() - (INPUT_RESERVE - RESPONSE_MAX) {
            return Handled::Later;
        }
        if let Err(e) = self.out.push(id, &response) {
            debug_assert!(false, "list response did not fit: {e}");
        }
        Handled::Done
    }

    /// Answers a handle-table bound: `EMFILE` for the client's own bound,
    /// `ENFILE` for the table's.
    pub(super) fn table_full(&mut self, id: u32, op: &str, full: Full) {
        match full {
            Full::Client => {
                let mut cause = String::<MESSAGE_MAX>::new();
                let _ = write!(cause, "Too many open files (os error 24; {MAX_HANDLES_PER_CLIENT} per client)");
                self.respond_error(id, op, &cause);
            }
            Full::Table => self.respond(id, Err((op, FsError::TooManyOpen))),
        }
    }

    pub(super) fn open_file(
        &mut self,
        id: u32,
        op: &str,
        path: &str,
        options: &FsOpenOptions<'_>,
        now_ns: u64,
    ) -> Handled {
        // The bound is checked first, so a refused open creates nothing.
        if let Err(full) = self.handles.check_room(id, false, path) {
            self.table_full(id, op, full);
            return Handled::Done;
        }
        let Ok(owner) = parse_user(options.user) else { return self.unknown_user(id, op, options.user) };
        let options = OpenOptions {
            read: options.read,
            write: options.write,
            append: options.append,
            create: options.create,
            truncate: options.truncate,
            create_new: options.create_new,
            mode: options.mode,
            owner: Some(owner),
        };
        match self.fs.open(path, &options, now_ns) {
            Ok(file) => self.answer_open(id, op, Open::File(file), path),
            Err(e) => self.respond(id, Err((op, e))),
        }
        Handled::Done
    }

    /// Puts a file or directory just opened into the handle table and
    /// answers its number, or closes it again and answers why not.
    fn answer_open(&mut self, id: u32, op: &str, open: Open<F>, path: &str) {
        match self.handles.insert(id, open, path) {
            Ok(handle) => self.respond_data(id, FsResponseData::Handle(handle)),
            Err((open, full)) => {
                self.release_open(open);
                self.table_full(id, op, full);
            }
        }
    }

    pub(super) fn open_dir(&mut self, id: u32, op: &str, path: &str) -> Handled {
        if let Err(full) = self.handles.check_room(id, true, path) {
            self.table_full(id, op, full);
            return Handled::Done;
        }
        match self.fs.open_dir(path) {
            Ok(dir) => self.answer_open(id, op, Open::Dir(dir), path),
            Err(e) => self.respond(id, Err((op, e))),
        }
        Handled::Done
    }

    pub(super) fn read_handle(&mut self, id: u32, op: &str, handle: u64, offset: u64, len: Option<u64>) -> Handled {
        if !self.admit_session(id, op) {
            return Handled::Done;
        }
        let size = match self.handles.get(id, handle) {
            Some((Open::File(file), _)) => self.fs.file_stat(file).size,
            Some((Open::Dir(_), _)) => return self.answer(id, Err((op, FsError::IsADirectory))),
            None => return self.answer(id, Err((op, FsError::BadHandle))),
        };
        // A zero-length probe checks the handle can read (EBADF on a
        // write-only file) without moving anything.
        if let Some((Open::File(file), _)) = self.handles.get(id, handle)
            && let Err(e) = self.fs.file_read(file, offset.min(size), 0, self.now_ns)
        {
            return self.answer(id, Err((op, e)));
        }
        let end = len.map_or(size, |len| offset.saturating_add(len).min(size));
        if offset >= end {
            // At or past the end: no data, and no empty chunk.
            return self.answer(id, Ok(()));
        }
        let _ = self.sessions.push(Session::HandleRead { id, handle, offset, end, sending: false });
        self.stats.sessions_peak = self.stats.sessions_peak.max(self.sessions.len());
        Handled::Done
    }

    pub(super) fn write_handle(
        &mut self,
        id: u32,
        op: &str,
        handle: u64,
        offset: u64,
        len: Option<u64>,
        now_ns: u64,
    ) -> Handled {
        if !self.admit_session(id, op) {
            return Handled::Done;
        }
        match self.handles.get(id, handle) {
            Some((Open::File(_), _)) => {}
            Some((Open::Dir(_), _)) => return self.answer(id, Err((op, FsError::BadHandle))),
            None => return self.answer(id, Err((op, FsError::BadHandle))),
        }
        let session = Session::HandleWrite { id, handle, offset, expected: len, received: 0, active_ns: now_ns };
        let _ = self.sessions.push(session);
        self.stats.sessions_peak = self.stats.sessions_peak.max(self.sessions.len());
        Handled::Done
    }

    pub(super) fn answer(&mut self, id: u32, result: Result<(), (&str, FsError)>) -> Handled {
        self.respond(id, result);
        Handled::Done
    }

    pub(super) fn read_dir(&mut self, id: u32, op: &str, handle: u64, limit: Option<u32>) -> Handled {
        let mut limit = limit.map_or(READ_DIR_BATCH_MAX, |l| (l as usize).min(READ_DIR_BATCH_MAX));
        let (free, capacity) = (self.out.free(), self.out.capacity());
        let mut batch = heapless::Vec::<(String<MAX_NAME_LEN>, Metadata), READ_DIR_BATCH_MAX>::new();
        let (dir, path) = match self.handles.get(id, handle) {
            Some((Open::Dir(dir), path)) => (dir, path),
            Some((Open::File(_), _)) => return self.answer(id, Err((op, FsError::NotADirectory))),
            None => return self.answer(id, Err((op, FsError::BadHandle))),
        };
        // Entries are taken from the directory only once there is room for
        // their answer at its largest: no more than the outbox can ever hold,
        // and none until the outbox has room for them.
        let per_entry = path.len() + 1 + MAX_NAME_LEN + ENTRY_OVERHEAD_MAX;
        limit = limit.min((capacity - INPUT_RESERVE) / per_entry).max(1);
        if limit * per_entry + RESPONSE_MAX > free - (INPUT_RESERVE - RESPONSE_MAX) {
            return Handled::Later;
        }
        let read = self.fs.read_dir(dir, limit, &mut |name, m| {
            let mut owned = String::new();
            // Names are at most MAX_NAME_LEN bytes; the batch holds `limit`.
            let _ = owned.push_str(name);
            let _ = batch.push((owned, *m));
        });
        if let Err(e) = read {
            return self.answer(id, Err((op, e)));
        }
        let source = BatchSource { dir: path, batch: &batch, wall: self.wall };
        let response = FsResponse { ok: true, error: None, data: Some(FsResponseData::List(&source)) };
        // The room for it was checked above.
        if let Err(e) = self.out.push(id, &response) {
            log::error!("readdir answer dropped: {}", defmt_display(&e));
        }
        Handled::Done
    }

    pub(super) fn open_read(&mut self, id: u32, path: &str) {
        if !self.admit_session(id, "read") {
            return;
        }
        let (reader, size) = match self.fs.open_read(path) {
            Ok(opened) => opened,
            Err(e) => return self.respond(id, Err(("read", e))),
        };
        if size == 0 {
            self.fs.close_read(reader);
            return self.respond(id, Ok(()));
        }
        let session = Session::Read { id, reader: Some(reader), size, offset: 0 };
        if let Err(Session::Read { reader: Some(reader), .. }) = self.sessions.push(session) {
            // Not reached: the table had room above.
            self.fs.close_read(reader);
            self.too_many_sessions(id, "read");
        }
        self.stats.sessions_peak = self.stats.sessions_peak.max(self.sessions.len());
    }

    pub(super) fn too_many_sessions(&mut self, id: u32, op: &str) {
        let mut message = String::<MESSAGE_MAX>::new();
        let _ = write!(message, "{op}: too many sessions in flight (max {MAX_SESSIONS})");
        self.push(id, &FsResponse::<[FsEntryInfo<'_>; 0]>::err(&message));
    }

    /// Sessions held by the relay client that owns `id`'s slot.
    pub(super) fn client_sessions(&self, id: u32) -> usize {
        let owner = wire::relay::slot_of(id);
        self.sessions.iter().filter(|s| wire::relay::slot_of(s.id()) == owner).count()
    }

    /// Whether `id` may open a session: the table has room, its client is
    /// below its share, and the reserve is left to small holders. If not,
    /// answers `ok: false` naming the bound.
    pub(super) fn admit_session(&mut self, id: u32, op: &str) -> bool {
        if self.sessions.is_full() {
            self.too_many_sessions(id, op);
            return false;
        }
        let held = self.client_sessions(id);
        let free = MAX_SESSIONS - self.sessions.len();
        let mut message = String::<MESSAGE_MAX>::new();
        if held >= MAX_SESSIONS_PER_CLIENT && self.config.planted != PlantedBug::NoSessionQuota {
            let _ = write!(message, "{op}: too many sessions for one client (max {MAX_SESSIONS_PER_CLIENT})");
        } else if free <= SESSION_RESERVE && held >= RESERVE_CLIENT_MAX {
            let _ = write!(
                message,
                "{op}: too many sessions in flight (the last {SESSION_RESERVE} are kept for clients with fewer than {RESERVE_CLIENT_MAX})"
            );
        } else {
            return true;
        }
        self.push(id, &FsResponse::<[FsEntryInfo<'_>; 0]>::err(&message));
        false
    }

    pub(super) fn open_write(&mut self, id: u32, path: &str, mode: Option<u32>, now_ns: u64) {
        if !self.admit_session(id, "write") {
            return;
        }
        match self.fs.begin_write(path) {
            Ok(writer) => {
                let session = Session::Write { id, writer, mode, active_ns: now_ns };
                if let Err(Session::Write { writer, .. }) = self.sessions.push(session) {
                    self.fs.abort_write(writer);
                }
                self.stats.sessions_peak = self.stats.sessions_peak.max(self.sessions.len());
            }
            Err(e) => self.respond(id, Err(("write", e))),
        }
    }

    pub(super) fn fs_data(&mut self, id: u32, data: &[u8], now_ns: u64) {
        let Some(index) = self.session_index(id) else {
            return self.respond_error(id, "write", &"unknown write session");
        };
        if let Session::HandleWrite { handle, offset, expected, received, .. } = &mut self.sessions[index] {
            let (handle, at, expected) = (*handle, *offset, *expected);
            let total = *received + data.len() as u64;
            let outcome = if data.is_empty() {
                match expected {
                    Some(n) if n != total => Err(LenMismatch { expected: n, got: total, at_end: true }.into()),
                    _ => Ok(true),
                }
            } else if expected.is_some_and(|n| total > n) {
                // More than announced: refused before any of it is written.
                Err(LenMismatch { expected: expected.unwrap_or(0), got: total, at_end: false }.into())
            } else {
                self.stats.write_bytes += data.len() as u64;
                match self.handles.get(id, handle) {
                    Some((Open::File(file), _)) => match self.fs.file_write(file, at, data, now_ns) {
                        Ok(next) => {
                            if let Session::HandleWrite { offset, received, active_ns, .. } = &mut self.sessions[index]
                            {
                                *offset = next;
                                *received = total;
                                *active_ns = now_ns;
                            }
                            Ok(false)
                        }
                        Err(e) => Err(WriteFailure::Fs(e)),
                    },
                    _ => Err(WriteFailure::Fs(FsError::BadHandle)),
                }
            };
            match outcome {
                Ok(false) => {}
                Ok(true) => {
                    self.sessions.swap_remove(index);
                    self.respond(id, Ok(()));
                }
                Err(failure) => {
                    self.sessions.swap_remove(index);
                    match failure {
                        WriteFailure::Fs(e) => self.respond(id, Err(("write", e))),
                        WriteFailure::Len(m) => {
                            let mut message = String::<MESSAGE_MAX>::new();
                            let _ = write!(message, "{m}");
                            self.push(id, &FsResponse::<[FsEntryInfo<'_>; 0]>::err(&message));
                        }
                    }
                }
            }
            return;
        }
        let Session::Write { writer, active_ns, .. } = &mut self.sessions[index] else {
            // A read (path or handle) session.
            let t = Some(MessageType::FsData.as_str());
            let message = "core.fs.data sent to a read session";
            return self.core_error(id, None, CoreErrorKind::InvalidSession, message, t);
        };
        *active_ns = now_ns;
        if !data.is_empty() {
            self.stats.write_bytes += data.len() as u64;
            if let Err(e) = self.fs.write(writer, data) {
                if let Session::Write { writer, .. } = self.sessions.swap_remove(index) {
                    self.fs.abort_write(writer);
                }
                return self.respond(id, Err(("write", e)));
            }
            return;
        }
        let Session::Write { writer, mode, .. } = self.sessions.swap_remove(index) else {
            unreachable!("write data routed to a session that is no write")
        };

        let result = self.fs.commit_write(writer, mode, now_ns);
        self.respond(id, result.map_err(|e| ("write", e)));
    }

    /// Pauses or resumes read data to a relay client's range.
    pub(super) fn flow(&mut self, flow: RelayFlow) {
        let range = (flow.id_start, flow.id_end_exclusive);
        self.paused.retain(|r| *r != range);
        if flow.paused && self.paused.push(range).is_err() {
            // More ranges than relay slots: not a relay of this project's.
            log::warning!("too many paused ranges: {}..{} not paused", range.0, range.1);
        }
    }

    pub(super) fn drop_range(&mut self, range: RelayClientDisconnected) {
        self.paused.retain(|&(start, end)| !(range.contains(start) && end <= range.id_end_exclusive));
        let mut i = 0;
        while i < self.sessions.len() {
            if range.contains(self.sessions[i].id()) {
                let session = self.sessions.swap_remove(i);
                self.close(session);
            } else {
                i += 1;
            }
        }
        if self.config.planted != PlantedBug::HandlesSurviveDisconnect {
            let fs = &mut self.fs;
            self.handles.drop_range(range.id_start, range.id_end_exclusive, &mut |open| release_open(fs, open));
        }
        log::info!("relay client {}..{} disconnected", range.id_start, range.id_end_exclusive);
    }

    /// When the quietest write reaches its idle bound.
    pub(super) fn write_deadline(&self) -> Option<u64> {
        let timeout = self.config.write_idle_timeout_ns;
        self.sessions
            .iter()
            .filter_map(|s| match s {
                Session::Write { active_ns, .. } | Session::HandleWrite { active_ns, .. } => {
                    Some(active_ns.saturating_add(timeout))
                }
                Session::Read { .. } | Session::HandleRead { .. } => None,
            })
            .min()
    }

    /// Aborts every write that has received nothing for the idle bound:
    /// `ok: false`, staged content dropped (the old file stays).
    pub(super) fn abort_idle_writes(&mut self, now_ns: u64) {
        let timeout = self.config.write_idle_timeout_ns;
        let mut i = 0;
        while i < self.sessions.len() {
            let idle = matches!(self.sessions[i], Session::Write { active_ns, .. } | Session::HandleWrite { active_ns, .. }
                if now_ns.saturating_sub(active_ns) >= timeout);
            if !idle {
                i += 1;
                continue;
            }
            let session = self.sessions.swap_remove(i);
            let id = session.id();
            self.close(session);
            let mut message = String::<MESSAGE_MAX>::new();
            let _ = write!(message, "write: aborted: no data for {} s (idle write bound)", timeout / 1_000_000_000);
            log::warning!("write {} idle: aborted", id);
            self.push(id, &FsResponse::<[FsEntryInfo<'_>; 0]>::err(&message));
        }
    }

    /// Ends a session without a response. A read whose chunk is being sent
    /// keeps its reader in the chunk until the frame is complete. A handle
    /// session leaves its handle open.
    pub(super) fn close(&mut self, session: Session<F>) {
        match session {
            Session::Read { reader: Some(reader), .. } => self.fs.close_read(reader),
            Session::Read { reader: None, .. } | Session::HandleRead { .. } | Session::HandleWrite { .. } => {}
            Session::Write { writer, .. } => self.fs.abort_write(writer),
        }
    }

    /// Releases what a chunk read from.
    pub(super) fn release(&mut self, source: Source<F::Reader>) {
        if let Source::Snapshot(reader) = source {
            self.fs.close_read(reader);
        }
    }

    pub(super) fn release_open(&mut self, open: Open<F>) {
        release_open(&mut self.fs, open);
    }

    /// Closes every handle (shutdown, a new stream).
    pub(super) fn close_handles(&mut self) {
        let fs = &mut self.fs;
        self.handles.clear(&mut |open| release_open(fs, open));
    }

    /// Aborts every session; with a message, each gets `ok: false`.
    pub(super) fn abort_all(&mut self, message: Option<&str>) {
        while let Some(session) = self.sessions.pop() {
            let id = session.id();
            self.close(session);
            if let Some(message) = message {
                self.push(id, &FsResponse::<[FsEntryInfo<'_>; 0]>::err(message));
            }
        }
    }
}

/// A `List` response's entries, read from the filesystem on each visit.
pub(super) struct ListSource<'x, F> {
    fs: RefCell<&'x mut F>,
    dir: &'x str,
    count: usize,
    wall: Option<(u64, u64)>,
    current: bool,
}

/// A child's path as Rust's `Path::join` makes it (what the reference's
/// `read_dir` entries carry): the directory as sent, a `/` unless it ends
/// with one, the name.
pub(super) fn join<'p>(full: &'p mut String<{ MAX_PATH_LEN + MAX_NAME_LEN + 1 }>, dir: &str, name: &str) -> &'p str {
    full.clear();
    let _ = full.push_str(dir);
    if !dir.ends_with('/') {
        let _ = full.push('/');
    }
    let _ = full.push_str(name);
    full.as_str()
}

impl<F: Filesystem> EntrySource for ListSource<'_, F> {
    fn count(&self) -> usize {
        self.count
    }

    fn for_each_entry(&self, f: &mut dyn FnMut(&FsEntryInfo<'_>)) {
        let mut fs = self.fs.borrow_mut();
        let mut n = 0usize;
        let mut full = String::<{ MAX_PATH_LEN + MAX_NAME_LEN + 1 }>::new();
        let _ = fs.list(self.dir, &mut |name, m| {
            // Never more entries than counted: the array head says `count`.
            if n == self.count {
                return;
            }
            n += 1;
            f(&entry_info(join(&mut full, self.dir, name), m, self.wall, self.current));
        });
    }
}

/// A `ReadDir` batch, taken from the directory once and held by name.
pub(super) struct BatchSource<'x> {
    dir: &'x str,
    batch: &'x [(String<MAX_NAME_LEN>, Metadata)],
    wall: Option<(u64, u64)>,
}

impl EntrySource for BatchSource<'_> {
    fn count(&self) -> usize {
        self.batch.len()
    }

    fn for_each_entry(&self, f: &mut dyn FnMut(&FsEntryInfo<'_>)) {
        let mut full = String::<{ MAX_PATH_LEN + MAX_NAME_LEN + 1 }>::new();
        for (name, m) in self.batch {
            f(&entry_info(join(&mut full, self.dir, name), m, self.wall, true));
        }
    }
}

/// Unix seconds of a time. `wall` is the last clock sync (monotonic ns,
/// Unix ns): a monotonic time (a change before any sync) is unknown until
/// then.
pub(super) fn unix_seconds(t: Mtime, wall: Option<(u64, u64)>) -> Option<i64> {
    match t {
        Mtime::Unknown => None,
        Mtime::Unix(secs) => Some(secs),
        Mtime::Monotonic(ns) => wall.and_then(|(sync_mono, sync_unix)| {
            let unix_ns = i128::from(sync_unix) + i128::from(ns) - i128::from(sync_mono);
            i64::try_from(unix_ns.div_euclid(1_000_000_000)).ok()
        }),
    }
}

/// The wire form of an entry's metadata: 9 fields for the current
/// dialect, the seed-era 5 otherwise.
pub(super) fn entry_info<'p>(path: &'p str, m: &Metadata, wall: Option<(u64, u64)>, current: bool) -> FsEntryInfo<'p> {
    let kind: FsEntryKind<'p> = m.kind.map(|never| match never {});
    let modified = unix_seconds(m.modified, wall);
    let extra =
        current.then(|| EntryExtra { uid: m.uid, gid: m.gid, atime: unix_seconds(m.accessed, wall), mtime: modified });
    FsEntryInfo { path, kind, size: m.size, mode: m.mode, modified, extra }
}

/// The owner a `user` field names: `None` is root (as the reference); a
/// numeric `uid[:gid]` (gid defaults to uid) or `root`. The guest has no
/// user database, so any other name is refused.
pub(super) fn parse_user(user: Option<&str>) -> Result<Owner, ()> {
    let Some(user) = user else { return Ok(Owner::ROOT) };
    let (u, g) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    // Decimal digits only (a small parser: this runs in the guest).
    let id = |s: &str| -> Result<u32, ()> {
        if s == "root" {
            return Ok(0);
        }
        if s.is_empty() {
            return Err(());
        }
        s.bytes().try_fold(0u32, |n, b| match b {
            b'0'..=b'9' => n.checked_mul(10).and_then(|n| n.checked_add(u32::from(b - b'0'))).ok_or(()),
            _ => Err(()),
        })
    };
    let uid = id(u)?;
    let gid = match g {
        Some(g) => id(g)?,
        None => uid,
    };
    Ok(Owner { uid, gid })
}

pub(super) fn set_attrs(a: &FsSetAttrs) -> SetAttrs {
    SetAttrs { size: a.size, mode: a.mode, uid: a.uid, gid: a.gid, atime: a.atime, mtime: a.mtime }
}

pub(super) fn release_open<F: Filesystem>(fs: &mut F, open: Open<F>) {
    match open {
        Open::File(file) => fs.close(file),
        Open::Dir(dir) => fs.close_dir(dir),
    }
}

/// A handle write that got another byte count than it announced.
pub(super) struct LenMismatch {
    expected: u64,
    got: u64,
    /// Found at the empty chunk (else when a chunk went past `expected`).
    at_end: bool,
}

/// The reference's texts (without an op prefix).
impl core::fmt::Display for LenMismatch {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self.at_end {
            true => write!(f, "write length mismatch: expected {}, wrote {}", self.expected, self.got),
            false => write!(f, "write length mismatch: expected {}, received at least {}", self.expected, self.got),
        }
    }
}

/// Why a handle write ended early.
pub(super) enum WriteFailure {
    Fs(FsError),
    Len(LenMismatch),
}

impl From<LenMismatch> for WriteFailure {
    fn from(m: LenMismatch) -> Self {
        WriteFailure::Len(m)
    }
}
