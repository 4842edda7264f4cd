//! psyne quickstart: a producer sends tensors over an `ipc://` channel to a
//! consumer process (this program, started again as a child), which checks
//! every element and reports throughput and latency.
//!
//! ```text
//! cargo run --release --example quickstart
//! ```
//!
//! Tensors are written once, straight into shared memory; only 16-byte
//! handles travel on the channel's ring. The consumer maps the tensor data
//! read-only.

use std::time::Instant;

use half::bf16;
use nix::time::{clock_gettime, ClockId};
use psyne::{QuantKind, Receiver, Sender, Shape};

/// Tags telling the consumer what each message is.
const F32: u32 = 1;
const F64: u32 = 2;
const BF16: u32 = 3;
const I8: u32 = 4;
const Q4: u32 = 5;
const SMALL: u32 = 6;
const LARGE: u32 = 7;

const SMALL_N: u64 = 50_000;
const LARGE_N: u64 = 200;

/// The value at flat index `i` of every demo tensor (before conversion).
fn value(i: usize) -> f64 {
    ((i % 1000) as f64 * 0.731).sin() * 100.0
}

/// Nanoseconds on the system-wide monotonic clock (comparable across
/// processes).
fn now_ns() -> u64 {
    let t = clock_gettime(ClockId::CLOCK_MONOTONIC).expect("monotonic clock");
    t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("consume") {
        return consume(&args[2]);
    }
    produce()
}

fn produce() -> Result<(), Box<dyn std::error::Error>> {
    let uri = format!(
        "ipc://quickstart-{}?capacity=256&slab=256MiB&pattern=spsc",
        std::process::id()
    );
    println!("channel {uri}");
    let mut consumer = std::process::Command::new(std::env::current_exe()?)
        .args(["consume", &uri])
        .spawn()?;
    let tx = Sender::connect(&uri)?;

    // Five tensors of different dtypes, written in place.
    let mut loan = tx.loan::<f32>(&Shape::matrix(1024, 1024)?)?;
    for (i, x) in loan.tensor_mut::<f32>()?.iter_mut().enumerate() {
        *x = value(i) as f32;
    }
    loan.set_type_tag(F32);
    loan.send()?;
    let mut loan = tx.loan::<f64>(&Shape::new(&[8u64, 16, 32])?)?;
    for (i, x) in loan.tensor_mut::<f64>()?.iter_mut().enumerate() {
        *x = value(i);
    }
    loan.set_type_tag(F64);
    loan.send()?;
    let mut loan = tx.loan::<bf16>(&Shape::vector(10_000))?;
    for (i, x) in loan.tensor_mut::<bf16>()?.iter_mut().enumerate() {
        *x = bf16::from_f64(value(i));
    }
    loan.set_type_tag(BF16);
    loan.send()?;
    let mut loan = tx.loan::<i8>(&Shape::vector(50_000))?;
    for (i, x) in loan.tensor_mut::<i8>()?.iter_mut().enumerate() {
        *x = value(i) as i8;
    }
    loan.set_type_tag(I8);
    loan.send()?;
    let data: Vec<f32> = (0..65_536).map(|i| value(i) as f32).collect();
    let shape = Shape::vector(data.len());
    let mut loan = tx.loan_bytes(psyne::tensor::quant::storage_size(
        QuantKind::Q4Block,
        &shape,
    )?)?;
    loan.write_quantized(&data, &shape, QuantKind::Q4Block)?;
    loan.set_type_tag(Q4);
    loan.send()?;

    // Many small messages, then fewer 4 MiB ones, each stamped at send.
    let t0 = Instant::now();
    for seq in 0..SMALL_N {
        let mut loan = tx.loan::<f32>(&Shape::vector(16))?;
        loan.tensor_mut::<f32>()?.fill(seq as f32);
        loan.set_type_tag(SMALL);
        loan.set_seq(seq);
        loan.set_timestamp_ns(now_ns());
        loan.send()?;
    }
    let small = t0.elapsed();
    let t1 = Instant::now();
    for seq in 0..LARGE_N {
        let mut loan = tx.loan::<f32>(&Shape::vector(1 << 20))?;
        loan.tensor_mut::<f32>()?[0] = seq as f32;
        loan.set_type_tag(LARGE);
        loan.set_seq(seq);
        loan.set_timestamp_ns(now_ns());
        loan.send()?;
    }
    let large = t1.elapsed();
    drop(tx); // the consumer sees the end of the stream
    let status = consumer.wait()?;
    println!(
        "producer: {SMALL_N} x 64 B in {:.1} ms ({:.0} msg/s), {LARGE_N} x 4 MiB in {:.1} ms",
        small.as_secs_f64() * 1e3,
        SMALL_N as f64 / small.as_secs_f64(),
        large.as_secs_f64() * 1e3
    );
    if !status.success() {
        return Err("the consumer found a mismatch".into());
    }
    println!("ok");
    Ok(())
}

