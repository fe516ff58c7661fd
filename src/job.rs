//! One unit of pool work: a Python call, and where its outcome goes.

use crate::bridge::{Completer, Outcome};
use crate::stats::{End, Tracker};
use pyo3::ffi;
use pyo3::intern;
use pyo3::panic::PanicException;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub struct Call {
    pub func: Py<PyAny>,
    pub args: Py<PyTuple>,
    pub kwargs: Option<Py<PyDict>>,
    /// The contextvars context to run in (`to_thread` carries the caller's copy).
    pub ctx: Option<Py<PyAny>>,
}

impl Call {
    fn invoke(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let call = || {
            let (args, kwargs) = (self.args.bind(py), self.kwargs.as_ref().map(|k| k.bind(py)));
            match unshared(py, args, kwargs)? {
                // `Shared` handles stand for their values here too.
                Some((args, kwargs)) => self.func.bind(py).call(args, kwargs.as_ref()),
                None => self.func.bind(py).call(args, kwargs),
            }
            .map(Bound::unbind)
        };
        let Some(ctx) = &self.ctx else {
            return call();
        };
        unsafe {
            if ffi::PyContext_Enter(ctx.as_ptr()) != 0 {
                return Err(PyErr::fetch(py));
            }
            let result = call();
            if ffi::PyContext_Exit(ctx.as_ptr()) != 0 {
                return Err(PyErr::fetch(py));
            }
            result
        }
    }
}

pub enum Work {
    Call(Call),
    /// A job whose Rust side panics: lets the tests prove a panic becomes an exception.
    Panic,
}

/// Where the outcome goes.
pub enum Target {
    /// An asyncio future, settled on its loop through the completion bridge.
    Loop {
        completer: Arc<Completer>,
        fut: Py<PyAny>,
    },
    /// A `concurrent.futures.Future`, settled from the worker thread (it is thread-safe).
    Concurrent { fut: Py<PyAny> },
}

impl Target {
    /// False when the future was cancelled before the call started: then it never starts.
    fn claim(&self, py: Python<'_>) -> bool {
        let r = match self {
            Target::Loop { fut, .. } => fut
                .bind(py)
                .call_method0(intern!(py, "done"))
                .and_then(|d| d.is_truthy())
                .map(|done| !done),
            Target::Concurrent { fut } => fut
                .bind(py)
                .call_method0(intern!(py, "set_running_or_notify_cancel"))
                .and_then(|d| d.is_truthy()),
        };
        r.unwrap_or_else(|e| {
            keep_interrupt(py, &e);
            false
        })
    }

    fn finish(self, py: Python<'_>, outcome: Outcome) {
        match self {
            Target::Loop { completer, fut } => completer.complete(py, fut, outcome),
            Target::Concurrent { fut } => {
                let fut = fut.bind(py);
                let r = match outcome {
                    Outcome::Ok(v) => fut.call_method1(intern!(py, "set_result"), (v,)),
                    Outcome::Err(e) => {
                        fut.call_method1(intern!(py, "set_exception"), (e.into_value(py),))
                    }
                    Outcome::Cancel => cancel_concurrent(fut),
                };
                // Only fails when someone else already settled the future by hand (or a Ctrl-C
                // landed in the call).
                if let Err(e) = r {
                    keep_interrupt(py, &e);
                }
            }
        }
    }
}

pyo3::import_exception!(concurrent.futures, CancelledError);
use CancelledError as ConcurrentCancelledError;

/// Cancel a `concurrent.futures.Future`. One that a worker claimed (it is running, for
/// `concurrent.futures`) cannot be cancelled any more: it gets a `CancelledError` as its
/// exception instead, so that it still ends exactly once.
fn cancel_concurrent<'py>(fut: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    let py = fut.py();
    let cancelled = fut.call_method0(intern!(py, "cancel"))?;
    if cancelled.is_truthy()? || fut.call_method0(intern!(py, "done"))?.is_truthy()? {
        return Ok(cancelled);
    }
    let err = ConcurrentCancelledError::new_err(
        "the call was claimed by a worker but never began: its pool was aborted (Ctrl-C)",
    );
    fut.call_method1(intern!(py, "set_exception"), (err.into_value(py),))
}

pub struct Job {
    pub work: Work,
    pub target: Target,
    /// Already claimed (by a pool that handed it on to another): run without claiming again.
    pub claimed: bool,
    /// The most the call may run (only a worker process can be stopped: its process is killed).
    pub timeout: Option<Duration>,
    /// Raised when the awaiting side cancelled the call (see `CancelWatch`, attached for
    /// `kill_on_cancel`): a worker process running it is killed, and a worker that claimed it
    /// in a batch never begins it.
    pub cancelled: Option<Arc<AtomicBool>>,
    /// Cancelling the call while it runs kills its worker process.
    pub kill_on_cancel: bool,
    /// Where the call must run (a per-call `isolation=`, or a pinned function): "auto" does not
    /// choose for it.
    pub force: Option<crate::isolation::Mode>,
    /// Its place in its pool's statistics (set by the pool when it takes the job).
    pub tracker: Option<Tracker>,
}

