//! Sessions in flight together: fairness, concurrent writes, disconnects
//! and snapshots.

use agent_core::Config;
use host_sync::relay::SLOT_STEP;
use tests::harness::{Host, Sent};
use wire::{Body, FsData, FsOp, FsRequest, FsResponse, FsResponseData, RelayClientDisconnected};

fn data_len(f: &Sent) -> Option<usize> {
    match f.message().body {
        Body::FsData(d) => Some(d.data.len()),
        _ => None,
    }
}

/// A host with a 96 MiB file at /big, read in 1 MiB chunks.
fn host_with_big_file(mib: usize) -> (Host, Vec<u8>) {
    let mut host = Host::new((mib + 8) << 20, Config { read_chunk_size: 1 << 20, ..Config::default() });
    host.handshake();
    let data: Vec<u8> = (0..mib << 20).map(|i| (i % 251) as u8).collect();
    host.write(1, "/big", None, &data, wire::FS_CHUNK_SIZE);
    (host, data)
}

/// Takes raw output from the agent until `frames` whole frames are out,
/// stopping on a frame boundary.
fn pull_frames(host: &mut Host, frames: usize) -> Vec<Sent> {
    let mut raw = Vec::new();
    loop {
        let piece = host.agent.poll_transmit().expect("more output").to_vec();
        host.agent.transmitted(piece.len(), host.now);
        raw.extend_from_slice(&piece);
        let mut out = Vec::new();
        let mut rest = &raw[..];
        while let Ok(wire::FrameStatus::Complete { consumed, .. }) = wire::parse_frame(rest) {
            out.push(Sent { bytes: rest[..consumed].to_vec() });
            rest = &rest[consumed..];
        }
        if out.len() >= frames && rest.is_empty() {
            return out;
        }
    }
}

#[test]
fn a_large_read_does_not_hold_back_a_later_stat() {
    let (mut host, data) = host_with_big_file(96);
    host.send(10, &FsRequest { bulk: None, op: FsOp::Read { path: "/big" } });
    let first = pull_frames(&mut host, 2);
    host.send(11, &FsRequest { bulk: None, op: FsOp::Stat { path: "/big", follow_symlink: None } });
    let rest = host.until_terminal(10);
    let stat_at = rest.iter().position(|f| f.id() == 11).expect("the stat was answered");
    let chunks_before = rest[..stat_at].iter().filter(|f| data_len(f).is_some()).count();
    assert!(chunks_before <= 1, "the stat waited for {chunks_before} chunks");
    assert!(matches!(
        rest[stat_at].message().body,
        Body::FsResponse(FsResponse { ok: true, data: Some(FsResponseData::Stat(_)), .. })
    ));
    let total: usize = first.iter().chain(rest.iter()).filter(|f| f.id() == 10).filter_map(data_len).sum();
    assert_eq!(total, data.len());
}

#[test]
fn two_reads_take_turns_chunk_by_chunk() {
    let (mut host, data) = host_with_big_file(8);
    host.send(20, &FsRequest { bulk: None, op: FsOp::Read { path: "/big" } });
    host.send(21, &FsRequest { bulk: None, op: FsOp::Read { path: "/big" } });
    let frames = host.until_all_terminal(&[20, 21]);
    let order: Vec<u32> = frames.iter().filter(|f| data_len(f).is_some()).map(Sent::id).collect();
    let expected: Vec<u32> = (0..8).flat_map(|_| [20, 21]).collect();
    assert_eq!(order, expected);
    for id in [20, 21] {
        let got: Vec<u8> = frames
            .iter()
            .filter(|f| f.id() == id)
            .filter_map(|f| match f.message().body {
                Body::FsData(d) => Some(d.data.to_vec()),
                _ => None,
            })
            .flatten()
            .collect();
        assert_eq!(got, data);
    }
}

#[test]
fn two_concurrent_writes_interleave_and_both_land() {
    let mut host = Host::ready();
    host.send(1, &FsRequest { bulk: None, op: FsOp::Write { path: "/a", mode: None } });
    host.send(2, &FsRequest { bulk: None, op: FsOp::Write { path: "/b", mode: Some(0o600) } });
    let a: Vec<u8> = (0..200_000u32).map(|i| i as u8).collect();
    let b: Vec<u8> = (0..300_000u32).map(|i| (i * 3) as u8).collect();
    for (ca, cb) in a.chunks(10_000).zip(b.chunks(15_000)) {
        host.send(1, &FsData { data: ca });
        host.send(2, &FsData { data: cb });
    }
    host.send(2, &FsData { data: &[] });
    host.send(1, &FsData { data: &[] });
    host.until_terminal(1);
    assert_eq!(host.read(3, "/a").0, a);
    assert_eq!(host.read(4, "/b").0, b);
}

#[test]
fn two_writes_to_one_path_the_last_end_of_stream_wins() {
    let mut host = Host::ready();
    host.send(1, &FsRequest { bulk: None, op: FsOp::Write { path: "/same", mode: None } });
    host.send(2, &FsRequest { bulk: None, op: FsOp::Write { path: "/same", mode: None } });
    host.send(1, &FsData { data: b"first" });
    host.send(2, &FsData { data: b"second" });
    host.send(2, &FsData { data: &[] });
    assert_eq!(host.read(3, "/same").0, b"second");
    host.send(1, &FsData { data: &[] });
    host.until_terminal(1);
    assert_eq!(host.read(4, "/same").0, b"first");
}

