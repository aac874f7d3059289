//! What an eviction (`pods/<name>/eviction`) decides, as the real
//! EvictionREST does: whether the pod's PodDisruptionBudget lets it go, and
//! what that budget's status becomes. The HTTP driver is in [`crate::api`].
//!
//! The budget's status is the disruption controller's to compute
//! (`observedGeneration`, `disruptionsAllowed`, `currentHealthy`,
//! `desiredHealthy`); this server runs no such controller, so a budget
//! nobody has processed refuses every eviction it covers (429, "still being
//! processed"), as on a cluster whose controller is down. Tests write the
//! status themselves.

use crate::errors::ApiError;
use crate::selectors::{LabelSelector, labels_of};
use serde_json::{Value, json};

/// Upstream's cap on `status.disruptedPods` (MaxDisruptedPodSize).
pub const MAX_DISRUPTED_PODS: usize = 2000;

/// The outcome for one pod.
#[derive(Debug, Clone)]
pub enum Decision {
    /// Delete the pod; no budget is charged.
    Delete,
    /// Delete the pod and store this new status of budget `name`.
    Charge {
        /// The budget's name.
        name: String,
        /// Its new status.
        status: Value,
    },
    /// Refuse.
    Refuse(ApiError),
}

/// Phase Succeeded, Failed or Pending, or already being deleted: no budget
/// applies (canIgnorePDB).
fn can_ignore_budget(pod: &Value) -> bool {
    matches!(
        pod["status"]["phase"].as_str(),
        Some("Succeeded" | "Failed" | "Pending")
    ) || !pod["metadata"]["deletionTimestamp"].is_null()
}

fn is_ready(pod: &Value) -> bool {
    pod["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Ready" && c["status"] == "True")
}

/// Whether budget `pdb` covers `pod` (same namespace is the caller's): a
/// missing selector covers nothing, an empty one everything (policy/v1).
pub fn covers(pdb: &Value, pod: &Value) -> bool {
    let sel = &pdb["spec"]["selector"];
    if sel.is_null() {
        return false;
    }
    LabelSelector::from_label_selector(sel).is_ok_and(|s| s.matches(&labels_of(pod)))
}

fn too_many_requests(why: String) -> ApiError {
    ApiError {
        code: 429,
        reason: "TooManyRequests",
        message: "Cannot evict pod as it would violate the pod's disruption budget.".into(),
        details: Some(json!({"causes": [{"reason": "DisruptionBudget", "message": why}]})),
    }
}

fn forbidden(name: &str, why: &str) -> ApiError {
    ApiError {
        code: 403,
        reason: "Forbidden",
        message: format!("poddisruptionbudgets.policy \"{name}\" is forbidden: {why}"),
        details: Some(json!({"name": name, "group": "policy", "kind": "poddisruptionbudgets"})),
    }
}

