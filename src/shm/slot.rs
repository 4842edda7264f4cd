//! Slots: the handle another process turns back into a view, the tensor
//! header stored beside each slot, and the owning views [`SlotMut`] (one
//! writer) and [`Slot`] (a counted reader).

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::AtomicU64;

use bytemuck::{Pod, Zeroable};

use super::lease::Keep;
use super::slab::Slab;
use crate::error::{Error, Result};
use crate::sync::slotstate;
use crate::tensor::quant::{self, QTensor, QuantKind, QuantParams};
use crate::tensor::{DType, Element, Shape, Tensor, TensorMut};

/// A 16-byte reference to a slot that can cross a process boundary.
///
/// `offset` is the slot payload's offset in the data area, `generation` the
/// slot's generation when the handle was made (a freed slot moves on, which
/// makes old handles stale), `len` the payload length in bytes.
///
/// Its text form (`Display` / `FromStr`) is `offset:generation:len` in
/// decimal, for passing a handle on a command line or a pipe.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Pod, Zeroable)]
#[repr(C)]
pub struct Handle {
    /// Offset of the payload in the data area, in bytes.
    pub offset: u64,
    /// Generation of the slot when the handle was made.
    pub generation: u32,
    /// Payload length in bytes.
    pub len: u32,
}

impl fmt::Display for Handle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.offset, self.generation, self.len)
    }
}

impl FromStr for Handle {
    type Err = Error;
    fn from_str(s: &str) -> Result<Handle> {
        let bad = || Error::InvalidHandle(format!("{s:?} is not offset:generation:len"));
        let mut parts = s.trim().split(':');
        let h = Handle {
            offset: parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?,
            generation: parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?,
            len: parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?,
        };
        if parts.next().is_some() {
            return Err(bad());
        }
        Ok(h)
    }
}

/// Quantization mode codes in a tensor header.
const QUANT_NONE: u8 = 0;
const QUANT_PER_TENSOR: u8 = 1;
const QUANT_PER_CHANNEL: u8 = 2;

/// The tensor header stored in each slot header (112 bytes, see
/// `docs/layout.md`). Written by the slot's one writer, read by readers.
#[derive(Copy, Clone, Pod, Zeroable)]
#[repr(C)]
pub(crate) struct TensorHeader {
    nbytes: u64,
    dtype: u8,
    quant_mode: u8,
    flags: u8,
    _reserved: u8,
    type_tag: u32,
    shape: Shape,
    seq: u64,
    timestamp_ns: u64,
    q_scale: f32,
    /// Zero point (per-tensor) or channel axis (per-channel).
    q_param: i32,
}

const _: () = assert!(std::mem::size_of::<TensorHeader>() == 112);

impl TensorHeader {
    /// The header of a fresh slot holding `nbytes` untyped bytes.
    pub(crate) fn raw(nbytes: u64) -> Self {
        TensorHeader {
            nbytes,
            shape: Shape::vector(nbytes as usize),
            ..Zeroable::zeroed()
        }
    }

    fn decode(&self, capacity: u64) -> Result<TensorMeta> {
        let dtype = DType::from_code(self.dtype)?;
        self.shape.validate()?;
        if self.nbytes > capacity {
            return Err(Error::Corrupt(format!(
                "tensor header claims {} bytes in a {capacity}-byte slot",
                self.nbytes
            )));
        }
        let quant = match self.quant_mode {
            QUANT_NONE => QuantParams::None,
            QUANT_PER_TENSOR => QuantParams::PerTensor {
                scale: self.q_scale,
                zero_point: self.q_param,
            },
            QUANT_PER_CHANNEL => QuantParams::PerChannel {
                axis: self.q_param as u32,
            },
            m => return Err(Error::Corrupt(format!("unknown quantization mode {m}"))),
        };
        Ok(TensorMeta {
            dtype,
            shape: self.shape,
            quant,
            type_tag: self.type_tag,
            seq: self.seq,
            timestamp_ns: self.timestamp_ns,
            nbytes: self.nbytes,
        })
    }

    fn set_quant(&mut self, q: QuantParams) {
        (self.quant_mode, self.q_scale, self.q_param) = match q {
            QuantParams::None => (QUANT_NONE, 0.0, 0),
            QuantParams::PerTensor { scale, zero_point } => (QUANT_PER_TENSOR, scale, zero_point),
            QuantParams::PerChannel { axis } => (QUANT_PER_CHANNEL, 0.0, axis as i32),
        };
    }
}

