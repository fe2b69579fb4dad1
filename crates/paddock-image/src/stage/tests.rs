//! Staging against the real filesystem (root: owners, device nodes and
//! overlay's trusted xattrs).

use super::*;
use crate::pack::{pack, Contents};
use std::os::unix::fs::{FileTypeExt, MetadataExt};

const SHIFT: IdShift = IdShift {
    host_base: 200_000,
    count: 65_536,
};

fn chown(path: &Path, id: u32) {
    nix::unistd::fchownat(
        nix::fcntl::AT_FDCWD,
        path,
        Some(Uid::from_raw(id)),
        Some(Gid::from_raw(id)),
        nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
    )
    .expect("chown");
}

fn set_mtime(path: &Path, secs: i64) {
    let t = TimeSpec::new(secs, 123);
    nix::sys::stat::utimensat(
        nix::fcntl::AT_FDCWD,
        path,
        &t,
        &t,
        nix::sys::stat::UtimensatFlags::NoFollowSymlink,
    )
    .expect("utimensat");
}

/// An upper dir with one of everything a sandbox can leave, owned by the
/// sandbox's shifted ids.
fn upper(root: &Path) {
    let host = |id: u32| SHIFT.host_base + id;
    fs::create_dir_all(root.join("home/user/deep")).expect("mkdir");
    fs::create_dir_all(root.join("var/cache")).expect("mkdir");
    // Larger than a chunk, and not a multiple of tar's 512-byte blocks.
    let big: Vec<u8> = (0..(3 * CHUNK + 777))
        .map(|i| (i * 7 % 251) as u8)
        .collect();
    fs::write(root.join("home/user/big.bin"), &big).expect("write");
    fs::write(root.join("home/user/empty"), b"").expect("write");
    fs::write(root.join("home/user/deep/note"), b"hello").expect("write");
    fs::hard_link(
        root.join("home/user/deep/note"),
        root.join("home/user/note-link"),
    )
    .expect("link");
    std::os::unix::fs::symlink("deep/note", root.join("home/user/sym")).expect("symlink");
    fs::write(root.join("home/user/tool"), b"#!/bin/sh\n").expect("write");
    mknod(
        &root.join("home/user/gone"),
        SFlag::S_IFCHR,
        Mode::from_bits_truncate(0o600),
        makedev(0, 0),
    )
    .expect("whiteout");
    mknod(
        &root.join("home/user/pipe"),
        SFlag::S_IFIFO,
        Mode::from_bits_truncate(0o640),
        0,
    )
    .expect("fifo");
    let _ = std::os::unix::net::UnixListener::bind(root.join("home/user/sock")).expect("socket");
    sys::lsetxattr(&root.join("var/cache"), pack::OPAQUE_XATTR, b"y").expect("opaque");
    sys::lsetxattr(&root.join("home/user/deep/note"), "user.tag", b"v1").expect("xattr");
    sys::lsetxattr(&root.join("home/user"), "user.dir", b"d").expect("xattr");
    sys::lsetxattr(&root.join("home"), "trusted.overlay.impure", b"y").expect("overlay xattr");
    for rel in [
        "home/user",
        "home/user/deep",
        "home/user/big.bin",
        "home/user/deep/note",
        "home/user/sym",
        "home/user/tool",
        "home/user/gone",
    ] {
        chown(&root.join(rel), host(1000));
    }
    fs::set_permissions(
        root.join("home/user/tool"),
        fs::Permissions::from_mode(0o4755),
    )
    .expect("chmod");
    for (i, rel) in [
        "home/user/deep/note",
        "home/user/sym",
        "home/user/gone",
        "home/user/deep",
        "home/user",
        "var/cache",
    ]
    .iter()
    .enumerate()
    {
        set_mtime(&root.join(rel), 1_600_000_000 + i as i64);
    }
}

fn digest_of_tar(dir: &Path) -> (Digest, u64) {
    let mut hashing = HashingThread::start().expect("start");
    pack::write_tar(dir, &mut hashing).expect("tar");
    hashing.finish().expect("hash")
}

#[test]
fn a_staged_layer_packs_into_the_tar_it_was_hashed_as() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("upper");
    upper(&src);
    let tree = ChangedTree {
        dir: src.clone(),
        at: String::new(),
        ids: Some(SHIFT),
    };
    let staged_dir = dir.path().join("staged");
    let staged = stage_layer(std::slice::from_ref(&tree), &staged_dir).expect("stage");

    // The blob made later from the directory is the tar that was hashed,
    // and the very tar the zstd packer makes of the upper dir.
    assert_eq!(
        digest_of_tar(&staged_dir),
        (staged.digest.clone(), staged.size)
    );
    let packed = pack(Contents::Changes(&[tree]), &dir.path().join("blob")).expect("pack");
    assert_eq!(packed.diff_id, staged.digest);

    // The directory is what unpacking that tar would have made.
    let at = |rel: &str| fs::symlink_metadata(staged_dir.join(rel)).expect(rel);
    assert_eq!(
        fs::read(staged_dir.join("home/user/big.bin")).expect("big"),
        fs::read(src.join("home/user/big.bin")).expect("big")
    );
    assert_eq!(
        (at("home/user/tool").uid(), at("home/user/tool").gid()),
        (1000, 1000)
    );
    assert_eq!(at("home/user/tool").mode() & 0o7777, 0o4755);
    assert_eq!(
        at("home/user/deep/note").ino(),
        at("home/user/note-link").ino()
    );
    assert_eq!(at("home/user/deep/note").mtime(), 1_600_000_000);
    assert_eq!(at("home/user").mtime(), 1_600_000_004);
    assert_eq!(
        fs::read_link(staged_dir.join("home/user/sym")).expect("symlink"),
        Path::new("deep/note")
    );
    let gone = at("home/user/gone");
    assert!(gone.file_type().is_char_device() && gone.rdev() == 0);
    assert!(at("home/user/pipe").file_type().is_fifo());
    assert!(
        !staged_dir.join("home/user/sock").exists(),
        "sockets stay out"
    );
    assert_eq!(
        sys::lgetxattr(&staged_dir.join("var/cache"), pack::OPAQUE_XATTR).as_deref(),
        Some(&b"y"[..])
    );
    assert_eq!(
        sys::lgetxattr(&staged_dir.join("home/user/deep/note"), "user.tag").as_deref(),
        Some(&b"v1"[..])
    );
    assert_eq!(
        sys::lgetxattr(&staged_dir.join("home"), "trusted.overlay.impure"),
        None,
        "overlay's own marks on the upper dir are not the layer's"
    );
}

