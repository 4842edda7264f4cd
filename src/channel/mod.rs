//! Channels: move tensors between threads (`memory://`) and processes
//! (`ipc://`) without copying them.
//!
//! A [`Sender`] loans a slot of the channel's slab ([`Sender::loan`]), the
//! producer writes the tensor in place, and [`Loan::send`] puts the slot's
//! 16-byte handle on a lock-free ring. A [`Receiver`] takes the handle off
//! the ring and returns a [`Slot`]: a read-only view of the same bytes,
//! which frees the slot when dropped.
//!
//! ```
//! # fn main() -> psyne::Result<()> {
//! let (tx, rx) = psyne::channel("memory://doc-channel?capacity=64")?;
//! let mut loan = tx.loan::<f32>(&psyne::Shape::vector(4))?;
//! loan.tensor_mut::<f32>()?.copy_from_slice(&[1.0, 2.0, 3.0, 4.0])?;
//! loan.send()?;
//! let got = rx.recv()?;
//! assert_eq!(&*got.tensor::<f32>()?, &[1.0, 2.0, 3.0, 4.0]);
//! # Ok(())
//! # }
//! ```
//!
//! The URI names the transport, the channel and its parameters; see
//! [`uri`]. The first endpoint to open a name creates the channel with the
//! URI's parameters (defaults: capacity 1024, a 64 MiB slab, pattern
//! `mpmc`, policy `block`); later endpoints may repeat parameters but not
//! contradict them ([`Error::ParamConflict`]).
//!
//! Disconnection: once every sender has gone, receivers drain what is
//! queued and then get [`Error::Disconnected`]; once every receiver has
//! gone, sends fail with it. Endpoints that connect before the other side
//! exists wait for it (messages queue up): a consumer may start first.

mod ipc;
mod memory;
mod shared;
pub mod uri;
mod waker;

use std::cell::{Cell, OnceCell, RefCell};
use std::fmt;
use std::future::Future;
use std::ops::{Deref, DerefMut};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use waker::{AsyncWaiter, Which};

pub use shared::{Config, EndpointInfo};
use shared::{Joined, Shared, Side};
pub use uri::{ChannelUri, Pattern, Policy, Transport};

use crate::error::{Error, Result};
use crate::ring::spsc::{Consumer, Producer};
use crate::shm::lease::LeasePool;
use crate::shm::{DataAccess, Slab, Slot, SlotCache, SlotMut};
use crate::tensor::{Element, Shape};

/// Opens both ends of the channel `uri` in this process.
///
/// # Errors
/// As [`Sender::connect`] and [`Receiver::connect`].
pub fn channel(uri: &str) -> Result<(Sender, Receiver)> {
    let tx = Sender::connect(uri)?;
    let rx = Receiver::connect(uri)?;
    Ok((tx, rx))
}

/// What [`inspect`] reports of a channel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChannelInfo {
    /// The parameters it was created with.
    pub config: Config,
    /// Live senders and receivers (as counted; dead ones are taken off
    /// when a live endpoint next looks).
    pub senders: u32,
    /// See `senders`.
    pub receivers: u32,
    /// Messages in the ring now (0 for broadcast).
    pub queued: u64,
    /// Messages sent, received and dropped so far.
    pub sent: u64,
    /// See `sent`.
    pub received: u64,
    /// See `sent`.
    pub dropped: u64,
    /// Registered endpoints: process id, side, whether the process lives
    /// (the short form of `participants`).
    pub endpoints: Vec<(u32, &'static str, bool)>,
    /// Registered endpoints in full: process, side, liveness, start time,
    /// last heartbeat.
    pub participants: Vec<EndpointInfo>,
}

/// The channel state of a segment, if it holds a channel (for tools such as
/// `psyne inspect`; it does not join the channel).
///
/// # Errors
/// [`Error::NotAChannel`] / [`Error::Uninitialized`] for a segment whose
/// channel area is damaged or not formatted yet.
pub fn inspect(seg: &crate::Segment) -> Result<Option<ChannelInfo>> {
    if seg.area(crate::shm::segment::area::CHANNEL).is_none() {
        return Ok(None);
    }
    let s = Shared::attach(seg.clone())?;
    let (sent, received, dropped) = s.stats();
    let participants = s.participants();
    Ok(Some(ChannelInfo {
        config: s.config,
        senders: s.senders(),
        receivers: s.receivers(),
        queued: s.len(),
        sent,
        received,
        dropped,
        endpoints: participants
            .iter()
            .map(|e| (e.pid, e.side, e.alive))
            .collect(),
        participants,
    }))
}

