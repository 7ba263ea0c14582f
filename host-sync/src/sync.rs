//! The host's one lock helper and one blocking queue.
//!
//! [`FrameQueue`] carries frames from one thread to another: a call's
//! mailbox (the client's reader pushes, the caller pops; bounded in bytes,
//! the reader waits for room until a deadline) and a relay client's
//! outbound queue (the guest reader pushes, the client's writer pops; its
//! bound is kept by [`RelayCore`](crate::relay_core::RelayCore) before a
//! frame is queued, so the push never waits).

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Locks `m`. A thread that panicked while holding a lock of ours left its
/// data consistent (every critical section is a few field updates), so a
/// poisoned lock is taken as it is rather than spreading the panic.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Waits on `cv` with `guard` (see [`lock`] on poisoning).
pub(crate) fn wait<'a, T>(cv: &Condvar, guard: MutexGuard<'a, T>) -> MutexGuard<'a, T> {
    cv.wait(guard).unwrap_or_else(|e| e.into_inner())
}

/// Waits on `cv` with `guard` for at most `timeout` (see [`lock`] on
/// poisoning); the caller checks its condition and the time again.
pub(crate) fn wait_timeout<'a, T>(cv: &Condvar, guard: MutexGuard<'a, T>, timeout: Duration) -> MutexGuard<'a, T> {
    cv.wait_timeout(guard, timeout).unwrap_or_else(|e| e.into_inner()).0
}

/// What [`FrameQueue::pop`] found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Popped<C> {
    /// The oldest frame.
    Frame(Vec<u8>),
    /// Nothing came by the deadline.
    TimedOut,
    /// The queue is closed and empty, for this reason.
    Closed(C),
}

/// A queue of frames between threads, with a byte count, a close reason
/// of type `C`, and deadlines on both ends.
pub(crate) struct FrameQueue<C> {
    state: Mutex<State<C>>,
    changed: Condvar,
}

struct State<C> {
    frames: VecDeque<Vec<u8>>,
    bytes: usize,
    closed: Option<C>,
    /// The receiver went away: pushes are dropped at once.
    discarding: bool,
}

impl<C: Clone> FrameQueue<C> {
    /// An empty, open queue.
    pub(crate) fn new() -> FrameQueue<C> {
        FrameQueue {
            state: Mutex::new(State { frames: VecDeque::new(), bytes: 0, closed: None, discarding: false }),
            changed: Condvar::new(),
        }
    }

