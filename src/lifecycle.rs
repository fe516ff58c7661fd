//! One registry of everything rustpool runs beside the interpreter, so that the process's big
//! moments (exit, Ctrl-C, `os.fork()`) reach every pool, dropped and replaced ones included.
//!
//! - **Live threads.** Every pool thread that may touch Python holds a `Live` guard while it may:
//!   a runner while it runs, an isolated worker for its whole life, a blocking-pool thread while
//!   it makes or destroys its thread state. The guard is a drop guard (a panic still counts it
//!   out). At exit the package's hook waits, interruptibly, until none is left, then marks the
//!   process as exiting (`EXITING`); a thread that would start touching Python after that backs
//!   off instead (a thread that takes the GIL while the interpreter finalizes is ended by CPython
//!   with `pthread_exit`, whose forced unwind through Rust frames aborts the process).
//! - **Pools.** Every pool registers a `Pool` (weakly): the exit hook closes them all (they finish
//!   what they were given, the `concurrent.futures` rule), a Ctrl-C at exit aborts them (queued
//!   calls cancelled, worker processes killed), and a fork parks them first.
//! - **Fork.** `os.register_at_fork` hooks (set by the package) call `before_fork`,
//!   `after_fork_parent` and `after_fork_child`. Before a fork every pool parks what cannot
//!   survive it (subinterpreters are ended: CPython's child crashes on one that exists). In the
//!   child, where none of the parent's pool threads exist, the counts start again from zero and
//!   the fork generation moves on: a pool made before the fork refuses calls with a clear
//!   error, and its threads are never waited for or woken.
//!
//! The locks here are std's (futex words with no global state): after a fork a lock is only in
//! the state the forking thread left it in, and the registry's lock is held across the fork.

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::time::Duration;

/// What the registry asks of a pool. Every method may be called from any thread.
pub trait Pool: Send + Sync {
    /// Take no new calls; finish what was given, then let the threads go (exit).
    fn close(&self, py: Python<'_>);
    /// Take no new calls; cancel the queued ones and kill worker processes (Ctrl-C).
    fn abort(&self, py: Python<'_>);
    /// Before `os.fork()`, without the GIL: put away what a forked child cannot survive, and
    /// return once it is put away. Undone, lazily, after the fork.
    fn park_for_fork(&self) {}
    /// In the parent, after the fork.
    fn resume_after_fork(&self) {}
    /// In the child, after the fork, where none of the pool's threads exist: let go of what the
    /// parent's pool holds that would otherwise stay open here (pipes to its worker processes).
    fn forked_child(&self) {}
}

static EXITING: AtomicBool = AtomicBool::new(false);
static LIVE: AtomicUsize = AtomicUsize::new(0);
static GENERATION: AtomicU64 = AtomicU64::new(0);
static WAKE: (Mutex<()>, Condvar) = (Mutex::new(()), Condvar::new());
/// Bumped by every `notify`, so that a waiter that looked before a notification never sleeps
/// through it.
static NOTIFIED: AtomicU64 = AtomicU64::new(0);
type Pools = Vec<Weak<dyn Pool>>;
static POOLS: Mutex<Pools> = Mutex::new(Vec::new());

/// How often an interruptible wait looks at Python's signal flags.
const SIGNAL_CHECK: Duration = Duration::from_millis(20);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// True once the exit hook let every pool thread go: nothing may touch Python any more.
pub fn exiting() -> bool {
    EXITING.load(Ordering::SeqCst)
}

/// The fork generation this process is in (0 until it is a forked child).
pub fn generation() -> u64 {
    GENERATION.load(Ordering::SeqCst)
}

/// Whether a pool made in `generation` was inherited through a fork (its threads are gone).
pub fn forked_since(generation: u64) -> bool {
    self::generation() != generation
}

/// The error of every call to a pool inherited through a fork.
pub fn forked_error(what: &str) -> PyErr {
    PyRuntimeError::new_err(format!(
        "this {what} was made before os.fork() in the parent process; its threads and workers do \
         not exist in this child. Make a new one in the child (rustpool.to_thread and \
         rustpool.run_cpu do so by themselves)"
    ))
}

/// A pool thread counted as live (see the module doc). Dropping it counts the thread out.
pub struct Live {
    generation: u64,
}

impl Drop for Live {
    fn drop(&mut self) {
        // A guard from before a fork (the forking thread was a pool thread) counts nothing here.
        if self.generation == generation() {
            LIVE.fetch_sub(1, Ordering::SeqCst);
            notify();
        }
    }
}

/// Count this thread as live while the guard is held; None once the process is exiting (then
/// the thread must not touch Python).
pub fn enter() -> Option<Live> {
    let generation = generation();
    LIVE.fetch_add(1, Ordering::SeqCst);
    let live = Live { generation };
    if exiting() {
        drop(live);
        return None;
    }
    Some(live)
}

/// Register a pool for exit, Ctrl-C and fork.
pub fn register(pool: Weak<dyn Pool>) {
    let mut pools = lock(&POOLS);
    pools.retain(|p| p.strong_count() > 0);
    pools.push(pool);
}

fn pools() -> Vec<Arc<dyn Pool>> {
    lock(&POOLS).iter().filter_map(Weak::upgrade).collect()
}

/// Wait, without the GIL, until `done()`; every `SIGNAL_CHECK` look at Python's signals (a
/// Ctrl-C raises KeyboardInterrupt here, in the main thread).
pub fn wait_interruptibly(py: Python<'_>, done: impl Fn() -> bool + Sync) -> PyResult<()> {
    while !py.detach(|| wait_a_little(&done)) {
        py.check_signals()?;
    }
    Ok(())
}

/// Wait, without Python, until `done()` (for threads that do not hold the GIL: fork parking).
pub fn wait_until(done: impl Fn() -> bool) {
    while !wait_a_little(&done) {}
}

/// Wait until `done()` or a `notify`, at most `SIGNAL_CHECK`; whether `done()` now. `done` runs
/// without the registry's lock held (it may take a pool's own lock).
fn wait_a_little(done: &impl Fn() -> bool) -> bool {
    let seen = NOTIFIED.load(Ordering::SeqCst);
    if done() {
        return true;
    }
    let g = lock(&WAKE.0);
    if NOTIFIED.load(Ordering::SeqCst) == seen {
        drop(WAKE.1.wait_timeout(g, SIGNAL_CHECK));
    }
    done()
}

/// Wake the waiters of `wait_interruptibly` (something they wait for may have happened).
pub fn notify() {
    let _g = lock(&WAKE.0);
    NOTIFIED.fetch_add(1, Ordering::SeqCst);
    WAKE.1.notify_all();
}

/// The exit hook's wait: every pool finishes what it was given, then no pool thread touches
/// Python again. After a Ctrl-C (`interrupts` > 0), queued calls are cancelled and worker
/// processes killed first; a first Ctrl-C during the wait does the same and keeps waiting for
/// threads that run Python (they cannot be stopped, and the process must not finalize under
/// them); a second one raises KeyboardInterrupt (the caller ends the process).
pub fn exit(py: Python<'_>, mut interrupts: u32) -> PyResult<()> {
    // `interrupts`: the Ctrl-Cs so far (one ended the program, a second one its exit), then
    // those during the wait.
    let abort_all = |py: Python<'_>| {
        for p in pools() {
            p.abort(py);
        }
    };
    if interrupts > 0 {
        abort_all(py);
    }
    for p in pools() {
        p.close(py);
    }
    let idle = || LIVE.load(Ordering::SeqCst) == 0;
    if interrupts >= 2 {
        // Give the aborted pools a moment to let their threads go, then no more waiting.
        let deadline = std::time::Instant::now() + SIGNAL_CHECK;
        py.detach(|| {
            while !idle() && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(1));
            }
        });
        if !idle() {
            return Err(pyo3::exceptions::PyKeyboardInterrupt::new_err(()));
        }
    }
    loop {
        match wait_interruptibly(py, idle) {
            Ok(()) => break,
            Err(e) if e.is_instance_of::<pyo3::exceptions::PyKeyboardInterrupt>(py) => {
                interrupts += 1;
                if interrupts >= 2 {
                    return Err(e);
                }
                abort_all(py);
            }
            Err(e) => return Err(e),
        }
    }
    EXITING.store(true, Ordering::SeqCst);
    // A thread that entered just before the flag was set runs on: wait for it to end too.
    py.detach(|| wait_until(idle));
    if interrupts > 0 {
        keep_sigint_exit();
    }
    Ok(())
}

