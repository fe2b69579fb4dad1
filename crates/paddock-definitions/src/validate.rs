//! The rules a definition must satisfy, each naming the field it checks.
//! All of them run, so a client learns every problem in one answer.

use crate::quantity::{parse_bytes, parse_cpu, parse_duration};
use crate::spec::{DefinitionSpec, NetworkMode, ProviderKind};
use paddock_core::model::{validate_mount_path, DomainPattern, Env, Ipv4Cidr};

/// One broken rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The field's path in the body (`resources.memory`, `volumes[1].subpath`).
    pub field: String,
    pub message: String,
}

impl Violation {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// The id of a definition: `^[a-z0-9][a-z0-9-]{0,62}$`.
pub fn validate_definition_id(id: &str) -> Result<(), Violation> {
    let mut chars = id.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    let rest_ok = chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if first_ok && rest_ok && id.len() <= 63 {
        Ok(())
    } else {
        Err(Violation::new(
            "id",
            format!(
                "{id:?} must match ^[a-z0-9][a-z0-9-]{{0,62}}$ (lowercase letters, digits and \
                 dashes, starting with a letter or digit, at most 63)"
            ),
        ))
    }
}

/// The network mode a definition's `network` means.
pub fn network_mode(spec: &DefinitionSpec) -> NetworkMode {
    spec.network
        .mode
        .unwrap_or(if spec.network.allow.is_empty() {
            NetworkMode::Block
        } else {
            NetworkMode::CidrAllowList
        })
}

/// Checks everything that needs no store: `is_reference` says whether a
/// string is a valid image reference.
pub fn validate_spec(spec: &DefinitionSpec, is_reference: &dyn Fn(&str) -> bool) -> Vec<Violation> {
    let mut out = Vec::new();
    image(spec, is_reference, &mut out);
    resources(spec, &mut out);
    network(spec, &mut out);
    if let Some(d) = &spec.lifecycle.auto_stop {
        if let Err(m) = parse_duration(d) {
            out.push(Violation::new("lifecycle.auto_stop", m));
        }
    }
    if let Some(cwd) = &spec.cwd {
        if !cwd.starts_with('/') || cwd.contains('\0') {
            out.push(Violation::new("cwd", "must be an absolute path"));
        }
    }
    volumes(spec, &mut out);
    for (k, v) in &spec.labels {
        if k.is_empty() || k.len() > 256 {
            out.push(Violation::new(
                format!("labels.{k}"),
                "keys must be 1 to 256 characters",
            ));
        }
        if v.len() > 4096 {
            out.push(Violation::new(
                format!("labels.{k}"),
                "values must be at most 4096 bytes",
            ));
        }
    }
    if let Err(e) = Env::new(spec.env.clone()) {
        out.push(Violation::new(format!("env.{}", e.name), e.reason));
    }
    for (k, v) in &spec.env {
        // Interpolating the server's own environment into a sandbox would
        // leak the host's secrets: it fails closed.
        if v.contains("{{") && v.contains("env.") {
            out.push(Violation::new(
                format!("env.{k}"),
                "{{ env.* }} interpolation is not allowed",
            ));
        }
    }
    out
}

fn image(spec: &DefinitionSpec, is_reference: &dyn Fn(&str) -> bool, out: &mut Vec<Violation>) {
    let img = &spec.image;
    match (&img.docker, &img.dockerfile) {
        (Some(_), Some(_)) => out.push(Violation::new(
            "image",
            "set either docker or dockerfile, not both",
        )),
        (None, None) if matches!(spec.provider, ProviderKind::Docker | ProviderKind::Daytona) => {
            out.push(Violation::new(
                "image",
                format!(
                    "the {} provider needs image.docker or image.dockerfile",
                    spec.provider.as_str()
                ),
            ))
        }
        _ => {}
    }
    if let Some(r) = &img.docker {
        if !is_reference(r) {
            out.push(Violation::new(
                "image.docker",
                format!("{r:?} is not a valid image reference"),
            ));
        }
    }
    if let Some(d) = &img.dockerfile {
        if d.kind != "inline" {
            out.push(Violation::new(
                "image.dockerfile.type",
                format!(
                    "{:?} is not accepted: only inline Dockerfiles are; local paths are \
                     rejected by the REST API",
                    d.kind
                ),
            ));
        } else if d.value.trim().is_empty() {
            out.push(Violation::new(
                "image.dockerfile.value",
                "must hold the Dockerfile's text",
            ));
        } else if !d.value.contains('\n')
            && !d
                .value
                .trim_start()
                .to_ascii_uppercase()
                .starts_with("FROM")
        {
            out.push(Violation::new(
                "image.dockerfile.value",
                "must be the Dockerfile's text, not a path to one",
            ));
        } else if spec.provider == ProviderKind::Container {
            if let Err(e) = paddock_core::dockerfile::parse(&d.value) {
                out.push(Violation::new("image.dockerfile.value", e.to_string()));
            }
        }
    }
}

fn resources(spec: &DefinitionSpec, out: &mut Vec<Violation>) {
    let r = &spec.resources;
    if let Some(cpu) = &r.cpu {
        match parse_cpu(cpu) {
            Ok(c) if c > 0.0 && c <= 1024.0 => {}
            Ok(_) => out.push(Violation::new(
                "resources.cpu",
                "must be more than 0 and at most 1024 cores",
            )),
            Err(m) => out.push(Violation::new("resources.cpu", m)),
        }
    }
    for (field, v) in [("resources.memory", &r.memory), ("resources.disk", &r.disk)] {
        if let Some(v) = v {
            if let Err(m) = parse_bytes(v) {
                out.push(Violation::new(field, m));
            }
        }
    }
}

fn network(spec: &DefinitionSpec, out: &mut Vec<Violation>) {
    let n = &spec.network;
    for (i, entry) in n.allow.iter().enumerate() {
        if let Ok(cidr) = Ipv4Cidr::parse(entry) {
            // `10.0.0.1/8` names a host but means a network: refused, as
            // a strict parser (Python's `ip_network`) refuses it, so the
            // stored definition says what is enforced.
            let canonical = cidr.to_string();
            if entry.contains('/') && canonical != *entry {
                out.push(Violation::new(
                    format!("network.allow[{i}]"),
                    format!("{entry:?} has host bits set (or is not written canonically); the network is {canonical:?}"),
                ));
            }
        } else if DomainPattern::parse(entry).is_err() {
            out.push(Violation::new(
                format!("network.allow[{i}]"),
                format!("{entry:?} is neither an IPv4 CIDR (10.0.0.0/8) nor a domain pattern (*.example.com)"),
            ));
        }
    }
    let mode = network_mode(spec);
    match mode {
        NetworkMode::AllowAll | NetworkMode::Block if !n.allow.is_empty() => {
            out.push(Violation::new(
                "network.allow",
                "must be empty unless mode is cidr_allow_list",
            ))
        }
        NetworkMode::CidrAllowList if n.allow.is_empty() => out.push(Violation::new(
            "network.allow",
            "cidr_allow_list needs at least one entry",
        )),
        _ => {}
    }
    match (spec.provider, mode) {
        (ProviderKind::Local, NetworkMode::Block | NetworkMode::CidrAllowList) => {
            out.push(Violation::new(
                "network",
                "the local provider runs on the host's network and cannot enforce a restricted \
                 one: use mode allow_all, or another provider",
            ))
        }
        (ProviderKind::Docker, NetworkMode::CidrAllowList) => out.push(Violation::new(
            "network",
            "the docker provider supports allow_all and block only",
        )),
        _ => {}
    }
}

fn volumes(spec: &DefinitionSpec, out: &mut Vec<Violation>) {
    if !spec.volumes.is_empty() {
        match spec.provider {
            ProviderKind::Local => out.push(Violation::new(
                "volumes",
                "local sandboxes share the host's filesystem and cannot mount volumes",
            )),
            ProviderKind::Docker | ProviderKind::Container | ProviderKind::Daytona => {}
        }
    }
    let mut seen = std::collections::BTreeSet::new();
    for (i, v) in spec.volumes.iter().enumerate() {
        match validate_mount_path(&v.mount_path) {
            Ok(p) if !seen.insert(p.clone()) => out.push(Violation::new(
                format!("volumes[{i}].mount_path"),
                format!("{p} is used by another volume"),
            )),
            Ok(_) => {}
            Err(m) => out.push(Violation::new(format!("volumes[{i}].mount_path"), m)),
        }
        if let Some(sub) = &v.subpath {
            if let Err(m) = check_subpath(sub) {
                out.push(Violation::new(format!("volumes[{i}].subpath"), m));
            }
        }
        if v.id.is_empty() {
            out.push(Violation::new(
                format!("volumes[{i}].id"),
                "must not be empty",
            ));
        }
    }
}

/// A path inside a volume: relative, without `..`.
pub fn check_subpath(sub: &str) -> Result<(), &'static str> {
    if sub.starts_with('/') {
        return Err("must be relative to the volume's root");
    }
    if sub.contains('\0') || sub.len() > 1024 {
        return Err("must be a path of at most 1024 bytes");
    }
    if sub.split('/').any(|p| p == "..") {
        return Err("must not contain '..'");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_follow_the_pattern() {
        for good in ["docker", "a", "0-x", &"a".repeat(63)] {
            assert!(validate_definition_id(good).is_ok(), "{good}");
        }
        for bad in ["", "-a", "A", "a_b", "a.b", &"a".repeat(64), "é"] {
            assert!(validate_definition_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn an_allowed_cidr_with_host_bits_is_refused_with_its_network() {
        let spec: DefinitionSpec = serde_json::from_value(serde_json::json!({
            "provider": "container",
            "image": {"docker": "busybox:1.36"},
            "resources": {"cpu": 1, "memory": "1Gi"},
            "network": {"mode": "cidr_allow_list",
                        "allow": ["10.0.0.0/8", "192.168.1.7", "10.0.0.1/8", "*.example.com"]},
            "lifecycle": {"preserve": false, "stop_on_terminal": false},
            "labels": {}, "volumes": [], "env": {}
        }))
        .expect("spec");
        let violations = validate_spec(&spec, &|_| true);
        assert_eq!(violations.len(), 1, "{violations:?}");
        assert_eq!(violations[0].field, "network.allow[2]");
        assert!(
            violations[0].message.contains("\"10.0.0.0/8\""),
            "{violations:?}"
        );
    }

    #[test]
    fn subpaths_stay_inside() {
        assert!(check_subpath("a/b").is_ok());
        assert!(check_subpath("/a").is_err());
        assert!(check_subpath("a/../b").is_err());
        assert!(check_subpath("..").is_err());
    }
}
