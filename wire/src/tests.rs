//! Unit tests against literal bytes: framing bounds, encode bounds, and the
//! decoder's tolerance rules that the vector files do not cover.

extern crate std;

use std::vec;
use std::vec::Vec;

use crate::*;

/// A whole frame around raw payload bytes, for hand-made payloads.
fn frame_with_payload(t: MessageType, p: &[u8]) -> Vec<u8> {
    let body_len = Envelope::encoded_len(t, PROTOCOL_GENERATION, p.len());
    let mut out = vec![0u8; HEADER_SIZE + body_len];
    frame::write_header(&mut out, 7, t.flags(), body_len);
    let n = HEADER_SIZE + Envelope::write_head(&mut out[HEADER_SIZE..], t, PROTOCOL_GENERATION, p.len());
    out[n..].copy_from_slice(p);
    out
}

fn encode<P: Payload>(id: u32, payload: &P) -> Vec<u8> {
    let mut out = vec![0u8; frame_len(payload)];
    let n = encode_frame(id, payload, &mut out).unwrap();
    assert_eq!(n, out.len());
    out
}

#[test]
fn parse_frame_reports_missing_bytes_then_completes() {
    let buf = encode(3, &Ping);
    let n = buf.len();
    assert_eq!(parse_frame(&buf[..0]).unwrap(), FrameStatus::Incomplete { needed: HEADER_SIZE });
    assert_eq!(parse_frame(&buf[..3]).unwrap(), FrameStatus::Incomplete { needed: HEADER_SIZE - 3 });
    assert_eq!(parse_frame(&buf[..n - 1]).unwrap(), FrameStatus::Incomplete { needed: 1 });
    let FrameStatus::Complete { frame, consumed } = parse_frame(&buf).unwrap() else { panic!("incomplete") };
    assert_eq!((frame.id, frame.flags, consumed), (3, Flags::NONE, n));
    assert_eq!(frame.size(), n);
    assert_eq!(frame.len_prefix() as usize, n - LEN_PREFIX_SIZE);
}

#[test]
fn a_bad_length_prefix_is_rejected_from_its_four_bytes() {
    let err = parse_frame(&(MAX_FRAME + 1).to_be_bytes()).unwrap_err();
    assert_eq!((err.layer, err.kind), (Layer::Frame, ErrorKind::FrameTooLarge { len: MAX_FRAME + 1 }));
    let err = parse_frame(&4u32.to_be_bytes()).unwrap_err();
    assert_eq!(err.kind, ErrorKind::FrameTooShort { len: 4 });
    assert!(check_len(MAX_FRAME).is_ok() && check_len(MIN_FRAME).is_ok());
    let err = Frame::parse(&[0, 0, 0, 9, 0]).unwrap_err();
    assert_eq!(err.kind, ErrorKind::Truncated { needed: 8 });
}

#[test]
fn two_frames_in_one_buffer_parse_one_at_a_time() {
    let both = [encode(1, &Ping), encode(2, &Pong)].concat();
    let FrameStatus::Complete { frame, consumed } = parse_frame(&both).unwrap() else { panic!() };
    assert_eq!(frame.id, 1);
    let FrameStatus::Complete { frame, .. } = parse_frame(&both[consumed..]).unwrap() else { panic!() };
    assert_eq!((frame.id, frame.flags), (2, Flags::TERMINAL));
}

#[test]
fn encoding_checks_the_buffer_and_the_frame_limit() {
    let request = FsRequest { bulk: None, op: FsOp::Stat { path: "/a", follow_symlink: None } };
    let mut small = [0u8; 16];
    assert_eq!(
        encode_frame(1, &request, &mut small),
        Err(EncodeError::BufferTooSmall { needed: frame_len(&request), available: 16 })
    );
    let data = vec![0u8; MAX_FRAME as usize];
    let mut out = vec![0u8; MAX_FRAME_BYTES + 64];
    assert!(matches!(encode_frame(1, &FsData { data: &data }, &mut out), Err(EncodeError::FrameTooLarge { .. })));
    let mut head = [0u8; DATA_FRAME_HEAD_MAX];
    assert!(matches!(encode_data_frame_head(1, data.len(), &mut head), Err(EncodeError::FrameTooLarge { .. })));
}

