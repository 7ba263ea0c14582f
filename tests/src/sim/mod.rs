//! Deterministic simulation of the agent and the host together.
//!
//! One seed decides a whole run: the real [`agent_core::Agent`] over a
//! ramfs, host-sync's sans-IO host core (`proto::Handshake`, `proto::Ids`,
//! `proto::Calls`, `relay::RelayCore`) wired as the relay wires it, and
//! several clients with a random workload, all joined by simulated byte
//! links that cut writes at random boundaries and deliver them after
//! random delays. A virtual clock and the seeded [`Rng`](crate::rng::Rng)
//! are the only sources of time and randomness; there are no threads and
//! no iteration over unordered maps, so a seed replays exactly.
//!
//! ```text
//! client 0 ─┐
//! client 1 ─┼─ links ─ relay: RelayCore ──── link ─── driver loop ─ Agent ─ Ramfs
//! client k ─┘          handshake: proto::Handshake    (as agent-core's driver)
//! ```
//!
//! # The model and concurrency
//!
//! Each client owns a subtree (`/c<k>`) and the model predicts every
//! answer exactly. A client never starts an operation while an older one
//! that mutates a related path (equal, or one below the other) is in
//! flight; operations on unrelated paths commute. An older read-only
//! operation never blocks: the agent handles it before anything sent after
//! it, so files are replaced, renamed and removed while being read, and the
//! read must return its snapshot. When a connection is lost, what the relay
//! had forwarded says which operations took effect; a write that may have
//! run out of space is probed on the next connection.
//!
//! # Faults, each with a probability drawn per run
//!
//! Client hang-ups at any point of a stream (mid-frame: the relay drops the
//! truncated frame) and reconnection as a new client; corrupt client length
//! prefixes (the relay drops the client); requests with flipped CBOR bytes
//! (the agent must answer `core.error`, or nothing to a claimed generation
//! below 5, or a plain answer if they still decode); a corrupt length
//! prefix on the guest stream (the agent must await a fresh stream, start
//! over after a quiet period, and redo the handshake); tight ramfs arenas
//! (writes must fail "no space left" and lose nothing); slow clients and
//! small queues (backpressure up to the agent's receive buffer; a client
//! that stalls the relay too long is dropped); `core.shutdown` in the
//! middle of traffic.
//!
//! # Invariants (a violation panics: "invariant violated: ...")
//!
//! - Every request gets exactly one terminal frame; the only frames allowed
//!   after it are "unknown write session" answers to chunks of a write that
//!   already failed. Unanswered requests at the end must be excused (their
//!   client left, the shutdown came first, or they claimed generation < 5).
//! - No frame exceeds `MAX_FRAME`; a client only ever receives ids of its
//!   own range; the relay never has to refuse an honest client's frame.
//! - Every answer is what the model predicts: exact error messages, `Stat`
//!   and `List` metadata, read data byte for byte; "no space left" only
//!   when the space bound allows it.
//! - Once the agent has handled a disconnect notice, no session of that
//!   range survives; after a stream reset none at all.
//! - A write that did not complete leaves the previous content; nothing
//!   acknowledged is ever lost: after the drain the whole tree equals the
//!   model and the ramfs accounting equals what the tree holds, and after
//!   removing everything the ramfs is back to its baseline.
//!
//! # Replay
//!
//! A failure names its seed and the command that replays it
//! ([`replay_command`]); [`determinism`] runs a seed twice and compares the
//! digest of the whole trace (every delivery, frame header and event).

mod calls;
mod channel;
mod client;
mod content;
mod corrupt;
mod guest;
mod host;
mod model;
mod params;
mod space;
mod sweep;
mod trace;
mod verify;
mod workload;
mod world;

pub use guest::Memory;
pub use sweep::{Failure, Plan, Summary, check, determinism, replay_command, sweep};
pub use trace::Faults;

/// Panics with a violated invariant: a bug found by the simulation.
macro_rules! violation {
    ($($arg:tt)*) => {
        panic!("invariant violated: {}", format_args!($($arg)*))
    };
}
pub(crate) use violation;

