//! The shape of one run, drawn from its seed: how many clients and how
//! they behave, how big the ramfs is, how the links delay and cut bytes,
//! and which faults are injected how often.

use agent_core::{MAX_SESSIONS, MIN_OUTBOX};
use wire::{DATA_FRAME_HEAD_MAX, FS_CHUNK_SIZE};

use super::channel::Shape;
use super::content::Content;
use super::hostile::Kind;
use super::workload::{Mix, Sizes};
use super::{Bug, Options};
use crate::rng::Rng;

/// Clients at most: each owns a subtree and a relay slot at a time.
pub const MAX_CLIENTS: u64 = 8;

/// Calls one client keeps in flight at most.
pub const MAX_CALLS_PER_CLIENT: u64 = 8;

/// `List` calls a flooding client sends in one burst and keeps in flight
/// at most:
/// their answers, unread, fill the agent's outbox past its input reserve,
/// so the agent stops taking input and its receive buffer fills. They hold
/// no session, so the agent's session bound does not apply.
pub const FLOOD_CALLS: usize = 600;

// Two connections of every client may hold sessions at once (the old one
// until the agent drops it); they must stay below the agent's bound, whose
// "too many sessions" answer the model does not predict.
const _: () = assert!(2 * MAX_CLIENTS * MAX_CALLS_PER_CLIENT < MAX_SESSIONS as u64);

/// The largest ramfs arena: room for a few 10 MiB files at once.
pub const ARENA_MAX: usize = 40 << 20;

/// The smallest arena: a few dozen blocks and entries, full within a few
/// writes.
const ARENA_MIN: usize = 256 << 10;

/// The largest "tight" arena, where writes run out of space often.
const ARENA_TIGHT_MAX: usize = 768 << 10;

/// Entries of a tight arena: more than its blocks, so that writes run out
/// of blocks (the workload keeps clear of the end of the entry table).
const TIGHT_ENTRIES_MIN: u64 = 64;
const TIGHT_ENTRIES_MAX: u64 = 200;

/// How slow readers read: bytes at most, every so many ns. The slowest
/// (80 KB/s) takes more than the relay's `SLOW_CLIENT_TIMEOUT` over a 1 MiB
/// frame, so the relay drops it; reading in large steps keeps the number
/// of simulation steps low.
const SLOW_READS: [(usize, u64); 3] = [(4096, 50_000_000), (16_384, 20_000_000), (65_536, 10_000_000)];

/// The relay's smallest queue per client in a run: one whole frame (the
/// relay's own lower bound).
const RELAY_QUEUE_MIN: usize = wire::MAX_FRAME_BYTES;

/// The relay's queue per client: the smallest ones cut slow readers off
/// within a short run, the product's own bound is one of them.
const RELAY_QUEUES: [usize; 3] = [RELAY_QUEUE_MIN, 2 * RELAY_QUEUE_MIN, host_sync::relay::CLIENT_QUEUE_BYTES];

/// How a busy host reads the guest in flood runs: 4 KiB per ms.
const SLOW_HOST_READ: (usize, u64) = (4096, 1_000_000);

/// The relay's total bound is this many client queues at most.
const RELAY_TOTAL_CLIENTS_MAX: u64 = 4;

/// Capacities of the host <-> guest link (a virtqueue's worth to a socket's).
const GUEST_LINKS: [usize; 3] = [4096, 65_536, 1 << 20];

/// The agent's outbox in the roomiest runs.
pub const OUTBOX_MAX: usize = 1 << 20;

/// Operations a run issues, at least and at most (a run is short so that a
/// sweep covers many seeds, i.e. many shapes).
const OPS_MIN: u64 = 200;
const OPS_MAX: u64 = 2_000;

/// Operations of a run with a flood at most (its big writes and slow
/// reader make every operation costly).
const FLOOD_OPS_MAX: u64 = 600;

/// Chance that a run with faults has hostile clients.
const HOSTILE_CHANCE: f64 = 0.4;

/// Chance of each kind of hostile client in a run that has them.
const HOSTILE_KIND_CHANCE: f64 = 0.5;

/// Bytes of the file hostile clients read: several MiB, and more than a
/// relay client queue's worth over a few reads.
pub const HOSTILE_FILE_BYTES: u64 = 6 << 20;

