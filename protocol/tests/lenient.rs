//! Inbound leniency as the Java Arklet's fastjson has it (spec protocol §1.9, traps T13/T14):
//! empty body = null input, key spelling variants, scalar coercion, unknown keys ignored.

use std::collections::BTreeMap;

use koupleless_protocol::lenient::{DecodeError, LenientRequest, decode_request};
use koupleless_protocol::{
    BatchInstallBizRequest, BizOpRequest, BizState, HealthRequest, InstallBizRequest,
    InstallStrategy, QueryBizOpsRequest, StateChangeReason,
};

fn install(body: &str) -> InstallBizRequest {
    decode_request::<InstallBizRequest>(body.as_bytes())
        .unwrap_or_else(|e| panic!("{body}: {e}"))
        .unwrap_or_else(|| panic!("{body}: null input"))
}

/// What each request type makes of the null-ish and non-object bodies; the same for all.
fn body_shape<T: LenientRequest + std::fmt::Debug>(body: &[u8]) -> Result<bool, DecodeError> {
    decode_request::<T>(body).map(|v| v.is_some())
}

#[test]
fn body_shapes_for_every_request_type() {
    type Shape = fn(&[u8]) -> Result<bool, DecodeError>;
    let types: [(&str, Shape); 5] = [
        ("installBiz", body_shape::<InstallBizRequest>),
        ("uninstallBiz/switchBiz", body_shape::<BizOpRequest>),
        ("batchInstallBiz", body_shape::<BatchInstallBizRequest>),
        ("queryBizOps", body_shape::<QueryBizOpsRequest>),
        ("health", body_shape::<HealthRequest>),
    ];
    let cases: [(&[u8], Result<bool, &str>); 11] = [
        // curl/arkctl send no body for queryAllBiz and health (T13): Java's null input.
        (b"", Ok(false)),
        (b" \r\n\t", Ok(false)),
        (b"null", Ok(false)),
        (b"{}", Ok(true)),
        (b" {} \n", Ok(true)),
        (b"[1,2]", Err("not an object")),
        (b"\"x\"", Err("not an object")),
        (b"12", Err("not an object")),
        (b"{\"bizName\":", Err("syntax")),
        (b"\xff\xfe", Err("syntax")),
        (b"{} {}", Err("syntax")),
    ];
    for (name, decode) in types {
        for (body, want) in cases {
            let got = match decode(body) {
                Ok(present) => Ok(present),
                Err(DecodeError::NotAnObject(_)) => Err("not an object"),
                Err(DecodeError::Syntax(_)) => Err("syntax"),
                Err(DecodeError::Shape(e)) => panic!("{name}: shape error {e}"),
            };
            assert_eq!(got, want, "{name} {:?}", String::from_utf8_lossy(body));
        }
    }
}

