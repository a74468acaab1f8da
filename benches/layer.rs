//! Cost per span (8 fields; create, enter, exit, close) for a bare registry,
//! and the registry with `fmt::layer().json()` to a sink, with
//! tracing-opentelemetry (batch span processor, discarding exporter), and
//! with sealtrail (in-memory archive, real spool with fsync). All in one run.
//!
//! Two measures:
//! - criterion: time on the instrumented thread, in bursts of 1,024 spans
//!   with the background work drained (untimed) between bursts, so that no
//!   queue is ever full and the figure is the instrumented thread's own cost;
//! - printed after it: CPU time of the whole process (every thread) per span
//!   over 100,000 spans, background work included (for sealtrail: spooled
//!   with fsync, chained, and sealed every second and at the end).

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::Criterion;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData, SpanExporter};
use tracing::Dispatch;
use tracing_subscriber::prelude::*;

#[path = "fixtures.rs"]
mod fixtures;

const BURST: u64 = 1024;

#[derive(Debug)]
struct Discard;
impl SpanExporter for Discard {
    fn export(
        &self,
        batch: Vec<SpanData>,
    ) -> impl std::future::Future<Output = OTelSdkResult> + Send {
        black_box(batch);
        async { Ok(()) }
    }
}

fn one_span(i: u64) {
    let span = fixtures::genai_span(i);
    let _e = span.enter();
}

struct Setup {
    name: &'static str,
    dispatch: Dispatch,
    drain: Box<dyn Fn()>,
    /// Finishes the background work (sealing) so that its CPU is counted.
    seal: Box<dyn Fn()>,
    _keep: Box<dyn std::any::Any>,
}

fn setups(dir: &std::path::Path) -> Vec<Setup> {
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(Discard)
        .build();
    let tracer = provider.tracer("bench");
    let otel = Dispatch::new(
        tracing_subscriber::registry().with(tracing_opentelemetry::layer().with_tracer(tracer)),
    );
    let (audit, guard) = sealtrail::AuditLayer::builder()
        .with_archive(sealtrail::Archive::memory())
        .with_signing_key(sealtrail::keys::SigningKey::from_bytes(&[1; 32]))
        .with_spool_dir(dir.join("spool"))
        .with_writer_id("bench")
        .build()
        .expect("sealtrail layer");
    let guard = std::rc::Rc::new(guard);
    let g = guard.clone();
    let g2 = guard.clone();
    let p = provider.clone();
    vec![
        Setup {
            name: "registry",
            dispatch: Dispatch::new(tracing_subscriber::registry()),
            drain: Box::new(|| {}),
            seal: Box::new(|| {}),
            _keep: Box::new(()),
        },
        Setup {
            name: "fmt_json_sink",
            dispatch: Dispatch::new(
                tracing_subscriber::registry().with(
                    tracing_subscriber::fmt::layer()
                        .json()
                        .with_span_events(tracing_subscriber::fmt::format::FmtSpan::CLOSE)
                        .with_writer(std::io::sink),
                ),
            ),
            drain: Box::new(|| {}),
            seal: Box::new(|| {}),
            _keep: Box::new(()),
        },
        Setup {
            name: "tracing_opentelemetry_batch",
            dispatch: otel,
            drain: Box::new(move || {
                let _ = p.force_flush();
            }),
            seal: Box::new(|| {}),
            _keep: Box::new(provider),
        },
        Setup {
            name: "sealtrail",
            dispatch: Dispatch::new(tracing_subscriber::registry().with(audit)),
            // Drained = durable in the spool (the peer's drain is its export);
            // sealing runs on its own schedule (every second), as in production.
            drain: Box::new(move || {
                while g.stats().spooled < g.stats().captured {
                    std::thread::sleep(Duration::from_micros(200));
                }
            }),
            seal: Box::new(move || g2.flush().expect("seal")),
            _keep: Box::new(guard),
        },
    ]
}

fn run_bursts(s: &Setup, iters: u64) -> Duration {
    tracing::dispatcher::with_default(&s.dispatch, || {
        let mut total = Duration::ZERO;
        let mut left = iters;
        let mut i = 0;
        while left > 0 {
            let n = left.min(BURST);
            let t = Instant::now();
            for _ in 0..n {
                one_span(i);
                i += 1;
            }
            total += t.elapsed();
            (s.drain)();
            left -= n;
        }
        total
    })
}

fn cpu_seconds() -> f64 {
    let mut u = std::mem::MaybeUninit::<libc::rusage>::uninit();
    // SAFETY: getrusage fills the struct it is given.
    let u = unsafe {
        libc::getrusage(libc::RUSAGE_SELF, u.as_mut_ptr());
        u.assume_init()
    };
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    t(u.ru_utime) + t(u.ru_stime)
}

fn main() {
    // SEALTRAIL_BENCH_SPOOL_PARENT puts the spool elsewhere (e.g. a tmpfs, to
    // separate fsync cost from CPU cost).
    let dir = match std::env::var_os("SEALTRAIL_BENCH_SPOOL_PARENT") {
        Some(p) => tempfile::tempdir_in(p).unwrap(),
        None => tempfile::tempdir().unwrap(),
    };
    let setups = setups(dir.path());
    // SEALTRAIL_BENCH_PROFILE=<setup name> runs only that setup, 1,000,000
    // spans with background work, and no statistics: a target for `perf`.
    if let Ok(name) = std::env::var("SEALTRAIL_BENCH_PROFILE") {
        let s = setups
            .iter()
            .find(|s| s.name == name)
            .expect("SEALTRAIL_BENCH_PROFILE names a setup");
        let before = cpu_seconds();
        run_bursts(s, 1_000_000);
        (s.seal)();
        println!(
            "{name}: {:.0} ns CPU/span, all threads",
            (cpu_seconds() - before) / 1e6 * 1e9
        );
        return;
    }
    let mut c = Criterion::default().configure_from_args();
    {
        let mut g = c.benchmark_group("span_8_fields_instrumented_thread");
        for s in &setups {
            g.bench_function(s.name, |b| b.iter_custom(|iters| run_bursts(s, iters)));
        }
        g.finish();
    }
    c.final_summary();

    // CPU of every thread, background work included.
    const N: u64 = 100_000;
    println!("\nCPU time per span, all threads, {N} spans (bursts of {BURST}, drained):");
    let mut cpu = Vec::new();
    for s in &setups {
        run_bursts(s, 10_000); // warm up
        let before = cpu_seconds();
        let wall = run_bursts(s, N);
        (s.seal)();
        let per = (cpu_seconds() - before) / N as f64 * 1e9;
        println!(
            "  {:<30} {:>8.0} ns CPU/span   ({:>6.0} ns/span on the instrumented thread)",
            s.name,
            per,
            wall.as_nanos() as f64 / N as f64
        );
        cpu.push((s.name, per));
    }
    let otel = cpu
        .iter()
        .find(|c| c.0 == "tracing_opentelemetry_batch")
        .unwrap()
        .1;
    let ours = cpu.iter().find(|c| c.0 == "sealtrail").unwrap().1;
    println!(
        "  sealtrail / tracing-opentelemetry, all threads: {:.2}x",
        ours / otel
    );
}
