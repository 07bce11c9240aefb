//! The binaries as a user runs them: the testbed (private redis-server and 2 agent processes),
//! exit codes, and errors that name what is wrong.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

mod support;
use support::{OwnedRedis, long_step_running, long_step_scheduled, stderr_lines, wait_for_line};

fn coordinator() -> Command {
    Command::new(env!("CARGO_BIN_EXE_bandsync-coordinator"))
}

/// The agent binary beside the coordinator's. `cargo test` does not rebuild another package's
/// binary: `scripts/test` runs `cargo build --workspace --bins` first, so it is never stale.
fn agent_bin() -> PathBuf {
    let p = Path::new(env!("CARGO_BIN_EXE_bandsync-coordinator")).with_file_name("bandsync-agent");
    assert!(
        p.is_file(),
        "{} is missing: run the tests with `cargo test --workspace`",
        p.display()
    );
    p
}

/// The reference server's binary beside the coordinator's (see `agent_bin`).
fn server_bin() -> PathBuf {
    let p = Path::new(env!("CARGO_BIN_EXE_bandsync-coordinator")).with_file_name("bandsync-server");
    assert!(
        p.is_file(),
        "{} is missing: run the tests with `cargo test --workspace`",
        p.display()
    );
    p
}

/// `bandsync-coordinator run PLAN ARGS… --agent-bin AGENT --server-bin SERVER`, logging at `log`.
fn testbed_run(plan: &Path, args: &[&str], log: &str) -> Command {
    let mut c = coordinator();
    c.arg("run")
        .arg(plan)
        .args(args)
        .arg("--agent-bin")
        .arg(agent_bin())
        .arg("--server-bin")
        .arg(server_bin())
        .env("RUST_LOG", log);
    c
}

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn quickstart_runs_on_the_testbed_and_writes_json() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("report.json");
    let junit = dir.path().join("report.xml");
    let out = testbed_run(
        &repo("plans/quickstart.toml"),
        &["--json", json.to_str().unwrap(), "--junit", junit.to_str().unwrap()],
        "warn",
    )
    .output()
    .unwrap();
    let (stdout, stderr) = text(&out);
    // 0 or 1: whether this machine meets the document's thresholds is not this test's business;
    // 2 and 3 would mean the run itself went wrong.
    let code = out.status.code();
    assert!(
        matches!(code, Some(0 | 1)),
        "exit {code:?}\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(stdout.contains("📊 Redis & Timestamp Performance Report"), "{stdout}");
    assert!(stdout.contains("SET Ops/sec:"), "{stdout}");

    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(report["status"]["state"], "complete");
    assert_eq!(report["agents"].as_array().unwrap().len(), 2);
    let hosts: Vec<_> = report["agents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["agent_id"].as_str().unwrap())
        .collect();
    assert!(hosts.contains(&"local-0") && hosts.contains(&"local-1"), "{hosts:?}");
    assert_eq!(report["leftover_keys"], 0);
    assert_eq!(report["steps"][0]["figures"]["total_iterations"], 200_000);
    // The testbed's two bandsync-server instances served the run and are gone after it.
    let servers: Vec<&str> = report["target"]["servers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    assert_eq!(servers.len(), 2, "{servers:?}");
    assert!(
        stdout.contains(&format!("BandSync servers: {}", servers.join(", "))),
        "{stdout}"
    );
    for url in servers {
        let addr = url.strip_prefix("http://").unwrap();
        assert!(std::net::TcpStream::connect(addr).is_err(), "{url} still serving");
    }
    let failed = report["criteria"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["status"] == "fail");
    assert_eq!(code == Some(1), failed, "exit code follows the criteria");
    check_junit(&junit, &report);
    // The JSON is what its published schema says.
    let schema: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(repo("common/schema/report.schema.json")).unwrap()).unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let errors: Vec<String> = validator
        .iter_errors(&report)
        .map(|e| format!("{}: {e}", e.instance_path))
        .collect();
    assert!(errors.is_empty(), "{errors:#?}");
}

#[test]
fn a_bad_plan_exits_2_naming_file_line_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let plan = dir.path().join("bad.toml");
    std::fs::write(
        &plan,
        "[testbed]\nlocal_agents = 2\n[[steps]]\nkind = \"redis_basic_ops\"\niterations = 0\n",
    )
    .unwrap();
    let out = coordinator().args(["run", plan.to_str().unwrap()]).output().unwrap();
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stdout.is_empty(), "nothing ran: {stdout}");
    let expected = format!(
        "{}:5:14: steps[0].iterations: must be between 1 and 10000000, got 0",
        plan.display()
    );
    assert!(stderr.contains(&expected), "{stderr}");
    // Nothing was started: no testbed line in the log.
    assert!(!stderr.contains("redis-server started"), "{stderr}");

    let out = coordinator()
        .args(["validate", plan.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = coordinator()
        .args(["validate", repo("plans/quickstart.toml").to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{:?}", text(&out));
}

#[test]
fn too_few_agents_exit_3_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let plan = dir.path().join("wait.toml");
    std::fs::write(
        &plan,
        "[testbed]\nlocal_agents = 1\n[run]\nagents = 2\nagent_wait = \"3s\"\n[[steps]]\nkind = \"timestamp_generation\"\n",
    )
    .unwrap();
    let out = testbed_run(&plan, &["--listen", "127.0.0.1:0"], "warn")
        .output()
        .unwrap();
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(3), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stderr.contains("only 1 of 2 agents joined within 3 s"), "{stderr}");
}

/// A plan "file" that never ends or never answers is refused at once: `/dev/zero` (unbounded)
/// and a FIFO nobody writes to (it would block).
#[test]
fn endless_or_blocking_plan_files_are_refused_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("plan.fifo");
    assert!(Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    for path in [std::path::Path::new("/dev/zero"), fifo.as_path()] {
        let start = std::time::Instant::now();
        let out = coordinator()
            .args(["validate", path.to_str().unwrap()])
            .output()
            .unwrap();
        let (_, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains("cannot read the plan"), "{stderr}");
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{path:?} took {:?}",
            start.elapsed()
        );
    }
}

