//! The HTTP tunnel's base side (spec protocol §6): a heartbeat `POST <endpoint>/heartbeat`
//! every 12 s carrying the un-enveloped `BaseStatus` with the real Arklet port, and, if asked,
//! the baseline from `POST <endpoint>/queryBaseline` at start-up, installed through the
//! command service as one `batchInstallBiz`. The controller then calls the Arklet HTTP API.
//!
//! Differences from the Java base, on purpose: a failed heartbeat is retried twice within the
//! first quarter of the period (Java only logs it); on shutdown a final `deactivated` heartbeat
//! lets the controller remove the base at once (as the Go mock base does); the Java base never
//! fetches the baseline over HTTP.

use std::time::Duration;

use koupleless_protocol::transport::{Transport, encode};
use koupleless_protocol::{BizSpec, BizState, CommandId};
use tokio::time::{MissedTickBehavior, sleep};
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;

use super::{BaseInfo, Secret, TunnelError};
use crate::backend::RuntimeBackend;
use crate::service::{CommandService, Data, Outcome};

/// Validated settings (see [`super::TunnelArgs::http`]).
#[derive(Clone, Debug)]
pub struct HttpTunnelSettings {
    /// Controller base URL, e.g. `http://module-controller:7777`.
    pub endpoint: String,
    /// Heartbeat period.
    pub interval: Duration,
    /// Timeout of one request (connect and whole request).
    pub timeout: Duration,
    /// Fetch and install the baseline at start-up.
    pub fetch_baseline: bool,
    /// On shutdown, how long a baseline install in progress may still run.
    pub shutdown_grace: Duration,
    /// The agent's own API token, sent as `Authorization: Bearer` on every request to the
    /// controller: a controller configured with the same secret (`ARKLET_API_TOKEN`) then
    /// believes the heartbeat whatever address it arrives from (behind NAT or a proxy), and
    /// uses the token for its calls back to this agent.
    pub api_token: Option<Secret>,
}

impl HttpTunnelSettings {
    /// Default of [`HttpTunnelSettings::shutdown_grace`].
    pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
}

/// Checks that the endpoint is an absolute `http(s)` URL.
pub fn check_endpoint(endpoint: &str) -> Result<(), TunnelError> {
    let bad = |reason: String| TunnelError::Endpoint {
        endpoint: endpoint.to_owned(),
        reason,
    };
    let url = url::Url::parse(endpoint).map_err(|e| bad(e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(bad(format!(
            "scheme {:?} is not http or https",
            url.scheme()
        )));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(bad("no host".into()));
    }
    Ok(())
}

/// `<endpoint>/<path>`: string concatenation as the Java base does, tolerating a trailing `/`.
pub fn endpoint_url(endpoint: &str, path: &str) -> String {
    format!("{}/{path}", endpoint.trim_end_matches('/'))
}

/// Delays before the retries of a failed heartbeat: two retries, all within the first quarter
/// of the period, so a retry never runs into the next beat.
pub fn retry_delays(period: Duration) -> [Duration; 2] {
    [period / 12, period / 6]
}

/// Delay before the `attempt`-th (0-based) retry of the baseline fetch: 1 s doubling to 30 s.
pub fn baseline_backoff(attempt: u32) -> Duration {
    Duration::from_secs(1u64 << attempt.min(5)).min(Duration::from_secs(30))
}

/// The heartbeat body: `BaseStatus`, un-enveloped (T18), with the real HTTP port (T21).
pub fn heartbeat_body(base: &BaseInfo, state: BizState) -> Vec<u8> {
    encode(&base.status(base.http_port, state), Transport::Mqtt)
}

/// Whether a failed baseline fetch is worth retrying: transport errors and server errors are;
/// a 4xx means the controller does not offer the baseline and never will.
pub fn baseline_retryable(status: Option<u16>) -> bool {
    status.is_none_or(|s| s >= 500 || s == 408 || s == 429)
}

/// The `batchInstallBiz` body for a baseline list.
pub fn baseline_install_body(list: &[BizSpec]) -> Vec<u8> {
    serde_json::json!({ "bizList": list })
        .to_string()
        .into_bytes()
}

/// `Authorization: Bearer <token>`, marked sensitive so it never shows in debug output.
pub fn bearer_header(token: &Secret) -> Result<reqwest::header::HeaderValue, TunnelError> {
    let mut value = reqwest::header::HeaderValue::try_from(format!("Bearer {}", token.expose()))
        .map_err(|_| TunnelError::TokenHeader)?;
    value.set_sensitive(true);
    Ok(value)
}

/// The client for every request to the controller: timeouts, and the bearer token as a
/// default header marked sensitive (kept out of debug output).
fn client(cfg: &HttpTunnelSettings) -> Result<reqwest::Client, TunnelError> {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(token) = &cfg.api_token {
        headers.insert(reqwest::header::AUTHORIZATION, bearer_header(token)?);
    }
    reqwest::Client::builder()
        .connect_timeout(cfg.timeout)
        .timeout(cfg.timeout)
        .default_headers(headers)
        .build()
        .map_err(TunnelError::HttpClient)
}

/// Runs the HTTP heartbeat (and the start-up baseline) until `cancel` fires, then sends a
/// final `deactivated` heartbeat and returns. Controller failures are logged and retried.
pub async fn run_http_heartbeat<B: RuntimeBackend>(
    cfg: HttpTunnelSettings,
    base: BaseInfo,
    service: CommandService<B>,
    cancel: CancellationToken,
) -> Result<(), TunnelError> {
    let client = client(&cfg)?;
    let heartbeat_url = endpoint_url(&cfg.endpoint, "heartbeat");
    tracing::info!(url = %heartbeat_url, period = ?cfg.interval, port = base.http_port, "starting the HTTP heartbeat");
    let health = std::sync::Arc::clone(service.health_source());
    let baseline = cfg.fetch_baseline.then(|| {
        AbortOnDropHandle::new(tokio::spawn(fetch_and_install_baseline(
            client.clone(),
            endpoint_url(&cfg.endpoint, "queryBaseline"),
            base.clone(),
            service,
            cancel.child_token(),
        )))
    });

    let mut ticks = tokio::time::interval(cfg.interval);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = ticks.tick() => {}
        }
        // Deactivated only once the base counts as gone (its JVM down past the grace).
        let body = heartbeat_body(
            &base,
            super::heartbeat_state(health.sample().master.biz_state),
        );
        let result = tokio::select! {
            _ = cancel.cancelled() => break,
            r = beat_with_retries(&client, &heartbeat_url, &body, cfg.interval) => r,
        };
        match result {
            Ok(()) if failing => {
                failing = false;
                tracing::info!("HTTP heartbeats accepted again");
            }
            Ok(()) => {}
            Err(e) if !failing => {
                failing = true;
                tracing::warn!(error = %e, "HTTP heartbeat failed; will keep trying");
            }
            Err(e) => tracing::debug!(error = %e, "HTTP heartbeat failed again"),
        }
    }

    if let Some(mut task) = baseline {
        // The fetch stopped with the token; an install in progress gets a grace period.
        match tokio::time::timeout(cfg.shutdown_grace, &mut task).await {
            Ok(Err(e)) if e.is_panic() => tracing::error!(error = %e, "the baseline task panicked"),
            Ok(_) => {}
            Err(_) => {
                tracing::warn!("abandoning the baseline install at shutdown");
                task.abort();
                let _ = task.await;
            }
        }
    }

    let goodbye = heartbeat_body(&base, BizState::Deactivated);
    let last = client
        .post(&heartbeat_url)
        .timeout(cfg.timeout.min(Duration::from_secs(3)))
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(goodbye)
        .send()
        .await;
    match last.map(|r| r.status()) {
        Ok(s) if s.is_success() => {
            tracing::info!("HTTP heartbeat stopped: deactivated heartbeat sent")
        }
        Ok(s) => tracing::warn!(status = %s, "the controller refused the deactivated heartbeat"),
        Err(e) => tracing::warn!(error = %e, "could not send the deactivated heartbeat"),
    }
    Ok(())
}

