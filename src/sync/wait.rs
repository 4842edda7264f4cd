//! Cross-process waiting: spin, then yield, then sleep on a futex.
//!
//! An [`Event`] is 8 bytes in shared memory. A waiter (a receiver waiting for
//! "not empty", a sender for "not full") polls its condition: first spinning
//! (the message is usually coming within microseconds, and a cache-line round
//! trip costs ~53 ns), then yielding, and only then sleeping on a futex (a
//! wake-up round trip between processes costs 40-65 us). A notifier makes a
//! syscall only when a waiter has announced itself, so a stream of messages
//! with nobody asleep costs one fence and one load per message.
//!
//! # No lost wake-up
//!
//! The sleeping waiter and the notifier form a Dekker pair:
//!
//! ```text
//! waiter                               notifier
//! s = seq.load(Acquire)                (caller's Release store: condition true)
//! sleepers += 1 (announce)             fence(SeqCst)
//! fence(SeqCst)                        if sleepers != 0 {
//! if ready() { return }                    seq += 1 (Release)
//! futex_wait(seq, s)                       futex_wake(seq) }
//! ```
//!
//! The two SeqCst fences are totally ordered. If the waiter's comes first,
//! the notifier's load sees the announcement and wakes; if the notifier's
//! comes first, the waiter's `ready()` sees the condition and does not sleep.
//! In the first case the notify may fall between the re-check and the
//! `futex_wait`: the kernel compares `seq` with `s`, read *before* the
//! announcement, so it finds `seq != s` and returns at once instead of
//! sleeping. (Nor can `s` already include that increment: the notifier
//! increments only after reading the announcement, which is after `s` was
//! read.) `seq` wraps; a waiter missing exactly 2^32 notifies while being
//! descheduled between its load and its `futex_wait` is not a concern.
//!
//! A waiter that dies while announced (a killed process) leaves `sleepers`
//! above zero: notifies then always make the syscall, which costs time but
//! never correctness.
//!
//! Under `cfg(psyne_loom)` the futex is modelled by a mutex and condition variable
//! with the same semantics, so the loom models below check this argument.

#[cfg(not(psyne_loom))]
use std::sync::atomic::{fence, AtomicU32, Ordering};
use std::time::{Duration, Instant};

#[cfg(psyne_loom)]
use loom::sync::atomic::{fence, AtomicU32, Ordering};

/// Polls of `ready()` with a pause hint between them before yielding. A
/// pause plus one load is ~15-40 ns depending on the CPU, so this is ~3-8 us:
/// long enough to catch a message already on its way (a cache-line round
/// trip is ~53 ns), short against the 40-65 us of a futex round trip.
#[cfg(not(psyne_loom))]
const SPIN: u32 = 200;
/// Polls with `sched_yield` between them before sleeping: ~0.3 us each when
/// nothing else wants the CPU (~10 us in all), and they let another thread
/// run when something does. Together with the spin this stays below the
/// cost of one futex round trip.
#[cfg(not(psyne_loom))]
const YIELD: u32 = 32;
// Under loom one poll of each kind, without pause or yield: the phases are
// bounded loops, so loom needs no yield in them, and a loom yield would
// deprioritise the waiter and hide the interleavings that matter (a model
// built that way missed a deliberately dropped re-check).
#[cfg(psyne_loom)]
const SPIN: u32 = 1;
#[cfg(psyne_loom)]
const YIELD: u32 = 1;

/// A wake-up point in shared memory (8 bytes, `#[repr(C)]`, valid when
/// zeroed).
#[repr(C)]
pub(crate) struct Event {
    /// Bumped by every notify that wakes; the futex word.
    seq: AtomicU32,
    /// Waiters that announced they may sleep.
    sleepers: AtomicU32,
}

#[cfg(not(psyne_loom))]
const _: () = assert!(
    std::mem::size_of::<Event>() == 8 && std::mem::align_of::<Event>() == 4,
    "Event's layout is part of the shared-memory format"
);

impl Event {
    /// An event nobody waits on (all zero, like fresh shared memory).
    #[allow(dead_code)] // In the crate, events live in mapped memory.
    pub(crate) fn new() -> Self {
        Event {
            seq: AtomicU32::new(0),
            sleepers: AtomicU32::new(0),
        }
    }

    /// Waits until `ready()` returns true or `deadline` passes (`None`:
    /// forever). Returns whether `ready()` became true.
    ///
    /// `ready()` must read the condition with Acquire (pairing with the
    /// notifier's Release store) and may be called many times.
    pub(crate) fn wait_until(
        &self,
        ready: impl FnMut() -> bool,
        deadline: Option<Instant>,
    ) -> bool {
        self.wait_phases(ready, deadline, SPIN, YIELD)
    }

