//! A test peer for SOFAArk's built-in telnet command port, modelled on the research note
//! `spec/ark-telnet.md` (section numbers below refer to it) and not on any client: the bytes
//! it writes are the transcripts of §5, its timing is the asynchronous behaviour of §2.5–§2.7,
//! and it reproduces the traps of §1.7 and §1.8.
//!
//! What is modelled:
//!
//! * **Wire** (§1.5, §1.6): greeting `sofa-ark>`; lines end at `\n` or `\r\n` (a bare `\r`
//!   ends nothing); a line over 8192 bytes is dropped with no reply; `quit`/`q`/`exit` close
//!   without a reply; blank lines answer `\r\n`; replies are padded by the §1.5 rules and end
//!   with the prompt; pipelined lines get replies in order.
//! * **Commands**: the `biz` grammar of §2.1 (invalid lines get both help texts, §5.3),
//!   `biz -h/-a/-m/-s/-d/-i/-u/-o`, and `plugin -h/-a/-m/-s/-d` (§3.1). `-m/-s/-d` arguments
//!   are Java regexes: the peer implements literals, `.`, `*`, `+`, `?`, `\Q…\E` and escaped
//!   characters; an invalid one (e.g. `*`) gets no reply (§1.7). Other regex constructs are
//!   not modelled: the peer then answers nothing and logs `peer: regex … not modelled`.
//! * **Install** (§2.5): the gate refusal while any biz is `resolved`/`broken`; otherwise the
//!   acknowledgement, then asynchronously, after [`PeerConfig::copy_delay`], the URL is read:
//!   only `file:` URLs are modelled (`file:///p`, `file:/p`; `file://host/p` fails with
//!   `UnknownHostException`); `http(s)` URLs are logged as not modelled. The jar must carry
//!   the Ark mark entry and `Ark-Biz-Name`/`Ark-Biz-Version`/main class in its manifest. A
//!   duplicate identity is dropped without a log line (§2.5.2 step 5). The biz is registered
//!   `resolved` for [`PeerConfig::start_delay`], then `activated`/`deactivated` by
//!   [`PeerActivation`], or, for names in [`PeerConfig::fail_start`], `broken` for
//!   [`PeerConfig::broken_for`] and then removed (unless
//!   [`PeerConfig::auto_uninstall_when_failed`] is off). `biz -i name:version` is accepted and
//!   never works (§2.5.2 step 2).
//! * **Uninstall** (§2.6): acknowledged without checks; a `resolved` biz is left alone, an
//!   `activated` one is `deactivated` during [`PeerConfig::stop_delay`], then removed; the
//!   master biz is refused silently; names in [`PeerConfig::fail_stop`] end `broken`.
//! * **Switch** (§2.7): after [`PeerConfig::switch_delay`], the target becomes `activated` and
//!   the active version of its name `deactivated`.
//! * **Traps**: start-up windows A (every connection, now and later, closed without a
//!   greeting) and B (every command answers `\r\n`) via [`Phase`] (§1.7, §5.9); security mode
//!   refusing `-i`/`-u` and, for a peer that is not `localhost`, silence (§1.8, §5.8); a full
//!   `telnet-command` pool gives no reply to `-i/-u/-o` ([`PeerConfig::async_pool_max`], §1.3,
//!   §1.7); [`ArkTelnetPeer::restart`] models a base JVM restart.
//!
//! What happens in the base is recorded in [`ArkTelnetPeer::log`] (the Ark log lines the spec
//! quotes), every received line in [`ArkTelnetPeer::lines`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

/// The prompt (§1.5).
pub const PROMPT: &str = "sofa-ark>";
/// Netty's frame limit (§1.5).
pub const MAX_LINE: usize = 8192;
/// The master biz's main class in embed mode (§1.4).
pub const EMBED_MAIN: &str = "embed main";

const PLUGIN_HELP: &str = "Plugin Command Tips:\n  USAGE: plugin [option...] [pluginName...]\n  SAMPLE: plugin -m plugin-A plugin-B\n  -h  Shows the help message.\n  -a  Shows all plugin name.\n  -m  Shows the meta info of specified pluginName.\n  -s  Shows the service info of specified pluginName.\n  -d  Shows the detail info of specified pluginName.\n";
const BIZ_HELP: &str = "Biz Command Tips:\n  USAGE: biz [option...] [arguments...]\n  SAMPLE: biz -m bizIdentityA bizIdentityB.\n  -h  Shows the help message.\n  -a  Shows all biz.\n  -m  Shows the meta info of specified bizIdentity.\n  -s  Shows the service info of specified bizIdentity.\n  -d  Shows the detail info of specified bizIdentity.\n  -i  Install biz of specified bizIdentity or bizUrl.\n  -u  Uninstall biz of specified bizIdentity.\n  -o  Switch biz of specified bizIdentity.\n";
const GATE: &str = "Exists some biz whose state is neither 'activated' nor 'deactivated'.";
const MARK: &str = "com/alipay/sofa/ark/biz/mark";

/// Where the base is in its start-up (§1.7).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// The port is bound but the service container is not set: a connection now breaks the
    /// server for the life of the JVM.
    WindowA,
    /// Greeting works, but no command provider is registered: every command answers `\r\n`.
    WindowB,
    /// Fully started.
    Ready,
}

/// How a started version relates to an active version of the same name (§2.5.2 step 7).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PeerActivation {
    /// Default: the new version ends `deactivated`.
    #[default]
    FirstWins,
    /// `activate.new.module=true`: the new one is activated, the old one deactivated.
    NewTakesOver,
    /// `sofa.ark.activate.multi.biz.version.enable=true`: both activated.
    AllActive,
}

/// A biz state as `biz -a` prints it (§2.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerState {
    /// Registered, starting.
    Resolved,
    /// Started, serving.
    Activated,
    /// Started, standby (or being stopped).
    Deactivated,
    /// Start or stop failed.
    Broken,
}

impl PeerState {
    /// The lower-case text `biz -a` prints.
    pub fn as_str(self) -> &'static str {
        match self {
            PeerState::Resolved => "resolved",
            PeerState::Activated => "activated",
            PeerState::Deactivated => "deactivated",
            PeerState::Broken => "broken",
        }
    }
}

/// A module deployed with the base itself (static merge deployment), present from start-up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StaticBiz {
    /// Name.
    pub name: String,
    /// Version.
    pub version: String,
    /// Main class.
    pub main_class: String,
    /// State.
    pub state: PeerState,
}

/// The knobs. Defaults model a stock, quick base.
#[derive(Clone, Debug)]
pub struct PeerConfig {
    /// The master biz name (`spring.application.name`, §1.4). Default `base`.
    pub base_name: String,
    /// Plugin names for `plugin -a`. Default: `koupleless-base-plugin`.
    pub plugins: Vec<String>,
    /// Modules present at start-up and after every restart.
    pub static_bizzes: Vec<StaticBiz>,
    /// Start-up phase at start. Default [`Phase::Ready`].
    pub phase: Phase,
    /// `sofa.ark.telnet.security.enable=true`.
    pub security: bool,
    /// Whether the client's address reverse-resolves to `localhost` (matters in security
    /// mode only). Default true.
    pub client_is_localhost: bool,
    /// Async commands allowed in flight before the pool rejects (no reply). Default 100.
    pub async_pool_max: usize,
    /// Time from the install acknowledgement to registration (download, copy, unzip).
    pub copy_delay: Duration,
    /// Time a registered module stays `resolved` (its start).
    pub start_delay: Duration,
    /// Time a stopping module stays listed (`deactivated` if it was active).
    pub stop_delay: Duration,
    /// Time a failed module stays `broken` before auto-uninstall removes it.
    pub broken_for: Duration,
    /// Time before a switch takes effect.
    pub switch_delay: Duration,
    /// Biz names whose start throws.
    pub fail_start: Vec<String>,
    /// Biz names whose stop throws.
    pub fail_stop: Vec<String>,
    /// `sofa.ark.auto.uninstall.when.failed.enable` (default true).
    pub auto_uninstall_when_failed: bool,
    /// `sofa.ark.remove.biz.instance.when.stop.failed.enable` (default true).
    pub remove_when_stop_failed: bool,
    /// Version activation policy.
    pub activation: PeerActivation,
}

