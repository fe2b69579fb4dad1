//! The nftables ruleset of one server.
//!
//! The tables, chains and sets are generated as nft's own language and
//! fed to `nft -f -` at start (that language is nftables' stable
//! interface, and every batch applies atomically). What changes while the
//! server runs is only ever set elements ([`Element`]: a VM attached,
//! released, its policy replaced, an address it looked up), and those go
//! to the kernel over netlink from the server itself
//! ([`crate::netlink::nftables`]), one transaction each: an `nft` process
//! per change cost more than the change. Everything lives
//! in two tables named after the bridge, so two servers on one host (and
//! the operator's own rules) never touch each other's rules.
//!
//! - `inet <table>`: `forward` sends the packets of attached VMs (keyed by
//!   source address; the bridge table stops spoofing) through one `vm`
//!   chain, after refusing the always-blocked ranges; `input` lets VMs
//!   reach only paddock's resolvers and vault proxies (port 443 of the
//!   gateways, which answer only the hosts a VM's vaults bind) on the
//!   host; `postrouting`
//!   masquerades. The VM side is the set `bridges` (one per segment of
//!   the subnet) and the resolvers the set `gateways`, so a segment
//!   brought up later costs two elements and no rule.
//! - Every VM's policy lives in a few sets shared by all VMs, keyed by the
//!   VM's address (`vm_deny`/`vm_allow`/`vm_learned` by `address .
//!   destination`; `vm_open`, `vm_http`, `vm_https` by address), never
//!   in objects of its own: nft reads every object of a table before each
//!   batch, so per-VM chains and sets made each attach cost grow with the
//!   number of VMs (0.1 s at 1,000, 0.9 s at 3,000). Elements cost
//!   nothing alike. The `vm` chain checks, first match wins: denied
//!   ranges, allowed ranges, learned addresses, HTTP, HTTPS, then the
//!   VM's default.
//! - DNS to the gateway is not connection-tracked: glibc sends its A and
//!   AAAA queries at once from one socket, and the second can lose the
//!   conntrack insertion race and vanish (a 5 s stall, or "temporary
//!   failure in name resolution"); the input rule admits it explicitly.
//! - `bridge <table>`: a VM port may only send from its own address
//!   (`meta ibrname` would name the bridge, but not every kernel has it,
//!   so the table lists this server's VM ports).

use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::process::Stdio;

use paddock_core::model::{EgressDefault, EgressPolicy, Ipv4Cidr};
use tokio::io::AsyncWriteExt;

use crate::netlink::blocking;
use crate::netlink::nftables::{self, ElementChange};
pub use crate::netlink::nftables::{Family, Verb};
use crate::segment::Segment;
use crate::NetError;

/// What the ruleset is built from, besides the VMs.
#[derive(Debug, Clone)]
pub struct Layout {
    pub table: String,
    pub subnet: Ipv4Cidr,
    /// Ranges no VM reaches, whatever its policy.
    pub blocked: Vec<Ipv4Cidr>,
    /// What the names of this server's retired ports start with: no
    /// frame goes to or comes from one (see `link::retire_ports`).
    pub retired: String,
}

/// One attached VM as the rules see it.
#[derive(Debug, Clone)]
pub struct VmRules<'a> {
    pub address: Ipv4Addr,
    pub port: &'a str,
    pub policy: &'a EgressPolicy,
}

