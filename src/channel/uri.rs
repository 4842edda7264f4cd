//! Channel URIs: the one string that names a channel and how to build it.
//!
//! ```text
//! scheme://target[?key=value&key=value...]
//! ```
//!
//! | scheme   | target                                      | example                      |
//! |----------|---------------------------------------------|------------------------------|
//! | `memory` | channel name (in one process)               | `memory://frames`            |
//! | `ipc`    | channel name (shared-memory segment)        | `ipc://frames?capacity=1024` |
//! | `unix`   | socket path, absolute or relative           | `unix:///tmp/psyne.sock`     |
//! | `tcp`    | `HOST:PORT`, HOST is DNS, IPv4 or `[IPv6]`  | `tcp://[::1]:7000`           |
//!
//! A name is 1 to 200 bytes of `A-Z a-z 0-9 . _ -`, not starting with `.`
//! or `-`. A socket path is 1 to 107 bytes (the `sun_path` limit) without
//! NUL. A port is 1 to 65535 and required. Schemes and keys are lower case.
//!
//! | key          | value                                                          |
//! |--------------|----------------------------------------------------------------|
//! | `capacity`   | ring slots: a power of two in 2..=2^24                         |
//! | `slab`       | slab bytes, a [size](parse_size) in 64KiB..=1TiB               |
//! | `pattern`    | `spsc`, `mpsc`, `spmc`, `mpmc` or `broadcast`                  |
//! | `policy`     | when the ring is full: `block`, `fail` or `drop_oldest`        |
//! | `timeout_ms` | how long `block` waits, in milliseconds (u64, 0 allowed)       |
//! | `max_msg`    | largest message, a [size](parse_size) in 1..=1TiB              |
//!
//! Every parameter is optional, accepted for every scheme (the transport
//! decides what it uses) and may be given once. Strict on purpose: an
//! unknown key, an empty value, a `key` without `=`, an empty query (`x?`)
//! and a stray `&` (leading, trailing or doubled) are all errors. There is
//! no percent-encoding, so a socket path cannot contain `?`. Errors are
//! [`Error::InvalidUri`] with the whole input and a reason; nothing panics.
//!
//! [`ChannelUri`]'s `Display` writes the canonical form (parameters in the
//! order of the table above, sizes in the largest exact binary unit, IPv6
//! normalised), which parses back to the same value.
//!
//! ```
//! # fn main() -> psyne::Result<()> {
//! use psyne::channel::uri::{ChannelUri, Pattern, Policy, Transport};
//!
//! let u: ChannelUri = "ipc://frames?capacity=1024&slab=64MiB&pattern=spsc&policy=block".parse()?;
//! assert_eq!(u.transport, Transport::Ipc);
//! assert_eq!(u.name(), Some("frames"));
//! assert_eq!(u.params.capacity, Some(1024));
//! assert_eq!(u.params.slab, Some(64 << 20));
//! assert_eq!(u.params.pattern, Some(Pattern::Spsc));
//! assert_eq!(u.params.policy, Some(Policy::Block));
//! assert_eq!(u.to_string().parse::<ChannelUri>()?, u);
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::str::FromStr;

use crate::error::{Error, Result};

/// Longest channel name, in bytes.
pub const MAX_NAME_LEN: usize = 200;
/// Longest unix socket path, in bytes (`sun_path` holds 108 with the NUL).
pub const MAX_PATH_LEN: usize = 107;
/// Smallest `capacity`.
pub const MIN_CAPACITY: u32 = 2;
/// Largest `capacity`.
pub const MAX_CAPACITY: u32 = 1 << 24;
/// Smallest `slab`, in bytes (64 KiB).
pub const MIN_SLAB: u64 = 64 << 10;
/// Largest `slab` and `max_msg`, in bytes (1 TiB).
pub const MAX_SIZE: u64 = 1 << 40;

/// A reason for rejecting (part of) a URI, wrapped into an error later.
type Reason<T> = std::result::Result<T, String>;

fn invalid(uri: &str, reason: String) -> Error {
    Error::InvalidUri {
        uri: uri.into(),
        reason,
    }
}

/// Returns early with a formatted reason.
macro_rules! bail {
    ($($arg:tt)*) => {
        return Err(format!($($arg)*))
    };
}

