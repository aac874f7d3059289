//! The `process` backend against real JVMs running real Ark biz jars built by the test kit.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use koupleless_agent::backend::process::{
    MAIN_CLASS_KEY, ProcessBackend, ProcessBackendConfig, READY_LOG_KEY, READY_TCP_KEY,
};
use koupleless_agent::backend::{BackendError, BackendEvent, BizKey, RuntimeBackend, StartRequest};
use koupleless_agent::package::Package;
use koupleless_testkit::{
    Behaviour, BizJar, DEFAULT_MAIN_CLASS, DEPENDENCY_JAR, DEPENDENCY_LINE, EXIT_LATER_CODE,
    FAIL_MESSAGE, Layout, READY_LINE, RawZip, SMALL_JVM_ARGS, file_url, free_port, java_available,
    pid_exists, process_alive, read_pid_file, toolchain, wait_until,
};
use tokio::sync::mpsc;

/// Generous bound for things that normally take well under a second (slow CI machines).
const BOUND: Duration = Duration::from_secs(30);

fn config(work: &Path) -> ProcessBackendConfig {
    assert!(
        java_available(),
        "these tests need java, javac and jar in JAVA_HOME/bin or on PATH"
    );
    let mut cfg = ProcessBackendConfig::new(work);
    cfg.java = toolchain().unwrap().java.clone();
    cfg.jvm_args = SMALL_JVM_ARGS.iter().map(|s| s.to_string()).collect();
    cfg.stop_grace = Duration::from_secs(5);
    cfg.start_timeout = Duration::from_secs(60);
    cfg
}

struct World {
    tmp: tempfile::TempDir,
    backend: ProcessBackend,
    events: mpsc::Receiver<BackendEvent>,
}

impl World {
    fn new(adjust: impl FnOnce(&mut ProcessBackendConfig)) -> World {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir(tmp.path().join("jars")).unwrap();
        let mut cfg = config(&tmp.path().join("work"));
        adjust(&mut cfg);
        let (tx, events) = mpsc::channel(16);
        let backend = ProcessBackend::new(cfg, tx).unwrap();
        World {
            tmp,
            backend,
            events,
        }
    }

    fn jars(&self) -> PathBuf {
        self.tmp.path().join("jars")
    }

    fn path(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }

    /// Module directories currently on disk.
    fn module_dirs(&self) -> Vec<PathBuf> {
        let modules = self.backend.config().work_dir.join("modules");
        std::fs::read_dir(modules)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect()
    }

    fn build(&self, jar: BizJar) -> PathBuf {
        jar.build(&self.jars())
    }
}

fn package(jar: &Path, name: &str, version: &str, main_class: &str) -> Package {
    Package {
        key: BizKey::new(name, version),
        main_class: main_class.to_string(),
        priority: 100,
        web_context_path: None,
        attributes: BTreeMap::new(),
        jar: jar.to_path_buf(),
        url: file_url(jar),
    }
}

fn request(package: Package, envs: &[(&str, &str)]) -> StartRequest {
    StartRequest {
        package,
        args: Vec::new(),
        envs: envs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    }
}

fn log_of(backend: &ProcessBackend, key: &BizKey) -> String {
    std::fs::read_to_string(backend.log_file(key).expect("module is tracked")).unwrap()
}

fn start_failed_message(
    result: Result<koupleless_agent::backend::Started, BackendError>,
) -> String {
    match result {
        Err(BackendError::StartFailed { message }) => message,
        other => panic!("expected StartFailed, got {other:?}"),
    }
}

