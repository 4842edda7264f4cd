//! Named shared-memory segments: create, open (with validation), unlink.
//!
//! A segment is one POSIX shared-memory object (`/dev/shm/psyne.<name>` on
//! Linux) in two parts: the control region (a 512-byte header, then areas
//! such as the slab metadata) and, from a page boundary, the data region
//! that holds tensor bytes. The header names every area by kind, offset and
//! size, and carries a CRC-32C of itself. `docs/layout.md` gives the bytes.
//!
//! ## Safety of shared mappings
//! Other processes map the same pages. psyne trusts them to follow its
//! protocol (only a slot's owner writes it; control words change only
//! atomically), as every shared-memory library must; what it does not trust
//! is the *state* it finds: a segment of another program, another version,
//! a truncated or damaged one is detected on open and reported as an error.
//! Truncating a segment that a process has mapped makes that process fault
//! (SIGBUS) on access, as with any mapped file: don't.

use std::fs::File;
use std::os::unix::fs::PermissionsExt;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytemuck::{Pod, Zeroable};
use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::mman::{shm_open, shm_unlink};
use nix::sys::stat::Mode;

use super::region::{Mapping, Memory};
use super::slab::{Slab, SlabConfig, PAGE_SIZE};
use crate::error::{Error, Result};
use crate::sync::Ordering;

/// The magic bytes at offset 0 of every segment.
pub const MAGIC: [u8; 8] = *b"PSYNESHM";
/// The segment layout version this build writes and reads.
pub const LAYOUT_VERSION: u32 = 2;
/// Size of the segment header in bytes.
pub const HEADER_SIZE: usize = 512;
/// Prefix of the shared-memory object names psyne creates.
pub const OBJECT_PREFIX: &str = "psyne.";
/// The longest segment name accepted.
pub const MAX_NAME_LEN: usize = 200;
const MAX_AREAS: usize = 13;
const CONTROL_AREA_ALIGN: u64 = 128;

#[cfg(target_endian = "big")]
compile_error!("psyne's segment layout is little-endian; big-endian targets are not supported");

/// Area kinds in the header's area table.
pub(crate) mod area {
    /// Slab metadata, class table and slot headers (control region).
    pub const SLAB_META: u32 = 1;
    /// Slab slot payloads (data region).
    pub const SLAB_DATA: u32 = 2;
    /// A channel: its parameters, counters, wake-up events and ring.
    pub const CHANNEL: u32 = 3;
    /// Flag bit: the area lies in the data region.
    pub const IN_DATA: u32 = 1;
}

#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
#[repr(C)]
struct AreaEntry {
    kind: u32,
    flags: u32,
    offset: u64,
    size: u64,
    _reserved: u64,
}

#[derive(Copy, Clone, Pod, Zeroable)]
#[repr(C)]
struct SegmentHeader {
    magic: [u8; 8],
    version: u32,
    header_size: u32,
    total_size: u64,
    data_offset: u64,
    data_size: u64,
    created_unix_ns: u64,
    creator_pid: u32,
    creator_uid: u32,
    mode: u32,
    area_count: u32,
    flags: u32,
    checksum: u32,
    _reserved: [u8; 24],
    areas: [AreaEntry; MAX_AREAS],
}

const _: () = assert!(std::mem::size_of::<SegmentHeader>() == HEADER_SIZE);

impl SegmentHeader {
    fn crc(&self) -> u32 {
        let mut h = *self;
        h.checksum = 0;
        crc32c::crc32c(bytemuck::bytes_of(&h))
    }

    fn areas(&self) -> &[AreaEntry] {
        &self.areas[..(self.area_count as usize).min(MAX_AREAS)]
    }

    fn find(&self, kind: u32) -> Option<&AreaEntry> {
        self.areas().iter().find(|a| a.kind == kind)
    }
}

/// How an opener maps the data region.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Default)]
pub enum DataAccess {
    /// Read and write (producers).
    #[default]
    ReadWrite,
    /// Read only (receivers that never write a slot): a stray write faults
    /// instead of corrupting a tensor another process is reading.
    ReadOnly,
}

