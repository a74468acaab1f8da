//! An S3 outage loses nothing: a loopback TCP proxy between sealtrail and the
//! S3 server refuses connections for 30 s while an agent keeps tracing. (The
//! server itself is not stopped: moto keeps its data in memory.) With
//! `Overload::Block` nothing is dropped, seals fail and are retried, and the
//! backlog drains once the proxy lets traffic through again. Then answers are
//! lost: the server stores each write and the proxy drops its answer; each
//! retry finds its own bytes there and goes on, with no conflict. Last, the
//! server stalls: it takes connections and requests and never answers; the
//! stalled request fails at the client's read timeout (60 s) and the seal
//! is retried.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use sealtrail::Archive;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpSocket, TcpStream};
use tokio::task::JoinSet;
use tracing::info_span;
use tracing_subscriber::prelude::*;

const OUTAGE: Duration = Duration::from_secs(30);

/// The accept loop and the connections it forwards.
type Running = (
    tokio::task::JoinHandle<()>,
    Arc<tokio::sync::Mutex<JoinSet<()>>>,
);

/// Forwards connections to `upstream`; while down it does not listen at all
/// (connections are refused) and cuts the connections it had.
struct Proxy {
    addr: std::net::SocketAddr,
    upstream: String,
    running: Option<Running>,
    mode: Mode,
}

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    /// Both ways.
    Forward,
    /// Requests reach the server, answers are dropped.
    LoseAnswers,
    /// Connections are taken and requests read, and nothing is answered:
    /// a stalled server. Such a connection stays open (also after the
    /// mode changes) until the client gives up on it.
    Stall,
}

impl Proxy {
    async fn start(upstream: String) -> Proxy {
        let mut p = Proxy {
            addr: "127.0.0.1:0".parse().unwrap(),
            upstream,
            running: None,
            mode: Mode::Forward,
        };
        p.up().await;
        p
    }

    async fn up(&mut self) {
        let socket = TcpSocket::new_v4().unwrap();
        socket.set_reuseaddr(true).unwrap();
        socket.bind(self.addr).unwrap();
        let listener = socket.listen(128).unwrap();
        self.addr = listener.local_addr().unwrap();
        let conns = Arc::new(tokio::sync::Mutex::new(JoinSet::new()));
        let (c, upstream) = (conns.clone(), self.upstream.clone());
        let mode = self.mode;
        let accept = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if mode == Mode::Stall {
                    // Not in `conns`: not closed when the mode changes.
                    tokio::spawn(async move {
                        let _ = tokio::io::copy(&mut client, &mut tokio::io::sink()).await;
                    });
                    continue;
                }
                let upstream = upstream.clone();
                c.lock().await.spawn(async move {
                    let Ok(mut server) = TcpStream::connect(&upstream).await else {
                        return;
                    };
                    if mode == Mode::Forward {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                        return;
                    }
                    // The request goes through; once the server starts its
                    // answer (the write is done), the client's connection
                    // closes without it.
                    let (mut from_client, to_client) = client.into_split();
                    let (mut from_server, mut to_server) = server.into_split();
                    let up = tokio::spawn(async move {
                        let _ = tokio::io::copy(&mut from_client, &mut to_server).await;
                    });
                    let _ = from_server.read(&mut [0u8; 1]).await;
                    up.abort();
                    drop(to_client);
                });
            }
        });
        self.running = Some((accept, conns));
    }

    /// From now on, connections are handled as `mode` says; open ones are
    /// closed (stalled ones excepted), so that the clients connect again.
    async fn set_mode(&mut self, mode: Mode) {
        self.down().await;
        self.mode = mode;
        self.up().await;
    }

    /// `mode` for 3 s, then both ways again.
    async fn for_a_while(&mut self, mode: Mode) {
        self.set_mode(mode).await;
        tokio::time::sleep(Duration::from_secs(3)).await;
        self.set_mode(Mode::Forward).await;
    }

    async fn down(&mut self) {
        if let Some((accept, conns)) = self.running.take() {
            accept.abort();
            let _ = accept.await;
            conns.lock().await.abort_all();
        }
    }
}

