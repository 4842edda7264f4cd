//! GPU binding through the public API (feature `gpu`): both routes give the
//! same results as CPU references, imports are made once, results written
//! by a kernel reach a consumer in another process, bad bindings are errors.
//!
//! Without an adapter these tests print why and pass, unless
//! `PSYNE_REQUIRE_GPU=1` (set by CI, which installs lavapipe): then they fail.
//! The kernels' own exhaustive tests are unit tests in `src/gpu/`.
#![cfg(feature = "gpu")]

#[path = "../src/gpu/reference.rs"]
mod reference;

use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use half::f16;
use psyne::gpu::{GpuContext, GpuOptions, GpuTensor, Job, ReduceKind, Route};
use psyne::{
    Error, QuantKind, QuantParams, QuantizedTensor, Receiver, Segment, Sender, Shape, SlabConfig,
    Slot, SlotMut,
};
use reference::Rng;

const ROLE: &str = "PSYNE_TEST_ROLE";

/// The two contexts every test uses: zero-copy where possible, and one that
/// never imports. `None` (after printing why) when there is no adapter.
fn contexts() -> Option<&'static (GpuContext, GpuContext)> {
    static CTX: OnceLock<Result<(GpuContext, GpuContext), String>> = OnceLock::new();
    let r = CTX.get_or_init(|| {
        let zero = GpuContext::with_options(&GpuOptions::from_env()).map_err(|e| e.to_string())?;
        let staged = GpuContext::with_options(&GpuOptions {
            zero_copy: false,
            ..GpuOptions::from_env()
        })
        .map_err(|e| e.to_string())?;
        eprintln!("adapter: {}", zero.info());
        Ok((zero, staged))
    });
    match r {
        Ok(c) => Some(c),
        Err(e) if std::env::var("PSYNE_REQUIRE_GPU").as_deref() == Ok("1") => {
            panic!("PSYNE_REQUIRE_GPU=1 but no GPU context: {e}")
        }
        Err(e) => {
            eprintln!("skipped: no GPU adapter ({e})");
            None
        }
    }
}

fn seed() -> u64 {
    static SEED: OnceLock<u64> = OnceLock::new();
    *SEED.get_or_init(|| {
        let s = std::env::var("PSYNE_TEST_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
            });
        eprintln!("random inputs from PSYNE_TEST_SEED={s}");
        s
    })
}

/// A named segment (removed when the test ends) with small and large slots.
struct Seg {
    seg: Segment,
    name: String,
}

impl Seg {
    fn new() -> Seg {
        static N: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "gpu-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let cfg = SlabConfig::new().class(4096, 64).class(1 << 20, 16);
        Seg {
            seg: Segment::create(&name, &cfg).unwrap(),
            name,
        }
    }

    fn f32s(&self, shape: &Shape, data: &[f32]) -> Slot {
        let mut s = self.seg.slab().alloc_tensor::<f32>(shape).unwrap();
        s.tensor_mut::<f32>()
            .unwrap()
            .copy_from_slice(data)
            .unwrap();
        s.into_shared()
    }

    fn f16s(&self, data: &[f16]) -> Slot {
        let mut s = self
            .seg
            .slab()
            .alloc_tensor::<f16>(&Shape::vector(data.len()))
            .unwrap();
        s.tensor_mut::<f16>()
            .unwrap()
            .copy_from_slice(data)
            .unwrap();
        s.into_shared()
    }

    fn quantized(&self, data: &[f32], shape: &Shape, kind: QuantKind) -> Slot {
        let n = psyne::tensor::quant::storage_size(kind, shape).unwrap();
        let mut s = self.seg.slab().alloc(n).unwrap();
        s.write_quantized(data, shape, kind).unwrap();
        s.into_shared()
    }

    /// An output slot of `T` with `shape`, every byte of the slot (payload
    /// and the rest) set to 0xFF first, so unwritten elements read as NaN
    /// and writes past the payload show.
    fn poisoned<T: psyne::Element>(&self, shape: &Shape) -> SlotMut {
        let n = shape.byte_size(T::DTYPE);
        let mut s = self.seg.slab().alloc(n).unwrap();
        let cap = s.capacity();
        s.set_len(cap).unwrap();
        s.bytes_mut().fill(0xFF);
        s.init_tensor::<T>(shape).unwrap();
        s
    }
}

