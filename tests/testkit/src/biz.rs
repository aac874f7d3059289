//! Building Ark biz jars: [`BizJar`] for real, runnable modules and [`RawZip`] for archives
//! that are deliberately broken or malicious.

use std::collections::HashSet;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, ZipWriter};

use crate::java::compile;
use crate::manifest::manifest_text;
use crate::{Behaviour, KitError};

/// The entry whose presence marks an archive as an Ark biz (SOFAArk rejects jars without it).
pub const MARK_ENTRY: &str = "com/alipay/sofa/ark/biz/mark";

/// Main class every generated module uses unless [`BizJar::main_class`] says otherwise.
pub const DEFAULT_MAIN_CLASS: &str = "koupleless.testkit.biz.Main";

/// File name of the dependency jar inside `lib/` or `BOOT-INF/lib/`.
pub const DEPENDENCY_JAR: &str = "testkit-dep-1.0.jar";

/// A `Main-Class` that does not exist in any generated jar, standing in for the Spring Boot
/// launcher: a module started with it would fail, so a module that runs proves `Start-Class`
/// was preferred.
pub const LAUNCHER_CLASS: &str = "org.springframework.boot.loader.launch.JarLauncher";

/// How the classes are laid out inside the biz jar.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Layout {
    /// SOFAArk's biz layout: the module's classes in `lib/<name>-<version>.jar`, its
    /// dependency in `lib/testkit-dep-1.0.jar`, nothing at the root but the mark and manifest.
    #[default]
    ArkLib,
    /// The classic SOFAArk biz layout from the SOFAArk docs: the module's classes loose at the
    /// archive root, its dependency in `lib/testkit-dep-1.0.jar`.
    ArkRoot,
    /// Spring Boot's layout: loose classes under `BOOT-INF/classes/`, the dependency in
    /// `BOOT-INF/lib/testkit-dep-1.0.jar`.
    SpringBoot,
}

/// Which manifest attributes name the main class.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum MainClassAttr {
    /// `Main-Class` only.
    MainClass,
    /// `Start-Class` only.
    StartClass,
    /// Both, with the same class (what sofa-ark-maven-plugin writes).
    #[default]
    Both,
    /// `Start-Class` is the module's class, `Main-Class` is [`LAUNCHER_CLASS`] (absent), as in
    /// a Spring Boot fat jar: `Start-Class` must win.
    StartClassOverLauncher,
    /// Neither: SOFAArk rejects such a jar (`Biz Main Class must not be empty!`).
    Neither,
}

/// Builder for a real Ark biz jar with generated, compiled Java code.
///
/// ```no_run
/// use std::time::Duration;
/// use koupleless_testkit::{Behaviour, BizJar, READY_LINE};
///
/// let dir = tempfile::tempdir().unwrap();
/// let jar = BizJar::new("demo", "1.0.0")
///     .behaviour(Behaviour::SlowReady(Duration::from_millis(500)))
///     .behaviour(Behaviour::StayUp)
///     .priority(10)
///     .build(dir.path());
/// // `jar` is `<dir>/demo-1.0.0-ark-biz.jar`; the module prints READY_LINE after 0.5 s.
/// # let _ = (jar, READY_LINE);
/// ```
#[derive(Clone, Debug)]
#[must_use]
pub struct BizJar {
    name: String,
    version: String,
    steps: Vec<Behaviour>,
    main_class: String,
    main_attr: Option<MainClassAttr>,
    layout: Layout,
    mark: bool,
    priority: Option<i32>,
    web_context_path: Option<String>,
    extra: Vec<(String, String)>,
    file_name: Option<String>,
}

