//! What Linux knows about a process and about the machine, read from `/proc`: a process's CPU
//! time (`utime + stime` of all its threads, dead ones included), its peak resident set
//! (`VmHWM`), and how many cores the whole machine kept busy. The parsers are pure and tested
//! on fixed texts; the readers only add the file access.

use std::io;
use std::time::Duration;

/// Clock ticks per second, the unit of `/proc/<pid>/stat` and `/proc/stat` (`getconf CLK_TCK`).
pub fn clock_ticks() -> u64 {
    // SAFETY: sysconf reads a constant of the running kernel; it touches no memory of ours.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 {
        ticks as u64
    } else {
        100
    }
}

/// `utime + stime` in ticks from the text of `/proc/<pid>/stat`. The command name (field 2)
/// may hold spaces and parentheses, so fields are counted from its last `)`.
pub fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state is field 3, utime field 14, stime field 15.
    let utime: u64 = fields.get(14 - 3)?.parse().ok()?;
    let stime: u64 = fields.get(15 - 3)?.parse().ok()?;
    Some(utime + stime)
}

/// `VmHWM` (peak resident set) in bytes from the text of `/proc/<pid>/status`.
pub fn parse_peak_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line
        .trim_start_matches("VmHWM:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

/// The machine's CPU counters at one instant (from the `cpu` line of `/proc/stat`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MachineSample {
    /// Ticks spent on anything but idle and I/O wait, all cores together.
    pub busy: u64,
    /// All ticks, all cores together.
    pub total: u64,
    /// Cores counted (`cpuN` lines).
    pub cores: u32,
}

impl MachineSample {
    /// Average number of cores busy between `earlier` and `self` (0 to `cores`).
    pub fn busy_cores_since(&self, earlier: &MachineSample) -> f64 {
        let total = self.total.saturating_sub(earlier.total);
        if total == 0 {
            return 0.0;
        }
        let busy = self.busy.saturating_sub(earlier.busy);
        busy as f64 / total as f64 * f64::from(self.cores)
    }
}

/// Parses `/proc/stat`: `cpu user nice system idle iowait irq softirq steal ...`.
pub fn parse_machine(stat: &str) -> Option<MachineSample> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let values: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(|v| v.parse().ok())
        .collect::<Option<_>>()?;
    if values.len() < 5 {
        return None;
    }
    let total: u64 = values.iter().sum();
    let idle = values[3] + values[4];
    let cores = stat
        .lines()
        .filter(|l| l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit))
        .count() as u32;
    Some(MachineSample {
        busy: total - idle,
        total,
        cores: cores.max(1),
    })
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("cannot parse {what}"))
}

/// CPU time a process has used so far, all threads together.
pub fn process_cpu(pid: u32) -> io::Result<Duration> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let ticks = parse_cpu_ticks(&text).ok_or_else(|| invalid("/proc/<pid>/stat"))?;
    Ok(Duration::from_secs_f64(ticks as f64 / clock_ticks() as f64))
}

/// A process's peak resident set, in bytes.
pub fn peak_rss(pid: u32) -> io::Result<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    parse_peak_rss(&text).ok_or_else(|| invalid("VmHWM in /proc/<pid>/status"))
}

/// The machine's CPU counters now.
pub fn machine() -> io::Result<MachineSample> {
    let text = std::fs::read_to_string("/proc/stat")?;
    parse_machine(&text).ok_or_else(|| invalid("/proc/stat"))
}

/// The CPU model name, for the report header.
pub fn cpu_model() -> Option<String> {
    let text = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    text.lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_ticks_are_counted_after_a_name_with_spaces_and_parentheses() {
        let stat = "4242 (tokio (worker) 1) S 1 4242 4242 0 -1 4194560 1234 0 0 0 150 37 0 0 20 0 9 0 12345 1000000 2000 18446744073709551615";
        assert_eq!(parse_cpu_ticks(stat), Some(187));
        assert_eq!(parse_cpu_ticks("4242 (short) S 1"), None);
    }

    #[test]
    fn peak_rss_is_read_in_bytes() {
        let status =
            "Name:\thandler\nVmPeak:\t  900000 kB\nVmHWM:\t   40960 kB\nVmRSS:\t   30000 kB\n";
        assert_eq!(parse_peak_rss(status), Some(40 * 1024 * 1024));
        assert_eq!(parse_peak_rss("Name:\tx\n"), None);
    }

    #[test]
    fn busy_cores_leave_out_idle_and_iowait() {
        let before = parse_machine(
            "cpu  100 0 100 1000 0 0 0 0 0 0\ncpu0 50 0 50 500 0 0 0 0 0 0\ncpu1 50 0 50 500 0 0 0 0 0 0\nintr 1\n",
        )
        .unwrap();
        assert_eq!(before.cores, 2);
        // 200 ticks pass on each of 2 cores; 300 of the 400 are busy.
        let after = parse_machine("cpu  250 0 250 1090 10 0 0 0 0 0\n").unwrap();
        let after = MachineSample { cores: 2, ..after };
        assert!((after.busy_cores_since(&before) - 1.5).abs() < 1e-9);
    }

    #[test]
    fn this_process_can_be_measured() {
        let pid = std::process::id();
        assert!(process_cpu(pid).is_ok());
        assert!(peak_rss(pid).unwrap() > 0);
        assert!(machine().unwrap().total > 0);
        assert!(clock_ticks() > 0);
    }
}
