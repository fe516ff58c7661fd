//! Pool threads stay attached to the interpreter for their whole life.
//!
//! `Python::attach` on a thread that has no thread state creates one and destroys it again on
//! release, so a short call would pay for a thread state every time. Pool threads instead make
//! their thread state once when they start (`thread_started`), keep it while idle (detached:
//! they do not hold the GIL), and destroy it when the pool lets the thread go
//! (`thread_stopping`). Both count as live (`lifecycle::enter`) while they touch Python; once the
//! interpreter begins to exit, nothing here touches Python again.

use crate::lifecycle;
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::PyTuple;
use std::cell::Cell;
use std::sync::{Arc, OnceLock};

thread_local! {
    /// This thread's Python thread state, and the fork generation it was made in (a forked
    /// child's copy of the forking thread keeps it; no other pool thread exists there).
    static HELD: Cell<Option<(ffi::PyGILState_STATE, *mut ffi::PyThreadState, u64)>> = const { Cell::new(None) };
}

/// What a pool runs once in each new worker thread, with the thread's Python name.
pub struct ThreadSetup {
    pub initializer: Option<Py<PyAny>>,
    pub initargs: Py<PyTuple>,
    /// Set to the pool's "broken" message when an initializer raised (ThreadPoolExecutor's rule:
    /// a pool whose initializer failed is not usable any more).
    pub broken: Arc<OnceLock<String>>,
    pub broken_message: &'static str,
}

/// Called first thing in a new pool thread.
pub fn thread_started(setup: &ThreadSetup) {
    started(Some(setup));
}

/// Called first thing in a pool thread that runs no initializer (it still gets its name).
pub fn thread_started_plain() {
    started(None);
}

fn started(setup: Option<&ThreadSetup>) {
    let Some(_live) = lifecycle::enter() else {
        return;
    };
    unsafe {
        if ffi::Py_IsInitialized() == 0 {
            return;
        }
        let gstate = ffi::PyGILState_Ensure();
        {
            let py = Python::assume_attached();
            name_python_thread(py);
            if let Some((init, setup)) = setup.and_then(|s| Some((s.initializer.as_ref()?, s))) {
                if let Err(err) = init.bind(py).call1(setup.initargs.bind(py)) {
                    log_initializer_failure(py, err);
                    let _ = setup.broken.set(setup.broken_message.to_string());
                }
            }
        }
        let tstate = ffi::PyEval_SaveThread();
        HELD.set(Some((gstate, tstate, lifecycle::generation())));
    }
}

/// Called last thing in a pool thread that the pool lets go.
pub fn thread_stopping() {
    if let Some((gstate, tstate, generation)) = HELD.take() {
        let Some(_live) = lifecycle::enter() else {
            // The interpreter is going away: leave the thread state for finalization to reclaim.
            return;
        };
        if lifecycle::forked_since(generation) {
            // Made in the parent: the child's runtime dropped it already.
            return;
        }
        unsafe {
            ffi::PyEval_RestoreThread(tstate);
            forget_python_thread(Python::assume_attached());
            ffi::PyGILState_Release(gstate);
        }
    }
}

/// Give `threading.current_thread()` the pool thread's name, as ThreadPoolExecutor does.
fn name_python_thread(py: Python<'_>) {
    let Some(name) = std::thread::current().name().map(str::to_owned) else {
        return;
    };
    let r = py
        .import("threading")
        .and_then(|t| t.call_method0("current_thread"))
        .and_then(|t| t.setattr("name", name));
    if let Err(e) = r {
        e.write_unraisable(py, None);
    }
}

/// Drop the `threading` entry that naming made (a `_DummyThread` is never removed by itself), so
/// `threading.enumerate()` lists only threads that exist.
fn forget_python_thread(py: Python<'_>) {
    let r = (|| -> PyResult<()> {
        let threading = py.import("threading")?;
        let ident = threading.call_method0("get_ident")?;
        let lock = threading.getattr("_active_limbo_lock")?;
        lock.call_method0("acquire")?;
        let popped = threading
            .getattr("_active")?
            .call_method1("pop", (ident, py.None()));
        lock.call_method0("release")?;
        popped.map(drop)
    })();
    if let Err(e) = r {
        e.write_unraisable(py, None);
    }
}

fn log_initializer_failure(py: Python<'_>, err: PyErr) {
    let logged = (|| -> PyResult<()> {
        let logger = py.import("concurrent.futures._base")?.getattr("LOGGER")?;
        let kwargs = pyo3::types::PyDict::new(py);
        kwargs.set_item("exc_info", err.value(py))?;
        logger.call_method("critical", ("Exception in initializer:",), Some(&kwargs))?;
        Ok(())
    })();
    if logged.is_err() {
        err.write_unraisable(py, None);
    }
}
