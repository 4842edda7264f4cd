//! Channels: memory:// between threads and ipc:// between real processes;
//! ordering, exactly-once delivery, disconnection, backpressure policies,
//! parameter conflicts and malformed URIs.
//!
//! Child processes are this test binary re-run with `PSYNE_TEST_ROLE` set
//! (see `child_entry`).

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use psyne::{channel, Error, Receiver, Sender, Shape};

const ROLE: &str = "PSYNE_TEST_ROLE";
const URI: &str = "PSYNE_TEST_URI";

fn in_child() -> bool {
    std::env::var_os(ROLE).is_some()
}

/// A unique channel name for this process and test.
fn name(tag: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!(
        "chan-{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

fn value(msg: u64, i: usize) -> f32 {
    (msg as f32) * 1000.0 + i as f32
}

/// Sends `n` vectors of `len` f32 whose elements encode (message, index).
fn send_n(tx: &Sender, n: u64, len: usize) {
    for m in 0..n {
        let mut loan = tx.loan::<f32>(&Shape::vector(len)).unwrap();
        for (i, x) in loan.tensor_mut::<f32>().unwrap().iter_mut().enumerate() {
            *x = value(m, i);
        }
        loan.set_seq(m);
        loan.send().unwrap();
    }
}

/// Receives `n` messages and checks every element and the order.
fn recv_n(rx: &Receiver, n: u64, len: usize) {
    for m in 0..n {
        let got = rx.recv_timeout(Duration::from_secs(20)).unwrap();
        assert_eq!(got.meta().unwrap().seq, m, "out of order");
        let t = got.tensor::<f32>().unwrap();
        assert_eq!(t.len(), len);
        assert!(
            t.iter().enumerate().all(|(i, &x)| x == value(m, i)),
            "message {m} corrupted"
        );
    }
}

#[test]
fn child_entry() {
    let Ok(role) = std::env::var(ROLE) else {
        return;
    };
    let uri = std::env::var(URI).unwrap();
    match role.as_str() {
        "consumer" => {
            let rx = Receiver::connect(&uri).unwrap();
            recv_n(&rx, 2000, 1000);
            // Then everything until the producer hangs up.
            let rest = rx.count();
            println!("consumer done, {rest} extra");
        }
        "producer" => {
            let tx = Sender::connect(&uri).unwrap();
            send_n(&tx, 2000, 1000);
        }
        "mpmc-producer" => {
            let id: i64 = std::env::var("PSYNE_TEST_ID").unwrap().parse().unwrap();
            let tx = Sender::connect(&uri).unwrap();
            for s in 0..3000i64 {
                tx.send_copy(&Shape::vector(2), &[id, s]).unwrap();
            }
        }
        "mpmc-consumer" => {
            let rx = Receiver::connect(&uri).unwrap();
            println!("ready");
            let mut last = [-1i64; 2];
            let mut got = Vec::new();
            for m in rx.iter() {
                let t = m.tensor::<i64>().unwrap();
                let (p, s) = (t[0] as usize, t[1]);
                assert!(s > last[p], "producer {p}: {s} after {}", last[p]);
                last[p] = s;
                got.push(format!("{p}:{s}"));
            }
            println!("got {}", got.join(" "));
        }
        "hoarder" => {
            // Takes 10 messages, keeps the views, and waits to be killed.
            let rx = Receiver::connect(&uri).unwrap();
            let held: Vec<_> = (0..10).map(|_| rx.recv().unwrap()).collect();
            println!("holding {}", held.len());
            std::thread::sleep(Duration::from_secs(60));
        }
        "loaner" => {
            // Sends 5 messages, then holds a loan and waits to be killed.
            let tx = Sender::connect(&uri).unwrap();
            send_n(&tx, 5, 100);
            let loan = tx.loan::<f32>(&Shape::vector(100)).unwrap();
            println!("loaned");
            std::thread::sleep(Duration::from_secs(60));
            drop(loan);
        }
        "drain" => {
            let rx = Receiver::connect(&uri).unwrap();
            println!("drained {}", rx.iter().count());
        }
        "subscriber" => {
            let rx = Receiver::connect(&uri).unwrap();
            println!("ready");
            recv_n(&rx, 2000, 1000);
            assert!(matches!(rx.recv(), Err(Error::Disconnected("sender"))));
            println!("subscriber done");
        }
        r => panic!("unknown role {r}"),
    }
}

fn child(role: &str, uri: &str) -> Command {
    let mut c = Command::new(std::env::current_exe().unwrap());
    c.args(["--exact", "child_entry", "--nocapture", "--test-threads=1"])
        .env(ROLE, role)
        .env(URI, uri)
        .stdout(Stdio::piped());
    c
}

#[test]
fn memory_channel_round_trip_in_order() {
    if in_child() {
        return;
    }
    let uri = format!("memory://{}?capacity=16", name("mem"));
    let (tx, rx) = channel(&uri).unwrap();
    let t = std::thread::spawn(move || send_n(&tx, 10_000, 64));
    recv_n(&rx, 10_000, 64);
    t.join().unwrap();
    // The sender is gone: nothing left, disconnected.
    assert!(matches!(rx.recv(), Err(Error::Disconnected("sender"))));
    assert_eq!(rx.counts(), (10_000, 10_000, 0));
}

#[test]
fn ipc_channel_between_processes_consumer_first() {
    if in_child() {
        return;
    }
    let uri = format!("ipc://{}?capacity=64&slab=16MiB&pattern=spsc", name("ipc"));
    // The consumer starts first and waits for its producer.
    let consumer = child("consumer", &uri).spawn().unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let tx = Sender::connect(&uri).unwrap();
    send_n(&tx, 2000, 1000);
    drop(tx);
    let out = consumer.wait_with_output().unwrap();
    assert!(out.status.success(), "consumer failed");
    assert!(String::from_utf8_lossy(&out.stdout).contains("consumer done, 0 extra"));
    // The last endpoint removed the segment.
    assert!(!psyne::Segment::exists(
        uri.trim_start_matches("ipc://").split('?').next().unwrap()
    ));
}

#[test]
fn ipc_messages_sent_before_the_consumer_exists_are_kept() {
    if in_child() {
        return;
    }
    let uri = format!("ipc://{}?capacity=4096&slab=64MiB", name("early"));
    let producer = child("producer", &uri).output().unwrap();
    assert!(producer.status.success(), "producer failed");
    // The producer has exited; its 2000 messages wait in the segment.
    let rx = Receiver::connect(&uri).unwrap();
    assert_eq!(rx.len(), 2000);
    recv_n(&rx, 2000, 1000);
    assert!(matches!(rx.try_recv(), Err(Error::Disconnected("sender"))));
}

#[test]
fn mpmc_four_producers_four_consumers_every_message_once() {
    if in_child() {
        return;
    }
    let uri = format!("memory://{}?capacity=64&pattern=mpmc", name("mpmc"));
    let per = 5_000u64;
    let producers: Vec<_> = (0..4u64)
        .map(|p| {
            let uri = uri.clone();
            let tx = Sender::connect(&uri).unwrap();
            std::thread::spawn(move || {
                for s in 0..per {
                    tx.send_copy(&Shape::vector(2), &[p as i64, s as i64])
                        .unwrap();
                }
            })
        })
        .collect();
    let consumers: Vec<_> = (0..4)
        .map(|_| {
            let rx = Receiver::connect(&uri).unwrap();
            std::thread::spawn(move || {
                let mut last = [None::<u64>; 4];
                let mut got = Vec::new();
                for slot in rx {
                    let t = slot.tensor::<i64>().unwrap();
                    let (p, s) = (t[0] as usize, t[1] as u64);
                    assert!(last[p].is_none_or(|l| l < s), "producer {p} out of order");
                    last[p] = Some(s);
                    got.push(p as u64 * per + s);
                }
                got
            })
        })
        .collect();
    for p in producers {
        p.join().unwrap();
    }
    let mut all: Vec<u64> = consumers
        .into_iter()
        .flat_map(|c| c.join().unwrap())
        .collect();
    all.sort_unstable();
    assert_eq!(all, (0..4 * per).collect::<Vec<_>>());
}

#[test]
fn policies_when_full() {
    if in_child() {
        return;
    }
    // fail: the loan comes back with its data.
    let (tx, rx) = channel(&format!("memory://{}?capacity=2&policy=fail", name("fail"))).unwrap();
    tx.send_copy(&Shape::vector(1), &[1u32]).unwrap();
    tx.send_copy(&Shape::vector(1), &[2u32]).unwrap();
    let mut loan = tx.loan::<u32>(&Shape::vector(1)).unwrap();
    loan.tensor_mut::<u32>().unwrap()[0] = 3;
    let err = loan.send_or_return().unwrap_err();
    assert!(matches!(err.error(), Error::Full));
    let loan = err.into_loan().unwrap();
    assert_eq!(loan.bytes(), 3u32.to_le_bytes());
    assert_eq!(rx.recv().unwrap().tensor::<u32>().unwrap()[0], 1);
    loan.send().unwrap(); // room now
    assert_eq!(rx.recv().unwrap().tensor::<u32>().unwrap()[0], 2);
    assert_eq!(rx.recv().unwrap().tensor::<u32>().unwrap()[0], 3);

    // drop_oldest: the newest messages survive, the dropped are counted and
    // their slots freed.
    let (tx, rx) = channel(&format!(
        "memory://{}?capacity=2&policy=drop_oldest",
        name("drop")
    ))
    .unwrap();
    for i in 0..5u32 {
        tx.send_copy(&Shape::vector(1), &[i]).unwrap();
    }
    assert_eq!(rx.recv().unwrap().tensor::<u32>().unwrap()[0], 3);
    assert_eq!(rx.recv().unwrap().tensor::<u32>().unwrap()[0], 4);
    assert_eq!(rx.counts(), (5, 2, 3));

    // block with a timeout: the send waits, then gives the loan back.
    let (tx, _rx) = channel(&format!(
        "memory://{}?capacity=2&timeout_ms=50",
        name("block")
    ))
    .unwrap();
    tx.send_copy(&Shape::vector(1), &[1u8]).unwrap();
    tx.send_copy(&Shape::vector(1), &[2u8]).unwrap();
    let loan = tx.loan::<u8>(&Shape::vector(1)).unwrap();
    let err = loan.send_or_return().unwrap_err();
    assert!(matches!(err.error(), Error::Timeout(d) if *d == Duration::from_millis(50)));
    let loan = err.into_loan().unwrap();
    // Dropping a returned loan frees its slot; a plain send reports the
    // error alone.
    assert!(matches!(
        loan.send_timeout(Duration::from_millis(10)),
        Err(Error::Timeout(_))
    ));
}

#[test]
fn a_blocked_sender_wakes_when_space_frees() {
    if in_child() {
        return;
    }
    let (tx, rx) = channel(&format!("memory://{}?capacity=2", name("wake"))).unwrap();
    let t = std::thread::spawn(move || {
        for i in 0..100u32 {
            tx.send_copy(&Shape::vector(1), &[i]).unwrap();
        }
    });
    std::thread::sleep(Duration::from_millis(50)); // the sender is blocked by now
    for i in 0..100u32 {
        assert_eq!(rx.recv().unwrap().tensor::<u32>().unwrap()[0], i);
    }
    t.join().unwrap();
}

#[test]
fn disconnection_both_ways() {
    if in_child() {
        return;
    }
    let (tx, rx) = channel(&format!("memory://{}", name("disc"))).unwrap();
    tx.send_copy(&Shape::vector(1), &[7i64]).unwrap();
    drop(tx);
    assert_eq!(rx.recv().unwrap().tensor::<i64>().unwrap()[0], 7);
    assert!(matches!(rx.recv(), Err(Error::Disconnected("sender"))));

    let (tx, rx) = channel(&format!("memory://{}", name("disc2"))).unwrap();
    drop(rx);
    let err = tx
        .loan::<u8>(&Shape::vector(1))
        .unwrap()
        .send()
        .unwrap_err();
    assert!(matches!(err, Error::Disconnected("receiver")));
    // A receiver blocked in recv wakes when the last sender leaves.
    let (tx, rx) = channel(&format!("memory://{}", name("disc3"))).unwrap();
    let t = std::thread::spawn(move || rx.recv().map(|_| ()));
    std::thread::sleep(Duration::from_millis(50));
    drop(tx);
    assert!(matches!(
        t.join().unwrap(),
        Err(Error::Disconnected("sender"))
    ));
}

#[test]
fn endpoints_and_parameters_are_checked() {
    if in_child() {
        return;
    }
    let n = name("params");
    let (_tx, _rx) = channel(&format!("ipc://{n}?capacity=8&pattern=spsc")).unwrap();
    assert!(matches!(
        Sender::connect(&format!("ipc://{n}")),
        Err(Error::TooManyEndpoints { side: "sender", .. })
    ));
    assert!(matches!(
        Receiver::connect(&format!("ipc://{n}")),
        Err(Error::TooManyEndpoints {
            side: "receiver",
            ..
        })
    ));
    assert!(matches!(
        Sender::connect(&format!("ipc://{n}?capacity=16")),
        Err(Error::ParamConflict {
            param: "capacity",
            ..
        })
    ));
    for bad in [
        "ipc://a/b",
        "ftp://x",
        "ipc://x?capacity=3",
        "ipc://x?pattern=star",
        "ipc://x?policy=maybe",
        "ipc://x?slab=12parsecs",
        "memory://",
    ] {
        assert!(
            matches!(Sender::connect(bad), Err(Error::InvalidUri { .. })),
            "{bad}"
        );
    }
    // A tensor larger than any slot.
    let (tx, _rx) = channel(&format!("memory://{}?slab=1MiB", name("big"))).unwrap();
    assert!(matches!(
        tx.loan::<f32>(&Shape::vector(1 << 20)),
        Err(Error::TooLarge { .. })
    ));
}

#[test]
fn broadcast_every_subscriber_sees_every_message() {
    if in_child() {
        return;
    }
    let uri = format!("memory://{}?capacity=8&pattern=broadcast", name("bc"));
    let tx = Sender::connect(&uri).unwrap();
    let subs: Vec<_> = (0..3)
        .map(|_| {
            let rx = Receiver::connect(&uri).unwrap();
            std::thread::spawn(move || recv_n(&rx, 5_000, 16))
        })
        .collect();
    send_n(&tx, 5_000, 16);
    drop(tx);
    for s in subs {
        s.join().unwrap();
    }
    // A ring longer than the slab has slots: the ring gives slots back as
    // soon as every subscriber has read them, so nothing deadlocks.
    let small = format!(
        "memory://{}?capacity=64&slab=64KiB&pattern=broadcast",
        name("bcs")
    );
    let (tx2, rx2) = channel(&small).unwrap();
    let reader = std::thread::spawn(move || recv_n(&rx2, 500, 1000));
    send_n(&tx2, 500, 1000); // 4000-byte tensors; the slab has 16 slots of 4 KiB
    drop(tx2);
    reader.join().unwrap();

    // One publisher only.
    let _tx = Sender::connect(&uri).unwrap();
    assert!(matches!(
        Sender::connect(&uri),
        Err(Error::TooManyEndpoints { side: "sender", .. })
    ));
}

#[test]
fn broadcast_laggers_are_told_or_hold_the_publisher_back() {
    if in_child() {
        return;
    }
    // drop_oldest: a subscriber that did not keep up learns how much it
    // missed, then continues with the oldest message left.
    let uri = format!(
        "memory://{}?capacity=4&pattern=broadcast&policy=drop_oldest",
        name("lag")
    );
    let (tx, rx) = channel(&uri).unwrap();
    for i in 0..10u32 {
        tx.send_copy(&Shape::vector(1), &[i]).unwrap();
    }
    assert_eq!(rx.len(), 4);
    assert!(matches!(rx.recv(), Err(Error::Lagged { missed: 6 })));
    let rest: Vec<u32> = (0..4)
        .map(|_| rx.recv().unwrap().tensor::<u32>().unwrap()[0])
        .collect();
    assert_eq!(rest, [6, 7, 8, 9]);

    // fail: the publisher is refused instead of overwriting.
    let uri = format!(
        "memory://{}?capacity=2&pattern=broadcast&policy=fail",
        name("bfail")
    );
    let (tx, rx) = channel(&uri).unwrap();
    tx.send_copy(&Shape::vector(1), &[1u8]).unwrap();
    tx.send_copy(&Shape::vector(1), &[2u8]).unwrap();
    assert!(matches!(
        tx.send_copy(&Shape::vector(1), &[3u8]),
        Err(Error::Full)
    ));
    assert_eq!(rx.recv().unwrap().tensor::<u8>().unwrap()[0], 1);
    tx.send_copy(&Shape::vector(1), &[3u8]).unwrap();

    // block: the publisher waits for the slowest subscriber.
    let uri = format!("memory://{}?capacity=2&pattern=broadcast", name("bblock"));
    let (tx, rx) = channel(&uri).unwrap();
    let t = std::thread::spawn(move || {
        for i in 0..50u32 {
            tx.send_copy(&Shape::vector(1), &[i]).unwrap();
        }
    });
    std::thread::sleep(Duration::from_millis(30));
    for i in 0..50u32 {
        assert_eq!(rx.recv().unwrap().tensor::<u32>().unwrap()[0], i);
    }
    t.join().unwrap();
}

#[test]
fn broadcast_to_subscriber_processes() {
    if in_child() {
        return;
    }
    use std::io::BufReader;
    let uri = format!(
        "ipc://{}?capacity=16&slab=32MiB&pattern=broadcast",
        name("fan")
    );
    let tx = Sender::connect(&uri).unwrap();
    let mut kids = Vec::new();
    for _ in 0..2 {
        let mut kid = child("subscriber", &uri).spawn().unwrap();
        let mut out = BufReader::new(kid.stdout.take().unwrap());
        // Wait until it has subscribed (the harness prints a header first).
        wait_for(&mut out, "ready");
        kids.push((kid, out));
    }
    send_n(&tx, 2000, 1000);
    drop(tx);
    for (mut kid, mut out) in kids {
        let mut rest = String::new();
        std::io::Read::read_to_string(&mut out, &mut rest).unwrap();
        assert!(kid.wait().unwrap().success(), "subscriber failed");
        assert!(rest.contains("subscriber done"), "{rest}");
    }
}

/// `producers` producer processes send 3000 messages each to `consumers`
/// consumer processes over an ipc:// channel of `pattern`: every message
/// arrives exactly once, in order per producer (checked in the consumers).
fn across_processes(pattern: &str, producers: usize, consumers: usize) {
    use std::io::{BufReader, Read};
    let uri = format!(
        "ipc://{}?capacity=32&slab=8MiB&pattern={pattern}",
        name(&format!("x{pattern}"))
    );
    // With several producer processes, the test holds a sender of its own so
    // that receivers are not disconnected between one producer leaving and
    // the next arriving.
    let keep = (producers > 1).then(|| Sender::connect(&uri).unwrap());
    let mut kids = Vec::new();
    for _ in 0..consumers {
        let mut kid = child("mpmc-consumer", &uri).spawn().unwrap();
        let mut out = BufReader::new(kid.stdout.take().unwrap());
        wait_for(&mut out, "ready");
        kids.push((kid, out));
    }
    let senders: Vec<_> = (0..producers)
        .map(|id| {
            child("mpmc-producer", &uri)
                .env("PSYNE_TEST_ID", id.to_string())
                .spawn()
                .unwrap()
        })
        .collect();
    for mut p in senders {
        assert!(p.wait().unwrap().success(), "a producer failed");
    }
    drop(keep);
    let mut all = Vec::new();
    for (mut kid, mut out) in kids {
        let mut text = String::new();
        out.read_to_string(&mut text).unwrap();
        assert!(kid.wait().unwrap().success(), "a consumer failed");
        let line = text.lines().find(|l| l.starts_with("got")).unwrap_or("got");
        all.extend(line.split_whitespace().skip(1).map(str::to_string));
    }
    all.sort();
    let mut want: Vec<String> = (0..producers)
        .flat_map(|p| (0..3000).map(move |s| format!("{p}:{s}")))
        .collect();
    want.sort();
    assert_eq!(all.len(), want.len(), "lost or duplicated messages");
    assert_eq!(all, want);
}

#[test]
fn every_pattern_between_processes_every_message_once() {
    if in_child() {
        return;
    }
    across_processes("mpmc", 2, 2);
    across_processes("mpsc", 2, 1);
    across_processes("spmc", 1, 2);
    across_processes("spsc", 1, 1);
}

/// A minimal executor: polls on the calling thread, parks between polls.
fn block_on<F: std::future::Future>(fut: F) -> F::Output {
    use std::sync::Arc;
    use std::task::{Context, Poll, Wake, Waker};
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut fut = std::pin::pin!(fut);
    loop {
        match fut.as_mut().poll(&mut cx) {
            Poll::Ready(v) => return v,
            Poll::Pending => std::thread::park(),
        }
    }
}

#[test]
fn async_receive_and_send_under_tokio_and_a_plain_executor() {
    if in_child() {
        return;
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();

    // recv_async under tokio: the message comes 50 ms later, from a thread.
    let uri = format!("memory://{}?capacity=2", name("async"));
    let (tx, rx) = channel(&uri).unwrap();
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(50));
        tx.send_copy(&Shape::vector(3), &[1.5f32, 2.5, 3.5])
            .unwrap();
        tx
    });
    let got = rt.block_on(rx.recv_async()).unwrap();
    assert_eq!(&*got.tensor::<f32>().unwrap(), &[1.5, 2.5, 3.5]);
    drop(got);

    // Disconnection reaches a waiting future.
    let tx = t.join().unwrap();
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(30));
        drop(tx);
    });
    assert!(matches!(
        rt.block_on(rx.recv_async()),
        Err(Error::Disconnected("sender"))
    ));
    t.join().unwrap();

    // send_async waits for room without blocking the executor's thread,
    // here a hand-written block_on; ipc:// across a thread as receiver.
    let uri = format!("ipc://{}?capacity=2&slab=1MiB", name("asend"));
    let tx = Sender::connect(&uri).unwrap();
    let rx = Receiver::connect(&uri).unwrap();
    tx.send_copy(&Shape::vector(1), &[1i16]).unwrap();
    tx.send_copy(&Shape::vector(1), &[2i16]).unwrap();
    let reader = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(50));
        (0..3)
            .map(|_| rx.recv().unwrap().tensor::<i16>().unwrap()[0])
            .collect::<Vec<_>>()
    });
    let mut loan = tx.loan::<i16>(&Shape::vector(1)).unwrap();
    loan.tensor_mut::<i16>().unwrap()[0] = 3;
    block_on(loan.send_async()).unwrap();
    assert_eq!(reader.join().unwrap(), [1, 2, 3]);

    // Many awaits in a row reuse one helper thread.
    let uri = format!("memory://{}?capacity=4", name("amany"));
    let (tx, rx) = channel(&uri).unwrap();
    let w = std::thread::spawn(move || {
        for i in 0..200u32 {
            tx.send_copy(&Shape::vector(1), &[i]).unwrap();
            if i % 50 == 0 {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    });
    rt.block_on(async {
        for i in 0..200u32 {
            let m = rx.recv_async().await.unwrap();
            assert_eq!(m.tensor::<u32>().unwrap()[0], i);
        }
    });
    w.join().unwrap();
}

/// Reads a child's stdout until a line containing `word`.
fn wait_for(out: &mut impl std::io::BufRead, word: &str) {
    let mut line = String::new();
    while !line.contains(word) {
        line.clear();
        assert!(
            out.read_line(&mut line).unwrap() > 0,
            "child exited before {word:?}"
        );
    }
}

fn kill9(kid: &mut std::process::Child) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(kid.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    kid.wait().unwrap();
}

#[test]
fn a_consumer_killed_holding_views_is_reaped() {
    if in_child() {
        return;
    }
    use std::io::BufReader;
    let n = name("kill-consumer");
    let uri = format!("ipc://{n}?capacity=64&slab=16MiB&pattern=mpmc");
    let tx = Sender::connect(&uri).unwrap();
    let seg = psyne::Segment::open(&n).unwrap();
    let mut hoarder = child("hoarder", &uri).spawn().unwrap();
    let mut out = BufReader::new(hoarder.stdout.take().unwrap());
    send_n(&tx, 10, 100);
    wait_for(&mut out, "holding");
    assert_eq!(seg.slab().used_slots(), 10);
    kill9(&mut hoarder);
    // A new consumer joins (reaping the dead one: its views come back) and
    // gets everything sent from now on; nothing sent before was unreceived.
    let drain = child("drain", &uri).spawn().unwrap();
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        seg.slab().used_slots(),
        0,
        "the dead consumer's slots were freed"
    );
    for m in 10..100u64 {
        let mut loan = tx.loan::<f32>(&Shape::vector(100)).unwrap();
        loan.set_seq(m);
        loan.send().unwrap();
    }
    drop(tx);
    let out = drain.wait_with_output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("drained 90"));
    assert_eq!(seg.slab().used_slots(), 0);
}

