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
        let n = if cfg!(miri) { 200 } else { 200_000 };
        let m = mem(8);
        let m2 = m.clone();
        let writer = std::thread::spawn(move || {
            let r = ring(&m2);
            for p in 0..n {
                r.publish(p, [p, !p]);
            }
        });
        let readers: Vec<_> = (0..2)
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
}
