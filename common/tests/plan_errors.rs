//! Malformed plans, each with its exact message: file, line, column, field, what is wrong.

use bandsync_common::plan::{StepSpec, parse};
use bandsync_common::workloads::RedisBasicOps;

const TARGET: &str = "[target]\nredis_url = \"redis://127.0.0.1:6379\"\n";

fn err(text: &str) -> String {
    match parse(text, "plan.toml", "plan") {
        Ok(p) => panic!("expected an error, got a plan: {p:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn malformed_plans_give_their_exact_error_and_line() {
    let t = TARGET;
    let cases: Vec<(String, &str)> = vec![
        (
            "nmae = \"x\"\n".into(),
            "plan.toml:1:1: nmae: unknown field `nmae`, expected one of `name`, `description`, `target`, `run`, `testbed`, `criteria`, `faults`, `steps`",
        ),
        (
            format!("{t}[[steps]]\nkind = \"redis_basic_ops\"\niterashuns = 5\n"),
            "plan.toml:5:14: steps[0].iterashuns: not a parameter of `redis_basic_ops` (it takes: iterations, members, clients, rate, start_rate, stages, duration, max_in_flight)",
        ),
        (
            format!("{t}[[steps]]\nkind = \"redis_basic_ops\"\niterations = \"many\"\n"),
            "plan.toml:5:14: steps[0].iterations: invalid type: string \"many\", expected i64",
        ),
        (
            format!("{t}[[steps]]\nkind = \"redis_basic_ops\"\niterations = -5\n"),
            "plan.toml:5:14: steps[0].iterations: must be between 1 and 10000000, got -5",
        ),
        (
            "[[steps]]\nkind = \"redis_basic_ops\"\n".into(),
            "plan.toml:1:1: target: missing: step `redis_basic_ops` uses Redis; set [target] redis_url = \"redis://HOST:PORT\", or let the testbed start a Redis with [testbed] redis = true",
        ),
        (
            "[target]\nkey_prefix = \"x\"\n[[steps]]\nkind = \"redis_basic_ops\"\n".into(),
            "plan.toml:1:1: target.redis_url: missing: step `redis_basic_ops` uses Redis; set [target] redis_url = \"redis://HOST:PORT\", or let the testbed start a Redis with [testbed] redis = true",
        ),
        (
            "[target]\nredis_url = \"http://127.0.0.1:6379\"\n[[steps]]\nkind = \"redis_basic_ops\"\n".into(),
            "plan.toml:2:13: target.redis_url: `http://127.0.0.1:6379` is not a Redis URL: scheme `http` is not one of redis, rediss, redis+unix, unix",
        ),
        (
            "[target]\nredis_url = \"redis://\"\n[[steps]]\nkind = \"redis_basic_ops\"\n".into(),
            "plan.toml:2:13: target.redis_url: `redis://` is not a Redis URL: it has no host",
        ),
        (
            "[target]\nredis_url = \"not a url\"\n[[steps]]\nkind = \"redis_basic_ops\"\n".into(),
            "plan.toml:2:13: target.redis_url: `not a url` is not a Redis URL: relative URL without a base",
        ),
        (
            format!("{t}[[steps]]\nkind = \"redis_fancy\"\n"),
            "plan.toml:4:8: steps[0].kind: unknown step kind `redis_fancy`: expected one of protocol_conformance, timestamp_generation, timestamp_precision, redis_basic_ops, redis_concurrent, redis_memory, session_integrity, session_concurrent_updates, redis_pool, event_consistency, session_sync, redis_failover",
        ),
        (
            format!("{t}[[steps]]\n"),
            "plan.toml:3:1: steps[0].kind: missing: one of protocol_conformance, timestamp_generation, timestamp_precision, redis_basic_ops, redis_concurrent, redis_memory, session_integrity, session_concurrent_updates, redis_pool, event_consistency, session_sync, redis_failover",
        ),
        (
            format!("{t}[[steps]]\nkind = \"redis_basic_ops\"\nduration = \"5s\"\n"),
            "plan.toml:5:12: steps[0].duration: goes with `rate` (the open model: operations arrive at `rate` per second for `duration`); give `rate` too, or count operations instead",
        ),
        (
            format!("{t}[[steps]]\nkind = \"redis_basic_ops\"\nrate = 1000\n"),
            "plan.toml:5:8: steps[0].rate: needs `duration`, how long to hold the rate (e.g. duration = \"30s\")",
        ),
        (
            format!("{t}[[steps]]\nkind = \"redis_basic_ops\"\nrate = 1000\nduration = \"5s\"\niterations = 10\n"),
            "plan.toml:7:14: steps[0].iterations: is for the closed model; with `rate` or `stages` the schedule decides how many operations run",
        ),
        (
            format!("{t}[[steps]]\nkind = \"redis_concurrent\"\nrate = 10\nduration = \"5s\"\nstages = [{{ target = 5, duration = \"1s\" }}]\n"),
            "plan.toml:7:10: steps[0].stages: give either `rate` (with `duration`) or `stages`, not both",
        ),
        (
            format!("{t}[[steps]]\nkind = \"redis_concurrent\"\nstages = [{{ target = 5, duration = \"1s\" }}, {{ target = -1, duration = \"1s\" }}]\n"),
            "plan.toml:5:55: steps[0].stages[1].target: must be at least 0 and at most 10,000,000 operations per second, got -1",
        ),
        (
            format!("{t}[[steps]]\nkind = \"redis_concurrent\"\nstages = [{{ target = 5, durtion = \"1s\" }}]\n"),
            "plan.toml:5:25: steps[0].stages: unknown field `durtion`, expected `target` or `duration`",
        ),
        (
            format!("{t}[[steps]]\nkind = \"redis_basic_ops\"\nrate = 100\nduration = \"5s\"\nmax_in_flight = 0\n"),
            "plan.toml:7:17: steps[0].max_in_flight: must be between 1 and 1000000, got 0",
        ),
        (
            format!("{t}[[steps]]\nkind = \"redis_basic_ops\"\nrate = 100\nduration = \"20m\"\ntimeout = \"1m\"\n"),
            "plan.toml:6:12: steps[0].duration: 20m is not shorter than the step timeout 1m",
        ),
        (
            format!("{t}[[steps]]\nkind = \"redis_basic_ops\"\nmax_in_flight = 10\n"),
            "plan.toml:5:17: steps[0].max_in_flight: is a key of the open model: give `rate` (with `duration`) or `stages` too",
        ),
        (
            format!("{t}[run]\nagents = 0\n[[steps]]\nkind = \"redis_basic_ops\"\n"),
            "plan.toml:4:10: run.agents: must be between 1 and 10000, got 0",
        ),
        (
            format!(
                "{t}[[steps]]\nname = \"a\"\nkind = \"redis_basic_ops\"\n[[steps]]\nname = \"a\"\nkind = \"timestamp_generation\"\n"
            ),
            "plan.toml:7:8: steps[1].name: duplicate step name `a`: step names must be unique",
        ),
        (
            t.to_string(),
            "plan.toml:1:1: steps: the plan has no steps: add at least one [[steps]] table",
        ),
        (
            format!("{t}[[steps]\nkind = \"redis_basic_ops\"\n"),
            "plan.toml:3:9: [[steps]: unclosed array table, expected `]`",
        ),
        (
            format!("{t}[[steps]]\nkind = \"timestamp_generation\"\niterations = 1000\nbatch_size = 300\n"),
            "plan.toml:6:14: steps[0].batch_size: 300 does not divide iterations = 1000",
        ),
        (
            format!("{t}[[steps]]\nkind = \"timestamp_precision\"\nduration = \"10 parsecs\"\n"),
            "plan.toml:5:12: steps[0].duration: `10 parsecs`: unknown unit `parsecs` (use ms, s, m or h)",
        ),
        (
            format!("{t}[[steps]]\nkind = \"timestamp_precision\"\nduration = \"20m\"\ntimeout = \"5m\"\n"),
            "plan.toml:5:12: steps[0].duration: 20m is not shorter than the step timeout 5m",
        ),
        (
            "[target]\nredis_url = \"redis://127.0.0.1:6379\"\nkey_prefix = \"bad*prefix\"\n[[steps]]\nkind = \"redis_basic_ops\"\n"
                .into(),
            "plan.toml:3:14: target.key_prefix: `bad*prefix` is not a valid prefix: use 1 to 64 of A-Z a-z 0-9 - _ . (it becomes part of SCAN patterns)",
        ),
        (
            format!("{t}[testbed]\nlocal_agents = 2\n[[steps]]\nkind = \"redis_basic_ops\"\n"),
            "plan.toml:2:13: target.redis_url: `redis://127.0.0.1:6379` conflicts with [testbed] redis = true, which starts its own Redis: remove one of them",
        ),
        (
            format!("{t}[criteria]\ntimestamps_per_second = -1.0\n[[steps]]\nkind = \"timestamp_generation\"\n"),
            "plan.toml:4:25: criteria.timestamps_per_second: must be a positive number, got -1",
        ),
        (
            format!("{t}[run]\nagent_wait = \"0s\"\n[[steps]]\nkind = \"redis_basic_ops\"\n"),
            "plan.toml:4:14: run.agent_wait: must be longer than zero",
        ),
        (
            format!("{t}[run]\nstep_timeout = 30\n[[steps]]\nkind = \"redis_basic_ops\"\n"),
            "plan.toml:4:16: run.step_timeout: invalid type: integer `30`, expected a string",
        ),
        (
            format!("{t}[testbed]\nlocal_agents = 0\nredis = false\n[[steps]]\nkind = \"redis_basic_ops\"\n"),
            "plan.toml:3:1: testbed: starts nothing: set local_agents > 0, redis = true or servers > 0",
        ),
        ("name = \"x\"\nname = \"y\"\n".into(), "plan.toml:2:1: name: duplicate key"),
        // Found by the fuzzer: a line starting with `=` has no key to name.
        (
            "= aenm \"a\"\nnam;e =\"\n".into(),
            "plan.toml:1:8: (plan): unexpected key or value, expected newline, `#`",
        ),
        (
            format!("{t}[[steps]]\nkind = \"redis_concurrent\"\nconnections = \"pooled\"\n"),
            "plan.toml:5:15: steps[0].connections: `pooled` is not one of shared, per_client",
        ),
        (
            format!("{t}[[steps]]\nkind = \"session_concurrent_updates\"\nlocking = \"optimistic\"\n"),
            "plan.toml:5:11: steps[0].locking: `optimistic` is not one of watch, none",
        ),
        (
            format!("{t}[[steps]]\nkind = \"redis_memory\"\nsessions = 10\nsample = 11\n"),
            "plan.toml:6:10: steps[0].sample: 11 is more than sessions = 10",
        ),
        (
            format!("{t}[[steps]]\nkind = \"redis_pool\"\ninterval = \"2s\"\nduration = \"1s\"\n"),
            "plan.toml:5:12: steps[0].interval: 2s is longer than duration = 1s",
        ),
        (
            format!("{t}[criteria]\nintegrity_rate = 99.9\n[[steps]]\nkind = \"session_integrity\"\n"),
            "plan.toml:4:18: criteria.integrity_rate: must be a fraction in (0, 1], got 99.9 (write 0.95 for 95 %)",
        ),
        (
            format!("{t}[[steps]]\nkind = \"session_integrity\"\nlocking = \"watch\"\n"),
            "plan.toml:5:11: steps[0].locking: not a parameter of `session_integrity` (it takes: sessions)",
        ),
        (
            "[target]\nredis_url = \"redis://127.0.0.1:6379\"\nservers = [\"http://127.0.0.1:3000\", \"ws://x:1\"]\n[[steps]]\nkind = \"redis_basic_ops\"\n".into(),
            "plan.toml:3:37: target.servers[1]: `ws://x:1`: scheme must be http or https (Socket.IO over WebSocket)",
        ),
        (
            "[target]\nservers = [\"http://127.0.0.1:3000\"]\n[testbed]\n[[steps]]\nkind = \"redis_basic_ops\"\n".into(),
            "plan.toml:2:11: target.servers: conflicts with the 2 servers [testbed] starts: set [testbed] servers = 0, or remove target.servers",
        ),
        (
            format!("{t}[[steps]]\nkind = \"redis_failover\"\nmode = \"restart\"\n"),
            "plan.toml:5:8: steps[0].mode: fault `restart` is not allowed by this plan: it affects every client of the target Redis; allow it with [faults] allow = [\"restart\"]",
        ),
        (
            format!("{t}[faults]\nallow = [\"unplug\"]\n[[steps]]\nkind = \"redis_basic_ops\"\n"),
            "plan.toml:4:10: faults.allow: unknown fault `unplug`: expected pause, kill_clients or restart",
        ),
        (
            format!("{t}[faults]\nallow = [\"kill_clients\"]\n[[steps]]\nkind = \"redis_failover\"\nmode = \"kill_clients\"\nduration = \"2s\"\n"),
            "plan.toml:8:12: steps[0].duration: kill_clients is instantaneous: remove duration",
        ),
    ];
    let mut failures = Vec::new();
    for (i, (text, expected)) in cases.iter().enumerate() {
        let got = err(text);
        if got != *expected {
            failures.push(format!("case {i}:\n  expected: {expected}\n  got:      {got}"));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn unnamed_steps_skip_names_already_taken() {
    let step = "[[steps]]\nkind = \"redis_basic_ops\"\n";
    let text = format!(
        "{TARGET}[[steps]]\nname = \"redis_basic_ops-2\"\nkind = \"redis_basic_ops\"\n{step}{step}{step}[[steps]]\nkind = \"redis_pool\"\n{step}"
    );
    let plan = parse(&text, "plan.toml", "p").unwrap();
    let names: Vec<_> = plan.steps.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "redis_basic_ops-2",
            "redis_basic_ops",
            "redis_basic_ops-3",
            "redis_basic_ops-4",
            "redis_pool",
            "redis_basic_ops-5"
        ]
    );
    // Thousands of unnamed steps are named in one pass (this took seconds when each name
    // re-tried every suffix from 2).
    let text = format!("{TARGET}{}", step.repeat(3000));
    let plan = parse(&text, "plan.toml", "p").unwrap();
    assert_eq!(plan.steps[2999].name, "redis_basic_ops-3000");
}

#[test]
fn a_good_plan_gets_defaults_and_unique_names() {
    let text = format!(
        "{TARGET}[[steps]]\nkind = \"redis_basic_ops\"\n[[steps]]\nkind = \"redis_basic_ops\"\niterations = 5\n"
    );
    let plan = parse(&text, "plan.toml", "my-plan").unwrap();
    assert_eq!(plan.name, "my-plan");
    assert_eq!(plan.target.key_prefix, "bandsync-test");
    let names: Vec<_> = plan.steps.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["redis_basic_ops", "redis_basic_ops-2"]);
    assert_eq!(
        plan.steps[0].spec,
        StepSpec::RedisBasicOps(RedisBasicOps {
            iterations: 1000,
            members: 10,
            clients: 1,
            open: None,
        })
    );
    assert_eq!(
        plan.steps[1].spec,
        StepSpec::RedisBasicOps(RedisBasicOps {
            iterations: 5,
            members: 10,
            clients: 1,
            open: None,
        })
    );
}

#[test]
fn every_plan_in_the_repository_is_valid() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../plans");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            bandsync_common::plan::load(&path).unwrap_or_else(|e| panic!("{e}"));
            seen += 1;
        }
    }
    assert!(seen > 0, "no plans found in {}", dir.display());
}