impl Default for PeerConfig {
    fn default() -> Self {
        PeerConfig {
            base_name: "base".into(),
            plugins: vec!["koupleless-base-plugin".into()],
            static_bizzes: Vec::new(),
            phase: Phase::Ready,
            security: false,
            client_is_localhost: true,
            async_pool_max: 100,
            copy_delay: Duration::from_millis(20),
            start_delay: Duration::from_millis(100),
            stop_delay: Duration::from_millis(50),
            broken_for: Duration::from_millis(100),
            switch_delay: Duration::from_millis(10),
            fail_start: Vec::new(),
            fail_stop: Vec::new(),
            auto_uninstall_when_failed: true,
            remove_when_stop_failed: true,
            activation: PeerActivation::FirstWins,
        }
    }
}

#[derive(Clone, Debug)]
struct Biz {
    name: String,
    version: String,
    state: PeerState,
    main_class: String,
    priority: i32,
    web_context_path: String,
    class_path: String,
    loader: u32,
}

impl Biz {
    fn id(&self) -> String {
        format!("{}:{}", self.name, self.version)
    }
}

#[derive(Debug)]
struct World {
    cfg: PeerConfig,
    phase: Phase,
    bricked: bool,
    /// Newest first; listed by ascending priority, ties in this order (§2.3: order is not
    /// meaningful; the harness showed the newest first and the base last).
    bizzes: Vec<Biz>,
    log: Vec<String>,
    lines: Vec<String>,
    /// Received lines (prefixed `> `) and log lines, in the order they happened.
    journal: Vec<String>,
    connections: usize,
    in_flight: usize,
    epoch: u64,
    next_loader: u32,
}

impl World {
    fn reset(&mut self) {
        let base = Biz {
            name: self.cfg.base_name.clone(),
            version: "1.0.0".into(),
            state: PeerState::Activated,
            main_class: EMBED_MAIN.into(),
            priority: 100,
            web_context_path: "/".into(),
            class_path: "/opt/base/BOOT-INF/classes/".into(),
            loader: 0x1b2c3d4e,
        };
        self.bizzes = vec![base];
        for s in self.cfg.static_bizzes.clone() {
            let loader = self.loader();
            self.bizzes.insert(
                0,
                Biz {
                    name: s.name,
                    version: s.version,
                    state: s.state,
                    main_class: s.main_class,
                    priority: 100,
                    web_context_path: "/".into(),
                    class_path: "\\".into(),
                    loader,
                },
            );
        }
        self.in_flight = 0;
    }

    fn note(&mut self, line: impl Into<String>) {
        let line = line.into();
        self.journal.push(line.clone());
        self.log.push(line);
    }

    fn loader(&mut self) -> u32 {
        self.next_loader = self
            .next_loader
            .wrapping_mul(1_103_515_245)
            .wrapping_add(12_345);
        self.next_loader
    }

    fn find(&self, id: &str) -> Option<&Biz> {
        self.bizzes.iter().find(|b| b.id() == id)
    }

    fn find_mut(&mut self, id: &str) -> Option<&mut Biz> {
        self.bizzes.iter_mut().find(|b| b.id() == id)
    }

    fn listed(&self) -> Vec<&Biz> {
        let mut v: Vec<&Biz> = self.bizzes.iter().collect();
        v.sort_by_key(|b| b.priority);
        v
    }
}

struct Shared {
    world: Mutex<World>,
    /// Bumped by a restart: connections close, async work of the old JVM stops.
    epoch: watch::Sender<u64>,
    tasks: Mutex<JoinSet<()>>,
}

impl Shared {
    fn world(&self) -> MutexGuard<'_, World> {
        self.world.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn spawn(self: &Arc<Self>, fut: impl Future<Output = ()> + Send + 'static) {
        let mut tasks = self.tasks.lock().unwrap_or_else(PoisonError::into_inner);
        while tasks.try_join_next().is_some() {}
        tasks.spawn(fut);
    }

    fn log(&self, line: impl Into<String>) {
        self.world().note(line);
    }
}

/// A running peer. Drop it or call [`ArkTelnetPeer::shutdown`] to stop it.
pub struct ArkTelnetPeer {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for ArkTelnetPeer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArkTelnetPeer")
            .field("addr", &self.addr)
            .finish()
    }
}

impl ArkTelnetPeer {
    /// Listens on `127.0.0.1:0` (the real port binds all interfaces, §1.3; a test needs only
    /// loopback).
    pub async fn start(cfg: PeerConfig) -> ArkTelnetPeer {
        let listener = TcpListener::bind(("127.0.0.1", 0))
            .await
            .expect("binding 127.0.0.1:0");
        let addr = listener.local_addr().expect("local address");
        let mut world = World {
            phase: cfg.phase,
            cfg,
            bricked: false,
            bizzes: Vec::new(),
            log: Vec::new(),
            lines: Vec::new(),
            journal: Vec::new(),
            connections: 0,
            in_flight: 0,
            epoch: 0,
            next_loader: 0x5eed,
        };
        world.reset();
        let shared = Arc::new(Shared {
            world: Mutex::new(world),
            epoch: watch::channel(0).0,
            tasks: Mutex::new(JoinSet::new()),
        });
        let accept = Arc::clone(&shared);
        shared.spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let conn = Arc::clone(&accept);
                accept.spawn(async move { serve(conn, stream).await });
            }
        });
        ArkTelnetPeer { addr, shared }
    }

    /// The address to connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Moves the base to another start-up phase.
    pub fn set_phase(&self, phase: Phase) {
        self.shared.world().phase = phase;
    }

    /// Whether a connection during window A has broken the server (until [`Self::restart`]).
    pub fn bricked(&self) -> bool {
        self.shared.world().bricked
    }

    /// Changes knobs at run time.
    pub fn update(&self, f: impl FnOnce(&mut PeerConfig)) {
        f(&mut self.shared.world().cfg);
    }

    /// `(name, version, state)` of every registered biz, the base included, as listed.
    pub fn bizzes(&self) -> Vec<(String, String, String)> {
        let w = self.shared.world();
        w.listed()
            .iter()
            .map(|b| {
                (
                    b.name.clone(),
                    b.version.clone(),
                    b.state.as_str().to_owned(),
                )
            })
            .collect()
    }

    /// The listed state of `name:version`.
    pub fn state_of(&self, name: &str, version: &str) -> Option<String> {
        self.shared
            .world()
            .find(&format!("{name}:{version}"))
            .map(|b| b.state.as_str().to_owned())
    }

    /// Registers a biz directly, as another management surface would.
    pub fn add_biz(&self, name: &str, version: &str, main_class: &str, state: PeerState) {
        let mut w = self.shared.world();
        let loader = w.loader();
        w.bizzes.insert(
            0,
            Biz {
                name: name.into(),
                version: version.into(),
                state,
                main_class: main_class.into(),
                priority: 100,
                web_context_path: "/".into(),
                class_path: "\\".into(),
                loader,
            },
        );
    }

    /// Removes a biz directly (another client uninstalled it).
    pub fn remove_biz(&self, name: &str, version: &str) {
        let id = format!("{name}:{version}");
        self.shared.world().bizzes.retain(|b| b.id() != id);
    }

    /// The Ark log lines written so far (§2.5–§2.7 quote them).
    pub fn log(&self) -> Vec<String> {
        self.shared.world().log.clone()
    }

    /// Every line received, without terminator, in order.
    pub fn lines(&self) -> Vec<String> {
        self.shared.world().lines.clone()
    }

    /// Received lines (prefixed `> `) and Ark log lines, interleaved in the order they
    /// happened: shows, e.g., that one operation ended before the next command arrived.
    pub fn journal(&self) -> Vec<String> {
        self.shared.world().journal.clone()
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.shared.world().connections
    }

    /// A base JVM restart: every connection closes, in-flight work is lost, only the base
    /// and the static modules are registered, the server is no longer broken, and start-up
    /// resumes at `phase`.
    pub fn restart(&self, phase: Phase) {
        let epoch = {
            let mut w = self.shared.world();
            w.epoch += 1;
            w.bricked = false;
            w.phase = phase;
            w.reset();
            w.epoch
        };
        self.shared.epoch.send_replace(epoch);
    }

    /// Stops listening, closes every connection and ends every task.
    pub async fn shutdown(self) {
        let mut tasks = std::mem::take(
            &mut *self
                .shared
                .tasks
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        tasks.abort_all();
        while tasks.join_next().await.is_some() {}
    }
}

