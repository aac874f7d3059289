//! An in-memory Kubernetes API server for tests.
//!
//! No real kube-apiserver can run where the Koupleless controller is
//! tested, so its tests run against this one: plain HTTP on a free loopback
//! port, with a kubeconfig file that points kube-rs or kubectl at it. It is
//! meant to be honest: where it answers, it answers as the real API server
//! does (same status codes, `Status` reasons, resourceVersion, watch and
//! patch semantics); what it does not support is refused with an error,
//! never acknowledged with a quiet success.
//!
//! ```no_run
//! # async fn demo() -> Result<(), koupleless_kube_apiserver::Error> {
//! let (client, server) = koupleless_kube_apiserver::start().await?;
//! let pods: kube::Api<k8s_openapi::api::core::v1::Pod> = kube::Api::namespaced(client, "default");
//! let _ = pods.list(&Default::default()).await;
//! let kubeconfig = server.write_kubeconfig_tempfile()?; // for kubectl
//! # drop(kubeconfig);
//! server.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! # What is served
//!
//! - Discovery: `/api`, `/api/v1`, `/apis`, `/apis/<group>`,
//!   `/apis/<group>/<version>` (plain `APIResourceList`s; kubectl falls back
//!   to them from aggregated discovery), `/version` (v1.33), `/healthz`,
//!   `/livez`, `/readyz`, and minimal OpenAPI v3 documents (see
//!   [`discovery`]). `/openapi/v2` is 404, which kubectl tolerates.
//! - Resources: core/v1 `nodes` (+status), `pods` (+status, +binding,
//!   +eviction, +log), `namespaces` (+status, +finalize), `events`, `services`
//!   (+status), `configmaps`, `secrets`; apps/v1 `deployments`,
//!   `replicasets` (each +status, +scale), `daemonsets` (+status),
//!   `controllerrevisions`;
//!   coordination.k8s.io/v1 `leases`; core/v1 `serviceaccounts` and
//!   rbac.authorization.k8s.io/v1 `roles`, `rolebindings`, `clusterroles`,
//!   `clusterrolebindings` (stored always, enforced with [`Config::rbac`]); events.k8s.io/v1 `events` (the same
//!   objects as core/v1 events, converted, as in the real server).
//! - Verbs: get, list, watch, create, update, patch, delete,
//!   deletecollection; `dryRun=All` on writes.
//! - Output: JSON objects, `Table` (`Accept: application/json;as=Table;
//!   g=meta.k8s.io;v=v1`, with the real column sets, so `kubectl get` prints
//!   real columns), and `PartialObjectMetadata[List]` (kube-rs metadata
//!   API). Responses are JSON; a client that accepts Kubernetes protobuf
//!   and not JSON gets objects, lists, `Status` errors and watch events
//!   (length-prefixed `WatchEvent` frames, `;stream=watch`) in protobuf;
//!   discovery documents, and tables or partial metadata asked for only in
//!   protobuf or YAML, get 406.
//! - Request bodies: JSON, YAML, and Kubernetes protobuf
//!   (`application/vnd.kubernetes.protobuf`, what client-go's typed clients
//!   and so `kubectl create namespace|deployment|service ...` send) for
//!   every stored kind and the bodies of the subresources, decoded by one
//!   generic walker over the upstream field tables (see [`protobuf`]).
//! - Every request is logged with `tracing` at debug level (method, URI,
//!   status, and the reason of a refusal).
//!
//! # Semantics
//!
//! - One global, monotonically increasing resourceVersion. Writes that
//!   change nothing do not bump it and produce no watch event.
//! - Optimistic concurrency: a stale `metadata.resourceVersion` in an update
//!   or patch is 409 Conflict; create of an existing name is 409
//!   AlreadyExists; `generateName`; server-set `uid`, `creationTimestamp`,
//!   `generation` (apps kinds, bumped on spec changes).
//! - Label selectors (`=`, `==`, `!=`, `in`, `notin`, exists, `!`, `>`,
//!   `<`) and the field selectors each kind supports in the real server
//!   (pods: `metadata.name`, `metadata.namespace`, `spec.nodeName`,
//!   `status.phase`, `status.podIP`, ...; events: `involvedObject.*`,
//!   `reason`, `type`, ...); unknown fields are 400.
//! - Pagination with `limit`/`continue`: a paginated list is served from a
//!   snapshot taken at the first page (consistent, like the real one); the
//!   last 64 snapshots are kept, older tokens answer 410 Expired.
//!   `resourceVersionMatch=Exact` is only served at the current version (an
//!   older one answers 410, which clients handle by relisting).
//! - Status isolation: writes to the main resource keep the stored status;
//!   writes to `/status` keep everything but status and metadata (minus the
//!   fields the real status strategies reset: pods keep ownerReferences,
//!   apps kinds keep labels). Create resets status for pods (phase Pending,
//!   qosClass), apps kinds, services and namespaces; nodes keep the status
//!   they are created with.
//! - Watch: ADDED/MODIFIED/DELETED in resourceVersion order; resume from a
//!   resourceVersion; objects that stop/start matching a selector appear as
//!   DELETED/ADDED (as the watch cache does); `allowWatchBookmarks`
//!   (periodic bookmarks and one before the timeout); `sendInitialEvents`
//!   (initial ADDED events then a bookmark annotated
//!   `k8s.io/initial-events-end`); `timeoutSeconds`. The history keeps the
//!   last [`Config::history`] events; a watch from an older version gets an
//!   `ERROR` event with a 410 Expired `Status` (the real server also answers
//!   200 then an ERROR event). Versions below the store's starting version
//!   count as compacted.
//! - Patch types by Content-Type: JSON merge, JSON patch, strategic merge
//!   (merge keys and list strategies of the real types: conditions by
//!   `type`, containers/volumes/env by `name`, ports by `containerPort`,
//!   node addresses by `type`, ownerReferences by `uid`, finalizers as a
//!   set; `$patch: replace|delete|merge`, `$retainKeys`,
//!   `$setElementOrder`, `$deleteFromPrimitiveList`). Lists the real API
//!   declares atomic are replaced: notably `status.containerStatuses` and
//!   node `spec.taints` have no merge key in Kubernetes, so a strategic
//!   merge patch replaces them whole, exactly as the real server does.
//! - Server-side apply (`application/apply-patch+yaml`, JSON or YAML body,
//!   `fieldManager` required, `force`): `managedFields` are tracked per leaf
//!   field in the real `FieldsV1` format; see [`ssa`] for the
//!   simplifications.
//! - Deletion: `gracePeriodSeconds`, `preconditions`, `propagationPolicy`,
//!   finalizers. Only pods are deleted gracefully: a pod bound to a node
//!   (`spec.nodeName` set) and not Succeeded/Failed gets `deletionTimestamp
//!   = now + grace` and `deletionGracePeriodSeconds = grace` (grace from the
//!   request, else `spec.terminationGracePeriodSeconds`, default 30) and
//!   stays until a delete with grace 0 (what a kubelet sends; `kubectl
//!   delete --grace-period=0 --force`) removes it. Unbound or finished pods,
//!   and every other kind, go at once. Objects with finalizers get
//!   `deletionTimestamp` and stay until an update removes the last finalizer
//!   (and, for pods, the grace period has been brought to 0); no new
//!   finalizers may be added meanwhile. `propagationPolicy: Orphan` /
//!   `Foreground` add the `orphan` / `foregroundDeletion` finalizers as the
//!   real server does; since there is no garbage collector, nobody removes
//!   them but the test, and `Background` deletes the owner only (dependents
//!   are not collected).
//! - Namespaces: objects may only be created in existing, non-terminating
//!   namespaces (404 / 403, as the NamespaceLifecycle admission does);
//!   `default`, `kube-system`, `kube-public` and `kube-node-lease` exist and
//!   the first three cannot be deleted. Deleting a namespace stands in for
//!   the namespace controller: it turns Terminating, its content is deleted
//!   with the normal semantics (so pods bound to nodes wait for their
//!   kubelet), and it disappears once empty.
//! - Defaults: the subset of the real defaulting that controllers observe
//!   (pod `restartPolicy`, `terminationGracePeriodSeconds`, `dnsPolicy`,
//!   `schedulerName`, `enableServiceLinks`, `securityContext`, container
//!   `imagePullPolicy`/`terminationMessage*`/port protocol; apps replicas,
//!   strategies, revisionHistoryLimit; service type, ClusterIP allocation
//!   from 10.96.0.0/12, NodePorts from 30000, target ports; the namespace
//!   `kubernetes.io/metadata.name` label). Validation covers names, labels,
//!   annotations, finalizers, pod containers, the pod-spec update
//!   restrictions, workload selectors (required, matching the template,
//!   immutable), service ports/type, and ConfigMap/Secret keys, sizes,
//!   `immutable`, Secret `type` (immutable, with the keys each built-in
//!   type requires). Secrets default to type `Opaque` and have `stringData`
//!   merged into `data` (base64), which is all that is stored.
//! - Bodies are decoded as their real types (the k8s-openapi structs): a
//!   wrongly typed field is 400 BadRequest; unknown fields follow
//!   `fieldValidation` (`Strict`, which kubectl sends: 400 "strict decoding
//!   error"; `Warn`, the default: dropped with a `Warning` header;
//!   `Ignore`: dropped). Missing required fields are left to validation
//!   (422), as the real decoder fills zero values. See [`typed`].
//! - Scale (`autoscaling/v1` `Scale` on `deployments/scale` and
//!   `replicasets/scale`, listed in discovery with its group and version):
//!   get, update (PUT) and patch (merge, JSON, strategic). The view carries
//!   the parent's name, namespace, uid, resourceVersion and
//!   creationTimestamp, `spec.replicas` (left out when 0, as `omitempty`
//!   does), `status.replicas` and `status.selector` in the label selector's
//!   string form (`app=d1,tier in (a,b)`). A write changes only the parent's
//!   `spec.replicas` (its generation moves; managedFields record the
//!   `scale` subresource); a stale `metadata.resourceVersion` is 409,
//!   negative replicas 422 on `Scale.autoscaling`. As a `Table` it has the
//!   real printer's Name, Desired, Available columns (`kubectl get deploy d1
//!   --subresource=scale`). Server-side apply to `/scale` is refused with
//!   415 (the real server accepts it). StatefulSets are not stored, so they
//!   have no scale.
//! - Eviction (`policy/v1` `Eviction`, POST on `pods/<name>/eviction`,
//!   listed in discovery so `kubectl drain` finds it): deletes the pod with
//!   the Eviction's `deleteOptions` exactly as a delete does (graceful for a
//!   bound pod: it waits for its kubelet) and answers 201 with a `Status`.
//!   A pod covered by a policy/v1 PodDisruptionBudget (stored, +status) is
//!   evicted only if the budget's status allows it (the budget is charged:
//!   `disruptionsAllowed` down, `disruptedPods`, the `DisruptionAllowed`
//!   condition); else 429 TooManyRequests with a `DisruptionBudget` cause,
//!   as upstream. No disruption controller runs: a budget whose status
//!   nobody wrote refuses every eviction it covers (see [`eviction`]).
//! - JSON patch `replace` of a missing key in an existing object sets it,
//!   as the real server's json-patch library does (`kubectl rollout undo`
//!   replaces `/metadata/annotations`).
//! - Errors are `Status` objects with the real `reason`, `code`, `details`.
//!
//! # What it does not do
//!
//! The server alone runs no scheduler, kubelet, garbage collector or
//! workload controllers (a Deployment gets no ReplicaSet or Pods unless
//! something plays those controllers, as [`cluster`] does; tests create
//! pods themselves and set
//! `spec.nodeName` or use the `binding` subresource), no admission
//! plugins besides NamespaceLifecycle and DefaultTolerationSeconds (see
//! [`admission`]; no ServiceAccount token volumes, no priority), no webhooks,
//! no authentication or authorization unless [`Config::rbac`] turns on
//! bearer tokens, RBAC and HTTPS (see [`rbac`], [`tls`]), no YAML responses, no CRDs, no OpenAPI schemas (`kubectl
//! explain` fails), no `kubectl exec/attach/port-forward` (those pod
//! subresources are 404; `pods/log` calls the Node's kubelet, see
//! [`pod_log`]). Kinds it does not store (StatefulSets, Jobs,
//! HorizontalPodAutoscalers, ...) are 404, as an unknown resource is on the real
//! server.
//!
//! # kubectl
//!
//! The installed kubectl (a dispatcher that runs v1.33 against this
//! server's v1.33; the scenarios also pass with v1.32 via `KUBECTL`) works
//! for `get` (server-side tables, `-o wide|json|yaml|jsonpath|name`, `-w`,
//! `--output-watch-events`, `-A`, `all`), `describe`, `create -f`, `apply`
//! (client-side, and `--server-side` with conflicts and
//! `--force-conflicts`), `replace`, `patch` (all types, `--subresource
//! status`), `label`, `annotate`, `delete` (including `--grace-period=0
//! --force` and namespaces), `wait --for=condition|delete|jsonpath`, `run`,
//! `expose`, `set image`, `api-resources`, the generators whose typed
//! clients send protobuf bodies (`kubectl create namespace|deployment|
//! service|configmap|secret`; kinds this server does not store, such as
//! `job`, get 404), `scale` (deployments and replica sets,
//! `--current-replicas`), `rollout history|undo|restart|pause|resume|status`
//! of deployments (history and undo read the ReplicaSets a deployment
//! controller makes, and status waits for the status one writes: this
//! server alone writes neither; for daemon sets they read the
//! ControllerRevisions (apps/v1, stored) the test cluster's DaemonSet
//! controller writes), `cordon`,
//! `uncordon` and `drain` (`--ignore-daemonsets`; eviction, or
//! `--disable-eviction` deletes with protobuf DeleteOptions). `kubectl
//! explain` fails because there are no schemas; `logs` (`-c`, `-f`,
//! `--tail`, `--since`, `--timestamps`) works when something serves the
//! kubelet API for the Pod's Node (see [`pod_log`]); `exec`,
//! `port-forward`, `top` and `autoscale` get 404. The scenarios in
//! `tests/scenarios/kubectl.rs` and `tests/scenarios/imperative.rs` run each
//! of these and check the stored result.
//!
//! Field selectors on events.k8s.io/v1 use its own labels (`regarding.*`,
//! `reportingController`, `reason`, `type`), converted to the core ones.
//! managedFields of a request without `fieldManager` are attributed to the
//! User-Agent up to its first `/` (kube-rs sends none: the manager is then
//! empty, as on the real server).
//!
//! # Running the conformance scenarios against a real cluster
//!
//! The scenarios in `tests/` are functions that take a `kube::Client` (and,
//! for kubectl, a kubeconfig path), so they run against either server. By
//! default they run against this one. With `KOUPLELESS_REAL_CLUSTER=1` they
//! run against the cluster `KUBECONFIG` points at instead, each in its own
//! namespace that is deleted afterwards (`watch_send_initial_events` skips
//! with a message when the cluster does not serve streaming lists). The
//! tests in the `local` module exercise this server's own knobs (history
//! size, bookmark interval, shutdown, refusals) and always run against it.
//! Without that variable nothing touches a real cluster, and the
//! `real_cluster_mode` test prints that the comparison was skipped.
//!
//! ```text
//! KOUPLELESS_REAL_CLUSTER=1 KUBECONFIG=~/.kube/config \
//!     cargo test -p koupleless-kube-apiserver --test conformance
//! ```

