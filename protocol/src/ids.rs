//! Validated identifiers: base identity, env, virtual Node name, label values.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Why an identifier was rejected.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdError {
    /// Empty string.
    #[error("{what} must not be empty")]
    Empty {
        /// Which kind of id.
        what: &'static str,
    },
    /// A character that would break a topic, a client id or a Node name.
    #[error("{what} {value:?} contains {ch:?}, which is not allowed")]
    BadChar {
        /// Which kind of id.
        what: &'static str,
        /// The input.
        value: String,
        /// The offending character.
        ch: char,
    },
    /// Too long.
    #[error("{what} {value:?} is longer than {max} characters")]
    TooLong {
        /// Which kind of id.
        what: &'static str,
        /// The input.
        value: String,
        /// The limit.
        max: usize,
    },
    /// Not of the `vnode.<identity>.<env>` shape or not a DNS-1123 subdomain.
    #[error("{value:?} is not a virtual node name: {why}")]
    NotVNodeName {
        /// The input.
        value: String,
        /// What is wrong.
        why: &'static str,
    },
}

fn check_mqtt_safe(what: &'static str, s: &str, extra_forbidden: &[char]) -> Result<(), IdError> {
    if s.is_empty() {
        return Err(IdError::Empty { what });
    }
    if s.len() > 253 {
        return Err(IdError::TooLong {
            what,
            value: s.into(),
            max: 253,
        });
    }
    if let Some(ch) = s.chars().find(|c| {
        matches!(c, '/' | '+' | '#')
            || c.is_whitespace()
            || c.is_control()
            || extra_forbidden.contains(c)
    }) {
        return Err(IdError::BadChar {
            what,
            value: s.into(),
            ch,
        });
    }
    Ok(())
}

/// Identity of a base: a topic segment, part of the MQTT client id and of the Node name.
///
/// May contain `.` (IP addresses are the Java default); must not contain the MQTT level
/// separator or wildcards (`/ + #`), whitespace or control characters.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct BaseIdentity(String);

impl BaseIdentity {
    /// The raw identity.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for BaseIdentity {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        check_mqtt_safe("base identity", s, &[])?;
        Ok(BaseIdentity(s.to_owned()))
    }
}

impl TryFrom<String> for BaseIdentity {
    type Error = IdError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<BaseIdentity> for String {
    fn from(v: BaseIdentity) -> String {
        v.0
    }
}

impl fmt::Display for BaseIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The environment segment of topics (`koupleless_<env>/...`) and Node names. No `.`: the Node
/// name `vnode.<identity>.<env>` is split at its last dot.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Env(String);

impl Env {
    /// The raw env.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The env as a Java base derives it from `runtimeEnv`: lower-cased, empty → `dev`
    /// (trap T19).
    pub fn from_runtime_env(runtime_env: &str) -> Result<Env, IdError> {
        if runtime_env.is_empty() {
            return "dev".parse();
        }
        runtime_env.to_lowercase().parse()
    }
}

impl FromStr for Env {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        check_mqtt_safe("env", s, &['.'])?;
        Ok(Env(s.to_owned()))
    }
}

impl TryFrom<String> for Env {
    type Error = IdError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<Env> for String {
    fn from(v: Env) -> String {
        v.0
    }
}

impl fmt::Display for Env {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Checks the Kubernetes DNS-1123 subdomain rules (Node names).
pub fn is_dns1123_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            let b = label.as_bytes();
            !b.is_empty()
                && b.len() <= 63
                && b.iter()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
                && b[0] != b'-'
                && b[b.len() - 1] != b'-'
        })
}

/// The Kubernetes Node name of a base: `vnode.<identity>.<env>`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VNodeName {
    identity: BaseIdentity,
    env: Env,
}

impl VNodeName {
    /// Builds the name, checking that the result is a valid Node name.
    pub fn new(identity: BaseIdentity, env: Env) -> Result<VNodeName, IdError> {
        let name = format!("vnode.{identity}.{env}");
        if !is_dns1123_subdomain(&name) {
            return Err(IdError::NotVNodeName {
                value: name,
                why: "not a lower-case DNS-1123 subdomain",
            });
        }
        Ok(VNodeName { identity, env })
    }

    /// The base identity.
    pub fn identity(&self) -> &BaseIdentity {
        &self.identity
    }