#[tokio::test]
async fn module_that_stays_up_is_activated_and_stops_cleanly() {
    let w = World::new(|_| {});
    let jar = w.build(BizJar::new("stay", "1.0.0").behaviour(Behaviour::StayUp));
    let key = BizKey::new("stay", "1.0.0");
    let started = w
        .backend
        .start(request(
            package(&jar, "stay", "1.0.0", DEFAULT_MAIN_CLASS),
            &[],
        ))
        .await
        .unwrap();

    assert_eq!(started.main_class, DEFAULT_MAIN_CLASS);
    let dir = started.work_dir.clone().unwrap();
    assert!(
        dir.starts_with(w.backend.config().work_dir.join("modules")),
        "{dir:?}"
    );
    let unpack = dir.join("unpack");
    let urls = &started.class_path;
    assert_eq!(urls[0], format!("file:{}/", unpack.display()), "{urls:?}");
    assert!(
        urls.contains(&format!("file:{}/lib/stay-1.0.0.jar", unpack.display())),
        "{urls:?}"
    );
    assert!(
        urls.contains(&format!("file:{}/lib/{DEPENDENCY_JAR}", unpack.display())),
        "{urls:?}"
    );

    let pid = w.backend.pid(&key).unwrap();
    assert!(process_alive(pid));
    w.backend.activate(&key).await.unwrap();
    // The first line comes from the class in the nested dependency jar.
    assert!(wait_until(BOUND, || log_of(&w.backend, &key).contains(DEPENDENCY_LINE)).await);

    w.backend.stop(&key).await.unwrap();
    assert!(!pid_exists(pid), "stopped module must be gone and reaped");
    assert!(!dir.exists());
    assert!(matches!(
        w.backend.stop(&key).await,
        Err(BackendError::NotFound(_))
    ));
    assert!(matches!(
        w.backend.activate(&key).await,
        Err(BackendError::NotFound(_))
    ));
}

#[tokio::test]
async fn args_and_envs_reach_the_module() {
    let w = World::new(|_| {});
    let jar = w.build(
        BizJar::new("echo", "1")
            .behaviour(Behaviour::PrintArgs)
            .behaviour(Behaviour::PrintEnv("GREETING".into()))
            .behaviour(Behaviour::PrintEnv("sofa.ark.custom".into()))
            .behaviour(Behaviour::PrintLine("printed all".into()))
            .behaviour(Behaviour::StayUp),
    );
    let mut req = request(
        package(&jar, "echo", "1", DEFAULT_MAIN_CLASS),
        &[
            ("GREETING", "hello world"),
            ("sofa.ark.custom", "x=y"),
            (READY_LOG_KEY, "printed all"),
        ],
    );
    // Arguments after the main class go to `main` untouched: no option parsing, and no
    // `@argfile` expansion by the launcher.
    req.args = vec!["--a".into(), "b c".into(), "@/nonexistent-argfile".into()];
    w.backend.start(req).await.unwrap();
    let log = log_of(&w.backend, &BizKey::new("echo", "1"));
    assert!(log.contains("args=--a,b c,@/nonexistent-argfile"), "{log}");
    assert!(log.contains("env GREETING=hello world"), "{log}");
    assert!(log.contains("env sofa.ark.custom=x=y"), "{log}");
    w.backend.shutdown().await;
}

#[tokio::test]
async fn main_throwing_at_start_fails_with_exit_code_and_exception() {
    let w = World::new(|_| {});
    let pid_file = w.path("fail.pid");
    let jar = w.build(
        BizJar::new("fail", "1")
            .behaviour(Behaviour::WritePidFile(pid_file.clone()))
            .behaviour(Behaviour::FailAtStart),
    );
    let message = start_failed_message(
        w.backend
            .start(request(package(&jar, "fail", "1", DEFAULT_MAIN_CLASS), &[]))
            .await,
    );
    assert!(message.contains("exit code 1"), "{message}");
    assert!(
        message.contains(&format!("java.lang.IllegalStateException: {FAIL_MESSAGE}")),
        "{message}"
    );
    assert!(
        w.module_dirs().is_empty(),
        "failed start left {:?}",
        w.module_dirs()
    );
    assert_eq!(w.backend.pid(&BizKey::new("fail", "1")), None);
    let pid = read_pid_file(&pid_file).expect("the module ran");
    assert!(!process_alive(pid));
}

#[tokio::test]
async fn log_line_readiness_waits_for_the_line() {
    let w = World::new(|_| {});
    let jar = w.build(
        BizJar::new("slowlog", "1")
            .behaviour(Behaviour::SlowReady(Duration::from_millis(800)))
            .behaviour(Behaviour::StayUp),
    );
    let key = BizKey::new("slowlog", "1");
    w.backend
        .start(request(
            package(&jar, "slowlog", "1", DEFAULT_MAIN_CLASS),
            &[(READY_LOG_KEY, READY_LINE)],
        ))
        .await
        .unwrap();
    // The settle time (300 ms) has long passed by then; only the log check explains this.
    assert!(log_of(&w.backend, &key).contains(READY_LINE));
    w.backend.shutdown().await;
}

