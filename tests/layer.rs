//! The tracing layer: what it captures, how it maps spans, and that dropping
//! the guard seals everything. Each test sets its subscriber for its own
//! thread only (`with_default`).

mod common;

use common::*;
use sealtrail::{Archive, Attributes, Kind, StatusCode, Value};
use tracing::{error, info, info_span, Instrument, Span};
use tracing_subscriber::prelude::*;

fn str_attr<'a>(r: &'a sealtrail::TraceRecord, k: &str) -> Option<&'a str> {
    match r.attributes.get(k)? {
        Value::Str(s) => Some(s),
        _ => None,
    }
}

#[tokio::test]
async fn maps_kinds_sessions_late_fields_events_and_status() {
    let dir = tempfile::tempdir().unwrap();
    let archive = Archive::memory();
    let (layer, guard) = layer_builder(&archive, dir.path()).build().unwrap();
    let subscriber = tracing_subscriber::registry().with(layer);
    tracing::subscriber::with_default(subscriber, || {
        info_span!("unrelated", http.method = "GET").in_scope(|| info!("not audited"));
        let agent = info_span!(
            "invoke_agent",
            gen_ai.operation.name = "invoke_agent",
            gen_ai.conversation.id = tracing::field::Empty
        );
        agent.in_scope(|| {
            let chat = info_span!(
                "chat",
                gen_ai.operation.name = "chat",
                gen_ai.request.model = "gpt-4o",
                gen_ai.usage.output_tokens = tracing::field::Empty
            );
            chat.in_scope(|| {
                Span::current().record("gen_ai.usage.output_tokens", 38);
                info!(chunk = 1, "streamed");
            });
            drop(chat);
            // The session arrives on the ancestor after the child was created.
            Span::current().record("gen_ai.conversation.id", "conv-1");
            info_span!(
                "execute_tool",
                gen_ai.operation.name = "execute_tool",
                gen_ai.tool.name = "lookup"
            )
            .in_scope(|| info_span!("helper without conventions").in_scope(|| {}));
            let policy = info_span!(
                "policy",
                policy.name = "payments",
                policy.decision = "deny",
                audit.kind = "policy_check"
            );
            policy.in_scope(|| error!("denied: over the limit"));
            let approval = info_span!(
                "approval",
                audit.kind = "human",
                otel.name = "human approval",
                otel.status_code = "OK"
            );
            // The approval was caused by the denial: a link, as in OTLP.
            approval.follows_from(&policy);
            drop(policy);
            approval.in_scope(|| {});
        });
        drop(agent);
        info_span!("orphan", gen_ai.system = "openai").in_scope(|| {});
    });
    let stats = guard.stats();
    drop(guard);
    assert_eq!(stats.captured, 7, "{stats:?}");

    let records = all_records(&archive).await;
    let names: Vec<&str> = records.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "chat",
            "helper without conventions",
            "execute_tool",
            "policy",
            "human approval",
            "invoke_agent",
            "orphan"
        ]
    );
    let by = |n: &str| records.iter().find(|r| r.name == n).unwrap();
    assert_eq!(by("chat").kind, Kind::LlmCall);
    assert_eq!(by("execute_tool").kind, Kind::ToolCall);
    assert_eq!(by("helper without conventions").kind, Kind::Span);
    assert_eq!(by("policy").kind, Kind::PolicyCheck);
    assert_eq!(by("human approval").kind, Kind::Human);
    assert_eq!(by("invoke_agent").kind, Kind::Agent);
    assert_eq!(by("orphan").kind, Kind::LlmCall);

    // The chat span closed before its ancestor got the session: it falls back
    // to the trace id; everything that closed after is in conv-1.
    let agent = by("invoke_agent");
    assert_eq!(agent.session, "conv-1");
    assert_eq!(by("chat").session, *agent.trace_id.as_ref().unwrap());
    for n in [
        "execute_tool",
        "helper without conventions",
        "policy",
        "human approval",
    ] {
        assert_eq!(by(n).session, "conv-1", "{n}");
    }
    assert_eq!(
        by("orphan").session,
        *by("orphan").trace_id.as_ref().unwrap()
    );
    assert_ne!(by("orphan").trace_id, agent.trace_id);

    // Late field, typed; event with its fields; error and ok status.
    assert_eq!(
        by("chat").attributes.get("gen_ai.usage.output_tokens"),
        Some(&Value::Int(38))
    );
    assert_eq!(str_attr(by("chat"), "gen_ai.request.model"), Some("gpt-4o"));
    let ev = &by("chat").events[0];
    assert_eq!(
        (ev.name.as_str(), ev.attributes.get("chunk")),
        ("streamed", Some(&Value::Int(1)))
    );
    assert_eq!(by("policy").status.code, StatusCode::Error);
    assert_eq!(
        by("policy").status.message.as_deref(),
        Some("denied: over the limit")
    );
    assert_eq!(by("human approval").status.code, StatusCode::Ok);
    let link: Attributes = [
        (
            "trace_id",
            Value::from(by("policy").trace_id.clone().unwrap()),
        ),
        (
            "span_id",
            Value::from(by("policy").span_id.clone().unwrap()),
        ),
    ]
    .into_iter()
    .collect();
    assert_eq!(
        by("human approval").attributes.get("otel.links"),
        Some(&Value::Array(vec![Value::Map(link)]))
    );
    assert!(by("human approval").attributes.get("otel.name").is_none());

    // Parent ids link the tree; one trace for the agent's spans.
    assert_eq!(by("chat").parent_span_id, agent.span_id);
    assert_eq!(
        by("helper without conventions").parent_span_id,
        by("execute_tool").span_id
    );
    assert!(records
        .iter()
        .filter(|r| r.name != "orphan")
        .all(|r| r.trace_id == agent.trace_id));
    assert!(records
        .iter()
        .all(|r| r.source == "tracing" && r.resource.get("service.name").is_some()));

    let report = verify_now(&archive).await;
    assert!(report.is_intact(), "{}", show(&report));
    assert_eq!(report.records, 7);
}