impl Drop for Seg {
    fn drop(&mut self) {
        let _ = Segment::unlink(&self.name);
    }
}

/// Bytes of the slot past its payload (up to the next multiple of 4 the
/// kernels may pad) must still be poison.
fn check_untouched_tail(out: &mut SlotMut) {
    let len = out.len() as usize;
    let cap = out.capacity();
    out.set_len(cap).unwrap();
    let tail = &out.bytes()[len.next_multiple_of(4)..];
    assert!(
        tail.iter().all(|&b| b == 0xFF),
        "a kernel wrote past its output"
    );
    out.set_len(len as u64).unwrap();
}

/// The route each context should take for slot bindings.
fn expected_route(ctx: &GpuContext) -> Route {
    if ctx.info().zero_copy {
        Route::ZeroCopy
    } else {
        Route::Staged
    }
}

/// Runs `record` on both contexts with fresh bindings of `inputs` and a
/// poisoned output made by `make_out`; checks the routes, that nothing was
/// written past the output, and that both routes give identical bytes.
/// Returns the output bytes.
/// Records kernels on bound inputs and an output.
type Record<'r> = &'r dyn for<'j> Fn(
    &mut Job<'_, 'j>,
    &'j [GpuTensor<'j>],
    &'j GpuTensor<'j>,
) -> psyne::Result<()>;

fn on_both_routes(inputs: &[&Slot], make_out: &dyn Fn() -> SlotMut, record: Record<'_>) -> Vec<u8> {
    let (zero, staged) = contexts().unwrap();
    let mut results = Vec::new();
    for ctx in [zero, staged] {
        let mut out = make_out();
        {
            let ins: Vec<GpuTensor<'_>> = inputs.iter().map(|s| ctx.bind(s).unwrap()).collect();
            let o = ctx.bind_mut(&mut out).unwrap();
            for t in ins.iter().chain([&o]) {
                assert_eq!(t.route(), expected_route(ctx));
            }
            let mut job = ctx.job();
            record(&mut job, &ins, &o).unwrap();
            job.run().unwrap();
        }
        check_untouched_tail(&mut out);
        results.push(out.bytes().to_vec());
    }
    assert!(
        results[0] == results[1],
        "zero-copy and staged routes disagree (seed {})",
        seed()
    );
    results.swap_remove(0)
}

#[test]
fn child_entry() {
    let Ok(role) = std::env::var(ROLE) else {
        return;
    };
    assert_eq!(role, "gpu-worker");
    let rx = Receiver::connect(&std::env::var("PSYNE_TEST_IN").unwrap()).unwrap();
    let tx = Sender::connect(&std::env::var("PSYNE_TEST_OUT").unwrap()).unwrap();
    let ctx = GpuContext::new().unwrap();
    for slot in rx.iter() {
        let mut out = tx.loan::<f32>(&slot.meta().unwrap().shape).unwrap();
        out.set_seq(slot.meta().unwrap().seq);
        {
            let x = ctx.bind(&slot).unwrap();
            let y = ctx.bind_mut(&mut out).unwrap();
            println!("routes {:?} {:?}", x.route(), y.route());
            if let Some(why) = ctx.import_error() {
                println!("import error: {why}");
            }
            let mut job = ctx.job();
            job.scale(&x, -2.0, &y).unwrap();
            job.run().unwrap();
        }
        out.send().unwrap();
    }
}

#[test]
fn context_reports_what_it_found() {
    let Some((zero, staged)) = contexts() else {
        return;
    };
    let info = zero.info();
    assert!(!info.name.is_empty());
    assert!(info.max_binding >= 1 << 20);
    assert!(info.offset_alignment.is_power_of_two());
    let shown = info.to_string();
    assert!(shown.contains(&info.name), "{shown}");
    if info.backend == psyne::gpu::wgpu::Backend::Vulkan && info.name.contains("llvmpipe") {
        // lavapipe offers VK_EXT_external_memory_host: the route must be taken.
        assert!(info.zero_copy, "lavapipe without zero-copy: {shown}");
        assert_eq!(info.import_alignment, 4096);
    }
    assert!(!staged.info().zero_copy);
    assert!(staged
        .info()
        .zero_copy_reason
        .as_deref()
        .unwrap()
        .contains("disabled"));
}

