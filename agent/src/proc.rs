//! This agent process's own resource use, from `/proc/self` (Linux; `None` elsewhere): what the
//! report needs to tell whether the load generator itself was the bottleneck.

/// CPU time (user + system) in µs. The kernel counts it in ticks of 1/100 s (USER_HZ), so it
/// suits spans of a second or more.
pub fn cpu_us() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 after the name and state.
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(ticks * 10_000)
}

/// Resident memory now, in bytes (`VmRSS`).
pub fn rss_bytes() -> Option<u64> {
    kb_field("/proc/self/status", "VmRSS:")
}

/// Memory the host can still give without swapping, in bytes (`MemAvailable`).
pub fn available_bytes() -> Option<u64> {
    kb_field("/proc/meminfo", "MemAvailable:")
}

/// The `key   123 kB` line of a /proc file, in bytes.
fn kb_field(path: &str, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    let kb: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix(key))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb * 1024)
}

#[cfg(test)]
mod tests {
    #[test]
    fn this_process_has_cpu_time_and_memory() {
        let before = super::cpu_us().expect("Linux /proc");
        let mut x = 0u64;
        let start = std::time::Instant::now();
        while start.elapsed() < std::time::Duration::from_millis(60) {
            x = x.wrapping_add(std::hint::black_box(1));
        }
        assert!(x > 0);
        assert!(super::cpu_us().unwrap() >= before);
        assert!(super::rss_bytes().unwrap() > 1 << 20);
        // The host has more memory available than this process holds.
        assert!(super::available_bytes().unwrap() > super::rss_bytes().unwrap());
    }
}
