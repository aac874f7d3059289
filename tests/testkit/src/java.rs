//! The Java toolchain (`java`, `javac`, `jar`) and the compile cache.
//!
//! Compiling is the slow part of building a test module (each `javac` or `jar` run starts a
//! JVM, about half a second). Compiled output is therefore cached on disk under
//! `$TMPDIR/koupleless-testkit-<uid>/<key>/`, where the key hashes the generated sources and
//! the `javac` binary (path and modification time). An entry is built in a staging directory
//! and renamed into place, so concurrent test processes never see half-written entries, and
//! within one process a lock per key keeps parallel tests from compiling the same thing twice.

use std::collections::HashMap;
use std::ffi::OsString;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use crate::KitError;
use crate::source::{DEP_PACKAGE, dependency_source, main_source, split_class_name};

/// Absolute paths of the JDK tools the kit uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Toolchain {
    /// `java`, to hand to the code under test.
    pub java: PathBuf,
    /// `javac`, to compile generated modules.
    pub javac: PathBuf,
    /// `jar`, to pack nested jars.
    pub jar: PathBuf,
}

/// Where a tool is found: `$JAVA_HOME/bin/<name>` when `JAVA_HOME` is set and has it, else the
/// first executable `<name>` on `PATH`.
pub(crate) fn locate_tool(
    name: &str,
    java_home: Option<&OsString>,
    path: Option<&OsString>,
    is_executable: impl Fn(&Path) -> bool,
) -> Option<PathBuf> {
    let from_home = java_home
        .filter(|h| !h.is_empty())
        .map(|h| Path::new(h).join("bin").join(name));
    let from_path = path
        .into_iter()
        .flat_map(std::env::split_paths)
        .filter(|dir| dir.is_absolute())
        .map(|dir| dir.join(name));
    from_home
        .into_iter()
        .chain(from_path)
        .find(|p| is_executable(p))
}

