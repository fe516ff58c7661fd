//! Isolation modes of the CPU pool. Each mode is one `Isolation`: it takes jobs and runs them
//! where its mode says (threads of this interpreter now; subinterpreters and processes later).

pub mod thread;

use crate::job::Job;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

pub trait Isolation: Send + Sync {
    /// Queue a job; errors (shut down, broken) are raised to the submitter.
    fn submit(&self, py: Python<'_>, job: Job) -> PyResult<()>;
    /// `Executor.shutdown` semantics.
    fn shutdown(&self, py: Python<'_>, wait: bool, cancel_futures: bool);
    fn is_shutdown(&self) -> bool;
    /// (workers busy or about to take queued work, jobs queued)
    fn counts(&self) -> (usize, usize);
}

pub const MODES: &[&str] = &["thread", "interpreter", "process", "auto"];

/// The mode that `name` stands for on this interpreter.
pub fn resolve(name: &str) -> PyResult<&'static str> {
    match name {
        "thread" | "auto" => Ok("thread"),
        "interpreter" | "process" => Err(PyValueError::new_err(format!(
            "isolation={name:?} is not available in this rustpool build yet; use \"thread\" (or \"auto\")"
        ))),
        other => Err(PyValueError::new_err(format!(
            "isolation must be one of {MODES:?}, not {other:?}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::resolve;

    #[test]
    fn auto_and_thread_resolve_to_thread() {
        assert_eq!(resolve("auto").unwrap(), "thread");
        assert_eq!(resolve("thread").unwrap(), "thread");
    }

    #[test]
    fn unknown_modes_are_refused() {
        pyo3::Python::initialize();
        assert!(resolve("fork")
            .unwrap_err()
            .to_string()
            .contains("isolation must be one of"));
        assert!(resolve("process").is_err());
    }
}
