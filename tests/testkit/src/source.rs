//! Java source generation for test modules: what the module's `main` does, as a list of steps.
//!
//! Everything here is pure string building, so a behaviour's source (and with it the compile
//! cache key) is a deterministic function of the steps.

use std::path::PathBuf;
use std::time::Duration;

/// Line printed by [`Behaviour::SlowReady`] once the module counts as ready. Use it as the
/// readiness log line (`koupleless.agent.ready.log`).
pub const READY_LINE: &str = "koupleless-testkit: ready";

/// Line every generated module prints first, produced by a class that lives in a separate
/// dependency jar (`lib/` or `BOOT-INF/lib/`). Seeing it in a log proves the nested
/// dependency jars were on the class path.
pub const DEPENDENCY_LINE: &str = "koupleless-testkit: dependency loaded";

/// Message of the exception thrown by [`Behaviour::FailAtStart`]. The JVM prints it as
/// `Exception in thread "main" java.lang.IllegalStateException: <this>` and exits with code 1.
pub const FAIL_MESSAGE: &str = "koupleless-testkit: failing at start on purpose";

/// Line printed by the shutdown hook of [`Behaviour::IgnoreSigterm`] when SIGTERM arrives.
pub const SIGTERM_LINE: &str = "koupleless-testkit: SIGTERM received, ignoring it";

/// Exit code of [`Behaviour::ExitAfter`] and [`Behaviour::ExitWhenFileExists`].
pub const EXIT_LATER_CODE: i32 = 3;

/// The Java package of the dependency class; generated main classes must not live in it.
pub(crate) const DEP_PACKAGE: &str = "koupleless.testkit.dep";

/// One step of a test module's `main`, executed in the order given to
/// [`crate::BizJar::behaviour`]. Steps that block ([`Behaviour::StayUp`]) or end the JVM
/// ([`Behaviour::FailAtStart`], [`Behaviour::Exit`], ...) make later steps unreachable at run
/// time; a module whose steps all return ends with exit code 0.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Behaviour {
    /// Block the main thread forever (a normal long-running module). SIGTERM ends the JVM.
    StayUp,
    /// Throw `IllegalStateException(FAIL_MESSAGE)` from `main`: the JVM exits with code 1.
    FailAtStart,
    /// Sleep, then print [`READY_LINE`].
    SlowReady(Duration),
    /// Sleep, print `koupleless-testkit: exiting`, and exit with [`EXIT_LATER_CODE`].
    ExitAfter(Duration),
    /// Poll (every 20 ms) until the file exists, then exit with [`EXIT_LATER_CODE`]. Lets a
    /// test decide exactly when a running module dies.
    ExitWhenFileExists(PathBuf),
    /// Exit at once with this code.
    Exit(i32),
    /// Listen on `127.0.0.1:<port>` (accepting and closing connections on a daemon thread)
    /// and print `koupleless-testkit: listening on <port>`.
    ListenTcp(u16),
    /// Print this line on stdout.
    PrintLine(String),
    /// Print `args=<a>,<b>,...` (the program arguments joined with commas).
    PrintArgs,
    /// Print `env <KEY>=<value>` (`null` when unset), read with `System.getenv`.
    PrintEnv(String),
    /// Print `prop <key>=<value>` (`null` when unset), read with `System.getProperty`.
    PrintProperty(String),
    /// Sleep without printing anything.
    Sleep(Duration),
    /// Write the JVM's pid (decimal) to this file, so a test can watch the process even after
    /// the backend removed the module's directory.
    WritePidFile(PathBuf),
    /// Install a shutdown hook that prints [`SIGTERM_LINE`], creates `marker` (if given) and
    /// then sleeps forever: SIGTERM no longer ends the JVM, only SIGKILL does.
    IgnoreSigterm {
        /// File created by the hook, proving SIGTERM was delivered.
        marker: Option<PathBuf>,
    },
    /// Install a shutdown hook that creates this file (a graceful stop leaves the file).
    ShutdownMarker(PathBuf),
}

