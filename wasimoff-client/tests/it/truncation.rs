//! Output cut at the provider's cap is visible end to end: a broker and a native provider whose
//! output cap is 4 KiB, the `flood` guest writing 1 MiB, seen through the library (Connect and
//! the client WebSocket), the exec route and the CLI.

use std::sync::OnceLock;

use futures::StreamExt;
use wasimoff_client::Task;
use wasimoff_provider::WasmtimeConfig;

use crate::support::{Env, config, json_lines, run, text};

/// Bytes a provider keeps of each stream here.
const CAP: usize = 4096;

const WARNING: &str = "wasimoff: warning: stdout was truncated at the provider's output limit";

/// A broker with one provider whose output cap is [`CAP`], and `flood.wasm`, `hello.wasm`.
fn env() -> &'static Env {
    static ENV: OnceLock<Env> = OnceLock::new();
    ENV.get_or_init(|| {
        let env = Env::start(config(1_000));
        env.add_provider_with(
            "small-cap",
            WasmtimeConfig {
                workers: 2,
                default_max_output: CAP,
                ..WasmtimeConfig::default()
            },
        );
        env.wait_status("the small-cap provider", |s| s.workers == 2);
        env.upload(wasimoff_wasi_apps::FLOOD, "flood.wasm");
        env.upload(wasimoff_wasi_apps::HELLO, "hello.wasm");
        env
    })
}

/// `hello` with an argument this long echoes it on stdout and fails on it on stderr, past the
/// cap on both.
fn long_file_arg() -> String {
    format!("file:/{}", "x".repeat(2 * CAP))
}

#[test]
fn the_library_flags_a_cut_output() {
    let env = env();
    let client = env.client();
    let (cut, whole, both, streamed) = env.block_on(async move {
        let cut = client.run(Task::wasip1("flood.wasm").arg("1M")).await;
        let whole = client.run(Task::wasip1("flood.wasm").arg("1K")).await;
        let both = client
            .run(Task::wasip1("hello.wasm").arg(long_file_arg()))
            .await;
        // The client WebSocket carries the flags too.
        let tasks = ["1M", "1K"].map(|size| Task::wasip1("flood.wasm").arg(size));
        let mut streamed: Vec<_> = client.submit_many(tasks, 2).collect().await;
        streamed.sort_by_key(|(index, _)| *index);
        (cut, whole, both, streamed)
    });

    let cut = cut.unwrap();
    assert!(cut.success(), "the guest itself ended well: {cut:?}");
    assert!(cut.stdout_truncated && !cut.stderr_truncated);
    assert_eq!(cut.truncated(), Some("stdout"));
    assert_eq!(cut.stdout.len(), CAP);
    assert!(cut.stdout.starts_with(b"wasimoff flood: "));
    assert_eq!(cut.stderr_lossy(), "flood: wrote 1048576 bytes\n");

    let whole = whole.unwrap();
    assert_eq!(whole.stdout.len(), 1024);
    assert_eq!(whole.truncated(), None);

    let both = both.unwrap();
    assert_eq!(both.status, 1);
    assert_eq!(both.truncated(), Some("stdout, stderr"));
    assert_eq!((both.stdout.len(), both.stderr.len()), (CAP, CAP));

    let flags: Vec<_> = streamed
        .into_iter()
        .map(|(_, result)| result.unwrap().truncated())
        .collect();
    assert_eq!(flags, [Some("stdout"), None]);
}

#[test]
fn the_exec_route_names_the_cut_streams() {
    let env = env();
    let url = env.url.clone();
    let answers = env.block_on(async move {
        let client = reqwest::Client::new();
        let mut answers = Vec::new();
        for (wasm, args) in [
            ("flood.wasm", "1M".to_owned()),
            ("flood.wasm", "1K".to_owned()),
            ("hello.wasm", long_file_arg()),
        ] {
            let response = client
                .post(format!("{url}/api/client/run/{wasm}"))
                .header("x-args", args)
                .send()
                .await
                .unwrap();
            let header = response
                .headers()
                .get("x-wasimoff-truncated")
                .map(|v| v.to_str().unwrap().to_owned());
            let status = response.headers()["x-wasimoff-status"]
                .to_str()
                .unwrap()
                .to_owned();
            let body = response.bytes().await.unwrap();
            answers.push((header, status, body.len()));
        }
        answers
    });
    assert_eq!(answers[0], (Some("stdout".into()), "0".into(), CAP));
    assert_eq!(answers[1], (None, "0".into(), 1024));
    assert_eq!(answers[2], (Some("stdout, stderr".into()), "1".into(), CAP));
}

#[test]
fn run_warns_and_fails_with_74_when_stdout_was_cut() {
    let env = env();
    let out = run(env.cli().args(["run", "flood.wasm", "--", "1M"]));
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(74), "{stderr}");
    assert_eq!(out.stdout.len(), CAP);
    assert!(stderr.contains(WARNING), "{stderr}");
    assert!(
        stderr.contains(&format!("only its first {CAP} bytes were returned")),
        "{stderr}"
    );
    assert!(!stderr.contains("stderr was truncated"), "{stderr}");

    // Asked to, it keeps the task's status but still warns.
    let out = run(env
        .cli()
        .args(["--allow-truncated", "run", "flood.wasm", "--", "1M"]));
    assert_eq!(out.status.code(), Some(0));
    assert!(text(&out.stderr).contains(WARNING));

    // Nothing cut: no warning.
    let out = run(env.cli().args(["run", "flood.wasm", "--", "1K"]));
    assert_eq!(out.status.code(), Some(0));
    assert!(
        !text(&out.stderr).contains("truncated"),
        "{}",
        text(&out.stderr)
    );

    // A task that failed keeps its own status; both streams are named.
    let arg = long_file_arg();
    let out = run(env.cli().args(["run", "hello.wasm", "--", &arg]));
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(WARNING), "{stderr}");
    assert!(
        stderr.contains("wasimoff: warning: stderr was truncated at the provider's output limit"),
        "{stderr}"
    );

    // The JSON line carries the flags.
    let out = run(env.cli().args(["run", "--json", "flood.wasm", "--", "1M"]));
    assert_eq!(out.status.code(), Some(74));
    let lines = json_lines(&out.stdout);
    assert_eq!(lines[0]["stdout_truncated"], true);
    assert!(lines[0].get("stderr_truncated").is_none(), "{}", lines[0]);
}

#[test]
fn task_counts_cut_outputs_and_fails() {
    let env = env();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("floods.jsonl");
    let one = |size: &str| {
        format!(
            r#"{{"info": {{"reference": "{size}"}}, "params": {{"binary": {{"ref": "flood.wasm"}}, "args": ["flood.wasm", "{size}"]}}}}"#
        )
    };
    std::fs::write(&file, format!("{}\n{}\n", one("1M"), one("1K"))).unwrap();

    let out = run(env.cli().args(["task", file.to_str().unwrap()]));
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("2 exited 0, 0 exited non-zero, 0 failed, 1 with output truncated"),
        "{stderr}"
    );
    let mut lines = json_lines(&out.stdout);
    lines.sort_by_key(|l| l["index"].as_u64());
    assert_eq!(lines[0]["reference"], "1M");
    assert_eq!(lines[0]["stdout_truncated"], true);
    assert_eq!(lines[1]["reference"], "1K");
    assert!(lines[1].get("stdout_truncated").is_none(), "{}", lines[1]);

    let out = run(env.cli().args([
        "batch",
        "--allow-truncated",
        "--file",
        file.to_str().unwrap(),
    ]));
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("1 with output truncated"), "{stderr}");
}
