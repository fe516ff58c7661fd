//! isolation="interpreter": each worker is a dedicated OS thread that owns a subinterpreter with
//! its own GIL (PEP 684), so pure-Python code runs in parallel. CPython 3.13+ only (3.12's own-GIL
//! subinterpreters abort the process at exit after common imports).
//!
//! Per worker thread: a main-interpreter thread state (made with `PyGILState_Ensure`, kept for
//! life), then `Py_NewInterpreterFromConfig` (creation serialized: it is racy, cpython#123134),
//! kept for life and attached only while a call runs. Nothing of PyO3 runs inside the
//! subinterpreter (PyO3 modules refuse to load there): the worker side is raw C API running
//! `rustpool/_worker.py` (loaded by path, so `rustpool`'s `__init__` never runs for it), and only
//! bytes cross: the call as pickle protocol 5 (made on the main side by `rustpool._crossing`), the
//! reply as (status, bytes). The worker attaches to the main interpreter once per call (or per
//! small batch of short calls), to settle the previous calls' futures and claim the next ones (a
//! call cancelled before it begins never runs), and ends its subinterpreter on its own thread
//! when the pool shuts down, and before every `os.fork()` (a forked child dies on a
//! subinterpreter that exists; the worker makes a new one for its next call). The package's exit
//! hook waits for every subinterpreter to end before the main interpreter finalizes.

use super::shm::{next_offset, Memory, Piece};
use super::workers::{
    crossing, may_begin, next_calls, settle_and_claim, settle_and_recheck, Done, Shared, Task,
    WorkerPool, PANICKED, RECHECK_AFTER, UNLOADABLE,
};
use crate::job::panic_message;
use crate::sync::Mutex;
use crossbeam_channel::Receiver;
use pyo3::buffer::PyBuffer;
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::ffi;
use pyo3::prelude::*;
use std::collections::VecDeque;
use std::ffi::{CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr;
use std::sync::Arc;
use std::time::Instant;

/// Reply status (as `rustpool._crossing.FAILED`): the worker's own code failed around a call,
/// which may have run (so it is never handed to a fallback).
const FAILED: i64 = 9;

/// Creating and ending interpreters is racy: one at a time, process-wide.
static CREATE: Mutex<()> = Mutex::new(());

/// What a worker needs to look like the caller: its sys.path and `__main__` (the working
/// directory is the process's, shared already).
struct Boot {
    /// `rustpool/_worker.py`: its text, and its path (for tracebacks).
    source: CString,
    path: CString,
    sys_path: Vec<String>,
    main_name: String,
    main_path: String,
}

/// Start a pool of subinterpreter workers. `fallback`: where calls that cannot load in a
/// subinterpreter go ("auto"); None raises.
pub fn start(
    py: Python<'_>,
    workers: usize,
    name_prefix: &str,
    fallback: Option<super::fallback::Fallback>,
) -> PyResult<WorkerPool> {
    let version = py.version_info();
    if (version.major, version.minor) < (3, 13) {
        return Err(PyValueError::new_err(
            "isolation=\"interpreter\" needs CPython 3.13+ (3.12's own-GIL subinterpreters crash the process at exit)",
        ));
    }
    let crossing = crossing(py)?;
    let (main_name, main_path): (String, String) =
        crossing.getattr("main_info")?.call0()?.extract()?;
    let path: String = crossing.getattr("worker_path")?.call0()?.extract()?;
    let source = std::fs::read_to_string(&path).map_err(|e| {
        PyRuntimeError::new_err(format!("cannot read rustpool's worker module {path}: {e}"))
    })?;
    let sys_path: Vec<String> = py
        .import("sys")?
        .getattr("path")?
        .try_iter()?
        .filter_map(|p| p.ok()?.extract::<String>().ok())
        .collect();
    let boot = Arc::new(Boot {
        source: CString::new(source).map_err(|e| PyValueError::new_err(e.to_string()))?,
        path: CString::new(path).map_err(|e| PyValueError::new_err(e.to_string()))?,
        sys_path,
        main_name,
        main_path,
    });
    WorkerPool::start(
        "interpreter",
        workers,
        name_prefix,
        fallback,
        move |_, rx, shared| unsafe { worker_main(&boot, &rx, &shared, workers) },
    )
}

/// A worker's subinterpreter, booted (`_worker`'s functions it calls, defined in it).
struct Interp {
    sub_ts: *mut ffi::PyThreadState,
    fns: WorkerFns,
}

/// `_worker.run`, `run_lent`, `take_back` and `teardown`, in the subinterpreter (strong refs).
struct WorkerFns {
    run: *mut ffi::PyObject,
    run_lent: *mut ffi::PyObject,
    take_back: *mut ffi::PyObject,
    teardown: *mut ffi::PyObject,
}

/// Views (in the subinterpreter) of a call's buffers that its function kept past the call: the
/// caller's buffers stay held until none is exported any more, or the subinterpreter ends.
struct Held {
    raws: Vec<*mut ffi::PyObject>,
    buffers: Vec<PyBuffer<u8>>,
}

/// What `call_run` got back.
struct Reply {
    status: i64,
    data: Vec<u8>,
    /// The result's out-of-band buffers, copied out of the subinterpreter.
    pieces: Vec<Piece>,
    /// The call's views still exported (strong refs).
    kept: Vec<*mut ffi::PyObject>,
}

impl Reply {
    fn failed(status: i64, why: String) -> Reply {
        Reply {
            status,
            data: why.into_bytes(),
            pieces: Vec::new(),
            kept: Vec::new(),
        }
    }
}

/// The body of one worker thread: a main-interpreter thread state for life, a subinterpreter
/// made at start and again after each fork (ended before it), ended when the pool shuts down.
unsafe fn worker_main(boot: &Boot, rx: &Receiver<Task>, shared: &Shared, workers: usize) {
    if ffi::Py_IsInitialized() == 0 {
        return;
    }
    // A main-interpreter thread state for this thread, for life.
    let gstate = ffi::PyGILState_Ensure();
    let main_ts = ffi::PyThreadState_Get();
    ffi::PyEval_SaveThread();
    let _ = shared.interrupt_running.set(interrupt_running);
    let mut worker = Worker {
        boot,
        main_ts,
        interp: None,
        failed: None,
        held: Vec::new(),
        freed: Vec::new(),
    };
    if !shared.parking() {
        worker.ensure_interp();
    }
    worker.serve(rx, shared, workers);
    worker.end_interp();
    ffi::PyEval_RestoreThread(main_ts);
    Python::attach(|_| worker.freed.clear());
    ffi::PyGILState_Release(gstate);
}

struct Worker<'a> {
    boot: &'a Boot,
    main_ts: *mut ffi::PyThreadState,
    interp: Option<Interp>,
    /// Why no subinterpreter could be made: every call this worker takes then fails with it.
    failed: Option<String>,
    held: Vec<Held>,
    /// Buffers no view shows any more, released with the main GIL (at the next attach to it).
    freed: Vec<PyBuffer<u8>>,
}

