//! The VM subnet cut into segments, each behind a bridge of its own.
//!
//! A Linux bridge takes at most 1,023 ports (`BR_MAX_PORTS`), so one
//! bridge caps a host at that many VMs whatever the subnet. The subnet is
//! therefore cut into equal, aligned segments (1,024 addresses by
//! default): segment `i` has its own bridge, its gateway (`.1` of the
//! segment, also its resolver) and its broadcast, and a VM's address
//! names its segment. Segments are brought up when their first address
//! is handed out. The rules key on the set of bridges and gateways, so
//! egress policy, DNS and isolation are the same on every segment.

use std::net::Ipv4Addr;

use paddock_core::model::Ipv4Cidr;

use crate::NetError;

/// A Linux bridge holds at most this many ports (`BR_MAX_PORTS`); one
/// number is the bridge's own.
pub const BRIDGE_PORTS: usize = 1023;

/// The default, and the most, addresses of one segment: a power of two
/// whose VMs (less network, gateway and broadcast) fit one bridge.
pub const MAX_SEGMENT_ADDRESSES: u32 = 1024;

/// The fewest: network, gateway and broadcast leave five VMs.
pub const MIN_SEGMENT_ADDRESSES: u32 = 8;

/// One segment: its addresses, bridge and gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    pub index: usize,
    pub cidr: Ipv4Cidr,
    pub bridge: String,
}

impl Segment {
    /// `.1` of the segment: the VMs' default route and resolver.
    pub fn gateway(&self) -> Ipv4Addr {
        self.cidr.nth(1).unwrap_or(self.cidr.addr())
    }

    /// The addresses VMs get: all but network, gateway and broadcast.
    pub fn vm_addresses(&self) -> impl Iterator<Item = Ipv4Addr> + '_ {
        let last = u32::try_from(self.cidr.size() - 1).unwrap_or(u32::MAX);
        (2..last).filter_map(|n| self.cidr.nth(n))
    }

    fn vm_capacity(&self) -> usize {
        usize::try_from(self.cidr.size().saturating_sub(3)).unwrap_or(usize::MAX)
    }
}

/// The segments of one server's subnet.
#[derive(Debug, Clone)]
pub struct Segments {
    subnet: Ipv4Cidr,
    prefix: u8,
    first_bridge: String,
}

impl Segments {
    /// Cuts `subnet` into segments of `addresses` (a power of two from
    /// [`MIN_SEGMENT_ADDRESSES`] to [`MAX_SEGMENT_ADDRESSES`]); a smaller
    /// subnet is one segment. The first segment's bridge is `bridge`; the
    /// others are named after their gateway (`pb` and its hex), unique
    /// on the host and within a link name's 15 characters.
    pub fn new(subnet: Ipv4Cidr, addresses: u32, bridge: &str) -> Result<Self, NetError> {
        if !addresses.is_power_of_two()
            || !(MIN_SEGMENT_ADDRESSES..=MAX_SEGMENT_ADDRESSES).contains(&addresses)
        {
            return Err(NetError::Config(format!(
                "addresses per bridge must be a power of two from {MIN_SEGMENT_ADDRESSES} to \
                 {MAX_SEGMENT_ADDRESSES}, not {addresses}"
            )));
        }
        if subnet.prefix() > 29 {
            return Err(NetError::Exhausted(subnet.to_string()));
        }
        let segment_prefix = u8::try_from(32 - addresses.trailing_zeros()).unwrap_or(32);
        Ok(Self {
            subnet,
            prefix: segment_prefix.max(subnet.prefix()),
            first_bridge: bridge.to_owned(),
        })
    }

    pub fn count(&self) -> usize {
        1usize << (self.prefix - self.subnet.prefix())
    }

    pub fn get(&self, index: usize) -> Option<Segment> {
        if index >= self.count() {
            return None;
        }
        let size = 1u32 << (32 - u32::from(self.prefix));
        let start = self
            .subnet
            .nth(u32::try_from(index).ok()?.checked_mul(size)?)?;
        let cidr = Ipv4Cidr::new(start, self.prefix)?;
        let bridge = if index == 0 {
            self.first_bridge.clone()
        } else {
            format!("pb{:08x}", u32::from(cidr.addr()) + 1)
        };
        Some(Segment {
            index,
            cidr,
            bridge,
        })
    }

    /// The segment `address` belongs to.
    pub fn of(&self, address: Ipv4Addr) -> Option<Segment> {
        if !self.subnet.contains(address) {
            return None;
        }
        let offset = u32::from(address) - u32::from(self.subnet.addr());
        let index = offset >> (32 - u32::from(self.prefix));
        self.get(usize::try_from(index).ok()?)
    }

