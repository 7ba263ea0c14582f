//! One input frame at a time: the envelope, the handshake, host-only
//! control messages, pings, shutdown, and the hand-off of filesystem
//! requests and write data to the sessions.

use super::*;

impl<F: Filesystem> Core<'_, F> {
    pub(super) fn push_event(&mut self, event: Event) {
        // Events are few (clock syncs overwrite each other, power-off is
        // final); drop the oldest on overflow.
        if self.events.is_full() {
            self.events.pop_front();
        }
        let _ = self.events.push_back(event);
    }

    pub(super) fn send_init(&mut self, attempts: u32, now_ns: u64) {
        let init = InitResolved { default_user: self.config.default_user };
        self.push(0, &init);
        self.state = State::AwaitingAck { attempts, deadline_ns: now_ns.saturating_add(self.config.ack_timeout_ns) };
    }

    /// Queues a frame. The reserve policy guarantees room; a frame that
    /// still does not fit is dropped and counted rather than panicking.
    pub(super) fn push<P: wire::Payload + ?Sized>(&mut self, id: u32, payload: &P) -> bool {
        match self.out.push(id, payload) {
            Ok(()) => true,
            Err(e) => {
                log::error!("outbox full, frame dropped: {}", defmt_display(&e));
                debug_assert!(false, "outbox overflow: {e}");
                false
            }
        }
    }

    /// When a corrupt stream quiet since `quiet_since_ns` counts as fresh.
    pub(super) fn resync_deadline(&self, quiet_since_ns: u64) -> u64 {
        match self.config.planted {
            // The planted defect: no quiet period, so the rest of a corrupt
            // stream still in flight is taken for a fresh one.
            PlantedBug::ResyncWithoutQuiet => quiet_since_ns,
            _ => quiet_since_ns.saturating_add(RESYNC_QUIET_NS),
        }
    }

    pub(super) fn stream_error(&mut self, e: &wire::Error, now_ns: u64) {
        log::error!("frame-level error, awaiting a fresh stream: {}", defmt_display(e));
        self.stats.stream_errors += 1;
        self.state = State::AwaitingStream { quiet_since_ns: now_ns };
        self.abort_all(None);
    }

    /// Sends `core.error` on `id` unless the peer is older than
    /// generation 5 (whose agents treat errors as fatal instead).
    pub(super) fn core_error(
        &mut self,
        id: u32,
        v: Option<u8>,
        kind: CoreErrorKind,
        message: &str,
        offending: Option<&str>,
    ) {
        let generation = v.or(self.peer_generation).unwrap_or(wire::PROTOCOL_GENERATION);
        if generation < CORE_ERROR_GENERATION {
            self.stats.core_errors_suppressed += 1;
            return;
        }
        if self.push(id, &CoreError { kind, message, offending_type: offending }) {
            self.stats.core_errors_sent += 1;
        }
    }

    pub(super) fn respond(&mut self, id: u32, result: Result<(), (&str, FsError)>) {
        match result {
            Ok(()) => {
                self.push(id, &FsResponse::<[FsEntryInfo<'_>; 0]>::ok());
            }
            Err((op, e)) => self.respond_error(id, op, &e),
        }
    }

    /// Answers `ok: false` with `"{op}: {cause}"`: a filesystem error prints
    /// as Linux `io::Error` does (`No such file or directory (os error 2)`).
    pub(super) fn respond_error(&mut self, id: u32, op: &str, cause: &dyn core::fmt::Display) {
        let mut message = String::<MESSAGE_MAX>::new();
        if write!(message, "{op}: {cause}").is_err() {
            // Cut at a character boundary rather than drop the answer.
            let mut end = message.len();
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            message.truncate(end);
        }
        self.push(id, &FsResponse::<[FsEntryInfo<'_>; 0]>::err(&message));
    }

    /// Answers a handle number and the data shape of a current op.
    pub(super) fn respond_data(&mut self, id: u32, data: FsResponseData<'_, [FsEntryInfo<'_>; 0]>) {
        self.push(id, &FsResponse { ok: true, error: None, data: Some(data) });
    }

    pub(super) fn handle(&mut self, frame: wire::Frame<'_>, now_ns: u64, paths: &mut [PathBuf; 2]) -> Handled {
        let envelope = match Envelope::decode(frame.body) {
            Ok(envelope) => envelope,
            Err(e) => {
                let hints = wire::hints(frame.body);
                let kind = match e.kind {
                    wire::ErrorKind::UnknownMessageType => CoreErrorKind::UnsupportedMessageType,
                    _ => CoreErrorKind::MalformedMessage,
                };
                let mut message = String::<MESSAGE_MAX>::new();
                let _ = write!(message, "decode message for id {}: {e}", frame.id);
                self.core_error(frame.id, hints.v, kind, &message, hints.t);
                return Handled::Done;
            }
        };
        let t = envelope.t;
        if frame.flags != t.flags() {
            let mut message = String::<MESSAGE_MAX>::new();
            let _ = write!(message, "invalid flags for {t}: got {}, expected {}", frame.flags.bits(), t.flags().bits());
            self.core_error(frame.id, Some(envelope.v), CoreErrorKind::InvalidFlags, &message, Some(t.as_str()));
            return Handled::Done;
        }
        let body = match decode_inbound(t, envelope.p) {
            Ok(Some(body)) => body,
            Ok(None) => {
                // A type only the guest sends: its payload is never decoded
                // here (which also keeps those decoders out of the guest).
                let mut message = String::<MESSAGE_MAX>::new();
                let _ = write!(message, "{t} is sent by the guest, not to it");
                self.core_error(
                    frame.id,
                    Some(envelope.v),
                    CoreErrorKind::UnsupportedMessageType,
                    &message,
                    Some(t.as_str()),
                );
                return Handled::Done;
            }
            Err(e) => {
                let mut message = String::<MESSAGE_MAX>::new();
                let _ = write!(message, "decode payload for {t}: {e}");
                self.core_error(frame.id, Some(envelope.v), CoreErrorKind::InvalidPayload, &message, Some(t.as_str()));
                return Handled::Done;
            }
        };
        self.dispatch(frame.id, envelope.v, body, now_ns, paths)
    }

    pub(super) fn dispatch(
        &mut self,
        id: u32,
        v: u8,
        body: Body<'_>,
        now_ns: u64,
        paths: &mut [PathBuf; 2],
    ) -> Handled {
        let host_only = self.config.planted != PlantedBug::HostMessagesAnyId;
        if id != 0
            && host_only
            && matches!(
                body,
                Body::InitAck(_) | Body::ClockSync(_) | Body::RelayClientDisconnected(_) | Body::RelayFlow(_)
            )
        {
            let t = body.message_type();
            let mut message = String::<MESSAGE_MAX>::new();
            let _ = write!(message, "{t} is taken from the host only, on id 0 (got id {id})");
            log::warning!("ignored {} on id {}", t.as_str(), id);
            self.core_error(id, Some(v), CoreErrorKind::InvalidSession, &message, Some(t.as_str()));
            return Handled::Done;
        }
        match body {
            Body::InitAck(_) => {
                if let State::AwaitingAck { .. } = self.state {
                    self.peer_generation = Some(v);
                    self.state = State::Ready;
                    let ready = Ready {
                        boot_time_ns: self.config.boot_time_ns,
                        init_time_ns: self.start_ns.saturating_sub(self.config.boot_time_ns),
                        ready_time_ns: now_ns,
                        agent_version: self.config.agent_version,
                    };
                    // Nothing logged here: a guest's first log line costs
                    // its encoder's first run, which core.ready should not
                    // wait for (`Agent::peer_generation` tells it later).
                    self.push(0, &ready);
                }
            }
            Body::ClockSync(sync) => {
                self.wall = Some((now_ns, sync.unix_time_nanos));
                self.fs.set_wall_clock(now_ns, i64::try_from(sync.unix_time_nanos).unwrap_or(i64::MAX));
                self.push_event(Event::SetWallClock(sync.unix_time_nanos));
            }
            Body::RelayClientDisconnected(range) => self.drop_range(range),
            Body::RelayFlow(flow) => self.flow(flow),
            Body::FsRequest(request) => {
                // A raw-bulk offer (generation 8) is declined as a peer
                // without bulk support declines it: the op is served over
                // `core.fs.data` and no `core.bulk.accepted` is ever sent.
                self.now_ns = now_ns;
                return self.fs_request(id, v, request.op, now_ns, paths);
            }
            Body::FsData(data) => self.fs_data(id, data.data, now_ns),
            Body::Shutdown(_) => self.shutdown(),
            Body::Ping(_) => {
                self.push(id, &Pong);
            }
            Body::Error(e) => {
                log::warning!("core.error from the host on id {}: {}", id, defmt_display(&e.message));
            }
            Body::InitResolved(_) | Body::Ready(_) | Body::FsResponse(_) | Body::Pong(_) => {
                let t = body.message_type();
                let mut message = String::<MESSAGE_MAX>::new();
                let _ = write!(message, "{t} is sent by the guest, not to it");
                self.core_error(id, Some(v), CoreErrorKind::UnsupportedMessageType, &message, Some(t.as_str()));
            }
        }
        Handled::Done
    }

    pub(super) fn shutdown(&mut self) {
        log::info!("core.shutdown: aborting {} sessions", self.sessions.len());
        self.abort_all(Some("shutdown: session aborted"));
        self.close_handles();
        self.state = State::ShuttingDown;
        self.check_drained();
    }

    /// Asks for power-off once a shutdown has sent everything.
    pub(super) fn check_drained(&mut self) {
        if self.state == State::ShuttingDown && self.out.is_empty() && self.chunk.is_none() {
            self.state = State::Off;
            self.push_event(Event::PowerOff(PowerOff::Shutdown));
        }
    }
}

/// Decodes the payload of a type the host sends to the guest; `None` for
/// the types only the guest sends.
pub(super) fn decode_inbound(t: MessageType, p: &[u8]) -> Result<Option<Body<'_>>, wire::Error> {
    use wire::DecodePayload;
    Ok(Some(match t {
        MessageType::InitAck => Body::InitAck(DecodePayload::decode(p)?),
        MessageType::ClockSync => Body::ClockSync(DecodePayload::decode(p)?),
        MessageType::Error => Body::Error(DecodePayload::decode(p)?),
        MessageType::RelayClientDisconnected => Body::RelayClientDisconnected(DecodePayload::decode(p)?),
        MessageType::FsRequest => Body::FsRequest(DecodePayload::decode(p)?),
        MessageType::FsData => Body::FsData(DecodePayload::decode(p)?),
        MessageType::Shutdown => Body::Shutdown(DecodePayload::decode(p)?),
        MessageType::Ping => Body::Ping(DecodePayload::decode(p)?),
        MessageType::RelayFlow => Body::RelayFlow(DecodePayload::decode(p)?),
        MessageType::InitResolved | MessageType::Ready | MessageType::FsResponse | MessageType::Pong => {
            return Ok(None);
        }
    }))
}
