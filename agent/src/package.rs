//! Module packages: fetching `bizUrl` once per install, validating the Ark biz jar and reading
//! its manifest before anything runs.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::backend::BizKey;
pub use crate::url_policy::UrlRule;
use crate::url_policy::{self, Refusal};

/// A fetched and validated Ark biz package, stored under the agent's work directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Package {
    /// Identity from the manifest (`Ark-Biz-Name`, `Ark-Biz-Version`).
    pub key: BizKey,
    /// `Start-Class`, else `Main-Class`.
    pub main_class: String,
    /// Manifest `priority` (default 100); lower installs first in a batch.
    pub priority: i32,
    /// Manifest `web-context-path`, if any.
    pub web_context_path: Option<String>,
    /// Every main manifest attribute, for `BizModel.attributes`-style reporting.
    pub attributes: BTreeMap<String, String>,
    /// The jar file, owned by the agent (removed on uninstall or failed install).
    pub jar: PathBuf,
    /// The `bizUrl` it was fetched from.
    pub url: String,
}

use std::io::{Read, Write};
use std::path::Path;
use std::time::Duration;

use futures::StreamExt;
use koupleless_protocol::ErrorCode;

/// The entry every Ark biz jar carries (`Archive must be a ark biz!` without it).
pub const ARK_BIZ_MARK: &str = "com/alipay/sofa/ark/biz/mark";
/// Default manifest `priority` (sofa-ark `PriorityOrdered.DEFAULT_PRECEDENCE`).
pub const DEFAULT_PRIORITY: i32 = 100;

/// Why a package could not be fetched or accepted. Every variant names what to fix.
#[derive(Debug, thiserror::Error)]
pub enum PackageError {
    /// Not a URL at all (a bare path needs `file://`).
    #[error("no protocol: {0} (use file:// for local packages)")]
    NoProtocol(String),
    /// Unparseable URL.
    #[error("invalid bizUrl {url}: {reason}")]
    BadUrl {
        /// The input.
        url: String,
        /// Parser message.
        reason: String,
    },
    /// A scheme we do not fetch.
    #[error(
        "unsupported bizUrl scheme {scheme:?} in {url}: only file, http and https are supported"
    )]
    UnsupportedScheme {
        /// The URL.
        url: String,
        /// Its scheme.
        scheme: String,
    },
    /// Refused by the configured allow-lists.
    #[error("bizUrl {0} is not allowed by this agent's allow-list")]
    NotAllowed(String),
    /// A redirect hop refused: outside the allow-list, https to http, or a private address.
    #[error("bizUrl {url} was refused: {reason}")]
    Refused {
        /// The URL asked for.
        url: String,
        /// Which rule refused it, naming the hop.
        reason: String,
    },
    /// An `--allow-url-prefix` entry that is not a usable rule (found at start-up).
    #[error("invalid --allow-url-prefix {rule:?}: {reason}")]
    BadAllowRule {
        /// The entry.
        rule: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Local file missing, or HTTP 404/410.
    #[error("package not found: {0}")]
    NotFound(String),
    /// Any other non-success HTTP status.
    #[error("fetching {url} failed: HTTP {status}")]
    HttpStatus {
        /// The URL.
        url: String,
        /// Status code.
        status: u16,
    },
    /// Connection failed (DNS, refused, TLS).
    #[error("cannot reach {url}: {reason}")]
    Unreachable {
        /// The URL.
        url: String,
        /// Cause.
        reason: String,
    },
    /// Connect or read deadline passed.
    #[error("fetching {url} timed out: {reason}")]
    Timeout {
        /// The URL.
        url: String,
        /// Which deadline.
        reason: String,
    },
    /// Larger than the configured limit.
    #[error("package {url} is larger than the limit of {limit} bytes")]
    TooLarge {
        /// The URL.
        url: String,
        /// Limit in bytes.
        limit: u64,
    },
    /// No space left in the work directory.
    #[error("no space left on device while storing {0}")]
    DiskFull(String),
    /// Other local I/O failure.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// Not a readable zip/jar.
    #[error("package {path} is not a readable jar: {reason}")]
    NotAJar {
        /// File.
        path: String,
        /// Zip error.
        reason: String,
    },
    /// A jar without the Ark biz mark entry.
    #[error("Archive must be a ark biz! ({0} has no {ARK_BIZ_MARK} entry)")]
    NotArkBiz(String),
    /// A jar entry that would escape the unpack directory.
    #[error("package {path} has an unsafe entry {entry:?} (absolute or escaping path)")]
    UnsafeEntry {
        /// File.
        path: String,
        /// The entry name.
        entry: String,
    },
    /// Manifest lacks `Ark-Biz-Name` or `Ark-Biz-Version`.
    #[error("package {path} has no {attribute} in its manifest")]
    MissingIdentity {
        /// File.
        path: String,
        /// Missing attribute.
        attribute: &'static str,
    },
    /// Neither `Start-Class` nor `Main-Class`.
    #[error("Biz Main Class must not be empty! ({0} has neither Start-Class nor Main-Class)")]
    NoMainClass(String),
}

