//! Each process's token on the internal channel: `{node id}.{MAC}`, the
//! MAC of the shared master key over the node id. A receiver checks it
//! without any table (it holds the same key) and knows which node called,
//! so its logs name the caller; no tenant's key is one, and none can be
//! made without the master key.

use crate::ids::NodeId;
use crate::secrets::{constant_time_eq, Keyring};

/// What a node's token is the master key's MAC of.
fn purpose(node: &NodeId) -> String {
    format!("{}:{node}", super::INTERNAL_TOKEN_PURPOSE)
}

/// Node `node`'s token.
pub fn node_token(keyring: &Keyring, node: &NodeId) -> String {
    format!("{node}.{}", keyring.mac(&purpose(node)))
}

/// The node `token` belongs to, when it is one of this installation's.
pub fn token_node(keyring: &Keyring, token: &str) -> Option<NodeId> {
    let (node, mac) = token.split_once('.')?;
    let node: NodeId = node.parse().ok()?;
    let expected = keyring.mac(&purpose(&node));
    constant_time_eq(mac.as_bytes(), expected.as_bytes()).then_some(node)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secrets::MasterKey;

    fn new_ring() -> Keyring {
        Keyring::new(
            MasterKey::from_hex(&MasterKey::generate_hex()).expect("key"),
            vec![],
        )
    }

    #[test]
    fn a_token_names_its_node_and_nothing_else_passes() {
        let ring = new_ring();
        let a = NodeId::generate();
        let b = NodeId::generate();
        let token = node_token(&ring, &a);
        assert_eq!(token_node(&ring, &token), Some(a.clone()));
        // Another node's name on A's MAC, a bare MAC, another
        // installation's token: none is a node's.
        let (_, mac) = token.split_once('.').expect("a dot");
        assert_eq!(token_node(&ring, &format!("{b}.{mac}")), None);
        assert_eq!(token_node(&ring, mac), None);
        assert_eq!(token_node(&new_ring(), &token), None);
        assert_eq!(token_node(&ring, ""), None);
    }
}
