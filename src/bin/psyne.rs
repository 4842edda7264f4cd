//! `psyne`: inspect, benchmark and clean up psyne shared-memory segments.
//!
//! ```text
//! psyne list                 every psyne segment on this machine, with its state
//! psyne inspect NAME...      header, layout, slab usage and channel state
//! psyne clean NAME...        remove segment names (mapped copies live on)
//! psyne clean --stale        remove every segment no live process uses
//!       [--older-than SECS] [--prefix P]   (default: created over 10 s ago)
//! psyne bench [SIZE] [N]     ipc:// latency and throughput against baselines
//! ```

use std::hint::black_box;
use std::process::{Command, ExitCode};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use psyne::{DataAccess, Receiver, Segment, Sender};

const USAGE: &str = "usage:
  psyne list              list psyne segments on this machine
  psyne inspect NAME...   show a segment's header, layout, slab usage, channel state
  psyne clean NAME...     remove segments by name
  psyne clean --stale [--older-than SECS] [--prefix P]
                          remove segments whose creator and endpoints are all
                          gone, created more than SECS (default 10) seconds ago,
                          whose name starts with P; queued messages for a
                          consumer that has not started yet go with them
  psyne bench [SIZE] [N]  ping-pong and stream SIZE-byte tensors (default 4096)
                          N times (default 20000) over ipc:// with a child
                          process; prints latency and throughput next to a
                          cache-line round trip and memcpy measured in the same run";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("list") if args.len() == 1 => list(),
        Some("inspect") if args.len() > 1 => args[1..].iter().try_for_each(|n| inspect(n)),
        Some("clean") if args.get(1).map(String::as_str) == Some("--stale") => {
            clean_stale(&args[2..])
        }
        Some("clean") if args.len() > 1 => args[1..].iter().try_for_each(|n| clean(n)),
        Some("bench") if args.len() <= 3 => bench(args.get(1), args.get(2)),
        Some("bench-child") if args.len() == 4 => bench_child(&args[1], &args[2], &args[3]),
        Some("-h" | "--help" | "help") => {
            println!("{USAGE}");
            Ok(())
        }
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("psyne: {e}");
            ExitCode::FAILURE
        }
    }
}

fn pid_alive(pid: u32) -> bool {
    // Signal 0 checks existence; EPERM means it exists but is not ours.
    match nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), None) {
        Ok(()) => true,
        Err(e) => e == nix::errno::Errno::EPERM,
    }
}

