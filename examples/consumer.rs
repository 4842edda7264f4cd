//! Receives the matrices of `examples/producer.rs` and checks them.
//!
//! ```text
//! cargo run --release --example consumer -- "ipc://frames?capacity=64&slab=64MiB"
//! ```
//!
//! Exits when the producer has gone and the queue is drained, or after 30 s
//! without a message.

use std::time::Duration;

use psyne::{Error, Receiver};

fn main() -> psyne::Result<()> {
    let uri = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "ipc://frames?capacity=64&slab=64MiB".to_string());
    let rx = Receiver::connect(&uri)?;
    println!("consumer on {uri}: waiting for matrices");
    let (mut got, mut bad) = (0u64, 0u64);
    loop {
        let msg = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(m) => m,
            Err(Error::Disconnected(_)) => break,
            Err(Error::Timeout(_)) => {
                println!("no message for 30 s; giving up");
                break;
            }
            Err(e) => return Err(e),
        };
        let seq = msg.meta()?.seq;
        let m = psyne::Matrix::try_from(msg.tensor::<f32>()?)?;
        let ok = m.iter_rows().enumerate().all(|(r, row)| {
            row.iter()
                .enumerate()
                .all(|(c, &x)| x == seq as f32 + r as f32 * 1e-3 + c as f32 * 1e-6)
        });
        bad += !ok as u64;
        got += 1;
        if got % 100 == 0 {
            println!("received {got} (last seq {seq}), {bad} bad");
        }
    }
    let (sent, received, dropped) = rx.counts();
    println!("done: received {got}, {bad} bad; channel totals: sent {sent}, received {received}, dropped {dropped}");
    if bad > 0 {
        std::process::exit(1);
    }
    Ok(())
}
