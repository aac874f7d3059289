//! The MQTT tunnel: topics, the `{data, publishTimestamp}` envelope and message bodies
//! (spec protocol §5).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::biz::{BatchInstallResponse, ClientResponse};
use crate::command::{CommandId, Output};
use crate::ids::{BaseIdentity, Env, IdError};
use crate::state::BizState;

/// Messages older than this are dropped by the controller (trap T17).
pub const MAX_MESSAGE_AGE_MS: i64 = 10_000;

/// Every topic of the tunnel. [`fmt::Display`] is the only place topic strings are built and
/// [`FromStr`] the only place they are parsed.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Topic {
    /// `koupleless_<env>/<id>/base/heart` (base → controller).
    Heartbeat {
        /// Env segment.
        env: Env,
        /// Base identity.
        base: BaseIdentity,
    },
    /// `.../base/queryBaseline` (base → controller).
    QueryBaseline {
        /// Env segment.
        env: Env,
        /// Base identity.
        base: BaseIdentity,
    },
    /// `.../base/baseline` (controller → base, retained).
    Baseline {
        /// Env segment.
        env: Env,
        /// Base identity.
        base: BaseIdentity,
    },
    /// A reply topic `.../base/<kind>` (base → controller).
    Reply {
        /// Env segment.
        env: Env,
        /// Base identity.
        base: BaseIdentity,
        /// Which reply.
        kind: ReplyKind,
    },
    /// A command `.../<command>` (controller → base).
    Command {
        /// Env segment.
        env: Env,
        /// Base identity.
        base: BaseIdentity,
        /// The command (last segment).
        command: CommandId,
    },
}

/// Reply topics a base publishes under `.../base/`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReplyKind {
    /// `base/health`
    Health,
    /// `base/simpleBiz`
    SimpleBiz,
    /// `base/biz` (legacy; Java no longer publishes it)
    Biz,
    /// `base/bizOperation`
    BizOperation,
    /// `base/batchInstallBizResponse`
    BatchInstallBizResponse,
    /// `base/commandReply`: ours, for the commands Java ignores over MQTT (switchBiz,
    /// batchInstallBiz, queryBizOps, help); body is a [`CommandReply`].
    CommandReply,
}

impl ReplyKind {
    /// Every reply kind.
    pub const ALL: [ReplyKind; 6] = [
        ReplyKind::Health,
        ReplyKind::SimpleBiz,
        ReplyKind::Biz,
        ReplyKind::BizOperation,
        ReplyKind::BatchInstallBizResponse,
        ReplyKind::CommandReply,
    ];

    /// The segment after `base/`.
    pub fn as_str(self) -> &'static str {
        match self {
            ReplyKind::Health => "health",
            ReplyKind::SimpleBiz => "simpleBiz",
            ReplyKind::Biz => "biz",
            ReplyKind::BizOperation => "bizOperation",
            ReplyKind::BatchInstallBizResponse => "batchInstallBizResponse",
            ReplyKind::CommandReply => "commandReply",
        }
    }
}

impl Topic {
    /// The env segment.
    pub fn env(&self) -> &Env {
        match self {
            Topic::Heartbeat { env, .. }
            | Topic::QueryBaseline { env, .. }
            | Topic::Baseline { env, .. }
            | Topic::Reply { env, .. }
            | Topic::Command { env, .. } => env,
        }
    }

    /// The base identity segment.
    pub fn base(&self) -> &BaseIdentity {
        match self {
            Topic::Heartbeat { base, .. }
            | Topic::QueryBaseline { base, .. }
            | Topic::Baseline { base, .. }
            | Topic::Reply { base, .. }
            | Topic::Command { base, .. } => base,
        }
    }

    /// Filter for every command to one base: `koupleless_<env>/<id>/+`.
    pub fn command_filter(env: &Env, base: &BaseIdentity) -> String {
        format!("koupleless_{env}/{base}/+")
    }