#[test]
fn spans_across_await_points_keep_their_session_and_parents() {
    let dir = tempfile::tempdir().unwrap();
    let archive = Archive::memory();
    let (layer, guard) = layer_builder(&archive, dir.path()).build().unwrap();
    let subscriber = tracing_subscriber::registry().with(layer);
    tracing::subscriber::with_default(subscriber, || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        rt.block_on(async {
            let turn = |session: &'static str| {
                async move {
                    for i in 0..3 {
                        tokio::task::yield_now().await;
                        async {
                            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                        }
                        .instrument(info_span!(
                            "execute_tool",
                            gen_ai.operation.name = "execute_tool",
                            step = i
                        ))
                        .await;
                    }
                }
                .instrument(info_span!(
                    "invoke_agent",
                    gen_ai.operation.name = "invoke_agent",
                    session.id = session
                ))
            };
            // Two sessions interleaved on one thread.
            tokio::join!(turn("a"), turn("b"));
        });
    });
    drop(guard);
    let records = futures_block(all_records(&archive));
    assert_eq!(records.len(), 8);
    for s in ["a", "b"] {
        let mine: Vec<_> = records.iter().filter(|r| r.session == s).collect();
        assert_eq!(mine.len(), 4, "session {s}");
        let agent = mine.iter().find(|r| r.kind == Kind::Agent).unwrap();
        let seqs: Vec<u64> = mine.iter().map(|r| r.seq).collect();
        assert_eq!(seqs, [0, 1, 2, 3]);
        for tool in mine.iter().filter(|r| r.kind == Kind::ToolCall) {
            assert_eq!(tool.parent_span_id, agent.span_id);
            assert_eq!(tool.trace_id, agent.trace_id);
        }
    }
    assert!(futures_block(verify_now(&archive)).is_intact());
}

fn futures_block<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(f)
}