impl PackageError {
    /// The two-level error code for this failure.
    pub fn error_code(&self) -> ErrorCode {
        match self {
            PackageError::NoProtocol(_)
            | PackageError::BadUrl { .. }
            | PackageError::UnsupportedScheme { .. } => ErrorCode::DecodeUrlFailed,
            PackageError::NotAllowed(_)
            | PackageError::Refused { .. }
            | PackageError::BadAllowRule { .. } => ErrorCode::InvalidParameter,
            PackageError::NotFound(_)
            | PackageError::HttpStatus { .. }
            | PackageError::Unreachable { .. } => ErrorCode::PullBizError,
            PackageError::Timeout { .. } => ErrorCode::PullBizTimeOut,
            PackageError::DiskFull(_) => ErrorCode::DiskFull,
            PackageError::Io { .. } => ErrorCode::MachineMalfunction,
            PackageError::TooLarge { .. }
            | PackageError::NotAJar { .. }
            | PackageError::NotArkBiz(_)
            | PackageError::UnsafeEntry { .. }
            | PackageError::MissingIdentity { .. }
            | PackageError::NoMainClass(_) => ErrorCode::InstallationRequirementNotMet,
        }
    }

    fn io(context: impl Into<String>, source: std::io::Error) -> PackageError {
        if source.kind() == std::io::ErrorKind::StorageFull {
            return PackageError::DiskFull(context.into());
        }
        PackageError::Io {
            context: context.into(),
            source,
        }
    }
}

/// Limits and policy for fetching packages.
#[derive(Clone, Debug)]
pub struct FetchConfig {
    /// Where fetched jars are stored (created if missing).
    pub dir: PathBuf,
    /// TCP/TLS connect deadline.
    pub connect_timeout: Duration,
    /// Deadline between two reads of the body.
    pub read_timeout: Duration,
    /// Largest accepted package.
    pub max_bytes: u64,
    /// Redirects followed (http → https included; https → http is always refused).
    pub max_redirects: usize,
    /// If non-empty, every `http(s)` URL, and every redirect hop, must match one of these.
    pub allowed_urls: Vec<UrlRule>,
    /// Refuse `http(s)` hosts that are, or resolve to, loopback, link-local, private or other
    /// non-public addresses (checked on the addresses actually connected to, after DNS).
    pub deny_private_addresses: bool,
    /// If non-empty, `file` URLs must lie under one of these directories.
    pub allowed_file_dirs: Vec<PathBuf>,
}

impl FetchConfig {
    /// Defaults: 10 s connect, 60 s read, 1 GiB, 10 redirects, no allow-lists.
    pub fn new(dir: PathBuf) -> Self {
        FetchConfig {
            dir,
            connect_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(60),
            max_bytes: 1 << 30,
            max_redirects: 10,
            allowed_urls: Vec::new(),
            deny_private_addresses: false,
            allowed_file_dirs: Vec::new(),
        }
    }
}

/// A parsed `bizUrl`, decided before any I/O.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// A local file.
    File(PathBuf),
    /// An HTTP(S) URL.
    Http(String),
}

