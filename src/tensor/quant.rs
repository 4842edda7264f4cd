//! Quantization: f32 tensors to compact integer encodings and back, plus bulk
//! f16 / bf16 conversion.
//!
//! # Formats
//!
//! All multi-byte numbers are little-endian; `n` is the element count and
//! values are in flat row-major order.
//!
//! * [`DType::QInt8`], per tensor: `n` i8 values `q`, with
//!   `x = (q - zero_point) * scale`. The scale (f32 > 0) and zero point
//!   (i32 in `[-128, 127]`) live in the tensor header ([`QuantParams::PerTensor`]).
//! * [`DType::QInt8`], per channel along axis `a`: `n` i8 values, zero padding
//!   to a multiple of 4 bytes, then `C` f32 scales and `C` i32 zero points,
//!   `C = dims[a]`; an element whose index along `a` is `c` uses entry `c`.
//!   Only the axis lives in the header ([`QuantParams::PerChannel`]).
//! * [`DType::Q8Block`]: blocks of [`QUANT_BLOCK`] = 32 values (the last one
//!   zero-padded). One f16 scale `d` per block, the scales padded with zeros
//!   to a multiple of 4 bytes, then 32 i8 values per block: `x = q * d`.
//! * [`DType::Q4Block`]: as `Q8Block` but with 16 bytes of 4-bit values per
//!   block. Element `2j` of a block is the low nibble of byte `j`, element
//!   `2j + 1` the high nibble; a nibble `u` means `x = (u - 8) * d`.
//!
//! # Accuracy
//!
//! Values are rounded to the nearest level (ties away from zero). For
//! `QInt8` with parameters chosen by [`choose_qint8_params`], the range always
//! contains 0, zero is reproduced exactly, and every element satisfies
//! `|x - dequant(x)| <= scale / 2` (up to f32 rounding of the result). For the
//! block kinds the scale of a block is `max|x| / 127` (Q8) or `max|x| / 7`
//! (Q4) rounded *up* to the next f16, so no value is clipped and
//! `|x - dequant(x)| <= d / 2` with `d` the block's stored scale. A block scale
//! must fit in f16: blocks with `max|x|` above `65504 * 127` (Q8) or
//! `65504 * 7` (Q4) are rejected with [`Error::QuantRange`].
//!
//! # NaN and infinity
//!
//! Quantizers reject any NaN or infinite input with [`Error::NonFinite`]
//! (naming the first bad element) rather than encode garbage. Decoders accept
//! any bytes without panicking: malformed parameters or tables are reported as
//! [`Error::InvalidQuantParams`], and decoded values are always finite.

use half::slice::HalfFloatSliceExt;
use half::{bf16, f16};

use super::dtype::{DType, QUANT_BLOCK};
use super::shape::{block_layout, Shape};
use crate::error::{Error, Result};

/// Which quantization to apply.
#[derive(Copy, Clone, Debug, PartialEq)]
pub enum QuantKind {
    /// Affine int8 with one scale and zero point for the whole tensor.
    QInt8,
    /// Affine int8 with one scale and zero point per index along `axis`.
    QInt8PerChannel {
        /// The channel axis (must be below the rank of the shape).
        axis: usize,
    },
    /// Blocks of 32 int8 values sharing an f16 scale.
    Q8Block,
    /// Blocks of 32 4-bit values sharing an f16 scale.
    Q4Block,
}

impl QuantKind {
    /// The dtype a tensor quantized this way is stored as.
    pub fn dtype(self) -> DType {
        match self {
            QuantKind::QInt8 | QuantKind::QInt8PerChannel { .. } => DType::QInt8,
            QuantKind::Q8Block => DType::Q8Block,
            QuantKind::Q4Block => DType::Q4Block,
        }
    }
}

/// Parameters stored in a tensor header beside the bytes.
#[derive(Copy, Clone, Debug, PartialEq)]
pub enum QuantParams {
    /// No parameters outside the bytes (the block kinds).
    None,
    /// Per-tensor [`DType::QInt8`]: `x = (q - zero_point) * scale`.
    PerTensor {
        /// Step between levels; finite and > 0.
        scale: f32,
        /// The level that stands for 0.0; in `[-128, 127]`.
        zero_point: i32,
    },
    /// Per-channel [`DType::QInt8`]: the tables are in the bytes.
    PerChannel {
        /// The channel axis.
        axis: u32,
    },
}

// ----- sizes -------------------------------------------------------------

fn overflow(shape: &Shape) -> Error {
    Error::ShapeOverflow {
        dims: shape.dims().to_vec(),
    }
}

/// (channels, elements per contiguous run of one channel) for an axis.
fn channel_geometry(shape: &Shape, axis: usize) -> Result<(u64, u64)> {
    let dims = shape.dims();
    if axis >= dims.len() {
        return Err(Error::InvalidQuantParams(format!(
            "per-channel axis {axis} is out of range for a rank-{} shape",
            dims.len()
        )));
    }
    // Saturating: if it saturates some dimension is huge and another is 0,
    // so there are no elements and `inner` is never used to walk them.
    let inner = dims[axis + 1..]
        .iter()
        .fold(1u64, |acc, &d| acc.saturating_mul(d));
    Ok((dims[axis], inner))
}

/// Number of bytes a tensor of `shape` quantized as `kind` takes.
///
/// # Errors
/// [`Error::InvalidQuantParams`] when a per-channel axis is not below the
/// rank; [`Error::ShapeOverflow`] for an invalid shape or a size beyond `u64`.
pub fn storage_size(kind: QuantKind, shape: &Shape) -> Result<u64> {
    shape.validate()?;
    let n = shape.len() as u64;
    match kind {
        QuantKind::QInt8 => Ok(n),
        QuantKind::QInt8PerChannel { axis } => qint8_storage_size(shape, Some(axis)),
        QuantKind::Q8Block | QuantKind::Q4Block => {
            Ok(block_layout(n, block_format(kind.dtype()).1).1)
        }
    }
}