/// Options for [`Segment::create_with`].
#[derive(Clone, Debug)]
pub struct CreateOptions {
    slab: SlabConfig,
    mode: u32,
    extra: Vec<(u32, u64)>,
}

impl CreateOptions {
    /// A segment holding a slab with `slab`'s classes, mode 0600.
    pub fn new(slab: SlabConfig) -> Self {
        CreateOptions {
            slab,
            mode: 0o600,
            extra: Vec::new(),
        }
    }

    /// The permission bits of the shared-memory object (default `0o600`:
    /// only the creating user). Use e.g. `0o660` to share with a group.
    /// The mode is set exactly, whatever the process umask.
    pub fn mode(mut self, mode: u32) -> Self {
        self.mode = mode & 0o777;
        self
    }

    /// Reserves a control area of `size` bytes of kind `kind` (rings,
    /// participant tables: used by the channel layer).
    pub(crate) fn control_area(mut self, kind: u32, size: u64) -> Self {
        self.extra.push((kind, size));
        self
    }
}

/// What a segment's header says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentInfo {
    /// The segment name (without the object prefix).
    pub name: String,
    /// Layout version.
    pub version: u32,
    /// Total bytes of the shared-memory object.
    pub total_size: u64,
    /// Bytes of control state (header and control areas), page-rounded.
    pub control_size: u64,
    /// Bytes of the data region.
    pub data_size: u64,
    /// Process id of the creator.
    pub creator_pid: u32,
    /// User id of the creator.
    pub creator_uid: u32,
    /// Permission bits the creator set.
    pub mode: u32,
    /// When it was created.
    pub created: SystemTime,
}

struct SegmentInner {
    name: String,
    header: SegmentHeader,
    mem: Arc<Memory>,
    slab: Slab,
}

/// An open shared-memory segment (or an anonymous in-process one).
///
/// Cheap to clone. Dropping the last clone unmaps it; the object itself stays
/// until [`Segment::unlink`] removes the name (mapped copies live on).
#[derive(Clone)]
pub struct Segment {
    inner: Arc<SegmentInner>,
}

impl std::fmt::Debug for Segment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Segment")
            .field("info", &self.info())
            .finish()
    }
}

/// Checks a segment name: 1 to 200 characters from `[A-Za-z0-9._-]`, not
/// starting with `.` or `-`.
///
/// # Errors
/// [`Error::InvalidName`] saying which rule the name breaks.
pub fn validate_name(name: &str) -> Result<()> {
    let reason = if name.is_empty() {
        Some("the name is empty")
    } else if name.len() > MAX_NAME_LEN {
        Some("the name is longer than 200 bytes")
    } else if name.contains('/') {
        Some("the name contains '/'")
    } else if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    {
        Some("only ASCII letters, digits, '.', '_' and '-' are allowed")
    } else if name.starts_with(['.', '-']) {
        Some("the name must not start with '.' or '-'")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(Error::InvalidName {
            name: name.to_string(),
            reason,
        }),
        None => Ok(()),
    }
}

fn object_name(name: &str) -> String {
    format!("/{OBJECT_PREFIX}{name}")
}

fn page_round(n: u64) -> u64 {
    n.next_multiple_of(PAGE_SIZE)
}

