//! The free bitmap of a size class: one bit per slot, set while the slot is
//! free. A hint for finding free slots fast, not the truth.
//!
//! The truth is each slot's state word (`sync/slotstate.rs`): a slot is
//! free exactly when its holders are 0, and a slot is taken for writing
//! only by the compare-and-swap that moves its state from free to `WRITER`.
//! Allocation clears a bit (a CAS on one word), then claims the slot's
//! state; freeing sets the state free (one atomic operation, which also
//! moves the generation on), then sets the bit.
//!
//! Because setting a bit is idempotent and claiming goes through the state
//! word, the bitmap can be repaired at any time by anyone, without locks
//! and without knowing who is doing what: [`repair`] sets the bit of every
//! slot whose state says free. That is what makes the allocator safe
//! against processes killed in the middle of an allocation (bit cleared,
//! state not claimed yet) or of a free (state freed, bit not set yet): the
//! slot stays free and the next repair makes it findable again. A stale bit
//! (set for a slot that is in use, left by a repair that raced an
//! allocator) costs the next allocator one failed claim, after which the
//! bit is gone; it never gives a slot two writers.
//!
//! Nothing here is a pointer; words and indices only, so the bitmap works
//! across processes.

use super::{slotstate, AtomicWord, Ordering};

/// Bits per bitmap word.
pub(crate) const WORD_BITS: usize = 64;

/// Bitmap words for `count` slots.
pub(crate) const fn words_for(count: u32) -> usize {
    (count as usize).div_ceil(WORD_BITS)
}

/// The bits of a fresh class of `count` slots: every slot free. Returns
/// the value of word `w`.
pub(crate) const fn initial_word(count: u32, w: usize) -> u64 {
    let first = w * WORD_BITS;
    let n = count as usize - first;
    if n >= WORD_BITS {
        u64::MAX
    } else {
        (1u64 << n) - 1
    }
}

/// Clears one set bit, looking at the words cyclically from word `start`
/// (0 if out of range; lowest bit first within a word). Returns `(word, index)` of the bit
/// cleared, or `None` if every word read was empty.
/// (The slab uses [`take_many`]; the tests and models use this.)
#[cfg(test)]
#[inline]
pub(crate) fn take<A: AtomicWord<Value = u64>>(
    words: &[A],
    start: usize,
) -> Option<(usize, usize)> {
    let (w, mask) = take_many(words, start, 1)?;
    Some((w, w * WORD_BITS + mask.trailing_zeros() as usize))
}

/// Clears up to `max` (at least 1) set bits of one word, the lowest ones,
/// looking at the words cyclically from word `start` (0 if out of range).
/// Returns the word and the mask of the bits cleared (never empty), or
/// `None` if every word read was empty. The caller now holds those slots'
/// bits: it claims each slot's state word when it uses it (a claim may
/// still be refused: a repair can re-set the bit of a slot the caller
/// holds, and someone else may claim it first), and puts back the bits of
/// those it does not use.
#[inline]
pub(crate) fn take_many<A: AtomicWord<Value = u64>>(
    words: &[A],
    start: usize,
    max: u32,
) -> Option<(usize, u64)> {
    let n = words.len();
    let mut next = if start < n { start } else { 0 };
    for _ in 0..n {
        let w = next;
        next = if w + 1 == n { 0 } else { w + 1 };
        // Acquire: pairs with the Release in `put`. (The slot's state word
        // carries the real synchronisation; this keeps the hint coherent.)
        let mut bits = words[w].load(Ordering::Acquire);
        while bits != 0 {
            let mask = lowest_bits(bits, max);
            match words[w].compare_exchange_weak(
                bits,
                bits & !mask,
                Ordering::Acquire,
                Ordering::Acquire,
            ) {
                Ok(_) => return Some((w, mask)),
                Err(now) => bits = now,
            }
        }
    }
    None
}

/// The lowest `max` (at least 1) set bits of `bits`.
#[inline]
fn lowest_bits(mut bits: u64, max: u32) -> u64 {
    let mut mask = 0;
    for _ in 0..max.max(1) {
        if bits == 0 {
            break;
        }
        let low = bits & bits.wrapping_neg();
        mask |= low;
        bits &= !low;
    }
    mask
}

