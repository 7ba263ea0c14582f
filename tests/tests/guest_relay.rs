//! The relay as a security boundary, end to end against the real guest:
//! hostile local clients on one `picosandbox run`-style relay socket try to
//! read, cancel, stall and starve a well-behaved client.
//!
//! QEMU boots are serialized (one guest at a time).

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use host_sync::relay::{CLIENT_QUEUE_BYTES, FULL_GREETING, RELAY_QUEUE_BYTES};
use host_sync::{Client, ClientOptions, Sandbox, SandboxConfig};
use wire::{Body, ClockSync, CoreErrorKind, FsOp, FsRequest, Message, Payload, RelayClientDisconnected};

/// The big file the hostile clients read: many chunks, more than one
/// client queue.
const BIG: u64 = 48 << 20;

fn one_qemu() -> MutexGuard<'static, ()> {
    static QEMU: Mutex<()> = Mutex::new(());
    QEMU.lock().unwrap_or_else(|e| e.into_inner())
}

fn start() -> Sandbox {
    let mut config = SandboxConfig::new(tests::guest::elf_path());
    config.memory_mib = 256;
    config.relay = true;
    Sandbox::start(config).expect("the guest boots")
}

fn socket(sandbox: &Sandbox) -> &Path {
    sandbox.relay_socket().expect("a relay socket")
}

/// A raw relay connection, as a hostile client holds one.
struct Raw {
    stream: UnixStream,
    start: u32,
}

impl Raw {
    /// Connects and reads the greeting; `None` if the relay is full.
    fn connect(socket: &Path) -> Option<Raw> {
        let mut stream = UnixStream::connect(socket).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut range = [0u8; 8];
        if stream.read_exact(&mut range).is_err() || range == FULL_GREETING {
            return None;
        }
        let start = u32::from_be_bytes(range[..4].try_into().unwrap());
        let mut raw = Raw { stream, start };
        assert!(matches!(Message::decode_bytes(&raw.frame()).unwrap().body, Body::Ready(_)));
        Some(raw)
    }

    fn send<P: Payload>(&mut self, id: u32, payload: &P) {
        self.stream.write_all(&host_sync::proto::frame(id, payload)).unwrap();
    }

    /// The next whole frame.
    fn frame(&mut self) -> Vec<u8> {
        let mut prefix = [0u8; 4];
        self.stream.read_exact(&mut prefix).unwrap();
        let mut frame = prefix.to_vec();
        frame.resize(4 + u32::from_be_bytes(prefix) as usize, 0);
        self.stream.read_exact(&mut frame[4..]).unwrap();
        frame
    }
}

fn id_of(frame: &[u8]) -> u32 {
    wire::Frame::parse(frame).unwrap().id
}

fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Two big reads that are never read: the relay must not wait for them.
fn stall(socket: &Path) -> Raw {
    let mut staller = Raw::connect(socket).expect("a slot");
    let id = staller.start;
    staller.send(id, &FsRequest { bulk: None, op: FsOp::Read { path: "/secret.bin" } });
    staller.send(id + 1, &FsRequest { bulk: None, op: FsOp::Read { path: "/secret.bin" } });
    staller
}

fn secret(sandbox: &Sandbox) {
    sandbox.fs().write_from("/secret.bin", &mut std::io::repeat(0xAA).take(BIG)).unwrap();
    sandbox.fs().write("/public.txt", "public").unwrap();
}

/// Clients that keep connecting, opening big reads and never reading,
/// until `stop`: the relay's pipeline is always under pressure.
fn stallers(socket: &Path, n: usize, stop: &AtomicBool) {
    std::thread::scope(|scope| {
        for _ in 0..n {
            scope.spawn(|| {
                while !stop.load(Ordering::Relaxed) {
                    let Some(mut raw) = Raw::connect(socket) else {
                        std::thread::sleep(Duration::from_millis(5));
                        continue;
                    };
                    let id = raw.start;
                    raw.send(id, &FsRequest { bulk: None, op: FsOp::Read { path: "/secret.bin" } });
                    raw.send(id + 1, &FsRequest { bulk: None, op: FsOp::Read { path: "/secret.bin" } });
                    // Never read; a write fails once the relay has cut us off.
                    let mut next = id + 2;
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(Duration::from_millis(10));
                        let ping = host_sync::proto::frame(
                            next,
                            &FsRequest { bulk: None, op: FsOp::Stat { path: "/", follow_symlink: None } },
                        );
                        if raw.stream.write_all(&ping).is_err() {
                            break;
                        }
                        next += 1;
                    }
                }
            });
        }
    });
}

