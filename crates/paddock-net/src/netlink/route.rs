//! Links, addresses and routes over rtnetlink, with the message types of
//! `netlink-packet-route`: what `ip` did for each VM's veth.

use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::path::Path;

use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL, NLM_F_REQUEST};
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{
    InfoBridgePort, InfoData, InfoKind, InfoPortData, InfoPortKind, InfoVeth, LinkAttribute,
    LinkFlags, LinkInfo, LinkMessage,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::protocols::NETLINK_ROUTE;

use super::{Netlink, NetlinkError};

/// `ENODEV`: no such link.
const ENODEV: i32 = 19;

/// `EBUSY`: before Linux 6.2, what renaming a link that is up answers.
const EBUSY: i32 = 16;

/// The loopback link of a fresh namespace: always index 1.
const LOOPBACK_INDEX: u32 = 1;

fn open() -> Result<Netlink, NetlinkError> {
    Ok(Netlink::open(NETLINK_ROUTE)?)
}

fn index_of(name: &str) -> Result<u32, NetlinkError> {
    nix::net::if_::if_nametoindex(name).map_err(|e| NetlinkError::Refused {
        what: format!("find the link {name}"),
        source: e.into(),
    })
}

fn link(index: u32, attributes: Vec<LinkAttribute>) -> LinkMessage {
    let mut m = LinkMessage::default();
    m.header.index = index;
    m.attributes = attributes;
    m
}

fn up(index: u32) -> LinkMessage {
    let mut m = link(index, Vec::new());
    m.header.flags = LinkFlags::Up;
    m.header.change_mask = LinkFlags::Up;
    m
}

/// Makes the veth pair `port` (in this namespace) and `eth0` (in the
/// namespace `peer_ns`).
pub fn add_veth(port: &str, peer_ns: BorrowedFd<'_>) -> Result<(), NetlinkError> {
    let peer = link(
        0,
        vec![
            LinkAttribute::IfName("eth0".into()),
            LinkAttribute::NetNsFd(peer_ns.as_raw_fd()),
        ],
    );
    let message = link(
        0,
        vec![
            LinkAttribute::IfName(port.into()),
            LinkAttribute::LinkInfo(vec![
                LinkInfo::Kind(InfoKind::Veth),
                LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer))),
            ]),
        ],
    );
    let mut nl = open()?;
    nl.push(
        NLM_F_REQUEST | NLM_F_CREATE | NLM_F_EXCL,
        RouteNetlinkMessage::NewLink(message),
        format!("add the veth {port}"),
    );
    nl.send()
}

/// Puts `port` on `bridge` as an isolated port (ports cannot reach each
/// other) and brings it up.
pub fn join_bridge(port: &str, bridge: &str) -> Result<(), NetlinkError> {
    let index = index_of(port)?;
    let master = index_of(bridge)?;
    let mut nl = open()?;
    nl.push(
        NLM_F_REQUEST,
        RouteNetlinkMessage::SetLink(link(index, vec![LinkAttribute::Controller(master)])),
        format!("put {port} on {bridge}"),
    );
    // A port's bridge options are read by the bridge it is on, so they
    // come once the first message made it one.
    nl.push(
        NLM_F_REQUEST,
        RouteNetlinkMessage::NewLink(link(
            index,
            vec![LinkAttribute::LinkInfo(vec![
                LinkInfo::PortKind(InfoPortKind::Bridge),
                LinkInfo::PortData(InfoPortData::BridgePort(vec![InfoBridgePort::Isolated(
                    true,
                )])),
            ])],
        )),
        format!("isolate {port}"),
    );
    nl.push(
        NLM_F_REQUEST,
        RouteNetlinkMessage::SetLink(up(index)),
        format!("bring {port} up"),
    );
    nl.send()
}

/// Inside a VM's namespace (run on a thread that entered it): `lo` and
/// `eth0` up, `eth0` addressed, and the default route via `gateway`.
pub fn address_inside(
    address: Ipv4Addr,
    prefix: u8,
    gateway: Ipv4Addr,
) -> Result<(), NetlinkError> {
    let eth0 = index_of("eth0")?;
    let mut nl = open()?;
    nl.push(
        NLM_F_REQUEST,
        RouteNetlinkMessage::SetLink(up(LOOPBACK_INDEX)),
        "bring lo up",
    );
    let mut addr = AddressMessage::default();
    addr.header.family = AddressFamily::Inet;
    addr.header.prefix_len = prefix;
    addr.header.index = eth0;
    addr.attributes = vec![
        AddressAttribute::Local(address.into()),
        AddressAttribute::Address(address.into()),
    ];
    nl.push(
        NLM_F_REQUEST | NLM_F_CREATE | NLM_F_EXCL,
        RouteNetlinkMessage::NewAddress(addr),
        format!("address eth0 as {address}/{prefix}"),
    );
    nl.push(
        NLM_F_REQUEST,
        RouteNetlinkMessage::SetLink(up(eth0)),
        "bring eth0 up",
    );
    let mut route = RouteMessage::default();
    route.header = RouteHeader {
        address_family: AddressFamily::Inet,
        table: RouteHeader::RT_TABLE_MAIN,
        protocol: RouteProtocol::Boot,
        scope: RouteScope::Universe,
        kind: RouteType::Unicast,
        ..RouteHeader::default()
    };
    route.attributes = vec![RouteAttribute::Gateway(RouteAddress::Inet(gateway))];
    nl.push(
        NLM_F_REQUEST | NLM_F_CREATE | NLM_F_EXCL,
        RouteNetlinkMessage::NewRoute(route),
        format!("route via {gateway}"),
    );
    nl.send()
}

