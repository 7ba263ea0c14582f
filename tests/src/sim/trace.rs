//! What a run leaves behind: a digest of everything that happened, in order
//! (for the determinism check), and counters of the faults it injected.

use std::fmt;

/// Kinds of trace records, mixed into the digest with their values.
#[derive(Debug, Clone, Copy)]
pub enum Mark {
    /// A reader took bytes from a link: link tag, byte count.
    Delivered = 1,
    /// The host sent the guest a whole frame: header word, sequence number.
    ToGuest,
    /// The host read a whole frame from the guest: header word, length.
    FromGuest,
    /// A client read a whole frame: client index, header word.
    ToClient,
    /// The agent emitted an event or changed state: a code, a value.
    Agent,
    /// A fault was injected: its kind, a value.
    Fault,
    /// A client finished a call: client index, id.
    Finished,
}

/// A running digest of the run (FxHash-style mixing: fast, and any
/// reordering or changed value shows in the result).
#[derive(Debug, Clone, Default)]
pub struct Trace {
    digest: u64,
    records: u64,
}

/// The multiplier of the mixing step.
const MIX: u64 = 0x517c_c1b7_2722_0a95;

impl Trace {
    /// Mixes one record into the digest.
    pub fn record(&mut self, mark: Mark, a: u64, b: u64) {
        for v in [mark as u64, a, b] {
            self.digest = (self.digest.rotate_left(5) ^ v).wrapping_mul(MIX);
        }
        self.records += 1;
    }

    /// The digest so far.
    pub fn digest(&self) -> u64 {
        self.digest
    }

    /// Records mixed in so far.
    pub fn records(&self) -> u64 {
        self.records
    }
}

/// The header of a frame as one number for the trace: length, id, flags.
pub fn header_word(frame: &[u8]) -> u64 {
    let parsed = wire::Frame::parse(frame).expect("the trace records whole frames");
    let len = parsed.body.len() + wire::HEADER_SIZE - wire::LEN_PREFIX_SIZE;
    (len as u64) << 40 ^ (u64::from(parsed.id) << 8) ^ u64::from(parsed.flags.bits())
}

/// Faults injected (and hard conditions reached) in a run, by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Faults {
    /// Clients that hung up with calls possibly in flight.
    pub disconnects: u64,
    /// Client frames cut short by a hang-up (the relay dropped the rest).
    pub truncated_frames: u64,
    /// Clients that sent a corrupt length prefix (the relay dropped them).
    pub bad_client_prefixes: u64,
    /// Clients the relay cut off for falling a client queue behind.
    pub slow_client_kicks: u64,
    /// Requests sent with flipped bytes in their CBOR body.
    pub corrupt_bodies: u64,
    /// Corrupt length prefixes sent to the guest (each forces a resync).
    pub stream_glitches: u64,
    /// `core.shutdown` sent in the middle of traffic.
    pub shutdowns: u64,
    /// Writes the agent refused for lack of space.
    pub no_space: u64,
    /// Times the agent's receive buffer was full while input waited.
    pub rx_full: u64,
    /// Clients the relay cut off when all queues together reached its bound.
    pub relay_full_kicks: u64,
    /// Times the relay paused a client's read data in the guest.
    pub relay_pauses: u64,
    /// Hostile clients that stopped reading and were cut off by the relay.
    pub stallers_cut_off: u64,
    /// Hostile clients that left mid-read (their slot reused later).
    pub churns: u64,
    /// Forged host-only frames answered `core.error` (by the agent or the relay).
    pub forged_frames_refused: u64,
    /// A hog's writes refused past its share of sessions.
    pub hog_refusals: u64,
    /// Operations of the current surface (PROTOCOL.md §10) answered to
    /// honest clients as the model predicts (a coverage count).
    pub current_ops: u64,
    /// A handle thief's requests on handles it does not hold, refused
    /// `EBADF`.
    pub handle_thefts: u64,
}

impl Faults {
    /// Adds another run's counters.
    pub fn add(&mut self, other: &Faults) {
        for (mine, theirs) in self.counters_mut().into_iter().zip(other.counters()) {
            *mine += theirs.1;
        }
    }

    /// Every counter with its name.
    pub fn counters(&self) -> [(&'static str, u64); 17] {
        [
            ("client disconnects", self.disconnects),
            ("truncated client frames", self.truncated_frames),
            ("bad client length prefixes", self.bad_client_prefixes),
            ("slow clients dropped", self.slow_client_kicks),
            ("corrupt request bodies", self.corrupt_bodies),
            ("guest stream glitches (resyncs)", self.stream_glitches),
            ("shutdowns mid-traffic", self.shutdowns),
            ("writes refused: no space", self.no_space),
            ("agent receive buffer full", self.rx_full),
            ("clients cut off at the relay's total bound", self.relay_full_kicks),
            ("slow readers paused in the guest", self.relay_pauses),
            ("hostile: stalled clients cut off", self.stallers_cut_off),
            ("hostile: hang-ups mid-read (slot churn)", self.churns),
            ("hostile: forged host-only frames refused", self.forged_frames_refused),
            ("hostile: hog writes refused past share", self.hog_refusals),
            ("current-surface ops answered", self.current_ops),
            ("hostile: handle thefts refused (EBADF)", self.handle_thefts),
        ]
    }

    fn counters_mut(&mut self) -> [&mut u64; 17] {
        [
            &mut self.disconnects,
            &mut self.truncated_frames,
            &mut self.bad_client_prefixes,
            &mut self.slow_client_kicks,
            &mut self.corrupt_bodies,
            &mut self.stream_glitches,
            &mut self.shutdowns,
            &mut self.no_space,
            &mut self.rx_full,
            &mut self.relay_full_kicks,
            &mut self.relay_pauses,
            &mut self.stallers_cut_off,
            &mut self.churns,
            &mut self.forged_frames_refused,
            &mut self.hog_refusals,
            &mut self.current_ops,
            &mut self.handle_thefts,
        ]
    }
}

impl fmt::Display for Faults {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (name, count) in self.counters() {
            writeln!(f, "  {name:<42} {count}")?;
        }
        Ok(())
    }
}