/// A payload whose length crosses every length-head size: an error
/// response with an `n`-byte message.
fn error_response(message: &str) -> FsResponse<'_, [FsEntryInfo<'_>; 0]> {
    FsResponse { ok: false, error: Some(message), data: None }
}

#[test]
fn one_pass_encoding_matches_the_measured_layout_at_every_head_size() {
    // Payloads of 1..=23, 24..=255, 256..=65535 and larger bytes: the
    // one-pass encoder guesses a two-byte head and moves the rest.
    for len in [0usize, 1, 5, 10, 11, 12, 200, 230, 231, 232, 65_500, 65_512, 65_513, 70_000] {
        let message = "x".repeat(len);
        let response = error_response(&message);
        let payload_len = response.encoded_len();
        let mut payload = vec![0u8; payload_len];
        let mut e = Encoder::new(cbor::SliceWriter::new(&mut payload));
        response.encode(&mut e).unwrap();
        let expected = frame_with_payload(MessageType::FsResponse, &payload);
        // Exactly enough room, and room to spare, give the same bytes.
        for spare in [0usize, 1, 3, 64] {
            let mut out = vec![0xeeu8; expected.len() + spare];
            let n = encode_frame(7, &response, &mut out).unwrap();
            assert_eq!(&out[..n], &expected[..], "payload {payload_len} bytes, {spare} spare");
        }
        // One byte short says exactly what was needed.
        let mut short = vec![0u8; expected.len() - 1];
        assert_eq!(
            encode_frame(7, &response, &mut short),
            Err(EncodeError::BufferTooSmall { needed: expected.len(), available: expected.len() - 1 })
        );
    }
}

#[test]
fn the_data_frame_head_matches_the_full_encoder() {
    for len in [0usize, 1, 23, 24, 255, 256, 65_535, 65_536, FS_CHUNK_SIZE] {
        let data = vec![0xab; len];
        let full = encode(9, &FsData { data: &data });
        let mut head = [0u8; DATA_FRAME_HEAD_MAX];
        let n = encode_data_frame_head(9, len, &mut head).unwrap();
        assert_eq!(n + len, full.len(), "len {len}");
        assert_eq!(&head[..n], &full[..n], "len {len}");
    }
}

#[test]
fn list_responses_encode_the_same_from_a_slice_an_iterator_and_a_decoded_list() {
    let entries = [
        FsEntryInfo { path: "/d/a", kind: FsEntryKind::File, size: 3, mode: 0o100644, modified: Some(-1), extra: None },
        FsEntryInfo { path: "/d/b", kind: FsEntryKind::Dir, size: 0, mode: 0o40755, modified: None, extra: None },
    ];
    let from_slice = encode(1, &FsResponse { ok: true, error: None, data: Some(FsResponseData::List(&entries[..])) });
    let iter = IterEntries(entries.iter().copied());
    let from_iter = encode(1, &FsResponse { ok: true, error: None, data: Some(FsResponseData::List(iter)) });
    assert_eq!(from_slice, from_iter);
    let Body::FsResponse(decoded) = Message::decode_bytes(&from_slice).unwrap().body else { panic!() };
    let Some(FsResponseData::List(list)) = decoded.data else { panic!() };
    assert_eq!(list.len(), 2);
    assert!(list.iter().eq(entries.iter().copied()));
    assert_eq!(encode(1, &FsResponse { data: Some(FsResponseData::List(list)), ..decoded }), from_slice);
}

