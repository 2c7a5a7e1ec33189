//! `wasimoff upload | run | task | status` as subprocesses.

use wasimoff_core::store::Ref;

use crate::support::{json_lines, root, run, shared, text};

#[test]
fn upload_prints_the_ref_and_sets_the_alias() {
    let env = shared();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("hello.wasm");
    std::fs::write(&file, wasimoff_wasi_apps::HELLO).unwrap();
    let out = run(env.cli().args([
        "upload",
        file.to_str().unwrap(),
        "--name",
        "hello-upload.wasm",
    ]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout).trim(),
        Ref::of(wasimoff_wasi_apps::HELLO).as_str()
    );
    // The alias now runs.
    let out = run(env.cli().args(["run", "hello-upload.wasm", "--", "x"]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains(r#"args = ["hello-upload.wasm", "x"]"#));
}

#[test]
fn upload_rejects_what_is_not_wasm_or_zip() {
    let env = shared();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("notes.txt");
    std::fs::write(&file, "not a module").unwrap();
    let out = run(env.cli().args(["upload", file.to_str().unwrap()]));
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("bad request"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn run_a_local_file_with_args_env_and_stdin() {
    let env = shared();
    let dir = tempfile::tempdir().unwrap();
    let module = dir.path().join("my-hello.wasm");
    std::fs::write(&module, wasimoff_wasi_apps::HELLO).unwrap();
    let input = dir.path().join("input.txt");
    std::fs::write(&input, "from a file\n").unwrap();
    let out = run(env.cli().args([
        "run",
        module.to_str().unwrap(),
        "--env",
        "GREETING=hello",
        "-e",
        "A=1",
        "--stdin",
        input.to_str().unwrap(),
        "--",
        "print_envs",
        "stdin",
    ]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.starts_with("Hello, wasimoff!"), "{stdout}");
    assert!(
        stdout.contains(r#"args = ["my-hello.wasm", "print_envs", "stdin"]"#),
        "{stdout}"
    );
    assert!(stdout.contains("env GREETING=hello"), "{stdout}");
    assert!(stdout.contains("env A=1"), "{stdout}");
    assert!(stdout.ends_with("from a file\n"), "{stdout}");
}

#[test]
fn run_reads_stdin_from_dash() {
    let env = shared();
    let mut child = env
        .cli()
        .args(["run", "hello.wasm", "--stdin", "-", "--", "stdin"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(b"piped in\n").unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert!(text(&out.stdout).ends_with("piped in\n"));
}

#[test]
fn run_propagates_the_exit_code() {
    let env = shared();
    let out = run(env.cli().args(["run", "hello.wasm", "--", "exit:3"]));
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    let out = run(env.cli().args(["run", "hello.wasm", "--", "exit:0"]));
    assert_eq!(out.status.code(), Some(0));
    // A guest failure message goes to stderr, and its status 1 to ours.
    let out = run(env
        .cli()
        .args(["run", "hello.wasm", "--", "file:/nonexistent/x"]));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("hello: file:/nonexistent/x"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn a_trap_is_reported_with_its_own_exit_code_after_the_output() {
    let env = shared();
    let out = run(env.cli().args(["run", "hello.wasm", "--", "trap"]));
    assert_eq!(out.status.code(), Some(134), "{}", text(&out.stderr));
    // Like `wasmtime run`: what the guest wrote, then why it failed.
    let stdout = text(&out.stdout);
    assert!(stdout.starts_with("Hello, wasimoff!"), "{stdout}");
    let stderr = text(&out.stderr);
    let panic = stderr.find("trap requested").expect("the guest's stderr");
    let reason = stderr
        .find("wasimoff: task failed: trapped")
        .expect("the reason");
    assert!(panic < reason, "{stderr}");
    assert_eq!(stderr.matches("trap requested").count(), 1, "{stderr}");
    // As a JSON line: the kind and the output too.
    let out = run(env
        .cli()
        .args(["run", "--json", "hello.wasm", "--", "trap"]));
    assert_eq!(out.status.code(), Some(134), "{}", text(&out.stderr));
    let line: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(line["code"], "task_failed", "{line}");
    assert_eq!(line["kind"], "trap", "{line}");
    assert!(
        line["stdout"].as_str().unwrap().starts_with("Hello"),
        "{line}"
    );
    assert!(
        line["stderr"].as_str().unwrap().contains("trap requested"),
        "{line}"
    );
}

#[test]
fn a_missing_module_is_not_found() {
    let env = shared();
    let out = run(env.cli().args(["run", "no-such-module.wasm"]));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("not found"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn run_with_a_rootfs_directory_writes_artifacts_to_out() {
    let env = shared();
    let dir = tempfile::tempdir().unwrap();
    let rootfs = dir.path().join("rootfs");
    std::fs::create_dir_all(rootfs.join("data")).unwrap();
    std::fs::write(rootfs.join("greeting.txt"), "Hello from my rootfs!\n").unwrap();
    std::fs::write(rootfs.join("data/numbers.txt"), "1 2 3\n").unwrap();
    let out_dir = dir.path().join("out");
    let out = run(env.cli().args([
        "run",
        "hello.wasm",
        "--rootfs",
        rootfs.to_str().unwrap(),
        "--artifact",
        "/greeting.txt",
        "--out",
        out_dir.to_str().unwrap(),
        "--",
        "print_rootfs",
        "file:/greeting.txt",
    ]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("numbers.txt"), "{stdout}");
    let greeting = std::fs::read_to_string(out_dir.join("greeting.txt")).unwrap();
    assert!(
        greeting.starts_with("Hello from my rootfs!\n"),
        "{greeting}"
    );
    assert!(
        greeting.contains("appended by the wasimoff hello guest"),
        "{greeting}"
    );
    assert!(text(&out.stderr).contains("wrote 1 artifact file(s)"));
}

#[test]
fn run_with_a_rootfs_zip_file() {
    let env = shared();
    let zip = root().join("examples/tasks/hello-rootfs.zip");
    let dir = tempfile::tempdir().unwrap();
    let out = run(env.cli().args([
        "run",
        "hello.wasm",
        "--rootfs",
        zip.to_str().unwrap(),
        "-a",
        "/greeting.txt",
        "-o",
        dir.path().to_str().unwrap(),
        "--",
        "file:/greeting.txt",
    ]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let greeting = std::fs::read_to_string(dir.path().join("greeting.txt")).unwrap();
    assert!(greeting.starts_with("Hello from the rootfs of the hello example task!"));
}

#[test]
fn run_json_prints_one_result_line() {
    let env = shared();
    let out = run(env
        .cli()
        .args(["run", "--json", "hello.wasm", "--", "exit:5"]));
    assert_eq!(out.status.code(), Some(5));
    let lines = json_lines(&out.stdout);
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["status"], 5);
    assert_eq!(lines[0]["provider"], "native-1");
}

#[test]
fn task_runs_example_task_files() {
    let env = shared();
    let tasks = root().join("examples/tasks");
    let out = run(env.cli().args([
        "task",
        tasks.join("hello-args.json").to_str().unwrap(),
        tasks.join("hello-exit.json").to_str().unwrap(),
        tasks.join("tsp-rand.json").to_str().unwrap(),
    ]));
    // hello-exit exits 3, so not every task exited 0.
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let mut lines = json_lines(&out.stdout);
    lines.sort_by_key(|l| l["index"].as_u64());
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[0]["reference"], "hello-args");
    assert_eq!(lines[0]["status"], 0);
    assert!(
        lines[0]["stdout"]
            .as_str()
            .unwrap()
            .contains("env GREETING=hello")
    );
    assert!(lines[0]["stdout"].as_str().unwrap().ends_with("hi\n"));
    assert_eq!(lines[1]["reference"], "hello-exit");
    assert_eq!(lines[1]["status"], 3);
    assert_eq!(lines[2]["status"], 0);
    assert!(lines[2]["stdout"].as_str().unwrap().contains("distance"));
}

#[test]
fn task_reads_arrays_and_json_lines() {
    let env = shared();
    let dir = tempfile::tempdir().unwrap();
    let one = |arg: &str| {
        format!(
            r#"{{"@type": "wasimoff/wasimoff.v1.Task.Wasip1.Request", "info": {{"reference": "{arg}"}}, "params": {{"binary": {{"ref": "hello.wasm"}}, "args": ["hello.wasm", "{arg}"]}}}}"#
        )
    };
    let array = dir.path().join("array.json");
    std::fs::write(&array, format!("[{}, {}]", one("a1"), one("a2"))).unwrap();
    let lines_file = dir.path().join("tasks.jsonl");
    std::fs::write(
        &lines_file,
        format!("{}\n{}\n{}\n", one("l1"), one("l2"), one("l3")),
    )
    .unwrap();
    let out = run(env.cli().args([
        "task",
        array.to_str().unwrap(),
        lines_file.to_str().unwrap(),
    ]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let mut refs: Vec<String> = json_lines(&out.stdout)
        .iter()
        .map(|l| l["reference"].as_str().unwrap().to_owned())
        .collect();
    refs.sort();
    assert_eq!(refs, ["a1", "a2", "l1", "l2", "l3"]);
}

#[test]
fn task_with_a_broken_file_fails_before_running() {
    let env = shared();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.json");
    std::fs::write(&file, r#"{"params": {"args": 5}}"#).unwrap();
    let out = run(env.cli().args(["task", file.to_str().unwrap()]));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("bad.json"),
        "{}",
        text(&out.stderr)
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn status_shows_slots_and_lists_providers() {
    let env = shared();
    let out = run(env.cli().args(["status"]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("health     ok"), "{stdout}");
    assert!(stdout.contains("providers  1"), "{stdout}");
    assert!(
        stdout.contains("slots      4 (4 workers + 0 prefetch)"),
        "{stdout}"
    );
    assert!(
        !stdout.contains("workers    "),
        "slots are not called workers: {stdout}"
    );
    assert!(
        stdout.contains("native-1"),
        "the providers are listed: {stdout}"
    );
    let out = run(env.cli().args(["status", "--json"]));
    let lines = json_lines(&out.stdout);
    assert_eq!(lines[0]["healthy"], true);
    assert_eq!(lines[0]["providers"], 1);
    assert_eq!(lines[0]["slots"], 4);
    assert_eq!(lines[0]["workers"], 4);
    assert_eq!(lines[0]["prefetch"], 0);
    assert_eq!(lines[0]["scheduler"], "locality");
    assert_eq!(lines[0]["provider_list"][0]["name"], "native-1");
}

#[test]
fn providers_prints_a_table_or_json() {
    let env = shared();
    let out = run(env.cli().args(["providers"]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let mut lines = stdout.lines();
    let header = lines.next().unwrap();
    for column in [
        "NAME",
        "KIND",
        "WORKERS",
        "PREFETCH",
        "SLOTS",
        "RUNNING",
        "DONE",
        "FAILED",
        "LAST SEEN",
    ] {
        assert!(header.contains(column), "{column} in {header}");
    }
    let row: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(row[..2], ["native-1", "native"], "{stdout}");
    assert_eq!(row[4], "4", "{stdout}");
    let out = run(env.cli().args(["providers", "--json"]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let list = json_lines(&out.stdout);
    let list = list[0].as_array().unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["name"], "native-1");
    assert_eq!(list[0]["kind"], "native");
    assert_eq!(list[0]["slots"], 4);
    assert_eq!(
        (&list[0]["workers"], &list[0]["prefetch"]),
        (&4.into(), &0.into())
    );
    assert!(
        list[0]["agent"]
            .as_str()
            .unwrap()
            .starts_with("wasimoff-provider/")
    );
}

#[test]
fn an_unreachable_broker_is_a_clear_error() {
    let out = run(
        std::process::Command::new(env!("CARGO_BIN_EXE_wasimoff")).args([
            "--broker",
            "http://127.0.0.1:1",
            "status",
        ]),
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("transport error"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn the_broker_url_comes_from_the_flag_before_the_environment() {
    let env = shared();
    let out = run(env
        .cli()
        .env("WASIMOFF_BROKER", "http://127.0.0.1:1")
        .args(["status", "--broker", &env.url]));
    assert!(out.status.success(), "{}", text(&out.stderr));
}

/// `wasimoff run` takes its arguments as `wasmtime run` does: no `--` needed after the module,
/// flags before the first argument are wasimoff's, and everything after it is the task's.
#[test]
fn run_takes_args_without_a_double_dash() {
    let env = shared();
    let out = run(env.cli().args(["run", "hello.wasm", "a", "b"]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains(r#"args = ["hello.wasm", "a", "b"]"#),
        "{}",
        text(&out.stdout)
    );
    let out = run(env.cli().args([
        "run",
        "hello.wasm",
        "--env",
        "K=v",
        "print_envs",
        "--not-ours",
        "-x",
    ]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains(r#"args = ["hello.wasm", "print_envs", "--not-ours", "-x"]"#),
        "{stdout}"
    );
    assert!(stdout.contains("env K=v"), "{stdout}");
}

/// A misspelt flag before the task's arguments is an error (usage, exit 2, with clap's hint),
/// not silently the guest's first argument; after `--` it is the guest's.
#[test]
fn run_refuses_an_unknown_flag_before_the_arguments() {
    let env = shared();
    let out = run(env.cli().args(["run", "hello.wasm", "--timout", "5"]));
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("'--timout'") && stderr.contains("'--timeout'"),
        "{stderr}"
    );
    let out = run(env.cli().args(["run", "hello.wasm", "--", "--timout", "5"]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains(r#"args = ["hello.wasm", "--timout", "5"]"#),
        "{}",
        text(&out.stdout)
    );
}

/// Piped stdin is the task's without `--stdin -`, and `--env KEY` passes our own value on.
#[test]
fn run_passes_piped_stdin_and_inherited_env() {
    use std::io::Write;
    use std::process::Stdio;
    let env = shared();
    let mut child = env
        .cli()
        .args([
            "run",
            "hello.wasm",
            "--env",
            "WASIMOFF_TEST_GREETING",
            "stdin",
            "print_envs",
        ])
        .env("WASIMOFF_TEST_GREETING", "from the shell")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"piped in\n").unwrap();
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("piped in\n"), "{stdout}");
    assert!(
        stdout.contains("env WASIMOFF_TEST_GREETING=from the shell"),
        "{stdout}"
    );
    // A name that is not set here is an error, not an empty value.
    let out = run(env
        .cli()
        .args(["run", "hello.wasm", "--env", "WASIMOFF_TEST_UNSET", "x"])
        .env_remove("WASIMOFF_TEST_UNSET"));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("WASIMOFF_TEST_UNSET is not set"),
        "{}",
        text(&out.stderr)
    );
}

/// A mistyped path is "no such file", not "not in storage"; a bare name that is neither here
/// nor stored says both.
#[test]
fn run_tells_a_missing_file_from_a_missing_stored_module() {
    let env = shared();
    let out = run(env.cli().args(["run", "./no/such/module.wasm", "x"]));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("module ./no/such/module.wasm: no such file or directory"),
        "{}",
        text(&out.stderr)
    );
    let out = run(env
        .cli()
        .args(["run", "hello.wasm", "--rootfs", "./mydir", "x"]));
    assert!(
        text(&out.stderr).contains("--rootfs ./mydir: no such file or directory"),
        "{}",
        text(&out.stderr)
    );
    let out = run(env.cli().args(["run", "nothing-here.wasm"]));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("not in storage"), "{stderr}");
    assert!(
        stderr.contains(r#"there is no file "nothing-here.wasm" here"#),
        "{stderr}"
    );
}

/// `upload` stores the file under its name unless told otherwise, as the original's CLI did.
#[test]
fn upload_aliases_by_file_name() {
    let env = shared();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("greeter-by-name.wasm");
    std::fs::write(&file, wasimoff_wasi_apps::HELLO).unwrap();
    let out = run(env.cli().args(["upload", file.to_str().unwrap()]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("stored as greeter-by-name.wasm"));
    let out = run(env.cli().args(["run", "greeter-by-name.wasm", "x"]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    // --no-name: no alias.
    let file = dir.path().join("unnamed.wasm");
    std::fs::write(&file, wasimoff_wasi_apps::HELLO).unwrap();
    let out = run(env
        .cli()
        .args(["upload", "--no-name", file.to_str().unwrap()]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = run(env.cli().args(["run", "unnamed.wasm"]));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
}

/// With no provider connected, `run` says so at once, and the deadline error says the task
/// waited in the queue with nobody there (not "deadline exceeded: deadline exceeded").
#[test]
fn run_without_providers_warns_and_explains_the_deadline() {
    let env = crate::support::Env::start(crate::support::config(100));
    env.upload(wasimoff_wasi_apps::HELLO, "hello.wasm");
    let out = run(env.cli().args(["run", "--timeout", "1", "hello.wasm", "x"]));
    assert_eq!(out.status.code(), Some(134), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("warning: no provider is connected to"),
        "{stderr}"
    );
    assert!(
        stderr.contains("deadline exceeded: the task waited")
            && stderr.contains("no provider is connected to this broker"),
        "{stderr}"
    );
}
