//! The guest side: the real [`Agent`] over a [`Ramfs`], driven by
//! agent-core's own [`driver::step`] over a simulated link ([`SimLink`]),
//! whose reads and writes the run's faults cut short. The agent's events
//! are checked here instead of reaching a clock and a platform.

use core::convert::Infallible;

use agent_core::driver;
use agent_core::handles::HandleMemory;
use agent_core::ramfs::Ramfs;
use agent_core::{Agent, Config, Event, MIN_RX_BUFFER, PowerOff};
use embedded_io::{ErrorType, Read, ReadReady, Write, WriteReady};

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
    /// Whether the receive buffer was full at the last read.
    rx_full: bool,
    /// Whether the agent powered off.
    pub off: bool,
}

impl<'m> Guest<'m> {
    /// A started agent over a fresh ramfs in `memory`, with the handle
    /// table `handles`.
    pub fn new(memory: &'m mut Memory, handles: HandleMemory<'m, Ramfs<'m>>, params: &Params) -> Guest<'m> {
        let arena = &mut memory.arena[..params.arena_bytes];
        let fs = match params.entries {
            Some(entries) => Ramfs::with_entries(arena, entries, 0),
            None => Ramfs::new(arena, 0),
        };
        let fs = fs.expect("the arena holds a ramfs");
        let config =
            Config { read_chunk_size: params.read_chunk_size, planted: params.agent_planted(), ..Config::default() };
        let tx = &mut memory.tx[..params.outbox_bytes];
        let mut agent = Agent::with_handles(fs, &mut memory.rx, tx, handles, config).expect("buffers large enough");
        agent.start(0);
        Guest { agent, rx_full: false, off: false }
    }

    /// One pass of the shipped driver loop ([`driver::step`]), then the
    /// agent's events.
    pub fn step(&mut self, h2g: &mut Channel, g2h: &mut Channel, shared: &mut Shared) -> GuestStep {
        let mut step = GuestStep::default();
        if self.off {
            return step;
        }
        let resets = self.agent.stats().stream_resets;
        let now = shared.now;
        let mut link = SimLink { h2g, g2h, shared };
        step.progress = match driver::step(&mut self.agent, &mut link, now) {
            Ok(Some(progress)) => progress,
            Ok(None) => violation!("the simulated link never ends, yet the driver saw its end"),
        };
        step.reset = self.agent.stats().stream_resets != resets;
        // The driver stops reading when the agent's receive buffer is full.
        let rx_full = link.h2g.has_unread() && self.agent.rx_space().is_empty();
        shared.faults.rx_full += u64::from(rx_full && !self.rx_full);
        self.rx_full = rx_full;
        self.events(shared);
        step
    }

    /// When the driver next has something to do without new input.
    pub fn next_event_ns(&self) -> Option<u64> {
        if self.off { None } else { self.agent.poll_timeout() }
    }

    /// Checks the agent's events; notes a power-off.
    fn events(&mut self, shared: &mut Shared) {
        while let Some(event) = self.agent.poll_event() {
            match event {
                Event::SetWallClock(unix_ns) => shared.trace.record(Mark::Agent, 1, unix_ns),
                Event::PowerOff(PowerOff::Shutdown) => {
                    if shared.shutdown_seq.is_none() {
                        violation!("the agent powered off without a core.shutdown");
                    }
                    shared.trace.record(Mark::Agent, 2, 0);
                    self.off = true;
                    return;
                }
                Event::PowerOff(PowerOff::HandshakeTimeout) => {
                    violation!("the agent gave up the handshake, though the host answers every core.init.resolved")
                }
            }
        }
    }
}

/// The guest's end of the two simulated links, as the `embedded_io` link
/// the driver expects: writes may be cut short at random (when the run
/// splits agent writes) and reads return at most `agent_read_max` bytes.
pub struct SimLink<'a> {
    h2g: &'a mut Channel,
    g2h: &'a mut Channel,
    shared: &'a mut Shared,
}

impl ErrorType for SimLink<'_> {
    type Error = Infallible;
}

impl Read for SimLink<'_> {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, Infallible> {
        let now = self.shared.now;
        let readable = self.h2g.readable(now);
        let n = readable.len().min(buf.len()).min(self.shared.params.agent_read_max);
        buf[..n].copy_from_slice(&readable[..n]);
        self.h2g.consume(n, &mut self.shared.trace);
        Ok(n)
    }
}

impl ReadReady for SimLink<'_> {
    fn read_ready(&mut self) -> Result<bool, Infallible> {
        Ok(!self.h2g.readable(self.shared.now).is_empty())
    }
}

impl Write for SimLink<'_> {
    fn write(&mut self, bytes: &[u8]) -> Result<usize, Infallible> {
        let shared = &mut *self.shared;
        let mut n = bytes.len();
        if shared.params.agent_split_writes && n > 1 && shared.rng.chance(0.3) {
            n = shared.rng.range(1, n as u64) as usize;
        }
        Ok(self.g2h.write(&bytes[..n], shared.now, &mut shared.rng))
    }

    fn flush(&mut self) -> Result<(), Infallible> {
        Ok(())
    }
}

impl WriteReady for SimLink<'_> {
    fn write_ready(&mut self) -> Result<bool, Infallible> {
        Ok(self.g2h.space() > 0)
    }
}