impl Drop for ArkTelnetPeer {
    fn drop(&mut self) {
        self.shared
            .tasks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .abort_all();
    }
}

/// Serves one connection.
async fn serve(shared: Arc<Shared>, mut stream: TcpStream) {
    let mut epoch_rx = shared.epoch.subscribe();
    let epoch = *epoch_rx.borrow_and_update();
    let (silent, closed) = {
        let mut w = shared.world();
        w.connections += 1;
        if w.phase == Phase::WindowA {
            // NettyTelnetHandler's static initializer fails for good (§1.7).
            w.bricked = true;
        }
        (w.cfg.security && !w.cfg.client_is_localhost, w.bricked)
    };
    if closed {
        return;
    }
    if silent {
        // No handlers installed: open, silent, never closed (§1.8).
        let mut sink = [0u8; 1024];
        loop {
            tokio::select! {
                _ = epoch_rx.changed() => return,
                r = stream.read(&mut sink) => if matches!(r, Ok(0) | Err(_)) { return },
            }
        }
    }
    if stream.write_all(PROMPT.as_bytes()).await.is_err() {
        return;
    }
    let mut buf: Vec<u8> = Vec::new();
    let mut discarding = false;
    let mut chunk = [0u8; 4096];
    loop {
        let n = tokio::select! {
            _ = epoch_rx.changed() => return,
            r = stream.read(&mut chunk) => match r {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            },
        };
        buf.extend_from_slice(&chunk[..n]);
        let mut out = String::new();
        while let Some(pos) = buf.iter().position(|&b| b == b'\n') {
            let mut frame: Vec<u8> = buf.drain(..=pos).collect();
            frame.pop();
            if frame.last() == Some(&b'\r') {
                frame.pop();
            }
            if std::mem::take(&mut discarding) || frame.len() > MAX_LINE {
                // TooLongFrameException: logged, no reply, the next line works (§1.5).
                shared.log("Error occurs in netty telnet server. TooLongFrameException");
                continue;
            }
            let line = String::from_utf8_lossy(&frame).into_owned();
            if matches!(line.as_str(), "quit" | "q" | "exit") {
                let _ = stream.write_all(out.as_bytes()).await;
                return;
            }
            if let Some(reply) = handle(&shared, &line, epoch) {
                out.push_str(&render(&reply));
            }
        }
        if buf.len() > MAX_LINE {
            // Fail fast: drop what is buffered and everything up to the next line end.
            buf.clear();
            discarding = true;
        }
        if !out.is_empty() && stream.write_all(out.as_bytes()).await.is_err() {
            return;
        }
    }
}

/// `ArkCommandHandler.responseMessage` + prompt (§1.5).
pub fn render(r: &str) -> String {
    let r = r.replace('\n', "\r\n");
    let mut out = if r.trim().is_empty() {
        "\r\n".to_owned()
    } else if !r.ends_with("\r\n") {
        r + "\r\n\r\n"
    } else if !r.ends_with("\r\n\r\n") {
        r + "\r\n"
    } else {
        r
    };
    out.push_str(PROMPT);
    out
}

/// A line accepted by a provider's `validate` (§2.1, §3.1).
#[derive(Debug, PartialEq, Eq)]
struct Command {
    options: Vec<char>,
    args: Vec<String>,
}

/// The `BizCommand`/`PluginCommand` constructor: `None` means the line is not valid.
fn parse_command(line: &str, word: &str, allowed: &str) -> Option<Command> {
    let tokens: Vec<&str> = line.split_ascii_whitespace().collect();
    if tokens.first() != Some(&word) {
        return None;
    }
    let mut options = Vec::new();
    let mut i = 1;
    while i < tokens.len() && tokens[i].starts_with('-') {
        let letters = &tokens[i][1..];
        if letters.is_empty() {
            return None;
        }
        for c in letters.chars() {
            if !allowed.contains(c) {
                return None;
            }
            if !options.contains(&c) {
                options.push(c);
            }
        }
        i += 1;
    }
    if options.is_empty() {
        return None;
    }
    // Arguments go into a HashSet upstream: duplicates collapse.
    let mut args: Vec<String> = Vec::new();
    for t in &tokens[i..] {
        if !args.iter().any(|a| a == t) {
            args.push((*t).to_owned());
        }
    }
    let single = options.iter().find(|c| "haiuo".contains(**c));
    if let Some(s) = single {
        if options.len() != 1 {
            return None;
        }
        let ok = match s {
            'h' | 'a' => args.is_empty(),
            _ => args.len() == 1,
        };
        return ok.then_some(Command { options, args });
    }
    (!args.is_empty()).then_some(Command { options, args })
}

/// Processes one line; `None` means no reply at all.
fn handle(shared: &Arc<Shared>, line: &str, epoch: u64) -> Option<String> {
    let mut w = shared.world();
    w.lines.push(line.to_owned());
    w.journal.push(format!("> {line}"));
    if w.phase != Phase::Ready || line.trim().is_empty() {
        // Window B: no providers registered, so the joined help text is empty (§1.7).
        return Some(String::new());
    }
    if let Some(cmd) = parse_command(line, "plugin", "hamsd") {
        return plugin_command(&mut w, &cmd);
    }
    let Some(cmd) = parse_command(line, "biz", "hamsdiuo") else {
        return Some(format!("{PLUGIN_HELP}{BIZ_HELP}"));
    };
    let op = cmd.options[0];
    match op {
        'h' => Some(BIZ_HELP.to_owned()),
        'a' => {
            let listed = w.listed();
            let mut r: String = listed
                .iter()
                .map(|b| format!("{}:{}\n", b.id(), b.state.as_str()))
                .collect();
            r.push_str(&format!("biz count = {}\n", listed.len()));
            Some(r)
        }
        'i' | 'u' | 'o' => {
            let arg = cmd.args[0].clone();
            let word = match op {
                'i' => "install",
                'u' => "uninstall",
                _ => "switch",
            };
            if w.cfg.security && op != 'o' {
                return Some(format!("Cannot execute {word} command in security mode."));
            }
            if op == 'i'
                && w.bizzes
                    .iter()
                    .any(|b| matches!(b.state, PeerState::Resolved | PeerState::Broken))
            {
                return Some(GATE.to_owned());
            }
            if w.in_flight >= w.cfg.async_pool_max {
                // RejectedExecutionException escapes the handler: logged, no reply (§1.7).
                w.note("Error occurs in netty telnet server. RejectedExecutionException");
                return None;
            }
            w.in_flight += 1;
            drop(w);
            let task = Arc::clone(shared);
            shared.spawn(async move {
                match op {
                    'i' => install(&task, &arg, epoch).await,
                    'u' => uninstall(&task, &arg, epoch).await,
                    _ => switch(&task, &arg, epoch).await,
                }
                let mut w = task.world();
                if w.epoch == epoch {
                    w.in_flight -= 1;
                }
            });
            Some(format!(
                "Start to process {word} command now, pls wait and check."
            ))
        }
        _ => details(&mut w, &cmd),
    }
}

