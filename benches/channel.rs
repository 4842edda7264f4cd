//! Channel latency and throughput, with baselines measured in the same run.
//!
//! `cargo bench --bench channel`
//!
//! - `cacheline_rtt`: a bare cache-line round trip between two processes
//!   (an atomic word in shared memory bounced by spinning): the floor for
//!   any cross-process handoff on this machine.
//! - `ipc_rtt/<size>`: a round trip over two `ipc://` spsc channels between
//!   two processes, each direction carrying a tensor of `<size>` bytes (the
//!   payload is not touched: the point is that its size does not matter).
//!   One-way latency is half of it.
//! - `thread_rtt/<impl>`: a round trip between two threads over
//!   `memory://`, `crossbeam-channel` (bounded) and `std::sync::mpsc`
//!   (sync_channel), each carrying a 64-byte message.
//! - `throughput/<pattern>`: 64-byte messages per second over `memory://`
//!   with 1 or 2 producer and consumer threads, next to crossbeam
//!   (broadcast, 1 publisher and 2 subscribers each receiving every
//!   message: next to crossbeam with one channel per subscriber). Elements
//!   are messages sent, not deliveries.
//!
//! - `paired_ratio` (printed, not a criterion case): one-way `ipc://`
//!   latency over the cache-line round trip, measured in alternating
//!   blocks (a block of cache-line round trips, then a block of ipc round
//!   trips, twenty times per size), so that each ratio compares two
//!   figures taken within milliseconds of each other. On these VMs the
//!   cache-line round trip moves between ~45 ns and ~400 ns as the
//!   hypervisor places the two vCPUs, sometimes within one run, which
//!   makes ratios of cases measured seconds apart unreliable.
//!
//! - `paired_throughput` (printed): psyne's throughput over crossbeam's
//!   per pattern, from runs of the two alternated, for the same reason.
//!
//! The child process is this bench binary re-run with `PSYNE_BENCH_ROLE`.

use std::hint::black_box;
use std::process::{Child, Command};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput};
use psyne::{Receiver, Sender};

const ROLE: &str = "PSYNE_BENCH_ROLE";

fn main() {
    if let Ok(role) = std::env::var(ROLE) {
        child(&role);
        return;
    }
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    cacheline(&mut c);
    ipc(&mut c);
    threads(&mut c);
    throughput(&mut c);
    c.final_summary();
    // After criterion's cases: with no name filter, or one naming it.
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    if filters.is_empty() || filters.iter().any(|f| f.contains("paired")) {
        paired_ratio();
        paired_throughput();
    }
}

/// Values of the cache-line word besides the round-trip counter.
const PAUSE: u64 = u64::MAX - 1;
const STOP: u64 = u64::MAX;

fn spawn(role: &str, args: &[&str]) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .env(ROLE, role)
        .args(args)
        .spawn()
        .unwrap()
}

fn child(role: &str) {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match role {
        "cacheline" => {
            let map = shared_word(&args[0], false);
            let w = word(&map);
            loop {
                let v = w.load(Ordering::Acquire);
                if v == STOP {
                    break;
                }
                if v == PAUSE {
                    // Between blocks of `paired_ratio`: leave the core to
                    // the ipc processes (waking rarely: each wake-up
                    // disturbs their block).
                    std::thread::sleep(Duration::from_millis(1));
                    continue;
                }
                if v % 2 == 1 {
                    w.store(v + 1, Ordering::Release);
                }
                std::hint::spin_loop();
            }
        }
        "echo" => {
            let rx = Receiver::connect(&args[0]).unwrap();
            let tx = Sender::connect(&args[1]).unwrap();
            let size: u64 = args[2].parse().unwrap();
            while let Ok(msg) = rx.recv() {
                drop(msg);
                tx.loan_bytes(size).unwrap().send().unwrap();
            }
        }
        r => panic!("unknown role {r}"),
    }
}

fn shared_word(path: &str, create: bool) -> memmap2::MmapRaw {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(create)
        .truncate(false)
        .open(path)
        .unwrap();
    f.set_len(4096).unwrap();
    memmap2::MmapRaw::map_raw(&f).unwrap()
}

fn word(map: &memmap2::MmapRaw) -> &AtomicU64 {
    // SAFETY: the mapping is 4096 bytes, page-aligned, shared; an AtomicU64
    // is valid for any bits and is only accessed atomically by both sides.
    unsafe { &*(map.as_mut_ptr() as *const AtomicU64) }
}

