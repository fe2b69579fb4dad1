//! Files in and out of a Docker sandbox through the engine's archive
//! endpoints, which speak tar: a read unpacks the one file (or lists the
//! directory) from the archive the engine sends; a write sends a
//! one-file archive into the parent directory, creating that first (with
//! an exec of `mkdir -p`) when the engine says it is missing. Parent
//! directories are not sent as archive entries: the engine would reset
//! the modes of existing ones (`/tmp`'s sticky bit) to the entries'.

use std::io::Read;

use bollard::query_parameters::{DownloadFromContainerOptions, UploadToContainerOptions};
use bollard::Docker;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use paddock_core::exec::{ByteStream, DirEntry, FileContent, FileKind, SandboxPath};
use paddock_core::RuntimeError;

use super::{engine_err, is_not_found};

/// The largest file moved through the archive endpoints: it is held in
/// memory on the way.
const MAX_FILE_BYTES: usize = 256 << 20;

pub(super) async fn read(
    docker: &Docker,
    container: &str,
    path: &SandboxPath,
) -> Result<FileContent, RuntimeError> {
    let options = DownloadFromContainerOptions {
        path: path.as_str().to_owned(),
    };
    let mut stream = docker.download_from_container(container, Some(options));
    let mut archive = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            if is_not_found(&e) {
                RuntimeError::FileNotFound(path.as_str().to_owned())
            } else {
                engine_err("read the file", e)
            }
        })?;
        archive.extend_from_slice(&chunk);
        if archive.len() > MAX_FILE_BYTES + (1 << 20) {
            return Err(RuntimeError::Invalid(format!(
                "{} is larger than {MAX_FILE_BYTES} bytes",
                path.as_str()
            )));
        }
    }
    tokio::task::spawn_blocking(move || unpack(&archive))
        .await
        .map_err(|e| RuntimeError::Agent(format!("unpack task failed: {e}")))?
}

/// The first entry of the archive: a file's bytes, or a directory's
/// listing (the entries directly under it).
fn unpack(archive: &[u8]) -> Result<FileContent, RuntimeError> {
    let bad = |e: std::io::Error| RuntimeError::Agent(format!("the engine's archive: {e}"));
    let mut tar = tar::Archive::new(archive);
    let mut entries = tar.entries().map_err(bad)?;
    let Some(first) = entries.next() else {
        return Err(RuntimeError::Agent(
            "the engine sent an empty archive".into(),
        ));
    };
    let mut first = first.map_err(bad)?;
    let header = first.header().clone();
    let mode = header.mode().unwrap_or(0o644);
    if !header.entry_type().is_dir() {
        let mut data = Vec::new();
        first.read_to_end(&mut data).map_err(bad)?;
        let size = data.len() as u64;
        let body: ByteStream = Box::pin(futures::stream::once(async move {
            Ok::<_, std::io::Error>(Bytes::from(data))
        }));
        return Ok(FileContent::File {
            size,
            mode,
            data: body,
        });
    }
    let root = first.path().map_err(bad)?.into_owned();
    let mut listing = Vec::new();
    for entry in entries {
        let entry = entry.map_err(bad)?;
        let p = entry.path().map_err(bad)?.into_owned();
        let Ok(rel) = p.strip_prefix(&root) else {
            continue;
        };
        if rel.components().count() != 1 {
            continue;
        }
        let h = entry.header();
        let kind = match h.entry_type() {
            t if t.is_dir() => FileKind::Directory,
            t if t.is_symlink() => FileKind::Symlink,
            t if t.is_file() => FileKind::File,
            _ => FileKind::Other,
        };
        listing.push(DirEntry {
            name: rel.to_string_lossy().into_owned(),
            kind,
            size: h.size().unwrap_or(0),
            mode: h.mode().unwrap_or(0),
            modified_unix: h
                .mtime()
                .ok()
                .and_then(|m| i64::try_from(m).ok())
                .unwrap_or(0),
            owner: h
                .username()
                .ok()
                .flatten()
                .map_or_else(|| h.uid().unwrap_or(0).to_string(), str::to_owned),
            group: h
                .groupname()
                .ok()
                .flatten()
                .map_or_else(|| h.gid().unwrap_or(0).to_string(), str::to_owned),
            symlink_target: h
                .link_name()
                .ok()
                .flatten()
                .map(|t| t.to_string_lossy().into_owned()),
        });
    }
    Ok(FileContent::Directory(listing))
}