/// Waits until everything captured so far is sealed, and says how long
/// that took; fails after `within`, saying `what`.
async fn all_sealed(guard: &sealtrail::FlushGuard, within: Duration, what: &str) -> Duration {
    let backlog = guard.stats().captured;
    let started = Instant::now();
    while guard.stats().sealed < backlog {
        assert!(started.elapsed() < within, "{what}: {:?}", guard.stats());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_s3_outage_loses_nothing_and_the_backlog_drains() {
    let bucket = std::env::var("SEALTRAIL_TEST_S3_BUCKET").unwrap_or_else(|_| {
        panic!("SEALTRAIL_TEST_S3_BUCKET is not set: run the suite with `bash scripts/test`, which starts the S3 server")
    });
    let endpoint =
        std::env::var("AWS_ENDPOINT_URL").expect("AWS_ENDPOINT_URL, set by scripts/test");
    let upstream = endpoint
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    let mut proxy = Proxy::start(upstream).await;

    // The archive as production opens it (`s3://`, with a retention, so
    // every write is the presigned Object Lock PUT, which has no retries of
    // its own), through the proxy: the layer keeps the records pending (and
    // spooled) and retries at every flush. (This test binary holds this one
    // test, so the endpoint can be set for the process.)
    std::env::set_var("AWS_ENDPOINT_URL", format!("http://{}", proxy.addr));
    let prefix = format!(
        "outage-{}-{}",
        std::process::id(),
        sealtrail::writer::now_ns()
    );
    let archive = Archive::open(&format!("s3://{bucket}/{prefix}"))
        .unwrap()
        .with_retention(sealtrail::archive::Retention {
            mode: sealtrail::archive::LockMode::Governance,
            period: Duration::from_secs(3600),
        })
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (layer, guard) = sealtrail::AuditLayer::builder()
        .with_archive(archive.clone())
        .with_signing_key(key())
        .with_spool_dir(dir.path().join("spool"))
        .with_writer_id("outage-writer")
        .with_flush_interval(Duration::from_millis(200))
        .with_queue_capacity(1024)
        .with_shutdown_timeout(Duration::from_secs(120))
        .build()
        .unwrap();

    // An agent that traces steadily until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let emitted = Arc::new(AtomicU64::new(0));
    let dispatch = tracing::Dispatch::new(tracing_subscriber::registry().with(layer));
    let agent = {
        let (stop, emitted) = (stop.clone(), emitted.clone());
        std::thread::spawn(move || {
            tracing::dispatcher::with_default(&dispatch, || {
                while !stop.load(Ordering::Relaxed) {
                    let i = emitted.fetch_add(1, Ordering::Relaxed);
                    info_span!(
                        "execute_tool",
                        gen_ai.operation.name = "execute_tool",
                        audit.session_id = "outage",
                        i
                    )
                    .in_scope(|| {});
                    std::thread::sleep(Duration::from_millis(1));
                }
            })
        })
    };

    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = guard.stats();
    assert!(before.sealed > 0 && before.store_errors == 0, "{before:?}");
    proxy.down().await;
    let outage_started = Instant::now();
    tokio::time::sleep(OUTAGE).await;
    let during = guard.stats();
    proxy.up().await;
    assert!(outage_started.elapsed() >= OUTAGE);
    assert!(
        during.store_errors > 0,
        "the outage was noticed: {during:?}"
    );
    assert!(
        during.spooled > before.spooled,
        "records kept arriving in the spool during the outage: {during:?}"
    );

    // Traffic flows again: the backlog drains while the agent keeps tracing
    // (retries back off to at most 10 s during the outage).
    let drained_in = all_sealed(&guard, Duration::from_secs(60), "the backlog did not drain").await;

    // Answers lost for a while: each write is stored, its answer dropped.
    // The retry finds the object there with the bytes it meant to write and
    // takes it as written (a seal another writer wrote would stop the layer
    // for good, and nothing more would be sealed).
    let errors_before = guard.stats().store_errors;
    proxy.for_a_while(Mode::LoseAnswers).await;
    let lost = guard.stats().store_errors - errors_before;
    assert!(
        lost > 0,
        "writes whose answer was lost failed: {:?}",
        guard.stats()
    );
    let what = "sealing did not go on after answers were lost";
    all_sealed(&guard, Duration::from_secs(60), what).await;

    // The server stalls for 3 s: the requests sent then hang until the
    // client's read timeout; the seal they belong to is retried after it,
    // and everything captured meanwhile (spooled) is sealed.
    let errors_before = guard.stats().store_errors;
    proxy.for_a_while(Mode::Stall).await;
    let what = "sealing did not go on after the server stalled";
    let stall_over_in = all_sealed(&guard, Duration::from_secs(120), what).await;
    let timed_out = guard.stats().store_errors - errors_before;
    assert!(
        timed_out > 0,
        "no request to the stalled server failed: {:?}",
        guard.stats()
    );
    stop.store(true, Ordering::Relaxed);
    agent.join().unwrap();
    let after = guard.stats();
    drop(guard);
    assert_eq!(after.dropped, 0, "{after:?}");
    let n = emitted.load(Ordering::Relaxed);
    assert_eq!(after.captured, n);

    let records = all_records(&archive).await;
    assert_eq!(
        records.len() as u64,
        n,
        "every span is archived after the outage"
    );
    let mut seen: Vec<i64> = records
        .iter()
        .map(|r| match r.attributes.get("i") {
            Some(sealtrail::Value::Int(i)) => *i,
            other => panic!("{other:?}"),
        })
        .collect();
    seen.sort_unstable();
    assert_eq!(seen, (0..n as i64).collect::<Vec<_>>());
    let report = verify_now(&archive).await;
    assert!(report.is_intact(), "{}", show(&report));
    eprintln!(
        "{n} spans over a {}s outage: {} failed seal attempts, backlog sealed {:.1}s after recovery; \
         {lost} writes with a lost answer; a 3 s stall: {timed_out} timed out, sealing went on {:.1}s after; all archived",
        OUTAGE.as_secs(),
        during.store_errors,
        drained_in.as_secs_f64(),
        stall_over_in.as_secs_f64()
    );
}
