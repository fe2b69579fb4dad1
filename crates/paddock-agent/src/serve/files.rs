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
    let names = Names::load();
    let mut dir = fs::read_dir(path).await?;
    let mut entries = Vec::new();
    while let Some(entry) = dir.next_entry().await? {
        // `DirEntry::metadata` does not follow a symlink: its own entry.
        let Ok(meta) = entry.metadata().await else {
            continue;
        };
        let name = entry.file_name().to_string_lossy().into_owned();
        entries.push(describe(&names, name, &entry.path(), &meta).await);
    }
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(entries)
}

/// The sandbox's user and group names by id, from its own account files.
struct Names {
    users: Vec<(String, u32, u32)>,
    groups: Vec<(String, u32, u32)>,
}

impl Names {
    fn load() -> Self {
        Self {
            users: super::user::entries("/etc/passwd"),
            groups: super::user::entries("/etc/group"),
        }
    }

    fn name(table: &[(String, u32, u32)], id: u32) -> String {
        table
            .iter()
            .find(|(_, i, _)| *i == id)
            .map_or_else(|| id.to_string(), |(n, _, _)| n.clone())
    }
}

async fn describe(names: &Names, name: String, path: &Path, meta: &std::fs::Metadata) -> DirEntry {
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
    let symlink_target = if ft.is_symlink() {
        fs::read_link(path)
            .await
            .ok()
            .map(|t| t.to_string_lossy().into_owned())
    } else {
        None
    };
    DirEntry {
        name,
        kind: kind.to_owned(),
        size: meta.len(),
        mode: meta.mode() & 0o7777,
        modified_unix: meta.mtime(),
        owner: Names::name(&names.users, meta.uid()),
        group: Names::name(&names.groups, meta.gid()),
        symlink_target,
    }
}

/// `path`'s own entry (a final symlink not followed), named by its path.
async fn entry_of(path: &str) -> Event {
    match fs::symlink_metadata(path).await {
        Ok(meta) => Event::Entry(Box::new(
            describe(&Names::load(), path.to_owned(), Path::new(path), &meta).await,
        )),
        Err(e) => Event::from_io(&e, path),
    }
}

pub(crate) async fn stat(stream: &mut UnixStream, path: &str) -> io::Result<()> {
    write_control(stream, &entry_of(path).await).await
}

pub(crate) async fn make_dir(stream: &mut UnixStream, path: &str) -> io::Result<()> {
    let event = match fs::symlink_metadata(path).await {
        Ok(m) if m.is_dir() => Event::error(ErrorKind::Exists, format!("{path} exists")),
        Ok(_) => Event::error(
            ErrorKind::Exists,
            format!("{path} exists and is not a directory"),
        ),
        Err(_) => match fs::create_dir_all(path).await {
            Ok(()) => entry_of(path).await,
            Err(e) => Event::from_io(&e, path),
        },
    };
    write_control(stream, &event).await
}

pub(crate) async fn rename(stream: &mut UnixStream, from: &str, to: &str) -> io::Result<()> {
    let event = match fs::symlink_metadata(from).await {
        Err(e) => Event::from_io(&e, from),
        Ok(_) => {
            let parent = Path::new(to).parent().filter(|p| !p.as_os_str().is_empty());
            let made = match parent {
                Some(p) => fs::create_dir_all(p).await,
                None => Ok(()),
            };
            match made.and(fs::rename(from, to).await) {
                Ok(()) => entry_of(to).await,
                Err(e) => Event::from_io(&e, to),
            }
        }
    };
    write_control(stream, &event).await
}

pub(crate) async fn remove(stream: &mut UnixStream, path: &str) -> io::Result<()> {
    let event = match fs::symlink_metadata(path).await {
        Err(e) => Event::from_io(&e, path),
        Ok(m) if m.is_dir() => match fs::remove_dir_all(path).await {
            Ok(()) => Event::Ok,
            Err(e) => Event::from_io(&e, path),
        },
        Ok(_) => match fs::remove_file(path).await {
            Ok(()) => Event::Ok,
            Err(e) => Event::from_io(&e, path),
        },
    };
    write_control(stream, &event).await
}

static UPLOADS: AtomicU64 = AtomicU64::new(0);
/// In the name of every upload's temporary file.
pub(crate) const UPLOAD_MARK: &str = ".paddock-upload-";

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
        ".{}{UPLOAD_MARK}{}",
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
