//! The gateway's host key: made once, kept in the data dir (0600), so
//! clients' `known_hosts` stay valid across restarts.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use russh::keys::ssh_key::rand_core::OsRng;
use russh::keys::ssh_key::LineEnding;
use russh::keys::{Algorithm, PrivateKey};

#[derive(Debug, thiserror::Error)]
pub enum HostKeyError {
    #[error("could not read the SSH host key {path}")]
    Read {
        path: String,
        #[source]
        source: russh::keys::ssh_key::Error,
    },
    #[error("could not make the SSH host key")]
    Generate(#[source] russh::keys::ssh_key::Error),
    #[error("could not write the SSH host key {path}")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

pub fn load_or_create_host_key(path: &Path) -> Result<PrivateKey, HostKeyError> {
    if path.exists() {
        return PrivateKey::read_openssh_file(path).map_err(|source| HostKeyError::Read {
            path: path.display().to_string(),
            source,
        });
    }
    let key = PrivateKey::random(&mut OsRng, Algorithm::Ed25519).map_err(HostKeyError::Generate)?;
    let pem = key
        .to_openssh(LineEnding::LF)
        .map_err(HostKeyError::Generate)?;
    let write = |source| HostKeyError::Write {
        path: path.display().to_string(),
        source,
    };
    // Written under a temporary name with its mode set first, then moved:
    // the key is never readable by others, nor half-written.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, pem.as_bytes()).map_err(write)?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600)).map_err(write)?;
    std::fs::rename(&tmp, path).map_err(write)?;
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_key_is_made_once_and_kept_private() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("k");
        let a = load_or_create_host_key(&path).expect("made");
        let b = load_or_create_host_key(&path).expect("read");
        assert_eq!(a.public_key(), b.public_key());
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
