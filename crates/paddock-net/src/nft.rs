//! The nftables ruleset of one server, as nft's own language.
//!
//! The rules are generated as text and fed to `nft -f -`: that language
//! is nftables' stable interface, every batch applies atomically, and the
//! crates that wrap it spawn the same binary with JSON. Everything lives
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

use crate::segment::Segment;
use crate::NetError;

/// What the ruleset is built from, besides the VMs.
#[derive(Debug, Clone)]
pub struct Layout {
    pub table: String,
    pub subnet: Ipv4Cidr,
    /// Ranges no VM reaches, whatever its policy.
    pub blocked: Vec<Ipv4Cidr>,
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
    iifname @ifaces ether type ip iifname . ip saddr != @ports drop
    iifname @ifaces ether type arp iifname . arp saddr ip != @ports drop
    iifname @ifaces ether type ip6 drop
  }}
}}"#,
        blocked = set_list(&blocked),
        subnet = layout.subnet,
    );
    for segment in segments {
        s.push_str(&add_segment(layout, segment));
    }
    for vm in vms {
        s.push_str(&add_vm(layout, vm));
    }
    s
}

/// Adds a segment: its bridge carries VMs, its gateway is a resolver.
pub fn add_segment(layout: &Layout, segment: &Segment) -> String {
    format!(
        "add element inet {t} bridges {{ \"{b}\" }}\nadd element inet {t} gateways {{ {g} }}\n",
        t = layout.table,
        b = segment.bridge,
        g = segment.gateway(),
    )
}

/// Adds one VM: its policy's elements, its place among the attached VMs
/// and its port's address.
pub fn add_vm(layout: &Layout, vm: &VmRules<'_>) -> String {
    let t = &layout.table;
    let mut s = policy_elements(layout, vm.address, vm.policy, "add");
    let _ = writeln!(
        s,
        "add element inet {t} vms {{ {a} }}\n\
         add element bridge {t} ifaces {{ \"{p}\" }}\n\
         add element bridge {t} ports {{ \"{p}\" . {a} }}",
        a = vm.address,
        p = vm.port,
    );
    s
}

/// Replaces a VM's policy `old` (the one in force) with `new` in one
/// transaction. Its learned addresses stay, still bound by their TTL;
/// [`forget_learned`] drops them when `new` allows no domain.
pub fn replace_policy(
    layout: &Layout,
    address: Ipv4Addr,
    old: &EgressPolicy,
    new: &EgressPolicy,
) -> String {
    let mut s = policy_elements(layout, address, old, "delete");
    s.push_str(&policy_elements(layout, address, new, "add"));
    s
}

/// The elements a VM's policy puts in the shared sets, each line `verb`
/// (`add` or `delete`) one of them.
fn policy_elements(
    layout: &Layout,
    address: Ipv4Addr,
    policy: &EgressPolicy,
    verb: &str,
) -> String {
    let t = &layout.table;
    let mut s = String::new();
    for (set, cidrs) in [
        ("vm_allow", &policy.allowed_cidrs),
        ("vm_deny", &policy.denied_cidrs),
    ] {
        let keys: Vec<String> = disjoint(cidrs)
            .iter()
            .map(|c| format!("{address} . {c}"))
            .collect();
        if !keys.is_empty() {
            let _ = writeln!(s, "{verb} element inet {t} {set} {{ {} }}", keys.join(", "));
        }
    }
    let flags = [
        ("vm_http", policy.allow_http),
        ("vm_https", policy.allow_https),
        ("vm_open", policy.default == EgressDefault::Allow),
    ];
    for (set, on) in flags {
        if on {
            let _ = writeln!(s, "{verb} element inet {t} {set} {{ {address} }}");
        }
    }
    s
}

/// Removes one VM's rules (`policy`: the one in force; `learned`: the
/// addresses it looked up): the lines that may fail when a part is
/// already gone come as separate batches (see [`apply_each`]).
pub fn remove_vm(
    layout: &Layout,
    address: Ipv4Addr,
    port: &str,
    policy: Option<&EgressPolicy>,
    learned: &[Ipv4Addr],
) -> Vec<String> {
    let t = &layout.table;
    let mut batches = vec![
        format!("delete element inet {t} vms {{ {address} }}"),
        format!("delete element bridge {t} ports {{ \"{port}\" . {address} }}"),
        format!("delete element bridge {t} ifaces {{ \"{port}\" }}"),
    ];
    if let Some(p) = policy {
        batches.extend(
            policy_elements(layout, address, p, "delete")
                .lines()
                .map(str::to_owned),
        );
    }
    batches.extend(forget_learned(layout, address, learned));
    batches
}

/// Deletes what a VM learned, one batch each (an expired one is gone).
pub fn forget_learned(layout: &Layout, vm: Ipv4Addr, learned: &[Ipv4Addr]) -> Vec<String> {
    let t = &layout.table;
    learned
        .iter()
        .map(|a| format!("delete element inet {t} vm_learned {{ {vm} . {a} }}"))
        .collect()
}

/// Lets a VM reach addresses it looked up, for `ttl` seconds. The add,
/// delete, add sequence refreshes the timeout of an address already there.
pub fn learn(layout: &Layout, vm: Ipv4Addr, addresses: &[Ipv4Addr], ttl: u32) -> String {
    let t = &layout.table;
    let list = addresses
        .iter()
        .map(|a| format!("{vm} . {a} timeout {ttl}s"))
        .collect::<Vec<_>>()
        .join(", ");
    let plain = addresses
        .iter()
        .map(|a| format!("{vm} . {a}"))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "add element inet {t} vm_learned {{ {list} }}\n\
         delete element inet {t} vm_learned {{ {plain} }}\n\
         add element inet {t} vm_learned {{ {list} }}\n"
    )
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

/// Runs the batches, ignoring failures: for teardown, where a part may
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
        let s = policy_elements(&layout(), a, &policy, "add");
        assert_eq!(
            s.lines().collect::<Vec<_>>(),
            [
                "add element inet pt0 vm_allow { 10.200.0.5 . 203.0.113.0/24 }",
                "add element inet pt0 vm_deny { 10.200.0.5 . 203.0.113.9/32 }",
                "add element inet pt0 vm_https { 10.200.0.5 }",
            ]
        );
        let replaced = replace_policy(&layout(), a, &policy, &EgressPolicy::allow_all());
        assert!(
            replaced.starts_with("delete element inet pt0 vm_allow"),
            "{replaced}"
        );
        assert!(
            replaced.ends_with("add element inet pt0 vm_open { 10.200.0.5 }\n"),
            "{replaced}"
        );
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
    }

    #[test]
    fn learning_refreshes_timeouts() {
        let s = learn(
            &layout(),
            "10.200.0.5".parse().expect("ip"),
            &["203.0.113.2".parse().expect("ip")],
            60,
        );
        assert_eq!(s.lines().count(), 3);
        assert!(s.starts_with(
            "add element inet pt0 vm_learned { 10.200.0.5 . 203.0.113.2 timeout 60s }"
        ));
    }
}
