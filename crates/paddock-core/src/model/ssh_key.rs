//! SSH public keys registered per account, for reaching VMs and dev
//! environments over SSH.

use crate::clock::Timestamp;
use crate::ids::AccountId;

#[derive(Debug, Clone)]
pub struct SshKey {
    pub id: i64,
    pub account_id: AccountId,
    /// The user of the account it logs in as.
    pub user_email: String,
    /// The key in OpenSSH form, `type base64 [comment]`, normalized.
    pub public_key: String,
    /// `SHA256:…`, as `ssh-keygen -l` prints it.
    pub fingerprint: String,
    pub key_type: String,
    pub comment: String,
    pub created_at: Timestamp,
}

/// A key as parsed from the OpenSSH one-line form.
#[derive(Debug, Clone)]
pub struct ParsedSshKey {
    pub public_key: String,
    pub fingerprint: String,
    pub key_type: String,
    pub comment: String,
}

/// Parses an OpenSSH public key line (`ssh-ed25519 AAAA… user@host`).
pub fn parse_ssh_key(line: &str) -> Result<ParsedSshKey, String> {
    let line = line.trim();
    if line.is_empty() || line.len() > 16 * 1024 || line.contains('\n') {
        return Err("must be one OpenSSH public key line (ssh-ed25519 AAAA… comment)".into());
    }
    let key = ssh_key::PublicKey::from_openssh(line)
        .map_err(|e| format!("not an OpenSSH public key: {e}"))?;
    // The SSH gateway verifies ed25519 and ECDSA signatures only: an RSA
    // (or DSA, or security-key) key would register and then fail every
    // login.
    match key.algorithm() {
        ssh_key::Algorithm::Ed25519 | ssh_key::Algorithm::Ecdsa { .. } => {}
        other => {
            return Err(format!(
                "{} keys are not accepted by the SSH gateway; register an ed25519 key \
                 (ssh-keygen -t ed25519) or an ECDSA one",
                other.as_str()
            ))
        }
    }
    let public_key = key
        .to_openssh()
        .map_err(|e| format!("not an OpenSSH public key: {e}"))?;
    Ok(ParsedSshKey {
        fingerprint: key.fingerprint(ssh_key::HashAlg::Sha256).to_string(),
        key_type: key.algorithm().as_str().to_owned(),
        comment: key.comment().to_owned(),
        public_key,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openssh_keys_parse_with_their_fingerprint() {
        let k = parse_ssh_key(
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKnPFMvMQRRYKkwUqjHZ/XmLjTrWZSCvCNBHh3ZcVxsU me@host\n",
        )
        .expect("valid");
        assert_eq!(k.key_type, "ssh-ed25519");
        assert_eq!(k.comment, "me@host");
        assert!(k.fingerprint.starts_with("SHA256:"), "{}", k.fingerprint);
        for bad in ["", "ssh-ed25519", "ssh-ed25519 !!!", "hello world", "a\nb"] {
            assert!(parse_ssh_key(bad).is_err(), "{bad}");
        }
    }
}
