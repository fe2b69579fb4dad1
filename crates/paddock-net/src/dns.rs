//! The resolver VMs use (`nameserver <gateway>`): it answers a VM only
//! for names its egress policy lets it resolve, forwards those queries
//! upstream, and before replying adds the answer's addresses to the VM's
//! nftables set for their TTL. A VM therefore reaches an allowed domain's
//! addresses only after looking the name up through paddock.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::rr::RData;
use paddock_core::model::EgressPolicy;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

use crate::nft::{self, Layout};

/// Policies by VM address, shared with the backend that changes them.
pub type Policies = Arc<RwLock<HashMap<Ipv4Addr, EgressPolicy>>>;

/// The addresses each VM looked up (its elements of the shared learned
/// set), so that its release or a policy without domains drops them.
pub type Learned = Arc<std::sync::Mutex<HashMap<Ipv4Addr, std::collections::BTreeSet<Ipv4Addr>>>>;

/// Under the 5 s a glibc stub waits, so the VM hears SERVFAIL rather
/// than retrying into a query that is still in flight.
pub(crate) const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(4);
const UDP_RESEND: Duration = Duration::from_millis(700);
/// Learned addresses stay at least this long, so a TTL of 0 or 1 does not
/// expire before the VM connects.
const MIN_LEARNED_TTL: u32 = 60;
const MAX_LEARNED_TTL: u32 = 24 * 3600;

struct Resolver {
    /// Its own address: the gateway, where the vault proxy listens too.
    gateway: Ipv4Addr,
    layout: Layout,
    upstream: Vec<SocketAddr>,
    policies: Policies,
    learned: Learned,
    interceptions: crate::intercept::Interceptions,
}

/// Serves DNS on `bind` (UDP and TCP) until the runtime shuts down.
pub async fn serve(
    bind: SocketAddr,
    layout: Layout,
    upstream: Vec<SocketAddr>,
    policies: Policies,
    learned: Learned,
    interceptions: crate::intercept::Interceptions,
) -> std::io::Result<()> {
    let udp = Arc::new(UdpSocket::bind(bind).await?);
    let tcp = TcpListener::bind(bind).await?;
    let IpAddr::V4(gateway) = bind.ip() else {
        return Err(std::io::Error::other("the resolver binds an IPv4 gateway"));
    };
    let resolver = Arc::new(Resolver {
        gateway,
        layout,
        upstream,
        policies,
        learned,
        interceptions,
    });
    let r = Arc::clone(&resolver);
    tokio::spawn(async move {
        loop {
            let Ok((stream, peer)) = tcp.accept().await else {
                continue;
            };
            let r = Arc::clone(&r);
            tokio::spawn(async move { r.serve_tcp(stream, peer).await });
        }
    });
    tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        loop {
            let Ok((n, peer)) = udp.recv_from(&mut buf).await else {
                continue;
            };
            let query = buf[..n].to_vec();
            let (r, udp) = (Arc::clone(&resolver), Arc::clone(&udp));
            tokio::spawn(async move {
                if let Some(reply) = r.answer(&query, peer, false).await {
                    let _ = udp.send_to(&reply, peer).await;
                }
            });
        }
    });
    Ok(())
}

impl Resolver {
    async fn serve_tcp(&self, mut stream: TcpStream, peer: SocketAddr) {
        loop {
            let mut len = [0u8; 2];
            if stream.read_exact(&mut len).await.is_err() {
                return;
            }
            let mut query = vec![0u8; usize::from(u16::from_be_bytes(len))];
            if stream.read_exact(&mut query).await.is_err() {
                return;
            }
            let Some(reply) = self.answer(&query, peer, true).await else {
                return;
            };
            let Ok(n) = u16::try_from(reply.len()) else {
                return;
            };
            if stream.write_all(&n.to_be_bytes()).await.is_err()
                || stream.write_all(&reply).await.is_err()
            {
                return;
            }
        }
    }

    /// The reply to one query, or `None` to drop it (not DNS at all).
    async fn answer(&self, query: &[u8], peer: SocketAddr, tcp: bool) -> Option<Vec<u8>> {
        let request = Message::from_vec(query).ok()?;
        if request.message_type() != MessageType::Query {
            return None;
        }
        let IpAddr::V4(vm) = peer.ip() else {
            return refuse(&request);
        };
        let policy = self.policies.read().ok()?.get(&vm).cloned();
        let Some(policy) = policy else {
            return refuse(&request);
        };
        let name = request
            .queries()
            .first()
            .map(|q| q.name().to_ascii())
            .unwrap_or_default();
        if !policy.resolves(&name) {
            tracing::debug!(vm = %vm, name = %name, "DNS query refused by policy");
            return refuse(&request);
        }
        // A host the VM's vaults bind (and its policy lets it reach) is
        // the vault proxy's, on the gateway: its credential is added there.
        let bound = name.trim_end_matches('.').to_ascii_lowercase();
        let intercepted = self
            .interceptions
            .read()
            .ok()
            .and_then(|i| i.get(&vm).map(|v| v.service(&bound).is_some()))
            .unwrap_or(false);
        if intercepted {
            return self.answer_gateway(&request);
        }
        let reply = match self.forward(query, tcp).await {
            Some(r) => r,
            None => return fail(&request),
        };
        if policy.domain_allowed(&name) {
            self.learn(vm, &reply).await;
        }
        Some(reply)
    }

