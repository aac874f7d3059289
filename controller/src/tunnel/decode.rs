//! Wire messages → controller facts. Pure: the MQTT driver and the HTTP tunnel call these and
//! only move bytes themselves (spec protocol §5.6, §6.2; spec controller §3.3–§3.4).

use koupleless_protocol::biz::StateRecord;
use koupleless_protocol::mqtt::{BatchInstallBizResponseMsg, BizOperationResponse, ReplyKind};
use koupleless_protocol::{
    BaseIdentity, BaseMetadata, BaseStatus, BizInfo, BizState, ClientResponse, Env, Envelope,
    Health, HealthData, Output, Response, ResponseCode, SimpleBizInfo, Topic,
};
use serde::de::DeserializeOwned;

use super::BizRecord;

/// A decoded base → controller MQTT message.
#[derive(Clone, Debug, PartialEq)]
pub enum Inbound {
    /// `base/heart`.
    Heartbeat(BaseStatus),
    /// `base/queryBaseline`.
    QueryBaseline(BaseMetadata),
    /// `base/health` with code SUCCESS.
    Health(Box<HealthData>),
    /// `base/simpleBiz`, `base/biz` (complete lists), `base/bizOperation`,
    /// `base/batchInstallBizResponse` (outcomes of operations).
    Bizs {
        /// Records.
        records: Vec<BizRecord>,
        /// Complete list of the base's modules.
        complete: bool,
    },
}

/// Why a message was not turned into an event. None of these is fatal: the message is
/// counted and dropped (upstream crashes on some, spec protocol T15).
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum Dropped {
    /// Not one of our topics.
    #[error("{0}")]
    Topic(#[from] koupleless_protocol::mqtt::TopicError),
    /// Another env's topic.
    #[error("topic {topic} is not for env {env}")]
    OtherEnv {
        /// The topic.
        topic: String,
        /// Our env.
        env: String,
    },
    /// Published more than the maximum age ago (trap T17).
    #[error("stale message on {0}")]
    Stale(String),
    /// The payload does not decode.
    #[error("{topic}: undecodable payload: {error}")]
    Payload {
        /// The topic.
        topic: String,
        /// The decoder's message.
        error: String,
    },
    /// Decodes, but carries nothing for us (failed health, our own commands, ...).
    #[error("{topic}: ignored: {why}")]
    Ignored {
        /// The topic.
        topic: String,
        /// Why.
        why: &'static str,
    },
}

impl Dropped {
    /// Label for the dropped-message metric.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Dropped::Topic(_) => "bad_topic",
            Dropped::OtherEnv { .. } => "other_env",
            Dropped::Stale(_) => "stale",
            Dropped::Payload { .. } => "bad_payload",
            Dropped::Ignored { .. } => "ignored",
        }
    }
}

fn parse<T: DeserializeOwned>(topic: &str, payload: &[u8]) -> Result<Envelope<T>, Dropped> {
    serde_json::from_slice(payload).map_err(|e| Dropped::Payload {
        topic: topic.into(),
        error: e.to_string(),
    })
}

