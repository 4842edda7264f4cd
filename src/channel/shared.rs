//! The state a channel keeps in its segment's control region (area kind
//! `CHANNEL`), and the operations every transport built on a segment uses.
//!
//! ```text
//! offset  size  content
//!      0   128  ChannelMeta: magic "CHN1", version, pattern, policy, ring kind,
//!               capacity, slab size, largest message, block timeout (immutable)
//!    128   128  counters: live senders, live receivers, sent, received, dropped
//!    256   128  events: not_empty, not_full (8 bytes each, see sync::wait)
//!    384   128  ring tail (its own cache line pair)
//!    512   128  ring head
//!    640   ...  ring cells: capacity x 2 words (spsc) or x 4 words (mpmc)
//! ```
//!
//! A handle travels as two words: `offset` and `len << 32 | generation`.

use std::sync::atomic::{AtomicU32, AtomicU64};
use std::time::{Duration, Instant};

use bytemuck::{Pod, Zeroable};

use super::uri::{Params, Pattern, Policy};
use crate::error::{Error, Result};
use crate::ring::broadcast::{Broadcast, Read};
use crate::ring::mpmc::{Mpmc, CELL_WORDS};
use crate::ring::spsc::{Consumer, Producer, Spsc};
use crate::ring::Full;
use crate::shm::segment::area;
use crate::shm::{Handle, Segment, Slot, SlotMut};
use crate::sync::wait::Event;
use crate::sync::Ordering;

const MAGIC: u32 = u32::from_le_bytes(*b"CHN1");
const VERSION: u32 = 1;
const COUNTERS: usize = 128;
const EVENTS: usize = 256;
const TAIL: usize = 384;
const HEAD: usize = 512;
const CELLS: usize = 640;
const RING_SPSC: u8 = 1;
const RING_MPMC: u8 = 2;
const RING_BROADCAST: u8 = 3;
/// Subscribers a broadcast channel can have at once.
pub const MAX_SUBSCRIBERS: usize = 64;
/// Bytes per subscriber record: next position (u64), active (u32), padding.
const SUB_SIZE: usize = 64;
/// Endpoints (of every process) a channel can have at once.
pub const MAX_PARTICIPANTS: usize = 64;
/// Bytes per participant record.
const PART_SIZE: usize = 32;
/// How often a blocked endpoint looks for dead peers.
const REAP_INTERVAL: Duration = Duration::from_millis(100);

/// One endpoint's record: who it is, so that survivors can tell when it
/// died (pid gone, or reused by a process with another start time).
#[repr(C)]
struct Participant {
    /// 0: free.
    pid: AtomicU32,
    /// 1 sender, 2 receiver.
    side: AtomicU32,
    /// The process's start time (clock ticks since boot, /proc).
    start: AtomicU64,
    /// 1 + its broadcast subscriber record, or 0.
    sub: AtomicU32,
    _pad: [u32; 3],
}

const _: () = assert!(std::mem::size_of::<Participant>() == PART_SIZE);

/// What an endpoint got when it joined.
#[derive(Copy, Clone, Debug)]
pub(crate) struct Joined {
    pub(crate) sub: Option<usize>,
    part: usize,
}

/// `(state, start time)` of a process from /proc, or None if it is gone.
fn proc_stat(pid: u32) -> Option<(char, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) S ppid ...": comm may hold spaces and parentheses.
    let rest = &text[text.rfind(')')? + 1..];
    let mut f = rest.split_whitespace();
    let state = f.next()?.chars().next()?;
    let start = f.nth(18)?.parse().ok()?;
    Some((state, start))
}

/// Whether process `pid`, started at `start` (0: unknown), is alive.
fn alive(pid: u32, start: u64) -> bool {
    match proc_stat(pid) {
        None => false,
        Some(('Z' | 'X', _)) => false,
        Some((_, s)) => start == 0 || s == start,
    }
}

/// Default ring capacity.
pub const DEFAULT_CAPACITY: u32 = 1024;
/// Default slab size.
pub const DEFAULT_SLAB: u64 = 64 << 20;

/// The immutable parameters, as stored.
#[derive(Copy, Clone, Debug, Pod, Zeroable)]
#[repr(C)]
struct ChannelMeta {
    magic: u32,
    version: u32,
    pattern: u8,
    policy: u8,
    ring: u8,
    _r0: u8,
    capacity: u32,
    slab: u64,
    max_msg: u64,
    /// Milliseconds a blocked send waits; `u64::MAX` for ever.
    timeout_ms: u64,
    _reserved: [u8; 88],
}

