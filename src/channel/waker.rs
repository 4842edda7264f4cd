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
//! and to beat the endpoint's heart.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::task::Waker;
use std::thread::JoinHandle;

use super::shared::{Shared, REAP_INTERVAL};

/// Which of the channel's events the helper sleeps on.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) enum Which {
    NotEmpty,
    NotFull,
}

#[derive(Default)]
struct State {
    /// The waker of the task waiting now, if any.
    waker: Option<Waker>,
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
    /// Starts the helper. `ready` says whether the awaited condition holds
    /// (it is evaluated on the helper thread).
    /// `part` is the endpoint's participant record.
    pub(crate) fn start(
        shared: Arc<Shared>,
        which: Which,
        part: usize,
        ready: impl Fn(&Shared) -> bool + Send + 'static,
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

    /// Asks for `waker` to be woken when the condition holds (replacing a
    /// waker registered before). The caller must re-check the condition
    /// after this call, so that a change just before it is not missed.
    pub(crate) fn arm(&self, waker: &Waker) {
        let mut st = lock(&self.inner.state);
        match &mut st.waker {
            Some(w) if w.will_wake(waker) => {}
            slot => *slot = Some(waker.clone()),
        }
        self.inner.armed.notify_one();
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
        // any other sleeper on the same event).
        event(&self.shared, self.which).notify();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn lock(m: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn event(shared: &Shared, which: Which) -> &crate::sync::wait::Event {
    match which {
        Which::NotEmpty => shared.not_empty(),
        Which::NotFull => shared.not_full(),
    }
}

fn run(inner: &Inner, shared: &Shared, which: Which, part: usize, ready: impl Fn(&Shared) -> bool) {
    loop {
        // Parked until a task waits.
        {
            let mut st = lock(&inner.state);
            while st.waker.is_none() && !inner.stop.load(Ordering::Acquire) {
                st = inner.armed.wait(st).unwrap_or_else(|e| e.into_inner());
            }
        }
        if inner.stop.load(Ordering::Acquire) {
            return;
        }
        loop {
            let slice = std::time::Instant::now() + REAP_INTERVAL;
            if event(shared, which).wait_until(
                || ready(shared) || inner.stop.load(Ordering::Acquire),
                Some(slice),
            ) {
                break;
            }
            shared.beat(part);
            shared.reap();
        }
        let waker = lock(&inner.state).waker.take();
        if let Some(w) = waker {
            w.wake();
        }
    }
}
