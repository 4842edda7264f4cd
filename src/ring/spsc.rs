//! Single-producer single-consumer ring.
//!
//! Two 64-bit indices that only grow (`tail`: next position to write,
//! `head`: next position to read), each on its own cache line, and
//! `capacity` cells of four 64-bit words: a sequence word, the two message
//! words, and padding. The producer writes a cell's message words, then its
//! sequence word (`position + 1`, release), then `tail`; the consumer polls
//! the sequence word of the cell at `head`, so a message costs the consumer
//! one cache-line transfer (the cell), not two (the cell and `tail`).
//! The producer keeps a private copy of `head` and reloads it only when the
//! ring looks full; `tail` is read by nobody on the hot path (it serves
//! `len`, late joiners and reapers).
//!
//! A cell whose sequence word is `p + 1` holds position `p`'s message;
//! anything else (zero in a fresh ring, or the previous lap's `p + 1 -
//! capacity`) means the producer has not reached `p` yet. The message
//! words are atomics written and read with `Relaxed` ordering: the sequence
//! store and load order them. Using atomics for them keeps the ring free of
//! `UnsafeCell` and lets the same code run under loom.
//!
//! The producer stores `tail` after the cell, so for a moment a consumer
//! may have read past `tail`: [`Spsc::len`] reads that as empty, and a
//! producer that died in between is healed by the next one
//! ([`Spsc::producer`]) or a reaper ([`Spsc::heal_tail`]).

use super::Full;
use crate::sync::{AtomicWord, Ordering};

/// Words per cell: sequence, two message words, padding.
pub(crate) const CELL_WORDS: usize = 4;

/// The shared part of an SPSC ring: references into shared memory (or, in
/// tests, into a vector of loom atomics).
pub(crate) struct Spsc<'a, A> {
    pub(crate) tail: &'a A,
    pub(crate) head: &'a A,
    /// `CELL_WORDS * capacity` words: cell `i` is words `4i .. 4i + 4`.
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
    /// `(class, index)` of the slot of the last message taken (the
    /// channel's hint for prefetching the next one; the ring ignores it).
    pub(crate) last: Option<(u8, u32)>,
}

impl<'a, A: AtomicWord<Value = u64>> Spsc<'a, A> {
    fn capacity(&self) -> u64 {
        (self.cells.len() / CELL_WORDS) as u64
    }

    /// `(seq, lo, hi)` of the cell position `index` uses.
    fn cell(&self, index: u64) -> (&'a A, &'a A, &'a A) {
        let i = (index & (self.capacity() - 1)) as usize * CELL_WORDS;
        // One bounds check for the three words.
        let c: &'a [A] = &self.cells[i..i + 3];
        (&c[0], &c[1], &c[2])
    }

    /// Whether the cell of position `pos` holds `pos`'s message.
    fn ready(&self, pos: u64) -> bool {
        // Acquire: pairs with the producer's Release store of `seq`.
        self.cell(pos).0.load(Ordering::Acquire) == pos.wrapping_add(1)
    }

    /// A producer attaching to a ring that may already hold messages (and
    /// whose previous producer may have died between publishing a cell and
    /// moving `tail`).
    pub(crate) fn producer(&self) -> Producer {
        let tail = self.heal_tail();
        Producer {
            tail,
            head_cache: self.head.load(Ordering::Acquire),
        }
    }

    /// Moves `tail` past a cell its producer published without moving
    /// `tail` (it died in between), and returns `tail`. For a new producer
    /// or a reaper: no live producer may exist.
    pub(crate) fn heal_tail(&self) -> u64 {
        let tail = self.tail.load(Ordering::Acquire);
        if self.ready(tail) {
            let _ = self.tail.compare_exchange(
                tail,
                tail.wrapping_add(1),
                Ordering::AcqRel,
                Ordering::Relaxed,
            );
            return self.tail.load(Ordering::Acquire);
        }
        tail
    }

