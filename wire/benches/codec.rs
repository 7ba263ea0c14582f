//! `wire` against the reference encoding (serde + ciborium, as microsandbox
//! frames messages) on the same messages, in the same run.
//!
//! Each row times full frames: encode = payload + envelope + frame header
//! into a buffer; decode = frame header + envelope + typed payload. Batches
//! of the two implementations alternate and each figure is the median of
//! several batches, so the ratio is robust to machine noise.
//!
//! Output: a table on stdout, and `bench/wire.md` + `bench/wire.json` under
//! `$BENCH_OUT_DIR` (default: the workspace `target/`).

use std::hint::black_box;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use wire::{
    Body, EntryExtra, FsData, FsEntryInfo, FsEntryKind, FsOp, FsOpenOptions, FsRequest, FsResponse, FsResponseData,
    Message, Ready,
};

/// The reference's envelope: `t` is serialized as a plain string.
#[derive(Serialize, Deserialize)]
struct RefMessage {
    v: u8,
    t: String,
    #[serde(with = "serde_bytes")]
    p: Vec<u8>,
}

#[derive(Serialize, Deserialize, PartialEq, Debug)]
struct RefFsRequest {
    op: RefFsOp,
}

#[derive(Serialize, Deserialize, PartialEq, Debug)]
#[allow(dead_code)]
enum RefFsOp {
    Stat { path: String },
    List { path: String },
}

/// The current dialect's requests (the reference's `bulk` is omitted when
/// `None`, so a struct with `op` alone encodes the same).
#[derive(Serialize, Deserialize, PartialEq, Debug)]
struct RefCurrentRequest {
    op: RefCurrentOp,
}

#[derive(Serialize, Deserialize, PartialEq, Debug, Default)]
struct RefOpenOptions {
    read: bool,
    write: bool,
    append: bool,
    create: bool,
    truncate: bool,
    create_new: bool,
    mode: Option<u32>,
    #[serde(default)]
    user: Option<String>,
}

#[derive(Serialize, Deserialize, PartialEq, Debug)]
#[allow(dead_code)]
enum RefCurrentOp {
    OpenFile { path: String, options: RefOpenOptions },
    Read { handle: u64, offset: u64, len: Option<u64> },
}

/// The current dialect's 9-field entry.
#[derive(Serialize, Deserialize, PartialEq, Debug, Clone)]
struct RefEntry9 {
    path: String,
    kind: String,
    size: u64,
    mode: u32,
    modified: Option<i64>,
    uid: u32,
    gid: u32,
    atime: Option<i64>,
    mtime: Option<i64>,
}

#[derive(Serialize, Deserialize, PartialEq, Debug)]
#[allow(dead_code)]
enum RefData9 {
    Stat(RefEntry9),
}

#[derive(Serialize, Deserialize, PartialEq, Debug)]
struct RefResponse9 {
    ok: bool,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    data: Option<RefData9>,
}

#[derive(Serialize, Deserialize, PartialEq, Debug, Clone)]
struct RefEntry {
    path: String,
    kind: String,
    size: u64,
    mode: u32,
    modified: Option<i64>,
}

#[derive(Serialize, Deserialize, PartialEq, Debug)]
#[allow(dead_code)]
enum RefFsResponseData {
    Stat(RefEntry),
    List(Vec<RefEntry>),
}

#[derive(Serialize, Deserialize, PartialEq, Debug)]
struct RefFsResponse {
    ok: bool,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    data: Option<RefFsResponseData>,
}

#[derive(Serialize, Deserialize, PartialEq, Debug)]
struct RefReady {
    boot_time_ns: u64,
    init_time_ns: u64,
    ready_time_ns: u64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    agent_version: String,
}

#[derive(Serialize, Deserialize, PartialEq, Debug)]
struct RefFsData {
    #[serde(with = "serde_bytes")]
    data: Vec<u8>,
}

/// The reference framing: payload CBOR, then the envelope CBOR, then the header.
fn ref_encode<T: Serialize>(t: &str, id: u32, flags: u8, payload: &T) -> Vec<u8> {
    let mut p = Vec::new();
    ciborium::into_writer(payload, &mut p).unwrap();
    let mut body = Vec::new();
    ciborium::into_writer(&RefMessage { v: 5, t: t.to_string(), p }, &mut body).unwrap();
    let mut frame = Vec::with_capacity(9 + body.len());
    frame.extend_from_slice(&((body.len() + 5) as u32).to_be_bytes());
    frame.extend_from_slice(&id.to_be_bytes());
    frame.push(flags);
    frame.extend_from_slice(&body);
    frame
}

/// The reference decoding: header, envelope, then the typed payload.
fn ref_decode<T: for<'de> Deserialize<'de>>(frame: &[u8]) -> (u32, T) {
    let len = u32::from_be_bytes(frame[..4].try_into().unwrap()) as usize;
    let id = u32::from_be_bytes(frame[4..8].try_into().unwrap());
    let msg: RefMessage = ciborium::from_reader(&frame[9..4 + len]).unwrap();
    (id, ciborium::from_reader(&msg.p[..]).unwrap())
}

