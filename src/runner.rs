//! The scheduler every thread-based pool shares: a queue of jobs drained by "runners".
//!
//! A runner is a task handed to the pool's threads (tokio's blocking pool, or rayon). It attaches
//! to Python once, then takes job after job while the queue has any, keeping the GIL between
//! jobs, and ends when the queue is empty. A burst of small calls is therefore run by one or two
//! runners per GIL hand-off instead of one thread wake-up and one GIL hand-off per call.
//!
//! Runners are added only when work would otherwise wait: on submit when no runner is free, and
//! by a runner that takes a job while more are queued and none is free (so 200 blocking calls
//! gathered at once fan out to 200 threads, one new runner at a time). `cap` bounds the runners.
//!
//! A runner counts as live (`lifecycle::enter`) from when it is handed to a thread until it ends:
//! the exit hook waits for it, and once the process is exiting no runner starts.

use crate::handoff::Handoff;
use crate::job::Job;
use crate::lifecycle::{self, Pool};
use crate::sync::Mutex;
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use std::cell::Cell;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant};

/// How long a runner whose queue ran dry waits for more work, spinning without the GIL, before it
/// gives its thread back. A thread parked in the kernel costs ~20 us to wake on a VM whose idle
/// vCPUs halt; a call that arrives within this window is picked up at once instead.
const SPIN: Duration = Duration::from_micros(100);

/// How long a submitter waits, without the GIL, for a spinning runner to take and finish the job
/// it just queued. Handing the GIL over while the runner is spinning saves the ~20 us wake-up of a
/// thread sleeping on the GIL, and a short call is done before the submitter returns (its result
/// is then delivered without a loop wake-up). Longer calls just go on in the background.
const HANDOFF: Duration = Duration::from_micros(20);

/// Hands a runner to the pool's threads.
pub trait Spawn: Send + Sync + 'static {
    fn spawn(&self, task: Box<dyn FnOnce() + Send + 'static>);
}

struct State {
    queue: VecDeque<Job>,
    /// Runners handed to the pool and not yet ended.
    runners: usize,
    /// Runners running a job right now.
    busy: usize,
    /// Runners spinning for work right now (free, awake, without the GIL).
    spinning: usize,
    shutdown: bool,
}

pub struct Scheduler<S: Spawn> {
    state: Mutex<State>,
    spawner: S,
    /// What the pool is called in errors ("ThreadExecutor", "CpuExecutor").
    what: &'static str,
    /// The fork generation the pool was made in (see `lifecycle`).
    generation: u64,
    cap: usize,
    broken: Arc<OnceLock<String>>,
    broken_error: fn(String) -> PyErr,
    /// `state.queue.len()`, readable without the lock by spinning runners.
    queued: AtomicUsize,
    /// Jobs finished so far, watched by a submitter during a hand-off.
    finished: AtomicUsize,
    handoff: Handoff,
}

thread_local! {
    /// The scheduler whose runner this thread is running (0 when none).
    static RUNNING_FOR: Cell<usize> = const { Cell::new(0) };
}

impl<S: Spawn> Scheduler<S> {
    pub fn new(
        spawner: S,
        what: &'static str,
        cap: usize,
        broken: Arc<OnceLock<String>>,
        broken_error: fn(String) -> PyErr,
    ) -> Arc<Self> {
        let sched = Arc::new(Scheduler {
            state: Mutex::new(State {
                queue: VecDeque::new(),
                runners: 0,
                busy: 0,
                spinning: 0,
                shutdown: false,
            }),
            spawner,
            what,
            generation: lifecycle::generation(),
            cap,
            broken,
            broken_error,
            queued: AtomicUsize::new(0),
            finished: AtomicUsize::new(0),
            handoff: Handoff::default(),
        });
        let weak: Weak<dyn Pool> = Arc::downgrade(&sched) as Weak<Self>;
        lifecycle::register(weak);
        sched
    }

    /// Whether this pool was inherited through a fork (its threads do not exist here).
    pub fn forked(&self) -> bool {
        lifecycle::forked_since(self.generation)
    }

    /// Queue a job; when a runner is spinning idle, hand it the GIL and give a short call the
    /// chance to finish before returning (see `HANDOFF`).
    pub fn submit(self: &Arc<Self>, py: Python<'_>, job: Job) -> PyResult<()> {
        // A job another pool already claimed cannot go back to its submitter: settle it here.
        let claimed = job.claimed;
        self.try_submit(py, job).map_err(|failed| {
            let (err, job) = *failed;
            if claimed {
                job.fail(py, err.clone_ref(py));
            }
            err
        })
    }

