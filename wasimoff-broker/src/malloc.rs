//! [`release_large_buffers`]: makes glibc's `malloc` give large buffers back to the system
//! when they are freed.

/// Buffers this large or larger get their own mapping, returned to the system when freed.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD: i32 = 128 << 10;

/// Makes the process's allocator return every buffer of 128 KiB or more to the system as soon
/// as it is freed. Call it once, first thing in `main`; the `wasimoff-broker` binary does.
///
/// Why: glibc's `malloc` raises its mapping threshold each time it frees a mapped buffer, up to
/// 32 MiB. After the first large task, later buffers of a few MiB (tasks encoded for a
/// provider, request bodies) come from the per-thread heaps instead, which fragment and are
/// rarely trimmed. In the chaos test (tests/it/chaos.rs: 8 MiB tasks against a 64 MiB budget,
/// sent to four providers) the broker peaked at 144-151 MiB and kept 55-95 MiB after all was
/// answered; with a fixed threshold, 123-137 MiB and 20-30 MiB (idle: ~16 MiB). Small
/// allocations, the hot path, are unaffected.
///
/// Does nothing with other allocators and C libraries (a `#[global_allocator]`, musl).
pub fn release_large_buffers() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes a tuning parameter of glibc's allocator; it is thread-safe
    // and any value of M_MMAP_THRESHOLD up to 32 MiB is valid.
    #[allow(unsafe_code)]
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
    }
}