#[tokio::test]
async fn dropping_the_guard_seals_everything_and_closes_the_writer() {
    let dir = tempfile::tempdir().unwrap();
    let archive = Archive::memory();
    // A flush interval far longer than the test: only the guard can seal.
    let (layer, guard) = layer_builder(&archive, dir.path())
        .with_flush_interval(std::time::Duration::from_secs(3600))
        .build()
        .unwrap();
    tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), || {
        for i in 0..1000 {
            info_span!(
                "chat",
                gen_ai.operation.name = "chat",
                audit.session_id = "s",
                n = i
            )
            .in_scope(|| {});
        }
    });
    drop(guard);
    let records = all_records(&archive).await;
    assert_eq!(records.len(), 1000);
    assert!(records.iter().enumerate().all(|(i, r)| r.seq == i as u64));
    let report = verify_now(&archive).await;
    assert!(report.is_intact(), "{}", show(&report));
    // The newest seal is closed: no heartbeat is owed, however late we verify.
    let later = sealtrail::verify(
        &archive,
        &[key().verifying_key()],
        &sealtrail::VerifyOptions::default().with_as_of(u64::MAX / 2),
    )
    .await
    .unwrap();
    assert!(later.is_intact(), "{}", show(&later));
    // The spool holds nothing sealed.
    let left: u64 = std::fs::read_dir(dir.path().join("spool"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("segment-"))
        .map(|e| e.metadata().unwrap().len())
        .sum();
    assert_eq!(left, 0);
}

#[test]
fn build_errors_are_clear() {
    let dir = tempfile::tempdir().unwrap();
    let err = sealtrail::AuditLayer::builder()
        .with_store("ftp://nowhere")
        .with_signing_key(key())
        .with_spool_dir(dir.path().join("s1"))
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("unsupported scheme"), "{err}");

    let err = sealtrail::AuditLayer::builder()
        .with_store(dir.path().join("data").to_str().unwrap())
        .with_signing_key_file(dir.path().join("missing.key"))
        .with_spool_dir(dir.path().join("s2"))
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("missing.key"), "{err}");
    // A bad setting creates nothing.
    assert!(!dir.path().join("data").exists() && !dir.path().join("s2").exists());
    let err = sealtrail::AuditLayer::builder()
        .with_store(dir.path().join("data").to_str().unwrap())
        .with_signing_key(key())
        .with_spool_dir(dir.path().join("s2"))
        .with_heartbeat(std::time::Duration::ZERO)
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("at least 1 s"), "{err}");
    assert!(!dir.path().join("data").exists() && !dir.path().join("s2").exists());

    if std::env::var_os(sealtrail::layer::SIGNING_KEY_ENV).is_none() {
        let err = sealtrail::AuditLayer::builder()
            .with_store(dir.path().join("data").to_str().unwrap())
            .with_spool_dir(dir.path().join("s3"))
            .build()
            .unwrap_err();
        assert!(
            err.to_string().contains("SEALTRAIL_SIGNING_KEY_FILE"),
            "{err}"
        );
        assert!(err.to_string().contains("sealtrail keygen"), "{err}");
        assert!(!dir.path().join("data").exists());
    }

    // A store that cannot be reached (here: a path under a regular file).
    std::fs::write(dir.path().join("file"), b"").unwrap();
    let err = sealtrail::AuditLayer::builder()
        .with_store(dir.path().join("file/data").to_str().unwrap())
        .with_signing_key(key())
        .with_spool_dir(dir.path().join("s4"))
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("file/data"), "{err}");

    let archive = Archive::memory();
    let (_layer, _guard) = layer_builder(&archive, dir.path()).build().unwrap();
    let err = layer_builder(&archive, dir.path())
        .with_writer_id("another-writer")
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("the spool is in use"), "{err}");

    let err = layer_builder(&archive, &dir.path().join("x"))
        .with_writer_id("bad/id")
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("invalid writer id"), "{err}");
}

