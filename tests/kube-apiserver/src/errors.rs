//! API errors, rendered as `meta.k8s.io/v1` `Status` objects with the reason and
//! code the real API server uses for the same condition.

use axum::response::{IntoResponse, Response};
use http::StatusCode;
use serde_json::{Value, json};

/// One `StatusCause` (`details.causes[]`).
#[derive(Debug, Clone)]
pub struct Cause {
    /// Machine-readable reason, e.g. `FieldValueRequired`.
    pub reason: String,
    /// Human-readable message.
    pub message: String,
    /// The field path, e.g. `spec.containers`.
    pub field: String,
}

/// An error answered as a `Status` object.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// HTTP status code (also `Status.code`).
    pub code: u16,
    /// `Status.reason`, e.g. `NotFound`.
    pub reason: &'static str,
    /// `Status.message`.
    pub message: String,
    /// `Status.details`, when the real server fills it.
    pub details: Option<Value>,
}

/// Result alias for request handling.
pub type ApiResult<T> = Result<T, ApiError>;

/// Identifies the object an error is about: (group, resource plural, name).
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    /// API group ("" for core).
    pub group: &'a str,
    /// Resource plural, e.g. `pods`.
    pub resource: &'a str,
    /// Kind, e.g. `Pod` (used by `Invalid`, which names the kind).
    pub kind: &'a str,
    /// Object name.
    pub name: &'a str,
}

impl Target<'_> {
    /// `pods` or `deployments.apps`, the qualified resource used in messages.
    pub fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.resource.to_string()
        } else {
            format!("{}.{}", self.resource, self.group)
        }
    }

    fn details(&self) -> Value {
        let mut d = json!({ "name": self.name, "kind": self.resource });
        if !self.group.is_empty() {
            d["group"] = json!(self.group);
        }
        d
    }

    fn kind_details(&self) -> Value {
        let mut d = json!({ "name": self.name, "kind": self.kind });
        if !self.group.is_empty() {
            d["group"] = json!(self.group);
        }
        d
    }
}

