//! rustpool's native core. This file only assembles the module; each concern has its own file:
//! `bridge` (completing asyncio futures from pool threads), `job` (one unit of work), `runner`
//! (the scheduler shared by thread pools), `attach` (pool threads' Python thread states),
//! `blocking` (the elastic pool behind `to_thread`), `cpu` + `isolation/` (the CPU pool),
//! `lifecycle` (exit, Ctrl-C and fork, for every pool), `sync` (fork-safe locks), `stats` (what `pool.stats()` reads),
//! `watchdog` (the loop watchdog's clock).

mod attach;
mod blocking;
mod bridge;
mod cpu;
mod handoff;
mod isolation;
mod job;
mod lifecycle;
mod runner;
mod stats;
mod sync;
mod watchdog;

use pyo3::prelude::*;

/// The package's exit hook: every pool finishes what it was given (after a Ctrl-C, `interrupts`
/// 1: queued calls are cancelled and worker processes killed first), then no pool thread touches
/// Python again. Interruptible: a first Ctrl-C aborts and goes on waiting for threads that run
/// Python, a second (or `interrupts` 2) raises KeyboardInterrupt while any still does.
#[pyfunction]
fn _exit(py: Python<'_>, interrupts: u32) -> PyResult<()> {
    lifecycle::exit(py, interrupts)
}

/// Pool threads that may still run Python (the exit hook's last word after a second Ctrl-C).
#[pyfunction]
fn _live_threads() -> usize {
    lifecycle::live_threads()
}

/// `os.register_at_fork(before=...)`.
#[pyfunction]
fn _before_fork(py: Python<'_>) {
    lifecycle::before_fork(py);
}

/// `os.register_at_fork(after_in_parent=...)`.
#[pyfunction]
fn _after_fork_parent() {
    lifecycle::after_fork_parent();
}

/// `os.register_at_fork(after_in_child=...)`.
#[pyfunction]
fn _after_fork_child() {
    lifecycle::after_fork_child();
}

/// The isolation mode `name` stands for in this build ("auto" resolved); ValueError when the
/// name is unknown or the mode is not available.
#[pyfunction]
fn resolve_isolation(name: &str) -> PyResult<&'static str> {
    isolation::resolve(name)
}

#[pymodule(gil_used = false)]
fn _rustpool(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add("DEFAULT_MAX_THREADS", 512usize)?;
    m.add("DEFAULT_CPU_WORKERS", cpu::default_workers())?;
    m.add_class::<blocking::BlockingPool>()?;
    m.add_class::<cpu::CpuPool>()?;
    m.add_class::<bridge::Drain>()?;
    m.add_class::<watchdog::LoopWatch>()?;
    m.add_function(wrap_pyfunction!(resolve_isolation, m)?)?;
    m.add_function(wrap_pyfunction!(_exit, m)?)?;
    m.add_function(wrap_pyfunction!(job::_set_shared_type, m)?)?;
    m.add_function(wrap_pyfunction!(isolation::shm::_copy_into, m)?)?;
    m.add_function(wrap_pyfunction!(_live_threads, m)?)?;
    m.add_function(wrap_pyfunction!(_before_fork, m)?)?;
    m.add_function(wrap_pyfunction!(_after_fork_parent, m)?)?;
    m.add_function(wrap_pyfunction!(_after_fork_child, m)?)?;
    Ok(())
}
