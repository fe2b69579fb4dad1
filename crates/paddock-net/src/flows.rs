//! Watching a VM's connections: a packet socket on the VM's host-side
//! veth sees every frame it sends and receives. Each TCP connection or
//! UDP exchange the VM starts becomes a flow — its far end, the payload
//! bytes each way, whether the far end answered, and (when asked for)
//! the first bytes each way — told once it ends (a reset, both sides'
//! FIN, or quiet for [`IDLE_END`]). The VM's DNS answers, which pass on
//! the same veth, name the addresses it looked up. Connections into the
//! VM (a share's traffic) are not its egress and are left out, as is its
//! DNS traffic to its gateway.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use etherparse::{NetSlice, SlicedPacket, TransportSlice};
use nix::sys::socket::{socket, AddressFamily, SockFlag, SockProtocol, SockType};
use paddock_core::clock::Timestamp;
use paddock_core::network_backend::EgressFlow;
use tokio::sync::mpsc;

/// A flow quiet this long has ended.
const IDLE_END: Duration = Duration::from_secs(15);

/// The most bytes of content kept each way.
const CONTENT_KEPT: usize = 64 << 10;

/// The most names remembered from DNS answers.
const NAMES_KEPT: usize = 4096;

/// The most flows followed at once; past it, new ones are not.
const FLOWS_FOLLOWED: usize = 16_384;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Key {
    udp: bool,
    local_port: u16,
    remote: SocketAddrV4,
}

struct Flow {
    started_at: Timestamp,
    started: Instant,
    last: Instant,
    bytes_out: u64,
    bytes_in: u64,
    established: bool,
    fin_out: bool,
    fin_in: bool,
    content_out: Option<BytesMut>,
    content_in: Option<BytesMut>,
}

/// What the watch knows: the flows under way and the names looked up.
struct Watch {
    vm: Ipv4Addr,
    gateway: Ipv4Addr,
    content: bool,
    flows: HashMap<Key, Flow>,
    names: HashMap<Ipv4Addr, String>,
}

fn keep(content: &mut Option<BytesMut>, payload: &[u8]) {
    if let Some(kept) = content {
        let room = CONTENT_KEPT.saturating_sub(kept.len());
        kept.extend_from_slice(&payload[..payload.len().min(room)]);
    }
}

impl Watch {
    fn new(vm: Ipv4Addr, gateway: Ipv4Addr, content: bool) -> Self {
        Self {
            vm,
            gateway,
            content,
            flows: HashMap::new(),
            names: HashMap::new(),
        }
    }

    /// Takes one frame; the flow it ended, if it ended one.
    fn frame(&mut self, frame: &[u8], now: Instant) -> Option<EgressFlow> {
        let packet = SlicedPacket::from_ethernet(frame).ok()?;
        let Some(NetSlice::Ipv4(ip)) = &packet.net else {
            return None;
        };
        let (src, dst) = (ip.header().source_addr(), ip.header().destination_addr());
        let outgoing = src == self.vm;
        if !outgoing && dst != self.vm {
            return None;
        }
        let remote_ip = if outgoing { dst } else { src };
        match packet.transport.as_ref()? {
            TransportSlice::Udp(udp) => {
                let (local_port, remote_port) = if outgoing {
                    (udp.source_port(), udp.destination_port())
                } else {
                    (udp.destination_port(), udp.source_port())
                };
                if remote_ip == self.gateway && remote_port == 53 {
                    if !outgoing {
                        self.learn_names(udp.payload());
                    }
                    return None;
                }
                let key = Key {
                    udp: true,
                    local_port,
                    remote: SocketAddrV4::new(remote_ip, remote_port),
                };
                self.packet(key, outgoing, outgoing, udp.payload(), now);
                None
            }
            TransportSlice::Tcp(tcp) => {
                let (local_port, remote_port) = if outgoing {
                    (tcp.source_port(), tcp.destination_port())
                } else {
                    (tcp.destination_port(), tcp.source_port())
                };
                if remote_ip == self.gateway && remote_port == 53 {
                    return None;
                }
                let key = Key {
                    udp: false,
                    local_port,
                    remote: SocketAddrV4::new(remote_ip, remote_port),
                };
                // Only a connection the VM opens is its egress.
                let opens = outgoing && tcp.syn() && !tcp.ack();
                let flow = self.packet(key, outgoing, opens, tcp.payload(), now)?;
                if !outgoing && tcp.syn() && tcp.ack() {
                    flow.established = true;
                }
                if tcp.fin() {
                    if outgoing {
                        flow.fin_out = true;
                    } else {
                        flow.fin_in = true;
                    }
                }
                let ended = tcp.rst() || (flow.fin_out && flow.fin_in);
                ended.then(|| self.end(key)).flatten()
            }
            _ => None,
        }
    }