/// Parses and checks a `bizUrl` against the allow-lists (pure).
pub fn resolve_url(raw: &str, cfg: &FetchConfig) -> Result<Source, PackageError> {
    let url = match url::Url::parse(raw) {
        Ok(u) => u,
        Err(url::ParseError::RelativeUrlWithoutBase) => {
            return Err(PackageError::NoProtocol(raw.to_owned()));
        }
        Err(e) => {
            return Err(PackageError::BadUrl {
                url: raw.into(),
                reason: e.to_string(),
            });
        }
    };
    match url.scheme() {
        "file" => {
            let path = url.to_file_path().map_err(|()| PackageError::BadUrl {
                url: raw.into(),
                reason: "not a local absolute path".into(),
            })?;
            // Normalize `..` lexically so an allow-listed prefix cannot be escaped.
            let mut clean = PathBuf::new();
            for c in path.components() {
                match c {
                    std::path::Component::ParentDir => {
                        clean.pop();
                    }
                    std::path::Component::CurDir => {}
                    other => clean.push(other),
                }
            }
            if !cfg.allowed_file_dirs.is_empty()
                && !cfg.allowed_file_dirs.iter().any(|d| clean.starts_with(d))
            {
                return Err(PackageError::NotAllowed(raw.to_owned()));
            }
            Ok(Source::File(clean))
        }
        "http" | "https" => {
            if let Err(refusal) =
                url_policy::check_url(&url, &cfg.allowed_urls, cfg.deny_private_addresses)
            {
                tracing::warn!(url = raw, reason = %refusal, "bizUrl refused");
                return Err(match refusal {
                    Refusal::NotAllowed => PackageError::NotAllowed(raw.to_owned()),
                    other => PackageError::Refused {
                        url: raw.to_owned(),
                        reason: other.to_string(),
                    },
                });
            }
            Ok(Source::Http(raw.to_owned()))
        }
        other => Err(PackageError::UnsupportedScheme {
            url: raw.to_owned(),
            scheme: other.to_owned(),
        }),
    }
}

/// Parses a jar manifest's main section (Java rules: `Name: value`, continuation lines start
/// with one space, sections separated by a blank line).
pub fn parse_manifest(text: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut last: Option<String> = None;
    for line in text.lines() {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.is_empty() {
            break;
        }
        if let Some(cont) = line.strip_prefix(' ') {
            if let Some(v) = last.as_ref().and_then(|k| out.get_mut(k)) {
                let v: &mut String = v;
                v.push_str(cont);
            }
            continue;
        }
        if let Some((k, v)) = line.split_once(':') {
            let k = k.trim().to_owned();
            out.insert(k.clone(), v.strip_prefix(' ').unwrap_or(v).to_owned());
            last = Some(k);
        }
    }
    out
}

/// What the manifest says about a package.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Manifest {
    /// Identity.
    pub key: BizKey,
    /// Main class.
    pub main_class: String,
    /// Priority.
    pub priority: i32,
    /// Web context path.
    pub web_context_path: Option<String>,
    /// All attributes.
    pub attributes: BTreeMap<String, String>,
}

/// Turns manifest attributes into a [`Manifest`] (pure).
pub fn manifest_from_attributes(
    path: &str,
    attributes: BTreeMap<String, String>,
) -> Result<Manifest, PackageError> {
    let get = |k: &str| {
        attributes
            .get(k)
            .map(|s| s.trim())
            .filter(|s| !s.is_empty())
    };
    let name = get("Ark-Biz-Name").ok_or(PackageError::MissingIdentity {
        path: path.into(),
        attribute: "Ark-Biz-Name",
    })?;
    let version = get("Ark-Biz-Version").ok_or(PackageError::MissingIdentity {
        path: path.into(),
        attribute: "Ark-Biz-Version",
    })?;
    let main_class = get("Start-Class")
        .or_else(|| get("Main-Class"))
        .ok_or_else(|| PackageError::NoMainClass(path.into()))?;
    let priority = get("priority")
        .and_then(|p| p.parse().ok())
        .unwrap_or(DEFAULT_PRIORITY);
    let web_context_path = get("web-context-path").map(str::to_owned);
    Ok(Manifest {
        key: BizKey::new(name, version),
        main_class: main_class.to_owned(),
        priority,
        web_context_path,
        attributes: attributes.clone(),
    })
}

/// Whether a zip entry name stays inside the directory it is unpacked into (pure).
pub fn is_safe_entry(name: &str) -> bool {
    !name.starts_with('/')
        && !name.starts_with('\\')
        && !name.contains('\0')
        && !name.split(['/', '\\']).any(|seg| seg == "..")
        && (name.len() < 2 || name.as_bytes()[1] != b':')
}

