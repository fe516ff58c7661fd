//! isolation="process": each worker thread of the pool owns one worker process (a fresh
//! interpreter, spawn semantics: never a fork of this process, which has threads).
//!
//! The child runs `rustpool/_worker.py` as its program (`python -P <path>/_worker.py`); calls go
//! to it as frames on its fd 3 and replies come back on its fd 4 (its stdin, stdout and stderr
//! stay free for the user's code; the child makes fds 3 and 4 non-inheritable at once, so a
//! process it starts never holds them). Its first frame is its setup (the caller's `sys.path`
//! and `__main__`, the pickled initializer); its first reply says whether that worked. The child
//! ends at EOF on fd 3, which the parent's death brings too; on Linux it also dies with its
//! parent at once (`PR_SET_PDEATHSIG`), even in the middle of a call.
//!
//! Frames: a call is `CALL_MAGIC`, a call id (u64), a length (u32) and the payload; a reply is
//! `REPLY_MAGIC`, the id of the call it answers, a length and a status byte, then the bytes. A
//! reply is checked before it is believed: a wrong marker, an id that is not the call's, a
//! length the child could not hold (Linux), or an unknown status is a malformed reply: that call
//! fails with `WorkerCrashed`, the child is killed and replaced. A reply is read as it arrives
//! (never allocated from its claimed length up front) and under the call's deadline and cancel
//! flag.
//!
//! A child that dies while it runs a call fails that call only, with `rustpool.WorkerCrashed`
//! naming the exit code or signal; the next call starts a new child. Its death is seen on a
//! pidfd of the process (or by `waitpid` now and then where there is none), not only as EOF on
//! the reply pipe, which a grandchild may still hold. A call past its timeout, or cancelled
//! while it runs when the pool kills on cancel, has its child killed the same way. A child is
//! also let go after `max_tasks` calls, or once its RSS passes `max_rss`.
//!
//! Latency: the worker thread spins briefly on the reply pipe and the child on the call pipe
//! before either sleeps, so a short call costs no thread wake-up on either side.

use super::shm::{self, next_offset, Arena, Memory, Piece, KEEP};
use super::workers::{
    crossing, may_begin, next_calls, settle_and_claim, settle_and_recheck, Done, Shared, Task,
    WorkerPool, BROKEN, CANCELLED, CRASHED, PANICKED, RECHECK_AFTER, TIMED_OUT, UNLOADABLE,
};
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use std::collections::VecDeque;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
#[cfg(not(target_os = "linux"))]
use std::os::unix::process::CommandExt;
use std::os::unix::process::ExitStatusExt;
#[cfg(not(target_os = "linux"))]
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a worker thread spins on the reply pipe before it sleeps in `poll`.
const REPLY_SPIN: Duration = Duration::from_micros(100);
/// How often a worker thread waiting on a call that can be cancelled looks at its flag.
const CANCEL_CHECK: Duration = Duration::from_millis(10);
/// How often a worker thread looks for its child's death where there is no pidfd.
const DEATH_CHECK: Duration = Duration::from_millis(50);

/// The frame markers (as in `rustpool._worker`).
const CALL_MAGIC: &[u8; 4] = b"rpC1";
const REPLY_MAGIC: &[u8; 4] = b"rpR1";
/// Takes back a call written ahead (its id, no payload): see `Later`.
const SKIP_MAGIC: &[u8; 4] = b"rpS1";
/// A reply's header: marker, call id (u64), length (u32), status (u8).
const REPLY_HEADER: usize = 17;
/// Replies longer than this have their length checked against the child's address space (a
/// reply cannot be longer than the memory that held it); shorter ones are simply read.
const CHECKED_LENGTH: usize = 16 << 20;
/// The most a reply's buffer grows ahead of the bytes that arrived.
const READ_AHEAD: usize = 64 << 20;
/// A small call goes out in one write with its header.
const ONE_WRITE: usize = 64 << 10;
/// Set in a reply's status byte: the reply has a body with buffers (see `Child::unpack`).
const WITH_BUFFERS: i64 = 0x80;
/// In a call's flags: the arenas are described (call arena id, fd, size; reply arena id, fd,
/// size: 40 bytes follow).
const DESCRIBED: u8 = 1;
/// In a call's flags: the child may write this call's result buffers to the reply arena (no
/// view here shows it, and no earlier reply may still use it).
const REPLY_FREE: u8 = 2;
/// Reply arenas a result here still shows, kept to be taken again once free; beyond these, such
/// an arena is let go (its memory goes with the last view of it).
const MAX_SPARE: usize = 2;

/// Held from a child's pipes to its start where std makes a pipe with `pipe` and only then marks
/// it close-on-exec (macOS has no `pipe2`): a child forked by another worker thread in between
/// would keep this child's pipe ends, and neither child would see EOF while the other lives.
#[cfg(not(target_os = "linux"))]
static SPAWNING: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// What a process pool is made with, besides its size.
#[derive(Default)]
pub struct Options {
    /// The pickled `(initializer, initargs, {})`, run once in each new worker process.
    pub initializer: Option<Vec<u8>>,
    /// Replace a worker process after this many calls.
    pub max_tasks: Option<usize>,
    /// Replace a worker process once its resident memory passes this many bytes.
    pub max_rss: Option<u64>,
}

struct Boot {
    /// The worker's command line (`_crossing.process_boot`).
    argv: Vec<String>,
    first_frame: Vec<u8>,
    options: Options,
}