/// What a slot's tensor header says, decoded and checked.
#[derive(Copy, Clone, Debug, PartialEq)]
pub struct TensorMeta {
    /// Element type (`Raw` for untyped bytes).
    pub dtype: DType,
    /// Shape (for `Raw`, a vector of `nbytes`).
    pub shape: Shape,
    /// Quantization parameters (`None` for plain dtypes).
    pub quant: QuantParams,
    /// A number of the user's choosing, e.g. a message kind.
    pub type_tag: u32,
    /// Sequence number set by the producer.
    pub seq: u64,
    /// Timestamp set by the producer (nanoseconds, clock of its choosing).
    pub timestamp_ns: u64,
    /// Payload length in bytes.
    pub nbytes: u64,
}

/// What both kinds of slot reference know: which slot, of which generation,
/// in which slab (kept alive, and its mappings with it, by `slab`).
struct SlotRef {
    slab: Keep,
    class: u8,
    index: u32,
    generation: u32,
}

impl SlotRef {
    fn capacity(&self) -> u64 {
        self.slab.class(self.class).slot_size
    }

    fn state(&self) -> &AtomicU64 {
        &self
            .slab
            .slot_atomics(self.slab.class(self.class), self.index)
            .state
    }

    fn header_ptr(&self) -> *mut TensorHeader {
        self.slab
            .tensor_header_ptr(self.slab.class(self.class), self.index)
    }

    fn header(&self) -> TensorHeader {
        // SAFETY: the caller holds a reference to the slot: either the only
        // one (a SlotMut, which writes the header only through &mut self) or
        // a reader's, and nobody writes a published slot's header.
        unsafe { self.header_ptr().read() }
    }

    fn data_offset(&self) -> u64 {
        let c = self.slab.class(self.class);
        c.data_offset + self.index as u64 * c.slot_size
    }

    /// Payload length, clamped to the slot so a damaged header cannot make
    /// a view reach into the next slot.
    fn len(&self) -> u64 {
        self.header().nbytes.min(self.capacity())
    }

    fn bytes(&self) -> &[u8] {
        // The range lies inside this slot (len is clamped), and the caller
        // holds a reference to it.
        // SAFETY: nobody writes the payload while &self is borrowed: a
        // SlotMut writes only through &mut self; a published slot is never written.
        unsafe {
            self.slab
                .inner
                .mem
                .data
                .bytes(self.data_offset() as usize, self.len() as usize)
        }
    }

    fn meta(&self) -> Result<TensorMeta> {
        self.header().decode(self.capacity())
    }

    /// Where the payload lies, for the GPU module: the data mapping, the
    /// payload's offset and length in it, and its slot's class and index.
    #[cfg(feature = "gpu")]
    fn raw_range(&self) -> RawRange {
        let c = self.slab.class(self.class);
        RawRange {
            owner: std::sync::Arc::downgrade(self.slab.root()),
            mem: self.slab.inner.mem.clone(),
            offset: self.data_offset(),
            len: self.len(),
            capacity: c.slot_size,
            class: self.class,
            index: self.index,
            class_offset: c.data_offset,
            slot_count: c.slot_count,
        }
    }

    fn handle(&self) -> Handle {
        Handle {
            offset: self.data_offset(),
            generation: self.generation,
            len: self.len() as u32,
        }
    }
}

/// Where a slot's payload lies in its data mapping (see `SlotRef::raw_range`).
#[cfg(feature = "gpu")]
pub(crate) struct RawRange {
    /// The slab's state as this process knows it (`Slab::root`), held by
    /// every segment handle, slab and slot of this mapping (an endpoint's
    /// own handle holds it too): when none is left, nobody can bind from
    /// it again.
    pub(crate) owner: std::sync::Weak<super::slab::SlabInner>,
    /// The mappings; the data mapping holds the payload.
    pub(crate) mem: std::sync::Arc<super::region::Memory>,
    /// Payload offset in the data mapping.
    pub(crate) offset: u64,
    /// Payload length.
    pub(crate) len: u64,
    /// Slot size (the payload may be read up to this many bytes).
    pub(crate) capacity: u64,
    /// Size class of the slot.
    pub(crate) class: u8,
    /// Index of the slot in its class.
    pub(crate) index: u32,
    /// Offset of the class's slot 0 in the data mapping.
    pub(crate) class_offset: u64,
    /// Slots in the class.
    pub(crate) slot_count: u32,
}