#[test]
fn a_reused_slot_never_receives_the_old_clients_frames() {
    let _qemu = one_qemu();
    let sandbox = start();
    secret(&sandbox);
    let socket = socket(&sandbox).to_path_buf();
    let stop = AtomicBool::new(false);
    std::thread::scope(|scope| {
        scope.spawn(|| stallers(&socket, 2, &stop));
        for round in 0..3 {
            // OLD reads the secret, takes one chunk, and leaves mid-read.
            let mut old = Raw::connect(&socket).expect("a slot");
            let old_id = old.start;
            old.send(old_id, &FsRequest { bulk: None, op: FsOp::Read { path: "/secret.bin" } });
            assert_eq!(id_of(&old.frame()), old_id);
            drop(old);
            // NEW connects until it is given OLD's slot (other slots it gets
            // meanwhile are kept, so they are not handed out again), then
            // reads the public file on the same first id.
            let deadline = Instant::now() + Duration::from_secs(60);
            let mut others = Vec::new();
            let mut new = loop {
                assert!(Instant::now() < deadline, "round {round}: the freed slot never came back");
                match Raw::connect(&socket) {
                    Some(raw) if raw.start == old_id => break raw,
                    Some(raw) => others.push(raw),
                    None => std::thread::sleep(Duration::from_millis(10)),
                }
            };
            new.send(new.start, &FsRequest { bulk: None, op: FsOp::Read { path: "/public.txt" } });
            let mut data = Vec::new();
            loop {
                let frame = new.frame();
                assert_eq!(id_of(&frame), new.start, "round {round}: a frame for an id this client never opened");
                match Message::decode_bytes(&frame).unwrap().body {
                    Body::FsData(d) => data.extend_from_slice(d.data),
                    Body::FsResponse(r) => {
                        assert!(r.ok, "{:?}", r.error);
                        break;
                    }
                    other => panic!("{other:?}"),
                }
            }
            assert_eq!(data, b"public", "round {round}: the new client got another client's file data");
        }
        stop.store(true, Ordering::Relaxed);
    });
}

#[test]
fn forged_host_messages_from_a_client_change_nothing() {
    let _qemu = one_qemu();
    let sandbox = start();
    secret(&sandbox);
    let socket = socket(&sandbox).to_path_buf();
    let before = sandbox.fs().stat("/public.txt").unwrap().modified;
    // The victim: a big read and a write held open, on its own connection.
    let victim = Client::connect(&socket).unwrap();
    let (go, wait) = mpsc::channel::<()>();
    let writer = {
        let victim = victim.clone();
        std::thread::spawn(move || {
            let mut input = Gate { wait, sent: false };
            victim.fs().write_from("/victim.txt", &mut input)
        })
    };
    let reader = {
        let victim = victim.clone();
        std::thread::spawn(move || victim.fs().read_to("/secret.bin", &mut std::io::sink()))
    };
    std::thread::sleep(Duration::from_millis(200));
    // The attacker forges every host-only message, on its own ids and on 0.
    let mut attacker = Raw::connect(&socket).unwrap();
    let all = RelayClientDisconnected { id_start: 0, id_end_exclusive: u32::MAX };
    let id = attacker.start;
    attacker.send(id, &all);
    attacker.send(id + 1, &ClockSync { unix_time_nanos: 0 });
    attacker.send(id + 2, &wire::InitAck);
    // Pausing everyone's read data would stall the victim's read forever.
    let pause_all = wire::RelayFlow { id_start: 0, id_end_exclusive: u32::MAX, paused: true };
    attacker.send(id + 3, &pause_all);
    attacker.send(0, &all);
    attacker.send(0, &ClockSync { unix_time_nanos: 0 });
    attacker.send(0, &pause_all);
    // The relay answers the id-0 frames itself, the guest the others: in
    // any order, each with core.error.
    let mut answered = Vec::new();
    for _ in 0..7 {
        let answer = attacker.frame();
        answered.push(id_of(&answer));
        match Message::decode_bytes(&answer).unwrap().body {
            Body::Error(e) => assert_eq!(e.kind, CoreErrorKind::InvalidSession, "{}", e.message),
            other => panic!("{other:?}"),
        }
    }
    answered.sort_unstable();
    assert_eq!(answered, [0, 0, 0, id, id + 1, id + 2, id + 3]);
    go.send(()).unwrap();
    assert_eq!(reader.join().unwrap().unwrap(), BIG, "the victim's read ran to its end");
    assert_eq!(writer.join().unwrap().unwrap(), 6, "the victim's write survived");
    assert_eq!(victim.fs().read("/victim.txt").unwrap(), b"victim");
    assert_eq!(sandbox.fs().stat("/public.txt").unwrap().modified, before, "file times were not re-dated");
    assert!(before.is_some_and(|t| t > 1_600_000_000));
}

