//! The key a suspended VM's memory is sealed under, as the VM's record
//! keeps it: sealed under the master key, bound to the VM's id.

use crate::error::CoreError;
use crate::ids::VmId;
use crate::model::Sealed;
use crate::secrets::{DataKey, Keyring, SealError};

/// What a VM's memory key is sealed with, beside the master key: its id,
/// so a key moved to another VM's record does not open.
pub(crate) fn memory_key_aad(vm: &VmId) -> String {
    format!("memory:{vm}")
}

pub(crate) fn key_unusable(e: SealError) -> CoreError {
    CoreError::Unavailable(format!("the suspended VM's memory key: {e}"))
}

/// `sealed` (the memory key of `vm`) sealed again under the keyring's
/// current key, when another key sealed it: what a master-key rotation
/// does to suspended VMs.
pub(crate) fn reseal_memory_key(
    keyring: &Keyring,
    vm: &VmId,
    sealed: &Sealed,
) -> Result<Option<Sealed>, CoreError> {
    if sealed.key_id == keyring.current_id() {
        return Ok(None);
    }
    let aad = memory_key_aad(vm);
    let key = DataKey::open(keyring, &aad, sealed).map_err(key_unusable)?;
    key.seal(keyring, &aad).map(Some).map_err(key_unusable)
}
