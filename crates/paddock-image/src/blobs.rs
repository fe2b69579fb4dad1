//! The content-addressed blob store: `blobs/sha256/<hex>`.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use futures::{Stream, StreamExt};
use sha2::{Digest as _, Sha256};

use crate::digest::Digest;
use crate::error::ImageError;

#[derive(Debug, Clone)]
pub struct BlobStore {
    root: PathBuf,
}

impl BlobStore {
    pub fn open(root: &Path) -> Result<Self, ImageError> {
        for d in [root.join("sha256"), root.join("ingest")] {
            std::fs::create_dir_all(&d)
                .map_err(ImageError::io(format!("create {}", d.display())))?;
        }
        // Partial downloads of a previous run are worthless.
        if let Ok(entries) = std::fs::read_dir(root.join("ingest")) {
            for e in entries.flatten() {
                let _ = std::fs::remove_file(e.path());
            }
        }
        Ok(Self {
            root: root.to_path_buf(),
        })
    }

    pub fn path(&self, digest: &Digest) -> PathBuf {
        self.root.join("sha256").join(digest.hex())
    }

    pub fn contains(&self, digest: &Digest) -> bool {
        self.path(digest).is_file()
    }

    /// Writes `stream` as the blob `expected`. Nothing is stored unless the
    /// bytes hash to `expected` (and, when given, are `size` long).
    pub async fn ingest<S>(
        &self,
        expected: &Digest,
        size: Option<u64>,
        mut stream: S,
        mut progress: impl FnMut(u64),
    ) -> Result<u64, ImageError>
    where
        S: Stream<Item = Result<Bytes, std::io::Error>> + Unpin,
    {
        let tmp =
            self.root
                .join("ingest")
                .join(format!("{}-{}", expected.hex(), rand::random::<u64>()));
        let result = async {
            let mut file =
                std::fs::File::create(&tmp).map_err(ImageError::io("create an ingest file"))?;
            let mut hasher = Sha256::new();
            let mut written = 0u64;
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(|e| download_error(expected, e))?;
                hasher.update(&chunk);
                // Blocking writes of at most one network chunk: short, and
                // they keep the download's memory at one chunk.
                file.write_all(&chunk)
                    .map_err(ImageError::io("write an ingest file"))?;
                written += chunk.len() as u64;
                progress(written);
            }
            file.sync_all()
                .map_err(ImageError::io("sync an ingest file"))?;
            if let Some(size) = size {
                if written != size {
                    return Err(ImageError::Truncated {
                        digest: expected.to_string(),
                        got: written,
                        expected: size,
                    });
                }
            }
            let actual = Digest::from_hasher(hasher);
            if &actual != expected {
                return Err(ImageError::DigestMismatch {
                    expected: expected.to_string(),
                    actual: actual.to_string(),
                });
            }
            std::fs::rename(&tmp, self.path(expected)).map_err(ImageError::io("store a blob"))?;
            Ok(written)
        }
        .await;
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result
    }

    /// Stores bytes already in memory (manifests, configs).
    pub fn put(&self, bytes: &[u8]) -> Result<Digest, ImageError> {
        let digest = Digest::of(bytes);
        if !self.contains(&digest) {
            let tmp = self.root.join("ingest").join(format!(
                "{}-{}",
                digest.hex(),
                rand::random::<u64>()
            ));
            std::fs::write(&tmp, bytes).map_err(ImageError::io("write a blob"))?;
            std::fs::rename(&tmp, self.path(&digest)).map_err(ImageError::io("store a blob"))?;
        }
        Ok(digest)
    }

    /// A fresh path in the ingest area, for a blob being written.
    pub fn ingest_path(&self) -> PathBuf {
        self.root
            .join("ingest")
            .join(format!("local-{}", rand::random::<u64>()))
    }

    /// Moves a fully written and hashed file into place as `digest`.
    pub fn adopt(&self, file: &Path, digest: &Digest) -> Result<(), ImageError> {
        if self.contains(digest) {
            let _ = std::fs::remove_file(file);
            return Ok(());
        }
        std::fs::rename(file, self.path(digest)).map_err(ImageError::io("store a blob"))
    }

    pub fn read(&self, digest: &Digest) -> Result<Vec<u8>, ImageError> {
        let bytes = std::fs::read(self.path(digest))
            .map_err(ImageError::io(format!("read blob {digest}")))?;
        let actual = Digest::of(&bytes);
        if &actual != digest {
            return Err(ImageError::DigestMismatch {
                expected: digest.to_string(),
                actual: actual.to_string(),
            });
        }
        Ok(bytes)
    }

    pub fn list(&self) -> BTreeSet<Digest> {
        std::fs::read_dir(self.root.join("sha256"))
            .map(|rd| {
                rd.flatten()
                    .filter_map(|e| {
                        format!("sha256:{}", e.file_name().to_string_lossy())
                            .parse()
                            .ok()
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn remove(&self, digest: &Digest) -> Result<(), ImageError> {
        match std::fs::remove_file(self.path(digest)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(ImageError::io(format!("remove blob {digest}"))(e))
            }
            _ => Ok(()),
        }
    }
}

/// A download that broke off: a registry that served other bytes than
/// the digest names is corrupt; anything else is the registry's failure.
fn download_error(expected: &Digest, e: std::io::Error) -> ImageError {
    let message = e.to_string();
    if message.to_ascii_lowercase().contains("digest") {
        ImageError::DigestMismatch {
            expected: expected.to_string(),
            actual: message,
        }
    } else {
        ImageError::Registry {
            registry: "the registry".into(),
            message: format!("download of {expected} failed: {message}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(
        parts: Vec<&'static [u8]>,
    ) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Unpin {
        futures::stream::iter(parts.into_iter().map(|p| Ok(Bytes::from_static(p))))
    }

    #[tokio::test]
    async fn stores_only_what_matches_its_digest() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = BlobStore::open(dir.path()).expect("open");
        let d = Digest::of(b"hello world");
        let n = store
            .ingest(&d, Some(11), stream(vec![b"hello ", b"world"]), |_| {})
            .await
            .expect("ingest");
        assert_eq!(n, 11);
        assert!(store.contains(&d));
        assert_eq!(store.read(&d).expect("read"), b"hello world");

        let tampered = Digest::of(b"something else");
        let err = store
            .ingest(&tampered, None, stream(vec![b"hello world"]), |_| {})
            .await
            .expect_err("mismatch");
        assert!(matches!(err, ImageError::DigestMismatch { .. }), "{err}");
        assert!(!store.contains(&tampered));
        let err = store
            .ingest(&d, Some(20), stream(vec![b"hello world"]), |_| {})
            .await
            .expect_err("short");
        assert!(matches!(err, ImageError::Truncated { .. }), "{err}");
        // Nothing half-written remains.
        assert_eq!(
            std::fs::read_dir(dir.path().join("ingest"))
                .expect("dir")
                .count(),
            0
        );
    }

    #[test]
    fn a_blob_corrupted_on_disk_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = BlobStore::open(dir.path()).expect("open");
        let d = store.put(b"{\"a\":1}").expect("put");
        std::fs::write(store.path(&d), b"{\"a\":2}").expect("tamper");
        assert!(matches!(
            store.read(&d),
            Err(ImageError::DigestMismatch { .. })
        ));
    }
}
