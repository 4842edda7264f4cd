//! The WGSL compute kernels: pipelines compiled once per device, and the
//! recording of one operation's dispatches into a command encoder.
//!
//! Every kernel reads and writes ranges of storage buffers ([`Arg`]) and
//! takes its sizes from a small uniform buffer made for each call. The
//! shaders live in `shaders/*.wgsl` (documented in `shaders/README.md`);
//! each is compiled with `shaders/common.wgsl` prepended.
//!
//! All storage bindings are declared `read_write`, inputs included: inputs
//! and outputs are often ranges of one buffer (an imported slab), and wgpu
//! rejects a dispatch that uses one buffer both as read-only and as
//! read-write storage. Ranges may share a buffer but must not overlap.
//!
//! Large element counts spill from the x dimension of the dispatch grid
//! into y (at most `max_compute_workgroups_per_dimension` workgroups per
//! dimension); the shaders compute a linear index and bounds-check it, so
//! no kernel writes outside the bytes [`Kernels::output_bytes`] reports.

use std::borrow::Cow;
use std::num::NonZeroU64;

use wgpu::util::DeviceExt;

use crate::error::{Error, Result};

const COMMON: &str = include_str!("../../shaders/common.wgsl");
const DEQUANT_QINT8: &str = include_str!("../../shaders/dequant_qint8.wgsl");
const DEQUANT_QINT8_PER_CHANNEL: &str =
    include_str!("../../shaders/dequant_qint8_per_channel.wgsl");
const DEQUANT_Q8_BLOCK: &str = include_str!("../../shaders/dequant_q8_block.wgsl");
const DEQUANT_Q4_BLOCK: &str = include_str!("../../shaders/dequant_q4_block.wgsl");
const F16_TO_F32: &str = include_str!("../../shaders/f16_to_f32.wgsl");
const F32_TO_F16: &str = include_str!("../../shaders/f32_to_f16.wgsl");
const ELEMENTWISE: &str = include_str!("../../shaders/elementwise.wgsl");
const MATMUL: &str = include_str!("../../shaders/matmul.wgsl");
const SOFTMAX: &str = include_str!("../../shaders/softmax.wgsl");
const REDUCE: &str = include_str!("../../shaders/reduce.wgsl");

/// Invocations per workgroup of the one-dimensional kernels (`WG` in the
/// shaders).
const WG: u64 = 256;
/// Rows and columns of C per matmul workgroup (`TILE` in matmul.wgsl).
const MATMUL_TILE: u64 = 64;
/// Elements one reduce workgroup folds into one partial result.
const REDUCE_CHUNK: u64 = 2 * WG;
/// Values per quantization block (Q8Block, Q4Block).
const BLOCK: u64 = 32;

/// A storage-buffer range: `offset` is a multiple of the device's
/// `min_storage_buffer_offset_alignment` (256 in practice), `size` a
/// multiple of 4 (byte payloads are padded up to a multiple of 4). The range
/// may be larger than an op needs; only the bytes it needs are bound.
#[derive(Copy, Clone, Debug)]
pub(crate) struct Arg<'a> {
    /// The buffer; it needs `BufferUsages::STORAGE`.
    pub(crate) buffer: &'a wgpu::Buffer,
    /// Start of the range in bytes.
    pub(crate) offset: u64,
    /// Length of the range in bytes.
    pub(crate) size: u64,
}

/// Which reduction [`Op::Reduce`] computes.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) enum ReduceKind {
    /// The sum of the elements.
    Sum,
    /// The largest element.
    Max,
}