impl Worker<'_> {
    /// Make and boot the subinterpreter unless there is one (or making one failed before).
    /// Nothing is attached on this thread before or after.
    unsafe fn ensure_interp(&mut self) {
        if self.interp.is_some() || self.failed.is_some() {
            return;
        }
        // One creation at a time, and the lock taken before the main GIL: a creation in
        // progress needs the main GIL to import builtin modules.
        let _one_at_a_time = CREATE.lock();
        ffi::PyEval_RestoreThread(self.main_ts);
        let config = ffi::PyInterpreterConfig {
            use_main_obmalloc: 0,
            allow_fork: 0,
            allow_exec: 0,
            allow_threads: 1,
            allow_daemon_threads: 0,
            check_multi_interp_extensions: 1,
            gil: ffi::PyInterpreterConfig_OWN_GIL,
        };
        let mut sub_ts: *mut ffi::PyThreadState = ptr::null_mut();
        let status = ffi::Py_NewInterpreterFromConfig(&mut sub_ts, &config);
        if ffi::PyStatus_Exception(status) != 0 || sub_ts.is_null() {
            let msg = if status.err_msg.is_null() {
                "Py_NewInterpreterFromConfig failed".to_string()
            } else {
                CStr::from_ptr(status.err_msg)
                    .to_string_lossy()
                    .into_owned()
            };
            // Detach whatever a failed creation left attached (the main thread state).
            ffi::PyThreadState_Swap(ptr::null_mut());
            self.failed = Some(msg);
            return;
        }
        // The subinterpreter is attached now (the main thread state detached).
        match boot_worker(self.boot) {
            Ok(fns) => {
                ffi::PyEval_SaveThread();
                self.interp = Some(Interp { sub_ts, fns });
            }
            Err(msg) => {
                // Leaves nothing attached.
                ffi::Py_EndInterpreter(sub_ts);
                self.failed = Some(msg);
            }
        }
    }

    /// End the subinterpreter, if there is one (nothing attached before or after).
    unsafe fn end_interp(&mut self) {
        let Some(Interp { sub_ts, fns }) = self.interp.take() else {
            return;
        };
        // Ending is serialized like creation: concurrent Py_EndInterpreter calls corrupt memory
        // on 3.13.0 (seen here: a double free in the tuple free list).
        let _one_at_a_time = CREATE.lock();
        ffi::PyEval_RestoreThread(sub_ts);
        let r = ffi::PyObject_CallNoArgs(fns.teardown);
        if r.is_null() {
            ffi::PyErr_Clear();
        }
        ffi::Py_XDECREF(r);
        // Every view of the callers' memory goes with the subinterpreter.
        for held in self.held.drain(..) {
            held.raws.into_iter().for_each(|r| ffi::Py_DecRef(r));
            self.freed.extend(held.buffers);
        }
        for f in [fns.teardown, fns.run, fns.run_lent, fns.take_back] {
            ffi::Py_DecRef(f);
        }
        ffi::Py_EndInterpreter(sub_ts);
    }

    /// Take calls until the pool is shut down and the queue is empty.
    ///
    /// Each attach to the main interpreter settles every call the worker finished and claims the
    /// next ones: one call, or, while calls are short and the queue is long, a small batch (a
    /// share of the queue small enough that the other workers still get theirs), so a burst of
    /// small calls costs a fraction of a main-GIL hand-off per call. A claimed call that was
    /// cancelled since never begins, and what a batch finished is handed over before each next
    /// call begins (`Shared::hand_over`), so no result waits for the rest of its batch.
    unsafe fn serve(&mut self, rx: &Receiver<Task>, shared: &Shared, workers: usize) {
        let main_ts = self.main_ts;
        let mut done: Done = Vec::new();
        while let Some(next) = next_calls(rx, shared, workers, done.is_empty()) {
            let freed = &mut self.freed;
            let mut claimed: VecDeque<Task> = with_main(main_ts, |py| {
                freed.clear();
                settle_and_claim(py, shared, &mut done, next)
            });
            if shared.parking() {
                // A fork is coming: no subinterpreter may exist when it happens. The calls just
                // claimed run after it, in a new subinterpreter.
                self.end_interp();
                shared.park();
            }
            if claimed.is_empty() {
                continue;
            }
            self.ensure_interp();
            let Some(interp) = &self.interp else {
                let msg = self.failed.clone().unwrap_or_default();
                with_main(main_ts, |py| {
                    for task in claimed.drain(..) {
                        let err = PyRuntimeError::new_err(format!(
                            "could not start a subinterpreter worker: {msg}"
                        ));
                        task.job.fail(py, err);
                    }
                });
                continue;
            };
            let me = ffi::PyThread_get_thread_ident();
            let interp_state = ffi::PyThreadState_GetInterpreter(interp.sub_ts) as usize;
            let mut last_check = Instant::now();
            ffi::PyEval_RestoreThread(interp.sub_ts);
            release_held(&interp.fns, &mut self.held, &mut self.freed);
            while let Some(task) = claimed.pop_front() {
                shared.hand_over(&mut done);
                let Some(mut task) = may_begin(shared, task, &mut done) else {
                    continue;
                };
                let began = Instant::now();
                shared.running.lock().insert(me, interp_state);
                let reply = catch_unwind(AssertUnwindSafe(|| match &task.payload {
                    Some(payload) => call_run(&interp.fns, payload, &task.buffer_slices()),
                    None => panic!("rustpool test panic inside an interpreter worker"),
                }));
                shared.running.lock().remove(&me);
                shared.timed(began.elapsed());
                let reply =
                    reply.unwrap_or_else(|p| Reply::failed(PANICKED, panic_message(p.as_ref())));
                if !reply.kept.is_empty() {
                    self.held.push(Held {
                        raws: reply.kept,
                        buffers: std::mem::take(&mut task.buffers),
                    });
                }
                task.returned = reply.pieces;
                done.push((task, reply.status, reply.data));
                if !claimed.is_empty() && last_check.elapsed() >= RECHECK_AFTER {
                    // The batch has run for a while (it was claimed for short calls): settle what
                    // it finished, and drop the claimed calls cancelled since (they never begin).
                    ffi::PyEval_SaveThread();
                    let freed = &mut self.freed;
                    with_main(main_ts, |py| {
                        freed.clear();
                        settle_and_recheck(py, shared, &mut done, &mut claimed)
                    });
                    ffi::PyEval_RestoreThread(interp.sub_ts);
                    last_check = Instant::now();
                }
            }
            ffi::PyEval_SaveThread();
        }
    }
}

