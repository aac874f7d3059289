//! Looking at the stack from outside: TCP and plain-HTTP checks against loopback addresses,
//! and the vnodes as the API test server lists them.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use serde_json::Value;

/// Whether something accepts TCP connections on `addr`.
pub fn listening(addr: SocketAddr) -> bool {
    TcpStream::connect_timeout(&addr, Duration::from_millis(300)).is_ok()
}

/// `GET http://<addr><path>` (HTTP/1.0, so the answer is neither chunked nor kept alive):
/// status and body.
pub fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "GET {path} HTTP/1.0\r\nHost: {addr}\r\nAccept: application/json\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not an HTTP answer: {head:?}")))?;
    Ok((status, body.to_owned()))
}

/// The `server:` address of the kubeconfig the API test server wrote (`http://host:port`).
pub fn kubeconfig_server(text: &str) -> Option<SocketAddr> {
    let url = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("server:"))?
        .trim()
        .trim_matches('"');
    url.strip_prefix("http://")?
        .trim_end_matches('/')
        .parse()
        .ok()
}

/// Every Node with its Ready condition status (`True`, `False`, `Unknown`, or `-` without
/// one), as `GET /api/v1/nodes` lists them.
pub fn nodes(api: SocketAddr) -> std::io::Result<Vec<(String, String)>> {
    let (status, body) = http_get(api, "/api/v1/nodes")?;
    if status != 200 {
        return Err(std::io::Error::other(format!(
            "GET /api/v1/nodes: {status}"
        )));
    }
    let list: Value = serde_json::from_str(&body).map_err(std::io::Error::other)?;
    Ok(list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|n| {
            let name = n["metadata"]["name"].as_str().unwrap_or("?").to_owned();
            let ready = n["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|c| c["type"] == "Ready")
                .and_then(|c| c["status"].as_str())
                .unwrap_or("-")
                .to_owned();
            (name, ready)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubeconfig_server_is_read_from_the_cluster_entry() {
        let text = "apiVersion: v1\nclusters:\n- cluster:\n    server: http://127.0.0.1:41234\n  name: test\n";
        assert_eq!(
            kubeconfig_server(text),
            Some("127.0.0.1:41234".parse().unwrap())
        );
        assert_eq!(
            kubeconfig_server("    server: \"http://127.0.0.1:8/\"\n"),
            Some("127.0.0.1:8".parse().unwrap())
        );
        assert_eq!(kubeconfig_server("server: https://10.0.0.1:6443"), None);
        assert_eq!(kubeconfig_server("clusters: []"), None);
    }
}
