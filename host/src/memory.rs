//! Giving freed memory back to the system when the host goes idle.
//!
//! The `host` binary allocates with jemalloc (`main.rs`). Its background
//! thread returns freed pages gradually, over about ten seconds of decay,
//! waking again and again meanwhile. That is right while requests
//! flow, since the pages are likely reused. But once the last warm function
//! has scaled to zero, nothing will reuse them soon, and the trickle is most
//! of the work left in an idle host: [`release_freed`] returns them in one
//! call instead, after which the allocator's thread sleeps like the rest.

use std::ptr;

/// jemalloc's control that purges the unused pages of every arena
/// (`arena.<i>.purge` with `i` = `MALLCTL_ARENAS_ALL`, 4096).
const PURGE_ALL_ARENAS: &std::ffi::CStr = c"arena.4096.purge";

/// Returns the pages jemalloc holds free to the system, at once. Returns
/// false if jemalloc refused (not the case in the `host` binary).
pub fn release_freed() -> bool {
    // SAFETY: the name is a NUL-terminated string that outlives the call,
    // and this control reads and writes nothing: jemalloc requires the old
    // and new value pointers to be null and the new length zero, as here.
    #[allow(unsafe_code)]
    let status = unsafe {
        tikv_jemalloc_sys::mallctl(
            PURGE_ALL_ARENAS.as_ptr(),
            ptr::null_mut(),
            ptr::null_mut(),
            ptr::null_mut(),
            0,
        )
    };
    status == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jemalloc_accepts_the_purge() {
        assert!(release_freed());
    }
}