impl BizJar {
    /// A module named `name` at `version` (manifest `Ark-Biz-Name` / `Ark-Biz-Version`) whose
    /// `main` stays up, until behaviours are added.
    pub fn new(name: impl Into<String>, version: impl Into<String>) -> Self {
        BizJar {
            name: name.into(),
            version: version.into(),
            steps: Vec::new(),
            main_class: DEFAULT_MAIN_CLASS.to_string(),
            main_attr: None,
            layout: Layout::default(),
            mark: true,
            priority: None,
            web_context_path: None,
            extra: Vec::new(),
            file_name: None,
        }
    }

    /// Appends a step to `main` (steps run in the order added).
    pub fn behaviour(mut self, step: Behaviour) -> Self {
        self.steps.push(step);
        self
    }

    /// The main class's fully qualified name (needs a package; default
    /// [`DEFAULT_MAIN_CLASS`]).
    pub fn main_class(mut self, class: impl Into<String>) -> Self {
        self.main_class = class.into();
        self
    }

    /// Which manifest attributes carry the main class (default: [`MainClassAttr::Both`] for
    /// [`Layout::ArkLib`], [`MainClassAttr::StartClassOverLauncher`] for
    /// [`Layout::SpringBoot`]).
    pub fn main_class_attr(mut self, attr: MainClassAttr) -> Self {
        self.main_attr = Some(attr);
        self
    }

    /// The layout of classes and nested jars.
    pub fn layout(mut self, layout: Layout) -> Self {
        self.layout = layout;
        self
    }

    /// Manifest `priority`.
    pub fn priority(mut self, priority: i32) -> Self {
        self.priority = Some(priority);
        self
    }

    /// Manifest `web-context-path`.
    pub fn web_context_path(mut self, path: impl Into<String>) -> Self {
        self.web_context_path = Some(path.into());
        self
    }

    /// Leaves out the `com/alipay/sofa/ark/biz/mark` entry (SOFAArk: `Archive must be a ark
    /// biz!`).
    pub fn no_mark(mut self) -> Self {
        self.mark = false;
        self
    }

    /// An extra main manifest attribute (written after the standard ones).
    pub fn attribute(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.extra.push((key.into(), value.into()));
        self
    }

    /// The jar's file name (default `<name>-<version>-ark-biz.jar`).
    pub fn file_name(mut self, file_name: impl Into<String>) -> Self {
        self.file_name = Some(file_name.into());
        self
    }

    /// The manifest attributes this builder writes, in order.
    pub fn manifest_attributes(&self) -> Vec<(String, String)> {
        let mut attrs = vec![
            ("Ark-Biz-Name".to_string(), self.name.clone()),
            ("Ark-Biz-Version".to_string(), self.version.clone()),
        ];
        let attr = self.main_attr.unwrap_or(match self.layout {
            Layout::ArkLib | Layout::ArkRoot => MainClassAttr::Both,
            Layout::SpringBoot => MainClassAttr::StartClassOverLauncher,
        });
        let main = self.main_class.clone();
        match attr {
            MainClassAttr::MainClass => attrs.push(("Main-Class".into(), main)),
            MainClassAttr::StartClass => attrs.push(("Start-Class".into(), main)),
            MainClassAttr::Both => {
                attrs.push(("Main-Class".into(), main.clone()));
                attrs.push(("Start-Class".into(), main));
            }
            MainClassAttr::StartClassOverLauncher => {
                attrs.push(("Main-Class".into(), LAUNCHER_CLASS.into()));
                attrs.push(("Start-Class".into(), main));
            }
            MainClassAttr::Neither => {}
        }
        if let Some(p) = self.priority {
            attrs.push(("priority".into(), p.to_string()));
        }
        if let Some(w) = &self.web_context_path {
            attrs.push(("web-context-path".into(), w.clone()));
        }
        attrs.extend(self.extra.iter().cloned());
        attrs
    }

    /// Builds the jar into `dir` and returns its path; panics with the cause on failure
    /// (a test cannot go on without its module). See [`BizJar::try_build`].
    pub fn build(&self, dir: &Path) -> PathBuf {
        match self.try_build(dir) {
            Ok(path) => path,
            Err(e) => panic!("building test biz jar {}:{}: {e}", self.name, self.version),
        }
    }

