//! A pool of booted sandboxes: a ready one is handed out at once (a pop
//! from a queue), and the pool boots its replacement in the background.
//!
//! A sandbox handed out is the caller's: dropping it (or
//! [`SandboxPool::release`]) kills its QEMU and removes its runtime
//! directory. Nothing is recycled, so no file or session of one user can
//! reach the next. The pool holds at most [`PoolConfig::size`] sandboxes,
//! ready and booting together, and boots at most
//! [`PoolConfig::max_booting`] at once. When a boot fails, the pool waits
//! before the next attempt (doubling from [`BACKOFF_MIN`] up to
//! [`BACKOFF_MAX`]), and [`SandboxPool::acquire`] on an empty pool returns
//! the failure instead of waiting for a boot that is likely to fail again.
//! Dropping the pool stops the refill and kills every sandbox it still
//! holds; boots in flight finish (each bounded by its boot timeout) and
//! are killed.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::config::CheckedConfig;
use crate::config::SandboxConfig;
use crate::error::Error;
use crate::sandbox::Sandbox;
use crate::sync::{lock, wait, wait_timeout};

/// The most sandboxes a pool keeps ready.
pub const MAX_POOL_SIZE: usize = 256;

/// The most boots a pool runs at once.
pub const MAX_BOOTING: usize = 32;

/// The wait after the first failed boot before the next attempt.
pub const BACKOFF_MIN: Duration = Duration::from_millis(100);

/// The longest wait between failed boots.
pub const BACKOFF_MAX: Duration = Duration::from_secs(10);

/// How to run a pool.
#[derive(Debug, Clone)]
pub struct PoolConfig {
    /// How each sandbox boots.
    pub sandbox: SandboxConfig,
    /// How many sandboxes to keep ready, 1 to [`MAX_POOL_SIZE`].
    pub size: usize,
    /// How many boots may run at once, 1 to [`MAX_BOOTING`] (and no more
    /// than `size`): each boot takes a core for tens of milliseconds under
    /// TCG.
    pub max_booting: usize,
}

impl PoolConfig {
    /// `size` sandboxes of `sandbox`, booting as many at once as the host
    /// has cores (within the bounds).
    pub fn new(sandbox: SandboxConfig, size: usize) -> PoolConfig {
        let cores = thread::available_parallelism().map_or(1, usize::from);
        PoolConfig { sandbox, size, max_booting: cores.clamp(1, MAX_BOOTING).min(size.max(1)) }
    }

    /// Checks the pool's own bounds (the sandbox settings are checked by
    /// [`SandboxConfig::check`]).
    pub fn check_bounds(&self) -> Result<(), PoolError> {
        if self.size == 0 || self.size > MAX_POOL_SIZE {
            return Err(PoolError::Bounds(format!(
                "a pool of {} sandboxes: the size must be 1 to {MAX_POOL_SIZE}",
                self.size
            )));
        }
        if self.max_booting == 0 || self.max_booting > MAX_BOOTING.min(self.size) {
            return Err(PoolError::Bounds(format!(
                "{} boots at once: must be 1 to {} (at most {MAX_BOOTING}, and no more than the pool's size)",
                self.max_booting,
                MAX_BOOTING.min(self.size)
            )));
        }
        Ok(())
    }
}

/// Why a pool could not hand out a sandbox.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PoolError {
    /// The pool's settings are out of bounds.
    #[error("bad pool settings: {0}")]
    Bounds(String),
    /// The sandbox settings cannot work (checked before any boot).
    #[error("{0}")]
    Config(Arc<Error>),
    /// The pool is empty and its last boot failed: the pool cannot refill.
    /// It keeps trying, `retry_in` from the failure.
    #[error("the pool cannot refill: {failures} boot(s) in a row failed; the last: {error}")]
    Refill {
        /// Failed boots since the last one that worked.
        failures: u32,
        /// The last boot's error.
        error: Arc<Error>,
        /// The wait before the next attempt, from when it failed.
        retry_in: Duration,
    },
    /// No sandbox became ready in time.
    #[error("no sandbox became ready within {0:?}")]
    Timeout(Duration),
    /// The pool is shutting down.
    #[error("the pool is shutting down")]
    Closed,
}

/// The wait after `failures` boots in a row failed: [`BACKOFF_MIN`],
/// doubling per failure, at most [`BACKOFF_MAX`].
pub fn backoff(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    BACKOFF_MIN.saturating_mul(1 << doublings).min(BACKOFF_MAX)
}

