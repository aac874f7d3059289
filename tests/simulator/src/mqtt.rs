//! A base on the MQTT tunnel, as the Java `arklet-tunnel-mqtt` (spec protocol §5.5, §5.6):
//! on every connect it subscribes `<id>/+` and `<id>/base/baseline`; on the first it asks for
//! its baseline; it heartbeats at a fixed rate from the start; it answers `health`,
//! `queryAllBiz`, `installBiz`, `uninstallBiz` and the baseline.

use std::sync::Arc;
use std::time::Duration;

use koupleless_protocol::mqtt::{BatchInstallBizResponseMsg, BizOperationResponse};
use koupleless_protocol::transport::{self, Transport};
use koupleless_protocol::{BizSpec, BizState, Envelope, Output, ResponseCode};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde::Serialize;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::{Shared, Stats, now_ms};

/// The base's client handle and topic prefix, for replies.
#[derive(Clone)]
struct Link {
    client: AsyncClient,
    prefix: String,
    shared: Arc<Shared>,
}

impl Link {
    /// Publishes `data` in the `{data, publishTimestamp}` envelope on `base/<rest>`, QoS 1,
    /// not retained, as Java does; nothing while partitioned.
    fn reply<T: Serialize>(&self, rest: &str, data: T) {
        if self.shared.cut() {
            return;
        }
        let body = transport::encode(&Envelope::new(data, now_ms()), Transport::Mqtt);
        // A full request queue means the connection is down or slow: Java's publish would
        // fail too; the controller asks again.
        let _ = self.client.try_publish(
            format!("{}/base/{rest}", self.prefix),
            QoS::AtLeastOnce,
            false,
            body,
        );
    }
}

pub(crate) fn spawn(
    shared: Arc<Shared>,
    host: String,
    port: u16,
    cancel: CancellationToken,
) -> JoinHandle<()> {
    let config = &shared.config;
    let identity = shared.model().identity.clone();
    let mut opts = MqttOptions::new(format!("{}@@@{identity}", config.client_prefix), host, port);
    opts.set_keep_alive(config.keep_alive);
    opts.set_clean_session(true);
    opts.set_max_packet_size(1 << 20, 1 << 20);
    // Small queues keep a base cheap; a base publishes a handful of messages at a time.
    let (client, mut eventloop) = AsyncClient::new(opts, 16);
    let link = Link {
        client,
        prefix: format!("koupleless_{}/{identity}", config.env),
        shared: shared.clone(),
    };
    let period = config.heartbeat_interval;
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut first = true;
        loop {
            tokio::select! {
                () = cancel.cancelled() => break,
                _ = tick.tick() => {
                    if !link.shared.cut() {
                        let status = link.shared.model().status(0, BizState::Activated);
                        Stats::bump(&link.shared.stats.heartbeats);
                        let body = transport::encode(&Envelope::new(status, now_ms()), Transport::Mqtt);
                        let _ = link.client.try_publish(format!("{}/base/heart", link.prefix), QoS::AtLeastOnce, false, body);
                    }
                }
                ev = eventloop.poll() => match ev {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        let _ = link.client.try_subscribe(format!("{}/+", link.prefix), QoS::AtLeastOnce);
                        let _ = link.client.try_subscribe(format!("{}/base/baseline", link.prefix), QoS::AtLeastOnce);
                        if std::mem::take(&mut first) && !link.shared.cut() {
                            Stats::bump(&link.shared.stats.baseline_queries);
                            let meta = link.shared.model().metadata();
                            let body = transport::encode(&Envelope::new(meta, now_ms()), Transport::Mqtt);
                            let _ = link.client.try_publish(format!("{}/base/queryBaseline", link.prefix), QoS::AtLeastOnce, false, body);
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        if !link.shared.cut() {
                            on_message(&link, &p.topic, &p.payload);
                        }
                    }
                    Ok(_) => {}
                    // Paho reconnects automatically; so does the event loop on the next poll.
                    Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
                }
            }
        }
        let _ = link.client.try_disconnect();
    })
}

fn on_message(link: &Link, topic: &str, payload: &[u8]) {
    let shared = &link.shared;
    Stats::bump(&shared.stats.commands);
    if topic.ends_with("/base/baseline") {
        // Raw JSON array, no envelope; the base runs batchInstallBiz on it.
        let Ok(specs) = serde_json::from_slice::<Vec<BizSpec>>(payload) else {
            return;
        };
        let link = link.clone();
        let delay = shared.config.install_delay;
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let sh = link.shared.clone();
            let response = sh
                .model()
                .batch_install(&specs, || sh.draw_failure(), now_ms());
            link.reply(
                "batchInstallBizResponse",
                BatchInstallBizResponseMsg {
                    command: "batchInstallBiz".into(),
                    response,
                },
            );
            let list = sh.model().simple_biz();
            link.reply("simpleBiz", list);
        });
        return;
    }
    // The command is the last topic segment; anything else gets no reply (Java throws).
    match topic.rsplit('/').next().unwrap_or_default() {
        "health" => {
            let health = shared.model().report_health(shared.config.metaspace_creep);
            link.reply(
                "health",
                Output {
                    code: ResponseCode::Success,
                    data: Some(health),
                    error_code: None,
                    message: None,
                },
            );
        }
        "queryAllBiz" => {
            let list = shared.model().simple_biz();
            link.reply("simpleBiz", list);
        }
        cmd @ ("installBiz" | "uninstallBiz") => {
            let Ok(spec) = serde_json::from_slice::<BizSpec>(payload) else {
                return;
            };
            let install = cmd == "installBiz";
            let link = link.clone();
            let delay = if install {
                shared.config.install_delay
            } else {
                Duration::ZERO
            };
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                let sh = link.shared.clone();
                let response = if install {
                    let out = sh.model().install(&spec, sh.draw_failure(), now_ms());
                    match out.code {
                        ResponseCode::Success => Stats::bump(&sh.stats.installs_ok),
                        _ => Stats::bump(&sh.stats.installs_failed),
                    }
                    out
                } else {
                    Stats::bump(&sh.stats.uninstalls);
                    sh.model().uninstall(&spec)
                };
                // bizName/bizVersion are echoed from the request, omitted when absent.
                let echo = |s: &str| (!s.is_empty()).then(|| s.to_owned());
                link.reply(
                    "bizOperation",
                    BizOperationResponse {
                        biz_name: echo(&spec.biz_name),
                        biz_version: echo(&spec.biz_version),
                        command: cmd_name(install).into(),
                        response,
                    },
                );
                // The Java base follows every operation with its full list.
                let list = sh.model().simple_biz();
                link.reply("simpleBiz", list);
            });
        }
        _ => {}
    }
}

fn cmd_name(install: bool) -> &'static str {
    if install {
        "installBiz"
    } else {
        "uninstallBiz"
    }
}
