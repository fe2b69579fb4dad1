//! A real OCI registry (Debian's `docker-registry`) on a free loopback
//! port, and images the tests build themselves and push to it.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use oci_client::client::{Config, ImageLayer};
use oci_client::manifest::{ImageIndexEntry, OciImageIndex, OciImageManifest, Platform};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use sha2::{Digest, Sha256};

pub struct Registry {
    pub dir: tempfile::TempDir,
    pub host: String,
    child: Child,
}

impl Registry {
    pub fn start() -> Self {
        Self::start_with_auth(None)
    }

    /// A registry that takes only bearer tokens from `token`'s service.
    pub fn start_with_tokens(token: &super::token::TokenService) -> Self {
        Self::start_inner(None, Some(token))
    }

    /// A registry that requires `user:password` (htpasswd, basic auth).
    pub fn start_with_auth(credentials: Option<(&str, &str)>) -> Self {
        Self::start_inner(credentials, None)
    }

    fn start_inner(
        credentials: Option<(&str, &str)>,
        token: Option<&super::token::TokenService>,
    ) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let auth = match (credentials, token) {
            (_, Some(t)) => {
                let bundle = dir.path().join("token-ca.pem");
                std::fs::write(&bundle, &t.cert_pem).expect("cert bundle");
                format!(
                    "auth:\n  token:\n    realm: {}\n    service: paddock-registry\n    issuer: paddock-test\n    rootcertbundle: {}\n",
                    t.realm,
                    bundle.display()
                )
            }
            (None, None) => String::new(),
            (Some((user, password)), None) => {
                let hash = bcrypt::hash(password, 4).expect("bcrypt");
                let file = dir.path().join("htpasswd");
                std::fs::write(&file, format!("{user}:{hash}\n")).expect("htpasswd");
                format!(
                    "auth:\n  htpasswd:\n    realm: paddock-test\n    path: {}\n",
                    file.display()
                )
            }
        };
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("port")
            .port();
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: false\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n{auth}",
                dir.path().join("data").display()
            ),
        )
        .expect("registry config");
        let log = std::fs::File::create(dir.path().join("registry.log")).expect("registry log");
        // The access log (one line per request) goes to stdout.
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log)
            .spawn()
            .expect("docker-registry is installed (scripts/deps.sh)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "registry did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Self {
            dir,
            host: format!("127.0.0.1:{port}"),
            child,
        }
    }

    /// The paddock config that lets a server pull from this registry.
    pub fn paddock_config(&self) -> String {
        format!("[registries.\"{}\"]\ninsecure = true\n", self.host)
    }

    pub fn reference(&self, repo_tag: &str) -> String {
        format!("{}/{repo_tag}", self.host)
    }

    /// How many GET requests for `digest`'s blob the registry served.
    pub fn blob_downloads(&self, digest: &str) -> usize {
        std::fs::read_to_string(self.dir.path().join("registry.log"))
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("\"GET /v2/") && l.contains(&format!("/blobs/{digest} ")))
            .count()
    }

    /// Where the registry keeps a blob's bytes (to tamper with them).
    pub fn blob_file(&self, digest: &str) -> PathBuf {
        let hex = digest.trim_start_matches("sha256:");
        self.dir
            .path()
            .join("data/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A tar layer under construction.
pub struct Tar(tar::Builder<Vec<u8>>);

impl Tar {
    pub fn new() -> Self {
        Self(tar::Builder::new(Vec::new()))
    }

    fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(size);
        h.set_mtime(1_700_000_000);
        h.set_uid(0);
        h.set_gid(0);
        h
    }

    pub fn dir(mut self, path: &str) -> Self {
        let mut h = Self::header(tar::EntryType::Directory, 0o755, 0);
        self.0.append_data(&mut h, path, &[][..]).expect("dir");
        self
    }

    pub fn file(mut self, path: &str, mode: u32, data: &[u8]) -> Self {
        let mut h = Self::header(tar::EntryType::Regular, mode, data.len() as u64);
        self.0.append_data(&mut h, path, data).expect("file");
        self
    }

    pub fn symlink(mut self, path: &str, target: &str) -> Self {
        let mut h = Self::header(tar::EntryType::Symlink, 0o777, 0);
        self.0.append_link(&mut h, path, target).expect("symlink");
        self
    }

    pub fn hardlink(mut self, path: &str, target: &str) -> Self {
        let mut h = Self::header(tar::EntryType::Link, 0o644, 0);
        self.0.append_link(&mut h, path, target).expect("hardlink");
        self
    }

    pub fn bytes(self) -> Vec<u8> {
        self.0.into_inner().expect("tar")
    }
}

/// A userland: static busybox and the applets the tests use, an
/// /etc/passwd with root and `app` (1000).
pub fn busybox_base() -> Tar {
    let busybox =
        std::fs::read("/bin/busybox").expect("busybox-static is installed (scripts/deps.sh)");
    let mut t = Tar::new()
        .dir("bin/")
        .dir("etc/")
        .dir("root/")
        .dir("tmp/")
        .dir("home/")
        .dir("home/app/")
        .file("bin/busybox", 0o755, &busybox)
        .file(
            "etc/passwd",
            0o644,
            b"root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n",
        )
        .file("etc/group", 0o644, b"root:x:0:\napp:x:1000:\n");
    for applet in [
        "sh",
        "ls",
        "cat",
        "echo",
        "id",
        "pwd",
        "sleep",
        "sha256sum",
        "stat",
        "readlink",
        "true",
    ] {
        t = t.symlink(&format!("bin/{applet}"), "busybox");
    }
    t
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut e, data).expect("gzip");
    e.finish().expect("gzip")
}

