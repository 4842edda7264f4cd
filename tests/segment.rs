//! Named shared-memory segments: round trips, permissions, every kind of bad
//! segment file, read-only receivers, and a tensor handed between two real
//! processes.
//!
//! Child processes are this same test binary, re-run with `PSYNE_TEST_ROLE`
//! set: the `child_entry` test does the child's part and the other tests
//! skip themselves in the child.

use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use psyne::{
    CreateOptions, DType, DataAccess, Error, Handle, QuantKind, Segment, Shape, SlabConfig,
};

const ROLE: &str = "PSYNE_TEST_ROLE";
const SEG: &str = "PSYNE_TEST_SEGMENT";

/// Unlinks the segment when the test ends, pass or fail.
struct Name(String);

impl Name {
    fn new(tag: &str) -> Self {
        Name(format!("test-{tag}-{}", std::process::id()))
    }
}

impl Drop for Name {
    fn drop(&mut self) {
        let _ = Segment::unlink(&self.0);
    }
}

fn in_child() -> bool {
    std::env::var_os(ROLE).is_some()
}

fn path(name: &str) -> PathBuf {
    PathBuf::from(format!("/dev/shm/psyne.{name}"))
}

fn cfg() -> SlabConfig {
    SlabConfig::new().class(4096, 8).class(1 << 20, 4)
}

fn value(i: usize) -> f32 {
    (i as f32 * 0.37).sin() * 1000.0 + i as f32
}

/// The child side of the multi-process tests.
#[test]
fn child_entry() {
    let Ok(role) = std::env::var(ROLE) else {
        return;
    };
    let name = std::env::var(SEG).unwrap();
    match role.as_str() {
        "producer" => {
            let seg = Segment::create(&name, &cfg()).unwrap();
            let slab = seg.slab();
            let shape = Shape::matrix(256, 1000).unwrap();
            let mut s = slab.alloc_tensor::<f32>(&shape).unwrap();
            for (i, x) in s.tensor_mut::<f32>().unwrap().iter_mut().enumerate() {
                *x = value(i);
            }
            s.set_seq(1);
            let mut m = slab
                .alloc_tensor::<f64>(&Shape::matrix(3, 7).unwrap())
                .unwrap();
            for (i, x) in m.tensor_mut::<f64>().unwrap().iter_mut().enumerate() {
                *x = i as f64 / 3.0;
            }
            let mut q = slab.alloc(4096).unwrap();
            let data: Vec<f32> = (0..1000).map(value).collect();
            q.write_quantized(&data, &Shape::vector(1000), QuantKind::Q8Block)
                .unwrap();
            // The handles carry the references: the slots outlive this process.
            println!("{}", s.into_handle());
            println!("{}", m.into_handle());
            println!("{}", q.into_handle());
        }
        "open" => match Segment::open(&name) {
            Ok(_) => println!("opened"),
            Err(Error::PermissionDenied { .. }) => println!("permission-denied"),
            Err(e) => println!("other: {e}"),
        },
        "storm" => storm(&Segment::open(&name).unwrap(), 4_000),
        // Stops (until killed) inside an allocation, between clearing a
        // slot's free bit and claiming the slot.
        "park-in-alloc" => {
            let seg = Segment::open(&name).unwrap();
            psyne::shm::hook::arm(psyne::shm::hook::Point::AllocAfterTake, park);
            let _ = seg.slab().alloc(100);
            println!("allocated without stopping");
        }
        // Stops (until killed) inside a free, between freeing a slot's
        // state and setting its free bit.
        "park-in-free" => {
            let seg = Segment::open(&name).unwrap();
            let s = seg.slab().alloc(100).unwrap();
            psyne::shm::hook::arm(psyne::shm::hook::Point::FreeBeforeBit, park);
            drop(s);
            println!("freed without stopping");
        }
        r => panic!("unknown role {r}"),
    }
}

/// Tells the parent where we are, then waits to be killed.
fn park() {
    println!("parked");
    std::io::stdout().flush().unwrap();
    loop {
        std::thread::sleep(std::time::Duration::from_secs(60));
    }
}

