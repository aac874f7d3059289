//! Request routing and the verbs: get, list, watch, create, update, patch,
//! delete, deletecollection, plus the `status`, `binding`, `finalize`,
//! `scale` and `eviction` subresources.

use crate::discovery;
use crate::errors::{ApiError, ApiResult, Target, cause};
use crate::kinds::{self, Sub};
use crate::patch::{self, PatchType};
use crate::protobuf;
use crate::resources::{self, ResourceDef, Storage};
use crate::scale;
use crate::selectors::{FieldSelector, LabelSelector, labels_of};
use crate::ssa;
use crate::store::{EventType, HistoryError, Key, Snapshot, State, Store};
use crate::table::{self, IncludeObject};
use crate::typed;
use axum::body::Body;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use chrono::{SecondsFormat, Utc};
use http::{HeaderMap, Method, StatusCode};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// Server settings that tests may tune.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Interval between watch bookmarks (when the client allows them).
    pub bookmark_interval: Duration,
    /// Watch timeout when the client gives none (the real server picks a
    /// random value around 30 minutes).
    pub default_watch_timeout: Duration,
    /// How long a request for a resourceVersion newer than the store's
    /// waits before answering 504 "Too large resource version".
    pub too_large_wait: Duration,
    /// The DefaultTolerationSeconds admission plugin's settings.
    pub default_toleration_seconds: crate::admission::DefaultTolerationSeconds,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            bookmark_interval: Duration::from_secs(60),
            default_watch_timeout: Duration::from_secs(1800),
            too_large_wait: Duration::from_secs(3),
            default_toleration_seconds: Default::default(),
        }
    }
}

/// Shared server state.
#[derive(Debug)]
pub struct App {
    /// The store.
    pub store: Store,
    /// Settings.
    pub settings: Settings,
    /// `host:port` the server listens on.
    pub address: String,
    /// Token authentication and RBAC authorization, when enforced.
    pub rbac: Option<crate::rbac::Tokens>,
    /// The client `pods/log` calls kubelets with.
    pub kubelet: crate::kubelet_client::KubeletClient,
    /// Flips to true on shutdown (ends watches).
    pub shutdown: tokio::sync::watch::Receiver<bool>,
}

type Query = HashMap<String, String>;

