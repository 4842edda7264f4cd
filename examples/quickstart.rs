//! psyne quickstart: one process writes tensors of several dtypes straight
//! into a shared-memory segment; a second process (this program, started
//! again as a child) reads them in place by handle and checks every element.
//!
//! ```text
//! cargo run --release --example quickstart
//! ```
//!
//! Only 16-byte handles cross the pipe between the processes; the tensors
//! themselves never move. The consumer maps the data region read-only.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Instant;

use half::bf16;
use psyne::{DataAccess, Handle, QuantKind, Segment, Shape, SlabConfig};

/// The value at flat index `i` of every demo tensor (before conversion).
fn value(i: usize) -> f64 {
    ((i % 1000) as f64 * 0.731).sin() * 100.0
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("consume") {
        return consume(&args[2]);
    }
    produce()
}

fn produce() -> Result<(), Box<dyn std::error::Error>> {
    let name = format!("quickstart-{}", std::process::id());
    let cfg = SlabConfig::new().class(64 << 10, 16).class(16 << 20, 4);
    let seg = Segment::create(&name, &cfg)?;
    println!(
        "created segment {name:?}: {} MiB of slots",
        seg.info().data_size >> 20
    );

    let slab = seg.slab();
    let mut lines = Vec::new();
    let t0 = Instant::now();

    // f32: a 1024 x 1024 matrix (4 MiB), written in place.
    let mut s = slab.alloc_tensor::<f32>(&Shape::matrix(1024, 1024)?)?;
    for (i, x) in s.tensor_mut::<f32>()?.iter_mut().enumerate() {
        *x = value(i) as f32;
    }
    lines.push(format!("f32 {}", s.into_handle()));

    // f64: a 3-d tensor.
    let mut s = slab.alloc_tensor::<f64>(&Shape::new(&[8u64, 16, 32])?)?;
    for (i, x) in s.tensor_mut::<f64>()?.iter_mut().enumerate() {
        *x = value(i);
    }
    lines.push(format!("f64 {}", s.into_handle()));

    // bf16 and i8 vectors.
    let mut s = slab.alloc_tensor::<bf16>(&Shape::vector(10_000))?;
    for (i, x) in s.tensor_mut::<bf16>()?.iter_mut().enumerate() {
        *x = bf16::from_f64(value(i));
    }
    lines.push(format!("bf16 {}", s.into_handle()));
    let mut s = slab.alloc_tensor::<i8>(&Shape::vector(50_000))?;
    for (i, x) in s.tensor_mut::<i8>()?.iter_mut().enumerate() {
        *x = value(i) as i8;
    }
    lines.push(format!("i8 {}", s.into_handle()));

    // Block-quantized: 4-bit values with one f16 scale per 32.
    let data: Vec<f32> = (0..65_536).map(|i| value(i) as f32).collect();
    let shape = Shape::vector(data.len());
    let mut s = slab.alloc(psyne::tensor::quant::storage_size(
        QuantKind::Q4Block,
        &shape,
    )?)?;
    s.write_quantized(&data, &shape, QuantKind::Q4Block)?;
    lines.push(format!("q4block {}", s.into_handle()));
    let wrote = t0.elapsed();

    let mut child = Command::new(std::env::current_exe()?)
        .args(["consume", &name])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    {
        let mut stdin = child.stdin.take().expect("piped");
        for l in &lines {
            writeln!(stdin, "{l}")?;
        }
    }
    let t1 = Instant::now();
    for line in BufReader::new(child.stdout.take().expect("piped")).lines() {
        println!("  consumer: {}", line?);
    }
    let status = child.wait()?;
    println!(
        "wrote 5 tensors in {:.2} ms; consumer process started, checked every element and exited in {:.2} ms",
        wrote.as_secs_f64() * 1e3,
        t1.elapsed().as_secs_f64() * 1e3
    );
    println!(
        "slots in use after the consumer dropped its views: {}",
        slab.used_slots()
    );
    Segment::unlink(&name)?;
    if !status.success() || slab.used_slots() != 0 {
        return Err("the consumer found a mismatch".into());
    }
    println!("ok");
    Ok(())
}

fn consume(name: &str) -> Result<(), Box<dyn std::error::Error>> {
    let seg = Segment::open_with(name, DataAccess::ReadOnly)?;
    let mut bad = 0usize;
    for line in std::io::stdin().lock().lines() {
        let line = line?;
        let (kind, handle) = line.split_once(' ').ok_or("malformed line")?;
        let handle: Handle = handle.parse()?;
        let t = Instant::now();
        let slot = seg.slab().take(handle)?;
        let meta = slot.meta()?;
        let took = t.elapsed();
        // Largest difference from the expected values, in the dtype's terms.
        let (worst, bound) = match kind {
            "f32" => (
                max_err(slot.tensor::<f32>()?.iter().map(|&x| x as f64)),
                1e-4,
            ),
            "f64" => (max_err(slot.tensor::<f64>()?.iter().copied()), 0.0),
            "bf16" => (
                max_err(slot.tensor::<bf16>()?.iter().map(|x| x.to_f64())),
                0.5,
            ),
            "i8" => (
                max_err_by(slot.tensor::<i8>()?.iter().map(|&x| x as f64), |v| {
                    v as i8 as f64
                }),
                0.0,
            ),
            "q4block" => (
                max_err(slot.quantized()?.dequantize()?.into_iter().map(f64::from)),
                100.0 / 7.0 / 2.0 + 0.1,
            ),
            k => return Err(format!("unknown kind {k}").into()),
        };
        let ok = worst <= bound;
        bad += !ok as usize;
        println!(
            "{kind:>8} {:>14} {:>9} bytes, opened in {:>6.1} us, max error {worst:.3e} (bound {bound:.1e}) {}",
            meta.shape.to_string(),
            meta.nbytes,
            took.as_secs_f64() * 1e6,
            if ok { "ok" } else { "MISMATCH" }
        );
    }
    if bad > 0 {
        std::process::exit(1);
    }
    Ok(())
}

fn max_err(vals: impl Iterator<Item = f64>) -> f64 {
    max_err_by(vals, |v| v)
}

fn max_err_by(vals: impl Iterator<Item = f64>, expect: impl Fn(f64) -> f64) -> f64 {
    vals.enumerate()
        .map(|(i, x)| (x - expect(value(i))).abs())
        .fold(0.0, f64::max)
}
