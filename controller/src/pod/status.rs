//! Module states → Pod status (spec controller §2.7, with the fixes the issue asks for):
//! container states with the base's reasons, `restartCount`, `containerID`
//! `koupleless://<base>/<name>:<version>`, phase, the conditions `Initialized`,
//! `ContainersReady` and `Ready` with real `lastTransitionTime`s, `podIP`/`hostIP`/
//! `startTime`. Pure; the driver writes [`status_patch`] only when it is `Some`.
//!
//! The patch is a strategic merge of `pods/status`: conditions merge by `type`, so
//! `PodScheduled` and conditions of others stay; `containerStatuses` has no merge key, so
//! every container is written each time.

use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting,
    ContainerStatus, HostIP, Pod, PodCondition, PodIP, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use koupleless_protocol::BizState;
use serde_json::{Value, json};

use super::plan::{ContainerView, Observed};
use crate::tunnel::BizRecord;

/// Condition types this controller writes.
pub const OWNED_CONDITIONS: [&str; 3] = ["Initialized", "ContainersReady", "Ready"];

/// Longest message copied from a base (Java stack traces can be long).
const MAX_MESSAGE: usize = 4096;

/// Facts about the base needed for a status.
#[derive(Clone, Copy, Debug)]
pub struct StatusContext<'a> {
    /// Base identity (for container IDs).
    pub base: &'a str,
    /// The base's IP (the vnode's InternalIP), when known.
    pub host_ip: Option<&'a str>,
    /// Now.
    pub now: Timestamp,
}

fn secs(ms: i64) -> Time {
    let t = Timestamp::from_millisecond(ms).unwrap_or(Timestamp::UNIX_EPOCH);
    Time(Timestamp::from_second(t.as_second()).unwrap_or(t))
}

