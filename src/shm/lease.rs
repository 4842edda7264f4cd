//! What keeps a slot's slab alive: a slot reference holds either a clone of
//! the slab handle (an `Arc`: one atomic increment to make, one decrement
//! to drop) or a *lease* from a channel endpoint's pool.
//!
//! A pool is one heap block holding a slab handle and a reference count.
//! The endpoint adds references to the count in batches and hands them out
//! one by one from a plain counter, so making a slot's reference costs no
//! atomic instruction on the message path; dropping one is an atomic
//! decrement, as for an `Arc`, wherever the slot goes. The block is freed by
//! whoever drops the last reference: the pool, or a slot that outlives it.
//! The counting follows `Arc`'s: increments relaxed, decrements release,
//! and an acquire fence before the block is freed.

use std::cell::Cell;
use std::ops::Deref;
use std::ptr::NonNull;

#[cfg(psyne_loom)]
use loom::sync::atomic::{fence, AtomicUsize};
use std::sync::atomic::Ordering;
#[cfg(not(psyne_loom))]
use std::sync::atomic::{fence, AtomicUsize};

use super::slab::Slab;

/// References a pool takes from its count at once.
const BATCH: usize = 256;

/// Beyond this, a count would be close to overflowing: abort (as `Arc`
/// does) rather than free a block that is still in use.
const MAX_REFS: usize = isize::MAX as usize;

/// A value and the count of references to it (the counting is generic so
/// that the loom model can count a value of its own). Aligned to two cache
/// lines: a receiver's count is written on every view drop, and must not
/// share a line with another endpoint's block (endpoints made one after
/// the other in one thread would get adjacent heap blocks).
#[repr(align(128))]
pub(crate) struct Block<T = Slab> {
    refs: AtomicUsize,
    value: T,
}

/// A new block holding `value` with one reference (the caller's).
fn new_block<T>(value: T) -> NonNull<Block<T>> {
    NonNull::from(Box::leak(Box::new(Block {
        refs: AtomicUsize::new(1),
        value,
    })))
}

/// The block at `p`.
///
/// # Safety
/// The caller holds one of the block's references (counted in `refs`, given
/// up only through `release`) for as long as it uses the result.
unsafe fn block<T>(p: &NonNull<Block<T>>) -> &Block<T> {
    // SAFETY: the caller's reference keeps the block allocated.
    unsafe { p.as_ref() }
}

/// Adds `n` references to the block.
///
/// # Safety
/// The caller holds one of its references (so it cannot be freed meanwhile).
unsafe fn add_refs<T>(p: &NonNull<Block<T>>, n: usize) {
    // Relaxed: as `Arc::clone`; an existing reference keeps the block alive.
    // SAFETY: the caller holds a reference.
    if unsafe { block(p) }.refs.fetch_add(n, Ordering::Relaxed) > MAX_REFS - n {
        std::process::abort();
    }
}

/// Gives up `n` references to the block at `p`, freeing it with the last.
///
/// # Safety
/// The caller holds `n` of the block's references and uses none of them
/// afterwards.
unsafe fn release<T>(p: NonNull<Block<T>>, n: usize) {
    // Release: this holder's uses of the block happen before its freeing.
    // SAFETY: the caller holds references until this decrement.
    if unsafe { block(&p) }.refs.fetch_sub(n, Ordering::Release) == n {
        // Acquire: pairs with the other holders' Release decrements.
        fence(Ordering::Acquire);
        // SAFETY: that was the last reference: nobody else can reach the
        // block, which `new_block` made with `Box::new`.
        drop(unsafe { Box::from_raw(p.as_ptr()) });
    }
}

/// What keeps a slot's slab (and so its mappings) alive. Made only here:
/// from a clone of a slab handle, or by a `LeasePool`.
pub(crate) struct Keep(Kept);

enum Kept {
    /// A clone of the slab handle.
    Handle(Slab),
    /// One reference counted in a pool's block.
    Lease(NonNull<Block<Slab>>),
}

// SAFETY: a lease points at a block that lives while any reference to it
// does (the count says how many), and the block holds a `Slab` (Send and
// Sync) and an atomic count: using it from any thread is what `Arc` allows.
unsafe impl Send for Keep {}
// SAFETY: as above; `&Keep` gives only `&Slab`.
unsafe impl Sync for Keep {}

impl From<Slab> for Keep {
    fn from(slab: Slab) -> Keep {
        Keep(Kept::Handle(slab))
    }
}

impl Deref for Keep {
    type Target = Slab;

