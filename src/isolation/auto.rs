//! isolation="auto": each function runs where its calls run best, learnt from what they do.
//!
//! A function whose calls release the GIL (hashlib, zlib, numpy, C and Rust extensions) runs on
//! the pool's threads: no pickling, no copies, arguments shared. One whose calls hold the GIL
//! (pure Python) runs isolated: subinterpreters on 3.13+, processes before (and processes for
//! what a subinterpreter cannot take: that is the isolated pool's own fallback).
//!
//! How a function is placed: its first call is its sample. It runs on a thread while a probe
//! thread takes the GIL from it now and then (`HOLD` in every `GAP` + `HOLD`) and reads the
//! sampled thread's CPU clock at each edge: code that holds the GIL (pure Python) stops while
//! the probe has it; code that releases it (a C or Rust routine) runs on. The probe's own waits
//! for the GIL confirm it (see `Reading::verdict`). A machine saturated while the sample runs
//! (worker processes starting on every core, say) can make GIL-releasing code read as holding
//! it: the next sample, `RESAMPLE_CALLS` calls later, puts it right.
//!
//! Other calls of the function wait for the verdict, which comes after `EARLY_WINDOWS` windows
//! (5-30 ms: taking the GIL from pure Python waits up to the switch interval) or at the end of
//! the sample. One sample runs at a time (the probe takes the whole process's GIL); a new
//! function that arrives meanwhile runs where it would without learning, unsampled. A sample too
//! short to read is taken again on the next call, `MAX_INCONCLUSIVE` times, then the function
//! is isolated (the default before learning). While the probe holds the GIL the event loop
//! waits too: sampling adds up to `HOLD` of loop lag per window (plus the switch interval when
//! the sampled code holds the GIL), and slows a pure-Python sample by about a third.
//!
//! A placed function is sampled again after `RESAMPLE_CALLS` calls (doubling while the verdict
//! holds, up to `RESAMPLE_MAX`, and never sooner than `RESAMPLE_AFTER`), so a function whose
//! behaviour depends on its arguments does not keep a wrong early placement. Pinned functions
//! (`rustpool.pin`) and calls with a per-call isolation are never sampled. The table is read by
//! `CpuExecutor.placements()`.

use super::{Isolation, Mode};
use crate::job::{Job, Work};
use crate::lifecycle;
use crate::sync::Mutex;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyCFunction, PyDict, PyTuple};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long the probe holds the GIL in each window, and how long it leaves it between two.
const HOLD: Duration = Duration::from_micros(500);
const GAP: Duration = Duration::from_micros(1000);
/// Less time than this with (or without) the GIL held says nothing.
const MIN_HELD: Duration = Duration::from_micros(400);
/// A sample is read before its call ends once this many windows are done.
const EARLY_WINDOWS: u32 = 3;
/// A thread that kept at least this share of its CPU rate while the GIL was taken from it
/// runs without the GIL.
const RUNS_ON: f64 = 0.5;
/// A sampled thread that kept less than this share of its CPU rate while the probe had the GIL
/// stopped on it.
const STOPPED: f64 = 0.1;
/// With the sampled thread stopped outright, a probe that waited this share of the sample
/// found the GIL held too (a threaded BLAS that parks its calling thread leaves the GIL free).
const WAITED_SOME: f64 = 0.05;
/// A probe that waited for the GIL this share of the sample or more found it held.
const WAITED: f64 = 0.3;
/// A sampled thread that used less CPU than this share of the time even with the GIL free
/// mostly waits (I/O, sleep).
const MOSTLY_WAITS: f64 = 0.05;
const MAX_INCONCLUSIVE: u32 = 3;
const RESAMPLE_CALLS: u64 = 64;
const RESAMPLE_MAX: u64 = 8192;
const RESAMPLE_AFTER: Duration = Duration::from_millis(500);
/// Functions remembered at most (then the table starts again).
const TABLE_MAX: usize = 4096;

/// Where a placed function's calls go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Place {
    Threads,
    Isolated,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Not placed yet: the next call is sampled.
    Unknown,
    /// A sample runs; `before` is where the function was (a re-sample).
    Sampling {
        before: Option<Place>,
    },
    Placed(Place),
    /// `rustpool.pin`: never sampled.
    Pinned(Mode),
}

