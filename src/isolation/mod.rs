//! Isolation modes of the CPU pool. Each mode is one `Isolation`: it takes jobs and runs them
//! where its mode says: threads of this interpreter, subinterpreters (3.13+), or processes.

pub mod auto;
pub mod fallback;
#[cfg(Py_3_13)]
pub mod interpreter;
pub mod lazy;
pub mod process;
pub mod shm;
pub mod thread;
pub mod workers;

use crate::job::Job;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

pyo3::import_exception!(concurrent.futures.process, BrokenProcessPool);

/// The error of every call to a pool that is broken (an initializer failed), as the stdlib's.
pub fn broken_error(msg: String) -> PyErr {
    BrokenProcessPool::new_err(msg)
}

pub trait Isolation: Send + Sync {
    /// Queue a job; errors (shut down, broken) are raised to the submitter.
    fn submit(&self, py: Python<'_>, job: Job) -> PyResult<()>;
    /// `Executor.shutdown` semantics; a wait interrupted by Ctrl-C raises KeyboardInterrupt
    /// after cancelling what has not begun.
    fn shutdown(&self, py: Python<'_>, wait: bool, cancel_futures: bool) -> PyResult<()>;
    fn is_shutdown(&self) -> bool;
    /// (workers busy or about to take queued work, jobs queued)
    fn counts(&self) -> (usize, usize);
    /// Workers alive, and worker processes crashed and replaced so far (for `stats()`).
    fn workers(&self) -> Workers;
}

/// What `Isolation::workers` says.
#[derive(Clone, Copy, Default, Debug)]
pub struct Workers {
    pub alive: usize,
    pub crashed: u64,
    pub replaced: u64,
}

impl std::ops::Add for Workers {
    type Output = Workers;
    fn add(self, o: Workers) -> Workers {
        Workers {
            alive: self.alive + o.alive,
            crashed: self.crashed + o.crashed,
            replaced: self.replaced + o.replaced,
        }
    }
}

pub const MODES: &[&str] = &["thread", "interpreter", "process", "auto"];

/// Where Python code runs, once "auto" is resolved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Thread,
    Interpreter,
    Process,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Thread => "thread",
            Mode::Interpreter => "interpreter",
            Mode::Process => "process",
        }
    }

    /// A mode this build has, by name ("auto" is not one: it chooses).
    pub fn parse(name: &str) -> PyResult<Mode> {
        match resolve(name)? {
            _ if name == "auto" => Err(PyValueError::new_err(
                "a call or a pin names where to run: \"thread\", \"interpreter\" or \"process\", not \"auto\"",
            )),
            "thread" => Ok(Mode::Thread),
            "interpreter" => Ok(Mode::Interpreter),
            _ => Ok(Mode::Process),
        }
    }
}

/// The mode that `name` stands for on this interpreter: "auto" is subinterpreters on 3.13+,
/// worker processes before (with fallbacks for calls that cannot run there, see `cpu.rs`).
pub fn resolve(name: &str) -> PyResult<&'static str> {
    match name {
        "thread" => Ok("thread"),
        // Subinterpreters with their own GIL where they are safe (3.13+), processes before that.
        "auto" if cfg!(Py_3_13) => Ok("interpreter"),
        "auto" => Ok("process"),
        "interpreter" if cfg!(Py_3_13) => Ok("interpreter"),
        "interpreter" => Err(PyValueError::new_err(
            "isolation=\"interpreter\" needs CPython 3.13+ (3.12's own-GIL subinterpreters crash the process at exit); use \"thread\" or \"auto\"",
        )),
        "process" => Ok("process"),
        other => Err(PyValueError::new_err(format!(
            "isolation must be one of {MODES:?}, not {other:?}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::resolve;

    #[test]
    fn thread_resolves_to_itself_and_auto_by_version() {
        assert_eq!(resolve("thread").unwrap(), "thread");
        let auto = resolve("auto").unwrap();
        assert_eq!(
            auto,
            if cfg!(Py_3_13) {
                "interpreter"
            } else {
                "process"
            }
        );
    }

    #[test]
    fn unknown_modes_are_refused() {
        pyo3::Python::initialize();
        assert!(resolve("fork")
            .unwrap_err()
            .to_string()
            .contains("isolation must be one of"));
        assert!(resolve("interpreter").is_ok() == cfg!(Py_3_13));
    }
}
