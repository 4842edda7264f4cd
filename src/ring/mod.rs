//! Bounded lock-free rings that carry 16-byte messages (slot handles)
//! between threads and processes.
//!
//! Each ring is written against [`crate::sync::AtomicWord`] and references
//! to its words: in a channel they are `std` atomics in a shared-memory
//! area (offsets only, never pointers, in the shared bytes); in the loom
//! models they are loom atomics in a vector. Capacities are powers of two.
//!
//! - [`spsc`]: one producer, one consumer; each side caches the other's
//!   index.
//! - [`mpmc`]: sequence-numbered cells; with `single_producer` /
//!   `single_consumer` it serves MPSC and SPMC with a store instead of a
//!   CAS on the single side.
//!
//! The channel layer (the loan / send / recv API) is not built on them yet.

#![allow(dead_code)]

pub(crate) mod broadcast;
pub(crate) mod mpmc;
pub(crate) mod spsc;

/// A push into a full ring: the message comes back.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Full<T>(pub T);