/// The header (magic still zero) and the slab area offset for `opts`.
fn plan(opts: &CreateOptions) -> Result<(SegmentHeader, usize)> {
    let slab_control = opts.slab.control_bytes()?;
    let slab_data = opts.slab.data_bytes()?;
    if opts.extra.len() + 2 > MAX_AREAS {
        return Err(Error::InvalidConfig(format!(
            "at most {} extra areas",
            MAX_AREAS - 2
        )));
    }
    let mut h = SegmentHeader::zeroed();
    let mut at = HEADER_SIZE as u64;
    let mut areas = vec![(area::SLAB_META, slab_control)];
    areas.extend(opts.extra.iter().copied());
    for (i, &(kind, size)) in areas.iter().enumerate() {
        at = at.next_multiple_of(CONTROL_AREA_ALIGN);
        h.areas[i] = AreaEntry {
            kind,
            flags: 0,
            offset: at,
            size,
            _reserved: 0,
        };
        at = at
            .checked_add(size)
            .ok_or_else(|| Error::InvalidConfig("control areas overflow".into()))?;
    }
    let data_offset = page_round(at);
    h.areas[areas.len()] = AreaEntry {
        kind: area::SLAB_DATA,
        flags: area::IN_DATA,
        offset: data_offset,
        size: slab_data,
        _reserved: 0,
    };
    h.area_count = areas.len() as u32 + 1;
    h.version = LAYOUT_VERSION;
    h.header_size = HEADER_SIZE as u32;
    h.data_offset = data_offset;
    h.data_size = slab_data;
    h.total_size = data_offset
        .checked_add(slab_data)
        .ok_or_else(|| Error::InvalidConfig("segment size overflows".into()))?;
    h.created_unix_ns = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    h.creator_pid = std::process::id();
    h.creator_uid = nix::unistd::geteuid().as_raw();
    h.mode = opts.mode;
    Ok((h, h.areas[0].offset as usize))
}

/// Checks everything a header claims against itself and the object's size.
fn validate(name: &str, h: &SegmentHeader, file_size: u64) -> Result<()> {
    if h.magic != MAGIC {
        return Err(Error::ForeignSegment {
            name: name.into(),
            found: h.magic,
        });
    }
    if h.version != LAYOUT_VERSION {
        return Err(Error::VersionMismatch {
            name: name.into(),
            found: h.version,
            expected: LAYOUT_VERSION,
        });
    }
    if h.crc() != h.checksum {
        return Err(Error::CorruptHeader {
            name: name.into(),
            reason: format!(
                "checksum is {:#010x}, the fields give {:#010x}",
                h.checksum,
                h.crc()
            ),
        });
    }
    let bad = |reason: String| {
        Err(Error::InvalidLayout {
            name: name.into(),
            reason,
        })
    };
    if h.header_size as usize != HEADER_SIZE {
        return bad(format!(
            "header size {} (expected {HEADER_SIZE})",
            h.header_size
        ));
    }
    if file_size < h.total_size {
        return Err(Error::Truncated {
            name: name.into(),
            expected: h.total_size,
            actual: file_size,
        });
    }
    if file_size > h.total_size {
        return bad(format!(
            "the object has {file_size} bytes, the header says {}",
            h.total_size
        ));
    }
    if h.data_offset % PAGE_SIZE != 0
        || h.data_offset < HEADER_SIZE as u64
        || h.data_offset > h.total_size
    {
        return bad(format!(
            "data region offset {} is not a page boundary inside the segment",
            h.data_offset
        ));
    }
    if h.data_offset.checked_add(h.data_size) != Some(h.total_size) {
        return bad(format!(
            "data region [{}, +{}) does not end at the segment's end {}",
            h.data_offset, h.data_size, h.total_size
        ));
    }
    if h.area_count as usize > MAX_AREAS || h.area_count == 0 {
        return bad(format!("{} areas (1..={MAX_AREAS} allowed)", h.area_count));
    }
    let mut spans: Vec<(u64, u64)> = Vec::new();
    for (i, a) in h.areas().iter().enumerate() {
        let end = a.offset.checked_add(a.size);
        let in_data = a.flags & area::IN_DATA != 0;
        let (lo, hi, align) = if in_data {
            (h.data_offset, h.total_size, PAGE_SIZE)
        } else {
            (HEADER_SIZE as u64, h.data_offset, CONTROL_AREA_ALIGN)
        };
        if a.kind == 0 || a.offset < lo || end.is_none_or(|e| e > hi) || a.offset % align != 0 {
            return bad(format!(
                "area {i} (kind {}) at [{}, +{}) lies outside its region [{lo}, {hi}) or is misaligned",
                a.kind, a.offset, a.size
            ));
        }
        spans.push((a.offset, a.offset + a.size));
    }
    spans.sort_unstable();
    if spans.windows(2).any(|w| w[0].1 > w[1].0) {
        return bad("two areas overlap".into());
    }
    for (kind, in_data) in [(area::SLAB_META, false), (area::SLAB_DATA, true)] {
        let mut found = h.areas().iter().filter(|a| a.kind == kind);
        match (found.next(), found.next()) {
            (Some(a), None) if (a.flags & area::IN_DATA != 0) == in_data => {}
            (Some(_), None) => {
                return bad(format!(
                    "the area of kind {kind} is flagged for the wrong region"
                ))
            }
            _ => return bad(format!("there must be exactly one area of kind {kind}")),
        }
    }
    if h.find(area::SLAB_DATA)
        .is_some_and(|a| a.offset != h.data_offset)
    {
        return bad("the slab data area must start the data region".into());
    }
    Ok(())
}