/// Two layers of one process under one writer id and store would fork the
/// writer's seal chain: the second is refused when built (the store named
/// by another path too), and nothing of it is written; once the first has
/// stopped, the id is free. Another store or another id is fine.
#[test]
fn a_second_layer_under_the_same_writer_id_and_store_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let build = |store: &str, spool: &str, id: &str| {
        sealtrail::AuditLayer::builder()
            .with_store(store)
            .with_signing_key(key())
            .with_spool_dir(dir.path().join(spool))
            .with_writer_id(id)
            .build()
    };
    let first = build(data.to_str().unwrap(), "s1", "agent").unwrap();
    let other_name = format!("{}/../data/.", data.join("..").join("data").display());
    let err = build(&other_name, "s2", "agent").unwrap_err();
    assert!(
        err.to_string()
            .contains("another audit layer of this process writes as \"agent\""),
        "{err}"
    );
    assert!(!dir.path().join("s2").exists());
    let other_id = build(data.to_str().unwrap(), "s3", "agent-2").unwrap();
    let other_store = build(dir.path().join("data2").to_str().unwrap(), "s4", "agent").unwrap();
    drop((other_id, other_store));
    first.1.shutdown().unwrap();
    drop(first.0);
    let again = build(data.to_str().unwrap(), "s2", "agent").unwrap();
    again.1.shutdown().unwrap();
    let report = futures_block(sealtrail::verify(
        &Archive::open(data.to_str().unwrap()).unwrap(),
        &[key().verifying_key()],
        &sealtrail::VerifyOptions::default(),
    ))
    .unwrap();
    assert!(report.is_intact(), "{report:?}");
}

#[test]
fn layers_with_different_session_keys_each_read_their_own() {
    // One callsite, seen on one thread by two layers in turn: each layer
    // resolves the session with its own keys (callsite facts are cached per
    // layer and thread).
    fn turn() {
        info_span!(
            "chat",
            gen_ai.operation.name = "chat",
            a.sid = "from-a",
            b.sid = "from-b"
        )
        .in_scope(|| {});
    }
    // Everything on this one thread.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut sessions = Vec::new();
    for key in ["a.sid", "b.sid"] {
        let dir = tempfile::tempdir().unwrap();
        let archive = Archive::memory();
        let (layer, guard) = layer_builder(&archive, dir.path())
            .with_session_keys([key])
            .build()
            .unwrap();
        tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), turn);
        drop(guard);
        let records = rt.block_on(all_records(&archive));
        assert_eq!(records.len(), 1);
        sessions.push(records[0].session.clone());
    }
    assert_eq!(sessions, ["from-a", "from-b"]);
}

/// A span that is not captured but names a session (a request span with
/// only `session.id`, as an `#[instrument(fields(session.id = ..))]` handler
/// has) gives that session to the captured spans inside it, also when the
/// session is recorded after the span was created; without one, the trace id.
#[tokio::test]
async fn an_uncaptured_span_that_names_a_session_gives_it_to_the_spans_inside() {
    let dir = tempfile::tempdir().unwrap();
    let archive = Archive::memory();
    let (layer, guard) = layer_builder(&archive, dir.path()).build().unwrap();
    tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), || {
        let chat = |name: &'static str| {
            info_span!("chat", otel.name = name, gen_ai.operation.name = "chat").in_scope(|| {})
        };
        info_span!("request", session.id = "s-declared").in_scope(|| {
            info_span!("handler", http.route = "/turn").in_scope(|| chat("in s-declared"))
        });
        let late = info_span!("request", session.id = tracing::field::Empty);
        late.in_scope(|| {
            chat("before the session is known");
            Span::current().record("session.id", "s-recorded");
            chat("in s-recorded");
        });
        info_span!("request", http.route = "/none").in_scope(|| chat("in its trace"));
    });
    drop(guard);
    let records = all_records(&archive).await;
    let session = |n: &str| {
        let r = records.iter().find(|r| r.name == n).unwrap();
        (r.session.clone(), r.trace_id.clone().unwrap())
    };
    assert_eq!(session("in s-declared").0, "s-declared");
    assert_eq!(session("in s-recorded").0, "s-recorded");
    for n in ["before the session is known", "in its trace"] {
        let (s, trace) = session(n);
        assert_eq!(s, trace, "{n}");
    }
    assert_eq!(records.len(), 4, "the request spans are not captured");
    assert!(verify_now(&archive).await.is_intact());
}

