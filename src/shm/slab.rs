//! The slab allocator: fixed-size slots in size classes, living inside a
//! segment and shared by every process that maps it.
//!
//! Control state (the slab metadata, one descriptor and one free bitmap per
//! class, one 128-byte header per slot) lives in the segment's control
//! mapping; slot payloads live in the data mapping. Each slot's state word
//! (`src/sync/slotstate.rs`) says whether it is free; each class's free
//! bitmap (`src/sync/freebits.rs`) is a hint for finding free slots fast.
//! Allocating is two CASes (clear a bit, claim the slot's state word);
//! freeing is one atomic operation on the state word and one `fetch_or`.
//! A process killed between the two steps leaves a free slot that the
//! bitmap does not show; [`Slab::repair`] finds it again (run by channel
//! endpoints when they find a dead peer, and by an allocation that finds
//! the slab full). See `docs/layout.md` for the bytes.
//!
//! Every slot payload is aligned to [`SLOT_ALIGN`] (256) bytes, so a slot can
//! be a GPU storage-buffer binding offset; slots of a page or more are
//! page-aligned.

use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicU64};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytemuck::{Pod, Zeroable};

use super::hook::{self, Point};
use super::lease::{Keep, LeasePool};
use super::region::Memory;
use super::slot::{GroupBit, Handle, Slot, SlotMut, TensorHeader};
use crate::error::{Error, Result};
use crate::sync::slotstate;
use crate::sync::Ordering;
use crate::sync::{freebits, hint};
use crate::tensor::{Element, Shape};

/// Alignment of every slot payload, in bytes.
pub const SLOT_ALIGN: u64 = 256;
/// Alignment of slots whose size is at least one page.
pub const PAGE_SIZE: u64 = 4096;
/// The most size classes a slab can have.
pub const MAX_CLASSES: usize = 16;
/// The largest slot payload (a handle stores lengths in 32 bits).
pub const MAX_SLOT_SIZE: u64 = u32::MAX as u64 + 1 - PAGE_SIZE;

const SLAB_MAGIC: u32 = u32::from_le_bytes(*b"SLB1");
/// The most slots a class can have (an index must fit in 32 bits).
const MAX_SLOTS: u32 = u32::MAX - 1;
/// Free bitmaps start at multiples of this many bytes.
const BITMAP_ALIGN: u64 = 128;
/// How often an allocation that finds the slab full may repair its free
/// bitmaps (process-local).
const REPAIR_INTERVAL: Duration = Duration::from_millis(100);
pub(crate) const META_SIZE: usize = 128;
pub(crate) const CLASS_SIZE: usize = 128;
pub(crate) const SLOT_HEADER_SIZE: usize = 128;

/// Slab metadata at the start of the slab's control area.
#[derive(Copy, Clone, Pod, Zeroable)]
#[repr(C)]
struct SlabMeta {
    magic: u32,
    class_count: u32,
    slot_header_size: u32,
    config_crc: u32,
    data_size: u64,
    control_size: u64,
    _reserved: [u8; 96],
}

/// The immutable first half of a class record.
#[derive(Copy, Clone, Pod, Zeroable)]
#[repr(C)]
struct ClassDesc {
    slot_size: u64,
    slot_count: u32,
    slot_align: u32,
    data_offset: u64,
    headers_offset: u64,
    /// Slab offset of the class's free bitmap.
    free_offset: u64,
    _reserved: [u8; 24],
}

/// The mutable second half of a class record (its own cache line).
#[repr(C)]
pub(crate) struct ClassHot {
    /// A bitmap word likely to have free slots (a hint; any value is safe).
    cursor: AtomicU64,
    failures: AtomicU64,
    _pad: [u64; 6],
}

/// The atomic part of a slot header; a [`TensorHeader`] follows it.
#[repr(C)]
pub(crate) struct SlotAtomics {
    /// Generation and holders ([`crate::sync::slotstate`]).
    pub(crate) state: AtomicU64,
    /// The process holding the slot's one read reference (set by `take`
    /// and `into_shared`; 0 from allocation on). A writer is named in
    /// `state` instead.
    pub(crate) owner_pid: AtomicU32,
    _reserved: AtomicU32,
}

const _: () = {
    assert!(std::mem::size_of::<SlabMeta>() == META_SIZE);
    assert!(std::mem::size_of::<ClassDesc>() == 64);
    assert!(std::mem::size_of::<ClassHot>() == 64);
    assert!(
        std::mem::size_of::<SlotAtomics>() + std::mem::size_of::<TensorHeader>()
            == SLOT_HEADER_SIZE
    );
};

/// The size classes of a slab: for each, a slot payload size and a count.
///
/// Sizes are rounded up to [`SLOT_ALIGN`] (or to [`PAGE_SIZE`] once they
/// reach a page). Classes are kept sorted by size.
///
/// # Examples
/// ```
/// let cfg = psyne::SlabConfig::new().class(4096, 64).class(1 << 20, 8);
/// assert_eq!(cfg.data_bytes().unwrap(), 64 * 4096 + 8 * (1 << 20));
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SlabConfig {
    classes: Vec<(u64, u32)>,
}

impl SlabConfig {
    /// An empty configuration; add classes with [`SlabConfig::class`].
    pub fn new() -> Self {
        SlabConfig::default()
    }

    /// Adds a class of `count` slots of at least `slot_size` bytes each.
    pub fn class(mut self, slot_size: u64, count: u32) -> Self {
        self.classes.push((slot_size, count));
        self
    }

    /// A default set of classes for a slab of about `total` bytes: sizes
    /// 4 KiB, 64 KiB, 1 MiB, 16 MiB, ... up to an eighth of `total`, each
    /// class given an equal share of the bytes, at most 4096 slots a class.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] when `total` is under 64 KiB.
    pub fn with_total(total: u64) -> Result<Self> {
        if total < 64 * 1024 {
            return Err(Error::InvalidConfig(format!(
                "a slab of {total} bytes is too small: the minimum is 64 KiB"
            )));
        }
        let mut sizes = vec![4096u64];
        while sizes.len() < MAX_CLASSES {
            let next = sizes[sizes.len() - 1] * 16;
            if next > total / 8 || next > MAX_SLOT_SIZE {
                break;
            }
            sizes.push(next);
        }
        let share = total / sizes.len() as u64;
        let classes = sizes
            .into_iter()
            .map(|s| (s, (share / s).clamp(1, 4096) as u32))
            .collect();
        Ok(SlabConfig { classes })
    }

