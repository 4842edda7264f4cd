//! The unsafe core of the shared-memory layer: a mapped byte region and typed
//! access to it at checked offsets.
//!
//! A [`Mapping`] is either a `MAP_SHARED` mapping of a POSIX shared-memory
//! object (through memmap2) or a zeroed, page-aligned private block (for
//! in-process channels): an anonymous mapping, whose pages the kernel
//! zeroes as they are first touched, or under Miri (which cannot map) a
//! heap allocation. Everything
//! above this module reaches shared bytes only through [`Mapping::at`],
//! [`Mapping::bytes`] and [`Mapping::bytes_mut`], which check bounds and
//! alignment.

#[cfg(miri)]
use std::alloc::{self, Layout};
use std::fs::File;
use std::ptr::NonNull;

use crate::error::{Error, Result};

/// Alignment of heap-backed regions (one page, like a real mapping).
#[cfg(any(miri, test))]
pub(crate) const HEAP_ALIGN: usize = 4096;

enum Backing {
    Mmap(#[allow(dead_code)] memmap2::MmapRaw),
    #[cfg(not(miri))]
    Anon(#[allow(dead_code)] memmap2::MmapMut),
    #[cfg(miri)]
    Heap(Layout),
}

/// A region of memory shared with other threads or processes.
pub(crate) struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
    writable: bool,
    /// What owns the memory (a mapping unmaps when dropped).
    #[cfg_attr(not(miri), allow(dead_code))]
    backing: Backing,
}

// SAFETY: a Mapping is a pointer to memory that stays valid until the Mapping
// drops. All access to it goes through atomics or through the slot ownership
// protocol of the slab (one writer or many readers per slot), so sharing the
// Mapping itself between threads adds no data race.
unsafe impl Send for Mapping {}
// SAFETY: see `Send` above.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Maps `len` bytes of `file` at `offset`, shared, read-write or read-only.
    pub(crate) fn map_file(file: &File, offset: u64, len: usize, writable: bool) -> Result<Self> {
        let mut opts = memmap2::MmapOptions::new();
        opts.offset(offset).len(len);
        let raw = if writable {
            opts.map_raw(file)
        } else {
            opts.map_raw_read_only(file)
        }
        .map_err(|e| Error::io("mmap of the shared-memory segment failed", e))?;
        let ptr = NonNull::new(raw.as_mut_ptr()).expect("mmap never returns null");
        Ok(Mapping {
            ptr,
            len,
            writable,
            backing: Backing::Mmap(raw),
        })
    }

    /// A zeroed private block of `len` bytes, page-aligned: an anonymous
    /// mapping (no page is touched until used, so a large in-process slab
    /// costs nothing to create or drop beyond the pages it used).
    #[cfg(not(miri))]
    pub(crate) fn heap(len: usize) -> Result<Self> {
        let mut map = memmap2::MmapOptions::new()
            .len(len.max(1))
            .map_anon()
            .map_err(|e| Error::io(format!("mapping {len} bytes of anonymous memory"), e))?;
        let ptr = NonNull::new(map.as_mut_ptr()).expect("mmap never returns null");
        Ok(Mapping {
            ptr,
            len,
            writable: true,
            backing: Backing::Anon(map),
        })
    }

    /// A zeroed heap block of `len` bytes, page-aligned (Miri cannot map).
    #[cfg(miri)]
    pub(crate) fn heap(len: usize) -> Result<Self> {
        let layout = Layout::from_size_align(len.max(1), HEAP_ALIGN)
            .map_err(|_| Error::InvalidConfig(format!("{len} bytes is too large to allocate")))?;
        // SAFETY: the layout has a non-zero size.
        let ptr = unsafe { alloc::alloc_zeroed(layout) };
        let ptr = NonNull::new(ptr).ok_or_else(|| {
            Error::io(
                format!("allocating {len} bytes"),
                std::io::Error::from(std::io::ErrorKind::OutOfMemory),
            )
        })?;
        Ok(Mapping {
            ptr,
            len,
            writable: true,
            backing: Backing::Heap(layout),
        })
    }

    /// Length in bytes.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Whether writes are allowed.
    pub(crate) fn writable(&self) -> bool {
        self.writable
    }

