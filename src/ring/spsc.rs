//! Single-producer single-consumer ring.
//!
//! Two 64-bit indices that only grow (`tail`: next slot to write, `head`:
//! next slot to read), each on its own cache line, and `capacity` cells of
//! two 64-bit words. Each side keeps a private copy of the other side's
//! index and reloads it only when the ring looks full (producer) or empty
//! (consumer), so in steady state a message costs one cache-line transfer
//! each way.
//!
//! The cell words are atomics written and read with `Relaxed` ordering: the
//! index stores and loads order them, and no byte is ever read while being
//! written by a correct peer. Using atomics for the payload words keeps the
//! ring free of `UnsafeCell` and lets the same code run under loom.

use super::Full;
use crate::sync::{AtomicWord, Ordering};

/// The shared part of an SPSC ring: references into shared memory (or, in
/// tests, into a vector of loom atomics).
pub(crate) struct Spsc<'a, A> {
    pub(crate) tail: &'a A,
    pub(crate) head: &'a A,
    /// `2 * capacity` words: cell `i` is words `2i` and `2i + 1`.
    pub(crate) cells: &'a [A],
}

/// The producer's private state.
#[derive(Copy, Clone, Debug, Default)]
pub(crate) struct Producer {
    tail: u64,
    head_cache: u64,
}

/// The consumer's private state.
#[derive(Copy, Clone, Debug, Default)]
pub(crate) struct Consumer {
    head: u64,
    tail_cache: u64,
}

impl<'a, A: AtomicWord<Value = u64>> Spsc<'a, A> {
    fn capacity(&self) -> u64 {
        (self.cells.len() / 2) as u64
    }

    fn cell(&self, index: u64) -> (&'a A, &'a A) {
        let i = (index & (self.capacity() - 1)) as usize * 2;
        (&self.cells[i], &self.cells[i + 1])
    }

    /// A producer attaching to a ring that may already hold messages.
    pub(crate) fn producer(&self) -> Producer {
        Producer {
            tail: self.tail.load(Ordering::Relaxed),
            head_cache: self.head.load(Ordering::Acquire),
        }
    }

    /// A consumer attaching to a ring that may already hold messages.
    pub(crate) fn consumer(&self) -> Consumer {
        Consumer {
            head: self.head.load(Ordering::Relaxed),
            tail_cache: self.tail.load(Ordering::Acquire),
        }
    }

    /// Appends `msg`, or gives it back if the ring is full.
    pub(crate) fn push(&self, p: &mut Producer, msg: [u64; 2]) -> Result<(), Full<[u64; 2]>> {
        if p.tail.wrapping_sub(p.head_cache) >= self.capacity() {
            // Acquire: pairs with the consumer's Release store of `head`;
            // its reads of the cells we are about to reuse are done.
            p.head_cache = self.head.load(Ordering::Acquire);
            if p.tail.wrapping_sub(p.head_cache) >= self.capacity() {
                return Err(Full(msg));
            }
        }
        let (lo, hi) = self.cell(p.tail);
        lo.store(msg[0], Ordering::Relaxed);
        hi.store(msg[1], Ordering::Relaxed);
        p.tail = p.tail.wrapping_add(1);
        // Release: publishes the cell words to the consumer's Acquire load.
        self.tail.store(p.tail, Ordering::Release);
        Ok(())
    }

    /// The oldest message, if any, left in the ring: follow with
    /// [`Spsc::advance`] once done with it (in a channel: once its slot's
    /// reference is taken, so that a consumer killed in between leaves the
    /// message where a reaper finds it).
    pub(crate) fn peek(&self, c: &mut Consumer) -> Option<[u64; 2]> {
        if c.head == c.tail_cache {
            // Acquire: pairs with the producer's Release store of `tail`.
            c.tail_cache = self.tail.load(Ordering::Acquire);
            if c.head == c.tail_cache {
                return None;
            }
        }
        let (lo, hi) = self.cell(c.head);
        Some([lo.load(Ordering::Relaxed), hi.load(Ordering::Relaxed)])
    }

    /// Removes the message [`Spsc::peek`] returned.
    pub(crate) fn advance(&self, c: &mut Consumer) {
        c.head = c.head.wrapping_add(1);
        // Release: our reads of the cell happen before the producer reuses it.
        self.head.store(c.head, Ordering::Release);
    }

    /// Takes the oldest message, if any.
    pub(crate) fn pop(&self, c: &mut Consumer) -> Option<[u64; 2]> {
        let msg = self.peek(c)?;
        self.advance(c);
        Some(msg)
    }

    /// The message at position `pos`, read without claiming it (for a
    /// reaper that knows the endpoint on the other side is dead or absent).
    pub(crate) fn at(&self, pos: u64) -> [u64; 2] {
        let (lo, hi) = self.cell(pos);
        [lo.load(Ordering::Acquire), hi.load(Ordering::Acquire)]
    }

    /// The shared indices `(head, tail)`.
    pub(crate) fn indices(&self) -> (u64, u64) {
        (
            self.head.load(Ordering::Acquire),
            self.tail.load(Ordering::Acquire),
        )
    }

