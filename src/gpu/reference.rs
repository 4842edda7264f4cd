//! CPU references for the GPU kernels, computed in f64 where arithmetic is
//! involved, plus the error bounds each comparison uses, and the random
//! test data they are checked on. The byte formats follow
//! `src/tensor/quant.rs` (`dequantize_into`) and `docs/layout.md`.
//!
//! Test-only and self-contained (only `half` and std): the kernel unit tests
//! (`kernel_tests.rs`) include it, and so does `tests/gpu.rs` with
//! `#[path = "../src/gpu/reference.rs"] mod reference;`.

#![allow(dead_code)] // not every includer uses every function

use half::f16;

/// Unit roundoff of f32 (half an ulp of 1.0).
pub const U: f64 = 1.0 / (1u64 << 24) as f64;
/// One ulp of 1.0 in f32.
pub const ULP: f64 = 2.0 * U;

/// `x` rounded up to a multiple of 4.
pub fn pad4(x: usize) -> usize {
    x.next_multiple_of(4)
}

// ----- seeds and a deterministic PRNG ----------------------------------

/// The seed of this run's random test data: `PSYNE_TEST_SEED` (decimal,
/// or hexadecimal with `0x`) when set, else taken from the clock, so every
/// run checks fresh inputs. Read once per process; tests print it in their
/// failure messages so a failing run can be repeated.
///
/// # Panics
/// If `PSYNE_TEST_SEED` is set but is not a number.
pub fn test_seed() -> u64 {
    static SEED: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *SEED.get_or_init(|| match std::env::var("PSYNE_TEST_SEED") {
        Ok(text) => {
            let text = text.trim();
            let parsed = match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
                Some(hex) => u64::from_str_radix(hex, 16),
                None => text.parse(),
            };
            parsed.unwrap_or_else(|e| panic!("PSYNE_TEST_SEED={text:?} is not a u64: {e}"))
        }
        Err(_) => {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            // Nanoseconds, mixed with the process id so two processes
            // started together differ.
            (now.as_nanos() as u64) ^ u64::from(std::process::id()).rotate_left(40)
        }
    })
}

/// SplitMix64: small, deterministic, good enough for test data.
pub struct Rng(u64);

impl Rng {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// Generator number `stream` of this run: [`test_seed`] mixed with
    /// `stream`, so tests that run in parallel draw different data and each
    /// is reproducible on its own.
    pub fn for_test(stream: u64) -> Rng {
        let mut mix = Rng(test_seed() ^ stream.wrapping_mul(0xD1B5_4A32_D192_ED03));
        Rng(mix.next_u64())
    }

    /// 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// 32 random bits.
    pub fn next_u32(&mut self) -> u32 {
        (self.next_u64() >> 32) as u32
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform f32 in `[lo, hi)`.
    pub fn range(&mut self, lo: f32, hi: f32) -> f32 {
        (f64::from(lo) + (f64::from(hi) - f64::from(lo)) * self.unit()) as f32
    }

    /// `n` uniform f32 in `[lo, hi)`.
    pub fn f32s(&mut self, n: usize, lo: f32, hi: f32) -> Vec<f32> {
        (0..n).map(|_| self.range(lo, hi)).collect()
    }

    /// `n` random bytes.
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next_u32() as u8).collect()
    }
}

// ----- quantized formats -------------------------------------------------

/// Per-tensor QInt8: `x = (q - zero_point) * scale`, one f32 product,
/// saturated to the finite range (quant.rs `dequantize_affine`).
pub fn dequant_qint8(values: &[u8], scale: f32, zero_point: i32) -> Vec<f32> {
    values
        .iter()
        .map(|&q| affine(q as i8, scale, zero_point))
        .collect()
}

fn affine(q: i8, scale: f32, zero_point: i32) -> f32 {
    ((i32::from(q) - zero_point) as f32 * scale).clamp(-f32::MAX, f32::MAX)
}

/// Per-channel QInt8 from its bytes: `n` i8, zero padding to 4 bytes,
/// `channels` f32 scales, `channels` i32 zero points; element `i` uses
/// channel `(i / inner) % channels`. An entry whose scale is not finite and
/// positive decodes as 0 (what the GPU kernel does; the CPU decoder rejects
/// such tables).
pub fn dequant_qint8_per_channel(
    bytes: &[u8],
    n: usize,
    channels: usize,
    inner: usize,
) -> Vec<f32> {
    let word = |at: usize| [bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]];
    let tables = pad4(n);
    (0..n)
        .map(|i| {
            let c = (i / inner) % channels;
            let scale = f32::from_le_bytes(word(tables + 4 * c));
            let zp = i32::from_le_bytes(word(tables + 4 * (channels + c)));
            let scale = if scale.is_finite() && scale > 0.0 {
                scale
            } else {
                0.0
            };
            affine(bytes[i] as i8, scale, zp)
        })
        .collect()
}