    /// The classes after rounding and sorting, checked.
    pub(crate) fn normalized(&self) -> Result<Vec<(u64, u32)>> {
        if self.classes.is_empty() {
            return Err(Error::InvalidConfig(
                "a slab needs at least one size class".into(),
            ));
        }
        if self.classes.len() > MAX_CLASSES {
            return Err(Error::InvalidConfig(format!(
                "{} size classes given, the maximum is {MAX_CLASSES}",
                self.classes.len()
            )));
        }
        let mut out = Vec::with_capacity(self.classes.len());
        for &(size, count) in &self.classes {
            if size == 0 || count == 0 {
                return Err(Error::InvalidConfig(format!(
                    "size class ({size} bytes x {count}) must have a non-zero size and count"
                )));
            }
            if size > MAX_SLOT_SIZE {
                return Err(Error::InvalidConfig(format!(
                    "slot size {size} exceeds the maximum of {MAX_SLOT_SIZE} bytes"
                )));
            }
            if count > MAX_SLOTS {
                return Err(Error::InvalidConfig(format!(
                    "{count} slots in one class is too many"
                )));
            }
            out.push((round_slot(size), count));
        }
        out.sort_unstable();
        if out.windows(2).any(|w| w[0].0 == w[1].0) {
            return Err(Error::InvalidConfig(
                "two size classes round to the same slot size".into(),
            ));
        }
        Ok(out)
    }

    /// Bytes of payload the slab needs (the data area), page-rounded.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for an empty or impossible configuration,
    /// or a total that overflows.
    pub fn data_bytes(&self) -> Result<u64> {
        Ok(data_layout(&self.normalized()?)?.1)
    }

    /// Bytes of control state the slab needs (metadata, slot headers and
    /// free bitmaps).
    ///
    /// # Errors
    /// As [`SlabConfig::data_bytes`].
    pub fn control_bytes(&self) -> Result<u64> {
        Ok(control_layout(&self.normalized()?).1)
    }
}

/// (slab offset of each class's free bitmap, bytes of control state): the
/// metadata, the class table, every class's slot headers, then every
/// class's free bitmap, each starting at a multiple of 128 bytes.
fn control_layout(classes: &[(u64, u32)]) -> (Vec<u64>, u64) {
    let slots: u64 = classes.iter().map(|c| c.1 as u64).sum();
    let mut at = (META_SIZE + CLASS_SIZE * classes.len()) as u64 + slots * SLOT_HEADER_SIZE as u64;
    let mut offsets = Vec::with_capacity(classes.len());
    for &(_, count) in classes {
        at = at.next_multiple_of(BITMAP_ALIGN);
        offsets.push(at);
        at += freebits::words_for(count) as u64 * 8;
    }
    (offsets, at)
}

fn align_for(size: u64) -> u64 {
    if size >= PAGE_SIZE {
        PAGE_SIZE
    } else {
        SLOT_ALIGN
    }
}

fn round_slot(size: u64) -> u64 {
    size.next_multiple_of(align_for(size))
}

/// (data offset of each class, total data bytes page-rounded).
fn data_layout(classes: &[(u64, u32)]) -> Result<(Vec<u64>, u64)> {
    let overflow = || Error::InvalidConfig("the slab's total size overflows".into());
    let mut offsets = Vec::with_capacity(classes.len());
    let mut at = 0u64;
    for &(size, count) in classes {
        at = at
            .checked_next_multiple_of(align_for(size))
            .ok_or_else(overflow)?;
        offsets.push(at);
        at = size
            .checked_mul(count as u64)
            .and_then(|b| b.checked_add(at))
            .ok_or_else(overflow)?;
    }
    Ok((
        offsets,
        at.checked_next_multiple_of(PAGE_SIZE)
            .ok_or_else(overflow)?,
    ))
}

/// Who a dead process was to a slot it was moving, for
/// [`Slab::reclaim_handle`]: the states it can have left the slot in.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) enum Holder {
    /// Sending it: its writer, or the pending reference of a handle that
    /// never reached a ring.
    Sender,
    /// Receiving it off a ring: the handle's pending reference, or the one
    /// read reference it took from it.
    Taker,
    /// Holding the one read reference it took.
    Reader,
    /// Publishing it to a broadcast ring: its writer, or the one reference
    /// of a group nobody joined.
    Group,
}

/// What a process knows about one class after validating it.
#[derive(Copy, Clone, Debug)]
pub(crate) struct Class {
    pub(crate) slot_size: u64,
    pub(crate) slot_count: u32,
    /// `log2(slot_size)` when it is a power of two (the default classes
    /// are), so that naming a slot from an offset needs no division.
    size_shift: Option<u32>,
    /// Offset of slot 0's payload in the data mapping.
    pub(crate) data_offset: u64,
    /// Slot 0's header, the class's hot line and its free bitmap in the
    /// control mapping, looked up and bounds-checked once (`SlabInner::mem`
    /// keeps them mapped): every allocation, send and receive uses them.
    headers: NonNull<u8>,
    hot: NonNull<ClassHot>,
    free: NonNull<AtomicU64>,
}

// SAFETY: the pointers name a class's slot headers, hot line and bitmap in
// a shared mapping, accessed only atomically (or, for a tensor header, by
// the slot's holder under the slot-state protocol) from any thread; the
// `SlabInner` that owns the class owns the mapping too.
unsafe impl Send for Class {}
// SAFETY: as for `Send`.
unsafe impl Sync for Class {}

/// Usage of one size class.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct ClassStats {
    /// Payload bytes of each slot.
    pub slot_size: u64,
    /// Slots in the class.
    pub slots: u32,
    /// Slots allocated now.
    pub used: u32,
    /// Allocations since creation (frees, counted by the slots'
    /// generations, plus slots in use).
    pub allocs: u64,
    /// Allocations that found this class empty.
    pub failures: u64,
}

impl ClassStats {
    /// Slots free now.
    pub fn free(&self) -> u32 {
        self.slots - self.used
    }
}

/// Free slots one allocating endpoint has set aside for its next
/// allocations (a [`crate::Sender`] keeps one).
///
/// Allocating from the shared free bitmap costs a cache-line transfer per
/// message when a consumer on another core frees into the same bitmap
/// word. With a cache, an allocation clears up to [`SlotCache`]'s limit of
/// bits of one word at once and uses them one by one; its consumer's frees
/// then find the bitmap word in their own cache. Set-aside slots stay free
/// in their state words (the truth, see `sync/freebits.rs`): a repair
/// makes them allocatable by others again, and a process that dies with
/// a cache loses nothing. [`Slab::put_back`] returns the bits.
#[derive(Debug, Default)]
pub(crate) struct SlotCache {
    /// Per class: the bitmap word the bits came from, and the bits held.
    held: [(usize, u64); MAX_CLASSES],
}

