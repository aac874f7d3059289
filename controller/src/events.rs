//! Kubernetes Events on Node transitions and module Pods (upstream emits none, spec controller
//! §2.4). Events are best effort: supervisors and the pod reconciler hand them to a queue and
//! never wait for the API server.

use k8s_openapi::api::core::v1::ObjectReference;
use kube::Client;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use std::sync::Arc;

/// Events queued beyond this are dropped (and logged), as client-go's event broadcaster drops
/// beyond its 1,000: Events are best effort and must never hold up the controller, but a
/// fleet registering at once (two Events per base, behind the API client's rate limit) must
/// not lose them at the first few hundred bases.
const QUEUE: usize = 1000;

/// One Node event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeEvent {
    /// Node name.
    pub node: String,
    /// Node UID, when known.
    pub uid: Option<String>,
    /// Warning rather than Normal.
    pub warning: bool,
    /// PascalCase reason.
    pub reason: &'static str,
    /// Human-readable note.
    pub note: String,
}

/// One event about a module Pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodEvent {
    /// Namespace.
    pub namespace: String,
    /// Pod name.
    pub name: String,
    /// Pod UID.
    pub uid: String,
    /// Warning rather than Normal.
    pub warning: bool,
    /// PascalCase reason.
    pub reason: &'static str,
    /// Human-readable note.
    pub note: String,
}

#[derive(Debug)]
enum Queued {
    Node(NodeEvent),
    Pod(PodEvent),
}

/// Cheap handle to queue events.
#[derive(Clone, Debug)]
pub struct EventSink {
    tx: mpsc::Sender<Queued>,
}

/// The task that publishes queued events.
pub struct EventPublisher {
    rx: mpsc::Receiver<Queued>,
    client: Client,
    reporter: Reporter,
    metrics: Arc<Metrics>,
}

impl EventSink {
    /// A sink and the publisher that drains it; events name `instance` as reporter.
    pub fn new(
        client: Client,
        instance: String,
        metrics: Arc<Metrics>,
    ) -> (EventSink, EventPublisher) {
        let (tx, rx) = mpsc::channel(QUEUE);
        let reporter = Reporter {
            controller: "koupleless-controller".into(),
            instance: Some(instance),
        };
        (
            EventSink { tx },
            EventPublisher {
                rx,
                client,
                reporter,
                metrics,
            },
        )
    }

    /// Queues an event; drops it when the queue is full.
    pub fn emit(&self, event: NodeEvent) {
        if let Err(e) = self.tx.try_send(Queued::Node(event)) {
            tracing::debug!(error = %e, "event queue full; event dropped");
        }
    }

    /// Queues a Pod event; drops it when the queue is full.
    pub fn emit_pod(&self, event: PodEvent) {
        if let Err(e) = self.tx.try_send(Queued::Pod(event)) {
            tracing::debug!(error = %e, "event queue full; event dropped");
        }
    }
}

impl EventPublisher {
    /// Publishes until cancelled, then drains what is queued.
    pub async fn run(mut self, cancel: CancellationToken) {
        let recorder = Recorder::new(self.client.clone(), self.reporter.clone());
        loop {
            let ev = tokio::select! {
                ev = self.rx.recv() => ev,
                () = cancel.cancelled() => {
                    self.rx.close();
                    self.rx.recv().await
                }
            };
            let Some(ev) = ev else { break };
            let (reference, warning, reason, note, what) = match ev {
                Queued::Node(ev) => (
                    ObjectReference {
                        api_version: Some("v1".into()),
                        kind: Some("Node".into()),
                        name: Some(ev.node.clone()),
                        uid: ev.uid,
                        ..ObjectReference::default()
                    },
                    ev.warning,
                    ev.reason,
                    ev.note,
                    ev.node,
                ),
                Queued::Pod(ev) => (
                    ObjectReference {
                        api_version: Some("v1".into()),
                        kind: Some("Pod".into()),
                        namespace: Some(ev.namespace.clone()),
                        name: Some(ev.name.clone()),
                        uid: Some(ev.uid),
                        ..ObjectReference::default()
                    },
                    ev.warning,
                    ev.reason,
                    ev.note,
                    format!("{}/{}", ev.namespace, ev.name),
                ),
            };
            let event = Event {
                type_: if warning {
                    EventType::Warning
                } else {
                    EventType::Normal
                },
                reason: reason.into(),
                note: Some(note),
                action: reason.into(),
                secondary: None,
            };
            let timer = self.metrics.api("event", "create");
            if let Err(e) = timer.done(recorder.publish(&event, &reference).await) {
                tracing::warn!(object = %what, reason, error = %e, "could not record event");
            }
        }
    }
}
