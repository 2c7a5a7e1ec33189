//! Prometheus metrics of the broker (`/metrics`), on prometheus-client, which encodes the
//! OpenMetrics text format (ending in `# EOF`): served as [`CONTENT_TYPE`].

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram, info::Info},
    registry::Registry,
};

/// The content type of what [`Metrics::encode`] writes (OpenMetrics 1.0.0 text).
pub(crate) const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Providers that get series of their own at most; tasks of others count in the totals only.
/// A provider's series are removed when it leaves, so this bounds the label cardinality.
pub(crate) const MAX_PROVIDER_SERIES: usize = 256;

/// Labels of the per-provider counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ProviderLabels {
    /// The broker's id of the connection (`provider-<n>`), unique per connection.
    pub(crate) id: String,
    /// The name the provider gave (`?id=`), at most 128 characters.
    pub(crate) name: String,
    /// `done`: the provider returned a result; `failed`: an attempt failed through the
    /// provider (lost, wedged, an error or malformed answer).
    pub(crate) result: &'static str,
}

/// Labels of the build info.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
}

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
    pub(crate) queue_wait: Histogram,
    pub(crate) run_time: Histogram,
    pub(crate) provider_tasks: Family<ProviderLabels, Counter>,
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
        let queue_wait = Histogram::new(
            prometheus_client::metrics::histogram::exponential_buckets(1e-4, 3.0, 14),
        );
        let run_time = Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
            1e-4, 3.0, 14,
        ));
        let provider_tasks = Family::<ProviderLabels, Counter>::default();
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
        registry.register(
            "task_queue_wait_seconds",
            "Time from submission to the start of a task's last attempt (or its end, if it never started)",
            queue_wait.clone(),
        );
        registry.register(
            "task_run_seconds",
            "Time the attempt that produced a task's result ran on its provider (sent to answered)",
            run_time.clone(),
        );
        registry.register(
            "provider_tasks",
            "Tasks by connected provider: done (a result) or failed (the provider's fault); \
             series are removed when the provider leaves",
            provider_tasks.clone(),
        );
        registry.register(
            "build",
            "The broker's version",
            Info::new(BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
            }),
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
            queue_wait,
            run_time,
            provider_tasks,
        }
    }

    /// Counts a finished task: its outcome, its time from submission to the answer, its queue
    /// wait and (with a provider's result) its run time.
    pub(crate) fn complete(&self, outcome: &str, seconds: f64, waited: f64, ran: Option<f64>) {
        self.completed
            .get_or_create(&Outcome {
                outcome: outcome.to_owned(),
            })
            .inc();
        self.latency.observe(seconds);
        self.queue_wait.observe(waited);
        if let Some(ran) = ran {
            self.run_time.observe(ran);
        }
    }

    /// Counts a task a provider finished (`done`) or failed.
    pub(crate) fn provider_task(&self, id: &str, name: &str, result: &'static str) {
        self.provider_tasks
            .get_or_create(&ProviderLabels {
                id: id.to_owned(),
                name: name.to_owned(),
                result,
            })
            .inc();
    }

    /// Removes a provider's series (it left).
    pub(crate) fn forget_provider(&self, id: &str, name: &str) {
        for result in ["done", "failed"] {
            self.provider_tasks.remove(&ProviderLabels {
                id: id.to_owned(),
                name: name.to_owned(),
                result,
            });
        }
    }

    /// The OpenMetrics text exposition ([`CONTENT_TYPE`]).
    pub(crate) fn encode(&self) -> String {
        let mut text = String::new();
        if prometheus_client::encoding::text::encode(&mut text, &self.registry).is_err() {
            text.clear();
        }
        text
    }
}
