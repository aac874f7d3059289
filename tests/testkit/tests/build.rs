//! The kit's jars are real: the right entries and manifest, and they run on a real JVM with
//! the class path built from their nested jars.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use koupleless_testkit::{
    Behaviour, BizJar, DEFAULT_MAIN_CLASS, DEPENDENCY_JAR, DEPENDENCY_LINE, FAIL_MESSAGE,
    LAUNCHER_CLASS, Layout, MARK_ENTRY, MainClassAttr, RawZip, SMALL_JVM_ARGS, compilations,
    java_available, read_pid_file, toolchain,
};

fn require_java() {
    assert!(
        java_available(),
        "these tests need java, javac and jar in JAVA_HOME/bin or on PATH"
    );
}

/// Entry names in archive order, and the main manifest attributes.
fn entries_and_manifest(jar: &Path) -> (Vec<String>, BTreeMap<String, String>) {
    let mut archive = zip::ZipArchive::new(std::fs::File::open(jar).unwrap()).unwrap();
    let names: Vec<String> = (0..archive.len())
        .map(|i| archive.by_index(i).unwrap().name().unwrap().into_owned())
        .collect();
    let mut text = String::new();
    archive
        .by_name("META-INF/MANIFEST.MF")
        .unwrap()
        .read_to_string(&mut text)
        .unwrap();
    let mut attrs = BTreeMap::new();
    for line in text.split("\r\n").filter(|l| !l.is_empty()) {
        let (k, v) = line.split_once(": ").unwrap();
        attrs.insert(k.to_string(), v.to_string());
    }
    (names, attrs)
}

/// Unpacks `jar` into `dir` (trusted archives only) and returns the class path SOFAArk would
/// use: the root, `BOOT-INF/classes/`, and every nested jar.
fn unpack_class_path(jar: &Path, dir: &Path) -> String {
    let mut archive = zip::ZipArchive::new(std::fs::File::open(jar).unwrap()).unwrap();
    archive.extract(dir).unwrap();
    let mut cp = vec![dir.to_path_buf(), dir.join("BOOT-INF/classes")];
    for sub in ["lib", "BOOT-INF/lib"] {
        if let Ok(read) = std::fs::read_dir(dir.join(sub)) {
            let mut jars: Vec<PathBuf> = read.map(|e| e.unwrap().path()).collect();
            jars.sort();
            cp.extend(jars);
        }
    }
    std::env::join_paths(cp).unwrap().into_string().unwrap()
}

fn run(jar: &Path, main: &str, args: &[&str], envs: &[(&str, &str)]) -> (Option<i32>, String) {
    let unpacked = tempfile::tempdir().unwrap();
    let cp = unpack_class_path(jar, unpacked.path());
    let out = Command::new(&toolchain().unwrap().java)
        .args(SMALL_JVM_ARGS)
        .arg("-Dtestkit.prop=p1")
        .arg("-cp")
        .arg(cp)
        .arg(main)
        .args(args)
        .envs(envs.iter().copied())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&[out.stdout, out.stderr].concat()).into_owned();
    (out.status.code(), text)
}

#[test]
fn ark_lib_layout_has_mark_manifest_and_nested_jars() {
    require_java();
    let dir = tempfile::tempdir().unwrap();
    let jar = BizJar::new("demo", "1.2.3")
        .priority(7)
        .web_context_path("demo")
        .attribute("X-Extra", "yes")
        .behaviour(Behaviour::Exit(0))
        .build(dir.path());
    assert_eq!(jar, dir.path().join("demo-1.2.3-ark-biz.jar"));
    let (names, attrs) = entries_and_manifest(&jar);
    assert_eq!(names[0], "META-INF/");
    assert_eq!(names[1], "META-INF/MANIFEST.MF");
    for want in [
        MARK_ENTRY,
        "lib/demo-1.2.3.jar",
        &format!("lib/{DEPENDENCY_JAR}"),
    ] {
        assert!(
            names.iter().any(|n| n == want),
            "{want} missing from {names:?}"
        );
    }
    assert!(
        !names.iter().any(|n| n.ends_with(".class")),
        "classes must be nested: {names:?}"
    );
    assert_eq!(attrs["Ark-Biz-Name"], "demo");
    assert_eq!(attrs["Ark-Biz-Version"], "1.2.3");
    assert_eq!(attrs["Main-Class"], DEFAULT_MAIN_CLASS);
    assert_eq!(attrs["Start-Class"], DEFAULT_MAIN_CLASS);
    assert_eq!(attrs["priority"], "7");
    assert_eq!(attrs["web-context-path"], "demo");
    assert_eq!(attrs["X-Extra"], "yes");
}

