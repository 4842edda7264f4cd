//! Every kernel on a real adapter (lavapipe when there is no GPU), against
//! the CPU references in `reference.rs`.
//!
//! Each run puts the inputs and the output in one buffer at 256-byte
//! aligned offsets (as ranges of an imported slab would be), fills the
//! output range and everything around it with poison, runs the op, reads the
//! whole buffer back and checks that only the output bytes changed. A few
//! tests also run with one buffer per argument.
//!
//! The device is opened once per test binary, Vulkan first. Without an
//! adapter each test prints `skipped: no GPU adapter (...)` and passes,
//! unless `PSYNE_REQUIRE_GPU=1` (as in CI), which makes it fail. Inputs are
//! random and fresh each run; `PSYNE_TEST_SEED` repeats a run, and every
//! failure message names the seed.

#[path = "reference.rs"]
mod reference;

use std::sync::OnceLock;

use half::f16;

use self::reference::{self as cpu, pad4, test_seed, Rng};
use super::{Arg, Kernels, Op, ReduceKind};
use crate::error::Error;
use crate::gpu::block_on;

// ----- device and harness ------------------------------------------------

/// The device every test shares.
struct Gpu {
    adapter: wgpu::Adapter,
    device: wgpu::Device,
    queue: wgpu::Queue,
    kernels: Kernels,
}

/// The device, or why there is none; opened on first use.
static GPU: OnceLock<Result<Gpu, String>> = OnceLock::new();

/// The first adapter of `backends`, with a device asking for the adapter's
/// full limits.
fn open_on(backends: wgpu::Backends) -> Result<Gpu, String> {
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
    desc.backends = backends;
    let instance = wgpu::Instance::new(desc);
    let adapter = block_on(instance.request_adapter(&wgpu::RequestAdapterOptions::default()))
        .map_err(|e| format!("{backends:?}: {e}"))?;
    let info = adapter.get_info();
    let (device, queue) = block_on(adapter.request_device(&wgpu::DeviceDescriptor {
        label: Some("kernel tests"),
        required_features: wgpu::Features::empty(),
        required_limits: adapter.limits(),
        experimental_features: wgpu::ExperimentalFeatures::disabled(),
        memory_hints: wgpu::MemoryHints::Performance,
        trace: wgpu::Trace::Off,
    }))
    .map_err(|e| format!("{} ({:?}): request_device: {e}", info.name, info.backend))?;
    let kernels = Kernels::new(&device);
    Ok(Gpu {
        adapter,
        device,
        queue,
        kernels,
    })
}

/// Vulkan first, then any other backend.
fn open() -> Result<Gpu, String> {
    let vulkan = match open_on(wgpu::Backends::VULKAN) {
        Ok(gpu) => return Ok(gpu),
        Err(e) => e,
    };
    open_on(
        (wgpu::Backends::PRIMARY | wgpu::Backends::SECONDARY).difference(wgpu::Backends::VULKAN),
    )
    .map_err(|other| format!("{vulkan}; {other}"))
}

/// The shared device, or `None` (after printing why) when the test should
/// be skipped.
///
/// # Panics
/// Without an adapter when `PSYNE_REQUIRE_GPU=1`.
fn gpu() -> Option<&'static Gpu> {
    match GPU.get_or_init(open) {
        Ok(gpu) => {
            eprintln!(
                "adapter: {:?}; random inputs from PSYNE_TEST_SEED={}",
                gpu.adapter.get_info(),
                test_seed()
            );
            Some(gpu)
        }
        Err(reason) if std::env::var("PSYNE_REQUIRE_GPU").is_ok_and(|v| v == "1") => {
            panic!("PSYNE_REQUIRE_GPU=1 but no GPU adapter could be opened: {reason}")
        }
        Err(reason) => {
            eprintln!("skipped: no GPU adapter ({reason})");
            None
        }
    }
}

/// Starts a test: the shared device, or return (skipped) without one.
macro_rules! gpu_or_skip {
    () => {
        match gpu() {
            Some(gpu) => gpu,
            None => return,
        }
    };
}

/// The shared device, for the harness (every test calls `gpu_or_skip!`
/// before it gets here).
fn dev() -> &'static Gpu {
    match GPU.get() {
        Some(Ok(gpu)) => gpu,
        _ => unreachable!("the test did not open the device with gpu_or_skip!"),
    }
}

/// What a failure message says to repeat the run.
fn seed() -> String {
    format!("rerun with PSYNE_TEST_SEED={}", test_seed())
}

