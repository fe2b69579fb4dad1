//! Pulling from OCI registries (anonymous, basic or bearer-token auth;
//! plain HTTP only for registries the config marks insecure) into the
//! blob store, then unpacking each layer once. Implements the core's
//! image port.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use oci_client::client::{linux_amd64_resolver, ClientConfig, ClientProtocol};
use oci_client::errors::OciDistributionError;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use paddock_core::images::{BuiltLayer, ImageBackend, LayerFile, WrittenImage};
use paddock_core::keyed_locks::KeyedLocks;
use paddock_core::model::{ChangedTree, ImageConfig, LayerInfo, PullProgress, PulledImage};
use paddock_core::CoreError;

use crate::blobs::BlobStore;
use crate::digest::Digest;
use crate::error::ImageError;
use crate::pack::{pack, Contents};
use crate::unpack::unpack_layer;

/// The media type of the layers paddock packs (builds), and of a staged
/// layer as it is pushed.
const PACKED_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
/// The media type of a staged layer (a snapshot's) here: a plain tar,
/// kept as its directory until its bytes are needed.
const STAGED_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
const CONFIG_MEDIA_TYPE: &str = "application/vnd.oci.image.config.v1+json";
const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";

/// How to reach one registry. `Debug` hides the password.
#[derive(Clone, Default)]
pub struct RegistryConfig {
    /// Plain HTTP instead of HTTPS.
    pub insecure: bool,
    pub username: Option<String>,
    pub password: Option<String>,
    /// Pulls of this registry's images go to this registry instead (a
    /// pull-through mirror, `host:port`, itself configured by its own
    /// entry), with the original registry named in `?ns=` as containerd
    /// sends it. Pushes still go to the registry itself.
    pub mirror: Option<String>,
}

impl std::fmt::Debug for RegistryConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryConfig")
            .field("insecure", &self.insecure)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("mirror", &self.mirror)
            .finish()
    }
}

const LAYER_MEDIA_TYPES: [&str; 8] = [
    "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd",
    "application/vnd.oci.image.layer.nondistributable.v1.tar",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
];

pub struct ImageStore {
    blobs: BlobStore,
    layers_dir: PathBuf,
    registries: BTreeMap<String, RegistryConfig>,
    /// Only the registries in `registries` may be contacted; any other
    /// reference is refused before a connection is made.
    only_listed: bool,
    client: Client,
    /// One download or unpack per digest at a time; the others wait and
    /// then find it done.
    locks: KeyedLocks<String>,
    /// The other nodes sharing the store, for layers made on one of them.
    peers: std::sync::OnceLock<std::sync::Arc<dyn PeerBlobs>>,
    /// The compressed blobs pushes made of staged layers, by the layer's
    /// digest: a push again (a retry, another registry) sends the same
    /// blob, while it is stored, rather than compress the layer again.
    compressed: std::sync::Mutex<std::collections::HashMap<Digest, LayerInfo>>,
}

/// The other nodes of an installation, which may hold a blob this node
/// lacks (a layer of a snapshot taken on one of them).
#[async_trait]
pub trait PeerBlobs: Send + Sync {
    /// Blob `digest`'s bytes from a node that has it; `None` when none has.
    async fn fetch(
        &self,
        digest: &str,
    ) -> Option<futures::stream::BoxStream<'static, Result<bytes::Bytes, std::io::Error>>>;
}

impl ImageStore {
    /// Opens the store under `dir` (`blobs/`, `layers/`).
    pub fn open(
        dir: &Path,
        registries: BTreeMap<String, RegistryConfig>,
        only_listed: bool,
    ) -> Result<Self, ImageError> {
        // One process-wide TLS crypto provider; installing it twice is a no-op.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let blobs = BlobStore::open(&dir.join("blobs"))?;
        let layers_dir = dir.join("layers");
        std::fs::create_dir_all(&layers_dir)
            .map_err(ImageError::io(format!("create {}", layers_dir.display())))?;
        remove_leftover_staging(dir);
        let insecure: Vec<String> = registries
            .iter()
            .filter(|(_, c)| c.insecure)
            .map(|(r, _)| r.clone())
            .collect();
        let client = Client::new(ClientConfig {
            protocol: ClientProtocol::HttpsExcept(insecure),
            platform_resolver: Some(Box::new(linux_amd64_resolver)),
            connect_timeout: Some(std::time::Duration::from_secs(10)),
            read_timeout: Some(std::time::Duration::from_secs(60)),
            ..ClientConfig::default()
        });
        Ok(Self {
            blobs,
            layers_dir,
            registries,
            only_listed,
            client,
            locks: KeyedLocks::default(),
            peers: std::sync::OnceLock::new(),
            compressed: std::sync::Mutex::default(),
        })
    }