struct Entry {
    /// The object whose address is the key (a code object, a builtin, a type), kept alive so
    /// that the address cannot be reused.
    _key: Py<PyAny>,
    name: String,
    state: State,
    why: String,
    calls: u64,
    samples: u32,
    inconclusive: u32,
    /// The last sample could not be read: sample the next call.
    retry: bool,
    /// Calls between two samples of a placed function, and the call count of the next one.
    interval: u64,
    next_sample: u64,
    last_sample: Instant,
    /// Calls that arrived while a sample ran: they go where its verdict says.
    pending: Vec<Job>,
}

impl Entry {
    fn due(&self) -> bool {
        self.retry
            || (self.calls >= self.next_sample && self.last_sample.elapsed() >= RESAMPLE_AFTER)
    }
}

/// What a probe saw while a sampled call ran: how much CPU the sampled thread used while the
/// probe held the GIL, against while it did not.
#[derive(Clone, Copy, Debug, Default)]
struct Reading {
    span: Duration,
    /// Wall time with the GIL held by the probe, and the sampled thread's CPU time meanwhile.
    held: Duration,
    cpu_held: Duration,
    /// The same while the probe did not hold it.
    free: Duration,
    cpu_free: Duration,
    /// Hold windows completed.
    windows: u32,
    /// Time the probe spent waiting to take the GIL (counted up to the end of the call if it
    /// was still waiting): a call shorter than the switch interval that holds the GIL gives the
    /// probe no window at all, only this wait.
    waiting: Duration,
}

impl Reading {
    /// How fast the sampled thread ran while the GIL was taken from it, relative to while it
    /// was not (1: not slowed at all, 0: stopped).
    /// None when the thread barely ran even with the GIL free to it: it waits on I/O or a
    /// sleep, or on a GIL some other thread keeps (the probe's waits tell which).
    fn kept_running(&self) -> Option<f64> {
        let rate = |cpu: Duration, wall: Duration| cpu.as_secs_f64() / wall.as_secs_f64().max(1e-9);
        let free = rate(self.cpu_free, self.free);
        (free >= MOSTLY_WAITS).then(|| (rate(self.cpu_held, self.held) / free).min(1.0))
    }

    /// The share of the sample the probe spent waiting for the GIL.
    fn kept_waiting(&self) -> f64 {
        (self.waiting.as_secs_f64() / self.span.as_secs_f64().max(1e-9)).min(1.0)
    }

    /// Isolated when the sampled thread stopped while the probe had the GIL, and either stopped
    /// outright or also kept the probe waiting for the GIL a good share of the time. (A library
    /// that computes on threads of its own, such as a threaded BLAS, may slow the calling
    /// thread whatever the GIL does, but leaves the GIL free; the probe's waits alone are
    /// noisy: it takes the GIL sooner from pure Python when other threads also ask for it.)
    fn verdict(&self) -> Option<Place> {
        if self.windows > 0 && self.held >= MIN_HELD && self.free >= MIN_HELD {
            let Some(kept) = self.kept_running() else {
                // It barely ran: isolated if the GIL was kept from the probe too, else it waits
                // on something else (threads lose nothing there).
                return Some(if self.kept_waiting() >= WAITED {
                    Place::Isolated
                } else {
                    Place::Threads
                });
            };
            let waited = self.kept_waiting();
            let holds =
                kept < RUNS_ON && (waited >= WAITED || (kept < STOPPED && waited >= WAITED_SOME));
            return Some(if holds {
                Place::Isolated
            } else {
                Place::Threads
            });
        }
        // No window: the probe asked for the GIL and did not get it until the call ended.
        (self.waiting >= MIN_HELD).then_some(Place::Isolated)
    }

    fn why(&self, place: Place, isolated: &str) -> String {
        let kept = self.kept_running().unwrap_or(0.0) * 100.0;
        let waited = self.kept_waiting() * 100.0;
        let ms = self.span.as_secs_f64() * 1e3;
        match place {
            Place::Threads => format!(
                "sampled ({ms:.1} ms): the GIL was free to take (waited {waited:.0}% of the time) and it ran on at {kept:.0}% while the GIL was taken from it (it releases the GIL): threads, no pickling"
            ),
            Place::Isolated if self.windows == 0 => format!(
                "sampled ({ms:.1} ms): it kept the GIL from the probe for {:.1} ms (it holds the GIL): {isolated}, in parallel",
                self.waiting.as_secs_f64() * 1e3
            ),
            Place::Isolated => format!(
                "sampled ({ms:.1} ms): it kept the GIL (the probe waited {waited:.0}% of the time) and stopped while the GIL was taken from it (ran at {kept:.0}%; it holds the GIL): {isolated}, in parallel"
            ),
        }
    }
}