/// Poison for the output range: every f32 a NaN, every f16 half a NaN.
const POISON: u8 = 0xFF;
/// What surrounds the arguments in the shared buffer.
const GUARD: u8 = 0xA5;
/// Extra bytes given to the output range beyond what the op needs (the
/// kernel must leave them alone), and after it.
const SLACK: usize = 256;

/// Where the arguments live.
#[derive(Copy, Clone, PartialEq)]
enum Layout {
    /// One buffer, each argument at a 256-aligned offset.
    Shared,
    /// One buffer per argument.
    Separate,
}

fn storage_buffer(len: usize, init: &[u8]) -> wgpu::Buffer {
    use wgpu::util::DeviceExt;
    let mut contents = init.to_vec();
    contents.resize(len, GUARD);
    dev()
        .device
        .create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("test storage"),
            contents: &contents,
            usage: wgpu::BufferUsages::STORAGE
                | wgpu::BufferUsages::COPY_SRC
                | wgpu::BufferUsages::COPY_DST,
        })
}

fn read_back(buffer: &wgpu::Buffer) -> Vec<u8> {
    let g = dev();
    let staging = g.device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("test readback"),
        size: buffer.size(),
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    let mut encoder = g
        .device
        .create_command_encoder(&wgpu::CommandEncoderDescriptor::default());
    encoder.copy_buffer_to_buffer(buffer, 0, &staging, 0, buffer.size());
    g.queue.submit([encoder.finish()]);
    let (tx, rx) = std::sync::mpsc::channel();
    staging.map_async(wgpu::MapMode::Read, .., move |r| tx.send(r).unwrap());
    g.device
        .poll(wgpu::PollType::wait_indefinitely())
        .expect("poll");
    rx.recv().unwrap().expect("map_async");
    let bytes = staging.get_mapped_range(..).expect("mapped range").to_vec();
    staging.unmap();
    bytes
}

/// Runs `op` on `inputs` (each already padded to a multiple of 4 bytes),
/// checks that nothing outside the output's `output_bytes` changed, and
/// returns the output bytes. A validation error from wgpu fails the test.
fn run_in(layout: Layout, op: &Op, inputs: &[&[u8]]) -> crate::error::Result<Vec<u8>> {
    let g = dev();
    let out_bytes = Kernels::output_bytes(op) as usize;
    let out_range = pad4(out_bytes) + SLACK;
    let align = 256usize;
    let scope = g.device.push_error_scope(wgpu::ErrorFilter::Validation);
    // (buffer index, offset, length) of every argument; output last.
    let mut places = Vec::new();
    let buffers: Vec<wgpu::Buffer> = match layout {
        Layout::Shared => {
            let mut image = Vec::new();
            for input in inputs {
                places.push((0, image.len(), input.len()));
                image.extend_from_slice(input);
                image.resize((image.len() + 64).next_multiple_of(align), GUARD);
            }
            places.push((0, image.len(), out_range));
            image.resize(image.len() + out_range, POISON);
            let total = image.len() + SLACK;
            vec![storage_buffer(total, &image)]
        }
        Layout::Separate => {
            let mut buffers = Vec::new();
            for (i, input) in inputs.iter().enumerate() {
                places.push((i, 0, input.len()));
                buffers.push(storage_buffer(input.len().max(4) + SLACK, input));
            }
            places.push((inputs.len(), 0, out_range));
            buffers.push(storage_buffer(out_range + SLACK, &vec![POISON; out_range]));
            buffers
        }
    };
    let before: Vec<Vec<u8>> = buffers.iter().map(read_back).collect();
    let arg = |&(b, offset, size): &(usize, usize, usize)| Arg {
        buffer: &buffers[b],
        offset: offset as u64,
        size: size as u64,
    };
    let args: Vec<Arg<'_>> = places.iter().map(arg).collect();
    let (output, ins) = args.split_last().unwrap();
    let mut encoder = g
        .device
        .create_command_encoder(&wgpu::CommandEncoderDescriptor::default());
    g.kernels
        .record(&g.device, &mut encoder, op, ins, *output)?;
    g.queue.submit([encoder.finish()]);
    if let Some(e) = block_on(scope.pop()) {
        panic!("wgpu validation error for {op:?}: {e} ({})", seed());
    }
    let after: Vec<Vec<u8>> = buffers.iter().map(read_back).collect();
    let (ob, oo, _) = places[places.len() - 1];
    for (b, (was, now)) in before.iter().zip(&after).enumerate() {
        // Compare everything but the output's bytes, as whole slices (fast
        // in a debug build); find the first changed byte only on failure.
        let skip = if b == ob { oo..oo + out_bytes } else { 0..0 };
        let unchanged = was.len() == now.len()
            && was[..skip.start] == now[..skip.start]
            && was[skip.end..] == now[skip.end..];
        if !unchanged {
            let (i, (x, y)) = was
                .iter()
                .zip(now)
                .enumerate()
                .find(|(i, (x, y))| !skip.contains(i) && x != y)
                .expect("a changed byte");
            panic!(
                "{op:?}: byte {i} of buffer {b} changed from {x:#x} to {y:#x} outside the output \
                 (output at {oo}, {out_bytes} bytes; {})",
                seed()
            );
        }
    }
    Ok(after[ob][oo..oo + out_bytes].to_vec())
}

