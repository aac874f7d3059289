//! Authentication by bearer token and authorization by the stored RBAC
//! objects, as kube-apiserver with `--token-auth-file` and
//! `--authorization-mode=RBAC` does. Off unless [`crate::Config::rbac`] is
//! set; then every request is authenticated (a missing token is
//! `system:anonymous`, an unknown one 401) and authorized before it is
//! served (403 Forbidden with upstream's message).
//!
//! What is played, from upstream (`staging/src/k8s.io/apiserver/pkg/
//! endpoints/request/requestinfo.go`, `plugin/pkg/auth/authorizer/rbac`):
//! - Request attributes: verb (get/list/watch/create/update/patch/delete/
//!   deletecollection; `watch=true` and `/watch/` are watch), API group,
//!   resource, subresource, namespace (for `namespaces/<n>` the namespace is
//!   `n`), name (for list and watch, from a `metadata.name=` field
//!   selector), non-resource paths.
//! - Rules: verbs, apiGroups, resources (`*`, `*/sub`, `res/sub`),
//!   resourceNames, nonResourceURLs (exact or `prefix*`); ClusterRoleBindings
//!   apply everywhere, RoleBindings in their namespace (to a Role of that
//!   namespace or a ClusterRole); subjects User, Group, ServiceAccount. A
//!   binding to a missing role adds `RBAC: <kind> "<name>" not found` to the
//!   denial. Aggregated ClusterRoles (`aggregationRule`) grant the union of
//!   the rules of the ClusterRoles their selectors match (computed when
//!   authorizing; `rules` is not rewritten as upstream's aggregation
//!   controller would).
//! - The groups upstream's bootstrap policy and authorizer chain give
//!   power to: `system:masters` may do everything; everyone may GET the
//!   health and version paths, authenticated users the discovery and
//!   OpenAPI paths and SelfSubjectAccessReviews (`system:public-info-viewer`,
//!   `system:discovery`, `system:basic-user`).
//! - SubjectAccessReview and SelfSubjectAccessReview
//!   (`authorization.k8s.io/v1`, POST only, so `kubectl auth can-i` works):
//!   answered by the same authorizer.
//!
//! Not played: client certificates (the server speaks plain HTTP),
//! impersonation headers, the escalation checks on writing Roles and
//! bindings (any user allowed to create a Role may grant anything), the
//! other bootstrap roles (`cluster-admin`, `view`, `system:node`... are not
//! created; bind your own).

use crate::errors::{ApiError, Cause, cause, invalid_value, required};
use crate::resources::Storage;
use crate::store::State;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Mutex;

/// Who a request comes from (upstream's `user.Info`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserInfo {
    /// The user name, e.g. `system:serviceaccount:ns:sa`.
    pub name: String,
    /// The groups, `system:authenticated` included for authenticated users.
    pub groups: Vec<String>,
}

impl UserInfo {
    /// The anonymous user (no credentials, anonymous auth enabled).
    pub fn anonymous() -> Self {
        UserInfo {
            name: "system:anonymous".into(),
            groups: vec!["system:unauthenticated".into()],
        }
    }

    /// The user a ServiceAccount's token authenticates as.
    pub fn service_account(namespace: &str, name: &str) -> Self {
        UserInfo {
            name: format!("system:serviceaccount:{namespace}:{name}"),
            groups: vec![
                "system:serviceaccounts".into(),
                format!("system:serviceaccounts:{namespace}"),
                "system:authenticated".into(),
            ],
        }
    }

    /// The user of a static token (a `--token-auth-file` line):
    /// `system:authenticated` is added, as upstream's authenticator does.
    pub fn user(name: &str, groups: &[&str]) -> Self {
        let mut groups: Vec<String> = groups.iter().map(|g| g.to_string()).collect();
        if !groups.iter().any(|g| g == "system:authenticated") {
            groups.push("system:authenticated".into());
        }
        UserInfo {
            name: name.into(),
            groups,
        }
    }
}

/// What a token stands for.
#[derive(Debug, Clone)]
enum Identity {
    /// A static token.
    User(UserInfo),
    /// A ServiceAccount token: valid while the ServiceAccount exists, as a
    /// bound token is.
    ServiceAccount { namespace: String, name: String },
}

/// The token authenticator, and the record of refusals.
#[derive(Debug, Default)]
pub struct Tokens {
    by_token: Mutex<HashMap<String, Identity>>,
    denials: Mutex<Vec<Denial>>,
    granted: Mutex<std::collections::BTreeSet<(String, String)>>,
}

/// A request refused with 403, as recorded for tests (the real server's
/// audit log would show the same).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    /// Who asked.
    pub user: String,
    /// What was asked.
    pub request: RequestInfo,
    /// The 403's message.
    pub message: String,
}

