//! Unit tests of the slab and slots on anonymous (heap) segments: no shared
//! memory object is needed, so these also run under Miri
//! (`cargo +nightly miri test --lib shm::`). Named segments, bad files and
//! several processes are covered by `tests/segment.rs`.

use std::collections::HashMap;
use std::time::Duration;

use proptest::prelude::*;

use super::*;
use crate::error::Error;
use crate::tensor::{DType, QuantKind, QuantParams, Shape};

fn small() -> Segment {
    Segment::anonymous(
        &SlabConfig::new()
            .class(256, 4)
            .class(4096, 2)
            .class(3 * 4096, 1),
    )
    .unwrap()
}

fn span(s: &SlotMut) -> (u64, u64) {
    let h = s.handle();
    (h.offset, h.offset + s.capacity())
}

#[test]
fn classes_are_rounded_and_aligned() {
    let seg = Segment::anonymous(&SlabConfig::new().class(100, 3).class(5000, 2)).unwrap();
    let stats = seg.slab().stats();
    assert_eq!(stats[0].slot_size, 256);
    assert_eq!(stats[1].slot_size, 8192);
    let a = seg.slab().alloc(1).unwrap();
    let b = seg.slab().alloc(5000).unwrap();
    assert_eq!(a.handle().offset % SLOT_ALIGN, 0);
    assert_eq!(b.handle().offset % 4096, 0);
    assert_eq!(a.bytes().as_ptr() as usize % 256, 0);
    assert_eq!(b.bytes().as_ptr() as usize % 4096, 0);
}

#[test]
fn bad_configs_are_rejected() {
    for cfg in [
        SlabConfig::new(),
        SlabConfig::new().class(0, 1),
        SlabConfig::new().class(256, 0),
        SlabConfig::new().class(200, 1).class(256, 1),
        SlabConfig::new().class(MAX_SLOT_SIZE + 1, 1),
    ] {
        assert!(
            matches!(Segment::anonymous(&cfg), Err(Error::InvalidConfig(_))),
            "{cfg:?}"
        );
    }
    let many = (0..17).fold(SlabConfig::new(), |c, i| c.class(256 << i, 1));
    assert!(matches!(
        Segment::anonymous(&many),
        Err(Error::InvalidConfig(_))
    ));
    assert!(SlabConfig::with_total(1000).is_err());
    let d = SlabConfig::with_total(64 << 20).unwrap();
    let sizes: Vec<u64> = d.normalized().unwrap().iter().map(|c| c.0).collect();
    assert_eq!(sizes, [4096, 65536, 1 << 20]);
}

#[test]
fn full_too_large_and_fallback_to_bigger_class() {
    let seg = small();
    let slab = seg.slab();
    assert!(matches!(
        slab.alloc(3 * 4096 + 1),
        Err(Error::TooLarge {
            requested: 12289,
            max: 12288
        })
    ));
    let small_slots: Vec<_> = (0..4).map(|_| slab.alloc(10).unwrap()).collect();
    // The 256-byte class is exhausted: a 10-byte request falls back to 4 KiB.
    let spill = slab.alloc(10).unwrap();
    assert_eq!(spill.capacity(), 4096);
    let big = slab.alloc(4096 * 3).unwrap();
    assert!(matches!(
        slab.alloc(4096 * 2),
        Err(Error::SlabFull { requested: 8192 })
    ));
    let stats = slab.stats();
    assert_eq!(stats.iter().map(|s| s.used).collect::<Vec<_>>(), [4, 1, 1]);
    assert!(stats[2].failures >= 1);
    drop((small_slots, spill, big));
    assert_eq!(slab.used_slots(), 0);
}

#[test]
fn alloc_timeout_waits_for_a_free_slot() {
    let seg = Segment::anonymous(&SlabConfig::new().class(256, 1)).unwrap();
    let slab = seg.slab().clone();
    let held = slab.alloc(8).unwrap();
    assert!(matches!(
        slab.alloc_timeout(8, Duration::from_millis(5)),
        Err(Error::Timeout(_))
    ));
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(20));
        drop(held);
    });
    let got = slab.alloc_timeout(8, Duration::from_secs(10)).unwrap();
    assert_eq!(got.capacity(), 256);
    t.join().unwrap();
}