struct Child {
    process: Proc,
    calls: io::PipeWriter,
    /// Read without blocking: a reply is waited for in `poll`, with the pidfd.
    replies: io::PipeReader,
    /// Readable once the process has ended (Linux 5.3+); None: `waitpid` every `DEATH_CHECK`.
    pidfd: Option<OwnedFd>,
    /// Bytes read from `replies` and not yet taken as a reply.
    inbox: Vec<u8>,
    /// Ids of the frames sent and not answered yet, oldest first.
    unanswered: VecDeque<u64>,
    /// The whole length of the reply at the front of the inbox, once believed (its header read
    /// and its length checked).
    front: Option<usize>,
    next_id: u64,
    /// Calls it has answered.
    tasks: usize,
    /// Shared memory for big buffers (`shm`): the arena calls' buffers are written to (made by
    /// the first call that has some), and whether the child said a view there outlived a call
    /// (then it is never written again: the next call takes a new one).
    call_arena: Option<Arena>,
    call_pinned: bool,
    /// The arena the child writes results' buffers to, and arenas a result here still shows.
    reply_arena: Option<Arena>,
    spare: Vec<Arena>,
    /// What the child was last told: (call arena id, its size, reply arena id).
    told: (u64, usize, u64),
}

/// A call written to the child behind the one it runs, with a flag raised once its awaiting side
/// gave up on it (seen by a recheck with the GIL, or by `CancelWatch` under `kill_on_cancel`):
/// while the call has not begun, it is taken back with a skip frame (the child answers
/// `CANCELLED` and never runs it).
struct Later {
    /// Its place among the calls written together.
    pos: usize,
    id: u64,
    flag: Arc<AtomicBool>,
    taken_back: bool,
}

/// The header of a frame to the child: marker, call id (u64), payload length (u32).
fn frame_header(magic: &[u8; 4], id: u64, len: u32) -> [u8; 16] {
    let mut head = [0u8; 16];
    head[..4].copy_from_slice(magic);
    head[4..12].copy_from_slice(&id.to_le_bytes());
    head[12..].copy_from_slice(&len.to_le_bytes());
    head
}

/// What waiting for the oldest unanswered frame gave.
enum Wait {
    /// Its reply, checked: (status, bytes).
    Reply(i64, Vec<u8>),
    TimedOut,
    Cancelled,
    /// No reply will come: the process ended (or closed its end of the pipe) first.
    Gone,
    /// The child broke the protocol (why, for the call's error): it must be killed.
    Malformed(String),
    /// Time to look (with the GIL) whether the calls written behind this one are still wanted.
    Recheck,
}

/// What the inbox holds.
enum Parsed {
    Reply(i64, Vec<u8>),
    Partial,
    Malformed(String),
}

impl Child {
    fn spawn(boot: &Boot) -> io::Result<Child> {
        #[cfg(not(target_os = "linux"))]
        let one_at_a_time = SPAWNING.lock().unwrap_or_else(|e| e.into_inner());
        let (call_r, call_w) = io::pipe()?;
        let (reply_r, reply_w) = io::pipe()?;
        let (cr, rw) = (call_r.as_raw_fd(), reply_w.as_raw_fd());
        let process = Proc::spawn(&boot.argv, cr, rw)?;
        #[cfg(not(target_os = "linux"))]
        drop(one_at_a_time);
        drop((call_r, reply_w));
        set_nonblocking(reply_r.as_raw_fd())?;
        let pidfd = pidfd_open(process.id());
        let mut child = Child {
            process,
            calls: call_w,
            replies: reply_r,
            pidfd,
            inbox: Vec::new(),
            unanswered: VecDeque::new(),
            front: None,
            next_id: 0,
            tasks: 0,
            call_arena: None,
            call_pinned: false,
            reply_arena: Arena::new(0).ok(),
            spare: Vec::new(),
            told: (0, 0, 0),
        };
        child.send(&boot.first_frame)?;
        Ok(child)
    }

    /// Send a call with its out-of-band buffers: into the call arena (copied here, without the
    /// GIL), or in the frame when there is no arena or no room for one.
    fn send_call(&mut self, payload: &[u8], buffers: &[&[u8]]) -> io::Result<()> {
        let mut table: Vec<(u8, usize, usize)> = Vec::with_capacity(buffers.len());
        let mut inline = false;
        if !buffers.is_empty() {
            let need = buffers.iter().fold(0, |off, b| next_offset(off, b.len()));
            inline = !self.call_arena_ready(need);
            let mut off = 0;
            for b in buffers {
                if !inline {
                    self.call_arena.as_ref().expect("ready").write(off, b);
                }
                table.push((u8::from(!inline), off, b.len()));
                off = next_offset(off, b.len());
            }
        }
        self.ready_reply_arena();
        let mut flags = 0;
        if self.unanswered.is_empty() && self.reply_arena.is_some() {
            flags |= REPLY_FREE;
        }
        let call = self
            .call_arena
            .as_ref()
            .map_or((0, -1, 0), |a| (a.id, a.fd(), a.size()));
        let reply = self
            .reply_arena
            .as_ref()
            .map_or((0, -1, 0), |a| (a.id, a.fd(), a.size()));
        let described = self.told != (call.0, call.2, reply.0);
        if described {
            flags |= DESCRIBED;
            self.told = (call.0, call.2, reply.0);
        }
        let mut body = Vec::with_capacity(64 + table.len() * 17 + payload.len());
        body.push(flags);
        if described {
            for (id, fd, size) in [call, reply] {
                body.extend_from_slice(&id.to_le_bytes());
                body.extend_from_slice(&fd.to_le_bytes());
                body.extend_from_slice(&(size as u64).to_le_bytes());
            }
        }
        body.extend_from_slice(&(table.len() as u32).to_le_bytes());
        body.extend_from_slice(&(payload.len() as u64).to_le_bytes());
        for (kind, off, len) in &table {
            body.push(*kind);
            body.extend_from_slice(&(*off as u64).to_le_bytes());
            body.extend_from_slice(&(*len as u64).to_le_bytes());
        }
        body.extend_from_slice(payload);
        let in_frame = if inline {
            table
                .last()
                .map_or(0, |(_, off, len)| next_offset(*off, *len))
        } else {
            0
        };
        let len = u32::try_from(body.len() + in_frame)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a call over 4 GiB"))?;
        let id = self.next_id;
        let head = frame_header(CALL_MAGIC, id, len);
        if body.len() <= ONE_WRITE {
            body.splice(0..0, head);
            self.calls.write_all(&body)?;
        } else {
            self.calls.write_all(&head)?;
            self.calls.write_all(&body)?;
        }
        if inline {
            let zeros = [0u8; shm::ALIGN];
            for (b, (_, off, len)) in buffers.iter().zip(&table) {
                self.calls.write_all(b)?;
                self.calls
                    .write_all(&zeros[..next_offset(*off, *len) - off - len])?;
            }
        }
        self.next_id += 1;
        self.unanswered.push_back(id);
        Ok(())
    }