    /// Where layers this node lacks are fetched from (set once).
    pub fn set_peers(&self, peers: std::sync::Arc<dyn PeerBlobs>) {
        let _ = self.peers.set(peers);
    }

    /// Unpacks `info` here, fetching its blob from a peer node when this
    /// one lacks it (verified against its digest as it arrives).
    async fn ensure_layer(&self, info: &LayerInfo) -> Result<(), ImageError> {
        let digest: Digest = info
            .digest
            .parse()
            .map_err(|_| ImageError::Config(format!("layer digest {:?}", info.digest)))?;
        let dest = self.layer_dir(&digest);
        if dest.is_dir() {
            return Ok(());
        }
        let _one = self.locks.lock(&info.digest).await;
        if dest.is_dir() {
            return Ok(());
        }
        if !self.blobs.contains(&digest) {
            let stream = match self.peers.get() {
                Some(peers) => peers.fetch(&info.digest).await,
                None => None,
            };
            let Some(stream) = stream else {
                return Err(ImageError::Config(format!(
                    "layer {} is on no node of this installation",
                    info.digest
                )));
            };
            self.blobs.ingest(&digest, None, stream, |_| {}).await?;
            tracing::info!(digest = %digest, "layer fetched from another node");
        }
        let (blob, d) = (self.blobs.path(&digest), digest.clone());
        tokio::task::spawn_blocking(move || unpack_layer(&blob, &d, &dest))
            .await
            .map_err(|e| ImageError::Config(format!("unpack task failed: {e}")))?
    }

    pub fn blobs(&self) -> &BlobStore {
        &self.blobs
    }

    /// Refuses a registry the operator has not listed, when only listed
    /// ones may be used.
    fn check_allowed(&self, registry: &str) -> Result<(), ImageError> {
        if self.only_listed && !self.registries.contains_key(registry) {
            return Err(ImageError::RegistryNotAllowed(registry.to_owned()));
        }
        Ok(())
    }

    fn auth(&self, registry: &str) -> RegistryAuth {
        match self.registries.get(registry) {
            Some(RegistryConfig {
                username: Some(u),
                password: Some(p),
                ..
            }) => RegistryAuth::Basic(u.clone(), p.clone()),
            _ => RegistryAuth::Anonymous,
        }
    }

    fn layer_dir(&self, digest: &Digest) -> PathBuf {
        self.layers_dir.join(digest.hex())
    }

