//! TokenReview and SubjectAccessReview as a kubelet (our controller's
//! kubelet endpoint) uses them to authenticate and authorize bearer tokens:
//! with RBAC enforced, tokens the server issued are authenticated and the
//! reviews themselves need RBAC permission; without RBAC, no token
//! authenticates and every access is allowed.

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use k8s_openapi::api::core::v1::ServiceAccount;
use koupleless_kube_apiserver::rbac::UserInfo;
use koupleless_kube_apiserver::{Config, start_with};
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::json;

fn token_review(token: &str) -> TokenReview {
    TokenReview {
        spec: TokenReviewSpec {
            token: Some(token.into()),
            ..Default::default()
        },
        ..Default::default()
    }
}

fn node_log_review(user: &str, groups: &[&str]) -> SubjectAccessReview {
    SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: Some(user.into()),
            groups: Some(groups.iter().map(|g| g.to_string()).collect()),
            resource_attributes: Some(ResourceAttributes {
                verb: Some("get".into()),
                resource: Some("nodes".into()),
                subresource: Some("log".into()),
                name: Some("vnode-1".into()),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    }
}

fn code(e: kube::Error) -> (u16, String) {
    match e {
        kube::Error::Api(s) => (s.code, s.message),
        other => panic!("not an API error: {other}"),
    }
}

#[tokio::test]
async fn token_reviews_authenticate_the_servers_tokens() {
    let (admin, server) = start_with(Config {
        rbac: true,
        ..Default::default()
    })
    .await
    .unwrap();
    let sas: Api<ServiceAccount> = Api::namespaced(admin.clone(), "default");
    let sa = sas
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "caller"}})).unwrap(),
        )
        .await
        .unwrap();
    let sa_token = server.service_account_token("default", "caller").unwrap();
    server
        .add_token("static-token", UserInfo::user("alice", &["devs"]))
        .unwrap();
    let reviews: Api<TokenReview> = Api::all(admin.clone());

    let r = reviews
        .create(&PostParams::default(), &token_review(&sa_token))
        .await
        .unwrap();
    let st = r.status.unwrap();
    assert_eq!(st.authenticated, Some(true));
    let user = st.user.unwrap();
    assert_eq!(
        user.username.as_deref(),
        Some("system:serviceaccount:default:caller")
    );
    assert_eq!(user.uid, sa.metadata.uid);
    assert_eq!(
        user.groups.unwrap(),
        [
            "system:serviceaccounts",
            "system:serviceaccounts:default",
            "system:authenticated"
        ]
    );
    assert_eq!(
        st.audiences.unwrap(),
        ["https://kubernetes.default.svc.cluster.local"]
    );

    let mut with_aud = token_review("static-token");
    with_aud.spec.audiences = Some(vec!["kubelet".into()]);
    let st = reviews
        .create(&PostParams::default(), &with_aud)
        .await
        .unwrap()
        .status
        .unwrap();
    assert_eq!(st.authenticated, Some(true));
    assert_eq!(st.user.unwrap().username.as_deref(), Some("alice"));
    assert_eq!(st.audiences.unwrap(), ["kubelet"]);

    let st = reviews
        .create(&PostParams::default(), &token_review("made-up"))
        .await
        .unwrap()
        .status
        .unwrap();
    assert_ne!(st.authenticated, Some(true));
    assert_eq!(st.error.as_deref(), Some("invalid bearer token"));

    // a ServiceAccount's token dies with it
    sas.delete("caller", &DeleteParams::default())
        .await
        .unwrap();
    let st = reviews
        .create(&PostParams::default(), &token_review(&sa_token))
        .await
        .unwrap()
        .status
        .unwrap();
    assert_ne!(st.authenticated, Some(true));

    let (c, msg) = code(
        reviews
            .create(&PostParams::default(), &token_review(""))
            .await
            .unwrap_err(),
    );
    assert_eq!(
        (c, msg.as_str()),
        (400, "token is required for TokenReview in authentication")
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reviews_need_rbac_permission_when_enforced() {
    let (admin, server) = start_with(Config {
        rbac: true,
        ..Default::default()
    })
    .await
    .unwrap();
    let sas: Api<ServiceAccount> = Api::namespaced(admin.clone(), "default");
    sas.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "kubelet-api"}})).unwrap(),
    )
    .await
    .unwrap();
    let token = server
        .service_account_token("default", "kubelet-api")
        .unwrap();
    let caller = server.client_with(Some(&token)).unwrap();
    let reviews: Api<TokenReview> = Api::all(caller.clone());
    let sars: Api<SubjectAccessReview> = Api::all(caller.clone());
    let (c, msg) = code(
        reviews
            .create(&PostParams::default(), &token_review(&token))
            .await
            .unwrap_err(),
    );
    assert_eq!(c, 403, "{msg}");
    assert!(
        msg.contains(
            "cannot create resource \"tokenreviews\" in API group \"authentication.k8s.io\""
        ),
        "{msg}"
    );
    let (c, _) = code(
        sars.create(
            &PostParams::default(),
            &node_log_review("system:serviceaccount:default:kubelet-api", &[]),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(c, 403);

    // the rules of upstream's system:auth-delegator
    let kc = server.write_kubeconfig_tempfile().unwrap();
    let policy = r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: auth-delegator}
rules:
  - apiGroups: ["authentication.k8s.io"]
    resources: ["tokenreviews"]
    verbs: ["create"]
  - apiGroups: ["authorization.k8s.io"]
    resources: ["subjectaccessreviews"]
    verbs: ["create"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: kubelet-api-auth-delegator}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: auth-delegator}