    /// Whether the call arena can take `need` bytes now (made, replaced or grown as needed).
    fn call_arena_ready(&mut self, need: usize) -> bool {
        if std::mem::take(&mut self.call_pinned) {
            // The child still shows the old one: never written again (its memory goes with the
            // child's view of it).
            self.call_arena = None;
        }
        if self.call_arena.is_none() {
            self.call_arena = Arena::new(0).ok();
        }
        self.call_arena
            .as_mut()
            .is_some_and(|a| a.grow(need).is_ok())
    }

    /// Before a call: a reply arena no view here shows (the current one, a free spare, or a
    /// new one), and none kept bigger than `KEEP`.
    fn ready_reply_arena(&mut self) {
        let Some(cur) = &self.reply_arena else { return };
        if !cur.pinned() && cur.size() <= KEEP {
            return;
        }
        let old = self.reply_arena.take().expect("checked above");
        if old.pinned() {
            self.spare.push(old);
        }
        self.spare.retain(|a| a.pinned() || a.size() <= KEEP);
        self.reply_arena = match self.spare.iter().position(|a| !a.pinned()) {
            Some(i) => Some(self.spare.swap_remove(i)),
            None => Arena::new(0).ok(),
        };
        while self.spare.len() > MAX_SPARE {
            self.spare.remove(0);
        }
    }

    /// After a call: an arena bigger than `KEEP` is given back.
    fn trim_arenas(&mut self) {
        if self.call_arena.as_ref().is_some_and(|a| a.size() > KEEP) {
            self.call_arena = None;
        }
    }

    /// A reply's status, bytes and out-of-band buffers. A reply with `WITH_BUFFERS` in its
    /// status has a body: flags (1: a view of the call arena outlived the call), the reply
    /// arena's size (u64), the number of buffers (u32), the bytes' length (u64), one entry per
    /// buffer (where (u8: 0 in the frame, 1 in the reply arena), offset (u64), length (u64)), the
    /// bytes, then the buffers sent in the frame. Err: a body that does not hold together.
    fn unpack(&mut self, status: i64, data: Vec<u8>) -> Result<(i64, Vec<u8>, Vec<Piece>), String> {
        if status & WITH_BUFFERS == 0 {
            return Ok((status, data, Vec::new()));
        }
        let status = status & !WITH_BUFFERS;
        let bad = |what: &str| malformed(&format!("its buffers {what}"));
        let u64_at = |d: &[u8], at: usize| {
            d.get(at..at + 8)
                .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")) as usize)
        };
        if data.len() < 21 {
            return Err(bad("are cut short"));
        }
        if data[0] & 1 != 0 {
            self.call_pinned = true;
        }
        let reply_size = u64_at(&data, 1).expect("checked");
        let n = u32::from_le_bytes(data[9..13].try_into().expect("4 bytes")) as usize;
        let len = u64_at(&data, 13).expect("checked");
        let table_end = n
            .checked_mul(17)
            .and_then(|t| t.checked_add(21))
            .filter(|&t| t <= data.len())
            .ok_or_else(|| bad("are cut short"))?;
        let bytes_end = table_end
            .checked_add(len)
            .filter(|&e| e <= data.len())
            .ok_or_else(|| bad("are cut short"))?;
        let mut table = Vec::with_capacity(n);
        for i in 0..n {
            let at = 21 + i * 17;
            let off = u64_at(&data, at + 1).expect("checked");
            let len = u64_at(&data, at + 9).expect("checked");
            table.push((data[at], off, len));
        }
        if table.iter().any(|(kind, ..)| *kind == 1) {
            let arena = self
                .reply_arena
                .as_mut()
                .ok_or_else(|| bad("name a reply arena it was not given"))?;
            arena
                .adopt(reply_size)
                .map_err(|e| bad(&format!("could not be mapped ({e})")))?;
        }
        let bytes = data[table_end..bytes_end].to_vec();
        let in_frame = table
            .iter()
            .any(|(kind, ..)| *kind == 0)
            .then(|| Arc::new(Memory::heap(data)));
        let mut pieces = Vec::with_capacity(n);
        for (kind, off, len) in table {
            let piece = match (kind, &in_frame) {
                (0, Some(mem)) => off
                    .checked_add(bytes_end)
                    .and_then(|at| Piece::new(mem, at, len)),
                (1, _) => self.reply_arena.as_ref().and_then(|a| a.piece(off, len)),
                _ => None,
            };
            pieces.push(piece.ok_or_else(|| bad("lie outside the memory they name"))?);
        }
        Ok((status, bytes, pieces))
    }

    /// Send one frame (the setup is id 0, calls count up from 1).
    fn send(&mut self, payload: &[u8]) -> io::Result<()> {
        let len = u32::try_from(payload.len())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a call over 4 GiB"))?;
        let id = self.next_id;
        let mut head = Vec::with_capacity(16 + payload.len().min(ONE_WRITE));
        head.extend_from_slice(&frame_header(CALL_MAGIC, id, len));
        if payload.len() <= ONE_WRITE {
            head.extend_from_slice(payload);
            self.calls.write_all(&head)?;
        } else {
            self.calls.write_all(&head)?;
            self.calls.write_all(payload)?;
        }
        self.next_id += 1;
        self.unanswered.push_back(id);
        Ok(())
    }

    /// Take back a call written ahead (see `Later`).
    fn send_skip(&mut self, id: u64) -> io::Result<()> {
        self.calls.write_all(&frame_header(SKIP_MAGIC, id, 0))
    }