/// How many bits of one word a cache takes at once from a class of
/// `slot_count` slots: none below 16 slots (a cache must not hold back
/// slots that other senders need), at most an eighth of the class, and
/// at most 16.
fn cache_take(slot_count: u32) -> u32 {
    (slot_count / 8).min(16)
}

/// A slab allocator inside a segment (named, or anonymous in-process).
///
/// Cheap to clone: clones share the same memory. Slots keep the memory alive.
#[derive(Clone)]
pub struct Slab {
    pub(crate) inner: Arc<SlabInner>,
}

// Aligned to two cache lines (the adjacent-line prefetcher's pair): the
// reference count in front of it is written on every allocation and
// receive, and must not share a line with another thread's data.
#[repr(align(128))]
pub(crate) struct SlabInner {
    pub(crate) mem: Arc<Memory>,
    pub(crate) classes: Vec<Class>,
    pub(crate) pid: u32,
    /// When this process last repaired the free bitmaps because an
    /// allocation found the slab full (milliseconds since `created`). Only
    /// the root's is used (see `root`).
    repaired_ms: AtomicU64,
    created: Instant,
    /// For an endpoint's own handle (`Slab::private_handle`): the handle of
    /// the segment it was made from, which stands for the slab in this
    /// process (its repair clock; the GPU module's key). `None`: this is it.
    root: Option<Arc<SlabInner>>,
}

impl std::fmt::Debug for Slab {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Slab")
            .field("classes", &self.inner.classes)
            .field("writable", &self.inner.mem.data.writable())
            .finish()
    }
}

impl Slab {
    /// Writes fresh slab metadata at `area` in the control mapping and puts
    /// every slot on its class's free list. The data area starts at 0.
    pub(crate) fn format(mem: Arc<Memory>, area: usize, cfg: &SlabConfig) -> Result<Slab> {
        let classes = cfg.normalized()?;
        let (data_offsets, data_size) = data_layout(&classes)?;
        if data_size > mem.data.len() as u64 {
            return Err(Error::InvalidConfig(
                "data mapping too small for the slab".into(),
            ));
        }
        let (free_offsets, control_size) = control_layout(&classes);
        let mut descs = Vec::with_capacity(classes.len());
        let mut headers_at = (META_SIZE + CLASS_SIZE * classes.len()) as u64;
        for (i, (&(slot_size, slot_count), &data_offset)) in
            classes.iter().zip(&data_offsets).enumerate()
        {
            descs.push(ClassDesc {
                slot_size,
                slot_count,
                slot_align: align_for(slot_size) as u32,
                data_offset,
                headers_offset: headers_at,
                free_offset: free_offsets[i],
                _reserved: [0; 24],
            });
            headers_at += slot_count as u64 * SLOT_HEADER_SIZE as u64;
        }
        let mut meta = SlabMeta {
            magic: SLAB_MAGIC,
            class_count: classes.len() as u32,
            slot_header_size: SLOT_HEADER_SIZE as u32,
            config_crc: 0,
            data_size,
            control_size,
            _reserved: [0; 96],
        };
        meta.config_crc = config_crc(&meta, &descs);

        let ctl = &mem.control;
        // The segment is being created; openers that follow the protocol
        // touch nothing before its header's magic is published.
        // SAFETY: so this thread has the control area to itself; `ptr`
        // checked bounds and alignment.
        unsafe {
            ctl.ptr::<SlabMeta>(area).write(meta);
            for (i, d) in descs.iter().enumerate() {
                ctl.ptr::<ClassDesc>(area + META_SIZE + i * CLASS_SIZE)
                    .write(*d);
            }
        }
        let slab = Slab::from_descs(mem.clone(), area, &descs);
        for c in &slab.inner.classes {
            let hot = slab.hot(c);
            hot.cursor.store(0, Ordering::Relaxed);
            for i in 0..c.slot_count {
                let s = slab.slot_atomics(c, i);
                s.state.store(0, Ordering::Relaxed);
                s.owner_pid.store(0, Ordering::Relaxed);
            }
            for (w, word) in slab.bits(c).iter().enumerate() {
                word.store(freebits::initial_word(c.slot_count, w), Ordering::Relaxed);
            }
        }
        Ok(slab)
    }

    /// Validates the slab metadata at `area` (of `area_len` bytes) in an
    /// existing segment, whose slab data area is the first `data_len` bytes
    /// of the data mapping, and returns a handle to it.
    pub(crate) fn attach(
        mem: Arc<Memory>,
        area: usize,
        area_len: usize,
        data_len: u64,
        name: &str,
    ) -> Result<Slab> {
        let bad = |reason: String| Error::InvalidLayout {
            name: name.to_string(),
            reason,
        };
        let corrupt = |reason: String| Error::CorruptHeader {
            name: name.to_string(),
            reason,
        };
        if area_len < META_SIZE {
            return Err(bad(format!(
                "slab area of {area_len} bytes is smaller than its metadata"
            )));
        }
        let meta: SlabMeta = read_pod(&mem, area);
        if meta.magic != SLAB_MAGIC {
            return Err(corrupt(format!("slab magic is {:#010x}", meta.magic)));
        }
        let n = meta.class_count as usize;
        if n == 0 || n > MAX_CLASSES {
            return Err(corrupt(format!(
                "slab has {n} size classes (1..={MAX_CLASSES} allowed)"
            )));
        }
        if META_SIZE + n * CLASS_SIZE > area_len {
            return Err(bad("class table runs past the slab area".into()));
        }
        let descs: Vec<ClassDesc> = (0..n)
            .map(|i| read_pod(&mem, area + META_SIZE + i * CLASS_SIZE))
            .collect();
        if config_crc(&meta, &descs) != meta.config_crc {
            return Err(corrupt("slab configuration checksum mismatch".into()));
        }
        if meta.slot_header_size as usize != SLOT_HEADER_SIZE {
            return Err(bad(format!(
                "slot header size {} (expected {SLOT_HEADER_SIZE})",
                meta.slot_header_size
            )));
        }
        if meta.control_size > area_len as u64 {
            return Err(bad(format!(
                "slab control state needs {} bytes, its area has {area_len}",
                meta.control_size
            )));
        }
        if meta.data_size > data_len.min(mem.data.len() as u64) {
            return Err(bad(format!(
                "slab data needs {} bytes, its area has {data_len}",
                meta.data_size
            )));
        }
        let mut prev_data_end = 0u64;
        let mut prev_hdr_end = (META_SIZE + n * CLASS_SIZE) as u64;
        for (i, d) in descs.iter().enumerate() {
            let align = align_for(d.slot_size);
            let data_end = d
                .slot_size
                .checked_mul(d.slot_count as u64)
                .and_then(|b| b.checked_add(d.data_offset));
            let hdr_end = (d.slot_count as u64)
                .checked_mul(SLOT_HEADER_SIZE as u64)
                .and_then(|b| b.checked_add(d.headers_offset));
            let problem = if d.slot_size == 0
                || d.slot_size > MAX_SLOT_SIZE
                || d.slot_size % align != 0
            {
                Some(format!("slot size {}", d.slot_size))
            } else if i > 0 && d.slot_size <= descs[i - 1].slot_size {
                Some(format!(
                    "slot size {} is not larger than the previous class's",
                    d.slot_size
                ))
            } else if d.slot_count == 0 || d.slot_count > MAX_SLOTS {
                Some(format!("slot count {}", d.slot_count))
            } else if d.slot_align as u64 != align || d.data_offset % align != 0 {
                Some(format!(
                    "data offset {} not aligned to {align}",
                    d.data_offset
                ))
            } else if d.data_offset < prev_data_end || data_end.is_none_or(|e| e > meta.data_size) {
                Some(format!(
                    "slots at data offset {} overlap or leave the data area",
                    d.data_offset
                ))
            } else if d.headers_offset < prev_hdr_end
                || d.headers_offset % SLOT_HEADER_SIZE as u64 != 0
                || hdr_end.is_none_or(|e| e > meta.control_size)
            {
                Some(format!(
                    "slot headers at {} overlap, are misaligned or leave the slab area",
                    d.headers_offset
                ))
            } else {
                None
            };
            if let Some(p) = problem {
                return Err(bad(format!("size class {i}: {p}")));
            }
            prev_data_end = data_end.unwrap_or(u64::MAX);
            prev_hdr_end = hdr_end.unwrap_or(u64::MAX);
        }
        // The free bitmaps follow every class's slot headers, in class order.
        let mut prev_bits_end = prev_hdr_end;
        for (i, d) in descs.iter().enumerate() {
            let end = d
                .free_offset
                .checked_add(freebits::words_for(d.slot_count) as u64 * 8);
            if d.free_offset < prev_bits_end
                || d.free_offset % 8 != 0
                || end.is_none_or(|e| e > meta.control_size)
            {
                return Err(bad(format!(
                    "size class {i}: free bitmap at {} overlaps, is misaligned or leaves the slab area",
                    d.free_offset
                )));
            }
            prev_bits_end = end.unwrap_or(u64::MAX);
        }
        Ok(Slab::from_descs(mem, area, &descs))
    }

