//! One server per data dir. `paddock serve` holds an exclusive `flock` on
//! `DATA/serve.lock` (with its pid inside) for as long as it runs; the
//! kernel drops it when the process dies, however it dies. `purge`,
//! `rotate-master-key` and a second `serve` take the same lock first, so
//! none of them can pull a live server's sandboxes, network or keys from
//! under it. The descriptor is close-on-exec: no sandbox inherits it.

use std::fs;
use std::io::Write;
use std::path::Path;

use anyhow::{bail, Context};
use nix::fcntl::{Flock, FlockArg};

/// The held lock; released when dropped (or when the process ends).
pub struct DataDirLock {
    _lock: Flock<fs::File>,
}

/// Locks `data_dir` (made if missing) for `what`, or says which process
/// holds it.
pub fn lock(data_dir: &Path, what: &str) -> anyhow::Result<DataDirLock> {
    fs::create_dir_all(data_dir).with_context(|| format!("create {}", data_dir.display()))?;
    let path = data_dir.join("serve.lock");
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&path)
        .with_context(|| format!("open {}", path.display()))?;
    let mut lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(l) => l,
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => {
            let holder = fs::read_to_string(&path).unwrap_or_default();
            let holder = holder.trim();
            let who = if holder.is_empty() {
                "another paddock process".to_owned()
            } else {
                format!("paddock (pid {holder})")
            };
            bail!(
                "the data dir {} is in use by {who}; stop it before {what}",
                data_dir.display()
            );
        }
        Err((_, e)) => return Err(e).with_context(|| format!("lock {}", path.display())),
    };
    lock.set_len(0).context("clear the lock file")?;
    write!(lock, "{}", std::process::id()).context("write the lock file")?;
    Ok(DataDirLock { _lock: lock })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_with_the_first_ones_pid() {
        let dir = tempfile::tempdir().expect("tempdir");
        let held = lock(dir.path(), "serving").expect("first lock");
        // flock locks belong to open file descriptions: a second open in
        // this process conflicts as another process's would.
        let err = lock(dir.path(), "purging").err().expect("refused");
        let text = err.to_string();
        assert!(text.contains("in use by paddock (pid "), "{text}");
        assert!(text.contains(&std::process::id().to_string()), "{text}");
        assert!(text.contains("before purging"), "{text}");
        drop(held);
        lock(dir.path(), "purging").expect("free again");
    }
}
