//! The master key that seals vault secrets: `PADDOCK_MASTER_KEY` (64 hex
//! digits) when set, else `DATA/master.key` (mode 0600, made on first
//! use). Older keys, still able to open what they sealed until everything
//! is re-sealed, come from `PADDOCK_PREVIOUS_MASTER_KEYS` (comma
//! separated) or `DATA/master.key.previous`.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::Context;
use paddock_core::secrets::{Keyring, MasterKey};

const ENV_KEY: &str = "PADDOCK_MASTER_KEY";
const ENV_PREVIOUS: &str = "PADDOCK_PREVIOUS_MASTER_KEYS";

fn key_file(data_dir: &Path) -> PathBuf {
    data_dir.join("master.key")
}

fn previous_file(data_dir: &Path) -> PathBuf {
    data_dir.join("master.key.previous")
}

/// Writes `content` to `path` with mode 0600, atomically (temp + rename).
fn write_private(path: &Path, content: &str) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    let _ = fs::remove_file(&tmp);
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("write {}", tmp.display()))?;
    writeln!(f, "{content}")?;
    f.sync_all()?;
    fs::rename(&tmp, path).with_context(|| format!("write {}", path.display()))?;
    Ok(())
}

fn parse(text: &str, origin: &str) -> anyhow::Result<MasterKey> {
    MasterKey::from_hex(text).with_context(|| format!("the master key in {origin}"))
}

fn keys_in(text: &str, origin: &str) -> anyhow::Result<Vec<MasterKey>> {
    text.split([',', '\n'])
        .filter(|k| !k.trim().is_empty())
        .map(|k| parse(k, origin))
        .collect()
}

pub fn load(data_dir: &Path) -> anyhow::Result<Keyring> {
    if let Ok(hex) = std::env::var(ENV_KEY) {
        let older = match std::env::var(ENV_PREVIOUS) {
            Ok(list) => keys_in(&list, ENV_PREVIOUS)?,
            Err(_) => Vec::new(),
        };
        return Ok(Keyring::new(parse(&hex, ENV_KEY)?, older));
    }
    let path = key_file(data_dir);
    if !path.exists() {
        fs::create_dir_all(data_dir).with_context(|| format!("create {}", data_dir.display()))?;
        write_private(&path, &MasterKey::generate_hex())?;
    }
    let current = fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?;
    let previous = previous_file(data_dir);
    let older = match fs::read_to_string(&previous) {
        Ok(text) => keys_in(&text, &previous.display().to_string())?,
        Err(_) => Vec::new(),
    };
    Ok(Keyring::new(
        parse(&current, &path.display().to_string())?,
        older,
    ))
}

/// Replaces the data dir's master key with a new one, keeping the old one
/// in `master.key.previous` until the caller has re-sealed everything and
/// calls [`forget_previous`].
pub fn rotate(data_dir: &Path) -> anyhow::Result<Keyring> {
    if std::env::var_os(ENV_KEY).is_some() {
        anyhow::bail!(
            "the master key comes from {ENV_KEY}: rotate by setting it to a new key and \
             {ENV_PREVIOUS} to the old one, then restarting the server"
        );
    }
    let path = key_file(data_dir);
    let old = fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?;
    let previous = previous_file(data_dir);
    let mut kept = fs::read_to_string(&previous).unwrap_or_default();
    kept.push_str(old.trim());
    kept.push('\n');
    write_private(&previous, kept.trim())?;
    write_private(&path, &MasterKey::generate_hex())?;
    load(data_dir)
}

pub fn forget_previous(data_dir: &Path) -> anyhow::Result<()> {
    match fs::remove_file(previous_file(data_dir)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use paddock_core::model::SecretValue;

    #[test]
    fn a_key_is_made_once_private_and_rotation_keeps_old_secrets_open() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ring = load(dir.path()).expect("load");
        let mode = fs::metadata(key_file(dir.path()))
            .expect("stat")
            .permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o600
        );
        assert_eq!(
            load(dir.path()).expect("again").current_id(),
            ring.current_id()
        );
        let sealed = ring.seal("c", &SecretValue("v".into())).expect("seal");
        let rotated = rotate(dir.path()).expect("rotate");
        assert_ne!(rotated.current_id(), ring.current_id());
        assert_eq!(rotated.open("c", &sealed).expect("open").0, "v");
        forget_previous(dir.path()).expect("forget");
        assert!(load(dir.path()).expect("load").open("c", &sealed).is_err());
    }
}
