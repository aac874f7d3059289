//! Property tests: identifiers and topics format/parse round trip, enums render/parse per
//! transport, and no input makes a decoder panic.

use std::fmt::Debug;
use std::path::Path;
use std::sync::OnceLock;

use koupleless_protocol::biz::CommandModel;
use koupleless_protocol::command::CommandId;
use koupleless_protocol::health::PluginHealthMeta;
use koupleless_protocol::lenient::{LenientRequest, decode_request};
use koupleless_protocol::mqtt::{
    BatchInstallBizResponseMsg, BizOperationResponse, CommandReply, ReplyKind,
};
use koupleless_protocol::transport::{self, Transport};
use koupleless_protocol::{
    BaseIdentity, BaseMetadata, BaseStatus, BatchInstallBizRequest, BatchInstallResponse,
    BizHealthMeta, BizInfo, BizModel, BizOpRequest, BizSpec, BizState, ClientResponse, CpuInfo,
    Env, Envelope, Health, HealthData, HealthRequest, InstallBizRequest, JvmInfo, LabelValue,
    Output, ProcessRecord, QueryBizOpsRequest, Response, SimpleBizInfo, StateChangeReason,
    StateRecord, Topic, VNodeName,
};
use proptest::prelude::*;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

/// Identity rules (spec T20): anything but the MQTT separators/wildcards, whitespace and
/// control characters; non-empty, at most 253 bytes.
fn is_valid_identity(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && !s
            .chars()
            .any(|c| matches!(c, '/' | '+' | '#') || c.is_whitespace() || c.is_control())
}

fn identity() -> impl Strategy<Value = BaseIdentity> {
    "[^/+#\\s\\p{Cc}]{1,40}".prop_map(|s| s.parse().expect("strategy yields valid identities"))
}

fn env() -> impl Strategy<Value = Env> {
    "[^/+#.\\s\\p{Cc}]{1,20}".prop_map(|s| s.parse().expect("strategy yields valid envs"))
}

fn dns_label() -> &'static str {
    "[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?"
}

fn topic() -> impl Strategy<Value = Topic> {
    let kind = prop::sample::select(ReplyKind::ALL.to_vec());
    let command = prop::sample::select(CommandId::ALL.to_vec());
    (env(), identity(), 0..5u8, kind, command).prop_map(|(env, base, variant, kind, command)| {
        match variant {
            0 => Topic::Heartbeat { env, base },
            1 => Topic::QueryBaseline { env, base },
            2 => Topic::Baseline { env, base },
            3 => Topic::Reply { env, base, kind },
            _ => Topic::Command { env, base, command },
        }
    })
}

fn any_state() -> impl Strategy<Value = BizState> {
    let mut all = BizState::KNOWN.to_vec();
    all.push(BizState::Unknown);
    prop::sample::select(all)
}

fn transport_strategy() -> impl Strategy<Value = Transport> {
    prop_oneof![Just(Transport::Http), Just(Transport::Mqtt)]
}

/// Keys that the decoders know, in canonical and variant spellings, so that generated JSON
/// reaches past "missing field" into the typed and lenient paths.
const KEYS: &[&str] = &[
    "bizName",
    "biz_name",
    "BIZNAME",
    "bizVersion",
    "bizUrl",
    "bizState",
    "bizStateRecords",
    "async",
    "isAsync",
    "requestId",
    "request-id",
    "args",
    "envs",
    "installStrategy",
    "bizList",
    "type",
    "metrics",
    "code",
    "data",
    "message",
    "baseIdentity",
    "errorCode",
    "errorStackTrace",
    "healthData",
    "jvm",
    "cpu",
    "masterBizInfo",
    "bizInfo",
    "bizListInfo",
    "pluginListInfo",
    "java max metaspace",
    "total memory(M)",
    "count",
    "changeTime",
    "state",
    "reason",
    "latestStateRecord",
    "name",
    "version",
    "publishTimestamp",
    "baseMetadata",
    "localIP",
    "localHostName",
    "port",
    "identity",
    "clusterName",
    "bizInfos",
    "bizUrlToResponse",
    "elapsedSpace",
    "priority",
    "attributes",
    "command",
    "response",
    "status",
    "startTimestamp",
    "arkBizMeta",
    "desc",
    "id",
];

