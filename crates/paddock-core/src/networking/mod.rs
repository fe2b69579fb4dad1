//! A VM's reach: its egress policy, the shares that expose its ports,
//! and custom domains routed to them.

pub mod domains;
pub mod network;
pub mod shares;
pub mod webhooks;