/// Maps the control region read-write and the data region as asked.
fn map_regions(file: &File, h: &SegmentHeader, data_writable: bool) -> Result<Arc<Memory>> {
    let alias_source = if data_writable {
        None
    } else {
        let dup = file
            .try_clone()
            .map_err(|e| Error::io("duplicating the segment's descriptor failed", e))?;
        Some((dup, h.data_offset))
    };
    Ok(Arc::new(Memory {
        control: Mapping::map_file(file, 0, h.data_offset as usize, true)?,
        data: Mapping::map_file(file, h.data_offset, h.data_size as usize, data_writable)?,
        alias_source,
    }))
}

fn open_error(name: &str, what: &str, e: Errno) -> Error {
    match e {
        Errno::EEXIST => Error::AlreadyExists { name: name.into() },
        Errno::ENOENT => Error::NotFound { name: name.into() },
        Errno::EACCES | Errno::EPERM => Error::PermissionDenied { name: name.into() },
        e => Error::io(format!("{what} segment {name:?}"), std::io::Error::from(e)),
    }
}

impl Segment {
    /// Creates the segment `name` with a slab of `slab`'s classes, mode 0600.
    ///
    /// # Errors
    /// [`Error::InvalidName`], [`Error::AlreadyExists`],
    /// [`Error::InvalidConfig`], or an [`Error::Io`] from the system.
    pub fn create(name: &str, slab: &SlabConfig) -> Result<Segment> {
        Segment::create_with(name, &CreateOptions::new(slab.clone()))
    }

    /// Creates the segment `name` with `opts`.
    ///
    /// The header is published last (its magic is stored with release
    /// ordering), so a concurrent [`Segment::open`] sees either
    /// [`Error::Uninitialized`] or a complete segment.
    ///
    /// # Errors
    /// As [`Segment::create`].
    pub fn create_with(name: &str, opts: &CreateOptions) -> Result<Segment> {
        validate_name(name)?;
        let (header, slab_area) = plan(opts)?;
        let fd = shm_open(
            object_name(name).as_str(),
            OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_RDWR,
            Mode::from_bits_truncate(opts.mode),
        )
        .map_err(|e| open_error(name, "creating", e))?;
        let file = File::from(fd);
        // From here on, a failure removes the half-made object.
        let result = (|| {
            file.set_permissions(std::fs::Permissions::from_mode(opts.mode))
                .map_err(|e| Error::io(format!("setting the mode of segment {name:?}"), e))?;
            file.set_len(header.total_size).map_err(|e| {
                Error::io(
                    format!("sizing segment {name:?} to {} bytes", header.total_size),
                    e,
                )
            })?;
            let mem = map_regions(&file, &header, true)?;
            Segment::format(name, mem, header, slab_area, opts)
        })();
        if result.is_err() {
            let _ = shm_unlink(object_name(name).as_str());
        }
        result
    }

    /// An anonymous segment in this process's private memory (an anonymous
    /// mapping; a heap block under Miri), with the same layout and
    /// allocator, for in-process use (and for tests that cannot create
    /// shared memory, such as under Miri). Pages cost nothing until used.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for an impossible configuration.
    pub fn anonymous(slab: &SlabConfig) -> Result<Segment> {
        Segment::anonymous_with(&CreateOptions::new(slab.clone()))
    }

