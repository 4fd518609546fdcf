//! How long the allocator keeps memory that a training step frees.
//!
//! lightpeft's binaries allocate through mimalloc (their global allocator; this crate links it).
//! mimalloc hands memory that stays free for `purge_delay` (one second by default) back to the
//! kernel. A training step frees and reallocates the same few hundred MiB of activations, and on
//! a loaded machine a step takes longer than that second: every step then faults all of it back
//! in and the kernel zeroes each page. Measured on MiniLM (16 × 64, 2 threads, under load):
//! 47–53 k page faults in six estimation steps with the default, about 450 when the memory is
//! held (BENCHMARKS.md, "Speed, round 2").

use std::ffi::{c_int, c_long};
use std::time::Duration;

/// `mi_option_purge_delay`: the same index in mimalloc's v2 and v3 headers.
const PURGE_DELAY: c_int = 15;

// Both are exported by the mimalloc library that `libmimalloc-sys` builds; naming the crate
// makes the linker include it even in a binary whose allocator is not mimalloc.
use libmimalloc_sys as _;

unsafe extern "C" {
    fn mi_option_set(option: c_int, value: c_long);
    fn mi_option_get(option: c_int) -> c_long;
    fn mi_collect(force: bool);
}

/// How long a training process keeps freed memory before returning it: far longer than any
/// step, short enough that an idle server gives a finished job's memory back.
pub const TRAINING_HOLD: Duration = Duration::from_secs(60);

/// Keeps freed memory for `hold` before mimalloc returns it to the kernel.
pub fn hold_freed_memory(hold: Duration) {
    let ms = c_long::try_from(hold.as_millis()).unwrap_or(c_long::MAX);
    // SAFETY: mimalloc's options are plain integers it reads atomically; any value is valid
    // for this one (a delay in milliseconds).
    unsafe { mi_option_set(PURGE_DELAY, ms) }
}

/// The current hold, as mimalloc reports it.
pub fn freed_memory_hold() -> Duration {
    // SAFETY: reading an option has no preconditions.
    let ms = unsafe { mi_option_get(PURGE_DELAY) };
    Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

/// Returns the memory freed so far to the kernel now, whatever the hold.
///
/// For the end of a one-off phase whose freed blocks later allocations of other sizes cannot
/// reuse: loading a model frees its checkpoint's copy of every weight that a layer keeps
/// transposed, and under the hold those pages stayed resident beside the activations (about
/// 26 MiB of MiniLM's peak at 32 × 128 inference).
pub fn release_freed_memory() {
    // SAFETY: `mi_collect` only walks mimalloc's own free lists; it has no preconditions.
    unsafe { mi_collect(true) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hold_reaches_mimalloc() {
        hold_freed_memory(Duration::from_millis(1234));
        assert_eq!(freed_memory_hold(), Duration::from_millis(1234));
        hold_freed_memory(TRAINING_HOLD);
        assert_eq!(freed_memory_hold(), TRAINING_HOLD);
    }
}
