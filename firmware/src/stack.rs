//! The stack's high-water mark, per phase of the run.
//!
//! With cortex-m-rt's `paint-stack` feature, the reset handler fills every word from
//! `_stack_end` (the end of the statics: .data, .bss, .uninit) up to `_stack_start` (the initial
//! stack pointer, the top of RAM) with [`STACK_PAINT_VALUE`] before `main` runs. The stack grows
//! down from `_stack_start`, so every word it has held since has been overwritten (unless the
//! program happened to store the paint value itself there, which can only make the mark
//! shallower by the few words that held it). [`high_water_bytes`] finds the lowest word that
//! no longer holds the paint; [`repaint`] paints the free stack again so the next measurement
//! covers only what runs after it.
//!
//! Both walk the free stack, the words in `[_stack_end, sp)`, with exceptions masked. That
//! memory holds no Rust object: the statics end at `_stack_end`, there is no heap, and every
//! live stack frame lies at or above the stack pointer `sp` (the AAPCS has no red zone below
//! it). With exceptions masked no exception frame is pushed there while we walk it. The words
//! are accessed with volatile operations through pointers made from their addresses
//! (`with_exposed_provenance`), as for memory-mapped I/O: the memory is outside every Rust
//! allocation, and the compiler must neither assume its contents nor elide the accesses.

use core::ptr;

use cortex_m::register::msp;
use cortex_m_rt::STACK_PAINT_VALUE;

extern "C" {
    /// Lowest address of the stack region (cortex-m-rt's link.x): the end of the statics,
    /// 4-byte aligned (link.x asserts it).
    static _stack_end: u32;
    /// Highest address of the stack region: the initial stack pointer.
    static _stack_start: u32;
}

/// Bytes of stack in use at the deepest point since the reset or the last [`repaint`],
/// counted from the top of the stack (so it includes `main`'s own frames and any exception
/// frame pushed meanwhile).
pub fn high_water_bytes() -> usize {
    let top = ptr::addr_of!(_stack_start) as usize;
    top - cortex_m::interrupt::free(|_| deepest_used())
}

/// Paints the free stack below the current stack pointer again. Never inlined, like
/// [`deepest_used`]: the two calls delimit each measured phase, which `scripts/profile.py`
/// finds by their symbols in QEMU's execution log.
#[inline(never)]
pub fn repaint() {
    cortex_m::interrupt::free(|_| paint_free());
}

/// Address of the lowest free-stack word no longer painted (the stack pointer if none).
/// Runs with exceptions masked (see the module docs); reads `sp` itself, so the words walked
/// are below its own frame.
#[inline(never)]
#[allow(unsafe_code)] // Volatile reads of free stack memory; see SAFETY below.
fn deepest_used() -> usize {
    let sp = msp::read() as usize;
    let mut addr = ptr::addr_of!(_stack_end) as usize;
    while addr < sp {
        // SAFETY: `addr` is 4-byte aligned (`_stack_end` is, and we step by 4) and lies in the
        // free stack `[_stack_end, sp)`, inside the RAM of memory.x, which is always readable
        // (no MPU is configured). The module docs explain why no Rust object lives there and
        // nothing writes there while we read.
        let word = unsafe { ptr::with_exposed_provenance::<u32>(addr).read_volatile() };
        if word != STACK_PAINT_VALUE {
            return addr;
        }
        addr += 4;
    }
    sp
}

/// Writes the paint into every free-stack word. Runs with exceptions masked (see the module
/// docs).
#[allow(unsafe_code)] // An assembly loop that writes the free stack; see SAFETY below.
fn paint_free() {
    let bottom = ptr::addr_of!(_stack_end) as usize;
    // SAFETY: the loop runs in assembly so that it reads the stack pointer at the very moment
    // it writes: Rust code could not, since the compiler may save registers on the stack
    // after a read of `sp` (it does: shrink-wrapping), below the value read. The assembly
    // uses no stack (`nostack`) and writes only aligned words of `[_stack_end, sp)`
    // (`_stack_end` is 4-byte aligned, `sp` 8-byte aligned), writable RAM that holds no Rust
    // object and into which no exception frame is pushed meanwhile (module docs).
    unsafe {
        core::arch::asm!(
            "mov {end}, sp",
            "2:",
            "cmp {addr}, {end}",
            "bhs 3f",
            "str {paint}, [{addr}], #4",
            "b 2b",
            "3:",
            addr = inout(reg) bottom => _,
            end = out(reg) _,
            paint = in(reg) STACK_PAINT_VALUE,
            options(nostack, preserves_flags),
        );
    }
}