    #[inline]
    fn deref(&self) -> &Slab {
        match &self.0 {
            Kept::Handle(s) => s,
            // SAFETY: this `Keep` is one of the block's references.
            Kept::Lease(p) => &unsafe { block(p) }.value,
        }
    }
}

impl Clone for Keep {
    fn clone(&self) -> Keep {
        match &self.0 {
            Kept::Handle(s) => Keep(Kept::Handle(s.clone())),
            Kept::Lease(p) => {
                // SAFETY: this `Keep` is one of the block's references.
                unsafe { add_refs(p, 1) };
                Keep(Kept::Lease(*p))
            }
        }
    }
}

impl Drop for Keep {
    #[inline]
    fn drop(&mut self) {
        if let Kept::Lease(p) = self.0 {
            // SAFETY: this `Keep` was one of the block's references, and it
            // is gone after this.
            unsafe { release(p, 1) };
        }
    }
}

/// An endpoint's source of leases on its slab handle. Not `Sync` (the
/// credit counter is plain): one thread at a time hands out its leases.
pub(crate) struct LeasePool {
    block: NonNull<Block<Slab>>,
    /// References counted in the block that the pool holds and has not
    /// handed out yet (the pool's own one not included).
    credits: Cell<usize>,
}

// SAFETY: the pool's references are counted in the block (see `Keep`); the
// plain credit counter moves with the pool, which `Cell` keeps on one thread.
unsafe impl Send for LeasePool {}

impl LeasePool {
    /// A pool leasing references to `slab`.
    pub(crate) fn new(slab: Slab) -> LeasePool {
        LeasePool {
            block: new_block(slab),
            credits: Cell::new(0),
        }
    }

    /// The slab the leases keep alive.
    pub(crate) fn slab(&self) -> &Slab {
        // SAFETY: the pool holds one of the block's references while it lives.
        &unsafe { block(&self.block) }.value
    }

    /// One reference for a slot: from the credits, taking a batch from the
    /// block's count when they run out.
    #[inline]
    pub(crate) fn lease(&self) -> Keep {
        let mut c = self.credits.get();
        if c == 0 {
            // SAFETY: the pool holds one of the block's references.
            unsafe { add_refs(&self.block, BATCH) };
            c = BATCH;
        }
        self.credits.set(c - 1);
        Keep(Kept::Lease(self.block))
    }

    /// Takes back a reference this pool leased (one a `SlotMut` held until
    /// its handle was sent), without touching the block's count; any other
    /// `Keep` is dropped.
    #[inline]
    pub(crate) fn give_back(&self, keep: Keep) {
        if matches!(keep.0, Kept::Lease(p) if p == self.block) {
            std::mem::forget(keep);
            let c = self.credits.get() + 1;
            if c > 2 * BATCH {
                // SAFETY: the pool holds `c` counted references (its own
                // one not included), more than it gives up.
                unsafe { release(self.block, BATCH) };
                self.credits.set(c - BATCH);
            } else {
                self.credits.set(c);
            }
        }
        // Any other `Keep` is dropped here.
    }
}

impl Drop for LeasePool {
    fn drop(&mut self) {
        // SAFETY: the pool holds its own reference and its credits, and is
        // gone after this.
        unsafe { release(self.block, self.credits.get() + 1) };
    }
}

#[cfg(all(test, not(psyne_loom)))]
mod tests {
    use super::*;
    use crate::shm::{Segment, SlabConfig};

    fn pool() -> (Segment, LeasePool) {
        let seg = Segment::anonymous(&SlabConfig::new().class(256, 4)).unwrap();
        let pool = LeasePool::new(seg.slab().clone());
        (seg, pool)
    }

    fn refs(pool: &LeasePool) -> usize {
        // SAFETY: the pool holds a reference.
        unsafe { block(&pool.block) }.refs.load(Ordering::Relaxed)
    }

    #[test]
    fn leases_are_counted_in_batches_and_given_back() {
        let (_seg, pool) = pool();
        assert_eq!(refs(&pool), 1);
        let a = pool.lease();
        assert_eq!(refs(&pool), 1 + BATCH);
        let leases: Vec<Keep> = (0..BATCH).map(|_| pool.lease()).collect();
        // One batch used up: the last lease took a second one.
        assert_eq!(refs(&pool), 1 + 2 * BATCH);
        assert_eq!(pool.credits.get(), BATCH - 1);
        let b = a.clone();
        assert_eq!(refs(&pool), 2 + 2 * BATCH);
        drop((a, b));
        drop(leases);
        assert_eq!(refs(&pool), BATCH);
        assert_eq!(refs(&pool), pool.credits.get() + 1);
        assert_eq!(pool.slab().max_slot_size(), 256);
    }