/// Where an endpoint's channel lives, to leave it properly.
enum Home {
    Memory(String),
    Ipc(String),
}

/// What both endpoints hold.
struct Endpoint {
    shared: Arc<Shared>,
    home: Home,
    side: Side,
    /// Its records in the channel (participant; broadcast subscriber).
    joined: Joined,
    /// A broadcast receiver's subscriber record.
    sub: Option<usize>,
    /// This endpoint's handle to the slab (see `Slab::private_handle`),
    /// leased to the slots it loans or receives (see `shm::lease`).
    leases: LeasePool,
}

impl Endpoint {
    /// This endpoint's handle to the slab.
    fn slab(&self) -> &Slab {
        self.leases.slab()
    }

    fn connect(uri: &str, side: Side) -> Result<Endpoint> {
        let u = ChannelUri::parse(uri)?;
        let name = u.name().unwrap_or_default().to_string();
        match u.transport {
            Transport::Memory => {
                let (shared, joined) = memory::open(&name, &u.params, side)?;
                Ok(Endpoint {
                    leases: LeasePool::new(shared.seg.slab().private_handle()),
                    shared,
                    home: Home::Memory(name),
                    side,
                    joined,
                    sub: joined.sub,
                })
            }
            Transport::Ipc => {
                // Receivers never write a slot: map the data read-only,
                // unless this call creates the channel (then re-open so).
                let access = match side {
                    Side::Sender => DataAccess::ReadWrite,
                    Side::Receiver => DataAccess::ReadOnly,
                };
                let (mut shared, created) = ipc::open(&name, &u.params, access)?;
                if created && side == Side::Receiver {
                    shared = ipc::open(&name, &u.params, access)?.0;
                }
                let joined = shared.join(side)?;
                Ok(Endpoint {
                    leases: LeasePool::new(shared.seg.slab().private_handle()),
                    shared,
                    home: Home::Ipc(name),
                    side,
                    joined,
                    sub: joined.sub,
                })
            }
            Transport::Unix | Transport::Tcp => Err(Error::InvalidUri {
                uri: uri.to_string(),
                reason: "the unix:// and tcp:// transports are not implemented yet".into(),
            }),
        }
    }

    fn name(&self) -> &str {
        match &self.home {
            Home::Memory(n) | Home::Ipc(n) => n,
        }
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        match &self.home {
            Home::Memory(name) => memory::leave(name, &self.shared, self.side, self.joined),
            Home::Ipc(name) => {
                if self.shared.leave(self.side, self.joined) {
                    ipc::remove(name);
                }
            }
        }
    }
}

/// The sending end of a channel. `Send` (move it to another thread), not
/// `Sync`: for several producers, connect several senders.
// Aligned to two cache lines: its ring and cache state change on every
// message and must not share a line with another thread's data (two
// endpoints moved into adjacent heap blocks, say).
#[repr(align(128))]
pub struct Sender {
    ep: Endpoint,
    producer: Cell<Producer>,
    /// Free slots set aside for the next loans (see `SlotCache`).
    cache: RefCell<SlotCache>,
    /// A slot claimed after the last send for the next loan, so that a
    /// loan right after a receive (a request/reply loop) finds its slot's
    /// header in this core's cache instead of fetching it then.
    ahead: RefCell<Option<SlotMut>>,
    /// The helper of `send_async` (waits for room on the ring).
    waiter: OnceCell<AsyncWaiter>,
    /// The helper of `loan_async` (waits for a free slab slot).
    slot_waiter: OnceCell<AsyncWaiter>,
}