/// Decodes one MQTT message published by a base. `now_ms` is the controller's wall clock;
/// heart, queryBaseline, health, biz and simpleBiz older than `max_age_ms` are dropped,
/// operation outcomes are not (as upstream, spec protocol §5.4).
pub fn decode_mqtt(
    topic: &str,
    payload: &[u8],
    env: &Env,
    now_ms: i64,
    max_age_ms: i64,
) -> Result<(BaseIdentity, Inbound), Dropped> {
    let parsed: Topic = topic.parse()?;
    if parsed.env() != env {
        return Err(Dropped::OtherEnv {
            topic: topic.into(),
            env: env.to_string(),
        });
    }
    let base = parsed.base().clone();
    let ignored = |why| Dropped::Ignored {
        topic: topic.into(),
        why,
    };
    let fresh = |ts: i64| {
        if Envelope::new((), ts).is_stale(now_ms, max_age_ms) {
            Err(Dropped::Stale(topic.into()))
        } else {
            Ok(())
        }
    };
    let inbound = match parsed {
        Topic::Heartbeat { .. } => {
            let e: Envelope<BaseStatus> = parse(topic, payload)?;
            fresh(e.publish_timestamp)?;
            Inbound::Heartbeat(e.data)
        }
        Topic::QueryBaseline { .. } => {
            let e: Envelope<BaseMetadata> = parse(topic, payload)?;
            fresh(e.publish_timestamp)?;
            Inbound::QueryBaseline(e.data)
        }
        Topic::Reply { kind, .. } => match kind {
            ReplyKind::Health => {
                let e: Envelope<Output<Health>> = parse(topic, payload)?;
                fresh(e.publish_timestamp)?;
                match (e.data.code, e.data.data) {
                    (ResponseCode::Success, Some(h)) => Inbound::Health(Box::new(h.health_data)),
                    _ => return Err(ignored("health reply is not SUCCESS")),
                }
            }
            ReplyKind::SimpleBiz => {
                let e: Envelope<Vec<SimpleBizInfo>> = parse(topic, payload)?;
                fresh(e.publish_timestamp)?;
                Inbound::Bizs {
                    records: records_from_simple(&e.data, e.publish_timestamp),
                    complete: true,
                }
            }
            ReplyKind::Biz => {
                let e: Envelope<Output<Vec<BizInfo>>> = parse(topic, payload)?;
                fresh(e.publish_timestamp)?;
                let Some(list) = e.data.data else {
                    return Err(ignored("biz reply without data"));
                };
                Inbound::Bizs {
                    records: records_from_biz_infos(&list, e.publish_timestamp),
                    complete: true,
                }
            }
            ReplyKind::BizOperation => {
                let e: Envelope<BizOperationResponse> = parse(topic, payload)?;
                let record =
                    record_from_operation(&e.data, e.publish_timestamp).ok_or_else(|| {
                        ignored("not an install/uninstall outcome with a module name")
                    })?;
                Inbound::Bizs {
                    records: vec![record],
                    complete: false,
                }
            }
            ReplyKind::BatchInstallBizResponse => {
                let e: Envelope<BatchInstallBizResponseMsg> = parse(topic, payload)?;
                if e.data.command != "batchInstallBiz" {
                    return Err(ignored("not a batchInstallBiz response"));
                }
                Inbound::Bizs {
                    records: records_from_batch(&e.data, e.publish_timestamp),
                    complete: false,
                }
            }
            ReplyKind::CommandReply => return Err(ignored("command replies are not used")),
        },
        Topic::Baseline { .. } | Topic::Command { .. } => {
            return Err(ignored("controller → base topic"));
        }
    };
    Ok((base, inbound))
}

/// The record with the latest non-zero change time.
fn latest(records: &[StateRecord]) -> Option<&StateRecord> {
    records
        .iter()
        .filter(|r| r.change_time != 0)
        .max_by_key(|r| r.change_time)
}

/// `simpleBiz` list → records: state as given, change time from the latest state record when
/// non-zero, else the message time.
pub fn records_from_simple(list: &[SimpleBizInfo], publish_ms: i64) -> Vec<BizRecord> {
    list.iter()
        .filter_map(|b| {
            let rec = b
                .latest_state_record
                .as_ref()
                .filter(|r| r.change_time != 0);
            Some(BizRecord {
                name: b.name.clone()?,
                version: b.version.clone().unwrap_or_default(),
                state: b.state,
                change_time_ms: rec.map_or(publish_ms, |r| r.change_time),
                reason: rec.map(|r| r.reason.to_string()).unwrap_or_default(),
                message: rec.map(|r| r.message.clone()).unwrap_or_default(),
            })
        })
        .collect()
}

/// queryAllBiz `BizInfo` list → records, the latest state record giving time and reason.
pub fn records_from_biz_infos(list: &[BizInfo], fallback_ms: i64) -> Vec<BizRecord> {
    list.iter()
        .map(|b| {
            let rec = latest(&b.biz_state_records);
            BizRecord {
                name: b.biz_name.clone(),
                version: b.biz_version.clone(),
                state: b.biz_state,
                change_time_ms: rec.map_or(fallback_ms, |r| r.change_time),
                reason: rec.map(|r| r.reason.to_string()).unwrap_or_default(),
                message: rec.map(|r| r.message.clone()).unwrap_or_default(),
            }
        })
        .collect()
}

