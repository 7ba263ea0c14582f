//! The blocking shell around the sans-IO [`Agent`](crate::Agent): a loop
//! over a byte link (`embedded_io`), a [`Clock`] and a [`Platform`].
//!
//! The driver owns no protocol logic; it moves bytes between the link and
//! the agent, passes the time in, and sleeps through the platform when
//! there is nothing to do.

/// Time as the agent needs it.
pub trait Clock {
    /// Nanoseconds since power-on. Never goes backwards.
    fn monotonic_ns(&self) -> u64;
    /// Sets the wall clock to `unix_ns` (nanoseconds since the Unix epoch)
    /// as of now.
    fn set_wall_clock_ns(&mut self, unix_ns: u64);
    /// The wall clock in Unix nanoseconds, once set.
    fn wall_clock_ns(&self) -> Option<u64>;
}

/// Why the agent asks the platform to power off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(all(feature = "defmt", target_os = "none"), derive(defmt::Format))]
pub enum PowerOff {
    /// The host sent `core.shutdown`: a clean exit.
    Shutdown,
    /// The host never answered the handshake: a failed boot.
    HandshakeTimeout,
}

/// The machine around the agent.
pub trait Platform {
    /// Sleeps until something may have happened on the link, or until the
    /// monotonic time reaches `deadline_ns` (no deadline: `None`). Waking
    /// early is allowed; the driver checks again.
    fn wait(&mut self, deadline_ns: Option<u64>);
    /// Powers the machine off. On real hardware this does not return; a
    /// test platform records the call and returns, and the driver returns.
    fn power_off(&mut self, reason: PowerOff);
}

use embedded_io::{Read, ReadReady, Write, WriteReady};

use crate::agent::{Agent, Event, State};
use crate::fs::Filesystem;

/// After a frame-level corruption, how long the link must stay quiet
/// before the stream counts as fresh and the handshake starts again: a
/// reconnecting host sends nothing until it sees `core.init.resolved`.
pub const RESYNC_QUIET_NS: u64 = 100_000_000;

/// Bytes discarded per read while waiting for a fresh stream.
const DISCARD_CHUNK: usize = 512;

/// Bytes sent per pass before the driver looks at its input again, so a
/// long read cannot keep a request (or a disconnect) waiting behind it.
pub const TX_BURST_BYTES: usize = 256 * 1024;

/// Why [`run`] returned.
#[derive(Debug, PartialEq, Eq)]
pub enum Exit<E> {
    /// The agent asked for power-off and the platform returned.
    PowerOff(PowerOff),
    /// The link reported end of stream.
    EndOfStream,
    /// The link failed.
    Link(E),
}

/// Runs the agent until it powers off or the link ends: starts the
/// handshake, then moves bytes both ways, handles deadlines and events,
/// and sleeps through [`Platform::wait`] when nothing moves.
pub fn run<F, L, C, P>(agent: &mut Agent<'_, F>, link: &mut L, clock: &mut C, platform: &mut P) -> Exit<L::Error>
where
    F: Filesystem,
    L: Read + Write + ReadReady + WriteReady,
    C: Clock,
    P: Platform,
{
    agent.start(clock.monotonic_ns());
    let mut quiet_since: Option<u64> = None;
    loop {
        let now = clock.monotonic_ns();
        if agent.poll_timeout().is_some_and(|t| now >= t) {
            agent.handle_timeout(now);
        }
        while let Some(event) = agent.poll_event() {
            match event {
                Event::SetWallClock(unix_ns) => clock.set_wall_clock_ns(unix_ns),
                Event::PowerOff(reason) => {
                    if let Err(e) = link.flush() {
                        return Exit::Link(e);
                    }
                    platform.power_off(reason);
                    return Exit::PowerOff(reason);
                }
            }
        }
        let progress = match step(agent, link, now, &mut quiet_since) {
            Ok(Some(progress)) => progress,
            Ok(None) => return Exit::EndOfStream,
            Err(e) => return Exit::Link(e),
        };
        if !progress {
            let resync = quiet_since.map(|t| t.saturating_add(RESYNC_QUIET_NS));
            let deadline = match (agent.poll_timeout(), resync) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            platform.wait(deadline);
        }
    }
}

/// One pass of sending and receiving. `Ok(None)`: end of stream;
/// `Ok(Some(progress))`: whether any byte moved.
fn step<F, L>(
    agent: &mut Agent<'_, F>,
    link: &mut L,
    now: u64,
    quiet_since: &mut Option<u64>,
) -> Result<Option<bool>, L::Error>
where
    F: Filesystem,
    L: Read + Write + ReadReady + WriteReady,
{
    let mut progress = false;
    let mut sent = 0;
    while sent < TX_BURST_BYTES && link.write_ready()? {
        let Some(bytes) = agent.poll_transmit() else { break };
        let bytes = &bytes[..bytes.len().min(TX_BURST_BYTES - sent)];
        let n = link.write(bytes)?;
        if n == 0 {
            break;
        }
        agent.transmitted(n, now);
        sent += n;
        progress = true;
    }
    if agent.state() == State::AwaitingStream {
        let mut scratch = [0u8; DISCARD_CHUNK];
        while link.read_ready()? {
            if link.read(&mut scratch)? == 0 {
                return Ok(None);
            }
            *quiet_since = Some(now);
            progress = true;
        }
        match *quiet_since {
            None => *quiet_since = Some(now),
            Some(since) if now.saturating_sub(since) >= RESYNC_QUIET_NS => {
                *quiet_since = None;
                agent.reset_stream(now);
                progress = true;
            }
            Some(_) => {}
        }
        return Ok(Some(progress));
    }
    while link.read_ready()? {
        let space = agent.rx_space();
        if space.is_empty() {
            break;
        }
        let n = link.read(space)?;
        if n == 0 {
            return Ok(None);
        }
        agent.rx_commit(n, now);
        progress = true;
    }
    Ok(Some(progress))
}