/// Allocates and frees slots of mixed sizes, writing a mark unique to this
/// process and round into each and checking that nobody else wrote it.
fn storm(seg: &Segment, rounds: u32) {
    let me = std::process::id();
    let mut owned = 0;
    for r in 0..rounds {
        let size = [100u64, 4096, 5000, 60_000][r as usize % 4];
        let mut s = match seg.slab().alloc(size) {
            Ok(s) => s,
            Err(Error::SlabFull { .. }) => continue,
            Err(e) => panic!("alloc failed: {e}"),
        };
        owned += 1;
        let mark = me.wrapping_mul(2_654_435_761).wrapping_add(r).to_le_bytes();
        for chunk in s.bytes_mut().chunks_exact_mut(4) {
            chunk.copy_from_slice(&mark);
        }
        std::thread::yield_now();
        assert!(
            s.bytes().chunks_exact(4).all(|c| c == mark),
            "another process wrote a slot this one owned"
        );
    }
    assert!(
        owned > rounds / 4,
        "only {owned} of {rounds} allocations succeeded"
    );
}

fn child(role: &str, name: &str) -> Command {
    let mut c = Command::new(std::env::current_exe().unwrap());
    c.args(["--exact", "child_entry", "--nocapture", "--test-threads=1"])
        .env(ROLE, role)
        .env(SEG, name)
        .stdout(Stdio::piped());
    c
}

#[test]
fn tensor_written_by_a_child_process_is_read_in_place_by_the_parent() {
    if in_child() {
        return;
    }
    let name = Name::new("xproc");
    let out = child("producer", &name.0).output().unwrap();
    assert!(
        out.status.success(),
        "child failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let handles: Vec<Handle> = stdout
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    assert_eq!(handles.len(), 3, "child printed: {stdout}");

    let seg = Segment::open(&name.0).unwrap();
    let info = seg.info();
    assert_ne!(info.creator_pid, std::process::id());
    assert_eq!(seg.slab().used_slots(), 3);

    let t = seg.slab().take(handles[0]).unwrap();
    let v = t.tensor::<f32>().unwrap();
    assert_eq!(v.shape().dims(), [256, 1000]);
    for (i, &x) in v.iter().enumerate() {
        assert_eq!(x, value(i), "element {i}");
    }
    assert_eq!(t.meta().unwrap().seq, 1);

    let m = seg.slab().take(handles[1]).unwrap();
    let mt = psyne::DoubleMatrix::try_from(m.tensor::<f64>().unwrap()).unwrap();
    assert_eq!(mt.row(2).unwrap()[6], 20.0 / 3.0);

    let q = seg.slab().take(handles[2]).unwrap();
    let qt = q.quantized().unwrap();
    assert_eq!(qt.dtype(), DType::Q8Block);
    let back = qt.dequantize().unwrap();
    let worst = (0..1000)
        .map(|i| (back[i] - value(i)).abs())
        .fold(0.0, f32::max);
    assert!(worst < 1100.0 / 127.0, "worst error {worst}");

    drop((t, m, q));
    assert_eq!(
        seg.slab().used_slots(),
        0,
        "dropping the views freed the slots"
    );
    // A handle used up is stale now.
    assert!(matches!(
        seg.slab().take(handles[0]),
        Err(Error::StaleHandle { .. })
    ));
}

#[test]
fn processes_allocating_at_once_never_share_a_slot() {
    if in_child() {
        return;
    }
    let name = Name::new("storm");
    let seg = Segment::create(&name.0, &cfg()).unwrap();
    let kids: Vec<_> = (0..3)
        .map(|_| child("storm", &name.0).spawn().unwrap())
        .collect();
    storm(&seg, 4_000);
    for k in kids {
        let out = k.wait_with_output().unwrap();
        assert!(out.status.success(), "a child failed");
    }
    assert_eq!(seg.slab().used_slots(), 0);
    let stats = seg.slab().stats();
    assert!(stats.iter().map(|c| c.allocs).sum::<u64>() > 4_000);
}

#[test]
fn create_open_mode_and_lifecycle() {
    if in_child() {
        return;
    }
    let name = Name::new("life");
    let seg = Segment::create(&name.0, &cfg()).unwrap();
    let mode = std::fs::metadata(path(&name.0))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    assert!(Segment::exists(&name.0));
    assert!(Segment::list().unwrap().contains(&name.0));
    assert!(matches!(
        Segment::create(&name.0, &cfg()),
        Err(Error::AlreadyExists { .. })
    ));

    let peer = Segment::open(&name.0).unwrap();
    assert_eq!(peer.info(), seg.info());
    assert_eq!(peer.info().data_size % 4096, 0);
    let mut s = seg.slab().alloc(10).unwrap();
    s.bytes_mut().copy_from_slice(b"0123456789");
    let h = s.into_handle();
    assert_eq!(peer.slab().take(h).unwrap().bytes(), b"0123456789");

    Segment::unlink(&name.0).unwrap();
    assert!(!Segment::exists(&name.0));
    assert!(matches!(
        Segment::open(&name.0),
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        Segment::unlink(&name.0),
        Err(Error::NotFound { .. })
    ));
    // Mapped copies live on after unlink.
    assert_eq!(seg.slab().used_slots(), 0);

    let grp = Name::new("grp");
    let _g = Segment::create_with(&grp.0, &CreateOptions::new(cfg()).mode(0o640)).unwrap();
    let mode = std::fs::metadata(path(&grp.0))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o640);
}