pub mod admission;
pub mod api;
pub mod cluster;
pub mod discovery;
pub mod errors;
pub mod eviction;
pub mod kinds;
pub mod kubelet_client;
pub mod patch;
pub mod pod_log;
pub mod protobuf;
pub mod rbac;
pub mod requests;
pub mod resources;
pub mod reviews;
pub mod scale;
pub mod schema;
pub mod selectors;
pub mod ssa;
pub mod store;
pub mod table;
pub mod tls;
pub mod typed;

use crate::resources::Storage;
use serde_json::json;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Errors starting or talking to the server.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Binding or serving failed.
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    /// Building the kube client failed.
    #[error("kube client: {0}")]
    Kube(#[from] kube::Error),
    /// The server URL could not be parsed.
    #[error("invalid server url: {0}")]
    Url(String),
    /// The kubelet client certificate or CA cannot be used.
    #[error(transparent)]
    KubeletClient(#[from] kubelet_client::KubeletClientError),
    /// Tokens were asked of a server that does not enforce RBAC.
    #[error("RBAC is not enforced by this server (Config::rbac is false)")]
    RbacOff,
}

/// Server configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address to bind (port 0 picks a free one).
    pub bind: SocketAddr,
    /// How many events the watch history keeps (older versions answer 410).
    pub history: usize,
    /// Interval between watch bookmarks.
    pub bookmark_interval: Duration,
    /// Watch timeout when the client sets none.
    pub default_watch_timeout: Duration,
    /// The DefaultTolerationSeconds admission plugin (300 s for not-ready
    /// and unreachable, as kube-apiserver's defaults).
    pub default_toleration_seconds: admission::DefaultTolerationSeconds,
    /// Enforce authentication by bearer token and RBAC authorization (see
    /// [`rbac`]). Off by default: every request is then served, as before.
    /// When on, [`ApiServerHandle::client`] and the kubeconfig carry a token
    /// of a `system:masters` user (the cluster admin).
    pub rbac: bool,
    /// How `pods/log` reaches kubelets: the client certificate (by default
    /// [`kubelet_client::KUBELET_CLIENT_CERT_PEM`]), the Node address types,
    /// and a fixed address for tests (see [`pod_log`]).
    pub kubelet: kubelet_client::KubeletConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            history: 1000,
            bookmark_interval: Duration::from_secs(60),
            default_watch_timeout: Duration::from_secs(1800),
            default_toleration_seconds: Default::default(),
            rbac: false,
            kubelet: Default::default(),
        }
    }
}

