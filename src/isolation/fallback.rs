//! Where "auto" sends the calls its first mode cannot take, and how it owns up to it.
//!
//! Subinterpreter pools fall back to worker processes (a module refuses subinterpreters, a call
//! has a timeout): still parallel, nothing to say. Process pools fall back to threads of this
//! process (the function or its arguments cannot be pickled, or no worker can load the
//! function): pure-Python code then runs one call at a time, so the user is told, once per
//! function, with a `ThreadFallbackWarning`, or refused under `fallback="error"`
//! (`rustpool._crossing.thread_fallback` words both).

use super::Isolation;
use crate::job::Job;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

/// What a process pool under "auto" does with a call it can only run on a thread.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnThreads {
    /// Run it there, with a `ThreadFallbackWarning` the first time for each function.
    Warn,
    /// Fail the call with the error that kept it from crossing.
    Error,
}

impl OnThreads {
    pub const NAMES: &'static [&'static str] = &["warn", "error"];

    pub fn parse(name: &str) -> PyResult<Self> {
        match name {
            "warn" => Ok(OnThreads::Warn),
            "error" => Ok(OnThreads::Error),
            other => Err(PyValueError::new_err(format!(
                "fallback must be one of {:?}, not {other:?}",
                Self::NAMES
            ))),
        }
    }
}

/// The next pool for calls a pool cannot run.
pub struct Fallback {
    pool: Box<dyn Isolation>,
    /// Set when `pool` runs calls on threads of this process.
    threads: Option<OnThreads>,
}

impl Fallback {
    /// A fallback to isolated workers of another kind (as parallel as the first).
    #[cfg_attr(not(Py_3_13), allow(dead_code))]
    pub fn to_workers(pool: Box<dyn Isolation>) -> Self {
        Fallback {
            pool,
            threads: None,
        }
    }

    /// A fallback to threads of this process.
    pub fn to_threads(pool: Box<dyn Isolation>, policy: OnThreads) -> Self {
        Fallback {
            pool,
            threads: Some(policy),
        }
    }

    /// Whether calls of `func` may go to this fallback; `why` is what kept one from the first
    /// pool (an exception, or a worker's message). Moving calls to threads is announced (once
    /// per function) or, under `fallback="error"`, refused with the error the call should fail
    /// with.
    pub fn admits(&self, py: Python<'_>, func: &Py<PyAny>, why: &Bound<'_, PyAny>) -> PyResult<()> {
        match self.threads {
            None => Ok(()),
            Some(policy) => announce_threads(py, func.bind(py), why, policy),
        }
    }

    pub fn submit(&self, py: Python<'_>, job: Job) -> PyResult<()> {
        self.pool.submit(py, job)
    }

    pub fn shutdown(&self, py: Python<'_>, wait: bool, cancel_futures: bool) -> PyResult<()> {
        self.pool.shutdown(py, wait, cancel_futures)
    }

    pub fn workers(&self) -> super::Workers {
        self.pool.workers()
    }
}

/// Tell the user that calls of `func` run on threads of this process from now on (a
/// `ThreadFallbackWarning`, once per function), or refuse it (`OnThreads::Error`): Err is the
/// error to fail with.
pub fn announce_threads(
    py: Python<'_>,
    func: &Bound<'_, PyAny>,
    why: &Bound<'_, PyAny>,
    policy: OnThreads,
) -> PyResult<()> {
    super::workers::crossing(py)?
        .getattr("thread_fallback")?
        .call1((func, why, policy == OnThreads::Error))
        .map(drop)
}

#[cfg(test)]
mod tests {
    use super::OnThreads;

    #[test]
    fn policies_parse_by_name_and_others_are_refused() {
        assert_eq!(OnThreads::parse("warn").unwrap(), OnThreads::Warn);
        assert_eq!(OnThreads::parse("error").unwrap(), OnThreads::Error);
        pyo3::Python::initialize();
        assert!(OnThreads::parse("thread")
            .unwrap_err()
            .to_string()
            .contains("fallback must be one of"));
    }
}