    /// An anonymous segment with `opts` (its mode is ignored).
    pub(crate) fn anonymous_with(opts: &CreateOptions) -> Result<Segment> {
        let (header, slab_area) = plan(opts)?;
        let mem = Arc::new(Memory {
            control: Mapping::heap(header.data_offset as usize)?,
            data: Mapping::heap(header.data_size as usize)?,
            alias_source: None,
        });
        Segment::format("(anonymous)", mem, header, slab_area, opts)
    }

    fn format(
        name: &str,
        mem: Arc<Memory>,
        mut header: SegmentHeader,
        slab_area: usize,
        opts: &CreateOptions,
    ) -> Result<Segment> {
        let slab = Slab::format(mem.clone(), slab_area, &opts.slab)?;
        header.magic = MAGIC;
        header.checksum = header.crc();
        let mut unpublished = header;
        unpublished.magic = [0; 8];
        // SAFETY: nobody reads the header before the magic is published below.
        unsafe { mem.control.ptr::<SegmentHeader>(0).write(unpublished) };
        // SAFETY: offset 0 is 8-aligned and in bounds; AtomicU64 is valid for
        // any bits.
        let magic: &AtomicU64 = unsafe { mem.control.at(0) };
        // Release: pairs with the Acquire load in `read_header`: an opener that
        // sees the magic sees the whole header and the formatted slab.
        magic.store(u64::from_le_bytes(MAGIC), Ordering::Release);
        Ok(Segment {
            inner: Arc::new(SegmentInner {
                name: name.to_string(),
                header,
                mem,
                slab,
            }),
        })
    }

    /// Opens the existing segment `name`, data region read-write.
    ///
    /// # Errors
    /// [`Error::NotFound`], [`Error::PermissionDenied`],
    /// [`Error::Uninitialized`] (its creator is not done yet),
    /// [`Error::ForeignSegment`], [`Error::Truncated`],
    /// [`Error::VersionMismatch`], [`Error::CorruptHeader`],
    /// [`Error::InvalidLayout`], or an [`Error::Io`].
    pub fn open(name: &str) -> Result<Segment> {
        Segment::open_with(name, DataAccess::ReadWrite)
    }

    /// Opens the existing segment `name`, mapping its data region as `access`
    /// says.
    ///
    /// # Errors
    /// As [`Segment::open`].
    pub fn open_with(name: &str, access: DataAccess) -> Result<Segment> {
        validate_name(name)?;
        let fd = shm_open(object_name(name).as_str(), OFlag::O_RDWR, Mode::empty())
            .map_err(|e| open_error(name, "opening", e))?;
        let file = File::from(fd);
        let size = file
            .metadata()
            .map_err(|e| Error::io(format!("reading the size of segment {name:?}"), e))?
            .len();
        if size == 0 {
            return Err(Error::Uninitialized { name: name.into() });
        }
        // First look at the header alone: the size in it says how much to map.
        let first = Mapping::map_file(&file, 0, (size as usize).min(PAGE_SIZE as usize), true)?;
        let header = Segment::read_header(name, &first, size)?;
        drop(first);
        let mem = map_regions(&file, &header, access == DataAccess::ReadWrite)?;
        Segment::attach(name, mem, header)
    }