/// The probe's view of the sample in progress (shared with the sampled call).
struct Probe {
    active: bool,
    started: Instant,
    reading: Reading,
    /// When the probe's current request for the GIL began (it may still wait).
    asking_since: Option<Instant>,
}

impl Probe {
    /// The reading so far, a request still waiting counted up to now.
    fn reading_now(&self) -> Reading {
        let now = Instant::now();
        let mut r = self.reading;
        if let Some(t) = self.asking_since {
            r.waiting += now - t;
        }
        r.span = now - self.started;
        r
    }
}

/// A thread's CPU-time clock, read from any thread (Linux's `pthread_getcpuclockid`; precise
/// at every read, unlike the scheduler's statistics in /proc, which lag by up to a tick).
struct CpuClock(libc::clockid_t);

impl CpuClock {
    /// The calling thread's clock (None where another thread cannot read it: not Linux).
    fn of_this_thread() -> Option<CpuClock> {
        #[cfg(target_os = "linux")]
        {
            let mut clock: libc::clockid_t = 0;
            (unsafe { libc::pthread_getcpuclockid(libc::pthread_self(), &mut clock) } == 0)
                .then_some(CpuClock(clock))
        }
        #[cfg(not(target_os = "linux"))]
        None
    }

    fn read(&self) -> Duration {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        if unsafe { libc::clock_gettime(self.0, &mut ts) } != 0 {
            return Duration::ZERO;
        }
        Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
    }
}

struct Inner {
    threads: Box<dyn Isolation>,
    isolated: Box<dyn Isolation>,
    isolated_mode: Mode,
    table: Mutex<HashMap<usize, Entry>>,
    /// A sample runs (one at a time).
    sampling: AtomicBool,
}

#[derive(Clone)]
pub struct Auto {
    inner: Arc<Inner>,
}

static PROCESS_CHUNK: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
static PARTIAL: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

/// The function a call's placement is about: `CpuExecutor.map`'s batches run
/// `_crossing.process_chunk(fn, chunk)`, which is about `fn`; a `functools.partial`, about the
/// function it wraps.
fn subject<'py>(
    func: &Bound<'py, PyAny>,
    args: &Bound<'py, PyTuple>,
) -> PyResult<Bound<'py, PyAny>> {
    let py = func.py();
    let chunk = PROCESS_CHUNK.get_or_try_init(py, || {
        super::workers::crossing(py)?
            .getattr("process_chunk")
            .map(Bound::unbind)
    })?;
    let mut f = if func.is(chunk.bind(py)) && !args.is_empty() {
        args.get_item(0)?
    } else {
        func.clone()
    };
    let partial = PARTIAL
        .get_or_try_init(py, || {
            py.import("functools")?
                .getattr("partial")
                .map(Bound::unbind)
        })?
        .bind(py);
    while f.is_instance(partial)? {
        f = f.getattr(intern!(py, "func"))?;
    }
    Ok(f)
}

/// The object that stands for `f` in the table: its code (functions, methods), itself
/// (builtins), or its type (callable objects).
fn key_object<'py>(f: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    if let Some(code) = f.getattr_opt(intern!(f.py(), "__code__"))? {
        return Ok(code);
    }
    if f.is_instance_of::<PyCFunction>() || f.is_instance_of::<pyo3::types::PyType>() {
        return Ok(f.clone());
    }
    Ok(f.get_type().into_any())
}

impl Auto {
    pub fn new(
        threads: Box<dyn Isolation>,
        isolated: Box<dyn Isolation>,
        isolated_mode: Mode,
    ) -> Self {
        Auto {
            inner: Arc::new(Inner {
                threads,
                isolated,
                isolated_mode,
                table: Mutex::new(HashMap::new()),
                sampling: AtomicBool::new(false),
            }),
        }
    }