/// A done-callback for an asyncio future that raises a flag when the future was cancelled: the
/// worker thread waiting on a process sees it without the GIL.
#[pyclass(module = "rustpool._rustpool", frozen)]
pub struct CancelWatch {
    flag: Arc<AtomicBool>,
}

impl CancelWatch {
    pub fn new() -> (Self, Arc<AtomicBool>) {
        let flag = Arc::new(AtomicBool::new(false));
        (CancelWatch { flag: flag.clone() }, flag)
    }
}

#[pymethods]
impl CancelWatch {
    fn __call__(&self, fut: &Bound<'_, PyAny>) -> PyResult<()> {
        if fut
            .call_method0(intern!(fut.py(), "cancelled"))?
            .is_truthy()?
        {
            self.flag.store(true, Ordering::Release);
        }
        Ok(())
    }
}

impl Job {
    pub fn new(work: Work, target: Target) -> Self {
        Job {
            work,
            target,
            claimed: false,
            timeout: None,
            cancelled: None,
            kill_on_cancel: false,
            force: None,
            tracker: None,
        }
    }

    /// Whether the awaiting side cancelled the call (seen without the GIL; the flag is raised by
    /// the future's done-callback, one loop iteration after `cancel()`).
    pub fn cancel_seen(&self) -> bool {
        self.cancelled
            .as_ref()
            .is_some_and(|c| c.load(Ordering::Acquire))
    }

    /// With the GIL, right before a call claimed earlier begins: false when its awaiting side
    /// gave up on it since the claim (an asyncio future can still be cancelled after the claim; a
    /// concurrent future cannot, it is running from the claim on).
    pub fn still_wanted(&self, py: Python<'_>) -> bool {
        if self.cancel_seen() {
            return false;
        }
        match &self.target {
            Target::Loop { fut, .. } => fut
                .bind(py)
                .call_method0(intern!(py, "done"))
                .and_then(|d| d.is_truthy())
                .map(|done| !done)
                .unwrap_or_else(|e| {
                    keep_interrupt(py, &e);
                    false
                }),
            Target::Concurrent { .. } => true,
        }
    }

    /// Mark the call as started; false when it was cancelled first (then it must not run).
    pub fn claim(&mut self, py: Python<'_>) -> bool {
        if !self.claimed {
            self.claimed = self.target.claim(py);
            if let Some(t) = &mut self.tracker {
                if self.claimed {
                    t.started();
                } else {
                    t.settled(End::Cancelled); // cancelled before it began
                }
            }
        }
        self.claimed
    }

    fn settle(mut self, py: Python<'_>, outcome: Outcome) {
        if let Some(t) = &mut self.tracker {
            t.settled(match &outcome {
                Outcome::Ok(_) => End::Done,
                Outcome::Err(_) => End::Failed,
                Outcome::Cancel => End::Cancelled,
            });
        }
        self.target.finish(py, outcome);
    }

    /// Settle with an outcome computed elsewhere (an isolated worker).
    pub fn finish(self, py: Python<'_>, result: PyResult<Py<PyAny>>) {
        let outcome = match result {
            Ok(v) => Outcome::Ok(v),
            Err(e) => Outcome::Err(e),
        };
        self.settle(py, outcome);
    }

    pub fn call(&self) -> Option<&Call> {
        match &self.work {
            Work::Call(c) => Some(c),
            Work::Panic => None,
        }
    }

    pub fn run(mut self, py: Python<'_>) {
        if !self.claim(py) {
            return;
        }
        let result = catch_unwind(AssertUnwindSafe(|| match &self.work {
            Work::Call(call) => call.invoke(py),
            Work::Panic => panic!("rustpool test panic inside a pool worker"),
        }))
        .unwrap_or_else(|payload| Err(panic_error(payload)));
        let outcome = match result {
            Ok(v) => Outcome::Ok(v),
            Err(e) => Outcome::Err(e),
        };
        self.settle(py, outcome);
    }

    /// Settle without running: cancelled by `shutdown(cancel_futures=True)`.
    pub fn cancel(self, py: Python<'_>) {
        self.settle(py, Outcome::Cancel);
    }

    /// Settle without running: the pool cannot run it.
    pub fn fail(mut self, py: Python<'_>, err: PyErr) {
        if self.claim(py) {
            self.settle(py, Outcome::Err(err));
        }
    }
}

/// A Ctrl-C that landed in a Python call whose error rustpool does not raise (settling a future,
/// say: the signal's handler runs in whatever Python code the main thread runs next) is handed
/// back to the interpreter, so that the next signal check raises it where it can be seen.
pub fn keep_interrupt(py: Python<'_>, err: &PyErr) {
    if err.is_instance_of::<pyo3::exceptions::PyKeyboardInterrupt>(py) {
        unsafe { ffi::PyErr_SetInterrupt() };
    }
}

