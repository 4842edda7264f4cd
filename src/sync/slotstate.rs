//! The state word of a slot: who may touch its bytes, and which tensor it
//! holds.
//!
//! One 64-bit atomic per slot: the upper 32 bits are the slot's
//! *generation* (bumped every time the slot is freed, so handles to an older
//! tensor go stale); the lower 32 bits say who holds it:
//!
//! | bits   | meaning |
//! |--------|---------|
//! | 31     | `WRITER`: one [`SlotMut`](crate::SlotMut) owns the slot exclusively |
//! | 20..31 | pending: references carried by handles not yet taken (at most 2047) |
//! | 0..20  | refs: live read-only references (at most 2^20 - 1) |
//!
//! A slot is free when the lower word is 0. Because generation and holders
//! share one word, every claim ("take the pending reference of generation
//! g", "add a reader to generation g") is one compare-and-swap that checks
//! both: a handle to a recycled slot can never claim the new tensor, and a
//! slot being written can never be read.

use super::{AtomicWord, Ordering};

pub(crate) const WRITER: u32 = 1 << 31;
pub(crate) const PENDING: u32 = 1 << 20;
const REFS: u32 = PENDING - 1;
const PENDINGS: u32 = (WRITER - 1) & !REFS;

#[inline]
pub(crate) const fn generation(state: u64) -> u32 {
    (state >> 32) as u32
}

#[inline]
pub(crate) const fn holders(state: u64) -> u32 {
    state as u32
}

#[inline]
const fn pack(generation: u32, holders: u32) -> u64 {
    ((generation as u64) << 32) | holders as u64
}

/// Live read-only references in a state.
#[inline]
pub(crate) const fn refs(state: u64) -> u32 {
    holders(state) & REFS
}

/// Why a claim on a slot was refused.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) enum Refused {
    /// The slot holds another generation now (or is free).
    Stale { now: u32 },
    /// A writer holds the slot: its tensor is not published yet.
    Writing,
    /// No handle-carried reference is left to take.
    NotPending,
    /// The reference counts are at their limit.
    Overflow,
}

/// Claims a slot just popped off the free list for writing. Returns its
/// generation, or the unexpected state if the slot was not free (a damaged
/// segment).
///
/// A CAS rather than a store: on an intact free list the pop alone makes
/// the slot ours, but a damaged list (say a link from a slot to itself) can
/// hand one index to two poppers; the CAS lets only one of them write.
#[inline]
pub(crate) fn begin_write<A: AtomicWord<Value = u64>>(st: &A) -> Result<u32, u64> {
    let mut s = st.load(Ordering::Relaxed);
    loop {
        if holders(s) != 0 {
            return Err(s);
        }
        let claimed = pack(generation(s), WRITER);
        // Acquire: pairs with the Release store in `retire`. On an intact
        // list the pop's Acquire already ordered the previous holder's
        // accesses before ours; on a damaged one this does.
        match st.compare_exchange_weak(s, claimed, Ordering::Acquire, Ordering::Relaxed) {
            Ok(_) => return Ok(generation(s)),
            Err(now) => s = now,
        }
    }
}

/// The writer hands its exclusive reference on: to a handle (`pending`) or
/// to one read-only reference.
#[inline]
pub(crate) fn publish<A: AtomicWord<Value = u64>>(st: &A, generation: u32, pending: bool) {
    let holders = if pending { PENDING } else { 1 };
    // Release: pairs with the Acquire CAS in `claim`; the tensor the writer
    // wrote happens-before any read by whoever claims the reference.
    st.store(pack(generation, holders), Ordering::Release);
}

/// Takes a slot away from a holder that died: succeeds only if the state
/// is still exactly `(generation, holders)` as the caller saw it (a lone
/// writer, or a lone reader with no pending handle), leaving `(generation,
/// 0)` for the caller to [`retire`] and free.
#[inline]
pub(crate) fn seize<A: AtomicWord<Value = u64>>(st: &A, seen: u64) -> bool {
    let h = holders(seen);
    if h != WRITER && h != 1 {
        return false;
    }
    // Acquire: the dead holder's accesses are done (it is dead); this only
    // orders our later free after the last store it made.
    st.compare_exchange_weak(
        seen,
        pack(generation(seen), 0),
        Ordering::Acquire,
        Ordering::Relaxed,
    )
    .is_ok()
        || (st.load(Ordering::Relaxed) == seen && seize(st, seen))
}

