//! A fleet of simulated Koupleless bases that publish exactly what the Java Arklet publishes
//! (spec protocol §5.6 over MQTT, §6 over HTTP): heartbeats, health, the module list,
//! install/uninstall replies with state records, and the baseline query on first connect.
//!
//! It is cheap on purpose, to run thousands of bases beside the controller on one small
//! machine: each base is one tokio task (MQTT: one broker connection per base, as real bases
//! have; HTTP: one listener per base) and no thread of its own. Installs are answered after a
//! configurable delay and fail at a configurable rate; bases can be stopped, restarted (a new
//! JVM: new connection, no modules, a fresh baseline query) and partitioned (nothing in or
//! out, state kept) through [`Fleet`].

mod http;
mod model;
mod mqtt;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use model::BaseModel;

/// How bases reach the controller.
#[derive(Clone, Debug)]
pub enum Tunnel {
    /// Through an MQTT broker.
    Mqtt {
        /// Broker host.
        host: String,
        /// Broker port.
        port: u16,
    },
    /// Heartbeats POSTed to the controller's HTTP tunnel; each base serves the Arklet API.
    Http {
        /// The controller's HTTP tunnel address (`POST /heartbeat`).
        controller: SocketAddr,
    },
}

/// Fleet settings. The defaults are the Java base's (spec protocol §5.5): heartbeat every
/// 10 s, MQTT keep-alive 60 s, client prefix `koupleless`.
#[derive(Clone, Debug)]
pub struct Config {
    /// Env segment of topics (`koupleless_<env>/...`) and Node names.
    pub env: String,
    /// Transport.
    pub tunnel: Tunnel,
    /// MQTT client id prefix (`<prefix>@@@<identity>`).
    pub client_prefix: String,
    /// Base identities are `<identity_prefix>-<index>`.
    pub identity_prefix: String,
    /// Heartbeat period (Java: fixed rate 10 s, first one at connect).
    pub heartbeat_interval: Duration,
    /// MQTT keep-alive.
    pub keep_alive: Duration,
    /// How long an install takes before its reply.
    pub install_delay: Duration,
    /// Fraction of installs that fail, 0.0..=1.0.
    pub failure_rate: f64,
    /// Seed of the per-base failure draws, for repeatable runs.
    pub seed: u64,
    /// Bytes of metaspace committed before each health report (0: an idle JVM whose
    /// figures never move; a real one creeps up in small steps as it loads classes).
    pub metaspace_creep: i64,
}

impl Config {
    /// Java defaults for `env` over `tunnel`.
    pub fn new(env: &str, tunnel: Tunnel) -> Config {
        Config {
            env: env.into(),
            tunnel,
            client_prefix: "koupleless".into(),
            identity_prefix: "sim".into(),
            heartbeat_interval: Duration::from_secs(10),
            keep_alive: Duration::from_secs(60),
            install_delay: Duration::ZERO,
            failure_rate: 0.0,
            seed: 1,
            metaspace_creep: 0,
        }
    }

    /// The identity of base `index`.
    pub fn identity(&self, index: usize) -> String {
        format!("{}-{index:05}", self.identity_prefix)
    }

    /// The Node the controller makes for base `index`.
    pub fn node_name(&self, index: usize) -> String {
        format!("vnode.{}.{}", self.identity(index), self.env)
    }
}

/// Fleet-wide message counters.
#[derive(Debug, Default)]
pub struct Stats {
    /// Heartbeats sent.
    pub heartbeats: AtomicU64,
    /// Commands received (health, queryAllBiz, install, uninstall, baseline).
    pub commands: AtomicU64,
    /// Installs answered with success.
    pub installs_ok: AtomicU64,
    /// Installs answered with a failure (simulated or `REPEAT_BIZ`).
    pub installs_failed: AtomicU64,
    /// Uninstalls answered.
    pub uninstalls: AtomicU64,
    /// Baseline queries sent.
    pub baseline_queries: AtomicU64,
}

impl Stats {
    fn bump(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// A snapshot as `(name, value)` pairs.
    pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
        [
            ("heartbeats", &self.heartbeats),
            ("commands", &self.commands),
            ("installs_ok", &self.installs_ok),
            ("installs_failed", &self.installs_failed),
            ("uninstalls", &self.uninstalls),
            ("baseline_queries", &self.baseline_queries),
        ]
        .into_iter()
        .map(|(n, c)| (n, c.load(Ordering::Relaxed)))
        .collect()
    }
}

