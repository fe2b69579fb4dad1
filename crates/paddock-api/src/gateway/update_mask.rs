//! AIP-134 update masks for the gateway's PATCH methods: with
//! `?updateMask=a,b` only the named fields change (a named field missing
//! from the body is cleared to its default); an unknown path, or one
//! naming a field that cannot change, is INVALID_ARGUMENT naming it; `*`
//! names every mutable field; without a mask the fields present in the
//! body change.

use serde::Deserialize;
use serde_json::{Map, Value};

use super::error::GatewayError;
use super::list::Listing;

/// The query of a PATCH.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct UpdateQuery {
    /// Comma-separated fields to change (AIP-134); without it, the fields
    /// in the body.
    pub update_mask: Option<String>,
}

/// What a mutable field is cleared to when a mask names it and the body
/// leaves it out.
#[derive(Debug, Clone, Copy)]
pub enum Cleared {
    Text,
    Map,
    Flag,
    Count,
}

impl Cleared {
    fn value(self) -> Value {
        match self {
            Self::Text => Value::String(String::new()),
            Self::Map => Value::Object(Map::new()),
            Self::Flag => Value::Bool(false),
            Self::Count => Value::from(0),
        }
    }
}

/// The fields of one resource a PATCH may change; every other field of
/// its wire form (`listing.fields`) is immutable or output only.
pub struct Mutable<'a> {
    pub listing: &'a Listing<'a>,
    pub fields: &'a [(&'a str, Cleared)],
}

/// The body a PATCH applies: `body` cut to the mask's fields (missing
/// ones cleared), or `body` itself without a mask.
pub fn apply(
    body: Value,
    query: &UpdateQuery,
    mutable: &Mutable<'_>,
) -> Result<Value, GatewayError> {
    let Some(mask) = query
        .update_mask
        .as_deref()
        .map(str::trim)
        .filter(|m| !m.is_empty())
    else {
        return Ok(body);
    };
    let Value::Object(mut body) = body else {
        return Err(GatewayError::invalid("body", "must be a JSON object"));
    };
    let mut named: Vec<(&str, Cleared)> = Vec::new();
    for path in mask.split(',').map(str::trim) {
        if path == "*" {
            named.extend(mutable.fields.iter().copied());
            continue;
        }
        // `annotations.team` names a key of a map field: the field.
        let top = path.split('.').next().unwrap_or_default();
        match mutable.fields.iter().find(|(f, _)| *f == top) {
            Some(field) => named.push(*field),
            None if mutable.listing.fields.contains(&top) => {
                return Err(GatewayError::invalid(
                    "updateMask",
                    format!("{path:?} cannot be changed (it is set at creation or by the server)"),
                ))
            }
            None => {
                return Err(GatewayError::invalid(
                    "updateMask",
                    format!(
                        "{path:?} is not a field of {}; fields that can change: {}",
                        mutable.listing.plural,
                        mutable
                            .fields
                            .iter()
                            .map(|(f, _)| *f)
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ))
            }
        }
    }
    let mut applied = Map::new();
    for (field, cleared) in named {
        let value = body.remove(field).unwrap_or_else(|| cleared.value());
        applied.insert(field.to_owned(), value);
    }
    Ok(Value::Object(applied))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const LISTING: Listing = Listing {
        plural: "things",
        fields: &["name", "displayName", "annotations", "state"],
        default_order: "name",
    };
    const MUTABLE: Mutable = Mutable {
        listing: &LISTING,
        fields: &[
            ("displayName", Cleared::Text),
            ("annotations", Cleared::Map),
        ],
    };

    fn mask(m: &str) -> UpdateQuery {
        UpdateQuery {
            update_mask: Some(m.to_owned()),
        }
    }

    #[test]
    fn only_masked_fields_pass_and_missing_ones_clear() {
        let body = json!({"displayName": "n", "annotations": {"a": "1"}, "state": "X"});
        assert_eq!(
            apply(body.clone(), &mask("displayName"), &MUTABLE).ok(),
            Some(json!({"displayName": "n"}))
        );
        assert_eq!(
            apply(json!({}), &mask("annotations.a"), &MUTABLE).ok(),
            Some(json!({"annotations": {}}))
        );
        assert_eq!(
            apply(body.clone(), &UpdateQuery::default(), &MUTABLE).ok(),
            Some(body)
        );
        assert_eq!(
            apply(json!({}), &mask("*"), &MUTABLE).ok(),
            Some(json!({"displayName": "", "annotations": {}}))
        );
    }

    #[test]
    fn unknown_and_immutable_paths_are_refused_by_name() {
        for (m, says) in [("nope", "not a field"), ("state", "cannot be changed")] {
            match apply(json!({}), &mask(&format!("displayName,{m}")), &MUTABLE) {
                Err(GatewayError::Core(paddock_core::CoreError::InvalidArgument {
                    field,
                    message,
                })) => {
                    assert_eq!(field, "updateMask");
                    assert!(message.contains(m) && message.contains(says), "{message}");
                }
                other => panic!("{m}: {other:?}"),
            }
        }
    }
}
