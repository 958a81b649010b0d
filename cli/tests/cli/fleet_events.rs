//! The scheduler's work across separate processes over PostgreSQL and
//! Redis: two `ferry scheduler` processes fire each schedule tick once when
//! the leader is killed, and a Redis restarted empty loses no tick; health
//! probes from the scheduler process mark a failing connector `error` and
//! a recovered one `active`; three `ferry
//! worker` processes never run more steps on a capped connector than its
//! cap, and the steps in line show `waiting`; an API key works on every api
//! process and is refused by all of them the moment it is revoked; and 50
//! OAuth connectors keep working while two schedulers and three workers
//! refresh their tokens and the leading scheduler is killed. Last, a fleet
//! of two apis, three workers and two schedulers completes 500 mixed
//! executions through a worker's rolling restart and a killed leader, and
//! the processes' metrics add up to what happened.

use std::process::Stdio;
use std::time::{Duration, Instant};

use ferry_shared::store::{ScheduleStore, SqlStore};
use reqwest::Method;
use serde_json::{Value, json};

use ferry_testkit::oauth::AuthServer;
use ferry_testkit::redis::PrivateRedis;
use ferry_testkit::warehouses::{self, Plan};

use crate::distributed::{Deployment, Role};
use crate::{KEY, Running, block_on, free_port, http_send, http_status, psql, psql_value};

