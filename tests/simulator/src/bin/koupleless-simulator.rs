//! `koupleless-simulator`: plays N Koupleless bases against a controller until interrupted.
//!
//! ```text
//! koupleless-simulator --bases 1000 --tunnel mqtt --broker 127.0.0.1:1883 --env dev \
//!     --install-delay 200ms --failure-rate 0.01 --churn 6
//! ```

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, ValueEnum};
use koupleless_simulator::{Config, Fleet, Tunnel};

#[derive(Clone, Copy, Debug, ValueEnum)]
enum TunnelKind {
    Mqtt,
    Http,
}

/// Simulated Koupleless bases speaking the Java Arklet's payloads.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// How many bases.
    #[arg(long, default_value_t = 10)]
    bases: usize,
    /// Which tunnel the bases use.
    #[arg(long, value_enum, default_value_t = TunnelKind::Mqtt)]
    tunnel: TunnelKind,
    /// MQTT broker `host:port` (mqtt tunnel).
    #[arg(long, default_value = "127.0.0.1:1883")]
    broker: String,
    /// The controller's HTTP tunnel address (http tunnel).
    #[arg(long)]
    controller: Option<SocketAddr>,
    /// Env segment of topics and Node names.
    #[arg(long, default_value = "dev")]
    env: String,
    /// Base identities are `<prefix>-<index>`.
    #[arg(long, default_value = "sim")]
    identity_prefix: String,
    /// Heartbeat period (the Java base's is 10 s).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    heartbeat_interval: Duration,
    /// How long an install takes before it is answered.
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    install_delay: Duration,
    /// Fraction of installs that fail (0.0 to 1.0).
    #[arg(long, default_value_t = 0.0)]
    failure_rate: f64,
    /// Base restarts per minute across the fleet (a base killed and started again as a new
    /// JVM); 0 for none.
    #[arg(long, default_value_t = 0.0)]
    churn: f64,
    /// Bytes of metaspace committed before each health report (a JVM loading classes).
    #[arg(long, default_value_t = 0)]
    metaspace_creep: i64,
    /// Seed of the failure and churn draws.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Print the fleet's counters this often.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    stats_every: Duration,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if !(0.0..=1.0).contains(&args.failure_rate) {
        bail!("--failure-rate must be within 0.0..=1.0");
    }
    if args.churn < 0.0 {
        bail!("--churn must not be negative");
    }
    let tunnel = match args.tunnel {
        TunnelKind::Mqtt => {
            let (host, port) = args
                .broker
                .rsplit_once(':')
                .context("--broker must be host:port")?;
            Tunnel::Mqtt {
                host: host.to_owned(),
                port: port.parse().context("--broker port")?,
            }
        }
        TunnelKind::Http => Tunnel::Http {
            controller: args
                .controller
                .context("--controller is required with --tunnel http")?,
        },
    };
    let mut config = Config::new(&args.env, tunnel);
    config.identity_prefix = args.identity_prefix;
    config.heartbeat_interval = args.heartbeat_interval;
    config.install_delay = args.install_delay;
    config.failure_rate = args.failure_rate;
    config.seed = args.seed;
    config.metaspace_creep = args.metaspace_creep;
    let mut fleet = Fleet::start(config, args.bases)
        .await
        .context("starting the bases")?;
    eprintln!("{} bases started", fleet.len());

    let mut stats = tokio::time::interval(args.stats_every);
    stats.tick().await;
    // Churn: one restart every 60/churn seconds, of a base drawn from a fixed sequence.
    let churn_period = (args.churn > 0.0).then(|| Duration::from_secs_f64(60.0 / args.churn));
    let mut churn = tokio::time::interval(churn_period.unwrap_or(Duration::from_secs(3600)));
    churn.tick().await;
    let mut draw = args.seed | 1;
    loop {
        tokio::select! {
            r = tokio::signal::ctrl_c() => {
                r.context("waiting for Ctrl-C")?;
                break;
            }
            _ = stats.tick() => {
                let line: Vec<String> = fleet.stats().snapshot().iter().map(|(n, v)| format!("{n}={v}")).collect();
                eprintln!("{}", line.join(" "));
            }
            _ = churn.tick(), if churn_period.is_some() && !fleet.is_empty() => {
                // xorshift64: cheap, repeatable for a seed.
                draw ^= draw << 13;
                draw ^= draw >> 7;
                draw ^= draw << 17;
                let i = (draw % fleet.len() as u64) as usize;
                fleet.restart(i).await.context("restarting a base")?;
                eprintln!("restarted {}", fleet.config().identity(i));
            }
        }
    }
    fleet.shutdown().await;
    Ok(())
}