/// Validates a jar on disk: readable zip, safe entry names, Ark biz mark, manifest identity and
/// main class. Blocking; run it off the async runtime.
pub fn inspect(jar: &Path) -> Result<Manifest, PackageError> {
    let shown = jar.display().to_string();
    let file =
        std::fs::File::open(jar).map_err(|e| PackageError::io(format!("open {shown}"), e))?;
    let not_jar = |e: zip::result::ZipError| PackageError::NotAJar {
        path: shown.clone(),
        reason: e.to_string(),
    };
    let mut zip = zip::ZipArchive::new(std::io::BufReader::new(file)).map_err(not_jar)?;
    let mut has_mark = false;
    let names: Vec<String> = zip
        .file_names()
        .map(|n| n.map(|n| n.into_owned()))
        .collect::<Result<_, _>>()
        .map_err(not_jar)?;
    for name in &names {
        if !is_safe_entry(name) {
            return Err(PackageError::UnsafeEntry {
                path: shown.clone(),
                entry: name.to_owned(),
            });
        }
        has_mark |= name == ARK_BIZ_MARK;
    }
    if !has_mark {
        return Err(PackageError::NotArkBiz(shown));
    }
    let mut text = String::new();
    match zip.by_name("META-INF/MANIFEST.MF") {
        Ok(mut entry) => {
            // A manifest is small; cap the read so a hostile jar cannot exhaust memory.
            entry
                .by_ref()
                .take(1 << 20)
                .read_to_string(&mut text)
                .map_err(|e| PackageError::NotAJar {
                    path: shown.clone(),
                    reason: e.to_string(),
                })?;
        }
        Err(zip::result::ZipError::FileNotFound) => {
            return Err(PackageError::MissingIdentity {
                path: shown,
                attribute: "Ark-Biz-Name",
            });
        }
        Err(e) => return Err(not_jar(e)),
    }
    manifest_from_attributes(&shown, parse_manifest(&text))
}

/// Fetches packages into the work directory, each URL once per install.
#[derive(Clone, Debug)]
pub struct PackageStore {
    cfg: FetchConfig,
    client: reqwest::Client,
}

impl PackageStore {
    /// Creates the store directory and the HTTP client.
    pub fn new(cfg: FetchConfig) -> Result<Self, PackageError> {
        std::fs::create_dir_all(&cfg.dir)
            .map_err(|e| PackageError::io(format!("create {}", cfg.dir.display()), e))?;
        let (rules, deny_private, max) = (
            cfg.allowed_urls.clone(),
            cfg.deny_private_addresses,
            cfg.max_redirects,
        );
        // Every hop is checked like the first URL: an allowed host must not be able to send
        // the agent to a metadata service or an internal address.
        let policy = reqwest::redirect::Policy::custom(move |attempt| {
            if attempt.previous().len() > max {
                return attempt.error(format!("too many redirects (more than {max})"));
            }
            let from = attempt.previous().last().cloned();
            let checked = match &from {
                Some(from) => url_policy::check_redirect(from, attempt.url(), &rules, deny_private),
                None => url_policy::check_url(attempt.url(), &rules, deny_private),
            };
            match checked {
                Ok(()) => attempt.follow(),
                Err(refusal) => attempt.error(refusal),
            }
        });
        let mut builder = reqwest::Client::builder()
            .connect_timeout(cfg.connect_timeout)
            .read_timeout(cfg.read_timeout)
            .redirect(policy);
        if cfg.deny_private_addresses {
            // Through a proxy the proxy resolves the package host, out of the resolver's
            // sight, so the check could not hold: connect directly.
            builder = builder
                .dns_resolver(url_policy::PublicOnlyResolver)
                .no_proxy();
        }
        let client = builder.build().map_err(|e| PackageError::Io {
            context: "building the HTTP client".into(),
            source: std::io::Error::other(e),
        })?;
        Ok(PackageStore { cfg, client })
    }

    /// The store's configuration.
    pub fn config(&self) -> &FetchConfig {
        &self.cfg
    }