    /// Wait for the reply to the oldest unanswered frame: spin a little (if `spin`), then sleep
    /// in `poll` on the reply pipe and the pidfd, until the reply is whole, the process has
    /// ended, `deadline` passes or `cancelled` is raised. Meanwhile, a call of `later` whose
    /// awaiting side cancelled it is taken back.
    fn wait(
        &mut self,
        spin: bool,
        deadline: Option<Instant>,
        cancelled: Option<&AtomicBool>,
        later: &mut [Later],
        recheck_at: Option<Instant>,
    ) -> Wait {
        let start = Instant::now();
        let mut n = 0u32;
        loop {
            let open = self.fill();
            match self.parse() {
                Parsed::Reply(status, data) => return Wait::Reply(status, data),
                Parsed::Malformed(why) => return Wait::Malformed(why),
                Parsed::Partial => {}
            }
            if !open {
                return Wait::Gone;
            }
            if spin && start.elapsed() < REPLY_SPIN {
                n = n.wrapping_add(1);
                if n.is_multiple_of(16) {
                    std::thread::yield_now();
                } else {
                    std::hint::spin_loop();
                }
                continue;
            }
            if cancelled.is_some_and(|c| c.load(Ordering::Acquire)) {
                return Wait::Cancelled;
            }
            let mut watching = cancelled.is_some();
            for l in later.iter_mut().filter(|l| !l.taken_back) {
                if l.flag.load(Ordering::Acquire) {
                    // A failed write means the child is gone: the next poll sees it.
                    l.taken_back = self.send_skip(l.id).is_ok();
                } else {
                    watching = true;
                }
            }
            let mut sleep: Option<Duration> = watching.then_some(CANCEL_CHECK);
            if let Some(at) = recheck_at.filter(|_| watching) {
                let left = at.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Wait::Recheck;
                }
                sleep = Some(sleep.map_or(left, |s| s.min(left)));
            }
            if self.pidfd.is_none() {
                sleep = Some(sleep.map_or(DEATH_CHECK, |s| s.min(DEATH_CHECK)));
            }
            if let Some(d) = deadline {
                let left = d.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Wait::TimedOut;
                }
                sleep = Some(sleep.map_or(left, |s| s.min(left)));
            }
            // Round up to whole milliseconds: a poll that ends early would only loop again.
            let ms = sleep.map_or(-1, |s| {
                s.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32
            });
            let (_, ended) = poll2(self.replies.as_raw_fd(), self.pidfd.as_ref(), ms);
            let ended = ended || (self.pidfd.is_none() && self.has_ended());
            if ended {
                // Whatever it wrote before it ended is in the pipe: a whole reply still counts.
                self.fill();
                return match self.parse() {
                    Parsed::Reply(status, data) => Wait::Reply(status, data),
                    Parsed::Malformed(why) => Wait::Malformed(why),
                    Parsed::Partial => Wait::Gone,
                };
            }
        }
    }

    /// Read what the reply pipe holds now (or until a whole frame is here); false at EOF (or on
    /// an error: the pipe is done).
    fn fill(&mut self) -> bool {
        let fd = self.replies.as_raw_fd();
        loop {
            // Grow by what a whole frame still needs (its length checked by `parse` first),
            // at most `READ_AHEAD` ahead of what arrived; by 64 KiB when no header is here yet.
            let want = self.frame_len().map_or(ONE_WRITE, |total| {
                total
                    .saturating_sub(self.inbox.len())
                    .clamp(ONE_WRITE, READ_AHEAD)
            });
            self.inbox.reserve(want);
            let spare = self.inbox.spare_capacity_mut();
            let r = unsafe { libc::read(fd, spare.as_mut_ptr().cast(), spare.len()) };
            if r > 0 {
                unsafe { self.inbox.set_len(self.inbox.len() + r as usize) };
                if self
                    .frame_len()
                    .is_some_and(|total| self.inbox.len() >= total)
                {
                    // A whole frame is here: no need for the read that would say "nothing more".
                    return true;
                }
                continue;
            }
            if r == 0 {
                return false;
            }
            return match io::Error::last_os_error().kind() {
                io::ErrorKind::WouldBlock => true,
                io::ErrorKind::Interrupted => continue,
                _ => false,
            };
        }
    }

    /// The whole length (header included) of the frame at the front of the inbox, once its
    /// header is here and its length is believable.
    fn frame_len(&mut self) -> Option<usize> {
        if self.front.is_none() {
            let head = self.inbox.get(..REPLY_HEADER)?;
            if &head[..4] != REPLY_MAGIC {
                return None;
            }
            let len = u32::from_le_bytes(head[12..16].try_into().ok()?) as usize;
            if len > CHECKED_LENGTH && !self.could_hold(len) {
                return None;
            }
            self.front = Some(REPLY_HEADER + len);
        }
        self.front
    }

    /// Whether the child's address space could hold `len` bytes (true when it cannot be read).
    fn could_hold(&self, len: usize) -> bool {
        self.statm(0)
            .is_none_or(|size| size == 0 || len as u64 <= size)
    }

    /// The reply at the front of the inbox, checked.
    fn parse(&mut self) -> Parsed {
        let Some(head) = self.inbox.get(..REPLY_HEADER) else {
            if !self.inbox.is_empty()
                && !REPLY_MAGIC.starts_with(&self.inbox[..self.inbox.len().min(4)])
            {
                return Parsed::Malformed(malformed(&format!(
                    "it does not start with rustpool's frame marker: {}",
                    preview(&self.inbox)
                )));
            }
            return Parsed::Partial;
        };
        if &head[..4] != REPLY_MAGIC {
            return Parsed::Malformed(malformed(&format!(
                "it does not start with rustpool's frame marker: {}",
                preview(head)
            )));
        }
        let id = u64::from_le_bytes(head[4..12].try_into().expect("8 bytes"));
        let len = u32::from_le_bytes(head[12..16].try_into().expect("4 bytes")) as usize;
        let status = i64::from(head[16]);
        if self.frame_len().is_none() {
            return Parsed::Malformed(malformed(&format!(
                "it claims {len} bytes, more than the worker process holds"
            )));
        }
        let expected = self.unanswered.front().copied();
        if expected != Some(id) {
            let awaited = expected.map_or("none".to_string(), |e| e.to_string());
            return Parsed::Malformed(malformed(&format!(
                "it answers call {id} where call {awaited} was awaited"
            )));
        }
        let plain = status & !WITH_BUFFERS;
        let known = matches!(plain, 0 | 1 | UNLOADABLE)
            || (id == 0 && status == BROKEN)
            || (id != 0 && plain == CANCELLED);
        if !known {
            return Parsed::Malformed(malformed(&format!("unknown status {status}")));
        }
        if self.inbox.len() < REPLY_HEADER + len {
            return Parsed::Partial;
        }
        let rest = self.inbox.split_off(REPLY_HEADER + len);
        let mut data = std::mem::replace(&mut self.inbox, rest);
        data.drain(..REPLY_HEADER);
        self.unanswered.pop_front();
        self.front = None;
        Parsed::Reply(status, data)
    }

    /// Whether the process has ended (reaped by this look if so).
    fn has_ended(&mut self) -> bool {
        !matches!(self.process.try_wait(), Ok(None))
    }

    /// Field `i` of the child's `/proc/<pid>/statm`, in bytes (None when it cannot be read).
    #[cfg(target_os = "linux")]
    fn statm(&self, i: usize) -> Option<u64> {
        let statm = std::fs::read_to_string(format!("/proc/{}/statm", self.process.id())).ok()?;
        let pages: u64 = statm.split_whitespace().nth(i)?.parse().ok()?;
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        Some(pages * u64::try_from(page).ok()?)
    }

    /// No `/proc` here: sizes are unknown. `max_rss` is refused when the pool is made; a reply
    /// that claims more than the child holds is believed, and, like a reply that stops half way,
    /// its call ends at its timeout, at a kill on cancel or when the child dies.
    #[cfg(not(target_os = "linux"))]
    fn statm(&self, _i: usize) -> Option<u64> {
        None
    }

    /// Resident memory of the child, in bytes (None when it cannot be read).
    fn rss(&self) -> Option<u64> {
        self.statm(1)
    }

    /// The fds this side holds for the child (its pipes, its pidfd).
    fn fds(&self) -> Vec<RawFd> {
        let mut fds = vec![self.calls.as_raw_fd(), self.replies.as_raw_fd()];
        fds.extend(self.pidfd.as_ref().map(AsRawFd::as_raw_fd));
        fds
    }

    /// Why no reply came: the child broke the protocol (`malformed`: it is killed) or is gone.
    fn lost(self, malformed: Option<String>) -> String {
        match malformed {
            Some(why) => {
                self.kill();
                why
            }
            None => self.death(),
        }
    }

    /// Why the child is gone. A child that closed its end of the reply pipe and still runs is
    /// given a moment to end by itself, then killed.
    fn death(mut self) -> String {
        if !self.has_ended() {
            let _ = poll2(-1, self.pidfd.as_ref(), 100);
        }
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

    /// Kill the child and wait for it.
    fn kill(mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }

    /// The pool is done with this child: EOF ends it; wait for it.
    fn close(self) {
        let Child {
            mut process,
            calls,
            replies,
            ..
        } = self;
        drop((calls, replies));
        let _ = process.wait();
    }
}

