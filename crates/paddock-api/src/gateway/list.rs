//! AIP-style listing over a resource's wire form: `filter` (AIP-160),
//! `orderBy` (AIP-132), `pageSize`/`pageToken` and `readMask`.
//!
//! Filtering and ordering run on the JSON the client sees, so every field
//! a client can read it can filter and sort by, under the same (camelCase)
//! name; snake_case names are accepted too. The AIP-160 parser is written
//! here: the crates that offer one are young single-maintainer 0.1
//! releases whose parsers unwrap on input, and a filter is user input.
//!
//! Page tokens are keyset tokens: the sort key of the last item returned
//! and a fingerprint of the query, so a walk neither repeats nor skips an
//! item when others are added or removed meanwhile.

use std::cmp::Ordering;

use base64::Engine;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use super::error::GatewayError;

pub const DEFAULT_PAGE_SIZE: usize = 50;
pub const MAX_PAGE_SIZE: usize = 200;

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Default 50, at most 200 (larger values are clamped).
    pub page_size: Option<i64>,
    pub page_token: Option<String>,
    /// An AIP-160 filter, e.g. `state = CONNECTED AND annotations.team = "ml"`.
    pub filter: Option<String>,
    /// Comma-separated fields, each optionally followed by ` desc`.
    pub order_by: Option<String>,
    /// Comma-separated fields to return; empty or `*` for all.
    pub read_mask: Option<String>,
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct GetQuery {
    /// Comma-separated fields to return; empty or `*` for all.
    pub read_mask: Option<String>,
}

/// What a resource kind offers listing: its fields and default order.
pub struct Listing<'a> {
    /// The list response's key (`environments`).
    pub plural: &'a str,
    /// Every top-level field of the wire form.
    pub fields: &'a [&'a str],
    pub default_order: &'a str,
}

/// `snake_case` → `camelCase`; camelCase is left as is.
pub fn camel(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    let mut upper = false;
    for c in segment.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

/// A field path, checked against the kind's fields at its root.
fn field_path(listing: &Listing, raw: &str, param: &str) -> Result<Vec<String>, GatewayError> {
    let mut parts = raw.split('.');
    let root = camel(parts.next().unwrap_or_default());
    if !listing.fields.contains(&root.as_str()) {
        return Err(GatewayError::invalid(
            param,
            format!(
                "unknown field {raw:?}; fields: {}",
                listing.fields.join(", ")
            ),
        ));
    }
    // Below the root, map keys (annotations) are taken as written.
    let mut path = vec![root];
    path.extend(parts.map(str::to_owned));
    Ok(path)
}

fn lookup<'v>(v: &'v Value, path: &[String]) -> Option<&'v Value> {
    path.iter().try_fold(v, |v, k| {
        v.get(k.as_str()).or_else(|| v.get(camel(k).as_str()))
    })
}

// ---- filter ---------------------------------------------------------------

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Word(String),
    Text(String),
    Op(&'static str),
    Open,
    Close,
}

fn tokenize(s: &str) -> Result<Vec<Token>, String> {
    let mut out = Vec::new();
    let chars: Vec<char> = s.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            c if c.is_whitespace() => i += 1,
            '(' => {
                out.push(Token::Open);
                i += 1;
            }
            ')' => {
                out.push(Token::Close);
                i += 1;
            }
            '"' | '\'' => {
                let mut text = String::new();
                i += 1;
                loop {
                    match chars.get(i) {
                        None => return Err("unterminated string".into()),
                        Some('\\') => {
                            if let Some(n) = chars.get(i + 1) {
                                text.push(*n);
                            }
                            i += 2;
                        }
                        Some(q) if *q == c => {
                            i += 1;
                            break;
                        }
                        Some(other) => {
                            text.push(*other);
                            i += 1;
                        }
                    }
                }
                out.push(Token::Text(text));
            }
            '<' | '>' | '!' | '=' | ':' => {
                let two: String = chars[i..chars.len().min(i + 2)].iter().collect();
                let op = match two.as_str() {
                    "<=" => "<=",
                    ">=" => ">=",
                    "!=" => "!=",
                    _ => match c {
                        '<' => "<",
                        '>' => ">",
                        '=' => "=",
                        ':' => ":",
                        _ => return Err("'!' must be followed by '='".into()),
                    },
                };
                i += op.len();
                out.push(Token::Op(op));
            }
            _ => {
                let start = i;
                while i < chars.len()
                    && !chars[i].is_whitespace()
                    && !matches!(
                        chars[i],
                        '(' | ')' | '<' | '>' | '!' | '=' | ':' | '"' | '\''
                    )
                {
                    i += 1;
                }
                out.push(Token::Word(chars[start..i].iter().collect()));
            }
        }
    }
    Ok(out)
}