#[tokio::test]
async fn tcp_readiness_waits_for_the_port() {
    let w = World::new(|_| {});
    let port = free_port();
    let jar = w.build(
        BizJar::new("slowtcp", "1")
            .behaviour(Behaviour::SlowReady(Duration::from_millis(800)))
            .behaviour(Behaviour::ListenTcp(port))
            .behaviour(Behaviour::StayUp),
    );
    let port_text = port.to_string();
    w.backend
        .start(request(
            package(&jar, "slowtcp", "1", DEFAULT_MAIN_CLASS),
            &[(READY_TCP_KEY, &port_text)],
        ))
        .await
        .unwrap();
    tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("port is open once start returns");
    w.backend.shutdown().await;
}

#[tokio::test]
async fn bad_readiness_port_is_refused_before_anything_runs() {
    let w = World::new(|_| {});
    let jar = w.build(BizJar::new("badport", "1").behaviour(Behaviour::StayUp));
    let message = start_failed_message(
        w.backend
            .start(request(
                package(&jar, "badport", "1", DEFAULT_MAIN_CLASS),
                &[(READY_TCP_KEY, "http")],
            ))
            .await,
    );
    assert!(message.contains(READY_TCP_KEY), "{message}");
    assert!(w.module_dirs().is_empty());
}

#[tokio::test]
async fn start_timeout_stops_the_module_and_cleans_up() {
    let w = World::new(|cfg| cfg.start_timeout = Duration::from_millis(1500));
    let pid_file = w.path("timeout.pid");
    let jar = w.build(
        BizJar::new("never", "1")
            .behaviour(Behaviour::WritePidFile(pid_file.clone()))
            .behaviour(Behaviour::StayUp),
    );
    let result = w
        .backend
        .start(request(
            package(&jar, "never", "1", DEFAULT_MAIN_CLASS),
            &[(READY_LOG_KEY, "never printed")],
        ))
        .await;
    match result {
        Err(BackendError::TimedOut { op, key, secs }) => {
            assert_eq!((op, key, secs), ("start", BizKey::new("never", "1"), 2));
        }
        other => panic!("expected TimedOut, got {other:?}"),
    }
    assert!(w.module_dirs().is_empty());
    let pid = read_pid_file(&pid_file).expect("the module ran");
    assert!(
        !pid_exists(pid),
        "timed-out module must be stopped and reaped"
    );
}

#[tokio::test]
async fn stop_escalates_to_sigkill_when_sigterm_is_ignored() {
    let w = World::new(|cfg| cfg.stop_grace = Duration::from_millis(500));
    let marker = w.path("sigterm-seen");
    let jar = w.build(
        BizJar::new("stubborn", "1")
            .behaviour(Behaviour::IgnoreSigterm {
                marker: Some(marker.clone()),
            })
            .behaviour(Behaviour::PrintLine("hook installed".into()))
            .behaviour(Behaviour::StayUp),
    );
    let key = BizKey::new("stubborn", "1");
    w.backend
        .start(request(
            package(&jar, "stubborn", "1", DEFAULT_MAIN_CLASS),
            &[(READY_LOG_KEY, "hook installed")],
        ))
        .await
        .unwrap();
    let pid = w.backend.pid(&key).unwrap();
    w.backend.stop(&key).await.unwrap();
    // The hook ran (SIGTERM arrived) and then slept forever: only SIGKILL ends that JVM.
    assert!(marker.exists(), "SIGTERM was not delivered first");
    assert!(!pid_exists(pid));
    assert!(w.module_dirs().is_empty());
}

#[tokio::test]
async fn module_dying_later_is_reported() {
    let mut w = World::new(|_| {});
    let trigger = w.path("die-now");
    let jar = w.build(
        BizJar::new("mortal", "1").behaviour(Behaviour::ExitWhenFileExists(trigger.clone())),
    );
    let key = BizKey::new("mortal", "1");
    w.backend
        .start(request(
            package(&jar, "mortal", "1", DEFAULT_MAIN_CLASS),
            &[],
        ))
        .await
        .unwrap();
    assert!(w.events.try_recv().is_err(), "no event while it runs");

    std::fs::write(&trigger, b"").unwrap();
    let event = tokio::time::timeout(BOUND, w.events.recv())
        .await
        .expect("an exit event")
        .unwrap();
    let BackendEvent::Exited { key: got, message } = event;
    assert_eq!(got, key);
    assert!(
        message.contains(&format!("exit code {EXIT_LATER_CODE}")),
        "{message}"
    );
    assert!(message.contains("koupleless-testkit: exiting"), "{message}");

    // Not serving any more, but its files stay until the engine stops it.
    assert!(matches!(
        w.backend.activate(&key).await,
        Err(BackendError::NotFound(_))
    ));
    assert_eq!(w.module_dirs().len(), 1);
    w.backend.stop(&key).await.unwrap();
    assert!(w.module_dirs().is_empty());
}