/// Bytes of a Q8Block (`q4 == false`) or Q4Block encoding of `n` values.
pub fn block_bytes(n: usize, q4: bool) -> usize {
    let blocks = n.div_ceil(32);
    pad4(2 * blocks) + blocks * if q4 { 16 } else { 32 }
}

/// Q8Block / Q4Block from bytes (quant.rs `decode`, `Plan::Blocks`): f16
/// scale `d` per block of 32, padded to 4 bytes, then the packed values;
/// Q8 `x = q * d`, Q4 `x = (u - 8) * d` with element `2j` in the low nibble
/// of byte `j`. A non-finite scale decodes as 0 (the GPU kernel's choice).
pub fn dequant_blocks(bytes: &[u8], n: usize, q4: bool) -> Vec<f32> {
    let blocks = n.div_ceil(32);
    let values = pad4(2 * blocks);
    let per_block = if q4 { 16 } else { 32 };
    (0..n)
        .map(|i| {
            let (b, j) = (i / 32, i % 32);
            let d = f16::from_le_bytes([bytes[2 * b], bytes[2 * b + 1]]).to_f32();
            let d = if d.is_finite() { d } else { 0.0 };
            let block = &bytes[values + per_block * b..];
            let q = if q4 {
                i32::from((block[j / 2] >> (4 * (j % 2))) & 0xF) - 8
            } else {
                i32::from(block[j] as i8)
            };
            q as f32 * d
        })
        .collect()
}

/// A Q8Block / Q4Block encoding with random values and random finite
/// scales (normal and subnormal f16, and 0).
pub fn random_blocks(rng: &mut Rng, n: usize, q4: bool) -> Vec<u8> {
    let blocks = n.div_ceil(32);
    let mut bytes = vec![0u8; block_bytes(n, q4)];
    for b in 0..blocks {
        let d = match rng.next_u32() % 8 {
            0 => f16::from_bits(rng.next_u32() as u16 & 0x03FF), // subnormal or 0
            1 => f16::ZERO,
            _ => f16::from_f32(rng.range(1e-3, 10.0)),
        };
        bytes[2 * b..2 * b + 2].copy_from_slice(&d.to_le_bytes());
    }
    let values = pad4(2 * blocks);
    let used = n.div_ceil(if q4 { 2 } else { 1 });
    for byte in &mut bytes[values..values + used] {
        *byte = rng.next_u32() as u8;
    }
    bytes
}

// ----- conversions and elementwise --------------------------------------

/// f16 (packed little-endian, padded) to f32.
pub fn f16_to_f32(bytes: &[u8], n: usize) -> Vec<f32> {
    (0..n)
        .map(|i| f16::from_le_bytes([bytes[2 * i], bytes[2 * i + 1]]).to_f32())
        .collect()
}

/// f32 to f16 bytes (round to nearest even), zero padded to 4 bytes.
pub fn f32_to_f16(x: &[f32]) -> Vec<u8> {
    let mut out: Vec<u8> = x
        .iter()
        .flat_map(|&v| f16::from_f32(v).to_le_bytes())
        .collect();
    out.resize(pad4(out.len()), 0);
    out
}

/// `x * factor`, computed in f64 and rounded once (equal to the correctly
/// rounded f32 product).
pub fn scale(x: &[f32], factor: f32) -> Vec<f32> {
    x.iter()
        .map(|&v| (f64::from(v) * f64::from(factor)) as f32)
        .collect()
}

/// `a + b`, computed in f64 and rounded once (equal to the correctly
/// rounded f32 sum).
pub fn add(a: &[f32], b: &[f32]) -> Vec<f32> {
    a.iter()
        .zip(b)
        .map(|(&x, &y)| (f64::from(x) + f64::from(y)) as f32)
        .collect()
}

/// `x` if `x > 0`, else 0.
pub fn relu(x: &[f32]) -> Vec<f32> {
    x.iter().map(|&v| if v > 0.0 { v } else { 0.0 }).collect()
}

// ----- matmul, softmax, reductions --------------------------------------

