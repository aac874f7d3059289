//! The MQTT tunnel's decisions, as pure functions: which inbound topic is which command,
//! which retained replays to skip, and the bytes of every message the base publishes. The
//! driver ([`super::mqtt`]) only moves bytes.
//!
//! # Replays (trap T16)
//!
//! The upstream controller publishes every command and baseline *retained*, so on every
//! (re)subscription the broker hands the base the last `installBiz`, `uninstallBiz`, `health`,
//! `queryAllBiz` and baseline again, with the MQTT retain flag set (MQTT 3.1.1 §3.3.1.3: the
//! flag is 1 only on messages sent because of a new subscription). The rule, per topic:
//!
//! - A **live** message (retain flag 0) always runs, as on the Java base: a controller that
//!   sends the same install twice gets `REPEAT_BIZ`, as it would from Java.
//! - A **replay** (retain flag 1) of a module-changing command (`installBiz`, `uninstallBiz`,
//!   `switchBiz`, `batchInstallBiz`, the baseline) is skipped when its payload hash equals the
//!   last message this process handled on that topic: the broker keeps exactly one retained
//!   message per topic, so such a replay can only be a command already acted upon. This is
//!   what keeps an old `installBiz` from reinstalling a module that a later `uninstallBiz`
//!   removed, and an old `uninstallBiz` from answering `NOT_FOUND_BIZ` (which the controller
//!   turns into a `BROKEN` module) after every reconnect.
//! - Other replays run: they are new to this process (first connection after start-up, or
//!   published while the connection was down). If such a replayed install answers
//!   `REPEAT_BIZ`, or a replayed uninstall `NOT_FOUND_BIZ`, the module already is where the
//!   command wanted it, and no reply is published, because the controller would mark a running
//!   module `BROKEN` on a failed install reply.
//! - Queries (`health`, `queryAllBiz`, `queryBizOps`, `help`) always run: answering a replay
//!   only refreshes the controller's view.
//! - An empty payload is how a publisher deletes a retained message: it is not a command, and
//!   it makes the process forget that topic's last hash.
//!
//! Limits of the rule: memory is per process (after a restart the first replays run, as on
//! Java; an agent that restored its modules then answers `REPEAT_BIZ` silently); a byte-identical
//! command republished while the base was disconnected is indistinguishable from a replay; a
//! broker that sets the retain flag on live messages (non-conforming) makes identical live
//! repeats look like replays.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};

use koupleless_protocol::lenient::canonicalize_keys;
use koupleless_protocol::mqtt::{CommandReply, MAX_MESSAGE_AGE_MS, ReplyKind};
use koupleless_protocol::transport::{Transport, encode, to_value};
use koupleless_protocol::{
    ArkResultCode, BaseIdentity, BizState, CommandId, Env, Envelope, ErrorCode, Output,
    SimpleBizInfo, Topic,
};
use serde::Serialize;
use serde_json::Value;

use super::BaseInfo;
use crate::service::{Data, Outcome};

/// A message the base acts on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Inbound {
    /// `koupleless_<env>/<id>/<command>`.
    Command(CommandId),
    /// `koupleless_<env>/<id>/base/baseline`: the modules this base should run.
    Baseline,
}

impl Inbound {
    /// Where the answer goes. The commands the Java base ignores over MQTT (T24) are answered
    /// on our own `base/commandReply`.
    pub fn reply_kind(self) -> ReplyKind {
        match self {
            Inbound::Command(CommandId::InstallBiz | CommandId::UninstallBiz) => {
                ReplyKind::BizOperation
            }
            Inbound::Command(CommandId::Health) => ReplyKind::Health,
            Inbound::Command(CommandId::QueryAllBiz) => ReplyKind::SimpleBiz,
            Inbound::Baseline => ReplyKind::BatchInstallBizResponse,
            Inbound::Command(
                CommandId::SwitchBiz
                | CommandId::BatchInstallBiz
                | CommandId::QueryBizOps
                | CommandId::Help,
            ) => ReplyKind::CommandReply,
        }
    }

    /// Whether it changes modules, so that replays are deduplicated.
    pub fn changes_modules(self) -> bool {
        match self {
            Inbound::Command(c) => c.is_biz_ops(),
            Inbound::Baseline => true,
        }
    }

    /// Whether the command reads its payload. `queryAllBiz` and `help` take no input (Java
    /// ignores it), so they are answered whatever the payload is.
    pub fn takes_input(self) -> bool {
        !matches!(
            self,
            Inbound::Command(CommandId::QueryAllBiz | CommandId::Help)
        )
    }

    /// Name for logs.
    pub fn name(self) -> &'static str {
        match self {
            Inbound::Command(c) => c.as_str(),
            Inbound::Baseline => "baseline",
        }
    }
}

/// Why an inbound message is not acted upon.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ignored {
    /// A topic of another base (or another env).
    OtherBase,
    /// A base → controller topic (heart, replies, queryBaseline).
    Outbound,
    /// A command id the Arklet does not know (Java rejects it without a reply).
    Unknown(String),
}

/// What to do with a topic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    /// Run it.
    Handle(Inbound),
    /// Leave it.
    Ignore(Ignored),
}

