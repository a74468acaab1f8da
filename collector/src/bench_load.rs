//! `sealtrail bench-load`: a load generator for the collector.
//!
//! Starts `sealtrail serve` (this executable) in a scratch directory, sends
//! it realistic GenAI spans (10 attributes, about 1 KiB each) over OTLP/gRPC
//! and then over OTLP/HTTP from concurrent clients, and reports per protocol:
//! spans acknowledged per second (acknowledged = durable in the spool), the
//! collector's CPU time per span (from /proc, the generator's own CPU
//! excluded), spans/s per collector CPU-second, and the collector's peak
//! memory. Requests are encoded before the clock starts, so the generator
//! spends its time sending.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, Bytes};
use clap::Args;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, ArrayValue, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{span, ResourceSpans, ScopeSpans, Span, Status};
use prost::Message;

#[derive(Debug, Args)]
pub(crate) struct BenchLoadArgs {
    /// Spans to send per protocol.
    #[arg(long, default_value_t = 200_000)]
    spans: usize,
    /// Spans per export request.
    #[arg(long, default_value_t = 500)]
    batch: usize,
    /// Concurrent clients (connections).
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Protocols to measure: grpc, http, or both.
    #[arg(long, default_value = "both", value_parser = ["grpc", "http", "both"])]
    protocol: String,
    /// Scratch directory for the collector's key, spool and archive
    /// (default: a new directory under the current one, removed afterwards).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Archive URL for the collector (default: DIR/data).
    #[arg(long)]
    store: Option<String>,
    /// Verify the archive afterwards (reads it all back).
    #[arg(long)]
    verify: bool,
    /// Make the collector hold spans: each trace has 9 `chat` children without
    /// a session and one `invoke_agent` parent with it, sent this many spans
    /// after its children (as the OpenAI GenAI instrumentation does, where the
    /// agent span ends last). 0: every span carries its session.
    #[arg(long, default_value_t = 0)]
    held_lag: u64,
    /// The collector's zstd level (its --zstd-level).
    #[arg(long, default_value_t = sealtrail::writer::DEFAULT_ZSTD_LEVEL)]
    zstd_level: i32,
}

/// One span as the OpenTelemetry GenAI instrumentation sends it: 10
/// attributes, about 1 KiB encoded.
fn genai_span(n: u64) -> Span {
    let s = |k: &str, v: String| KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(v)),
        }),
        ..Default::default()
    };
    let i = |k: &str, v: i64| KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::IntValue(v)),
        }),
        ..Default::default()
    };
    let content = format!(
        "[{{\"role\":\"assistant\",\"parts\":[{{\"type\":\"text\",\"content\":\"Order A-{n} was shipped on Tuesday by ground freight and should arrive within three business days. The tracking number is 1Z999AA1{n:010}. If the parcel does not arrive by Friday, the customer may request a replacement or a refund under policy R-7, which the claims team reviews within two working days. Refunds are paid to the original payment method; store credit is offered as an alternative, and the customer is told both options in writing.\"}}],\"finish_reason\":\"stop\"}}]"
    );
    let start = 1_700_000_000_000_000_000 + n * 1_000_000;
    Span {
        trace_id: (u128::from(n) << 64 | 0x5ea1).to_be_bytes().to_vec(),
        span_id: (n + 1).to_be_bytes().to_vec(),
        parent_span_id: Vec::new(),
        name: "chat gpt-4o".into(),
        kind: span::SpanKind::Client as i32,
        start_time_unix_nano: start,
        end_time_unix_nano: start + 850_000_000,
        attributes: vec![
            s("gen_ai.operation.name", "chat".into()),
            s("gen_ai.provider.name", "openai".into()),
            s("gen_ai.request.model", "gpt-4o".into()),
            s("gen_ai.response.model", "gpt-4o-2024-08-06".into()),
            s("gen_ai.response.id", format!("chatcmpl-{n:024}")),
            s("gen_ai.conversation.id", format!("conv-{:04}", n % 1000)),
            i("gen_ai.usage.input_tokens", 1200 + (n % 100) as i64),
            i("gen_ai.usage.output_tokens", 80 + (n % 20) as i64),
            KeyValue {
                key: "gen_ai.response.finish_reasons".into(),
                value: Some(AnyValue {
                    value: Some(any_value::Value::ArrayValue(ArrayValue {
                        values: vec![AnyValue {
                            value: Some(any_value::Value::StringValue("stop".into())),
                        }],
                    })),
                }),
                ..Default::default()
            },
            s("gen_ai.output.messages", content),
        ],
        status: Some(Status::default()),
        ..Default::default()
    }
}

