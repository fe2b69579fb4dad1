//! The ports: traits the core drives and the binary's other crates
//! implement (sandbox providers, the store, images, VM networking,
//! volumes, custom domains' DNS). Nothing here knows how.

pub mod domain_backend;
pub mod images;
pub mod network_backend;
pub mod provider;
pub mod store;
pub mod volume_backend;
pub mod webhook_sender;
