//! The keys a VM's record keeps sealed under the master key, each bound
//! to the VM's id: the key its suspended memory is sealed under, and its
//! vault CA's private key.

use crate::error::CoreError;
use crate::ids::VmId;
use crate::model::Vm;
use crate::secrets::{DataKey, Keyring, SealError};

/// What a VM's memory key is sealed with, beside the master key: its id,
/// so a key moved to another VM's record does not open.
pub(crate) fn memory_key_aad(vm: &VmId) -> String {
    format!("memory:{vm}")
}

/// What a VM's vault CA key is sealed with beside the master key.
pub(crate) fn vault_ca_aad(vm: &VmId) -> String {
    format!("vault-ca:{vm}")
}

pub(crate) fn key_unusable(e: SealError) -> CoreError {
    CoreError::Unavailable(format!("a key sealed on the VM's record: {e}"))
}

/// The sealed keys on `vm`'s record sealed again under the keyring's
/// current key where another key sealed them: what a master-key rotation
/// does to VMs. Whether any changed.
pub(crate) fn reseal_vm_keys(keyring: &Keyring, vm: &mut Vm) -> Result<bool, CoreError> {
    let current = keyring.current_id().to_owned();
    let mut changed = false;
    if let Some(sealed) = vm
        .options
        .memory_key
        .as_ref()
        .filter(|s| s.key_id != current)
    {
        let aad = memory_key_aad(&vm.id);
        let key = DataKey::open(keyring, &aad, sealed).map_err(key_unusable)?;
        vm.options.memory_key = Some(key.seal(keyring, &aad).map_err(key_unusable)?);
        changed = true;
    }
    if let Some(ca) = vm
        .options
        .vault_ca
        .as_mut()
        .filter(|c| c.key.key_id != current)
    {
        let aad = vault_ca_aad(&vm.id);
        let key = keyring.open(&aad, &ca.key).map_err(key_unusable)?;
        ca.key = keyring.seal(&aad, &key).map_err(key_unusable)?;
        changed = true;
    }
    Ok(changed)
}
