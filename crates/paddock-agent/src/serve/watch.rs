//! Watching a directory with inotify: each change under it goes to the
//! caller as a `Changed` event, named relative to the watched directory,
//! until the caller closes the connection. With `recursive`, every
//! subdirectory is watched too, including those made while it runs.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::io;
use std::path::{Path, PathBuf};

use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, WatchDescriptor};
use tokio::io::unix::AsyncFd;
use tokio::io::AsyncReadExt;
use tokio::net::UnixStream;

use crate::proto::{write_control, ErrorKind, Event};

/// The most directories one recursive watch holds (each an inotify watch,
/// which the kernel counts per user).
const MAX_WATCHED_DIRS: usize = 8192;

fn mask() -> AddWatchFlags {
    AddWatchFlags::IN_CREATE
        | AddWatchFlags::IN_MODIFY
        | AddWatchFlags::IN_DELETE
        | AddWatchFlags::IN_MOVED_FROM
        | AddWatchFlags::IN_MOVED_TO
        | AddWatchFlags::IN_ATTRIB
        | AddWatchFlags::IN_DONT_FOLLOW
}

/// The change an inotify mask reports, in envd's words (as Go's fsnotify
/// names them).
fn change_of(mask: AddWatchFlags) -> Option<&'static str> {
    if mask.intersects(AddWatchFlags::IN_CREATE | AddWatchFlags::IN_MOVED_TO) {
        Some("create")
    } else if mask.contains(AddWatchFlags::IN_MODIFY) {
        Some("write")
    } else if mask.contains(AddWatchFlags::IN_DELETE) {
        Some("remove")
    } else if mask.contains(AddWatchFlags::IN_MOVED_FROM) {
        Some("rename")
    } else if mask.contains(AddWatchFlags::IN_ATTRIB) {
        Some("chmod")
    } else {
        None
    }
}

struct Watcher {
    inotify: Inotify,
    /// The inotify descriptor (a duplicate) registered with the reactor,
    /// for readiness; events are read through `inotify`.
    ready: AsyncFd<std::os::fd::OwnedFd>,
    /// Each watch's directory, relative to the watched root.
    dirs: HashMap<WatchDescriptor, PathBuf>,
    root: PathBuf,
    recursive: bool,
}

impl Watcher {
    fn add(&mut self, relative: PathBuf) -> io::Result<()> {
        if self.dirs.len() >= MAX_WATCHED_DIRS {
            return Ok(());
        }
        let wd = self
            .inotify
            .add_watch(&self.root.join(&relative), mask())
            .map_err(io::Error::from)?;
        self.dirs.insert(wd, relative.clone());
        if self.recursive {
            if let Ok(entries) = std::fs::read_dir(self.root.join(&relative)) {
                for e in entries.flatten() {
                    if e.file_type().is_ok_and(|t| t.is_dir()) {
                        // A directory that went meanwhile is no error.
                        let _ = self.add(relative.join(e.file_name()));
                    }
                }
            }
        }
        Ok(())
    }
}

pub(crate) async fn run(mut stream: UnixStream, path: &str, recursive: bool) -> io::Result<()> {
    let root = Path::new(path);
    match std::fs::metadata(root) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            let e = Event::error(
                ErrorKind::NotADirectory,
                format!("{path} is not a directory"),
            );
            return write_control(&mut stream, &e).await;
        }
        Err(e) => return write_control(&mut stream, &Event::from_io(&e, path)).await,
    }
    let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)?;
    let ready = crate::sys::async_fd(std::os::fd::AsFd::as_fd(&inotify).try_clone_to_owned()?)?;
    let mut watcher = Watcher {
        inotify,
        ready,
        dirs: HashMap::new(),
        root: root.to_path_buf(),
        recursive,
    };
    if let Err(e) = watcher.add(PathBuf::new()) {
        return write_control(&mut stream, &Event::from_io(&e, path)).await;
    }
    write_control(&mut stream, &Event::Ok).await?;
    let mut probe = [0u8; 1];
    loop {
        tokio::select! {
            // The caller sends nothing more: a read returning means it
            // went away.
            _ = stream.read(&mut probe) => return Ok(()),
            ready = watcher.ready.readable() => {
                let mut guard = ready?;
                let events = match watcher.inotify.read_events() {
                    Ok(events) => events,
                    Err(nix::errno::Errno::EAGAIN) => {
                        guard.clear_ready();
                        continue;
                    }
                    Err(e) => return Err(e.into()),
                };
                drop(guard);
                for ev in events {
                    let Some(dir) = watcher.dirs.get(&ev.wd).cloned() else {
                        continue;
                    };
                    let Some(name) = ev.name.as_deref() else {
                        continue;
                    };
                    // An upload's temporary file is the agent's own: the
                    // caller sees the file appear when it is renamed in.
                    if name.to_string_lossy().contains(super::files::UPLOAD_MARK) {
                        continue;
                    }
                    let relative = dir.join(name);
                    if recursive
                        && ev.mask.contains(AddWatchFlags::IN_ISDIR)
                        && ev.mask.intersects(AddWatchFlags::IN_CREATE | AddWatchFlags::IN_MOVED_TO)
                    {
                        let _ = watcher.add(relative.clone());
                    }
                    let Some(change) = change_of(ev.mask) else {
                        continue;
                    };
                    let event = Event::Changed {
                        name: display(&relative),
                        change: change.to_owned(),
                    };
                    write_control(&mut stream, &event).await?;
                }
            }
        }
    }
}

fn display(p: &Path) -> String {
    p.as_os_str().to_str().map_or_else(
        || OsStr::to_string_lossy(p.as_os_str()).into_owned(),
        str::to_owned,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_read_as_fsnotify_names_them() {
        assert_eq!(change_of(AddWatchFlags::IN_CREATE), Some("create"));
        assert_eq!(change_of(AddWatchFlags::IN_MOVED_TO), Some("create"));
        assert_eq!(change_of(AddWatchFlags::IN_MODIFY), Some("write"));
        assert_eq!(change_of(AddWatchFlags::IN_DELETE), Some("remove"));
        assert_eq!(change_of(AddWatchFlags::IN_MOVED_FROM), Some("rename"));
        assert_eq!(change_of(AddWatchFlags::IN_ATTRIB), Some("chmod"));
        assert_eq!(change_of(AddWatchFlags::IN_IGNORED), None);
    }
}
