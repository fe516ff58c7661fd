//! isolation="process": each worker thread of the pool owns one worker process (a fresh
//! interpreter, spawn semantics: never a fork of this process, which has threads).
//!
//! The child runs `rustpool._crossing`'s worker source with `python -c`; calls go to it as
//! length-prefixed frames on its fd 3 and replies come back on its fd 4 (its stdin, stdout and
//! stderr stay free for the user's code). The child dies with its parent (`PR_SET_PDEATHSIG`,
//! and EOF on fd 3 ends it too). A child that dies while it runs a call fails that call only, with
//! `rustpool.WorkerCrashed` naming the exit code or signal; the next call starts a new child.

use super::workers::{
    crossing, settle_and_claim, take_calls, Done, Shared, Task, WorkerPool, PANICKED,
};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, Stdio};
use std::sync::Arc;

/// Reply status for a call whose worker process died (as in `rustpool._crossing`).
const CRASHED: i64 = 4;

struct Boot {
    python: String,
    source: String,
    first_frame: Vec<u8>,
}

struct Child {
    process: std::process::Child,
    calls: io::PipeWriter,
    replies: io::PipeReader,
}

impl Child {
    fn spawn(boot: &Boot) -> io::Result<Child> {
        let (call_r, call_w) = io::pipe()?;
        let (reply_r, reply_w) = io::pipe()?;
        let (cr, rw) = (call_r.as_raw_fd(), reply_w.as_raw_fd());
        let parent = std::process::id() as libc::pid_t;
        let mut cmd = Command::new(&boot.python);
        cmd.arg("-c").arg(&boot.source).stdin(Stdio::null());
        unsafe {
            cmd.pre_exec(move || {
                // Only async-signal-safe calls here. Move both ends above fd 4 first: one of
                // them may already be fd 3 or 4 (and `dup2(fd, fd)` would keep its close-on-exec
                // flag).
                let (a, b) = (
                    libc::fcntl(cr, libc::F_DUPFD, 10),
                    libc::fcntl(rw, libc::F_DUPFD, 10),
                );
                if a < 0 || b < 0 || libc::dup2(a, 3) < 0 || libc::dup2(b, 4) < 0 {
                    return Err(io::Error::last_os_error());
                }
                libc::close(a);
                libc::close(b);
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
                if libc::getppid() != parent {
                    // The parent died before the line above took effect.
                    libc::_exit(1);
                }
                Ok(())
            });
        }
        let process = cmd.spawn()?;
        drop((call_r, reply_w));
        let mut child = Child {
            process,
            calls: call_w,
            replies: reply_r,
        };
        child.send(&boot.first_frame)?;
        Ok(child)
    }

    fn send(&mut self, payload: &[u8]) -> io::Result<()> {
        let len = u32::try_from(payload.len())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a call over 4 GiB"))?;
        self.calls.write_all(&len.to_le_bytes())?;
        self.calls.write_all(payload)
    }

    fn receive(&mut self) -> io::Result<(i64, Vec<u8>)> {
        let mut head = [0u8; 5];
        self.replies.read_exact(&mut head)?;
        let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
        let mut data = vec![0u8; len];
        self.replies.read_exact(&mut data)?;
        Ok((i64::from(head[4]), data))
    }

    /// Why the child is gone (it is killed first if it still runs).
    fn death(mut self) -> String {
        let _ = self.process.kill();
        match self.process.wait() {
            Ok(status) => match (status.code(), status.signal()) {
                (Some(code), _) => format!("the worker process exited with code {code}"),
                (None, Some(sig)) => format!(
                    "the worker process was killed by signal {sig} ({})",
                    signal_name(sig)
                ),
                _ => format!("the worker process ended ({status})"),
            },
            Err(e) => format!("the worker process was lost ({e})"),
        }
    }

    /// The pool is done with this child: EOF ends it; wait for it.
    fn close(self) {
        let Child {
            mut process,
            calls,
            replies,
        } = self;
        drop((calls, replies));
        let _ = process.wait();
    }
}