#[test]
fn a_struct_variant_body_may_be_an_array_as_in_the_reference() {
    // {"op": {"Stat": ["/a"]}} and {"op": {"Write": ["/w"]}} (mode defaults).
    let stat = [0xa1, 0x62, b'o', b'p', 0xa1, 0x64, b'S', b't', b'a', b't', 0x81, 0x62, b'/', b'a'];
    assert_eq!(FsRequest::decode(&stat).unwrap().op, FsOp::Stat { path: "/a", follow_symlink: None });
    let write = [0xa1, 0x62, b'o', b'p', 0xa1, 0x65, b'W', b'r', b'i', b't', b'e', 0x81, 0x62, b'/', b'w'];
    assert_eq!(FsRequest::decode(&write).unwrap().op, FsOp::Write { path: "/w", mode: None });
    // An empty array lacks the required path.
    let empty = [0xa1, 0x62, b'o', b'p', 0xa1, 0x64, b'S', b't', b'a', b't', 0x80];
    assert_eq!(FsRequest::decode(&empty).unwrap_err().kind, ErrorKind::MissingField);
}

#[test]
fn an_array_body_of_read_or_write_picks_its_dialect_by_the_first_element() {
    // {"op": {"Read": ["/r"]}}: the seed shape.
    let seed = [0xa1, 0x62, b'o', b'p', 0xa1, 0x64, b'R', b'e', b'a', b'd', 0x81, 0x62, b'/', b'r'];
    assert_eq!(FsRequest::decode(&seed).unwrap().op, FsOp::Read { path: "/r" });
    // {"op": {"Read": [7, 2, null]}}: the handle shape.
    let handle = [0xa1, 0x62, b'o', b'p', 0xa1, 0x64, b'R', b'e', b'a', b'd', 0x83, 0x07, 0x02, 0xf6];
    assert_eq!(FsRequest::decode(&handle).unwrap().op, FsOp::ReadHandle { handle: 7, offset: 2, len: None });
    // {"op": {"Write": [7]}}: a handle shape without its required offset.
    let short = [0xa1, 0x62, b'o', b'p', 0xa1, 0x65, b'W', b'r', b'i', b't', b'e', 0x81, 0x07];
    let error = FsRequest::decode(&short).unwrap_err();
    assert_eq!((error.kind, error.field), (ErrorKind::MissingField, "offset"));
}

#[test]
fn a_map_with_path_and_handle_is_the_handle_shape() {
    // {"op": {"Read": {"path": "/r", "handle": 1, "offset": 0}}}
    let mut p = vec![0xa1, 0x62, b'o', b'p', 0xa1, 0x64, b'R', b'e', b'a', b'd', 0xa3];
    p.extend_from_slice(&[0x64, b'p', b'a', b't', b'h', 0x62, b'/', b'r']);
    p.extend_from_slice(&[0x66, b'h', b'a', b'n', b'd', b'l', b'e', 0x01]);
    p.extend_from_slice(&[0x66, b'o', b'f', b'f', b's', b'e', b't', 0x00]);
    assert_eq!(FsRequest::decode(&p).unwrap().op, FsOp::ReadHandle { handle: 1, offset: 0, len: None });
}

