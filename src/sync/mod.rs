//! Atomics and waiting.
//!
//! Every lock-free algorithm in psyne is written against the small
//! [`AtomicWord`] trait rather than a concrete atomic type. In the crate the
//! trait is implemented by the `std` atomics that live in shared memory; in
//! the loom models (`RUSTFLAGS="--cfg psyne_loom"`, see `docs/architecture.md`) by
//! loom's atomics, so the exact code that runs in production is the code the
//! model checker explores.

pub(crate) mod freebits;
pub(crate) mod hint;
pub(crate) mod slotstate;
pub(crate) mod wait;

pub use std::sync::atomic::Ordering;

/// The operations the lock-free algorithms need from an atomic integer.
pub(crate) trait AtomicWord {
    /// The integer type.
    type Value: Copy + Eq;
    fn load(&self, order: Ordering) -> Self::Value;
    fn store(&self, value: Self::Value, order: Ordering);
    fn compare_exchange_weak(
        &self,
        current: Self::Value,
        new: Self::Value,
        success: Ordering,
        failure: Ordering,
    ) -> Result<Self::Value, Self::Value>;
    fn compare_exchange(
        &self,
        current: Self::Value,
        new: Self::Value,
        success: Ordering,
        failure: Ordering,
    ) -> Result<Self::Value, Self::Value>;
    fn fetch_or(&self, value: Self::Value, order: Ordering) -> Self::Value;
    fn fetch_and(&self, value: Self::Value, order: Ordering) -> Self::Value;
    /// Pushes the word's cache line towards the shared cache for another
    /// core to read (a hint; see [`hint::demote`]).
    fn demote(&self);
}

macro_rules! atomic_word {
    ($atomic:ty, $v:ty) => {
        impl AtomicWord for $atomic {
            type Value = $v;
            #[inline]
            fn load(&self, order: Ordering) -> $v {
                <$atomic>::load(self, order)
            }
            #[inline]
            fn store(&self, value: $v, order: Ordering) {
                <$atomic>::store(self, value, order)
            }
            #[inline]
            fn compare_exchange_weak(
                &self,
                current: $v,
                new: $v,
                success: Ordering,
                failure: Ordering,
            ) -> Result<$v, $v> {
                <$atomic>::compare_exchange_weak(self, current, new, success, failure)
            }
            #[inline]
            fn compare_exchange(
                &self,
                current: $v,
                new: $v,
                success: Ordering,
                failure: Ordering,
            ) -> Result<$v, $v> {
                <$atomic>::compare_exchange(self, current, new, success, failure)
            }
            #[inline]
            fn fetch_or(&self, value: $v, order: Ordering) -> $v {
                <$atomic>::fetch_or(self, value, order)
            }
            #[inline]
            fn fetch_and(&self, value: $v, order: Ordering) -> $v {
                <$atomic>::fetch_and(self, value, order)
            }
            #[inline]
            fn demote(&self) {
                hint::demote((self as *const $atomic).cast());
            }
        }
    };
}

atomic_word!(std::sync::atomic::AtomicU32, u32);
atomic_word!(std::sync::atomic::AtomicU64, u64);
#[cfg(psyne_loom)]
atomic_word!(loom::sync::atomic::AtomicU32, u32);
#[cfg(psyne_loom)]
atomic_word!(loom::sync::atomic::AtomicU64, u64);

/// Runs `model` under loom and returns the outcomes its executions
/// reported, for a model to assert that it reached the interleavings it is
/// about, not only that nothing failed in those it ran.
///
/// Loom's search (0.7) is not exhaustive: it remembers one last access
/// per atomic, so a thread's load followed by another thread's load of the
/// same word is forgotten, and when that second thread then writes the
/// word (a compare-and-swap after a load, as every claim here does), the
/// order with the write before the first load is never run (loom issues
/// #166 and #392). A consumer that polls a cell before the producer's
/// claim then never sees a message during the race. The models run such
/// an observer after a `yield_now` (so the writes come first in loom's
/// first schedule and its search moves the reads before them) and check
/// the outcomes with this.
#[cfg(all(test, psyne_loom))]
pub(crate) fn loom_outcomes<T, F>(model: F) -> std::collections::BTreeSet<T>
where
    T: Ord + Send + 'static,
    F: Fn() -> T + Send + Sync + 'static,
{
    let seen = std::sync::Arc::new(std::sync::Mutex::new(std::collections::BTreeSet::new()));
    let seen2 = seen.clone();
    loom::model(move || {
        let outcome = model();
        seen2.lock().unwrap().insert(outcome);
    });
    let seen = std::mem::take(&mut *seen.lock().unwrap());
    seen
}