/// Sets the bits of `mask` in word `w` (slots whose bits a caller of
/// [`take_many`] held and did not use; their states must say free, or be
/// claimed by someone a repair let in).
#[inline]
pub(crate) fn put_many<A: AtomicWord<Value = u64>>(words: &[A], w: usize, mask: u64) {
    // Release: pairs with the Acquire in `take_many`.
    words[w].fetch_or(mask, Ordering::Release);
}

/// Sets the bit of slot `index` (the slot's state must already say free).
#[inline]
pub(crate) fn put<A: AtomicWord<Value = u64>>(words: &[A], index: usize) {
    // Release: pairs with the Acquire in `take`.
    words[index / WORD_BITS].fetch_or(1u64 << (index % WORD_BITS), Ordering::Release);
}

/// Whether the bit of slot `index` is set.
#[inline]
pub(crate) fn is_set<A: AtomicWord<Value = u64>>(words: &[A], index: usize) -> bool {
    words[index / WORD_BITS].load(Ordering::Relaxed) & (1u64 << (index % WORD_BITS)) != 0
}

/// Sets the bit of every slot whose state word says free, for slots
/// `0..states.len()`; `state(i)` gives slot `i`'s state word. Returns how
/// many bits it set (slots that a crash had left free but unfindable, or
/// that a live allocator or freer was between its two steps on).
pub(crate) fn repair<'a, A, S>(words: &[A], count: usize, state: impl Fn(usize) -> &'a S) -> usize
where
    A: AtomicWord<Value = u64>,
    S: AtomicWord<Value = u64> + 'a,
{
    let mut set = 0;
    for i in 0..count {
        if slotstate::holders(state(i).load(Ordering::Acquire)) == 0 && !is_set(words, i) {
            put(words, i);
            set += 1;
        }
    }
    set
}

#[cfg(all(test, not(psyne_loom)))]
mod tests {
    use super::*;
    use crate::sync::slotstate::{begin_write, give_up};
    use std::sync::atomic::{AtomicBool, AtomicU64};
    use std::sync::Arc;

    struct Class {
        bits: Vec<AtomicU64>,
        states: Vec<AtomicU64>,
    }

    impl Class {
        fn new(n: u32) -> Self {
            Class {
                bits: (0..words_for(n))
                    .map(|w| AtomicU64::new(initial_word(n, w)))
                    .collect(),
                states: (0..n).map(|_| AtomicU64::new(0)).collect(),
            }
        }
        fn alloc(&self) -> Option<(usize, u32)> {
            while let Some((_, i)) = take(&self.bits, 0) {
                if let Ok(g) = begin_write(&self.states[i], 1) {
                    return Some((i, g));
                }
            }
            None
        }
        fn free(&self, i: usize, g: u32) {
            give_up(&self.states[i], g);
            put(&self.bits, i);
        }
        fn repair(&self) -> usize {
            repair(&self.bits, self.states.len(), |i| &self.states[i])
        }
    }

    #[test]
    fn initial_words_cover_exactly_the_slots() {
        assert_eq!(words_for(1), 1);
        assert_eq!(words_for(64), 1);
        assert_eq!(words_for(65), 2);
        assert_eq!(initial_word(3, 0), 0b111);
        assert_eq!(initial_word(64, 0), u64::MAX);
        assert_eq!(initial_word(70, 1), 0b11_1111);
    }

    #[test]
    fn lowest_first_and_empty() {
        let c = Class::new(70);
        let got: Vec<usize> = std::iter::from_fn(|| c.alloc().map(|x| x.0)).collect();
        assert_eq!(got, (0..70).collect::<Vec<_>>());
        c.free(66, 0);
        c.free(3, 0);
        assert_eq!(c.alloc().map(|x| x.0), Some(3));
        assert_eq!(c.alloc().map(|x| x.0), Some(66));
        assert_eq!(c.alloc(), None);
    }

    #[test]
    fn a_slot_lost_between_the_two_steps_is_repaired() {
        let c = Class::new(2);
        // An allocator clears slot 0's bit and dies before claiming it.
        assert_eq!(take(&c.bits, 0), Some((0, 0)));
        // A freer frees slot 1 (already claimed) and dies before its bit.
        let g = begin_write(&c.states[1], 1).unwrap();
        let _ = take(&c.bits, 0);
        give_up(&c.states[1], g);
        assert_eq!(c.alloc(), None, "both are lost to the bitmap");
        assert_eq!(c.repair(), 2);
        assert_eq!(c.repair(), 0, "idempotent");
        let mut got: Vec<usize> = std::iter::from_fn(|| c.alloc().map(|x| x.0)).collect();
        got.sort();
        assert_eq!(got, [0, 1]);
    }