#[test]
fn handle_round_trip_take_share_and_stale() {
    let seg = small();
    let slab = seg.slab();
    let mut s = slab.alloc_tensor::<i32>(&Shape::vector(5)).unwrap();
    s.tensor_mut::<i32>()
        .unwrap()
        .copy_from_slice(&[1, 2, 3, 4, 5])
        .unwrap();
    s.set_type_tag(9);
    s.set_seq(77);
    let h = s.into_handle();
    assert_eq!(h.len, 20);
    assert_eq!(h.to_string().parse::<Handle>().unwrap(), h);

    let reader = slab.share(&h).unwrap(); // +1: two references now
    let owner = slab.take(h).unwrap(); // adopts the handle's reference
    assert_eq!(&*reader.tensor::<i32>().unwrap(), &[1, 2, 3, 4, 5]);
    let meta = reader.meta().unwrap();
    assert_eq!(
        (meta.dtype, meta.type_tag, meta.seq, meta.nbytes),
        (DType::I32, 9, 77, 20)
    );
    assert!(matches!(
        reader.tensor::<f32>(),
        Err(Error::DTypeMismatch {
            expected: DType::F32,
            found: DType::I32
        })
    ));
    drop(owner);
    assert_eq!(slab.used_slots(), 1, "the reader still holds it");
    let copy = reader.clone();
    drop(reader);
    assert_eq!(slab.used_slots(), 1);
    drop(copy);
    assert_eq!(slab.used_slots(), 0);

    // The slot was freed: the handle is stale now, and stays stale after reuse.
    assert!(matches!(
        slab.take(h),
        Err(Error::StaleHandle { handle: 0, slot: 1 })
    ));
    let again = slab.alloc(20).unwrap();
    assert_eq!(
        again.handle().offset,
        h.offset,
        "LIFO reuse of the same slot"
    );
    assert!(matches!(slab.share(&h), Err(Error::StaleHandle { .. })));
    drop(again);
}

#[test]
fn a_slot_is_never_read_while_written_nor_taken_twice() {
    let seg = small();
    let slab = seg.slab();
    let mut w = slab.alloc(8).unwrap();
    let early = w.handle();
    // The writer still holds it: no reader may see half-written bytes.
    assert!(
        matches!(slab.share(&early), Err(Error::InvalidHandle(m)) if m.contains("being written"))
    );
    assert!(matches!(slab.take(early), Err(Error::InvalidHandle(_))));
    w.bytes_mut().copy_from_slice(b"complete");
    let h = w.into_handle();
    let first = slab.take(h).unwrap();
    // The handle carried one reference; a second take is refused, not a
    // second owner of the same reference.
    assert!(matches!(slab.take(h), Err(Error::InvalidHandle(m)) if m.contains("already taken")));
    // A reader's reference can become a handle again.
    let again = first.into_handle();
    assert_eq!(slab.take(again).unwrap().bytes(), b"complete");
    assert_eq!(slab.used_slots(), 0);
    // A forged length does not consume the handle's reference.
    let w = slab.alloc(8).unwrap();
    let h = w.into_handle();
    assert!(slab.take(Handle { len: 3, ..h }).is_err());
    assert!(slab.take(h).is_ok());
    assert_eq!(slab.used_slots(), 0);
}

#[test]
fn handing_a_slot_on_does_not_keep_the_segment_alive() {
    let seg = small();
    let slab = seg.slab();
    let base = std::sync::Arc::strong_count(&slab.inner);
    let h = slab.alloc(8).unwrap().into_handle();
    let r = slab.take(h).unwrap();
    let h2 = r.clone().into_handle();
    assert!(slab.take(Handle { len: 1, ..h2 }).is_err()); // gives the reference back
    let shared = slab.take(h2).unwrap();
    drop((r, shared));
    let s = slab.alloc(8).unwrap().into_shared();
    drop(s);
    assert_eq!(std::sync::Arc::strong_count(&slab.inner), base);
    assert_eq!(slab.used_slots(), 0);
}

