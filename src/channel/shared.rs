//! The state a channel keeps in its segment's control region (area kind
//! `CHANNEL`), and the operations every transport built on a segment uses.
//!
//! ```text
//! offset  size  content
//!      0   128  ChannelMeta: magic "CHN1", version, pattern, policy, ring kind,
//!               capacity, slab size, largest message, block timeout (immutable)
//!    128   128  counters: sender and receiver masks (a bit per participant
//!               record), seen flags, returned hint, subscribed mask, dropped
//!    256   128  events: not_empty, not_full (8 bytes each, see sync::wait)
//!    384   128  ring tail (its own cache line pair; SPSC: the next-slot hint at 448)
//!    512   128  ring head (broadcast: how far the ring's references are released)
//!    640   ...  ring cells: capacity x 4 words (a sequence word, the message,
//!               padding; see the ring modules)
//!          ...  broadcast only: 64 subscriber records of 64 bytes (position,
//!               state, pid, messages received), then the holder table (one
//!               word per slab slot)
//!          ...  64 participant records of 64 bytes
//! ```
//!
//! A handle travels as two words: `offset` and `len << 32 | generation`.
//!
//! # Crash recovery
//!
//! Every endpoint has a participant record (pid, process start time,
//! heartbeat). Live endpoints look for records of dead processes when they
//! connect and every [`REAP_INTERVAL`] while they wait, and undo what the
//! dead endpoint left half done ([`Shared::reap`]):
//!
//! - a send in flight: the record holds the message and whether a ring
//!   position was claimed. A position claimed on the MPMC layout and never
//!   published becomes a tombstone that consumers skip; a message that did
//!   not reach the ring has its slot freed; a message that did stays for a
//!   receiver.
//! - a receive in flight: on the MPMC layout the cell names its consumer
//!   until the consumer has taken the slot's reference. If it had taken it,
//!   the reaper frees that reference and releases the cell (the dead
//!   consumer received the message); if not, the reaper marks the cell
//!   `RETURNED` and a live consumer adopts the message
//!   ([`Shared::take_returned`]). On the SPSC layout the reaper stands in
//!   for the (single) consumer at `head`.
//! - broadcast: each slot's holders are bits of a word in the holder table
//!   (one per subscriber, and one for the ring), so the reaper clears the
//!   dead subscriber's bits (its views) and stops counting its position
//!   (its unread messages).
//! - its counts (its bit in the sender and receiver masks), the slots it
//!   held alone (`Slab::reclaim_owner`), and finally free slots the slab's
//!   bitmaps lost (`Slab::repair`). On the SPSC layout a producer sends
//!   without publishing its slots (the cell is the publication), so before
//!   freeing the dead process's slots the reaper publishes those still
//!   queued on the ring for it (`Shared::publish_queued`): they stay for
//!   the consumer.
//!
//! Reaping one record is restartable: every step is an atomic operation
//! that does nothing the second time (a compare-and-swap from the dead
//! endpoint's state, or clearing a bit), so a reaper killed part way is
//! replaced by one that finishes the job. The steps that look at the ring
//! run only while the record's `side` is set; the reaper clears it once
//! they are done, so a replacement never redoes them after a live endpoint
//! (say, a new single consumer) has taken over.

use std::ptr::NonNull;
use std::sync::atomic::{fence, AtomicU32, AtomicU64};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytemuck::{Pod, Zeroable};

use super::uri::{Params, Pattern, Policy};
use crate::error::{Error, Result};
use crate::ring::broadcast::{self, Broadcast, ForceOut, Read, GONE, POS_MASK, RING_HOLD};
use crate::ring::mpmc::{Mpmc, CELL_WORDS};
use crate::ring::spsc::{Consumer, Producer, Spsc};
use crate::shm::hook::{self, Point};
use crate::shm::lease::{Keep, LeasePool};
use crate::shm::segment::area;
use crate::shm::slab::Holder;
use crate::shm::slot::GroupBit;
use crate::shm::{Handle, Segment, Slot, SlotMut};
use crate::sync::wait::Event;
use crate::sync::Ordering;

const MAGIC: u32 = u32::from_le_bytes(*b"CHN1");
/// Version 2: 64-byte participant records with a heartbeat and the send in
/// flight; claimer ids and tombstones in MPMC cells; broadcast holder table.
/// Version 3: sender and receiver masks instead of counts; the returned
/// hint; `RETURNED` MPMC cells; SPSC cells with a sequence word.
/// Version 4: each broadcast subscriber record counts what it received; the
/// counter word at 160 became the `subscribed` mask.
const VERSION: u32 = 5;
const COUNTERS: usize = 128;
#[cfg(not(psyne_loom))]
const _: () = assert!(
    std::mem::size_of::<Event>() == 8,
    "the events are 8 bytes apart"
);
const EVENTS: usize = 256;
const TAIL: usize = 384;
/// SPSC: the producer's hint of its next message's slot (its own line).
const NEXT_HINT: usize = TAIL + 64;
const HEAD: usize = 512;
const CELLS: usize = 640;
const RING_SPSC: u8 = 1;
const RING_MPMC: u8 = 2;
const RING_BROADCAST: u8 = 3;
/// Subscribers a broadcast channel can have at once (one bit of a holder
/// word each; the ring has the 64th).
pub const MAX_SUBSCRIBERS: usize = 63;
/// Records in the subscriber table.
const SUB_RECORDS: usize = 64;
/// Bytes per subscriber record.
const SUB_SIZE: usize = 64;
/// Endpoints (of every process) a channel can have at once.
pub const MAX_PARTICIPANTS: usize = 64;
/// Bytes per participant record.
const PART_SIZE: usize = 64;
/// How often a blocked endpoint looks for dead peers (and beats its heart).
pub(crate) const REAP_INTERVAL: Duration = Duration::from_millis(100);

/// Subscriber record states.
const SUB_FREE: u32 = 0;
const SUB_ACTIVE: u32 = 1;
/// Its receiver has gone, but views it received may still be alive in its
/// process (their bits are set): the record cannot be reused yet.
const SUB_DETACHED: u32 = 2;
const SUB_REAPING: u32 = 3;

/// `send_pos` of a participant: no send in flight.
const SEND_IDLE: u64 = 0;
/// A send in flight that has not claimed a ring position.
const SEND_UNCLAIMED: u64 = 1;
/// A send in flight that claimed position `p` is `SEND_CLAIMED + p`.
const SEND_CLAIMED: u64 = 2;

/// One endpoint's record: who it is, so that survivors can tell when it
/// died (pid gone, or reused by a process with another start time), and
/// the send it has in flight, so that they can finish or undo it.
#[repr(C)]
struct Participant {
    /// 0: free.
    pid: AtomicU32,
    /// 1 sender, 2 receiver: written by `join` before it counts the
    /// endpoint; cleared by its reaper once the ring is undone (0 also
    /// before `join` writes it).
    side: AtomicU32,
    /// The process's start time (clock ticks since boot, /proc).
    start: AtomicU64,
    /// 1 + its broadcast subscriber record, or 0.
    sub: AtomicU32,
    /// The process reaping this record (0: none).
    reaper: AtomicU32,
    /// Last sign of life: milliseconds since the Unix epoch.
    heartbeat: AtomicU64,
    /// The message of the send in flight.
    send: [AtomicU64; 2],
    /// `SEND_IDLE`, `SEND_UNCLAIMED` or `SEND_CLAIMED + position`.
    send_pos: AtomicU64,
    _reserved: AtomicU64,
}

const _: () = assert!(std::mem::size_of::<Participant>() == PART_SIZE);

/// A broadcast subscriber's record.
#[repr(C)]
struct Subscriber {
    /// Next position to read, with the `READING` and `GONE` flags.
    pos: AtomicU64,
    /// `SUB_FREE`, `SUB_ACTIVE`, `SUB_DETACHED` or `SUB_REAPING`.
    state: AtomicU32,
    /// The process that owns the record.
    pid: AtomicU32,
    /// Messages received through this record, by all its owners so far
    /// (never reset: `stats` sums the records). Written by the owner only,
    /// on the line it writes anyway (`pos`), so that subscribers on
    /// different cores do not share a counter's line.
    received: AtomicU64,
    _reserved: [AtomicU64; 5],
}