#[test]
fn an_unreadable_file_is_named() {
    let e = bandsync_common::plan::load(std::path::Path::new("/nonexistent/plan.toml")).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("/nonexistent/plan.toml:0:0: (file): cannot read the plan"),
        "{e}"
    );
}

#[test]
fn the_plan_in_the_readme_is_valid() {
    let readme =
        std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md")).unwrap();
    let start = readme.find("```toml\n").expect("a toml block in the README") + "```toml\n".len();
    let end = start + readme[start..].find("```").unwrap();
    let plan = parse(&readme[start..end], "README.md", "readme").unwrap_or_else(|e| panic!("{e}"));
    let mut kinds: Vec<&str> = plan.steps.iter().map(|s| s.spec.kind()).collect();
    kinds.sort_unstable();
    kinds.dedup();
    let mut all = bandsync_common::plan::STEP_KINDS.to_vec();
    all.sort_unstable();
    assert_eq!(kinds, all, "the README shows every step kind");
}

#[test]
fn a_session_may_hold_up_to_3000_members() {
    let plan = |members: u32| {
        format!(
            "{TARGET}servers = [\"http://127.0.0.1:3000\"]\n[[steps]]\nkind = \"session_sync\"\nsessions = 1\nmembers = {members}\n"
        )
    };
    let p = parse(&plan(3_000), "plan.toml", "plan").expect("3,000 members in one session");
    // The probe the plan gains runs first: find the step itself.
    let members = p.steps.iter().find_map(|s| match &s.spec {
        StepSpec::SessionSync(s) => Some(s.members),
        _ => None,
    });
    assert_eq!(members, Some(3_000));
    let e = err(&plan(3_001));
    assert!(e.contains("steps[0].members") && e.contains("3001"), "{e}");
}