/// A Ctrl-C aborted the pool: raise KeyboardInterrupt in every call running in one of its
/// subinterpreters (at its next bytecode; a call blocked in C code sees it when that returns).
/// Without the main GIL. The creation lock keeps the subinterpreters from ending meanwhile; a
/// thread state of each one, made here, takes its GIL to set the exception.
fn interrupt_running(shared: &Shared) {
    let _one_at_a_time = CREATE.lock();
    let running: Vec<(std::ffi::c_ulong, usize)> = shared
        .running
        .lock()
        .iter()
        .map(|(t, i)| (*t, *i))
        .collect();
    for (thread, interp) in running {
        unsafe {
            let ts = ffi::PyThreadState_New(interp as *mut ffi::PyInterpreterState);
            if ts.is_null() {
                continue;
            }
            ffi::PyEval_RestoreThread(ts);
            ffi::PyThreadState_SetAsyncExc(
                thread as std::ffi::c_long,
                ffi::PyExc_KeyboardInterrupt,
            );
            ffi::PyThreadState_Clear(ts);
            ffi::PyThreadState_DeleteCurrent();
        }
    }
}

/// Run `f` attached to the main interpreter with this thread's main thread state.
///
/// Not `Python::attach` alone: the thread's `PyGILState` binding follows whichever thread state
/// was activated last, which is the subinterpreter's after a call. Activating `main_ts` first
/// binds it again, and `Python::attach` then just counts the GIL as held.
unsafe fn with_main<R>(main_ts: *mut ffi::PyThreadState, f: impl FnOnce(Python<'_>) -> R) -> R {
    ffi::PyEval_RestoreThread(main_ts);
    let r = Python::attach(f);
    ffi::PyEval_SaveThread();
    r
}

/// The worker's error as text (subinterpreter attached).
unsafe fn take_error() -> String {
    let exc = ffi::PyErr_GetRaisedException();
    if exc.is_null() {
        return "unknown error".into();
    }
    let s = ffi::PyObject_Str(exc);
    let out = utf8(s).unwrap_or_else(|| "unprintable error".into());
    ffi::Py_XDECREF(s);
    ffi::Py_DecRef(exc);
    ffi::PyErr_Clear();
    out
}

unsafe fn utf8(s: *mut ffi::PyObject) -> Option<String> {
    if s.is_null() {
        return None;
    }
    let mut len: ffi::Py_ssize_t = 0;
    let p = ffi::PyUnicode_AsUTF8AndSize(s, &mut len);
    if p.is_null() {
        ffi::PyErr_Clear();
        return None;
    }
    Some(
        String::from_utf8_lossy(std::slice::from_raw_parts(p as *const u8, len as usize))
            .into_owned(),
    )
}

unsafe fn new_str(s: &str) -> *mut ffi::PyObject {
    ffi::PyUnicode_FromStringAndSize(s.as_ptr() as *const _, s.len() as ffi::Py_ssize_t)
}

/// Load `rustpool/_worker.py` in the subinterpreter (by path: importing `rustpool` there would run
/// the package's `__init__` first) and set it up like the caller; returns the functions a
/// worker calls.
unsafe fn boot_worker(boot: &Boot) -> Result<WorkerFns, String> {
    let globals = ffi::PyDict_New();
    ffi::PyDict_SetItemString(globals, c"__builtins__".as_ptr(), ffi::PyEval_GetBuiltins());
    let name = new_str("rustpool._worker");
    ffi::PyDict_SetItemString(globals, c"__name__".as_ptr(), name);
    ffi::Py_DecRef(name);
    let file = ffi::PyUnicode_FromString(boot.path.as_ptr());
    ffi::PyDict_SetItemString(globals, c"__file__".as_ptr(), file);
    ffi::Py_DecRef(file);
    let code = ffi::Py_CompileString(boot.source.as_ptr(), boot.path.as_ptr(), ffi::Py_file_input);
    let r = if code.is_null() {
        code
    } else {
        let r = ffi::PyEval_EvalCode(code, globals, globals);
        ffi::Py_DecRef(code);
        r
    };
    if r.is_null() {
        ffi::Py_DecRef(globals);
        return Err(format!("worker bootstrap failed: {}", take_error()));
    }
    ffi::Py_DecRef(r);
    let setup = ffi::PyDict_GetItemString(globals, c"setup".as_ptr());
    let run = ffi::PyDict_GetItemString(globals, c"run".as_ptr());
    let teardown = ffi::PyDict_GetItemString(globals, c"teardown".as_ptr());
    let run_lent = ffi::PyDict_GetItemString(globals, c"run_lent".as_ptr());
    let take_back = ffi::PyDict_GetItemString(globals, c"take_back".as_ptr());
    if [setup, run, teardown, run_lent, take_back]
        .iter()
        .any(|f| f.is_null())
    {
        ffi::Py_DecRef(globals);
        return Err("the worker module defines no setup/run/run_lent/take_back/teardown".into());
    }
    let path = ffi::PyList_New(0);
    for p in &boot.sys_path {
        let s = new_str(p);
        ffi::PyList_Append(path, s);
        ffi::Py_DecRef(s);
    }
    let args = ffi::PyTuple_New(3);
    ffi::PyTuple_SetItem(args, 0, path);
    ffi::PyTuple_SetItem(args, 1, new_str(&boot.main_name));
    ffi::PyTuple_SetItem(args, 2, new_str(&boot.main_path));
    let r = ffi::PyObject_Call(setup, args, ptr::null_mut());
    ffi::Py_DecRef(args);
    if r.is_null() {
        ffi::Py_DecRef(globals);
        return Err(format!("worker setup failed: {}", take_error()));
    }
    ffi::Py_DecRef(r);
    for f in [run, teardown, run_lent, take_back] {
        ffi::Py_IncRef(f);
    }
    ffi::Py_DecRef(globals);
    Ok(WorkerFns {
        run,
        run_lent,
        take_back,
        teardown,
    })
}

/// Give back what the calls' functions kept of the callers' memory, once they no longer show it
/// (subinterpreter attached).
unsafe fn release_held(fns: &WorkerFns, held: &mut Vec<Held>, freed: &mut Vec<PyBuffer<u8>>) {
    held.retain_mut(|h| {
        h.raws.retain(|&raw| {
            let r = ffi::PyObject_CallOneArg(fns.take_back, raw);
            let released = !r.is_null() && r == ffi::Py_True();
            if r.is_null() {
                ffi::PyErr_Clear();
            }
            ffi::Py_XDECREF(r);
            if released {
                ffi::Py_DecRef(raw);
            }
            !released
        });
        if h.raws.is_empty() {
            freed.append(&mut h.buffers);
            return false;
        }
        true
    });
}

/// Run one call inside the subinterpreter (attached): `run(payload)`, or, with buffers,
/// `run_lent(payload, views)` where each view shows a buffer of the caller's in place (read
/// only). A result's buffers are copied out (without the subinterpreter's GIL) into memory the
/// main side's views then show.
unsafe fn call_run(fns: &WorkerFns, payload: &[u8], buffers: &[&[u8]]) -> Reply {
    let arg = ffi::PyBytes_FromStringAndSize(
        payload.as_ptr() as *const _,
        payload.len() as ffi::Py_ssize_t,
    );
    if arg.is_null() {
        return Reply::failed(UNLOADABLE, take_error());
    }
    let mut kept = Vec::new();
    let reply = if buffers.is_empty() {
        let reply = ffi::PyObject_CallOneArg(fns.run, arg);
        ffi::Py_DecRef(arg);
        reply
    } else {
        let raws = ffi::PyList_New(buffers.len() as ffi::Py_ssize_t);
        for (i, b) in buffers.iter().enumerate() {
            let view = ffi::PyMemoryView_FromMemory(
                b.as_ptr() as *mut std::ffi::c_char,
                b.len() as ffi::Py_ssize_t,
                ffi::PyBUF_READ,
            );
            ffi::PyList_SetItem(raws, i as ffi::Py_ssize_t, view);
        }
        let both = ffi::PyObject_CallFunctionObjArgs(
            fns.run_lent,
            arg,
            raws,
            ptr::null_mut::<ffi::PyObject>(),
        );
        ffi::Py_DecRef(arg);
        ffi::Py_DecRef(raws);
        if both.is_null() {
            both
        } else {
            let reply = ffi::PyTuple_GetItem(both, 0);
            ffi::Py_IncRef(reply);
            let still = ffi::PyTuple_GetItem(both, 1);
            for i in 0..ffi::PyList_Size(still) {
                let raw = ffi::PyList_GetItem(still, i);
                ffi::Py_IncRef(raw);
                kept.push(raw);
            }
            ffi::Py_DecRef(both);
            reply
        }
    };
    if reply.is_null() {
        // The call may have run: it must not go to a fallback (it would run twice).
        let mut r = Reply::failed(FAILED, take_error());
        r.kept = kept;
        return r;
    }
    let status = ffi::PyLong_AsLongLong(ffi::PyTuple_GetItem(reply, 0));
    let data = ffi::PyTuple_GetItem(reply, 1);
    let mut buf: *mut std::ffi::c_char = ptr::null_mut();
    let mut len: ffi::Py_ssize_t = 0;
    let out = if !data.is_null() && ffi::PyBytes_AsStringAndSize(data, &mut buf, &mut len) == 0 {
        std::slice::from_raw_parts(buf as *const u8, len as usize).to_vec()
    } else {
        ffi::PyErr_Clear();
        b"the worker returned a malformed reply".to_vec()
    };
    let pieces = if ffi::PyTuple_Size(reply) > 2 {
        copy_out(ffi::PyTuple_GetItem(reply, 2))
    } else {
        Ok(Vec::new())
    };
    ffi::Py_DecRef(reply);
    match pieces {
        Ok(pieces) => Reply {
            status,
            data: out,
            pieces,
            kept,
        },
        Err(why) => {
            let mut r = Reply::failed(FAILED, why);
            r.kept = kept;
            r
        }
    }
}

/// Copy the buffers of `list` (a result's out-of-band buffers, in the subinterpreter) into one
/// allocation, without the subinterpreter's GIL; the pieces of it that show each.
unsafe fn copy_out(list: *mut ffi::PyObject) -> Result<Vec<Piece>, String> {
    let n = ffi::PyList_Size(list).max(0) as usize;
    let mut views: Vec<ffi::Py_buffer> = Vec::with_capacity(n);
    for i in 0..n {
        let mut view: ffi::Py_buffer = std::mem::zeroed();
        if ffi::PyObject_GetBuffer(
            ffi::PyList_GetItem(list, i as ffi::Py_ssize_t),
            &mut view,
            ffi::PyBUF_C_CONTIGUOUS,
        ) != 0
        {
            views.iter_mut().for_each(|v| ffi::PyBuffer_Release(v));
            return Err(format!(
                "a result's buffer could not be read: {}",
                take_error()
            ));
        }
        views.push(view);
    }
    let spans: Vec<(usize, usize)> = views
        .iter()
        .scan(0, |off, v| {
            let at = *off;
            *off = next_offset(at, v.len as usize);
            Some((at, v.len as usize))
        })
        .collect();
    let total = spans.last().map_or(0, |(at, len)| at + len);
    let ts = ffi::PyEval_SaveThread();
    let mut out = vec![0u8; total];
    for (v, (at, len)) in views.iter().zip(&spans) {
        ptr::copy_nonoverlapping(v.buf as *const u8, out.as_mut_ptr().add(*at), *len);
    }
    ffi::PyEval_RestoreThread(ts);
    views.iter_mut().for_each(|v| ffi::PyBuffer_Release(v));
    let mem = Arc::new(Memory::heap(out));
    Ok(spans
        .into_iter()
        .map(|(at, len)| Piece::new(&mem, at, len).expect("inside"))
        .collect())
}