#[tokio::test]
async fn exited_module_can_be_started_again() {
    let mut w = World::new(|_| {});
    let trigger = w.path("die");
    let jar = w
        .build(BizJar::new("again", "1").behaviour(Behaviour::ExitWhenFileExists(trigger.clone())));
    let req = || request(package(&jar, "again", "1", DEFAULT_MAIN_CLASS), &[]);
    let first = w.backend.start(req()).await.unwrap();
    std::fs::write(&trigger, b"").unwrap();
    tokio::time::timeout(BOUND, w.events.recv())
        .await
        .unwrap()
        .unwrap();
    std::fs::remove_file(&trigger).unwrap();
    let second = w.backend.start(req()).await.unwrap();
    assert_ne!(first.work_dir, second.work_dir);
    assert_eq!(
        w.module_dirs(),
        vec![second.work_dir.unwrap()],
        "the dead module's files are replaced"
    );
    w.backend.shutdown().await;
}

#[tokio::test]
async fn starting_a_running_module_again_is_refused() {
    let w = World::new(|_| {});
    let jar = w.build(BizJar::new("once", "1").behaviour(Behaviour::StayUp));
    let req = || request(package(&jar, "once", "1", DEFAULT_MAIN_CLASS), &[]);
    w.backend.start(req()).await.unwrap();
    let message = start_failed_message(w.backend.start(req()).await);
    assert!(message.contains("already running"), "{message}");
    assert_eq!(w.module_dirs().len(), 1);
    w.backend.shutdown().await;
}