/// The decision for evicting `pod`, given the budgets of its namespace, at
/// time `now` (RFC 3339).
pub fn decide(pod: &Value, budgets: &[&Value], now: &str) -> Decision {
    if can_ignore_budget(pod) {
        return Decision::Delete;
    }
    let covering: Vec<&&Value> = budgets.iter().filter(|b| covers(b, pod)).collect();
    let pdb = match covering.as_slice() {
        [] => return Decision::Delete,
        [one] => **one,
        _ => {
            return Decision::Refuse(ApiError::internal(
                "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support.",
            ));
        }
    };
    let name = pdb["metadata"]["name"].as_str().unwrap_or_default();
    let st = &pdb["status"];
    let int = |v: &Value| v.as_i64().unwrap_or(0);
    if !is_ready(pod) {
        // an unhealthy pod does not count against the budget when the
        // policy says so, or while the budget is met (IfHealthyBudget)
        let always = pdb["spec"]["unhealthyPodEvictionPolicy"] == "AlwaysAllow";
        let desired = int(&st["desiredHealthy"]);
        if always || (int(&st["currentHealthy"]) >= desired && desired > 0) {
            return Decision::Delete;
        }
    }
    if int(&st["observedGeneration"]) < int(&pdb["metadata"]["generation"]) {
        return Decision::Refuse(too_many_requests(format!(
            "The disruption budget {name} is still being processed by the server."
        )));
    }
    let allowed = int(&st["disruptionsAllowed"]);
    if allowed < 0 {
        return Decision::Refuse(forbidden(name, "pdb disruptions allowed is negative"));
    }
    let disrupted = st["disruptedPods"].as_object().map_or(0, |m| m.len());
    if disrupted > MAX_DISRUPTED_PODS {
        return Decision::Refuse(forbidden(
            name,
            "DisruptedPods map too big - too many evictions not confirmed by PDB controller",
        ));
    }
    if allowed == 0 {
        return Decision::Refuse(too_many_requests(format!(
            "The disruption budget {name} needs {} healthy pods and has {} currently",
            int(&st["desiredHealthy"]),
            int(&st["currentHealthy"])
        )));
    }
    let mut status = st.clone();
    status["disruptionsAllowed"] = json!(allowed - 1);
    let pod_name = pod["metadata"]["name"].as_str().unwrap_or_default();
    if !status["disruptedPods"].is_object() {
        status["disruptedPods"] = json!({});
    }
    status["disruptedPods"][pod_name] = json!(now);
    set_disruption_allowed(&mut status, now);
    Decision::Charge {
        name: name.to_string(),
        status,
    }
}