/// Why a request could not be authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthnError {
    /// The token is unknown, or names a ServiceAccount that is gone.
    InvalidToken,
}

impl Tokens {
    /// Adds a static token for `user`.
    pub fn add_user(&self, token: &str, user: UserInfo) {
        self.lock().insert(token.into(), Identity::User(user));
    }

    /// Issues a new token for ServiceAccount `namespace/name`.
    pub fn issue_service_account(&self, namespace: &str, name: &str) -> String {
        let token = format!("sa-{}", uuid::Uuid::new_v4().simple());
        self.lock().insert(
            token.clone(),
            Identity::ServiceAccount {
                namespace: namespace.into(),
                name: name.into(),
            },
        );
        token
    }

    /// Records a 403.
    pub fn record_denial(&self, d: Denial) {
        self.denials
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(d);
    }

    /// Records an allowed request of a user who is not `system:masters`
    /// (`verb group/resource[/sub] [namespace]`), for least-privilege
    /// reports.
    pub fn record_grant(&self, user: &UserInfo, info: &RequestInfo) {
        if user.groups.iter().any(|g| g == "system:masters") {
            return;
        }
        let what = if info.resource_request {
            let sub = if info.subresource.is_empty() {
                String::new()
            } else {
                format!("/{}", info.subresource)
            };
            let group = if info.api_group.is_empty() {
                "core"
            } else {
                &info.api_group
            };
            format!(
                "{} {group}/{}{sub} {}",
                info.verb, info.resource, info.namespace
            )
            .trim_end()
            .to_string()
        } else {
            format!("{} {}", info.verb, info.path)
        };
        self.granted
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert((user.name.clone(), what));
    }

    /// What each user (not `system:masters`) was allowed to do so far.
    pub fn grants(&self) -> Vec<(String, String)> {
        self.granted
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect()
    }

