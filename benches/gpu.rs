//! The cost of handing a tensor to a compute shader and getting a result a
//! consumer can read, zero-copy against staged, measured in one run.
//!
//! `cargo bench --features gpu --bench gpu`
//!
//! Each iteration binds an input slot of `<size>` bytes and an output slot
//! of the same size, runs a probe kernel that reads the input's first and
//! last word and writes the output's, and waits until the output slot holds
//! the result. The probe does constant work, so what grows with the size is
//! the binding: on the `ZeroCopy` route the slot's pages are already
//! imported (nothing to do), on the `Staged` route the input is copied to
//! the device and the output copied back into the slot.
//!
//! It prints the adapter; without one it says so and measures nothing.

use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput};
use psyne::gpu::{wgpu, GpuContext, GpuOptions, Route};
use psyne::{Segment, Shape, SlabConfig};

const PROBE: &str = r#"
@group(0) @binding(0) var<storage, read_write> src: array<u32>;
@group(0) @binding(1) var<storage, read_write> dst: array<u32>;
@compute @workgroup_size(1)
fn main() {
    let n = arrayLength(&src);
    dst[0] = src[0] + 1u;
    dst[n - 1u] = src[n - 1u] + 1u;
}
"#;

fn main() {
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(2))
        .sample_size(20)
        .configure_from_args();
    let zero = match GpuContext::with_options(&GpuOptions::from_env()) {
        Ok(ctx) => ctx,
        Err(e) => {
            eprintln!("gpu bench skipped: {e}");
            return;
        }
    };
    let staged = GpuContext::with_options(&GpuOptions {
        zero_copy: false,
        ..GpuOptions::from_env()
    })
    .expect("the adapter opened once already");
    println!("adapter: {}", zero.info());

    let name = format!("psyne-bench-gpu-{}", std::process::id());
    let seg = Segment::create(&name, &SlabConfig::new().class(64 << 20, 4)).expect("segment");
    let mut group = c.benchmark_group("gpu_bind");
    for &size in &[1usize << 20, 64 << 20] {
        group.throughput(Throughput::Bytes(size as u64));
        let words = size / 4;
        for (label, ctx) in [("zero_copy", &zero), ("staged", &staged)] {
            let module = ctx
                .device()
                .create_shader_module(wgpu::ShaderModuleDescriptor {
                    label: Some("probe"),
                    source: wgpu::ShaderSource::Wgsl(PROBE.into()),
                });
            let pipeline = ctx
                .device()
                .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                    label: Some("probe"),
                    layout: None,
                    module: &module,
                    entry_point: Some("main"),
                    compilation_options: Default::default(),
                    cache: None,
                });
            let mut input = seg
                .slab()
                .alloc_tensor::<u32>(&Shape::vector(words))
                .expect("input slot");
            input.tensor_mut::<u32>().unwrap().fill(7);
            let input = input.into_shared();
            let mut out = seg
                .slab()
                .alloc_tensor::<u32>(&Shape::vector(words))
                .expect("output slot");
            let mut route = None;
            group.bench_function(BenchmarkId::new(label, size >> 20), |b| {
                b.iter(|| {
                    let x = ctx.bind(&input).unwrap();
                    let y = ctx.bind_mut(&mut out).unwrap();
                    route = Some((x.route(), y.route()));
                    let mut job = ctx.job();
                    // SAFETY: the probe writes only `dst`, bound writable.
                    unsafe { job.dispatch(&pipeline, &[&x, &y], [1, 1, 1]) }.unwrap();
                    job.run().unwrap();
                })
            });
            let t = out.tensor_mut::<u32>().unwrap();
            assert_eq!(
                (t[0], t[words - 1]),
                (8, 8),
                "the probe's result reached the slot"
            );
            let expect = if label == "zero_copy" && zero.info().zero_copy {
                Route::ZeroCopy
            } else {
                Route::Staged
            };
            assert_eq!(route, Some((expect, expect)), "{label} took another route");
        }
    }
    group.finish();
    drop(seg);
    let _ = Segment::unlink(&name);
    c.final_summary();
}