/// The fixed part of the bound on an honest request's round trip
/// (invariant (b)), on top of the time its own bytes and those allowed
/// ahead of it take to cross the run's links (see [`Params::draw`]).
pub const RESPONSE_BOUND_NS: u64 = 50_000_000;

/// Read chunks that may be ahead of an answer on the guest link, and of a
/// request on the host link: the agent sends one chunk between two control
/// frames, and one more may be in the link already.
const CHUNKS_AHEAD: u64 = 2;

/// The worst time for `bytes` to cross a link of `shape`: a capacity's
/// worth at a time, each at the longest delay rounded up to the tick.
fn crossing_ns(bytes: u64, shape: Shape) -> u64 {
    bytes.div_ceil(shape.capacity as u64) * (shape.delay_max_ns + shape.tick_ns)
}

/// How one client behaves for a whole run.
#[derive(Debug, Clone, Copy)]
pub struct Behaviour {
    /// Calls in flight at most.
    pub calls: usize,
    /// Longest pause between two new calls, in ns.
    pub think_max_ns: u64,
    /// A slow reader takes at most this many bytes ...
    pub read_bytes: usize,
    /// ... every this many ns (0: reads whatever arrived, at once).
    pub read_every_ns: u64,
    /// Whether its writes to the relay are cut at random sizes.
    pub split_writes: bool,
    /// Whether it floods the agent with a burst of [`FLOOD_CALLS`] `List`
    /// calls beyond `calls` (it also reads very slowly, over a small link).
    pub flood: bool,
}

/// The relay -> client link capacity of a flooding client: small, so its
/// unread answers back up into the relay at once.
pub const FLOOD_LINK_CAPACITY: usize = 2048;

/// Everything drawn from the seed before the run starts.
#[derive(Debug, Clone)]
pub struct Params {
    /// Operations to issue before draining.
    pub ops: u64,
    /// Bytes of the ramfs arena.
    pub arena_bytes: usize,
    /// Entries of the ramfs (`None`: derived from the arena, as the guest
    /// does). Tight arenas get many, so that blocks run out first.
    pub entries: Option<usize>,
    /// Bytes of the agent's outbox.
    pub outbox_bytes: usize,
    /// The agent's read chunk size.
    pub read_chunk_size: usize,
    /// Most bytes the guest driver hands the agent per read.
    pub agent_read_max: usize,
    /// Whether the guest driver sends partial pieces of what the agent offers.
    pub agent_split_writes: bool,
    /// The host -> guest link.
    pub to_guest: Shape,
    /// The guest -> host link (with a flood, small: the agent's answers
    /// back up into its outbox sooner).
    pub to_host: Shape,
    /// Each client <-> relay link.
    pub client_link: Shape,
    /// The relay's queue per client (smaller than the product's so that
    /// its full-queue path is reached within a short run).
    pub relay_queue_bytes: usize,
    /// The relay's queue for all clients together: a few clients' worth, so
    /// that the total bound is reached too.
    pub relay_total_bytes: usize,
    /// The relay reads at most this many guest bytes ...
    pub host_read_bytes: usize,
    /// ... every this many ns (0: whatever arrived, at once). A busy host
    /// (the relay's thread descheduled): with a flood, the agent's answers
    /// back up into its outbox and its receive buffer.
    pub host_read_every_ns: u64,
    /// Operation weights.
    pub mix: Mix,
    /// File sizes besides small ones: files of several MiB (the chunk
    /// boundaries up to 10 MiB), or many of up to
    /// [`BULK_MAX`](super::workload::BULK_MAX).
    pub sizes: Sizes,
    /// One per client identity (each with its subtree `/c<k>`).
    pub behaviours: Vec<Behaviour>,
    /// Chance that issuing a call schedules a hang-up soon after.
    pub disconnect_chance: f64,
    /// Share of hang-ups done by sending a corrupt length prefix.
    pub bad_prefix_share: f64,
    /// Operation counts at which the host corrupts the guest stream.
    pub glitch_at: Vec<u64>,
    /// Operation count at which a client sends `core.shutdown`.
    pub shutdown_at: Option<u64>,
    /// The planted defect, if any.
    pub bug: Bug,
    /// Hostile clients (after the honest ones), often none.
    pub hostiles: Vec<Kind>,
    /// The file stallers and churners read, if the run has any.
    pub hostile_file: Option<Content>,
    /// How long an honest request or an answer owed to a hostile client
    /// may take, from the relay's forwarding it (invariant (b)):
    /// [`RESPONSE_BOUND_NS`], plus the time [`CHUNKS_AHEAD`] read chunks
    /// take to cross each guest link, plus the time the client's own relay
    /// queue takes to cross its link, plus, when the host reads the guest
    /// slowly, the time to read the relay's whole queue bound and the
    /// agent's outbox at that rate. Nothing in it depends on what other
    /// clients do (an earlier relay waited 10 s for each stalled one).
    pub response_bound_ns: u64,
}