    fn try_submit(self: &Arc<Self>, py: Python<'_>, job: Job) -> Result<(), Box<(PyErr, Job)>> {
        if self.forked() {
            return Err(Box::new((lifecycle::forked_error(self.what), job)));
        }
        if let Some(msg) = self.broken.get() {
            return Err(Box::new(((self.broken_error)(msg.clone()), job)));
        }
        if lifecycle::exiting() {
            return Err(Box::new((
                PyRuntimeError::new_err("cannot schedule new futures after interpreter shutdown"),
                job,
            )));
        }
        let (spawn, handoff) = {
            let mut st = self.state.lock();
            if st.shutdown {
                drop(st);
                return Err(Box::new((
                    PyRuntimeError::new_err("cannot schedule new futures after shutdown"),
                    job,
                )));
            }
            st.queue.push_back(job);
            self.queued.store(st.queue.len(), Ordering::Release);
            let handoff = st.spinning > 0 && st.queue.len() == 1 && self.handoff.should_try();
            if st.runners == st.busy && st.runners < self.cap {
                st.runners += 1;
                (true, handoff)
            } else {
                (false, handoff)
            }
        };
        if spawn {
            self.spawn_runner();
        }
        if handoff {
            let before = self.finished.load(Ordering::Acquire);
            self.handoff.wait(py, HANDOFF, || {
                self.finished.load(Ordering::Acquire) != before
            });
        }
        Ok(())
    }

    /// Hand a runner to the pool's threads. It counts as live from now on (not from when a
    /// thread picks it up): the exit hook must not find the pool idle in between.
    fn spawn_runner(self: &Arc<Self>) {
        let Some(live) = lifecycle::enter() else {
            // The process is exiting: no Python any more (the queue is left as it is).
            self.state.lock().runners -= 1;
            lifecycle::notify();
            return;
        };
        let me = self.clone();
        self.spawner.spawn(Box::new(move || me.run_runner(live)));
    }

    fn run_runner(self: &Arc<Self>, _live: lifecycle::Live) {
        let id = Arc::as_ptr(self) as *const () as usize;
        let outer = RUNNING_FOR.replace(id);
        Python::attach(|py| {
            let mut st = self.state.lock();
            let mut spun = false;
            loop {
                let Some(job) = st.queue.pop_front() else {
                    // One spinner is all a hand-off needs; more would only burn the cores.
                    if !spun && st.spinning == 0 {
                        spun = true;
                        st.spinning += 1;
                        drop(st);
                        py.detach(|| {
                            self.spin_for_work();
                            // No longer a spinner once the spin ends, even while this runner then
                            // waits for the GIL: a submitter must not hand off to a thread that
                            // is asleep on the GIL (it takes a wake-up to come back).
                            self.state.lock().spinning -= 1;
                        });
                        st = self.state.lock();
                        continue;
                    }
                    st.runners -= 1;
                    if st.runners == 0 {
                        lifecycle::notify();
                    }
                    break;
                };
                spun = false;
                self.queued.store(st.queue.len(), Ordering::Release);
                st.busy += 1;
                let more = !st.queue.is_empty() && st.runners == st.busy && st.runners < self.cap;
                if more {
                    st.runners += 1;
                }
                drop(st);
                if more {
                    self.spawn_runner();
                }
                match self.broken.get() {
                    None => {
                        job.run(py);
                        self.finished.fetch_add(1, Ordering::Release);
                    }
                    Some(msg) => job.fail(py, (self.broken_error)(msg.clone())),
                }
                st = self.state.lock();
                st.busy -= 1;
            }
        });
        RUNNING_FOR.set(outer);
    }

    fn spin_for_work(&self) {
        let start = Instant::now();
        while self.queued.load(Ordering::Acquire) == 0 && start.elapsed() < SPIN {
            std::thread::yield_now(); // let a thread that shares this core run
        }
    }

    /// `Executor.shutdown`: refuse new work, optionally cancel queued work, optionally wait.
    /// The wait can be interrupted (Ctrl-C): then the queued calls are cancelled and
    /// KeyboardInterrupt is raised; calls already running finish in the background.
    pub fn shutdown(&self, py: Python<'_>, wait: bool, cancel_futures: bool) -> PyResult<()> {
        if self.forked() {
            // Nothing of it runs in this process (and its lock may have been held at the fork).
            return Ok(());
        }
        let cancelled: Vec<Job> = {
            let mut st = self.state.lock();
            st.shutdown = true;
            if cancel_futures {
                self.queued.store(0, Ordering::Release);
                st.queue.drain(..).collect()
            } else {
                Vec::new()
            }
        };
        for job in cancelled {
            job.cancel(py);
        }
        if wait {
            // A runner of this pool that shuts its own pool down waits for the others only.
            let me = self as *const Self as *const () as usize;
            let own = usize::from(RUNNING_FOR.get() == me);
            let waited = lifecycle::wait_interruptibly(py, || self.state.lock().runners <= own);
            if waited.is_err() {
                Pool::abort(self, py);
            }
            waited?;
        }
        Ok(())
    }