    /// The gateway as the only address of the name asked (no IPv6 one:
    /// the proxy listens on IPv4).
    fn answer_gateway(&self, request: &Message) -> Option<Vec<u8>> {
        use hickory_proto::rr::{rdata::A, Record, RecordType};
        let mut reply = reply_to(request, ResponseCode::NoError);
        if let Some(q) = request.queries().first() {
            if q.query_type() == RecordType::A {
                reply.add_answer(Record::from_rdata(
                    q.name().clone(),
                    60,
                    RData::A(A(self.gateway)),
                ));
            }
        }
        reply.to_vec().ok()
    }

    /// Adds the A records of an upstream reply to the VM's learned set.
    async fn learn(&self, vm: Ipv4Addr, reply: &[u8]) {
        let Ok(msg) = Message::from_vec(reply) else {
            return;
        };
        let mut ttl = MAX_LEARNED_TTL;
        let addresses: Vec<Ipv4Addr> = msg
            .answers()
            .iter()
            .filter_map(|r| match r.data() {
                RData::A(a) => {
                    ttl = ttl.min(r.ttl());
                    Some(a.0)
                }
                _ => None,
            })
            .collect();
        if addresses.is_empty() {
            return;
        }
        let ttl = ttl.clamp(MIN_LEARNED_TTL, MAX_LEARNED_TTL);
        if let Err(e) = nft::change(&self.layout.table, nft::learn(vm, &addresses, ttl)).await {
            tracing::warn!(vm = %vm, error = %e, "could not allow looked-up addresses");
            return;
        }
        if let Ok(mut learned) = self.learned.lock() {
            learned.entry(vm).or_default().extend(addresses);
        }
    }

    /// Sends the query to each upstream in turn; the first reply wins.
    async fn forward(&self, query: &[u8], tcp: bool) -> Option<Vec<u8>> {
        for upstream in &self.upstream {
            let attempt = async {
                if tcp {
                    forward_tcp(*upstream, query).await
                } else {
                    forward_udp(*upstream, query).await
                }
            };
            match tokio::time::timeout(UPSTREAM_TIMEOUT, attempt).await {
                Ok(Ok(reply)) => return Some(reply),
                Ok(Err(e)) => {
                    tracing::debug!(upstream = %upstream, error = %e, "upstream DNS failed")
                }
                Err(_) => tracing::debug!(upstream = %upstream, "upstream DNS timed out"),
            }
        }
        None
    }
}

/// Sends the query and waits for its reply, sending it again every
/// [`UDP_RESEND`] as a stub resolver would: one datagram lost between here
/// and upstream must not become a SERVFAIL for the VM.
pub(crate) async fn forward_udp(upstream: SocketAddr, query: &[u8]) -> std::io::Result<Vec<u8>> {
    let local: SocketAddr = if upstream.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = UdpSocket::bind(local).await?;
    socket.connect(upstream).await?;
    let mut buf = vec![0u8; 65535];
    loop {
        socket.send(query).await?;
        let reply = tokio::time::timeout(UDP_RESEND, async {
            loop {
                let n = socket.recv(&mut buf).await?;
                // Only the reply to this query (same id) counts.
                if n >= 2 && query.len() >= 2 && buf[..2] == query[..2] {
                    return Ok::<_, std::io::Error>(buf[..n].to_vec());
                }
            }
        })
        .await;
        if let Ok(reply) = reply {
            return reply;
        }
        tracing::debug!(upstream = %upstream, "no DNS reply yet; sending again");
    }
}

async fn forward_tcp(upstream: SocketAddr, query: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut stream = TcpStream::connect(upstream).await?;
    let len = u16::try_from(query.len()).map_err(std::io::Error::other)?;
    stream.write_all(&len.to_be_bytes()).await?;
    stream.write_all(query).await?;
    let mut n = [0u8; 2];
    stream.read_exact(&mut n).await?;
    let mut reply = vec![0u8; usize::from(u16::from_be_bytes(n))];
    stream.read_exact(&mut reply).await?;
    Ok(reply)
}

/// A reply to `request` with `code`, echoing its question, no answers yet.
fn reply_to(request: &Message, code: ResponseCode) -> Message {
    let mut reply = Message::new();
    reply
        .set_id(request.id())
        .set_message_type(MessageType::Response)
        .set_op_code(request.op_code())
        .set_recursion_desired(request.recursion_desired())
        .set_recursion_available(true)
        .set_response_code(code);
    reply.add_queries(request.queries().to_vec());
    reply
}

fn reply_with(request: &Message, code: ResponseCode) -> Option<Vec<u8>> {
    reply_to(request, code).to_vec().ok()
}

fn refuse(request: &Message) -> Option<Vec<u8>> {
    reply_with(request, ResponseCode::Refused)
}

fn fail(request: &Message) -> Option<Vec<u8>> {
    reply_with(request, ResponseCode::ServFail)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::Query;
    use hickory_proto::rr::{Name, RecordType};

    #[test]
    fn refusals_echo_the_question() {
        let mut q = Message::new();
        q.set_id(42).add_query(Query::query(
            Name::from_ascii("x.example.com.").expect("name"),
            RecordType::A,
        ));
        let bytes = refuse(&q).expect("encodes");
        let r = Message::from_vec(&bytes).expect("decodes");
        assert_eq!(r.id(), 42);
        assert_eq!(r.response_code(), ResponseCode::Refused);
        assert_eq!(r.queries().len(), 1);
    }
}
