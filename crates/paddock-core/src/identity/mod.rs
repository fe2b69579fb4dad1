//! Who acts: accounts, their API keys and dev tokens, and the SSH keys
//! of their users; and what each account consumed.

pub mod accounts;
pub mod audit;
pub mod quotas;
pub mod ssh_keys;
pub mod usage;