fn run(op: &Op, inputs: &[&[u8]]) -> Vec<u8> {
    run_in(Layout::Shared, op, inputs).unwrap_or_else(|e| panic!("{op:?}: {e} ({})", seed()))
}

fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

fn bytes_of(x: &[f32]) -> Vec<u8> {
    x.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// Bit-for-bit equality (any NaN matches any NaN).
fn assert_same(what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let same = g.to_bits() == w.to_bits() || (g.is_nan() && w.is_nan());
        assert!(
            same,
            "{what}: element {i}: gpu {g:e} ({:#x}), cpu {w:e} ({:#x}) ({})",
            g.to_bits(),
            w.to_bits(),
            seed()
        );
    }
}

/// `|got - want| <= bound` element by element; returns the worst ratio
/// error / bound for the record.
fn assert_within(what: &str, got: &[f32], want: &[f64], bound: &[f64]) -> f64 {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let mut worst = 0.0f64;
    for (i, ((&g, &w), &b)) in got.iter().zip(want).zip(bound).enumerate() {
        let err = (f64::from(g) - w).abs();
        assert!(
            err <= b,
            "{what}: element {i}: gpu {g:e}, exact {w:e}, error {err:e} > bound {b:e} ({})",
            seed()
        );
        if b > 0.0 {
            worst = worst.max(err / b);
        }
    }
    worst
}

/// Element counts that straddle the workgroup size (256), the 4- and
/// 8-element words, the 32-value blocks and the 512-element reduce chunks.
const SIZES: [u32; 20] = [
    1, 2, 3, 4, 5, 7, 8, 9, 31, 32, 33, 255, 256, 257, 1000, 1023, 1025, 4099, 65537, 300_001,
];

// ----- dequantization ----------------------------------------------------

#[test]
fn dequant_qint8() {
    gpu_or_skip!();
    let mut rng = Rng::for_test(1);
    for n in SIZES {
        let values = rng.bytes(n as usize);
        let mut input = values.clone();
        input.resize(pad4(input.len()), 0);
        for (scale, zero_point) in [(0.0125f32, -3), (1.0, 0), (3.7e-5, 127), (2.5e3, -128)] {
            let op = Op::DequantQInt8 {
                n,
                scale,
                zero_point,
            };
            let got = f32s(&run(&op, &[&input]));
            assert_same(
                &format!("{op:?}"),
                &got,
                &cpu::dequant_qint8(&values, scale, zero_point),
            );
        }
    }
}

fn per_channel_input(rng: &mut Rng, n: usize, channels: usize) -> Vec<u8> {
    let mut bytes = rng.bytes(n);
    bytes.resize(pad4(n), 0);
    for _ in 0..channels {
        let scale = 10f32.powf(rng.range(-4.0, 3.0));
        bytes.extend_from_slice(&scale.to_le_bytes());
    }
    for _ in 0..channels {
        let zp = (rng.next_u32() % 256) as i32 - 128;
        bytes.extend_from_slice(&zp.to_le_bytes());
    }
    bytes
}

#[test]
fn dequant_qint8_per_channel() {
    gpu_or_skip!();
    let mut rng = Rng::for_test(2);
    // (outer, channels, inner)
    let shapes = [
        (1, 1, 1),
        (1, 7, 1),
        (3, 5, 17),
        (1, 255, 1),
        (257, 1, 1),
        (2, 3, 167),
        (10, 100, 1),
        (1, 4099, 1),
        (33, 31, 7),
        (5, 64, 205),
    ];
    for (outer, channels, inner) in shapes {
        let n = outer * channels * inner;
        let input = per_channel_input(&mut rng, n, channels);
        let op = Op::DequantQInt8PerChannel {
            n: n as u32,
            outer: outer as u32,
            channels: channels as u32,
            inner: inner as u32,
        };
        let got = f32s(&run(&op, &[&input]));
        let want = cpu::dequant_qint8_per_channel(&input, n, channels, inner);
        assert_same(&format!("{op:?}"), &got, &want);
    }
}

