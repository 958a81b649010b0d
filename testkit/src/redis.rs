//! Redis: fresh key prefixes on the shared server (127.0.0.1:6379) and
//! private `redis-server`s on free ports for tests that kill, restart or
//! password-protect the server.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::{free_port, run};

/// The shared server.
pub const URL: &str = "redis://127.0.0.1:6379";

/// `<tag>-<ulid>`: a key prefix no other test uses.
pub fn unique_prefix(tag: &str) -> String {
    format!("{tag}-{}", crate::ulid())
}

/// Deletes every key of the server at `url` matching one of `patterns`
/// (`KEYS` patterns); fails loudly when Redis does not answer.
pub async fn delete_keys(url: &str, patterns: &[String]) {
    let client = ::redis::Client::open(url).expect("url");
    let mut conn = client.get_multiplexed_async_connection().await.expect("Redis");
    let mut keys: Vec<String> = Vec::new();
    for pattern in patterns {
        let found: Vec<String> = ::redis::cmd("KEYS")
            .arg(pattern)
            .query_async(&mut conn)
            .await
            .expect("list test keys");
        keys.extend(found);
    }
    if !keys.is_empty() {
        let () = ::redis::cmd("DEL")
            .arg(&keys)
            .query_async(&mut conn)
            .await
            .expect("delete test keys");
    }
}

/// A `redis-server` of the test's own on a free port, without
/// persistence, so it can be killed and restarted empty without touching
/// the shared one. Killed on drop.
pub struct PrivateRedis {
    pub port: u16,
    password: Option<String>,
    dir: TempDir,
    child: Option<Child>,
}

impl PrivateRedis {
    pub async fn start() -> PrivateRedis {
        PrivateRedis::launch(None).await
    }

    /// One that requires `password` (`requirepass`).
    pub async fn with_password(password: &str) -> PrivateRedis {
        PrivateRedis::launch(Some(password.to_owned())).await
    }

    async fn launch(password: Option<String>) -> PrivateRedis {
        let mut server = PrivateRedis {
            port: free_port(),
            password,
            dir: tempfile::Builder::new()
                .prefix("ferry-redis-")
                .tempdir()
                .expect("redis dir"),
            child: None,
        };
        server.start_again().await;
        server
    }

    fn spawn(&self) -> Child {
        let mut command = Command::new("redis-server");
        command
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--maxmemory-policy",
                "noeviction",
            ])
            .arg("--dir")
            .arg(self.dir.path());
        if let Some(password) = &self.password {
            command.args(["--requirepass", password]);
        }
        command
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be on the PATH")
    }

    /// Starts it (again, empty, on the same port) and waits until it answers.
    pub async fn start_again(&mut self) {
        self.child = Some(self.spawn());
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if self.answers().await {
                return;
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                panic!("redis-server on port {} exited: {status}", self.port);
            }
            assert!(
                Instant::now() < deadline,
                "private redis-server on port {} did not start",
                self.port
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn answers(&self) -> bool {
        let Ok(client) = ::redis::Client::open(self.url()) else {
            return false;
        };
        let Ok(mut conn) = client.get_multiplexed_async_connection().await else {
            return false;
        };
        ::redis::cmd("PING")
            .query_async::<String>(&mut conn)
            .await
            .is_ok()
    }

    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills the server and starts an empty one on the same port.
    pub async fn restart(&mut self) {
        self.kill();
        self.start_again().await;
    }

    /// `redis://[:password@]127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        match &self.password {
            Some(password) => format!("redis://:{password}@127.0.0.1:{}", self.port),
            None => format!("redis://127.0.0.1:{}", self.port),
        }
    }

    /// Runs `redis-cli` against it; its output, trimmed.
    pub fn cli(&self, args: &[&str]) -> String {
        let mut command = Command::new("redis-cli");
        command.args(["-h", "127.0.0.1", "-p", &self.port.to_string()]);
        if let Some(password) = &self.password {
            command.args(["-a", password, "--no-auth-warning"]);
        }
        run(command.args(args), "redis-cli").trim().to_owned()
    }

    /// The server's `run_id`: a new one per start.
    pub fn run_id(&self) -> String {
        let info = self.cli(&["info", "server"]);
        info.lines()
            .find_map(|line| line.strip_prefix("run_id:"))
            .expect("run_id in INFO server")
            .trim()
            .to_owned()
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.kill();
    }
}