    /// [`wait_until`](Self::wait_until) with the phase lengths given (the
    /// tests use `0, 0` to go straight to the futex).
    fn wait_phases(
        &self,
        mut ready: impl FnMut() -> bool,
        deadline: Option<Instant>,
        spin: u32,
        yields: u32,
    ) -> bool {
        let expired = || deadline.is_some_and(|d| Instant::now() >= d);
        for _ in 0..spin {
            if ready() {
                return true;
            }
            #[cfg(not(psyne_loom))]
            std::hint::spin_loop();
        }
        for _ in 0..yields {
            if ready() {
                return true;
            }
            if expired() {
                return false;
            }
            #[cfg(not(psyne_loom))]
            std::thread::yield_now();
        }
        loop {
            // Read before announcing (see the module docs). Acquire: pairs
            // with the Release increment in `notify`, so a waiter that sees
            // an increment also sees the notifier's earlier accesses.
            let s = self.seq.load(Ordering::Acquire);
            let announce = Announce::new(&self.sleepers);
            // SeqCst: the waiter's half of the Dekker pair with the fence in
            // `notify`; orders the announcement before the re-check.
            fence(Ordering::SeqCst);
            if ready() {
                return true;
            }
            let timeout = match deadline {
                None => None,
                Some(d) => match d.checked_duration_since(Instant::now()) {
                    Some(t) if !t.is_zero() => Some(t),
                    _ => return false,
                },
            };
            // Returns on a wake, at once if `seq != s`, on a signal, on
            // timeout, or spuriously: all are "check again".
            sys::futex_wait(&self.seq, s, timeout);
            drop(announce);
            if ready() {
                return true;
            }
            if expired() {
                return false;
            }
        }
    }

    /// Wakes every sleeping waiter, if any. Called by the side that just made
    /// the condition true, after its Release store (of the ring index, say).
    /// Cheap when nobody sleeps: a fence and a load, no syscall.
    pub(crate) fn notify(&self) {
        // SeqCst: the notifier's half of the Dekker pair with the fence in
        // `wait_phases`: orders the caller's store before the load below.
        fence(Ordering::SeqCst);
        if self.sleepers.load(Ordering::Relaxed) != 0 {
            // Release: pairs with the Acquire load of `seq` in
            // `wait_phases`. The change makes a `futex_wait` that has not
            // started yet return at once.
            self.seq.fetch_add(1, Ordering::Release);
            sys::futex_wake(&self.seq);
        }
    }
}

/// A waiter's announcement in `sleepers`, withdrawn on drop (also if
/// `ready()` panics, so notifiers do not make syscalls for nobody forever).
struct Announce<'a>(&'a AtomicU32);

impl<'a> Announce<'a> {
    fn new(sleepers: &'a AtomicU32) -> Self {
        // SeqCst as the announcement in the Dekker pair (the fence after it
        // is what the argument needs; this costs nothing extra on x86).
        sleepers.fetch_add(1, Ordering::SeqCst);
        Announce(sleepers)
    }
}

impl Drop for Announce<'_> {
    fn drop(&mut self) {
        // Relaxed: a notifier that still sees us makes a needless syscall.
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The real futex: `futex(2)`, non-private ops because the word is shared
/// between processes (the private ops key on the address space and would
/// not wake another process).
#[cfg(all(target_os = "linux", not(psyne_loom)))]
mod sys {
    use super::{AtomicU32, Duration};
    use nix::libc;

    /// Sleeps while `*word == expected`, at most `timeout`.
    pub(super) fn futex_wait(word: &AtomicU32, expected: u32, timeout: Option<Duration>) {
        let ts = timeout.map(|t| libc::timespec {
            // Capped: the caller loops until its deadline anyway.
            tv_sec: t.as_secs().min(1 << 30) as libc::time_t,
            tv_nsec: t.subsec_nanos() as libc::c_long,
        });
        let ts_ptr = ts
            .as_ref()
            .map_or(std::ptr::null(), |t| t as *const libc::timespec);
        // SAFETY: `word` is a valid, aligned AtomicU32 that outlives the
        // call; `ts_ptr` is null or points to a timespec on this stack. The
        // kernel only reads both.
        let r = unsafe {
            libc::syscall(
                libc::SYS_futex,
                word.as_ptr(),
                libc::FUTEX_WAIT,
                expected,
                ts_ptr,
            )
        };
        if r != 0 {
            match std::io::Error::last_os_error().raw_os_error() {
                // Signal, value already changed, timeout: check again.
                Some(libc::EINTR | libc::EAGAIN | libc::ETIMEDOUT) => {}
                // No futex (a seccomp filter, say): degrade to polling
                // rather than spinning on a failing syscall.
                _ => std::thread::sleep(
                    Duration::from_micros(50).min(timeout.unwrap_or(Duration::MAX)),
                ),
            }
        }
    }

    /// Wakes every waiter sleeping on `word`.
    pub(super) fn futex_wake(word: &AtomicU32) {
        // SAFETY: as in `futex_wait`; FUTEX_WAKE reads no other argument.
        // Its result (how many woke, or an error) changes nothing here: the
        // waiters re-check their condition.
        unsafe {
            libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAKE, i32::MAX);
        }
    }
}