    /// (function, where it runs, why, calls, samples) for every function seen.
    pub fn placements(&self) -> Vec<(String, String, String, u64, u32)> {
        let table = self.inner.table.lock();
        let mut out: Vec<_> = table
            .values()
            .map(|e| {
                let place = match e.state {
                    State::Unknown => "unplaced".to_string(),
                    State::Sampling { .. } => "sampling".to_string(),
                    State::Placed(p) => self.inner.place_name(p).to_string(),
                    State::Pinned(m) => m.name().to_string(),
                };
                (e.name.clone(), place, e.why.clone(), e.calls, e.samples)
            })
            .collect();
        out.sort();
        out
    }
}

impl Inner {
    fn place_name(&self, place: Place) -> &'static str {
        match place {
            Place::Threads => Mode::Thread.name(),
            Place::Isolated => self.isolated_mode.name(),
        }
    }

    fn route(&self, py: Python<'_>, place: Place, job: Job) -> PyResult<()> {
        match place {
            Place::Threads => self.threads.submit(py, job),
            Place::Isolated => self.isolated.submit(py, job),
        }
    }

    fn route_mode(&self, py: Python<'_>, mode: Mode, mut job: Job) -> PyResult<()> {
        if mode == Mode::Thread {
            return self.threads.submit(py, job);
        }
        job.force = Some(mode);
        self.isolated.submit(py, job)
    }

    /// Hand the calls that waited for a verdict to where it says. They were accepted already:
    /// one that the pool cannot take any more (shut down meanwhile) fails with its error.
    fn release(&self, py: Python<'_>, place: Place, pending: Vec<Job>) {
        let pool = match place {
            Place::Threads => &self.threads,
            Place::Isolated => &self.isolated,
        };
        for job in pending {
            if pool.is_shutdown() {
                job.fail(
                    py,
                    pyo3::exceptions::PyRuntimeError::new_err(
                        "cannot schedule new futures after shutdown",
                    ),
                );
            } else if let Err(e) = pool.submit(py, job) {
                e.write_unraisable(py, None);
            }
        }
    }

    /// Read a sample: `last` when its call has ended (then an unreadable sample counts as
    /// inconclusive), else early, from the probe (only a clear reading counts then). Whether
    /// the function is placed now.
    fn decide(&self, py: Python<'_>, key: usize, reading: Reading, last: bool) -> bool {
        let (place, pending) = {
            let mut table = self.table.lock();
            let Some(e) = table.get_mut(&key) else {
                return false;
            };
            let State::Sampling { before } = e.state else {
                return false; // read early already
            };
            let verdict = reading.verdict();
            if std::env::var_os("RUSTPOOL_DEBUG_SAMPLES").is_some() {
                eprintln!(
                    "rustpool sample {}: {reading:?} last={last} -> {verdict:?}",
                    e.name
                );
            }
            if !last && (verdict.is_none() || reading.windows < EARLY_WINDOWS) {
                return false;
            }
            let place = match verdict {
                Some(place) => {
                    e.samples += 1;
                    e.inconclusive = 0;
                    e.why = reading.why(place, self.isolated_mode.name());
                    // The same verdict again: sample less often; a change: as often as at first.
                    e.interval = if before == Some(place) {
                        (e.interval * 2).min(RESAMPLE_MAX)
                    } else {
                        RESAMPLE_CALLS
                    };
                    place
                }
                None => {
                    e.inconclusive += 1;
                    let stay = before.unwrap_or(Place::Isolated);
                    if e.inconclusive < MAX_INCONCLUSIVE {
                        // Unread (too short, or the probe got no CPU in time): the next call is
                        // sampled again; meanwhile calls go where they went.
                        e.state = before.map_or(State::Unknown, State::Placed);
                        e.retry = true;
                        if before.is_none() {
                            e.why =
                                "its calls were too short to read; sampling the next one".into();
                        }
                        let pending = std::mem::take(&mut e.pending);
                        drop(table);
                        self.release(py, stay, pending);
                        return true;
                    }
                    e.samples += 1;
                    e.why = before.map_or_else(
                        || {
                            format!(
                                "its calls were too short to read (under {} ms): {}, the default",
                                (GAP + HOLD).as_secs_f64() * 1e3,
                                self.isolated_mode.name()
                            )
                        },
                        |_| e.why.clone(),
                    );
                    e.interval = RESAMPLE_MAX;
                    stay
                }
            };
            e.retry = false;
            e.state = State::Placed(place);
            e.next_sample = e.calls + e.interval;
            e.last_sample = Instant::now();
            (place, std::mem::take(&mut e.pending))
        };
        self.release(py, place, pending);
        true
    }
}