#[test]
fn variants_drop_the_mark_or_the_main_class() {
    require_java();
    let dir = tempfile::tempdir().unwrap();
    let jar = BizJar::new("nomark", "1")
        .no_mark()
        .main_class_attr(MainClassAttr::Neither)
        .build(dir.path());
    let (names, attrs) = entries_and_manifest(&jar);
    assert!(!names.iter().any(|n| n == MARK_ENTRY));
    assert!(!attrs.contains_key("Main-Class") && !attrs.contains_key("Start-Class"));
    let jar = BizJar::new("start", "1")
        .main_class_attr(MainClassAttr::StartClass)
        .build(dir.path());
    let (_, attrs) = entries_and_manifest(&jar);
    assert_eq!(
        attrs.get("Start-Class").map(String::as_str),
        Some(DEFAULT_MAIN_CLASS)
    );
    assert!(!attrs.contains_key("Main-Class"));
}

#[test]
fn module_runs_from_its_nested_jars_and_does_its_steps_in_order() {
    require_java();
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("pid");
    let jar = BizJar::new("steps", "1.0.0")
        .behaviour(Behaviour::PrintLine("hello \"quoted\" é".into()))
        .behaviour(Behaviour::PrintArgs)
        .behaviour(Behaviour::PrintEnv("TESTKIT_ENV".into()))
        .behaviour(Behaviour::PrintProperty("testkit.prop".into()))
        .behaviour(Behaviour::WritePidFile(pid_file.clone()))
        .behaviour(Behaviour::Sleep(Duration::from_millis(1)))
        .behaviour(Behaviour::Exit(5))
        .behaviour(Behaviour::PrintLine("unreachable at run time".into()))
        .build(dir.path());
    let (code, out) = run(
        &jar,
        DEFAULT_MAIN_CLASS,
        &["a", "b c"],
        &[("TESTKIT_ENV", "v1")],
    );
    assert_eq!(code, Some(5), "{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines,
        [
            DEPENDENCY_LINE,
            "hello \"quoted\" é",
            "args=a,b c",
            "env TESTKIT_ENV=v1",
            "prop testkit.prop=p1"
        ],
        "{out}"
    );
    assert!(read_pid_file(&pid_file).is_some_and(|pid| pid > 1));
}

#[test]
fn fail_at_start_exits_1_with_the_exception() {
    require_java();
    let dir = tempfile::tempdir().unwrap();
    let jar = BizJar::new("fail", "1")
        .behaviour(Behaviour::FailAtStart)
        .build(dir.path());
    let (code, out) = run(&jar, DEFAULT_MAIN_CLASS, &[], &[]);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains(&format!("java.lang.IllegalStateException: {FAIL_MESSAGE}")),
        "{out}"
    );
}

#[test]
fn spring_boot_layout_runs_from_boot_inf() {
    require_java();
    let dir = tempfile::tempdir().unwrap();
    let jar = BizJar::new("boot", "1")
        .layout(Layout::SpringBoot)
        .main_class("com.example.boot.App")
        .behaviour(Behaviour::PrintLine("boot up".into()))
        .behaviour(Behaviour::Exit(0))
        .build(dir.path());
    let (names, attrs) = entries_and_manifest(&jar);
    assert!(
        names
            .iter()
            .any(|n| n == "BOOT-INF/classes/com/example/boot/App.class"),
        "{names:?}"
    );
    assert!(
        names
            .iter()
            .any(|n| *n == format!("BOOT-INF/lib/{DEPENDENCY_JAR}")),
        "{names:?}"
    );
    assert!(!names.iter().any(|n| n.starts_with("lib/")), "{names:?}");
    assert_eq!(attrs["Start-Class"], "com.example.boot.App");
    assert_eq!(attrs["Main-Class"], LAUNCHER_CLASS);
    let (code, out) = run(&jar, "com.example.boot.App", &[], &[]);
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        [DEPENDENCY_LINE, "boot up"]
    );
}