    /// The first byte.
    pub(crate) fn base(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    fn check<T>(&self, offset: usize, len: usize) {
        let end = offset.checked_add(len);
        assert!(
            end.is_some_and(|e| e <= self.len),
            "psyne bug: access [{offset}, +{len}) outside a {}-byte region",
            self.len
        );
        assert!(
            (self.base() as usize + offset) % std::mem::align_of::<T>() == 0,
            "psyne bug: misaligned access at offset {offset}"
        );
    }

    /// A shared reference to a `T` at `offset`.
    ///
    /// Panics if the range is outside the region or misaligned: offsets are
    /// validated when a segment is opened, so that is a psyne bug.
    ///
    /// # Safety
    /// Every bit pattern must be a valid `T`, and nobody may write the bytes
    /// non-atomically while the reference lives: use it for atomics (which
    /// are valid for any bits and only change through atomic operations) or
    /// for data the caller's protocol keeps immutable for the lifetime.
    pub(crate) unsafe fn at<T>(&self, offset: usize) -> &T {
        self.check::<T>(offset, std::mem::size_of::<T>());
        // SAFETY: in bounds and aligned (checked above); validity and absence
        // of concurrent plain writes are the caller's contract.
        unsafe { &*(self.base().add(offset) as *const T) }
    }

    /// `n` values of `T` starting at `offset`.
    ///
    /// Panics if the range is outside the region or misaligned.
    ///
    /// # Safety
    /// As [`Mapping::at`], for every element.
    pub(crate) unsafe fn slice_at<T>(&self, offset: usize, n: usize) -> &[T] {
        let bytes = n
            .checked_mul(std::mem::size_of::<T>())
            .expect("psyne bug: slice length overflows");
        self.check::<T>(offset, bytes);
        // SAFETY: in bounds and aligned (checked above); validity and absence
        // of concurrent plain writes are the caller's contract.
        unsafe { std::slice::from_raw_parts(self.base().add(offset) as *const T, n) }
    }

    /// A raw pointer to a `T` at `offset`, bounds- and alignment-checked.
    pub(crate) fn ptr<T>(&self, offset: usize) -> *mut T {
        self.check::<T>(offset, std::mem::size_of::<T>());
        // In bounds (checked), so the pointer stays inside the region.
        self.base().wrapping_add(offset) as *mut T
    }

    /// `len` bytes at `offset`.
    ///
    /// # Safety
    /// Nobody may write these bytes while the slice lives.
    pub(crate) unsafe fn bytes(&self, offset: usize, len: usize) -> &[u8] {
        self.check::<u8>(offset, len);
        // SAFETY: in bounds (checked); no concurrent writes (caller).
        unsafe { std::slice::from_raw_parts(self.base().add(offset), len) }
    }

    /// `len` writable bytes at `offset`.
    ///
    /// # Safety
    /// The caller must have exclusive access to these bytes for the
    /// lifetime of the slice (for a slot: it holds the only reference), and
    /// the mapping must be writable.
    #[allow(clippy::mut_from_ref)]
    pub(crate) unsafe fn bytes_mut(&self, offset: usize, len: usize) -> &mut [u8] {
        assert!(
            self.writable,
            "psyne bug: write through a read-only mapping"
        );
        self.check::<u8>(offset, len);
        // SAFETY: in bounds (checked), writable (checked); exclusivity is the
        // caller's contract.
        unsafe { std::slice::from_raw_parts_mut(self.base().add(offset), len) }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        #[cfg(miri)]
        if let Backing::Heap(layout) = self.backing {
            // SAFETY: allocated in `heap` with exactly this layout and not
            // freed before.
            unsafe { alloc::dealloc(self.ptr.as_ptr(), layout) };
        }
        // A mapped backing unmaps in its own Drop.
    }
}

/// The two parts of a segment: control state (header, allocator metadata,
/// slot headers, rings, counters) and tensor bytes (the data area).
///
/// They are separate mappings so that a receiver can map the data area
/// read-only and a GPU can import the data area alone.
pub(crate) struct Memory {
    pub(crate) control: Mapping,
    pub(crate) data: Mapping,
    /// For a read-only data mapping of a file: the file (opened read-write,
    /// as the control region needs) and where the data region starts in it,
    /// so that a writable alias of some data pages can be made for a device
    /// import (some drivers pin only writable pages). `None` otherwise.
    pub(crate) alias_source: Option<(File, u64)>,
}

impl Memory {
    /// A second, writable mapping of the data region's bytes from `offset`
    /// for `len` (the same pages), for a read-only data mapping of a file:
    /// `None` when the data mapping is writable or not backed by a file.
    /// The mapping starts at the page holding `offset`; the second value is
    /// where `offset` lies in it. The CPU keeps using the read-only
    /// mapping; the alias's address is handed only to a device import,
    /// whose bindings of received slots are read-only.
    #[cfg_attr(not(feature = "gpu"), allow(dead_code))]
    pub(crate) fn writable_alias(
        &self,
        offset: usize,
        len: usize,
    ) -> Option<Result<(Mapping, usize)>> {
        if self.data.writable() {
            return None;
        }
        let (file, data_offset) = self.alias_source.as_ref()?;
        let end = offset.checked_add(len).filter(|&e| e <= self.data.len());
        if end.is_none() {
            return Some(Err(Error::InvalidConfig(format!(
                "an alias of {len} bytes at {offset} exceeds the {}-byte data region",
                self.data.len()
            ))));
        }
        let page = crate::shm::slab::PAGE_SIZE as usize;
        let lead = offset % page;
        let start = (*data_offset as usize + offset - lead) as u64;
        Some(Mapping::map_file(file, start, lead + len, true).map(|m| (m, lead)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    #[test]
    fn heap_region_is_zeroed_and_aligned() {
        let m = Mapping::heap(8192).unwrap();
        assert_eq!(m.base() as usize % HEAP_ALIGN, 0);
        // SAFETY: no other reference to the region exists.
        assert!(unsafe { m.bytes(0, 8192) }.iter().all(|&b| b == 0));
        // SAFETY: AtomicU64 is valid for any bits and only changes atomically.
        let a: &AtomicU64 = unsafe { m.at(64) };
        a.store(7, Ordering::Relaxed);
        // SAFETY: no writer while the slice lives.
        assert_eq!(unsafe { m.bytes(64, 1) }[0], 7);
    }

    #[test]
    #[should_panic(expected = "outside")]
    fn out_of_bounds_panics_instead_of_ub() {
        let m = Mapping::heap(128).unwrap();
        // SAFETY: the call panics before creating any reference.
        let _: &AtomicU64 = unsafe { m.at(124) };
    }
}