/// Adds `ALL`, `as_str`, `FromStr` and `Display` to a keyword enum.
macro_rules! keywords {
    ($ty:ident, $what:literal, $expected:literal, [$($var:ident => $s:literal),+ $(,)?]) => {
        impl $ty {
            /// Every value, in declaration order.
            pub const ALL: [Self; [$($s),+].len()] = [$(Self::$var),+];

            /// The keyword as written in a URI.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(Self::$var => $s,)+
                }
            }

            fn lookup(s: &str) -> Reason<Self> {
                match s {
                    $($s => Ok(Self::$var),)+
                    _ => Err(format!(concat!("unknown ", $what, " `{}`: expected ", $expected), s)),
                }
            }
        }

        impl FromStr for $ty {
            type Err = Error;
            /// Parses the keyword; the error is [`Error::InvalidUri`] holding `s`.
            fn from_str(s: &str) -> Result<Self> {
                Self::lookup(s).map_err(|reason| invalid(s, reason))
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

/// The transport a URI names.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum Transport {
    /// `memory://`: a channel inside one process.
    Memory,
    /// `ipc://`: a channel in a shared-memory segment.
    Ipc,
    /// `unix://`: a unix-domain stream socket.
    Unix,
    /// `tcp://`: a TCP connection.
    Tcp,
}
keywords!(Transport, "scheme", "memory, ipc, unix or tcp",
    [Memory => "memory", Ipc => "ipc", Unix => "unix", Tcp => "tcp"]);

/// Who may send and receive on a channel.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum Pattern {
    /// One sender, one receiver.
    Spsc,
    /// Many senders, one receiver.
    Mpsc,
    /// One sender, many receivers, each message taken by one of them.
    Spmc,
    /// Many senders, many receivers, each message taken by one of them.
    Mpmc,
    /// One sender, every receiver sees every message.
    Broadcast,
}
keywords!(Pattern, "pattern", "spsc, mpsc, spmc, mpmc or broadcast",
    [Spsc => "spsc", Mpsc => "mpsc", Spmc => "spmc", Mpmc => "mpmc", Broadcast => "broadcast"]);

/// What a send does when the ring is full.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum Policy {
    /// Wait for a free slot (up to `timeout_ms` if given).
    Block,
    /// Return an error at once.
    Fail,
    /// Overwrite the oldest unread message.
    DropOldest,
}
keywords!(Policy, "policy", "block, fail or drop_oldest",
    [Block => "block", Fail => "fail", DropOldest => "drop_oldest"]);

/// Where a URI points.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Target {
    /// A channel name (`memory` and `ipc`).
    Name(String),
    /// A socket path (`unix`).
    Path(PathBuf),
    /// A host and port (`tcp`). An IPv6 host is stored without brackets,
    /// in its normalised form (`::1`).
    Addr {
        /// DNS name, IPv4 address or IPv6 address.
        host: String,
        /// Port, never 0 when parsed.
        port: u16,
    },
}

/// Parameters given in the query (None: not given, the channel's default or
/// the creator's value applies).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Params {
    /// Ring slots, a power of two in 2..=2^24.
    pub capacity: Option<u32>,
    /// Slab bytes, in 64KiB..=1TiB.
    pub slab: Option<u64>,
    /// Who may send and receive.
    pub pattern: Option<Pattern>,
    /// What a send does when the ring is full.
    pub policy: Option<Policy>,
    /// How long a blocking send waits, in milliseconds.
    pub timeout_ms: Option<u64>,
    /// Largest message in bytes, in 1..=1TiB.
    pub max_msg: Option<u64>,
}

/// A parsed channel URI.
///
/// `Display` writes the canonical form, which parses back to an equal value
/// for anything [`parse`](Self::parse) returned. A value built by hand with a
/// target that does not fit its transport (or a path that is not UTF-8 or
/// contains `?`) is written as best it can be and may not parse back.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ChannelUri {
    /// The scheme.
    pub transport: Transport,
    /// The part between `://` and `?`.
    pub target: Target,
    /// The query parameters.
    pub params: Params,
}

impl ChannelUri {
    /// Parses `scheme://target[?key=value&...]` (see the [module docs](self)).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidUri`] with `uri` set to the whole input and a reason.
    pub fn parse(uri: &str) -> Result<ChannelUri> {
        parse_uri(uri).map_err(|reason| invalid(uri, reason))
    }

    /// The channel name of a `memory` or `ipc` URI, `None` for other targets.
    pub fn name(&self) -> Option<&str> {
        match &self.target {
            Target::Name(name) => Some(name),
            _ => None,
        }
    }
}

impl FromStr for ChannelUri {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Self::parse(s)
    }
}

