//! Mutating admission the real API server applies to every new Pod by
//! default and that controllers observe: **DefaultTolerationSeconds**
//! (`plugin/pkg/admission/defaulttolerationseconds`). Without it a Pod that
//! says nothing about the `node.kubernetes.io/not-ready` and `unreachable`
//! NoExecute taints would be evicted the moment node lifecycle adds them,
//! where on a real cluster it gets five minutes.

use serde_json::{Value, json};

/// The taint node lifecycle puts on a Node whose Ready condition is False.
pub const TAINT_NOT_READY: &str = "node.kubernetes.io/not-ready";
/// The taint node lifecycle puts on a Node whose Ready condition is Unknown.
pub const TAINT_UNREACHABLE: &str = "node.kubernetes.io/unreachable";

/// The plugin's settings, as kube-apiserver's
/// `--default-not-ready-toleration-seconds` and
/// `--default-unreachable-toleration-seconds` (both 300 by default). `None`
/// for both disables the plugin (`--disable-admission-plugins`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DefaultTolerationSeconds {
    /// Seconds a Pod tolerates `node.kubernetes.io/not-ready:NoExecute`.
    pub not_ready: Option<i64>,
    /// Seconds a Pod tolerates `node.kubernetes.io/unreachable:NoExecute`.
    pub unreachable: Option<i64>,
}

impl Default for DefaultTolerationSeconds {
    fn default() -> Self {
        DefaultTolerationSeconds {
            not_ready: Some(300),
            unreachable: Some(300),
        }
    }
}

/// Whether `t` (a Toleration) already covers `key`'s NoExecute taint, by
/// upstream's test: the key is `key` or empty, and the effect NoExecute or
/// empty (operator and value are not looked at).
fn covers(t: &Value, key: &str) -> bool {
    let k = t["key"].as_str().unwrap_or("");
    let e = t["effect"].as_str().unwrap_or("");
    (k == key || k.is_empty()) && (e == "NoExecute" || e.is_empty())
}

impl DefaultTolerationSeconds {
    /// Appends the missing tolerations to a Pod (`obj` is the whole Pod),
    /// as the plugin's `Admit` does on create and update of `pods` (never
    /// on subresources).
    pub fn admit(&self, pod: &mut Value) {
        let existing: Vec<Value> = pod["spec"]["tolerations"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let mut added = Vec::new();
        for (key, seconds) in [
            (TAINT_NOT_READY, self.not_ready),
            (TAINT_UNREACHABLE, self.unreachable),
        ] {
            let Some(seconds) = seconds else { continue };
            if !existing.iter().any(|t| covers(t, key)) {
                added.push(json!({
                    "key": key,
                    "operator": "Exists",
                    "effect": "NoExecute",
                    "tolerationSeconds": seconds,
                }));
            }
        }
        if added.is_empty() {
            return;
        }
        if !pod["spec"].is_object() {
            pod["spec"] = json!({});
        }
        let mut all = existing;
        all.extend(added);
        pod["spec"]["tolerations"] = Value::Array(all);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn not_ready(seconds: i64) -> Value {
        json!({"key": TAINT_NOT_READY, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": seconds})
    }
    fn unreachable(seconds: i64) -> Value {
        json!({"key": TAINT_UNREACHABLE, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": seconds})
    }

    /// The cases of upstream's `TestForgivenessAdmission`
    /// (admission_test.go), with its 300 s defaults.
    #[test]
    fn upstream_forgiveness_cases() {
        let other = json!({"key": "foo", "operator": "Equal", "value": "bar", "effect": "NoSchedule", "tolerationSeconds": 700});
        let cases: Vec<(&str, Value, Value)> = vec![
            (
                "pod has no tolerations, expect add tolerations for not-ready:NoExecute and unreachable:NoExecute",
                json!([]),
                json!([not_ready(300), unreachable(300)]),
            ),
            (
                "pod has tolerations, but none is for taint `not-ready:NoExecute` or `unreachable:NoExecute`",
                json!([other]),
                json!([other, not_ready(300), unreachable(300)]),
            ),
            (
                "pod specified a toleration for taint `not-ready:NoExecute`, expect add toleration for `unreachable:NoExecute`",
                json!([not_ready(700)]),
                json!([not_ready(700), unreachable(300)]),
            ),
            (
                "pod specified a toleration for taint `unreachable:NoExecute`, expect add toleration for `not-ready:NoExecute`",
                json!([unreachable(700)]),
                json!([unreachable(700), not_ready(300)]),
            ),
            (
                "pod specified tolerations for both `not-ready:NoExecute` and `unreachable:NoExecute`, expect no change",
                json!([not_ready(700), unreachable(700)]),
                json!([not_ready(700), unreachable(700)]),
            ),
            (
                "pod specified toleration for taint `unreachable`, expect add toleration for `not-ready:NoExecute`",
                json!([{"key": TAINT_UNREACHABLE, "operator": "Exists", "tolerationSeconds": 700}]),
                json!([{"key": TAINT_UNREACHABLE, "operator": "Exists", "tolerationSeconds": 700}, not_ready(300)]),
            ),
            (
                "pod has wildcard toleration for all kind of taints, expect no change",
                json!([{"operator": "Exists", "tolerationSeconds": 700}]),
                json!([{"operator": "Exists", "tolerationSeconds": 700}]),
            ),
            (
                "a NoSchedule toleration of not-ready does not count",
                json!([{"key": TAINT_NOT_READY, "operator": "Exists", "effect": "NoSchedule"}]),
                json!([{"key": TAINT_NOT_READY, "operator": "Exists", "effect": "NoSchedule"}, not_ready(300), unreachable(300)]),
            ),
        ];
        for (name, before, want) in cases {
            let mut pod = json!({"spec": {"containers": [], "tolerations": before}});
            DefaultTolerationSeconds::default().admit(&mut pod);
            assert_eq!(pod["spec"]["tolerations"], want, "{name}");
        }
    }

    #[test]
    fn missing_tolerations_field_and_settings() {
        let mut pod = json!({"spec": {"containers": []}});
        DefaultTolerationSeconds {
            not_ready: Some(5),
            unreachable: None,
        }
        .admit(&mut pod);
        assert_eq!(pod["spec"]["tolerations"], json!([not_ready(5)]));
        let mut pod = json!({"spec": {"containers": []}});
        DefaultTolerationSeconds {
            not_ready: None,
            unreachable: None,
        }
        .admit(&mut pod);
        assert!(
            pod["spec"].get("tolerations").is_none(),
            "disabled: untouched"
        );
    }
}
