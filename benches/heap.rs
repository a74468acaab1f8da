//! Heap held per open span (layer state on top of the registry's own) and per
//! idle session (the chain head a writer keeps between records). Prints bytes;
//! a counting global allocator measures them.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

use tracing_subscriber::prelude::*;

struct Counting;
static HELD: AtomicIsize = AtomicIsize::new(0);

// SAFETY: forwards to the system allocator, only counting sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        HELD.fetch_add(l.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        HELD.fetch_sub(l.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        HELD.fetch_add(n as isize - l.size() as isize, Ordering::Relaxed);
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static A: Counting = Counting;

#[path = "fixtures.rs"]
mod fixtures;

const SPANS: usize = 10_000;

fn open_spans(dispatch: &tracing::Dispatch) -> f64 {
    tracing::dispatcher::with_default(dispatch, || {
        let mut spans = Vec::with_capacity(SPANS);
        let before = HELD.load(Ordering::Relaxed);
        spans.extend((0..SPANS).map(|i| fixtures::genai_span(i as u64)));
        let per = (HELD.load(Ordering::Relaxed) - before) as f64 / SPANS as f64;
        drop(spans);
        per
    })
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let bare = tracing::Dispatch::new(tracing_subscriber::registry());
    let (audit, guard) = sealtrail::AuditLayer::builder()
        .with_archive(sealtrail::Archive::memory())
        .with_signing_key(sealtrail::keys::SigningKey::from_bytes(&[1; 32]))
        .with_spool_dir(dir.path().join("spool"))
        .with_writer_id("heap")
        .build()
        .unwrap();
    let audited = tracing::Dispatch::new(tracing_subscriber::registry().with(audit));
    // The worker has started and sealed what it found: it allocates nothing
    // while the spans are open, and every byte counted is the spans'.
    guard.flush().unwrap();
    let base = open_spans(&bare);
    let with = open_spans(&audited);
    drop(guard);
    println!("heap per open span (8 fields): registry {base:.0} B, + sealtrail {with:.0} B: the layer's state is {:.0} B", with - base);

    // Per idle session: what a writer keeps for a session between its records.
    const SESSIONS: usize = 100_000;
    let mut chain = sealtrail::chain::Chain::new("heap");
    let mut line = Vec::with_capacity(4096);
    let mut records: Vec<_> = (0..SESSIONS)
        .map(|i| sealtrail::TraceRecord::new(format!("session-{i:08}"), sealtrail::Kind::Span, "n"))
        .collect();
    let before = HELD.load(Ordering::Relaxed);
    for r in &mut records {
        line.clear();
        chain.append(r, &mut line).unwrap();
    }
    let per = (HELD.load(Ordering::Relaxed) - before) as f64 / SESSIONS as f64;
    println!("heap per idle session (16-byte session id): {per:.0} B");
}
