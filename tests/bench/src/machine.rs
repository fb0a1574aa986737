//! What machine a run was on: cores, CPU model, kernel, memory and the load average when the
//! run started (a busy machine makes every number worse). Not for anything measured per
//! phase.

use std::fs;

use serde::Serialize;

/// The machine a run was on.
#[derive(Clone, Debug, Serialize)]
pub struct Machine {
    /// Cores available to the bench (`nproc`).
    pub nproc: usize,
    /// `model name` of `/proc/cpuinfo`.
    pub cpu_model: String,
    /// Kernel release.
    pub kernel: String,
    /// Total memory, MiB.
    pub memory_mib: u64,
    /// 1-, 5- and 15-minute load averages when the run started.
    pub load_average: String,
}

impl Machine {
    /// Describes this machine.
    pub fn describe() -> Self {
        let read = |p: &str| fs::read_to_string(p).unwrap_or_default();
        let cpuinfo = read("/proc/cpuinfo");
        let cpu_model = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .and_then(|v| v.split_once(':'))
            .map_or_else(|| "unknown".to_owned(), |(_, v)| v.trim().to_owned());
        let memory_mib = read("/proc/meminfo")
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .map_or(0, |kib| kib / 1024);
        let load_average = read("/proc/loadavg")
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ");
        Self {
            nproc: std::thread::available_parallelism().map_or(1, |n| n.get()),
            cpu_model,
            kernel: read("/proc/sys/kernel/osrelease").trim().to_owned(),
            memory_mib,
            load_average,
        }
    }

    /// One line for logs and reports.
    pub fn one_line(&self) -> String {
        format!(
            "machine: nproc {}, CPU {}, Linux {}, {} MiB RAM, load average {} at start",
            self.nproc, self.cpu_model, self.kernel, self.memory_mib, self.load_average
        )
    }
}