/// Routes an inbound topic for the base `me` in `env`.
pub fn route(topic: &str, env: &Env, me: &BaseIdentity) -> Route {
    let parsed: Topic = match topic.parse() {
        Ok(t) => t,
        Err(_) => {
            let mine = format!("koupleless_{env}/{me}/");
            return match topic.strip_prefix(&mine) {
                Some(rest) if !rest.contains('/') => {
                    Route::Ignore(Ignored::Unknown(rest.to_owned()))
                }
                Some(_) => Route::Ignore(Ignored::Outbound),
                None => Route::Ignore(Ignored::OtherBase),
            };
        }
    };
    if parsed.env() != env || parsed.base() != me {
        return Route::Ignore(Ignored::OtherBase);
    }
    match parsed {
        Topic::Command { command, .. } => Route::Handle(Inbound::Command(command)),
        Topic::Baseline { .. } => Route::Handle(Inbound::Baseline),
        Topic::Heartbeat { .. } | Topic::QueryBaseline { .. } | Topic::Reply { .. } => {
            Route::Ignore(Ignored::Outbound)
        }
    }
}

/// What the payload allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PayloadCheck {
    /// Usable.
    Ok,
    /// Zero bytes: a retained message being deleted, not a command.
    Empty,
    /// Larger than the tunnel accepts.
    TooLarge {
        /// Its size.
        len: usize,
        /// The limit.
        max: usize,
    },
}

/// Checks a payload's size. Commands that take no input ignore `TooLarge`.
pub fn check_payload(payload: &[u8], max: usize) -> PayloadCheck {
    match payload.len() {
        0 => PayloadCheck::Empty,
        len if len > max => PayloadCheck::TooLarge { len, max },
        _ => PayloadCheck::Ok,
    }
}

/// Whether to run a message, see the module docs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// Run it; `replay` is the retain flag.
    Run {
        /// Delivered because of a (re)subscription.
        replay: bool,
    },
    /// A replay of the command last handled on this topic.
    SkipReplay,
}

/// Remembers, per topic, the hash of the last module-changing message handled.
#[derive(Debug, Default)]
pub struct ReplayGuard {
    last: HashMap<String, u64>,
}

fn hash(payload: &[u8]) -> u64 {
    // The default SipHash keys are fixed, and the hashes never leave the process.
    let mut h = DefaultHasher::new();
    payload.hash(&mut h);
    h.finish()
}

impl ReplayGuard {
    /// Decides whether to run a message and records it as handled.
    pub fn admit(
        &mut self,
        inbound: Inbound,
        topic: &str,
        retained: bool,
        payload: &[u8],
    ) -> Admission {
        if !inbound.changes_modules() {
            return Admission::Run { replay: retained };
        }
        let h = hash(payload);
        if retained && self.last.get(topic) == Some(&h) {
            return Admission::SkipReplay;
        }
        self.last.insert(topic.to_owned(), h);
        Admission::Run { replay: retained }
    }

    /// The retained message of `topic` was deleted: nothing can be replayed from it any more.
    pub fn forget(&mut self, topic: &str) {
        self.last.remove(topic);
    }
}

/// The request fields echoed in replies, read as leniently as the service reads them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Echo {
    /// `bizName`.
    pub biz_name: Option<String>,
    /// `bizVersion`.
    pub biz_version: Option<String>,
    /// `requestId`.
    pub request_id: Option<String>,
}

/// Reads the echoed fields; anything unreadable is simply absent.
pub fn echo(payload: &[u8]) -> Echo {
    let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(payload) else {
        return Echo::default();
    };
    let map = canonicalize_keys(map, &["bizName", "bizVersion", "requestId"]);
    // fastjson coerces scalars into String fields (`1.0` -> "1.0").
    let text = |k: &str| match map.get(k) {
        Some(Value::String(s)) => Some(s.clone()),
        Some(v @ (Value::Number(_) | Value::Bool(_))) => Some(v.to_string()),
        _ => None,
    };
    Echo {
        biz_name: text("bizName"),
        biz_version: text("bizVersion"),
        request_id: text("requestId"),
    }
}

/// Commands with the same key run one after the other, in arrival order; others run
/// concurrently. A module's install and uninstall must not race (the second would fail with a
/// lock conflict, and a quickly deleted pod would leave its module installed), and batches share
/// upstream's single `null:null` lock anyway.
pub fn ordering_key(inbound: Inbound, echo: &Echo) -> Option<String> {
    match inbound {
        Inbound::Command(
            CommandId::InstallBiz | CommandId::UninstallBiz | CommandId::SwitchBiz,
        ) => match (&echo.biz_name, &echo.biz_version) {
            (Some(n), Some(v)) if !n.trim().is_empty() && !v.trim().is_empty() => {
                Some(format!("{n}:{v}"))
            }
            _ => None,
        },
        Inbound::Command(CommandId::BatchInstallBiz) | Inbound::Baseline => {
            Some("batch".to_owned())
        }
        Inbound::Command(
            CommandId::Health | CommandId::QueryAllBiz | CommandId::QueryBizOps | CommandId::Help,
        ) => None,
    }
}

/// The `batchInstallBiz` body for a baseline payload: the Java base wraps the array as
/// `{"bizList": <array>}`. A payload that is not JSON gives the error text.
pub fn baseline_request(payload: &[u8]) -> Result<Vec<u8>, String> {
    let list: Value = serde_json::from_slice(payload)
        .map_err(|e| format!("baseline payload is not valid JSON: {e}"))?;
    Ok(serde_json::json!({ "bizList": list })
        .to_string()
        .into_bytes())
}