/// Takes a published-but-unsent slot back for its writer: the handle's
/// pending reference becomes the `WRITER` again. Only valid while nobody can
/// know the handle (a send whose ring push failed). Returns false if the
/// reference was taken meanwhile (someone forged the handle).
#[inline]
pub(crate) fn unpublish<A: AtomicWord<Value = u64>>(st: &A, generation: u32) -> bool {
    st.compare_exchange_weak(
        pack(generation, PENDING),
        pack(generation, WRITER),
        Ordering::Relaxed,
        Ordering::Relaxed,
    )
    .is_ok()
        || (holders(st.load(Ordering::Relaxed)) == PENDING && unpublish(st, generation))
}

/// Takes a reference for generation `gen`: `pending` takes over one carried
/// by a handle; otherwise adds a reader to an already published slot.
#[inline]
pub(crate) fn claim<A: AtomicWord<Value = u64>>(
    st: &A,
    gen: u32,
    pending: bool,
) -> Result<(), Refused> {
    let mut s = st.load(Ordering::Relaxed);
    loop {
        let h = holders(s);
        if generation(s) != gen || h == 0 {
            return Err(Refused::Stale { now: generation(s) });
        }
        if h & WRITER != 0 {
            return Err(Refused::Writing);
        }
        if refs(s) == REFS {
            return Err(Refused::Overflow);
        }
        let new = if pending {
            if h & PENDINGS == 0 {
                return Err(Refused::NotPending);
            }
            h - PENDING + 1
        } else {
            h + 1
        };
        // Acquire: pairs with the Release in `publish`, so the claimer sees
        // the tensor's bytes and header.
        match st.compare_exchange_weak(s, pack(gen, new), Ordering::Acquire, Ordering::Relaxed) {
            Ok(_) => return Ok(()),
            Err(now) => s = now,
        }
    }
}

/// Adds a reader to a slot the caller already reads (a clone).
///
/// Panics if the slot already has 2^20 - 1 readers, as `Arc` aborts on
/// overflow; the count never spills into the neighbouring bits.
#[inline]
pub(crate) fn add_ref<A: AtomicWord<Value = u64>>(st: &A) {
    update(st, |h| (refs(h as u64) < REFS).then(|| h + 1), "readers");
}

/// Turns one of the caller's read references into a handle-carried one.
///
/// Panics if 2047 handles of the slot are already pending.
#[inline]
pub(crate) fn to_pending<A: AtomicWord<Value = u64>>(st: &A) {
    update(
        st,
        |h| (h & PENDINGS != PENDINGS).then(|| h + PENDING - 1),
        "pending handles",
    );
}

/// Applies `f` to the holders with a CAS loop (generation unchanged);
/// panics with `what` if `f` refuses.
#[inline]
fn update<A: AtomicWord<Value = u64>>(st: &A, f: impl Fn(u32) -> Option<u32>, what: &str) {
    // Relaxed load; Release on success: a taker in another process must see
    // what this holder saw (for `to_pending`); harmless for `add_ref`.
    let mut s = st.load(Ordering::Relaxed);
    loop {
        let Some(new) = f(holders(s)) else {
            panic!("psyne: too many {what} on one slot");
        };
        match st.compare_exchange_weak(
            s,
            pack(generation(s), new),
            Ordering::Release,
            Ordering::Relaxed,
        ) {
            Ok(_) => return,
            Err(now) => s = now,
        }
    }
}

/// Drops one read reference. Returns true if it was the last holder: the
/// caller must then [`retire`] the slot and free it.
#[inline]
pub(crate) fn release<A: AtomicWord<Value = u64>>(st: &A) -> bool {
    // AcqRel: our reads of the slot happen-before the free that the last
    // holder performs, and the last holder sees everyone's.
    holders(st.fetch_sub(1, Ordering::AcqRel)) == 1
}

/// Marks a slot with no holders left (or the exclusive writer giving up) as
/// free: the generation moves on, so every handle to it goes stale. The
/// caller pushes it on the free list next, which publishes the new state.
#[inline]
pub(crate) fn retire<A: AtomicWord<Value = u64>>(st: &A) {
    let s = st.load(Ordering::Relaxed);
    st.store(pack(generation(s).wrapping_add(1), 0), Ordering::Release);
}