/// A worker process, as `std::process::Child` would hold it (the same calls: `id`, `try_wait`,
/// `kill`, `wait`), made without running this process's `pthread_atfork` handlers.
///
/// Why not `std::process::Command`: with a `pre_exec` it forks through libc's `fork()`, which
/// runs every atfork handler registered in this process. OpenBLAS (numpy) registers one that
/// shuts its thread pool down; run while a BLAS call computes on another thread (a numpy
/// function that "auto" runs on a thread, say), it leaves that call spinning for ever. Python's
/// own `subprocess` avoids them too (vfork). So on Linux the child is made by the raw `clone`
/// syscall and runs only async-signal-safe calls before `execve`; elsewhere by
/// `std::process::Command` (macOS has no `PR_SET_PDEATHSIG` to set in between anyway).
struct Proc {
    #[cfg(target_os = "linux")]
    pid: libc::pid_t,
    #[cfg(target_os = "linux")]
    status: Option<std::process::ExitStatus>,
    #[cfg(not(target_os = "linux"))]
    child: std::process::Child,
}

impl Proc {
    /// Start `argv` with `call_r` as its fd 3, `reply_w` as its fd 4 and /dev/null as stdin.
    #[cfg(target_os = "linux")]
    fn spawn(argv: &[String], call_r: RawFd, reply_w: RawFd) -> io::Result<Proc> {
        use std::ffi::CString;
        use std::os::unix::ffi::OsStrExt;
        let cstr =
            |b: &[u8]| CString::new(b).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e));
        // Everything the child needs is made here, before the fork: it must not allocate.
        let args: Vec<CString> = argv
            .iter()
            .map(|a| cstr(a.as_bytes()))
            .collect::<io::Result<_>>()?;
        let env: Vec<CString> = std::env::vars_os()
            .map(|(k, v)| cstr(&[k.as_bytes(), b"=", v.as_bytes()].concat()))
            .collect::<io::Result<_>>()?;
        let mut argp: Vec<*const libc::c_char> = args.iter().map(|a| a.as_ptr()).collect();
        argp.push(std::ptr::null());
        let mut envp: Vec<*const libc::c_char> = env.iter().map(|e| e.as_ptr()).collect();
        envp.push(std::ptr::null());
        let devnull = std::fs::File::open("/dev/null")?;
        let null_fd = devnull.as_raw_fd();
        let parent = std::process::id() as libc::pid_t;
        let mut empty: libc::sigset_t = unsafe { std::mem::zeroed() };
        unsafe { libc::sigemptyset(&mut empty) };
        let pid = unsafe {
            libc::syscall(
                libc::SYS_clone,
                libc::SIGCHLD as libc::c_ulong,
                0usize,
                0usize,
                0usize,
                0usize,
            )
        };
        if pid < 0 {
            return Err(io::Error::last_os_error());
        }
        if pid == 0 {
            // The child: async-signal-safe calls only, then exec (or _exit).
            unsafe {
                // Move both ends above fd 4 first: one may already be fd 3 or 4 (and
                // `dup2(fd, fd)` would keep its close-on-exec flag). The worker makes 3 and 4
                // non-inheritable once it runs.
                let (a, b) = (
                    libc::fcntl(call_r, libc::F_DUPFD, 10),
                    libc::fcntl(reply_w, libc::F_DUPFD, 10),
                );
                if a < 0
                    || b < 0
                    || libc::dup2(a, 3) < 0
                    || libc::dup2(b, 4) < 0
                    || libc::dup2(null_fd, 0) < 0
                {
                    libc::_exit(126);
                }
                libc::close(a);
                libc::close(b);
                // Die with the parent, even in the middle of a call.
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
                if libc::getppid() != parent {
                    libc::_exit(1); // the parent died before the line above took effect
                }
                libc::pthread_sigmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
                libc::execve(argp[0], argp.as_ptr(), envp.as_ptr());
                libc::_exit(127);
            }
        }
        drop(devnull);
        Ok(Proc {
            pid: pid as libc::pid_t,
            status: None,
        })
    }

    #[cfg(not(target_os = "linux"))]
    fn spawn(argv: &[String], call_r: RawFd, reply_w: RawFd) -> io::Result<Proc> {
        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..]).stdin(Stdio::null());
        unsafe {
            cmd.pre_exec(move || {
                // Only async-signal-safe calls here (see the Linux spawn).
                let (a, b) = (
                    libc::fcntl(call_r, libc::F_DUPFD, 10),
                    libc::fcntl(reply_w, libc::F_DUPFD, 10),
                );
                if a < 0 || b < 0 || libc::dup2(a, 3) < 0 || libc::dup2(b, 4) < 0 {
                    return Err(io::Error::last_os_error());
                }
                libc::close(a);
                libc::close(b);
                // No death signal here: the child ends at EOF on fd 3 (the parent's death
                // closes the other end), so one busy in a long call outlives a killed parent
                // until it ends.
                Ok(())
            });
        }
        Ok(Proc {
            child: cmd.spawn()?,
        })
    }

    #[cfg(target_os = "linux")]
    fn id(&self) -> u32 {
        self.pid as u32
    }

    #[cfg(not(target_os = "linux"))]
    fn id(&self) -> u32 {
        self.child.id()
    }

    #[cfg(target_os = "linux")]
    fn reap(&mut self, flags: libc::c_int) -> io::Result<Option<std::process::ExitStatus>> {
        if let Some(status) = self.status {
            return Ok(Some(status));
        }
        let mut raw = 0;
        loop {
            let r = unsafe { libc::waitpid(self.pid, &mut raw, flags) };
            if r == self.pid {
                let status = std::process::ExitStatus::from_raw(raw);
                self.status = Some(status);
                return Ok(Some(status));
            }
            if r == 0 {
                return Ok(None);
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }

    #[cfg(target_os = "linux")]
    fn try_wait(&mut self) -> io::Result<Option<std::process::ExitStatus>> {
        self.reap(libc::WNOHANG)
    }

    #[cfg(not(target_os = "linux"))]
    fn try_wait(&mut self) -> io::Result<Option<std::process::ExitStatus>> {
        self.child.try_wait()
    }

    #[cfg(target_os = "linux")]
    fn wait(&mut self) -> io::Result<std::process::ExitStatus> {
        self.reap(0)
            .map(|s| s.expect("waitpid without WNOHANG returns a status"))
    }

    #[cfg(not(target_os = "linux"))]
    fn wait(&mut self) -> io::Result<std::process::ExitStatus> {
        self.child.wait()
    }

    /// SIGKILL, unless it was reaped already (then its pid may be another process's).
    #[cfg(target_os = "linux")]
    fn kill(&mut self) -> io::Result<()> {
        if self.status.is_none() && unsafe { libc::kill(self.pid, libc::SIGKILL) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    #[cfg(not(target_os = "linux"))]
    fn kill(&mut self) -> io::Result<()> {
        self.child.kill()
    }
}

/// The message of a call whose reply broke the protocol.
fn malformed(why: &str) -> String {
    format!("the worker process sent a malformed reply ({why}); it was killed")
}

/// The first bytes of `bytes`, escaped, for a message.
fn preview(bytes: &[u8]) -> String {
    let head: String = bytes[..bytes.len().min(16)]
        .iter()
        .flat_map(|b| std::ascii::escape_default(*b))
        .map(char::from)
        .collect();
    format!("b\"{head}\"")
}

fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 || unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A pidfd of process `pid` (readable once it has ended), where the kernel has them (5.3+).
#[cfg(target_os = "linux")]
fn pidfd_open(pid: u32) -> Option<OwnedFd> {
    use std::os::fd::FromRawFd;
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Pidfds are Linux's: elsewhere a child's death is looked for with `waitpid` (`DEATH_CHECK`).
#[cfg(not(target_os = "linux"))]
fn pidfd_open(_pid: u32) -> Option<OwnedFd> {
    None
}

/// Wait up to `ms` milliseconds (-1: no limit) until `fd` can be read (or is at EOF) or the
/// process of `pidfd` has ended: (fd ready, process ended). A negative `fd` is not watched.
fn poll2(fd: RawFd, pidfd: Option<&OwnedFd>, ms: i32) -> (bool, bool) {
    let mut p = [
        libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        },
        libc::pollfd {
            fd: pidfd.map_or(-1, |p| p.as_raw_fd()),
            events: libc::POLLIN,
            revents: 0,
        },
    ];
    let r = unsafe { libc::poll(p.as_mut_ptr(), 2, ms) };
    // On error (EINTR), say "not yet": the caller loops.
    (r > 0 && p[0].revents != 0, r > 0 && p[1].revents != 0)
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
    options: Options,
    fallback: Option<super::fallback::Fallback>,
) -> PyResult<WorkerPool> {
    let init = options
        .initializer
        .as_ref()
        .map(|b| PyBytes::new(py, b).unbind());
    let (argv, first_frame): (Vec<String>, Vec<u8>) = crossing(py)?
        .getattr("process_boot")?
        .call1((init,))?
        .extract()?;
    let boot = Arc::new(Boot {
        argv,
        first_frame,
        options,
    });
    WorkerPool::start(
        "process",
        workers,
        name_prefix,
        fallback,
        move |_, rx, shared| {
            // Keep a Python thread state for the thread's life: settling calls attaches often.
            crate::attach::thread_started_plain();
            serve(&boot, &rx, &shared, workers);
            crate::attach::thread_stopping();
        },
    )
}

/// Calls written to a child before its replies are read, at most this many bytes (more could
/// fill both pipes at once and deadlock).
const PIPELINE_BYTES: usize = 32 * 1024;
/// More than one call is written ahead to a child only while the last call took less than this:
/// a call written ahead cannot be taken back (cancelled, or given to an idle worker).
const PIPELINE_BELOW_NS: u64 = 200_000;

/// Take calls until the pool is shut down and the queue is empty. As the subinterpreter workers
/// do, one attach to the main interpreter settles what finished and claims the next calls (a
/// small share of a long queue while calls are short); what a batch finished is handed over
/// before each next call (`Shared::hand_over`), so no result waits for the rest of its batch.
fn serve(boot: &Boot, rx: &crossbeam_channel::Receiver<Task>, shared: &Shared, workers: usize) {
    // Ready before this worker takes a call: until then the calls go to workers that are.
    let mut child = start_child(boot, shared).ok();
    let mut done: Done = Vec::new();
    while let Some(next) = next_calls(rx, shared, workers, done.is_empty()) {
        let mut claimed: VecDeque<Task> =
            Python::attach(|py| settle_and_claim(py, shared, &mut done, next));
        let mut last_check = Instant::now();
        while !claimed.is_empty() {
            if last_check.elapsed() >= RECHECK_AFTER {
                // The batch has run for a while (it was claimed for short calls): settle what it
                // finished, and drop the claimed calls cancelled since (they are never sent).
                Python::attach(|py| settle_and_recheck(py, shared, &mut done, &mut claimed));
                last_check = Instant::now();
            } else {
                shared.hand_over(&mut done);
            }
            run_some(boot, shared, &mut child, &mut claimed, &mut done);
        }
    }
    if let Some(c) = child {
        forget_child(shared, &c);
        c.close();
    }
}

/// Take a child out of the pool's registry before it is reaped (after that its pid may be
/// another process's, which an abort must not kill).
fn forget_child(shared: &Shared, c: &Child) {
    shared.children.lock().remove(&c.process.id());
}

/// A child let go while the pool goes on (a new one takes its place at the next call): counted
/// as replaced, and as crashed when it died by itself. Not counted once the pool is aborted.
fn let_go(shared: &Shared, died: bool) {
    if shared.aborting() {
        return;
    }
    shared.replaced.fetch_add(1, Ordering::Relaxed);
    if died {
        shared.crashed.fetch_add(1, Ordering::Relaxed);
    }
}

/// The status of a call whose child died while it ran: cancelled when the pool was aborted
/// (Ctrl-C killed the child), else a crash.
fn death_status(shared: &Shared) -> i64 {
    if shared.aborting() {
        CANCELLED
    } else {
        CRASHED
    }
}

/// Start a worker process and wait for its setup reply. Err: why it cannot be used (an
/// initializer that raised also marks the pool broken).
fn start_child(boot: &Boot, shared: &Shared) -> Result<Child, String> {
    let mut c =
        Child::spawn(boot).map_err(|e| format!("could not start a worker process ({e})"))?;
    shared.children.lock().insert(c.process.id(), c.fds());
    match c.wait(false, None, None, &mut [], None) {
        Wait::Reply(0, _) => Ok(c),
        Wait::Reply(BROKEN, data) => {
            let tb = String::from_utf8_lossy(&data);
            let msg = format!(
                "A process in the pool failed in its initializer; the pool is not usable anymore. The initializer raised:\n{tb}"
            );
            let _ = shared.broken.set(msg.clone());
            forget_child(shared, &c);
            c.kill();
            Err(msg)
        }
        Wait::Malformed(why) => {
            forget_child(shared, &c);
            Err(format!("{}, while it started", c.lost(Some(why))))
        }
        _ => {
            forget_child(shared, &c);
            Err(format!("{}, while it started", c.death()))
        }
    }
}

/// Send the first calls of `claimed` to the child and collect their replies: one call, or, while
/// calls are short, as many as fit in `PIPELINE_BYTES`. A call that may not begin any more (see
/// `may_begin`) is never sent. If the child dies, the call it was running fails with `CRASHED`;
/// the calls sent after it never started and go back to the front of `claimed`, for a new child.
fn run_some(
    boot: &Boot,
    shared: &Shared,
    child: &mut Option<Child>,
    claimed: &mut VecDeque<Task>,
    done: &mut Done,
) {
    if let Some(msg) = shared.broken.get() {
        for task in claimed.drain(..) {
            done.push((task, BROKEN, msg.clone().into_bytes()));
        }
        return;
    }
    // Calls that may not begin are settled as cancelled, never sent.
    while let Some(task) = claimed.pop_front() {
        if let Some(task) = may_begin(shared, task, done) {
            claimed.push_front(task);
            break;
        }
    }
    let Some(task) = claimed.front() else { return };
    if task.payload.is_none() {
        let task = claimed.pop_front().expect("front exists");
        let msg = b"rustpool test panic inside a process worker".to_vec();
        done.push((task, PANICKED, msg));
        return;
    }
    // A child that died while idle (killed from outside, say) is replaced; no call fails for it.
    if let Some(mut c) = child.take() {
        if matches!(c.process.try_wait(), Ok(None)) {
            *child = Some(c);
        } else {
            forget_child(shared, &c);
            let_go(shared, true);
        }
    }
    let mut c = match child.take() {
        Some(c) => c,
        None => match start_child(boot, shared) {
            Ok(c) => c,
            Err(why) => {
                // A broken pool fails every claimed call on the next pass (the check above).
                if shared.broken.get().is_none() {
                    let task = claimed.pop_front().expect("front exists");
                    done.push((task, CRASHED, why.into_bytes()));
                }
                return;
            }
        },
    };
    // Send what fits in the pipes, no more than the child has left to run, and more than one
    // call only while calls are short (a long call must not hold back the ones behind it).
    let room = boot
        .options
        .max_tasks
        .map_or(usize::MAX, |m| m.saturating_sub(c.tasks).max(1));
    let room = if shared.last_call_ns.load(Ordering::Relaxed) < PIPELINE_BELOW_NS {
        room
    } else {
        1
    };
    let mut sent = 0;
    let mut bytes = 0;
    let mut later: Vec<Later> = Vec::new();
    for task in claimed.iter().take(room) {
        let Some(payload) = &task.payload else { break };
        // A call with buffers goes alone: the call arena holds one call's at a time.
        let alone = !task.buffers.is_empty();
        if sent > 0 && (alone || bytes + payload.len() > PIPELINE_BYTES || task.job.cancel_seen()) {
            break;
        }
        if c.send_call(payload, &task.buffer_slices()).is_err() {
            break;
        }
        if sent > 0 {
            later.push(Later {
                pos: sent,
                id: c.next_id - 1,
                flag: task.job.cancelled.clone().unwrap_or_default(),
                taken_back: false,
            });
        }
        sent += 1;
        bytes += payload.len();
        if alone {
            break;
        }
    }
    if sent == 0 {
        // Nothing could be sent: the child is gone.
        let task = claimed.pop_front().expect("front exists");
        forget_child(shared, &c);
        let_go(shared, true);
        done.push((task, death_status(shared), c.death().into_bytes()));
        return;
    }
    let mut began = Instant::now();
    for i in 0..sent {
        // The calls written behind this one.
        let behind = later.partition_point(|l| l.pos <= i);
        // The calls before this one are done: their results must not wait for it.
        shared.hand_over(done);
        let task = claimed.front().expect("sent calls are queued");
        // A call's time starts when the one before it ends (now).
        let deadline = task.job.timeout.map(|t| Instant::now() + t);
        let kill_flag = task
            .job
            .cancelled
            .as_deref()
            .filter(|_| task.job.kill_on_cancel);
        // Spin only for a lone call (a short one is then done with no wake-up); while a batch
        // runs, the cores are better left to the child and the submitter.
        // The calls written behind this one were sent as short ones: once this one has run for
        // `RECHECK_AFTER`, look now and then (with the GIL) whether their awaiting side gave up
        // on them, and take those back.
        let mut recheck_at = (behind < later.len()).then(|| Instant::now() + RECHECK_AFTER);
        let waited = loop {
            match c.wait(
                sent == 1,
                deadline,
                kill_flag,
                &mut later[behind..],
                recheck_at,
            ) {
                Wait::Recheck => {
                    Python::attach(|py| {
                        for l in later[behind..].iter().filter(|l| !l.taken_back) {
                            if !claimed[l.pos - i].job.still_wanted(py) {
                                l.flag.store(true, Ordering::Release);
                            }
                        }
                    });
                    recheck_at = Some(Instant::now() + CANCEL_CHECK);
                }
                other => break other,
            }
        };
        let task = claimed.front().expect("sent calls are queued");
        let reply = match waited {
            Wait::Recheck => unreachable!("handled above"),
            Wait::Reply(status, data) => Ok((status, data)),
            Wait::Gone => Err(None),
            Wait::Malformed(why) => Err(Some(why)),
            Wait::TimedOut => {
                let t = task.job.timeout.unwrap_or_default();
                let msg = format!(
                    "the call did not finish within its timeout of {}s; its worker process was killed",
                    t.as_secs_f64()
                );
                let task = claimed.pop_front().expect("front exists");
                forget_child(shared, &c);
                c.kill();
                let_go(shared, false);
                done.push((task, TIMED_OUT, msg.into_bytes()));
                return;
            }
            Wait::Cancelled => {
                let task = claimed.pop_front().expect("front exists");
                forget_child(shared, &c);
                c.kill();
                let_go(shared, false);
                done.push((task, CANCELLED, Vec::new()));
                return;
            }
        };
        let mut task = claimed.pop_front().expect("sent calls are queued");
        shared.timed(began.elapsed());
        began = Instant::now();
        let reply = reply.and_then(|(status, data)| c.unpack(status, data).map_err(Some));
        match reply {
            Ok((status, data, pieces)) => {
                c.tasks += 1;
                task.returned = pieces;
                done.push((task, status, data));
            }
            Err(malformed) => {
                // The child died running this call (or broke the protocol: it is killed); the
                // ones sent after it never started.
                forget_child(shared, &c);
                let_go(shared, true);
                done.push((task, death_status(shared), c.lost(malformed).into_bytes()));
                return;
            }
        }
    }
    c.trim_arenas();
    let spent = boot.options.max_tasks.is_some_and(|m| c.tasks >= m);
    let too_big = boot
        .options
        .max_rss
        .is_some_and(|cap| c.rss().is_some_and(|rss| rss > cap));
    if spent || too_big {
        // Let it go; the next call starts a new one.
        forget_child(shared, &c);
        c.close();
        let_go(shared, false);
    } else {
        *child = Some(c);
    }
}