/// One GPU operation. Sizes are element counts; all f32 data is
/// little-endian and row-major.
#[derive(Copy, Clone, Debug, PartialEq)]
pub(crate) enum Op {
    /// Per-tensor affine int8 to f32: input `n` i8 values (4 per word,
    /// little-endian); output `n` f32, `(q - zero_point) * scale`.
    DequantQInt8 {
        /// Elements.
        n: u32,
        /// Step between levels; finite and > 0.
        scale: f32,
        /// The level that stands for 0.0; in `[-128, 127]`.
        zero_point: i32,
    },
    /// Per-channel affine int8 to f32. Input: `n` i8 values, zero padding
    /// to a multiple of 4 bytes, `channels` f32 scales, `channels` i32 zero
    /// points; element `i` uses channel `(i / inner) % channels`.
    DequantQInt8PerChannel {
        /// Elements; must be `outer * channels * inner`.
        n: u32,
        /// Product of the dimensions before the channel axis.
        outer: u32,
        /// Size of the channel axis (entries in each table).
        channels: u32,
        /// Product of the dimensions after the channel axis.
        inner: u32,
    },
    /// Q8Block to f32: an f16 scale per 32-value block (the scales padded to
    /// 4 bytes), then 32 i8 values per block.
    DequantQ8Block {
        /// Elements.
        n: u32,
    },
    /// Q4Block to f32: an f16 scale per 32-value block (padded to 4 bytes),
    /// then 16 bytes of 4-bit values per block.
    DequantQ4Block {
        /// Elements.
        n: u32,
    },
    /// f16 to f32, exact.
    F16ToF32 {
        /// Elements.
        n: u32,
    },
    /// f32 to f16, round to nearest even; for odd `n` the padding half of
    /// the last output word is written as 0.
    F32ToF16 {
        /// Elements.
        n: u32,
    },
    /// `out = x * factor` (f32).
    Scale {
        /// Elements.
        n: u32,
        /// The multiplier.
        factor: f32,
    },
    /// `out = a + b` (f32, two inputs).
    Add {
        /// Elements.
        n: u32,
    },
    /// `out = max(x, 0)` (f32; NaN gives 0).
    Relu {
        /// Elements.
        n: u32,
    },
    /// `C[m x n] = A[m x k] * B[k x n]` (f32, row-major; inputs A then B).
    MatMul {
        /// Rows of A and C; >= 1.
        m: u32,
        /// Columns of A, rows of B; >= 1.
        k: u32,
        /// Columns of B and C; >= 1.
        n: u32,
    },
    /// Numerically stable softmax of each row of a `[rows x cols]` f32
    /// matrix.
    SoftmaxRows {
        /// Rows; >= 1.
        rows: u32,
        /// Columns; >= 1.
        cols: u32,
    },
    /// Sum or maximum of `n` f32 into one f32.
    Reduce {
        /// Elements; >= 1.
        n: u32,
        /// Which reduction.
        kind: ReduceKind,
    },
}

impl Op {
    /// A short name for error messages.
    fn name(&self) -> &'static str {
        match self {
            Op::DequantQInt8 { .. } => "qint8 dequantize",
            Op::DequantQInt8PerChannel { .. } => "per-channel qint8 dequantize",
            Op::DequantQ8Block { .. } => "q8block dequantize",
            Op::DequantQ4Block { .. } => "q4block dequantize",
            Op::F16ToF32 { .. } => "f16 to f32",
            Op::F32ToF16 { .. } => "f32 to f16",
            Op::Scale { .. } => "scale",
            Op::Add { .. } => "add",
            Op::Relu { .. } => "relu",
            Op::MatMul { .. } => "matmul",
            Op::SoftmaxRows { .. } => "softmax",
            Op::Reduce {
                kind: ReduceKind::Sum,
                ..
            } => "sum",
            Op::Reduce {
                kind: ReduceKind::Max,
                ..
            } => "max",
        }
    }
}

/// `x` rounded up to a multiple of 4.
fn pad4(x: u64) -> u64 {
    x.next_multiple_of(4)
}

/// Bytes of `count` f32, saturating at `u64::MAX` (then no range fits).
fn f32_bytes(count: u64) -> u64 {
    count.saturating_mul(4)
}

/// Bytes of a Q8Block (`block_bytes` 32) or Q4Block (16) encoding of `n`
/// values: the f16 scales padded to 4 bytes, then the packed values.
fn block_bytes(n: u64, block_bytes: u64) -> u64 {
    let blocks = n.div_ceil(BLOCK);
    pad4(2 * blocks) + block_bytes * blocks
}

/// What one input of an op must hold.
struct Need {
    role: &'static str,
    bytes: u64,
    what: String,
}

impl Need {
    fn new(role: &'static str, bytes: u64, what: String) -> Need {
        Need { role, bytes, what }
    }
}

/// A buffer range as bound: exactly the bytes a kernel may touch.
#[derive(Clone)]
struct Bound {
    buffer: wgpu::Buffer,
    offset: u64,
    size: u64,
}