/// What the pool's figures are now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Sandboxes ready to hand out.
    pub ready: usize,
    /// Boots in flight.
    pub booting: usize,
    /// Sandboxes handed out so far.
    pub handed_out: u64,
    /// Boots that completed.
    pub booted: u64,
    /// Boots that failed.
    pub failed: u64,
}

struct State {
    ready: VecDeque<Sandbox>,
    booting: usize,
    /// Failed boots since the last good one, the last error, and when the
    /// next attempt may start.
    failure: Option<(u32, Arc<Error>, Instant)>,
    closed: bool,
    handed_out: u64,
    booted: u64,
    failed: u64,
}

struct Shared {
    state: Mutex<State>,
    /// Signalled whenever the state changes.
    changed: Condvar,
    size: usize,
    checked: CheckedConfig,
}

/// Keeps booted sandboxes ready to hand out (see the module docs).
pub struct SandboxPool {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
}

impl SandboxPool {
    /// Checks the settings and starts filling the pool in the background.
    /// Returns at once; [`SandboxPool::acquire`] waits for the first boots.
    pub fn new(config: PoolConfig) -> Result<SandboxPool, PoolError> {
        config.check_bounds()?;
        let checked = config.sandbox.check().map_err(|e| PoolError::Config(Arc::new(e)))?;
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                ready: VecDeque::with_capacity(config.size),
                booting: 0,
                failure: None,
                closed: false,
                handed_out: 0,
                booted: 0,
                failed: 0,
            }),
            changed: Condvar::new(),
            size: config.size,
            checked,
        });
        let mut workers = Vec::with_capacity(config.max_booting);
        for n in 0..config.max_booting {
            let worker = Arc::clone(&shared);
            let spawned = thread::Builder::new().name(format!("picosandbox-pool-{n}")).spawn(move || refill(&worker));
            match spawned {
                Ok(worker) => workers.push(worker),
                Err(e) => {
                    let pool = SandboxPool { shared, workers };
                    drop(pool);
                    return Err(PoolError::Config(Arc::new(Error::Io(e))));
                }
            }
        }
        Ok(SandboxPool { shared, workers })
    }

    /// The configuration each sandbox is booted from, as checked.
    pub fn checked(&self) -> &CheckedConfig {
        &self.shared.checked
    }

    /// A ready sandbox, waiting up to `timeout` for one to boot when none
    /// is. On an empty pool whose last boot failed, the failure, at once.
    pub fn acquire(&self, timeout: Duration) -> Result<Sandbox, PoolError> {
        let deadline = Instant::now() + timeout;
        let mut state = lock(&self.shared.state);
        loop {
            if state.closed {
                return Err(PoolError::Closed);
            }
            if let Some(sandbox) = take_live(&mut state) {
                state.handed_out += 1;
                drop(state);
                self.shared.changed.notify_all();
                return Ok(sandbox);
            }
            if let Some((failures, error, next)) = &state.failure {
                return Err(PoolError::Refill {
                    failures: *failures,
                    error: Arc::clone(error),
                    retry_in: next.saturating_duration_since(Instant::now()),
                });
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(PoolError::Timeout(timeout));
            }
            state = wait_timeout(&self.shared.changed, state, left);
        }
    }

    /// A ready sandbox if there is one now, without waiting.
    pub fn try_acquire(&self) -> Option<Sandbox> {
        let mut state = lock(&self.shared.state);
        let sandbox = take_live(&mut state)?;
        state.handed_out += 1;
        drop(state);
        self.shared.changed.notify_all();
        Some(sandbox)
    }

    /// Gives a sandbox back: it is killed and its runtime directory
    /// removed, never handed out again (the same as dropping it).
    pub fn release(&self, sandbox: Sandbox) {
        drop(sandbox);
    }

    /// The pool's figures now.
    pub fn stats(&self) -> PoolStats {
        let state = lock(&self.shared.state);
        PoolStats {
            ready: state.ready.len(),
            booting: state.booting,
            handed_out: state.handed_out,
            booted: state.booted,
            failed: state.failed,
        }
    }

    /// The QEMU process ids of the sandboxes ready now.
    pub fn ready_pids(&self) -> Vec<u32> {
        lock(&self.shared.state).ready.iter().map(Sandbox::pid).collect()
    }

    /// Waits until `n` sandboxes are ready (at most the pool's size), or
    /// `timeout` passes, or a boot fails; the number ready then.
    pub fn wait_ready(&self, n: usize, timeout: Duration) -> usize {
        let n = n.min(self.shared.size);
        let deadline = Instant::now() + timeout;
        let mut state = lock(&self.shared.state);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if state.ready.len() >= n || state.failure.is_some() || state.closed || left.is_zero() {
                return state.ready.len();
            }
            state = wait_timeout(&self.shared.changed, state, left);
        }
    }
}

