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

use crate::job::Job;
use parking_lot::{Condvar, Mutex};
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use std::cell::Cell;
use std::collections::VecDeque;
use std::sync::{Arc, OnceLock};

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
    shutdown: bool,
}

pub struct Scheduler<S: Spawn> {
    state: Mutex<State>,
    all_done: Condvar,
    spawner: S,
    cap: usize,
    broken: Arc<OnceLock<String>>,
    broken_error: fn(String) -> PyErr,
}

thread_local! {
    /// The scheduler whose runner this thread is running (0 when none).
    static RUNNING_FOR: Cell<usize> = const { Cell::new(0) };
}

impl<S: Spawn> Scheduler<S> {
    pub fn new(
        spawner: S,
        cap: usize,
        broken: Arc<OnceLock<String>>,
        broken_error: fn(String) -> PyErr,
    ) -> Arc<Self> {
        Arc::new(Scheduler {
            state: Mutex::new(State {
                queue: VecDeque::new(),
                runners: 0,
                busy: 0,
                shutdown: false,
            }),
            all_done: Condvar::new(),
            spawner,
            cap,
            broken,
            broken_error,
        })
    }

    pub fn submit(self: &Arc<Self>, job: Job) -> PyResult<()> {
        if let Some(msg) = self.broken.get() {
            return Err((self.broken_error)(msg.clone()));
        }
        if crate::attach::exiting() {
            return Err(PyRuntimeError::new_err(
                "cannot schedule new futures after interpreter shutdown",
            ));
        }
        let spawn = {
            let mut st = self.state.lock();
            if st.shutdown {
                drop(st);
                return Err(PyRuntimeError::new_err(
                    "cannot schedule new futures after shutdown",
                ));
            }
            st.queue.push_back(job);
            if st.runners == st.busy && st.runners < self.cap {
                st.runners += 1;
                true
            } else {
                false
            }
        };
        if spawn {
            self.spawn_runner();
        }
        Ok(())
    }

    fn spawn_runner(self: &Arc<Self>) {
        let me = self.clone();
        self.spawner.spawn(Box::new(move || me.run_runner()));
    }

    fn run_runner(self: &Arc<Self>) {
        let id = Arc::as_ptr(self) as *const () as usize;
        let outer = RUNNING_FOR.replace(id);
        Python::attach(|py| {
            let mut st = self.state.lock();
            loop {
                let Some(job) = st.queue.pop_front() else {
                    st.runners -= 1;
                    if st.runners == 0 {
                        self.all_done.notify_all();
                    }
                    break;
                };
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
                    None => job.run(py),
                    Some(msg) => job.fail(py, (self.broken_error)(msg.clone())),
                }
                st = self.state.lock();
                st.busy -= 1;
            }
        });
        RUNNING_FOR.set(outer);
    }

    /// `Executor.shutdown`: refuse new work, optionally cancel queued work, optionally wait.
    pub fn shutdown(&self, py: Python<'_>, wait: bool, cancel_futures: bool) {
        let cancelled: Vec<Job> = {
            let mut st = self.state.lock();
            st.shutdown = true;
            if cancel_futures {
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
            py.detach(|| {
                let mut st = self.state.lock();
                while st.runners > own {
                    self.all_done.wait(&mut st);
                }
            });
        }
    }

    pub fn is_shutdown(&self) -> bool {
        self.state.lock().shutdown
    }

    /// (runners alive, jobs queued)
    pub fn counts(&self) -> (usize, usize) {
        let st = self.state.lock();
        (st.runners, st.queue.len())
    }
}
