//! The `pods/log` subresource (`GET /api/v1/namespaces/<ns>/pods/<name>/log`),
//! as kube-apiserver's `LogREST`: decode and validate the `PodLogOptions`
//! query, find the Pod's container and Node, call the kubelet's
//! `/containerLogs/<ns>/<pod>/<container>` with the API server's client
//! certificate (see [`crate::kubelet_client`]) and stream its answer back
//! unchanged as `text/plain`, chunk by chunk as it arrives (so `kubectl logs
//! -f` follows). A client that goes away closes the kubelet connection.
//!
//! Answers as upstream:
//! - an option that does not parse: 400 BadRequest with Go's message
//!   (`strconv.ParseInt: parsing "x": invalid syntax`);
//! - invalid options: 422 Invalid on `PodLogOptions` (negative `tailLines`,
//!   `limitBytes` < 1, `sinceSeconds` < 1, both `sinceSeconds` and
//!   `sinceTime`);
//! - no such Pod: 404; no container given and the Pod has several: 400
//!   `a container name must be specified for pod p, choose one of: [a b]`
//!   (init and ephemeral containers listed too); an unknown container: 400
//!   `container c is not valid for pod p`;
//! - a Pod not bound to a Node: **204 No Content** with no body (upstream's
//!   `LogLocation` returns no location, which its streamer answers so;
//!   only exec/attach/portforward say "does not have a host assigned");
//! - no such Node: 404 `nodes "n" not found`; a Node without an address of
//!   a preferred type: 500 `no preferred addresses found; known addresses: [...]`;
//! - the kubelet unreachable: 500 without a reason, the message Go's HTTP
//!   client's error (`Get "https://...": dial tcp ...: connect: connection
//!   refused`);
//! - a kubelet error status (its body read up to 50000 bytes): 500 →
//!   500 InternalError `Internal error occurred: <body>`; 400 → 400
//!   BadRequest `<body>`; others as client-go's `NewGenericServerResponse`
//!   with resource `pods/log` and the Pod's name, e.g. 401 → 401
//!   Unauthorized `the server has asked for the client to provide
//!   credentials ( pods/log p)`, 403 → 403 Forbidden `<body> ( pods/log p)`,
//!   404 → 404 NotFound `the server could not find the requested resource
//!   ( pods/log p)`, 501 → 501 InternalError `an error on the server
//!   ("<body>") has prevented the request from succeeding ( pods/log p)`.
//!
//! Not played: the `stream` option (behind the alpha
//! `PodLogsQuerySplitStreams` gate upstream, off by default), websocket
//! upgrades, protobuf encoding of the errors (they are JSON).

use crate::api::App;
use crate::errors::{ApiError, ApiResult, Target};
use crate::resources::Storage;
use axum::body::Body;
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use http::{Method, StatusCode};
use serde_json::{Value, json};

/// How much of a kubelet's error answer is read (upstream's `maxReadLength`).
const MAX_ERROR_BODY: usize = 50_000;

/// The decoded `PodLogOptions` query.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PodLogOptions {
    /// `container`.
    pub container: String,
    /// `follow`.
    pub follow: bool,
    /// `previous`.
    pub previous: bool,
    /// `sinceSeconds`.
    pub since_seconds: Option<i64>,
    /// `sinceTime`, already in the RFC 3339 form (seconds, UTC) the API
    /// server forwards to the kubelet.
    pub since_time: Option<String>,
    /// `timestamps`.
    pub timestamps: bool,
    /// `tailLines`.
    pub tail_lines: Option<i64>,
    /// `limitBytes`.
    pub limit_bytes: Option<i64>,
    /// `insecureSkipTLSVerifyBackend`.
    pub insecure_skip_tls_verify_backend: bool,
}

/// The first value of `key` in the query (Go's `url.Values.Get`-like
/// conversion reads the first).
fn first<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// apimachinery's `Convert_Slice_string_To_bool`: anything but `0` or
/// `false` (any case) is true, even an empty value.
fn parse_bool(v: Option<&str>) -> bool {
    match v {
        None => false,
        Some(s) => !(s == "0" || s.eq_ignore_ascii_case("false")),
    }
}