/// `bizOperation` → one record (upstream table, spec protocol §5.6 (12)).
pub fn record_from_operation(op: &BizOperationResponse, publish_ms: i64) -> Option<BizRecord> {
    let install = match op.command.as_str() {
        "installBiz" => true,
        "uninstallBiz" => false,
        _ => return None,
    };
    let first = op
        .response
        .data
        .as_ref()
        .and_then(|d| d.biz_infos.as_ref())
        .and_then(|b| b.first());
    let name = op
        .biz_name
        .clone()
        .or_else(|| first.map(|b| b.biz_name.clone()))?;
    let version = op
        .biz_version
        .clone()
        .or_else(|| first.map(|b| b.biz_version.clone()))
        .unwrap_or_default();
    let ok = op.response.code == ResponseCode::Success;
    let state = match (install, ok) {
        (true, true) => BizState::Activated,
        (false, true) => BizState::Stopped,
        (_, false) => BizState::Broken,
    };
    let message = op
        .response
        .data
        .as_ref()
        .map(|d| d.message.clone())
        .or_else(|| op.response.message.clone())
        .unwrap_or_default();
    Some(BizRecord {
        reason: format!(
            "{name}:{version} {} {}",
            op.command,
            if ok { "succeed" } else { "failed" }
        ),
        name,
        version,
        state,
        change_time_ms: publish_ms,
        message,
    })
}

/// `batchInstallBizResponse` → one record per item that names its module. Items without
/// `bizInfos` (every failed item from Java) are skipped; upstream panics on them (T15).
pub fn records_from_batch(msg: &BatchInstallBizResponseMsg, publish_ms: i64) -> Vec<BizRecord> {
    let Some(items) = msg
        .response
        .data
        .as_ref()
        .and_then(|d| d.biz_url_to_response.as_ref())
    else {
        return Vec::new();
    };
    items
        .values()
        .filter_map(|item| {
            let info = item.biz_infos.as_ref()?.first()?;
            let state = info.biz_state.unwrap_or(BizState::Unknown);
            let ok = item.code == koupleless_protocol::ArkResultCode::Success;
            Some(BizRecord {
                name: info.biz_name.clone(),
                version: info.biz_version.clone(),
                state,
                change_time_ms: publish_ms,
                reason: format!(
                    "{}:{} {} {}",
                    info.biz_name,
                    info.biz_version,
                    state.as_upper(),
                    if ok { "succeed" } else { "failed" }
                ),
                message: item.message.clone(),
            })
        })
        .collect()
}

/// HTTP `/health` response → health data, when SUCCESS.
pub fn health_from_http(resp: Response<Health>) -> Option<HealthData> {
    match (resp.code, resp.data) {
        (ResponseCode::Success, Some(h)) => Some(h.health_data),
        _ => None,
    }
}

/// HTTP `/queryAllBiz` response → complete records, when SUCCESS.
pub fn bizs_from_http(resp: Response<Vec<BizInfo>>, now_ms: i64) -> Option<Vec<BizRecord>> {
    match (resp.code, resp.data) {
        (ResponseCode::Success, Some(list)) => Some(records_from_biz_infos(&list, now_ms)),
        _ => None,
    }
}