/// `biz -m/-s/-d` (§2.4).
fn details(w: &mut World, cmd: &Command) -> Option<String> {
    let mut r = String::new();
    let mut matched = false;
    for pattern in &cmd.args {
        let mut hits = Vec::new();
        for b in &w.bizzes {
            match regex_matches(pattern, &b.id()) {
                Ok(true) => hits.push(b.clone()),
                Ok(false) => {}
                Err(RegexError::Invalid) => {
                    w.note("Error occurs in netty telnet server. PatternSyntaxException");
                    return None;
                }
                Err(RegexError::Unsupported) => {
                    w.note(format!("peer: regex {pattern:?} not modelled"));
                    return None;
                }
            }
        }
        for b in hits {
            matched = true;
            if cmd.options.contains(&'m') {
                for (label, value) in [
                    ("BizName:", b.name.clone()),
                    ("Version:", b.version.clone()),
                    ("Priority:", b.priority.to_string()),
                    ("MainClass:", b.main_class.clone()),
                    ("WebContextPath:", b.web_context_path.clone()),
                    ("Deny Import Packages:", "\\".into()),
                    ("Deny Import Classes:", "\\".into()),
                    ("Deny Import Resources:", "\\".into()),
                ] {
                    r.push_str(&format!("{label:<26}{value}\n"));
                }
            }
            if cmd.options.contains(&'d') {
                let loader = if b.main_class == EMBED_MAIN {
                    format!(
                        "jdk.internal.loader.ClassLoaders$AppClassLoader@{:x}",
                        b.loader
                    )
                } else {
                    format!(
                        "com.alipay.sofa.ark.container.service.classloader.BizClassLoader@{:x}",
                        b.loader
                    )
                };
                r.push_str(&format!(
                    "{:<13}{loader}\n{:<13}{}\n",
                    "ClassLoader:", "ClassPath:", b.class_path
                ));
            }
            r.push('\n');
        }
    }
    if matched {
        Some(r)
    } else {
        Some("no matched biz candidates.".into())
    }
}

/// `plugin …` (§3.1). Plugin metadata is a stand-in: the spec fixes labels, not values.
fn plugin_command(w: &mut World, cmd: &Command) -> Option<String> {
    match cmd.options[0] {
        'h' => Some(PLUGIN_HELP.to_owned()),
        'a' => {
            let mut r = String::new();
            if w.cfg.plugins.is_empty() {
                r.push_str("no plugins.\n");
            }
            for p in &w.cfg.plugins {
                r.push_str(p);
                r.push('\n');
            }
            r.push_str(&format!("plugin count = {}\n", w.cfg.plugins.len()));
            Some(r)
        }
        _ => {
            let mut r = String::new();
            for pattern in &cmd.args {
                for p in &w.cfg.plugins {
                    match regex_matches(pattern, p) {
                        Ok(true) => {}
                        Ok(false) => continue,
                        Err(_) => return None,
                    }
                    if cmd.options.contains(&'m') {
                        for (label, value) in [
                            ("PluginName:", p.as_str()),
                            ("Version:", "1.0.0"),
                            ("Priority:", "100"),
                            ("Activator:", "\\"),
                            ("Export Packages:", "\\"),
                            ("Import Packages:", "\\"),
                            ("Export Classes:", "\\"),
                            ("Import Classes:", "\\"),
                            ("Export Resources:", "\\"),
                            ("Import Resources:", "\\"),
                        ] {
                            r.push_str(&format!("{label:<18}{value}\n"));
                        }
                    }
                    if cmd.options.contains(&'d') {
                        for (label, value) in [
                            ("GroupId:", "com.alipay.sofa.koupleless"),
                            ("ArtifactId:", p.as_str()),
                            ("Version:", "1.0.0"),
                            ("URL:", "\\"),
                            ("ClassLoader:", "\\"),
                            ("ClassPath:", "\\"),
                        ] {
                            r.push_str(&format!("{label:<13}{value}\n"));
                        }
                    }
                    r.push('\n');
                }
            }
            Some(if r.is_empty() {
                "no matched plugin candidates.".into()
            } else {
                r
            })
        }
    }
}

/// Sleeps; false if the JVM restarted meanwhile (the work is lost).
async fn same_jvm_after(shared: &Shared, d: Duration, epoch: u64) -> bool {
    tokio::time::sleep(d).await;
    shared.world().epoch == epoch
}

fn java_url_scheme(arg: &str) -> Option<&str> {
    let (scheme, _) = arg.split_once(':')?;
    ["file", "http", "https", "jar", "ftp"]
        .into_iter()
        .find(|s| s.eq_ignore_ascii_case(scheme))
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok());
        if let Some(v) = hex
            .filter(|_| bytes[i] == b'%')
            .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// What a jar's manifest says, as `BizFactoryServiceImpl.createBiz` reads it.
struct JarBiz {
    name: String,
    version: String,
    main_class: String,
    priority: i32,
    web_context_path: String,
}