#[test]
fn canonical_fast_paths_decode_as_the_general_decoder() {
    // {"op": {<name>: <body>}} with the body in its canonical form (the
    // fast path), as an indefinite map and with an over-long text head
    // (the general decoder): the same op each time.
    let ops = ["RealPath", "Stat", "List", "ReadLink", "Mkdir", "Remove", "RemoveDir", "OpenDir", "Read", "Write"];
    let path = "/tmp/d\u{e9}j\u{e0}";
    for name in ops {
        let request = |body: &[u8]| {
            let mut p = vec![0xa1, 0x62, b'o', b'p', 0xa1, 0x60 | name.len() as u8];
            p.extend_from_slice(name.as_bytes());
            p.extend_from_slice(body);
            p
        };
        let key = [0x64, b'p', b'a', b't', b'h'];
        let mut canonical = vec![0xa1];
        canonical.extend_from_slice(&key);
        canonical.push(0x60 | path.len() as u8);
        canonical.extend_from_slice(path.as_bytes());
        let mut indefinite = vec![0xbf];
        indefinite.extend_from_slice(&canonical[1..]);
        indefinite.push(0xff);
        let (whole, whole_general) = (request(&canonical), request(&indefinite));
        let fast = FsRequest::decode(&whole).unwrap().op;
        let general = FsRequest::decode(&whole_general).unwrap().op;
        assert_eq!(fast, general, "{name}");
        let mut long_head = vec![0xa1];
        long_head.extend_from_slice(&key);
        long_head.extend_from_slice(&[0x78, path.len() as u8]);
        long_head.extend_from_slice(path.as_bytes());
        let long = request(&long_head);
        assert_eq!(FsRequest::decode(&long).unwrap().op, general, "{name}");
        // The request map itself in a non-canonical form: the same again.
        let mut outer = vec![0xbf];
        outer.extend_from_slice(&whole[1..]);
        outer.push(0xff);
        assert_eq!(FsRequest::decode(&outer).unwrap(), FsRequest { op: general, bulk: None }, "{name}");
        // Broken bodies fail the same way either way.
        let cut = &whole[..whole.len() - 1];
        let cut_general = &whole_general[..whole_general.len() - 2];
        assert_eq!(FsRequest::decode(cut).unwrap_err().kind, FsRequest::decode(cut_general).unwrap_err().kind);
        let mut bad_utf8 = canonical.clone();
        *bad_utf8.last_mut().unwrap() = 0xff;
        let bad = request(&bad_utf8);
        assert_eq!(FsRequest::decode(&bad).unwrap_err().kind, ErrorKind::InvalidUtf8, "{name}");
    }
    // Ops that need more than a path still say which field is missing.
    let mut copy = vec![0xa1, 0x62, b'o', b'p', 0xa1, 0x64, b'C', b'o', b'p', b'y', 0xa1];
    copy.extend_from_slice(&[0x64, b'p', b'a', b't', b'h', 0x61, b'/']);
    assert_eq!(FsRequest::decode(&copy).unwrap_err().kind, ErrorKind::MissingField);
}

#[test]
fn a_path_claiming_more_bytes_than_the_frame_holds_is_refused_as_by_the_general_decoder() {
    // {"op": {"Stat": {"path": <text head claiming far more than follows> "/a"}}}:
    // the fast path must neither read past the input nor accept it, and
    // the error is the general decoder's (the same body in an indefinite map).
    let heads: [&[u8]; 4] =
        [&[0x78, 0xff], &[0x79, 0xff, 0xff], &[0x7a, 0xff, 0xff, 0xff, 0xff], &[0x7b, 0xff, 0, 0, 0, 0, 0, 0, 0]];
    for head in heads {
        let request = |map_head: u8, end: &[u8]| {
            let mut p = vec![0xa1, 0x62, b'o', b'p', 0xa1, 0x64, b'S', b't', b'a', b't', map_head];
            p.extend_from_slice(&[0x64, b'p', b'a', b't', b'h']);
            p.extend_from_slice(head);
            p.extend_from_slice(b"/a");
            p.extend_from_slice(end);
            p
        };
        let (canonical, general) = (request(0xa1, &[]), request(0xbf, &[0xff]));
        let fast = FsRequest::decode(&canonical).unwrap_err();
        let slow = FsRequest::decode(&general).unwrap_err();
        assert_eq!(fast.kind, slow.kind, "head {head:02x?}");
    }
}

/// `{"op": {"Stat": {"path": "/a", "x": <value>}}}` with an unknown field.
fn stat_with_unknown(value: &[u8]) -> Vec<u8> {
    let mut p = vec![0xa1, 0x62, b'o', b'p', 0xa1, 0x64, b'S', b't', b'a', b't', 0xa2];
    p.extend_from_slice(&[0x64, b'p', b'a', b't', b'h', 0x62, b'/', b'a', 0x61, b'x']);
    p.extend_from_slice(value);
    p
}

