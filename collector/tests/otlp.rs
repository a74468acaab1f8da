//! `sealtrail serve` with real OTLP clients: the Rust OpenTelemetry SDK's
//! exporters (gRPC, HTTP protobuf, HTTP JSON), raw OTLP requests for the
//! orderings and bad input the SDKs never send, SIGTERM and SIGKILL.

mod common;

use std::time::Duration;

use common::{assert_intact, records, session, workdir, Collector};
use opentelemetry::trace::{TraceContextExt, Tracer, TracerProvider as _};
use opentelemetry::KeyValue;
use opentelemetry_otlp::{Protocol, WithExportConfig, WithTonicConfig};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue as PKeyValue};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use prost::Message;
use sealtrail::{Kind, Value};
use serde_json::json;

/// One agent turn as GenAI instrumentation emits it: only the `invoke_agent`
/// span around the others carries the conversation id, and it ends last.
fn agent_turn(tracer: &opentelemetry_sdk::trace::SdkTracer, conversation: &str) {
    tracer.in_span("invoke_agent support-bot", |cx| {
        let span = cx.span();
        span.set_attribute(KeyValue::new("gen_ai.operation.name", "invoke_agent"));
        span.set_attribute(KeyValue::new(
            "gen_ai.conversation.id",
            conversation.to_owned(),
        ));
        tracer.in_span("chat gpt-4o", |cx| {
            let s = cx.span();
            s.set_attribute(KeyValue::new("gen_ai.operation.name", "chat"));
            s.set_attribute(KeyValue::new("gen_ai.request.model", "gpt-4o"));
            s.set_attribute(KeyValue::new("gen_ai.usage.input_tokens", 42i64));
            s.set_attribute(KeyValue::new("gen_ai.usage.output_tokens", 7i64));
        });
        tracer.in_span("execute_tool lookup_order", |cx| {
            let s = cx.span();
            s.set_attribute(KeyValue::new("gen_ai.operation.name", "execute_tool"));
            s.set_attribute(KeyValue::new("gen_ai.tool.name", "lookup_order"));
        });
        tracer.in_span("apply_guardrail pii", |cx| {
            let s = cx.span();
            s.set_attribute(KeyValue::new("gen_ai.operation.name", "apply_guardrail"));
            s.set_attribute(KeyValue::new("policy.decision", "deny"));
        });
    });
}

fn resource(service: &'static str) -> Resource {
    Resource::builder().with_service_name(service).build()
}

#[test]
fn rust_sdk_exporters_over_grpc_and_http_land_in_their_sessions() {
    let dir = workdir();
    let c = Collector::start(dir.path(), &[]);

    // gRPC, gzip-compressed.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let grpc = rt.block_on(async {
        let e = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(format!("http://{}", c.grpc))
            .with_compression(opentelemetry_otlp::Compression::Gzip)
            .build()
            .unwrap();
        SdkTracerProvider::builder()
            .with_resource(resource("agent-grpc"))
            .with_batch_exporter(e)
            .build()
    });
    agent_turn(&grpc.tracer("test"), "conv-grpc");
    grpc.shutdown().unwrap();

    // HTTP, binary protobuf and JSON.
    for (protocol, conv, service) in [
        (Protocol::HttpBinary, "conv-http-proto", "agent-http-proto"),
        (Protocol::HttpJson, "conv-http-json", "agent-http-json"),
    ] {
        let e = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(protocol)
            .with_endpoint(c.url("/v1/traces"))
            .build()
            .unwrap();
        let p = SdkTracerProvider::builder()
            .with_resource(resource(service))
            .with_batch_exporter(e)
            .build();
        agent_turn(&p.tracer("test"), conv);
        p.shutdown().unwrap();
    }

    let status = c.stop();
    assert!(status.success(), "SIGTERM: exit {status:?}");
    let all = records(dir.path());
    assert_eq!(all.len(), 12, "{all:#?}");
    for (conv, service) in [
        ("conv-grpc", "agent-grpc"),
        ("conv-http-proto", "agent-http-proto"),
        ("conv-http-json", "agent-http-json"),
    ] {
        let s = session(&all, conv);
        let kinds: Vec<Kind> = s.iter().map(|r| r.kind).collect();
        // Children end (and are exported) first; the agent span last.
        assert_eq!(
            kinds,
            [
                Kind::LlmCall,
                Kind::ToolCall,
                Kind::PolicyCheck,
                Kind::Agent
            ],
            "{conv}"
        );
        assert_eq!(
            s[0].attributes.get("gen_ai.usage.input_tokens"),
            Some(&Value::Int(42))
        );
        assert_eq!(
            s[1].attributes.get("gen_ai.tool.name"),
            Some(&Value::Str("lookup_order".into()))
        );
        for r in &s {
            assert_eq!(
                r.resource.get("service.name"),
                Some(&Value::Str(service.into())),
                "{conv}"
            );
            assert_eq!(r.source, "otlp");
        }
    }
    assert_intact(dir.path());
}

// --- raw OTLP requests ---------------------------------------------------

fn attr(k: &str, v: &str) -> serde_json::Value {
    json!({"key": k, "value": {"stringValue": v}})
}

/// An OTLP/JSON trace request with one span.
fn span_json(
    trace: &str,
    span: &str,
    parent: Option<&str>,
    name: &str,
    attrs: Vec<serde_json::Value>,
) -> serde_json::Value {
    let mut s = json!({
        "traceId": trace, "spanId": span, "name": name, "kind": 1,
        "startTimeUnixNano": "1700000000000000000", "endTimeUnixNano": "1700000001000000000",
        "attributes": attrs, "status": {}
    });
    if let Some(p) = parent {
        s["parentSpanId"] = json!(p);
    }
    json!({"resourceSpans": [{"resource": {"attributes": [attr("service.name", "raw")]},
        "scopeSpans": [{"scope": {"name": "raw"}, "spans": [s]}]}]})
}

fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

fn post(
    c: &Collector,
    path: &str,
    content_type: &str,
    body: Vec<u8>,
    headers: &[(&str, &str)],
) -> (u16, String) {
    let mut req = client()
        .post(c.url(path))
        .header("content-type", content_type)
        .body(body);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().unwrap();
    let status = resp.status().as_u16();
    (
        status,
        String::from_utf8_lossy(&resp.bytes().unwrap()).into_owned(),
    )
}

fn post_json(c: &Collector, body: &serde_json::Value) -> (u16, String) {
    post(
        c,
        "/v1/traces",
        "application/json",
        serde_json::to_vec(body).unwrap(),
        &[],
    )
}

const TRACE: &str = "0af7651916cd43dd8448eb211c80319c";

/// Sends one span of [`TRACE`] over OTLP/HTTP JSON and asserts it was acknowledged.
fn send_span(
    c: &Collector,
    span: &str,
    parent: Option<&str>,
    name: &str,
    attrs: Vec<serde_json::Value>,
) {
    let (s, body) = post_json(c, &span_json(TRACE, span, parent, name, attrs));
    assert_eq!(s, 200, "{body}");
}

