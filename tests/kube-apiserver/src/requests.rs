//! Counts the requests the server received by verb and resource, as kube-apiserver's
//! `apiserver_request_total` does, so that tests and benchmarks can tell how much a client
//! writes (e.g. API writes per base per minute at steady state).

use std::collections::BTreeMap;
use std::sync::Mutex;

use http::{Method, Uri};

/// `(verb, resource)` → requests. Resources are `plural[/subresource]`, with `.group` for
/// named API groups (`leases.coordination.k8s.io`, `nodes/status`); verbs are the API
/// server's (`get`, `list`, `watch`, `create`, `update`, `patch`, `delete`,
/// `deletecollection`). Paths outside resources (discovery, `/version`) count as
/// `("get", "<path>")`.
pub type Counts = BTreeMap<(String, String), u64>;

/// The request counter of one server.
#[derive(Debug, Default)]
pub struct RequestCounter {
    counts: Mutex<Counts>,
}

/// Verbs that change state.
pub const WRITE_VERBS: &[&str] = &["create", "update", "patch", "delete", "deletecollection"];

impl RequestCounter {
    /// Counts one request.
    pub fn record(&self, method: &Method, uri: &Uri) {
        let key = classify(method, uri);
        *self
            .counts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(key)
            .or_default() += 1;
    }

    /// Every count so far.
    pub fn snapshot(&self) -> Counts {
        self.counts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// The writes in `after` that were not in `before`, by `(verb, resource)` (zeros left out).
pub fn writes_between(before: &Counts, after: &Counts) -> Counts {
    after
        .iter()
        .filter(|((verb, _), _)| WRITE_VERBS.contains(&verb.as_str()))
        .filter_map(|(k, n)| {
            let d = n - before.get(k).copied().unwrap_or(0);
            (d > 0).then(|| (k.clone(), d))
        })
        .collect()
}

/// `(verb, resource)` of one request.
pub fn classify(method: &Method, uri: &Uri) -> (String, String) {
    let path = uri.path();
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, rest) = match segs.as_slice() {
        ["api", _version, rest @ ..] => ("", rest),
        ["apis", group, _version, rest @ ..] => (*group, rest),
        _ => return ("get".into(), path.into()),
    };
    // namespaces/<ns>/<resource>/... is a namespaced resource; namespaces[/<name>] itself
    // is the Namespace resource.
    let rest = match rest {
        ["namespaces", _ns, tail @ ..] if !tail.is_empty() => tail,
        r => r,
    };
    let Some((resource, tail)) = rest.split_first() else {
        return ("get".into(), path.into());
    };
    let name = tail.first();
    let mut res = match group {
        "" => (*resource).to_owned(),
        g => format!("{resource}.{g}"),
    };
    if let Some(sub) = tail.get(1) {
        res = format!("{res}/{sub}");
    }
    let watch = uri
        .query()
        .is_some_and(|q| q.split('&').any(|kv| kv == "watch=true" || kv == "watch=1"));
    let verb = match *method {
        Method::GET if watch => "watch",
        Method::GET if name.is_some() => "get",
        Method::GET => "list",
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE if name.is_some() => "delete",
        Method::DELETE => "deletecollection",
        _ => "other",
    };
    (verb.into(), res)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classify_table() {
        let cases = [
            ("GET", "/api/v1/nodes", "list", "nodes"),
            ("GET", "/api/v1/nodes?watch=true&rv=1", "watch", "nodes"),
            ("GET", "/api/v1/nodes/n1", "get", "nodes"),
            ("PATCH", "/api/v1/nodes/n1/status", "patch", "nodes/status"),
            (
                "POST",
                "/api/v1/namespaces/default/events",
                "create",
                "events",
            ),
            (
                "PUT",
                "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/n1",
                "update",
                "leases.coordination.k8s.io",
            ),
            (
                "DELETE",
                "/api/v1/namespaces/default/pods",
                "deletecollection",
                "pods",
            ),
            (
                "DELETE",
                "/api/v1/namespaces/default",
                "delete",
                "namespaces",
            ),
            ("GET", "/api/v1/namespaces", "list", "namespaces"),
            ("GET", "/version", "get", "/version"),
            ("GET", "/apis", "get", "/apis"),
        ];
        for (m, u, verb, res) in cases {
            let uri: Uri = u.parse().unwrap();
            assert_eq!(
                classify(&m.parse().unwrap(), &uri),
                (verb.to_owned(), res.to_owned()),
                "{m} {u}"
            );
        }
    }

    #[test]
    fn writes_between_counts_only_new_writes() {
        let c = RequestCounter::default();
        let patch = Method::PATCH;
        let node: Uri = "/api/v1/nodes/n1/status".parse().unwrap();
        c.record(&patch, &node);
        let before = c.snapshot();
        c.record(&patch, &node);
        c.record(&Method::GET, &node);
        let d = writes_between(&before, &c.snapshot());
        assert_eq!(
            d,
            Counts::from([(("patch".into(), "nodes/status".into()), 1)])
        );
    }
}