    /// Counts a packet of flow `key` (starting the flow when `opens`).
    fn packet(
        &mut self,
        key: Key,
        outgoing: bool,
        opens: bool,
        payload: &[u8],
        now: Instant,
    ) -> Option<&mut Flow> {
        if opens && !self.flows.contains_key(&key) && self.flows.len() < FLOWS_FOLLOWED {
            let content = self.content.then(BytesMut::new);
            self.flows.insert(
                key,
                Flow {
                    started_at: Timestamp::now(),
                    started: now,
                    last: now,
                    bytes_out: 0,
                    bytes_in: 0,
                    established: false,
                    fin_out: false,
                    fin_in: false,
                    content_out: content.clone(),
                    content_in: content,
                },
            );
        }
        let flow = self.flows.get_mut(&key)?;
        flow.last = now;
        if outgoing {
            flow.bytes_out += payload.len() as u64;
            keep(&mut flow.content_out, payload);
        } else {
            flow.bytes_in += payload.len() as u64;
            keep(&mut flow.content_in, payload);
            if key.udp {
                flow.established = true;
            }
        }
        Some(flow)
    }

    fn end(&mut self, key: Key) -> Option<EgressFlow> {
        let flow = self.flows.remove(&key)?;
        Some(EgressFlow {
            protocol: if key.udp { "udp" } else { "tcp" },
            remote: key.remote,
            host: self.names.get(key.remote.ip()).cloned(),
            local_port: key.local_port,
            bytes_out: flow.bytes_out,
            bytes_in: flow.bytes_in,
            established: flow.established,
            started_at: flow.started_at,
            duration: flow.last.duration_since(flow.started),
            content_out: flow.content_out.map(Bytes::from),
            content_in: flow.content_in.map(Bytes::from),
        })
    }

    /// The flows quiet since `now - IDLE_END`, ended.
    fn idle(&mut self, now: Instant) -> Vec<EgressFlow> {
        let quiet: Vec<Key> = self
            .flows
            .iter()
            .filter(|(_, f)| now.duration_since(f.last) >= IDLE_END)
            .map(|(k, _)| *k)
            .collect();
        quiet.into_iter().filter_map(|k| self.end(k)).collect()
    }

    /// Remembers the names a DNS answer gave addresses.
    fn learn_names(&mut self, payload: &[u8]) {
        use hickory_proto::rr::RData;
        let Ok(message) = hickory_proto::op::Message::from_vec(payload) else {
            return;
        };
        let Some(asked) = message.queries().first().map(|q| q.name().to_utf8()) else {
            return;
        };
        let asked = asked.trim_end_matches('.').to_owned();
        for answer in message.answers() {
            if let RData::A(a) = answer.data() {
                if self.names.len() >= NAMES_KEPT {
                    self.names.clear();
                }
                self.names.insert(a.0, asked.clone());
            }
        }
    }
}

