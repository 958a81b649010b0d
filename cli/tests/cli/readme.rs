//! The README's commands, run as written: the "Try it" walk-through end to
//! end against a fresh `ferry up` (with the built `ferry` first on PATH),
//! and the other sections' commands checked as far as this machine allows.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::{FERRY, wait_healthy};

/// Where the README says `ferry up` listens.
const BASE: &str = "http://127.0.0.1:8080";

fn readme() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md")).expect("README.md")
}

/// The text of the `## <title>` section.
fn section(readme: &str, title: &str) -> String {
    let heading = format!("\n## {title}\n");
    let start = readme
        .find(&heading)
        .unwrap_or_else(|| panic!("no section {title}"))
        + heading.len();
    let end = readme[start..].find("\n## ").map_or(readme.len(), |i| start + i);
    readme[start..end].to_owned()
}

/// The fenced blocks of `text` whose info string is `lang`.
fn blocks(text: &str, lang: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        match &mut current {
            None if line.trim_start() == format!("```{lang}") => current = Some(String::new()),
            Some(block) if line.trim_start() == "```" => {
                found.push(std::mem::take(block));
                current = None;
            }
            Some(block) => {
                block.push_str(line);
                block.push('\n');
            }
            None => {}
        }
    }
    found
}

/// Splits a shell block into commands: comment lines are dropped, and a
/// command runs on over a trailing backslash or an open quote.
fn commands(block: &str) -> Vec<String> {
    let mut commands = Vec::new();
    let mut current = String::new();
    let (mut single, mut double) = (false, false);
    for line in block.lines() {
        if current.is_empty() && (line.trim().is_empty() || line.trim_start().starts_with('#')) {
            continue;
        }
        current.push_str(line);
        current.push('\n');
        for c in line.chars() {
            match c {
                '\'' if !double => single = !single,
                '"' if !single => double = !double,
                _ => {}
            }
        }
        if !single && !double && !line.trim_end().ends_with('\\') {
            commands.push(std::mem::take(&mut current));
        }
    }
    assert!(current.is_empty(), "unterminated command: {current}");
    commands
}

/// A directory holding the built `ferry`, for PATH.
fn binary_dir() -> PathBuf {
    Path::new(FERRY).parent().expect("bin dir").to_owned()
}

fn path_with_ferry() -> String {
    let path = std::env::var("PATH").unwrap_or_default();
    format!("{}:{path}", binary_dir().display())
}

/// `bash` in `dir` with the built `ferry` first on PATH and no FERRY_*
/// variables inherited.
fn bash(dir: &Path) -> Command {
    let mut command = Command::new("bash");
    for (key, _) in std::env::vars() {
        if key.starts_with("FERRY_") {
            command.env_remove(key);
        }
    }
    command
        .current_dir(dir)
        .env("PATH", path_with_ferry())
        .env("RUST_LOG", "info");
    command
}

/// A process group killed (SIGTERM, then SIGKILL) when dropped.
struct Group(Child);

impl Drop for Group {
    fn drop(&mut self) {
        let group = format!("-{}", self.0.id());
        let _ = Command::new("kill").args(["-TERM", "--", &group]).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = self.0.wait();
    }
}

/// One bash process that runs the commands in turn, so that variables set
/// by one (`TOKEN=$(…)`) reach the next, as in a terminal.
struct Session {
    _shell: Group,
    stdin: ChildStdin,
    dir: tempfile::TempDir,
    count: usize,
}

/// What one command printed and how it exited.
struct Ran {
    status: i32,
    stdout: Vec<u8>,
    stderr: String,
}

impl Ran {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
}

impl Session {
    fn start(cwd: &Path) -> Session {
        use std::os::unix::process::CommandExt;
        let mut child = bash(cwd)
            .arg("-s")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("bash");
        let stdin = child.stdin.take().expect("stdin");
        Session {
            _shell: Group(child),
            stdin,
            dir: tempfile::tempdir().expect("dir"),
            count: 0,
        }
    }

    fn run(&mut self, command: &str) -> Ran {
        self.count += 1;
        let file = |name: &str| self.dir.path().join(format!("{}.{name}", self.count));
        let (out, err, rc) = (file("out"), file("err"), file("rc"));
        let script = format!(
            "{{\n{command}\n}} > '{}' 2> '{}'; echo $? > '{}.tmp' && mv '{}.tmp' '{}'\n",
            out.display(),
            err.display(),
            rc.display(),
            rc.display(),
            rc.display()
        );
        self.stdin.write_all(script.as_bytes()).expect("write");
        self.stdin.flush().expect("flush");
        let deadline = Instant::now() + Duration::from_secs(120);
        while !rc.exists() {
            assert!(Instant::now() < deadline, "timed out running:\n{command}");
            std::thread::sleep(Duration::from_millis(20));
        }
        Ran {
            status: std::fs::read_to_string(&rc)
                .expect("rc")
                .trim()
                .parse()
                .expect("status"),
            stdout: std::fs::read(&out).expect("stdout"),
            stderr: std::fs::read_to_string(&err).expect("stderr"),
        }
    }
}