    pub async fn pull_image(
        &self,
        reference: &str,
        progress: &PullProgress,
    ) -> Result<PulledImage, ImageError> {
        let mut parsed: Reference = reference.parse().map_err(|e: oci_client::ParseError| {
            ImageError::InvalidReference {
                reference: reference.to_owned(),
                reason: e.to_string(),
            }
        })?;
        // The registry the reference names decides, mirror or not (as
        // written, or as it resolves: `docker.io` is `index.docker.io`).
        self.check_allowed(parsed.registry())
            .or_else(|_| self.check_allowed(parsed.resolve_registry()))?;
        let mirror = self
            .registries
            .get(parsed.registry())
            .and_then(|c| c.mirror.clone());
        if let Some(mirror) = mirror {
            parsed.set_mirror_registry(mirror);
        }
        let registry = parsed.resolve_registry().to_owned();
        let classify = |e: OciDistributionError| classify(e, &registry, reference);
        let (manifest, manifest_digest, config) = self
            .client
            .pull_manifest_and_config(&parsed, &self.auth(&registry))
            .await
            .map_err(classify)?;
        let config_digest: Digest = manifest.config.digest.parse().map_err(|_| {
            ImageError::Config(format!("config digest {:?}", manifest.config.digest))
        })?;
        let stored = self.blobs.put(config.as_bytes())?;
        if stored != config_digest {
            let _ = self.blobs.remove(&stored);
            return Err(ImageError::DigestMismatch {
                expected: config_digest.to_string(),
                actual: stored.to_string(),
            });
        }
        let image_config = parse_config(&config)?;
        let mut layers = Vec::new();
        for l in &manifest.layers {
            if !LAYER_MEDIA_TYPES.contains(&l.media_type.as_str()) {
                return Err(ImageError::MediaType(l.media_type.clone()));
            }
            layers.push(LayerInfo {
                digest: l.digest.clone(),
                size: u64::try_from(l.size).unwrap_or(0),
                media_type: l.media_type.clone(),
            });
        }
        progress.start_layers(&layers);
        for (i, (desc, info)) in manifest.layers.iter().zip(&layers).enumerate() {
            let digest: Digest = info
                .digest
                .parse()
                .map_err(|_| ImageError::Config(format!("layer digest {:?}", info.digest)))?;
            let _guard = self.locks.lock(&digest.as_str().to_owned()).await;
            if !self.blobs.contains(&digest) {
                let stream = self
                    .client
                    .pull_blob_stream(&parsed, desc)
                    .await
                    .map_err(classify)?;
                self.blobs
                    .ingest(&digest, Some(info.size), stream.stream, |n| {
                        progress.layer_done_bytes(i, n)
                    })
                    .await?;
            }
            progress.layer_done_bytes(i, info.size);
            let (blob, dest, d) = (
                self.blobs.path(&digest),
                self.layer_dir(&digest),
                digest.clone(),
            );
            tokio::task::spawn_blocking(move || unpack_layer(&blob, &d, &dest))
                .await
                .map_err(|e| ImageError::Config(format!("unpack task failed: {e}")))??;
        }
        tracing::info!(reference, digest = %manifest_digest, layers = layers.len(), "image pulled");
        Ok(PulledImage {
            digest: manifest_digest,
            reference: reference.to_owned(),
            config_digest: config_digest.to_string(),
            config: image_config,
            layers,
        })
    }

    /// Removes blobs and unpacked layers not in `keep`; returns bytes freed.
    pub fn gc(&self, keep: &BTreeSet<String>) -> Result<u64, ImageError> {
        let mut freed = 0;
        for digest in self.blobs.list() {
            if keep.contains(digest.as_str()) {
                continue;
            }
            freed += std::fs::metadata(self.blobs.path(&digest))
                .map(|m| m.len())
                .unwrap_or(0);
            self.blobs.remove(&digest)?;
        }
        if let Ok(entries) = std::fs::read_dir(&self.layers_dir) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if !keep.contains(&format!("sha256:{name}")) {
                    std::fs::remove_dir_all(e.path())
                        .map_err(ImageError::io(format!("remove layer {name}")))?;
                }
            }
        }
        Ok(freed)
    }
}

fn classify(e: OciDistributionError, registry: &str, reference: &str) -> ImageError {
    match e {
        OciDistributionError::AuthenticationFailure(_)
        | OciDistributionError::UnauthorizedError { .. } => ImageError::Unauthorized {
            registry: registry.to_owned(),
        },
        OciDistributionError::ImageManifestNotFoundError(_) => {
            ImageError::NotFound(reference.to_owned())
        }
        OciDistributionError::ServerError { code: 404, .. } => {
            ImageError::NotFound(reference.to_owned())
        }
        OciDistributionError::ServerError { code: 401, .. } => ImageError::Unauthorized {
            registry: registry.to_owned(),
        },
        OciDistributionError::RegistryError { envelope, .. }
            if envelope
                .errors
                .iter()
                .any(|e| format!("{:?}", e.code).contains("Unauthorized")) =>
        {
            ImageError::Unauthorized {
                registry: registry.to_owned(),
            }
        }
        OciDistributionError::RegistryError { envelope, .. }
            if envelope
                .errors
                .iter()
                .any(|e| format!("{:?}", e.code).contains("Unknown")) =>
        {
            ImageError::NotFound(reference.to_owned())
        }
        OciDistributionError::DigestError(_) => ImageError::DigestMismatch {
            expected: reference.to_owned(),
            actual: e.to_string(),
        },
        other => ImageError::Registry {
            registry: registry.to_owned(),
            message: other.to_string(),
        },
    }
}

