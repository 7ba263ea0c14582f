//! The blocking shell around the sans-IO [`Agent`]: a loop
//! over a byte link (`embedded_io`), a [`Clock`] and a [`Platform`].
//!
//! The driver owns no protocol logic; it moves bytes between the link and
//! the agent, passes the time in, and sleeps through the platform when
//! there is nothing to do.

use embedded_io::{Read, ReadReady, Write, WriteReady};

pub use crate::agent::PowerOff;
use crate::agent::{Agent, Event, State};
use crate::fs::Filesystem;

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
/// handshake, then repeats [`step`], hands the agent's events to the clock
/// and the platform, and sleeps through [`Platform::wait`] until the
/// agent's next deadline when nothing moved.
pub fn run<F, L, C, P>(agent: &mut Agent<'_, F>, link: &mut L, clock: &mut C, platform: &mut P) -> Exit<L::Error>
where
    F: Filesystem,
    L: Read + Write + ReadReady + WriteReady,
    C: Clock,
    P: Platform,
{
    run_with(agent, link, clock, platform, |_, _| {})
}

/// [`run`], calling `after_ready` once, as soon as the agent is serving
/// and its `core.ready` has been handed to the link, before any request
/// is read: for setup the handshake does not need (a guest under emulation
/// pays for every code path it runs first, so what moves here no longer
/// delays `core.ready`). A request that arrives meanwhile waits in the
/// link. `after_ready` gets the agent and the time.
pub fn run_with<'b, F, L, C, P, R>(
    agent: &mut Agent<'b, F>,
    link: &mut L,
    clock: &mut C,
    platform: &mut P,
    after_ready: R,
) -> Exit<L::Error>
where
    F: Filesystem,
    L: Read + Write + ReadReady + WriteReady,
    C: Clock,
    P: Platform,
    R: FnOnce(&mut Agent<'b, F>, u64),
{
    agent.start(clock.monotonic_ns());
    let mut after_ready = Some(after_ready);
    loop {
        let progress = match step(agent, link, clock.monotonic_ns()) {
            Ok(Some(progress)) => progress,
            Ok(None) => return Exit::EndOfStream,
            Err(e) => return Exit::Link(e),
        };
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
        if agent.state() == State::Ready
            && let Some(setup) = after_ready.take()
        {
            // `core.ready` to the link first, as far as it takes it now (no
            // request can come before it; what is left goes out next pass).
            if let Err(e) = transmit(agent, link, clock.monotonic_ns()) {
                return Exit::Link(e);
            }
            setup(agent, clock.monotonic_ns());
            continue;
        }
        if !progress {
            platform.wait(agent.poll_timeout());
        }
    }
}

/// One pass of the loop at time `now`: the agent's deadline if it passed,
/// then up to [`TX_BURST_BYTES`] sent, then every byte the link has and
/// the agent has room for. `Ok(None)`: end of stream; `Ok(Some(progress))`:
/// whether a deadline fired or any byte moved. The caller then handles
/// the agent's events ([`Agent::poll_event`]).
///
/// The driver decides nothing: a corrupt stream's input is still read and
/// given to the agent, which drops it and times its own resynchronisation.
pub fn step<F, L>(agent: &mut Agent<'_, F>, link: &mut L, now: u64) -> Result<Option<bool>, L::Error>
where
    F: Filesystem,
    L: Read + Write + ReadReady + WriteReady,
{
    let mut progress = false;
    if agent.poll_timeout().is_some_and(|t| now >= t) {
        agent.handle_timeout(now);
        progress = true;
    }
    progress |= transmit(agent, link, now)? > 0;
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

/// Sends what the agent has, up to [`TX_BURST_BYTES`] and as far as the
/// link takes it now. Returns the bytes sent.
fn transmit<F, L>(agent: &mut Agent<'_, F>, link: &mut L, now: u64) -> Result<usize, L::Error>
where
    F: Filesystem,
    L: Write + WriteReady,
{
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
    }
    Ok(sent)
}