    #[test]
    fn a_stale_bit_never_gives_a_slot_two_writers() {
        let c = Class::new(1);
        let (i, _) = c.alloc().unwrap();
        put(&c.bits, i); // damaged: the bit says free while the slot is held
        assert_eq!(c.alloc(), None, "the claim on the state word refuses it");
        assert!(!is_set(&c.bits, i), "and the stale bit is gone");
    }

    #[test]
    fn threads_never_share_a_slot_while_repairs_run() {
        let n = 8u32;
        let rounds = if cfg!(miri) { 40 } else { 20_000 };
        let c = Arc::new(Class::new(n));
        let owned: Arc<Vec<AtomicBool>> =
            Arc::new((0..n).map(|_| AtomicBool::new(false)).collect());
        let stop = Arc::new(AtomicBool::new(false));
        let repairer = {
            let (c, stop) = (c.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    c.repair();
                    std::thread::yield_now();
                }
            })
        };
        let hs: Vec<_> = (0..4)
            .map(|_| {
                let (c, owned) = (c.clone(), owned.clone());
                std::thread::spawn(move || {
                    for _ in 0..rounds {
                        if let Some((i, g)) = c.alloc() {
                            assert!(!owned[i].swap(true, Ordering::Relaxed), "two writers");
                            owned[i].store(false, Ordering::Relaxed);
                            c.free(i, g);
                        }
                    }
                })
            })
            .collect();
        for h in hs {
            h.join().unwrap();
        }
        stop.store(true, Ordering::Relaxed);
        repairer.join().unwrap();
        let mut got: Vec<usize> = std::iter::from_fn(|| c.alloc().map(|x| x.0)).collect();
        got.sort();
        assert_eq!(got, (0..n as usize).collect::<Vec<_>>());
    }
}

/// Loom models: `RUSTFLAGS="--cfg psyne_loom" cargo test --release --lib loom`.
/// They check the allocator's protocol as a whole: the bitmap together with
/// the slot state words, as `Slab::alloc`, `Slab::free` and `Slab::repair`
/// use them.
#[cfg(all(test, psyne_loom))]
mod loom_model {
    use super::*;
    use crate::sync::loom_outcomes;
    use crate::sync::slotstate::{begin_write, give_up};
    use loom::cell::UnsafeCell;
    use loom::sync::atomic::{AtomicBool, AtomicU64};
    use loom::sync::Arc;

    struct Class {
        bits: Vec<AtomicU64>,
        states: Vec<AtomicU64>,
        owned: Vec<AtomicBool>,
        payload: Vec<UnsafeCell<u32>>,
    }

    // SAFETY: each payload is guarded by its slot's state word, which is
    // what the models check (loom reports a race otherwise).
    unsafe impl Sync for Class {}

    fn class(n: u32) -> Arc<Class> {
        Arc::new(Class {
            bits: (0..words_for(n))
                .map(|w| AtomicU64::new(initial_word(n, w)))
                .collect(),
            states: (0..n).map(|_| AtomicU64::new(0)).collect(),
            owned: (0..n).map(|_| AtomicBool::new(false)).collect(),
            payload: (0..n).map(|_| UnsafeCell::new(0)).collect(),
        })
    }

    /// `Slab::alloc`: clear a bit, claim the state; a refused claim (stale
    /// bit) just moves on. Marks the slot owned (two owners fail the model).
    fn alloc(c: &Class, pid: u32) -> Option<(usize, u32)> {
        while let Some((_, i)) = take(&c.bits, 0) {
            if let Ok(g) = begin_write(&c.states[i], pid) {
                assert!(
                    !c.owned[i].swap(true, Ordering::Relaxed),
                    "slot {i} has two writers"
                );
                return Some((i, g));
            }
        }
        None
    }

    /// `Slab::free` of a writer's slot: state free, then the bit.
    fn free(c: &Class, i: usize, g: u32) {
        c.owned[i].store(false, Ordering::Relaxed);
        give_up(&c.states[i], g);
        put(&c.bits, i);
    }

