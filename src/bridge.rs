//! The completion bridge: results computed on pool threads reach asyncio futures on their loop.
//!
//! There is one `Completer` per event loop. A worker that finishes a call pushes the outcome onto
//! the completer's queue; only the push that finds no drain already scheduled wakes the loop, with a
//! single `loop.call_soon_threadsafe(drain)`. The drain runs on the loop thread and settles every
//! queued future at once, so a burst of results costs one wake-up, not one per result. Works on any
//! loop that has `call_soon_threadsafe` and `create_future` (asyncio's, uvloop's).
//!
//! A future that is already done when its outcome arrives (the awaiting task was cancelled) is
//! skipped silently. When the loop is closed, outcomes are dropped silently: nobody can await them.

use crate::sync::Mutex;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::{ffi, intern};
use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

pub enum Outcome {
    Ok(Py<PyAny>),
    Err(PyErr),
    Cancel,
}

struct Pending {
    fut: Py<PyAny>,
    outcome: Outcome,
}

struct Queue {
    items: Mutex<Vec<Pending>>,
    scheduled: AtomicBool,
    closed: AtomicBool,
}

/// The drain callback handed to `call_soon_threadsafe`.
#[pyclass(module = "rustpool._rustpool", frozen)]
pub struct Drain {
    queue: Arc<Queue>,
}

#[pymethods]
impl Drain {
    fn __call__(&self, py: Python<'_>) {
        // Clear the flag before taking the batch: a push that lands after the take schedules a
        // fresh drain instead of being stranded.
        self.queue.scheduled.store(false, Ordering::SeqCst);
        let batch = std::mem::take(&mut *self.queue.items.lock());
        for p in batch {
            settle(py, p.fut.bind(py), p.outcome);
        }
    }
}

fn settle(py: Python<'_>, fut: &Bound<'_, PyAny>, outcome: Outcome) {
    let r = match outcome {
        Outcome::Ok(v) => fut.call_method1(intern!(py, "set_result"), (v,)),
        Outcome::Err(e) => fut.call_method1(intern!(py, "set_exception"), (e.into_value(py),)),
        Outcome::Cancel => fut.call_method0(intern!(py, "cancel")),
    };
    if let Err(err) = r {
        crate::job::keep_interrupt(py, &err);
        // Already done (cancelled by its awaiter): drop silently. Otherwise the future refused the
        // value (StopIteration cannot be set on a future): deliver the refusal instead of hanging.
        let done = fut
            .call_method0(intern!(py, "done"))
            .and_then(|d| d.is_truthy())
            .unwrap_or(true);
        if !done {
            if let Err(e) = fut.call_method1(intern!(py, "set_exception"), (err.into_value(py),)) {
                e.write_unraisable(py, Some(fut));
            }
        }
    }
}

pub struct Completer {
    loop_: Py<PyAny>,
    call_soon_threadsafe: Py<PyAny>,
    drain: Py<Drain>,
    queue: Arc<Queue>,
}

impl Completer {
    fn new(py: Python<'_>, loop_: &Bound<'_, PyAny>) -> PyResult<Self> {
        let queue = Arc::new(Queue {
            items: Mutex::new(Vec::new()),
            scheduled: AtomicBool::new(false),
            closed: AtomicBool::new(false),
        });
        Ok(Completer {
            loop_: loop_.clone().unbind(),
            call_soon_threadsafe: loop_.getattr(intern!(py, "call_soon_threadsafe"))?.unbind(),
            drain: Py::new(
                py,
                Drain {
                    queue: queue.clone(),
                },
            )?,
            queue,
        })
    }

    pub fn create_future<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.loop_
            .bind(py)
            .call_method0(intern!(py, "create_future"))
    }

    /// Called on the loop's thread before it queues work: takes over the job of waking the loop
    /// for whatever completes until the next drain, so workers need not write to the loop's
    /// self-pipe. True when taken: the caller must then call `drain_soon` once the work is
    /// queued.
    pub fn claim_wake(&self) -> bool {
        !self.queue.scheduled.swap(true, Ordering::SeqCst)
    }

    /// Release a claim from `claim_wake`: drain on the next loop iteration (the caller runs on
    /// the loop's thread, so `call_soon` needs no self-pipe write). The task awaiting a call
    /// that finished during a hand-off is thus woken without any cross-thread wake-up, and still
    /// yields to the loop once, as `asyncio.to_thread` does.
    pub fn drain_soon(&self, py: Python<'_>) -> PyResult<()> {
        self.loop_
            .bind(py)
            .call_method1(intern!(py, "call_soon"), (self.drain.clone_ref(py),))
            .map(drop)
    }

    /// Deliver an outcome from any thread (the caller holds the GIL).
    pub fn complete(&self, py: Python<'_>, fut: Py<PyAny>, outcome: Outcome) {
        if self.queue.closed.load(Ordering::Acquire) {
            return;
        }
        self.queue.items.lock().push(Pending { fut, outcome });
        if self.queue.scheduled.swap(true, Ordering::SeqCst) {
            // A drain is pending already; but if the loop closed before running it, nothing will
            // ever drain this queue: release the outcomes (and the loop) now.
            let closed = self
                .loop_
                .bind(py)
                .call_method0(intern!(py, "is_closed"))
                .and_then(|c| c.is_truthy())
                .unwrap_or_else(|e| {
                    crate::job::keep_interrupt(py, &e);
                    false
                });
            if closed {
                self.queue.closed.store(true, Ordering::Release);
                drop(std::mem::take(&mut *self.queue.items.lock()));
            }
        } else {
            let woke = self
                .call_soon_threadsafe
                .call1(py, (self.drain.clone_ref(py),));
            if let Err(e) = woke {
                crate::job::keep_interrupt(py, &e);
                // The loop is closed: nothing can await these futures any more.
                self.queue.closed.store(true, Ordering::Release);
                drop(std::mem::take(&mut *self.queue.items.lock()));
            }
        }
    }
}

thread_local! {
    /// The completer of the loop this thread ran last: a thread runs one loop at a time.
    static CURRENT: RefCell<Option<Arc<Completer>>> = const { RefCell::new(None) };
}

static GET_RUNNING_LOOP: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

/// The running loop's completer (RuntimeError "no running event loop" outside a coroutine).
pub fn current_completer(py: Python<'_>) -> PyResult<Arc<Completer>> {
    let get = GET_RUNNING_LOOP.get_or_try_init(py, || {
        Ok::<_, PyErr>(py.import("asyncio")?.getattr("get_running_loop")?.unbind())
    })?;
    let loop_ = get.bind(py).call0()?;
    CURRENT.with(|cur| {
        if let Some(c) = cur.borrow().as_ref() {
            if c.loop_.as_ptr() == loop_.as_ptr() {
                return Ok(c.clone());
            }
        }
        let fresh = Arc::new(Completer::new(py, &loop_)?);
        let old = cur.borrow_mut().replace(fresh.clone());
        drop(old);
        Ok(fresh)
    })
}

/// A copy of the calling thread's contextvars context, as `asyncio.to_thread` takes one.
pub fn copy_context(py: Python<'_>) -> PyResult<Py<PyAny>> {
    unsafe { Bound::from_owned_ptr_or_err(py, ffi::PyContext_CopyCurrent()).map(Bound::unbind) }
}
