//! The CPU pool behind `run_cpu` and `CpuExecutor`: a bounded pool whose isolation mode decides
//! where the Python code runs (see `isolation/`).

use crate::attach::ThreadSetup;
use crate::isolation::fallback::{announce_threads, Fallback, OnThreads};
use crate::isolation::{
    self, auto::Auto, lazy::Lazy, process, thread::ThreadIsolation, Isolation, Mode,
};
use crate::job::{concurrent_job, run_on_loop, CancelWatch, Job};
use crate::stats::Stats;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

#[pyclass(module = "rustpool._rustpool", frozen)]
pub struct CpuPool {
    backend: Box<dyn Isolation>,
    /// "auto" that learns where each function runs (see `isolation/auto.rs`); None for the
    /// fixed modes (and for "auto" with an option only processes have).
    learning: Option<Auto>,
    isolation: &'static str,
    max_workers: usize,
    /// Whether calls may have a timeout (they run in processes).
    timeouts: bool,
    /// Cancelling an awaited call that runs kills its worker process.
    kill_on_cancel: bool,
    stats: Arc<Stats>,
}

pub fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Options that only a process can honour: "auto" picks processes when one is given.
struct ProcessOnly {
    /// A multiprocessing context: only processes can be what it asks for.
    mp_context: bool,
    max_tasks_per_child: Option<usize>,
    max_memory_per_child: Option<u64>,
    kill_on_cancel: bool,
}

impl ProcessOnly {
    fn first_given(&self) -> Option<&'static str> {
        if self.mp_context {
            Some("mp_context")
        } else if self.max_tasks_per_child.is_some() {
            Some("max_tasks_per_child")
        } else if self.max_memory_per_child.is_some() {
            Some("max_memory_per_child")
        } else if self.kill_on_cancel {
            Some("kill_on_cancel")
        } else {
            None
        }
    }
}

fn thread_setup(
    py: Python<'_>,
    initializer: &Option<Py<PyAny>>,
    initargs: &Py<PyTuple>,
    broken: &Arc<OnceLock<String>>,
) -> ThreadSetup {
    ThreadSetup {
        initializer: initializer.as_ref().map(|i| i.clone_ref(py)),
        initargs: initargs.clone_ref(py),
        broken: broken.clone(),
        broken_message: "A CpuExecutor initializer failed, the pool is not usable anymore",
    }
}