    /// Moves the shared head past position `pos`, for a reaper standing in
    /// for a dead consumer (no live consumer may exist).
    pub(crate) fn skip(&self, pos: u64) {
        let _ = self.head.compare_exchange(
            pos,
            pos.wrapping_add(1),
            Ordering::Release,
            Ordering::Relaxed,
        );
    }

    /// Messages in the ring now (exact for either side at rest).
    pub(crate) fn len(&self) -> u64 {
        let tail = self.tail.load(Ordering::Acquire);
        let head = self.head.load(Ordering::Acquire);
        tail.wrapping_sub(head).min(self.capacity())
    }
}

#[cfg(all(test, not(psyne_loom)))]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;
    use std::sync::Arc;

    struct Mem {
        tail: AtomicU64,
        head: AtomicU64,
        cells: Vec<AtomicU64>,
    }

    fn mem(cap: usize) -> Arc<Mem> {
        Arc::new(Mem {
            tail: AtomicU64::new(0),
            head: AtomicU64::new(0),
            cells: (0..cap * 2).map(|_| AtomicU64::new(0)).collect(),
        })
    }

    fn ring(m: &Mem) -> Spsc<'_, AtomicU64> {
        Spsc {
            tail: &m.tail,
            head: &m.head,
            cells: &m.cells,
        }
    }

    #[test]
    fn fifo_full_and_empty() {
        let m = mem(4);
        let r = ring(&m);
        let (mut p, mut c) = (r.producer(), r.consumer());
        assert_eq!(r.pop(&mut c), None);
        for i in 0..4 {
            r.push(&mut p, [i, i * 10]).unwrap();
        }
        assert_eq!(r.push(&mut p, [9, 9]), Err(Full([9, 9])));
        assert_eq!(r.len(), 4);
        assert_eq!(r.pop(&mut c), Some([0, 0]));
        r.push(&mut p, [4, 40]).unwrap();
        let rest: Vec<_> = std::iter::from_fn(|| r.pop(&mut c)).collect();
        assert_eq!(rest, [[1, 10], [2, 20], [3, 30], [4, 40]]);
        assert_eq!(r.len(), 0);
    }

    #[test]
    fn a_late_consumer_sees_what_was_queued() {
        let m = mem(8);
        let r = ring(&m);
        let mut p = r.producer();
        r.push(&mut p, [1, 2]).unwrap();
        let mut c = r.consumer();
        assert_eq!(r.pop(&mut c), Some([1, 2]));
        // And a new producer continues where the old one stopped.
        let mut p2 = r.producer();
        r.push(&mut p2, [3, 4]).unwrap();
        assert_eq!(r.pop(&mut c), Some([3, 4]));
    }

    #[test]
    fn threads_pass_every_message_once_in_order() {
        let n: u64 = if cfg!(miri) { 500 } else { 1_000_000 };
        let m = mem(64);
        let m2 = m.clone();
        let t = std::thread::spawn(move || {
            let r = ring(&m2);
            let mut p = r.producer();
            for i in 0..n {
                let mut msg = [i, !i];
                while let Err(Full(back)) = r.push(&mut p, msg) {
                    msg = back;
                    std::thread::yield_now();
                }
            }
        });
        let r = ring(&m);
        let mut c = r.consumer();
        let mut next = 0;
        while next < n {
            if let Some(msg) = r.pop(&mut c) {
                assert_eq!(msg, [next, !next]);
                next += 1;
            } else {
                std::thread::yield_now();
            }
        }
        t.join().unwrap();
        assert_eq!(r.pop(&mut c), None);
    }
}

/// Loom model: `RUSTFLAGS="--cfg psyne_loom" cargo test --release --lib loom`.
#[cfg(all(test, psyne_loom))]
mod loom_model {
    use super::*;
    use loom::sync::atomic::AtomicU64;
    use loom::sync::Arc;

    struct Mem {
        tail: AtomicU64,
        head: AtomicU64,
        cells: Vec<AtomicU64>,
    }

    fn ring(m: &Mem) -> Spsc<'_, AtomicU64> {
        Spsc {
            tail: &m.tail,
            head: &m.head,
            cells: &m.cells,
        }
    }

    /// A producer pushes three messages through a two-cell ring (so it
    /// wraps and must wait for the consumer); the consumer gets all three,
    /// in order, with both words of each intact.
    #[test]
    fn loom_spsc_wraps_in_order() {
        loom::model(|| {
            let m = Arc::new(Mem {
                tail: AtomicU64::new(0),
                head: AtomicU64::new(0),
                cells: (0..4).map(|_| AtomicU64::new(0)).collect(),
            });
            let m2 = m.clone();
            let t = loom::thread::spawn(move || {
                let r = ring(&m2);
                let mut p = r.producer();
                for i in 1..=3u64 {
                    let mut msg = [i, i * 100];
                    while let Err(Full(back)) = r.push(&mut p, msg) {
                        msg = back;
                        loom::thread::yield_now();
                    }
                }
            });
            let r = ring(&m);
            let mut c = r.consumer();
            let mut got = Vec::new();
            while got.len() < 3 {
                match r.pop(&mut c) {
                    Some(msg) => got.push(msg),
                    None => loom::thread::yield_now(),
                }
            }
            t.join().unwrap();
            assert_eq!(got, [[1, 100], [2, 200], [3, 300]]);
        });
    }
}