/// The outcome for a payload refused unread.
pub fn too_large(len: usize, max: usize) -> Outcome {
    Outcome::Internal {
        message: format!("payload of {len} bytes is larger than the limit of {max} bytes"),
        code: ErrorCode::InvalidRequest,
    }
}

fn ark_code(outcome: &Outcome) -> Option<ArkResultCode> {
    match outcome {
        Outcome::Failed {
            data: Some(Data::Client(c)),
            ..
        } => Some(c.code),
        _ => None,
    }
}

/// Whether to publish the answer. Everything is answered, except a replayed install that found
/// the module already registered and a replayed uninstall that found it already gone (see the
/// module docs).
pub fn should_publish(inbound: Inbound, replay: bool, outcome: &Outcome) -> bool {
    if !replay {
        return true;
    }
    !matches!(
        (inbound, ark_code(outcome)),
        (
            Inbound::Command(CommandId::InstallBiz),
            Some(ArkResultCode::RepeatBiz)
        ) | (
            Inbound::Command(CommandId::UninstallBiz),
            Some(ArkResultCode::NotFoundBiz)
        )
    )
}

/// `base/bizOperation` body (spec §5.6 (12)); the response is whatever the command produced
/// (an async install answers its operation record, as on Java).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct BizOperationReply {
    #[serde(skip_serializing_if = "Option::is_none")]
    biz_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    biz_version: Option<String>,
    command: &'static str,
    response: Output<Data>,
}

/// `base/batchInstallBizResponse` body (spec §5.6 (4)).
#[derive(Serialize)]
struct BatchReply {
    command: &'static str,
    response: Output<Data>,
}

fn envelope<T: Serialize>(data: &T, now_ms: i64) -> Vec<u8> {
    encode(&Envelope::new(data, now_ms), Transport::Mqtt)
}

/// The reply payload for a handled message, in the `{data, publishTimestamp}` envelope with
/// enums spelled by name (spec §5.4, T1). `None` only for `queryAllBiz` when the command did
/// not produce a list: `simpleBiz` is a bare list and has no error form.
pub fn reply_payload(
    inbound: Inbound,
    echo: Echo,
    outcome: Outcome,
    now_ms: i64,
) -> Option<Vec<u8>> {
    match inbound {
        Inbound::Command(c @ (CommandId::InstallBiz | CommandId::UninstallBiz)) => Some(envelope(
            &BizOperationReply {
                biz_name: echo.biz_name,
                biz_version: echo.biz_version,
                command: c.as_str(),
                response: outcome.into_output(),
            },
            now_ms,
        )),
        Inbound::Command(CommandId::Health) => Some(envelope(&outcome.into_output(), now_ms)),
        Inbound::Command(CommandId::QueryAllBiz) => match outcome {
            Outcome::Success(Data::Bizs(bizs)) => {
                let simple: Vec<SimpleBizInfo> = bizs.iter().map(SimpleBizInfo::from).collect();
                Some(envelope(&simple, now_ms))
            }
            _ => None,
        },
        Inbound::Baseline => Some(envelope(
            &BatchReply {
                command: CommandId::BatchInstallBiz.as_str(),
                response: outcome.into_output(),
            },
            now_ms,
        )),
        Inbound::Command(
            c @ (CommandId::SwitchBiz
            | CommandId::BatchInstallBiz
            | CommandId::QueryBizOps
            | CommandId::Help),
        ) => {
            let out = outcome.into_output();
            Some(envelope(
                &CommandReply {
                    command: c.as_str().to_owned(),
                    request_id: echo.request_id,
                    response: Output {
                        code: out.code,
                        data: out.data.map(|d| to_value(&d, Transport::Mqtt)),
                        error_code: out.error_code,
                        message: out.message,
                    },
                },
                now_ms,
            ))
        }
    }
}

/// `base/heart` payload (spec §5.6 (1)). Its `port` is `base.http_port`, which the MQTT tunnel
/// sets to 0 as the Java base sends (T21) unless told to report the real one
/// (`--mqtt-report-port`, so a controller can reach the agent's log endpoint).
pub fn heartbeat_payload(base: &BaseInfo, state: BizState, now_ms: i64) -> Vec<u8> {
    envelope(&base.status(base.http_port, state), now_ms)
}

/// `publishTimestamp` of the last will. A will is fixed when the connection is made but fires
/// at an unknown later time, and the controller drops heartbeats whose
/// `publishTimestamp + 10000 <= now` (T17); this is the largest value for which that sum does
/// not overflow a Go `int64`, so the will is never stale.
pub const WILL_TIMESTAMP: i64 = i64::MAX - MAX_MESSAGE_AGE_MS;

/// The last-will payload: a `deactivated` heartbeat that never expires.
pub fn will_payload(base: &BaseInfo) -> Vec<u8> {
    heartbeat_payload(base, BizState::Deactivated, WILL_TIMESTAMP)
}