#[test]
fn unknown_adapter_name_is_a_clear_error() {
    if contexts().is_none() {
        return;
    }
    let e = GpuContext::with_options(&GpuOptions {
        adapter: Some("no-such-adapter-xyz".into()),
        zero_copy: true,
    })
    .unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, Error::NoGpu(_)), "{msg}");
    assert!(
        msg.contains("no-such-adapter-xyz") && msg.contains("found"),
        "{msg}"
    );
}

#[test]
fn elementwise_and_conversions_match_the_cpu_on_both_routes() {
    if contexts().is_none() {
        return;
    }
    let seg = Seg::new();
    let mut rng = Rng::new(seed() ^ 1);
    for n in [1usize, 7, 255, 257, 4099] {
        let shape = Shape::vector(n);
        let a = rng.f32s(n, -100.0, 100.0);
        let b = rng.f32s(n, -100.0, 100.0);
        let (sa, sb) = (seg.f32s(&shape, &a), seg.f32s(&shape, &b));
        let out = || seg.poisoned::<f32>(&shape);

        let got = on_both_routes(&[&sa], &out, &|j, i, o| j.scale(&i[0], 0.37, o));
        let got: Vec<f32> = bytemuck::pod_collect_to_vec(&got);
        assert_eq!(
            got,
            reference::scale(&a, 0.37),
            "scale n={n} seed {}",
            seed()
        );

        let got = on_both_routes(&[&sa, &sb], &out, &|j, i, o| j.add(&i[0], &i[1], o));
        let got: Vec<f32> = bytemuck::pod_collect_to_vec(&got);
        assert_eq!(got, reference::add(&a, &b), "add n={n} seed {}", seed());

        let got = on_both_routes(&[&sa], &out, &|j, i, o| j.relu(&i[0], o));
        let got: Vec<f32> = bytemuck::pod_collect_to_vec(&got);
        assert_eq!(got, reference::relu(&a), "relu n={n}");

        // f16 -> f32 on random bit patterns that are finite, and back.
        let h: Vec<f16> = (0..n)
            .map(|_| loop {
                let v = f16::from_bits(rng.next_u32() as u16);
                if v.is_finite() {
                    break v;
                }
            })
            .collect();
        let sh = seg.f16s(&h);
        let got = on_both_routes(&[&sh], &out, &|j, i, o| j.convert(&i[0], o));
        let got: Vec<f32> = bytemuck::pod_collect_to_vec(&got);
        let want: Vec<f32> = h.iter().map(|v| v.to_f32()).collect();
        assert_eq!(got, want, "f16 -> f32 n={n}");

        let out16 = || seg.poisoned::<f16>(&shape);
        let small = rng.f32s(n, -60000.0, 60000.0);
        let ss = seg.f32s(&shape, &small);
        let got = on_both_routes(&[&ss], &out16, &|j, i, o| j.convert(&i[0], o));
        let want = reference::f32_to_f16(&small);
        assert_eq!(got[..], want[..2 * n], "f32 -> f16 n={n}");
    }
}