#[test]
fn names_are_validated() {
    for bad in ["", "a/b", ".hidden", "-x", "sp ace", "é", &"x".repeat(201)] {
        assert!(
            matches!(Segment::create(bad, &cfg()), Err(Error::InvalidName { .. })),
            "{bad:?} accepted"
        );
        assert!(matches!(Segment::open(bad), Err(Error::InvalidName { .. })));
    }
}

/// Writes `bytes` at `offset` of the segment's backing file.
fn patch(name: &str, offset: u64, bytes: &[u8]) {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(path(name))
        .unwrap();
    f.seek(SeekFrom::Start(offset)).unwrap();
    f.write_all(bytes).unwrap();
}

fn read_header(name: &str) -> Vec<u8> {
    let mut f = std::fs::File::open(path(name)).unwrap();
    let mut h = vec![0u8; 512];
    f.read_exact(&mut h).unwrap();
    h
}

/// Recomputes the header checksum (offset 68, over 512 bytes with it zeroed).
fn fix_crc(name: &str) {
    let mut h = read_header(name);
    h[68..72].fill(0);
    let crc = crc32c::crc32c(&h);
    patch(name, 68, &crc.to_le_bytes());
}

/// Recomputes the slab configuration checksum (slab metadata at `area`: 128
/// bytes with the crc at 12 zeroed, then the first 64 bytes of each class
/// record; class records are 128 bytes from `area + 128`).
fn fix_slab_crc(name: &str, area: u64) {
    let mut f = std::fs::File::open(path(name)).unwrap();
    f.seek(SeekFrom::Start(area)).unwrap();
    let mut meta = vec![0u8; 128];
    f.read_exact(&mut meta).unwrap();
    meta[12..16].fill(0);
    let classes = u32::from_le_bytes(meta[4..8].try_into().unwrap()) as u64;
    let mut crc = crc32c::crc32c(&meta);
    for i in 0..classes {
        let mut d = vec![0u8; 64];
        f.seek(SeekFrom::Start(area + 128 + i * 128)).unwrap();
        f.read_exact(&mut d).unwrap();
        crc = crc32c::crc32c_append(crc, &d);
    }
    patch(name, area + 12, &crc.to_le_bytes());
}

