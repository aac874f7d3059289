//! A test cluster: the in-memory API server plus stand-ins for kube-scheduler
//! and the parts of kube-controller-manager that module workloads need.
//!
//! Each component is a small level-triggered reconcile loop over the kube-rs
//! client: reflectors (kube-runtime watchers) keep local caches and wake the
//! loop on every change; a pass reads the caches, decides with the pure
//! functions of its module and writes through the API, exactly as any other
//! client would (nothing reaches into the server's store). Writes that a
//! later pass depends on are tracked as [`Expectations`] (as upstream
//! controllers do) so a pass never acts on a cache that has not yet seen the
//! previous pass's writes.
//!
//! What is played and what is not is listed in the crate's README.
//!
//! ```no_run
//! # async fn demo() -> Result<(), koupleless_kube_apiserver::Error> {
//! let (client, cluster) = koupleless_kube_apiserver::cluster::start_cluster().await?;
//! // apply Deployments, Nodes...; Pods get bound and owned as in a real cluster
//! # drop(client);
//! cluster.shutdown().await;
//! # Ok(()) }
//! ```

pub mod daemonset;
pub mod deployment;
pub mod gc;
pub mod nodelifecycle;
pub mod replicaset;
pub mod scheduler;
pub mod scheduling;
pub mod util;

