//! Sandbox providers behind [`paddock_core::provider::Provider`].
//!
//! [`container::ContainerProvider`] runs each sandbox in its own namespaces
//! on this host, with no external runtime binary; [`local`] and
//! [`microvm`] are built on its parts (host processes; qemu guests), and
//! [`docker`] drives a Docker Engine. [`volumes`] keeps volumes and their
//! checkpoints on the host, for any provider to bind in.

pub mod agent_channel;
pub mod agent_client;
mod agent_helper;
pub mod container;
pub mod docker;
pub mod gpu;
pub mod local;
pub mod microvm;
pub mod node_tunnel;
mod over_container;
pub mod remote;
mod sys;
pub mod volumes;
