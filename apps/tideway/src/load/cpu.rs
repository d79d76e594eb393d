//! CPU time of watched processes during the measured phase (Linux `/proc`), so a benchmark
//! can report requests per CPU-second of the process under test without counting the
//! generator's setup (registering users hashes passwords on the target).
//!
//! Only per-process counters: machine-wide `/proc/stat` deltas read from inside a busy
//! process proved inconsistent on our VMs (totals off by a third over seconds), so the
//! bench scripts read those from outside, around the whole command.

use serde::Serialize;

/// CPU used by one watched process (all its threads) during the measured phase.
#[derive(Debug, Clone, Serialize)]
pub struct ProcessCpu {
    /// The process id.
    pub pid: u32,
    /// User plus system CPU seconds.
    pub cpu_secs: f64,
}

/// A snapshot of the watched processes.
#[derive(Debug, Clone)]
pub struct Snapshot {
    ticks: Vec<(u32, Option<u64>)>,
}

/// Clock ticks per second of `/proc` times (USER_HZ, 100 on every Linux we run on).
const USER_HZ: f64 = 100.0;

impl Snapshot {
    /// Reads the CPU times of `pids` now.
    pub fn take(pids: &[u32]) -> Self {
        Self {
            ticks: pids.iter().map(|&pid| (pid, process_ticks(pid))).collect(),
        }
    }

    /// What was used between `self` and `later`.
    pub fn since(&self, later: &Snapshot) -> Vec<ProcessCpu> {
        self.ticks
            .iter()
            .zip(&later.ticks)
            .filter_map(|((pid, a), (_, b))| {
                Some(ProcessCpu {
                    pid: *pid,
                    cpu_secs: (*b)?.saturating_sub((*a)?) as f64 / USER_HZ,
                })
            })
            .collect()
    }
}

/// utime + stime of a process, all threads, in clock ticks.
fn process_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces; fields resume after its closing parenthesis.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_its_own_cpu_time() {
        let me = std::process::id();
        let before = Snapshot::take(&[me]);
        // Burn a little CPU so the counter can only go up.
        let mut x = 0u64;
        for i in 0..5_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        let processes = before.since(&Snapshot::take(&[me]));
        if cfg!(target_os = "linux") {
            assert_eq!(processes.len(), 1);
            assert!(processes[0].cpu_secs >= 0.0);
        }
    }
}
