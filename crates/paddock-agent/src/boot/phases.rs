//! How long each step of a boot took. The boot helper prints it after the
//! sandbox's pid and the server logs it at debug level, so where boots
//! spend their time under load (a kernel lock, an RCU grace period) can be
//! read off a running server instead of guessed.

use std::fmt;
use std::time::{Duration, Instant};

pub struct Phases {
    last: Instant,
    taken: Vec<(&'static str, Duration)>,
}

impl Phases {
    pub fn start() -> Self {
        Self {
            last: Instant::now(),
            taken: Vec::with_capacity(16),
        }
    }

    /// Records the time since the previous mark as `step`'s.
    pub fn mark(&mut self, step: &'static str) {
        let now = Instant::now();
        self.taken.push((step, now - self.last));
        self.last = now;
    }
}

/// `step=µs step=µs …`, one token per step.
impl fmt::Display for Phases {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (step, took)) in self.taken.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            write!(f, "{step}={}", took.as_micros())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_each_step_once_in_order() {
        let mut p = Phases::start();
        p.mark("first");
        p.mark("second");
        let text = p.to_string();
        let steps: Vec<&str> = text
            .split(' ')
            .map(|t| t.split_once('=').map(|(s, _)| s).unwrap_or(""))
            .collect();
        assert_eq!(steps, ["first", "second"]);
        assert!(text.split(' ').all(|t| t
            .split_once('=')
            .is_some_and(|(_, us)| us.parse::<u64>().is_ok())));
    }
}
