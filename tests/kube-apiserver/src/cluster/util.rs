//! Small pure helpers shared by the controllers: Pod readiness and
//! availability, quantities, int-or-percent scaling, template hashes.

use k8s_openapi::api::core::v1::{Pod, PodCondition};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{OwnerReference, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Now as the API's RFC 3339 timestamp (second precision, as `metav1.Time`).
pub fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// A timestamp in milliseconds since the Unix epoch.
pub fn time_ms(t: &Time) -> i64 {
    t.0.as_millisecond()
}

/// A `metav1.Time` for `ms` (truncated to seconds, as the API stores it).
pub fn time_of(ms: i64) -> Time {
    let secs = ms.div_euclid(1000);
    Time(k8s_openapi::jiff::Timestamp::from_second(secs).unwrap_or_default())
}

/// The condition `type_` of a Pod.
pub fn pod_condition<'a>(pod: &'a Pod, type_: &str) -> Option<&'a PodCondition> {
    pod.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)
}

/// Whether the Pod's Ready condition is True.
pub fn is_pod_ready(pod: &Pod) -> bool {
    pod_condition(pod, "Ready").is_some_and(|c| c.status == "True")
}

/// When the Pod turned Ready (ms), if it is Ready.
pub fn ready_since(pod: &Pod) -> Option<i64> {
    let c = pod_condition(pod, "Ready").filter(|c| c.status == "True")?;
    Some(c.last_transition_time.as_ref().map(time_ms).unwrap_or(0))
}

/// Upstream's `IsPodAvailable`: Ready, and Ready for `min_ready_seconds`
/// (strictly longer, as upstream compares with `Before`).
pub fn is_pod_available(pod: &Pod, min_ready_seconds: i32, now: i64) -> bool {
    match ready_since(pod) {
        None => false,
        Some(_) if min_ready_seconds <= 0 => true,
        Some(0) => false,
        Some(since) => since + i64::from(min_ready_seconds) * 1000 < now,
    }
}

/// How long until a Ready but not yet available Pod becomes available.
pub fn until_available(pod: &Pod, min_ready_seconds: i32, now: i64) -> Option<std::time::Duration> {
    let since = ready_since(pod)?;
    if min_ready_seconds <= 0 || since == 0 {
        return None;
    }
    let at = since + i64::from(min_ready_seconds) * 1000 + 1;
    (at > now).then(|| std::time::Duration::from_millis((at - now) as u64))
}

/// Phase of a Pod ("" when unset).
pub fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

/// Succeeded or Failed.
pub fn is_terminal(pod: &Pod) -> bool {
    matches!(phase(pod), "Succeeded" | "Failed")
}

/// Upstream's `IsPodActive`: not terminal and not being deleted.
pub fn is_active(pod: &Pod) -> bool {
    !is_terminal(pod) && pod.metadata.deletion_timestamp.is_none()
}

/// The controller owner reference of an object.
pub fn controller_ref(refs: Option<&Vec<OwnerReference>>) -> Option<&OwnerReference> {
    refs?.iter().find(|r| r.controller == Some(true))
}

/// Whether `refs` name `uid` as controller.
pub fn controlled_by(refs: Option<&Vec<OwnerReference>>, uid: &str) -> bool {
    controller_ref(refs).is_some_and(|r| r.uid == uid)
}

/// Upstream's `GetScaledValueFromIntOrPercent`: an int as is, `"N%"` of
/// `total` rounded up or down.
pub fn scaled_value(v: &IntOrString, total: i32, round_up: bool) -> Result<i32, String> {
    match v {
        IntOrString::Int(i) => Ok(*i),
        IntOrString::String(s) => {
            let p: i64 = s
                .strip_suffix('%')
                .and_then(|n| n.parse().ok())
                .ok_or_else(|| format!("invalid value for IntOrString: invalid value {s:?}"))?;
            let prod = p * i64::from(total);
            let v = if round_up {
                (prod + 99).div_euclid(100)
            } else {
                prod.div_euclid(100)
            };
            Ok(v as i32)
        }
    }
}

