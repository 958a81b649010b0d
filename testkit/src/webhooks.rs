//! A webhook receiver for the webhook tests: `scripts/webhook-receiver.py`
//! on 127.0.0.1, which verifies every delivery with the `standardwebhooks`
//! package from PyPI (an implementation independent of Ferry's), fails each
//! event's first tries on purpose when told to, or hangs. The package is
//! installed into the test peers' venv by `scripts/webhook-peer.sh` on
//! first use.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;

use crate::{Peer, run, wait_for_port};

/// The venv with `standardwebhooks` (`FERRY_VENV`, default
/// `~/.cache/ferry-venv`), installing it under a file lock when missing.
pub fn webhook_peer_venv() -> PathBuf {
    let venv = std::env::var_os("FERRY_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache/ferry-venv"));
    let installed = |venv: &Path| {
        Command::new(venv.join("bin/python"))
            .args(["-c", "import standardwebhooks"])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success())
    };
    if installed(&venv) {
        return venv;
    }
    let lock =
        std::fs::File::create(std::env::temp_dir().join("ferry-webhook-peer.lock")).expect("lock file");
    lock.lock().expect("lock");
    if !installed(&venv) {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/webhook-peer.sh");
        run(
            Command::new("bash").arg(script).env("FERRY_VENV", &venv),
            "scripts/webhook-peer.sh (installs standardwebhooks from PyPI)",
        );
    }
    venv
}

/// A running receiver, killed on drop.
pub struct Receiver {
    peer: Peer,
    client: reqwest::Client,
}

impl Receiver {
    /// Starts the receiver on `port` verifying with `secret` (`whsec_…`);
    /// each event's first `fail_first` tries answer 500.
    pub async fn start(port: u16, secret: &str, fail_first: u32) -> Receiver {
        let venv = webhook_peer_venv();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/webhook-receiver.py");
        let mut child = Command::new(venv.join("bin/python"))
            .arg(script)
            .args(["--port", &port.to_string(), "--secret", secret])
            .args(["--fail-first", &fail_first.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start scripts/webhook-receiver.py");
        wait_for_port(port, &mut child, "webhook receiver").await;
        Receiver {
            peer: Peer::new(child, port, None),
            client: reqwest::Client::new(),
        }
    }

    /// The URL deliveries go to.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hook", self.peer.port)
    }

    /// Every delivery received so far, oldest first: `{webhook_id,
    /// timestamp, headers, verified, error, body, at}`.
    pub async fn received(&self) -> Vec<Value> {
        let answer = self
            .client
            .get(format!("http://127.0.0.1:{}/received", self.peer.port))
            .send()
            .await
            .expect("receiver answers");
        match answer.json::<Value>().await.expect("JSON") {
            Value::Array(items) => items,
            other => panic!("unexpected receiver answer {other}"),
        }
    }

    /// Changes how later deliveries are answered: `{"fail_first": n}` or
    /// `{"hang": true}`.
    pub async fn configure(&self, config: Value) {
        self.client
            .put(format!("http://127.0.0.1:{}/config", self.peer.port))
            .json(&config)
            .send()
            .await
            .expect("receiver answers");
    }
}
