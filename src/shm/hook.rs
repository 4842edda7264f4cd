//! Crash points for psyne's own tests (hidden from the docs).
//!
//! The crash-recovery tests kill a child process at an exact moment, for
//! instance between clearing a slot's free bit and claiming its state word.
//! Timing cannot hit a window of a few instructions reliably, so the child
//! arms one of these points with an action (typically: tell the parent,
//! then sleep until killed) and the library runs that action when it gets
//! there. Unarmed, a point costs one relaxed load of a static.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Mutex;

/// A place in the library where an armed action runs.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[repr(u8)]
#[non_exhaustive]
pub enum Point {
    /// `Slab::alloc`: a free bit cleared, the slot's state not claimed yet.
    AllocAfterTake = 1,
    /// Freeing a slot: its state word says free, its free bit is not set yet.
    FreeBeforeBit,
    /// A send: the message recorded as in flight (MPMC-layout rings: the
    /// slot published as a pending handle; SPSC: still the writer's),
    /// nothing on the ring yet.
    SendBeforeClaim,
    /// A send on a ring of the MPMC layout: a position claimed, its cell not
    /// published yet. A broadcast send: the ring's hold on the slot taken,
    /// the message not published yet.
    SendAfterClaim,
    /// A receive on a ring of the MPMC layout: a cell claimed and the
    /// message's slot taken, the cell not released yet.
    RecvAfterClaim,
    /// A broadcast receive: the subscriber's position marked as reading,
    /// its reference to the slot not recorded yet.
    SubscriberReading,
    /// A receive on a ring of the MPMC layout: a cell claimed, the
    /// message's slot not taken yet.
    RecvClaimed,
    /// Joining a channel: the endpoint counted (its bit set in the
    /// sender or receiver mask), the join not finished.
    JoinCounted,
    /// Reaping a dead endpoint: its bit cleared from the masks, the slots
    /// it held not reclaimed and its record not freed yet.
    ReapUncounted,
    /// A send on an SPSC ring: the cell published (its sequence word
    /// stored, so the consumer can already read it), the ring's `tail` not
    /// moved yet.
    SpscPublished,
    /// Joining a channel: a participant record taken (its pid stored), its
    /// start time not stored yet.
    JoinClaimed,
}

static POINT: AtomicU8 = AtomicU8::new(0);
static ACTION: Mutex<Option<fn()>> = Mutex::new(None);

/// Runs `action` every time the library reaches `point` (in any thread of
/// this process). Only one point is armed at a time.
pub fn arm(point: Point, action: fn()) {
    *ACTION.lock().unwrap_or_else(|e| e.into_inner()) = Some(action);
    POINT.store(point as u8, Ordering::SeqCst);
}

/// Disarms the point armed by [`arm`].
pub fn disarm() {
    POINT.store(0, Ordering::SeqCst);
}

/// Runs the action if `point` is armed.
#[inline]
pub(crate) fn hit(point: Point) {
    if POINT.load(Ordering::Relaxed) == point as u8 {
        fire();
    }
}

#[cold]
fn fire() {
    let action = *ACTION.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(action) = action {
        action();
    }
}
