//! An in-process agent over a ramfs, driven frame by frame: the test
//! double of a host. Time is a counter the test advances.

use agent_core::handles::HandleTable;
use agent_core::ramfs::Ramfs;
use agent_core::{Agent, Config, Event, Filesystem, State};
use wire::{
    Body, ClockSync, FsData, FsOp, FsRequest, FsResponse, FsResponseData, InitAck, Message, MessageType, Payload,
    encode_frame,
};

/// Default arena for test filesystems.
pub const TEST_ARENA: usize = 64 * 1024 * 1024;

/// A decoded frame the agent sent, kept with its bytes.
#[derive(Clone)]
pub struct Sent {
    /// The whole frame.
    pub bytes: Vec<u8>,
}

impl Sent {
    /// The decoded message (the agent only sends valid frames).
    pub fn message(&self) -> Message<'_> {
        Message::decode_bytes(&self.bytes).expect("the agent sent an undecodable frame")
    }

    /// The frame's header (the agent only sends whole frames).
    fn frame(&self) -> wire::Frame<'_> {
        wire::Frame::parse(&self.bytes).expect("the agent sent a malformed frame")
    }

    /// The correlation id.
    pub fn id(&self) -> u32 {
        self.frame().id
    }

    /// The message type.
    pub fn message_type(&self) -> MessageType {
        self.message().message_type()
    }

    /// Whether the frame carries TERMINAL.
    pub fn is_terminal(&self) -> bool {
        self.frame().flags.contains(wire::Flags::TERMINAL)
    }
}

impl std::fmt::Debug for Sent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match Message::decode_bytes(&self.bytes) {
            Ok(Message { id, body: Body::FsData(d), .. }) => write!(f, "#{id} FsData({} bytes)", d.data.len()),
            Ok(m) => write!(f, "#{} {:?}", m.id, m.body),
            Err(e) => write!(f, "undecodable: {e}"),
        }
    }
}

/// A test host attached to an in-process agent.
pub struct Host<F: Filesystem + 'static = Ramfs<'static>> {
    /// The agent under test.
    pub agent: Agent<'static, F>,
    /// The current time in monotonic ns.
    pub now: u64,
    /// Events the agent emitted.
    pub events: Vec<Event>,
    pending: Vec<u8>,
}

impl Host {
    /// An agent over a fresh ramfs of `arena` bytes, not started.
    pub fn new(arena: usize, config: Config) -> Host {
        let arena: &'static mut [u8] = Box::leak(vec![0u8; arena].into_boxed_slice());
        Host::with_fs(Ramfs::new(arena, 0).expect("arena large enough"), config)
    }

    /// An agent that has completed the handshake and a clock sync at Unix
    /// time 1_700_000_000 s.
    pub fn ready() -> Host {
        let mut host = Host::new(TEST_ARENA, Config::default());
        host.handshake();
        host
    }
}

