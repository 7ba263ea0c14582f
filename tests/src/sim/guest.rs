//! The guest side: the real [`Agent`] over a [`Ramfs`], driven the way
//! agent-core's blocking driver drives it (`driver::run` and its `step`):
//! deadlines first, then events, then sending up to a burst, then either
//! discarding input until the link has been quiet for
//! [`RESYNC_QUIET_NS`] (after a corrupt stream) or reading what the
//! receive buffer has room for.

use agent_core::driver::{PowerOff, RESYNC_QUIET_NS, TX_BURST_BYTES};
use agent_core::ramfs::Ramfs;
use agent_core::{Agent, Config, Event, MIN_RX_BUFFER, State};

use super::channel::Channel;
use super::params::{ARENA_MAX, OUTBOX_MAX, Params};
use super::trace::Mark;
use super::violation;
use super::world::Shared;

/// The guest's memory: the ramfs arena and the agent's buffers, allocated
/// once and reused by every run of a sweep (a run never reads what an
/// earlier one left: the ramfs initialises its tables and the agent reads
/// only bytes it was given).
pub struct Memory {
    arena: Vec<u8>,
    rx: Vec<u8>,
    tx: Vec<u8>,
}

impl Memory {
    /// Memory for the largest run.
    pub fn new() -> Memory {
        Memory { arena: vec![0; ARENA_MAX], rx: vec![0; MIN_RX_BUFFER], tx: vec![0; OUTBOX_MAX] }
    }
}

impl Default for Memory {
    fn default() -> Self {
        Memory::new()
    }
}

/// What one guest step did.
#[derive(Debug, Clone, Copy, Default)]
pub struct GuestStep {
    /// Whether any byte moved or any state changed.
    pub progress: bool,
    /// Whether the agent started over on a fresh stream.
    pub reset: bool,
}

/// The agent and its driver's state.
pub struct Guest<'m> {
    /// The agent under test.
    pub agent: Agent<'m, Ramfs<'m>>,
    /// Since when the link has been quiet while the agent awaits a stream.
    quiet_since: Option<u64>,
    /// Whether the receive buffer was full at the last read.
    rx_full: bool,
    /// Whether the agent powered off.
    pub off: bool,
}

impl<'m> Guest<'m> {
    /// A started agent over a fresh ramfs in `memory`.
    pub fn new(memory: &'m mut Memory, params: &Params) -> Guest<'m> {
        let arena = &mut memory.arena[..params.arena_bytes];
        let fs = match params.entries {
            Some(entries) => Ramfs::with_entries(arena, entries, 0),
            None => Ramfs::new(arena, 0),
        };
        let fs = fs.expect("the arena holds a ramfs");
        let config =
            Config { read_chunk_size: params.read_chunk_size, planted: params.agent_planted(), ..Config::default() };
        let tx = &mut memory.tx[..params.outbox_bytes];
        let mut agent = Agent::new(fs, &mut memory.rx, tx, config).expect("buffers large enough");
        agent.start(0);
        Guest { agent, quiet_since: None, rx_full: false, off: false }
    }

    /// One pass of the driver loop.
    pub fn step(&mut self, h2g: &mut Channel, g2h: &mut Channel, shared: &mut Shared) -> GuestStep {
        let mut step = GuestStep::default();
        if self.off {
            return step;
        }
        let now = shared.now;
        if self.agent.poll_timeout().is_some_and(|t| now >= t) {
            self.agent.handle_timeout(now);
            step.progress = true;
        }
        if self.events(shared) {
            step.progress = true;
            return step;
        }
        step.progress |= self.transmit(g2h, shared);
        if self.agent.state() == State::AwaitingStream {
            step.progress |= self.discard(h2g, shared);
            step.reset = self.maybe_reset(now);
            step.progress |= step.reset;
            return step;
        }
        step.progress |= self.receive(h2g, shared);
        step
    }

    /// When the driver next has something to do without new input.
    pub fn next_event_ns(&self) -> Option<u64> {
        if self.off {
            return None;
        }
        match (self.agent.state(), self.quiet_since) {
            (State::AwaitingStream, Some(since)) => Some(since + RESYNC_QUIET_NS),
            _ => self.agent.poll_timeout(),
        }
    }

    /// Applies the agent's events; whether it powered off.
    fn events(&mut self, shared: &mut Shared) -> bool {
        while let Some(event) = self.agent.poll_event() {
            match event {
                Event::SetWallClock(unix_ns) => shared.trace.record(Mark::Agent, 1, unix_ns),
                Event::PowerOff(PowerOff::Shutdown) => {
                    if shared.shutdown_seq.is_none() {
                        violation!("the agent powered off without a core.shutdown");
                    }
                    shared.trace.record(Mark::Agent, 2, 0);
                    self.off = true;
                    return true;
                }
                Event::PowerOff(PowerOff::HandshakeTimeout) => {
                    violation!("the agent gave up the handshake, though the host answers every core.init.resolved")
                }
            }
        }
        false
    }

    fn transmit(&mut self, g2h: &mut Channel, shared: &mut Shared) -> bool {
        let mut sent = 0;
        while sent < TX_BURST_BYTES && g2h.space() > 0 {
            let Some(bytes) = self.agent.poll_transmit() else { break };
            let mut n = bytes.len().min(TX_BURST_BYTES - sent);
            if shared.params.agent_split_writes && shared.rng.chance(0.3) {
                n = shared.rng.range(1, n as u64) as usize;
            }
            let n = g2h.write(&bytes[..n], shared.now, &mut shared.rng);
            if n == 0 {
                break;
            }
            self.agent.transmitted(n, shared.now);
            sent += n;
        }
        sent > 0
    }

    /// Reads and drops input while awaiting a fresh stream.
    fn discard(&mut self, h2g: &mut Channel, shared: &mut Shared) -> bool {
        let n = h2g.readable(shared.now).len();
        if n == 0 {
            return false;
        }
        h2g.consume(n, &mut shared.trace);
        self.quiet_since = Some(shared.now);
        true
    }

    /// Starts over once the link has been quiet long enough.
    fn maybe_reset(&mut self, now: u64) -> bool {
        match self.quiet_since {
            None => self.quiet_since = Some(now),
            Some(since) if now.saturating_sub(since) >= RESYNC_QUIET_NS => {
                self.quiet_since = None;
                self.agent.reset_stream(now);
                return true;
            }
            Some(_) => {}
        }
        false
    }

    fn receive(&mut self, h2g: &mut Channel, shared: &mut Shared) -> bool {
        let mut progress = false;
        loop {
            let arrived = h2g.readable(shared.now).len();
            if arrived == 0 || !matches!(self.agent.state(), State::Ready | State::AwaitingAck { .. }) {
                break;
            }
            let space = self.agent.rx_space();
            if space.is_empty() {
                shared.faults.rx_full += u64::from(!self.rx_full);
                self.rx_full = true;
                break;
            }
            self.rx_full = false;
            let n = arrived.min(space.len()).min(shared.params.agent_read_max);
            space[..n].copy_from_slice(&h2g.readable(shared.now)[..n]);
            h2g.consume(n, &mut shared.trace);
            self.agent.rx_commit(n, shared.now);
            progress = true;
        }
        progress
    }
}
