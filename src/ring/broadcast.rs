//! Broadcast ring: one publisher, any number of subscribers, every
//! subscriber sees every message (unless it falls a whole ring behind).
//!
//! Cells carry a sequence word and two payload words, as in a seqlock:
//! publishing position `p` stores `seq = 2p + 1` (being written), the
//! payload, then `seq = 2p + 2` (done). A subscriber at position `q` reads
//! `seq`, the payload, and `seq` again; it accepts the payload only if both
//! reads were `2q + 2`. Otherwise the publisher has lapped it: the cell now
//! belongs to a later position and the subscriber has missed messages.
//!
//! Each subscriber keeps its next position in shared memory
//! (`positions`), so that a publisher configured to wait for the slowest
//! subscriber can see how far behind each one is.
//!
//! Payload words are stored with Release and loaded with Acquire: a
//! subscriber that sees a payload word from a later write then also sees
//! that write's odd `seq` on its second read, which is what makes the
//! check sound without fences.

use crate::sync::{AtomicWord, Ordering};

/// Words per cell: sequence, two payload words, padding (32 bytes).
pub(crate) const CELL_WORDS: usize = 4;

/// Who holds a broadcast message's slot: a word per slot, with bit `i` for
/// subscriber `i`'s view and [`RING_HOLD`] for the ring. The slot has one
/// reference for all of them; whoever clears the last bit releases it
/// ([`leave`]). Because a holder is a bit rather than a count, a reaper
/// knows exactly which views a dead subscriber held.
///
/// A subscriber's position word (its next position to read) carries two
/// flags for the hand-over between ring and view:
///
/// - [`READING`]: the subscriber claimed the message at its position and
///   is about to set its bit ([`begin_read`], [`finish_read`]). While it is
///   set, the publisher does not release that message.
/// - [`GONE`]: the publisher released the message at the position unread
///   (`drop_oldest` overwrote it): the subscriber must not read it, and is
///   told it lagged ([`force_out`]).
///
/// Both flags are set with a compare-and-swap on the position word, so
/// exactly one of "the subscriber starts reading `r`" and "the publisher
/// gives `r` up" happens first, and the other sees it. A subscriber's bit
/// is therefore only ever set while the ring's bit is still set: never on
/// a slot that was freed and reused.
pub(crate) const RING_HOLD: u64 = 1 << 63;
/// Flag of a subscriber position: reading the message at it.
pub(crate) const READING: u64 = 1 << 62;
/// Flag of a subscriber position: the message at it was released unread.
pub(crate) const GONE: u64 = 1 << 61;
/// The position part of a subscriber position word.
pub(crate) const POS_MASK: u64 = (1 << 55) - 1;

/// Subscriber: claims the message at position `seen` (its position word's
/// value, no flags) for reading. False if the publisher flagged the
/// position meanwhile.
pub(crate) fn begin_read<A: AtomicWord<Value = u64>>(pos: &A, seen: u64) -> bool {
    debug_assert_eq!(seen & !POS_MASK, 0);
    // AcqRel: pairs with the publisher's CAS in `force_out`.
    pos.compare_exchange(seen, seen | READING, Ordering::AcqRel, Ordering::Relaxed)
        .is_ok()
}

/// Subscriber, after [`begin_read`] of position `q`: sets its `bit` in the
/// slot's holder word and moves its position past `q`. Returns the holder
/// word as it was: it has `RING_HOLD` set under the protocol.
pub(crate) fn finish_read<A: AtomicWord<Value = u64>>(
    pos: &A,
    holder: &A,
    q: u64,
    bit: u64,
) -> u64 {
    // AcqRel: the view's reads of the slot happen-before the release by
    // whoever clears the last bit; and the ring's hold is seen.
    let old = holder.fetch_or(bit, Ordering::AcqRel);
    // Release: the publisher may reuse the cell (and release the message)
    // once every subscriber's position has passed it.
    pos.store(q + 1, Ordering::Release);
    old
}