impl fmt::Display for ChannelUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://", self.transport)?;
        match &self.target {
            Target::Name(name) => f.write_str(name)?,
            Target::Path(path) => write!(f, "{}", path.display())?,
            Target::Addr { host, port } if host.contains(':') => write!(f, "[{host}]:{port}")?,
            Target::Addr { host, port } => write!(f, "{host}:{port}")?,
        }
        let p = &self.params;
        let params = [
            ("capacity", p.capacity.map(|v| v.to_string())),
            ("slab", p.slab.map(format_size)),
            ("pattern", p.pattern.map(|v| v.as_str().into())),
            ("policy", p.policy.map(|v| v.as_str().into())),
            ("timeout_ms", p.timeout_ms.map(|v| v.to_string())),
            ("max_msg", p.max_msg.map(format_size)),
        ];
        let given = params.iter().filter_map(|(k, v)| Some((k, v.as_ref()?)));
        for (i, (key, value)) in given.enumerate() {
            write!(f, "{}{key}={value}", if i == 0 { '?' } else { '&' })?;
        }
        Ok(())
    }
}

/// Parses a byte size: a decimal integer with an optional unit, case-sensitive:
/// none or `B` (bytes), `K` `KiB` `M` `MiB` `G` `GiB` (powers of 1024) or
/// `KB` `MB` `GB` (powers of 1000). No sign, fraction or spaces.
///
/// Only the syntax and 64-bit overflow are checked; ranges are the caller's.
///
/// ```
/// use psyne::channel::uri::parse_size;
/// assert_eq!(parse_size("64MiB").unwrap(), 64 << 20);
/// assert_eq!(parse_size("2K").unwrap(), 2048);
/// assert_eq!(parse_size("3MB").unwrap(), 3_000_000);
/// assert_eq!(parse_size("4096").unwrap(), 4096);
/// assert!(parse_size("1.5GiB").is_err());
/// ```
///
/// # Errors
///
/// [`Error::InvalidUri`] with `uri` set to `s` and the reason.
pub fn parse_size(s: &str) -> Result<u64> {
    size(s).map_err(|reason| invalid(s, reason))
}

/// Writes a byte size in the largest exact binary unit (`64MiB`, `3KiB`), or
/// as a plain number of bytes; [`parse_size`] reads it back.
///
/// ```
/// use psyne::channel::uri::format_size;
/// assert_eq!(format_size(64 << 20), "64MiB");
/// assert_eq!(format_size(1 << 40), "1024GiB");
/// assert_eq!(format_size(1000), "1000");
/// ```
pub fn format_size(bytes: u64) -> String {
    if bytes != 0 {
        for (shift, unit) in [(30, "GiB"), (20, "MiB"), (10, "KiB")] {
            if bytes.trailing_zeros() >= shift {
                return format!("{}{unit}", bytes >> shift);
            }
        }
    }
    bytes.to_string()
}

const UNITS: [(&str, u64); 11] = [
    ("", 1),
    ("B", 1),
    ("K", 1 << 10),
    ("KiB", 1 << 10),
    ("M", 1 << 20),
    ("MiB", 1 << 20),
    ("G", 1 << 30),
    ("GiB", 1 << 30),
    ("KB", 1_000),
    ("MB", 1_000_000),
    ("GB", 1_000_000_000),
];

fn size(s: &str) -> Reason<u64> {
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    let (num, unit) = s.split_at(digits);
    if num.is_empty() {
        bail!("size `{s}` does not start with a decimal number: expected e.g. 4096, 64KiB or 1GiB");
    }
    if unit.starts_with('.') || unit.starts_with(',') {
        bail!("size `{s}` must be a whole number (write 1536MiB, not 1.5GiB)");
    }
    let mult = UNITS
        .iter()
        .find(|(u, _)| *u == unit)
        .map(|&(_, m)| m)
        .ok_or_else(|| {
            format!(
                "unknown size unit `{unit}` in `{s}`: expected none or B, K, KiB, KB, M, MiB, MB, G, GiB or GB"
            )
        })?;
    num.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .ok_or_else(|| format!("size `{s}` does not fit in 64 bits"))
}

/// A decimal integer of digits only; `Err(true)` when it overflows.
fn decimal(s: &str) -> std::result::Result<u64, bool> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(false);
    }
    s.parse().map_err(|_| true)
}

