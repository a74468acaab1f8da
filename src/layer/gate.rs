//! The byte bound of the queue to the worker.
//!
//! The queue holds at most `queue_capacity` spans, but spans differ in size
//! by orders of magnitude (a GenAI span may carry a whole conversation), so
//! the bytes they hold are bounded too: a span is queued only while the
//! spans queued before it hold less than the limit, so the queue holds at
//! most the limit plus one span (of any size: a span is never refused for
//! its size alone). Under [`super::Overload::Block`] the
//! instrumented thread waits for room; under
//! [`super::Overload::DropWithGapRecord`] the span is dropped.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::Duration;

#[derive(Debug)]
pub(crate) struct Gate {
    used: AtomicUsize,
    limit: usize,
    /// Threads waiting for room: the worker wakes them only then.
    waiting: AtomicUsize,
    /// The worker has stopped: nothing is taken any more.
    closed: AtomicBool,
    lock: Mutex<()>,
    room: Condvar,
}

impl Gate {
    pub(crate) fn new(limit: usize) -> Gate {
        Gate {
            used: AtomicUsize::new(0),
            limit: limit.max(1),
            waiting: AtomicUsize::new(0),
            closed: AtomicBool::new(false),
            lock: Mutex::new(()),
            room: Condvar::new(),
        }
    }

    /// Takes room for `n` bytes if there is some now.
    pub(crate) fn try_enter(&self, n: usize) -> bool {
        let mut used = self.used.load(Ordering::Relaxed);
        loop {
            if self.closed.load(Ordering::Relaxed) || used >= self.limit {
                return false;
            }
            match self.used.compare_exchange_weak(
                used,
                used + n,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(now) => used = now,
            }
        }
    }

    /// Takes room for `n` bytes, waiting for it; `false` once the worker
    /// has stopped.
    pub(crate) fn enter(&self, n: usize) -> bool {
        if self.try_enter(n) {
            return true;
        }
        self.waiting.fetch_add(1, Ordering::SeqCst);
        let mut guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        let entered = loop {
            if self.try_enter(n) {
                break true;
            }
            if self.closed.load(Ordering::SeqCst) {
                break false;
            }
            // (A bounded wait: a wake-up between the check and the wait is
            // not lost for long.)
            guard = self
                .room
                .wait_timeout(guard, Duration::from_millis(10))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        };
        drop(guard);
        self.waiting.fetch_sub(1, Ordering::SeqCst);
        entered
    }

    /// Gives back the room of `n` bytes (the worker took the span).
    pub(crate) fn leave(&self, n: usize) {
        self.used.fetch_sub(n, Ordering::AcqRel);
        if self.waiting.load(Ordering::SeqCst) > 0 {
            let _guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
            self.room.notify_all();
        }
    }

    /// The worker has stopped: waiting threads give up.
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        let _guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        self.room.notify_all();
    }

    /// Bytes of the spans queued now.
    #[cfg(test)]
    pub(crate) fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn bounds_bytes_lets_one_large_span_through_and_wakes_waiters() {
        let g = Arc::new(Gate::new(100));
        assert!(g.try_enter(60));
        assert!(g.try_enter(60), "below the limit before it");
        assert!(!g.try_enter(1), "at the limit");
        g.leave(120);
        assert!(g.try_enter(1_000), "a span larger than the limit");
        assert!(!g.try_enter(1));
        let waiter = {
            let g = g.clone();
            std::thread::spawn(move || g.enter(50))
        };
        std::thread::sleep(Duration::from_millis(50));
        assert!(!waiter.is_finished(), "waits for room");
        g.leave(1_000);
        assert!(waiter.join().unwrap());
        assert_eq!(g.used(), 50);
        assert!(g.try_enter(50));
        let waiter = {
            let g = g.clone();
            std::thread::spawn(move || g.enter(100))
        };
        std::thread::sleep(Duration::from_millis(50));
        g.close();
        assert!(!waiter.join().unwrap(), "gives up once the worker stopped");
        assert!(!g.try_enter(1));
    }
}