#[test]
fn unknown_fields_are_skipped_with_the_reference_checks() {
    let nested_ok: Vec<u8> = [vec![0x81; MAX_NESTING - 1], vec![0x00]].concat();
    assert!(FsRequest::decode(&stat_with_unknown(&nested_ok)).is_ok());
    let too_deep: Vec<u8> = [vec![0x81; MAX_NESTING + 1], vec![0x00]].concat();
    assert_eq!(FsRequest::decode(&stat_with_unknown(&too_deep)).unwrap_err().kind, ErrorKind::NestingTooDeep);
    // Indefinite containers nested in definite ones (minicbor's own skip needs alloc for these).
    let mixed = [0x82, 0xbf, 0x61, b'k', 0x9f, 0x01, 0xff, 0xff, 0x5f, 0x41, 0x00, 0xff];
    assert!(FsRequest::decode(&stat_with_unknown(&mixed)).is_ok());
    // Floats, tags and the four known simple values are fine; other simple values are not.
    for ok in [&[0xf9, 0x3c, 0x00][..], &[0xfb, 0, 0, 0, 0, 0, 0, 0, 0], &[0xc1, 0x1a, 0, 0, 0, 1], &[0xf7]] {
        assert!(FsRequest::decode(&stat_with_unknown(ok)).is_ok(), "{ok:x?}");
    }
    assert_eq!(FsRequest::decode(&stat_with_unknown(&[0xf0])).unwrap_err().kind, ErrorKind::Malformed);
    assert_eq!(FsRequest::decode(&stat_with_unknown(&[0x62, 0xff, 0xfe])).unwrap_err().kind, ErrorKind::InvalidUtf8);
    assert_eq!(
        FsRequest::decode(&stat_with_unknown(&[0x7f, 0x41, 0x00, 0xff])).unwrap_err().kind,
        ErrorKind::Malformed
    );
}

#[test]
fn keys_longer_than_the_reference_limit_are_rejected() {
    let mut p = vec![0xa1, 0x79, 0x10, 0x01];
    p.extend(std::iter::repeat_n(b'k', 4097));
    p.push(0x00);
    assert_eq!(Ping::decode(&p).unwrap_err().kind, ErrorKind::KeyTooLong);
    let mut p = vec![0xa1, 0x79, 0x10, 0x00];
    p.extend(std::iter::repeat_n(b'k', 4096));
    p.push(0x00);
    assert!(Ping::decode(&p).is_ok());
}

#[test]
fn integers_follow_the_reference_ranges_including_bignums() {
    let sync = |value: &[u8]| {
        let mut p = vec![0xa1, 0x6f];
        p.extend_from_slice(b"unix_time_nanos");
        p.extend_from_slice(value);
        ClockSync::decode(&p).map(|c| c.unix_time_nanos).map_err(|e| e.kind)
    };
    assert_eq!(sync(&[0xc2, 0x48, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]), Ok(u64::MAX));
    assert_eq!(sync(&[0xc2, 0x4a, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]), Ok(u64::MAX));
    assert_eq!(sync(&[0xc2, 0x49, 1, 0, 0, 0, 0, 0, 0, 0, 0]), Err(ErrorKind::OutOfRange));
    assert_eq!(sync(&[0xc2, 0x5f, 0x41, 0x01, 0x41, 0x00, 0xff]), Ok(256));
    assert_eq!(sync(&[0xc3, 0x41, 0x00]), Err(ErrorKind::OutOfRange));
    assert_eq!(sync(&[0x20]), Err(ErrorKind::OutOfRange));
    assert_eq!(sync(&[0xfb, 0, 0, 0, 0, 0, 0, 0, 0]), Err(ErrorKind::InvalidType { expected: "integer" }));
    assert_eq!(sync(&[0x1c]), Err(ErrorKind::Malformed));
    assert_eq!(sync(&[0x1b, 0, 0]), Err(ErrorKind::UnexpectedEnd));
}

