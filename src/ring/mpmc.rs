//! Bounded multi-producer multi-consumer ring (a sequence-numbered cell
//! array), also used for MPSC and SPMC with the single side's
//! compare-and-swap replaced by a plain store.
//!
//! Each cell carries a sequence word besides its two payload words. For the
//! position `p` that maps to a cell:
//!
//! - `seq == p`: the cell is free for the producer that claims `p`;
//! - `seq == p + 1`: it holds the message of position `p`;
//! - `seq == p + capacity`: the consumer of `p` is done; the cell is free
//!   for position `p + capacity`.
//!
//! A producer claims a position by advancing `tail` (CAS, or a store for a
//! single producer), writes the payload and releases the cell by storing
//! `seq = p + 1`; a consumer claims by advancing `head`, reads, and stores
//! `seq = p + capacity`. Indices only grow (64 bits do not wrap in practice).
//!
//! Messages from one producer arrive in the order it sent them; each message
//! goes to exactly one consumer.

use super::Full;
use crate::sync::{AtomicWord, Ordering};

/// Words per cell: sequence, two payload words, one of padding (32 bytes).
pub(crate) const CELL_WORDS: usize = 4;

/// The shared part of an MPMC ring.
pub(crate) struct Mpmc<'a, A> {
    pub(crate) tail: &'a A,
    pub(crate) head: &'a A,
    /// `CELL_WORDS * capacity` words.
    pub(crate) cells: &'a [A],
    /// Only one producer ever pushes: claim with a store, not a CAS.
    pub(crate) single_producer: bool,
    /// Only one consumer ever pops: claim with a store, not a CAS.
    pub(crate) single_consumer: bool,
}

impl<'a, A: AtomicWord<Value = u64>> Mpmc<'a, A> {
    fn capacity(&self) -> u64 {
        (self.cells.len() / CELL_WORDS) as u64
    }

    /// Checks the ring's shape: a power-of-two capacity of at least 2 (with
    /// one cell, "holds position p" and "free for position p + 1" would be
    /// the same sequence number).
    pub(crate) fn valid_capacity(capacity: u64) -> bool {
        capacity >= 2 && capacity.is_power_of_two()
    }

