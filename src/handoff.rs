//! The submitter's side of a hand-off: wait briefly, without the GIL, while a spinning worker
//! takes and finishes the call just queued, so that neither side pays a thread wake-up.
//!
//! It only pays while the worker really gets a core and the GIL. On a loaded machine (or during
//! a burst of GIL traffic, such as a hundred idle threads being let go at once) the wait is
//! wasted, so a miss pauses hand-offs for a while, doubling on each consecutive miss (from
//! `MIN_PAUSE` up to `MAX_PAUSE`); a hit ends the pause. Pausing by time rather than by a count
//! of calls lets a brief storm pass quickly, and keeps a lasting one to one wasted wait per
//! `MAX_PAUSE`.

use pyo3::Python;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const MIN_PAUSE: Duration = Duration::from_micros(200);
const MAX_PAUSE: Duration = Duration::from_millis(20);

fn now_ns() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

#[derive(Default)]
pub struct Handoff {
    /// No hand-off before this time (ns on `now_ns`'s clock).
    paused_until: AtomicU64,
    /// Length of the next pause, in ns (0: none yet).
    pause: AtomicU64,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl Handoff {
    /// Whether to try a hand-off now (false while paused after misses).
    pub fn should_try(&self) -> bool {
        now_ns() >= self.paused_until.load(Ordering::Relaxed)
    }

    /// (hand-offs that finished in time, hand-offs that did not)
    pub fn stats(&self) -> (u64, u64) {
        (
            self.hits.load(Ordering::Relaxed),
            self.misses.load(Ordering::Relaxed),
        )
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
                // Yield, not a pure spin: when the thread this waits for shares our core, it
                // must get to run (a busy wait would starve it for the whole window).
                std::thread::yield_now();
            }
        });
        if hit {
            self.hits.fetch_add(1, Ordering::Relaxed);
            self.pause.store(0, Ordering::Relaxed);
        } else {
            self.misses.fetch_add(1, Ordering::Relaxed);
            let pause = (self.pause.load(Ordering::Relaxed) * 2)
                .clamp(MIN_PAUSE.as_nanos() as u64, MAX_PAUSE.as_nanos() as u64);
            self.pause.store(pause, Ordering::Relaxed);
            self.paused_until.store(now_ns() + pause, Ordering::Relaxed);
        }
    }
}
