//! A lock-free LIFO free list of slot indices (a Treiber stack) with a tagged
//! head against ABA.
//!
//! The head is one 64-bit word: the upper 32 bits are a tag incremented by
//! every successful push and pop, the lower 32 bits the index of the first
//! free slot ([`NIL`] when empty). Each slot has a 32-bit `next` link. The
//! links and the head live in shared memory, so the list works across
//! processes; nothing here is a pointer.
//!
//! ABA: a pop reads `head = (tag, i)` and `next(i) = j`, then swings the head
//! to `(tag + 1, j)` with a compare-and-swap. If meanwhile `i` was popped and
//! pushed back, the tag moved on and the CAS fails. A false success needs the
//! tag to wrap (2^32 operations on this class) between the pop's load and its
//! CAS, which a real process cannot do within one preemption.
//!
//! A link read from memory may be garbage (a damaged segment): every index is
//! checked against the slot count before use and reported as corruption.

use super::{AtomicWord, Ordering};

/// The empty-list index.
pub(crate) const NIL: u32 = u32::MAX;

#[inline]
pub(crate) const fn pack(tag: u32, index: u32) -> u64 {
    ((tag as u64) << 32) | index as u64
}

#[inline]
pub(crate) const fn unpack(word: u64) -> (u32, u32) {
    ((word >> 32) as u32, word as u32)
}

/// A link read from the list pointed outside the slot table.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct BadLink(pub u32);

/// Pops a free index.
///
/// `link(i)` returns slot `i`'s `next` word, or `None` when `i` is out of
/// range. Returns `Ok(None)` when the list is empty.
#[inline]
pub(crate) fn pop<'a, H, L>(
    head: &H,
    link: impl Fn(u32) -> Option<&'a L>,
) -> Result<Option<u32>, BadLink>
where
    H: AtomicWord<Value = u64>,
    L: AtomicWord<Value = u32> + 'a,
{
    // Acquire: pairs with the Release CAS in `push`, so the link written
    // before that push (and the slot's release by its last owner) is visible.
    let mut cur = head.load(Ordering::Acquire);
    loop {
        let (tag, index) = unpack(cur);
        if index == NIL {
            return Ok(None);
        }
        let next = link(index).ok_or(BadLink(index))?.load(Ordering::Relaxed);
        // Acquire on success: we now own `index` and must see everything its
        // previous owner did before pushing it. Failure reloads with Acquire
        // for the same reason as the first load.
        match head.compare_exchange_weak(
            cur,
            pack(tag.wrapping_add(1), next),
            Ordering::Acquire,
            Ordering::Acquire,
        ) {
            // A damaged `next` is stored as it is; the pop that meets it
            // reports it, and the index we took is ours either way.
            Ok(_) => return Ok(Some(index)),
            Err(actual) => cur = actual,
        }
    }
}

/// Pushes `index`, whose link word is `link`, onto the list.
///
/// The caller must own `index` (have popped it, or be formatting the list).
#[inline]
pub(crate) fn push<H, L>(head: &H, index: u32, link: &L)
where
    H: AtomicWord<Value = u64>,
    L: AtomicWord<Value = u32>,
{
    let mut cur = head.load(Ordering::Relaxed);
    loop {
        let (tag, first) = unpack(cur);
        // Relaxed: published by the Release CAS below.
        link.store(first, Ordering::Relaxed);
        // Release: pairs with the Acquire loads in `pop`; everything the
        // owner wrote to the slot, and the link above, happen-before the
        // next pop of `index`.
        match head.compare_exchange_weak(
            cur,
            pack(tag.wrapping_add(1), index),
            Ordering::Release,
            Ordering::Relaxed,
        ) {
            Ok(_) => return,
            Err(actual) => cur = actual,
        }
    }
}

