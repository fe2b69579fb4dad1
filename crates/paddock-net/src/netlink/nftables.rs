//! nftables set elements over nfnetlink: adding and deleting the
//! elements that carry a VM's policy, in one transaction (a batch).
//!
//! Written here because no maintained crate does it without GPL code:
//! the Rust bindings to libnftables and libnftnl link those GPL
//! libraries, and the pure-Rust nftables crates either spawn `nft` or
//! are GPL themselves. Only set elements are needed, a small part of the
//! protocol (`include/uapi/linux/netfilter/nf_tables.h`); the tables,
//! chains and sets themselves are still made by `nft` from its language
//! at start (see [`crate::nft`]).

use netlink_packet_core::{
    Emitable, NetlinkSerializable, Nla, NLA_F_NESTED, NLM_F_CREATE, NLM_F_REQUEST,
};

use std::sync::atomic::{AtomicBool, Ordering};

use super::{Netlink, NetlinkError};

/// `NETLINK_NETFILTER`.
const NETLINK_NETFILTER: isize = 12;
const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;
const NFT_MSG_NEWSETELEM: u16 = 12;
const NFT_MSG_DELSETELEM: u16 = 14;
/// Deleting an element that may be absent (Linux 6.3 on).
const NFT_MSG_DESTROYSETELEM: u16 = 30;

const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
const NFTA_SET_ELEM_LIST_SET: u16 = 2;
const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_SET_ELEM_KEY: u16 = 1;
const NFTA_SET_ELEM_TIMEOUT: u16 = 4;
const NFTA_SET_ELEM_KEY_END: u16 = 10;
const NFTA_DATA_VALUE: u16 = 1;

/// The table families paddock's tables are in (`NFPROTO_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Inet = 1,
    Bridge = 7,
}

/// Adding or deleting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    Add,
    Delete,
    /// Deleting, where an element already gone is no error.
    Destroy,
}

impl Verb {
    /// The verb as nft's language spells it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Add => "add",
            Self::Delete => "delete",
            Self::Destroy => "destroy",
        }
    }
}

/// One element change in a table of paddock's: `key` (and `key_end` for
/// a range in an interval set of concatenated fields) in the kernel's
/// byte layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ElementChange {
    pub verb: Verb,
    pub family: Family,
    pub set: &'static str,
    pub key: Vec<u8>,
    pub key_end: Option<Vec<u8>>,
    pub timeout_ms: Option<u64>,
}

/// An attribute: bytes, or attributes nested.
enum Attr {
    Bytes(u16, Vec<u8>),
    Nested(u16, Vec<Attr>),
}

impl Nla for Attr {
    fn value_len(&self) -> usize {
        match self {
            Self::Bytes(_, v) => v.len(),
            Self::Nested(_, children) => children.as_slice().buffer_len(),
        }
    }

    fn kind(&self) -> u16 {
        match self {
            Self::Bytes(k, _) => *k,
            Self::Nested(k, _) => *k | NLA_F_NESTED,
        }
    }

    fn emit_value(&self, buffer: &mut [u8]) {
        match self {
            Self::Bytes(_, v) => buffer[..v.len()].copy_from_slice(v),
            Self::Nested(_, children) => children.as_slice().emit(buffer),
        }
    }
}

/// A string attribute, NUL-terminated as the kernel expects.
fn string(kind: u16, s: &str) -> Attr {
    let mut v = s.as_bytes().to_vec();
    v.push(0);
    Attr::Bytes(kind, v)
}

/// An nfnetlink message: the `nfgenmsg` header, then attributes.
struct NfMessage {
    message_type: u16,
    family: u8,
    /// `res_id`: the subsystem for a batch's begin and end, else 0.
    resource: u16,
    attrs: Vec<Attr>,
}

impl NetlinkSerializable for NfMessage {
    fn message_type(&self) -> u16 {
        self.message_type
    }

    fn buffer_len(&self) -> usize {
        4 + self.attrs.as_slice().buffer_len()
    }

    fn serialize(&self, buffer: &mut [u8]) {
        buffer[0] = self.family;
        buffer[1] = 0; // NFNETLINK_V0
        buffer[2..4].copy_from_slice(&self.resource.to_be_bytes());
        self.attrs.as_slice().emit(&mut buffer[4..]);
    }
}

fn batch_marker(message_type: u16) -> NfMessage {
    NfMessage {
        message_type,
        family: 0,
        resource: NFNL_SUBSYS_NFTABLES,
        attrs: Vec::new(),
    }
}