/// Elsewhere: poll with short sleeps (only Linux matters to psyne).
#[cfg(all(not(target_os = "linux"), not(psyne_loom)))]
mod sys {
    use super::{AtomicU32, Duration};

    pub(super) fn futex_wait(_word: &AtomicU32, _expected: u32, timeout: Option<Duration>) {
        std::thread::sleep(Duration::from_micros(100).min(timeout.unwrap_or(Duration::MAX)));
    }

    pub(super) fn futex_wake(_word: &AtomicU32) {}
}

/// The loom futex: one global mutex and condition variable. The value check
/// and the sleep are atomic with respect to a wake (both hold the mutex), as
/// in the kernel; a wake wakes everyone, which the waiters treat as
/// spurious. Timeouts are ignored (the models wait forever).
#[cfg(psyne_loom)]
mod sys {
    use super::{AtomicU32, Duration, Ordering};
    use loom::sync::{Condvar, Mutex};

    loom::lazy_static! {
        static ref PARK: (Mutex<()>, Condvar) = (Mutex::new(()), Condvar::new());
    }

    pub(super) fn futex_wait(word: &AtomicU32, expected: u32, _timeout: Option<Duration>) {
        let guard = PARK.0.lock().unwrap();
        // Relaxed: the mutex orders this after any wake's increment that
        // took the mutex first.
        if word.load(Ordering::Relaxed) == expected {
            drop(PARK.1.wait(guard).unwrap());
        }
    }

    pub(super) fn futex_wake(_word: &AtomicU32) {
        let _guard = PARK.0.lock().unwrap();
        PARK.1.notify_all();
    }
}

