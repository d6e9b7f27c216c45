//! The processes that provision sandboxes, as this machine sees them: which
//! one this is, and whether a recorded one still runs (`/proc`). Apart from
//! `model` so that the record types stay plain data.

use crate::model::Worker;

/// This process, to record on a sandbox it provisions.
pub fn current() -> Worker {
    Worker {
        pid: std::process::id(),
        boot_id: boot_id(),
    }
}

/// Whether `w` still runs: `Some(false)` when it is certainly gone (same
/// boot, no such pid or a zombie), `None` when this machine cannot tell
/// (another machine or boot).
pub fn is_alive(w: &Worker) -> Option<bool> {
    if w.boot_id.is_empty() || w.boot_id != boot_id() {
        return None;
    }
    match std::fs::read_to_string(format!("/proc/{}/stat", w.pid)) {
        Err(_) => Some(false),
        Ok(stat) => Some(stat_says_running(&stat)),
    }
}

/// Whether a `/proc/PID/stat` text describes a process that runs: not a
/// zombie (PID 1 of a container may never reap an orphan) nor dead. The
/// state field follows the parenthesised command name, which may itself
/// hold `)`.
pub fn stat_says_running(stat: &str) -> bool {
    match stat.rsplit_once(") ") {
        Some((_, rest)) => !matches!(rest.chars().next(), None | Some('Z' | 'X' | 'x')),
        None => false,
    }
}

/// The machine's boot id (`/proc/sys/kernel/random/boot_id`), empty when
/// it cannot be read.
fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_alive_and_a_stranger_is_unknown() {
        let me = current();
        assert_eq!(is_alive(&me), Some(true));
        let other_boot = Worker {
            pid: me.pid,
            boot_id: "another-boot".into(),
        };
        assert_eq!(is_alive(&other_boot), None);
        assert!(!stat_says_running("12 (sh) Z 1 2 3"));
        assert!(!stat_says_running("12 (sh) X 1 2 3"));
        assert!(stat_says_running("12 (a) b) S 1 2 3"));
        assert!(!stat_says_running("garbage"));
    }
}
