//! Container → module (spec controller §2.3): name = container name, version = env
//! `BIZ_VERSION`, package = image URL. Unlike upstream, `valueFrom` is resolved (the Pod's own
//! fields and ConfigMap keys), and a container that cannot be a module says why instead of
//! being sent to the base anyway.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, EnvVar, Pod};
use koupleless_protocol::BizSpec;

/// The env var that carries the module version.
pub const BIZ_VERSION: &str = "BIZ_VERSION";

/// One module a container asks for.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ModuleSpec {
    /// Module name (container name).
    pub name: String,
    /// Module version (`BIZ_VERSION`).
    pub version: String,
    /// Package URL (container image).
    pub url: String,
}

impl ModuleSpec {
    /// `name:version`, the identity bases use.
    pub fn key(&self) -> String {
        format!("{}:{}", self.name, self.version)
    }

    /// The wire form of install and uninstall commands.
    pub fn biz(&self) -> BizSpec {
        BizSpec {
            biz_name: self.name.clone(),
            biz_version: self.version.clone(),
            biz_url: self.url.clone(),
        }
    }
}

/// Why a container is not a module.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    /// No `BIZ_VERSION` env, or an empty one (Arklet refuses a name without version).
    #[error("container {container} has no BIZ_VERSION env var; set it to the module version")]
    MissingVersion {
        /// Container name.
        container: String,
    },
    /// `BIZ_VERSION` comes from a source that could not be read.
    #[error("BIZ_VERSION of container {container}: {why}")]
    UnresolvedVersion {
        /// Container name.
        container: String,
        /// What is missing.
        why: String,
    },
    /// The image is not the URL of a module package.
    #[error(
        "image {image:?} of container {container} is not a module package URL (http://, https:// or file://)"
    )]
    InvalidImage {
        /// Container name.
        container: String,
        /// The image.
        image: String,
    },
}

impl SpecError {
    /// CamelCase reason for container statuses and Events.
    pub fn reason(&self) -> &'static str {
        match self {
            SpecError::MissingVersion { .. } => "MissingBizVersion",
            SpecError::UnresolvedVersion { .. } => "BizVersionUnresolved",
            SpecError::InvalidImage { .. } => "InvalidModulePackage",
        }
    }
}

/// ConfigMap keys a Pod's `BIZ_VERSION`s refer to, as `(name, key)`. The driver reads them and
/// passes the values to [`modules_of`].
pub fn configmap_refs(pod: &Pod) -> Vec<(String, String)> {
    let Some(spec) = pod.spec.as_ref() else {
        return Vec::new();
    };
    spec.containers
        .iter()
        .filter_map(version_var)
        .filter_map(|e| e.value_from.as_ref()?.config_map_key_ref.as_ref())
        .map(|r| (r.name.clone(), r.key.clone()))
        .collect()
}

/// ConfigMap values by `(name, key)`: `Some(None)` when the ConfigMap or key does not exist,
/// absent when it could not be read.
pub type ConfigMapValues = BTreeMap<(String, String), Option<String>>;

fn version_var(c: &Container) -> Option<&EnvVar> {
    c.env.iter().flatten().find(|e| e.name == BIZ_VERSION)
}

/// Whether `image` is a package URL a base can fetch.
pub fn is_package_url(image: &str) -> bool {
    let lower = image.to_ascii_lowercase();
    ["http://", "https://", "file://"]
        .iter()
        .any(|p| lower.strip_prefix(p).is_some_and(|rest| !rest.is_empty()))
}

/// The value of a `fieldRef` path on `pod`, for the paths the downward API offers in env vars.
fn field_of(pod: &Pod, path: &str) -> Option<String> {
    let meta = &pod.metadata;
    let keyed = |prefix: &str, map: Option<&BTreeMap<String, String>>| {
        let key = path
            .strip_prefix(prefix)?
            .strip_suffix("']")
            .or_else(|| path.strip_prefix(prefix)?.strip_suffix("\"]"))?;
        Some(map?.get(key).cloned().unwrap_or_default())
    };
    match path {
        "metadata.name" => meta.name.clone(),
        "metadata.namespace" => meta.namespace.clone(),
        "metadata.uid" => meta.uid.clone(),
        "spec.nodeName" => pod.spec.as_ref()?.node_name.clone(),
        "spec.serviceAccountName" => pod.spec.as_ref()?.service_account_name.clone(),
        "status.hostIP" => pod.status.as_ref()?.host_ip.clone(),
        "status.podIP" => pod.status.as_ref()?.pod_ip.clone(),
        p if p.starts_with("metadata.labels[") => keyed("metadata.labels['", meta.labels.as_ref())
            .or_else(|| keyed("metadata.labels[\"", meta.labels.as_ref())),
        p if p.starts_with("metadata.annotations[") => {
            keyed("metadata.annotations['", meta.annotations.as_ref())
                .or_else(|| keyed("metadata.annotations[\"", meta.annotations.as_ref()))
        }
        _ => None,
    }
}

