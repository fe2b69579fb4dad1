use std::os::unix::fs::{FileTypeExt, MetadataExt};

use super::*;

/// Builds tar layers, including ones `tar::Builder` refuses to write.
struct Layer(tar::Builder<Vec<u8>>);

impl Layer {
    fn new() -> Self {
        Self(tar::Builder::new(Vec::new()))
    }

    fn entry(
        mut self,
        path: &str,
        kind: tar::EntryType,
        mode: u32,
        data: &[u8],
        link: Option<&str>,
    ) -> Self {
        let mut h = tar::Header::new_gnu();
        // Raw name bytes: the builder's checked setters refuse `..`.
        let name = &mut h.as_gnu_mut().expect("gnu header").name;
        name[..path.len()].copy_from_slice(path.as_bytes());
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_uid(1000);
        h.set_gid(1000);
        h.set_mtime(1_700_000_000);
        h.set_size(data.len() as u64);
        if let Some(l) = link {
            let ln = &mut h.as_gnu_mut().expect("gnu header").linkname;
            ln[..l.len()].copy_from_slice(l.as_bytes());
        }
        h.set_cksum();
        self.0.append(&h, data).expect("append");
        self
    }

    fn file(self, path: &str, data: &[u8]) -> Self {
        self.entry(path, tar::EntryType::Regular, 0o644, data, None)
    }

    fn dir(self, path: &str) -> Self {
        self.entry(path, tar::EntryType::Directory, 0o755, b"", None)
    }

    fn bytes(self) -> Vec<u8> {
        self.0.into_inner().expect("tar")
    }
}

fn unpack(bytes: &[u8]) -> (tempfile::TempDir, Result<PathBuf, ImageError>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let blob = dir.path().join("blob");
    fs::write(&blob, bytes).expect("write blob");
    let dest = dir.path().join("layer");
    let r = unpack_layer(&blob, &Digest::of(bytes), &dest).map(|()| dest);
    (dir, r)
}

fn sample() -> Vec<u8> {
    Layer::new()
        .dir("etc/")
        .file("etc/hello", b"hi")
        .entry(
            "bin/tool",
            tar::EntryType::Regular,
            0o4755,
            b"#!/bin/sh\n",
            None,
        )
        .entry(
            "etc/link",
            tar::EntryType::Symlink,
            0o777,
            b"",
            Some("/etc/hello"),
        )
        .entry(
            "etc/hard",
            tar::EntryType::Link,
            0o644,
            b"",
            Some("etc/hello"),
        )
        .entry("run/fifo", tar::EntryType::Fifo, 0o600, b"", None)
        .bytes()
}

#[test]
fn unpacks_files_links_and_metadata() {
    let (_d, r) = unpack(&sample());
    let root = r.expect("unpacks");
    assert_eq!(
        fs::read_to_string(root.join("etc/hello")).expect("file"),
        "hi"
    );
    let tool = fs::metadata(root.join("bin/tool")).expect("tool");
    assert_eq!(tool.mode() & 0o7777, 0o4755, "setuid kept after chown");
    assert_eq!((tool.uid(), tool.gid()), (1000, 1000));
    assert_eq!(tool.mtime(), 1_700_000_000);
    assert_eq!(
        fs::read_link(root.join("etc/link")).expect("link"),
        Path::new("/etc/hello")
    );
    assert_eq!(
        fs::metadata(root.join("etc/hard")).expect("hard").ino(),
        fs::metadata(root.join("etc/hello")).expect("f").ino()
    );
    assert!(fs::symlink_metadata(root.join("run/fifo"))
        .expect("fifo")
        .file_type()
        .is_fifo());
}

