//! # psyne
//!
//! Zero-copy tensor IPC. A producer loans a slot of a shared-memory slab,
//! writes a typed tensor straight into it and sends it; a lock-free ring
//! carries a 16-byte [`Handle`]; the consumer, in another thread or process,
//! reads the same bytes in place.
//!
//! Channels (see [`mod@channel`] for URIs, patterns, policies, async):
//!
//! ```
//! use psyne::{Receiver, Sender, Shape};
//!
//! # fn main() -> psyne::Result<()> {
//! # let uri = format!("ipc://doc-lib-chan-{}?capacity=16&slab=1MiB", std::process::id());
//! let tx = Sender::connect(&uri)?; // usually in the producer process
//! let rx = Receiver::connect(&uri)?; // usually in the consumer process
//! let mut loan = tx.loan::<f32>(&Shape::vector(3))?;
//! loan.tensor_mut::<f32>()?.copy_from_slice(&[1.0, 2.0, 3.0])?;
//! loan.send()?;
//! assert_eq!(&*rx.recv()?.tensor::<f32>()?, &[1.0, 2.0, 3.0]);
//! # Ok(())
//! # }
//! ```
//!
//! The same underneath, by hand: a segment, its slab, a handle.
//!
//! ```
//! use psyne::{Segment, SlabConfig, Shape};
//!
//! # fn main() -> psyne::Result<()> {
//! # let name = format!("doc-lib-{}", std::process::id());
//! // A segment with 16 slots of 64 KiB.
//! let seg = Segment::create(&name, &SlabConfig::new().class(64 * 1024, 16))?;
//!
//! // Producer: loan a slot, write the tensor in place, hand it on.
//! let mut slot = seg.slab().alloc_tensor::<f32>(&Shape::matrix(2, 3)?)?;
//! slot.tensor_mut::<f32>()?.copy_from_slice(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0])?;
//! let handle = slot.into_handle(); // 16 bytes; print it, pipe it, put it on a ring
//!
//! // Consumer (usually another process): open by name, take the handle.
//! let peer = Segment::open(&name)?;
//! let view = peer.slab().take(handle)?;
//! assert!(view.tensor::<f64>().is_err()); // the wrong dtype is an error, not a misread
//! let t = view.tensor::<f32>()?;
//! assert_eq!(t.shape().dims(), [2, 3]);
//! assert_eq!(psyne::Matrix::try_from(t)?.row(1), Some(&[4.0, 5.0, 6.0][..]));
//! drop(view); // the slot goes back to the slab
//! assert_eq!(peer.slab().used_slots(), 0);
//! Segment::unlink(&name)?;
//! # Ok(())
//! # }
//! ```
//!
//! The modules, bottom up: [`tensor`] (dtypes, shapes, views, quantization),
//! [`shm`] (segments and the slab allocator), the lock-free rings and
//! futex waiting (internal), [`mod@channel`] (endpoints, URIs, transports). See
//! `docs/architecture.md`.

#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod channel;
pub mod error;
#[cfg(feature = "gpu")]
#[cfg_attr(docsrs, doc(cfg(feature = "gpu")))]
pub mod gpu;
pub(crate) mod ring;
pub mod shm;
pub(crate) mod sync;
pub mod tensor;

pub use channel::{channel, Loan, Receiver, SendError, Sender};
pub use error::{Error, Result};
pub use shm::{
    CreateOptions, DataAccess, Handle, Segment, SegmentInfo, Slab, SlabConfig, Slot, SlotMut,
    TensorMeta,
};
pub use tensor::{
    Bool, Complex32, Complex64, DType, DoubleMatrix, Element, FloatVector, Int8Vector, Matrix,
    Matrix4x4f, MatrixMut, QTensor, QuantKind, QuantParams, QuantizedTensor, Shape, Tensor,
    TensorMut, UInt8Vector, Vector, VectorMut,
};

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
