//! envd's filesystem service and file routes over the core's agent
//! calls: paths as envd resolves them (relative to the user's home),
//! entries as it describes them, listings to a depth.

use paddock_core::error::CoreError;
use paddock_core::exec::{ByteStream, DirEntry, FileContent, FileKind, PathOp, SandboxPath};

use crate::{E2b, EnvdTarget};

/// The home a relative path starts from when the SDK names no user:
/// the sandbox's default user is the image's (root in paddock's default
/// image), where E2B's templates have `user`.
pub const DEFAULT_HOME: &str = "/root";
/// The most entries one listing returns, whatever its depth.
pub const MAX_LISTED: usize = 10_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    File,
    Directory,
    Symlink,
    Other,
}

/// A path as envd describes it.
#[derive(Debug, Clone)]
pub struct Entry {
    pub name: String,
    pub kind: EntryKind,
    pub path: String,
    pub size: u64,
    pub mode: u32,
    pub owner: String,
    pub group: String,
    pub modified_unix: i64,
    pub symlink_target: Option<String>,
}

impl Entry {
    fn from_dir_entry(e: DirEntry, path: String) -> Self {
        let kind = match e.kind {
            FileKind::File => EntryKind::File,
            FileKind::Directory => EntryKind::Directory,
            FileKind::Symlink => EntryKind::Symlink,
            FileKind::Other => EntryKind::Other,
        };
        let name = path.rsplit('/').next().unwrap_or_default().to_owned();
        Self {
            name: if name.is_empty() {
                "/".to_owned()
            } else {
                name
            },
            kind,
            path,
            size: e.size,
            mode: e.mode,
            owner: e.owner,
            group: e.group,
            modified_unix: e.modified_unix,
            symlink_target: e.symlink_target,
        }
    }

    /// `ls -l`'s first column: `drwxr-xr-x`.
    pub fn permissions(&self) -> String {
        let kind = match self.kind {
            EntryKind::Directory => 'd',
            EntryKind::Symlink => 'l',
            EntryKind::File | EntryKind::Other => '-',
        };
        let mut s = String::with_capacity(10);
        s.push(kind);
        for shift in [6, 3, 0] {
            let bits = (self.mode >> shift) & 7;
            s.push(if bits & 4 != 0 { 'r' } else { '-' });
            s.push(if bits & 2 != 0 { 'w' } else { '-' });
            s.push(if bits & 1 != 0 { 'x' } else { '-' });
        }
        s
    }
}

/// `raw` as an absolute sandbox path: a relative one starts at the
/// user's home (`/root` for root or no user, `/home/NAME` otherwise).
pub fn resolve(raw: &str, user: Option<&str>, field: &str) -> Result<SandboxPath, CoreError> {
    let home = match user {
        None | Some("") | Some("root") => DEFAULT_HOME.to_owned(),
        Some(name) => format!("/home/{name}"),
    };
    let raw = raw.trim();
    if raw.is_empty() {
        return Err(CoreError::invalid(field, "must not be empty"));
    }
    let expanded = if raw == "~" {
        home.clone()
    } else if let Some(rest) = raw.strip_prefix("~/") {
        format!("{home}/{rest}")
    } else {
        raw.to_owned()
    };
    SandboxPath::parse_relative_to(&expanded, &home)
        .map_err(|e| CoreError::invalid(field, e.to_string()))
}

impl E2b {
    pub async fn stat(&self, target: &EnvdTarget, path: &SandboxPath) -> Result<Entry, CoreError> {
        let entry = self
            .core
            .vms()
            .path_op(&target.account, &target.vm, PathOp::Stat(path.clone()))
            .await?
            .ok_or_else(|| CoreError::not_found("path", path.as_str()))?;
        Ok(Entry::from_dir_entry(entry, path.as_str().to_owned()))
    }

