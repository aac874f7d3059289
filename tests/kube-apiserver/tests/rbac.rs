//! RBAC enforced (`Config::rbac`): tokens authenticate users and
//! ServiceAccounts, Roles/ClusterRoles and their bindings (applied with
//! kubectl) authorize each request as upstream's RBAC authorizer, denials
//! are 403 with upstream's message, and access reviews answer the same.

use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod};
use koupleless_kube_apiserver::rbac::UserInfo;
use koupleless_kube_apiserver::{ApiServerHandle, Config, start_with};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::core::Status;
use serde_json::json;
use std::process::Command;

const POLICY: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: team}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: reader, namespace: team}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: pod-reader, namespace: team}
rules:
  - apiGroups: [""]
    resources: ["pods"]
    verbs: ["get", "list", "watch"]
  - apiGroups: [""]
    resources: ["configmaps"]
    resourceNames: ["allowed"]
    verbs: ["get"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: reader-pods, namespace: team}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: pod-reader}
subjects:
  - {kind: ServiceAccount, name: reader}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: node-status}
rules:
  - apiGroups: [""]
    resources: ["nodes"]
    verbs: ["get"]
  - apiGroups: [""]
    resources: ["nodes/status"]
    verbs: ["patch"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: reader-nodes}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: node-status}
subjects:
  - {kind: ServiceAccount, name: reader, namespace: team}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: dangling}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: does-not-exist}
subjects:
  - {kind: Group, name: "system:serviceaccounts:team"}
"#;

