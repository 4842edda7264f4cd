//! The state word of a slot: who may touch its bytes, and which tensor it
//! holds.
//!
//! One 64-bit atomic per slot: the upper 32 bits are the slot's
//! *generation* (bumped every time the slot is freed, so handles to an older
//! tensor go stale); the lower 32 bits say who holds it:
//!
//! | bits   | meaning |
//! |--------|---------|
//! | 31     | `WRITER`: one [`SlotMut`](crate::SlotMut) owns the slot exclusively; bits 0..31 are then the writer's process id |
//! | 20..31 | pending: references carried by handles not yet taken (at most 2047) |
//! | 0..20  | refs: live read-only references (at most 2^20 - 1) |
//!
//! A slot is free when the lower word is 0. Because generation and holders
//! share one word, every claim ("take the pending reference of generation
//! g", "add a reader to generation g") is one compare-and-swap that checks
//! both: a handle to a recycled slot can never claim the new tensor, and a
//! slot being written can never be read.
//!
//! Crash safety: every transition is one atomic operation on this word, and
//! none leaves a state that needs a second step to be consistent. The writer
//! is named in the word itself (so a dead writer's slot is found without a
//! separate owner field that a crash could leave stale), and the last
//! reference going away moves to `(generation + 1, free)` in the same
//! operation (so a process that dies right after it leaves a free slot, not
//! a half-freed one). Whether a free slot is also marked in its class's free
//! bitmap is a separate, repairable hint (`sync/freebits.rs`).

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
pub(crate) const fn pack(generation: u32, holders: u32) -> u64 {
    ((generation as u64) << 32) | holders as u64
}

/// The holders value of a slot written by process `pid`.
#[inline]
pub(crate) const fn writer(pid: u32) -> u32 {
    WRITER | (pid & !WRITER)
}

/// The process writing a slot in `state`, if a writer holds it.
#[inline]
pub(crate) const fn writer_pid(state: u64) -> Option<u32> {
    let h = holders(state);
    if h & WRITER != 0 {
        Some(h & !WRITER)
    } else {
        None
    }
}