#[test]
fn dequantization_matches_the_cpu_within_the_step() {
    if contexts().is_none() {
        return;
    }
    let seg = Seg::new();
    let mut rng = Rng::new(seed() ^ 2);
    let cases: Vec<(Shape, QuantKind)> = vec![
        (Shape::vector(1), QuantKind::QInt8),
        (Shape::vector(257), QuantKind::QInt8),
        (Shape::vector(4099), QuantKind::QInt8),
        (
            Shape::new(&[3u64, 5, 17]).unwrap(),
            QuantKind::QInt8PerChannel { axis: 1 },
        ),
        (
            Shape::new(&[33u64, 31]).unwrap(),
            QuantKind::QInt8PerChannel { axis: 0 },
        ),
        (Shape::vector(7), QuantKind::Q8Block),
        (Shape::vector(4099), QuantKind::Q8Block),
        (Shape::vector(31), QuantKind::Q4Block),
        (Shape::vector(1000), QuantKind::Q4Block),
    ];
    for (shape, kind) in cases {
        let n = shape.len();
        let x = rng.f32s(n, -8.0, 8.0);
        let q = seg.quantized(&x, &shape, kind);
        let out = || seg.poisoned::<f32>(&shape);
        let got = on_both_routes(&[&q], &out, &|j, i, o| j.dequantize(&i[0], o));
        let got: Vec<f32> = bytemuck::pod_collect_to_vec(&got);
        // The CPU decoder of the same bytes: the same f32 operations.
        let cpu = q.quantized().unwrap().dequantize().unwrap();
        assert_eq!(got, cpu, "{kind:?} {:?} seed {}", shape.dims(), seed());
        // And within half a quantization step of the original.
        let qt = QuantizedTensor::quantize(&x, &shape, kind).unwrap();
        let step = |i: usize| -> f64 {
            match (kind, qt.params()) {
                (_, QuantParams::PerTensor { scale, .. }) => scale as f64,
                (QuantKind::Q8Block | QuantKind::Q4Block, _) => {
                    let d = f16::from_le_bytes([
                        qt.bytes()[2 * (i / 32)],
                        qt.bytes()[2 * (i / 32) + 1],
                    ]);
                    d.to_f64()
                }
                (QuantKind::QInt8PerChannel { axis }, _) => {
                    let dims = shape.dims();
                    let inner: u64 = dims[axis + 1..].iter().product();
                    let c = (i as u64 / inner % dims[axis]) as usize;
                    let at = n.next_multiple_of(4) + 4 * c;
                    f32::from_le_bytes(qt.bytes()[at..at + 4].try_into().unwrap()) as f64
                }
                _ => unreachable!(),
            }
        };
        for (i, (&g, &w)) in got.iter().zip(&x).enumerate() {
            let err = (g as f64 - w as f64).abs();
            assert!(
                err <= step(i) / 2.0 * (1.0 + 1e-6) + 1e-6 * (w as f64).abs(),
                "{kind:?} element {i}: {g} for {w} (step {})",
                step(i)
            );
        }
    }
}

#[test]
fn matmul_softmax_reduce_match_f64_references() {
    if contexts().is_none() {
        return;
    }
    let seg = Seg::new();
    let mut rng = Rng::new(seed() ^ 3);
    for (m, k, n) in [
        (1usize, 1usize, 1usize),
        (17, 33, 9),
        (70, 5, 130),
        (64, 64, 64),
    ] {
        let a = rng.f32s(m * k, -1.0, 1.0);
        let b = rng.f32s(k * n, -1.0, 1.0);
        let sa = seg.f32s(&Shape::matrix(m, k).unwrap(), &a);
        let sb = seg.f32s(&Shape::matrix(k, n).unwrap(), &b);
        let out = || seg.poisoned::<f32>(&Shape::matrix(m, n).unwrap());
        let got = on_both_routes(&[&sa, &sb], &out, &|j, i, o| j.matmul(&i[0], &i[1], o));
        let got: Vec<f32> = bytemuck::pod_collect_to_vec(&got);
        let (want, bound) = reference::matmul(&a, &b, m, k, n);
        for i in 0..m * n {
            assert!(
                (got[i] as f64 - want[i]).abs() <= bound[i],
                "matmul {m}x{k}x{n} element {i}: {} vs {} (bound {}, seed {})",
                got[i],
                want[i],
                bound[i],
                seed()
            );
        }
    }
    for (rows, cols) in [(1usize, 1usize), (3, 3), (6, 257), (2, 1025)] {
        let x = rng.f32s(rows * cols, -30.0, 30.0);
        let shape = Shape::matrix(rows, cols).unwrap();
        let sx = seg.f32s(&shape, &x);
        let out = || seg.poisoned::<f32>(&shape);
        let got = on_both_routes(&[&sx], &out, &|j, i, o| j.softmax(&i[0], o));
        let got: Vec<f32> = bytemuck::pod_collect_to_vec(&got);
        let (want, bound) = reference::softmax(&x, rows, cols);
        for i in 0..rows * cols {
            assert!(
                (got[i] as f64 - want[i]).abs() <= bound[i],
                "softmax {rows}x{cols} element {i}: {} vs {} (seed {})",
                got[i],
                want[i],
                seed()
            );
        }
    }
    for n in [1usize, 257, 4099, 100_003] {
        let x = rng.f32s(n, -10.0, 10.0);
        let sx = seg.f32s(&Shape::vector(n), &x);
        let out = || seg.poisoned::<f32>(&Shape::vector(1));
        let got = on_both_routes(&[&sx], &out, &|j, i, o| j.reduce(&i[0], ReduceKind::Sum, o));
        let got = f32::from_le_bytes(got[..4].try_into().unwrap()) as f64;
        let (want, bound) = reference::sum(&x);
        assert!((got - want).abs() <= bound, "sum n={n}: {got} vs {want}");
        let got = on_both_routes(&[&sx], &out, &|j, i, o| j.reduce(&i[0], ReduceKind::Max, o));
        assert_eq!(
            f32::from_le_bytes(got[..4].try_into().unwrap()),
            reference::max(&x)
        );
    }
}