#[derive(Debug)]
enum Expr {
    And(Vec<Expr>),
    Or(Vec<Expr>),
    Not(Box<Expr>),
    Compare {
        path: Vec<String>,
        op: &'static str,
        value: Literal,
    },
    /// A bare value: matches when any text field contains it.
    Search(String),
}

#[derive(Debug, Clone)]
struct Literal {
    text: String,
    quoted: bool,
}

struct Parser<'a> {
    tokens: Vec<Token>,
    at: usize,
    listing: &'a Listing<'a>,
    depth: usize,
}

const MAX_FILTER_DEPTH: usize = 32;

impl Parser<'_> {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.at)
    }

    fn is_word(&self, w: &str) -> bool {
        matches!(self.peek(), Some(Token::Word(x)) if x == w)
    }

    /// expression := factor { [AND] factor }  (juxtaposition is AND)
    fn expression(&mut self) -> Result<Expr, GatewayError> {
        self.depth += 1;
        if self.depth > MAX_FILTER_DEPTH {
            return Err(GatewayError::invalid("filter", "nested too deeply"));
        }
        let mut all = vec![self.factor()?];
        loop {
            match self.peek() {
                None | Some(Token::Close) => break,
                _ => {
                    if self.is_word("AND") {
                        self.at += 1;
                    }
                    all.push(self.factor()?);
                }
            }
        }
        self.depth -= 1;
        Ok(if all.len() == 1 {
            all.remove(0)
        } else {
            Expr::And(all)
        })
    }

    /// factor := term { OR term }  (OR binds tighter than AND in AIP-160)
    fn factor(&mut self) -> Result<Expr, GatewayError> {
        let mut any = vec![self.term()?];
        while self.is_word("OR") {
            self.at += 1;
            any.push(self.term()?);
        }
        Ok(if any.len() == 1 {
            any.remove(0)
        } else {
            Expr::Or(any)
        })
    }

    /// term := [NOT | -] simple
    fn term(&mut self) -> Result<Expr, GatewayError> {
        if self.is_word("NOT") {
            self.at += 1;
            return Ok(Expr::Not(Box::new(self.simple()?)));
        }
        if let Some(Token::Word(w)) = self.peek() {
            if let Some(rest) = w.strip_prefix('-').filter(|r| !r.is_empty()) {
                let rest = rest.to_owned();
                self.tokens[self.at] = Token::Word(rest);
                return Ok(Expr::Not(Box::new(self.simple()?)));
            }
        }
        self.simple()
    }

    fn simple(&mut self) -> Result<Expr, GatewayError> {
        match self.peek().cloned() {
            Some(Token::Open) => {
                self.at += 1;
                let e = self.expression()?;
                if self.peek() != Some(&Token::Close) {
                    return Err(GatewayError::invalid("filter", "missing ')'"));
                }
                self.at += 1;
                Ok(e)
            }
            Some(Token::Word(w)) => {
                self.at += 1;
                match self.peek().cloned() {
                    Some(Token::Op(op)) => {
                        self.at += 1;
                        let value = match self.peek().cloned() {
                            Some(Token::Word(v)) => Literal {
                                text: v,
                                quoted: false,
                            },
                            Some(Token::Text(v)) => Literal {
                                text: v,
                                quoted: true,
                            },
                            _ => {
                                return Err(GatewayError::invalid(
                                    "filter",
                                    format!("a value must follow {w} {op}"),
                                ))
                            }
                        };
                        self.at += 1;
                        if matches!(self.peek(), Some(Token::Open)) {
                            return Err(GatewayError::invalid(
                                "filter",
                                "functions are not supported",
                            ));
                        }
                        let path = field_path(self.listing, &w, "filter")?;
                        Ok(Expr::Compare { path, op, value })
                    }
                    Some(Token::Open) => Err(GatewayError::invalid(
                        "filter",
                        "functions are not supported",
                    )),
                    _ => Ok(Expr::Search(w)),
                }
            }
            Some(Token::Text(t)) => {
                self.at += 1;
                Ok(Expr::Search(t))
            }
            Some(Token::Op(op)) => Err(GatewayError::invalid(
                "filter",
                format!("unexpected {op:?}"),
            )),
            Some(Token::Close) => Err(GatewayError::invalid("filter", "unexpected ')'")),
            None => Err(GatewayError::invalid("filter", "ends too early")),
        }
    }
}

