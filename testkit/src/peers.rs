//! Python test peers, installed into one venv by the repository's scripts
//! on first use: moto's S3 server (`scripts/s3-peer.sh`) and nx-27017, a
//! MongoDB wire-protocol server (`scripts/test-peers.sh`).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{Peer, free_port, run, wait_for_port};

/// The venv the peer scripts fill (`FERRY_VENV`, default
/// `~/.cache/ferry-venv`), running `script` to install `program` when it
/// is missing, under a file lock (tests run in parallel processes).
pub fn venv_with(program: &str, script: &str, lock: &str, what: &str) -> PathBuf {
    let venv = std::env::var_os("FERRY_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache/ferry-venv"));
    if venv.join("bin").join(program).exists() {
        return venv;
    }
    let lock = std::fs::File::create(std::env::temp_dir().join(lock)).expect("lock file");
    lock.lock().expect("lock");
    if !venv.join("bin").join(program).exists() {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(script);
        run(Command::new("bash").arg(script).env("FERRY_VENV", &venv), what);
    }
    venv
}

/// The venv with moto's S3 server.
pub fn s3_peer_venv() -> PathBuf {
    venv_with(
        "moto_server",
        "scripts/s3-peer.sh",
        "ferry-s3-peer.lock",
        "scripts/s3-peer.sh (installs moto[server]; run it by hand to see why it failed)",
    )
}

/// The venv with nx-27017.
pub fn test_peers_venv() -> PathBuf {
    venv_with(
        "nx-27017",
        "scripts/test-peers.sh",
        "ferry-test-peers.lock",
        "scripts/test-peers.sh",
    )
}

/// nx-27017 (a MongoDB wire-protocol server) on a free port, in memory.
pub async fn nx_27017() -> Peer {
    let venv = test_peers_venv();
    let dir = tempfile::Builder::new()
        .prefix("ferry-nx-")
        .tempdir()
        .expect("nx dir");
    let port = free_port();
    let mut child = Command::new(venv.join("bin/nx-27017"))
        .args([
            "--db",
            "memory",
            "--host",
            "127.0.0.1",
            "--port",
            &port.to_string(),
        ])
        .arg("--log-file")
        .arg(dir.path().join("nx.log"))
        .arg("--pid-file")
        .arg(dir.path().join("nx.pid"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("nx-27017 (scripts/test-peers.sh)");
    wait_for_port(port, &mut child, "nx-27017").await;
    Peer::new(child, port, Some(dir))
}

/// A moto S3 server on a free port with one bucket, killed on drop.
/// Moto's server mode accepts unsigned requests, and any credentials.
pub struct S3Peer {
    child: Child,
    pub port: u16,
    pub bucket: String,
}

impl S3Peer {
    /// Starts moto and creates `bucket`.
    pub async fn start(bucket: &str) -> S3Peer {
        let venv = s3_peer_venv();
        let port = free_port();
        let mut child = Command::new(venv.join("bin/moto_server"))
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("moto_server (bash scripts/s3-peer.sh)");
        let deadline = Instant::now() + Duration::from_secs(30);
        let client = reqwest::Client::new();
        loop {
            if client
                .get(format!("http://127.0.0.1:{port}/"))
                .send()
                .await
                .is_ok()
            {
                break;
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!("moto_server exited before listening: {status}");
            }
            assert!(
                Instant::now() < deadline,
                "moto_server did not listen on {port} within 30 s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let peer = S3Peer {
            child,
            port,
            bucket: bucket.to_owned(),
        };
        let created = client
            .put(format!("{}/{bucket}", peer.endpoint()))
            .send()
            .await
            .expect("create bucket");
        assert!(
            created.status().is_success(),
            "create bucket: {}",
            created.status()
        );
        peer
    }

    /// `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The options that open an `s3://<bucket>/…` target on this server
    /// the way the worker opens one.
    pub fn target_options(&self) -> Vec<(&'static str, String)> {
        vec![
            ("aws_endpoint", self.endpoint()),
            ("aws_allow_http", "true".to_owned()),
            ("aws_region", "us-east-1".to_owned()),
            ("aws_access_key_id", "testing".to_owned()),
            ("aws_secret_access_key", "testing".to_owned()),
        ]
    }

    /// An unsigned request: status and body.
    pub async fn request(&self, method: reqwest::Method, path_and_query: &str) -> (u16, String) {
        let response = reqwest::Client::new()
            .request(method, format!("{}{path_and_query}", self.endpoint()))
            .send()
            .await
            .expect("moto answers");
        let status = response.status().as_u16();
        (status, response.text().await.expect("body"))
    }

    /// The `ListMultipartUploads` answer for the bucket.
    pub async fn list_uploads(&self) -> String {
        let (status, body) = self
            .request(reqwest::Method::GET, &format!("/{}?uploads", self.bucket))
            .await;
        assert!(
            status == 200 && body.contains("ListMultipartUploadsResult"),
            "ListMultipartUploads: {status} {body}"
        );
        body
    }
}

impl Drop for S3Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
