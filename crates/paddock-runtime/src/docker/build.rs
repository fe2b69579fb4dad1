//! Building a definition's inline Dockerfile in the engine: the context
//! is a tar holding only the Dockerfile (an inline definition has no
//! other files), and the engine's own cache makes a rebuild of the same
//! text cheap.

use bollard::query_parameters::BuildImageOptions;
use bollard::Docker;
use futures::StreamExt;
use paddock_core::RuntimeError;

use super::engine_err;

pub(super) async fn build(
    docker: &Docker,
    tag: &str,
    dockerfile: &str,
    network: bool,
) -> Result<(), RuntimeError> {
    let context = {
        let mut tar = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(0o644);
        h.set_size(dockerfile.len() as u64);
        tar.append_data(&mut h, "Dockerfile", dockerfile.as_bytes())
            .and_then(|()| tar.into_inner())
            .map_err(|e| RuntimeError::Agent(format!("pack the build context: {e}")))?
    };
    let options = BuildImageOptions {
        dockerfile: "Dockerfile".into(),
        t: Some(tag.to_owned()),
        rm: true,
        forcerm: true,
        networkmode: Some(if network { "default" } else { "none" }.into()),
        ..Default::default()
    };
    let mut progress = docker.build_image(options, None, Some(bollard::body_full(context.into())));
    let mut log = String::new();
    while let Some(item) = progress.next().await {
        match item {
            Ok(info) => {
                if let Some(line) = info.stream {
                    log.push_str(&line);
                }
                if let Some(error) = info.error {
                    return Err(RuntimeError::Invalid(format!(
                        "the Dockerfile did not build: {}",
                        error.trim()
                    )));
                }
            }
            Err(bollard::errors::Error::DockerStreamError { error }) => {
                return Err(RuntimeError::Invalid(format!(
                    "the Dockerfile did not build: {}",
                    error.trim()
                )))
            }
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 400..=499,
                message,
            }) => {
                return Err(RuntimeError::Invalid(format!(
                    "the Dockerfile did not build: {}",
                    message.trim()
                )))
            }
            Err(e) => return Err(engine_err("build the image", e)),
        }
    }
    tracing::debug!(tag, output = %log.trim(), "docker image built");
    Ok(())
}
