//! End to end: the real 0.7.13 agent client (`microsandbox-agent-client`)
//! drives every current filesystem op against the real guest through
//! `picosandbox run`'s relay, and its answers are what Linux gives.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use microsandbox_agent_client::{AgentClient, EncodedMessage, TypedMessage};
use microsandbox_protocol::fs::{
    FsData, FsEntryInfo, FsOp, FsOpenOptions, FsRequest, FsResponse, FsResponseData, FsSetAttrs,
};
use microsandbox_protocol::message::MessageType;
use tests::guest;

/// Bytes written through a handle: more than one 3 MiB chunk each way.
const BIG: usize = 5 * 1024 * 1024 + 123;

/// The `picosandbox` binary next to the test binaries (built if missing).
fn picosandbox() -> PathBuf {
    let status = Command::new(env!("CARGO"))
        .args(["build", "-q", "-p", "host-sync", "--bin", "picosandbox"])
        .status()
        .expect("cargo runs");
    assert!(status.success(), "building picosandbox failed");
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    target.join("debug/picosandbox")
}

/// `picosandbox run`, stopped with Ctrl-C (SIGINT) when dropped.
struct Run {
    child: Child,
    socket: PathBuf,
}

impl Run {
    fn start() -> Run {
        let mut child = Command::new(picosandbox())
            .args(["run", "--memory", "256", "--guest"])
            .arg(guest::elf_path())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("picosandbox starts");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let socket = loop {
            match lines.next() {
                Some(Ok(line)) => {
                    if let Some(path) = line.strip_prefix("PICOSANDBOX_SOCKET=") {
                        break PathBuf::from(path);
                    }
                }
                other => panic!("picosandbox run printed no socket: {other:?}"),
            }
        };
        Run { child, socket }
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-INT", &self.child.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn request(op: FsOp) -> FsRequest {
    FsRequest { op, bulk: None }
}

async fn call(client: &AgentClient, op: FsOp) -> FsResponse {
    let reply = client.request(TypedMessage::new(MessageType::FsRequest, request(op))).await.expect("answered");
    assert_eq!(reply.t, "core.fs.response");
    reply.payload::<FsResponse>().expect("the reference decodes the answer")
}

async fn ok(client: &AgentClient, op: FsOp) -> Option<FsResponseData> {
    let what = format!("{op:?}");
    let r = call(client, op).await;
    assert!(r.ok, "{what}: {:?}", r.error);
    r.data
}

async fn fails(client: &AgentClient, op: FsOp) -> String {
    let what = format!("{op:?}");
    let r = call(client, op).await;
    assert!(!r.ok, "{what} succeeded");
    r.error.expect("a failure says why")
}

async fn stat(client: &AgentClient, path: &str, follow_symlink: bool) -> FsEntryInfo {
    match ok(client, FsOp::Stat { path: path.into(), follow_symlink }).await {
        Some(FsResponseData::Stat(e)) => e,
        other => panic!("stat {path}: {other:?}"),
    }
}

async fn handle(client: &AgentClient, op: FsOp) -> u64 {
    match ok(client, op).await {
        Some(FsResponseData::Handle(h)) => h,
        other => panic!("expected a handle, got {other:?}"),
    }
}

async fn path_answer(client: &AgentClient, op: FsOp) -> String {
    match ok(client, op).await {
        Some(FsResponseData::Path(p)) => p,
        other => panic!("expected a path, got {other:?}"),
    }
}

/// `Read{handle}`: the chunks' sizes, the bytes and the terminal answer.
async fn read(client: &AgentClient, handle: u64, offset: u64, len: Option<u64>) -> (Vec<usize>, Vec<u8>, FsResponse) {
    let op = FsOp::Read { handle, offset, len };
    let mut stream = client.stream(TypedMessage::new(MessageType::FsRequest, request(op))).await.unwrap();
    let (mut sizes, mut data) = (Vec::new(), Vec::new());
    while let Some(message) = stream.recv().await.unwrap() {
        match message.t.as_str() {
            "core.fs.data" => {
                let chunk = message.payload::<FsData>().unwrap().data;
                sizes.push(chunk.len());
                data.extend_from_slice(&chunk);
            }
            "core.fs.response" => return (sizes, data, message.payload::<FsResponse>().unwrap()),
            other => panic!("unexpected {other} in a read"),
        }
    }
    panic!("the read ended without an answer");
}

/// `Write{handle}`: the chunks, an empty chunk, the answer.
async fn write(client: &AgentClient, handle: u64, offset: u64, len: Option<u64>, data: &[u8]) -> FsResponse {
    let op = FsOp::Write { handle, offset, len };
    let mut stream = client.stream(TypedMessage::new(MessageType::FsRequest, request(op))).await.unwrap();
    for chunk in data.chunks(1 << 20).chain([&[][..]]) {
        stream.send(TypedMessage::new(MessageType::FsData, FsData { data: chunk.to_vec() })).await.unwrap();
    }
    let message = stream.recv().await.unwrap().expect("an answer");
    assert_eq!(message.t, "core.fs.response");
    message.payload::<FsResponse>().unwrap()
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
}

async fn drive(socket: &PathBuf) {
    let client = AgentClient::connect_with(socket, |o| o.setup_timeout(Duration::from_secs(30))).await.unwrap();
    // The guest announces generation 5: the client gates ping/touch (6) and
    // bulk (8) off by itself, and sends fs requests (2) and core.error (5).
    assert_eq!(client.ready().negotiated_version, 5);
    assert!(client.ready().supports(MessageType::FsRequest));
    assert!(!client.ready().supports(MessageType::Ping));
    assert!(client.request(EncodedMessage::new(MessageType::Ping, vec![0xa0])).await.is_err());

    // The starting tree has /tmp, mode 1777, owned by root.
    let tmp = stat(&client, "/tmp", true).await;
    assert_eq!((tmp.kind.as_str(), tmp.mode, tmp.uid, tmp.gid), ("dir", 0o41777, 0, 0));

    ok(&client, FsOp::Mkdir { path: "/tmp/e2e/sub".into(), mode: Some(0o750), user: None }).await;
    assert_eq!(stat(&client, "/tmp/e2e/sub", false).await.mode, 0o40750);

    // A handle: write 5 MiB at an offset, read ranges back.
    let options = FsOpenOptions { read: true, write: true, create: true, ..FsOpenOptions::default() };
    let f = handle(&client, FsOp::OpenFile { path: "/tmp/e2e/f".into(), options }).await;
    let data = pattern(BIG);
    let w = write(&client, f, 0, Some(BIG as u64), &data).await;
    assert!(w.ok, "{:?}", w.error);
    let short = write(&client, f, 0, Some(10), b"abc").await;
    assert!(!short.ok, "a byte count other than announced fails");
    // Its bytes landed, as in the reference (which notices at the end).
    let mut data = data;
    data[..3].copy_from_slice(b"abc");
    let (sizes, back, end) = read(&client, f, 1000, Some(4 << 20)).await;
    assert!(end.ok && sizes.iter().all(|&n| n > 0), "{sizes:?}");
    assert!(back == data[1000..1000 + (4 << 20)], "the range read back differs");
    let (sizes, back, end) = read(&client, f, 0, None).await;
    assert!(end.ok && sizes.len() >= 2 && sizes.iter().all(|&n| n > 0), "{sizes:?}");
    assert!(back == data, "the file read back differs");
    let (sizes, _, end) = read(&client, f, BIG as u64, None).await;
    assert!(end.ok && sizes.is_empty(), "at EOF: ok and no chunk");
    match ok(&client, FsOp::FStat { handle: f }).await {
        Some(FsResponseData::Stat(e)) => {
            assert_eq!((e.path.as_str(), e.size, e.kind.as_str()), ("/tmp/e2e/f", BIG as u64, "file"))
        }
        other => panic!("{other:?}"),
    }
    ok(&client, FsOp::FSetStat { handle: f, attrs: FsSetAttrs { size: Some(10), ..FsSetAttrs::default() } }).await;
    assert_eq!(read(&client, f, 0, None).await.1, data[..10]);

    // Attributes by path.
    let attrs = FsSetAttrs { mode: Some(0o600), mtime: Some(1_234_567), atime: Some(7), ..FsSetAttrs::default() };
    ok(&client, FsOp::SetStat { path: "/tmp/e2e/f".into(), follow_symlink: true, attrs }).await;
    let f_stat = stat(&client, "/tmp/e2e/f", true).await;
    assert_eq!(
        (f_stat.mode, f_stat.modified, f_stat.mtime, f_stat.atime),
        (0o100600, Some(1_234_567), Some(1_234_567), Some(7))
    );

    // Links.
    ok(&client, FsOp::Symlink { target: "f".into(), link_path: "/tmp/e2e/l".into(), user: None }).await;
    assert_eq!(path_answer(&client, FsOp::ReadLink { path: "/tmp/e2e/l".into() }).await, "f");
    assert_eq!(stat(&client, "/tmp/e2e/l", false).await.kind, "symlink");
    assert_eq!(stat(&client, "/tmp/e2e/l", true).await.kind, "file");
    assert_eq!(path_answer(&client, FsOp::RealPath { path: "/tmp/e2e/./sub/../l".into() }).await, "/tmp/e2e/f");

    // Directories: a handle read in batches, and List.
    let d = handle(&client, FsOp::OpenDir { path: "/tmp/e2e".into() }).await;
    let mut names = Vec::new();
    loop {
        match ok(&client, FsOp::ReadDir { handle: d, limit: Some(1) }).await {
            Some(FsResponseData::List(batch)) if batch.is_empty() => break,
            Some(FsResponseData::List(batch)) => {
                assert_eq!(batch.len(), 1);
                names.extend(batch.into_iter().map(|e| e.path));
            }
            other => panic!("{other:?}"),
        }
    }
    names.sort();
    assert_eq!(names, ["/tmp/e2e/f", "/tmp/e2e/l", "/tmp/e2e/sub"]);
    ok(&client, FsOp::CloseHandle { handle: d }).await;
    match ok(&client, FsOp::List { path: "/tmp/e2e".into() }).await {
        Some(FsResponseData::List(entries)) => assert_eq!(entries.len(), 3),
        other => panic!("{other:?}"),
    }

    // Copy and Rename as std::fs: no parents made.
    ok(&client, FsOp::Copy { src: "/tmp/e2e/f".into(), dst: "/tmp/e2e/g".into() }).await;
    let missing = fails(&client, FsOp::Copy { src: "/tmp/e2e/f".into(), dst: "/tmp/e2e/no/g".into() }).await;
    assert!(missing.contains("No such file or directory (os error 2)"), "{missing}");
    ok(&client, FsOp::Rename { src: "/tmp/e2e/g".into(), dst: "/tmp/e2e/sub/g".into() }).await;

    // RemoveDir: `recursive: false` never removes a non-empty directory.
    let kept = fails(&client, FsOp::RemoveDir { path: "/tmp/e2e/sub".into(), recursive: false }).await;
    assert!(kept.contains("Directory not empty (os error 39)"), "{kept}");
    assert_eq!(stat(&client, "/tmp/e2e/sub/g", false).await.size, 10);
    ok(&client, FsOp::Remove { path: "/tmp/e2e/sub/g".into() }).await;
    ok(&client, FsOp::RemoveDir { path: "/tmp/e2e/sub".into(), recursive: false }).await;
    ok(&client, FsOp::Remove { path: "/tmp/e2e/l".into() }).await;

    // Another client cannot use this client's handle.
    let other = AgentClient::connect_with(socket, |o| o.setup_timeout(Duration::from_secs(30))).await.unwrap();
    let (sizes, _, end) = read(&other, f, 0, None).await;
    assert!(sizes.is_empty() && !end.ok, "another client read through a foreign handle");
    assert!(end.error.unwrap().contains("Bad file descriptor (os error 9)"));
    other.close().await;

    ok(&client, FsOp::CloseHandle { handle: f }).await;
    assert!(fails(&client, FsOp::CloseHandle { handle: f }).await.contains("Bad file descriptor"));
    ok(&client, FsOp::RemoveDir { path: "/tmp/e2e".into(), recursive: true }).await;
    let gone = call(&client, FsOp::Stat { path: "/tmp/e2e".into(), follow_symlink: false }).await;
    assert_eq!(gone.error.as_deref(), Some("stat: No such file or directory (os error 2)"));
    client.close().await;
}

#[test]
fn the_reference_client_drives_every_current_op_through_picosandbox_run() {
    let run = Run::start();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        tokio::time::timeout(Duration::from_secs(300), drive(&run.socket)).await.expect("the session finished in time");
    });
}
