//! The kustomize overlays of `deploy/overlays/` and the container images of `deploy/images/`.
//!
//! - Each overlay renders with `kubectl kustomize` (kubectl's built-in kustomize).
//! - quick-start is applied to the test cluster (API server, scheduler, workload controllers):
//!   the controller Deployment gets its two Pods and the broker its Pod; the controller's
//!   settings, parsed by the controller's own argument parser from the rendered environment,
//!   name the broker the overlay runs.
//! - production is applied to the API server; its environment parses into MQTT over TLS with a
//!   client certificate, every file path inside the read-only mount of the TLS Secret and the
//!   broker's address and credentials from a Secret.
//! - monitoring: the test server does not serve the Prometheus Operator's ServiceMonitor kind
//!   (kubectl's refusal is checked, and the dashboard ConfigMap of the same rendering is still
//!   created); the ServiceMonitor is checked as data against the metrics Service and the
//!   Deployment, and every metric and label the Grafana dashboard queries is one the
//!   controller's registry exposes.
//! - The Dockerfiles cannot be built here (no container engine): they are checked as text
//!   against `cargo metadata` (package and binary names), the manifests (image names, ports)
//!   and the workspace's `rust-version`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use clap::{CommandFactory, Parser};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Container, Node, Pod, Service};
use koupleless_controller::Args;
use koupleless_controller::metrics::{
    Metrics, StateLabels, TransitionLabels, Tunnel, TunnelLabels,
};
use koupleless_controller::registry::VNodeState;
use koupleless_controller::tunnel::TunnelKind;
use koupleless_testkit::eventually;
use kube::Api;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

const T: Duration = Duration::from_secs(30);

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn kubectl_bin() -> String {
    std::env::var("KUBECTL").unwrap_or_else(|_| "kubectl".into())
}

/// `kubectl kustomize deploy/<dir>`, as YAML text.
fn kustomize(dir: &str) -> String {
    let out = std::process::Command::new(kubectl_bin())
        .arg("kustomize")
        .arg(repo().join("deploy").join(dir))
        .output()
        .expect("kubectl runs");
    assert!(
        out.status.success(),
        "kubectl kustomize deploy/{dir}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The objects of a multi-document YAML stream.
fn documents(yaml: &str) -> Vec<Value> {
    yaml.split("\n---\n")
        .filter(|d| !d.trim().is_empty())
        .map(|d| serde_norway::from_str::<Value>(d).expect("a YAML object"))
        .collect()
}

fn find<'a>(objs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objs.iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("{kind} {name} is rendered"))
}

fn typed<K: k8s_openapi::serde::de::DeserializeOwned>(v: &Value) -> K {
    serde_json::from_value(v.clone()).expect("a valid object")
}

/// `kubectl apply -f -` with `yaml` on stdin; returns (success, stdout + stderr).
async fn apply_stdin(kubeconfig: &Path, yaml: &str, extra: &[&str]) -> (bool, String) {
    let mut child = tokio::process::Command::new(kubectl_bin())
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(["apply", "-f", "-"])
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl runs");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(yaml.as_bytes()).await.unwrap();
    drop(stdin);
    let out = child.wait_with_output().await.unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn controller_container(objs: &[Value]) -> Container {
    let d: Deployment = typed(find(objs, "Deployment", "koupleless-controller"));
    d.spec.unwrap().template.spec.unwrap().containers.remove(0)
}

/// The controller's arguments as the container's environment gives them, parsed by the
/// controller's own parser: each variable must be one the controller reads. Values from the
/// downward API and from Secrets are stood in for (a port for a `port` key), and `$(VAR)`
/// references expand as the kubelet expands them.
fn controller_args(c: &Container) -> Args {
    let cmd = Args::command();
    let mut argv = vec!["koupleless-controller".to_owned()];
    let mut seen: BTreeMap<String, String> = BTreeMap::new();
    for var in c.env.iter().flatten() {
        let value = match (&var.value, &var.value_from) {
            (Some(v), None) => {
                let mut v = v.clone();
                for (name, val) in &seen {
                    v = v.replace(&format!("$({name})"), val);
                }
                v
            }
            (None, Some(from)) => {
                if let Some(f) = &from.field_ref {
                    format!("downward-{}", f.field_path.replace('.', "-"))
                } else if let Some(s) = &from.secret_key_ref {
                    if s.key == "port" {
                        "8883".into()
                    } else {
                        format!("secret-{}-{}", s.name, s.key)
                    }
                } else {
                    panic!("{}: unexpected source", var.name)
                }
            }
            other => panic!(
                "{}: value and valueFrom both or neither: {other:?}",
                var.name
            ),
        };
        seen.insert(var.name.clone(), value.clone());
        if var.name == "RUST_LOG" {
            continue;
        }
        let arg = cmd
            .get_arguments()
            .find(|a| a.get_env().is_some_and(|e| e == var.name.as_str()))
            .unwrap_or_else(|| panic!("{} is not read by the controller", var.name));
        argv.push(format!("--{}", arg.get_long().unwrap()));
        argv.push(value);
    }
    Args::try_parse_from(&argv).unwrap_or_else(|e| panic!("{argv:?}: {e}"))
}

fn env_value<'a>(c: &'a Container, name: &str) -> Option<&'a str> {
    c.env
        .iter()
        .flatten()
        .find(|e| e.name == name)
        .and_then(|e| e.value.as_deref())
}

