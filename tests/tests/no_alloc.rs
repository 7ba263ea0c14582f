//! Proves the codec allocates nothing: a counting global allocator watches
//! this thread while every vector frame is decoded and re-encoded.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use tests::vectors::{self, rule_data, unhex};
use wire::{Body, FsData, Message, encode_frame, hints};

struct Counting;

thread_local! {
    static WATCHING: Cell<bool> = const { Cell::new(false) };
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

// SAFETY: forwards every call to the system allocator unchanged; the
// bookkeeping touches only const-initialised thread-locals, which never
// allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if WATCHING.with(Cell::get) {
            ALLOCATIONS.with(|n| n.set(n.get() + 1));
        }
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if WATCHING.with(Cell::get) {
            ALLOCATIONS.with(|n| n.set(n.get() + 1));
        }
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Runs `f` and returns how many allocations this thread made meanwhile.
fn allocations_during(f: impl FnOnce()) -> usize {
    ALLOCATIONS.with(|n| n.set(0));
    WATCHING.with(|w| w.set(true));
    f();
    WATCHING.with(|w| w.set(false));
    ALLOCATIONS.with(Cell::get)
}

#[test]
fn encoding_and_decoding_every_vector_allocates_nothing() {
    // Everything that allocates (file reading, JSON, hex) happens first.
    let (_, public) = vectors::public();
    let (_, invalid) = vectors::invalid();
    let mut frames: Vec<Vec<u8>> = Vec::new();
    let mut large: Vec<(u32, Vec<u8>)> = Vec::new();
    for v in &public {
        match v["frame_hex"].as_str() {
            Some(h) => frames.push(unhex(h)),
            None => large.push((v["id"].as_u64().unwrap() as u32, rule_data(&v["payload_rule"]))),
        }
    }
    let malformed: Vec<Vec<u8>> = invalid.iter().map(|v| unhex(v["frame_hex"].as_str().unwrap())).collect();
    let mut out = vec![0u8; wire::MAX_FRAME_BYTES];
    let (mut decoded, mut entries, mut rejected) = (0usize, 0usize, 0usize);

    let count = allocations_during(|| {
        for frame in &frames {
            let msg = Message::decode_bytes(frame).expect("valid vector decodes");
            if let Body::FsResponse(r) = &msg.body
                && let Some(wire::FsResponseData::List(list)) = &r.data
            {
                entries += list.iter().count();
            }
            let n = msg.encode(&mut out).expect("re-encodes");
            assert_eq!(&out[..n], &frame[..]);
            decoded += 1;
        }
        for (id, data) in &large {
            let n = encode_frame(*id, &FsData { data }, &mut out).expect("encodes");
            let msg = Message::decode_bytes(&out[..n]).expect("decodes");
            assert!(matches!(msg.body, Body::FsData(d) if d.data.len() == data.len()));
            decoded += 1;
        }
        for frame in &malformed {
            if Message::decode_bytes(frame).is_err() {
                rejected += 1;
                let body = frame.get(wire::HEADER_SIZE..).unwrap_or(&[]);
                let _ = hints(body);
            }
        }
    });
    println!(
        "{decoded} frames decoded and re-encoded, {entries} list entries, {rejected} rejected: {count} allocations"
    );
    assert_eq!(decoded, public.len());
    assert!(rejected > 0 && entries > 0);
    assert_eq!(count, 0, "the codec allocated");
}

#[test]
fn the_counter_sees_allocations() {
    // Guards against a counter that can never fire.
    let count = allocations_during(|| {
        std::hint::black_box(vec![1u8; 16]);
    });
    assert_eq!(count, 1);
}
