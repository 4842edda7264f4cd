//! `psyne`: inspect and clean up psyne shared-memory segments.
//!
//! ```text
//! psyne list                 every psyne segment on this machine, with its state
//! psyne inspect NAME...      header, layout and slab usage of each segment
//! psyne clean NAME...        remove segment names (mapped copies live on)
//! ```

use std::process::ExitCode;
use std::time::SystemTime;

use psyne::{DataAccess, Segment};

const USAGE: &str = "usage:
  psyne list              list psyne segments on this machine
  psyne inspect NAME...   show a segment's header, layout and slab usage
  psyne clean NAME...     remove segments by name";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("list") if args.len() == 1 => list(),
        Some("inspect") if args.len() > 1 => args[1..].iter().try_for_each(|n| inspect(n)),
        Some("clean") if args.len() > 1 => args[1..].iter().try_for_each(|n| clean(n)),
        Some("-h" | "--help" | "help") => {
            println!("{USAGE}");
            Ok(())
        }
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("psyne: {e}");
            ExitCode::FAILURE
        }
    }
}

fn pid_alive(pid: u32) -> bool {
    // Signal 0 checks existence; EPERM means it exists but is not ours.
    match nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), None) {
        Ok(()) => true,
        Err(e) => e == nix::errno::Errno::EPERM,
    }
}

fn size(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

fn list() -> psyne::Result<()> {
    let names = Segment::list()?;
    if names.is_empty() {
        println!("no psyne segments");
        return Ok(());
    }
    println!(
        "{:<40} {:>10} {:>8} {:>10}  state",
        "name", "size", "creator", "slots used"
    );
    for name in names {
        match Segment::open_with(&name, DataAccess::ReadOnly) {
            Ok(seg) => {
                let info = seg.info();
                let used = seg.slab().used_slots();
                let total: u64 = seg.slab().stats().iter().map(|c| c.slots as u64).sum();
                let state = if pid_alive(info.creator_pid) {
                    "creator alive"
                } else {
                    "creator gone"
                };
                println!(
                    "{name:<40} {:>10} {:>8} {:>10}  {state}",
                    size(info.total_size),
                    info.creator_pid,
                    format!("{used}/{total}")
                );
            }
            Err(e) => println!(
                "{name:<40} {:>10} {:>8} {:>10}  unreadable: {e}",
                "-", "-", "-"
            ),
        }
    }
    Ok(())
}

fn inspect(name: &str) -> psyne::Result<()> {
    let seg = Segment::open_with(name, DataAccess::ReadOnly)?;
    let info = seg.info();
    let age = SystemTime::now()
        .duration_since(info.created)
        .unwrap_or_default();
    println!("segment {name}");
    println!("  layout version  {}", info.version);
    println!(
        "  size            {} (control {}, data {})",
        size(info.total_size),
        size(info.control_size),
        size(info.data_size)
    );
    println!(
        "  creator         pid {} ({}), uid {}, mode {:o}, {:.0} s ago",
        info.creator_pid,
        if pid_alive(info.creator_pid) {
            "alive"
        } else {
            "gone"
        },
        info.creator_uid,
        info.mode,
        age.as_secs_f64()
    );
    match psyne::channel::inspect(&seg) {
        Ok(Some(ch)) => {
            let c = ch.config;
            println!(
                "  channel         pattern {}, policy {}, capacity {}, {} queued",
                c.pattern, c.policy, c.capacity, ch.queued
            );
            println!(
                "  traffic         {} sent, {} received, {} dropped",
                ch.sent, ch.received, ch.dropped
            );
            println!(
                "  endpoints       {} senders, {} receivers",
                ch.senders, ch.receivers
            );
            for (pid, side, alive) in ch.endpoints {
                println!(
                    "    pid {pid:<8} {side:<9} {}",
                    if alive {
                        "alive"
                    } else {
                        "dead (reaped when a live endpoint next looks)"
                    }
                );
            }
        }
        Ok(None) => {}
        Err(e) => println!("  channel         unreadable: {e}"),
    }
    println!("  slab classes");
    println!(
        "    {:>10} {:>8} {:>8} {:>12} {:>10}",
        "slot size", "slots", "used", "allocs", "failures"
    );
    for c in seg.slab().stats() {
        println!(
            "    {:>10} {:>8} {:>8} {:>12} {:>10}",
            size(c.slot_size),
            c.slots,
            c.used,
            c.allocs,
            c.failures
        );
    }
    Ok(())
}

fn clean(name: &str) -> psyne::Result<()> {
    Segment::unlink(name)?;
    println!("removed {name}");
    Ok(())
}
