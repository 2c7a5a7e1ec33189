//! `wasimoff batch`: a thousand tasks, every result exactly once.

use std::collections::BTreeSet;

use crate::support::{json_lines, run, shared, text};

#[test]
fn a_batch_of_1000_tasks_from_a_template_yields_every_result_once() {
    let env = shared();
    let dir = tempfile::tempdir().unwrap();
    let template = dir.path().join("template.json");
    std::fs::write(
        &template,
        r#"{"@type": "wasimoff/wasimoff.v1.Task.Wasip1.Request",
            "info": {"reference": "task-{i}"},
            "params": {"binary": {"ref": "hello.wasm"}, "args": ["hello.wasm", "n={}"]}}"#,
    )
    .unwrap();
    let out = run(env.cli().args([
        "batch",
        "--template",
        template.to_str().unwrap(),
        "--range",
        "0..1000",
        "--concurrency",
        "64",
        "--progress",
    ]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let lines = json_lines(&out.stdout);
    assert_eq!(lines.len(), 1000);
    let mut indexes = BTreeSet::new();
    for line in &lines {
        let index = line["index"].as_u64().unwrap();
        assert!(indexes.insert(index), "index {index} twice");
        assert_eq!(line["status"], 0, "{line}");
        assert_eq!(line["reference"], format!("task-{index}"));
        let stdout = line["stdout"].as_str().unwrap();
        assert!(stdout.contains(&format!(r#""n={index}""#)), "{stdout}");
    }
    assert_eq!(indexes, (0..1000).collect());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("1000 tasks in")
            && stderr.contains("1000 exited 0")
            && stderr.contains("0 failed"),
        "{stderr}"
    );
    // `--progress` with stderr on a pipe: plain lines, one per tenth of the tasks at least.
    for done in (100..=1000).step_by(100) {
        assert!(
            stderr.contains(&format!("wasimoff: {done}/1000 results (0 failed)")),
            "{stderr}"
        );
    }
    assert!(!stderr.contains("has no {}"), "{stderr}");
}

#[test]
fn a_template_without_a_placeholder_is_warned_about() {
    let env = shared();
    let out = run(env.cli().args([
        "batch",
        "--template",
        crate::support::root()
            .join("examples/tasks/hello-exit.json")
            .to_str()
            .unwrap(),
        "--range",
        "3",
    ]));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("has no {} or {i} in its strings, so every task of the range is the same"),
        "{stderr}"
    );
    assert_eq!(json_lines(&out.stdout).len(), 3);
}

#[test]
fn a_batch_from_json_lines_reports_failures_in_the_summary() {
    let env = shared();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tasks.jsonl");
    let mut text_lines = String::new();
    for i in 0..20 {
        let binary = if i % 10 == 9 {
            "missing.wasm"
        } else {
            "tsp.wasm"
        };
        text_lines.push_str(&format!(
            r#"{{"params": {{"binary": {{"ref": "{binary}"}}, "args": ["tsp.wasm", "rand", "6"]}}}}"#
        ));
        text_lines.push('\n');
    }
    std::fs::write(&file, text_lines).unwrap();
    let out = run(env.cli().args(["batch", "--file", file.to_str().unwrap()]));
    assert_eq!(out.status.code(), Some(1));
    let lines = json_lines(&out.stdout);
    assert_eq!(lines.len(), 20);
    let failed: BTreeSet<u64> = lines
        .iter()
        .filter(|l| l.get("error").is_some())
        .map(|l| {
            assert_eq!(l["code"], "not_found");
            l["index"].as_u64().unwrap()
        })
        .collect();
    assert_eq!(failed, BTreeSet::from([9, 19]));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("18 exited 0, 0 exited non-zero, 2 failed"),
        "{stderr}"
    );
    assert!(stderr.contains("2 × not_found"), "{stderr}");
}

#[test]
fn a_batch_over_a_broker_list_goes_on_past_a_broker_that_is_down() {
    let env = shared();
    // A port that refuses connections: bound, then closed.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_url = format!("http://{}", dead.local_addr().unwrap());
    drop(dead);
    let dir = tempfile::tempdir().unwrap();
    let template = dir.path().join("template.json");
    std::fs::write(
        &template,
        r#"{"params": {"binary": {"ref": "hello.wasm"}, "args": ["hello.wasm", "n={}"]}}"#,
    )
    .unwrap();
    // The dead broker first: the probe, and every other batch, meet it first.
    let out = run(env
        .cli()
        .env("WASIMOFF_BROKER", format!("{dead_url}, {}", env.url))
        .args(["batch", "--template", template.to_str().unwrap()])
        .args(["--range", "0..300", "--concurrency", "300"]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let lines = json_lines(&out.stdout);
    let indexes: BTreeSet<u64> = lines.iter().map(|l| l["index"].as_u64().unwrap()).collect();
    assert_eq!((lines.len(), indexes), (300, (0..300).collect()));
    for line in &lines {
        let stdout = line["stdout"].as_str().unwrap();
        assert!(
            stdout.contains(&format!(r#""n={}""#, line["index"])),
            "{stdout}"
        );
    }
}