fn set_list(cidrs: &[Ipv4Cidr]) -> String {
    cidrs
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// `cidrs` without the ranges inside another of them: interval sets of
/// concatenated keys refuse overlapping elements, and a contained range
/// adds nothing.
fn disjoint(cidrs: &[Ipv4Cidr]) -> Vec<Ipv4Cidr> {
    let mut sorted = cidrs.to_vec();
    sorted.sort_by_key(|c| (c.prefix(), u32::from(c.addr())));
    let mut kept: Vec<Ipv4Cidr> = Vec::new();
    for c in sorted {
        if !kept
            .iter()
            .any(|k| k.prefix() <= c.prefix() && k.contains(c.addr()))
        {
            kept.push(c);
        }
    }
    kept
}

/// The whole ruleset for the segments that are up and their `vms`:
/// deletes and recreates both tables in one transaction.
pub fn full_ruleset(layout: &Layout, segments: &[Segment], vms: &[VmRules<'_>]) -> String {
    let t = &layout.table;
    let mut blocked = layout.blocked.clone();
    blocked.push(layout.subnet);
    let mut s = String::new();
    // `table x {}` makes sure the delete has something to delete.
    let _ = writeln!(s, "table inet {t} {{}}\ndelete table inet {t}");
    let _ = writeln!(s, "table bridge {t} {{}}\ndelete table bridge {t}");
    let _ = writeln!(
        s,
        r#"table inet {t} {{
  set blocked {{ type ipv4_addr; flags interval; auto-merge; elements = {{ {blocked} }} }}
  set bridges {{ type ifname; }}
  set gateways {{ type ipv4_addr; }}
  set vms {{ type ipv4_addr; }}
  set vm_deny {{ type ipv4_addr . ipv4_addr; flags interval; }}
  set vm_allow {{ type ipv4_addr . ipv4_addr; flags interval; }}
  set vm_learned {{ type ipv4_addr . ipv4_addr; flags timeout; }}
  set vm_http {{ type ipv4_addr; }}
  set vm_https {{ type ipv4_addr; }}
  set vm_open {{ type ipv4_addr; }}
  chain refuse {{
    meta l4proto tcp reject with tcp reset
    reject with icmpx admin-prohibited
  }}
  chain forward {{
    type filter hook forward priority filter; policy accept;
    oifname @bridges ct state established,related accept
    oifname @bridges goto refuse
    iifname @bridges ct state established,related accept
    iifname @bridges meta nfproto ipv6 goto refuse
    iifname @bridges ip daddr @blocked goto refuse
    iifname @bridges ip saddr @vms goto vm
    iifname @bridges goto refuse
  }}
  chain vm {{
    ip saddr . ip daddr @vm_deny goto refuse
    ip saddr . ip daddr @vm_allow accept
    ip saddr . ip daddr @vm_learned accept
    ip saddr @vm_http tcp dport 80 accept
    ip saddr @vm_https meta l4proto {{ tcp, udp }} th dport 443 accept
    ip saddr @vm_open accept
    goto refuse
  }}
  chain dns_untracked_in {{
    type filter hook prerouting priority raw; policy accept;
    iifname @bridges ip daddr @gateways meta l4proto {{ tcp, udp }} th dport 53 notrack
  }}
  chain dns_untracked_out {{
    type filter hook output priority raw; policy accept;
    oifname @bridges ip saddr @gateways meta l4proto {{ tcp, udp }} th sport 53 notrack
  }}
  chain input {{
    type filter hook input priority filter; policy accept;
    iifname @bridges ct state established,related accept
    iifname @bridges ip daddr @gateways meta l4proto {{ tcp, udp }} th dport 53 accept
    iifname @bridges ip daddr @gateways tcp dport 443 accept
    iifname @bridges goto refuse
  }}
  chain postrouting {{
    type nat hook postrouting priority srcnat; policy accept;
    ip saddr {subnet} oifname != @bridges masquerade
  }}
}}
table bridge {t} {{
  set ifaces {{ type ifname; }}
  set ports {{ type ifname . ipv4_addr; }}
  chain prerouting {{
    type filter hook prerouting priority -200; policy accept;
    iifname "{retired}*" drop
    iifname @ifaces ether type ip iifname . ip saddr != @ports drop
    iifname @ifaces ether type arp iifname . arp saddr ip != @ports drop
    iifname @ifaces ether type ip6 drop
  }}
  chain postrouting {{
    type filter hook postrouting priority 200; policy accept;
    oifname "{retired}*" drop
  }}
}}"#,
        blocked = set_list(&blocked),
        subnet = layout.subnet,
        retired = layout.retired,
    );
    let elements = segments
        .iter()
        .flat_map(add_segment)
        .chain(vms.iter().flat_map(add_vm));
    for element in elements {
        let _ = writeln!(s, "{}", element.to_nft(t));
    }
    s
}