    fn repair_all(c: &Class) -> usize {
        repair(&c.bits, c.states.len(), |i| &c.states[i])
    }

    /// Two allocators race for the last free slot: exactly one wins.
    #[test]
    fn loom_last_slot_has_one_winner() {
        loom::model(|| {
            let c = class(1);
            let c2 = c.clone();
            let t = loom::thread::spawn(move || alloc(&c2, 2).is_some());
            let mine = alloc(&c, 1).is_some();
            let theirs = t.join().unwrap();
            assert!(mine ^ theirs);
        });
    }

    /// A slot's bytes written before it is freed are seen by whoever
    /// allocates it next (the state word's Release/Acquire pair).
    #[test]
    fn loom_free_publishes_slot_contents() {
        loom::model(|| {
            let c = class(1);
            let (i, g) = alloc(&c, 1).unwrap();
            let c2 = c.clone();
            let t = loom::thread::spawn(move || {
                if let Some((j, _)) = alloc(&c2, 2) {
                    // SAFETY: we own slot j; loom checks this read does not
                    // race with the previous owner's write.
                    let v = c2.payload[j].with(|p| unsafe { *p });
                    assert_eq!(v, 42);
                }
            });
            // SAFETY: we own slot i until we free it.
            c.payload[i].with_mut(|p| unsafe { *p = 42 });
            free(&c, i, g);
            t.join().unwrap();
        });
    }

    /// An allocator dies between clearing the bit and claiming the state
    /// (modelled by doing the first step only). A repair runs while two live
    /// allocators try their luck: the slot never gets two writers, and once
    /// the repair is done it can be allocated (by one of them, or after).
    #[test]
    fn loom_a_dead_allocators_slot_is_repaired() {
        loom::model(|| {
            let c = class(1);
            assert_eq!(take(&c.bits, 0), Some((0, 0))); // ... and dies
            let c2 = c.clone();
            let r = loom::thread::spawn(move || repair_all(&c2));
            let c3 = c.clone();
            let a = loom::thread::spawn(move || alloc(&c3, 3).is_some());
            let mine = alloc(&c, 1).is_some();
            let repaired = r.join().unwrap();
            let theirs = a.join().unwrap();
            assert!(!(mine && theirs));
            assert_eq!(repaired, 1, "the lost slot is found exactly once");
            let later = alloc(&c, 4).is_some();
            assert_eq!(mine as u32 + theirs as u32 + later as u32, 1);
        });
    }

    /// Allocates, writes the slot's bytes (loom checks that no other owner
    /// touches them meanwhile), frees.
    fn use_once(c: &Class, pid: u32) {
        if let Some((i, g)) = alloc(c, pid) {
            // SAFETY: we own slot i until we free it; a second owner, or a
            // previous owner whose writes are not ordered before ours, is a
            // race that loom reports.
            c.payload[i].with_mut(|p| unsafe { *p = pid });
            free(c, i, g);
        }
    }

    /// A repair runs while a live allocator is between its two steps (bit
    /// cleared, state not yet claimed) and a second allocator competes: the
    /// repair may re-set the bit, but the state word lets only one of them
    /// write. The same with a live freer between its two steps; and a slot
    /// found by the repair is handed over with its last owner's writes
    /// ordered before the next owner's.
    #[test]
    fn loom_repair_races_live_allocators_and_freers() {
        loom::model(|| {
            let c = class(1);
            let c2 = c.clone();
            let r = loom::thread::spawn(move || {
                repair_all(&c2);
            });
            let c3 = c.clone();
            let a = loom::thread::spawn(move || use_once(&c3, 3));
            use_once(&c, 1);
            r.join().unwrap();
            a.join().unwrap();
            // Whatever happened, the slot is free and findable (at most a
            // repair away: the bit is set by the last free in every order).
            assert!(alloc(&c, 4).is_some());
        });
    }

    // The batch operations. A sender's `SlotCache` (src/shm/slab.rs) is a
    // private `(word, mask)` per class, over `take_many` (a refill), the
    // state-word claim of each cached bit in turn, and `put_many`
    // (`Slab::put_back`). `Slab` and its classes work on `std` atomics in a
    // mapping, not on `AtomicWord`, so loom cannot drive the cache itself:
    // `Cache` below does with it what `Slab::alloc_from` does, through the
    // same shared-memory operations, which is what the models check.

