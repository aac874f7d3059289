//! `deploy/controller` under enforced RBAC: the API test server with `Config::rbac`, the
//! controller's kustomization applied with `kubectl apply -k` by an admin, and our controller
//! running with a token of the `koupleless/koupleless-controller` ServiceAccount (and nothing
//! else) through a module Pod's life with our agent (ark-telnet backend, the test kit's SOFAArk
//! peer): vnode Node, its Lease, Pod status, Events, uninstall and Pod removal. The server
//! records every 403: none may be the controller's. Then one rule is taken out of the
//! ClusterRole (`pods/status` patch) and the next module Pod stays without status while the
//! server refuses the controller's writes with upstream's 403 message.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{fast_settings, module_pod, mqtt, running_ready, start_base};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::rbac::v1::ClusterRole;
use koupleless_controller::Listeners;
use koupleless_kube_apiserver::{ApiServerHandle, Config};
use koupleless_testkit::ark_telnet_peer::{ArkTelnetPeer, PeerActivation, PeerConfig};
use koupleless_testkit::broker::Broker;
use koupleless_testkit::{BizJar, eventually, file_url, java_available};
use kube::Api;
use kube::api::{DeleteParams, ListParams, PostParams};
use tokio_util::sync::CancellationToken;

const T: Duration = Duration::from_secs(60);
const SA_USER: &str = "system:serviceaccount:koupleless:koupleless-controller";

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/controller")
}