/// Splits `a.b.C` into (`a.b`, `C`). A class in the default package is rejected because the
/// kit keeps generated classes and the dependency class apart by package.
pub(crate) fn split_class_name(main_class: &str) -> Option<(&str, &str)> {
    let (package, simple) = main_class.rsplit_once('.')?;
    let valid_ident = |s: &str| {
        let mut chars = s.chars();
        chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == '$')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$')
    };
    if package.split('.').all(valid_ident) && valid_ident(simple) && package != DEP_PACKAGE {
        Some((package, simple))
    } else {
        None
    }
}

/// A Java string literal (with quotes) for `s`. Non-ASCII and control characters become
/// `\uXXXX` escapes so the source is plain ASCII whatever javac's default encoding is.
pub fn java_string_literal(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for unit in s.encode_utf16() {
        match unit {
            0x5c => out.push_str("\\\\"),
            0x22 => out.push_str("\\\""),
            0x0a => out.push_str("\\n"),
            0x0d => out.push_str("\\r"),
            0x09 => out.push_str("\\t"),
            0x20..=0x7e => out.push(char::from(unit as u8)),
            // `\u000a` style escapes are processed before lexing, so line breaks must use
            // the short escapes above; every other unit is safe as `\uXXXX`.
            _ => out.push_str(&format!("\\u{unit:04x}")),
        }
    }
    out.push('"');
    out
}

fn millis(d: Duration) -> u128 {
    d.as_millis()
}

fn path_literal(p: &std::path::Path) -> String {
    java_string_literal(&p.to_string_lossy())
}

/// The Java statements for one step, indented for the body of `main`.
fn step_source(step: &Behaviour) -> String {
    match step {
        Behaviour::StayUp => "        Thread.currentThread().join();\n".to_string(),
        Behaviour::FailAtStart => format!(
            // `if (true)` keeps statements after the throw reachable for javac.
            "        if (true) throw new IllegalStateException({});\n",
            java_string_literal(FAIL_MESSAGE)
        ),
        Behaviour::SlowReady(d) => format!(
            "        Thread.sleep({}L);\n        say({});\n",
            millis(*d),
            java_string_literal(READY_LINE)
        ),
        Behaviour::ExitAfter(d) => format!(
            "        Thread.sleep({}L);\n        say(\"koupleless-testkit: exiting\");\n        System.exit({EXIT_LATER_CODE});\n",
            millis(*d)
        ),
        Behaviour::ExitWhenFileExists(p) => format!(
            "        while (!java.nio.file.Files.exists(java.nio.file.Path.of({}))) {{ Thread.sleep(20L); }}\n        say(\"koupleless-testkit: exiting\");\n        System.exit({EXIT_LATER_CODE});\n",
            path_literal(p)
        ),
        Behaviour::Exit(code) => format!("        System.exit({code});\n"),
        Behaviour::ListenTcp(port) => format!(
            "        listen({port});\n        say(\"koupleless-testkit: listening on {port}\");\n"
        ),
        Behaviour::PrintLine(text) => format!("        say({});\n", java_string_literal(text)),
        Behaviour::PrintArgs => "        say(\"args=\" + String.join(\",\", args));\n".to_string(),
        Behaviour::PrintEnv(key) => format!(
            "        say(\"env \" + {k} + \"=\" + System.getenv({k}));\n",
            k = java_string_literal(key)
        ),
        Behaviour::PrintProperty(key) => format!(
            "        say(\"prop \" + {k} + \"=\" + System.getProperty({k}));\n",
            k = java_string_literal(key)
        ),
        Behaviour::Sleep(d) => format!("        Thread.sleep({}L);\n", millis(*d)),
        Behaviour::WritePidFile(p) => format!(
            "        java.nio.file.Files.writeString(java.nio.file.Path.of({}), Long.toString(ProcessHandle.current().pid()));\n",
            path_literal(p)
        ),
        Behaviour::IgnoreSigterm { marker } => {
            let touch = marker
                .as_ref()
                .map(|p| format!("touch({});", path_literal(p)))
                .unwrap_or_default();
            format!(
                "        Runtime.getRuntime().addShutdownHook(new Thread(() -> {{ say({}); {touch} try {{ Thread.sleep(Long.MAX_VALUE); }} catch (InterruptedException e) {{ }} }}));\n",
                java_string_literal(SIGTERM_LINE)
            )
        }
        Behaviour::ShutdownMarker(p) => format!(
            "        Runtime.getRuntime().addShutdownHook(new Thread(() -> touch({})));\n",
            path_literal(p)
        ),
    }
}

