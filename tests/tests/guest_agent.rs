//! End to end against the real guest under QEMU (TCG here, KVM where a
//! hardware module is loaded): the whole API over the virtio console, big
//! transfers with checksums and bounded host memory, sharing through the
//! relay, bad input, and the VM dying under a transfer.
//!
//! QEMU boots are serialized (one guest at a time) so timing checks do not
//! compete for the machine's cores.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use host_sync::{Client, Error, Sandbox, SandboxConfig};
use sha2::{Digest, Sha256};
use tests::bench::mb_per_s;
use tests::guest::{self, PeakRss};

fn one_qemu() -> MutexGuard<'static, ()> {
    static QEMU: Mutex<()> = Mutex::new(());
    QEMU.lock().unwrap_or_else(|e| e.into_inner())
}

fn config(memory_mib: u32) -> SandboxConfig {
    let mut config = SandboxConfig::new(guest::elf_path());
    config.memory_mib = memory_mib;
    config
}

fn start(memory_mib: u32) -> Sandbox {
    Sandbox::start(config(memory_mib)).expect("the guest boots")
}

/// Deterministic bytes, generated as they are read (nothing held in memory).
struct Pattern {
    left: u64,
    state: u64,
}

impl Pattern {
    fn new(len: u64, seed: u64) -> Pattern {
        Pattern { left: len, state: seed | 1 }
    }
}

impl Read for Pattern {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = (buf.len() as u64).min(self.left) as usize;
        for chunk in buf[..n].chunks_mut(8) {
            self.state ^= self.state << 13;
            self.state ^= self.state >> 7;
            self.state ^= self.state << 17;
            chunk.copy_from_slice(&self.state.to_le_bytes()[..chunk.len()]);
        }
        self.left -= n as u64;
        Ok(n)
    }
}

/// Hashes what it is given without keeping it.
#[derive(Default)]
struct HashSink(Sha256, u64);

impl Write for HashSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        self.1 += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn pattern_hash(len: u64, seed: u64) -> Vec<u8> {
    let mut sink = HashSink::default();
    std::io::copy(&mut Pattern::new(len, seed), &mut sink).unwrap();
    sink.0.finalize().to_vec()
}

fn rss_kib(pid: u32) -> u64 {
    guest::rss_kib(pid).unwrap_or(0)
}

