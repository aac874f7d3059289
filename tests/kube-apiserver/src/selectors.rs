//! Label selectors (`=`, `==`, `!=`, `in`, `notin`, exists, `!exists`, `>`, `<`)
//! and field selectors (`=`, `==`, `!=`), parsed with the same grammar and
//! error messages as `k8s.io/apimachinery/pkg/labels` and `.../fields`.

use crate::errors::ApiError;
use crate::resources::ResourceDef;
use serde_json::Value;
use std::collections::BTreeMap;

/// One label requirement.
#[derive(Debug, Clone, PartialEq)]
pub enum LabelReq {
    /// `key=value`, `key==value`, `key in (a,b)`.
    In(String, Vec<String>),
    /// `key!=value`, `key notin (a,b)`: also matches objects without the key.
    NotIn(String, Vec<String>),
    /// `key`.
    Exists(String),
    /// `!key`.
    DoesNotExist(String),
    /// `key>n`.
    Gt(String, i64),
    /// `key<n`.
    Lt(String, i64),
}

/// A parsed label selector (requirements are ANDed).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LabelSelector(pub Vec<LabelReq>);

fn bad(msg: String) -> ApiError {
    ApiError::bad_request(format!("unable to parse requirement: {msg}"))
}

fn is_qualified_name(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(p) = prefix
        && (p.is_empty() || p.len() > 253 || !is_dns1123_subdomain(p))
    {
        return Err(format!(
            "prefix part a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (key {key:?})"
        ));
    }
    if name.is_empty() || name.len() > 63 {
        return Err(format!(
            "name part must be non-empty and no more than 63 characters (key {key:?})"
        ));
    }
    if !is_label_value(name) {
        return Err(format!(
            "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]') (key {key:?})"
        ));
    }
    Ok(())
}

/// Valid label value (may be empty).
pub fn is_label_value(v: &str) -> bool {
    if v.is_empty() {
        return true;
    }
    if v.len() > 63 {
        return false;
    }
    let b = v.as_bytes();
    b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || *c == b'-' || *c == b'_' || *c == b'.')
}

/// Valid label key.
pub fn is_label_key(k: &str) -> bool {
    is_qualified_name(k).is_ok()
}

/// RFC 1123 subdomain.
pub fn is_dns1123_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_dns1123_label_lenient)
}

fn is_dns1123_label_lenient(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
}

/// RFC 1123 label (max 63).
pub fn is_dns1123_label(s: &str) -> bool {
    s.len() <= 63 && is_dns1123_label_lenient(s)
}

/// RFC 1035 label (starts with a letter).
pub fn is_dns1035_label(s: &str) -> bool {
    is_dns1123_label(s) && s.as_bytes()[0].is_ascii_lowercase()
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Eq,
    DoubleEq,
    NotEq,
    Not,
    Gt,
    Lt,
    Open,
    Close,
    Comma,
    In,
    NotIn,
}

fn lex(s: &str) -> Result<Vec<Tok>, ApiError> {
    let mut out = Vec::new();
    let chars: Vec<char> = s.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            ' ' | '\t' | '\n' => i += 1,
            '(' => {
                out.push(Tok::Open);
                i += 1
            }
            ')' => {
                out.push(Tok::Close);
                i += 1
            }
            ',' => {
                out.push(Tok::Comma);
                i += 1
            }
            '=' => {
                if chars.get(i + 1) == Some(&'=') {
                    out.push(Tok::DoubleEq);
                    i += 2
                } else {
                    out.push(Tok::Eq);
                    i += 1
                }
            }
            '!' => {
                if chars.get(i + 1) == Some(&'=') {
                    out.push(Tok::NotEq);
                    i += 2
                } else {
                    out.push(Tok::Not);
                    i += 1
                }
            }
            '>' => {
                out.push(Tok::Gt);
                i += 1
            }
            '<' => {
                out.push(Tok::Lt);
                i += 1
            }
            _ => {
                let start = i;
                while i < chars.len() && !" \t\n()=,!<>".contains(chars[i]) {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                out.push(match word.as_str() {
                    "in" => Tok::In,
                    "notin" => Tok::NotIn,
                    _ => Tok::Ident(word),
                });
            }
        }
    }
    Ok(out)
}

fn check_value(key: &str, v: &str) -> Result<(), ApiError> {
    if !is_label_value(v) {
        return Err(bad(format!(
            "values[0][{key}]: Invalid value: {v:?}: a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character"
        )));
    }
    Ok(())
}