/// A program ended by an uncaught KeyboardInterrupt exits by SIGINT (status 130 in a shell),
/// which CPython decides from a process-wide flag. Ending a subinterpreter clears that flag;
/// evaluating `raise KeyboardInterrupt` through `PyRun_StringFlags` sets it again (the error is
/// dropped here: the program's own traceback has been printed already).
fn keep_sigint_exit() {
    unsafe {
        let globals = pyo3::ffi::PyDict_New();
        if globals.is_null() {
            pyo3::ffi::PyErr_Clear();
            return;
        }
        let r = pyo3::ffi::PyRun_StringFlags(
            c"raise KeyboardInterrupt".as_ptr(),
            pyo3::ffi::Py_file_input,
            globals,
            globals,
            std::ptr::null_mut(),
        );
        if r.is_null() {
            pyo3::ffi::PyErr_Clear();
        } else {
            pyo3::ffi::Py_DecRef(r);
        }
        pyo3::ffi::Py_DecRef(globals);
    }
}

/// Pool threads still counted as live (running Python), for the exit hook's last-resort message.
pub fn live_threads() -> usize {
    LIVE.load(Ordering::SeqCst)
}

thread_local! {
    /// The registry's lock, held by the forking thread from `before_fork` to after the fork, so
    /// that no other thread is half-way through a registration when the process is copied.
    static FORK_HOLD: RefCell<Option<MutexGuard<'static, Pools>>> = const { RefCell::new(None) };
}

/// `os.register_at_fork(before=...)`: park every pool (subinterpreters ended), then hold the
/// registry's lock across the fork.
pub fn before_fork(py: Python<'_>) {
    let pools = pools();
    py.detach(|| {
        for p in &pools {
            p.park_for_fork();
        }
    });
    drop(pools);
    FORK_HOLD.set(Some(lock(&POOLS)));
}

/// `os.register_at_fork(after_in_parent=...)`.
pub fn after_fork_parent() {
    FORK_HOLD.set(None);
    for p in pools() {
        p.resume_after_fork();
    }
}

/// `os.register_at_fork(after_in_child=...)`: the child has none of the parent's pool threads.
pub fn after_fork_child() {
    GENERATION.fetch_add(1, Ordering::SeqCst);
    LIVE.store(0, Ordering::SeqCst);
    FORK_HOLD.with(|hold| {
        if let Some(mut pools) = hold.borrow_mut().take() {
            for pool in pools.iter().filter_map(Weak::upgrade) {
                pool.forked_child();
                // Still held by its Python object: this is never the last reference.
                drop(pool);
            }
            // Forget the parent's pools without dropping anything of theirs here.
            std::mem::forget(std::mem::take(&mut *pools));
        }
    });
}