#[cfg(all(test, not(psyne_loom)))]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64};
    use std::sync::Arc;

    struct List {
        head: AtomicU64,
        links: Vec<AtomicU32>,
    }

    impl List {
        fn new(n: u32) -> Self {
            let l = List {
                head: AtomicU64::new(pack(0, NIL)),
                links: (0..n).map(|_| AtomicU32::new(NIL)).collect(),
            };
            for i in (0..n).rev() {
                push(&l.head, i, &l.links[i as usize]);
            }
            l
        }
        fn pop(&self) -> Option<u32> {
            pop(&self.head, |i| self.links.get(i as usize)).unwrap()
        }
        fn push(&self, i: u32) {
            push(&self.head, i, &self.links[i as usize]);
        }
    }

    #[test]
    fn lifo_order_and_empty() {
        let l = List::new(3);
        assert_eq!(l.pop(), Some(0));
        assert_eq!(l.pop(), Some(1));
        l.push(0);
        assert_eq!(l.pop(), Some(0));
        assert_eq!(l.pop(), Some(2));
        assert_eq!(l.pop(), None);
    }

    #[test]
    fn corrupt_link_is_reported() {
        let l = List::new(2);
        l.links[0].store(77, Ordering::Relaxed); // 0 -> 77: outside the table
        assert_eq!(l.pop(), Some(0));
        assert_eq!(pop(&l.head, |i| l.links.get(i as usize)), Err(BadLink(77)));
    }

    #[test]
    fn threads_never_share_an_index() {
        let n = 8u32;
        let threads = 4;
        let rounds = if cfg!(miri) { 50 } else { 20_000 };
        let l = Arc::new(List::new(n));
        let owned: Arc<Vec<AtomicBool>> =
            Arc::new((0..n).map(|_| AtomicBool::new(false)).collect());
        let hs: Vec<_> = (0..threads)
            .map(|_| {
                let (l, owned) = (l.clone(), owned.clone());
                std::thread::spawn(move || {
                    for _ in 0..rounds {
                        if let Some(i) = l.pop() {
                            assert!(!owned[i as usize].swap(true, Ordering::Relaxed));
                            owned[i as usize].store(false, Ordering::Relaxed);
                            l.push(i);
                        }
                    }
                })
            })
            .collect();
        for h in hs {
            h.join().unwrap();
        }
        let mut got: Vec<u32> = std::iter::from_fn(|| l.pop()).collect();
        got.sort();
        assert_eq!(got, (0..n).collect::<Vec<_>>());
    }
}

/// Loom model: run with `RUSTFLAGS="--cfg psyne_loom" cargo test --release --lib loom`.
#[cfg(all(test, psyne_loom))]
mod loom_model {
    use super::*;
    use loom::sync::atomic::{AtomicBool, AtomicU32, AtomicU64};
    use loom::sync::Arc;

    struct List {
        head: AtomicU64,
        links: Vec<AtomicU32>,
        owned: Vec<AtomicBool>,
    }

    fn list(n: u32) -> Arc<List> {
        let l = List {
            head: AtomicU64::new(pack(0, NIL)),
            links: (0..n).map(|_| AtomicU32::new(NIL)).collect(),
            owned: (0..n).map(|_| AtomicBool::new(false)).collect(),
        };
        for i in (0..n).rev() {
            push(&l.head, i, &l.links[i as usize]);
        }
        Arc::new(l)
    }

    fn take(l: &List) -> Option<u32> {
        let i = pop(&l.head, |i| l.links.get(i as usize)).expect("no corruption")?;
        assert!(
            !l.owned[i as usize].swap(true, Ordering::Relaxed),
            "index {i} handed out twice"
        );
        Some(i)
    }

    fn give(l: &List, i: u32) {
        l.owned[i as usize].store(false, Ordering::Relaxed);
        push(&l.head, i, &l.links[i as usize]);
    }

    fn drain(l: &List) -> Vec<u32> {
        let mut v: Vec<u32> = std::iter::from_fn(|| take(l)).collect();
        v.sort();
        v
    }

    /// Two threads pop and push back concurrently, one of them twice in a
    /// row (the ABA pattern: pop A, pop B, push A while the other thread is
    /// between reading A's link and its CAS).
    #[test]
    fn loom_aba_pop_push() {
        loom::model(|| {
            let l = list(3);
            let l2 = l.clone();
            let t = loom::thread::spawn(move || {
                if let Some(a) = take(&l2) {
                    give(&l2, a);
                }
            });
            let a = take(&l);
            let b = take(&l);
            if let Some(a) = a {
                give(&l, a);
            }
            if let Some(b) = b {
                give(&l, b);
            }
            t.join().unwrap();
            assert_eq!(drain(&l), vec![0, 1, 2]);
        });
    }

    /// Two threads compete for the last free index: exactly one wins.
    #[test]
    fn loom_last_slot_has_one_winner() {
        loom::model(|| {
            let l = list(1);
            let l2 = l.clone();
            let t = loom::thread::spawn(move || take(&l2));
            let mine = take(&l);
            let theirs = t.join().unwrap();
            assert_eq!(mine.is_some() as u32 + theirs.is_some() as u32, 1);
            give(&l, mine.or(theirs).unwrap());
            assert_eq!(drain(&l), vec![0]);
        });
    }

    /// A freed slot's contents, written before the push, are seen by the
    /// thread that pops it next.
    #[test]
    fn loom_push_publishes_slot_contents() {
        use loom::cell::UnsafeCell;
        loom::model(|| {
            let l = list(1);
            let payload = Arc::new(UnsafeCell::new(0u32));
            let i = take(&l).unwrap();
            let (l2, p2) = (l.clone(), payload.clone());
            let t = loom::thread::spawn(move || {
                if let Some(j) = take(&l2) {
                    // SAFETY: we own slot j exclusively after a successful pop;
                    // loom checks that this read does not race with the write.
                    let v = p2.with(|p| unsafe { *p });
                    assert_eq!(v, 42);
                    give(&l2, j);
                }
            });
            // SAFETY: we own slot i; nobody else touches the payload until it
            // is pushed back.
            payload.with_mut(|p| unsafe { *p = 42 });
            give(&l, i);
            t.join().unwrap();
        });
    }
}