/// An exclusively owned slot: write its payload and header, then hand it on
/// with [`SlotMut::into_handle`] or read it back with [`SlotMut::into_shared`].
/// Dropping it frees the slot.
pub struct SlotMut {
    // `SlotMut::sent` moves `r.slab` out and skips the drop: every other
    // field must stay `Copy` (or be handled there).
    r: SlotRef,
    /// False once the reference was handed on: drop then only releases the
    /// segment, not the slot.
    armed: bool,
    /// The payload length in the tensor header, as this writer (the slot's
    /// only one) last wrote it. Sending needs the length; reading it from
    /// the header would touch the line the slot's state word lives on,
    /// which the receiver may already have fetched.
    nbytes: u64,
}

impl SlotMut {
    /// A slot just claimed for writing, whose tensor header says `nbytes`.
    pub(crate) fn new(slab: Keep, class: u8, index: u32, generation: u32, nbytes: u64) -> Self {
        SlotMut {
            r: SlotRef {
                slab,
                class,
                index,
                generation,
            },
            armed: true,
            nbytes,
        }
    }

    fn update_header(&mut self, f: impl FnOnce(&mut TensorHeader)) {
        let p = self.r.header_ptr();
        // SAFETY: we own the slot exclusively (&mut self); nobody reads its
        // header until a handle is published.
        unsafe {
            let old = p.read();
            let mut h = old;
            f(&mut h);
            // A header that does not change is not rewritten (a stream of
            // same-shaped tensors): the consumer may already have fetched
            // the line it shares with the slot's state word.
            if bytemuck::bytes_of(&h) != bytemuck::bytes_of(&old) {
                p.write(h);
            }
            self.nbytes = h.nbytes;
        }
    }

    /// Payload bytes the slot can hold.
    pub fn capacity(&self) -> u64 {
        self.r.capacity()
    }

    /// Payload length in bytes.
    pub fn len(&self) -> u64 {
        // Clamped as `SlotRef::len` clamps the header's value (a writer's
        // header never exceeds the slot: `set_len` checks).
        self.nbytes.min(self.capacity())
    }

    /// Whether the payload is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Sets the payload length (the header then describes `len` raw bytes).
    ///
    /// # Errors
    /// [`Error::TooLarge`] if `len` exceeds the capacity.
    pub fn set_len(&mut self, len: u64) -> Result<()> {
        self.check_capacity(len)?;
        self.update_header(|h| {
            *h = TensorHeader {
                type_tag: h.type_tag,
                seq: h.seq,
                ..TensorHeader::raw(len)
            }
        });
        Ok(())
    }

    fn check_capacity(&self, len: u64) -> Result<()> {
        if len > self.capacity() {
            return Err(Error::TooLarge {
                requested: len,
                max: self.capacity(),
            });
        }
        Ok(())
    }

