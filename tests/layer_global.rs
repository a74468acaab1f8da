//! The layer as the global default subscriber (what `.init()` sets), which
//! also sees the spans and events of every other thread, sealtrail's own
//! included. One test, since a process has one global default:
//! - an event, or a `Span::record`, whose value, when formatted, emits an
//!   event in the same span does not deadlock the layer (tracing lets such a
//!   nested event through to a global default);
//! - under `Capture::All`, the spans of the archive's own I/O (here a store
//!   that opens a span per call, as an HTTP client does) are not captured:
//!   they would feed the trail with itself, and under `Block` the seal
//!   thread would wait on the queue it drains.

mod common;

use std::sync::Arc;

use common::*;
use object_store::memory::InMemory;
use sealtrail::layer::Capture;
use sealtrail::Archive;
use tracing::{info, info_span, Instrument};
use tracing_subscriber::prelude::*;

struct Noisy;

impl std::fmt::Debug for Noisy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        info!("formatting a noisy value");
        f.write_str("noisy")
    }
}

#[test]
fn as_the_global_subscriber_the_layer_neither_deadlocks_nor_captures_its_own_io() {
    let dir = tempfile::tempdir().unwrap();
    let archive = Archive::from_store(Arc::new(Chatty(InMemory::new())), "", "memory://chatty");
    let (layer, guard) = layer_builder(&archive, dir.path())
        .with_capture(Capture::All)
        .build()
        .unwrap();
    tracing_subscriber::registry().with(layer).init();
    let (done_tx, done) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        info_span!(
            "execute_tool",
            gen_ai.operation.name = "execute_tool",
            gen_ai.tool.call.result = tracing::field::Empty
        )
        .in_scope(|| {
            info!(value = ?Noisy, "tool output");
            tracing::Span::current()
                .record("gen_ai.tool.call.result", tracing::field::debug(&Noisy));
        });
        let _ = done_tx.send(());
    });
    done.recv_timeout(std::time::Duration::from_secs(30))
        .expect("the layer deadlocked on an event emitted while formatting another");
    guard.flush().unwrap();
    drop(guard);
    let records = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(all_records(&archive));
    let names: Vec<&str> = records.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(
        names,
        ["execute_tool"],
        "the store's own spans were captured"
    );
    let events: Vec<&str> = records[0].events.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(
        events,
        [
            "formatting a noisy value",
            "tool output",
            "formatting a noisy value"
        ]
    );
    assert_eq!(
        records[0].attributes.get("gen_ai.tool.call.result"),
        Some(&sealtrail::Value::Str("noisy".into()))
    );
}

/// An in-memory store that opens a span per call, as an HTTP client does.
#[derive(Debug)]
struct Chatty(InMemory);

impl std::fmt::Display for Chatty {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Chatty")
    }
}

type P = object_store::path::Path;
type R<T> = object_store::Result<T>;
type Stream<T> = futures::stream::BoxStream<'static, R<T>>;

#[async_trait::async_trait]
impl object_store::ObjectStore for Chatty {
    async fn put_opts(
        &self,
        p: &P,
        payload: object_store::PutPayload,
        opts: object_store::PutOptions,
    ) -> R<object_store::PutResult> {
        let span = info_span!("store put", key = %p);
        self.0.put_opts(p, payload, opts).instrument(span).await
    }
    async fn put_multipart_opts(
        &self,
        p: &P,
        opts: object_store::PutMultipartOptions,
    ) -> R<Box<dyn object_store::MultipartUpload>> {
        self.0.put_multipart_opts(p, opts).await
    }
    async fn get_opts(&self, p: &P, opts: object_store::GetOptions) -> R<object_store::GetResult> {
        let span = info_span!("store get", key = %p);
        self.0.get_opts(p, opts).instrument(span).await
    }
    fn delete_stream(&self, locations: Stream<P>) -> Stream<P> {
        self.0.delete_stream(locations)
    }
    fn list(&self, prefix: Option<&P>) -> Stream<object_store::ObjectMeta> {
        let _span = info_span!("store list").entered();
        self.0.list(prefix)
    }
    async fn list_with_delimiter(&self, prefix: Option<&P>) -> R<object_store::ListResult> {
        self.0.list_with_delimiter(prefix).await
    }
    async fn copy_opts(&self, from: &P, to: &P, opts: object_store::CopyOptions) -> R<()> {
        self.0.copy_opts(from, to, opts).await
    }
}
