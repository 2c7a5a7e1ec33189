//! The curl examples in `examples/curl/` against a running broker (skipped without `curl`).

use std::process::{Command, Stdio};

use crate::support::{root, shared, text};

fn curl_available() -> bool {
    let found = Command::new("curl")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        eprintln!("skipping the curl examples: `curl` is not installed");
    }
    found
}

fn script(name: &str) -> Command {
    let mut command = Command::new("sh");
    command
        .arg(root().join("examples/curl").join(name))
        .env("WASIMOFF_BROKER", &shared().url);
    command
}

#[test]
fn curl_examples_upload_run_a_task_and_exec() {
    if !curl_available() {
        return;
    }
    let tasks = root().join("examples/tasks");
    let dir = tempfile::tempdir().unwrap();
    let module = dir.path().join("hello.wasm");
    std::fs::write(&module, wasimoff_wasi_apps::HELLO).unwrap();

    // upload.sh prints the ref.
    let out = script("upload.sh")
        .args([module.to_str().unwrap(), "hello-curl.wasm"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout).trim(),
        wasimoff_core::store::Ref::of(wasimoff_wasi_apps::HELLO).as_str()
    );
    let out = script("upload.sh")
        .arg(tasks.join("README.md"))
        .output()
        .unwrap();
    assert!(!out.status.success(), "a text file is refused");

    // run-task.sh posts a task file as JSON (hello-args.json names hello.wasm, uploaded by the
    // shared setup) and prints the JSON response.
    let out = script("run-task.sh")
        .arg(tasks.join("hello-args.json"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let response: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(response["ok"]["status"], 0);
    assert_eq!(response["info"]["reference"], "hello-args");
    assert!(response["ok"]["stdout"].is_string());
    // A trap is a failure of the script.
    let out = script("run-task.sh")
        .arg(tasks.join("hello-trap.json"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    assert!(text(&out.stdout).contains("\"error\""));
    // A Connect error (bad JSON) too, with the Connect error body on stderr.
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, "{\"params\": 5}").unwrap();
    let out = script("run-task.sh").arg(&bad).output().unwrap();
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("invalid_argument"),
        "{}",
        text(&out.stderr)
    );

    // exec.sh: args, env, stdin; exits with the task's status.
    let mut child = script("exec.sh")
        .args(["hello-curl.wasm", "print_envs", "it's quoted", "stdin"])
        .env("WASIMOFF_ENV", "GREETING=hi")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(b"through curl\n")
            .unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains(r#"args = ["hello-curl.wasm", "print_envs", "it's quoted", "stdin"]"#),
        "{stdout}"
    );
    assert!(stdout.contains("env GREETING=hi"), "{stdout}");
    assert!(stdout.ends_with("through curl\n"), "{stdout}");
    let out = script("exec.sh")
        .args(["hello-curl.wasm", "exit:3"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    let out = script("exec.sh")
        .args(["no-such.wasm"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
}