#[test]
fn dequant_qint8_per_channel_bad_table_stays_finite() {
    gpu_or_skip!();
    let mut rng = Rng::for_test(3);
    let (n, channels) = (40, 5);
    let mut input = per_channel_input(&mut rng, n, channels);
    let bad = [f32::NAN, f32::INFINITY, -1.0, 0.0];
    for (c, s) in bad.iter().enumerate() {
        input[n + 4 * c..n + 4 * c + 4].copy_from_slice(&s.to_le_bytes());
    }
    // A huge scale with a valid one: the product saturates to f32::MAX.
    input[n + 16..n + 20].copy_from_slice(&f32::MAX.to_le_bytes());
    let op = Op::DequantQInt8PerChannel {
        n: n as u32,
        outer: 1,
        channels: channels as u32,
        inner: 8,
    };
    let got = f32s(&run(&op, &[&input]));
    assert!(got.iter().all(|x| x.is_finite()), "{got:?} ({})", seed());
    assert_same(
        "bad tables",
        &got,
        &cpu::dequant_qint8_per_channel(&input, n, channels, 8),
    );
}

fn check_blocks(q4: bool, seed: u64) {
    let mut rng = Rng::for_test(seed);
    for n in SIZES {
        let n = n as usize;
        let input = cpu::random_blocks(&mut rng, n, q4);
        let op = if q4 {
            Op::DequantQ4Block { n: n as u32 }
        } else {
            Op::DequantQ8Block { n: n as u32 }
        };
        let got = f32s(&run(&op, &[&input]));
        assert_same(
            &format!("{op:?}"),
            &got,
            &cpu::dequant_blocks(&input, n, q4),
        );
    }
}

#[test]
fn dequant_q8_block() {
    gpu_or_skip!();
    check_blocks(false, 4);
}

#[test]
fn dequant_q4_block() {
    gpu_or_skip!();
    check_blocks(true, 5);
}

#[test]
fn dequant_blocks_known_bytes() {
    gpu_or_skip!();
    // Q4, 3 values: scale 2.0; nibbles 9 (x = 2), 0 (x = -16), 8 (x = 0).
    let mut input = vec![0u8; cpu::block_bytes(3, true)];
    input[..2].copy_from_slice(&f16::from_f32(2.0).to_le_bytes());
    input[4] = 0x09; // element 0 low nibble 9, element 1 high nibble 0
    input[5] = 0x08; // element 2 low nibble 8
    let got = f32s(&run(&Op::DequantQ4Block { n: 3 }, &[&input]));
    assert_eq!(got, [2.0, -16.0, 0.0]);
    // Q8, 33 values: block 1's scale is the high half of word 0.
    let mut input = vec![0u8; cpu::block_bytes(33, false)];
    input[..2].copy_from_slice(&f16::from_f32(0.5).to_le_bytes());
    input[2..4].copy_from_slice(&f16::from_f32(-3.0).to_le_bytes());
    input[4] = 0xFE; // -2 * 0.5
    input[4 + 32] = 5; // 5 * -3
    let got = f32s(&run(&Op::DequantQ8Block { n: 33 }, &[&input]));
    assert_eq!((got[0], got[1], got[32]), (-1.0, 0.0, -15.0));
    // Non-finite scales decode as 0.
    input[..2].copy_from_slice(&f16::NAN.to_le_bytes());
    input[2..4].copy_from_slice(&f16::INFINITY.to_le_bytes());
    let got = f32s(&run(&Op::DequantQ8Block { n: 33 }, &[&input]));
    assert!(got.iter().all(|&x| x == 0.0), "{got:?}");
}

// ----- conversions -------------------------------------------------------

#[test]
fn f16_to_f32_all_bit_patterns_and_sizes() {
    gpu_or_skip!();
    // Every one of the 65536 f16 bit patterns (subnormals, infinities, NaN).
    let all: Vec<u8> = (0..=u16::MAX).flat_map(|h| h.to_le_bytes()).collect();
    let got = f32s(&run(&Op::F16ToF32 { n: 65536 }, &[&all]));
    assert_same("all f16", &got, &cpu::f16_to_f32(&all, 65536));
    let mut rng = Rng::for_test(6);
    for n in SIZES {
        let mut input = rng.bytes(2 * n as usize);
        input.resize(pad4(input.len()), 0);
        let got = f32s(&run(&Op::F16ToF32 { n }, &[&input]));
        assert_same(
            &format!("f16 to f32, n = {n}"),
            &got,
            &cpu::f16_to_f32(&input, n as usize),
        );
    }
}

fn f16_halves(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(2)
        .map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32())
        .collect()
}