impl Sender {
    /// Connects a sender to the channel `uri`, creating the channel if it
    /// does not exist.
    ///
    /// # Errors
    /// [`Error::InvalidUri`] for a malformed URI; [`Error::ParamConflict`]
    /// if the channel exists with other parameters;
    /// [`Error::TooManyEndpoints`] for a second sender on an `spsc` or
    /// `spmc` channel; the segment errors of [`crate::Segment::open`].
    pub fn connect(uri: &str) -> Result<Sender> {
        let ep = Endpoint::connect(uri, Side::Sender)?;
        let producer = Cell::new(ep.shared.producer());
        Ok(Sender {
            ep,
            producer,
            cache: RefCell::default(),
            ahead: RefCell::default(),
            waiter: OnceCell::new(),
            slot_waiter: OnceCell::new(),
        })
    }

    /// The channel's parameters.
    pub fn config(&self) -> Config {
        self.ep.shared.config
    }

    /// Slots this sender holds claimed for its next loan: 0 or 1.
    ///
    /// After a send, a sender claims the slot its next loan of the same
    /// size class will use, while the message is on its way (a
    /// request/reply caller is about to wait anyway), so that the next
    /// loan costs no cache-line transfer. The sole sender of an `spsc`,
    /// `spmc` or `broadcast` channel does so in every size class of at
    /// least two slots; a sender of an `mpsc` or `mpmc` channel only in
    /// classes of at least 16 slots, so that a spare slot never starves
    /// the other senders. A spare slot counts as used in the slab's
    /// statistics ([`crate::Slab::used_slots`], `psyne inspect`); it goes
    /// back when the sender is dropped, when its next loan is of another
    /// size class, or, if the process dies, to the reaper like a loan.
    pub fn spare_slots(&self) -> u64 {
        u64::from(self.ahead.borrow().is_some())
    }

    /// A slot of `nbytes`; `wait`: under policy `block`, wait for one if the
    /// slab is full (up to the channel's `timeout_ms`).
    fn alloc(&self, nbytes: u64, wait: bool) -> Result<SlotMut> {
        let shared = &self.ep.shared;
        if let Some(mut slot) = self.ahead.borrow_mut().take() {
            if self.ep.slab().first_class(nbytes) == Some(slot.location().0 as usize) {
                slot.reset(nbytes);
                return Ok(slot);
            }
            // Of another size class: it goes back (dropped here).
        }
        let part = self.ep.joined.part;
        let mut reaped: Option<Instant> = None;
        let mut tries = 0u32;
        // A broadcast ring holds a reference to each message until every
        // subscriber has read it: release those before (each) attempt.
        // While it waits for a slot, the sender looks for dead peers (one
        // may hold the slots) and beats its heart, as any waiting endpoint
        // (the clock is read only once it has had to wait).
        let before_try = || {
            if shared.is_broadcast() {
                shared.reclaim(0, None);
            }
            tries += 1;
            if tries > 1 {
                let now = Instant::now();
                let since = *reaped.get_or_insert(now);
                if now.duration_since(since) >= shared::REAP_INTERVAL {
                    shared.beat(part);
                    shared.reap();
                    reaped = Some(now);
                }
            }
        };
        let slab = self.ep.slab();
        let leases = Some(&self.ep.leases);
        let mut cache = self.cache.borrow_mut();
        if wait && shared.config.policy == Policy::Block {
            slab.alloc_wait(
                nbytes,
                shared.config.timeout,
                Some(&mut cache),
                leases,
                before_try,
            )
        } else {
            if shared.is_broadcast() {
                shared.reclaim(0, None);
            }
            slab.alloc_cached(nbytes, &mut cache, leases)
        }
    }