    /// Filter for every base's heartbeat: `koupleless_<env>/+/base/heart`.
    pub fn heartbeat_filter(env: &Env) -> String {
        format!("koupleless_{env}/+/base/heart")
    }

    /// Filter for every base's baseline query: `koupleless_<env>/+/base/queryBaseline`.
    pub fn query_baseline_filter(env: &Env) -> String {
        format!("koupleless_{env}/+/base/queryBaseline")
    }
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (env, base) = (self.env(), self.base());
        match self {
            Topic::Heartbeat { .. } => write!(f, "koupleless_{env}/{base}/base/heart"),
            Topic::QueryBaseline { .. } => write!(f, "koupleless_{env}/{base}/base/queryBaseline"),
            Topic::Baseline { .. } => write!(f, "koupleless_{env}/{base}/base/baseline"),
            Topic::Reply { kind, .. } => {
                write!(f, "koupleless_{env}/{base}/base/{}", kind.as_str())
            }
            Topic::Command { command, .. } => write!(f, "koupleless_{env}/{base}/{command}"),
        }
    }
}

/// A string that is not one of our topics.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TopicError {
    /// Wrong shape.
    #[error("{topic:?} is not a koupleless topic: {why}")]
    Shape {
        /// The input.
        topic: String,
        /// What is wrong.
        why: &'static str,
    },
    /// A segment failed validation.
    #[error("topic {topic:?}: {source}")]
    Id {
        /// The input.
        topic: String,
        /// The id error.
        source: IdError,
    },
}

impl FromStr for Topic {
    type Err = TopicError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let shape = |why| TopicError::Shape {
            topic: s.into(),
            why,
        };
        let id = |source| TopicError::Id {
            topic: s.into(),
            source,
        };
        let parts: Vec<&str> = s.split('/').collect();
        let env = parts[0]
            .strip_prefix("koupleless_")
            .ok_or_else(|| shape("missing prefix"))?;
        let env: Env = env.parse().map_err(id)?;
        let base: BaseIdentity = parts
            .get(1)
            .ok_or_else(|| shape("missing base identity"))?
            .parse()
            .map_err(id)?;
        match parts[2..] {
            ["base", "heart"] => Ok(Topic::Heartbeat { env, base }),
            ["base", "queryBaseline"] => Ok(Topic::QueryBaseline { env, base }),
            ["base", "baseline"] => Ok(Topic::Baseline { env, base }),
            ["base", kind] => ReplyKind::ALL
                .into_iter()
                .find(|k| k.as_str() == kind)
                .map(|kind| Topic::Reply { env, base, kind })
                .ok_or_else(|| shape("unknown reply topic")),
            [command] => command
                .parse()
                .map(|command| Topic::Command { env, base, command })
                .map_err(|_| shape("unknown command")),
            _ => Err(shape("wrong number of levels")),
        }
    }
}

/// The wrapper around every base → controller message.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Envelope<T> {
    /// The payload.
    pub data: T,
    /// Publisher's wall clock, epoch ms.
    pub publish_timestamp: i64,
}

impl<T> Envelope<T> {
    /// Wraps `data` stamped `now_ms`.
    pub fn new(data: T, now_ms: i64) -> Self {
        Envelope {
            data,
            publish_timestamp: now_ms,
        }
    }

    /// Upstream `Expired`: stale when `publishTimestamp + max_age <= now`.
    pub fn is_stale(&self, now_ms: i64, max_age_ms: i64) -> bool {
        self.publish_timestamp.saturating_add(max_age_ms) <= now_ms
    }
}

/// Who the base is (`BaseMetadata`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BaseMetadata {
    /// Cluster name (Node label `base.koupleless.io/cluster-name`).
    #[serde(default)]
    pub cluster_name: String,
    /// Identity (topic segment).
    #[serde(default)]
    pub identity: String,
    /// Base name (Node label `base.koupleless.io/name`).
    #[serde(default)]
    pub name: String,
    /// Base version (Node label `base.koupleless.io/version`).
    #[serde(default)]
    pub version: String,
}