/// Number of bytes a [`DType::QInt8`] tensor takes: the values alone
/// (`None`), or the values, padding and per-channel tables (`Some(axis)`).
///
/// # Errors
/// As [`storage_size`].
pub fn qint8_storage_size(shape: &Shape, per_channel_axis: Option<usize>) -> Result<u64> {
    shape.validate()?;
    let n = shape.len() as u64;
    let Some(axis) = per_channel_axis else {
        return Ok(n);
    };
    let (channels, _) = channel_geometry(shape, axis)?;
    channels
        .checked_mul(8)
        .and_then(|t| t.checked_add(n.next_multiple_of(4)))
        .ok_or_else(|| overflow(shape))
}

fn check_len(expected: u64, actual: usize, unit: &'static str) -> Result<()> {
    let actual = actual as u64;
    if expected == actual {
        return Ok(());
    }
    Err(Error::LengthMismatch {
        expected,
        actual,
        unit,
    })
}

fn check_finite(data: &[f32]) -> Result<()> {
    match data.iter().position(|x| !x.is_finite()) {
        Some(index) => Err(Error::NonFinite {
            index,
            value: data[index],
        }),
        None => Ok(()),
    }
}

// ----- QInt8 ---------------------------------------------------------------

fn check_affine(scale: f32, zero_point: i32, channel: Option<usize>) -> Result<()> {
    let problem = if !(scale.is_finite() && scale > 0.0) {
        format!("scale {scale} is not a finite positive number")
    } else if !(-128..=127).contains(&zero_point) {
        format!("zero point {zero_point} is outside [-128, 127]")
    } else {
        return Ok(());
    };
    Err(Error::InvalidQuantParams(match channel {
        Some(c) => format!("channel {c}: {problem}"),
        None => problem,
    }))
}

/// Parameters for values in `[lo, hi]`, where `lo <= 0 <= hi`.
fn params_for_range(lo: f32, hi: f32) -> (f32, i32) {
    if hi == lo {
        return (1.0, 0);
    }
    let exact = (f64::from(hi) - f64::from(lo)) / 255.0;
    let mut scale = exact as f32;
    if f64::from(scale) < exact {
        // Round up so that 255 steps always cover the range (this also
        // lifts a scale that underflowed to 0 to the smallest subnormal).
        scale = f32::from_bits(scale.to_bits() + 1);
    }
    let zp = (-128.0 - f64::from(lo) / f64::from(scale)).round();
    (scale, zp.clamp(-128.0, 127.0) as i32)
}

/// Widens `(lo, hi)` to cover `data`.
fn widen(data: &[f32], range: (f32, f32)) -> (f32, f32) {
    data.iter()
        .fold(range, |(lo, hi), &x| (lo.min(x), hi.max(x)))
}

fn quantize_affine(x: f32, scale: f32, zero_point: i32) -> i8 {
    let q = (f64::from(x) / f64::from(scale)).round() + f64::from(zero_point);
    q.clamp(-128.0, 127.0) as i8
}

fn dequantize_affine(q: i8, scale: f32, zero_point: i32) -> f32 {
    // (q - zp) is exact in f32, so this is one correctly rounded product;
    // clamp keeps huge scales from producing infinities.
    ((i32::from(q) - zero_point) as f32 * scale).clamp(-f32::MAX, f32::MAX)
}

/// Chooses per-tensor [`DType::QInt8`] parameters `(scale, zero_point)` for
/// `data`.
///
/// The range is `[min(min x, 0), max(max x, 0)]` so that 0.0 is exact;
/// `scale` is its width / 255 (rounded up to an f32), or 1.0 with zero point
/// 0 when the data is empty or all zeros.
///
/// # Errors
/// [`Error::NonFinite`] if `data` holds a NaN or an infinity.
pub fn choose_qint8_params(data: &[f32]) -> Result<(f32, i32)> {
    check_finite(data)?;
    let (lo, hi) = widen(data, (0.0, 0.0));
    Ok(params_for_range(lo, hi))
}

/// Quantizes `data` into `out` with the given affine parameters:
/// `q = clamp(round(x / scale) + zero_point, -128, 127)`.
///
/// Values outside the range the parameters can represent saturate to -128
/// or 127.
///
/// # Errors
/// [`Error::InvalidQuantParams`] for a scale that is not finite and positive
/// or a zero point outside `[-128, 127]`; [`Error::LengthMismatch`] when
/// `out` and `data` differ in length; [`Error::NonFinite`] for NaN or
/// infinite input.
pub fn quantize_qint8_with(
    data: &[f32],
    scale: f32,
    zero_point: i32,
    out: &mut [i8],
) -> Result<()> {
    check_affine(scale, zero_point, None)?;
    check_len(data.len() as u64, out.len(), "elements")?;
    check_finite(data)?;
    for (o, &x) in out.iter_mut().zip(data) {
        *o = quantize_affine(x, scale, zero_point);
    }
    Ok(())
}

/// Dequantizes affine int8 `values` into `out`:
/// `x = (q - zero_point) * scale`, saturated to the finite f32 range.
///
/// # Errors
/// [`Error::InvalidQuantParams`] for invalid parameters (as
/// [`quantize_qint8_with`]); [`Error::LengthMismatch`] when `out` and
/// `values` differ in length.
pub fn dequantize_qint8(values: &[i8], scale: f32, zero_point: i32, out: &mut [f32]) -> Result<()> {
    check_affine(scale, zero_point, None)?;
    check_len(values.len() as u64, out.len(), "elements")?;
    for (o, &q) in out.iter_mut().zip(values) {
        *o = dequantize_affine(q, scale, zero_point);
    }
    Ok(())
}

