//! Blobs fetched from the other nodes sharing the store: a layer of a
//! snapshot taken on one node, for a VM started from it on another. Each
//! node is asked in turn on its internal endpoint; the image store checks
//! what arrives against the digest.

use std::sync::Arc;

use async_trait::async_trait;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use paddock_runtime::remote::NodeDirectory;

pub struct PeerBlobs(pub Arc<NodeDirectory>);

#[async_trait]
impl paddock_image::PeerBlobs for PeerBlobs {
    async fn fetch(
        &self,
        digest: &str,
    ) -> Option<BoxStream<'static, Result<bytes::Bytes, std::io::Error>>> {
        for address in self.0.other_addresses().await {
            let url = format!(
                "{}/internal/v1/blobs/{digest}",
                address.trim_end_matches('/')
            );
            let answer = self
                .0
                .http()
                .get(&url)
                .bearer_auth(self.0.token())
                .send()
                .await;
            match answer {
                Ok(r) if r.status().is_success() => {
                    return Some(r.bytes_stream().map_err(std::io::Error::other).boxed());
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(node = %address, error = %e, "a node did not answer for a blob")
                }
            }
        }
        None
    }
}
