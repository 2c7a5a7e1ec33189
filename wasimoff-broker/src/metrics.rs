//! Prometheus metrics of the broker (`/metrics`), on prometheus-client.

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

/// Labels of the completion counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct Outcome {
    /// `ok` (a result, whatever its exit status), or the error's Connect code.
    pub(crate) outcome: String,
}

/// Every metric the broker exports.
#[derive(Debug)]
pub(crate) struct Metrics {
    pub(crate) registry: Registry,
    pub(crate) queued: Gauge,
    pub(crate) running: Gauge,
    pub(crate) held_bytes: Gauge,
    pub(crate) completed: Family<Outcome, Counter>,
    pub(crate) latency: Histogram,
    pub(crate) providers: Gauge,
    pub(crate) workers: Gauge,
    pub(crate) retries: Counter,
}

impl Metrics {
    pub(crate) fn new() -> Self {
        let mut registry = Registry::with_prefix("wasimoff");
        let queued = Gauge::default();
        let running = Gauge::default();
        let held_bytes = Gauge::default();
        let completed = Family::<Outcome, Counter>::default();
        // 100 µs .. ~ 400 s
        let latency = Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
            1e-4, 3.0, 14,
        ));
        let providers = Gauge::default();
        let workers = Gauge::default();
        let retries = Counter::default();
        registry.register(
            "tasks_queued",
            "Tasks waiting for a provider",
            queued.clone(),
        );
        registry.register(
            "tasks_running",
            "Tasks running on providers",
            running.clone(),
        );
        registry.register(
            "tasks_held_bytes",
            "Bytes held by unanswered tasks (bounded by max_queue_bytes)",
            held_bytes.clone(),
        );
        registry.register(
            "tasks_completed",
            "Tasks finished, by outcome",
            completed.clone(),
        );
        registry.register(
            "task_duration_seconds",
            "Time from submission to result",
            latency.clone(),
        );
        registry.register("providers", "Connected providers", providers.clone());
        registry.register(
            "workers",
            "Provider slots (sum of concurrency)",
            workers.clone(),
        );
        registry.register(
            "task_retries",
            "Attempts repeated after a provider failure",
            retries.clone(),
        );
        Metrics {
            registry,
            queued,
            running,
            held_bytes,
            completed,
            latency,
            providers,
            workers,
            retries,
        }
    }

    pub(crate) fn complete(&self, outcome: &str, seconds: f64) {
        self.completed
            .get_or_create(&Outcome {
                outcome: outcome.to_owned(),
            })
            .inc();
        self.latency.observe(seconds);
    }

    /// The Prometheus text exposition.
    pub(crate) fn encode(&self) -> String {
        let mut text = String::new();
        if prometheus_client::encoding::text::encode(&mut text, &self.registry).is_err() {
            text.clear();
        }
        text
    }
}
