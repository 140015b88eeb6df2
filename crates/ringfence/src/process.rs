//! The process's own CPU time and resident memory, for `/metrics` (the standard
//! `process_cpu_seconds_total` and `process_resident_memory_bytes`) and so for `ringfence bench`,
//! which reads them before and after a run to report the server's CPU time per transaction.
//!
//! CPU time comes from `getrusage(RUSAGE_SELF)`: user plus system time of every thread, in
//! microseconds, where `/proc/self/stat` would give clock ticks (10 ms). Resident memory is
//! `/proc/self/statm`'s second field times the page size; it is absent off Linux.

/// User plus system CPU time this process has used, in seconds.
pub fn cpu_seconds() -> f64 {
    // SAFETY: `getrusage` only writes into the struct we pass, which is plain data and
    // zero-initialised; RUSAGE_SELF is always a valid `who`.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        if libc::getrusage(libc::RUSAGE_SELF, &mut usage) != 0 {
            return 0.0;
        }
        usage
    };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

/// Resident set size in bytes, when the platform tells (Linux: `/proc/self/statm`).
pub fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: `sysconf` has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(page).ok().map(|p| pages * p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_time_grows_with_work() {
        let before = cpu_seconds();
        // Spin for about 30 ms of CPU; the counter has microsecond resolution.
        let t0 = std::time::Instant::now();
        let mut x = 0u64;
        while t0.elapsed() < std::time::Duration::from_millis(30) {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
        let after = cpu_seconds();
        assert!(after > before, "{before} -> {after}");
        assert!(after - before >= 0.01, "{before} -> {after}");
    }

    #[test]
    fn resident_memory_is_reported_on_linux() {
        if cfg!(target_os = "linux") {
            let rss = resident_bytes().expect("statm");
            // A test binary holds at least a megabyte and less than the machine.
            assert!(rss > 1 << 20 && rss < 1 << 40, "{rss}");
        }
    }
}