    /// Loans a slot for a tensor of `T` with `shape`: write it in place
    /// (`loan.tensor_mut::<T>()`), then [`Loan::send`] it.
    ///
    /// # Errors
    /// [`Error::TooLarge`] if no slot can hold it; [`Error::SlabFull`]
    /// (policy `fail` / `drop_oldest`) or [`Error::Timeout`] (policy
    /// `block` with a timeout) if every suitable slot is in use.
    pub fn loan<T: Element>(&self, shape: &Shape) -> Result<Loan<'_>> {
        let mut slot = self.alloc(shape.byte_size(T::DTYPE), true)?;
        slot.init_tensor::<T>(shape)?;
        Ok(Loan {
            slot: Some(slot),
            tx: self,
        })
    }

    /// Loans a slot as [`Sender::loan`] does, without blocking the thread
    /// when the slab is full: a future that resolves to the loan once a
    /// slot is free (policy `block`; it gives up with [`Error::Timeout`]
    /// after the channel's `timeout_ms`, if set). Works under any executor.
    ///
    /// The first time it has to wait, the sender starts a helper thread
    /// that checks the slab's free bitmaps with pauses growing to 1 ms
    /// (freeing a slot signals no event) and wakes the task: a freed slot
    /// is found within about a millisecond, and no core spins. Every
    /// 100 ms the task also tries again regardless, so that the slab's
    /// repair finds slots no bitmap shows (those of a dead process, say).
    ///
    /// ```
    /// # fn main() -> psyne::Result<()> {
    /// let (tx, rx) = psyne::channel("memory://doc-async?capacity=8")?;
    /// let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    /// rt.block_on(async {
    ///     let mut loan = tx.loan_async::<f32>(&psyne::Shape::vector(3)).await?;
    ///     loan.tensor_mut::<f32>()?.copy_from_slice(&[1.0, 2.0, 3.0])?;
    ///     loan.send_async().await?;
    ///     let got = rx.recv_async().await?;
    ///     assert_eq!(&*got.tensor::<f32>()?, &[1.0, 2.0, 3.0]);
    ///     Ok(())
    /// })
    /// # }
    /// ```
    ///
    /// # Errors
    /// As [`Sender::loan`].
    pub fn loan_async<T: Element>(&self, shape: &Shape) -> LoanAsync<'_, T> {
        LoanAsync {
            tx: self,
            shape: *shape,
            deadline: None,
            ticket: None,
            done: false,
            _t: std::marker::PhantomData,
        }
    }

    fn slot_waiter(&self) -> &AsyncWaiter {
        self.slot_waiter.get_or_init(|| {
            AsyncWaiter::start(
                self.ep.shared.clone(),
                Which::Slot,
                self.ep.joined.part,
                |s, nbytes| {
                    // A broadcast ring's references to messages every
                    // subscriber has read are slots to give back.
                    if s.is_broadcast() {
                        s.reclaim(0, None);
                    }
                    s.seg.slab().may_have_room(nbytes)
                },
            )
        })
    }

    /// Loans a slot of `nbytes` untyped bytes (for quantized tensors use
    /// [`SlotMut::write_quantized`] on it).
    ///
    /// # Errors
    /// As [`Sender::loan`].
    pub fn loan_bytes(&self, nbytes: u64) -> Result<Loan<'_>> {
        Ok(Loan {
            slot: Some(self.alloc(nbytes, true)?),
            tx: self,
        })
    }

    /// Copies `data` (a tensor of `shape`) into a slot and sends it: for
    /// callers that already hold the data in a slice.
    ///
    /// # Errors
    /// [`Error::LengthMismatch`] if `data` does not have `shape`'s element
    /// count; otherwise as [`Sender::loan`] and [`Loan::send`].
    pub fn send_copy<T: Element>(&self, shape: &Shape, data: &[T]) -> Result<()> {
        let mut loan = self.loan::<T>(shape)?;
        loan.tensor_mut::<T>()?.copy_from_slice(data)?;
        loan.send()
    }

    fn waiter(&self) -> &AsyncWaiter {
        self.waiter.get_or_init(|| {
            AsyncWaiter::start(
                self.ep.shared.clone(),
                Which::NotFull,
                self.ep.joined.part,
                |s, _| s.has_room(),
            )
        })
    }

    #[allow(clippy::result_large_err)] // the slot comes back by value: a retry allocates nothing
    fn send_slot(
        &self,
        slot: SlotMut,
        timeout: Option<Duration>,
    ) -> std::result::Result<(), (Error, Option<SlotMut>)> {
        // A loan derefs to its `SlotMut`, so another slab's slot can be
        // swapped in: its handle would name nothing (or the wrong slot) in
        // this channel's slab.
        if !slot.is_in(self.ep.slab()) {
            return Err((
                Error::InvalidHandle(
                    "the loan holds a slot of another slab (swapped in through \
                     `DerefMut`); only the sender's own slots can be sent"
                        .into(),
                ),
                Some(slot),
            ));
        }
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        let len = slot.len().max(1);
        let sent = slot.location();
        let mut p = self.producer.get();
        let shared = &self.ep.shared;
        let r = shared.send(&mut p, self.ep.joined.part, slot, deadline);
        self.producer.set(p);
        let r = r.map(|keep| {
            if let Some(keep) = keep {
                self.ep.leases.give_back(keep);
            }
        });
        if r.is_ok() {
            // The next loan's slot, claimed now: the message is on its way
            // and a request/reply caller is about to wait anyway.
            let mut ahead = self.ahead.borrow_mut();
            if ahead.is_none() {
                let sole = matches!(
                    shared.config.pattern,
                    Pattern::Spsc | Pattern::Spmc | Pattern::Broadcast
                );
                *ahead = self.ep.slab().alloc_ahead(
                    len,
                    &mut self.cache.borrow_mut(),
                    sole,
                    Some(&self.ep.leases),
                );
                if let Some(next) = ahead.as_ref() {
                    shared.hint_next(sent, next.location());
                }
            }
        }
        // Report the time asked for, not what was left of it.
        r.map_err(|(e, slot)| match e {
            Error::Timeout(_) => (Error::Timeout(timeout.unwrap_or_default()), slot),
            e => (e, slot),
        })
    }
}

