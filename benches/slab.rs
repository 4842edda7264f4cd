//! Slab alloc + free against heap allocation of the same size.
//!
//! `cargo bench --bench slab`. The slab lives in a real shared-memory
//! segment; the heap baseline is `Vec<u8>` with uninitialised capacity
//! (`Vec::with_capacity`), so neither side touches the payload bytes.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use psyne::{Segment, SlabConfig};

const SIZES: [(u64, &str); 3] = [(256, "256B"), (64 << 10, "64KiB"), (16 << 20, "16MiB")];

fn alloc_free(c: &mut Criterion) {
    let name = format!("bench-slab-{}", std::process::id());
    let cfg = SlabConfig::new()
        .class(256, 64)
        .class(64 << 10, 16)
        .class(16 << 20, 4);
    let seg = Segment::create(&name, &cfg).expect("create segment");
    let slab = seg.slab().clone();
    let mut g = c.benchmark_group("alloc_free");
    for (size, label) in SIZES {
        g.bench_with_input(BenchmarkId::new("psyne_slab", label), &size, |b, &size| {
            b.iter(|| black_box(slab.alloc(black_box(size)).expect("slot")))
        });
        g.bench_with_input(BenchmarkId::new("heap_vec", label), &size, |b, &size| {
            b.iter(|| black_box(Vec::<u8>::with_capacity(black_box(size as usize))))
        });
    }
    g.finish();
    drop(slab);
    drop(seg);
    let _ = Segment::unlink(&name);
}

criterion_group!(benches, alloc_free);
criterion_main!(benches);