fn version_of(pod: &Pod, c: &Container, cms: &ConfigMapValues) -> Result<String, SpecError> {
    let missing = || SpecError::MissingVersion {
        container: c.name.clone(),
    };
    let unresolved = |why: String| SpecError::UnresolvedVersion {
        container: c.name.clone(),
        why,
    };
    let var = version_var(c).ok_or_else(missing)?;
    let value = match (&var.value, &var.value_from) {
        (Some(v), _) => v.clone(),
        (None, Some(from)) => {
            if let Some(f) = &from.field_ref {
                field_of(pod, &f.field_path)
                    .ok_or_else(|| unresolved(format!("field {} is not available", f.field_path)))?
            } else if let Some(r) = &from.config_map_key_ref {
                match cms.get(&(r.name.clone(), r.key.clone())) {
                    Some(Some(v)) => v.clone(),
                    Some(None) if r.optional == Some(true) => String::new(),
                    Some(None) => {
                        return Err(unresolved(format!(
                            "key {} of ConfigMap {} does not exist",
                            r.key, r.name
                        )));
                    }
                    None => {
                        return Err(unresolved(format!(
                            "ConfigMap {} could not be read",
                            r.name
                        )));
                    }
                }
            } else {
                return Err(unresolved(
                    "only value, fieldRef and configMapKeyRef are supported".into(),
                ));
            }
        }
        (None, None) => String::new(),
    };
    let value = value.trim().to_owned();
    if value.is_empty() {
        return Err(missing());
    }
    Ok(value)
}

/// The module one container asks for.
pub fn module_of(pod: &Pod, c: &Container, cms: &ConfigMapValues) -> Result<ModuleSpec, SpecError> {
    let image = c.image.clone().unwrap_or_default();
    if !is_package_url(&image) {
        return Err(SpecError::InvalidImage {
            container: c.name.clone(),
            image,
        });
    }
    Ok(ModuleSpec {
        name: c.name.clone(),
        version: version_of(pod, c, cms)?,
        url: image,
    })
}