fn parse_uri(uri: &str) -> Reason<ChannelUri> {
    let Some((scheme, rest)) = uri.split_once("://") else {
        bail!("missing `://`: expected scheme://target, e.g. ipc://frames or tcp://host:7000");
    };
    if scheme.is_empty() {
        bail!("missing scheme before `://`: expected memory, ipc, unix or tcp");
    }
    let transport = Transport::lookup(scheme)?;
    let (target, query) = match rest.split_once('?') {
        Some((target, query)) => (target, Some(query)),
        None => (rest, None),
    };
    let target = match transport {
        Transport::Memory | Transport::Ipc => Target::Name(channel_name(target)?),
        Transport::Unix => Target::Path(socket_path(target)?),
        Transport::Tcp => {
            let (host, port) = address(target)?;
            Target::Addr { host, port }
        }
    };
    let params = query.map(params).transpose()?.unwrap_or_default();
    Ok(ChannelUri {
        transport,
        target,
        params,
    })
}

fn channel_name(name: &str) -> Reason<String> {
    if name.is_empty() {
        bail!("the channel name is empty: expected e.g. ipc://frames");
    }
    if name.contains('/') {
        bail!("the name must not contain '/' (a channel name is one word; use unix:// for a path)");
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "._-".contains(*c)))
    {
        bail!("the name contains {c:?}: only A-Z, a-z, 0-9, '.', '_' and '-' are allowed");
    }
    if name.starts_with(['.', '-']) {
        bail!("the name must not start with '.' or '-'");
    }
    if name.len() > MAX_NAME_LEN {
        bail!(
            "the name is {} bytes long, at most {MAX_NAME_LEN} are allowed",
            name.len()
        );
    }
    Ok(name.into())
}

fn socket_path(path: &str) -> Reason<PathBuf> {
    if path.is_empty() {
        bail!("the socket path is empty: expected e.g. unix:///tmp/psyne.sock");
    }
    if path.contains('\0') {
        bail!("the socket path must not contain a NUL byte");
    }
    if path.len() > MAX_PATH_LEN {
        bail!(
            "the socket path is {} bytes long, at most {MAX_PATH_LEN} fit in sun_path",
            path.len()
        );
    }
    Ok(path.into())
}

fn address(target: &str) -> Reason<(String, u16)> {
    const FORM: &str = "expected HOST:PORT, e.g. tcp://127.0.0.1:7000 or tcp://[::1]:7000";
    if target.is_empty() {
        bail!("the host and port are missing: {FORM}");
    }
    let (host, port) = if let Some(rest) = target.strip_prefix('[') {
        let (inner, after) = rest
            .split_once(']')
            .ok_or_else(|| format!("the `[` before the IPv6 address is never closed: {FORM}"))?;
        let ip: Ipv6Addr = inner
            .parse()
            .map_err(|_| format!("`{inner}` in brackets is not an IPv6 address"))?;
        let port = match after.strip_prefix(':') {
            Some(port) => port,
            None if after.is_empty() => bail!("the port is missing: {FORM}"),
            None => bail!("unexpected `{after}` after `]`: {FORM}"),
        };
        (ip.to_string(), port)
    } else {
        let (host, port) = target
            .rsplit_once(':')
            .ok_or_else(|| format!("the port is missing: {FORM}"))?;
        if host.contains(':') {
            bail!("an IPv6 address must be in brackets: {FORM}");
        }
        (host_name(host)?, port)
    };
    match decimal(port) {
        Ok(p @ 1..=65535) => Ok((host, p as u16)),
        Err(false) if port.is_empty() => Err(format!("the port is empty: {FORM}")),
        Err(false) => Err(format!("port `{port}` is not a decimal number")),
        _ => Err(format!("port `{port}` is out of range 1..=65535")),
    }
}

fn host_name(host: &str) -> Reason<String> {
    if host.is_empty() {
        bail!("the host is missing before `:PORT`");
    }
    if host.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return host
            .parse::<Ipv4Addr>()
            .map(|ip| ip.to_string())
            .map_err(|_| format!("`{host}` is not a valid IPv4 address"));
    }
    if host.len() > 253 {
        bail!(
            "the host name is {} bytes long, at most 253 are allowed",
            host.len()
        );
    }
    for label in host.split('.') {
        if label.is_empty() || label.len() > 63 {
            bail!(
                "host `{host}` has a label of {} bytes: each dot-separated part must be 1 to 63",
                label.len()
            );
        }
        if let Some(c) = label
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
        {
            bail!("host `{host}` contains {c:?}: only A-Z, a-z, 0-9, '-', '_' and '.' are allowed");
        }
        if label.starts_with('-') || label.ends_with('-') {
            bail!("host `{host}` has a label starting or ending with '-'");
        }
    }
    Ok(host.into())
}

const KEYS: [&str; 6] = [
    "capacity",
    "slab",
    "pattern",
    "policy",
    "timeout_ms",
    "max_msg",
];