fn kubectl(kubeconfig: &std::path::Path, args: &[&str], stdin: Option<&str>) -> (bool, String) {
    use std::io::Write;
    let mut child = Command::new(std::env::var("KUBECTL").unwrap_or_else(|_| "kubectl".into()))
        .env("KUBECONFIG", kubeconfig)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("kubectl");
    if let Some(s) = stdin {
        child.stdin.take().unwrap().write_all(s.as_bytes()).unwrap();
    }
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn status(r: Result<impl std::fmt::Debug, kube::Error>) -> Box<Status> {
    match r {
        Err(kube::Error::Api(s)) => s,
        other => panic!("expected an API error, got {other:?}"),
    }
}

async fn setup() -> (kube::Client, ApiServerHandle, tempfile::TempDir) {
    let (admin, server) = start_with(Config {
        rbac: true,
        ..Default::default()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let kc = server.write_kubeconfig(dir.path().join("admin")).unwrap();
    let (ok, out) =
        tokio::task::spawn_blocking(move || kubectl(&kc, &["apply", "-f", "-"], Some(POLICY)))
            .await
            .unwrap();
    assert!(ok, "admin applies the policy: {out}");
    (admin, server, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_account_is_held_to_its_roles() {
    let (admin, server, _dir) = setup().await;
    let pods_admin: Api<Pod> = Api::namespaced(admin.clone(), "team");
    pods_admin
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "p1"},
                "spec": {"containers": [{"name": "c", "image": "x"}]}}))
            .unwrap(),
        )
        .await
        .unwrap();
    let token = server.service_account_token("team", "reader").unwrap();
    let sa = server.client_with(Some(&token)).unwrap();
    let pods: Api<Pod> = Api::namespaced(sa.clone(), "team");
    // granted by the Role
    assert_eq!(
        pods.list(&ListParams::default()).await.unwrap().items.len(),
        1
    );
    pods.get("p1").await.unwrap();
    // not granted: another verb, another namespace, a subresource
    let st = status(pods.delete("p1", &DeleteParams::default()).await);
    assert_eq!((st.code, st.reason.as_str()), (403, "Forbidden"));
    assert_eq!(
        st.message,
        "pods \"p1\" is forbidden: User \"system:serviceaccount:team:reader\" cannot delete resource \"pods\" in API group \"\" in the namespace \"team\": RBAC: clusterrole.rbac.authorization.k8s.io \"does-not-exist\" not found"
    );
    let st = status(
        Api::<Pod>::namespaced(sa.clone(), "default")
            .list(&ListParams::default())
            .await,
    );
    assert_eq!(st.code, 403);
    assert!(
        st.message.starts_with("pods is forbidden: User \"system:serviceaccount:team:reader\" cannot list resource \"pods\" in API group \"\" in the namespace \"default\""),
        "{}",
        st.message
    );
    let st = status(
        pods.patch_status(
            "p1",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "Running"}})),
        )
        .await,
    );
    assert!(
        st.message
            .contains("cannot patch resource \"pods/status\" in API group \"\""),
        "{}",
        st.message
    );
    // the server keeps a record of its refusals
    let denied: Vec<String> = server
        .denials()
        .into_iter()
        .map(|d| format!("{} {} {}", d.user, d.request.verb, d.request.resource))
        .collect();
    assert_eq!(
        denied,
        [
            "system:serviceaccount:team:reader delete pods",
            "system:serviceaccount:team:reader list pods",
            "system:serviceaccount:team:reader patch pods"
        ]
    );
    // resourceNames
    let cms_admin: Api<ConfigMap> = Api::namespaced(admin.clone(), "team");
    for n in ["allowed", "other"] {
        cms_admin
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({"metadata": {"name": n}})).unwrap(),
            )
            .await
            .unwrap();
    }
    let cms: Api<ConfigMap> = Api::namespaced(sa.clone(), "team");
    cms.get("allowed").await.unwrap();
    assert_eq!(status(cms.get("other").await).code, 403);
    assert_eq!(status(cms.list(&ListParams::default()).await).code, 403);
    // ClusterRoleBinding: nodes and nodes/status, cluster-wide
    let nodes_admin: Api<Node> = Api::all(admin.clone());
    nodes_admin
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "n1"}})).unwrap(),
        )
        .await
        .unwrap();
    let nodes: Api<Node> = Api::all(sa.clone());
    nodes.get("n1").await.unwrap();
    nodes
        .patch_status(
            "n1",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "Running"}})),
        )
        .await
        .unwrap();
    let st = status(nodes.list(&ListParams::default()).await);
    assert!(
        st.message.starts_with(
            "nodes is forbidden: User \"system:serviceaccount:team:reader\" cannot list resource \"nodes\" in API group \"\" at the cluster scope"
        ),
        "{}",
        st.message
    );
    // a token outlives no ServiceAccount
    Api::<k8s_openapi::api::core::v1::ServiceAccount>::namespaced(admin.clone(), "team")
        .delete("reader", &DeleteParams::default())
        .await
        .unwrap();
    let st = status(pods.get("p1").await);
    assert_eq!((st.code, st.reason.as_str()), (401, "Unauthorized"));
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_static_tokens_reviews_and_kubectl() {
    let (admin, server, dir) = setup().await;
    // anonymous: health and version only
    let anon = server.client_with(None).unwrap();
    let st = status(
        Api::<Pod>::namespaced(anon.clone(), "default")
            .list(&ListParams::default())
            .await,
    );
    assert_eq!(
        st.message,
        "pods is forbidden: User \"system:anonymous\" cannot list resource \"pods\" in API group \"\" in the namespace \"default\""
    );
    anon.apiserver_version().await.unwrap();
    // an unknown token is 401
    let bad = server.client_with(Some("nope")).unwrap();
    assert_eq!(status(bad.apiserver_version().await).code, 401);
    // a static token's user, bound by name
    server
        .add_token("alice-token", UserInfo::user("alice", &["devs"]))
        .unwrap();
    let alice = server.client_with(Some("alice-token")).unwrap();
    alice.apiserver_version().await.unwrap(); // discovery is open to the authenticated
    assert_eq!(
        status(
            Api::<Pod>::namespaced(alice.clone(), "team")
                .list(&ListParams::default())
                .await
        )
        .code,
        403
    );
    let rb: serde_json::Value = json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": "devs-read", "namespace": "team"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "pod-reader"},
        "subjects": [{"kind": "Group", "name": "devs", "apiGroup": "rbac.authorization.k8s.io"}]
    });
    let rbs: Api<k8s_openapi::api::rbac::v1::RoleBinding> = Api::namespaced(admin.clone(), "team");
    rbs.create(&PostParams::default(), &serde_json::from_value(rb).unwrap())
        .await
        .unwrap();
    Api::<Pod>::namespaced(alice.clone(), "team")
        .list(&ListParams::default())
        .await
        .unwrap();
    // an aggregated ClusterRole grants what the roles it selects grant
    let agg = r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: aggregate-view}