/// UpdateDisruptionAllowedCondition: `DisruptionAllowed` True
/// (SufficientPods) while disruptions are allowed, else False
/// (InsufficientPods); the transition time moves only with the status.
fn set_disruption_allowed(status: &mut Value, now: &str) {
    let allowed = status["disruptionsAllowed"].as_i64().unwrap_or(0) > 0;
    let (s, reason) = if allowed {
        ("True", "SufficientPods")
    } else {
        ("False", "InsufficientPods")
    };
    let mut conds: Vec<Value> = status["conditions"].as_array().cloned().unwrap_or_default();
    let observed = status["observedGeneration"].clone();
    match conds.iter_mut().find(|c| c["type"] == "DisruptionAllowed") {
        Some(c) => {
            if c["status"] != s {
                c["lastTransitionTime"] = json!(now);
            }
            c["status"] = json!(s);
            c["reason"] = json!(reason);
            c["observedGeneration"] = observed;
        }
        None => conds.push(json!({
            "type": "DisruptionAllowed", "status": s, "reason": reason, "message": "",
            "observedGeneration": observed, "lastTransitionTime": now
        })),
    }
    status["conditions"] = Value::Array(conds);
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: &str = "2025-01-01T00:00:00Z";

    fn pod(phase: &str, ready: bool) -> Value {
        json!({"metadata": {"name": "p", "labels": {"app": "web"}},
               "status": {"phase": phase,
                          "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}})
    }

    fn pdb(name: &str, selector: Value, generation: i64, status: Value) -> Value {
        json!({"metadata": {"name": name, "generation": generation},
               "spec": {"selector": selector, "minAvailable": 1}, "status": status})
    }

    fn processed(allowed: i64, current: i64, desired: i64) -> Value {
        json!({"observedGeneration": 1, "disruptionsAllowed": allowed,
               "currentHealthy": current, "desiredHealthy": desired, "expectedPods": current})
    }

    fn refusal(d: Decision) -> (u16, String, String) {
        match d {
            Decision::Refuse(e) => {
                let cause = e
                    .details
                    .as_ref()
                    .and_then(|d| d["causes"][0]["message"].as_str())
                    .unwrap_or_default()
                    .to_string();
                (e.code, e.message, cause)
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn budgets_that_do_not_apply() {
        let web = json!({"matchLabels": {"app": "web"}});
        let closed = pdb("b", web.clone(), 1, processed(0, 1, 1));
        // finished, pending or terminating pods ignore budgets
        for phase in ["Succeeded", "Failed", "Pending"] {
            assert!(matches!(
                decide(&pod(phase, true), &[&closed], NOW),
                Decision::Delete
            ));
        }
        let mut terminating = pod("Running", true);
        terminating["metadata"]["deletionTimestamp"] = json!(NOW);
        assert!(matches!(
            decide(&terminating, &[&closed], NOW),
            Decision::Delete
        ));
        // no covering budget
        let other = pdb(
            "o",
            json!({"matchLabels": {"app": "db"}}),
            1,
            processed(0, 1, 1),
        );
        let none = pdb("n", Value::Null, 1, processed(0, 1, 1));
        assert!(matches!(
            decide(&pod("Running", true), &[&other, &none], NOW),
            Decision::Delete
        ));
        // an empty selector covers every pod
        let all = pdb("all", json!({}), 1, processed(0, 1, 1));
        assert!(matches!(
            decide(&pod("Running", true), &[&all], NOW),
            Decision::Refuse(_)
        ));
    }

    #[test]
    fn refusals_as_upstream() {
        let web = json!({"matchLabels": {"app": "web"}});
        let running = pod("Running", true);
        let unprocessed = pdb("b", web.clone(), 2, processed(1, 2, 1));
        assert_eq!(
            refusal(decide(&running, &[&unprocessed], NOW)),
            (
                429,
                "Cannot evict pod as it would violate the pod's disruption budget.".into(),
                "The disruption budget b is still being processed by the server.".into()
            )
        );
        let exhausted = pdb("b", web.clone(), 1, processed(0, 2, 2));
        assert_eq!(
            refusal(decide(&running, &[&exhausted], NOW)).2,
            "The disruption budget b needs 2 healthy pods and has 2 currently"
        );
        let negative = pdb("b", web.clone(), 1, processed(-1, 0, 1));
        let (code, msg, _) = refusal(decide(&running, &[&negative], NOW));
        assert_eq!(code, 403);
        assert!(
            msg.ends_with("pdb disruptions allowed is negative"),
            "{msg}"
        );
        let two = pdb("c", web.clone(), 1, processed(1, 2, 1));
        let open = pdb("b", web.clone(), 1, processed(1, 2, 1));
        assert_eq!(refusal(decide(&running, &[&open, &two], NOW)).0, 500);
    }

    #[test]
    fn unhealthy_pods() {
        let web = json!({"matchLabels": {"app": "web"}});
        let not_ready = pod("Running", false);
        // IfHealthyBudget: the budget is met, the unhealthy pod goes uncharged
        let met = pdb("b", web.clone(), 1, processed(0, 2, 2));
        assert!(matches!(decide(&not_ready, &[&met], NOW), Decision::Delete));
        let unmet = pdb("b", web.clone(), 1, processed(0, 1, 2));
        assert_eq!(refusal(decide(&not_ready, &[&unmet], NOW)).0, 429);
        let mut always = unmet.clone();
        always["spec"]["unhealthyPodEvictionPolicy"] = json!("AlwaysAllow");
        assert!(matches!(
            decide(&not_ready, &[&always], NOW),
            Decision::Delete
        ));
    }

    #[test]
    fn charging_the_budget() {
        let web = json!({"matchLabels": {"app": "web"}});
        let open = pdb("b", web.clone(), 1, processed(1, 2, 1));
        let Decision::Charge { name, status } = decide(&pod("Running", true), &[&open], NOW) else {
            panic!("expected a charge")
        };
        assert_eq!(name, "b");
        assert_eq!(status["disruptionsAllowed"], 0);
        assert_eq!(status["disruptedPods"], json!({"p": NOW}));
        assert_eq!(
            status["conditions"],
            json!([{"type": "DisruptionAllowed", "status": "False", "reason": "InsufficientPods",
                    "message": "", "observedGeneration": 1, "lastTransitionTime": NOW}])
        );
        let roomy = pdb("b", web, 1, processed(3, 4, 1));
        let Decision::Charge { status, .. } = decide(&pod("Running", true), &[&roomy], NOW) else {
            panic!("expected a charge")
        };
        assert_eq!(status["disruptionsAllowed"], 2);
        assert_eq!(status["conditions"][0]["reason"], "SufficientPods");
    }
}