impl Isolation for Auto {
    fn submit(&self, py: Python<'_>, mut job: Job) -> PyResult<()> {
        let inner = &self.inner;
        if let Some(mode) = job.force {
            return inner.route_mode(py, mode, job);
        }
        // A timed call needs a process (the isolated pool sends it there).
        let Some(call) = job.call().filter(|_| job.timeout.is_none()) else {
            return inner.isolated.submit(py, job);
        };
        let func = call.func.bind(py).clone();
        let f = subject(&func, call.args.bind(py))?;
        let key_obj = key_object(&f)?;
        let key = key_obj.as_ptr() as usize;
        let mut table = inner.table.lock();
        if !table.contains_key(&key) {
            if table.len() >= TABLE_MAX {
                table.clear();
            }
            drop(table);
            // Outside the lock: this runs Python (and may let the GIL go).
            let pinned = match f.getattr_opt(intern!(py, "__rustpool_isolation__"))? {
                Some(m) => Some(Mode::parse(&m.extract::<String>()?)?),
                None => None,
            };
            let name = super::workers::crossing(py)?
                .getattr(intern!(py, "_describe"))?
                .call1((&f,))?
                .extract::<String>()?;
            table = inner.table.lock();
            table.entry(key).or_insert_with(|| Entry {
                _key: key_obj.unbind(),
                name,
                state: pinned.map_or(State::Unknown, State::Pinned),
                why: pinned.map_or_else(String::new, |m| {
                    format!("pinned to {:?} by rustpool.pin", m.name())
                }),
                calls: 0,
                samples: 0,
                inconclusive: 0,
                retry: false,
                interval: RESAMPLE_CALLS,
                next_sample: 0,
                last_sample: Instant::now(),
                pending: Vec::new(),
            });
        }
        let e = table.get_mut(&key).expect("inserted above");
        e.calls += 1;
        let place = match e.state {
            State::Pinned(mode) => {
                drop(table);
                return inner.route_mode(py, mode, job);
            }
            State::Sampling { .. } => {
                e.pending.push(job);
                return Ok(());
            }
            State::Placed(place) if !e.due() => place,
            State::Placed(_) | State::Unknown => {
                let before = match e.state {
                    State::Placed(p) => Some(p),
                    _ => None,
                };
                if inner.sampling.swap(true, Ordering::AcqRel) {
                    // Another function is being sampled: this call goes where this one is (or
                    // isolated, the default), unsampled.
                    before.unwrap_or(Place::Isolated)
                } else {
                    e.state = State::Sampling { before };
                    drop(table);
                    if let Work::Call(c) = &mut job.work {
                        let sampler = Sampler {
                            func: c.func.clone_ref(py),
                            key,
                            inner: inner.clone(),
                            ran: AtomicBool::new(false),
                        };
                        c.func = Py::new(py, sampler)?.into_any();
                    }
                    let r = inner.threads.submit(py, job);
                    if r.is_err() {
                        inner.sampling.store(false, Ordering::Release);
                        inner.decide(py, key, Reading::default(), true);
                    }
                    return r;
                }
            }
        };
        drop(table);
        inner.route(py, place, job)
    }

    fn shutdown(&self, py: Python<'_>, wait: bool, cancel_futures: bool) -> PyResult<()> {
        // Calls waiting for a verdict were accepted: they run isolated (or are cancelled).
        let pending: Vec<Job> = {
            let mut table = self.inner.table.lock();
            table
                .values_mut()
                .flat_map(|e| std::mem::take(&mut e.pending))
                .collect()
        };
        for job in pending {
            if cancel_futures {
                job.cancel(py);
            } else {
                self.inner.route(py, Place::Isolated, job)?;
            }
        }
        let threads = self.inner.threads.shutdown(py, wait, cancel_futures);
        self.inner.isolated.shutdown(py, wait, cancel_futures)?;
        threads
    }

    fn is_shutdown(&self) -> bool {
        self.inner.isolated.is_shutdown()
    }

    fn counts(&self) -> (usize, usize) {
        let (a, b) = self.inner.threads.counts();
        let (c, d) = self.inner.isolated.counts();
        (a + c, b + d)
    }

