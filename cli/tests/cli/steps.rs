//! Every step type through the `ferry` binary, as an operator runs it: in
//! `ferry up` (embedded defaults) and in distributed mode (api and worker
//! processes over PostgreSQL and Redis). One project reads PostgreSQL, a
//! REST API, Redis, MongoDB and a Databricks warehouse (the test kit's
//! stand-in, over TLS from a CA the worker is told to trust with
//! `FERRY_TLS_CA_FILE`), then a transform joins what they read.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::process::{Command, Stdio};

use ferry_testkit::databricks::{Column, Plan, Warehouse};
use ferry_testkit::peers::{nx_27017, test_peers_venv};
use ferry_testkit::redis::PrivateRedis;
use ferry_testkit::tls::TestCa;
use serde_json::{Value, json};

use crate::distributed::{Deployment, Role};
use crate::{KEY, Running, block_on, ferry, free_port, http_send, wait_healthy};

/// A REST API on 127.0.0.1 answering every request with the same records.
fn records_server() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(stream.try_clone().expect("clone"));
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                line.clear();
            }
            let body = json!({"data": [
                {"id": 1, "region": "north"},
                {"id": 2, "region": "south"},
                {"id": 3, "region": "east"}
            ]})
            .to_string();
            let mut stream = stream;
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    port
}

const DATABRICKS_TOKEN: &str = "dapi-steps-0123456789";

/// The sources every run reads: a PostgreSQL role, a REST API, a private
/// Redis, a MongoDB-wire server and a Databricks warehouse, each holding
/// the same three ids.
struct Sources {
    role: Role,
    http_port: u16,
    redis: PrivateRedis,
    mongo: ferry_testkit::Peer,
    warehouse: Warehouse,
    ca: TestCa,
    /// Serves the warehouse; dropped last.
    _runtime: tokio::runtime::Runtime,
}

impl Sources {
    fn start() -> Sources {
        let redis = block_on(PrivateRedis::start());
        for (id, owner) in [(1, "ana"), (2, "bo"), (3, "cy")] {
            redis.cli(&["SET", &format!("owner:{id}"), owner]);
        }
        let mongo = block_on(nx_27017());
        let script = format!(
            "import pymongo; c = pymongo.MongoClient('mongodb://127.0.0.1:{}'); \
             c.shop.stock.insert_many([{{'id': 1, 'units': 10}}, {{'id': 2, 'units': 20}}, {{'id': 3, 'units': 30}}])",
            mongo.port
        );
        let inserted = Command::new(test_peers_venv().join("bin/python"))
            .args(["-c", &script])
            .output()
            .expect("python");
        assert!(
            inserted.status.success(),
            "{}",
            String::from_utf8_lossy(&inserted.stderr)
        );
        let runtime = tokio::runtime::Runtime::new().expect("runtime");
        let ca = TestCa::new();
        let warehouse = runtime.block_on(Warehouse::start_tls(DATABRICKS_TOKEN, &ca));
        // Rows as JSON chunks behind presigned https links, after the
        // driver's first ask (Arrow) is refused.
        warehouse.refuse_arrow();
        warehouse.on(
            "SELECT id, target FROM targets",
            Plan::rows(
                vec![Column::new("id", "LONG"), Column::new("target", "LONG")],
                vec![
                    vec![json!("1"), json!("100")],
                    vec![json!("2"), json!("200")],
                    vec![json!("3"), json!("300")],
                ],
            ),
        );
        Sources {
            role: Role::create("steps"),
            http_port: records_server(),
            redis,
            mongo,
            warehouse,
            ca,
            _runtime: runtime,
        }
    }