    /// Fetches `url` into the store and validates it. On any failure nothing is left behind.
    pub async fn fetch(&self, url: &str) -> Result<Package, PackageError> {
        let source = resolve_url(url, &self.cfg)?;
        let tmp = tempfile::Builder::new()
            .prefix(".fetch-")
            .suffix(".jar")
            .tempfile_in(&self.cfg.dir)
            .map_err(|e| {
                PackageError::io(format!("create a file in {}", self.cfg.dir.display()), e)
            })?;
        match &source {
            Source::File(path) => self.copy_file(path, url, tmp.path()).await?,
            Source::Http(u) => self.download(u, tmp.as_file()).await?,
        }
        let check = tmp.path().to_owned();
        let manifest = tokio::task::spawn_blocking(move || inspect(&check))
            .await
            .map_err(|e| PackageError::Io {
                context: "inspecting the package".into(),
                source: std::io::Error::other(e),
            })??;
        let final_name = format!(
            "{}-{}-{}.jar",
            sanitize_file_part(&manifest.key.name),
            sanitize_file_part(&manifest.key.version),
            chrono::Utc::now().format("%Y%m%d%H%M%S%3f")
        );
        let dest = self.cfg.dir.join(final_name);
        let dest = unique_path(dest);
        tmp.persist(&dest)
            .map_err(|e| PackageError::io(format!("store {}", dest.display()), e.error))?;
        Ok(Package {
            key: manifest.key,
            main_class: manifest.main_class,
            priority: manifest.priority,
            web_context_path: manifest.web_context_path,
            attributes: manifest.attributes,
            jar: dest,
            url: url.to_owned(),
        })
    }

    /// Deletes a stored package (uninstall, failed install). Missing files are fine.
    pub fn remove(&self, pkg: &Package) {
        if pkg.jar.starts_with(&self.cfg.dir)
            && let Err(e) = std::fs::remove_file(&pkg.jar)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(jar = %pkg.jar.display(), error = %e, "could not remove package");
        }
    }

    async fn copy_file(&self, src: &Path, url: &str, dest: &Path) -> Result<(), PackageError> {
        let meta = tokio::fs::metadata(src).await.map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => {
                PackageError::NotFound(format!("{} (No such file or directory)", src.display()))
            }
            _ => PackageError::io(format!("read {}", src.display()), e),
        })?;
        if !meta.is_file() {
            return Err(PackageError::NotFound(format!(
                "{} (not a regular file)",
                src.display()
            )));
        }
        if meta.len() > self.cfg.max_bytes {
            return Err(PackageError::TooLarge {
                url: url.into(),
                limit: self.cfg.max_bytes,
            });
        }
        tokio::fs::copy(src, dest).await.map_err(|e| {
            PackageError::io(format!("copy {} into the work directory", src.display()), e)
        })?;
        Ok(())
    }

    async fn download(&self, url: &str, file: &std::fs::File) -> Result<(), PackageError> {
        let classify = |e: reqwest::Error| {
            if let Some(refusal) = url_policy::find_refusal(&e) {
                return PackageError::Refused {
                    url: url.into(),
                    reason: refusal.to_string(),
                };
            }
            if e.is_timeout() {
                PackageError::Timeout {
                    url: url.into(),
                    reason: e.to_string(),
                }
            } else if e.is_redirect() {
                PackageError::Unreachable {
                    url: url.into(),
                    reason: format!("too many redirects: {e}"),
                }
            } else {
                PackageError::Unreachable {
                    url: url.into(),
                    reason: error_chain(&e),
                }
            }
        };
        let resp = self.client.get(url).send().await.map_err(classify)?;
        let status = resp.status();
        if status == reqwest::StatusCode::NOT_FOUND || status == reqwest::StatusCode::GONE {
            return Err(PackageError::NotFound(format!(
                "{url} (HTTP {})",
                status.as_u16()
            )));
        }
        if !status.is_success() {
            return Err(PackageError::HttpStatus {
                url: url.into(),
                status: status.as_u16(),
            });
        }
        if resp
            .content_length()
            .is_some_and(|n| n > self.cfg.max_bytes)
        {
            return Err(PackageError::TooLarge {
                url: url.into(),
                limit: self.cfg.max_bytes,
            });
        }
        let mut out = std::io::BufWriter::new(file);
        let mut total: u64 = 0;
        let mut body = resp.bytes_stream();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(classify)?;
            total += chunk.len() as u64;
            if total > self.cfg.max_bytes {
                return Err(PackageError::TooLarge {
                    url: url.into(),
                    limit: self.cfg.max_bytes,
                });
            }
            // Chunks are small (network reads); a blocking write of one is cheaper than a hop
            // to the blocking pool.
            out.write_all(&chunk)
                .map_err(|e| PackageError::io(format!("store {url}"), e))?;
        }
        out.flush()
            .map_err(|e| PackageError::io(format!("store {url}"), e))?;
        Ok(())
    }
}

/// An error and all its sources, `: `-separated (reqwest hides the useful part in sources).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