/// An ordinary Node with room for the controller and the broker.
async fn create_worker(nodes: &Api<Node>, name: &str) {
    let node: Node = serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
    }))
    .unwrap();
    nodes.create(&PostParams::default(), &node).await.unwrap();
    nodes
        .patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {
                "capacity": {"cpu": "4", "memory": "8Gi", "pods": "110"},
                "allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110"},
                "conditions": [{"type": "Ready", "status": "True"}],
            }})),
        )
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quick_start_runs_the_controller_and_its_broker() {
    let yaml = kustomize("overlays/quick-start");
    let objs = documents(&yaml);
    let c = controller_container(&objs);
    let settings = controller_args(&c).settings().expect("valid settings");
    let mqtt = settings.mqtt.expect("MQTT tunnel on");
    assert!(settings.http.is_some(), "HTTP tunnel on");
    assert!(mqtt.tls.is_none(), "the quick-start broker has no TLS");
    // The controller and the example base talk to the broker the overlay runs.
    let broker: Service = typed(find(&objs, "Service", "mqtt-broker"));
    let ns = broker.metadata.namespace.clone().unwrap();
    assert_eq!(mqtt.host, format!("mqtt-broker.{ns}.svc"));
    let port = broker.spec.as_ref().unwrap().ports.as_ref().unwrap()[0].port;
    assert_eq!(i32::from(mqtt.port), port);
    let base: Deployment = serde_norway::from_str(
        &std::fs::read_to_string(repo().join("deploy/agent/base-with-agent.yaml")).unwrap(),
    )
    .unwrap();
    let agent = base
        .spec
        .unwrap()
        .template
        .spec
        .unwrap()
        .containers
        .into_iter()
        .find(|c| c.name == "agent")
        .unwrap();
    assert_eq!(
        env_value(&agent, "KOUPLELESS_ARKLET_MQTT_BROKER"),
        Some(mqtt.host.as_str())
    );
    assert_eq!(
        env_value(&agent, "KOUPLELESS_ARKLET_MQTT_PORT"),
        Some(port.to_string().as_str())
    );
    assert_eq!(
        env_value(&agent, "KOUPLELESS_RUNTIME_ENV"),
        Some(settings.env.to_string().as_str()),
        "the base's env is the controller's"
    );

    // Applied as the README says, to a cluster with one worker Node.
    let (client, cluster) = koupleless_kube_apiserver::cluster::start_cluster()
        .await
        .expect("test cluster");
    let kubeconfig = cluster.server().write_kubeconfig_tempfile().unwrap();
    create_worker(&Api::all(client.clone()), "worker-1").await;
    let (ok, text) = apply_stdin(kubeconfig.path(), &yaml, &[]).await;
    assert!(ok, "kubectl apply: {text}");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "koupleless");
    let running = eventually(T, || {
        let pods = pods.clone();
        async move {
            let bound = |sel: &str| {
                let pods = pods.clone();
                let sel = sel.to_owned();
                async move {
                    pods.list(&ListParams::default().labels(&sel))
                        .await
                        .unwrap()
                        .items
                        .iter()
                        .filter(|p| {
                            p.spec
                                .as_ref()
                                .and_then(|s| s.node_name.as_deref())
                                .is_some()
                        })
                        .count()
                }
            };
            bound("app.kubernetes.io/name=koupleless-controller").await == 2
                && bound("app.kubernetes.io/name=mqtt-broker").await == 1
        }
    })
    .await;
    let all: Vec<_> = pods
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|p| {
            (
                p.metadata.name,
                p.status.and_then(|s| s.conditions).unwrap_or_default(),
            )
        })
        .collect();
    assert!(running, "2 controller Pods and the broker bound: {all:?}");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn production_takes_the_broker_and_tls_from_secrets() {
    let yaml = kustomize("overlays/production");
    let objs = documents(&yaml);
    assert!(
        !objs.iter().any(|o| o["metadata"]["name"] == "mqtt-broker"),
        "no in-cluster broker in production"
    );
    let d: Deployment = typed(find(&objs, "Deployment", "koupleless-controller"));
    let pod = d.spec.unwrap().template.spec.unwrap();
    let c = &pod.containers[0];
    let settings = controller_args(c).settings().expect("valid settings");
    let mqtt = settings.mqtt.expect("MQTT tunnel on");
    let tls = mqtt.tls.expect("MQTT over TLS");
    let (crt, key) = tls.client_cert.expect("a client certificate");
    assert_eq!(mqtt.port, 8883, "the port comes from the Secret");
    for var in ["MQTT_BROKER", "MQTT_PORT", "MQTT_USERNAME", "MQTT_PASSWORD"] {
        let e = c.env.iter().flatten().find(|e| e.name == var).unwrap();
        let s = e
            .value_from
            .as_ref()
            .and_then(|v| v.secret_key_ref.as_ref())
            .unwrap_or_else(|| panic!("{var} from a Secret"));
        assert_eq!(s.name, "koupleless-mqtt", "{var}");
        assert_ne!(s.optional, Some(true), "{var}: required");
        assert!(e.value.is_none(), "{var}: no literal value left");
    }
    // The TLS files are in the read-only mount of the TLS Secret, under its keys.
    let mount = c
        .volume_mounts
        .iter()
        .flatten()
        .find(|m| m.name == "mqtt-tls")
        .expect("TLS mount");
    assert_eq!(mount.read_only, Some(true));
    let secret = pod
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == "mqtt-tls")
        .and_then(|v| v.secret.clone())
        .expect("a Secret volume");
    assert_eq!(secret.secret_name.as_deref(), Some("koupleless-mqtt-tls"));
    for path in [&tls.ca_path, &crt, &key] {
        let rel = path
            .strip_prefix(&mount.mount_path)
            .unwrap_or_else(|_| panic!("{path:?} under {}", mount.mount_path));
        assert!(
            ["ca.crt", "tls.crt", "tls.key"].contains(&rel.to_str().unwrap()),
            "{rel:?} is a key of the Secret"
        );
    }
    // The hardening of the base survives the patch.
    let sc = c.security_context.clone().unwrap();
    assert_eq!(sc.read_only_root_filesystem, Some(true));

    let (client, server) = koupleless_kube_apiserver::start()
        .await
        .expect("API test server");
    let kubeconfig = server.write_kubeconfig_tempfile().unwrap();
    let (ok, text) = apply_stdin(kubeconfig.path(), &yaml, &[]).await;
    assert!(ok, "kubectl apply: {text}");
    let deployments: Api<Deployment> = Api::namespaced(client, "koupleless");
    let stored = deployments.get("koupleless-controller").await.unwrap();
    assert_eq!(stored.spec.unwrap().replicas, Some(2));
    server.shutdown().await;
}