/// What [`force_out`] found.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) enum ForceOut {
    /// The subscriber is past `r`, or now flagged `GONE`.
    Done,
    /// The subscriber is reading `r`: wait, and try again.
    Busy,
}

/// Publisher, before releasing message `r` unread: flags a subscriber whose
/// position is at or before `r` as `GONE`.
pub(crate) fn force_out<A: AtomicWord<Value = u64>>(pos: &A, r: u64) -> ForceOut {
    let mut v = pos.load(Ordering::Acquire);
    loop {
        if v & POS_MASK > r || v & GONE != 0 {
            return ForceOut::Done;
        }
        if v & READING != 0 {
            return ForceOut::Busy;
        }
        // AcqRel: pairs with `begin_read`; a subscriber's claim from `v`
        // now fails, and one that came first is seen (READING).
        match pos.compare_exchange(v, v | GONE, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => return ForceOut::Done,
            Err(now) => v = now,
        }
    }
}

pub(crate) use crate::sync::slotstate::leave_group as leave;

/// The shared part of a broadcast ring.
pub(crate) struct Broadcast<'a, A> {
    /// Next position to publish.
    pub(crate) tail: &'a A,
    /// `CELL_WORDS * capacity` words.
    pub(crate) cells: &'a [A],
}

/// What a subscriber found at its position.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Read {
    /// The message at the position; the caller advances by one.
    Message([u64; 2]),
    /// Nothing published at the position yet.
    Empty,
    /// The publisher has overwritten the position: the caller missed
    /// messages and should continue from `oldest`, the oldest position
    /// still in the ring.
    Lagged { oldest: u64 },
}

impl<'a, A: AtomicWord<Value = u64>> Broadcast<'a, A> {
    pub(crate) fn capacity(&self) -> u64 {
        (self.cells.len() / CELL_WORDS) as u64
    }

