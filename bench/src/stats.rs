//! Latency histograms and the server's resource use, read from `/proc`.

use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

/// Latencies in microseconds, 3 significant figures, up to a minute.
#[expect(
    clippy::expect_used,
    reason = "constant bounds that hdrhistogram accepts"
)]
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

/// Records microsecond samples into a histogram, clamping into its range.
pub fn record(histogram: &mut Histogram<u64>, micros: u64) {
    let _ = histogram.record(micros.clamp(1, 60_000_000));
}

/// `p50 / p95 / p99 / max` in milliseconds.
pub fn summary(histogram: &Histogram<u64>) -> String {
    if histogram.is_empty() {
        return "-".into();
    }
    let ms = |q: f64| histogram.value_at_quantile(q) as f64 / 1000.0;
    format!(
        "p50 {:.2} / p95 {:.2} / p99 {:.2} / max {:.2} ms",
        ms(0.50),
        ms(0.95),
        ms(0.99),
        histogram.max() as f64 / 1000.0
    )
}

/// The p99 in milliseconds.
pub fn p99_ms(histogram: &Histogram<u64>) -> f64 {
    if histogram.is_empty() {
        return 0.0;
    }
    histogram.value_at_quantile(0.99) as f64 / 1000.0
}

/// A reading of a process's memory and CPU time.
#[derive(Debug, Clone, Copy)]
pub struct ProcSample {
    /// Resident set size, KiB.
    pub rss_kib: u64,
    /// User + system CPU time, clock ticks.
    pub cpu_ticks: u64,
    /// When it was read.
    pub at: Instant,
}

/// Clock ticks per second (`getconf CLK_TCK`; 100 on Linux x86_64 and aarch64).
const CLK_TCK: f64 = 100.0;

/// Reads `/proc/<pid>`: none if the process is gone.
pub fn sample(pid: u32) -> Option<ProcSample> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kib = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let after = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(ProcSample {
        rss_kib,
        cpu_ticks: utime + stime,
        at: Instant::now(),
    })
}

/// CPU use between two samples, in percent of one core.
pub fn cpu_percent(from: &ProcSample, to: &ProcSample) -> f64 {
    let seconds = to.at.duration_since(from.at).as_secs_f64().max(1e-9);
    (to.cpu_ticks.saturating_sub(from.cpu_ticks) as f64 / CLK_TCK) / seconds * 100.0
}

/// CPU time (user + system) used between two samples, in seconds.
pub fn cpu_seconds(from: &ProcSample, to: &ProcSample) -> f64 {
    to.cpu_ticks.saturating_sub(from.cpu_ticks) as f64 / CLK_TCK
}

/// Microseconds of CPU per operation: `cpu` seconds over `operations`.
pub fn micros_per(cpu: Option<f64>, operations: u64) -> Option<f64> {
    cpu.filter(|_| operations > 0)
        .map(|seconds| seconds * 1e6 / operations as f64)
}

/// Microseconds in a duration, saturating.
pub fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}