/// A field of a set element's key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Field {
    Addr(Ipv4Addr),
    /// A range, in a set with `flags interval`.
    Range(Ipv4Cidr),
    Ifname(String),
}

impl Field {
    /// The field's first and last key bytes, each field padded to the
    /// kernel's 4-byte registers (both kinds here already are).
    fn bytes(&self) -> (Vec<u8>, Vec<u8>) {
        match self {
            Self::Addr(a) => (a.octets().to_vec(), a.octets().to_vec()),
            Self::Range(c) => {
                let first = u32::from(c.addr());
                let last = first | (u32::MAX.checked_shr(u32::from(c.prefix())).unwrap_or(0));
                (first.to_be_bytes().to_vec(), last.to_be_bytes().to_vec())
            }
            // `type ifname`: IFNAMSIZ bytes, NUL-padded.
            Self::Ifname(n) => {
                let mut v = n.as_bytes().to_vec();
                v.resize(16, 0);
                (v.clone(), v)
            }
        }
    }
}

impl std::fmt::Display for Field {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Addr(a) => write!(f, "{a}"),
            Self::Range(c) => write!(f, "{c}"),
            Self::Ifname(n) => write!(f, "\"{n}\""),
        }
    }
}

/// One element added to or deleted from a set of this server's tables:
/// the unit every VM's rules are made of. Applied over netlink
/// ([`change`]); written as nft's language in a whole ruleset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Element {
    pub verb: Verb,
    pub family: Family,
    pub set: &'static str,
    pub fields: Vec<Field>,
    pub timeout_s: Option<u32>,
}

impl Element {
    fn new(verb: Verb, family: Family, set: &'static str, fields: Vec<Field>) -> Self {
        Self {
            verb,
            family,
            set,
            fields,
            timeout_s: None,
        }
    }

    /// The element as one line of nft's language.
    pub fn to_nft(&self, table: &str) -> String {
        let verb = self.verb.name();
        let family = match self.family {
            Family::Inet => "inet",
            Family::Bridge => "bridge",
        };
        let key = self
            .fields
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(" . ");
        let timeout = self
            .timeout_s
            .map(|t| format!(" timeout {t}s"))
            .unwrap_or_default();
        format!(
            "{verb} element {family} {table} {} {{ {key}{timeout} }}",
            self.set
        )
    }

    /// The element as the kernel takes it.
    fn to_change(&self) -> ElementChange {
        let (mut key, mut end) = (Vec::new(), Vec::new());
        for field in &self.fields {
            let (first, last) = field.bytes();
            key.extend(first);
            end.extend(last);
        }
        let ranged = self.fields.iter().any(|f| matches!(f, Field::Range(_)));
        ElementChange {
            verb: self.verb,
            family: self.family,
            set: self.set,
            key,
            key_end: ranged.then_some(end),
            timeout_ms: self.timeout_s.map(|t| u64::from(t) * 1000),
        }
    }
}

/// Adds a segment: its bridge carries VMs, its gateway is a resolver.
pub fn add_segment(segment: &Segment) -> Vec<Element> {
    vec![
        Element::new(
            Verb::Add,
            Family::Inet,
            "bridges",
            vec![Field::Ifname(segment.bridge.clone())],
        ),
        Element::new(
            Verb::Add,
            Family::Inet,
            "gateways",
            vec![Field::Addr(segment.gateway())],
        ),
    ]
}

/// The elements that attach one VM: its policy's, its place among the
/// attached VMs and its port's address.
pub fn add_vm(vm: &VmRules<'_>) -> Vec<Element> {
    let mut elements = policy_elements(vm.address, vm.policy, Verb::Add);
    elements.extend(membership(vm.address, vm.port, Verb::Add));
    elements
}

