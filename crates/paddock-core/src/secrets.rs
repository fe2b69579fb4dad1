//! Sealing secret values at rest: AES-256-GCM (the RustCrypto `aes-gcm`
//! crate) under a master key, with a fresh random 96-bit nonce per value
//! and the credential's id as associated data, so a sealed value moved
//! to another row no longer opens.
//!
//! A keyring has one current key, which seals, and older keys, which only
//! open: rotating the master key re-seals every value under the new one
//! ([`crate::service::Service::reseal_secrets`]), after which the old key
//! can be dropped.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::model::{Sealed, SecretValue};

#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("a master key must be 32 bytes (64 hex digits)")]
    KeyLength,
    #[error("the secret was sealed under key {0}, which this server does not have")]
    UnknownKey(String),
    #[error("the sealed secret failed authentication (tampered, or the wrong key)")]
    Tampered,
    #[error("sealing failed")]
    Seal,
}

/// One AES-256 master key and its public id (a hash prefix, never the key).
pub struct MasterKey {
    id: String,
    cipher: Aes256Gcm,
    /// A second key derived from the master key, for MACs: one key is
    /// never used for two algorithms.
    mac_key: [u8; 32],
}

impl MasterKey {
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, SealError> {
        if bytes.len() != 32 {
            return Err(SealError::KeyLength);
        }
        let id = hex::encode(&Sha256::digest(bytes)[..8]);
        let cipher = Aes256Gcm::new_from_slice(bytes).map_err(|_| SealError::KeyLength)?;
        let mut mac_key = [0u8; 32];
        mac_key.copy_from_slice(&Sha256::digest(
            [b"paddock-mac-v1:".as_slice(), bytes].concat(),
        ));
        Ok(Self {
            id,
            cipher,
            mac_key,
        })
    }

    /// A key written as 64 hex digits (surrounding whitespace ignored).
    pub fn from_hex(text: &str) -> Result<Self, SealError> {
        let bytes = hex::decode(text.trim()).map_err(|_| SealError::KeyLength)?;
        Self::from_bytes(&bytes)
    }

    /// 32 random bytes from the OS's generator, as hex.
    pub fn generate_hex() -> String {
        let mut key = [0u8; 32];
        rand::rng().fill_bytes(&mut key);
        hex::encode(key)
    }

    pub fn id(&self) -> &str {
        &self.id
    }
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MasterKey").field("id", &self.id).finish()
    }
}

#[derive(Debug)]
pub struct Keyring {
    current: MasterKey,
    older: Vec<MasterKey>,
}

impl Keyring {
    pub fn new(current: MasterKey, older: Vec<MasterKey>) -> Self {
        Self { current, older }
    }

    pub fn current_id(&self) -> &str {
        self.current.id()
    }

    /// HMAC-SHA256 of `data` under the current key, as hex: for values the
    /// server hands out and later checks (share cookies).
    pub fn mac(&self, data: &str) -> String {
        use hmac::Mac;
        let mut m = <hmac::Hmac<Sha256> as Mac>::new_from_slice(&self.current.mac_key)
            .expect("HMAC accepts any key length");
        m.update(data.as_bytes());
        hex::encode(m.finalize().into_bytes())
    }

    pub fn seal(&self, aad: &str, value: &SecretValue) -> Result<Sealed, SealError> {
        let mut nonce = [0u8; 12];
        rand::rng().fill_bytes(&mut nonce);
        let ciphertext = self
            .current
            .cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: value.0.as_bytes(),
                    aad: aad.as_bytes(),
                },
            )
            .map_err(|_| SealError::Seal)?;
        Ok(Sealed {
            key_id: self.current.id.clone(),
            nonce: nonce.to_vec(),
            ciphertext,
        })
    }

    pub fn open(&self, aad: &str, sealed: &Sealed) -> Result<SecretValue, SealError> {
        let key = std::iter::once(&self.current)
            .chain(&self.older)
            .find(|k| k.id == sealed.key_id)
            .ok_or_else(|| SealError::UnknownKey(sealed.key_id.clone()))?;
        if sealed.nonce.len() != 12 {
            return Err(SealError::Tampered);
        }
        let plain = key
            .cipher
            .decrypt(
                Nonce::from_slice(&sealed.nonce),
                Payload {
                    msg: &sealed.ciphertext,
                    aad: aad.as_bytes(),
                },
            )
            .map_err(|_| SealError::Tampered)?;
        String::from_utf8(plain)
            .map(SecretValue)
            .map_err(|_| SealError::Tampered)
    }
}