/// The placeholders the README documents and the JSON field that fills
/// each, from the output of the command whose URL ends as given.
const PLACEHOLDERS: [(&str, &str, &str); 4] = [
    ("<project uuid>", "/api/projects", "uuid"),
    ("<connector uuid>", "/api/connectors", "uuid"),
    ("<step id>", "/steps", "step_id"),
    ("<execution id>", "/execute", "execution_id"),
];

/// The path of the URL a curl command calls, without its query.
fn url_path(command: &str) -> Option<String> {
    let start = command.find(BASE)? + BASE.len();
    let rest = &command[start..];
    let end = rest
        .find(|c: char| c == '?' || c == '"' || c.is_whitespace())
        .unwrap_or(rest.len());
    Some(rest[..end].to_owned())
}

#[test]
fn the_readme_try_it_commands_run_verbatim_against_a_fresh_ferry_up() {
    let readme = readme();
    let try_it = section(&readme, "Try it");
    let shell = blocks(&try_it, "sh");
    assert_eq!(shell.len(), 2, "a block that starts Ferry, then the calls");
    assert_eq!(commands(&shell[0]), ["ferry up\n"]);

    // A fresh directory, as on a clean machine; `ferry up` runs there as
    // the README's first block says, and the second block in the same
    // directory as from a second terminal.
    let cwd = tempfile::tempdir().expect("dir");
    let log = std::fs::File::create(cwd.path().join("ferry-up.log")).expect("log");
    let up = {
        use std::os::unix::process::CommandExt;
        bash(cwd.path())
            .args(["-c", &shell[0]])
            .stdout(Stdio::null())
            .stderr(log)
            .process_group(0)
            .spawn()
            .expect("ferry up")
    };
    let _up = Group(up);
    wait_healthy(&format!("{BASE}/readyz"));

    let mut session = Session::start(cwd.path());
    let mut values: HashMap<&str, String> = HashMap::new();
    let mut last = None;
    for command in commands(&shell[1]) {
        let mut runnable = command.clone();
        for (placeholder, _, _) in PLACEHOLDERS {
            if runnable.contains(placeholder) {
                let value = values
                    .get(placeholder)
                    .unwrap_or_else(|| panic!("{placeholder} is used before a command prints it"));
                runnable = runnable.replace(placeholder, value);
            }
        }
        assert!(
            !runnable.contains('<'),
            "an undocumented placeholder in:\n{command}"
        );
        let ran = session.run(&runnable);
        assert_eq!(
            ran.status, 0,
            "exit status {} of:\n{command}\nstderr: {}",
            ran.status, ran.stderr
        );
        let Some(path) = url_path(&runnable) else {
            continue;
        };
        let body: Value = serde_json::from_slice(&ran.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}) from:\n{command}\n{}", ran.text()));
        assert!(
            body.get("error").is_none(),
            "the API refused:\n{command}\n{body:#}"
        );
        for (placeholder, suffix, field) in PLACEHOLDERS {
            if path.ends_with(suffix)
                && let Some(value) = body[field].as_str()
            {
                values.insert(placeholder, value.to_owned());
            }
        }
        if path.ends_with("/execute") {
            assert_eq!(body["status"], "completed", "the execution:\n{body:#}");
        }
        last = Some((command, body));
    }
    assert_eq!(values.len(), PLACEHOLDERS.len(), "every placeholder filled");

    // The last command reads the result as JSON…
    let (command, body) = last.expect("commands ran");
    assert!(command.contains("/result"), "{command}");
    let rows = body["data"].as_array().expect("data rows");
    assert!(!rows.is_empty(), "pg_stat_activity has rows: {body:#}");
    let columns: Vec<&str> = body["columns"]
        .as_array()
        .expect("columns")
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert!(columns.contains(&"client_addr"), "{columns:?}");

    // …and, as its comment says, as CSV and Parquet.
    let token = String::from_utf8(session.run("printf %s \"$TOKEN\"").stdout).expect("token");
    let url = format!(
        "{BASE}/api/projects/{}/executions/{}/steps/{}/result?limit=10",
        values["<project uuid>"], values["<execution id>"], values["<step id>"]
    );
    for format in ["csv", "parquet"] {
        let (status, bytes) = crate::block_on(async {
            let response = reqwest::Client::new()
                .get(format!("{url}&format={format}"))
                .bearer_auth(&token)
                .send()
                .await
                .expect("send");
            (response.status().as_u16(), response.bytes().await.expect("body"))
        });
        assert_eq!(
            status,
            200,
            "?format={format}: {}",
            String::from_utf8_lossy(&bytes)
        );
        match format {
            "csv" => {
                let text = String::from_utf8_lossy(&bytes);
                let mut lines = text.lines();
                let header = lines.next().expect("a header line");
                assert!(header.contains("client_addr"), "{header}");
                assert!(lines.next().is_some(), "CSV rows:\n{text}");
            }
            _ => assert!(
                bytes.starts_with(b"PAR1") && bytes.ends_with(b"PAR1"),
                "a Parquet file"
            ),
        }
    }
}