#[test]
fn negative_modification_times_round_trip_through_the_bignum_forms() {
    // FsEntryInfo.modified = tag 3 (negative bignum) h'00' = -1.
    let entry = |modified: &[u8]| {
        let mut p = vec![0xa5];
        for (k, v) in
            [(&b"path"[..], &[0x61, b'/'][..]), (b"kind", &[0x63, b'd', b'i', b'r']), (b"size", &[0]), (b"mode", &[0])]
        {
            p.push(0x60 + k.len() as u8);
            p.extend_from_slice(k);
            p.extend_from_slice(v);
        }
        p.extend_from_slice(&[0x68, b'm', b'o', b'd', b'i', b'f', b'i', b'e', b'd']);
        p.extend_from_slice(modified);
        let mut response =
            vec![0xa2, 0x62, b'o', b'k', 0xf5, 0x64, b'd', b'a', b't', b'a', 0xa1, 0x64, b'S', b't', b'a', b't'];
        response.extend_from_slice(&p);
        let frame = frame_with_payload(MessageType::FsResponse, &response);
        let Body::FsResponse(r) = Message::decode_bytes(&frame).map_err(|e| e.kind)?.body else { panic!() };
        let Some(FsResponseData::Stat(info)) = r.data else { panic!() };
        Ok::<_, ErrorKind>(info.modified)
    };
    assert_eq!(entry(&[0xc3, 0x41, 0x00]), Ok(Some(-1)));
    assert_eq!(entry(&[0x3b, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]), Ok(Some(i64::MIN)));
    assert_eq!(entry(&[0xf6]), Ok(None));
    // A tagged null is not `None` in the reference: the tag makes it `Some`.
    assert_eq!(entry(&[0xc1, 0xf6]), Err(ErrorKind::InvalidType { expected: "integer" }));
}

#[test]
fn hints_recover_type_and_generation_from_a_bad_envelope() {
    // {"v": 5, "t": "core.bogus", "p": h'a0'}
    let mut body = vec![0xa3, 0x61, b'v', 0x05, 0x61, b't', 0x6a];
    body.extend_from_slice(b"core.bogus");
    body.extend_from_slice(&[0x61, b'p', 0x41, 0xa0]);
    assert_eq!(Envelope::decode(&body).unwrap_err().kind, ErrorKind::UnknownMessageType);
    assert_eq!(hints(&body), Hints { v: Some(5), t: Some("core.bogus") });
    assert_eq!(hints(&[0xff, 0x00]), Hints::default());
    // A chunked `t` is matched without copying.
    let mut chunked = vec![0xa3, 0x61, b'v', 0x05, 0x61, b't', 0x7f, 0x64];
    chunked.extend_from_slice(b"core");
    chunked.push(0x65);
    chunked.extend_from_slice(b".ping");
    chunked.extend_from_slice(&[0xff, 0x61, b'p', 0x41, 0xa0]);
    assert_eq!(Envelope::decode(&chunked).unwrap().t, MessageType::Ping);
}

#[test]
fn every_type_has_its_flags_and_generation() {
    for t in MessageType::ALL {
        assert_eq!(MessageType::from_wire(t.as_str().as_bytes()), Some(t));
        assert!(t.as_str().len() <= MessageType::MAX_NAME_LEN);
    }
    assert_eq!(MessageType::FsRequest.flags(), Flags::SESSION_START);
    assert_eq!(MessageType::Shutdown.flags(), Flags::SHUTDOWN);
    assert_eq!(MessageType::Pong.flags(), Flags::TERMINAL);
    assert_eq!((MessageType::Error.generation(), MessageType::Ping.generation()), (5, 6));
    assert_eq!(MessageType::from_wire(b"core.Ping"), None);
    for k in CoreErrorKind::ALL {
        assert_eq!(CoreErrorKind::from_wire(k.as_str().as_bytes()), Some(k));
    }
}

#[test]
fn errors_name_layer_field_and_cause() {
    let err = FsRequest::decode(&[0xa1, 0x62, b'o', b'p', 0xa1, 0x64, b'S', b't', b'a', b't', 0xa0]).unwrap_err();
    assert_eq!((err.layer, err.kind, err.field), (Layer::Payload, ErrorKind::MissingField, "path"));
    let text = std::format!("{err}");
    assert!(text.contains("payload") && text.contains("path") && text.contains("missing"), "{text}");
}