pub fn zstd(data: &[u8]) -> Vec<u8> {
    zstd::encode_all(data, 3).expect("zstd")
}

pub const GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
pub const PLAIN: &str = "application/vnd.oci.image.layer.v1.tar";

pub fn config_json(env: &[&str], workdir: &str, user: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {"Env": env, "WorkingDir": workdir, "User": user, "Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": []},
    }))
    .expect("json")
}

fn client() -> Client {
    super::install_crypto();
    Client::new(oci_client::client::ClientConfig {
        protocol: oci_client::client::ClientProtocol::Http,
        ..Default::default()
    })
}

/// Pushes an image; returns its manifest's digest and size.
pub async fn push(reference: &str, layers: Vec<(Vec<u8>, &str)>, config: Vec<u8>) -> (String, i64) {
    push_as(reference, layers, config, &RegistryAuth::Anonymous).await
}

pub async fn push_as(
    reference: &str,
    layers: Vec<(Vec<u8>, &str)>,
    config: Vec<u8>,
    auth: &RegistryAuth,
) -> (String, i64) {
    let r: Reference = reference.parse().expect("reference");
    let layers: Vec<ImageLayer> = layers
        .into_iter()
        .map(|(d, m)| ImageLayer::new(d, m.to_owned(), None))
        .collect();
    let config = Config::new(
        config,
        "application/vnd.oci.image.config.v1+json".to_owned(),
        None,
    );
    let manifest = OciImageManifest::build(&layers, &config, None);
    let c = client();
    c.push(&r, &layers, config, auth, Some(manifest))
        .await
        .expect("push");
    // The digest of the manifest as the registry stores it.
    let (bytes, digest) = c
        .pull_manifest_raw(&r, auth, &["application/vnd.oci.image.manifest.v1+json"])
        .await
        .expect("read back the manifest");
    assert_eq!(
        digest,
        format!("sha256:{}", hex::encode(Sha256::digest(&bytes)))
    );
    (digest, bytes.len() as i64)
}

/// Pushes an index whose linux/amd64 entry is `amd64_digest` beside an
/// arm64 entry that points at a manifest which does not run here.
pub async fn push_index(reference: &str, amd64: (&str, i64), arm64: (&str, i64)) {
    let ((amd64_digest, amd64_size), (arm64_digest, arm64_size)) = (amd64, arm64);
    let r: Reference = reference.parse().expect("reference");
    let entry = |digest: &str, arch: &str, size: i64| ImageIndexEntry {
        media_type: "application/vnd.oci.image.manifest.v1+json".into(),
        digest: digest.into(),
        size,
        platform: Some(Platform {
            architecture: arch.into(),
            os: "linux".into(),
            os_version: None,
            os_features: None,
            variant: None,
            features: None,
        }),
        annotations: None,
        artifact_type: None,
    };
    let index = OciImageIndex {
        schema_version: 2,
        media_type: Some("application/vnd.oci.image.index.v1+json".into()),
        manifests: vec![
            entry(arm64_digest, "arm64", arm64_size),
            entry(amd64_digest, "amd64", amd64_size),
        ],
        annotations: None,
        artifact_type: None,
    };
    client()
        .push_manifest_list(&r, &RegistryAuth::Anonymous, index)
        .await
        .expect("push index");
}

/// A config whose `rootfs.diff_ids` names the given uncompressed layers,
/// as tools that check them (umoci) need.
pub fn config_with_diff_ids(env: &[&str], uncompressed_layers: &[&[u8]]) -> Vec<u8> {
    let diff_ids: Vec<String> = uncompressed_layers
        .iter()
        .map(|l| format!("sha256:{}", hex::encode(Sha256::digest(l))))
        .collect();
    serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {"Env": env},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }))
    .expect("json")
}

/// Pushes an image with a Docker v2 schema 2 manifest (Docker's media
/// types) instead of an OCI one; returns the manifest digest.
pub async fn push_docker_v2(reference: &str, layer_gzip: Vec<u8>, config: Vec<u8>) -> String {
    let r: Reference = reference.parse().expect("reference");
    let c = client();
    let digest_of = |b: &[u8]| format!("sha256:{}", hex::encode(Sha256::digest(b)));
    let (layer_digest, config_digest) = (digest_of(&layer_gzip), digest_of(&config));
    let (layer_size, config_size) = (layer_gzip.len(), config.len());
    c.store_auth_if_needed(r.resolve_registry(), &RegistryAuth::Anonymous)
        .await;
    c.push_blob(&r, layer_gzip, &layer_digest)
        .await
        .expect("push layer");
    c.push_blob(&r, config, &config_digest)
        .await
        .expect("push config");
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "size": config_size, "digest": config_digest},
        "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "size": layer_size, "digest": layer_digest}],
    });
    let bytes = serde_json::to_vec(&manifest).expect("json");
    c.push_manifest_raw(
        &r,
        bytes.clone(),
        "application/vnd.docker.distribution.manifest.v2+json"
            .parse()
            .expect("header"),
    )
    .await
    .expect("push manifest");
    digest_of(&bytes)
}
