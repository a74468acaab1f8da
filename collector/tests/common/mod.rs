//! A real `sealtrail serve` process for the collector's tests.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sealtrail::TraceRecord;

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_sealtrail")
}

/// A directory with a signing key (`k.key`, `k.key.pub`).
pub fn workdir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let o = Command::new(bin())
        .args(["keygen", "--out", "k.key"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(o.status.success(), "{o:?}");
    dir
}

/// A running collector in `dir` (store `dir/data`, spool `dir/spool`).
pub struct Collector {
    child: Option<Child>,
    pub dir: PathBuf,
    pub grpc: String,
    pub http: String,
    pub log: Arc<Mutex<String>>,
}

impl Collector {
    pub fn start(dir: &Path, extra: &[&str]) -> Collector {
        Collector::start_with(dir, extra, |_| {})
    }

    /// [`Collector::start`], with `setup` applied to the command first.
    pub fn start_with(dir: &Path, extra: &[&str], setup: impl FnOnce(&mut Command)) -> Collector {
        let mut cmd = Command::new(bin());
        setup(&mut cmd);
        let mut child = cmd
            .args(["serve", "--signing-key", "k.key"])
            .args(if extra.contains(&"--store") {
                &[][..]
            } else {
                &["--store", "data"][..]
            })
            .args([
                "--spool-dir",
                "spool",
                "--otlp-grpc",
                "127.0.0.1:0",
                "--otlp-http",
                "127.0.0.1:0",
            ])
            .args(if extra.contains(&"--flush-interval") {
                &[][..]
            } else {
                &["--flush-interval", "200ms"][..]
            })
            .args(extra)
            .current_dir(dir)
            .env_remove("SEALTRAIL_STORE")
            .env("SEALTRAIL_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start sealtrail serve");
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        let l = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains(" listening ") {
                    let _ = tx.send(line.clone());
                }
                let mut l = l.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        let line = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(l) => l,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                std::thread::sleep(Duration::from_millis(100));
                panic!("the collector did not start:\n{}", log.lock().unwrap());
            }
        };
        let field = |name: &str| {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(&format!("{name}=")))
                .unwrap_or_else(|| panic!("no {name}= in {line:?}"))
                .to_owned()
        };
        Collector {
            grpc: field("grpc"),
            http: field("http"),
            child: Some(child),
            dir: dir.to_owned(),
            log,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.http)
    }

    /// SIGTERM, then waits for the exit.
    pub fn stop(self) -> ExitStatus {
        let pid = self.child.as_ref().unwrap().id();
        unsafe { libc::kill(pid as i32, libc::SIGTERM) };
        self.wait_exit(Duration::from_secs(30))
    }

    /// Sends `signal` (e.g. `libc::SIGHUP`), then waits for the exit.
    pub fn signal(self, signal: i32) -> ExitStatus {
        let pid = self.child.as_ref().unwrap().id();
        unsafe { libc::kill(pid as i32, signal) };
        self.wait_exit(Duration::from_secs(30))
    }

    /// SIGTERM, and asserts a clean exit (0).
    pub fn stop_ok(self) {
        let log = self.log.clone();
        let status = self.stop();
        assert!(
            status.success(),
            "the collector exited with {status:?}:\n{}",
            log.lock().unwrap()
        );
    }

    /// Waits for the collector to exit (on its own, or as told).
    pub fn wait_exit(mut self, within: Duration) -> ExitStatus {
        let mut child = self.child.take().unwrap();
        let deadline = Instant::now() + within;
        loop {
            if let Some(s) = child.try_wait().unwrap() {
                return s;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!(
                    "the collector did not exit within {within:?}:\n{}",
                    self.log.lock().unwrap()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL: no chance to seal.
    pub fn kill(mut self) {
        let mut child = self.child.take().unwrap();
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Every sealed record of `dir/data`.
pub fn records(dir: &Path) -> Vec<TraceRecord> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let archive = sealtrail::Archive::open(dir.join("data").to_str().unwrap()).unwrap();
    rt.block_on(sealtrail::read::records(&archive, |_| true))
        .unwrap()
        .into_iter()
        .map(|(_, r)| r)
        .collect()
}

/// `sealtrail verify` on `dir/data`: asserts it reports the archive intact.
pub fn assert_intact(dir: &Path) -> String {
    let o = Command::new(bin())
        .args(["verify", "--store", "data", "--public-key", "k.key.pub"])
        .current_dir(dir)
        .env_remove("SEALTRAIL_STORE")
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert_eq!(
        o.status.code(),
        Some(0),
        "verify: {out}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    out
}

/// The records of `session`, in chain order.
pub fn session<'a>(all: &'a [TraceRecord], session: &str) -> Vec<&'a TraceRecord> {
    let mut v: Vec<_> = all.iter().filter(|r| r.session == session).collect();
    v.sort_by_key(|r| r.seq);
    v
}

/// A TCP proxy to `target` that can be told to stop forwarding: a store
/// that hangs. Data already sent waits until forwarding resumes.
pub struct StallProxy {
    pub addr: std::net::SocketAddr,
    stalled: Arc<std::sync::atomic::AtomicBool>,
}

impl StallProxy {
    pub fn start(target: std::net::SocketAddr) -> StallProxy {
        use std::io::{Read, Write};
        use std::sync::atomic::Ordering;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let stalled = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let s = stalled.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let (Ok(down), Ok(up)) = (conn, std::net::TcpStream::connect(target)) else {
                    continue;
                };
                let pairs = [
                    (down.try_clone().unwrap(), up.try_clone().unwrap()),
                    (up, down),
                ];
                for (mut from, mut to) in pairs {
                    let s = s.clone();
                    std::thread::spawn(move || {
                        let mut buf = vec![0u8; 64 << 10];
                        while let Ok(n) = from.read(&mut buf) {
                            if n == 0 {
                                break;
                            }
                            while s.load(Ordering::Relaxed) {
                                std::thread::sleep(Duration::from_millis(10));
                            }
                            if to.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                        let _ = to.shutdown(std::net::Shutdown::Write);
                    });
                }
            }
        });
        StallProxy { addr, stalled }
    }

    /// Stops (`true`) or resumes forwarding.
    pub fn stall(&self, on: bool) {
        self.stalled.store(on, std::sync::atomic::Ordering::Relaxed);
    }
}
