//! The CPU pool behind `run_cpu` and `CpuExecutor`: a bounded pool whose isolation mode decides
//! where the Python code runs (see `isolation/`).

use crate::attach::ThreadSetup;
use crate::isolation::{self, thread::ThreadIsolation, Isolation};
use crate::job::{concurrent_job, run_on_loop};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};
use std::sync::{Arc, OnceLock};

#[pyclass(module = "rustpool._rustpool", frozen)]
pub struct CpuPool {
    backend: Box<dyn Isolation>,
    isolation: &'static str,
    max_workers: usize,
}

pub fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

#[pymethods]
impl CpuPool {
    #[new]
    #[pyo3(signature = (max_workers=None, isolation="thread", thread_name_prefix="rustpool-cpu".to_string(), initializer=None, initargs=None))]
    fn new(
        py: Python<'_>,
        max_workers: Option<usize>,
        isolation: &str,
        thread_name_prefix: String,
        initializer: Option<Py<PyAny>>,
        initargs: Option<Py<PyTuple>>,
    ) -> PyResult<Self> {
        let max_workers = max_workers.unwrap_or_else(default_workers);
        if max_workers == 0 {
            return Err(PyValueError::new_err("max_workers must be greater than 0"));
        }
        let mut mode = isolation::resolve(isolation)?;
        if isolation == "auto" && initializer.is_some() {
            // An initializer runs in each worker thread of this interpreter: "auto" keeps threads.
            mode = "thread";
        }
        let setup = ThreadSetup {
            initializer,
            initargs: initargs.unwrap_or_else(|| PyTuple::empty(py).unbind()),
            broken: Arc::new(OnceLock::new()),
            broken_message: "A CpuExecutor initializer failed, the pool is not usable anymore",
        };
        let threads = |prefix: String, setup| -> PyResult<Box<dyn Isolation>> {
            Ok(Box::new(ThreadIsolation::new(max_workers, prefix, setup)?))
        };
        // One arm per isolation mode; `resolve` only returns modes this build has.
        let backend: Box<dyn Isolation> = match mode {
            "thread" => threads(thread_name_prefix, setup)?,
            #[cfg(Py_3_13)]
            #[cfg(Py_3_13)]
            "interpreter" => {
                if setup.initializer.is_some() {
                    return Err(PyValueError::new_err(
                        "initializer is not supported with isolation=\"interpreter\" yet; use isolation=\"thread\" or \"auto\"",
                    ));
                }
                // "auto": calls that cannot cross into a subinterpreter run on threads instead.
                let fallback = if isolation == "auto" {
                    Some(threads(format!("{thread_name_prefix}-fallback"), setup)?)
                } else {
                    None
                };
                Box::new(crate::isolation::interpreter::start(
                    py,
                    max_workers,
                    &thread_name_prefix,
                    fallback,
                )?)
            }
            "process" => Box::new(crate::isolation::process::start(
                py,
                max_workers,
                &thread_name_prefix,
                setup.initializer.is_some(),
            )?),
            other => unreachable!("isolation::resolve returned {other:?}"),
        };
        Ok(CpuPool {
            backend,
            isolation: mode,
            max_workers,
        })
    }

    /// Run `func(*args, **kwargs)`; returns an asyncio future of the running loop.
    #[pyo3(signature = (func, /, *args, **kwargs))]
    fn run<'py>(
        &self,
        py: Python<'py>,
        func: Bound<'py, PyAny>,
        args: Bound<'py, PyTuple>,
        kwargs: Option<Bound<'py, PyDict>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        run_on_loop(py, func, args, kwargs, false, |job| {
            self.backend.submit(py, job)
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
        self.backend
            .submit(py, concurrent_job(future, func, args, kwargs))
    }

    #[pyo3(signature = (wait=true, cancel_futures=false))]
    fn shutdown(&self, py: Python<'_>, wait: bool, cancel_futures: bool) {
        self.backend.shutdown(py, wait, cancel_futures);
    }

    #[getter]
    fn isolation(&self) -> &'static str {
        self.isolation
    }

    #[getter]
    fn max_workers(&self) -> usize {
        self.max_workers
    }

    #[getter]
    fn active(&self) -> usize {
        self.backend.counts().0
    }

    #[getter]
    fn queued(&self) -> usize {
        self.backend.counts().1
    }

    #[getter]
    fn is_shutdown(&self) -> bool {
        self.backend.is_shutdown()
    }

    /// Test hook: a job whose Rust side panics; its concurrent future gets a PanicException.
    fn _submit_panicking(&self, py: Python<'_>, future: Bound<'_, PyAny>) -> PyResult<()> {
        self.backend.submit(py, crate::job::panic_probe(future))
    }
}