    fn workers(&self) -> super::Workers {
        self.inner.threads.workers() + self.inner.isolated.workers()
    }
}

/// A sampled call: runs the function while the probe watches the GIL, then places it.
#[pyclass(module = "rustpool._rustpool", frozen)]
pub struct Sampler {
    func: Py<PyAny>,
    key: usize,
    inner: Arc<Inner>,
    ran: AtomicBool,
}

impl Drop for Sampler {
    fn drop(&mut self) {
        // A sampled call that never ran (cancelled, or its pool shut down first): the sample
        // ends unread, and the calls that waited for it go on.
        if !self.ran.load(Ordering::Acquire) {
            Python::attach(|py| {
                self.inner.decide(py, self.key, Reading::default(), true);
            });
            self.inner.sampling.store(false, Ordering::Release);
        }
    }
}

#[pymethods]
impl Sampler {
    #[pyo3(signature = (*args, **kwargs))]
    fn __call__(
        &self,
        py: Python<'_>,
        args: &Bound<'_, PyTuple>,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Py<PyAny>> {
        self.ran.store(true, Ordering::Release);
        let Some(clock) = CpuClock::of_this_thread() else {
            // Nothing to read: the sample reads as too short.
            let result = self.func.bind(py).call(args, kwargs).map(Bound::unbind);
            self.inner.decide(py, self.key, Reading::default(), true);
            self.inner.sampling.store(false, Ordering::Release);
            return result;
        };
        let probe = Arc::new(Mutex::new(Probe {
            active: true,
            started: Instant::now(),
            reading: Reading::default(),
            asking_since: None,
        }));
        start_probe(probe.clone(), clock, self.inner.clone(), self.key);
        let result = self.func.bind(py).call(args, kwargs).map(Bound::unbind);
        let reading = {
            let mut p = probe.lock();
            p.active = false;
            p.reading_now()
        };
        self.inner.decide(py, self.key, reading, true);
        self.inner.sampling.store(false, Ordering::Release);
        result
    }
}

/// The probe thread of one sample. It alternates a window without the GIL (`GAP`) and one with
/// the GIL held (`HOLD`), reading the sampled thread's CPU clock at each edge: code that holds
/// the GIL stops while the probe has it, code that releases it runs on. Once `EARLY_WINDOWS`
/// windows say so clearly, it places the function and ends (the call then runs undisturbed).
fn start_probe(probe: Arc<Mutex<Probe>>, clock: CpuClock, inner: Arc<Inner>, key: usize) {
    let watched = probe.clone();
    let spawned = std::thread::Builder::new()
        .name("rustpool-auto-probe".into())
        .spawn(move || {
            let Some(_live) = lifecycle::enter() else {
                return;
            };
            loop {
                // With the GIL first: a short call that holds it keeps the probe waiting to its
                // end (counted as `waiting`), which is a reading too.
                probe.lock().asking_since = Some(Instant::now());
                let stop = Python::attach(|_py| {
                    {
                        let mut p = probe.lock();
                        if let Some(t) = p.asking_since.take() {
                            p.reading.waiting += t.elapsed();
                        }
                    }
                    let (t2, c2) = (Instant::now(), clock.read());
                    std::thread::sleep(HOLD);
                    let (t3, c3) = (Instant::now(), clock.read());
                    let mut p = probe.lock();
                    if !p.active {
                        return true;
                    }
                    p.reading.held += t3 - t2;
                    p.reading.cpu_held += c3.saturating_sub(c2);
                    false
                });
                if stop || lifecycle::exiting() {
                    return;
                }
                // Then without it.
                let (t0, c0) = (Instant::now(), clock.read());
                std::thread::sleep(GAP);
                let (t1, c1) = (Instant::now(), clock.read());
                let reading = {
                    let mut p = probe.lock();
                    if !p.active {
                        return;
                    }
                    p.reading.free += t1 - t0;
                    p.reading.cpu_free += c1.saturating_sub(c0);
                    p.reading.windows += 1;
                    p.reading_now()
                };
                // Once placed, stop: the sampled call runs on undisturbed.
                if reading.windows >= EARLY_WINDOWS
                    && Python::attach(|py| inner.decide(py, key, reading, false))
                {
                    return;
                }
            }
        });
    if spawned.is_err() {
        // No probe: the sample reads as too short, and the next call is sampled again.
        watched.lock().active = false;
    }
}