#[cfg(all(test, not(psyne_loom)))]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;

    #[test]
    fn lifecycle() {
        let st = AtomicU64::new(0);
        assert_eq!(begin_write(&st), Ok(0));
        assert_eq!(claim(&st, 0, false), Err(Refused::Writing));
        assert_eq!(claim(&st, 0, true), Err(Refused::Writing));
        publish(&st, 0, true);
        assert_eq!(claim(&st, 1, true), Err(Refused::Stale { now: 0 }));
        assert_eq!(claim(&st, 0, false), Ok(())); // a reader alongside the pending handle
        assert_eq!(claim(&st, 0, true), Ok(())); // the handle is taken
        assert_eq!(claim(&st, 0, true), Err(Refused::NotPending)); // only once
        assert_eq!(refs(st.load(Ordering::Relaxed)), 2);
        assert!(!release(&st));
        assert!(release(&st));
        retire(&st);
        assert_eq!(claim(&st, 0, false), Err(Refused::Stale { now: 1 }));
        assert_eq!(begin_write(&st), Ok(1));
    }

    #[test]
    fn a_busy_slot_is_not_claimed_for_writing() {
        let st = AtomicU64::new(pack(3, 2));
        assert_eq!(begin_write(&st), Err(pack(3, 2)));
    }

    #[test]
    fn counts_never_spill_into_neighbouring_bits() {
        let full = AtomicU64::new(pack(5, REFS));
        let r = std::panic::catch_unwind(|| add_ref(&full));
        assert!(r.is_err());
        assert_eq!(full.load(Ordering::Relaxed), pack(5, REFS), "unchanged");
        assert_eq!(claim(&full, 5, false), Err(Refused::Overflow));
        let pend = AtomicU64::new(pack(5, PENDINGS | 1));
        assert!(std::panic::catch_unwind(|| to_pending(&pend)).is_err());
        assert_eq!(holders(pend.load(Ordering::Relaxed)) & WRITER, 0);
    }

    #[test]
    fn pending_handles_from_readers() {
        let st = AtomicU64::new(0);
        begin_write(&st).unwrap();
        publish(&st, 0, false);
        add_ref(&st);
        to_pending(&st); // one reader becomes a handle
        assert_eq!(refs(st.load(Ordering::Relaxed)), 1);
        assert!(!release(&st));
        assert_eq!(claim(&st, 0, true), Ok(()));
        assert!(release(&st));
    }
}

/// Loom models: `RUSTFLAGS="--cfg psyne_loom" cargo test --release --lib loom`.
#[cfg(all(test, psyne_loom))]
mod loom_model {
    use super::*;
    use loom::cell::UnsafeCell;
    use loom::sync::atomic::AtomicU64;
    use loom::sync::Arc;

    struct SlotModel {
        state: AtomicU64,
        payload: UnsafeCell<u32>,
    }

    // SAFETY: the payload is guarded by the state word's protocol, which is
    // what the model checks.
    unsafe impl Sync for SlotModel {}

    fn read(s: &SlotModel) -> u32 {
        // SAFETY: called only while holding a reference; loom reports a race
        // if the protocol lets a writer in meanwhile.
        s.payload.with(|p| unsafe { *p })
    }

    /// Finish with a reference; the last holder frees the slot and a new
    /// writer reuses it at once (writing the payload).
    fn drop_ref(s: &SlotModel) {
        if release(&s.state) {
            retire(&s.state);
            let g = begin_write(&s.state).expect("free slot");
            assert_eq!(g, 1);
            // SAFETY: exclusive after begin_write.
            s.payload.with_mut(|p| unsafe { *p = 7 });
        }
    }

    /// A tensor is written and published while another thread waits for
    /// the handle; the writer then adds itself as a reader of the same
    /// generation. Whatever the interleaving, readers see the published
    /// value (the taker is spawned before the write, so only the state word
    /// can order it), the slot is recycled exactly once, and nobody reads
    /// while the next writer writes.
    #[test]
    fn loom_take_share_release_reuse() {
        loom::model(|| {
            let s = Arc::new(SlotModel {
                state: AtomicU64::new(0),
                payload: UnsafeCell::new(0),
            });
            let s2 = s.clone();
            let taker = loom::thread::spawn(move || {
                while claim(&s2.state, 0, true).is_err() {
                    loom::thread::yield_now();
                }
                assert_eq!(read(&s2), 42);
                drop_ref(&s2);
            });
            let g = begin_write(&s.state).unwrap();
            // SAFETY: exclusive after begin_write.
            s.payload.with_mut(|p| unsafe { *p = 42 });
            publish(&s.state, g, true);
            if claim(&s.state, 0, false).is_ok() {
                assert_eq!(read(&s), 42);
                drop_ref(&s);
            }
            taker.join().unwrap();
            let end = s.state.load(Ordering::Relaxed);
            assert_eq!((generation(end), holders(end)), (1, WRITER));
        });
    }

    /// Two readers release concurrently: exactly one sees itself last.
    #[test]
    fn loom_last_release_is_unique() {
        loom::model(|| {
            let st = Arc::new(AtomicU64::new(pack(0, 2)));
            let st2 = st.clone();
            let t = loom::thread::spawn(move || release(&*st2));
            let mine = release(&*st);
            let theirs = t.join().unwrap();
            assert!(mine ^ theirs);
        });
    }
}