/// The heartbeat body (`BaseStatus`); enveloped over MQTT, raw over HTTP.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BaseStatus {
    /// Who.
    pub base_metadata: BaseMetadata,
    /// Host name (Node label `kubernetes.io/hostname`).
    #[serde(default)]
    pub local_host_name: String,
    /// IP the controller calls over HTTP. Note the spelling `localIP`.
    #[serde(rename = "localIP", default)]
    pub local_ip: String,
    /// Arklet HTTP port; 0 over MQTT (trap T21).
    #[serde(default)]
    pub port: u16,
    /// `activated`, or `deactivated` on shutdown; written lower-case on every transport.
    #[serde(serialize_with = "crate::state::lower::serialize")]
    pub state: BizState,
}

/// `base/bizOperation` body: the outcome of an `installBiz`/`uninstallBiz` command.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BizOperationResponse {
    /// Echoed from the request (absent if it was absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub biz_name: Option<String>,
    /// Echoed from the request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub biz_version: Option<String>,
    /// `installBiz` or `uninstallBiz`.
    pub command: String,
    /// The Arklet output.
    pub response: Output<ClientResponse>,
}

/// `base/batchInstallBizResponse` body.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BatchInstallBizResponseMsg {
    /// Always `batchInstallBiz`.
    pub command: String,
    /// The Arklet output.
    pub response: Output<BatchInstallResponse>,
}

/// `base/commandReply` body (ours): the outcome of a command Java ignores over MQTT.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CommandReply {
    /// The command id.
    pub command: String,
    /// `requestId` from the request, if any, to correlate replies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// The Arklet output, shaped like the HTTP response's `{code, data, message}`.
    pub response: Output<serde_json::Value>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> Env {
        "dev".parse().unwrap()
    }
    fn base() -> BaseIdentity {
        "10.0.0.5".parse().unwrap()
    }

    #[test]
    fn topic_strings() {
        let cases = [
            (
                Topic::Heartbeat {
                    env: env(),
                    base: base(),
                },
                "koupleless_dev/10.0.0.5/base/heart",
            ),
            (
                Topic::QueryBaseline {
                    env: env(),
                    base: base(),
                },
                "koupleless_dev/10.0.0.5/base/queryBaseline",
            ),
            (
                Topic::Baseline {
                    env: env(),
                    base: base(),
                },
                "koupleless_dev/10.0.0.5/base/baseline",
            ),
            (
                Topic::Reply {
                    env: env(),
                    base: base(),
                    kind: ReplyKind::SimpleBiz,
                },
                "koupleless_dev/10.0.0.5/base/simpleBiz",
            ),
            (
                Topic::Command {
                    env: env(),
                    base: base(),
                    command: CommandId::InstallBiz,
                },
                "koupleless_dev/10.0.0.5/installBiz",
            ),
        ];
        for (topic, text) in cases {
            assert_eq!(topic.to_string(), text);
            assert_eq!(text.parse::<Topic>().unwrap(), topic);
        }
        for bad in [
            "koupleless_dev/a/unknown",
            "other_dev/a/health",
            "koupleless_dev",
            "koupleless_dev/a/base/nope",
            "koupleless_dev/a/b/c/d",
            "koupleless_d.v/a/health",
        ] {
            assert!(bad.parse::<Topic>().is_err(), "{bad}");
        }
    }

    #[test]
    fn staleness_boundary() {
        let e = Envelope::new((), 1_000);
        assert!(!e.is_stale(10_999, MAX_MESSAGE_AGE_MS));
        assert!(e.is_stale(11_000, MAX_MESSAGE_AGE_MS));
        assert!(!Envelope::new((), i64::MAX).is_stale(0, MAX_MESSAGE_AGE_MS));
    }
}
