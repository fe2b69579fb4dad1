//! The `local` provider: a sandbox's commands run as ordinary host
//! processes, with no isolation, in a private working directory. The
//! paddock agent serves them from the host (see
//! `ContainerProvider::start_on_host`), so exec, files and PTYs are the
//! container provider's own code paths, and the sandbox's cgroups still
//! account for every process and kill them all on stop.
//!
//! The host's environment reaches commands without anything that looks
//! like a secret (`*_API_KEY`, `*_TOKEN`, `*_SECRET`, `*_PASSWORD`) and
//! without paddock's own configuration (`PADDOCK_*`).
//!
//! Because nothing is isolated, an operator who enables it also says
//! which accounts may use it (none by default), and its agent and
//! commands run as an unprivileged host user: the operator's choice, or
//! by default a host uid of each sandbox's own (cut from the user
//! namespace ranges, so no two sandboxes share one). That user can read
//! nothing of the data dir (0700, root's); its working directory lies
//! outside it.

use std::sync::Arc;

use paddock_core::ids::VmId;
use paddock_core::model::{ChangedTree, Resources, RootfsSpec, RuntimeHandle, Vm};
use paddock_core::RuntimeError;

use crate::container::ContainerProvider;

pub struct LocalProvider {
    container: Arc<ContainerProvider>,
    /// The host environment commands start from, already scrubbed.
    base_env: Vec<(String, String)>,
    config: LocalConfig,
}

/// Who may use the `local` provider, and as whom it runs.
#[derive(Debug, Clone, Default)]
pub struct LocalConfig {
    /// The accounts (ids or names) whose sandboxes may run here.
    pub accounts: std::collections::BTreeSet<String>,
    /// The host user sandboxes run as; `None`: a uid of each sandbox's
    /// own. Never root.
    pub user: Option<paddock_agent_protocol::config::HostUser>,
}

/// Whether a variable's name says it holds a secret (or paddock's own
/// settings), so it must not reach a local sandbox.
pub fn is_secret_name(name: &str) -> bool {
    let upper = name.to_ascii_uppercase();
    upper.starts_with("PADDOCK_")
        || ["API_KEY", "TOKEN", "SECRET", "PASSWORD"]
            .iter()
            .any(|s| upper == *s || upper.ends_with(&format!("_{s}")))
}

/// `vars` without the ones [`is_secret_name`] refuses.
pub fn scrubbed_env(vars: impl IntoIterator<Item = (String, String)>) -> Vec<(String, String)> {
    vars.into_iter()
        .filter(|(k, _)| !is_secret_name(k))
        .collect()
}

impl LocalProvider {
    /// A provider over `container`'s run dirs and cgroups, starting
    /// commands from this process's environment, scrubbed.
    pub fn new(container: Arc<ContainerProvider>, config: LocalConfig) -> Self {
        Self {
            container,
            base_env: scrubbed_env(std::env::vars()),
            config,
        }
    }
}

/// Why a local sandbox cannot be suspended with its memory.
const CANNOT_SUSPEND: &str = "a local sandbox is processes on the host itself, with no \
     namespaces of their own to save: it cannot be suspended with its memory";

crate::over_container::provider_over_container!(LocalProvider {
    fn name(&self) -> &'static str {
        "local"
    }

    fn resolves_images(&self) -> bool {
        // Commands run on the host's own filesystem: there is no image.
        true
    }

    fn uses_paddock_network(&self) -> bool {
        false
    }

    fn admitted_accounts(&self) -> Option<&std::collections::BTreeSet<String>> {
        Some(&self.config.accounts)
    }

    /// Host processes have no namespaces of their own to save.
    fn can_suspend(&self, _image_variant: &str) -> Result<(), RuntimeError> {
        Err(RuntimeError::Unsupported(CANNOT_SUSPEND.into()))
    }

    fn working_dir(&self, vm: &Vm) -> Option<String> {
        Some(self.container.local_work_path(&vm.id).display().to_string())
    }

    async fn start(&self, vm: &Vm, _rootfs: &RootfsSpec) -> Result<RuntimeHandle, RuntimeError> {
        let mut env = self.base_env.clone();
        // The VM's own variables are the definition's: set on purpose,
        // so they are not scrubbed.
        for (k, v) in vm.env.iter() {
            env.retain(|(ek, _)| ek != k);
            env.push((k.clone(), v.clone()));
        }
        let cwd = vm.options.launch.as_ref().and_then(|l| l.cwd.clone());
        self.container
            .start_on_host(vm, env, cwd, self.config.user)
            .await
    }

    fn changes(&self, _vm: &Vm) -> Vec<ChangedTree> {
        // Host processes change the host: there is no layer to snapshot.
        Vec::new()
    }

    async fn update_resources(&self, id: &VmId, resources: &Resources) -> Result<(), RuntimeError> {
        self.container.update_resources(id, resources).await
    }
});

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_looking_names_are_scrubbed() {
        let env = scrubbed_env(
            [
                "OPENAI_API_KEY",
                "GITHUB_TOKEN",
                "AWS_SECRET",
                "DB_PASSWORD",
                "PADDOCK_DATA_DIR",
                "token",
                "PATH",
                "HOME",
                "TOKENIZER",
            ]
            .map(|k| (k.to_owned(), "v".to_owned())),
        );
        let names: Vec<&str> = env.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(names, ["PATH", "HOME", "TOKENIZER"]);
    }
}