/// A span whose session id is over-long, or the reserved gap session, is
/// archived under the digest of the id (never refused, never taken for a
/// statement of loss), and verify is intact.
#[tokio::test]
async fn over_long_and_reserved_session_ids_are_archived_under_their_digest() {
    let dir = tempfile::tempdir().unwrap();
    let archive = Archive::memory();
    let (layer, guard) = layer_builder(&archive, dir.path()).build().unwrap();
    let long = "s".repeat(2000);
    tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), || {
        for id in [long.as_str(), sealtrail::layer::GAP_SESSION] {
            info_span!(
                "execute_tool",
                gen_ai.operation.name = "execute_tool",
                audit.session_id = id
            )
            .in_scope(|| info_span!("child", step = 1).in_scope(|| {}));
        }
    });
    let stats = guard.stats();
    drop(guard);
    assert_eq!((stats.captured, stats.dropped), (4, 0));
    let records = all_records(&archive).await;
    assert_eq!(records.len(), 4);
    for (r, id) in records.iter().zip([&long, &long, GAP, GAP].iter()) {
        let digest = sealtrail::Digest::sha256(id.as_bytes()).to_hex();
        assert_eq!(r.session, format!("sha256:{digest}"), "{}", r.name);
    }
    let report = verify_now(&archive).await;
    assert!(report.is_intact(), "{}", show(&report));
}

const GAP: &str = sealtrail::layer::GAP_SESSION;

/// The layer composes with per-layer filters, and `Capture::All` narrowed by
/// one captures exactly what the filter lets through.
#[tokio::test]
async fn per_layer_filters_and_capture_all() {
    use tracing_subscriber::filter::{filter_fn, LevelFilter};
    let dir = tempfile::tempdir().unwrap();
    let archive = Archive::memory();
    let (audit, guard) = layer_builder(&archive, dir.path()).build().unwrap();
    let all = Archive::memory();
    let other = dir.path().join("other");
    let (everything, guard_all) = layer_builder(&all, &other)
        .with_capture(sealtrail::layer::Capture::All)
        .build()
        .unwrap();
    let subscriber = tracing_subscriber::registry()
        .with(audit.with_filter(LevelFilter::INFO))
        .with(everything.with_filter(filter_fn(|m| m.target() == "billing")));
    tracing::subscriber::with_default(subscriber, || {
        info_span!(
            "chat",
            gen_ai.operation.name = "chat",
            audit.session_id = "s"
        )
        .in_scope(|| {
            tracing::debug_span!("debug child", gen_ai.operation.name = "chat").in_scope(|| {});
            info_span!("info child").in_scope(|| {});
        });
        info_span!(target: "billing", "charge", amount = 12).in_scope(|| {});
        info_span!(target: "elsewhere", "ignored", amount = 1).in_scope(|| {});
        // Captured by both layers, each into its own archive.
        info_span!(target: "billing", "both", audit.kind = "data_access", amount = 3)
            .in_scope(|| {});
    });
    drop((guard, guard_all));
    let names = |records: Vec<sealtrail::TraceRecord>| {
        let mut n: Vec<String> = records.into_iter().map(|r| r.name).collect();
        n.sort();
        n
    };
    assert_eq!(
        names(all_records(&archive).await),
        ["both", "chat", "info child"]
    );
    assert_eq!(names(all_records(&all).await), ["both", "charge"]);
    assert!(verify_now(&archive).await.is_intact());
    assert!(verify_now(&all).await.is_intact());
}

/// An unbounded shutdown timeout means "wait for good", not a panic.
#[test]
fn an_unbounded_shutdown_timeout_waits_rather_than_panics() {
    let dir = tempfile::tempdir().unwrap();
    let archive = Archive::memory();
    let (_layer, guard) = layer_builder(&archive, dir.path())
        .with_shutdown_timeout(std::time::Duration::MAX)
        .build()
        .unwrap();
    guard.flush().unwrap();
    drop(guard);
}