subjects:
  - {kind: ServiceAccount, name: kubelet-api, namespace: default}
"#;
    let f = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(f.path(), policy).unwrap();
    let mut apply =
        tokio::process::Command::new(std::env::var("KUBECTL").unwrap_or_else(|_| "kubectl".into()));
    apply
        .env("KUBECONFIG", kc.path())
        .args(["apply", "-f", f.path().to_str().unwrap()]);
    let out = apply.output().await.unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let st = reviews
        .create(&PostParams::default(), &token_review(&token))
        .await
        .unwrap()
        .status
        .unwrap();
    assert_eq!(st.authenticated, Some(true));
    // the ServiceAccount may review, but may not read node logs itself
    let st = sars
        .create(
            &PostParams::default(),
            &node_log_review("system:serviceaccount:default:kubelet-api", &[]),
        )
        .await
        .unwrap()
        .status
        .unwrap();
    assert!(!st.allowed);
    let st = sars
        .create(
            &PostParams::default(),
            &node_log_review("root", &["system:masters"]),
        )
        .await
        .unwrap()
        .status
        .unwrap();
    assert!(st.allowed);
    server.shutdown().await;
}

#[tokio::test]
async fn without_rbac_no_token_authenticates_and_everything_is_allowed() {
    let (client, server) = start_with(Config::default()).await.unwrap();
    let reviews: Api<TokenReview> = Api::all(client.clone());
    let r = reviews
        .create(&PostParams::default(), &token_review("anything"))
        .await
        .unwrap();
    let st = r.status.unwrap_or_default();
    assert_ne!(st.authenticated, Some(true));
    assert!(st.user.and_then(|u| u.username).is_none());

    let sars: Api<SubjectAccessReview> = Api::all(client.clone());
    let st = sars
        .create(&PostParams::default(), &node_log_review("someone", &[]))
        .await
        .unwrap()
        .status
        .unwrap();
    assert!(st.allowed);
    // the spec is still validated
    let (c, _) = code(
        sars.create(&PostParams::default(), &node_log_review("", &[]))
            .await
            .unwrap_err(),
    );
    assert_eq!(c, 422);
    let (c, _) = code(
        Api::<TokenReview>::all(client.clone())
            .list(&Default::default())
            .await
            .unwrap_err(),
    );
    assert_eq!(c, 405);
    server.shutdown().await;
}