fn read_jar(path: &PathBuf) -> Result<JarBiz, String> {
    let file = std::fs::File::open(path).map_err(|_| {
        format!(
            "java.io.FileNotFoundException: {} (No such file or directory)",
            path.display()
        )
    })?;
    let mut zip =
        zip::ZipArchive::new(file).map_err(|e| format!("java.util.zip.ZipException: {e}"))?;
    if zip.by_name(MARK).is_err() {
        return Err("java.lang.IllegalArgumentException: Archive must be a ark biz!".into());
    }
    let mut text = String::new();
    {
        use std::io::Read;
        let mut entry = zip
            .by_name("META-INF/MANIFEST.MF")
            .map_err(|_| "java.lang.RuntimeException: no manifest".to_owned())?;
        entry.read_to_string(&mut text).map_err(|e| e.to_string())?;
    }
    let mut attrs: Vec<(String, String)> = Vec::new();
    for line in text.split('\n').map(|l| l.trim_end_matches('\r')) {
        if line.is_empty() {
            break;
        }
        if let Some(cont) = line.strip_prefix(' ') {
            if let Some(last) = attrs.last_mut() {
                last.1.push_str(cont);
            }
        } else if let Some((k, v)) = line.split_once(": ") {
            attrs.push((k.to_owned(), v.to_owned()));
        }
    }
    let get = |k: &str| {
        attrs
            .iter()
            .find(|(a, _)| a == k)
            .map(|(_, v)| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    };
    let main_class = get("Start-Class")
        .or_else(|| get("Main-Class"))
        .ok_or("java.lang.IllegalArgumentException: Biz Main Class must not be empty!")?;
    Ok(JarBiz {
        name: get("Ark-Biz-Name").unwrap_or_else(|| "null".into()),
        version: get("Ark-Biz-Version").unwrap_or_else(|| "null".into()),
        main_class,
        priority: get("priority").and_then(|p| p.parse().ok()).unwrap_or(100),
        web_context_path: get("web-context-path").unwrap_or_else(|| "/".into()),
    })
}

/// The asynchronous part of `biz -i` (§2.5.2).
async fn install(shared: &Arc<Shared>, arg: &str, epoch: u64) {
    let copy_delay = shared.world().cfg.copy_delay;
    if !same_jvm_after(shared, copy_delay, epoch).await {
        return;
    }
    let fail = |why: String| {
        shared.log(format!("Fail to process telnet install command: {arg}"));
        shared.log(why);
    };
    let Some(scheme) = java_url_scheme(arg) else {
        if arg.split(':').count() == 2 {
            fail("java.lang.IllegalArgumentException: bizFile must not be null!".into());
        } else {
            shared.log(format!("Invalid telnet biz install command {arg}"));
        }
        return;
    };
    if !scheme.eq_ignore_ascii_case("file") {
        shared.log(format!(
            "peer: {scheme} URLs are not modelled; nothing installed"
        ));
        return;
    }
    let rest = &arg[scheme.len() + 1..];
    let path = if let Some(after) = rest.strip_prefix("//") {
        let (host, p) = after.split_at(after.find('/').unwrap_or(after.len()));
        if !host.is_empty() && host != "localhost" {
            fail(format!("java.net.UnknownHostException: {host}"));
            return;
        }
        p.to_owned()
    } else {
        rest.to_owned()
    };
    let path = PathBuf::from(percent_decode(&path));
    let jar = match read_jar(&path) {
        Ok(j) => j,
        Err(e) => return fail(e),
    };
    let id = format!("{}:{}", jar.name, jar.version);
    let started = Instant::now();
    {
        let mut w = shared.world();
        if w.epoch != epoch {
            return;
        }
        if w.find(&id).is_some() {
            // REPEAT_BIZ is thrown away by the telnet task without a log line.
            return;
        }
        let loader = w.loader();
        w.bizzes.insert(
            0,
            Biz {
                name: jar.name.clone(),
                version: jar.version.clone(),
                state: PeerState::Resolved,
                main_class: jar.main_class,
                priority: jar.priority,
                web_context_path: jar.web_context_path,
                class_path: format!("{}-unpack/", path.display()),
                loader,
            },
        );
    }
    let start_delay = shared.world().cfg.start_delay;
    if !same_jvm_after(shared, start_delay, epoch).await {
        return;
    }
    let (fails, auto_uninstall, broken_for) = {
        let mut w = shared.world();
        if w.find(&id).is_none() {
            return;
        }
        let fails = w.cfg.fail_start.contains(&jar.name);
        if fails {
            if let Some(b) = w.find_mut(&id) {
                b.state = PeerState::Broken;
            }
            let cost = started.elapsed().as_millis();
            w.note(format!("Install Biz: {id} fail,cost: {cost} ms"));
            w.note(format!(
                "Start Biz: {id} failed, try to unInstall this biz."
            ));
        } else {
            let policy = w.cfg.activation;
            let other_active = w
                .bizzes
                .iter()
                .any(|b| b.name == jar.name && b.id() != id && b.state == PeerState::Activated);
            let state = match (other_active, policy) {
                (false, _) | (true, PeerActivation::AllActive) => PeerState::Activated,
                (true, PeerActivation::FirstWins) => PeerState::Deactivated,
                (true, PeerActivation::NewTakesOver) => {
                    for b in w
                        .bizzes
                        .iter_mut()
                        .filter(|b| b.name == jar.name && b.state == PeerState::Activated)
                    {
                        b.state = PeerState::Deactivated;
                    }
                    PeerState::Activated
                }
            };
            if let Some(b) = w.find_mut(&id) {
                b.state = state;
            }
            let cost = started.elapsed().as_millis();
            w.note(format!("Install Biz: {id} success, cost: {cost} ms"));
        }
        (fails, w.cfg.auto_uninstall_when_failed, w.cfg.broken_for)
    };
    if fails && auto_uninstall {
        if !same_jvm_after(shared, broken_for, epoch).await {
            return;
        }
        shared.world().bizzes.retain(|b| b.id() != id);
        shared.log(format!("Fail to process telnet install command: {arg}"));
    }
}

/// The asynchronous part of `biz -u` (§2.6).
async fn uninstall(shared: &Arc<Shared>, arg: &str, epoch: u64) {
    let parts: Vec<&str> = arg.split(':').collect();
    if parts.len() != 2 {
        shared.log(format!("Invalid telnet biz uninstall command {arg}"));
        return;
    }
    let stop_delay = {
        let mut w = shared.world();
        if parts[0] == w.cfg.base_name {
            // "Master biz must not be uninstalled." is returned, not logged.
            return;
        }
        let Some(b) = w.find_mut(arg) else {
            w.note(format!("Uninstall biz: {arg} not found."));
            return;
        };
        match b.state {
            PeerState::Resolved => {
                w.note(format!("Fail to process telnet uninstall command: {arg}"));
                w.note("BizState must be ACTIVATED, DEACTIVATED or BROKEN.");
                return;
            }
            PeerState::Activated => b.state = PeerState::Deactivated,
            _ => {}
        }
        w.cfg.stop_delay
    };
    if !same_jvm_after(shared, stop_delay, epoch).await {
        return;
    }
    let mut w = shared.world();
    let fails = w.cfg.fail_stop.iter().any(|n| n == parts[0]);
    if fails {
        if let Some(b) = w.find_mut(arg) {
            b.state = PeerState::Broken;
        }
        w.note(format!("Fail to process telnet uninstall command: {arg}"));
        if !w.cfg.remove_when_stop_failed {
            return;
        }
    }
    w.bizzes.retain(|b| b.id() != arg);
    if !fails {
        w.note(format!("Uninstall biz: {arg} success."));
    }
}

/// The asynchronous part of `biz -o` (§2.7).
async fn switch(shared: &Arc<Shared>, arg: &str, epoch: u64) {
    let delay = shared.world().cfg.switch_delay;
    if !same_jvm_after(shared, delay, epoch).await {
        return;
    }
    let mut w = shared.world();
    let Some((name, _)) = arg.split_once(':').filter(|_| arg.split(':').count() == 2) else {
        w.note(format!("Invalid telnet biz switch command {arg}"));
        return;
    };
    let Some(state) = w.find(arg).map(|b| b.state) else {
        w.note(format!("Switch biz: {arg} not found."));
        return;
    };
    if !matches!(state, PeerState::Activated | PeerState::Deactivated) {
        w.note(format!(
            "Switch Biz: {arg}'s state must not be {}.",
            state.as_str()
        ));
        return;
    }
    if state == PeerState::Deactivated {
        for b in w
            .bizzes
            .iter_mut()
            .filter(|b| b.name == name && b.state == PeerState::Activated)
        {
            b.state = PeerState::Deactivated;
        }
        if let Some(b) = w.find_mut(arg) {
            b.state = PeerState::Activated;
        }
    }
    w.note(format!("Switch biz: {arg} is activated."));
}

#[derive(Debug, PartialEq, Eq)]
enum RegexError {
    /// `PatternSyntaxException`.
    Invalid,
    /// Valid Java, but outside the subset this peer models.
    Unsupported,
}

#[derive(Clone, Debug)]
enum Atom {
    Char(char),
    Any,
}

#[derive(Clone, Debug)]
struct Piece {
    atom: Atom,
    min: usize,
    max: usize,
}

fn compile(pattern: &str) -> Result<Vec<Piece>, RegexError> {
    let chars: Vec<char> = pattern.chars().collect();
    let mut out: Vec<Piece> = Vec::new();
    let mut i = 0;
    let mut quantifiable = false;
    while i < chars.len() {
        let c = chars[i];
        i += 1;
        let atom = match c {
            '\\' => {
                let Some(&e) = chars.get(i) else {
                    return Err(RegexError::Invalid);
                };
                i += 1;
                if e == 'Q' {
                    while i < chars.len() && !(chars[i] == '\\' && chars.get(i + 1) == Some(&'E')) {
                        out.push(Piece {
                            atom: Atom::Char(chars[i]),
                            min: 1,
                            max: 1,
                        });
                        i += 1;
                    }
                    i = (i + 2).min(chars.len().max(i));
                    quantifiable = false;
                    continue;
                }
                if e.is_ascii_alphanumeric() {
                    return Err(RegexError::Unsupported);
                }
                Atom::Char(e)
            }
            '.' => Atom::Any,
            '*' | '+' | '?' => {
                if !quantifiable || matches!(chars.get(i), Some('?' | '+')) {
                    return Err(if quantifiable {
                        RegexError::Unsupported
                    } else {
                        RegexError::Invalid
                    });
                }
                let last = out.last_mut().ok_or(RegexError::Invalid)?;
                (last.min, last.max) = match c {
                    '*' => (0, usize::MAX),
                    '+' => (1, usize::MAX),
                    _ => (0, 1),
                };
                quantifiable = false;
                continue;
            }
            ')' => return Err(RegexError::Invalid),
            '[' | '(' | '{' | '|' | '^' | '$' | ']' | '}' => return Err(RegexError::Unsupported),
            other => Atom::Char(other),
        };
        out.push(Piece {
            atom,
            min: 1,
            max: 1,
        });
        quantifiable = true;
    }
    Ok(out)
}

fn match_here(pieces: &[Piece], text: &[char]) -> bool {
    let Some((p, rest)) = pieces.split_first() else {
        return text.is_empty();
    };
    let fits = |c: char| match p.atom {
        Atom::Char(x) => x == c,
        // `.` does not match line terminators.
        Atom::Any => c != '\n' && c != '\r',
    };
    let mut n = 0;
    while n < p.min {
        if n >= text.len() || !fits(text[n]) {
            return false;
        }
        n += 1;
    }
    let mut max_n = n;
    while max_n < p.max && max_n < text.len() && fits(text[max_n]) {
        max_n += 1;
    }
    (n..=max_n).rev().any(|k| match_here(rest, &text[k..]))
}

/// `Pattern.matches(pattern, text)` for the modelled subset.
fn regex_matches(pattern: &str, text: &str) -> Result<bool, RegexError> {
    let pieces = compile(pattern)?;
    let chars: Vec<char> = text.chars().collect();
    Ok(match_here(&pieces, &chars))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::RawZip;

    /// A raw socket client that returns exactly the bytes received.
    struct Raw {
        s: TcpStream,
    }

    impl Raw {
        async fn connect(addr: SocketAddr) -> Raw {
            Raw {
                s: TcpStream::connect(addr).await.unwrap(),
            }
        }

        async fn greeted(addr: SocketAddr) -> Raw {
            let mut r = Raw::connect(addr).await;
            assert_eq!(r.read_until_prompts(1).await, PROMPT);
            r
        }

        async fn send(&mut self, bytes: &str) {
            self.s.write_all(bytes.as_bytes()).await.unwrap();
        }

        /// Reads until `n` prompts have arrived (at the end of a read).
        async fn read_until_prompts(&mut self, n: usize) -> String {
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            tokio::time::timeout(Duration::from_secs(5), async {
                loop {
                    let k = self.s.read(&mut chunk).await.unwrap();
                    assert!(
                        k > 0,
                        "closed early after {:?}",
                        String::from_utf8_lossy(&buf)
                    );
                    buf.extend_from_slice(&chunk[..k]);
                    let text = String::from_utf8_lossy(&buf);
                    if text.ends_with(PROMPT) && text.matches(PROMPT).count() >= n {
                        return;
                    }
                }
            })
            .await
            .expect("reply in time");
            String::from_utf8(buf).unwrap()
        }

        async fn cmd(&mut self, line: &str) -> String {
            self.send(&format!("{line}\r\n")).await;
            self.read_until_prompts(1).await
        }

        /// Nothing arrives within `d` (for the no-reply traps; the peer answers in well
        /// under a millisecond when it answers).
        async fn silent_for(&mut self, d: Duration) -> bool {
            let mut chunk = [0u8; 64];
            tokio::time::timeout(d, self.s.read(&mut chunk))
                .await
                .is_err()
        }

        async fn eof(&mut self) -> bool {
            let mut chunk = [0u8; 64];
            matches!(
                tokio::time::timeout(Duration::from_secs(5), self.s.read(&mut chunk)).await,
                Ok(Ok(0)) | Ok(Err(_))
            )
        }
    }

    fn harness_config() -> PeerConfig {
        // The §5 harness: base:1.0.0, demo:1.0.0 activated, demo:2.0.0 deactivated.
        PeerConfig {
            static_bizzes: vec![
                StaticBiz {
                    name: "demo".into(),
                    version: "1.0.0".into(),
                    main_class: "com.example.Main".into(),
                    state: PeerState::Activated,
                },
                StaticBiz {
                    name: "demo".into(),
                    version: "2.0.0".into(),
                    main_class: "com.example.Main".into(),
                    state: PeerState::Deactivated,
                },
            ],
            ..PeerConfig::default()
        }
    }

    const LIST3: &str = "demo:2.0.0:deactivated\r\ndemo:1.0.0:activated\r\nbase:1.0.0:activated\r\nbiz count = 3\r\n\r\nsofa-ark>";

    async fn wait_state(peer: &ArkTelnetPeer, name: &str, version: &str, want: Option<&str>) {
        let ok = crate::wait_until(Duration::from_secs(5), || {
            peer.state_of(name, version).as_deref() == want
        })
        .await;
        assert!(
            ok,
            "{name}:{version} never became {want:?}: {:?}",
            peer.bizzes()
        );
    }

    #[tokio::test]
    async fn transcript_5_1_connect_list_blank_quit() {
        let peer = ArkTelnetPeer::start(harness_config()).await;
        let mut c = Raw::greeted(peer.addr()).await;
        assert_eq!(c.cmd("biz -a").await, LIST3);
        assert_eq!(c.cmd("").await, "\r\nsofa-ark>");
        assert_eq!(c.cmd("   ").await, "\r\nsofa-ark>");
        c.send("quit\r\n").await;
        assert!(c.eof().await);
        peer.shutdown().await;
    }

    #[tokio::test]
    async fn transcript_5_2_framing_traps() {
        let peer = ArkTelnetPeer::start(harness_config()).await;
        let mut c = Raw::greeted(peer.addr()).await;
        c.send("biz -a\n").await;
        assert_eq!(c.read_until_prompts(1).await, LIST3);
        c.send("biz -a\r").await;
        assert!(
            c.silent_for(Duration::from_millis(200)).await,
            "bare CR ends nothing"
        );
        c.send("\n").await;
        assert_eq!(c.read_until_prompts(1).await, LIST3);
        c.send("biz -a\r\nplugin -a\r\n").await;
        assert_eq!(
            c.read_until_prompts(2).await,
            format!("{LIST3}koupleless-base-plugin\r\nplugin count = 1\r\n\r\nsofa-ark>")
        );
        c.send(&format!("biz -a {}\r\n", "x".repeat(9000))).await;
        assert!(
            c.silent_for(Duration::from_millis(200)).await,
            "over-long line: no reply"
        );
        assert_eq!(c.cmd("biz -a").await, LIST3, "the next line works");
        c.send("biz -m *\r\n").await;
        assert!(
            c.silent_for(Duration::from_millis(200)).await,
            "invalid regex: no reply"
        );
        assert_eq!(c.cmd("biz -a").await, LIST3);
        // Exactly 8192 bytes is still a line.
        let line = format!("biz -a{}", " ".repeat(MAX_LINE - 6));
        assert_eq!(c.cmd(&line).await, LIST3);
        peer.shutdown().await;
    }

    #[tokio::test]
    async fn transcript_5_3_help_for_invalid_lines() {
        let peer = ArkTelnetPeer::start(harness_config()).await;
        let mut c = Raw::greeted(peer.addr()).await;
        let help = "Plugin Command Tips:\r\n  USAGE: plugin [option...] [pluginName...]\r\n  SAMPLE: plugin -m plugin-A plugin-B\r\n  -h  Shows the help message.\r\n  -a  Shows all plugin name.\r\n  -m  Shows the meta info of specified pluginName.\r\n  -s  Shows the service info of specified pluginName.\r\n  -d  Shows the detail info of specified pluginName.\r\nBiz Command Tips:\r\n  USAGE: biz [option...] [arguments...]\r\n  SAMPLE: biz -m bizIdentityA bizIdentityB.\r\n  -h  Shows the help message.\r\n  -a  Shows all biz.\r\n  -m  Shows the meta info of specified bizIdentity.\r\n  -s  Shows the service info of specified bizIdentity.\r\n  -d  Shows the detail info of specified bizIdentity.\r\n  -i  Install biz of specified bizIdentity or bizUrl.\r\n  -u  Uninstall biz of specified bizIdentity.\r\n  -o  Switch biz of specified bizIdentity.\r\n\r\nsofa-ark>";
        for line in [
            "foo",
            "biz",
            "biz -",
            "biz -x",
            "biz -A",
            "biz -i a b",
            "biz -ia x",
            " quit",
            "QUIT",
            "biz -h a",
            "biz -ah",
            "biz -am A:1",
            "biz -mi A:1",
            "biz -m",
            "biz -i",
            "biz -i x -m",
        ] {
            assert_eq!(c.cmd(line).await, help, "{line:?}");
        }
        for line in ["biz -a -a", "biz   -a  ", "\tbiz -a"] {
            assert_eq!(c.cmd(line).await, LIST3, "{line:?}");
        }
        assert!(c.cmd("biz -h").await.starts_with("Biz Command Tips:\r\n"));
        peer.shutdown().await;
    }

    #[tokio::test]
    async fn transcript_5_4_details() {
        let peer = ArkTelnetPeer::start(harness_config()).await;
        let mut c = Raw::greeted(peer.addr()).await;
        assert_eq!(
            c.cmd("biz -m demo:1.0.0").await,
            "BizName:                  demo\r\nVersion:                  1.0.0\r\nPriority:                 100\r\nMainClass:                com.example.Main\r\nWebContextPath:           /\r\nDeny Import Packages:     \\\r\nDeny Import Classes:      \\\r\nDeny Import Resources:    \\\r\n\r\nsofa-ark>"
        );
        let md = c.cmd("biz -md base:1.0.0").await;
        assert!(md.starts_with("BizName:                  base\r\n"), "{md}");
        assert!(
            md.contains("MainClass:                embed main\r\n"),
            "{md}"
        );
        assert!(
            md.contains("\r\nClassLoader: ") && md.ends_with("\r\n\r\nsofa-ark>"),
            "{md}"
        );
        let two = c.cmd("biz -m demo:.*").await;
        assert_eq!(
            two.matches("BizName:                  demo\r\n").count(),
            2,
            "{two}"
        );
        assert_eq!(
            c.cmd(r"biz -m \Qdemo:1.0.0\E")
                .await
                .matches("BizName:")
                .count(),
            1
        );
        assert_eq!(
            c.cmd("biz -m nomatch").await,
            "no matched biz candidates.\r\n\r\nsofa-ark>"
        );
        assert_eq!(c.cmd("biz -s demo:1.0.0").await, "\r\nsofa-ark>");
        assert_eq!(
            c.cmd("plugin -a").await,
            "koupleless-base-plugin\r\nplugin count = 1\r\n\r\nsofa-ark>"
        );
        assert_eq!(
            c.cmd("plugin -m nothing").await,
            "no matched plugin candidates.\r\n\r\nsofa-ark>"
        );
        peer.shutdown().await;
    }

    #[tokio::test]
    async fn transcript_5_5_and_5_6_install() {
        let dir = tempfile::tempdir().unwrap();
        let jar = RawZip::ark_biz("mod1", "0.0.1", "com.example.Mod1")
            .write(&dir.path().join("mod1 0.0.1.jar"))
            .unwrap();
        let url = format!("file://{}", jar.display().to_string().replace(' ', "%20"));
        let peer = ArkTelnetPeer::start(PeerConfig {
            copy_delay: Duration::from_millis(150),
            start_delay: Duration::from_millis(300),
            ..harness_config()
        })
        .await;
        let mut c = Raw::greeted(peer.addr()).await;
        let ack = "Start to process install command now, pls wait and check.\r\n\r\nsofa-ark>";
        assert_eq!(c.cmd(&format!("biz -i {url}")).await, ack);
        assert_eq!(c.cmd("biz -a").await, LIST3, "still copying");
        wait_state(&peer, "mod1", "0.0.1", Some("resolved")).await;
        assert_eq!(
            c.cmd("biz -a").await,
            "mod1:0.0.1:resolved\r\ndemo:2.0.0:deactivated\r\ndemo:1.0.0:activated\r\nbase:1.0.0:activated\r\nbiz count = 4\r\n\r\nsofa-ark>"
        );
        assert_eq!(
            c.cmd(&format!("biz -i {url}")).await,
            "Exists some biz whose state is neither 'activated' nor 'deactivated'.\r\n\r\nsofa-ark>"
        );
        wait_state(&peer, "mod1", "0.0.1", Some("activated")).await;
        // Duplicate: acknowledged, nothing changes, nothing logged.
        let log_before = peer.log().len();
        assert_eq!(c.cmd(&format!("biz -i {url}")).await, ack);
        assert!(
            crate::wait_until(Duration::from_secs(2), || peer.shared.world().in_flight
                == 0)
            .await
        );
        assert_eq!(peer.log().len(), log_before, "{:?}", peer.log());
        assert_eq!(peer.bizzes().len(), 4);
        // Failing start: resolved, broken, gone.
        let fail = RawZip::ark_biz("modfail", "0.0.1", "x.Fail")
            .write(&dir.path().join("modfail.jar"))
            .unwrap();
        peer.update(|c| c.fail_start = vec!["modfail".into()]);
        assert_eq!(
            c.cmd(&format!("biz -i file://{}", fail.display())).await,
            ack
        );
        wait_state(&peer, "modfail", "0.0.1", Some("resolved")).await;
        wait_state(&peer, "modfail", "0.0.1", Some("broken")).await;
        wait_state(&peer, "modfail", "0.0.1", None).await;
        // Identity form, bad identity, missing file, two-slash host: acknowledged, then only logs.
        for (arg, logged) in [
            ("mod1:0.0.1".to_owned(), "bizFile must not be null!"),
            (
                "notanidentity".to_owned(),
                "Invalid telnet biz install command notanidentity",
            ),
            (
                "file:///nonexistent.jar".to_owned(),
                "FileNotFoundException",
            ),
            ("file://tmp/x.jar".to_owned(), "UnknownHostException: tmp"),
        ] {
            assert_eq!(c.cmd(&format!("biz -i {arg}")).await, ack);
            let found = crate::wait_until(Duration::from_secs(2), || {
                peer.log().iter().any(|l| l.contains(logged))
            })
            .await;
            assert!(found, "{arg}: {:?}", peer.log());
        }
        assert_eq!(peer.bizzes().len(), 4);
        peer.shutdown().await;
    }

    #[tokio::test]
    async fn transcript_5_7_uninstall_and_switch() {
        let peer = ArkTelnetPeer::start(PeerConfig {
            stop_delay: Duration::from_millis(300),
            ..harness_config()
        })
        .await;
        peer.add_biz("mod1", "0.0.1", "com.example.Mod1", PeerState::Activated);
        let mut c = Raw::greeted(peer.addr()).await;
        assert_eq!(
            c.cmd("biz -o demo:2.0.0").await,
            "Start to process switch command now, pls wait and check.\r\n\r\nsofa-ark>"
        );
        wait_state(&peer, "demo", "2.0.0", Some("activated")).await;
        assert_eq!(
            peer.state_of("demo", "1.0.0").as_deref(),
            Some("deactivated")
        );
        c.cmd("biz -o demo:9.9.9").await;
        let uninstall_ack =
            "Start to process uninstall command now, pls wait and check.\r\n\r\nsofa-ark>";
        assert_eq!(c.cmd("biz -u mod1:0.0.1").await, uninstall_ack);
        wait_state(&peer, "mod1", "0.0.1", Some("deactivated")).await;
        wait_state(&peer, "mod1", "0.0.1", None).await;
        for arg in ["nothere:1.0", "bad", "base:1.0.0"] {
            assert_eq!(c.cmd(&format!("biz -u {arg}")).await, uninstall_ack);
        }
        let logged = crate::wait_until(Duration::from_secs(2), || {
            let log = peer.log();
            log.iter().any(|l| l == "Switch biz: demo:9.9.9 not found.")
                && log
                    .iter()
                    .any(|l| l == "Uninstall biz: nothere:1.0 not found.")
                && log
                    .iter()
                    .any(|l| l == "Invalid telnet biz uninstall command bad")
        })
        .await;
        assert!(logged, "{:?}", peer.log());
        assert_eq!(
            peer.state_of("base", "1.0.0").as_deref(),
            Some("activated"),
            "the master biz stays"
        );
        peer.shutdown().await;
    }

    #[tokio::test]
    async fn transcript_5_8_security_mode() {
        let peer = ArkTelnetPeer::start(PeerConfig {
            security: true,
            ..harness_config()
        })
        .await;
        let mut c = Raw::greeted(peer.addr()).await;
        assert_eq!(
            c.cmd("biz -i file:///x.jar").await,
            "Cannot execute install command in security mode.\r\n\r\nsofa-ark>"
        );
        assert_eq!(
            c.cmd("biz -u demo:1.0.0").await,
            "Cannot execute uninstall command in security mode.\r\n\r\nsofa-ark>"
        );
        assert_eq!(
            c.cmd("biz -o demo:2.0.0").await,
            "Start to process switch command now, pls wait and check.\r\n\r\nsofa-ark>"
        );
        wait_state(&peer, "demo", "2.0.0", Some("activated")).await;
        peer.update(|c| c.client_is_localhost = false);
        let mut locked_out = Raw::connect(peer.addr()).await;
        assert!(
            locked_out.silent_for(Duration::from_millis(300)).await,
            "no greeting, never closed"
        );
        peer.shutdown().await;
    }

    #[tokio::test]
    async fn transcript_5_9_startup_windows() {
        let peer = ArkTelnetPeer::start(PeerConfig {
            phase: Phase::WindowB,
            ..harness_config()
        })
        .await;
        let mut c = Raw::greeted(peer.addr()).await;
        assert_eq!(c.cmd("biz -a").await, "\r\nsofa-ark>");
        peer.set_phase(Phase::Ready);
        assert_eq!(c.cmd("biz -a").await, LIST3);
        // Window A breaks the server for good: later connections close without a greeting.
        peer.restart(Phase::WindowA);
        assert!(c.eof().await, "a restart drops connections");
        let mut early = Raw::connect(peer.addr()).await;
        assert!(early.eof().await);
        peer.set_phase(Phase::Ready);
        let mut later = Raw::connect(peer.addr()).await;
        assert!(later.eof().await, "still broken after start-up finished");
        assert!(peer.bricked());
        peer.restart(Phase::Ready);
        let mut fresh = Raw::greeted(peer.addr()).await;
        assert_eq!(
            fresh.cmd("biz -a").await,
            "demo:2.0.0:deactivated\r\ndemo:1.0.0:activated\r\nbase:1.0.0:activated\r\nbiz count = 3\r\n\r\nsofa-ark>"
        );
        peer.shutdown().await;
    }

    #[tokio::test]
    async fn full_async_pool_gives_no_reply() {
        let peer = ArkTelnetPeer::start(PeerConfig {
            async_pool_max: 0,
            ..harness_config()
        })
        .await;
        let mut c = Raw::greeted(peer.addr()).await;
        c.send("biz -o demo:2.0.0\r\n").await;
        assert!(c.silent_for(Duration::from_millis(200)).await);
        assert_eq!(c.cmd("biz -a").await, LIST3);
        peer.shutdown().await;
    }

    #[test]
    fn render_rules() {
        assert_eq!(render(""), "\r\nsofa-ark>");
        assert_eq!(render("  \n"), "\r\nsofa-ark>");
        assert_eq!(render("x"), "x\r\n\r\nsofa-ark>");
        assert_eq!(render("x\n"), "x\r\n\r\nsofa-ark>");
        assert_eq!(render("x\n\n"), "x\r\n\r\nsofa-ark>");
    }

    #[test]
    fn regex_subset() {
        let cases: [(&str, &str, Result<bool, RegexError>); 12] = [
            (".*", "master biz:1.0.0", Ok(true)),
            ("demo:.*", "demo:1.0.0", Ok(true)),
            ("demo:1.0.0", "demo:1x0y0", Ok(true)),
            (r"\Qdemo:1.0.0\E", "demo:1x0y0", Ok(false)),
            (r"\Qdemo:1.0.0\E", "demo:1.0.0", Ok(true)),
            ("demo", "demo:1.0.0", Ok(false)),
            ("a+b?c", "aaac", Ok(true)),
            (r"a\.b", "a.b", Ok(true)),
            ("*", "x", Err(RegexError::Invalid)),
            ("a\\", "a", Err(RegexError::Invalid)),
            ("[ab]", "a", Err(RegexError::Unsupported)),
            ("a)", "a", Err(RegexError::Invalid)),
        ];
        for (p, t, want) in cases {
            assert_eq!(regex_matches(p, t), want, "{p} ~ {t}");
        }
    }

    #[test]
    fn grammar_table() {
        let ok = |l: &str| parse_command(l, "biz", "hamsdiuo").is_some();
        for l in [
            "biz -a",
            "biz -a -a",
            "biz -m A:1 B:2",
            "biz -msd A:1",
            "biz -m -d A:.*",
            "biz -i X X",
        ] {
            assert!(ok(l), "{l}");
        }
        for l in [
            "biz",
            "biz -",
            "biz -x",
            "biz -A",
            "biz -h a",
            "biz -ah",
            "biz -am A:1",
            "biz -mi A:1",
            "biz -i A:1 B:2",
            "biz -ia x",
            "biz -i x -m",
            "biz -u",
            "bizz -a",
        ] {
            assert!(!ok(l), "{l}");
        }
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("/tmp/a%20b.jar"), "/tmp/a b.jar");
        assert_eq!(percent_decode("/x%2"), "/x%2");
        assert_eq!(percent_decode("%C3%BC"), "ü");
    }
}
