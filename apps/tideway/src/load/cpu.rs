//! CPU time of watched processes during the measured phase (Linux `/proc`), so a benchmark
//! can report requests per CPU-second of the process under test without counting the
//! generator's setup (registering users hashes passwords on the target).

use serde::Serialize;

/// CPU used by one watched process (all its threads) during the measured phase.
#[derive(Debug, Clone, Serialize)]
pub struct ProcessCpu {
    /// The process id.
    pub pid: u32,
    /// User plus system CPU seconds.
    pub cpu_secs: f64,
}

/// The whole machine during the measured phase, from `/proc/stat`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct MachineCpu {
    /// Busy CPU seconds, all processes (steal excluded).
    pub busy_secs: f64,
    /// CPU seconds stolen by the hypervisor.
    pub steal_secs: f64,
    /// All CPU seconds (busy, idle, iowait, steal).
    pub total_secs: f64,
}

/// A snapshot of the watched processes and the machine.
#[derive(Debug, Clone)]
pub struct Snapshot {
    ticks: Vec<(u32, Option<u64>)>,
    machine: Option<[u64; 3]>,
}

/// Clock ticks per second of `/proc` times (USER_HZ, 100 on every Linux we run on).
const USER_HZ: f64 = 100.0;

impl Snapshot {
    /// Reads the CPU times of `pids` and of the machine now.
    pub fn take(pids: &[u32]) -> Self {
        Self {
            ticks: pids.iter().map(|&pid| (pid, process_ticks(pid))).collect(),
            machine: machine_ticks(),
        }
    }

    /// What was used between `self` and `later`.
    pub fn since(&self, later: &Snapshot) -> (Vec<ProcessCpu>, Option<MachineCpu>) {
        let processes = self
            .ticks
            .iter()
            .zip(&later.ticks)
            .filter_map(|((pid, a), (_, b))| {
                Some(ProcessCpu {
                    pid: *pid,
                    cpu_secs: (*b)?.saturating_sub((*a)?) as f64 / USER_HZ,
                })
            })
            .collect();
        let machine = match (self.machine, later.machine) {
            (Some(a), Some(b)) => Some(MachineCpu {
                busy_secs: b[0].saturating_sub(a[0]) as f64 / USER_HZ,
                steal_secs: b[1].saturating_sub(a[1]) as f64 / USER_HZ,
                total_secs: b[2].saturating_sub(a[2]) as f64 / USER_HZ,
            }),
            _ => None,
        };
        (processes, machine)
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

/// Busy, steal and total ticks of the machine.
fn machine_ticks() -> Option<[u64; 3]> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal
    let busy = v.first()? + v.get(1)? + v.get(2)? + v.get(5)? + v.get(6)?;
    let steal = *v.get(7)?;
    let total = busy + v.get(3)? + v.get(4)? + steal;
    Some([busy, steal, total])
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
        let (processes, machine) = before.since(&Snapshot::take(&[me]));
        if cfg!(target_os = "linux") {
            assert_eq!(processes.len(), 1);
            assert!(processes[0].cpu_secs >= 0.0);
            assert!(machine.is_some_and(|m| m.total_secs >= m.busy_secs));
        }
    }
}