/// A VM's place among the attached VMs and its port's address.
fn membership(address: Ipv4Addr, port: &str, verb: Verb) -> Vec<Element> {
    let port = Field::Ifname(port.to_owned());
    vec![
        Element::new(verb, Family::Inet, "vms", vec![Field::Addr(address)]),
        Element::new(verb, Family::Bridge, "ifaces", vec![port.clone()]),
        Element::new(
            verb,
            Family::Bridge,
            "ports",
            vec![port, Field::Addr(address)],
        ),
    ]
}

/// Replaces a VM's policy `old` (the one in force) with `new` in one
/// transaction. Its learned addresses stay, still bound by their TTL;
/// [`forget_learned`] drops them when `new` allows no domain.
pub fn replace_policy(address: Ipv4Addr, old: &EgressPolicy, new: &EgressPolicy) -> Vec<Element> {
    let mut elements = policy_elements(address, old, Verb::Delete);
    elements.extend(policy_elements(address, new, Verb::Add));
    elements
}

/// The elements a VM's policy puts in the shared sets.
fn policy_elements(address: Ipv4Addr, policy: &EgressPolicy, verb: Verb) -> Vec<Element> {
    let mut elements = Vec::new();
    for (set, cidrs) in [
        ("vm_allow", &policy.allowed_cidrs),
        ("vm_deny", &policy.denied_cidrs),
    ] {
        elements.extend(disjoint(cidrs).into_iter().map(|c| {
            Element::new(
                verb,
                Family::Inet,
                set,
                vec![Field::Addr(address), Field::Range(c)],
            )
        }));
    }
    let flags = [
        ("vm_http", policy.allow_http),
        ("vm_https", policy.allow_https),
        ("vm_open", policy.default == EgressDefault::Allow),
    ];
    for (set, on) in flags {
        if on {
            elements.push(Element::new(
                verb,
                Family::Inet,
                set,
                vec![Field::Addr(address)],
            ));
        }
    }
    elements
}

/// The elements that remove one VM (`policy`: the one in force;
/// `learned`: the addresses it looked up); for [`change_each`], since a
/// part may be gone already.
pub fn remove_vm(
    address: Ipv4Addr,
    port: &str,
    policy: Option<&EgressPolicy>,
    learned: &[Ipv4Addr],
) -> Vec<Element> {
    let mut elements = membership(address, port, Verb::Delete);
    if let Some(p) = policy {
        elements.extend(policy_elements(address, p, Verb::Delete));
    }
    elements.extend(forget_learned(address, learned));
    elements
}

/// Deletes what a VM learned (an expired one is gone: [`change_each`]).
pub fn forget_learned(vm: Ipv4Addr, learned: &[Ipv4Addr]) -> Vec<Element> {
    learned
        .iter()
        .map(|a| learned_element(Verb::Delete, vm, *a))
        .collect()
}

fn learned_element(verb: Verb, vm: Ipv4Addr, address: Ipv4Addr) -> Element {
    Element::new(
        verb,
        Family::Inet,
        "vm_learned",
        vec![Field::Addr(vm), Field::Addr(address)],
    )
}

/// Lets a VM reach addresses it looked up, for `ttl` seconds. The add,
/// delete, add sequence refreshes the timeout of an address already there.
pub fn learn(vm: Ipv4Addr, addresses: &[Ipv4Addr], ttl: u32) -> Vec<Element> {
    let timed = |verb| {
        addresses.iter().map(move |a| Element {
            timeout_s: Some(ttl),
            ..learned_element(verb, vm, *a)
        })
    };
    timed(Verb::Add)
        .chain(
            addresses
                .iter()
                .map(|a| learned_element(Verb::Delete, vm, *a)),
        )
        .chain(timed(Verb::Add))
        .collect()
}