/// A parsed filter.
pub struct Filter(Option<Expr>);

impl Filter {
    pub fn parse(listing: &Listing, raw: Option<&str>) -> Result<Self, GatewayError> {
        let raw = raw.unwrap_or_default().trim();
        if raw.is_empty() {
            return Ok(Self(None));
        }
        if raw.len() > 4096 {
            return Err(GatewayError::invalid(
                "filter",
                "must be at most 4096 characters",
            ));
        }
        let tokens = tokenize(raw).map_err(|m| GatewayError::invalid("filter", m))?;
        let mut p = Parser {
            tokens,
            at: 0,
            listing,
            depth: 0,
        };
        let e = p.expression()?;
        if p.at != p.tokens.len() {
            return Err(GatewayError::invalid("filter", "unexpected ')'"));
        }
        Ok(Self(Some(e)))
    }

    pub fn matches(&self, item: &Value) -> bool {
        self.0.as_ref().is_none_or(|e| eval(e, item))
    }
}

fn eval(e: &Expr, item: &Value) -> bool {
    match e {
        Expr::And(all) => all.iter().all(|e| eval(e, item)),
        Expr::Or(any) => any.iter().any(|e| eval(e, item)),
        Expr::Not(e) => !eval(e, item),
        Expr::Search(t) => contains_text(item, t),
        Expr::Compare { path, op, value } => {
            let field = lookup(item, path);
            compare(field, op, value)
        }
    }
}

fn contains_text(v: &Value, t: &str) -> bool {
    match v {
        Value::String(s) => s.contains(t),
        Value::Array(a) => a.iter().any(|v| contains_text(v, t)),
        Value::Object(o) => o.values().any(|v| contains_text(v, t)),
        _ => false,
    }
}

/// `*` at either end of a value is a wildcard.
fn glob_eq(s: &str, pattern: &str) -> bool {
    match (pattern.strip_prefix('*'), pattern.strip_suffix('*')) {
        (Some(rest), _) if rest.ends_with('*') && !rest.is_empty() => {
            s.contains(&rest[..rest.len() - 1])
        }
        (Some(rest), _) => s.ends_with(rest),
        (None, Some(rest)) => s.starts_with(rest),
        (None, None) => s == pattern,
    }
}

fn rfc3339(s: &str) -> Option<time::OffsetDateTime> {
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()
}

fn compare(field: Option<&Value>, op: &str, lit: &Literal) -> bool {
    let Some(field) = field else {
        // An absent field equals only its default (empty, zero, false).
        return match op {
            "=" => lit.text.is_empty() || lit.text == "0" || lit.text == "false",
            "!=" => !(lit.text.is_empty() || lit.text == "0" || lit.text == "false"),
            _ => false,
        };
    };
    if op == ":" {
        return match field {
            Value::Object(o) => lit.text == "*" || o.contains_key(&lit.text),
            Value::Array(a) => a.iter().any(|v| compare(Some(v), "=", lit)),
            Value::Null => false,
            Value::String(s) => lit.text == "*" || glob_eq(s, &lit.text),
            other => compare(Some(other), "=", lit),
        };
    }
    let ord = match field {
        Value::Number(n) => match (n.as_f64(), lit.text.parse::<f64>()) {
            (Some(a), Ok(b)) => a.partial_cmp(&b),
            _ => None,
        },
        Value::Bool(b) => match lit.text.as_str() {
            "true" => Some(b.cmp(&true)),
            "false" => Some(b.cmp(&false)),
            _ => None,
        },
        Value::String(s) => {
            if matches!(op, "=" | "!=") && lit.text.contains('*') {
                let eq = glob_eq(s, &lit.text);
                return (op == "=") == eq;
            }
            match (rfc3339(s), rfc3339(&lit.text)) {
                (Some(a), Some(b)) => Some(a.cmp(&b)),
                _ => Some(s.as_str().cmp(lit.text.as_str())),
            }
        }
        Value::Null => Some(if lit.text.is_empty() {
            Ordering::Equal
        } else {
            Ordering::Less
        }),
        _ => None,
    };
    let _ = lit.quoted;
    match (op, ord) {
        ("=", Some(o)) => o == Ordering::Equal,
        ("!=", Some(o)) => o != Ordering::Equal,
        ("!=", None) => true,
        ("<", Some(o)) => o == Ordering::Less,
        ("<=", Some(o)) => o != Ordering::Greater,
        (">", Some(o)) => o == Ordering::Greater,
        (">=", Some(o)) => o != Ordering::Less,
        _ => false,
    }
}