/// Scalars that are meaningful somewhere: enum spellings, codes, booleans as text.
const WORDS: &[&str] = &[
    "activated",
    "ACTIVATED",
    "broken",
    "Started",
    "UN_INSTALL_FAILED",
    "SUCCESS",
    "FAILED",
    "REPEAT_BIZ",
    "CMD_NOT_FOUND",
    "SUCCEEDED",
    "Arklet.InstallBizFailed",
    "true",
    "installBiz",
    "",
    "3",
];

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("JSON has no NaN/inf", |f| f.is_finite())
            .prop_map(Value::from),
        prop::sample::select(WORDS).prop_map(|w| Value::String(w.into())),
        ".{0,8}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        let key =
            prop_oneof![4 => prop::sample::select(KEYS).prop_map(str::to_owned), 1 => ".{0,6}"];
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((key, inner), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// Every JSON fixture (spec examples and real captures), parsed once.
fn golden_documents() -> &'static [Value] {
    static DOCS: OnceLock<Vec<Value>> = OnceLock::new();
    DOCS.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
        let mut docs = Vec::new();
        for dir in ["spec", "real-http", "real-mqtt"] {
            for entry in std::fs::read_dir(root.join(dir)).expect("fixture directory") {
                let path = entry.expect("directory entry").path();
                if path.extension().is_some_and(|e| e == "json") {
                    let bytes = std::fs::read(&path).expect("readable fixture");
                    docs.push(serde_json::from_slice(&bytes).expect("fixture is JSON"));
                }
            }
        }
        assert!(
            docs.len() > 100,
            "fixtures not found under {}",
            root.display()
        );
        docs
    })
}

/// Paths to every node of `v` (object keys and array indices).
fn node_paths(v: &Value, here: &mut Vec<Value>, out: &mut Vec<Vec<Value>>) {
    out.push(here.clone());
    let children: Vec<(Value, &Value)> = match v {
        Value::Object(m) => m
            .iter()
            .map(|(k, c)| (Value::String(k.clone()), c))
            .collect(),
        Value::Array(a) => a
            .iter()
            .enumerate()
            .map(|(i, c)| (Value::from(i), c))
            .collect(),
        _ => return,
    };
    for (step, child) in children {
        here.push(step);
        node_paths(child, here, out);
        here.pop();
    }
}

fn node_at<'a>(v: &'a mut Value, path: &[Value]) -> &'a mut Value {
    path.iter().fold(v, |v, step| match step {
        Value::String(k) => &mut v[k.as_str()],
        step => &mut v[step.as_u64().expect("index") as usize],
    })
}

/// Replaces (or, inside an object, sometimes removes) one node of `doc`.
fn mutate(doc: &mut Value, at: prop::sample::Index, with: Value, remove: bool) {
    let mut paths = Vec::new();
    node_paths(doc, &mut Vec::new(), &mut paths);
    let path = &paths[at.index(paths.len())];
    match path.split_last() {
        Some((Value::String(key), parent)) if remove => {
            if let Value::Object(m) = node_at(doc, parent) {
                m.remove(key);
            }
        }
        _ => *node_at(doc, path) = with,
    }
}