aggregationRule:
  clusterRoleSelectors:
    - matchLabels: {rbac.example.com/aggregate-to-view: "true"}
rules: []
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: view-leases
  labels: {rbac.example.com/aggregate-to-view: "true"}
rules:
  - {apiGroups: [coordination.k8s.io], resources: [leases], verbs: [list]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: alice-view}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: aggregate-view}
subjects: [{kind: User, name: alice, apiGroup: rbac.authorization.k8s.io}]
"#;
    let kc = server.write_kubeconfig(dir.path().join("admin2")).unwrap();
    let (ok, out) =
        tokio::task::spawn_blocking(move || kubectl(&kc, &["apply", "-f", "-"], Some(agg)))
            .await
            .unwrap();
    assert!(ok, "{out}");
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> = Api::all(alice.clone());
    leases.list(&ListParams::default()).await.unwrap();
    assert_eq!(
        status(
            Api::<ConfigMap>::all(alice.clone())
                .list(&ListParams::default())
                .await
        )
        .code,
        403
    );
    // roleRef is immutable
    let st = status(
        rbs.patch(
            "devs-read",
            &PatchParams::default(),
            &Patch::Merge(json!({"roleRef": {"name": "other"}})),
        )
        .await,
    );
    assert_eq!(st.code, 422, "{st:?}");
    // SubjectAccessReview (admin asks about the ServiceAccount)
    let review = |verb: &str, resource: &str, ns: &str| {
        json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
               "spec": {"user": "system:serviceaccount:team:reader",
                        "groups": ["system:serviceaccounts", "system:serviceaccounts:team", "system:authenticated"],
                        "resourceAttributes": {"verb": verb, "resource": resource, "namespace": ns}}})
    };
    for (verb, ns, want) in [
        ("list", "team", true),
        ("delete", "team", false),
        ("list", "default", false),
    ] {
        let req = http::Request::post("/apis/authorization.k8s.io/v1/subjectaccessreviews")
            .header("content-type", "application/json")
            .body(serde_json::to_vec(&review(verb, "pods", ns)).unwrap())
            .unwrap();
        let out: serde_json::Value = admin.request(req).await.unwrap();
        assert_eq!(out["status"]["allowed"], want, "{verb} {ns}: {out}");
    }
    // kubectl as the ServiceAccount: the real error text, and auth can-i
    // (a SelfSubjectAccessReview)
    let token = server.service_account_token("team", "reader").unwrap();
    let kc = server
        .write_kubeconfig_with_token(dir.path().join("sa"), &token)
        .unwrap();
    let out = tokio::task::spawn_blocking(move || {
        (
            kubectl(&kc, &["get", "pods", "-n", "team"], None),
            kubectl(&kc, &["get", "pods", "-n", "default"], None),
            kubectl(&kc, &["auth", "can-i", "list", "pods", "-n", "team"], None),
            kubectl(
                &kc,
                &["auth", "can-i", "delete", "pods", "-n", "team"],
                None,
            ),
        )
    })
    .await
    .unwrap();
    assert!(out.0.0, "{:?}", out.0);
    assert!(!out.1.0, "{:?}", out.1);
    assert!(
        out.1.1.contains("Error from server (Forbidden): pods is forbidden: User \"system:serviceaccount:team:reader\" cannot list resource \"pods\" in API group \"\" in the namespace \"default\""),
        "{}",
        out.1.1
    );
    assert_eq!(out.2.1.trim(), "yes", "{:?}", out.2);
    assert!(out.3.1.starts_with("no"), "{:?}", out.3);
    server.shutdown().await;
}

#[tokio::test]
async fn off_by_default() {
    let (client, server) = koupleless_kube_apiserver::start().await.unwrap();
    // no credentials, everything served; tokens cannot be issued
    Api::<Pod>::namespaced(client, "default")
        .list(&ListParams::default())
        .await
        .unwrap();
    assert!(server.service_account_token("default", "x").is_err());
    server.shutdown().await;
}