fn now() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn json_response(code: StatusCode, v: &Value) -> Response {
    let body = serde_json::to_vec(v).unwrap_or_default();
    (
        code,
        [(http::header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response()
}

fn with_warnings(mut resp: Response, warnings: &[String]) -> Response {
    for w in warnings {
        let v = format!("299 - {:?}", w);
        if let Ok(h) = http::HeaderValue::from_str(&v) {
            resp.headers_mut().append(http::header::WARNING, h);
        }
    }
    resp
}

/// How to render objects for this request (from the Accept header).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Render {
    Object,
    Table,
    Metadata,
}

fn negotiate(headers: &HeaderMap) -> ApiResult<Render> {
    let accept = headers
        .get(http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .trim();
    if accept.is_empty() {
        return Ok(Render::Object);
    }
    for range in accept.split(',') {
        let mut parts = range.split(';').map(str::trim);
        let mt = parts.next().unwrap_or("").to_ascii_lowercase();
        let params: HashMap<String, String> = parts
            .filter_map(|p| {
                p.split_once('=')
                    .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            })
            .collect();
        if mt == protobuf::CONTENT_TYPE {
            // objects only: `handle` encodes the JSON answer as protobuf
            if !params.contains_key("as") {
                return Ok(Render::Object);
            }
            continue;
        }
        if !(mt == "application/json" || mt == "*/*" || mt == "application/*") {
            continue;
        }
        match params.get("as").map(String::as_str) {
            None => return Ok(Render::Object),
            Some("Table") => {
                if params.get("g").map(String::as_str) == Some("meta.k8s.io")
                    && matches!(
                        params.get("v").map(String::as_str),
                        Some("v1") | Some("v1beta1")
                    )
                {
                    return Ok(Render::Table);
                }
            }
            Some("PartialObjectMetadata") | Some("PartialObjectMetadataList") => {
                if params.get("g").map(String::as_str) == Some("meta.k8s.io") {
                    return Ok(Render::Metadata);
                }
            }
            Some(_) => {}
        }
    }
    Err(ApiError::not_acceptable(accept))
}

/// Whether the client accepts Kubernetes protobuf but not JSON: its answers
/// are then encoded as protobuf (see [`crate::protobuf`]).
fn accepts_only_protobuf(headers: &HeaderMap) -> bool {
    let accept = headers
        .get(http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mut proto = false;
    for range in accept.split(',') {
        let mut parts = range.split(';');
        let mt = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        match mt.as_str() {
            "application/json" | "*/*" | "application/*" => return false,
            // `as=Table` etc. are JSON-only here: such a request is refused
            // (406) in JSON, as the real server answers what it cannot negotiate
            protobuf::CONTENT_TYPE if !parts.any(|p| p.trim().starts_with("as=")) => proto = true,
            _ => {}
        }
    }
    proto
}

/// Re-encodes a JSON answer as protobuf; what has no protobuf form (e.g.
/// discovery documents) is 406, as JSON is not acceptable.
async fn to_protobuf(resp: Response) -> Response {
    let is_json = resp
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/json"));
    if !is_json {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    let encoded = match axum::body::to_bytes(body, usize::MAX).await {
        Ok(b) => serde_json::from_slice::<Value>(&b)
            .map_err(|e| e.to_string())
            .and_then(|v| protobuf::encode(&v).map_err(|e| e.to_string())),
        Err(e) => Err(e.to_string()),
    };
    match encoded {
        Ok(bytes) => {
            parts.headers.insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static(protobuf::CONTENT_TYPE),
            );
            parts.headers.remove(http::header::CONTENT_LENGTH);
            Response::from_parts(parts, Body::from(bytes))
        }
        Err(why) => {
            let mut e = ApiError::not_acceptable(protobuf::CONTENT_TYPE);
            e.message = format!("{} (this answer has no protobuf form: {why})", e.message);
            e.into_response()
        }
    }
}

fn parse_query(uri: &http::Uri) -> Query {
    let mut q = HashMap::new();
    if let Some(s) = uri.query() {
        for (k, v) in form_urlencoded::parse(s.as_bytes()) {
            q.insert(k.into_owned(), v.into_owned());
        }
    }
    q
}

fn qbool(q: &Query, k: &str) -> Option<bool> {
    q.get(k).map(|v| v == "true" || v == "1")
}

/// The entry point: every request comes here.
pub async fn handle(app: Arc<App>, req: axum::extract::Request) -> Response {
    let (parts, body) = req.into_parts();
    let body = match axum::body::to_bytes(body, 64 * 1024 * 1024).await {
        Ok(b) => b,
        Err(e) => {
            return ApiError::bad_request(format!("reading request body: {e}")).into_response();
        }
    };
    let (method, uri) = (parts.method.clone(), parts.uri.clone());
    let proto = accepts_only_protobuf(&parts.headers);
    if let Some(tokens) = &app.rbac {
        match authn_authz(&app, tokens, &parts, &body) {
            Ok(None) => {}
            Ok(Some(Ok(resp))) => return resp,
            Err(e) | Ok(Some(Err(e))) => {
                tracing::debug!(%method, %uri, code = e.code, reason = e.reason, message = %e.message, "request refused");
                let resp = e.into_response();
                return if proto { to_protobuf(resp).await } else { resp };
            }
        }
    }
    let resp = match route(app, parts.method, parts.uri, parts.headers, body).await {
        Ok(r) => r,
        Err(e) => {
            tracing::debug!(%method, %uri, code = e.code, reason = e.reason, message = %e.message, "request refused");
            let resp = e.into_response();
            return if proto { to_protobuf(resp).await } else { resp };
        }
    };
    tracing::debug!(%method, %uri, status = resp.status().as_u16(), "request served");
    if proto { to_protobuf(resp).await } else { resp }
}

/// Authenticates and authorizes a request (see [`crate::rbac`]); answers
/// the access reviews itself (`Ok(Some(..))`), else lets it through
/// (`Ok(None)`).
#[allow(clippy::type_complexity)]
fn authn_authz(
    app: &App,
    tokens: &crate::rbac::Tokens,
    parts: &http::request::Parts,
    body: &Bytes,
) -> ApiResult<Option<ApiResult<Response>>> {
    use crate::rbac;
    let st = app.store.lock();
    let authz = parts
        .headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let user = tokens
        .authenticate(authz, &st)
        .map_err(|_| rbac::unauthorized())?;
    let path = parts.uri.path();
    let info = rbac::request_info(parts.method.as_str(), path, parts.uri.query().unwrap_or(""));
    if let rbac::Decision::Deny(reason) = rbac::authorize(&st, &user, &info) {
        let e = rbac::forbidden(&user, &info, &reason);
        tokens.record_denial(rbac::Denial {
            user: user.name.clone(),
            request: info,
            message: e.message.clone(),
        });
        return Err(e);
    }
    tokens.record_grant(&user, &info);
    let review = match path.trim_end_matches('/') {
        "/apis/authorization.k8s.io/v1/subjectaccessreviews" => false,
        "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews" => true,
        _ => return Ok(None),
    };
    if parts.method != Method::POST {
        return Ok(Some(Err(ApiError::method_not_allowed())));
    }
    let answer = decode_body(&parts.headers, body)
        .and_then(|b| rbac::access_review(&st, &b, review, &user))
        .map(|v| json_response(StatusCode::CREATED, &v));
    Ok(Some(answer))
}

async fn route(
    app: Arc<App>,
    method: Method,
    uri: http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    let path = uri.path().trim_end_matches('/').to_string();
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let q = parse_query(&uri);
    let is_get = method == Method::GET;
    // Non-resource paths.
    match segs.as_slice() {
        [] => {
            return Ok(json_response(
                StatusCode::OK,
                &json!({"paths": ["/api", "/api/v1", "/apis", "/healthz", "/livez", "/openapi/v3", "/readyz", "/version"]}),
            ));
        }
        ["healthz" | "livez" | "readyz"] if is_get => {
            return Ok((
                StatusCode::OK,
                [(http::header::CONTENT_TYPE, "text/plain")],
                "ok",
            )
                .into_response());
        }
        ["version"] if is_get => return Ok(json_response(StatusCode::OK, &discovery::version())),
        ["api"] if is_get => {
            return Ok(json_response(
                StatusCode::OK,
                &discovery::api_versions(&app.address),
            ));
        }
        ["api", "v1"] if is_get => {
            return Ok(json_response(
                StatusCode::OK,
                &discovery::resource_list("", "v1"),
            ));
        }
        ["apis"] if is_get => {
            return Ok(json_response(StatusCode::OK, &discovery::api_group_list()));
        }
        ["apis", g] if is_get => {
            return discovery::api_group(g)
                .map(|v| json_response(StatusCode::OK, &v))
                .ok_or_else(ApiError::no_route);
        }
        ["apis", g, v] if is_get => {
            if resources::group_version_exists(g, v) {
                return Ok(json_response(
                    StatusCode::OK,
                    &discovery::resource_list(g, v),
                ));
            }
            return Err(ApiError::no_route());
        }
        ["apis", "authentication.k8s.io", "v1", "tokenreviews"] => {
            return crate::reviews::token_review(&app, &method, &headers, &body);
        }
        // with RBAC enforced these are answered before routing
        ["apis", "authorization.k8s.io", "v1", r] if r.ends_with("subjectaccessreviews") => {
            return crate::reviews::access_review_unenforced(&app, &method, &headers, &body, r);
        }
        ["openapi", "v3"] if is_get => {
            return Ok(json_response(StatusCode::OK, &discovery::openapi_v3_root()));
        }
        ["openapi", "v3", rest @ ..] if is_get => {
            return discovery::openapi_v3_gv(&rest.join("/"))
                .map(|v| json_response(StatusCode::OK, &v))
                .ok_or_else(ApiError::no_route);
        }
        _ => {}
    }
    let (group, version, rest): (&str, &str, &[&str]) = match segs.as_slice() {
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return Err(ApiError::no_route()),
    };
    let (watch_prefix, rest) = match rest {
        ["watch", r @ ..] => (true, r),
        r => (false, r),
    };
    // Resolve namespace / resource / name / subresource.
    let lookup = |plural: &str| resources::find(group, version, plural);
    let (def, ns, name, sub): (&ResourceDef, Option<String>, Option<String>, Option<String>) =
        match rest {
            ["namespaces", ns, plural, tail @ ..]
                if lookup(plural).is_some_and(|d| d.namespaced) =>
            {
                let def = lookup(plural).expect("checked");
                match tail {
                    [] => (def, Some(ns.to_string()), None, None),
                    [name] => (def, Some(ns.to_string()), Some(name.to_string()), None),
                    [name, sub] => (
                        def,
                        Some(ns.to_string()),
                        Some(name.to_string()),
                        Some(sub.to_string()),
                    ),
                    _ => return Err(ApiError::no_route()),
                }
            }
            [plural, tail @ ..] if lookup(plural).is_some() => {
                let def = lookup(plural).expect("checked");
                match (def.namespaced, tail) {
                    (_, []) => (def, None, None, None),
                    (false, [name]) => (def, None, Some(name.to_string()), None),
                    (false, [name, sub]) => {
                        (def, None, Some(name.to_string()), Some(sub.to_string()))
                    }
                    _ => return Err(ApiError::no_route()),
                }
            }
            _ => return Err(ApiError::no_route()),
        };
    let sub = match sub.as_deref() {
        None => Sub::Main,
        Some("status") if def.has_status => Sub::Status,
        Some("finalize") if def.storage == Storage::Namespaces => Sub::Finalize,
        Some("binding") if def.storage == Storage::Pods => {
            if method != Method::POST {
                return Err(ApiError::method_not_allowed());
            }
            let name = name.expect("binding has a name");
            let ns = ns.expect("pods are namespaced");
            return binding(&app, def, &ns, &name, &body, &headers, &q);
        }
        Some("scale") if scale::has_scale(def) => {
            let r = Req {
                app: &app,
                def,
                ns: ns.as_deref(),
                name: name.as_deref(),
                sub: Sub::Scale,
                q: &q,
                headers: &headers,
                body: &body,
            };
            return scale_subresource(&r, &method);
        }
        Some("log") if def.storage == Storage::Pods => {
            let ns = ns.expect("pods are namespaced");
            let name = name.expect("log has a name");
            return crate::pod_log::serve(&app, &method, &ns, &name, uri.query()).await;
        }
        Some("eviction") if def.storage == Storage::Pods => {
            if method != Method::POST {
                return Err(ApiError::method_not_allowed());
            }
            let r = Req {
                app: &app,
                def,
                ns: ns.as_deref(),
                name: name.as_deref(),
                sub: Sub::Main,
                q: &q,
                headers: &headers,
                body: &body,
            };
            return eviction(&r);
        }
        Some(_) => return Err(ApiError::no_route()),
    };
    let r = Req {
        app: &app,
        def,
        ns: ns.as_deref(),
        name: name.as_deref(),
        sub,
        q: &q,
        headers: &headers,
        body: &body,
    };
    if watch_prefix {
        if method != Method::GET || sub != Sub::Main {
            return Err(ApiError::method_not_allowed());
        }
        return watch(&r).await;
    }
    match (method, name.is_some()) {
        (Method::GET, false) => {
            if qbool(&q, "watch") == Some(true) {
                watch(&r).await
            } else {
                list(&r).await
            }
        }
        (Method::GET, true) => {
            if qbool(&q, "watch") == Some(true) {
                return Err(ApiError::bad_request(
                    "watch is not supported on a single object path; use a fieldSelector on metadata.name",
                ));
            }
            get(&r)
        }
        (Method::POST, false) if sub == Sub::Main => {
            if def.namespaced && ns.is_none() {
                return Err(ApiError::method_not_allowed());
            }
            create(&r)
        }
        (Method::PUT, true) => update(&r),
        (Method::PATCH, true) if sub != Sub::Finalize => patch_object(&r),
        (Method::DELETE, true) if sub == Sub::Main => delete(&r),
        (Method::DELETE, false) if sub == Sub::Main => {
            if !def.verbs.contains(&"deletecollection") || (def.namespaced && ns.is_none()) {
                return Err(ApiError::method_not_allowed());
            }
            delete_collection(&r)
        }
        _ => Err(ApiError::method_not_allowed()),
    }
}

struct Req<'a> {
    app: &'a Arc<App>,
    def: &'static ResourceDef,
    ns: Option<&'a str>,
    name: Option<&'a str>,
    sub: Sub,
    q: &'a Query,
    headers: &'a HeaderMap,
    body: &'a Bytes,
}

impl Req<'_> {
    fn target<'b>(&self, name: &'b str) -> Target<'b> {
        Target {
            group: self.def.group,
            resource: self.def.plural,
            kind: self.def.kind,
            name,
        }
    }
    fn key(&self, name: &str) -> Key {
        (
            self.def.storage,
            self.ns.unwrap_or("").to_string(),
            name.to_string(),
        )
    }
    fn dry_run(&self) -> ApiResult<bool> {
        match self.q.get("dryRun").map(String::as_str) {
            None | Some("") => Ok(false),
            Some("All") => Ok(true),
            Some(other) => Err(ApiError::bad_request(format!(
                "unsupported dryRun value {other:?}: only \"All\""
            ))),
        }
    }
    fn field_validation(&self) -> ApiResult<crate::typed::FieldValidation> {
        crate::typed::FieldValidation::parse(self.q.get("fieldValidation").map(String::as_str))
    }
    fn manager(&self) -> String {
        if let Some(m) = self.q.get("fieldManager").filter(|m| !m.is_empty()) {
            return m.clone();
        }
        // The real default: the printable part of the User-Agent up to the
        // first '/' (empty without a User-Agent).
        let ua = self
            .headers
            .get(http::header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let m = ua.split('/').next().unwrap_or(ua);
        m.chars().filter(|c| !c.is_control()).take(128).collect()
    }
}

fn target_of<'a>(def: &'static ResourceDef, name: &'a str) -> Target<'a> {
    Target {
        group: def.group,
        resource: def.plural,
        kind: def.kind,
        name,
    }
}

fn target_static<'a>(def: &'static ResourceDef, name: &'a str) -> Target<'a> {
    Target {
        group: def.group,
        resource: def.plural,
        kind: def.kind,
        name,
    }
}

/// Renders a stored object in the API version of `def`.
pub fn view(def: &ResourceDef, obj: &Value) -> Value {
    if def.is_events_v1() {
        kinds::event_to_v1(obj)
    } else {
        obj.clone()
    }
}

/// Brings an incoming object of `def` into storage form.
fn to_storage(def: &ResourceDef, obj: Value) -> Value {
    if def.is_events_v1() {
        kinds::event_from_v1(&obj)
    } else {
        obj
    }
}

fn parse_body(r: &Req<'_>) -> ApiResult<Value> {
    decode_body(r.headers, r.body)
}

/// Decodes a request body by its Content-Type: JSON, YAML or Kubernetes
/// protobuf (see [`crate::protobuf`]); the result is a JSON object.
pub(crate) fn decode_body(headers: &HeaderMap, body: &[u8]) -> ApiResult<Value> {
    let ct = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json");
    let base = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let v: Value = match base.as_str() {
        "application/json" | "" | "*/*" => serde_json::from_slice(body).map_err(|e| {
            ApiError::bad_request(format!("couldn't get version/kind; json parse error: {e}"))
        })?,
        "application/yaml" => serde_norway::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("yaml parse error: {e}")))?,
        protobuf::CONTENT_TYPE => {
            protobuf::decode(body).map_err(|e| ApiError::bad_request(e.to_string()))?
        }
        _ => {
            return Err(ApiError::unsupported_media_type(
                ct,
                &[
                    "application/json",
                    "application/yaml",
                    protobuf::CONTENT_TYPE,
                ],
            ));
        }
    };
    if !v.is_object() {
        return Err(ApiError::bad_request(
            "the request body is not a JSON object",
        ));
    }
    Ok(v)
}