#[test]
fn f32_to_f16_rounds_like_half() {
    gpu_or_skip!();
    let mut rng = Rng::for_test(7);
    // Edge cases: ties, overflow, the subnormal boundaries, NaN, -0.
    let mut special = vec![
        0.0f32,
        -0.0,
        1.0,
        65504.0,
        65519.99,
        65520.0,
        1e6,
        -1e6,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        f32::MAX,
        f32::MIN_POSITIVE,
        1e-45,
        2f32.powi(-24),
        2f32.powi(-25),
        2f32.powi(-25) * 1.0000001,
        2f32.powi(-24) * 1.5,
        2f32.powi(-24) * 2.5,
        2f32.powi(-14),
        2f32.powi(-14) * (1.0 - 2f32.powi(-11)),
        1.0 + 2f32.powi(-11),
        1.0 + 3.0 * 2f32.powi(-11),
        -2049.0,
        2051.0,
    ];
    // Random bit patterns over the whole f32 range, and values near f16's.
    special.extend((0..50_000).map(|_| f32::from_bits(rng.next_u32())));
    special.extend((0..50_000).map(|_| f32::from_bits(0x3300_0000 + rng.next_u32() % 0x1500_0000)));
    for x in [special.clone(), special[..special.len() - 1].to_vec()] {
        let n = x.len() as u32;
        let got = run(&Op::F32ToF16 { n }, &[&bytes_of(&x)]);
        let want = cpu::f32_to_f16(&x);
        assert_eq!(got.len(), want.len());
        assert_same("f32 to f16", &f16_halves(&got), &f16_halves(&want));
    }
    for n in SIZES {
        let x = rng.f32s(n as usize, -70000.0, 70000.0);
        let got = run(&Op::F32ToF16 { n }, &[&bytes_of(&x)]);
        let want = cpu::f32_to_f16(&x);
        // The padding half of an odd count is written as 0 too.
        assert_eq!(got, want, "f32 to f16, n = {n} ({})", seed());
    }
}

// ----- elementwise -------------------------------------------------------

#[test]
fn scale_add_relu() {
    gpu_or_skip!();
    let mut rng = Rng::for_test(8);
    for n in SIZES {
        let a = rng.f32s(n as usize, -1e3, 1e3);
        let b = rng.f32s(n as usize, -1e3, 1e3);
        let (ab, bb) = (bytes_of(&a), bytes_of(&b));
        for factor in [0.5f32, -3.25, 1.0e-3, 7.0] {
            let got = f32s(&run(&Op::Scale { n, factor }, &[&ab]));
            assert_same(&format!("scale n = {n}"), &got, &cpu::scale(&a, factor));
        }
        let got = f32s(&run(&Op::Add { n }, &[&ab, &bb]));
        assert_same(&format!("add n = {n}"), &got, &cpu::add(&a, &b));
        let got = f32s(&run(&Op::Relu { n }, &[&ab]));
        assert_same(&format!("relu n = {n}"), &got, &cpu::relu(&a));
    }
}

#[test]
fn elementwise_large_uses_a_2d_grid() {
    gpu_or_skip!();
    // 64 MiB of f32 plus a few: more than 65535 workgroups of 256.
    let n = (1u32 << 24) + 7;
    let mut rng = Rng::for_test(9);
    let a = rng.f32s(n as usize, -10.0, 10.0);
    let ab = bytes_of(&a);
    let got = f32s(&run(&Op::Relu { n }, &[&ab]));
    assert_same("relu 2^24 + 7", &got, &cpu::relu(&a));
    let got = f32s(&run(&Op::Scale { n, factor: -1.5 }, &[&ab]));
    assert_same("scale 2^24 + 7", &got, &cpu::scale(&a, -1.5));
}

// ----- matmul ------------------------------------------------------------

#[test]
fn matmul() {
    gpu_or_skip!();
    let mut rng = Rng::for_test(10);
    let shapes = [
        (1, 1, 1),
        (17, 33, 9),
        (64, 64, 64),
        (70, 5, 130),
        (3, 4, 5),
        (1, 300, 1),
        (65, 129, 63),
        (128, 256, 96),
        (200, 17, 1),
        (1, 17, 200),
    ];
    for (m, k, n) in shapes {
        let a = rng.f32s(m * k, -1.0, 1.0);
        let b = rng.f32s(k * n, -1.0, 1.0);
        let op = Op::MatMul {
            m: m as u32,
            k: k as u32,
            n: n as u32,
        };
        let got = f32s(&run(&op, &[&bytes_of(&a), &bytes_of(&b)]));
        let (want, bound) = cpu::matmul(&a, &b, m, k, n);
        let worst = assert_within(&format!("{op:?}"), &got, &want, &bound);
        eprintln!("matmul {m}x{k}x{n}: worst error / bound {worst:.3}");
    }
}