#[test]
fn every_behaviour_compiles() {
    require_java();
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("f");
    let all = [
        Behaviour::IgnoreSigterm {
            marker: Some(p.clone()),
        },
        Behaviour::IgnoreSigterm { marker: None },
        Behaviour::ShutdownMarker(p.clone()),
        Behaviour::ListenTcp(1),
        Behaviour::SlowReady(Duration::from_millis(1)),
        Behaviour::ExitWhenFileExists(p.clone()),
        Behaviour::ExitAfter(Duration::from_millis(1)),
        Behaviour::FailAtStart,
        Behaviour::StayUp,
        Behaviour::Exit(2),
    ];
    let jar = all
        .into_iter()
        .fold(BizJar::new("all", "1"), BizJar::behaviour);
    jar.try_build(dir.path())
        .expect("generated source for every behaviour compiles");
}

#[test]
fn compiled_classes_are_reused_for_the_same_behaviour() {
    require_java();
    let dir = tempfile::tempdir().unwrap();
    let unique = format!("cache probe {:?}", std::time::SystemTime::now());
    let jar = || BizJar::new("cache", "1").behaviour(Behaviour::PrintLine(unique.clone()));
    jar().build(dir.path());
    let after_first = compilations();
    let second = jar().file_name("second.jar").build(dir.path());
    assert_eq!(
        compilations(),
        after_first,
        "second build must not run javac"
    );
    assert!(second.exists());
}

#[test]
fn raw_zip_writes_hostile_entries_verbatim() {
    let dir = tempfile::tempdir().unwrap();
    let path = RawZip::ark_biz("evil", "1", "a.Main")
        .dir("lib/")
        .file("../escape.txt", b"x")
        .file("/abs.txt", b"y")
        .symlink("lib/link.jar", "/etc/passwd")
        .write(&dir.path().join("evil.jar"))
        .unwrap();
    let (names, attrs) = entries_and_manifest(&path);
    assert_eq!(
        names,
        [
            "META-INF/MANIFEST.MF",
            MARK_ENTRY,
            "lib/",
            "../escape.txt",
            "/abs.txt",
            "lib/link.jar"
        ]
    );
    assert_eq!(attrs["Ark-Biz-Name"], "evil");
    let mut archive = zip::ZipArchive::new(std::fs::File::open(&path).unwrap()).unwrap();
    assert!(archive.by_name("lib/link.jar").unwrap().is_symlink());
}

#[test]
fn ark_root_layout_keeps_classes_at_the_root_and_runs() {
    require_java();
    let dir = tempfile::tempdir().unwrap();
    // Shares `com/` with the mark entry: each directory entry must still appear once.
    let jar = BizJar::new("classic", "1")
        .layout(Layout::ArkRoot)
        .main_class("com.example.root.App")
        .behaviour(Behaviour::PrintLine("root up".into()))
        .behaviour(Behaviour::Exit(0))
        .build(dir.path());
    let (names, attrs) = entries_and_manifest(&jar);
    let mut unique = names.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), names.len(), "duplicate entries in {names:?}");
    assert!(
        names.iter().any(|n| n == "com/example/root/App.class"),
        "{names:?}"
    );
    assert!(names.iter().any(|n| n == MARK_ENTRY), "{names:?}");
    assert!(
        names.iter().any(|n| *n == format!("lib/{DEPENDENCY_JAR}")),
        "{names:?}"
    );
    assert_eq!(attrs["Main-Class"], "com.example.root.App");
    let (code, out) = run(&jar, "com.example.root.App", &[], &[]);
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        [DEPENDENCY_LINE, "root up"]
    );
}