#[test]
fn a_damaged_free_bitmap_never_gives_one_slot_two_writers() {
    // Damage: the only slot's free bit is set again while it is held, and
    // a bit past the last slot is set.
    let seg = Segment::anonymous(&SlabConfig::new().class(256, 1)).unwrap();
    let slab = seg.slab().clone();
    let c = *slab.class(0);
    let held = slab.alloc(8).unwrap();
    crate::sync::freebits::put(slab.bits(&c), 0);
    assert!(
        matches!(slab.alloc(8), Err(Error::SlabFull { .. })),
        "the state word refuses a held slot"
    );
    crate::sync::freebits::put(slab.bits(&c), 5);
    assert!(matches!(slab.alloc(8), Err(Error::Corrupt(_))));
    drop(held);
    let rounds = if cfg!(miri) { 20 } else { 2_000 };
    let threads: Vec<_> = (0..4u8)
        .map(|t| {
            let slab = slab.clone();
            std::thread::spawn(move || {
                let mut owned = 0;
                for _ in 0..rounds {
                    // Stale bits while the slot is held, from a "repair".
                    crate::sync::freebits::put(slab.bits(slab.class(0)), 0);
                    match slab.alloc(8) {
                        Ok(mut s) => {
                            owned += 1;
                            s.bytes_mut().fill(t);
                            std::thread::yield_now();
                            assert!(s.bytes().iter().all(|&b| b == t), "two writers");
                        }
                        Err(Error::SlabFull { .. }) => {}
                        Err(e) => panic!("{e}"),
                    }
                }
                owned
            })
        })
        .collect();
    let owned: u32 = threads.into_iter().map(|t| t.join().unwrap()).sum();
    assert!(owned > 0);
    assert_eq!(slab.used_slots(), 0);
}

#[test]
fn slots_lost_by_a_crash_between_two_steps_are_found_again() {
    let seg = Segment::anonymous(&SlabConfig::new().class(256, 3)).unwrap();
    let slab = seg.slab().clone();
    let c = *slab.class(0);
    // An allocation that cleared slot 0's bit and died before claiming it.
    assert_eq!(crate::sync::freebits::take(slab.bits(&c), 0), Some((0, 0)));
    // An allocation of slot 1, then a free of it that freed its state and
    // died before setting its bit.
    assert_eq!(crate::sync::freebits::take(slab.bits(&c), 0), Some((0, 1)));
    let st = &slab.slot_atomics(&c, 1).state;
    let g = crate::sync::slotstate::begin_write(st, 1).unwrap();
    crate::sync::slotstate::give_up(st, g);
    assert_eq!(slab.used_slots(), 0, "both slots are free...");
    // ... but only slot 2 can be found; a full slab repairs the bitmap.
    let all: Vec<_> = std::iter::from_fn(|| slab.alloc(8).ok()).collect();
    assert_eq!(all.len(), 3, "the repair on a full slab found both");
    drop(all);
    assert_eq!(slab.repair(), 0, "nothing left to repair");
    assert_eq!(slab.used_slots(), 0);
}

#[test]
fn invalid_handles_are_errors() {
    let seg = small();
    let slab = seg.slab();
    let s = slab.alloc(16).unwrap();
    let h = s.handle();
    for bad in [
        Handle {
            offset: h.offset + 8,
            ..h
        },
        Handle {
            offset: 1 << 40,
            ..h
        },
        Handle { len: 4096, ..h },
    ] {
        assert!(
            matches!(slab.take(bad), Err(Error::InvalidHandle(_))),
            "{bad:?}"
        );
    }
    assert!(matches!(
        slab.share(&Handle { len: 15, ..h }),
        Err(Error::InvalidHandle(_))
    ));
    // Every slot of a power-of-two class (named by a shift) and of one
    // that is not (named by a division) resolves; an offset inside a slot
    // or past the class's last one does not.
    for (ci, c) in slab.inner.classes.iter().enumerate() {
        for index in 0..c.slot_count {
            let offset = c.data_offset + index as u64 * c.slot_size;
            let named = Handle {
                offset,
                generation: 0,
                len: 0,
            };
            assert_eq!(slab.resolve(&named).unwrap(), (ci as u8, index));
            for off in [offset + 8, offset + c.slot_size / 2 + 8] {
                let inside = Handle {
                    offset: off,
                    ..named
                };
                assert!(slab.resolve(&inside).is_err(), "class {ci} at {off}");
            }
        }
    }
    let last = slab.inner.classes.last().unwrap();
    let past = Handle {
        offset: last.data_offset + last.slot_count as u64 * last.slot_size,
        generation: 0,
        len: 0,
    };
    assert!(slab.resolve(&past).is_err());
    assert!("1:2".parse::<Handle>().is_err());
    assert!("1:2:3:4".parse::<Handle>().is_err());
    assert!("a:2:3".parse::<Handle>().is_err());
    // The failed share gave its reference back.
    drop(s);
    assert_eq!(slab.used_slots(), 0);
}