/// A golden document, or one of its subtrees (so that nested shapes such as a state record
/// or a simpleBiz element are fed to their own decoders), with up to three nodes replaced or
/// removed: near-valid messages reach the typed decoding paths that random JSON rarely gets
/// past.
fn mutated_golden() -> impl Strategy<Value = Vec<u8>> {
    let edit = (
        any::<prop::sample::Index>(),
        arb_json(),
        prop::bool::weighted(0.3),
    );
    let subtree = prop::option::of(any::<prop::sample::Index>());
    (
        any::<prop::sample::Index>(),
        subtree,
        prop::collection::vec(edit, 0..4),
    )
        .prop_map(|(doc, subtree, edits)| {
            let docs = golden_documents();
            let mut doc = docs[doc.index(docs.len())].clone();
            if let Some(at) = subtree {
                let mut paths = Vec::new();
                node_paths(&doc, &mut Vec::new(), &mut paths);
                let path = paths[at.index(paths.len())].clone();
                doc = node_at(&mut doc, &path).take();
            }
            for (at, with, remove) in edits {
                mutate(&mut doc, at, with, remove);
            }
            serde_json::to_vec(&doc).unwrap()
        })
}

/// Arbitrary bytes, JSON-shaped more often than not.
fn arb_body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        1 => prop::collection::vec(any::<u8>(), 0..128),
        1 => arb_json().prop_map(|v| serde_json::to_vec(&v).unwrap()),
        3 => mutated_golden(),
        // A whole valid message with one byte cut off or changed exercises the error paths.
        1 => (arb_json(), any::<prop::sample::Index>(), any::<u8>()).prop_map(|(v, i, b)| {
            let mut bytes = serde_json::to_vec(&v).unwrap();
            let at = i.index(bytes.len());
            bytes[at] = b;
            bytes
        }),
    ]
}

/// Decoding must not panic; what decodes must encode on both transports, and encoding is
/// stable after one round (decode → encode → decode → encode gives the same JSON).
fn decode_message<T: DeserializeOwned + Serialize + Debug>(bytes: &[u8]) {
    let Ok(value) = serde_json::from_slice::<T>(bytes) else {
        return;
    };
    for t in [Transport::Http, Transport::Mqtt] {
        let once = String::from_utf8(transport::encode(&value, t)).expect("JSON is UTF-8");
        let again: T = serde_json::from_str(&once)
            .unwrap_or_else(|e| panic!("our own output does not decode: {e}: {once}"));
        let twice = String::from_utf8(transport::encode(&again, t)).expect("JSON is UTF-8");
        assert_eq!(once, twice, "encoding is not stable");
    }
}

/// Lenient request decoding must not panic, and a decoded request re-decodes to itself.
fn decode_req<T: LenientRequest + Serialize + Debug + PartialEq>(bytes: &[u8]) {
    if let Ok(Some(req)) = decode_request::<T>(bytes) {
        let again = decode_request::<T>(&transport::encode(&req, Transport::Http));
        assert_eq!(again, Ok(Some(req)));
    }
}

/// Strings shaped like topics, about half of them valid: a prefix+env, an identity, a tail.
fn topic_candidate() -> impl Strategy<Value = String> {
    const ENVS: &[&str] = &[
        "koupleless_dev",
        "koupleless_x_y",
        "koupleless_",
        "koupleless_a.b",
        "dev",
    ];
    const IDS: &[&str] = &["10.0.0.5", "base", "a+b", "", "x y", "id-1"];
    const TAILS: &[&str] = &[
        "base/heart",
        "base/queryBaseline",
        "base/baseline",
        "base/health",
        "base/simpleBiz",
        "base/biz",
        "base/bizOperation",
        "base/batchInstallBizResponse",
        "base/commandReply",
        "installBiz",
        "health",
        "help",
        "queryAllBiz",
        "batchInstallBiz",
        "base",
        "base/nope",
        "Base/heart",
        "installbiz",
        "base/heart/x",
        "",
        "a/b/c",
    ];
    let env = prop::sample::select(ENVS);
    (
        prop_oneof![3 => Just(ENVS[0]), 2 => env],
        prop::sample::select(IDS),
        prop::sample::select(TAILS),
    )
        .prop_map(|(env, id, tail)| format!("{env}/{id}/{tail}"))
}

