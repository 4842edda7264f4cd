//! Bounded multi-producer multi-consumer ring (sequence-numbered cells),
//! also used for MPSC and SPMC with the single side's compare-and-swaps
//! replaced by plain stores.
//!
//! Each cell carries a sequence word besides its two payload words. For the
//! position `p` that maps to a cell (`p` modulo the capacity `C`), the
//! sequence word goes through:
//!
//! | value | meaning |
//! |---|---|
//! | `p` | free for the producer of `p` |
//! | `CLAIMED(p, id)` | producer `id` claimed `p` and is writing its message |
//! | `p + 1` | holds `p`'s message |
//! | `TOMB(p)` | `p`'s producer died before publishing: consumers skip `p` |
//! | `TAKING(p, id)` | consumer `id` claimed `p` and is taking its message |
//! | `RETURNED(p)` | `p`'s consumer died before taking its message: any consumer may adopt it |
//! | `p + C` | the consumer of `p` is done: free for position `p + C` |
//!
//! The marked values have bit 63 set, the kind in bits 61..63 (0 returned,
//! 1 claimed, 2 taking, 3 tomb), the claimer's id (0..64, a participant
//! index) in bits 55..61 and `p` in bits 0..55; positions stay below 2^55.
//!
//! A producer claims a position by a compare-and-swap of its cell from `p`
//! to `CLAIMED(p, id)`, then moves `tail` from `p` to `p + 1`, writes the
//! payload and stores `p + 1`. A consumer claims by a compare-and-swap from
//! `p + 1` to `TAKING(p, id)`, moves `head`, reads the payload, and when the
//! caller is done with the message (in a channel: once it has taken the
//! slot's reference) stores `p + C`. `tail` and `head` are hints: anyone who
//! finds the position at an index already claimed moves the index on (a
//! compare-and-swap from `p` to `p + 1`), so a claimer that stops between
//! its claim and its index update does not stop anyone.
//!
//! Because a claim names its claimer in the cell, a claimer that dies half
//! way can be undone exactly, by whoever finds it dead ([`Mpmc::abandon`]):
//! a position its producer claimed and never published becomes a tombstone
//! (consumers skip it, nothing stalls); a message its consumer claimed and
//! never finished is either handed to the reaper and the cell released, or
//! (the reaper's choice, for a message the dead consumer had not taken yet)
//! marked `RETURNED`: the cell keeps the message, `head` has passed it, and
//! a live consumer adopts it ([`Mpmc::adopt`]: a compare-and-swap to
//! `TAKING(p, its id)`, then as any claim) and releases the cell. Nothing
//! else is touched: live claimers never see their cells change under them.
//!
//! Messages from one producer arrive in the order it sent them, except a
//! returned message, which arrives when adopted (after messages sent after
//! it); each message goes to exactly one consumer.

use super::Full;
use crate::sync::{AtomicWord, Ordering};

/// Words per cell: sequence, two payload words, one of padding (32 bytes).
pub(crate) const CELL_WORDS: usize = 4;

/// Positions (and so `tail` and `head`) stay below this.
pub(crate) const MAX_POSITION: u64 = 1 << 55;
/// The most claimers a ring tells apart (ids `0..MAX_IDS`).
pub(crate) const MAX_IDS: u8 = 64;

const MARK: u64 = 1 << 63;
const KIND_SHIFT: u32 = 61;
const ID_SHIFT: u32 = 55;
const RETURNED: u64 = 0;
const CLAIMED: u64 = 1;
const TAKING: u64 = 2;
const TOMB: u64 = 3;

const fn mark(kind: u64, id: u8, pos: u64) -> u64 {
    MARK | kind << KIND_SHIFT | (id as u64) << ID_SHIFT | pos
}

const fn marked_pos(seq: u64) -> u64 {
    seq & (MAX_POSITION - 1)
}

const fn marked_kind(seq: u64) -> u64 {
    (seq >> KIND_SHIFT) & 3
}

const fn marked_id(seq: u64) -> u8 {
    ((seq >> ID_SHIFT) & 0x3F) as u8
}

/// What a cell's sequence word says, as `4 * position + stage` for a cell
/// whose positions are congruent to `pos`: stage 0 free, 1 claimed, 2
/// holding a message (or a tombstone), 3 being taken (or returned: past
/// `head`, waiting for [`Mpmc::adopt`]). The key only grows over the
/// cell's life.
fn key(seq: u64, pos: u64, capacity: u64) -> u64 {
    if seq & MARK != 0 {
        let stage = match marked_kind(seq) {
            CLAIMED => 1,
            TOMB => 2,
            _ => 3,
        };
        return 4 * marked_pos(seq) + stage;
    }
    if seq.wrapping_sub(pos) & (capacity - 1) == 0 {
        4 * seq // free for position `seq`
    } else {
        4 * (seq - 1) + 2 // holds the message of position `seq - 1`
    }
}