fn cacheline(c: &mut Criterion) {
    let path = format!("/dev/shm/psyne-bench-cl-{}", std::process::id());
    let map = shared_word(&path, true);
    let w = word(&map);
    w.store(0, Ordering::Release);
    let mut kid = spawn("cacheline", &[&path]);
    c.bench_function("cacheline_rtt", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                let v = w.load(Ordering::Relaxed);
                w.store(v + 1, Ordering::Release); // odd: the child's turn
                while w.load(Ordering::Acquire) != v + 2 {
                    std::hint::spin_loop();
                }
            }
            start.elapsed()
        })
    });
    w.store(STOP, Ordering::Release);
    kid.wait().unwrap();
    let _ = std::fs::remove_file(path);
}

/// `n` cache-line round trips with the child of `cacheline`, starting from
/// a paused word (left paused again): nanoseconds per round trip.
fn cacheline_block(w: &AtomicU64, n: u32) -> f64 {
    w.store(0, Ordering::Release);
    let mut v = 0;
    let run = |v: &mut u64, n: u32| {
        for _ in 0..n {
            w.store(*v + 1, Ordering::Release);
            while w.load(Ordering::Acquire) != *v + 2 {
                std::hint::spin_loop();
            }
            *v += 2;
        }
    };
    run(&mut v, 200); // the child wakes from its pause
    let start = Instant::now();
    run(&mut v, n);
    let t = start.elapsed().as_nanos() as f64 / n as f64;
    w.store(PAUSE, Ordering::Release);
    t
}

/// One-way ipc latency over the cache-line round trip, in alternating
/// blocks; prints the median and range of the twenty ratios per size.
fn paired_ratio() {
    const PAIRS: usize = 20;
    const BLOCK: u32 = 2_000;
    let path = format!("/dev/shm/psyne-bench-pcl-{}", std::process::id());
    let map = shared_word(&path, true);
    let w = word(&map);
    w.store(PAUSE, Ordering::Release);
    let mut cl_kid = spawn("cacheline", &[&path]);
    println!("paired_ratio: one-way ipc latency / cache-line round trip, {PAIRS} alternating blocks of {BLOCK}");
    for (size, label, slab) in IPC_SIZES {
        let (tx, rx, mut kid) = echo_pair("p", size, label, slab);
        let ipc_block = |n: u32| {
            let trip = || {
                tx.loan_bytes(size).unwrap().send().unwrap();
                black_box(rx.recv().unwrap());
            };
            (0..200).for_each(|_| trip()); // the echo wakes
            let start = Instant::now();
            (0..n).for_each(|_| trip());
            start.elapsed().as_nanos() as f64 / n as f64
        };
        let mut ratios = Vec::with_capacity(PAIRS);
        let mut cls = Vec::with_capacity(PAIRS);
        for _ in 0..PAIRS {
            let cl = cacheline_block(w, BLOCK);
            let ipc = ipc_block(BLOCK);
            ratios.push(ipc / 2.0 / cl);
            cls.push(cl);
        }
        drop(tx);
        kid.wait().unwrap();
        let (med, lo, hi) = spread(&mut ratios);
        println!(
            "paired_ratio/{label}: median {med:.2}x (range {lo:.2}x-{hi:.2}x), cache-line RTT median {:.0} ns",
            spread(&mut cls).0
        );
    }
    w.store(STOP, Ordering::Release);
    cl_kid.wait().unwrap();
    let _ = std::fs::remove_file(path);
}

/// The ipc cases: message size, its label, the slab of the channels.
const IPC_SIZES: [(u64, &str, &str); 4] = [
    (64, "64B", "1MiB"),
    (4 << 10, "4KiB", "1MiB"),
    (1 << 20, "1MiB", "64MiB"),
    (64 << 20, "64MiB", "512MiB"),
];

/// A ping and a pong `ipc://` spsc channel for messages of `size` bytes
/// and the echo process answering on them (`tag` keeps the names of two
/// users apart).
fn echo_pair(tag: &str, size: u64, label: &str, slab: &str) -> (Sender, Receiver, Child) {
    let id = std::process::id();
    let params = format!("?capacity=64&slab={slab}&max_msg={size}&pattern=spsc");
    let ping = format!("ipc://bench-{tag}ping-{id}-{label}{params}");
    let pong = format!("ipc://bench-{tag}pong-{id}-{label}{params}");
    let tx = Sender::connect(&ping).unwrap();
    let rx = Receiver::connect(&pong).unwrap();
    let kid = spawn("echo", &[&ping, &pong, &size.to_string()]);
    (tx, rx, kid)
}

