//! Binding slots as storage-buffer ranges: imported pages (zero-copy) or a
//! staged copy, and device-local tensors.

use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::{Arc, Weak};

use super::context::GpuContext;
use super::import::IMPORT_USAGE;
use crate::error::{Error, Result};
use crate::shm::region::Memory;
use crate::shm::slab::SlabInner;
use crate::shm::slot::RawRange;
use crate::shm::{Slot, SlotMut, TensorMeta};
use crate::tensor::{DType, Element, QuantParams, Shape};

/// How a bound tensor reaches the GPU.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Route {
    /// The slot's own pages, imported into the device: no copy.
    ZeroCopy,
    /// A copy in a device buffer (`queue.write_buffer`), copied back into the
    /// slot after the job for outputs.
    Staged,
    /// Device-local memory owned by the binding ([`GpuContext::to_device`],
    /// [`GpuContext::scratch`]).
    Device,
}

/// A tensor bound for GPU kernels: a range of a wgpu storage buffer plus
/// the tensor's dtype and shape. It borrows its slot (`'a`), so the slot
/// cannot be released or sent while the binding lives.
pub struct GpuTensor<'a> {
    pub(crate) route: Route,
    pub(crate) buffer: wgpu::Buffer,
    pub(crate) offset: u64,
    /// Bound bytes: the payload rounded up to a multiple of 4.
    pub(crate) size: u64,
    /// Payload bytes.
    pub(crate) len: u64,
    pub(crate) meta: TensorMeta,
    pub(crate) writable: bool,
    /// Staged outputs: where in the slot the result goes after the job.
    pub(crate) writeback: Option<WriteBack>,
    _slot: PhantomData<&'a mut ()>,
}

/// The payload of a mutably borrowed slot, for copying a staged result back.
#[derive(Copy, Clone)]
pub(crate) struct WriteBack {
    pub(crate) ptr: *mut u8,
    pub(crate) len: usize,
}

impl std::fmt::Debug for GpuTensor<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpuTensor")
            .field("route", &self.route)
            .field("offset", &self.offset)
            .field("size", &self.size)
            .field("dtype", &self.meta.dtype)
            .field("shape", &self.meta.shape)
            .field("writable", &self.writable)
            .finish()
    }
}

impl GpuTensor<'_> {
    /// Which route the binding took.
    pub fn route(&self) -> Route {
        self.route
    }

    /// The element type.
    pub fn dtype(&self) -> DType {
        self.meta.dtype
    }

    /// The shape.
    pub fn shape(&self) -> &Shape {
        &self.meta.shape
    }

    /// Quantization parameters from the slot's header.
    pub fn quant(&self) -> QuantParams {
        self.meta.quant
    }

    /// Whether kernels may write it.
    pub fn writable(&self) -> bool {
        self.writable
    }

    /// Offset of the tensor in its buffer (a multiple of the device's
    /// storage offset alignment).
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Bytes bound: the payload rounded up to a multiple of 4.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Length of the whole buffer the tensor lies in (for [`Route::ZeroCopy`],
    /// an imported chunk holding other slots too).
    pub fn buffer_size(&self) -> u64 {
        self.buffer.size()
    }

    /// The buffer, offset and size, for a bind group of your own. Prefer
    /// [`Job::dispatch`](super::Job::dispatch), which keeps the tensors
    /// borrowed until the GPU is done.
    ///
    /// # Safety
    /// On [`Route::ZeroCopy`] the buffer is an import of a whole chunk of
    /// the slab, other processes' slots included. The caller must touch only
    /// `[offset, offset + size)` of it, write it only if
    /// [`GpuTensor::writable`], never destroy or map the buffer, and wait
    /// for every submission using it to complete before this tensor drops
    /// (after which the slot may be reused or sent).
    pub unsafe fn binding(&self) -> wgpu::BufferBinding<'_> {
        wgpu::BufferBinding {
            buffer: &self.buffer,
            offset: self.offset,
            size: wgpu::BufferSize::new(self.size),
        }
    }
}