// ---- order ----------------------------------------------------------------

struct OrderKey {
    path: Vec<String>,
    desc: bool,
}

fn parse_order(listing: &Listing, raw: Option<&str>) -> Result<Vec<OrderKey>, GatewayError> {
    let raw = raw
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .unwrap_or(listing.default_order);
    let mut keys = Vec::new();
    for part in raw.split(',') {
        let words: Vec<&str> = part.split_whitespace().collect();
        let (field, desc) = match words.as_slice() {
            [f] => (*f, false),
            [f, d] if d.eq_ignore_ascii_case("desc") => (*f, true),
            [f, a] if a.eq_ignore_ascii_case("asc") => (*f, false),
            _ => {
                return Err(GatewayError::invalid(
                    "orderBy",
                    format!("{part:?} is not `field` or `field desc`"),
                ))
            }
        };
        keys.push(OrderKey {
            path: field_path(listing, field, "orderBy")?,
            desc,
        });
    }
    Ok(keys)
}

fn cmp_values(a: Option<&Value>, b: Option<&Value>) -> Ordering {
    match (a, b) {
        (None | Some(Value::Null), None | Some(Value::Null)) => Ordering::Equal,
        (None | Some(Value::Null), _) => Ordering::Less,
        (_, None | Some(Value::Null)) => Ordering::Greater,
        (Some(Value::Number(x)), Some(Value::Number(y))) => x
            .as_f64()
            .partial_cmp(&y.as_f64())
            .unwrap_or(Ordering::Equal),
        (Some(Value::Bool(x)), Some(Value::Bool(y))) => x.cmp(y),
        (Some(Value::String(x)), Some(Value::String(y))) => match (rfc3339(x), rfc3339(y)) {
            (Some(p), Some(q)) => p.cmp(&q),
            _ => x.cmp(y),
        },
        (Some(x), Some(y)) => x.to_string().cmp(&y.to_string()),
    }
}

/// The sort key of an item: its values at the order's paths, then its
/// name (unique), so the order is total.
fn sort_key(item: &Value, keys: &[OrderKey]) -> Vec<Value> {
    keys.iter()
        .map(|k| lookup(item, &k.path).cloned().unwrap_or(Value::Null))
        .chain(std::iter::once(
            item.get("name").cloned().unwrap_or(Value::Null),
        ))
        .collect()
}

fn cmp_keys(a: &[Value], b: &[Value], keys: &[OrderKey]) -> Ordering {
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        let o = cmp_values(Some(x), Some(y));
        let o = if keys.get(i).is_some_and(|k| k.desc) {
            o.reverse()
        } else {
            o
        };
        if o != Ordering::Equal {
            return o;
        }
    }
    Ordering::Equal
}

// ---- read mask ------------------------------------------------------------