#[test]
fn several_trees_stage_as_the_sandbox_saw_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("upper");
    let usr = dir.path().join("usr-upper");
    fs::create_dir_all(root.join("usr/hidden")).expect("mkdir");
    fs::write(root.join("etc-file"), b"root").expect("write");
    fs::create_dir_all(root.join("var/log")).expect("mkdir");
    fs::write(root.join("zz"), b"after usr").expect("write");
    fs::create_dir_all(usr.join("lib")).expect("mkdir");
    fs::write(usr.join("lib/libx.so"), b"usr").expect("write");
    let trees = [
        ChangedTree {
            dir: root,
            at: String::new(),
            ids: None,
        },
        ChangedTree {
            dir: usr,
            at: "usr".into(),
            ids: None,
        },
    ];
    let staged_dir = dir.path().join("staged");
    let staged = stage_layer(&trees, &staged_dir).expect("stage");
    assert_eq!(digest_of_tar(&staged_dir), (staged.digest, staged.size));
    assert!(staged_dir.join("usr/lib/libx.so").is_file());
    assert!(staged_dir.join("etc-file").is_file());
    assert!(
        !staged_dir.join("usr/hidden").exists(),
        "/usr's own mount hid the root layer's usr"
    );
}

/// A sandbox's root upper dir, and a tree mounted at its `/opt/tools`
/// (deeper than the top: the two-pass path).
fn root_with_tools_at_opt(root: PathBuf, tools: PathBuf) -> [ChangedTree; 2] {
    [
        ChangedTree {
            dir: root,
            at: String::new(),
            ids: None,
        },
        ChangedTree {
            dir: tools,
            at: "opt/tools".into(),
            ids: None,
        },
    ]
}

#[test]
fn a_tree_deeper_than_the_top_is_staged_then_hashed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("upper");
    let tools = dir.path().join("tools");
    fs::create_dir_all(root.join("opt")).expect("mkdir");
    fs::write(root.join("opt/readme"), b"root").expect("write");
    fs::create_dir_all(tools.join("bin")).expect("mkdir");
    fs::write(tools.join("bin/tool"), b"tool").expect("write");
    let trees = root_with_tools_at_opt(root, tools);
    let staged_dir = dir.path().join("staged");
    let staged = stage_layer(&trees, &staged_dir).expect("stage");
    assert_eq!(digest_of_tar(&staged_dir), (staged.digest, staged.size));
    assert!(staged_dir.join("opt/tools/bin/tool").is_file());
    assert!(staged_dir.join("opt/readme").is_file());
}

#[test]
fn a_tree_is_never_staged_through_a_symlink_the_sandbox_made() {
    let dir = tempfile::tempdir().expect("tempdir");
    let outside = dir.path().join("outside");
    fs::create_dir_all(outside.join("tools")).expect("mkdir");
    fs::write(outside.join("tools/keep"), b"host file").expect("write");
    let root = dir.path().join("upper");
    fs::create_dir_all(&root).expect("mkdir");
    // The sandbox's own `/opt`, pointing out of the layer.
    std::os::unix::fs::symlink(&outside, root.join("opt")).expect("symlink");
    let tools = dir.path().join("tools");
    fs::create_dir_all(&tools).expect("mkdir");
    fs::write(tools.join("tool"), b"tool").expect("write");
    let trees = root_with_tools_at_opt(root, tools);
    let staged_dir = dir.path().join("staged");
    assert!(stage_layer(&trees, &staged_dir).is_err());
    assert_eq!(
        fs::read(outside.join("tools/keep")).expect("still there"),
        b"host file"
    );
    assert!(!outside.join("tools/tool").exists());
}

#[test]
fn the_hashing_thread_hashes_every_byte_across_chunks() {
    let data: Vec<u8> = (0..(2 * CHUNK + 5)).map(|i| i as u8).collect();
    let mut hashing = HashingThread::start().expect("start");
    for piece in data.chunks(8191) {
        hashing.write_all(piece).expect("write");
    }
    assert_eq!(
        hashing.finish().expect("finish"),
        (Digest::of(&data), data.len() as u64)
    );
}

#[test]
fn a_file_that_cannot_be_staged_is_an_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("upper");
    fs::create_dir_all(&src).expect("mkdir");
    fs::write(src.join("f"), b"x").expect("write");
    let staged_dir = dir.path().join("staged");
    fs::create_dir_all(&staged_dir).expect("taken");
    let trees = [ChangedTree {
        dir: src,
        at: String::new(),
        ids: None,
    }];
    assert!(stage_layer(&trees, &staged_dir).is_err());
}
