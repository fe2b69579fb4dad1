//! What the server and paddock's in-sandbox agent share, and nothing
//! else: the wire protocol on the agent's socket ([`proto`]) and the
//! configs the server writes for the agent's boot helper, a microVM's
//! monitor and a microVM guest's init ([`config`]). The server's runtime
//! depends on this crate alone; the agent's code (boot, PID 1 server,
//! monitor, guest init) is `paddock-agent`'s.

pub mod config;
pub mod proto;
pub mod script;
