//! `/metrics`: the collector's counters in the Prometheus text format.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use sealtrail::pipeline::LATENCY_BUCKETS;

use crate::pipeline::Metrics;

fn g(a: &AtomicU64) -> u64 {
    a.load(Ordering::Relaxed)
}

fn one(out: &mut String, name: &str, kind: &str, help: &str, v: u64) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}"
    );
}

/// A counter with one series per reason.
fn by_reason(out: &mut String, name: &str, help: &str, series: &[(&str, &AtomicU64)]) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
    for (reason, v) in series {
        let _ = writeln!(
            out,
            "{name}{{reason=\"{reason}\"}} {}",
            v.load(Ordering::Relaxed)
        );
    }
}

/// Renders every metric.
pub(crate) fn render(m: &Metrics) -> String {
    let mut out = String::new();
    let p = &m.sealer;
    one(
        &mut out,
        "sealtrail_spans_received_total",
        "counter",
        "Spans received over OTLP.",
        g(&m.spans_received),
    );
    one(
        &mut out,
        "sealtrail_log_records_received_total",
        "counter",
        "Log records received over OTLP.",
        g(&m.logs_received),
    );
    let r = &m.rejected;
    by_reason(
        &mut out,
        "sealtrail_requests_rejected_total",
        "Requests refused whole, nothing taken, by reason.",
        &[
            ("decode", &r.decode),
            ("content_type", &r.content_type),
            ("too_large", &r.too_large),
            ("unauthenticated", &r.unauthenticated),
            ("backlog", &r.backlog),
            ("spool", &r.spool),
            ("shutting_down", &r.shutting_down),
            ("busy", &r.busy),
        ],
    );
    by_reason(
        &mut out,
        "sealtrail_records_rejected_total",
        "Spans and log records not taken, by reason: invalid (rejected alone, OTLP partial success), or in a request refused as retryable.",
        &[
            ("invalid", &r.invalid),
            ("backlog", &r.records_backlog),
            ("spool", &r.records_spool),
            ("shutting_down", &r.records_shutting_down),
            ("busy", &r.records_busy),
        ],
    );
    one(
        &mut out,
        "sealtrail_duplicates_total",
        "counter",
        "Records received again (client retries): acknowledged, archived once.",
        g(&m.duplicates),
    );
    one(
        &mut out,
        "sealtrail_records_held",
        "gauge",
        "Records spooled whose session waits for an ancestor span.",
        g(&m.held),
    );
    let _ = writeln!(
        out,
        "# HELP sealtrail_records_released_total Held records released, by what resolved their session.\n# TYPE sealtrail_records_released_total counter\nsealtrail_records_released_total{{by=\"ancestor\"}} {}\nsealtrail_records_released_total{{by=\"timeout\"}} {}\nsealtrail_records_released_total{{by=\"shutdown\"}} {}",
        g(&m.released_by_ancestor),
        g(&m.released_by_timeout),
        g(&m.released_at_shutdown)
    );
    one(
        &mut out,
        "sealtrail_records_spooled_total",
        "counter",
        "Records made durable in the spool.",
        g(&p.spooled),
    );
    one(
        &mut out,
        "sealtrail_records_sealed_total",
        "counter",
        "Records sealed into the archive.",
        g(&p.sealed),
    );
    one(
        &mut out,
        "sealtrail_batches_total",
        "counter",
        "Seals written (heartbeats included).",
        g(&p.seals),
    );
    one(
        &mut out,
        "sealtrail_store_errors_total",
        "counter",
        "Failed seal attempts (retried with backoff).",
        g(&p.store_errors),
    );
    one(
        &mut out,
        "sealtrail_spool_errors_total",
        "counter",
        "Failed spool writes.",
        g(&p.spool_errors),
    );
    one(
        &mut out,
        "sealtrail_records_refused_total",
        "counter",
        "Records the chain refused (not archivable as they are; none expected).",
        g(&p.refused),
    );
    one(
        &mut out,
        "sealtrail_spool_bytes",
        "gauge",
        "Bytes in the spool.",
        g(&p.spool_bytes),
    );
    let h = &p.seal_latency;
    let name = "sealtrail_seal_latency_seconds";
    let _ = writeln!(
        out,
        "# HELP {name} From a batch's oldest record being durable in the spool to its seal being written.\n# TYPE {name} histogram"
    );
    let mut cum = 0;
    for (i, b) in LATENCY_BUCKETS.iter().enumerate() {
        cum += g(&h.buckets[i]);
        let _ = writeln!(out, "{name}_bucket{{le=\"{b}\"}} {cum}");
    }
    cum += g(&h.buckets[LATENCY_BUCKETS.len()]);
    let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {cum}");
    let _ = writeln!(out, "{name}_sum {}", g(&h.sum_us) as f64 / 1e6);
    let _ = writeln!(out, "{name}_count {}", g(&h.count));
    out
}
