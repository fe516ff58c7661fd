//! A pool's statistics: what `pool.stats()` reads, kept as calls are claimed and settled.
//!
//! Every job of a pool carries a `Tracker` (see `job.rs`): submitted, it counts as queued; its
//! claim moves it to running (and records how long it waited); its settle counts it done, failed
//! or cancelled (and records how long it ran). A job that is never settled (refused at submit:
//! the pool was shut down) leaves the counts as they were. Workers alive, crashed and replaced
//! are the isolation's to say (`Isolation::workers`). Times go into log-linear histograms of atomic counters
//! (about 9% wide buckets, 1 us to ~1 hour): one atomic add per sample, constant memory, no
//! lock; the median and p99 are read from them. (The `hdrhistogram` crate needs `&mut` to
//! record, so a lock per sample on the hot path; this is the few lines it would save.)

use crate::isolation::Workers;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Sub-buckets per power of two (3 bits of mantissa).
const SUB: usize = 8;
/// Powers of two of nanoseconds covered: 2^10 ns (~1 us) up to 2^42 ns (~73 min).
const LOW: u32 = 10;
const OCTAVES: usize = 32;
const BUCKETS: usize = OCTAVES * SUB + 1;

pub struct Histogram {
    counts: Box<[AtomicU64]>,
}

impl Histogram {
    fn new() -> Self {
        Histogram {
            counts: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    fn bucket(ns: u64) -> usize {
        if ns < (1 << LOW) {
            return 0;
        }
        let octave = 63 - ns.leading_zeros(); // >= LOW
        let mantissa = ((ns >> (octave - 3)) & 7) as usize;
        (((octave - LOW) as usize) * SUB + mantissa + 1).min(BUCKETS - 1)
    }

    /// The middle of a bucket, in seconds.
    fn value(bucket: usize) -> f64 {
        if bucket == 0 {
            return (1u64 << (LOW - 1)) as f64 / 1e9;
        }
        let octave = (bucket - 1) / SUB + LOW as usize;
        let mantissa = ((bucket - 1) % SUB) as f64;
        (1u64 << octave) as f64 * (1.0 + (mantissa + 0.5) / SUB as f64) / 1e9
    }

    pub fn record(&self, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.counts[Self::bucket(ns)].fetch_add(1, Ordering::Relaxed);
    }

    /// The given quantiles (0..1) in seconds, None when nothing was recorded.
    pub fn quantiles(&self, qs: &[f64]) -> Vec<Option<f64>> {
        let counts: Vec<u64> = self
            .counts
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .collect();
        let total: u64 = counts.iter().sum();
        qs.iter()
            .map(|q| {
                if total == 0 {
                    return None;
                }
                let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
                let mut seen = 0;
                for (i, c) in counts.iter().enumerate() {
                    seen += c;
                    if seen >= rank {
                        return Some(Self::value(i));
                    }
                }
                None
            })
            .collect()
    }
}

/// The counts and times of one pool.
pub struct Stats {
    pub queued: AtomicI64,
    pub running: AtomicI64,
    pub done: AtomicU64,
    pub failed: AtomicU64,
    pub cancelled: AtomicU64,
    pub wait: Histogram,
    pub run: Histogram,
}

impl Stats {
    pub fn new() -> Arc<Self> {
        Arc::new(Stats {
            queued: AtomicI64::new(0),
            running: AtomicI64::new(0),
            done: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            cancelled: AtomicU64::new(0),
            wait: Histogram::new(),
            run: Histogram::new(),
        })
    }

    pub fn track(self: &Arc<Self>) -> Tracker {
        self.queued.fetch_add(1, Ordering::Relaxed);
        Tracker {
            stats: self.clone(),
            submitted: Instant::now(),
            started: None,
            settled: false,
        }
    }

    fn count(n: &AtomicI64) -> u64 {
        n.load(Ordering::Relaxed).max(0) as u64
    }

    /// What `pool.stats()` returns (a dict; the Python side makes it a `PoolStats`).
    pub fn snapshot<'py>(&self, py: Python<'py>, workers: Workers) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        let running = Self::count(&self.running);
        d.set_item("workers", workers.alive)?;
        d.set_item("busy", running.min(workers.alive as u64))?;
        d.set_item("idle", (workers.alive as u64).saturating_sub(running))?;
        d.set_item("queued", Self::count(&self.queued))?;
        d.set_item("running", running)?;
        d.set_item("done", self.done.load(Ordering::Relaxed))?;
        d.set_item("failed", self.failed.load(Ordering::Relaxed))?;
        d.set_item("cancelled", self.cancelled.load(Ordering::Relaxed))?;
        d.set_item("crashed", workers.crashed)?;
        d.set_item("replaced", workers.replaced)?;
        let wait = self.wait.quantiles(&[0.5, 0.99]);
        let run = self.run.quantiles(&[0.5, 0.99]);
        d.set_item("wait_median", wait[0])?;
        d.set_item("wait_p99", wait[1])?;
        d.set_item("run_median", run[0])?;
        d.set_item("run_p99", run[1])?;
        Ok(d)
    }
}

