//! The deploy manifests are accepted by the API (server-side validation through kubectl) and
//! carry the upstream environment variables.

mod common;

use common::*;

fn manifest(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy/controller")
        .join(name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manifests_apply_and_name_the_upstream_variables() {
    init_logs();
    let kube = Kube::start().await;
    let kubeconfig = kube.server.write_kubeconfig_tempfile().unwrap();
    for file in ["namespace.yaml", "deployment.yaml", "service.yaml"] {
        let out = tokio::process::Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(kubeconfig.path())
            .args(["apply", "-f"])
            .arg(manifest(file))
            .output()
            .await
            .expect("kubectl");
        assert!(
            out.status.success(),
            "{file}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let deployments: kube::Api<k8s_openapi::api::apps::v1::Deployment> =
        kube::Api::namespaced(kube.client.clone(), "koupleless");
    let d = deployments.get("koupleless-controller").await.unwrap();
    let pod = d.spec.unwrap().template.spec.unwrap();
    assert_eq!(
        pod.service_account_name.as_deref(),
        Some("koupleless-controller")
    );
    let c = &pod.containers[0];
    let env: Vec<&str> = c.env.iter().flatten().map(|e| e.name.as_str()).collect();
    for var in [
        "ENV",
        "POD_NAME",
        "NAMESPACE",
        "ENABLE_MQTT_TUNNEL",
        "MQTT_BROKER",
        "MQTT_PORT",
        "MQTT_USERNAME",
        "MQTT_PASSWORD",
        "MQTT_CLIENT_PREFIX",
        "ENABLE_HTTP_TUNNEL",
        "HTTP_TUNNEL_LISTEN_PORT",
    ] {
        assert!(env.contains(&var), "{var} missing");
    }
    // Every variable the Deployment sets is one the binary reads.
    let args = koupleless_controller::Args::try_parse_from(["koupleless-controller", "--help"]);
    let help = match args {
        Err(e) => e.render().to_string(),
        Ok(_) => String::new(),
    };
    for var in env.iter().filter(|v| !["POD_NAME", "RUST_LOG"].contains(v)) {
        assert!(
            help.contains(&format!("env: {var}")),
            "{var} is not read by the binary"
        );
    }
    let ports: Vec<i32> = c.ports.iter().flatten().map(|p| p.container_port).collect();
    assert_eq!(ports, [7777, 8081, 9090, 10250]);

    // RBAC: what the controller does.
    let rbac = std::fs::read_to_string(manifest("rbac.yaml")).unwrap();
    for needle in [
        r#"resources: ["nodes"]"#,
        r#"verbs: ["get", "list", "watch", "create", "patch", "delete"]"#,
        r#"resources: ["nodes/status"]"#,
        r#"resources: ["leases"]"#,
        "namespace: kube-node-lease",
        r#"resources: ["deployments"]"#,
        r#"apiGroups: ["events.k8s.io"]"#,
        r#"resources: ["pods"]"#,
        r#"verbs: ["get", "list", "watch", "delete"]"#,
        r#"resources: ["pods/status"]"#,
        r#"resources: ["configmaps"]"#,
        r#"resources: ["tokenreviews"]"#,
        r#"resources: ["subjectaccessreviews"]"#,
    ] {
        assert!(rbac.contains(needle), "rbac.yaml lacks {needle}");
    }
    assert!(!rbac.contains("secrets"), "no unused grants");
}

use clap::Parser as _;
