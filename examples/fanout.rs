//! One publisher, several subscriber processes on a broadcast channel:
//! every subscriber receives every tensor, in place, from the same slot.
//!
//! ```text
//! cargo run --release --example fanout            # 3 subscribers, 1000 tensors
//! cargo run --release --example fanout -- 5 200   # 5 subscribers, 200 tensors
//! ```
//!
//! A subscriber that falls a whole ring behind would be told how many
//! messages it missed (`policy=drop_oldest`); this example uses the default
//! `policy=block`, so the publisher waits for the slowest one instead.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Instant;

use psyne::{Receiver, Sender, Shape};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("subscribe") {
        return subscribe(&args[2], args[3].parse()?);
    }
    let subscribers: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(3);
    let count: u64 = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(1000);
    let uri = format!(
        "ipc://fanout-{}?capacity=32&slab=64MiB&pattern=broadcast",
        std::process::id()
    );
    let tx = Sender::connect(&uri)?;
    let mut kids = Vec::new();
    for _ in 0..subscribers {
        let mut kid = Command::new(std::env::current_exe()?)
            .args(["subscribe", &uri, &count.to_string()])
            .stdout(Stdio::piped())
            .spawn()?;
        // Wait until it has subscribed: it sees messages published after.
        let mut out = BufReader::new(kid.stdout.take().expect("piped"));
        let mut line = String::new();
        out.read_line(&mut line)?;
        kids.push((kid, out));
    }
    println!("publishing {count} tensors of 64K f32 to {subscribers} subscriber processes");
    let start = Instant::now();
    for seq in 0..count {
        let mut loan = tx.loan::<f32>(&Shape::vector(65_536))?;
        loan.tensor_mut::<f32>()?.fill(seq as f32);
        loan.set_seq(seq);
        loan.send()?;
    }
    drop(tx);
    let mut ok = true;
    for (mut kid, out) in kids {
        for line in out.lines() {
            println!("  {}", line?);
        }
        ok &= kid.wait()?.success();
    }
    let t = start.elapsed();
    println!(
        "{} deliveries in {:.1} ms ({:.0} tensors/s per subscriber)",
        count * subscribers as u64,
        t.as_secs_f64() * 1e3,
        count as f64 / t.as_secs_f64()
    );
    if !ok {
        return Err("a subscriber failed".into());
    }
    Ok(())
}

fn subscribe(uri: &str, count: u64) -> Result<(), Box<dyn std::error::Error>> {
    let rx = Receiver::connect(uri)?;
    println!("subscribed");
    let (mut got, mut bad) = (0u64, 0u64);
    for msg in rx.iter() {
        let seq = msg.meta()?.seq;
        bad += (seq != got || msg.tensor::<f32>()?.iter().any(|&x| x != seq as f32)) as u64;
        got += 1;
    }
    println!(
        "subscriber {}: {got} received, {bad} bad",
        std::process::id()
    );
    if got != count || bad != 0 {
        std::process::exit(1);
    }
    Ok(())
}