impl ApiError {
    fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            code,
            reason,
            message: message.into(),
            details: None,
        }
    }

    /// 404 for a named object.
    pub fn not_found(t: Target<'_>) -> Self {
        ApiError {
            details: Some(t.details()),
            ..Self::new(
                404,
                "NotFound",
                format!("{} \"{}\" not found", t.qualified(), t.name),
            )
        }
    }

    /// 404 for a path the server does not serve.
    pub fn no_route() -> Self {
        ApiError {
            details: Some(json!({})),
            ..Self::new(
                404,
                "NotFound",
                "the server could not find the requested resource",
            )
        }
    }

    /// 409 AlreadyExists.
    pub fn already_exists(t: Target<'_>) -> Self {
        ApiError {
            details: Some(t.details()),
            ..Self::new(
                409,
                "AlreadyExists",
                format!("{} \"{}\" already exists", t.qualified(), t.name),
            )
        }
    }

    /// 409 Conflict for a stale resourceVersion.
    pub fn conflict_stale(t: Target<'_>) -> Self {
        Self::conflict(
            t,
            "the object has been modified; please apply your changes to the latest version and try again",
        )
    }

    /// 409 Conflict with a custom explanation.
    pub fn conflict(t: Target<'_>, why: &str) -> Self {
        ApiError {
            details: Some(t.details()),
            ..Self::new(
                409,
                "Conflict",
                format!(
                    "Operation cannot be fulfilled on {} \"{}\": {}",
                    t.qualified(),
                    t.name,
                    why
                ),
            )
        }
    }

    /// 422 Invalid with field causes.
    pub fn invalid(t: Target<'_>, causes: Vec<Cause>) -> Self {
        let summary: Vec<String> = causes
            .iter()
            .map(|c| {
                if c.field.is_empty() {
                    c.message.clone()
                } else {
                    format!("{}: {}", c.field, c.message)
                }
            })
            .collect();
        let summary = if summary.len() == 1 {
            summary[0].clone()
        } else {
            format!("[{}]", summary.join(", "))
        };
        let mut details = t.kind_details();
        details["causes"] = Value::Array(
            causes
                .iter()
                .map(|c| json!({ "reason": c.reason, "message": c.message, "field": c.field }))
                .collect(),
        );
        let kind_qualified = if t.group.is_empty() {
            t.kind.to_string()
        } else {
            format!("{}.{}", t.kind, t.group)
        };
        ApiError {
            details: Some(details),
            ..Self::new(
                422,
                "Invalid",
                format!("{} \"{}\" is invalid: {}", kind_qualified, t.name, summary),
            )
        }
    }

    /// 400 BadRequest.
    pub fn bad_request(msg: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", msg)
    }

    /// 403 Forbidden.
    pub fn forbidden(t: Target<'_>, why: &str) -> Self {
        ApiError {
            details: Some(t.details()),
            ..Self::new(
                403,
                "Forbidden",
                format!("{} \"{}\" is forbidden: {}", t.qualified(), t.name, why),
            )
        }
    }

    /// 405 MethodNotAllowed.
    pub fn method_not_allowed() -> Self {
        ApiError {
            details: Some(json!({})),
            ..Self::new(
                405,
                "MethodNotAllowed",
                "the server does not allow this method on the requested resource",
            )
        }
    }

    /// 406 NotAcceptable.
    pub fn not_acceptable(accept: &str) -> Self {
        Self::new(
            406,
            "NotAcceptable",
            format!(
                "only the following media types are accepted: application/json, application/vnd.kubernetes.protobuf (asked for {accept:?}; this test server renders tables and partial metadata in JSON only)"
            ),
        )
    }

    /// 415 UnsupportedMediaType.
    pub fn unsupported_media_type(ct: &str, accepted: &[&str]) -> Self {
        Self::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format ({ct:?}) - accepted media types include: {}",
                accepted.join(", ")
            ),
        )
    }

    /// 410 Gone / Expired.
    pub fn expired(msg: impl Into<String>) -> Self {
        Self::new(410, "Expired", msg)
    }

    /// 504 Timeout.
    pub fn timeout(msg: impl Into<String>) -> Self {
        Self::new(504, "Timeout", msg)
    }

    /// 500 InternalError.
    pub fn internal(msg: impl Into<String>) -> Self {
        ApiError {
            details: Some(json!({ "causes": [{ "message": msg.into() }] })),
            ..Self::new(500, "InternalError", "")
        }
        .fill_internal()
    }

    fn fill_internal(mut self) -> Self {
        let inner = self
            .details
            .as_ref()
            .and_then(|d| d["causes"][0]["message"].as_str())
            .unwrap_or("")
            .to_string();
        self.message = format!("Internal error occurred: {inner}");
        self
    }

    /// 501-ish: the real server supports this but this test server does not.
    /// Answered as 400 BadRequest with a message that says so, never as success.
    pub fn unsupported(what: &str) -> Self {
        Self::bad_request(format!(
            "not supported by the koupleless test API server: {what}"
        ))
    }

    /// The `Status` object.
    pub fn status(&self) -> Value {
        let mut s = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some(d) = &self.details {
            s["details"] = d.clone();
        }
        s
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = StatusCode::from_u16(self.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::to_vec(&self.status()).unwrap_or_default();
        (
            code,
            [(http::header::CONTENT_TYPE, "application/json")],
            body,
        )
            .into_response()
    }
}

/// Shorthand for a cause.
pub fn cause(reason: &str, field: &str, message: impl Into<String>) -> Cause {
    Cause {
        reason: reason.to_string(),
        field: field.to_string(),
        message: message.into(),
    }
}

/// `field: Required value`.
pub fn required(field: &str) -> Cause {
    cause("FieldValueRequired", field, "Required value")
}

/// `field: Invalid value: "x": why`.
pub fn invalid_value(field: &str, value: &Value, why: &str) -> Cause {
    let shown = match value {
        Value::String(s) => format!("{s:?}"),
        other => other.to_string(),
    };
    cause(
        "FieldValueInvalid",
        field,
        format!("Invalid value: {shown}: {why}"),
    )
}

/// `field: Forbidden: why`.
pub fn forbidden_field(field: &str, why: &str) -> Cause {
    cause("FieldValueForbidden", field, format!("Forbidden: {why}"))
}