#[test]
fn key_spelling_variants_of_every_field() {
    // fastjson smartMatch: case-insensitive, `_`/`-` ignored, `is` prefix stripped.
    let cases = [
        r#"{"bizName":"a","bizVersion":"1","bizUrl":"u","requestId":"r","installStrategy":"uninstallThenInstall","async":true}"#,
        r#"{"bizname":"a","bizversion":"1","bizurl":"u","requestid":"r","installstrategy":"uninstallThenInstall","isAsync":true}"#,
        r#"{"biz_name":"a","biz_version":"1","biz_url":"u","request_id":"r","install_strategy":"uninstallThenInstall","is_async":"true"}"#,
        r#"{"BIZ-NAME":"a","BIZ-VERSION":"1","BIZ-URL":"u","REQUEST-ID":"r","INSTALL-STRATEGY":"uninstallThenInstall","ASYNC":"TRUE"}"#,
        r#"{"BizName":"a","BizVersion":1,"BizUrl":"u","RequestId":"r","InstallStrategy":"uninstallThenInstall","Async":1}"#,
    ];
    for body in cases {
        let r = install(body);
        assert_eq!(r.biz_name.as_deref(), Some("a"), "{body}");
        assert_eq!(r.biz_version.as_deref(), Some("1"), "{body}");
        assert_eq!(r.biz_url.as_deref(), Some("u"), "{body}");
        assert_eq!(r.request_id.as_deref(), Some("r"), "{body}");
        assert_eq!(
            r.strategy(),
            InstallStrategy::UninstallThenInstall,
            "{body}"
        );
        assert!(r.r#async, "{body}");
    }
    let op: BizOpRequest =
        decode_request(br#"{"biz_name":"a","BIZVERSION":"1","is-async":"true","request_id":"r"}"#)
            .unwrap()
            .unwrap();
    assert_eq!(
        op,
        BizOpRequest {
            r#async: true,
            biz_name: Some("a".into()),
            biz_version: Some("1".into()),
            request_id: Some("r".into()),
        }
    );
    let q: QueryBizOpsRequest = decode_request(br#"{"REQUEST_ID":"req-42"}"#)
        .unwrap()
        .unwrap();
    assert_eq!(q.request_id.as_deref(), Some("req-42"));
    let h: HealthRequest =
        decode_request(br#"{"TYPE":"biz","Metrics":["cpu"],"biz-name":"b","bizversion":"2"}"#)
            .unwrap()
            .unwrap();
    assert_eq!(
        h,
        HealthRequest {
            kind: Some("biz".into()),
            metrics: Some(vec!["cpu".into()]),
            biz_name: Some("b".into()),
            biz_version: Some("2".into()),
        }
    );
    let b: BatchInstallBizRequest =
        decode_request(br#"{"BIZ_LIST":[{"BIZ_URL":"u1"},{"bizurl":"u2","is_async":true}]}"#)
            .unwrap()
            .unwrap();
    let urls: Vec<_> = b
        .biz_list
        .unwrap()
        .into_iter()
        .map(|i| (i.biz_url, i.r#async))
        .collect();
    assert_eq!(
        urls,
        [(Some("u1".into()), false), (Some("u2".into()), true)]
    );
}

#[test]
fn exact_key_wins_over_a_variant() {
    for body in [
        r#"{"bizName":"exact","biz_name":"variant"}"#,
        r#"{"biz_name":"variant","bizName":"exact"}"#,
        r#"{"BIZNAME":"variant","bizName":"exact"}"#,
    ] {
        assert_eq!(install(body).biz_name.as_deref(), Some("exact"), "{body}");
    }
}

#[test]
fn scalar_coercion() {
    let cases: [(&str, Option<bool>); 10] = [
        (r#"{"async":true}"#, Some(true)),
        (r#"{"async":"true"}"#, Some(true)),
        (r#"{"async":"True"}"#, Some(true)),
        (r#"{"async":"false"}"#, Some(false)),
        (r#"{"async":""}"#, Some(false)),
        (r#"{"async":1}"#, Some(true)),
        (r#"{"async":0}"#, Some(false)),
        (r#"{"async":null}"#, Some(false)),
        (r#"{"async":"yes"}"#, None),
        (r#"{"async":[true]}"#, None),
    ];
    for (body, want) in cases {
        let got = decode_request::<BizOpRequest>(body.as_bytes()).map(|r| r.unwrap().r#async);
        match want {
            Some(w) => assert_eq!(got, Ok(w), "{body}"),
            None => assert!(matches!(got, Err(DecodeError::Shape(_))), "{body}: {got:?}"),
        }
    }
    // Numbers and booleans into string fields, as fastjson's TypeUtils.castToString does.
    let r = install(
        r#"{"bizName":123,"bizVersion":1.0,"bizUrl":"u","requestId":true,"args":[1,"x",false],"envs":{"k":1,"b":true}}"#,
    );
    assert_eq!(r.biz_name.as_deref(), Some("123"));
    assert_eq!(r.biz_version.as_deref(), Some("1.0"));
    assert_eq!(r.request_id.as_deref(), Some("true"));
    assert_eq!(r.args, Some(vec!["1".into(), "x".into(), "false".into()]));
    let envs: BTreeMap<String, String> =
        [("b".into(), "true".into()), ("k".into(), "1".into())].into();
    assert_eq!(r.envs, Some(envs));
    // A single scalar where a list is expected is a one-element list.
    assert_eq!(install(r#"{"args":"--x"}"#).args, Some(vec!["--x".into()]));
    let h: HealthRequest = decode_request(br#"{"metrics":"jvm"}"#).unwrap().unwrap();
    assert_eq!(h.metrics, Some(vec!["jvm".into()]));
}

#[test]
fn unknown_keys_are_ignored() {
    // S003's moduleName/moduleVersion and MC's bizUrl on uninstall are not fields.
    let h: HealthRequest =
        decode_request(br#"{"type":"biz","moduleName":"biz-a","moduleVersion":"1.0.0"}"#)
            .unwrap()
            .unwrap();
    assert_eq!(
        h,
        HealthRequest {
            kind: Some("biz".into()),
            ..HealthRequest::default()
        }
    );
    let op: BizOpRequest = decode_request(
        br#"{"bizName":"a","bizVersion":"1","bizUrl":"file:///a.jar","x":{"y":[]}}"#,
    )
    .unwrap()
    .unwrap();
    assert_eq!(op.biz_name.as_deref(), Some("a"));
    let b: BatchInstallBizRequest = decode_request(br#"{"installRequests":[{"bizUrl":"u"}]}"#)
        .unwrap()
        .unwrap();
    assert_eq!(
        b.biz_list, None,
        "Java reports `bizList is null` for this body"
    );
}

#[test]
fn wrong_shapes_are_shape_errors_not_panics() {
    type Decode = fn(&[u8]) -> Option<DecodeError>;
    let cases: [(&[u8], Decode); 6] = [
        (br#"{"args":{"a":1}}"#, |b| {
            decode_request::<InstallBizRequest>(b).err()
        }),
        (br#"{"envs":["a"]}"#, |b| {
            decode_request::<InstallBizRequest>(b).err()
        }),
        (br#"{"bizName":{"a":1}}"#, |b| {
            decode_request::<BizOpRequest>(b).err()
        }),
        (br#"{"bizList":{"bizUrl":"u"}}"#, |b| {
            decode_request::<BatchInstallBizRequest>(b).err()
        }),
        (br#"{"bizList":[[1]]}"#, |b| {
            decode_request::<BatchInstallBizRequest>(b).err()
        }),
        (br#"{"metrics":{"cpu":true}}"#, |b| {
            decode_request::<HealthRequest>(b).err()
        }),
    ];
    for (body, decode) in cases {
        let err = decode(body);
        assert!(
            matches!(err, Some(DecodeError::Shape(_))),
            "{}: {err:?}",
            String::from_utf8_lossy(body)
        );
    }
}

#[test]
fn null_fields_are_absent_fields() {
    let r = install(r#"{"bizName":null,"bizVersion":null,"bizUrl":"u","args":null,"envs":null}"#);
    assert_eq!(
        r,
        InstallBizRequest {
            biz_url: Some("u".into()),
            ..InstallBizRequest::default()
        }
    );
    let b: BatchInstallBizRequest = decode_request(br#"{"bizList":null}"#).unwrap().unwrap();
    assert_eq!(b.biz_list, None);
}

#[test]
fn state_names_parse_case_and_punctuation_insensitively() {
    let states = [
        ("activated", BizState::Activated),
        ("ACTIVATED", BizState::Activated),
        ("Activated", BizState::Activated),
        ("de-activated", BizState::Deactivated),
        ("3", BizState::Unknown),
        ("", BizState::Unknown),
    ];
    for (text, want) in states {
        let got: BizState = serde_json::from_str(&format!("{text:?}")).unwrap();
        assert_eq!(got, want, "{text}");
    }
    let reasons = [
        ("Install Failed", StateChangeReason::InstallFailed),
        ("INSTALL_FAILED", StateChangeReason::InstallFailed),
        ("Uninstall Failed", StateChangeReason::UninstallFailed),
        ("UN_INSTALL_FAILED", StateChangeReason::UninstallFailed),
        ("un-install failed", StateChangeReason::UninstallFailed),
        ("whatever", StateChangeReason::Undefine),
    ];
    for (text, want) in reasons {
        let got: StateChangeReason = serde_json::from_str(&format!("{text:?}")).unwrap();
        assert_eq!(got, want, "{text}");
    }
}