/// Applies `elements` to this server's tables in one transaction: all of
/// them or none.
pub async fn change(table: &str, elements: Vec<Element>) -> Result<(), NetError> {
    let table = table.to_owned();
    blocking(move || {
        let changes: Vec<ElementChange> = elements.iter().map(Element::to_change).collect();
        Ok(nftables::apply(&table, &changes)?)
    })
    .await
}

/// Applies `elements`, ignoring those that fail: for teardown, where a
/// part may already be gone (see [`nftables::apply_each`]: deletions as
/// destroys in one transaction, or in halves on older kernels).
pub async fn change_each(table: &str, elements: Vec<Element>) {
    let table = table.to_owned();
    let _ = blocking(move || {
        let changes: Vec<ElementChange> = elements.iter().map(Element::to_change).collect();
        for e in nftables::apply_each(&table, &changes) {
            tracing::debug!(error = %e, "nft teardown step skipped");
        }
        Ok(())
    })
    .await;
}

/// Runs one nft batch; all of it applies or none. A batch that failed
/// changed nothing, so it is retried: the kernel refuses one that raced
/// another writer's transaction (other servers, the operator's rules).
pub async fn apply(script: &str) -> Result<(), NetError> {
    let mut attempt = 0;
    loop {
        match apply_once(script).await {
            Err(e) if attempt < 2 => {
                attempt += 1;
                tracing::debug!(error = %e, attempt, "nft batch failed; retrying");
                tokio::time::sleep(std::time::Duration::from_millis(5 * attempt)).await;
            }
            other => return other,
        }
    }
}

async fn apply_once(script: &str) -> Result<(), NetError> {
    let mut child = tokio::process::Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| NetError::Tool {
            tool: "nft",
            message: e.to_string(),
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(script.as_bytes())
            .await
            .map_err(|e| NetError::Tool {
                tool: "nft",
                message: e.to_string(),
            })?;
    }
    let out = child.wait_with_output().await.map_err(|e| NetError::Tool {
        tool: "nft",
        message: e.to_string(),
    })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(NetError::Tool {
            tool: "nft",
            message: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        })
    }
}