/// Affine-quantizes `data` in runs of `inner` elements, run `j` using
/// `table[j % table.len()]`.
fn quantize_runs(data: &[f32], table: &[(f32, i32)], inner: usize, out: &mut [u8]) {
    if data.is_empty() {
        return;
    }
    for (j, (src, dst)) in data.chunks(inner).zip(out.chunks_mut(inner)).enumerate() {
        let (scale, zp) = table[j % table.len()];
        for (o, &x) in dst.iter_mut().zip(src) {
            *o = quantize_affine(x, scale, zp) as u8;
        }
    }
}

fn quantize_per_channel(data: &[f32], table: &mut [(f32, i32)], inner: usize, out: &mut [u8]) {
    let n = data.len();
    let mut ranges = vec![(0.0f32, 0.0f32); table.len()];
    if n > 0 {
        for (j, run) in data.chunks(inner).enumerate() {
            let j = j % ranges.len();
            ranges[j] = widen(run, ranges[j]);
        }
    }
    for (t, &(lo, hi)) in table.iter_mut().zip(&ranges) {
        *t = params_for_range(lo, hi);
    }
    let (values, rest) = out.split_at_mut(n);
    quantize_runs(data, table, inner, values);
    let (pad, tables) = rest.split_at_mut(n.next_multiple_of(4) - n);
    pad.fill(0);
    let (scales, zps) = tables.split_at_mut(4 * table.len());
    let entries = scales.chunks_exact_mut(4).zip(zps.chunks_exact_mut(4));
    for (&(scale, zp), (s, z)) in table.iter().zip(entries) {
        s.copy_from_slice(&scale.to_le_bytes());
        z.copy_from_slice(&zp.to_le_bytes());
    }
}

// ----- blocks --------------------------------------------------------------

/// (largest |q|, bytes of packed values per block) of a block dtype.
fn block_format(dtype: DType) -> (f64, u64) {
    if dtype == DType::Q8Block {
        (127.0, QUANT_BLOCK as u64)
    } else {
        (7.0, QUANT_BLOCK as u64 / 2)
    }
}

/// The smallest f16 `d` with `d * qmax >= amax`.
fn block_scale(amax: f32, dtype: DType, block: usize) -> Result<f16> {
    let (qmax, _) = block_format(dtype);
    let target = f64::from(amax);
    let mut d = f16::from_f64(target / qmax);
    while f64::from(d) * qmax < target {
        d = f16::from_bits(d.to_bits() + 1); // the next f16 up, as d >= 0
    }
    if d.is_infinite() {
        return Err(Error::QuantRange(format!(
            "block {block} of a {dtype} tensor holds magnitude {amax}, beyond the largest supported ({})",
            f64::from(f16::MAX) * qmax
        )));
    }
    Ok(d)
}

fn quantize_blocks(data: &[f32], dtype: DType, out: &mut [u8]) -> Result<()> {
    let (qmax, block_bytes) = block_format(dtype);
    let (values_at, _) = block_layout(data.len() as u64, block_bytes);
    let (scales, values) = out.split_at_mut(values_at as usize);
    scales.fill(0);
    let blocks = data
        .chunks(QUANT_BLOCK)
        .zip(values.chunks_exact_mut(block_bytes as usize));
    for (b, (src, dst)) in blocks.enumerate() {
        let amax = src.iter().fold(0.0f32, |m, x| m.max(x.abs()));
        let d = block_scale(amax, dtype, b)?;
        scales[2 * b..2 * b + 2].copy_from_slice(&d.to_le_bytes());
        let d = f64::from(d);
        // Padding elements (past the end of the data) quantize as 0.
        let q = |j: usize| match src.get(j) {
            Some(&x) if d > 0.0 => (f64::from(x) / d).round().clamp(-qmax, qmax) as i8,
            _ => 0,
        };
        for (j, o) in dst.iter_mut().enumerate() {
            *o = if dtype == DType::Q8Block {
                q(j) as u8
            } else {
                (q(2 * j) + 8) as u8 | ((q(2 * j + 1) + 8) as u8) << 4
            };
        }
    }
    Ok(())
}

fn block_scale_at(scales: &[u8], b: usize) -> f32 {
    f16::from_le_bytes([scales[2 * b], scales[2 * b + 1]]).to_f32()
}

// ----- whole tensors -------------------------------------------------------

/// Quantizes `data` (the elements of a tensor of `shape`, row-major) into
/// `out`, which must be exactly [`storage_size`] bytes. Returns the
/// parameters to store in the tensor header.
///
/// # Errors
/// [`Error::LengthMismatch`] (unit `"elements"`) when `data.len()` is not
/// `shape.len()`, or (unit `"bytes"`) when `out` is not the storage size;
/// [`Error::InvalidQuantParams`] for a per-channel axis out of range;
/// [`Error::NonFinite`] for NaN or infinite input; [`Error::QuantRange`] for a
/// block whose magnitude needs a scale beyond f16.
///
/// # Examples
/// ```
/// use psyne::tensor::quant::{quantize_into, storage_size, QuantKind, QuantParams};
/// let shape = psyne::Shape::vector(3);
/// let mut out = vec![0u8; storage_size(QuantKind::Q8Block, &shape)? as usize];
/// let params = quantize_into(&[1.0, -2.0, 0.5], &shape, QuantKind::Q8Block, &mut out)?;
/// assert_eq!(params, QuantParams::None);
/// # Ok::<(), psyne::Error>(())
/// ```
pub fn quantize_into(
    data: &[f32],
    shape: &Shape,
    kind: QuantKind,
    out: &mut [u8],
) -> Result<QuantParams> {
    let size = storage_size(kind, shape)?;
    check_len(shape.len() as u64, data.len(), "elements")?;
    check_len(size, out.len(), "bytes")?;
    check_finite(data)?;
    match kind {
        QuantKind::QInt8 => {
            let (lo, hi) = widen(data, (0.0, 0.0));
            let (scale, zero_point) = params_for_range(lo, hi);
            quantize_runs(data, &[(scale, zero_point)], data.len(), out);
            Ok(QuantParams::PerTensor { scale, zero_point })
        }
        QuantKind::QInt8PerChannel { axis } => {
            let (channels, inner) = channel_geometry(shape, axis)?;
            // `out` holds 8 bytes per channel, so `channels` fits a usize.
            let mut table = vec![(1.0, 0); channels as usize];
            quantize_per_channel(data, &mut table, inner as usize, out);
            Ok(QuantParams::PerChannel { axis: axis as u32 })
        }
        QuantKind::Q8Block | QuantKind::Q4Block => {
            quantize_blocks(data, kind.dtype(), out).map(|()| QuantParams::None)
        }
    }
}