    pub fn handoff_stats(&self) -> (u64, u64) {
        self.handoff.stats()
    }

    pub fn is_shutdown(&self) -> bool {
        self.forked() || self.state.lock().shutdown
    }

    /// (runners alive, jobs queued)
    pub fn counts(&self) -> (usize, usize) {
        if self.forked() {
            return (0, 0);
        }
        let st = self.state.lock();
        (st.runners, st.queue.len())
    }
}

impl<S: Spawn> Pool for Scheduler<S> {
    fn close(&self, py: Python<'_>) {
        drop(self.shutdown(py, false, false));
    }

    fn abort(&self, py: Python<'_>) {
        drop(self.shutdown(py, false, true));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::concurrent_job;
    use pyo3::types::{PyDict, PyTuple};

    struct StdSpawner;
    impl Spawn for StdSpawner {
        fn spawn(&self, task: Box<dyn FnOnce() + Send + 'static>) {
            std::thread::spawn(task);
        }
    }

    fn scheduler(cap: usize) -> Arc<Scheduler<StdSpawner>> {
        Python::initialize();
        Scheduler::new(
            StdSpawner,
            "test pool",
            cap,
            Arc::new(OnceLock::new()),
            PyRuntimeError::new_err,
        )
    }

    fn future(py: Python<'_>) -> Bound<'_, PyAny> {
        py.import("concurrent.futures")
            .unwrap()
            .getattr("Future")
            .unwrap()
            .call0()
            .unwrap()
    }

    fn submit_call<'py>(
        py: Python<'py>,
        s: &Arc<Scheduler<StdSpawner>>,
        func: &Bound<'py, PyAny>,
        args: Bound<'py, PyTuple>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let fut = future(py);
        s.submit(
            py,
            concurrent_job(fut.clone(), func.clone(), args, None::<Bound<'py, PyDict>>),
        )?;
        Ok(fut)
    }

    fn result(py: Python<'_>, fut: &Bound<'_, PyAny>) -> PyResult<i64> {
        fut.call_method1("result", (10.0,))?.extract()
    }

    #[test]
    fn runs_every_job_and_stays_within_cap() {
        let s = scheduler(3);
        Python::attach(|py| {
            let abs = py.import("builtins").unwrap().getattr("abs").unwrap();
            let futs: Vec<_> = (0..200)
                .map(|i| submit_call(py, &s, &abs, PyTuple::new(py, [-i]).unwrap()).unwrap())
                .collect();
            assert!(s.counts().0 <= 3);
            for (i, f) in futs.iter().enumerate() {
                assert_eq!(result(py, f).unwrap(), i as i64);
            }
        });
        Python::attach(|py| s.shutdown(py, true, false)).unwrap();
        assert_eq!(s.counts(), (0, 0));
    }

    #[test]
    fn submit_after_shutdown_is_refused() {
        let s = scheduler(2);
        Python::attach(|py| {
            s.shutdown(py, true, false).unwrap();
            let abs = py.import("builtins").unwrap().getattr("abs").unwrap();
            let err = submit_call(py, &s, &abs, PyTuple::new(py, [1]).unwrap()).unwrap_err();
            assert!(err.to_string().contains("after shutdown"), "{err}");
        });
    }

    #[test]
    fn a_panicking_job_becomes_an_exception() {
        let s = scheduler(1);
        Python::attach(|py| {
            let fut = future(py);
            s.submit(py, crate::job::panic_probe(fut.clone())).unwrap();
            // Look at the exception without raising it (PyO3 would resume a raised panic).
            let exc = fut.call_method1("exception", (10.0,)).unwrap();
            let name: String = exc.get_type().name().unwrap().extract().unwrap();
            assert_eq!(name, "PanicException");
            assert!(exc.str().unwrap().to_string().contains("panic"));
            let abs = py.import("builtins").unwrap().getattr("abs").unwrap();
            let ok = submit_call(py, &s, &abs, PyTuple::new(py, [-5]).unwrap()).unwrap();
            assert_eq!(result(py, &ok).unwrap(), 5);
            s.shutdown(py, true, false).unwrap();
        });
    }
}