impl Bound {
    fn new(arg: &Arg<'_>, size: u64) -> Bound {
        Bound {
            buffer: arg.buffer.clone(),
            offset: arg.offset,
            size,
        }
    }

    /// Bind group entry `binding` for this range.
    fn entry(&self, binding: u32) -> wgpu::BindGroupEntry<'_> {
        wgpu::BindGroupEntry {
            binding,
            resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                buffer: &self.buffer,
                offset: self.offset,
                size: NonZeroU64::new(self.size),
            }),
        }
    }
}

/// One dispatch: pipeline, its inputs, where it writes, params, grid.
struct Dispatch<'p> {
    pipeline: &'p wgpu::ComputePipeline,
    inputs: Vec<Bound>,
    output: Bound,
    params: [u32; 4],
    grid: (u32, u32),
}

/// The compute pipelines for one device, created once.
pub(crate) struct Kernels {
    one_input: wgpu::BindGroupLayout,
    two_inputs: wgpu::BindGroupLayout,
    dequant_qint8: wgpu::ComputePipeline,
    dequant_qint8_per_channel: wgpu::ComputePipeline,
    dequant_q8_block: wgpu::ComputePipeline,
    dequant_q4_block: wgpu::ComputePipeline,
    f16_to_f32: wgpu::ComputePipeline,
    f32_to_f16: wgpu::ComputePipeline,
    scale: wgpu::ComputePipeline,
    add: wgpu::ComputePipeline,
    relu: wgpu::ComputePipeline,
    matmul: wgpu::ComputePipeline,
    softmax: wgpu::ComputePipeline,
    reduce: wgpu::ComputePipeline,
    offset_alignment: u64,
    max_binding: u64,
    max_groups: u64,
}

fn storage_entry(binding: u32) -> wgpu::BindGroupLayoutEntry {
    wgpu::BindGroupLayoutEntry {
        binding,
        visibility: wgpu::ShaderStages::COMPUTE,
        ty: wgpu::BindingType::Buffer {
            ty: wgpu::BufferBindingType::Storage { read_only: false },
            has_dynamic_offset: false,
            min_binding_size: None,
        },
        count: None,
    }
}

/// Binding 0: params (uniform); 1: output; 2 (and 3): inputs.
fn bind_group_layout(device: &wgpu::Device, inputs: u32) -> wgpu::BindGroupLayout {
    let mut entries = vec![wgpu::BindGroupLayoutEntry {
        binding: 0,
        visibility: wgpu::ShaderStages::COMPUTE,
        ty: wgpu::BindingType::Buffer {
            ty: wgpu::BufferBindingType::Uniform,
            has_dynamic_offset: false,
            min_binding_size: None,
        },
        count: None,
    }];
    entries.extend((1..=1 + inputs).map(storage_entry));
    device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
        label: Some(if inputs == 1 {
            "psyne kernels, one input"
        } else {
            "psyne kernels, two inputs"
        }),
        entries: &entries,
    })
}

fn shader(device: &wgpu::Device, label: &str, source: &str) -> wgpu::ShaderModule {
    device.create_shader_module(wgpu::ShaderModuleDescriptor {
        label: Some(label),
        source: wgpu::ShaderSource::Wgsl(Cow::Owned(format!("{COMMON}\n{source}"))),
    })
}