fn params(query: &str) -> Reason<Params> {
    if query.is_empty() {
        bail!("the query after `?` is empty: remove the `?` or add key=value parameters");
    }
    let mut p = Params::default();
    let mut seen = [false; KEYS.len()];
    for pair in query.split('&') {
        if pair.is_empty() {
            bail!("empty parameter: a leading, trailing or doubled `&` is not allowed");
        }
        let Some((key, value)) = pair.split_once('=') else {
            bail!("parameter `{pair}` has no value: expected key=value");
        };
        let Some(index) = KEYS.iter().position(|k| *k == key) else {
            bail!("unknown parameter `{key}`: expected capacity, slab, pattern, policy, timeout_ms or max_msg");
        };
        if std::mem::replace(&mut seen[index], true) {
            bail!("parameter `{key}` is given more than once");
        }
        if value.is_empty() {
            bail!("parameter `{key}` has an empty value");
        }
        match index {
            0 => p.capacity = Some(capacity(value)?),
            1 => p.slab = Some(size_in(key, value, MIN_SLAB)?),
            2 => p.pattern = Some(Pattern::lookup(value)?),
            3 => p.policy = Some(Policy::lookup(value)?),
            4 => p.timeout_ms = Some(timeout(value)?),
            _ => p.max_msg = Some(size_in(key, value, 1)?),
        }
    }
    Ok(p)
}

fn capacity(value: &str) -> Reason<u32> {
    let range = format!("{MIN_CAPACITY}..={MAX_CAPACITY}");
    match decimal(value) {
        Err(false) => Err(format!("capacity `{value}` is not a decimal integer")),
        Err(true) => Err(format!("capacity `{value}` is out of range {range}")),
        Ok(n) if !(MIN_CAPACITY as u64..=MAX_CAPACITY as u64).contains(&n) => {
            Err(format!("capacity {n} is out of range {range}"))
        }
        Ok(n) if !n.is_power_of_two() => Err(format!(
            "capacity {n} must be a power of two (e.g. {})",
            n.next_power_of_two()
        )),
        Ok(n) => Ok(n as u32),
    }
}

fn timeout(value: &str) -> Reason<u64> {
    decimal(value).map_err(|overflow| match overflow {
        true => format!("timeout_ms `{value}` is out of range: at most {}", u64::MAX),
        false => format!("timeout_ms `{value}` is not a decimal number of milliseconds"),
    })
}

