//! rustpool's native core. This file only assembles the module; each concern has its own file:
//! `bridge` (completing asyncio futures from pool threads), `job` (one unit of work), `runner`
//! (the scheduler shared by thread pools), `attach` (pool threads' Python thread states),
//! `blocking` (the elastic pool behind `to_thread`), `cpu` + `isolation/` (the CPU pool).

mod attach;
mod blocking;
mod bridge;
mod cpu;
mod handoff;
mod isolation;
mod job;
mod runner;

use pyo3::prelude::*;

/// Called by the package's exit hook once every pool has drained: from then on pool threads
/// never touch the interpreter again.
#[pyfunction]
fn _mark_exiting() {
    attach::mark_exiting();
}

/// Called by the exit hook: wait until every subinterpreter and process worker has ended (their
/// queued calls done; subinterpreters must end before the main interpreter finalizes).
#[pyfunction]
fn _join_workers(py: Python<'_>) {
    isolation::workers::wait_all_ended(py);
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
    m.add_function(wrap_pyfunction!(_mark_exiting, m)?)?;
    m.add_function(wrap_pyfunction!(resolve_isolation, m)?)?;
    m.add_function(wrap_pyfunction!(_join_workers, m)?)?;
    Ok(())
}