    fn cell(&self, pos: u64) -> &'a [A] {
        let i = (pos & (self.capacity() - 1)) as usize * CELL_WORDS;
        &self.cells[i..i + 3]
    }

    /// Sets every cell's sequence for an empty ring starting at position 0.
    /// Only for a ring nobody else uses yet.
    pub(crate) fn format(&self) {
        for p in 0..self.capacity() {
            self.cell(p)[0].store(p, Ordering::Relaxed);
        }
        self.tail.store(0, Ordering::Relaxed);
        self.head.store(0, Ordering::Relaxed);
    }

    fn claim(&self, index: &A, offset: u64, single: bool) -> Option<u64> {
        let mut pos = index.load(Ordering::Relaxed);
        loop {
            // Acquire: pairs with the Release store of `seq` by the other
            // side, whose payload accesses must be complete before ours.
            let seq = self.cell(pos)[0].load(Ordering::Acquire);
            let dif = seq.wrapping_sub(pos.wrapping_add(offset)) as i64;
            if dif == 0 {
                if single {
                    index.store(pos.wrapping_add(1), Ordering::Relaxed);
                    return Some(pos);
                }
                // Relaxed: the cell's `seq` carries the synchronisation; the
                // index only arbitrates between competitors on this side.
                match index.compare_exchange_weak(
                    pos,
                    pos.wrapping_add(1),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => return Some(pos),
                    Err(now) => pos = now,
                }
            } else if dif < 0 {
                return None; // full (producer) or empty (consumer)
            } else {
                // Another claimer moved past `pos`; catch up.
                pos = index.load(Ordering::Relaxed);
            }
        }
    }

    /// Appends `msg`, or gives it back if the ring is full.
    pub(crate) fn push(&self, msg: [u64; 2]) -> Result<(), Full<[u64; 2]>> {
        let Some(pos) = self.claim(self.tail, 0, self.single_producer) else {
            return Err(Full(msg));
        };
        let cell = self.cell(pos);
        cell[1].store(msg[0], Ordering::Relaxed);
        cell[2].store(msg[1], Ordering::Relaxed);
        // Release: publishes the payload to the consumer that claims `pos`.
        cell[0].store(pos.wrapping_add(1), Ordering::Release);
        Ok(())
    }

    /// Takes the oldest available message, if any.
    pub(crate) fn pop(&self) -> Option<[u64; 2]> {
        let pos = self.claim(self.head, 1, self.single_consumer)?;
        let cell = self.cell(pos);
        let msg = [
            cell[1].load(Ordering::Relaxed),
            cell[2].load(Ordering::Relaxed),
        ];
        // Release: our reads are done before a producer reuses the cell.
        cell[0].store(pos.wrapping_add(self.capacity()), Ordering::Release);
        Some(msg)
    }

    /// Messages claimed by producers and not yet by consumers (an
    /// estimate while either side is active).
    pub(crate) fn len(&self) -> u64 {
        let tail = self.tail.load(Ordering::Acquire);
        let head = self.head.load(Ordering::Acquire);
        tail.saturating_sub(head).min(self.capacity())
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
        let m = Arc::new(Mem {
            tail: AtomicU64::new(0),
            head: AtomicU64::new(0),
            cells: (0..cap * CELL_WORDS).map(|_| AtomicU64::new(0)).collect(),
        });
        ring(&m, false, false).format();
        m
    }

    fn ring(m: &Mem, sp: bool, sc: bool) -> Mpmc<'_, AtomicU64> {
        Mpmc {
            tail: &m.tail,
            head: &m.head,
            cells: &m.cells,
            single_producer: sp,
            single_consumer: sc,
        }
    }

    #[test]
    fn fifo_full_and_empty() {
        assert!(!Mpmc::<AtomicU64>::valid_capacity(1));
        assert!(!Mpmc::<AtomicU64>::valid_capacity(6));
        assert!(Mpmc::<AtomicU64>::valid_capacity(2));
        let m = mem(2);
        let r = ring(&m, false, false);
        assert_eq!(r.pop(), None);
        r.push([1, 2]).unwrap();
        r.push([3, 4]).unwrap();
        assert_eq!(r.push([5, 6]), Err(Full([5, 6])));
        assert_eq!(r.len(), 2);
        assert_eq!(r.pop(), Some([1, 2]));
        r.push([5, 6]).unwrap();
        assert_eq!(r.pop(), Some([3, 4]));
        assert_eq!(r.pop(), Some([5, 6]));
        assert_eq!(r.pop(), None);
    }

    /// `producers` threads each send `per` messages `[producer, seq]`;
    /// `consumers` threads receive. Every message arrives exactly once, and
    /// each consumer sees each producer's messages in increasing order.
    fn stress(producers: u64, consumers: usize, per: u64) {
        let m = mem(64);
        let (sp, sc) = (producers == 1, consumers == 1);
        let total = producers * per;
        let received = Arc::new(AtomicU64::new(0));
        let mut handles = Vec::new();
        for id in 0..producers {
            let m = m.clone();
            handles.push(std::thread::spawn(move || {
                let r = ring(&m, sp, sc);
                for s in 0..per {
                    let mut msg = [id, s];
                    while let Err(Full(back)) = r.push(msg) {
                        msg = back;
                        std::thread::yield_now();
                    }
                }
                Vec::new()
            }));
        }
        for _ in 0..consumers {
            let (m, received) = (m.clone(), received.clone());
            handles.push(std::thread::spawn(move || {
                let r = ring(&m, sp, sc);
                let mut last = vec![None::<u64>; producers as usize];
                let mut seen = Vec::new();
                while received.load(Ordering::Relaxed) < total {
                    let Some([id, s]) = r.pop() else {
                        std::thread::yield_now();
                        continue;
                    };
                    received.fetch_add(1, Ordering::Relaxed);
                    let l = &mut last[id as usize];
                    assert!(l.is_none_or(|l| l < s), "producer {id}: {s} after {l:?}");
                    *l = Some(s);
                    seen.push(id * per + s);
                }
                seen
            }));
        }
        let mut all: Vec<u64> = handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect();
        all.sort_unstable();
        assert_eq!(all.len() as u64, total, "lost or duplicated messages");
        assert!(all.iter().enumerate().all(|(i, &v)| v == i as u64));
    }

    fn per(total: u64) -> u64 {
        if cfg!(miri) {
            50
        } else {
            total
        }
    }

    #[test]
    fn mpmc_4x4_every_message_once_in_producer_order() {
        stress(4, 4, per(50_000));
    }

    #[test]
    fn mpsc_4x1() {
        stress(4, 1, per(50_000));
    }

    #[test]
    fn spmc_1x4() {
        stress(1, 4, per(200_000));
    }
}