pub(super) async fn write(
    docker: &Docker,
    container: &str,
    path: &SandboxPath,
    mode: Option<u32>,
    body: ByteStream,
) -> Result<u64, RuntimeError> {
    let mut data = Vec::new();
    let mut body = body;
    while let Some(chunk) = body
        .try_next()
        .await
        .map_err(|e| RuntimeError::Invalid(format!("the upload failed: {e}")))?
    {
        data.extend_from_slice(&chunk);
        if data.len() > MAX_FILE_BYTES {
            return Err(RuntimeError::Invalid(format!(
                "files moved into docker sandboxes are at most {MAX_FILE_BYTES} bytes"
            )));
        }
    }
    let size = data.len() as u64;
    let (parent, name) = path
        .as_str()
        .rsplit_once('/')
        .map(|(p, n)| (if p.is_empty() { "/" } else { p }, n.to_owned()))
        .ok_or_else(|| RuntimeError::Invalid(format!("{} names no file", path.as_str())))?;
    let archive = tokio::task::spawn_blocking(move || pack(&name, &data, mode.unwrap_or(0o644)))
        .await
        .map_err(|e| RuntimeError::Agent(format!("pack task failed: {e}")))?
        .map_err(|e| RuntimeError::Agent(format!("pack the upload: {e}")))?;
    let archive = Bytes::from(archive);
    let upload = |archive: Bytes| {
        let options = UploadToContainerOptions {
            path: parent.to_owned(),
            ..Default::default()
        };
        docker.upload_to_container(container, Some(options), bollard::body_full(archive))
    };
    match upload(archive.clone()).await {
        Ok(()) => return Ok(size),
        Err(e) if !is_not_found(&e) => return Err(engine_err("write the file", e)),
        Err(_) => {}
    }
    make_dirs(docker, container, parent).await?;
    upload(archive).await.map_err(|e| {
        if is_not_found(&e) {
            RuntimeError::SandboxGone
        } else {
            engine_err("write the file", e)
        }
    })?;
    Ok(size)
}

/// `mkdir -p dir` in the container.
async fn make_dirs(docker: &Docker, container: &str, dir: &str) -> Result<(), RuntimeError> {
    let request = paddock_core::exec::ExecRequest {
        started: None,
        user: None,
        argv: vec!["mkdir".into(), "-p".into(), dir.to_owned()],
        env: Vec::new(),
        cwd: None,
        stdin: None,
        stdin_stream: None,
        timeout: Some(std::time::Duration::from_secs(30)),
    };
    let mut events = super::exec::run(docker, container, Vec::new(), request).await?;
    let mut stderr = Vec::new();
    while let Some(event) = events.recv().await {
        match event? {
            paddock_core::exec::ExecEvent::Stderr(b) => stderr.extend_from_slice(&b),
            paddock_core::exec::ExecEvent::Exit(s) if s.exit_code() != 0 => {
                return Err(RuntimeError::Invalid(format!(
                    "could not create {dir}: {}",
                    String::from_utf8_lossy(&stderr).trim()
                )))
            }
            _ => {}
        }
    }
    Ok(())
}

/// A tar of one file, `name`, holding `data`.
fn pack(name: &str, data: &[u8], mode: u32) -> std::io::Result<Vec<u8>> {
    let mut tar = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_mode(mode);
    h.set_size(data.len() as u64);
    tar.append_data(&mut h, name, data)?;
    tar.into_inner()
}