    /// Every 403 so far, oldest first.
    pub fn denials(&self) -> Vec<Denial> {
        self.denials
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Identity>> {
        self.by_token.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The user of an `Authorization` header value (`None`: anonymous).
    pub fn authenticate(
        &self,
        authorization: Option<&str>,
        st: &State,
    ) -> Result<UserInfo, AuthnError> {
        let Some(h) = authorization else {
            return Ok(UserInfo::anonymous());
        };
        let Some(token) = h
            .strip_prefix("Bearer ")
            .or_else(|| h.strip_prefix("bearer "))
        else {
            return Err(AuthnError::InvalidToken);
        };
        let id = self.lock().get(token.trim()).cloned();
        match id {
            Some(Identity::User(u)) => Ok(u),
            Some(Identity::ServiceAccount { namespace, name }) => {
                let key = (Storage::ServiceAccounts, namespace.clone(), name.clone());
                if st.contains(&key) {
                    Ok(UserInfo::service_account(&namespace, &name))
                } else {
                    Err(AuthnError::InvalidToken)
                }
            }
            None => Err(AuthnError::InvalidToken),
        }
    }
}

/// 401, as the real server answers a bad token.
pub fn unauthorized() -> ApiError {
    ApiError {
        code: 401,
        reason: "Unauthorized",
        message: "Unauthorized".into(),
        details: None,
    }
}

/// What is asked (upstream's `authorizer.Attributes` without the user).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestInfo {
    /// Whether this is a resource request (else a non-resource path).
    pub resource_request: bool,
    /// The request path.
    pub path: String,
    /// Lower-case verb.
    pub verb: String,
    /// API group ("" for core).
    pub api_group: String,
    /// Resource plural.
    pub resource: String,
    /// Subresource, e.g. `status`.
    pub subresource: String,
    /// Namespace ("" for cluster scope).
    pub namespace: String,
    /// Object name ("" when none).
    pub name: String,
}

/// The attributes of a request, from its method, path and query alone, as
/// upstream's `RequestInfoFactory` computes them.
pub fn request_info(method: &str, path: &str, query: &str) -> RequestInfo {
    let mut info = RequestInfo {
        path: path.to_string(),
        verb: method.to_lowercase(),
        ..Default::default()
    };
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let mut cur: &[&str] = &parts;
    match cur {
        ["api", _version, rest @ ..] if !rest.is_empty() => cur = rest,
        ["apis", group, _version, rest @ ..] if !rest.is_empty() => {
            info.api_group = group.to_string();
            cur = rest;
        }
        _ => return info,
    }
    info.resource_request = true;
    let params: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect();
    let param = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    info.verb = match method {
        "POST" => "create",
        "GET" | "HEAD" => "get",
        "PUT" => "update",
        "PATCH" => "patch",
        "DELETE" => "delete",
        _ => "",
    }
    .to_string();
    if cur.first() == Some(&"watch") {
        info.verb = "watch".into();
        cur = &cur[1..];
    }
    if cur.first() == Some(&"namespaces") && cur.len() > 1 {
        info.namespace = cur[1].to_string();
        if cur.len() > 2 && !matches!(cur[2], "status" | "finalize") {
            cur = &cur[2..];
        }
    }
    if let Some(r) = cur.first() {
        info.resource = r.to_string();
    }
    if let Some(n) = cur.get(1) {
        info.name = n.to_string();
    }
    if let Some(s) = cur.get(2) {
        info.subresource = s.to_string();
    }
    if info.name.is_empty() && info.verb == "get" {
        info.verb = if matches!(param("watch"), Some("true" | "1")) {
            "watch".into()
        } else {
            "list".into()
        };
    }
    if info.name.is_empty() && info.verb == "delete" {
        info.verb = "deletecollection".into();
    }
    if matches!(info.verb.as_str(), "list" | "watch") {
        // a list or watch of one object by field selector names it
        if let Some(fs) = param("fieldSelector") {
            for req in fs.split(',') {
                if let Some(v) = req
                    .strip_prefix("metadata.name==")
                    .or_else(|| req.strip_prefix("metadata.name="))
                {
                    info.name = v.to_string();
                }
            }
        }
    }
    info
}

/// Whether a rule's verbs cover `verb`.
pub fn verb_matches(rule: &Value, verb: &str) -> bool {
    strs(&rule["verbs"]).any(|v| v == "*" || v == verb)
}

/// Whether a rule's apiGroups cover `group`.
pub fn api_group_matches(rule: &Value, group: &str) -> bool {
    strs(&rule["apiGroups"]).any(|g| g == "*" || g == group)
}

/// Whether a rule's resources cover `resource[/subresource]`
/// (upstream's `ResourceMatches`: `*`, the exact combination, or `*/sub`).
pub fn resource_matches(rule: &Value, resource: &str, subresource: &str) -> bool {
    let combined = if subresource.is_empty() {
        resource.to_string()
    } else {
        format!("{resource}/{subresource}")
    };
    strs(&rule["resources"]).any(|r| {
        r == "*"
            || r == combined
            || (!subresource.is_empty()
                && r.len() == subresource.len() + 2
                && r.starts_with("*/")
                && r.ends_with(subresource))
    })
}

/// Whether a rule's resourceNames cover `name` (none listed: all names).
pub fn resource_name_matches(rule: &Value, name: &str) -> bool {
    let mut names = strs(&rule["resourceNames"]).peekable();
    names.peek().is_none() || names.any(|n| n == name)
}

/// Whether a rule's nonResourceURLs cover `path` (exact, `*`, or a prefix
/// ending in `*`).
pub fn non_resource_matches(rule: &Value, path: &str) -> bool {
    strs(&rule["nonResourceURLs"]).any(|u| {
        u == "*"
            || u == path
            || u.strip_suffix('*')
                .is_some_and(|prefix| path.starts_with(prefix))
    })
}

/// Whether `rule` allows the request.
pub fn rule_allows(rule: &Value, info: &RequestInfo) -> bool {
    if info.resource_request {
        verb_matches(rule, &info.verb)
            && api_group_matches(rule, &info.api_group)
            && resource_matches(rule, &info.resource, &info.subresource)
            && resource_name_matches(rule, &info.name)
    } else {
        verb_matches(rule, &info.verb) && non_resource_matches(rule, &info.path)
    }
}

fn strs(v: &Value) -> impl Iterator<Item = &str> {
    v.as_array().into_iter().flatten().filter_map(Value::as_str)
}

/// Whether a binding's subject is `user` (`binding_ns` fills a
/// ServiceAccount subject's missing namespace in a RoleBinding).
pub fn subject_matches(subject: &Value, user: &UserInfo, binding_ns: &str) -> bool {
    let name = subject["name"].as_str().unwrap_or_default();
    match subject["kind"].as_str() {
        Some("User") => user.name == name,
        Some("Group") => user.groups.iter().any(|g| g == name),
        Some("ServiceAccount") => {
            let ns = subject["namespace"]
                .as_str()
                .filter(|s| !s.is_empty())
                .unwrap_or(binding_ns);
            !ns.is_empty() && user.name == format!("system:serviceaccount:{ns}:{name}")
        }
        _ => false,
    }
}

/// Paths every user may GET (upstream bootstrap `system:public-info-viewer`).
const PUBLIC_PATHS: &[&str] = &["/healthz", "/livez", "/readyz", "/version"];

/// Path prefixes authenticated users may GET (`system:discovery`).
fn discovery_path(path: &str) -> bool {
    let p = path.trim_end_matches('/');
    ["/api", "/apis", "/openapi"]
        .iter()
        .any(|pre| p == *pre || p.starts_with(&format!("{pre}/")))
        || p == "/version"
}

/// The authorizer's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Allowed.
    Allow,
    /// Denied, with the RBAC reason (empty unless a binding is broken).
    Deny(String),
}

