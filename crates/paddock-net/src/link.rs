//! Links on the host: the bridge and each VM's veth pair. A VM's veth is
//! made and deleted over rtnetlink from the server ([`crate::netlink::route`]):
//! they come and go with every VM, and an `ip` process each cost more
//! than the change. The bridges, made once per segment, go through
//! iproute2's batch mode (`ip -b -`), the interface every distribution
//! ships and documents.

use std::net::Ipv4Addr;
use std::os::fd::AsFd;
use std::path::Path;
use std::process::Stdio;

use paddock_core::model::Ipv4Cidr;
use tokio::io::AsyncWriteExt;

use crate::netlink::{blocking, route};
use crate::NetError;

/// The host-side name of a VM's veth: `vp` and its address in hex, unique
/// on the host and within the 15 characters a link name may have.
pub fn port_name(address: Ipv4Addr) -> String {
    format!("vp{:08x}", u32::from(address))
}

/// The address a port name was made from.
pub fn port_address(name: &str) -> Option<Ipv4Addr> {
    let hex = name.strip_prefix("vp")?;
    (hex.len() == 8)
        .then(|| u32::from_str_radix(hex, 16).ok())
        .flatten()
        .map(Ipv4Addr::from)
}

/// Runs `prefix… ip -b -` with `batch` on stdin.
async fn ip_batch(prefix: &[&str], batch: &str, force: bool) -> Result<(), NetError> {
    let (program, mut args): (&str, Vec<&str>) = match prefix.split_first() {
        Some((p, rest)) => (p, rest.to_vec()),
        None => ("ip", Vec::new()),
    };
    if !prefix.is_empty() {
        args.push("ip");
    }
    if force {
        args.push("-force");
    }
    args.extend(["-b", "-"]);
    let tool_err = |e: std::io::Error| NetError::Tool {
        tool: "ip",
        message: e.to_string(),
    };
    let mut child = tokio::process::Command::new(program)
        .args(&args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(tool_err)?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(batch.as_bytes()).await.map_err(tool_err)?;
    }
    let out = child.wait_with_output().await.map_err(tool_err)?;
    if out.status.success() {
        Ok(())
    } else {
        Err(NetError::Tool {
            tool: "ip",
            message: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        })
    }
}

/// Creates the bridge with the gateway address unless it exists.
///
/// The bridge gets a fixed MAC address. Left to itself, Linux gives a
/// bridge the lowest MAC among its ports and changes it whenever a port
/// with a lower one joins or the lowest leaves: every VM's ARP entry for
/// the gateway then points at a MAC nobody answers to, and its DNS and
/// connections time out until the entry expires. A MAC that was set is
/// never changed by the kernel.
pub async fn ensure_bridge(
    bridge: &str,
    gateway: Ipv4Addr,
    subnet: Ipv4Cidr,
) -> Result<(), NetError> {
    if !Path::new("/sys/class/net").join(bridge).exists() {
        ip_batch(&[], &format!("link add {bridge} type bridge\n"), false).await?;
    }
    without_ipv6(bridge)?;
    // `replace` makes the address idempotent.
    ip_batch(
        &[],
        &format!(
            "link set {bridge} address {mac}\naddr replace {gateway}/{prefix} dev {bridge}\n\
             link set {bridge} up\n",
            mac = gateway_mac(gateway),
            prefix = subnet.prefix()
        ),
        false,
    )
    .await
}

/// The bridge's MAC: locally administered (`02:`), unicast, and derived
/// from the gateway address so that it is the same after a restart.
fn gateway_mac(gateway: Ipv4Addr) -> String {
    let [a, b, c, d] = gateway.octets();
    format!("02:70:{a:02x}:{b:02x}:{c:02x}:{d:02x}")
}

/// Wires a prepared namespace: a veth whose host end joins the bridge as
/// an isolated port (ports cannot reach each other) and whose other end
/// is the VM's `eth0` with its address and default route.
pub async fn wire(
    netns: &Path,
    bridge: &str,
    address: Ipv4Addr,
    gateway: Ipv4Addr,
    prefix: u8,
) -> Result<(), NetError> {
    let port = port_name(address);
    let (netns, bridge) = (netns.to_path_buf(), bridge.to_owned());
    blocking(move || {
        let ns = std::fs::File::open(&netns).map_err(|source| NetError::Host {
            what: format!("open the namespace {}", netns.display()),
            source,
        })?;
        route::add_veth(&port, ns.as_fd())?;
        without_ipv6(&port)?;
        route::join_bridge(&port, &bridge)?;
        route::in_namespace(&netns, move || {
            route::address_inside(address, prefix, gateway)
        })?;
        Ok(())
    })
    .await
}