    /// The payload, writable.
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        let (off, len) = (self.r.data_offset() as usize, self.len() as usize);
        // The range lies inside this slot (len is clamped to the slot size)
        // and the slab hands out a SlotMut only on writable data.
        // SAFETY: we own the slot exclusively and borrow self mutably for as
        // long as the slice lives.
        unsafe { self.r.slab.inner.mem.data.bytes_mut(off, len) }
    }

    /// The payload.
    pub fn bytes(&self) -> &[u8] {
        self.r.bytes()
    }

    #[cfg(feature = "gpu")]
    pub(crate) fn raw_range(&self) -> RawRange {
        self.r.raw_range()
    }

    /// The decoded tensor header.
    ///
    /// # Errors
    /// [`Error::Corrupt`] / [`Error::UnknownDType`] if the header is damaged.
    pub fn meta(&self) -> Result<TensorMeta> {
        self.r.meta()
    }

    /// Sets the header to a tensor of `T` with `shape` and returns the
    /// writable view of the payload.
    ///
    /// # Errors
    /// [`Error::TooLarge`] if the tensor does not fit in the slot.
    pub fn init_tensor<T: Element>(&mut self, shape: &Shape) -> Result<TensorMut<'_, T>> {
        // A Shape is Pod: it may not have come from Shape::new.
        shape.validate()?;
        let nbytes = shape.byte_size(T::DTYPE);
        self.check_capacity(nbytes)?;
        self.update_header(|h| {
            h.nbytes = nbytes;
            h.dtype = T::DTYPE.code();
            h.shape = *shape;
            h.set_quant(QuantParams::None);
        });
        self.tensor_mut()
    }

    /// The writable view of a tensor of `T` that the header describes.
    ///
    /// # Errors
    /// [`Error::DTypeMismatch`] if the header holds another dtype.
    pub fn tensor_mut<T: Element>(&mut self) -> Result<TensorMut<'_, T>> {
        let meta = self.meta()?;
        if meta.dtype != T::DTYPE {
            return Err(Error::DTypeMismatch {
                expected: T::DTYPE,
                found: meta.dtype,
            });
        }
        TensorMut::from_bytes(meta.shape, self.bytes_mut())
    }

    /// Quantizes `data` (a tensor of `shape`) into the slot and records the
    /// dtype, shape and parameters in the header.
    ///
    /// # Errors
    /// The quantizer's errors (non-finite input, range); [`Error::TooLarge`]
    /// if the quantized tensor does not fit.
    pub fn write_quantized(
        &mut self,
        data: &[f32],
        shape: &Shape,
        kind: QuantKind,
    ) -> Result<QuantParams> {
        shape.validate()?;
        let nbytes = quant::storage_size(kind, shape)?;
        self.check_capacity(nbytes)?;
        self.update_header(|h| {
            h.nbytes = nbytes;
            h.dtype = kind.dtype().code();
            h.shape = *shape;
        });
        match quant::quantize_into(data, shape, kind, self.bytes_mut()) {
            Ok(params) => {
                self.update_header(|h| h.set_quant(params));
                Ok(params)
            }
            Err(e) => {
                // The payload is partly written: say it is raw bytes, not a
                // tensor with stale parameters.
                self.update_header(|h| *h = TensorHeader::raw(nbytes));
                Err(e)
            }
        }
    }

    /// Sets the user type tag.
    pub fn set_type_tag(&mut self, tag: u32) {
        let p = self.r.header_ptr();
        // SAFETY: we own the slot exclusively (&mut self); nobody reads its
        // header until a handle is published. One field, written alone (the
        // whole header spans two cache lines).
        unsafe { std::ptr::addr_of_mut!((*p).type_tag).write(tag) };
    }

    /// Sets the sequence number.
    pub fn set_seq(&mut self, seq: u64) {
        let p = self.r.header_ptr();
        // SAFETY: as in `set_type_tag`.
        unsafe { std::ptr::addr_of_mut!((*p).seq).write(seq) };
    }

    /// Sets the timestamp (nanoseconds).
    pub fn set_timestamp_ns(&mut self, ns: u64) {
        let p = self.r.header_ptr();
        // SAFETY: as in `set_type_tag`.
        unsafe { std::ptr::addr_of_mut!((*p).timestamp_ns).write(ns) };
    }

    /// The handle naming this slot (the reference stays with `self`).
    pub fn handle(&self) -> Handle {
        Handle {
            offset: self.r.data_offset(),
            generation: self.r.generation,
            len: self.len() as u32,
        }
    }

    /// Gives up this reference into a handle, for another thread or process
    /// to [`Slab::take`]. The slot stays allocated until that taker drops it.
    pub fn into_handle(mut self) -> Handle {
        let h = self.handle();
        self.publish(true);
        self.armed = false;
        h
    }

    /// Turns the exclusive slot into a read-only reference (which can then
    /// be cloned, e.g. for several readers).
    pub fn into_shared(mut self) -> Slot {
        // Named before publishing (we still own the slot exclusively), so a
        // crash of this process never leaves the reference unattributed.
        let r = &self.r;
        r.slab
            .slot_atomics(r.slab.class(r.class), r.index)
            .owner_pid
            .store(r.slab.inner.pid, std::sync::atomic::Ordering::Relaxed);
        self.publish(false);
        self.armed = false;
        let r = &self.r;
        Slot::new(r.slab.clone(), r.class, r.index, r.generation)
    }

    /// Makes a slot claimed ahead of time a fresh loan of `nbytes` untyped
    /// bytes (what [`Slab::alloc`] would have written). Only for a slot
    /// straight from the allocation (whose header is the raw one it
    /// wrote), not one handed out since.
    pub(crate) fn reset(&mut self, nbytes: u64) {
        debug_assert!(nbytes <= self.capacity());
        if nbytes == self.nbytes {
            // The allocation's header says this already (a stream of
            // same-sized messages): no write to the state word's line.
            return;
        }
        let p = self.r.header_ptr();
        // SAFETY: we own the slot exclusively (&mut self); nobody reads its
        // header until a handle is published.
        unsafe { p.write(TensorHeader::raw(nbytes)) };
        self.nbytes = nbytes;
    }

    /// Publishes the slot as a pending handle while keeping the `SlotMut`
    /// (the channel's send: the handle goes on a ring next). Follow with
    /// [`SlotMut::sent`] or [`SlotMut::unpublish`]. `h` is `self.handle()`,
    /// which the caller has already made.
    pub(crate) fn publish_pending(&self, h: &Handle) {
        debug_assert_eq!(*h, self.handle());
        self.publish(true);
    }

    /// The handle was delivered: this reference now belongs to it. Returns
    /// what kept the slab alive for this `SlotMut` (a lease goes back to
    /// its pool).
    pub(crate) fn sent(self) -> Keep {
        let me = std::mem::ManuallyDrop::new(self);
        // SAFETY: `me` is never dropped nor used again, so its `slab` is
        // moved out exactly once (the other fields are `Copy`); not
        // dropping it is what `armed = false` would have meant.
        unsafe { std::ptr::read(&me.r.slab) }
    }

    /// The handle was not delivered: become the writer again. False if a
    /// forged handle took the reference meanwhile (then give up the slot
    /// with [`SlotMut::sent`]).
    pub(crate) fn unpublish(&self) -> bool {
        slotstate::unpublish(self.r.state(), self.r.generation, self.r.slab.inner.pid)
    }

    /// Whether the slot is in `slab`'s segment mapping (any handle of it).
    pub(crate) fn is_in(&self, slab: &Slab) -> bool {
        std::sync::Arc::ptr_eq(self.r.slab.root(), slab.root())
    }

    /// `(class, index)` of the slot.
    pub(crate) fn location(&self) -> (u8, u32) {
        (self.r.class, self.r.index)
    }

    /// Publishes the slot as one read reference held by no process in
    /// particular (a broadcast channel records its holders itself). The
    /// reference is the caller's to account for.
    pub(crate) fn into_group(mut self) -> Handle {
        let h = self.handle();
        self.publish(false);
        self.armed = false;
        h
    }

    fn publish(&self, pending: bool) {
        let st = self.r.state();
        slotstate::publish(st, self.r.generation, pending);
        // The receiver reads the state and the header next (see
        // `sync::hint`).
        crate::sync::hint::demote((st as *const AtomicU64).cast());
        crate::sync::hint::demote(self.r.header_ptr().cast::<u8>().wrapping_add(48));
    }
}