/// A validated encoding, ready to decode.
enum Plan<'a> {
    /// Affine int8 values in runs of `inner`, run `j` using entry
    /// `j % table.len()` of the (scale, zero point) table.
    Affine(&'a [i8], Vec<(f32, i32)>, usize),
    /// Block dtype, f16 scales, packed values.
    Blocks(DType, &'a [u8], &'a [u8]),
}

/// Checks everything about an encoding that can be wrong, without decoding.
fn plan<'a>(bytes: &'a [u8], shape: &Shape, dtype: DType, params: QuantParams) -> Result<Plan<'a>> {
    shape.validate()?;
    let n = shape.len();
    match (dtype, params) {
        (DType::QInt8, QuantParams::PerTensor { scale, zero_point }) => {
            check_affine(scale, zero_point, None)?;
            check_len(n as u64, bytes.len(), "bytes")?;
            let table = vec![(scale, zero_point)];
            Ok(Plan::Affine(bytemuck::cast_slice(bytes), table, n))
        }
        (DType::QInt8, QuantParams::PerChannel { axis }) => {
            let axis = axis as usize;
            check_len(qint8_storage_size(shape, Some(axis))?, bytes.len(), "bytes")?;
            let (channels, inner) = channel_geometry(shape, axis)?;
            // The size check bounds `channels` by bytes.len() / 8.
            let (scales, zps) = bytes[n.next_multiple_of(4)..].split_at(4 * channels as usize);
            let mut table = Vec::with_capacity(channels as usize);
            for (c, (s, z)) in scales.chunks_exact(4).zip(zps.chunks_exact(4)).enumerate() {
                let scale = f32::from_le_bytes([s[0], s[1], s[2], s[3]]);
                let zero_point = i32::from_le_bytes([z[0], z[1], z[2], z[3]]);
                check_affine(scale, zero_point, Some(c))?;
                table.push((scale, zero_point));
            }
            let values = bytemuck::cast_slice(&bytes[..n]);
            Ok(Plan::Affine(values, table, inner as usize))
        }
        (DType::Q8Block | DType::Q4Block, QuantParams::None) => {
            let (values_at, total) = block_layout(n as u64, block_format(dtype).1);
            check_len(total, bytes.len(), "bytes")?;
            let (scales, values) = bytes.split_at(values_at as usize);
            for b in 0..n.div_ceil(QUANT_BLOCK) {
                let d = block_scale_at(scales, b);
                if !d.is_finite() {
                    return Err(Error::InvalidQuantParams(format!(
                        "block {b} has a non-finite scale ({d})"
                    )));
                }
            }
            Ok(Plan::Blocks(dtype, scales, values))
        }
        (d, _) if !d.is_quantized() => Err(Error::InvalidQuantParams(format!(
            "dtype {d} is not a quantized dtype"
        ))),
        (d, p) => Err(Error::InvalidQuantParams(format!(
            "parameters {p:?} do not fit dtype {d}"
        ))),
    }
}

fn decode(plan: &Plan<'_>, out: &mut [f32]) {
    match plan {
        Plan::Affine(values, table, inner) => {
            if values.is_empty() {
                return;
            }
            let runs = values.chunks(*inner).zip(out.chunks_mut(*inner));
            for (j, (src, dst)) in runs.enumerate() {
                let (scale, zp) = table[j % table.len()];
                for (o, &q) in dst.iter_mut().zip(src) {
                    *o = dequantize_affine(q, scale, zp);
                }
            }
        }
        Plan::Blocks(dtype, scales, values) => {
            let block_bytes = block_format(*dtype).1 as usize;
            let blocks = out
                .chunks_mut(QUANT_BLOCK)
                .zip(values.chunks_exact(block_bytes));
            for (b, (dst, src)) in blocks.enumerate() {
                let d = block_scale_at(scales, b);
                for (j, o) in dst.iter_mut().enumerate() {
                    let q = if *dtype == DType::Q8Block {
                        i32::from(src[j] as i8)
                    } else {
                        i32::from((src[j / 2] >> (4 * (j % 2))) & 0xF) - 8
                    };
                    *o = q as f32 * d;
                }
            }
        }
    }
}

/// Dequantizes the bytes of a quantized tensor into `out` (f32, row-major).
///
/// Works on any input bytes without panicking: everything is checked first.
///
/// # Errors
/// [`Error::InvalidQuantParams`] when `dtype` is not quantized, `params` do
/// not fit it (`QInt8` needs `PerTensor` or `PerChannel`, the block kinds
/// need `None`), a per-tensor or per-channel scale is not finite and positive,
/// a zero point is outside `[-128, 127]`, a channel axis is out of range, or a
/// block scale is not finite; [`Error::LengthMismatch`] when `bytes` is not the
/// storage size (unit `"bytes"`) or `out` is not `shape.len()` (unit
/// `"elements"`); [`Error::ShapeOverflow`] / [`Error::RankTooLarge`] for a
/// corrupt shape.
pub fn dequantize_into(
    bytes: &[u8],
    shape: &Shape,
    dtype: DType,
    params: QuantParams,
    out: &mut [f32],
) -> Result<()> {
    let plan = plan(bytes, shape, dtype, params)?;
    check_len(shape.len() as u64, out.len(), "elements")?;
    decode(&plan, out);
    Ok(())
}

