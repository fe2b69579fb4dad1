//! A template build's files: the SDK tars what a `COPY` step names (by
//! the files' hash) and uploads it to a URL the server hands out, as E2B
//! hands out a presigned storage URL: a path that names the account,
//! template and hash, and a token that signs them (an HMAC of the master
//! key), so the upload needs no API key. Archives are kept under the
//! data dir, one per account and hash; a build reads the ones its steps
//! name into its context.

use std::path::{Component, Path, PathBuf};

use futures::StreamExt;
use paddock_core::build::BuildContext;
use paddock_core::error::CoreError;
use paddock_core::exec::ByteStream;
use paddock_core::ids::AccountId;
use tokio::io::AsyncWriteExt;

use crate::E2b;

/// The largest archive one upload may be.
pub const MAX_UPLOAD: u64 = 1 << 30;
/// What one account's uploaded archives may hold together on the
/// server's disk.
pub const MAX_ACCOUNT_UPLOADS: u64 = 4 << 30;
/// The most bytes of files one build's context holds (in memory while
/// it builds).
const MAX_CONTEXT: u64 = 512 << 20;
const TOKEN_PURPOSE: &str = "e2b-template-upload";

fn check_hash(hash: &str) -> Result<(), CoreError> {
    if !hash.is_empty() && hash.len() <= 128 && hash.chars().all(|c| c.is_ascii_hexdigit()) {
        Ok(())
    } else {
        Err(CoreError::invalid("hash", "not a files hash"))
    }
}

/// The relative, normalized path of a tar entry, if it stays inside.
fn entry_path(raw: &Path) -> Option<String> {
    let mut parts = Vec::new();
    for c in raw.components() {
        match c {
            Component::Normal(p) => parts.push(p.to_str()?.to_owned()),
            Component::CurDir => {}
            _ => return None,
        }
    }
    (!parts.is_empty()).then(|| parts.join("/"))
}

/// Reads a (gzipped) tar into `context` under `prefix/`.
fn read_archive(
    bytes: &[u8],
    prefix: &str,
    context: &mut BuildContext,
    total: &mut u64,
) -> Result<(), CoreError> {
    let bad = |e: std::io::Error| CoreError::invalid("files", format!("the uploaded archive: {e}"));
    let reader: Box<dyn std::io::Read> = if bytes.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::read::GzDecoder::new(bytes))
    } else {
        Box::new(bytes)
    };
    let mut archive = tar::Archive::new(reader);
    for entry in archive.entries().map_err(bad)? {
        let mut entry = entry.map_err(bad)?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let path = entry.path().map_err(bad)?;
        let Some(rel) = entry_path(&path) else {
            return Err(CoreError::invalid(
                "files",
                format!("the archive's {} leaves its root", path.display()),
            ));
        };
        let mode = entry.header().mode().unwrap_or(0o644) & 0o7777;
        let mut content = Vec::new();
        std::io::Read::read_to_end(&mut entry, &mut content).map_err(bad)?;
        *total += content.len() as u64;
        if *total > MAX_CONTEXT {
            return Err(CoreError::ResourceExhausted(format!(
                "a build's files may hold at most {} MiB",
                MAX_CONTEXT >> 20
            )));
        }
        context.insert(format!("{prefix}/{rel}"), (content, mode));
    }
    Ok(())
}

impl E2b {
    fn uploads_dir(&self) -> Result<&Path, CoreError> {
        self.config.uploads_dir.as_deref().ok_or_else(|| {
            CoreError::FailedPrecondition(
                "this server keeps no template files (no uploads directory)".into(),
            )
        })
    }

    fn archive_path(&self, account: &AccountId, hash: &str) -> Result<PathBuf, CoreError> {
        check_hash(hash)?;
        Ok(self
            .uploads_dir()?
            .join(account.as_str())
            .join(format!("{hash}.tar")))
    }

    fn upload_token(&self, account: &AccountId, template_id: &str, hash: &str) -> String {
        self.core
            .vms()
            .account_credential(TOKEN_PURPOSE, account, &format!("{template_id}:{hash}"))
    }

    /// Whether the account has the files of `hash`, and the path and
    /// token of the URL to upload them to.
    pub async fn template_files_link(
        &self,
        account: &AccountId,
        template_id: &str,
        hash: &str,
    ) -> Result<(bool, String), CoreError> {
        self.get_template(account, template_id).await?;
        let present = tokio::fs::try_exists(self.archive_path(account, hash)?)
            .await
            .unwrap_or(false);
        let path = format!(
            "/e2b/template-uploads/{account}/{template_id}/{hash}?token={}",
            self.upload_token(account, template_id, hash)
        );
        Ok((present, path))
    }

