//! The daemon's Prometheus metrics (SPEC §5). Label values are bounded:
//! targets and notifiers come from config, statuses from a fixed list, and
//! no sub-job id is ever a label.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::cloud::model::Status;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TargetLabels {
    pub target: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PollLabels {
    pub target: String,
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ApiLabels {
    /// The HTTP status, or `error` when no answer came.
    pub status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EventLabels {
    pub kind: &'static str,
    /// A known status, or `other`, so a chatty cloud cannot grow the set.
    pub to: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeliveryLabels {
    pub notifier: String,
    /// `delivered`, `retry` or `dead`. A retry is not a drop.
    pub result: &'static str,
}

/// Every metric, with its own registry (so several daemons can run in one
/// test process).
pub struct Metrics {
    registry: Registry,
    pub polls: Family<PollLabels, Counter>,
    pub api_requests: Family<ApiLabels, Counter>,
    pub scan_seconds: Family<TargetLabels, Histogram>,
    pub tracked: Family<TargetLabels, Gauge>,
    pub events: Family<EventLabels, Counter>,
    pub deliveries: Family<DeliveryLabels, Counter>,
    pub outbox_pending: Gauge,
    pub outbox_dead: Gauge,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("jobwatch");
        let polls = Family::<PollLabels, Counter>::default();
        let api_requests = Family::<ApiLabels, Counter>::default();
        let scan_seconds = Family::<TargetLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0])
        });
        let tracked = Family::<TargetLabels, Gauge>::default();
        let events = Family::<EventLabels, Counter>::default();
        let deliveries = Family::<DeliveryLabels, Counter>::default();
        let outbox_pending = Gauge::default();
        let outbox_dead = Gauge::default();
        registry.register("polls", "Poll cycles per target and result", polls.clone());
        registry.register(
            "api_requests",
            "Cloud API requests by HTTP status",
            api_requests.clone(),
        );
        registry.register(
            "scan_duration_seconds",
            "Full scan duration per target",
            scan_seconds.clone(),
        );
        registry.register(
            "tracked_sub_jobs",
            "Sub-jobs in the snapshot per target",
            tracked.clone(),
        );
        registry.register(
            "events",
            "Detected events by kind and status entered",
            events.clone(),
        );
        registry.register(
            "deliveries",
            "Delivery attempts by notifier and result",
            deliveries.clone(),
        );
        registry.register(
            "outbox_pending",
            "Outbox rows waiting for delivery",
            outbox_pending.clone(),
        );
        registry.register("outbox_dead", "Dead letters", outbox_dead.clone());
        Metrics {
            registry,
            polls,
            api_requests,
            scan_seconds,
            tracked,
            events,
            deliveries,
            outbox_pending,
            outbox_dead,
        }
    }

    /// A bounded label for a status.
    pub fn status_label(status: Option<&Status>) -> String {
        match status {
            Some(s) if s.is_known() => s.to_string(),
            Some(_) => "other".into(),
            None => "none".into(),
        }
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("encode metrics");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_with_bounded_labels() {
        let m = Metrics::new();
        m.events
            .get_or_create(&EventLabels {
                kind: "changed",
                to: Metrics::status_label(Some(&Status::Other("X".into()))),
            })
            .inc();
        let text = m.encode();
        assert!(
            text.contains("jobwatch_events_total{kind=\"changed\",to=\"other\"} 1"),
            "{text}"
        );
    }
}