    /// What the worker needs to trust the warehouse's certificate.
    fn worker_env(&self) -> [(&'static str, String); 1] {
        [("FERRY_TLS_CA_FILE", self.ca.ca_file().display().to_string())]
    }

    /// Creates a connector of each kind (tested on creation) and returns
    /// their uuids: postgresql, rest_api, redis, mongodb, databricks.
    fn connectors(&self, base: &str, token: &str) -> [String; 5] {
        let configs = [
            ("postgresql", self.role.config()),
            (
                "rest_api",
                json!({"base_url": format!("http://127.0.0.1:{}", self.http_port), "auth_type": "none"}),
            ),
            ("redis", json!({"host": "127.0.0.1", "port": self.redis.port})),
            (
                "mongodb",
                json!({"connection_string": format!("mongodb://127.0.0.1:{}", self.mongo.port), "database": "shop"}),
            ),
            ("databricks", self.warehouse.config(DATABRICKS_TOKEN)),
        ];
        configs.map(|(kind, config)| {
            let (status, body) = http_send(
                reqwest::Method::POST,
                &format!("{base}/api/connectors"),
                token,
                Some(json!({"type": kind, "display_name": kind, "config": config, "test_connection": true})),
            );
            assert_eq!(status, 201, "{kind}: {body}");
            body["uuid"].as_str().expect("uuid").to_owned()
        })
    }
}

/// Runs the five-step project on the Ferry at `base` and checks every
/// step's result and the transform's join exactly.
fn run_every_step_type(base: &str, token: &str, sources: &Sources) {
    let [postgres, rest, redis, mongo, databricks] = sources.connectors(base, token);
    let (status, project) = http_send(
        reqwest::Method::POST,
        &format!("{base}/api/projects"),
        token,
        Some(json!({"name": "Every step type"})),
    );
    assert_eq!(status, 201, "{project}");
    let uuid = project["uuid"].as_str().expect("uuid").to_owned();
    let steps = [
        json!({"name": "Sales", "type": "sql_query", "config": {"connector_uuid": postgres,
            "query": "SELECT g AS id, g * {{factor}} AS amount FROM generate_series(1, 3) AS g",
            "parameters": {"factor": {"type": "integer", "default": 100}}}}),
        json!({"name": "Regions", "type": "http_request", "config": {"connector_uuid": rest,
            "path": "/regions", "records_path": "data"}}),
        json!({"name": "Owners", "type": "redis_read", "config": {"connector_uuid": redis,
            "pattern": "owner:*", "value_type": "string"}}),
        json!({"name": "Stock", "type": "mongo_query", "config": {"connector_uuid": mongo,
            "collection": "stock", "projection": {"_id": 0}}}),
        json!({"name": "Targets", "type": "sql_query", "config": {"connector_uuid": databricks,
            "query": "SELECT id, target FROM targets"}}),
        json!({"name": "Joined", "type": "transform", "config": {"query":
            "SELECT s.id, s.amount, r.region, o.value AS owner, st.units, t.target \
             FROM sales s JOIN step_2 r ON r.id = s.id \
             JOIN owners o ON o.key = concat('owner:', CAST(s.id AS VARCHAR)) \
             JOIN stock st ON st.id = s.id JOIN targets t ON t.id = s.id ORDER BY s.id"}}),
    ];
    for step in steps {
        let (status, body) = http_send(
            reqwest::Method::POST,
            &format!("{base}/api/projects/{uuid}/steps"),
            token,
            Some(step),
        );
        assert_eq!(status, 201, "{body}");
    }
    let (status, execution) = http_send(
        reqwest::Method::POST,
        &format!("{base}/api/projects/{uuid}/execute"),
        token,
        Some(json!({"mode": "sync", "parameters": {"factor": 10}})),
    );
    assert_eq!(status, 200, "{execution}");
    assert_eq!(execution["status"], "completed", "{execution}");
    let execution_id = execution["execution_id"].as_str().expect("execution id");
    let step_ids: Vec<String> = execution["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .map(|step| step["step_id"].as_str().expect("step id").to_owned())
        .collect();
    let rows = |index: usize| -> Vec<Value> {
        let (status, body) = http_send(
            reqwest::Method::GET,
            &format!(
                "{base}/api/projects/{uuid}/executions/{execution_id}/steps/{}/result?format=json",
                step_ids[index]
            ),
            token,
            None,
        );
        assert_eq!(status, 200, "{body}");
        body["data"].as_array().expect("rows").clone()
    };
    assert_eq!(rows(0).len(), 3);
    assert_eq!(rows(1).len(), 3);
    assert_eq!(rows(2).len(), 3);
    assert_eq!(rows(3).len(), 3);
    assert_eq!(rows(4).len(), 3);
    assert_eq!(
        rows(5),
        vec![
            json!({"id": 1, "amount": 10, "region": "north", "owner": "ana", "units": 10, "target": 100}),
            json!({"id": 2, "amount": 20, "region": "south", "owner": "bo", "units": 20, "target": 200}),
            json!({"id": 3, "amount": 30, "region": "east", "owner": "cy", "units": 30, "target": 300}),
        ]
    );
    let submitted: Vec<Value> = sources.warehouse.submissions();
    assert!(
        submitted
            .iter()
            .any(|s| s["statement"] == "SELECT id, target FROM targets"),
        "{submitted:?}"
    );
    assert!(
        !sources.warehouse.downloads().is_empty(),
        "the result came through presigned https links"
    );
}

#[test]
fn every_step_type_runs_in_ferry_up() {
    let sources = Sources::start();
    let dir = tempfile::tempdir().expect("dir");
    let port = free_port();
    let child = ferry(dir.path())
        .envs(sources.worker_env())
        .args(["up", "--listen", &format!("127.0.0.1:{port}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let _running = Running(child);
    let base = format!("http://127.0.0.1:{port}");
    wait_healthy(&format!("{base}/readyz"));
    let token = ferry(dir.path())
        .args(["token", "--user", "user_steps", "--org", "org_steps"])
        .output()
        .expect("token");
    let token = String::from_utf8_lossy(&token.stdout).trim().to_owned();
    run_every_step_type(&base, &token, &sources);
}

#[test]
fn every_step_type_runs_on_separate_api_and_worker_processes() {
    let sources = Sources::start();
    let deployment = Deployment::new();
    let (_api, base) = deployment.api(KEY);
    let env = sources.worker_env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let _worker = deployment.worker_with(KEY, 2, &env);
    let token = deployment.token_for("user_steps");
    run_every_step_type(&base, &token, &sources);
}