// ----- softmax -----------------------------------------------------------

#[test]
fn softmax() {
    gpu_or_skip!();
    let mut rng = Rng::for_test(11);
    let shapes = [
        (1, 1),
        (1, 3),
        (1, 300),
        (1, 1025),
        (4, 1),
        (3, 3),
        (5, 255),
        (2, 256),
        (6, 257),
        (3, 1025),
        (2, 5000),
    ];
    for (rows, cols) in shapes {
        for (lo, hi) in [
            (-5.0f32, 5.0),
            (-60.0, 60.0),
            (990.0, 1010.0),
            (-1e4, -9990.0),
        ] {
            let x = rng.f32s(rows * cols, lo, hi);
            let op = Op::SoftmaxRows {
                rows: rows as u32,
                cols: cols as u32,
            };
            let got = f32s(&run(&op, &[&bytes_of(&x)]));
            let (want, bound) = cpu::softmax(&x, rows, cols);
            let what = format!("{op:?} inputs in [{lo}, {hi})");
            let worst = assert_within(&what, &got, &want, &bound);
            eprintln!("{what}: worst error / bound {worst:.3}");
            for r in 0..rows {
                let s: f64 = got[r * cols..(r + 1) * cols]
                    .iter()
                    .map(|&v| f64::from(v))
                    .sum();
                assert!(
                    (s - 1.0).abs() < 1e-5,
                    "{what}: row {r} sums to {s} ({})",
                    seed()
                );
            }
        }
    }
}

#[test]
fn softmax_many_rows_uses_a_2d_grid() {
    gpu_or_skip!();
    let (rows, cols) = (70_000, 3);
    let mut rng = Rng::for_test(12);
    let x = rng.f32s(rows * cols, -3.0, 3.0);
    let op = Op::SoftmaxRows {
        rows: rows as u32,
        cols: cols as u32,
    };
    let got = f32s(&run(&op, &[&bytes_of(&x)]));
    let (want, bound) = cpu::softmax(&x, rows, cols);
    assert_within("softmax 70000 rows", &got, &want, &bound);
}

// ----- reductions --------------------------------------------------------

#[test]
fn reduce_sum_and_max() {
    gpu_or_skip!();
    let mut rng = Rng::for_test(13);
    let sizes = [
        1usize, 2, 7, 255, 256, 257, 511, 512, 513, 1000, 4099, 262_144, 262_145, 300_001,
    ];
    for n in sizes {
        for (lo, hi) in [(-1.0f32, 1.0), (0.0, 100.0), (-1e6, -1e3)] {
            let x = rng.f32s(n, lo, hi);
            let xb = bytes_of(&x);
            let got = f32s(&run(
                &Op::Reduce {
                    n: n as u32,
                    kind: ReduceKind::Sum,
                },
                &[&xb],
            ));
            let (want, bound) = cpu::sum(&x);
            assert_within(
                &format!("sum n = {n} in [{lo}, {hi})"),
                &got,
                &[want],
                &[bound],
            );
            let got = f32s(&run(
                &Op::Reduce {
                    n: n as u32,
                    kind: ReduceKind::Max,
                },
                &[&xb],
            ));
            assert_same(&format!("max n = {n}"), &got, &[cpu::max(&x)]);
        }
    }
    // The maximum at either end of a chunk, or alone past the last full one.
    for (n, at) in [(513usize, 512usize), (1024, 0), (1024, 1023), (600, 511)] {
        let mut x = vec![-5.0f32; n];
        x[at] = 3.0;
        let got = f32s(&run(
            &Op::Reduce {
                n: n as u32,
                kind: ReduceKind::Max,
            },
            &[&bytes_of(&x)],
        ));
        assert_eq!(got, [3.0], "max at {at} of {n}");
    }
}

#[test]
fn reduce_large() {
    gpu_or_skip!();
    let n = (1usize << 24) + 5;
    let mut rng = Rng::for_test(14);
    let x = rng.f32s(n, -1.0, 1.0);
    let xb = bytes_of(&x);
    let got = f32s(&run(
        &Op::Reduce {
            n: n as u32,
            kind: ReduceKind::Sum,
        },
        &[&xb],
    ));
    let (want, bound) = cpu::sum(&x);
    assert_within("sum 2^24 + 5", &got, &[want], &[bound]);
    let got = f32s(&run(
        &Op::Reduce {
            n: n as u32,
            kind: ReduceKind::Max,
        },
        &[&xb],
    ));
    assert_same("max 2^24 + 5", &got, &[cpu::max(&x)]);
}

// ----- layouts and errors ------------------------------------------------