impl Drop for Sender {
    fn drop(&mut self) {
        // Before the endpoint leaves: its async helpers stop (they beat
        // the endpoint's participant record), and the slots set aside go
        // back.
        drop(self.waiter.take());
        drop(self.slot_waiter.take());
        drop(self.ahead.get_mut().take());
        self.ep.shared.seg.slab().put_back(self.cache.get_mut());
    }
}

impl fmt::Debug for Sender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sender")
            .field("channel", &self.ep.name())
            .field("config", &self.config())
            .finish()
    }
}

/// A slot loaned from a sender's slab, writable in place (it dereferences
/// to [`SlotMut`]). [`Loan::send`] hands it to a receiver; dropping it
/// unsent returns the slot.
pub struct Loan<'a> {
    slot: Option<SlotMut>,
    tx: &'a Sender,
}

impl<'a> Loan<'a> {
    /// Sends the tensor, applying the channel's policy if the ring is full
    /// (`block` waits up to the channel's `timeout_ms`, for ever without
    /// one). If the send fails the loan is dropped and its slot freed; use
    /// [`Loan::send_or_return`] to get it back instead.
    ///
    /// # Errors
    /// [`Error::Full`] (policy `fail`), [`Error::Timeout`], or
    /// [`Error::Disconnected`] (every receiver has gone).
    pub fn send(self) -> Result<()> {
        self.send_or_return().map_err(SendError::into_error)
    }

    /// Like [`Loan::send`], waiting at most `timeout` if the ring is full
    /// (policy `block`).
    ///
    /// # Errors
    /// As [`Loan::send`].
    pub fn send_timeout(self, timeout: Duration) -> Result<()> {
        self.send_inner(Some(timeout))
            .map_err(SendError::into_error)
    }

    /// Like [`Loan::send`], but a failed send gives the loan back inside the
    /// [`SendError`], tensor intact, to retry or drop.
    ///
    /// # Errors
    /// As [`Loan::send`], with the loan.
    pub fn send_or_return(self) -> std::result::Result<(), SendError<'a>> {
        let t = self.tx.ep.shared.config.timeout;
        self.send_inner(t)
    }

    /// Sends without blocking the thread: a future that resolves when the
    /// tensor is on the ring, waiting for room if the policy is `block`
    /// (other policies behave as [`Loan::send`]), up to the channel's
    /// `timeout_ms` if set. Works under any executor; dropping the future
    /// drops the loan (its slot is freed).
    ///
    /// # Errors
    /// As [`Loan::send`]: [`Error::Timeout`] (the loan dropped) once
    /// `timeout_ms` has passed without room.
    pub fn send_async(self) -> SendAsync<'a> {
        SendAsync {
            tx: self.tx,
            loan: Some(self),
            deadline: None,
            ticket: None,
        }
    }

    fn send_inner(mut self, timeout: Option<Duration>) -> std::result::Result<(), SendError<'a>> {
        let tx = self.tx;
        let slot = self.slot.take().expect("a loan holds its slot until sent");
        tx.send_slot(slot, timeout)
            .map_err(|(error, slot)| SendError {
                error: Box::new(error),
                loan: slot.map(|s| Loan { slot: Some(s), tx }),
            })
    }
}

