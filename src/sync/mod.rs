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