/// Input that yields "victim" once `wait` fires.
struct Gate {
    wait: mpsc::Receiver<()>,
    sent: bool,
}

impl Read for Gate {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.sent {
            return Ok(0);
        }
        let _ = self.wait.recv();
        self.sent = true;
        buf[..6].copy_from_slice(b"victim");
        Ok(6)
    }
}

#[test]
fn clients_that_never_read_do_not_stall_the_others() {
    let _qemu = one_qemu();
    let sandbox = start();
    secret(&sandbox);
    let socket = socket(&sandbox).to_path_buf();
    let relay = sandbox.relay().unwrap();
    // A short call timeout: a client held up behind a staller (the relay
    // once waited 10 s for each) fails instead of waiting.
    let options = ClientOptions { call_timeout: Duration::from_secs(5), ..ClientOptions::default() };
    let good = Client::over_relay(UnixStream::connect(&socket).unwrap(), options).unwrap();
    let stallers: Vec<Raw> = (0..4).map(|_| stall(&socket)).collect();
    for _ in 0..20 {
        good.fs().stat("/public.txt").expect("a stat while four clients stall");
        assert!(relay.queued_bytes() <= RELAY_QUEUE_BYTES);
    }
    // A big read of the good client's own runs to its end meanwhile.
    assert_eq!(good.fs().read_to("/secret.bin", &mut std::io::sink()).unwrap(), BIG);
    // The stallers hold at most their bound each, and nobody waits for them.
    wait_until("the stallers to be paused", Duration::from_secs(30), || {
        relay.queued_bytes() >= 4 * CLIENT_QUEUE_BYTES / 2
    });
    assert!(relay.queued_bytes() <= RELAY_QUEUE_BYTES);
    for _ in 0..10 {
        good.fs().stat("/public.txt").unwrap();
    }
    drop(stallers);
    wait_until("the stallers' slots to drain", Duration::from_secs(30), || {
        relay.clients() == 2 && relay.draining() == 0
    });
    assert_eq!(relay.queued_bytes(), 0);
}

/// Output that takes its time: a busy process writing to a slow disk.
struct Slow {
    written: u64,
}

