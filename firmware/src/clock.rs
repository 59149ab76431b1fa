//! Elapsed time in SysTick ticks of the core clock. The 24-bit counter wraps every 2^24 ticks;
//! the SysTick exception counts the wraps, so intervals of any length are exact.
//!
//! What a tick is depends on where the firmware runs:
//! - on hardware, one tick is one core clock cycle;
//! - under `qemu-system-arm -icount shift=0` (one instruction per nanosecond of virtual time)
//!   with the MPS2 boards' 25 MHz core clock, one tick is exactly 40 instructions, so ticks
//!   count executed instructions at a resolution of 40. (QEMU does not model the DWT cycle
//!   counter.)

use core::sync::atomic::{AtomicU32, Ordering};

use cortex_m::peripheral::syst::SystClkSource;
use cortex_m::peripheral::{SCB, SYST};
use cortex_m_rt::exception;

/// The counter's reload value: it counts down from here to 0, then wraps.
const RELOAD: u32 = 0x00FF_FFFF;

/// Wraps of the counter since [`Clock::start`], counted by the SysTick exception.
static WRAPS: AtomicU32 = AtomicU32::new(0);

#[exception]
fn SysTick() {
    WRAPS.fetch_add(1, Ordering::Relaxed);
}

/// The running SysTick counter.
pub struct Clock {
    syst: SYST,
}

impl Clock {
    /// Starts counting core clock ticks from (about) 0.
    pub fn start(mut syst: SYST) -> Self {
        syst.disable_counter();
        syst.set_clock_source(SystClkSource::Core);
        syst.set_reload(RELOAD);
        syst.clear_current();
        syst.enable_counter();
        // The cleared counter holds 0 until its first tick loads RELOAD (without a wrap or an
        // exception); count from there.
        while SYST::get_current() == 0 {}
        WRAPS.store(0, Ordering::Relaxed);
        syst.enable_interrupt();
        Self { syst }
    }

    /// Ticks since [`Clock::start`].
    pub fn ticks(&self) -> u64 {
        // With the exception masked, WRAPS cannot change; a wrap that happened since the
        // exception last ran shows as a pending SysTick exception, and the counter is read
        // again after it so both parts describe the same moment.
        cortex_m::interrupt::free(|_| {
            let mut wraps = WRAPS.load(Ordering::Relaxed);
            let mut current = SYST::get_current();
            if SCB::is_pendst_pending() {
                wraps += 1;
                current = SYST::get_current();
            }
            u64::from(wraps) * (u64::from(RELOAD) + 1) + u64::from(RELOAD - current)
        })
    }

    /// Stops the counter and its exception (so nothing runs behind the program's back any
    /// more) and gives the peripheral back.
    pub fn stop(mut self) -> SYST {
        self.syst.disable_interrupt();
        self.syst.disable_counter();
        self.syst
    }
}