impl Kernels {
    /// Compiles every kernel for `device`. The kernels need only the
    /// default limits (256 invocations and 8 KiB of workgroup memory per
    /// workgroup, 4 storage buffers per stage).
    pub(crate) fn new(device: &wgpu::Device) -> Kernels {
        let one_input = bind_group_layout(device, 1);
        let two_inputs = bind_group_layout(device, 2);
        let layout = |bgl: &wgpu::BindGroupLayout| {
            device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
                label: Some("psyne kernels"),
                bind_group_layouts: &[Some(bgl)],
                immediate_size: 0,
            })
        };
        let (one, two) = (layout(&one_input), layout(&two_inputs));
        let pipeline = |module: &wgpu::ShaderModule, entry: &str, layout: &wgpu::PipelineLayout| {
            device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(entry),
                layout: Some(layout),
                module,
                entry_point: Some(entry),
                compilation_options: wgpu::PipelineCompilationOptions {
                    // Every kernel writes its workgroup memory before reading it.
                    zero_initialize_workgroup_memory: false,
                    ..Default::default()
                },
                cache: None,
            })
        };
        let single = |label: &str, source: &str, layout: &wgpu::PipelineLayout| {
            pipeline(&shader(device, label, source), "main", layout)
        };
        let elementwise = shader(device, "elementwise.wgsl", ELEMENTWISE);
        let limits = device.limits();
        Kernels {
            dequant_qint8: single("dequant_qint8.wgsl", DEQUANT_QINT8, &one),
            dequant_qint8_per_channel: single(
                "dequant_qint8_per_channel.wgsl",
                DEQUANT_QINT8_PER_CHANNEL,
                &one,
            ),
            dequant_q8_block: single("dequant_q8_block.wgsl", DEQUANT_Q8_BLOCK, &one),
            dequant_q4_block: single("dequant_q4_block.wgsl", DEQUANT_Q4_BLOCK, &one),
            f16_to_f32: single("f16_to_f32.wgsl", F16_TO_F32, &one),
            f32_to_f16: single("f32_to_f16.wgsl", F32_TO_F16, &one),
            scale: pipeline(&elementwise, "scale", &one),
            add: pipeline(&elementwise, "add", &two),
            relu: pipeline(&elementwise, "relu", &one),
            matmul: single("matmul.wgsl", MATMUL, &two),
            softmax: single("softmax.wgsl", SOFTMAX, &one),
            reduce: single("reduce.wgsl", REDUCE, &one),
            one_input,
            two_inputs,
            offset_alignment: u64::from(limits.min_storage_buffer_offset_alignment),
            max_binding: limits.max_storage_buffer_binding_size,
            max_groups: u64::from(limits.max_compute_workgroups_per_dimension),
        }
    }

    /// Bytes `op` writes to its output, padding included (a multiple of 4):
    /// `4 * elements` for f32 results, `4 * ceil(n / 2)` for
    /// [`Op::F32ToF16`], 4 for [`Op::Reduce`]. Saturates at `u64::MAX`.
    pub(crate) fn output_bytes(op: &Op) -> u64 {
        match *op {
            Op::DequantQInt8 { n, .. }
            | Op::DequantQInt8PerChannel { n, .. }
            | Op::DequantQ8Block { n }
            | Op::DequantQ4Block { n }
            | Op::F16ToF32 { n }
            | Op::Scale { n, .. }
            | Op::Add { n }
            | Op::Relu { n } => f32_bytes(n.into()),
            Op::F32ToF16 { n } => pad4(2 * u64::from(n)),
            Op::MatMul { m, n, .. } => f32_bytes(u64::from(m) * u64::from(n)),
            Op::SoftmaxRows { rows, cols } => f32_bytes(u64::from(rows) * u64::from(cols)),
            Op::Reduce { .. } => 4,
        }
    }

    /// Number of inputs `op` takes (2 for [`Op::Add`] and [`Op::MatMul`],
    /// else 1).
    pub(crate) fn input_count(op: &Op) -> usize {
        match op {
            Op::Add { .. } | Op::MatMul { .. } => 2,
            _ => 1,
        }
    }

    /// Validates the argument sizes against the op, then records compute
    /// pass(es) into `encoder`. Nothing is recorded for an elementwise op
    /// with `n == 0`.
    ///
    /// # Errors
    /// [`Error::Gpu`] naming the problem: a wrong number of inputs, a range
    /// too small for the op (e.g. "matmul: input A has 40 bytes, 48 needed
    /// for 3x4 f32"), misaligned or past the end of its buffer, a buffer
    /// without `STORAGE` usage, an output overlapping an input, a size
    /// beyond the device's binding or dispatch limits, invalid
    /// quantization parameters, or a matmul / softmax / reduce dimension of
    /// 0.
    pub(crate) fn record(
        &self,
        device: &wgpu::Device,
        encoder: &mut wgpu::CommandEncoder,
        op: &Op,
        inputs: &[Arg<'_>],
        output: Arg<'_>,
    ) -> Result<()> {
        let name = op.name();
        let fail = |msg: String| Err(Error::Gpu(format!("{name}: {msg}")));
        let expected = Self::input_count(op);
        if inputs.len() != expected {
            return fail(format!(
                "{expected} input(s) expected, {} given",
                inputs.len()
            ));
        }
        let needs = self.input_needs(op)?;
        let out_bytes = Self::output_bytes(op);
        self.check_arg(name, "output", &output, out_bytes, &|| output_what(op))?;
        for (arg, need) in inputs.iter().zip(&needs) {
            self.check_arg(name, need.role, arg, need.bytes, &|| need.what.clone())?;
            let same = arg.buffer == output.buffer;
            let (a0, a1) = (arg.offset, arg.offset + need.bytes);
            let (o0, o1) = (output.offset, output.offset + out_bytes);
            if same && a0 < o1 && o0 < a1 {
                return fail(format!(
                    "the output bytes {o0}..{o1} overlap {} bytes {a0}..{a1} of the same buffer",
                    need.role
                ));
            }
        }
        if out_bytes == 0 {
            return Ok(()); // n == 0: nothing to compute
        }
        let ins: Vec<Bound> = inputs
            .iter()
            .zip(&needs)
            .map(|(a, need)| Bound::new(a, need.bytes))
            .collect();
        let out = Bound::new(&output, out_bytes);
        let groups = |items: u64| items.div_ceil(WG);
        let one = |pipeline, params, items: u64| -> Result<Vec<Dispatch<'_>>> {
            Ok(vec![Dispatch {
                pipeline,
                inputs: ins.clone(),
                output: out.clone(),
                params,
                grid: self.grid(name, groups(items))?,
            }])
        };
        let dispatches = match *op {
            Op::DequantQInt8 {
                n,
                scale,
                zero_point,
            } => one(
                &self.dequant_qint8,
                [n, scale.to_bits(), zero_point as u32, 0],
                u64::from(n).div_ceil(4),
            )?,
            Op::DequantQInt8PerChannel {
                n,
                outer,
                channels,
                inner,
            } => one(
                &self.dequant_qint8_per_channel,
                [n, outer, channels, inner],
                u64::from(n).div_ceil(4),
            )?,
            Op::DequantQ8Block { n } => one(
                &self.dequant_q8_block,
                [n, 0, 0, 0],
                u64::from(n).div_ceil(4),
            )?,
            Op::DequantQ4Block { n } => one(
                &self.dequant_q4_block,
                [n, 0, 0, 0],
                u64::from(n).div_ceil(8),
            )?,
            Op::F16ToF32 { n } => one(&self.f16_to_f32, [n, 0, 0, 0], u64::from(n).div_ceil(2))?,
            Op::F32ToF16 { n } => one(&self.f32_to_f16, [n, 0, 0, 0], u64::from(n).div_ceil(2))?,
            Op::Scale { n, factor } => one(&self.scale, [n, factor.to_bits(), 0, 0], n.into())?,
            Op::Add { n } => one(&self.add, [n, 0, 0, 0], n.into())?,
            Op::Relu { n } => one(&self.relu, [n, 0, 0, 0], n.into())?,
            Op::MatMul { m, k, n } => {
                let x = u64::from(n).div_ceil(MATMUL_TILE);
                let y = u64::from(m).div_ceil(MATMUL_TILE);
                if x.max(y) > self.max_groups {
                    return fail(format!(
                        "{m}x{n} output needs a {x}x{y} grid of 64x64 tiles, beyond the device's \
                         {} workgroups per dimension",
                        self.max_groups
                    ));
                }
                vec![Dispatch {
                    pipeline: &self.matmul,
                    inputs: ins,
                    output: out,
                    params: [m, k, n, 0],
                    grid: (x as u32, y as u32),
                }]
            }
            Op::SoftmaxRows { rows, cols } => vec![Dispatch {
                pipeline: &self.softmax,
                inputs: ins,
                output: out,
                params: [rows, cols, 0, 0],
                grid: self.grid(name, rows.into())?,
            }],
            Op::Reduce { n, kind } => self.reduce_passes(device, name, n, kind, ins, out)?,
        };
        self.encode(device, encoder, name, &dispatches);
        Ok(())
    }

    /// The passes of a reduction: each folds chunks of 512 into partial
    /// results in a temporary buffer, until one pass writes the output.
    fn reduce_passes(
        &self,
        device: &wgpu::Device,
        name: &str,
        n: u32,
        kind: ReduceKind,
        ins: Vec<Bound>,
        out: Bound,
    ) -> Result<Vec<Dispatch<'_>>> {
        let kind = match kind {
            ReduceKind::Sum => 0,
            ReduceKind::Max => 1,
        };
        let mut passes = Vec::new();
        let mut count = u64::from(n);
        let mut src = ins;
        loop {
            let groups = count.div_ceil(REDUCE_CHUNK);
            let dst = if groups == 1 {
                out.clone()
            } else {
                let partials = device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("psyne reduce partials"),
                    size: 4 * groups,
                    usage: wgpu::BufferUsages::STORAGE,
                    mapped_at_creation: false,
                });
                Bound {
                    buffer: partials,
                    offset: 0,
                    size: 4 * groups,
                }
            };
            passes.push(Dispatch {
                pipeline: &self.reduce,
                inputs: src,
                output: dst.clone(),
                params: [count as u32, kind, 0, 0],
                grid: self.grid(name, groups)?,
            });
            if groups == 1 {
                return Ok(passes);
            }
            src = vec![dst];
            count = groups;
        }
    }

    /// Records `dispatches` in order, in one compute pass (wgpu puts a
    /// barrier between dispatches that touch the same buffer).
    fn encode(
        &self,
        device: &wgpu::Device,
        encoder: &mut wgpu::CommandEncoder,
        name: &str,
        dispatches: &[Dispatch<'_>],
    ) {
        let mut groups = Vec::with_capacity(dispatches.len());
        let mut params = Vec::with_capacity(dispatches.len());
        for d in dispatches {
            params.push(
                device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                    label: Some("psyne kernel params"),
                    contents: bytemuck::cast_slice(&d.params),
                    usage: wgpu::BufferUsages::UNIFORM,
                }),
            );
        }
        for (d, params) in dispatches.iter().zip(&params) {
            let mut entries = vec![
                wgpu::BindGroupEntry {
                    binding: 0,
                    resource: params.as_entire_binding(),
                },
                d.output.entry(1),
            ];
            entries.extend(d.inputs.iter().zip(2..).map(|(i, b)| i.entry(b)));
            let layout = if d.inputs.len() == 1 {
                &self.one_input
            } else {
                &self.two_inputs
            };
            groups.push(device.create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some(name),
                layout,
                entries: &entries,
            }));
        }
        let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some(name),
            timestamp_writes: None,
        });
        for (d, group) in dispatches.iter().zip(&groups) {
            pass.set_pipeline(d.pipeline);
            pass.set_bind_group(0, group, &[]);
            pass.dispatch_workgroups(d.grid.0, d.grid.1, 1);
        }
    }

    /// A grid of at least `groups` workgroups within the per-dimension
    /// limit: a row of `groups`, or several rows (the shaders skip the
    /// surplus).
    fn grid(&self, name: &str, groups: u64) -> Result<(u32, u32)> {
        let max = self.max_groups;
        let rows = groups.div_ceil(max).max(1);
        if rows > max {
            return Err(Error::Gpu(format!(
                "{name}: {groups} workgroups exceed the device's grid of {max}x{max}"
            )));
        }
        Ok((groups.div_ceil(rows) as u32, rows as u32))
    }

    /// What each input of `op` must hold; rejects invalid op parameters.
    fn input_needs(&self, op: &Op) -> Result<Vec<Need>> {
        let name = op.name();
        let fail = |msg: String| Err(Error::Gpu(format!("{name}: {msg}")));
        let f32s = |count: u64, what: String| Need::new("input", f32_bytes(count), what);
        Ok(match *op {
            Op::DequantQInt8 {
                n,
                scale,
                zero_point,
            } => {
                if !(scale.is_finite() && scale > 0.0) {
                    return fail(format!("scale {scale} is not a finite positive number"));
                }
                if !(-128..=127).contains(&zero_point) {
                    return fail(format!("zero point {zero_point} is outside [-128, 127]"));
                }
                vec![Need::new("input", pad4(n.into()), format!("{n} i8"))]
            }
            Op::DequantQInt8PerChannel {
                n,
                outer,
                channels,
                inner,
            } => {
                let product = u64::from(outer) * u64::from(channels) * u64::from(inner);
                if product != u64::from(n) {
                    return fail(format!(
                        "outer {outer} x channels {channels} x inner {inner} is {product}, not n = {n}"
                    ));
                }
                vec![Need::new(
                    "input",
                    pad4(n.into()) + 8 * u64::from(channels),
                    format!("{n} i8 and {channels} channel scales and zero points"),
                )]
            }
            Op::DequantQ8Block { n } => vec![Need::new(
                "input",
                block_bytes(n.into(), 32),
                format!("{n} Q8Block values"),
            )],
            Op::DequantQ4Block { n } => vec![Need::new(
                "input",
                block_bytes(n.into(), 16),
                format!("{n} Q4Block values"),
            )],
            Op::F16ToF32 { n } => vec![Need::new(
                "input",
                pad4(2 * u64::from(n)),
                format!("{n} f16"),
            )],
            Op::F32ToF16 { n } | Op::Scale { n, .. } | Op::Relu { n } => {
                vec![f32s(n.into(), format!("{n} f32"))]
            }
            Op::Add { n } => vec![
                Need::new("input A", f32_bytes(n.into()), format!("{n} f32")),
                Need::new("input B", f32_bytes(n.into()), format!("{n} f32")),
            ],
            Op::MatMul { m, k, n } => {
                if m == 0 || k == 0 || n == 0 {
                    return fail(format!("dimensions {m}x{k} * {k}x{n} must all be >= 1"));
                }
                vec![
                    Need::new(
                        "input A",
                        f32_bytes(u64::from(m) * u64::from(k)),
                        format!("{m}x{k} f32"),
                    ),
                    Need::new(
                        "input B",
                        f32_bytes(u64::from(k) * u64::from(n)),
                        format!("{k}x{n} f32"),
                    ),
                ]
            }
            Op::SoftmaxRows { rows, cols } => {
                if rows == 0 || cols == 0 {
                    return fail(format!("shape {rows}x{cols} must have rows and cols >= 1"));
                }
                vec![f32s(
                    u64::from(rows) * u64::from(cols),
                    format!("{rows}x{cols} f32"),
                )]
            }
            Op::Reduce { n, .. } => {
                if n == 0 {
                    return fail("cannot reduce 0 elements".to_string());
                }
                vec![f32s(n.into(), format!("{n} f32"))]
            }
        })
    }

    /// Checks one argument range against the device and the bytes it must
    /// hold.
    fn check_arg(
        &self,
        name: &str,
        role: &str,
        arg: &Arg<'_>,
        need: u64,
        what: &dyn Fn() -> String,
    ) -> Result<()> {
        let fail = |msg: String| Err(Error::Gpu(format!("{name}: {role} {msg}")));
        let len = arg.buffer.size();
        if arg.offset % self.offset_alignment != 0 {
            return fail(format!(
                "offset {} is not a multiple of the device's storage offset alignment {}",
                arg.offset, self.offset_alignment
            ));
        }
        if arg.size % 4 != 0 {
            return fail(format!("size {} is not a multiple of 4", arg.size));
        }
        if arg.offset.checked_add(arg.size).is_none_or(|end| end > len) {
            return fail(format!(
                "range of {} bytes at offset {} runs past the end of its {len}-byte buffer",
                arg.size, arg.offset
            ));
        }
        if !arg.buffer.usage().contains(wgpu::BufferUsages::STORAGE) {
            return fail("buffer was not created with STORAGE usage".to_string());
        }
        if arg.size < need {
            return fail(format!(
                "has {} bytes, {need} needed for {}",
                arg.size,
                what()
            ));
        }
        if need > self.max_binding {
            return fail(format!(
                "needs {need} bytes, beyond the device's max_storage_buffer_binding_size of {}",
                self.max_binding
            ));
        }
        Ok(())
    }
}

/// What the output of `op` holds, for error messages.
fn output_what(op: &Op) -> String {
    match *op {
        Op::F32ToF16 { n } => format!("{n} f16 padded to 4 bytes"),
        Op::MatMul { m, n, .. } => format!("{m}x{n} f32"),
        Op::SoftmaxRows { rows, cols } => format!("{rows}x{cols} f32"),
        Op::Reduce { .. } => "1 f32".to_string(),
        Op::DequantQInt8 { n, .. }
        | Op::DequantQInt8PerChannel { n, .. }
        | Op::DequantQ8Block { n }
        | Op::DequantQ4Block { n }
        | Op::F16ToF32 { n }
        | Op::Scale { n, .. }
        | Op::Add { n }
        | Op::Relu { n } => format!("{n} f32"),
    }
}

#[cfg(test)]
#[path = "kernel_tests.rs"]
mod tests;