#[tokio::test]
async fn two_versions_run_side_by_side() {
    let w = World::new(|_| {});
    let v1 = w.build(BizJar::new("twin", "1.0.0").behaviour(Behaviour::StayUp));
    let v2 = w.build(BizJar::new("twin", "2.0.0").behaviour(Behaviour::StayUp));
    let (a, b) = tokio::join!(
        w.backend.start(request(
            package(&v1, "twin", "1.0.0", DEFAULT_MAIN_CLASS),
            &[]
        )),
        w.backend.start(request(
            package(&v2, "twin", "2.0.0", DEFAULT_MAIN_CLASS),
            &[]
        )),
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_ne!(a.work_dir, b.work_dir);
    let (k1, k2) = (BizKey::new("twin", "1.0.0"), BizKey::new("twin", "2.0.0"));
    let (p1, p2) = (w.backend.pid(&k1).unwrap(), w.backend.pid(&k2).unwrap());
    assert_ne!(p1, p2);
    w.backend.activate(&k2).await.unwrap();
    w.backend.stop(&k1).await.unwrap();
    assert!(!pid_exists(p1));
    assert!(
        process_alive(p2),
        "stopping one version leaves the other running"
    );
    w.backend.shutdown().await;
    assert!(!pid_exists(p2));
}

#[tokio::test]
async fn shutdown_stops_everything_and_refuses_new_starts() {
    let w = World::new(|cfg| cfg.stop_grace = Duration::from_millis(500));
    let plain = w.build(BizJar::new("plain", "1").behaviour(Behaviour::StayUp));
    let stubborn = w.build(
        BizJar::new("stubborn", "1")
            .behaviour(Behaviour::IgnoreSigterm { marker: None })
            .behaviour(Behaviour::PrintLine("hooked".into()))
            .behaviour(Behaviour::StayUp),
    );
    w.backend
        .start(request(
            package(&plain, "plain", "1", DEFAULT_MAIN_CLASS),
            &[],
        ))
        .await
        .unwrap();
    w.backend
        .start(request(
            package(&stubborn, "stubborn", "1", DEFAULT_MAIN_CLASS),
            &[(READY_LOG_KEY, "hooked")],
        ))
        .await
        .unwrap();
    let pids = [BizKey::new("plain", "1"), BizKey::new("stubborn", "1")]
        .map(|k| w.backend.pid(&k).unwrap());

    w.backend.shutdown().await;
    for pid in pids {
        assert!(!pid_exists(pid), "pid {pid} survived shutdown");
    }
    assert!(w.module_dirs().is_empty());
    let again = w
        .backend
        .start(request(
            package(&plain, "plain", "1", DEFAULT_MAIN_CLASS),
            &[],
        ))
        .await;
    assert!(
        matches!(again, Err(BackendError::Unavailable(_))),
        "{again:?}"
    );
}

#[tokio::test]
async fn dropped_start_cleans_up_in_the_background() {
    let w = World::new(|_| {});
    let pid_file = w.path("dropped.pid");
    let jar = w.build(
        BizJar::new("dropped", "1")
            .behaviour(Behaviour::WritePidFile(pid_file.clone()))
            .behaviour(Behaviour::StayUp),
    );
    // Boxed so that dropping it really drops the future (a stack pin lives to the end of scope).
    let mut start = Box::pin(w.backend.start(request(
        package(&jar, "dropped", "1", DEFAULT_MAIN_CLASS),
        &[(READY_LOG_KEY, "never")],
    )));
    // Drive the start until the JVM is up, then abandon it.
    let ran = tokio::select! {
        _ = &mut start => false,
        ran = wait_until(BOUND, || read_pid_file(&pid_file).is_some()) => ran,
    };
    assert!(ran, "module never ran");
    let pid = read_pid_file(&pid_file).unwrap();
    drop(start);
    assert!(wait_until(BOUND, || !pid_exists(pid) && w.module_dirs().is_empty()).await);
    assert_eq!(w.backend.pid(&BizKey::new("dropped", "1")), None);
}

#[tokio::test]
async fn discover_kills_leftovers_of_a_crashed_run() {
    assert!(java_available());
    let tmp = tempfile::tempdir().unwrap();
    let work = tmp.path().join("work");
    let jar = BizJar::new("orphan", "1")
        .behaviour(Behaviour::StayUp)
        .build(tmp.path());
    let key = BizKey::new("orphan", "1");

    // The "previous agent": its own runtime on its own thread, abandoned without shutdown,
    // like a process that was SIGKILLed (its module JVM keeps running).
    let (pid, dir) = {
        let (work, jar, key) = (work.clone(), jar.clone(), key.clone());
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let (tx, _rx) = mpsc::channel(4);
                let backend = ProcessBackend::new(config(&work), tx).unwrap();
                let started = backend
                    .start(request(
                        package(&jar, "orphan", "1", DEFAULT_MAIN_CLASS),
                        &[],
                    ))
                    .await
                    .unwrap();
                let pid = backend.pid(&key).unwrap();
                // A crash runs no destructors.
                std::mem::forget(backend);
                (pid, started.work_dir.unwrap())
            })
        })
        .join()
        .unwrap()
    };
    assert!(
        process_alive(pid),
        "the leftover must outlive its agent for this test to mean anything"
    );
    assert!(dir.exists());

    let (tx, _rx) = mpsc::channel(4);
    let backend = ProcessBackend::new(config(&work), tx).unwrap();
    assert_eq!(backend.discover().await.unwrap(), Vec::new());
    assert!(!process_alive(pid), "leftover module JVM still running");
    assert!(!dir.exists());

    // The engine re-installs; the new run works in the same work directory.
    backend
        .start(request(
            package(&jar, "orphan", "1", DEFAULT_MAIN_CLASS),
            &[],
        ))
        .await
        .unwrap();
    assert!(backend.discover().await.unwrap().is_empty());
    assert!(
        process_alive(backend.pid(&key).unwrap()),
        "discover must not touch this run's modules"
    );
    backend.shutdown().await;
}

#[tokio::test]
async fn hostile_archives_are_rejected_without_writing_outside() {
    let w = World::new(|_| {});
    let cases = [
        (
            "traversal",
            RawZip::ark_biz("traversal", "1", "a.Main").file("../../../escape.txt", b"x"),
            "parent directory",
        ),
        (
            "absolute",
            RawZip::ark_biz("absolute", "1", "a.Main").file("/tmp/koupleless-escape.txt", b"x"),
            "absolute path",
        ),
        (
            "symlink",
            RawZip::ark_biz("symlink", "1", "a.Main").symlink("lib/evil.jar", "/etc/passwd"),
            "symbolic link",
        ),
    ];
    for (name, zip, reason) in cases {
        let jar = zip.write(&w.jars().join(format!("{name}.jar"))).unwrap();
        let message = start_failed_message(
            w.backend
                .start(request(package(&jar, name, "1", "a.Main"), &[]))
                .await,
        );
        assert!(
            message.contains("unsafe entry") && message.contains(reason),
            "{name}: {message}"
        );
        assert!(
            w.module_dirs().is_empty(),
            "{name} left {:?}",
            w.module_dirs()
        );
    }
    assert!(!w.backend.config().work_dir.join("escape.txt").exists());
    assert!(!w.tmp.path().join("escape.txt").exists());
}

