//! Where SQLite and PostgreSQL differ for the store: how a store is
//! named, how parameters are spelled, and the statements each writes its
//! own way.

use std::path::{Path, PathBuf};

use super::{Backend, SqlStoreError};

/// A store as `--store` names it.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum StoreUrl {
    Sqlite(PathBuf),
    Postgres(String),
}

impl StoreUrl {
    pub(super) fn parse(url: &str) -> Result<Self, SqlStoreError> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(Self::Postgres(url.to_owned()));
        }
        let path = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
            .unwrap_or(url);
        if path.is_empty() || path.contains("://") {
            return Err(SqlStoreError::Url(redacted(url)));
        }
        Ok(Self::Sqlite(PathBuf::from(path)))
    }
}

/// A path as the SQLite driver's URL reads it: percent-decoded, so the
/// characters a URL gives meaning to are escaped.
pub(super) fn url_path(path: &Path) -> String {
    let mut out = String::new();
    for byte in path.as_os_str().as_encoded_bytes() {
        match byte {
            b'%' | b'?' | b'#' | b' ' | 0..=0x1f | 0x7f.. => out.push_str(&format!("%{byte:02X}")),
            _ => out.push(char::from(*byte)),
        }
    }
    out
}

/// A database URL fit for a log or an error: without its password and
/// its parameters (which may carry one too).
pub(super) fn redacted(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.split('?').next().unwrap_or_default().to_owned();
    };
    let rest = rest.split('?').next().unwrap_or_default();
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let authority = match authority.rsplit_once('@') {
        Some((user_info, host)) => {
            let user = user_info.split(':').next().unwrap_or_default();
            format!("{user}@{host}")
        }
        None => authority.to_owned(),
    };
    format!("{scheme}://{authority}/{path}")
}

/// `text` with each `?` parameter numbered `$1`, `$2`, … as PostgreSQL
/// wants. A `?` inside a quoted literal or identifier is text, not a
/// parameter, and stays.
pub(super) fn numbered_parameters(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 16);
    let mut quote: Option<char> = None;
    let mut n = 0;
    for c in text.chars() {
        match (quote, c) {
            (None, '\'' | '"') => {
                quote = Some(c);
                out.push(c);
            }
            (Some(q), _) if q == c => {
                // A doubled quote ('it''s') closes and reopens: the same.
                quote = None;
                out.push(c);
            }
            (None, '?') => {
                n += 1;
                out.push('$');
                out.push_str(&n.to_string());
            }
            _ => out.push(c),
        }
    }
    out
}

/// Statements whose spelling differs between the backends.
impl Backend {
    /// The next VM's place in the creation order. SQLite serializes its
    /// writers, so the largest so far plus one is safe; two PostgreSQL
    /// writers would both read the same largest, so it uses a sequence.
    pub(super) fn next_vm_seq(self) -> &'static str {
        match self {
            Backend::Sqlite => "(SELECT COALESCE(MAX(seq), 0) + 1 FROM vms)",
            Backend::Postgres => "nextval('vms_seq')",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_are_numbered_outside_quotes() {
        assert_eq!(
            numbered_parameters("SELECT a FROM t WHERE b = ? AND c = '?' AND d IN (?, ?)"),
            "SELECT a FROM t WHERE b = $1 AND c = '?' AND d IN ($2, $3)"
        );
        assert_eq!(
            numbered_parameters("SELECT 'it''s?' , \"q?\" FROM t WHERE x = ?"),
            "SELECT 'it''s?' , \"q?\" FROM t WHERE x = $1"
        );
    }

    #[test]
    fn store_urls_name_a_backend() {
        assert_eq!(
            StoreUrl::parse("sqlite:/var/lib/p.db").ok(),
            Some(StoreUrl::Sqlite("/var/lib/p.db".into()))
        );
        assert_eq!(
            StoreUrl::parse("/var/lib/p.db").ok(),
            Some(StoreUrl::Sqlite("/var/lib/p.db".into()))
        );
        assert!(matches!(
            StoreUrl::parse("postgres://u:p@127.0.0.1:5432/paddock"),
            Ok(StoreUrl::Postgres(_))
        ));
        assert!(StoreUrl::parse("mysql://x/y").is_err());
        assert!(StoreUrl::parse("").is_err());
    }

    #[test]
    fn urls_are_shown_without_secrets() {
        assert_eq!(
            redacted("postgres://paddock:s3cret@db:5432/paddock?password=x"),
            "postgres://paddock@db:5432/paddock"
        );
        assert_eq!(redacted("postgres://db/p"), "postgres://db/p");
    }

    #[test]
    fn paths_are_escaped_for_the_url() {
        assert_eq!(url_path(Path::new("/a b/c?.db")), "/a%20b/c%3F.db");
    }
}