fn ipc(c: &mut Criterion) {
    let mut g = c.benchmark_group("ipc_rtt");
    for (size, label, slab) in IPC_SIZES {
        let (tx, rx, mut kid) = echo_pair("", size, label, slab);
        // One round trip before measuring (or skipping, under a name
        // filter): the echo process has joined both channels, so dropping
        // `tx` below disconnects it instead of leaving it to create a new,
        // empty channel of the same name and wait there for ever.
        tx.loan_bytes(size).unwrap().send().unwrap();
        drop(rx.recv().unwrap());
        g.bench_with_input(BenchmarkId::from_parameter(label), &size, |b, &size| {
            b.iter(|| {
                tx.loan_bytes(size).unwrap().send().unwrap();
                black_box(rx.recv().unwrap());
            })
        });
        drop(tx);
        kid.wait().unwrap();
    }
    g.finish();
}

fn threads(c: &mut Criterion) {
    let mut g = c.benchmark_group("thread_rtt");
    {
        let id = std::process::id();
        let ping = format!("memory://bench-tping-{id}?capacity=64&pattern=spsc");
        let pong = format!("memory://bench-tpong-{id}?capacity=64&pattern=spsc");
        let (tx, rx) = (
            Sender::connect(&ping).unwrap(),
            Receiver::connect(&pong).unwrap(),
        );
        let (erx, etx) = (
            Receiver::connect(&ping).unwrap(),
            Sender::connect(&pong).unwrap(),
        );
        let echo = std::thread::spawn(move || {
            while let Ok(m) = erx.recv() {
                drop(m);
                etx.loan_bytes(64).unwrap().send().unwrap();
            }
        });
        g.bench_function("psyne_memory", |b| {
            b.iter(|| {
                tx.loan_bytes(64).unwrap().send().unwrap();
                black_box(rx.recv().unwrap());
            })
        });
        drop(tx);
        echo.join().unwrap();
    }
    {
        let (tx, erx) = crossbeam_channel::bounded::<[u8; 64]>(64);
        let (etx, rx) = crossbeam_channel::bounded::<[u8; 64]>(64);
        let echo = std::thread::spawn(move || {
            while let Ok(m) = erx.recv() {
                etx.send(m).unwrap();
            }
        });
        g.bench_function("crossbeam_bounded", |b| {
            b.iter(|| {
                tx.send([7u8; 64]).unwrap();
                black_box(rx.recv().unwrap());
            })
        });
        drop(tx);
        echo.join().unwrap();
    }
    {
        let (tx, erx) = std::sync::mpsc::sync_channel::<[u8; 64]>(64);
        let (etx, rx) = std::sync::mpsc::sync_channel::<[u8; 64]>(64);
        let echo = std::thread::spawn(move || {
            while let Ok(m) = erx.recv() {
                etx.send(m).unwrap();
            }
        });
        g.bench_function("std_mpsc_sync", |b| {
            b.iter(|| {
                tx.send([7u8; 64]).unwrap();
                black_box(rx.recv().unwrap());
            })
        });
        drop(tx);
        echo.join().unwrap();
    }
    g.finish();
}

/// Time to move `n` messages from `p` producer threads to `q` consumer
/// threads over a fresh memory:// channel of `pattern`.
fn psyne_throughput(pattern: &str, p: usize, q: usize, n: u64) -> Duration {
    let uri = format!(
        "memory://bench-tp-{}-{pattern}-{}?capacity=1024&pattern={pattern}",
        std::process::id(),
        n
    );
    let txs: Vec<Sender> = (0..p).map(|_| Sender::connect(&uri).unwrap()).collect();
    let rxs: Vec<Receiver> = (0..q).map(|_| Receiver::connect(&uri).unwrap()).collect();
    let start = Instant::now();
    let per = n / p as u64;
    let senders: Vec<_> = txs
        .into_iter()
        .map(|tx| {
            std::thread::spawn(move || {
                for i in 0..per {
                    let mut l = tx.loan_bytes(64).unwrap();
                    l.bytes_mut()[0] = i as u8;
                    l.send().unwrap();
                }
            })
        })
        .collect();
    let receivers: Vec<_> = rxs
        .into_iter()
        .map(|rx| std::thread::spawn(move || rx.iter().count()))
        .collect();
    for s in senders {
        s.join().unwrap();
    }
    let got: usize = receivers.into_iter().map(|r| r.join().unwrap()).sum();
    // Broadcast: every subscriber receives every message.
    let copies = if pattern == "broadcast" { q as u64 } else { 1 };
    assert_eq!(got as u64, per * p as u64 * copies);
    start.elapsed()
}

