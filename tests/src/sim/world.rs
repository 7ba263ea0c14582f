//! One run: the state every part shares (virtual clock, the one random
//! generator, the model, the space bound, the trace), the parts (guest,
//! host, clients, the guest link), and the loop that steps them, moves the
//! clock to the next event, injects the planned faults, and checks.
//!
//! A run goes through phases: traffic (the workload), drain (no new calls;
//! then the whole tree and the ramfs accounting are compared with the
//! model), cleanup (every client removes its subtree; then the ramfs must
//! be back to its empty baseline) and done. A `core.shutdown` sends it to
//! halting instead: once everything in flight has landed, every call must
//! have been answered or excused, and the tree must match.

use std::collections::VecDeque;

use agent_core::State;
use host_sync::relay::RELAY_SLOTS;

use super::channel::Channel;
use super::client::{Client, Leave, settle_open_write};
use super::guest::{Guest, Memory};
use super::host::{Host, Peers};
use super::hostile::{HOSTILE_FILE, Hostile};
use super::model::Model;
use super::params::{MAX_CLIENTS, Params};
use super::space::Space;
use super::trace::{Faults, Trace};
use super::{Options, RunReport, verify, violation};
use crate::rng::Rng;
use agent_core::handles::HandleMemory;
use agent_core::ramfs::Ramfs;

/// The host's wall clock at virtual time 0, in Unix ns.
pub const UNIX_BASE_NS: u64 = 1_700_000_000_000_000_000;

/// Passes of the loop in one run, at most: far above what the longest run
/// needs, so reaching it means something spins without finishing.
const MAX_PASSES: u64 = 50_000_000;

/// Virtual time of one run, at most (an hour; runs take seconds).
const MAX_SIM_NS: u64 = 3_600_000_000_000;

/// Passes at one instant before the clock moves on by force.
const SAME_INSTANT_PASSES: u32 = 64;

/// Honest client connections a run may make before faults that cost one
/// stop and slow clients read at full speed: a slow reader the relay keeps
/// cutting off would otherwise reconnect for ever. (Slots are reused
/// within a run: the relay hands out the lowest free one once the guest
/// has drained it; a client that finds none tries again later. Hostile
/// clients' connections are not counted: they make few.)
const ATTACH_FAULT_LIMIT: u64 = RELAY_SLOTS as u64 - 3 * MAX_CLIENTS;

/// Where the run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Issuing the workload.
    Traffic,
    /// No new calls; waiting for everything to land.
    Drain,
    /// Removing every subtree.
    Cleanup,
    /// The agent powered off after `core.shutdown`.
    Halting,
    /// Finished and checked.
    Done,
}

/// The `core.shutdown` of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShutdownPlan {
    /// None in this run.
    Never,
    /// Once this many calls have been issued.
    Planned(u64),
    /// To be given to a connected client.
    Due,
    /// A client is sending it.
    Queued,
    /// The relay forwarded it.
    Sent,
}

/// What every part of the run reads and changes.
pub struct Shared {
    /// Virtual time in ns (the agent's monotonic clock).
    pub now: u64,
    /// The run's only source of randomness.
    pub rng: Rng,
    /// The run's shape.
    pub params: Params,
    /// What the filesystem must hold.
    pub model: Model,
    /// The bound on space in use.
    pub space: Space,
    /// The determinism digest.
    pub trace: Trace,
    /// Faults injected.
    pub faults: Faults,
    /// Where the run is.
    pub phase: Phase,
    /// Calls issued by the workload.
    pub issued: u64,
    /// Calls answered and checked.
    pub completed: u64,
    /// Client connections made.
    pub attaches: u64,
    /// The shutdown's progress.
    pub shutdown: ShutdownPlan,
    /// Sequence number of the forwarded `core.shutdown`.
    pub shutdown_seq: Option<u64>,
}

impl Shared {
    /// Whether faults that end connections may be injected now.
    pub fn faults_allowed(&self) -> bool {
        self.phase == Phase::Traffic
            && self.attaches < ATTACH_FAULT_LIMIT
            && matches!(self.shutdown, ShutdownPlan::Never | ShutdownPlan::Planned(_))
    }

    /// Whether slow clients read slowly (a slow client may be dropped,
    /// which costs a connection).
    pub fn slow_readers_allowed(&self) -> bool {
        self.attaches < ATTACH_FAULT_LIMIT
    }
}

/// The earlier of two optional times.
pub fn earliest(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, y) => x.or(y),
    }
}