#[test]
fn tensor_headers_survive_and_are_checked() {
    let seg = small();
    let slab = seg.slab();
    let mut s = slab.alloc(4096).unwrap();
    assert!(matches!(
        s.init_tensor::<f64>(&Shape::vector(600)),
        Err(Error::TooLarge {
            requested: 4800,
            max: 4096
        })
    ));
    let shape = Shape::new(&[2u64, 3, 4]).unwrap();
    let mut t = s.init_tensor::<f64>(&shape).unwrap();
    for (i, x) in t.iter_mut().enumerate() {
        *x = i as f64 * 0.5;
    }
    let r = s.into_shared();
    let v = r.tensor::<f64>().unwrap();
    assert_eq!(v.shape(), &shape);
    assert_eq!(v.get(&[1, 2, 3]), Some(&11.5));
    assert_eq!(r.bytes().len(), 192);

    let mut q = slab.alloc(4096).unwrap();
    let data: Vec<f32> = (0..100).map(|i| (i as f32 - 50.0) / 7.0).collect();
    let params = q
        .write_quantized(&data, &Shape::vector(100), QuantKind::QInt8)
        .unwrap();
    assert!(matches!(params, QuantParams::PerTensor { .. }));
    let q = q.into_shared();
    let qt = q.quantized().unwrap();
    assert_eq!(qt.dtype(), DType::QInt8);
    let back = qt.dequantize().unwrap();
    let QuantParams::PerTensor { scale, .. } = params else {
        unreachable!()
    };
    for (a, b) in data.iter().zip(&back) {
        assert!((a - b).abs() <= scale / 2.0 + 1e-6);
    }
    assert!(matches!(r.quantized(), Err(Error::DTypeMismatch { .. })));
}