fn signal_name(sig: i32) -> &'static str {
    match sig {
        libc::SIGKILL => "SIGKILL",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGABRT => "SIGABRT",
        libc::SIGTERM => "SIGTERM",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGILL => "SIGILL",
        _ => "a signal",
    }
}

/// Start a pool of `workers` worker processes (each started on its thread, replaced on death).
pub fn start(
    py: Python<'_>,
    workers: usize,
    name_prefix: &str,
    initializer: bool,
) -> PyResult<WorkerPool> {
    if initializer {
        return Err(PyValueError::new_err(
            "initializer is not supported with isolation=\"process\" yet; use isolation=\"thread\"",
        ));
    }
    let (source, first_frame): (String, Vec<u8>) =
        crossing(py)?.getattr("process_boot")?.call0()?.extract()?;
    let python: String = py.import("sys")?.getattr("executable")?.extract()?;
    let boot = Arc::new(Boot {
        python,
        source,
        first_frame,
    });
    WorkerPool::start(
        workers,
        name_prefix,
        None,
        move |_, rx, shared| serve(&boot, &rx, &shared, workers),
        |_| {},
    )
}

/// Calls written to a child before its replies are read, at most this many bytes (more could
/// fill both pipes at once and deadlock).
const PIPELINE_BYTES: usize = 32 * 1024;

/// Take calls until the pool is shut down and the queue is empty. As the subinterpreter workers
/// do, one attach to the main interpreter settles what finished and claims the next calls (a
/// small share of a long queue); the claimed calls go to the child back to back.
fn serve(boot: &Boot, rx: &crossbeam_channel::Receiver<Task>, shared: &Shared, workers: usize) {
    let mut child = Child::spawn(boot).ok();
    let mut done: Done = Vec::new();
    while let Some(next) = take_calls(rx, workers, done.is_empty()) {
        let mut claimed: VecDeque<Task> =
            Python::attach(|py| settle_and_claim(py, shared, &mut done, next));
        while !claimed.is_empty() {
            run_some(boot, &mut child, &mut claimed, &mut done);
        }
    }
    if let Some(c) = child {
        c.close();
    }
}

/// Send the first calls of `claimed` (within `PIPELINE_BYTES`) to the child and collect their
/// replies. If the child dies, the call it was running fails with `CRASHED`; the calls sent after
/// it never started and go back to the front of `claimed`, for a new child.
fn run_some(boot: &Boot, child: &mut Option<Child>, claimed: &mut VecDeque<Task>, done: &mut Done) {
    let Some(task) = claimed.front() else { return };
    if task.payload.is_none() {
        let task = claimed.pop_front().expect("front exists");
        let msg = b"rustpool test panic inside a process worker".to_vec();
        done.push((task, PANICKED, msg));
        return;
    }
    let mut c = match child.take() {
        Some(c) => c,
        None => match Child::spawn(boot) {
            Ok(c) => c,
            Err(e) => {
                let task = claimed.pop_front().expect("front exists");
                let msg = format!("could not start a worker process ({e})").into_bytes();
                done.push((task, CRASHED, msg));
                return;
            }
        },
    };
    let mut sent = 0;
    let mut bytes = 0;
    for task in claimed.iter() {
        let Some(payload) = &task.payload else { break };
        if sent > 0 && bytes + payload.len() > PIPELINE_BYTES {
            break;
        }
        if c.send(payload).is_err() {
            break;
        }
        sent += 1;
        bytes += payload.len();
    }
    for i in 0..sent.max(1) {
        let reply = if i < sent {
            c.receive()
        } else {
            Err(io::ErrorKind::BrokenPipe.into())
        };
        let task = claimed.pop_front().expect("sent calls are queued");
        match reply {
            Ok((status, data)) => done.push((task, status, data)),
            Err(_) => {
                // The child died running this call; the ones sent after it never started.
                done.push((task, CRASHED, c.death().into_bytes()));
                return;
            }
        }
    }
    *child = Some(c);
}