/// Keeps the fields a read mask names (all for none or `*`).
pub fn apply_read_mask(
    listing: &Listing,
    item: Value,
    mask: Option<&str>,
) -> Result<Value, GatewayError> {
    let mask = mask.map(str::trim).unwrap_or_default();
    if mask.is_empty() || mask == "*" {
        return Ok(item);
    }
    let Value::Object(full) = item else {
        return Ok(item);
    };
    let mut out = Map::new();
    for raw in mask.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let path = field_path(listing, raw, "readMask")?;
        let Some(v) = lookup(&Value::Object(full.clone()), &path).cloned() else {
            continue;
        };
        // Rebuild the nesting of a sub-field path.
        let mut slot = &mut out;
        for (i, k) in path.iter().enumerate() {
            if i + 1 == path.len() {
                slot.insert(k.clone(), v.clone());
            } else {
                let next = slot
                    .entry(k.clone())
                    .or_insert_with(|| Value::Object(Map::new()));
                if !next.is_object() {
                    *next = Value::Object(Map::new());
                }
                let Value::Object(m) = next else { break };
                slot = m;
            }
        }
    }
    Ok(Value::Object(out))
}

// ---- pages ----------------------------------------------------------------

fn fingerprint(q: &ListQuery) -> String {
    let mut h = Sha256::new();
    h.update(q.filter.as_deref().unwrap_or_default().trim());
    h.update([0]);
    h.update(q.order_by.as_deref().unwrap_or_default().trim());
    hex::encode(&h.finalize()[..8])
}

fn encode_token(after: &[Value], q: &ListQuery) -> String {
    let raw = json!({"after": after, "query": fingerprint(q)}).to_string();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
}

fn decode_token(token: &str, q: &ListQuery) -> Result<Vec<Value>, GatewayError> {
    let bad = || GatewayError::invalid("pageToken", "is not a token this list returned");
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|_| bad())?;
    let v: Value = serde_json::from_slice(&raw).map_err(|_| bad())?;
    if v.get("query").and_then(Value::as_str) != Some(fingerprint(q).as_str()) {
        return Err(GatewayError::invalid(
            "pageToken",
            "was returned for another filter or orderBy; list with the same parameters",
        ));
    }
    match v.get("after") {
        Some(Value::Array(a)) => Ok(a.clone()),
        _ => Err(bad()),
    }
}

/// One page of a list, its items masked; each kind's list view
/// (`views.rs`) puts them under its plural.
#[derive(Debug)]
pub struct Page {
    pub items: Vec<Value>,
    /// Empty on the last page.
    pub next_page_token: String,
    /// How many items match the filter, on all pages.
    pub total_size: usize,
}