/// A running server.
#[derive(Debug)]
pub struct ApiServerHandle {
    addr: SocketAddr,
    app: Arc<api::App>,
    /// Served over HTTPS (with the test certificate, see [`tls`]).
    tls: bool,
    /// The cluster admin's token when RBAC is enforced.
    admin_token: Option<String>,
    requests: Arc<requests::RequestCounter>,
    shutdown_tx: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

/// Starts a server with the default [`Config`] on a free loopback port and
/// returns a client for it.
pub async fn start() -> Result<(kube::Client, ApiServerHandle), Error> {
    start_with(Config::default()).await
}

/// Makes ring the process-wide rustls provider. kube-client builds its TLS configuration from
/// the process default, which is ambiguous (a panic at client construction) when a build links
/// both ring and aws-lc-rs, as a workspace build with the agent does. Safe to call more than
/// once; call it before building any `kube::Client` yourself.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Starts a server with `config`.
pub async fn start_with(config: Config) -> Result<(kube::Client, ApiServerHandle), Error> {
    let handle = serve(config).await?;
    let client = handle.client()?;
    Ok((client, handle))
}

/// The resourceVersion the store starts at: versions below it count as
/// compacted, so a watch from an arbitrary old version gets 410 Gone as on
/// a long-running real cluster.
pub const INITIAL_RESOURCE_VERSION: u64 = 1000;

/// Starts serving without building a client.
pub async fn serve(config: Config) -> Result<ApiServerHandle, Error> {
    let listener = tokio::net::TcpListener::bind(config.bind).await?;
    let addr = listener.local_addr()?;
    let (shutdown_tx, shutdown_rx) = tokio::sync::watch::channel(false);
    let app = Arc::new(api::App {
        store: store::Store::new(config.history, INITIAL_RESOURCE_VERSION),
        settings: api::Settings {
            bookmark_interval: config.bookmark_interval,
            default_watch_timeout: config.default_watch_timeout,
            default_toleration_seconds: config.default_toleration_seconds,
            ..Default::default()
        },
        address: addr.to_string(),
        rbac: config.rbac.then(rbac::Tokens::default),
        kubelet: kubelet_client::KubeletClient::new(config.kubelet.clone())?,
        shutdown: shutdown_rx.clone(),
    });
    let admin_token = app.rbac.as_ref().map(|tokens| {
        let token = format!("admin-{}", uuid::Uuid::new_v4().simple());
        tokens.add_user(
            &token,
            rbac::UserInfo::user("koupleless-test-admin", &["system:masters"]),
        );
        token
    });
    bootstrap(&app);
    let router_app = app.clone();
    let requests = Arc::new(requests::RequestCounter::default());
    let counter = requests.clone();
    let router = axum::Router::new().fallback(move |req: axum::extract::Request| {
        let app = router_app.clone();
        counter.record(req.method(), req.uri());
        async move { api::handle(app, req).await }
    });
    let mut rx = shutdown_rx;
    let stop = async move {
        let _ = rx.wait_for(|v| *v).await;
    };
    let task = if config.rbac {
        let tls = tls::TlsListener::new(listener)?;
        tokio::spawn(async move { axum::serve(tls, router).with_graceful_shutdown(stop).await })
    } else {
        tokio::spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(stop)
                .await
        })
    };
    Ok(ApiServerHandle {
        addr,
        app,
        tls: config.rbac,
        admin_token,
        requests,
        shutdown_tx,
        task,
    })
}