/// The text of a caught panic.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-string payload".to_string()
    }
}

pub fn panic_error(payload: Box<dyn std::any::Any + Send>) -> PyErr {
    PanicException::new_err(panic_message(payload.as_ref()))
}

fn call_work(
    func: Bound<'_, PyAny>,
    args: Bound<'_, PyTuple>,
    kwargs: Option<Bound<'_, PyDict>>,
    ctx: Option<Py<PyAny>>,
) -> Work {
    Work::Call(Call {
        func: func.unbind(),
        args: args.unbind(),
        kwargs: kwargs.filter(|k| !k.is_empty()).map(Bound::unbind),
        ctx,
    })
}

/// An awaitable call on the running loop: build its job, hand it to `submit`, return its
/// asyncio future. The caller takes over the loop's wake-up for the time of the submission (see
/// `Completer::claim_wake`), so a call finished during a hand-off is settled without one.
pub fn run_on_loop<'py>(
    py: Python<'py>,
    func: Bound<'py, PyAny>,
    args: Bound<'py, PyTuple>,
    kwargs: Option<Bound<'py, PyDict>>,
    carry_context: bool,
    submit: impl FnOnce(Job) -> PyResult<()>,
) -> PyResult<Bound<'py, PyAny>> {
    let completer = crate::bridge::current_completer(py)?;
    let fut = completer.create_future(py)?;
    let ctx = if carry_context {
        Some(crate::bridge::copy_context(py)?)
    } else {
        None
    };
    let job = Job::new(
        call_work(func, args, kwargs, ctx),
        Target::Loop {
            completer: completer.clone(),
            fut: fut.clone().unbind(),
        },
    );
    let claimed = completer.claim_wake();
    let queued = submit(job);
    if claimed {
        completer.drain_soon(py)?;
    }
    queued?;
    Ok(fut)
}

/// Build the job for `Executor.submit`: the caller made the `concurrent.futures.Future`.
pub fn concurrent_job(
    future: Bound<'_, PyAny>,
    func: Bound<'_, PyAny>,
    args: Bound<'_, PyTuple>,
    kwargs: Option<Bound<'_, PyDict>>,
) -> Job {
    Job::new(
        call_work(func, args, kwargs, None),
        Target::Concurrent {
            fut: future.unbind(),
        },
    )
}

/// Test hook: a job whose Rust side panics, settling a `concurrent.futures.Future`.
pub fn panic_probe(future: Bound<'_, PyAny>) -> Job {
    Job::new(
        Work::Panic,
        Target::Concurrent {
            fut: future.unbind(),
        },
    )
}

/// The `Shared` handle class (`rustpool._shared`): a thread-run call gets the value a handle
/// stands for, as an isolated worker does when it unpickles one.
static SHARED_TYPE: pyo3::sync::PyOnceLock<Py<pyo3::types::PyType>> = pyo3::sync::PyOnceLock::new();

/// Say which class is `Shared` (once, when `rustpool._shared` is imported).
#[pyfunction]
pub fn _set_shared_type(py: Python<'_>, cls: Bound<'_, pyo3::types::PyType>) {
    let _ = SHARED_TYPE.set(py, cls.unbind());
}

/// A call's arguments: positional, and keyword if any.
pub type Arguments<'py> = (
    Bound<'py, pyo3::types::PyTuple>,
    Option<Bound<'py, pyo3::types::PyDict>>,
);

/// `args` with every `Shared` handle among them (and among `kwargs`' values) replaced by its
/// value; None when there is none (the common case: one type check per argument).
pub fn unshared<'py>(
    py: Python<'py>,
    args: &Bound<'py, pyo3::types::PyTuple>,
    kwargs: Option<&Bound<'py, pyo3::types::PyDict>>,
) -> PyResult<Option<Arguments<'py>>> {
    let Some(t) = SHARED_TYPE.get(py) else {
        return Ok(None);
    };
    let t = t.bind(py);
    let is_handle = |a: &Bound<'py, PyAny>| a.get_type().is(t);
    let in_kwargs = kwargs.is_some_and(|k| k.values().iter().any(|v| is_handle(&v)));
    if !in_kwargs && !args.iter().any(|a| is_handle(&a)) {
        return Ok(None);
    }
    let value = |a: Bound<'py, PyAny>| -> PyResult<Bound<'py, PyAny>> {
        if is_handle(&a) {
            a.getattr(pyo3::intern!(py, "value"))
        } else {
            Ok(a)
        }
    };
    let new_args =
        pyo3::types::PyTuple::new(py, args.iter().map(value).collect::<PyResult<Vec<_>>>()?)?;
    let new_kwargs = match kwargs {
        Some(k) => {
            let d = pyo3::types::PyDict::new(py);
            for (key, v) in k.iter() {
                d.set_item(key, value(v)?)?;
            }
            Some(d)
        }
        None => None,
    };
    Ok(Some((new_args, new_kwargs)))
}
