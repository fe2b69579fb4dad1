//! Reading processes from /proc: enough to tell whether a recorded
//! sandbox's PID 1 is still the process we started.

use std::collections::HashMap;
use std::fs;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Mutex;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

/// The start time of `pid` in clock ticks since boot (field 22 of
/// `/proc/PID/stat`), which tells a recycled pid from the original.
pub fn start_ticks(pid: i32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_start_ticks(&stat)
}

fn parse_start_ticks(stat: &str) -> Option<u64> {
    // The command name (field 2) is in parentheses and may hold spaces or
    // parentheses itself: fields are counted after its last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    // After ')' come field 3 (state) onwards; field 22 is the 20th of them.
    let state = fields.next()?;
    if state == "Z" || state == "X" {
        return None;
    }
    fields.nth(18)?.parse().ok()
}

pub fn is_running(pid: i32, expected_ticks: u64) -> bool {
    start_ticks(pid) == Some(expected_ticks)
}

/// Whether recorded sandboxes' PID 1s still run, each told through a
/// pidfd opened at its first check (when its start time is checked
/// against the one recorded: the fd then refers to that very process,
/// whatever later reuses its pid). A check after that is one `poll`,
/// where [`is_running`] opens `/proc/PID/stat`, which the kernel formats
/// whole: the sweeper checks every running sandbox every two seconds,
/// and with 3,000 idle ones that reading was the largest part of the
/// idle server's CPU. One file per live sandbox; where none can be
/// opened (the open-file limit reached), a check reads `/proc`.
#[derive(Default)]
pub struct Liveness {
    open: Mutex<Watched>,
}

#[derive(Default)]
struct Watched {
    fds: HashMap<(i32, u64), OwnedFd>,
    /// How many were open after the last pass that closed the fds of
    /// processes gone (those no check came back for: deleted sandboxes
    /// whose teardown did not [`Liveness::forget`] them).
    after_last_prune: usize,
}

impl Liveness {
    pub fn is_running(&self, pid: i32, expected_ticks: u64) -> bool {
        let Ok(mut watched) = self.open.lock() else {
            return is_running(pid, expected_ticks);
        };
        let key = (pid, expected_ticks);
        if let Some(fd) = watched.fds.get(&key) {
            return match has_exited(fd) {
                Some(false) => true,
                Some(true) => {
                    watched.fds.remove(&key);
                    false
                }
                None => is_running(pid, expected_ticks),
            };
        }
        let Ok(fd) = crate::sys::pidfd_open(pid) else {
            return is_running(pid, expected_ticks);
        };
        // Checked after the fd is open: if `pid` is the process recorded
        // now, the fd is that process.
        if !is_running(pid, expected_ticks) || has_exited(&fd) == Some(true) {
            return false;
        }
        watched.fds.insert(key, fd);
        if watched.fds.len() >= 2 * watched.after_last_prune.max(64) {
            watched.fds.retain(|_, fd| has_exited(fd) != Some(true));
            watched.after_last_prune = watched.fds.len();
        }
        true
    }

    /// Closes the fd of `pid` (started at `ticks`), whose sandbox is
    /// being torn down.
    pub fn forget(&self, pid: i32, ticks: u64) {
        if let Ok(mut watched) = self.open.lock() {
            watched.fds.remove(&(pid, ticks));
        }
    }
}

/// A pidfd polls readable once its process has exited (a zombie too);
/// `None` when the poll fails and `/proc` is to tell instead.
fn has_exited(fd: &OwnedFd) -> Option<bool> {
    let mut polled = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
    poll(&mut polled, PollTimeout::ZERO)
        .ok()
        .map(|ready| ready > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_start_time_after_odd_names() {
        let stat =
            "123 (a) b) c) S 1 123 123 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 98765 1000 10";
        assert_eq!(parse_start_ticks(stat), Some(98765));
    }

    #[test]
    fn zombies_are_not_running() {
        let stat = "123 (x) Z 1 123 123 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 98765 1000 10";
        assert_eq!(parse_start_ticks(stat), None);
    }

    #[test]
    fn a_watched_process_runs_until_it_exits_and_a_recycled_pid_is_not_it() {
        let liveness = Liveness::default();
        let mut child = std::process::Command::new("sleep")
            .arg("60")
            .spawn()
            .expect("spawn sleep");
        let pid = child.id() as i32;
        let ticks = start_ticks(pid).expect("child's stat");
        assert!(liveness.is_running(pid, ticks));
        assert!(liveness.is_running(pid, ticks), "answered from its pidfd");
        assert!(!liveness.is_running(pid, ticks + 1), "another start time");
        child.kill().expect("kill");
        // A zombie until reaped: exited all the same.
        let gone = std::time::Instant::now();
        while liveness.is_running(pid, ticks) {
            assert!(gone.elapsed().as_secs() < 10, "still running");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        child.wait().expect("reap");
        assert!(!liveness.is_running(pid, ticks));
        assert!(liveness.open.lock().expect("lock").fds.is_empty());
    }

    #[test]
    fn forgetting_closes_the_fd() {
        let liveness = Liveness::default();
        let me = std::process::id() as i32;
        let ticks = start_ticks(me).expect("own stat");
        assert!(liveness.is_running(me, ticks));
        assert_eq!(liveness.open.lock().expect("lock").fds.len(), 1);
        liveness.forget(me, ticks);
        assert!(liveness.open.lock().expect("lock").fds.is_empty());
    }

    #[test]
    fn reads_own_process() {
        let me = std::process::id() as i32;
        let ticks = start_ticks(me).expect("own stat is readable");
        assert!(is_running(me, ticks));
        assert!(!is_running(me, ticks + 1));
    }
}