/// Why one heartbeat failed.
#[derive(Debug, thiserror::Error)]
enum BeatError {
    #[error("{0}")]
    Transport(#[from] reqwest::Error),
    #[error("controller answered HTTP {0}")]
    Status(reqwest::StatusCode),
}

async fn beat(client: &reqwest::Client, url: &str, body: &[u8]) -> Result<(), BeatError> {
    let resp = client
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body.to_vec())
        .send()
        .await?;
    if resp.status().is_success() {
        Ok(())
    } else {
        Err(BeatError::Status(resp.status()))
    }
}

async fn beat_with_retries(
    client: &reqwest::Client,
    url: &str,
    body: &[u8],
    period: Duration,
) -> Result<(), BeatError> {
    let mut result = beat(client, url, body).await;
    for delay in retry_delays(period) {
        if result.is_ok() {
            break;
        }
        sleep(delay).await;
        result = beat(client, url, body).await;
    }
    result
}

/// Why the baseline could not be fetched.
#[derive(Debug, thiserror::Error)]
enum BaselineError {
    #[error("{0}")]
    Transport(#[from] reqwest::Error),
    #[error("controller answered HTTP {0}")]
    Status(reqwest::StatusCode),
    #[error("the baseline is not a list of modules: {0}")]
    Body(serde_json::Error),
}

impl BaselineError {
    fn retryable(&self) -> bool {
        match self {
            BaselineError::Transport(_) => true,
            BaselineError::Status(s) => baseline_retryable(Some(s.as_u16())),
            BaselineError::Body(_) => false,
        }
    }
}

async fn fetch_baseline(
    client: &reqwest::Client,
    url: &str,
    base: &BaseInfo,
) -> Result<Vec<BizSpec>, BaselineError> {
    let resp = client
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(encode(&base.metadata, Transport::Mqtt))
        .send()
        .await?;
    if !resp.status().is_success() {
        return Err(BaselineError::Status(resp.status()));
    }
    let bytes = resp.bytes().await?;
    serde_json::from_slice(&bytes).map_err(BaselineError::Body)
}

async fn fetch_and_install_baseline<B: RuntimeBackend>(
    client: reqwest::Client,
    url: String,
    base: BaseInfo,
    service: CommandService<B>,
    cancel: CancellationToken,
) {
    let mut attempt = 0;
    let list = loop {
        let result = tokio::select! {
            _ = cancel.cancelled() => return,
            r = fetch_baseline(&client, &url, &base) => r,
        };
        match result {
            Ok(list) => break list,
            Err(e) if e.retryable() => {
                let delay = baseline_backoff(attempt);
                tracing::warn!(%url, error = %e, retry_in = ?delay, "cannot fetch the baseline");
                attempt += 1;
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = sleep(delay) => {}
                }
            }
            Err(e) => {
                tracing::warn!(%url, error = %e, "cannot fetch the baseline; giving up");
                return;
            }
        }
    };
    if list.is_empty() {
        tracing::info!("the baseline is empty; nothing to install");
        return;
    }
    tracing::info!(modules = list.len(), "installing the baseline");
    let outcome = service
        .execute(
            CommandId::BatchInstallBiz.as_str(),
            &baseline_install_body(&list),
        )
        .await;
    match &outcome {
        Outcome::Success(_) => tracing::info!(modules = list.len(), "baseline installed"),
        Outcome::Failed {
            data: Some(Data::Batch(b)),
            ..
        } => {
            for (url, r) in b.biz_url_to_response.iter().flatten() {
                tracing::warn!(%url, code = ?r.code, message = %r.message, "baseline module not installed");
            }
        }
        other => tracing::warn!(outcome = ?other, "baseline install failed"),
    }
}

