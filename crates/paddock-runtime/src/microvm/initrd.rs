//! The guest's initramfs: the paddock agent as `/init`, the shared
//! libraries it links (the host's, at the same paths, so its interpreter
//! path holds), and the kernel modules the guest loads. Built
//! once per agent binary and kernel and cached; each VM's boot config is a
//! second archive appended to it (the kernel unpacks concatenated
//! archives in order).

use std::collections::BTreeSet;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use paddock_agent_protocol::config::{GuestConfig, CONFIG_PATH};
use paddock_core::RuntimeError;
use sha2::{Digest, Sha256};

use super::kernel::GuestKernel;

/// Where the modules go in the initramfs.
const MODULE_DIR: &str = "/paddock/modules";

fn setup(what: impl Into<String>) -> impl FnOnce(io::Error) -> RuntimeError {
    let what = what.into();
    move |e| RuntimeError::Setup(format!("{what}: {e}"))
}

/// The cached base archive and the module paths it holds, in load order.
#[derive(Debug, Clone)]
pub struct BaseInitrd {
    pub path: PathBuf,
    pub modules: Vec<PathBuf>,
}

/// Builds (or finds) the base archive for `agent` and `kernel` in `cache`.
pub fn base(agent: &Path, kernel: &GuestKernel, cache: &Path) -> Result<BaseInitrd, RuntimeError> {
    let mut files: Vec<(String, PathBuf)> = vec![("/init".into(), agent.to_path_buf())];
    let mut modules = Vec::new();
    for m in &kernel.modules {
        let name = m
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let at = format!("{MODULE_DIR}/{name}");
        modules.push(PathBuf::from(&at));
        files.push((at, m.clone()));
    }
    for lib in shared_libraries(&[agent])? {
        files.push((lib.display().to_string(), lib));
    }
    let key = cache_key(&files)?;
    let path = cache.join(format!("initrd-{key}.cpio"));
    if !path.is_file() {
        fs::create_dir_all(cache).map_err(setup(cache.display().to_string()))?;
        let tmp = path.with_extension(format!("{}.partial", std::process::id()));
        let stripped = strip(agent, &tmp.with_extension("agent"));
        if let Some(s) = &stripped {
            files[0].1 = s.clone();
        }
        let written = write_archive(&tmp, &files);
        if let Some(s) = &stripped {
            let _ = fs::remove_file(s);
        }
        written.map_err(setup(format!("write {}", tmp.display())))?;
        fs::rename(&tmp, &path).map_err(setup(path.display().to_string()))?;
    }
    Ok(BaseInitrd { path, modules })
}

/// Writes a VM's initramfs at `out`: the base archive, then one holding
/// `config`.
pub fn for_vm(base: &BaseInitrd, config: &GuestConfig, out: &Path) -> Result<(), RuntimeError> {
    let json = serde_json::to_vec(config)
        .map_err(|e| RuntimeError::Setup(format!("encode the guest config: {e}")))?;
    let write = || -> io::Result<()> {
        fs::copy(&base.path, out)?;
        let mut file = fs::OpenOptions::new().append(true).open(out)?;
        let mut archive = Vec::new();
        let mut ino = 1;
        write_parents(&mut archive, &mut ino, CONFIG_PATH, &mut BTreeSet::new())?;
        write_entry(&mut archive, &mut ino, CONFIG_PATH, 0o100600, &json)?;
        cpio::newc::trailer(&mut archive)?;
        file.write_all(&archive)?;
        file.sync_data()
    };
    write().map_err(setup(format!("write {}", out.display())))
}

/// The signature trailer the kernel's build appends to a module.
const MODULE_SIG_MAGIC: &[u8] = b"~Module signature appended~\n";
/// `struct module_signature`: algo, hash, id type, signer and key id
/// lengths, 3 bytes of padding, then the big-endian signature length.
const MODULE_SIG_INFO: usize = 12;

/// The length of a module without its appended signature. The guest
/// kernel does not enforce signatures (it is the host's own modules, from
/// a root-owned tree, and the VM boundary is what isolates the guest), and
/// checking one costs tens of milliseconds per module under TCG.
fn unsigned_len(module: &[u8]) -> usize {
    let Some(body) = module.strip_suffix(MODULE_SIG_MAGIC) else {
        return module.len();
    };
    let Some(info_at) = body.len().checked_sub(MODULE_SIG_INFO) else {
        return module.len();
    };
    let info = &body[info_at..];
    let signer = usize::from(info[3]);
    let key_id = usize::from(info[4]);
    let sig_len = u32::from_be_bytes([info[8], info[9], info[10], info[11]]) as usize;
    info_at
        .checked_sub(sig_len + signer + key_id)
        .unwrap_or(module.len())
}

/// A copy of `binary` without symbols at `out`, when binutils' `strip` is
/// installed: the guest kernel unpacks every byte of the initramfs, which
/// under TCG costs about 10 ms per MiB.
fn strip(binary: &Path, out: &Path) -> Option<PathBuf> {
    let ok = Command::new("strip")
        .arg("--strip-all")
        .arg("-o")
        .arg(out)
        .arg(binary)
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    ok.then(|| out.to_path_buf())
}

