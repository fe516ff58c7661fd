//! The submitter's side of a hand-off: wait briefly, without the GIL, while a spinning worker
//! takes and finishes the call just queued, so that neither side pays a thread wake-up.
//!
//! It only pays while the worker really gets a core. On a loaded machine the spinner may not run
//! in time and the wait is wasted, so every miss doubles the number of later submissions that
//! skip the hand-off (up to `MAX_SKIP`); a hit resets it.

use pyo3::Python;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

const MAX_SKIP: u32 = 1024;

#[derive(Default)]
pub struct Handoff {
    /// Submissions still to skip after the last miss.
    skip: AtomicU32,
    /// Skip length for the next miss.
    backoff: AtomicU32,
}

impl Handoff {
    /// Whether to try a hand-off now (false while backing off after misses).
    pub fn should_try(&self) -> bool {
        let s = self.skip.load(Ordering::Relaxed);
        if s == 0 {
            return true;
        }
        self.skip.store(s - 1, Ordering::Relaxed);
        false
    }

    /// Wait up to `window`, without the GIL, until `done()`; remember whether it came in time.
    pub fn wait(&self, py: Python<'_>, window: Duration, done: impl Fn() -> bool + Sync) {
        let hit = py.detach(|| {
            let start = Instant::now();
            loop {
                if done() {
                    return true;
                }
                if start.elapsed() >= window {
                    return false;
                }
                std::hint::spin_loop();
            }
        });
        if hit {
            self.backoff.store(0, Ordering::Relaxed);
        } else {
            let b = (self.backoff.load(Ordering::Relaxed) * 2 + 1).min(MAX_SKIP);
            self.backoff.store(b, Ordering::Relaxed);
            self.skip.store(b, Ordering::Relaxed);
        }
    }
}