#[test]
fn separate_buffers_work_too() {
    gpu_or_skip!();
    let mut rng = Rng::for_test(15);
    let a = rng.f32s(1000, -1.0, 1.0);
    let b = rng.f32s(1000, -1.0, 1.0);
    let (ab, bb) = (bytes_of(&a), bytes_of(&b));
    let sep = |op: &Op, inputs: &[&[u8]]| f32s(&run_in(Layout::Separate, op, inputs).unwrap());
    assert_same(
        "add",
        &sep(&Op::Add { n: 1000 }, &[&ab, &bb]),
        &cpu::add(&a, &b),
    );
    let got = sep(
        &Op::MatMul {
            m: 10,
            k: 100,
            n: 10,
        },
        &[&ab, &bb],
    );
    let (want, bound) = cpu::matmul(&a, &b, 10, 100, 10);
    assert_within("matmul", &got, &want, &bound);
    let got = sep(
        &Op::Reduce {
            n: 1000,
            kind: ReduceKind::Sum,
        },
        &[&ab],
    );
    let (want, bound) = cpu::sum(&a);
    assert_within("sum", &got, &[want], &[bound]);
    let q = cpu::random_blocks(&mut rng, 100, true);
    assert_same(
        "q4",
        &sep(&Op::DequantQ4Block { n: 100 }, &[&q]),
        &cpu::dequant_blocks(&q, 100, true),
    );
}

fn gpu_error(r: crate::error::Result<()>) -> String {
    match r {
        Err(Error::Gpu(m)) => m,
        Err(e) => panic!("expected Error::Gpu, got {e}"),
        Ok(()) => panic!("expected an error"),
    }
}