    fn from_descs(mem: Arc<Memory>, area: usize, descs: &[ClassDesc]) -> Slab {
        let classes = descs
            .iter()
            .enumerate()
            .map(|(i, d)| {
                let headers_offset = area + d.headers_offset as usize;
                let hot_offset = area + META_SIZE + i * CLASS_SIZE + 64;
                let free_offset = area + d.free_offset as usize;
                let control = &mem.control;
                // Bounds- and alignment-checked here, for every later
                // access: the first and last slot headers, the hot line and
                // the whole bitmap.
                let last = headers_offset + (d.slot_count as usize - 1) * SLOT_HEADER_SIZE;
                control.ptr::<[u8; SLOT_HEADER_SIZE]>(last);
                let words = freebits::words_for(d.slot_count);
                // SAFETY: atomics, valid for any bits; `slice_at` checks
                // the range.
                let free: &[AtomicU64] = unsafe { control.slice_at(free_offset, words) };
                Class {
                    slot_size: d.slot_size,
                    slot_count: d.slot_count,
                    size_shift: d
                        .slot_size
                        .is_power_of_two()
                        .then(|| d.slot_size.trailing_zeros()),
                    data_offset: d.data_offset,
                    headers: NonNull::new(control.ptr::<SlotAtomics>(headers_offset).cast())
                        .expect("inside a mapping"),
                    hot: NonNull::new(control.ptr::<ClassHot>(hot_offset))
                        .expect("inside a mapping"),
                    free: NonNull::from(free).cast(),
                }
            })
            .collect();
        Slab {
            inner: Arc::new(SlabInner {
                mem,
                classes,
                pid: std::process::id(),
                repaired_ms: AtomicU64::new(u64::MAX),
                created: Instant::now(),
                root: None,
            }),
        }
    }

    /// Another handle to the same slab, with a reference count of its own.
    ///
    /// Every slot keeps its slab handle alive (a clone of an `Arc`, made
    /// on each allocation and receive, dropped with the slot). Threads
    /// that share one handle bounce that count's cache line between their
    /// cores on every message; a channel endpoint keeps a handle of its
    /// own, so that a producer and a consumer thread of one process touch
    /// only counts in their own caches.
    ///
    /// The new handle keeps the segment's own handle alive, which still
    /// stands for the slab in this process: one repair clock for all
    /// handles, one key for the GPU module's imports.
    pub(crate) fn private_handle(&self) -> Slab {
        let root = self.root().clone();
        Slab {
            inner: Arc::new(SlabInner {
                mem: root.mem.clone(),
                classes: root.classes.clone(),
                pid: root.pid,
                repaired_ms: AtomicU64::new(u64::MAX),
                created: root.created,
                root: Some(root),
            }),
        }
    }

    /// The handle that stands for this slab in this process (the
    /// segment's; see `private_handle`).
    pub(crate) fn root(&self) -> &Arc<SlabInner> {
        self.inner.root.as_ref().unwrap_or(&self.inner)
    }

    /// What keeps this slab alive for a new slot reference: a lease from
    /// `leases` (a pool of this very handle), else a clone.
    #[inline]
    pub(crate) fn keep(&self, leases: Option<&LeasePool>) -> Keep {
        match leases {
            Some(p) => {
                assert!(
                    Arc::ptr_eq(&p.slab().inner, &self.inner),
                    "psyne bug: a lease pool of another slab handle"
                );
                p.lease()
            }
            None => Keep::from(self.clone()),
        }
    }

    pub(crate) fn hot(&self, c: &Class) -> &ClassHot {
        // SAFETY: ClassHot is atomics (and padding never read); valid for any
        // bits, changed only atomically; `from_descs` checked the pointer in
        // bounds, and `self.inner.mem` keeps it mapped.
        unsafe { c.hot.as_ref() }
    }

    /// The class's free bitmap.
    pub(crate) fn bits(&self, c: &Class) -> &[AtomicU64] {
        // SAFETY: atomics, valid for any bits and only changed atomically;
        // `from_descs` checked the range in bounds (`self.inner.mem` keeps
        // it mapped).
        unsafe { std::slice::from_raw_parts(c.free.as_ptr(), freebits::words_for(c.slot_count)) }
    }

