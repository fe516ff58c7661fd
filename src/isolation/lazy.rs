//! A fallback pool made on its first call: "auto" keeps one for calls that cannot run in its
//! first mode, and most programs never need it (worker processes cost a start each).

use super::Isolation;
use crate::job::Job;
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

type Make = Box<dyn Fn(Python<'_>) -> PyResult<Box<dyn Isolation>> + Send + Sync>;

pub struct Lazy {
    make: Make,
    pool: PyOnceLock<Box<dyn Isolation>>,
    closed: AtomicBool,
}

impl Lazy {
    pub fn new(
        make: impl Fn(Python<'_>) -> PyResult<Box<dyn Isolation>> + Send + Sync + 'static,
    ) -> Self {
        Lazy {
            make: Box::new(make),
            pool: PyOnceLock::new(),
            closed: AtomicBool::new(false),
        }
    }
}

impl Isolation for Lazy {
    fn submit(&self, py: Python<'_>, job: Job) -> PyResult<()> {
        let pool = if self.closed.load(Ordering::Acquire) {
            self.pool.get(py).ok_or_else(|| {
                PyRuntimeError::new_err("cannot schedule new futures after shutdown")
            })
        } else {
            // If two threads race here (the GIL can be let go while a pool starts), one pool
            // is kept and the other dropped, which lets its workers go.
            self.pool.get_or_try_init(py, || (self.make)(py))
        };
        match pool {
            Ok(pool) => pool.submit(py, job),
            // A job handed on by a worker is already claimed: settle it with the error.
            Err(e) if job.claimed => {
                job.fail(py, e);
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    fn shutdown(&self, py: Python<'_>, wait: bool, cancel_futures: bool) -> PyResult<()> {
        self.closed.store(true, Ordering::Release);
        match self.pool.get(py) {
            Some(pool) => pool.shutdown(py, wait, cancel_futures),
            None => Ok(()),
        }
    }

    fn is_shutdown(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    fn counts(&self) -> (usize, usize) {
        Python::attach(|py| self.pool.get(py).map_or((0, 0), |p| p.counts()))
    }

    fn workers(&self) -> super::Workers {
        Python::attach(|py| {
            self.pool
                .get(py)
                .map_or_else(Default::default, |p| p.workers())
        })
    }
}