    /// A consumer attaching to a ring that may already hold messages.
    pub(crate) fn consumer(&self) -> Consumer {
        Consumer {
            head: self.head.load(Ordering::Acquire),
            last: None,
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
        let (seq, lo, hi) = self.cell(p.tail);
        lo.store(msg[0], Ordering::Relaxed);
        hi.store(msg[1], Ordering::Relaxed);
        p.tail = p.tail.wrapping_add(1);
        // Release: publishes the message words to the consumer's Acquire
        // load of `seq`.
        seq.store(p.tail, Ordering::Release);
        // The consumer reads the cell next: push it towards the shared
        // cache instead of letting the consumer's read snoop this core.
        seq.demote();
        crate::shm::hook::hit(crate::shm::hook::Point::SpscPublished);
        // Release: for `len` and late joiners (the consumer polls `seq`).
        self.tail.store(p.tail, Ordering::Release);
        Ok(())
    }

    /// The oldest message, if any, left in the ring: follow with
    /// [`Spsc::advance`] once done with it (in a channel: once its slot's
    /// reference is taken, so that a consumer killed in between leaves the
    /// message where a reaper finds it).
    pub(crate) fn peek(&self, c: &mut Consumer) -> Option<[u64; 2]> {
        if !self.ready(c.head) {
            return None;
        }
        let (_, lo, hi) = self.cell(c.head);
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

    /// Whether a message waits at the shared `head` (for the consumer's
    /// process: its readiness check while it sleeps).
    pub(crate) fn has_message(&self) -> bool {
        self.ready(self.head.load(Ordering::Acquire))
    }

    /// The message at position `pos`, if its cell holds it (read without
    /// claiming it, for a reaper that knows the endpoint on the other side
    /// is dead or absent).
    pub(crate) fn at(&self, pos: u64) -> Option<[u64; 2]> {
        if !self.ready(pos) {
            return None;
        }
        let (_, lo, hi) = self.cell(pos);
        Some([lo.load(Ordering::Relaxed), hi.load(Ordering::Relaxed)])
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

    /// Messages in the ring now (exact for either side at rest; 0 while
    /// the consumer has read a message whose `tail` store is still to come).
    pub(crate) fn len(&self) -> u64 {
        let tail = self.tail.load(Ordering::Acquire);
        let head = self.head.load(Ordering::Acquire);
        if head >= tail {
            0
        } else {
            (tail - head).min(self.capacity())
        }
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
            cells: (0..cap * CELL_WORDS).map(|_| AtomicU64::new(0)).collect(),
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
    fn a_producer_dead_before_moving_tail_is_healed() {
        let m = mem(4);
        let r = ring(&m);
        let (mut p, mut c) = (r.producer(), r.consumer());
        r.push(&mut p, [1, 10]).unwrap();
        r.push(&mut p, [2, 20]).unwrap();
        // As if the producer died between publishing the cell of position
        // 1 and moving `tail` past it.
        m.tail.store(1, std::sync::atomic::Ordering::SeqCst);
        assert_eq!(r.pop(&mut c), Some([1, 10]));
        assert_eq!(r.pop(&mut c), Some([2, 20]));
        // The consumer is past `tail`: empty, not full.
        assert_eq!(r.len(), 0);
        assert!(!r.has_message());
        // A new producer moves `tail` on and goes on from there.
        let mut p2 = r.producer();
        assert_eq!(r.indices(), (2, 2));
        r.push(&mut p2, [3, 30]).unwrap();
        assert!(r.has_message());
        assert_eq!(r.at(2), Some([3, 30]));
        assert_eq!(r.at(3), None);
        assert_eq!(r.pop(&mut c), Some([3, 30]));
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
    use crate::sync::loom_outcomes;
    use loom::sync::atomic::AtomicU64;
    use loom::sync::Arc;
    // Not loom's: a record of what happened in which order, outside the
    // model (loom runs one thread at a time).
    use std::sync::atomic::AtomicUsize;

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
                cells: (0..2 * CELL_WORDS).map(|_| AtomicU64::new(0)).collect(),
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

    fn mem(cap: usize) -> Arc<Mem> {
        Arc::new(Mem {
            tail: AtomicU64::new(0),
            head: AtomicU64::new(0),
            cells: (0..cap * CELL_WORDS).map(|_| AtomicU64::new(0)).collect(),
        })
    }

    /// Pushes `msg`, waiting while the ring is full; returns whether it had
    /// to wait.
    fn push_spin(r: &Spsc<'_, AtomicU64>, p: &mut Producer, mut msg: [u64; 2]) -> bool {
        let mut waited = false;
        while let Err(Full(back)) = r.push(p, msg) {
            msg = back;
            waited = true;
            loom::thread::yield_now();
        }
        waited
    }

    fn pop_spin(r: &Spsc<'_, AtomicU64>, c: &mut Consumer) -> [u64; 2] {
        loop {
            if let Some(msg) = r.pop(c) {
                return msg;
            }
            loom::thread::yield_now();
        }
    }

    /// A producer dies between publishing a cell (its sequence word) and
    /// moving `tail`, while the consumer keeps receiving; a reaper then
    /// heals `tail` and checks, as `Shared::undo_ring` does, that the
    /// dead producer's send is on the ring (at `tail - 1`), and a new
    /// producer attaches (healing again: a no-op now) and sends on,
    /// wrapping onto a cell the consumer must have released first. The
    /// consumer gets every message exactly once, in order, words intact;
    /// the reaper finds the in-flight message; the indices end equal.
    ///
    /// The death: the dead producer's last push goes through a view of the
    /// ring whose `tail` is a word nobody reads, so it runs the real `push`
    /// and its `tail` store is lost. The reaper and the new producer run
    /// after it in the same thread: in a channel they start once the
    /// producer is known dead (its stores are done), and the new producer
    /// joins only after the reaper has cleared the dead one's count.
    /// `heal_tail` reads the cells and writes `tail`, which the consumer
    /// never writes nor reads: the race is the new producer's wrap onto
    /// cell 0 against the consumer's release of it, and the model checks
    /// that it reached both orders (the new producer waiting for the cell,
    /// and finding it free).
    #[test]
    fn loom_spsc_a_dead_producers_tail_is_healed() {
        let outcomes = loom_outcomes(|| {
            let m = mem(2);
            let lost_tail = AtomicU64::new(0);
            let m2 = m.clone();
            let producers = loom::thread::spawn(move || {
                let r = ring(&m2);
                let mut p = r.producer();
                r.push(&mut p, [1, 10]).unwrap();
                let dying = Spsc {
                    tail: &lost_tail,
                    ..ring(&m2)
                };
                dying.push(&mut p, [2, 20]).unwrap(); // ... and dies
                                                      // The reaper.
                let tail = r.heal_tail();
                assert_eq!(tail, 2, "tail healed by one position");
                assert_eq!(r.at(tail - 1), Some([2, 20]), "the send is on the ring");
                // A new producer.
                let mut p2 = r.producer();
                push_spin(&r, &mut p2, [3, 30])
            });
            let r = ring(&m);
            let mut c = r.consumer();
            let got: Vec<_> = (0..3).map(|_| pop_spin(&r, &mut c)).collect();
            let waited = producers.join().unwrap();
            assert_eq!(got, [[1, 10], [2, 20], [3, 30]]);
            assert_eq!(r.pop(&mut c), None, "a message was received twice");
            assert_eq!(r.indices(), (3, 3));
            assert_eq!(r.len(), 0);
            waited
        });
        assert_eq!(outcomes, [false, true].into());
    }

    /// A consumer dies holding the message at `head` (it had taken the
    /// slot's reference: `peek` without `advance`). A reaper standing in
    /// for it, as `Shared::stand_in_for_consumer` does, reads the message
    /// at `head` and skips it, while the producer sends two more messages,
    /// the second of which needs the dead consumer's cell. The reaper
    /// reads the dead consumer's message intact (the producer never
    /// overwrites a cell before `skip` releases it), and a new consumer,
    /// attaching after the reaper, gets exactly the two later messages, in
    /// order. The model checks that it reached the producer's first push
    /// both before and after the reaper's reads, and the skip both before
    /// and after the producer found the ring full.
    #[test]
    fn loom_spsc_skip_races_the_producer() {
        let outcomes = loom_outcomes(|| {
            let m = mem(2);
            let r = ring(&m);
            let mut p = r.producer();
            r.push(&mut p, [1, 10]).unwrap();
            let mut dead = r.consumer();
            assert_eq!(r.peek(&mut dead), Some([1, 10])); // ... and dies
            let pushed = std::sync::Arc::new(AtomicUsize::new(0));
            let (m2, pushed2) = (m.clone(), pushed.clone());
            let producer = loom::thread::spawn(move || {
                let r = ring(&m2);
                push_spin(&r, &mut p, [2, 20]);
                pushed2.store(1, Ordering::Relaxed);
                push_spin(&r, &mut p, [3, 30])
            });
            // The reaper.
            let (head, _) = r.indices();
            assert_eq!(head, 0);
            assert_eq!(r.at(head), Some([1, 10]), "the dead consumer's message");
            let before_skip = pushed.load(Ordering::Relaxed);
            r.skip(head);
            // A new consumer.
            let mut c = r.consumer();
            let got: Vec<_> = (0..2).map(|_| pop_spin(&r, &mut c)).collect();
            let waited = producer.join().unwrap();
            assert_eq!(got, [[2, 20], [3, 30]]);
            assert_eq!(r.pop(&mut c), None);
            assert_eq!(r.indices(), (3, 3));
            (before_skip, waited)
        });
        assert_eq!(
            outcomes,
            [(0, false), (0, true), (1, false), (1, true)].into()
        );
    }
}