/// `base/queryBaseline` payload (spec §5.6 (2)).
pub fn query_baseline_payload(base: &BaseInfo, now_ms: i64) -> Vec<u8> {
    envelope(&base.metadata, now_ms)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use koupleless_protocol::mqtt::{BatchInstallBizResponseMsg, BizOperationResponse};
    use koupleless_protocol::{
        BaseMetadata, BatchInstallResponse, BizInfo, BizModel, ClientResponse, Health, HealthData,
        ProcessRecord, ProcessStatus, StateChangeReason, StateRecord,
    };

    use super::*;

    fn env() -> Env {
        "dev".parse().unwrap()
    }
    fn me() -> BaseIdentity {
        "10.0.0.5".parse().unwrap()
    }

    fn golden(name: &str) -> Value {
        let path = format!(
            "{}/../protocol/tests/fixtures/real-mqtt/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        serde_json::from_slice(&std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}")))
            .unwrap()
    }

    fn java_base() -> BaseInfo {
        BaseInfo {
            identity: "192.0.2.2".parse().unwrap(),
            env: "default".parse().unwrap(),
            metadata: BaseMetadata {
                cluster_name: "default".into(),
                identity: "192.0.2.2".into(),
                name: "TO_BE_IMPLEMENTED".into(),
                version: "1.0.0".into(),
            },
            local_ip: "192.0.2.2".into(),
            host_name: "192.0.2.2".into(),
            // As the MQTT tunnel leaves it without --mqtt-report-port.
            http_port: 0,
        }
    }

    fn parse(bytes: &[u8]) -> Value {
        serde_json::from_slice(bytes).unwrap()
    }

    #[test]
    fn topic_routing_table() {
        use Inbound::{Baseline, Command};
        let cases: Vec<(&str, Route)> = vec![
            (
                "koupleless_dev/10.0.0.5/installBiz",
                Route::Handle(Command(CommandId::InstallBiz)),
            ),
            (
                "koupleless_dev/10.0.0.5/uninstallBiz",
                Route::Handle(Command(CommandId::UninstallBiz)),
            ),
            (
                "koupleless_dev/10.0.0.5/health",
                Route::Handle(Command(CommandId::Health)),
            ),
            (
                "koupleless_dev/10.0.0.5/queryAllBiz",
                Route::Handle(Command(CommandId::QueryAllBiz)),
            ),
            (
                "koupleless_dev/10.0.0.5/switchBiz",
                Route::Handle(Command(CommandId::SwitchBiz)),
            ),
            (
                "koupleless_dev/10.0.0.5/batchInstallBiz",
                Route::Handle(Command(CommandId::BatchInstallBiz)),
            ),
            (
                "koupleless_dev/10.0.0.5/queryBizOps",
                Route::Handle(Command(CommandId::QueryBizOps)),
            ),
            (
                "koupleless_dev/10.0.0.5/help",
                Route::Handle(Command(CommandId::Help)),
            ),
            (
                "koupleless_dev/10.0.0.5/base/baseline",
                Route::Handle(Baseline),
            ),
            (
                "koupleless_dev/10.0.0.5/fooBar",
                Route::Ignore(Ignored::Unknown("fooBar".into())),
            ),
            (
                "koupleless_dev/10.0.0.5/installbiz",
                Route::Ignore(Ignored::Unknown("installbiz".into())),
            ),
            (
                "koupleless_dev/10.0.0.5/base",
                Route::Ignore(Ignored::Unknown("base".into())),
            ),
            (
                "koupleless_dev/10.0.0.5/base/heart",
                Route::Ignore(Ignored::Outbound),
            ),
            (
                "koupleless_dev/10.0.0.5/base/health",
                Route::Ignore(Ignored::Outbound),
            ),
            (
                "koupleless_dev/10.0.0.5/base/queryBaseline",
                Route::Ignore(Ignored::Outbound),
            ),
            (
                "koupleless_dev/10.0.0.5/base/nope",
                Route::Ignore(Ignored::Outbound),
            ),
            (
                "koupleless_dev/10.0.0.6/installBiz",
                Route::Ignore(Ignored::OtherBase),
            ),
            (
                "koupleless_dev/10.0.0.6/base/baseline",
                Route::Ignore(Ignored::OtherBase),
            ),
            (
                "koupleless_prod/10.0.0.5/installBiz",
                Route::Ignore(Ignored::OtherBase),
            ),
            (
                "koupleless_DEV/10.0.0.5/installBiz",
                Route::Ignore(Ignored::OtherBase),
            ),
            (
                "other/10.0.0.5/installBiz",
                Route::Ignore(Ignored::OtherBase),
            ),
            ("", Route::Ignore(Ignored::OtherBase)),
        ];
        for (topic, want) in cases {
            assert_eq!(route(topic, &env(), &me()), want, "{topic}");
        }
    }

    #[test]
    fn every_command_has_its_reply_topic() {
        let cases = [
            (
                Inbound::Command(CommandId::InstallBiz),
                ReplyKind::BizOperation,
                true,
                true,
            ),
            (
                Inbound::Command(CommandId::UninstallBiz),
                ReplyKind::BizOperation,
                true,
                true,
            ),
            (
                Inbound::Command(CommandId::Health),
                ReplyKind::Health,
                false,
                true,
            ),
            (
                Inbound::Command(CommandId::QueryAllBiz),
                ReplyKind::SimpleBiz,
                false,
                false,
            ),
            (
                Inbound::Baseline,
                ReplyKind::BatchInstallBizResponse,
                true,
                true,
            ),
            (
                Inbound::Command(CommandId::SwitchBiz),
                ReplyKind::CommandReply,
                true,
                true,
            ),
            (
                Inbound::Command(CommandId::BatchInstallBiz),
                ReplyKind::CommandReply,
                true,
                true,
            ),
            (
                Inbound::Command(CommandId::QueryBizOps),
                ReplyKind::CommandReply,
                false,
                true,
            ),
            (
                Inbound::Command(CommandId::Help),
                ReplyKind::CommandReply,
                false,
                false,
            ),
        ];
        for (inbound, reply, changes, input) in cases {
            assert_eq!(inbound.reply_kind(), reply, "{inbound:?}");
            assert_eq!(inbound.changes_modules(), changes, "{inbound:?}");
            assert_eq!(inbound.takes_input(), input, "{inbound:?}");
        }
    }

    #[test]
    fn payload_checks() {
        assert_eq!(check_payload(b"", 4), PayloadCheck::Empty);
        assert_eq!(check_payload(b"{}", 4), PayloadCheck::Ok);
        assert_eq!(check_payload(b"abcd", 4), PayloadCheck::Ok);
        assert_eq!(
            check_payload(b"abcde", 4),
            PayloadCheck::TooLarge { len: 5, max: 4 }
        );
    }

    #[test]
    fn replay_dedup_table() {
        const INSTALL: &str = "koupleless_dev/10.0.0.5/installBiz";
        const UNINSTALL: &str = "koupleless_dev/10.0.0.5/uninstallBiz";
        const BASELINE: &str = "koupleless_dev/10.0.0.5/base/baseline";
        const HEALTH: &str = "koupleless_dev/10.0.0.5/health";
        let install = Inbound::Command(CommandId::InstallBiz);
        let uninstall = Inbound::Command(CommandId::UninstallBiz);
        let health = Inbound::Command(CommandId::Health);
        let a = br#"{"bizName":"a","bizVersion":"1","bizUrl":"file:///a.jar"}"#.as_slice();
        let b = br#"{"bizName":"b","bizVersion":"1","bizUrl":"file:///b.jar"}"#.as_slice();
        let a_key = br#"{"bizName":"a","bizVersion":"1"}"#.as_slice();
        let run = Admission::Run { replay: false };
        let replay = Admission::Run { replay: true };
        let skip = Admission::SkipReplay;

        // (inbound, topic, retained, payload, expected), applied in order to one guard.
        let steps: Vec<(Inbound, &str, bool, &[u8], Admission)> = vec![
            // First connection after start-up: replays are new to this process and run.
            (install, INSTALL, true, a, replay),
            (uninstall, UNINSTALL, true, a_key, replay),
            // Reconnect: the same retained messages again are skipped, in any order.
            (uninstall, UNINSTALL, true, a_key, skip),
            (install, INSTALL, true, a, skip),
            // A live repeat runs (Java answers REPEAT_BIZ), even though it is identical.
            (install, INSTALL, false, a, run),
            (install, INSTALL, true, a, skip),
            // A new install published while disconnected arrives as a replay and runs once.
            (install, INSTALL, true, b, replay),
            (install, INSTALL, true, b, skip),
            // The old payload is no longer in the retained slot: should it come again, it is
            // a new publish and runs.
            (install, INSTALL, true, a, replay),
            // Baselines follow the same rule.
            (Inbound::Baseline, BASELINE, true, b"[]", replay),
            (Inbound::Baseline, BASELINE, true, b"[]", skip),
            (Inbound::Baseline, BASELINE, false, b"[]", run),
            // Queries always run.
            (health, HEALTH, true, b"{}", replay),
            (health, HEALTH, true, b"{}", replay),
            (health, HEALTH, false, b"{}", run),
        ];
        let mut guard = ReplayGuard::default();
        for (i, (inbound, topic, retained, payload, want)) in steps.into_iter().enumerate() {
            assert_eq!(
                guard.admit(inbound, topic, retained, payload),
                want,
                "step {i}: {topic}"
            );
        }
        // Deleting the retained message forgets the topic: the same payload retained again
        // later (while disconnected) is a new command.
        guard.forget(INSTALL);
        assert_eq!(guard.admit(install, INSTALL, true, a), replay);
        // Topics are independent.
        assert_eq!(guard.admit(uninstall, UNINSTALL, true, a), replay);
    }

    #[test]
    fn echo_is_lenient_and_never_fails() {
        let cases: [(&[u8], Echo); 6] = [
            (
                br#"{"bizName":"a","bizVersion":"1.0.0","bizUrl":"u"}"#,
                Echo {
                    biz_name: Some("a".into()),
                    biz_version: Some("1.0.0".into()),
                    request_id: None,
                },
            ),
            (
                br#"{"biz_name":"a","BIZVERSION":1.5,"request-id":"r"}"#,
                Echo {
                    biz_name: Some("a".into()),
                    biz_version: Some("1.5".into()),
                    request_id: Some("r".into()),
                },
            ),
            (br#"{"bizName":{"x":1}}"#, Echo::default()),
            (br#"{"bizName":"#, Echo::default()),
            (b"[1,2]", Echo::default()),
            (&[0xff, 0xfe], Echo::default()),
        ];
        for (payload, want) in cases {
            assert_eq!(echo(payload), want, "{}", String::from_utf8_lossy(payload));
        }
    }

    #[test]
    fn ordering_keys() {
        let e = |n: Option<&str>, v: Option<&str>| Echo {
            biz_name: n.map(Into::into),
            biz_version: v.map(Into::into),
            request_id: None,
        };
        let cases = [
            (
                Inbound::Command(CommandId::InstallBiz),
                e(Some("a"), Some("1")),
                Some("a:1"),
            ),
            (
                Inbound::Command(CommandId::UninstallBiz),
                e(Some("a"), Some("1")),
                Some("a:1"),
            ),
            (
                Inbound::Command(CommandId::SwitchBiz),
                e(Some("a"), Some("2")),
                Some("a:2"),
            ),
            (Inbound::Command(CommandId::InstallBiz), e(None, None), None),
            (
                Inbound::Command(CommandId::InstallBiz),
                e(Some("a"), Some(" ")),
                None,
            ),
            (
                Inbound::Command(CommandId::BatchInstallBiz),
                e(None, None),
                Some("batch"),
            ),
            (Inbound::Baseline, e(None, None), Some("batch")),
            (
                Inbound::Command(CommandId::Health),
                e(Some("a"), Some("1")),
                None,
            ),
            (
                Inbound::Command(CommandId::QueryAllBiz),
                e(None, None),
                None,
            ),
        ];
        for (inbound, echo, want) in cases {
            assert_eq!(
                ordering_key(inbound, &echo).as_deref(),
                want,
                "{inbound:?} {echo:?}"
            );
        }
    }

    #[test]
    fn baseline_is_wrapped_as_java_does() {
        let body = baseline_request(br#"[{"bizName":"b","bizVersion":"1","bizUrl":"u"}]"#).unwrap();
        assert_eq!(
            parse(&body),
            serde_json::json!({"bizList":[{"bizName":"b","bizVersion":"1","bizUrl":"u"}]})
        );
        // Not an array: the service rejects `bizList` with its own message.
        assert_eq!(
            parse(&baseline_request(b"{}").unwrap()),
            serde_json::json!({"bizList":{}})
        );
        assert!(
            baseline_request(b"[{")
                .unwrap_err()
                .contains("not valid JSON")
        );
    }

    fn client(code: ArkResultCode) -> Outcome {
        Outcome::Failed {
            message: "install biz not success!".into(),
            data: Some(Data::Client(ClientResponse {
                biz_infos: None,
                code,
                elapsed_space: None,
                message: "m".into(),
            })),
            code: ErrorCode::InstallBizFailed,
        }
    }

    #[test]
    fn reply_policy_table() {
        let install = Inbound::Command(CommandId::InstallBiz);
        let uninstall = Inbound::Command(CommandId::UninstallBiz);
        let internal = Outcome::Internal {
            message: "x".into(),
            code: ErrorCode::InvalidParameter,
        };
        let ok = Outcome::Success(Data::Bizs(vec![]));
        let cases = [
            (install, false, client(ArkResultCode::RepeatBiz), true),
            (install, true, client(ArkResultCode::RepeatBiz), false),
            (install, true, client(ArkResultCode::Failed), true),
            (install, true, internal.clone(), true),
            (install, true, ok.clone(), true),
            (uninstall, false, client(ArkResultCode::NotFoundBiz), true),
            (uninstall, true, client(ArkResultCode::NotFoundBiz), false),
            (uninstall, true, client(ArkResultCode::Failed), true),
            (install, true, client(ArkResultCode::NotFoundBiz), true),
            (uninstall, true, client(ArkResultCode::RepeatBiz), true),
            (
                Inbound::Baseline,
                true,
                client(ArkResultCode::RepeatBiz),
                true,
            ),
            (Inbound::Command(CommandId::Health), true, internal, true),
        ];
        for (i, (inbound, replay, outcome, want)) in cases.into_iter().enumerate() {
            assert_eq!(should_publish(inbound, replay, &outcome), want, "case {i}");
        }
    }

    fn record(state: BizState, reason: StateChangeReason, at: i64) -> StateRecord {
        StateRecord {
            change_time: at,
            message: String::new(),
            reason,
            state,
        }
    }

    fn reply(inbound: Inbound, payload: &[u8], outcome: Outcome) -> Value {
        parse(&reply_payload(inbound, echo(payload), outcome, 1_795_306_300_407).expect("a reply"))
    }

    #[test]
    fn uninstall_replies_match_the_java_base() {
        let uninstall = Inbound::Command(CommandId::UninstallBiz);
        let ok = Outcome::Success(Data::Client(ClientResponse {
            biz_infos: None,
            code: ArkResultCode::Success,
            elapsed_space: None,
            message: "Uninstall biz: biz-a:1.0.0 success.".into(),
        }));
        let mut want = golden("mqtt06_uninstallBiz_a_1.0.0.base-bizOperation.json");
        want["publishTimestamp"] = 1_795_306_300_407i64.into();
        assert_eq!(
            reply(
                uninstall,
                br#"{"bizName":"biz-a","bizVersion":"1.0.0"}"#,
                ok
            ),
            want
        );

        let not_found = Outcome::Failed {
            message: "uninstall biz not success!".into(),
            data: Some(Data::Client(ClientResponse {
                biz_infos: None,
                code: ArkResultCode::NotFoundBiz,
                elapsed_space: None,
                message: "Uninstall biz: nope:1.0.0 not found.".into(),
            })),
            code: ErrorCode::NoMatchedBiz,
        };
        let mut got = reply(
            uninstall,
            br#"{"bizName":"nope","bizVersion":"1.0.0"}"#,
            not_found,
        );
        // Our one addition: the two-level error code on failures.
        assert_eq!(
            got["data"]["response"]
                .as_object_mut()
                .unwrap()
                .remove("errorCode"),
            Some("Arklet.NoMatchedBiz".into())
        );
        let mut want = golden("mqtt07_uninstallBiz_not_installed.base-bizOperation.json");
        want["publishTimestamp"] = 1_795_306_300_407i64.into();
        assert_eq!(got, want);
    }

    fn model(name: &str, state: BizState) -> BizModel {
        BizModel {
            attributes: Some(BTreeMap::new()),
            biz_name: name.into(),
            biz_state: Some(state),
            biz_state_records: Some(vec![
                record(BizState::Resolved, StateChangeReason::Created, 1),
                record(state, StateChangeReason::Started, 2),
            ]),
            biz_version: "1.0.0".into(),
            identity: Some(format!("{name}:1.0.0")),
            priority: Some(100),
            ..BizModel::default()
        }
    }

    #[test]
    fn install_reply_spells_enums_by_name_and_decodes_as_the_controller_reads_it() {
        let ok = Outcome::Success(Data::Client(ClientResponse {
            biz_infos: Some(vec![model("biz-a", BizState::Activated)]),
            code: ArkResultCode::Success,
            elapsed_space: Some(432_072),
            message: "Install Biz: biz-a:1.0.0 success, cost: 34 ms, started at: 00:11:33,456"
                .into(),
        }));
        let payload = br#"{"bizName":"biz-a","bizVersion":"1.0.0","bizUrl":"file:///a.jar"}"#;
        let bytes = reply_payload(
            Inbound::Command(CommandId::InstallBiz),
            echo(payload),
            ok,
            5,
        )
        .unwrap();
        let v = parse(&bytes);
        let info = &v["data"]["response"]["data"]["bizInfos"][0];
        assert_eq!(info["bizState"], "ACTIVATED");
        assert_eq!(info["bizStateRecords"][1]["reason"], "STARTED");
        assert_eq!(info["bizStateRecords"][0]["state"], "RESOLVED");
        assert_eq!(v["data"]["command"], "installBiz");
        assert_eq!(v["publishTimestamp"], 5);
        let decoded: Envelope<BizOperationResponse> = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(decoded.data.biz_name.as_deref(), Some("biz-a"));
        assert_eq!(
            decoded.data.response.data.unwrap().biz_infos.unwrap()[0].biz_state,
            Some(BizState::Activated)
        );
        // Compact JSON (T8).
        assert!(
            String::from_utf8(bytes)
                .unwrap()
                .contains(r#""code":"SUCCESS""#)
        );
    }

    #[test]
    fn malformed_install_gets_a_failed_reply_without_echo() {
        let err = Outcome::Internal {
            message: "request body is not valid JSON: EOF".into(),
            code: ErrorCode::InvalidRequest,
        };
        let v = reply(
            Inbound::Command(CommandId::InstallBiz),
            br#"{"bizName":"#,
            err,
        );
        let data = &v["data"];
        assert!(data.get("bizName").is_none() && data.get("bizVersion").is_none());
        assert_eq!(data["command"], "installBiz");
        // The Java tunnel publishes a thrown exception as FAILED with data {code, message}.
        assert_eq!(data["response"]["code"], "FAILED");
        assert_eq!(data["response"]["data"]["code"], "FAILED");
        assert_eq!(
            data["response"]["message"],
            "request body is not valid JSON: EOF"
        );
    }

    #[test]
    fn simple_biz_matches_the_java_base_with_explicit_nulls() {
        let info = BizInfo {
            biz_name: "biz-a".into(),
            biz_state: BizState::Activated,
            biz_state_records: vec![
                record(
                    BizState::Resolved,
                    StateChangeReason::Created,
                    1_795_306_293_460,
                ),
                record(
                    BizState::Activated,
                    StateChangeReason::Started,
                    1_795_306_293_490,
                ),
            ],
            biz_version: "1.0.0".into(),
            main_class: Some("realark.biz.BizMain".into()),
            web_context_path: Some("/biz-a".into()),
        };
        let got = reply_payload(
            Inbound::Command(CommandId::QueryAllBiz),
            Echo::default(),
            Outcome::Success(Data::Bizs(vec![info.clone()])),
            1_795_306_298_062,
        )
        .unwrap();
        assert_eq!(
            parse(&got),
            golden("mqtt05_queryAllBiz_after_install.base-simpleBiz.json")
        );
        let empty = reply(
            Inbound::Command(CommandId::QueryAllBiz),
            b"{}",
            Outcome::Success(Data::Bizs(vec![])),
        );
        assert_eq!(empty["data"], serde_json::json!([]));
        // An entry with no record has an explicit null (WriteMapNullValue).
        let bare = BizInfo {
            biz_state_records: vec![],
            ..info
        };
        let v = reply(
            Inbound::Command(CommandId::QueryAllBiz),
            b"{}",
            Outcome::Success(Data::Bizs(vec![bare])),
        );
        assert_eq!(v["data"][0]["latestStateRecord"], Value::Null);
        assert!(
            v["data"][0]
                .as_object()
                .unwrap()
                .contains_key("latestStateRecord")
        );
        // No list, no simpleBiz.
        assert!(
            reply_payload(
                Inbound::Command(CommandId::QueryAllBiz),
                Echo::default(),
                too_large(9, 1),
                0
            )
            .is_none()
        );
    }

    #[test]
    fn health_replies() {
        let health = Inbound::Command(CommandId::Health);
        let ok = Outcome::Success(Data::Health(Box::new(Health {
            health_data: HealthData {
                master_biz_info: Some(koupleless_protocol::BizHealthMeta {
                    biz_name: "base".into(),
                    biz_state: BizState::Activated,
                    biz_version: "1.0.0".into(),
                    web_context_path: Some("/".into()),
                }),
                ..HealthData::default()
            },
        })));
        let v = reply(health, b"{}", ok);
        assert_eq!(v["data"]["code"], "SUCCESS");
        assert_eq!(
            v["data"]["data"]["healthData"]["masterBizInfo"]["bizState"],
            "ACTIVATED"
        );
        // FAILED health: no data, as Java publishes it.
        let failed = Outcome::Failed {
            message: "indicator not registered".into(),
            data: None,
            code: ErrorCode::NoMatchedBiz,
        };
        let v = reply(health, b"{}", failed);
        assert_eq!(v["data"]["code"], "FAILED");
        assert!(v["data"].get("data").is_none());
        assert_eq!(v["data"]["message"], "indicator not registered");
    }

    #[test]
    fn batch_reply_decodes_as_the_controller_reads_it() {
        let mut map = BTreeMap::new();
        map.insert(
            "file:///b.jar".to_owned(),
            ClientResponse {
                biz_infos: Some(vec![model("biz-b", BizState::Activated)]),
                code: ArkResultCode::Success,
                elapsed_space: None,
                message: "Install Biz: biz-b:1.0.0 success".into(),
            },
        );
        let ok = Outcome::Success(Data::Batch(BatchInstallResponse {
            biz_url_to_response: Some(map),
            code: ArkResultCode::Success,
            elapsed_space: Some(1),
            message: "batch install success".into(),
        }));
        let bytes = reply_payload(Inbound::Baseline, Echo::default(), ok, 7).unwrap();
        let decoded: Envelope<BatchInstallBizResponseMsg> = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(decoded.data.command, "batchInstallBiz");
        let entry = &decoded
            .data
            .response
            .data
            .unwrap()
            .biz_url_to_response
            .unwrap()["file:///b.jar"];
        assert_eq!(
            entry.biz_infos.as_ref().unwrap()[0].biz_state,
            Some(BizState::Activated)
        );
        assert_eq!(
            parse(&bytes)["data"]["response"]["data"]["bizUrlToResponse"]["file:///b.jar"]["bizInfos"]
                [0]["bizState"],
            "ACTIVATED"
        );

        // A baseline that is not a list fails like Java's `bizList is null`.
        let invalid = Outcome::Internal {
            message: "bizList is null".into(),
            code: ErrorCode::InvalidParameter,
        };
        let v = reply(Inbound::Baseline, b"", invalid);
        assert_eq!(v["data"]["command"], "batchInstallBiz");
        assert_eq!(v["data"]["response"]["code"], "FAILED");
        assert_eq!(v["data"]["response"]["data"]["code"], "FAILED");
        assert_eq!(v["data"]["response"]["message"], "bizList is null");
    }

    #[test]
    fn command_reply_carries_the_request_id() {
        let rec = ProcessRecord {
            ark_biz_meta: None,
            elapsed_time: 0,
            end_time: None,
            end_timestamp: 0,
            error_code: None,
            message: None,
            request_id: "r1".into(),
            start_time: None,
            start_timestamp: 1,
            status: ProcessStatus::Succeeded,
            thread_name: None,
            throwable: None,
        };
        let v = reply(
            Inbound::Command(CommandId::QueryBizOps),
            br#"{"requestId":"r1"}"#,
            Outcome::Success(Data::Record(Box::new(rec))),
        );
        let decoded: Envelope<CommandReply> = serde_json::from_value(v.clone()).unwrap();
        assert_eq!(decoded.data.command, "queryBizOps");
        assert_eq!(decoded.data.request_id.as_deref(), Some("r1"));
        assert_eq!(v["data"]["response"]["data"]["status"], "SUCCEEDED");
        let v = reply(
            Inbound::Command(CommandId::SwitchBiz),
            b"{",
            too_large(3, 1),
        );
        assert!(v["data"].get("requestId").is_none());
        assert_eq!(v["data"]["response"]["code"], "FAILED");
        assert_eq!(
            v["data"]["response"]["errorCode"],
            "ModuleController.InvalidRequest"
        );
    }

    #[test]
    fn outbound_envelopes_match_the_java_base() {
        let base = java_base();
        let heart = parse(&heartbeat_payload(
            &base,
            BizState::Activated,
            1_795_306_266_058,
        ));
        assert_eq!(
            heart,
            golden("mqtt00_connect_queryBaseline_heartbeats.base-heart.json")
        );
        let query = parse(&query_baseline_payload(&base, 1_795_306_265_911));
        assert_eq!(
            query,
            golden("mqtt00_connect_queryBaseline_heartbeats.base-queryBaseline.json")
        );
        let will: Envelope<koupleless_protocol::BaseStatus> =
            serde_json::from_slice(&will_payload(&base)).unwrap();
        assert_eq!(will.data.state, BizState::Deactivated);
        // Year 2100, on the controller's clock: still fresh.
        assert!(!will.is_stale(4_102_444_800_000, MAX_MESSAGE_AGE_MS));
        // The Go check `publishTimestamp + 10000 <= now` must not overflow int64.
        assert!(WILL_TIMESTAMP.checked_add(MAX_MESSAGE_AGE_MS).is_some());
    }
}
