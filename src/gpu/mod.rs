//! GPU binding (cargo feature `gpu`): slots as wgpu storage buffers, without
//! a copy where the driver allows it, and WGSL kernels that run on them.
//!
//! ```no_run
//! use psyne::gpu::{GpuContext, Route};
//! use psyne::{Receiver, Sender, Shape};
//!
//! # fn main() -> psyne::Result<()> {
//! let ctx = GpuContext::new()?; // adapter from PSYNE_GPU_ADAPTER, or the best one
//! println!("{}", ctx.info());
//! let (tx, rx) = (Sender::connect("memory://gpu-doc")?, Receiver::connect("memory://gpu-doc")?);
//! tx.send_copy(&Shape::vector(4), &[1.0f32, -2.0, 3.0, -4.0])?;
//! let input = rx.recv()?;
//!
//! let mut out = tx.loan::<f32>(&Shape::vector(4))?;
//! {
//!     let x = ctx.bind(&input)?; // Route::ZeroCopy on Vulkan with the extension
//!     let y = ctx.bind_mut(&mut out)?;
//!     let mut job = ctx.job();
//!     job.relu(&x, &y)?;
//!     job.run()?; // submits, waits, copies staged outputs back into their slots
//! }
//! out.send()?; // the consumer sees the finished result
//! assert_eq!(&*rx.recv()?.tensor::<f32>()?, &[1.0, 0.0, 3.0, 0.0]);
//! # Ok(())
//! # }
//! ```
//!
//! # Routes
//!
//! [`GpuContext::bind`] says how a tensor reached the GPU ([`Route`]):
//!
//! * [`Route::ZeroCopy`]: on Vulkan with `VK_EXT_external_memory_host`, the
//!   segment's data pages are imported once per context (in chunks no larger
//!   than the device allows for one buffer) and a tensor is an offset range
//!   of such a buffer. Binding costs the same at 1 KiB and at 1 GiB. A kernel
//!   writing into a bound loan writes the slot's bytes directly.
//! * [`Route::Staged`]: everywhere else (other backends, drivers without the
//!   extension, read-only pages the driver refuses, or
//!   `PSYNE_GPU_ZERO_COPY=0`): a device buffer filled with
//!   `queue.write_buffer`, and for outputs a copy back into the slot when the
//!   job has finished. Results are identical; only the cost differs.
//!
//! On a discrete GPU imported pages stay in system memory and every kernel
//! access crosses PCIe. That is right for data a kernel reads once (a batch
//! to dequantize, an output written once); for data read many times (the
//! weights of a matmul used batch after batch) copy it once with
//! [`GpuContext::to_device`]. On integrated GPUs and on lavapipe, system
//! memory is device memory and zero-copy is always the cheaper route.
//!
//! # Safety of the shared bytes
//!
//! A binding borrows its slot ([`GpuContext::bind`] takes `&Slot`,
//! [`GpuContext::bind_mut`] `&mut SlotMut`), a [`Job`] borrows its
//! bindings, and [`Job::run`] returns (or unwinds) only after the GPU has
//! finished. So through the safe API a slot cannot be released, reused or
//! sent while a submission uses it, a consumer never sees an output before
//! the GPU wrote it, and kernels write only tensors bound writable. Imported
//! pages stay mapped until the driver has destroyed the import. Two doors
//! are `unsafe`, with their contracts: [`GpuTensor::binding`] (the raw
//! buffer, which for zero-copy is a whole chunk of the slab) and
//! [`Job::dispatch`] (a shader of yours must not write read-only tensors).
//!
//! Sending a loan while a binding of it lives does not compile:
//!
//! ```compile_fail
//! # use psyne::gpu::GpuContext;
//! # use psyne::{Sender, Shape};
//! # fn f(ctx: &GpuContext, tx: &Sender) -> psyne::Result<()> {
//! let mut out = tx.loan::<f32>(&Shape::vector(4))?;
//! let y = ctx.bind_mut(&mut out)?;
//! out.send()?; // error[E0505]: cannot move out of `out` because it is borrowed
//! drop(y);
//! # Ok(())
//! # }
//! ```
//!
//! # Environment
//!
//! * `PSYNE_GPU_ADAPTER`: choose the adapter whose name contains this text
//!   (case-insensitive), e.g. `llvmpipe`; otherwise discrete, integrated,
//!   virtual, then software adapters are preferred, Vulkan first.
//! * `PSYNE_GPU_ZERO_COPY=0`: never import; every binding is staged.

mod bind;
mod context;
mod import;
mod job;
mod kernels;

/// The wgpu this module is built on, for pipelines and bind groups of your own.
pub use wgpu;

pub use bind::{GpuTensor, Route};
pub use context::{GpuContext, GpuInfo, GpuOptions};
pub use job::{Job, ReduceKind};

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

/// Runs a future to completion on this thread (wgpu's adapter and device
/// requests are futures that complete at once on native backends).
pub(crate) fn block_on<F: Future>(fut: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut fut = pin!(fut);
    loop {
        if let Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::park();
    }
}