#[tokio::test]
async fn unreadable_archive_fails_cleanly() {
    let w = World::new(|_| {});
    let jar = w.jars().join("garbage.jar");
    std::fs::write(&jar, b"this is not a zip file").unwrap();
    let message = start_failed_message(
        w.backend
            .start(request(package(&jar, "garbage", "1", "a.Main"), &[]))
            .await,
    );
    assert!(message.contains("not a readable jar"), "{message}");
    assert!(w.module_dirs().is_empty());
}

#[tokio::test]
async fn spring_boot_layout_runs() {
    let w = World::new(|_| {});
    let jar = w.build(
        BizJar::new("boot", "1")
            .layout(Layout::SpringBoot)
            .main_class("com.example.boot.App")
            .behaviour(Behaviour::PrintLine("boot up".into()))
            .behaviour(Behaviour::StayUp),
    );
    let started = w
        .backend
        .start(request(
            package(&jar, "boot", "1", "com.example.boot.App"),
            &[(READY_LOG_KEY, "boot up")],
        ))
        .await
        .unwrap();
    let unpack = started.work_dir.clone().unwrap().join("unpack");
    assert!(
        started
            .class_path
            .contains(&format!("file:{}/BOOT-INF/classes/", unpack.display())),
        "{started:?}"
    );
    assert!(
        started.class_path.contains(&format!(
            "file:{}/BOOT-INF/lib/{DEPENDENCY_JAR}",
            unpack.display()
        )),
        "{started:?}"
    );
    assert!(log_of(&w.backend, &BizKey::new("boot", "1")).contains(DEPENDENCY_LINE));
    w.backend.shutdown().await;
}

/// The layout in the SOFAArk docs: the module's own classes at the archive root.
#[tokio::test]
async fn classic_layout_with_classes_at_the_root_runs() {
    let w = World::new(|_| {});
    let jar = w.build(
        BizJar::new("classic", "1")
            .layout(Layout::ArkRoot)
            .main_class("com.example.root.App")
            .behaviour(Behaviour::PrintLine("root up".into()))
            .behaviour(Behaviour::StayUp),
    );
    let started = w
        .backend
        .start(request(
            package(&jar, "classic", "1", "com.example.root.App"),
            &[(READY_LOG_KEY, "root up")],
        ))
        .await
        .unwrap();
    let unpack = started.work_dir.clone().unwrap().join("unpack");
    assert_eq!(started.class_path[0], format!("file:{}/", unpack.display()));
    assert!(log_of(&w.backend, &BizKey::new("classic", "1")).contains(DEPENDENCY_LINE));
    w.backend.shutdown().await;
}

#[tokio::test]
async fn main_class_env_overrides_the_package() {
    let w = World::new(|_| {});
    let jar = w.build(
        BizJar::new("override", "1")
            .main_class("com.example.Real")
            .behaviour(Behaviour::PrintLine("real main".into()))
            .behaviour(Behaviour::StayUp),
    );
    // As if the manifest named a class that is not in the jar.
    let pkg = || package(&jar, "override", "1", "com.example.Missing");
    let message = start_failed_message(w.backend.start(request(pkg(), &[])).await);
    assert!(message.contains("com.example.Missing"), "{message}");
    assert!(message.contains("exit code 1"), "{message}");

    let started = w
        .backend
        .start(request(
            pkg(),
            &[
                (MAIN_CLASS_KEY, "com.example.Real"),
                (READY_LOG_KEY, "real main"),
            ],
        ))
        .await
        .unwrap();
    assert_eq!(started.main_class, "com.example.Real");

    let message = start_failed_message(
        w.backend
            .start(request(
                package(&jar, "override", "2", "a.Main"),
                &[(MAIN_CLASS_KEY, "-agentpath:/x.so")],
            ))
            .await,
    );
    assert!(message.contains("not a valid Java class name"), "{message}");
    w.backend.shutdown().await;
}

#[tokio::test]
async fn missing_java_is_reported_at_construction() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = ProcessBackendConfig::new(tmp.path());
    cfg.java = tmp.path().join("no-such-java");
    let (tx, _rx) = mpsc::channel(1);
    assert!(matches!(
        ProcessBackend::new(cfg, tx),
        Err(BackendError::Unavailable(_))
    ));
}
