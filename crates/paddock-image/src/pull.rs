//! Pulling from OCI registries (anonymous, basic or bearer-token auth;
//! plain HTTP only for registries the config marks insecure) into the
//! blob store, then unpacking each layer once. Implements the core's
//! image port.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use oci_client::client::{linux_amd64_resolver, ClientConfig, ClientProtocol};
use oci_client::errors::OciDistributionError;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use paddock_core::images::ImageBackend;
use paddock_core::model::{ImageConfig, LayerInfo, PullProgress, PulledImage};
use paddock_core::CoreError;
use tokio::sync::Mutex as AsyncMutex;

use crate::blobs::BlobStore;
use crate::digest::Digest;
use crate::error::ImageError;
use crate::unpack::unpack_layer;

/// How to reach one registry. `Debug` hides the password.
#[derive(Clone, Default)]
pub struct RegistryConfig {
    /// Plain HTTP instead of HTTPS.
    pub insecure: bool,
    pub username: Option<String>,
    pub password: Option<String>,
}

impl std::fmt::Debug for RegistryConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryConfig")
            .field("insecure", &self.insecure)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
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
    client: Client,
    /// One download or unpack per digest at a time; the others wait and
    /// then find it done.
    locks: Mutex<HashMap<String, Arc<AsyncMutex<()>>>>,
}

impl ImageStore {
    /// Opens the store under `dir` (`blobs/`, `layers/`).
    pub fn open(
        dir: &Path,
        registries: BTreeMap<String, RegistryConfig>,
    ) -> Result<Self, ImageError> {
        // One process-wide TLS crypto provider; installing it twice is a no-op.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let blobs = BlobStore::open(&dir.join("blobs"))?;
        let layers_dir = dir.join("layers");
        std::fs::create_dir_all(&layers_dir)
            .map_err(ImageError::io(format!("create {}", layers_dir.display())))?;
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
            client,
            locks: Mutex::new(HashMap::new()),
        })
    }

    pub fn blobs(&self) -> &BlobStore {
        &self.blobs
    }

    fn lock(&self, key: &str) -> Arc<AsyncMutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(PoisonError::into_inner);
        locks.retain(|_, l| Arc::strong_count(l) > 1);
        locks.entry(key.to_owned()).or_default().clone()
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
        let parsed: Reference = reference.parse().map_err(|e: oci_client::ParseError| {
            ImageError::InvalidReference {
                reference: reference.to_owned(),
                reason: e.to_string(),
            }
        })?;
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
            let lock = self.lock(digest.as_str());
            let _guard = lock.lock().await;
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

impl From<ImageError> for CoreError {
    fn from(e: ImageError) -> Self {
        match e {
            ImageError::InvalidReference { .. } => {
                CoreError::invalid("image_variant", e.to_string())
            }
            ImageError::NotFound(r) => CoreError::not_found("image", r),
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

    fn layer_dirs(&self, layers: &[LayerInfo]) -> Vec<PathBuf> {
        layers
            .iter()
            .rev()
            .filter_map(|l| l.digest.parse::<Digest>().ok())
            .map(|d| self.layer_dir(&d))
            .collect()
    }

    async fn collect_garbage(&self, keep: &BTreeSet<String>) -> Result<u64, CoreError> {
        Ok(self.gc(keep)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
            insecure: true,
            username: Some("u".into()),
            password: Some("hunter2".into()),
        };
        assert!(!format!("{c:?}").contains("hunter2"));
    }
}