/// Authorizes `info` for `user` against the stored RBAC objects.
pub fn authorize(st: &State, user: &UserInfo, info: &RequestInfo) -> Decision {
    if user.groups.iter().any(|g| g == "system:masters") {
        return Decision::Allow;
    }
    if !info.resource_request && info.verb == "get" {
        let path = info.path.trim_end_matches('/');
        if PUBLIC_PATHS.contains(&path)
            || (user.groups.iter().any(|g| g == "system:authenticated") && discovery_path(path))
        {
            return Decision::Allow;
        }
    }
    let authenticated = user.groups.iter().any(|g| g == "system:authenticated");
    if authenticated
        && info.resource_request
        && info.verb == "create"
        && info.api_group == "authorization.k8s.io"
        && info.resource == "selfsubjectaccessreviews"
    {
        // bootstrap `system:basic-user`, bound to system:authenticated
        return Decision::Allow;
    }
    let mut errors: Vec<String> = Vec::new();
    let role_rules = |storage: Storage, ns: &str, name: &str, errors: &mut Vec<String>| {
        let key = (storage, ns.to_string(), name.to_string());
        match st.get_ref(&key) {
            Some(role) if storage == Storage::ClusterRoles => effective_rules(st, role),
            Some(role) => role["rules"].as_array().cloned().unwrap_or_default(),
            None => {
                let kind = if storage == Storage::Roles {
                    "role"
                } else {
                    "clusterrole"
                };
                errors.push(format!(
                    "{kind}.rbac.authorization.k8s.io \"{name}\" not found"
                ));
                Vec::new()
            }
        }
    };
    for b in st.list(Storage::ClusterRoleBindings, None, |_| true) {
        if !strs_of(&b["subjects"]).any(|s| subject_matches(s, user, "")) {
            continue;
        }
        let name = b["roleRef"]["name"].as_str().unwrap_or_default();
        let rules = role_rules(Storage::ClusterRoles, "", name, &mut errors);
        if rules.iter().any(|r| rule_allows(r, info)) {
            return Decision::Allow;
        }
    }
    if !info.namespace.is_empty() {
        for b in st.list(Storage::RoleBindings, Some(&info.namespace), |_| true) {
            if !strs_of(&b["subjects"]).any(|s| subject_matches(s, user, &info.namespace)) {
                continue;
            }
            let name = b["roleRef"]["name"].as_str().unwrap_or_default();
            let rules = if b["roleRef"]["kind"] == "ClusterRole" {
                role_rules(Storage::ClusterRoles, "", name, &mut errors)
            } else {
                role_rules(Storage::Roles, &info.namespace, name, &mut errors)
            };
            if rules.iter().any(|r| rule_allows(r, info)) {
                return Decision::Allow;
            }
        }
    }
    if errors.is_empty() {
        Decision::Deny(String::new())
    } else if errors.len() == 1 {
        Decision::Deny(format!("RBAC: {}", errors[0]))
    } else {
        Decision::Deny(format!("RBAC: [{}]", errors.join(", ")))
    }
}

/// A ClusterRole's rules; for an aggregated one (`aggregationRule`), the
/// union of the rules of the ClusterRoles its selectors match, which is
/// what upstream's clusterrole-aggregation controller writes into `rules`
/// (this server computes it when authorizing instead of storing it).
pub fn effective_rules(st: &State, role: &Value) -> Vec<Value> {
    let selectors: Vec<crate::selectors::LabelSelector> =
        strs_of(&role["aggregationRule"]["clusterRoleSelectors"])
            .filter_map(|s| crate::selectors::LabelSelector::from_label_selector(s).ok())
            .collect();
    if role["aggregationRule"].is_null() {
        return role["rules"].as_array().cloned().unwrap_or_default();
    }
    let name = &role["metadata"]["name"];
    let mut rules: Vec<Value> = Vec::new();
    for other in st.list(Storage::ClusterRoles, None, |_| true) {
        if &other["metadata"]["name"] == name {
            continue;
        }
        let labels = crate::selectors::labels_of(&other);
        if selectors.iter().any(|s| s.matches(&labels)) {
            for r in strs_of(&other["rules"]) {
                if !rules.contains(r) {
                    rules.push(r.clone());
                }
            }
        }
    }
    rules
}

fn strs_of(v: &Value) -> impl Iterator<Item = &Value> {
    v.as_array().into_iter().flatten()
}