/// The libraries `binaries` load (by `ldd`), with the dynamic linker.
fn shared_libraries(binaries: &[&Path]) -> Result<BTreeSet<PathBuf>, RuntimeError> {
    let mut libs = BTreeSet::new();
    for b in binaries {
        let out = Command::new("ldd")
            .arg(b)
            .output()
            .map_err(setup("run ldd"))?;
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            // `libc.so.6 => /lib/…/libc.so.6 (0x…)` or `/lib64/ld-linux… (0x…)`
            let path = match line.split_once("=>") {
                Some((_, right)) => right.split_whitespace().next(),
                None => line.split_whitespace().next(),
            };
            if let Some(p) = path.filter(|p| p.starts_with('/')) {
                libs.insert(PathBuf::from(p));
            }
        }
    }
    Ok(libs)
}

/// Names what goes into the archive: paths and their sizes and times.
fn cache_key(files: &[(String, PathBuf)]) -> Result<String, RuntimeError> {
    let mut h = Sha256::new();
    for (at, source) in files {
        let meta = fs::metadata(source).map_err(setup(source.display().to_string()))?;
        h.update(
            format!(
                "{at}\0{}\0{}\0{}\n",
                source.display(),
                meta.len(),
                meta.mtime()
            )
            .as_bytes(),
        );
    }
    Ok(hex::encode(&h.finalize()[..8]))
}

fn write_archive(out: &Path, files: &[(String, PathBuf)]) -> io::Result<()> {
    let mut w = io::BufWriter::new(fs::File::create(out)?);
    let mut ino = 1;
    let mut made = BTreeSet::new();
    for dir in ["/dev", "/proc", "/sys", "/newroot"] {
        write_dir(&mut w, &mut ino, dir)?;
    }
    for (at, source) in files {
        write_parents(&mut w, &mut ino, at, &mut made)?;
        // Through symlinks: the archive holds plain files.
        let mut data = fs::read(source)?;
        if at.ends_with(".ko") {
            data.truncate(unsigned_len(&data));
        }
        write_entry(&mut w, &mut ino, at, 0o100755, &data)?;
    }
    cpio::newc::trailer(&mut w)?;
    w.into_inner().map_err(|e| e.into_error())?.sync_all()
}

/// Writes each directory above `path` not yet in `made` (an appended
/// archive may repeat directories the base has: the kernel keeps them).
fn write_parents(
    w: &mut impl Write,
    ino: &mut u32,
    path: &str,
    made: &mut BTreeSet<String>,
) -> io::Result<()> {
    let parents: Vec<&Path> = Path::new(path).ancestors().skip(1).collect();
    for p in parents.into_iter().rev() {
        let p = p.display().to_string();
        if p != "/" && made.insert(p.clone()) {
            write_dir(w, ino, &p)?;
        }
    }
    Ok(())
}

fn write_dir(w: &mut impl Write, ino: &mut u32, path: &str) -> io::Result<()> {
    write_entry(w, ino, path, 0o040755, &[])
}

fn write_entry(
    w: &mut impl Write,
    ino: &mut u32,
    path: &str,
    mode: u32,
    data: &[u8],
) -> io::Result<()> {
    let size = u32::try_from(data.len()).map_err(io::Error::other)?;
    *ino += 1;
    let mut entry = cpio::NewcBuilder::new(path.trim_start_matches('/'))
        .ino(*ino)
        .mode(mode)
        .nlink(if mode & 0o040000 != 0 { 2 } else { 1 })
        .write(w, size);
    entry.write_all(data)?;
    entry.finish()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_module_loses_its_signature_and_nothing_else() {
        let mut module = b"\x7fELF module body".to_vec();
        let body_len = module.len();
        module.extend_from_slice(&[0xAB; 40]);
        module.extend_from_slice(&[0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 40]);
        module.extend_from_slice(MODULE_SIG_MAGIC);
        assert_eq!(unsigned_len(&module), body_len);
        let unsigned = b"\x7fELF no signature".to_vec();
        assert_eq!(unsigned_len(&unsigned), unsigned.len());
        // A trailer claiming more than the file holds is left alone.
        let mut lying = vec![0u8; 4];
        lying.extend_from_slice(&[0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 1, 0]);
        lying.extend_from_slice(MODULE_SIG_MAGIC);
        assert_eq!(unsigned_len(&lying), lying.len());
    }

    #[test]
    fn an_archive_holds_its_files_under_their_directories() {
        let dir = tempfile::tempdir().expect("tempdir");
        let src = dir.path().join("tool");
        fs::write(&src, b"#!/bin/true\n").expect("write");
        let out = dir.path().join("a.cpio");
        write_archive(&out, &[("/paddock/bin/tool".into(), src)]).expect("archive");
        let mut reader = io::BufReader::new(fs::File::open(&out).expect("open"));
        let mut names = Vec::new();
        loop {
            let entry = cpio::NewcReader::new(reader).expect("entry");
            if entry.entry().is_trailer() {
                break;
            }
            names.push((entry.entry().name().to_owned(), entry.entry().file_size()));
            reader = entry.finish().expect("next");
        }
        assert!(names.contains(&("paddock".into(), 0)));
        assert!(names.contains(&("paddock/bin".into(), 0)));
        assert!(names.contains(&("paddock/bin/tool".into(), 12)));
    }
}