impl Drop for SlotMut {
    fn drop(&mut self) {
        if self.armed {
            // The only holder: the slot goes back, of the next generation.
            self.r
                .slab
                .give_up(self.r.class, self.r.index, self.r.generation);
        }
    }
}

impl fmt::Debug for SlotMut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SlotMut")
            .field("handle", &self.handle())
            .field("capacity", &self.capacity())
            .finish()
    }
}

/// A slot reference held collectively: one counted reference to the slot,
/// shared by the holders whose bits are set in a mask word in the control
/// region (a broadcast channel's table of who holds what). A holder that
/// clears its bit and finds no other bit set releases the reference.
#[derive(Copy, Clone, Debug)]
pub(crate) struct GroupBit {
    /// Offset of the mask word in the control mapping.
    pub(crate) word: usize,
    /// This holder's bit.
    pub(crate) bit: u64,
}

/// One counted, read-only reference to a slot. Clones add references;
/// the last one dropped frees the slot.
pub struct Slot {
    r: SlotRef,
    /// False once the reference was handed on (see [`SlotMut`]).
    armed: bool,
    /// Set for a broadcast view: this reference is a bit of a group
    /// (dropping clears it), not a count of its own.
    group: Option<GroupBit>,
}

impl Slot {
    pub(crate) fn new(slab: Keep, class: u8, index: u32, generation: u32) -> Self {
        Slot {
            r: SlotRef {
                slab,
                class,
                index,
                generation,
            },
            armed: true,
            group: None,
        }
    }

