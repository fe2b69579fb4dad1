//! The in-sandbox agent and its protocol.
//!
//! The same binary does two jobs:
//! - `paddock-agent boot CONFIG` (run by the server on the host) joins the
//!   sandbox's cgroups, creates its namespaces, forks the sandbox's PID 1,
//!   reports that pid and exits. PID 1 mounts the root filesystem, binds the
//!   agent socket, pivots into the root, drops privileges and then serves;
//! - `paddock-agent attach|detach` (run by the server on the host) binds a
//!   volume into a running sandbox or takes it out ([`inject`]);
//! - as PID 1 it serves exec, files and PTYs over a unix socket whose path
//!   lives on the host, speaking [`proto`].
//!
//! The agent is started from the host before the pivot, so its own binary
//! and libraries come from the host and it runs in any root filesystem.

pub mod boot;
pub mod guest;
pub mod inject;
pub mod mux;
pub use paddock_agent_protocol::proto;
pub mod serve;
pub(crate) mod sys;
pub mod vmm;

pub use serve::serve;
pub use serve::{Defaults, RunAs};