#[test]
fn every_bad_segment_gives_its_own_error() {
    if in_child() {
        return;
    }
    let mk = |tag: &str| {
        let n = Name::new(tag);
        drop(Segment::create(&n.0, &cfg()).unwrap());
        n
    };

    // Not a psyne segment at all.
    let foreign = Name::new("foreign");
    std::fs::write(path(&foreign.0), b"GIF89a this is an image, not a segment").unwrap();
    assert!(matches!(
        Segment::open(&foreign.0),
        Err(Error::ForeignSegment { found, .. }) if &found == b"GIF89a t"
    ));

    // Created but empty (a creator that has not sized it yet).
    let empty = Name::new("empty");
    std::fs::write(path(&empty.0), b"").unwrap();
    assert!(matches!(
        Segment::open(&empty.0),
        Err(Error::Uninitialized { .. })
    ));

    // Truncated after creation.
    let trunc = mk("trunc");
    std::fs::OpenOptions::new()
        .write(true)
        .open(path(&trunc.0))
        .unwrap()
        .set_len(8192)
        .unwrap();
    assert!(matches!(
        Segment::open(&trunc.0),
        Err(Error::Truncated { actual: 8192, .. })
    ));
    // Truncated inside the header.
    std::fs::OpenOptions::new()
        .write(true)
        .open(path(&trunc.0))
        .unwrap()
        .set_len(100)
        .unwrap();
    assert!(matches!(
        Segment::open(&trunc.0),
        Err(Error::Truncated { expected: 512, .. })
    ));

    // Another layout version.
    let ver = mk("ver");
    patch(&ver.0, 8, &7u32.to_le_bytes());
    assert!(matches!(
        Segment::open(&ver.0),
        Err(Error::VersionMismatch {
            found: 7,
            expected: psyne::shm::LAYOUT_VERSION,
            ..
        })
    ));

    // A flipped bit in the header.
    let crc = mk("crc");
    let h = read_header(&crc.0);
    patch(&crc.0, 40, &[h[40] ^ 0x10]);
    assert!(matches!(
        Segment::open(&crc.0),
        Err(Error::CorruptHeader { .. })
    ));

    // Valid checksum, impossible offsets: the slab area moved past the data
    // region start (area 0 is at 96; its offset field at 104).
    let off = mk("offset");
    patch(&off.0, 104, &(1u64 << 40).to_le_bytes());
    fix_crc(&off.0);
    assert!(matches!(
        Segment::open(&off.0),
        Err(Error::InvalidLayout { .. })
    ));
    // A data region that does not start on a page.
    let off2 = mk("offset2");
    patch(&off2.0, 24, &4000u64.to_le_bytes());
    fix_crc(&off2.0);
    assert!(matches!(
        Segment::open(&off2.0),
        Err(Error::InvalidLayout { .. })
    ));

    // The slab metadata area flagged as lying in the data region (area 0's
    // flags at 100).
    let flags = mk("flags");
    patch(&flags.0, 100, &1u32.to_le_bytes());
    fix_crc(&flags.0);
    assert!(matches!(
        Segment::open(&flags.0),
        Err(Error::InvalidLayout { .. })
    ));
    // A data size that overflows when added to the data offset.
    let huge = mk("huge");
    patch(&huge.0, 32, &(u64::MAX - 100).to_le_bytes());
    fix_crc(&huge.0);
    assert!(matches!(
        Segment::open(&huge.0),
        Err(Error::InvalidLayout { .. })
    ));

    // Slab class table with valid checksums but misaligned slot headers:
    // room is made after the headers (slab area size at 112 in the header,
    // slab control size at area + 24), then the last class's headers
    // (class 1's record at area + 256, headers offset at +24) move by 4.
    let hdrs = mk("slabhdrs");
    let h = read_header(&hdrs.0);
    let area0 = u64::from_le_bytes(h[104..112].try_into().unwrap());
    let read_u64 = |at: u64| {
        let mut f = std::fs::File::open(path(&hdrs.0)).unwrap();
        f.seek(SeekFrom::Start(at)).unwrap();
        let mut b = [0u8; 8];
        f.read_exact(&mut b).unwrap();
        u64::from_le_bytes(b)
    };
    patch(&hdrs.0, 112, &(read_u64(112) + 256).to_le_bytes());
    fix_crc(&hdrs.0);
    patch(
        &hdrs.0,
        area0 + 24,
        &(read_u64(area0 + 24) + 256).to_le_bytes(),
    );
    patch(
        &hdrs.0,
        area0 + 256 + 24,
        &(read_u64(area0 + 256 + 24) + 4).to_le_bytes(),
    );
    fix_slab_crc(&hdrs.0, area0);
    assert!(matches!(
        Segment::open(&hdrs.0),
        Err(Error::InvalidLayout { reason, .. }) if reason.contains("misaligned")
    ));

    // Classes out of size order (class 1's slot size, at area + 256, made
    // equal to class 0's): the allocator's fallback relies on the order.
    let order = mk("order");
    let area0 = u64::from_le_bytes(read_header(&order.0)[104..112].try_into().unwrap());
    patch(&order.0, area0 + 256, &4096u64.to_le_bytes());
    fix_slab_crc(&order.0, area0);
    assert!(matches!(
        Segment::open(&order.0),
        Err(Error::InvalidLayout { reason, .. }) if reason.contains("not larger")
    ));

    // Damaged slab metadata (class table checksum) behind a valid header.
    let slab = mk("slabmeta");
    let h = read_header(&slab.0);
    let area0 = u64::from_le_bytes(h[104..112].try_into().unwrap());
    patch(&slab.0, area0 + 128, &12345u64.to_le_bytes()); // class 0 slot size
    assert!(matches!(
        Segment::open(&slab.0),
        Err(Error::CorruptHeader { .. })
    ));

    // A file larger than its header says.
    let big = mk("big");
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(path(&big.0))
        .unwrap();
    let len = f.metadata().unwrap().len();
    f.set_len(len + 4096).unwrap();
    assert!(matches!(
        Segment::open(&big.0),
        Err(Error::InvalidLayout { .. })
    ));
}

