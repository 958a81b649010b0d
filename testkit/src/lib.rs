//! Test support shared by every Ferry crate's integration tests: the API
//! on port 0 with a fresh store (feature `app`), fresh PostgreSQL and
//! MariaDB databases on the shared servers, fresh Redis key prefixes,
//! private `redis-server` and `initdb` PostgreSQL servers, the Python test
//! peers (moto S3, nx-27017) and the `ferry` binary launcher.
//!
//! A fixture whose service is missing panics with the command that
//! provides it: tests fail loudly, they never skip.

#![allow(clippy::unwrap_used)]

#[cfg(feature = "app")]
pub mod app;
pub mod csv;
pub mod databricks;
pub mod ferry;
pub mod http1;
pub mod mariadb;
pub mod oauth;
pub mod peers;
pub mod postgres;
#[cfg(feature = "queue")]
pub mod queue;
pub mod redis;
pub mod redis_cluster;
pub mod saas;
pub mod tls;
pub mod warehouses;
pub mod webhooks;

use std::net::TcpListener;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A name unique across the concurrently running test processes:
/// `<prefix>_<pid>_<counter>_<nanos>`, safe as an SQL identifier.
pub fn unique(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{prefix}_{}_{}_{nanos}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// A lowercase ULID: unique, sortable, safe in identifiers and key names.
pub fn ulid() -> String {
    ::ulid::Ulid::new().to_string().to_lowercase()
}

/// A port nothing listens on (bound, then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// Runs a command to completion and returns its stdout, failing loudly
/// with its output when it cannot run or exits non-zero.
pub fn run(command: &mut Command, what: &str) -> String {
    let output = command
        .output()
        .unwrap_or_else(|error| panic!("{what}: could not run: {error}"));
    if !output.status.success() {
        panic!(
            "{what} failed ({}):\n{}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Whether the tests run as root (then servers run as `postgres`).
pub fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
        .unwrap_or(false)
}

/// Polls `check` every 100 ms until it returns true or `limit` passes.
pub async fn eventually<F, Fut>(limit: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Runs one future to completion on a throwaway runtime (for tests that
/// drive processes synchronously).
pub fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(future)
}

/// Waits until something accepts TCP connections on `port`, failing when
/// `child` exits first or 20 s pass.
pub async fn wait_for_port(port: u16, child: &mut std::process::Child, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what} exited before listening: {status}");
        }
        if Instant::now() > deadline {
            panic!("{what} did not listen on {port} within 20 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A child process killed (and reaped) on drop.
pub struct Peer {
    child: std::process::Child,
    pub port: u16,
    _dir: Option<tempfile::TempDir>,
}

impl Peer {
    pub fn new(child: std::process::Child, port: u16, dir: Option<tempfile::TempDir>) -> Peer {
        Peer {
            child,
            port,
            _dir: dir,
        }
    }

    pub fn id(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