/// Parses a resource quantity ("100m", "64Mi", "1.5Gi", "2e3") into
/// milli-units, rounded up as upstream's `MilliValue`.
pub fn parse_quantity_milli(s: &str) -> Option<i128> {
    let s = s.trim();
    let (neg, s) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, suffix) = s.split_at(split);
    if num.is_empty() {
        return None;
    }
    let (int, frac) = num.split_once('.').unwrap_or((num, ""));
    let digits = format!("{int}{frac}");
    let mant: i128 = if digits.is_empty() {
        0
    } else {
        digits.parse().ok()?
    };
    let mut dexp: i32 = -(frac.len() as i32);
    let mut bexp: u32 = 0;
    match suffix {
        "" => {}
        "n" => dexp -= 9,
        "u" => dexp -= 6,
        "m" => dexp -= 3,
        "k" => dexp += 3,
        "M" => dexp += 6,
        "G" => dexp += 9,
        "T" => dexp += 12,
        "P" => dexp += 15,
        "E" => dexp += 18,
        "Ki" => bexp = 10,
        "Mi" => bexp = 20,
        "Gi" => bexp = 30,
        "Ti" => bexp = 40,
        "Pi" => bexp = 50,
        "Ei" => bexp = 60,
        other => {
            let e = other.strip_prefix(['e', 'E'])?;
            dexp += e.parse::<i32>().ok()?;
        }
    }
    dexp += 3; // milli
    let mut num = mant.checked_mul(1i128.checked_shl(bexp)?)?;
    let mut den: i128 = 1;
    if dexp >= 0 {
        num = num.checked_mul(10i128.checked_pow(dexp as u32)?)?;
    } else {
        den = 10i128.checked_pow((-dexp) as u32)?;
    }
    let v = (num + den - 1) / den;
    Some(if neg { -v } else { v })
}

/// What a Pod asks for, as the scheduler counts it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Requests {
    /// CPU in millicores.
    pub milli_cpu: i128,
    /// Memory in bytes.
    pub memory: i128,
}

/// Upstream's pod request: the sum over containers, at least the largest
/// init container, plus overhead. A container with limits but no requests
/// counts its limits: the real API server defaults requests from limits,
/// this one does not, so the scheduler applies that default itself.
pub fn pod_requests(pod: &Pod) -> Requests {
    let Some(spec) = pod.spec.as_ref() else {
        return Requests::default();
    };
    let of = |c: &k8s_openapi::api::core::v1::Container| -> Requests {
        let get = |name: &str| -> i128 {
            let r = c.resources.as_ref();
            let q = r
                .and_then(|r| r.requests.as_ref())
                .and_then(|m| m.get(name))
                .or_else(|| r.and_then(|r| r.limits.as_ref()).and_then(|m| m.get(name)));
            q.and_then(|q| parse_quantity_milli(&q.0)).unwrap_or(0)
        };
        Requests {
            milli_cpu: get("cpu"),
            memory: get("memory").div_euclid(1000) + i128::from(get("memory") % 1000 != 0),
        }
    };
    let mut sum = Requests::default();
    for c in &spec.containers {
        let r = of(c);
        sum.milli_cpu += r.milli_cpu;
        sum.memory += r.memory;
    }
    for c in spec.init_containers.iter().flatten() {
        let r = of(c);
        sum.milli_cpu = sum.milli_cpu.max(r.milli_cpu);
        sum.memory = sum.memory.max(r.memory);
    }
    if let Some(o) = &spec.overhead {
        if let Some(q) = o.get("cpu").and_then(|q| parse_quantity_milli(&q.0)) {
            sum.milli_cpu += q;
        }
        if let Some(q) = o.get("memory").and_then(|q| parse_quantity_milli(&q.0)) {
            sum.memory += q / 1000;
        }
    }
    sum
}