#[test]
fn read_only_receiver_reads_but_cannot_write() {
    if in_child() {
        return;
    }
    let name = Name::new("ro");
    let seg = Segment::create(&name.0, &cfg()).unwrap();
    let mut s = seg.slab().alloc_tensor::<u8>(&Shape::vector(3)).unwrap();
    s.tensor_mut::<u8>()
        .unwrap()
        .copy_from_slice(&[7, 8, 9])
        .unwrap();
    let h = s.into_handle();

    let rx = Segment::open_with(&name.0, DataAccess::ReadOnly).unwrap();
    assert!(!rx.data_writable());
    assert!(matches!(rx.slab().alloc(1), Err(Error::ReadOnly)));
    let view = rx.slab().take(h).unwrap();
    assert_eq!(&*view.tensor::<u8>().unwrap(), &[7, 8, 9]);
    drop(view); // a read-only receiver can still release the slot
    assert_eq!(seg.slab().used_slots(), 0);
}

#[test]
fn oversize_allocation_is_an_error() {
    if in_child() {
        return;
    }
    let name = Name::new("big-alloc");
    let seg = Segment::create(&name.0, &cfg()).unwrap();
    let shape = Shape::matrix(1024, 1024).unwrap(); // 4 MiB of f32 > 1 MiB slots
    assert!(matches!(
        seg.slab().alloc_tensor::<f32>(&shape),
        Err(Error::TooLarge {
            requested: 4194304,
            max: 1048576
        })
    ));
    assert_eq!(seg.slab().used_slots(), 0);
}

#[test]
fn another_users_segment_cannot_be_opened() {
    if in_child() {
        return;
    }
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root to run a child as another user");
        return;
    }
    let name = Name::new("perm");
    let _seg = Segment::create(&name.0, &cfg()).unwrap();
    let mut c = child("open", &name.0);
    c.uid(65534).gid(65534);
    let out = match c.output() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("skipped: cannot run the test binary as nobody ({e})");
            return;
        }
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() && !stdout.contains("permission") {
        eprintln!(
            "skipped: the child could not run as nobody: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        return;
    }
    assert!(stdout.contains("permission-denied"), "child said: {stdout}");
}

/// The numbers in the `"values": [...]` list of the reader's JSON output.
fn json_values(json: &str) -> Vec<f64> {
    let start = json.find("\"values\": [").expect("values key") + 11;
    let end = start + json[start..].find(']').expect("end of values");
    json[start..end]
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| s.trim().parse().expect("a number"))
        .collect()
}