fn is_executable_file(p: &Path) -> bool {
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

fn find_toolchain() -> Result<Toolchain, String> {
    let home = std::env::var_os("JAVA_HOME");
    let path = std::env::var_os("PATH");
    let find = |name: &str| {
        locate_tool(name, home.as_ref(), path.as_ref(), is_executable_file)
            .ok_or_else(|| format!("`{name}` not found in JAVA_HOME/bin or PATH"))
    };
    let chain = Toolchain {
        java: find("java")?,
        javac: find("javac")?,
        jar: find("jar")?,
    };
    let status = Command::new(&chain.java)
        .arg("-version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map_err(|e| format!("running {} -version: {e}", chain.java.display()))?;
    if !status.success() {
        return Err(format!(
            "{} -version failed: {status}",
            chain.java.display()
        ));
    }
    Ok(chain)
}

/// The JDK tools, looked up once per process (see [`locate_tool`] for the order).
pub fn toolchain() -> Result<&'static Toolchain, KitError> {
    static CHAIN: OnceLock<Result<Toolchain, String>> = OnceLock::new();
    CHAIN
        .get_or_init(find_toolchain)
        .as_ref()
        .map_err(|e| KitError::NoJava(e.clone()))
}

/// Whether `java`, `javac` and `jar` are all available and `java -version` runs.
pub fn java_available() -> bool {
    toolchain().is_ok()
}

static COMPILATIONS: AtomicUsize = AtomicUsize::new(0);

/// How many times this process has run `javac` (cache misses). Lets tests check the cache.
pub fn compilations() -> usize {
    COMPILATIONS.load(Ordering::SeqCst)
}

/// The compiled pieces of one test module, all inside a cache entry (never modify them).
#[derive(Clone, Debug)]
pub(crate) struct Compiled {
    /// Nested jar with the main class (and only it).
    pub main_jar: PathBuf,
    /// The same classes as loose files (for `BOOT-INF/classes`).
    pub main_classes: PathBuf,
    /// Nested jar with the dependency class.
    pub dep_jar: PathBuf,
}

impl Compiled {
    fn in_entry(entry: &Path) -> Compiled {
        Compiled {
            main_jar: entry.join("main.jar"),
            main_classes: entry.join("classes"),
            dep_jar: entry.join("dep.jar"),
        }
    }
}

/// 64-bit FNV-1a: stable across Rust versions and processes, unlike `DefaultHasher`, which
/// matters because the hash names on-disk cache entries.
pub(crate) fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for byte in part.iter().chain(std::iter::once(&0xff)) {
            hash ^= u64::from(*byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    }
    hash
}

fn io_err(context: impl Into<String>) -> impl FnOnce(io::Error) -> KitError {
    let context = context.into();
    move |source| KitError::Io { context, source }
}

fn cache_root() -> Result<PathBuf, KitError> {
    static ROOT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    ROOT.get_or_init(|| {
        let root = std::env::temp_dir().join(format!(
            "koupleless-testkit-{}",
            nix::unistd::getuid().as_raw()
        ));
        std::fs::create_dir_all(&root).map_err(|e| format!("creating {}: {e}", root.display()))?;
        Ok(root)
    })
    .clone()
    .map_err(|e| KitError::Io {
        context: e,
        source: io::Error::other("cache directory"),
    })
}

fn run_tool(cmd: &mut Command, tool: &str) -> Result<(), KitError> {
    let out = cmd.output().map_err(io_err(format!("running {tool}")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(KitError::Tool {
            tool: tool.to_string(),
            status: out.status.to_string(),
            output: String::from_utf8_lossy(&[out.stdout, out.stderr].concat()).into_owned(),
        })
    }
}

fn write_source(src_root: &Path, class: &str, text: &str) -> Result<PathBuf, KitError> {
    let file = src_root.join(format!("{}.java", class.replace('.', "/")));
    let parent = file.parent().unwrap_or(src_root);
    std::fs::create_dir_all(parent).map_err(io_err(format!("creating {}", parent.display())))?;
    std::fs::write(&file, text).map_err(io_err(format!("writing {}", file.display())))?;
    Ok(file)
}

/// Compiles the main class for `steps` (plus the dependency class) and packs both nested jars,
/// or returns the cached result.
pub(crate) fn compile(main_class: &str, steps: &[crate::Behaviour]) -> Result<Compiled, KitError> {
    let (package, simple) = split_class_name(main_class)
        .ok_or_else(|| KitError::BadMainClass(main_class.to_string()))?;
    let chain = toolchain()?;
    let main_src = main_source(package, simple, steps);
    let dep_src = dependency_source();
    let javac_mtime = std::fs::metadata(&chain.javac)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_nanos().to_string())
        .unwrap_or_default();
    let key = format!(
        "{:016x}",
        fnv1a(&[
            chain.javac.as_os_str().as_encoded_bytes(),
            javac_mtime.as_bytes(),
            main_class.as_bytes(),
            main_src.as_bytes(),
            dep_src.as_bytes(),
        ])
    );
    let root = cache_root()?;
    let entry = root.join(&key);

    static LOCKS: OnceLock<Mutex<HashMap<String, Arc<Mutex<()>>>>> = OnceLock::new();
    let lock = {
        let mut locks = LOCKS
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        Arc::clone(locks.entry(key.clone()).or_default())
    };
    let _guard = lock.lock().unwrap_or_else(|e| e.into_inner());
    if entry.is_dir() {
        return Ok(Compiled::in_entry(&entry));
    }

    let staging = tempfile::Builder::new()
        .prefix(&format!(".{key}-"))
        .tempdir_in(&root)
        .map_err(io_err("creating a staging directory"))?;
    let stage = staging.path();
    let src_root = stage.join("src");
    let main_file = write_source(&src_root, main_class, &main_src)?;
    let dep_file = write_source(&src_root, &format!("{DEP_PACKAGE}.Greeter"), &dep_src)?;
    let classes = stage.join("classes");
    COMPILATIONS.fetch_add(1, Ordering::SeqCst);
    run_tool(
        Command::new(&chain.javac)
            .args(["-encoding", "UTF-8", "-nowarn", "-d"])
            .arg(&classes)
            .arg(&main_file)
            .arg(&dep_file),
        "javac",
    )?;
    // The dependency class goes into its own jar; move it out of the main classes tree.
    let dep_rel = DEP_PACKAGE.replace('.', "/");
    let dep_classes = stage.join("dep-classes");
    let dep_target = dep_classes.join(&dep_rel);
    std::fs::create_dir_all(dep_target.parent().unwrap_or(&dep_classes))
        .map_err(io_err("creating dep-classes"))?;
    std::fs::rename(classes.join(&dep_rel), &dep_target)
        .map_err(io_err("moving the dependency classes"))?;
    // Both jar runs start a JVM; running them side by side halves the wait.
    let pack = |jar: &str, dir: &Path| {
        Command::new(&chain.jar)
            .arg("--create")
            .arg("--file")
            .arg(stage.join(jar))
            .arg("-C")
            .arg(dir)
            .arg(".")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(io_err("running jar"))
    };
    let main_jar = pack("main.jar", &classes)?;
    let dep_jar = pack("dep.jar", &dep_classes)?;
    for child in [main_jar, dep_jar] {
        let out = child
            .wait_with_output()
            .map_err(io_err("waiting for jar"))?;
        if !out.status.success() {
            return Err(KitError::Tool {
                tool: "jar".into(),
                status: out.status.to_string(),
                output: String::from_utf8_lossy(&[out.stdout, out.stderr].concat()).into_owned(),
            });
        }
    }
    let staged = staging.keep();
    match std::fs::rename(&staged, &entry) {
        Ok(()) => {}
        // Another process finished the same entry first; its copy is identical.
        Err(_) if entry.is_dir() => {
            let _ = std::fs::remove_dir_all(&staged);
        }
        Err(e) => return Err(io_err(format!("publishing {}", entry.display()))(e)),
    }
    Ok(Compiled::in_entry(&entry))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tools_come_from_java_home_first_then_path() {
        let home = OsString::from("/jdk");
        let path = OsString::from("/usr/bin:relative/bin:/opt/bin");
        let exists =
            |set: &'static [&'static str]| move |p: &Path| set.iter().any(|s| Path::new(s) == p);
        let cases: &[(Option<&OsString>, &'static [&'static str], Option<&str>)] = &[
            (
                Some(&home),
                &["/jdk/bin/javac", "/usr/bin/javac"],
                Some("/jdk/bin/javac"),
            ),
            (Some(&home), &["/usr/bin/javac"], Some("/usr/bin/javac")),
            (
                None,
                &["/jdk/bin/javac", "/opt/bin/javac"],
                Some("/opt/bin/javac"),
            ),
            (None, &["relative/bin/javac"], None),
            (Some(&home), &[], None),
        ];
        for (home, present, want) in cases {
            let got = locate_tool("javac", *home, Some(&path), exists(present));
            assert_eq!(
                got.as_deref(),
                want.map(Path::new),
                "home {home:?}, present {present:?}"
            );
        }
    }

    #[test]
    fn fnv_separates_part_boundaries() {
        assert_ne!(fnv1a(&[b"ab", b"c"]), fnv1a(&[b"a", b"bc"]));
        assert_eq!(fnv1a(&[b"same"]), fnv1a(&[b"same"]));
    }
}
