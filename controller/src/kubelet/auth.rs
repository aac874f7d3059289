//! Who may call the kubelet API, decided as a kubelet does (pure rules; the reviews are I/O
//! in [`super`]): a client certificate signed by the configured CA (the API server's kubelet
//! client certificate) is trusted; a bearer token is authenticated with a TokenReview and
//! authorized with a SubjectAccessReview on the vnode's `nodes/proxy` (the kubelet's resource
//! for `containerLogs`) or `nodes/log`; anything else is 401.

/// What the caller presented.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Credential {
    /// A client certificate that the TLS layer verified against the client CA.
    ClientCert,
    /// `Authorization: Bearer <token>`.
    Bearer(String),
    /// Nothing usable.
    Anonymous,
}

/// Reads the credential of a request: a verified certificate wins over a header.
pub fn credential(verified_cert: bool, authorization: Option<&str>) -> Credential {
    if verified_cert {
        return Credential::ClientCert;
    }
    match authorization.and_then(|h| h.strip_prefix("Bearer ")) {
        Some(t) if !t.trim().is_empty() => Credential::Bearer(t.trim().to_owned()),
        _ => Credential::Anonymous,
    }
}

/// What to do with a request before any review.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum First {
    /// Serve it.
    Allow,
    /// Review the token (TokenReview, then SubjectAccessReview).
    Review(String),
    /// 401.
    Unauthorized(&'static str),
}

/// The first decision: `token_reviews` says whether bearer tokens are checked at all.
pub fn first(cred: Credential, token_reviews: bool) -> First {
    match cred {
        Credential::ClientCert => First::Allow,
        Credential::Bearer(t) if token_reviews => First::Review(t),
        Credential::Bearer(_) => {
            First::Unauthorized("bearer tokens are not accepted here (KUBELET_TOKEN_REVIEW=false)")
        }
        Credential::Anonymous => {
            First::Unauthorized("a client certificate or a bearer token is required")
        }
    }
}

/// The subresources of `nodes` whose permission lets a caller read container logs.
pub const LOG_SUBRESOURCES: [&str; 2] = ["proxy", "log"];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decisions() {
        let cases = [
            (true, None, true, First::Allow),
            (true, Some("Bearer x"), false, First::Allow),
            (false, Some("Bearer tok"), true, First::Review("tok".into())),
            (
                false,
                Some("Bearer tok"),
                false,
                First::Unauthorized(
                    "bearer tokens are not accepted here (KUBELET_TOKEN_REVIEW=false)",
                ),
            ),
            (
                false,
                Some("Basic abc"),
                true,
                First::Unauthorized("a client certificate or a bearer token is required"),
            ),
            (
                false,
                Some("Bearer  "),
                true,
                First::Unauthorized("a client certificate or a bearer token is required"),
            ),
            (
                false,
                None,
                true,
                First::Unauthorized("a client certificate or a bearer token is required"),
            ),
        ];
        for (cert, header, reviews, want) in cases {
            assert_eq!(
                first(credential(cert, header), reviews),
                want,
                "cert {cert} header {header:?} reviews {reviews}"
            );
        }
    }
}