const _: () = assert!(std::mem::size_of::<Subscriber>() == SUB_SIZE);

/// What an endpoint got when it joined.
#[derive(Copy, Clone, Debug)]
pub(crate) struct Joined {
    pub(crate) sub: Option<usize>,
    pub(crate) part: usize,
}

/// A registered endpoint, as [`crate::channel::inspect`] reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointInfo {
    /// Process id.
    pub pid: u32,
    /// `"sender"`, `"receiver"` or `"joining"`.
    pub side: &'static str,
    /// Whether the process lives (pid present with the start time it
    /// registered; exact on one machine).
    pub alive: bool,
    /// The process's start time in clock ticks since boot (0: unknown).
    pub started: u64,
    /// When the endpoint last showed a sign of life: when it joined, and
    /// every 100 ms while it waits (blocked in a send or receive, or
    /// awaiting one). `None` if never recorded.
    pub heartbeat: Option<SystemTime>,
}

impl EndpointInfo {
    /// How long ago the last heartbeat was (zero if the clock went back).
    pub fn heartbeat_age(&self) -> Option<Duration> {
        self.heartbeat
            .map(|t| SystemTime::now().duration_since(t).unwrap_or_default())
    }
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
        Some(('Z' | 'X', _)) => false,
        Some((_, s)) => start == 0 || s == start,
        None if pid == 0 || pid > i32::MAX as u32 => false,
        // Not in /proc: gone, or hidden (/proc unmounted in a container,
        // or mounted with hidepid and the process another user's). The
        // start time cannot be checked then: a process with the pid exists
        // or not (EPERM: it exists, owned by another user).
        None => !matches!(
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), None),
            Err(nix::errno::Errno::ESRCH)
        ),
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
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
    /// Bit `i` set: participant record `i` is a live sender. Joining sets
    /// the bit (one atomic operation that both counts and records the
    /// endpoint), leaving or a reaper clears it: a crash leaves no count
    /// that nobody can take back.
    senders: AtomicU64,
    /// Bit `i` set: participant record `i` is a live receiver.
    receivers: AtomicU64,
    /// Non-zero once a sender has joined: only then can receivers be
    /// disconnected (a consumer may start before its producer).
    senders_seen: AtomicU32,
    /// Non-zero once a receiver has joined (sends before that queue up).
    receivers_seen: AtomicU32,
    /// Non-zero when a ring cell may hold a `RETURNED` message (a hint:
    /// set by the reaper that returns one, cleared by a consumer before it
    /// looks for them).
    returned: AtomicU64,
    /// Broadcast: bit `i` set once subscriber record `i` has been claimed
    /// (set before the claim, never cleared): the publisher's scans of the
    /// subscribers' positions read only these records. A stale bit costs
    /// one load of a record's state; a bit is never missing for a record
    /// that is active. (Until channel area version 3: the received count,
    /// now in the subscriber records.)
    subscribed: AtomicU64,
    dropped: AtomicU64,
}

const _: () = assert!(std::mem::size_of::<ChannelMeta>() == 128);
const _: () = assert!(std::mem::size_of::<Counters>() <= 128);
const _: () = assert!(MAX_PARTICIPANTS == 64, "one bit of a mask per record");

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
        // The same for every layout (the SPSC ring's cells have a sequence
        // word and padding, too).
        CELL_WORDS
    }

    fn cells_size(&self) -> usize {
        self.capacity as usize * self.cell_words() * 8
    }

    /// Bytes of the channel area: the cells, then (broadcast) the
    /// subscriber table and the holder table, then the participant table.
    pub(crate) fn area_size(&self) -> u64 {
        (self.participants_offset() + MAX_PARTICIPANTS * PART_SIZE) as u64
    }

    /// Offset of the subscriber table (broadcast).
    fn subscribers_offset(&self) -> usize {
        CELLS + self.cells_size()
    }

    /// Offset of the holder table (broadcast): one word per slab slot.
    fn holders_offset(&self) -> usize {
        self.subscribers_offset() + SUB_RECORDS * SUB_SIZE
    }

    fn participants_offset(&self) -> usize {
        if self.pattern == Pattern::Broadcast {
            self.holders_offset() + 8 * self.total_slots()
        } else {
            CELLS + self.cells_size()
        }
    }

    /// Slots of the slab this configuration makes (0 if it makes none: the
    /// segment cannot be created then).
    fn total_slots(&self) -> usize {
        self.slab_config()
            .and_then(|c| c.normalized())
            .map_or(0, |cs| cs.iter().map(|c| c.1 as usize).sum())
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
    /// Control-mapping offsets of the subscriber and holder tables
    /// (computed once: the holder table's size depends on the slab).
    subscribers_at: usize,
    holders_at: usize,
    /// The ring's words, looked up (and bounds-checked) once: every send
    /// and receive uses them.
    ring_words: RingWords,
}

/// Pointers to a ring's `tail`, `head` and cells in the control mapping,
/// which `Shared::seg` keeps mapped for as long as they live.
struct RingWords {
    tail: NonNull<AtomicU64>,
    /// SPSC: the producer's hint of the slot of its next message, two
    /// words (see `Shared::hint_next`), on the second line of `tail`'s pair.
    hint: NonNull<[AtomicU64; 2]>,
    head: NonNull<AtomicU64>,
    cells: NonNull<AtomicU64>,
    /// Words in `cells`.
    cells_len: usize,
    /// The counters, the two events and participant record 0 (of
    /// `MAX_PARTICIPANTS`), also touched on every message.
    counters: NonNull<Counters>,
    events: NonNull<Event>,
    participants: NonNull<Participant>,
}

// SAFETY: the pointers name atomics in a shared mapping (accessed only
// atomically, from any thread or process); `Shared` owns the segment that
// keeps it mapped.
unsafe impl Send for RingWords {}
// SAFETY: as for `Send`: shared access to atomics is what they are for.
unsafe impl Sync for RingWords {}

/// Which side an endpoint is on.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) enum Side {
    Sender,
    Receiver,
}

impl Side {
    fn code(self) -> u32 {
        match self {
            Side::Sender => 1,
            Side::Receiver => 2,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Side::Sender => "sender",
            Side::Receiver => "receiver",
        }
    }
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
        let shared = Shared::new(seg, config, area, meta.ring);
        if shared.ring == RING_MPMC {
            shared.mpmc().format();
        }
        if shared.ring == RING_BROADCAST && shared.seg.slab().total_slots() != config.total_slots()
        {
            return Err(Error::InvalidConfig(
                "psyne bug: the slab does not match the channel's holder table".into(),
            ));
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
            return Err(bad(format!(
                "channel layout version {} (this psyne reads version {VERSION})",
                meta.version
            )));
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
        if pattern == Pattern::Broadcast && seg.slab().total_slots() != config.total_slots() {
            return Err(bad(format!(
                "its holder table has room for {} slots, its slab has {}",
                config.total_slots(),
                seg.slab().total_slots()
            )));
        }
        Ok(Shared::new(seg, config, area, meta.ring))
    }

    fn new(seg: Segment, config: Config, area: usize, ring: u8) -> Shared {
        let n = config.capacity as usize * config.cell_words();
        let control = seg.control();
        // SAFETY: atomics, valid for any bits; `at` and `slice_at` check
        // the bounds (the area's size was checked at format/attach).
        let ring_words = unsafe {
            let cells: &[AtomicU64] = control.slice_at(area + CELLS, n);
            RingWords {
                tail: NonNull::from(control.at::<AtomicU64>(area + TAIL)),
                hint: NonNull::from(control.at::<[AtomicU64; 2]>(area + NEXT_HINT)),
                head: NonNull::from(control.at::<AtomicU64>(area + HEAD)),
                cells: NonNull::from(cells).cast(),
                cells_len: n,
                counters: NonNull::from(control.at::<Counters>(area + COUNTERS)),
                events: NonNull::from(control.slice_at::<Event>(area + EVENTS, 2)).cast(),
                participants: NonNull::from(control.slice_at::<Participant>(
                    area + config.participants_offset(),
                    MAX_PARTICIPANTS,
                ))
                .cast(),
            }
        };
        Shared {
            ring_words,
            subscribers_at: area + config.subscribers_offset(),
            holders_at: area + config.holders_offset(),
            seg,
            config,
            area,
            ring,
        }
    }

