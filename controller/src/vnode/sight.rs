//! Whether this replica can hear its bases at all. Silence is only evidence of a base's death
//! when the replica could have heard the base: not while its MQTT connection is down, and not
//! when most of the bases it owns went silent at the same time, which is the signature of the
//! replica's own partition (Kubernetes' node lifecycle controller stops evicting in a "full
//! disruption" for the same reason). Supervisors turn this into [`super::lifecycle::Input::Blind`].

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config::MassSilence;
use crate::metrics::Metrics;
use crate::registry::{BaseRegistry, VNodeState};
use crate::tunnel::{MqttTunnel, TunnelKind};

/// What this replica can hear.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sight {
    /// The MQTT tunnel runs and is not connected to its broker.
    pub mqtt_down: bool,
    /// Most owned bases are silent at once (see [`MassSilence`]).
    pub mass_silence: bool,
}

impl Sight {
    /// Whether a base on `tunnel` cannot be heard.
    pub fn blind_for(&self, tunnel: Option<TunnelKind>) -> bool {
        self.mass_silence || (self.mqtt_down && tunnel == Some(TunnelKind::Mqtt))
    }
}

/// The sight of this replica from its tunnels' state and the owned bases' states.
pub fn assess(
    mqtt_connected: Option<bool>,
    owned_ready: usize,
    owned_silent: usize,
    rule: &MassSilence,
) -> Sight {
    Sight {
        mqtt_down: mqtt_connected == Some(false),
        mass_silence: rule.is_partition(owned_silent, owned_ready + owned_silent),
    }
}

/// Keeps `tx` up to date until cancelled. It polls: the inputs are an atomic flag and a
/// count over the registry, far cheaper than the supervisors' own ticks, and a poll period
/// well below the gap between the unreachable and dead thresholds is all the rule needs.
pub async fn monitor(
    registry: BaseRegistry,
    mqtt: Option<MqttTunnel>,
    rule: MassSilence,
    period: Duration,
    metrics: Arc<Metrics>,
    tx: watch::Sender<Sight>,
    cancel: CancellationToken,
) {
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        let counts = registry.count_by_state();
        let ready = counts.get(&VNodeState::Ready).copied().unwrap_or(0);
        let silent = counts.get(&VNodeState::Unreachable).copied().unwrap_or(0);
        let sight = assess(
            mqtt.as_ref().map(MqttTunnel::is_connected),
            ready,
            silent,
            &rule,
        );
        tx.send_if_modified(|old| {
            if *old == sight {
                return false;
            }
            if sight.mass_silence != old.mass_silence {
                if sight.mass_silence {
                    tracing::warn!(
                        silent,
                        owned = ready + silent,
                        "most bases went silent at once: taking it as this replica's partition; \
                         no Node is deleted for silence until they are heard again"
                    );
                } else {
                    tracing::info!("mass silence over");
                }
            }
            if sight.mqtt_down != old.mqtt_down {
                if sight.mqtt_down {
                    tracing::warn!(
                        "MQTT broker unreachable: bases on MQTT may turn Unknown but their \
                         Nodes are not deleted for silence"
                    );
                } else {
                    tracing::info!("MQTT broker reachable again");
                }
            }
            metrics
                .blind
                .set(i64::from(sight.mass_silence || sight.mqtt_down));
            *old = sight;
            true
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assessment_table() {
        let rule = MassSilence::default();
        #[rustfmt::skip]
        let cases = [
            // (mqtt connected, ready, silent, mqtt_down, mass_silence)
            (None,        10, 0, false, false),
            (Some(true),  10, 0, false, false),
            (Some(false), 10, 0, true,  false),
            (None,        0,  1, false, false), // one dead base is just dead
            (None,        0,  2, false, false),
            (None,        0,  3, false, true),
            (None,        7,  3, false, false),
            (None,        4,  6, false, true),
        ];
        for (mqtt, ready, silent, down, mass) in cases {
            let s = assess(mqtt, ready, silent, &rule);
            assert_eq!(
                (s.mqtt_down, s.mass_silence),
                (down, mass),
                "{mqtt:?} {ready} {silent}"
            );
        }
        let down = Sight {
            mqtt_down: true,
            mass_silence: false,
        };
        assert!(down.blind_for(Some(TunnelKind::Mqtt)));
        assert!(!down.blind_for(Some(TunnelKind::Http)));
        assert!(!down.blind_for(None));
        let mass = Sight {
            mqtt_down: false,
            mass_silence: true,
        };
        assert!(mass.blind_for(Some(TunnelKind::Http)));
    }
}