/// The future of [`Loan::send_async`].
#[must_use = "futures do nothing unless awaited"]
pub struct SendAsync<'a> {
    tx: &'a Sender,
    loan: Option<Loan<'a>>,
    /// When it gives up (set on the first poll from `timeout_ms`; the
    /// outer `None`: not polled yet).
    deadline: Option<Option<Instant>>,
    /// The helper's ticket while pending.
    ticket: Option<u64>,
}

/// One send attempt without waiting: `Ok(Some(loan))` if the ring was full.
fn try_send_now(loan: Loan<'_>) -> Result<Option<Loan<'_>>> {
    match loan.send_inner(Some(Duration::ZERO)) {
        Ok(()) => Ok(None),
        Err(e) if matches!(*e.error, Error::Timeout(_)) && e.loan.is_some() => Ok(e.loan),
        Err(e) => Err(e.into_error()),
    }
}

/// The deadline of an async wait that starts now, from `timeout_ms`.
fn deadline_of(config: &Config) -> Option<Instant> {
    config.timeout.and_then(|t| Instant::now().checked_add(t))
}

impl Future for SendAsync<'_> {
    type Output = Result<()>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        let loan = self.loan.take().expect("polled after completion");
        let tx = loan.tx;
        let config = tx.ep.shared.config;
        if config.policy != Policy::Block {
            return Poll::Ready(loan.send());
        }
        let deadline = *self.deadline.get_or_insert_with(|| deadline_of(&config));
        match try_send_now(loan) {
            Ok(None) => return Poll::Ready(Ok(())),
            Err(e) => return Poll::Ready(Err(e)),
            Ok(Some(back)) => self.loan = Some(back),
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            self.loan = None; // dropped: its slot is freed
            let t = config.timeout.unwrap_or_default();
            return Poll::Ready(Err(Error::Timeout(t)));
        }
        self.ticket = Some(tx.waiter().arm(self.ticket, cx.waker(), deadline, 0));
        // Re-check after arming (room may have come just before).
        let loan = self.loan.take().expect("just stored");
        match try_send_now(loan) {
            Ok(None) => Poll::Ready(Ok(())),
            Err(e) => Poll::Ready(Err(e)),
            Ok(Some(back)) => {
                self.loan = Some(back);
                Poll::Pending
            }
        }
    }
}

impl Drop for SendAsync<'_> {
    fn drop(&mut self) {
        if let (Some(t), Some(w)) = (self.ticket, self.tx.waiter.get()) {
            w.disarm(t);
        }
    }
}

/// The future of [`Sender::loan_async`].
#[must_use = "futures do nothing unless awaited"]
pub struct LoanAsync<'a, T> {
    tx: &'a Sender,
    shape: Shape,
    /// As in [`SendAsync`].
    deadline: Option<Option<Instant>>,
    ticket: Option<u64>,
    done: bool,
    _t: std::marker::PhantomData<fn() -> T>,
}

impl<'a, T: Element> LoanAsync<'a, T> {
    /// One attempt: the loan, `Ok(None)` if the slab is full and the
    /// policy says to wait, or the error.
    fn try_now(&self) -> Result<Option<Loan<'a>>> {
        let tx = self.tx;
        match tx.alloc(self.shape.byte_size(T::DTYPE), false) {
            Ok(mut slot) => {
                slot.init_tensor::<T>(&self.shape)?;
                Ok(Some(Loan {
                    slot: Some(slot),
                    tx,
                }))
            }
            Err(Error::SlabFull { .. }) if tx.ep.shared.config.policy == Policy::Block => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// One poll of a future not yet done.
    fn poll_once(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<Loan<'a>>> {
        let config = self.tx.ep.shared.config;
        let deadline = *self.deadline.get_or_insert_with(|| deadline_of(&config));
        if let Some(r) = self.try_now().transpose() {
            return Poll::Ready(r);
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            let t = config.timeout.unwrap_or_default();
            return Poll::Ready(Err(Error::Timeout(t)));
        }
        let nbytes = self.shape.byte_size(T::DTYPE);
        self.ticket = Some(
            self.tx
                .slot_waiter()
                .arm(self.ticket, cx.waker(), deadline, nbytes),
        );
        // Re-check after arming (a slot may have been freed just before).
        match self.try_now().transpose() {
            Some(r) => Poll::Ready(r),
            None => Poll::Pending,
        }
    }
}

impl<'a, T: Element> Future for LoanAsync<'a, T> {
    type Output = Result<Loan<'a>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<Loan<'a>>> {
        assert!(!self.done, "polled after completion");
        let r = self.as_mut().poll_once(cx);
        self.done = r.is_ready();
        r
    }
}

impl<T> Drop for LoanAsync<'_, T> {
    fn drop(&mut self) {
        if let (Some(t), Some(w)) = (self.ticket, self.tx.slot_waiter.get()) {
            w.disarm(t);
        }
    }
}