#[repr(C)]
struct Counters {
    senders: AtomicU32,
    receivers: AtomicU32,
    /// Non-zero once a sender has joined: only then can receivers be
    /// disconnected (a consumer may start before its producer).
    senders_seen: AtomicU32,
    /// Non-zero once a receiver has joined (sends before that queue up).
    receivers_seen: AtomicU32,
    /// Reserved (0): messages sent are the ring's tail.
    _sent: AtomicU64,
    /// Broadcast: messages received, over all subscribers (queue rings
    /// count with their head index instead).
    received: AtomicU64,
    dropped: AtomicU64,
}

const _: () = assert!(std::mem::size_of::<ChannelMeta>() == 128);

/// The parameters a channel was created with (URI values or defaults).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Ring slots.
    pub capacity: u32,
    /// Who may send and receive.
    pub pattern: Pattern,
    /// What a send does when the ring is full.
    pub policy: Policy,
    /// Bytes of the slab.
    pub slab: u64,
    /// The largest message the slab is sized for.
    pub max_msg: u64,
    /// How long a blocked send waits (`None`: for ever).
    pub timeout: Option<Duration>,
}

impl Config {
    /// The parameters of `params`, defaults filled in.
    pub fn from_params(p: &Params) -> Config {
        let slab = p.slab.unwrap_or(DEFAULT_SLAB);
        Config {
            capacity: p.capacity.unwrap_or(DEFAULT_CAPACITY),
            pattern: p.pattern.unwrap_or(Pattern::Mpmc),
            policy: p.policy.unwrap_or(Policy::Block),
            slab,
            max_msg: p.max_msg.unwrap_or(0),
            timeout: p.timeout_ms.map(Duration::from_millis),
        }
    }

    fn ring_kind(&self) -> u8 {
        match self.pattern {
            Pattern::Broadcast => RING_BROADCAST,
            // drop_oldest needs the producer to pop: only the MPMC ring
            // allows a second consumer.
            Pattern::Spsc if self.policy != Policy::DropOldest => RING_SPSC,
            _ => RING_MPMC,
        }
    }

    fn cell_words(&self) -> usize {
        if self.ring_kind() == RING_SPSC {
            2
        } else {
            CELL_WORDS
        }
    }

    fn cells_size(&self) -> usize {
        self.capacity as usize * self.cell_words() * 8
    }

    /// Bytes of the channel area (broadcast: with the subscriber table
    /// after the cells).
    pub(crate) fn area_size(&self) -> u64 {
        let subs = if self.pattern == Pattern::Broadcast {
            MAX_SUBSCRIBERS * SUB_SIZE
        } else {
            0
        };
        (CELLS + self.cells_size() + subs + MAX_PARTICIPANTS * PART_SIZE) as u64
    }

    fn participants_offset(&self) -> usize {
        self.area_size() as usize - MAX_PARTICIPANTS * PART_SIZE
    }

    /// The slab classes: the default for the slab size, plus a class for
    /// `max_msg` if the defaults cannot hold it.
    pub(crate) fn slab_config(&self) -> Result<crate::shm::SlabConfig> {
        let cfg = crate::shm::SlabConfig::with_total(self.slab)?;
        let largest = cfg.normalized()?.last().map_or(0, |c| c.0);
        if self.max_msg > largest {
            let count = (self.slab / 4 / self.max_msg).clamp(2, 64) as u32;
            return Ok(cfg.class(self.max_msg, count));
        }
        Ok(cfg)
    }

    /// Checks the values given in `p` against this (existing) channel.
    pub(crate) fn check(&self, name: &str, p: &Params) -> Result<()> {
        let conflict = |param, requested: String, existing: String| {
            Err(Error::ParamConflict {
                name: name.to_string(),
                param,
                requested,
                existing,
            })
        };
        if let Some(c) = p.capacity.filter(|&c| c != self.capacity) {
            return conflict("capacity", c.to_string(), self.capacity.to_string());
        }
        if let Some(x) = p.pattern.filter(|&x| x != self.pattern) {
            return conflict("pattern", x.to_string(), self.pattern.to_string());
        }
        if let Some(x) = p.policy.filter(|&x| x != self.policy) {
            return conflict("policy", x.to_string(), self.policy.to_string());
        }
        if let Some(x) = p.slab.filter(|&x| x != self.slab) {
            return conflict("slab", x.to_string(), self.slab.to_string());
        }
        if let Some(x) = p.max_msg.filter(|&x| x != self.max_msg) {
            return conflict("max_msg", x.to_string(), self.max_msg.to_string());
        }
        let ms = self.timeout.map(|t| t.as_millis() as u64);
        if let Some(x) = p.timeout_ms.filter(|&x| Some(x) != ms) {
            let existing = ms.map_or("none".into(), |m| m.to_string());
            return conflict("timeout_ms", x.to_string(), existing);
        }
        Ok(())
    }
}