/// HTTP install/uninstall outcome → record. Install SUCCESS → ACTIVATED, uninstall SUCCESS →
/// STOPPED (upstream reports nothing for a successful uninstall, spec controller §3.4);
/// failures, including transport errors (`Err(text)`), → BROKEN with the envelope code as
/// reason.
pub fn record_from_http_operation(
    install: bool,
    spec: &koupleless_protocol::BizSpec,
    resp: Result<Response<ClientResponse>, String>,
    now_ms: i64,
) -> BizRecord {
    let command = if install {
        "installBiz"
    } else {
        "uninstallBiz"
    };
    let (state, reason, message) = match resp {
        Ok(r) if r.code == ResponseCode::Success => (
            if install {
                BizState::Activated
            } else {
                BizState::Stopped
            },
            format!("{}:{} {command} succeed", spec.biz_name, spec.biz_version),
            r.data.map(|d| d.message).unwrap_or_default(),
        ),
        Ok(r) => (
            BizState::Broken,
            r.code.to_string(),
            r.message.unwrap_or_default(),
        ),
        Err(e) => (BizState::Broken, "CALL_FAILED".to_owned(), e),
    };
    BizRecord {
        name: spec.biz_name.clone(),
        version: spec.biz_version.clone(),
        state,
        change_time_ms: now_ms,
        reason,
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_731_900_005_000;
    const TS: i64 = 1_731_900_000_000;

    fn env() -> Env {
        "dev".parse().unwrap()
    }

    fn dec(topic: &str, payload: &str) -> Result<(BaseIdentity, Inbound), Dropped> {
        decode_mqtt(topic, payload.as_bytes(), &env(), NOW, 10_000)
    }

    // The exact Java Arklet payloads of spec protocol §5.6.
    const HEART: &str = r#"{"data":{"baseMetadata":{"clusterName":"default","identity":"10.0.0.5","name":"TO_BE_IMPLEMENTED","version":"1.0.0"},"localHostName":"base-pod-1","localIP":"10.0.0.5","port":0,"state":"activated"},"publishTimestamp":1731900000000}"#;
    const QUERY_BASELINE: &str = r#"{"data":{"clusterName":"default","identity":"10.0.0.5","name":"TO_BE_IMPLEMENTED","version":"1.0.0"},"publishTimestamp":1731900000000}"#;
    const SIMPLE_BIZ: &str = r#"{"data":[{"latestStateRecord":{"changeTime":1731900001215,"message":"","reason":"STARTED","state":"ACTIVATED"},"name":"biz1","state":"activated","version":"0.0.1"},{"latestStateRecord":{"changeTime":1731900002000,"message":"","reason":"CREATED","state":"RESOLVED"},"name":"biz2","state":"resolved","version":"0.0.2"}],"publishTimestamp":1731900003000}"#;
    const BIZ_OP: &str = r#"{"data":{"bizName":"biz1","bizVersion":"0.0.1","command":"installBiz","response":{"code":"SUCCESS","data":{"bizInfos":[{"bizName":"biz1","bizVersion":"0.0.1","bizState":"ACTIVATED"}],"code":"SUCCESS","elapsedSpace":10485760,"message":"Install Biz: biz1:0.0.1 success, cost: 1092 ms, started at: 16:07:47,769"}}},"publishTimestamp":1731900001300}"#;
    const BIZ_OP_FAILED: &str = r#"{"data":{"bizName":"biz1","bizVersion":"0.0.1","command":"uninstallBiz","response":{"code":"FAILED","data":{"code":"NOT_FOUND_BIZ","message":"biz not found"},"message":"uninstall biz not success!"}},"publishTimestamp":1}"#;
    const BATCH: &str = r#"{"data":{"command":"batchInstallBiz","response":{"code":"SUCCESS","data":{"bizUrlToResponse":{"https://repo/biz1.jar":{"bizInfos":[{"bizName":"biz1","bizState":"ACTIVATED","bizVersion":"0.0.1","identity":"biz1:0.0.1","mainClass":"com.example.Biz1Application","priority":100,"webContextPath":"biz1"}],"code":"SUCCESS","message":"Install Biz: biz1:0.0.1 success"},"https://repo/biz2.jar":{"code":"FAILED","message":"boom"}},"code":"FAILED","elapsedSpace":52428800,"message":"batch install failed"}}},"publishTimestamp":1731900003000}"#;
    const HEALTH: &str = r#"{"data":{"code":"SUCCESS","data":{"healthData":{"jvm":{"java max metaspace":-1,"java committed metaspace":53477376,"java used metaspace":51380224},"cpu":{"count":4},"masterBizInfo":{"bizName":"base","bizState":"ACTIVATED","bizVersion":"1.0.0","webContextPath":"/"}}}},"publishTimestamp":1731900000000}"#;

    #[test]
    fn heartbeat_and_baseline_query() {
        let (base, m) = dec("koupleless_dev/10.0.0.5/base/heart", HEART).unwrap();
        assert_eq!(base.as_str(), "10.0.0.5");
        let Inbound::Heartbeat(s) = m else {
            panic!("{m:?}")
        };
        assert_eq!(s.state, BizState::Activated);
        assert_eq!(s.local_host_name, "base-pod-1");
        assert_eq!(s.base_metadata.name, "TO_BE_IMPLEMENTED");

        let (_, m) = dec("koupleless_dev/10.0.0.5/base/queryBaseline", QUERY_BASELINE).unwrap();
        assert_eq!(
            m,
            Inbound::QueryBaseline(BaseMetadata {
                cluster_name: "default".into(),
                identity: "10.0.0.5".into(),
                name: "TO_BE_IMPLEMENTED".into(),
                version: "1.0.0".into(),
            })
        );
    }

    #[test]
    fn staleness_applies_to_polled_topics_only() {
        let stale_at = TS + 10_000;
        let d = |t: &str, p: &str| decode_mqtt(t, p.as_bytes(), &env(), stale_at, 10_000);
        assert_eq!(
            d("koupleless_dev/a/base/heart", HEART)
                .unwrap_err()
                .metric_label(),
            "stale"
        );
        assert_eq!(
            d("koupleless_dev/a/base/health", HEALTH)
                .unwrap_err()
                .metric_label(),
            "stale"
        );
        // Operation outcomes are never stale (publishTimestamp 1 still counts).
        assert!(d("koupleless_dev/a/base/bizOperation", BIZ_OP_FAILED).is_ok());
        assert!(d("koupleless_dev/a/base/batchInstallBizResponse", BATCH).is_ok());
        // One millisecond before the bound it is fresh.
        let fresh = decode_mqtt(
            "koupleless_dev/a/base/heart",
            HEART.as_bytes(),
            &env(),
            stale_at - 1,
            10_000,
        );
        assert!(fresh.is_ok());
    }

    #[test]
    fn health_reply() {
        let (_, m) = dec("koupleless_dev/a/base/health", HEALTH).unwrap();
        let Inbound::Health(h) = m else { panic!() };
        let jvm = h.jvm.unwrap();
        assert_eq!(jvm.max_metaspace, Some(-1));
        assert_eq!(jvm.committed_metaspace, Some(53477376));
        assert_eq!(h.master_biz_info.unwrap().biz_state, BizState::Activated);
        let failed = r#"{"data":{"code":"FAILED","message":"x"},"publishTimestamp":1731900000000}"#;
        assert_eq!(
            dec("koupleless_dev/a/base/health", failed)
                .unwrap_err()
                .metric_label(),
            "ignored"
        );
    }

    #[test]
    fn biz_lists_and_outcomes() {
        let (_, m) = dec("koupleless_dev/a/base/simpleBiz", SIMPLE_BIZ).unwrap();
        let Inbound::Bizs { records, complete } = m else {
            panic!()
        };
        assert!(complete);
        assert_eq!(records.len(), 2);
        assert_eq!(records[0].key(), "biz1:0.0.1");
        assert_eq!(records[0].state, BizState::Activated);
        assert_eq!(records[0].change_time_ms, 1731900001215);
        assert_eq!(records[1].state, BizState::Resolved);

        let (_, m) = dec("koupleless_dev/a/base/bizOperation", BIZ_OP).unwrap();
        let Inbound::Bizs { records, complete } = m else {
            panic!()
        };
        assert!(!complete);
        assert_eq!(records[0].state, BizState::Activated);
        assert_eq!(records[0].reason, "biz1:0.0.1 installBiz succeed");
        assert_eq!(records[0].change_time_ms, 1731900001300);
        assert!(records[0].message.starts_with("Install Biz"));

        let (_, m) = dec("koupleless_dev/a/base/bizOperation", BIZ_OP_FAILED).unwrap();
        let Inbound::Bizs { records, .. } = m else {
            panic!()
        };
        assert_eq!(records[0].state, BizState::Broken);
        assert_eq!(records[0].reason, "biz1:0.0.1 uninstallBiz failed");

        // The failed batch item without bizInfos is skipped instead of crashing.
        let (_, m) = dec("koupleless_dev/a/base/batchInstallBizResponse", BATCH).unwrap();
        let Inbound::Bizs { records, complete } = m else {
            panic!()
        };
        assert!(!complete);
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].reason, "biz1:0.0.1 ACTIVATED succeed");
    }

    #[test]
    fn upstream_suite_garbage_is_dropped() {
        // MC suite step 6: empty bodies, failed responses (code ""), expired messages.
        let cases = [
            ("koupleless_dev/a/base/heart", "", "bad_payload"),
            ("koupleless_dev/a/base/health", "{}", "bad_payload"),
            (
                "koupleless_dev/a/base/health",
                r#"{"data":{"code":""},"publishTimestamp":1731900000000}"#,
                "bad_payload",
            ),
            (
                "koupleless_dev/a/base/heart",
                r#"{"data":{"baseMetadata":{},"state":"activated"},"publishTimestamp":0}"#,
                "stale",
            ),
            (
                "koupleless_dev/a/base/queryBaseline",
                r#"{"data":{},"publishTimestamp":0}"#,
                "stale",
            ),
            (
                "koupleless_dev/a/base/biz",
                r#"{"data":{"code":"FAILED"},"publishTimestamp":1731900000000}"#,
                "ignored",
            ),
            ("koupleless_dev/a/health", "{}", "ignored"),
            ("koupleless_prod/a/base/heart", HEART, "other_env"),
            ("nonsense", "{}", "bad_topic"),
        ];
        for (topic, payload, label) in cases {
            assert_eq!(
                dec(topic, payload).unwrap_err().metric_label(),
                label,
                "{topic} {payload}"
            );
        }
    }

    #[test]
    fn latest_state_record_wins_and_zero_times_fall_back() {
        let infos: Vec<BizInfo> = serde_json::from_str(
            r#"[{"bizName":"a","bizState":"activated","bizVersion":"1","bizStateRecords":[
                {"changeTime":5,"reason":"Created","state":"resolved"},
                {"changeTime":9,"reason":"Started","state":"activated","message":"up"}]},
               {"bizName":"b","bizState":"resolved","bizVersion":"1","bizStateRecords":[
                {"changeTime":0,"reason":"Created","state":"resolved"}]}]"#,
        )
        .unwrap();
        let r = records_from_biz_infos(&infos, 100);
        assert_eq!((r[0].change_time_ms, r[0].message.as_str()), (9, "up"));
        assert_eq!(r[1].change_time_ms, 100);
    }

    #[test]
    fn http_operation_outcomes() {
        let spec = koupleless_protocol::BizSpec {
            biz_name: "biz1".into(),
            biz_version: "0.0.1".into(),
            biz_url: "file:///b.jar".into(),
        };
        let ok: Response<ClientResponse> = serde_json::from_str(
            r#"{"code":"SUCCESS","data":{"code":"SUCCESS","message":"done"}}"#,
        )
        .unwrap();
        let r = record_from_http_operation(false, &spec, Ok(ok.clone()), 7);
        assert_eq!(
            (r.state, r.reason.as_str()),
            (BizState::Stopped, "biz1:0.0.1 uninstallBiz succeed")
        );
        let r = record_from_http_operation(true, &spec, Ok(ok), 7);
        assert_eq!(r.state, BizState::Activated);
        let failed: Response<ClientResponse> =
            serde_json::from_str(r#"{"code":"FAILED","message":"nope"}"#).unwrap();
        let r = record_from_http_operation(true, &spec, Ok(failed), 7);
        assert_eq!(
            (r.state, r.reason.as_str(), r.message.as_str()),
            (BizState::Broken, "FAILED", "nope")
        );
        let r = record_from_http_operation(true, &spec, Err("timeout".into()), 7);
        assert_eq!((r.state, r.message.as_str()), (BizState::Broken, "timeout"));
    }
}