fn truncate(s: &str) -> String {
    if s.len() <= MAX_MESSAGE {
        return s.to_owned();
    }
    let mut end = MAX_MESSAGE;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// `reason: message`, or whichever is set.
fn record_text(reason: &str, message: &str) -> String {
    let text = match (reason.is_empty(), message.is_empty()) {
        (false, false) => format!("{reason}: {message}"),
        (false, true) => reason.to_owned(),
        (true, false) => message.to_owned(),
        (true, true) => String::new(),
    };
    truncate(&text)
}

fn waiting(reason: &str, message: String) -> ContainerState {
    ContainerState {
        waiting: Some(ContainerStateWaiting {
            reason: Some(reason.to_owned()),
            message: (!message.is_empty()).then_some(message),
        }),
        ..ContainerState::default()
    }
}

fn state_of_record(r: &BizRecord, superseded_by: Option<&str>, key: &str) -> ContainerState {
    let text = record_text(&r.reason, &r.message);
    match r.state {
        BizState::Activated => ContainerState {
            running: Some(ContainerStateRunning {
                started_at: Some(secs(r.change_time_ms)),
            }),
            ..ContainerState::default()
        },
        BizState::Deactivated => match superseded_by {
            Some(v) => waiting(
                "Superseded",
                format!(
                    "{}:{v} is the active version on this base; {key} is deactivated",
                    r.name
                ),
            ),
            None => waiting("ModuleDeactivated", text),
        },
        BizState::Resolved => waiting("ModuleStarting", text),
        BizState::Broken => waiting("InstallFailed", text),
        BizState::Stopped => ContainerState {
            terminated: Some(ContainerStateTerminated {
                exit_code: 0,
                reason: Some("Uninstalled".into()),
                message: (!text.is_empty()).then_some(text),
                finished_at: Some(secs(r.change_time_ms)),
                ..ContainerStateTerminated::default()
            }),
            ..ContainerState::default()
        },
        BizState::Unresolved | BizState::Unknown => waiting("ModuleUnresolved", text),
    }
}

fn is_running(s: Option<&ContainerState>) -> bool {
    s.is_some_and(|s| s.running.is_some())
}

/// One container's status; `old` is what the Pod shows now.
fn container_status(
    c: &ContainerView,
    image: &str,
    old: Option<&ContainerStatus>,
    cx: &StatusContext<'_>,
) -> ContainerStatus {
    let (state, reported) = match (&c.spec, &c.observed) {
        (Err(e), _) => (waiting(e.reason(), e.to_string()), false),
        (
            Ok(m),
            Some(Observed::Reported {
                record,
                superseded_by,
            }),
        ) => (
            state_of_record(record, superseded_by.as_deref(), &m.key()),
            true,
        ),
        (Ok(m), Some(Observed::NotActivated { record, active })) => (
            waiting(
                "NotActivated",
                format!(
                    "{} is installed but deactivated: the base keeps {}:{active} active. Let the \
                     base activate new versions (SOFAArk: activate.new.module=true; \
                     koupleless-agent: --activation new-takes-over)",
                    m.key(),
                    record.name
                ),
            ),
            true,
        ),
        (Ok(m), Some(Observed::Installing { unreachable: false })) => (
            waiting(
                "Installing",
                format!("installing {} from {}", m.key(), m.url),
            ),
            false,
        ),
        (Ok(m), Some(Observed::Installing { unreachable: true })) => (
            waiting(
                "BaseUnreachable",
                format!(
                    "base {} is not reachable; {} is installed when it is back",
                    cx.base,
                    m.key()
                ),
            ),
            false,
        ),
        (Ok(m), Some(Observed::Unknown)) => {
            if let Some(o) = old.filter(|o| o.state.is_some()) {
                // Nothing new is known: the container shows what it showed.
                return ContainerStatus {
                    image: image.to_owned(),
                    ..o.clone()
                };
            }
            (
                waiting(
                    "Installing",
                    format!(
                        "waiting for the module list of base {} before installing {}",
                        cx.base,
                        m.key()
                    ),
                ),
                false,
            )
        }
        (Ok(_), Some(Observed::Failed { reason, message })) => (
            waiting("InstallFailed", record_text(reason, message)),
            false,
        ),
        (Ok(m), Some(Observed::Gone)) => (
            waiting(
                "ModuleGone",
                format!(
                    "{} is no longer on base {}; installing it again",
                    m.key(),
                    cx.base
                ),
            ),
            false,
        ),
        (Ok(_), Some(Observed::Uninstalled) | None) => {
            // Keep the first finish time, so that repeating this is not a change.
            let kept = old
                .and_then(|o| o.state.as_ref())
                .filter(|s| {
                    s.terminated
                        .as_ref()
                        .is_some_and(|t| t.reason.as_deref() == Some("Uninstalled"))
                })
                .cloned();
            let state = kept.unwrap_or_else(|| ContainerState {
                terminated: Some(ContainerStateTerminated {
                    exit_code: 0,
                    reason: Some("Uninstalled".into()),
                    finished_at: Some(secs(cx.now.as_millisecond())),
                    ..ContainerStateTerminated::default()
                }),
                ..ContainerState::default()
            });
            (state, false)
        }
    };
    let running = state.running.is_some();
    let was_running = is_running(old.and_then(|o| o.state.as_ref()));
    let mut restarts = old.map_or(0, |o| o.restart_count);
    let mut last_state = old.and_then(|o| o.last_state.clone());
    if was_running && !running {
        // It ran and stopped: remember how, as a kubelet does.
        let old_run = old
            .and_then(|o| o.state.as_ref())
            .and_then(|s| s.running.as_ref());
        let why = state
            .waiting
            .as_ref()
            .and_then(|w| w.reason.clone())
            .or_else(|| state.terminated.as_ref().and_then(|t| t.reason.clone()));
        last_state = Some(ContainerState {
            terminated: Some(ContainerStateTerminated {
                exit_code: 1,
                reason: why,
                started_at: old_run.and_then(|r| r.started_at.clone()),
                finished_at: Some(secs(cx.now.as_millisecond())),
                ..ContainerStateTerminated::default()
            }),
            ..ContainerState::default()
        });
    }
    if running && !was_running && last_state.as_ref().is_some_and(|s| s.terminated.is_some()) {
        // It had run before: this is a restart.
        restarts += 1;
    }
    let (container_id, image_id) = match &c.spec {
        Ok(m) if reported => (
            Some(format!("koupleless://{}/{}", cx.base, m.key())),
            c.installed.clone().unwrap_or_else(|| m.url.clone()),
        ),
        _ => (None, String::new()),
    };
    ContainerStatus {
        name: c.name.clone(),
        image: image.to_owned(),
        image_id,
        container_id,
        ready: running,
        started: Some(running),
        restart_count: restarts,
        state: Some(state),
        last_state,
        ..ContainerStatus::default()
    }
}

fn condition(
    old: &[PodCondition],
    type_: &str,
    ok: bool,
    reason: Option<String>,
    message: Option<String>,
    now: Timestamp,
) -> PodCondition {
    let status = if ok { "True" } else { "False" };
    let since = old
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .and_then(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| secs(now.as_millisecond()));
    PodCondition {
        type_: type_.to_owned(),
        status: status.to_owned(),
        last_transition_time: Some(since),
        reason: if ok { None } else { reason },
        message: if ok { None } else { message },
        ..PodCondition::default()
    }
}

/// The part of the Pod status this controller owns, computed from the plan's view of the
/// Pod's containers.
pub fn pod_status(pod: &Pod, containers: &[ContainerView], cx: &StatusContext<'_>) -> PodStatus {
    let old = pod.status.as_ref();
    let old_statuses = old
        .and_then(|s| s.container_statuses.as_deref())
        .unwrap_or(&[]);
    let old_conditions = old.and_then(|s| s.conditions.as_deref()).unwrap_or(&[]);
    let images = pod.spec.as_ref().map(|s| &s.containers[..]).unwrap_or(&[]);
    let statuses: Vec<ContainerStatus> = containers
        .iter()
        .map(|c| {
            let image = images
                .iter()
                .find(|s| s.name == c.name)
                .and_then(|s| s.image.as_deref())
                .unwrap_or_default();
            let prev = old_statuses.iter().find(|o| o.name == c.name);
            container_status(c, image, prev, cx)
        })
        .collect();
    let unready: Vec<&str> = statuses
        .iter()
        .filter(|s| !s.ready)
        .map(|s| s.name.as_str())
        .collect();
    let all_ready = !statuses.is_empty() && unready.is_empty();
    let (reason, message) = if all_ready {
        (None, None)
    } else {
        (
            Some("ContainersNotReady".to_owned()),
            Some(format!(
                "containers with unready status: [{}]",
                unready.join(" ")
            )),
        )
    };
    let conditions = vec![
        condition(old_conditions, "Initialized", true, None, None, cx.now),
        condition(
            old_conditions,
            "ContainersReady",
            all_ready,
            reason.clone(),
            message.clone(),
            cx.now,
        ),
        condition(old_conditions, "Ready", all_ready, reason, message, cx.now),
    ];
    let any_running = statuses.iter().any(|s| is_running(s.state.as_ref()));
    let old_phase = old.and_then(|s| s.phase.as_deref());
    let phase = if any_running || old_phase == Some("Running") {
        "Running"
    } else {
        "Pending"
    };
    let start = old
        .and_then(|s| s.start_time.clone())
        .unwrap_or_else(|| secs(cx.now.as_millisecond()));
    PodStatus {
        phase: Some(phase.into()),
        conditions: Some(conditions),
        container_statuses: Some(statuses),
        host_ip: cx.host_ip.map(str::to_owned),
        host_ips: cx.host_ip.map(|ip| vec![HostIP { ip: ip.to_owned() }]),
        pod_ip: cx.host_ip.map(str::to_owned),
        pod_ips: cx.host_ip.map(|ip| vec![PodIP { ip: ip.to_owned() }]),
        start_time: Some(start),
        ..PodStatus::default()
    }
}

/// Whether a status says the Pod is Ready.
pub fn is_ready(s: &PodStatus) -> bool {
    s.conditions
        .iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True")
}

/// The fields of `s` this controller owns, as JSON, for comparison and patching.
fn owned(s: &PodStatus) -> Value {
    let mut conditions: Vec<&PodCondition> = s
        .conditions
        .iter()
        .flatten()
        .filter(|c| OWNED_CONDITIONS.contains(&c.type_.as_str()))
        .collect();
    conditions.sort_by(|a, b| a.type_.cmp(&b.type_));
    // Conditions merge by type: an explicit null removes the reason of an earlier False.
    let conditions: Vec<Value> = conditions
        .into_iter()
        .map(|c| {
            json!({
                "type": c.type_,
                "status": c.status,
                "lastTransitionTime": c.last_transition_time,
                "reason": c.reason,
                "message": c.message,
            })
        })
        .collect();
    json!({
        "phase": s.phase,
        "conditions": conditions,
        "containerStatuses": s.container_statuses,
        "hostIP": s.host_ip,
        "hostIPs": s.host_ips,
        "podIP": s.pod_ip,
        "podIPs": s.pod_ips,
        "startTime": s.start_time,
    })
}

/// The strategic merge patch of `pods/status` that brings `pod` to `desired`, or `None` when
/// nothing this controller owns would change. A field `desired` leaves unset (no base IP
/// known yet) is neither compared nor removed.
pub fn status_patch(pod: &Pod, desired: &PodStatus) -> Option<Value> {
    let Value::Object(now) = owned(desired) else {
        return None;
    };
    let Value::Object(before) = owned(&pod.status.clone().unwrap_or_default()) else {
        return None;
    };
    let body: serde_json::Map<String, Value> =
        now.into_iter().filter(|(_, v)| !v.is_null()).collect();
    if body
        .iter()
        .all(|(k, v)| before.get(k).is_some_and(|b| b == v))
    {
        return None;
    }
    Some(json!({ "status": Value::Object(body) }))
}

/// A Pod Event worth recording for a container's change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerEvent {
    /// Warning rather than Normal.
    pub warning: bool,
    /// Reason.
    pub reason: &'static str,
    /// Note.
    pub note: String,
}

