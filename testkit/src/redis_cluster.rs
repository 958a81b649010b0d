//! A private Redis Cluster: `redis-server --cluster-enabled yes` processes
//! on free ports in a temporary directory, joined by
//! `redis-cli --cluster create` with no replicas. Every process is killed
//! and the directory deleted on drop, also when the test fails. The
//! shared server on 6379 is never touched.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::run;

/// A running cluster of masters only.
pub struct RedisCluster {
    /// The client port of each master, in creation order.
    pub ports: Vec<u16>,
    password: Option<String>,
    dir: TempDir,
    children: Vec<Child>,
}

impl RedisCluster {
    /// `masters` (at least 3, as `redis-cli --cluster create` requires)
    /// masters sharing the 16384 slots.
    pub async fn start(masters: usize) -> RedisCluster {
        RedisCluster::launch(masters, None).await
    }

    /// One whose nodes require `password` (`requirepass`, `masterauth`).
    pub async fn with_password(masters: usize, password: &str) -> RedisCluster {
        RedisCluster::launch(masters, Some(password.to_owned())).await
    }

    async fn launch(masters: usize, password: Option<String>) -> RedisCluster {
        assert!(masters >= 3, "a Redis Cluster needs at least 3 masters");
        let mut cluster = RedisCluster {
            ports: Vec::new(),
            password,
            dir: tempfile::Builder::new()
                .prefix("ferry-redis-cluster-")
                .tempdir()
                .expect("cluster dir"),
            children: Vec::new(),
        };
        // Each node needs a client port and a cluster bus port; both are
        // held until the server is told to use them, so no two nodes (and
        // no other test) take the same ones.
        let listeners: Vec<(TcpListener, TcpListener)> =
            (0..masters).map(|_| (bind_any(), bind_any())).collect();
        for (client, bus) in listeners {
            let port = client.local_addr().expect("addr").port();
            let bus_port = bus.local_addr().expect("addr").port();
            drop((client, bus));
            let child = cluster.spawn(port, bus_port);
            cluster.ports.push(port);
            cluster.children.push(child);
        }
        for index in 0..masters {
            cluster.wait_for(index, "PING", "PONG").await;
        }
        let nodes: Vec<String> = cluster
            .ports
            .iter()
            .map(|port| format!("127.0.0.1:{port}"))
            .collect();
        let mut create = cluster.cli_command(cluster.ports[0]);
        create
            .arg("--cluster")
            .arg("create")
            .args(&nodes)
            .args(["--cluster-replicas", "0", "--cluster-yes"]);
        run(&mut create, "redis-cli --cluster create");
        for index in 0..masters {
            cluster.wait_for(index, "CLUSTER INFO", "cluster_state:ok").await;
            cluster
                .wait_for(index, "CLUSTER INFO", &format!("cluster_known_nodes:{masters}"))
                .await;
        }
        cluster
    }

    fn spawn(&self, port: u16, bus_port: u16) -> Child {
        let mut command = Command::new("redis-server");
        command
            .args([
                "--port",
                &port.to_string(),
                "--cluster-port",
                &bus_port.to_string(),
                "--bind",
                "127.0.0.1",
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                &format!("nodes-{port}.conf"),
                "--cluster-node-timeout",
                "5000",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .arg("--dir")
            .arg(self.dir.path());
        if let Some(password) = &self.password {
            command.args(["--requirepass", password, "--masterauth", password]);
        }
        command
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be on the PATH")
    }

    fn cli_command(&self, port: u16) -> Command {
        let mut command = Command::new("redis-cli");
        command.args(["-h", "127.0.0.1", "-p", &port.to_string()]);
        if let Some(password) = &self.password {
            command.args(["-a", password, "--no-auth-warning"]);
        }
        command
    }

    /// Waits until `command` on node `index` answers with `expected` in it.
    async fn wait_for(&mut self, index: usize, command: &str, expected: &str) {
        let port = self.ports[index];
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let answer = self
                .cli_command(port)
                .args(command.split(' '))
                .output()
                .map(|out| String::from_utf8_lossy(&out.stdout).into_owned())
                .unwrap_or_default();
            if answer.contains(expected) {
                return;
            }
            if let Ok(Some(status)) = self.children[index].try_wait() {
                panic!("cluster node on port {port} exited: {status}");
            }
            assert!(
                Instant::now() < deadline,
                "cluster node on port {port} never answered {command} with {expected}: {answer}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Runs `redis-cli -c` (following redirections) against the first
    /// node; its output, trimmed.
    pub fn cli(&self, args: &[&str]) -> String {
        self.cli_on(self.ports[0], &["-c"], args)
    }

    /// Runs `redis-cli` against the node on `port`; its output, trimmed.
    pub fn cli_at(&self, port: u16, args: &[&str]) -> String {
        self.cli_on(port, &[], args)
    }

    fn cli_on(&self, port: u16, flags: &[&str], args: &[&str]) -> String {
        let mut command = self.cli_command(port);
        run(command.args(flags).args(args), "redis-cli").trim().to_owned()
    }

    /// Keys held by the node on `port`.
    pub fn dbsize(&self, port: u16) -> u64 {
        self.cli_at(port, &["DBSIZE"])
            .parse()
            .expect("DBSIZE answers a number")
    }

    /// A seed URL: `redis://[:password@]127.0.0.1:<first port>`.
    pub fn url(&self) -> String {
        match &self.password {
            Some(password) => format!("redis://:{password}@127.0.0.1:{}", self.ports[0]),
            None => format!("redis://127.0.0.1:{}", self.ports[0]),
        }
    }
}

fn bind_any() -> TcpListener {
    TcpListener::bind("127.0.0.1:0").expect("bind")
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