/// `--connect-timeout` is used whole: the agent keeps trying until it has passed (it once gave
/// up at half of it, when the next back-off step did not fit).
#[test]
fn an_agent_tries_the_coordinator_for_its_whole_connect_timeout() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let start = std::time::Instant::now();
    let out = Command::new(agent_bin())
        .args([
            "--coordinator",
            &format!("http://127.0.0.1:{port}"),
            "--connect-timeout",
            "3s",
            "--once",
        ])
        .output()
        .unwrap();
    let waited = start.elapsed();
    assert_eq!(out.status.code(), Some(3), "{}", text(&out).1);
    assert!(
        waited >= Duration::from_millis(2_900) && waited < Duration::from_secs(10),
        "gave up after {waited:?}"
    );
}

/// A password in a Redis URL never reaches a message: plan validation, the testbed conflict,
/// `--redis-url` (also `?pass=` of a unix socket URL), the unreachable target, the server.
#[test]
fn no_password_reaches_any_message() {
    let dir = tempfile::tempdir().unwrap();
    let secret = "s3cr3t-pw";
    let cases = [
        format!("[target]\nredis_url = \"redis://:{secret}@127.0.0.1:99999\"\n[[steps]]\nkind = \"redis_basic_ops\"\n"),
        format!(
            "[target]\nredis_url = \"redis://:{secret}@127.0.0.1:6379\"\n[testbed]\nredis = true\n[[steps]]\nkind = \"redis_basic_ops\"\n"
        ),
        format!("[target]\nredis_url = \"redis+unix:?pass={secret}\"\n[[steps]]\nkind = \"redis_basic_ops\"\n"),
    ];
    for (i, case) in cases.iter().enumerate() {
        let plan = dir.path().join(format!("p{i}.toml"));
        std::fs::write(&plan, case).unwrap();
        let out = coordinator()
            .args(["validate", plan.to_str().unwrap()])
            .output()
            .unwrap();
        let (stdout, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(2), "case {i}: {stderr}");
        assert!(
            !stdout.contains(secret) && !stderr.contains(secret),
            "case {i}: {stderr}"
        );
        assert!(stderr.contains("***"), "case {i}: the URL is shown, redacted: {stderr}");
    }
    let plan = dir.path().join("ok.toml");
    std::fs::write(&plan, "[run]\nagents = 1\n[[steps]]\nkind = \"redis_basic_ops\"\n").unwrap();
    let url = format!("redis+unix:///nonexistent/r.sock?pass={secret}");
    let out = coordinator()
        .args([
            "run",
            plan.to_str().unwrap(),
            "--redis-url",
            &url,
            "--listen",
            "127.0.0.1:0",
        ])
        .output()
        .unwrap();
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(!stdout.contains(secret) && !stderr.contains(secret), "{stderr}");
    assert!(stderr.contains("pass=***"), "{stderr}");
    let out = Command::new(server_bin())
        .args(["--port", "0", "--redis-url", &format!("redis://:{secret}@h:99999")])
        .output()
        .unwrap();
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(64), "{stderr}");
    assert!(!stderr.contains(secret) && stderr.contains(":***@"), "{stderr}");
}

