//! An environment definition as the definitions surface reads and writes
//! it (snake_case JSON). Types refuse unknown fields, so a misspelled
//! setting is an error instead of a silent default.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Which provider a definition's sandboxes run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ProviderKind {
    /// Host processes in a private working directory, no isolation.
    Local,
    /// A Docker Engine reached through its API.
    Docker,
    /// Stored and listed; launching needs a configured Daytona endpoint.
    Daytona,
    /// paddock's own container sandboxes.
    Container,
}

impl ProviderKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Local => "local",
            Self::Docker => "docker",
            Self::Daytona => "daytona",
            Self::Container => "container",
        }
    }
}

/// Where a sandbox's root filesystem comes from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ImageSettings {
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub docker: Option<String>,
    /// Inline sources only; a local path is refused.
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub dockerfile: Option<DockerfileSource>,
}

/// A Dockerfile source. Only `inline` is accepted over REST; the type is
/// kept open so any other source gets a clear 422 instead of a parse error.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct DockerfileSource {
    #[serde(rename = "type")]
    pub kind: String,
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ResourceSettings {
    /// Cores: a number (`2`, `1.5`) or a quantity string (`500m`).
    #[cfg_attr(
        feature = "openapi",
        schema(required = true, schema_with = openapi::number_or_string)
    )]
    pub cpu: Option<serde_json::Value>,
    /// Bytes as a quantity string: `512Mi`, `4Gi`, `16GB`.
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub memory: Option<String>,
    /// A quantity, as `memory`.
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub disk: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum NetworkMode {
    /// Everything the host can reach, except what paddock always blocks.
    AllowAll,
    /// No network at all.
    Block,
    /// Only the CIDRs and domains in `allow`.
    CidrAllowList,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct NetworkSettings {
    /// Derived from `allow` when omitted: empty is `block`, anything else
    /// `cidr_allow_list`.
    #[serde(default)]
    pub mode: Option<NetworkMode>,
    pub allow: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct LifecycleSettings {
    pub preserve: bool,
    pub stop_on_terminal: bool,
    /// How long a sandbox may sit idle before it stops (`30m`).
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub auto_stop: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct VolumeSettings {
    pub id: String,
    pub mount_path: String,
    #[serde(default)]
    pub subpath: Option<String>,
}

/// Everything a definition holds but its id: the body of a replace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct DefinitionSpec {
    pub provider: ProviderKind,
    /// The working directory of commands (honoured by `local`).
    #[serde(default)]
    pub cwd: Option<String>,
    pub image: ImageSettings,
    pub resources: ResourceSettings,
    pub network: NetworkSettings,
    pub lifecycle: LifecycleSettings,
    pub labels: BTreeMap<String, String>,
    pub volumes: Vec<VolumeSettings>,
    pub env: BTreeMap<String, String>,
}

/// A stored definition, as the surface returns it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Definition {
    pub id: String,
    pub revision: String,
    #[serde(flatten)]
    pub spec: DefinitionSpec,
}

#[cfg(feature = "openapi")]
mod openapi {
    use utoipa::openapi::schema::{ObjectBuilder, Schema, SchemaType, Type};

    /// `cpu`: a number, a quantity string, or null.
    pub fn number_or_string() -> Schema {
        ObjectBuilder::new()
            .schema_type(SchemaType::from_iter([
                Type::Number,
                Type::String,
                Type::Null,
            ]))
            .description(Some("cores: 2, 1.5 or 500m"))
            .into()
    }
}