// ----- f16 / bf16 ----------------------------------------------------------

/// Converts f32 to f16 (round to nearest even), element by element.
///
/// # Errors
/// [`Error::LengthMismatch`] when the slices differ in length.
pub fn f32_to_f16(src: &[f32], dst: &mut [f16]) -> Result<()> {
    check_len(src.len() as u64, dst.len(), "elements")?;
    dst.convert_from_f32_slice(src);
    Ok(())
}

/// Converts f16 to f32 (exact), element by element.
///
/// # Errors
/// [`Error::LengthMismatch`] when the slices differ in length.
pub fn f16_to_f32(src: &[f16], dst: &mut [f32]) -> Result<()> {
    check_len(src.len() as u64, dst.len(), "elements")?;
    src.convert_to_f32_slice(dst);
    Ok(())
}

/// Converts f32 to bf16 (round to nearest even), element by element.
///
/// # Errors
/// [`Error::LengthMismatch`] when the slices differ in length.
pub fn f32_to_bf16(src: &[f32], dst: &mut [bf16]) -> Result<()> {
    check_len(src.len() as u64, dst.len(), "elements")?;
    dst.convert_from_f32_slice(src);
    Ok(())
}

/// Converts bf16 to f32 (exact), element by element.
///
/// # Errors
/// [`Error::LengthMismatch`] when the slices differ in length.
pub fn bf16_to_f32(src: &[bf16], dst: &mut [f32]) -> Result<()> {
    check_len(src.len() as u64, dst.len(), "elements")?;
    src.convert_to_f32_slice(dst);
    Ok(())
}

// ----- tensor types --------------------------------------------------------

/// A borrowed quantized tensor (what a slot holds): dtype, shape, header
/// parameters and the encoded bytes, checked to be consistent.
#[derive(Copy, Clone, Debug)]
pub struct QTensor<'a> {
    dtype: DType,
    shape: Shape,
    params: QuantParams,
    bytes: &'a [u8],
}

impl<'a> QTensor<'a> {
    /// A view of encoded bytes.
    ///
    /// # Errors
    /// Whatever [`dequantize_into`] would report about the size, the
    /// parameters or the per-channel tables.
    pub fn new(dtype: DType, shape: Shape, params: QuantParams, bytes: &'a [u8]) -> Result<Self> {
        plan(bytes, &shape, dtype, params)?;
        Ok(QTensor {
            dtype,
            shape,
            params,
            bytes,
        })
    }

    /// The quantized dtype.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// The logical shape.
    pub fn shape(&self) -> &Shape {
        &self.shape
    }

    /// The header parameters.
    pub fn params(&self) -> QuantParams {
        self.params
    }

    /// The encoded bytes.
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// Dequantizes into a new vector of `shape.len()` f32 values.
    ///
    /// # Errors
    /// As [`dequantize_into`] (cannot fail for a view built by [`QTensor::new`]).
    pub fn dequantize(&self) -> Result<Vec<f32>> {
        let mut out = vec![0.0; self.shape.len()];
        self.dequantize_into(&mut out)?;
        Ok(out)
    }

    /// Dequantizes into `out`, which must hold `shape.len()` values.
    ///
    /// # Errors
    /// [`Error::LengthMismatch`] when `out` has the wrong length.
    pub fn dequantize_into(&self, out: &mut [f32]) -> Result<()> {
        dequantize_into(self.bytes, &self.shape, self.dtype, self.params, out)
    }
}

/// An owned quantized tensor.
///
/// # Examples
/// ```
/// use psyne::tensor::{QuantKind, QuantizedTensor};
/// let data = [0.5f32, -1.0, 2.0, 0.0];
/// let q = QuantizedTensor::quantize(&data, &psyne::Shape::vector(4), QuantKind::Q4Block)?;
/// let back = q.dequantize()?;
/// assert!(back.iter().zip(&data).all(|(a, b)| (a - b).abs() <= 0.15));
/// # Ok::<(), psyne::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct QuantizedTensor {
    dtype: DType,
    shape: Shape,
    params: QuantParams,
    bytes: Vec<u8>,
}

impl QuantizedTensor {
    /// Quantizes `data` (row-major, `shape.len()` values).
    ///
    /// # Errors
    /// As [`quantize_into`].
    pub fn quantize(data: &[f32], shape: &Shape, kind: QuantKind) -> Result<Self> {
        let size = storage_size(kind, shape)?;
        let size = usize::try_from(size).map_err(|_| overflow(shape))?;
        let mut bytes = vec![0u8; size];
        let params = quantize_into(data, shape, kind, &mut bytes)?;
        Ok(QuantizedTensor {
            dtype: kind.dtype(),
            shape: *shape,
            params,
            bytes,
        })
    }

