//! The gateway's input rules: resource ids (AIP-122), display names, and
//! annotations (Kubernetes' syntax, `fireworks.ai/` reserved).

use std::collections::BTreeMap;

use paddock_core::error::CoreError;
use paddock_core::model::Principal;

/// What a PATCH may change on any gateway resource: its display name, its
/// annotations and (on environments and jobs) whether it is shared.
#[derive(Debug, Clone, Default)]
pub struct MetadataPatch {
    pub display_name: Option<String>,
    pub annotations: Option<BTreeMap<String, String>>,
    pub shared: Option<bool>,
}

/// A resource's fields a [`MetadataPatch`] changes.
pub(crate) struct PatchTarget<'a> {
    pub display_name: &'a mut String,
    pub annotations: &'a mut BTreeMap<String, String>,
    /// `(shared, created_by)` where the resource can be shared.
    pub sharing: Option<(&'a mut bool, &'a str)>,
}

impl MetadataPatch {
    /// Checks and applies the patch; only a resource's creator may change
    /// whether it is shared. Nothing changes unless all of it is valid.
    pub(crate) fn apply(self, who: &Principal, target: PatchTarget<'_>) -> Result<(), CoreError> {
        if let Some(n) = &self.display_name {
            validate_display_name("displayName", n)?;
        }
        if let Some(a) = &self.annotations {
            validate_annotations("annotations", a)?;
        }
        let sharing = match (self.shared, target.sharing) {
            (Some(shared), Some((current, created_by))) => {
                if shared != *current && created_by != who.user_email {
                    return Err(CoreError::PermissionDenied(
                        "only its creator may change whether it is shared".into(),
                    ));
                }
                Some((shared, current))
            }
            (Some(_), None) => return Err(CoreError::invalid("shared", "cannot be set here")),
            (None, _) => None,
        };
        if let Some(n) = self.display_name {
            *target.display_name = n;
        }
        if let Some(a) = self.annotations {
            *target.annotations = a;
        }
        if let Some((shared, current)) = sharing {
            *current = shared;
        }
        Ok(())
    }
}

/// `^[a-z]([a-z0-9-]{0,61}[a-z0-9])?$`: a DNS label starting with a letter.
pub fn validate_resource_id(field: &str, id: &str) -> Result<(), CoreError> {
    let ok = (1..=63).contains(&id.len())
        && id.starts_with(|c: char| c.is_ascii_lowercase())
        && !id.ends_with('-')
        && id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if ok {
        Ok(())
    } else {
        Err(CoreError::invalid(
            field,
            format!(
                "{id:?} is not a valid id: 1 to 63 lowercase letters, digits or '-', \
                 starting with a letter and not ending with '-'"
            ),
        ))
    }
}

/// Fewer than 64 characters.
pub fn validate_display_name(field: &str, name: &str) -> Result<(), CoreError> {
    if name.chars().count() >= 64 {
        return Err(CoreError::invalid(
            field,
            "must be fewer than 64 characters",
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(CoreError::invalid(
            field,
            "must not contain control characters",
        ));
    }
    Ok(())
}

const RESERVED_PREFIX: &str = "fireworks.ai/";
/// Kubernetes' limit on all of an object's annotations together.
const MAX_ANNOTATIONS_BYTES: usize = 256 * 1024;

/// Kubernetes' annotation rules: a key is an optional DNS-subdomain prefix
/// and `/`, then a name of at most 63 characters, alphanumeric at both
/// ends with `-`, `_` and `.` inside; keys and values together at most
/// 256 KiB.
pub fn validate_annotations(
    field: &str,
    annotations: &BTreeMap<String, String>,
) -> Result<(), CoreError> {
    let mut total = 0;
    for (key, value) in annotations {
        let at = format!("{field}.{key}");
        if key.starts_with(RESERVED_PREFIX) {
            return Err(CoreError::invalid(
                &at,
                format!("the {RESERVED_PREFIX:?} prefix is reserved"),
            ));
        }
        let (prefix, name) = match key.rsplit_once('/') {
            Some((p, n)) => (Some(p), n),
            None => (None, key.as_str()),
        };
        if let Some(p) = prefix {
            if !is_dns_subdomain(p) {
                return Err(CoreError::invalid(
                    &at,
                    "the key's prefix must be a DNS subdomain (lowercase, at most 253 characters)",
                ));
            }
        }
        if !is_qualified_name(name) {
            return Err(CoreError::invalid(
                &at,
                "the key's name must be 1 to 63 characters, alphanumeric at both ends, \
                 with '-', '_' or '.' between",
            ));
        }
        total += key.len() + value.len();
    }
    if total > MAX_ANNOTATIONS_BYTES {
        return Err(CoreError::invalid(
            field,
            format!("annotations may total at most {MAX_ANNOTATIONS_BYTES} bytes"),
        ));
    }
    Ok(())
}

fn is_qualified_name(name: &str) -> bool {
    let b = name.as_bytes();
    (1..=63).contains(&b.len())
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

fn is_dns_subdomain(s: &str) -> bool {
    (1..=253).contains(&s.len())
        && s.split('.').all(|label| {
            let b = label.as_bytes();
            (1..=63).contains(&b.len())
                && b[0].is_ascii_alphanumeric()
                && b[b.len() - 1].is_ascii_alphanumeric()
                && b.iter()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn annotations(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn ids_follow_aip_122() {
        for ok in ["a", "my-env", "e1", &"a".repeat(63)] {
            assert!(validate_resource_id("id", ok).is_ok(), "{ok}");
        }
        for bad in ["", "1a", "A", "a-", "a_b", "a.b", &"a".repeat(64)] {
            assert!(validate_resource_id("id", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn annotation_keys_follow_kubernetes() {
        let ok = annotations(&[("team", "x"), ("example.com/owner", "y"), ("a.b-c_d", "")]);
        assert!(validate_annotations("annotations", &ok).is_ok());
        for bad in [
            "",
            "-a",
            "a-",
            "Example.com/x",
            "a/b/c",
            "x/",
            "fireworks.ai/x",
            &"k".repeat(64),
        ] {
            let err = validate_annotations("annotations", &annotations(&[(bad, "v")]));
            assert!(err.is_err(), "{bad}");
        }
        let err = validate_annotations("annotations", &annotations(&[("fireworks.ai/x", "v")]))
            .expect_err("reserved");
        assert!(err.to_string().contains("reserved"), "{err}");
    }

    #[test]
    fn annotations_are_bounded_in_size() {
        let big = annotations(&[("k", &"v".repeat(MAX_ANNOTATIONS_BYTES))]);
        assert!(validate_annotations("annotations", &big).is_err());
    }
}
