//! Runs the in-memory test API server until Ctrl-C, for running the
//! controller by hand and for benchmarks.

use clap::Parser;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;

/// In-memory Kubernetes API server for tests (plain HTTP; RBAC with --rbac).
#[derive(Debug, Parser)]
#[command(name = "koupleless-kube-apiserver", version)]
struct Args {
    /// Port to listen on (0 picks a free one).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Address to bind.
    #[arg(long, default_value_t = IpAddr::V4(Ipv4Addr::LOCALHOST))]
    bind: IpAddr,
    /// Where to write a kubeconfig pointing at the server.
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// Events kept for watch resume (older versions answer 410 Gone).
    #[arg(long, default_value_t = 1000)]
    history: usize,
    /// Also run the test scheduler and workload controllers (Deployments,
    /// ReplicaSets, DaemonSets, garbage collection, node lifecycle), so
    /// applied workloads converge to bound Pods as on a real cluster.
    #[arg(long)]
    with_controllers: bool,
    /// Seconds of the `node.kubernetes.io/not-ready:NoExecute` toleration
    /// the DefaultTolerationSeconds admission gives every new Pod that has
    /// none (kube-apiserver's flag of the same name).
    #[arg(long, default_value_t = 300)]
    default_not_ready_toleration_seconds: i64,
    /// The same for `node.kubernetes.io/unreachable:NoExecute`.
    #[arg(long, default_value_t = 300)]
    default_unreachable_toleration_seconds: i64,
    /// Enforce bearer-token authentication and RBAC authorization; the
    /// kubeconfig written then carries a cluster admin's token.
    #[arg(long)]
    rbac: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    let config = koupleless_kube_apiserver::Config {
        bind: SocketAddr::new(args.bind, args.port),
        history: args.history,
        default_toleration_seconds:
            koupleless_kube_apiserver::admission::DefaultTolerationSeconds {
                not_ready: Some(args.default_not_ready_toleration_seconds),
                unreachable: Some(args.default_unreachable_toleration_seconds),
            },
        rbac: args.rbac,
        ..Default::default()
    };
    let server = koupleless_kube_apiserver::serve(config).await?;
    if let Some(path) = &args.kubeconfig {
        server.write_kubeconfig(path)?;
        tracing::info!(kubeconfig = %path.display(), "wrote kubeconfig");
    }
    let controllers = if args.with_controllers {
        Some(koupleless_kube_apiserver::cluster::start_controllers(
            server.client()?,
            koupleless_kube_apiserver::cluster::ControllersConfig::default(),
        ))
    } else {
        None
    };
    println!(
        "koupleless-kube-apiserver listening on {}",
        server.base_url()
    );
    tokio::signal::ctrl_c().await?;
    tracing::info!("shutting down");
    if let Some(c) = controllers {
        c.shutdown().await;
    }
    server.shutdown().await;
    Ok(())
}