/// A run in progress.
pub struct Sim<'m> {
    seed: u64,
    shared: Shared,
    guest: Guest<'m>,
    host: Host,
    clients: Vec<Client>,
    hostiles: Vec<Hostile>,
    h2g: Channel,
    g2h: Channel,
    glitch_at: VecDeque<u64>,
    /// Host frame count when the current guest stream began.
    stream_start: u64,
    /// The agent's handled-frame count when the current stream began.
    received_base: u64,
    passes: u64,
}

impl<'m> Sim<'m> {
    /// A run of `seed`, its guest in `memory`.
    pub fn new(seed: u64, options: &Options, memory: &'m mut Memory, handles: HandleMemory<'m, Ramfs<'m>>) -> Sim<'m> {
        let mut rng = Rng::new(seed);
        let params = Params::draw(&mut rng, options);
        let guest = Guest::new(memory, handles, &params);
        let usage = guest.agent.fs().usage();
        let space = Space::new(usage.blocks_total as u64, usage.entries_total as u64);
        let clients: Vec<Client> = params.behaviours.iter().enumerate().map(|(i, b)| Client::new(i, *b)).collect();
        let file = params.hostile_file.unwrap_or(super::content::Content::EMPTY);
        let hostiles =
            params.hostiles.iter().enumerate().map(|(i, k)| Hostile::new(clients.len() + i, *k, file)).collect();
        let shutdown = params.shutdown_at.map_or(ShutdownPlan::Never, ShutdownPlan::Planned);
        let relay = params.relay_options();
        let mut guest = guest;
        let mut model = Model::default();
        let mut space = space;
        if let Some(content) = params.hostile_file {
            verify::put_file(guest.agent.fs_mut(), HOSTILE_FILE, content);
            model.write(HOSTILE_FILE, None, content).expect("the root takes a file");
        }
        if params.hostiles.contains(&super::hostile::Kind::Hog) {
            // The hog's staged writes hold a path block each, for as long as the run.
            let blocks = (agent_core::MAX_SESSIONS_PER_CLIENT as u64 + super::hostile::HOG_EXCESS_MAX) * 2;
            space.reserve(super::space::Reservation { blocks, entries: 0 }, model.content_blocks());
        }
        Sim {
            seed,
            h2g: Channel::new(1, params.to_guest),
            g2h: Channel::new(2, params.to_host),
            glitch_at: params.glitch_at.iter().copied().collect(),
            shared: Shared {
                now: 0,
                rng,
                params,
                model,
                space,
                trace: Trace::default(),
                faults: Faults::default(),
                phase: Phase::Traffic,
                issued: 0,
                completed: 0,
                attaches: 0,
                shutdown,
                shutdown_seq: None,
            },
            guest,
            host: Host::new(relay),
            clients,
            hostiles,
            stream_start: 0,
            received_base: 0,
            passes: 0,
        }
    }

    /// Runs to the end and checks; panics on a violated invariant.
    pub fn run(mut self) -> RunReport {
        let mut same_instant = 0;
        while self.shared.phase != Phase::Done {
            self.passes += 1;
            if self.passes > MAX_PASSES || self.shared.now > MAX_SIM_NS {
                violation!("the run did not finish: {}", self.describe());
            }
            let progress = self.pass();
            self.inject();
            if progress {
                same_instant += 1;
                if same_instant >= SAME_INSTANT_PASSES {
                    same_instant = 0;
                    self.shared.now += 1;
                }
                continue;
            }
            same_instant = 0;
            if !self.settle() {
                self.jump();
            }
        }
        RunReport {
            seed: self.seed,
            ops: self.shared.completed,
            faults: self.shared.faults,
            trace: self.shared.trace.digest(),
            trace_records: self.shared.trace.records(),
            passes: self.passes,
            sim_ns: self.shared.now,
            shutdown: self.shared.shutdown_seq.is_some(),
        }
    }

    /// One step of every part.
    fn pass(&mut self) -> bool {
        let step = self.guest.step(&mut self.h2g, &mut self.g2h, &mut self.shared);
        if step.reset {
            self.new_stream();
        }
        self.check_guest();
        let mut progress = step.progress;
        let mut peers = Peers { honest: &mut self.clients, hostile: &mut self.hostiles };
        progress |= self.host.step(&mut peers, &mut self.h2g, &mut self.g2h, &mut self.shared);
        for client in &mut self.clients {
            progress |= client.step(&mut self.shared);
        }
        for hostile in &mut self.hostiles {
            progress |= hostile.step(&mut self.shared);
        }
        progress | self.connect()
    }

    /// Frames the agent has handled on all streams so far.
    fn processed(&self) -> u64 {
        self.stream_start + (self.guest.agent.stats().frames_received - self.received_base)
    }

    /// Invariants of the agent after each of its steps.
    fn check_guest(&mut self) {
        if matches!(self.guest.agent.state(), State::AwaitingStream { .. }) && !self.host.resyncing() {
            violation!("the agent lost the stream, though the host sent no corrupt length prefix");
        }
        let processed = self.processed();
        if processed > self.host.sent {
            violation!("the agent handled {processed} frames of the {} it was sent", self.host.sent);
        }
        let agent = &self.guest.agent;
        self.host.checks.retain(|check| {
            if processed < check.after {
                return true;
            }
            if let Some(id) = agent.session_ids().find(|&id| check.start <= id && id < check.end) {
                violation!(
                    "session #{id} survived the disconnect of ids {}..{} (the agent handled {processed} frames)",
                    check.start,
                    check.end
                );
            }
            if agent.open_handles_of(check.start) != 0 {
                violation!(
                    "{} handles survived the disconnect of ids {}..{}",
                    agent.open_handles_of(check.start),
                    check.start,
                    check.end
                );
            }
            false
        });
        if self.guest.off && self.shared.phase != Phase::Halting {
            self.shared.phase = Phase::Halting;
        }
    }

    /// The agent started over after a corrupt stream: a new connection.
    fn new_stream(&mut self) {
        if self.processed() != self.host.sent {
            violation!("the agent dropped frames sent before the corrupt prefix: {}", self.describe());
        }
        if self.guest.agent.sessions() != 0 {
            violation!("{} sessions survived the stream reset", self.guest.agent.sessions());
        }
        if self.guest.agent.open_handles() != 0 {
            violation!("{} handles survived the stream reset", self.guest.agent.open_handles());
        }
        // What the host wrote is still on its way (a corrupt stream's tail
        // included): the agent's quiet period is what keeps it out of the
        // fresh stream. What the agent sent on the old stream is dropped.
        self.g2h.reset();
        self.host.new_stream();
        self.stream_start = self.host.sent;
        self.received_base = self.guest.agent.stats().frames_received;
        for client in &mut self.clients {
            client.release_lingering(&mut self.shared);
        }
    }

    fn connect(&mut self) -> bool {
        if !self.host.serving() || self.shared.phase == Phase::Halting {
            return false;
        }
        let mut progress = false;
        for client in &mut self.clients {
            if client.wants_to_connect(self.shared.now)
                && let Some((slot, link)) = self.host.attach(client.index, client.floods(), &mut self.shared)
            {
                self.shared.attaches += 1;
                client.connected(slot, link);
                progress = true;
            }
        }
        for hostile in &mut self.hostiles {
            if hostile.wants_to_connect(&self.shared)
                && let Some((slot, link)) = self.host.attach(hostile.index, false, &mut self.shared)
            {
                hostile.connected(slot, link);
                progress = true;
            }
        }
        progress
    }

    /// Moves to draining, and injects the glitches and the shutdown when due.
    fn inject(&mut self) {
        let shared = &mut self.shared;
        if shared.phase == Phase::Traffic && shared.issued >= shared.params.ops {
            shared.phase = Phase::Drain;
        }
        if let Some(&at) = self.glitch_at.front()
            && shared.issued >= at
            && (self.host.serving() || !shared.faults_allowed())
        {
            self.glitch_at.pop_front();
            if shared.faults_allowed() {
                self.host.glitch();
            }
        }
        if let ShutdownPlan::Planned(at) = shared.shutdown
            && shared.issued >= at
        {
            shared.shutdown = ShutdownPlan::Due;
        }
        if shared.shutdown == ShutdownPlan::Due && shared.phase != Phase::Halting {
            let active: Vec<usize> = self.clients.iter().filter(|c| c.is_active()).map(|c| c.index).collect();
            if !active.is_empty() {
                let chosen = *shared.rng.pick(&active);
                self.clients[chosen].shutdown_due = true;
                shared.shutdown = ShutdownPlan::Queued;
            }
        }
    }

    /// At a standstill: ends the drain or the cleanup when everything has
    /// landed. Whether the phase moved on.
    fn settle(&mut self) -> bool {
        let phase = self.shared.phase;
        let ready = match phase {
            Phase::Drain => self.shared.shutdown == ShutdownPlan::Never,
            Phase::Cleanup => self.clients.iter().all(|c| c.cleaned),
            _ => false,
        };
        if !ready || !self.quiescent() {
            return false;
        }
        if phase == Phase::Drain {
            self.check_tree();
            self.shared.phase = Phase::Cleanup;
        } else {
            if let Some(content) = self.shared.params.hostile_file {
                // The hostile clients' file goes last, with them gone.
                let now = self.shared.now;
                verify::remove_file(self.guest.agent.fs_mut(), HOSTILE_FILE, now);
                self.shared.model.apply(&super::model::Op::Remove(HOSTILE_FILE.to_string()));
                let _ = content;
            }
            self.check_baseline();
            self.shared.phase = Phase::Done;
        }
        true
    }

    /// Whether nothing is in flight anywhere.
    fn quiescent(&mut self) -> bool {
        self.host.serving()
            && self.host.is_idle()
            && self.host.checks.is_empty()
            && self.h2g.is_idle()
            && self.g2h.is_idle()
            && self.clients.iter().all(Client::is_settled)
            && self.hostiles.iter().all(|h| h.is_gone(&self.shared))
            && self.processed() == self.host.sent
            && self.guest.agent.poll_transmit().is_none()
    }

    /// Moves the clock to the next event; with none left, a halted run
    /// ends and any other run is stuck.
    fn jump(&mut self) {
        let now = self.shared.now;
        let after = |t: Option<u64>| t.filter(|&t| t > now);
        let mut next = earliest(after(self.guest.next_event_ns()), self.host.next_event_ns(now));
        next = earliest(next, after(self.h2g.next_arrival_ns()));
        next = earliest(next, after(self.g2h.next_arrival_ns()));
        for client in &self.clients {
            next = earliest(next, after(client.next_event_ns(&self.shared)));
        }
        for hostile in &self.hostiles {
            next = earliest(next, after(hostile.next_event_ns(&self.shared)));
        }
        match next {
            Some(t) => self.shared.now = t,
            None if self.shared.phase == Phase::Halting => self.finish_halt(),
            None => violation!("the run is stuck: {}", self.describe()),
        }
    }

    /// After the drain: the tree and the accounting match the model.
    fn check_tree(&mut self) {
        if self.guest.agent.sessions() != 0 {
            violation!("{} sessions remain with no call in flight", self.guest.agent.sessions());
        }
        verify::compare_tree(self.guest.agent.fs_mut(), &self.shared.model);
        verify::check_usage(self.guest.agent.fs().usage(), &self.shared.model);
    }

    /// After the cleanup: the ramfs is back to its empty baseline.
    fn check_baseline(&mut self) {
        let usage = self.guest.agent.fs().usage();
        if (usage.blocks_used, usage.entries_used, usage.contents_used) != (0, 1, 0) || self.shared.model.entries() != 1
        {
            violation!("the ramfs did not return to its baseline after removing everything: {usage:?}");
        }
    }

    /// After a shutdown: every call answered or excused, open writes
    /// decided from the filesystem, and the tree matching the model.
    fn finish_halt(&mut self) {
        for client in &mut self.clients {
            if client.hung_up() {
                // Its relay thread waits on the powered-off guest and will
                // never see the hang-up: settle its calls as a departure.
                client.left(Leave::HungUp, &mut self.shared);
            }
            client.check_unanswered(&self.shared);
        }
        for client in &mut self.clients {
            for mut w in client.take_open_writes() {
                verify::inspect_open_write(self.guest.agent.fs_mut(), &mut w);
                settle_open_write(&w, &format!("client {}", client.index), &mut self.shared);
            }
        }
        if self.guest.agent.state() != State::Off || self.guest.agent.sessions() != 0 {
            violation!(
                "after power-off the agent is {:?} with {} sessions",
                self.guest.agent.state(),
                self.guest.agent.sessions()
            );
        }
        self.check_tree();
        self.shared.phase = Phase::Done;
    }

    /// The state of the run, for a failure message.
    fn describe(&mut self) -> String {
        let mut clients: Vec<String> = self.clients.iter().map(Client::describe).collect();
        clients.extend(self.hostiles.iter().map(Hostile::describe));
        let unsent = self.guest.agent.poll_transmit().map_or(0, <[u8]>::len);
        format!(
            "at {} ns, {:?}, {} calls issued, {} answered; host sent {} frames, agent handled {}, agent {:?} with \
             {} sessions and {unsent} bytes to send; links to/from the guest idle: {}/{}; relay idle: {}; \
             clients: {}",
            self.shared.now,
            self.shared.phase,
            self.shared.issued,
            self.shared.completed,
            self.host.sent,
            self.processed(),
            self.guest.agent.state(),
            self.guest.agent.sessions(),
            self.h2g.is_idle(),
            self.g2h.is_idle(),
            self.host.is_idle(),
            clients.join("; ")
        )
    }
}