/// Strings shaped like Node names, valid some of the time.
fn vnode_candidate() -> impl Strategy<Value = String> {
    const PREFIXES: &[&str] = &["vnode.", "node.", "", "vnode"];
    const LABELS: &[&str] = &["10", "0", "a", "dev", "x-1", "A", "a_b", "-a", "", "a/b"];
    let prefix = prop_oneof![3 => Just(PREFIXES[0]), 1 => prop::sample::select(PREFIXES)];
    (
        prefix,
        prop::collection::vec(prop::sample::select(LABELS), 1..5),
    )
        .prop_map(|(p, labels)| format!("{p}{}", labels.join(".")))
}

/// Integration tests have no lib.rs for proptest to store regressions next to; failures are
/// reported with their seed instead.
fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn topic_display_parse_round_trip(t in topic()) {
        let text = t.to_string();
        prop_assert_eq!(text.parse::<Topic>(), Ok(t));
    }

    /// Parsing is exact: whatever parses prints back as the very same string.
    #[test]
    fn topic_parse_is_canonical(s in topic_candidate()) {
        if let Ok(t) = s.parse::<Topic>() {
            prop_assert_eq!(t.to_string(), s);
        }
    }

    #[test]
    fn topic_parse_never_panics(s in any::<String>()) {
        let _ = s.parse::<Topic>();
    }

    #[test]
    fn base_identity_round_trip(id in identity()) {
        prop_assert_eq!(id.to_string().parse::<BaseIdentity>(), Ok(id.clone()));
        let json = serde_json::to_string(&id).unwrap();
        prop_assert_eq!(serde_json::from_str::<BaseIdentity>(&json).unwrap(), id);
    }

    #[test]
    fn base_identity_accepts_exactly_the_valid_strings(s in any::<String>()) {
        let parsed = s.parse::<BaseIdentity>();
        prop_assert_eq!(parsed.is_ok(), is_valid_identity(&s));
        if let Ok(id) = parsed {
            prop_assert_eq!(id.as_str(), s.as_str());
        }
    }

    #[test]
    fn env_round_trip(e in env()) {
        prop_assert_eq!(e.to_string().parse::<Env>(), Ok(e.clone()));
        let json = serde_json::to_string(&e).unwrap();
        prop_assert_eq!(serde_json::from_str::<Env>(&json).unwrap(), e);
    }

    #[test]
    fn env_accepts_exactly_the_valid_strings(s in any::<String>()) {
        prop_assert_eq!(s.parse::<Env>().is_ok(), is_valid_identity(&s) && !s.contains('.'));
    }

    #[test]
    fn vnode_name_round_trip(
        labels in prop::collection::vec(dns_label(), 1..5),
        env in dns_label(),
    ) {
        let identity: BaseIdentity = labels.join(".").parse().unwrap();
        let env: Env = env.parse().unwrap();
        let name = VNodeName::new(identity.clone(), env.clone()).unwrap();
        let parsed: VNodeName = name.to_string().parse().unwrap();
        prop_assert_eq!(parsed.identity(), &identity);
        prop_assert_eq!(parsed.env(), &env);
        prop_assert_eq!(parsed, name);
    }

    #[test]
    fn vnode_name_parse_is_canonical(s in vnode_candidate()) {
        if let Ok(n) = s.parse::<VNodeName>() {
            prop_assert_eq!(n.to_string(), s);
        }
    }

    #[test]
    fn label_value_sanitize_always_valid(s in any::<String>()) {
        let v = LabelValue::sanitize(&s);
        prop_assert_eq!(v.as_str().parse::<LabelValue>(), Ok(v.clone()));
        prop_assert!(v.as_str().len() <= 63);
        prop_assert_eq!(LabelValue::sanitize(v.as_str()), v);
    }

    #[test]
    fn label_value_sanitize_keeps_valid_values(s in "([A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?)?") {
        let sanitized = LabelValue::sanitize(&s);
        prop_assert_eq!(sanitized.as_str(), s.as_str());
    }

    #[test]
    fn biz_state_render_parse(state in any_state(), t in transport_strategy()) {
        let json = transport::encode(&state, t);
        let text: String = serde_json::from_slice(&json).unwrap();
        prop_assert_eq!(text.as_str(), state.as_str_for(t));
        prop_assert_eq!(serde_json::from_slice::<BizState>(&json).unwrap(), state);
        prop_assert_eq!(BizState::parse(&text), state);
    }

    #[test]
    fn reason_render_parse(
        reason in prop::sample::select(StateChangeReason::ALL.to_vec()),
        t in transport_strategy(),
    ) {
        let json = transport::encode(&reason, t);
        let text: String = serde_json::from_slice(&json).unwrap();
        let want = if t == Transport::Http { reason.as_display() } else { reason.as_name() };
        prop_assert_eq!(text.as_str(), want);
        prop_assert_eq!(serde_json::from_slice::<StateChangeReason>(&json).unwrap(), reason);
    }

    /// A state record carries both enums; it survives either transport.
    #[test]
    fn state_record_round_trip(
        change_time in any::<i64>(),
        message in ".{0,12}",
        reason in prop::sample::select(StateChangeReason::ALL.to_vec()),
        state in any_state(),
        t in transport_strategy(),
    ) {
        let r = StateRecord { change_time, message, reason, state };
        let back: StateRecord = serde_json::from_slice(&transport::encode(&r, t)).unwrap();
        prop_assert_eq!(back, r);
    }

    #[test]
    fn parsing_enums_is_idempotent(s in any::<String>()) {
        let st = BizState::parse(&s);
        prop_assert_eq!(BizState::parse(st.as_lower()), st);
        prop_assert_eq!(BizState::parse(st.as_upper()), st);
        let r = StateChangeReason::parse(&s);
        prop_assert_eq!(StateChangeReason::parse(r.as_name()), r);
        prop_assert_eq!(StateChangeReason::parse(r.as_display()), r);
    }

    #[test]
    fn request_decoders_never_panic(body in arb_body()) {
        decode_req::<InstallBizRequest>(&body);
        decode_req::<BizOpRequest>(&body);
        decode_req::<BatchInstallBizRequest>(&body);
        decode_req::<QueryBizOpsRequest>(&body);
        decode_req::<HealthRequest>(&body);
    }
}

