//! Command-line and environment configuration of the agent.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};

use crate::engine::activation::ActivationPolicy;

/// Which runtime backend runs modules.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum BackendKind {
    /// Each module as its own JVM started by the agent.
    Process,
    /// Modules inside the base JVM, driven through SOFAArk's telnet command port.
    ArkTelnet,
    /// Modules inside the base JVM, through a Java Arklet embedded in it on another port.
    Arklet,
}

/// Version activation policy on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Activation {
    /// The first version of a name serves; later ones wait for `switchBiz` (sofa-ark default).
    FirstWins,
    /// A newly installed version takes over (`activate.new.module=true`).
    NewTakesOver,
    /// Every version serves (`sofa.ark.activate.multi.biz.version.enable=true`).
    AllActive,
}

impl From<Activation> for ActivationPolicy {
    fn from(a: Activation) -> Self {
        match a {
            Activation::FirstWins => ActivationPolicy::FirstWins,
            Activation::NewTakesOver => ActivationPolicy::NewTakesOver,
            Activation::AllActive => ActivationPolicy::AllActive,
        }
    }
}

/// The Koupleless agent: an Arklet-compatible sidecar that runs Ark biz modules and reports the
/// base JVM's health.
#[derive(Clone, Debug, Parser)]
#[command(name = "koupleless-agent", version, about)]
pub struct Config {
    /// Arklet HTTP port (upstream property `koupleless.arklet.http.port` is accepted as an
    /// alias flag and as an environment variable of that name).
    #[arg(
        long,
        env = "KOUPLELESS_ARKLET_HTTP_PORT",
        alias = "koupleless.arklet.http.port",
        default_value_t = 1238
    )]
    pub port: u16,
    /// Address to bind the HTTP API to.
    #[arg(long, env = "KOUPLELESS_AGENT_BIND", default_value = "0.0.0.0")]
    pub bind: IpAddr,
    /// Bearer token required on commands (off by default: upstream clients send none).
    #[arg(long, env = "KOUPLELESS_AGENT_TOKEN", hide_env_values = true)]
    pub api_token: Option<String>,
    /// Work directory: fetched packages, unpacked modules, logs and the state file.
    #[arg(
        long,
        env = "KOUPLELESS_AGENT_WORK_DIR",
        default_value = "/tmp/koupleless-agent"
    )]
    pub work_dir: PathBuf,
    /// Base identity (topic segment, Node name part). Default: `POD_IP`, else the first
    /// non-loopback IPv4 address, as the Java base does.
    #[arg(long, env = "KOUPLELESS_BASE_IDENTITY")]
    pub base_identity: Option<String>,
    /// Address the controller reaches this agent's HTTP API at (`localIP` in heartbeats; the
    /// HTTP tunnel's controller calls it). Default: `POD_IP`, else the first non-loopback IPv4
    /// address, as the Java base does. Set it when the agent listens elsewhere (e.g.
    /// `127.0.0.1` beside a local controller).
    #[arg(long, env = "POD_IP")]
    pub local_ip: Option<String>,
    /// The base's own log file (its stdout as a file, e.g. the container log), served by
    /// `GET /logs/{name}/{version}` for modules that run inside the base JVM (ark-telnet and
    /// arklet backends), where modules share the base's output.
    #[arg(long, env = "KOUPLELESS_BASE_LOG_FILE")]
    pub base_log_file: Option<PathBuf>,
    /// Base name (`baseMetadata.name`, `masterBizInfo.bizName`).
    #[arg(long, env = "KOUPLELESS_BASE_NAME", default_value = "base")]
    pub base_name: String,
    /// Base version.
    #[arg(long, env = "KOUPLELESS_BASE_VERSION", default_value = "1.0.0")]
    pub base_version: String,
    /// Cluster name reported in heartbeats.
    #[arg(long, env = "KOUPLELESS_BASE_CLUSTER_NAME", default_value = "default")]
    pub cluster_name: String,
    /// Runtime backend.
    #[arg(long, env = "KOUPLELESS_AGENT_BACKEND", value_enum, default_value_t = BackendKind::Process)]
    pub backend: BackendKind,
    /// Version activation policy.
    #[arg(long, env = "KOUPLELESS_AGENT_ACTIVATION", value_enum, default_value_t = Activation::FirstWins)]
    pub activation: Activation,
    /// Keep modules whose start failed registered as `broken` instead of removing them.
    #[arg(long, env = "KOUPLELESS_AGENT_KEEP_FAILED")]
    pub keep_failed: bool,
    /// Only fetch `http(s)` packages under one of these URLs (repeatable, comma-separated in
    /// the environment). Compared as parsed URLs, not strings: same scheme; same host, or
    /// any subdomain for `*.domain`; same port (explicit or the scheme's default); and a path
    /// under the given one at a `/` boundary (`https://repo.example/releases` admits
    /// `/releases/x.jar`, not `/releases-evil/x.jar`). URLs with user information
    /// (`user@host`) are refused. Every redirect hop must match too, and a redirect from https
    /// to http is always refused. Without this flag any http(s) URL is accepted (logged at
    /// start).
    #[arg(
        long = "allow-url-prefix",
        env = "KOUPLELESS_AGENT_ALLOW_URL_PREFIXES",
        value_delimiter = ','
    )]
    pub allow_url_prefixes: Vec<String>,
    /// Refuse packages from loopback, link-local (e.g. 169.254.169.254), private (RFC 1918,
    /// IPv6 unique local) and other non-public addresses, for agents that fetch from the
    /// internet. Host names are checked on the addresses DNS returns, which are the ones
    /// connected to; redirect hops are checked too. System HTTP proxies are not used then.
    #[arg(long, env = "KOUPLELESS_AGENT_DENY_PRIVATE_ADDRESSES")]
    pub deny_private_addresses: bool,
    /// Accept `envs` entries that make the JVM load code on its own (`JAVA_TOOL_OPTIONS`,
    /// `JDK_JAVA_OPTIONS`, `_JAVA_OPTIONS`, `LD_*`) in install requests. Without this flag
    /// such a request is refused: those variables can load agents or libraries that no
    /// allow-list saw.
    #[arg(long, env = "KOUPLELESS_AGENT_ALLOW_JVM_OPTION_ENVS")]
    pub allow_jvm_option_envs: bool,
    /// Only accept `file://` packages under these directories (repeatable).
    #[arg(
        long = "allow-file-dir",
        env = "KOUPLELESS_AGENT_ALLOW_FILE_DIRS",
        value_delimiter = ','
    )]
    pub allow_file_dirs: Vec<PathBuf>,
    /// Largest package accepted, in bytes.
    #[arg(long, env = "KOUPLELESS_AGENT_MAX_PACKAGE_BYTES", default_value_t = 1 << 30)]
    pub max_package_bytes: u64,
    /// Connect timeout for package downloads.
    #[arg(long, env = "KOUPLELESS_AGENT_FETCH_CONNECT_TIMEOUT", value_parser = humantime::parse_duration, default_value = "10s")]
    pub fetch_connect_timeout: Duration,
    /// Read timeout (between two reads) for package downloads.
    #[arg(long, env = "KOUPLELESS_AGENT_FETCH_READ_TIMEOUT", value_parser = humantime::parse_duration, default_value = "60s")]
    pub fetch_read_timeout: Duration,
    /// Most async operation records kept for `queryBizOps`.
    #[arg(long, env = "KOUPLELESS_AGENT_OPS_MAX_RECORDS", default_value_t = 1000)]
    pub ops_max_records: usize,
    /// How long finished async operation records are kept.
    #[arg(long, env = "KOUPLELESS_AGENT_OPS_MAX_AGE", value_parser = humantime::parse_duration, default_value = "1h")]
    pub ops_max_age: Duration,
    /// `java` used to run modules (default: `$JAVA_HOME/bin/java`, else `java` on PATH).
    #[arg(long, env = "KOUPLELESS_AGENT_JAVA")]
    pub java: Option<PathBuf>,
    /// Extra JVM options for module processes (repeatable).
    #[arg(
        long = "module-jvm-arg",
        env = "KOUPLELESS_AGENT_MODULE_JVM_ARGS",
        value_delimiter = ' ',
        allow_hyphen_values = true
    )]
    pub module_jvm_args: Vec<String>,
    /// How long a module may take to become ready.
    #[arg(long, env = "KOUPLELESS_AGENT_START_TIMEOUT", value_parser = humantime::parse_duration, default_value = "120s")]
    pub start_timeout: Duration,
    /// Grace period between SIGTERM and SIGKILL when stopping a module.
    #[arg(long, env = "KOUPLELESS_AGENT_STOP_GRACE", value_parser = humantime::parse_duration, default_value = "10s")]
    pub stop_grace: Duration,
    /// Pid of the base JVM whose health is reported (default: discover it).
    #[arg(long, env = "KOUPLELESS_BASE_PID")]
    pub base_pid: Option<u32>,
    /// Pattern that picks the base JVM by main class or command line when several run.
    #[arg(long, env = "KOUPLELESS_BASE_MAIN_CLASS")]
    pub base_main_class: Option<String>,
    /// Do not use the HotSpot attach API (live metaspace and `MaxMetaspaceSize`); read
    /// hsperfdata only. Without attach, metaspace is known only after the base's first GC.
    #[arg(long, env = "KOUPLELESS_AGENT_NO_ATTACH")]
    pub no_attach: bool,
    /// `/readyz` also requires every installed module to be activated (upstream
    /// `withAllBizReadiness`).
    #[arg(long, env = "KOUPLELESS_AGENT_READY_WITH_ALL_BIZ")]
    pub ready_with_all_biz: bool,
    /// `/readyz` requires the base JVM to be found, alive and making progress.
    #[arg(long, env = "KOUPLELESS_AGENT_READY_REQUIRES_JVM")]
    pub ready_requires_jvm: bool,
    /// How long the base JVM may stay down (exited, killed, hung) while the agent runs before
    /// the base counts as gone and is reported `deactivated` (its Node deleted). Until then it
    /// is reported `broken`: unhealthy, Node NotReady, modules kept for when it is back.
    #[arg(long, env = "KOUPLELESS_AGENT_JVM_DOWN_GRACE", value_parser = humantime::parse_duration, default_value = "120s")]
    pub jvm_down_grace: Duration,
    /// Log as JSON lines.
    #[arg(long, env = "KOUPLELESS_AGENT_LOG_JSON")]
    pub log_json: bool,
    /// Where the base JVM sees the agent's package directory (`<work-dir>/packages`), when a
    /// shared volume is mounted at another path there (ark-telnet and arklet backends).
    #[arg(long, env = "KOUPLELESS_AGENT_PACKAGE_DIR_IN_BASE")]
    pub package_dir_in_base: Option<PathBuf>,
    /// The ark-telnet backend.
    #[command(flatten)]
    pub ark_telnet: crate::backend::ark_telnet::ArkTelnetArgs,
    /// The arklet backend.
    #[command(flatten)]
    pub arklet: crate::backend::arklet::ArkletArgs,
    /// Controller tunnels (MQTT, HTTP heartbeat).
    #[command(flatten)]
    pub tunnel: crate::tunnel::TunnelArgs,
}

