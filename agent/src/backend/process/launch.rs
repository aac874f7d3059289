//! Pure decisions about launching a module JVM: which `java`, which main class, which
//! environment, which directory name, and how to describe its end.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::ExitStatus;

use crate::backend::BizKey;

/// Request env key that overrides the main class (as in SOFAArk's `BizModel.doStart`).
pub const MAIN_CLASS_KEY: &str = "sofa.ark.biz.main.class";

/// Agent environment variables passed on to module JVMs by default (`*` ends a prefix). The
/// agent's own settings (broker passwords, tokens) are not passed on.
pub const DEFAULT_PASS_ENV: &[&str] = &[
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "LANG",
    "LC_*",
    "TZ",
    "TMPDIR",
    "JAVA_HOME",
    "HOSTNAME",
];

/// A launch setting in a request that cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LaunchError {
    /// The main class (from the manifest or `sofa.ark.biz.main.class`) is not a Java class
    /// name. Checked because it is a `java` argument: `-agentpath:...` must never get there.
    #[error("main class {0:?} is not a valid Java class name")]
    BadMainClass(String),
    /// An env entry that cannot be put into a process environment.
    #[error("env entry {0:?} cannot be passed to a process (empty name, '=' or NUL)")]
    BadEnv(String),
}

/// `java` when none is configured: `$JAVA_HOME/bin/java` if `JAVA_HOME` is set, else `java`
/// (looked up on `PATH`).
pub fn java_from_home(java_home: Option<&OsStr>) -> PathBuf {
    match java_home.filter(|h| !h.is_empty()) {
        Some(home) => Path::new(home).join("bin").join("java"),
        None => PathBuf::from("java"),
    }
}

/// Resolves the configured `java` to an executable: a path with a `/` is taken as is (made
/// absolute against `cwd`), a bare name is searched on `path_var`.
pub(crate) fn resolve_executable(
    program: &Path,
    cwd: &Path,
    path_var: Option<&OsStr>,
    is_executable: impl Fn(&Path) -> bool,
) -> Option<PathBuf> {
    if program.components().count() > 1 || program.is_absolute() {
        let abs = cwd.join(program);
        return is_executable(&abs).then_some(abs);
    }
    path_var
        .into_iter()
        .flat_map(std::env::split_paths)
        .filter(|dir| dir.is_absolute())
        .map(|dir| dir.join(program))
        .find(|candidate| is_executable(candidate))
}

/// Whether `name` is a binary Java class name (`a.b.C`, `C$Inner`): Java identifier
/// characters separated by single dots.
pub(crate) fn valid_class_name(name: &str) -> bool {
    !name.is_empty()
        && name.split('.').all(|part| {
            let mut chars = part.chars();
            chars
                .next()
                .is_some_and(|c| c.is_alphabetic() || c == '_' || c == '$')
                && chars.all(|c| c.is_alphanumeric() || c == '_' || c == '$')
        })
}

/// The main class to run: `sofa.ark.biz.main.class` from the request, else the package's.
pub(crate) fn resolve_main_class(
    package_main: &str,
    envs: &BTreeMap<String, String>,
) -> Result<String, LaunchError> {
    let main = envs
        .get(MAIN_CLASS_KEY)
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
        .unwrap_or(package_main);
    if valid_class_name(main) {
        Ok(main.to_string())
    } else {
        Err(LaunchError::BadMainClass(main.to_string()))
    }
}

fn passes(name: &OsStr, patterns: &[String]) -> bool {
    let name = name.as_encoded_bytes();
    patterns.iter().any(|p| match p.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix.as_bytes()),
        None => name == p.as_bytes(),
    })
}

/// The module JVM's environment: the agent's variables that match `pass` (exact names, or
/// prefixes ending in `*`), then the request's `envs`, which win. Sorted by name.
pub(crate) fn child_env(
    inherited: impl IntoIterator<Item = (OsString, OsString)>,
    pass: &[String],
    requested: &BTreeMap<String, String>,
) -> Result<Vec<(OsString, OsString)>, LaunchError> {
    let mut env: BTreeMap<OsString, OsString> = inherited
        .into_iter()
        .filter(|(k, _)| passes(k, pass))
        .collect();
    for (k, v) in requested {
        if k.is_empty() || k.contains('=') || k.contains('\0') || v.contains('\0') {
            return Err(LaunchError::BadEnv(k.clone()));
        }
        env.insert(OsString::from(k), OsString::from(v));
    }
    Ok(env.into_iter().collect())
}