/// How a call ended, for the counts.
#[derive(Clone, Copy)]
pub enum End {
    Done,
    Failed,
    Cancelled,
}

/// One job's place in its pool's `Stats`.
pub struct Tracker {
    stats: Arc<Stats>,
    submitted: Instant,
    started: Option<Instant>,
    settled: bool,
}

impl Tracker {
    /// The call begins (its claim succeeded).
    pub fn started(&mut self) {
        if self.started.is_some() || self.settled {
            return;
        }
        let now = Instant::now();
        self.stats.wait.record(now - self.submitted);
        self.stats.queued.fetch_sub(1, Ordering::Relaxed);
        self.stats.running.fetch_add(1, Ordering::Relaxed);
        self.started = Some(now);
    }

    /// The call is settled.
    pub fn settled(&mut self, end: End) {
        if self.settled {
            return;
        }
        self.leave();
        let n = match end {
            End::Done => &self.stats.done,
            End::Failed => &self.stats.failed,
            End::Cancelled => &self.stats.cancelled,
        };
        n.fetch_add(1, Ordering::Relaxed);
    }

    fn leave(&mut self) {
        self.settled = true;
        match self.started {
            Some(at) => {
                self.stats.run.record(at.elapsed());
                self.stats.running.fetch_sub(1, Ordering::Relaxed);
            }
            None => {
                self.stats.queued.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }
}

impl Drop for Tracker {
    fn drop(&mut self) {
        if !self.settled {
            // Refused at submit (or lost): it leaves the queue without counting as an outcome.
            self.settled = true;
            match self.started {
                Some(_) => self.stats.running.fetch_sub(1, Ordering::Relaxed),
                None => self.stats.queued.fetch_sub(1, Ordering::Relaxed),
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_come_within_a_bucket_of_the_samples() {
        let h = Histogram::new();
        for ms in 1..=100u64 {
            h.record(Duration::from_millis(ms));
        }
        let q = h.quantiles(&[0.5, 0.99]);
        let (median, p99) = (q[0].unwrap(), q[1].unwrap());
        assert!((median - 0.050).abs() / 0.050 < 0.1, "{median}");
        assert!((p99 - 0.099).abs() / 0.099 < 0.1, "{p99}");
        assert_eq!(Histogram::new().quantiles(&[0.5]), vec![None]);
    }

    #[test]
    fn a_tracker_moves_a_call_from_queued_to_running_to_its_end() {
        let s = Stats::new();
        let mut t = s.track();
        assert_eq!(s.queued.load(Ordering::Relaxed), 1);
        t.started();
        assert_eq!(
            (
                s.queued.load(Ordering::Relaxed),
                s.running.load(Ordering::Relaxed)
            ),
            (0, 1)
        );
        t.settled(End::Failed);
        drop(t);
        assert_eq!(s.running.load(Ordering::Relaxed), 0);
        assert_eq!(s.failed.load(Ordering::Relaxed), 1);
        let never = s.track();
        drop(never); // refused at submit
        assert_eq!(s.queued.load(Ordering::Relaxed), 0);
        assert_eq!(
            s.done.load(Ordering::Relaxed) + s.cancelled.load(Ordering::Relaxed),
            0
        );
    }
}