impl Params {
    /// Draws a run's shape.
    pub fn draw(rng: &mut Rng, options: &Options) -> Params {
        let faults = options.faults.unwrap_or_else(|| rng.chance(0.8));
        let flood = options.backpressure.unwrap_or_else(|| faults && rng.chance(0.01));
        let ops = options.ops.unwrap_or_else(|| rng.range(OPS_MIN, if flood { FLOOD_OPS_MAX } else { OPS_MAX }));
        let clients = rng.range(if flood { 2 } else { 1 }, MAX_CLIENTS) as usize;
        let big_files = options.big_files.unwrap_or_else(|| rng.chance(0.03));
        let tight = options.tight.unwrap_or_else(|| !big_files && !flood && rng.chance(0.35));
        let arena_bytes = if tight {
            rng.range(ARENA_MIN as u64, ARENA_TIGHT_MAX as u64) as usize
        } else {
            rng.range((ARENA_MAX / 4) as u64, ARENA_MAX as u64) as usize
        };
        let shutdown = options.shutdown.unwrap_or_else(|| faults && rng.chance(0.15));
        let odd_chunk = rng.range(1, 9_000) as usize;
        let guest_link = link(rng, &GUEST_LINKS, 200_000);
        let relay_queue_bytes = if flood { RELAY_QUEUE_MIN } else { *rng.pick(&RELAY_QUEUES) };
        let mut params = Params {
            ops,
            arena_bytes,
            entries: tight.then(|| rng.range(TIGHT_ENTRIES_MIN, TIGHT_ENTRIES_MAX) as usize),
            outbox_bytes: if flood { MIN_OUTBOX } else { *rng.pick(&[MIN_OUTBOX, 2 * MIN_OUTBOX, OUTBOX_MAX]) },
            read_chunk_size: *rng.pick(&[FS_CHUNK_SIZE, FS_CHUNK_SIZE, 4096, 65_536, odd_chunk]),
            agent_read_max: *rng.pick(&[4096, 65_536, usize::MAX]),
            agent_split_writes: rng.chance(0.3),
            to_guest: guest_link,
            to_host: if flood { Shape { capacity: GUEST_LINKS[0], ..guest_link } } else { guest_link },
            client_link: link(rng, &[2048, 16_384, 212_992, 1 << 20], 50_000),
            relay_queue_bytes,
            relay_total_bytes: relay_queue_bytes * rng.range(1, RELAY_TOTAL_CLIENTS_MAX) as usize,
            host_read_bytes: if flood { SLOW_HOST_READ.0 } else { usize::MAX },
            host_read_every_ns: if flood { SLOW_HOST_READ.1 } else { 0 },
            mix: Mix::draw(rng, faults),
            sizes: Sizes {
                big: if big_files { 0.01 } else { 0.0 },
                bulk: if !flood && faults && !tight && rng.chance(0.04) { 0.3 } else { 0.0 },
            },
            behaviours: (0..clients).map(|i| behaviour(rng, faults, flood && i == 0)).collect(),
            disconnect_chance: if faults && rng.chance(0.6) { *rng.pick(&[0.002, 0.01, 0.03]) } else { 0.0 },
            bad_prefix_share: rng.range(0, 3) as f64 / 10.0,
            glitch_at: if faults && rng.chance(0.25) { glitches(rng, ops) } else { Vec::new() },
            shutdown_at: shutdown.then(|| rng.range(ops / 4, ops)),
            bug: options.bug,
            hostiles: Vec::new(),
            hostile_file: None,
            response_bound_ns: RESPONSE_BOUND_NS,
        };
        let chunks = CHUNKS_AHEAD * (params.read_chunk_size + DATA_FRAME_HEAD_MAX) as u64;
        params.response_bound_ns += crossing_ns(chunks, params.to_host) + crossing_ns(chunks, params.to_guest);
        params.response_bound_ns += crossing_ns(params.relay_queue_bytes as u64, params.client_link);
        if params.host_read_every_ns > 0 {
            let bytes = (params.relay_total_bytes + params.outbox_bytes) as u64;
            params.response_bound_ns += bytes.div_ceil(params.host_read_bytes as u64) * params.host_read_every_ns;
        }
        // Hostile clients need room for their file and the hog's staged
        // writes: not with a tight arena, nor with a flood.
        if faults && !tight && !flood && rng.chance(HOSTILE_CHANCE) {
            let all = [Kind::Staller, Kind::Churner, Kind::Forger, Kind::Hog];
            params.hostiles = all.into_iter().filter(|_| rng.chance(HOSTILE_KIND_CHANCE)).collect();
            if params.hostiles.is_empty() {
                params.hostiles.push(*rng.pick(&all));
            }
            if params.hostiles.iter().any(|k| matches!(k, Kind::Staller | Kind::Churner)) {
                params.hostile_file = Some(Content::new(rng.range(1, u64::MAX), HOSTILE_FILE_BYTES));
            }
        }
        // Drawn last, so the rest of the shape is what the seed drew
        // before they existed.
        params.mix.draw_current(rng);
        if params.shutdown_at.is_some() {
            params.mix.without_symlinks();
        }
        if !params.hostiles.is_empty() && rng.chance(HOSTILE_KIND_CHANCE) {
            params.hostiles.push(Kind::Thief);
        }
        params
    }
}