/// Turns IPv6 off on a host-side link before it comes up. VMs have IPv4
/// only (the rules refuse their IPv6), and each link with IPv6 puts
/// routes of its own in the host's one IPv6 table, which the kernel walks
/// whole whenever any link goes down: at 5,000 VMs (15,000 routes) that
/// walk led the profile of deleting them.
fn without_ipv6(link: &str) -> Result<(), NetError> {
    let knob = Path::new("/proc/sys/net/ipv6/conf")
        .join(link)
        .join("disable_ipv6");
    match std::fs::write(&knob, "1") {
        Ok(()) => Ok(()),
        // A kernel without IPv6 has nothing to turn off.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(NetError::Host {
            what: knob.display().to_string(),
            source,
        }),
    }
}

/// Deletes a VM's veth (both ends go); a missing one is not an error.
/// The kernel also deletes a veth by itself when the namespace holding
/// its other end dies, so the port may vanish while this runs.
pub async fn remove_port(address: Ipv4Addr) -> Result<(), NetError> {
    remove_ports(&[address]).await
}

/// Deletes the veths of many VMs, sent together; missing ones are
/// skipped.
pub async fn remove_ports(addresses: &[Ipv4Addr]) -> Result<(), NetError> {
    let names: Vec<String> = addresses.iter().map(|a| port_name(*a)).collect();
    if names.is_empty() {
        return Ok(());
    }
    blocking(move || Ok(route::delete_links(&names)?)).await
}

/// The link group a server's retired ports wait in until they are
/// deleted: from its bridge's name, so each server reaps its own, and
/// never 0 (every other link's group).
pub fn retired_group(bridge: &str) -> u32 {
    // FNV-1a: stable across builds, unlike std's hasher.
    let hash = bridge.bytes().fold(0x811c_9dc5_u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    hash | 0x8000_0000
}

/// What the names of the ports retired into `group` start with: `vx`
/// and the group's low bits. The ruleset drops every frame to or from a
/// link so named (a retired port stays up: see [`retire_ports`]).
pub fn retired_prefix(group: u32) -> String {
    format!("vx{:04x}", group & 0xffff)
}

/// A name no link on the host has, for a retired port: its group's
/// [`retired_prefix`] and a number that only grows (seeded from the
/// clock, so a restarted server does not reuse its predecessor's).
fn retired_name(group: u32) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: std::sync::OnceLock<AtomicU64> = std::sync::OnceLock::new();
    let next = NEXT.get_or_init(|| {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64);
        AtomicU64::new(now)
    });
    let n = next.fetch_add(1, Ordering::Relaxed) & 0xf_ffff_ffff;
    format!("{}{n:09x}", retired_prefix(group))
}

/// Takes the ports of `addresses` out of service at once (renamed into
/// `group`'s names, which the ruleset drops every frame of: the VM is
/// cut off and its port's name is free) and leaves them in `group` for
/// [`reap`], off the caller's path: deleting a link waits out RCU grace
/// periods, tens of milliseconds each.
pub async fn retire_ports(addresses: &[Ipv4Addr], group: u32) -> Result<(), NetError> {
    let links: Vec<(String, String)> = addresses
        .iter()
        .map(|a| (port_name(*a), retired_name(group)))
        .collect();
    if links.is_empty() {
        return Ok(());
    }
    blocking(move || Ok(route::retire(&links, group)?)).await
}

/// Deletes every retired port in `group` (their VMs' ends go with them),
/// all in one batch.
pub async fn reap(group: u32) -> Result<(), NetError> {
    blocking(move || Ok(route::delete_group(group)?)).await
}

/// The VM ports attached to `bridge`.
pub fn ports_of(bridge: &str) -> Vec<String> {
    let dir = Path::new("/sys/class/net").join(bridge).join("brif");
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| port_address(n).is_some())
                .collect()
        })
        .unwrap_or_default()
}

/// Removes the bridge (for `paddock purge`).
pub async fn remove_bridge(bridge: &str) -> Result<(), NetError> {
    if !Path::new("/sys/class/net").join(bridge).exists() {
        return Ok(());
    }
    ip_batch(&[], &format!("link del {bridge}\n"), true).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gateway_mac_is_local_unicast_and_stable() {
        let mac = gateway_mac(Ipv4Addr::new(10, 106, 0, 1));
        assert_eq!(mac, "02:70:0a:6a:00:01");
        let first = u8::from_str_radix(&mac[..2], 16).expect("hex");
        assert_eq!(first & 0b11, 0b10, "locally administered, unicast");
    }

    #[test]
    fn retired_ports_get_fresh_names_in_their_servers_group() {
        let group = retired_group("paddock0");
        assert_eq!(group, retired_group("paddock0"));
        assert_ne!(group, retired_group("paddock1"));
        assert_ne!(group, 0);
        let (a, b) = (retired_name(group), retired_name(group));
        assert_ne!(a, b);
        assert!(a.len() <= 15 && a.starts_with("vx"), "{a}");
        assert_eq!(port_address(&a), None, "not taken for a VM port");
    }

    #[test]
    fn port_names_round_trip() {
        let a: Ipv4Addr = "10.88.1.2".parse().expect("ip");
        let n = port_name(a);
        assert!(n.len() <= 15);
        assert_eq!(port_address(&n), Some(a));
        assert_eq!(port_address("eth0"), None);
        assert_eq!(port_address("vpzz"), None);
    }
}
