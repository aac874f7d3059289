//! Which kubelet API call a request is, from its path (pure).

/// A kubelet API request the controller understands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Call {
    /// `GET /containerLogs/{namespace}/{pod}/{container}`.
    Logs {
        /// Pod namespace.
        namespace: String,
        /// Pod name.
        pod: String,
        /// Container (module) name.
        container: String,
    },
    /// A streaming call a module has no use for (`exec`, `attach`, `portForward`, `run`):
    /// answered 501 with this name.
    Unsupported(&'static str),
    /// Anything else: 404.
    Unknown,
}

/// Classifies a request path.
pub fn classify(path: &str) -> Call {
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match parts.as_slice() {
        ["containerLogs", ns, pod, container]
            if !ns.is_empty() && !pod.is_empty() && !container.is_empty() =>
        {
            Call::Logs {
                namespace: (*ns).to_owned(),
                pod: (*pod).to_owned(),
                container: (*container).to_owned(),
            }
        }
        ["exec", ..] => Call::Unsupported("exec"),
        ["attach", ..] => Call::Unsupported("attach"),
        ["portForward", ..] => Call::Unsupported("portForward"),
        ["run", ..] => Call::Unsupported("run"),
        _ => Call::Unknown,
    }
}

/// The agent's log options from the kubelet query: the kubelet's names are the agent's, and
/// only those are passed on (a stray parameter cannot reach the agent).
pub fn agent_query(pairs: &[(String, String)]) -> Vec<(String, String)> {
    const PASSED: [&str; 6] = [
        "follow",
        "tailLines",
        "sinceSeconds",
        "sinceTime",
        "timestamps",
        "limitBytes",
    ];
    pairs
        .iter()
        .filter(|(k, _)| PASSED.contains(&k.as_str()))
        .cloned()
        .collect()
}

/// `name:version` of the module a container runs, from the `containerID` the controller
/// writes (`koupleless://<base>/<name>:<version>`).
pub fn module_of_container_id(id: &str) -> Option<(String, String)> {
    let rest = id.strip_prefix("koupleless://")?;
    let (_, key) = rest.rsplit_once('/')?;
    let (name, version) = key.split_once(':')?;
    (!name.is_empty() && !version.is_empty()).then(|| (name.to_owned(), version.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        let logs = |ns: &str, pod: &str, c: &str| Call::Logs {
            namespace: ns.into(),
            pod: pod.into(),
            container: c.into(),
        };
        let cases = [
            (
                "/containerLogs/default/biz1-abc/biz1",
                logs("default", "biz1-abc", "biz1"),
            ),
            ("containerLogs/ns/p/c", logs("ns", "p", "c")),
            ("/containerLogs/default/biz1", Call::Unknown),
            ("/containerLogs/default//biz1", Call::Unknown),
            ("/containerLogs/a/b/c/d", Call::Unknown),
            ("/exec/default/p/c", Call::Unsupported("exec")),
            ("/attach/default/p/c", Call::Unsupported("attach")),
            ("/portForward/default/p", Call::Unsupported("portForward")),
            ("/run/default/p/c", Call::Unsupported("run")),
            ("/pods", Call::Unknown),
            ("/", Call::Unknown),
        ];
        for (path, want) in cases {
            assert_eq!(classify(path), want, "{path}");
        }
    }

    #[test]
    fn query_passed_to_the_agent() {
        let q = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect()
        };
        assert_eq!(
            agent_query(&q(&[
                ("follow", "true"),
                ("tailLines", "5"),
                ("previous", "false"),
                ("insecureSkipTLSVerifyBackend", "true"),
                ("timestamps", "true"),
            ])),
            q(&[
                ("follow", "true"),
                ("tailLines", "5"),
                ("timestamps", "true")
            ])
        );
    }

    #[test]
    fn container_ids() {
        let cases = [
            (
                "koupleless://vnode.b.dev/biz1:1.0.0",
                Some(("biz1", "1.0.0")),
            ),
            (
                "koupleless://10.0.0.1/biz:0.0.1-SNAPSHOT",
                Some(("biz", "0.0.1-SNAPSHOT")),
            ),
            ("containerd://abc", None),
            ("koupleless://base/biz1", None),
            ("koupleless://base/:1", None),
        ];
        for (id, want) in cases {
            assert_eq!(
                module_of_container_id(id),
                want.map(|(n, v)| (n.to_owned(), v.to_owned())),
                "{id}"
            );
        }
    }
}