/// A random key for one piece of data sealed in bulk outside the store
/// (a suspended microVM's memory): the data is sealed under it, and it is
/// kept sealed under the master key beside the record it belongs to, so
/// rotating the master key reseals 32 bytes, not the data. Its `Debug`
/// never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct DataKey([u8; 32]);

impl DataKey {
    /// A fresh key from the OS's generator.
    pub fn generate() -> Self {
        let mut key = [0u8; 32];
        rand::rng().fill_bytes(&mut key);
        Self(key)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Sealed under the keyring's current key, bound to `aad`.
    pub fn seal(&self, keyring: &Keyring, aad: &str) -> Result<Sealed, SealError> {
        keyring.seal(aad, &SecretValue(hex::encode(self.0)))
    }

    /// The key [`DataKey::seal`] sealed with the same `aad`.
    pub fn open(keyring: &Keyring, aad: &str, sealed: &Sealed) -> Result<Self, SealError> {
        let text = keyring.open(aad, sealed)?;
        let mut key = [0u8; 32];
        hex::decode_to_slice(text.0.as_bytes(), &mut key).map_err(|_| SealError::Tampered)?;
        Ok(Self(key))
    }
}

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DataKey(<redacted>)")
    }
}

/// Whether `a` and `b` are equal, in time that depends on their length
/// only: for secrets a caller presents (share cookies, the nodes' token,
/// E2B's access and upload tokens). `subtle` keeps the compiler from
/// turning the comparison into one that stops at the first difference.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.ct_eq(b).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_compare_equal_only_when_identical() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(constant_time_eq(b"", b""));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
        assert!(!constant_time_eq(b"", b"a"));
    }

    fn key() -> MasterKey {
        MasterKey::from_hex(&MasterKey::generate_hex()).expect("key")
    }

    #[test]
    fn data_keys_open_only_under_their_aad() {
        let ring = Keyring::new(key(), vec![]);
        let data = DataKey::generate();
        let sealed = data.seal(&ring, "memory:vm_a").expect("seal");
        assert_eq!(
            DataKey::open(&ring, "memory:vm_a", &sealed).expect("open"),
            data
        );
        assert!(DataKey::open(&ring, "memory:vm_b", &sealed).is_err());
        assert_ne!(DataKey::generate(), data);
        assert_eq!(format!("{data:?}"), "DataKey(<redacted>)");
    }

    #[test]
    fn sealed_values_open_only_with_their_key_and_row() {
        let ring = Keyring::new(key(), vec![]);
        let secret = SecretValue("hunter2-value".into());
        let sealed = ring.seal("cred_a", &secret).expect("seal");
        assert!(!sealed.ciphertext.windows(6).any(|w| w == b"hunter"));
        assert_eq!(ring.open("cred_a", &sealed).expect("open"), secret);
        // Moved to another row, it no longer opens.
        assert!(matches!(
            ring.open("cred_b", &sealed),
            Err(SealError::Tampered)
        ));
        let mut flipped = sealed.clone();
        flipped.ciphertext[0] ^= 1;
        assert!(matches!(
            ring.open("cred_a", &flipped),
            Err(SealError::Tampered)
        ));
        let other = Keyring::new(key(), vec![]);
        assert!(matches!(
            other.open("cred_a", &sealed),
            Err(SealError::UnknownKey(_))
        ));
    }

    #[test]
    fn an_older_key_still_opens_after_rotation() {
        let old_hex = MasterKey::generate_hex();
        let old = Keyring::new(MasterKey::from_hex(&old_hex).expect("key"), vec![]);
        let sealed = old.seal("c", &SecretValue("v".into())).expect("seal");
        let rotated = Keyring::new(key(), vec![MasterKey::from_hex(&old_hex).expect("key")]);
        assert_eq!(rotated.open("c", &sealed).expect("open").0, "v");
        assert_ne!(
            rotated
                .seal("c", &SecretValue("v".into()))
                .expect("seal")
                .key_id,
            sealed.key_id
        );
    }

    #[test]
    fn bad_keys_are_refused() {
        assert!(MasterKey::from_hex("abcd").is_err());
        assert!(MasterKey::from_hex(&"zz".repeat(32)).is_err());
    }
}