#[test]
fn every_api_call_works_on_the_real_guest() {
    let _q = one_qemu();
    let sandbox = start(128);
    let t = sandbox.boot_times();
    println!("spawn -> ready {:?}; guest ready at {} us", t.spawn_to_ready, t.guest_ready_ns / 1000);
    assert!(t.guest_ready_ns > 0 && t.guest_boot_ns <= t.guest_ready_ns);
    let fs = sandbox.fs();
    fs.mkdir("/e2e/dir").unwrap();
    fs.write("/e2e/a.txt", "hello guest").unwrap();
    assert_eq!(fs.read_to_string("/e2e/a.txt").unwrap(), "hello guest");
    let st = fs.stat("/e2e/a.txt").unwrap();
    assert_eq!((st.size, st.permissions()), (11, 0o644));
    assert!(st.modified.is_some_and(|m| m > 1_600_000_000), "clock.sync reached the guest: {st:?}");
    assert!(fs.exists("/e2e/dir").unwrap() && !fs.exists("/e2e/none").unwrap());
    let mut listing: Vec<String> = fs.list("/e2e").unwrap().into_iter().map(|e| e.path).collect();
    listing.sort();
    assert_eq!(listing, ["/e2e/a.txt", "/e2e/dir"]);
    fs.copy("/e2e/a.txt", "/e2e/dir/b.txt").unwrap();
    fs.rename("/e2e/dir/b.txt", "/moved/b.txt").unwrap();
    assert_eq!(fs.read("/moved/b.txt").unwrap(), b"hello guest");
    let mut out = Vec::new();
    assert_eq!(fs.read_to("/moved/b.txt", &mut out).unwrap(), 11);
    fs.remove("/moved/b.txt").unwrap();
    fs.remove_dir_all("/moved").unwrap();
    assert!(matches!(fs.stat("/moved"), Err(ref e) if e.is_not_found()));
    // Host files in and out.
    let dir = std::env::temp_dir().join(format!("guest-agent-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("in"), vec![5u8; 300_000]).unwrap();
    assert_eq!(fs.copy_from_host(dir.join("in"), "/e2e/in").unwrap(), 300_000);
    assert_eq!(fs.copy_to_host("/e2e/in", dir.join("out")).unwrap(), 300_000);
    assert_eq!(std::fs::read(dir.join("out")).unwrap(), vec![5u8; 300_000]);
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(sandbox.ping().unwrap() < Duration::from_secs(5));
    let status = sandbox.shutdown(Duration::from_secs(10)).unwrap();
    assert!(status.success(), "QEMU exited with {status}");
}

#[test]
fn eight_threads_share_one_sandbox() {
    let _q = one_qemu();
    let sandbox = Arc::new(start(128));
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let sandbox = Arc::clone(&sandbox);
            std::thread::spawn(move || {
                let fs = sandbox.fs();
                for i in 0..12 {
                    let path = format!("/t{t}/f{i}");
                    let data = vec![(t * 16 + i) as u8; 20_000 + i * 3_000];
                    fs.write(&path, &data).unwrap();
                    assert_eq!(fs.read(&path).unwrap(), data);
                }
                assert_eq!(fs.list(&format!("/t{t}")).unwrap().len(), 12);
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

#[test]
fn a_64_mib_file_round_trips_with_its_checksum() {
    let _q = one_qemu();
    let sandbox = start(192);
    let len = 64 << 20;
    let start = Instant::now();
    sandbox.fs().write_from("/big", &mut Pattern::new(len, 7)).unwrap();
    let wrote = start.elapsed();
    let mut sink = HashSink::default();
    let start = Instant::now();
    assert_eq!(sandbox.fs().read_to("/big", &mut sink).unwrap(), len);
    let read = start.elapsed();
    assert_eq!(sink.0.finalize().to_vec(), pattern_hash(len, 7));
    println!("64 MiB: write {:.1} MB/s, read {:.1} MB/s", mb_per_s(len, wrote), mb_per_s(len, read));
}

#[test]
fn a_256_mib_transfer_keeps_host_memory_bounded() {
    let _q = one_qemu();
    let sandbox = start(400);
    let len = 256 << 20;
    let me = std::process::id();
    let before = rss_kib(me);
    let peak = PeakRss::start(&[me]);
    let start = Instant::now();
    assert_eq!(sandbox.fs().write_from("/huge", &mut Pattern::new(len, 11)).unwrap(), len);
    let wrote = start.elapsed();
    let mut sink = HashSink::default();
    let start = Instant::now();
    assert_eq!(sandbox.fs().read_to("/huge", &mut sink).unwrap(), len);
    let read = start.elapsed();
    let grew = peak.finish()[0].saturating_sub(before);
    assert_eq!(sink.0.finalize().to_vec(), pattern_hash(len, 11));
    println!(
        "256 MiB: write {:.1} MB/s, read {:.1} MB/s; host RSS grew by {} KiB; QEMU RSS {} MiB",
        mb_per_s(len, wrote),
        mb_per_s(len, read),
        grew,
        rss_kib(sandbox.pid()) / 1024
    );
    assert!(grew < 64 * 1024, "host RSS grew by {grew} KiB for a 256 MiB transfer");
}

#[test]
fn two_relay_clients_and_a_disconnect_mid_read() {
    let _q = one_qemu();
    let mut config = config(128);
    config.relay = true;
    let sandbox = Sandbox::start(config).unwrap();
    let socket = sandbox.relay_socket().unwrap().to_path_buf();
    let a = Client::connect(&socket).unwrap();
    a.fs().write_from("/shared", &mut Pattern::new(16 << 20, 3)).unwrap();
    // B starts reading, takes one chunk, and leaves.
    let mut b = UnixStream::connect(&socket).unwrap();
    let mut greeting = [0u8; 8];
    b.read_exact(&mut greeting).unwrap();
    let start_id = u32::from_be_bytes(greeting[..4].try_into().unwrap());
    let mut prefix = [0u8; 4];
    b.read_exact(&mut prefix).unwrap();
    let mut ready = vec![0u8; u32::from_be_bytes(prefix) as usize];
    b.read_exact(&mut ready).unwrap();
    let read =
        host_sync::proto::frame(start_id, &wire::FsRequest { bulk: None, op: wire::FsOp::Read { path: "/shared" } });
    b.write_all(&read).unwrap();
    b.read_exact(&mut prefix).unwrap();
    drop(b);
    // A is unaffected, and a third client works.
    let mut sink = HashSink::default();
    assert_eq!(a.fs().read_to("/shared", &mut sink).unwrap(), 16 << 20);
    assert_eq!(sink.0.finalize().to_vec(), pattern_hash(16 << 20, 3));
    let c = Client::connect(&socket).unwrap();
    c.fs().write("/from-c", "c").unwrap();
    assert_eq!(a.fs().read("/from-c").unwrap(), b"c");
    assert!(sandbox.relay().unwrap().clients() >= 3);
}

#[test]
fn a_malformed_frame_is_answered_and_the_next_request_served() {
    let _q = one_qemu();
    let mut guest = guest::Guest::boot("").expect("boot");
    let ready = host_sync::sandbox::handshake(&mut guest.agent, Instant::now() + Duration::from_secs(20)).unwrap();
    let mut stream = guest.agent.try_clone().unwrap();
    // A frame whose body is not CBOR, on id 9.
    stream.write_all(&[0, 0, 0, 8, 0, 0, 0, 9, 0, 0xff, 0xfe, 0xfd]).unwrap();
    let mut prefix = [0u8; 4];
    stream.read_exact(&mut prefix).unwrap();
    let mut rest = vec![0u8; u32::from_be_bytes(prefix) as usize];
    stream.read_exact(&mut rest).unwrap();
    let frame = [&prefix[..], &rest].concat();
    match wire::Message::decode_bytes(&frame).unwrap() {
        wire::Message { id: 9, body: wire::Body::Error(e), .. } => {
            assert_eq!(e.kind, wire::CoreErrorKind::MalformedMessage);
        }
        other => panic!("expected core.error on id 9, got {other:?}"),
    }
    let client = Client::over_guest(stream, ready, host_sync::ClientOptions::default()).unwrap();
    client.fs().write("/after", "still serving").unwrap();
    assert_eq!(client.fs().read("/after").unwrap(), b"still serving");
}

#[test]
fn killing_qemu_mid_transfer_fails_the_call_within_a_second() {
    let _q = one_qemu();
    let sandbox = Arc::new(start(400));
    let s = Arc::clone(&sandbox);
    let writer = std::thread::spawn(move || {
        let r = s.fs().write_from("/doomed", &mut Pattern::new(256 << 20, 5));
        (r, Instant::now())
    });
    std::thread::sleep(Duration::from_millis(700));
    let killed = Instant::now();
    sandbox.kill();
    let (result, failed_at) = writer.join().unwrap();
    let took = failed_at.duration_since(killed);
    println!("the call failed {took:?} after the kill: {result:?}");
    assert!(matches!(result, Err(Error::VmExited(_))), "{result:?}");
    assert!(took < Duration::from_secs(1), "took {took:?}");
    assert!(matches!(sandbox.fs().stat("/"), Err(Error::VmExited(_))));
}

#[test]
fn a_guest_that_never_answers_hits_the_boot_timeout() {
    let _q = one_qemu();
    let mut config = config(64);
    config.cmdline = "mode=echo".into();
    config.boot_timeout = Duration::from_secs(3);
    let start = Instant::now();
    let result = Sandbox::start(config);
    let took = start.elapsed();
    assert!(matches!(result, Err(Error::Boot(ref m)) if m.contains("core.ready")), "{:?}", result.err());
    assert!(took >= Duration::from_secs(3) && took < Duration::from_secs(10), "took {took:?}");
}

#[test]
fn an_idle_agent_costs_almost_no_host_cpu() {
    let _q = one_qemu();
    let sandbox = start(64);
    std::thread::sleep(Duration::from_millis(300));
    let share = guest::cpu_share(sandbox.pid(), Duration::from_secs(2)).unwrap();
    println!("idle agent: {:.2}% of a core", share * 100.0);
    assert!(share < 0.05, "idle QEMU used {:.1}% of a core", share * 100.0);
}