/// `strconv.ParseInt(s, 10, 64)` with Go's error text.
fn parse_int(v: Option<&str>) -> Result<Option<i64>, String> {
    let Some(s) = v else { return Ok(None) };
    s.parse::<i64>().map(Some).map_err(|e| {
        let why = match e.kind() {
            std::num::IntErrorKind::PosOverflow | std::num::IntErrorKind::NegOverflow => {
                "value out of range"
            }
            _ => "invalid syntax",
        };
        format!("strconv.ParseInt: parsing {s:?}: {why}")
    })
}

/// metav1.Time's `UnmarshalQueryParameter`: empty or `null` is the zero
/// time; else RFC 3339. Forwarded as Go's `Format(time.RFC3339)` of it (the
/// fraction dropped; the server's zone is UTC here).
fn parse_time(v: Option<&str>) -> Result<Option<String>, String> {
    let Some(s) = v else { return Ok(None) };
    if s.is_empty() || s == "null" {
        return Ok(Some("0001-01-01T00:00:00Z".to_string()));
    }
    let t = chrono::DateTime::parse_from_rfc3339(s).map_err(|e| {
        // Go's message names the layout; the reason is chrono's
        format!("parsing time {s:?} as \"2006-01-02T15:04:05Z07:00\": {e}")
    })?;
    Ok(Some(
        t.with_timezone(&chrono::Utc)
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    ))
}

impl PodLogOptions {
    /// Decodes the query as the parameter codec does (first value of each
    /// key; unknown keys ignored); a value that does not parse is the
    /// message of a 400.
    pub fn from_query(query: &str) -> Result<Self, String> {
        let pairs: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
            .into_owned()
            .collect();
        let get = |k: &str| first(&pairs, k);
        Ok(PodLogOptions {
            container: get("container").unwrap_or("").to_string(),
            follow: parse_bool(get("follow")),
            previous: parse_bool(get("previous")),
            since_seconds: parse_int(get("sinceSeconds"))?,
            since_time: parse_time(get("sinceTime"))?,
            timestamps: parse_bool(get("timestamps")),
            tail_lines: parse_int(get("tailLines"))?,
            limit_bytes: parse_int(get("limitBytes"))?,
            insecure_skip_tls_verify_backend: parse_bool(get("insecureSkipTLSVerifyBackend")),
        })
    }

    /// upstream's `ValidatePodLogOptions`: (field, cause reason, message)
    /// for each error, in its order.
    pub fn validate(&self) -> Vec<(&'static str, &'static str, String)> {
        let mut errs = Vec::new();
        if let Some(n) = self.tail_lines.filter(|n| *n < 0) {
            errs.push((
                "tailLines",
                "FieldValueInvalid",
                format!("Invalid value: {n}: must be greater than or equal to 0"),
            ));
        }
        if let Some(n) = self.limit_bytes.filter(|n| *n < 1) {
            errs.push((
                "limitBytes",
                "FieldValueInvalid",
                format!("Invalid value: {n}: must be greater than 0"),
            ));
        }
        match (self.since_seconds, &self.since_time) {
            (Some(_), Some(_)) => errs.push((
                "",
                "FieldValueForbidden",
                "Forbidden: at most one of `sinceTime` or `sinceSeconds` may be specified".into(),
            )),
            (Some(n), None) if n < 1 => errs.push((
                "sinceSeconds",
                "FieldValueInvalid",
                format!("Invalid value: {n}: must be greater than 0"),
            )),
            _ => {}
        }
        errs
    }

    /// The kubelet's query, as `url.Values.Encode` writes it (sorted keys).
    pub fn kubelet_query(&self) -> String {
        let mut params: Vec<(&str, String)> = Vec::new();
        if self.follow {
            params.push(("follow", "true".into()));
        }
        if self.previous {
            params.push(("previous", "true".into()));
        }
        if self.timestamps {
            params.push(("timestamps", "true".into()));
        }
        if let Some(n) = self.since_seconds {
            params.push(("sinceSeconds", n.to_string()));
        }
        if let Some(t) = &self.since_time {
            params.push(("sinceTime", t.clone()));
        }
        if let Some(n) = self.tail_lines {
            params.push(("tailLines", n.to_string()));
        }
        if let Some(n) = self.limit_bytes {
            params.push(("limitBytes", n.to_string()));
        }
        params.sort_by(|a, b| a.0.cmp(b.0));
        let mut ser = form_urlencoded::Serializer::new(String::new());
        for (k, v) in &params {
            ser.append_pair(k, v);
        }
        ser.finish()
    }
}