/// Sample names (with `_total`, `_bucket`...) of the controller's registry and their label
/// names, with one sample recorded in every family.
fn exposed_metrics() -> BTreeMap<String, BTreeSet<String>> {
    let m = Metrics::new();
    m.command(TunnelKind::Mqtt, "installBiz");
    m.module_outcome("installed");
    m.tunnel_error(TunnelKind::Http, "connection");
    let _ = m.api("node", "get").done::<()>(Ok(()));
    m.heartbeats
        .get_or_create(&TunnelLabels {
            tunnel: Tunnel::mqtt,
        })
        .inc();
    m.transitions
        .get_or_create(&TransitionLabels {
            transition: "ready",
        })
        .inc();
    m.vnodes
        .get_or_create(&StateLabels { state: "ready" })
        .set(1);
    m.mqtt_connections.inc();
    m.status_unchanged.inc();
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in m.encode().lines().filter(|l| !l.starts_with('#')) {
        let name_end = line.find(['{', ' ']).unwrap_or(line.len());
        let labels = out.entry(line[..name_end].to_owned()).or_default();
        if let Some(rest) = line[name_end..].strip_prefix('{') {
            for pair in rest[..rest.find('}').unwrap()].split(',') {
                labels.insert(pair.split('=').next().unwrap().to_owned());
            }
        }
    }
    out
}