impl<T> fmt::Debug for LoanAsync<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoanAsync")
            .field("shape", &self.shape)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for SendAsync<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SendAsync")
            .field("loan", &self.loan)
            .finish()
    }
}

impl Deref for Loan<'_> {
    type Target = SlotMut;
    fn deref(&self) -> &SlotMut {
        self.slot
            .as_ref()
            .expect("a loan holds its slot until sent")
    }
}

impl DerefMut for Loan<'_> {
    fn deref_mut(&mut self) -> &mut SlotMut {
        self.slot
            .as_mut()
            .expect("a loan holds its slot until sent")
    }
}

impl fmt::Debug for Loan<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Loan").field("slot", &self.slot).finish()
    }
}

/// A send that did not happen: why, and the loan back (so the tensor is not
/// lost; send it again or drop it).
pub struct SendError<'a> {
    error: Box<Error>,
    loan: Option<Loan<'a>>,
}

impl<'a> SendError<'a> {
    /// Why the send failed.
    pub fn error(&self) -> &Error {
        &self.error
    }

    /// The loan, to retry or drop (`None` only if a forged handle stole the
    /// slot, reported as [`Error::Corrupt`]).
    pub fn into_loan(self) -> Option<Loan<'a>> {
        self.loan
    }

    /// The error alone (the loan is dropped, freeing its slot).
    pub fn into_error(self) -> Error {
        *self.error
    }
}

impl fmt::Debug for SendError<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SendError")
            .field("error", &self.error)
            .finish()
    }
}

impl fmt::Display for SendError<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "send failed: {}", self.error)
    }
}

impl std::error::Error for SendError<'_> {}

impl From<SendError<'_>> for Error {
    fn from(e: SendError<'_>) -> Error {
        *e.error
    }
}

/// The receiving end of a channel. `Send`, not `Sync`: for competing
/// consumers (`spmc`, `mpmc`), connect several receivers. Iterating
/// receives until the channel is disconnected.
// Aligned to two cache lines, as `Sender` is.
#[repr(align(128))]
pub struct Receiver {
    ep: Endpoint,
    consumer: Cell<Consumer>,
    waiter: OnceCell<AsyncWaiter>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        // Before the endpoint leaves: the async helper stops (it beats the
        // endpoint's participant record).
        drop(self.waiter.take());
    }
}

impl Receiver {
    /// Connects a receiver to the channel `uri`, creating the channel if it
    /// does not exist. An `ipc://` receiver maps the tensor data read-only.
    ///
    /// # Errors
    /// As [`Sender::connect`] ([`Error::TooManyEndpoints`] for a second
    /// receiver on an `spsc` or `mpsc` channel).
    pub fn connect(uri: &str) -> Result<Receiver> {
        let ep = Endpoint::connect(uri, Side::Receiver)?;
        let consumer = Cell::new(ep.shared.consumer());
        Ok(Receiver {
            ep,
            consumer,
            waiter: OnceCell::new(),
        })
    }

    /// The channel's parameters.
    pub fn config(&self) -> Config {
        self.ep.shared.config
    }

    fn recv_until(&self, deadline: Option<Instant>) -> Result<Option<Slot>> {
        let part = self.ep.joined.part;
        if let Some(sub) = self.ep.sub {
            return self
                .ep
                .shared
                .recv_broadcast(&self.ep.leases, sub, part, deadline);
        }
        let mut c = self.consumer.get();
        let r = self.ep.shared.recv(&self.ep.leases, &mut c, part, deadline);
        self.consumer.set(c);
        r
    }

