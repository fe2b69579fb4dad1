//! Egress policy: where a VM's traffic may go. The wire shape is the
//! `instavm` SDK's (`allow_public_repos`, `allow_http`, `allow_https`,
//! `allowed_domains`, `allowed_cidrs`) plus paddock's `default` and
//! `denied_cidrs`. Evaluation, first match wins:
//!
//! 1. the operator's always-blocked ranges (host, metadata, private
//!    ranges, other VMs): refused whatever the policy says;
//! 2. `denied_cidrs`: refused;
//! 3. `allowed_cidrs`: allowed, any port;
//! 4. addresses the VM looked up, through paddock's resolver, for a name
//!    in `allowed_domains` (or a package registry with
//!    `allow_public_repos`): allowed, any port, for the answer's TTL;
//! 5. `allow_http` / `allow_https`: TCP port 80 / 443 to anywhere;
//! 6. `default`: `allow` or `deny`.
//!
//! A field left out is `false` / empty, and `default` is `deny`: `{}`
//! allows nothing, `{"default": "allow"}` everything.

use std::net::Ipv4Addr;

use serde_json::{json, Value};

/// Registries `allow_public_repos` opens: pip, npm, apt (Debian and
/// Ubuntu), apk, cargo, go and rubygems.
pub const PACKAGE_REGISTRY_DOMAINS: &[&str] = &[
    "pypi.org",
    "*.pypi.org",
    "files.pythonhosted.org",
    "registry.npmjs.org",
    "registry.yarnpkg.com",
    "deb.debian.org",
    "security.debian.org",
    "*.ubuntu.com",
    "dl-cdn.alpinelinux.org",
    "crates.io",
    "*.crates.io",
    "proxy.golang.org",
    "sum.golang.org",
    "rubygems.org",
    "*.rubygems.org",
];

/// At most this many entries in each list, so one policy stays one small
/// nftables change.
pub const MAX_POLICY_ENTRIES: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum EgressDefault {
    Allow,
    #[default]
    Deny,
}

impl EgressDefault {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Allow => "allow",
            Self::Deny => "deny",
        }
    }
}

/// An IPv4 network, normalized (`10.1.2.3/8` is `10.0.0.0/8`).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct Ipv4Cidr {
    addr: Ipv4Addr,
    prefix: u8,
}

impl Ipv4Cidr {
    pub fn new(addr: Ipv4Addr, prefix: u8) -> Option<Self> {
        if prefix > 32 {
            return None;
        }
        let mask = Self::mask_of(prefix);
        Some(Self {
            addr: Ipv4Addr::from(u32::from(addr) & mask),
            prefix,
        })
    }

    fn mask_of(prefix: u8) -> u32 {
        u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0)
    }

    /// `a.b.c.d/n`, or a bare address as a /32.
    pub fn parse(s: &str) -> Result<Self, &'static str> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => {
                let p: u8 = p
                    .parse()
                    .map_err(|_| "the prefix length must be a number from 0 to 32")?;
                (a, p)
            }
            None => (s, 32),
        };
        if addr.contains(':') {
            return Err("IPv6 ranges are not supported: VMs have IPv4 only");
        }
        let addr: Ipv4Addr = addr
            .parse()
            .map_err(|_| "must be an IPv4 address or CIDR such as 10.0.0.0/8")?;
        Self::new(addr, prefix).ok_or("the prefix length must be a number from 0 to 32")
    }

    pub fn addr(&self) -> Ipv4Addr {
        self.addr
    }

    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & Self::mask_of(self.prefix) == u32::from(self.addr)
    }

    /// The `n`th address of the network (0 is the network address).
    pub fn nth(&self, n: u32) -> Option<Ipv4Addr> {
        let size = 1u64 << (32 - u32::from(self.prefix));
        (u64::from(n) < size).then(|| Ipv4Addr::from(u32::from(self.addr) + n))
    }

    /// How many addresses it holds.
    pub fn size(&self) -> u64 {
        1u64 << (32 - u32::from(self.prefix))
    }
}

impl std::fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// `example.com` (that name only) or `*.example.com` (any name below it,
/// not `example.com` itself). Lowercase, without a trailing dot.
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct DomainPattern(String);

