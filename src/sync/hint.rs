//! Cache hints: ask the CPU to move a cache line ahead of time. Hints only:
//! they change no value, cannot fault, and compile to nothing where the
//! instruction is missing (and under Miri).
//!
//! psyne's hot path is cache-line transfers between the cores of a producer
//! and a consumer. Two kinds of hint shorten it:
//! - *prefetch*: a line this side will need soon (the header of the next
//!   slot to loan, the rest of a header just received) is fetched while
//!   the current message is still on its way, not when it is needed;
//! - *demote* (`cldemote`, Intel from Sapphire Rapids and Tremont on; a
//!   no-op elsewhere): a line just written for the other side (a ring cell,
//!   a slot's state) is pushed from this core's private caches to the
//!   shared last-level cache, so the other core's next read is served from
//!   there instead of by a snoop into this core.

/// Fetches the cache line at `p` for reading.
#[inline(always)]
pub(crate) fn prefetch_read(p: *const u8) {
    #[cfg(all(target_arch = "x86_64", not(miri)))]
    // SAFETY: a prefetch never faults (any address is allowed) and changes
    // no memory.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p as *const i8);
    }
    #[cfg(not(all(target_arch = "x86_64", not(miri))))]
    let _ = p;
}

/// Fetches the cache line at `p` for writing (exclusive), so that a
/// store or read-modify-write there does not have to ask the other cores
/// again. `prefetchw` (AMD since K6, Intel since Broadwell; a NOP on older
/// Intel CPUs), written out because `_mm_prefetch::<_MM_HINT_ET0>` falls
/// back to a read prefetch unless the crate is built for a CPU with
/// `prfchw`.
#[inline(always)]
pub(crate) fn prefetch_write(p: *const u8) {
    // Without PRFCHW the opcode (0F 0D /1) decodes as a NOP (Intel
    // documents 0F 0D as a hint NOP group): never an invalid instruction.
    #[cfg(all(target_arch = "x86_64", not(miri)))]
    // SAFETY: a prefetch never faults (any address is allowed) and changes
    // no memory, register or flag.
    unsafe {
        std::arch::asm!(
            "prefetchw byte ptr [{0}]",
            in(reg) p,
            options(nostack, preserves_flags, readonly)
        );
    }
    #[cfg(not(all(target_arch = "x86_64", not(miri))))]
    let _ = p;
}

/// Moves the cache line at `p` towards the shared cache, for another core
/// to read. `cldemote` executes as a no-op on CPUs without it.
#[inline(always)]
pub(crate) fn demote(p: *const u8) {
    #[cfg(all(target_arch = "x86_64", not(miri)))]
    // SAFETY: `cldemote` is a hint: it never faults, changes no memory, no
    // register and no flag, and is a NOP on CPUs that lack it.
    unsafe {
        std::arch::asm!(
            "cldemote byte ptr [{0}]",
            in(reg) p,
            options(nostack, preserves_flags, readonly)
        );
    }
    #[cfg(not(all(target_arch = "x86_64", not(miri))))]
    let _ = p;
}
