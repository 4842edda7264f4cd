//! Channels: memory:// between threads and ipc:// between real processes;
//! ordering, exactly-once delivery, disconnection, backpressure policies,
//! parameter conflicts and malformed URIs.
//!
//! Child processes are this test binary re-run with `PSYNE_TEST_ROLE` set
//! (see `child_entry`).

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use psyne::shm::hook::{self, Point};
use psyne::{channel, Error, Receiver, Sender, Shape};

const ROLE: &str = "PSYNE_TEST_ROLE";
const URI: &str = "PSYNE_TEST_URI";
/// The crash point a child stops at (see `arm_from_env`).
const POINT: &str = "PSYNE_TEST_POINT";

/// Tells the parent where we are, then waits to be killed.
fn park() {
    use std::io::Write;
    println!("parked");
    std::io::stdout().flush().unwrap();
    loop {
        std::thread::sleep(Duration::from_secs(60));
    }
}

/// Arms the crash point named by `PSYNE_TEST_POINT`, if any.
fn arm_from_env() {
    let Ok(name) = std::env::var(POINT) else {
        return;
    };
    let point = match name.as_str() {
        "send-before-claim" => Point::SendBeforeClaim,
        "send-after-claim" => Point::SendAfterClaim,
        "recv-after-claim" => Point::RecvAfterClaim,
        "subscriber-reading" => Point::SubscriberReading,
        "recv-claimed" => Point::RecvClaimed,
        "join-counted" => Point::JoinCounted,
        "reap-uncounted" => Point::ReapUncounted,
        "spsc-published" => Point::SpscPublished,
        "join-claimed" => Point::JoinClaimed,
        p => panic!("unknown crash point {p}"),
    };
    hook::arm(point, park);
}

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

/// Receives `[producer, seq]` messages until every sender has gone,
/// checking that each producer's come in increasing order; returns them as
/// `producer * per + seq`.
fn receive_all(rx: &Receiver, producers: usize, per: u64) -> Vec<u64> {
    let mut last = vec![None::<u64>; producers];
    let mut got = Vec::new();
    loop {
        match rx.recv() {
            Ok(m) => {
                let t = m.tensor::<i64>().unwrap();
                let (p, s) = (t[0] as usize, t[1] as u64);
                assert!(p < producers && s < per, "foreign message {p}/{s}");
                assert!(
                    last[p].is_none_or(|l| l < s),
                    "producer {p}: {s} after {:?}",
                    last[p]
                );
                last[p] = Some(s);
                got.push(p as u64 * per + s);
            }
            Err(Error::Disconnected("sender")) => return got,
            Err(e) => panic!("receive failed: {e}"),
        }
    }
}