/// Runs `f` on a thread inside the network namespace pinned at `netns`:
/// namespaces are per thread, so the server's own threads never leave
/// the host's.
pub fn in_namespace<T: Send + 'static>(
    netns: &Path,
    f: impl FnOnce() -> Result<T, NetlinkError> + Send + 'static,
) -> Result<T, NetlinkError> {
    let ns = std::fs::File::open(netns)?;
    std::thread::spawn(move || {
        nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET)
            .map_err(std::io::Error::from)?;
        f()
    })
    .join()
    .map_err(|_| NetlinkError::Io(std::io::Error::other("the namespace thread panicked")))?
}

/// Takes links out of service at once, for [`delete_group`] to delete
/// later: each `(name, new_name)` renamed to `new_name`, so that its
/// name is free, and put in `group`, in one request. A link's deletion
/// waits out RCU grace periods (15-40 ms on this kind of host) where
/// this does not. A link already gone is not an error.
///
/// The link stays up, and on its bridge, until deleted: taking it down
/// would cost a grace period of its own (closing a device waits for
/// its queues' readers) and a carrier change the kernel's link watch
/// handles under the rtnl lock, both on the delete's path; leaving a
/// bridge walks every port of it (features, MTU, forwarding entries).
/// Its frames are dropped by name (the caller's ruleset matches the
/// retired names' prefix). A kernel older than 6.2 renames only a link
/// that is down (`EBUSY`): those are taken down first, as before.
pub fn retire(links: &[(String, String)], group: u32) -> Result<(), NetlinkError> {
    let mut nl = open()?;
    let mut sent = Vec::new();
    for (name, new_name) in links {
        let index = match index_of(name) {
            Ok(i) => i,
            Err(e) if e.errno() == Some(ENODEV) => continue,
            Err(e) => return Err(e),
        };
        nl.push(
            NLM_F_REQUEST,
            RouteNetlinkMessage::SetLink(link(
                index,
                vec![
                    LinkAttribute::IfName(new_name.clone()),
                    LinkAttribute::Group(group),
                ],
            )),
            format!("retire {name} as {new_name}"),
        );
        sent.push((index, name, new_name));
    }
    let refusals = nl.send_each()?;
    if !refusals.iter().any(|e| e.errno() == Some(EBUSY)) {
        return first_but_gone(refusals);
    }
    // Only the links still under their old names are left to retire.
    for (index, name, new_name) in sent {
        if index_of(name).ok() != Some(index) {
            continue;
        }
        let mut down = link(index, vec![LinkAttribute::Group(group)]);
        down.header.change_mask = LinkFlags::Up;
        nl.push(
            NLM_F_REQUEST,
            RouteNetlinkMessage::SetLink(down),
            format!("take {name} down"),
        );
        nl.push(
            NLM_F_REQUEST,
            RouteNetlinkMessage::SetLink(link(
                index,
                vec![LinkAttribute::IfName(new_name.clone())],
            )),
            format!("rename {name} to {new_name}"),
        );
    }
    first_but_gone(nl.send_each()?)
}

/// The first refusal that is not "no such link".
fn first_but_gone(refusals: Vec<NetlinkError>) -> Result<(), NetlinkError> {
    match refusals.into_iter().find(|e| e.errno() != Some(ENODEV)) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Deletes every link in `group`: one batch in the kernel, so one grace
/// period for them all.
pub fn delete_group(group: u32) -> Result<(), NetlinkError> {
    let mut nl = open()?;
    nl.push(
        NLM_F_REQUEST,
        RouteNetlinkMessage::DelLink(link(0, vec![LinkAttribute::Group(group)])),
        format!("delete the links of group {group}"),
    );
    first_but_gone(nl.send_each()?)
}

/// Deletes the links named `names` (a veth takes its peer with it), in
/// one request each sent together; a link already gone is not an error.
pub fn delete_links(names: &[String]) -> Result<(), NetlinkError> {
    if names.is_empty() {
        return Ok(());
    }
    let mut nl = open()?;
    for name in names {
        nl.push(
            NLM_F_REQUEST,
            RouteNetlinkMessage::DelLink(link(0, vec![LinkAttribute::IfName(name.clone())])),
            format!("delete the link {name}"),
        );
    }
    // Each request stands alone: one that found its link gone does not
    // keep the others from going.
    first_but_gone(nl.send_each()?)
}
