//! Images an account has pulled: what they are made of and the defaults
//! their config gives every command.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;

use crate::clock::Timestamp;
use crate::ids::AccountId;

/// The parts of an OCI image config paddock honours (serialized as the
/// store keeps it: `env` as `[key, value]` pairs).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct ImageConfig {
    pub env: Vec<(String, String)>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub labels: BTreeMap<String, String>,
}

/// The label an image built `FROM` one of this server's variants carries:
/// its layers go over that variant (which is no OCI layer, so the image
/// runs on this server only).
pub const BASE_VARIANT_LABEL: &str = "dev.paddock.base-variant";

impl ImageConfig {
    /// The variant the image's layers go over, if it was built from one.
    pub fn base_variant(&self) -> Option<&str> {
        self.labels.get(BASE_VARIANT_LABEL).map(String::as_str)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LayerInfo {
    pub digest: String,
    pub size: u64,
    pub media_type: String,
}

/// Puts `layer` (whose uncompressed digest is `diff_id`) on top of a
/// stack, first dropping an earlier copy of it. The same layer twice in
/// one overlay is refused by the kernel (ELOOP), and the earlier copy
/// changes nothing: every path it names is named again by the copy above,
/// which wins, and whatever it hides (whiteouts, opaque dirs) the copy
/// above hides too. Quiet sessions (each an empty layer) and changes made
/// and undone (the same layer again) keep a stack from growing.
pub fn push_layer(
    layers: &mut Vec<LayerInfo>,
    diff_ids: &mut Vec<String>,
    layer: LayerInfo,
    diff_id: String,
) {
    diff_ids.resize(layers.len(), String::new());
    while let Some(i) = layers.iter().position(|l| l.digest == layer.digest) {
        layers.remove(i);
        diff_ids.remove(i);
    }
    layers.push(layer);
    diff_ids.push(diff_id);
}

/// The layers of a stack (bottom first) without repeats: each layer
/// where its topmost copy is (see [`push_layer`] for why that is the same
/// filesystem).
pub fn without_repeats(layers: &[LayerInfo]) -> Vec<&LayerInfo> {
    let mut seen = std::collections::BTreeSet::new();
    let mut kept: Vec<&LayerInfo> = layers
        .iter()
        .rev()
        .filter(|l| seen.insert(l.digest.as_str()))
        .collect();
    kept.reverse();
    kept
}

#[cfg(test)]
mod stack_tests {
    use super::*;

    fn layer(d: &str) -> LayerInfo {
        LayerInfo {
            digest: d.to_owned(),
            size: 1,
            media_type: String::new(),
        }
    }

    fn digests(layers: &[LayerInfo]) -> Vec<&str> {
        layers.iter().map(|l| l.digest.as_str()).collect()
    }

    #[test]
    fn a_layer_pushed_again_moves_to_the_top() {
        let mut layers = vec![layer("base"), layer("a"), layer("b")];
        let mut diff_ids = vec!["base'".into(), "a'".into(), "b'".into()];
        push_layer(&mut layers, &mut diff_ids, layer("a"), "a'".into());
        assert_eq!(digests(&layers), ["base", "b", "a"]);
        assert_eq!(diff_ids, ["base'", "b'", "a'"]);
        push_layer(&mut layers, &mut diff_ids, layer("c"), "c'".into());
        assert_eq!(digests(&layers), ["base", "b", "a", "c"]);
        assert_eq!(diff_ids.len(), 4);
    }

    #[test]
    fn repeats_keep_their_topmost_place() {
        let stack = [
            layer("base"),
            layer("e"),
            layer("x"),
            layer("e"),
            layer("e"),
        ];
        let kept: Vec<&str> = without_repeats(&stack)
            .iter()
            .map(|l| l.digest.as_str())
            .collect();
        assert_eq!(kept, ["base", "x", "e"]);
    }
}

/// An image in an account's list. Its layers are shared, by digest, with
/// every other image (of any account) that has them.
#[derive(Debug, Clone)]
pub struct Image {
    pub account_id: AccountId,
    /// The manifest's digest (for indexes: the linux/amd64 manifest's).
    pub digest: String,
    /// The reference it was last pulled by.
    pub reference: String,
    pub config_digest: String,
    pub config: ImageConfig,
    /// Bottom layer first, as in the manifest.
    pub layers: Vec<LayerInfo>,
    pub size: u64,
    pub created_at: Timestamp,
}

/// What a pull produced, before it belongs to an account.
#[derive(Debug, Clone)]
pub struct PulledImage {
    pub digest: String,
    pub reference: String,
    pub config_digest: String,
    pub config: ImageConfig,
    pub layers: Vec<LayerInfo>,
}

/// How the root filesystem of a sandbox is made.
#[derive(Debug, Clone)]
pub enum RootfsSpec {
    /// A variant from the server's config, with a snapshot's or an
    /// image's layers (topmost first, empty for a fresh VM) over it, and
    /// their defaults (the empty config for a bare variant).
    Variant {
        name: String,
        layers: Vec<PathBuf>,
        defaults: ImageConfig,
    },
    /// Unpacked image layers, topmost first, and the image's defaults.
    Layers {
        dirs: Vec<PathBuf>,
        defaults: ImageConfig,
    },
    /// An image reference the provider resolves itself
    /// ([`crate::provider::Provider::resolves_images`]).
    Reference(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullPhase {
    Resolving,
    Downloading,
    Done,
    Failed,
}

impl PullPhase {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Resolving => "resolving",
            Self::Downloading => "downloading",
            Self::Done => "done",
            Self::Failed => "failed",
        }
    }
}

#[derive(Debug, Clone)]
pub struct LayerProgress {
    pub digest: String,
    pub total: u64,
    pub done: u64,
}

#[derive(Debug, Clone)]
pub struct PullState {
    pub phase: PullPhase,
    pub reference: String,
    pub layers: Vec<LayerProgress>,
    pub image_digest: Option<String>,
    pub error: Option<String>,
}

/// A pull's progress, readable while it runs.
#[derive(Debug)]
pub struct PullProgress(Mutex<PullState>);

impl PullProgress {
    pub fn new(reference: &str) -> Self {
        Self(Mutex::new(PullState {
            phase: PullPhase::Resolving,
            reference: reference.to_owned(),
            layers: Vec::new(),
            image_digest: None,
            error: None,
        }))
    }

    fn with<R>(&self, f: impl FnOnce(&mut PullState) -> R) -> R {
        f(&mut self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner))
    }

    pub fn snapshot(&self) -> PullState {
        self.with(|s| s.clone())
    }

    pub fn start_layers(&self, layers: &[LayerInfo]) {
        self.with(|s| {
            s.phase = PullPhase::Downloading;
            s.layers = layers
                .iter()
                .map(|l| LayerProgress {
                    digest: l.digest.clone(),
                    total: l.size,
                    done: 0,
                })
                .collect();
        });
    }

    pub fn layer_done_bytes(&self, index: usize, done: u64) {
        self.with(|s| {
            if let Some(l) = s.layers.get_mut(index) {
                l.done = done;
            }
        });
    }

    pub fn finish(&self, result: Result<&str, String>) {
        self.with(|s| match result {
            Ok(digest) => {
                s.phase = PullPhase::Done;
                s.image_digest = Some(digest.to_owned());
            }
            Err(e) => {
                s.phase = PullPhase::Failed;
                s.error = Some(e);
            }
        });
    }
}

/// A tree of changes a sandbox made (an overlay upper dir) and where it
/// sits in the sandbox's filesystem (`""` for `/`, `"usr"` for `/usr`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangedTree {
    pub dir: PathBuf,
    pub at: String,
    /// The host ids the sandbox's own ids were stored as, when it ran in
    /// a user namespace of its own; a layer records the sandbox's view.
    pub ids: Option<IdShift>,
}

/// A sandbox's ids on the host: its id `n` (`n < count`) is stored as
/// host id `host_base + n`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdShift {
    pub host_base: u32,
    pub count: u32,
}

impl IdShift {
    /// The sandbox's view of host id `host`; an id outside the range
    /// (a tree that holds both layer files and the sandbox's) is already
    /// the sandbox's view and stays.
    pub fn to_sandbox(&self, host: u32) -> u32 {
        match host.checked_sub(self.host_base) {
            Some(n) if n < self.count => n,
            _ => host,
        }
    }
}
