//! The node's Prometheus metrics, kept and encoded with `prometheus-client` (the
//! Prometheus project's Rust client): the counters and gauges the node has always counted,
//! read at each scrape, and the histograms a performance engineer reaches for first.
//!
//! | histogram | labels | observed |
//! |---|---|---|
//! | `roster_request_duration_seconds` | `event`, `transport` (`ws`, `socketio`, `http`) | a request from decoding to its ack |
//! | `roster_component_call_duration_seconds` | `component` | one component call, waiting for an instance included |
//! | `roster_store_round_trip_seconds` | | one store execution (a Redis round trip; the embedded store in memory) |
//! | `roster_store_batch_size` | | batches in one store execution |
//! | `roster_fanout_delay_seconds` | `transport` | an event's creation on this node to its write to a `/ws` socket, or to its place on the Socket.IO engine's queue |
//!
//! The histograms are process-wide (one node per process). A label set's handle is made
//! at its first observation and kept, so an observation is a short scan of a fixed table
//! and one short write lock, never an allocation or a label hash. `docs/benchmarks.md` measures their cost.

use std::sync::{LazyLock, OnceLock};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// The transport a request or an event went over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// The plain WebSocket at `/ws`.
    Ws,
    /// Socket.IO v4.
    SocketIo,
    /// The REST API under `/v1`.
    Http,
}

impl Transport {
    const ALL: [Transport; 3] = [Transport::Ws, Transport::SocketIo, Transport::Http];

    fn as_str(self) -> &'static str {
        match self {
            Transport::Ws => "ws",
            Transport::SocketIo => "socketio",
            Transport::Http => "http",
        }
    }
}

type Labels = Vec<(&'static str, &'static str)>;
type HistogramFamily = Family<Labels, Histogram, fn() -> Histogram>;

/// Durations from 50 µs to ~3.3 s.
fn latency() -> Histogram {
    Histogram::new(exponential_buckets(0.000_05, 2.0, 17))
}

/// Durations from 5 µs to ~0.33 s.
fn short_latency() -> Histogram {
    Histogram::new(exponential_buckets(0.000_005, 2.0, 17))
}

/// Batches per execution: 1 to 1,024 (a reaper tick sends many).
fn batch_sizes() -> Histogram {
    Histogram::new(exponential_buckets(1.0, 2.0, 11))
}

/// The `event` label of an operation: its socket event, or, for one HTTP alone serves,
/// its component export (`tick`, `history`).
pub fn operation_label(op: &crate::protocol::ops::Operation) -> &'static str {
    op.event.unwrap_or(op.export)
}

/// The histograms.
pub struct Metrics {
    requests: HistogramFamily,
    /// Per event: its histogram per transport (in [`Transport::ALL`] order), made at its
    /// first observation (so the exposition lists only what happened).
    request_handles: Vec<(&'static str, [OnceLock<Histogram>; 3])>,
    /// Requests whose event is not one of the protocol's.
    unknown_requests: [OnceLock<Histogram>; 3],
    components: HistogramFamily,
    component_handles: Vec<(&'static str, Histogram)>,
    store_round_trip: Histogram,
    store_batch_size: Histogram,
    fanout: HistogramFamily,
    fanout_handles: [OnceLock<Histogram>; 3],
}

/// The process's metrics.
pub static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

impl Metrics {
    fn new() -> Metrics {
        let requests: HistogramFamily = Family::new_with_constructor(latency);
        let request_handles = crate::protocol::ops::OPERATIONS
            .iter()
            .map(|op| (operation_label(op), Default::default()))
            .collect();
        let unknown_requests = Default::default();
        let components: HistogramFamily = Family::new_with_constructor(short_latency);
        let component_handles = ["presence", "metadata", "reaper", "policy"]
            .into_iter()
            .map(|slot| {
                (
                    slot,
                    components.get_or_create(&vec![("component", slot)]).clone(),
                )
            })
            .collect();
        let fanout: HistogramFamily = Family::new_with_constructor(latency);
        let fanout_handles = Default::default();
        Metrics {
            requests,
            request_handles,
            unknown_requests,
            components,
            component_handles,
            store_round_trip: short_latency(),
            store_batch_size: batch_sizes(),
            fanout,
            fanout_handles,
        }
    }

    /// A request for `event` over `transport` that took `took`.
    pub fn request(&self, transport: Transport, event: &str, took: Duration) {
        let at = Transport::ALL
            .iter()
            .position(|t| *t == transport)
            .unwrap_or_default();
        let (label, histograms) = self
            .request_handles
            .iter()
            .find(|(known, _)| *known == event)
            .map_or(
                ("unknown", &self.unknown_requests),
                |(label, histograms)| (*label, histograms),
            );
        histograms[at]
            .get_or_init(|| {
                self.requests
                    .get_or_create(&vec![("event", label), ("transport", transport.as_str())])
                    .clone()
            })
            .observe(took.as_secs_f64());
    }

    /// A call of the component in `slot` that took `took`.
    pub fn component_call(&self, slot: &str, took: Duration) {
        if let Some((_, histogram)) = self.component_handles.iter().find(|(s, _)| *s == slot) {
            histogram.observe(took.as_secs_f64());
        }
    }

    /// A store execution of `batches` batches that took `took`.
    pub fn store_execution(&self, batches: usize, took: Duration) {
        self.store_round_trip.observe(took.as_secs_f64());
        self.store_batch_size.observe(batches as f64);
    }

    /// An event written to a socket of `transport`, `waited` after its creation.
    pub fn fanout(&self, transport: Transport, waited: Duration) {
        let at = Transport::ALL
            .iter()
            .position(|t| *t == transport)
            .unwrap_or_default();
        self.fanout_handles[at]
            .get_or_init(|| {
                self.fanout
                    .get_or_create(&vec![("transport", transport.as_str())])
                    .clone()
            })
            .observe(waited.as_secs_f64());
    }
}

/// A value read at scrape time: name (without `_total` for counters), help, labels.
pub enum Sample {
    /// A counter.
    Counter(&'static str, &'static str, Labels, u64),
    /// A gauge.
    Gauge(&'static str, &'static str, Labels, i64),
}

/// The values read at one scrape, encoded beside the histograms.
#[derive(Debug)]
struct Snapshot(Vec<Sample>);

impl std::fmt::Debug for Sample {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Sample::Counter(name, ..) | Sample::Gauge(name, ..) => f.write_str(name),
        }
    }
}