#[test]
fn a_child_exported_before_its_session_carrying_parent_joins_the_parents_session() {
    let dir = workdir();
    let c = Collector::start(dir.path(), &["--hold-wait", "60s"]);
    // Request 1: a grandchild, whose parent and grandparent are not known yet.
    send_span(
        &c,
        "00000000000000c2",
        Some("00000000000000c1"),
        "chat gpt-4o",
        vec![attr("gen_ai.operation.name", "chat")],
    );
    // Request 2: its parent, still without a session.
    send_span(
        &c,
        "00000000000000c1",
        Some("00000000000000a1"),
        "execute_tool search",
        vec![attr("gen_ai.operation.name", "execute_tool")],
    );
    // Both are acknowledged and held, durably: a SIGKILL now loses nothing.
    let metrics = metrics_of(&c);
    assert!(
        metrics.contains("\nsealtrail_records_held 2\n"),
        "{metrics}"
    );
    c.kill();
    let c = Collector::start(dir.path(), &["--hold-wait", "60s"]);
    // Request 3, after the restart: the session-carrying root, over gRPC.
    let root = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans: vec![Span {
                    trace_id: hex(TRACE),
                    span_id: hex("00000000000000a1"),
                    name: "invoke_agent".into(),
                    start_time_unix_nano: 1_700_000_000_000_000_000,
                    end_time_unix_nano: 1_700_000_002_000_000_000,
                    attributes: vec![
                        pkv("gen_ai.operation.name", "invoke_agent"),
                        pkv("gen_ai.conversation.id", "conv-late-parent"),
                    ],
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    grpc_export(&c, root).unwrap();
    // A span of another trace whose parent never comes: after the hold wait,
    // its trace id is its session (tested with a short wait below).
    c.stop_ok();
    let all = records(dir.path());
    let s = session(&all, "conv-late-parent");
    let names: Vec<&str> = s.iter().map(|r| r.name.as_str()).collect();
    // In order of arrival: grandchild, child, then the root that resolved them.
    assert_eq!(
        names,
        ["chat gpt-4o", "execute_tool search", "invoke_agent"]
    );
    assert_eq!(all.len(), 3);
    assert_intact(dir.path());
}

#[test]
fn a_span_held_across_many_seals_survives_spool_compaction_and_a_crash() {
    let dir = workdir();
    let args = ["--hold-wait", "1h", "--flush-interval", "10ms"];
    let c = Collector::start(dir.path(), &args);
    send_span(
        &c,
        "00000000000000c2",
        Some("00000000000000a1"),
        "chat gpt-4o",
        vec![attr("gen_ai.operation.name", "chat")],
    );
    // Other spans, sealed one request at a time: more seals than the spool
    // keeps segments for, so it compacts while the span is held.
    let http = client();
    let mut acked = Vec::new();
    for batch in 0..100 {
        let (answer, names) = stream_request(&http, &c.url("/v1/traces"), batch);
        assert_eq!(answer.map(|a| a.0), Some(200));
        acked.extend(names);
        std::thread::sleep(Duration::from_millis(15));
    }
    let m = http.get(c.url("/metrics")).send().unwrap().text().unwrap();
    let batches: u64 = m
        .lines()
        .find_map(|l| l.strip_prefix("sealtrail_batches_total "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(batches > 70, "{batches} seals");
    assert!(m.contains("\nsealtrail_records_held 1\n"), "{m}");
    let segments = std::fs::read_dir(dir.path().join("spool"))
        .unwrap()
        .filter(|e| {
            let name = e.as_ref().unwrap().file_name();
            name.to_string_lossy().starts_with("segment-")
        })
        .count();
    // Without compaction every seal since the held span would have left
    // its segment behind.
    assert!(segments <= 65, "{segments} spool segments: not compacted");
    c.kill();
    let c = Collector::start(dir.path(), &args);
    send_span(
        &c,
        "00000000000000a1",
        None,
        "invoke_agent",
        vec![attr("gen_ai.conversation.id", "conv-held-long")],
    );
    c.stop_ok();
    let all = records(dir.path());
    let names: Vec<&str> = session(&all, "conv-held-long")
        .iter()
        .map(|r| r.name.as_str())
        .collect();
    assert_eq!(names, ["chat gpt-4o", "invoke_agent"]);
    acked.extend(names.iter().map(|n| n.to_string()));
    assert_all_archived_once(dir.path(), &acked);
}

#[test]
fn a_span_whose_ancestor_never_comes_is_archived_under_its_trace_id_after_the_wait() {
    let dir = workdir();
    let c = Collector::start(dir.path(), &["--hold-wait", "1s"]);
    send_span(
        &c,
        "00000000000000c2",
        Some("00000000000000ff"),
        "orphan",
        vec![attr("gen_ai.operation.name", "chat")],
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let m = metrics_of(&c);
        if m.contains("sealtrail_records_released_total{by=\"timeout\"} 1") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{m}");
        std::thread::sleep(Duration::from_millis(100));
    }
    c.stop_ok();
    let all = records(dir.path());
    assert_eq!(session(&all, TRACE).len(), 1);
    assert_intact(dir.path());
}

/// Two collectors given the same writer id on one store (say, two replicas
/// with `SEALTRAIL_WRITER_ID` set): the one whose seal finds the other's
/// stops at once (exit 1) rather than acknowledge what it cannot seal, and
/// refuses to start again (exit 2) rather than take the other's seal for
/// its own and delete its spooled records. `sealtrail recover` then archives
/// them under a writer id of their own.
#[test]
fn a_collector_sharing_its_writer_id_with_another_stops_and_keeps_its_spool() {
    let (a_dir, b_dir) = (workdir(), workdir());
    std::fs::copy(a_dir.path().join("k.key"), b_dir.path().join("k.key")).unwrap();
    let store = a_dir.path().join("shared-store");
    let store = store.to_str().unwrap();
    let args = [
        "--store",
        store,
        "--writer-id",
        "shared",
        "--flush-interval",
        "100ms",
    ];
    let a = Collector::start(a_dir.path(), &args);
    let session_of = |conv: &str| {
        let archive = sealtrail::Archive::open(store).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(sealtrail::read::records(&archive, |_| true))
            .unwrap()
            .into_iter()
            .filter(|(_, r)| r.session == conv)
            .count()
    };
    let conv = |c: &str| vec![attr("gen_ai.conversation.id", c)];
    send_span(&a, "00000000000000a1", None, "chat", conv("conv-a"));
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while session_of("conv-a") == 0 {
        assert!(std::time::Instant::now() < deadline, "A did not seal");
        std::thread::sleep(Duration::from_millis(50));
    }
    let b = Collector::start(b_dir.path(), &args);
    send_span(&b, "00000000000000b1", None, "chat", conv("conv-b"));
    while session_of("conv-b") == 0 {
        assert!(std::time::Instant::now() < deadline, "B did not seal");
        std::thread::sleep(Duration::from_millis(50));
    }
    // A's next seal finds B's under its number.
    send_span(&a, "00000000000000a2", None, "chat", conv("conv-a"));
    let log = a.log.clone();
    let status = a.wait_exit(Duration::from_secs(20));
    let log = log.lock().unwrap().clone();
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(
        log.contains("conflicts with another process using the same writer id"),
        "{log}"
    );
    // Its restart refuses, and says why; its spool still holds the span.
    let o = std::process::Command::new(common::bin())
        .arg("serve")
        .args(["--signing-key", "k.key", "--spool-dir", "spool"])
        .args(["--otlp-grpc", "127.0.0.1:0", "--otlp-http", "127.0.0.1:0"])
        .args(args)
        .current_dir(a_dir.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("an earlier run stopped sealing") && err.contains("another spool directory"),
        "{err}"
    );
    let spooled = std::fs::read_dir(a_dir.path().join("spool"))
        .unwrap()
        .filter_map(|e| std::fs::read(e.unwrap().path()).ok())
        .any(|bytes| bytes.windows(16).any(|w| w == b"00000000000000a2"));
    assert!(spooled, "the acknowledged span is still in A's spool");
    b.stop_ok();
    assert_eq!(session_of("conv-b"), 1);

    // The operator archives A's spool under a new writer id.
    let recover = |extra: &[&str]| {
        std::process::Command::new(common::bin())
            .args(["recover", "--spool-dir", "spool", "--store", store])
            .args(["--signing-key", "k.key"])
            .args(extra)
            .current_dir(a_dir.path())
            .env_remove("SEALTRAIL_STORE")
            .output()
            .unwrap()
    };
    // (The writer id it was given, "shared", is read from its conflict record.)
    let o = recover(&["--writer-id", "replica-a"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{out}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        out.contains("spool: 1 record(s) of writer shared archived as writer replica-a"),
        "{out}"
    );
    assert_eq!(session_of("conv-a"), 2);
    let archive = sealtrail::Archive::open(store).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let a2: Vec<_> = rt
        .block_on(sealtrail::read::records(&archive, |s| s == "conv-a"))
        .unwrap()
        .into_iter()
        .filter(|(w, _)| w == "replica-a")
        .map(|(_, r)| (r.span_id, r.seq))
        .collect();
    assert_eq!(a2, [(Some("00000000000000a2".to_owned()), 0)]);
    // Verify: intact but for A's batch object written when it found B's seal.
    let o = std::process::Command::new(common::bin())
        .args([
            "verify",
            "--store",
            store,
            "--public-key",
            "k.key.pub",
            "--json",
        ])
        .current_dir(a_dir.path())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let findings = report["findings"].as_array().unwrap();
    assert_eq!(findings.len(), 1, "{report}");
    assert_eq!(findings[0]["problem"], "uncovered_object", "{report}");
    assert!(
        findings[0]["key"]
            .as_str()
            .unwrap()
            .starts_with("v1/writers/shared/batches/"),
        "{report}"
    );
    // Once is enough.
    let o = recover(&[]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{out}");
    assert!(out.contains("nothing to do"), "{out}");
    assert_eq!(session_of("conv-a"), 2);
}

/// A collector that seals only when it stops, holding one span of `conv`.
fn one_span_unsealed(dir: &std::path::Path, span: &str, conv: &str) -> Collector {
    let c = Collector::start(dir, &["--flush-interval", "1h", "--heartbeat", "1h"]);
    send_span(
        &c,
        span,
        None,
        "chat",
        vec![attr("gen_ai.conversation.id", conv)],
    );
    c
}

#[test]
fn sighup_seals_and_stops_like_sigterm() {
    let dir = workdir();
    let c = one_span_unsealed(dir.path(), "00000000000000f1", "conv-hup");
    let status = c.signal(libc::SIGHUP);
    assert_eq!(status.code(), Some(0));
    assert_eq!(session(&records(dir.path()), "conv-hup").len(), 1);
    // Closed: no heartbeat is owed, whatever the time.
    assert_intact(dir.path());
}

/// The collector's `/metrics` page.
fn metrics_of(c: &Collector) -> String {
    client()
        .get(c.url("/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap()
}

fn held_count(c: &Collector) -> String {
    let m = metrics_of(c);
    m.lines()
        .find(|l| l.starts_with("sealtrail_records_held "))
        .unwrap_or_else(|| panic!("no held gauge:\n{m}"))
        .to_owned()
}

#[test]
fn spans_held_at_sigterm_are_archived_under_their_trace_id_unless_kept_for_the_next_start() {
    let dir = workdir();
    let chat = || vec![attr("gen_ai.operation.name", "chat")];
    // Kept: a clean stop leaves it in the spool, and after the restart it
    // joins the session of the parent that arrives then.
    let c = Collector::start(
        dir.path(),
        &["--hold-wait", "1h", "--keep-held-on-shutdown"],
    );
    send_span(
        &c,
        "00000000000000c2",
        Some("00000000000000c1"),
        "chat kept",
        chat(),
    );
    assert_eq!(held_count(&c), "sealtrail_records_held 1");
    c.stop_ok();
    assert!(records(dir.path()).is_empty());

    // By default: what is still held at the stop is archived under its
    // trace id, and nothing is left in the spool.
    let c = Collector::start(dir.path(), &["--hold-wait", "1h"]);
    assert_eq!(held_count(&c), "sealtrail_records_held 1");
    send_span(
        &c,
        "00000000000000c1",
        None,
        "invoke_agent",
        vec![attr("gen_ai.conversation.id", "conv-kept")],
    );
    send_span(
        &c,
        "00000000000000d2",
        Some("00000000000000d1"),
        "chat orphan",
        chat(),
    );
    assert_eq!(held_count(&c), "sealtrail_records_held 1");
    c.stop_ok();
    let all = records(dir.path());
    let names =
        |s: &str| -> Vec<String> { session(&all, s).iter().map(|r| r.name.clone()).collect() };
    assert_eq!(names("conv-kept"), ["chat kept", "invoke_agent"]);
    assert_eq!(names(TRACE), ["chat orphan"]);
    assert_eq!(all.len(), 2 + 1);
    let c = Collector::start(dir.path(), &["--hold-wait", "1h"]);
    assert_eq!(held_count(&c), "sealtrail_records_held 0");
    c.stop_ok();
    assert_eq!(records(dir.path()).len(), 3);
    assert_intact(dir.path());
}

/// Many spans still held at a clean stop are sealed in batches no larger
/// than the batch limit, as while running.
#[test]
fn spans_released_at_shutdown_respect_the_batch_limit() {
    let dir = workdir();
    let c = Collector::start(
        dir.path(),
        &["--hold-wait", "1h", "--max-batch-records", "10"],
    );
    for i in 0..25 {
        send_span(
            &c,
            &format!("00000000000001{i:02x}"),
            Some("00000000000000ff"),
            "chat orphan",
            vec![attr("gen_ai.operation.name", "chat")],
        );
    }
    assert_eq!(held_count(&c), "sealtrail_records_held 25");
    c.stop_ok();
    let all = records(dir.path());
    assert_eq!(session(&all, TRACE).len(), 25);
    let mut sizes = Vec::new();
    for w in std::fs::read_dir(dir.path().join("data/v1/writers")).unwrap() {
        for s in std::fs::read_dir(w.unwrap().path().join("seals")).unwrap() {
            let seal: serde_json::Value =
                serde_json::from_slice(&std::fs::read(s.unwrap().path()).unwrap()).unwrap();
            if let Some(n) = seal["body"]["batch"]["records"].as_u64() {
                sizes.push(n);
            }
        }
    }
    assert!(
        sizes.iter().all(|n| *n <= 10) && sizes.iter().sum::<u64>() == 25,
        "{sizes:?}"
    );
    assert_intact(dir.path());
}

#[test]
fn a_final_seal_that_fails_exits_1_and_the_next_start_archives_what_it_left() {
    let dir = workdir();
    let c = one_span_unsealed(dir.path(), "00000000000000e1", "conv-final");
    // The store fails: its directory is replaced by a file.
    let data = dir.path().join("data");
    let moved = dir.path().join("data.away");
    std::fs::rename(&data, &moved).unwrap();
    std::fs::write(&data, b"not a directory").unwrap();
    let log = c.log.clone();
    let status = c.stop();
    let log = log.lock().unwrap().clone();
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(
        log.contains("the final seal failed") && log.contains("stay in the spool"),
        "{log}"
    );
    std::fs::remove_file(&data).unwrap();
    std::fs::rename(&moved, &data).unwrap();
    Collector::start(dir.path(), &[]).stop_ok();
    let all = records(dir.path());
    assert_eq!(session(&all, "conv-final").len(), 1);
    assert_eq!(all.len(), 1);
    assert_intact(dir.path());
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn pkv(k: &str, v: &str) -> PKeyValue {
    PKeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(v.into())),
        }),
        ..Default::default()
    }
}

fn grpc_export(c: &Collector, req: ExportTraceServiceRequest) -> Result<(), tonic::Status> {
    grpc_export_with(c, req, None)
}

fn grpc_export_with(
    c: &Collector,
    req: ExportTraceServiceRequest,
    token: Option<&str>,
) -> Result<(), tonic::Status> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut client = TraceServiceClient::connect(format!("http://{}", c.grpc))
            .await
            .unwrap()
            .max_encoding_message_size(64 << 20);
        let mut r = tonic::Request::new(req);
        if let Some(t) = token {
            r.metadata_mut()
                .insert("authorization", format!("Bearer {t}").parse().unwrap());
        }
        client.export(r).await.map(|_| ())
    })
}

/// `details` (grpc-status-details-bin) is a `google.rpc.Status` holding a
/// `google.rpc.RetryInfo` of 1 s.
fn assert_retry_info(details: &[u8]) {
    use prost::Message;
    #[derive(Clone, PartialEq, prost::Message)]
    struct Any {
        #[prost(string, tag = "1")]
        type_url: String,
        #[prost(bytes = "vec", tag = "2")]
        value: Vec<u8>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    struct RpcStatus {
        #[prost(int32, tag = "1")]
        code: i32,
        #[prost(message, repeated, tag = "3")]
        details: Vec<Any>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    struct Delay {
        #[prost(int64, tag = "1")]
        seconds: i64,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    struct RetryInfo {
        #[prost(message, optional, tag = "1")]
        retry_delay: Option<Delay>,
    }
    let status = RpcStatus::decode(details).expect("a google.rpc.Status");
    assert_eq!(status.code, 14);
    let info = status
        .details
        .iter()
        .find(|a| a.type_url == "type.googleapis.com/google.rpc.RetryInfo")
        .expect("a RetryInfo detail");
    let info = RetryInfo::decode(&info.value[..]).unwrap();
    assert_eq!(info.retry_delay, Some(Delay { seconds: 1 }));
}

fn named(trace_hex: &str, span_hex: &str, name: &str, pad: usize) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans: vec![Span {
                    trace_id: hex(trace_hex),
                    span_id: hex(span_hex),
                    name: name.into(),
                    attributes: vec![
                        pkv("audit.session_id", "bad-input"),
                        pkv("padding", &"x".repeat(pad)),
                    ],
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// A message whose field 1 has the wrong wire type for an export request.
#[derive(Clone, PartialEq, prost::Message)]
struct NotAnExport {
    #[prost(uint64, tag = "1")]
    x: u64,
}

fn grpc_raw_garbage(c: &Collector, token: &str) -> tonic::Status {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let ch = tonic::transport::Endpoint::new(format!("http://{}", c.grpc))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut g = tonic::client::Grpc::new(ch);
        g.ready().await.unwrap();
        let mut r = tonic::Request::new(NotAnExport { x: 7 });
        r.metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
        let codec: tonic_prost::ProstCodec<NotAnExport, NotAnExport> = Default::default();
        g.unary(
            r,
            "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
                .parse()
                .unwrap(),
            codec,
        )
        .await
        .unwrap_err()
    })
}

fn gzip(b: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(b).unwrap();
    e.finish().unwrap()
}

#[test]
fn bad_requests_are_refused_with_the_right_status_and_change_nothing() {
    let dir = workdir();
    std::fs::write(dir.path().join("token"), "s3cret\n").unwrap();
    let c = Collector::start(
        dir.path(),
        &["--auth-token-file", "token", "--max-body", "64KiB"],
    );
    let auth = [("authorization", "Bearer s3cret")];
    let good = |n: u8| {
        named(
            TRACE,
            &format!("00000000000000{n:02x}"),
            &format!("good-{n}"),
            10,
        )
    };
    let pb = |r: &ExportTraceServiceRequest| r.encode_to_vec();

    // Before: accepted.
    assert_eq!(
        post(
            &c,
            "/v1/traces",
            "application/x-protobuf",
            pb(&good(1)),
            &auth
        )
        .0,
        200
    );

    // HTTP refusals.
    let (s, body) = post(
        &c,
        "/v1/traces",
        "application/x-protobuf",
        vec![0x0a, 0xff, 0x01],
        &auth,
    );
    assert_eq!(s, 400, "{body}");
    // The body is a google.rpc.Status in the request's encoding.
    assert!(
        String::from_utf8_lossy(body.as_bytes()).contains("malformed OTLP protobuf"),
        "{body}"
    );
    let (s, body) = post(
        &c,
        "/v1/traces",
        "application/json",
        b"{\"resourceSpans\": [".to_vec(),
        &auth,
    );
    assert_eq!(s, 400);
    assert!(body.contains("malformed OTLP JSON"), "{body}");
    let (s, body) = post(&c, "/v1/traces", "text/plain", pb(&good(9)), &auth);
    assert_eq!(s, 415);
    assert!(body.contains("Content-Type must be"), "{body}");
    let big = named(TRACE, "00000000000000e1", "too-big", 100 << 10);
    let (s, _) = post(&c, "/v1/traces", "application/x-protobuf", pb(&big), &auth);
    assert_eq!(s, 413);
    // Small when compressed, too large once decompressed.
    let (s, body) = post(
        &c,
        "/v1/traces",
        "application/x-protobuf",
        gzip(&pb(&big)),
        &[auth[0], ("content-encoding", "gzip")],
    );
    assert_eq!(s, 413, "{body}");
    assert!(body.contains("once decompressed"), "{body}");
    let (s, _) = post(
        &c,
        "/v1/traces",
        "application/x-protobuf",
        pb(&good(9)),
        &[],
    );
    assert_eq!(s, 401);
    let (s, _) = post(
        &c,
        "/v1/traces",
        "application/x-protobuf",
        pb(&good(9)),
        &[("authorization", "Bearer wrong")],
    );
    assert_eq!(s, 401);

    // gRPC refusals.
    let st = grpc_raw_garbage(&c, "s3cret");
    assert_eq!(st.code(), tonic::Code::InvalidArgument, "{st:?}");
    assert!(st.message().contains("decode"), "{st:?}");
    let st = grpc_export_with(&c, big.clone(), Some("s3cret")).unwrap_err();
    assert_eq!(st.code(), tonic::Code::ResourceExhausted, "{st:?}");
    let st = grpc_export_with(&c, good(9), None).unwrap_err();
    assert_eq!(st.code(), tonic::Code::Unauthenticated, "{st:?}");
    let st = grpc_export_with(&c, good(9), Some("wrong")).unwrap_err();
    assert_eq!(st.code(), tonic::Code::Unauthenticated, "{st:?}");
    // The token is checked before the message is read.
    let st = grpc_export_with(&c, big.clone(), None).unwrap_err();
    assert_eq!(st.code(), tonic::Code::Unauthenticated, "{st:?}");
    // A message flagged gzip that is not gzip, and a message shorter than
    // its frame says: INVALID_ARGUMENT.
    let raw_grpc = |frame: Vec<u8>| {
        let r = reqwest::blocking::Client::builder()
            .http2_prior_knowledge()
            .build()
            .unwrap()
            .post(format!(
                "http://{}/opentelemetry.proto.collector.trace.v1.TraceService/Export",
                c.grpc
            ))
            .header("content-type", "application/grpc")
            .header("grpc-encoding", "gzip")
            .header("te", "trailers")
            .header("authorization", "Bearer s3cret")
            .body(frame)
            .send()
            .unwrap();
        let status = r
            .headers()
            .get("grpc-status")
            .map(|v| v.to_str().unwrap().to_owned());
        (status, format!("{:?}", r.headers()))
    };
    let mut frame = vec![1u8];
    frame.extend_from_slice(&8u32.to_be_bytes());
    frame.extend_from_slice(b"not gzip");
    let (status, headers) = raw_grpc(frame);
    assert_eq!(status.as_deref(), Some("3"), "{headers}");
    let mut frame = vec![0u8];
    frame.extend_from_slice(&100u32.to_be_bytes());
    frame.extend_from_slice(&pb(&good(9))[..10]);
    let (status, headers) = raw_grpc(frame);
    assert_eq!(status.as_deref(), Some("3"), "{headers}");
    // A gzip body with bytes after its end.
    let mut trailing = gzip(&pb(&good(9)));
    trailing.extend_from_slice(b"junk after the gzip member");
    let (s, body) = post(
        &c,
        "/v1/traces",
        "application/x-protobuf",
        trailing,
        &[auth[0], ("content-encoding", "gzip")],
    );
    assert_eq!(s, 400, "{body}");

    // After: accepted, gzip too.
    let (s, _) = post(
        &c,
        "/v1/traces",
        "application/x-protobuf",
        gzip(&pb(&good(2))),
        &[auth[0], ("content-encoding", "gzip")],
    );
    assert_eq!(s, 200);
    grpc_export_with(&c, good(3), Some("s3cret")).unwrap();
    // A body of two gzip members (RFC 1952 allows it): both are read; and
    // `x-gzip` is gzip (RFC 9110).
    let two = [gzip(&pb(&good(4))), gzip(&pb(&good(5)))].concat();
    let (s, _) = post(
        &c,
        "/v1/traces",
        "application/x-protobuf",
        two,
        &[auth[0], ("content-encoding", "x-gzip")],
    );
    assert_eq!(s, 200);
    // The scheme of the token is case-insensitive.
    let (s, _) = post(
        &c,
        "/v1/traces",
        "application/x-protobuf",
        pb(&good(6)),
        &[("authorization", "bearer s3cret")],
    );
    assert_eq!(s, 200);

    let m = metrics_of(&c);
    for line in [
        "sealtrail_requests_rejected_total{reason=\"decode\"} 6",
        "sealtrail_requests_rejected_total{reason=\"content_type\"} 1",
        "sealtrail_requests_rejected_total{reason=\"too_large\"} 3",
        "sealtrail_requests_rejected_total{reason=\"unauthenticated\"} 5",
        "sealtrail_spans_received_total 6",
    ] {
        assert!(m.contains(line), "{line} not in\n{m}");
    }
    c.stop_ok();
    let all = records(dir.path());
    let names: Vec<&str> = all.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(
        names,
        ["good-1", "good-2", "good-3", "good-4", "good-5", "good-6"]
    );
    assert_intact(dir.path());
}

#[test]
fn retries_are_archived_once_and_bad_spans_are_rejected_alone() {
    let dir = workdir();
    let c = Collector::start(dir.path(), &[]);
    let req = span_json(
        TRACE,
        "0000000000000001",
        None,
        "once",
        vec![attr("audit.session_id", "retries")],
    );
    for _ in 0..3 {
        assert_eq!(post_json(&c, &req).0, 200);
    }
    grpc_export(&c, named(TRACE, "0000000000000001", "once", 0)).unwrap();
    // One span with a bad id beside a good one: partial success.
    let mut two = span_json(
        TRACE,
        "0000000000000002",
        None,
        "kept",
        vec![attr("audit.session_id", "retries")],
    );
    let mut bad = two["resourceSpans"][0]["scopeSpans"][0]["spans"][0].clone();
    bad["spanId"] = json!("00ff");
    bad["name"] = json!("bad-id");
    two["resourceSpans"][0]["scopeSpans"][0]["spans"]
        .as_array_mut()
        .unwrap()
        .push(bad);
    let (s, body) = post_json(&c, &two);
    assert_eq!(s, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    // int64: a string in OTLP/JSON, which clients also accept as a number.
    assert_eq!(
        v["partialSuccess"]["rejectedSpans"]
            .to_string()
            .trim_matches('"'),
        "1",
        "{body}"
    );
    assert!(
        v["partialSuccess"]["errorMessage"]
            .as_str()
            .unwrap()
            .contains("span_id must be 8 bytes"),
        "{body}"
    );
    let m = metrics_of(&c);
    assert!(m.contains("sealtrail_duplicates_total 3"), "{m}");
    c.stop_ok();
    let all = records(dir.path());
    let names: Vec<&str> = all.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["once", "kept"]);
    assert_intact(dir.path());
}

#[test]
fn a_genai_log_event_is_archived_in_the_session_of_its_span() {
    let dir = workdir();
    let c = Collector::start(dir.path(), &[]);
    let log = |span: Option<&str>, name: &str| {
        let mut l = json!({"timeUnixNano": "1700000000500000000", "eventName": name,
            "body": {"kvlistValue": {"values": [attr("content", "What is my order status?")]}},
            "attributes": [attr("gen_ai.system", "openai")]});
        if let Some(s) = span {
            l["traceId"] = json!(TRACE);
            l["spanId"] = json!(s);
        }
        json!({"resourceLogs": [{"resource": {"attributes": [attr("service.name", "py")]},
            "scopeLogs": [{"scope": {"name": "openai_v2"}, "logRecords": [l]}]}]})
    };
    // The log arrives before its span, which arrives before its parent.
    let (s, body) = post(
        &c,
        "/v1/logs",
        "application/json",
        serde_json::to_vec(&log(Some("00000000000000c1"), "gen_ai.user.message")).unwrap(),
        &[],
    );
    assert_eq!(s, 200, "{body}");
    let (s, _) = post(
        &c,
        "/v1/logs",
        "application/json",
        serde_json::to_vec(&log(None, "gen_ai.choice")).unwrap(),
        &[],
    );
    assert_eq!(s, 200);
    send_span(
        &c,
        "00000000000000c1",
        Some("00000000000000a1"),
        "chat gpt-4o",
        vec![attr("gen_ai.operation.name", "chat")],
    );
    send_span(
        &c,
        "00000000000000a1",
        None,
        "invoke_agent",
        vec![attr("gen_ai.conversation.id", "conv-logs")],
    );
    c.stop_ok();
    let all = records(dir.path());
    let s = session(&all, "conv-logs");
    let names: Vec<&str> = s.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(
        names,
        ["gen_ai.user.message", "chat gpt-4o", "invoke_agent"]
    );
    assert_eq!(s[0].span_id.as_deref(), Some("00000000000000c1"));
    assert!(matches!(
        s[0].attributes.get("log.body"),
        Some(Value::Map(_))
    ));
    let orphan = session(&all, "sealtrail.logs");
    assert_eq!(orphan.len(), 1);
    assert_eq!(orphan[0].name, "gen_ai.choice");
    assert_intact(dir.path());
    // `show` prints a log record's body, and each line's span.
    let o = std::process::Command::new(common::bin())
        .args(["show", "--store", "data", "--session", "conv-logs"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    let first = out.lines().next().unwrap_or_default();
    assert!(
        first.contains("log.body={") && first.ends_with("span 00000000000000c1]"),
        "{out}"
    );
}

/// Sends what a client retries in the tests below: a log record (`gen_ai.choice`)
/// and a span (`retried`, in session `retry`), the same each time.
fn send_retried(c: &Collector) {
    let log = json!({"resourceLogs": [{"scopeLogs": [{"logRecords": [
        {"timeUnixNano": "1700000000500000000", "eventName": "gen_ai.choice",
         "body": {"stringValue": "the answer"}}]}]}]});
    let (s, body) = post(
        c,
        "/v1/logs",
        "application/json",
        serde_json::to_vec(&log).unwrap(),
        &[],
    );
    assert_eq!(s, 200, "{body}");
    send_span(
        c,
        "00000000000000d1",
        None,
        "retried",
        vec![attr("audit.session_id", "retry")],
    );
}

#[test]
fn a_retry_after_a_crash_and_restart_is_archived_once() {
    let dir = workdir();
    let slow = ["--flush-interval", "1h", "--heartbeat", "1h"];
    let send = send_retried;
    // Acknowledged (spooled), then the collector dies before it seals; the
    // client, which did not hear back in time, retries against the next start.
    let c = Collector::start(dir.path(), &slow);
    send(&c);
    c.kill();
    let c = Collector::start(dir.path(), &slow);
    send(&c);
    c.stop_ok();
    let all = records(dir.path());
    let count = |name: &str| all.iter().filter(|r| r.name == name).count();
    assert_eq!((count("retried"), count("gen_ai.choice")), (1, 1));
    assert_intact(dir.path());
}

#[test]
fn after_a_clean_restart_a_retry_is_archived_once_and_a_late_child_joins_its_parents_session() {
    let dir = workdir();
    let slow = ["--flush-interval", "1h", "--heartbeat", "1h"];
    let send = send_retried;
    // Acknowledged and sealed by a clean stop (a rolling restart); the
    // client, whose answer was lost, retries against the next start. A
    // parent that names its session arrives before the restart, its child
    // (which names none) after it.
    let c = Collector::start(dir.path(), &slow);
    send(&c);
    send_span(
        &c,
        "00000000000000e1",
        None,
        "invoke_agent",
        vec![attr("audit.session_id", "conv-late")],
    );
    c.stop_ok();
    let c = Collector::start(dir.path(), &["--hold-wait", "1h"]);
    send(&c);
    send_span(
        &c,
        "00000000000000e2",
        Some("00000000000000e1"),
        "chat late",
        vec![attr("gen_ai.operation.name", "chat")],
    );
    c.stop_ok();
    let all = records(dir.path());
    let count = |name: &str| all.iter().filter(|r| r.name == name).count();
    assert_eq!((count("retried"), count("gen_ai.choice")), (1, 1));
    let child = all
        .iter()
        .find(|r| r.name == "chat late")
        .expect("the child is archived");
    assert_eq!(child.session, "conv-late");
    assert_intact(dir.path());
    // A window saved for another store is not used: the same spool, pointed
    // at a new store, archives a re-sent span there.
    let c = Collector::start(dir.path(), &["--store", "other/data"]);
    send(&c);
    c.stop_ok();
    let other = records(&dir.path().join("other"));
    assert_eq!(other.iter().filter(|r| r.name == "retried").count(), 1);
    // A damaged window is not used either (logged): the retry is archived
    // again, since nothing else remembers it.
    let window = dir.path().join("spool").join("duplicate-window");
    let mut bytes = std::fs::read(&window).expect("a clean stop saves the window");
    bytes[40] ^= 1;
    std::fs::write(&window, bytes).unwrap();
    let c = Collector::start(dir.path(), &slow);
    send(&c);
    let log = c.log.clone();
    c.stop_ok();
    let log = log.lock().unwrap().clone();
    assert!(
        log.contains("duplicate window") && log.contains("not used"),
        "{log}"
    );
    let all = records(dir.path());
    assert_eq!(all.iter().filter(|r| r.name == "retried").count(), 2);
}

/// OTLP/JSON as the protobuf JSON mapping allows it (a double as "NaN", an
/// empty array without `values`, numbers as strings, nulls) is archived,
/// not refused as a whole request.
#[test]
fn lenient_otlp_json_is_archived() {
    let dir = workdir();
    let c = Collector::start(dir.path(), &[]);
    let attrs = vec![
        attr("audit.session_id", "json"),
        json!({"key": "gen_ai.usage.cost", "value": {"doubleValue": "NaN"}}),
        json!({"key": "gen_ai.request.temperature", "value": {"doubleValue": "0.5"}}),
        json!({"key": "gen_ai.response.finish_reasons", "value": {"arrayValue": {}}}),
        json!({"key": "gen_ai.usage.input_tokens", "value": {"intValue": "12"}}),
        json!({"key": "tags", "value": {"kvlistValue": null}}),
    ];
    let mut body = span_json(TRACE, "00000000000000f1", None, "chat", attrs);
    body["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["droppedEventsCount"] = json!("0");
    // A span that cannot be read is rejected alone, not the request.
    body["resourceSpans"][0]["scopeSpans"][0]["spans"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "unreadable", "spanId": "not hex"}));
    let (s, answer) = post_json(&c, &body);
    assert_eq!(s, 200, "{answer}");
    let answer: serde_json::Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(answer["partialSuccess"]["rejectedSpans"], 1, "{answer}");
    assert!(
        answer["partialSuccess"]["errorMessage"]
            .as_str()
            .unwrap()
            .contains("spans[1].spanId: \"not hex\" is not hex"),
        "{answer}"
    );
    c.stop_ok();
    let all = records(dir.path());
    let r = all.iter().find(|r| r.name == "chat").expect("archived");
    use sealtrail::Value;
    let a = |k: &str| r.attributes.get(k).cloned();
    assert!(matches!(a("gen_ai.usage.cost"), Some(Value::Float(f)) if f.is_nan()));
    assert_eq!(a("gen_ai.request.temperature"), Some(Value::Float(0.5)));
    assert_eq!(
        a("gen_ai.response.finish_reasons"),
        Some(Value::Array(vec![]))
    );
    assert_eq!(a("gen_ai.usage.input_tokens"), Some(Value::Int(12)));
    assert_eq!(
        a("otel.empty_attributes"),
        Some(Value::Array(vec![Value::Str("tags".into())]))
    );
    assert!(all.iter().all(|r| r.name != "unreadable"));
    assert_intact(dir.path());
}

/// Paths and methods the collector does not serve are answered with a
/// `google.rpc.Status` body too (OTLP asks it of every 4xx), and metrics
/// sent to the OTLP endpoint are told what to do.
#[test]
fn other_paths_and_methods_get_a_status_body() {
    let dir = workdir();
    let c = Collector::start(dir.path(), &[]);
    let (s, body) = post(&c, "/v1/metrics", "application/json", b"{}".to_vec(), &[]);
    assert_eq!(s, 404);
    let status: serde_json::Value = serde_json::from_str(&body).expect("a JSON Status");
    assert_eq!(status["code"], 12, "{body}");
    assert!(
        status["message"]
            .as_str()
            .unwrap()
            .contains("OTEL_METRICS_EXPORTER=none"),
        "{body}"
    );
    let resp = client()
        .get(c.url("/v1/traces"))
        .header("content-type", "application/x-protobuf")
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 405);
    assert_eq!(resp.headers()["allow"], "POST");
    assert_eq!(resp.headers()["content-type"], "application/x-protobuf");
    let body = resp.bytes().unwrap();
    assert!(
        String::from_utf8_lossy(&body).contains("GET /v1/traces is not served: use POST"),
        "{body:?}"
    );
    c.stop_ok();
}

#[test]
fn health_readiness_and_metrics() {
    let dir = workdir();
    let c = Collector::start(dir.path(), &[]);
    let get = |p: &str| {
        let r = client().get(c.url(p)).send().unwrap();
        (r.status().as_u16(), r.text().unwrap())
    };
    assert_eq!(get("/healthz").0, 200);
    assert_eq!(get("/readyz").0, 200);
    let (s, m) = get("/metrics");
    assert_eq!(s, 200);
    for name in [
        "sealtrail_spans_received_total",
        "sealtrail_records_sealed_total",
        "sealtrail_batches_total",
        "sealtrail_spool_bytes",
        "sealtrail_seal_latency_seconds_bucket{le=\"+Inf\"}",
    ] {
        assert!(m.contains(name), "{name} missing from\n{m}");
    }
    c.stop_ok();
}

/// Sends request `batch` of a stream: 50 spans (session `stream-<batch % 4>`,
/// names `s<n>`). Returns the answer (`None` when there was none) and the
/// span names.
fn stream_request(
    http: &reqwest::blocking::Client,
    url: &str,
    batch: u64,
) -> (Option<(u16, String)>, Vec<String>) {
    let spans: Vec<Span> = (0..50u64)
        .map(|i| Span {
            trace_id: (batch as u128 + 1).to_be_bytes().to_vec(),
            span_id: (batch * 100 + i + 1).to_be_bytes().to_vec(),
            name: format!("s{}", batch * 100 + i + 1),
            attributes: vec![pkv("audit.session_id", &format!("stream-{}", batch % 4))],
            ..Default::default()
        })
        .collect();
    let names: Vec<String> = spans.iter().map(|s| s.name.clone()).collect();
    let req = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    let answer = http
        .post(url)
        .header("content-type", "application/x-protobuf")
        .body(req.encode_to_vec())
        .send()
        .ok()
        .map(|r| {
            let status = r.status().as_u16();
            let body = r.bytes().map(|b| b.to_vec()).unwrap_or_default();
            (status, String::from_utf8_lossy(&body).into_owned())
        });
    (answer, names)
}

/// Streams [`stream_request`]s 0, 1, … to `url`, recording the names of
/// every acknowledged request in `acked`, until one is not acknowledged;
/// returns that answer (`None` when there was none).
fn stream_until_refused(url: &str, acked: &std::sync::Mutex<Vec<String>>) -> Option<(u16, String)> {
    let http = client();
    for batch in 0u64.. {
        match stream_request(&http, url, batch) {
            (Some((200, _)), names) => acked.lock().unwrap().extend(names),
            (answer, _) => return answer,
        }
    }
    unreachable!()
}

/// Every acknowledged name is archived, none twice, and verify is intact.
fn assert_all_archived_once(dir: &std::path::Path, acked: &[String]) {
    assert!(!acked.is_empty(), "nothing was acknowledged");
    let all = records(dir);
    let archived: std::collections::HashSet<&str> = all.iter().map(|r| r.name.as_str()).collect();
    let missing: Vec<&String> = acked
        .iter()
        .filter(|n| !archived.contains(n.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged spans missing, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    assert_eq!(archived.len(), all.len(), "a span archived twice");
    assert_intact(dir);
}

#[test]
fn sigkill_while_a_client_streams_loses_nothing_acknowledged() {
    let dir = workdir();
    let c = Collector::start(dir.path(), &[]);
    let url = c.url("/v1/traces");
    let acked = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let a = acked.clone();
    let sender = std::thread::spawn(move || stream_until_refused(&url, &a));
    // Let it stream, then kill the collector mid-flight.
    while acked.lock().unwrap().len() < 2_000 {
        std::thread::sleep(Duration::from_millis(10));
    }
    c.kill();
    sender.join().unwrap();
    let acked = acked.lock().unwrap().clone();
    // Restart: the spool is recovered and the chains continue.
    let c = Collector::start(dir.path(), &[]);
    c.stop_ok();
    assert_all_archived_once(dir.path(), &acked);
}

#[test]
fn a_spool_that_cannot_be_written_stops_the_collector_and_loses_nothing_acknowledged() {
    use std::os::unix::process::CommandExt;
    let dir = workdir();
    // The disk "fills up": the collector's files may not grow past 256 KiB
    // (RLIMIT_FSIZE; writes past it fail with EFBIG). No seal runs (the
    // flush interval is long), so the spool is the file that hits the limit.
    let c = Collector::start_with(
        dir.path(),
        &["--flush-interval", "1h", "--heartbeat", "1h"],
        |cmd| {
            // SAFETY: only async-signal-safe calls between fork and exec.
            unsafe {
                cmd.pre_exec(|| {
                    libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
                    let limit = libc::rlimit {
                        rlim_cur: 256 << 10,
                        rlim_max: 256 << 10,
                    };
                    if libc::setrlimit(libc::RLIMIT_FSIZE, &limit) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        },
    );
    let acked = std::sync::Mutex::new(Vec::new());
    stream_until_refused(&c.url("/v1/traces"), &acked);
    let acked = acked.into_inner().unwrap();
    assert!(
        acked.len() >= 100,
        "the limit should allow some requests first: {} acknowledged",
        acked.len()
    );
    let log = c.log.clone();
    let status = c.wait_exit(Duration::from_secs(30));
    let log = log.lock().unwrap().clone();
    assert_eq!(
        status.code(),
        Some(1),
        "exit status on a spool failure:\n{log}"
    );
    assert!(log.contains("the spool could not be written"), "{log}");

    // The disk has room again: the next start recovers the spool and seals it.
    let c = Collector::start(dir.path(), &[]);
    c.stop_ok();
    assert_all_archived_once(dir.path(), &acked);
}

#[test]
fn a_failing_store_backs_clients_off_and_loses_nothing_acknowledged() {
    let dir = workdir();
    let c = Collector::start(dir.path(), &["--max-backlog", "64KiB"]);
    let url = c.url("/v1/traces");
    let http = client();
    // A first request is acknowledged and sealed while the store works.
    let mut acked = Vec::new();
    let (answer, names) = stream_request(&http, &url, 1_000);
    assert_eq!(answer.map(|a| a.0), Some(200));
    acked.extend(names);
    let mut deadline = std::time::Instant::now() + Duration::from_secs(30);
    while records(dir.path()).len() < 50 {
        assert!(
            std::time::Instant::now() < deadline,
            "the first request was not sealed"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // The store fails: its directory is replaced by a file, so every write fails.
    let data = dir.path().join("data");
    let moved = dir.path().join("data.away");
    std::fs::rename(&data, &moved).unwrap();
    deadline = std::time::Instant::now() + Duration::from_secs(30);
    std::fs::write(&data, b"not a directory").unwrap();
    let (answer, names) = stream_request(&http, &url, 1_001);
    assert_eq!(answer.map(|a| a.0), Some(200));
    acked.extend(names);
    let metrics = || http.get(c.url("/metrics")).send().unwrap().text().unwrap();
    let counter = |metrics: &str, name: &str| -> u64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .unwrap_or_else(|| panic!("no {name}:\n{metrics}"))
            .parse()
            .unwrap()
    };
    while counter(&metrics(), "sealtrail_store_errors_total") == 0 {
        assert!(std::time::Instant::now() < deadline, "no seal failed");
        std::thread::sleep(Duration::from_millis(50));
    }
    let streamed = std::sync::Mutex::new(Vec::new());
    let refusal = stream_until_refused(&url, &streamed);
    let streamed = streamed.into_inner().unwrap();
    let (status, body) = refusal.expect("the refusal is an answer");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("the archive store is failing"), "{body}");
    // 64 KiB of records (about 370 bytes each) wait before clients are refused.
    assert!(
        (50..=1_000).contains(&streamed.len()),
        "{} spans acknowledged before the refusal",
        streamed.len()
    );
    acked.extend(streamed);
    let m = metrics();
    assert_eq!(
        counter(&m, "sealtrail_requests_rejected_total{reason=\"backlog\"}"),
        1,
        "{m}"
    );
    // Its 50 spans, counted as records not taken.
    assert_eq!(
        counter(&m, "sealtrail_records_rejected_total{reason=\"backlog\"}"),
        50,
        "{m}"
    );

    // Over gRPC: UNAVAILABLE, with a RetryInfo detail (when to retry).
    let refused = grpc_export_with(&c, named(TRACE, "00000000000000f9", "grpc", 0), None)
        .expect_err("refused as retryable");
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");
    assert_retry_info(refused.details());

    // The store is back: the backlog is sealed and exports are taken again.
    std::fs::remove_file(&data).unwrap();
    std::fs::rename(&moved, &data).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (answer, names) = stream_request(&http, &url, 2_000);
        match answer {
            Some((200, _)) => {
                acked.extend(names);
                break;
            }
            Some((503, _)) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(200))
            }
            other => panic!("after the store came back: {other:?}"),
        }
    }
    c.stop_ok();
    assert_all_archived_once(dir.path(), &acked);
}

#[test]
fn exports_are_acknowledged_while_a_seal_waits_for_the_store() {
    let bucket = std::env::var("SEALTRAIL_TEST_S3_BUCKET").unwrap_or_else(|_| {
        panic!("SEALTRAIL_TEST_S3_BUCKET is not set: run the suite with `bash scripts/test`, which starts the S3 server")
    });
    let endpoint =
        std::env::var("AWS_ENDPOINT_URL").expect("AWS_ENDPOINT_URL (set by scripts/test)");
    let target = endpoint
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .parse()
        .expect("AWS_ENDPOINT_URL is http://<ip>:<port>");
    let proxy = common::StallProxy::start(target);
    let dir = workdir();
    let store = format!("s3://{bucket}/stalled-seal-{}", std::process::id());
    let c = Collector::start_with(
        dir.path(),
        &[
            "--store",
            &store,
            "--retention",
            "1d",
            "--flush-interval",
            "100ms",
        ],
        |cmd| {
            cmd.env("AWS_ENDPOINT_URL", format!("http://{}", proxy.addr));
        },
    );
    let http = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let url = c.url("/v1/traces");
    let counter = |name: &str| -> u64 {
        let m = http.get(c.url("/metrics")).send().unwrap().text().unwrap();
        m.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no {name}:\n{m}"))
    };
    let wait_sealed = |n: u64| {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while counter("sealtrail_records_sealed_total") < n {
            assert!(
                std::time::Instant::now() < deadline,
                "not sealed:\n{}",
                c.log.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    assert_eq!(stream_request(&http, &url, 0).0.map(|a| a.0), Some(200));
    wait_sealed(50);

    // The store hangs: the next seal waits for it, and exports are still
    // acknowledged (durable in the spool) meanwhile.
    proxy.stall(true);
    for batch in 1..=5 {
        let (answer, _) = stream_request(&http, &url, batch);
        assert_eq!(
            answer.as_ref().map(|a| a.0),
            Some(200),
            "export {batch} while the store hangs: {answer:?}"
        );
        std::thread::sleep(Duration::from_millis(150));
    }
    assert_eq!(counter("sealtrail_records_spooled_total"), 300);
    assert_eq!(
        counter("sealtrail_records_sealed_total"),
        50,
        "the store hangs"
    );

    // The store is back: everything is sealed, and the archive is intact.
    proxy.stall(false);
    wait_sealed(300);
    c.stop_ok();
    let o = std::process::Command::new(common::bin())
        .args(["verify", "--store", &store, "--public-key", "k.key.pub"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{out}");
    assert!(out.contains("300 record(s)"), "{out}");
}

#[test]
fn connections_past_the_limit_wait_until_one_closes_or_idles_out() {
    let dir = workdir();
    let c = Collector::start(
        dir.path(),
        &["--max-connections", "2", "--idle-timeout", "1500ms"],
    );
    // Clients that keep no idle connection: each request's ends with it.
    let unpooled = |timeout| {
        reqwest::blocking::Client::builder()
            .timeout(timeout)
            .pool_max_idle_per_host(0)
            .build()
            .unwrap()
    };
    // Two idle connections take both of the HTTP receiver's slots.
    let idle = || -> Vec<std::net::TcpStream> {
        let conns = (0..2)
            .map(|_| std::net::TcpStream::connect(&c.http).unwrap())
            .collect();
        std::thread::sleep(Duration::from_millis(200));
        conns
    };
    let waiting = || {
        let err = unpooled(Duration::from_millis(500))
            .get(c.url("/healthz"))
            .send()
            .unwrap_err();
        assert!(err.is_timeout(), "a third connection is not served: {err}");
    };
    // They close: the next clients are served.
    let conns = idle();
    waiting();
    drop(conns);
    for _ in 0..3 {
        let r = unpooled(Duration::from_secs(30))
            .get(c.url("/healthz"))
            .send()
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    // They stay open but idle: the collector closes them after the idle
    // timeout, and the next client is served.
    let mut conns = idle();
    waiting();
    let r = unpooled(Duration::from_secs(30))
        .get(c.url("/healthz"))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    for conn in &mut conns {
        use std::io::Read;
        conn.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut b = [0u8; 1];
        assert!(
            matches!(conn.read(&mut b), Ok(0) | Err(_)),
            "the collector closed the idle connection"
        );
    }
    send_span(
        &c,
        "00000000000000a1",
        None,
        "after-limit",
        vec![attr("audit.session_id", "limit")],
    );
    c.stop_ok();
    assert!(records(dir.path()).iter().any(|r| r.name == "after-limit"));
}

#[test]
fn serve_refuses_to_start_on_bad_settings_with_a_clear_error() {
    let dir = workdir();
    let serve = |args: &[&str]| {
        let o = std::process::Command::new(common::bin())
            .arg("serve")
            .args(["--otlp-grpc", "127.0.0.1:0"])
            .args(if args.contains(&"--otlp-http") {
                &[][..]
            } else {
                &["--otlp-http", "127.0.0.1:0"][..]
            })
            .args(args)
            .current_dir(dir.path())
            .env_remove("SEALTRAIL_SIGNING_KEY_FILE")
            .env_remove("SEALTRAIL_STORE")
            .output()
            .unwrap();
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    let (code, err) = serve(&[]);
    assert_eq!(code, Some(2));
    assert!(err.contains("a signing key is required"), "{err}");
    let (code, err) = serve(&["--signing-key", "k.key", "--max-body", "12 parsecs"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("unknown unit"), "{err}");
    let (code, err) = serve(&["--signing-key", "k.key", "--max-connections", "0"]);
    assert_eq!(code, Some(2));
    assert!(
        err.contains("--max-connections must be at least 1"),
        "{err}"
    );
    let (code, err) = serve(&["--signing-key", "k.key", "--idle-timeout", "1ms"]);
    assert_eq!(code, Some(2));
    assert!(
        err.contains("--idle-timeout must be at least 100ms"),
        "{err}"
    );
    std::fs::write(dir.path().join("bad.toml"), "max_body = 1\n").unwrap();
    let (code, err) = serve(&["--signing-key", "k.key", "--config", "bad.toml"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("unknown field"), "{err}");
    let (code, err) = serve(&["--signing-key", "k.key", "--store", "ftp://nope"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("ftp"), "{err}");
    // A port in use.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let (code, err) = serve(&["--signing-key", "k.key", "--otlp-http", &addr]);
    assert_eq!(code, Some(2));
    assert!(err.contains("cannot listen on --otlp-http"), "{err}");
    for (args, says) in [
        (
            &["--max-body", "0"][..],
            "--max-body \"0\" is not a usable size",
        ),
        (&["--zstd-level", "25"], "--zstd-level 25"),
        (&["--lock-mode", "foo"], "--lock-mode \"foo\""),
        (
            &["--retention", "7y"],
            "--retention applies to an s3:// store",
        ),
        (
            &["--writer-id", "a/b"],
            "is not a valid writer id: use 1 to 64",
        ),
        (&["--store", "memory://"], "an in-memory archive is lost"),
        (
            &["--max-batch-records", "0"],
            "--max-batch-records must be at least 1",
        ),
        (&["--session-keys", ","], "--session-keys"),
    ] {
        let (code, err) = serve(&[&["--signing-key", "k.key"][..], args].concat());
        assert_eq!(code, Some(2), "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
    }
    // None of the refusals created a directory or a file.
    let mut left: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, ["bad.toml", "k.key", "k.key.pub"]);
    // A second collector on the same spool.
    let c = Collector::start(dir.path(), &[]);
    let (code, err) = serve(&["--signing-key", "k.key", "--spool-dir", "spool"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("the spool is in use"), "{err}");
    c.stop_ok();
    // None of this wrote a record.
    assert!(records(dir.path()).is_empty());
}

#[test]
fn the_collector_archives_to_s3_under_object_lock() {
    let bucket = std::env::var("SEALTRAIL_TEST_S3_BUCKET").unwrap_or_else(|_| {
        panic!("SEALTRAIL_TEST_S3_BUCKET is not set: run the suite with `bash scripts/test`, which starts the S3 server")
    });
    let dir = workdir();
    let store = format!("s3://{bucket}/collector-{}", std::process::id());
    let c = Collector::start(dir.path(), &["--store", &store, "--retention", "1d"]);
    send_span(
        &c,
        "0000000000000001",
        None,
        "invoke_agent",
        vec![attr("gen_ai.conversation.id", "conv-s3")],
    );
    c.stop_ok();
    let run = |args: &[&str]| {
        std::process::Command::new(common::bin())
            .args(args)
            .current_dir(dir.path())
            .output()
            .unwrap()
    };
    let o = run(&[
        "verify",
        "--store",
        &store,
        "--public-key",
        "k.key.pub",
        "--check-retention",
        "1d",
    ]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    let o = run(&["show", "--store", &store, "--session", "conv-s3"]);
    assert!(String::from_utf8_lossy(&o.stdout).contains("invoke_agent"));
}

/// Request bodies take at most 32 slots at once (memory stays bounded): a
/// request that waits 5 s for one is refused as retryable (503, reason
/// "busy") without being read, and once the slots free, requests are
/// archived again.
#[test]
fn a_request_that_waits_too_long_for_a_body_slot_is_refused_as_busy() {
    use std::io::Write;
    let dir = workdir();
    let c = Collector::start(dir.path(), &[]);
    let body = serde_json::to_vec(&span_json(
        TRACE,
        "00000000000000c1",
        None,
        "chat",
        vec![attr("gen_ai.conversation.id", "conv-busy")],
    ))
    .unwrap();
    // 32 uploads that send their headers and half their body, then stall.
    let mut slow: Vec<std::net::TcpStream> = (0..32)
        .map(|_| {
            let mut s = std::net::TcpStream::connect(&c.http).unwrap();
            write!(
                s,
                "POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                body.len()
            )
            .unwrap();
            s.write_all(&body[..body.len() / 2]).unwrap();
            s
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let refused = || {
        span_json(
            TRACE,
            "00000000000000c2",
            None,
            "chat",
            vec![attr("gen_ai.conversation.id", "conv-busy")],
        )
    };
    let started = std::time::Instant::now();
    let (status, text) = post_json(&c, &refused());
    assert_eq!(status, 503, "{text}");
    assert!(text.contains("busy"), "{text}");
    assert!(
        started.elapsed() >= Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    let m = metrics_of(&c);
    assert!(
        m.lines().any(
            |l| l.starts_with("sealtrail_requests_rejected_total{reason=\"busy\"}")
                && l.ends_with(" 1")
        ),
        "{m}"
    );
    // The stalled uploads finish: they are acknowledged (once), and the
    // refused span, sent again, is too.
    for s in &mut slow {
        s.write_all(&body[body.len() / 2..]).unwrap();
    }
    for s in &mut slow {
        use std::io::Read;
        let mut head = [0u8; 12];
        s.read_exact(&mut head).unwrap();
        assert_eq!(&head, b"HTTP/1.1 200");
    }
    let (status, text) = post_json(&c, &refused());
    assert_eq!(status, 200, "{text}");
    c.stop_ok();
    assert_eq!(session(&records(dir.path()), "conv-busy").len(), 2);
    assert_intact(dir.path());
}