    /// A borrowed view.
    pub fn view(&self) -> QTensor<'_> {
        QTensor {
            dtype: self.dtype,
            shape: self.shape,
            params: self.params,
            bytes: &self.bytes,
        }
    }

    /// The quantized dtype.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// The logical shape.
    pub fn shape(&self) -> &Shape {
        &self.shape
    }

    /// The header parameters.
    pub fn params(&self) -> QuantParams {
        self.params
    }

    /// The encoded bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Dequantizes into a new vector of `shape.len()` f32 values.
    ///
    /// # Errors
    /// None in practice (the encoding was checked when built); the `Result`
    /// mirrors [`QTensor::dequantize`].
    pub fn dequantize(&self) -> Result<Vec<f32>> {
        self.view().dequantize()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use QuantKind::{Q4Block as Q4, Q8Block as Q8, QInt8 as QI8};
    use {DType as D, QuantParams as P};

    const KINDS: [QuantKind; 4] = [QI8, QuantKind::QInt8PerChannel { axis: 0 }, Q8, Q4];

    fn quant(data: &[f32], dims: &[usize], kind: QuantKind) -> Result<QuantizedTensor> {
        QuantizedTensor::quantize(data, &Shape::from_usize(dims).unwrap(), kind)
    }

    fn q(data: &[f32], kind: QuantKind) -> QuantizedTensor {
        quant(data, &[data.len()], kind).unwrap()
    }

    /// The stored step (scale) that applies to each element of `t`.
    fn steps(t: &QuantizedTensor) -> Vec<f64> {
        let (n, b) = (t.shape().len(), t.bytes());
        match t.params() {
            P::PerTensor { scale, .. } => vec![f64::from(scale); n],
            P::PerChannel { axis } => {
                let (c, inner) = channel_geometry(t.shape(), axis as usize).unwrap();
                let at = |i| n.next_multiple_of(4) + 4 * ((i / inner as usize) % c as usize);
                let f = |at: usize| f32::from_le_bytes(b[at..at + 4].try_into().unwrap());
                (0..n).map(|i| f64::from(f(at(i)))).collect()
            }
            P::None => (0..n)
                .map(|i| f64::from(block_scale_at(b, i / 32)))
                .collect(),
        }
    }

    /// The documented bound: `|x - x'| <= step / 2 + |x| 1e-6 (+ 1e-30 for QInt8)`.
    fn check_bound(data: &[f32], t: &QuantizedTensor) -> std::result::Result<(), String> {
        let tiny = [0.0, 1e-30][usize::from(t.dtype() == D::QInt8)];
        let back = t.dequantize().unwrap();
        for (i, ((&x, &y), s)) in data.iter().zip(&back).zip(steps(t)).enumerate() {
            let (x, err) = (f64::from(x), (f64::from(x) - f64::from(y)).abs());
            if err > s / 2.0 + x.abs() * 1e-6 + tiny {
                return Err(format!("element {i}: {x} -> {y}, step {s} ({t:?})"));
            }
        }
        Ok(())
    }

    #[test]
    fn known_bytes() {
        let t = q(&[127.0, -64.0, 3.4, 0.5], Q8); // scale 1.0; ties round away from 0
        assert_eq!(t.bytes()[..8], [0x00, 0x3C, 0, 0, 127, 0xC0, 3, 1]);
        assert!(t.bytes().len() == 36 && t.bytes()[8..].iter().all(|&b| b == 0));
        // 1/127 is not an f16: the nearest (0x2008) is below it, so round up to 0x2009.
        let t = q(&[1.0, -0.5, 0.25], Q8);
        assert_eq!(t.bytes()[..7], [0x09, 0x20, 0, 0, 127, (-63i8) as u8, 32]);
        // Q4 nibbles u = q + 8 = [15, 1, 11, 7, 9, 8 (padding)...], element 2j low.
        let t = q(&[7.0, -7.0, 3.4, -0.6, 1.0], Q4);
        assert_eq!(t.bytes()[..7], [0x00, 0x3C, 0, 0, 0x1F, 0x7B, 0x89]);
        assert!(t.bytes().len() == 20 && t.bytes()[7..].iter().all(|&b| b == 0x88));
        assert_eq!(t.dequantize().unwrap(), [7.0, -7.0, 3.0, -1.0, 1.0]);
        let mut data = [0.0f32; 33]; // two blocks; the second holds one value
        data[32] = -14.0;
        let t = q(&data, Q4);
        assert_eq!(t.bytes()[..4], [0, 0, 0x00, 0x40]); // scales 0.0 and 2.0
        assert_eq!(
            (t.bytes().len(), t.bytes()[20], t.bytes()[19]),
            (36, 0x81, 0x88)
        );
        assert_eq!(t.dequantize().unwrap(), data);
        // QInt8 over [-0.5, 255/128 - 0.5]: scale 1/128 exactly, zero point -64.
        let t = q(&[-0.5, 1.4921875, 0.0, 0.25, 0.01], QI8);
        let (scale, zero_point) = (1.0 / 128.0, -64);
        assert_eq!(t.params(), P::PerTensor { scale, zero_point });
        assert_eq!(t.bytes(), [0x80, 127, 0xC0, 0xE0, 0xC1]);
    }

    #[test]
    fn caller_given_qint8_params() {
        let mut q = [0i8; 3];
        quantize_qint8_with(&[1e6, -1e6, 0.0], 0.5, 3, &mut q).unwrap();
        assert_eq!(q, [127, -128, 3]); // out of range saturates
        let mut out = [0.0f32; 3];
        dequantize_qint8(&q, 0.5, 3, &mut out).unwrap();
        assert_eq!(out, [62.0, -65.5, 0.0]);
        for (scale, zp) in [
            (0.0, 0),
            (-1.0, 0),
            (f32::NAN, 0),
            (f32::INFINITY, 0),
            (1.0, 128),
        ] {
            let e = quantize_qint8_with(&[1.0; 3], scale, zp, &mut q);
            assert!(matches!(e, Err(Error::InvalidQuantParams(_))));
            assert!(dequantize_qint8(&q, scale, zp, &mut out).is_err());
        }
        assert!(quantize_qint8_with(&[1.0], 1.0, 0, &mut q).is_err());
        assert!(dequantize_qint8(&q, 0.5, 3, &mut out[..2]).is_err());
        assert!(f16_to_f32(&[f16::ONE], &mut out).is_err());
    }

    #[test]
    fn zeros_constants_and_empty() {
        for kind in KINDS {
            for c in [0.0f32, 5.0, -3.0, 1e-20, -1e-40] {
                let data = vec![c; 60];
                let t = quant(&data, &[3, 20], kind).unwrap();
                check_bound(&data, &t).unwrap();
                assert!(c != 0.0 || t.dequantize().unwrap() == data, "{kind:?}");
            }
            for dims in [&[0usize][..], &[3, 0], &[0, 3]] {
                let t = quant(&[], dims, kind).unwrap();
                assert_eq!(
                    t.bytes().len() as u64,
                    storage_size(kind, t.shape()).unwrap()
                );
                assert!(t.dequantize().unwrap().is_empty());
            }
        }
        assert_eq!(choose_qint8_params(&[0.0; 4]).unwrap(), (1.0, 0));
        assert_eq!(choose_qint8_params(&[]).unwrap(), (1.0, 0));
        assert_eq!(choose_qint8_params(&[5.0; 3]).unwrap().1, -128);
        assert_eq!(choose_qint8_params(&[-3.0; 3]).unwrap().1, 127);
        // An empty per-channel tensor still has one (1.0, 0) entry per channel.
        let t = quant(&[], &[3, 0], QuantKind::QInt8PerChannel { axis: 0 }).unwrap();
        assert_eq!(t.bytes()[..4], 1.0f32.to_le_bytes());
        assert_eq!(t.bytes().len(), 24);
    }

    #[test]
    fn non_finite_input_is_rejected() {
        for (index, bad) in [(3, f32::NAN), (39, f32::INFINITY), (0, f32::NEG_INFINITY)] {
            let mut data = vec![1.0f32; 40];
            data[index] = bad;
            data[index + 1..].iter_mut().for_each(|x| *x = f32::NAN); // the first one counts
            for kind in KINDS {
                let e = quant(&data, &[40], kind).unwrap_err();
                assert!(
                    matches!(e, Error::NonFinite { index: i, .. } if i == index),
                    "{e}"
                );
            }
            let e = choose_qint8_params(&data);
            assert!(matches!(e, Err(Error::NonFinite { index: i, .. }) if i == index));
        }
    }

    #[test]
    fn block_scale_beyond_f16_is_a_range_error() {
        let mut data = vec![1.0f32; 64];
        data[40] = 1e10;
        let e = quant(&data, &[64], Q8);
        assert!(
            matches!(&e, Err(Error::QuantRange(m)) if m.contains("block 1")),
            "{e:?}"
        );
        // The largest supported magnitudes are f16::MAX * 127 (Q8) and * 7 (Q4).
        for (kind, max) in [(Q8, 65504.0 * 127.0), (Q4, 65504.0 * 7.0)] {
            check_bound(&[max, -1.0], &q(&[max, -1.0], kind)).unwrap();
            let e = quant(&[max * 1.001], &[1], kind);
            assert!(matches!(e, Err(Error::QuantRange(_))));
        }
    }

    #[test]
    fn per_channel_keeps_each_channel_accurate() {
        let mag = |c: usize| 10f32.powi(2 * c as i32 - 3); // 1e-3, 0.1, 10, 1000
        let cases: [(&[usize], usize); 3] = [(&[4, 7], 0), (&[5, 4], 1), (&[3, 4, 5], 1)];
        for (dims, axis) in cases {
            let inner: usize = dims[axis + 1..].iter().product();
            let n: usize = dims.iter().product();
            let data: Vec<f32> = (0..n)
                .map(|i| mag((i / inner) % dims[axis]) * ((i * 37 % 19) as f32 - 9.0) / 9.0)
                .collect();
            let t = quant(&data, dims, QuantKind::QInt8PerChannel { axis }).unwrap();
            assert_eq!(t.params(), P::PerChannel { axis: axis as u32 });
            assert_eq!(t.bytes().len(), n.next_multiple_of(4) + 8 * dims[axis]);
            check_bound(&data, &t).unwrap();
            let s = steps(&t); // channel 0's step is far finer than channel 3's
            assert!(s[0] < 1e-4 && s.iter().any(|&x| x > 1.0), "{s:?}");
        }
        let e = quant(&[1.0; 4], &[4], QuantKind::QInt8PerChannel { axis: 1 });
        assert!(matches!(e, Err(Error::InvalidQuantParams(_))));
    }

    #[test]
    fn dequantize_rejects_bad_input() {
        let data = [1.0, -2.0, 3.0, 0.1, 0.2, -0.3];
        let kind = QuantKind::QInt8PerChannel { axis: 1 };
        let [pc, pt, q8] = [kind, QI8, Q8].map(|k| quant(&data, &[2, 3], k).unwrap());
        let shape = *pt.shape();
        let mut out = [0.0f32; 6];
        let mut bad = |bytes: &[u8], dtype: DType, params: QuantParams| {
            let e = dequantize_into(bytes, &shape, dtype, params, &mut out);
            let ok = matches!(e, Err(Error::InvalidQuantParams(_)));
            assert!(ok, "{params:?}: {e:?}");
            assert!(QTensor::new(dtype, shape, params, bytes).is_err());
        };
        let per_tensor = |scale, zero_point| P::PerTensor { scale, zero_point };
        bad(pt.bytes(), D::QInt8, P::None);
        bad(q8.bytes(), D::Q8Block, pt.params());
        bad(q8.bytes(), D::Q4Block, P::PerChannel { axis: 0 });
        bad(pt.bytes(), D::F32, P::None);
        bad(pt.bytes(), D::I8, pt.params());
        bad(pc.bytes(), D::QInt8, P::PerChannel { axis: 2 });
        bad(pt.bytes(), D::QInt8, per_tensor(0.0, 0));
        bad(pt.bytes(), D::QInt8, per_tensor(f32::INFINITY, 0));
        bad(pt.bytes(), D::QInt8, per_tensor(1.0, -129));
        // Corrupt per-channel tables: 6 values + 2 padding, scales at 8.., zero points at 20..
        let faults = [
            (12, 0f32.to_le_bytes()),
            (8, f32::NAN.to_le_bytes()),
            (16, (-1f32).to_le_bytes()),
            (24, 500i32.to_le_bytes()),
        ];
        for (at, patch) in faults {
            let mut bytes = pc.bytes().to_vec();
            bytes[at..at + 4].copy_from_slice(&patch);
            bad(&bytes, D::QInt8, pc.params());
        }
        let mut bytes = q8.bytes().to_vec();
        bytes[..2].copy_from_slice(&f16::NAN.to_le_bytes());
        bad(&bytes, D::Q8Block, P::None);
        // Wrong sizes.
        let unit = |e: Result<()>| match e {
            Err(Error::LengthMismatch { unit, .. }) => unit,
            _ => "no length error",
        };
        let (pcb, pcp) = (pc.bytes(), pc.params());
        let e = dequantize_into(&pcb[1..], &shape, D::QInt8, pcp, &mut out);
        assert_eq!(unit(e), "bytes");
        let e = dequantize_into(pcb, &shape, D::QInt8, pcp, &mut out[1..]);
        assert_eq!(unit(e), "elements");
        // The good ones decode through a view too.
        for t in [&pc, &pt, &q8] {
            let v = QTensor::new(t.dtype(), shape, t.params(), t.bytes()).unwrap();
            assert_eq!(v.dequantize().unwrap(), t.dequantize().unwrap());
            check_bound(&data, t).unwrap();
        }
    }

    fn value() -> impl Strategy<Value = f32> {
        prop_oneof![-1e4f32..1e4, -1e-3f32..1e-3, Just(0.0), -1e-30f32..1e-30]
    }

    fn params() -> impl Strategy<Value = QuantParams> {
        let zp = prop_oneof![-130i32..130, any::<i32>()];
        let pt = (prop_oneof![any::<f32>(), 1e-3f32..1e3], zp);
        prop_oneof![
            Just(P::None),
            pt.prop_map(|(scale, zero_point)| P::PerTensor { scale, zero_point }),
            (0u32..4).prop_map(|axis| P::PerChannel { axis }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn round_trip_within_bounds(
            data in prop::collection::vec(value(), 0..300),
            kind in prop::sample::select(&KINDS[..]),
            scale in prop_oneof![Just(1.0f32), Just(1e-6), Just(10.0)],
        ) {
            let data: Vec<f32> = data.iter().map(|x| x * scale).collect();
            let t = q(&data, kind);
            prop_assert_eq!(t.bytes().len() as u64, storage_size(kind, t.shape()).unwrap());
            check_bound(&data, &t).map_err(TestCaseError::fail)?;
        }

        #[test]
        fn per_channel_round_trip_within_bounds(
            (dims, axis, data) in prop::collection::vec(0usize..7, 1..=3).prop_flat_map(|dims| {
                let n = dims.iter().product::<usize>();
                (Just(dims.clone()), 0..dims.len(), prop::collection::vec(value(), n))
            }),
        ) {
            let t = quant(&data, &dims, QuantKind::QInt8PerChannel { axis }).unwrap();
            check_bound(&data, &t).map_err(TestCaseError::fail)?;
        }

        #[test]
        fn half_conversions_match_scalar(src in prop::collection::vec(any::<f32>(), 0..100)) {
            let same = |a: f32, b: f32| a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan());
            let (mut h, mut b) = (vec![f16::ZERO; src.len()], vec![bf16::ZERO; src.len()]);
            let (mut hf, mut bf) = (vec![0.0f32; src.len()], vec![0.0f32; src.len()]);
            f32_to_f16(&src, &mut h).unwrap();
            f32_to_bf16(&src, &mut b).unwrap();
            f16_to_f32(&h, &mut hf).unwrap();
            bf16_to_f32(&b, &mut bf).unwrap();
            for (i, &x) in src.iter().enumerate() {
                prop_assert!(same(h[i].to_f32(), f16::from_f32(x).to_f32()));
                prop_assert!(same(b[i].to_f32(), bf16::from_f32(x).to_f32()));
                prop_assert!(same(hf[i], h[i].to_f32()) && same(bf[i], b[i].to_f32()));
            }
            prop_assert!(f32_to_bf16(&src, &mut vec![bf16::ZERO; src.len() + 1]).is_err());
        }

        #[test]
        fn dequantize_never_panics(
            dims in prop::collection::vec(0u64..6, 0..4),
            dtype in prop_oneof![
                prop::sample::select(&[D::QInt8, D::Q8Block, D::Q4Block][..]),
                prop::sample::select(&D::ALL[..]),
            ],
            mut params in params(),
            mut bytes in prop::collection::vec(any::<u8>(), 0..400),
            fit in any::<bool>(),
        ) {
            let shape = Shape::new(&dims).unwrap();
            let size = match (dtype, params) {
                (D::QInt8, P::PerChannel { axis }) => {
                    qint8_storage_size(&shape, Some(axis as usize)).ok()
                }
                (d, _) => Some(shape.byte_size(d)),
            };
            if let (true, Some(size)) = (fit, size) {
                bytes.resize(size as usize, 0x3F); // 0x3F3F is a plausible f16 scale
                if matches!(dtype, D::Q8Block | D::Q4Block) {
                    params = P::None;
                }
            }
            let mut out = vec![0.0f32; shape.len()];
            let r = dequantize_into(&bytes, &shape, dtype, params, &mut out);
            prop_assert_eq!(r.is_ok(), QTensor::new(dtype, shape, params, &bytes).is_ok());
            prop_assert!(r.is_err() || out.iter().all(|x| x.is_finite()));
        }
    }
}
