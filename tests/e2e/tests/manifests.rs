//! The agent and module manifests in `deploy/` are accepted by the API (kubectl against the API
//! test server), and every environment variable the agent sidecar sets is one the agent reads.
//! (The overlays, the broker and the other samples are applied by `deploy_overlays.rs` and
//! `deploy_samples.rs`.)

use clap::{CommandFactory, Parser};
use k8s_openapi::api::apps::v1::Deployment;

fn manifest(rel: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../deploy")
        .join(rel)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_and_module_manifests_apply_and_name_real_flags() {
    let (client, server) = koupleless_kube_apiserver::start()
        .await
        .expect("API test server");
    let kubeconfig = server.write_kubeconfig_tempfile().unwrap();
    for file in [
        "agent/base-with-agent.yaml",
        "modules/module-deployment.yaml",
    ] {
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
    let deployments: kube::Api<Deployment> = kube::Api::namespaced(client.clone(), "default");
    let base = deployments.get("base").await.unwrap();
    let pod = base.spec.unwrap().template.spec.unwrap();
    assert_eq!(
        pod.share_process_namespace,
        Some(true),
        "health needs the shared namespace"
    );
    let agent = pod
        .containers
        .iter()
        .find(|c| c.name == "agent")
        .expect("agent sidecar");
    // Every variable is a flag of the agent; turn them into flags and check that the agent
    // accepts the configuration as it would at start-up.
    let cmd = koupleless_agent::config::Config::command();
    let mut argv = vec!["koupleless-agent".to_owned()];
    for var in agent.env.iter().flatten() {
        if matches!(var.name.as_str(), "POD_IP" | "RUST_LOG") {
            continue;
        }
        let arg = cmd
            .get_arguments()
            .find(|a| a.get_env().is_some_and(|e| e == var.name.as_str()))
            .unwrap_or_else(|| panic!("{} is not read by the agent", var.name));
        // Secrets come from a secretKeyRef in the manifest; any value will do here.
        let value = var.value.clone().unwrap_or_else(|| "from-secret".into());
        let flag = format!("--{}", arg.get_long().unwrap());
        if arg.get_action().takes_values() {
            argv.push(flag);
            argv.push(value);
        } else {
            // A switch: clap reads its variable as a boolean; only "true" turns it on.
            assert!(
                matches!(value.as_str(), "true" | "false"),
                "{}: a switch takes true or false, not {value:?}",
                var.name
            );
            if value == "true" {
                argv.push(flag);
            }
        }
    }
    let cfg = koupleless_agent::config::Config::try_parse_from(&argv)
        .unwrap_or_else(|e| panic!("{argv:?}: {e}"));
    assert_eq!(
        cfg.backend,
        koupleless_agent::config::BackendKind::ArkTelnet
    );
    cfg.ark_telnet
        .config(
            cfg.work_dir.join("packages"),
            None,
            Some(cfg.base_name.clone()),
            cfg.start_timeout,
        )
        .expect("the ark-telnet settings of the manifest are complete");
    koupleless_agent::tunnel::Tunnels::from_config(&cfg).expect("the MQTT settings are valid");
    let module = deployments.get("biz1").await.unwrap();
    let c = &module.spec.unwrap().template.spec.unwrap().containers[0];
    assert!(
        c.env.iter().flatten().any(|e| e.name == "BIZ_VERSION"),
        "module version env"
    );

    // The second topology: no shared process namespace, /tmp shared by both containers, the
    // agent's settings as in the first.
    let out = tokio::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig.path())
        .args(["apply", "-f"])
        .arg(manifest("agent/base-with-agent-shared-tmp.yaml"))
        .output()
        .await
        .expect("kubectl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let shared = deployments.get("base").await.unwrap();
    let spec = shared.spec.unwrap().template.spec.unwrap();
    assert_eq!(spec.share_process_namespace, Some(false));
    let tmp_volume = spec
        .volumes
        .iter()
        .flatten()
        .find(|v| v.empty_dir.is_some() && v.name == "tmp")
        .expect("an emptyDir for /tmp");
    for c in &spec.containers {
        assert!(
            c.volume_mounts
                .iter()
                .flatten()
                .any(|m| m.name == tmp_volume.name && m.mount_path == "/tmp"),
            "{} mounts the shared /tmp",
            c.name
        );
    }
    let env_of = |p: &k8s_openapi::api::core::v1::PodSpec| {
        p.containers
            .iter()
            .find(|c| c.name == "agent")
            .and_then(|c| c.env.clone())
            .unwrap_or_default()
    };
    assert_eq!(env_of(&spec), env_of(&pod), "the same agent settings");
    server.shutdown().await;
}