fn element_attrs(change: &ElementChange) -> Attr {
    let data =
        |kind, bytes: &[u8]| Attr::Nested(kind, vec![Attr::Bytes(NFTA_DATA_VALUE, bytes.to_vec())]);
    let mut attrs = vec![data(NFTA_SET_ELEM_KEY, &change.key)];
    if let Some(end) = &change.key_end {
        attrs.push(data(NFTA_SET_ELEM_KEY_END, end));
    }
    if let Some(ms) = change.timeout_ms {
        attrs.push(Attr::Bytes(
            NFTA_SET_ELEM_TIMEOUT,
            ms.to_be_bytes().to_vec(),
        ));
    }
    Attr::Nested(NFTA_LIST_ELEM, attrs)
}

/// The message for a run of changes with the same verb and set.
fn set_message(table: &str, run: &[ElementChange]) -> Option<NfMessage> {
    let first = run.first()?;
    let op = match first.verb {
        Verb::Add => NFT_MSG_NEWSETELEM,
        Verb::Delete => NFT_MSG_DELSETELEM,
        Verb::Destroy => NFT_MSG_DESTROYSETELEM,
    };
    Some(NfMessage {
        message_type: (NFNL_SUBSYS_NFTABLES << 8) | op,
        family: first.family as u8,
        resource: 0,
        attrs: vec![
            string(NFTA_SET_ELEM_LIST_TABLE, table),
            string(NFTA_SET_ELEM_LIST_SET, first.set),
            Attr::Nested(
                NFTA_SET_ELEM_LIST_ELEMENTS,
                run.iter().map(element_attrs).collect(),
            ),
        ],
    })
}

fn flags_of(verb: Verb) -> u16 {
    match verb {
        Verb::Add => NLM_F_REQUEST | NLM_F_CREATE,
        Verb::Delete | Verb::Destroy => NLM_F_REQUEST,
    }
}

/// How many elements one message carries at most (each is under 100
/// bytes; a message stays well inside a page or two).
const ELEMENTS_PER_MESSAGE: usize = 64;

/// Applies `changes` to `table` in one transaction, in order: all of
/// them or none. Consecutive changes of one set with the same verb share
/// a message.
pub fn apply(table: &str, changes: &[ElementChange]) -> Result<(), NetlinkError> {
    if changes.is_empty() {
        return Ok(());
    }
    transaction(&mut Netlink::open(NETLINK_NETFILTER)?, table, changes)
}

/// Applies `changes` ignoring those that fail (for teardown, where a part
/// may be gone already), in one transaction where they all apply. What
/// failed, with why.
pub fn apply_each(table: &str, changes: &[ElementChange]) -> Vec<NetlinkError> {
    apply_each_with(table, changes, DESTROY_WORKS.load(Ordering::Relaxed))
}

/// [`apply_each`], with deletions as destroys or not (`destroy`: a
/// kernel before 6.3 has none).
pub(crate) fn apply_each_with(
    table: &str,
    changes: &[ElementChange],
    destroy: bool,
) -> Vec<NetlinkError> {
    if changes.is_empty() {
        return Vec::new();
    }
    let mut netlink = match Netlink::open(NETLINK_NETFILTER) {
        Ok(n) => n,
        Err(e) => return vec![e.into()],
    };
    // Deletions as destroys: one transaction, whatever is gone already,
    // the elements of each set together (so in few messages: nothing
    // else in a teardown depends on the order).
    if destroy {
        let mut destroys: Vec<ElementChange> = changes
            .iter()
            .map(|c| ElementChange {
                verb: if c.verb == Verb::Delete {
                    Verb::Destroy
                } else {
                    c.verb
                },
                ..c.clone()
            })
            .collect();
        destroys.sort_by_key(|c| (c.verb as u8, c.family as u8, c.set));
        match transaction(&mut netlink, table, &destroys) {
            Ok(()) => return Vec::new(),
            // A kernel before 6.3 knows no such message.
            Err(e) if matches!(e.errno(), Some(EINVAL | EOPNOTSUPP)) => {
                tracing::debug!(error = %e, "no NFT_MSG_DESTROYSETELEM: deleting in halves");
                DESTROY_WORKS.store(false, Ordering::Relaxed);
            }
            Err(_) => {}
        }
    }
    in_halves(&mut netlink, table, changes)
}

