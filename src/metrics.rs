//! The daemon's Prometheus metrics (docs/guarantees.md). Label values are bounded:
//! targets and notifiers come from config, statuses from a fixed list, and
//! no sub-job id is ever a label.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// A value from an open set (the cloud adds statuses before we learn
/// them) that may be a label only when it is one of a known few. Metrics
/// depends on no module of ours: the value's owner says which it is.
pub trait BoundedLabel {
    /// The label, or `None` for a value outside the known set.
    fn bounded(&self) -> Option<&str>;
}

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
    /// The account the request went out for (`default`: `[api]`).
    pub account: String,
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
    /// Cluster members seen alive (PostgreSQL state only).
    pub cluster_members: Gauge,
    /// Targets whose lease this replica holds.
    pub cluster_targets_owned: Gauge,
    pub cluster_lease_renewals: Counter,
    /// Leases this replica lost before handing them over (not renewed in
    /// time, or taken by another replica).
    pub cluster_lease_losses: Counter,
    /// Unix seconds of each target's last poll that succeeded.
    pub last_successful_poll: Family<TargetLabels, Gauge>,
    /// 1 if the last configuration reload succeeded (or none was tried).
    pub config_last_reload_successful: Gauge,
    /// Unix seconds of the last successful reload (or of the start).
    pub config_last_reload_success_timestamp: Gauge,
    /// Each account's `max_requests_per_minute` (the whole cluster's).
    pub api_budget: Family<AccountLabels, Gauge>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AccountLabels {
    pub account: String,
}

/// `jobwatch_build_info`'s labels.
#[derive(Debug, Clone, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
    commit: &'static str,
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
            "Cloud API requests by account and HTTP status",
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
        let cluster_members = Gauge::default();
        let cluster_targets_owned = Gauge::default();
        let cluster_lease_renewals = Counter::default();
        let cluster_lease_losses = Counter::default();
        registry.register(
            "cluster_members",
            "Replicas seen alive on the shared state database",
            cluster_members.clone(),
        );
        registry.register(
            "cluster_targets_owned",
            "Targets whose lease this replica holds",
            cluster_targets_owned.clone(),
        );
        registry.register(
            "cluster_lease_renewals",
            "Target leases taken or renewed by this replica",
            cluster_lease_renewals.clone(),
        );
        registry.register(
            "cluster_lease_losses",
            "Target leases this replica lost without handing them over",
            cluster_lease_losses.clone(),
        );
        let build_info = Family::<BuildLabels, Gauge>::default();
        build_info
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
                commit: env!("BUILT_FROM_COMMIT"),
            })
            .set(1);
        registry.register(
            "build_info",
            "A constant 1, labelled with the version and commit",
            build_info,
        );
        let last_successful_poll = Family::<TargetLabels, Gauge>::default();
        registry.register(
            "last_successful_poll_timestamp_seconds",
            "Unix time of each target's last successful poll",
            last_successful_poll.clone(),
        );
        let config_last_reload_successful = Gauge::default();
        config_last_reload_successful.set(1);
        registry.register(
            "config_last_reload_successful",
            "Whether the last configuration reload succeeded",
            config_last_reload_successful.clone(),
        );
        let config_last_reload_success_timestamp = Gauge::default();
        config_last_reload_success_timestamp.set(unix_now());
        registry.register(
            "config_last_reload_success_timestamp_seconds",
            "Unix time of the last successful configuration reload (or the start)",
            config_last_reload_success_timestamp.clone(),
        );
        let api_budget = Family::<AccountLabels, Gauge>::default();
        registry.register(
            "api_budget_requests_per_minute",
            "Each account's API budget (max_requests_per_minute; shared by a cluster)",
            api_budget.clone(),
        );
        Metrics {
            api_budget,
            registry,
            polls,
            api_requests,
            scan_seconds,
            tracked,
            events,
            deliveries,
            outbox_pending,
            outbox_dead,
            cluster_members,
            cluster_targets_owned,
            cluster_lease_renewals,
            cluster_lease_losses,
            last_successful_poll,
            config_last_reload_successful,
            config_last_reload_success_timestamp,
        }
    }

    /// Records a reload's outcome.
    pub fn reloaded(&self, ok: bool) {
        self.config_last_reload_successful.set(i64::from(ok));
        if ok {
            self.config_last_reload_success_timestamp.set(unix_now());
        }
    }

    /// A bounded label for a status: its name if the API documents it,
    /// `other` if not, `none` for no status.
    pub fn status_label(status: Option<&impl BoundedLabel>) -> String {
        match status.and_then(BoundedLabel::bounded) {
            Some(label) => label.to_owned(),
            None if status.is_some() => "other".into(),
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

/// Seconds since the Unix epoch, now.
pub fn unix_now() -> i64 {
    jiff::Timestamp::now().as_second()
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Open(&'static str, bool);

    impl BoundedLabel for Open {
        fn bounded(&self) -> Option<&str> {
            self.1.then_some(self.0)
        }
    }

    #[test]
    fn encodes_with_bounded_labels() {
        let m = Metrics::new();
        m.events
            .get_or_create(&EventLabels {
                kind: "changed",
                to: Metrics::status_label(Some(&Open("X", false))),
            })
            .inc();
        let text = m.encode();
        assert!(
            text.contains("jobwatch_events_total{kind=\"changed\",to=\"other\"} 1"),
            "{text}"
        );
        assert_eq!(Metrics::status_label(Some(&Open("FAILED", true))), "FAILED");
        assert_eq!(Metrics::status_label(None::<&Open>), "none");
    }
}
