//! The locks of rustpool's Rust side: std's, behind the small API the code was written against.
//!
//! Why not parking_lot: every parking_lot lock parks its waiters in one process-wide hash table
//! whose buckets have locks of their own. A thread of the parent that holds a bucket's lock at the
//! moment of `os.fork()` (it was parking or waking, maybe preempted there) leaves it held in the
//! child forever, so any lock of the child that hashes to that bucket deadlocks: a forked child's
//! new pool hung at exit in 1 run of 77 under load, on a `Condvar` wait and an unrelated
//! mutex. std's locks are futex words inside each lock, with no shared state: a lock made in the
//! child is free whatever the parent's threads were doing. Poisoning is ignored (a panic in a
//! pool thread is caught and turned into the call's exception; the state it guards stays usable),
//! which is parking_lot's behaviour too.

use std::ops::{Deref, DerefMut};
use std::time::Duration;

pub struct Mutex<T: ?Sized>(std::sync::Mutex<T>);

pub struct MutexGuard<'a, T: ?Sized>(Option<std::sync::MutexGuard<'a, T>>);

impl<T> Mutex<T> {
    pub const fn new(value: T) -> Self {
        Mutex(std::sync::Mutex::new(value))
    }
}

impl<T: ?Sized> Mutex<T> {
    pub fn lock(&self) -> MutexGuard<'_, T> {
        MutexGuard(Some(self.0.lock().unwrap_or_else(|e| e.into_inner())))
    }

    pub fn try_lock(&self) -> Option<MutexGuard<'_, T>> {
        match self.0.try_lock() {
            Ok(g) => Some(MutexGuard(Some(g))),
            Err(std::sync::TryLockError::Poisoned(e)) => Some(MutexGuard(Some(e.into_inner()))),
            Err(std::sync::TryLockError::WouldBlock) => None,
        }
    }
}

impl<T: Default> Default for Mutex<T> {
    fn default() -> Self {
        Mutex::new(T::default())
    }
}

impl<T: ?Sized> Deref for MutexGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        self.0
            .as_deref()
            .expect("a guard holds its lock except inside Condvar::wait")
    }
}

impl<T: ?Sized> DerefMut for MutexGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        self.0
            .as_deref_mut()
            .expect("a guard holds its lock except inside Condvar::wait")
    }
}

#[derive(Default)]
pub struct Condvar(std::sync::Condvar);

impl Condvar {
    pub const fn new() -> Self {
        Condvar(std::sync::Condvar::new())
    }

    pub fn wait<T>(&self, guard: &mut MutexGuard<'_, T>) {
        let g = guard.0.take().expect("a guard holds its lock");
        guard.0 = Some(self.0.wait(g).unwrap_or_else(|e| e.into_inner()));
    }

    pub fn wait_for<T>(&self, guard: &mut MutexGuard<'_, T>, timeout: Duration) {
        let g = guard.0.take().expect("a guard holds its lock");
        let (g, _) = self
            .0
            .wait_timeout(g, timeout)
            .unwrap_or_else(|e| e.into_inner());
        guard.0 = Some(g);
    }

    pub fn notify_one(&self) {
        self.0.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn a_condvar_wait_gives_the_lock_back_and_sees_the_change() {
        let pair = Arc::new((Mutex::new(false), Condvar::new()));
        let other = pair.clone();
        let t = std::thread::spawn(move || {
            *other.0.lock() = true;
            other.1.notify_one();
        });
        let mut ready = pair.0.lock();
        while !*ready {
            pair.1.wait_for(&mut ready, Duration::from_millis(50));
        }
        assert!(*ready);
        drop(ready);
        t.join().unwrap();
        assert!(pair.0.try_lock().is_some());
    }
}
