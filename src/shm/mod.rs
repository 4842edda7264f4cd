//! Shared memory: named segments and the slab allocator inside them.
//!
//! [`Segment`] creates, opens and validates a named POSIX shared-memory
//! object; its [`Slab`] hands out fixed-size slots ([`SlotMut`] to write,
//! [`Slot`] to read) that other processes reach through a 16-byte
//! [`Handle`]. The byte layout is in `docs/layout.md`.

#[doc(hidden)]
pub mod hook;
pub(crate) mod lease;
pub(crate) mod region;
pub mod segment;
pub mod slab;
pub mod slot;

pub use segment::{validate_name, CreateOptions, DataAccess, Segment, SegmentInfo, LAYOUT_VERSION};
pub(crate) use slab::SlotCache;
pub use slab::{ClassStats, Slab, SlabConfig, MAX_SLOT_SIZE, SLOT_ALIGN};
pub use slot::{Handle, Slot, SlotMut, TensorMeta};

#[cfg(test)]
mod tests;