#[test]
fn a_disconnect_mid_read_stops_it_and_frees_everything() {
    let (mut host, _) = host_with_big_file(16);
    let baseline = host.agent.fs().usage();
    let id = SLOT_STEP + 5; // client slot 1
    host.send(id, &FsRequest { bulk: None, op: FsOp::Read { path: "/big" } });
    // Take part of the first chunk, then the relay reports the disconnect.
    let piece = host.agent.poll_transmit().unwrap().len().min(20);
    host.agent.transmitted(piece, host.now);
    host.send(0, &RelayClientDisconnected { id_start: SLOT_STEP, id_end_exclusive: 2 * SLOT_STEP });
    assert_eq!(host.agent.sessions(), 0);
    // The chunk already started is finished (a frame cannot be cut), then nothing more.
    let mut rest = Vec::new();
    while let Some(bytes) = host.agent.poll_transmit() {
        rest.extend_from_slice(bytes);
        let n = bytes.len();
        host.agent.transmitted(n, host.now);
    }
    assert_eq!(rest.len() + piece, wire::frame_len(&FsData { data: &vec![0; 1 << 20] }));
    assert_eq!(host.agent.fs().usage(), baseline, "the read snapshot was released");
    host.send(7, &wire::Ping);
    assert_eq!(host.take().len(), 1, "the agent still serves");
}

#[test]
fn an_id_whose_dropped_read_is_still_sending_is_not_reused_until_the_frame_ends() {
    let (mut host, _) = host_with_big_file(16);
    host.write(2, "/small", None, b"small file", wire::FS_CHUNK_SIZE);
    let baseline = host.agent.fs().usage();
    let id = SLOT_STEP + 5; // client slot 1
    host.send(id, &FsRequest { bulk: None, op: FsOp::Read { path: "/big" } });
    assert!(host.take_piece() > 0, "the first chunk started");
    host.send(0, &RelayClientDisconnected { id_start: SLOT_STEP, id_end_exclusive: 2 * SLOT_STEP });
    // A new client of the slot reuses the id while the old chunk still goes out.
    host.send(id, &FsRequest { bulk: None, op: FsOp::Read { path: "/small" } });
    let frames = host.take();
    let ours: Vec<_> = frames.iter().filter(|f| f.id() == id).collect();
    assert_eq!(ours.len(), 2, "the rest of the old chunk, then one answer");
    assert!(matches!(ours[0].message().body, Body::FsData(_)));
    match ours[1].message().body {
        Body::Error(e) => assert_eq!(e.kind, wire::CoreErrorKind::InvalidSession),
        other => panic!("expected core.error, got {other:?}"),
    }
    assert_eq!(host.agent.sessions(), 0);
    assert_eq!(host.agent.fs().usage(), baseline, "the old read's snapshot was released");
    // Once the frame is out, the id is free again and serves the new file.
    let (data, end) = host.read(id, "/small");
    assert_eq!(data, b"small file");
    assert!(matches!(end.message().body, Body::FsResponse(FsResponse { ok: true, .. })));
    assert_eq!(host.agent.fs().usage(), baseline);
}

#[test]
fn disconnect_drops_only_the_clients_range() {
    let mut host = Host::ready();
    let slot = |i: u32| i * SLOT_STEP + 1;
    host.send(slot(0), &FsRequest { bulk: None, op: FsOp::Write { path: "/c0", mode: None } });
    host.send(slot(1), &FsRequest { bulk: None, op: FsOp::Write { path: "/c1", mode: None } });
    host.send(slot(2), &FsRequest { bulk: None, op: FsOp::Write { path: "/c2", mode: None } });
    host.send(0, &RelayClientDisconnected { id_start: slot(1) - 1, id_end_exclusive: slot(2) - 1 });
    let mut left: Vec<u32> = host.agent.session_ids().collect();
    left.sort();
    assert_eq!(left, vec![slot(0), slot(2)]);
}

#[test]
fn a_read_is_a_snapshot_of_the_file_when_it_opened() {
    let (mut host, data) = host_with_big_file(4);
    host.send(5, &FsRequest { bulk: None, op: FsOp::Read { path: "/big" } });
    let first = host.take_piece();
    let mut out = Vec::new();
    // Replace, then remove the file while the read is in flight.
    host.send(6, &FsRequest { bulk: None, op: FsOp::Write { path: "/big", mode: None } });
    host.send(6, &FsData { data: b"replacement" });
    host.send(6, &FsData { data: &[] });
    host.send(7, &FsRequest { bulk: None, op: FsOp::Remove { path: "/big" } });
    out.extend(host.until_terminal(5));
    let got: Vec<u8> = out
        .iter()
        .filter(|f| f.id() == 5)
        .filter_map(|f| match f.message().body {
            Body::FsData(d) => Some(d.data.to_vec()),
            _ => None,
        })
        .flatten()
        .collect();
    // The first piece taken above was only the frame head (no data).
    assert_eq!(first, wire::encode_data_frame_head(5, 1 << 20, &mut [0; wire::DATA_FRAME_HEAD_MAX]).unwrap());
    assert_eq!(got, data);
}