#[cfg(test)]
mod tests {
    use koupleless_protocol::BaseMetadata;

    use super::*;

    #[test]
    fn endpoints() {
        let cases = [
            ("http://mc:7777", "heartbeat", "http://mc:7777/heartbeat"),
            ("http://mc:7777/", "heartbeat", "http://mc:7777/heartbeat"),
            (
                "https://mc/prefix",
                "queryBaseline",
                "https://mc/prefix/queryBaseline",
            ),
        ];
        for (endpoint, path, want) in cases {
            assert_eq!(endpoint_url(endpoint, path), want);
        }
        for ok in [
            "http://mc:7777",
            "https://10.0.0.1",
            "http://localhost:1/x/",
        ] {
            assert!(check_endpoint(ok).is_ok(), "{ok}");
        }
        for bad in ["mc:7777", "ftp://mc", "http://", "", "module-controller"] {
            assert!(check_endpoint(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn retries_stay_in_the_first_quarter_of_the_period() {
        let cases = [
            (
                Duration::from_secs(12),
                [Duration::from_secs(1), Duration::from_secs(2)],
            ),
            (
                Duration::from_millis(240),
                [Duration::from_millis(20), Duration::from_millis(40)],
            ),
        ];
        for (period, want) in cases {
            let got = retry_delays(period);
            assert_eq!(got, want);
            assert!(got.iter().sum::<Duration>() <= period / 4);
        }
    }

    #[test]
    fn baseline_retry_policy() {
        let cases = [
            (None, true),
            (Some(500), true),
            (Some(503), true),
            (Some(408), true),
            (Some(429), true),
            (Some(404), false),
            (Some(405), false),
            (Some(400), false),
        ];
        for (status, want) in cases {
            assert_eq!(baseline_retryable(status), want, "{status:?}");
        }
        let delays: Vec<u64> = (0..8).map(|a| baseline_backoff(a).as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 30, 30, 30]);
    }

    #[test]
    fn heartbeat_body_is_raw_base_status_with_the_real_port() {
        let base = BaseInfo {
            identity: "10.0.0.5".parse().unwrap(),
            env: "dev".parse().unwrap(),
            metadata: BaseMetadata {
                cluster_name: "default".into(),
                identity: "10.0.0.5".into(),
                name: "TO_BE_IMPLEMENTED".into(),
                version: "1.0.0".into(),
            },
            local_ip: "10.0.0.5".into(),
            host_name: "base-pod-1".into(),
            http_port: 1238,
        };
        // spec protocol §6.1, byte for byte (fastjson sorts bean properties).
        let want = r#"{"baseMetadata":{"clusterName":"default","identity":"10.0.0.5","name":"TO_BE_IMPLEMENTED","version":"1.0.0"},"localHostName":"base-pod-1","localIP":"10.0.0.5","port":1238,"state":"activated"}"#;
        assert_eq!(
            String::from_utf8(heartbeat_body(&base, BizState::Activated)).unwrap(),
            want
        );
        let bye = String::from_utf8(heartbeat_body(&base, BizState::Deactivated)).unwrap();
        assert!(bye.ends_with(r#""port":1238,"state":"deactivated"}"#));
    }

    #[test]
    fn baseline_install_body_wraps_the_list() {
        let list = vec![BizSpec {
            biz_name: "b".into(),
            biz_version: "1".into(),
            biz_url: "file:///b.jar".into(),
        }];
        let v: serde_json::Value = serde_json::from_slice(&baseline_install_body(&list)).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"bizList":[{"bizName":"b","bizVersion":"1","bizUrl":"file:///b.jar"}]})
        );
    }
}