/// Loom models: `RUSTFLAGS="--cfg psyne_loom" cargo test --release --lib loom`.
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

    fn mem(cap: usize) -> Arc<Mem> {
        let m = Arc::new(Mem {
            tail: AtomicU64::new(0),
            head: AtomicU64::new(0),
            cells: (0..cap * CELL_WORDS).map(|_| AtomicU64::new(0)).collect(),
        });
        ring(&m, false, false).format();
        m
    }

    fn ring(m: &Mem, sp: bool, sc: bool) -> Mpmc<'_, AtomicU64> {
        Mpmc {
            tail: &m.tail,
            head: &m.head,
            cells: &m.cells,
            single_producer: sp,
            single_consumer: sc,
        }
    }

    fn push_spin(r: &Mpmc<'_, AtomicU64>, mut msg: [u64; 2]) {
        while let Err(Full(back)) = r.push(msg) {
            msg = back;
            loom::thread::yield_now();
        }
    }

    /// Two producers and two consumers race on a two-cell ring: each
    /// message is received exactly once, with its two words intact.
    #[test]
    fn loom_mpmc_each_message_once() {
        loom::model(|| {
            let m = mem(2);
            let producers: Vec<_> = (1..=2u64)
                .map(|id| {
                    let m = m.clone();
                    loom::thread::spawn(move || push_spin(&ring(&m, false, false), [id, id * 10]))
                })
                .collect();
            let m2 = m.clone();
            let other = loom::thread::spawn(move || ring(&m2, false, false).pop());
            let r = ring(&m, false, false);
            let mut got: Vec<[u64; 2]> = r.pop().into_iter().collect();
            for p in producers {
                p.join().unwrap();
            }
            got.extend(other.join().unwrap());
            got.extend(std::iter::from_fn(|| r.pop()));
            got.sort();
            assert_eq!(got, [[1, 10], [2, 20]]);
        });
    }

    /// A two-cell ring and three messages: the third push must wait for
    /// the consumer to free a cell, and the consumer must then see the third
    /// message's words, not the first's.
    #[test]
    fn loom_mpmc_reuses_a_cell_safely() {
        loom::model(|| {
            let m = mem(2);
            let m2 = m.clone();
            let p = loom::thread::spawn(move || {
                let r = ring(&m2, false, false);
                push_spin(&r, [1, 10]);
                push_spin(&r, [2, 20]);
                push_spin(&r, [3, 30]);
            });
            let r = ring(&m, false, false);
            let mut got = Vec::new();
            while got.len() < 3 {
                match r.pop() {
                    Some(x) => got.push(x),
                    None => loom::thread::yield_now(),
                }
            }
            p.join().unwrap();
            assert_eq!(got, [[1, 10], [2, 20], [3, 30]]);
        });
    }

    /// One producer (store-claimed) and two competing consumers: the
    /// producer's two messages go out once each and in order per consumer.
    #[test]
    fn loom_spmc_in_order() {
        loom::model(|| {
            let m = mem(2);
            let m2 = m.clone();
            let p = loom::thread::spawn(move || {
                let r = ring(&m2, true, false);
                push_spin(&r, [1, 1]);
                push_spin(&r, [2, 2]);
            });
            let m3 = m.clone();
            let c = loom::thread::spawn(move || {
                let r = ring(&m3, true, false);
                let mut got = Vec::new();
                for _ in 0..2 {
                    if let Some(x) = r.pop() {
                        got.push(x[0]);
                    }
                }
                got
            });
            p.join().unwrap();
            let theirs = c.join().unwrap();
            assert!(theirs.windows(2).all(|w| w[0] < w[1]));
            let r = ring(&m, true, false);
            let mut all = theirs;
            all.extend(std::iter::from_fn(|| r.pop().map(|x| x[0])));
            all.sort();
            assert_eq!(all, [1, 2]);
        });
    }
}
