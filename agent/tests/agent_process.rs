//! The agent binary as a child process: start-up logging and flag errors.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const AGENT: &str = env!("CARGO_BIN_EXE_koupleless-agent");

/// Runs the agent until it logs that it listens (or `deadline` passes), kills it, and returns
/// its log lines and whether it got that far.
fn run_until_listening(args: &[&str], deadline: Duration) -> (Vec<String>, bool) {
    let work = tempfile::tempdir().unwrap();
    let mut child = Command::new(AGENT)
        .args(["--port", "0", "--bind", "127.0.0.1", "--base-identity", "t"])
        .arg("--work-dir")
        .arg(work.path())
        .args(args)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("agent binary starts");
    let out = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut lines = Vec::new();
    let mut listening = false;
    let end = Instant::now() + deadline;
    while let Some(left) = end.checked_duration_since(Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(line) => {
                listening |= line.contains("Arklet HTTP API listening");
                lines.push(line);
                if listening {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    (lines, listening)
}

/// Without `--allow-url-prefix` the agent says once, at start, that any URL is accepted.
/// With one it does not.
#[test]
fn an_open_allow_list_is_logged_once_at_start() {
    let (lines, up) = run_until_listening(&[], Duration::from_secs(30));
    assert!(up, "agent did not start: {lines:#?}");
    let warned = |lines: &[String]| {
        lines
            .iter()
            .filter(|l| l.contains("packages are fetched from any http(s) URL"))
            .count()
    };
    assert_eq!(warned(&lines), 1, "{lines:#?}");
    let (lines, up) = run_until_listening(
        &["--allow-url-prefix", "https://repo.example/releases/"],
        Duration::from_secs(30),
    );
    assert!(up, "agent did not start: {lines:#?}");
    assert_eq!(warned(&lines), 0, "{lines:#?}");
}

/// An allow-list entry that cannot be compared safely is a start-up error naming it.
#[test]
fn a_bad_allow_rule_stops_the_start() {
    let work = tempfile::tempdir().unwrap();
    let out = Command::new(AGENT)
        .args(["--port", "0", "--bind", "127.0.0.1", "--base-identity", "t"])
        .arg("--work-dir")
        .arg(work.path())
        .args(["--allow-url-prefix", "https://user@repo.example/"])
        .env("NO_COLOR", "1")
        .output()
        .expect("agent binary runs");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("https://user@repo.example/") && err.contains("user information"),
        "{err}"
    );
}