/// What one base task shares with the fleet.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) config: Config,
    pub(crate) model: Mutex<BaseModel>,
    /// Partitioned: nothing is sent and everything received is dropped.
    pub(crate) partitioned: AtomicBool,
    pub(crate) stats: Arc<Stats>,
    /// splitmix64 state of the failure draws.
    rng: Mutex<u64>,
}

impl Shared {
    pub(crate) fn cut(&self) -> bool {
        self.partitioned.load(Ordering::Relaxed)
    }

    /// One failure draw at the configured rate.
    pub(crate) fn draw_failure(&self) -> bool {
        if self.config.failure_rate <= 0.0 {
            return false;
        }
        let mut s = self.rng.lock().unwrap_or_else(|e| e.into_inner());
        *s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = *s;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        ((z >> 11) as f64 / (1u64 << 53) as f64) < self.config.failure_rate
    }

    pub(crate) fn model(&self) -> std::sync::MutexGuard<'_, BaseModel> {
        self.model.lock().unwrap_or_else(|e| e.into_inner())
    }
}

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// One running (or stopped) base.
struct Base {
    shared: Arc<Shared>,
    run: Option<(CancellationToken, JoinHandle<()>)>,
}

/// N simulated bases.
pub struct Fleet {
    config: Config,
    bases: Vec<Base>,
    stats: Arc<Stats>,
}

impl Fleet {
    /// Starts `n` bases (indices `0..n`). HTTP bases bind their Arklet listener here, so an
    /// error is an I/O error of that bind.
    pub async fn start(config: Config, n: usize) -> std::io::Result<Fleet> {
        let stats = Arc::new(Stats::default());
        let mut fleet = Fleet {
            config: config.clone(),
            bases: Vec::with_capacity(n),
            stats: stats.clone(),
        };
        for i in 0..n {
            let shared = Arc::new(Shared {
                config: config.clone(),
                model: Mutex::new(BaseModel::new(&config.identity(i))),
                partitioned: AtomicBool::new(false),
                stats: stats.clone(),
                rng: Mutex::new(config.seed ^ (i as u64).wrapping_mul(0x2545_F491_4F6C_DD1D)),
            });
            fleet.bases.push(Base { shared, run: None });
            fleet.spawn(i).await?;
        }
        Ok(fleet)
    }

    async fn spawn(&mut self, i: usize) -> std::io::Result<()> {
        let shared = self.bases[i].shared.clone();
        let cancel = CancellationToken::new();
        let task = match &self.config.tunnel {
            Tunnel::Mqtt { host, port } => mqtt::spawn(shared, host.clone(), *port, cancel.clone()),
            Tunnel::Http { controller } => http::spawn(shared, *controller, cancel.clone()).await?,
        };
        self.bases[i].run = Some((cancel, task));
        Ok(())
    }

    /// How many bases the fleet has (running or not).
    pub fn len(&self) -> usize {
        self.bases.len()
    }

    /// Whether the fleet has no bases.
    pub fn is_empty(&self) -> bool {
        self.bases.is_empty()
    }

    /// The settings.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Fleet-wide counters.
    pub fn stats(&self) -> &Arc<Stats> {
        &self.stats
    }

    /// Stops base `i` as a killed JVM: its connection closes, no goodbye is sent.
    pub async fn stop(&mut self, i: usize) {
        if let Some((cancel, task)) = self.bases[i].run.take() {
            cancel.cancel();
            let _ = task.await;
        }
    }

    /// Starts base `i` again as a new JVM: no modules, a new connection, a baseline query.
    pub async fn restart(&mut self, i: usize) -> std::io::Result<()> {
        self.stop(i).await;
        self.bases[i].shared.model().clear();
        self.spawn(i).await
    }

    /// Whether base `i` is running.
    pub fn running(&self, i: usize) -> bool {
        self.bases[i].run.is_some()
    }

    /// Cuts base `i` off (`true`) or heals it (`false`): while cut it sends nothing and
    /// drops what it receives, but keeps its modules and its process.
    pub fn partition(&self, i: usize, cut: bool) {
        self.bases[i]
            .shared
            .partitioned
            .store(cut, Ordering::Relaxed);
    }

    /// `name:version` and state of every module on base `i`.
    pub fn modules(&self, i: usize) -> Vec<(String, koupleless_protocol::BizState)> {
        self.bases[i].shared.model().states()
    }

    /// Stops every base.
    pub async fn shutdown(mut self) {
        for i in 0..self.bases.len() {
            self.stop(i).await;
        }
    }
}