    pub(crate) fn slot_atomics(&self, c: &Class, index: u32) -> &SlotAtomics {
        assert!(index < c.slot_count, "psyne bug: slot index out of range");
        let p = c
            .headers
            .as_ptr()
            .wrapping_add(index as usize * SLOT_HEADER_SIZE);
        // SAFETY: atomics, valid for any bits; in the header table that
        // `from_descs` checked (bounds and alignment), index < slot_count.
        unsafe { &*(p as *const SlotAtomics) }
    }

    pub(crate) fn tensor_header_ptr(&self, c: &Class, index: u32) -> *mut TensorHeader {
        assert!(index < c.slot_count, "psyne bug: slot index out of range");
        let off = index as usize * SLOT_HEADER_SIZE + std::mem::size_of::<SlotAtomics>();
        // In bounds (as in `slot_atomics`), so the pointer stays inside the
        // mapping.
        c.headers.as_ptr().wrapping_add(off) as *mut TensorHeader
    }

    pub(crate) fn class(&self, class: u8) -> &Class {
        &self.inner.classes[class as usize]
    }

    /// Whether slots can be written (the data area is mapped read-write).
    pub fn writable(&self) -> bool {
        self.inner.mem.data.writable()
    }

    /// The largest payload one slot can hold.
    pub fn max_slot_size(&self) -> u64 {
        self.inner.classes.last().map_or(0, |c| c.slot_size)
    }

    /// Allocates a slot of at least `nbytes` bytes: the smallest class that
    /// fits, or a larger one if that class is exhausted.
    ///
    /// # Errors
    /// [`Error::TooLarge`] if no class can ever hold `nbytes`;
    /// [`Error::SlabFull`] if every class that could is exhausted now;
    /// [`Error::ReadOnly`] if the data area is mapped read-only;
    /// [`Error::Corrupt`] if a free list is damaged.
    pub fn alloc(&self, nbytes: u64) -> Result<SlotMut> {
        self.alloc_with(nbytes, None, None)
    }

    /// [`Slab::alloc`] from `cache` first, refilling it from the bitmap;
    /// the slot keeps the slab alive with a lease from `leases` (a pool of
    /// this slab) if given.
    pub(crate) fn alloc_cached(
        &self,
        nbytes: u64,
        cache: &mut SlotCache,
        leases: Option<&LeasePool>,
    ) -> Result<SlotMut> {
        self.alloc_with(nbytes, Some(cache), leases)
    }

    /// A slot for a sender's next loan, claimed ahead of time (after a
    /// send, while the sender would otherwise wait): from the class that
    /// [`Slab::alloc`] would choose for `nbytes` first, through `cache`.
    /// `sole`: the caller is the only allocator of this slab (the one
    /// sender of an spsc, spmc or broadcast channel), so a slot it claims
    /// ahead can starve nobody but itself; otherwise only classes large
    /// enough to cache take part (one claimed slot per sender must not
    /// starve the others). `None` if the class has no free slot now.
    pub(crate) fn alloc_ahead(
        &self,
        nbytes: u64,
        cache: &mut SlotCache,
        sole: bool,
        leases: Option<&LeasePool>,
    ) -> Option<SlotMut> {
        let first = self.first_class(nbytes)?;
        let count = self.inner.classes[first].slot_count;
        let enough = if sole {
            count >= 2
        } else {
            cache_take(count) > 1
        };
        if !enough || !self.writable() {
            return None;
        }
        self.alloc_from(first, Some(first), nbytes, Some(cache), leases)
            .ok()
            .flatten()
    }

    /// The class [`Slab::alloc`] tries first for `nbytes`.
    pub(crate) fn first_class(&self, nbytes: u64) -> Option<usize> {
        self.inner
            .classes
            .iter()
            .position(|c| c.slot_size >= nbytes)
    }

    /// Whether a class that could hold `nbytes` shows a free slot now (a
    /// hint for a waiter deciding when to try again; the allocation itself
    /// decides).
    pub(crate) fn may_have_room(&self, nbytes: u64) -> bool {
        let Some(first) = self.first_class(nbytes) else {
            return false;
        };
        self.inner.classes[first..]
            .iter()
            .any(|c| self.bits(c).iter().any(|w| w.load(Ordering::Relaxed) != 0))
    }

    /// Gives the bits `cache` holds back to the bitmaps.
    pub(crate) fn put_back(&self, cache: &mut SlotCache) {
        for (ci, c) in self.inner.classes.iter().enumerate() {
            let (word, bits) = std::mem::take(&mut cache.held[ci]);
            if bits != 0 {
                freebits::put_many(self.bits(c), word, bits);
            }
        }
    }

    fn alloc_with(
        &self,
        nbytes: u64,
        mut cache: Option<&mut SlotCache>,
        leases: Option<&LeasePool>,
    ) -> Result<SlotMut> {
        if !self.writable() {
            return Err(Error::ReadOnly);
        }
        let first = self.first_class(nbytes).ok_or(Error::TooLarge {
            requested: nbytes,
            max: self.max_slot_size(),
        })?;
        if let Some(slot) = self.alloc_from(first, None, nbytes, cache.as_deref_mut(), leases)? {
            return Ok(slot);
        }
        // Full. A process killed between the two steps of an allocation or
        // a free leaves a free slot that the bitmaps do not show (and so
        // does a cache of another process): look for such slots (at most
        // every REPAIR_INTERVAL in this process) before giving up.
        if self.repair_due() && self.repair() > 0 {
            if let Some(slot) = self.alloc_from(first, None, nbytes, cache, leases)? {
                return Ok(slot);
            }
        }
        Err(Error::SlabFull { requested: nbytes })
    }