impl LabelSelector {
    /// Parses the `labelSelector` query parameter.
    pub fn parse(s: &str) -> Result<Self, ApiError> {
        let toks = lex(s)?;
        let mut reqs = Vec::new();
        let mut i = 0;
        if toks.is_empty() {
            return Ok(LabelSelector(reqs));
        }
        loop {
            // one requirement
            let negate = if toks.get(i) == Some(&Tok::Not) {
                i += 1;
                true
            } else {
                false
            };
            let key = match toks.get(i) {
                Some(Tok::Ident(k)) => k.clone(),
                other => {
                    return Err(bad(format!(
                        "found '{}', expected: !, identifier, or 'end of string'",
                        tok_str(other)
                    )));
                }
            };
            i += 1;
            is_qualified_name(&key)
                .map_err(|e| bad(format!("key: Invalid value: {key:?}: {e}")))?;
            if negate {
                reqs.push(LabelReq::DoesNotExist(key));
            } else {
                match toks.get(i) {
                    None | Some(Tok::Comma) => reqs.push(LabelReq::Exists(key)),
                    Some(Tok::Eq) | Some(Tok::DoubleEq) | Some(Tok::NotEq) => {
                        let op = toks[i].clone();
                        i += 1;
                        let val = match toks.get(i) {
                            Some(Tok::Ident(v)) => {
                                i += 1;
                                v.clone()
                            }
                            None | Some(Tok::Comma) => String::new(),
                            other => {
                                return Err(bad(format!(
                                    "found '{}', expected: identifier",
                                    tok_str(other)
                                )));
                            }
                        };
                        check_value(&key, &val)?;
                        if op == Tok::NotEq {
                            reqs.push(LabelReq::NotIn(key, vec![val]));
                        } else {
                            reqs.push(LabelReq::In(key, vec![val]));
                        }
                    }
                    Some(Tok::Gt) | Some(Tok::Lt) => {
                        let gt = toks[i] == Tok::Gt;
                        i += 1;
                        let val = match toks.get(i) {
                            Some(Tok::Ident(v)) => {
                                i += 1;
                                v.clone()
                            }
                            other => {
                                return Err(bad(format!(
                                    "found '{}', expected: identifier",
                                    tok_str(other)
                                )));
                            }
                        };
                        let n: i64 = val.parse().map_err(|_| {
                            bad(format!(
                                "values[0]: Invalid value: {val:?}: for 'Gt', 'Lt' operators, the value must be an integer"
                            ))
                        })?;
                        reqs.push(if gt {
                            LabelReq::Gt(key, n)
                        } else {
                            LabelReq::Lt(key, n)
                        });
                    }
                    Some(Tok::In) | Some(Tok::NotIn) => {
                        let is_in = toks[i] == Tok::In;
                        i += 1;
                        if toks.get(i) != Some(&Tok::Open) {
                            return Err(bad(format!(
                                "found '{}', expected: '('",
                                tok_str(toks.get(i))
                            )));
                        }
                        i += 1;
                        let mut vals = Vec::new();
                        loop {
                            match toks.get(i) {
                                Some(Tok::Ident(v)) => {
                                    check_value(&key, v)?;
                                    vals.push(v.clone());
                                    i += 1;
                                    match toks.get(i) {
                                        Some(Tok::Comma) => i += 1,
                                        Some(Tok::Close) => {
                                            i += 1;
                                            break;
                                        }
                                        other => {
                                            return Err(bad(format!(
                                                "found '{}', expected: ',' or ')'",
                                                tok_str(other)
                                            )));
                                        }
                                    }
                                }
                                Some(Tok::Close) => {
                                    i += 1;
                                    break;
                                }
                                Some(Tok::Comma) => {
                                    // empty value between commas
                                    vals.push(String::new());
                                    i += 1;
                                }
                                other => {
                                    return Err(bad(format!(
                                        "found '{}', expected: ',', ')' or identifier",
                                        tok_str(other)
                                    )));
                                }
                            }
                        }
                        if vals.is_empty() {
                            return Err(bad(
                                "values: Invalid value: []string{}: for 'in', 'notin' operators, values set can't be empty"
                                    .to_string(),
                            ));
                        }
                        reqs.push(if is_in {
                            LabelReq::In(key, vals)
                        } else {
                            LabelReq::NotIn(key, vals)
                        });
                    }
                    other => {
                        return Err(bad(format!(
                            "found '{}', expected: in, notin, =, ==, !=, gt, lt",
                            tok_str(other)
                        )));
                    }
                }
            }
            match toks.get(i) {
                None => break,
                Some(Tok::Comma) => {
                    i += 1;
                    if i >= toks.len() {
                        return Err(bad("found '', expected: identifier after ','".to_string()));
                    }
                }
                other => {
                    return Err(bad(format!(
                        "found '{}', expected: ',' or 'end of string'",
                        tok_str(other)
                    )));
                }
            }
        }
        Ok(LabelSelector(reqs))
    }