fn kubectl(kubeconfig: &Path, args: &[&str]) -> String {
    let out =
        std::process::Command::new(std::env::var("KUBECTL").unwrap_or_else(|_| "kubectl".into()))
            .env("KUBECONFIG", kubeconfig)
            .args(args)
            .output()
            .expect("kubectl runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "kubectl {args:?}: {text}");
    text
}

fn controller_denials(server: &ApiServerHandle) -> Vec<String> {
    server
        .denials()
        .into_iter()
        .filter(|d| d.user == SA_USER)
        .map(|d| d.message)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controller_runs_with_exactly_the_deploy_rbac() {
    assert!(java_available(), "this test needs java and javac");
    let tmp = tempfile::tempdir().unwrap();
    let broker = Broker::embedded();
    let (admin, server) = koupleless_kube_apiserver::start_with(Config {
        rbac: true,
        ..Default::default()
    })
    .await
    .expect("API test server");

    // The platform team's step: the controller's manifests, from the kustomization.
    let admin_kc = server.write_kubeconfig(tmp.path().join("admin")).unwrap();
    let dir = deploy_dir();
    let kc = admin_kc.clone();
    let applied =
        tokio::task::spawn_blocking(move || kubectl(&kc, &["apply", "-k", dir.to_str().unwrap()]))
            .await
            .unwrap();
    assert!(
        applied.contains("clusterrole.rbac.authorization.k8s.io/koupleless-controller created"),
        "{applied}"
    );

    // The controller runs as the ServiceAccount, with nothing but its token.
    let token = server
        .service_account_token("koupleless", "koupleless-controller")
        .unwrap();
    let sa_client = server.client_with(Some(&token)).unwrap();
    let base = start_base(tmp.path());
    let peer = ArkTelnetPeer::start(PeerConfig {
        base_name: "rbac-base".into(),
        activation: PeerActivation::NewTakesOver,
        ..PeerConfig::default()
    })
    .await;
    let jar = BizJar::new("biz1", "1.0.0").build(tmp.path());
    let mut settings = fast_settings("ctl-e2e-rbac");
    settings.mqtt = Some(mqtt(broker.port(), "ctl-e2e-rbac"));
    let cancel = CancellationToken::new();
    let controller = tokio::spawn(koupleless_controller::run(
        settings,
        sa_client,
        Listeners::default(),
        cancel.clone(),
    ));

    let pid = base.0.id().to_string();
    let port = broker.port().to_string();
    let telnet = peer.addr().to_string();
    let work = tmp.path().join("agent");
    let agent = common::start_agent(&[
        "--work-dir",
        work.to_str().unwrap(),
        "--base-identity",
        "base-rbac",
        "--base-name",
        "rbac-base",
        "--base-pid",
        &pid,
        "--activation",
        "new-takes-over",
        "--backend",
        "ark-telnet",
        "--ark-telnet-addr",
        &telnet,
        "--ark-telnet-ready",
        "none",
        "--ark-telnet-poll-interval",
        "50ms",
        "--mqtt-broker",
        "127.0.0.1",
        "--mqtt-port",
        &port,
        "--mqtt-heartbeat-interval",
        "1s",
        "--runtime-env",
        "dev",
    ])
    .await;

    // The vnode and its Lease, written by the controller under its RBAC.
    let node = "vnode.base-rbac.dev";
    let nodes: Api<Node> = Api::all(admin.clone());
    let leases: Api<Lease> = Api::namespaced(admin.clone(), "kube-node-lease");
    assert!(
        eventually(T, || {
            let (nodes, leases) = (nodes.clone(), leases.clone());
            async move {
                matches!(nodes.get_opt(node).await, Ok(Some(_)))
                    && matches!(leases.get_opt(node).await, Ok(Some(_)))
            }
        })
        .await,
        "the base's vnode and Lease; refused: {:?}",
        controller_denials(&server)
    );

    // A module Pod's life: Running/Ready, then deleted, uninstalled and removed.
    let pods: Api<Pod> = Api::namespaced(admin.clone(), "default");
    pods.create(&PostParams::default(), &module_pod(node, &file_url(&jar)))
        .await
        .unwrap();
    let running = eventually(T, || {
        let pods = pods.clone();
        async move { pods.get("biz1").await.is_ok_and(|p| running_ready(&p)) }
    })
    .await;
    assert!(
        running,
        "Running/Ready: {:?}; refused: {:?}",
        pods.get("biz1").await.unwrap().status,
        controller_denials(&server)
    );
    pods.delete("biz1", &DeleteParams::default()).await.unwrap();
    let gone = eventually(Duration::from_secs(20), || {
        let pods = pods.clone();
        async move { matches!(pods.get_opt("biz1").await, Ok(None)) }
    })
    .await;
    assert!(gone, "Pod removed once the module is uninstalled");
    let events: Api<Event> = Api::all(admin.clone());
    let ours = events
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(node))
        .count();
    assert!(ours > 0, "the controller's Events about its Node");
    assert_eq!(
        controller_denials(&server),
        Vec::<String>::new(),
        "every call the controller made is granted by deploy/controller"
    );
    let used: Vec<String> = server
        .grants()
        .into_iter()
        .filter(|(u, _)| u == SA_USER)
        .map(|(_, w)| w)
        .collect();
    eprintln!("the controller used: {used:#?}");

    // Take one rule out: the controller can no longer write Pod status.
    let roles: Api<ClusterRole> = Api::all(admin.clone());
    let mut role = roles.get("koupleless-controller").await.unwrap();
    let rules = role.rules.as_mut().unwrap();
    let before = rules.len();
    rules.retain(|r| r.resources.as_deref() != Some(&["pods/status".to_string()][..]));
    assert_eq!(rules.len(), before - 1, "the pods/status rule was there");
    roles
        .replace("koupleless-controller", &PostParams::default(), &role)
        .await
        .unwrap();
    let mut pod2 = module_pod(node, &file_url(&jar));
    pod2.metadata.name = Some("biz1-again".into());
    pods.create(&PostParams::default(), &pod2).await.unwrap();
    let refused = eventually(T, || {
        let server = &server;
        async move {
            controller_denials(server).iter().any(|m| {
                m == &format!(
                    "pods \"biz1-again\" is forbidden: User \"{SA_USER}\" cannot patch resource \"pods/status\" in API group \"\" in the namespace \"default\""
                )
            })
        }
    })
    .await;
    assert!(
        refused,
        "the status write is refused with 403: {:?}",
        controller_denials(&server)
    );
    assert!(
        !running_ready(&pods.get("biz1-again").await.unwrap()),
        "without pods/status the Pod never turns Ready"
    );

    agent.shutdown().await;
    cancel.cancel();
    controller.await.unwrap().unwrap();
    peer.shutdown().await;
    server.shutdown().await;
}