fn size_in(key: &str, value: &str, min: u64) -> Reason<u64> {
    let n = size(value).map_err(|reason| format!("{key}: {reason}"))?;
    if n < min {
        bail!(
            "{key} `{value}` is too small: at least {} is needed",
            format_size(min)
        );
    }
    if n > MAX_SIZE {
        bail!(
            "{key} `{value}` is too large: at most {} is allowed",
            format_size(MAX_SIZE)
        );
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn reason(uri: &str) -> String {
        match ChannelUri::parse(uri) {
            Err(Error::InvalidUri { uri: u, reason }) if u == uri => reason,
            other => panic!("{uri:?}: expected InvalidUri, got {other:?}"),
        }
    }

    #[rustfmt::skip]
    const MALFORMED: &[(&str, &str)] = &[
        ("http://x",                                  "unknown scheme `http`: expected memory, ipc, unix or tcp"),
        ("IPC://x",                                   "unknown scheme `IPC`"),
        ("ipc:x",                                     "missing `://`"),
        ("frames",                                    "missing `://`"),
        ("",                                          "missing `://`"),
        ("://x",                                      "missing scheme"),
        ("ipc://",                                    "the channel name is empty"),
        ("memory://?capacity=2",                      "the channel name is empty"),
        ("ipc://a/b",                                 "the name must not contain '/'"),
        ("ipc:///frames",                             "the name must not contain '/'"),
        ("ipc://.hidden",                             "must not start with '.' or '-'"),
        ("memory://-x",                               "must not start with '.' or '-'"),
        ("ipc://a b",                                 "the name contains ' '"),
        ("ipc://é",                                   "the name contains 'é'"),
        ("ipc://a:1",                                 "the name contains ':'"),
        ("ipc://x?capacity=abc",                      "capacity `abc` is not a decimal integer"),
        ("ipc://x?capacity=-1",                       "capacity `-1` is not a decimal integer"),
        ("ipc://x?capacity=1.5",                      "capacity `1.5` is not a decimal integer"),
        ("ipc://x?capacity=+8",                       "is not a decimal integer"),
        ("ipc://x?capacity=1000",                     "capacity 1000 must be a power of two (e.g. 1024)"),
        ("ipc://x?capacity=0",                        "capacity 0 is out of range 2..=16777216"),
        ("ipc://x?capacity=1",                        "capacity 1 is out of range"),
        ("ipc://x?capacity=33554432",                 "capacity 33554432 is out of range"),
        ("ipc://x?capacity=99999999999999999999999",  "is out of range"),
        ("ipc://x?pattern=p2p",                       "unknown pattern `p2p`: expected spsc, mpsc, spmc, mpmc or broadcast"),
        ("ipc://x?pattern=SPSC",                      "unknown pattern `SPSC`"),
        ("ipc://x?policy=drop",                       "unknown policy `drop`: expected block, fail or drop_oldest"),
        ("ipc://x?size=1",                            "unknown parameter `size`: expected capacity, slab, pattern"),
        ("ipc://x?Capacity=2",                        "unknown parameter `Capacity`"),
        ("ipc://x?capacity=2&capacity=4",             "parameter `capacity` is given more than once"),
        ("ipc://x?capacity=2&capacity=",              "given more than once"),
        ("ipc://x?capacity=",                         "parameter `capacity` has an empty value"),
        ("ipc://x?capacity",                          "parameter `capacity` has no value: expected key=value"),
        ("ipc://x?=4",                                "unknown parameter ``"),
        ("ipc://x?capacity=2&",                       "empty parameter"),
        ("ipc://x?&capacity=2",                       "empty parameter"),
        ("ipc://x?capacity=2&&slab=1MiB",             "empty parameter"),
        ("ipc://x?",                                  "the query after `?` is empty"),
        ("ipc://x?slab=1KiB",                         "slab `1KiB` is too small: at least 64KiB"),
        ("ipc://x?slab=65535",                        "too small"),
        ("ipc://x?slab=1025GiB",                      "slab `1025GiB` is too large: at most 1024GiB"),
        ("ipc://x?slab=1TiB",                         "unknown size unit `TiB`"),
        ("ipc://x?slab=64mib",                        "unknown size unit `mib`"),
        ("ipc://x?slab=64 MiB",                       "unknown size unit ` MiB`"),
        ("ipc://x?slab=MiB",                          "does not start with a decimal number"),
        ("ipc://x?slab=1.5GiB",                       "must be a whole number"),
        ("ipc://x?slab=99999999999999GiB",            "slab: size `99999999999999GiB` does not fit in 64 bits"),
        ("ipc://x?slab=99999999999999999999",         "does not fit in 64 bits"),
        ("ipc://x?max_msg=0",                         "max_msg `0` is too small: at least 1"),
        ("ipc://x?max_msg=2048GiB",                   "max_msg `2048GiB` is too large"),
        ("ipc://x?timeout_ms=soon",                   "timeout_ms `soon` is not a decimal number"),
        ("ipc://x?timeout_ms=18446744073709551616",   "timeout_ms `18446744073709551616` is out of range"),
        ("tcp://",                                    "the host and port are missing"),
        ("tcp://localhost",                           "the port is missing"),
        ("tcp://localhost:",                          "the port is empty"),
        ("tcp://:7000",                               "the host is missing"),
        ("tcp://host:0",                              "port `0` is out of range 1..=65535"),
        ("tcp://host:70000",                          "port `70000` is out of range"),
        ("tcp://host:http",                           "port `http` is not a decimal number"),
        ("tcp://host:80/",                            "port `80/` is not a decimal number"),
        ("tcp://::1:80",                              "an IPv6 address must be in brackets"),
        ("tcp://[::1:80",                             "never closed"),
        ("tcp://[::1]",                               "the port is missing"),
        ("tcp://[::1]80",                             "unexpected `80` after `]`"),
        ("tcp://[xyz]:80",                            "`xyz` in brackets is not an IPv6 address"),
        ("tcp://[fe80::1%eth0]:80",                   "is not an IPv6 address"),
        ("tcp://]:80",                                "host `]` contains ']'"),
        ("tcp://256.1.1.1:80",                        "`256.1.1.1` is not a valid IPv4 address"),
        ("tcp://1.2.3:80",                            "not a valid IPv4 address"),
        ("tcp://a..b:80",                             "has a label of 0 bytes"),
        ("tcp://-a.b:80",                             "starting or ending with '-'"),
        ("tcp://a b:80",                              "contains ' '"),
        ("unix://",                                   "the socket path is empty"),
        ("unix://?capacity=2",                        "the socket path is empty"),
        ("unix:///tmp/a\0b",                          "must not contain a NUL byte"),
    ];

    #[test]
    fn malformed() {
        let long_name = format!("ipc://{}", "a".repeat(201));
        let long_path = format!("unix:///{}", "p".repeat(107));
        let long: &[(&str, &str)] = &[
            (&long_name, "201 bytes long, at most 200"),
            (&long_path, "108 bytes long, at most 107 fit in sun_path"),
        ];
        for (uri, want) in MALFORMED.iter().chain(long) {
            let got = reason(uri);
            assert!(got.contains(want), "{uri:?}: reason {got:?} lacks {want:?}");
        }
    }

    fn ok(uri: &str) -> ChannelUri {
        ChannelUri::parse(uri).unwrap_or_else(|e| panic!("{uri:?}: {e}"))
    }

    #[test]
    fn targets() {
        let u = ok("memory://a");
        assert_eq!((u.transport, u.name()), (Transport::Memory, Some("a")));
        assert_eq!(u.params, Params::default());
        let name = format!("A9_.-{}", "z".repeat(195));
        assert_eq!(ok(&format!("ipc://{name}")).name(), Some(name.as_str()));
        let u = ok("unix:///tmp/psyne.sock");
        assert_eq!(u.target, Target::Path("/tmp/psyne.sock".into()));
        assert_eq!(u.name(), None);
        assert_eq!(
            ok("unix://rel/x.sock").target,
            Target::Path("rel/x.sock".into())
        );
        assert!(ChannelUri::parse(&format!("unix:///{}", "p".repeat(106))).is_ok());
        let addr = |host: &str, port| Target::Addr {
            host: host.into(),
            port,
        };
        assert_eq!(ok("tcp://localhost:7000").target, addr("localhost", 7000));
        assert_eq!(
            ok("tcp://my_svc.example-1.com:1").target,
            addr("my_svc.example-1.com", 1)
        );
        assert_eq!(ok("tcp://10.0.0.1:65535").target, addr("10.0.0.1", 65535));
        assert_eq!(ok("tcp://[::1]:80").target, addr("::1", 80));
        assert_eq!(ok("tcp://[0:0:0::1]:80").target, addr("::1", 80));
        assert_eq!(ok("tcp://[::1]:80").to_string(), "tcp://[::1]:80");
    }

    #[test]
    fn parameters() {
        let u = ok("ipc://frames?capacity=1024&slab=64MiB&pattern=spsc&policy=block");
        assert_eq!(u.params.capacity, Some(1024));
        assert_eq!(u.params.slab, Some(64 << 20));
        let u = ok("tcp://h:1?max_msg=1&timeout_ms=0&policy=drop_oldest&pattern=broadcast&slab=1024GiB&capacity=2");
        let want = Params {
            capacity: Some(2),
            slab: Some(1 << 40),
            pattern: Some(Pattern::Broadcast),
            policy: Some(Policy::DropOldest),
            timeout_ms: Some(0),
            max_msg: Some(1),
        };
        assert_eq!(u.params, want);
        assert_eq!(
            u.to_string(),
            "tcp://h:1?capacity=2&slab=1024GiB&pattern=broadcast&policy=drop_oldest&timeout_ms=0&max_msg=1"
        );
        assert_eq!(
            ok("unix://s?capacity=16777216").params.capacity,
            Some(1 << 24)
        );
        assert_eq!(
            ok("ipc://x?timeout_ms=18446744073709551615")
                .params
                .timeout_ms,
            Some(u64::MAX)
        );
        for p in Pattern::ALL {
            assert_eq!(ok(&format!("ipc://x?pattern={p}")).params.pattern, Some(p));
            assert_eq!(p.as_str().parse::<Pattern>().unwrap(), p);
        }
        for p in Policy::ALL {
            assert_eq!(ok(&format!("ipc://x?policy={p}")).params.policy, Some(p));
        }
        for t in Transport::ALL {
            assert_eq!(t.as_str().parse::<Transport>().unwrap(), t);
        }
        assert!(
            matches!("nope".parse::<Policy>(), Err(Error::InvalidUri { uri, .. }) if uri == "nope")
        );
    }

    #[rustfmt::skip]
    const SIZES: &[(&str, u64)] = &[
        ("65536", 65536), ("65536B", 65536), ("0065536", 65536), ("64K", 64 << 10),
        ("64KiB", 64 << 10), ("66KB", 66_000), ("3M", 3 << 20), ("3MiB", 3 << 20),
        ("3MB", 3_000_000), ("2G", 2 << 30), ("2GiB", 2 << 30), ("2GB", 2_000_000_000),
    ];

    #[test]
    fn sizes() {
        for &(s, n) in SIZES {
            assert_eq!(parse_size(s).unwrap(), n, "{s}");
            assert_eq!(
                ok(&format!("ipc://x?slab={s}&max_msg={s}")).params.slab,
                Some(n)
            );
        }
        assert_eq!(parse_size("0").unwrap(), 0);
        assert_eq!(parse_size(&u64::MAX.to_string()).unwrap(), u64::MAX);
        assert!(matches!(parse_size("1x"), Err(Error::InvalidUri { uri, .. }) if uri == "1x"));
        for (n, s) in [
            (0, "0"),
            (1, "1"),
            (1000, "1000"),
            (3072, "3KiB"),
            (64 << 20, "64MiB"),
        ] {
            assert_eq!(format_size(n), s);
        }
        assert_eq!(format_size(u64::MAX), u64::MAX.to_string());
        assert_eq!(format_size(1 << 63), format!("{}GiB", 1u64 << 33));
    }

    fn name() -> impl Strategy<Value = String> {
        "[A-Za-z0-9_][A-Za-z0-9._-]{0,199}"
    }

    fn target(t: Transport) -> BoxedStrategy<Target> {
        match t {
            Transport::Memory | Transport::Ipc => name().prop_map(Target::Name).boxed(),
            Transport::Unix => "/?[A-Za-z0-9._ #:@/-]{1,100}"
                .prop_map(|p| Target::Path(p.into()))
                .boxed(),
            Transport::Tcp => {
                let host = prop_oneof![
                    "[a-z_]([A-Za-z0-9_-]{0,8}[a-z0-9])?(\\.[a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?){0,3}",
                    any::<u32>().prop_map(|ip| Ipv4Addr::from(ip).to_string()),
                    any::<u128>().prop_map(|ip| Ipv6Addr::from(ip).to_string()),
                ];
                (host, 1..=u16::MAX)
                    .prop_map(|(host, port)| Target::Addr { host, port })
                    .boxed()
            }
        }
    }

    fn size_value(min: u64) -> impl Strategy<Value = u64> {
        prop_oneof![
            min..=MAX_SIZE,
            (0u32..=30).prop_flat_map(
                move |s| ((min >> s).max(1)..=(MAX_SIZE >> s)).prop_map(move |n| n << s)
            ),
        ]
    }

    fn uri() -> impl Strategy<Value = ChannelUri> {
        let params = (
            proptest::option::of((1u32..=24).prop_map(|k| 1u32 << k)),
            proptest::option::of(size_value(MIN_SLAB)),
            proptest::option::of(proptest::sample::select(Pattern::ALL.to_vec())),
            proptest::option::of(proptest::sample::select(Policy::ALL.to_vec())),
            proptest::option::of(any::<u64>()),
            proptest::option::of(size_value(1)),
        )
            .prop_map(
                |(capacity, slab, pattern, policy, timeout_ms, max_msg)| Params {
                    capacity,
                    slab,
                    pattern,
                    policy,
                    timeout_ms,
                    max_msg,
                },
            );
        let target = proptest::sample::select(Transport::ALL.to_vec())
            .prop_flat_map(|t| (Just(t), target(t)));
        (target, params).prop_map(|((transport, target), params)| ChannelUri {
            transport,
            target,
            params,
        })
    }

    fn fragments() -> impl Strategy<Value = String> {
        let pieces: Vec<&str> = "memory|ipc|unix|tcp|://|:|/|?|&|=|[|]|::1|frames|capacity|slab|pattern|policy|timeout_ms|max_msg|1024|0|-1|64|MiB|GiB|KB|99999999999999999999|spsc|drop_oldest|.|é|\0| ".split('|').collect();
        proptest::collection::vec(proptest::sample::select(pieces), 0..16).prop_map(|v| v.concat())
    }

    proptest! {
        #[test]
        fn display_round_trips(u in uri()) {
            let s = u.to_string();
            prop_assert_eq!(ChannelUri::parse(&s).map_err(|e| e.to_string()), Ok(u), "{}", s);
        }

        #[test]
        fn never_panics(s in prop_oneof![".*", fragments()]) {
            match ChannelUri::parse(&s) {
                Ok(u) => prop_assert_eq!(ChannelUri::parse(&u.to_string()).ok(), Some(u)),
                Err(Error::InvalidUri { uri, reason }) => prop_assert!(uri == s && !reason.is_empty()),
                Err(e) => prop_assert!(false, "unexpected error {e}"),
            }
            let _ = parse_size(&s);
        }
    }
}