fn sanitize_file_part(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn unique_path(p: PathBuf) -> PathBuf {
    if !p.exists() {
        return p;
    }
    (1..)
        .map(|i| p.with_extension(format!("{i}.jar")))
        .find(|c| !c.exists())
        .expect("unbounded")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> FetchConfig {
        FetchConfig::new(PathBuf::from("/work"))
    }

    #[test]
    fn resolve_url_table() {
        let c = cfg();
        assert_eq!(
            resolve_url("file:///opt/a.jar", &c).unwrap(),
            Source::File("/opt/a.jar".into())
        );
        assert_eq!(
            resolve_url("file:/opt/a.jar", &c).unwrap(),
            Source::File("/opt/a.jar".into())
        );
        assert_eq!(
            resolve_url("http://h/b.jar", &c).unwrap(),
            Source::Http("http://h/b.jar".into())
        );
        assert!(matches!(
            resolve_url("/opt/a.jar", &c),
            Err(PackageError::NoProtocol(_))
        ));
        assert!(matches!(
            resolve_url("ftp://h/a.jar", &c),
            Err(PackageError::UnsupportedScheme { .. })
        ));
        let mut strict = cfg();
        strict.allowed_file_dirs = vec!["/opt/biz".into()];
        strict.allowed_urls = vec![UrlRule::parse("https://repo.example/").unwrap()];
        assert!(resolve_url("file:///opt/biz/a.jar", &strict).is_ok());
        assert!(matches!(
            resolve_url("file:///opt/biz/../../etc/passwd", &strict),
            Err(PackageError::NotAllowed(_))
        ));
        assert!(matches!(
            resolve_url("http://169.254.169.254/latest", &strict),
            Err(PackageError::NotAllowed(_))
        ));
        assert!(resolve_url("https://repo.example/a.jar", &strict).is_ok());
    }

    #[test]
    fn manifest_parsing() {
        let text = "Manifest-Version: 1.0\r\nArk-Biz-Name: biz-a\r\nArk-Biz-Version: 1.0.0\r\nStart-Class: com.example.VeryLongMainClassNameThatWrapsAcrossTheSeventyTwoByteLi\r\n mit.Main\r\npriority: 50\r\n\r\nName: other\r\nArk-Biz-Name: ignored\r\n";
        let m = manifest_from_attributes("x.jar", parse_manifest(text)).unwrap();
        assert_eq!(m.key, BizKey::new("biz-a", "1.0.0"));
        assert_eq!(
            m.main_class,
            "com.example.VeryLongMainClassNameThatWrapsAcrossTheSeventyTwoByteLimit.Main"
        );
        assert_eq!(m.priority, 50);
    }

    #[test]
    fn manifest_rules_table() {
        type Want = Result<(&'static str, i32), &'static str>;
        let cases: [(&str, Want); 5] = [
            (
                "Ark-Biz-Name: a\nArk-Biz-Version: 1\nMain-Class: M\n",
                Ok(("M", 100)),
            ),
            (
                "Ark-Biz-Name: a\nArk-Biz-Version: 1\nMain-Class: M\nStart-Class: S\npriority: x\n",
                Ok(("S", 100)),
            ),
            ("Ark-Biz-Version: 1\nMain-Class: M\n", Err("Ark-Biz-Name")),
            ("Ark-Biz-Name: a\nMain-Class: M\n", Err("Ark-Biz-Version")),
            ("Ark-Biz-Name: a\nArk-Biz-Version: 1\n", Err("Main Class")),
        ];
        for (text, want) in cases {
            let got = manifest_from_attributes("x", parse_manifest(text));
            match (got, want) {
                (Ok(m), Ok((main, prio))) => {
                    assert_eq!((m.main_class.as_str(), m.priority), (main, prio), "{text}")
                }
                (Err(e), Err(frag)) => assert!(e.to_string().contains(frag), "{text}: {e}"),
                (got, want) => panic!("{text}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn entry_safety_table() {
        for (name, ok) in [
            ("lib/a.jar", true),
            ("META-INF/MANIFEST.MF", true),
            ("a/../b", false),
            ("../evil", false),
            ("/etc/passwd", false),
            ("C:/x", false),
            ("a\\..\\b", false),
            ("dir..name/ok", true),
        ] {
            assert_eq!(is_safe_entry(name), ok, "{name}");
        }
    }
}