/// Live read-only references in a state (0 while a writer holds it).
#[inline]
pub(crate) const fn refs(state: u64) -> u32 {
    let h = holders(state);
    if h & WRITER != 0 {
        0
    } else {
        h & REFS
    }
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

/// Claims a free slot for writing by process `pid`. Returns its
/// generation, or the state found if the slot was not free (a stale hint
/// in the free bitmap, or another claimer first).
#[inline]
pub(crate) fn begin_write<A: AtomicWord<Value = u64>>(st: &A, pid: u32) -> Result<u32, u64> {
    let mut s = st.load(Ordering::Relaxed);
    loop {
        if holders(s) != 0 {
            return Err(s);
        }
        let claimed = pack(generation(s), writer(pid));
        // Acquire: pairs with the Release of the operation that freed the
        // slot (`release`, `give_up`, `seize`): the previous holders'
        // accesses happen-before ours.
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

/// The writer gives the slot up unpublished: it becomes free, of the next
/// generation.
#[inline]
pub(crate) fn give_up<A: AtomicWord<Value = u64>>(st: &A, generation: u32) {
    // Release: pairs with the Acquire CAS in `begin_write` of the next
    // writer. A store: the writer holds the slot exclusively.
    st.store(pack(generation.wrapping_add(1), 0), Ordering::Release);
}

/// Takes a slot away from holders that died, freeing it: succeeds only if
/// the state is still exactly `seen` and `seen` is one of the states a dead
/// process can be the only holder of: a writer, one read reference, or one
/// pending reference (a handle that was never delivered). Leaves
/// `(generation + 1, free)`.
#[inline]
pub(crate) fn seize<A: AtomicWord<Value = u64>>(st: &A, seen: u64) -> bool {
    let h = holders(seen);
    if h & WRITER == 0 && h != 1 && h != PENDING {
        return false;
    }
    // AcqRel: the dead holder's accesses are done (it is dead); Release
    // publishes the free state to the next `begin_write`.
    st.compare_exchange(
        seen,
        pack(generation(seen).wrapping_add(1), 0),
        Ordering::AcqRel,
        Ordering::Relaxed,
    )
    .is_ok()
}

/// Takes a published-but-unsent slot back for its writer `pid`: the
/// handle's pending reference becomes the writer again. Only valid while
/// nobody can know the handle (a send whose ring push failed). Returns false
/// if the reference was taken meanwhile (someone forged the handle).
#[inline]
pub(crate) fn unpublish<A: AtomicWord<Value = u64>>(st: &A, generation: u32, pid: u32) -> bool {
    st.compare_exchange(
        pack(generation, PENDING),
        pack(generation, writer(pid)),
        Ordering::Relaxed,
        Ordering::Relaxed,
    )
    .is_ok()
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

/// Takes the reference of a message delivered by an SPSC ring, for
/// generation `gen`. Its producer does not publish the slot before pushing
/// the handle (the cell's sequence store is the publication, and the
/// consumer's load of it orders the payload), so the slot is still its
/// writer's, and becomes one read reference here. It may also carry a
/// pending reference instead, if a reaper published it for a producer that
/// died (`publish_for`), or if it was sent as a pending handle.
///
/// Only for handles read from an SPSC ring's cell: a writer's slot named
/// anywhere else is being written.
#[inline]
pub(crate) fn claim_sent<A: AtomicWord<Value = u64>>(st: &A, gen: u32) -> Result<(), Refused> {
    let mut s = st.load(Ordering::Relaxed);
    loop {
        if generation(s) != gen {
            return Err(Refused::Stale { now: generation(s) });
        }
        let h = holders(s);
        let new = if h & WRITER != 0 {
            1
        } else if h == 0 {
            return Err(Refused::Stale { now: generation(s) });
        } else if h & PENDINGS == 0 {
            return Err(Refused::NotPending);
        } else if refs(s) == REFS {
            return Err(Refused::Overflow);
        } else {
            h - PENDING + 1
        };
        // AcqRel: Acquire as in `claim` (the ring's cell ordered the
        // payload already); Release so that a reaper reading this state
        // also sees the producer's writes before it (`owner_pid` cleared at
        // allocation), as the producer's publication used to give it.
        match st.compare_exchange_weak(s, pack(gen, new), Ordering::AcqRel, Ordering::Relaxed) {
            Ok(_) => return Ok(()),
            Err(now) => s = now,
        }
    }
}

/// Publishes, for a producer `pid` that died, a slot whose handle it had
/// pushed on an SPSC ring (see [`claim_sent`]): its writer state becomes a
/// pending reference, so that the dead process's slots can be reclaimed
/// without this one. Returns false if the slot is not (or no longer) in
/// `pid`'s writer state for generation `gen` (taken meanwhile, say).
#[inline]
pub(crate) fn publish_for<A: AtomicWord<Value = u64>>(st: &A, gen: u32, pid: u32) -> bool {
    // Relaxed: the payload was ordered by the ring's cell; this only moves
    // the reference from the dead writer to the handle on the ring.
    st.compare_exchange(
        pack(gen, writer(pid)),
        pack(gen, PENDING),
        Ordering::Relaxed,
        Ordering::Relaxed,
    )
    .is_ok()
}

/// Adds a reader to a slot the caller already reads (a clone).
///
/// Panics if the slot already has 2^20 - 1 readers, as `Arc` aborts on
/// overflow; the count never spills into the neighbouring bits.
#[inline]
pub(crate) fn add_ref<A: AtomicWord<Value = u64>>(st: &A) {
    update(st, |h| (h & REFS < REFS).then(|| h + 1), "readers");
}

/// Turns one of the caller's read references into a handle-carried one.
///
/// Panics if 2047 handles of the slot are already pending.
#[inline]
pub(crate) fn to_pending<A: AtomicWord<Value = u64>>(st: &A) {
    update(
        st,
        |h| (h & PENDINGS != PENDINGS && h & REFS != 0).then(|| h + PENDING - 1),
        "pending handles",
    );
}

/// Adds a handle-carried reference to a published slot the caller keeps
/// alive by other means (a broadcast view, see `Slot`).
///
/// Panics if 2047 handles of the slot are already pending.
#[inline]
pub(crate) fn add_pending<A: AtomicWord<Value = u64>>(st: &A) {
    update(
        st,
        |h| (h & PENDINGS != PENDINGS).then(|| h + PENDING),
        "pending handles",
    );
}

/// Applies `f` to the holders with a CAS loop (generation unchanged);
/// panics with `what` if `f` refuses. Only for a published slot the caller
/// holds (never a writer's).
#[inline]
fn update<A: AtomicWord<Value = u64>>(st: &A, f: impl Fn(u32) -> Option<u32>, what: &str) {
    // Relaxed load; Release on success: a taker in another process must see
    // what this holder saw (for `to_pending`); harmless for `add_ref`.
    let mut s = st.load(Ordering::Relaxed);
    loop {
        debug_assert!(
            holders(s) & WRITER == 0,
            "psyne bug: update of a written slot"
        );
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
/// slot is then already free, of the next generation (the caller marks it
/// in the free bitmap).
#[inline]
pub(crate) fn release<A: AtomicWord<Value = u64>>(st: &A) -> bool {
    let mut s = st.load(Ordering::Relaxed);
    loop {
        let h = holders(s);
        assert!(
            h & WRITER == 0 && h & REFS != 0,
            "psyne bug: releasing a slot reference nobody holds (state {s:#x})"
        );
        let (new, last) = if h == 1 {
            (pack(generation(s).wrapping_add(1), 0), true)
        } else {
            (pack(generation(s), h - 1), false)
        };
        // AcqRel: our reads of the slot happen-before the free that the
        // last holder performs, and the last holder sees everyone's; the
        // Release half publishes the free state to the next `begin_write`.
        match st.compare_exchange_weak(s, new, Ordering::AcqRel, Ordering::Relaxed) {
            Ok(_) => return last,
            Err(now) => s = now,
        }
    }
}

/// Leaves a group that holds one reference to a slot collectively (a
/// broadcast message's holders: a bit each in a holder word, see
/// `ring/broadcast.rs`): clears `bit`. Returns true if it was the last bit
/// set: the caller then releases the group's reference ([`release`]).
#[inline]
pub(crate) fn leave_group<A: AtomicWord<Value = u64>>(holder: &A, bit: u64) -> bool {
    // AcqRel: every member's reads of the slot happen-before the release by
    // the member that clears the last bit.
    let old = holder.fetch_and(!bit, Ordering::AcqRel);
    old & bit != 0 && old & !bit == 0
}

#[cfg(all(test, not(psyne_loom)))]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;

    #[test]
    fn lifecycle() {
        let st = AtomicU64::new(0);
        assert_eq!(begin_write(&st, 42), Ok(0));
        assert_eq!(writer_pid(st.load(Ordering::Relaxed)), Some(42));
        assert_eq!(claim(&st, 0, false), Err(Refused::Writing));
        assert_eq!(claim(&st, 0, true), Err(Refused::Writing));
        publish(&st, 0, true);
        assert_eq!(writer_pid(st.load(Ordering::Relaxed)), None);
        assert_eq!(claim(&st, 1, true), Err(Refused::Stale { now: 0 }));
        assert_eq!(claim(&st, 0, false), Ok(())); // a reader alongside the pending handle
        assert_eq!(claim(&st, 0, true), Ok(())); // the handle is taken
        assert_eq!(claim(&st, 0, true), Err(Refused::NotPending)); // only once
        assert_eq!(refs(st.load(Ordering::Relaxed)), 2);
        assert!(!release(&st));
        assert!(release(&st));
        // The last release freed the slot and moved the generation on.
        assert_eq!(st.load(Ordering::Relaxed), pack(1, 0));
        assert_eq!(claim(&st, 0, false), Err(Refused::Stale { now: 1 }));
        assert_eq!(begin_write(&st, 7), Ok(1));
        give_up(&st, 1);
        assert_eq!(st.load(Ordering::Relaxed), pack(2, 0));
    }

    #[test]
    fn a_busy_slot_is_not_claimed_for_writing() {
        let st = AtomicU64::new(pack(3, 2));
        assert_eq!(begin_write(&st, 1), Err(pack(3, 2)));
    }

    #[test]
    fn seize_takes_only_what_a_dead_process_can_hold_alone() {
        for h in [writer(9), 1, PENDING] {
            let st = AtomicU64::new(pack(4, h));
            assert!(seize(&st, pack(4, h)));
            assert_eq!(st.load(Ordering::Relaxed), pack(5, 0));
        }
        for h in [0, 2, PENDING + 1, 2 * PENDING] {
            let st = AtomicU64::new(pack(4, h));
            assert!(!seize(&st, pack(4, h)), "{h:#x}");
            assert_eq!(st.load(Ordering::Relaxed), pack(4, h));
        }
        // Changed since it was seen: left alone.
        let st = AtomicU64::new(pack(4, 2));
        assert!(!seize(&st, pack(4, 1)));
    }

    #[test]
    fn unpublish_gives_the_writer_back_its_slot() {
        let st = AtomicU64::new(0);
        begin_write(&st, 5).unwrap();
        publish(&st, 0, true);
        assert!(unpublish(&st, 0, 5));
        assert_eq!(writer_pid(st.load(Ordering::Relaxed)), Some(5));
        publish(&st, 0, true);
        claim(&st, 0, true).unwrap();
        assert!(!unpublish(&st, 0, 5));
    }

    #[test]
    fn a_sent_slot_is_claimed_from_its_writer_or_its_pending_handle() {
        // As an SPSC producer leaves it: the writer's.
        let st = AtomicU64::new(pack(3, 0));
        assert_eq!(begin_write(&st, 9), Ok(3));
        assert_eq!(claim(&st, 3, true), Err(Refused::Writing), "not for `take`");
        assert_eq!(claim_sent(&st, 2), Err(Refused::Stale { now: 3 }));
        assert_eq!(claim_sent(&st, 3), Ok(()));
        assert_eq!(st.load(Ordering::Relaxed), pack(3, 1));
        assert_eq!(claim_sent(&st, 3), Err(Refused::NotPending), "only once");
        assert!(!publish_for(&st, 3, 9), "taken already");
        assert!(release(&st));
        assert_eq!(claim_sent(&st, 3), Err(Refused::Stale { now: 4 }));
        // Published for a dead producer by a reaper: a pending handle.
        let st = AtomicU64::new(pack(7, 0));
        begin_write(&st, 9).unwrap();
        assert!(!publish_for(&st, 7, 8), "another writer's");
        assert!(!publish_for(&st, 6, 9), "another generation");
        assert!(publish_for(&st, 7, 9));
        assert_eq!(st.load(Ordering::Relaxed), pack(7, PENDING));
        assert!(!seize(&st, pack(7, writer(9))), "no longer the writer's");
        assert_eq!(claim_sent(&st, 7), Ok(()));
        assert_eq!(st.load(Ordering::Relaxed), pack(7, 1));
        // A free slot is stale for any handle.
        let st = AtomicU64::new(pack(7, 0));
        assert_eq!(claim_sent(&st, 7), Err(Refused::Stale { now: 7 }));
        // At the reference limit: refused, unchanged.
        let full = AtomicU64::new(pack(5, PENDING | REFS));
        assert_eq!(claim_sent(&full, 5), Err(Refused::Overflow));
        assert_eq!(full.load(Ordering::Relaxed), pack(5, PENDING | REFS));
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
        assert!(std::panic::catch_unwind(|| add_pending(&pend)).is_err());
        assert_eq!(holders(pend.load(Ordering::Relaxed)) & WRITER, 0);
    }

    #[test]
    fn pending_handles_from_readers() {
        let st = AtomicU64::new(0);
        begin_write(&st, 1).unwrap();
        publish(&st, 0, false);
        add_ref(&st);
        to_pending(&st); // one reader becomes a handle
        assert_eq!(refs(st.load(Ordering::Relaxed)), 1);
        assert!(!release(&st));
        assert_eq!(claim(&st, 0, true), Ok(()));
        add_pending(&st);
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

    /// Finish with a reference; the last holder's release frees the slot
    /// and a new writer reuses it at once (writing the payload).
    fn drop_ref(s: &SlotModel) {
        if release(&s.state) {
            let g = begin_write(&s.state, 2).expect("free slot");
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
            let g = begin_write(&s.state, 1).unwrap();
            // SAFETY: exclusive after begin_write.
            s.payload.with_mut(|p| unsafe { *p = 42 });
            publish(&s.state, g, true);
            if claim(&s.state, 0, false).is_ok() {
                assert_eq!(read(&s), 42);
                drop_ref(&s);
            }
            taker.join().unwrap();
            let end = s.state.load(Ordering::Relaxed);
            assert_eq!((generation(end), holders(end)), (1, writer(2)));
        });
    }

    /// An SPSC message: the producer writes the payload and publishes the
    /// ring cell (a sequence word; the slot stays in its writer state),
    /// then dies; a reaper publishes the slot for it and reclaims what the
    /// dead process held in its own name, while the consumer, which saw
    /// the cell, takes the message. In every order the consumer gets the
    /// message and reads the payload, the reaper frees nothing it took, and
    /// the slot is freed exactly once (by the consumer's release).
    #[test]
    fn loom_a_sent_message_survives_its_dead_producer() {
        loom::model(|| {
            const DEAD: u32 = 9;
            let s = Arc::new(SlotModel {
                state: AtomicU64::new(0),
                payload: UnsafeCell::new(0),
            });
            let seq = Arc::new(AtomicU64::new(0));
            let (s2, seq2) = (s.clone(), seq.clone());
            let consumer = loom::thread::spawn(move || {
                while seq2.load(Ordering::Acquire) == 0 {
                    loom::thread::yield_now();
                }
                claim_sent(&s2.state, 0).expect("the message is not lost");
                assert_eq!(read(&s2), 42);
                assert!(release(&s2.state), "the only holder");
            });
            // The producer.
            let g = begin_write(&s.state, DEAD).unwrap();
            // SAFETY: exclusive after begin_write.
            s.payload.with_mut(|p| unsafe { *p = 42 });
            seq.store(1, Ordering::Release);
            // It died; the reaper finds the handle on the ring, then
            // reclaims the dead writer's slots (`Slab::reclaim_owner`).
            publish_for(&s.state, g, DEAD);
            let seen = s.state.load(Ordering::Acquire);
            if writer_pid(seen) == Some(DEAD) {
                // Never reached: the slot was published or taken. (Without
                // `publish_for`, this seizes the message under the consumer.)
                seize(&s.state, seen);
            }
            consumer.join().unwrap();
            assert_eq!(s.state.load(Ordering::Relaxed), pack(1, 0));
        });
    }

    /// Two readers release concurrently: exactly one sees itself last, and
    /// the slot ends free, one generation on.
    #[test]
    fn loom_last_release_is_unique() {
        loom::model(|| {
            let st = Arc::new(AtomicU64::new(pack(0, 2)));
            let st2 = st.clone();
            let t = loom::thread::spawn(move || release(&*st2));
            let mine = release(&*st);
            let theirs = t.join().unwrap();
            assert!(mine ^ theirs);
            assert_eq!(st.load(Ordering::Relaxed), pack(1, 0));
        });
    }

    /// A reaper seizes the reference of a reader that died while a live
    /// reader releases its own: exactly one of them frees the slot, and the
    /// slot is freed exactly once.
    #[test]
    fn loom_seize_races_a_live_release() {
        loom::model(|| {
            let st = Arc::new(AtomicU64::new(pack(3, 2)));
            let st2 = st.clone();
            // The live reader drops its reference.
            let t = loom::thread::spawn(move || release(&*st2));
            // The reaper sees the state, and seizes only a lone reference.
            let seen = st.load(Ordering::Acquire);
            let seized = seize(&*st, seen);
            let last = t.join().unwrap();
            if seized {
                // The live release happened first, leaving the dead one's
                // reference alone; the reaper freed the slot.
                assert!(!last);
            } else {
                // Seen with two holders (or changed under the reaper): the
                // dead reference is still counted and the slot is not free.
                assert!(!last);
                assert_eq!(st.load(Ordering::Relaxed), pack(3, 1));
                assert!(seize(&*st, pack(3, 1)));
            }
            assert_eq!(st.load(Ordering::Relaxed), pack(4, 0));
        });
    }
}
