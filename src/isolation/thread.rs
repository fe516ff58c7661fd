//! isolation="thread": a fixed rayon pool of threads of this interpreter.
//!
//! A worker holds the GIL only while Python runs, so code that releases the GIL (hashlib, zlib,
//! numpy, Rust extensions) runs in parallel; pure-Python code does not on a GIL build.

use super::Isolation;
use crate::attach::{self, ThreadSetup};
use crate::job::Job;
use crate::runner::{Scheduler, Spawn};
use pyo3::prelude::*;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

pub struct RayonSpawner {
    pool: std::mem::ManuallyDrop<rayon::ThreadPool>,
    generation: u64,
}

impl Drop for RayonSpawner {
    fn drop(&mut self) {
        // Inherited through a fork: its threads are not in this process; leave it be.
        if !crate::lifecycle::forked_since(self.generation) {
            unsafe { std::mem::ManuallyDrop::drop(&mut self.pool) };
        }
    }
}

impl Spawn for RayonSpawner {
    fn spawn(&self, task: Box<dyn FnOnce() + Send + 'static>) {
        self.pool.spawn(task);
    }
}

pub struct ThreadIsolation {
    sched: Arc<Scheduler<RayonSpawner>>,
    /// Threads of the rayon pool started and not ended.
    alive: Arc<AtomicUsize>,
    generation: u64,
}

impl ThreadIsolation {
    pub fn new(workers: usize, name_prefix: String, setup: ThreadSetup) -> PyResult<Self> {
        let broken = setup.broken.clone();
        let setup = Arc::new(setup);
        let alive = Arc::new(AtomicUsize::new(0));
        let (started, ended) = (alive.clone(), alive.clone());
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(workers)
            .thread_name(move |i| format!("{name_prefix}_{i}"))
            .start_handler(move |_| {
                started.fetch_add(1, Ordering::Relaxed);
                attach::thread_started(&setup)
            })
            .exit_handler(move |_| {
                attach::thread_stopping();
                ended.fetch_sub(1, Ordering::Relaxed);
            })
            .panic_handler(|_| {
                // Jobs catch their own panics; a panic reaching here is a scheduler bug. rayon
                // would abort the process without a handler: keep the process alive.
                eprintln!("rustpool: a CPU pool worker panicked outside a job");
            })
            .build()
            .map_err(|e| pyo3::exceptions::PyOSError::new_err(e.to_string()))?;
        Ok(ThreadIsolation {
            sched: Scheduler::new(
                RayonSpawner {
                    pool: std::mem::ManuallyDrop::new(pool),
                    generation: crate::lifecycle::generation(),
                },
                "CpuExecutor",
                workers,
                broken,
                super::broken_error,
            ),
            alive,
            generation: crate::lifecycle::generation(),
        })
    }
}

impl Isolation for ThreadIsolation {
    fn submit(&self, py: Python<'_>, job: Job) -> PyResult<()> {
        self.sched.submit(py, job)
    }
    fn shutdown(&self, py: Python<'_>, wait: bool, cancel_futures: bool) -> PyResult<()> {
        self.sched.shutdown(py, wait, cancel_futures)
    }
    fn is_shutdown(&self) -> bool {
        self.sched.is_shutdown()
    }
    fn counts(&self) -> (usize, usize) {
        self.sched.counts()
    }

    fn workers(&self) -> super::Workers {
        let alive = if crate::lifecycle::forked_since(self.generation) {
            0
        } else {
            self.alive.load(Ordering::Relaxed)
        };
        super::Workers {
            alive,
            ..Default::default()
        }
    }
}