/// Median nanoseconds per call of `a` and `b`, measured in alternating batches.
fn measure(mut a: impl FnMut(), mut b: impl FnMut()) -> (f64, f64) {
    const BATCHES: usize = 9;
    const BATCH_TIME: Duration = Duration::from_millis(25);
    let calibrate = |f: &mut dyn FnMut()| {
        let mut n = 1u64;
        loop {
            let start = Instant::now();
            for _ in 0..n {
                f();
            }
            if start.elapsed() >= BATCH_TIME / 4 {
                return n * 4;
            }
            n *= 2;
        }
    };
    let (na, nb) = (calibrate(&mut a), calibrate(&mut b));
    let mut ta = Vec::with_capacity(BATCHES);
    let mut tb = Vec::with_capacity(BATCHES);
    for _ in 0..BATCHES {
        let start = Instant::now();
        for _ in 0..na {
            a();
        }
        ta.push(start.elapsed().as_nanos() as f64 / na as f64);
        let start = Instant::now();
        for _ in 0..nb {
            b();
        }
        tb.push(start.elapsed().as_nanos() as f64 / nb as f64);
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    (median(&mut ta), median(&mut tb))
}

struct Row {
    message: &'static str,
    op: &'static str,
    wire_ns: f64,
    reference_ns: f64,
}

fn entries(n: usize) -> Vec<RefEntry> {
    (0..n)
        .map(|i| RefEntry {
            path: format!("/data/entry_{i:03}.bin"),
            kind: "file".into(),
            size: 1024 * i as u64,
            mode: 0o100644,
            modified: Some(1_600_000_000 + i as i64),
        })
        .collect()
}

/// Benchmarks one message both ways; asserts both sides produce the same bytes.
fn bench_case<T>(
    rows: &mut Vec<Row>,
    message: &'static str,
    wire_frame: impl Fn(&mut [u8]) -> usize,
    ref_frame: impl Fn() -> Vec<u8>,
) where
    T: for<'de> Deserialize<'de>,
{
    let mut buf = vec![0u8; wire::MAX_FRAME_BYTES];
    let n = wire_frame(&mut buf);
    let reference = ref_frame();
    assert_eq!(&buf[..n], &reference[..], "{message}: wire and reference bytes differ");
    let (wire_ns, reference_ns) = measure(
        || {
            black_box(wire_frame(black_box(&mut buf)));
        },
        || {
            black_box(ref_frame());
        },
    );
    rows.push(Row { message, op: "encode", wire_ns, reference_ns });
    let frame = reference;
    let (wire_ns, reference_ns) = measure(
        || {
            let m = Message::decode_bytes(black_box(&frame)).unwrap();
            black_box(&m);
        },
        || {
            black_box(ref_decode::<T>(black_box(&frame)));
        },
    );
    rows.push(Row { message, op: "decode", wire_ns, reference_ns });
}

fn main() {
    // `cargo bench` passes `--bench`; any other argument filters nothing here.
    let mut rows = Vec::new();

    bench_case::<RefFsRequest>(
        &mut rows,
        "Stat request",
        |buf| {
            wire::encode_frame(
                1,
                &FsRequest { bulk: None, op: FsOp::Stat { path: black_box("/etc/hosts"), follow_symlink: None } },
                buf,
            )
            .unwrap()
        },
        || ref_encode("core.fs.request", 1, 2, &RefFsRequest { op: RefFsOp::Stat { path: "/etc/hosts".into() } }),
    );

    bench_case::<RefResponse9>(
        &mut rows,
        "Stat answer, 9 fields",
        |buf| {
            let info = FsEntryInfo {
                path: black_box("/tmp/data/report.csv"),
                kind: FsEntryKind::File,
                size: black_box(123_456),
                mode: 0o100644,
                modified: Some(1_700_000_123),
                extra: Some(EntryExtra {
                    uid: 1000,
                    gid: 1000,
                    atime: Some(1_700_000_100),
                    mtime: Some(1_700_000_123),
                }),
            };
            let response =
                FsResponse::<[FsEntryInfo<'_>; 0]> { ok: true, error: None, data: Some(FsResponseData::Stat(info)) };
            wire::encode_frame(2, &response, buf).unwrap()
        },
        || {
            let info = RefEntry9 {
                path: "/tmp/data/report.csv".into(),
                kind: "file".into(),
                size: 123_456,
                mode: 0o100644,
                modified: Some(1_700_000_123),
                uid: 1000,
                gid: 1000,
                atime: Some(1_700_000_100),
                mtime: Some(1_700_000_123),
            };
            ref_encode(
                "core.fs.response",
                2,
                1,
                &RefResponse9 { ok: true, error: None, data: Some(RefData9::Stat(info)) },
            )
        },
    );

    bench_case::<RefCurrentRequest>(
        &mut rows,
        "OpenFile request",
        |buf| {
            let options = FsOpenOptions { read: true, write: true, create: true, ..FsOpenOptions::default() };
            let op = FsOp::OpenFile { path: black_box("/tmp/data/report.csv"), options };
            wire::encode_frame(1, &FsRequest::new(op), buf).unwrap()
        },
        || {
            let options = RefOpenOptions { read: true, write: true, create: true, ..RefOpenOptions::default() };
            let op = RefCurrentOp::OpenFile { path: "/tmp/data/report.csv".into(), options };
            ref_encode("core.fs.request", 1, 2, &RefCurrentRequest { op })
        },
    );

    bench_case::<RefCurrentRequest>(
        &mut rows,
        "Read{handle} request",
        |buf| {
            let op = FsOp::ReadHandle { handle: black_box(65_537), offset: black_box(3 << 20), len: Some(1 << 20) };
            wire::encode_frame(1, &FsRequest::new(op), buf).unwrap()
        },
        || {
            let op = RefCurrentOp::Read { handle: 65_537, offset: 3 << 20, len: Some(1 << 20) };
            ref_encode("core.fs.request", 1, 2, &RefCurrentRequest { op })
        },
    );

    let list = entries(50);
    let wire_list: Vec<FsEntryInfo<'_>> = list
        .iter()
        .map(|e| FsEntryInfo {
            path: &e.path,
            kind: FsEntryKind::from_wire(&e.kind),
            size: e.size,
            mode: e.mode,
            modified: e.modified,
            extra: None,
        })
        .collect();
    bench_case::<RefFsResponse>(
        &mut rows,
        "List response, 50 entries",
        |buf| {
            let entries = black_box(&wire_list[..]);
            let response = FsResponse { ok: true, error: None, data: Some(FsResponseData::List(entries)) };
            wire::encode_frame(2, &response, buf).unwrap()
        },
        || {
            let response = RefFsResponse { ok: true, error: None, data: Some(RefFsResponseData::List(list.clone())) };
            ref_encode("core.fs.response", 2, 1, &response)
        },
    );

    bench_case::<RefReady>(
        &mut rows,
        "Ready",
        |buf| {
            let ready = Ready {
                boot_time_ns: black_box(1_234_567),
                init_time_ns: black_box(890_123),
                ready_time_ns: black_box(2_345_678_901),
                agent_version: black_box("0.1.0"),
            };
            wire::encode_frame(0, &ready, buf).unwrap()
        },
        || {
            let ready = RefReady {
                boot_time_ns: 1_234_567,
                init_time_ns: 890_123,
                ready_time_ns: 2_345_678_901,
                agent_version: "0.1.0".into(),
            };
            ref_encode("core.ready", 0, 0, &ready)
        },
    );

    for (name, len) in [("FsData 1 KiB", 1024usize), ("FsData 3 MiB", wire::FS_CHUNK_SIZE)] {
        let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        let data_ref = &data;
        bench_case::<RefFsData>(
            &mut rows,
            name,
            move |buf| wire::encode_frame(3, &FsData { data: black_box(data_ref) }, buf).unwrap(),
            move || ref_encode("core.fs.data", 3, 0, &RefFsData { data: data_ref.clone() }),
        );
    }

    // Sanity: a decoded 3 MiB chunk borrows the frame (no copy).
    {
        let data = vec![7u8; wire::FS_CHUNK_SIZE];
        let mut buf = vec![0u8; wire::MAX_FRAME_BYTES];
        let n = wire::encode_frame(3, &FsData { data: &data }, &mut buf).unwrap();
        let m = Message::decode_bytes(&buf[..n]).unwrap();
        let Body::FsData(d) = m.body else { panic!("not FsData") };
        assert!(buf.as_ptr_range().contains(&d.data.as_ptr()), "decoded data is not borrowed");
    }

    report(&rows);
}

fn report(rows: &[Row]) {
    let mut md =
        String::from("| message | op | wire ns/op | serde+ciborium ns/op | speed-up |\n|---|---|---:|---:|---:|\n");
    for r in rows {
        md += &format!(
            "| {} | {} | {:.1} | {:.1} | {:.1}x |\n",
            r.message,
            r.op,
            r.wire_ns,
            r.reference_ns,
            r.reference_ns / r.wire_ns
        );
    }
    let decode = |m: &str| rows.iter().find(|r| r.message == m && r.op == "decode").map(|r| r.wire_ns);
    let (small, big) = (decode("FsData 1 KiB").unwrap(), decode("FsData 3 MiB").unwrap());
    md += &format!("\nwire decode, 3 MiB FsData / 1 KiB FsData: {:.2}x the time\n", big / small);
    print!("{md}");

    let json_rows: Vec<String> = rows
        .iter()
        .map(|r| {
            format!(
                "{{\"message\":\"{}\",\"op\":\"{}\",\"wire_ns\":{:.1},\"reference_ns\":{:.1},\"speedup\":{:.2}}}",
                r.message,
                r.op,
                r.wire_ns,
                r.reference_ns,
                r.reference_ns / r.wire_ns
            )
        })
        .collect();
    let json = format!("{{\"rows\":[{}],\"decode_3mib_over_1kib\":{:.3}}}\n", json_rows.join(","), big / small);
    let dir = std::env::var_os("BENCH_OUT_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("wire.md"), &md).unwrap();
    std::fs::write(dir.join("wire.json"), json).unwrap();
    println!("saved {}", dir.join("wire.md").display());
}
