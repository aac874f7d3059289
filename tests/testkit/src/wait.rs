//! Bounded polling and small process and network helpers.

use std::path::Path;
use std::time::{Duration, Instant};

/// How often [`wait_for`] and [`wait_until`] re-check their condition.
pub const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// Polls `cond` every [`POLL_INTERVAL`] until it holds or `timeout` has passed; returns whether
/// it held. Blocks the thread: in async tests use [`wait_until`], which lets the runtime's
/// other tasks (e.g. a backend's supervisors) run meanwhile.
pub fn wait_for(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// Async [`wait_for`]: polls `cond` every [`POLL_INTERVAL`] with `tokio::time::sleep`.
pub async fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// [`wait_until`] for a condition that is itself async (an HTTP call, an API read): awaits
/// `cond()` every [`POLL_INTERVAL`] until it is true or `timeout` has passed; returns whether it
/// held.
pub async fn eventually<F, Fut>(timeout: Duration, mut cond: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if cond().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// A TCP port on 127.0.0.1 that was free a moment ago (bound to port 0, then released). Another
/// process may take it before the test does; the window is small enough for tests.
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0)).expect("binding 127.0.0.1:0");
    listener
        .local_addr()
        .expect("local address of a bound listener")
        .port()
}

/// Whether process `pid` exists and is not a zombie. Zombies count as gone: a killed process
/// whose parent has not reaped it yet still answers `kill(pid, 0)`. Uses `/proc/<pid>/stat`
/// where there is a `/proc`, else `kill(pid, 0)`.
pub fn process_alive(pid: u32) -> bool {
    let Ok(raw) = i32::try_from(pid) else {
        return false;
    };
    if Path::new("/proc/self/stat").exists() {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            // The state letter follows the parenthesised command name, which may itself
            // contain spaces and parentheses, so look after the last ')'.
            Ok(stat) => stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next())
                .is_some_and(|state| state != "Z" && state != "X"),
            Err(_) => false,
        }
    } else {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(raw), None).is_ok()
    }
}

/// Whether `kill(pid, 0)` finds the process (zombies included). After a parent has reaped its
/// child this is the strictest "it is gone" check.
pub fn pid_exists(pid: u32) -> bool {
    i32::try_from(pid)
        .is_ok_and(|raw| nix::sys::signal::kill(nix::unistd::Pid::from_raw(raw), None).is_ok())
}

/// Reads a pid written by [`crate::Behaviour::WritePidFile`], if the file is there and complete.
pub fn read_pid_file(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// `file://` URL of an absolute path (`bizUrl` form), percent-encoding what a URL may not hold.
pub fn file_url(path: &Path) -> String {
    let mut out = String::from("file://");
    for byte in path.as_os_str().as_encoded_bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'/' | b'-' | b'_' | b'.' | b'~' => {
                out.push(char::from(*byte));
            }
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_for_reports_whether_the_condition_held() {
        let mut calls = 0;
        assert!(wait_for(Duration::from_secs(5), || {
            calls += 1;
            calls >= 3
        }));
        assert_eq!(calls, 3);
        assert!(!wait_for(Duration::from_millis(50), || false));
    }

    #[test]
    fn file_urls_are_percent_encoded() {
        let cases = [
            ("/tmp/a.jar", "file:///tmp/a.jar"),
            ("/tmp/a b.jar", "file:///tmp/a%20b.jar"),
            ("/tmp/100%.jar", "file:///tmp/100%25.jar"),
        ];
        for (path, want) in cases {
            assert_eq!(file_url(Path::new(path)), want);
        }
    }

    #[test]
    fn this_process_is_alive_and_a_reaped_child_is_not() {
        assert!(process_alive(std::process::id()));
        let mut child = std::process::Command::new("true")
            .spawn()
            .expect("spawn true");
        let pid = child.id();
        child.wait().expect("wait");
        assert!(!process_alive(pid));
        assert!(!pid_exists(pid));
    }
}