/// `PodLogOptions "p" is invalid: <errors>` (422), as `errors.NewInvalid`
/// words it: each error `<field>: <message>` (an empty field still gets its
/// `: `), several in brackets.
fn invalid(name: &str, errs: &[(&'static str, &'static str, String)]) -> ApiError {
    let rendered: Vec<String> = errs.iter().map(|(f, _, m)| format!("{f}: {m}")).collect();
    let summary = if rendered.len() == 1 {
        rendered[0].clone()
    } else {
        format!("[{}]", rendered.join(", "))
    };
    let causes: Vec<Value> = errs
        .iter()
        .map(|(f, reason, m)| {
            let mut c = json!({"reason": reason, "message": m});
            if !f.is_empty() {
                c["field"] = json!(f);
            }
            c
        })
        .collect();
    ApiError {
        code: 422,
        reason: "Invalid",
        message: format!("PodLogOptions {name:?} is invalid: {summary}"),
        details: Some(json!({"name": name, "kind": "PodLogOptions", "causes": causes})),
    }
}

/// Go's `%s` of a `[]string`: `[a b]`.
fn go_list(names: &[&str]) -> String {
    format!("[{}]", names.join(" "))
}

/// The container to read (upstream's `validateContainer`).
fn container_of(pod: &Value, name: &str, asked: &str) -> ApiResult<String> {
    let names_in = |field: &str| -> Vec<&str> {
        pod["spec"][field]
            .as_array()
            .map(|a| a.iter().filter_map(|c| c["name"].as_str()).collect())
            .unwrap_or_default()
    };
    let regular = names_in("containers");
    let all: Vec<&str> = names_in("initContainers")
        .into_iter()
        .chain(regular.iter().copied())
        .chain(names_in("ephemeralContainers"))
        .collect();
    if asked.is_empty() {
        return match regular.as_slice() {
            [only] => Ok(only.to_string()),
            [] => Err(ApiError::bad_request(format!(
                "a container name must be specified for pod {name}"
            ))),
            _ => Err(ApiError::bad_request(format!(
                "a container name must be specified for pod {name}, choose one of: {}",
                go_list(&all)
            ))),
        };
    }
    if all.contains(&asked) {
        Ok(asked.to_string())
    } else {
        Err(ApiError::bad_request(format!(
            "container {asked} is not valid for pod {name}"
        )))
    }
}

/// The Node's address of the first preferred type (upstream's
/// `GetPreferredNodeAddress`).
fn node_address(node: &Value, preferred: &[String]) -> Result<String, String> {
    let addrs = node["status"]["addresses"].as_array();
    for ty in preferred {
        if let Some(a) = addrs
            .into_iter()
            .flatten()
            .find(|a| a["type"].as_str() == Some(ty.as_str()))
            .and_then(|a| a["address"].as_str())
        {
            return Ok(a.to_string());
        }
    }
    // Go's `%v` of the []NodeAddress: `[{InternalIP 10.0.0.1} ...]`
    let known: Vec<String> = addrs
        .into_iter()
        .flatten()
        .map(|a| {
            format!(
                "{{{} {}}}",
                a["type"].as_str().unwrap_or(""),
                a["address"].as_str().unwrap_or("")
            )
        })
        .collect();
    Err(format!(
        "no preferred addresses found; known addresses: [{}]",
        known.join(" ")
    ))
}

/// An error that is no `Status` upstream (e.g. a dial failure): 500 with
/// the error's text and no reason, as `ErrorToAPIStatus` answers it.
fn unknown_error(message: String) -> Response {
    let body = json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "code": 500,
    });
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        [(http::header::CONTENT_TYPE, "application/json")],
        serde_json::to_vec(&body).unwrap_or_default(),
    )
        .into_response()
}