#[pymethods]
impl CpuPool {
    #[new]
    #[pyo3(signature = (max_workers=None, isolation="thread", thread_name_prefix="rustpool-cpu".to_string(), initializer=None, initargs=None, max_tasks_per_child=None, max_memory_per_child=None, kill_on_cancel=false, mp_context=false, fallback="warn", learn=true))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        max_workers: Option<usize>,
        isolation: &str,
        thread_name_prefix: String,
        initializer: Option<Py<PyAny>>,
        initargs: Option<Py<PyTuple>>,
        max_tasks_per_child: Option<usize>,
        max_memory_per_child: Option<u64>,
        kill_on_cancel: bool,
        mp_context: bool,
        fallback: &str,
        learn: bool,
    ) -> PyResult<Self> {
        let on_threads = OnThreads::parse(fallback)?;
        let max_workers = max_workers.unwrap_or_else(default_workers);
        if max_workers == 0 {
            return Err(PyValueError::new_err("max_workers must be greater than 0"));
        }
        if max_tasks_per_child == Some(0) {
            return Err(PyValueError::new_err("max_tasks_per_child must be >= 1"));
        }
        if max_memory_per_child == Some(0) {
            return Err(PyValueError::new_err(
                "max_memory_per_child must be > 0 bytes",
            ));
        }
        // A worker's memory is read from /proc/<pid>/statm (see `process.rs`).
        if cfg!(not(target_os = "linux")) && max_memory_per_child.is_some() {
            return Err(PyValueError::new_err(
                "max_memory_per_child needs Linux (/proc)",
            ));
        }
        let only = ProcessOnly {
            mp_context,
            max_tasks_per_child,
            max_memory_per_child,
            kill_on_cancel,
        };
        let auto = isolation == "auto";
        let mut mode = isolation::resolve(isolation)?;
        let initargs = initargs.unwrap_or_else(|| PyTuple::empty(py).unbind());
        // The initializer crosses to each worker process as pickle bytes.
        let mut pickled_init = None;
        if let Some(init) = &initializer {
            if auto || mode == "process" {
                let dumped = crate::isolation::workers::crossing(py)?
                    .getattr("dumps_call")?
                    .call1((init.clone_ref(py), initargs.clone_ref(py), py.None()));
                match dumped {
                    Ok(b) => pickled_init = Some(b.extract::<Vec<u8>>()?),
                    // "auto" with an initializer that cannot cross: the pool runs on threads
                    // here, said aloud (unless an option asks for processes, or
                    // fallback="error": then the pickling error stands).
                    Err(e) if auto && only.first_given().is_none() => {
                        announce_threads(py, init.bind(py), e.value(py).as_any(), on_threads)?;
                        mode = "thread";
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        if auto && mode != "thread" && (pickled_init.is_some() || only.first_given().is_some()) {
            // Subinterpreters have no initializer, recycling or kill: processes have.
            mode = "process";
        }
        if mode != "process" {
            if let Some(option) = only.first_given() {
                return Err(PyValueError::new_err(format!(
                    "{option} needs isolation=\"process\" (or \"auto\"), not {isolation:?}"
                )));
            }
        }
        let broken = Arc::new(OnceLock::new());
        let init = Arc::new((
            initializer.as_ref().map(|i| i.clone_ref(py)),
            initargs.clone_ref(py),
            broken.clone(),
        ));
        let fallback_prefix = format!("{thread_name_prefix}-fallback");
        // "auto" learns where each function runs, unless told not to or given an option that
        // only processes have.
        // The probe reads another thread's CPU clock, which only Linux offers (`auto.rs`).
        let learns = learn
            && cfg!(target_os = "linux")
            && auto
            && mode != "thread"
            && pickled_init.is_none()
            && only.first_given().is_none();
        // A thread pool made on its first call: "auto" runs the functions it places on threads
        // in one, and the calls that cannot be pickled in another (the process pool's fallback).
        let lazy_threads = move |prefix: String| {
            let init = init.clone();
            Lazy::new(move |py| {
                let setup = thread_setup(py, &init.0, &init.1, &init.2);
                Ok(
                    Box::new(ThreadIsolation::new(max_workers, prefix.clone(), setup)?)
                        as Box<dyn Isolation>,
                )
            })
        };
        let learning_threads = learns.then(|| lazy_threads(format!("{thread_name_prefix}-thread")));
        // "auto" falls back to threads for calls that cannot be pickled.
        let thread_fallback = move |prefix: String| -> Fallback {
            Fallback::to_threads(Box::new(lazy_threads(prefix)), on_threads)
        };
        let process_options = move || process::Options {
            initializer: pickled_init.clone(),
            max_tasks: max_tasks_per_child,
            max_rss: max_memory_per_child,
        };
        // One arm per isolation mode; `resolve` only returns modes this build has.
        let backend: Box<dyn Isolation> = match mode {
            "thread" => Box::new(ThreadIsolation::new(
                max_workers,
                thread_name_prefix,
                thread_setup(py, &initializer, &initargs, &broken),
            )?),
            #[cfg(Py_3_13)]
            "interpreter" => {
                if initializer.is_some() {
                    return Err(PyValueError::new_err(
                        "initializer is not supported with isolation=\"interpreter\"; use isolation=\"process\", \"thread\" or \"auto\"",
                    ));
                }
                // "auto": calls that cannot run in a subinterpreter (a module refuses them, a
                // timeout asks for a kill) run in processes; calls that cannot cross, on threads.
                let fallback = if auto {
                    let prefix = format!("{thread_name_prefix}-process");
                    let options = process_options.clone();
                    let threads = thread_fallback.clone();
                    let processes = Lazy::new(move |py| {
                        Ok(Box::new(process::start(
                            py,
                            max_workers,
                            &prefix,
                            options(),
                            Some(threads(format!("{prefix}-fallback"))),
                        )?) as Box<dyn Isolation>)
                    });
                    Some(Fallback::to_workers(Box::new(processes)))
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
            "process" => Box::new(process::start(
                py,
                max_workers,
                &thread_name_prefix,
                process_options(),
                auto.then(|| thread_fallback(fallback_prefix)),
            )?),
            other => unreachable!("isolation::resolve returned {other:?}"),
        };
        let (backend, learning) = match learning_threads {
            Some(threads) => {
                let auto = Auto::new(Box::new(threads), backend, Mode::parse(mode)?);
                (Box::new(auto.clone()) as Box<dyn Isolation>, Some(auto))
            }
            None => (backend, None),
        };
        Ok(CpuPool {
            backend,
            learning,
            isolation: mode,
            max_workers,
            timeouts: mode == "process" || (auto && mode == "interpreter"),
            kill_on_cancel,
            stats: Stats::new(),
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
        self.run_timed(py, None, func, args, kwargs, None)
    }

    /// `run` with a timeout (seconds, None for none): past it the call's worker process is
    /// killed and the future gets `TimeoutError`.
    #[pyo3(signature = (timeout, func, args, kwargs=None, isolation=None))]
    fn run_timed<'py>(
        &self,
        py: Python<'py>,
        timeout: Option<f64>,
        func: Bound<'py, PyAny>,
        args: Bound<'py, PyTuple>,
        kwargs: Option<Bound<'py, PyDict>>,
        isolation: Option<&str>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let timeout = self.timeout(timeout)?;
        let force = self.forced(isolation, timeout.is_some())?;
        let watch = self.kill_on_cancel.then(CancelWatch::new);
        let flag = watch.as_ref().map(|(_, f)| f.clone());
        let kill_on_cancel = self.kill_on_cancel;
        let fut = run_on_loop(py, func, args, kwargs, false, |mut job: Job| {
            job.timeout = timeout;
            job.force = force;
            job.cancelled = flag;
            job.kill_on_cancel = kill_on_cancel;
            job.tracker = Some(self.stats.track());
            self.backend.submit(py, job)
        })?;
        if let Some((watch, _)) = watch {
            fut.call_method1("add_done_callback", (Bound::new(py, watch)?,))?;
        }
        Ok(fut)
    }

    /// Run `func(*args, **kwargs)` and settle the given `concurrent.futures.Future`.
    #[pyo3(signature = (future, func, args, kwargs=None, timeout=None, isolation=None))]
    #[allow(clippy::too_many_arguments)]
    fn submit(
        &self,
        py: Python<'_>,
        future: Bound<'_, PyAny>,
        func: Bound<'_, PyAny>,
        args: Bound<'_, PyTuple>,
        kwargs: Option<Bound<'_, PyDict>>,
        timeout: Option<f64>,
        isolation: Option<&str>,
    ) -> PyResult<()> {
        let mut job = concurrent_job(future, func, args, kwargs);
        job.timeout = self.timeout(timeout)?;
        job.force = self.forced(isolation, job.timeout.is_some())?;
        job.tracker = Some(self.stats.track());
        self.backend.submit(py, job)
    }

    #[pyo3(signature = (wait=true, cancel_futures=false))]
    fn shutdown(&self, py: Python<'_>, wait: bool, cancel_futures: bool) -> PyResult<()> {
        self.backend.shutdown(py, wait, cancel_futures)
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

    /// Counts and times of this pool's calls and workers (see `rustpool.PoolStats`).
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        self.stats.snapshot(py, self.backend.workers())
    }

    #[getter]
    fn is_shutdown(&self) -> bool {
        self.backend.is_shutdown()
    }

    /// ValueError unless `timeout` is one this pool can honour.
    fn check_timeout(&self, timeout: f64) -> PyResult<()> {
        self.timeout(Some(timeout)).map(drop)
    }

    /// ValueError unless this pool can run calls in `isolation` (with a timeout or not).
    #[pyo3(signature = (isolation, timed=false))]
    fn check_isolation(&self, isolation: &str, timed: bool) -> PyResult<()> {
        self.forced(Some(isolation), timed).map(drop)
    }

    /// Where "auto" runs each function it has seen, and why: (function, isolation, why,
    /// calls, samples); empty for the fixed modes.
    fn placements(&self) -> Vec<(String, String, String, u64, u32)> {
        self.learning
            .as_ref()
            .map_or_else(Vec::new, Auto::placements)
    }

    #[getter]
    fn kill_on_cancel(&self) -> bool {
        self.kill_on_cancel
    }

    /// Test hook: a job whose Rust side panics; its concurrent future gets a PanicException.
    fn _submit_panicking(&self, py: Python<'_>, future: Bound<'_, PyAny>) -> PyResult<()> {
        self.backend.submit(py, crate::job::panic_probe(future))
    }
}

impl CpuPool {
    /// The mode a per-call `isolation=` asks for: only "auto" pools that learn choose per call;
    /// a fixed mode takes its own name (a no-op) and nothing else.
    fn forced(&self, isolation: Option<&str>, timed: bool) -> PyResult<Option<Mode>> {
        let Some(name) = isolation else {
            return Ok(None);
        };
        let mode = Mode::parse(name)?;
        if timed && mode != Mode::Process {
            return Err(PyValueError::new_err(format!(
                "a timeout needs a worker process (it is killed past it), not isolation={name:?}"
            )));
        }
        if self.learning.is_none() {
            if mode.name() == self.isolation {
                return Ok(None);
            }
            return Err(PyValueError::new_err(format!(
                "isolation={name:?} per call needs a pool with isolation=\"auto\" (and no process-only option); this one runs {:?}",
                self.isolation
            )));
        }
        Ok(Some(mode))
    }

    fn timeout(&self, seconds: Option<f64>) -> PyResult<Option<Duration>> {
        let Some(s) = seconds else { return Ok(None) };
        if !(s.is_finite() && s > 0.0) {
            return Err(PyValueError::new_err(format!(
                "timeout must be a positive number of seconds, not {s}"
            )));
        }
        if !self.timeouts {
            return Err(PyValueError::new_err(format!(
                "a timeout needs isolation=\"process\" or \"auto\" (a call in isolation={:?} cannot be stopped)",
                self.isolation
            )));
        }
        Ok(Some(Duration::from_secs_f64(s)))
    }
}
