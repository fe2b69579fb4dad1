//! Who acts: accounts, their API keys and dev tokens, and the SSH keys
//! of their users.

pub mod accounts;
pub mod quotas;
pub mod ssh_keys;