    /// Builds the jar into `dir` (compiling, or reusing cached classes) and returns its path.
    pub fn try_build(&self, dir: &Path) -> Result<PathBuf, KitError> {
        let compiled = compile(&self.main_class, &self.steps)?;
        let file_name = self
            .file_name
            .clone()
            .unwrap_or_else(|| format!("{}-{}-ark-biz.jar", self.name, self.version));
        let path = dir.join(file_name);
        let file = File::create(&path).map_err(|source| KitError::Io {
            context: format!("creating {}", path.display()),
            source,
        })?;
        let mut zip = ZipWriter::new(file);
        let opts = SimpleFileOptions::default().compression_method(CompressionMethod::Stored);
        let mut out = JarOut {
            zip: &mut zip,
            opts,
            dirs: HashSet::new(),
        };
        out.dir("META-INF/")?;
        out.bytes(
            "META-INF/MANIFEST.MF",
            manifest_text(&self.manifest_attributes()).as_bytes(),
        )?;
        if self.mark {
            out.parents(MARK_ENTRY)?;
            out.bytes(MARK_ENTRY, b"")?;
        }
        let dep = compiled.dep_jar.as_path();
        match self.layout {
            Layout::ArkLib => {
                let main_jar = format!("lib/{}-{}.jar", self.name, self.version);
                out.file(&main_jar, &compiled.main_jar)?;
                out.file(&format!("lib/{DEPENDENCY_JAR}"), dep)?;
            }
            Layout::ArkRoot => {
                out.tree("", &compiled.main_classes)?;
                out.file(&format!("lib/{DEPENDENCY_JAR}"), dep)?;
            }
            Layout::SpringBoot => {
                out.dir("BOOT-INF/classes/")?;
                out.tree("BOOT-INF/classes/", &compiled.main_classes)?;
                out.file(&format!("BOOT-INF/lib/{DEPENDENCY_JAR}"), dep)?;
            }
        }
        zip.finish()?;
        Ok(path)
    }
}

/// Writes jar entries, adding each parent directory entry once (as `jar` does), in the
/// order first needed.
struct JarOut<'a> {
    zip: &'a mut ZipWriter<File>,
    opts: SimpleFileOptions,
    dirs: HashSet<String>,
}

impl JarOut<'_> {
    /// A directory entry (`name` ends with `/`) and its parents, each once.
    fn dir(&mut self, name: &str) -> Result<(), KitError> {
        self.parents(name.trim_end_matches('/'))?;
        if self.dirs.insert(name.to_string()) {
            self.zip.add_directory(name, self.opts)?;
        }
        Ok(())
    }

    /// Directory entries for every parent of `name`.
    fn parents(&mut self, name: &str) -> Result<(), KitError> {
        let mut end = 0;
        while let Some(pos) = name[end..].find('/') {
            end += pos + 1;
            let parent = &name[..end];
            if self.dirs.insert(parent.to_string()) {
                self.zip.add_directory(parent, self.opts)?;
            }
        }
        Ok(())
    }

    fn bytes(&mut self, name: &str, data: &[u8]) -> Result<(), KitError> {
        self.parents(name)?;
        self.zip.start_file(name, self.opts)?;
        self.zip.write_all(data).map_err(|source| KitError::Io {
            context: format!("writing {name}"),
            source,
        })
    }

    fn file(&mut self, name: &str, source: &Path) -> Result<(), KitError> {
        let data = std::fs::read(source).map_err(|e| KitError::Io {
            context: format!("reading {}", source.display()),
            source: e,
        })?;
        self.bytes(name, &data)
    }

    /// Every file under `dir`, below the archive prefix `prefix` (empty or ending with `/`),
    /// in sorted order so archives are reproducible.
    fn tree(&mut self, prefix: &str, dir: &Path) -> Result<(), KitError> {
        let read = std::fs::read_dir(dir).map_err(|e| KitError::Io {
            context: format!("listing {}", dir.display()),
            source: e,
        })?;
        let mut children: Vec<PathBuf> = read.filter_map(|e| e.ok().map(|e| e.path())).collect();
        children.sort();
        for child in children {
            let name = child
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            if child.is_dir() {
                let sub = format!("{prefix}{name}/");
                self.dir(&sub)?;
                self.tree(&sub, &child)?;
            } else {
                self.file(&format!("{prefix}{name}"), &child)?;
            }
        }
        Ok(())
    }
}

