//! Reading processes from /proc: enough to tell whether a recorded
//! sandbox's PID 1 is still the process we started.

use std::fs;

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
    fn reads_own_process() {
        let me = std::process::id() as i32;
        let ticks = start_ticks(me).expect("own stat is readable");
        assert!(is_running(me, ticks));
        assert!(!is_running(me, ticks + 1));
    }
}
