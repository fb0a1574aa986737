//! Per-process cost from `/proc`: CPU time (`utime + stime` of `/proc/<pid>/stat`, which keeps
//! the time of threads that have exited) and memory (`VmRSS`, `VmHWM` of `/proc/<pid>/status`),
//! summed over a process and its descendants (an nginx master and its worker count as one
//! proxy). Not for deciding what to measure or when: the scenario runner does that.

use std::{fs, io, process::Command, sync::OnceLock, time::Duration};

/// CPU time and memory of a process tree at one instant.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Sample {
    /// User + system CPU time.
    pub(crate) cpu: Duration,
    /// Resident set size, KiB.
    pub(crate) rss_kib: u64,
    /// Peak resident set size since the process started, KiB.
    pub(crate) hwm_kib: u64,
}

/// Clock ticks per second of the `stat` CPU fields (`getconf CLK_TCK`, 100 on Linux).
pub(crate) fn clock_ticks_per_sec() -> u64 {
    static TICKS: OnceLock<u64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .filter(|t| *t > 0)
            .unwrap_or(100)
    })
}

/// The fields of `/proc/<pid>/stat` after the command name (which may hold spaces and
/// parentheses, so the split is at the last `)`): index 0 is field 3 (`state`).
fn stat_fields(stat: &str) -> Option<Vec<&str>> {
    let rest = &stat[stat.rfind(')')? + 1..];
    Some(rest.split_whitespace().collect())
}

/// `(ppid, utime + stime in ticks)` from the text of `/proc/<pid>/stat`.
pub(crate) fn parse_stat(stat: &str) -> Option<(u32, u64)> {
    let f = stat_fields(stat)?;
    let ppid = f.get(1)?.parse().ok()?;
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    Some((ppid, utime + stime))
}

/// `(VmRSS, VmHWM)` in KiB from the text of `/proc/<pid>/status`.
pub(crate) fn parse_status(status: &str) -> (u64, u64) {
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn read_stat(pid: u32) -> io::Result<(u32, u64)> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat"))?;
    parse_stat(&text).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("/proc/{pid}/stat: unexpected format"),
        )
    })
}

/// `pid` and all its descendants that are alive now.
pub(crate) fn tree(pid: u32) -> Vec<u32> {
    let mut parents: Vec<(u32, u32)> = Vec::new();
    if let Ok(dir) = fs::read_dir("/proc") {
        for entry in dir.flatten() {
            let Some(p) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            if let Ok((ppid, _)) = read_stat(p) {
                parents.push((p, ppid));
            }
        }
    }
    let mut out = vec![pid];
    let mut i = 0;
    while i < out.len() {
        let parent = out[i];
        out.extend(
            parents
                .iter()
                .filter(|(_, pp)| *pp == parent)
                .map(|(p, _)| *p),
        );
        i += 1;
    }
    out
}

/// CPU time and memory of the given processes, summed; processes that are gone count zero.
pub(crate) fn sample(pids: &[u32]) -> Sample {
    let hz = clock_ticks_per_sec();
    let mut ticks = 0;
    let mut s = Sample::default();
    for &pid in pids {
        if let Ok((_, t)) = read_stat(pid) {
            ticks += t;
        }
        if let Ok(status) = fs::read_to_string(format!("/proc/{pid}/status")) {
            let (rss, hwm) = parse_status(&status);
            s.rss_kib += rss;
            s.hwm_kib += hwm;
        }
    }
    s.cpu = Duration::from_nanos(ticks.saturating_mul(1_000_000_000) / hz);
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_survive_odd_command_names() {
        let line = "4242 (tokio (rt) x) S 17 4242 17 0 -1 4194304 1234 0 0 0 250 37 0 0 20 0 3 0 \
                    9999 123456789 2048 18446744073709551615";
        assert_eq!(parse_stat(line), Some((17, 287)));
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn status_gives_rss_and_peak() {
        let status =
            "Name:\toutrigger\nVmPeak:\t  900000 kB\nVmHWM:\t    9876 kB\nVmRSS:\t    8765 kB\n";
        assert_eq!(parse_status(status), (8765, 9876));
        assert_eq!(parse_status(""), (0, 0));
    }

    #[test]
    fn this_process_is_measurable() {
        let me = std::process::id();
        assert!(tree(me).contains(&me));
        let s = sample(&[me]);
        assert!(s.rss_kib > 0 && s.hwm_kib >= s.rss_kib);
    }
}