    /// Per slot: whether its bit is out of the bitmap, held by someone
    /// (from the take until the put). Without a repair, the bitmap alone
    /// must never hand a bit to two holders.
    struct Held(Vec<AtomicBool>);

    impl Held {
        fn new(n: u32) -> Self {
            Held((0..n).map(|_| AtomicBool::new(false)).collect())
        }
        fn take(&self, w: usize, mask: u64) {
            for i in bits_of(w, mask) {
                assert!(
                    !self.0[i].swap(true, Ordering::Relaxed),
                    "bit {i} handed out twice"
                );
            }
        }
        /// Before the bits go back (the put's Release orders this store
        /// before the next taker's check).
        fn put(&self, w: usize, mask: u64) {
            for i in bits_of(w, mask) {
                self.0[i].store(false, Ordering::Relaxed);
            }
        }
    }

    fn bits_of(w: usize, mask: u64) -> impl Iterator<Item = usize> {
        (0..WORD_BITS)
            .filter(move |b| mask & (1 << b) != 0)
            .map(move |b| w * WORD_BITS + b)
    }

    /// A sender's cache of bits of one class (and, for the models, how
    /// many of its claims were refused).
    #[derive(Default)]
    struct Cache {
        word: usize,
        mask: u64,
        refused: u32,
    }

    impl Cache {
        /// `Slab::alloc_from` with a cache: the next cached bit, or a
        /// refill of up to `per_take` bits of one word, then the slot's
        /// state claim, moving on past a refused one. With `held` (no
        /// repair runs), a claim is never refused: a bit out of the bitmap
        /// names a free slot, and stays held until the slot's free.
        fn alloc(
            &mut self,
            c: &Class,
            held: Option<&Held>,
            per_take: u32,
            pid: u32,
        ) -> Option<(usize, u32)> {
            loop {
                if self.mask == 0 {
                    let (w, mask) = take_many(&c.bits, 0, per_take)?;
                    assert!(mask != 0 && mask.count_ones() <= per_take);
                    assert!(
                        bits_of(w, mask).all(|i| i < c.states.len()),
                        "a bit past the class"
                    );
                    if let Some(h) = held {
                        h.take(w, mask);
                    }
                    (self.word, self.mask) = (w, mask);
                }
                let i = self.word * WORD_BITS + self.mask.trailing_zeros() as usize;
                self.mask &= self.mask - 1;
                match begin_write(&c.states[i], pid) {
                    Ok(g) => {
                        assert!(
                            !c.owned[i].swap(true, Ordering::Relaxed),
                            "slot {i} has two writers"
                        );
                        return Some((i, g));
                    }
                    Err(_) => {
                        assert!(held.is_none(), "slot {i}'s bit was out, the slot in use");
                        self.refused += 1;
                    }
                }
            }
        }

        /// `Slab::put_back`.
        fn put_back(&mut self, c: &Class, held: Option<&Held>) {
            let (w, mask) = (self.word, std::mem::take(&mut self.mask));
            if mask != 0 {
                if let Some(h) = held {
                    h.put(w, mask);
                }
                put_many(&c.bits, w, mask);
            }
        }
    }

    /// Writes slot `i`'s bytes as its owner, then frees it (state, then
    /// bit, as `free`).
    fn write_and_free(c: &Class, held: Option<&Held>, i: usize, g: u32, pid: u32) {
        // SAFETY: we own slot i until we free it; a second owner, or a
        // previous owner whose writes are not ordered before ours, is a
        // race that loom reports.
        c.payload[i].with_mut(|p| unsafe { *p = pid });
        if let Some(h) = held {
            h.put(i / WORD_BITS, 1 << (i % WORD_BITS));
        }
        free(c, i, g);
    }

    /// Every slot is free and findable: the bitmap is whole again (no bit
    /// lost to a racing read-modify-write) and each slot is allocated
    /// exactly once.
    fn all_free(c: &Class, n: u32) {
        assert_eq!(c.bits[0].load(Ordering::Relaxed), initial_word(n, 0));
        let mut got: Vec<usize> = std::iter::from_fn(|| alloc(c, 9).map(|x| x.0)).collect();
        got.sort();
        assert_eq!(got, (0..n as usize).collect::<Vec<_>>());
    }