fn pattern_code(p: Pattern) -> u8 {
    Pattern::ALL.iter().position(|&x| x == p).expect("listed") as u8
}

fn policy_code(p: Policy) -> u8 {
    Policy::ALL.iter().position(|&x| x == p).expect("listed") as u8
}

/// A channel's view of its segment.
pub(crate) struct Shared {
    pub(crate) seg: Segment,
    pub(crate) config: Config,
    area: usize,
    ring: u8,
}

/// Which side an endpoint is on.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) enum Side {
    Sender,
    Receiver,
}

impl Shared {
    /// Writes a fresh channel area into `seg` (which nobody else uses yet).
    pub(crate) fn format(seg: Segment, config: Config) -> Result<Shared> {
        let (area, size) = seg
            .area(area::CHANNEL)
            .ok_or_else(|| Error::InvalidConfig("segment has no channel area".into()))?;
        assert!(
            size as u64 >= config.area_size(),
            "psyne bug: channel area too small"
        );
        let meta = ChannelMeta {
            magic: 0, // published last, below
            version: VERSION,
            pattern: pattern_code(config.pattern),
            policy: policy_code(config.policy),
            ring: config.ring_kind(),
            _r0: 0,
            capacity: config.capacity,
            slab: config.slab,
            max_msg: config.max_msg,
            timeout_ms: config.timeout.map_or(u64::MAX, |t| t.as_millis() as u64),
            _reserved: [0; 88],
        };
        // Openers may already map the segment, but `attach` reads nothing
        // of the channel before its magic (zero until the end of `format`).
        // SAFETY: so nobody reads these bytes now; `ptr` checked the range.
        unsafe { seg.control().ptr::<ChannelMeta>(area).write(meta) };
        let shared = Shared {
            seg,
            config,
            area,
            ring: meta.ring,
        };
        if shared.ring == RING_MPMC {
            shared.mpmc().format();
        }
        // Release: pairs with the Acquire load in `attach`; an opener that
        // sees the magic sees the parameters and the formatted ring.
        shared.magic().store(MAGIC, Ordering::Release);
        Ok(shared)
    }

    /// Reads and checks the channel area of an opened segment.
    pub(crate) fn attach(seg: Segment) -> Result<Shared> {
        let name = seg.name().to_string();
        let bad = |reason: String| Error::NotAChannel {
            name: name.clone(),
            reason,
        };
        let (area, size) = seg
            .area(area::CHANNEL)
            .ok_or_else(|| bad("it has no channel area".into()))?;
        if size < CELLS {
            return Err(bad(format!("its channel area has only {size} bytes")));
        }
        // SAFETY: an atomic at the start of the area; valid for any bits.
        let magic: &AtomicU32 = unsafe { seg.control().at(area) };
        // Acquire: pairs with the Release store at the end of `format`.
        match magic.load(Ordering::Acquire) {
            0 => return Err(Error::Uninitialized { name }),
            MAGIC => {}
            m => return Err(bad(format!("channel magic {m:#010x}"))),
        }
        // SAFETY: the metadata is written before the magic is published and
        // never again.
        let meta: ChannelMeta =
            bytemuck::pod_read_unaligned(unsafe { seg.control().bytes(area, 128) });
        if meta.version != VERSION {
            return Err(bad(format!("channel layout version {}", meta.version)));
        }
        let pattern = *Pattern::ALL
            .get(meta.pattern as usize)
            .ok_or_else(|| bad(format!("pattern code {}", meta.pattern)))?;
        let policy = *Policy::ALL
            .get(meta.policy as usize)
            .ok_or_else(|| bad(format!("policy code {}", meta.policy)))?;
        let config = Config {
            capacity: meta.capacity,
            pattern,
            policy,
            slab: meta.slab,
            max_msg: meta.max_msg,
            timeout: (meta.timeout_ms != u64::MAX).then(|| Duration::from_millis(meta.timeout_ms)),
        };
        if meta.capacity < 2
            || !meta.capacity.is_power_of_two()
            || meta.ring != config.ring_kind()
            || config.area_size() > size as u64
        {
            return Err(bad(format!(
                "ring of capacity {} (kind {}) does not fit its {size}-byte area",
                meta.capacity, meta.ring
            )));
        }
        Ok(Shared {
            seg,
            config,
            area,
            ring: meta.ring,
        })
    }

