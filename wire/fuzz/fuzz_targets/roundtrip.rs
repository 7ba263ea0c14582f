//! decode -> encode -> decode gives the same message, and encoding is
//! canonical: a second encode is byte-identical to the first.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wire::{EncodeError, Message};

fuzz_target!(|data: &[u8]| {
    let Ok(first) = Message::decode_bytes(data) else { return };
    let mut out = vec![0u8; first.encoded_len()];
    match first.encode(&mut out) {
        Ok(n) => assert_eq!(n, out.len()),
        // Canonical form can be a few bytes longer than a lenient input
        // (omitted optional keys are written); past MAX_FRAME it must refuse.
        Err(EncodeError::FrameTooLarge { .. }) => return,
        Err(e) => panic!("encode failed: {e}"),
    }
    let second = Message::decode_bytes(&out).expect("re-encoded frame decodes");
    assert_eq!(first, second);
    let mut again = vec![0u8; second.encoded_len()];
    second.encode(&mut again).expect("encodes again");
    assert_eq!(out, again, "encoding is not canonical");
});
