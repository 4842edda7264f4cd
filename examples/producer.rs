//! Sends a stream of f32 matrices on an `ipc://` channel. Run the consumer
//! in another terminal, with the same URI (either may start first):
//!
//! ```text
//! cargo run --release --example producer -- "ipc://frames?capacity=64&slab=64MiB" 1000
//! cargo run --release --example consumer -- "ipc://frames?capacity=64&slab=64MiB"
//! ```
//!
//! Each message is a 256 x 256 matrix whose element (r, c) is
//! `seq + r * 0.001 + c * 0.000001`; the consumer checks it.

use std::time::{Duration, Instant};

use psyne::{Sender, Shape};

fn main() -> psyne::Result<()> {
    let mut args = std::env::args().skip(1);
    let uri = args
        .next()
        .unwrap_or_else(|| "ipc://frames?capacity=64&slab=64MiB".to_string());
    let count: u64 = args.next().and_then(|n| n.parse().ok()).unwrap_or(1000);
    let tx = Sender::connect(&uri)?;
    println!("producer on {uri}: sending {count} matrices of 256 x 256 f32");
    let start = Instant::now();
    for seq in 0..count {
        let mut loan = tx.loan::<f32>(&Shape::matrix(256, 256)?)?;
        {
            let mut m = psyne::MatrixMut::try_from(loan.tensor_mut::<f32>()?)?;
            for r in 0..256 {
                for (c, x) in m.row_mut(r).expect("row").iter_mut().enumerate() {
                    *x = seq as f32 + r as f32 * 1e-3 + c as f32 * 1e-6;
                }
            }
        }
        loan.set_seq(seq);
        loan.send()?;
        if seq % 100 == 99 {
            println!("sent {}", seq + 1);
        }
    }
    let t = start.elapsed();
    println!(
        "sent {count} in {:.1} ms ({:.0} matrices/s, {:.1} GB/s written in place)",
        t.as_secs_f64() * 1e3,
        count as f64 / t.as_secs_f64(),
        (count * 256 * 256 * 4) as f64 / t.as_secs_f64() / 1e9
    );
    // Give a consumer that has not connected yet a moment: messages stay
    // queued in the segment after we exit, so nothing is lost either way.
    std::thread::sleep(Duration::from_millis(10));
    Ok(())
}