/// `<name>-<version>-<stamp>` (plus `-<attempt>` after a name clash), with every character
/// outside `[A-Za-z0-9._-]` replaced by `_` and no leading dot, so the name is one safe path
/// component whatever the manifest says.
pub(crate) fn module_dir_name(key: &BizKey, stamp: &str, attempt: u32) -> String {
    let clean = |s: &str| -> String {
        let mut out: String = s
            .chars()
            .take(64)
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        if out.is_empty() || out.starts_with('.') {
            out.insert(0, '_');
        }
        out
    };
    let base = format!("{}-{}-{stamp}", clean(&key.name), clean(&key.version));
    if attempt == 0 {
        base
    } else {
        format!("{base}-{attempt}")
    }
}

/// `exit code 1`, or `killed by signal 9 (SIGKILL)`.
pub(crate) fn describe_exit(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    if let Some(code) = status.code() {
        format!("exit code {code}")
    } else if let Some(signal) = status.signal() {
        let name = nix::sys::signal::Signal::try_from(signal)
            .map(|s| s.as_str())
            .unwrap_or("unknown");
        let core = if status.core_dumped() {
            ", core dumped"
        } else {
            ""
        };
        format!("killed by signal {signal} ({name}{core})")
    } else {
        format!("ended with status {status}")
    }
}

/// The last `max_lines` lines of a log excerpt, lossily decoded. When `partial_start` (the
/// excerpt was cut from a longer file) the first, probably incomplete, line is dropped.
pub(crate) fn log_tail(bytes: &[u8], partial_start: bool, max_lines: usize) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut lines: Vec<&str> = text.lines().collect();
    if partial_start && !lines.is_empty() {
        lines.remove(0);
    }
    let from = lines.len().saturating_sub(max_lines);
    lines[from..].join("\n")
}

#[cfg(test)]
mod tests {
    use std::os::unix::process::ExitStatusExt;

    use super::*;