/// Checks apiVersion/kind of a body against the endpoint (missing ones are
/// filled from the URL, as the real decoder does).
fn check_type(def: &ResourceDef, obj: &mut Value) -> ApiResult<()> {
    let want_av = def.api_version();
    match obj["apiVersion"].as_str() {
        None | Some("") => obj["apiVersion"] = json!(want_av),
        Some(av) if av == want_av => {}
        Some(av) => {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({av}) does not match the expected API version ({want_av})"
            )));
        }
    }
    match obj["kind"].as_str() {
        None | Some("") => obj["kind"] = json!(def.kind),
        Some(k) if k == def.kind => {}
        Some(k) => {
            return Err(ApiError::bad_request(format!(
                "the kind in the data ({k}) does not match the expected kind ({})",
                def.kind
            )));
        }
    }
    if !obj["metadata"].is_object() {
        if obj["metadata"].is_null() {
            obj["metadata"] = json!({});
        } else {
            return Err(ApiError::bad_request("metadata must be an object"));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------- reads

fn get(r: &Req<'_>) -> ApiResult<Response> {
    let name = r.name.expect("get has a name");
    let render = negotiate(r.headers)?;
    let obj = {
        let st = r.app.store.lock();
        st.get(&r.key(name))
    };
    let obj = obj.ok_or_else(|| ApiError::not_found(r.target(name)))?;
    let out = match render {
        Render::Object => view(r.def, &obj),
        Render::Metadata => table::partial_metadata(&obj),
        Render::Table => table::table(
            r.def,
            &[&obj],
            |o| view(r.def, o),
            IncludeObject::parse(r.q.get("includeObject").map(String::as_str)),
            json!({"resourceVersion": obj["metadata"]["resourceVersion"]}),
        ),
    };
    Ok(json_response(StatusCode::OK, &out))
}

fn parse_rv(s: &str) -> ApiResult<u64> {
    s.parse::<u64>().map_err(|_| ApiError {
        code: 400,
        reason: "BadRequest",
        message: format!("invalid resource version: {s:?}"),
        details: None,
    })
}

fn too_large(rv: u64, current: u64) -> ApiError {
    let mut e = ApiError::timeout(format!(
        "Too large resource version: {rv}, current: {current}"
    ));
    e.details = Some(json!({
        "causes": [{"reason": "ResourceVersionTooLarge", "message": "Too large resource version"}],
        "retryAfterSeconds": 1
    }));
    e
}

async fn wait_for_rv(app: &App, rv: u64) -> ApiResult<()> {
    let mut rx = app.store.subscribe();
    let deadline = tokio::time::Instant::now() + app.settings.too_large_wait;
    loop {
        let current = app.store.lock().rv;
        if current >= rv {
            return Ok(());
        }
        match tokio::time::timeout_at(deadline, rx.changed()).await {
            Ok(Ok(())) => continue,
            _ => return Err(too_large(rv, app.store.lock().rv)),
        }
    }
}

fn encode_continue(snapshot: u64, offset: usize) -> String {
    format!("koupleless.{snapshot}.{offset}")
}

fn decode_continue(tok: &str) -> ApiResult<(u64, usize)> {
    let bad = || ApiError::bad_request(format!("invalid continue token {tok:?}"));
    let rest = tok.strip_prefix("koupleless.").ok_or_else(bad)?;
    let (a, b) = rest.split_once('.').ok_or_else(bad)?;
    Ok((a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?))
}

fn list_options(r: &Req<'_>) -> ApiResult<(LabelSelector, FieldSelector)> {
    let ls = LabelSelector::parse(r.q.get("labelSelector").map(String::as_str).unwrap_or(""))?;
    let fs = FieldSelector::parse(
        r.q.get("fieldSelector").map(String::as_str).unwrap_or(""),
        r.def,
    )?;
    Ok((ls, fs))
}

fn invalid_list_option(field: &str, value: &str, why: &str) -> ApiError {
    ApiError {
        code: 422,
        reason: "Invalid",
        message: format!("ListOptions.meta.k8s.io \"\" is invalid: {field}: {why}"),
        details: Some(json!({"kind": "ListOptions", "group": "meta.k8s.io",
            "causes": [{"reason": "FieldValueInvalid", "message": why, "field": field, "value": value}]})),
    }
}

async fn list(r: &Req<'_>) -> ApiResult<Response> {
    let render = negotiate(r.headers)?;
    let (ls, fs) = list_options(r)?;
    let limit = match r.q.get("limit") {
        Some(l) if !l.is_empty() => {
            let n: i64 = l
                .parse()
                .map_err(|_| ApiError::bad_request(format!("invalid limit {l:?}")))?;
            if n > 0 { Some(n as usize) } else { None }
        }
        _ => None,
    };
    let rv_param = r.q.get("resourceVersion").map(String::as_str).unwrap_or("");
    let rvm =
        r.q.get("resourceVersionMatch")
            .map(String::as_str)
            .unwrap_or("");
    let cont = r.q.get("continue").map(String::as_str).unwrap_or("");
    if !rvm.is_empty() && rv_param.is_empty() {
        return Err(invalid_list_option(
            "resourceVersionMatch",
            rvm,
            "Forbidden: resourceVersionMatch is forbidden unless resourceVersion is provided",
        ));
    }
    if !rvm.is_empty() && rvm != "Exact" && rvm != "NotOlderThan" {
        return Err(invalid_list_option(
            "resourceVersionMatch",
            rvm,
            &format!("Unsupported value: {rvm:?}: supported values: \"Exact\", \"NotOlderThan\""),
        ));
    }
    if !cont.is_empty() && !rv_param.is_empty() && rv_param != "0" {
        return Err(invalid_list_option(
            "resourceVersion",
            rv_param,
            "Forbidden: specifying resource version is not allowed when using continue",
        ));
    }
    if rvm == "Exact" && rv_param == "0" {
        return Err(invalid_list_option(
            "resourceVersionMatch",
            rvm,
            "Forbidden: resourceVersionMatch \"exact\" is forbidden for resourceVersion \"0\"",
        ));
    }
    type Items = Arc<Vec<Arc<Value>>>;
    let (rv, items, filtered, offset): (u64, Items, bool, usize) = if !cont.is_empty() {
        let (id, offset) = decode_continue(cont)?;
        let st = r.app.store.lock();
        match st.snapshots.get(&id) {
            Some(s) => (s.rv, s.items.clone(), s.filtered, offset),
            None => {
                return Err(ApiError::expired(
                    "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list.",
                ));
            }
        }
    } else {
        if !rv_param.is_empty() && rv_param != "0" {
            let want = parse_rv(rv_param)?;
            let current = r.app.store.lock().rv;
            if rvm == "Exact" {
                if want < current {
                    return Err(ApiError::expired(format!(
                        "The resourceVersion for the provided list is too old (this test server serves lists only at the current resourceVersion {current}, not at {want})."
                    )));
                }
                if want > current {
                    wait_for_rv(r.app, want).await?;
                }
            } else if want > current {
                wait_for_rv(r.app, want).await?;
            }
        }
        let st = r.app.store.lock();
        if rvm == "Exact" {
            let want = parse_rv(rv_param)?;
            if want != st.rv {
                return Err(ApiError::expired(format!(
                    "The resourceVersion for the provided list is too old (this test server serves lists only at the current resourceVersion {}, not at {want}).",
                    st.rv
                )));
            }
        }
        let items = st.list(r.def.storage, r.ns, |o| {
            ls.matches(&labels_of(o)) && fs.matches(o)
        });
        (st.rv, Arc::new(items), !ls.is_empty() || !fs.is_empty(), 0)
    };
    let end = match limit {
        Some(l) => (offset + l).min(items.len()),
        None => items.len(),
    };
    let page: &[Arc<Value>] = items.get(offset..end).unwrap_or_default();
    let mut meta = json!({"resourceVersion": rv.to_string()});
    if end < items.len() {
        let id = if cont.is_empty() {
            let mut st = r.app.store.lock();
            st.save_snapshot(Snapshot {
                rv,
                items: items.clone(),
                filtered,
            })
        } else {
            decode_continue(cont)?.0
        };
        meta["continue"] = json!(encode_continue(id, end));
        if !filtered {
            meta["remainingItemCount"] = json!(items.len() - end);
        }
    }
    let body = match render {
        Render::Object => {
            let head = json!({"kind": r.def.list_kind(), "apiVersion": r.def.api_version(), "metadata": meta});
            // Items of a typed list carry no apiVersion/kind, as upstream.
            if r.def.is_events_v1() {
                write_list(&head, page, |o, out| {
                    serde_json::to_writer(out, &WithoutTypeMeta(&view(r.def, o)))
                })
            } else {
                write_list(&head, page, |o, out| {
                    serde_json::to_writer(out, &WithoutTypeMeta(o))
                })
            }
        }
        Render::Metadata => {
            let head = json!({"kind": "PartialObjectMetadataList", "apiVersion": "meta.k8s.io/v1", "metadata": meta});
            write_list(&head, page, |o, out| {
                serde_json::to_writer(
                    out,
                    &json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": &o["metadata"]}),
                )
            })
        }
        Render::Table => {
            let objs: Vec<&Value> = page.iter().map(|o| &**o).collect();
            serde_json::to_vec(&table::table(
                r.def,
                &objs,
                |o| view(r.def, o),
                IncludeObject::parse(r.q.get("includeObject").map(String::as_str)),
                meta,
            ))
            .unwrap_or_default()
        }
    };
    Ok((
        StatusCode::OK,
        [(http::header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response())
}

/// An object serialized without `apiVersion` and `kind`.
struct WithoutTypeMeta<'a>(&'a Value);

impl serde::Serialize for WithoutTypeMeta<'_> {
    fn serialize<S: serde::Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        match self.0 {
            Value::Object(m) => {
                let mut map = ser.serialize_map(None)?;
                for (k, v) in m {
                    if k != "apiVersion" && k != "kind" {
                        map.serialize_entry(k, v)?;
                    }
                }
                map.end()
            }
            other => other.serialize(ser),
        }
    }
}

/// Serializes a list without copying its items: `head` (kind, apiVersion,
/// metadata) followed by `"items": [...]`.
fn write_list(
    head: &Value,
    items: &[Arc<Value>],
    item: impl Fn(&Value, &mut Vec<u8>) -> serde_json::Result<()>,
) -> Vec<u8> {
    let mut out = serde_json::to_vec(head).unwrap_or_else(|_| b"{}".to_vec());
    out.pop(); // the closing brace
    if out.len() > 1 {
        out.push(b',');
    }
    out.extend_from_slice(b"\"items\":[");
    for (i, o) in items.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        let _ = item(o, &mut out);
    }
    out.extend_from_slice(b"]}");
    out
}

// ---------------------------------------------------------------- watch

struct WatchSpec {
    def: &'static ResourceDef,
    ns: Option<String>,
    ls: LabelSelector,
    fs: FieldSelector,
    render: Render,
    include: IncludeObject,
    bookmarks: bool,
    /// Frames of `WatchEvent`s in protobuf rather than lines of JSON.
    proto: bool,
}

impl WatchSpec {
    fn passes(&self, obj: &Value) -> bool {
        self.ls.matches(&labels_of(obj)) && self.fs.matches(obj)
    }

    fn render_obj(&self, obj: &Value) -> Value {
        match self.render {
            Render::Object => view(self.def, obj),
            Render::Metadata => table::partial_metadata(obj),
            Render::Table => table::table(
                self.def,
                &[obj],
                |o| view(self.def, o),
                self.include,
                json!({"resourceVersion": obj["metadata"]["resourceVersion"]}),
            ),
        }
    }

    fn line(&self, etype: &str, obj: &Value) -> Bytes {
        if self.proto {
            return self.frame(etype, &self.render_obj(obj));
        }
        let mut v = format!("{{\"type\":\"{etype}\",\"object\":").into_bytes();
        let res = if self.render == Render::Object && !self.def.is_events_v1() {
            serde_json::to_writer(&mut v, obj)
        } else {
            serde_json::to_writer(&mut v, &self.render_obj(obj))
        };
        if res.is_err() {
            v.extend_from_slice(b"null");
        }
        v.extend_from_slice(b"}\n");
        Bytes::from(v)
    }

    /// A protobuf watch frame; an object without a protobuf form ends the
    /// stream with an ERROR event.
    fn frame(&self, etype: &str, obj: &Value) -> Bytes {
        match protobuf::watch_frame(etype, obj) {
            Ok(b) => Bytes::from(b),
            Err(e) => Self::error_line(&ApiError::internal(e.to_string()), true),
        }
    }

    fn bookmark(&self, rv: u64, initial_end: bool) -> Bytes {
        let mut meta = json!({"resourceVersion": rv.to_string()});
        if initial_end {
            meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        let obj = match self.render {
            Render::Object => {
                json!({"kind": self.def.kind, "apiVersion": self.def.api_version(), "metadata": meta})
            }
            Render::Metadata | Render::Table => {
                json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": meta})
            }
        };
        if self.proto {
            return self.frame("BOOKMARK", &obj);
        }
        let mut v =
            serde_json::to_vec(&json!({"type": "BOOKMARK", "object": obj})).unwrap_or_default();
        v.push(b'\n');
        Bytes::from(v)
    }

    fn error_line(e: &ApiError, proto: bool) -> Bytes {
        if proto {
            return protobuf::watch_frame("ERROR", &e.status())
                .map(Bytes::from)
                .unwrap_or_default();
        }
        let mut v =
            serde_json::to_vec(&json!({"type": "ERROR", "object": e.status()})).unwrap_or_default();
        v.push(b'\n');
        Bytes::from(v)
    }
}

async fn watch(r: &Req<'_>) -> ApiResult<Response> {
    let render = negotiate(r.headers)?;
    let proto = accepts_only_protobuf(r.headers);
    let (ls, mut fs) = list_options(r)?;
    if let Some(name) = r.name {
        // legacy /watch/.../<name> path
        fs.0.push(crate::selectors::FieldReq {
            field: "metadata.name".into(),
            negate: false,
            value: name.to_string(),
        });
    }
    let rv_param = r.q.get("resourceVersion").cloned().unwrap_or_default();
    let rvm = r.q.get("resourceVersionMatch").cloned().unwrap_or_default();
    let bookmarks = qbool(r.q, "allowWatchBookmarks") == Some(true);
    let send_initial = qbool(r.q, "sendInitialEvents");
    if let Some(si) = send_initial {
        if rvm != "NotOlderThan" {
            return Err(invalid_list_option(
                "resourceVersionMatch",
                &rvm,
                "Forbidden: sendInitialEvents requires setting resourceVersionMatch to NotOlderThan",
            ));
        }
        if si && !bookmarks {
            return Err(invalid_list_option(
                "allowWatchBookmarks",
                "false",
                "Required value: sendInitialEvents requires setting allowWatchBookmarks to true",
            ));
        }
    } else if !rvm.is_empty() {
        return Err(invalid_list_option(
            "resourceVersionMatch",
            &rvm,
            "Forbidden: resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided",
        ));
    }
    let timeout = match r.q.get("timeoutSeconds") {
        Some(t) if !t.is_empty() => {
            let n: u64 = t
                .parse()
                .map_err(|_| ApiError::bad_request(format!("invalid timeoutSeconds {t:?}")))?;
            // 0 means "the server's default", as upstream
            if n == 0 {
                r.app.settings.default_watch_timeout
            } else {
                Duration::from_secs(n)
            }
        }
        _ => r.app.settings.default_watch_timeout,
    };
    let spec = WatchSpec {
        def: r.def,
        ns: r.ns.map(str::to_string),
        ls,
        fs,
        render,
        include: IncludeObject::parse(r.q.get("includeObject").map(String::as_str)),
        bookmarks,
        proto,
    };
    let explicit_rv = if rv_param.is_empty() || rv_param == "0" {
        None
    } else {
        Some(parse_rv(&rv_param)?)
    };
    let mut prelude: Vec<Bytes> = Vec::new();
    let mut error: Option<ApiError> = None;
    if let Some(want) = explicit_rv
        && let Err(e) = wait_for_rv(r.app, want).await
    {
        error = Some(e);
    }
    let start_rv;
    {
        let st = r.app.store.lock();
        let initial = match send_initial {
            Some(si) => si,
            None => explicit_rv.is_none(),
        };
        if initial {
            for o in st.list(r.def.storage, r.ns, |o| spec.passes(o)) {
                prelude.push(spec.line("ADDED", &o));
            }
            start_rv = st.rv;
            if send_initial == Some(true) {
                prelude.push(spec.bookmark(st.rv, true));
            }
        } else {
            start_rv = match explicit_rv {
                Some(rv) => rv,
                None => st.rv,
            };
            if error.is_none()
                && let Err(HistoryError::TooOld { oldest }) = st.events_since(start_rv)
            {
                error = Some(ApiError::expired(format!(
                    "too old resource version: {start_rv} ({})",
                    oldest
                )));
            }
        }
    }
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(64);
    let store_rx = r.app.store.subscribe();
    let mut shutdown = r.app.shutdown.clone();
    let bookmark_interval = r.app.settings.bookmark_interval;
    let app_arc = r.app.clone();
    tokio::spawn(async move {
        let mut store_rx = store_rx;
        for line in prelude {
            if tx.send(line).await.is_err() {
                return;
            }
        }
        if let Some(e) = error {
            let _ = tx.send(WatchSpec::error_line(&e, proto)).await;
            return;
        }
        let deadline = tokio::time::Instant::now() + timeout;
        let mut last_rv = start_rv;
        let mut next_bookmark = tokio::time::Instant::now() + bookmark_interval;
        loop {
            let evs = {
                let st = app_arc.store.lock();
                st.events_since(last_rv)
            };
            match evs {
                Err(HistoryError::TooOld { oldest }) => {
                    let e = ApiError::expired(format!(
                        "too old resource version: {last_rv} ({oldest})"
                    ));
                    let _ = tx.send(WatchSpec::error_line(&e, proto)).await;
                    return;
                }
                Ok(evs) => {
                    for ev in evs {
                        last_rv = ev.rv;
                        if ev.storage != spec.def.storage {
                            continue;
                        }
                        if let Some(ns) = &spec.ns
                            && *ns != ev.namespace
                        {
                            continue;
                        }
                        let cur = ev.etype != EventType::Deleted && spec.passes(&ev.object);
                        let old = ev.prev.as_ref().is_some_and(|p| spec.passes(p));
                        let line = match (cur, old) {
                            (true, false) => Some(spec.line("ADDED", &ev.object)),
                            (true, true) => Some(spec.line("MODIFIED", &ev.object)),
                            (false, true) => {
                                if ev.etype == EventType::Deleted {
                                    Some(spec.line("DELETED", &ev.object))
                                } else {
                                    let mut o = ev.prev.as_deref().cloned().unwrap_or_default();
                                    o["metadata"]["resourceVersion"] = json!(ev.rv.to_string());
                                    Some(spec.line("DELETED", &o))
                                }
                            }
                            (false, false) => None,
                        };
                        if let Some(l) = line
                            && tx.send(l).await.is_err()
                        {
                            return;
                        }
                    }
                }
            }
            tokio::select! {
                res = store_rx.changed() => { if res.is_err() { return; } }
                _ = tokio::time::sleep_until(deadline) => {
                    if spec.bookmarks {
                        let rv = app_arc.store.lock().rv.max(last_rv);
                        // only advertise versions whose events were delivered
                        let rv = if rv == last_rv { rv } else { last_rv };
                        let _ = tx.send(spec.bookmark(rv, false)).await;
                    }
                    return;
                }
                _ = tokio::time::sleep_until(next_bookmark), if spec.bookmarks => {
                    next_bookmark = tokio::time::Instant::now() + bookmark_interval;
                    // deliver pending events first, then the bookmark
                    let pending = app_arc.store.lock().rv > last_rv;
                    if !pending && tx.send(spec.bookmark(last_rv, false)).await.is_err() {
                        return;
                    }
                }
                _ = shutdown.changed() => { return; }
                _ = tx.closed() => { return; }
            }
        }
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<Bytes, std::convert::Infallible>(b), rx))
    });
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header(
            http::header::CONTENT_TYPE,
            if proto {
                "application/vnd.kubernetes.protobuf;stream=watch"
            } else {
                "application/json"
            },
        )
        .header(http::header::CACHE_CONTROL, "no-cache, private")
        .body(Body::from_stream(stream))
        .expect("valid response"))
}

