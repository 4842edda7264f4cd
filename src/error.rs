//! The one error type of the crate.
//!
//! Every fallible call in psyne returns [`Result<T>`](crate::Result). Each
//! variant names what went wrong with enough context (a name, a size, the
//! value found and the value expected) to act on it without a debugger.

use std::io;

use crate::tensor::DType;

/// Everything that can go wrong in psyne.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    // ----- tensors -------------------------------------------------------
    /// A shape has more dimensions than psyne supports.
    #[error("tensor rank {rank} exceeds the maximum of {max}")]
    RankTooLarge {
        /// The rank asked for.
        rank: usize,
        /// The largest supported rank.
        max: usize,
    },
    /// The element count or byte size of a shape does not fit in 64 bits.
    #[error(
        "tensor shape {dims:?} overflows: its element count or byte size does not fit in 64 bits"
    )]
    ShapeOverflow {
        /// The dimensions that overflowed.
        dims: Vec<u64>,
    },
    /// A buffer does not hold the number of elements (or bytes) a shape needs.
    #[error("length mismatch: the shape needs {expected} {unit}, the buffer has {actual}")]
    LengthMismatch {
        /// What the shape needs.
        expected: u64,
        /// What the buffer has.
        actual: u64,
        /// `"elements"` or `"bytes"`.
        unit: &'static str,
    },
    /// A view was asked for with an element type that is not the tensor's dtype.
    #[error("dtype mismatch: the tensor holds {found}, the view asked for {expected}")]
    DTypeMismatch {
        /// The dtype of the requested view.
        expected: DType,
        /// The dtype stored in the tensor.
        found: DType,
    },
    /// A view of a fixed rank was asked of a tensor of another rank.
    #[error("rank mismatch: expected a rank-{expected} tensor, found rank {found}")]
    RankMismatch {
        /// The rank the view needs.
        expected: usize,
        /// The rank of the tensor.
        found: usize,
    },
    /// A dtype code read from memory is not one psyne knows.
    #[error("unknown dtype code {0}")]
    UnknownDType(u8),
    /// The input to a quantizer holds a NaN or an infinity.
    #[error("cannot quantize: element {index} is not finite ({value})")]
    NonFinite {
        /// Flat index of the first bad element.
        index: usize,
        /// Its value.
        value: f32,
    },
    /// Values too large for the chosen quantization format (for example a
    /// block scale beyond the range of f16).
    #[error("cannot quantize: {0}")]
    QuantRange(String),
    /// Quantization parameters that make no sense (zero or negative scale,
    /// channel axis out of range, missing per-channel tables).
    #[error("invalid quantization parameters: {0}")]
    InvalidQuantParams(String),

    // ----- segments ------------------------------------------------------
    /// A segment name that POSIX shared memory or psyne cannot use.
    #[error("invalid segment name {name:?}: {reason}")]
    InvalidName {
        /// The rejected name.
        name: String,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// Creating a segment whose name is taken.
    #[error("segment {name:?} already exists")]
    AlreadyExists {
        /// The segment name.
        name: String,
    },
    /// Opening a segment that does not exist.
    #[error("segment {name:?} does not exist")]
    NotFound {
        /// The segment name.
        name: String,
    },
    /// The operating system refused access to a segment (typically another
    /// user's segment created with mode 0600).
    #[error("permission denied opening segment {name:?} (it belongs to another user or its mode forbids it)")]
    PermissionDenied {
        /// The segment name.
        name: String,
    },
    /// The object exists but is not a psyne segment (wrong magic bytes).
    #[error("segment {name:?} is not a psyne segment (magic bytes {found:02x?})")]
    ForeignSegment {
        /// The segment name.
        name: String,
        /// The first bytes found where the magic should be.
        found: [u8; 8],
    },
    /// The segment is smaller than its header says, or than a header.
    #[error("segment {name:?} is truncated: {actual} bytes, expected at least {expected}")]
    Truncated {
        /// The segment name.
        name: String,
        /// Bytes needed.
        expected: u64,
        /// Bytes present.
        actual: u64,
    },
    /// The segment was written by another layout version of psyne.
    #[error("segment {name:?} has layout version {found}, this psyne reads version {expected}")]
    VersionMismatch {
        /// The segment name.
        name: String,
        /// The version found in the header.
        found: u32,
        /// The version this build reads.
        expected: u32,
    },
    /// A header whose checksum or invariants do not hold.
    #[error("segment {name:?} has a corrupt header: {reason}")]
    CorruptHeader {
        /// The segment name.
        name: String,
        /// What failed.
        reason: String,
    },
    /// Header fields with a valid checksum that describe an impossible
    /// layout (an area outside the segment, overlapping areas, bad alignment).
    #[error("segment {name:?} has an impossible layout: {reason}")]
    InvalidLayout {
        /// The segment name.
        name: String,
        /// What is impossible.
        reason: String,
    },
    /// A segment whose creator has not finished writing its header.
    #[error("segment {name:?} is not initialised yet (its creator has not finished)")]
    Uninitialized {
        /// The segment name.
        name: String,
    },
    /// A configuration that cannot be built (no size classes, zero sizes...).
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    /// A write was attempted through a read-only mapping.
    #[error("the data area of this segment is mapped read-only")]
    ReadOnly,

    // ----- slab ----------------------------------------------------------
    /// No free slot large enough right now.
    #[error("slab full: no free slot of at least {requested} bytes")]
    SlabFull {
        /// The size asked for.
        requested: u64,
    },
    /// Larger than the largest size class: this can never succeed.
    #[error("allocation of {requested} bytes exceeds the largest slot size ({max} bytes)")]
    TooLarge {
        /// The size asked for.
        requested: u64,
        /// The largest slot payload in this slab.
        max: u64,
    },
    /// A handle that does not point at a slot of this slab.
    #[error("invalid handle: {0}")]
    InvalidHandle(String),
    /// A handle to a slot that has since been freed (and maybe reused).
    #[error("stale handle: it names generation {handle}, the slot is at generation {slot}")]
    StaleHandle {
        /// Generation in the handle.
        handle: u32,
        /// Generation of the slot now.
        slot: u32,
    },
    /// Shared control state that violates an invariant (for example a free
    /// list link outside the slot table): the segment was damaged.
    #[error("shared state is corrupt: {0}")]
    Corrupt(String),
    /// A wait ran out of time.
    #[error("timed out after {0:?}")]
    Timeout(std::time::Duration),

    // ----- channels ------------------------------------------------------
    /// A channel URI that cannot be used, with the reason.
    #[error("invalid channel URI {uri:?}: {reason}")]
    InvalidUri {
        /// The URI as given.
        uri: String,
        /// What is wrong with it.
        reason: String,
    },

    /// Opening an existing channel with a parameter that differs from the
    /// one it was created with.
    #[error(
        "channel {name:?} exists with {param}={existing}; the URI asks for {param}={requested}"
    )]
    ParamConflict {
        /// The channel name.
        name: String,
        /// The parameter.
        param: &'static str,
        /// The value in the URI.
        requested: String,
        /// The value the channel has.
        existing: String,
    },
    /// A side of a channel whose pattern allows only one endpoint of that
    /// side already has one (e.g. a second sender on an spsc channel).
    #[error("channel {name:?} is {pattern}: it already has its one {side}")]
    TooManyEndpoints {
        /// The channel name.
        name: String,
        /// The pattern (`spsc`, `mpsc`, `spmc`).
        pattern: &'static str,
        /// `"sender"` or `"receiver"`.
        side: &'static str,
    },
    /// Every endpoint on the other side is gone (receivers: and nothing is
    /// left to receive).
    #[error("the channel is disconnected: no {0} is left")]
    Disconnected(&'static str),
    /// A broadcast subscriber fell more than the ring's capacity behind and
    /// the publisher overwrote messages it had not read. The next receive
    /// continues with the oldest message still there.
    #[error("this subscriber lagged: {missed} messages were overwritten before it read them")]
    Lagged {
        /// How many messages it missed.
        missed: u64,
    },
    /// The ring is full and the channel's policy is `fail`.
    #[error("the channel is full")]
    Full,
    /// A channel whose shared state is not a psyne channel of this version.
    #[error("segment {name:?} holds no usable channel: {reason}")]
    NotAChannel {
        /// The segment name.
        name: String,
        /// What is wrong.
        reason: String,
    },

    // ----- gpu -----------------------------------------------------------
    /// No GPU adapter could be opened (no Vulkan driver, or none matches
    /// `PSYNE_GPU_ADAPTER`), or the device could not be created.
    #[error("no usable GPU: {0}")]
    NoGpu(String),
    /// A GPU operation was rejected or failed: a binding over the device's
    /// limits, a kernel given inconsistent shapes, a validation error.
    #[error("GPU: {0}")]
    Gpu(String),

    // ----- system --------------------------------------------------------
    /// An operating-system error, with what psyne was doing.
    #[error("{context}: {source}")]
    Io {
        /// What psyne was doing.
        context: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
}

impl Error {
    pub(crate) fn io(context: impl Into<String>, source: impl Into<io::Error>) -> Self {
        Error::Io {
            context: context.into(),
            source: source.into(),
        }
    }
}

impl From<nix::Error> for Error {
    fn from(e: nix::Error) -> Self {
        Error::io("system call failed", io::Error::from(e))
    }
}

/// The result type of every fallible psyne call.
pub type Result<T> = std::result::Result<T, Error>;