fn bootstrap(app: &api::App) {
    let mut st = app.store.lock();
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        let obj = json!({
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {
                "name": ns,
                "uid": uuid::Uuid::new_v4().to_string(),
                "creationTimestamp": now,
                "labels": {"kubernetes.io/metadata.name": ns},
            },
            "spec": {"finalizers": ["kubernetes"]},
            "status": {"phase": "Active"},
        });
        st.put((Storage::Namespaces, String::new(), ns.to_string()), obj);
    }
    // The bootstrap writes are history too old to watch from.
    let rv = st.rv;
    st.compact(rv);
}

impl ApiServerHandle {
    /// Requests received so far, by verb and resource.
    pub fn requests(&self) -> &requests::RequestCounter {
        &self.requests
    }

    /// `http://127.0.0.1:<port>` (`https://` when RBAC is enforced).
    pub fn base_url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A new kube client for this server (the cluster admin's when RBAC is
    /// enforced).
    pub fn client(&self) -> Result<kube::Client, Error> {
        self.client_with(self.admin_token.as_deref())
    }

    /// A new kube client sending `token` as its bearer token (none:
    /// anonymous).
    pub fn client_with(&self, token: Option<&str>) -> Result<kube::Client, Error> {
        let uri: http::Uri = self
            .base_url()
            .parse()
            .map_err(|e| Error::Url(format!("{e}")))?;
        install_crypto_provider();
        let mut cfg = kube::Config::new(uri);
        cfg.default_namespace = "default".into();
        cfg.read_timeout = None;
        if let Some(t) = token {
            cfg.auth_info.token = Some(t.to_string().into());
        }
        if self.tls {
            cfg.root_cert = Some(vec![tls::pem_to_der(tls::CA_PEM)]);
        }
        Ok(kube::Client::try_from(cfg)?)
    }

    /// Adds a static bearer token for `user` (as a `--token-auth-file` line).
    /// Fails when RBAC is not enforced.
    pub fn add_token(&self, token: &str, user: rbac::UserInfo) -> Result<(), Error> {
        self.tokens()?.add_user(token, user);
        Ok(())
    }

    /// Issues a token for ServiceAccount `namespace/name` (as the
    /// TokenRequest API does); it authenticates while the ServiceAccount
    /// exists. Fails when RBAC is not enforced.
    pub fn service_account_token(&self, namespace: &str, name: &str) -> Result<String, Error> {
        Ok(self.tokens()?.issue_service_account(namespace, name))
    }

    /// The distinct requests each user other than the admin was allowed,
    /// as `(user, "verb group/resource[/sub] [namespace]")` (empty when RBAC
    /// is off): what a least-privilege review reads.
    pub fn grants(&self) -> Vec<(String, String)> {
        self.app
            .rbac
            .as_ref()
            .map(rbac::Tokens::grants)
            .unwrap_or_default()
    }

    /// Every request refused with 403 so far (empty when RBAC is off).
    pub fn denials(&self) -> Vec<rbac::Denial> {
        self.app
            .rbac
            .as_ref()
            .map(rbac::Tokens::denials)
            .unwrap_or_default()
    }

    fn tokens(&self) -> Result<&rbac::Tokens, Error> {
        self.app.rbac.as_ref().ok_or(Error::RbacOff)
    }

    /// The kubeconfig YAML for this server (with the admin's token when
    /// RBAC is enforced).
    pub fn kubeconfig_yaml(&self) -> String {
        kubeconfig_yaml_with(&self.base_url(), self.admin_token.as_deref(), self.tls)
    }

    /// Writes a kubeconfig file whose user sends `token`.
    pub fn write_kubeconfig_with_token(
        &self,
        path: impl AsRef<Path>,
        token: &str,
    ) -> Result<PathBuf, Error> {
        let path = path.as_ref().to_path_buf();
        std::fs::write(
            &path,
            kubeconfig_yaml_with(&self.base_url(), Some(token), self.tls),
        )?;
        Ok(path)
    }

    /// Writes a kubeconfig file pointing at this server.
    pub fn write_kubeconfig(&self, path: impl AsRef<Path>) -> Result<PathBuf, Error> {
        let path = path.as_ref().to_path_buf();
        std::fs::write(&path, self.kubeconfig_yaml())?;
        Ok(path)
    }

    /// Writes a kubeconfig to a temporary file (deleted when dropped).
    pub fn write_kubeconfig_tempfile(&self) -> Result<tempfile::NamedTempFile, Error> {
        let f = tempfile::Builder::new()
            .prefix("kubeconfig-")
            .suffix(".yaml")
            .tempfile()?;
        std::fs::write(f.path(), self.kubeconfig_yaml())?;
        Ok(f)
    }

    /// Marks every event up to the current resourceVersion as compacted:
    /// later watches from those versions get 410 Gone. (A real cluster
    /// compacts on its own schedule; tests use this to provoke it.)
    pub fn compact(&self) -> u64 {
        let mut st = self.app.store.lock();
        let rv = st.rv;
        st.compact(rv);
        rv
    }

    /// The current resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.app.store.lock().rv
    }

    /// Stops accepting requests, ends open watches and waits for the
    /// server task to finish.
    pub async fn shutdown(self) {
        let _ = self.shutdown_tx.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(10), self.task).await;
    }
}

/// A kubeconfig for `server` without credentials.
pub fn kubeconfig_yaml(server: &str) -> String {
    kubeconfig_yaml_with(server, None, false)
}

/// A kubeconfig for `server` whose user sends `token` (if any), trusting
/// the test CA when `tls`.
pub fn kubeconfig_yaml_with(server: &str, token: Option<&str>, tls: bool) -> String {
    use base64::Engine;
    let user = match token {
        Some(t) => format!("{{token: {t}}}"),
        None => "{}".to_string(),
    };
    let ca = if tls {
        format!(
            "\n    certificate-authority-data: {}",
            base64::engine::general_purpose::STANDARD.encode(tls::CA_PEM)
        )
    } else {
        String::new()
    };
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: koupleless-test
  cluster:
    server: {server}{ca}
contexts:
- name: koupleless-test
  context:
    cluster: koupleless-test
    user: koupleless-test
    namespace: default
current-context: koupleless-test
users:
- name: koupleless-test
  user: {user}
preferences: {{}}
"
    )
}