/// The honoured parts of an OCI image config.
fn parse_config(raw: &str) -> Result<ImageConfig, ImageError> {
    let v: serde_json::Value =
        serde_json::from_str(raw).map_err(|e| ImageError::Config(e.to_string()))?;
    let c = &v["config"];
    let strings = |x: &serde_json::Value| -> Vec<String> {
        x.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    Ok(ImageConfig {
        env: strings(&c["Env"])
            .into_iter()
            .filter_map(|kv| {
                kv.split_once('=')
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
            })
            .collect(),
        working_dir: c["WorkingDir"]
            .as_str()
            .filter(|s| !s.is_empty())
            .map(str::to_owned),
        user: c["User"]
            .as_str()
            .filter(|s| !s.is_empty())
            .map(str::to_owned),
        entrypoint: strings(&c["Entrypoint"]),
        cmd: strings(&c["Cmd"]),
        labels: c["Labels"]
            .as_object()
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                    .collect()
            })
            .unwrap_or_default(),
    })
}

/// Removes what a stopped server left half staged or squashed beside the
/// layers.
fn remove_leftover_staging(store: &Path) {
    let Ok(entries) = std::fs::read_dir(store) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with(STAGING_PREFIX) || name.starts_with("squash-") {
            if let Err(err) = std::fs::remove_dir_all(e.path()) {
                tracing::warn!(dir = %e.path().display(), error = %err, "could not remove a leftover staging dir");
            }
        }
    }
}

const STAGING_PREFIX: &str = "staging-";

