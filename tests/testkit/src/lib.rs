//! Test kit for the koupleless workspace: real Ark biz jars built at test time, and the small
//! helpers tests around them need.
//!
//! # Ark biz jars
//!
//! [`BizJar`] generates a Java main class from a list of [`Behaviour`] steps, compiles it with
//! `javac` and packs an Ark biz jar in the layout SOFAArk expects:
//!
//! ```text
//! META-INF/MANIFEST.MF             Ark-Biz-Name, Ark-Biz-Version, Main-Class/Start-Class,
//!                                  optional priority, web-context-path, extra attributes
//! com/alipay/sofa/ark/biz/mark     (left out by .no_mark())
//! lib/<name>-<version>.jar         the main class          (Layout::ArkLib, the default)
//! lib/testkit-dep-1.0.jar          a dependency class the main class calls
//! BOOT-INF/classes/...             the main class, loose   (Layout::SpringBoot)
//! BOOT-INF/lib/testkit-dep-1.0.jar
//! ```
//!
//! Every generated module first prints [`DEPENDENCY_LINE`], which comes from the class in the
//! dependency jar: `java -jar` cannot run these jars, and the line shows the nested jars were
//! on the class path. Then it runs its steps in order; with no steps it stays up.
//!
//! ```no_run
//! use std::time::Duration;
//! use koupleless_testkit::{Behaviour, BizJar, Layout, free_port, java_available};
//!
//! assert!(java_available(), "these tests need java, javac and jar (JAVA_HOME or PATH)");
//! let dir = tempfile::tempdir().unwrap();
//! let port = free_port();
//! let jar = BizJar::new("web", "2.0.0")
//!     .layout(Layout::SpringBoot)
//!     .behaviour(Behaviour::SlowReady(Duration::from_millis(300)))
//!     .behaviour(Behaviour::ListenTcp(port))
//!     .behaviour(Behaviour::StayUp)
//!     .web_context_path("web")
//!     .build(dir.path());
//! # let _ = jar;
//! ```
//!
//! Compiling costs about a second per distinct behaviour list (`javac` and `jar` each start a
//! JVM), so results are cached on disk, keyed by the generated source (see [`compilations`]);
//! building a jar from cached classes takes milliseconds. The outer jar is written with the
//! `zip` crate rather than `jar`, because it differs per test (name, version, manifest) and
//! writing it directly avoids a JVM start per build.
//!
//! For archives that must be broken or hostile (path-traversing entries, symlinks, a missing
//! manifest), use [`RawZip`], which writes exactly the entries given.
//!
//! # Running them
//!
//! Test JVMs start faster and use less memory with small flags; [`SMALL_JVM_ARGS`] has a set.
//! [`toolchain`] gives the `java` the kit found (`JAVA_HOME/bin`, else `PATH`).
//!
//! # Waiting
//!
//! Never sleep for a fixed time to let something happen: poll for it with a bound.
//! [`wait_for`] blocks the thread; [`wait_until`] is the async form for tokio tests. Both
//! return whether the condition held, for the test to assert.
//!
//! # Processes and ports
//!
//! [`process_alive`] treats zombies as gone, [`pid_exists`] is `kill(pid, 0)`, [`free_port`]
//! finds a port for [`Behaviour::ListenTcp`], [`file_url`] turns a path into a `bizUrl`.
//! [`proxy::Proxy`] sits on a TCP link a test can cut (refuse, blackhole) to inject faults.

pub mod ark_telnet_peer;
mod biz;
pub mod broker;
mod java;
mod manifest;
pub mod proxy;
mod source;
mod tools;
mod wait;

pub use biz::{
    BizJar, DEFAULT_MAIN_CLASS, DEPENDENCY_JAR, LAUNCHER_CLASS, Layout, MARK_ENTRY, MainClassAttr,
    RawZip,
};
pub use java::{Toolchain, compilations, java_available, toolchain};
pub use manifest::manifest_text;
pub use source::{
    Behaviour, DEPENDENCY_LINE, EXIT_LATER_CODE, FAIL_MESSAGE, READY_LINE, SIGTERM_LINE,
    java_string_literal,
};
pub use tools::{REQUIRE_TOOLS_ENV, missing_tool_verdict, skip_or_fail, tools_required};
pub use wait::{
    POLL_INTERVAL, eventually, file_url, free_port, pid_exists, process_alive, read_pid_file,
    wait_for, wait_until,
};

/// JVM flags that make short-lived test JVMs start quickly and stay small.
pub const SMALL_JVM_ARGS: &[&str] = &[
    "-Xmx32m",
    "-XX:+UseSerialGC",
    "-XX:TieredStopAtLevel=1",
    "-Xshare:auto",
    "-Xss512k",
];

/// Why the kit could not build something.
#[derive(Debug, thiserror::Error)]
pub enum KitError {
    /// `java`, `javac` or `jar` is missing or broken.
    #[error("no usable Java toolchain: {0}")]
    NoJava(String),
    /// A JDK tool ran and failed (e.g. the generated source did not compile).
    #[error("{tool} failed ({status}): {output}")]
    Tool {
        /// Which tool.
        tool: String,
        /// Its exit status.
        status: String,
        /// What it printed.
        output: String,
    },
    /// The main class name has no package or is not made of Java identifiers.
    #[error("invalid main class name {0:?}: needs a package and plain Java identifiers")]
    BadMainClass(String),
    /// Writing the archive failed.
    #[error("zip: {0}")]
    Zip(#[from] zip::result::ZipError),
    /// File system I/O failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
}