// ---------------------------------------------------------------- writes

/// Per-request write context.
struct WriteCtx {
    manager: String,
    api_version: String,
    now: String,
    dry_run: bool,
    /// Mutating admission for pods (applied after managedFields are
    /// computed, so nobody owns what it adds, as upstream).
    tolerations: crate::admission::DefaultTolerationSeconds,
}

impl WriteCtx {
    fn of(r: &Req<'_>) -> ApiResult<Self> {
        Ok(WriteCtx {
            manager: r.manager(),
            api_version: r.def.api_version(),
            now: now(),
            dry_run: r.dry_run()?,
            tolerations: r.app.settings.default_toleration_seconds,
        })
    }
}

/// Who computes managedFields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Managed {
    /// An update by `WriteCtx::manager`.
    Update,
    /// Already computed (server-side apply).
    Preset,
}

fn scope(def: &ResourceDef, sub: Sub) -> ssa::Scope {
    match sub {
        Sub::Main if def.has_status => ssa::Scope::NoStatus,
        Sub::Main => ssa::Scope::All,
        Sub::Scale => ssa::Scope::NoStatus,
        Sub::Status => ssa::Scope::Status,
        Sub::Finalize => ssa::Scope::Finalize,
    }
}

fn meta_str<'a>(obj: &'a Value, field: &str) -> &'a str {
    obj["metadata"][field].as_str().unwrap_or("")
}

fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    uuid::Uuid::new_v4().as_bytes()[..5]
        .iter()
        .map(|b| ALPHABET[(*b as usize) % ALPHABET.len()] as char)
        .collect()
}

fn ns_def() -> &'static ResourceDef {
    resources::find("", "v1", "namespaces").expect("namespaces are served")
}

fn def_of_storage(s: Storage) -> &'static ResourceDef {
    resources::RESOURCES
        .iter()
        .find(|d| d.storage == s)
        .expect("every storage is served")
}

fn is_terminating(ns_obj: &Value) -> bool {
    !ns_obj["metadata"]["deletionTimestamp"].is_null() || ns_obj["status"]["phase"] == "Terminating"
}

fn ensure_namespace(st: &State, def: &'static ResourceDef, ns: &str, name: &str) -> ApiResult<()> {
    match st.get_ref(&(Storage::Namespaces, String::new(), ns.to_string())) {
        None => Err(ApiError::not_found(target_static(ns_def(), ns))),
        Some(n) if is_terminating(n) => {
            let mut e = ApiError::forbidden(
                target_static(def, name),
                &format!(
                    "unable to create new content in namespace {ns} because it is being terminated"
                ),
            );
            if let Some(d) = e.details.as_mut() {
                d["causes"] = json!([{"reason": "NamespaceTerminating", "message": format!("namespace {ns} is being terminated"), "field": "metadata.namespace"}]);
            }
            Err(e)
        }
        Some(_) => Ok(()),
    }
}

fn set_namespace(def: &ResourceDef, obj: &mut Value, ns: Option<&str>) -> ApiResult<()> {
    if def.namespaced {
        let ns = ns.unwrap_or("");
        let body_ns = meta_str(obj, "namespace");
        if !body_ns.is_empty() && body_ns != ns {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
        obj["metadata"]["namespace"] = json!(ns);
    } else if let Some(m) = obj["metadata"].as_object_mut() {
        m.remove("namespace");
    }
    Ok(())
}

fn do_create(
    st: &mut State,
    def: &'static ResourceDef,
    ns: Option<&str>,
    mut obj: Value,
    w: &WriteCtx,
    managed: Managed,
) -> ApiResult<Value> {
    set_namespace(def, &mut obj, ns)?;
    if !meta_str(&obj, "resourceVersion").is_empty() {
        return Err(ApiError::internal(
            "resourceVersion should not be set on objects to be created",
        ));
    }
    let mut generated = false;
    if meta_str(&obj, "name").is_empty() {
        let gen_name = meta_str(&obj, "generateName").to_string();
        if !gen_name.is_empty() {
            let base: String = gen_name.chars().take(58).collect();
            obj["metadata"]["name"] = json!(format!("{base}{}", random_suffix()));
            generated = true;
        }
    }
    let meta = obj["metadata"]
        .as_object_mut()
        .expect("metadata is an object");
    for k in [
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "selfLink",
        "generation",
    ] {
        meta.remove(k);
    }
    meta.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
    meta.insert("creationTimestamp".into(), json!(w.now));
    if meta
        .get("managedFields")
        .is_some_and(|m| m.as_array().is_some_and(|a| a.is_empty()))
    {
        meta.remove("managedFields");
    }
    kinds::apply_defaults(def, &mut obj);
    let name = meta_str(&obj, "name").to_string();
    let errs = kinds::validate(def, &obj, None);
    if !errs.is_empty() {
        return Err(ApiError::invalid(target_of(def, &name), errs));
    }
    if def.namespaced {
        ensure_namespace(st, def, ns.unwrap_or(""), &name)?;
    }
    let key: Key = (
        def.storage,
        ns.filter(|_| def.namespaced).unwrap_or("").to_string(),
        name.clone(),
    );
    if st.contains(&key) {
        let mut e = ApiError::already_exists(target_of(def, &name));
        if generated {
            e.message
                .push_str(", the server was not able to generate a unique name for the object");
        }
        return Err(e);
    }
    kinds::prepare_create(def, &mut obj, st);
    if managed == Managed::Update {
        ssa::record_update(
            def.kind,
            scope(def, Sub::Main),
            None,
            &mut obj,
            &w.manager,
            &w.api_version,
            "",
            &w.now,
        );
    }
    if def.storage == Storage::Pods {
        w.tolerations.admit(&mut obj);
    }
    if w.dry_run {
        return Ok(obj);
    }
    Ok(st.put(key, obj))
}

/// The shared tail of update, patch and apply on an existing object.
#[allow(clippy::too_many_arguments)]
fn finish_update(
    st: &mut State,
    def: &'static ResourceDef,
    key: &Key,
    sub: Sub,
    old: &Value,
    mut new: Value,
    w: &WriteCtx,
    managed: Managed,
) -> ApiResult<Value> {
    let name = key.2.as_str();
    new["apiVersion"] = old["apiVersion"].clone();
    new["kind"] = old["kind"].clone();
    if !new["metadata"].is_object() {
        new["metadata"] = json!({});
    }
    // decoding applies defaults (and the v1 conversions) to every body
    kinds::apply_defaults(def, &mut new);
    kinds::isolate(def, sub, &mut new, old);
    if def.storage == Storage::Pods && sub == Sub::Main {
        // mutating admission runs before validation; what it re-adds is
        // unchanged from `old`, so no manager takes it over
        w.tolerations.admit(&mut new);
    }
    {
        let nm = new["metadata"]
            .as_object_mut()
            .expect("metadata is an object");
        for k in [
            "name",
            "namespace",
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generation",
            "generateName",
        ] {
            match old["metadata"].get(k) {
                Some(v) if !v.is_null() => {
                    nm.insert(k.to_string(), v.clone());
                }
                _ => {
                    if k != "generateName" {
                        nm.remove(k);
                    }
                }
            }
        }
        nm.remove("selfLink");
        nm.insert(
            "resourceVersion".into(),
            old["metadata"]["resourceVersion"].clone(),
        );
    }
    if def.has_generation && matches!(sub, Sub::Main | Sub::Scale) && kinds::spec_changed(&new, old)
    {
        let g = old["metadata"]["generation"].as_i64().unwrap_or(0) + 1;
        new["metadata"]["generation"] = json!(g);
    }
    if !old["metadata"]["deletionTimestamp"].is_null() {
        let old_f: Vec<&Value> = old["metadata"]["finalizers"]
            .as_array()
            .map(|a| a.iter().collect())
            .unwrap_or_default();
        let added: Vec<String> = new["metadata"]["finalizers"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter(|f| !old_f.contains(f))
                    .map(|f| f.as_str().unwrap_or("").to_string())
                    .collect()
            })
            .unwrap_or_default();
        if !added.is_empty() {
            return Err(ApiError::invalid(
                target_of(def, name),
                vec![cause(
                    "FieldValueForbidden",
                    "metadata.finalizers",
                    format!(
                        "Forbidden: no new finalizers can be added if the object is being deleted, found new finalizers {added:?}"
                    ),
                )],
            ));
        }
    }
    let errs = kinds::validate(def, &new, Some(old));
    if !errs.is_empty() {
        return Err(ApiError::invalid(target_of(def, name), errs));
    }
    if managed == Managed::Update {
        ssa::record_update(
            def.kind,
            scope(def, sub),
            Some(old),
            &mut new,
            &w.manager,
            &w.api_version,
            sub.name().unwrap_or(""),
            &w.now,
        );
    }
    if same_but_timestamps(&new, old) {
        // Nothing changed: no write, no new resourceVersion, no event.
        return Ok(old.clone());
    }
    if w.dry_run {
        return Ok(new);
    }
    let no_finalizers = new["metadata"]["finalizers"]
        .as_array()
        .is_none_or(|a| a.is_empty());
    let deleting = !old["metadata"]["deletionTimestamp"].is_null();
    let no_grace = old["metadata"]["deletionGracePeriodSeconds"]
        .as_i64()
        .unwrap_or(0)
        == 0;
    if no_finalizers && deleting && no_grace {
        // Deleted instead of updated: the DELETED event carries the last
        // stored state, as etcd's delete does.
        let gone = st.remove(key).expect("exists");
        after_delete(st, key);
        return Ok(gone);
    }
    Ok(st.put(key.clone(), new))
}

/// Equal once managedFields timestamps are ignored (a re-apply of the same
/// configuration is not a write upstream either).
fn same_but_timestamps(a: &Value, b: &Value) -> bool {
    if a == b {
        return true;
    }
    let strip = |v: &Value| {
        let mut v = v.clone();
        if let Some(list) = v["metadata"]["managedFields"].as_array_mut() {
            for e in list {
                if let Some(m) = e.as_object_mut() {
                    m.remove("time");
                }
            }
        }
        v
    };
    strip(a) == strip(b)
}

fn check_body_name(obj: &mut Value, name: &str) -> ApiResult<()> {
    let body_name = meta_str(obj, "name");
    if !body_name.is_empty() && body_name != name {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({body_name}) does not match the name on the URL ({name})"
        )));
    }
    obj["metadata"]["name"] = json!(name);
    Ok(())
}

fn create(r: &Req<'_>) -> ApiResult<Response> {
    let mut obj = parse_body(r)?;
    check_type(r.def, &mut obj)?;
    let (obj, warnings) = typed::check(r.def, obj, r.field_validation()?)?;
    let obj = to_storage(r.def, obj);
    if r.def.is_events_v1() {
        let errs = kinds::events_v1_validate(&view(r.def, &obj));
        if !errs.is_empty() {
            return Err(ApiError::invalid(r.target(meta_str(&obj, "name")), errs));
        }
    }
    let w = WriteCtx::of(r)?;
    let out = {
        let mut st = r.app.store.lock();
        do_create(&mut st, r.def, r.ns, obj, &w, Managed::Update)?
    };
    r.app.store.notify(0);
    Ok(with_warnings(
        json_response(StatusCode::CREATED, &view(r.def, &out)),
        &warnings,
    ))
}

