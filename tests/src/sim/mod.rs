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
//! client k ─┤          handshake: proto::Handshake    (agent_core::driver::step)
//! hostile  ─┘
//! ```
//!
//! # The model and concurrency
//!
//! Each client owns a subtree (`/c<k>`) and issues the seed-era path
//! operations (`Stat`, `List`, `Read`, `Write`, `Mkdir`, `Remove`,
//! `RemoveDir`, `Copy`, `Rename`) and the current surface's path
//! operations (PROTOCOL.md §10: `Symlink`, `ReadLink`,
//! `Stat{follow_symlink}`, `RealPath`, `SetStat` of a mode and/or mtime,
//! `Mkdir{mode, user}`, `RemoveDir{recursive: false}`, which must fail on
//! a non-empty directory and remove nothing), with weights drawn per run;
//! the model predicts every answer exactly. Symlinks all have one name no
//! other operation uses, so no path leads through one; a `Stat` or
//! `RealPath` that follows one also depends on where it leads. A symlink
//! takes a block: one whose answer a lost connection took while space may
//! have run out is removed by the next connection before anything else.
//! The simulated guest lends its agent a handle table of
//! [`SIM_HANDLES`] slots; the handles in it are the hostile clients'
//! (honest clients do their handle I/O in the conformance tests against
//! Linux, not here). A client never starts an operation while an older one
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
//! prefix on the guest stream, with a tail of more corrupt bytes still
//! arriving for up to 40 ms, as from a dying writer (the agent must await a
//! fresh stream, start over only once the link has been quiet, and redo
//! the handshake); tight ramfs arenas
//! (writes must fail "no space left" and lose nothing); slow clients and
//! small queues (backpressure up to the agent's receive buffer; a client
//! that falls a relay queue behind is cut off); `core.shutdown` in the
//! middle of traffic.
//!
//! # Hostile clients, drawn per run (most runs have none)
//!
//! Other local processes on the relay socket (`hostile`), checked only for
//! what they are owed: a *staller* opens reads of a 6 MiB file (more than
//! the run's relay client queue) and never reads its socket, is cut off,
//! and comes back; a *churner* leaves at the first data frame of a read of
//! it and comes back, so slots are reused while the old occupant's frames
//! are in flight (also while a staller holds the relay); a *forger* sends
//! `core.relay.client.disconnected` for every id, `core.clock.sync` to 0
//! and `core.init.ack` on its own ids (owed `core.error` `invalid_session`
//! from the agent) and frames on id 0 without the lone `SHUTDOWN` flag
//! (owed the relay's own refusal); a *session hog* opens up to
//! `HOG_EXCESS_MAX` writes past `MAX_SESSIONS_PER_CLIENT` and never ends
//! them (owed "too many sessions for one client" past its share; the
//! agent's idle write bound may end the others); a *handle thief* sends
//! every handle op (`Read`, `Write`, `ReadDir`, `FStat`, `FSetStat`,
//! `CloseHandle`) on numbers it does not hold, shaped as the agent numbers
//! handles (so other clients' numbers are among them) and the numbers its
//! own earlier connections opened, which its slot's next occupant may be
//! (owed exactly "{op}: Bad file descriptor (os error 9)" each time, and
//! nothing else).
//!
//! # Invariants (a violation panics: "invariant violated: ...")
//!
//! - Every request gets exactly one terminal frame; the only frames allowed
//!   after it are "unknown write session" answers to chunks of a write that
//!   already failed. Unanswered requests at the end must be excused (their
//!   client left, the shutdown came first, or they claimed generation < 5).
//! - No frame exceeds `MAX_FRAME`; the relay never has to refuse an honest
//!   client's frame.
//! - (a) No client, honest or hostile, ever receives a frame for an id it
//!   did not open on its own connection (`proto::Ids::issued`), however
//!   slots are reused.
//! - (b) A fast honest client's metadata call (anything but a read or a
//!   write) ends within `Params::response_bound_ns` of the relay forwarding
//!   it, and every answer owed to a hostile client comes within the same
//!   bound, whatever other clients do: a fixed part plus the time a few
//!   read chunks take to cross the guest links and the client's own relay
//!   queue its link, all from the run's parameters (an earlier relay
//!   stalled everyone for 10 s per stalled client).
//! - (c) The relay's queued bytes never exceed
//!   `RelayOptions::total_queue_bytes`.
//! - Every answer is what the model predicts: exact error messages, `Stat`
//!   and `List` metadata, read data byte for byte; "no space left" only
//!   when the space bound allows it.
//! - Once the agent has handled a disconnect notice, no session and no
//!   handle of that range survives (`Agent::open_handles_of`); after a
//!   stream reset none at all.
//! - A handle never answers a client that did not open it: the thief gets
//!   `EBADF` for every number it tries, never data, an `ok` or a session,
//!   and the model shows no honest client's file changed.
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
mod hostile;
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