    /// Whether the labels match.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.0.iter().all(|r| match r {
            LabelReq::In(k, vs) => labels.get(k).is_some_and(|v| vs.contains(v)),
            LabelReq::NotIn(k, vs) => labels.get(k).is_none_or(|v| !vs.contains(v)),
            LabelReq::Exists(k) => labels.contains_key(k),
            LabelReq::DoesNotExist(k) => !labels.contains_key(k),
            LabelReq::Gt(k, n) => labels
                .get(k)
                .and_then(|v| v.parse::<i64>().ok())
                .is_some_and(|v| v > *n),
            LabelReq::Lt(k, n) => labels
                .get(k)
                .and_then(|v| v.parse::<i64>().ok())
                .is_some_and(|v| v < *n),
        })
    }

    /// Whether this selector is empty (matches everything).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Builds a selector from a `metav1.LabelSelector` JSON object
    /// (matchLabels + matchExpressions).
    pub fn from_label_selector(v: &Value) -> Result<Self, String> {
        let mut reqs = Vec::new();
        if let Some(m) = v.get("matchLabels").and_then(Value::as_object) {
            for (k, val) in m {
                reqs.push(LabelReq::In(
                    k.clone(),
                    vec![val.as_str().unwrap_or_default().to_string()],
                ));
            }
        }
        if let Some(exprs) = v.get("matchExpressions").and_then(Value::as_array) {
            for e in exprs {
                let key = e["key"].as_str().unwrap_or_default().to_string();
                let vals: Vec<String> = e["values"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|x| x.as_str().map(str::to_string))
                            .collect()
                    })
                    .unwrap_or_default();
                reqs.push(match e["operator"].as_str().unwrap_or_default() {
                    "In" => LabelReq::In(key, vals),
                    "NotIn" => LabelReq::NotIn(key, vals),
                    "Exists" => LabelReq::Exists(key),
                    "DoesNotExist" => LabelReq::DoesNotExist(key),
                    other => {
                        return Err(format!("{other:?} is not a valid label selector operator"));
                    }
                });
            }
        }
        Ok(LabelSelector(reqs))
    }
}

fn tok_str(t: Option<&Tok>) -> String {
    match t {
        None => String::new(),
        Some(Tok::Ident(s)) => s.clone(),
        Some(Tok::Eq) => "=".into(),
        Some(Tok::DoubleEq) => "==".into(),
        Some(Tok::NotEq) => "!=".into(),
        Some(Tok::Not) => "!".into(),
        Some(Tok::Gt) => ">".into(),
        Some(Tok::Lt) => "<".into(),
        Some(Tok::Open) => "(".into(),
        Some(Tok::Close) => ")".into(),
        Some(Tok::Comma) => ",".into(),
        Some(Tok::In) => "in".into(),
        Some(Tok::NotIn) => "notin".into(),
    }
}

/// One field requirement.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldReq {
    /// Field label, e.g. `spec.nodeName`.
    pub field: String,
    /// `!=` instead of `=`.
    pub negate: bool,
    /// Value.
    pub value: String,
}

/// A parsed field selector.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FieldSelector(pub Vec<FieldReq>);

impl FieldSelector {
    /// Parses the `fieldSelector` query parameter and checks every field is
    /// supported by the resource.
    pub fn parse(s: &str, def: &ResourceDef) -> Result<Self, ApiError> {
        let mut reqs = Vec::new();
        if s.trim().is_empty() {
            return Ok(FieldSelector(reqs));
        }
        for part in split_unescaped(s, ',') {
            let part = part.trim();
            if part.is_empty() {
                continue;
            }
            let (field, negate, value) = if let Some(idx) = find_unescaped(part, "!=") {
                (&part[..idx], true, &part[idx + 2..])
            } else if let Some(idx) = find_unescaped(part, "==") {
                (&part[..idx], false, &part[idx + 2..])
            } else if let Some(idx) = find_unescaped(part, "=") {
                (&part[..idx], false, &part[idx + 1..])
            } else {
                return Err(ApiError::bad_request(format!(
                    "invalid selector: '{s}'; can't understand '{part}'"
                )));
            };
            let field = field.trim().to_string();
            let value = unescape(value.trim())
                .map_err(|e| ApiError::bad_request(format!("invalid selector: '{s}'; {e}")))?;
            if !def.supports_field(&field) {
                return Err(ApiError::bad_request(format!(
                    "field label not supported: {field}"
                )));
            }
            let field = normalize_field(&field, def);
            reqs.push(FieldReq {
                field,
                negate,
                value,
            });
        }
        Ok(FieldSelector(reqs))
    }

