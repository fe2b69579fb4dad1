//! The host and metadata blocks for sandboxes on a bridge paddock does
//! not run itself (the docker provider's engine network). paddock's own
//! bridge gets them from its full ruleset (`nft.rs`); here the same
//! always-blocked ranges, and the host's own ports, are closed to
//! whatever enters from `bridge`, in a table of its own:
//!
//! - `input`: nothing from the bridge reaches a host socket (the API,
//!   the share proxy, sshd, anything listening on any host address),
//!   except replies to connections the host made;
//! - `forward`: nothing from the bridge reaches the blocked ranges
//!   (private networks, link-local metadata, loopback), nor another
//!   port of the same bridge (sandboxes cannot reach each other).
//!
//! Base chains at a priority before the engine's own, so its accepts
//! cannot let anything past (a drop in any table is final).

use paddock_core::model::Ipv4Cidr;

use crate::NetError;

/// The table guarding `bridge`.
pub fn table_name(bridge: &str) -> String {
    let safe: String = bridge
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    format!("paddock_guard_{safe}")
}

/// The guard's ruleset, replacing any earlier one of the same table.
pub fn ruleset(bridge: &str, blocked: &[Ipv4Cidr]) -> String {
    let table = table_name(bridge);
    let blocked = blocked
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    let blocked_rule = if blocked.is_empty() {
        String::new()
    } else {
        format!("    iifname \"{bridge}\" ip daddr {{ {blocked} }} drop\n")
    };
    format!(
        "table inet {table}\n\
         delete table inet {table}\n\
         table inet {table} {{\n\
         \x20 chain input {{\n\
         \x20   type filter hook input priority filter - 10; policy accept;\n\
         \x20   iifname \"{bridge}\" ct state established,related accept\n\
         \x20   iifname \"{bridge}\" drop\n\
         \x20 }}\n\
         \x20 chain forward {{\n\
         \x20   type filter hook forward priority filter - 10; policy accept;\n\
         \x20   iifname \"{bridge}\" oifname \"{bridge}\" drop\n\
         \x20   iifname \"{bridge}\" ct state established,related accept\n\
         {blocked_rule}\
         \x20 }}\n\
         }}\n"
    )
}

/// Installs (or refreshes) the guard of `bridge`.
pub async fn install(bridge: &str, blocked: &[Ipv4Cidr]) -> Result<(), NetError> {
    crate::nft::apply(&ruleset(bridge, blocked)).await
}

/// Removes the guard of `bridge`, if there is one.
pub async fn remove(bridge: &str) {
    crate::nft::apply_each(&[format!("delete table inet {}", table_name(bridge))]).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ruleset_closes_the_host_and_the_blocked_ranges() {
        let blocked = [
            Ipv4Cidr::new([169, 254, 0, 0].into(), 16).expect("cidr"),
            Ipv4Cidr::new([10, 0, 0, 0].into(), 8).expect("cidr"),
        ];
        let r = ruleset("pdk-x1", &blocked);
        assert!(r.contains("table inet paddock_guard_pdk_x1 {"), "{r}");
        assert!(r.contains("hook input"), "{r}");
        assert!(r.contains("iifname \"pdk-x1\" drop"), "{r}");
        assert!(
            r.contains("ip daddr { 169.254.0.0/16, 10.0.0.0/8 } drop"),
            "{r}"
        );
        assert!(
            r.contains("iifname \"pdk-x1\" oifname \"pdk-x1\" drop"),
            "{r}"
        );
    }
}