/// The source of the main class: prints [`DEPENDENCY_LINE`] through the dependency class,
/// then runs `steps` in order. An empty list means [`Behaviour::StayUp`].
pub(crate) fn main_source(package: &str, simple: &str, steps: &[Behaviour]) -> String {
    let mut body = String::new();
    if steps.is_empty() {
        body.push_str(&step_source(&Behaviour::StayUp));
    }
    for step in steps {
        body.push_str(&step_source(step));
    }
    format!(
        r#"package {package};

public class {simple} {{
    static void say(String line) {{
        System.out.println(line);
        System.out.flush();
    }}

    static void touch(String path) {{
        try {{
            java.nio.file.Files.writeString(java.nio.file.Path.of(path), "");
        }} catch (java.io.IOException e) {{
            throw new java.io.UncheckedIOException(e);
        }}
    }}

    static void listen(int port) throws java.io.IOException {{
        final java.net.ServerSocket server = new java.net.ServerSocket();
        server.setReuseAddress(true);
        server.bind(new java.net.InetSocketAddress("127.0.0.1", port));
        Thread acceptor = new Thread(() -> {{
            while (true) {{
                try {{
                    server.accept().close();
                }} catch (java.io.IOException e) {{
                    return;
                }}
            }}
        }});
        acceptor.setDaemon(true);
        acceptor.start();
    }}

    public static void main(String[] args) throws Exception {{
        say({dep}.Greeter.greeting());
{body}    }}
}}
"#,
        dep = DEP_PACKAGE
    )
}

/// The source of the dependency class, packed into its own nested jar.
pub(crate) fn dependency_source() -> String {
    format!(
        "package {DEP_PACKAGE};\n\npublic class Greeter {{\n    public static String greeting() {{\n        return {};\n    }}\n}}\n",
        java_string_literal(DEPENDENCY_LINE)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn string_literals_escape_what_java_needs() {
        let cases: &[(&str, &str)] = &[
            ("plain", r#""plain""#),
            ("a\"b", r#""a\"b""#),
            ("back\\slash", r#""back\\slash""#),
            ("line\nbreak\r\t", r#""line\nbreak\r\t""#),
            ("é", r#""\u00e9""#),
            ("😀", r#""\ud83d\ude00""#),
            ("\u{1}", r#""\u0001""#),
            ("", r#""""#),
        ];
        for (input, want) in cases {
            assert_eq!(java_string_literal(input), *want, "input {input:?}");
        }
    }

    #[test]
    fn class_names_split_into_package_and_simple_name() {
        let cases: &[(&str, Option<(&str, &str)>)] = &[
            ("a.b.Main", Some(("a.b", "Main"))),
            ("com.example.App$Inner", Some(("com.example", "App$Inner"))),
            ("Main", None),
            ("a..Main", None),
            ("a.1b.Main", None),
            ("a.b.", None),
            ("koupleless.testkit.dep.Main", None),
            ("a-b.Main", None),
        ];
        for (input, want) in cases {
            assert_eq!(split_class_name(input), *want, "input {input:?}");
        }
    }

    #[test]
    fn empty_behaviour_stays_up_and_steps_keep_their_order() {
        let empty = main_source("p", "M", &[]);
        assert!(empty.contains("Thread.currentThread().join();"));
        let src = main_source(
            "p",
            "M",
            &[Behaviour::PrintLine("first".into()), Behaviour::Exit(4)],
        );
        let first = src.find("say(\"first\")").expect("print step present");
        let exit = src.find("System.exit(4)").expect("exit step present");
        assert!(first < exit);
        assert!(!src.contains("Thread.currentThread().join();"));
    }
}
