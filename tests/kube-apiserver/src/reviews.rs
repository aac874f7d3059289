//! `TokenReview` (`POST /apis/authentication.k8s.io/v1/tokenreviews`) and,
//! when RBAC is not enforced, `SubjectAccessReview` and
//! `SelfSubjectAccessReview` (`/apis/authorization.k8s.io/v1/...`): what a
//! kubelet (or our controller's kubelet endpoint) asks the API server to
//! authenticate and authorize its callers' bearer tokens.
//!
//! - TokenReview, with [`crate::Config::rbac`] on: the token is
//!   authenticated by the server's own authenticator (static tokens,
//!   ServiceAccount tokens while the ServiceAccount exists; see
//!   [`crate::rbac`]). Known: `status.authenticated: true` and the user
//!   (name, groups with `system:authenticated`, for a ServiceAccount its
//!   uid). Unknown: `authenticated: false`, `error: "invalid bearer token"`
//!   (upstream's bearer-token authenticator's error). Tokens are
//!   audience-agnostic: `status.audiences` echoes `spec.audiences`, else the
//!   API audience `https://kubernetes.default.svc.cluster.local`.
//!   The caller needs `create` on `tokenreviews.authentication.k8s.io`, as
//!   every request is authorized.
//! - TokenReview with RBAC off: this server then authenticates nobody (it
//!   serves every request anonymously), so as upstream's TokenReview
//!   storage without a token authenticator it answers the review with an
//!   empty status: not authenticated.
//! - Access reviews with RBAC off: every request is allowed here, so, as
//!   upstream's AlwaysAllow authorizer, `status.allowed: true` (after the
//!   same spec validation as with RBAC on). With RBAC on they are answered
//!   by [`crate::rbac::access_review`] before routing.
//! - Answers are 201 Created; a missing token is 400 `token is required for
//!   TokenReview in authentication`; other verbs 405.

use crate::api::App;
use crate::errors::{ApiError, ApiResult};
use crate::rbac::UserInfo;
use crate::resources::Storage;
use axum::response::{IntoResponse, Response};
use http::{Method, StatusCode};
use serde_json::{Value, json};

/// The API audience every token is valid for (kube-apiserver's default
/// `--api-audiences`, the service account issuer).
pub const API_AUDIENCE: &str = "https://kubernetes.default.svc.cluster.local";

fn created(v: &Value) -> Response {
    (
        StatusCode::CREATED,
        [(http::header::CONTENT_TYPE, "application/json")],
        serde_json::to_vec(v).unwrap_or_default(),
    )
        .into_response()
}

fn check_kind(body: &Value, kind: &str) -> ApiResult<()> {
    match body["kind"].as_str() {
        None => Ok(()),
        Some(k) if k == kind => Ok(()),
        Some(k) => Err(ApiError::bad_request(format!("not a {kind}: kind {k}"))),
    }
}

/// The user a ServiceAccount name stands for, with the ServiceAccount's uid.
fn uid_of(app: &App, user: &UserInfo) -> Option<String> {
    let rest = user.name.strip_prefix("system:serviceaccount:")?;
    let (ns, name) = rest.split_once(':')?;
    let st = app.store.lock();
    st.get_ref(&(Storage::ServiceAccounts, ns.to_string(), name.to_string()))
        .and_then(|sa| sa["metadata"]["uid"].as_str().map(str::to_string))
}

/// `POST /apis/authentication.k8s.io/v1/tokenreviews`.
pub fn token_review(
    app: &App,
    method: &Method,
    headers: &http::HeaderMap,
    body: &[u8],
) -> ApiResult<Response> {
    if method != Method::POST {
        return Err(ApiError::method_not_allowed());
    }
    let mut review = crate::api::decode_body(headers, body)?;
    check_kind(&review, "TokenReview")?;
    let token = review["spec"]["token"].as_str().unwrap_or("").to_string();
    if token.is_empty() {
        return Err(ApiError::bad_request(
            "token is required for TokenReview in authentication",
        ));
    }
    review["kind"] = json!("TokenReview");
    review["apiVersion"] = json!("authentication.k8s.io/v1");
    if !review["metadata"].is_object() {
        review["metadata"] = json!({});
    }
    let Some(tokens) = &app.rbac else {
        // no token authenticator: the review comes back unanswered
        review["status"] = json!({"user": {}});
        return Ok(created(&review));
    };
    let audiences = match review["spec"]["audiences"].as_array() {
        Some(a) if !a.is_empty() => Value::Array(a.clone()),
        _ => json!([API_AUDIENCE]),
    };
    let authenticated = {
        let st = app.store.lock();
        tokens.authenticate(Some(&format!("Bearer {token}")), &st)
    };
    review["status"] = match authenticated {
        Ok(user) => {
            let mut u = json!({"username": user.name, "groups": user.groups});
            if let Some(uid) = uid_of(app, &user) {
                u["uid"] = json!(uid);
            }
            json!({"authenticated": true, "user": u, "audiences": audiences})
        }
        Err(_) => json!({"user": {}, "error": "invalid bearer token"}),
    };
    Ok(created(&review))
}

/// `POST /apis/authorization.k8s.io/v1/<resource>` (`subjectaccessreviews`
/// or `selfsubjectaccessreviews`; others 404) when RBAC is not enforced:
/// validated as with RBAC, then allowed.
pub fn access_review_unenforced(
    app: &App,
    method: &Method,
    headers: &http::HeaderMap,
    body: &[u8],
    resource: &str,
) -> ApiResult<Response> {
    let self_review = match resource {
        "subjectaccessreviews" => false,
        "selfsubjectaccessreviews" => true,
        _ => return Err(ApiError::no_route()),
    };
    if method != Method::POST {
        return Err(ApiError::method_not_allowed());
    }
    let review = crate::api::decode_body(headers, body)?;
    check_kind(
        &review,
        if self_review {
            "SelfSubjectAccessReview"
        } else {
            "SubjectAccessReview"
        },
    )?;
    let st = app.store.lock();
    // the RBAC review validates the spec the same way; its decision is replaced
    let mut out = crate::rbac::access_review(&st, &review, self_review, &UserInfo::anonymous())?;
    out["status"] = json!({"allowed": true});
    Ok(created(&out))
}
