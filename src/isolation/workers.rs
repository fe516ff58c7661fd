//! What the isolated modes share: a pool of dedicated worker threads fed by one queue, each
//! worker running calls somewhere else (a subinterpreter, a process) and settling them from the
//! bytes that come back. Only bytes cross: the call as pickle protocol 5 (made here, on the main
//! side, by `rustpool._crossing`), the reply as (status, bytes). A call that cannot be pickled
//! fails on its future, as with the stdlib; `submit` raises only for the pool's state (shut down,
//! broken).

use super::fallback::Fallback;
use super::shm::Piece;
use super::{broken_error, Isolation};
use crate::handoff::Handoff;
use crate::job::{panic_error, Job};
use crate::lifecycle;
use crate::sync::{Condvar, Mutex};
use crossbeam_channel::{Receiver, Sender};
use pyo3::buffer::PyBuffer;
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBytes, PyString};
use std::collections::{HashMap, HashSet};
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, Weak};
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
/// fn began in a subinterpreter, then imported a module that refuses it: the call fails (it is
/// never run again), and "auto" sends the function's next calls to its fallback.
pub const REFUSED: i64 = 8;

/// The most calls a worker claims at once from a long queue.
pub const MAX_BATCH: usize = 16;
/// A worker claims more than one call at a time only while the last call took less than this.
const BATCH_BELOW_NS: u64 = 1_000_000;
/// A worker running a claimed batch looks again (with the main GIL) at the calls it claimed once
/// this long has passed since it last did: a call cancelled at least this long before its turn
/// never begins (and what the batch finished is settled on the way).
pub const RECHECK_AFTER: Duration = Duration::from_millis(1);
/// A result a worker hands over in the middle of a batch (`Shared::hand_over`) is settled by the
/// pool's settler once it has waited this long for the worker to settle it itself: a result
/// never waits for the rest of its batch.
const SETTLE_AFTER: Duration = Duration::from_millis(1);

static CROSSING: PyOnceLock<Py<PyModule>> = PyOnceLock::new();