#[test]
fn usage_errors_exit_2() {
    let out = coordinator()
        .args([
            "run",
            repo("plans/quickstart.toml").to_str().unwrap(),
            "--redis-url",
            "http://nope",
        ])
        .output()
        .unwrap();
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("--redis-url: `http://nope` is not a Redis URL"),
        "{stderr}"
    );

    let out = coordinator().args(["run"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));

    // The plan's 0..=64 limit holds on the command line too; nothing is started.
    let out = coordinator()
        .args([
            "run",
            repo("plans/quickstart.toml").to_str().unwrap(),
            "--local-agents",
            "65",
        ])
        .output()
        .unwrap();
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--local-agents 65: at most 64"), "{stderr}");
    assert!(!stderr.contains("started"), "{stderr}");

    // A plan that restarts Redis cannot use --redis-url: refused before the testbed starts.
    let out = coordinator()
        .args([
            "run",
            repo("plans/seed.toml").to_str().unwrap(),
            "--redis-url",
            "redis://127.0.0.1:1",
        ])
        .output()
        .unwrap();
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("restarts Redis: only the testbed's own redis-server"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("redis-server started") && !stderr.contains("local agent"),
        "{stderr}"
    );

    // A Redis URL whose database is not a number is refused when the plan is read.
    let dir = tempfile::tempdir().unwrap();
    let plan = dir.path().join("db.toml");
    std::fs::write(
        &plan,
        "[target]\nredis_url = \"redis://127.0.0.1:6379/notadb\"\n[[steps]]\nkind = \"redis_basic_ops\"\n",
    )
    .unwrap();
    let out = coordinator()
        .args(["validate", plan.to_str().unwrap()])
        .output()
        .unwrap();
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("the database `/notadb` is not a number"), "{stderr}");

    // Agents from other hosts must authenticate: no token, no run (and nothing was bound).
    let out = coordinator()
        .args([
            "run",
            repo("plans/quickstart.toml").to_str().unwrap(),
            "--listen",
            "0.0.0.0:0",
        ])
        .env_remove("BANDSYNC_TOKEN")
        .output()
        .unwrap();
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("set a shared token with --token or BANDSYNC_TOKEN"),
        "{stderr}"
    );
    let out = coordinator()
        .args([
            "run",
            repo("plans/quickstart.toml").to_str().unwrap(),
            "--token",
            "short",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).1.contains("--token must be at least 16 characters"));
}