impl Config {
    /// Parses flags and environment, honouring the upstream `koupleless.arklet.http.port`
    /// environment variable when no port was given otherwise.
    pub fn load() -> Config {
        let mut cfg = Config::parse();
        let port_given = std::env::args()
            .any(|a| a.starts_with("--port") || a.starts_with("--koupleless.arklet.http.port"))
            || std::env::var_os("KOUPLELESS_ARKLET_HTTP_PORT").is_some();
        if !port_given
            && let Some(p) = std::env::var("koupleless.arklet.http.port")
                .ok()
                .and_then(|v| v.parse().ok())
        {
            cfg.port = p;
        }
        cfg
    }

    /// The HTTP listen address.
    pub fn listen(&self) -> SocketAddr {
        SocketAddr::new(self.bind, self.port)
    }

    /// The base identity: flag, else `POD_IP`, else a local IPv4 address, else the host name.
    pub fn identity(&self) -> String {
        if let Some(id) = &self.base_identity {
            return id.clone();
        }
        if let Ok(ip) = std::env::var("POD_IP")
            && !ip.is_empty()
        {
            return ip;
        }
        local_ipv4()
            .map(|ip| ip.to_string())
            .unwrap_or_else(|| hostname().unwrap_or_else(|| "localhost".into()))
    }
}

/// The first non-loopback IPv4 address of the *last* interface that has one, as the Java
/// `BaseMetadataHookImpl` picks it.
pub fn local_ipv4() -> Option<std::net::Ipv4Addr> {
    let addrs = nix::ifaddrs::getifaddrs().ok()?;
    addrs
        .filter_map(|a| a.address.and_then(|s| s.as_sockaddr_in().map(|v4| v4.ip())))
        .filter(|ip| !ip.is_loopback())
        .last()
}

/// The host name (`localHostName` in heartbeats).
pub fn hostname() -> Option<String> {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
}