/// The chunks of one segment's data mapping imported into one context.
struct SegImports {
    mem: Arc<Memory>,
    /// Held by every segment handle, slab and slot of the mapping.
    owner: Weak<SlabInner>,
    /// `Err`: the import failed (why); those slots are staged.
    chunks: HashMap<(u8, u32), std::result::Result<Chunk, String>>,
}

struct Chunk {
    buffer: wgpu::Buffer,
    start: u64,
}

/// Imports per segment, each made once and reused by every later binding.
#[derive(Default)]
pub(crate) struct ImportCache {
    segs: Vec<SegImports>,
    /// Why the last failed import failed.
    last_error: Option<String>,
}

impl ImportCache {
    /// Forgets the imports of mappings no segment, slab or slot uses any
    /// more: nothing can be bound from them again. The driver then destroys
    /// the imports, and their drop callbacks let the pages be unmapped.
    fn prune(&mut self) {
        self.segs.retain(|s| s.owner.strong_count() > 0);
    }
}

fn round4(n: u64) -> u64 {
    n.next_multiple_of(4)
}

impl GpuContext {
    /// Binds a received (read-only) slot for kernels to read: zero-copy where
    /// the pages can be imported, staged otherwise.
    ///
    /// # Errors
    /// [`Error::Gpu`] for an empty payload or one larger than the device's
    /// largest binding ([`GpuInfo::max_binding`](super::GpuInfo)); the
    /// header's errors if it is damaged.
    pub fn bind<'a>(&self, slot: &'a Slot) -> Result<GpuTensor<'a>> {
        let meta = slot.meta()?;
        self.bind_range(slot.raw_range(), meta, false, None)
    }

    /// Binds a loaned slot (or a `Loan`, which derefs to one) for kernels to
    /// write. The slot's header must already say what it holds (as
    /// `Sender::loan::<T>(shape)` does). After [`Job::run`](super::Job::run)
    /// returned, drop the binding and send the loan: the result is in the
    /// slot, on either route.
    ///
    /// # Errors
    /// As [`GpuContext::bind`]; [`Error::ReadOnly`] on a read-only mapping.
    pub fn bind_mut<'a>(&self, slot: &'a mut SlotMut) -> Result<GpuTensor<'a>> {
        let meta = slot.meta()?;
        let range = slot.raw_range();
        if !range.mem.data.writable() {
            return Err(Error::ReadOnly);
        }
        let wb = WriteBack {
            ptr: range.mem.data.ptr::<u8>(range.offset as usize),
            len: range.len as usize,
        };
        self.bind_range(range, meta, true, Some(wb))
    }

    /// Copies a slot's tensor into device-local memory once, for data that
    /// kernels read many times (weights). The result does not borrow the slot.
    ///
    /// # Errors
    /// As [`GpuContext::bind`].
    pub fn to_device(&self, slot: &Slot) -> Result<GpuTensor<'static>> {
        let meta = slot.meta()?;
        let range = slot.raw_range();
        self.check_size(range.len)?;
        let size = round4(range.len);
        let buffer = self.upload(&range, size, wgpu::BufferUsages::empty())?;
        Ok(GpuTensor {
            route: Route::Device,
            buffer,
            offset: 0,
            size,
            len: range.len,
            meta,
            writable: true,
            writeback: None,
            _slot: PhantomData,
        })
    }

    /// A device-local tensor of `T` with `shape`, for intermediate results.
    /// Its contents start as zeros; read it with [`GpuContext::read`].
    ///
    /// # Errors
    /// As [`GpuContext::bind`].
    pub fn scratch<T: Element>(&self, shape: &Shape) -> Result<GpuTensor<'static>> {
        shape.validate()?;
        let len = shape.byte_size(T::DTYPE);
        self.check_size(len)?;
        let size = round4(len);
        let buffer = self.checked("allocating a device tensor", || {
            Ok(self.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("psyne scratch"),
                size,
                usage: IMPORT_USAGE,
                mapped_at_creation: false,
            }))
        })?;
        Ok(GpuTensor {
            route: Route::Device,
            buffer,
            offset: 0,
            size,
            len,
            meta: TensorMeta {
                dtype: T::DTYPE,
                shape: *shape,
                quant: QuantParams::None,
                type_tag: 0,
                seq: 0,
                timestamp_ns: 0,
                nbytes: len,
            },
            writable: true,
            writeback: None,
            _slot: PhantomData,
        })
    }

    /// Copies a bound tensor's bytes out of the GPU (for device-local
    /// tensors, or to check a binding). Waits for all submitted work.
    ///
    /// # Errors
    /// [`Error::Gpu`] if the copy or the mapping fails.
    pub fn read(&self, t: &GpuTensor<'_>) -> Result<Vec<u8>> {
        let staging = self.checked("reading a tensor back", || {
            let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("psyne readback"),
                size: t.size,
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            });
            let mut enc = self
                .device
                .create_command_encoder(&wgpu::CommandEncoderDescriptor::default());
            enc.copy_buffer_to_buffer(&t.buffer, t.offset, &staging, 0, t.size);
            self.queue.submit([enc.finish()]);
            Ok(staging)
        })?;
        let bytes = self.map_read(&[&staging])?.remove(0);
        Ok(bytes[..t.len as usize].to_vec())
    }

    /// Maps each buffer for reading (after the work writing it was
    /// submitted) and returns its bytes.
    pub(crate) fn map_read(&self, bufs: &[&wgpu::Buffer]) -> Result<Vec<Vec<u8>>> {
        let results: Vec<_> = bufs
            .iter()
            .map(|b| {
                let (tx, rx) = std::sync::mpsc::channel();
                b.map_async(wgpu::MapMode::Read, .., move |r| {
                    let _ = tx.send(r);
                });
                rx
            })
            .collect();
        self.wait_idle()?;
        let mut out = Vec::with_capacity(bufs.len());
        for (b, rx) in bufs.iter().zip(results) {
            rx.recv()
                .map_err(|_| Error::Gpu("a buffer mapping was never answered".into()))?
                .map_err(|e| Error::Gpu(format!("mapping a result for reading failed: {e}")))?;
            let view = b
                .get_mapped_range(..)
                .map_err(|e| Error::Gpu(format!("reading a mapped result failed: {e}")))?;
            out.push(view.to_vec());
            drop(view);
            b.unmap();
        }
        Ok(out)
    }

    fn check_size(&self, len: u64) -> Result<()> {
        if len == 0 {
            return Err(Error::Gpu("cannot bind an empty tensor".into()));
        }
        if round4(len) > self.info.max_binding {
            return Err(Error::Gpu(format!(
                "a {len}-byte tensor exceeds the device's largest storage binding \
                 ({} bytes)",
                self.info.max_binding
            )));
        }
        Ok(())
    }

    /// A new device buffer holding `size` bytes of the slot (the payload and
    /// its padding, which lies inside the slot).
    fn upload(
        &self,
        range: &RawRange,
        size: u64,
        extra: wgpu::BufferUsages,
    ) -> Result<wgpu::Buffer> {
        debug_assert!(size <= range.capacity);
        // SAFETY: the range lies inside the slot (size <= capacity), which
        // the caller borrows: either shared and published (nobody writes it)
        // or exclusively through &mut SlotMut, which is borrowed for this call.
        let bytes = unsafe { range.mem.data.bytes(range.offset as usize, size as usize) };
        self.checked("staging a tensor", || {
            let buffer = self.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("psyne staged tensor"),
                size,
                usage: IMPORT_USAGE | extra,
                mapped_at_creation: false,
            });
            self.queue.write_buffer(&buffer, 0, bytes);
            Ok(buffer)
        })
    }

    fn bind_range<'a>(
        &self,
        range: RawRange,
        meta: TensorMeta,
        writable: bool,
        writeback: Option<WriteBack>,
    ) -> Result<GpuTensor<'a>> {
        self.check_size(range.len)?;
        let size = round4(range.len);
        if let Some((buffer, offset)) = self.imported(&range) {
            return Ok(GpuTensor {
                route: Route::ZeroCopy,
                buffer,
                offset,
                size,
                len: range.len,
                meta,
                writable,
                writeback: None,
                _slot: PhantomData,
            });
        }
        let buffer = self.upload(&range, size, wgpu::BufferUsages::empty())?;
        Ok(GpuTensor {
            route: Route::Staged,
            buffer,
            offset: 0,
            size,
            len: range.len,
            meta,
            writable,
            writeback,
            _slot: PhantomData,
        })
    }

    /// The imported buffer holding `range` and the payload's offset in it,
    /// importing its chunk on first use; `None` when the pages cannot be
    /// imported (the caller stages instead).
    fn imported(&self, range: &RawRange) -> Option<(wgpu::Buffer, u64)> {
        let imp = self.importer.as_ref()?;
        let a = imp.alignment;
        let map_len = range.mem.data.len() as u64;
        // A chunk is at most one binding long (so a whole chunk could be
        // bound too) and one buffer; a slab larger than that is imported as
        // several chunks, each a run of whole slots, so no tensor straddles two.
        let limit = self.max_buffer.min(self.info.max_binding).min(1 << 30) / a * a;
        let slot = range.capacity;
        let per_chunk = (limit.saturating_sub(2 * a) / slot).max(1);
        let chunk = range.index as u64 / per_chunk;
        let first = chunk * per_chunk;
        let last = (first + per_chunk).min(range.slot_count as u64);
        let start = (range.class_offset + first * slot) / a * a;
        let end = (range.class_offset + last * slot).next_multiple_of(a);
        let mut cache = self.imports.lock().unwrap_or_else(|p| p.into_inner());
        // Staged for a reason that `import_error` then tells.
        let mut staged = |why: String| {
            cache.last_error = Some(why);
            None
        };
        if end > map_len || end - start > self.max_buffer {
            return staged(format!(
                "a chunk of {} bytes at {start} does not fit the {map_len}-byte mapping \
                 or the device's largest buffer ({} bytes)",
                end - start,
                self.max_buffer
            ));
        }
        let key = (range.class, chunk as u32);
        let addr = (range.mem.data.base() as u64).wrapping_add(start);
        if addr % a != 0 {
            // A heap mapping aligned to less than the import needs.
            return staged(format!(
                "the slab's pages at {addr:#x} are not aligned to the import's {a} bytes"
            ));
        }
        cache.prune();
        let pos = match cache
            .segs
            .iter()
            .position(|s| Arc::ptr_eq(&s.mem, &range.mem))
        {
            Some(p) => p,
            None => {
                cache.segs.push(SegImports {
                    mem: range.mem.clone(),
                    owner: range.owner.clone(),
                    chunks: HashMap::new(),
                });
                cache.segs.len() - 1
            }
        };
        let ImportCache { segs, last_error } = &mut *cache;
        // A failed import is remembered and not retried: those pages are
        // staged from then on (`GpuContext::import_error` says why).
        let c = segs[pos].chunks.entry(key).or_insert_with(|| {
            self.checked("importing slab pages", || {
                imp.import(&self.device, &range.mem, start, end - start)
            })
            .map(|buffer| Chunk { buffer, start })
            .map_err(|e| {
                let why = e.to_string();
                *last_error = Some(why.clone());
                why
            })
        });
        let c = c.as_ref().ok()?;
        let offset = range.offset - c.start;
        if offset % self.info.offset_alignment != 0 {
            *last_error = Some(format!(
                "a tensor at {offset} in its imported chunk is not aligned to the device's \
                 {}-byte binding offset alignment",
                self.info.offset_alignment
            ));
            return None;
        }
        Some((c.buffer.clone(), offset))
    }

    /// How many chunks of slab pages are imported now (one import serves
    /// every slot of its chunk).
    pub fn imported_chunks(&self) -> usize {
        let mut cache = self.imports.lock().unwrap_or_else(|p| p.into_inner());
        cache.prune();
        cache
            .segs
            .iter()
            .map(|s| s.chunks.values().filter(|c| c.is_ok()).count())
            .sum()
    }

    /// Why the last binding that could not take the zero-copy route was
    /// staged, if one was: a page import the driver refused (its chunk's
    /// slots are staged from then on), or a tensor whose placement the
    /// import or the device's alignment rules exclude. (A context opened
    /// without zero-copy says why in [`super::GpuInfo::zero_copy_reason`].)
    pub fn import_error(&self) -> Option<String> {
        let cache = self.imports.lock().unwrap_or_else(|p| p.into_inner());
        cache.last_error.clone()
    }
}
