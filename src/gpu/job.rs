//! Jobs: kernels recorded on bound tensors, submitted together, waited for.

use std::marker::PhantomData;

use super::bind::{GpuTensor, Route, WriteBack};
use super::context::GpuContext;
use super::kernels::{Arg, Op};
use crate::error::{Error, Result};
use crate::tensor::{DType, QuantParams};

/// Which reduction [`Job::reduce`] computes.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum ReduceKind {
    /// The sum of all elements.
    Sum,
    /// The largest element.
    Max,
}

/// Kernels recorded on bound tensors, run by [`Job::run`]. A job borrows
/// every tensor it was given until it is run or dropped; dropping a job
/// without running it submits nothing.
pub struct Job<'c, 'j> {
    ctx: &'c GpuContext,
    encoder: wgpu::CommandEncoder,
    /// Staged outputs to copy back into their slots: (buffer, offset, where).
    writebacks: Vec<(wgpu::Buffer, u64, WriteBack)>,
    ops: usize,
    /// Whether a kernel writes imported pages (the host then needs a barrier).
    zero_copy_out: bool,
    _tensors: PhantomData<&'j ()>,
}

impl std::fmt::Debug for Job<'_, '_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job").field("ops", &self.ops).finish()
    }
}

fn numel(t: &GpuTensor<'_>) -> Result<u32> {
    u32::try_from(t.meta.shape.len()).map_err(|_| {
        Error::Gpu(format!(
            "{} elements are too many for one kernel",
            t.meta.shape.len()
        ))
    })
}

fn want(t: &GpuTensor<'_>, dtype: DType, what: &str) -> Result<()> {
    if t.meta.dtype != dtype {
        return Err(Error::Gpu(format!(
            "{what} must be {dtype:?}, the tensor bound is {:?}",
            t.meta.dtype
        )));
    }
    Ok(())
}

fn same_numel(a: &GpuTensor<'_>, b: &GpuTensor<'_>, what: &str) -> Result<u32> {
    let (na, nb) = (numel(a)?, numel(b)?);
    if na != nb {
        return Err(Error::Gpu(format!(
            "{what}: input has {na} elements, output {nb}"
        )));
    }
    Ok(na)
}

fn arg<'t>(t: &'t GpuTensor<'_>) -> Arg<'t> {
    Arg {
        buffer: &t.buffer,
        offset: t.offset,
        size: t.size,
    }
}

/// Waits for the GPU when dropped (see `Job::run`).
struct WaitOnDrop<'c>(&'c GpuContext);

impl Drop for WaitOnDrop<'_> {
    fn drop(&mut self) {
        // An error here means a lost device: its work has stopped either way.
        let _ = self.0.wait_idle();
    }
}

impl GpuContext {
    /// A new, empty job on this context.
    pub fn job<'j>(&self) -> Job<'_, 'j> {
        Job {
            ctx: self,
            encoder: self
                .device
                .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                    label: Some("psyne job"),
                }),
            writebacks: Vec::new(),
            ops: 0,
            zero_copy_out: false,
            _tensors: PhantomData,
        }
    }
}

