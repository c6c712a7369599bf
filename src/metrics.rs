//! Prometheus metrics. Every label has a small fixed set of values: never object
//! names, URLs or error text.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::Arc;
use std::time::Duration;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReviewLabels {
    pub endpoint: &'static str,
    pub operation: &'static str,
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointLabels {
    pub endpoint: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: &'static str,
}

/// Flagger's labels: `name` is the target's name, as Flagger reports it.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CanaryLabels {
    pub name: String,
    pub namespace: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NamespaceLabels {
    pub namespace: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ChannelLabels {
    pub channel: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FailureLabels {
    pub channel: &'static str,
    pub reason: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 0.5 ms .. ~4 s: admission answers in microseconds; the tail is the API server's timeout.
    Histogram::new(exponential_buckets(0.0005, 2.0, 14))
}

fn delivery_histogram() -> Histogram {
    // 5 ms .. ~10 min: deliveries include retries and backoff.
    Histogram::new(exponential_buckets(0.005, 2.0, 18))
}

/// Cheap to clone; all clones share the same series.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    reviews: Family<ReviewLabels, Counter>,
    review_duration: HistogramFamily<EndpointLabels>,
    tls_reloads: Family<ResultLabels, Counter>,
    sent: Family<ChannelLabels, Counter>,
    failed: Family<FailureLabels, Counter>,
    retried: Family<ChannelLabels, Counter>,
    refused: Family<ChannelLabels, Counter>,
    queue_full: Family<ChannelLabels, Counter>,
    queue_depth: Family<ChannelLabels, Gauge>,
    delivery_latency: HistogramFamily<ChannelLabels>,
    gave_up: Family<ChannelLabels, Counter>,
    reconciles: Counter,
    reconcile_errors: Family<ReasonLabels, Counter>,
    leader: Gauge,
    canary_status: Family<CanaryLabels, Gauge>,
    canary_total: Family<NamespaceLabels, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut root = Registry::default();
        // Flagger's own names, unprefixed, so existing alerts keep working.
        let canary_status = Family::<CanaryLabels, Gauge>::default();
        root.register(
            "flagger_canary_status",
            "Last canary analysis result: 0 Progressing, 2 Failed, 1 any other phase",
            canary_status.clone(),
        );
        let canary_total = Family::<NamespaceLabels, Gauge>::default();
        root.register(
            "flagger_canary_total",
            "Number of canaries per namespace",
            canary_total.clone(),
        );
        let registry = root.sub_registry_with_prefix("canary_notifier");
        let reviews = Family::<ReviewLabels, Counter>::default();
        registry.register(
            "admission_reviews",
            "AdmissionReviews answered, by endpoint, operation and result",
            reviews.clone(),
        );
        let review_duration: HistogramFamily<EndpointLabels> =
            Family::new_with_constructor(latency_histogram);
        registry.register(
            "admission_review_duration_seconds",
            "Time to answer an AdmissionReview, from body received to response built",
            review_duration.clone(),
        );
        let tls_reloads = Family::<ResultLabels, Counter>::default();
        registry.register(
            "tls_certificate_reloads",
            "Serving certificate loads from disk, by result (success or error)",
            tls_reloads.clone(),
        );
        let sent = Family::<ChannelLabels, Counter>::default();
        registry.register(
            "notifications_sent",
            "Notifications delivered, by channel",
            sent.clone(),
        );
        let failed = Family::<FailureLabels, Counter>::default();
        registry.register(
            "notifications_failed",
            "Notifications given up on, by channel and reason",
            failed.clone(),
        );
        let retried = Family::<ChannelLabels, Counter>::default();
        registry.register(
            "notification_retries",
            "Delivery attempts retried, by channel",
            retried.clone(),
        );
        let refused = Family::<ChannelLabels, Counter>::default();
        registry.register(
            "notifications_refused",
            "Notifications not sent because the destination is blocked, by channel",
            refused.clone(),
        );
        let queue_full = Family::<ChannelLabels, Counter>::default();
        registry.register(
            "notification_queue_full",
            "Notifications refused because their destination's queue was full, by channel",
            queue_full.clone(),
        );
        let queue_depth = Family::<ChannelLabels, Gauge>::default();
        registry.register(
            "notification_queue_depth",
            "Notifications waiting to be sent, by channel",
            queue_depth.clone(),
        );
        let delivery_latency: HistogramFamily<ChannelLabels> =
            Family::new_with_constructor(delivery_histogram);
        registry.register(
            "notification_delivery_duration_seconds",
            "Time from queueing a notification to its final outcome, retries included",
            delivery_latency.clone(),
        );
        let gave_up = Family::<ChannelLabels, Counter>::default();
        registry.register(
            "notifications_given_up",
            "Notifications abandoned after --max-notification-age of failures, by channel",
            gave_up.clone(),
        );
        let reconciles = Counter::default();
        registry.register("reconciles", "Canary reconciliations", reconciles.clone());
        let reconcile_errors = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "reconcile_errors",
            "Canary reconciliations that failed, by reason",
            reconcile_errors.clone(),
        );
        let leader = Gauge::default();
        registry.register(
            "leader",
            "1 while this replica holds the leader lease and dispatches",
            leader.clone(),
        );
        Metrics {
            registry: Arc::new(root),
            gave_up,
            reconciles,
            reconcile_errors,
            leader,
            canary_status,
            canary_total,
            reviews,
            review_duration,
            tls_reloads,
            sent,
            failed,
            retried,
            refused,
            queue_full,
            queue_depth,
            delivery_latency,
        }
    }

    pub fn review(&self, labels: ReviewLabels, elapsed: Duration) {
        let endpoint = labels.endpoint;
        self.reviews.get_or_create(&labels).inc();
        self.review_duration
            .get_or_create(&EndpointLabels { endpoint })
            .observe(elapsed.as_secs_f64());
    }

    pub fn tls_reload(&self, result: &'static str) {
        self.tls_reloads
            .get_or_create(&ResultLabels { result })
            .inc();
    }

    pub fn notification_sent(&self, channel: &'static str) {
        self.sent.get_or_create(&ChannelLabels { channel }).inc();
    }

    pub fn notification_failed(&self, channel: &'static str, reason: &'static str) {
        self.failed
            .get_or_create(&FailureLabels { channel, reason })
            .inc();
    }

    pub fn notification_retried(&self, channel: &'static str) {
        self.retried.get_or_create(&ChannelLabels { channel }).inc();
    }

    pub fn notification_refused(&self, channel: &'static str) {
        self.refused.get_or_create(&ChannelLabels { channel }).inc();
    }

    pub fn queue_full(&self, channel: &'static str) {
        self.queue_full
            .get_or_create(&ChannelLabels { channel })
            .inc();
    }

    pub fn queue_depth(&self, channel: &'static str, delta: i64) {
        self.queue_depth
            .get_or_create(&ChannelLabels { channel })
            .inc_by(delta);
    }

    pub fn delivery_latency(&self, channel: &'static str, elapsed: Duration) {
        self.delivery_latency
            .get_or_create(&ChannelLabels { channel })
            .observe(elapsed.as_secs_f64());
    }

    pub fn notification_given_up(&self, channel: &'static str) {
        self.gave_up.get_or_create(&ChannelLabels { channel }).inc();
    }

    pub fn reconciled(&self) {
        self.reconciles.inc();
    }

    pub fn reconcile_error(&self, reason: &'static str) {
        self.reconcile_errors
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    pub fn set_leader(&self, leader: bool) {
        self.leader.set(i64::from(leader));
    }

    /// Replaces every `flagger_canary_*` series with `statuses` (name, namespace, value):
    /// series of deleted canaries and emptied namespaces disappear.
    pub fn set_canaries(&self, statuses: &[(String, String, i64)]) {
        self.canary_status.clear();
        self.canary_total.clear();
        let mut totals: std::collections::BTreeMap<&str, i64> = Default::default();
        for (name, namespace, value) in statuses {
            self.canary_status
                .get_or_create(&CanaryLabels {
                    name: name.clone(),
                    namespace: namespace.clone(),
                })
                .set(*value);
            *totals.entry(namespace).or_default() += 1;
        }
        for (namespace, total) in totals {
            self.canary_total
                .get_or_create(&NamespaceLabels {
                    namespace: namespace.to_string(),
                })
                .set(total);
        }
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flagger_series_follow_the_canaries() {
        let m = Metrics::new();
        m.set_canaries(&[
            ("podinfo".into(), "test".into(), 2),
            ("web".into(), "test".into(), 0),
        ]);
        let text = m.encode().unwrap();
        assert!(
            text.contains(r#"flagger_canary_status{name="podinfo",namespace="test"} 2"#),
            "{text}"
        );
        assert!(
            text.contains(r#"flagger_canary_total{namespace="test"} 2"#),
            "{text}"
        );
        m.set_canaries(&[]);
        let text = m.encode().unwrap();
        assert!(
            !text.contains("flagger_canary_status{") && !text.contains("flagger_canary_total{"),
            "{text}"
        );
    }
}