/// A kubelet's error status as upstream's `GenericHttpResponseChecker`
/// turns it into a `Status`.
pub fn kubelet_error(code: u16, body: &str, pod: &str) -> ApiError {
    match code {
        500 => return ApiError::internal(body),
        400 => return ApiError::bad_request(body),
        _ => {}
    }
    let (reason, message): (&'static str, String) = match code {
        409 => ("Conflict", "the server reported a conflict".into()),
        404 => (
            "NotFound",
            "the server could not find the requested resource".into(),
        ),
        401 => (
            "Unauthorized",
            "the server has asked for the client to provide credentials".into(),
        ),
        403 => ("Forbidden", body.to_string()),
        406 if body.is_empty() || body == "unknown" => (
            "NotAcceptable",
            "the server was unable to respond with a content type that the client supports".into(),
        ),
        406 => ("NotAcceptable", body.to_string()),
        415 => ("UnsupportedMediaType", body.to_string()),
        405 => (
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource".into(),
        ),
        422 => (
            "Invalid",
            "the server rejected our request due to an error in our request".into(),
        ),
        503 => (
            "ServiceUnavailable",
            "the server is currently unable to handle the request".into(),
        ),
        504 => (
            "Timeout",
            "the server was unable to return a response in the time allotted, but may still be processing the request".into(),
        ),
        429 => (
            "TooManyRequests",
            "the server has received too many requests and has asked us to try again later".into(),
        ),
        c if c >= 500 => (
            "InternalError",
            format!("an error on the server ({body:?}) has prevented the request from succeeding"),
        ),
        c => (
            "",
            format!("the server responded with the status code {c} but did not return more information"),
        ),
    };
    ApiError {
        code,
        reason,
        // the verb is empty here upstream, hence the double space
        message: format!("{message} ( pods/log {pod})"),
        details: Some(json!({"name": pod, "kind": "pods/log"})),
    }
}

/// Reads at most `MAX_ERROR_BODY` bytes of a kubelet's error answer.
async fn read_error_body(body: Body) -> String {
    let mut out = Vec::new();
    let mut stream = body.into_data_stream();
    while out.len() < MAX_ERROR_BODY {
        match stream.next().await {
            Some(Ok(chunk)) => out.extend_from_slice(&chunk),
            _ => break,
        }
    }
    out.truncate(MAX_ERROR_BODY);
    String::from_utf8_lossy(&out).into_owned()
}

