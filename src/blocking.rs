//! The elastic blocking pool behind `to_thread` and `ThreadExecutor`: tokio's blocking pool.
//!
//! Threads are made on demand up to `max_threads` and let go after `keep_alive` seconds idle;
//! tokio owns them, the shared scheduler (`runner.rs`) decides how many runners they carry.

use crate::attach::{self, ThreadSetup};
use crate::job::{concurrent_job, run_on_loop};
use crate::runner::{Scheduler, Spawn};
use crate::stats::Stats;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

pub struct TokioSpawner {
    runtime: Option<tokio::runtime::Runtime>,
    generation: u64,
}

impl Spawn for TokioSpawner {
    fn spawn(&self, task: Box<dyn FnOnce() + Send + 'static>) {
        if let Some(rt) = &self.runtime {
            drop(rt.spawn_blocking(task));
        }
    }
}

impl Drop for TokioSpawner {
    fn drop(&mut self) {
        // Never block here: the last reference may go away on one of the runtime's own threads.
        if let Some(rt) = self.runtime.take() {
            if crate::lifecycle::forked_since(self.generation) {
                // Inherited through a fork: its threads are not in this process; leave it be.
                std::mem::forget(rt);
            } else {
                rt.shutdown_background();
            }
        }
    }
}

pyo3::import_exception!(concurrent.futures.thread, BrokenThreadPool);

fn broken_thread_pool(msg: String) -> PyErr {
    BrokenThreadPool::new_err(msg)
}

#[pyclass(module = "rustpool._rustpool", frozen)]
pub struct BlockingPool {
    sched: Arc<Scheduler<TokioSpawner>>,
    max_threads: usize,
    keep_alive: f64,
    stats: Arc<Stats>,
    /// Threads tokio started for the pool and has not ended (idle ones included).
    alive: Arc<AtomicUsize>,
    generation: u64,
}

#[pymethods]
impl BlockingPool {
    #[new]
    #[pyo3(signature = (max_threads=512, keep_alive=10.0, thread_name_prefix="rustpool-thread".to_string(), initializer=None, initargs=None))]
    fn new(
        py: Python<'_>,
        max_threads: usize,
        keep_alive: f64,
        thread_name_prefix: String,
        initializer: Option<Py<PyAny>>,
        initargs: Option<Py<PyTuple>>,
    ) -> PyResult<Self> {
        if max_threads == 0 {
            return Err(PyValueError::new_err("max_workers must be greater than 0"));
        }
        if !(keep_alive.is_finite() && keep_alive >= 0.0) {
            return Err(PyValueError::new_err(
                "keep_alive must be a finite number of seconds >= 0",
            ));
        }
        let broken = Arc::new(OnceLock::new());
        let setup = Arc::new(ThreadSetup {
            initializer,
            initargs: initargs.unwrap_or_else(|| PyTuple::empty(py).unbind()),
            broken: broken.clone(),
            broken_message: "A thread initializer failed, the thread pool is not usable anymore",
        });
        let counter = AtomicUsize::new(0);
        let alive = Arc::new(AtomicUsize::new(0));
        let (started, ended) = (alive.clone(), alive.clone());
        let runtime = tokio::runtime::Builder::new_current_thread()
            .max_blocking_threads(max_threads)
            .thread_keep_alive(Duration::from_secs_f64(keep_alive))
            .thread_name_fn(move || {
                format!(
                    "{}_{}",
                    thread_name_prefix,
                    counter.fetch_add(1, Ordering::Relaxed)
                )
            })
            .on_thread_start(move || {
                started.fetch_add(1, Ordering::Relaxed);
                attach::thread_started(&setup)
            })
            .on_thread_stop(move || {
                attach::thread_stopping();
                ended.fetch_sub(1, Ordering::Relaxed);
            })
            .build()
            .map_err(|e| pyo3::exceptions::PyOSError::new_err(e.to_string()))?;
        let spawner = TokioSpawner {
            runtime: Some(runtime),
            generation: crate::lifecycle::generation(),
        };
        Ok(BlockingPool {
            sched: Scheduler::new(
                spawner,
                "ThreadExecutor",
                max_threads,
                broken,
                broken_thread_pool,
            ),
            max_threads,
            keep_alive,
            stats: Stats::new(),
            alive,
            generation: crate::lifecycle::generation(),
        })
    }

    /// Run `func(*args, **kwargs)` in a copy of the caller's context; returns an asyncio future
    /// of the running loop.
    #[pyo3(signature = (func, /, *args, **kwargs))]
    fn run<'py>(
        &self,
        py: Python<'py>,
        func: Bound<'py, PyAny>,
        args: Bound<'py, PyTuple>,
        kwargs: Option<Bound<'py, PyDict>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        run_on_loop(py, func, args, kwargs, true, |mut job| {
            job.tracker = Some(self.stats.track());
            self.sched.submit(py, job)
        })
    }

    /// Run `func(*args, **kwargs)` and settle the given `concurrent.futures.Future`.
    #[pyo3(signature = (future, func, args, kwargs=None))]
    fn submit(
        &self,
        py: Python<'_>,
        future: Bound<'_, PyAny>,
        func: Bound<'_, PyAny>,
        args: Bound<'_, PyTuple>,
        kwargs: Option<Bound<'_, PyDict>>,
    ) -> PyResult<()> {
        let mut job = concurrent_job(future, func, args, kwargs);
        job.tracker = Some(self.stats.track());
        self.sched.submit(py, job)
    }

    #[pyo3(signature = (wait=true, cancel_futures=false))]
    fn shutdown(&self, py: Python<'_>, wait: bool, cancel_futures: bool) -> PyResult<()> {
        self.sched.shutdown(py, wait, cancel_futures)
    }

    #[getter]
    fn max_threads(&self) -> usize {
        self.max_threads
    }

    #[getter]
    fn keep_alive(&self) -> f64 {
        self.keep_alive
    }

    /// Runners alive (threads busy with, or about to take, queued work).
    #[getter]
    fn active(&self) -> usize {
        self.sched.counts().0
    }

    /// Counts and times of this pool's calls and threads (see `rustpool.PoolStats`).
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let alive = if crate::lifecycle::forked_since(self.generation) {
            0
        } else {
            self.alive.load(Ordering::Relaxed)
        };
        let workers = crate::isolation::Workers {
            alive,
            ..Default::default()
        };
        self.stats.snapshot(py, workers)
    }

    /// Jobs queued and not started.
    #[getter]
    fn queued(&self) -> usize {
        self.sched.counts().1
    }

    /// Diagnostics: (hand-offs that finished in time, hand-offs that did not).
    #[getter]
    fn handoff_stats(&self) -> (u64, u64) {
        self.sched.handoff_stats()
    }

    #[getter]
    fn is_shutdown(&self) -> bool {
        self.sched.is_shutdown()
    }

    /// Test hook: a job whose Rust side panics; its concurrent future gets a PanicException.
    fn _submit_panicking(&self, py: Python<'_>, future: Bound<'_, PyAny>) -> PyResult<()> {
        self.sched.submit(py, crate::job::panic_probe(future))
    }
}