    fn envs(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn java_comes_from_java_home_or_path() {
        assert_eq!(
            java_from_home(Some(OsStr::new("/jdk"))),
            PathBuf::from("/jdk/bin/java")
        );
        assert_eq!(java_from_home(Some(OsStr::new(""))), PathBuf::from("java"));
        assert_eq!(java_from_home(None), PathBuf::from("java"));

        let exists =
            |set: &'static [&'static str]| move |p: &Path| set.iter().any(|s| Path::new(s) == p);
        let path = OsStr::new("/a:rel:/b");
        let cwd = Path::new("/cwd");
        let cases: &[(&str, &'static [&'static str], Option<&str>)] = &[
            ("java", &["/b/java"], Some("/b/java")),
            ("java", &["/a/java", "/b/java"], Some("/a/java")),
            ("java", &["rel/java"], None),
            ("/jdk/bin/java", &["/jdk/bin/java"], Some("/jdk/bin/java")),
            ("/jdk/bin/java", &[], None),
            (
                "jdk/bin/java",
                &["/cwd/jdk/bin/java"],
                Some("/cwd/jdk/bin/java"),
            ),
        ];
        for (program, present, want) in cases {
            let got = resolve_executable(Path::new(program), cwd, Some(path), exists(present));
            assert_eq!(
                got.as_deref(),
                want.map(Path::new),
                "{program} with {present:?}"
            );
        }
    }

    #[test]
    fn main_class_comes_from_the_request_then_the_package() {
        type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], Result<&'a str, &'a str>);
        let cases: &[Case<'_>] = &[
            ("a.Main", &[], Ok("a.Main")),
            ("a.Main", &[(MAIN_CLASS_KEY, "b.Other")], Ok("b.Other")),
            ("a.Main", &[(MAIN_CLASS_KEY, "  ")], Ok("a.Main")),
            (
                "a.Main",
                &[(MAIN_CLASS_KEY, "-agentpath:/x.so")],
                Err("-agentpath:/x.so"),
            ),
            (
                "a.Main",
                &[(MAIN_CLASS_KEY, "@/etc/args")],
                Err("@/etc/args"),
            ),
            ("Main", &[], Ok("Main")),
            ("com.ex.App$Inner", &[], Ok("com.ex.App$Inner")),
            ("中文.Main", &[], Ok("中文.Main")),
            ("a..Main", &[], Err("a..Main")),
            ("a.1Main", &[], Err("a.1Main")),
            ("a Main", &[], Err("a Main")),
            ("", &[], Err("")),
        ];
        for (package, pairs, want) in cases {
            let got = resolve_main_class(package, &envs(pairs));
            let want = want
                .map(String::from)
                .map_err(|e| LaunchError::BadMainClass(e.to_string()));
            assert_eq!(got, want, "package {package:?} envs {pairs:?}");
        }
    }

    #[test]
    fn child_env_passes_only_allowed_agent_variables_and_request_envs_win() {
        let inherited = || {
            [
                ("PATH", "/bin"),
                ("LC_ALL", "C"),
                ("MQTT_PASSWORD", "secret"),
                ("HOME", "/root"),
                ("LCX", "no"),
            ]
            .map(|(k, v)| (OsString::from(k), OsString::from(v)))
        };
        let pass: Vec<String> = ["PATH", "LC_*", "HOME"].map(String::from).to_vec();
        let got = child_env(
            inherited(),
            &pass,
            &envs(&[("HOME", "/m"), ("sofa.ark.x", "1")]),
        )
        .unwrap();
        let got: Vec<(String, String)> = got
            .into_iter()
            .map(|(k, v)| (k.into_string().unwrap(), v.into_string().unwrap()))
            .collect();
        let want: Vec<(String, String)> = [
            ("HOME", "/m"),
            ("LC_ALL", "C"),
            ("PATH", "/bin"),
            ("sofa.ark.x", "1"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .to_vec();
        assert_eq!(got, want);
        for bad in ["", "A=B", "A\0"] {
            assert_eq!(
                child_env(inherited(), &pass, &envs(&[(bad, "v")])),
                Err(LaunchError::BadEnv(bad.to_string()))
            );
        }
        assert!(child_env(inherited(), &pass, &envs(&[("K", "v\0")])).is_err());
    }

    #[test]
    fn module_dir_names_are_single_safe_components() {
        let cases = [
            (
                BizKey::new("demo", "1.0.0"),
                0,
                "demo-1.0.0-20240101120000123",
            ),
            (
                BizKey::new("demo", "1.0.0"),
                2,
                "demo-1.0.0-20240101120000123-2",
            ),
            (
                BizKey::new("../../etc", "1"),
                0,
                "_.._.._etc-1-20240101120000123",
            ),
            (BizKey::new("a/b", "v 1"), 0, "a_b-v_1-20240101120000123"),
            (
                BizKey::new("", ".hidden"),
                0,
                "_-_.hidden-20240101120000123",
            ),
            (BizKey::new("名", "1"), 0, "_-1-20240101120000123"),
        ];
        for (key, attempt, want) in cases {
            let got = module_dir_name(&key, "20240101120000123", attempt);
            assert_eq!(got, want, "{key}");
            assert_eq!(Path::new(&got).components().count(), 1);
        }
        let long = module_dir_name(&BizKey::new("x".repeat(500), "1"), "s", 0);
        assert!(long.len() < 80);
    }

    #[test]
    fn exits_are_described_by_code_or_signal() {
        let cases = [
            (0, "exit code 0"),
            (1 << 8, "exit code 1"),
            (143 << 8, "exit code 143"),
            (9, "killed by signal 9 (SIGKILL)"),
            (15, "killed by signal 15 (SIGTERM)"),
            (6 | 0x80, "killed by signal 6 (SIGABRT, core dumped)"),
        ];
        for (raw, want) in cases {
            assert_eq!(describe_exit(ExitStatus::from_raw(raw)), want, "raw {raw}");
        }
    }

    #[test]
    fn log_tails_keep_the_last_lines() {
        let cases: &[(&str, bool, usize, &str)] = &[
            ("a\nb\nc\n", false, 2, "b\nc"),
            ("a\nb\nc", false, 5, "a\nb\nc"),
            ("rtial\nb\nc\n", true, 5, "b\nc"),
            ("", false, 3, ""),
            ("a\r\nb\r\n", false, 1, "b"),
            ("x\n", false, 0, ""),
        ];
        for (text, partial, n, want) in cases {
            assert_eq!(log_tail(text.as_bytes(), *partial, *n), *want, "{text:?}");
        }
        assert_eq!(log_tail(b"ok \xff\n", false, 1), "ok \u{fffd}");
    }
}