/// One page of `items` (wire forms): filtered, ordered, after the token,
/// masked.
pub fn page(listing: &Listing, items: Vec<Value>, q: &ListQuery) -> Result<Page, GatewayError> {
    let size = match q.page_size {
        None | Some(0) => DEFAULT_PAGE_SIZE,
        Some(n) if n < 0 => return Err(GatewayError::invalid("pageSize", "must not be negative")),
        Some(n) => usize::try_from(n)
            .unwrap_or(MAX_PAGE_SIZE)
            .min(MAX_PAGE_SIZE),
    };
    let filter = Filter::parse(listing, q.filter.as_deref())?;
    let keys = parse_order(listing, q.order_by.as_deref())?;
    // Checked before use, so a bad mask fails even on an empty page.
    apply_read_mask(listing, json!({}), q.read_mask.as_deref())?;
    let mut rows: Vec<(Vec<Value>, Value)> = items
        .into_iter()
        .filter(|i| filter.matches(i))
        .map(|i| (sort_key(&i, &keys), i))
        .collect();
    let total = rows.len();
    rows.sort_by(|a, b| cmp_keys(&a.0, &b.0, &keys));
    let start = match q.page_token.as_deref().filter(|t| !t.is_empty()) {
        Some(t) => {
            let after = decode_token(t, q)?;
            rows.iter()
                .position(|(k, _)| cmp_keys(k, &after, &keys) == Ordering::Greater)
                .unwrap_or(rows.len())
        }
        None => 0,
    };
    let end = (start + size).min(rows.len());
    let next = if end < rows.len() && end > start {
        encode_token(&rows[end - 1].0, q)
    } else {
        String::new()
    };
    let mut out = Vec::with_capacity(end - start);
    for (_, item) in rows.drain(start..end) {
        out.push(apply_read_mask(listing, item, q.read_mask.as_deref())?);
    }
    Ok(Page {
        items: out,
        next_page_token: next,
        total_size: total,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const L: Listing = Listing {
        plural: "things",
        fields: &[
            "name",
            "state",
            "createTime",
            "annotations",
            "shared",
            "count",
            "connection",
        ],
        default_order: "name",
    };

    fn items() -> Vec<Value> {
        vec![
            json!({"name": "a/1", "state": "CONNECTED", "count": 3, "shared": true,
                   "createTime": "2026-01-01T00:00:00Z", "annotations": {"team": "ml"},
                   "connection": {"nodePoolId": "gpu"}}),
            json!({"name": "a/2", "state": "DISCONNECTED", "count": 10, "shared": false,
                   "createTime": "2026-01-01T00:00:00.5Z", "annotations": {}}),
            json!({"name": "a/3", "state": "CONNECTED", "count": 7, "shared": false,
                   "createTime": "2025-12-31T00:00:00Z", "annotations": {"team": "web"}}),
        ]
    }

    fn names(filter: &str) -> Vec<String> {
        let f = Filter::parse(&L, Some(filter)).expect("parses");
        items()
            .into_iter()
            .filter(|i| f.matches(i))
            .map(|i| i["name"].as_str().unwrap_or_default().to_owned())
            .collect()
    }

    #[test]
    fn filters_follow_aip_160() {
        assert_eq!(names("state = CONNECTED"), ["a/1", "a/3"]);
        assert_eq!(names("state = CONNECTED AND count > 5"), ["a/3"]);
        assert_eq!(names("count >= 7 OR shared = true"), ["a/1", "a/2", "a/3"]);
        assert_eq!(names("NOT state = CONNECTED"), ["a/2"]);
        assert_eq!(names("-state = CONNECTED"), ["a/2"]);
        assert_eq!(names("annotations.team = \"ml\""), ["a/1"]);
        assert_eq!(names("annotations:team"), ["a/1", "a/3"]);
        assert_eq!(names("connection.node_pool_id = gpu"), ["a/1"]);
        assert_eq!(names("create_time > \"2026-01-01T00:00:00.1Z\""), ["a/2"]);
        assert_eq!(names("name = \"a/*\" count < 5"), ["a/1"]);
        // OR binds tighter than AND.
        assert_eq!(
            names("state = DISCONNECTED OR count = 3 AND shared = false"),
            ["a/2"]
        );
        assert_eq!(
            names("(state = DISCONNECTED OR count = 3) AND shared = true"),
            ["a/1"]
        );
        assert_eq!(names("web"), ["a/3"]);
    }

    #[test]
    fn bad_filters_name_the_problem() {
        for bad in [
            "nope = 1",
            "state =",
            "(state = X",
            "state = X)",
            "f(1)",
            "state ! x",
            "\"open",
        ] {
            let e = Filter::parse(&L, Some(bad)).err().expect(bad);
            assert!(format!("{e:?}").contains("filter"), "{bad}: {e:?}");
        }
    }

    #[test]
    fn pages_walk_without_repeats_and_honor_order() {
        let mut q = ListQuery {
            page_size: Some(2),
            order_by: Some("count desc".into()),
            ..Default::default()
        };
        let p1 = page(&L, items(), &q).expect("page 1");
        assert_eq!(p1.total_size, 3);
        assert_eq!(p1.items[0]["count"], 10);
        assert_eq!(p1.items[1]["count"], 7);
        q.page_token = Some(p1.next_page_token);
        let p2 = page(&L, items(), &q).expect("page 2");
        assert_eq!(p2.items.len(), 1);
        assert_eq!(p2.items[0]["count"], 3);
        assert_eq!(p2.next_page_token, "");
        // A token belongs to its query.
        q.order_by = Some("name".into());
        assert!(page(&L, items(), &q).is_err());
    }

    #[test]
    fn read_masks_keep_named_fields() {
        let v = apply_read_mask(&L, items().remove(0), Some("name,connection.nodePoolId"))
            .expect("mask");
        assert_eq!(
            v,
            json!({"name": "a/1", "connection": {"nodePoolId": "gpu"}})
        );
        assert!(apply_read_mask(&L, json!({}), Some("bogus")).is_err());
    }
}