    fn cell(&self, pos: u64) -> &'a [A] {
        let i = (pos & (self.capacity() - 1)) as usize * CELL_WORDS;
        &self.cells[i..i + 3]
    }

    /// The position the next message will have.
    pub(crate) fn tail(&self) -> u64 {
        // Acquire: pairs with the Release store in `publish`.
        self.tail.load(Ordering::Acquire)
    }

    /// The message of position `pos` if its cell still holds it. For the
    /// publisher (the cell's only writer), to release what it published.
    pub(crate) fn published(&self, pos: u64) -> Option<[u64; 2]> {
        let cell = self.cell(pos);
        (cell[0].load(Ordering::Relaxed) == 2 * pos + 2).then(|| {
            [
                cell[1].load(Ordering::Relaxed),
                cell[2].load(Ordering::Relaxed),
            ]
        })
    }

    /// Publishes `msg` at position `pos` (the single publisher's own count,
    /// equal to `tail`).
    pub(crate) fn publish(&self, pos: u64, msg: [u64; 2]) {
        let cell = self.cell(pos);
        cell[0].store(2 * pos + 1, Ordering::Relaxed);
        // Release on the payload: a reader that sees it sees the odd seq.
        cell[1].store(msg[0], Ordering::Release);
        cell[2].store(msg[1], Ordering::Release);
        // Release: the payload happens-before a reader's Acquire of `seq`.
        cell[0].store(2 * pos + 2, Ordering::Release);
        self.tail.store(pos + 1, Ordering::Release);
    }

    /// Reads position `pos`.
    pub(crate) fn read(&self, pos: u64) -> Read {
        let tail = self.tail();
        if pos >= tail {
            return Read::Empty;
        }
        let oldest = tail.saturating_sub(self.capacity());
        if pos < oldest {
            return Read::Lagged { oldest };
        }
        let cell = self.cell(pos);
        let want = 2 * pos + 2;
        // Acquire: pairs with the Release store of the even seq.
        let s1 = cell[0].load(Ordering::Acquire);
        let msg = [
            cell[1].load(Ordering::Acquire),
            cell[2].load(Ordering::Acquire),
        ];
        let s2 = cell[0].load(Ordering::Relaxed);
        if s1 == want && s2 == want {
            Read::Message(msg)
        } else {
            // Overwritten while we looked: start again from what is left.
            Read::Lagged {
                oldest: self.tail().saturating_sub(self.capacity()).max(pos + 1),
            }
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
        cells: Vec<AtomicU64>,
    }

    fn mem(cap: usize) -> Arc<Mem> {
        Arc::new(Mem {
            tail: AtomicU64::new(0),
            cells: (0..cap * CELL_WORDS).map(|_| AtomicU64::new(0)).collect(),
        })
    }

    fn ring(m: &Mem) -> Broadcast<'_, AtomicU64> {
        Broadcast {
            tail: &m.tail,
            cells: &m.cells,
        }
    }

    #[test]
    fn every_reader_sees_every_message_and_laggers_are_told() {
        let m = mem(4);
        let r = ring(&m);
        assert_eq!(r.read(0), Read::Empty);
        for p in 0..4 {
            assert_eq!(r.published(p), None);
            r.publish(p, [p, p * 10]);
        }
        // Two readers at different positions see the same messages.
        assert_eq!(r.read(0), Read::Message([0, 0]));
        assert_eq!(r.read(3), Read::Message([3, 30]));
        assert_eq!(r.read(4), Read::Empty);
        // Position 4 evicts position 0's message.
        assert_eq!(r.published(0), Some([0, 0]));
        r.publish(4, [4, 40]);
        assert_eq!(r.published(0), None);
        r.publish(5, [5, 50]);
        assert_eq!(r.read(0), Read::Lagged { oldest: 2 });
        assert_eq!(r.read(2), Read::Message([2, 20]));
    }

    #[test]
    fn readers_never_accept_a_torn_or_overwritten_message() {
        let n = if cfg!(miri) { 200 } else { 1_000_000 };
        let m = mem(8);
        let m2 = m.clone();
        let writer = std::thread::spawn(move || {
            let r = ring(&m2);
            for p in 0..n {
                r.publish(p, [p, !p]);
            }
        });
        let readers: Vec<_> = (0..4)
            .map(|_| {
                let m = m.clone();
                std::thread::spawn(move || {
                    let r = ring(&m);
                    let (mut pos, mut seen, mut missed) = (0u64, 0u64, 0u64);
                    while pos < n {
                        match r.read(pos) {
                            Read::Message(msg) => {
                                assert_eq!(msg, [pos, !pos], "torn or misplaced message");
                                seen += 1;
                                pos += 1;
                            }
                            Read::Empty => std::thread::yield_now(),
                            Read::Lagged { oldest } => {
                                assert!(oldest > pos);
                                missed += oldest - pos;
                                pos = oldest;
                            }
                        }
                    }
                    assert_eq!(seen + missed, n);
                })
            })
            .collect();
        writer.join().unwrap();
        for r in readers {
            r.join().unwrap();
        }
    }
}

/// Loom model: `RUSTFLAGS="--cfg psyne_loom" cargo test --release --lib loom`.
#[cfg(all(test, psyne_loom))]
mod loom_model {
    use super::*;
    use loom::cell::UnsafeCell;
    use loom::sync::atomic::AtomicU64;
    use loom::sync::Arc;

    /// A reader racing a publisher that laps a two-cell ring: whatever it
    /// accepts as position `q`'s message is exactly what was published at
    /// `q`, never a mix of two writes.
    #[test]
    fn loom_broadcast_no_torn_reads() {
        loom::model(|| {
            let m = Arc::new((
                AtomicU64::new(0),
                (0..2 * CELL_WORDS)
                    .map(|_| AtomicU64::new(0))
                    .collect::<Vec<_>>(),
            ));
            let m2 = m.clone();
            let w = loom::thread::spawn(move || {
                let r = Broadcast {
                    tail: &m2.0,
                    cells: &m2.1,
                };
                for p in 0..3u64 {
                    r.publish(p, [p + 1, (p + 1) * 10]);
                }
            });
            let r = Broadcast {
                tail: &m.0,
                cells: &m.1,
            };
            for q in 0..2u64 {
                if let Read::Message(msg) = r.read(q) {
                    assert_eq!(msg, [q + 1, (q + 1) * 10]);
                }
            }
            w.join().unwrap();
        });
    }

