//! Every manifest of `deploy/` validated offline against the Kubernetes OpenAPI schemas, with
//! PyPI's `kubernetes-validate` (installed by `scripts/ensure-deps` into `target/tools/venv`)
//! in strict mode (unknown fields are errors):
//!
//! - each directory with a `kustomization.yaml` as `kubectl kustomize` renders it (so patches
//!   are checked merged, as they are applied), and every other YAML file of that directory is
//!   one its kustomization names (so no file escapes the renderings);
//! - every other YAML file (the base example, the module samples) as it is;
//! - against the Kubernetes version the workspace's `k8s-openapi` is built for and the newest
//!   the validator knows.
//!
//! Every object must pass: an error fails the test, and so does an object the validator has no
//! schema for (a misspelled kind or apiVersion) unless it is one of [`NO_SCHEMA`]: the
//! validator ships the core API's schemas only, not those of CRDs. The number of objects that
//! passed must be the number of objects in the inputs, so a file the validator silently skips
//! fails too. A second test feeds it broken manifests and checks each is caught.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use koupleless_testkit::skip_or_fail;
use serde_json::Value;

/// Kinds of CRDs the validator has no schema for, with why they are left out.
const NO_SCHEMA: &[(&str, &str, &str)] = &[(
    "monitoring.coreos.com/v1",
    "ServiceMonitor",
    "a Prometheus Operator CRD: kubernetes-validate ships the core API's schemas only; \
     deploy_overlays.rs checks it against the metrics Service",
)];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The validator: `KUBERNETES_VALIDATE`, else ensure-deps' virtualenv, else `PATH`.
fn validator() -> Option<PathBuf> {
    let candidates = match std::env::var_os("KUBERNETES_VALIDATE") {
        Some(v) => vec![PathBuf::from(v)],
        None => vec![
            repo().join("target/tools/venv/bin/kubernetes-validate"),
            PathBuf::from("kubernetes-validate"),
        ],
    };
    candidates.into_iter().find(|c| {
        Command::new(c)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    })
}

fn kubectl_bin() -> String {
    std::env::var("KUBECTL").unwrap_or_else(|_| "kubectl".into())
}

fn kubectl_available() -> bool {
    Command::new(kubectl_bin())
        .args(["version", "--client"])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The Kubernetes version `k8s-openapi` is built for (its `v1_NN` feature in Cargo.toml).
fn workspace_kubernetes_version() -> String {
    let cargo = std::fs::read_to_string(repo().join("Cargo.toml")).unwrap();
    let line = cargo
        .lines()
        .find(|l| l.starts_with("k8s-openapi"))
        .expect("k8s-openapi in the workspace");
    let i = line.find("\"v1_").expect("a v1_NN feature") + 4;
    let minor: String = line[i..].chars().take_while(char::is_ascii_digit).collect();
    format!("1.{minor}.0")
}

/// The newest Kubernetes version the validator has schemas for (its default).
fn newest_version(tool: &Path) -> String {
    let help = Command::new(tool).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    let i = help
        .find("Defaults to ")
        .expect("the default version in --help")
        + 12;
    help[i..]
        .split(' ')
        .next()
        .unwrap()
        .trim_end_matches('.')
        .to_owned()
}

fn objects(yaml: &str) -> Vec<Value> {
    yaml.split("\n---")
        .filter_map(|d| serde_norway::from_str::<Option<Value>>(d).expect("YAML"))
        .filter(|v| !v.is_null())
        .collect()
}

/// The file names a kustomization refers to in its own directory.
fn named_by(kustomization: &Value) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let text = |v: &Value| v.as_str().map(str::to_owned);
    for r in kustomization["resources"].as_array().into_iter().flatten() {
        names.extend(text(r));
    }
    for p in kustomization["patches"].as_array().into_iter().flatten() {
        names.extend(text(&p["path"]).or_else(|| text(p)));
    }
    for g in kustomization["configMapGenerator"]
        .as_array()
        .into_iter()
        .flatten()
    {
        for f in g["files"].as_array().into_iter().flatten() {
            let f = f.as_str().unwrap();
            names.insert(f.split_once('=').map_or(f, |(_, p)| p).to_owned());
        }
    }
    names
}

/// The files to validate: (label, path), renderings written under `out`.
fn inputs(out: &Path) -> Vec<(String, PathBuf)> {
    let deploy = repo().join("deploy");
    let mut dirs = vec![deploy.clone()];
    let mut files = Vec::new();
    while let Some(dir) = dirs.pop() {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        entries.sort();
        let kustomization = dir.join("kustomization.yaml");
        let rel = dir.strip_prefix(&deploy).unwrap().display().to_string();
        let named = kustomization.exists().then(|| {
            let k: Value =
                serde_norway::from_str(&std::fs::read_to_string(&kustomization).unwrap()).unwrap();
            let rendered = Command::new(kubectl_bin())
                .arg("kustomize")
                .arg(&dir)
                .output()
                .expect("kubectl runs");
            assert!(
                rendered.status.success(),
                "kubectl kustomize deploy/{rel}: {}",
                String::from_utf8_lossy(&rendered.stderr)
            );
            let path = out.join(format!("{}.yaml", rel.replace('/', "_")));
            std::fs::write(&path, &rendered.stdout).unwrap();
            files.push((format!("kubectl kustomize deploy/{rel}"), path));
            named_by(&k)
        });
        for e in entries {
            let name = e.file_name().unwrap().to_str().unwrap().to_owned();
            if e.is_dir() {
                dirs.push(e);
            } else if name.ends_with(".yaml") || name.ends_with(".yml") {
                match &named {
                    Some(_) if name == "kustomization.yaml" => {}
                    Some(named) => assert!(
                        named.contains(&name),
                        "deploy/{rel}/{name} is in a kustomization's directory but the \
                         kustomization does not name it: it would never be applied nor checked"
                    ),
                    None => files.push((format!("deploy/{rel}/{name}"), e)),
                }
            }
        }
    }
    files
}