    /// A directory's entries, and with `depth` > 1 its subdirectories'
    /// to that depth (0 counts as 1), in path order.
    pub async fn list_dir(
        &self,
        target: &EnvdTarget,
        path: &SandboxPath,
        depth: u32,
    ) -> Result<Vec<Entry>, CoreError> {
        let depth = depth.max(1);
        let mut out = Vec::new();
        let mut pending = vec![(path.as_str().to_owned(), 1u32)];
        while let Some((dir, level)) = pending.pop() {
            let dir_path = SandboxPath::parse(&dir).map_err(|e| CoreError::invalid("path", e.0))?;
            let listing = match self
                .core
                .vms()
                .read_file(&target.account, &target.vm, &dir_path)
                .await?
            {
                FileContent::Directory(entries) => entries,
                FileContent::File { .. } => {
                    if level == 1 {
                        return Err(CoreError::invalid(
                            "path",
                            format!("{dir} is not a directory"),
                        ));
                    }
                    continue;
                }
            };
            for e in listing {
                let child = if dir == "/" {
                    format!("/{}", e.name)
                } else {
                    format!("{dir}/{}", e.name)
                };
                if e.kind == FileKind::Directory && level < depth {
                    pending.push((child.clone(), level + 1));
                }
                out.push(Entry::from_dir_entry(e, child));
                if out.len() > MAX_LISTED {
                    return Err(CoreError::ResourceExhausted(format!(
                        "the listing has more than {MAX_LISTED} entries; ask for less depth"
                    )));
                }
            }
        }
        out.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(out)
    }

    /// Creates a directory and its parents; `Conflict` when it exists.
    pub async fn make_dir(
        &self,
        target: &EnvdTarget,
        path: &SandboxPath,
    ) -> Result<Entry, CoreError> {
        let entry = self
            .core
            .vms()
            .path_op(&target.account, &target.vm, PathOp::MakeDir(path.clone()))
            .await?
            .ok_or_else(|| CoreError::not_found("path", path.as_str()))?;
        Ok(Entry::from_dir_entry(entry, path.as_str().to_owned()))
    }

    pub async fn rename(
        &self,
        target: &EnvdTarget,
        from: &SandboxPath,
        to: &SandboxPath,
    ) -> Result<Entry, CoreError> {
        let op = PathOp::Rename {
            from: from.clone(),
            to: to.clone(),
        };
        let entry = self
            .core
            .vms()
            .path_op(&target.account, &target.vm, op)
            .await?
            .ok_or_else(|| CoreError::not_found("path", to.as_str()))?;
        Ok(Entry::from_dir_entry(entry, to.as_str().to_owned()))
    }

    pub async fn remove(&self, target: &EnvdTarget, path: &SandboxPath) -> Result<(), CoreError> {
        self.core
            .vms()
            .path_op(&target.account, &target.vm, PathOp::Remove(path.clone()))
            .await?;
        Ok(())
    }

    pub async fn read_file(
        &self,
        target: &EnvdTarget,
        path: &SandboxPath,
    ) -> Result<FileContent, CoreError> {
        self.core
            .vms()
            .read_file(&target.account, &target.vm, path)
            .await
    }

    /// Writes a file (its parents made), and describes it.
    pub async fn write_file(
        &self,
        target: &EnvdTarget,
        path: &SandboxPath,
        body: ByteStream,
    ) -> Result<Entry, CoreError> {
        self.core
            .vms()
            .write_file(&target.account, &target.vm, path, None, body)
            .await?;
        self.stat(target, path).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_start_at_home() {
        let p = |raw, user| {
            resolve(raw, user, "path")
                .map(|p| p.as_str().to_owned())
                .ok()
        };
        assert_eq!(p("a.txt", None).as_deref(), Some("/root/a.txt"));
        assert_eq!(
            p("a.txt", Some("user")).as_deref(),
            Some("/home/user/a.txt")
        );
        assert_eq!(p("~/b", None).as_deref(), Some("/root/b"));
        assert_eq!(p("/etc/hosts", Some("user")).as_deref(), Some("/etc/hosts"));
        assert!(p("", None).is_none());
    }

    #[test]
    fn permissions_read_as_ls_writes_them() {
        let e = Entry {
            name: "x".into(),
            kind: EntryKind::Directory,
            path: "/x".into(),
            size: 0,
            mode: 0o755,
            owner: String::new(),
            group: String::new(),
            modified_unix: 0,
            symlink_target: None,
        };
        assert_eq!(e.permissions(), "drwxr-xr-x");
    }
}