#[cfg(all(test, not(psyne_loom)))]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;
    use std::thread;

    #[test]
    fn wakes_a_sleeping_waiter() {
        let (ev, flag) = (Arc::new(Event::new()), Arc::new(AtomicBool::new(false)));
        let (e, f) = (ev.clone(), flag.clone());
        let setter = thread::spawn(move || {
            thread::sleep(Duration::from_millis(50)); // the waiter sleeps by now
            f.store(true, Ordering::Release);
            e.notify();
        });
        assert!(ev.wait_until(|| flag.load(Ordering::Acquire), None));
        setter.join().unwrap();
        assert_eq!(ev.sleepers.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn deadline_passes() {
        let ev = Event::new();
        let (start, wait) = (Instant::now(), Duration::from_millis(30));
        assert!(!ev.wait_until(|| false, Some(start + wait)));
        assert!(start.elapsed() >= wait);
        assert_eq!(ev.sleepers.load(Ordering::Relaxed), 0);
        // A deadline already gone still polls.
        assert!(ev.wait_until(|| true, Some(start)));
        assert!(!ev.wait_until(|| false, Some(start)));
    }

    #[test]
    fn notify_without_sleepers_makes_no_wake() {
        let ev = Event::new();
        for _ in 0..1_000_000 {
            ev.notify();
        }
        assert_eq!(ev.seq.load(Ordering::Relaxed), 0, "no wake was issued");
    }

    /// Two threads hand a counter back and forth; a lost wake-up hangs.
    fn ping_pong_with(rounds: u32, spin: u32, yields: u32) {
        let evs = Arc::new([Event::new(), Event::new()]);
        let words = Arc::new([AtomicU32::new(0), AtomicU32::new(0)]);
        let side = |me: usize| {
            let (evs, words) = (evs.clone(), words.clone());
            thread::spawn(move || {
                let send = |i| {
                    words[me].store(i, Ordering::Release);
                    evs[me].notify();
                };
                let other = &words[1 - me];
                for i in 1..=rounds {
                    if me == 0 {
                        send(i);
                    }
                    let ready = || other.load(Ordering::Acquire) >= i;
                    assert!(evs[1 - me].wait_phases(ready, None, spin, yields));
                    if me == 1 {
                        send(i);
                    }
                }
            })
        };
        let (a, b) = (side(0), side(1));
        a.join().unwrap();
        b.join().unwrap();
        assert_eq!(words[1].load(Ordering::Relaxed), rounds);
    }

    #[test]
    fn ping_pong() {
        ping_pong_with(10_000, SPIN, YIELD);
        ping_pong_with(10_000, 0, 0); // every wait goes through the futex
    }

    const CHILD: &str = "PSYNE_WAIT_TEST_CHILD";

    /// Maps the shared file (for the rest of the test process): the
    /// event, then a flag word, then a word the child sets once woken.
    fn shared(path: &str) -> (&'static Event, &'static AtomicU32, &'static AtomicU32) {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path);
        let map = Box::leak(Box::new(memmap2::MmapRaw::map_raw(&file.unwrap()).unwrap()));
        assert!(map.len() >= 16);
        let p = map.as_mut_ptr();
        // SAFETY: the mapping is page-aligned, at least 16 bytes and never
        // unmapped; it is only accessed through atomics, and an all-zero
        // Event is valid.
        unsafe {
            (
                &*p.cast::<Event>(),
                AtomicU32::from_ptr(p.add(8).cast()),
                AtomicU32::from_ptr(p.add(12).cast()),
            )
        }
    }

    /// The child side of `wakes_a_waiter_in_another_process`; does nothing
    /// unless run by it.
    #[test]
    fn child_entry() {
        let Ok(path) = std::env::var(CHILD) else {
            return;
        };
        let (ev, flag, woken) = shared(&path);
        let deadline = Instant::now() + Duration::from_secs(10);
        assert!(ev.wait_until(|| flag.load(Ordering::Acquire) == 1, Some(deadline)));
        woken.store(1, Ordering::Release);
    }

    #[test]
    fn wakes_a_waiter_in_another_process() {
        if std::env::var_os(CHILD).is_some() {
            return;
        }
        struct Unlink(String);
        impl Drop for Unlink {
            fn drop(&mut self) {
                let _ = std::fs::remove_file(&self.0);
            }
        }
        let path = Unlink(format!("/dev/shm/psyne-wait-test-{}", std::process::id()));
        std::fs::File::create(&path.0)
            .and_then(|f| f.set_len(4096))
            .unwrap();
        let (ev, flag, woken) = shared(&path.0);

        // This module's path without the crate name, for `--exact`.
        let module = module_path!().split_once("::").unwrap().1;
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", &format!("{module}::child_entry"), "--nocapture"])
            .env(CHILD, &path.0)
            .spawn()
            .unwrap();
        // Wait for the child to announce itself, then for it to sleep.
        let start = Instant::now();
        while ev.sleepers.load(Ordering::Relaxed) == 0 {
            assert!(start.elapsed().as_secs() < 10, "child never waited");
            thread::sleep(Duration::from_millis(1));
        }
        thread::sleep(Duration::from_millis(100));
        flag.store(1, Ordering::Release);
        ev.notify();
        assert!(child.wait().unwrap().success());
        assert_eq!(woken.load(Ordering::Acquire), 1, "the child ran");
        assert_eq!(ev.sleepers.load(Ordering::Relaxed), 0);
    }
}

/// Loom models: `RUSTFLAGS="--cfg psyne_loom" cargo test --release --lib loom`.
/// A lost wake-up shows as a deadlock (every thread blocked in the modelled
/// futex or in `join`).
#[cfg(all(test, psyne_loom))]
mod loom_model {
    use super::*;
    use loom::sync::atomic::AtomicBool;
    use loom::sync::Arc;
    use loom::thread::JoinHandle;

    fn waiter(ev: &Arc<Event>, flag: &Arc<AtomicBool>) -> JoinHandle<bool> {
        let (ev, flag) = (ev.clone(), flag.clone());
        loom::thread::spawn(move || ev.wait_until(|| flag.load(Ordering::Acquire), None))
    }

    /// `waiters` consumers wait for a flag that the main thread sets before
    /// one notify (after spawning them, or before when `notify_first`).
    fn model(waiters: usize, notify_first: bool) {
        let ev = Arc::new(Event::new());
        let flag = Arc::new(AtomicBool::new(false));
        let spawn = || (0..waiters).map(|_| waiter(&ev, &flag)).collect::<Vec<_>>();
        let early = if notify_first { Vec::new() } else { spawn() };
        flag.store(true, Ordering::Release);
        ev.notify();
        let late = if notify_first { spawn() } else { Vec::new() };
        for w in early.into_iter().chain(late) {
            assert!(w.join().unwrap());
        }
        assert_eq!(ev.sleepers.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn loom_one_waiter() {
        loom::model(|| model(1, false));
    }

    /// Unbounded this runs for over 5 minutes; 4 preemptions take ~2 s.
    #[test]
    fn loom_two_waiters() {
        let mut b = loom::model::Builder::new();
        b.preemption_bound = b.preemption_bound.or(Some(4));
        b.check(|| model(2, false));
    }

    #[test]
    fn loom_notify_before_wait() {
        loom::model(|| model(1, true));
    }
}
