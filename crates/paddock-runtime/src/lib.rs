//! Sandbox providers behind [`paddock_core::provider::Provider`].
//!
//! Today: [`container::ContainerProvider`], which runs each sandbox in its
//! own namespaces on this host, with no external runtime binary. MicroVM,
//! process and Docker providers will sit beside it. [`volumes`] keeps
//! volumes and their checkpoints on the host, for any provider to bind in.

pub mod agent_client;
mod agent_helper;
pub mod container;
pub mod docker;
pub mod gpu;
pub mod local;
pub mod microvm;
pub mod volumes;