#[test]
fn threads_never_see_overlapping_slots() {
    let seg = Segment::anonymous(&SlabConfig::new().class(256, 8).class(4096, 4)).unwrap();
    let rounds = if cfg!(miri) { 20 } else { 5_000 };
    let threads: Vec<_> = (0..4u8)
        .map(|t| {
            let slab = seg.slab().clone();
            std::thread::spawn(move || {
                for r in 0..rounds {
                    let size = if r % 3 == 0 { 1000 } else { 100 };
                    let Ok(mut s) = slab.alloc(size) else {
                        continue;
                    };
                    let mark = t.wrapping_mul(31).wrapping_add(r as u8);
                    s.bytes_mut().fill(mark);
                    std::thread::yield_now();
                    assert!(
                        s.bytes().iter().all(|&b| b == mark),
                        "another thread wrote our slot"
                    );
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(seg.slab().used_slots(), 0);
    let stats = seg.slab().stats();
    assert!(stats.iter().map(|s| s.allocs).sum::<u64>() > 0);
}

#[derive(Debug, Clone)]
enum Op {
    Alloc(u64),
    Free(usize),
}

fn ops() -> impl Strategy<Value = Vec<Op>> {
    let op = prop_oneof![
        (1u64..13_000).prop_map(Op::Alloc),
        (0usize..64).prop_map(Op::Free),
    ];
    proptest::collection::vec(op, 1..if cfg!(miri) { 20 } else { 200 })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(if cfg!(miri) { 2 } else { 64 }))]

    /// Random alloc/free sequences against a model: live slots never
    /// overlap, are aligned and big enough, keep their bytes; the stats match
    /// the model; after freeing everything nothing is in use.
    #[test]
    fn alloc_free_storms(ops in ops()) {
        let seg = small();
        let slab = seg.slab();
        let mut live: Vec<(SlotMut, u8)> = Vec::new();
        let mut tag = 0u8;
        for op in ops {
            match op {
                Op::Alloc(n) => match slab.alloc(n) {
                    Ok(mut s) => {
                        prop_assert!(s.capacity() >= n);
                        prop_assert_eq!(s.handle().offset % SLOT_ALIGN, 0);
                        let (lo, hi) = span(&s);
                        for (o, _) in &live {
                            let (a, b) = span(o);
                            prop_assert!(hi <= a || b <= lo, "overlap");
                        }
                        tag = tag.wrapping_add(1);
                        s.bytes_mut().fill(tag);
                        live.push((s, tag));
                    }
                    Err(Error::SlabFull { .. }) | Err(Error::TooLarge { .. }) => {
                        prop_assert!(n > 256 || live.len() >= 4);
                    }
                    Err(e) => return Err(TestCaseError::fail(e.to_string())),
                },
                Op::Free(i) if !live.is_empty() => {
                    let (s, t) = live.swap_remove(i % live.len());
                    prop_assert!(s.bytes().iter().all(|&b| b == t));
                }
                Op::Free(_) => {}
            }
            let mut by_size: HashMap<u64, u32> = HashMap::new();
            for (s, _) in &live {
                *by_size.entry(s.capacity()).or_default() += 1;
            }
            for st in slab.stats() {
                prop_assert_eq!(st.used, by_size.get(&st.slot_size).copied().unwrap_or(0));
            }
        }
        drop(live);
        prop_assert_eq!(slab.used_slots(), 0);
        // Every slot can be allocated again: nothing leaked off the lists.
        let all: Vec<_> = std::iter::from_fn(|| slab.alloc(1).ok()).collect();
        prop_assert_eq!(all.len(), 7);
    }
}

#[test]
fn the_worked_example_of_the_layout_doc_holds() {
    // docs/layout.md, "Worked example".
    let cfg = SlabConfig::new().class(4096, 32).class(65536, 4);
    assert_eq!(cfg.control_bytes().unwrap(), 5128);
    assert_eq!(cfg.data_bytes().unwrap(), 393216);
    let seg = Segment::anonymous(&cfg).unwrap();
    let slab = seg.slab();
    let at = |p: *const u8| p as usize - seg.control().base() as usize;
    let hot = |c: u8| at((slab.hot(slab.class(c)) as *const super::slab::ClassHot).cast());
    let bits = |c: u8| at(slab.bits(slab.class(c)).as_ptr().cast());
    let area = hot(0) - 64 - 128; // the slab area's start
    assert_eq!(hot(1) - area, 128 + 128 + 64); // meta, class 0, descriptor
    assert_eq!(bits(0) - area, 4992);
    assert_eq!(bits(1) - area, 5120);
}

/// A read-only data mapping can be given a writable alias of the same
/// pages (for device imports); a writable mapping needs none.
#[test]
#[cfg_attr(miri, ignore = "Miri cannot map shared memory")]
fn a_read_only_mapping_has_a_writable_alias_of_the_same_pages() {
    let name = format!("unit-alias-{}", std::process::id());
    let cfg = SlabConfig::new().class(4096, 4);
    let seg = Segment::create(&name, &cfg).unwrap();
    let ro = Segment::open_with(&name, DataAccess::ReadOnly).unwrap();
    Segment::unlink(&name).unwrap();
    assert!(seg.memory().writable_alias(0, 4096).is_none());
    let mem = ro.memory();
    let data_len = mem.data.len();
    let (alias, lead) = mem.writable_alias(4096 + 100, 64).unwrap().unwrap();
    assert_eq!(lead, 100);
    assert!(alias.writable());
    // SAFETY: nobody else touches these bytes of the test's own segment.
    unsafe { alias.bytes_mut(lead, 3) }.copy_from_slice(&[1, 2, 3]);
    // SAFETY: as above.
    assert_eq!(unsafe { mem.data.bytes(4096 + 100, 3) }, &[1, 2, 3]);
    // SAFETY: as above.
    let creator_view = unsafe { seg.memory().data.bytes(4096 + 100, 3) };
    assert_eq!(creator_view, &[1, 2, 3]);
    assert!(matches!(
        mem.writable_alias(data_len - 10, 64),
        Some(Err(Error::InvalidConfig(_)))
    ));
}