fn metric_names(expr: &str) -> Vec<&str> {
    let mut names = Vec::new();
    let mut rest = expr;
    while let Some(i) = rest.find("koupleless_controller_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.push(&tail[..end]);
        rest = &tail[end..];
    }
    names
}

/// Label names an expression groups by (`by (a, b)`) or matches on (`{a="x", b=~"y"}`).
fn label_names(expr: &str) -> BTreeSet<String> {
    let mut labels = BTreeSet::new();
    for (i, _) in expr.match_indices("by (") {
        let inner = &expr[i + 4..];
        for l in inner[..inner.find(')').unwrap()].split(',') {
            labels.insert(l.trim().to_owned());
        }
    }
    for (i, _) in expr.match_indices('{') {
        let inner = &expr[i + 1..];
        for m in inner[..inner.find('}').unwrap()].split(',') {
            let key = m.split(['=', '!']).next().unwrap().trim();
            labels.insert(key.to_owned());
        }
    }
    labels
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monitoring_scrapes_the_metrics_service_and_charts_real_metrics() {
    let yaml = kustomize("overlays/monitoring");
    let objs = documents(&yaml);
    let sm = find(&objs, "ServiceMonitor", "koupleless-controller");
    assert_eq!(sm["apiVersion"], "monitoring.coreos.com/v1");
    let dashboard_cm: ConfigMap =
        typed(find(&objs, "ConfigMap", "koupleless-controller-dashboard"));
    assert_eq!(
        dashboard_cm
            .metadata
            .labels
            .as_ref()
            .unwrap()
            .get("grafana_dashboard")
            .map(String::as_str),
        Some("1"),
        "Grafana's sidecar label"
    );
    let from_file =
        std::fs::read_to_string(repo().join("deploy/overlays/monitoring/grafana-dashboard.json"))
            .unwrap();
    let in_cm = &dashboard_cm.data.as_ref().unwrap()["koupleless-controller.json"];
    assert_eq!(
        in_cm.trim(),
        from_file.trim(),
        "the ConfigMap carries the JSON file"
    );

    // The ServiceMonitor selects exactly the metrics Service of deploy/controller, by a port
    // that Service has, which reaches the controller's metrics listener.
    let controller = documents(&kustomize("controller"));
    let services: Vec<Service> = controller
        .iter()
        .filter(|o| o["kind"] == "Service")
        .map(typed)
        .collect();
    let selector = sm["spec"]["selector"]["matchLabels"].as_object().unwrap();
    let selected: Vec<&Service> = services
        .iter()
        .filter(|s| {
            let labels = s.metadata.labels.clone().unwrap_or_default();
            selector
                .iter()
                .all(|(k, v)| labels.get(k).map(String::as_str) == v.as_str())
        })
        .collect();
    assert_eq!(selected.len(), 1, "one Service selected");
    let svc = selected[0];
    assert_eq!(
        sm["spec"]["namespaceSelector"]["matchNames"][0].as_str(),
        svc.metadata.namespace.as_deref()
    );
    let endpoint = &sm["spec"]["endpoints"][0];
    let port = svc
        .spec
        .as_ref()
        .unwrap()
        .ports
        .iter()
        .flatten()
        .find(|p| Some(p.name.as_deref().unwrap_or_default()) == endpoint["port"].as_str())
        .expect("the endpoint's port is a port of the Service");
    let target = match port.target_port.clone().unwrap() {
        k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String(s) => s,
        other => panic!("a named target port: {other:?}"),
    };
    let c = controller_container(&controller);
    let container_port = c
        .ports
        .iter()
        .flatten()
        .find(|p| p.name.as_deref() == Some(target.as_str()))
        .expect("the target port is a port of the controller")
        .container_port;
    let args = controller_args(&c);
    assert_eq!(
        i32::from(args.metrics_addr.port()),
        container_port,
        "the controller's metrics listener"
    );
    assert_eq!(endpoint["path"], "/metrics");

    // Every query names metrics and labels the controller exposes; the issue's panels are
    // there (bases by state, heartbeats, API requests and latency, installs, tunnel errors).
    let dashboard: Value = serde_json::from_str(&from_file).unwrap();
    let exposed = exposed_metrics();
    let target_labels = ["job", "pod", "instance", "namespace"];
    let mut used = BTreeSet::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for t in panel["targets"].as_array().into_iter().flatten() {
            let expr = t["expr"].as_str().unwrap();
            let names = metric_names(expr);
            assert!(!names.is_empty(), "{expr}");
            let mut labels_available: BTreeSet<String> =
                target_labels.iter().map(|s| s.to_string()).collect();
            for n in &names {
                let labels = exposed
                    .get(*n)
                    .unwrap_or_else(|| panic!("{n} is not exposed by the controller ({expr})"));
                labels_available.extend(labels.iter().cloned());
                used.insert(n.to_string());
            }
            for l in label_names(expr) {
                assert!(
                    labels_available.contains(&l),
                    "label {l} of {expr} is not on {names:?}"
                );
            }
            for state in ["ready", "unreachable", "standby", "deleting"] {
                if expr.contains(&format!("state=\"{state}\"")) {
                    assert!(VNodeState::ALL.iter().any(|s| s.as_str() == state));
                }
            }
        }
    }
    for needed in [
        "koupleless_controller_vnodes",
        "koupleless_controller_heartbeats_total",
        "koupleless_controller_kube_api_requests_total",
        "koupleless_controller_kube_api_request_duration_seconds_bucket",
        "koupleless_controller_commands_total",
        "koupleless_controller_module_outcomes_total",
        "koupleless_controller_tunnel_errors_total",
    ] {
        assert!(used.contains(needed), "a panel of {needed}");
    }
    assert_eq!(
        dashboard["templating"]["list"][0]["type"], "datasource",
        "the data source is chosen on import"
    );

    // Applied: the test server does not serve ServiceMonitor, as kubectl reports, and creates
    // the dashboard ConfigMap of the same rendering.
    let (client, server) = koupleless_kube_apiserver::start()
        .await
        .expect("API test server");
    let kubeconfig = server.write_kubeconfig_tempfile().unwrap();
    let (ok, text) = apply_stdin(
        kubeconfig.path(),
        &documents_yaml(&documents(&kustomize("controller")), "Namespace"),
        &[],
    )
    .await;
    assert!(ok, "namespace: {text}");
    let (ok, text) = apply_stdin(kubeconfig.path(), &yaml, &["--validate=false"]).await;
    assert!(
        !ok && text.contains(r#"no matches for kind "ServiceMonitor""#),
        "ServiceMonitor is not served here: {text}"
    );
    let cms: Api<ConfigMap> = Api::namespaced(client, "koupleless");
    assert!(
        cms.get("koupleless-controller-dashboard").await.is_ok(),
        "the dashboard ConfigMap is applied: {text}"
    );
    server.shutdown().await;
}

/// The objects of `kind` as a YAML stream.
fn documents_yaml(objs: &[Value], kind: &str) -> String {
    objs.iter()
        .filter(|o| o["kind"] == kind)
        .map(|o| serde_json::to_string(o).unwrap())
        .collect::<Vec<_>>()
        .join("\n---\n")
}

/// One Dockerfile instruction per logical line (continuations joined, comments dropped).
fn instructions(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with('#') || (t.is_empty() && current.is_empty()) {
            continue;
        }
        if let Some(cont) = t.strip_suffix('\\') {
            current.push_str(cont);
            current.push(' ');
            continue;
        }
        current.push_str(t);
        let (op, args) = current.split_once(' ').unwrap();
        out.push((op.to_uppercase(), args.trim().to_owned()));
        current.clear();
    }
    out
}