    fn magic(&self) -> &AtomicU32 {
        // SAFETY: an atomic, valid for any bits; in bounds.
        unsafe { self.seg.control().at(self.area) }
    }

    fn counters(&self) -> &Counters {
        // SAFETY: atomics only, valid for any bits; in bounds (area size
        // checked at format/attach).
        unsafe { self.seg.control().at(self.area + COUNTERS) }
    }

    fn event(&self, which: usize) -> &Event {
        // SAFETY: an Event is two atomics, valid for any bits (zero is its
        // initial state); in bounds.
        unsafe { self.seg.control().at(self.area + EVENTS + which * 8) }
    }

    pub(crate) fn not_empty(&self) -> &Event {
        self.event(0)
    }

    pub(crate) fn not_full(&self) -> &Event {
        self.event(1)
    }

    fn word(&self, at: usize) -> &AtomicU64 {
        // SAFETY: an atomic, valid for any bits; in bounds.
        unsafe { self.seg.control().at(self.area + at) }
    }

    fn cells(&self) -> &[AtomicU64] {
        let n = self.config.capacity as usize * self.config.cell_words();
        // SAFETY: atomics, valid for any bits; in bounds (area size checked).
        unsafe { self.seg.control().slice_at(self.area + CELLS, n) }
    }

    fn spsc(&self) -> Spsc<'_, AtomicU64> {
        Spsc {
            tail: self.word(TAIL),
            head: self.word(HEAD),
            cells: self.cells(),
        }
    }

    fn broadcast(&self) -> Broadcast<'_, AtomicU64> {
        Broadcast {
            tail: self.word(TAIL),
            cells: self.cells(),
        }
    }

    /// Subscriber `i`'s (next position, active flag).
    fn subscriber(&self, i: usize) -> (&AtomicU64, &AtomicU32) {
        assert!(i < MAX_SUBSCRIBERS, "psyne bug: subscriber index");
        let at = self.area + CELLS + self.config.cells_size() + i * SUB_SIZE;
        // SAFETY: atomics, valid for any bits; in bounds (the area of a
        // broadcast channel includes the table, checked at format/attach).
        unsafe { (self.seg.control().at(at), self.seg.control().at(at + 8)) }
    }

    fn participant(&self, i: usize) -> &Participant {
        assert!(i < MAX_PARTICIPANTS, "psyne bug: participant index");
        let at = self.area + self.config.participants_offset() + i * PART_SIZE;
        // SAFETY: atomics, valid for any bits; in bounds (area size checked
        // at format/attach includes the table); 8-aligned (the area is
        // 128-aligned and every part before the table is a multiple of 8).
        unsafe { self.seg.control().at(at) }
    }

    /// Looks for endpoints whose process has died, and undoes them: their
    /// count, their subscriber record, the slots they held alone. Returns
    /// whether it found any. Called on connect and every
    /// [`REAP_INTERVAL`] while an endpoint is blocked.
    pub(crate) fn reap(&self) -> bool {
        let me = std::process::id();
        let mut found = false;
        for i in 0..MAX_PARTICIPANTS {
            let p = self.participant(i);
            let pid = p.pid.load(Ordering::Acquire);
            if pid == 0 || pid == me || alive(pid, p.start.load(Ordering::Acquire)) {
                continue;
            }
            // One reaper per record.
            if p.pid
                .compare_exchange(pid, 0, Ordering::AcqRel, Ordering::Relaxed)
                .is_err()
            {
                continue;
            }
            found = true;
            let c = self.counters();
            match p.side.load(Ordering::Acquire) {
                1 => {
                    c.senders.fetch_sub(1, Ordering::AcqRel);
                }
                2 => {
                    c.receivers.fetch_sub(1, Ordering::AcqRel);
                }
                _ => {}
            }
            if let Some(sub) = (p.sub.load(Ordering::Acquire) as usize).checked_sub(1) {
                self.subscriber(sub).1.store(0, Ordering::Release);
            }
            self.seg.slab().reclaim_owner(pid);
        }
        if found {
            self.not_empty().notify();
            self.not_full().notify();
        }
        found
    }

    /// Senders counted now.
    pub(crate) fn senders(&self) -> u32 {
        self.counters().senders.load(Ordering::Acquire)
    }

    /// Receivers counted now.
    pub(crate) fn receivers(&self) -> u32 {
        self.counters().receivers.load(Ordering::Acquire)
    }

    /// The live records of the participant table: (pid, side, alive).
    pub(crate) fn participants(&self) -> Vec<(u32, &'static str, bool)> {
        (0..MAX_PARTICIPANTS)
            .filter_map(|i| {
                let p = self.participant(i);
                let pid = p.pid.load(Ordering::Acquire);
                let side = match p.side.load(Ordering::Acquire) {
                    1 => "sender",
                    2 => "receiver",
                    _ => "joining",
                };
                (pid != 0).then(|| (pid, side, alive(pid, p.start.load(Ordering::Acquire))))
            })
            .collect()
    }

    /// Waits on `event` until `ready`, `deadline`, or the next look for dead
    /// peers (which may itself make `ready` true, e.g. disconnected).
    /// Returns whether `ready` held.
    fn wait_reaping(
        &self,
        event: &Event,
        mut ready: impl FnMut() -> bool,
        deadline: Option<Instant>,
    ) -> bool {
        loop {
            let slice = Instant::now() + REAP_INTERVAL;
            let until = deadline.map_or(slice, |d| d.min(slice));
            if event.wait_until(&mut ready, Some(until)) {
                return true;
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return false;
            }
            self.reap();
        }
    }

    /// The lowest next position over active subscribers (None: none).
    fn slowest(&self) -> Option<u64> {
        (0..MAX_SUBSCRIBERS)
            .filter_map(|i| {
                let (pos, active) = self.subscriber(i);
                (active.load(Ordering::Acquire) != 0).then(|| pos.load(Ordering::Acquire))
            })
            .min()
    }

    fn mpmc(&self) -> Mpmc<'_, AtomicU64> {
        let p = self.config.pattern;
        Mpmc {
            tail: self.word(TAIL),
            head: self.word(HEAD),
            cells: self.cells(),
            single_producer: matches!(p, Pattern::Spsc | Pattern::Spmc),
            // With drop_oldest a producer may pop too.
            single_consumer: matches!(p, Pattern::Spsc | Pattern::Mpsc)
                && self.config.policy != Policy::DropOldest,
        }
    }

    /// Registers an endpoint, refusing one the pattern does not allow. A
    /// broadcast receiver gets a subscriber record, returned, starting at
    /// the next message published.
    pub(crate) fn join(&self, side: Side) -> Result<Joined> {
        // A dead endpoint must not keep a live one out.
        self.reap();
        let c = self.counters();
        let (count, single) = match side {
            Side::Sender => (
                &c.senders,
                matches!(
                    self.config.pattern,
                    Pattern::Spsc | Pattern::Spmc | Pattern::Broadcast
                ),
            ),
            Side::Receiver => (
                &c.receivers,
                matches!(self.config.pattern, Pattern::Spsc | Pattern::Mpsc),
            ),
        };
        let mut n = count.load(Ordering::Relaxed);
        loop {
            if single && n >= 1 {
                return Err(Error::TooManyEndpoints {
                    name: self.seg.name().to_string(),
                    pattern: self.config.pattern.as_str(),
                    side: if side == Side::Sender {
                        "sender"
                    } else {
                        "receiver"
                    },
                });
            }
            match count.compare_exchange_weak(n, n + 1, Ordering::AcqRel, Ordering::Relaxed) {
                Ok(_) => break,
                Err(now) => n = now,
            }
        }
        let mut sub = None;
        if side == Side::Receiver && self.ring == RING_BROADCAST {
            let free = (0..MAX_SUBSCRIBERS).find(|&i| {
                self.subscriber(i)
                    .1
                    .compare_exchange(0, 1, Ordering::AcqRel, Ordering::Relaxed)
                    .is_ok()
            });
            let Some(i) = free else {
                count.fetch_sub(1, Ordering::AcqRel);
                return Err(Error::TooManyEndpoints {
                    name: self.seg.name().to_string(),
                    pattern: "broadcast (64 subscribers at most)",
                    side: "receiver",
                });
            };
            // Start at the next message. (A message published between
            // this load and the store below is seen: fine.)
            self.subscriber(i)
                .0
                .store(self.broadcast().tail(), Ordering::Release);
            sub = Some(i);
        }
        let seen = if side == Side::Sender {
            &c.senders_seen
        } else {
            &c.receivers_seen
        };
        seen.store(1, Ordering::Release);
        // Wake the other side: a waiter may be deciding whether it is
        // disconnected.
        // Register the process, so that survivors can undo this endpoint if
        // it dies.
        let me = std::process::id();
        let part = (0..MAX_PARTICIPANTS).find(|&i| {
            self.participant(i)
                .pid
                .compare_exchange(0, me, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        });
        let Some(part) = part else {
            self.leave(
                side,
                Joined {
                    sub,
                    part: usize::MAX,
                },
            );
            return Err(Error::TooManyEndpoints {
                name: self.seg.name().to_string(),
                pattern: "any (64 endpoints at most)",
                side: if side == Side::Sender {
                    "sender"
                } else {
                    "receiver"
                },
            });
        };
        let p = self.participant(part);
        p.start
            .store(proc_stat(me).map_or(0, |s| s.1), Ordering::Release);
        p.sub
            .store(sub.map_or(0, |s| s as u32 + 1), Ordering::Release);
        p.side
            .store(if side == Side::Sender { 1 } else { 2 }, Ordering::Release);
        self.not_empty().notify();
        self.not_full().notify();
        Ok(Joined { sub, part })
    }

    /// Whether every endpoint of `side` is gone (after at least one came).
    pub(crate) fn gone(&self, side: Side) -> bool {
        let c = self.counters();
        match side {
            Side::Sender => {
                c.senders_seen.load(Ordering::Acquire) != 0
                    && c.senders.load(Ordering::Acquire) == 0
            }
            Side::Receiver => {
                c.receivers_seen.load(Ordering::Acquire) != 0
                    && c.receivers.load(Ordering::Acquire) == 0
            }
        }
    }

    /// Unregisters an endpoint and wakes the other side (it may now be
    /// disconnected). Returns whether the channel can go: no endpoint left
    /// and nothing queued (queued messages wait for a receiver).
    pub(crate) fn leave(&self, side: Side, joined: Joined) -> bool {
        if joined.part < MAX_PARTICIPANTS {
            self.participant(joined.part)
                .pid
                .store(0, Ordering::Release);
        }
        if let Some(i) = joined.sub {
            self.subscriber(i).1.store(0, Ordering::Release);
        }
        let c = self.counters();
        let count = if side == Side::Sender {
            &c.senders
        } else {
            &c.receivers
        };
        count.fetch_sub(1, Ordering::AcqRel);
        self.not_empty().notify();
        self.not_full().notify();
        c.senders.load(Ordering::Acquire) == 0
            && c.receivers.load(Ordering::Acquire) == 0
            && self.len() == 0
    }

    /// Messages sent, received and dropped (by `drop_oldest`) so far.
    pub(crate) fn stats(&self) -> (u64, u64, u64) {
        let c = self.counters();
        let dropped = c.dropped.load(Ordering::Relaxed);
        if self.ring == RING_BROADCAST {
            // Received: summed over subscribers.
            return (
                self.broadcast().tail(),
                c.received.load(Ordering::Relaxed),
                dropped,
            );
        }
        // Queue rings: the indices count for us (no counter on the hot
        // path); messages dropped by drop_oldest left through `head` too.
        let tail = self.word(TAIL).load(Ordering::Acquire);
        let head = self.word(HEAD).load(Ordering::Acquire);
        (tail, head.saturating_sub(dropped), dropped)
    }

    pub(crate) fn producer(&self) -> Producer {
        self.spsc().producer()
    }

    pub(crate) fn consumer(&self) -> Consumer {
        self.spsc().consumer()
    }

    fn push(&self, p: &mut Producer, msg: [u64; 2]) -> std::result::Result<(), Full<[u64; 2]>> {
        if self.ring == RING_SPSC {
            self.spsc().push(p, msg)
        } else {
            self.mpmc().push(msg)
        }
    }

    fn pop(&self, c: &mut Consumer) -> Option<[u64; 2]> {
        if self.ring == RING_SPSC {
            self.spsc().pop(c)
        } else {
            self.mpmc().pop()
        }
    }

    /// Messages in the ring now (broadcast: 0, nothing waits for a
    /// receiver that is not subscribed yet).
    pub(crate) fn len(&self) -> u64 {
        match self.ring {
            RING_SPSC => self.spsc().len(),
            RING_MPMC => self.mpmc().len(),
            _ => 0,
        }
    }

    /// Messages subscriber `sub` has not read yet (at most the capacity).
    pub(crate) fn unread(&self, sub: usize) -> u64 {
        let pos = self.subscriber(sub).0.load(Ordering::Acquire);
        self.broadcast()
            .tail()
            .saturating_sub(pos)
            .min(self.config.capacity as u64)
    }

    /// Sends a loaned slot: publishes it, puts its handle on the ring
    /// (applying the policy when full) and wakes a receiver. On failure the
    /// slot comes back.
    pub(crate) fn send(
        &self,
        p: &mut Producer,
        slot: SlotMut,
        deadline: Option<Instant>,
    ) -> std::result::Result<(), (Error, Option<SlotMut>)> {
        if self.gone(Side::Receiver) {
            return Err((Error::Disconnected("receiver"), Some(slot)));
        }
        if self.ring == RING_BROADCAST {
            return self.publish(slot, deadline);
        }
        let h = slot.publish_pending();
        let mut msg = encode(&h);
        loop {
            match self.push(p, msg) {
                Ok(()) => {
                    slot.sent();
                    self.not_empty().notify();
                    return Ok(());
                }
                Err(Full(back)) => msg = back,
            }
            match self.config.policy {
                Policy::Fail => return give_back(slot, Error::Full),
                Policy::DropOldest => {
                    let mut scratch = Consumer::default();
                    if let Some(old) = self.pop(&mut scratch) {
                        drop(self.seg.slab().take(decode(old)));
                        self.counters().dropped.fetch_add(1, Ordering::Relaxed);
                        self.not_full().notify();
                    }
                }
                Policy::Block => {
                    let ready =
                        || self.len() < self.config.capacity as u64 || self.gone(Side::Receiver);
                    if !self.wait_reaping(self.not_full(), ready, deadline) {
                        let d = deadline.map_or(Duration::ZERO, |d| {
                            d.saturating_duration_since(Instant::now())
                        });
                        return give_back(slot, Error::Timeout(d));
                    }
                    if self.gone(Side::Receiver) {
                        return give_back(slot, Error::Disconnected("receiver"));
                    }
                }
            }
        }
    }

    /// Broadcast send: waits for (`block`) or refuses (`fail`) a subscriber
    /// that has not read the message about to be overwritten, or overwrites
    /// it (`drop_oldest`: that subscriber is told it lagged). The ring holds
    /// one reference per message, released when its cell is reused.
    fn publish(
        &self,
        slot: SlotMut,
        deadline: Option<Instant>,
    ) -> std::result::Result<(), (Error, Option<SlotMut>)> {
        let ring = self.broadcast();
        let pos = ring.tail();
        let cap = self.config.capacity as u64;
        let behind = || self.slowest().is_some_and(|s| s + cap <= pos);
        if behind() {
            match self.config.policy {
                Policy::DropOldest => {}
                Policy::Fail => return Err((Error::Full, Some(slot))),
                Policy::Block => {
                    let ready = || !behind() || self.gone(Side::Receiver);
                    if !self.wait_reaping(self.not_full(), ready, deadline) {
                        let d = deadline.map_or(Duration::ZERO, |d| {
                            d.saturating_duration_since(Instant::now())
                        });
                        return Err((Error::Timeout(d), Some(slot)));
                    }
                }
            }
        }
        // Release what every subscriber has read, and the message about to
        // be overwritten even if someone has not (drop_oldest: it lags).
        self.reclaim((pos + 1).saturating_sub(cap));
        let h = slot.publish_pending();
        slot.sent();
        ring.publish(pos, encode(&h));
        self.not_empty().notify();
        Ok(())
    }

    /// Broadcast: gives up the ring's references to messages that every
    /// subscriber has read (all of them when nobody is subscribed), and to
    /// every message before position `at_least`. The ring holds one
    /// reference per message from its publication until then; the position
    /// released so far lives in the (otherwise unused) `head` word.
    /// Publisher only.
    pub(crate) fn reclaim(&self, at_least: u64) {
        let ring = self.broadcast();
        let tail = ring.tail();
        let upto = self.slowest().map_or(tail, |s| s.min(tail)).max(at_least);
        let released = self.word(HEAD);
        let mut r = released.load(Ordering::Relaxed);
        while r < upto {
            if let Some(msg) = ring.published(r) {
                drop(self.seg.slab().take(decode(msg)));
            }
            r += 1;
            released.store(r, Ordering::Relaxed);
        }
    }

    /// Whether a send would find room now (or fail at once because every
    /// receiver has gone).
    pub(crate) fn has_room(&self) -> bool {
        if self.gone(Side::Receiver) {
            return true;
        }
        if self.ring == RING_BROADCAST {
            let tail = self.broadcast().tail();
            let cap = self.config.capacity as u64;
            self.slowest().is_none_or(|s| s + cap > tail)
        } else {
            self.len() < self.config.capacity as u64
        }
    }

    /// Whether a receive would find something now (or fail at once because
    /// every sender has gone). `sub`: a broadcast subscriber.
    pub(crate) fn has_message(&self, sub: Option<usize>) -> bool {
        self.gone(Side::Sender)
            || match sub {
                Some(i) => self.unread(i) > 0,
                None => self.len() > 0,
            }
    }

    /// Whether this is a broadcast channel.
    pub(crate) fn is_broadcast(&self) -> bool {
        self.ring == RING_BROADCAST
    }

    /// Broadcast receive for subscriber `sub`: the next message, or
    /// [`Error::Lagged`] (once) if the publisher overwrote messages it had
    /// not read.
    pub(crate) fn recv_broadcast(
        &self,
        sub: usize,
        deadline: Option<Instant>,
    ) -> Result<Option<Slot>> {
        let ring = self.broadcast();
        let (pos, _) = self.subscriber(sub);
        loop {
            let q = pos.load(Ordering::Relaxed);
            match ring.read(q) {
                Read::Message(msg) => {
                    let got = self.seg.slab().share(&decode(msg));
                    // Release: the publisher may reuse the cell once every
                    // subscriber's position has passed it.
                    pos.store(q + 1, Ordering::Release);
                    self.not_full().notify();
                    match got {
                        Ok(slot) => {
                            self.counters().received.fetch_add(1, Ordering::Relaxed);
                            return Ok(Some(slot));
                        }
                        // Evicted and freed between the read and the share.
                        Err(Error::StaleHandle { .. }) => {
                            self.counters().dropped.fetch_add(1, Ordering::Relaxed);
                            return Err(Error::Lagged { missed: 1 });
                        }
                        Err(e) => return Err(e),
                    }
                }
                Read::Lagged { oldest } => {
                    pos.store(oldest, Ordering::Release);
                    self.not_full().notify();
                    let missed = oldest - q;
                    self.counters().dropped.fetch_add(missed, Ordering::Relaxed);
                    return Err(Error::Lagged { missed });
                }
                Read::Empty => {
                    if self.gone(Side::Sender) {
                        return Err(Error::Disconnected("sender"));
                    }
                    if deadline.is_some_and(|d| Instant::now() >= d) {
                        return Ok(None);
                    }
                    let ready = || ring.tail() > q || self.gone(Side::Sender);
                    if !self.wait_reaping(self.not_empty(), ready, deadline) {
                        return Ok(None);
                    }
                }
            }
        }
    }

    /// Receives one message: `Ok(None)` if none came before `deadline`
    /// (`Some(now)` for a non-blocking try).
    pub(crate) fn recv(&self, c: &mut Consumer, deadline: Option<Instant>) -> Result<Option<Slot>> {
        loop {
            if let Some(msg) = self.pop(c) {
                self.not_full().notify();
                return self.seg.slab().take(decode(msg)).map(Some);
            }
            if self.gone(Side::Sender) {
                // Senders are gone; one may have pushed just before leaving.
                return match self.pop(c) {
                    Some(msg) => self.seg.slab().take(decode(msg)).map(Some),
                    None => Err(Error::Disconnected("sender")),
                };
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok(None);
            }
            let ready = || self.len() > 0 || self.gone(Side::Sender);
            if !self.wait_reaping(self.not_empty(), ready, deadline) {
                return Ok(None);
            }
        }
    }
}

/// A send that did not happen: the slot becomes the sender's again.
fn give_back(slot: SlotMut, e: Error) -> std::result::Result<(), (Error, Option<SlotMut>)> {
    if slot.unpublish() {
        Err((e, Some(slot)))
    } else {
        // A forged handle took the reference: the slot is not ours to return.
        slot.sent();
        Err((
            Error::Corrupt("a forged handle took an unsent slot".into()),
            None,
        ))
    }
}

fn encode(h: &Handle) -> [u64; 2] {
    [h.offset, (h.len as u64) << 32 | h.generation as u64]
}

fn decode(msg: [u64; 2]) -> Handle {
    Handle {
        offset: msg[0],
        generation: msg[1] as u32,
        len: (msg[1] >> 32) as u32,
    }
}