/// FNV-1a, 32 bits (what upstream hashes pod templates with).
pub fn fnv32a(data: &[u8]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in data {
        h ^= u32::from(*b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

/// Upstream's `rand.SafeEncodeString`: maps each character to an alphabet
/// without vowels (so hashes never spell words).
pub fn safe_encode(s: &str) -> String {
    const ALPHANUMS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    s.bytes()
        .map(|b| ALPHANUMS[usize::from(b) % ALPHANUMS.len()] as char)
        .collect()
}

/// A stable hash of a pod template (its canonical JSON) and a collision
/// count, encoded as upstream encodes `pod-template-hash`. The value
/// differs from upstream's (which hashes Go's object dump) but is stable.
pub fn template_hash(template: &serde_json::Value, collision_count: Option<i32>) -> String {
    let mut data = serde_json::to_vec(template).unwrap_or_default();
    if let Some(c) = collision_count {
        data.extend_from_slice(c.to_string().as_bytes());
    }
    safe_encode(&fnv32a(&data).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scaled_values_as_upstream() {
        // k8s.io/apimachinery intstr TestGetScaledValueFromIntOrPercent
        let cases: &[(IntOrString, i32, bool, Result<i32, ()>)] = &[
            (IntOrString::Int(123), 0, false, Ok(123)),
            (IntOrString::String("90%".into()), 100, true, Ok(90)),
            (IntOrString::String("90%".into()), 95, true, Ok(86)),
            (IntOrString::String("90%".into()), 95, false, Ok(85)),
            (IntOrString::String("%".into()), 0, false, Err(())),
            (IntOrString::String("#%".into()), 0, false, Err(())),
            (IntOrString::String("90".into()), 100, false, Err(())),
            (IntOrString::String("25%".into()), 3, true, Ok(1)),
            (IntOrString::String("25%".into()), 3, false, Ok(0)),
            (IntOrString::String("30%".into()), 1, true, Ok(1)),
            (IntOrString::String("30%".into()), 1, false, Ok(0)),
        ];
        for (v, total, up, want) in cases {
            let got = scaled_value(v, *total, *up).map_err(|_| ());
            assert_eq!(got, *want, "{v:?} of {total} round_up={up}");
        }
    }

    #[test]
    fn quantities() {
        let cases = [
            ("100m", Some(100)),
            ("1", Some(1000)),
            ("0.5", Some(500)),
            ("64Mi", Some(64 * 1024 * 1024 * 1000)),
            ("1Ki", Some(1024 * 1000)),
            ("1k", Some(1_000_000)),
            ("2e3", Some(2_000_000)),
            ("1n", Some(1)), // rounded up to a milli
            ("180224Ki", Some(180224 * 1024 * 1000)),
            ("1.5Gi", Some(1610612736 * 1000)),
            ("x", None),
            ("1Qi", None),
        ];
        for (q, want) in cases {
            assert_eq!(parse_quantity_milli(q), want, "{q}");
        }
    }

    #[test]
    fn safe_encode_alphabet() {
        // rand.SafeEncodeString maps each byte modulo 27 into the alphabet.
        assert_eq!(safe_encode("0123456789"), "456789bcdf");
        let h = template_hash(&serde_json::json!({"a": 1}), None);
        assert_eq!(h, template_hash(&serde_json::json!({"a": 1}), None));
        assert_ne!(h, template_hash(&serde_json::json!({"a": 1}), Some(1)));
    }

    #[test]
    fn availability() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "status": {"conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": "2025-01-01T00:00:00Z"}]}
        }))
        .unwrap();
        let t0 = 1735689600000;
        assert!(is_pod_ready(&pod));
        assert!(is_pod_available(&pod, 0, t0));
        assert!(!is_pod_available(&pod, 5, t0 + 5000), "not strictly after");
        assert!(is_pod_available(&pod, 5, t0 + 5001));
        assert_eq!(
            until_available(&pod, 5, t0 + 1000),
            Some(std::time::Duration::from_millis(4001))
        );
    }
}