/// 403 Forbidden as upstream's `ForbiddenStatusError`:
/// `pods "p" is forbidden: User "u" cannot get resource "pods" in API group
/// "" in the namespace "ns"`.
pub fn forbidden(user: &UserInfo, info: &RequestInfo, reason: &str) -> ApiError {
    let mut msg = format!("User {:?} cannot {}", user.name, info.verb);
    if info.resource_request {
        let resource = if info.subresource.is_empty() {
            info.resource.clone()
        } else {
            format!("{}/{}", info.resource, info.subresource)
        };
        if info.namespace.is_empty() {
            msg.push_str(&format!(
                " resource {resource:?} in API group {:?} at the cluster scope",
                info.api_group
            ));
        } else {
            msg.push_str(&format!(
                " resource {resource:?} in API group {:?} in the namespace {:?}",
                info.api_group, info.namespace
            ));
        }
    } else {
        msg.push_str(&format!(" path {:?}", info.path));
    }
    if !reason.is_empty() {
        msg.push_str(": ");
        msg.push_str(reason);
    }
    // NewForbidden(GroupResource, name, err)
    let qualified = if info.api_group.is_empty() {
        info.resource.clone()
    } else {
        format!("{}.{}", info.resource, info.api_group)
    };
    let message = match (qualified.is_empty(), info.name.is_empty()) {
        (true, _) => format!("forbidden: {msg}"),
        (false, true) => format!("{qualified} is forbidden: {msg}"),
        (false, false) => format!("{qualified} {:?} is forbidden: {msg}", info.name),
    };
    let mut details = json!({"group": info.api_group, "kind": info.resource});
    if !info.name.is_empty() {
        details["name"] = json!(info.name);
    }
    ApiError {
        code: 403,
        reason: "Forbidden",
        message,
        details: Some(details),
    }
}

/// Validation of a Role's or ClusterRole's `rules` (upstream's
/// `ValidatePolicyRule`).
pub fn validate_rules(rules: &Value, namespaced: bool) -> Vec<Cause> {
    let mut errs = Vec::new();
    for (i, r) in strs_of(rules).enumerate() {
        let f = |s: &str| format!("rules[{i}].{s}");
        let empty = |k: &str| r[k].as_array().is_none_or(|a| a.is_empty());
        if empty("verbs") {
            errs.push(required(&f("verbs")));
        }
        if !empty("nonResourceURLs") {
            if namespaced {
                errs.push(invalid_value(
                    &f("nonResourceURLs"),
                    &r["nonResourceURLs"],
                    "namespaced rules cannot apply to non-resource URLs",
                ));
            }
            if !empty("apiGroups") || !empty("resources") || !empty("resourceNames") {
                errs.push(invalid_value(
                    &f("nonResourceURLs"),
                    &r["nonResourceURLs"],
                    "rules cannot apply to both regular resources and non-resource URLs",
                ));
            }
            continue;
        }
        if empty("apiGroups") {
            errs.push(required(&f("apiGroups")));
        }
        if empty("resources") {
            errs.push(required(&f("resources")));
        }
    }
    errs
}