/// The shared part of an MPMC ring.
pub(crate) struct Mpmc<'a, A> {
    pub(crate) tail: &'a A,
    pub(crate) head: &'a A,
    /// `CELL_WORDS * capacity` words.
    pub(crate) cells: &'a [A],
    /// Only one producer ever pushes: claim with stores, not CASes.
    pub(crate) single_producer: bool,
    /// Only one consumer ever pops: claim with stores, not CASes.
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

    /// Moves `index` from `pos` to `pos + 1` unless someone already did.
    fn advance(index: &A, pos: u64) {
        // Relaxed: the cells carry the synchronisation; the indices are
        // hints that only say where to look.
        let _ = index.compare_exchange(pos, pos + 1, Ordering::Relaxed, Ordering::Relaxed);
    }

    /// Claims the next position for producer `id`, or `None` if the ring
    /// is full. Follow with [`Mpmc::publish`].
    pub(crate) fn claim_push(&self, id: u8) -> Option<u64> {
        debug_assert!(id < MAX_IDS);
        let cap = self.capacity();
        let mut pos = self.tail.load(Ordering::Relaxed);
        loop {
            assert!(pos < MAX_POSITION, "psyne: ring position limit reached");
            let seq = self.cell(pos)[0].load(Ordering::Acquire);
            let k = key(seq, pos, cap);
            if k == 4 * pos {
                // Free for `pos`. Acquire (on the load above, and on the
                // CAS): pairs with the consumer's Release of the cell, whose
                // payload reads must be done before we overwrite it.
                let claimed = mark(CLAIMED, id, pos);
                if self.single_producer {
                    self.cell(pos)[0].store(claimed, Ordering::Relaxed);
                    self.tail.store(pos + 1, Ordering::Relaxed);
                    return Some(pos);
                }
                if self.cell(pos)[0]
                    .compare_exchange_weak(seq, claimed, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
                {
                    Self::advance(self.tail, pos);
                    return Some(pos);
                }
            } else if k < 4 * pos {
                return None; // the previous lap's message is still there: full
            } else {
                // `pos` is claimed already (or long done): help `tail` past
                // it and look again.
                Self::advance(self.tail, pos);
                pos = self.tail.load(Ordering::Relaxed).max(pos + 1);
            }
        }
    }

    /// Writes `msg` into the position `pos` claimed by [`Mpmc::claim_push`]
    /// and makes it visible to consumers.
    pub(crate) fn publish(&self, pos: u64, msg: [u64; 2]) {
        let cell = self.cell(pos);
        cell[1].store(msg[0], Ordering::Relaxed);
        cell[2].store(msg[1], Ordering::Relaxed);
        // Release: publishes the payload to the consumer that claims `pos`.
        // A store: only the claimer writes a claimed cell (a reaper only
        // touches the cells of dead claimers).
        cell[0].store(pos + 1, Ordering::Release);
    }

    /// Appends `msg` (claim and publish as producer `id`), or gives it back
    /// if the ring is full.
    pub(crate) fn push(&self, id: u8, msg: [u64; 2]) -> Result<(), Full<[u64; 2]>> {
        match self.claim_push(id) {
            Some(pos) => {
                self.publish(pos, msg);
                Ok(())
            }
            None => Err(Full(msg)),
        }
    }

    /// Claims the oldest message for consumer `id`: its position and
    /// words, or `None` if there is none. The cell stays claimed until
    /// [`Mpmc::release`]. Tombstones are skipped.
    pub(crate) fn claim_pop(&self, id: u8) -> Option<(u64, [u64; 2])> {
        debug_assert!(id < MAX_IDS);
        let cap = self.capacity();
        let mut pos = self.head.load(Ordering::Relaxed);
        loop {
            let cell = self.cell(pos);
            // Acquire: pairs with the producer's Release in `publish`.
            let seq = cell[0].load(Ordering::Acquire);
            let k = key(seq, pos, cap);
            if k == 4 * pos + 2 {
                let tomb = seq & MARK != 0;
                // A tombstone is released at once; a message is claimed.
                let new = if tomb {
                    pos + cap
                } else {
                    mark(TAKING, id, pos)
                };
                if self.single_consumer {
                    // Release (for a tombstone): the cell is free for the
                    // next lap's producer.
                    cell[0].store(new, Ordering::Release);
                    self.head.store(pos + 1, Ordering::Relaxed);
                } else if cell[0]
                    .compare_exchange_weak(seq, new, Ordering::AcqRel, Ordering::Relaxed)
                    .is_ok()
                {
                    Self::advance(self.head, pos);
                } else {
                    continue;
                }
                if tomb {
                    pos += 1;
                    continue;
                }
                let msg = [
                    cell[1].load(Ordering::Relaxed),
                    cell[2].load(Ordering::Relaxed),
                ];
                return Some((pos, msg));
            } else if k < 4 * pos + 2 {
                return None; // nothing published at `pos` yet: empty
            } else {
                // `pos` is being taken or done: help `head` past it.
                Self::advance(self.head, pos);
                pos = self.head.load(Ordering::Relaxed).max(pos + 1);
            }
        }
    }

    /// Frees the cell of position `pos`, claimed by [`Mpmc::claim_pop`], for
    /// the next lap.
    pub(crate) fn release(&self, pos: u64) {
        // Release: our reads of the cell are done before a producer reuses it.
        self.cell(pos)[0].store(pos + self.capacity(), Ordering::Release);
    }

    /// Takes the oldest available message (claim and release as consumer
    /// `id`), if any.
    pub(crate) fn pop(&self, id: u8) -> Option<[u64; 2]> {
        let (pos, msg) = self.claim_pop(id)?;
        self.release(pos);
        Some(msg)
    }

    /// Undoes what claimer `id` left half done when it died: a position it
    /// claimed as a producer and never published becomes a tombstone; a
    /// message it claimed as a consumer and never released is shown to
    /// `keep`: if that returns true the cell becomes `RETURNED` (the message
    /// waits for [`Mpmc::adopt`]), otherwise the cell is released and the
    /// message passed to `taken` (whose reference the caller must deal
    /// with). `keep` sees the message while the cell is still claimed by
    /// `id`, and `taken` is called only if the cell was still `id`'s when
    /// released. Moves `tail` and `head` past such positions. Returns how
    /// many positions it tombstoned.
    ///
    /// The caller must know that `id`'s owner is dead and that no live
    /// endpoint uses `id` (one reaper per id). Undoing a cell is one
    /// compare-and-swap from the dead claimer's value, so a reaper that dies
    /// half way through can be replaced: the next one finds only the cells
    /// left to undo.
    pub(crate) fn abandon(
        &self,
        id: u8,
        mut keep: impl FnMut([u64; 2]) -> bool,
        mut taken: impl FnMut([u64; 2]),
    ) -> usize {
        let cap = self.capacity();
        let mut tombs = 0;
        for c in self.cells.chunks(CELL_WORDS) {
            let seq = c[0].load(Ordering::Acquire);
            if seq & MARK == 0 || marked_id(seq) != id {
                continue;
            }
            let pos = marked_pos(seq);
            // CASes, though only the dead claimer could change these cells:
            // so that a second reaper cannot undo a cell twice.
            let kind = marked_kind(seq);
            if kind == CLAIMED
                && c[0]
                    .compare_exchange(seq, mark(TOMB, 0, pos), Ordering::AcqRel, Ordering::Relaxed)
                    .is_ok()
            {
                tombs += 1;
                Self::advance(self.tail, pos);
            } else if kind == TAKING {
                let msg = [c[1].load(Ordering::Relaxed), c[2].load(Ordering::Relaxed)];
                Self::advance(self.head, pos);
                if keep(msg) {
                    // Release: pairs with the Acquire CAS in `adopt` (the
                    // payload stays as the producer wrote it).
                    let _ = c[0].compare_exchange(
                        seq,
                        mark(RETURNED, 0, pos),
                        Ordering::AcqRel,
                        Ordering::Relaxed,
                    );
                } else if c[0]
                    // Release: our reads of the cell are done before a
                    // producer reuses it.
                    .compare_exchange(seq, pos + cap, Ordering::AcqRel, Ordering::Relaxed)
                    .is_ok()
                {
                    taken(msg);
                }
            }
        }
        tombs
    }

    /// Claims a `RETURNED` message (see [`Mpmc::abandon`]) for consumer
    /// `id`: its position and words, or `None` if there is none. As after
    /// [`Mpmc::claim_pop`], the cell stays claimed until [`Mpmc::release`].
    /// Scans every cell: meant for when the ring has nothing else to give.
    pub(crate) fn adopt(&self, id: u8) -> Option<(u64, [u64; 2])> {
        debug_assert!(id < MAX_IDS);
        for c in self.cells.chunks(CELL_WORDS) {
            let seq = c[0].load(Ordering::Relaxed);
            if seq & MARK == 0 || marked_kind(seq) != RETURNED {
                continue;
            }
            let pos = marked_pos(seq);
            // Acquire: pairs with the Release of the producer's `publish`
            // (through the dead consumer's claim and the reaper's CAS, both
            // read-modify-writes of this word or ordered after it), so the
            // payload read below is the message's.
            if c[0]
                .compare_exchange(
                    seq,
                    mark(TAKING, id, pos),
                    Ordering::AcqRel,
                    Ordering::Relaxed,
                )
                .is_ok()
            {
                let msg = [c[1].load(Ordering::Relaxed), c[2].load(Ordering::Relaxed)];
                return Some((pos, msg));
            }
        }
        None
    }

    /// How many cells hold a `RETURNED` message now (a scan of every cell).
    pub(crate) fn returned(&self) -> u64 {
        self.cells
            .chunks(CELL_WORDS)
            .filter(|c| {
                let seq = c[0].load(Ordering::Relaxed);
                seq & MARK != 0 && marked_kind(seq) == RETURNED
            })
            .count() as u64
    }

    /// Whether position `pos` is claimed by producer `id` and not published
    /// (nor tombstoned) yet.
    pub(crate) fn claimed_by(&self, pos: u64, id: u8) -> bool {
        self.cell(pos)[0].load(Ordering::Acquire) == mark(CLAIMED, id, pos)
    }

    /// Whether a push could claim a position now (the cell at `tail` is
    /// free, or `tail` is behind). Unlike `len() < capacity`, false while a
    /// consumer holds the cell a full ring would wrap onto.
    pub(crate) fn can_push(&self) -> bool {
        let pos = self.tail.load(Ordering::Acquire);
        key(
            self.cell(pos)[0].load(Ordering::Acquire),
            pos,
            self.capacity(),
        ) >= 4 * pos
    }

    /// Whether a pop could find something now (a message or tombstone at
    /// `head`, or `head` behind). Unlike `len() > 0`, false while the
    /// position at `head` is claimed by a producer that has not published.
    pub(crate) fn can_pop(&self) -> bool {
        let pos = self.head.load(Ordering::Acquire);
        key(
            self.cell(pos)[0].load(Ordering::Acquire),
            pos,
            self.capacity(),
        ) >= 4 * pos + 2
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
        assert_eq!(r.pop(0), None);
        r.push(0, [1, 2]).unwrap();
        r.push(0, [3, 4]).unwrap();
        assert_eq!(r.push(0, [5, 6]), Err(Full([5, 6])));
        assert_eq!(r.len(), 2);
        assert_eq!(r.pop(1), Some([1, 2]));
        r.push(0, [5, 6]).unwrap();
        assert_eq!(r.pop(1), Some([3, 4]));
        assert_eq!(r.pop(1), Some([5, 6]));
        assert_eq!(r.pop(1), None);
    }

    #[test]
    fn sequence_words_name_their_claimer() {
        let cap = 4;
        assert_eq!(key(5, 1, cap), 20); // free for 5
        assert_eq!(key(6, 1, cap), 22); // holds 5's message
        assert_eq!(key(mark(CLAIMED, 9, 5), 1, cap), 21);
        assert_eq!(key(mark(TOMB, 0, 5), 1, cap), 22);
        assert_eq!(key(mark(TAKING, 63, 5), 1, cap), 23);
        assert_eq!(key(9, 1, cap), 36); // free for 9 (the next lap)
        let m = mark(TAKING, 63, MAX_POSITION - 1);
        assert_eq!(
            (marked_kind(m), marked_id(m), marked_pos(m)),
            (TAKING, 63, MAX_POSITION - 1)
        );
    }

    #[test]
    fn a_dead_producers_claim_is_skipped_and_the_ring_goes_on() {
        for single in [false, true] {
            let m = mem(4);
            let r = ring(&m, single, false);
            r.push(0, [1, 1]).unwrap();
            // Producer 3 claims position 1 and dies.
            assert_eq!(r.claim_push(3), Some(1));
            if !single {
                r.push(0, [2, 2]).unwrap();
            }
            assert_eq!(r.pop(5), Some([1, 1]));
            assert_eq!(r.pop(5), None, "stalled at the dead claim");
            assert_eq!(r.abandon(3, |_| false, |_| panic!("no message")), 1);
            assert_eq!(r.abandon(3, |_| false, |_| panic!("no message")), 0, "once");
            let mut got: Vec<[u64; 2]> = std::iter::from_fn(|| r.pop(5)).collect();
            // Wrap the ring several times: positions stay consistent.
            for i in 10..20 {
                r.push(0, [i, i]).unwrap();
                got.extend(r.pop(5));
            }
            let want: Vec<[u64; 2]> = (!single)
                .then_some([2, 2])
                .into_iter()
                .chain((10..20).map(|i| [i, i]))
                .collect();
            assert_eq!(got, want);
            assert_eq!(r.len(), 0);
        }
    }

    #[test]
    fn a_claim_without_its_index_update_does_not_stop_others() {
        // A producer that died between its claim and moving `tail`, and a
        // consumer that died between its claim and moving `head`.
        let m = mem(4);
        let r = ring(&m, false, false);
        m.cells[0].store(mark(CLAIMED, 7, 0), Ordering::Relaxed);
        r.push(0, [1, 1]).unwrap(); // helps tail past 0, takes 1
        assert_eq!(m.tail.load(Ordering::Relaxed), 2);
        r.abandon(7, |_| false, |_| {});
        r.push(0, [2, 2]).unwrap();
        assert_eq!(r.claim_pop(8).map(|x| x.0), Some(1));
        // Consumer 8 holds position 1 and dies; position 0 was a tombstone.
        assert_eq!(m.head.load(Ordering::Relaxed), 2);
        m.head.store(1, Ordering::Relaxed); // as if it died before moving head
        let mut seen = Vec::new();
        assert_eq!(r.pop(9), Some([2, 2]), "helped head past the claim");
        r.abandon(8, |_| false, |msg| seen.push(msg));
        assert_eq!(seen, [[1, 1]]);
        for i in 0..8 {
            r.push(0, [i, i]).unwrap();
            assert_eq!(r.pop(9), Some([i, i]));
        }
    }

    #[test]
    fn readiness_ignores_claims_in_progress() {
        let m = mem(2);
        let r = ring(&m, false, false);
        assert!(r.can_push() && !r.can_pop());
        let p = r.claim_push(0).unwrap();
        assert!(!r.can_pop(), "claimed, not published");
        assert_eq!(r.len(), 1);
        r.publish(p, [1, 1]);
        assert!(r.can_pop());
        r.push(0, [2, 2]).unwrap();
        assert!(!r.can_push());
        let (q, _) = r.claim_pop(1).unwrap();
        assert!(
            !r.can_push(),
            "the cell a push would wrap onto is being taken"
        );
        r.release(q);
        assert!(r.can_push());
    }

    #[test]
    fn a_dead_consumers_message_goes_to_the_reaper() {
        let m = mem(2);
        let r = ring(&m, false, false);
        r.push(0, [1, 1]).unwrap();
        r.push(0, [2, 2]).unwrap();
        assert_eq!(r.claim_pop(4), Some((0, [1, 1]))); // ... and dies
        assert_eq!(r.push(0, [3, 3]), Err(Full([3, 3])));
        assert_eq!(r.pop(5), Some([2, 2]));
        let mut reaped = Vec::new();
        assert_eq!(r.abandon(4, |_| false, |msg| reaped.push(msg)), 0);
        assert_eq!(reaped, [[1, 1]]);
        r.push(0, [3, 3]).unwrap();
        assert_eq!(r.pop(5), Some([3, 3]));
        assert_eq!(r.pop(5), None);
    }

    #[test]
    fn a_dead_consumers_untaken_message_is_returned_and_adopted_once() {
        let m = mem(2);
        let r = ring(&m, false, false);
        r.push(0, [1, 1]).unwrap();
        r.push(0, [2, 2]).unwrap();
        assert_eq!(r.claim_pop(4), Some((0, [1, 1]))); // ... and dies
        assert_eq!(r.abandon(4, |_| true, |_| panic!("kept")), 0);
        assert_eq!(r.returned(), 1);
        assert_eq!(r.abandon(4, |_| true, |_| panic!("kept")), 0, "once");
        // Ordinary pops skip it; the ring cannot wrap onto it yet.
        assert_eq!(r.pop(5), Some([2, 2]));
        assert_eq!(r.pop(5), None);
        assert_eq!(r.push(0, [3, 3]), Err(Full([3, 3])), "wraps onto it");
        assert_eq!(r.adopt(6), Some((0, [1, 1])));
        assert_eq!(r.adopt(7), None, "adopted once");
        assert_eq!(r.returned(), 0);
        // An adopter that dies is undone like any consumer.
        let mut freed = Vec::new();
        r.abandon(6, |_| false, |msg| freed.push(msg));
        assert_eq!(freed, [[1, 1]]);
        r.push(0, [3, 3]).unwrap();
        r.push(0, [4, 4]).unwrap();
        assert_eq!(r.pop(5), Some([3, 3]));
        assert_eq!(r.pop(5), Some([4, 4]));
        assert_eq!(r.len(), 0);
    }

    #[test]
    fn claimed_by_names_an_unpublished_claim() {
        let m = mem(2);
        let r = ring(&m, false, false);
        let p = r.claim_push(3).unwrap();
        assert!(r.claimed_by(p, 3) && !r.claimed_by(p, 4));
        r.publish(p, [1, 1]);
        assert!(!r.claimed_by(p, 3));
    }

    /// `producers` threads each send `per` messages `[producer, seq]`;
    /// `consumers` threads receive. Every message arrives exactly once, and
    /// each consumer sees each producer's messages in increasing order.
    pub(super) fn stress(producers: u64, consumers: usize, per: u64) {
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
                    while let Err(Full(back)) = r.push(id as u8, msg) {
                        msg = back;
                        std::thread::yield_now();
                    }
                }
                Vec::new()
            }));
        }
        for c in 0..consumers {
            let (m, received) = (m.clone(), received.clone());
            handles.push(std::thread::spawn(move || {
                let r = ring(&m, sp, sc);
                let id = (32 + c) as u8;
                let mut last = vec![None::<u64>; producers as usize];
                let mut seen = Vec::new();
                while received.load(Ordering::Relaxed) < total {
                    let Some([p, s]) = r.pop(id) else {
                        std::thread::yield_now();
                        continue;
                    };
                    received.fetch_add(1, Ordering::Relaxed);
                    let l = &mut last[p as usize];
                    assert!(l.is_none_or(|l| l < s), "producer {p}: {s} after {l:?}");
                    *l = Some(s);
                    seen.push(p * per + s);
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

    // 1e6 messages per pattern (the stress size; about a second
    // each in a debug build on two cores).

    #[test]
    fn mpmc_4x4_every_message_once_in_producer_order() {
        stress(4, 4, per(250_000));
    }

    #[test]
    fn mpsc_4x1() {
        stress(4, 1, per(250_000));
    }

    #[test]
    fn spmc_1x4() {
        stress(1, 4, per(1_000_000));
    }
}

/// Loom models: `RUSTFLAGS="--cfg psyne_loom" cargo test --release --lib loom`.
#[cfg(all(test, psyne_loom))]
mod loom_model {
    use super::*;
    use crate::sync::loom_outcomes;
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

    fn push_spin(r: &Mpmc<'_, AtomicU64>, id: u8, mut msg: [u64; 2]) {
        while let Err(Full(back)) = r.push(id, msg) {
            msg = back;
            loom::thread::yield_now();
        }
    }

    fn pop_spin(r: &Mpmc<'_, AtomicU64>, id: u8) -> [u64; 2] {
        loop {
            if let Some(x) = r.pop(id) {
                return x;
            }
            loom::thread::yield_now();
        }
    }

    /// Two producers and two consumers race on a two-cell ring: each
    /// message is received exactly once, with its two words intact.
    #[test]
    fn loom_mpmc_each_message_once() {
        // With the yield below the full search takes more than 10 minutes;
        // bounded to 3 preemptions it covers every schedule of that many
        // forced switches (loom's own advice for larger models).
        let mut b = loom::model::Builder::new();
        b.preemption_bound = Some(3);
        let seen = std::sync::Arc::new(std::sync::Mutex::new([false; 2]));
        let seen2 = seen.clone();
        b.check(move || {
            let m = mem(2);
            let producers: Vec<_> = (1..=2u64)
                .map(|id| {
                    let m = m.clone();
                    loom::thread::spawn(move || {
                        push_spin(&ring(&m, false, false), id as u8, [id, id * 10])
                    })
                })
                .collect();
            let m2 = m.clone();
            let other = loom::thread::spawn(move || ring(&m2, false, false).pop(3));
            let r = ring(&m, false, false);
            // Yield first, so that this consumer's pop also races the
            // producers (see `sync::loom_outcomes`).
            loom::thread::yield_now();
            let mut got: Vec<[u64; 2]> = r.pop(4).into_iter().collect();
            seen2.lock().unwrap()[got.len()] = true;
            for p in producers {
                p.join().unwrap();
            }
            got.extend(other.join().unwrap());
            got.extend(std::iter::from_fn(|| r.pop(4)));
            got.sort();
            assert_eq!(got, [[1, 10], [2, 20]]);
        });
        // The racing pop both missed and won a message, across runs.
        assert_eq!(*seen.lock().unwrap(), [true, true]);
    }

    /// Two consumers race for one message: exactly one gets it. (The 2x2
    /// model above covers more; before its main thread yielded, loom never
    /// let that thread's pop race the producers, and it missed a consumer
    /// claim made with a store instead of a CAS. Both catch that now.)
    #[test]
    fn loom_two_consumers_one_message() {
        loom::model(|| {
            let m = mem(2);
            ring(&m, false, false).push(0, [1, 1]).unwrap();
            let m2 = m.clone();
            let t = loom::thread::spawn(move || ring(&m2, false, false).pop(1));
            let mine = ring(&m, false, false).pop(2);
            let theirs = t.join().unwrap();
            assert_eq!(mine.or(theirs), Some([1, 1]));
            assert!(
                mine.is_none() || theirs.is_none(),
                "one message taken twice"
            );
        });
    }

    /// Two producers race for the positions of a two-cell ring: each
    /// message gets its own position.
    #[test]
    fn loom_two_producers_distinct_positions() {
        loom::model(|| {
            let m = mem(2);
            let m2 = m.clone();
            let t = loom::thread::spawn(move || ring(&m2, false, false).push(1, [1, 1]));
            let mine = ring(&m, false, false).push(2, [2, 2]);
            let theirs = t.join().unwrap();
            assert_eq!((mine, theirs), (Ok(()), Ok(())));
            let r = ring(&m, false, false);
            let mut got: Vec<[u64; 2]> = std::iter::from_fn(|| r.pop(3)).collect();
            got.sort();
            assert_eq!(got, [[1, 1], [2, 2]]);
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
                push_spin(&r, 0, [1, 10]);
                push_spin(&r, 0, [2, 20]);
                push_spin(&r, 0, [3, 30]);
            });
            let r = ring(&m, false, false);
            let got: Vec<_> = (0..3).map(|_| pop_spin(&r, 1)).collect();
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
                push_spin(&r, 0, [1, 1]);
                push_spin(&r, 0, [2, 2]);
            });
            let m3 = m.clone();
            let c = loom::thread::spawn(move || {
                let r = ring(&m3, true, false);
                let mut got = Vec::new();
                for _ in 0..2 {
                    if let Some(x) = r.pop(1) {
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
            all.extend(std::iter::from_fn(|| r.pop(2).map(|x| x[0])));
            all.sort();
            assert_eq!(all, [1, 2]);
        });
    }

    /// Producer 5 died right after claiming position 0 (before even moving
    /// `tail`). A reaper tombstones its claim while a live producer pushes
    /// and a consumer tries to pop: the live producer is never blocked by
    /// the dead claim, the consumer never gets anything but the live
    /// message, and once the reaper is done the live message comes out
    /// exactly once and the ring goes on.
    #[test]
    fn loom_a_dead_producers_claim_is_tombstoned() {
        let outcomes = crate::sync::loom_outcomes(|| {
            let m = mem(2);
            m.cells[0].store(mark(CLAIMED, 5, 0), Ordering::Relaxed);
            let m2 = m.clone();
            let reaper = loom::thread::spawn(move || {
                ring(&m2, false, false).abandon(5, |_| false, |_| panic!("5 took nothing"))
            });
            let m3 = m.clone();
            let live = loom::thread::spawn(move || ring(&m3, false, false).push(1, [7, 70]));
            let r = ring(&m, false, false);
            // Yield first: loom would otherwise never schedule the racing
            // pop after the spawned threads' writes (see
            // `sync::loom_outcomes`).
            loom::thread::yield_now();
            let raced: Vec<[u64; 2]> = r.pop(2).into_iter().collect();
            let mut got = raced.clone();
            assert_eq!(reaper.join().unwrap(), 1);
            assert_eq!(
                live.join().unwrap(),
                Ok(()),
                "the dead claim blocked nobody"
            );
            got.extend(std::iter::from_fn(|| r.pop(2)));
            assert_eq!(got, [[7, 70]]);
            r.push(1, [8, 80]).unwrap();
            r.push(1, [9, 90]).unwrap();
            assert_eq!(r.pop(2), Some([8, 80]));
            assert_eq!(r.pop(2), Some([9, 90]));
            raced
        });
        // The racing pop both missed and got the live message, across runs.
        assert_eq!(
            outcomes.into_iter().collect::<Vec<_>>(),
            [vec![], vec![[7, 70]]]
        );
    }

    /// Consumer 6 died holding position 0 before taking its message. A
    /// reaper returns the message while a live consumer pops and adopts
    /// and a producer tries to reuse the cell: the message goes to the live
    /// consumer exactly once (by a pop, never: it is past `head`; by an
    /// adoption, once), the producer never overwrites it, and the cell is
    /// free once the adopter releases it.
    #[test]
    fn loom_a_dead_consumers_message_is_returned_to_a_live_one() {
        loom::model(|| {
            let m = mem(2);
            let r = ring(&m, false, false);
            r.push(0, [1, 10]).unwrap();
            r.push(0, [2, 20]).unwrap();
            m.cells[0].store(mark(TAKING, 6, 0), Ordering::Relaxed);
            m.head.store(1, Ordering::Relaxed);
            let m2 = m.clone();
            let reaper = loom::thread::spawn(move || {
                ring(&m2, false, false).abandon(6, |_| true, |_| panic!("kept"))
            });
            let m3 = m.clone();
            let producer = loom::thread::spawn(move || ring(&m3, false, false).push(0, [3, 30]));
            let mut got: Vec<[u64; 2]> = r.pop(2).into_iter().collect();
            if let Some((pos, msg)) = r.adopt(2) {
                got.push(msg);
                r.release(pos);
            }
            reaper.join().unwrap();
            let pushed = producer.join().unwrap().is_ok();
            if let Some((pos, msg)) = r.adopt(2) {
                got.push(msg);
                r.release(pos);
            }
            if !pushed {
                r.push(0, [3, 30]).unwrap(); // the cell is free now
            }
            got.extend(std::iter::from_fn(|| r.pop(2)));
            got.sort();
            assert_eq!(got, [[1, 10], [2, 20], [3, 30]]);
            assert_eq!(r.adopt(2), None);
        });
    }

    /// Two consumers race to adopt one returned message: exactly one gets
    /// it, with its words.
    #[test]
    fn loom_a_returned_message_is_adopted_once() {
        loom::model(|| {
            let m = mem(2);
            let r = ring(&m, false, false);
            r.push(0, [1, 10]).unwrap();
            r.claim_pop(6).unwrap();
            r.abandon(6, |_| true, |_| panic!("kept"));
            let m2 = m.clone();
            let t = loom::thread::spawn(move || ring(&m2, false, false).adopt(1));
            let mine = r.adopt(2);
            let theirs = t.join().unwrap();
            assert_eq!(mine.or(theirs), Some((0, [1, 10])));
            assert!(mine.is_none() || theirs.is_none(), "adopted twice");
        });
    }

    /// Consumer 6 died holding position 0 (before moving `head`). A reaper
    /// hands its message over and frees the cell while another consumer
    /// takes the next message and a producer tries to reuse the cell: the
    /// dead consumer's message goes to the reaper only, the others to the
    /// live consumer, in order, and the cell is usable once the reaper is
    /// done.
    #[test]
    fn loom_a_dead_consumers_cell_is_released() {
        loom::model(|| {
            let m = mem(2);
            let r = ring(&m, false, false);
            r.push(0, [1, 10]).unwrap();
            r.push(0, [2, 20]).unwrap();
            m.cells[0].store(mark(TAKING, 6, 0), Ordering::Relaxed);
            let m2 = m.clone();
            let reaper = loom::thread::spawn(move || {
                let mut got = Vec::new();
                ring(&m2, false, false).abandon(6, |_| false, |msg| got.push(msg));
                got
            });
            let m3 = m.clone();
            let producer = loom::thread::spawn(move || ring(&m3, false, false).push(0, [3, 30]));
            let mut got: Vec<[u64; 2]> = r.pop(2).into_iter().collect();
            assert_eq!(reaper.join().unwrap(), [[1, 10]]);
            if producer.join().unwrap().is_err() {
                r.push(0, [3, 30]).unwrap(); // the cell is free now
            }
            got.extend(std::iter::from_fn(|| r.pop(2)));
            assert_eq!(got, [[2, 20], [3, 30]]);
        });
    }

    /// MPSC: two producers (claiming by CAS) race the single consumer
    /// (claiming with stores, `single_consumer`) on a two-cell ring. The
    /// consumer's pop during the race gets a message, with both words
    /// intact, or nothing, never a position claimed and not yet published;
    /// once the producers are done the rest is there, so that each message
    /// is received exactly once. The consumer does not spin (a spinning
    /// consumer took loom 11 minutes) and yields first (see
    /// `loom_outcomes`); the model checks that its racing pop found nothing
    /// in some executions and each producer's message in others.
    #[test]
    fn loom_mpsc_each_message_once() {
        let outcomes = loom_outcomes(|| {
            let m = mem(2);
            let producers: Vec<_> = (1..=2u64)
                .map(|id| {
                    let m = m.clone();
                    loom::thread::spawn(move || {
                        ring(&m, false, true).push(id as u8, [id, id * 10]).unwrap()
                    })
                })
                .collect();
            loom::thread::yield_now();
            let r = ring(&m, false, true);
            let racing = r.pop(3);
            let mut got: Vec<[u64; 2]> = racing.into_iter().collect();
            for p in producers {
                p.join().unwrap();
            }
            got.extend(std::iter::from_fn(|| r.pop(3)));
            got.sort();
            assert_eq!(got, [[1, 10], [2, 20]]);
            assert_eq!(r.len(), 0);
            racing.map(|msg| msg[0])
        });
        assert_eq!(outcomes, [None, Some(1), Some(2)].into());
    }

    /// MPSC with cell reuse: producer 1 has filled the two-cell ring; then
    /// producers 1 and 2 each try one more push (position 2 reuses cell 0)
    /// while the store-claiming consumer pops position 0. A producer never
    /// claims a cell before the consumer has released it (and read its
    /// words): every message pushed arrives exactly once, with its own
    /// words, not the previous lap's, and producer 1's in the order it sent
    /// them. No one spins, to keep the three threads cheap: a push that
    /// finds the ring full reports it. The model checks that it reached
    /// executions where either producer, or neither, got position 2.
    #[test]
    fn loom_mpsc_reuses_cells_in_producer_order() {
        let outcomes = loom_outcomes(|| {
            let m = mem(2);
            let r = ring(&m, false, true);
            r.push(1, [1, 11]).unwrap();
            r.push(1, [1, 12]).unwrap();
            let m1 = m.clone();
            let p1 = loom::thread::spawn(move || ring(&m1, false, true).push(1, [1, 13]).is_ok());
            let m2 = m.clone();
            let p2 = loom::thread::spawn(move || ring(&m2, false, true).push(2, [2, 21]).is_ok());
            let mut got: Vec<[u64; 2]> = r.pop(3).into_iter().collect();
            let mut sent = vec![[1, 11], [1, 12]];
            let pushed = (p1.join().unwrap(), p2.join().unwrap());
            if pushed.0 {
                sent.push([1, 13]);
            }
            if pushed.1 {
                sent.push([2, 21]);
            }
            got.extend(std::iter::from_fn(|| r.pop(3)));
            let from_1: Vec<_> = got.iter().filter(|x| x[0] == 1).map(|x| x[1]).collect();
            assert!(from_1.windows(2).all(|w| w[0] < w[1]), "order: {from_1:?}");
            got.sort();
            sent.sort();
            assert_eq!(got, sent);
            assert_eq!(r.len(), 0);
            pushed
        });
        assert_eq!(
            outcomes,
            [(false, false), (false, true), (true, false)].into()
        );
    }
}