pub fn crossing(py: Python<'_>) -> PyResult<&Bound<'_, PyModule>> {
    CROSSING
        .get_or_try_init(py, || py.import("rustpool._crossing").map(Bound::unbind))
        .map(|m| m.bind(py))
}

pub struct Task {
    /// The pickled call; None for the panic test probe.
    pub payload: Option<Vec<u8>>,
    /// Its out-of-band buffers (the big ones: `rustpool._worker.dumps_oob`), held (and their
    /// objects alive) until the call is settled; read without the GIL.
    pub buffers: Vec<PyBuffer<u8>>,
    /// The result's out-of-band buffers, once a worker replied with some.
    pub returned: Vec<Piece>,
    pub job: Job,
}

impl Task {
    /// The bytes of each out-of-band buffer.
    pub fn buffer_slices(&self) -> Vec<&[u8]> {
        self.buffers
            .iter()
            // SAFETY: each buffer is C-contiguous (checked when taken) and held by the task.
            .map(|b| unsafe { std::slice::from_raw_parts(b.buf_ptr() as *const u8, b.len_bytes()) })
            .collect()
    }
}

/// A call's pickle and out-of-band buffers from what `dumps_call` returned.
fn call_parts(encoded: &Bound<'_, PyAny>) -> PyResult<(Vec<u8>, Vec<PyBuffer<u8>>)> {
    if let Ok(bytes) = encoded.cast::<PyBytes>() {
        return Ok((bytes.as_bytes().to_vec(), Vec::new()));
    }
    let (bytes, list): (Bound<'_, PyBytes>, Vec<Bound<'_, PyAny>>) = encoded.extract()?;
    let buffers = list
        .iter()
        .map(|b| {
            let buf = PyBuffer::<u8>::get(b)?;
            if !buf.is_c_contiguous() {
                return Err(PyValueError::new_err(
                    "an out-of-band buffer that is not contiguous",
                ));
            }
            Ok(buf)
        })
        .collect::<PyResult<Vec<_>>>()?;
    Ok((bytes.as_bytes().to_vec(), buffers))
}

pub struct Shared {
    /// "interpreter" or "process": where calls run (error messages name it).
    pub mode: &'static str,
    pub fallback: Option<Fallback>,
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
    /// The queue: `tx` is taken at shutdown (workers finish what is queued, then end).
    tx: Mutex<Option<Sender<Task>>>,
    rx: Receiver<Task>,
    /// Wakes idle workers for something other than a call (a fork is coming).
    wake: (Sender<()>, Receiver<()>),
    /// The fork generation the pool was made in (see `lifecycle`).
    generation: u64,
    /// Worker threads not ended yet.
    alive: AtomicUsize,
    /// Worker processes that died on their own (in a call or idle), and worker processes let go
    /// for a new one (crashed, killed by a timeout or a cancel, or recycled) while the pool went
    /// on: `stats()`.
    pub crashed: AtomicU64,
    pub replaced: AtomicU64,
    /// Set by a Ctrl-C (`lifecycle::Pool::abort`): calls not begun are cancelled, worker
    /// processes are killed.
    pub aborted: AtomicBool,
    /// Worker processes alive, by pid, with the fds of their pipes (a pid leaves before its
    /// process is reaped, so a kill never reaches a stranger; a forked child of this process
    /// closes the fds, so that the workers still see EOF when this process lets them go).
    pub children: Mutex<HashMap<u32, Vec<RawFd>>>,
    /// A fork is coming: workers end their subinterpreters and wait (`park_for_fork`).
    parking: AtomicBool,
    /// Workers parked (or with nothing to park) while `parking`.
    parked: AtomicUsize,
    /// How long the last call took, in ns: a worker claims batches only while calls are short
    /// (a long call claimed in a batch would hold back the calls behind it, which then could
    /// not be cancelled or taken by an idle worker).
    pub last_call_ns: AtomicU64,
    /// Calls running in subinterpreters right now (worker thread id -> its interpreter), and
    /// how an abort interrupts them (set by interpreter pools): a Ctrl-C stops them too.
    #[cfg_attr(not(Py_3_13), allow(dead_code))]
    pub running: Mutex<HashMap<std::ffi::c_ulong, usize>>,
    pub interrupt_running: OnceLock<fn(&Shared)>,
    /// Results handed over in the middle of a batch, for the settler (see `hand_over`).
    held: Mutex<Held>,
    held_changed: Condvar,
}

/// See `Shared::hand_over`.
#[derive(Default)]
struct Held {
    done: Done,
    /// When `done` stopped being empty.
    since: Option<Instant>,
    /// Every worker ended: the settler settles what is left and ends.
    closed: bool,
    /// The settler sleeps until woken (nothing was handed over for `SETTLER_IDLE`); while it is
    /// awake it looks every `SETTLE_AFTER` by itself, so that a burst of batches costs one
    /// wake-up, not one per batch.
    parked: bool,
}

/// How long the settler stays awake (looking every `SETTLE_AFTER`) after the last hand-over.
const SETTLER_IDLE: Duration = Duration::from_millis(50);

pub struct WorkerPool {
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
        if lifecycle::forked_since(self.shared.generation) {
            return Err(lifecycle::forked_error("CpuExecutor"));
        }
        if let Some(msg) = self.shared.broken.get() {
            return Err(broken_error(msg.clone()));
        }
        let wants_process = job.timeout.is_some() || job.force == Some(super::Mode::Process);
        if wants_process && self.shared.mode != "process" {
            // Only a process can be stopped: "auto" runs such a call in its process fallback
            // (`CpuPool` refuses timeouts where there is none).
            if let Some(fallback) = &self.shared.fallback {
                return fallback.submit(py, job);
            }
        }
        if self.shared.tx.lock().is_none() {
            // Before pickling: a pool that is shut down refuses every call the same way.
            return Err(PyRuntimeError::new_err(
                "cannot schedule new futures after shutdown",
            ));
        }
        let mut buffers = Vec::new();
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
                let func = call.func.clone_ref(py);
                match (encoded.and_then(|e| call_parts(&e)), &self.shared.fallback) {
                    (Ok((bytes, bufs)), _) => {
                        let len = bytes.len();
                        if self.shared.mode == "process" && u32::try_from(len).is_err() {
                            // Frames to a worker process carry a 32-bit length.
                            job.fail(py, PyValueError::new_err(format!(
                                "the pickled call is {len} bytes; a worker process takes at most 4 GiB per call"
                            )));
                            return Ok(());
                        }
                        buffers = bufs;
                        Some(bytes)
                    }
                    // "auto": a call that cannot cross runs in the next mode instead (said
                    // aloud, or refused, when that is a thread of this process).
                    (Err(e), Some(fallback)) => {
                        return match fallback.admits(py, &func, e.value(py).as_any()) {
                            Ok(()) => fallback.submit(py, job),
                            Err(e) => {
                                job.fail(py, e);
                                Ok(())
                            }
                        };
                    }
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
            let tx = self.shared.tx.lock();
            let refused = || PyRuntimeError::new_err("cannot schedule new futures after shutdown");
            let Some(tx) = tx.as_ref() else {
                return Err(refused());
            };
            let task = Task {
                payload,
                buffers,
                returned: Vec::new(),
                job,
            };
            // A worker spinning idle with nothing queued: give the call to it alone (sending on
            // the queue would also wake a sleeping worker, which then races it).
            direct = self.shared.rx.is_empty()
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

    fn shutdown(&self, py: Python<'_>, wait: bool, cancel_futures: bool) -> PyResult<()> {
        let shared = &self.shared;
        if lifecycle::forked_since(shared.generation) {
            return Ok(());
        }
        let tx = shared.tx.lock().take();
        if cancel_futures {
            shared.cancel_queued(py);
        }
        // Workers finish what is queued, then end (their subinterpreters or processes) and exit.
        drop(tx);
        if wait {
            let waited =
                lifecycle::wait_interruptibly(py, || shared.alive.load(Ordering::SeqCst) == 0);
            if waited.is_err() {
                lifecycle::Pool::abort(&**shared, py);
                return waited;
            }
        }
        // After the workers: they may still hand calls that refused to load to the fallback.
        match &shared.fallback {
            Some(fallback) => fallback.shutdown(py, wait, cancel_futures),
            None => Ok(()),
        }
    }

    fn is_shutdown(&self) -> bool {
        lifecycle::forked_since(self.shared.generation) || self.shared.tx.lock().is_none()
    }

    fn counts(&self) -> (usize, usize) {
        if lifecycle::forked_since(self.shared.generation) {
            return (0, 0);
        }
        let alive = self.shared.alive.load(Ordering::SeqCst);
        (alive.min(self.workers), self.shared.rx.len())
    }

    fn workers(&self) -> super::Workers {
        if lifecycle::forked_since(self.shared.generation) {
            return Default::default();
        }
        let fallback = self
            .shared
            .fallback
            .as_ref()
            .map(|f| f.workers())
            .unwrap_or_default();
        super::Workers {
            alive: self.shared.alive.load(Ordering::SeqCst).min(self.workers),
            crashed: self.shared.crashed.load(Ordering::Relaxed),
            replaced: self.shared.replaced.load(Ordering::Relaxed),
        } + fallback
    }
}

impl Drop for WorkerPool {
    fn drop(&mut self) {
        // Dropped without shutdown: let the workers finish the queue and end by themselves (the
        // exit hook still waits for them). Never join here: the drop may hold the GIL.
        if !lifecycle::forked_since(self.shared.generation) {
            self.shared.tx.lock().take();
        }
    }
}

impl Shared {
    /// Cancel every call still queued (none of them has begun).
    fn cancel_queued(&self, py: Python<'_>) {
        let queued: Vec<Task> = std::iter::from_fn(|| self.rx.try_recv().ok()).collect();
        for task in queued {
            task.job.cancel(py);
        }
    }

    /// Whether calls claimed by a worker must not begin any more (a Ctrl-C aborted the pool).
    pub fn aborting(&self) -> bool {
        self.aborted.load(Ordering::Acquire)
    }

    /// A fork is coming: the worker must put its subinterpreter away (see `park`).
    pub fn parking(&self) -> bool {
        self.parking.load(Ordering::Acquire)
    }

    /// Called by a worker that has nothing the fork cannot survive any more: wait until the
    /// fork is over (the parent's side resumes it; in the child this thread does not exist).
    #[cfg_attr(not(Py_3_13), allow(dead_code))]
    pub fn park(&self) {
        self.parked.fetch_add(1, Ordering::SeqCst);
        lifecycle::notify();
        lifecycle::wait_until(|| !self.parking());
        self.parked.fetch_sub(1, Ordering::SeqCst);
    }

    /// In the middle of a claimed batch, before the next call begins: hand what finished so far
    /// to the pool's settler thread. The worker takes it back at its next attach (the usual case,
    /// when the batch is short); when that has not happened within `SETTLE_AFTER` (the next call
    /// is long), the settler settles it. One wake-up of the settler per batch at most.
    pub fn hand_over(&self, done: &mut Done) {
        if done.is_empty() {
            return;
        }
        let mut held = self.held.lock();
        if held.done.is_empty() {
            held.since = Some(Instant::now());
            if held.parked {
                held.parked = false;
                self.held_changed.notify_one();
            }
        }
        held.done.append(done);
    }

    /// The settler thread's body: settle what workers handed over and did not take back in
    /// time, until every worker has ended.
    fn settle_held(&self) {
        let mut last_seen = Instant::now();
        loop {
            let mut held = self.held.lock();
            let mut done = loop {
                match held.since {
                    Some(since) if held.closed || since.elapsed() >= SETTLE_AFTER => {
                        held.since = None;
                        break std::mem::take(&mut held.done);
                    }
                    Some(since) => {
                        last_seen = Instant::now();
                        let left = SETTLE_AFTER.saturating_sub(since.elapsed());
                        self.held_changed.wait_for(&mut held, left);
                    }
                    None if held.closed => return,
                    None if last_seen.elapsed() >= SETTLER_IDLE => {
                        held.parked = true;
                        self.held_changed.wait(&mut held);
                        last_seen = Instant::now();
                    }
                    None => {
                        self.held_changed.wait_for(&mut held, SETTLE_AFTER);
                    }
                }
            };
            drop(held);
            Python::attach(|py| settle(py, self, &mut done));
        }
    }

    /// Note how long a call took (see `last_call_ns`).
    pub fn timed(&self, took: Duration) {
        let ns = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        self.last_call_ns.store(ns, Ordering::Relaxed);
    }

    /// Kill the pool's worker processes (their calls fail or are cancelled; see `aborting`).
    fn kill_children(&self) {
        for pid in self.children.lock().keys() {
            if let Ok(pid) = libc::pid_t::try_from(*pid) {
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }
}

impl lifecycle::Pool for Shared {
    fn close(&self, _py: Python<'_>) {
        self.tx.lock().take();
    }

    fn abort(&self, py: Python<'_>) {
        self.aborted.store(true, Ordering::Release);
        self.tx.lock().take();
        self.cancel_queued(py);
        self.kill_children();
        if let Some(interrupt) = self.interrupt_running.get() {
            py.detach(|| interrupt(self));
        }
        if let Some(fallback) = &self.fallback {
            drop(fallback.shutdown(py, false, true));
        }
    }

    fn park_for_fork(&self) {
        if self.mode != "interpreter" {
            return; // worker processes and their threads survive a fork of this process
        }
        self.parking.store(true, Ordering::SeqCst);
        for _ in 0..self.alive.load(Ordering::SeqCst) {
            let _ = self.wake.0.send(());
        }
        lifecycle::wait_until(|| {
            self.parked.load(Ordering::SeqCst) >= self.alive.load(Ordering::SeqCst)
        });
    }

    fn resume_after_fork(&self) {
        self.parking.store(false, Ordering::SeqCst);
        lifecycle::notify();
    }

    fn forked_child(&self) {
        // The lock may have been held by a thread that does not exist here.
        if let Some(children) = self.children.try_lock() {
            for fd in children.values().flatten() {
                unsafe { libc::close(*fd) };
            }
        }
    }
}

/// Settle a call's future from its reply (main GIL held).
pub fn deliver(py: Python<'_>, shared: &Shared, task: Task, status: i64, data: Vec<u8>) {
    let Task { job, returned, .. } = task;
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
    if status == REFUSED && shared.fallback.is_some() {
        if let Some(key) = func.as_ref().and_then(|f| func_key(py, f)) {
            shared.refused.lock().insert(key);
        }
    }
    if status == UNLOADABLE {
        if let (Some(fallback), Some(func)) = (&shared.fallback, &func) {
            let why = PyString::new(py, &String::from_utf8_lossy(&data));
            // Under fallback="error" the call fails as it would without a fallback.
            if fallback.admits(py, func, why.as_any()).is_ok() {
                if let Some(key) = func_key(py, func) {
                    shared.refused.lock().insert(key);
                }
                // Already claimed: the fallback runs it without claiming again (and settles it
                // with the error if it cannot take it any more).
                let _ = fallback.submit(py, job);
                return;
            }
        }
    }
    let decoded = crossing(py).and_then(|c| {
        let buffers = returned
            .into_iter()
            .map(|p| p.into_py(py))
            .collect::<PyResult<Vec<_>>>()?;
        c.getattr("decode")?
            .call1((status, PyBytes::new(py, &data), func, shared.mode, buffers))?
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
    /// A pool whose `workers` threads each run `body(index, queue, shared)`; each counts as
    /// live (`lifecycle`) until it returns.
    pub fn start(
        mode: &'static str,
        workers: usize,
        name_prefix: &str,
        fallback: Option<Fallback>,
        body: impl Fn(usize, Receiver<Task>, Arc<Shared>) + Send + Sync + Clone + 'static,
    ) -> PyResult<Self> {
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
            tx: Mutex::new(Some(tx)),
            rx: rx.clone(),
            wake: crossbeam_channel::unbounded(),
            generation: lifecycle::generation(),
            alive: AtomicUsize::new(0),
            crashed: AtomicU64::new(0),
            replaced: AtomicU64::new(0),
            aborted: AtomicBool::new(false),
            children: Mutex::new(HashMap::new()),
            parking: AtomicBool::new(false),
            parked: AtomicUsize::new(0),
            last_call_ns: AtomicU64::new(0),
            running: Mutex::new(HashMap::new()),
            interrupt_running: OnceLock::new(),
            held: Mutex::new(Held::default()),
            held_changed: Condvar::new(),
        });
        let weak: Weak<dyn lifecycle::Pool> = Arc::downgrade(&shared) as Weak<Shared>;
        lifecycle::register(weak);
        for i in 0..workers {
            // Counted before the thread starts, so that the exit hook never misses one.
            let Some(live) = lifecycle::enter() else {
                return Err(PyRuntimeError::new_err(
                    "cannot start a pool while the interpreter exits",
                ));
            };
            shared.alive.fetch_add(1, Ordering::SeqCst);
            let (rx, worker_shared, body) = (rx.clone(), shared.clone(), body.clone());
            let spawned = std::thread::Builder::new()
                .name(format!("{name_prefix}_{i}"))
                .spawn(move || {
                    let _live = live;
                    let _alive = Alive(worker_shared.clone());
                    body(i, rx, worker_shared);
                });
            if let Err(e) = spawned {
                shared.tx.lock().take();
                return Err(PyRuntimeError::new_err(format!(
                    "could not start a worker thread: {e}"
                )));
            }
        }
        // The settler: counted as live like the workers, it ends after them.
        let Some(live) = lifecycle::enter() else {
            return Err(PyRuntimeError::new_err(
                "cannot start a pool while the interpreter exits",
            ));
        };
        let settler_shared = shared.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("{name_prefix}-settler"))
            .spawn(move || {
                let _live = live;
                crate::attach::thread_started_plain();
                settler_shared.settle_held();
                crate::attach::thread_stopping();
            });
        if let Err(e) = spawned {
            shared.tx.lock().take();
            return Err(PyRuntimeError::new_err(format!(
                "could not start a settler thread: {e}"
            )));
        }
        Ok(WorkerPool { shared, workers })
    }
}

/// A worker thread's place in `Shared::alive`, given back however the thread ends.
struct Alive(Arc<Shared>);

impl Drop for Alive {
    fn drop(&mut self) {
        if self.0.alive.fetch_sub(1, Ordering::SeqCst) == 1 {
            // The last worker: the settler settles what is left and ends.
            self.0.held.lock().closed = true;
            self.0.held_changed.notify_one();
        }
        lifecycle::notify();
    }
}

/// Calls a worker ran, with their replies, waiting to be settled.
pub type Done = Vec<(Task, i64, Vec<u8>)>;

/// The next calls for a worker. When it has nothing to settle (`idle`) it spins a little for a
/// call, then waits for one; then, while calls are short, it adds a share of a long queue, small
/// enough that the other workers still get theirs. None once the pool is shut down and its queue
/// is empty; an empty list when the worker was woken for something else (`Shared::parking`).
pub fn next_calls(
    rx: &Receiver<Task>,
    shared: &Shared,
    workers: usize,
    idle: bool,
) -> Option<Vec<Task>> {
    let mut next: Vec<Task> = Vec::new();
    if idle && !shared.parking() {
        match spin_for_work(rx, shared) {
            Some(task) => next.push(task),
            None => crossbeam_channel::select! {
                recv(rx) -> task => next.push(task.ok()?),
                recv(shared.wake.1) -> _ => return Some(next),
            },
        }
    }
    let short = shared.last_call_ns.load(Ordering::Relaxed) < BATCH_BELOW_NS;
    let share = if short {
        (rx.len() / (2 * workers)).min(MAX_BATCH - 1)
    } else {
        0
    };
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
    settle(py, shared, done);
    next.into_iter()
        .filter_map(|mut task| task.job.claim(py).then_some(task))
        .collect()
}

/// With the main GIL: settle every finished call (with those handed over to the settler).
pub fn settle(py: Python<'_>, shared: &Shared, done: &mut Done) {
    {
        let mut held = shared.held.lock();
        if !held.done.is_empty() {
            held.since = None;
            done.append(&mut held.done);
        }
    }
    for (task, status, data) in done.drain(..) {
        deliver(py, shared, task, status, data);
        shared.settled.fetch_add(1, Ordering::Release);
    }
}

/// With the main GIL, in the middle of a claimed batch (every `RECHECK_AFTER`): settle what
/// finished and drop the claimed calls whose awaiting side gave up on them since the claim (they
/// never begin).
pub fn settle_and_recheck(
    py: Python<'_>,
    shared: &Shared,
    done: &mut Done,
    claimed: &mut std::collections::VecDeque<Task>,
) {
    settle(py, shared, done);
    claimed.retain(|task| task.job.still_wanted(py));
}

/// Whether the next claimed call may begin: not once the pool was aborted (Ctrl-C), not once its
/// awaiting side cancelled it. A call that may not is put in `done` as cancelled.
pub fn may_begin(shared: &Shared, task: Task, done: &mut Done) -> Option<Task> {
    if shared.aborting() || task.job.cancel_seen() {
        done.push((task, CANCELLED, Vec::new()));
        return None;
    }
    Some(task)
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