/// With Redis stalled (SIGSTOP), the first interrupt's cleanup waits; a second interrupt ends
/// them at once: exit 130, the partial report says the keys left are unknown.
#[test]
fn a_second_interrupt_skips_a_stalled_cleanup() {
    let owned = OwnedRedis::start();
    let dir = tempfile::tempdir().unwrap();
    let plan = dir.path().join("stall.toml");
    std::fs::write(
        &plan,
        format!(
            "[target]\nredis_url = \"{}\"\n[testbed]\nlocal_agents = 1\nredis = false\n[[steps]]\nname = \"long\"\nkind = \"redis_basic_ops\"\niterations = 10000000\ntimeout = \"10m\"\n",
            owned.url()
        ),
    )
    .unwrap();
    let mut child = testbed_run(&plan, &[], "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = stderr_lines(&mut child);
    wait_for_line(&lines, Duration::from_secs(60), long_step_running);
    let redis_pid = owned.server.pid().to_string();
    let signal = |sig: &str, pid: &str| {
        assert!(Command::new("kill").args([sig, pid]).status().unwrap().success());
    };
    signal("-STOP", &redis_pid);
    let coordinator_pid = child.id().to_string();
    signal("-INT", &coordinator_pid);
    wait_for_line(&lines, Duration::from_secs(10), |l| l.contains("interrupt again"));
    std::thread::sleep(Duration::from_millis(500));
    signal("-INT", &coordinator_pid);
    let started = std::time::Instant::now();
    let out = child.wait_with_output().unwrap();
    let waited = started.elapsed();
    signal("-CONT", &redis_pid);
    let (stdout, _) = text(&out);
    assert_eq!(out.status.code(), Some(130), "{stdout}");
    assert!(
        waited < Duration::from_secs(5),
        "took {waited:?} after the second interrupt"
    );
    assert!(
        stdout.contains("unknown: the sweep failed because it was skipped: the run was interrupted twice"),
        "{stdout}"
    );
}

#[test]
fn sigint_aborts_the_run_prints_a_partial_report_and_tears_the_testbed_down() {
    // Once with the testbed's own Redis (to see it torn down), once with a Redis the test owns
    // (to see that nothing is left under the run prefix and a sentinel key is untouched).
    let mut owned = OwnedRedis::start();
    let dir = tempfile::tempdir().unwrap();
    let steps = "[[steps]]\nkind = \"timestamp_generation\"\n[[steps]]\nname = \"long\"\nkind = \"redis_basic_ops\"\niterations = 10000000\ntimeout = \"10m\"\n";
    for owned_redis in [false, true] {
        let plan = dir.path().join(format!("long-{owned_redis}.toml"));
        let head = if owned_redis {
            format!(
                "[target]\nredis_url = \"{}\"\n[testbed]\nlocal_agents = 2\nredis = false\n",
                owned.url()
            )
        } else {
            "[testbed]\nlocal_agents = 2\n".to_owned()
        };
        std::fs::write(&plan, head + steps).unwrap();
        let json = dir.path().join(format!("long-{owned_redis}.json"));
        let mut child = testbed_run(&plan, &["--json", json.to_str().unwrap()], "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Interrupt once the long step's load is running on the agents.
        let seen = wait_for_line(&stderr_lines(&mut child), Duration::from_secs(60), long_step_running);
        let testbed_port = seen
            .iter()
            .find_map(|l| l.split("port=").nth(1)?.split_whitespace().next()?.parse::<u16>().ok());
        assert!(
            Command::new("kill")
                .args(["-INT", &child.id().to_string()])
                .status()
                .unwrap()
                .success()
        );

        let started = std::time::Instant::now();
        let out = child.wait_with_output().unwrap();
        let (stdout, _) = text(&out);
        assert_eq!(out.status.code(), Some(130), "{stdout}");
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "took {:?} to stop",
            started.elapsed()
        );
        assert!(stdout.contains("RUN INTERRUPTED: partial report"), "{stdout}");
        assert!(
            stdout.contains("Avg Timestamps/sec:"),
            "the finished step is in the partial report:\n{stdout}"
        );
        // The agents deleted what they wrote before the coordinator swept: nothing was left.
        let keys_line = stdout
            .lines()
            .find(|l| l.trim_start().starts_with("Keys left under"))
            .unwrap_or_default();
        assert!(keys_line.ends_with("*: 0"), "{keys_line}\n{stdout}");
        // The partial report is also written as JSON.
        let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
        assert_eq!(report["status"]["state"], "interrupted");
        if owned_redis {
            assert_eq!(owned.keys_under(report["target"]["run_prefix"].as_str().unwrap()), 0);
            owned.assert_sentinel_untouched();
        } else {
            // The testbed's redis-server is gone.
            let port = testbed_port.expect("the testbed logged its redis port");
            assert!(
                std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
                "redis-server on {port} still running"
            );
        }
    }
}

/// Runs `plan` on the testbed's 2 agent processes, SIGKILLs one of them once step `long` is under
/// way, and returns the exit code and the JSON report.
fn run_and_kill_one_agent(plan: &Path, json: &Path) -> (Option<i32>, serde_json::Value) {
    let mut child = testbed_run(plan, &["--json", json.to_str().unwrap()], "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = stderr_lines(&mut child);
    wait_for_line(&lines, Duration::from_secs(60), long_step_scheduled);
    std::thread::sleep(Duration::from_millis(1200));
    let victim = children(&child).into_iter().next().expect("an agent process");
    assert!(
        Command::new("kill")
            .args(["-KILL", &victim])
            .status()
            .unwrap()
            .success()
    );
    let status = child.wait().unwrap();
    (
        status.code(),
        serde_json::from_str(&std::fs::read_to_string(json).unwrap()).unwrap(),
    )
}

/// Process ids of `parent`'s children (the testbed's agents).
fn children(parent: &std::process::Child) -> Vec<String> {
    let out = Command::new("pgrep")
        .args(["-P", &parent.id().to_string()])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn an_agent_killed_mid_step_is_reported_and_nothing_is_left_behind() {
    let mut redis = OwnedRedis::start();
    let dir = tempfile::tempdir().unwrap();
    for policy in ["continue", "stop"] {
        let plan = dir.path().join(format!("{policy}.toml"));
        std::fs::write(
            &plan,
            format!(
                "[target]\nredis_url = \"{}\"\n[testbed]\nlocal_agents = 2\nredis = false\n[run]\non_agent_loss = \"{policy}\"\n\
                 [[steps]]\nname = \"long\"\nkind = \"redis_basic_ops\"\niterations = 8000\n\
                 [[steps]]\nname = \"after\"\nkind = \"timestamp_generation\"\niterations = 1000\nbatch_size = 100\n",
                redis.url()
            ),
        )
        .unwrap();
        let (code, report) = run_and_kill_one_agent(&plan, &dir.path().join(format!("{policy}.json")));
        assert_eq!(code, Some(3), "{policy}: {report:#}");
        assert_eq!(report["status"]["state"], "incomplete", "{policy}");
        assert!(
            report["status"]["reason"].as_str().unwrap().contains("was lost"),
            "{policy}: {}",
            report["status"]
        );
        let lost: Vec<_> = report["agents"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| !a["lost"].is_null())
            .collect();
        assert_eq!(lost.len(), 1, "{policy}: one agent lost");
        assert_eq!(lost[0]["lost_in_step"], "long", "{policy}: {:?}", lost[0]);
        assert!(lost[0]["lost_after_s"].as_f64().unwrap() > 0.0);
        let long = &report["steps"][0];
        assert_eq!(long["agents_sent"].as_array().unwrap().len(), 2);
        let failures = long["failures"].as_array().unwrap();
        assert!(
            failures
                .iter()
                .any(|f| f["message"].as_str().unwrap().starts_with("agent lost during the step")),
            "{policy}: {failures:?}"
        );
        match policy {
            "continue" => {
                // The survivor finished the step and ran the next one.
                assert_eq!(long["agents_reported"].as_array().unwrap().len(), 1, "{long:#}");
                assert_eq!(report["steps"].as_array().unwrap().len(), 2);
                assert_eq!(report["steps"][1]["agents_reported"].as_array().unwrap().len(), 1);
            }
            _ => {
                // The survivor was aborted and no further step ran.
                assert_eq!(long["agents_reported"].as_array().unwrap().len(), 0, "{long:#}");
                assert!(
                    failures
                        .iter()
                        .any(|f| f["message"].as_str().unwrap().starts_with("aborted")),
                    "{failures:?}"
                );
                assert_eq!(report["steps"].as_array().unwrap().len(), 1);
            }
        }
        // The killed agent could not clean up; the coordinator's sweep did. Nothing is left.
        assert_eq!(
            redis.keys_under(report["target"]["run_prefix"].as_str().unwrap()),
            0,
            "{policy}"
        );
        redis.assert_sentinel_untouched();
    }
}

#[test]
fn agents_stop_their_redis_load_within_5_s_of_a_sigkilled_coordinator() {
    let mut redis = OwnedRedis::start();
    let dir = tempfile::tempdir().unwrap();
    let plan = dir.path().join("kill.toml");
    std::fs::write(
        &plan,
        format!(
            "[target]\nredis_url = \"{}\"\n[testbed]\nlocal_agents = 2\nredis = false\n\
             [[steps]]\nname = \"long\"\nkind = \"redis_basic_ops\"\niterations = 10000000\ntimeout = \"10m\"\n",
            redis.url()
        ),
    )
    .unwrap();
    let mut child = testbed_run(&plan, &[], "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_line(&stderr_lines(&mut child), Duration::from_secs(60), long_step_scheduled);
    std::thread::sleep(Duration::from_millis(1500));
    let agents = children(&child);
    assert_eq!(agents.len(), 2, "{agents:?}");
    let before = redis.stat("total_commands_processed");
    child.kill().unwrap(); // SIGKILL: no goodbye, no sweep
    child.wait().unwrap();
    let killed_at = std::time::Instant::now();

    // The agents notice, stop their load, delete their keys and exit (--once on the testbed).
    for pid in &agents {
        while Command::new("kill").args(["-0", pid]).status().unwrap().success() {
            assert!(
                killed_at.elapsed() < Duration::from_secs(20),
                "agent {pid} still running"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    std::thread::sleep(Duration::from_secs(5).saturating_sub(killed_at.elapsed()));
    let at_5s = redis.stat("total_commands_processed");
    std::thread::sleep(Duration::from_secs(1));
    let at_6s = redis.stat("total_commands_processed");
    assert!(at_5s > before, "the load was running");
    assert!(
        at_6s - at_5s <= 2,
        "Redis still got {} commands a second after 5 s",
        at_6s - at_5s - 1
    );
    assert_eq!(
        redis.dbsize(),
        1,
        "the agents deleted what they wrote; only the sentinel is left"
    );
    redis.assert_sentinel_untouched();
}

/// The bad-plan corpus: every file in tests/bad-plans gives exactly its message (file, line,
/// column, field, what is wrong) in `expected.txt`, exit 2, nothing on stdout, and no contact with
/// the target (a listener the test holds) or with any agent.
#[test]
fn every_plan_of_the_bad_plan_corpus_is_refused_with_its_message_and_contacts_nothing() {
    let corpus = repo("coordinator/tests/bad-plans");
    let expected: std::collections::BTreeMap<String, String> = std::fs::read_to_string(corpus.join("expected.txt"))
        .unwrap()
        .lines()
        .map(|l| {
            let (file, msg) = l.split_once(": ").unwrap();
            (file.to_owned(), msg.to_owned())
        })
        .collect();
    let target = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    target.set_nonblocking(true).unwrap();
    let target_url = format!("redis://{}", target.local_addr().unwrap());
    let dir = tempfile::tempdir().unwrap();

    let mut files: Vec<_> = std::fs::read_dir(&corpus)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    assert!(files.len() >= 30, "the corpus has {} plans", files.len());
    let mut failures = Vec::new();
    for path in &files {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let plan_text = std::fs::read_to_string(path).unwrap().replace("{TARGET}", &target_url);
        let plan = dir.path().join(&name);
        std::fs::write(&plan, plan_text).unwrap();
        let want = expected
            .get(&name)
            .unwrap_or_else(|| panic!("{name} has no line in expected.txt"));
        let want = format!("{}:{}", plan.display(), want.replace("{TARGET}", &target_url));
        // `--local-agents 2` would start processes if the plan were accepted.
        let out = testbed_run(&plan, &["--local-agents", "2", "--listen", "127.0.0.1:0"], "info")
            .output()
            .unwrap();
        let (stdout, stderr) = text(&out);
        if out.status.code() != Some(2)
            || !stdout.is_empty()
            || stderr.trim() != format!("bandsync-coordinator: invalid plan: {want}")
        {
            failures.push(format!(
                "{name}: exit {:?}\n  want: {want}\n  got:  {}",
                out.status.code(),
                stderr.trim()
            ));
        }
    }
    assert_eq!(expected.len(), files.len(), "expected.txt and the corpus differ");
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
    assert!(
        matches!(target.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "a bad plan made a connection to its target"
    );
}

/// The JUnit file parses and has one testcase per criterion, failed and skipped as the report says.
fn check_junit(path: &Path, report: &serde_json::Value) {
    let xml = std::fs::read_to_string(path).unwrap();
    let doc = roxmltree::Document::parse(&xml).unwrap_or_else(|e| panic!("{e}\n{xml}"));
    let criteria = report["criteria"].as_array().unwrap();
    let cases: Vec<_> = doc.descendants().filter(|n| n.has_tag_name("testcase")).collect();
    assert_eq!(cases.len(), criteria.len(), "{xml}");
    for (case, c) in cases.iter().zip(criteria) {
        assert_eq!(case.attribute("name"), c["name"].as_str());
        let failed = case.children().any(|n| n.has_tag_name("failure"));
        let skipped = case.children().any(|n| n.has_tag_name("skipped"));
        assert_eq!(failed, c["status"] == "fail", "{xml}");
        assert_eq!(skipped, c["status"] == "not_measured", "{xml}");
    }
    let suite = doc.descendants().find(|n| n.has_tag_name("testsuite")).unwrap();
    let fails = criteria.iter().filter(|c| c["status"] == "fail").count();
    assert_eq!(suite.attribute("failures"), Some(fails.to_string().as_str()));
    assert_eq!(suite.attribute("tests"), Some(criteria.len().to_string().as_str()));
}

#[test]
fn a_failing_criterion_exits_1_and_fails_its_junit_testcase() {
    let dir = tempfile::tempdir().unwrap();
    let plan = dir.path().join("strict.toml");
    std::fs::write(
        &plan,
        "[testbed]\nlocal_agents = 1\n[criteria]\ntimestamps_per_second = 1e15\n\
         [[steps]]\nkind = \"timestamp_generation\"\niterations = 10000\n",
    )
    .unwrap();
    let (json, junit) = (dir.path().join("r.json"), dir.path().join("r.xml"));
    let out = testbed_run(
        &plan,
        &["--json", json.to_str().unwrap(), "--junit", junit.to_str().unwrap()],
        "warn",
    )
    .output()
    .unwrap();
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(stdout.contains("FAIL  Timestamp Generation"), "{stdout}");
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(report["status"]["state"], "complete");
    let c = report["criteria"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == "timestamp_generation")
        .unwrap();
    assert_eq!(c["status"], "fail");
    check_junit(&junit, &report);
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(
        xml.contains(r#"name="Timestamp Generation" time="0"><failure type="criterion""#),
        "{xml}"
    );
}

#[test]
fn an_agent_that_lost_its_coordinator_serves_the_next_one() {
    let mut redis = OwnedRedis::start();
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    let token = "a-shared-token-for-both-runs";
    let plan = |name: &str, steps: &str| {
        let p = dir.path().join(format!("{name}.toml"));
        std::fs::write(
            &p,
            format!("[target]\nredis_url = \"{}\"\n[run]\nagents = 1\n{steps}", redis.url()),
        )
        .unwrap();
        p
    };
    let long = plan(
        "first",
        "[[steps]]\nname = \"long\"\nkind = \"redis_basic_ops\"\niterations = 10000000\ntimeout = \"10m\"\n",
    );
    let short = plan(
        "second",
        "[[steps]]\nkind = \"timestamp_generation\"\niterations = 1000\n",
    );
    let coordinator = |plan: &Path, json: Option<&Path>| {
        let mut c = coordinator();
        c.arg("run")
            .arg(plan)
            .args(["--listen", &listen, "--token", token])
            .env("RUST_LOG", "info");
        if let Some(j) = json {
            c.arg("--json").arg(j);
        }
        c.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap()
    };

    let mut first = coordinator(&long, None);
    let first_log = stderr_lines(&mut first);
    // No --once: after losing a coordinator the agent waits for the next one.
    let mut agent = Command::new(agent_bin())
        .args([
            "--coordinator",
            &listen,
            "--agent-id",
            "survivor",
            "--connect-timeout",
            "60s",
        ])
        .env("BANDSYNC_TOKEN", token)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let agent_log = stderr_lines(&mut agent);
    wait_for_line(&first_log, Duration::from_secs(60), long_step_scheduled);
    std::thread::sleep(Duration::from_millis(1000));
    first.kill().unwrap();
    first.wait().unwrap();
    wait_for_line(&agent_log, Duration::from_secs(20), |l| {
        l.contains("waiting for a coordinator")
    });

    let json = dir.path().join("second.json");
    let second = coordinator(&short, Some(&json));
    let out = second.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "the second run completed with the same agent"
    );
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(report["agents"][0]["agent_id"], "survivor");
    assert_eq!(report["steps"][0]["agents_reported"].as_array().unwrap().len(), 1);
    // The run finished: the agent exits 0 (it waits again only after losing a coordinator).
    let status = agent.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    // The first run's keys were deleted by the agent when it lost that coordinator.
    assert_eq!(redis.dbsize(), 1, "only the sentinel is left");
    redis.assert_sentinel_untouched();
}
