//! The machine a run measured on, and how busy it was: figures from a
//! shared 2-CPU machine mean little without the load beside them.

use std::process::Command;

/// 1, 5 and 15 minute load averages.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Load(pub f64, pub f64, pub f64);

impl Load {
    /// From `/proc/loadavg`; zeros where it cannot be read.
    pub fn now() -> Load {
        std::fs::read_to_string("/proc/loadavg")
            .ok()
            .and_then(|s| Load::parse(&s))
            .unwrap_or(Load(0.0, 0.0, 0.0))
    }

    pub fn parse(s: &str) -> Option<Load> {
        let mut it = s.split_whitespace().map(str::parse::<f64>);
        Some(Load(it.next()?.ok()?, it.next()?.ok()?, it.next()?.ok()?))
    }
}

impl std::fmt::Display for Load {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:.2} / {:.2} / {:.2}", self.0, self.1, self.2)
    }
}

/// CPU count, CPU model and kernel.
#[derive(Debug, Clone)]
pub struct Machine {
    pub cpus: usize,
    pub cpu_model: String,
    pub kernel: String,
}

impl Machine {
    pub fn probe() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, m)| m.trim().to_string())
            .unwrap_or_else(|| "unknown CPU".into());
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "unknown".into());
        Machine {
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            cpu_model,
            kernel,
        }
    }
}

/// The closing line of a section: the machine, the load around the run
/// and the commit.
pub fn footer(machine: &Machine, before: &Load, after: &Load) -> String {
    format!(
        "Machine: {} CPUs ({}), kernel {}; load {before} before, {after} after; commit {}.\n",
        machine.cpus,
        machine.cpu_model,
        machine.kernel,
        git_commit().unwrap_or_else(|| "unknown".into())
    )
}

/// The commit of the working tree the binaries were built from, with
/// `+dirty` when it has changes; `None` outside a git checkout.
pub fn git_commit() -> Option<String> {
    let out = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let commit = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let dirty = Command::new("git")
        .args(["status", "--porcelain", "--untracked-files=no"])
        .output()
        .ok()
        .is_some_and(|o| !o.stdout.is_empty());
    Some(if dirty {
        format!("{commit}+dirty")
    } else {
        commit
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loadavg() {
        assert_eq!(
            Load::parse("3.94 2.77 1.80 3/412 28610\n"),
            Some(Load(3.94, 2.77, 1.80))
        );
        assert_eq!(Load::parse("x"), None);
        assert_eq!(Load(3.94, 2.77, 1.8).to_string(), "3.94 / 2.77 / 1.80");
    }
}
