//! What the isolated modes share: a pool of dedicated worker threads fed by one queue, each
//! worker running calls somewhere else (a subinterpreter, a process) and settling them from the
//! bytes that come back. Only bytes cross: the call as pickle protocol 5 (made here, on the main
//! side, by `rustpool._crossing`), the reply as (status, bytes). A call that cannot be pickled
//! fails on its future, as with the stdlib; `submit` raises only for the pool's state (shut down,
//! broken).

use super::{broken_error, Isolation};
use crate::handoff::Handoff;
use crate::job::{panic_error, Job};
use crossbeam_channel::{Receiver, Sender};
use parking_lot::{Condvar, Mutex};
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyBytes;
use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long an idle worker spins for the next call before it sleeps on the queue.
pub const SPIN: Duration = Duration::from_micros(100);
/// How long a submitter that found a spinning worker waits, without the GIL, for the call to be
/// settled: a short call is then done with no thread wake-up on either side.
pub const HANDOFF: Duration = Duration::from_micros(50);

/// Reply statuses (as in `rustpool._crossing`): 0 and 1 come from the worker (a result, an
/// exception), the others say why there is no reply.
pub const UNLOADABLE: i64 = 2;
/// A panic in the worker's Rust code.
pub const PANICKED: i64 = 3;
/// The worker process died while it ran the call.
pub const CRASHED: i64 = 4;
/// The pool is broken (an initializer failed).
pub const BROKEN: i64 = 5;
/// The call ran past its timeout; its worker process was killed.
pub const TIMED_OUT: i64 = 6;
/// The awaiting side cancelled the call while it ran; its worker process was killed.
pub const CANCELLED: i64 = 7;

/// The most calls a worker claims at once from a long queue.
pub const MAX_BATCH: usize = 16;

static CROSSING: PyOnceLock<Py<PyModule>> = PyOnceLock::new();