impl Drop for SandboxPool {
    fn drop(&mut self) {
        let ready = {
            let mut state = lock(&self.shared.state);
            state.closed = true;
            std::mem::take(&mut state.ready)
        };
        self.shared.changed.notify_all();
        // Killed here; each drop waits for its QEMU to exit.
        drop(ready);
        for worker in self.workers.drain(..) {
            let _ = worker.join();
        }
    }
}

/// The first ready sandbox whose QEMU still runs; dead ones are dropped
/// (the refill replaces them).
fn take_live(state: &mut State) -> Option<Sandbox> {
    while let Some(sandbox) = state.ready.pop_front() {
        if sandbox.exit_status().is_none() {
            return Some(sandbox);
        }
    }
    None
}

/// A refill worker: boots while the pool holds fewer than its size (ready
/// and booting together), waiting out the back-off after a failure.
fn refill(shared: &Shared) {
    loop {
        let mut state = lock(&shared.state);
        loop {
            if state.closed {
                return;
            }
            let room = state.ready.len() + state.booting < shared.size;
            let backoff = state.failure.as_ref().map(|(_, _, next)| next.saturating_duration_since(Instant::now()));
            match backoff {
                Some(left) if room && !left.is_zero() => {
                    state = wait_timeout(&shared.changed, state, left);
                }
                // After a failure, one boot at a time tries again.
                Some(_) if room && state.booting == 0 => break,
                None if room => break,
                _ => state = wait(&shared.changed, state),
            }
        }
        state.booting += 1;
        drop(state);
        let booted = Sandbox::start_checked(shared.checked.clone());
        let mut state = lock(&shared.state);
        state.booting -= 1;
        match booted {
            Ok(sandbox) if !state.closed => {
                state.ready.push_back(sandbox);
                state.booted += 1;
                state.failure = None;
            }
            Ok(sandbox) => {
                drop(state);
                drop(sandbox);
                shared.changed.notify_all();
                return;
            }
            Err(error) => {
                state.failed += 1;
                let failures = state.failure.as_ref().map_or(1, |(n, _, _)| n.saturating_add(1));
                state.failure = Some((failures, Arc::new(error), Instant::now() + backoff(failures)));
            }
        }
        drop(state);
        shared.changed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_the_minimum_up_to_the_maximum() {
        assert_eq!(backoff(0), BACKOFF_MIN);
        assert_eq!(backoff(1), BACKOFF_MIN);
        assert_eq!(backoff(2), BACKOFF_MIN * 2);
        assert_eq!(backoff(7), BACKOFF_MIN * 64);
        assert_eq!(backoff(8), BACKOFF_MAX);
        assert_eq!(backoff(u32::MAX), BACKOFF_MAX);
    }

    #[test]
    fn pool_bounds_are_checked_at_the_bound() {
        let config = |size, max_booting| PoolConfig { sandbox: SandboxConfig::new("guest"), size, max_booting };
        assert!(config(1, 1).check_bounds().is_ok());
        assert!(config(MAX_POOL_SIZE, MAX_BOOTING).check_bounds().is_ok());
        let e = config(0, 1).check_bounds().unwrap_err().to_string();
        assert_eq!(e, "bad pool settings: a pool of 0 sandboxes: the size must be 1 to 256");
        assert!(config(MAX_POOL_SIZE + 1, 1).check_bounds().is_err());
        assert!(config(4, 0).check_bounds().is_err());
        assert!(config(4, 5).check_bounds().is_err());
        assert!(config(MAX_POOL_SIZE, MAX_BOOTING + 1).check_bounds().is_err());
        // The default never exceeds the bounds.
        assert!(PoolConfig::new(SandboxConfig::new("guest"), 1).check_bounds().is_ok());
        assert!(PoolConfig::new(SandboxConfig::new("guest"), MAX_POOL_SIZE).check_bounds().is_ok());
    }

    #[test]
    fn a_bad_guest_fails_at_creation() {
        let e = SandboxPool::new(PoolConfig::new(SandboxConfig::new("/nonexistent/guest"), 2)).err().unwrap();
        assert!(matches!(e, PoolError::Config(_)), "{e}");
        assert!(e.to_string().contains("/nonexistent/guest"), "{e}");
    }
}