    /// One pass over the classes from `first` on (up to `last`, or all):
    /// a slot, or `None` if every one of them looked full.
    fn alloc_from(
        &self,
        first: usize,
        last: Option<usize>,
        nbytes: u64,
        mut cache: Option<&mut SlotCache>,
        leases: Option<&LeasePool>,
    ) -> Result<Option<SlotMut>> {
        let pid = self.inner.pid;
        let end = last.map_or(self.inner.classes.len(), |l| l + 1);
        for ci in first..end {
            let c = &self.inner.classes[ci];
            if c.slot_size < nbytes {
                continue; // unreachable for validated (sorted) classes
            }
            let hot = self.hot(c);
            let bits = self.bits(c);
            let per_take = cache_take(c.slot_count);
            let mut held = match cache.as_deref_mut() {
                Some(cache) if per_take > 1 => Some(&mut cache.held[ci]),
                _ => None,
            };
            let claimed = loop {
                let index = match held.as_deref_mut() {
                    Some((word, mask)) if *mask != 0 => {
                        let b = mask.trailing_zeros() as usize;
                        *mask &= *mask - 1;
                        *word * freebits::WORD_BITS + b
                    }
                    _ => {
                        // A hint: `take_many` starts at word 0 if it is
                        // out of range.
                        let start = hot.cursor.load(Ordering::Relaxed) as usize;
                        let take = if held.is_some() { per_take } else { 1 };
                        let Some((word, mut mask)) = freebits::take_many(bits, start, take) else {
                            break None;
                        };
                        if word != start {
                            hot.cursor.store(word as u64, Ordering::Relaxed);
                        }
                        // A consumer sets a bit of this word next, when it
                        // frees a slot (see `sync::hint`).
                        hint::demote((&bits[word] as *const AtomicU64).cast());
                        let b = mask.trailing_zeros() as usize;
                        mask &= mask - 1;
                        if let Some(h) = held.as_deref_mut() {
                            *h = (word, mask);
                        }
                        word * freebits::WORD_BITS + b
                    }
                };
                if index >= c.slot_count as usize {
                    if let Some(h) = held.as_deref_mut() {
                        *h = (0, 0);
                    }
                    return Err(Error::Corrupt(format!(
                        "free bitmap of size class {ci} marks slot {index} of {}",
                        c.slot_count
                    )));
                }
                let index = index as u32;
                hook::hit(Point::AllocAfterTake);
                let s = self.slot_atomics(c, index);
                // A refused claim: the bit was stale (the slot is in use;
                // a repair raced its allocation, or let another allocator
                // have a slot of our cache). The bit is gone now.
                if let Ok(generation) = slotstate::begin_write(&s.state, pid) {
                    if let Some(&mut (w, mask)) = held.as_deref_mut() {
                        if mask != 0 {
                            // The next allocation's slot header: fetch it
                            // now, while the message goes out, not when
                            // the next one does.
                            let next = (w * freebits::WORD_BITS) as u32 + mask.trailing_zeros();
                            if next < c.slot_count {
                                let p = self.slot_atomics(c, next) as *const SlotAtomics;
                                hint::prefetch_write(p.cast());
                                hint::prefetch_write(p.cast::<u8>().wrapping_add(64));
                            }
                        }
                    }
                    break Some((s, index, generation));
                }
            };
            let Some((s, index, generation)) = claimed else {
                hot.failures.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            // The slot is ours: clear the previous reader's name.
            s.owner_pid.store(0, Ordering::Relaxed);
            let header = TensorHeader::raw(nbytes);
            // SAFETY: we claimed the slot's state word, so we own it
            // exclusively; nobody reads its tensor header until we publish.
            unsafe { self.tensor_header_ptr(c, index).write(header) };
            return Ok(Some(SlotMut::new(
                self.keep(leases),
                ci as u8,
                index,
                generation,
                nbytes,
            )));
        }
        Ok(None)
    }

    /// Whether this process may run a repair for a full slab now (and, if
    /// so, notes that it does).
    fn repair_due(&self) -> bool {
        let root = self.root();
        let now = root.created.elapsed().as_millis() as u64;
        let last = root.repaired_ms.load(Ordering::Relaxed);
        let due =
            last == u64::MAX || now.saturating_sub(last) >= REPAIR_INTERVAL.as_millis() as u64;
        due && root
            .repaired_ms
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    }

    /// Marks every free slot in its class's free bitmap: slots that a
    /// process killed between the two steps of an allocation or a free
    /// left free but unmarked become allocatable again. Safe at any time,
    /// concurrently with anything (see `sync/freebits.rs`). Returns how
    /// many bits it set. Costs one load per slot.
    pub fn repair(&self) -> u64 {
        self.inner
            .classes
            .iter()
            .map(|c| {
                let n = freebits::repair(self.bits(c), c.slot_count as usize, |i| {
                    &self.slot_atomics(c, i as u32).state
                });
                if n > 0 {
                    self.hot(c).cursor.store(0, Ordering::Relaxed);
                }
                n as u64
            })
            .sum()
    }

    /// Like [`Slab::alloc`], but waits up to `timeout` for a slot to free up.
    ///
    /// # Errors
    /// [`Error::Timeout`] if none frees in time; otherwise as [`Slab::alloc`].
    pub fn alloc_timeout(&self, nbytes: u64, timeout: Duration) -> Result<SlotMut> {
        self.alloc_wait(nbytes, Some(timeout), None, None, || {})
    }

    /// Like [`Slab::alloc`], waiting while the slab is full: up to
    /// `timeout`, or for ever if `None`. `before_try` runs before every
    /// attempt (a broadcast channel releases read messages there).
    pub(crate) fn alloc_wait(
        &self,
        nbytes: u64,
        timeout: Option<Duration>,
        mut cache: Option<&mut SlotCache>,
        leases: Option<&LeasePool>,
        mut before_try: impl FnMut(),
    ) -> Result<SlotMut> {
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        // Spin, then yield (a slot freed by a consumer on another core is
        // usually back within microseconds), then sleep with growing pauses.
        let backoff = crossbeam_utils::Backoff::new();
        let mut pause = Duration::from_micros(20);
        loop {
            before_try();
            match self.alloc_with(nbytes, cache.as_deref_mut(), leases) {
                Err(Error::SlabFull { .. }) => {}
                other => return other,
            }
            let now = Instant::now();
            let left = deadline.map(|d| d.saturating_duration_since(now));
            if left.is_some_and(|l| l.is_zero()) {
                return Err(Error::Timeout(timeout.unwrap_or_default()));
            }
            if backoff.is_completed() {
                std::thread::sleep(left.map_or(pause, |l| pause.min(l)));
                pause = (pause * 2).min(Duration::from_millis(1));
            } else {
                backoff.snooze();
            }
        }
    }

    /// Allocates a slot for a tensor of `T` with `shape`, its header set, so
    /// that [`SlotMut::tensor_mut`] gives the writable view.
    ///
    /// # Errors
    /// As [`Slab::alloc`].
    pub fn alloc_tensor<T: Element>(&self, shape: &Shape) -> Result<SlotMut> {
        let mut slot = self.alloc(shape.byte_size(T::DTYPE))?;
        slot.init_tensor::<T>(shape)?;
        Ok(slot)
    }

    /// Finds the class and index a handle names.
    pub(crate) fn resolve(&self, h: &Handle) -> Result<(u8, u32)> {
        let ci = self
            .inner
            .classes
            .iter()
            .rposition(|c| h.offset >= c.data_offset)
            .ok_or_else(|| {
                Error::InvalidHandle(format!("offset {} precedes every slot", h.offset))
            })?;
        let c = &self.inner.classes[ci];
        let rel = h.offset - c.data_offset;
        let (index, rest) = match c.size_shift {
            Some(shift) => (rel >> shift, rel & (c.slot_size - 1)),
            None => (rel / c.slot_size, rel % c.slot_size),
        };
        if rest != 0 || index >= c.slot_count as u64 {
            return Err(Error::InvalidHandle(format!(
                "offset {} is not the start of a slot",
                h.offset
            )));
        }
        if h.len as u64 > c.slot_size {
            return Err(Error::InvalidHandle(format!(
                "length {} exceeds the slot size {}",
                h.len, c.slot_size
            )));
        }
        Ok((ci as u8, index as u32))
    }

    /// Takes over the reference a handle carries (the one given up by
    /// [`SlotMut::into_handle`] or [`Slot::into_handle`], typically in
    /// another process). Dropping the returned slot releases it.
    ///
    /// A handle carries one reference, so it can be taken once: a second
    /// `take` is refused. To add a reader instead, use [`Slab::share`].
    ///
    /// # Errors
    /// [`Error::InvalidHandle`] for a handle that names no slot;
    /// [`Error::StaleHandle`] if the slot was freed since.
    pub fn take(&self, h: Handle) -> Result<Slot> {
        self.take_with(h, None)
    }

    /// [`Slab::take`], the view keeping the slab alive with a lease from
    /// `leases` (a pool of this slab) if given.
    pub(crate) fn take_with(&self, h: Handle, leases: Option<&LeasePool>) -> Result<Slot> {
        self.take_inner(h, leases, false)
    }

    /// [`Slab::take_with`] for a handle read from an SPSC ring's cell,
    /// whose slot its producer left in its writer state (see
    /// `slotstate::claim_sent`).
    pub(crate) fn take_sent(&self, h: Handle, leases: Option<&LeasePool>) -> Result<Slot> {
        self.take_inner(h, leases, true)
    }

    fn take_inner(&self, h: Handle, leases: Option<&LeasePool>, sent: bool) -> Result<Slot> {
        let (ci, index) = self.resolve(&h)?;
        let c = self.class(ci);
        let s = self.slot_atomics(c, index);
        // The rest of the tensor header, wanted next by most receivers:
        // fetch it while the claim below waits for the state's line.
        hint::prefetch_read((s as *const SlotAtomics).cast::<u8>().wrapping_add(64));
        // In a class too small for senders to cache many slots at once
        // (see `SlotCache`), allocations take bits from the free bitmap
        // word every message or every few, so the word is mostly in the
        // allocator's core: fetch it for writing now, while the claim
        // waits, so that dropping the view (often right before a reply is
        // sent) does not wait for it. (Where a sender takes 8 bits or more
        // at a time, the word stays with the freeing side anyway.)
        if cache_take(c.slot_count) < 8 {
            if let Some(w) = self.bits(c).get(index as usize / freebits::WORD_BITS) {
                hint::prefetch_write((w as *const AtomicU64).cast());
            }
        }
        if sent {
            slotstate::claim_sent(&s.state, h.generation)
        } else {
            slotstate::claim(&s.state, h.generation, true)
        }
        .map_err(|r| refused(&h, r))?;
        let slot = Slot::new(self.keep(leases), ci, index, h.generation);
        if let Err(e) = slot.check_len(h.len) {
            // Not the handle that was published: give the reference back.
            slotstate::to_pending(&s.state);
            slot.disarm();
            return Err(e);
        }
        s.owner_pid.store(self.inner.pid, Ordering::Relaxed);
        Ok(slot)
    }

    /// A new reference to the slot a handle names (its reference count goes
    /// up by one). The handle keeps whatever reference it carried.
    ///
    /// # Errors
    /// As [`Slab::take`].
    pub fn share(&self, h: &Handle) -> Result<Slot> {
        let (ci, index) = self.resolve(h)?;
        let s = self.slot_atomics(self.class(ci), index);
        slotstate::claim(&s.state, h.generation, false).map_err(|r| refused(h, r))?;
        let slot = Slot::new(self.clone().into(), ci, index, h.generation);
        slot.check_len(h.len)?;
        Ok(slot)
    }

    /// Publishes, for dead producer `pid`, the slot of handle `h` that it
    /// pushed on an SPSC ring in its writer state (see
    /// `slotstate::publish_for`): afterwards [`Slab::reclaim_owner`] leaves
    /// it to the consumer. Returns whether it did.
    pub(crate) fn publish_for(&self, h: &Handle, pid: u32) -> bool {
        let Ok((ci, index)) = self.resolve(h) else {
            return false;
        };
        let s = self.slot_atomics(self.class(ci), index);
        slotstate::publish_for(&s.state, h.generation, pid)
    }

    /// Fetches, for writing, the state word's line of slot `index` of
    /// `class` if there is such a slot (a hint, for a consumer about to
    /// wait for the message that probably comes in it).
    pub(crate) fn prefetch_state(&self, class: u8, index: u32) {
        let Some(c) = self.inner.classes.get(class as usize) else {
            return;
        };
        if index < c.slot_count {
            hint::prefetch_write((self.slot_atomics(c, index) as *const SlotAtomics).cast());
        }
    }

    /// Drops one reference; the last one frees the slot.
    pub(crate) fn release(&self, class: u8, index: u32) {
        let s = self.slot_atomics(self.class(class), index);
        if slotstate::release(&s.state) {
            self.mark_free(class, index);
        }
    }

    /// The mask word of a slot group (see [`GroupBit`]) at `offset` in the
    /// control mapping.
    pub(crate) fn group_word(&self, offset: usize) -> &AtomicU64 {
        // SAFETY: an atomic, valid for any bits and only changed atomically;
        // `at` checks bounds and alignment (the offset comes from a channel
        // area validated when it was attached).
        unsafe { self.inner.mem.control.at(offset) }
    }

    /// Clears `g`'s bit; the last holder of the group releases the slot's
    /// reference.
    pub(crate) fn leave_group(&self, g: GroupBit, class: u8, index: u32) {
        if slotstate::leave_group(self.group_word(g.word), g.bit) {
            self.release(class, index);
        }
    }

    /// An unpublished writer gives its slot up: the slot is freed.
    pub(crate) fn give_up(&self, class: u8, index: u32, generation: u32) {
        let s = self.slot_atomics(self.class(class), index);
        slotstate::give_up(&s.state, generation);
        self.mark_free(class, index);
    }

    /// Marks a slot whose state word was just freed in its class's free
    /// bitmap, so that allocations find it.
    fn mark_free(&self, class: u8, index: u32) {
        hook::hit(Point::FreeBeforeBit);
        let c = self.class(class);
        freebits::put(self.bits(c), index as usize);
        let word = (index as usize / freebits::WORD_BITS) as u64;
        let hot = self.hot(c);
        if word < hot.cursor.load(Ordering::Relaxed) {
            hot.cursor.store(word, Ordering::Relaxed);
        }
    }

    /// Frees slot `index` of `class` if its state is still exactly `seen`
    /// and `seen` is a state one dead process can be the only holder of
    /// (see [`slotstate::seize`]). Returns whether it did.
    fn seize(&self, class: u8, index: u32, seen: u64) -> bool {
        let s = self.slot_atomics(self.class(class), index);
        if slotstate::seize(&s.state, seen) {
            self.mark_free(class, index);
            true
        } else {
            false
        }
    }

    /// Frees the slots a dead process held alone: loans it never sent (its
    /// pid is in the state word as the writer) and views it took and did not
    /// drop (one reader, no handle pending, `owner_pid` is its pid). Slots
    /// it had sent (a pending handle on a ring) are left for their receiver;
    /// on an SPSC ring they are still in its writer state, so the channel
    /// publishes them for it first (`Shared::publish_queued`).
    /// Returns how many were freed.
    ///
    /// The caller must know that `pid` is dead (not merely quiet).
    pub(crate) fn reclaim_owner(&self, pid: u32) -> u64 {
        let mut freed = 0;
        for (ci, c) in self.inner.classes.iter().enumerate() {
            for i in 0..c.slot_count {
                let s = self.slot_atomics(c, i);
                let seen = s.state.load(Ordering::Acquire);
                let mine = match slotstate::writer_pid(seen) {
                    Some(w) => w == pid,
                    None => {
                        slotstate::holders(seen) == 1 && s.owner_pid.load(Ordering::Relaxed) == pid
                    }
                };
                if mine && self.seize(ci as u8, i, seen) {
                    freed += 1;
                }
            }
        }
        freed
    }

    /// Frees the slot of handle `h` on behalf of dead process `pid`, which
    /// was moving it when it died, if the slot still holds `h`'s generation
    /// and its holders are what `how` says a dead mover leaves. Returns
    /// whether it did.
    ///
    /// The caller must know that nobody else holds or can take the
    /// references it frees (the handle is on no ring and in no live hands).
    pub(crate) fn reclaim_handle(&self, h: &Handle, pid: u32, how: Holder) -> bool {
        let Ok((ci, index)) = self.resolve(h) else {
            return false;
        };
        let s = self.slot_atomics(self.class(ci), index);
        let seen = s.state.load(Ordering::Acquire);
        let holders = slotstate::holders(seen);
        let writer = slotstate::writer_pid(seen) == Some(pid);
        let his = slotstate::generation(seen) == h.generation
            && match how {
                Holder::Sender => writer || holders == slotstate::PENDING,
                Holder::Taker => holders == slotstate::PENDING || holders == 1,
                Holder::Reader => holders == 1,
                Holder::Group => writer || holders == 1,
            };
        his && self.seize(ci, index, seen)
    }

    /// `(generation, holders)` of the slot `h` names, if it names one.
    pub(crate) fn handle_state(&self, h: &Handle) -> Option<(u32, u32)> {
        let (ci, index) = self.resolve(h).ok()?;
        let st = self
            .slot_atomics(self.class(ci), index)
            .state
            .load(Ordering::Acquire);
        Some((slotstate::generation(st), slotstate::holders(st)))
    }

    /// Slots over all classes.
    pub(crate) fn total_slots(&self) -> usize {
        self.inner
            .classes
            .iter()
            .map(|c| c.slot_count as usize)
            .sum()
    }

    /// The number of slot `index` of `class` when the slots of all classes
    /// are counted in order, class 0 first.
    pub(crate) fn slot_number(&self, class: u8, index: u32) -> usize {
        let before: usize = self.inner.classes[..class as usize]
            .iter()
            .map(|c| c.slot_count as usize)
            .sum();
        before + index as usize
    }

    /// `(class, index)` of slot number `n` (see [`Slab::slot_number`]).
    pub(crate) fn slot_at(&self, mut n: usize) -> (u8, u32) {
        for (ci, c) in self.inner.classes.iter().enumerate() {
            if n < c.slot_count as usize {
                return (ci as u8, n as u32);
            }
            n -= c.slot_count as usize;
        }
        panic!("psyne bug: slot number out of range");
    }

    /// Usage of every size class, smallest first.
    ///
    /// Computed by reading every slot's state word (no counter sits on the
    /// allocation path), so it costs one load per slot; exact when no
    /// allocation or free is in flight.
    pub fn stats(&self) -> Vec<ClassStats> {
        self.inner
            .classes
            .iter()
            .map(|c| {
                let (mut used, mut frees) = (0u32, 0u64);
                for i in 0..c.slot_count {
                    let st = self.slot_atomics(c, i).state.load(Ordering::Relaxed);
                    used += (slotstate::holders(st) != 0) as u32;
                    frees += slotstate::generation(st) as u64;
                }
                ClassStats {
                    slot_size: c.slot_size,
                    slots: c.slot_count,
                    used,
                    allocs: frees + used as u64,
                    failures: self.hot(c).failures.load(Ordering::Relaxed),
                }
            })
            .collect()
    }

    /// Slots allocated now, over all classes.
    pub fn used_slots(&self) -> u64 {
        self.stats().iter().map(|s| s.used as u64).sum()
    }
}

fn read_pod<T: Pod>(mem: &Memory, offset: usize) -> T {
    // SAFETY: slab metadata and class descriptors are written once, before the
    // segment is published, and never again; reading them races with nothing.
    let bytes = unsafe { mem.control.bytes(offset, std::mem::size_of::<T>()) };
    bytemuck::pod_read_unaligned(bytes)
}

fn config_crc(meta: &SlabMeta, descs: &[ClassDesc]) -> u32 {
    let mut m = *meta;
    m.config_crc = 0;
    let mut crc = crc32c::crc32c(bytemuck::bytes_of(&m));
    for d in descs {
        crc = crc32c::crc32c_append(crc, bytemuck::bytes_of(d));
    }
    crc
}

fn refused(h: &Handle, r: slotstate::Refused) -> Error {
    match r {
        slotstate::Refused::Stale { now } => Error::StaleHandle {
            handle: h.generation,
            slot: now,
        },
        slotstate::Refused::Writing => {
            Error::InvalidHandle(format!("slot {h} is still being written (not published)"))
        }
        slotstate::Refused::NotPending => Error::InvalidHandle(format!(
            "the reference carried by handle {h} was already taken"
        )),
        slotstate::Refused::Overflow => {
            Error::InvalidHandle(format!("too many references to slot {h}"))
        }
    }
}