/// Span `n` of the stream; with `lag` > 0, shaped into traces of 9 children
/// without a session and a parent that names it, sent `lag` spans later.
fn shaped(n: u64, lag: u64) -> Span {
    if lag == 0 {
        return genai_span(n);
    }
    let trace = |g: u64| (u128::from(g) << 64 | 0x401d).to_be_bytes().to_vec();
    let parent = |g: u64| ((1u64 << 63) | g).to_be_bytes().to_vec();
    let (g, r) = (n / 10, n % 10);
    let mut s = genai_span(n);
    if r < 9 {
        s.trace_id = trace(g);
        s.parent_span_id = parent(g);
        s.attributes.retain(|kv| kv.key != "gen_ai.conversation.id");
    } else if let Some(t) = g.checked_sub(lag.div_ceil(10)) {
        s.trace_id = trace(t);
        s.span_id = parent(t);
        s.name = "invoke_agent claims".into();
        s.attributes = vec![
            KeyValue {
                key: "gen_ai.operation.name".into(),
                value: Some(AnyValue {
                    value: Some(any_value::Value::StringValue("invoke_agent".into())),
                }),
                ..Default::default()
            },
            KeyValue {
                key: "gen_ai.conversation.id".into(),
                value: Some(AnyValue {
                    value: Some(any_value::Value::StringValue(format!("conv-{t:08}"))),
                }),
                ..Default::default()
            },
        ];
    }
    s
}

/// How many of the first `sent` spans [`shaped`] by `lag` are children whose
/// parent comes at or after `sent`.
fn never_released(sent: u64, lag: u64) -> u64 {
    if lag == 0 {
        return 0;
    }
    (0..sent)
        .filter(|n| n % 10 < 9 && (n / 10 + lag.div_ceil(10)) * 10 + 9 >= sent)
        .count() as u64
}