    /// A view whose reference is `group`'s bit, already set by the caller.
    pub(crate) fn in_group(
        slab: Keep,
        class: u8,
        index: u32,
        generation: u32,
        group: GroupBit,
    ) -> Self {
        let mut s = Slot::new(slab, class, index, generation);
        s.group = Some(group);
        s
    }

    pub(crate) fn check_len(&self, len: u32) -> Result<()> {
        // Only the length: the rest of the header may sit on a cache line
        // the receiver does not need yet.
        let p = self.r.header_ptr();
        // SAFETY: we hold a reference to the slot (nobody writes a
        // published slot's header); `nbytes` is an aligned u64 field of it.
        let nbytes = unsafe { std::ptr::addr_of!((*p).nbytes).read() };
        if nbytes != len as u64 {
            return Err(Error::InvalidHandle(format!(
                "handle length {len} does not match the slot's {nbytes} bytes"
            )));
        }
        Ok(())
    }

    /// The decoded tensor header.
    ///
    /// # Errors
    /// [`Error::Corrupt`] / [`Error::UnknownDType`] if the header is damaged.
    pub fn meta(&self) -> Result<TensorMeta> {
        self.r.meta()
    }

    /// Payload length in bytes.
    pub fn len(&self) -> u64 {
        self.r.len()
    }

    /// Whether the payload is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The payload bytes, in place.
    pub fn bytes(&self) -> &[u8] {
        self.r.bytes()
    }

    #[cfg(feature = "gpu")]
    pub(crate) fn raw_range(&self) -> RawRange {
        self.r.raw_range()
    }

    /// The payload as a tensor of `T`, in place.
    ///
    /// # Errors
    /// [`Error::DTypeMismatch`] if the slot holds another dtype;
    /// [`Error::LengthMismatch`] / [`Error::Corrupt`] if the header and
    /// payload disagree.
    pub fn tensor<T: Element>(&self) -> Result<Tensor<'_, T>> {
        let meta = self.meta()?;
        if meta.dtype != T::DTYPE {
            return Err(Error::DTypeMismatch {
                expected: T::DTYPE,
                found: meta.dtype,
            });
        }
        Tensor::from_bytes(meta.shape, self.bytes())
    }

    /// The payload as a quantized tensor, in place.
    ///
    /// # Errors
    /// [`Error::DTypeMismatch`] if the slot is not quantized; the checks of
    /// [`QTensor::new`] otherwise.
    pub fn quantized(&self) -> Result<QTensor<'_>> {
        let meta = self.meta()?;
        if !meta.dtype.is_quantized() {
            return Err(Error::DTypeMismatch {
                expected: DType::QInt8,
                found: meta.dtype,
            });
        }
        QTensor::new(meta.dtype, meta.shape, meta.quant, self.bytes())
    }

    /// The handle naming this slot (the reference stays with `self`).
    pub fn handle(&self) -> Handle {
        self.r.handle()
    }

    /// Gives up this reference into a handle, for [`Slab::take`].
    pub fn into_handle(mut self) -> Handle {
        let h = self.handle();
        if self.group.is_some() {
            // A broadcast view: the handle gets a reference of its own, and
            // dropping `self` leaves the group.
            slotstate::add_pending(self.r.state());
        } else {
            slotstate::to_pending(self.r.state());
            self.armed = false;
        }
        h
    }

    /// `(class, index)` of the slot.
    pub(crate) fn location(&self) -> (u8, u32) {
        (self.r.class, self.r.index)
    }

    /// Forgets the reference without releasing it (it was given back to
    /// the handle it came from); the segment is still released.
    pub(crate) fn disarm(mut self) {
        self.armed = false;
    }
}

impl Clone for Slot {
    fn clone(&self) -> Self {
        slotstate::add_ref(self.r.state());
        let r = &self.r;
        Slot::new(r.slab.clone(), r.class, r.index, r.generation)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        match self.group {
            Some(g) => self.r.slab.leave_group(g, self.r.class, self.r.index),
            None => self.r.slab.release(self.r.class, self.r.index),
        }
    }
}

impl fmt::Debug for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Slot")
            .field("handle", &self.handle())
            .finish()
    }
}