    fn magic(&self) -> &AtomicU32 {
        // SAFETY: an atomic, valid for any bits; in bounds.
        unsafe { self.seg.control().at(self.area) }
    }

    fn counters(&self) -> &Counters {
        // SAFETY: atomics only, valid for any bits; checked in bounds when
        // `Shared::new` looked them up (area size checked at
        // format/attach); `self.seg` keeps them mapped for the borrow.
        unsafe { self.ring_words.counters.as_ref() }
    }

    fn event(&self, which: usize) -> &Event {
        assert!(which < 2, "psyne bug: event index");
        // An Event is 8 bytes, as the layout's offsets assume (asserted next
        // to `EVENTS`).
        // SAFETY: two atomics, valid for any bits; one of the two events
        // `Shared::new` checked in bounds; `self.seg` keeps them mapped.
        unsafe { self.ring_words.events.add(which).as_ref() }
    }

    pub(crate) fn not_empty(&self) -> &Event {
        self.event(0)
    }

    pub(crate) fn not_full(&self) -> &Event {
        self.event(1)
    }

    fn cells(&self) -> &[AtomicU64] {
        let w = &self.ring_words;
        // SAFETY: `w.cells_len` atomics from `w.cells`, checked in bounds
        // when `Shared::new` looked them up; `self.seg` keeps them mapped
        // for the borrow of `self`.
        unsafe { std::slice::from_raw_parts(w.cells.as_ptr(), w.cells_len) }
    }

    fn hint_words(&self) -> &[AtomicU64; 2] {
        // SAFETY: as in `cells`.
        unsafe { self.ring_words.hint.as_ref() }
    }

    fn tail_word(&self) -> &AtomicU64 {
        // SAFETY: as in `cells`.
        unsafe { self.ring_words.tail.as_ref() }
    }

    fn head_word(&self) -> &AtomicU64 {
        // SAFETY: as in `cells`.
        unsafe { self.ring_words.head.as_ref() }
    }