impl DomainPattern {
    pub fn parse(s: &str) -> Result<Self, &'static str> {
        let lower = s.trim_end_matches('.').to_ascii_lowercase();
        let name = lower.strip_prefix("*.").unwrap_or(&lower);
        if name.len() > 253 || !name.contains('.') {
            return Err("must be a domain such as example.com or *.example.com");
        }
        let valid_label = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        };
        if !name.split('.').all(valid_label) {
            return Err("must be a domain such as example.com or *.example.com (a wildcard only as the whole first label)");
        }
        Ok(Self(lower))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `name` (any case, with or without the trailing dot) is
    /// allowed by this pattern.
    pub fn matches(&self, name: &str) -> bool {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        match self.0.strip_prefix("*.") {
            Some(parent) => name
                .strip_suffix(parent)
                .is_some_and(|head| head.len() > 1 && head.ends_with('.')),
            None => name == self.0,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct EgressPolicy {
    pub default: EgressDefault,
    pub allow_http: bool,
    pub allow_https: bool,
    pub allow_public_repos: bool,
    pub allowed_domains: Vec<DomainPattern>,
    pub allowed_cidrs: Vec<Ipv4Cidr>,
    pub denied_cidrs: Vec<Ipv4Cidr>,
}

/// What was wrong with a policy, and where (`allowed_cidrs[2]`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct PolicyError {
    pub field: String,
    pub message: String,
}

impl EgressPolicy {
    pub fn allow_all() -> Self {
        Self {
            default: EgressDefault::Allow,
            ..Self::default()
        }
    }

    /// Reads a policy from its JSON form, naming any wrong field under
    /// `prefix` (`egress_policy.allowed_cidrs[1]`). Unknown fields are
    /// refused, so a misspelled rule never silently allows nothing.
    pub fn from_json(value: &Value, prefix: &str) -> Result<Self, PolicyError> {
        let at = |field: &str| {
            if prefix.is_empty() {
                field.to_owned()
            } else {
                format!("{prefix}.{field}")
            }
        };
        let err = |field: String, message: &str| PolicyError {
            field,
            message: message.to_owned(),
        };
        let Value::Object(obj) = value else {
            return Err(err(prefix.to_owned(), "must be an object"));
        };
        let mut policy = Self::default();
        for (key, v) in obj {
            let flag = |v: &Value| match v {
                Value::Bool(b) => Ok(*b),
                Value::Null => Ok(false),
                _ => Err(err(at(key), "must be true or false")),
            };
            match key.as_str() {
                "default" => {
                    policy.default = match v {
                        Value::Null => EgressDefault::Deny,
                        Value::String(s) if s == "allow" => EgressDefault::Allow,
                        Value::String(s) if s == "deny" => EgressDefault::Deny,
                        _ => return Err(err(at(key), "must be \"allow\" or \"deny\"")),
                    }
                }
                "allow_http" => policy.allow_http = flag(v)?,
                "allow_https" => policy.allow_https = flag(v)?,
                "allow_public_repos" | "allow_package_managers" => {
                    policy.allow_public_repos = flag(v)?
                }
                "allowed_domains" => {
                    policy.allowed_domains = list(v, &at(key), DomainPattern::parse)?;
                }
                "allowed_cidrs" => policy.allowed_cidrs = list(v, &at(key), Ipv4Cidr::parse)?,
                "denied_cidrs" => policy.denied_cidrs = list(v, &at(key), Ipv4Cidr::parse)?,
                _ => return Err(err(at(key), "unknown egress policy field")),
            }
        }
        Ok(policy)
    }

    /// The canonical JSON form: what is stored and what the API returns.
    pub fn to_json(&self) -> Value {
        let strings =
            |items: Vec<String>| Value::Array(items.into_iter().map(Value::from).collect());
        json!({
            "default": self.default.as_str(),
            "allow_http": self.allow_http,
            "allow_https": self.allow_https,
            "allow_public_repos": self.allow_public_repos,
            "allowed_domains": strings(self.allowed_domains.iter().map(|d| d.as_str().to_owned()).collect()),
            "allowed_cidrs": strings(self.allowed_cidrs.iter().map(ToString::to_string).collect()),
            "denied_cidrs": strings(self.denied_cidrs.iter().map(ToString::to_string).collect()),
        })
    }

    /// The domains whose looked-up addresses are allowed.
    pub fn domain_patterns(&self) -> Vec<DomainPattern> {
        let mut all = self.allowed_domains.clone();
        if self.allow_public_repos {
            all.extend(
                PACKAGE_REGISTRY_DOMAINS
                    .iter()
                    .filter_map(|d| DomainPattern::parse(d).ok()),
            );
        }
        all
    }

    /// Whether a lookup of `name` gets an answer. Names are answered
    /// whenever the policy lets traffic go somewhere not bound to a
    /// name (default allow, or HTTP/HTTPS anywhere); otherwise only the
    /// allowed domains resolve.
    pub fn resolves(&self, name: &str) -> bool {
        self.default == EgressDefault::Allow
            || self.allow_http
            || self.allow_https
            || self.domain_allowed(name)
    }

    /// Whether the addresses `name` resolves to become reachable.
    pub fn domain_allowed(&self, name: &str) -> bool {
        self.domain_patterns().iter().any(|p| p.matches(name))
    }
}

fn list<T>(
    v: &Value,
    field: &str,
    parse: impl Fn(&str) -> Result<T, &'static str>,
) -> Result<Vec<T>, PolicyError> {
    let items = match v {
        Value::Null => return Ok(Vec::new()),
        Value::Array(items) => items,
        _ => {
            return Err(PolicyError {
                field: field.to_owned(),
                message: "must be a list of strings".into(),
            })
        }
    };
    if items.len() > MAX_POLICY_ENTRIES {
        return Err(PolicyError {
            field: field.to_owned(),
            message: format!("at most {MAX_POLICY_ENTRIES} entries"),
        });
    }
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let parsed = item
            .as_str()
            .ok_or("must be a string")
            .and_then(&parse)
            .map_err(|m| PolicyError {
                field: format!("{field}[{i}]"),
                message: m.to_owned(),
            })?;
        out.push(parsed);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs_normalize_and_match() {
        let c = Ipv4Cidr::parse("10.1.2.3/8").expect("valid");
        assert_eq!(c.to_string(), "10.0.0.0/8");
        assert!(c.contains("10.200.0.1".parse().expect("ip")));
        assert!(!c.contains("11.0.0.1".parse().expect("ip")));
        assert_eq!(
            Ipv4Cidr::parse("1.2.3.4").expect("valid").to_string(),
            "1.2.3.4/32"
        );
        assert_eq!(
            Ipv4Cidr::parse("0.0.0.0/0").expect("valid").size(),
            1u64 << 32
        );
        for bad in ["10.0.0.0/33", "10.0.0/8", "::1/128", "x", "10.0.0.0/x"] {
            assert!(Ipv4Cidr::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn domain_patterns_match_exactly_or_below() {
        let exact = DomainPattern::parse("PyPI.org.").expect("valid");
        assert!(exact.matches("pypi.org"));
        assert!(!exact.matches("files.pypi.org"));
        let wild = DomainPattern::parse("*.pypi.org").expect("valid");
        assert!(wild.matches("files.pypi.org."));
        assert!(wild.matches("a.b.pypi.org"));
        assert!(!wild.matches("pypi.org"));
        assert!(!wild.matches("evilpypi.org"));
        for bad in [
            "", "com", "*.com", "a..b", "-a.com", "a*.b.com", "*", "a b.com",
        ] {
            assert!(DomainPattern::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn policy_parses_and_names_the_bad_field() {
        let p = EgressPolicy::from_json(
            &json!({"allow_https": true, "allowed_domains": ["*.example.com"], "allowed_cidrs": ["203.0.113.0/24"]}),
            "egress_policy",
        )
        .expect("valid");
        assert_eq!(p.default, EgressDefault::Deny);
        assert!(p.allow_https && !p.allow_http);
        let e = EgressPolicy::from_json(
            &json!({"allowed_cidrs": ["1.2.3.0/24", "nope"]}),
            "egress_policy",
        )
        .expect_err("invalid");
        assert_eq!(e.field, "egress_policy.allowed_cidrs[1]");
        let e = EgressPolicy::from_json(&json!({"alow_http": true}), "").expect_err("unknown");
        assert_eq!(e.field, "alow_http");
        let e = EgressPolicy::from_json(&json!({"default": "maybe"}), "").expect_err("bad");
        assert_eq!(e.field, "default");
        assert!(EgressPolicy::from_json(&json!([]), "p").is_err());
    }

    #[test]
    fn json_round_trips() {
        let p = EgressPolicy::from_json(
            &json!({"default": "allow", "denied_cidrs": ["198.51.100.7"], "allow_package_managers": true}),
            "",
        )
        .expect("valid");
        assert!(p.allow_public_repos);
        assert_eq!(EgressPolicy::from_json(&p.to_json(), "").expect("again"), p);
    }

    #[test]
    fn resolving_follows_the_policy() {
        let deny =
            EgressPolicy::from_json(&json!({"allowed_domains": ["*.ok.test"]}), "").expect("valid");
        assert!(deny.resolves("a.ok.test"));
        assert!(!deny.resolves("other.test"));
        let web = EgressPolicy::from_json(&json!({"allow_https": true}), "").expect("valid");
        assert!(web.resolves("other.test"));
        assert!(!web.domain_allowed("other.test"));
        let repos =
            EgressPolicy::from_json(&json!({"allow_public_repos": true}), "").expect("valid");
        assert!(repos.domain_allowed("files.pythonhosted.org"));
    }
}
