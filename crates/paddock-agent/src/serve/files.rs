//! Files in and out of the sandbox. Paths are resolved by PID 1 after its
//! pivot, so even `..` or a symlink to `/` stays inside the sandbox's root.
//! Uploads go to a temporary file that is renamed into place: a failed or
//! interrupted upload leaves no partial file.

use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::fs;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

use crate::proto::{
    read_frame, write_control, write_data, DirEntry, ErrorKind, Event, CHUNK, KIND_DATA,
};

pub(crate) async fn read(stream: &mut UnixStream, path: &str) -> io::Result<()> {
    let meta = match fs::metadata(path).await {
        Ok(m) => m,
        Err(e) => return write_control(stream, &Event::from_io(&e, path)).await,
    };
    if meta.is_dir() {
        let entries = match list(path).await {
            Ok(e) => e,
            Err(e) => return write_control(stream, &Event::from_io(&e, path)).await,
        };
        return write_control(stream, &Event::Listing { entries }).await;
    }
    if !meta.is_file() {
        let e = Event::error(ErrorKind::Invalid, format!("{path} is not a regular file"));
        return write_control(stream, &e).await;
    }
    let mut file = match fs::File::open(path).await {
        Ok(f) => f,
        Err(e) => return write_control(stream, &Event::from_io(&e, path)).await,
    };
    write_control(
        stream,
        &Event::File {
            size: meta.len(),
            mode: meta.mode() & 0o7777,
        },
    )
    .await?;
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = file.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        write_data(stream, KIND_DATA, &buf[..n]).await?;
    }
    write_control(stream, &Event::Done).await
}

async fn list(path: &str) -> io::Result<Vec<DirEntry>> {
    let mut dir = fs::read_dir(path).await?;
    let mut entries = Vec::new();
    while let Some(entry) = dir.next_entry().await? {
        let Ok(meta) = entry.metadata().await else {
            continue;
        };
        let ft = meta.file_type();
        let kind = if ft.is_dir() {
            "directory"
        } else if ft.is_file() {
            "file"
        } else if ft.is_symlink() {
            "symlink"
        } else {
            "other"
        };
        entries.push(DirEntry {
            name: entry.file_name().to_string_lossy().into_owned(),
            kind: kind.to_owned(),
            size: meta.len(),
            mode: meta.mode() & 0o7777,
            modified_unix: meta.mtime(),
        });
    }
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(entries)
}

static UPLOADS: AtomicU64 = AtomicU64::new(0);

pub(crate) async fn write(
    stream: &mut UnixStream,
    path: &str,
    mode: Option<u32>,
) -> io::Result<()> {
    let target = Path::new(path);
    let (Some(parent), Some(name)) = (target.parent(), target.file_name()) else {
        let e = Event::error(ErrorKind::Invalid, format!("{path} names no file"));
        return write_control(stream, &e).await;
    };
    let existing = fs::metadata(target).await.ok();
    if existing.as_ref().is_some_and(|m| m.is_dir()) {
        let e = Event::error(ErrorKind::IsADirectory, format!("{path} is a directory"));
        return write_control(stream, &e).await;
    }
    if let Err(e) = fs::create_dir_all(parent).await {
        // EEXIST from mkdir means a parent is there as something other
        // than a directory: a file, or a symlink to nothing.
        let event = match e.kind() {
            io::ErrorKind::AlreadyExists | io::ErrorKind::NotADirectory => Event::error(
                ErrorKind::NotADirectory,
                format!(
                    "{path}: a parent directory is in the way as a file or a symlink to nothing"
                ),
            ),
            _ => Event::from_io(&e, &parent.display().to_string()),
        };
        return write_control(stream, &event).await;
    }
    let tmp = parent.join(format!(
        ".{}.paddock-upload-{}",
        name.to_string_lossy(),
        UPLOADS.fetch_add(1, Ordering::Relaxed)
    ));
    let mode = mode
        .or(existing.map(|m| m.mode() & 0o7777))
        .unwrap_or(0o644);
    match receive(stream, &tmp, mode).await {
        Ok(Some(bytes)) => match fs::rename(&tmp, target).await {
            Ok(()) => write_control(stream, &Event::Written { bytes }).await,
            Err(e) => {
                let _ = fs::remove_file(&tmp).await;
                write_control(stream, &Event::from_io(&e, path)).await
            }
        },
        Ok(None) => {
            // The sender went away before the end marker.
            let _ = fs::remove_file(&tmp).await;
            Ok(())
        }
        Err(e) => {
            let _ = fs::remove_file(&tmp).await;
            write_control(stream, &Event::from_io(&e, path)).await
        }
    }
}

/// Writes data frames to `tmp` until the empty end frame; `None` when the
/// stream ended without one.
async fn receive(stream: &mut UnixStream, tmp: &Path, mode: u32) -> io::Result<Option<u64>> {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(tmp)
        .await?;
    fs::set_permissions(tmp, std::fs::Permissions::from_mode(mode)).await?;
    let mut bytes = 0u64;
    loop {
        match read_frame(stream).await {
            Ok(Some(f)) if f.kind == KIND_DATA => {
                if f.payload.is_empty() {
                    file.flush().await?;
                    return Ok(Some(bytes));
                }
                file.write_all(&f.payload).await?;
                bytes += f.payload.len() as u64;
            }
            Ok(Some(_)) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "unexpected frame in upload",
                ))
            }
            Ok(None) | Err(_) => return Ok(None),
        }
    }
}