    /// A sender refills its cache with `take_many` (three bits of a
    /// four-slot class) and claims one slot; it puts the other two bits
    /// back with `put_many` while that slot is still in use (as
    /// `Slab::put_back` does when a `Sender` is dropped with a message it
    /// sent not yet freed), and then the slot is written and freed. Another
    /// allocator meanwhile takes, uses and frees single slots
    /// (`take_many` of one bit) twice. No bit is handed to two holders,
    /// every claim of a bit taken succeeds (the bit named a free slot), no
    /// slot gets two writers (and loom sees each slot's bytes written by
    /// one owner at a time), and at the end every bit is set and every slot
    /// allocatable.
    #[test]
    fn loom_take_many_and_put_many_race_single_allocations() {
        let outcomes = loom_outcomes(|| {
            let n = 4;
            let c = class(n);
            let held = Arc::new(Held::new(n));
            let (c2, held2) = (c.clone(), held.clone());
            let t = loom::thread::spawn(move || {
                let mut got = Vec::new();
                for _ in 0..2 {
                    let mut single = Cache::default();
                    if let Some((i, g)) = single.alloc(&c2, Some(&held2), 1, 2) {
                        got.push(i);
                        write_and_free(&c2, Some(&held2), i, g, 2);
                    }
                }
                got
            });
            let mut cache = Cache::default();
            let (i, g) = cache.alloc(&c, Some(&held), 3, 1).expect("a free slot");
            let (taken, used) = (cache.mask | 1 << i, i);
            cache.put_back(&c, Some(&held));
            write_and_free(&c, Some(&held), i, g, 1);
            let theirs = t.join().unwrap();
            all_free(&c, n);
            (taken, used, theirs)
        });
        // The races it is about: the other allocator took slot 0 before the
        // batch was taken (the batch is then slots 1 to 3), and it got a
        // slot whose bit the batch had taken and put back.
        assert!(outcomes.iter().any(|o| o.0 == 0b1110));
        assert!(outcomes.iter().any(|(taken, used, theirs)| theirs
            .iter()
            .any(|&i| i != *used && taken & 1 << i != 0)));
    }

    /// A sender holds both bits of a two-slot class in its cache. Another
    /// allocator that finds the bitmap empty repairs it (which sets the
    /// bits of the cached slots again: their states say free) and
    /// allocates again, as `Slab::alloc` does when full, while the sender
    /// uses a slot from its cache and puts the other bit back. The state word lets only one
    /// of them write a slot (a cached bit whose slot the other got is
    /// refused and dropped), and at the end every bit is set and both
    /// slots are allocatable again, without another repair.
    #[test]
    fn loom_repair_lends_cached_slots_to_another_allocator() {
        let outcomes = loom_outcomes(|| {
            let n = 2;
            let c = class(n);
            let (word, mask) = take_many(&c.bits, 0, 2).unwrap();
            assert_eq!((word, mask), (0, 0b11));
            let mut cache = Cache {
                word,
                mask,
                refused: 0,
            };
            let c2 = c.clone();
            let t = loom::thread::spawn(move || {
                let mut repaired = false;
                let got = alloc(&c2, 2).or_else(|| {
                    repaired = true;
                    repair_all(&c2);
                    alloc(&c2, 2)
                });
                if let Some((i, g)) = got {
                    write_and_free(&c2, None, i, g, 2);
                }
                (repaired, got.map(|x| x.0))
            });
            let mine = cache.alloc(&c, None, 2, 1);
            if let Some((i, g)) = mine {
                write_and_free(&c, None, i, g, 1);
            }
            cache.put_back(&c, None);
            let theirs = t.join().unwrap();
            all_free(&c, n);
            (cache.refused, mine.map(|x| x.0), theirs)
        });
        // (the sender's refused claims, its slot, (whether the other
        // allocator repaired, its slot)): every possible outcome, among
        // them the sender's claim of slot 0 refused because the other one
        // got it through the repair. (It gets slot 0 without a repair only
        // after the sender freed it, and slot 1 only from the repair.)
        assert_eq!(
            outcomes,
            [
                (0, Some(0), (false, Some(0))),
                (0, Some(0), (true, Some(0))),
                (0, Some(0), (true, Some(1))),
                (1, Some(1), (true, Some(0))),
            ]
            .into()
        );
    }
}