/// The crossbeam way to broadcast: one bounded channel per subscriber, the
/// producer sending (a copy of) each message to each.
fn crossbeam_fanout(q: usize, n: u64) -> Duration {
    let (txs, rxs): (Vec<_>, Vec<_>) = (0..q)
        .map(|_| crossbeam_channel::bounded::<[u8; 64]>(1024))
        .unzip();
    let start = Instant::now();
    let sender = std::thread::spawn(move || {
        for i in 0..n {
            for tx in &txs {
                tx.send([i as u8; 64]).unwrap();
            }
        }
    });
    let receivers: Vec<_> = rxs
        .into_iter()
        .map(|rx| std::thread::spawn(move || rx.iter().count()))
        .collect();
    sender.join().unwrap();
    let got: usize = receivers.into_iter().map(|r| r.join().unwrap()).sum();
    assert_eq!(got as u64, n * q as u64);
    start.elapsed()
}

fn crossbeam_throughput(p: usize, q: usize, n: u64) -> Duration {
    let (tx, rx) = crossbeam_channel::bounded::<[u8; 64]>(1024);
    let start = Instant::now();
    let per = n / p as u64;
    let senders: Vec<_> = (0..p)
        .map(|_| {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for i in 0..per {
                    tx.send([i as u8; 64]).unwrap();
                }
            })
        })
        .collect();
    drop(tx);
    let receivers: Vec<_> = (0..q)
        .map(|_| {
            let rx = rx.clone();
            std::thread::spawn(move || rx.iter().count())
        })
        .collect();
    for s in senders {
        s.join().unwrap();
    }
    let got: usize = receivers.into_iter().map(|r| r.join().unwrap()).sum();
    assert_eq!(got as u64, per * p as u64);
    start.elapsed()
}

/// The throughput cases: pattern, producers, consumers.
const PATTERNS: [(&str, usize, usize); 5] = [
    ("spsc", 1, 1),
    ("mpsc", 2, 1),
    ("spmc", 1, 2),
    ("mpmc", 2, 2),
    ("broadcast", 1, 2),
];

/// Messages per throughput run.
const N: u64 = 100_000;

/// crossbeam's run for a throughput case.
fn crossbeam_case(pattern: &str, p: usize, q: usize, n: u64) -> Duration {
    if pattern == "broadcast" {
        crossbeam_fanout(q, n)
    } else {
        crossbeam_throughput(p, q, n)
    }
}

fn throughput(c: &mut Criterion) {
    let mut g = c.benchmark_group("throughput");
    g.throughput(Throughput::Elements(N));
    g.sample_size(10);
    for (pattern, p, q) in PATTERNS {
        g.bench_function(BenchmarkId::new("psyne", pattern), |b| {
            b.iter_custom(|iters| (0..iters).map(|_| psyne_throughput(pattern, p, q, N)).sum())
        });
        g.bench_function(BenchmarkId::new("crossbeam", pattern), |b| {
            b.iter_custom(|iters| (0..iters).map(|_| crossbeam_case(pattern, p, q, N)).sum())
        });
    }
    g.finish();
}

/// psyne's throughput over crossbeam's, from runs of the two alternated
/// (15 pairs per pattern): prints the median and range of the ratios.
fn paired_throughput() {
    const PAIRS: usize = 15;
    println!(
        "paired_throughput: psyne / crossbeam messages per second, {PAIRS} alternating runs of {N}"
    );
    for (pattern, p, q) in PATTERNS {
        let mut ratios: Vec<f64> = (0..PAIRS)
            .map(|_| {
                let ps = psyne_throughput(pattern, p, q, N);
                let cb = crossbeam_case(pattern, p, q, N);
                cb.as_secs_f64() / ps.as_secs_f64()
            })
            .collect();
        let (med, lo, hi) = spread(&mut ratios);
        println!("paired_throughput/{pattern}: median {med:.2}x (range {lo:.2}x-{hi:.2}x)");
    }
}

/// Median, minimum and maximum of `v` (sorted in place; not empty).
fn spread(v: &mut [f64]) -> (f64, f64, f64) {
    v.sort_by(|a, b| a.total_cmp(b));
    (v[v.len() / 2], v[0], v[v.len() - 1])
}