fn update(r: &Req<'_>) -> ApiResult<Response> {
    let name = r.name.expect("update has a name");
    let mut obj = parse_body(r)?;
    check_type(r.def, &mut obj)?;
    check_body_name(&mut obj, name)?;
    let body_ns = meta_str(&obj, "namespace");
    if r.def.namespaced && !body_ns.is_empty() && Some(body_ns) != r.ns {
        return Err(ApiError::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        ));
    }
    let (obj, warnings) = typed::check(r.def, obj, r.field_validation()?)?;
    let obj = to_storage(r.def, obj);
    let w = WriteCtx::of(r)?;
    let key = r.key(name);
    let (out, created) = {
        let mut st = r.app.store.lock();
        match st.get(&key) {
            None => {
                if r.def.create_on_update && r.sub == Sub::Main {
                    let mut obj = obj;
                    if let Some(m) = obj["metadata"].as_object_mut() {
                        m.remove("resourceVersion");
                    }
                    (
                        do_create(&mut st, r.def, r.ns, obj, &w, Managed::Update)?,
                        true,
                    )
                } else {
                    return Err(ApiError::not_found(r.target(name)));
                }
            }
            Some(old) => {
                let rv = meta_str(&obj, "resourceVersion");
                if !rv.is_empty() && rv != meta_str(&old, "resourceVersion") {
                    return Err(ApiError::conflict_stale(r.target(name)));
                }
                (
                    finish_update(&mut st, r.def, &key, r.sub, &old, obj, &w, Managed::Update)?,
                    false,
                )
            }
        }
    };
    r.app.store.notify(0);
    let code = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(with_warnings(
        json_response(code, &view(r.def, &out)),
        &warnings,
    ))
}

fn patch_object(r: &Req<'_>) -> ApiResult<Response> {
    let name = r.name.expect("patch has a name");
    let ct = r
        .headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let ptype = PatchType::from_content_type(ct)?;
    if ptype == PatchType::Apply {
        return apply_patch(r, name);
    }
    if r.q.get("force").is_some() {
        return Err(invalid_patch_option(
            "force",
            "Forbidden: may not be specified for non-apply patch",
        ));
    }
    let patch: Value = serde_json::from_slice(r.body)
        .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
    let w = WriteCtx::of(r)?;
    let key = r.key(name);
    let fv = r.field_validation()?;
    let (out, warnings) = {
        let mut st = r.app.store.lock();
        let old = st
            .get(&key)
            .ok_or_else(|| ApiError::not_found(r.target(name)))?;
        let base = view(r.def, &old);
        let patched = match ptype {
            PatchType::Merge => patch::merge_patch(&base, &patch)?,
            PatchType::Json => patch::json_patch(&base, &patch)?,
            PatchType::Strategic => patch::strategic_merge_patch(r.def.kind, &base, &patch)?,
            PatchType::Apply => unreachable!("handled above"),
        };
        if patched["apiVersion"] != base["apiVersion"] || patched["kind"] != base["kind"] {
            return Err(ApiError::bad_request(
                "a patch may not change apiVersion or kind",
            ));
        }
        if patched["metadata"]["name"] != base["metadata"]["name"] {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({}) does not match the name on the URL ({name})",
                patched["metadata"]["name"].as_str().unwrap_or("")
            )));
        }
        if patched["metadata"]["namespace"] != base["metadata"]["namespace"] {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
        let rv = meta_str(&patched, "resourceVersion");
        if !rv.is_empty() && rv != meta_str(&old, "resourceVersion") {
            return Err(ApiError::conflict_stale(r.target(name)));
        }
        let (patched, warnings) = typed::check(r.def, patched, fv)?;
        let new = to_storage(r.def, patched);
        (
            finish_update(&mut st, r.def, &key, r.sub, &old, new, &w, Managed::Update)?,
            warnings,
        )
    };
    r.app.store.notify(0);
    Ok(with_warnings(
        json_response(StatusCode::OK, &view(r.def, &out)),
        &warnings,
    ))
}

fn invalid_patch_option(field: &str, why: &str) -> ApiError {
    ApiError {
        code: 422,
        reason: "Invalid",
        message: format!("PatchOptions.meta.k8s.io \"\" is invalid: {field}: {why}"),
        details: Some(json!({"kind": "PatchOptions", "group": "meta.k8s.io",
            "causes": [{"reason": "FieldValueRequired", "message": why, "field": field}]})),
    }
}

fn apply_patch(r: &Req<'_>, name: &str) -> ApiResult<Response> {
    let manager = match r.q.get("fieldManager") {
        Some(m) if !m.is_empty() => m.clone(),
        _ => {
            return Err(invalid_patch_option(
                "fieldManager",
                "Required value: is required for apply patch",
            ));
        }
    };
    let force = match r.q.get("force").map(String::as_str) {
        None | Some("false") | Some("") => false,
        Some("true") => true,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "invalid force value {other:?}"
            )));
        }
    };
    let mut config: Value = match serde_json::from_slice(r.body) {
        Ok(v) => v,
        Err(_) => serde_norway::from_slice(r.body)
            .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))?,
    };
    if !config.is_object() {
        return Err(ApiError::bad_request(
            "the apply configuration is not an object",
        ));
    }
    let av = config["apiVersion"].as_str().unwrap_or("").to_string();
    let kind = config["kind"].as_str().unwrap_or("").to_string();
    if av.is_empty() || kind.is_empty() {
        return Err(ApiError::bad_request(format!(
            "invalid object type: {}, Kind={}: apply configurations must set apiVersion and kind",
            av, kind
        )));
    }
    check_type(r.def, &mut config)?;
    check_body_name(&mut config, name)?;
    let cfg_ns = meta_str(&config, "namespace");
    if r.def.namespaced && !cfg_ns.is_empty() && Some(cfg_ns) != r.ns {
        return Err(ApiError::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        ));
    }
    if r.def.namespaced {
        config["metadata"]["namespace"] = json!(r.ns.unwrap_or(""));
    }
    let (config, warnings) = typed::check(r.def, config, r.field_validation()?)?;
    let mut config = to_storage(r.def, config);
    {
        let cm = config.as_object_mut().expect("object");
        match r.sub {
            Sub::Main => {
                if r.def.has_status {
                    cm.remove("status");
                }
            }
            _ => cm.retain(|k, _| {
                k == "apiVersion" || k == "kind" || k == "metadata" || k == "status"
            }),
        }
    }
    let precondition_rv = meta_str(&config, "resourceVersion").to_string();
    if let Some(m) = config["metadata"].as_object_mut() {
        m.remove("resourceVersion");
        m.remove("managedFields");
    }
    let mut w = WriteCtx::of(r)?;
    w.manager = manager;
    let key = r.key(name);
    let (out, created) = {
        let mut st = r.app.store.lock();
        match st.get(&key) {
            None => {
                if r.sub != Sub::Main {
                    return Err(ApiError::not_found(r.target(name)));
                }
                if !precondition_rv.is_empty() {
                    return Err(ApiError::conflict_stale(r.target(name)));
                }
                let applied = ssa::apply(
                    r.def.kind,
                    scope(r.def, Sub::Main),
                    None,
                    &config,
                    &w.manager,
                    &w.api_version,
                    "",
                    force,
                    &w.now,
                )?;
                (
                    do_create(&mut st, r.def, r.ns, applied.object, &w, Managed::Preset)?,
                    true,
                )
            }
            Some(old) => {
                if !precondition_rv.is_empty()
                    && precondition_rv != meta_str(&old, "resourceVersion")
                {
                    return Err(ApiError::conflict_stale(r.target(name)));
                }
                let sub_name = r.sub.name().unwrap_or("");
                let applied = ssa::apply(
                    r.def.kind,
                    scope(r.def, r.sub),
                    Some(&old),
                    &config,
                    &w.manager,
                    &w.api_version,
                    sub_name,
                    force,
                    &w.now,
                )?;
                (
                    finish_update(
                        &mut st,
                        r.def,
                        &key,
                        r.sub,
                        &old,
                        applied.object,
                        &w,
                        Managed::Preset,
                    )?,
                    false,
                )
            }
        }
    };
    r.app.store.notify(0);
    let code = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(with_warnings(
        json_response(code, &view(r.def, &out)),
        &warnings,
    ))
}

// ---------------------------------------------------------------- delete

#[derive(Debug, Default, Clone)]
struct DeleteOpts {
    grace: Option<i64>,
    propagation: Option<String>,
    orphan: Option<bool>,
    uid: Option<String>,
    rv: Option<String>,
    dry_run: bool,
}

fn delete_opts(r: &Req<'_>) -> ApiResult<DeleteOpts> {
    let body = if r.body.is_empty() {
        None
    } else {
        Some(decode_body(r.headers, r.body).map_err(|e| {
            ApiError::bad_request(format!("error decoding DeleteOptions: {}", e.message))
        })?)
    };
    delete_opts_of(body.as_ref(), r)
}

/// DeleteOptions from a decoded body (`b`) and the query.
fn delete_opts_of(b: Option<&Value>, r: &Req<'_>) -> ApiResult<DeleteOpts> {
    let mut o = DeleteOpts::default();
    if let Some(b) = b {
        o.grace = b["gracePeriodSeconds"].as_i64();
        o.propagation = b["propagationPolicy"].as_str().map(str::to_string);
        o.orphan = b["orphanDependents"].as_bool();
        o.uid = b["preconditions"]["uid"].as_str().map(str::to_string);
        o.rv = b["preconditions"]["resourceVersion"]
            .as_str()
            .map(str::to_string);
        if let Some(d) = b["dryRun"].as_array() {
            for x in d {
                match x.as_str() {
                    Some("All") => o.dry_run = true,
                    other => {
                        return Err(ApiError::bad_request(format!(
                            "unsupported dryRun value {other:?}"
                        )));
                    }
                }
            }
        }
    }
    if let Some(g) = r.q.get("gracePeriodSeconds") {
        o.grace = Some(
            g.parse()
                .map_err(|_| ApiError::bad_request(format!("invalid gracePeriodSeconds {g:?}")))?,
        );
    }
    if let Some(p) = r.q.get("propagationPolicy") {
        o.propagation = Some(p.clone());
    }
    if let Some(b) = qbool(r.q, "orphanDependents") {
        o.orphan = Some(b);
    }
    if r.dry_run()? {
        o.dry_run = true;
    }
    if let Some(p) = &o.propagation {
        if !["Orphan", "Background", "Foreground"].contains(&p.as_str()) {
            return Err(ApiError {
                code: 422,
                reason: "Invalid",
                message: format!(
                    "DeleteOptions.meta.k8s.io \"\" is invalid: propagationPolicy: Unsupported value: {p:?}: supported values: \"Foreground\", \"Background\", \"Orphan\", \"nil\""
                ),
                details: None,
            });
        }
        if o.orphan.is_some() {
            return Err(ApiError {
                code: 422,
                reason: "Invalid",
                message: "DeleteOptions.meta.k8s.io \"\" is invalid: propagationPolicy: Invalid value: ...: orphanDependents and deletionPropagation cannot be both set".into(),
                details: None,
            });
        }
    }
    Ok(o)
}

