//! Differential tests of the filesystem payloads against the reference
//! types (`microsandbox-protocol` 0.7.13, serde + ciborium): every current
//! payload shape with random values, both directions.
//!
//! For each value: the reference's bytes decode with `wire` to the same
//! value (compared as serde-JSON), `wire` re-encodes them byte for byte,
//! and the reference decodes `wire`'s bytes back to the same value.

use microsandbox_protocol::bulk::BulkOffer as RefBulkOffer;
use microsandbox_protocol::fs::{
    FsEntryInfo as RefEntry, FsOp as RefOp, FsOpenOptions as RefOpenOptions, FsRequest as RefRequest,
    FsResponse as RefResponse, FsResponseData as RefData, FsSetAttrs as RefAttrs,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tests::rng::Rng;
use tests::vectors::body_json;
use wire::{Body, DecodePayload, Envelope, Frame, FsOp, FsRequest, FsResponse, Payload};

/// Random values per payload kind.
const ROUNDS: usize = 400;

fn ref_bytes<T: Serialize>(value: &T) -> Vec<u8> {
    let mut out = Vec::new();
    ciborium::into_writer(value, &mut out).expect("reference encode");
    out
}

/// `wire`'s payload bytes for a value (through a whole frame, as sent).
fn wire_bytes<P: Payload>(payload: &P) -> Vec<u8> {
    let mut buf = vec![0u8; wire::frame_len(payload)];
    let n = wire::encode_frame(1, payload, &mut buf).expect("wire encode");
    let frame = Frame::parse(&buf[..n]).expect("frame");
    Envelope::decode(frame.body).expect("envelope").p.to_vec()
}

/// `decode` turns the reference's bytes into `wire`'s rendering of the
/// decoded value (as serde-JSON) and `wire`'s re-encoding of it.
fn check_both_ways<R>(value: &R, decode: impl Fn(&[u8]) -> Result<(Value, Vec<u8>), wire::Error>)
where
    R: Serialize + DeserializeOwned,
{
    let expected = serde_json::to_value(value).unwrap();
    let reference = ref_bytes(value);
    let (json, ours) = match decode(&reference) {
        Ok(decoded) => decoded,
        Err(e) => panic!("wire cannot decode the reference's {expected}: {e}"),
    };
    assert_eq!(ours, reference, "re-encoding differs for {expected}");
    let back: R = ciborium::from_reader(&ours[..]).expect("the reference decodes wire's bytes");
    assert_eq!(serde_json::to_value(&back).unwrap(), expected);
    assert_eq!(json, expected, "wire decoded another value");
}

fn text(rng: &mut Rng) -> String {
    const ALPHABET: &[char] = &['a', 'Z', '/', '.', ' ', 'é', '\u{1F600}', '0', '-', '\\'];
    let len = *rng.pick(&[0u64, 1, 5, 23, 24, 255, 300]);
    (0..len).map(|_| *rng.pick(ALPHABET)).collect()
}

fn u64_any(rng: &mut Rng) -> u64 {
    // Edges of every CBOR head width, and random values.
    let random = rng.next_u64();
    *rng.pick(&[0, 23, 24, 255, 256, 65_535, 65_536, u64::from(u32::MAX), u64::MAX, random])
}

fn u32_any(rng: &mut Rng) -> u32 {
    u64_any(rng) as u32
}

fn i64_any(rng: &mut Rng) -> i64 {
    let random = rng.next_u64() as i64;
    *rng.pick(&[0, -1, -24, -25, i64::MIN, i64::MAX, 1_700_000_000, random])
}

fn opt<T>(rng: &mut Rng, f: impl FnOnce(&mut Rng) -> T) -> Option<T> {
    if rng.chance(0.5) { Some(f(rng)) } else { None }
}

fn bool_any(rng: &mut Rng) -> bool {
    rng.chance(0.5)
}

fn attrs(rng: &mut Rng) -> RefAttrs {
    RefAttrs {
        mode: opt(rng, u32_any),
        uid: opt(rng, u32_any),
        gid: opt(rng, u32_any),
        size: opt(rng, u64_any),
        atime: opt(rng, i64_any),
        mtime: opt(rng, i64_any),
    }
}

/// One random operation of each of the 19 current variants, by index.
fn op(rng: &mut Rng, which: usize) -> RefOp {
    match which {
        0 => RefOp::RealPath { path: text(rng) },
        1 => RefOp::Stat { path: text(rng), follow_symlink: bool_any(rng) },
        2 => RefOp::SetStat { path: text(rng), follow_symlink: bool_any(rng), attrs: attrs(rng) },
        3 => RefOp::List { path: text(rng) },
        4 => RefOp::ReadLink { path: text(rng) },
        5 => RefOp::Symlink { target: text(rng), link_path: text(rng), user: opt(rng, text) },
        6 => RefOp::Mkdir { path: text(rng), mode: opt(rng, u32_any), user: opt(rng, text) },
        7 => RefOp::Remove { path: text(rng) },
        8 => RefOp::RemoveDir { path: text(rng), recursive: bool_any(rng) },
        9 => RefOp::Copy { src: text(rng), dst: text(rng) },
        10 => RefOp::Rename { src: text(rng), dst: text(rng) },
        11 => RefOp::OpenFile {
            path: text(rng),
            options: RefOpenOptions {
                read: bool_any(rng),
                write: bool_any(rng),
                append: bool_any(rng),
                create: bool_any(rng),
                truncate: bool_any(rng),
                create_new: bool_any(rng),
                mode: opt(rng, u32_any),
                user: opt(rng, text),
            },
        },
        12 => RefOp::OpenDir { path: text(rng) },
        13 => RefOp::CloseHandle { handle: u64_any(rng) },
        14 => RefOp::Read { handle: u64_any(rng), offset: u64_any(rng), len: opt(rng, u64_any) },
        15 => RefOp::Write { handle: u64_any(rng), offset: u64_any(rng), len: opt(rng, u64_any) },
        16 => RefOp::ReadDir { handle: u64_any(rng), limit: opt(rng, u32_any) },
        17 => RefOp::FStat { handle: u64_any(rng) },
        _ => RefOp::FSetStat { handle: u64_any(rng), attrs: attrs(rng) },
    }
}

const OPS: usize = 19;

fn entry(rng: &mut Rng) -> RefEntry {
    RefEntry {
        path: text(rng),
        kind: rng.pick(&["file", "dir", "symlink", "other"]).to_string(),
        size: u64_any(rng),
        mode: u32_any(rng),
        modified: opt(rng, i64_any),
        uid: u32_any(rng),
        gid: u32_any(rng),
        atime: opt(rng, i64_any),
        mtime: opt(rng, i64_any),
    }
}

#[test]
fn every_current_request_shape_matches_the_reference_both_ways() {
    let mut rng = Rng::new(0x5eed_00f5);
    for round in 0..ROUNDS {
        let bulk = opt(&mut rng, |rng| RefBulkOffer {
            format: rng.next_u64() as u8,
            max_record_payload: u32_any(rng),
            guest_to_host_credit_limit: u64_any(rng),
        });
        let request = RefRequest { op: op(&mut rng, round % OPS), bulk };
        check_both_ways(&request, |b| FsRequest::decode(b).map(|d| (body_json(&Body::FsRequest(d)), wire_bytes(&d))));
    }
}

#[test]
fn every_current_response_shape_matches_the_reference_both_ways() {
    let mut rng = Rng::new(0x5eed_00f6);
    for round in 0..ROUNDS {
        let data = match round % 5 {
            0 => None,
            1 => Some(RefData::Stat(entry(&mut rng))),
            2 => {
                let n = rng.below(6) as usize;
                Some(RefData::List((0..n).map(|_| entry(&mut rng)).collect()))
            }
            3 => Some(RefData::Handle(u64_any(&mut rng))),
            _ => Some(RefData::Path(text(&mut rng))),
        };
        let response = RefResponse { ok: bool_any(&mut rng), error: opt(&mut rng, text), data };
        check_both_ways(&response, |b| {
            FsResponse::decode(b).map(|d| (body_json(&Body::FsResponse(d)), wire_bytes(&d)))
        });
    }
}

/// The shapes that differ only by a required key decode to the dialect
/// the key names, and a seed-era shape never becomes a current one.
#[test]
fn the_shape_selects_the_dialect() {
    let decode = |op: &RefOp| {
        let bytes = ref_bytes(&RefRequest { op: op.clone(), bulk: None });
        let op = FsRequest::decode(&bytes).unwrap().op;
        (format!("{op:?}"), op.is_current_shape())
    };
    let path = String::from("/a");
    assert_eq!(
        decode(&RefOp::Stat { path: path.clone(), follow_symlink: false }),
        (format!("{:?}", FsOp::Stat { path: "/a", follow_symlink: Some(false) }), true)
    );
    assert_eq!(
        decode(&RefOp::RemoveDir { path: path.clone(), recursive: false }),
        (format!("{:?}", FsOp::RemoveDir { path: "/a", recursive: Some(false) }), true)
    );
    assert_eq!(
        decode(&RefOp::Read { handle: 7, offset: 1, len: None }),
        (format!("{:?}", FsOp::ReadHandle { handle: 7, offset: 1, len: None }), true)
    );
    // The seed shapes, as our own host sends them.
    let seed = |op: FsOp<'static>| {
        let bytes = wire_bytes(&FsRequest::new(op));
        let op = FsRequest::decode(&bytes).unwrap().op;
        (format!("{op:?}"), op.is_current_shape())
    };
    assert_eq!(
        seed(FsOp::Stat { path: "/a", follow_symlink: None }),
        (format!("{:?}", FsOp::Stat { path: "/a", follow_symlink: None }), false)
    );
    assert_eq!(
        seed(FsOp::RemoveDir { path: "/a", recursive: None }),
        (format!("{:?}", FsOp::RemoveDir { path: "/a", recursive: None }), false)
    );
    assert_eq!(seed(FsOp::Read { path: "/a" }), (format!("{:?}", FsOp::Read { path: "/a" }), false));
    assert_eq!(seed(FsOp::Mkdir { path: "/a" }), (format!("{:?}", FsOp::Mkdir { path: "/a" }), false));
}

/// A 9-field entry needs `uid` and `gid` (the reference requires them); a
/// 5-field entry is the seed shape and stays 5 fields.
#[test]
fn an_entry_with_an_owner_needs_both_ids() {
    #[derive(Serialize)]
    struct HalfOwner {
        path: &'static str,
        kind: &'static str,
        size: u64,
        mode: u32,
        modified: Option<i64>,
        uid: u32,
    }
    #[derive(Serialize)]
    #[allow(non_snake_case)]
    struct Data<T> {
        Stat: T,
    }
    #[derive(Serialize)]
    struct Response<T> {
        ok: bool,
        error: Option<String>,
        data: Data<T>,
    }
    let half = HalfOwner { path: "/a", kind: "file", size: 1, mode: 0o100644, modified: None, uid: 0 };
    let bytes = ref_bytes(&Response { ok: true, error: None, data: Data { Stat: half } });
    let error = FsResponse::decode(&bytes).unwrap_err();
    assert!(error.to_string().contains("gid"), "{error}");
    assert!(ciborium::from_reader::<RefResponse, _>(&bytes[..]).is_err(), "the reference rejects it too");
}