/// Watches the VM at `vm` (gateway `gateway`) on its host-side veth
/// `port`: its connections, each sent when it ends, until the receiver
/// is dropped.
pub fn watch(
    port: &str,
    vm: Ipv4Addr,
    gateway: Ipv4Addr,
    content: bool,
) -> std::io::Result<mpsc::Receiver<EgressFlow>> {
    let ifindex: i32 = std::fs::read_to_string(format!("/sys/class/net/{port}/ifindex"))?
        .trim()
        .parse()
        .map_err(std::io::Error::other)?;
    let fd: OwnedFd = socket(
        AddressFamily::Packet,
        SockType::Raw,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        SockProtocol::EthAll,
    )?;
    crate::sys::bind_packet_socket(&fd, ifindex)?;
    let fd = crate::sys::async_fd(fd)?;
    let (tx, rx) = mpsc::channel(256);
    tokio::spawn(async move {
        let mut watch = Watch::new(vm, gateway, content);
        let mut buf = vec![0u8; 65_536 + 256];
        let mut sweep = tokio::time::interval(Duration::from_secs(1));
        loop {
            let ended = tokio::select! {
                () = tx.closed() => return,
                _ = sweep.tick() => watch.idle(Instant::now()),
                readable = fd.readable() => {
                    let Ok(mut guard) = readable else { return };
                    let mut ended = Vec::new();
                    // Drain what is queued before waiting again.
                    loop {
                        match guard.try_io(|fd| {
                            nix::sys::socket::recv(
                                std::os::fd::AsRawFd::as_raw_fd(fd.get_ref()),
                                &mut buf,
                                nix::sys::socket::MsgFlags::empty(),
                            )
                            .map_err(std::io::Error::from)
                        }) {
                            Ok(Ok(n)) => ended.extend(watch.frame(&buf[..n], Instant::now())),
                            Ok(Err(e)) if e.kind() == std::io::ErrorKind::Interrupted => {}
                            Ok(Err(_)) => return,
                            Err(_would_block) => break,
                        }
                    }
                    ended
                }
            };
            for flow in ended {
                if tx.send(flow).await.is_err() {
                    return;
                }
            }
        }
    });
    Ok(rx)
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::PacketBuilder;

    const VM: Ipv4Addr = Ipv4Addr::new(10, 88, 0, 5);
    const GW: Ipv4Addr = Ipv4Addr::new(10, 88, 0, 1);
    const FAR: Ipv4Addr = Ipv4Addr::new(93, 184, 216, 34);

    fn tcp(out: bool, seq: u32, syn: bool, ack: bool, fin: bool, payload: &[u8]) -> Vec<u8> {
        let (src, dst, sp, dp) = if out {
            (VM, FAR, 40000, 443)
        } else {
            (FAR, VM, 443, 40000)
        };
        let mut b = PacketBuilder::ethernet2([1; 6], [2; 6])
            .ipv4(src.octets(), dst.octets(), 64)
            .tcp(sp, dp, seq, 1000);
        if syn {
            b = b.syn();
        }
        if ack {
            b = b.ack(1);
        }
        if fin {
            b = b.fin();
        }
        let mut out = Vec::new();
        b.write(&mut out, payload).expect("a frame");
        out
    }

    #[test]
    fn a_connection_the_vm_opens_is_told_with_its_bytes_and_name() {
        let mut w = Watch::new(VM, GW, true);
        let now = Instant::now();
        // The VM's lookup of the name, answered by its gateway.
        let mut answer = hickory_proto::op::Message::new();
        let name = hickory_proto::rr::Name::from_ascii("example.com.").expect("name");
        answer.add_query(hickory_proto::op::Query::query(
            name.clone(),
            hickory_proto::rr::RecordType::A,
        ));
        answer.add_answer(hickory_proto::rr::Record::from_rdata(
            name,
            60,
            hickory_proto::rr::RData::A(FAR.into()),
        ));
        let mut dns = Vec::new();
        PacketBuilder::ethernet2([1; 6], [2; 6])
            .ipv4(GW.octets(), VM.octets(), 64)
            .udp(53, 5353)
            .write(&mut dns, &answer.to_vec().expect("dns"))
            .expect("frame");
        assert!(w.frame(&dns, now).is_none());

        assert!(w
            .frame(&tcp(true, 1, true, false, false, b""), now)
            .is_none());
        assert!(w
            .frame(&tcp(false, 1, true, true, false, b""), now)
            .is_none());
        assert!(w
            .frame(
                &tcp(true, 2, false, true, false, b"GET / HTTP/1.1\r\n\r\n"),
                now
            )
            .is_none());
        assert!(w
            .frame(
                &tcp(false, 2, false, true, false, b"HTTP/1.1 200 OK\r\n\r\nhi"),
                now
            )
            .is_none());
        assert!(w
            .frame(&tcp(true, 3, false, true, true, b""), now)
            .is_none());
        let flow = w
            .frame(&tcp(false, 3, false, true, true, b""), now)
            .expect("ended");
        assert_eq!(flow.host.as_deref(), Some("example.com"));
        assert_eq!(flow.remote, SocketAddrV4::new(FAR, 443));
        assert_eq!((flow.bytes_out, flow.bytes_in), (18, 21));
        assert!(flow.established);
        assert_eq!(
            flow.content_out.as_deref(),
            Some(&b"GET / HTTP/1.1\r\n\r\n"[..])
        );
    }

    #[test]
    fn a_refused_attempt_ends_when_quiet_and_inbound_traffic_is_not_egress() {
        let mut w = Watch::new(VM, GW, false);
        let now = Instant::now();
        assert!(w
            .frame(&tcp(true, 1, true, false, false, b""), now)
            .is_none());
        // A connection into the VM (a share's) starts no flow.
        let mut inbound = Vec::new();
        PacketBuilder::ethernet2([1; 6], [2; 6])
            .ipv4(GW.octets(), VM.octets(), 64)
            .tcp(50000, 8000, 1, 1000)
            .syn()
            .write(&mut inbound, b"")
            .expect("frame");
        assert!(w.frame(&inbound, now).is_none());
        assert_eq!(w.flows.len(), 1);
        let ended = w.idle(now + IDLE_END);
        assert_eq!(ended.len(), 1);
        assert!(!ended[0].established);
        assert!(ended[0].content_out.is_none());
    }
}
