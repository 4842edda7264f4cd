//! Slab alloc + free against heap allocation of the same size.
//!
//! `cargo bench --bench slab`. The slab lives in a real shared-memory
//! segment. Two heap baselines of the same size, measured in the same run:
//! `vec![0u8; n]`, the buffer safe Rust code can write into (what a
//! producer would otherwise allocate per message), and
//! `Vec::with_capacity(n)`, malloc/free alone with no bytes touched. A slab
//! slot, like the second, is handed out without touching its bytes, but is
//! ready to write.

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
        g.bench_with_input(
            BenchmarkId::new("heap_vec_zeroed", label),
            &size,
            |b, &size| b.iter(|| black_box(vec![0u8; black_box(size as usize)])),
        );
        g.bench_with_input(
            BenchmarkId::new("heap_with_capacity", label),
            &size,
            |b, &size| b.iter(|| black_box(Vec::<u8>::with_capacity(black_box(size as usize)))),
        );
    }
    g.finish();
    drop(slab);
    drop(seg);
    let _ = Segment::unlink(&name);
}

criterion_group!(benches, alloc_free);
criterion_main!(benches);