    fn spsc(&self) -> Spsc<'_, AtomicU64> {
        Spsc {
            tail: self.tail_word(),
            head: self.head_word(),
            cells: self.cells(),
        }
    }

    fn broadcast(&self) -> Broadcast<'_, AtomicU64> {
        Broadcast {
            tail: self.tail_word(),
            cells: self.cells(),
        }
    }

    fn mpmc(&self) -> Mpmc<'_, AtomicU64> {
        let p = self.config.pattern;
        Mpmc {
            tail: self.tail_word(),
            head: self.head_word(),
            cells: self.cells(),
            single_producer: matches!(p, Pattern::Spsc | Pattern::Spmc),
            // With drop_oldest a producer may pop too.
            single_consumer: matches!(p, Pattern::Spsc | Pattern::Mpsc)
                && self.config.policy != Policy::DropOldest,
        }
    }

    /// Subscriber record `i`.
    fn subscriber(&self, i: usize) -> &Subscriber {
        assert!(i < SUB_RECORDS, "psyne bug: subscriber index");
        let at = self.subscribers_at + i * SUB_SIZE;
        // In bounds: the area of a broadcast channel includes the table,
        // checked at format/attach. 8-aligned: the area is 128-aligned and
        // every part before is a multiple of 8.
        // SAFETY: atomics, valid for any bits; in bounds and aligned (above).
        unsafe { self.seg.control().at(at) }
    }

    /// Control-mapping offset of the holder word of slot number `n`.
    fn holder_offset(&self, n: usize) -> usize {
        self.holders_at + 8 * n
    }

    /// The holder word of slot number `n` (broadcast): bit `i` for
    /// subscriber `i`'s views, `RING_HOLD` for the ring's reference.
    fn holder(&self, n: usize) -> &AtomicU64 {
        self.seg.slab().group_word(self.holder_offset(n))
    }

    fn participant(&self, i: usize) -> &Participant {
        assert!(i < MAX_PARTICIPANTS, "psyne bug: participant index");
        // SAFETY: atomics, valid for any bits; record `i` of the table that
        // `Shared::new` checked in bounds and aligned; `self.seg` keeps it mapped.
        unsafe { self.ring_words.participants.add(i).as_ref() }
    }

    /// Records a sign of life of endpoint `part`.
    pub(crate) fn beat(&self, part: usize) {
        self.participant(part)
            .heartbeat
            .store(now_ms(), Ordering::Relaxed);
    }

    /// Looks for endpoints whose process has died, and undoes them (see
    /// the module docs). Returns whether it found any. Called on connect
    /// and every [`REAP_INTERVAL`] while an endpoint waits.
    pub(crate) fn reap(&self) -> bool {
        let me = std::process::id();
        let mut found = false;
        for k in 0..MAX_PARTICIPANTS {
            let p = self.participant(k);
            let pid = p.pid.load(Ordering::Acquire);
            // The start time a freed record had is cleared before its pid
            // (with `Release`), and a joiner takes the record by a
            // compare-and-swap of the pid (`AcqRel`): so a pid read here is
            // never paired with the start time of the record's previous
            // occupant (which would make a live joiner look dead).
            let start = p.start.load(Ordering::Acquire);
            if pid == 0 || pid == me || alive(pid, start) {
                continue;
            }
            // One reaper per record; a reaper that died is replaced.
            let r = p.reaper.load(Ordering::Acquire);
            if r == me || (r != 0 && alive(r, 0)) {
                continue;
            }
            if p.reaper
                .compare_exchange(r, me, Ordering::AcqRel, Ordering::Relaxed)
                .is_err()
            {
                continue;
            }
            // Still the record judged dead: another reaper may have freed
            // it, and a live endpoint taken it, since we read it. (While
            // we hold `reaper`, its pid is not 0, so nobody can take it.)
            if p.pid.load(Ordering::Acquire) != pid || p.start.load(Ordering::Acquire) != start {
                p.reaper.store(0, Ordering::Release);
                continue;
            }
            found = true;
            self.undo(k, pid);
            p.reaper.store(0, Ordering::Release);
            // The start time before the pid (see above and `leave`).
            p.start.store(0, Ordering::Relaxed);
            // Release: a joiner that takes the record sees it cleared.
            p.pid.store(0, Ordering::Release);
        }
        if self.ring == RING_BROADCAST {
            // Subscriber records whose process died: those of the endpoints
            // above, one that died while joining, and detached ones.
            for i in 0..MAX_SUBSCRIBERS {
                let rec = self.subscriber(i);
                let state = rec.state.load(Ordering::Acquire);
                let pid = rec.pid.load(Ordering::Acquire);
                if (state == SUB_ACTIVE || state == SUB_DETACHED)
                    && pid != 0
                    && pid != me
                    && !alive(pid, 0)
                {
                    found |= self.reap_subscriber(i, pid, false);
                }
            }
        }
        if found {
            // Free slots a crash left out of the bitmaps (the dead process
            // may have died inside an allocation or a free).
            self.seg.slab().repair();
            // Returned messages, in case a consumer died after clearing the
            // hint and before adopting them.
            if self.ring == RING_MPMC && self.mpmc().returned() > 0 {
                self.set_returned_hint();
            }
            if self.ring == RING_BROADCAST {
                // Messages only the dead subscriber had not read.
                self.reclaim(0, None);
            }
            self.not_empty().notify();
            self.not_full().notify();
        }
        found
    }

    /// Undoes participant record `k` of dead process `pid`. Restartable
    /// (see the module docs): a reaper killed part way is replaced by one
    /// that finishes, and nothing is done twice.
    fn undo(&self, k: usize, pid: u32) {
        let p = self.participant(k);
        let slab = self.seg.slab();
        let side = p.side.load(Ordering::Acquire);
        // Steps 1 to 3 only while `side` is set: once it is cleared (below)
        // they are done, and a live endpoint may have taken the dead one's
        // place (a new single consumer at `head`).
        if side != 0 {
            self.undo_ring(k, pid, side);
            // Done with the ring. Release: a replacing reaper that sees 0
            // sees what was done.
            p.side.store(0, Ordering::Release);
        }
        // 4. Its count: its bit in both masks (idempotent).
        let bit = 1u64 << k;
        let c = self.counters();
        c.senders.fetch_and(!bit, Ordering::AcqRel);
        c.receivers.fetch_and(!bit, Ordering::AcqRel);
        hook::hit(Point::ReapUncounted);
        // 5. The slots it held alone: loans, and views it had taken (a
        // compare-and-swap from the state the dead process left: once).
        // Messages it had sent on an SPSC ring are in its writer state
        // still: published for it first, they are left to the consumer
        // (whichever of its endpoints this record was: the process is dead).
        if self.ring == RING_SPSC {
            self.publish_queued(pid);
        }
        slab.reclaim_owner(pid);
    }

    /// Publishes, for dead process `pid`, the slots of the messages it
    /// pushed on the SPSC ring and nobody has taken yet (a consumer takes
    /// them either way: `slotstate::claim_sent`). Idempotent: a reaper
    /// replacing one that died here does it again harmlessly.
    fn publish_queued(&self, pid: u32) {
        let ring = self.spsc();
        let slab = self.seg.slab();
        let (head, tail) = ring.indices();
        // Up to `tail` included: a producer that died between publishing a
        // cell and moving `tail` left a message there.
        let mut pos = head;
        while pos <= tail && pos.wrapping_sub(head) <= self.config.capacity as u64 {
            if let Some(msg) = ring.at(pos) {
                slab.publish_for(&decode(msg), pid);
            }
            pos += 1;
        }
    }

    /// Tells the consumer of an SPSC ring that after the message in slot
    /// `sent` the producer's next one comes in slot `next` (each `(class,
    /// index)`), if that is not what the consumer guesses anyway (the slot
    /// after `sent`'s): so in the common case (a sender allocates in index
    /// order from the bits it caches) nothing is written, and the
    /// consumer's read of the hint line hits its own copy. Other rings
    /// ignore it.
    pub(crate) fn hint_next(&self, sent: (u8, u32), next: (u8, u32)) {
        if self.ring != RING_SPSC || next == (sent.0, sent.1.wrapping_add(1)) {
            return;
        }
        let w = self.hint_words();
        let (after, then) = (encode_hint(sent.0, sent.1), encode_hint(next.0, next.1));
        // Relaxed: a hint. A consumer reading the two words torn (or
        // stale) fetches a line it did not need, nothing worse.
        if w[0].load(Ordering::Relaxed) != after || w[1].load(Ordering::Relaxed) != then {
            w[1].store(then, Ordering::Relaxed);
            w[0].store(after, Ordering::Relaxed);
        }
    }

    /// The consumer's guess of the slot of the message after the last one
    /// it took: the producer's hint if it is about that message, else the
    /// next slot of the same class.
    fn next_slot(&self, c: &Consumer) -> Option<(u8, u32)> {
        let (class, index) = c.last?;
        let w = self.hint_words();
        if w[0].load(Ordering::Relaxed) == encode_hint(class, index) {
            decode_hint(w[1].load(Ordering::Relaxed))
        } else {
            Some((class, index.wrapping_add(1)))
        }
    }

    /// Steps 1 to 3 of [`Shared::undo`]: what dead endpoint `k` (process
    /// `pid`, side code `side`) left half done on the ring.
    fn undo_ring(&self, k: usize, pid: u32, side: u32) {
        let p = self.participant(k);
        let slab = self.seg.slab();
        // A send whose claimed position its producer never published is not
        // on the ring: say so in the record before the position becomes a
        // tombstone, so that a reaper replacing this one (which no longer
        // sees the claim) still frees its slot.
        let state = p.send_pos.load(Ordering::Acquire);
        if self.ring == RING_MPMC
            && state >= SEND_CLAIMED
            && self.mpmc().claimed_by(state - SEND_CLAIMED, k as u8)
        {
            p.send_pos.store(SEND_UNCLAIMED, Ordering::Release);
        }
        // 1. A receive in flight.
        match self.ring {
            RING_MPMC => {
                let receiver = side == Side::Receiver.code();
                let mut returned = false;
                let mut dropped = 0;
                // Cells it claimed: positions it never published become
                // tombstones. A message a receiver claimed and had not
                // taken yet is returned for another consumer; one it had
                // taken was received (its reference is freed), and one a
                // `drop_oldest` producer was dropping is freed and counted.
                let tombs = self.mpmc().abandon(
                    k as u8,
                    |msg| {
                        let keep = receiver && self.untaken(&decode(msg));
                        returned |= keep;
                        keep
                    },
                    |msg| {
                        slab.reclaim_handle(&decode(msg), pid, Holder::Taker);
                        if !receiver {
                            dropped += 1;
                        }
                    },
                );
                if returned {
                    self.set_returned_hint();
                }
                // A tombstoned position counts as sent (`tail` passed it)
                // and never received: dropped.
                self.counters()
                    .dropped
                    .fetch_add(tombs as u64 + dropped, Ordering::Relaxed);
            }
            RING_SPSC if side == Side::Receiver.code() => self.stand_in_for_consumer(pid),
            _ => {}
        }
        // 2. A send in flight.
        let state = p.send_pos.load(Ordering::Acquire);
        if state != SEND_IDLE {
            let msg = [
                p.send[0].load(Ordering::Relaxed),
                p.send[1].load(Ordering::Relaxed),
            ];
            let h = decode(msg);
            let on_ring = match self.ring {
                // Claimed and not left unpublished (above): it published.
                RING_MPMC => state >= SEND_CLAIMED,
                RING_SPSC => {
                    // Published: at `tail - 1`, or at `tail` if it died
                    // before moving `tail` (move it now).
                    let ring = self.spsc();
                    let tail = ring.heal_tail();
                    tail > 0 && ring.at(tail - 1) == Some(msg)
                }
                _ => {
                    let ring = self.broadcast();
                    let tail = ring.tail();
                    tail > 0 && ring.published(tail - 1) == Some(msg)
                }
            };
            if !on_ring {
                if self.ring == RING_BROADCAST {
                    let current = slab
                        .handle_state(&h)
                        .is_some_and(|(g, _)| g == h.generation);
                    if let (true, Ok((ci, index))) = (current, slab.resolve(&h)) {
                        // Its ring bit, if it got that far; then the slot,
                        // which nobody else can hold (it was never on the
                        // ring). Only while the slot still holds its message:
                        // a reaper replacing one that freed it must not clear
                        // the ring bit of the slot's next message.
                        let n = slab.slot_number(ci, index);
                        broadcast::leave(self.holder(n), RING_HOLD);
                        slab.reclaim_handle(&h, pid, Holder::Group);
                    }
                } else {
                    slab.reclaim_handle(&h, pid, Holder::Sender);
                }
            }
            p.send_pos.store(SEND_IDLE, Ordering::Release);
        }
        // 3. Its subscriber record.
        if let Some(i) = (p.sub.load(Ordering::Acquire) as usize).checked_sub(1) {
            if i < MAX_SUBSCRIBERS {
                self.reap_subscriber(i, pid, true);
            }
            p.sub.store(0, Ordering::Relaxed);
        }
    }

    /// Whether the slot of `h` still holds `h`'s message with its one
    /// handle-carried reference not taken.
    fn untaken(&self, h: &Handle) -> bool {
        self.seg.slab().handle_state(h) == Some((h.generation, crate::sync::slotstate::PENDING))
    }

    /// Tells consumers that a cell may hold a `RETURNED` message (and wakes
    /// them: the caller notifies `not_empty`, or `reap` does).
    fn set_returned_hint(&self) {
        // SeqCst fence: with the one in `adopt_returned`, a consumer that
        // cleared the hint before this store sees the cell returned before
        // it (store-buffering: a cell returned after that consumer's scan
        // passed it is announced by a store after its clear).
        fence(Ordering::SeqCst);
        self.counters().returned.store(1, Ordering::SeqCst);
    }

    /// Whether a `RETURNED` message may be waiting (a hint).
    fn returned_hint(&self) -> bool {
        self.ring == RING_MPMC && self.counters().returned.load(Ordering::Relaxed) != 0
    }

    /// Claims a `RETURNED` message for endpoint `part`, if the hint says
    /// there may be one: its position (release it once the slot's
    /// reference is taken) and words.
    fn adopt_returned(&self, part: usize) -> Option<(u64, [u64; 2])> {
        if !self.returned_hint() {
            return None;
        }
        let hint = &self.counters().returned;
        if hint.swap(0, Ordering::SeqCst) == 0 {
            return None;
        }
        // Pairs with the fence in `set_returned_hint`.
        fence(Ordering::SeqCst);
        let got = self.mpmc().adopt(part as u8)?;
        // There may be more.
        hint.store(1, Ordering::SeqCst);
        Some(got)
    }

    /// A message a dead consumer claimed and never took, returned by its
    /// reaper, received by endpoint `part` (as a receive: the slot's
    /// reference is taken before the cell is released, so the adopter's
    /// own crash in between is undone the same way).
    fn take_returned(&self, part: usize) -> Option<Result<Slot>> {
        let (pos, msg) = self.adopt_returned(part)?;
        let got = self.seg.slab().take(decode(msg));
        self.mpmc().release(pos);
        self.not_full().notify();
        Some(got)
    }

    /// SPSC layout, dead consumer: the message at `head` is the one it was
    /// receiving. If it had taken the slot's reference (and not yet moved
    /// `head`), free the slot and move `head`; if it had not, leave the
    /// message for the next consumer.
    fn stand_in_for_consumer(&self, pid: u32) {
        let ring = self.spsc();
        let (head, _) = ring.indices();
        let Some(msg) = ring.at(head) else {
            return;
        };
        let h = decode(msg);
        let slab = self.seg.slab();
        match slab.handle_state(&h) {
            // Not taken: left for the next consumer (pending, or in its
            // producer's writer state, see `send`).
            Some((g, holders))
                if g == h.generation
                    && (holders == crate::sync::slotstate::PENDING
                        || holders & crate::sync::slotstate::WRITER != 0) => {}
            Some((g, 1)) if g == h.generation => {
                slab.reclaim_handle(&h, pid, Holder::Reader);
                ring.skip(head);
            }
            // Taken and freed already (or not a slot at all): it is gone.
            _ => ring.skip(head),
        }
    }

    /// Broadcast: undoes subscriber record `i` of dead process `pid`: its
    /// views are dropped (its bits cleared) and its position no longer
    /// holds messages back. Returns whether it did. `resume`: the caller
    /// reaps the participant record that owns this subscriber record, so a
    /// record left `SUB_REAPING` by a reaper that died is finished too
    /// (clearing bits is idempotent).
    fn reap_subscriber(&self, i: usize, pid: u32, resume: bool) -> bool {
        let rec = self.subscriber(i);
        if rec.pid.load(Ordering::Acquire) != pid {
            return false; // reused meanwhile
        }
        let state = rec.state.load(Ordering::Acquire);
        let resuming = resume && state == SUB_REAPING;
        if !resuming
            && ((state != SUB_ACTIVE && state != SUB_DETACHED)
                || rec
                    .state
                    .compare_exchange(state, SUB_REAPING, Ordering::AcqRel, Ordering::Relaxed)
                    .is_err())
        {
            return false;
        }
        self.drop_bits(i);
        rec.pid.store(0, Ordering::Relaxed);
        rec.pos.store(0, Ordering::Relaxed);
        rec.state.store(SUB_FREE, Ordering::Release);
        true
    }

    /// Clears subscriber `i`'s bit in every holder word, releasing the slots
    /// it was the last holder of.
    fn drop_bits(&self, i: usize) {
        let slab = self.seg.slab();
        let bit = 1u64 << i;
        for n in 0..slab.total_slots() {
            let w = self.holder(n);
            if w.load(Ordering::Relaxed) & bit != 0 && broadcast::leave(w, bit) {
                let (ci, index) = slab.slot_at(n);
                slab.release(ci, index);
            }
        }
    }

    /// Whether subscriber `i` holds a view of any slot.
    fn holds_any(&self, i: usize) -> bool {
        let bit = 1u64 << i;
        (0..self.seg.slab().total_slots())
            .any(|n| self.holder(n).load(Ordering::Acquire) & bit != 0)
    }

    /// Senders counted now.
    pub(crate) fn senders(&self) -> u32 {
        self.counters().senders.load(Ordering::Acquire).count_ones()
    }

    /// Receivers counted now.
    pub(crate) fn receivers(&self) -> u32 {
        self.counters()
            .receivers
            .load(Ordering::Acquire)
            .count_ones()
    }

    /// The records of the participant table in use.
    pub(crate) fn participants(&self) -> Vec<EndpointInfo> {
        (0..MAX_PARTICIPANTS)
            .filter_map(|i| {
                let p = self.participant(i);
                let pid = p.pid.load(Ordering::Acquire);
                if pid == 0 {
                    return None;
                }
                // Counted on a side: its bit is in that side's mask.
                let bit = 1u64 << i;
                let c = self.counters();
                let side = if c.senders.load(Ordering::Acquire) & bit != 0 {
                    "sender"
                } else if c.receivers.load(Ordering::Acquire) & bit != 0 {
                    "receiver"
                } else {
                    "joining"
                };
                let started = p.start.load(Ordering::Acquire);
                let beat = p.heartbeat.load(Ordering::Relaxed);
                Some(EndpointInfo {
                    pid,
                    side,
                    alive: alive(pid, started),
                    started,
                    heartbeat: (beat != 0).then(|| UNIX_EPOCH + Duration::from_millis(beat)),
                })
            })
            .collect()
    }

    /// Waits on `event` until `ready`, `deadline`, or the next look for dead
    /// peers (which may itself make `ready` true, e.g. disconnected).
    /// Endpoint `part` beats its heart each time it looks (every
    /// [`REAP_INTERVAL`] of waiting; not on the way in, so that short waits
    /// in a busy exchange write nothing). Returns whether `ready` held.
    fn wait_reaping(
        &self,
        part: usize,
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
            self.beat(part);
            self.reap();
        }
    }

    /// Subscriber records that may be active (see `Counters::subscribed`).
    fn subscribed(&self) -> impl Iterator<Item = usize> {
        let mut bits = self.counters().subscribed.load(Ordering::Acquire);
        std::iter::from_fn(move || {
            let i = (bits != 0).then(|| bits.trailing_zeros() as usize)?;
            bits &= bits - 1;
            Some(i)
        })
        .filter(|&i| i < MAX_SUBSCRIBERS)
    }

    /// The lowest next position over active subscribers (None: none).
    fn slowest(&self) -> Option<u64> {
        self.subscribed()
            .filter_map(|i| {
                let rec = self.subscriber(i);
                (rec.state.load(Ordering::Acquire) == SUB_ACTIVE)
                    .then(|| rec.pos.load(Ordering::Acquire) & POS_MASK)
            })
            .min()
    }

    /// Registers an endpoint, refusing one the pattern does not allow. A
    /// broadcast receiver gets a subscriber record, returned, starting at
    /// the next message published.
    pub(crate) fn join(&self, side: Side) -> Result<Joined> {
        // A dead endpoint must not keep a live one out.
        self.reap();
        let too_many = |pattern: &'static str| Error::TooManyEndpoints {
            name: self.seg.name().to_string(),
            pattern,
            side: side.name(),
        };
        // The participant record first, so that survivors can undo this
        // endpoint if the process dies from here on.
        let me = std::process::id();
        let part = (0..MAX_PARTICIPANTS)
            .find(|&i| {
                self.participant(i)
                    .pid
                    .compare_exchange(0, me, Ordering::AcqRel, Ordering::Relaxed)
                    .is_ok()
            })
            .ok_or_else(|| too_many("any (64 endpoints at most)"))?;
        let p = self.participant(part);
        hook::hit(Point::JoinClaimed);
        p.start
            .store(proc_stat(me).map_or(0, |s| s.1), Ordering::Release);
        p.send_pos.store(SEND_IDLE, Ordering::Relaxed);
        p.sub.store(0, Ordering::Relaxed);
        // The side before counting: a reaper of this record knows it.
        p.side.store(side.code(), Ordering::Release);
        self.beat(part);
        let c = self.counters();
        let (mask, single) = match side {
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
        // Counting and recording are one operation: the record's bit in the
        // side's mask. A reaper clears it if the process dies from here on
        // (clearing a bit that is not set does nothing, so there is no
        // window in which a crash leaves a count nobody takes back).
        let bit = 1u64 << part;
        let counted = if single {
            mask.compare_exchange(0, bit, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        } else {
            mask.fetch_or(bit, Ordering::AcqRel);
            true
        };
        if !counted {
            p.side.store(0, Ordering::Relaxed);
            p.start.store(0, Ordering::Relaxed);
            p.pid.store(0, Ordering::Release);
            return Err(too_many(self.config.pattern.as_str()));
        }
        hook::hit(Point::JoinCounted);
        let mut joined = Joined { sub: None, part };
        if side == Side::Receiver && self.ring == RING_BROADCAST {
            let Some(i) = self.claim_subscriber(me) else {
                self.leave(side, joined);
                return Err(too_many("broadcast (63 subscribers at most)"));
            };
            p.sub.store(i as u32 + 1, Ordering::Release);
            joined.sub = Some(i);
        }
        let seen = if side == Side::Sender {
            &c.senders_seen
        } else {
            &c.receivers_seen
        };
        seen.store(1, Ordering::Release);
        // Wake the other side: a waiter may be deciding whether it is
        // disconnected.
        self.not_empty().notify();
        self.not_full().notify();
        Ok(joined)
    }

    /// Takes a subscriber record for process `me`, starting at the next
    /// message published: a free one, or a detached one whose views are
    /// all gone.
    fn claim_subscriber(&self, me: u32) -> Option<usize> {
        let take = |i: usize, from: u32| {
            let rec = self.subscriber(i);
            if rec.state.load(Ordering::Relaxed) != from {
                return false;
            }
            // The bit first: a record is never active without it (scans
            // that started before it was set may miss the record, as a
            // scan that had passed the record would have before).
            self.counters()
                .subscribed
                .fetch_or(1 << i, Ordering::AcqRel);
            if rec
                .state
                .compare_exchange(from, SUB_ACTIVE, Ordering::AcqRel, Ordering::Relaxed)
                .is_err()
            {
                return false;
            }
            rec.pid.store(me, Ordering::Release);
            // Start at the next message. (A message published between this
            // load and the store is seen: fine.)
            rec.pos.store(self.broadcast().tail(), Ordering::Release);
            true
        };
        (0..MAX_SUBSCRIBERS)
            .find(|&i| take(i, SUB_FREE))
            .or_else(|| {
                (0..MAX_SUBSCRIBERS).find(|&i| {
                    self.subscriber(i).state.load(Ordering::Acquire) == SUB_DETACHED
                        && !self.holds_any(i)
                        && take(i, SUB_DETACHED)
                })
            })
    }

    /// Whether every endpoint of `side` is gone (after at least one came).
    pub(crate) fn gone(&self, side: Side) -> bool {
        let c = self.counters();
        let (seen, mask) = match side {
            Side::Sender => (&c.senders_seen, &c.senders),
            Side::Receiver => (&c.receivers_seen, &c.receivers),
        };
        seen.load(Ordering::Acquire) != 0 && mask.load(Ordering::Acquire) == 0
    }

    /// Unregisters an endpoint and wakes the other side (it may now be
    /// disconnected). Returns whether the channel can go: no endpoint left
    /// and nothing queued (queued messages wait for a receiver).
    pub(crate) fn leave(&self, side: Side, joined: Joined) -> bool {
        if let Some(i) = joined.sub {
            let rec = self.subscriber(i);
            // Views it received may outlive the receiver: then the record
            // stays reserved (for their bits) until they are gone.
            let next = if self.holds_any(i) {
                SUB_DETACHED
            } else {
                SUB_FREE
            };
            if next == SUB_FREE {
                rec.pid.store(0, Ordering::Relaxed);
            }
            rec.state.store(next, Ordering::Release);
            // What only this subscriber had not read yet can go.
            self.reclaim(0, None);
        } else if side == Side::Sender && self.ring == RING_BROADCAST {
            // The publisher leaves: what every subscriber has read can go.
            self.reclaim(0, None);
        }
        let p = self.participant(joined.part);
        let c = self.counters();
        let mask = if side == Side::Sender {
            &c.senders
        } else {
            &c.receivers
        };
        // Uncounted first: a crash from here on leaves a record whose
        // reaper clears a bit that is already clear.
        mask.fetch_and(!(1u64 << joined.part), Ordering::AcqRel);
        p.side.store(0, Ordering::Relaxed);
        p.sub.store(0, Ordering::Relaxed);
        p.send_pos.store(SEND_IDLE, Ordering::Relaxed);
        // The start time before the pid, as everywhere a record is freed:
        // a reaper that reads the next joiner's pid must not pair it with
        // this process's start time (see `reap`).
        p.start.store(0, Ordering::Relaxed);
        // Release: the next joiner of the record sees it cleared.
        p.pid.store(0, Ordering::Release);
        self.not_empty().notify();
        self.not_full().notify();
        c.senders.load(Ordering::Acquire) == 0
            && c.receivers.load(Ordering::Acquire) == 0
            && self.len() == 0
    }

    /// Messages sent, received and dropped (see `Receiver::counts`) so far.
    pub(crate) fn stats(&self) -> (u64, u64, u64) {
        let c = self.counters();
        let dropped = c.dropped.load(Ordering::Relaxed);
        if self.ring == RING_BROADCAST {
            // Received: summed over subscriber records.
            let received = (0..MAX_SUBSCRIBERS)
                .map(|i| self.subscriber(i).received.load(Ordering::Relaxed))
                .sum();
            return (self.broadcast().tail(), received, dropped);
        }
        // Queue rings: the indices count for us (no counter on the hot
        // path); messages dropped by drop_oldest left through `head` too.
        let tail = self.tail_word().load(Ordering::Acquire);
        let head = self.head_word().load(Ordering::Acquire);
        (tail, head.saturating_sub(dropped), dropped)
    }

    pub(crate) fn producer(&self) -> Producer {
        if self.ring == RING_SPSC {
            self.spsc().producer()
        } else {
            Producer::default()
        }
    }

    pub(crate) fn consumer(&self) -> Consumer {
        self.spsc().consumer()
    }

    /// Whether a queue ring has room for a push now.
    fn can_push(&self) -> bool {
        match self.ring {
            RING_SPSC => self.spsc().len() < self.config.capacity as u64,
            _ => self.mpmc().can_push(),
        }
    }

    /// Whether a queue ring has a message to pop now (not counting a
    /// position claimed by a producer that has not published yet).
    fn can_pop(&self) -> bool {
        match self.ring {
            RING_SPSC => self.spsc().has_message(),
            _ => self.mpmc().can_pop(),
        }
    }

    /// Messages in the ring now (broadcast: 0, nothing waits for a
    /// receiver that is not subscribed yet).
    /// On the MPMC layout this includes messages returned by the reaper of
    /// a dead consumer (counted by a scan of the cells, only while the
    /// hint says there may be some).
    pub(crate) fn len(&self) -> u64 {
        match self.ring {
            RING_SPSC => self.spsc().len(),
            RING_MPMC => {
                let returned = if self.returned_hint() {
                    self.mpmc().returned()
                } else {
                    0
                };
                self.mpmc().len() + returned
            }
            _ => 0,
        }
    }

    /// Messages subscriber `sub` has not read yet (at most the capacity).
    pub(crate) fn unread(&self, sub: usize) -> u64 {
        let pos = self.subscriber(sub).pos.load(Ordering::Acquire) & POS_MASK;
        self.broadcast()
            .tail()
            .saturating_sub(pos)
            .min(self.config.capacity as u64)
    }

    /// Sends a loaned slot as endpoint `part`: publishes it, puts its
    /// handle on the ring (applying the policy when full) and wakes a
    /// receiver. On failure the slot comes back; on success, for a queue
    /// ring, what kept the slab alive for it (for the sender's lease pool).
    #[allow(clippy::result_large_err)] // the slot comes back by value: a retry allocates nothing
    pub(crate) fn send(
        &self,
        p: &mut Producer,
        part: usize,
        slot: SlotMut,
        deadline: Option<Instant>,
    ) -> std::result::Result<Option<Keep>, (Error, Option<SlotMut>)> {
        if self.gone(Side::Receiver) {
            return Err((Error::Disconnected("receiver"), Some(slot)));
        }
        if self.ring == RING_BROADCAST {
            return self.publish(part, slot, deadline).map(|()| None);
        }
        // The record first: from here on a crash of this process is undone
        // by whoever finds it dead.
        let rec = self.participant(part);
        let h = slot.handle();
        let msg = encode(&h);
        rec.send[0].store(msg[0], Ordering::Relaxed);
        rec.send[1].store(msg[1], Ordering::Relaxed);
        rec.send_pos.store(SEND_UNCLAIMED, Ordering::Release);
        // An SPSC ring's cell is the publication: its one consumer takes
        // the slot from our writer state (`Slab::take_sent`), so the send
        // does not write the slot's state line, which that consumer may
        // already have fetched (see `take_one`). A reaper publishes the
        // slot for us if we die with it on the ring (`publish_queued`).
        if self.ring != RING_SPSC {
            slot.publish_pending(&h);
        }
        hook::hit(Point::SendBeforeClaim);
        loop {
            let pushed = if self.ring == RING_SPSC {
                self.spsc().push(p, msg).is_ok()
            } else {
                let ring = self.mpmc();
                match ring.claim_push(part as u8) {
                    Some(pos) => {
                        rec.send_pos.store(SEND_CLAIMED + pos, Ordering::Relaxed);
                        hook::hit(Point::SendAfterClaim);
                        ring.publish(pos, msg);
                        true
                    }
                    None => false,
                }
            };
            if pushed {
                rec.send_pos.store(SEND_IDLE, Ordering::Release);
                let keep = slot.sent();
                self.not_empty().notify();
                return Ok(Some(keep));
            }
            match self.config.policy {
                Policy::Fail => return self.give_back(part, slot, Error::Full),
                Policy::DropOldest => {
                    if !self.drop_oldest(part) {
                        // Nothing to drop: the oldest position is still
                        // being written (or its producer died; waiting
                        // reaps it).
                        let soon = Instant::now() + REAP_INTERVAL;
                        let until = deadline.map_or(soon, |d| d.min(soon));
                        let ready = || self.can_push() || self.can_pop();
                        self.wait_reaping(part, self.not_full(), ready, Some(until));
                        if deadline.is_some_and(|d| Instant::now() >= d) {
                            let d = Duration::ZERO;
                            return self.give_back(part, slot, Error::Timeout(d));
                        }
                    }
                }
                Policy::Block => {
                    let ready = || self.can_push() || self.gone(Side::Receiver);
                    if !self.wait_reaping(part, self.not_full(), ready, deadline) {
                        let d = deadline.map_or(Duration::ZERO, |d| {
                            d.saturating_duration_since(Instant::now())
                        });
                        return self.give_back(part, slot, Error::Timeout(d));
                    }
                    if self.gone(Side::Receiver) {
                        return self.give_back(part, slot, Error::Disconnected("receiver"));
                    }
                }
            }
        }
    }

    /// `drop_oldest` on a full queue ring: endpoint `part` takes the oldest
    /// message off the ring (as a consumer would, so a crash in between is
    /// undone the same way) and frees it.
    /// Returns whether it dropped one.
    fn drop_oldest(&self, part: usize) -> bool {
        let ring = self.mpmc();
        // A message returned by a dead consumer's reaper is older than
        // anything on the ring.
        let Some((pos, old)) = self
            .adopt_returned(part)
            .or_else(|| ring.claim_pop(part as u8))
        else {
            return false;
        };
        let taken = self.seg.slab().take(decode(old));
        ring.release(pos);
        drop(taken);
        self.counters().dropped.fetch_add(1, Ordering::Relaxed);
        self.not_full().notify();
        true
    }

    /// A send that did not happen: the slot becomes the sender's again.
    #[allow(clippy::result_large_err)] // the slot comes back by value: a retry allocates nothing
    fn give_back(
        &self,
        part: usize,
        slot: SlotMut,
        e: Error,
    ) -> std::result::Result<Option<Keep>, (Error, Option<SlotMut>)> {
        // Not published on an SPSC ring (see `send`): still ours.
        let back = self.ring == RING_SPSC || slot.unpublish();
        self.participant(part)
            .send_pos
            .store(SEND_IDLE, Ordering::Release);
        if back {
            Err((e, Some(slot)))
        } else {
            // A forged handle took the reference: the slot is not ours to return.
            drop(slot.sent());
            Err((
                Error::Corrupt("a forged handle took an unsent slot".into()),
                None,
            ))
        }
    }

    /// Broadcast send: waits for (`block`) or refuses (`fail`) a subscriber
    /// that has not read the message about to be overwritten, or overwrites
    /// it (`drop_oldest`: that subscriber is told it lagged). The ring holds
    /// one reference per message (its bit in the slot's holder word),
    /// released once every subscriber has read it or its cell is reused.
    #[allow(clippy::result_large_err)] // the slot comes back by value: a retry allocates nothing
    fn publish(
        &self,
        part: usize,
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
                    if !self.wait_reaping(part, self.not_full(), ready, deadline) {
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
        self.reclaim((pos + 1).saturating_sub(cap), Some(part));
        let rec = self.participant(part);
        let msg = encode(&slot.handle());
        rec.send[0].store(msg[0], Ordering::Relaxed);
        rec.send[1].store(msg[1], Ordering::Relaxed);
        rec.send_pos.store(SEND_UNCLAIMED, Ordering::Release);
        hook::hit(Point::SendBeforeClaim);
        let (class, index) = slot.location();
        let n = self.seg.slab().slot_number(class, index);
        slot.into_group();
        // The ring's bit: released by `reclaim`.
        self.holder(n).fetch_or(RING_HOLD, Ordering::AcqRel);
        hook::hit(Point::SendAfterClaim);
        ring.publish(pos, msg);
        rec.send_pos.store(SEND_IDLE, Ordering::Release);
        self.not_empty().notify();
        Ok(())
    }

    /// Broadcast: gives up the ring's references to messages that every
    /// subscriber has read (all of them when nobody is subscribed) and, for
    /// the publisher (`publisher`: its participant record), to every
    /// message before position `at_least`, telling the subscribers that had
    /// not read them that they lagged. The ring holds one reference per
    /// message from its publication until then; the position released so
    /// far lives in the (otherwise unused) `head` word. Any endpoint may
    /// call it.
    pub(crate) fn reclaim(&self, at_least: u64, publisher: Option<usize>) {
        let ring = self.broadcast();
        let tail = ring.tail();
        let slowest = self.slowest();
        let upto = slowest
            .map_or(tail, |s| s.min(tail))
            .max(if publisher.is_some() { at_least } else { 0 })
            .min(tail);
        let released = self.head_word();
        let mut r = released.load(Ordering::Acquire);
        while r < upto {
            // The message, read before the position is claimed: the
            // publisher reuses the cell only once `released` has passed it.
            let Some(msg) = ring.published(r) else {
                let now = released.load(Ordering::Acquire);
                if now <= r {
                    break; // not published (cannot happen below `tail`)
                }
                r = now;
                continue;
            };
            if slowest.is_none_or(|s| r >= s) {
                if let Some(part) = publisher {
                    self.force_out(r, part);
                }
            }
            match released.compare_exchange(r, r + 1, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => {
                    self.drop_ring_hold(&decode(msg));
                    r += 1;
                }
                Err(now) => r = now,
            }
        }
    }

    /// Before the publisher releases message `r` unread (`drop_oldest`):
    /// every subscriber still at or before `r` is flagged `GONE` (it will be
    /// told it lagged), and one that is just reading `r` is waited for
    /// (a few instructions, unless its process died: then until it is
    /// reaped, which this wait does itself).
    fn force_out(&self, r: u64, part: usize) {
        for i in self.subscribed() {
            let rec = self.subscriber(i);
            let mut waited = Instant::now();
            let backoff = crossbeam_utils::Backoff::new();
            loop {
                if rec.state.load(Ordering::Acquire) != SUB_ACTIVE {
                    break;
                }
                if broadcast::force_out(&rec.pos, r) == ForceOut::Done {
                    break;
                }
                if backoff.is_completed() {
                    std::thread::sleep(Duration::from_micros(50));
                    if waited.elapsed() >= REAP_INTERVAL {
                        self.beat(part);
                        self.reap();
                        waited = Instant::now();
                    }
                } else {
                    backoff.snooze();
                }
            }
        }
    }

    /// Clears the ring's bit in the holder word of `h`'s slot; releases the
    /// slot's reference if no subscriber holds a view of it.
    fn drop_ring_hold(&self, h: &Handle) {
        let slab = self.seg.slab();
        let Ok((ci, index)) = slab.resolve(h) else {
            return; // not a slot: nothing was held (a damaged cell)
        };
        if broadcast::leave(self.holder(slab.slot_number(ci, index)), RING_HOLD) {
            slab.release(ci, index);
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
            self.can_push()
        }
    }

    /// Whether a receive would find something now (or fail at once because
    /// every sender has gone). `sub`: a broadcast subscriber.
    pub(crate) fn has_message(&self, sub: Option<usize>) -> bool {
        self.gone(Side::Sender)
            || match sub {
                Some(i) => self.unread(i) > 0,
                None => self.can_pop() || self.returned_hint(),
            }
    }

    /// Whether this is a broadcast channel.
    pub(crate) fn is_broadcast(&self) -> bool {
        self.ring == RING_BROADCAST
    }

    /// Broadcast receive for subscriber `sub` (endpoint `part`): the next
    /// message, or [`Error::Lagged`] (once) if the publisher overwrote
    /// messages it had not read.
    pub(crate) fn recv_broadcast(
        &self,
        leases: &LeasePool,
        sub: usize,
        part: usize,
        deadline: Option<Instant>,
    ) -> Result<Option<Slot>> {
        let slab = leases.slab();
        let ring = self.broadcast();
        let rec = self.subscriber(sub);
        let cap = self.config.capacity as u64;
        loop {
            let v = rec.pos.load(Ordering::Acquire);
            let q = v & POS_MASK;
            if v & GONE != 0 {
                // The publisher released messages from `q` on unread.
                let oldest = ring.tail().saturating_sub(cap).max(q + 1);
                if rec
                    .pos
                    .compare_exchange(v, oldest, Ordering::AcqRel, Ordering::Relaxed)
                    .is_ok()
                {
                    return Err(self.lagged(oldest - q));
                }
                continue;
            }
            match ring.read(q) {
                Read::Message(msg) => {
                    let h = decode(msg);
                    let Ok((ci, index)) = slab.resolve(&h) else {
                        // Not a slot: skip it.
                        let _ =
                            rec.pos
                                .compare_exchange(v, q + 1, Ordering::AcqRel, Ordering::Relaxed);
                        return Err(Error::InvalidHandle(format!(
                            "broadcast message {q} names no slot ({h})"
                        )));
                    };
                    // Mark the position as being read: from here until the
                    // position moves on, the publisher does not release `q`.
                    // Fails if the publisher flagged it GONE meanwhile.
                    if !broadcast::begin_read(&rec.pos, v) {
                        continue;
                    }
                    hook::hit(Point::SubscriberReading);
                    let n = slab.slot_number(ci, index);
                    let bit = 1u64 << sub;
                    // Our view of the slot: a bit of its holder word, set while
                    // the ring still holds the message (its bit is set).
                    let old = broadcast::finish_read(&rec.pos, self.holder(n), q, bit);
                    self.not_full().notify();
                    if old & RING_HOLD == 0 {
                        // Cannot happen while every endpoint follows the
                        // protocol; do not keep a bit on a slot nobody holds.
                        broadcast::leave(self.holder(n), bit);
                        return Err(Error::Corrupt(format!(
                            "broadcast message {q}: its slot was released before it was read"
                        )));
                    }
                    let view = Slot::in_group(
                        leases.lease(),
                        ci,
                        index,
                        h.generation,
                        GroupBit {
                            word: self.holder_offset(n),
                            bit,
                        },
                    );
                    view.check_len(h.len)?;
                    let n = rec.received.load(Ordering::Relaxed);
                    rec.received.store(n + 1, Ordering::Relaxed);
                    return Ok(Some(view));
                }
                Read::Lagged { oldest } => {
                    if rec
                        .pos
                        .compare_exchange(v, oldest, Ordering::AcqRel, Ordering::Relaxed)
                        .is_ok()
                    {
                        self.not_full().notify();
                        return Err(self.lagged(oldest - q));
                    }
                }
                Read::Empty => {
                    // Caught up: give back what everyone has read.
                    self.reclaim(0, None);
                    if self.gone(Side::Sender) {
                        return Err(Error::Disconnected("sender"));
                    }
                    if deadline.is_some_and(|d| Instant::now() >= d) {
                        return Ok(None);
                    }
                    let ready = || ring.tail() > q || self.gone(Side::Sender);
                    if !self.wait_reaping(part, self.not_empty(), ready, deadline) {
                        return Ok(None);
                    }
                }
            }
        }
    }

    fn lagged(&self, missed: u64) -> Error {
        self.counters().dropped.fetch_add(missed, Ordering::Relaxed);
        self.not_full().notify();
        Error::Lagged { missed }
    }

    /// One message off a queue ring for endpoint `part`, if there is one:
    /// the slot's reference is taken before the ring lets go of the
    /// message, so that a crash in between is undone by a reaper.
    fn take_one(&self, leases: &LeasePool, c: &mut Consumer, part: usize) -> Option<Result<Slot>> {
        let slab = leases.slab();
        if self.ring == RING_SPSC {
            let ring = self.spsc();
            let Some(msg) = ring.peek(c) else {
                // Nothing yet. The producer has claimed the slot of its
                // next message and writes that slot's state line no more
                // before sending it (see `send`), so fetching the line now
                // takes the wait for it off the receive.
                if let Some((class, index)) = self.next_slot(c) {
                    slab.prefetch_state(class, index);
                }
                return None;
            };
            let got = slab.take_sent(decode(msg), Some(leases));
            hook::hit(Point::RecvAfterClaim);
            ring.advance(c);
            if let Ok(slot) = &got {
                c.last = Some(slot.location());
            }
            Some(got)
        } else {
            let ring = self.mpmc();
            let (pos, msg) = ring.claim_pop(part as u8)?;
            hook::hit(Point::RecvClaimed);
            let got = slab.take_with(decode(msg), Some(leases));
            hook::hit(Point::RecvAfterClaim);
            ring.release(pos);
            Some(got)
        }
    }

    /// Receives one message as endpoint `part`: `Ok(None)` if none came
    /// before `deadline` (`Some(now)` for a non-blocking try).
    pub(crate) fn recv(
        &self,
        leases: &LeasePool,
        c: &mut Consumer,
        part: usize,
        deadline: Option<Instant>,
    ) -> Result<Option<Slot>> {
        loop {
            if let Some(got) = self.take_one(leases, c, part) {
                self.not_full().notify();
                return got.map(Some);
            }
            // A message a dead consumer claimed and never took.
            if let Some(got) = self.take_returned(part) {
                return got.map(Some);
            }
            if self.gone(Side::Sender) {
                // Senders are gone; one may have pushed just before leaving,
                // and a consumer that died may hold one back: look once
                // more, after reaping.
                self.reap();
                return match self
                    .take_one(leases, c, part)
                    .or_else(|| self.take_returned(part))
                {
                    Some(got) => got.map(Some),
                    None => Err(Error::Disconnected("sender")),
                };
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok(None);
            }
            let ready = || self.can_pop() || self.returned_hint() || self.gone(Side::Sender);
            if !self.wait_reaping(part, self.not_empty(), ready, deadline) {
                return Ok(None);
            }
        }
    }
}

/// A next-slot hint word (`NEXT_HINT`) naming slot `index` of `class` (0:
/// none).
fn encode_hint(class: u8, index: u32) -> u64 {
    1 << 63 | (class as u64) << 32 | index as u64
}

fn decode_hint(w: u64) -> Option<(u8, u32)> {
    (w >> 63 == 1).then_some(((w >> 32) as u8, w as u32))
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
