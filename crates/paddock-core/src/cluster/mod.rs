//! Several paddock processes over one store: each node registers itself,
//! beats while it lives, and marks `lost` the VMs of any node whose lease
//! ran out. Work that one process of the installation must do alone runs
//! under a lease in the store.

mod membership;

pub use membership::{Membership, MembershipConfig};
