//! The nftables ruleset of one server, as nft's own language.
//!
//! The rules are generated as text and fed to `nft -f -`: that language
//! is nftables' stable interface, every batch applies atomically, and the
//! crates that wrap it spawn the same binary with JSON. Everything lives
//! in two tables named after the bridge, so two servers on one host (and
//! the operator's own rules) never touch each other's rules.
//!
//! - `inet <table>`: `forward` sends each VM's packets (keyed by source
//!   address; the bridge table stops spoofing) to the VM's own chain,
//!   after refusing the always-blocked ranges; `input` lets VMs reach
//!   only paddock's resolver on the host; `postrouting` masquerades.
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

use crate::NetError;

/// What the ruleset is built from, besides the VMs.
#[derive(Debug, Clone)]
pub struct Layout {
    pub table: String,
    pub bridge: String,
    pub subnet: Ipv4Cidr,
    pub gateway: Ipv4Addr,
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

/// The per-VM names: a chain and its three sets.
pub fn chain_name(address: Ipv4Addr) -> String {
    format!("vm_{:08x}", u32::from(address))
}

fn set_list(cidrs: &[Ipv4Cidr]) -> String {
    cidrs
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The whole ruleset for `vms`: deletes and recreates both tables in one
/// transaction.
pub fn full_ruleset(layout: &Layout, vms: &[VmRules<'_>]) -> String {
    let t = &layout.table;
    let br = &layout.bridge;
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
  map vms {{ type ipv4_addr : verdict; }}
  chain refuse {{
    meta l4proto tcp reject with tcp reset
    reject with icmpx admin-prohibited
  }}
  chain forward {{
    type filter hook forward priority filter; policy accept;
    oifname "{br}" ct state established,related accept
    oifname "{br}" goto refuse
    iifname "{br}" ct state established,related accept
    iifname "{br}" meta nfproto ipv6 goto refuse
    iifname "{br}" ip daddr @blocked goto refuse
    iifname "{br}" ip saddr vmap @vms
    iifname "{br}" goto refuse
  }}
  chain dns_untracked_in {{
    type filter hook prerouting priority raw; policy accept;
    iifname "{br}" ip daddr {gw} meta l4proto {{ tcp, udp }} th dport 53 notrack
  }}
  chain dns_untracked_out {{
    type filter hook output priority raw; policy accept;
    oifname "{br}" ip saddr {gw} meta l4proto {{ tcp, udp }} th sport 53 notrack
  }}
  chain input {{
    type filter hook input priority filter; policy accept;
    iifname "{br}" ct state established,related accept
    iifname "{br}" ip daddr {gw} meta l4proto {{ tcp, udp }} th dport 53 accept
    iifname "{br}" goto refuse
  }}
  chain postrouting {{
    type nat hook postrouting priority srcnat; policy accept;
    ip saddr {subnet} oifname != "{br}" masquerade
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
        gw = layout.gateway,
        subnet = layout.subnet,
    );
    for vm in vms {
        s.push_str(&add_vm(layout, vm));
    }
    s
}

/// Adds one VM: its sets, its chain, its place in the verdict map and its
/// port's address.
pub fn add_vm(layout: &Layout, vm: &VmRules<'_>) -> String {
    let t = &layout.table;
    let c = chain_name(vm.address);
    let mut s = String::new();
    let _ = writeln!(
        s,
        "add set inet {t} {c}_allow {{ type ipv4_addr; flags interval; auto-merge; }}\n\
         add set inet {t} {c}_deny {{ type ipv4_addr; flags interval; auto-merge; }}\n\
         add set inet {t} {c}_learned {{ type ipv4_addr; flags timeout; }}\n\
         add chain inet {t} {c}"
    );
    s.push_str(&policy_body(layout, vm.address, vm.policy));
    let _ = writeln!(
        s,
        "add element inet {t} vms {{ {a} : jump {c} }}\n\
         add element bridge {t} ifaces {{ \"{p}\" }}\n\
         add element bridge {t} ports {{ \"{p}\" . {a} }}",
        a = vm.address,
        p = vm.port,
    );
    s
}

/// Replaces a VM's rules and lists (its learned addresses stay, still
/// bound by their TTL) in one transaction.
pub fn replace_policy(layout: &Layout, address: Ipv4Addr, policy: &EgressPolicy) -> String {
    let t = &layout.table;
    let c = chain_name(address);
    let mut s = format!(
        "flush chain inet {t} {c}\nflush set inet {t} {c}_allow\nflush set inet {t} {c}_deny\n"
    );
    if policy.domain_patterns().is_empty() {
        let _ = writeln!(s, "flush set inet {t} {c}_learned");
    }
    s.push_str(&policy_body(layout, address, policy));
    s
}

/// The rules of a VM's chain and the content of its lists.
fn policy_body(layout: &Layout, address: Ipv4Addr, policy: &EgressPolicy) -> String {
    let t = &layout.table;
    let c = chain_name(address);
    let mut s = String::new();
    if !policy.allowed_cidrs.is_empty() {
        let _ = writeln!(
            s,
            "add element inet {t} {c}_allow {{ {} }}",
            set_list(&policy.allowed_cidrs)
        );
    }
    if !policy.denied_cidrs.is_empty() {
        let _ = writeln!(
            s,
            "add element inet {t} {c}_deny {{ {} }}",
            set_list(&policy.denied_cidrs)
        );
    }
    let mut rule = |r: &str| {
        let _ = writeln!(s, "add rule inet {t} {c} {r}");
    };
    rule(&format!("ip daddr @{c}_deny goto refuse"));
    rule(&format!("ip daddr @{c}_allow accept"));
    rule(&format!("ip daddr @{c}_learned accept"));
    if policy.allow_http {
        rule("tcp dport 80 accept");
    }
    if policy.allow_https {
        rule("meta l4proto { tcp, udp } th dport 443 accept");
    }
    rule(match policy.default {
        EgressDefault::Allow => "accept",
        EgressDefault::Deny => "goto refuse",
    });
    s
}

/// Removes one VM's rules; the lines that may fail when a part is already
/// gone come as separate batches (see [`apply_each`]).
pub fn remove_vm(layout: &Layout, address: Ipv4Addr, port: &str) -> Vec<String> {
    let t = &layout.table;
    let c = chain_name(address);
    vec![
        format!("delete element inet {t} vms {{ {address} }}"),
        format!("delete element bridge {t} ports {{ \"{port}\" . {address} }}"),
        format!("delete element bridge {t} ifaces {{ \"{port}\" }}"),
        format!(
            "delete chain inet {t} {c}\ndelete set inet {t} {c}_allow\n\
             delete set inet {t} {c}_deny\ndelete set inet {t} {c}_learned"
        ),
    ]
}

/// Lets a VM reach addresses it looked up, for `ttl` seconds. The add,
/// delete, add sequence refreshes the timeout of an address already there.
pub fn learn(layout: &Layout, vm: Ipv4Addr, addresses: &[Ipv4Addr], ttl: u32) -> String {
    let t = &layout.table;
    let c = chain_name(vm);
    let list = addresses
        .iter()
        .map(|a| format!("{a} timeout {ttl}s"))
        .collect::<Vec<_>>()
        .join(", ");
    let plain = addresses
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "add element inet {t} {c}_learned {{ {list} }}\n\
         delete element inet {t} {c}_learned {{ {plain} }}\n\
         add element inet {t} {c}_learned {{ {list} }}\n"
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
            bridge: "pt0".into(),
            subnet: Ipv4Cidr::parse("10.200.0.0/24").expect("cidr"),
            gateway: "10.200.0.1".parse().expect("ip"),
            blocked: vec![Ipv4Cidr::parse("169.254.0.0/16").expect("cidr")],
        }
    }

    #[test]
    fn a_policy_becomes_ordered_rules() {
        let policy = EgressPolicy::from_json(
            &serde_json::json!({"allow_https": true, "allowed_cidrs": ["203.0.113.0/24"], "denied_cidrs": ["203.0.113.9"]}),
            "",
        )
        .expect("policy");
        let s = policy_body(&layout(), "10.200.0.5".parse().expect("ip"), &policy);
        let rules: Vec<&str> = s.lines().filter(|l| l.starts_with("add rule")).collect();
        assert_eq!(rules.len(), 5, "{s}");
        assert!(rules[0].ends_with("ip daddr @vm_0ac80005_deny goto refuse"));
        assert!(rules[3].contains("th dport 443 accept"));
        assert!(rules[4].ends_with("goto refuse"));
        assert!(s.contains("add element inet pt0 vm_0ac80005_allow { 203.0.113.0/24 }"));
    }

    #[test]
    fn the_ruleset_blocks_the_subnet_and_names_the_bridge() {
        let s = full_ruleset(&layout(), &[]);
        assert!(s.contains("elements = { 169.254.0.0/16, 10.200.0.0/24 }"));
        assert!(s.contains("ip saddr 10.200.0.0/24 oifname != \"pt0\" masquerade"));
        assert!(s.contains("ip daddr 10.200.0.1 meta l4proto { tcp, udp } th dport 53 accept"));
        assert!(s.contains("ip daddr 10.200.0.1 meta l4proto { tcp, udp } th dport 53 notrack"));
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
        assert!(
            s.starts_with("add element inet pt0 vm_0ac80005_learned { 203.0.113.2 timeout 60s }")
        );
    }
}