    /// Waits for the next tensor.
    ///
    /// # Errors
    /// [`Error::Disconnected`] once every sender has gone and nothing is
    /// queued; on a broadcast channel, [`Error::Lagged`] (once, then
    /// receiving goes on) if the publisher overwrote unread messages.
    pub fn recv(&self) -> Result<Slot> {
        loop {
            if let Some(s) = self.recv_until(None)? {
                return Ok(s);
            }
        }
    }

    /// Waits at most `timeout` for the next tensor.
    ///
    /// # Errors
    /// [`Error::Timeout`] if none came; [`Error::Disconnected`] as
    /// [`Receiver::recv`].
    pub fn recv_timeout(&self, timeout: Duration) -> Result<Slot> {
        self.recv_until(Some(Instant::now() + timeout))?
            .ok_or(Error::Timeout(timeout))
    }

    /// The next tensor if one is queued, without waiting.
    ///
    /// # Errors
    /// [`Error::Disconnected`] as [`Receiver::recv`].
    pub fn try_recv(&self) -> Result<Option<Slot>> {
        self.recv_until(Some(Instant::now()))
    }

    /// Waits for the next tensor without blocking the thread: a future that
    /// works under any executor (tokio, async-std, smol, `block_on`).
    ///
    /// The first time it has to wait, the receiver starts a helper thread
    /// that sleeps on the channel's futex (not busy-polling) and wakes the
    /// task when a message arrives.
    ///
    /// # Errors
    /// As [`Receiver::recv`].
    pub fn recv_async(&self) -> Recv<'_> {
        Recv {
            rx: self,
            ticket: None,
        }
    }

    fn waiter(&self) -> &AsyncWaiter {
        self.waiter.get_or_init(|| {
            let sub = self.ep.sub;
            AsyncWaiter::start(
                self.ep.shared.clone(),
                Which::NotEmpty,
                self.ep.joined.part,
                move |s, _| s.has_message(sub),
            )
        })
    }

    /// Receives until the channel is disconnected or fails (a broadcast
    /// subscriber's [`Error::Lagged`] is skipped: iteration goes on with
    /// the oldest message left).
    pub fn iter(&self) -> impl Iterator<Item = Slot> + '_ {
        std::iter::from_fn(|| loop {
            match self.recv() {
                Ok(s) => return Some(s),
                Err(Error::Lagged { .. }) => continue,
                Err(_) => return None,
            }
        })
    }

    /// Messages queued now (broadcast: not yet read by this subscriber).
    pub fn len(&self) -> usize {
        match self.ep.sub {
            Some(sub) => self.ep.shared.unread(sub) as usize,
            None => self.ep.shared.len() as usize,
        }
    }

    /// Whether nothing is queued now.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Messages sent, received and dropped on this channel so far, over
    /// all endpoints. Dropped: by `drop_oldest`, missed by a lagging
    /// broadcast subscriber, or lost with a producer killed between claiming
    /// a ring position and publishing it.
    pub fn counts(&self) -> (u64, u64, u64) {
        self.ep.shared.stats()
    }
}

impl Iterator for Receiver {
    type Item = Slot;
    fn next(&mut self) -> Option<Slot> {
        self.iter().next()
    }
}

/// The future of [`Receiver::recv_async`].
#[must_use = "futures do nothing unless awaited"]
pub struct Recv<'a> {
    rx: &'a Receiver,
    /// The helper's ticket while pending.
    ticket: Option<u64>,
}

impl Future for Recv<'_> {
    type Output = Result<Slot>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<Slot>> {
        let rx = self.rx;
        if let Some(r) = rx.try_recv().transpose() {
            return Poll::Ready(r);
        }
        self.ticket = Some(rx.waiter().arm(self.ticket, cx.waker(), None, 0));
        // Re-check: a message that came before the helper was armed would
        // not wake it.
        match rx.try_recv().transpose() {
            Some(r) => Poll::Ready(r),
            None => Poll::Pending,
        }
    }
}

impl Drop for Recv<'_> {
    fn drop(&mut self) {
        if let (Some(t), Some(w)) = (self.ticket, self.rx.waiter.get()) {
            w.disarm(t);
        }
    }
}

impl fmt::Debug for Recv<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Recv").finish_non_exhaustive()
    }
}

impl fmt::Debug for Receiver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Receiver")
            .field("channel", &self.ep.name())
            .field("config", &self.config())
            .finish()
    }
}
