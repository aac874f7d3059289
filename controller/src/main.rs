//! `koupleless-controller`: parse configuration, set up logging and the Kubernetes client, run
//! until SIGTERM or Ctrl-C.

use anyhow::Context as _;
use clap::Parser;
use koupleless_controller::{Args, Listeners, app, kube_client, telemetry};
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    telemetry::init(args.log_format);
    koupleless_controller::install_crypto_provider();
    let settings = args.settings().context("invalid configuration")?;
    if args.client_id.is_none() && args.pod_name.is_none() && args.hostname.is_none() {
        tracing::warn!(client_id = %settings.client_id, "CLIENT_ID not set: using a random id; a restart cannot resume this replica's bases");
    }

    let config = kube::Config::infer()
        .await
        .context("no Kubernetes configuration (in-cluster or KUBECONFIG)")?;
    let client = kube_client::client(config, args.kube_api_qps, args.kube_api_burst)
        .context("cannot build the Kubernetes client")?;

    let listeners = Listeners {
        http_tunnel: None,
        probes: Some(app::bind(args.probe_addr).await?),
        metrics: Some(app::bind(args.metrics_addr).await?),
        kubelet: match (args.enable_kubelet_api, u16::try_from(args.kubelet_port)) {
            (false, _) => None,
            (true, Ok(port)) => {
                Some(app::bind(std::net::SocketAddr::from(([0, 0, 0, 0], port))).await?)
            }
            (true, Err(_)) => anyhow::bail!("KUBELET_PORT {} is not a port", args.kubelet_port),
        },
    };

    // The one signal handler of the process.
    let shutdown = CancellationToken::new();
    let trigger = shutdown.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        trigger.cancel();
    });

    koupleless_controller::run(settings, client, listeners, shutdown).await?;
    Ok(())
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch SIGTERM; only Ctrl-C stops the controller");
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