#[test]
fn whiteouts_and_opaque_dirs_become_overlay_markers() {
    let bytes = Layer::new()
        .dir("data/")
        .file("data/.wh..wh..opq", b"")
        .file("etc/.wh.passwd", b"")
        .bytes();
    let (_d, r) = unpack(&bytes);
    let root = r.expect("unpacks");
    let wh = fs::symlink_metadata(root.join("etc/passwd")).expect("whiteout");
    assert!(wh.file_type().is_char_device());
    assert_eq!(wh.rdev(), 0);
    let mut buf = [0u8; 8];
    let p = std::ffi::CString::new(root.join("data").to_string_lossy().as_bytes()).expect("path");
    let name = c"trusted.overlay.opaque";
    #[allow(unsafe_code)]
    // SAFETY: valid NUL-terminated strings and a live buffer.
    let n = unsafe {
        libc::lgetxattr(
            p.as_ptr(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    assert_eq!(&buf[..n.max(0) as usize], b"y");
    assert!(!root.join("data/.wh..wh..opq").exists());
}

#[test]
fn gzip_and_zstd_layers_unpack_alike() {
    let plain = sample();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, &plain).expect("gzip");
    let gz = gz.finish().expect("gzip");
    let zst = zstd::encode_all(&plain[..], 3).expect("zstd");
    for bytes in [gz, zst] {
        let (_d, r) = unpack(&bytes);
        let root = r.expect("unpacks");
        assert_eq!(
            fs::read_to_string(root.join("etc/hello")).expect("file"),
            "hi"
        );
    }
}

#[test]
fn entries_escaping_the_root_are_refused_and_nothing_remains() {
    let cases = [
        Layer::new().file("../evil", b"x").bytes(),
        Layer::new().file("a/../../evil", b"x").bytes(),
        Layer::new()
            .entry("link", tar::EntryType::Symlink, 0o777, b"", Some("/tmp"))
            .file("link/evil", b"x")
            .bytes(),
        Layer::new()
            .entry(
                "hard",
                tar::EntryType::Link,
                0o644,
                b"",
                Some("../../etc/passwd"),
            )
            .bytes(),
        Layer::new()
            .entry(
                "hard",
                tar::EntryType::Link,
                0o644,
                b"",
                Some("/etc/passwd"),
            )
            .bytes(),
        Layer::new().file("dir/.wh...", b"").bytes(),
    ];
    for bytes in cases {
        let (d, r) = unpack(&bytes);
        assert!(matches!(r, Err(ImageError::UnsafeEntry { .. })), "{r:?}");
        assert!(!d.path().join("layer").exists());
        let leftovers = fs::read_dir(d.path()).expect("dir").count();
        assert_eq!(leftovers, 1, "only the blob remains");
    }
    assert!(!Path::new("/tmp/evil").exists());
}

#[test]
fn a_corrupted_blob_is_not_unpacked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let blob = dir.path().join("blob");
    let bytes = sample();
    fs::write(&blob, &bytes[..bytes.len() / 2]).expect("truncated");
    let err =
        unpack_layer(&blob, &Digest::of(&bytes), &dir.path().join("layer")).expect_err("refused");
    assert!(matches!(err, ImageError::DigestMismatch { .. }));
    assert!(!dir.path().join("layer").exists());
}

#[test]
fn device_nodes_and_xattrs_are_applied() {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Char);
    h.set_mode(0o666);
    h.set_size(0);
    h.set_device_major(1).expect("major");
    h.set_device_minor(3).expect("minor");
    b.append_data(&mut h, "dev/null", std::io::empty())
        .expect("dev");
    b.append_pax_extensions([
        ("SCHILY.xattr.user.origin", &b"paddock"[..]),
        ("SCHILY.xattr.trusted.overlay.opaque", &b"y"[..]),
    ])
    .expect("pax");
    let mut f = tar::Header::new_gnu();
    f.set_entry_type(tar::EntryType::Regular);
    f.set_mode(0o644);
    f.set_size(2);
    b.append_data(&mut f, "tagged", &b"hi"[..]).expect("file");
    let (_d, r) = unpack(&b.into_inner().expect("tar"));
    let root = r.expect("unpacks");
    let dev = fs::symlink_metadata(root.join("dev/null")).expect("dev");
    assert!(dev.file_type().is_char_device());
    assert_eq!(dev.rdev(), libc::makedev(1, 3));
    let get = |name: &str| crate::sys::lgetxattr(&root.join("tagged"), name);
    assert_eq!(get("user.origin").as_deref(), Some(&b"paddock"[..]));
    assert_eq!(
        get("trusted.overlay.opaque"),
        None,
        "a layer may not set overlayfs's attributes"
    );
}