#[test]
fn the_readme_first_commands_name_this_package_and_its_up_command() {
    let readme = readme();
    let first = blocks(&readme, "sh").into_iter().next().expect("a first block");
    let lines: Vec<&str> = first.lines().collect();
    assert!(
        lines[0].starts_with(&format!(
            "cargo run --release -p {} -- up ",
            env!("CARGO_PKG_NAME")
        )),
        "{first}"
    );
    assert!(lines[1].starts_with("cargo nextest run --workspace "), "{first}");
    let help = Command::new(FERRY).args(["up", "--help"]).output().expect("help");
    assert!(help.status.success());
}

/// Every FERRY_* variable `ferry <command> --help` lists.
fn variables_in_help() -> Vec<String> {
    let mut found = Vec::new();
    for command in [
        &[][..],
        &["up"],
        &["api"],
        &["worker"],
        &["scheduler"],
        &["migrate"],
        &["token"],
    ] {
        let out = Command::new(FERRY)
            .args(command)
            .arg("--help")
            .output()
            .expect("help");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        for word in text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
            if word.len() > "FERRY_".len() && word.starts_with("FERRY_") && !found.iter().any(|f| f == word) {
                found.push(word.to_owned());
            }
        }
    }
    found.sort();
    found
}

#[test]
fn the_readme_settings_table_lists_every_setting_of_the_help_and_no_other() {
    let readme = readme();
    let distributed = section(&readme, "Distributed setup");
    let mut table: Vec<String> = Vec::new();
    for line in distributed.lines().filter(|l| l.starts_with("| `FERRY_")) {
        let first_cell = line.split('|').nth(1).unwrap_or_default();
        for name in first_cell.split('`').filter(|w| w.starts_with("FERRY_")) {
            table.push(name.to_owned());
        }
    }
    table.sort();
    assert_eq!(table, variables_in_help());
}

#[test]
fn the_readme_distributed_commands_parse_and_stop_with_one_line_on_an_unreachable_database() {
    // The block exports its settings and starts every role; on this
    // machine its database host `db` does not exist, so each command must
    // get past its arguments and settings and stop at the connection.
    let readme = readme();
    let block = blocks(&section(&readme, "Distributed setup"), "sh")
        .into_iter()
        .next()
        .expect("a block");
    let all = commands(&block);
    let (exports, roles): (Vec<&String>, Vec<&String>) = all.iter().partition(|c| c.starts_with("export "));
    assert!(exports.len() >= 4, "{block}");
    assert!(roles.len() >= 5, "{block}");
    let cwd = tempfile::tempdir().expect("dir");
    let exports: String = exports.iter().map(|c| c.as_str()).collect();
    for role in roles {
        let script = format!("{exports}{role}");
        let out = bash(cwd.path()).args(["-c", &script]).output().expect("bash");
        let stderr = String::from_utf8_lossy(&out.stderr);
        let lines: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error: ")).collect();
        assert_eq!(out.status.code(), Some(1), "{role}{stderr}");
        assert_eq!(lines.len(), 1, "{role}{stderr}");
        assert!(
            lines[0].contains("cannot open the metadata database at postgres://ferry:****@db:5432/ferry"),
            "{role}{stderr}"
        );
    }
}

#[test]
fn the_readme_names_only_files_that_exist() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let readme = readme();
    let mut named = Vec::new();
    for (i, span) in readme.split('`').enumerate() {
        let word = span.trim_start_matches("bash ");
        let is_path = i % 2 == 1
            && !word.contains(' ')
            && !word.contains("://")
            && !word.starts_with('/')
            && !word.starts_with('$')
            && (word.ends_with(".md") || word.ends_with(".sh") || word.ends_with(".rs") || word == ".ci/run");
        if is_path {
            named.push(word.to_owned());
        }
    }
    assert!(named.len() >= 8, "{named:?}");
    for path in named {
        assert!(
            root.join(&path).exists(),
            "README.md names {path}, which does not exist"
        );
    }
}