    #[test]
    fn given_back_leases_become_credits_and_the_surplus_goes_back() {
        let (seg, pool) = pool();
        let leases: Vec<Keep> = (0..3 * BATCH).map(|_| pool.lease()).collect();
        assert_eq!(refs(&pool), 1 + 3 * BATCH);
        assert_eq!(pool.credits.get(), 0);
        for k in leases {
            pool.give_back(k);
        }
        // Never more than two batches of credits held.
        assert!(pool.credits.get() <= 2 * BATCH);
        assert_eq!(refs(&pool), pool.credits.get() + 1);
        // A clone of the handle, or another pool's lease, is just dropped.
        pool.give_back(Keep::from(seg.slab().clone()));
        let other = LeasePool::new(seg.slab().clone());
        pool.give_back(other.lease());
        assert_eq!(refs(&other), other.credits.get() + 1);
        assert_eq!(refs(&pool), pool.credits.get() + 1);
    }

    #[test]
    fn a_lease_outlives_its_pool_and_frees_the_block() {
        let (seg, pool) = pool();
        let slot = seg.slab().alloc(10).unwrap();
        let keep = pool.lease();
        let other = std::thread::spawn(move || {
            let k2 = keep.clone();
            drop(keep);
            k2
        })
        .join()
        .unwrap();
        drop(pool);
        // The block lives on for `other`; its slab is still usable.
        assert_eq!(other.max_slot_size(), 256);
        assert_eq!(other.used_slots(), 1);
        drop(other); // frees the block (Miri checks for a leak or a double free)
        drop(slot);
        assert_eq!(seg.slab().used_slots(), 0);
    }
}

/// The counting under loom: a pool-like holder and two threads with
/// references (handed over from a batch, one of them cloned again), each
/// using the value before dropping its references, in every order loom
/// runs; the holder gives up its own reference and an unused credit in
/// one release, as a pool's drop does. The value is freed exactly once, and only after every use (its
/// drop writes a cell that the users read: loom reports a race if a free
/// could come before a use).
#[cfg(all(test, psyne_loom))]
mod loom_model {
    use super::*;
    use loom::cell::UnsafeCell;
    use loom::sync::atomic::AtomicUsize as Counter;
    use loom::sync::Arc;

    struct Value {
        cell: UnsafeCell<u32>,
        freed: Arc<Counter>,
    }

    impl Drop for Value {
        fn drop(&mut self) {
            // SAFETY: the last reference is gone: nobody else can read.
            self.cell.with_mut(|p| unsafe { *p = 0 });
            self.freed.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn read(p: &NonNull<Block<Value>>) -> u32 {
        // SAFETY: the caller holds a reference; nobody writes the cell
        // before the last reference is gone.
        unsafe { block(p) }.value.cell.with(|c| unsafe { *c })
    }

    struct Ptr(NonNull<Block<Value>>);
    // SAFETY: the block is counted; the model hands each reference to one
    // thread.
    unsafe impl Send for Ptr {}

    #[test]
    fn loom_lease_frees_once_after_every_use() {
        loom::model(|| {
            let freed = Arc::new(Counter::new(0));
            let p = new_block(Value {
                cell: UnsafeCell::new(7),
                freed: freed.clone(),
            });
            // The holder takes a batch of three and hands out two.
            // SAFETY: here and in the threads, each party releases exactly
            // the references it holds and reads only before that.
            unsafe { add_refs(&p, 3) };
            let (a, b) = (Ptr(p), Ptr(p));
            let t1 = loom::thread::spawn(move || {
                let a = a;
                // A clone of a leased reference, used and dropped here too.
                // SAFETY: as above.
                unsafe { add_refs(&a.0, 1) };
                assert_eq!(read(&a.0), 7);
                // SAFETY: as above.
                unsafe { release(a.0, 1) };
                assert_eq!(read(&a.0), 7);
                // SAFETY: as above.
                unsafe { release(a.0, 1) };
            });
            let t2 = loom::thread::spawn(move || {
                let b = b;
                assert_eq!(read(&b.0), 7);
                // SAFETY: as above.
                unsafe { release(b.0, 1) };
            });
            // The holder goes away with its own reference and its unused
            // credit at once (as a pool does), while the others may still
            // use theirs: a release of two can be the last.
            // SAFETY: as above.
            unsafe { release(p, 2) };
            t1.join().unwrap();
            t2.join().unwrap();
            assert_eq!(freed.load(Ordering::Relaxed), 1);
        });
    }
}