#[test]
fn device_copies_and_scratch_tensors() {
    let Some((zero, _)) = contexts() else {
        return;
    };
    let seg = Seg::new();
    let mut rng = Rng::new(seed() ^ 4);
    let (m, k, n) = (9, 13, 5);
    let a = rng.f32s(m * k, -1.0, 1.0);
    let w = rng.f32s(k * n, -1.0, 1.0);
    let sa = seg.f32s(&Shape::matrix(m, k).unwrap(), &a);
    let sw = seg.f32s(&Shape::matrix(k, n).unwrap(), &w);
    let wd = zero.to_device(&sw).unwrap();
    drop(sw); // the device copy does not need the slot
    assert_eq!(wd.route(), Route::Device);
    assert_eq!(zero.read(&wd).unwrap(), bytemuck::cast_slice::<f32, u8>(&w));
    let tmp = zero.scratch::<f32>(&Shape::matrix(m, n).unwrap()).unwrap();
    let y = zero.scratch::<f32>(&Shape::matrix(m, n).unwrap()).unwrap();
    {
        let x = zero.bind(&sa).unwrap();
        let mut job = zero.job();
        job.matmul(&x, &wd, &tmp).unwrap();
        job.relu(&tmp, &y).unwrap();
        job.run().unwrap();
    }
    let got: Vec<f32> = bytemuck::pod_collect_to_vec(&zero.read(&y).unwrap());
    let (want, bound) = reference::matmul(&a, &w, m, k, n);
    for i in 0..m * n {
        let r = want[i].max(0.0);
        assert!(
            (got[i] as f64 - r).abs() <= bound[i],
            "{i}: {} vs {r}",
            got[i]
        );
    }
}

/// A zero-copy context of the test's own (the shared ones import for
/// tests running beside), or `None` (the test skips) without one.
fn own_zero_copy_context() -> Option<GpuContext> {
    contexts()?;
    let ctx = GpuContext::with_options(&GpuOptions::from_env()).unwrap();
    if !ctx.info().zero_copy {
        eprintln!("skipped: no zero-copy on this adapter");
        return None;
    }
    Some(ctx)
}

#[test]
fn imports_last_as_long_as_the_channel_not_the_endpoint_that_bound() {
    let Some(zero) = &own_zero_copy_context() else {
        return;
    };
    let uri = format!("memory://gpu-import-{}?capacity=4", std::process::id());
    let tx = Sender::connect(&uri).unwrap();
    let rx = Receiver::connect(&uri).unwrap();
    tx.send_copy(&Shape::vector(8), &[1.0f32; 8]).unwrap();
    let got = rx.recv().unwrap();
    let b = zero.bind(&got).unwrap();
    assert_eq!(b.route(), Route::ZeroCopy);
    assert_eq!(zero.imported_chunks(), 1);
    // A received slot belongs to its receiver's own slab handle; the
    // import belongs to the segment, which the sender still holds open.
    drop(b);
    drop(got);
    drop(rx);
    assert_eq!(zero.imported_chunks(), 1, "the channel is still open");
    drop(tx);
    assert_eq!(zero.imported_chunks(), 0, "the channel is gone");
}