    /// The env.
    pub fn env(&self) -> &Env {
        &self.env
    }
}

impl fmt::Display for VNodeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "vnode.{}.{}", self.identity, self.env)
    }
}

impl FromStr for VNodeName {
    type Err = IdError;
    /// The identity is everything between the first and the last dot (it may contain dots).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |why| IdError::NotVNodeName {
            value: s.into(),
            why,
        };
        let rest = s
            .strip_prefix("vnode.")
            .ok_or_else(|| bad("missing `vnode.` prefix"))?;
        let (id, env) = rest
            .rsplit_once('.')
            .ok_or_else(|| bad("missing `.<env>` suffix"))?;
        VNodeName::new(id.parse()?, env.parse()?)
    }
}

/// A Kubernetes label value: at most 63 characters of `[A-Za-z0-9._-]`, beginning and ending
/// with an alphanumeric character, or empty.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct LabelValue(String);

impl LabelValue {
    /// The value.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Makes any text a valid label value: replaces disallowed characters with `-`, trims
    /// non-alphanumeric ends and truncates to 63 characters. Heartbeats carry free text
    /// (host names, versions) that must still become Node labels.
    pub fn sanitize(s: &str) -> LabelValue {
        let mapped: String = s
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                    c
                } else {
                    '-'
                }
            })
            .take(63)
            .collect();
        LabelValue(
            mapped
                .trim_matches(|c: char| !c.is_ascii_alphanumeric())
                .to_owned(),
        )
    }
}

impl FromStr for LabelValue {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        const WHAT: &str = "label value";
        if s.len() > 63 {
            return Err(IdError::TooLong {
                what: WHAT,
                value: s.into(),
                max: 63,
            });
        }
        if let Some(ch) = s
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
        {
            return Err(IdError::BadChar {
                what: WHAT,
                value: s.into(),
                ch,
            });
        }
        for ch in [s.chars().next(), s.chars().last()].into_iter().flatten() {
            if !ch.is_ascii_alphanumeric() {
                return Err(IdError::BadChar {
                    what: WHAT,
                    value: s.into(),
                    ch,
                });
            }
        }
        Ok(LabelValue(s.to_owned()))
    }
}

impl TryFrom<String> for LabelValue {
    type Error = IdError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<LabelValue> for String {
    fn from(v: LabelValue) -> String {
        v.0
    }
}

impl fmt::Display for LabelValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_table() {
        let cases = [
            ("10.0.0.5", true),
            ("base-1", true),
            ("", false),
            ("a/b", false),
            ("a+b", false),
            ("a#", false),
            ("a b", false),
        ];
        for (s, ok) in cases {
            assert_eq!(s.parse::<BaseIdentity>().is_ok(), ok, "{s:?}");
        }
    }

    #[test]
    fn env_table() {
        assert!("dev".parse::<Env>().is_ok());
        assert!("a.b".parse::<Env>().is_err());
        assert_eq!(Env::from_runtime_env("").unwrap().as_str(), "dev");
        assert_eq!(
            Env::from_runtime_env("DEFAULT").unwrap().as_str(),
            "default"
        );
    }

    #[test]
    fn vnode_name_table() {
        let n: VNodeName = "vnode.10.0.0.5.dev".parse().unwrap();
        assert_eq!(n.identity().as_str(), "10.0.0.5");
        assert_eq!(n.env().as_str(), "dev");
        assert_eq!(n.to_string(), "vnode.10.0.0.5.dev");
        for bad in [
            "node.a.dev",
            "vnode.dev",
            "vnode.A.dev",
            "vnode..dev",
            "vnode.a_b.dev",
        ] {
            assert!(bad.parse::<VNodeName>().is_err(), "{bad}");
        }
    }

    #[test]
    fn label_value_table() {
        for (s, ok) in [
            ("", true),
            ("1.0.0", true),
            ("a_b-c", true),
            ("-a", false),
            ("a b", false),
        ] {
            assert_eq!(s.parse::<LabelValue>().is_ok(), ok, "{s:?}");
        }
        assert_eq!(LabelValue::sanitize("Base Pod #1!").as_str(), "Base-Pod--1");
        assert_eq!(LabelValue::sanitize(&"x".repeat(80)).as_str().len(), 63);
    }
}