impl<'j> Job<'_, 'j> {
    fn record(
        &mut self,
        name: &str,
        op: Op,
        inputs: &[&'j GpuTensor<'_>],
        out: &'j GpuTensor<'_>,
    ) -> Result<()> {
        if !out.writable {
            return Err(Error::Gpu(format!(
                "{name}: the output is bound read-only (bind it with bind_mut)"
            )));
        }
        let args: Vec<Arg<'_>> = inputs.iter().map(|t| arg(t)).collect();
        let ctx = self.ctx;
        let encoder = &mut self.encoder;
        ctx.checked(name, || {
            ctx.kernels
                .record(&ctx.device, encoder, &op, &args, arg(out))
        })?;
        self.note_output(out);
        self.ops += 1;
        Ok(())
    }

    /// Remembers what `run` must do for an output: a copy back (staged) or
    /// a host barrier (zero-copy).
    fn note_output(&mut self, out: &GpuTensor<'_>) {
        if let Some(wb) = out.writeback {
            if !self.writebacks.iter().any(|(_, _, w)| w.ptr == wb.ptr) {
                self.writebacks.push((out.buffer.clone(), out.offset, wb));
            }
        }
        self.zero_copy_out |= out.route == Route::ZeroCopy;
    }

    /// Dequantizes a `QInt8` (per tensor or per channel), `Q8Block` or
    /// `Q4Block` tensor into an f32 tensor with as many elements.
    ///
    /// # Errors
    /// [`Error::Gpu`] on a dtype or element-count mismatch.
    pub fn dequantize(&mut self, input: &'j GpuTensor<'_>, out: &'j GpuTensor<'_>) -> Result<()> {
        want(out, DType::F32, "dequantize: the output")?;
        let n = same_numel(input, out, "dequantize")?;
        let op = match (input.meta.dtype, input.meta.quant) {
            (DType::QInt8, QuantParams::PerTensor { scale, zero_point }) => Op::DequantQInt8 {
                n,
                scale,
                zero_point,
            },
            (DType::QInt8, QuantParams::PerChannel { axis }) => {
                let dims = input.meta.shape.dims();
                let axis = axis as usize;
                if axis >= dims.len() {
                    return Err(Error::Gpu(format!(
                        "dequantize: channel axis {axis} of a rank-{} tensor",
                        dims.len()
                    )));
                }
                let outer: u64 = dims[..axis].iter().product();
                let inner: u64 = dims[axis + 1..].iter().product();
                Op::DequantQInt8PerChannel {
                    n,
                    outer: outer as u32,
                    channels: dims[axis] as u32,
                    inner: inner as u32,
                }
            }
            (DType::Q8Block, _) => Op::DequantQ8Block { n },
            (DType::Q4Block, _) => Op::DequantQ4Block { n },
            (d, q) => {
                return Err(Error::Gpu(format!(
                    "dequantize: the input is {d:?} with {q:?}, not a quantized tensor"
                )))
            }
        };
        self.record("dequantize", op, &[input], out)
    }

    /// Converts f16 to f32 or f32 to f16, as the two dtypes say.
    ///
    /// # Errors
    /// [`Error::Gpu`] for any other pair of dtypes or an element-count mismatch.
    pub fn convert(&mut self, input: &'j GpuTensor<'_>, out: &'j GpuTensor<'_>) -> Result<()> {
        let n = same_numel(input, out, "convert")?;
        let op = match (input.meta.dtype, out.meta.dtype) {
            (DType::F16, DType::F32) => Op::F16ToF32 { n },
            (DType::F32, DType::F16) => Op::F32ToF16 { n },
            (a, b) => {
                return Err(Error::Gpu(format!(
                    "convert: {a:?} to {b:?} is not offered (f16 <-> f32 is)"
                )))
            }
        };
        self.record("convert", op, &[input], out)
    }

    /// An elementwise f32 kernel of one input: checks dtypes and counts.
    fn unary_f32(
        &mut self,
        name: &str,
        x: &'j GpuTensor<'_>,
        out: &'j GpuTensor<'_>,
        op: impl FnOnce(u32) -> Op,
    ) -> Result<()> {
        want(x, DType::F32, &format!("{name}: the input"))?;
        want(out, DType::F32, &format!("{name}: the output"))?;
        let n = same_numel(x, out, name)?;
        self.record(name, op(n), &[x], out)
    }

    /// `out = factor * x` (f32).
    ///
    /// # Errors
    /// [`Error::Gpu`] on a dtype or element-count mismatch.
    pub fn scale(
        &mut self,
        x: &'j GpuTensor<'_>,
        factor: f32,
        out: &'j GpuTensor<'_>,
    ) -> Result<()> {
        self.unary_f32("scale", x, out, |n| Op::Scale { n, factor })
    }

    /// `out = a + b` elementwise (f32).
    ///
    /// # Errors
    /// [`Error::Gpu`] on a dtype or element-count mismatch.
    pub fn add(
        &mut self,
        a: &'j GpuTensor<'_>,
        b: &'j GpuTensor<'_>,
        out: &'j GpuTensor<'_>,
    ) -> Result<()> {
        for (t, w) in [
            (a, "add: input a"),
            (b, "add: input b"),
            (out, "add: the output"),
        ] {
            want(t, DType::F32, w)?;
        }
        same_numel(a, b, "add (a and b)")?;
        let n = same_numel(a, out, "add")?;
        self.record("add", Op::Add { n }, &[a, b], out)
    }

    /// `out = max(x, 0)` elementwise (f32).
    ///
    /// # Errors
    /// [`Error::Gpu`] on a dtype or element-count mismatch.
    pub fn relu(&mut self, x: &'j GpuTensor<'_>, out: &'j GpuTensor<'_>) -> Result<()> {
        self.unary_f32("relu", x, out, |n| Op::Relu { n })
    }

    /// `out[m x n] = a[m x k] * b[k x n]`, row-major f32 matrices.
    ///
    /// # Errors
    /// [`Error::Gpu`] unless all three are rank-2 f32 with matching dimensions.
    pub fn matmul(
        &mut self,
        a: &'j GpuTensor<'_>,
        b: &'j GpuTensor<'_>,
        out: &'j GpuTensor<'_>,
    ) -> Result<()> {
        for (t, w) in [
            (a, "matmul: a"),
            (b, "matmul: b"),
            (out, "matmul: the output"),
        ] {
            want(t, DType::F32, w)?;
            if t.meta.shape.rank() != 2 {
                return Err(Error::Gpu(format!(
                    "{w} must be a matrix, its shape is {:?}",
                    t.meta.shape.dims()
                )));
            }
        }
        let (da, db, dc) = (
            a.meta.shape.dims(),
            b.meta.shape.dims(),
            out.meta.shape.dims(),
        );
        if da[1] != db[0] || dc[0] != da[0] || dc[1] != db[1] {
            return Err(Error::Gpu(format!(
                "matmul: shapes {da:?} x {db:?} -> {dc:?} do not fit"
            )));
        }
        let op = Op::MatMul {
            m: da[0] as u32,
            k: da[1] as u32,
            n: db[1] as u32,
        };
        self.record("matmul", op, &[a, b], out)
    }

    /// Softmax along the last dimension (each row sums to 1), f32.
    ///
    /// # Errors
    /// [`Error::Gpu`] on a dtype or shape mismatch.
    pub fn softmax(&mut self, x: &'j GpuTensor<'_>, out: &'j GpuTensor<'_>) -> Result<()> {
        want(x, DType::F32, "softmax: the input")?;
        want(out, DType::F32, "softmax: the output")?;
        if x.meta.shape != out.meta.shape {
            return Err(Error::Gpu(format!(
                "softmax: input shape {:?}, output shape {:?}",
                x.meta.shape.dims(),
                out.meta.shape.dims()
            )));
        }
        let n = numel(x)?;
        let cols = *x.meta.shape.dims().last().unwrap_or(&1) as u32;
        let rows = n.checked_div(cols).unwrap_or(0);
        self.record("softmax", Op::SoftmaxRows { rows, cols }, &[x], out)
    }

    /// The sum or maximum of all elements of `x` (f32) into `out`, an f32
    /// tensor of one element.
    ///
    /// # Errors
    /// [`Error::Gpu`] on a dtype mismatch or an output that is not one element.
    pub fn reduce(
        &mut self,
        x: &'j GpuTensor<'_>,
        kind: ReduceKind,
        out: &'j GpuTensor<'_>,
    ) -> Result<()> {
        want(x, DType::F32, "reduce: the input")?;
        want(out, DType::F32, "reduce: the output")?;
        if out.meta.shape.len() != 1 {
            return Err(Error::Gpu(format!(
                "reduce: the output must hold one element, it holds {}",
                out.meta.shape.len()
            )));
        }
        let n = numel(x)?;
        let kind = match kind {
            ReduceKind::Sum => super::kernels::ReduceKind::Sum,
            ReduceKind::Max => super::kernels::ReduceKind::Max,
        };
        self.record("reduce", Op::Reduce { n, kind }, &[x], out)
    }

    /// Records a compute pipeline of your own: `tensors[i]` is bound at
    /// `@group(0) @binding(i)` (declare them `var<storage, read_write>`:
    /// zero-copy tensors of one segment may share a buffer, and wgpu forbids
    /// read-only and read-write use of one buffer in a dispatch). wgpu
    /// keeps every access inside each tensor's range. Writable staged
    /// tensors are copied back into their slots by [`Job::run`].
    ///
    /// # Safety
    /// The shader must not write a tensor that is not
    /// [`writable`](GpuTensor::writable): a read-only tensor on
    /// [`Route::ZeroCopy`] is a published slot other readers see (a
    /// receiver maps those pages read-only for the CPU, but the device
    /// reaches them through a writable alias, so a write would change the
    /// message under every reader). The built-in kernels never write their
    /// inputs.
    ///
    /// # Errors
    /// [`Error::Gpu`] if wgpu rejects the bind group or the dispatch.
    pub unsafe fn dispatch(
        &mut self,
        pipeline: &wgpu::ComputePipeline,
        tensors: &[&'j GpuTensor<'_>],
        workgroups: [u32; 3],
    ) -> Result<()> {
        let ctx = self.ctx;
        let encoder = &mut self.encoder;
        ctx.checked("dispatch", || {
            let entries: Vec<wgpu::BindGroupEntry<'_>> = tensors
                .iter()
                .enumerate()
                .map(|(i, t)| wgpu::BindGroupEntry {
                    binding: i as u32,
                    resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                        buffer: &t.buffer,
                        offset: t.offset,
                        size: wgpu::BufferSize::new(t.size),
                    }),
                })
                .collect();
            let group = ctx.device.create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some("psyne custom dispatch"),
                layout: &pipeline.get_bind_group_layout(0),
                entries: &entries,
            });
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor::default());
            pass.set_pipeline(pipeline);
            pass.set_bind_group(0, &group, &[]);
            pass.dispatch_workgroups(workgroups[0], workgroups[1], workgroups[2]);
            Ok(())
        })?;
        for t in tensors.iter().filter(|t| t.writable) {
            self.note_output(t);
        }
        self.ops += 1;
        Ok(())
    }

    /// Submits the recorded kernels and waits until the GPU has finished;
    /// staged outputs are then copied back into their slots. When this
    /// returns `Ok`, every output slot holds its result.
    ///
    /// # Errors
    /// [`Error::Gpu`] if the submission, the wait or a copy back fails.
    pub fn run(self) -> Result<()> {
        let Job {
            ctx,
            mut encoder,
            writebacks,
            zero_copy_out,
            ..
        } = self;
        // From here on, however this function ends (error, panic), it
        // first waits for the GPU: the tensors' borrows end when it returns.
        let _wait = WaitOnDrop(ctx);
        let staging: Vec<wgpu::Buffer> = ctx.checked("submitting a job", || {
            let staging: Vec<wgpu::Buffer> = writebacks
                .iter()
                .map(|(buf, off, wb)| {
                    let size = (wb.len as u64).next_multiple_of(4);
                    let s = ctx.device.create_buffer(&wgpu::BufferDescriptor {
                        label: Some("psyne staged output"),
                        size,
                        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                        mapped_at_creation: false,
                    });
                    encoder.copy_buffer_to_buffer(buf, *off, &s, 0, size);
                    s
                })
                .collect();
            let barrier = match (&ctx.importer, zero_copy_out) {
                (Some(imp), true) => {
                    Some(imp.host_read_barrier(&ctx.device).ok_or_else(|| {
                        Error::Gpu("could not record the host-read barrier".into())
                    })?)
                }
                _ => None,
            };
            ctx.queue
                .submit(std::iter::once(encoder.finish()).chain(barrier));
            Ok(staging)
        })?;
        let refs: Vec<&wgpu::Buffer> = staging.iter().collect();
        if refs.is_empty() {
            return ctx.wait_idle();
        }
        let results = ctx.map_read(&refs)?;
        for ((_, _, wb), bytes) in writebacks.iter().zip(results) {
            // `wb` points at the payload of a slot borrowed mutably (through
            // its GpuTensor) for at least 'j, which this job still borrows;
            // the payload is `wb.len` bytes, and `bytes` (rounded up to 4) is
            // at least that long. GpuTensor is neither Send nor Sync (it
            // holds this raw pointer), so no other thread reads the payload
            // through a shared reference to the binding meanwhile.
            // SAFETY: an exclusively borrowed, in-bounds destination (above).
            unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), wb.ptr, wb.len) };
        }
        Ok(())
    }
}