use crate::{ApiServerHandle, Config};
use futures::StreamExt;
use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::api::{Api, PostParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde_json::json;
use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Notify;
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;

/// Errors of a reconcile pass (logged and retried, never fatal).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An API call failed.
    #[error("api: {0}")]
    Kube(#[from] kube::Error),
    /// An object could not be (de)serialized.
    #[error("serde: {0}")]
    Serde(#[from] serde_json::Error),
    /// An object is invalid for the controller (bad selector, bad intstr).
    #[error("invalid: {0}")]
    Invalid(String),
}

/// Knobs of the controllers.
#[derive(Debug, Clone)]
pub struct ControllersConfig {
    /// How long a Node must have been not Ready before node lifecycle adds
    /// the `not-ready`/`unreachable` NoExecute taint (the NoSchedule one is
    /// added at once). Upstream's delay comes from the node monitor grace
    /// period; tests want it short.
    pub no_execute_taint_delay: Duration,
    /// How long a Pod bound to a Node that no longer exists is left before
    /// the pod garbage collector force-deletes it (upstream: 40 s).
    pub orphan_pod_quarantine: Duration,
}

impl Default for ControllersConfig {
    fn default() -> Self {
        ControllersConfig {
            no_execute_taint_delay: Duration::from_secs(2),
            orphan_pod_quarantine: Duration::from_secs(2),
        }
    }
}

impl ControllersConfig {
    /// Short delays for tests.
    pub fn fast() -> Self {
        ControllersConfig {
            no_execute_taint_delay: Duration::from_millis(300),
            orphan_pod_quarantine: Duration::from_millis(200),
        }
    }
}

/// The running controllers; [`Controllers::shutdown`] cancels and awaits them.
#[derive(Debug)]
pub struct Controllers {
    cancel: CancellationToken,
    tasks: Vec<(&'static str, JoinHandle<()>)>,
}

impl Controllers {
    /// Cancels every controller and waits for it (and its watches) to end.
    pub async fn shutdown(self) {
        self.cancel.cancel();
        for (name, task) in self.tasks {
            if let Err(e) = task.await {
                tracing::warn!(controller = name, error = %e, "controller task failed");
            }
        }
    }
}

/// Starts the scheduler and every controller against `client`.
pub fn start_controllers(client: Client, config: ControllersConfig) -> Controllers {
    let cancel = CancellationToken::new();
    let mut tasks = Vec::new();
    let ctx = Ctx {
        client,
        config: Arc::new(config),
    };
    tasks.push((
        "scheduler",
        tokio::spawn(scheduler::run(ctx.clone(), cancel.child_token())),
    ));
    tasks.push((
        "replicaset",
        tokio::spawn(replicaset::run(ctx.clone(), cancel.child_token())),
    ));
    tasks.push((
        "deployment",
        tokio::spawn(deployment::run(ctx.clone(), cancel.child_token())),
    ));
    tasks.push((
        "daemonset",
        tokio::spawn(daemonset::run(ctx.clone(), cancel.child_token())),
    ));
    tasks.push((
        "garbagecollector",
        tokio::spawn(gc::run(ctx.clone(), cancel.child_token())),
    ));
    tasks.push((
        "nodelifecycle",
        tokio::spawn(nodelifecycle::run(ctx, cancel.child_token())),
    ));
    Controllers { cancel, tasks }
}

/// The API server with the controllers beside it.
#[derive(Debug)]
pub struct Cluster {
    server: ApiServerHandle,
    controllers: Controllers,
}

impl Cluster {
    /// The API server (URL, kubeconfig, compaction...).
    pub fn server(&self) -> &ApiServerHandle {
        &self.server
    }

    /// Stops the controllers, then the server.
    pub async fn shutdown(self) {
        self.controllers.shutdown().await;
        self.server.shutdown().await;
    }
}

/// Starts an API server on a free port with every controller, with short
/// test delays ([`ControllersConfig::fast`]).
pub async fn start_cluster() -> Result<(Client, Cluster), crate::Error> {
    start_cluster_with(Config::default(), ControllersConfig::fast()).await
}

/// [`start_cluster`] with explicit configurations.
pub async fn start_cluster_with(
    server: Config,
    controllers: ControllersConfig,
) -> Result<(Client, Cluster), crate::Error> {
    let server = crate::serve(server).await?;
    let client = server.client()?;
    let controllers = start_controllers(server.client()?, controllers);
    Ok((
        client,
        Cluster {
            server,
            controllers,
        },
    ))
}

/// What every controller gets.
#[derive(Clone)]
pub(crate) struct Ctx {
    pub client: Client,
    pub config: Arc<ControllersConfig>,
}

/// Local caches of one controller and the signal that one of them changed.
pub(crate) struct Caches {
    wake: Arc<Notify>,
    set: JoinSet<()>,
}

impl Caches {
    pub fn new() -> Self {
        Caches {
            wake: Arc::new(Notify::new()),
            set: JoinSet::new(),
        }
    }

    /// Starts a reflector over all objects of `K` in all namespaces.
    pub fn watch<K>(&mut self, client: &Client) -> Store<K>
    where
        K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    {
        let (reader, writer) = reflector::store();
        let api: Api<K> = Api::all(client.clone());
        let stream = reflector::reflector(
            writer,
            watcher(api, watcher::Config::default()).default_backoff(),
        );
        let wake = self.wake.clone();
        self.set.spawn(async move {
            futures::pin_mut!(stream);
            while let Some(ev) = stream.next().await {
                if let Err(e) = ev {
                    tracing::debug!(error = %e, "watch error (retrying)");
                }
                wake.notify_one();
            }
        });
        reader
    }

    /// Runs `r.pass()` whenever a cache changes or the delay it asked for
    /// has passed, until `cancel`; then stops the reflectors.
    pub async fn drive<R: Reconciler>(
        mut self,
        name: &'static str,
        cancel: CancellationToken,
        mut r: R,
    ) {
        loop {
            let next = match r.pass().await {
                Ok(n) => n,
                Err(e) => {
                    tracing::debug!(controller = name, error = %e, "pass failed, retrying");
                    Some(Duration::from_millis(100))
                }
            };
            let delay = next.unwrap_or(Duration::from_secs(600));
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(delay) => {}
            }
        }
        self.set.shutdown().await;
    }
}

/// One controller's reconcile pass over everything it owns.
pub(crate) trait Reconciler: Send {
    /// Reconciles once; returns when to run again at the latest (for
    /// time-based rules such as minReadySeconds), besides cache changes.
    fn pass(&mut self) -> BoxFuture<'_, Result<Option<Duration>, Error>>;
}

/// Waits until every store has listed once (or `cancel`).
pub(crate) async fn ready<K>(stores: &[&Store<K>], cancel: &CancellationToken) -> bool
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    for s in stores {
        tokio::select! {
            _ = cancel.cancelled() => return false,
            r = s.wait_until_ready() => if r.is_err() { return false },
        }
    }
    true
}

/// A write a later pass must see in the cache before acting on the owner again.
#[derive(Debug, Clone)]
pub(crate) enum Pending {
    /// The object `name` at resourceVersion `rv` or newer.
    Seen { name: String, rv: u64 },
    /// The object `name` with `uid` gone or terminating.
    Gone { name: String, uid: String },
}

/// What the cache knows about a name: (uid, resourceVersion, terminating).
pub(crate) type Lookup<'a> = &'a dyn Fn(&str) -> Option<(String, u64, bool)>;

/// Pending writes per owner, as upstream's ControllerExpectations: an owner
/// with unobserved writes is not reconciled until they are observed or
/// [`EXPECTATION_TIMEOUT`] passes.
#[derive(Default)]
pub(crate) struct Expectations {
    pending: HashMap<String, (Instant, Vec<Pending>)>,
}

/// How long a write may stay unobserved before the owner is reconciled anyway.
pub(crate) const EXPECTATION_TIMEOUT: Duration = Duration::from_secs(5);

impl Expectations {
    pub fn expect(&mut self, owner: &str, p: Pending) {
        let e = self
            .pending
            .entry(owner.to_string())
            .or_insert_with(|| (Instant::now(), Vec::new()));
        e.0 = Instant::now();
        e.1.push(p);
    }

    /// Whether `owner` may be reconciled; drops what has been observed.
    pub fn satisfied(&mut self, owner: &str, lookup: Lookup<'_>) -> bool {
        let Some((since, list)) = self.pending.get_mut(owner) else {
            return true;
        };
        list.retain(|p| match p {
            Pending::Seen { name, rv } => {
                !matches!(lookup(name), Some((_, seen, _)) if seen >= *rv)
            }
            Pending::Gone { name, uid } => {
                matches!(lookup(name), Some((u, _, terminating)) if u == *uid && !terminating)
            }
        });
        if list.is_empty() || since.elapsed() > EXPECTATION_TIMEOUT {
            self.pending.remove(owner);
            return true;
        }
        false
    }
}

/// The numeric resourceVersion of an object (this server's are integers).
pub(crate) fn rv_of<K: Resource>(o: &K) -> u64 {
    o.meta()
        .resource_version
        .as_deref()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// A cache lookup by namespace and name for [`Expectations`].
pub(crate) fn lookup_in<K>(
    store: &Store<K>,
    ns: &str,
) -> impl Fn(&str) -> Option<(String, u64, bool)> + use<K>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    let store = store.clone();
    let ns = ns.to_string();
    move |name: &str| {
        let o = store.get(&reflector::ObjectRef::new(name).within(&ns))?;
        Some((
            o.uid().unwrap_or_default(),
            rv_of(o.as_ref()),
            o.meta().deletion_timestamp.is_some(),
        ))
    }
}

/// Records a core/v1 Event about `obj` (what `kubectl describe` shows).
pub(crate) async fn record_event<K>(
    client: &Client,
    obj: &K,
    type_: &str,
    reason: &str,
    message: &str,
    component: &str,
) where
    K: Resource<DynamicType = ()>,
{
    let ns = obj.namespace().unwrap_or_else(|| "default".into());
    let now = util::now_rfc3339();
    let involved = ObjectReference {
        api_version: Some(K::api_version(&()).into_owned()),
        kind: Some(K::kind(&()).into_owned()),
        name: Some(obj.name_any()),
        namespace: obj.namespace(),
        uid: obj.uid(),
        resource_version: obj.resource_version(),
        field_path: None,
    };
    let ev = json!({
        "metadata": {"name": format!("{}.{:x}", obj.name_any(), rand_suffix()), "namespace": ns},
        "involvedObject": involved,
        "reason": reason,
        "message": message,
        "type": type_,
        "source": {"component": component},
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
        "reportingComponent": component,
        "reportingInstance": format!("{component}-koupleless-test"),
    });
    let api: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(client.clone(), &ns);
    let ev = match serde_json::from_value(ev) {
        Ok(ev) => ev,
        Err(e) => {
            tracing::warn!(error = %e, "event not representable");
            return;
        }
    };
    if let Err(e) = api.create(&PostParams::default(), &ev).await {
        tracing::debug!(error = %e, reason, "event not recorded");
    }
}

fn rand_suffix() -> u64 {
    let u = uuid::Uuid::new_v4();
    u.as_u64_pair().0
}

/// Whether an API error is `code`.
pub(crate) fn is_code(e: &kube::Error, code: u16) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == code)
}