    /// Queues `frame` once no more than `limit` bytes would be queued with
    /// it, waiting for room until `deadline` (a frame larger than `limit`
    /// still goes into an empty queue). Returns false, dropping the frame,
    /// if there was no room by then. A closed or discarding queue drops
    /// the frame and returns true: nobody will wait for it.
    pub(crate) fn push(&self, frame: Vec<u8>, limit: usize, deadline: Instant) -> bool {
        let mut state = lock(&self.state);
        loop {
            if state.discarding || state.closed.is_some() {
                return true;
            }
            if state.frames.is_empty() || state.bytes + frame.len() <= limit {
                break;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            state = wait_timeout(&self.changed, state, left);
        }
        state.bytes += frame.len();
        state.frames.push_back(frame);
        self.changed.notify_all();
        true
    }

    /// The oldest frame, waiting for one until `deadline` (`None`: for as
    /// long as it takes). Queued frames come out even after a close.
    pub(crate) fn pop(&self, deadline: Option<Instant>) -> Popped<C> {
        let mut state = lock(&self.state);
        loop {
            if let Some(frame) = state.frames.pop_front() {
                state.bytes -= frame.len();
                self.changed.notify_all();
                return Popped::Frame(frame);
            }
            if let Some(why) = &state.closed {
                return Popped::Closed(why.clone());
            }
            state = match deadline {
                None => wait(&self.changed, state),
                Some(deadline) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Popped::TimedOut;
                    }
                    wait_timeout(&self.changed, state, left)
                }
            };
        }
    }

    /// Closes the queue with `why` (the first reason stays). The frames
    /// already queued are kept if `keep` says they are still worth
    /// delivering, else dropped.
    pub(crate) fn close(&self, why: C, keep: impl FnOnce(&VecDeque<Vec<u8>>) -> bool) {
        let mut state = lock(&self.state);
        state.closed.get_or_insert(why);
        if !keep(&state.frames) {
            state.frames.clear();
            state.bytes = 0;
        }
        self.changed.notify_all();
    }

    /// The receiver went away: drops what is queued and every later push,
    /// and wakes a pusher waiting for room.
    pub(crate) fn discard(&self) {
        let mut state = lock(&self.state);
        state.discarding = true;
        state.frames.clear();
        state.bytes = 0;
        self.changed.notify_all();
    }

    /// Bytes queued.
    #[cfg(test)]
    fn bytes(&self) -> usize {
        lock(&self.state).bytes
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::thread;

    use super::*;

    fn soon(ms: u64) -> Instant {
        Instant::now() + Duration::from_millis(ms)
    }

    #[test]
    fn frames_come_out_in_order_and_the_count_follows() {
        let q = FrameQueue::<&str>::new();
        assert!(q.push(vec![1; 3], 10, soon(0)));
        assert!(q.push(vec![2; 4], 10, soon(0)));
        assert_eq!(q.bytes(), 7);
        assert_eq!(q.pop(Some(soon(0))), Popped::Frame(vec![1; 3]));
        assert_eq!(q.pop(Some(soon(0))), Popped::Frame(vec![2; 4]));
        assert_eq!(q.pop(Some(soon(0))), Popped::TimedOut);
        assert_eq!(q.bytes(), 0);
    }

    #[test]
    fn a_full_queue_waits_for_room_until_the_deadline() {
        let q = Arc::new(FrameQueue::<&str>::new());
        assert!(q.push(vec![0; 8], 10, soon(0)));
        assert!(!q.push(vec![0; 8], 10, soon(20)), "no room came: the frame is dropped");
        assert_eq!(q.bytes(), 8, "at the bound, nothing more was queued");
        // A frame larger than the bound still goes into an empty queue.
        let popper = {
            let q = Arc::clone(&q);
            thread::spawn(move || q.pop(Some(soon(5_000))))
        };
        assert!(q.push(vec![0; 30], 10, soon(5_000)), "room came when the popper took the first frame");
        assert_eq!(popper.join().unwrap(), Popped::Frame(vec![0; 8]));
        assert_eq!(q.bytes(), 30);
    }

    #[test]
    fn close_keeps_or_drops_what_is_queued_and_the_first_reason_stays() {
        let q = FrameQueue::new();
        q.push(vec![7], 10, soon(0));
        q.close("first", |frames| frames.len() == 1);
        q.close("second", |_| true);
        assert_eq!(q.pop(None), Popped::Frame(vec![7]), "kept frames still come out");
        assert_eq!(q.pop(None), Popped::Closed("first"));
        assert!(q.push(vec![8], 10, soon(0)), "a push after close is dropped, not refused");
        assert_eq!(q.pop(Some(soon(0))), Popped::Closed("first"));
        let q = FrameQueue::new();
        q.push(vec![7], 10, soon(0));
        q.close("gone", |_| false);
        assert_eq!(q.pop(None), Popped::Closed("gone"));
    }

    #[test]
    fn discard_releases_a_waiting_pusher() {
        let q = Arc::new(FrameQueue::<&str>::new());
        q.push(vec![0; 10], 10, soon(0));
        let pusher = {
            let q = Arc::clone(&q);
            thread::spawn(move || q.push(vec![0; 10], 10, soon(5_000)))
        };
        thread::sleep(Duration::from_millis(20));
        q.discard();
        assert!(pusher.join().unwrap(), "the pusher goes on at once, its frame dropped");
        assert_eq!(q.bytes(), 0);
    }

    #[test]
    fn pop_without_a_deadline_waits_for_a_frame() {
        let q = Arc::new(FrameQueue::<&str>::new());
        let popper = {
            let q = Arc::clone(&q);
            thread::spawn(move || q.pop(None))
        };
        thread::sleep(Duration::from_millis(20));
        q.push(vec![5], 10, soon(0));
        assert_eq!(popper.join().unwrap(), Popped::Frame(vec![5]));
    }
}