impl Write for Slow {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = buf.len().min(256 << 10);
        std::thread::sleep(Duration::from_millis(2));
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_slow_reader_is_slowed_down_not_cut_off() {
    let _qemu = one_qemu();
    let sandbox = start();
    secret(&sandbox);
    let socket = socket(&sandbox).to_path_buf();
    let relay = sandbox.relay().unwrap();
    // The client's own buffering is small, so the lag reaches the relay.
    let options = ClientOptions { mailbox_bytes: wire::MAX_FRAME_BYTES, ..ClientOptions::default() };
    let slow = Client::over_relay(UnixStream::connect(&socket).unwrap(), options).unwrap();
    let other = Client::connect(&socket).unwrap();
    let reader = std::thread::spawn(move || {
        let mut out = Slow { written: 0 };
        let n = slow.fs().read_to("/secret.bin", &mut out);
        (n, out.written)
    });
    let mut stats = 0;
    while !reader.is_finished() {
        other.fs().stat("/public.txt").unwrap();
        assert!(relay.queued_bytes() <= CLIENT_QUEUE_BYTES + RELAY_QUEUE_BYTES / 8);
        stats += 1;
    }
    let (n, written) = reader.join().unwrap();
    assert_eq!(n.expect("the slow read completes"), BIG);
    assert_eq!(written, BIG);
    assert!(stats > 0);
    assert_eq!(relay.stats().evicted, 0, "nobody was cut off");
}

#[test]
fn a_session_hog_cannot_starve_the_others() {
    let _qemu = one_qemu();
    let sandbox = start();
    let socket = socket(&sandbox).to_path_buf();
    let mut hog = Raw::connect(&socket).unwrap();
    for n in 0..300 {
        let path = format!("/hog/{n}");
        hog.send(hog.start + n, &FsRequest { bulk: None, op: FsOp::Write { path: &path, mode: None } });
    }
    // Everything past its share is refused at once, naming the bound.
    let refused = 300 - agent_core::MAX_SESSIONS_PER_CLIENT;
    for _ in 0..refused {
        let answer = hog.frame();
        match Message::decode_bytes(&answer).unwrap().body {
            Body::FsResponse(r) => {
                assert!(!r.ok);
                assert!(r.error.unwrap().contains("too many sessions for one client"), "{:?}", r.error);
            }
            other => panic!("{other:?}"),
        }
    }
    // Other clients read and write as usual.
    let others: Vec<Client> = (0..3).map(|_| Client::connect(&socket).unwrap()).collect();
    for (i, c) in others.iter().enumerate() {
        for n in 0..10 {
            let p = format!("/c{i}/{n}");
            c.fs().write(&p, p.as_bytes()).unwrap();
            assert_eq!(c.fs().read(&p).unwrap(), p.as_bytes());
        }
    }
    // The hog's writes end when it leaves; nothing it staged is visible.
    drop(hog);
    wait_until("the hog's slot to drain", Duration::from_secs(30), || sandbox.relay().unwrap().draining() == 0);
    assert!(!sandbox.fs().exists("/hog/0").unwrap(), "an unfinished write left a file");
}

#[test]
fn client_shutdown_can_be_forbidden_and_the_host_still_stops_the_guest() {
    let _qemu = one_qemu();
    let mut config = SandboxConfig::new(tests::guest::elf_path());
    config.memory_mib = 64;
    config.relay = true;
    config.relay_options.client_shutdown = false;
    let sandbox = Sandbox::start(config).expect("the guest boots");
    let mut raw = Raw::connect(socket(&sandbox)).unwrap();
    raw.send(0, &wire::Shutdown);
    let answer = raw.frame();
    assert_eq!(id_of(&answer), 0);
    match Message::decode_bytes(&answer).unwrap().body {
        Body::Error(e) => {
            assert!(e.message.contains("core.shutdown from relay clients is turned off"), "{}", e.message)
        }
        other => panic!("{other:?}"),
    }
    let client = Client::connect(socket(&sandbox)).unwrap();
    assert!(client.shutdown().is_ok(), "sending is fine; the relay answers");
    client.ping().expect("the guest is still up");
    sandbox.fs().stat("/").unwrap();
    let status = sandbox.shutdown(Duration::from_secs(10)).expect("the host's own shutdown goes through");
    assert!(status.success(), "{status:?}");
}

#[test]
fn a_paused_client_that_stops_reading_is_cut_off_and_its_sessions_go() {
    let _qemu = one_qemu();
    let mut config = SandboxConfig::new(tests::guest::elf_path());
    config.memory_mib = 256;
    config.relay = true;
    config.relay_options.paused_client_timeout_ns = 1_000_000_000;
    let sandbox = Sandbox::start(config).expect("the guest boots");
    secret(&sandbox);
    let relay = sandbox.relay().unwrap();
    let staller = stall(socket(&sandbox));
    wait_until("the staller to be cut off", Duration::from_secs(30), || relay.stats().evicted == 1);
    wait_until("its slot to drain", Duration::from_secs(30), || relay.draining() == 0 && relay.clients() == 1);
    assert_eq!(relay.queued_bytes(), 0);
    drop(staller);
    // Its sessions are gone from the guest: a client can take a full share.
    let c = Client::connect(socket(&sandbox)).unwrap();
    assert_eq!(c.fs().read("/public.txt").unwrap(), b"public");
}