/// One entry of a [`RawZip`].
#[derive(Clone, Debug, PartialEq, Eq)]
enum RawEntry {
    File(String, Vec<u8>),
    Dir(String),
    Symlink(String, String),
}

/// A zip archive with exactly the entries given, names unchecked: for tests of how unpacking
/// and validation treat hostile or broken archives (`../` entries, absolute paths, symlinks,
/// missing manifest).
///
/// ```no_run
/// use koupleless_testkit::RawZip;
///
/// let dir = tempfile::tempdir().unwrap();
/// let evil = RawZip::ark_biz("evil", "1.0.0", "a.Main")
///     .file("../outside.txt", b"escaped")
///     .write(&dir.path().join("evil.jar"))
///     .unwrap();
/// # let _ = evil;
/// ```
#[derive(Clone, Debug, Default)]
#[must_use]
pub struct RawZip {
    entries: Vec<RawEntry>,
}

impl RawZip {
    /// An empty archive.
    pub fn new() -> Self {
        RawZip::default()
    }

    /// An archive that passes Ark biz validation: a manifest naming `name`, `version` and
    /// `main_class` (as `Main-Class`), and the mark entry. Add the hostile entries after it.
    pub fn ark_biz(name: &str, version: &str, main_class: &str) -> Self {
        let manifest = manifest_text(&[
            ("Ark-Biz-Name".into(), name.into()),
            ("Ark-Biz-Version".into(), version.into()),
            ("Main-Class".into(), main_class.into()),
        ]);
        RawZip::new()
            .file("META-INF/MANIFEST.MF", manifest.as_bytes())
            .file(MARK_ENTRY, b"")
    }

    /// A regular file entry named exactly `name`.
    pub fn file(mut self, name: impl Into<String>, contents: &[u8]) -> Self {
        self.entries
            .push(RawEntry::File(name.into(), contents.to_vec()));
        self
    }

    /// A directory entry (the name should end with `/`).
    pub fn dir(mut self, name: impl Into<String>) -> Self {
        self.entries.push(RawEntry::Dir(name.into()));
        self
    }

    /// A symbolic link entry (Unix mode `S_IFLNK`) pointing at `target`.
    pub fn symlink(mut self, name: impl Into<String>, target: impl Into<String>) -> Self {
        self.entries
            .push(RawEntry::Symlink(name.into(), target.into()));
        self
    }

    /// Writes the archive to `path` and returns it.
    pub fn write(&self, path: &Path) -> Result<PathBuf, KitError> {
        let file = File::create(path).map_err(|source| KitError::Io {
            context: format!("creating {}", path.display()),
            source,
        })?;
        let mut zip = ZipWriter::new(file);
        let opts = SimpleFileOptions::default().compression_method(CompressionMethod::Stored);
        for entry in &self.entries {
            match entry {
                RawEntry::File(name, data) => {
                    zip.start_file(name.as_str(), opts)?;
                    zip.write_all(data).map_err(|source| KitError::Io {
                        context: format!("writing {name}"),
                        source,
                    })?;
                }
                RawEntry::Dir(name) => zip.add_directory(name.as_str(), opts)?,
                RawEntry::Symlink(name, target) => {
                    zip.add_symlink(name.as_str(), target.as_str(), opts)?
                }
            }
        }
        zip.finish()?;
        Ok(path.to_path_buf())
    }
}