    /// Reads and validates the header at the start of `map`.
    fn read_header(name: &str, map: &Mapping, file_size: u64) -> Result<SegmentHeader> {
        if map.len() < 8 {
            // SAFETY: header bytes are written once, before publication.
            let b = unsafe { map.bytes(0, map.len()) };
            let mut found = [0u8; 8];
            found[..b.len()].copy_from_slice(b);
            return Err(if found == [0; 8] {
                Error::Uninitialized { name: name.into() }
            } else {
                Error::ForeignSegment {
                    name: name.into(),
                    found,
                }
            });
        }
        // SAFETY: 8-aligned, in bounds, valid for any bits.
        let magic: &AtomicU64 = unsafe { map.at(0) };
        // Acquire: pairs with the Release store in `format`.
        let word = magic.load(Ordering::Acquire);
        if word == 0 {
            return Err(Error::Uninitialized { name: name.into() });
        }
        if word.to_le_bytes() != MAGIC {
            return Err(Error::ForeignSegment {
                name: name.into(),
                found: word.to_le_bytes(),
            });
        }
        if map.len() < HEADER_SIZE {
            return Err(Error::Truncated {
                name: name.into(),
                expected: HEADER_SIZE as u64,
                actual: file_size,
            });
        }
        // SAFETY: the header is immutable once published (magic seen above).
        let header: SegmentHeader =
            bytemuck::pod_read_unaligned(unsafe { map.bytes(0, HEADER_SIZE) });
        validate(name, &header, file_size)?;
        Ok(header)
    }

    fn attach(name: &str, mem: Arc<Memory>, header: SegmentHeader) -> Result<Segment> {
        let meta = header.find(area::SLAB_META).expect("validated");
        let data = header.find(area::SLAB_DATA).expect("validated");
        let slab = Slab::attach(
            mem.clone(),
            meta.offset as usize,
            meta.size as usize,
            data.size,
            name,
        )?;
        Ok(Segment {
            inner: Arc::new(SegmentInner {
                name: name.to_string(),
                header,
                mem,
                slab,
            }),
        })
    }

    /// Removes the name `name`. Processes that have it open keep their
    /// mappings; new opens fail with [`Error::NotFound`].
    ///
    /// # Errors
    /// [`Error::InvalidName`], [`Error::NotFound`],
    /// [`Error::PermissionDenied`], or an [`Error::Io`].
    pub fn unlink(name: &str) -> Result<()> {
        validate_name(name)?;
        shm_unlink(object_name(name).as_str()).map_err(|e| open_error(name, "unlinking", e))
    }

    /// Whether a segment called `name` exists (whatever its state).
    pub fn exists(name: &str) -> bool {
        validate_name(name).is_ok()
            && std::path::Path::new("/dev/shm")
                .join(format!("{OBJECT_PREFIX}{name}"))
                .exists()
    }

    /// Names of the psyne segments on this machine (Linux: from `/dev/shm`).
    ///
    /// # Errors
    /// An [`Error::Io`] if the directory cannot be read.
    pub fn list() -> Result<Vec<String>> {
        let dir = std::fs::read_dir("/dev/shm").map_err(|e| Error::io("listing /dev/shm", e))?;
        let mut names: Vec<String> = dir
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                e.file_name()
                    .to_str()?
                    .strip_prefix(OBJECT_PREFIX)
                    .map(str::to_string)
            })
            .collect();
        names.sort();
        Ok(names)
    }

    /// The segment's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// What the header says.
    pub fn info(&self) -> SegmentInfo {
        let h = &self.inner.header;
        SegmentInfo {
            name: self.inner.name.clone(),
            version: h.version,
            total_size: h.total_size,
            control_size: h.data_offset,
            data_size: h.data_size,
            creator_pid: h.creator_pid,
            creator_uid: h.creator_uid,
            mode: h.mode,
            created: UNIX_EPOCH + Duration::from_nanos(h.created_unix_ns),
        }
    }

    /// The offset and size of the first area of `kind`, if any.
    pub(crate) fn area(&self, kind: u32) -> Option<(usize, usize)> {
        self.inner
            .header
            .find(kind)
            .map(|a| (a.offset as usize, a.size as usize))
    }

    /// The control region's mapping.
    pub(crate) fn control(&self) -> &Mapping {
        &self.inner.mem.control
    }

    /// The slab allocator of this segment.
    pub fn slab(&self) -> &Slab {
        &self.inner.slab
    }

    /// Whether the data region is mapped writable.
    pub fn data_writable(&self) -> bool {
        self.inner.mem.data.writable()
    }

    /// The segment's mappings.
    #[cfg(test)]
    pub(crate) fn memory(&self) -> &Memory {
        &self.inner.mem
    }
}