enum Deletion {
    /// Removed from the store (the last state).
    Gone(Value),
    /// Marked for deletion, waiting for finalizers or a kubelet.
    Pending(Value),
}

fn plus_seconds(now: &str, secs: i64) -> String {
    chrono::DateTime::parse_from_rfc3339(now)
        .map(|t| {
            (t.with_timezone(&Utc) + chrono::Duration::seconds(secs))
                .to_rfc3339_opts(SecondsFormat::Secs, true)
        })
        .unwrap_or_else(|_| now.to_string())
}

fn do_delete(
    st: &mut State,
    def: &'static ResourceDef,
    key: &Key,
    o: &DeleteOpts,
    now: &str,
) -> ApiResult<Deletion> {
    let name = key.2.as_str();
    let old = st
        .get(key)
        .ok_or_else(|| ApiError::not_found(target_of(def, name)))?;
    if let Some(uid) = &o.uid
        && uid != meta_str(&old, "uid")
    {
        return Err(ApiError::conflict(
            target_of(def, name),
            &format!(
                "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                meta_str(&old, "uid")
            ),
        ));
    }
    if let Some(rv) = &o.rv
        && rv != meta_str(&old, "resourceVersion")
    {
        return Err(ApiError::conflict(
            target_of(def, name),
            &format!(
                "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}",
                meta_str(&old, "resourceVersion")
            ),
        ));
    }
    if def.storage == Storage::Namespaces {
        return delete_namespace(st, key, old, o, now);
    }
    // Grace period: only pods are deleted gracefully.
    let grace = if def.storage == Storage::Pods {
        let bound = !old["spec"]["nodeName"].as_str().unwrap_or("").is_empty();
        let finished = matches!(
            old["status"]["phase"].as_str(),
            Some("Succeeded") | Some("Failed")
        );
        if !bound || finished {
            0
        } else {
            let g = o
                .grace
                .or(old["spec"]["terminationGracePeriodSeconds"].as_i64())
                .unwrap_or(30);
            if g < 0 { 1 } else { g }
        }
    } else {
        0
    };
    let mut new = old.clone();
    // Finalizers for the propagation policy (the garbage collector would
    // act on them; this server has none, see the crate docs).
    let mut finalizers: Vec<Value> = new["metadata"]["finalizers"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let policy = match (&o.propagation, o.orphan) {
        (Some(p), _) => Some(p.as_str()),
        (None, Some(true)) => Some("Orphan"),
        (None, Some(false)) => Some("Background"),
        (None, None) => None,
    };
    let already = !old["metadata"]["deletionTimestamp"].is_null();
    if let Some(p) = policy
        && !already
    {
        finalizers.retain(|f| f != "orphan" && f != "foregroundDeletion");
        match p {
            "Orphan" => finalizers.push(json!("orphan")),
            "Foreground" => finalizers.push(json!("foregroundDeletion")),
            _ => {}
        }
    }
    if finalizers.is_empty() {
        if let Some(m) = new["metadata"].as_object_mut() {
            m.remove("finalizers");
        }
    } else {
        new["metadata"]["finalizers"] = Value::Array(finalizers.clone());
    }
    if already {
        let current = old["metadata"]["deletionGracePeriodSeconds"]
            .as_i64()
            .unwrap_or(0);
        if grace < current {
            new["metadata"]["deletionGracePeriodSeconds"] = json!(grace);
            new["metadata"]["deletionTimestamp"] = json!(plus_seconds(now, grace));
        }
        if grace == 0 && finalizers.is_empty() {
            if o.dry_run {
                return Ok(Deletion::Gone(old));
            }
            let gone = st.remove(key).expect("exists");
            after_delete(st, key);
            return Ok(Deletion::Gone(gone));
        }
        if new == old || o.dry_run {
            return Ok(Deletion::Pending(new));
        }
        return Ok(Deletion::Pending(st.put(key.clone(), new)));
    }
    if grace > 0 || !finalizers.is_empty() {
        new["metadata"]["deletionTimestamp"] = json!(plus_seconds(now, grace));
        new["metadata"]["deletionGracePeriodSeconds"] = json!(grace);
        if let Some(g) = new["metadata"]["generation"].as_i64()
            && g > 0
        {
            new["metadata"]["generation"] = json!(g + 1);
        }
        if o.dry_run {
            return Ok(Deletion::Pending(new));
        }
        return Ok(Deletion::Pending(st.put(key.clone(), new)));
    }
    if o.dry_run {
        return Ok(Deletion::Gone(old));
    }
    let gone = st.remove(key).expect("exists");
    after_delete(st, key);
    Ok(Deletion::Gone(gone))
}

/// Namespace deletion: the namespace turns Terminating, then (standing in
/// for the namespace controller) everything in it is deleted with the
/// normal semantics; once empty its `kubernetes` finalizer is removed and
/// it goes away.
fn delete_namespace(
    st: &mut State,
    key: &Key,
    old: Value,
    o: &DeleteOpts,
    now: &str,
) -> ApiResult<Deletion> {
    let name = key.2.clone();
    if ["default", "kube-system", "kube-public"].contains(&name.as_str()) {
        return Err(ApiError::forbidden(
            target_static(ns_def(), &name),
            "this namespace may not be deleted",
        ));
    }
    if is_terminating(&old) {
        return Ok(Deletion::Pending(old));
    }
    let mut new = old.clone();
    new["metadata"]["deletionTimestamp"] = json!(now);
    new["metadata"]["deletionGracePeriodSeconds"] = json!(0);
    new["status"]["phase"] = json!("Terminating");
    if o.dry_run {
        return Ok(Deletion::Pending(new));
    }
    let marked = st.put(key.clone(), new);
    let content: Vec<Key> = st.keys_in_namespace(&name);
    for k in content {
        let def = def_of_storage(k.0);
        let _ = do_delete(
            st,
            def,
            &k,
            &DeleteOpts {
                propagation: Some("Background".into()),
                ..Default::default()
            },
            now,
        );
    }
    finalize_namespace_if_empty(st, &name);
    match st.get(key) {
        Some(v) => Ok(Deletion::Pending(v)),
        None => {
            let mut gone = marked;
            gone["metadata"]["resourceVersion"] = json!(st.rv.to_string());
            gone["spec"]["finalizers"] = json!([]);
            Ok(Deletion::Pending(gone))
        }
    }
}

fn finalize_namespace_if_empty(st: &mut State, ns: &str) {
    let key: Key = (Storage::Namespaces, String::new(), ns.to_string());
    let Some(obj) = st.get(&key) else {
        return;
    };
    if !is_terminating(&obj) || st.namespace_has_content(ns) {
        return;
    }
    let mut new = obj.clone();
    if let Some(f) = new["spec"]["finalizers"].as_array_mut() {
        f.retain(|x| x != "kubernetes");
    }
    let spec_empty = new["spec"]["finalizers"]
        .as_array()
        .is_none_or(|a| a.is_empty());
    let meta_empty = new["metadata"]["finalizers"]
        .as_array()
        .is_none_or(|a| a.is_empty());
    if spec_empty && meta_empty {
        // the namespace controller finalizes, then the delete completes
        st.put(key.clone(), new);
        st.remove(&key);
    } else if new != obj {
        st.put(key, new);
    }
}

/// Called after an object left the store.
fn after_delete(st: &mut State, key: &Key) {
    if key.0 == Storage::Namespaces || key.0 == Storage::Nodes {
        return;
    }
    finalize_namespace_if_empty(st, &key.1.clone());
}

fn deleted_status(def: &ResourceDef, obj: &Value) -> Value {
    let mut details =
        json!({"name": meta_str(obj, "name"), "kind": def.plural, "uid": meta_str(obj, "uid")});
    if !def.group.is_empty() {
        details["group"] = json!(def.group);
    }
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details})
}

fn delete(r: &Req<'_>) -> ApiResult<Response> {
    let name = r.name.expect("delete has a name");
    let o = delete_opts(r)?;
    let key = r.key(name);
    let res = {
        let mut st = r.app.store.lock();
        do_delete(&mut st, r.def, &key, &o, &now())?
    };
    r.app.store.notify(0);
    Ok(match res {
        Deletion::Gone(obj) => {
            if r.def.return_deleted_object {
                json_response(StatusCode::OK, &view(r.def, &obj))
            } else {
                json_response(StatusCode::OK, &deleted_status(r.def, &obj))
            }
        }
        Deletion::Pending(obj) => {
            let code = if o.orphan == Some(false) {
                StatusCode::ACCEPTED
            } else {
                StatusCode::OK
            };
            json_response(code, &view(r.def, &obj))
        }
    })
}

