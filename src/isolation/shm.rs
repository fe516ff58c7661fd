//! Shared memory for big buffers: the arenas that this process and a worker process both map, so
//! that the out-of-band buffers of a call (pickle protocol 5: a numpy array's data, a big
//! `bytes`) and of its result cross without the pipe.
//!
//! An arena is a memfd (named `rustpool-shm`: it shows so in `/proc/<pid>/fd` and in the maps),
//! made here and opened by the worker through `/proc/<this pid>/fd/<fd>`; it is freed by the
//! kernel once the last side closes or unmaps it, so no segment outlives both processes (nothing
//! is ever left in `/dev/shm`). Its pages are reserved when it grows (`fallocate`): a machine
//! without the room says so there, and the call's buffers go through the pipe instead of dying
//! of a SIGBUS later.
//!
//! Each worker process has a call arena (this side writes it, without the GIL) and a reply arena
//! (the worker writes it). The side that reads an arena hands out views over it, and an arena is
//! written again only once no view shows it any more: here, a result's views hold the arena's
//! mapping (`SharedBuffer`), so one that is still alive makes the next call take another reply
//! arena; in the worker, a view kept past the end of its call makes the reply say so, and the
//! next call gets a new call arena. Reused arenas stay mapped on both sides: no page faults, no
//! fresh memory to zero, which is what makes a 100 MB call cheap (see docs/design.md).

use memmap2::{MmapOptions, MmapRaw};
use pyo3::buffer::PyBuffer;
use pyo3::ffi;
use pyo3::prelude::*;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::raw::c_int;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Where the buffers of one frame start, and each one after the last: cache-line aligned.
pub const ALIGN: usize = 64;
/// Arenas grow by whole MiB.
const MIN_ARENA: usize = 1 << 20;
/// An arena bigger than this is given back once its call is settled (a 1 GB call must not keep
/// 1 GB of shared memory per worker for as long as the pool lives).
pub const KEEP: usize = 256 << 20;

/// The offset after `len` bytes at `off`, aligned for the next buffer.
pub fn next_offset(off: usize, len: usize) -> usize {
    (off + len).div_ceil(ALIGN) * ALIGN
}

/// Memory that Python views may show: a mapping of an arena, or bytes that came through the pipe.
pub enum Memory {
    Mapped(MmapRaw),
    /// The vector is never touched again once its address is taken: views write through it.
    Heap {
        addr: usize,
        len: usize,
        _owner: Vec<u8>,
    },
}

impl Memory {
    pub fn heap(mut bytes: Vec<u8>) -> Memory {
        Memory::Heap {
            addr: bytes.as_mut_ptr() as usize,
            len: bytes.len(),
            _owner: bytes,
        }
    }

    fn ptr(&self) -> *mut u8 {
        match self {
            Memory::Mapped(m) => m.as_mut_ptr(),
            Memory::Heap { addr, .. } => *addr as *mut u8,
        }
    }

    fn len(&self) -> usize {
        match self {
            Memory::Mapped(m) => m.len(),
            Memory::Heap { len, .. } => *len,
        }
    }
}

/// A range of `Memory`, on its way to Python as a `SharedBuffer`.
pub struct Piece {
    mem: Arc<Memory>,
    off: usize,
    len: usize,
}

impl Piece {
    /// `len` bytes at `off` of `mem`; None when they are not all inside it.
    pub fn new(mem: &Arc<Memory>, off: usize, len: usize) -> Option<Piece> {
        (off.checked_add(len)? <= mem.len()).then(|| Piece {
            mem: mem.clone(),
            off,
            len,
        })
    }

    pub fn into_py(self, py: Python<'_>) -> PyResult<Py<SharedBuffer>> {
        Py::new(py, SharedBuffer { piece: self })
    }
}

/// A writable buffer over memory a worker wrote (a result's out-of-band buffer): Python reads
/// it through `memoryview` (the buffer protocol) without a copy. It holds the memory: the arena
/// it shows is not written again while it, or a view made from it, is alive.
#[pyclass(frozen, module = "rustpool._rustpool")]
pub struct SharedBuffer {
    piece: Piece,
}

#[pymethods]
impl SharedBuffer {
    unsafe fn __getbuffer__(
        slf: Bound<'_, Self>,
        view: *mut ffi::Py_buffer,
        flags: c_int,
    ) -> PyResult<()> {
        let piece = &slf.get().piece;
        let ptr = unsafe { piece.mem.ptr().add(piece.off) };
        let r = unsafe {
            ffi::PyBuffer_FillInfo(
                view,
                slf.as_ptr(),
                ptr.cast(),
                piece.len as ffi::Py_ssize_t,
                0,
                flags,
            )
        };
        if r < 0 {
            return Err(PyErr::fetch(slf.py()));
        }
        Ok(())
    }

    unsafe fn __releasebuffer__(&self, _view: *mut ffi::Py_buffer) {}