/// A defect planted in the simulator's host side, the shipped relay core
/// or the agent, to show that the checks catch what it breaks (the product
/// keeps each switch off: `RelayOptions::planted`, `Config::planted`).
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
    /// The relay hands a slot to a new client as soon as the old one
    /// leaves, without waiting for the guest's barrier.
    ReuseBeforeDrain,
    /// The relay never cuts a client off: its queues grow without bound.
    NoEviction,
    /// The agent honours host-only messages on any id, so a relay client
    /// can forge them.
    HostMessagesAnyId,
    /// The agent does not enforce a relay client's share of sessions.
    NoSessionQuota,
    /// The relay stops reading the guest while a client's queue is full,
    /// for up to 10 s (`OLD_RELAY_PATIENCE_NS`), as an earlier relay did.
    RelayWaits,
    /// The agent takes a corrupt stream for a fresh one at once, without
    /// waiting for the link to be quiet.
    ResyncWithoutQuiet,
    /// The agent keeps a disconnected client's handles open for the next
    /// client of its slot.
    HandlesSurviveDisconnect,
}

impl Bug {
    /// Every planted defect with its option value.
    pub const ALL: [(Bug, &'static str); 9] = [
        (Bug::DropDisconnectNotice, "drop-disconnect-notice"),
        (Bug::FlipGuestData, "flip-guest-data"),
        (Bug::ReuseBeforeDrain, "reuse-before-drain"),
        (Bug::NoEviction, "no-eviction"),
        (Bug::HostMessagesAnyId, "host-messages-any-id"),
        (Bug::NoSessionQuota, "no-session-quota"),
        (Bug::RelayWaits, "relay-waits"),
        (Bug::ResyncWithoutQuiet, "resync-without-quiet"),
        (Bug::HandlesSurviveDisconnect, "handles-survive-disconnect"),
    ];

    /// The option value naming this defect.
    pub fn name(self) -> &'static str {
        Bug::ALL.iter().find(|(b, _)| *b == self).map_or("none", |(_, n)| n)
    }
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
        if self.bug != Bug::None {
            pairs.push(format!("bug={}", self.bug.name()));
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
                "bug" if value == "none" => options.bug = Bug::None,
                "bug" => {
                    options.bug = Bug::ALL
                        .iter()
                        .find(|(_, name)| *name == value)
                        .map(|(bug, _)| *bug)
                        .ok_or_else(|| format!("unknown planted bug {value}"))?
                }
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

/// Handle slots of the simulated guest's table (the guest's is
/// `agent_core::handles::MAX_HANDLES`; a run opens far fewer).
pub const SIM_HANDLES: usize = 256;

/// Long directory paths the simulated guest's table keeps.
pub const SIM_DIR_PATHS: usize = 4;

/// Runs one seed with the guest in `memory`; panics on a violated invariant.
pub fn run(seed: u64, options: &Options, memory: &mut Memory) -> RunReport {
    // A fresh handle table per run (its slots' type names the run's ramfs).
    let mut slots: Vec<_> = (0..SIM_HANDLES).map(|_| agent_core::handles::HandleSlot::EMPTY).collect();
    let mut dir_paths: Vec<_> = (0..SIM_DIR_PATHS).map(|_| agent_core::path::PathBuf::new()).collect();
    let handles = agent_core::handles::HandleMemory { slots: &mut slots, dir_paths: &mut dir_paths };
    world::Sim::new(seed, options, memory, handles).run()
}