fn delete_collection(r: &Req<'_>) -> ApiResult<Response> {
    let (ls, fs) = list_options(r)?;
    let o = delete_opts(r)?;
    let now = now();
    let (items, rv) = {
        let mut st = r.app.store.lock();
        let keys: Vec<Key> = st
            .list(r.def.storage, r.ns, |obj| {
                ls.matches(&labels_of(obj)) && fs.matches(obj)
            })
            .iter()
            .map(|obj| {
                (
                    r.def.storage,
                    meta_str(obj, "namespace").to_string(),
                    meta_str(obj, "name").to_string(),
                )
            })
            .collect();
        let mut out = Vec::new();
        for k in keys {
            match do_delete(&mut st, r.def, &k, &o, &now) {
                Ok(Deletion::Gone(v)) | Ok(Deletion::Pending(v)) => {
                    let mut v = view(r.def, &v);
                    if let Some(m) = v.as_object_mut() {
                        m.remove("apiVersion");
                        m.remove("kind");
                    }
                    out.push(v)
                }
                Err(e) if e.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
        (out, st.rv)
    };
    r.app.store.notify(0);
    Ok(json_response(
        StatusCode::OK,
        &json!({"kind": r.def.list_kind(), "apiVersion": r.def.api_version(), "metadata": {"resourceVersion": rv.to_string()}, "items": items}),
    ))
}

// ---------------------------------------------------------------- binding

fn binding(
    app: &Arc<App>,
    def: &'static ResourceDef,
    ns: &str,
    name: &str,
    body: &Bytes,
    headers: &HeaderMap,
    q: &Query,
) -> ApiResult<Response> {
    let b = decode_body(headers, body)
        .map_err(|e| ApiError::bad_request(format!("error decoding Binding: {}", e.message)))?;
    let node = b["target"]["name"].as_str().unwrap_or("").to_string();
    let bind_target = Target {
        group: "",
        resource: "bindings",
        kind: "Binding",
        name,
    };
    if node.is_empty() {
        return Err(ApiError::invalid(
            bind_target,
            vec![crate::errors::required("target.name")],
        ));
    }
    let r = Req {
        app,
        def,
        ns: Some(ns),
        name: Some(name),
        sub: Sub::Main,
        q,
        headers,
        body,
    };
    let w = WriteCtx::of(&r)?;
    let key: Key = (Storage::Pods, ns.to_string(), name.to_string());
    {
        let mut st = app.store.lock();
        let old = st
            .get(&key)
            .ok_or_else(|| ApiError::not_found(target_static(def, name)))?;
        let current = meta_str(&old, "name");
        let assigned = old["spec"]["nodeName"].as_str().unwrap_or("");
        if !assigned.is_empty() {
            return Err(ApiError::conflict(
                Target {
                    group: "",
                    resource: "pods/binding",
                    kind: "Binding",
                    name: current,
                },
                &format!("pod {current} is already assigned to node {assigned:?}"),
            ));
        }
        if !old["metadata"]["deletionTimestamp"].is_null() {
            return Err(ApiError::conflict(
                Target {
                    group: "",
                    resource: "pods/binding",
                    kind: "Binding",
                    name: current,
                },
                &format!("pod {current} is being deleted, cannot be assigned to a host"),
            ));
        }
        let mut new = old.clone();
        new["spec"]["nodeName"] = json!(node);
        let mut conds: Vec<Value> = new["status"]["conditions"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        conds.retain(|c| c["type"] != "PodScheduled");
        conds.push(json!({"type": "PodScheduled", "status": "True", "lastProbeTime": null, "lastTransitionTime": w.now}));
        new["status"]["conditions"] = Value::Array(conds);
        ssa::record_update(
            def.kind,
            ssa::Scope::All,
            Some(&old),
            &mut new,
            &w.manager,
            "v1",
            "",
            &w.now,
        );
        if !w.dry_run {
            st.put(key, new);
        }
    }
    app.store.notify(0);
    Ok(json_response(
        StatusCode::CREATED,
        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
    ))
}

// ---------------------------------------------------------------- scale

fn scale_target(name: &str) -> Target<'_> {
    Target {
        group: "autoscaling",
        resource: "scale",
        kind: "Scale",
        name,
    }
}

/// `GET|PUT|PATCH .../deployments|replicasets/<name>/scale`.
fn scale_subresource(r: &Req<'_>, method: &Method) -> ApiResult<Response> {
    let name = r.name.expect("scale has a name");
    let key = r.key(name);
    // the real ScaleREST names the subresource in NotFound and UID conflicts
    let sub_resource = format!("{}/scale", r.def.plural);
    let sub_target = Target {
        group: r.def.group,
        resource: &sub_resource,
        kind: "Scale",
        name,
    };
    let view = |obj: &Value| scale::scale_of(obj).map_err(ApiError::internal);
    if *method == Method::GET {
        let render = negotiate(r.headers)?;
        let obj = r
            .app
            .store
            .lock()
            .get(&key)
            .ok_or_else(|| ApiError::not_found(sub_target))?;
        let s = view(&obj)?;
        let out = match render {
            Render::Object => s,
            Render::Metadata => table::partial_metadata(&s),
            Render::Table => scale::scale_table(
                &s,
                IncludeObject::parse(r.q.get("includeObject").map(String::as_str)),
            ),
        };
        return Ok(json_response(StatusCode::OK, &out));
    }
    if *method != Method::PUT && *method != Method::PATCH {
        return Err(ApiError::method_not_allowed());
    }
    let w = WriteCtx::of(r)?;
    let out = {
        let mut st = r.app.store.lock();
        let old = st
            .get(&key)
            .ok_or_else(|| ApiError::not_found(sub_target))?;
        let desired = if *method == Method::PUT {
            let mut body = parse_body(r)?;
            check_scale_type(&mut body)?;
            body
        } else {
            let ct = r
                .headers
                .get(http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            let patch: Value = serde_json::from_slice(r.body)
                .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
            let current = view(&old)?;
            match PatchType::from_content_type(ct)? {
                PatchType::Merge => patch::merge_patch(&current, &patch)?,
                PatchType::Json => patch::json_patch(&current, &patch)?,
                PatchType::Strategic => patch::strategic_merge_patch("Scale", &current, &patch)?,
                PatchType::Apply => {
                    return Err(ApiError::unsupported_media_type(
                        ct,
                        &[
                            "application/json-patch+json",
                            "application/merge-patch+json",
                            "application/strategic-merge-patch+json",
                        ],
                    ));
                }
            }
        };
        serde_json::from_value::<k8s_openapi::api::autoscaling::v1::Scale>(desired.clone())
            .map_err(|e| ApiError::bad_request(format!("error decoding Scale: {e}")))?;
        let body_name = meta_str(&desired, "name");
        if !body_name.is_empty() && body_name != name {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({name})"
            )));
        }
        let rv = meta_str(&desired, "resourceVersion");
        if !rv.is_empty() && rv != meta_str(&old, "resourceVersion") {
            return Err(ApiError::conflict_stale(r.target(name)));
        }
        let replicas = scale::requested_replicas(&desired)
            .map_err(|causes| ApiError::invalid(scale_target(name), causes))?;
        let uid = meta_str(&desired, "uid");
        if !uid.is_empty() && uid != meta_str(&old, "uid") {
            return Err(ApiError::conflict(
                sub_target,
                &format!(
                    "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                    meta_str(&old, "uid")
                ),
            ));
        }
        let mut new = old.clone();
        new["spec"]["replicas"] = json!(replicas);
        finish_update(
            &mut st,
            r.def,
            &key,
            Sub::Scale,
            &old,
            new,
            &w,
            Managed::Update,
        )?
    };
    r.app.store.notify(0);
    Ok(json_response(StatusCode::OK, &view(&out)?))
}

/// apiVersion/kind of a Scale body (filled when missing, as the decoder does).
fn check_scale_type(obj: &mut Value) -> ApiResult<()> {
    match obj["apiVersion"].as_str() {
        None | Some("") => obj["apiVersion"] = json!("autoscaling/v1"),
        Some("autoscaling/v1") => {}
        Some(av) => {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({av}) does not match the expected API version (autoscaling/v1)"
            )));
        }
    }
    match obj["kind"].as_str() {
        None | Some("") => obj["kind"] = json!("Scale"),
        Some("Scale") => {}
        Some(k) => {
            return Err(ApiError::bad_request(format!(
                "the kind in the data ({k}) does not match the expected kind (Scale)"
            )));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------- eviction

/// `POST .../pods/<name>/eviction` (policy/v1 Eviction): if the pod's
/// PodDisruptionBudget allows it (see [`crate::eviction`]), charges the
/// budget and deletes the pod with the Eviction's deleteOptions, exactly as a
/// delete would (graceful for bound pods).
fn eviction(r: &Req<'_>) -> ApiResult<Response> {
    let name = r.name.expect("eviction has a name");
    let ns = r.ns.unwrap_or("");
    let ev = decode_body(r.headers, r.body)
        .map_err(|e| ApiError::bad_request(format!("error decoding Eviction: {}", e.message)))?;
    match (ev["apiVersion"].as_str(), ev["kind"].as_str()) {
        (None | Some(""), None | Some(""))
        | (Some("policy/v1" | "policy/v1beta1"), Some("Eviction")) => {}
        (av, k) => {
            return Err(ApiError::bad_request(format!(
                "the body of an eviction must be a policy/v1 Eviction, not {}, Kind={}",
                av.unwrap_or(""),
                k.unwrap_or("")
            )));
        }
    }
    serde_json::from_value::<k8s_openapi::api::policy::v1::Eviction>(ev.clone())
        .map_err(|e| ApiError::bad_request(format!("error decoding Eviction: {e}")))?;
    // upstream compares without filling a missing name from the URL
    if meta_str(&ev, "name") != name {
        return Err(ApiError::bad_request(
            "name in URL does not match name in Eviction object",
        ));
    }
    let body_ns = meta_str(&ev, "namespace");
    if !body_ns.is_empty() && body_ns != ns {
        return Err(ApiError::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        ));
    }
    let o = delete_opts_of(ev.get("deleteOptions").filter(|v| !v.is_null()), r)?;
    let now = now();
    {
        let mut st = r.app.store.lock();
        let key = r.key(name);
        let pod = st
            .get(&key)
            .ok_or_else(|| ApiError::not_found(r.target(name)))?;
        let budgets = st.list(Storage::PodDisruptionBudgets, Some(ns), |_| true);
        let budget_refs: Vec<&Value> = budgets.iter().map(|b| &**b).collect();
        match crate::eviction::decide(&pod, &budget_refs, &now) {
            crate::eviction::Decision::Refuse(e) => return Err(e),
            crate::eviction::Decision::Delete => {}
            crate::eviction::Decision::Charge {
                name: budget,
                status,
            } => {
                // the real server charges the budget through its loopback
                // client, as `kube-apiserver`
                let def = resources::find("policy", "v1", "poddisruptionbudgets")
                    .expect("budgets are served");
                let bkey: Key = (def.storage, ns.to_string(), budget);
                let old = st
                    .get(&bkey)
                    .ok_or_else(|| ApiError::internal("the budget vanished"))?;
                let mut new = old.clone();
                new["status"] = status;
                let w = WriteCtx {
                    manager: "kube-apiserver".into(),
                    api_version: def.api_version(),
                    now: now.clone(),
                    dry_run: o.dry_run,
                    tolerations: r.app.settings.default_toleration_seconds,
                };
                finish_update(
                    &mut st,
                    def,
                    &bkey,
                    Sub::Status,
                    &old,
                    new,
                    &w,
                    Managed::Update,
                )?;
            }
        }
        do_delete(&mut st, r.def, &key, &o, &now)?;
    }
    r.app.store.notify(0);
    Ok(json_response(
        StatusCode::CREATED,
        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
    ))
}
