//! The loop watchdog's clock: a Rust thread that watches a heartbeat the event loop ticks.
//!
//! Why it exists: one blocking call on the loop stalls every coroutine, and asyncio's debug mode
//! only says so afterwards, with no stack. The loop ticks (`tick`, from a `call_later` callback
//! of `rustpool._watchdog`) every `interval`; this thread, without the GIL, sleeps until the
//! last tick it saw would be a threshold overdue and looks then (about once per threshold while
//! the loop is healthy), so watching costs the loop one tiny callback per interval and nothing
//! else. When a tick is `threshold` overdue, the thread takes the GIL (at once when the
//! blocked code released it, at the next switch interval when pure Python holds it) and calls
//! the Python `report("blocked", seconds)`, which captures the loop thread's stack right then;
//! when ticks come again it calls `report("ended", total)`. `report` returns False when the loop
//! is not running (stopped between `run_until_complete` calls, or closed): the thread then waits
//! for the next tick without asking again.
//!
//! The thread is not a Python thread: it never keeps the process alive. It counts as live
//! (`lifecycle::enter`) only while it reports, and once the exit hook ran it ends instead.

use crate::lifecycle;
use pyo3::ffi;
use pyo3::prelude::*;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

struct Beat {
    epoch: Instant,
    /// The loop thread's Python thread state, as its ticks last saw it (see `LoopWatch::frame`).
    thread: AtomicPtr<ffi::PyThreadState>,
    /// Nanoseconds from `epoch` to the last tick.
    last: AtomicU64,
    stop: AtomicBool,
    wake: (Mutex<()>, Condvar),
}

impl Beat {
    fn now(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }
}

/// The native half of `rustpool.watch_loop`: the heartbeat and the thread that watches it.
#[pyclass(module = "rustpool._rustpool", frozen)]
pub struct LoopWatch {
    beat: Arc<Beat>,
}

#[pymethods]
impl LoopWatch {
    /// Start watching: ticks are expected every `interval` seconds, a tick `threshold` seconds
    /// overdue is a stall, reported through `report(event, seconds) -> bool`.
    #[new]
    fn new(threshold: f64, interval: f64, report: Py<PyAny>) -> PyResult<Self> {
        let valid = |x: f64| x.is_finite() && x > 0.0 && x < 86_400.0;
        if !valid(threshold) || !valid(interval) {
            return Err(pyo3::exceptions::PyValueError::new_err(format!(
                "threshold and interval must be seconds > 0, not {threshold} and {interval}"
            )));
        }
        let beat = Arc::new(Beat {
            epoch: Instant::now(),
            thread: AtomicPtr::new(std::ptr::null_mut()),
            last: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            wake: (Mutex::new(()), Condvar::new()),
        });
        let watched = beat.clone();
        let threshold = Duration::from_secs_f64(threshold);
        let interval = Duration::from_secs_f64(interval);
        std::thread::Builder::new()
            .name("rustpool-watchdog".into())
            .spawn(move || watch(&watched, threshold, interval, report))
            .map_err(|e| {
                pyo3::exceptions::PyRuntimeError::new_err(format!(
                    "cannot start the watchdog thread: {e}"
                ))
            })?;
        Ok(LoopWatch { beat })
    }

    /// The loop is alive: called by the loop's own callback every interval (in its thread).
    fn tick(&self, _py: Python<'_>) {
        let tstate = unsafe { ffi::PyThreadState_Get() };
        self.beat.thread.store(tstate, Ordering::Relaxed);
        self.beat.last.store(self.beat.now(), Ordering::Release);
    }