/// What the validator made of some files.
#[derive(Debug, Default)]
struct Verdict {
    /// `kind/name` of each object that passed, once per version.
    passed: usize,
    /// Objects left out on purpose ([`NO_SCHEMA`]), with the reason.
    skipped: Vec<String>,
    /// Everything else: errors, objects without a schema, a failed exit.
    problems: Vec<String>,
}

/// Runs the validator (strict) on `files` against `version`.
fn validate(tool: &Path, files: &[(String, PathBuf)], version: &str) -> Verdict {
    let out = Command::new(tool)
        .args(["--strict", "-k", version])
        .args(files.iter().map(|(_, p)| p))
        .output()
        .expect("kubernetes-validate runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let mut v = Verdict::default();
    for line in text.lines() {
        // Name the input as a person knows it, not by its temp path.
        let mut line = line.to_owned();
        for (label, path) in files {
            line = line.replace(path.to_str().unwrap(), label);
        }
        if line.starts_with("INFO ") && line.contains(" passed for resource ") {
            v.passed += 1;
        } else if let Some(rest) = line.strip_prefix("WARN ") {
            let known = NO_SCHEMA.iter().find(|(api, kind, _)| {
                rest.contains(&format!(
                    "Couldn't find schema for kind {kind} with api version {api} "
                ))
            });
            match known {
                Some((_, _, why)) => v.skipped.push(format!("{line}: {why}")),
                None => v.problems.push(line),
            }
        } else if !line.trim().is_empty() {
            v.problems.push(line);
        }
    }
    if !out.status.success() && v.problems.is_empty() {
        v.problems.push(format!("exit {}: {text}", out.status));
    }
    v
}

fn ready() -> Option<PathBuf> {
    let test = "deploy_validate";
    if !kubectl_available() {
        skip_or_fail(
            test,
            "kubectl is not installed (it renders the kustomizations)",
        );
        return None;
    }
    let tool = validator();
    if tool.is_none() {
        skip_or_fail(
            test,
            "kubernetes-validate is not installed (scripts/ensure-deps installs it into \
             target/tools/venv; or set KUBERNETES_VALIDATE)",
        );
    }
    tool
}

#[test]
fn every_manifest_matches_the_kubernetes_schemas() {
    let Some(tool) = ready() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let files = inputs(tmp.path());
    let count: usize = files
        .iter()
        .map(|(_, p)| objects(&std::fs::read_to_string(p).unwrap()).len())
        .sum();
    for (label, _) in &files {
        eprintln!("validating {label}");
    }
    for rendered in [
        "overlays/quick-start",
        "overlays/production",
        "overlays/monitoring",
    ] {
        assert!(
            files
                .iter()
                .any(|(l, _)| l == &format!("kubectl kustomize deploy/{rendered}")),
            "{rendered} is validated"
        );
    }
    let versions = [workspace_kubernetes_version(), newest_version(&tool)];
    for version in &versions {
        let v = validate(&tool, &files, version);
        // Only the kinds of NO_SCHEMA may go without a schema, and each of them must be there
        // (a ServiceMonitor is checked as data by deploy_overlays.rs instead): nothing is
        // left out silently.
        for (_, kind, _) in NO_SCHEMA {
            assert!(
                v.skipped.iter().any(|s| s.contains(kind)),
                "Kubernetes {version}: the {kind} of the monitoring overlay was rendered: {:?}",
                v.skipped
            );
        }
        for s in &v.skipped {
            eprintln!("not schema-checked here (checked as data in deploy_overlays.rs): {s}");
        }
        assert!(
            v.problems.is_empty(),
            "Kubernetes {version}:\n{}",
            v.problems.join("\n")
        );
        assert_eq!(
            v.passed + v.skipped.len(),
            count,
            "Kubernetes {version}: every object of the inputs is validated"
        );
        eprintln!(
            "Kubernetes {version}: {} objects passed, {} without a schema",
            v.passed,
            v.skipped.len()
        );
    }
}

#[test]
fn broken_manifests_are_caught() {
    let Some(tool) = ready() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let good = std::fs::read_to_string(repo().join("deploy/modules/module-pod.yaml")).unwrap();
    let cases = [
        // A field of the wrong type.
        ("type", good.replace("- name: biz1", "- name: 7")),
        // A misspelled field (strict mode).
        ("unknown field", good.replace("tolerations:", "toleration:")),
        // A misspelled kind: no schema, which only NO_SCHEMA's kinds may have.
        ("kind", good.replace("kind: Pod", "kind: Pdo")),
        // A required field missing.
        ("required", good.replace("- name: biz1", "- nam: biz1")),
    ];
    let version = workspace_kubernetes_version();
    let ok = tmp.path().join("ok.yaml");
    std::fs::write(&ok, &good).unwrap();
    let v = validate(&tool, &[("ok".into(), ok)], &version);
    assert!(v.problems.is_empty() && v.passed == 1, "{v:?}");
    for (what, text) in cases {
        assert_ne!(text, good, "{what}: the case changes the manifest");
        let path = tmp.path().join("broken.yaml");
        std::fs::write(&path, &text).unwrap();
        let v = validate(&tool, &[(what.to_owned(), path)], &version);
        assert!(
            !v.problems.is_empty() && v.passed == 0,
            "{what} is caught: {v:?}"
        );
        eprintln!("{what}: {}", v.problems.join(" | "));
    }
}