/// Validation of a RoleBinding or ClusterRoleBinding (`roleRef` required,
/// of a kind the binding may name, and immutable; subjects well formed).
pub fn validate_binding(storage: Storage, obj: &Value, old: Option<&Value>) -> Vec<Cause> {
    let mut errs = Vec::new();
    let rr = &obj["roleRef"];
    let kinds: &[&str] = if storage == Storage::RoleBindings {
        &["Role", "ClusterRole"]
    } else {
        &["ClusterRole"]
    };
    let kind = rr["kind"].as_str().unwrap_or_default();
    if !kinds.contains(&kind) {
        errs.push(cause(
            "FieldValueNotSupported",
            "roleRef.kind",
            format!(
                "Unsupported value: {}: supported values: {}",
                json!(kind),
                kinds
                    .iter()
                    .map(|k| format!("\"{k}\""))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ));
    }
    if rr["apiGroup"] != "rbac.authorization.k8s.io" {
        errs.push(cause(
            "FieldValueNotSupported",
            "roleRef.apiGroup",
            format!(
                "Unsupported value: {}: supported values: \"rbac.authorization.k8s.io\"",
                rr["apiGroup"]
            ),
        ));
    }
    if rr["name"].as_str().is_none_or(str::is_empty) {
        errs.push(required("roleRef.name"));
    }
    if let Some(old) = old
        && old["roleRef"] != obj["roleRef"]
    {
        errs.push(invalid_value(
            "roleRef",
            &obj["roleRef"],
            "cannot change roleRef",
        ));
    }
    for (i, s) in strs_of(&obj["subjects"]).enumerate() {
        let f = |k: &str| format!("subjects[{i}].{k}");
        if s["name"].as_str().is_none_or(str::is_empty) {
            errs.push(required(&f("name")));
        }
        match s["kind"].as_str().unwrap_or_default() {
            "ServiceAccount" => {
                if storage == Storage::ClusterRoleBindings
                    && s["namespace"].as_str().is_none_or(str::is_empty)
                {
                    errs.push(required(&f("namespace")));
                }
            }
            "User" | "Group" => {}
            other => errs.push(cause(
                "FieldValueNotSupported",
                &f("kind"),
                format!(
                    "Unsupported value: {}: supported values: \"ServiceAccount\", \"User\", \"Group\"",
                    json!(other)
                ),
            )),
        }
    }
    errs
}

/// Answers a SubjectAccessReview or SelfSubjectAccessReview body
/// (`authorization.k8s.io/v1`): the same decision a request with those
/// attributes would get. `requester` is the caller (for the self review).
pub fn access_review(
    st: &State,
    body: &Value,
    self_review: bool,
    requester: &UserInfo,
) -> Result<Value, ApiError> {
    let spec = &body["spec"];
    let user = if self_review {
        requester.clone()
    } else {
        let name = spec["user"].as_str().unwrap_or_default();
        let groups: Vec<String> = strs(&spec["groups"]).map(str::to_string).collect();
        if name.is_empty() && groups.is_empty() {
            return Err(ApiError::invalid(
                crate::errors::Target {
                    group: "authorization.k8s.io",
                    resource: "subjectaccessreviews",
                    kind: "SubjectAccessReview",
                    name: "",
                },
                vec![required("spec.user")],
            ));
        }
        UserInfo {
            name: name.to_string(),
            groups,
        }
    };
    let info = if spec["resourceAttributes"].is_object() {
        let ra = &spec["resourceAttributes"];
        let s = |k: &str| ra[k].as_str().unwrap_or_default().to_string();
        RequestInfo {
            resource_request: true,
            path: String::new(),
            verb: s("verb"),
            api_group: s("group"),
            resource: s("resource"),
            subresource: s("subresource"),
            namespace: s("namespace"),
            name: s("name"),
        }
    } else if spec["nonResourceAttributes"].is_object() {
        let nra = &spec["nonResourceAttributes"];
        RequestInfo {
            resource_request: false,
            path: nra["path"].as_str().unwrap_or_default().to_string(),
            verb: nra["verb"].as_str().unwrap_or_default().to_string(),
            ..Default::default()
        }
    } else {
        return Err(ApiError::bad_request(
            "exactly one of nonResourceAttributes or resourceAttributes must be specified",
        ));
    };
    let mut out = body.clone();
    out["status"] = match authorize(st, &user, &info) {
        Decision::Allow => json!({"allowed": true, "reason": "RBAC: allowed"}),
        Decision::Deny(reason) if reason.is_empty() => json!({"allowed": false}),
        Decision::Deny(reason) => json!({"allowed": false, "reason": reason}),
    };
    if out["metadata"].is_null() {
        out["metadata"] = json!({});
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(verb: &str, group: &str, res: &str, sub: &str, ns: &str, name: &str) -> RequestInfo {
        RequestInfo {
            resource_request: true,
            path: String::new(),
            verb: verb.into(),
            api_group: group.into(),
            resource: res.into(),
            subresource: sub.into(),
            namespace: ns.into(),
            name: name.into(),
        }
    }

    /// Cases after upstream's `TestRuleMatches`/`TestResourceMatches`
    /// (plugin/pkg/auth/authorizer/rbac/rbac_test.go, subject_locator and
    /// `rbac/v1/evaluation_helpers_test.go`).
    #[test]
    fn rule_matching_table() {
        let cases: Vec<(&str, Value, RequestInfo, bool)> = vec![
            (
                "star verb, exact group, exact resource",
                json!({"verbs": ["*"], "apiGroups": [""], "resources": ["pods"]}),
                info("get", "", "pods", "", "ns", "p"),
                true,
            ),
            (
                "star group",
                json!({"verbs": ["get"], "apiGroups": ["*"], "resources": ["deployments"]}),
                info("get", "apps", "deployments", "", "ns", "d"),
                true,
            ),
            (
                "wrong group",
                json!({"verbs": ["get"], "apiGroups": ["extensions"], "resources": ["deployments"]}),
                info("get", "apps", "deployments", "", "ns", "d"),
                false,
            ),
            (
                "resource does not cover its subresource",
                json!({"verbs": ["patch"], "apiGroups": [""], "resources": ["nodes"]}),
                info("patch", "", "nodes", "status", "", "n"),
                false,
            ),
            (
                "resource/subresource",
                json!({"verbs": ["patch"], "apiGroups": [""], "resources": ["nodes/status"]}),
                info("patch", "", "nodes", "status", "", "n"),
                true,
            ),
            (
                "subresource does not cover the resource",
                json!({"verbs": ["patch"], "apiGroups": [""], "resources": ["nodes/status"]}),
                info("patch", "", "nodes", "", "", "n"),
                false,
            ),
            (
                "*/subresource",
                json!({"verbs": ["get"], "apiGroups": [""], "resources": ["*/status"]}),
                info("get", "", "pods", "status", "ns", "p"),
                true,
            ),
            (
                "*/subresource is not */other",
                json!({"verbs": ["get"], "apiGroups": [""], "resources": ["*/status"]}),
                info("get", "", "pods", "log", "ns", "p"),
                false,
            ),
            (
                "star resource covers subresources",
                json!({"verbs": ["get"], "apiGroups": [""], "resources": ["*"]}),
                info("get", "", "pods", "log", "ns", "p"),
                true,
            ),
            (
                "resourceNames match",
                json!({"verbs": ["get"], "apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["a"]}),
                info("get", "", "configmaps", "", "ns", "a"),
                true,
            ),
            (
                "resourceNames do not match",
                json!({"verbs": ["get"], "apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["a"]}),
                info("get", "", "configmaps", "", "ns", "b"),
                false,
            ),
            (
                "resourceNames never match an unnamed list",
                json!({"verbs": ["list"], "apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["a"]}),
                info("list", "", "configmaps", "", "ns", ""),
                false,
            ),
            (
                "verb not listed",
                json!({"verbs": ["get", "list"], "apiGroups": [""], "resources": ["pods"]}),
                info("watch", "", "pods", "", "ns", ""),
                false,
            ),
            (
                "non-resource rule does not cover resources",
                json!({"verbs": ["get"], "nonResourceURLs": ["*"]}),
                info("get", "", "pods", "", "ns", ""),
                false,
            ),
        ];
        for (name, rule, i, want) in cases {
            assert_eq!(rule_allows(&rule, &i), want, "{name}");
        }
        let path = |p: &str| RequestInfo {
            path: p.into(),
            verb: "get".into(),
            ..Default::default()
        };
        let r = json!({"verbs": ["get"], "nonResourceURLs": ["/metrics", "/logs/*"]});
        assert!(rule_allows(&r, &path("/metrics")));
        assert!(rule_allows(&r, &path("/logs/kube.log")));
        assert!(!rule_allows(&r, &path("/metricsx")));
        assert!(!rule_allows(
            &json!({"verbs": ["post"], "nonResourceURLs": ["*"]}),
            &path("/x")
        ));
    }

    #[test]
    fn subjects() {
        let sa = UserInfo::service_account("ns1", "ctl");
        let sub = |k: &str, n: &str, ns: Option<&str>| {
            let mut v = json!({"kind": k, "name": n});
            if let Some(ns) = ns {
                v["namespace"] = json!(ns);
            }
            v
        };
        assert!(subject_matches(
            &sub("ServiceAccount", "ctl", Some("ns1")),
            &sa,
            ""
        ));
        assert!(!subject_matches(
            &sub("ServiceAccount", "ctl", Some("ns2")),
            &sa,
            ""
        ));
        // a RoleBinding's subject without namespace means the binding's
        assert!(subject_matches(
            &sub("ServiceAccount", "ctl", None),
            &sa,
            "ns1"
        ));
        assert!(!subject_matches(
            &sub("ServiceAccount", "ctl", None),
            &sa,
            ""
        ));
        assert!(subject_matches(
            &sub("Group", "system:serviceaccounts:ns1", None),
            &sa,
            ""
        ));
        assert!(subject_matches(
            &sub("Group", "system:authenticated", None),
            &sa,
            ""
        ));
        assert!(!subject_matches(&sub("User", "ctl", None), &sa, ""));
        assert!(subject_matches(
            &sub("User", "system:serviceaccount:ns1:ctl", None),
            &sa,
            ""
        ));
    }

    /// Upstream's requestinfo_test.go cases, the ones this server serves.
    #[test]
    fn request_info_table() {
        type Want<'a> = (&'a str, &'a str, &'a str, &'a str, &'a str, &'a str);
        let cases: Vec<(&str, &str, &str, Want)> = vec![
            (
                "GET",
                "/api/v1/namespaces",
                "",
                ("list", "", "namespaces", "", "", ""),
            ),
            (
                "GET",
                "/api/v1/namespaces/other",
                "",
                ("get", "", "namespaces", "", "other", "other"),
            ),
            (
                "GET",
                "/api/v1/namespaces/other/pods",
                "",
                ("list", "", "pods", "", "other", ""),
            ),
            (
                "GET",
                "/api/v1/namespaces/other/pods/foo",
                "",
                ("get", "", "pods", "", "other", "foo"),
            ),
            (
                "HEAD",
                "/api/v1/namespaces/other/pods/foo",
                "",
                ("get", "", "pods", "", "other", "foo"),
            ),
            ("GET", "/api/v1/pods", "", ("list", "", "pods", "", "", "")),
            (
                "GET",
                "/api/v1/pods",
                "watch=true",
                ("watch", "", "pods", "", "", ""),
            ),
            (
                "GET",
                "/api/v1/watch/namespaces/other/pods",
                "",
                ("watch", "", "pods", "", "other", ""),
            ),
            (
                "GET",
                "/api/v1/namespaces/other/pods",
                "fieldSelector=metadata.name%3Dfoo",
                ("list", "", "pods", "", "other", "foo"),
            ),
            (
                "GET",
                "/api/v1/namespaces/other/pods",
                "watch=1&fieldSelector=metadata.name%3D%3Dfoo",
                ("watch", "", "pods", "", "other", "foo"),
            ),
            (
                "POST",
                "/api/v1/namespaces/other/pods",
                "",
                ("create", "", "pods", "", "other", ""),
            ),
            (
                "PUT",
                "/api/v1/namespaces/other/pods/foo",
                "",
                ("update", "", "pods", "", "other", "foo"),
            ),
            (
                "PATCH",
                "/api/v1/nodes/n1/status",
                "",
                ("patch", "", "nodes", "status", "", "n1"),
            ),
            (
                "DELETE",
                "/api/v1/namespaces/other/pods/foo",
                "",
                ("delete", "", "pods", "", "other", "foo"),
            ),
            (
                "DELETE",
                "/api/v1/namespaces/other/pods",
                "",
                ("deletecollection", "", "pods", "", "other", ""),
            ),
            (
                "POST",
                "/api/v1/namespaces/other/pods/foo/eviction",
                "",
                ("create", "", "pods", "eviction", "other", "foo"),
            ),
            (
                "PUT",
                "/api/v1/namespaces/other/finalize",
                "",
                ("update", "", "namespaces", "finalize", "other", "other"),
            ),
            (
                "PUT",
                "/api/v1/namespaces/other/status",
                "",
                ("update", "", "namespaces", "status", "other", "other"),
            ),
            (
                "PUT",
                "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/l1",
                "",
                (
                    "update",
                    "coordination.k8s.io",
                    "leases",
                    "",
                    "kube-node-lease",
                    "l1",
                ),
            ),
            (
                "GET",
                "/apis/apps/v1/namespaces/other/deployments/d/scale",
                "",
                ("get", "apps", "deployments", "scale", "other", "d"),
            ),
        ];
        for (m, p, q, (verb, g, r, sub, ns, name)) in cases {
            let i = request_info(m, p, q);
            assert!(i.resource_request, "{m} {p}");
            assert_eq!(
                (
                    i.verb.as_str(),
                    i.api_group.as_str(),
                    i.resource.as_str(),
                    i.subresource.as_str(),
                    i.namespace.as_str(),
                    i.name.as_str()
                ),
                (verb, g, r, sub, ns, name),
                "{m} {p}?{q}"
            );
        }
        for p in [
            "/api",
            "/api/v1",
            "/apis",
            "/apis/apps/v1",
            "/healthz",
            "/version",
            "/openapi/v3",
        ] {
            let i = request_info("GET", p, "");
            assert!(!i.resource_request, "{p}");
            assert_eq!(i.verb, "get");
        }
    }

    #[test]
    fn forbidden_messages() {
        let u = UserInfo::service_account("ns", "sa");
        let e = forbidden(&u, &info("get", "", "pods", "", "default", "p1"), "");
        assert_eq!(
            e.message,
            "pods \"p1\" is forbidden: User \"system:serviceaccount:ns:sa\" cannot get resource \"pods\" in API group \"\" in the namespace \"default\""
        );
        let e = forbidden(&u, &info("list", "apps", "deployments", "", "", ""), "");
        assert_eq!(
            e.message,
            "deployments.apps is forbidden: User \"system:serviceaccount:ns:sa\" cannot list resource \"deployments\" in API group \"apps\" at the cluster scope"
        );
        let e = forbidden(
            &u,
            &info("patch", "", "nodes", "status", "", "n"),
            "RBAC: clusterrole.rbac.authorization.k8s.io \"x\" not found",
        );
        assert_eq!(
            e.message,
            "nodes \"n\" is forbidden: User \"system:serviceaccount:ns:sa\" cannot patch resource \"nodes/status\" in API group \"\" at the cluster scope: RBAC: clusterrole.rbac.authorization.k8s.io \"x\" not found"
        );
        assert_eq!(
            e.details,
            Some(json!({"group": "", "kind": "nodes", "name": "n"}))
        );
        let p = RequestInfo {
            path: "/metrics".into(),
            verb: "get".into(),
            ..Default::default()
        };
        assert_eq!(
            forbidden(&UserInfo::anonymous(), &p, "").message,
            "forbidden: User \"system:anonymous\" cannot get path \"/metrics\""
        );
    }
}