impl ImageStore {
    /// Copies `trees` into a new layer directory, named by the digest of
    /// the plain tar they make (see [`crate::stage`]); no blob is written.
    fn store_staged(&self, trees: &[ChangedTree]) -> Result<BuiltLayer, ImageError> {
        let tmp = self
            .layers_dir
            .with_file_name(format!("{STAGING_PREFIX}{:016x}", rand::random::<u64>()));
        let started = std::time::Instant::now();
        let staged = match crate::stage::stage_layer(trees, &tmp) {
            Ok(s) => s,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&tmp);
                return Err(e);
            }
        };
        let dest = self.layer_dir(&staged.digest);
        let placed = if dest.is_dir() {
            // The same changes were staged before: that copy serves.
            std::fs::remove_dir_all(&tmp)
        } else {
            std::fs::rename(&tmp, &dest)
        };
        if let Err(e) = placed {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(ImageError::io(format!("store layer {}", staged.digest))(e));
        }
        tracing::debug!(digest = %staged.digest, bytes = staged.size, took_ms = started.elapsed().as_millis() as u64, "layer staged");
        Ok(BuiltLayer {
            info: LayerInfo {
                digest: staged.digest.to_string(),
                size: staged.size,
                media_type: STAGED_LAYER.to_owned(),
            },
            diff_id: staged.digest.to_string(),
        })
    }

    /// Writes the blob of a staged layer (its plain tar) from its
    /// directory, when it is not stored yet; `None` when neither is here.
    /// The tar is checked against the digest before it is stored.
    fn materialize(&self, digest: &Digest) -> Result<Option<PathBuf>, ImageError> {
        if self.blobs.contains(digest) {
            return Ok(Some(self.blobs.path(digest)));
        }
        let dir = self.layer_dir(digest);
        if !dir.is_dir() {
            return Ok(None);
        }
        let tmp = self.blobs.ingest_path();
        let written = std::fs::File::create(&tmp)
            .and_then(|f| {
                let hashing = crate::pack::Hashing::new(io::BufWriter::with_capacity(1 << 20, f));
                crate::pack::write_tar(&dir, hashing)
            })
            .and_then(|mut hashing| {
                hashing.flush()?;
                Ok(hashing.digest())
            });
        let made = match written {
            Ok(d) => d,
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                return Err(ImageError::io(format!("write the blob of layer {digest}"))(
                    e,
                ));
            }
        };
        if &made != digest {
            let _ = std::fs::remove_file(&tmp);
            return Err(ImageError::DigestMismatch {
                expected: digest.to_string(),
                actual: made.to_string(),
            });
        }
        self.blobs.adopt(&tmp, digest)?;
        Ok(Some(self.blobs.path(digest)))
    }

    /// What a push sends for `layer`: its stored blob as it is, or, for a
    /// staged layer, its tar compressed (zstd) by the first push that
    /// needed it, under that blob's own digest and media type (the image's
    /// diff ids stay the tar's).
    fn pushable(&self, layer: &LayerInfo) -> Result<LayerInfo, ImageError> {
        let digest: Digest = layer
            .digest
            .parse()
            .map_err(|_| ImageError::Config(format!("layer {}", layer.digest)))?;
        if self.blobs.contains(&digest) || layer.media_type != STAGED_LAYER {
            return Ok(layer.clone());
        }
        if let Some(made) = self.compressed_for(&digest) {
            return Ok(made);
        }
        let packed = self.pack_blob(Contents::Changes(&[ChangedTree {
            dir: self.layer_dir(&digest),
            at: String::new(),
            ids: None,
        }]))?;
        if packed.diff_id != digest {
            return Err(ImageError::DigestMismatch {
                expected: digest.to_string(),
                actual: packed.diff_id.to_string(),
            });
        }
        let made = LayerInfo {
            digest: packed.digest.to_string(),
            size: packed.size,
            media_type: PACKED_LAYER.to_owned(),
        };
        self.compressed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(digest, made.clone());
        Ok(made)
    }

    /// The compressed blob a push made of staged layer `digest`, while it
    /// is still stored (garbage collection may have taken it).
    fn compressed_for(&self, digest: &Digest) -> Option<LayerInfo> {
        let made = self
            .compressed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(digest)
            .cloned()?;
        let blob: Digest = made.digest.parse().ok()?;
        self.blobs.contains(&blob).then_some(made)
    }

    /// Packs `contents` into a zstd blob, stored under its digest.
    fn pack_blob(&self, contents: Contents<'_>) -> Result<crate::pack::Packed, ImageError> {
        let tmp = self.blobs.ingest_path();
        let packed = pack(contents, &tmp).inspect_err(|_| {
            let _ = std::fs::remove_file(&tmp);
        })?;
        self.blobs.adopt(&tmp, &packed.digest)?;
        Ok(packed)
    }

    /// Packs `contents` into a stored blob, unpacked once as a layer.
    fn store_packed(&self, contents: Contents<'_>) -> Result<BuiltLayer, ImageError> {
        let packed = self.pack_blob(contents)?;
        unpack_layer(
            &self.blobs.path(&packed.digest),
            &packed.digest,
            &self.layer_dir(&packed.digest),
        )?;
        Ok(BuiltLayer {
            info: LayerInfo {
                digest: packed.digest.to_string(),
                size: packed.size,
                media_type: PACKED_LAYER.to_owned(),
            },
            diff_id: packed.diff_id.to_string(),
        })
    }

    fn write(
        &self,
        layers: &[LayerInfo],
        diff_ids: &[String],
        c: &ImageConfig,
    ) -> Result<WrittenImage, ImageError> {
        // Unknown diff ids (an empty string) are computed from the blob.
        let diff_ids = layers
            .iter()
            .enumerate()
            .map(|(i, l)| match diff_ids.get(i).filter(|d| !d.is_empty()) {
                Some(d) => Ok(d.clone()),
                None => {
                    let d: Digest = l
                        .digest
                        .parse()
                        .map_err(|_| ImageError::Config(l.digest.clone()))?;
                    crate::unpack::uncompressed_digest(&self.blobs.path(&d)).map(|d| d.to_string())
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        let env: Vec<String> = c.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let config = serde_json::json!({
            "architecture": "amd64",
            "os": "linux",
            "config": {
                "Env": env,
                "WorkingDir": c.working_dir.clone().unwrap_or_default(),
                "User": c.user.clone().unwrap_or_default(),
                "Entrypoint": if c.entrypoint.is_empty() { serde_json::Value::Null } else { serde_json::json!(c.entrypoint) },
                "Cmd": if c.cmd.is_empty() { serde_json::Value::Null } else { serde_json::json!(c.cmd) },
                "Labels": c.labels,
            },
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        });
        let config_bytes =
            serde_json::to_vec(&config).map_err(|e| ImageError::Config(e.to_string()))?;
        let config_digest = self.blobs.put(&config_bytes)?;
        let manifest = manifest_for(layers, config_digest.as_str(), config_bytes.len() as i64);
        let manifest_bytes =
            serde_json::to_vec(&manifest).map_err(|e| ImageError::Config(e.to_string()))?;
        let manifest_digest = self.blobs.put(&manifest_bytes)?;
        Ok(WrittenImage {
            manifest_digest: manifest_digest.to_string(),
            config_digest: config_digest.to_string(),
        })
    }

    async fn push_to(
        &self,
        layers: &[LayerInfo],
        config_digest: &str,
        target: &str,
    ) -> Result<String, ImageError> {
        let r: Reference =
            target
                .parse()
                .map_err(|e: oci_client::ParseError| ImageError::InvalidReference {
                    reference: target.to_owned(),
                    reason: e.to_string(),
                })?;
        let registry = r.resolve_registry().to_owned();
        self.check_allowed(&registry)?;
        let classify = |e: OciDistributionError| classify(e, &registry, target);
        let auth = self.auth(&registry);
        self.client.store_auth_if_needed(&registry, &auth).await;
        if let RegistryAuth::Basic(..) = auth {
            self.client
                .auth(&r, &auth, oci_client::RegistryOperation::Push)
                .await
                .map_err(classify)?;
        }
        // Staged layers go compressed; a registry sees an ordinary image.
        let layers = layers
            .iter()
            .map(|l| tokio::task::block_in_place(|| self.pushable(l)))
            .collect::<Result<Vec<_>, _>>()?;
        for layer in &layers {
            let digest: Digest = layer
                .digest
                .parse()
                .map_err(|_| ImageError::Config(format!("layer {}", layer.digest)))?;
            if self
                .client
                .blob_exists(&r, digest.as_str())
                .await
                .map_err(classify)?
            {
                continue;
            }
            let file = tokio::fs::File::open(self.blobs.path(&digest))
                .await
                .map_err(ImageError::io(format!("open blob {digest}")))?;
            let stream = futures::stream::unfold(file, |mut f| async move {
                let mut buf = vec![0u8; 1 << 20];
                match tokio::io::AsyncReadExt::read(&mut f, &mut buf).await {
                    Ok(0) => None,
                    Ok(n) => {
                        buf.truncate(n);
                        Some((Ok(bytes::Bytes::from(buf)), f))
                    }
                    Err(e) => Some((Err(OciDistributionError::IoError(e)), f)),
                }
            });
            self.client
                .push_blob_stream(&r, stream, digest.as_str(), Some(layer.size))
                .await
                .map_err(classify)?;
        }
        let config_digest: Digest = config_digest
            .parse()
            .map_err(|_| ImageError::Config(config_digest.to_owned()))?;
        let config_bytes = self.blobs.read(&config_digest)?;
        let size = config_bytes.len() as i64;
        self.client
            .push_blob(&r, config_bytes, config_digest.as_str())
            .await
            .map_err(classify)?;
        let manifest = manifest_for(&layers, config_digest.as_str(), size);
        let bytes = serde_json::to_vec(&manifest).map_err(|e| ImageError::Config(e.to_string()))?;
        self.client
            .push_manifest_raw(
                &r,
                bytes.clone(),
                MANIFEST_MEDIA_TYPE
                    .parse()
                    .map_err(|_| ImageError::MediaType(MANIFEST_MEDIA_TYPE.into()))?,
            )
            .await
            .map_err(classify)?;
        Ok(Digest::of(&bytes).to_string())
    }
}

fn manifest_for(
    layers: &[LayerInfo],
    config_digest: &str,
    config_size: i64,
) -> oci_client::manifest::OciImageManifest {
    use oci_client::manifest::{OciDescriptor, OciImageManifest};
    OciImageManifest {
        schema_version: 2,
        media_type: Some(MANIFEST_MEDIA_TYPE.to_owned()),
        config: OciDescriptor {
            media_type: CONFIG_MEDIA_TYPE.to_owned(),
            digest: config_digest.to_owned(),
            size: config_size,
            ..Default::default()
        },
        layers: layers
            .iter()
            .map(|l| OciDescriptor {
                media_type: l.media_type.clone(),
                digest: l.digest.clone(),
                size: i64::try_from(l.size).unwrap_or(i64::MAX),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

impl From<ImageError> for CoreError {
    fn from(e: ImageError) -> Self {
        match e {
            ImageError::InvalidReference { .. } => {
                CoreError::invalid("image_variant", e.to_string())
            }
            ImageError::NotFound(r) => CoreError::not_found("image", r),
            ImageError::RegistryNotAllowed(_) => CoreError::PermissionDenied(e.to_string()),
            ImageError::Io { .. } => CoreError::Unavailable(format!(
                "image store: {}",
                paddock_core::service::error_chain(&e)
            )),
            other => CoreError::Upstream(other.to_string()),
        }
    }
}

#[async_trait]
impl ImageBackend for ImageStore {
    async fn pull(
        &self,
        reference: &str,
        progress: &PullProgress,
    ) -> Result<PulledImage, CoreError> {
        Ok(self.pull_image(reference, progress).await?)
    }

    fn is_reference(&self, reference: &str) -> bool {
        reference.parse::<Reference>().is_ok()
    }

    fn canonical(&self, reference: &str) -> Option<String> {
        reference.parse::<Reference>().ok().map(|r| r.whole())
    }

    async fn ensure_layers(&self, layers: &[LayerInfo]) -> Result<(), CoreError> {
        for info in layers {
            self.ensure_layer(info).await?;
        }
        Ok(())
    }

    async fn local_blob(&self, digest: &str) -> Option<PathBuf> {
        let digest: Digest = digest.parse().ok()?;
        if self.blobs.contains(&digest) {
            return Some(self.blobs.path(&digest));
        }
        // A staged layer's blob is written the first time a node asks.
        let _one = self.locks.lock(&digest.as_str().to_owned()).await;
        tokio::task::block_in_place(|| self.materialize(&digest)).unwrap_or_else(|e| {
            tracing::error!(%digest, error = %e, "could not write a staged layer's blob");
            None
        })
    }

    fn layer_dirs(&self, layers: &[LayerInfo]) -> Vec<PathBuf> {
        // A repeated layer (images with two empty layers, snapshot stacks
        // from before repeats were dropped) is stacked once, where its
        // topmost copy is: overlayfs refuses a lower dir twice.
        paddock_core::model::without_repeats(layers)
            .into_iter()
            .rev()
            .filter_map(|l| l.digest.parse::<Digest>().ok())
            .map(|d| self.layer_dir(&d))
            .collect()
    }

    async fn collect_garbage(&self, keep: &BTreeSet<String>) -> Result<u64, CoreError> {
        Ok(self.gc(keep)?)
    }

    async fn pack_changes(&self, trees: &[ChangedTree]) -> Result<BuiltLayer, CoreError> {
        Ok(tokio::task::block_in_place(|| self.store_staged(trees))?)
    }

    async fn pack_squashed(&self, trees: &[ChangedTree]) -> Result<BuiltLayer, CoreError> {
        Ok(tokio::task::block_in_place(|| {
            let staging = self
                .layers_dir
                .with_file_name(format!("squash-{:016x}", rand::random::<u64>()));
            std::fs::create_dir_all(&staging)
                .map_err(ImageError::io(format!("create {}", staging.display())))?;
            let built = crate::squash::squash(trees, &staging).and_then(|()| {
                // The staging tree holds layer files (their owners as
                // stored) and the sandbox's (shifted): the shift tells
                // them apart by range.
                self.store_staged(&[ChangedTree {
                    dir: staging.clone(),
                    at: String::new(),
                    ids: trees.iter().find_map(|t| t.ids),
                }])
            });
            if let Err(e) = std::fs::remove_dir_all(&staging) {
                tracing::warn!(dir = %staging.display(), error = %e, "could not remove a squash staging dir");
            }
            built
        })?)
    }

    async fn files_layer(&self, files: &[LayerFile]) -> Result<BuiltLayer, CoreError> {
        Ok(tokio::task::block_in_place(|| {
            self.store_packed(Contents::Files(files))
        })?)
    }

    async fn diff_ids(&self, config_digest: &str) -> Result<Vec<String>, CoreError> {
        let d: Digest = config_digest
            .parse()
            .map_err(|_| ImageError::Config(config_digest.to_owned()))?;
        let config: serde_json::Value = serde_json::from_slice(&self.blobs.read(&d)?)
            .map_err(|e| ImageError::Config(e.to_string()))?;
        Ok(config["rootfs"]["diff_ids"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default())
    }

    async fn write_image(
        &self,
        layers: &[LayerInfo],
        diff_ids: &[String],
        config: &ImageConfig,
    ) -> Result<WrittenImage, CoreError> {
        Ok(self.write(layers, diff_ids, config)?)
    }

    async fn push(
        &self,
        layers: &[LayerInfo],
        config_digest: &str,
        target: &str,
    ) -> Result<String, CoreError> {
        Ok(self.push_to(layers, config_digest, target).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A staged layer has a directory and no blob; the blob a node asks
    /// for is its tar, made and checked then; a push gets it compressed.
    #[test]
    fn a_staged_layer_gets_its_blob_on_demand() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store =
            ImageStore::open(&dir.path().join("store"), BTreeMap::new(), false).expect("store");
        let upper = dir.path().join("upper");
        std::fs::create_dir_all(upper.join("etc")).expect("mkdir");
        std::fs::write(upper.join("etc/motd"), "staged\n").expect("write");
        let built = store
            .store_staged(&[ChangedTree {
                dir: upper,
                at: String::new(),
                ids: None,
            }])
            .expect("stage");
        assert_eq!(built.info.media_type, STAGED_LAYER);
        assert_eq!(built.info.digest, built.diff_id);
        let digest: Digest = built.info.digest.parse().expect("digest");
        assert!(store.layer_dir(&digest).join("etc/motd").is_file());
        assert!(
            !store.blobs.contains(&digest),
            "no blob until one is needed"
        );

        let blob = store
            .materialize(&digest)
            .expect("materialize")
            .expect("a blob");
        assert_eq!(Digest::of(&std::fs::read(&blob).expect("blob")), digest);
        assert_eq!(
            std::fs::metadata(&blob).expect("blob").len(),
            built.info.size
        );
        let out = dir.path().join("unpacked");
        unpack_layer(&blob, &digest, &out).expect("unpack");
        assert_eq!(
            std::fs::read_to_string(out.join("etc/motd")).expect("motd"),
            "staged\n"
        );

        // A push compresses it; the image's diff id stays the tar's.
        let pushed = store.pushable(&built.info).expect("pushable");
        assert_eq!(pushed, built.info, "a stored blob is pushed as it is");
        store.blobs.remove(&digest).expect("remove blob");
        let pushed = store.pushable(&built.info).expect("pushable");
        assert_eq!(pushed.media_type, PACKED_LAYER);
        assert_ne!(pushed.digest, built.info.digest);
        let compressed: Digest = pushed.digest.parse().expect("digest");
        assert_eq!(
            crate::unpack::uncompressed_digest(&store.blobs.path(&compressed)).expect("diff id"),
            digest
        );
        // A push again sends that blob: it does not pack the layer again
        // (packing the directory changed below would fail its digest).
        std::fs::write(store.layer_dir(&digest).join("etc/motd"), "changed\n").expect("tamper");
        assert_eq!(store.pushable(&built.info).expect("pushable again"), pushed);
        // Without the blob (collected), it packs again, from the directory.
        store
            .blobs
            .remove(&compressed)
            .expect("remove compressed blob");
        assert!(matches!(
            store.pushable(&built.info),
            Err(ImageError::DigestMismatch { .. })
        ));

        // A layer whose directory no longer packs into its digest is
        // refused, not served.
        std::fs::write(store.layer_dir(&digest).join("etc/motd"), "changed\n").expect("tamper");
        assert!(matches!(
            store.materialize(&digest),
            Err(ImageError::DigestMismatch { .. })
        ));
        let absent: Digest = format!("sha256:{}", "0".repeat(64))
            .parse()
            .expect("digest");
        assert!(store.materialize(&absent).expect("absent").is_none());
    }

    #[test]
    fn config_defaults_are_read() {
        let c = parse_config(r#"{"config":{"Env":["PATH=/bin","A=b=c"],"WorkingDir":"/app","User":"1000:1000","Cmd":["sh"],"Labels":{"x":"y"}}}"#)
            .expect("valid");
        assert_eq!(
            c.env,
            vec![("PATH".into(), "/bin".into()), ("A".into(), "b=c".into())]
        );
        assert_eq!(c.working_dir.as_deref(), Some("/app"));
        assert_eq!(c.user.as_deref(), Some("1000:1000"));
        assert_eq!(c.labels.get("x").map(String::as_str), Some("y"));
        assert!(parse_config("{").is_err());
    }

    #[test]
    fn credentials_are_not_in_debug_output() {
        let c = RegistryConfig {
            mirror: None,
            insecure: true,
            username: Some("u".into()),
            password: Some("hunter2".into()),
        };
        assert!(!format!("{c:?}").contains("hunter2"));
    }
}