    /// The loop thread's innermost Python frame right now, or None (no tick yet, the thread is
    /// gone, or it runs no Python). Not `sys._current_frames()`: that walks the threads of every
    /// interpreter and makes frame objects for subinterpreter threads with this interpreter's
    /// allocator, which corrupts memory while rustpool's subinterpreter workers run (CPython
    /// 3.13-3.15). Here only a thread state of this interpreter is read, with its GIL held: one
    /// the loop's tick recorded and that is still in the interpreter's list of threads (a thread
    /// state leaves that list with the GIL held, so it cannot go while we look).
    fn frame<'py>(&self, py: Python<'py>) -> Option<Bound<'py, PyAny>> {
        let wanted = self.beat.thread.load(Ordering::Relaxed);
        if wanted.is_null() {
            return None;
        }
        unsafe {
            let mut t = ffi::PyInterpreterState_ThreadHead(ffi::PyInterpreterState_Get());
            while !t.is_null() {
                if t == wanted {
                    let frame = ffi::PyThreadState_GetFrame(t);
                    return Bound::from_owned_ptr_or_opt(py, frame.cast());
                }
                t = ffi::PyThreadState_Next(t);
            }
        }
        None
    }

    /// Stop the thread (it ends within its next look; never waited for here, so `report` may
    /// call it).
    fn stop(&self) {
        self.beat.stop.store(true, Ordering::SeqCst);
        let _guard = self.beat.wake.0.lock().unwrap_or_else(|p| p.into_inner());
        self.beat.wake.1.notify_all();
    }

    #[getter]
    fn stopped(&self) -> bool {
        self.beat.stop.load(Ordering::SeqCst)
    }
}

impl Drop for LoopWatch {
    fn drop(&mut self) {
        self.beat.stop.store(true, Ordering::SeqCst);
        self.beat.wake.1.notify_all();
    }
}

/// Call the Python `report`; None when the process is exiting (the thread must end).
fn report(report: &Py<PyAny>, event: &str, seconds: f64) -> Option<bool> {
    let _live = lifecycle::enter()?;
    Some(Python::attach(|py| {
        match report.call1(py, (event, seconds)) {
            Ok(answer) => answer.is_truthy(py).unwrap_or(false),
            Err(e) => {
                e.print(py);
                false
            }
        }
    }))
}

fn watch(beat: &Beat, threshold: Duration, interval: Duration, on: Py<PyAny>) {
    // While the loop ticks, the thread sleeps until the moment the last tick seen would be a
    // threshold overdue (about once per threshold, not once per tick); during a stall it looks
    // every quarter threshold (at most 20 ms) for the tick that ends it.
    let look = (threshold / 4).clamp(Duration::from_millis(1), Duration::from_millis(20));
    let (threshold, interval) = (threshold.as_nanos() as u64, interval.as_nanos() as u64);
    beat.last.store(beat.now(), Ordering::Release);
    // (when the overdue tick was due, the tick seen then) while a stall lasts.
    let mut stall: Option<(u64, u64)> = None;
    // The tick seen when `report` said the loop was not running: asked again after a new one.
    let mut parked: Option<u64> = None;
    let mut sleep = look;
    loop {
        {
            let guard = beat.wake.0.lock().unwrap_or_else(|p| p.into_inner());
            if beat.stop.load(Ordering::SeqCst) {
                break;
            }
            let _ = beat.wake.1.wait_timeout(guard, sleep);
        }
        if beat.stop.load(Ordering::SeqCst) {
            break;
        }
        sleep = look;
        let last = beat.last.load(Ordering::Acquire);
        if parked == Some(last) {
            continue;
        }
        parked = None;
        let now = beat.now();
        match stall {
            None => {
                let due = last + interval;
                let overdue_at = due + threshold;
                if now >= overdue_at {
                    match report(&on, "blocked", (now - due) as f64 / 1e9) {
                        None => break,
                        Some(true) => stall = Some((due, last)),
                        Some(false) => parked = Some(last),
                    }
                } else {
                    sleep = Duration::from_nanos(overdue_at - now).max(Duration::from_millis(1));
                }
            }
            Some((due, seen)) if last != seen => {
                stall = None;
                if report(&on, "ended", last.saturating_sub(due) as f64 / 1e9).is_none() {
                    break;
                }
            }
            Some(_) => {}
        }
    }
    // `on` holds Python objects: drop it with the GIL, unless the process is exiting (then it
    // is leaked, as everything is at that point).
    if let Some(_live) = lifecycle::enter() {
        Python::attach(|_py| drop(on));
    } else {
        std::mem::forget(on);
    }
}