fn requests(first: u64, spans: usize, batch: usize, lag: u64) -> Vec<Bytes> {
    let mut out = Vec::new();
    let mut n = first;
    let end = first + spans as u64;
    while n < end {
        let k = (end - n).min(batch as u64);
        let req = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![KeyValue {
                        key: "service.name".into(),
                        value: Some(AnyValue {
                            value: Some(any_value::Value::StringValue("claims-agent".into())),
                        }),
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    spans: (n..n + k).map(|n| shaped(n, lag)).collect(),
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        out.push(Bytes::from(req.encode_to_vec()));
        n += k;
    }
    out
}

/// Sends pre-encoded protobuf bytes as a gRPC message.
#[derive(Clone, Copy, Debug, Default)]
struct RawCodec;

#[derive(Debug)]
struct RawEncoder;

#[derive(Debug)]
struct RawDecoder;

impl tonic::codec::Encoder for RawEncoder {
    type Item = Bytes;
    type Error = tonic::Status;
    fn encode(
        &mut self,
        item: Bytes,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        dst.put(item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawDecoder {
    type Item = ();
    type Error = tonic::Status;
    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<()>, tonic::Status> {
        src.advance(src.remaining());
        Ok(Some(()))
    }
}

impl tonic::codec::Codec for RawCodec {
    type Encode = Bytes;
    type Decode = ();
    type Encoder = RawEncoder;
    type Decoder = RawDecoder;
    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }
    fn decoder(&mut self) -> RawDecoder {
        RawDecoder
    }
}

struct Collector {
    child: Child,
    grpc: String,
    http: String,
}

impl Collector {
    fn start(dir: &Path, store: &str, zstd_level: i32) -> Result<Collector, String> {
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let mut child = Command::new(exe)
            .args([
                "serve",
                "--signing-key",
                "bench.key",
                "--store",
                store,
                "--spool-dir",
                "spool",
                "--otlp-grpc",
                "127.0.0.1:0",
                "--otlp-http",
                "127.0.0.1:0",
                "--max-body",
                "64MiB",
                "--zstd-level",
                &zstd_level.to_string(),
            ])
            .current_dir(dir)
            .env("SEALTRAIL_LOG", "info")
            .env("SEALTRAIL_LOG_FORMAT", "text")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start the collector: {e}"))?;
        let stderr = child.stderr.take().ok_or("no stderr")?;
        let mut lines = BufReader::new(stderr).lines();
        let line = loop {
            match lines.next() {
                Some(Ok(l)) if l.contains(" listening ") => break l,
                Some(Ok(l)) => eprintln!("collector: {l}"),
                _ => return Err("the collector stopped during start-up".into()),
            }
        };
        std::thread::spawn(move || {
            for l in lines.map_while(Result::ok) {
                if l.contains("ERROR") || l.contains("WARN") {
                    eprintln!("collector: {l}");
                }
            }
        });
        let field = |name: &str| {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(&format!("{name}=")))
                .map(str::to_owned)
                .ok_or_else(|| format!("no {name}= in {line:?}"))
        };
        Ok(Collector {
            grpc: field("grpc")?,
            http: field("http")?,
            child,
        })
    }

    /// User plus system CPU time of the collector so far.
    fn cpu(&self) -> Duration {
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap_or_default();
        // Fields after the parenthesised command name; utime and stime are 14 and 15.
        let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
        let f: Vec<u64> = rest
            .split_whitespace()
            .map(|x| x.parse().unwrap_or(0))
            .collect();
        let ticks = f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0);
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
        Duration::from_nanos(ticks * 1_000_000_000 / hz)
    }

    /// Peak resident memory (VmHWM), bytes.
    fn peak_rss(&self) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    }

    fn stop(mut self) -> Result<Duration, String> {
        let t = Instant::now();
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let s = self.child.wait().map_err(|e| e.to_string())?;
        if !s.success() {
            return Err(format!("the collector exited with {s}"));
        }
        Ok(t.elapsed())
    }
}

struct Phase {
    name: &'static str,
    spans: usize,
    wall: Duration,
    cpu: Duration,
}

async fn send_grpc(addr: &str, reqs: Vec<Bytes>, concurrency: usize) -> Result<(), String> {
    let ch = tonic::transport::Endpoint::new(format!("http://{addr}"))
        .map_err(|e| e.to_string())?
        .connect()
        .await
        .map_err(|e| e.to_string())?;
    let queue = Arc::new(std::sync::Mutex::new(reqs));
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let q = queue.clone();
        let mut g = tonic::client::Grpc::new(ch.clone()).max_encoding_message_size(64 << 20);
        tasks.push(tokio::spawn(async move {
            loop {
                let Some(body) = q.lock().map_err(|e| e.to_string())?.pop() else {
                    return Ok::<(), String>(());
                };
                g.ready().await.map_err(|e| e.to_string())?;
                g.unary(
                    tonic::Request::new(body),
                    http::uri::PathAndQuery::from_static(
                        "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
                    ),
                    RawCodec,
                )
                .await
                .map_err(|e| format!("gRPC export failed: {e}"))?;
            }
        }));
    }
    for t in tasks {
        t.await.map_err(|e| e.to_string())??;
    }
    Ok(())
}

async fn send_http(addr: &str, reqs: Vec<Bytes>, concurrency: usize) -> Result<(), String> {
    let url = format!("http://{addr}/v1/traces");
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .build()
        .map_err(|e| e.to_string())?;
    let queue = Arc::new(std::sync::Mutex::new(reqs));
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let q = queue.clone();
        let client = client.clone();
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                let Some(body) = q.lock().map_err(|e| e.to_string())?.pop() else {
                    return Ok::<(), String>(());
                };
                let r = client
                    .post(&url)
                    .header("content-type", "application/x-protobuf")
                    .body(body)
                    .send()
                    .await
                    .map_err(|e| e.to_string())?;
                if !r.status().is_success() {
                    return Err(format!("HTTP export failed: {}", r.status()));
                }
                r.bytes().await.map_err(|e| e.to_string())?;
            }
        }));
    }
    for t in tasks {
        t.await.map_err(|e| e.to_string())??;
    }
    Ok(())
}

/// The work the archive format requires for the records of a run, timed on
/// one thread over its batch objects: the SHA-256 hashing (each record's
/// hash, the Merkle tree, each object's digest) and compressing each batch
/// again at the run's zstd level.
struct FormatWork {
    records: usize,
    /// Uncompressed batch bytes.
    bytes: u64,
    sha: Duration,
    zstd: Duration,
}