#[test]
fn bad_arguments_are_clear_errors() {
    let g = gpu_or_skip!();
    let buf = storage_buffer(4096, &[]);
    let arg = |offset: u64, size: u64| Arg {
        buffer: &buf,
        offset,
        size,
    };
    let record = |op: Op, inputs: &[Arg<'_>], output: Arg<'_>| {
        let mut encoder = g
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor::default());
        gpu_error(
            g.kernels
                .record(&g.device, &mut encoder, &op, inputs, output),
        )
    };
    let mm = Op::MatMul { m: 3, k: 4, n: 2 };
    let e = record(mm, &[arg(0, 40), arg(256, 32)], arg(512, 24));
    assert_eq!(e, "matmul: input A has 40 bytes, 48 needed for 3x4 f32");
    let e = record(mm, &[arg(0, 48), arg(256, 28)], arg(512, 24));
    assert_eq!(e, "matmul: input B has 28 bytes, 32 needed for 4x2 f32");
    let e = record(mm, &[arg(0, 48), arg(256, 32)], arg(512, 20));
    assert_eq!(e, "matmul: output has 20 bytes, 24 needed for 3x2 f32");
    let e = record(mm, &[arg(0, 48)], arg(512, 24));
    assert_eq!(e, "matmul: 2 input(s) expected, 1 given");
    let e = record(
        Op::MatMul { m: 0, k: 4, n: 2 },
        &[arg(0, 48), arg(256, 32)],
        arg(512, 24),
    );
    assert!(e.contains(">= 1"), "{e}");
    let align = u64::from(g.device.limits().min_storage_buffer_offset_alignment);
    eprintln!("min_storage_buffer_offset_alignment {align}");
    let off = 512 + align / 2;
    let e = record(mm, &[arg(0, 48), arg(256, 32)], arg(off, 24));
    assert!(
        e.contains(&format!("output offset {off} is not a multiple of")),
        "{e}"
    );
    let e = record(mm, &[arg(0, 48), arg(256, 32)], arg(512, 26));
    assert!(e.contains("not a multiple of 4"), "{e}");
    let e = record(mm, &[arg(0, 48), arg(256, 32)], arg(4096, 24));
    assert!(
        e.contains("runs past the end of its 4096-byte buffer"),
        "{e}"
    );
    let e = record(mm, &[arg(0, 48), arg(256, 32)], arg(256, 24));
    assert!(e.contains("overlap input B"), "{e}");
    let e = record(Op::Relu { n: 10 }, &[arg(0, 1024)], arg(0, 1024));
    assert!(e.contains("overlap input"), "{e}");
    let qi = |scale, zero_point| Op::DequantQInt8 {
        n: 4,
        scale,
        zero_point,
    };
    assert!(record(qi(0.0, 0), &[arg(0, 4)], arg(256, 16)).contains("scale"));
    assert!(record(qi(f32::NAN, 0), &[arg(0, 4)], arg(256, 16)).contains("scale"));
    assert!(record(qi(1.0, 128), &[arg(0, 4)], arg(256, 16)).contains("zero point"));
    let pc = Op::DequantQInt8PerChannel {
        n: 12,
        outer: 2,
        channels: 3,
        inner: 3,
    };
    let e = record(pc, &[arg(0, 256)], arg(256, 256));
    assert!(e.contains("is 18, not n = 12"), "{e}");
    let pc = Op::DequantQInt8PerChannel {
        n: 12,
        outer: 2,
        channels: 3,
        inner: 2,
    };
    let e = record(pc, &[arg(0, 32)], arg(256, 256));
    assert_eq!(
        e,
        "per-channel qint8 dequantize: input has 32 bytes, 36 needed for 12 i8 and 3 channel \
         scales and zero points"
    );
    let e = record(Op::DequantQ4Block { n: 33 }, &[arg(0, 32)], arg(256, 256));
    assert_eq!(
        e,
        "q4block dequantize: input has 32 bytes, 36 needed for 33 Q4Block values"
    );
    let e = record(
        Op::SoftmaxRows { rows: 2, cols: 0 },
        &[arg(0, 4)],
        arg(256, 4),
    );
    assert!(e.contains(">= 1"), "{e}");
    let e = record(
        Op::Reduce {
            n: 0,
            kind: ReduceKind::Max,
        },
        &[arg(0, 4)],
        arg(256, 4),
    );
    assert!(e.contains("0 elements"), "{e}");
    // A buffer without STORAGE usage.
    let plain = g.device.create_buffer(&wgpu::BufferDescriptor {
        label: None,
        size: 1024,
        usage: wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    let e = record(
        Op::Relu { n: 4 },
        &[Arg {
            buffer: &plain,
            offset: 0,
            size: 16,
        }],
        arg(0, 16),
    );
    assert!(e.contains("STORAGE"), "{e}");
}

#[test]
fn empty_elementwise_ops_record_nothing() {
    let g = gpu_or_skip!();
    let buf = storage_buffer(1024, &[]);
    let arg = |offset: u64| Arg {
        buffer: &buf,
        offset,
        size: 0,
    };
    for op in [
        Op::Relu { n: 0 },
        Op::F32ToF16 { n: 0 },
        Op::DequantQ8Block { n: 0 },
    ] {
        assert_eq!(Kernels::output_bytes(&op), 0);
        let mut encoder = g
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor::default());
        g.kernels
            .record(&g.device, &mut encoder, &op, &[arg(0)], arg(256))
            .unwrap();
        g.queue.submit([encoder.finish()]);
    }
}

#[test]
fn output_bytes_and_input_counts() {
    assert_eq!(Kernels::output_bytes(&Op::F32ToF16 { n: 3 }), 8);
    assert_eq!(Kernels::output_bytes(&Op::F32ToF16 { n: 4 }), 8);
    assert_eq!(Kernels::output_bytes(&Op::DequantQ4Block { n: 5 }), 20);
    assert_eq!(Kernels::output_bytes(&Op::MatMul { m: 3, k: 7, n: 5 }), 60);
    assert_eq!(
        Kernels::output_bytes(&Op::Reduce {
            n: 9,
            kind: ReduceKind::Sum
        }),
        4
    );
    let huge = Op::MatMul {
        m: u32::MAX,
        k: 1,
        n: u32::MAX,
    };
    assert_eq!(Kernels::output_bytes(&huge), u64::MAX);
    assert_eq!(Kernels::input_count(&Op::Add { n: 1 }), 2);
    assert_eq!(Kernels::input_count(&huge), 2);
    assert_eq!(Kernels::input_count(&Op::Relu { n: 1 }), 1);
}

/// Every pipeline creates on a device with only `Limits::downlevel_defaults()`
/// (4 storage buffers per stage, 256 invocations per workgroup). wgpu 30
/// does not check workgroup memory against
/// `max_compute_workgroup_storage_size` at pipeline creation; the kernels
/// use at most 8 KiB (matmul), well under the 16 KiB default.
#[test]
fn kernels_fit_downlevel_default_limits() {
    let g = gpu_or_skip!();
    let (device, _queue) = block_on(g.adapter.request_device(&wgpu::DeviceDescriptor {
        label: Some("downlevel"),
        required_limits: wgpu::Limits::downlevel_defaults(),
        ..Default::default()
    }))
    .expect("request_device with the downlevel default limits");
    let scope = device.push_error_scope(wgpu::ErrorFilter::Validation);
    let _kernels = Kernels::new(&device);
    if let Some(e) = block_on(scope.pop()) {
        panic!("pipelines do not fit the downlevel defaults: {e}");
    }
}
