//! The benchmark process's own allocator settings. A producer at full speed builds and encodes
//! a fresh 1 MiB buffer per batch; glibc gives freed multi-MiB memory back to the kernel (it
//! trims each arena's top above twice a threshold it moves as blocks are freed), so the next
//! batch page-faults and zeroes its memory again. On the 2-core bench machine that can take a
//! tenth of the W1 producer's CPU, taken from the servers it measures. The settings are the
//! harness's, applied alike to `sluice bench` and `sluice-peer-bench`; the client library never
//! changes a host process's allocator.

/// Requests below this size come from the arenas rather than their own `mmap`.
pub const MMAP_THRESHOLD: usize = 8 << 20;
/// Free memory an arena may keep at its top before glibc returns it to the kernel.
pub const TRIM_THRESHOLD: usize = 512 << 20;

/// Keeps freed batch-sized buffers in the process for reuse; returns whether glibc took both
/// settings (`false` on other C libraries, where nothing is changed).
pub fn keep_freed_buffers() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let set = |param: libc::c_int, value: usize| {
            let value = libc::c_int::try_from(value).unwrap_or(libc::c_int::MAX);
            // SAFETY: `mallopt` only changes glibc's malloc parameters under its own lock; it
            // touches no memory of ours, and a value it refuses is reported as 0.
            #[allow(unsafe_code)]
            let accepted = unsafe { libc::mallopt(param, value) };
            accepted == 1
        };
        let mmap = set(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
        let trim = set(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD);
        mmap && trim
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glibc_accepts_the_settings_and_allocation_still_works() {
        let applied = keep_freed_buffers();
        assert_eq!(applied, cfg!(all(target_os = "linux", target_env = "gnu")));
        // A batch-sized buffer freed and allocated again, as the producer does.
        for _ in 0..4 {
            let v = vec![7u8; 1 << 20];
            assert_eq!(v.iter().map(|&b| usize::from(b)).sum::<usize>(), 7 << 20);
        }
    }
}
