//! The kernel's netlink interfaces, spoken from the server itself: links,
//! addresses and routes ([`route`]) and nftables set elements
//! ([`nftables`]). Each change used to be an `ip` or `nft` process, and
//! starting those (the loader, page faults) was most of what a VM's
//! network cost the host under churn.
//!
//! Sockets here are blocking and short-lived: a caller opens one on a
//! blocking thread, sends one datagram of requests, reads an answer to
//! each and drops it. A socket belongs to the network namespace of the
//! thread that opened it, which is how changes inside a VM's namespace
//! are made (see [`route::in_namespace`]).

pub mod nftables;
pub mod route;

use std::io;
use std::time::Duration;

use netlink_packet_core::{
    ErrorBuffer, NetlinkBuffer, NetlinkHeader, NetlinkMessage, NetlinkPayload, NetlinkSerializable,
    NLMSG_ERROR,
};
use netlink_sys::{Socket, SocketAddr};

/// How long a request waits for the kernel's answer. The kernel answers
/// at once; this bounds a bug, not a slow kernel.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    #[error("netlink socket: {0}")]
    Io(#[from] io::Error),
    /// The kernel refused a request: `errno` as it gave it, and what the
    /// request was for.
    #[error("{what}: {source}")]
    Refused { what: String, source: io::Error },
    #[error("the kernel sent no answer to {0}")]
    NoAnswer(String),
}

impl NetlinkError {
    /// The kernel's errno, when it refused.
    pub fn errno(&self) -> Option<i32> {
        match self {
            Self::Refused { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}

/// Runs netlink work (blocking sockets) on a blocking thread.
pub(crate) async fn blocking(
    f: impl FnOnce() -> Result<(), crate::NetError> + Send + 'static,
) -> Result<(), crate::NetError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| crate::NetError::Tool {
            tool: "netlink",
            message: e.to_string(),
        })?
}

/// One netlink socket and the requests queued on it.
pub struct Netlink {
    socket: Socket,
    seq: u32,
    /// The datagram being built.
    out: Vec<u8>,
    /// Sequence numbers awaiting an answer, with what each was for.
    pending: Vec<(u32, String)>,
}

impl Netlink {
    /// A socket for `protocol` (`NETLINK_ROUTE`, `NETLINK_NETFILTER`) in
    /// the calling thread's network namespace.
    pub fn open(protocol: isize) -> io::Result<Self> {
        let mut socket = Socket::new(protocol)?;
        socket.bind_auto()?;
        socket.connect(&SocketAddr::new(0, 0))?;
        // Errors then carry the kernel's message for what was wrong.
        let _ = socket.set_ext_ack(true);
        let timeout = nix::sys::time::TimeVal::new(ANSWER_TIMEOUT.as_secs() as i64, 0);
        nix::sys::socket::setsockopt(&socket, nix::sys::socket::sockopt::ReceiveTimeout, &timeout)
            .map_err(io::Error::from)?;
        Ok(Self {
            socket,
            seq: 0,
            out: Vec::new(),
            pending: Vec::new(),
        })
    }

    /// Queues a request that answers with an acknowledgment; `what` names
    /// it in errors.
    pub fn push<I: NetlinkSerializable>(
        &mut self,
        flags: u16,
        payload: I,
        what: impl Into<String>,
    ) {
        let seq = self.next_seq();
        self.push_raw(flags | netlink_packet_core::NLM_F_ACK, seq, payload);
        self.pending.push((seq, what.into()));
    }

    /// Queues a message that gets no answer (a batch's begin and end).
    pub fn push_unacked<I: NetlinkSerializable>(&mut self, flags: u16, payload: I) {
        let seq = self.next_seq();
        self.push_raw(flags, seq, payload);
    }

    /// Grows the socket's buffers for a large datagram and its answers:
    /// one larger than the send buffer is refused, and answers beyond the
    /// receive buffer are dropped (then waited for in vain). As nft does,
    /// root forces sizes past the host's defaults; failing that, the
    /// defaults stand.
    fn make_room(&self, sending: usize, answers: usize) {
        use nix::sys::socket::{setsockopt, sockopt};
        const DEFAULT: usize = 128 * 1024;
        if sending > DEFAULT {
            let _ = setsockopt(&self.socket, sockopt::SndBufForce, &(sending * 2));
        }
        // An answer takes about half a KiB of buffer in the kernel's
        // accounting (its header, the request's, the skb's overhead).
        let needed = answers * 1024;
        if needed > DEFAULT {
            let _ = setsockopt(&self.socket, sockopt::RcvBufForce, &needed);
        }
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    fn push_raw<I: NetlinkSerializable>(&mut self, flags: u16, seq: u32, payload: I) {
        let mut header = NetlinkHeader::default();
        header.flags = flags;
        header.sequence_number = seq;
        let mut message = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(payload));
        message.finalize();
        let at = self.out.len();
        self.out.resize(at + message.buffer_len(), 0);
        message.serialize(&mut self.out[at..]);
    }

    /// Sends what was queued in one datagram and reads an answer to each
    /// request: the first refusal, in the order sent.
    pub fn send(&mut self) -> Result<(), NetlinkError> {
        match self.send_each()?.into_iter().next() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// [`Netlink::send`], with every refusal, in the order sent. Every
    /// answer is read, so the socket can be used again.
    pub fn send_each(&mut self) -> Result<Vec<NetlinkError>, NetlinkError> {
        let out = std::mem::take(&mut self.out);
        let mut pending = std::mem::take(&mut self.pending);
        if out.is_empty() {
            return Ok(Vec::new());
        }
        self.make_room(out.len(), pending.len());
        self.socket.send(&out, 0)?;
        let mut refusals: Vec<(u32, NetlinkError)> = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        while !pending.is_empty() {
            let n = match self.socket.recv(&mut &mut buf[..], 0) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let what = pending.first().map(|(_, w)| w.clone()).unwrap_or_default();
                    return Err(NetlinkError::NoAnswer(what));
                }
                Err(e) => return Err(e.into()),
            };
            let mut at = 0;
            while at < n {
                let Ok(message) = NetlinkBuffer::new_checked(&buf[at..n]) else {
                    break;
                };
                let len = message.length() as usize;
                let seq = message.sequence_number();
                if message.message_type() == NLMSG_ERROR {
                    let code = ErrorBuffer::new_checked(message.payload())
                        .ok()
                        .and_then(|e| e.code())
                        .map_or(0, i32::from);
                    if let Some(i) = pending.iter().position(|(s, _)| *s == seq) {
                        let (_, what) = pending.swap_remove(i);
                        if code != 0 {
                            refusals.push((
                                seq,
                                NetlinkError::Refused {
                                    what,
                                    source: io::Error::from_raw_os_error(-code),
                                },
                            ));
                        }
                    }
                }
                // Messages are 4-byte aligned within a datagram.
                at += (len + 3) & !3;
                if len == 0 {
                    break;
                }
            }
        }
        refusals.sort_by_key(|(seq, _)| *seq);
        Ok(refusals.into_iter().map(|(_, e)| e).collect())
    }
}