/// Polls `probe` every 100 ms until it yields, failing after `within`.
fn eventually<T>(what: &str, within: Duration, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(value) = probe() {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {within:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A `ferry` role process with its admin port (a scheduler or a worker).
struct Process {
    process: Running,
    admin: u16,
}

impl Process {
    fn scheduler(deployment: &Deployment, env: &[(&str, &str)]) -> Process {
        Process::role(deployment, &["scheduler"], env)
    }

    /// A `ferry worker` running `concurrency` jobs at once.
    fn worker(deployment: &Deployment, concurrency: &str, env: &[(&str, &str)]) -> Process {
        Process::role(deployment, &["worker", "--worker-concurrency", concurrency], env)
    }

    fn role(deployment: &Deployment, args: &[&str], env: &[(&str, &str)]) -> Process {
        let admin = free_port();
        let process = Running(
            deployment
                .command(KEY)
                .envs(env.iter().copied())
                .args(args)
                .args(["--admin-listen", &format!("127.0.0.1:{admin}")])
                .stderr(Stdio::null())
                .spawn()
                .expect("a ferry role"),
        );
        eventually("the role's admin server", Duration::from_secs(30), || {
            http_status(&format!("http://127.0.0.1:{admin}/healthz")).filter(|status| *status == 200)
        });
        Process { process, admin }
    }

    /// The sum of the samples of `name` whose labels contain `labels`
    /// (0 when absent or unreachable).
    fn sample(&self, name: &str, labels: &str) -> f64 {
        let text = block_on(async {
            match reqwest::get(format!("http://127.0.0.1:{}/metrics", self.admin)).await {
                Ok(response) => response.text().await.unwrap_or_default(),
                Err(_) => String::new(),
            }
        });
        text.lines()
            .filter(|line| line.split([' ', '{']).next() == Some(name) && line.contains(labels))
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// A sample of the role's metrics (0 when absent or unreachable).
    fn metric(&self, name: &str) -> f64 {
        self.sample(name, "")
    }

    fn leads(&self) -> bool {
        self.metric("ferry_scheduler_is_leader") == 1.0
    }

    fn ticks(&self) -> f64 {
        self.metric("ferry_scheduler_ticks_total")
    }

    fn kill(mut self) {
        self.process.0.kill().expect("kill -9");
        self.process.0.wait().expect("reap");
    }
}

/// A client of one api process, as one user.
struct Client {
    base: String,
    token: String,
}

impl Client {
    fn call(&self, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
        http_send(method, &format!("{}{path}", self.base), &self.token, body)
    }

    fn created(&self, path: &str, body: Value) -> Value {
        let (status, reply) = self.call(Method::POST, path, Some(body));
        assert_eq!(status, 201, "POST {path}: {reply}");
        reply
    }

    /// A project with one step of `step_type` and `config`; its uuid.
    fn project(&self, name: &str, step_type: &str, config: Value) -> String {
        let project = self.created("/api/projects", json!({"name": name}));
        let uuid = project["uuid"].as_str().expect("uuid").to_owned();
        self.created(
            &format!("/api/projects/{uuid}/steps"),
            json!({"name": "only", "type": step_type, "config": config}),
        );
        uuid
    }

    fn executions(&self, project: &str) -> Vec<Value> {
        let (status, list) = self.call(
            Method::GET,
            &format!("/api/projects/{project}/executions?limit=100"),
            None,
        );
        assert_eq!(status, 200, "{list}");
        list["data"].as_array().cloned().unwrap_or_default()
    }

    fn execution(&self, project: &str, id: &str) -> Value {
        let (status, execution) = self.call(
            Method::GET,
            &format!("/api/projects/{project}/executions/{id}"),
            None,
        );
        assert_eq!(status, 200, "{execution}");
        execution
    }
}

/// A token of `user` in `org_ops` (an organization admin with `admin`).
fn token(deployment: &Deployment, user: &str, admin: bool) -> String {
    let mut command = deployment.command(KEY);
    command.args(["token", "--user", user, "--org", "org_ops"]);
    if admin {
        command.arg("--admin");
    }
    let out = command.output().expect("token");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Makes the schedule of `project` (set through the API) fire every second
/// from now on: a six-field pattern, which only the store takes.
fn every_second(deployment: &Deployment, project: &str) {
    block_on(async {
        let store = SqlStore::connect_postgres(&deployment.database.url())
            .await
            .expect("store");
        let mut stored = store
            .project_schedule("org_ops", project)
            .await
            .expect("read")
            .expect("a schedule");
        stored.schedule.cron = "* * * * * *".into();
        stored.next_run_at = Some(chrono::Utc::now());
        assert!(
            store
                .set_project_schedule("org_ops", project, Some(&stored))
                .await
                .expect("set")
        );
    });
}

/// A project whose one quick step runs on a schedule set through the API.
fn scheduled_project(client: &Client) -> String {
    let project = client.project("Ticking", "transform", json!({"query": "select 1 as one"}));
    let (status, reply) = client.call(
        Method::PUT,
        &format!("/api/projects/{project}"),
        Some(json!({"schedule": {"cron": "* * * * *", "parameters": {}}})),
    );
    assert_eq!(status, 200, "{reply}");
    project
}

/// Waits for every execution of `project` to end and asserts each
/// completed as a scheduled one; how many there are.
fn all_complete(client: &Client, project: &str) -> usize {
    let executions = client.executions(project);
    for execution in &executions {
        let id = execution["execution_id"].as_str().expect("id");
        let done = eventually("a scheduled execution to end", Duration::from_secs(30), || {
            let execution = client.execution(project, id);
            matches!(
                execution["status"].as_str(),
                Some("completed" | "failed" | "cancelled")
            )
            .then_some(execution)
        });
        assert_eq!(done["status"], "completed", "{done}");
        assert_eq!(done["trigger"], "schedule", "{done}");
    }
    executions.len()
}

#[test]
fn two_scheduler_processes_fire_each_tick_once_and_the_standby_takes_over_from_a_killed_leader() {
    let deployment = Deployment::new();
    let (_api, base) = deployment.api(KEY);
    let _worker = deployment.worker(KEY, 4);
    let alice = Client {
        base,
        token: token(&deployment, "user_alice", false),
    };
    let project = scheduled_project(&alice);
    every_second(&deployment, &project);
    let env = [
        ("FERRY_SCHEDULE_INTERVAL_MS", "100"),
        ("FERRY_PROBE_INTERVAL", "0"),
    ];
    let started = Instant::now();
    let a = Process::scheduler(&deployment, &env);
    let b = Process::scheduler(&deployment, &env);

    eventually("two ticks", Duration::from_secs(20), || {
        (a.ticks() + b.ticks() >= 2.0).then_some(())
    });
    let (a_leads, b_leads) = (a.leads(), b.leads());
    assert!(a_leads ^ b_leads, "exactly one leads: a {a_leads}, b {b_leads}");
    let (leader, standby) = if a_leads { (a, b) } else { (b, a) };
    assert_eq!(
        standby.ticks(),
        0.0,
        "the standby fires nothing while the leader lives"
    );
    let fired_before = alice.executions(&project).len();
    leader.kill();
    let killed_at = Instant::now();

    // The killed leader never released its lock: the standby takes over
    // once the lock's TTL has passed, and fires the ticks from then on.
    eventually("the standby to fire two ticks", Duration::from_secs(40), || {
        (standby.ticks() >= 2.0).then_some(())
    });
    assert!(standby.leads(), "the standby leads");
    let took_over = killed_at.elapsed();
    let elapsed = started.elapsed();
    drop(standby);

    let executions = alice.executions(&project);
    assert!(executions.len() > fired_before, "ticks fired after the kill");
    assert!(
        executions.iter().all(|e| e["trigger"] == "schedule"),
        "{executions:?}"
    );
    // An every-second schedule: however the two split the ticks and
    // whatever the catch-up fired for the seconds nobody led, never more
    // than one execution a second.
    assert!(
        executions.len() as f64 <= elapsed.as_secs_f64().ceil() + 1.0,
        "{} executions in {elapsed:?} (takeover after {took_over:?}): a tick fired twice",
        executions.len()
    );
    all_complete(&alice, &project);
}

#[test]
fn a_redis_restarted_empty_loses_no_schedule_tick() {
    let mut redis = block_on(PrivateRedis::start());
    let deployment = Deployment::new();
    let redis_url = redis.url();
    let env = [("FERRY_REDIS_URL", redis_url.as_str())];
    let (_api, base) = deployment.api_with(KEY, &env);
    let _worker = deployment.worker_with(KEY, 4, &env);
    let alice = Client {
        base,
        token: token(&deployment, "user_alice", false),
    };
    let project = scheduled_project(&alice);
    every_second(&deployment, &project);
    let scheduler = Process::scheduler(
        &deployment,
        &[
            ("FERRY_REDIS_URL", redis_url.as_str()),
            ("FERRY_SCHEDULE_INTERVAL_MS", "100"),
            ("FERRY_PROBE_INTERVAL", "0"),
            ("FERRY_QUEUED_GRACE_SECONDS", "1"),
            ("FERRY_REAP_INTERVAL_SECONDS", "1"),
        ],
    );
    eventually("two ticks", Duration::from_secs(20), || {
        (alice.executions(&project).len() >= 2).then_some(())
    });

    // Redis goes away with every job and the leader's lock in it, and
    // comes back empty.
    let before_kill = alice.executions(&project).len();
    let started = Instant::now();
    redis.kill();
    std::thread::sleep(Duration::from_secs(3));
    let before_restart = alice.executions(&project).len();
    block_on(redis.start_again());

    // The scheduler leads again and fires on; what was queued in the lost
    // Redis is enqueued again from the store, so every execution completes.
    eventually("ticks after the restart", Duration::from_secs(40), || {
        (alice.executions(&project).len() >= before_restart + 3).then_some(())
    });
    assert!(scheduler.leads(), "the scheduler leads again");
    let fired = all_complete(&alice, &project);
    // The seconds nobody could fire are caught up at most once: never
    // more than one execution a second.
    let bound = before_kill as f64 + started.elapsed().as_secs_f64().ceil() + 2.0;
    assert!(
        fired as f64 <= bound,
        "{fired} executions, at most {bound} expected"
    );
}

#[test]
fn probes_from_a_scheduler_process_mark_a_failing_connector_error_and_a_recovered_one_active() {
    let deployment = Deployment::new();
    let (_api, base) = deployment.api(KEY);
    let _worker = deployment.worker(KEY, 2);
    let alice = Client {
        base,
        token: token(&deployment, "user_alice", false),
    };
    let role = Role::create("probed");
    let connector = alice.created(
        "/api/connectors",
        json!({"type": "postgresql", "display_name": "probed", "config": role.config(), "test_connection": false}),
    );
    let uuid = connector["uuid"].as_str().expect("uuid").to_owned();
    let _scheduler = Process::scheduler(&deployment, &[("FERRY_PROBE_INTERVAL", "500ms")]);
    let health = || {
        let (status, health) = alice.call(Method::GET, &format!("/api/connectors/{uuid}/health"), None);
        assert_eq!(status, 200, "{health}");
        health
    };
    let status = || {
        let (code, connector) = alice.call(Method::GET, &format!("/api/connectors/{uuid}"), None);
        assert_eq!(code, 200, "{connector}");
        connector["status"].as_str().unwrap_or_default().to_owned()
    };

    // Probes run on the workers and count as checks.
    eventually("successful probes", Duration::from_secs(30), || {
        let health = health();
        (health["metrics"]["total_queries_24h"].as_u64().unwrap_or(0) >= 2 && health["status"] == "healthy")
            .then_some(())
    });
    assert_eq!(status(), "active");

    // The source refuses the connector's login: probes fail, and the
    // connector goes to `error` after repeated failures.
    psql(&format!("ALTER ROLE {} NOLOGIN", role.name));
    psql(&format!(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{}'",
        role.name
    ));
    eventually("the connector to go to error", Duration::from_secs(60), || {
        (status() == "error").then_some(())
    });
    let failing = health();
    assert_eq!(failing["status"], "unhealthy", "{failing}");
    assert!(
        failing["recent_errors"]
            .as_array()
            .is_some_and(|errors| !errors.is_empty()),
        "{failing}"
    );
    assert!(
        failing["metrics"]["error_rate_24h"].as_f64().unwrap_or(0.0) > 0.0,
        "{failing}"
    );

    // The source takes the login again: the next successful probe makes
    // the connector active.
    psql(&format!("ALTER ROLE {} LOGIN", role.name));
    eventually(
        "the connector to be active again",
        Duration::from_secs(60),
        || (status() == "active").then_some(()),
    );
}

#[test]
fn three_worker_processes_never_run_more_steps_on_a_capped_connector_than_its_cap() {
    let deployment = Deployment::new();
    let (_api, base) = deployment.api(KEY);
    let _workers: Vec<Running> = (0..3).map(|_| deployment.worker(KEY, 4)).collect();
    let alice = Client {
        base,
        token: token(&deployment, "user_alice", false),
    };
    let role = Role::create("capped");
    let mut config = role.config();
    config["max_concurrent_steps"] = json!(2);
    let connector = alice.created(
        "/api/connectors",
        json!({"type": "postgresql", "display_name": "capped", "config": config, "test_connection": false}),
    );
    let uuid = connector["uuid"].as_str().expect("uuid").to_owned();
    let projects: Vec<String> = (0..6)
        .map(|i| {
            alice.project(
                &format!("Sleepy {i}"),
                "sql_query",
                json!({"connector_uuid": uuid, "query": "select 1 as n from pg_sleep(1)"}),
            )
        })
        .collect();
    let executions: Vec<String> = projects
        .iter()
        .map(|project| {
            let (status, accepted) = alice.call(
                Method::POST,
                &format!("/api/projects/{project}/execute"),
                Some(json!({})),
            );
            assert_eq!(status, 202, "{accepted}");
            accepted["execution_id"].as_str().expect("id").to_owned()
        })
        .collect();

    // Samples the connector's queries on the source, and the executions.
    let mut most = 0_i64;
    let mut waiting = None;
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut ended = 0;
    while ended < executions.len() {
        assert!(
            Instant::now() < deadline,
            "the executions did not end within a minute"
        );
        let running: i64 = psql_value(&format!(
            "SELECT count(*) FROM pg_stat_activity \
             WHERE usename = '{}' AND state = 'active' AND query ILIKE '%pg_sleep%'",
            role.name
        ))
        .parse()
        .expect("a count");
        most = most.max(running);
        ended = 0;
        for (project, id) in projects.iter().zip(&executions) {
            let execution = alice.execution(project, id);
            let step = &execution["steps"][0];
            if step["status"] == "waiting" {
                waiting = Some(step.clone());
            }
            match execution["status"].as_str() {
                Some("completed") => ended += 1,
                Some("failed" | "cancelled") => panic!("{execution}"),
                _ => {}
            }
        }
    }
    assert!(
        most <= 2,
        "{most} of the connector's steps ran at once with a cap of 2"
    );
    assert_eq!(most, 2, "the cap lets two steps run together");
    let waiting = waiting.expect("a step beyond the cap showed `waiting`");
    assert!(
        waiting["waiting_reason"]
            .as_str()
            .is_some_and(|reason| reason.contains("max_concurrent_steps (2)")),
        "{waiting}"
    );
}

#[test]
fn an_api_key_works_on_every_api_process_and_every_one_refuses_it_once_revoked() {
    let deployment = Deployment::new();
    let (_first, first) = deployment.api(KEY);
    let (_second, second) = deployment.api(KEY);
    let admin = Client {
        base: first.clone(),
        token: token(&deployment, "user_admin", true),
    };
    let created = admin.created("/api/api-keys", json!({"name": "etl", "role": "member"}));
    let key = created["key"].as_str().expect("the key, shown once").to_owned();
    let uuid = created["uuid"].as_str().expect("uuid").to_owned();
    let by_key = |base: &str| Client {
        base: base.to_owned(),
        token: key.clone(),
    };
    for base in [&first, &second] {
        let project = by_key(base).created("/api/projects", json!({"name": "by key"}));
        assert_eq!(project["created_by"], format!("svc_{uuid}"), "{project}");
    }
    let (status, listed) = admin.call(Method::GET, "/api/api-keys", None);
    assert_eq!(status, 200, "{listed}");
    let listed = listed["data"][0].clone();
    assert!(listed["last_used_at"].is_string(), "{listed}");
    assert!(listed.get("key").is_none(), "the key is never listed: {listed}");

    let (status, _) = admin.call(Method::DELETE, &format!("/api/api-keys/{uuid}"), None);
    assert_eq!(status, 204);
    for base in [&first, &second] {
        let (status, body) = by_key(base).call(Method::GET, "/api/projects", None);
        assert_eq!(status, 401, "a revoked key is refused at once by {base}: {body}");
    }
}

/// The OAuth client the fleet's processes share with the test's
/// authorization server.
const CLIENT_ID: &str = "ferry-fleet";
const CLIENT_SECRET: &str = "ferry-fleet-secret";

/// Follows one authorization through the api as a browser would: authorize,
/// the provider's consent, the callback; the new connector's uuid.
async fn authorize(browser: &reqwest::Client, public: &str, token: &str, n: usize) -> String {
    let location = |response: &reqwest::Response| {
        response
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned)
            .expect("a redirect")
    };
    let config = json!({"project_id": "fleet", "location": "US"}).to_string();
    let start = browser
        .get(format!("{public}/api/oauth/bigquery/authorize"))
        .query(&[
            ("state", format!("csrf-{n}").as_str()),
            ("display_name", format!("Warehouse {n}").as_str()),
            ("config", config.as_str()),
        ])
        .bearer_auth(token)
        .send()
        .await
        .expect("authorize");
    assert_eq!(start.status(), 302, "authorize redirects to the provider");
    let consent = browser.get(location(&start)).send().await.expect("consent");
    let callback = browser.get(location(&consent)).send().await.expect("callback");
    let end = location(&callback);
    assert!(end.contains("status=success"), "{end}");
    end.split(['?', '&'])
        .find_map(|pair| pair.strip_prefix("uuid="))
        .expect("uuid")
        .to_owned()
}

/// Executes every project once and waits for all of them: each completes
/// with its one row.
fn run_all(client: &Client, projects: &[String]) {
    let ids: Vec<String> = projects
        .iter()
        .map(|project| {
            let (status, accepted) = client.call(
                Method::POST,
                &format!("/api/projects/{project}/execute"),
                Some(json!({})),
            );
            assert_eq!(status, 202, "{accepted}");
            accepted["execution_id"].as_str().expect("id").to_owned()
        })
        .collect();
    for (project, id) in projects.iter().zip(&ids) {
        let done = eventually("an execution to end", Duration::from_secs(60), || {
            let execution = client.execution(project, id);
            matches!(
                execution["status"].as_str(),
                Some("completed" | "failed" | "cancelled")
            )
            .then_some(execution)
        });
        assert_eq!(done["status"], "completed", "{done}");
        assert_eq!(done["results"]["total_rows"], 1, "{done}");
    }
}

#[test]
fn fifty_oauth_connectors_keep_working_while_two_schedulers_and_three_workers_refresh_them_and_the_leader_is_killed()
 {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let auth = runtime.block_on(AuthServer::start(CLIENT_ID, CLIENT_SECRET));
    // Every access token lasts 40 s, and the stand-in refuses it after.
    auth.set_expires_in(40);
    auth.enforce_expiry();
    let bigquery = runtime.block_on(warehouses::Server::bigquery(auth.token_check()));
    bigquery.on(
        "SELECT 1 AS ok",
        Plan::rows(
            vec![json!({"name": "ok", "type": "INTEGER"})],
            vec![vec![json!("1")]],
        ),
    );

    let deployment = Deployment::new();
    let port = free_port();
    let public = format!("http://127.0.0.1:{port}");
    let settings = [
        ("FERRY_OAUTH_BIGQUERY_CLIENT_ID", CLIENT_ID.to_owned()),
        ("FERRY_OAUTH_BIGQUERY_CLIENT_SECRET", CLIENT_SECRET.to_owned()),
        ("FERRY_OAUTH_BIGQUERY_AUTH_URL", auth.auth_url()),
        ("FERRY_OAUTH_BIGQUERY_TOKEN_URL", auth.token_url()),
        (
            "FERRY_OAUTH_BIGQUERY_API_URL",
            format!("http://{}", bigquery.addr),
        ),
        ("FERRY_PUBLIC_URL", public.clone()),
    ];
    let env: Vec<(&str, &str)> = settings.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let _api = Running(
        deployment
            .command(KEY)
            .envs(env.iter().copied())
            .args(["api", "--listen", &format!("127.0.0.1:{port}")])
            .stderr(Stdio::null())
            .spawn()
            .expect("api"),
    );
    crate::wait_healthy(&format!("{public}/readyz"));
    let _workers: Vec<Running> = (0..3).map(|_| deployment.worker_with(KEY, 8, &env)).collect();
    let alice = Client {
        base: public.clone(),
        token: token(&deployment, "user_alice", false),
    };

    // 50 connectors authorized through the api, each with a token that
    // expires within a minute, and a project reading through each.
    let browser = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let connectors: Vec<String> = runtime.block_on(async {
        let mut connectors = Vec::new();
        for n in 0..50 {
            connectors.push(authorize(&browser, &public, &alice.token, n).await);
        }
        connectors
    });
    let projects: Vec<String> = connectors
        .iter()
        .map(|uuid| {
            alice.project(
                "Fleet",
                "sql_query",
                json!({"connector_uuid": uuid, "query": "SELECT 1 AS ok"}),
            )
        })
        .collect();
    let granted = auth.token_calls();

    let mut scheduler_env = env.clone();
    scheduler_env.push(("FERRY_PROBE_INTERVAL", "0"));
    let a = Process::scheduler(&deployment, &scheduler_env);
    let b = Process::scheduler(&deployment, &scheduler_env);
    let refreshes = || {
        auth.token_requests()
            .iter()
            .filter(|request| request["grant_type"] == "refresh_token")
            .count()
    };
    // The leader refreshes every token, which all expire within its
    // margin (in its first pass, or the next one 30 s later).
    eventually(
        "the leader's refresh of every token",
        Duration::from_secs(75),
        || (refreshes() >= connectors.len()).then_some(()),
    );
    run_all(&alice, &projects);
    let (leader, standby) = if a.leads() { (a, b) } else { (b, a) };
    assert!(standby.metric("ferry_scheduler_is_leader") == 0.0, "one leader");
    let before_kill = refreshes();
    leader.kill();

    // While nobody leads, the workers run on the tokens they have; the
    // standby takes over and refreshes on; the tokens the killed leader
    // got expire meanwhile, so every connector keeps working only through
    // refreshes made after it died.
    run_all(&alice, &projects);
    eventually("the standby to lead", Duration::from_secs(40), || {
        standby.leads().then_some(())
    });
    std::thread::sleep(Duration::from_secs(42));
    run_all(&alice, &projects);
    assert!(refreshes() > before_kill, "refreshes after the leader died");

    // Exactly one token call per refresh: every refresh-token call spent
    // one live refresh token, and none was refused.
    assert_eq!(auth.refused_refreshes(), 0, "no invalid_grant");
    let spent = auth.spent_refresh_tokens();
    assert_eq!(
        spent.len(),
        refreshes(),
        "each refresh call spent a live refresh token once"
    );
    let unique: std::collections::HashSet<&String> = spent.iter().collect();
    assert_eq!(unique.len(), spent.len(), "no refresh token spent twice");
    assert_eq!(
        auth.token_calls(),
        granted + refreshes(),
        "no token call but the grants and the refreshes"
    );
    assert_eq!(
        bigquery.unauthorized(),
        0,
        "no request went out with an expired token"
    );
}

/// The sum of the samples of `name` whose labels contain `labels` in the
/// metrics at `url`.
fn sample_at(url: &str, name: &str, labels: &str) -> f64 {
    let text = block_on(async {
        match reqwest::get(url).await {
            Ok(response) => response.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    });
    text.lines()
        .filter(|line| line.split([' ', '{']).next() == Some(name) && line.contains(labels))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[test]
fn a_fleet_of_two_apis_three_workers_and_two_schedulers_completes_500_executions_through_a_worker_restart_and_a_leader_kill()
 {
    let deployment = Deployment::new();
    let role = Role::create("fleet");
    let (_api_a, a) = deployment.api(KEY);
    let (_api_b, b) = deployment.api(KEY);
    let mut workers: Vec<Process> = (0..3).map(|_| Process::worker(&deployment, "4", &[])).collect();
    let scheduler_env = [
        ("FERRY_PROBE_INTERVAL", "0"),
        ("FERRY_QUEUED_GRACE_SECONDS", "2"),
        ("FERRY_REAP_INTERVAL_SECONDS", "1"),
    ];
    let first = Process::scheduler(&deployment, &scheduler_env);
    let second = Process::scheduler(&deployment, &scheduler_env);
    let token = token(&deployment, "user_alice", false);
    let clients = [
        Client {
            base: a.clone(),
            token: token.clone(),
        },
        Client {
            base: b.clone(),
            token,
        },
    ];
    let alice = &clients[0];
    let connector = alice.created(
        "/api/connectors",
        json!({"type": "postgresql", "display_name": "fleet source", "config": role.config(), "test_connection": false}),
    );
    let uuid = connector["uuid"].as_str().expect("uuid").to_owned();

    // Mixed projects, each with the rows its execution must produce: a
    // transform alone, a PostgreSQL read of n rows, and a read followed by
    // a transform over it.
    let mut projects: Vec<(String, u64)> = Vec::new();
    for i in 0..4_u64 {
        projects.push((
            alice.project(
                "Constant",
                "transform",
                json!({"query": format!("select {i} as i")}),
            ),
            1,
        ));
        let n = 10 + 40 * i;
        projects.push((
            alice.project(
                "Series",
                "sql_query",
                json!({"connector_uuid": uuid, "query": format!("select generate_series(1, {n}) as n")}),
            ),
            n,
        ));
        let project = alice.project(
            "Series and count",
            "sql_query",
            json!({"connector_uuid": uuid, "query": format!("select generate_series(1, {n}) as n")}),
        );
        alice.created(
            &format!("/api/projects/{project}/steps"),
            json!({"name": "count", "type": "transform", "config": {"query": "select count(*) as c from step_1"}}),
        );
        projects.push((project, n + 1));
    }

    let started = Instant::now();
    let mut submitted: Vec<(String, String, u64)> = Vec::new();
    let mut old_worker_completed = 0.0;
    let mut leader_killed = false;
    let (mut first, mut second) = (Some(first), Some(second));
    for k in 0..500 {
        let (project, rows) = &projects[k % projects.len()];
        let client = &clients[k % 2];
        let (status, accepted) = client.call(
            Method::POST,
            &format!("/api/projects/{project}/execute"),
            Some(json!({})),
        );
        assert_eq!(status, 202, "{accepted}");
        let id = accepted["execution_id"].as_str().expect("id").to_owned();
        submitted.push((project.clone(), id, *rows));
        if k == 200 {
            // A rolling restart of one worker: a new one joins, the old one
            // stops on SIGTERM (finishing or handing back what it runs).
            workers.push(Process::worker(&deployment, "4", &[]));
            let old = workers.remove(0);
            old_worker_completed = old.sample("ferry_worker_executions_finished_total", "completed");
            let pid = old.process.0.id().to_string();
            let status = std::process::Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .expect("kill");
            assert!(status.success());
            let mut old = old;
            eventually("the old worker to stop", Duration::from_secs(60), || {
                let sampled = old.sample("ferry_worker_executions_finished_total", "completed");
                old_worker_completed = f64::max(old_worker_completed, sampled);
                old.process.0.try_wait().expect("try_wait")
            });
        }
        if k == 300 && !leader_killed {
            let (leader, standby) = if first.as_ref().is_some_and(Process::leads) {
                (first.take(), second.take())
            } else {
                (second.take(), first.take())
            };
            leader.expect("a leader").kill();
            second = standby;
            leader_killed = true;
        }
    }
    let submitted_in = started.elapsed();

    // Every execution completes with its rows.
    let mut pending: Vec<&(String, String, u64)> = submitted.iter().collect();
    let deadline = Instant::now() + Duration::from_secs(240);
    while !pending.is_empty() {
        assert!(
            Instant::now() < deadline,
            "{} executions still running after 4 minutes",
            pending.len()
        );
        let mut ended = std::collections::HashMap::new();
        for (project, _) in &projects {
            for execution in alice.executions(project) {
                if matches!(
                    execution["status"].as_str(),
                    Some("completed" | "failed" | "cancelled")
                ) {
                    ended.insert(
                        execution["execution_id"].as_str().unwrap_or_default().to_owned(),
                        execution,
                    );
                }
            }
        }
        pending.retain(|(_, id, _)| !ended.contains_key(id));
        std::thread::sleep(Duration::from_millis(500));
    }
    let took = started.elapsed();
    for (project, id, rows) in &submitted {
        let execution = alice.execution(project, id);
        assert_eq!(execution["status"], "completed", "{execution}");
        assert_eq!(execution["results"]["total_rows"], *rows, "{execution}");
    }

    // The processes' metrics add up to what happened: the two apis
    // accepted 500 executions between them; the workers ended them all (the
    // stopped worker's last count read while it finished its last jobs);
    // the standby leads.
    let accepted: f64 = [&a, &b]
        .iter()
        .map(|base| {
            sample_at(
                &format!("{base}/metrics"),
                "ferry_http_requests_total",
                r#"route="/api/projects/{uuid}/execute""#,
            )
        })
        .sum();
    assert_eq!(accepted, 500.0, "execute requests counted by the apis");
    let completed: f64 = old_worker_completed
        + workers
            .iter()
            .map(|w| w.sample("ferry_worker_executions_finished_total", "completed"))
            .sum::<f64>();
    assert!(
        (496.0..=500.0).contains(&completed),
        "the workers counted {completed} completed executions of 500"
    );
    let standby = second.expect("the standby");
    eventually("the standby to lead", Duration::from_secs(40), || {
        standby.leads().then_some(())
    });
    eprintln!(
        "fleet: 500 executions submitted in {submitted_in:?}, all completed in {took:?}; \
         workers counted {completed}; one worker restarted, the leader killed"
    );
}