impl Params {
    /// The relay's settings for this run (with the planted defect, if it is the relay's).
    pub fn relay_options(&self) -> host_sync::relay::RelayOptions {
        use host_sync::relay::{PlantedBug, RelayOptions};
        let planted = match self.bug {
            Bug::ReuseBeforeDrain => PlantedBug::ReuseBeforeDrain,
            Bug::NoEviction => PlantedBug::NoEviction,
            // The relay that waited for slow clients had no flow control.
            Bug::RelayWaits => PlantedBug::NoFlowControl,
            _ => PlantedBug::None,
        };
        RelayOptions {
            client_queue_bytes: self.relay_queue_bytes,
            total_queue_bytes: self.relay_total_bytes,
            planted,
            ..RelayOptions::default()
        }
    }
}

impl Params {
    /// The agent's planted defect for this run, if it is the agent's.
    pub fn agent_planted(&self) -> agent_core::PlantedBug {
        match self.bug {
            Bug::HostMessagesAnyId => agent_core::PlantedBug::HostMessagesAnyId,
            Bug::NoSessionQuota => agent_core::PlantedBug::NoSessionQuota,
            Bug::ResyncWithoutQuiet => agent_core::PlantedBug::ResyncWithoutQuiet,
            Bug::HandlesSurviveDisconnect => agent_core::PlantedBug::HandlesSurviveDisconnect,
            _ => agent_core::PlantedBug::None,
        }
    }
}

/// A link shape with one of `capacities` and delays up to `delay_max_ns`.
fn link(rng: &mut Rng, capacities: &[usize], delay_max_ns: u64) -> Shape {
    let delay_max_ns = rng.range(0, delay_max_ns);
    Shape {
        capacity: *rng.pick(capacities),
        delay_min_ns: rng.range(0, delay_max_ns / 4),
        delay_max_ns,
        pieces_max: rng.range(1, 4),
        tick_ns: *rng.pick(&[1, 1_000, 10_000, 50_000]),
    }
}

fn behaviour(rng: &mut Rng, faults: bool, flood: bool) -> Behaviour {
    let slow = flood || (faults && rng.chance(0.2));
    let (read_bytes, read_every_ns) = match (slow, flood) {
        (false, _) => (usize::MAX, 0),
        (true, true) => SLOW_READS[0],
        (true, false) => *rng.pick(&SLOW_READS),
    };
    Behaviour {
        calls: rng.range(1, MAX_CALLS_PER_CLIENT) as usize,
        think_max_ns: if flood { 0 } else { *rng.pick(&[0, 20_000, 200_000]) },
        read_bytes,
        read_every_ns,
        split_writes: rng.chance(0.3),
        flood,
    }
}

/// One or two glitch points, in order.
fn glitches(rng: &mut Rng, ops: u64) -> Vec<u64> {
    let mut at: Vec<u64> = (0..rng.range(1, 2)).map(|_| rng.range(ops / 8, ops * 7 / 8)).collect();
    at.sort_unstable();
    at
}