#[test]
fn pages_are_imported_once_per_segment_chunk() {
    let Some(zero) = &own_zero_copy_context() else {
        return;
    };
    assert_eq!(zero.imported_chunks(), 0);
    let seg = Seg::new();
    let x = seg.f32s(&Shape::vector(8), &[1.0; 8]);
    let y = seg.f32s(&Shape::vector(8), &[2.0; 8]);
    let big = seg.f32s(&Shape::vector(100_000), &vec![3.0; 100_000]);
    let bx = zero.bind(&x).unwrap();
    let bx2 = zero.bind(&x).unwrap();
    let by = zero.bind(&y).unwrap();
    assert_eq!(zero.imported_chunks(), 1, "one import for the 4 KiB class");
    let bb = zero.bind(&big).unwrap();
    assert_eq!(zero.imported_chunks(), 2, "one more for the 1 MiB class");
    assert_eq!(bx.route(), Route::ZeroCopy);
    assert_eq!(bx.offset(), bx2.offset());
    assert_ne!(bx.offset(), by.offset());
    // A second context imports the same segment.
    let other = GpuContext::with_options(&GpuOptions::from_env()).unwrap();
    let bo = other.bind(&x).unwrap();
    assert_eq!(bo.route(), Route::ZeroCopy);
    assert_eq!(other.imported_chunks(), 1);
    drop((bx, bx2, by, bb, bo));
    drop((x, y, big));
    assert_eq!(zero.imported_chunks(), 2, "the segment is still open");
    // Once no segment handle, slab or slot of the mapping is left, nothing
    // can be bound from it: both contexts forget its imports (which lets
    // the pages be unmapped), neither keeping the other's alive.
    drop(seg);
    assert_eq!(zero.imported_chunks(), 0);
    assert_eq!(other.imported_chunks(), 0);
    let seg2 = Seg::new();
    let z = seg2.f32s(&Shape::vector(8), &[4.0; 8]);
    let bz = zero.bind(&z).unwrap();
    assert_eq!(bz.route(), Route::ZeroCopy);
    assert_eq!(zero.imported_chunks(), 1);
    let mut job = zero.job();
    let out = zero.scratch::<f32>(&Shape::vector(8)).unwrap();
    job.relu(&bz, &out).unwrap();
    job.run().unwrap();
    assert_eq!(
        zero.read(&out).unwrap(),
        bytemuck::cast_slice::<f32, u8>(&[4.0; 8])
    );
    assert_eq!(zero.import_error(), None);
}

#[test]
fn a_slab_larger_than_one_binding_is_imported_in_chunks() {
    if contexts().is_none() {
        return;
    }
    let ctx = &GpuContext::with_options(&GpuOptions::from_env()).unwrap();
    let max = ctx.info().max_binding;
    if !ctx.info().zero_copy || max > 512 << 20 {
        eprintln!("skipped: needs zero-copy and a binding limit under 512 MiB");
        return;
    }
    // 1 MiB slots, enough for two and a bit bindings' worth of slab (the
    // shared-memory object is sparse: only touched pages cost memory).
    let slots = (2 * max / (1 << 20) + 3) as u32;
    let name = format!("gpu-test-chunks-{}", std::process::id());
    let seg = Segment::create(&name, &SlabConfig::new().class(1 << 20, slots)).unwrap();
    let _ = Segment::unlink(&name);
    let mut held = Vec::new();
    let mut firsts = Vec::new();
    for i in 0..slots {
        let mut s = seg
            .slab()
            .alloc_tensor::<f32>(&Shape::vector(1 << 18))
            .unwrap();
        s.tensor_mut::<f32>().unwrap()[0] = i as f32;
        let s = s.into_shared();
        if i == 0 || i == slots / 2 || i == slots - 1 {
            firsts.push(s.clone());
        }
        held.push(s);
    }
    let bound: Vec<_> = firsts.iter().map(|s| ctx.bind(s).unwrap()).collect();
    assert_eq!(
        ctx.imported_chunks(),
        3,
        "three chunks for a slab of over two bindings"
    );
    for (t, s) in bound.iter().zip(&firsts) {
        assert_eq!(t.route(), Route::ZeroCopy);
        assert!(
            t.offset() + t.size() <= t.buffer_size(),
            "a tensor straddles chunks"
        );
        assert!(t.buffer_size() <= max, "a chunk is longer than one binding");
        let out = ctx.scratch::<f32>(&Shape::vector(1)).unwrap();
        let mut job = ctx.job();
        job.reduce(t, ReduceKind::Max, &out).unwrap();
        job.run().unwrap();
        let want = s.tensor::<f32>().unwrap()[0];
        assert_eq!(
            ctx.read(&out).unwrap(),
            want.to_le_bytes(),
            "the chunk maps the right pages"
        );
    }
}