#[test]
fn dockerfiles_build_the_real_binaries_into_non_root_images() {
    let meta = std::process::Command::new(std::env::var("CARGO").unwrap_or("cargo".into()))
        .args([
            "metadata",
            "--no-deps",
            "--format-version",
            "1",
            "--offline",
        ])
        .current_dir(repo())
        .output()
        .expect("cargo metadata");
    assert!(meta.status.success());
    let meta: Value = serde_json::from_slice(&meta.stdout).unwrap();
    let workspace = std::fs::read_to_string(repo().join("Cargo.toml")).unwrap();
    let field = |key: &str| {
        workspace
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{key} = \"")))
            .and_then(|v| v.strip_suffix('"'))
            .unwrap()
            .to_owned()
    };
    let (rust_version, version) = (field("rust-version"), field("version"));

    // (Dockerfile, container of the manifest that runs the image)
    let controller = controller_container(&documents(&kustomize("controller")));
    let base: Deployment = serde_norway::from_str(
        &std::fs::read_to_string(repo().join("deploy/agent/base-with-agent.yaml")).unwrap(),
    )
    .unwrap();
    let agent = base
        .spec
        .unwrap()
        .template
        .spec
        .unwrap()
        .containers
        .into_iter()
        .find(|c| c.name == "agent")
        .unwrap();
    for (file, container) in [("controller", controller), ("agent", agent)] {
        let path = repo().join(format!("deploy/images/{file}.Dockerfile"));
        let text = std::fs::read_to_string(&path).unwrap();
        let ins = instructions(&text);
        let froms: Vec<&str> = ins
            .iter()
            .filter(|(op, _)| op == "FROM")
            .map(|(_, a)| a.as_str())
            .collect();
        assert_eq!(froms.len(), 2, "{file}: multi-stage");
        let builder = froms[0];
        assert!(builder.ends_with(" AS build"), "{file}: {builder}");
        let rust = builder
            .strip_prefix("rust:")
            .and_then(|r| r.split('-').next())
            .expect("an official Rust image");
        let parse = |v: &str| -> Vec<u32> { v.split('.').map(|p| p.parse().unwrap()).collect() };
        assert!(
            parse(rust) >= parse(&rust_version),
            "{file}: Rust {rust} < rust-version {rust_version}"
        );
        assert!(
            froms[1].contains("distroless") && froms[1].ends_with(":nonroot"),
            "{file}: minimal non-root runtime: {}",
            froms[1]
        );

        let run = ins
            .iter()
            .find(|(op, a)| op == "RUN" && a.contains("cargo build"))
            .map(|(_, a)| a.clone())
            .expect("a cargo build");
        let words: Vec<&str> = run.split_whitespace().collect();
        assert!(
            words.contains(&"--locked") && words.contains(&"--release"),
            "{file}: {run}"
        );
        let after =
            |flag: &str| words[words.iter().position(|w| *w == flag).unwrap() + 1].to_owned();
        let (package, bin) = (after("-p"), after("--bin"));
        let pkg = meta["packages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == package.as_str())
            .unwrap_or_else(|| panic!("{file}: no package {package}"));
        assert!(
            pkg["targets"].as_array().unwrap().iter().any(|t| {
                t["name"] == bin.as_str() && t["kind"].as_array().unwrap().contains(&json!("bin"))
            }),
            "{file}: {package} has no binary {bin}"
        );

        let workdir = ins
            .iter()
            .find(|(op, _)| op == "WORKDIR")
            .map(|(_, a)| a.clone())
            .unwrap();
        let copy = ins
            .iter()
            .find(|(op, a)| op == "COPY" && a.starts_with("--from=build "))
            .map(|(_, a)| a.clone())
            .expect("the binary copied from the build stage");
        let parts: Vec<&str> = copy.split_whitespace().collect();
        assert_eq!(
            parts[1],
            format!("{workdir}/target/release/{bin}"),
            "{file}"
        );
        let dest = parts[2];
        let entry = ins
            .iter()
            .find(|(op, _)| op == "ENTRYPOINT")
            .map(|(_, a)| a.clone())
            .unwrap();
        assert_eq!(entry, format!("[\"{dest}\"]"), "{file}");
        let user = ins
            .iter()
            .rfind(|(op, _)| op == "USER")
            .map(|(_, a)| a.clone())
            .expect("USER");
        let uid: u32 = user
            .split(':')
            .next()
            .unwrap()
            .parse()
            .expect("numeric uid");
        assert_ne!(uid, 0, "{file}: not root");

        // The manifests run this image under the tag the build command gives it, and open
        // exactly the ports the image exposes.
        let tag = format!("koupleless/{bin}:{version}");
        assert!(
            text.contains(&format!("-t {tag} .")),
            "{file}: documented build command tags {tag}"
        );
        assert_eq!(container.image.as_deref(), Some(tag.as_str()), "{file}");
        let exposed: BTreeSet<i32> = ins
            .iter()
            .filter(|(op, _)| op == "EXPOSE")
            .flat_map(|(_, a)| a.split_whitespace().map(|p| p.parse::<i32>().unwrap()))
            .collect();
        let declared: BTreeSet<i32> = container
            .ports
            .iter()
            .flatten()
            .map(|p| p.container_port)
            .collect();
        assert_eq!(exposed, declared, "{file}: EXPOSE and the manifest's ports");

        let ignore = std::fs::read_to_string(
            repo().join(format!("deploy/images/{file}.Dockerfile.dockerignore")),
        )
        .unwrap();
        assert!(
            ignore.lines().any(|l| l.trim() == "**/target"),
            "{file}: build outputs stay out of the context"
        );
    }
}