/// Runs the scripts, ignoring failures: for teardown, where a part may
/// already be gone. All of them in one transaction first (one process,
/// the usual case); when that fails, each on its own.
pub async fn apply_each(scripts: &[String]) {
    if apply_once(&scripts.join("\n")).await.is_ok() {
        return;
    }
    for s in scripts {
        if let Err(e) = apply_once(s).await {
            tracing::debug!(error = %e, "nft teardown step skipped");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout() -> Layout {
        Layout {
            table: "pt0".into(),
            subnet: Ipv4Cidr::parse("10.200.0.0/24").expect("cidr"),
            blocked: vec![Ipv4Cidr::parse("169.254.0.0/16").expect("cidr")],
            retired: "vx1234".into(),
        }
    }

    #[test]
    fn a_policy_becomes_elements_of_the_shared_sets() {
        let policy = EgressPolicy::from_json(
            &serde_json::json!({"allow_https": true, "allowed_cidrs": ["203.0.113.0/24", "203.0.113.0/28"], "denied_cidrs": ["203.0.113.9"]}),
            "",
        )
        .expect("policy");
        let a: Ipv4Addr = "10.200.0.5".parse().expect("ip");
        let text =
            |elements: &[Element]| elements.iter().map(|e| e.to_nft("pt0")).collect::<Vec<_>>();
        assert_eq!(
            text(&policy_elements(a, &policy, Verb::Add)),
            [
                "add element inet pt0 vm_allow { 10.200.0.5 . 203.0.113.0/24 }",
                "add element inet pt0 vm_deny { 10.200.0.5 . 203.0.113.9/32 }",
                "add element inet pt0 vm_https { 10.200.0.5 }",
            ]
        );
        let replaced = text(&replace_policy(a, &policy, &EgressPolicy::allow_all()));
        assert!(
            replaced[0].starts_with("delete element inet pt0 vm_allow"),
            "{replaced:?}"
        );
        assert_eq!(
            replaced.last().map(String::as_str),
            Some("add element inet pt0 vm_open { 10.200.0.5 }")
        );
    }

    #[test]
    fn elements_reach_the_kernel_as_their_key_bytes() {
        let a: Ipv4Addr = "10.200.0.5".parse().expect("ip");
        let range = Element::new(
            Verb::Add,
            Family::Inet,
            "vm_allow",
            vec![
                Field::Addr(a),
                Field::Range(Ipv4Cidr::parse("203.0.113.0/24").expect("cidr")),
            ],
        )
        .to_change();
        assert_eq!(range.key, [10, 200, 0, 5, 203, 0, 113, 0]);
        assert_eq!(range.key_end, Some(vec![10, 200, 0, 5, 203, 0, 113, 255]));
        let port = membership(a, "vp0ac80005", Verb::Delete)[2].to_change();
        assert_eq!(port.family, Family::Bridge);
        assert_eq!(port.key.len(), 16 + 4);
        assert_eq!(&port.key[..10], b"vp0ac80005");
        assert!(port.key[10..16].iter().all(|b| *b == 0));
        assert_eq!(&port.key[16..], &[10, 200, 0, 5]);
        assert_eq!(port.key_end, None);
        let all = Element::new(
            Verb::Add,
            Family::Inet,
            "vm_deny",
            vec![
                Field::Addr(a),
                Field::Range(Ipv4Cidr::parse("0.0.0.0/0").expect("cidr")),
            ],
        )
        .to_change();
        assert_eq!(all.key_end, Some(vec![10, 200, 0, 5, 255, 255, 255, 255]));
    }

    #[test]
    fn the_vm_chain_checks_in_the_policy_order() {
        let s = full_ruleset(&layout(), &[], &[]);
        let chain = &s[s.find("chain vm {").expect("vm chain")..];
        let order = [
            "@vm_deny goto refuse",
            "@vm_allow accept",
            "@vm_learned accept",
            "@vm_http tcp dport 80 accept",
            "@vm_https",
            "@vm_open accept",
            "\n    goto refuse",
        ];
        let at: Vec<usize> = order.iter().map(|o| chain.find(o).expect(o)).collect();
        assert!(at.windows(2).all(|w| w[0] < w[1]), "{chain}");
    }

    #[test]
    fn the_ruleset_blocks_the_subnet_and_names_each_segment() {
        let segments =
            crate::segment::Segments::new(layout().subnet, 128, "pt0").expect("segments");
        let up: Vec<Segment> = segments.iter().collect();
        let s = full_ruleset(&layout(), &up, &[]);
        assert!(s.contains("elements = { 169.254.0.0/16, 10.200.0.0/24 }"));
        assert!(s.contains("ip saddr 10.200.0.0/24 oifname != @bridges masquerade"));
        assert!(s.contains("ip daddr @gateways meta l4proto { tcp, udp } th dport 53 accept"));
        assert!(s.contains("ip daddr @gateways meta l4proto { tcp, udp } th dport 53 notrack"));
        assert!(s.contains("add element inet pt0 bridges { \"pt0\" }"));
        assert!(s.contains("add element inet pt0 gateways { 10.200.0.1 }"));
        assert!(s.contains("add element inet pt0 bridges { \"pb0ac80081\" }"));
        assert!(s.contains("add element inet pt0 gateways { 10.200.0.129 }"));
        // A retired port stays up on its bridge: its frames go nowhere.
        assert!(s.contains("iifname \"vx1234*\" drop"), "{s}");
        assert!(s.contains("oifname \"vx1234*\" drop"), "{s}");
    }

    /// The elements in `set` of the table `t` (inet), as nft lists them.
    fn listed(t: &str, set: &str) -> String {
        let out = std::process::Command::new("nft")
            .args(["list", "set", "inet", t, set])
            .output()
            .expect("nft");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The element changes reach the real kernel as it reads them: added,
    /// then removed with one part already gone, by destroy and by the
    /// older kernels' halving, leaving nothing of the VMs behind.
    #[tokio::test]
    async fn elements_apply_to_the_kernels_tables() {
        if !nix::unistd::geteuid().is_root()
            || std::process::Command::new("nft")
                .arg("-v")
                .output()
                .is_err()
        {
            eprintln!("skipped: needs root and nft (scripts/deps.sh installs nftables)");
            return;
        }
        let t = format!("pnltest{}", std::process::id());
        /// Deletes the test's tables however the test ends.
        struct Tables(String);
        impl Drop for Tables {
            fn drop(&mut self) {
                for family in ["inet", "bridge"] {
                    let _ = std::process::Command::new("nft")
                        .args(["delete", "table", family, &self.0])
                        .output();
                }
            }
        }
        let _tables = Tables(t.clone());
        let layout = Layout {
            table: t.clone(),
            subnet: Ipv4Cidr::parse("10.201.0.0/24").expect("cidr"),
            blocked: Vec::new(),
            retired: "vx4321".into(),
        };
        apply(&full_ruleset(&layout, &[], &[]))
            .await
            .expect("tables");
        let policy = EgressPolicy::from_json(
            &serde_json::json!({"allow_https": true, "denied_cidrs": ["192.168.0.0/16"]}),
            "",
        )
        .expect("policy");
        let vm = |i: u8| Ipv4Addr::new(10, 201, 0, 10 + i);
        let ports: Vec<String> = (0..4).map(|i| crate::link::port_name(vm(i))).collect();
        for i in 0..4u8 {
            let rules = VmRules {
                address: vm(i),
                port: &ports[usize::from(i)],
                policy: &policy,
            };
            change(&t, add_vm(&rules)).await.expect("add a VM");
        }
        change(&t, learn(vm(0), &["203.0.113.7".parse().expect("ip")], 60))
            .await
            .expect("learn");
        let vms = listed(&t, "vms");
        assert!(
            vms.contains("10.201.0.10") && vms.contains("10.201.0.13"),
            "{vms}"
        );
        assert!(listed(&t, "vm_deny").contains("10.201.0.12 . 192.168.0.0/16"));
        assert!(listed(&t, "vm_learned").contains("10.201.0.10 . 203.0.113.7"));
        // A learned address that expired (never there) is in the way.
        let gone: Ipv4Addr = "198.51.100.1".parse().expect("ip");
        let learned: Ipv4Addr = "203.0.113.7".parse().expect("ip");
        let remove = |i: u8| -> Vec<ElementChange> {
            let looked_up = if i == 0 {
                vec![learned, gone]
            } else {
                vec![gone]
            };
            remove_vm(vm(i), &ports[usize::from(i)], Some(&policy), &looked_up)
                .iter()
                .map(Element::to_change)
                .collect()
        };
        let destroyed = [remove(0), remove(1)].concat();
        assert!(nftables::apply_each_with(&t, &destroyed, true).is_empty());
        let halved = [remove(2), remove(3)].concat();
        let failed = nftables::apply_each_with(&t, &halved, false);
        assert_eq!(
            failed.len(),
            2,
            "only the two absent elements fail: {failed:?}"
        );
        for set in ["vms", "vm_deny", "vm_https", "vm_learned"] {
            let left = listed(&t, set);
            assert!(!left.contains("10.201.0.1"), "{set}: {left}");
        }
    }

    #[test]
    fn learning_refreshes_timeouts() {
        let elements = learn(
            "10.200.0.5".parse().expect("ip"),
            &["203.0.113.2".parse().expect("ip")],
            60,
        );
        assert_eq!(elements.len(), 3);
        assert_eq!(
            elements[0].to_nft("pt0"),
            "add element inet pt0 vm_learned { 10.200.0.5 . 203.0.113.2 timeout 60s }"
        );
        assert_eq!(elements[0].to_change().timeout_ms, Some(60_000));
        assert_eq!(elements[1].verb, Verb::Delete);
    }
}