#[test]
fn a_kernel_result_reaches_a_consumer_in_another_process() {
    if contexts().is_none() {
        return;
    }
    for zero_copy in ["1", "0"] {
        let tag = format!("{}-{zero_copy}", std::process::id());
        let in_uri = format!("ipc://gpu-test-in-{tag}?capacity=32&slab=4MiB&pattern=spsc");
        let out_uri = format!("ipc://gpu-test-out-{tag}?capacity=32&slab=4MiB&pattern=spsc");
        let tx = Sender::connect(&in_uri).unwrap();
        let rx = Receiver::connect(&out_uri).unwrap();
        let child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "child_entry", "--nocapture", "--test-threads=1"])
            .env(ROLE, "gpu-worker")
            .env("PSYNE_TEST_IN", &in_uri)
            .env("PSYNE_TEST_OUT", &out_uri)
            .env("PSYNE_GPU_ZERO_COPY", zero_copy)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let count = 20u64; // below both capacities: all are sent before any is read
        for seq in 0..count {
            let data: Vec<f32> = (0..1000).map(|i| (seq * 1000 + i) as f32).collect();
            let mut loan = tx.loan::<f32>(&Shape::vector(1000)).unwrap();
            loan.tensor_mut::<f32>()
                .unwrap()
                .copy_from_slice(&data)
                .unwrap();
            loan.set_seq(seq);
            loan.send().unwrap();
        }
        drop(tx);
        for seq in 0..count {
            let got = rx.recv_timeout(Duration::from_secs(60)).unwrap();
            assert_eq!(got.meta().unwrap().seq, seq);
            let t = got.tensor::<f32>().unwrap();
            assert!(
                t.iter()
                    .enumerate()
                    .all(|(i, &v)| v == -2.0 * (seq * 1000 + i as u64) as f32),
                "result {seq} is wrong"
            );
        }
        let out = child.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "worker failed: {text}");
        let want = if zero_copy == "1" && contexts().unwrap().0.info().zero_copy {
            "routes ZeroCopy ZeroCopy"
        } else {
            "routes Staged Staged"
        };
        assert!(text.contains(want), "expected {want:?} in {text}");
    }
}

#[test]
fn bad_bindings_and_jobs_are_clear_errors() {
    let Some((zero, _)) = contexts() else {
        return;
    };
    let seg = Seg::new();
    let x = seg.f32s(&Shape::vector(4), &[1.0, 2.0, 3.0, 4.0]);
    let x6 = seg.f32s(&Shape::vector(6), &[1.0; 6]);
    let empty = seg.f32s(&Shape::vector(0), &[]);
    let e = zero.bind(&empty).unwrap_err();
    assert!(e.to_string().contains("empty"), "{e}");

    let bx = zero.bind(&x).unwrap();
    let bx6 = zero.bind(&x6).unwrap();
    let mut job = zero.job();
    // Output bound read-only.
    let e = job.relu(&bx, &bx).unwrap_err();
    assert!(e.to_string().contains("read-only"), "{e}");
    let mut o = seg.poisoned::<f32>(&Shape::vector(6));
    let bo = zero.bind_mut(&mut o).unwrap();
    // Element counts differ.
    let e = job.relu(&bx, &bo).unwrap_err();
    assert!(
        e.to_string().contains("4 elements") && e.to_string().contains("6"),
        "{e}"
    );
    // Not a quantized tensor.
    let e = job.dequantize(&bx6, &bo).unwrap_err();
    assert!(e.to_string().contains("not a quantized"), "{e}");
    // Matmul shapes.
    let e = job.matmul(&bx, &bx, &bo).unwrap_err();
    assert!(e.to_string().contains("matrix"), "{e}");
    drop(job); // nothing was submitted
    drop(bo);
    assert!(
        o.bytes().iter().all(|&b| b == 0xFF),
        "a failed job wrote its output"
    );

    // A tensor larger than one binding.
    let max = zero.info().max_binding;
    if max < 1 << 30 {
        let big = Segment::anonymous(&SlabConfig::new().class(max + 4096, 1)).unwrap();
        let mut s = big.slab().alloc(max + 4).unwrap();
        s.set_len(max + 4).unwrap();
        let s = s.into_shared();
        let e = zero.bind(&s).unwrap_err();
        assert!(e.to_string().contains("largest storage binding"), "{e}");
    }
}