    fn __len__(&self) -> usize {
        self.piece.len
    }
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// A memfd mapped here; `id` tells one arena from the next (an fd number is reused).
pub struct Arena {
    pub id: u64,
    file: File,
    /// The file's size (its pages reserved).
    size: usize,
    /// The mapping of `size` bytes (None while empty). Views of results hold it too: it is
    /// unmapped when the last one goes.
    map: Option<Arc<Memory>>,
}

impl Arena {
    /// A new arena of `size` bytes (0: nothing reserved yet; the worker may grow it).
    pub fn new(size: usize) -> io::Result<Arena> {
        let mut arena = Arena {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            file: memfd()?,
            size: 0,
            map: None,
        };
        if size > 0 {
            arena.grow(size)?;
        }
        Ok(arena)
    }

    pub fn fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }

    pub fn size(&self) -> usize {
        self.size
    }

    /// Whether a view in Python still shows this arena (then it must not be written).
    pub fn pinned(&self) -> bool {
        self.map.as_ref().is_some_and(|m| Arc::strong_count(m) > 1)
    }

    /// Make it hold at least `need` bytes, its pages reserved: `need` in whole MiB, or half as
    /// much again as it held when that is more (a few growths reach any size; an arena is never
    /// much bigger than the biggest call, its pages all mapped). Only while it is not pinned.
    pub fn grow(&mut self, need: usize) -> io::Result<()> {
        if need <= self.size {
            return Ok(());
        }
        let size = need.div_ceil(MIN_ARENA) * MIN_ARENA;
        let size = size.max(self.size + self.size / 2);
        reserve(&self.file, size).inspect_err(|_| {
            // Back to what it was: a file bigger than its reserved pages would SIGBUS its reader.
            let _ = self.file.set_len(self.size as u64);
        })?;
        self.size = size;
        self.remap()
    }

    /// The worker grew the file to `size`: map all of it.
    pub fn adopt(&mut self, size: usize) -> io::Result<()> {
        if size != self.size {
            self.size = size;
            self.remap()?;
        }
        Ok(())
    }

    fn remap(&mut self) -> io::Result<()> {
        self.map = None;
        if self.size > 0 {
            // Its pages mapped at once: one fault for the arena, not one per page.
            let map = MmapOptions::new()
                .len(self.size)
                .populate()
                .map_raw(&self.file)?;
            self.map = Some(Arc::new(Memory::Mapped(map)));
        }
        Ok(())
    }

    /// Copy `data` to `off` (no Python view may show this range: the arena is not pinned).
    pub fn write(&self, off: usize, data: &[u8]) {
        let map = self.map.as_ref().expect("written after grow");
        assert!(off + data.len() <= map.len(), "a write past the arena");
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), map.ptr().add(off), data.len()) };
    }

    /// A view's worth of the arena: `len` bytes at `off`.
    pub fn piece(&self, off: usize, len: usize) -> Option<Piece> {
        Piece::new(self.map.as_ref()?, off, len)
    }
}

#[cfg(target_os = "linux")]
fn memfd() -> io::Result<File> {
    use std::os::fd::FromRawFd;
    let fd = unsafe { libc::memfd_create(c"rustpool-shm".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(unsafe { File::from_raw_fd(fd) })
}

/// No memfd here: buffers go through the pipe.
#[cfg(not(target_os = "linux"))]
fn memfd() -> io::Result<File> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "no memfd on this platform",
    ))
}

#[cfg(target_os = "linux")]
fn reserve(file: &File, size: usize) -> io::Result<()> {
    let len = libc::off_t::try_from(size)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "an arena too big"))?;
    let r = unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, len) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(not(target_os = "linux"))]
fn reserve(_file: &File, _size: usize) -> io::Result<()> {
    Err(io::Error::new(io::ErrorKind::Unsupported, "no memfd"))
}

/// Copy `src` into `dst` at `offset`, without the GIL (a big buffer shared with every worker).
#[pyfunction]
pub fn _copy_into(
    py: Python<'_>,
    dst: PyBuffer<u8>,
    offset: usize,
    src: PyBuffer<u8>,
) -> PyResult<()> {
    if dst.readonly() || !dst.is_c_contiguous() || !src.is_c_contiguous() {
        return Err(pyo3::exceptions::PyBufferError::new_err(
            "a copy needs a writable contiguous destination and a contiguous source",
        ));
    }
    let n = src.len_bytes();
    if offset
        .checked_add(n)
        .is_none_or(|end| end > dst.len_bytes())
    {
        return Err(pyo3::exceptions::PyValueError::new_err(format!(
            "{n} bytes do not fit at offset {offset} of {} bytes",
            dst.len_bytes()
        )));
    }
    let (to, from) = (dst.buf_ptr() as usize + offset, src.buf_ptr() as usize);
    py.detach(|| unsafe { std::ptr::copy_nonoverlapping(from as *const u8, to as *mut u8, n) });
    Ok(())
}