proptest! {
    // Each case tries every message type; most types need a near-valid document (a mutated
    // golden one) to get past their required fields, hence more cases.
    #![proptest_config(config(1024))]

    #[test]
    fn message_decoders_never_panic(body in arb_body()) {
        decode_message::<Response<Vec<BizInfo>>>(&body);
        decode_message::<Response<ClientResponse>>(&body);
        decode_message::<Response<BatchInstallResponse>>(&body);
        decode_message::<Response<Health>>(&body);
        decode_message::<Response<ProcessRecord>>(&body);
        decode_message::<Response<Vec<CommandModel>>>(&body);
        decode_message::<Response<Value>>(&body);
        decode_message::<Output<Health>>(&body);
        decode_message::<Envelope<BaseStatus>>(&body);
        decode_message::<Envelope<BaseMetadata>>(&body);
        decode_message::<Envelope<Vec<SimpleBizInfo>>>(&body);
        decode_message::<Envelope<BizOperationResponse>>(&body);
        decode_message::<Envelope<BatchInstallBizResponseMsg>>(&body);
        decode_message::<Envelope<Output<Health>>>(&body);
        // Legacy `base/biz`: the HTTP queryAllBiz output, enveloped.
        decode_message::<Envelope<Output<Vec<BizInfo>>>>(&body);
        decode_message::<CommandReply>(&body);
        decode_message::<BaseStatus>(&body);
        decode_message::<ProcessRecord>(&body);
        decode_message::<Vec<BizSpec>>(&body);
        decode_message::<BizModel>(&body);
        decode_message::<HealthData>(&body);
        decode_message::<JvmInfo>(&body);
        decode_message::<CpuInfo>(&body);
        decode_message::<BizHealthMeta>(&body);
        decode_message::<PluginHealthMeta>(&body);
        decode_message::<StateRecord>(&body);
    }
}