fn size(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

fn list() -> psyne::Result<()> {
    let names = Segment::list()?;
    if names.is_empty() {
        println!("no psyne segments");
        return Ok(());
    }
    println!(
        "{:<40} {:>10} {:>8} {:>10}  state",
        "name", "size", "creator", "slots used"
    );
    for name in names {
        match Segment::open_with(&name, DataAccess::ReadOnly) {
            Ok(seg) => {
                let info = seg.info();
                let used = seg.slab().used_slots();
                let total: u64 = seg.slab().stats().iter().map(|c| c.slots as u64).sum();
                let state = if pid_alive(info.creator_pid) {
                    "creator alive"
                } else {
                    "creator gone"
                };
                println!(
                    "{name:<40} {:>10} {:>8} {:>10}  {state}",
                    size(info.total_size),
                    info.creator_pid,
                    format!("{used}/{total}")
                );
            }
            Err(e) => println!(
                "{name:<40} {:>10} {:>8} {:>10}  unreadable: {e}",
                "-", "-", "-"
            ),
        }
    }
    Ok(())
}

fn inspect(name: &str) -> psyne::Result<()> {
    let seg = Segment::open_with(name, DataAccess::ReadOnly)?;
    let info = seg.info();
    let age = SystemTime::now()
        .duration_since(info.created)
        .unwrap_or_default();
    println!("segment {name}");
    println!("  layout version  {}", info.version);
    println!(
        "  size            {} (control {}, data {})",
        size(info.total_size),
        size(info.control_size),
        size(info.data_size)
    );
    println!(
        "  creator         pid {} ({}), uid {}, mode {:o}, {:.0} s ago",
        info.creator_pid,
        if pid_alive(info.creator_pid) {
            "alive"
        } else {
            "gone"
        },
        info.creator_uid,
        info.mode,
        age.as_secs_f64()
    );
    match psyne::channel::inspect(&seg) {
        Ok(Some(ch)) => {
            let c = ch.config;
            println!(
                "  channel         pattern {}, policy {}, capacity {}, {} queued",
                c.pattern, c.policy, c.capacity, ch.queued
            );
            println!(
                "  traffic         {} sent, {} received, {} dropped",
                ch.sent, ch.received, ch.dropped
            );
            println!(
                "  endpoints       {} senders, {} receivers",
                ch.senders, ch.receivers
            );
            for e in &ch.participants {
                let beat = match e.heartbeat_age() {
                    Some(age) => format!(", last heartbeat {:.1} s ago", age.as_secs_f64()),
                    None => String::new(),
                };
                println!(
                    "    pid {:<8} {:<9} {}{beat}",
                    e.pid,
                    e.side,
                    if e.alive {
                        "alive"
                    } else {
                        "dead (reaped when a live endpoint next looks)"
                    }
                );
            }
        }
        Ok(None) => {}
        Err(e) => println!("  channel         unreadable: {e}"),
    }
    println!("  slab classes");
    println!(
        "    {:>10} {:>8} {:>8} {:>12} {:>10}",
        "slot size", "slots", "used", "allocs", "failures"
    );
    for c in seg.slab().stats() {
        println!(
            "    {:>10} {:>8} {:>8} {:>12} {:>10}",
            size(c.slot_size),
            c.slots,
            c.used,
            c.allocs,
            c.failures
        );
    }
    Ok(())
}

fn clean(name: &str) -> psyne::Result<()> {
    Segment::unlink(name)?;
    println!("removed {name}");
    Ok(())
}

/// Whether a live process still uses the segment: its creator, or (for a
/// channel) any registered endpoint.
fn in_use(seg: &Segment) -> bool {
    if pid_alive(seg.info().creator_pid) {
        return true;
    }
    match psyne::channel::inspect(seg) {
        Ok(Some(ch)) => ch.endpoints.iter().any(|e| e.2),
        _ => false,
    }
}

fn clean_stale(opts: &[String]) -> psyne::Result<()> {
    let bad =
        || psyne::Error::InvalidConfig(format!("clean --stale: bad options {opts:?}\n{USAGE}"));
    let (mut min_age, mut prefix) = (Duration::from_secs(10), String::new());
    let mut it = opts.iter();
    while let Some(o) = it.next() {
        match (o.as_str(), it.next()) {
            ("--older-than", Some(v)) => {
                min_age = Duration::from_secs_f64(v.parse::<f64>().map_err(|_| bad())?)
            }
            ("--prefix", Some(v)) => prefix = v.clone(),
            _ => return Err(bad()),
        }
    }
    let mut removed = 0;
    for name in Segment::list()?
        .into_iter()
        .filter(|n| n.starts_with(&prefix))
    {
        let stale = match Segment::open_with(&name, DataAccess::ReadOnly) {
            Ok(seg) => {
                let age = SystemTime::now()
                    .duration_since(seg.info().created)
                    .unwrap_or_default();
                // A young segment may belong to a process that is starting.
                age >= min_age && !in_use(&seg)
            }
            // Unreadable (foreign, corrupt, half-created by a dead process):
            // leave it for `psyne clean NAME`, which says what it removes.
            Err(e) => {
                println!("kept {name}: unreadable ({e})");
                false
            }
        };
        if stale {
            Segment::unlink(&name)?;
            println!("removed {name} (no live process uses it)");
            removed += 1;
        }
    }
    println!("{removed} stale segment(s) removed");
    Ok(())
}

fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let (num, mul) = match s.find(|c: char| !c.is_ascii_digit()) {
        None => (s, 1),
        Some(i) => (
            &s[..i],
            match &s[i..] {
                "B" => 1,
                "KiB" | "K" | "k" => 1 << 10,
                "MiB" | "M" => 1 << 20,
                "GiB" | "G" => 1 << 30,
                _ => return None,
            },
        ),
    };
    num.parse::<u64>().ok()?.checked_mul(mul)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn us(d: Duration) -> String {
    format!("{:.2} us", d.as_secs_f64() * 1e6)
}

/// A cache-line round trip between two threads: the floor under any
/// handoff between the cores, measured now on this machine.
fn cacheline_rtt(rounds: u64) -> Duration {
    let word = Arc::new(AtomicU64::new(0));
    let w = word.clone();
    let echo = std::thread::spawn(move || {
        for i in 0..rounds {
            while w.load(Ordering::Acquire) != 2 * i + 1 {
                std::hint::spin_loop();
            }
            w.store(2 * i + 2, Ordering::Release);
        }
    });
    let start = Instant::now();
    for i in 0..rounds {
        word.store(2 * i + 1, Ordering::Release);
        while word.load(Ordering::Acquire) != 2 * i + 2 {
            std::hint::spin_loop();
        }
    }
    let t = start.elapsed();
    echo.join().expect("echo thread");
    t / rounds as u32
}

/// memcpy of `size` bytes between two buffers that stay in place.
fn memcpy_time(size: usize) -> Duration {
    let src = vec![1u8; size];
    let mut dst = vec![0u8; size];
    let reps = (256 << 20) / size.max(1) + 10;
    let start = Instant::now();
    for _ in 0..reps {
        dst.copy_from_slice(black_box(&src));
        black_box(&mut dst);
    }
    start.elapsed() / reps as u32
}

fn bench(size: Option<&String>, count: Option<&String>) -> psyne::Result<()> {
    let bad = |what: &str, v: &str| psyne::Error::InvalidConfig(format!("bench: bad {what} {v:?}"));
    let size = match size {
        Some(s) => parse_size(s)
            .filter(|&n| n > 0)
            .ok_or_else(|| bad("size", s))?,
        None => 4096,
    };
    let count: u64 = match count {
        Some(s) => s
            .parse()
            .ok()
            .filter(|&n| n > 0)
            .ok_or_else(|| bad("count", s))?,
        None => 20_000,
    };
    let slab = (size * 64).max(1 << 20).next_power_of_two();
    let tag = format!("bench-{}", std::process::id());
    let ping = format!("ipc://{tag}-ping?capacity=64&slab={slab}&pattern=spsc");
    let pong = format!("ipc://{tag}-pong?capacity=64&slab={slab}&pattern=spsc");
    let tx = Sender::connect(&ping)?;
    let rx = Receiver::connect(&pong)?;
    let exe = std::env::current_exe().map_err(|e| psyne::Error::InvalidConfig(e.to_string()))?;
    let mut child = Command::new(exe)
        .args(["bench-child", &ping, &pong, &count.to_string()])
        .spawn()
        .map_err(|e| psyne::Error::InvalidConfig(format!("cannot start the echo process: {e}")))?;
    println!(
        "psyne bench: {size}-byte tensors over ipc:// spsc between two processes, \
         {count} round trips, then {count} messages streamed"
    );

    // Latency: ping-pong; one-way is half a round trip.
    let warm = count.min(1000);
    let mut rtts = Vec::with_capacity(count as usize);
    for i in 0..warm + count {
        let start = Instant::now();
        let mut loan = tx.loan_bytes(size)?;
        loan.set_seq(i);
        loan.send()?;
        let back = rx.recv()?;
        let t = start.elapsed();
        drop(back);
        if i >= warm {
            rtts.push(t);
        }
    }
    // Throughput: stream, the child counts and acknowledges the last one.
    let start = Instant::now();
    for i in 0..count {
        let mut loan = tx.loan_bytes(size)?;
        loan.set_seq(u64::MAX - count + i + 1);
        loan.send()?;
    }
    drop(rx.recv()?);
    let stream = start.elapsed();
    drop(tx);
    let status = child
        .wait()
        .map_err(|e| psyne::Error::InvalidConfig(format!("echo process: {e}")))?;
    if !status.success() {
        return Err(psyne::Error::InvalidConfig(format!(
            "the echo process failed: {status}"
        )));
    }

    let line = cacheline_rtt(200_000);
    let copy = memcpy_time(size as usize);
    rtts.sort();
    let one_way = |d: Duration| d / 2;
    let p50 = one_way(percentile(&rtts, 0.5));
    let rate = count as f64 / stream.as_secs_f64();
    println!(
        "  one-way latency   p50 {}  p90 {}  p99 {}  max {}",
        us(p50),
        us(one_way(percentile(&rtts, 0.9))),
        us(one_way(percentile(&rtts, 0.99))),
        us(one_way(*rtts.last().expect("count > 0")))
    );
    println!(
        "  streaming         {:.0} messages/s ({:.2} GB/s of tensor bytes handed over, none copied)",
        rate,
        rate * size as f64 / 1e9
    );
    println!(
        "  baselines         cache-line round trip between two threads {}; memcpy of {size} B {}",
        us(line),
        us(copy)
    );
    println!(
        "  ratios            one-way p50 / cache-line round trip {:.1}x; \
         one-way p50 / memcpy of the payload {:.2}x",
        p50.as_secs_f64() / line.as_secs_f64(),
        p50.as_secs_f64() / copy.as_secs_f64()
    );
    Ok(())
}

/// The echo process of `psyne bench`: answers each ping, then counts the
/// stream and acknowledges its end.
fn bench_child(ping: &str, pong: &str, count: &str) -> psyne::Result<()> {
    let count: u64 = count
        .parse()
        .map_err(|_| psyne::Error::InvalidConfig(format!("bad count {count:?}")))?;
    let rx = Receiver::connect(ping)?;
    let tx = Sender::connect(pong)?;
    let warm = count.min(1000);
    for _ in 0..warm + count {
        let m = rx.recv()?;
        let mut loan = tx.loan_bytes(m.len())?;
        loan.set_seq(m.meta()?.seq);
        drop(m);
        loan.send()?;
    }
    for _ in 0..count {
        drop(rx.recv()?);
    }
    tx.loan_bytes(1)?.send()?;
    // Drain until the parent hangs up, so its segment is not left behind.
    for _ in rx.iter() {}
    Ok(())
}