impl Collector for Snapshot {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        // Samples of one name are adjacent (one family per name, one line per label set).
        let mut at = 0;
        while let Some(first) = self.0.get(at) {
            let (name, help) = match first {
                Sample::Counter(name, help, ..) | Sample::Gauge(name, help, ..) => (*name, *help),
            };
            let family: Vec<&Sample> = self.0[at..]
                .iter()
                .take_while(|sample| match sample {
                    Sample::Counter(n, ..) | Sample::Gauge(n, ..) => *n == name,
                })
                .collect();
            at += family.len();
            let metric_type = match first {
                Sample::Counter(..) => ConstCounter::new(0u64).metric_type(),
                Sample::Gauge(..) => ConstGauge::new(0i64).metric_type(),
            };
            // The encoder ends every help text with a period of its own.
            let help = help.trim_end_matches('.');
            let mut metric = encoder.encode_descriptor(name, help, None, metric_type)?;
            if let [Sample::Counter(_, _, labels, value)] = family.as_slice()
                && labels.is_empty()
            {
                ConstCounter::new(*value).encode(metric)?;
                continue;
            }
            if let [Sample::Gauge(_, _, labels, value)] = family.as_slice()
                && labels.is_empty()
            {
                ConstGauge::new(*value).encode(metric)?;
                continue;
            }
            for sample in family {
                match sample {
                    Sample::Counter(_, _, labels, value) => {
                        ConstCounter::new(*value).encode(metric.encode_family(labels)?)?;
                    }
                    Sample::Gauge(_, _, labels, value) => {
                        ConstGauge::new(*value).encode(metric.encode_family(labels)?)?;
                    }
                }
            }
        }
        Ok(())
    }
}

/// The text exposition (OpenMetrics) of `samples` and the histograms.
pub fn encode(samples: Vec<Sample>) -> Result<String, std::fmt::Error> {
    let metrics = &*METRICS;
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Snapshot(samples)));
    registry.register(
        "roster_request_duration_seconds",
        "Requests from decoding to their ack, by event and transport",
        metrics.requests.clone(),
    );
    registry.register(
        "roster_component_call_duration_seconds",
        "Component calls, waiting for an instance included, by component",
        metrics.components.clone(),
    );
    registry.register(
        "roster_store_round_trip_seconds",
        "Store executions (a Redis round trip; the embedded store in memory)",
        metrics.store_round_trip.clone(),
    );
    registry.register(
        "roster_store_batch_size",
        "Atomic batches per store execution",
        metrics.store_batch_size.clone(),
    );
    registry.register(
        "roster_fanout_delay_seconds",
        "Events from their creation on this node to their write to a /ws socket or to the Socket.IO engine's queue, by transport",
        metrics.fanout.clone(),
    );
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &registry)?;
    Ok(out)
}