    pub fn iter(&self) -> impl Iterator<Item = Segment> + '_ {
        (0..self.count()).filter_map(|i| self.get(i))
    }

    /// The `n`th VM address, segment by segment (each segment's first
    /// addresses up to its bridge's ports); `None` past the last.
    pub fn vm_address(&self, n: usize) -> Option<Ipv4Addr> {
        let per = self.get(0)?.vm_capacity().min(BRIDGE_PORTS);
        if per == 0 {
            return None;
        }
        let segment = self.get(n / per)?;
        segment.cidr.nth(u32::try_from(n % per).ok()? + 2)
    }

    /// How many VMs (and prepared namespaces) fit: every segment's
    /// addresses, each within its bridge's ports.
    pub fn capacity(&self) -> usize {
        self.get(0)
            .map(|s| s.vm_capacity().min(BRIDGE_PORTS))
            .unwrap_or(0)
            .saturating_mul(self.count())
    }

    /// The VMs' prefix length: their segment's.
    pub fn prefix(&self) -> u8 {
        self.prefix
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(s: &str) -> Ipv4Cidr {
        Ipv4Cidr::parse(s).expect("cidr")
    }

    #[test]
    fn a_slash_16_is_64_bridges_of_1021_vms() {
        let s = Segments::new(cidr("10.88.0.0/16"), 1024, "paddock0").expect("segments");
        assert_eq!(s.count(), 64);
        assert_eq!(s.prefix(), 22);
        assert_eq!(s.capacity(), 64 * 1021);
        let second = s.get(1).expect("segment 1");
        assert_eq!(second.cidr, cidr("10.88.4.0/22"));
        assert_eq!(
            second.gateway(),
            "10.88.4.1".parse::<Ipv4Addr>().expect("ip")
        );
        assert_eq!(second.bridge, "pb0a580401");
        assert_eq!(s.get(0).expect("segment 0").bridge, "paddock0");
        assert_eq!(s.get(64), None);
        let addresses: Vec<Ipv4Addr> = second.vm_addresses().collect();
        assert_eq!(addresses.len(), 1021);
        assert_eq!(addresses[0], "10.88.4.2".parse::<Ipv4Addr>().expect("ip"));
        assert_eq!(
            addresses[1020],
            "10.88.7.254".parse::<Ipv4Addr>().expect("ip")
        );
    }

    #[test]
    fn vm_addresses_are_numbered_segment_by_segment() {
        let s = Segments::new(cidr("10.88.0.0/16"), 1024, "paddock0").expect("segments");
        let nth = |n| s.vm_address(n).map(|a| a.to_string());
        assert_eq!(nth(0).as_deref(), Some("10.88.0.2"));
        assert_eq!(nth(1020).as_deref(), Some("10.88.3.254"));
        assert_eq!(nth(1021).as_deref(), Some("10.88.4.2"));
        assert_eq!(nth(64 * 1021), None);
        let all: Vec<_> = s
            .iter()
            .flat_map(|g| g.vm_addresses().collect::<Vec<_>>())
            .collect();
        assert!((0..all.len())
            .step_by(997)
            .all(|n| s.vm_address(n) == Some(all[n])));
    }

    #[test]
    fn an_address_names_its_segment() {
        let s = Segments::new(cidr("10.88.0.0/16"), 1024, "paddock0").expect("segments");
        let of = |a: &str| s.of(a.parse().expect("ip")).map(|s| s.index);
        assert_eq!(of("10.88.0.2"), Some(0));
        assert_eq!(of("10.88.7.254"), Some(1));
        assert_eq!(of("10.88.255.254"), Some(63));
        assert_eq!(of("10.89.0.2"), None);
    }

    #[test]
    fn a_small_subnet_is_one_segment() {
        let s = Segments::new(cidr("10.250.3.0/29"), 1024, "pt0").expect("segments");
        assert_eq!((s.count(), s.prefix(), s.capacity()), (1, 29, 5));
        let s = Segments::new(cidr("10.250.3.0/24"), 8, "pt0").expect("segments");
        assert_eq!((s.count(), s.prefix(), s.capacity()), (32, 29, 32 * 5));
    }

    #[test]
    fn segment_sizes_are_checked() {
        for bad in [0, 4, 12, 2048] {
            assert!(
                Segments::new(cidr("10.0.0.0/16"), bad, "b").is_err(),
                "{bad}"
            );
        }
        assert!(Segments::new(cidr("10.0.0.0/30"), 8, "b").is_err());
    }
}
