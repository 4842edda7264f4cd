//! Async support without a runtime: a helper thread that sleeps on a
//! channel's shared-memory event and wakes the tasks waiting on it.
//!
//! The futex an event sleeps on cannot be registered with an executor's
//! reactor (it is not a file descriptor), so an endpoint that awaits gets a
//! helper thread, started on its first pending poll. The thread is parked
//! on a condition variable while no task waits, and asleep on the futex
//! while one does: no core is busy-polled. It works under any executor
//! (tokio, async-std, smol, a hand-written `block_on`). Like a blocked
//! endpoint, it wakes every `REAP_INTERVAL` while a task waits, to look for
//! dead peers (a task awaiting a killed producer is disconnected) and to
//! beat the endpoint's heart. It also wakes the tasks at the earliest of
//! their deadlines (the channel's `timeout_ms`), so a future can report
//! `Error::Timeout`.
//!
//! Several futures may wait on one endpoint at once (`join!`, two local
//! tasks sharing a sender): each pending future holds an entry (waker,
//! deadline, size wanted) under a ticket of its own; when the condition
//! holds or the earliest deadline passes, the helper wakes every entry's
//! waker and forgets them all (a future still pending arms again), and a
//! dropped future removes only its own entry.
//!
//! A sender waiting for a free slab slot (`Sender::loan_async`) has a
//! second helper: the slab signals no event when a slot is freed, so that
//! helper checks the free bitmaps with pauses growing from 20 us to 1 ms
//! (a thread blocked in `Sender::loan` spins and yields first, then sleeps
//! with the same pauses), and every `REAP_INTERVAL` it also wakes the
//! tasks so that their allocation attempt runs the slab's repair (which
//! finds slots that no bitmap shows, such as those a dead process held).
//! A task hears of a freed slot within about a millisecond, and no core
//! spins.

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
    /// checks the free bitmaps with growing pauses (20 us to 1 ms), and
    /// wakes the tasks every `REAP_INTERVAL` regardless (their allocation
    /// attempt runs the slab's repair).
    Slot,
}

/// One pending future's request.
struct Entry {
    ticket: u64,
    waker: Waker,
    /// When to wake it even if the condition does not hold (its timeout).
    deadline: Option<Instant>,
    /// A parameter of the condition (`Which::Slot`: the bytes wanted).
    need: u64,
}

/// The pending futures of one endpoint.
#[derive(Default)]
struct State {
    entries: Vec<Entry>,
    /// The last ticket handed out.
    ticket: u64,
}

impl State {
    /// The earliest deadline and the smallest need over the entries, or
    /// `None` if there are none.
    fn wanted(&self) -> Option<(Option<Instant>, u64)> {
        let need = self.entries.iter().map(|e| e.need).min()?;
        let deadline = self.entries.iter().filter_map(|e| e.deadline).min();
        Some((deadline, need))
    }
}

struct Inner {
    state: Mutex<State>,
    armed: Condvar,
    stop: AtomicBool,
    /// Set by `arm` and `disarm`: the helper re-reads what is wanted (a
    /// new entry may have an earlier deadline or a smaller size).
    changed: AtomicBool,
}

/// One helper thread and the futures it is to wake.
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
            changed: AtomicBool::new(false),
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
    /// `need`) holds, or at `deadline`. `ticket`: the one this future got
    /// from an earlier `arm`, if any (its entry is updated, or made again
    /// if the helper has woken it since). The caller must re-check the
    /// condition after this call, so that a change just before it is not
    /// missed. Returns the future's ticket, for the next `arm` and for
    /// [`AsyncWaiter::disarm`].
    pub(crate) fn arm(
        &self,
        ticket: Option<u64>,
        waker: &Waker,
        deadline: Option<Instant>,
        need: u64,
    ) -> u64 {
        let mut st = lock(&self.inner.state);
        let before = st.wanted().and_then(|(d, _)| d);
        let ticket = ticket.unwrap_or_else(|| {
            st.ticket += 1;
            st.ticket
        });
        match st.entries.iter_mut().find(|e| e.ticket == ticket) {
            Some(e) => {
                if !e.waker.will_wake(waker) {
                    e.waker = waker.clone();
                }
                e.deadline = deadline;
                e.need = need;
            }
            None => st.entries.push(Entry {
                ticket,
                waker: waker.clone(),
                deadline,
                need,
            }),
        }
        self.inner.changed.store(true, Ordering::Release);
        self.inner.armed.notify_one();
        drop(st);
        // The helper may be asleep on the futex until a later deadline:
        // let it see this earlier one (a spurious wake-up for any other
        // sleeper on the event; a slot helper sleeps 1 ms at most).
        let earlier = deadline.is_some_and(|d| before.is_none_or(|b| d < b));
        if earlier {
            if let Some(e) = event(&self.shared, self.which) {
                e.notify();
            }
        }
        ticket
    }

    /// Removes the entry of `ticket` (a future done or dropped).
    pub(crate) fn disarm(&self, ticket: u64) {
        let mut st = lock(&self.inner.state);
        st.entries.retain(|e| e.ticket != ticket);
        self.inner.changed.store(true, Ordering::Release);
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
    let stop = || inner.stop.load(Ordering::Acquire);
    loop {
        // Parked until a task waits.
        {
            let mut st = lock(&inner.state);
            while st.entries.is_empty() && !stop() {
                st = inner.armed.wait(st).unwrap_or_else(|e| e.into_inner());
            }
        }
        if stop() {
            return;
        }
        // Waits in slices of at most REAP_INTERVAL, re-reading what is
        // wanted after each and whenever a future arms or leaves.
        let wake = loop {
            inner.changed.store(false, Ordering::Relaxed);
            let Some((deadline, need)) = lock(&inner.state).wanted() else {
                break false; // every future left
            };
            if stop() {
                break false;
            }
            let now = Instant::now();
            if deadline.is_some_and(|d| now >= d) {
                break true;
            }
            let slice = deadline.map_or(now + REAP_INTERVAL, |d| d.min(now + REAP_INTERVAL));
            let changed = || inner.changed.load(Ordering::Acquire);
            let cond = || ready(shared, need) || stop() || changed();
            let done = match event(shared, which) {
                Some(e) => e.wait_until(cond, Some(slice)),
                None => poll_until(cond, slice),
            };
            if done && changed() && !stop() {
                continue; // re-read what is wanted
            }
            if done {
                break true;
            }
            shared.beat(part);
            shared.reap();
            if which == Which::Slot {
                // Let the tasks try again: their allocation runs the
                // slab's repair, which finds slots no bitmap shows.
                break true;
            }
        };
        if wake {
            let woken = std::mem::take(&mut lock(&inner.state).entries);
            for e in woken {
                e.waker.wake();
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
