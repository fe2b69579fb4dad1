//! paddock's agent tooling on the VM API: what the `instavm` SDK and CLI
//! offer on top of plain VMs, over the VM core: browser sessions
//! ([`browser`]), a headless Chromium in its own sandbox driven over the
//! DevTools protocol by the server; tapes ([`tapes`]), what happens in a
//! session's VM recorded step by step with checkpoints of its files;
//! devbox templates ([`templates`]), manifests published as snapshots and
//! run as VMs with their app shared; desktops ([`desktops`]) for computer
//! use, their viewer, control API and recordings.
//!
//! The wire format (the VM API's JSON and errors) is the API crate's; this
//! crate keeps the rules: what a session is, how the browser in it starts
//! and is reached, and what each interaction does in the page.

pub mod browser;
pub mod desktops;
pub mod tapes;
pub mod templates;

pub use browser::{Browser, BrowserConfig, BrowserError};
pub use desktops::{DesktopConfig, Desktops};
pub use tapes::Tapes;
pub use templates::Templates;