#[test]
fn python_reader_written_from_the_layout_doc_reads_our_tensors() {
    if in_child() {
        return;
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tools/read_segment.py");
    if Command::new("python3").arg("--version").output().is_err() {
        eprintln!("skipped: python3 is not installed");
        return;
    }
    let name = Name::new("py");
    let seg = Segment::create(&name.0, &cfg()).unwrap();
    let data: Vec<f32> = (0..300).map(value).collect();
    let shape = Shape::matrix(20, 15).unwrap();
    let mut s = seg.slab().alloc_tensor::<f32>(&shape).unwrap();
    s.tensor_mut::<f32>()
        .unwrap()
        .copy_from_slice(&data)
        .unwrap();
    s.set_type_tag(5);
    let plain = s.into_handle();
    let mut q = seg.slab().alloc(4096).unwrap();
    q.write_quantized(&data, &shape, QuantKind::QInt8PerChannel { axis: 1 })
        .unwrap();
    let quant = q.into_handle();

    let run = |h: &Handle| {
        let out = Command::new("python3")
            .args([script, &name.0, &h.to_string()])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "reader failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let json = run(&plain);
    assert!(json.contains("\"dtype\": \"f32\""), "{json}");
    assert!(json.contains("\"shape\": [20, 15]"), "{json}");
    assert!(json.contains("\"type_tag\": 5"), "{json}");
    let got = json_values(&json);
    assert_eq!(got, data.iter().map(|&x| x as f64).collect::<Vec<_>>());

    // Quantized: the reader's dequantization equals psyne's to the bit.
    let ours = seg
        .slab()
        .share(&quant)
        .unwrap()
        .quantized()
        .unwrap()
        .dequantize()
        .unwrap();
    let theirs = json_values(&run(&quant));
    assert_eq!(theirs, ours.iter().map(|&x| x as f64).collect::<Vec<_>>());

    // A stale handle is refused with exit status 2.
    drop(seg.slab().take(plain).unwrap());
    let out = Command::new("python3")
        .args([script, &name.0, &plain.to_string()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn cli_inspects_lists_and_cleans_segments() {
    if in_child() {
        return;
    }
    let cli = env!("CARGO_BIN_EXE_psyne");
    let name = Name::new("cli");
    let seg = Segment::create(&name.0, &cfg()).unwrap();
    let _held = seg.slab().alloc(100).unwrap();

    let out = Command::new(cli)
        .args(["inspect", &name.0])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&format!("segment {}", name.0)), "{text}");
    assert!(
        text.contains(&format!("layout version  {}", psyne::shm::LAYOUT_VERSION)),
        "{text}"
    );
    // The 4 KiB class: 8 slots, 1 used.
    let row = text
        .lines()
        .find(|l| l.trim_start().starts_with("4.0 KiB"))
        .unwrap_or_else(|| panic!("no 4 KiB row in {text}"));
    let cols: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(&cols[2..4], ["8", "1"], "{row}");

    let out = Command::new(cli).arg("list").output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains(&name.0));

    // A channel's segment shows its parameters, traffic and endpoints.
    let chan = Name::new("cli-chan");
    let tx = psyne::Sender::connect(&format!("ipc://{}?capacity=8&slab=1MiB", chan.0)).unwrap();
    tx.send_copy(&Shape::vector(2), &[1.0f32, 2.0]).unwrap();
    let out = Command::new(cli)
        .args(["inspect", &chan.0])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("pattern mpmc, policy block, capacity 8, 1 queued"),
        "{text}"
    );
    assert!(text.contains("1 senders, 0 receivers"), "{text}");
    assert!(
        text.contains(&format!("pid {:<8} sender    alive", std::process::id())),
        "{text}"
    );
    assert!(text.contains("last heartbeat"), "{text}");
    drop(tx);

    let out = Command::new(cli).args(["clean", &name.0]).output().unwrap();
    assert!(out.status.success());
    assert!(!Segment::exists(&name.0));
    let out = Command::new(cli)
        .args(["inspect", &name.0])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not exist"));
    let out = Command::new(cli).arg("frobnicate").output().unwrap();
    assert_eq!(out.status.code(), Some(2), "usage error");
}

/// A process killed in the middle of an allocation (after taking a slot's
/// free bit, before claiming the slot) or of a free (after freeing the
/// slot, before setting its bit) leaves a free slot that the bitmap does
/// not show. It is not lost: an allocation that finds the slab full
/// repairs the bitmap, and every slot can be allocated again.
#[test]
fn a_process_killed_inside_alloc_or_free_loses_no_slot() {
    if in_child() {
        return;
    }
    use std::io::BufRead;
    for role in ["park-in-alloc", "park-in-free"] {
        let name = Name::new(role);
        let seg = Segment::create(&name.0, &cfg()).unwrap();
        let total: u32 = seg.slab().stats().iter().map(|c| c.slots).sum();
        let mut kid = child(role, &name.0).spawn().unwrap();
        let mut out = std::io::BufReader::new(kid.stdout.take().unwrap());
        let mut line = String::new();
        while !line.contains("parked") {
            line.clear();
            assert!(
                out.read_line(&mut line).unwrap() > 0,
                "{role}: child exited"
            );
        }
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(kid.id() as i32),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
        kid.wait().unwrap();
        assert_eq!(seg.slab().used_slots(), 0, "{role}: the slot is free...");
        let all: Vec<_> = std::iter::from_fn(|| seg.slab().alloc(100).ok()).collect();
        assert_eq!(all.len() as u32, total, "{role}: ... and found again");
        drop(all);
        assert_eq!(seg.slab().repair(), 0, "{role}: nothing left to repair");
        assert_eq!(seg.slab().used_slots(), 0);
    }
}

#[test]
fn cli_bench_runs_against_its_baselines() {
    if in_child() {
        return;
    }
    let cli = env!("CARGO_BIN_EXE_psyne");
    let out = Command::new(cli)
        .args(["bench", "1KiB", "300"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for want in [
        "1024-byte tensors over ipc:// spsc",
        "one-way latency   p50",
        "streaming",
        "cache-line round trip",
        "one-way p50 / cache-line round trip",
    ] {
        assert!(text.contains(want), "{want:?} missing from {text}");
    }
    // Its channels are gone when it is done.
    let names = Segment::list().unwrap();
    assert!(
        !names
            .iter()
            .any(|n| n.starts_with(&format!("bench-{}", std::process::id()))),
        "{names:?}"
    );
    let out = Command::new(cli).args(["bench", "0"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("bad size"));
}

#[test]
fn cli_clean_stale_removes_only_segments_nobody_uses() {
    if let Ok(name) = std::env::var("PSYNE_TEST_CREATE_AND_EXIT") {
        // The child: create a segment and a channel, then exit without
        // removing either (as a crashed process would).
        let seg = Segment::create(&name, &cfg()).unwrap();
        std::mem::forget(seg);
        let tx =
            psyne::Sender::connect(&format!("ipc://{name}-chan?capacity=8&slab=1MiB")).unwrap();
        tx.send_copy(&Shape::vector(1), &[1.0f32]).unwrap();
        std::process::exit(0);
    }
    if in_child() {
        return;
    }
    let cli = env!("CARGO_BIN_EXE_psyne");
    let dead = Name::new("stale");
    let live = Name::new("stale-live");
    let status = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "cli_clean_stale_removes_only_segments_nobody_uses",
        ])
        .env("PSYNE_TEST_CREATE_AND_EXIT", &dead.0)
        .status()
        .unwrap();
    assert!(status.success());
    assert!(Segment::exists(&dead.0));
    let chan = format!("{}-chan", dead.0);
    assert!(Segment::exists(&chan));
    let _held = Segment::create(&live.0, &cfg()).unwrap();
    let prefix = dead.0.trim_end_matches(char::is_numeric).to_string();
    // Young segments are kept by default (their process may be starting).
    let out = Command::new(cli)
        .args(["clean", "--stale", "--prefix", &prefix])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(Segment::exists(&dead.0));
    let out = Command::new(cli)
        .args(["clean", "--stale", "--older-than", "0", "--prefix", &prefix])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(!Segment::exists(&dead.0), "{text}");
    assert!(!Segment::exists(&chan), "{text}");
    assert!(
        Segment::exists(&live.0),
        "a segment whose creator lives was removed: {text}"
    );
    let _ = Segment::unlink(&chan);
}
