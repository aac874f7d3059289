//! Fixtures are encoded with `k8s-pb` (prost types carrying the upstream field
//! numbers) or taken from what kubectl 1.33 sent, then decoded here.

use super::*;
use k8s_pb::api::apps::v1 as apps;
use k8s_pb::api::core::v1 as core;
use k8s_pb::apimachinery::pkg::api::resource::Quantity;
use k8s_pb::apimachinery::pkg::apis::meta::v1 as meta;
use k8s_pb::apimachinery::pkg::runtime::{TypeMeta, Unknown};
use k8s_pb::apimachinery::pkg::util::intstr::IntOrString;
use prost::Message as _;

fn wrap(api_version: &str, kind: &str, raw: Vec<u8>) -> Vec<u8> {
    let env = Unknown {
        type_meta: Some(TypeMeta {
            api_version: Some(api_version.into()),
            kind: Some(kind.into()),
        }),
        raw: Some(raw),
        content_encoding: Some(String::new()),
        content_type: Some(String::new()),
    };
    let mut out = MAGIC.to_vec();
    out.extend(env.encode_to_vec());
    out
}

fn s(v: &str) -> Option<String> {
    Some(v.to_string())
}

#[test]
fn special_types() {
    let time = |seconds, nanos| meta::Time {
        seconds: Some(seconds),
        nanos: Some(nanos),
    };
    let micro = |seconds, nanos| meta::MicroTime {
        seconds: Some(seconds),
        nanos: Some(nanos),
    };
    let ios = |t, i, v: &str| IntOrString {
        r#type: Some(t),
        int_val: Some(i),
        str_val: Some(v.into()),
    };
    let q = |v: &str| Quantity { string: s(v) };
    let cases: Vec<(Special, Vec<u8>, Value)> = vec![
        (
            Special::Time,
            time(1_735_689_600, 0).encode_to_vec(),
            json!("2025-01-01T00:00:00Z"),
        ),
        // Time's JSON has whole seconds
        (
            Special::Time,
            time(1_735_689_601, 999_000_000).encode_to_vec(),
            json!("2025-01-01T00:00:01Z"),
        ),
        (
            Special::Time,
            time(0, 0).encode_to_vec(),
            json!("1970-01-01T00:00:00Z"),
        ),
        // the zero time is an empty message: null
        (Special::Time, vec![], Value::Null),
        (
            Special::MicroTime,
            micro(1_735_689_600, 123_456_789).encode_to_vec(),
            json!("2025-01-01T00:00:00.123456Z"),
        ),
        (
            Special::MicroTime,
            micro(1_735_689_600, 0).encode_to_vec(),
            json!("2025-01-01T00:00:00.000000Z"),
        ),
        (Special::MicroTime, vec![], Value::Null),
        (Special::Quantity, q("1Gi").encode_to_vec(), json!("1Gi")),
        (Special::Quantity, q("500m").encode_to_vec(), json!("500m")),
        (Special::Quantity, q("0").encode_to_vec(), json!("0")),
        (
            Special::IntOrString,
            ios(0, 8080, "").encode_to_vec(),
            json!(8080),
        ),
        (
            Special::IntOrString,
            ios(0, 0, "").encode_to_vec(),
            json!(0),
        ),
        (
            Special::IntOrString,
            ios(0, -1, "").encode_to_vec(),
            json!(-1),
        ),
        (
            Special::IntOrString,
            ios(1, 0, "25%").encode_to_vec(),
            json!("25%"),
        ),
        (
            Special::IntOrString,
            ios(1, 0, "http").encode_to_vec(),
            json!("http"),
        ),
        // an empty IntOrString is the integer 0, as in Go
        (Special::IntOrString, vec![], json!(0)),
        (
            Special::FieldsV1,
            meta::FieldsV1 {
                raw: Some(br#"{"f:metadata":{"f:labels":{}}}"#.to_vec()),
            }
            .encode_to_vec(),
            json!({"f:metadata": {"f:labels": {}}}),
        ),
    ];
    for (ty, bytes, want) in cases {
        assert_eq!(special(ty, &bytes), Ok(want.clone()), "{ty:?} -> {want}");
    }
    assert!(special(Special::IntOrString, &ios(2, 1, "").encode_to_vec()).is_err());
    assert!(special(Special::FieldsV1, &[0x0a, 0x01, b'{']).is_err());
}

#[test]
fn what_kubectl_create_namespace_sends() {
    // kubectl 1.33 `create namespace t1`, from its -v=9 request dump
    let body: &[u8] = &[
        0x6b, 0x38, 0x73, 0x00, 0x0a, 0x0f, 0x0a, 0x02, 0x76, 0x31, 0x12, 0x09, 0x4e, 0x61, 0x6d,
        0x65, 0x73, 0x70, 0x61, 0x63, 0x65, 0x12, 0x1a, 0x0a, 0x12, 0x0a, 0x02, 0x74, 0x31, 0x12,
        0x00, 0x1a, 0x00, 0x22, 0x00, 0x2a, 0x00, 0x32, 0x00, 0x38, 0x00, 0x42, 0x00, 0x12, 0x00,
        0x1a, 0x02, 0x0a, 0x00, 0x1a, 0x00, 0x22, 0x00,
    ];
    assert_eq!(
        decode(body).unwrap(),
        // the zero values of omitempty value fields and the zero
        // creationTimestamp are left out
        json!({"apiVersion": "v1", "kind": "Namespace",
               "metadata": {"name": "t1"}, "spec": {}, "status": {}})
    );
}

#[test]
fn deployment_with_nested_and_special_fields() {
    let labels: std::collections::BTreeMap<String, String> =
        [("app".to_string(), "d1".to_string())].into();
    let d = apps::Deployment {
        metadata: Some(meta::ObjectMeta {
            name: s("d1"),
            labels: labels.clone(),
            creation_timestamp: Some(meta::Time::default()),
            ..Default::default()
        }),
        spec: Some(apps::DeploymentSpec {
            // pointers set to zero survive; value fields' zeros (what Go
            // writes for every unset value field) do not
            replicas: Some(0),
            revision_history_limit: Some(0),
            min_ready_seconds: Some(0),
            paused: Some(false),
            selector: Some(meta::LabelSelector {
                match_labels: labels.clone(),
                ..Default::default()
            }),
            strategy: Some(apps::DeploymentStrategy {
                r#type: s("RollingUpdate"),
                rolling_update: Some(apps::RollingUpdateDeployment {
                    max_unavailable: Some(IntOrString {
                        r#type: Some(0),
                        int_val: Some(0),
                        str_val: s(""),
                    }),
                    max_surge: Some(IntOrString {
                        r#type: Some(1),
                        int_val: Some(0),
                        str_val: s("25%"),
                    }),
                }),
            }),
            template: Some(core::PodTemplateSpec {
                metadata: Some(meta::ObjectMeta {
                    labels,
                    ..Default::default()
                }),
                spec: Some(core::PodSpec {
                    containers: vec![core::Container {
                        name: s("nginx"),
                        image: s("nginx:1.25"),
                        ports: vec![core::ContainerPort {
                            container_port: Some(80),
                            host_port: Some(0),
                            protocol: s("TCP"),
                            ..Default::default()
                        }],
                        resources: Some(core::ResourceRequirements {
                            limits: [("memory".to_string(), Quantity { string: s("128Mi") })]
                                .into(),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }],
                    node_selector: [("disk".to_string(), String::new())].into(),
                    tolerations: vec![core::Toleration {
                        key: s("node.kubernetes.io/not-ready"),
                        operator: s("Exists"),
                        effect: s("NoExecute"),
                        toleration_seconds: Some(300),
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
            }),
            ..Default::default()
        }),
        status: Some(apps::DeploymentStatus::default()),
    };
    let got = decode(&wrap("apps/v1", "Deployment", d.encode_to_vec())).unwrap();
    assert_eq!(
        got,
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "d1", "labels": {"app": "d1"}},
            "spec": {
                "replicas": 0,
                "revisionHistoryLimit": 0,
                "selector": {"matchLabels": {"app": "d1"}},
                "strategy": {"type": "RollingUpdate",
                             "rollingUpdate": {"maxUnavailable": 0, "maxSurge": "25%"}},
                "template": {
                    "metadata": {"labels": {"app": "d1"}},
                    "spec": {
                        "containers": [{
                            "name": "nginx", "image": "nginx:1.25",
                            "ports": [{"containerPort": 80, "protocol": "TCP"}],
                            "resources": {"limits": {"memory": "128Mi"}}
                        }],
                        // map values keep their empty strings
                        "nodeSelector": {"disk": ""},
                        "tolerations": [{"key": "node.kubernetes.io/not-ready",
                                         "operator": "Exists", "effect": "NoExecute",
                                         "tolerationSeconds": 300}]
                    }
                }
            },
            "status": {}
        })
    );
    // the typed decoder of the rest of the server accepts the result
    serde_json::from_value::<k8s_openapi::api::apps::v1::Deployment>(got).unwrap();
}

#[test]
fn embedded_structs_are_inline() {
    let pod = core::Pod {
        spec: Some(core::PodSpec {
            volumes: vec![core::Volume {
                name: s("cfg"),
                volume_source: Some(core::VolumeSource {
                    config_map: Some(core::ConfigMapVolumeSource {
                        local_object_reference: Some(core::LocalObjectReference {
                            name: s("settings"),
                        }),
                        default_mode: Some(0o644),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
            }],
            containers: vec![core::Container {
                name: s("c"),
                readiness_probe: Some(core::Probe {
                    handler: Some(core::ProbeHandler {
                        http_get: Some(core::HttpGetAction {
                            path: s("/ready"),
                            port: Some(IntOrString {
                                r#type: Some(1),
                                int_val: Some(0),
                                str_val: s("http"),
                            }),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                    period_seconds: Some(5),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    };
    let got = decode(&wrap("v1", "Pod", pod.encode_to_vec())).unwrap();
    assert_eq!(
        got["spec"]["volumes"],
        json!([{"name": "cfg", "configMap": {"name": "settings", "defaultMode": 420}}])
    );
    assert_eq!(
        got["spec"]["containers"][0]["readinessProbe"],
        json!({"httpGet": {"path": "/ready", "port": "http"}, "periodSeconds": 5})
    );
}

#[test]
fn eviction_and_delete_options() {
    let ev = k8s_pb::api::policy::v1::Eviction {
        metadata: Some(meta::ObjectMeta {
            name: s("p1"),
            namespace: s("ns1"),
            ..Default::default()
        }),
        delete_options: Some(meta::DeleteOptions {
            grace_period_seconds: Some(0),
            propagation_policy: s("Background"),
            preconditions: Some(meta::Preconditions {
                uid: s("u-1"),
                ..Default::default()
            }),
            ..Default::default()
        }),
    };
    assert_eq!(
        decode(&wrap("policy/v1", "Eviction", ev.encode_to_vec())).unwrap(),
        json!({"apiVersion": "policy/v1", "kind": "Eviction",
               "metadata": {"name": "p1", "namespace": "ns1"},
               "deleteOptions": {"gracePeriodSeconds": 0, "propagationPolicy": "Background",
                                 "preconditions": {"uid": "u-1"}}})
    );
    // client-go sends DeleteOptions with the group of the deleted resource
    let opts = meta::DeleteOptions {
        grace_period_seconds: Some(30),
        ..Default::default()
    };
    for av in ["v1", "apps/v1", "meta.k8s.io/v1"] {
        let got = decode(&wrap(av, "DeleteOptions", opts.encode_to_vec())).unwrap();
        assert_eq!(got["gracePeriodSeconds"], 30, "{av}");
    }
}

#[test]
fn wire_details() {
    // repeated int32 (field 2), unpacked as Go writes them, and packed
    let unpacked = [0x10, 0x01, 0x10, 0x96, 0x01];
    let packed = [0x12, 0x03, 0x01, 0x96, 0x01];
    let name = "api.core.v1.ContainerRestartRuleOnExitCodes";
    let Some(field) = message(name).map(|m| &m.fields[1]) else {
        panic!("{name} in the schema")
    };
    assert_eq!(
        (field.json, field.card, field.ty),
        ("values", Card::Many, Ty::I32)
    );
    let want = json!({"values": [1, 150]});
    assert_eq!(decode_message(name, &unpacked).unwrap(), want);
    assert_eq!(decode_message(name, &packed).unwrap(), want);
    // zeros of value fields without omitempty are shown, as Go's JSON does
    let cs = core::ContainerStatus {
        name: s("c"),
        ready: Some(false),
        restart_count: Some(0),
        image: s(""),
        started: Some(false),
        ..Default::default()
    };
    assert_eq!(
        decode_message("api.core.v1.ContainerStatus", &cs.encode_to_vec()).unwrap(),
        json!({"name": "c", "ready": false, "restartCount": 0, "image": "", "started": false})
    );
    // negative int32s are sign-extended 10-byte varints
    let neg = meta::ObjectMeta {
        deletion_grace_period_seconds: Some(-1),
        ..Default::default()
    };
    assert_eq!(
        decode_message(
            "apimachinery.pkg.apis.meta.v1.ObjectMeta",
            &neg.encode_to_vec()
        )
        .unwrap(),
        json!({"deletionGracePeriodSeconds": -1})
    );
    // unknown field numbers are skipped, as Go's unmarshallers do
    let mut ns = core::Namespace {
        metadata: Some(meta::ObjectMeta {
            name: s("x"),
            ..Default::default()
        }),
        ..Default::default()
    }
    .encode_to_vec();
    ns.extend([
        0xf8, 0x3e, 0x07, 0x85, 0x3f, 1, 2, 3, 4, 0xfa, 0x3e, 0x01, 0x00,
    ]);
    assert_eq!(
        decode(&wrap("v1", "Namespace", ns)).unwrap(),
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "x"}})
    );
}

#[test]
fn bytes_are_base64() {
    let secret = core::Secret {
        metadata: Some(meta::ObjectMeta {
            name: s("creds"),
            ..Default::default()
        }),
        data: [
            ("password".to_string(), b"s3cr3t".to_vec()),
            ("empty".to_string(), vec![]),
            ("binary".to_string(), vec![0, 255, 128]),
        ]
        .into(),
        r#type: s("Opaque"),
        immutable: Some(false),
        ..Default::default()
    };
    assert_eq!(
        decode(&wrap("v1", "Secret", secret.encode_to_vec())).unwrap(),
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "creds"},
               "data": {"password": "czNjcjN0", "empty": "", "binary": "AP+A"},
               "type": "Opaque", "immutable": false})
    );
    let cm = core::ConfigMap {
        metadata: Some(meta::ObjectMeta {
            name: s("cfg"),
            ..Default::default()
        }),
        data: [("k".to_string(), "v".to_string())].into(),
        binary_data: [("b".to_string(), vec![1, 2])].into(),
        ..Default::default()
    };
    assert_eq!(
        decode(&wrap("v1", "ConfigMap", cm.encode_to_vec())).unwrap(),
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cfg"},
               "data": {"k": "v"}, "binaryData": {"b": "AQI="}})
    );
}

#[test]
fn refusals() {
    assert_eq!(decode(b"{\"kind\":\"Pod\"}"), Err(DecodeError::NoMagic));
    let job = wrap("batch/v1", "Job", vec![]);
    assert_eq!(
        decode(&job),
        Err(DecodeError::UnknownKind {
            api_version: "batch/v1".into(),
            kind: "Job".into()
        })
    );
    let mut truncated = wrap("v1", "Namespace", vec![0x0a, 0x05, 0x0a, 0x01]);
    assert!(matches!(decode(&truncated), Err(DecodeError::Wire { .. })));
    truncated.truncate(6);
    assert!(matches!(decode(&truncated), Err(DecodeError::Wire { .. })));
    // a string field sent as a varint
    let wrong = wrap("v1", "Namespace", vec![0x0a, 0x02, 0x08, 0x01]);
    let err = decode(&wrong).unwrap_err().to_string();
    assert!(err.contains("wire type 0, expected 2"), "{err}");
    let mut gz = Unknown {
        type_meta: Some(TypeMeta {
            api_version: s("v1"),
            kind: s("Namespace"),
        }),
        content_encoding: s("gzip"),
        ..Default::default()
    }
    .encode_to_vec();
    gz.splice(0..0, MAGIC.iter().copied());
    assert_eq!(
        decode(&gz),
        Err(DecodeError::ContentEncoding("gzip".into()))
    );
}

#[test]
fn every_stored_kind_has_a_schema() {
    for def in crate::resources::RESOURCES {
        assert!(
            message_for(&def.api_version(), def.kind).is_some(),
            "{} {}",
            def.api_version(),
            def.kind
        );
    }
    for (av, kind) in [
        ("autoscaling/v1", "Scale"),
        ("policy/v1", "Eviction"),
        ("v1", "Binding"),
    ] {
        assert!(message_for(av, kind).is_some(), "{av} {kind}");
    }
    // every message a field names is in the table
    for m in schema::MESSAGES {
        for f in m.fields {
            if let Ty::Msg(name) = f.ty {
                assert!(message(name).is_some(), "{}.{} -> {name}", m.name, f.json);
            }
        }
        assert!(
            m.fields.windows(2).all(|w| w[0].tag < w[1].tag),
            "{}",
            m.name
        );
    }
    assert!(schema::MESSAGES.windows(2).all(|w| w[0].name < w[1].name));
}

#[test]
fn encoding_round_trips_and_matches_upstream_types() {
    let d = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "d1", "namespace": "ns", "labels": {"app": "d1", "tier": "web"},
                     "creationTimestamp": "2025-01-01T00:00:00Z", "generation": 3,
                     "managedFields": [{"manager": "kubectl", "operation": "Update",
                                        "apiVersion": "apps/v1", "fieldsType": "FieldsV1",
                                        "time": "2025-01-01T00:00:00Z",
                                        "fieldsV1": {"f:spec": {"f:replicas": {}}}}]},
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": {"app": "d1"}},
            "strategy": {"type": "RollingUpdate",
                         "rollingUpdate": {"maxUnavailable": 0, "maxSurge": "25%"}},
            "template": {
                "metadata": {"labels": {"app": "d1"}},
                "spec": {
                    "containers": [{"name": "c", "image": "nginx",
                                    "resources": {"limits": {"memory": "1Gi"}},
                                    "readinessProbe": {"httpGet": {"path": "/", "port": 8080}}}],
                    "volumes": [{"name": "v", "configMap": {"name": "cm", "defaultMode": 420}}],
                    "terminationGracePeriodSeconds": -1
                }
            }
        },
        "status": {"conditions": [{"type": "Available", "status": "True",
                                   "lastUpdateTime": "2025-01-01T00:00:01Z",
                                   "lastTransitionTime": "2025-01-01T00:00:02Z"}]}
    });
    let bytes = encode(&d).unwrap();
    assert_eq!(decode(&bytes).unwrap(), d);
    // the same bytes through prost and the upstream field numbers
    let env = Unknown::decode(&bytes[4..]).unwrap();
    assert_eq!(env.type_meta.unwrap().kind.as_deref(), Some("Deployment"));
    let pb = apps::Deployment::decode(env.raw.unwrap().as_slice()).unwrap();
    let spec = pb.spec.unwrap();
    assert_eq!(spec.replicas, Some(0));
    let ru = spec.strategy.unwrap().rolling_update.unwrap();
    assert_eq!(
        (
            ru.max_unavailable.unwrap().int_val,
            ru.max_surge.unwrap().str_val
        ),
        (Some(0), s("25%"))
    );
    let meta = pb.metadata.unwrap();
    assert_eq!(
        meta.creation_timestamp.unwrap().seconds,
        Some(1_735_689_600)
    );
    assert_eq!(meta.labels["tier"], "web");
    let pod = spec.template.unwrap().spec.unwrap();
    assert_eq!(pod.termination_grace_period_seconds, Some(-1));
    let cm = pod.volumes[0]
        .volume_source
        .clone()
        .unwrap()
        .config_map
        .unwrap();
    assert_eq!(cm.local_object_reference.unwrap().name, s("cm"));
    assert_eq!(
        pod.containers[0].resources.clone().unwrap().limits["memory"].string,
        s("1Gi")
    );
}

#[test]
fn encoding_lists_status_and_watch_frames() {
    let list = json!({"apiVersion": "v1", "kind": "SecretList",
                      "metadata": {"resourceVersion": "7", "continue": "c"},
                      "items": [{"metadata": {"name": "a"}, "data": {"k": "AP+A"}, "type": "Opaque"}]});
    assert_eq!(decode(&encode(&list).unwrap()).unwrap(), list);
    let status = json!({"apiVersion": "v1", "kind": "Status", "metadata": {},
                        "status": "Failure", "message": "pods \"x\" not found",
                        "reason": "NotFound", "details": {"name": "x", "kind": "pods"},
                        "code": 404});
    assert_eq!(decode(&encode(&status).unwrap()).unwrap(), status);
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "resourceVersion": "9"}});
    let frame = watch_frame("ADDED", &pod).unwrap();
    let len = u32::from_be_bytes(frame[..4].try_into().unwrap()) as usize;
    assert_eq!(len, frame.len() - 4);
    let ev = meta::WatchEvent::decode(&frame[4..]).unwrap();
    assert_eq!(ev.r#type.as_deref(), Some("ADDED"));
    let raw = ev.object.unwrap().raw.unwrap();
    assert_eq!(decode(&raw).unwrap(), pod);
    // what has no schema, or does not fit it, is an error
    assert!(matches!(
        encode(&json!({"apiVersion": "v1", "kind": "APIResourceList"})),
        Err(EncodeError::UnknownKind { .. })
    ));
    assert!(matches!(
        encode(&json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": 3}})),
        Err(EncodeError::Value { .. })
    ));
}
