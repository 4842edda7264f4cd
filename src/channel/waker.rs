//! Async support without a runtime: a helper thread that sleeps on a
//! channel's shared-memory event and wakes a task's `Waker`.
//!
//! The futex an event sleeps on cannot be registered with an executor's
//! reactor (it is not a file descriptor), so each endpoint that awaits gets
//! one helper thread, started on its first pending poll. The thread is
//! parked on a condition variable while no task waits, and asleep on the
//! futex while one does: no core is busy-polled. It works under any
//! executor (tokio, async-std, smol, a hand-written `block_on`). Like a
//! blocked endpoint, it wakes every `REAP_INTERVAL` while a task waits, to
//! look for dead peers (a task awaiting a killed producer is disconnected)
//! and to beat the endpoint's heart. It also wakes the task at its
//! deadline (the channel's `timeout_ms`), so the future can report
//! `Error::Timeout`.
//!
//! A sender waiting for a free slab slot (`Sender::loan_async`) has a
//! second helper: the slab signals no event when a slot is freed, so that
//! helper checks the free bitmaps with pauses growing from 20 us to 1 ms,
//! as a thread blocked in `Sender::loan` does: the task hears of a freed
//! slot within about a millisecond, and no core spins.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::task::Waker;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::shared::{Shared, REAP_INTERVAL};

/// What the helper waits for.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) enum Which {
    /// The channel's not-empty event.
    NotEmpty,
    /// The channel's not-full event.
    NotFull,
    /// A free slab slot. Freeing a slot signals no event, so the helper
    /// checks the free bitmaps with growing pauses (20 us to 1 ms), as a
    /// thread blocked in `Sender::loan` does.
    Slot,
}

/// What the waiting task asked for.
#[derive(Default)]
struct State {
    /// The waker of the task waiting now, if any.
    waker: Option<Waker>,
    /// When to wake the task even if the condition does not hold (its
    /// timeout).
    deadline: Option<Instant>,
    /// A parameter of the condition (`Which::Slot`: the bytes wanted).
    need: u64,
    /// The ticket of the last `arm`, so that a future dropped after a newer
    /// one armed does not take the newer one's waker away.
    ticket: u64,
}

struct Inner {
    state: Mutex<State>,
    armed: Condvar,
    stop: AtomicBool,
}

/// One helper thread and the waker it is to wake.
pub(crate) struct AsyncWaiter {
    inner: Arc<Inner>,
    shared: Arc<Shared>,
    which: Which,
    thread: Option<JoinHandle<()>>,
}

impl AsyncWaiter {
    /// Starts the helper. `ready(shared, need)` says whether the awaited
    /// condition holds (it is evaluated on the helper thread).
    /// `part` is the endpoint's participant record.
    pub(crate) fn start(
        shared: Arc<Shared>,
        which: Which,
        part: usize,
        ready: impl Fn(&Shared, u64) -> bool + Send + 'static,
    ) -> AsyncWaiter {
        let inner = Arc::new(Inner {
            state: Mutex::new(State::default()),
            armed: Condvar::new(),
            stop: AtomicBool::new(false),
        });
        let (i, s) = (inner.clone(), shared.clone());
        let thread = std::thread::Builder::new()
            .name("psyne-async-waiter".into())
            .spawn(move || run(&i, &s, which, part, ready))
            .expect("spawning the async waiter thread");
        AsyncWaiter {
            inner,
            shared,
            which,
            thread: Some(thread),
        }
    }

    /// Asks for `waker` to be woken when the condition (with parameter
    /// `need`) holds, or at `deadline`, replacing what was armed before.
    /// The caller must re-check the condition after this call, so that a
    /// change just before it is not missed. Returns a ticket for
    /// [`AsyncWaiter::disarm`].
    pub(crate) fn arm(&self, waker: &Waker, deadline: Option<Instant>, need: u64) -> u64 {
        let mut st = lock(&self.inner.state);
        match &mut st.waker {
            Some(w) if w.will_wake(waker) => {}
            slot => *slot = Some(waker.clone()),
        }
        st.deadline = deadline;
        st.need = need;
        st.ticket += 1;
        self.inner.armed.notify_one();
        st.ticket
    }

    /// Forgets the waker armed with `ticket` (a future dropped while
    /// pending), unless another has been armed since.
    pub(crate) fn disarm(&self, ticket: u64) {
        let mut st = lock(&self.inner.state);
        if st.ticket == ticket {
            st.waker = None;
        }
    }
}

impl Drop for AsyncWaiter {
    fn drop(&mut self) {
        self.inner.stop.store(true, Ordering::Release);
        {
            let _st = lock(&self.inner.state);
            self.inner.armed.notify_one();
        }
        // The helper may be asleep on the futex: wake it (and, harmlessly,
        // any other sleeper on the same event). A slot waiter sleeps at
        // most 1 ms at a time.
        if let Some(e) = event(&self.shared, self.which) {
            e.notify();
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn lock(m: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn event(shared: &Shared, which: Which) -> Option<&crate::sync::wait::Event> {
    match which {
        Which::NotEmpty => Some(shared.not_empty()),
        Which::NotFull => Some(shared.not_full()),
        Which::Slot => None,
    }
}

fn run(
    inner: &Inner,
    shared: &Shared,
    which: Which,
    part: usize,
    ready: impl Fn(&Shared, u64) -> bool,
) {
    loop {
        // Parked until a task waits.
        {
            let mut st = lock(&inner.state);
            while st.waker.is_none() && !inner.stop.load(Ordering::Acquire) {
                st = inner.armed.wait(st).unwrap_or_else(|e| e.into_inner());
            }
        }
        let stop = || inner.stop.load(Ordering::Acquire);
        if stop() {
            return;
        }
        // Waits in slices of at most REAP_INTERVAL, re-reading what is
        // armed after each (a newer future may have armed another deadline
        // or size, or the waiting one may have been dropped).
        let wake = loop {
            let (deadline, need, armed) = {
                let st = lock(&inner.state);
                (st.deadline, st.need, st.waker.is_some())
            };
            if !armed || stop() {
                break false;
            }
            let now = Instant::now();
            if deadline.is_some_and(|d| now >= d) {
                break true;
            }
            let slice = deadline.map_or(now + REAP_INTERVAL, |d| d.min(now + REAP_INTERVAL));
            let cond = || ready(shared, need) || stop();
            let done = match event(shared, which) {
                Some(e) => e.wait_until(cond, Some(slice)),
                None => poll_until(cond, slice),
            };
            if done {
                break true;
            }
            shared.beat(part);
            shared.reap();
        };
        if wake {
            let waker = lock(&inner.state).waker.take();
            if let Some(w) = waker {
                w.wake();
            }
        }
    }
}

/// Checks `cond` with growing pauses (20 us doubling to 1 ms) until it
/// holds or `until` passes. Returns whether it holds.
fn poll_until(mut cond: impl FnMut() -> bool, until: Instant) -> bool {
    let mut pause = Duration::from_micros(20);
    loop {
        if cond() {
            return true;
        }
        let now = Instant::now();
        if now >= until {
            return false;
        }
        std::thread::sleep(pause.min(until - now));
        pause = (pause * 2).min(Duration::from_millis(1));
    }
}