fn format_work(root: &Path, level: i32) -> Result<FormatWork, String> {
    let mut w = FormatWork {
        records: 0,
        bytes: 0,
        sha: Duration::ZERO,
        zstd: Duration::ZERO,
    };
    let writers = root.join("v1/writers");
    let Ok(dirs) = std::fs::read_dir(&writers) else {
        return Ok(w);
    };
    for d in dirs.filter_map(Result::ok) {
        let Ok(batches) = std::fs::read_dir(d.path().join("batches")) else {
            continue;
        };
        for b in batches.filter_map(Result::ok) {
            let path = b.path();
            let err = |e: std::io::Error| format!("{}: {e}", path.display());
            let content =
                zstd::decode_all(std::fs::File::open(&path).map_err(err)?).map_err(err)?;
            let t = Instant::now();
            let packed = zstd::bulk::compress(&content, level).map_err(err)?;
            w.zstd += t.elapsed();
            // The records' canonical bytes, found before the clock starts.
            let records: Vec<&[u8]> = content
                .split(|c| *c == b'\n')
                .filter(|l| l.len() > sealtrail::chain::RECORD_OFFSET)
                .map(|l| &l[sealtrail::chain::RECORD_OFFSET..l.len() - 1])
                .collect();
            // Hashed side by side (the floor: the collector hashes runs of
            // up to 64 records of distinct sessions so).
            let t = Instant::now();
            let mut digests = vec![[0u8; 32]; records.len()];
            sealtrail::digest::record_hashes(&records, &mut digests);
            let hashes: Vec<sealtrail::Digest> =
                digests.into_iter().map(sealtrail::Digest).collect();
            std::hint::black_box((
                sealtrail::merkle::root(&hashes),
                sealtrail::Digest::sha256(&packed),
            ));
            w.sha += t.elapsed();
            w.records += hashes.len();
            w.bytes += content.len() as u64;
        }
    }
    Ok(w)
}

/// Bytes in the files under `dir`.
fn tree_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => tree_bytes(&e.path()),
            _ => e.metadata().map_or(0, |m| m.len()),
        })
        .sum()
}

pub(crate) fn run(a: &BenchLoadArgs) -> ExitCode {
    if a.spans == 0 || a.batch == 0 || a.concurrency == 0 {
        eprintln!("bench-load: --spans, --batch and --concurrency must be at least 1");
        return ExitCode::from(2);
    }
    match bench(a) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench-load: {e}");
            ExitCode::from(2)
        }
    }
}

fn bench(a: &BenchLoadArgs) -> Result<(), String> {
    let (dir, remove) = match &a.dir {
        Some(d) => (d.clone(), false),
        None => (
            std::env::current_dir()
                .map_err(|e| e.to_string())?
                .join(format!("sealtrail-bench-{}", std::process::id())),
            true,
        ),
    };
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    if !dir.join("bench.key").exists() {
        let key = sealtrail::keys::generate().map_err(|e| e.to_string())?;
        sealtrail::keys::write_key_pair(&dir.join("bench.key"), &key).map_err(|e| e.to_string())?;
    }
    let store = a.store.clone().unwrap_or_else(|| "data".into());
    let result = measure(a, &dir, &store);
    if remove {
        let _ = std::fs::remove_dir_all(&dir);
    }
    result
}