    /// A slot held by a broadcast message: its holder word, its payload,
    /// and a "freed" count (the slot's one reference released).
    struct Held {
        pos: AtomicU64,
        holder: AtomicU64,
        active: AtomicU64,
        payload: UnsafeCell<u32>,
        freed: AtomicU64,
    }

    // SAFETY: the payload is guarded by the holder protocol, which is what
    // the models check (loom reports a race otherwise).
    unsafe impl Sync for Held {}

    fn held() -> Arc<Held> {
        Arc::new(Held {
            // The subscriber is at position 0, not yet reading.
            pos: AtomicU64::new(0),
            // Message 0 published: the ring holds it.
            holder: AtomicU64::new(RING_HOLD),
            active: AtomicU64::new(1),
            payload: UnsafeCell::new(42),
            freed: AtomicU64::new(0),
        })
    }

    /// The last holder releases the slot, which is then reused at once
    /// (written): loom reports any holder still reading it.
    fn release(h: &Held) {
        h.freed.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the last holder; nobody may read the payload any more.
        h.payload.with_mut(|p| unsafe { *p = 7 });
    }

    /// The subscriber reads position 0 (bit 1): a view while it holds it.
    fn subscriber(h: &Held) -> bool {
        if !begin_read(&h.pos, 0) {
            return false; // told it lagged
        }
        let old = finish_read(&h.pos, &h.holder, 0, 1);
        assert_ne!(old & RING_HOLD, 0, "a view of a slot the ring let go");
        // SAFETY: we hold a bit of the slot's group.
        assert_eq!(h.payload.with(|p| unsafe { *p }), 42);
        if leave(&h.holder, 1) {
            release(h);
        }
        true
    }

    /// The publisher overwrites message 0 unread (`drop_oldest`): forces
    /// the subscriber out (waiting while it reads, or until it is no longer
    /// active), then drops the ring's hold.
    fn publisher(h: &Held) {
        while h.active.load(Ordering::Acquire) == 1 && force_out(&h.pos, 0) == ForceOut::Busy {
            loom::thread::yield_now();
        }
        if leave(&h.holder, RING_HOLD) {
            release(h);
        }
    }

    /// A `drop_oldest` publisher gives up message 0 while a subscriber
    /// reads it: the subscriber either gets a view (and the slot is freed
    /// only after its last read) or is told it lagged; the slot is freed
    /// exactly once.
    #[test]
    fn loom_broadcast_view_or_lag_never_a_freed_slot() {
        loom::model(|| {
            let h = held();
            let h2 = h.clone();
            let s = loom::thread::spawn(move || subscriber(&h2));
            publisher(&h);
            let viewed = s.join().unwrap();
            assert_eq!(h.freed.load(Ordering::Relaxed), 1);
            if !viewed {
                assert_ne!(h.pos.load(Ordering::Relaxed) & GONE, 0);
            }
        });
    }

    /// The subscriber dies between claiming message 0 and recording its
    /// view, or while holding the view. A reaper clears its bit and marks
    /// it inactive while the publisher gives the message up: the publisher
    /// does not wait for ever, and the slot is freed exactly once.
    #[test]
    fn loom_broadcast_dead_subscriber_is_reaped() {
        for holding in [false, true] {
            loom::model(move || {
                let h = held();
                assert!(begin_read(&h.pos, 0));
                if holding {
                    finish_read(&h.pos, &h.holder, 0, 1);
                } // ... and dies.
                let h2 = h.clone();
                let reaper = loom::thread::spawn(move || {
                    h2.active.store(0, Ordering::Release);
                    if h2.holder.load(Ordering::Relaxed) & 1 != 0 && leave(&h2.holder, 1) {
                        release(&h2);
                    }
                });
                publisher(&h);
                reaper.join().unwrap();
                assert_eq!(h.freed.load(Ordering::Relaxed), 1);
            });
        }
    }
}
