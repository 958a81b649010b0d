//! The `ferry` binary as the cli tests run it: a command with no
//! `FERRY_*` variables inherited, processes killed on drop, and blocking
//! HTTP helpers.

use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::block_on;

/// A `ferry` command (the binary at `binary`, `env!("CARGO_BIN_EXE_ferry")`
/// in the cli's tests) with no FERRY_* variables inherited, its data in
/// `data_dir`, INFO logs and the per-user rate limit off: the suites drive
/// the API far faster than people do, so a test turns it on itself.
pub fn command(binary: &str, data_dir: &Path) -> Command {
    let mut command = Command::new(binary);
    for (key, _) in std::env::vars() {
        if key.starts_with("FERRY_") {
            command.env_remove(key);
        }
    }
    command
        .env("FERRY_DATA_DIR", data_dir)
        .env("RUST_LOG", "info")
        .env("FERRY_RATE_LIMIT_PER_MINUTE", "0");
    command
}

/// A background process killed when dropped.
pub struct Running(pub Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits up to 60 s for `url` to answer 200.
pub fn wait_healthy(url: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if http_status(url).is_some_and(|status| status == 200) {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("{url} never became healthy");
}

/// The status of a GET, or None when nothing answers.
pub fn http_status(url: &str) -> Option<u16> {
    block_on(async { reqwest::get(url).await.ok().map(|r| r.status().as_u16()) })
}

/// Sends an authenticated request and returns its status and JSON body
/// (Null when not JSON).
pub fn http_send(method: reqwest::Method, url: &str, token: &str, body: Option<Value>) -> (u16, Value) {
    block_on(async {
        let mut request = reqwest::Client::new().request(method, url).bearer_auth(token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("send");
        let status = response.status().as_u16();
        let text = response.text().await.expect("text");
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    })
}