fn waiting_of(s: Option<&ContainerStatus>) -> Option<(&str, &str)> {
    let w = s?.state.as_ref()?.waiting.as_ref()?;
    Some((
        w.reason.as_deref().unwrap_or_default(),
        w.message.as_deref().unwrap_or_default(),
    ))
}

/// Events for the changes from `old` to `new` (Installed, InstallFailed, Superseded,
/// ModuleGone, invalid containers). Installing/Uninstalling/Uninstalled come from actions.
pub fn container_events(old: Option<&PodStatus>, new: &PodStatus) -> Vec<ContainerEvent> {
    let olds = old
        .and_then(|s| s.container_statuses.as_deref())
        .unwrap_or(&[]);
    let mut out = Vec::new();
    for c in new.container_statuses.iter().flatten() {
        let prev = olds.iter().find(|o| o.name == c.name);
        let now_running = is_running(c.state.as_ref());
        if now_running && !is_running(prev.and_then(|p| p.state.as_ref())) {
            let id = c.container_id.as_deref().unwrap_or(&c.name);
            out.push(ContainerEvent {
                warning: false,
                reason: "Installed",
                note: format!("module {id} is active"),
            });
            continue;
        }
        let Some((reason, message)) = waiting_of(Some(c)) else {
            continue;
        };
        if waiting_of(prev) == Some((reason, message)) {
            continue;
        }
        let (warning, reason) = match reason {
            "InstallFailed" => (true, "InstallFailed"),
            "Superseded" => (false, "Superseded"),
            "NotActivated" => (true, "NotActivated"),
            "ModuleGone" => (true, "ModuleGone"),
            "MissingBizVersion" => (true, "MissingBizVersion"),
            "BizVersionUnresolved" => (true, "BizVersionUnresolved"),
            "InvalidModulePackage" => (true, "InvalidModulePackage"),
            _ => continue,
        };
        out.push(ContainerEvent {
            warning,
            reason,
            note: format!("container {}: {message}", c.name),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pod::module::{ModuleSpec, SpecError};

    const MS: i64 = 1_758_448_804_123;

    fn pod(status: serde_json::Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "default", "uid": "u"},
            "spec": {"nodeName": "vnode.b.dev", "containers": [
                {"name": "biz1", "image": "https://r/biz1.jar"},
                {"name": "biz2", "image": "https://r/biz2.jar"}]},
            "status": status,
        }))
        .unwrap()
    }

    fn spec(name: &str) -> ModuleSpec {
        ModuleSpec {
            name: name.into(),
            version: "1".into(),
            url: format!("https://r/{name}.jar"),
        }
    }

    fn rec(name: &str, state: BizState) -> BizRecord {
        BizRecord {
            name: name.into(),
            version: "1".into(),
            state,
            change_time_ms: MS,
            reason: "biz reason".into(),
            message: "biz message".into(),
        }
    }

    fn reported(name: &str, state: BizState) -> ContainerView {
        ContainerView {
            name: name.into(),
            installed: None,
            spec: Ok(spec(name)),
            observed: Some(Observed::Reported {
                record: rec(name, state),
                superseded_by: None,
            }),
        }
    }

    fn cx(now_s: i64) -> StatusContext<'static> {
        StatusContext {
            base: "10.0.0.5",
            host_ip: Some("10.0.0.5"),
            now: Timestamp::from_second(now_s).unwrap(),
        }
    }

    fn cond<'a>(s: &'a PodStatus, t: &str) -> &'a PodCondition {
        s.conditions
            .as_ref()
            .unwrap()
            .iter()
            .find(|c| c.type_ == t)
            .unwrap()
    }

    fn reason(s: &ContainerStatus) -> Option<&str> {
        s.state.as_ref()?.waiting.as_ref()?.reason.as_deref()
    }

    #[test]
    fn state_table() {
        let p = pod(json!({"phase": "Pending"}));
        let cases: Vec<(ContainerView, Option<&str>, bool)> = vec![
            (reported("biz1", BizState::Activated), None, true),
            (
                reported("biz1", BizState::Resolved),
                Some("ModuleStarting"),
                false,
            ),
            (
                reported("biz1", BizState::Deactivated),
                Some("ModuleDeactivated"),
                false,
            ),
            (
                reported("biz1", BizState::Broken),
                Some("InstallFailed"),
                false,
            ),
            (
                reported("biz1", BizState::Unresolved),
                Some("ModuleUnresolved"),
                false,
            ),
            (
                ContainerView {
                    name: "biz1".into(),
                    installed: None,
                    spec: Ok(spec("biz1")),
                    observed: Some(Observed::Reported {
                        record: rec("biz1", BizState::Deactivated),
                        superseded_by: Some("2".into()),
                    }),
                },
                Some("Superseded"),
                false,
            ),
            (
                ContainerView {
                    name: "biz1".into(),
                    installed: None,
                    spec: Ok(spec("biz1")),
                    observed: Some(Observed::NotActivated {
                        record: rec("biz1", BizState::Deactivated),
                        active: "0".into(),
                    }),
                },
                Some("NotActivated"),
                false,
            ),
            (
                ContainerView {
                    name: "biz1".into(),
                    installed: None,
                    spec: Ok(spec("biz1")),
                    observed: Some(Observed::Installing { unreachable: false }),
                },
                Some("Installing"),
                false,
            ),
            (
                ContainerView {
                    name: "biz1".into(),
                    installed: None,
                    spec: Ok(spec("biz1")),
                    observed: Some(Observed::Installing { unreachable: true }),
                },
                Some("BaseUnreachable"),
                false,
            ),
            (
                ContainerView {
                    name: "biz1".into(),
                    installed: None,
                    spec: Ok(spec("biz1")),
                    observed: Some(Observed::Failed {
                        reason: "FAILED".into(),
                        message: "no such file".into(),
                    }),
                },
                Some("InstallFailed"),
                false,
            ),
            (
                ContainerView {
                    name: "biz1".into(),
                    installed: None,
                    spec: Ok(spec("biz1")),
                    observed: Some(Observed::Gone),
                },
                Some("ModuleGone"),
                false,
            ),
            (
                ContainerView {
                    name: "biz1".into(),
                    installed: None,
                    spec: Err(SpecError::MissingVersion {
                        container: "biz1".into(),
                    }),
                    observed: None,
                },
                Some("MissingBizVersion"),
                false,
            ),
        ];
        for (view, want_reason, ready) in cases {
            let s = pod_status(&p, std::slice::from_ref(&view), &cx(100));
            let c = &s.container_statuses.as_ref().unwrap()[0];
            assert_eq!(reason(c), want_reason, "{view:?}");
            assert_eq!(c.ready, ready, "{view:?}");
            assert_eq!(c.started, Some(ready));
            assert_eq!(c.image, "https://r/biz1.jar");
            assert_eq!(
                cond(&s, "Ready").status,
                if ready { "True" } else { "False" }
            );
            assert_eq!(
                s.phase.as_deref(),
                Some(if ready { "Running" } else { "Pending" })
            );
            if let Some(w) = c.state.as_ref().unwrap().waiting.as_ref() {
                assert!(
                    w.message.as_deref().is_some_and(|m| !m.is_empty()),
                    "{view:?}"
                );
            }
        }
    }

    #[test]
    fn running_status_fields() {
        let p = pod(json!({"phase": "Pending", "conditions": [
            {"type": "PodScheduled", "status": "True", "lastTransitionTime": "2025-01-01T00:00:00Z"}]}));
        let views = [
            reported("biz1", BizState::Activated),
            reported("biz2", BizState::Activated),
        ];
        let s = pod_status(&p, &views, &cx(100));
        let c = &s.container_statuses.as_ref().unwrap()[0];
        assert_eq!(
            c.container_id.as_deref(),
            Some("koupleless://10.0.0.5/biz1:1")
        );
        assert_eq!(c.image_id, "https://r/biz1.jar");
        assert_eq!(
            c.state
                .as_ref()
                .unwrap()
                .running
                .as_ref()
                .unwrap()
                .started_at,
            Some(Time(Timestamp::from_second(MS / 1000).unwrap())),
            "whole seconds, as the API server stores them"
        );
        assert_eq!(s.phase.as_deref(), Some("Running"));
        assert_eq!(s.pod_ip.as_deref(), Some("10.0.0.5"));
        assert_eq!(s.host_ip.as_deref(), Some("10.0.0.5"));
        assert_eq!(s.pod_ips.as_ref().unwrap()[0].ip, "10.0.0.5");
        for t in OWNED_CONDITIONS {
            assert_eq!(cond(&s, t).status, "True", "{t}");
            assert_eq!(
                cond(&s, t).last_transition_time,
                Some(Time(Timestamp::from_second(100).unwrap()))
            );
        }
        let patch = status_patch(&p, &s).unwrap();
        let types: Vec<&str> = patch["status"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["type"].as_str().unwrap())
            .collect();
        assert!(
            !types.contains(&"PodScheduled"),
            "PodScheduled is not ours: {types:?}"
        );
        assert_eq!(
            patch["status"]["containerStatuses"]
                .as_array()
                .unwrap()
                .len(),
            2
        );
    }

    /// Applies a status as the API server would store it (JSON round trip).
    /// Applies the patch as the API server's strategic merge does: conditions merge by
    /// `type` field by field (null removes), other lists are replaced.
    fn applied(p: &Pod, s: &PodStatus) -> Pod {
        let mut v = serde_json::to_value(p).unwrap();
        if v["status"].is_null() {
            v["status"] = json!({});
        }
        let patch = status_patch(p, s).unwrap();
        for (k, val) in patch["status"].as_object().unwrap() {
            if k != "conditions" {
                v["status"][k] = val.clone();
                continue;
            }
            let mut list = v["status"]["conditions"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            for c in val.as_array().unwrap() {
                let slot = list.iter_mut().find(|o| o["type"] == c["type"]);
                let target = match slot {
                    Some(o) => o,
                    None => {
                        list.push(json!({}));
                        list.last_mut().unwrap()
                    }
                };
                for (ck, cv) in c.as_object().unwrap() {
                    if cv.is_null() {
                        target.as_object_mut().unwrap().remove(ck);
                    } else {
                        target[ck] = cv.clone();
                    }
                }
            }
            v["status"]["conditions"] = Value::Array(list);
        }
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn steady_state_writes_nothing_and_transitions_keep_their_time() {
        let p0 = pod(json!({"phase": "Pending"}));
        let views = [
            reported("biz1", BizState::Activated),
            reported("biz2", BizState::Activated),
        ];
        let s1 = pod_status(&p0, &views, &cx(100));
        let p1 = applied(&p0, &s1);
        // Later, same module states: no write.
        let s2 = pod_status(&p1, &views, &cx(200));
        assert_eq!(status_patch(&p1, &s2), None);
        // biz2 deactivated: Ready flips at 300, Initialized keeps its time.
        let views2 = [
            reported("biz1", BizState::Activated),
            reported("biz2", BizState::Deactivated),
        ];
        let s3 = pod_status(&p1, &views2, &cx(300));
        assert_eq!(cond(&s3, "Ready").status, "False");
        assert_eq!(
            cond(&s3, "Ready").last_transition_time,
            Some(Time(Timestamp::from_second(300).unwrap()))
        );
        assert_eq!(
            cond(&s3, "Ready").message.as_deref(),
            Some("containers with unready status: [biz2]")
        );
        assert_eq!(
            cond(&s3, "Initialized").last_transition_time,
            Some(Time(Timestamp::from_second(100).unwrap()))
        );
        assert_eq!(s3.phase.as_deref(), Some("Running"));
        assert_eq!(s3.start_time, s1.start_time);
        let p3 = applied(&p1, &s3);
        assert_eq!(status_patch(&p3, &pod_status(&p3, &views2, &cx(400))), None);
        // Ready again: the reason of the False condition goes, and then nothing is written.
        let s4 = pod_status(&p3, &views, &cx(500));
        let p4 = applied(&p3, &s4);
        assert_eq!(cond(p4.status.as_ref().unwrap(), "Ready").reason, None);
        assert_eq!(status_patch(&p4, &pod_status(&p4, &views, &cx(600))), None);
    }

    #[test]
    fn broken_and_back_counts_a_restart() {
        let p0 = pod(json!({}));
        let run = [reported("biz1", BizState::Activated)];
        let p1 = applied(&p0, &pod_status(&p0, &run, &cx(100)));
        let gone = [ContainerView {
            name: "biz1".into(),
            installed: None,
            spec: Ok(spec("biz1")),
            observed: Some(Observed::Gone),
        }];
        let s2 = pod_status(&p1, &gone, &cx(200));
        let c2 = &s2.container_statuses.as_ref().unwrap()[0];
        assert_eq!(c2.restart_count, 0);
        let last = c2.last_state.as_ref().unwrap().terminated.as_ref().unwrap();
        assert_eq!(last.reason.as_deref(), Some("ModuleGone"));
        let ev = container_events(p1.status.as_ref(), &s2);
        assert_eq!(
            ev.iter().map(|e| e.reason).collect::<Vec<_>>(),
            ["ModuleGone"]
        );
        let p2 = applied(&p1, &s2);
        let s3 = pod_status(&p2, &run, &cx(300));
        assert_eq!(s3.container_statuses.as_ref().unwrap()[0].restart_count, 1);
        let ev = container_events(p2.status.as_ref(), &s3);
        assert_eq!(
            ev.iter().map(|e| e.reason).collect::<Vec<_>>(),
            ["Installed"]
        );
        let p3 = applied(&p2, &s3);
        assert_eq!(status_patch(&p3, &pod_status(&p3, &run, &cx(400))), None);
    }

    #[test]
    fn unknown_keeps_what_the_pod_shows() {
        let unknown = [ContainerView {
            name: "biz1".into(),
            installed: None,
            spec: Ok(spec("biz1")),
            observed: Some(Observed::Unknown),
        }];
        // A new Pod: waiting for the base's list.
        let p0 = pod(json!({}));
        let s0 = pod_status(&p0, &unknown, &cx(100));
        let c0 = &s0.container_statuses.as_ref().unwrap()[0];
        assert_eq!(
            c0.state
                .as_ref()
                .unwrap()
                .waiting
                .as_ref()
                .unwrap()
                .reason
                .as_deref(),
            Some("Installing")
        );
        // A Running Pod after a restart or takeover: nothing to write.
        let run = [reported("biz1", BizState::Activated)];
        let p1 = applied(&p0, &pod_status(&p0, &run, &cx(200)));
        let s1 = pod_status(&p1, &unknown, &cx(300));
        assert_eq!(status_patch(&p1, &s1), None);
        assert_eq!(cond(&s1, "Ready").status, "True");
    }

    #[test]
    fn events_on_failure_and_supersession_once() {
        let p0 = pod(json!({}));
        let failed = [reported("biz1", BizState::Broken)];
        let s1 = pod_status(&p0, &failed, &cx(100));
        let ev = container_events(p0.status.as_ref(), &s1);
        assert_eq!(ev.len(), 1);
        assert!(ev[0].warning);
        assert_eq!(ev[0].reason, "InstallFailed");
        assert!(ev[0].note.contains("biz message"), "{}", ev[0].note);
        let p1 = applied(&p0, &s1);
        assert!(
            container_events(p1.status.as_ref(), &pod_status(&p1, &failed, &cx(200))).is_empty()
        );
        let sup = [ContainerView {
            name: "biz1".into(),
            installed: None,
            spec: Ok(spec("biz1")),
            observed: Some(Observed::Reported {
                record: rec("biz1", BizState::Deactivated),
                superseded_by: Some("2".into()),
            }),
        }];
        let ev = container_events(p1.status.as_ref(), &pod_status(&p1, &sup, &cx(300)));
        assert_eq!(
            ev.iter().map(|e| e.reason).collect::<Vec<_>>(),
            ["Superseded"]
        );
    }

    #[test]
    fn image_id_is_the_package_installed() {
        let p = pod(json!({}));
        let mut v = reported("biz1", BizState::Activated);
        v.installed = Some("https://r/old.jar".into());
        let s = pod_status(&p, &[v], &cx(1));
        let c = &s.container_statuses.as_ref().unwrap()[0];
        assert_eq!(c.image, "https://r/biz1.jar", "what the Pod asks for");
        assert_eq!(c.image_id, "https://r/old.jar", "what runs");
    }

    #[test]
    fn unknown_base_ip_is_left_alone() {
        let p = pod(json!({"podIP": "10.9.9.9"}));
        let mut c = cx(1);
        c.host_ip = None;
        let s = pod_status(&p, &[reported("biz1", BizState::Activated)], &c);
        let patch = status_patch(&p, &s).unwrap();
        assert!(patch["status"].get("podIP").is_none());
        let p2 = applied(&p, &s);
        assert_eq!(
            status_patch(
                &p2,
                &pod_status(&p2, &[reported("biz1", BizState::Activated)], &c)
            ),
            None
        );
    }

    #[test]
    fn long_messages_are_cut() {
        let long = "x".repeat(10_000);
        assert!(record_text("r", &long).len() < 4200);
        assert_eq!(record_text("", "m"), "m");
        assert_eq!(record_text("r", ""), "r");
    }
}