pub fn crossing(py: Python<'_>) -> PyResult<&Bound<'_, PyModule>> {
    CROSSING
        .get_or_try_init(py, || py.import("rustpool._crossing").map(Bound::unbind))
        .map(|m| m.bind(py))
}

pub struct Task {
    /// The pickled call; None for the panic test probe.
    pub payload: Option<Vec<u8>>,
    pub job: Job,
}

pub struct Shared {
    /// "interpreter" or "process": where calls run (error messages name it).
    pub mode: &'static str,
    pub fallback: Option<Box<dyn Isolation>>,
    /// Set once when the pool cannot run calls any more (a worker initializer failed): every
    /// call then fails with `BrokenProcessPool` and this message.
    pub broken: OnceLock<String>,
    /// Whether a worker spins for work (`IDLE`, `SPINNING`, or `PROMISED`: a submitter claimed
    /// it and sends it the call on `direct`), and calls settled so far: a submitter that finds a
    /// spinning worker hands it the call and the main GIL for a moment, as the thread pools do
    /// (`runner.rs`).
    pub spinning: AtomicUsize,
    pub direct: (Sender<Task>, Receiver<Task>),
    pub settled: AtomicUsize,
    pub handoff: Handoff,
    /// (module, qualname) of functions that could not be loaded in a subinterpreter: under
    /// "auto" they go straight to the fallback from then on.
    pub refused: Mutex<HashSet<(String, String)>>,
}

pub struct WorkerPool {
    tx: Mutex<Option<Sender<Task>>>,
    rx: Receiver<Task>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    shared: Arc<Shared>,
    workers: usize,
}

fn func_key(py: Python<'_>, func: &Py<PyAny>) -> Option<(String, String)> {
    let f = func.bind(py);
    let module = f.getattr("__module__").ok()?.extract::<String>().ok()?;
    let name = f.getattr("__qualname__").ok()?.extract::<String>().ok()?;
    Some((module, name))
}

impl Isolation for WorkerPool {
    fn submit(&self, py: Python<'_>, job: Job) -> PyResult<()> {
        if let Some(msg) = self.shared.broken.get() {
            return Err(broken_error(msg.clone()));
        }
        if job.timeout.is_some() && self.shared.mode != "process" {
            // Only a process can be stopped: "auto" runs such a call in its process fallback
            // (`CpuPool` refuses timeouts where there is none).
            if let Some(fallback) = &self.shared.fallback {
                return fallback.submit(py, job);
            }
        }
        if self.tx.lock().is_none() {
            // Before pickling: a pool that is shut down refuses every call the same way.
            return Err(PyRuntimeError::new_err(
                "cannot schedule new futures after shutdown",
            ));
        }
        let payload = match job.call() {
            None => None,
            Some(call) => {
                if let Some(fallback) = &self.shared.fallback {
                    if let Some(key) = func_key(py, &call.func) {
                        if self.shared.refused.lock().contains(&key) {
                            return fallback.submit(py, job);
                        }
                    }
                }
                let kwargs = call.kwargs.as_ref().map(|k| k.clone_ref(py).into_any());
                let encoded = crossing(py).and_then(|c| {
                    c.getattr("dumps_call")?.call1((
                        call.func.clone_ref(py),
                        call.args.clone_ref(py),
                        kwargs,
                    ))
                });
                match (encoded, &self.shared.fallback) {
                    (Ok(bytes), _) => {
                        let bytes = bytes.cast_into::<PyBytes>()?;
                        let len = bytes.as_bytes().len();
                        if self.shared.mode == "process" && u32::try_from(len).is_err() {
                            // Frames to a worker process carry a 32-bit length.
                            job.fail(py, PyValueError::new_err(format!(
                                "the pickled call is {len} bytes; a worker process takes at most 4 GiB per call"
                            )));
                            return Ok(());
                        }
                        Some(bytes.as_bytes().to_vec())
                    }
                    // "auto": a call that cannot cross runs in the next mode instead.
                    (Err(_), Some(fallback)) => return fallback.submit(py, job),
                    // As the stdlib: an error of the call itself (it cannot be pickled) is the
                    // call's outcome, on its future; only the pool's state is raised here.
                    (Err(e), None) => {
                        job.fail(py, e);
                        return Ok(());
                    }
                }
            }
        };
        let before = self.shared.settled.load(Ordering::Acquire);
        let direct;
        {
            let tx = self.tx.lock();
            let refused = || PyRuntimeError::new_err("cannot schedule new futures after shutdown");
            let Some(tx) = tx.as_ref() else {
                return Err(refused());
            };
            let task = Task { payload, job };
            // A worker spinning idle with nothing queued: give the call to it alone (sending on
            // the queue would also wake a sleeping worker, which then races it).
            direct = self.rx.is_empty()
                && self
                    .shared
                    .spinning
                    .compare_exchange(SPINNING, PROMISED, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok();
            if direct {
                let _ = self.shared.direct.0.send(task);
            } else {
                tx.send(task).map_err(|_| refused())?;
            }
        }
        let handoff = direct && self.shared.handoff.should_try();
        if handoff {
            self.shared.handoff.wait(py, HANDOFF, || {
                self.shared.settled.load(Ordering::Acquire) != before
            });
        }
        Ok(())
    }

    fn shutdown(&self, py: Python<'_>, wait: bool, cancel_futures: bool) {
        let tx = self.tx.lock().take();
        if cancel_futures {
            while let Ok(task) = self.rx.try_recv() {
                task.job.cancel(py);
            }
        }
        // Workers finish what is queued, then end (their subinterpreters or processes) and exit.
        drop(tx);
        if wait {
            let threads = std::mem::take(&mut *self.threads.lock());
            py.detach(|| {
                for t in threads {
                    let _ = t.join();
                }
            });
        }
        // After the workers: they may still hand calls that refused to load to the fallback.
        if let Some(fallback) = &self.shared.fallback {
            fallback.shutdown(py, wait, cancel_futures);
        }
    }

    fn is_shutdown(&self) -> bool {
        self.tx.lock().is_none()
    }

    fn counts(&self) -> (usize, usize) {
        let alive = self
            .threads
            .lock()
            .iter()
            .filter(|t| !t.is_finished())
            .count();
        (alive.min(self.workers), self.rx.len())
    }
}

impl Drop for WorkerPool {
    fn drop(&mut self) {
        // Dropped without shutdown: let the workers finish the queue and end by themselves (the
        // exit hook still waits for subinterpreters). Never join here: the drop may hold the GIL.
        self.tx.lock().take();
    }
}

/// Settle a call's future from its reply (main GIL held).
pub fn deliver(py: Python<'_>, shared: &Shared, task: Task, status: i64, data: Vec<u8>) {
    let Task { job, .. } = task;
    match status {
        PANICKED => {
            let msg = String::from_utf8_lossy(&data).into_owned();
            job.finish(py, Err(panic_error(Box::new(msg))));
            return;
        }
        CANCELLED => {
            job.cancel(py);
            return;
        }
        BROKEN => {
            // `shared.broken` is set already (by the worker that met the failed initializer).
            let msg = String::from_utf8_lossy(&data).into_owned();
            job.finish(py, Err(broken_error(msg)));
            return;
        }
        _ => {}
    }
    let func = job.call().map(|c| c.func.clone_ref(py));
    if status == UNLOADABLE {
        if let (Some(fallback), Some(func)) = (&shared.fallback, &func) {
            if let Some(key) = func_key(py, func) {
                shared.refused.lock().insert(key);
            }
            // Already claimed: the fallback runs it without claiming again (and settles it with
            // the error if it cannot take it any more).
            let _ = fallback.submit(py, job);
            return;
        }
    }
    let decoded = crossing(py).and_then(|c| {
        c.getattr("decode")?
            .call1((status, PyBytes::new(py, &data), func, shared.mode))?
            .extract::<(bool, Py<PyAny>)>()
    });
    let result = match decoded {
        Ok((false, value)) => Ok(value),
        Ok((true, exc)) => Err(PyErr::from_value(exc.into_bound(py))),
        Err(e) => Err(e),
    };
    job.finish(py, result);
}

impl WorkerPool {
    /// A pool whose `workers` threads each run `body(index, queue, shared)` (counted in `LIVE`
    /// until they return).
    pub fn start(
        mode: &'static str,
        workers: usize,
        name_prefix: &str,
        fallback: Option<Box<dyn Isolation>>,
        body: impl Fn(usize, Receiver<Task>, Arc<Shared>) + Send + Sync + Clone + 'static,
    ) -> PyResult<Self> {
        // Counted before the threads start, so that the exit hook never misses one.
        *LIVE.lock() += workers;
        let (tx, rx) = crossbeam_channel::unbounded::<Task>();
        let shared = Arc::new(Shared {
            mode,
            fallback,
            broken: OnceLock::new(),
            spinning: AtomicUsize::new(IDLE),
            direct: crossbeam_channel::unbounded(),
            settled: AtomicUsize::new(0),
            handoff: Handoff::default(),
            refused: Mutex::new(HashSet::new()),
        });
        let mut threads = Vec::with_capacity(workers);
        for i in 0..workers {
            let (rx, shared, body) = (rx.clone(), shared.clone(), body.clone());
            let spawned = std::thread::Builder::new()
                .name(format!("{name_prefix}_{i}"))
                .spawn(move || {
                    body(i, rx, shared);
                    live_ended(1);
                });
            match spawned {
                Ok(h) => threads.push(h),
                Err(e) => {
                    live_ended(workers - i);
                    return Err(PyRuntimeError::new_err(format!(
                        "could not start a worker thread: {e}"
                    )));
                }
            }
        }
        Ok(WorkerPool {
            tx: Mutex::new(Some(tx)),
            rx,
            threads: Mutex::new(threads),
            shared,
            workers,
        })
    }
}

/// Worker threads alive (and with them their subinterpreters or processes), process-wide: the
/// exit hook waits for this to reach zero, so that work handed to a pool finishes (the rule of
/// concurrent.futures) and every subinterpreter ends before the main interpreter finalizes.
static LIVE: Mutex<usize> = Mutex::new(0);
static LIVE_CHANGED: Condvar = Condvar::new();

fn live_ended(n: usize) {
    *LIVE.lock() -= n;
    LIVE_CHANGED.notify_all();
}

/// Block (without the GIL) until every worker thread has ended.
pub fn wait_all_ended(py: Python<'_>) {
    py.detach(|| {
        let mut live = LIVE.lock();
        while *live > 0 {
            LIVE_CHANGED.wait(&mut live);
        }
    });
}

/// Calls a worker ran, with their replies, waiting to be settled.
pub type Done = Vec<(Task, i64, Vec<u8>)>;

/// The next calls for a worker. When it has nothing to settle (`idle`) it spins a little for a
/// call, then waits for one; then it adds a share of a long queue, small enough that the other
/// workers still get theirs. None once the pool is shut down and its queue is empty.
pub fn next_calls(
    rx: &Receiver<Task>,
    shared: &Shared,
    workers: usize,
    idle: bool,
) -> Option<Vec<Task>> {
    let mut next: Vec<Task> = Vec::new();
    if idle {
        match spin_for_work(rx, shared) {
            Some(task) => next.push(task),
            None => next.push(rx.recv().ok()?),
        }
    }
    let share = (rx.len() / (2 * workers)).min(MAX_BATCH - 1);
    let want = if next.is_empty() { share.max(1) } else { share };
    next.extend(std::iter::from_fn(|| rx.try_recv().ok()).take(want));
    Some(next)
}

/// With the main GIL: settle every finished call and claim the next ones (a call cancelled
/// before it starts is dropped, never run).
pub fn settle_and_claim<C: FromIterator<Task>>(
    py: Python<'_>,
    shared: &Shared,
    done: &mut Done,
    next: Vec<Task>,
) -> C {
    for (task, status, data) in done.drain(..) {
        deliver(py, shared, task, status, data);
        shared.settled.fetch_add(1, Ordering::Release);
    }
    next.into_iter()
        .filter_map(|mut task| task.job.claim(py).then_some(task))
        .collect()
}

const IDLE: usize = 0;
const SPINNING: usize = 1;
const PROMISED: usize = 2;

/// An idle worker spins a little for the next call (one spinner at a time), so that a call that
/// comes right away is taken without a thread wake-up. Returns the call a submitter handed it.
fn spin_for_work(rx: &Receiver<Task>, shared: &Shared) -> Option<Task> {
    if shared
        .spinning
        .compare_exchange(IDLE, SPINNING, Ordering::AcqRel, Ordering::Acquire)
        .is_err()
    {
        return None;
    }
    let start = Instant::now();
    let mut n = 0u32;
    while rx.is_empty()
        && shared.spinning.load(Ordering::Acquire) == SPINNING
        && start.elapsed() < SPIN
    {
        // Mostly a pure spin (a yield costs a syscall per look), with a yield now and then so
        // that a thread sharing this core still gets to run.
        n = n.wrapping_add(1);
        if n.is_multiple_of(64) {
            std::thread::yield_now();
        } else {
            std::hint::spin_loop();
        }
    }
    if shared
        .spinning
        .compare_exchange(SPINNING, IDLE, Ordering::AcqRel, Ordering::Acquire)
        .is_ok()
    {
        return None;
    }
    // A submitter claimed this worker: its call is on the way (it sends right after the claim).
    let task = shared.direct.1.recv().ok();
    shared.spinning.store(IDLE, Ordering::Release);
    task
}