/// Row-major `C = A * B` in f64, and for each element of C the bound on the
/// error of any f32 evaluation that accumulates its k products one by one
/// (with or without fused multiply-add): `gamma(k + 1) * sum |a| |b|`,
/// `gamma(j) = j u / (1 - j u)` (Higham, Accuracy and Stability of
/// Numerical Algorithms, 3.1), the `+ 1` covering the final store.
pub fn matmul(a: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> (Vec<f64>, Vec<f64>) {
    let mut c = vec![0.0; m * n];
    let mut bound = vec![0.0; m * n];
    let g = gamma(k + 1);
    for i in 0..m {
        for j in 0..n {
            let (mut s, mut abs) = (0.0f64, 0.0f64);
            for p in 0..k {
                let t = f64::from(a[i * k + p]) * f64::from(b[p * n + j]);
                s += t;
                abs += t.abs();
            }
            c[i * n + j] = s;
            bound[i * n + j] = g * abs;
        }
    }
    (c, bound)
}

/// `j u / (1 - j u)`.
pub fn gamma(j: usize) -> f64 {
    let ju = j as f64 * U;
    ju / (1.0 - ju)
}

/// Row-wise softmax in f64, and a per-element error bound for an f32
/// evaluation that follows the kernel (max, then sum of exp(x - max) by
/// per-invocation strided sums and a 256-wide tree, then one division),
/// using the precision Vulkan requires of SPIR-V: `exp(x)` within
/// `3 + 2|x|` ulp, division within 2.5 ulp, other arithmetic correctly
/// rounded. For element i with `d_i = x_i - max`:
///   exp argument rounding and exp: `r_i = (3 + 2|d_i|) ulp + |d_i| u`,
///   the sum: `sum_j p_j r_j + gamma(depth)` with `p_j` the exact softmax,
///   `depth = ceil(cols / 256) + 8`,
///   the division: 2.5 ulp,
/// so `|y_i - p_i| <= p_i (r_i + sum_j p_j r_j + gamma(depth) + 2.5 ulp)`
/// to first order, plus 2^-125 for results in the f32 subnormal range a
/// device may flush to zero. The bound is taken 1% wider for the
/// second-order terms.
pub fn softmax(x: &[f32], rows: usize, cols: usize) -> (Vec<f64>, Vec<f64>) {
    let mut y = vec![0.0; rows * cols];
    let mut bound = vec![0.0; rows * cols];
    let depth = cols.div_ceil(256) + 8;
    for r in 0..rows {
        let row = &x[r * cols..(r + 1) * cols];
        let max = row
            .iter()
            .fold(f64::NEG_INFINITY, |m, &v| m.max(f64::from(v)));
        let e: Vec<f64> = row.iter().map(|&v| (f64::from(v) - max).exp()).collect();
        let s: f64 = e.iter().sum();
        let rel = |v: f32| {
            let d = (f64::from(v) - max).abs();
            (3.0 + 2.0 * d) * ULP + d * U
        };
        let sum_err: f64 = row.iter().zip(&e).map(|(&v, &ej)| ej / s * rel(v)).sum();
        for (j, (&v, &ej)) in row.iter().zip(&e).enumerate() {
            let p = ej / s;
            y[r * cols + j] = p;
            let relb = rel(v) + sum_err + gamma(depth) + 2.5 * ULP;
            bound[r * cols + j] = 1.01 * p * relb + 2f64.powi(-125);
        }
    }
    (y, bound)
}

/// Number of passes the GPU reduction makes over `n` elements (each pass
/// folds chunks of 512).
pub fn reduce_passes(n: usize) -> usize {
    let mut passes = 1;
    let mut count = n.div_ceil(512);
    while count > 1 {
        passes += 1;
        count = count.div_ceil(512);
    }
    passes
}

/// The sum in f64 and the error bound of the GPU's tree: every element
/// passes through at most 9 additions per pass (one pairwise add, then 8
/// tree levels), so `|s - sum| <= gamma(9 * passes) * sum |x|`.
pub fn sum(x: &[f32]) -> (f64, f64) {
    let s: f64 = x.iter().map(|&v| f64::from(v)).sum();
    let abs: f64 = x.iter().map(|&v| f64::from(v).abs()).sum();
    (s, gamma(9 * reduce_passes(x.len())) * abs)
}

/// The largest element (exact).
pub fn max(x: &[f32]) -> f32 {
    x.iter().copied().fold(f32::NEG_INFINITY, f32::max)
}