impl<F: Filesystem + 'static> Host<F> {
    /// An agent serving `fs`, not started. Its buffers are leaked: fine for
    /// a test process.
    pub fn with_fs(fs: F, config: Config) -> Host<F> {
        let rx: &'static mut [u8] = Box::leak(vec![0u8; agent_core::MIN_RX_BUFFER].into_boxed_slice());
        let tx: &'static mut [u8] = Box::leak(vec![0u8; 1 << 20].into_boxed_slice());
        let handles: &'static mut HandleTable<F> = Box::leak(Box::new(HandleTable::EMPTY));
        let agent = Agent::with_handles(fs, rx, tx, handles.memory(), config).expect("buffers large enough");
        Host { agent, now: 0, events: Vec::new(), pending: Vec::new() }
    }

    /// Runs the handshake: `init.resolved` -> `init.ack` -> `ready` -> `clock.sync`.
    pub fn handshake(&mut self) {
        self.agent.start(self.now);
        let init = self.take();
        assert_eq!(init.len(), 1);
        assert_eq!(init[0].message_type(), MessageType::InitResolved);
        self.send(0, &InitAck);
        let ready = self.take();
        assert_eq!(ready.len(), 1);
        assert_eq!(ready[0].message_type(), MessageType::Ready);
        assert_eq!(self.agent.state(), State::Ready);
        self.send(0, &ClockSync { unix_time_nanos: 1_700_000_000_000_000_000 });
    }

    /// Encodes and delivers one frame.
    pub fn send<P: Payload>(&mut self, id: u32, payload: &P) {
        let mut frame = vec![0u8; wire::frame_len(payload)];
        encode_frame(id, payload, &mut frame).unwrap();
        self.deliver(&frame);
    }

    /// Encodes and delivers one frame written as a peer of generation `v`.
    pub fn send_as<P: Payload>(&mut self, id: u32, v: u8, payload: &P) {
        let mut frame = vec![0u8; wire::frame_len(payload) + 1];
        let n = wire::encode_frame_as(id, P::TYPE.flags(), v, payload, &mut frame).unwrap();
        self.deliver(&frame[..n]);
    }

    /// Delivers raw bytes (all of them, pumping output when input stalls).
    pub fn deliver(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            let n = self.agent.receive(bytes, self.now);
            bytes = &bytes[n..];
            if n == 0 {
                self.drain_into_pending();
            }
        }
        while let Some(event) = self.agent.poll_event() {
            self.events.push(event);
        }
    }

    fn drain_into_pending(&mut self) {
        while let Some(chunk) = self.agent.poll_transmit() {
            let n = chunk.len();
            self.pending.extend_from_slice(chunk);
            self.agent.transmitted(n, self.now);
        }
        while let Some(event) = self.agent.poll_event() {
            self.events.push(event);
        }
    }

    /// Moves one piece of output (what one `poll_transmit` returns) into
    /// the pending bytes; returns its length (0: nothing to send).
    pub fn take_piece(&mut self) -> usize {
        let Some(piece) = self.agent.poll_transmit() else { return 0 };
        let n = piece.len();
        self.pending.extend_from_slice(piece);
        self.agent.transmitted(n, self.now);
        n
    }

    /// Everything the agent sends now, as frames.
    pub fn take(&mut self) -> Vec<Sent> {
        self.drain_into_pending();
        let mut frames = Vec::new();
        while let wire::FrameStatus::Complete { consumed, .. } =
            wire::parse_frame(&self.pending).expect("the agent sent a bad frame header")
        {
            frames.push(Sent { bytes: self.pending.drain(..consumed).collect() });
        }
        frames
    }

    /// Sends a request and returns every frame the agent sent until the
    /// request's terminal frame (frames of other ids included).
    pub fn request(&mut self, id: u32, op: FsOp<'_>) -> Vec<Sent> {
        self.send(id, &FsRequest { op, bulk: None });
        self.until_terminal(id)
    }

    /// Collects frames until `id`'s terminal frame arrives.
    pub fn until_terminal(&mut self, id: u32) -> Vec<Sent> {
        self.until_all_terminal(&[id])
    }

    /// Collects frames until every id in `ids` got its terminal frame.
    pub fn until_all_terminal(&mut self, ids: &[u32]) -> Vec<Sent> {
        let mut all: Vec<Sent> = Vec::new();
        loop {
            let frames = self.take();
            let idle = frames.is_empty();
            all.extend(frames);
            if ids.iter().all(|&i| all.iter().any(|f| f.id() == i && f.is_terminal())) {
                return all;
            }
            assert!(!idle, "no terminal frame for one of {ids:?}; got {all:?}");
        }
    }

    /// A request that must succeed with no data.
    pub fn ok(&mut self, id: u32, op: FsOp<'_>) {
        let frames = self.request(id, op);
        let last = frames.last().unwrap();
        match last.message().body {
            Body::FsResponse(FsResponse { ok: true, error: None, data: None }) => {}
            other => panic!("{op:?} on #{id}: expected ok, got {other:?}"),
        }
    }

    /// A request that must fail; returns the error message.
    pub fn fails(&mut self, id: u32, op: FsOp<'_>) -> String {
        let frames = self.request(id, op);
        let last = frames.last().unwrap();
        match last.message().body {
            Body::FsResponse(FsResponse { ok: false, error: Some(e), .. }) => e.to_string(),
            other => panic!("{op:?} on #{id}: expected a failure, got {other:?}"),
        }
    }

    /// Writes `data` to `path` in chunks of `chunk` bytes; returns the
    /// first response (after a failure, later chunks each get "unknown
    /// write session").
    pub fn write(&mut self, id: u32, path: &str, mode: Option<u32>, data: &[u8], chunk: usize) -> Sent {
        self.send(id, &FsRequest { bulk: None, op: FsOp::Write { path, mode } });
        for piece in data.chunks(chunk.max(1)) {
            self.send(id, &FsData { data: piece });
        }
        self.send(id, &FsData { data: &[] });
        let frames = self.until_terminal(id);
        frames.into_iter().find(|f| f.id() == id && f.is_terminal()).unwrap()
    }

    /// Reads `path`: the data of every chunk, and the final response.
    pub fn read(&mut self, id: u32, path: &str) -> (Vec<u8>, Sent) {
        let frames = self.request(id, FsOp::Read { path });
        let mut data = Vec::new();
        let mut last = None;
        for f in frames.into_iter().filter(|f| f.id() == id) {
            match f.message().body {
                Body::FsData(d) => data.extend_from_slice(d.data),
                Body::FsResponse(_) => last = Some(f.clone()),
                other => panic!("unexpected frame in a read: {other:?}"),
            }
        }
        (data, last.expect("read ended"))
    }

    /// Stats `path`: `Ok(info fields)` or the error message.
    pub fn stat(&mut self, id: u32, path: &str) -> Result<(String, String, u64, u32, Option<i64>), String> {
        let frames = self.request(id, FsOp::Stat { path, follow_symlink: None });
        match frames.last().unwrap().message().body {
            Body::FsResponse(FsResponse { ok: true, data: Some(FsResponseData::Stat(i)), .. }) => {
                Ok((i.path.to_string(), i.kind.as_str().to_string(), i.size, i.mode, i.modified))
            }
            Body::FsResponse(FsResponse { ok: false, error: Some(e), .. }) => Err(e.to_string()),
            other => panic!("stat: {other:?}"),
        }
    }

    /// Lists `path`: sorted `(path, kind, size)` or the error message.
    pub fn list(&mut self, id: u32, path: &str) -> Result<Vec<(String, String, u64)>, String> {
        let frames = self.request(id, FsOp::List { path });
        match frames.last().unwrap().message().body {
            Body::FsResponse(FsResponse { ok: true, data: Some(FsResponseData::List(list)), .. }) => {
                let mut v: Vec<_> =
                    list.iter().map(|e| (e.path.to_string(), e.kind.as_str().to_string(), e.size)).collect();
                v.sort();
                Ok(v)
            }
            Body::FsResponse(FsResponse { ok: false, error: Some(e), .. }) => Err(e.to_string()),
            other => panic!("list: {other:?}"),
        }
    }
}