/// The modules of every container of `pod`, in container order, by container name.
pub fn modules_of(
    pod: &Pod,
    cms: &ConfigMapValues,
) -> Vec<(String, Result<ModuleSpec, SpecError>)> {
    let Some(spec) = pod.spec.as_ref() else {
        return Vec::new();
    };
    spec.containers
        .iter()
        .map(|c| (c.name.clone(), module_of(pod, c, cms)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(containers: serde_json::Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "ns", "uid": "u1",
                "labels": {"module.koupleless.io/version": "1.2.3"},
                "annotations": {"v": "9"}},
            "spec": {"nodeName": "vnode.a.dev", "containers": containers},
        }))
        .unwrap()
    }

    fn c(name: &str, image: &str, env: serde_json::Value) -> serde_json::Value {
        json!({"name": name, "image": image, "env": env})
    }

    #[test]
    fn container_to_module_table() {
        let url = "https://repo/biz1-0.0.1-ark-biz.jar";
        let mut cms = ConfigMapValues::new();
        cms.insert(("versions".into(), "biz1".into()), Some("3.0.0".into()));
        cms.insert(("versions".into(), "absent".into()), None);
        let cases: Vec<(&str, serde_json::Value, Result<&str, &str>)> = vec![
            (
                "literal",
                json!([{"name": "BIZ_VERSION", "value": "0.0.1"}]),
                Ok("0.0.1"),
            ),
            (
                "first wins",
                json!([{"name": "BIZ_VERSION", "value": "1"}, {"name": "BIZ_VERSION", "value": "2"}]),
                Ok("1"),
            ),
            (
                "trimmed",
                json!([{"name": "BIZ_VERSION", "value": " 0.1 "}]),
                Ok("0.1"),
            ),
            (
                "absent",
                json!([{"name": "OTHER", "value": "1"}]),
                Err("MissingBizVersion"),
            ),
            (
                "empty",
                json!([{"name": "BIZ_VERSION", "value": ""}]),
                Err("MissingBizVersion"),
            ),
            ("no env", json!(null), Err("MissingBizVersion")),
            (
                "label",
                json!([{"name": "BIZ_VERSION", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['module.koupleless.io/version']"}}}]),
                Ok("1.2.3"),
            ),
            (
                "annotation",
                json!([{"name": "BIZ_VERSION", "valueFrom": {"fieldRef": {"fieldPath": "metadata.annotations['v']"}}}]),
                Ok("9"),
            ),
            (
                "missing label",
                json!([{"name": "BIZ_VERSION", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['nope']"}}}]),
                Err("MissingBizVersion"),
            ),
            (
                "pod name",
                json!([{"name": "BIZ_VERSION", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]),
                Ok("p"),
            ),
            (
                "unknown field",
                json!([{"name": "BIZ_VERSION", "valueFrom": {"fieldRef": {"fieldPath": "status.phase"}}}]),
                Err("BizVersionUnresolved"),
            ),
            (
                "configmap",
                json!([{"name": "BIZ_VERSION", "valueFrom": {"configMapKeyRef": {"name": "versions", "key": "biz1"}}}]),
                Ok("3.0.0"),
            ),
            (
                "configmap key absent",
                json!([{"name": "BIZ_VERSION", "valueFrom": {"configMapKeyRef": {"name": "versions", "key": "absent"}}}]),
                Err("BizVersionUnresolved"),
            ),
            (
                "optional key absent",
                json!([{"name": "BIZ_VERSION", "valueFrom": {"configMapKeyRef": {"name": "versions", "key": "absent", "optional": true}}}]),
                Err("MissingBizVersion"),
            ),
            (
                "configmap unread",
                json!([{"name": "BIZ_VERSION", "valueFrom": {"configMapKeyRef": {"name": "other", "key": "k"}}}]),
                Err("BizVersionUnresolved"),
            ),
            (
                "secret",
                json!([{"name": "BIZ_VERSION", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]),
                Err("BizVersionUnresolved"),
            ),
        ];
        for (what, env, want) in cases {
            let p = pod(json!([c("biz1", url, env)]));
            let got = modules_of(&p, &cms);
            assert_eq!(got.len(), 1);
            match (&got[0].1, want) {
                (Ok(m), Ok(v)) => {
                    assert_eq!(m.version, v, "{what}");
                    assert_eq!((m.name.as_str(), m.url.as_str()), ("biz1", url), "{what}");
                    assert_eq!(m.key(), format!("biz1:{v}"));
                }
                (Err(e), Err(reason)) => {
                    assert_eq!(e.reason(), reason, "{what}: {e}");
                    assert!(e.to_string().contains("biz1"), "{what}: {e}");
                }
                (got, want) => panic!("{what}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn images_that_are_packages() {
        for (image, ok) in [
            ("https://repo/biz.jar", true),
            ("http://10.0.0.1:8080/a/b.jar", true),
            ("HTTPS://repo/x", true),
            ("file:///opt/modules/biz.jar", true),
            ("https://", false),
            ("nginx:1.25", false),
            ("registry.example.com/biz:1", false),
            ("", false),
        ] {
            assert_eq!(is_package_url(image), ok, "{image}");
        }
        let p = pod(json!([c(
            "web",
            "nginx",
            json!([{"name": "BIZ_VERSION", "value": "1"}])
        )]));
        let got = modules_of(&p, &ConfigMapValues::new());
        assert_eq!(
            got[0].1.as_ref().unwrap_err().reason(),
            "InvalidModulePackage"
        );
    }

    #[test]
    fn several_containers_several_modules_and_configmap_refs() {
        let env = |v: &str| json!([{"name": "BIZ_VERSION", "value": v}]);
        let p = pod(json!([
            c("biz1", "https://r/1.jar", env("1")),
            c(
                "biz2",
                "https://r/2.jar",
                json!([{"name": "BIZ_VERSION", "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "biz2"}}}])
            ),
        ]));
        assert_eq!(configmap_refs(&p), [("cm".to_owned(), "biz2".to_owned())]);
        let got = modules_of(&p, &ConfigMapValues::new());
        let names: Vec<_> = got.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["biz1", "biz2"]);
        assert_eq!(
            got[0].1.as_ref().unwrap().biz(),
            BizSpec {
                biz_name: "biz1".into(),
                biz_version: "1".into(),
                biz_url: "https://r/1.jar".into()
            }
        );
        assert!(got[1].1.is_err());
    }
}
