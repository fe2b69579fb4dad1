//! Which VM addresses are held, and which one is handed out next, at a
//! cost that does not grow with the number of VMs: the lowest address
//! freed and rested, else the next never handed out (a cursor), else the
//! one that has rested longest. An address just freed rests for a
//! cool-down first: its old neighbours' ARP caches and the conntrack
//! entries of its old flows still name it, and whoever released it may
//! still be checking that its port is gone.

use std::collections::{BTreeSet, VecDeque};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

/// Hands out addresses by their ordinal among all VM addresses.
pub(crate) trait Ordinals {
    /// The `n`th VM address, segment by segment; `None` past the last.
    fn vm_address(&self, n: usize) -> Option<Ipv4Addr>;
}

impl Ordinals for crate::segment::Segments {
    fn vm_address(&self, n: usize) -> Option<Ipv4Addr> {
        crate::segment::Segments::vm_address(self, n)
    }
}

#[derive(Debug, Default)]
pub(crate) struct AddressPool {
    /// Held: by a VM or a prepared namespace.
    used: BTreeSet<Ipv4Addr>,
    /// Freed and rested: handed out again, lowest first.
    rested: BTreeSet<Ipv4Addr>,
    /// Freed less than the cool-down ago, oldest first.
    cooling: VecDeque<(Instant, Ipv4Addr)>,
    /// The ordinal of the next address not handed out since the last
    /// reset (those below it are held, rested or cooling).
    fresh: usize,
}

impl AddressPool {
    pub(crate) fn held(&self) -> usize {
        self.used.len()
    }

    /// The next address, now held; `None` when every address is held.
    pub(crate) fn allocate(
        &mut self,
        ordinals: &impl Ordinals,
        cool_down: Duration,
        now: Instant,
    ) -> Option<Ipv4Addr> {
        while let Some(&(at, a)) = self.cooling.front() {
            if now.duration_since(at) < cool_down {
                break;
            }
            self.cooling.pop_front();
            if !self.used.contains(&a) {
                self.rested.insert(a);
            }
        }
        // Past the cursor, the first address nobody holds (after a reset
        // some are held already).
        while let Some(a) = ordinals.vm_address(self.fresh) {
            if !self.used.contains(&a) {
                break;
            }
            self.fresh += 1;
        }
        let fresh = ordinals.vm_address(self.fresh);
        let rested = self.rested.first().copied();
        let chosen = match (rested, fresh) {
            (Some(r), Some(f)) if r < f => self.rested.pop_first(),
            (Some(_), None) => self.rested.pop_first(),
            (_, Some(f)) => {
                self.fresh += 1;
                Some(f)
            }
            (None, None) => {
                // Only cooling addresses are left: the one freed longest ago.
                let oldest = self
                    .cooling
                    .iter()
                    .position(|(_, a)| !self.used.contains(a))?;
                self.cooling.remove(oldest).map(|(_, a)| a)
            }
        }?;
        self.used.insert(chosen);
        Some(chosen)
    }

    pub(crate) fn free(&mut self, address: Ipv4Addr, now: Instant) {
        if self.used.remove(&address) {
            self.cooling.push_back((now, address));
        }
    }

    /// Holds exactly `keep` (what a reconcile found in use): every other
    /// address is free, the cursor starts over.
    pub(crate) fn reset(&mut self, keep: BTreeSet<Ipv4Addr>) {
        self.used = keep;
        self.rested.clear();
        self.cooling.clear();
        self.fresh = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ten addresses, 10.0.0.2 to 10.0.0.11.
    struct Ten;

    impl Ordinals for Ten {
        fn vm_address(&self, n: usize) -> Option<Ipv4Addr> {
            (n < 10).then(|| Ipv4Addr::new(10, 0, 0, 2 + n as u8))
        }
    }

    const REST: Duration = Duration::from_secs(5);

    fn ip(last: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, 0, 0, last)
    }

    #[test]
    fn the_lowest_free_address_comes_first_and_a_freed_one_rests() {
        let mut pool = AddressPool::default();
        let t = Instant::now();
        assert_eq!(pool.allocate(&Ten, REST, t), Some(ip(2)));
        assert_eq!(pool.allocate(&Ten, REST, t), Some(ip(3)));
        pool.free(ip(2), t);
        // Freed moments ago: the next fresh one comes before it.
        assert_eq!(pool.allocate(&Ten, REST, t), Some(ip(4)));
        // Rested: it is the lowest free again.
        assert_eq!(pool.allocate(&Ten, REST, t + REST), Some(ip(2)));
        assert_eq!(pool.held(), 3);
    }

    #[test]
    fn cooling_addresses_are_used_when_nothing_else_is_free() {
        let mut pool = AddressPool::default();
        let t = Instant::now();
        for _ in 0..10 {
            assert!(pool.allocate(&Ten, REST, t).is_some());
        }
        assert_eq!(pool.allocate(&Ten, REST, t), None);
        pool.free(ip(7), t);
        pool.free(ip(4), t + Duration::from_secs(1));
        // Both cool: the one freed first goes first.
        assert_eq!(
            pool.allocate(&Ten, REST, t + Duration::from_secs(2)),
            Some(ip(7))
        );
        assert_eq!(
            pool.allocate(&Ten, REST, t + Duration::from_secs(2)),
            Some(ip(4))
        );
        assert_eq!(pool.allocate(&Ten, REST, t + Duration::from_secs(2)), None);
    }

    #[test]
    fn a_reset_keeps_what_is_held_and_frees_the_rest() {
        let mut pool = AddressPool::default();
        let t = Instant::now();
        for _ in 0..5 {
            pool.allocate(&Ten, REST, t);
        }
        pool.reset([ip(3), ip(5)].into());
        let handed: Vec<_> = (0..4)
            .filter_map(|_| pool.allocate(&Ten, REST, t))
            .collect();
        assert_eq!(handed, vec![ip(2), ip(4), ip(6), ip(7)]);
        assert_eq!(pool.held(), 6);
    }

    #[test]
    fn many_addresses_cost_the_same_to_hand_out() {
        struct Many;
        impl Ordinals for Many {
            fn vm_address(&self, n: usize) -> Option<Ipv4Addr> {
                (n < 60_000).then(|| Ipv4Addr::from(0x0a00_0000 + n as u32))
            }
        }
        let mut pool = AddressPool::default();
        let t = Instant::now();
        for _ in 0..50_000 {
            pool.allocate(&Many, REST, t).expect("free");
        }
        // Each hand-out looks at its own address, not at every held one.
        assert_eq!(pool.fresh, 50_000);
    }
}