fn percentiles(mut v: Vec<u64>) -> String {
    v.sort_unstable();
    let p = |q: f64| v[((v.len() - 1) as f64 * q) as usize] as f64 / 1e3;
    format!(
        "p50 {:.1} us, p99 {:.1} us, max {:.1} us",
        p(0.5),
        p(0.99),
        p(1.0)
    )
}

fn consume(uri: &str) -> Result<(), Box<dyn std::error::Error>> {
    let rx = Receiver::connect(uri)?;
    let mut bad = 0usize;
    let (mut small, mut large) = (Vec::new(), Vec::new());
    let mut first_small = None;
    for msg in rx.iter() {
        let meta = msg.meta()?;
        let arrived = now_ns();
        let (name, worst, bound) = match meta.type_tag {
            F32 => (
                "f32",
                max_err(msg.tensor::<f32>()?.iter().map(|&x| x as f64)),
                1e-4,
            ),
            F64 => ("f64", max_err(msg.tensor::<f64>()?.iter().copied()), 0.0),
            BF16 => (
                "bf16",
                max_err(msg.tensor::<bf16>()?.iter().map(|x| x.to_f64())),
                0.5,
            ),
            I8 => {
                let t = msg.tensor::<i8>()?;
                let e = t
                    .iter()
                    .enumerate()
                    .map(|(i, &x)| (x as f64 - (value(i) as i8) as f64).abs())
                    .fold(0.0, f64::max);
                ("i8", e, 0.0)
            }
            Q4 => {
                let v = msg.quantized()?.dequantize()?;
                (
                    "q4block",
                    max_err(v.into_iter().map(f64::from)),
                    100.0 / 7.0 / 2.0 + 0.1,
                )
            }
            SMALL => {
                first_small.get_or_insert_with(Instant::now);
                small.push(arrived.saturating_sub(meta.timestamp_ns));
                let ok = msg.tensor::<f32>()?.iter().all(|&x| x == meta.seq as f32);
                bad += !ok as usize;
                continue;
            }
            LARGE => {
                large.push(arrived.saturating_sub(meta.timestamp_ns));
                bad += (msg.tensor::<f32>()?[0] != meta.seq as f32) as usize;
                continue;
            }
            t => return Err(format!("unknown tag {t}").into()),
        };
        let ok = worst <= bound;
        bad += !ok as usize;
        println!(
            "consumer: {name:>8} {:>14} {:>9} bytes, max error {worst:.2e} (bound {bound:.1e}) {}",
            meta.shape.to_string(),
            meta.nbytes,
            if ok { "ok" } else { "MISMATCH" }
        );
    }
    let secs = first_small.map_or(0.0, |t| t.elapsed().as_secs_f64());
    println!(
        "consumer: {} small messages checked ({:.0} msg/s end to end); send-to-receive time in a full-speed burst (queueing included) {}",
        small.len(),
        small.len() as f64 / secs,
        percentiles(small.clone())
    );
    println!(
        "consumer: {} x 4 MiB checked; send-to-receive time {}",
        large.len(),
        percentiles(large.clone())
    );
    if bad > 0 || small.len() as u64 != SMALL_N || large.len() as u64 != LARGE_N {
        std::process::exit(1);
    }
    Ok(())
}

fn max_err(vals: impl Iterator<Item = f64>) -> f64 {
    vals.enumerate()
        .map(|(i, x)| (x - value(i)).abs())
        .fold(0.0, f64::max)
}