/// Every key in `0..total` was received exactly once over all consumers.
fn exactly_once(what: &str, total: u64, lists: &[Vec<u64>]) {
    let mut seen = vec![0u8; total as usize];
    for &k in lists.iter().flatten() {
        let c = &mut seen[k as usize];
        *c = c.saturating_add(1);
    }
    if let Some(k) = seen.iter().position(|&c| c != 1) {
        panic!(
            "{what}: message {k} arrived {} times ({} messages in all)",
            seen[k],
            lists.iter().map(Vec::len).sum::<usize>()
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
        "park-sender" => {
            // Sends one message and stops at the armed point inside the send.
            let tx = Sender::connect(&uri).unwrap();
            arm_from_env();
            tx.send_copy(&Shape::vector(2), &[-1i64, -1]).unwrap();
            println!("sent without stopping");
        }
        "park-joining-sender" => {
            // Stops at the armed point inside `connect` (joining, or
            // reaping a dead endpoint on the way in).
            arm_from_env();
            let _tx = Sender::connect(&uri);
            println!("connected without stopping");
        }
        "park-joining-receiver" => {
            arm_from_env();
            let _rx = Receiver::connect(&uri);
            println!("connected without stopping");
        }
        "park-receiver" => {
            // Receives one message and stops at the armed point inside it.
            let rx = Receiver::connect(&uri).unwrap();
            arm_from_env();
            println!("ready");
            let _m = rx.recv();
            println!("received without stopping");
        }
        "bc-hoarder" => {
            // A subscriber that receives 5 messages, keeps the views, and
            // waits to be killed (with more messages unread behind them).
            let rx = Receiver::connect(&uri).unwrap();
            println!("ready");
            let held: Vec<_> = (0..5).map(|_| rx.recv().unwrap()).collect();
            println!("holding {}", held.len());
            std::thread::sleep(Duration::from_secs(60));
        }
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
            let n: i64 = std::env::var("PSYNE_TEST_COUNT").unwrap().parse().unwrap();
            let tx = Sender::connect(&uri).unwrap();
            for s in 0..n {
                tx.send_copy(&Shape::vector(2), &[id, s]).unwrap();
            }
        }
        "mpmc-consumer" => {
            // Checks the order per producer and writes every (producer,
            // sequence) it got, as `producer * per + seq` in 8 little-endian
            // bytes, to `PSYNE_TEST_OUT`: the parent checks that each
            // message arrived exactly once over all consumers.
            let producers: usize = std::env::var("PSYNE_TEST_PRODUCERS")
                .unwrap()
                .parse()
                .unwrap();
            let per: u64 = std::env::var("PSYNE_TEST_COUNT").unwrap().parse().unwrap();
            let out = std::env::var("PSYNE_TEST_OUT").unwrap();
            let rx = Receiver::connect(&uri).unwrap();
            println!("ready");
            let got = receive_all(&rx, producers, per);
            let bytes: Vec<u8> = got.iter().flat_map(|v| v.to_le_bytes()).collect();
            std::fs::write(&out, bytes).unwrap();
            println!("received {}", got.len());
        }
        "hoard-all" => {
            // Takes 16 messages (every slot of a 64 KiB slab), keeps them.
            let rx = Receiver::connect(&uri).unwrap();
            println!("ready");
            let held: Vec<_> = (0..16).map(|_| rx.recv().unwrap()).collect();
            println!("holding {}", held.len());
            std::thread::sleep(Duration::from_secs(60));
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

/// What `pattern` promises for `total` messages received as `lists` (one
/// per consumer): queue patterns, each exactly once over all consumers;
/// broadcast, each exactly once at every subscriber.
fn delivered(pattern: &str, total: u64, lists: &[Vec<u64>]) {
    if pattern == "broadcast" {
        for (i, l) in lists.iter().enumerate() {
            exactly_once(&format!("subscriber {i}"), total, std::slice::from_ref(l));
        }
    } else {
        exactly_once(pattern, total, lists);
    }
}

/// `producers` threads send `per` messages `[producer, seq]` each over a
/// memory:// channel of `pattern` to `consumers` threads. Queue patterns:
/// every message arrives exactly once over all consumers, in order per
/// producer. Broadcast: every subscriber gets every message, in order.
fn across_threads(pattern: &str, producers: usize, consumers: usize, per: u64) {
    let uri = format!(
        "memory://{}?capacity=64&pattern={pattern}",
        name(&format!("t{pattern}"))
    );
    // Everybody joins first, so that no receiver is disconnected before a
    // producer arrives and every subscriber sees the first message.
    let rxs: Vec<_> = (0..consumers)
        .map(|_| Receiver::connect(&uri).unwrap())
        .collect();
    let txs: Vec<_> = (0..producers)
        .map(|_| Sender::connect(&uri).unwrap())
        .collect();
    let consumers: Vec<_> = rxs
        .into_iter()
        .map(|rx| std::thread::spawn(move || receive_all(&rx, producers, per)))
        .collect();
    let producers_done: Vec<_> = txs
        .into_iter()
        .enumerate()
        .map(|(p, tx)| {
            std::thread::spawn(move || {
                for s in 0..per {
                    tx.send_copy(&Shape::vector(2), &[p as i64, s as i64])
                        .unwrap();
                }
            })
        })
        .collect();
    for p in producers_done {
        p.join().unwrap();
    }
    let lists: Vec<_> = consumers.into_iter().map(|c| c.join().unwrap()).collect();
    delivered(pattern, producers as u64 * per, &lists);
}

// 1e6 messages per pattern, the stress size (a few seconds in a
// debug build on two cores).

#[test]
fn mpmc_four_producers_four_consumers_every_message_once() {
    if in_child() {
        return;
    }
    across_threads("mpmc", 4, 4, 250_000);
}

#[test]
fn mpsc_spmc_spsc_between_threads_every_message_once() {
    if in_child() {
        return;
    }
    across_threads("mpsc", 4, 1, 250_000);
    across_threads("spmc", 1, 4, 1_000_000);
    across_threads("spsc", 1, 1, 1_000_000);
}

#[test]
fn broadcast_four_subscribers_get_every_message() {
    if in_child() {
        return;
    }
    across_threads("broadcast", 1, 4, 1_000_000);
}

/// A full ring under each policy, on a channel of `pattern`.
fn policies_when_full(pattern: &str) {
    // fail: the loan comes back with its data.
    let (tx, rx) = channel(&format!(
        "memory://{}?capacity=2&policy=fail&pattern={pattern}",
        name("fail")
    ))
    .unwrap();
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
        "memory://{}?capacity=2&policy=drop_oldest&pattern={pattern}",
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
    let (tx, rx) = channel(&format!(
        "memory://{}?capacity=2&timeout_ms=50&pattern={pattern}",
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
    assert_eq!(rx.len(), 2, "nothing lost, nothing added");

    // block without a timeout: a sender blocked on the full ring wakes
    // when a receive frees space.
    let (tx, rx) = channel(&format!(
        "memory://{}?capacity=2&pattern={pattern}",
        name("wake")
    ))
    .unwrap();
    let t = std::thread::spawn(move || {
        for i in 0..100u32 {
            tx.send_copy(&Shape::vector(1), &[i]).unwrap();
        }
    });
    std::thread::sleep(Duration::from_millis(20)); // the sender is blocked by now
    for i in 0..100u32 {
        assert_eq!(rx.recv().unwrap().tensor::<u32>().unwrap()[0], i);
    }
    t.join().unwrap();
}

#[test]
fn a_full_ring_under_each_policy_and_pattern() {
    if in_child() {
        return;
    }
    // spsc has a ring layout of its own (except under drop_oldest, where
    // the producer must pop too); the others share the MPMC layout.
    for pattern in ["spsc", "mpsc", "spmc", "mpmc"] {
        policies_when_full(pattern);
    }
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

/// Both ends move to other threads (checked when the tests compile).
const _: fn() = || {
    fn is_send<T: Send>() {}
    is_send::<Sender>();
    is_send::<Receiver>();
};

/// A loan derefs mutably to its slot, so a slot of another slab can be
/// swapped in: sending it is refused with the slot given back, nothing
/// reaches the receiver, and both slabs get every slot back.
#[test]
fn a_slot_of_another_slab_swapped_into_a_loan_is_not_sent() {
    if in_child() {
        return;
    }
    let (tx, rx) = channel(&format!("memory://{}?capacity=4", name("swap"))).unwrap();
    let other = psyne::Segment::anonymous(&psyne::SlabConfig::new().class(256, 4)).unwrap();
    let mut loan = tx.loan_bytes(16).unwrap();
    let mut foreign = other.slab().alloc(16).unwrap();
    std::mem::swap(&mut *loan, &mut foreign);
    let e = loan.send_or_return().unwrap_err();
    assert!(
        matches!(e.error(), Error::InvalidHandle(m) if m.contains("another slab")),
        "{}",
        e.error()
    );
    let mut back = e.into_loan().expect("the slot comes back");
    assert_eq!(other.slab().used_slots(), 1);
    std::mem::swap(&mut *back, &mut foreign);
    drop(foreign);
    assert_eq!(other.slab().used_slots(), 0);
    back.send().unwrap();
    assert_eq!(rx.recv().unwrap().len(), 16);
    assert!(matches!(rx.try_recv(), Ok(None)));
}

/// Attaching with a parameter that contradicts the creator's is refused,
/// naming the parameter and both values; repeating the creator's values,
/// or leaving them out, attaches.
#[test]
fn every_conflicting_parameter_is_named() {
    if in_child() {
        return;
    }
    let n = name("conflict");
    let full = "capacity=8&pattern=mpmc&policy=fail&slab=1MiB&max_msg=4096&timeout_ms=50";
    let tx = Sender::connect(&format!("ipc://{n}?{full}")).unwrap();
    for (param, value, asked, existing) in [
        ("capacity", "16", "16", "8"),
        ("pattern", "spsc", "spsc", "mpmc"),
        ("policy", "block", "block", "fail"),
        ("slab", "2MiB", "2097152", "1048576"),
        ("max_msg", "8192", "8192", "4096"),
        ("timeout_ms", "60", "60", "50"),
    ] {
        match Receiver::connect(&format!("ipc://{n}?{param}={value}")) {
            Err(Error::ParamConflict {
                param: p,
                requested,
                existing: e,
                ..
            }) => {
                assert_eq!(p, param);
                assert_eq!(requested, asked, "{param}");
                assert_eq!(e, existing, "{param}");
            }
            other => panic!("{param}={value}: {other:?}"),
        }
    }
    let same = Receiver::connect(&format!("ipc://{n}?{full}")).unwrap();
    let bare = Receiver::connect(&format!("ipc://{n}")).unwrap();
    assert_eq!(same.config(), bare.config());
    drop((tx, same, bare));
}

/// A sender claims its next loan's slot after each send: the next loan of
/// that size class uses it, a loan of another class gives it back, and so
/// does dropping the sender. Multi-sender channels keep none in a class
/// too small to share.
#[test]
fn a_senders_spare_slot_serves_its_next_loan_and_goes_back() {
    if in_child() {
        return;
    }
    // 16 slots of 4 KiB and 2 of 64 KiB (from `max_msg`).
    let n = name("spare");
    let uri = format!("ipc://{n}?capacity=8&slab=64KiB&max_msg=65536&pattern=spsc");
    let tx = Sender::connect(&uri).unwrap();
    let rx = Receiver::connect(&uri).unwrap();
    let seg = psyne::Segment::open(&n).unwrap();
    assert_eq!(tx.spare_slots(), 0);
    tx.send_copy(&Shape::vector(4), &[1u32, 2, 3, 4]).unwrap();
    assert_eq!(tx.spare_slots(), 1);
    assert_eq!(seg.slab().used_slots(), 2, "the message and the spare");
    let m = rx.recv().unwrap();
    assert_eq!(m.tensor::<u32>().unwrap().as_slice(), &[1, 2, 3, 4]);
    drop(m);
    assert_eq!(seg.slab().used_slots(), 1);
    // The next loan of that class is the spare: nothing new is claimed
    // until it is sent.
    let mut loan = tx.loan::<u32>(&Shape::vector(2)).unwrap();
    assert_eq!(tx.spare_slots(), 0);
    assert_eq!(seg.slab().used_slots(), 1);
    loan.tensor_mut::<u32>()
        .unwrap()
        .copy_from_slice(&[5, 6])
        .unwrap();
    loan.send().unwrap();
    assert_eq!(seg.slab().used_slots(), 2);
    // A fresh header: the spare carries nothing of its previous message.
    let m = rx.recv().unwrap();
    assert_eq!(m.tensor::<u32>().unwrap().as_slice(), &[5, 6]);
    drop(m);
    // A loan of another class: the spare goes back first.
    let big = tx.loan_bytes(40_000).unwrap();
    assert_eq!(tx.spare_slots(), 0);
    assert_eq!(seg.slab().used_slots(), 1, "only the loan");
    big.send().unwrap();
    drop(rx.recv().unwrap());
    assert_eq!(seg.slab().used_slots(), tx.spare_slots());
    drop(tx);
    assert_eq!(seg.slab().used_slots(), 0, "the spare went back with it");
    drop(rx);

    // mpmc: a class of fewer than 16 slots is shared, no spare there; one
    // of 16 has one.
    let n = name("spare-mpmc");
    let uri = format!("ipc://{n}?capacity=8&slab=64KiB&max_msg=65536&pattern=mpmc");
    let tx = Sender::connect(&uri).unwrap();
    let rx = Receiver::connect(&uri).unwrap();
    let seg = psyne::Segment::open(&n).unwrap();
    let stats = seg.slab().stats();
    assert_eq!((stats[0].slots, stats[1].slots), (16, 2), "{stats:?}");
    tx.loan_bytes(40_000).unwrap().send().unwrap();
    assert_eq!(tx.spare_slots(), 0);
    drop(rx.recv().unwrap());
    assert_eq!(seg.slab().used_slots(), 0);
    tx.send_copy(&Shape::vector(1), &[9u8]).unwrap();
    assert_eq!(tx.spare_slots(), 1);
    drop(rx.recv().unwrap());
    drop(tx);
    assert_eq!(seg.slab().used_slots(), 0);
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
            std::thread::spawn(move || {
                recv_n(&rx, 5_000, 16);
                rx
            })
        })
        .collect();
    send_n(&tx, 5_000, 16);
    drop(tx);
    let mut subs: Vec<Receiver> = subs.into_iter().map(|s| s.join().unwrap()).collect();
    // Each subscriber counts what it received; the channel sums them, also
    // over subscribers that have left.
    assert_eq!(subs[0].counts(), (5_000, 15_000, 0));
    subs.truncate(1);
    assert_eq!(subs[0].counts(), (5_000, 15_000, 0));
    drop(subs);
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

/// `producers` producer processes send `per` messages each to `consumers`
/// consumer processes over an ipc:// channel of `pattern`. Each consumer
/// checks the order per producer and writes what it got to a file; the
/// parent checks that every message arrived exactly once over all
/// consumers (broadcast: once at every subscriber).
fn across_processes(pattern: &str, producers: usize, consumers: usize, per: u64) {
    use std::io::BufReader;
    let tag = name(&format!("x{pattern}"));
    let uri = format!("ipc://{tag}?capacity=64&slab=8MiB&pattern={pattern}");
    // With several producer processes, the test holds a sender of its own so
    // that receivers are not disconnected between one producer leaving and
    // the next arriving.
    let keep = (producers > 1).then(|| Sender::connect(&uri).unwrap());
    let files: Vec<_> = (0..consumers)
        .map(|c| std::env::temp_dir().join(format!("psyne-test-{tag}-{c}.bin")))
        .collect();
    let mut kids = Vec::new();
    for file in &files {
        let mut kid = child("mpmc-consumer", &uri)
            .env("PSYNE_TEST_PRODUCERS", producers.to_string())
            .env("PSYNE_TEST_COUNT", per.to_string())
            .env("PSYNE_TEST_OUT", file)
            .spawn()
            .unwrap();
        let mut out = BufReader::new(kid.stdout.take().unwrap());
        wait_for(&mut out, "ready");
        kids.push((kid, out));
    }
    let senders: Vec<_> = (0..producers)
        .map(|id| {
            child("mpmc-producer", &uri)
                .env("PSYNE_TEST_ID", id.to_string())
                .env("PSYNE_TEST_COUNT", per.to_string())
                .spawn()
                .unwrap()
        })
        .collect();
    for mut p in senders {
        assert!(p.wait().unwrap().success(), "a producer failed");
    }
    drop(keep);
    let mut lists = Vec::new();
    for ((mut kid, mut out), file) in kids.into_iter().zip(&files) {
        wait_for(&mut out, "received");
        assert!(kid.wait().unwrap().success(), "a consumer failed");
        let bytes = std::fs::read(file).unwrap();
        let _ = std::fs::remove_file(file);
        lists.push(
            bytes
                .chunks_exact(8)
                .map(|b| u64::from_le_bytes(b.try_into().unwrap()))
                .collect::<Vec<_>>(),
        );
    }
    delivered(pattern, producers as u64 * per, &lists);
}

#[test]
fn every_pattern_between_processes_every_message_once() {
    if in_child() {
        return;
    }
    // 1e6 messages per pattern, 4 producers and 4 consumers where the
    // pattern allows.
    across_processes("mpmc", 4, 4, 250_000);
    across_processes("mpsc", 4, 1, 250_000);
    across_processes("spmc", 1, 4, 1_000_000);
    across_processes("spsc", 1, 1, 1_000_000);
    across_processes("broadcast", 1, 4, 1_000_000);
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

/// Polls two futures on one thread (one waker for both) until both are
/// done, dropping each as soon as it is (as `join!` does).
fn join2<A: std::future::Future, B: std::future::Future>(a: A, b: B) -> (A::Output, B::Output) {
    let (mut a, mut b) = (Some(Box::pin(a)), Some(Box::pin(b)));
    let (mut ra, mut rb) = (None, None);
    block_on(std::future::poll_fn(move |cx| {
        use std::task::Poll;
        if let Some(f) = a.as_mut() {
            if let Poll::Ready(v) = f.as_mut().poll(cx) {
                ra = Some(v);
                a = None;
            }
        }
        if let Some(f) = b.as_mut() {
            if let Poll::Ready(v) = f.as_mut().poll(cx) {
                rb = Some(v);
                b = None;
            }
        }
        if ra.is_some() && rb.is_some() {
            Poll::Ready((ra.take().unwrap(), rb.take().unwrap()))
        } else {
            Poll::Pending
        }
    }))
}

#[test]
fn async_loan_waits_for_a_slot_without_blocking_the_executor() {
    if in_child() {
        return;
    }
    // A 64 KiB slab has 16 slots for 4000-byte tensors. The receiving task
    // holds 16 messages, so the slab is full; the sending task's
    // loan_async must wait for a slot and let the receiving task (on the
    // same thread) run and drop its views: a loan that blocked the thread
    // would deadlock here.
    let uri = format!("memory://{}?capacity=64&slab=64KiB", name("aloan"));
    let (tx, rx) = channel(&uri).unwrap();
    let shape = Shape::vector(1000);
    for i in 0..16u32 {
        let mut loan = tx.loan::<f32>(&shape).unwrap();
        loan.tensor_mut::<f32>().unwrap()[0] = i as f32;
        loan.send().unwrap();
    }
    let sender = async {
        let mut loan = tx.loan_async::<f32>(&shape).await.unwrap();
        loan.tensor_mut::<f32>().unwrap()[0] = 99.0;
        loan.send_async().await.unwrap();
    };
    let receiver = async {
        let mut held = Vec::new();
        for _ in 0..16 {
            held.push(rx.recv_async().await.unwrap());
        }
        // Give the sender a chance to wait first (yield to the executor).
        let mut yielded = false;
        std::future::poll_fn(|cx| {
            if yielded {
                std::task::Poll::Ready(())
            } else {
                yielded = true;
                cx.waker().wake_by_ref();
                std::task::Poll::Pending
            }
        })
        .await;
        let firsts: Vec<f32> = held.iter().map(|m| m.tensor::<f32>().unwrap()[0]).collect();
        drop(held);
        let last = rx.recv_async().await.unwrap();
        (firsts, last.tensor::<f32>().unwrap()[0])
    };
    let ((), (firsts, last)) = join2(sender, receiver);
    assert_eq!(firsts, (0..16).map(|i| i as f32).collect::<Vec<_>>());
    assert_eq!(last, 99.0);

    // Two futures waiting on one sender at once (one task, so one waker):
    // both complete once room comes, whichever the helper woke for.
    let uri = format!("memory://{}?capacity=2", name("atwo"));
    let (tx, rx) = channel(&uri).unwrap();
    tx.send_copy(&Shape::vector(1), &[1u32]).unwrap();
    tx.send_copy(&Shape::vector(1), &[2u32]).unwrap();
    let reader = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(50));
        let mut got: Vec<u32> = (0..4)
            .map(|_| rx.recv().unwrap().tensor::<u32>().unwrap()[0])
            .collect();
        got[2..].sort_unstable();
        got
    });
    let mut a = tx.loan::<u32>(&Shape::vector(1)).unwrap();
    a.tensor_mut::<u32>().unwrap()[0] = 3;
    let mut b = tx.loan::<u32>(&Shape::vector(1)).unwrap();
    b.tensor_mut::<u32>().unwrap()[0] = 4;
    let (ra, rb) = join2(a.send_async(), b.send_async());
    ra.unwrap();
    rb.unwrap();
    assert_eq!(reader.join().unwrap(), [1, 2, 3, 4]);

    // Free slots that no bitmap shows (here: set aside in another
    // sender's slot cache) reach a waiting loan_async through the slab's
    // repair, as they reach a blocking loan.
    let uri = format!(
        "memory://{}?capacity=64&slab=64KiB&pattern=mpmc&timeout_ms=5000",
        name("arepair")
    );
    let (idle, rx) = channel(&uri).unwrap();
    idle.send_copy(&shape, &[0.5f32; 1000]).unwrap();
    drop(rx.recv().unwrap()); // `idle` keeps its cache (and spare slot)
    let tx = Sender::connect(&uri).unwrap();
    let want = 16 - idle.spare_slots() as usize;
    let loans: Vec<_> = block_on(async {
        let mut loans = Vec::new();
        for _ in 0..want {
            loans.push(tx.loan_async::<f32>(&shape).await.unwrap());
        }
        loans
    });
    assert_eq!(
        loans.len(),
        want,
        "every slot not claimed by the idle sender"
    );
    drop(loans);

    // With timeout_ms, both async waits give up: loan_async on a full
    // slab, send_async on a full ring.
    let uri = format!(
        "memory://{}?capacity=2&slab=64KiB&timeout_ms=60",
        name("atime")
    );
    let (tx, rx) = channel(&uri).unwrap();
    let held: Vec<_> = (0..16).map(|_| tx.loan::<f32>(&shape).unwrap()).collect();
    let t = std::time::Instant::now();
    let r = block_on(tx.loan_async::<f32>(&shape));
    assert!(matches!(r, Err(Error::Timeout(d)) if d == Duration::from_millis(60)));
    assert!(t.elapsed() >= Duration::from_millis(60));
    drop(held);
    tx.send_copy(&Shape::vector(1), &[1u8]).unwrap();
    tx.send_copy(&Shape::vector(1), &[2u8]).unwrap();
    let loan = tx.loan::<u8>(&Shape::vector(1)).unwrap();
    let t = std::time::Instant::now();
    let r = block_on(loan.send_async());
    assert!(matches!(r, Err(Error::Timeout(d)) if d == Duration::from_millis(60)));
    assert!(t.elapsed() >= Duration::from_millis(60));
    assert_eq!(rx.len(), 2, "the timed-out message was not queued");
    // A loan_async on a channel whose slab cannot hold the tensor fails at
    // once, and a non-blocking policy does not wait either.
    assert!(matches!(
        block_on(tx.loan_async::<f32>(&Shape::vector(1 << 20))),
        Err(Error::TooLarge { .. })
    ));
    let uri = format!("memory://{}?slab=64KiB&policy=fail", name("afail"));
    let (tx, _rx) = channel(&uri).unwrap();
    let _held: Vec<_> = (0..16).map(|_| tx.loan::<f32>(&shape).unwrap()).collect();
    assert!(matches!(
        block_on(tx.loan_async::<f32>(&shape)),
        Err(Error::SlabFull { .. })
    ));
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

/// A consumer process of a `pattern` channel receives 10 messages and is
/// killed holding their views: a new consumer takes its place (reaping it:
/// the views' slots come back) and gets everything sent from then on.
fn consumer_killed_holding_views(pattern: &str) {
    use std::io::BufReader;
    let n = name(&format!("kill-consumer-{pattern}"));
    let uri = format!("ipc://{n}?capacity=64&slab=16MiB&pattern={pattern}");
    let tx = Sender::connect(&uri).unwrap();
    let seg = psyne::Segment::open(&n).unwrap();
    let mut hoarder = child("hoarder", &uri).spawn().unwrap();
    let mut out = BufReader::new(hoarder.stdout.take().unwrap());
    send_n(&tx, 10, 100);
    wait_for(&mut out, "holding");
    assert_eq!(seg.slab().used_slots(), 10 + tx.spare_slots());
    kill9(&mut hoarder);
    // A new consumer joins (reaping the dead one: its views come back) and
    // gets everything sent from now on; nothing sent before was unreceived.
    let drain = child("drain", &uri).spawn().unwrap();
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        seg.slab().used_slots(),
        tx.spare_slots(),
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
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("drained 90"),
        "{pattern}"
    );
    assert_eq!(seg.slab().used_slots(), 0, "{pattern}");
}

#[test]
fn a_consumer_killed_holding_views_is_reaped() {
    if in_child() {
        return;
    }
    for pattern in ["spsc", "mpsc", "spmc", "mpmc"] {
        consumer_killed_holding_views(pattern);
    }
}

/// A channel `tag` of `pattern` whose producer process sent 5 messages
/// of 100 floats and was killed holding a loan: its URI, its receiver
/// (connected first) and its segment.
fn loaner_killed(tag: &str, pattern: &str) -> (String, Receiver, psyne::Segment) {
    use std::io::BufReader;
    let n = name(tag);
    let uri = format!("ipc://{n}?capacity=64&slab=16MiB&pattern={pattern}");
    let rx = Receiver::connect(&uri).unwrap();
    let seg = psyne::Segment::open(&n).unwrap();
    let mut loaner = child("loaner", &uri).spawn().unwrap();
    let mut out = BufReader::new(loaner.stdout.take().unwrap());
    wait_for(&mut out, "loaned");
    assert!(seg.slab().used_slots() >= 6, "5 messages and a loan");
    kill9(&mut loaner);
    (uri, rx, seg)
}

/// A producer process of a `pattern` channel sends 5 messages, then is
/// killed holding a loan (and its spare slot): the 5 are received, the
/// receiver learns the producer is gone instead of waiting for ever, the
/// slots come back, and a new producer takes its place.
fn producer_killed_holding_a_loan(pattern: &str) {
    let (uri, rx, seg) = loaner_killed(&format!("kill-producer-{pattern}"), pattern);
    // What it sent is not lost.
    recv_n(&rx, 5, 100);
    // The dead producer is found while waiting: the receiver is
    // disconnected instead of waiting for ever, and the loan is freed.
    let t = std::time::Instant::now();
    assert!(
        matches!(rx.recv(), Err(Error::Disconnected("sender"))),
        "{pattern}"
    );
    assert!(t.elapsed() < Duration::from_secs(5));
    assert_eq!(
        seg.slab().used_slots(),
        0,
        "{pattern}: the dead producer's loan was freed"
    );
    // And a new producer may take its place (the one place of a
    // single-producer channel, too).
    let tx = Sender::connect(&uri).unwrap();
    tx.send_copy(&Shape::vector(1), &[1.0f32]).unwrap();
    assert_eq!(rx.recv().unwrap().tensor::<f32>().unwrap()[0], 1.0);
}

#[test]
fn a_producer_killed_holding_a_loan_is_reaped() {
    if in_child() {
        return;
    }
    for pattern in ["spsc", "mpsc", "spmc", "mpmc", "broadcast"] {
        producer_killed_holding_a_loan(pattern);
    }
}

#[test]
fn messages_queued_by_a_dead_producer_survive_its_reaping() {
    if in_child() {
        return;
    }
    // The producer dies with 5 messages queued and a loan; a new producer
    // joins, reaping it, before anything is received. (An SPSC producer
    // sends without publishing its slots: the reaper must publish them for
    // it rather than free them as the dead process's own.)
    for pattern in ["spsc", "mpsc", "spmc", "mpmc"] {
        let (uri, rx, seg) = loaner_killed(&format!("queued-{pattern}"), pattern);
        let tx = Sender::connect(&uri).expect("the dead producer was reaped");
        assert_eq!(
            seg.slab().used_slots(),
            5,
            "{pattern}: the loan was freed, the queued messages kept"
        );
        recv_n(&rx, 5, 100);
        tx.send_copy(&Shape::vector(1), &[3.0f32]).unwrap();
        assert_eq!(rx.recv().unwrap().tensor::<f32>().unwrap()[0], 3.0);
        drop(tx);
        assert!(matches!(rx.recv(), Err(Error::Disconnected("sender"))));
        assert_eq!(seg.slab().used_slots(), 0, "{pattern}");
    }
}

#[test]
fn a_joiner_in_a_dead_endpoints_record_is_not_reaped() {
    if in_child() {
        return;
    }
    // A producer dies and is reaped; a new one takes its participant record
    // and stops before storing its start time. A reaper that read the new
    // pid with the old start time would judge the live joiner dead and
    // undo its record.
    let (uri, rx, seg) = loaner_killed("joiner-reaped", "spsc");
    recv_n(&rx, 5, 100);
    assert!(matches!(rx.recv(), Err(Error::Disconnected("sender"))));
    let (mut kid, _out) = parked_child("park-joining-sender", &uri, "join-claimed", "parked");
    let joiner = kid.id();
    // The receiver reaps while it waits.
    assert!(matches!(
        rx.recv_timeout(Duration::from_millis(400)),
        Err(Error::Timeout(_) | Error::Disconnected(_))
    ));
    let info = psyne::channel::inspect(&seg).unwrap().unwrap();
    let kept = info.participants.iter().any(|e| e.pid == joiner && e.alive);
    kill9(&mut kid); // before asserting: a parked child would outlive us
    assert!(
        kept,
        "the joiner's record was undone: {:?}",
        info.participants
    );
}

#[test]
fn an_spsc_producer_killed_between_publishing_a_cell_and_moving_tail() {
    if in_child() {
        return;
    }
    // The consumer polls the cell's sequence word, so the message is
    // readable before `tail` moves. Killed there, the producer's message
    // is received once (whether the consumer took it before or after the
    // kill), its slot comes back, and a new producer continues after it.
    for took_it_first in [false, true] {
        let n = name("spsc-published");
        let uri = format!("ipc://{n}?capacity=8&slab=8MiB&pattern=spsc");
        let rx = Receiver::connect(&uri).unwrap();
        let seg = psyne::Segment::open(&n).unwrap();
        let (mut kid, _out) = parked_child("park-sender", &uri, "spsc-published", "parked");
        let first = took_it_first.then(|| rx.recv_timeout(Duration::from_secs(5)).unwrap());
        kill9(&mut kid);
        let first = first.unwrap_or_else(|| rx.recv_timeout(Duration::from_secs(5)).unwrap());
        assert_eq!(*first.tensor::<i64>().unwrap(), [-1, -1]);
        assert_eq!(seg.slab().used_slots(), 1, "the view holds its slot");
        drop(first);
        assert!(
            matches!(rx.recv(), Err(Error::Disconnected("sender"))),
            "received once"
        );
        assert_eq!(seg.slab().used_slots(), 0, "the slot came back");
        let tx = Sender::connect(&uri).unwrap();
        tx.send_copy(&Shape::vector(2), &[5i64, 5]).unwrap();
        let next = rx.recv_timeout(Duration::from_secs(5)).unwrap();
        assert_eq!(*next.tensor::<i64>().unwrap(), [5, 5]);
        assert!(matches!(rx.try_recv(), Ok(None)));
    }
}

/// Starts `role` with crash point `point` armed and waits until the child
/// has stopped there (or, for receivers, is ready to receive).
fn parked_child(
    role: &str,
    uri: &str,
    point: &str,
    until: &str,
) -> (
    std::process::Child,
    std::io::BufReader<std::process::ChildStdout>,
) {
    let mut kid = child(role, uri).env(POINT, point).spawn().unwrap();
    let mut out = std::io::BufReader::new(kid.stdout.take().unwrap());
    wait_for(&mut out, until);
    (kid, out)
}

/// A producer process is killed inside a send at `point` (after claiming a
/// ring position and before publishing it, or before claiming one). The
/// consumers are not stalled: every message of the live producers arrives,
/// in order, the dead producer's message is dropped (counted), its slot is
/// freed, and a single-producer channel takes a new producer.
fn producer_killed_mid_send(pattern: &str, point: &str) {
    let n = name(&format!("midsend-{pattern}"));
    let uri = format!("ipc://{n}?capacity=8&slab=8MiB&pattern={pattern}");
    let rx = Receiver::connect(&uri).unwrap();
    let seg = psyne::Segment::open(&n).unwrap();
    let (mut kid, _out) = parked_child("park-sender", &uri, point, "parked");
    let multi = matches!(pattern, "mpmc" | "mpsc");
    let live = multi.then(|| {
        let tx = Sender::connect(&uri).unwrap();
        std::thread::spawn(move || {
            // More than the capacity: this producer blocks on the stalled
            // ring until the dead one is reaped.
            for s in 0..50i64 {
                tx.send_copy(&Shape::vector(2), &[1, s]).unwrap();
            }
        })
    });
    if point == "send-after-claim" && multi {
        // The claimed position holds everything behind it back.
        assert!(matches!(
            rx.recv_timeout(Duration::from_millis(300)),
            Err(Error::Timeout(_))
        ));
    }
    let killed = std::time::Instant::now();
    kill9(&mut kid);
    if let Some(live) = live {
        for s in 0..50i64 {
            let m = rx.recv_timeout(Duration::from_secs(10)).unwrap();
            assert_eq!(&*m.tensor::<i64>().unwrap(), &[1, s], "{pattern}: order");
        }
        live.join().unwrap();
    }
    // The dead producer is uncounted: with no producer left, disconnected.
    assert!(matches!(rx.recv(), Err(Error::Disconnected("sender"))));
    assert!(killed.elapsed() < Duration::from_secs(5), "reaped late");
    let (sent, received, dropped) = rx.counts();
    let want_sent = if multi { 50 } else { 0 } + (point == "send-after-claim") as u64;
    assert_eq!(
        (sent, received, dropped),
        (want_sent, want_sent - dropped, dropped),
        "{pattern}: counts"
    );
    assert_eq!(dropped, (point == "send-after-claim") as u64);
    assert_eq!(
        seg.slab().used_slots(),
        0,
        "{pattern}: the dead producer's slot was freed"
    );
    // A new producer takes the dead one's place.
    let tx = Sender::connect(&uri).unwrap();
    tx.send_copy(&Shape::vector(1), &[9u8]).unwrap();
    assert_eq!(rx.recv().unwrap().tensor::<u8>().unwrap()[0], 9);
    drop(tx);
    assert_eq!(seg.slab().used_slots(), 0);
}

#[test]
fn a_producer_killed_between_claim_and_publish_stalls_no_consumer() {
    if in_child() {
        return;
    }
    producer_killed_mid_send("mpmc", "send-after-claim");
    producer_killed_mid_send("spmc", "send-after-claim");
}

#[test]
fn a_producer_killed_before_its_message_reaches_the_ring_leaks_nothing() {
    if in_child() {
        return;
    }
    producer_killed_mid_send("spsc", "send-before-claim");
    producer_killed_mid_send("mpsc", "send-before-claim");
}

/// A consumer process is killed inside a receive, after it took the
/// message's slot and before it let go of the ring position. The message
/// it took is gone with it (received, then dropped: its slot is freed);
/// the producer is not stalled when the ring wraps onto that position, and
/// another consumer gets everything else, in order.
fn consumer_killed_mid_receive(pattern: &str) {
    let n = name(&format!("midrecv-{pattern}"));
    let uri = format!("ipc://{n}?capacity=4&slab=8MiB&pattern={pattern}");
    let tx = Sender::connect(&uri).unwrap();
    let seg = psyne::Segment::open(&n).unwrap();
    let (mut kid, mut out) = parked_child("park-receiver", &uri, "recv-after-claim", "ready");
    let single = pattern == "spsc";
    if single {
        // The ring's capacity, so that nothing blocks: a single-consumer
        // channel has no receiver between the dead one's reaping and the
        // next one's arrival, and a send would be disconnected then.
        for i in 0..4u32 {
            tx.send_copy(&Shape::vector(1), &[i]).unwrap();
        }
        wait_for(&mut out, "parked");
        assert_eq!(seg.slab().used_slots(), 4 + tx.spare_slots());
        kill9(&mut kid);
        let rx = Receiver::connect(&uri).unwrap();
        for i in 1..4u32 {
            let m = rx.recv_timeout(Duration::from_secs(10)).unwrap();
            assert_eq!(m.tensor::<u32>().unwrap()[0], i, "{pattern}");
        }
        assert!(matches!(rx.try_recv(), Ok(None)));
        // The sender's spare slot goes back with it.
        drop(tx);
    } else {
        tx.send_copy(&Shape::vector(1), &[0u32]).unwrap();
        wait_for(&mut out, "parked");
        assert_eq!(seg.slab().used_slots(), 1 + tx.spare_slots());
        let rx = Receiver::connect(&uri).unwrap();
        // More than the ring holds: the producer wraps onto the position
        // the dead consumer holds, and waits until it is reaped.
        let sender = std::thread::spawn(move || {
            for i in 1..=20u32 {
                tx.send_copy(&Shape::vector(1), &[i]).unwrap();
            }
            tx
        });
        std::thread::sleep(Duration::from_millis(100));
        kill9(&mut kid);
        for i in 1..=20u32 {
            let m = rx.recv_timeout(Duration::from_secs(10)).unwrap();
            assert_eq!(m.tensor::<u32>().unwrap()[0], i, "{pattern}");
        }
        drop(sender.join().unwrap());
        assert!(matches!(rx.try_recv(), Err(Error::Disconnected(_))));
    }
    assert_eq!(
        seg.slab().used_slots(),
        0,
        "{pattern}: the dead consumer's slot was freed"
    );
}

#[test]
fn a_consumer_killed_between_taking_and_releasing_a_message_stalls_nobody() {
    if in_child() {
        return;
    }
    consumer_killed_mid_receive("mpmc");
    consumer_killed_mid_receive("spsc");
}

#[test]
fn a_killed_subscribers_views_and_unread_messages_are_released() {
    if in_child() {
        return;
    }
    let n = name("bc-kill");
    let uri = format!("ipc://{n}?capacity=8&slab=8MiB&pattern=broadcast");
    let tx = Sender::connect(&uri).unwrap();
    let seg = psyne::Segment::open(&n).unwrap();
    let mut victim = child("bc-hoarder", &uri).spawn().unwrap();
    let mut out = std::io::BufReader::new(victim.stdout.take().unwrap());
    wait_for(&mut out, "ready");
    let survivor = Receiver::connect(&uri).unwrap();
    let total = 40u64;
    let reader = std::thread::spawn(move || {
        for m in 0..total {
            let got = survivor.recv_timeout(Duration::from_secs(10)).unwrap();
            assert_eq!(got.meta().unwrap().seq, m, "the survivor missed nothing");
        }
        // Caught up: a receive that finds nothing gives back what every
        // subscriber has read.
        assert!(matches!(survivor.try_recv(), Ok(None)));
        survivor
    });
    let send = |m: u64| {
        let mut loan = tx.loan::<f32>(&Shape::vector(100)).unwrap();
        loan.set_seq(m);
        loan.send().unwrap();
    };
    (0..5).for_each(send);
    wait_for(&mut out, "holding 5");
    // 3 more that the victim will never read; then more than the ring
    // holds, so that the publisher waits for the victim until it is reaped.
    (5..8).for_each(send);
    std::thread::sleep(Duration::from_millis(100));
    assert!(
        seg.slab().used_slots() >= 8,
        "held by the ring and the views"
    );
    let killed = std::time::Instant::now();
    kill9(&mut victim);
    (8..total).for_each(send);
    assert!(killed.elapsed() < Duration::from_secs(5), "reaped late");
    let survivor = reader.join().unwrap();
    assert_eq!(
        seg.slab().used_slots(),
        tx.spare_slots(),
        "the dead subscriber's views and unread messages were released"
    );
    // The dead subscriber's record is free again: 63 subscribers fit (the
    // survivor and 62 more), not one more.
    let more: Vec<_> = (0..62).map(|_| Receiver::connect(&uri).unwrap()).collect();
    assert!(matches!(
        Receiver::connect(&uri),
        Err(Error::TooManyEndpoints { .. })
    ));
    drop((more, survivor, tx));
    assert_eq!(seg.slab().used_slots(), 0);
}

#[test]
fn a_subscriber_killed_while_reading_does_not_hold_a_drop_oldest_publisher() {
    if in_child() {
        return;
    }
    let n = name("bc-reading");
    let uri = format!("ipc://{n}?capacity=2&slab=8MiB&pattern=broadcast&policy=drop_oldest");
    let tx = Sender::connect(&uri).unwrap();
    let seg = psyne::Segment::open(&n).unwrap();
    let (mut victim, mut out) = parked_child("park-receiver", &uri, "subscriber-reading", "ready");
    // A live subscriber that does not read: drop_oldest passes it by.
    let survivor = Receiver::connect(&uri).unwrap();
    tx.send_copy(&Shape::vector(1), &[0u32]).unwrap();
    wait_for(&mut out, "parked");
    // The victim is between claiming message 0 and recording its view. A
    // drop_oldest publisher overwriting message 0 waits for that (a few
    // instructions in a live process) ...
    let publisher = std::thread::spawn(move || {
        for i in 1..=10u32 {
            tx.send_copy(&Shape::vector(1), &[i]).unwrap();
        }
        tx
    });
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        !publisher.is_finished(),
        "the publisher waits for the reader"
    );
    // ... and no longer than until the reader is found dead.
    kill9(&mut victim);
    let tx = publisher.join().unwrap();
    // The survivor was lapped: it is told, then reads what is left.
    assert!(matches!(survivor.recv(), Err(Error::Lagged { missed: 9 })));
    assert_eq!(survivor.recv().unwrap().tensor::<u32>().unwrap()[0], 9);
    assert_eq!(survivor.recv().unwrap().tensor::<u32>().unwrap()[0], 10);
    drop((tx, survivor));
    assert_eq!(seg.slab().used_slots(), 0);
}

#[test]
fn endpoints_report_pid_start_time_and_heartbeat() {
    if in_child() {
        return;
    }
    let n = name("heartbeat");
    let uri = format!("ipc://{n}?capacity=4&slab=1MiB");
    let tx = Sender::connect(&uri).unwrap();
    let rx = Receiver::connect(&uri).unwrap();
    let seg = psyne::Segment::open(&n).unwrap();
    // The receiver waits (and so beats every 100 ms); the sender is idle.
    let waiter = std::thread::spawn(move || {
        assert!(matches!(
            rx.recv_timeout(Duration::from_millis(800)),
            Err(Error::Timeout(_))
        ));
        rx
    });
    std::thread::sleep(Duration::from_millis(500));
    let info = psyne::channel::inspect(&seg).unwrap().unwrap();
    let me = std::process::id();
    assert_eq!(info.participants.len(), 2);
    for e in &info.participants {
        assert_eq!(e.pid, me);
        assert!(e.alive && e.started > 0);
    }
    let age = |side| {
        info.participants
            .iter()
            .find(|e| e.side == side)
            .unwrap()
            .heartbeat_age()
            .unwrap()
    };
    assert!(
        age("receiver") < Duration::from_millis(300),
        "a waiter beats"
    );
    assert!(
        age("sender") >= Duration::from_millis(400),
        "an idle endpoint does not"
    );
    assert_eq!(
        info.endpoints,
        info.participants
            .iter()
            .map(|e| (e.pid, e.side, e.alive))
            .collect::<Vec<_>>()
    );
    drop((waiter.join().unwrap(), tx));
}

#[test]
fn a_sender_waiting_for_slots_a_killed_consumer_held_gets_them() {
    if in_child() {
        return;
    }
    use std::io::BufReader;
    let n = name("slab-held");
    let uri = format!("ipc://{n}?capacity=32&slab=64KiB&pattern=mpmc");
    let tx = Sender::connect(&uri).unwrap();
    let mut kid = child("hoard-all", &uri).spawn().unwrap();
    let mut out = BufReader::new(kid.stdout.take().unwrap());
    wait_for(&mut out, "ready");
    let _idle = Receiver::connect(&uri).unwrap(); // keeps the channel up
    send_n(&tx, 16, 1000);
    wait_for(&mut out, "holding 16");
    // The slab is full; a loan waits (policy block, no timeout) until the
    // sender itself finds the hoarder dead and frees its views.
    let (done, got) = std::sync::mpsc::channel();
    let waiter = std::thread::spawn(move || {
        let loan = tx.loan::<f32>(&Shape::vector(1000)).unwrap();
        drop(loan);
        done.send(()).unwrap();
    });
    assert!(
        got.recv_timeout(Duration::from_millis(200)).is_err(),
        "the slab is full"
    );
    kill9(&mut kid);
    got.recv_timeout(Duration::from_secs(5))
        .expect("the loan came once the hoarder was reaped");
    waiter.join().unwrap();
}

#[test]
fn a_publisher_killed_mid_send_leaks_nothing() {
    if in_child() {
        return;
    }
    for point in ["send-after-claim", "send-before-claim"] {
        let n = name("bc-pub");
        let uri = format!("ipc://{n}?capacity=4&slab=8MiB&pattern=broadcast");
        let rx = Receiver::connect(&uri).unwrap();
        let seg = psyne::Segment::open(&n).unwrap();
        let (mut kid, _out) = parked_child("park-sender", &uri, point, "parked");
        kill9(&mut kid);
        assert!(matches!(rx.recv(), Err(Error::Disconnected("sender"))));
        assert_eq!(seg.slab().used_slots(), 0, "{point}");
        // A new publisher goes on where the dead one stopped.
        let tx = Sender::connect(&uri).unwrap();
        tx.send_copy(&Shape::vector(1), &[5u8]).unwrap();
        assert_eq!(rx.recv().unwrap().tensor::<u8>().unwrap()[0], 5);
        drop(tx);
        assert!(matches!(rx.recv(), Err(Error::Disconnected("sender"))));
        assert_eq!(seg.slab().used_slots(), 0, "{point}");
    }
}

/// A sender process killed inside `connect`, right after it was counted:
/// the receiver of a channel whose other sender leaves is disconnected
/// (the dead one is uncounted), and a single-sender channel accepts a
/// replacement.
#[test]
fn a_sender_killed_while_joining_is_uncounted() {
    if in_child() {
        return;
    }
    // Several senders: the last live one leaves, the receiver is told.
    let n = name("join-kill-mpsc");
    let uri = format!("ipc://{n}?capacity=4&slab=1MiB&pattern=mpsc");
    let rx = Receiver::connect(&uri).unwrap();
    let tx = Sender::connect(&uri).unwrap();
    let seg = psyne::Segment::open(&n).unwrap();
    let (mut kid, _out) = parked_child("park-joining-sender", &uri, "join-counted", "parked");
    let info = psyne::channel::inspect(&seg).unwrap().unwrap();
    assert_eq!(info.senders, 2, "the parked joiner is counted");
    kill9(&mut kid);
    tx.send_copy(&Shape::vector(1), &[3u8]).unwrap();
    drop(tx);
    assert_eq!(rx.recv().unwrap().tensor::<u8>().unwrap()[0], 3);
    let t = std::time::Instant::now();
    assert!(matches!(rx.recv(), Err(Error::Disconnected("sender"))));
    assert!(t.elapsed() < Duration::from_secs(5), "reaped late");
    let info = psyne::channel::inspect(&seg).unwrap().unwrap();
    assert_eq!((info.senders, info.receivers), (0, 1));
    assert_eq!(info.participants.len(), 1, "the dead record is freed");

    // One sender: the dead joiner does not keep a replacement out.
    let n = name("join-kill-spsc");
    let uri = format!("ipc://{n}?capacity=4&slab=1MiB&pattern=spsc");
    let rx = Receiver::connect(&uri).unwrap();
    let (mut kid, _out) = parked_child("park-joining-sender", &uri, "join-counted", "parked");
    kill9(&mut kid);
    let tx = Sender::connect(&uri).expect("the dead sender was reaped");
    tx.send_copy(&Shape::vector(1), &[4u8]).unwrap();
    assert_eq!(rx.recv().unwrap().tensor::<u8>().unwrap()[0], 4);
    drop(tx);
    assert!(matches!(rx.recv(), Err(Error::Disconnected("sender"))));
}

/// A double fault: a producer dies holding a loan, and the process that
/// reaps it is killed after uncounting it and before reclaiming its slots
/// and freeing its record. The next endpoint finishes the job: the loan is
/// freed (once), the count is right, the messages sent are all delivered,
/// and the records of both dead processes are gone.
#[test]
fn a_reaper_killed_half_way_is_replaced() {
    if in_child() {
        return;
    }
    use std::io::BufReader;
    let n = name("reaper-kill");
    let uri = format!("ipc://{n}?capacity=64&slab=16MiB&pattern=spsc");
    let mut loaner = child("loaner", &uri).spawn().unwrap();
    let mut out = BufReader::new(loaner.stdout.take().unwrap());
    wait_for(&mut out, "loaned");
    let seg = psyne::Segment::open(&n).unwrap();
    kill9(&mut loaner);
    assert_eq!(seg.slab().used_slots(), 6, "5 sent, 1 loaned");
    // A receiver starts to connect, reaps the dead producer on the way in,
    // and is killed half way through.
    let (mut reaper, _out) =
        parked_child("park-joining-receiver", &uri, "reap-uncounted", "parked");
    let info = psyne::channel::inspect(&seg).unwrap().unwrap();
    assert_eq!(info.senders, 0, "uncounted");
    assert_eq!(seg.slab().used_slots(), 6, "not reclaimed yet");
    kill9(&mut reaper);
    // The replacement.
    let rx = Receiver::connect(&uri).unwrap();
    assert_eq!(seg.slab().used_slots(), 5, "the loan was reclaimed");
    recv_n(&rx, 5, 100);
    assert!(matches!(rx.recv(), Err(Error::Disconnected("sender"))));
    let info = psyne::channel::inspect(&seg).unwrap().unwrap();
    assert_eq!((info.senders, info.receivers), (0, 1));
    assert_eq!(info.participants.len(), 1, "both dead records are freed");
    assert_eq!(seg.slab().used_slots(), 0);
}

/// A consumer process is killed right after claiming a message and before
/// taking its slot's reference. The message is not lost: another consumer
/// receives that very message, exactly once, and the ring and the slab go
/// on as before. `producer_reaps`: a producer finds the dead consumer
/// first (no consumer is connected then).
fn consumer_killed_after_claim(pattern: &str, producer_reaps: bool) {
    let n = name(&format!("claimed-{pattern}"));
    let uri = format!("ipc://{n}?capacity=4&slab=8MiB&pattern={pattern}");
    let tx = Sender::connect(&uri).unwrap();
    let seg = psyne::Segment::open(&n).unwrap();
    let (mut kid, mut out) = parked_child("park-receiver", &uri, "recv-claimed", "ready");
    tx.send_copy(&Shape::vector(1), &[7u32]).unwrap();
    wait_for(&mut out, "parked");
    assert_eq!(seg.slab().used_slots(), 1 + tx.spare_slots());
    kill9(&mut kid);
    if producer_reaps {
        // A second producer's connect reaps the dead consumer.
        let tx2 = Sender::connect(&uri).unwrap();
        let info = psyne::channel::inspect(&seg).unwrap().unwrap();
        assert_eq!(info.receivers, 0);
        assert_eq!(info.queued, 1, "{pattern}: the message waits");
        drop(tx2);
    }
    let rx = Receiver::connect(&uri).unwrap();
    let m = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(m.tensor::<u32>().unwrap()[0], 7, "{pattern}: redelivered");
    drop(m);
    // More than the ring holds: the ring wraps over the returned cell.
    let sender = std::thread::spawn(move || {
        for i in 1..=20u32 {
            tx.send_copy(&Shape::vector(1), &[i]).unwrap();
        }
        tx
    });
    for i in 1..=20u32 {
        let m = rx.recv_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!(
            m.tensor::<u32>().unwrap()[0],
            i,
            "{pattern}: once, in order"
        );
    }
    drop(sender.join().unwrap());
    assert!(
        matches!(rx.try_recv(), Err(Error::Disconnected(_))),
        "{pattern}: nothing delivered twice"
    );
    assert_eq!(rx.counts(), (21, 21, 0), "{pattern}: counts");
    assert_eq!(seg.slab().used_slots(), 0, "{pattern}: slab back to empty");
}

#[test]
fn a_message_claimed_by_a_consumer_killed_before_taking_it_is_redelivered() {
    if in_child() {
        return;
    }
    consumer_killed_after_claim("mpmc", false);
    consumer_killed_after_claim("mpmc", true);
    consumer_killed_after_claim("mpsc", true);
    consumer_killed_after_claim("spmc", false);
}

/// As above, with a live consumer already waiting when the other one is
/// killed: it gets the message (the reaper is the waiting consumer
/// itself), while the ring keeps flowing.
#[test]
fn a_waiting_consumer_receives_what_a_killed_one_claimed() {
    if in_child() {
        return;
    }
    let n = name("claimed-live");
    let uri = format!("ipc://{n}?capacity=4&slab=8MiB&pattern=mpmc");
    let tx = Sender::connect(&uri).unwrap();
    let seg = psyne::Segment::open(&n).unwrap();
    let (mut kid, mut out) = parked_child("park-receiver", &uri, "recv-claimed", "ready");
    tx.send_copy(&Shape::vector(1), &[7u32]).unwrap();
    wait_for(&mut out, "parked");
    let rx = Receiver::connect(&uri).unwrap();
    let waiter = std::thread::spawn(move || {
        let m = rx.recv_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!(m.tensor::<u32>().unwrap()[0], 7);
        drop(m);
        rx
    });
    std::thread::sleep(Duration::from_millis(150));
    kill9(&mut kid);
    let rx = waiter.join().unwrap();
    tx.send_copy(&Shape::vector(1), &[8u32]).unwrap();
    assert_eq!(rx.recv().unwrap().tensor::<u32>().unwrap()[0], 8);
    assert!(matches!(rx.try_recv(), Ok(None)));
    assert_eq!(seg.slab().used_slots(), tx.spare_slots());
    drop(tx);
    assert_eq!(seg.slab().used_slots(), 0);
}

/// An example program built next to this test binary (`cargo test` builds
/// the examples into `target/<profile>/examples`).
fn example(name: &str) -> Command {
    let exe = std::env::current_exe().unwrap();
    let path = exe
        .parent()
        .and_then(|deps| deps.parent())
        .unwrap()
        .join("examples")
        .join(name);
    assert!(
        path.exists(),
        "{} is not built: run the whole suite (`cargo test --all-features`), which builds the examples",
        path.display()
    );
    let mut c = Command::new(path);
    c.stdout(Stdio::piped()).stderr(Stdio::piped());
    c
}

#[test]
fn the_examples_run_and_check_what_they_receive() {
    if in_child() {
        return;
    }
    let text = |out: &std::process::Output| String::from_utf8_lossy(&out.stdout).into_owned();
    // The quickstart (the README's demo): its consumer process checks every
    // tensor and the producer prints "ok" only if it found no mismatch.
    let out = example("quickstart").output().unwrap();
    assert!(out.status.success(), "quickstart: {}", text(&out));
    assert!(text(&out).lines().any(|l| l == "ok"), "{}", text(&out));

    // fanout: every subscriber process gets every tensor, unchanged.
    let out = example("fanout").args(["3", "40"]).output().unwrap();
    assert!(out.status.success(), "fanout: {}", text(&out));
    assert_eq!(
        text(&out).matches(": 40 received, 0 bad").count(),
        3,
        "{}",
        text(&out)
    );

    // producer and consumer, as two terminals would run them (the producer
    // first: its messages wait in the segment until the consumer comes).
    let uri = format!("ipc://{}?capacity=64&slab=64MiB", name("examples"));
    let producer = example("producer")
        .args([uri.as_str(), "150"])
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(50));
    let consumer = example("consumer").arg(&uri).output().unwrap();
    let producer = producer.wait_with_output().unwrap();
    assert!(producer.status.success(), "producer: {}", text(&producer));
    assert!(consumer.status.success(), "consumer: {}", text(&consumer));
    assert!(
        text(&consumer).contains("done: received 150, 0 bad"),
        "{}",
        text(&consumer)
    );

    // gpu_pipeline: a worker process binds the received slots on the GPU
    // and a consumer checks every product against a CPU reference. Without
    // an adapter it can only fail; CI sets PSYNE_REQUIRE_GPU (lavapipe is
    // installed there), so there it must pass.
    #[cfg(feature = "gpu")]
    {
        let out = example("gpu_pipeline").arg("20").output().unwrap();
        if out.status.success() {
            assert!(text(&out).contains("pipeline: ok"), "{}", text(&out));
        } else {
            let why = String::from_utf8_lossy(&out.stderr).into_owned();
            assert!(
                std::env::var_os("PSYNE_REQUIRE_GPU").is_none(),
                "gpu_pipeline failed: {}{why}",
                text(&out)
            );
            eprintln!("gpu_pipeline skipped (no usable GPU adapter?): {why}");
        }
    }
}