    /// Stores an uploaded archive, when `token` signs its path.
    pub async fn store_template_files(
        &self,
        account: &AccountId,
        template_id: &str,
        hash: &str,
        token: &str,
        mut body: ByteStream,
    ) -> Result<u64, CoreError> {
        let expected = self.upload_token(account, template_id, hash);
        if !paddock_core::secrets::constant_time_eq(token.as_bytes(), expected.as_bytes()) {
            return Err(CoreError::Unauthenticated);
        }
        let target = self.archive_path(account, hash)?;
        let dir = target
            .parent()
            .ok_or_else(|| CoreError::invalid("hash", "no place for it"))?;
        tokio::fs::create_dir_all(dir)
            .await
            .map_err(|e| host_err("make the template files directory", e))?;
        let held = stored_bytes(dir).await;
        let tmp = dir.join(format!(".{hash}.{}.part", rand_suffix()));
        let written = async {
            let mut file = tokio::fs::File::create(&tmp)
                .await
                .map_err(|e| host_err("store template files", e))?;
            let mut size = 0u64;
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(|e| {
                    CoreError::invalid("body", format!("the upload broke off: {e}"))
                })?;
                size += chunk.len() as u64;
                if size > MAX_UPLOAD {
                    return Err(CoreError::ResourceExhausted(format!(
                        "an upload may be at most {} MiB",
                        MAX_UPLOAD >> 20
                    )));
                }
                if held + size > MAX_ACCOUNT_UPLOADS {
                    return Err(CoreError::ResourceExhausted(format!(
                        "the account's uploaded template files may hold at most {} GiB together",
                        MAX_ACCOUNT_UPLOADS >> 30
                    )));
                }
                file.write_all(&chunk)
                    .await
                    .map_err(|e| host_err("store template files", e))?;
            }
            file.sync_all()
                .await
                .map_err(|e| host_err("store template files", e))?;
            Ok(size)
        }
        .await;
        match written {
            Ok(size) => {
                tokio::fs::rename(&tmp, &target)
                    .await
                    .map_err(|e| host_err("store template files", e))?;
                Ok(size)
            }
            Err(e) => {
                let _ = tokio::fs::remove_file(&tmp).await;
                Err(e)
            }
        }
    }

    /// The build context of steps that copy files: each hash's archive
    /// under `<hash>/`.
    pub(crate) async fn build_context(
        &self,
        account: &AccountId,
        hashes: &[String],
    ) -> Result<BuildContext, CoreError> {
        let mut context = BuildContext::new();
        let mut total = 0u64;
        for hash in hashes {
            let path = self.archive_path(account, hash)?;
            let bytes = tokio::fs::read(&path).await.map_err(|e| {
                if e.kind() == std::io::ErrorKind::NotFound {
                    CoreError::invalid(
                        "steps",
                        format!("the files of hash {hash} were not uploaded"),
                    )
                } else {
                    host_err("read template files", e)
                }
            })?;
            read_archive(&bytes, hash, &mut context, &mut total)?;
        }
        Ok(context)
    }
}

/// What the archives in `dir` hold (a replaced one counts until it is).
async fn stored_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    if let Ok(mut entries) = tokio::fs::read_dir(dir).await {
        while let Ok(Some(e)) = entries.next_entry().await {
            if let Ok(m) = e.metadata().await {
                total += m.len();
            }
        }
    }
    total
}

/// A failure of the server's own disk: a 500, its cause logged.
fn host_err(what: &str, e: std::io::Error) -> CoreError {
    CoreError::Runtime(paddock_core::error::RuntimeError::host(what, e))
}

fn rand_suffix() -> String {
    paddock_core::ids::VmId::generate().as_str()[3..].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archives_are_read_inside_their_root() {
        let mut raw = Vec::new();
        {
            let mut b = tar::Builder::new(&mut raw);
            let mut h = tar::Header::new_gnu();
            h.set_size(2);
            h.set_mode(0o755);
            h.set_entry_type(tar::EntryType::Regular);
            b.append_data(&mut h, "app/run.sh", &b"hi"[..])
                .expect("append");
            b.finish().expect("finish");
        }
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &raw).expect("gzip");
        let gz = gz.finish().expect("gzip");
        let mut ctx = BuildContext::new();
        let mut total = 0;
        read_archive(&gz, "abc", &mut ctx, &mut total).expect("read");
        assert_eq!(ctx.get("abc/app/run.sh"), Some(&(b"hi".to_vec(), 0o755)));
        assert_eq!(entry_path(Path::new("../x")), None);
        assert_eq!(entry_path(Path::new("./a/b")), Some("a/b".into()));
        assert!(check_hash("ab12").is_ok());
        assert!(check_hash("../x").is_err());
    }
}