/// Serves `pods/<name>/log` in `ns`.
pub async fn serve(
    app: &App,
    method: &Method,
    ns: &str,
    name: &str,
    query: Option<&str>,
) -> ApiResult<Response> {
    if method != Method::GET {
        return Err(ApiError::method_not_allowed());
    }
    let opts = PodLogOptions::from_query(query.unwrap_or("")).map_err(ApiError::bad_request)?;
    let errs = opts.validate();
    if !errs.is_empty() {
        return Err(invalid(name, &errs));
    }
    let kubelet = &app.kubelet;
    let (path, host, port) = {
        let st = app.store.lock();
        let pod = st
            .get_ref(&(Storage::Pods, ns.to_string(), name.to_string()))
            .ok_or_else(|| {
                ApiError::not_found(Target {
                    group: "",
                    resource: "pods",
                    kind: "Pod",
                    name,
                })
            })?;
        let container = container_of(pod, name, &opts.container)?;
        let node_name = pod["spec"]["nodeName"].as_str().unwrap_or("");
        if node_name.is_empty() {
            return Ok(StatusCode::NO_CONTENT.into_response());
        }
        let node = st
            .get_ref(&(Storage::Nodes, String::new(), node_name.to_string()))
            .ok_or_else(|| {
                ApiError::not_found(Target {
                    group: "",
                    resource: "nodes",
                    kind: "Node",
                    name: node_name,
                })
            })?;
        let host = match node_address(node, &kubelet.config().preferred_address_types) {
            Ok(h) => h,
            Err(msg) => return Ok(unknown_error(msg)),
        };
        let port = node["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"]
            .as_i64()
            .filter(|p| *p > 0 && *p <= i64::from(u16::MAX))
            .map(|p| p as u16)
            .unwrap_or(kubelet.config().default_port);
        let (host, port) = match kubelet.config().address_override {
            Some(a) if a.port() == 0 => (a.ip().to_string(), port),
            Some(a) => (a.ip().to_string(), a.port()),
            None => (host, port),
        };
        let q = opts.kubelet_query();
        let mut path = format!("/containerLogs/{ns}/{name}/{container}");
        if !q.is_empty() {
            path.push('?');
            path.push_str(&q);
        }
        (path, host, port)
    };
    let resp = match kubelet
        .get(&host, port, &path, opts.insecure_skip_tls_verify_backend)
        .await
    {
        Ok(r) => r,
        Err(e) => return Ok(unknown_error(e.to_string())),
    };
    let (parts, body) = resp.into_parts();
    let code = parts.status.as_u16();
    if !(200..=206).contains(&code) {
        let text = read_error_body(body).await;
        return Err(kubelet_error(code, &text, name));
    }
    tracing::debug!(%ns, pod = %name, %host, port, %path, "streaming a kubelet's log");
    Ok((
        StatusCode::OK,
        [(http::header::CONTENT_TYPE, "text/plain")],
        body,
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_decode_as_the_parameter_codec() {
        let o = PodLogOptions::from_query(
            "container=c&follow=&previous=false&timestamps=TRUE&tailLines=5&limitBytes=10&sinceSeconds=30&tailLines=7",
        )
        .unwrap();
        assert_eq!(
            o,
            PodLogOptions {
                container: "c".into(),
                follow: true,
                previous: false,
                since_seconds: Some(30),
                since_time: None,
                timestamps: true,
                tail_lines: Some(5),
                limit_bytes: Some(10),
                insecure_skip_tls_verify_backend: false,
            }
        );
        assert_eq!(
            PodLogOptions::from_query("tailLines=abc").unwrap_err(),
            "strconv.ParseInt: parsing \"abc\": invalid syntax"
        );
        assert_eq!(
            PodLogOptions::from_query("limitBytes=99999999999999999999").unwrap_err(),
            "strconv.ParseInt: parsing \"99999999999999999999\": value out of range"
        );
        let t = PodLogOptions::from_query("sinceTime=2026-01-02T03:04:05.678%2B02:00").unwrap();
        assert_eq!(t.since_time.as_deref(), Some("2026-01-02T01:04:05Z"));
        let zero = PodLogOptions::from_query("sinceTime=").unwrap();
        assert_eq!(zero.since_time.as_deref(), Some("0001-01-01T00:00:00Z"));
        assert!(
            PodLogOptions::from_query("sinceTime=yesterday")
                .unwrap_err()
                .starts_with("parsing time \"yesterday\" as \"2006-01-02T15:04:05Z07:00\"")
        );
    }

    #[test]
    fn validation_table() {
        let cases: Vec<(&str, Vec<&str>)> = vec![
            ("", vec![]),
            ("tailLines=0&limitBytes=1&sinceSeconds=1", vec![]),
            ("tailLines=-1", vec!["tailLines"]),
            ("limitBytes=0", vec!["limitBytes"]),
            ("sinceSeconds=0", vec!["sinceSeconds"]),
            ("sinceSeconds=0&sinceTime=2026-01-01T00:00:00Z", vec![""]),
            (
                "tailLines=-1&limitBytes=-5",
                vec!["tailLines", "limitBytes"],
            ),
        ];
        for (q, want) in cases {
            let errs = PodLogOptions::from_query(q).unwrap().validate();
            let fields: Vec<&str> = errs.iter().map(|e| e.0).collect();
            assert_eq!(fields, want, "{q}");
        }
        let both = PodLogOptions::from_query("sinceSeconds=5&sinceTime=2026-01-01T00:00:00Z")
            .unwrap()
            .validate();
        let e = invalid("p", &both);
        assert_eq!(
            e.message,
            "PodLogOptions \"p\" is invalid: : Forbidden: at most one of `sinceTime` or `sinceSeconds` may be specified"
        );
        assert_eq!(e.code, 422);
        assert!(
            e.details.as_ref().unwrap()["causes"][0]
                .get("field")
                .is_none()
        );
        let two = PodLogOptions::from_query("tailLines=-1&limitBytes=0")
            .unwrap()
            .validate();
        assert_eq!(
            invalid("p", &two).message,
            "PodLogOptions \"p\" is invalid: [tailLines: Invalid value: -1: must be greater than or equal to 0, limitBytes: Invalid value: 0: must be greater than 0]"
        );
    }

    #[test]
    fn kubelet_query_is_sorted_and_escaped() {
        let o = PodLogOptions::from_query(
            "timestamps=true&follow=1&tailLines=3&sinceTime=2026-01-02T03:04:05Z&limitBytes=9&previous=true&container=x",
        )
        .unwrap();
        assert_eq!(
            o.kubelet_query(),
            "follow=true&limitBytes=9&previous=true&sinceTime=2026-01-02T03%3A04%3A05Z&tailLines=3&timestamps=true"
        );
        assert_eq!(PodLogOptions::default().kubelet_query(), "");
    }

    #[test]
    fn containers_as_validate_container() {
        let pod = json!({"spec": {
            "initContainers": [{"name": "init"}],
            "containers": [{"name": "a"}, {"name": "b"}],
        }});
        assert_eq!(
            container_of(&pod, "p", "").unwrap_err().message,
            "a container name must be specified for pod p, choose one of: [init a b]"
        );
        assert_eq!(container_of(&pod, "p", "init").unwrap(), "init");
        assert_eq!(container_of(&pod, "p", "b").unwrap(), "b");
        let e = container_of(&pod, "p", "zz").unwrap_err();
        assert_eq!(
            (e.code, e.message.as_str()),
            (400, "container zz is not valid for pod p")
        );
        let one = json!({"spec": {"containers": [{"name": "only"}]}});
        assert_eq!(container_of(&one, "p", "").unwrap(), "only");
        let none = json!({"spec": {"containers": []}});
        assert_eq!(
            container_of(&none, "p", "").unwrap_err().message,
            "a container name must be specified for pod p"
        );
    }

    #[test]
    fn node_addresses_by_preference() {
        let prefs: Vec<String> = ["InternalIP", "ExternalIP", "Hostname"]
            .map(String::from)
            .to_vec();
        let node = json!({"status": {"addresses": [
            {"type": "Hostname", "address": "n1"},
            {"type": "InternalIP", "address": "10.0.0.7"},
        ]}});
        assert_eq!(node_address(&node, &prefs).unwrap(), "10.0.0.7");
        let only_dns =
            json!({"status": {"addresses": [{"type": "InternalDNS", "address": "n1.local"}]}});
        assert_eq!(
            node_address(&only_dns, &prefs).unwrap_err(),
            "no preferred addresses found; known addresses: [{InternalDNS n1.local}]"
        );
        assert_eq!(
            node_address(&json!({}), &prefs).unwrap_err(),
            "no preferred addresses found; known addresses: []"
        );
    }

    #[test]
    fn kubelet_errors_as_the_response_checker() {
        let cases: Vec<(u16, &str, u16, &str, &str)> = vec![
            (
                500,
                "boom",
                500,
                "InternalError",
                "Internal error occurred: boom",
            ),
            (
                400,
                "container x is waiting to start",
                400,
                "BadRequest",
                "container x is waiting to start",
            ),
            (
                401,
                "Unauthorized",
                401,
                "Unauthorized",
                "the server has asked for the client to provide credentials ( pods/log p)",
            ),
            (
                403,
                "Forbidden (user=u, verb=get, resource=nodes, subresource=log)",
                403,
                "Forbidden",
                "Forbidden (user=u, verb=get, resource=nodes, subresource=log) ( pods/log p)",
            ),
            (
                404,
                "no such module",
                404,
                "NotFound",
                "the server could not find the requested resource ( pods/log p)",
            ),
            (
                501,
                "exec is not supported",
                501,
                "InternalError",
                "an error on the server (\"exec is not supported\") has prevented the request from succeeding ( pods/log p)",
            ),
            (
                418,
                "",
                418,
                "",
                "the server responded with the status code 418 but did not return more information ( pods/log p)",
            ),
        ];
        for (code, body, want_code, reason, message) in cases {
            let e = kubelet_error(code, body, "p");
            assert_eq!(
                (e.code, e.reason, e.message.as_str()),
                (want_code, reason, message),
                "{code}"
            );
        }
        assert_eq!(
            kubelet_error(404, "x", "p").details.unwrap(),
            json!({"name": "p", "kind": "pods/log"})
        );
    }
}