    /// Whether the object (in its storage form) matches.
    pub fn matches(&self, obj: &Value) -> bool {
        self.0.iter().all(|r| {
            let actual = field_value(obj, &r.field);
            (actual == r.value) != r.negate
        })
    }

    /// The value required for `metadata.name`, if any (used by watches on
    /// a single object).
    pub fn name(&self) -> Option<&str> {
        self.0
            .iter()
            .find(|r| r.field == "metadata.name" && !r.negate)
            .map(|r| r.value.as_str())
    }

    /// Whether this selector is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

fn normalize_field(f: &str, def: &ResourceDef) -> String {
    // events.k8s.io/v1 is served from the core event storage: its field
    // labels are converted to the stored (core) names.
    if def.is_events_v1() {
        if let Some(rest) = f.strip_prefix("regarding.") {
            return format!("involvedObject.{rest}");
        }
        if f == "reportingController" {
            return "reportingComponent".into();
        }
    }
    f.to_string()
}

/// The string value of a field label, as the real server's `GetAttrs`
/// functions compute it (missing fields are "").
pub fn field_value(obj: &Value, field: &str) -> String {
    match field {
        "source" => {
            // core Event: source.component
            return obj["source"]["component"]
                .as_str()
                .unwrap_or_default()
                .to_string();
        }
        "status.podIPs" => {
            return obj["status"]["podIPs"]
                .as_array()
                .and_then(|a| a.first())
                .and_then(|x| x["ip"].as_str())
                .unwrap_or_default()
                .to_string();
        }
        _ => {}
    }
    let mut cur = obj;
    for seg in field.split('.') {
        cur = &cur[seg];
    }
    match cur {
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::Null => match field {
            "spec.unschedulable" | "spec.hostNetwork" => "false".into(),
            "status.replicas" => "0".into(),
            _ => String::new(),
        },
        other => other.to_string(),
    }
}

fn split_unescaped(s: &str, sep: char) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut esc = false;
    for c in s.chars() {
        if esc {
            cur.push('\\');
            cur.push(c);
            esc = false;
        } else if c == '\\' {
            esc = true;
        } else if c == sep {
            out.push(std::mem::take(&mut cur));
        } else {
            cur.push(c);
        }
    }
    if esc {
        cur.push('\\');
    }
    out.push(cur);
    out
}

fn find_unescaped(s: &str, pat: &str) -> Option<usize> {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' {
            i += 2;
            continue;
        }
        if s[i..].starts_with(pat) {
            return Some(i);
        }
        i += 1;
    }
    None
}

fn unescape(s: &str) -> Result<String, String> {
    let mut out = String::new();
    let mut esc = false;
    for c in s.chars() {
        if esc {
            if !matches!(c, '\\' | ',' | '=') {
                return Err(format!("invalid escape sequence: \\{c}"));
            }
            out.push(c);
            esc = false;
        } else if c == '\\' {
            esc = true;
        } else if c == '=' || c == ',' {
            return Err(format!("invalid field value {s:?}: unescaped {c:?}"));
        } else {
            out.push(c);
        }
    }
    if esc {
        return Err("unterminated escape sequence".into());
    }
    Ok(out)
}

/// Labels of an object as a map.
pub fn labels_of(obj: &Value) -> BTreeMap<String, String> {
    obj["metadata"]["labels"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn l(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn parses_and_matches() {
        let s = LabelSelector::parse("a=b,c!=d,e in (f, g),h notin (i),j,!k").unwrap();
        assert_eq!(s.0.len(), 6);
        assert!(s.matches(&l(&[("a", "b"), ("e", "g"), ("j", "")])));
        assert!(!s.matches(&l(&[("a", "b"), ("e", "g"), ("j", ""), ("k", "1")])));
        assert!(!s.matches(&l(&[("a", "b"), ("c", "d"), ("e", "g"), ("j", "")])));
        assert!(LabelSelector::parse("a in ()").is_err());
        assert!(LabelSelector::parse("a=b,").is_err());
        assert!(LabelSelector::parse("a b").is_err());
        assert!(
            LabelSelector::parse("x>3")
                .unwrap()
                .matches(&l(&[("x", "4")]))
        );
        assert!(LabelSelector::parse("").unwrap().is_empty());
        assert!(
            LabelSelector::parse("example.com/app==x")
                .unwrap()
                .matches(&l(&[("example.com/app", "x")]))
        );
        assert!(LabelSelector::parse("-bad=x").is_err());
    }
}