fn measure(a: &BenchLoadArgs, dir: &Path, store: &str) -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let protocols: &[&'static str] = match a.protocol.as_str() {
        "grpc" => &["grpc"],
        "http" => &["http"],
        _ => &["grpc", "http"],
    };
    let sample = requests(0, a.batch.min(a.spans).max(1), a.batch.max(1), 0);
    let per_span = sample[0].len() / a.batch.min(a.spans).max(1);
    println!(
        "bench-load: {} spans per protocol, {} per request, {} clients, ~{} bytes per span (protobuf)",
        a.spans, a.batch, a.concurrency, per_span
    );
    let c = Collector::start(dir, store, a.zstd_level)?;
    let mut phases = Vec::new();
    for (i, p) in protocols.iter().enumerate() {
        let reqs = requests((i * a.spans) as u64, a.spans, a.batch.max(1), a.held_lag);
        let cpu0 = c.cpu();
        let t = Instant::now();
        rt.block_on(async {
            match *p {
                "grpc" => send_grpc(&c.grpc, reqs, a.concurrency.max(1)).await,
                _ => send_http(&c.http, reqs, a.concurrency.max(1)).await,
            }
        })?;
        phases.push(Phase {
            name: p,
            spans: a.spans,
            wall: t.elapsed(),
            cpu: c.cpu() - cpu0,
        });
    }
    let peak = c.peak_rss();
    let stop = c.stop()?;
    for ph in &phases {
        let rate = ph.spans as f64 / ph.wall.as_secs_f64();
        let cpu_per_span = ph.cpu.as_secs_f64() / ph.spans as f64;
        println!(
            "{:<5} {:>9.0} spans/s acknowledged   {:>6.2} µs collector CPU/span   {:>9.0} spans per collector CPU-second   ({:.2} s wall, {:.2} s CPU)",
            ph.name,
            rate,
            cpu_per_span * 1e6,
            1.0 / cpu_per_span,
            ph.wall.as_secs_f64(),
            ph.cpu.as_secs_f64()
        );
    }
    println!(
        "collector peak memory (VmHWM) {:.1} MiB; final seal and exit on SIGTERM {:.2} s",
        peak as f64 / (1 << 20) as f64,
        stop.as_secs_f64()
    );
    // A relative path is relative to the collector's directory.
    let url = if store.contains("://") || Path::new(store).is_absolute() {
        store.to_owned()
    } else {
        dir.join(store).display().to_string()
    };
    if !url.contains("://") {
        let sent = phases.iter().map(|p| p.spans).sum::<usize>().max(1);
        let bytes = tree_bytes(Path::new(&url));
        println!(
            "archive {:.1} MiB at zstd level {}: {} bytes per span",
            bytes as f64 / (1 << 20) as f64,
            a.zstd_level,
            bytes / sent as u64
        );
        let cpu = phases.iter().map(|p| p.cpu).sum::<Duration>();
        let w = format_work(Path::new(&url), a.zstd_level)?;
        if w.records > 0 {
            let per = |d: Duration| d.as_secs_f64() / w.records as f64 * 1e6;
            let (sha, zstd) = (per(w.sha), per(w.zstd));
            let ours = cpu.as_secs_f64() / sent as f64 * 1e6;
            println!(
                "format work per span, one thread, on this run's {} records ({} bytes each on average): \
                 SHA-256 {sha:.2} µs (record hashes, Merkle tree, object digests) + zstd level {} {zstd:.2} µs \
                 = {:.2} µs, {:.0}% of the collector's CPU per span; alone, {:.0} spans/s per core",
                w.records,
                w.bytes / w.records as u64,
                a.zstd_level,
                sha + zstd,
                (sha + zstd) / ours * 100.0,
                1e6 / (sha + zstd)
            );
        }
    }
    if a.verify {
        let archive = sealtrail::Archive::open(&url).map_err(|e| e.to_string())?;
        let key = sealtrail::keys::read_verifying_key(&dir.join("bench.key.pub"))
            .map_err(|e| e.to_string())?;
        let report = rt
            .block_on(sealtrail::verify(
                &archive,
                &[key],
                &sealtrail::VerifyOptions::default(),
            ))
            .map_err(|e| e.to_string())?;
        println!(
            "verify: {} record(s), {} finding(s)",
            report.records,
            report.findings.len()
        );
        // With --held-lag, the children of the last traces never see their
        // parent: they stay held in the spool (or, past --hold-wait, are
        // archived under their trace id).
        let sent = (phases.len() * a.spans) as u64;
        let waiting = never_released(sent, a.held_lag);
        if !report.findings.is_empty() || report.records > sent || report.records + waiting < sent {
            return Err(format!(
                "the archive does not hold every span intact: {sent} sent, {waiting} of them still waiting for a parent"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_released_counts_the_children_whose_parent_is_not_sent() {
        for (sent, lag) in [(1000, 0), (1000, 20), (1000, 95), (2000, 500), (57, 30)] {
            let spans: Vec<Span> = (0..sent).map(|n| shaped(n, lag)).collect();
            let parents: std::collections::HashSet<&[u8]> = spans
                .iter()
                .filter(|s| s.parent_span_id.is_empty())
                .map(|s| s.span_id.as_slice())
                .collect();
            let orphans = spans
                .iter()
                .filter(|s| !s.parent_span_id.is_empty())
                .filter(|s| !parents.contains(s.parent_span_id.as_slice()))
                .count() as u64;
            assert_eq!(never_released(sent, lag), orphans, "sent {sent}, lag {lag}");
        }
    }
}