/// Applies `changes` in one transaction, or, where that fails (a delete
/// of an element already gone fails it whole), each half the same way:
/// k failing changes among n cost about k·log2(n) transactions, where
/// one for each change would cost n, a grace period each.
fn in_halves(netlink: &mut Netlink, table: &str, changes: &[ElementChange]) -> Vec<NetlinkError> {
    match transaction(netlink, table, changes) {
        Ok(()) => Vec::new(),
        Err(e) if changes.len() <= 1 => vec![e],
        Err(_) => {
            let (first, second) = changes.split_at(changes.len() / 2);
            let mut failed = in_halves(netlink, table, first);
            failed.extend(in_halves(netlink, table, second));
            failed
        }
    }
}

/// Whether this kernel takes [`Verb::Destroy`]; unknown until it is
/// refused.
static DESTROY_WORKS: AtomicBool = AtomicBool::new(true);
const EINVAL: i32 = 22;
const EOPNOTSUPP: i32 = 95;

/// One batch: begin, the set messages, end; sent as one datagram, which
/// is how nfnetlink takes a transaction.
fn transaction(
    netlink: &mut Netlink,
    table: &str,
    changes: &[ElementChange],
) -> Result<(), NetlinkError> {
    netlink.push_unacked(NLM_F_REQUEST, batch_marker(NFNL_MSG_BATCH_BEGIN));
    for run in changes.chunk_by(|a, b| a.verb == b.verb && a.family == b.family && a.set == b.set) {
        for part in run.chunks(ELEMENTS_PER_MESSAGE) {
            if let Some(message) = set_message(table, part) {
                let what = format!(
                    "{} {} elements of the set {}",
                    part[0].verb.name(),
                    part.len(),
                    part[0].set
                );
                netlink.push(flags_of(part[0].verb), message, what);
            }
        }
    }
    netlink.push_unacked(NLM_F_REQUEST, batch_marker(NFNL_MSG_BATCH_END));
    netlink.send()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(verb: Verb, key: &[u8], end: Option<&[u8]>) -> ElementChange {
        ElementChange {
            verb,
            family: Family::Inet,
            set: "vm_allow",
            key: key.to_vec(),
            key_end: end.map(<[u8]>::to_vec),
            timeout_ms: None,
        }
    }

    #[test]
    fn a_set_message_is_laid_out_as_the_kernel_reads_it() {
        let m = set_message("pt", &[change(Verb::Add, &[10, 0, 0, 5], None)]).expect("message");
        assert_eq!(m.message_type(), (10 << 8) | 12);
        let mut buf = vec![0u8; m.buffer_len()];
        m.serialize(&mut buf);
        // nfgenmsg: inet, version 0, res_id 0.
        assert_eq!(&buf[..4], &[1, 0, 0, 0]);
        // The table's name, NUL-terminated and padded: length 4 + 3.
        assert_eq!(&buf[4..8], &[7, 0, 1, 0]);
        assert_eq!(&buf[8..11], b"pt\0");
        // The set's name: 4 + 9, padded to 16. Then the elements list,
        // nested: one element holding a key holding a value.
        let elements_at = 4 + 8 + 16;
        assert_eq!(&buf[12..16], &[13, 0, 2, 0]);
        assert_eq!(
            u16::from_ne_bytes([buf[elements_at + 2], buf[elements_at + 3]]),
            NFTA_SET_ELEM_LIST_ELEMENTS | NLA_F_NESTED
        );
        assert_eq!(buf.len() - elements_at - 4, 4 + 4 + 4 + 4);
        // ... ending in the key's four bytes.
        assert_eq!(&buf[buf.len() - 4..], &[10, 0, 0, 5]);
    }

    #[test]
    fn a_range_carries_its_end_and_a_timeout_its_milliseconds() {
        let mut c = change(
            Verb::Add,
            &[1, 2, 3, 4, 5, 6, 7, 0],
            Some(&[1, 2, 3, 4, 5, 6, 7, 255]),
        );
        c.timeout_ms = Some(60_000);
        let Attr::Nested(kind, attrs) = element_attrs(&c) else {
            panic!("nested");
        };
        assert_eq!(kind, NFTA_LIST_ELEM);
        let kinds: Vec<u16> = attrs.iter().map(|a| a.kind() & !NLA_F_NESTED).collect();
        assert_eq!(
            kinds,
            [
                NFTA_SET_ELEM_KEY,
                NFTA_SET_ELEM_KEY_END,
                NFTA_SET_ELEM_TIMEOUT
            ]
        );
        let Attr::Bytes(_, ms) = &attrs[2] else {
            panic!("bytes");
        };
        assert_eq!(ms, &60_000u64.to_be_bytes());
    }
}