/// A defect planted in the simulator's host side, to show that the checks
/// catch what it breaks (the product code has no such switch).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Bug {
    /// None: the real behaviour.
    #[default]
    None,
    /// The relay never sends `core.relay.client.disconnected`, so a
    /// departed client's sessions survive in the agent.
    DropDisconnectNotice,
    /// The relay flips the last byte of every data chunk longer than 1 KiB
    /// it passes to a client (a corrupting link).
    FlipGuestData,
}

/// Narrows what the seed decides (tests use it to aim at one feature).
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// A planted defect.
    pub bug: Bug,
    /// Operations per run (default: from the seed).
    pub ops: Option<u64>,
    /// Whether faults are injected (default: from the seed).
    pub faults: Option<bool>,
    /// Whether a `core.shutdown` comes mid-traffic (default: from the seed).
    pub shutdown: Option<bool>,
    /// Whether files of several MiB occur (default: from the seed).
    pub big_files: Option<bool>,
    /// Whether the ramfs is small enough to run out of space (default:
    /// from the seed).
    pub tight: Option<bool>,
    /// Whether a slow client floods the agent while others write in bulk,
    /// so backpressure reaches the agent's receive buffer (default: from
    /// the seed).
    pub backpressure: Option<bool>,
}

impl Options {
    /// The options as `key=value` pairs for `cargo xtask sim --options`
    /// (empty for the defaults), so a replay command reproduces a run.
    pub fn to_arg(&self) -> String {
        let switch = |on: bool| if on { "on" } else { "off" };
        let mut pairs = Vec::new();
        match self.bug {
            Bug::None => {}
            Bug::DropDisconnectNotice => pairs.push("bug=drop-disconnect-notice".to_string()),
            Bug::FlipGuestData => pairs.push("bug=flip-guest-data".to_string()),
        }
        if let Some(ops) = self.ops {
            pairs.push(format!("ops={ops}"));
        }
        let flags = [
            ("faults", self.faults),
            ("shutdown", self.shutdown),
            ("big-files", self.big_files),
            ("tight", self.tight),
            ("backpressure", self.backpressure),
        ];
        pairs.extend(flags.iter().filter_map(|(key, v)| v.map(|on| format!("{key}={}", switch(on)))));
        pairs.join(",")
    }

    /// Reads what [`Options::to_arg`] writes.
    pub fn parse(arg: &str) -> Result<Options, String> {
        let mut options = Options::default();
        for pair in arg.split(',').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').ok_or_else(|| format!("{pair}: expected key=value"))?;
            let switch = match value {
                "on" => Some(true),
                "off" => Some(false),
                _ => None,
            };
            let flag = || switch.ok_or_else(|| format!("{key} takes on or off, not {value}"));
            match key {
                "bug" if value == "drop-disconnect-notice" => options.bug = Bug::DropDisconnectNotice,
                "bug" if value == "flip-guest-data" => options.bug = Bug::FlipGuestData,
                "bug" if value == "none" => options.bug = Bug::None,
                "ops" => options.ops = Some(value.parse().map_err(|_| format!("ops takes a number, not {value}"))?),
                "faults" => options.faults = Some(flag()?),
                "shutdown" => options.shutdown = Some(flag()?),
                "big-files" => options.big_files = Some(flag()?),
                "tight" => options.tight = Some(flag()?),
                "backpressure" => options.backpressure = Some(flag()?),
                _ => return Err(format!("unknown simulation option {pair}")),
            }
        }
        Ok(options)
    }
}

/// What one run did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunReport {
    /// The seed.
    pub seed: u64,
    /// Calls answered and checked.
    pub ops: u64,
    /// Faults injected.
    pub faults: Faults,
    /// Digest of the whole trace.
    pub trace: u64,
    /// Records in the trace.
    pub trace_records: u64,
    /// Passes of the simulation loop.
    pub passes: u64,
    /// Virtual time the run took, in ns.
    pub sim_ns: u64,
    /// Whether it ended with a shutdown.
    pub shutdown: bool,
}

/// Runs one seed with the guest in `memory`; panics on a violated invariant.
pub fn run(seed: u64, options: &Options, memory: &mut Memory) -> RunReport {
    world::Sim::new(seed, options, memory).run()
}