#[test]
fn a_producer_killed_holding_a_loan_is_reaped() {
    if in_child() {
        return;
    }
    use std::io::BufReader;
    let n = name("kill-producer");
    let uri = format!("ipc://{n}?capacity=64&slab=16MiB&pattern=spsc");
    let rx = Receiver::connect(&uri).unwrap();
    let seg = psyne::Segment::open(&n).unwrap();
    let mut loaner = child("loaner", &uri).spawn().unwrap();
    let mut out = BufReader::new(loaner.stdout.take().unwrap());
    wait_for(&mut out, "loaned");
    kill9(&mut loaner);
    // What it sent is not lost.
    recv_n(&rx, 5, 100);
    // The dead producer is found while waiting: the receiver is
    // disconnected instead of waiting for ever, and the loan is freed.
    let t = std::time::Instant::now();
    assert!(matches!(rx.recv(), Err(Error::Disconnected("sender"))));
    assert!(t.elapsed() < Duration::from_secs(5));
    assert_eq!(
        seg.slab().used_slots(),
        0,
        "the dead producer's loan was freed"
    );
    // And a new producer may take its place on this spsc channel.
    let tx = Sender::connect(&uri).unwrap();
    tx.send_copy(&Shape::vector(1), &[1.0f32]).unwrap();
    assert_eq!(rx.recv().unwrap().tensor::<f32>().unwrap()[0], 1.0);
}
