//! A full queue (HTTP 429): reported as such, and retried with `--retry` until a provider
//! arrives.

use std::{process::Stdio, time::Duration};

use wasimoff_client::Task;

use crate::support::{Env, config, run, text};

#[test]
fn a_full_queue_is_reported_then_retried_when_asked() {
    // One queue slot and no providers yet.
    let env = Env::start(config(1));
    env.upload(wasimoff_wasi_apps::HELLO, "hello.wasm");
    let client = env.client();
    env.spawn(async move {
        let _ = client.run(Task::wasip1("hello.wasm").arg("first")).await;
    });
    env.wait_status("one queued task", |s| s.queued == 1);

    let out = run(env.cli().args(["run", "hello.wasm", "--", "second"]));
    assert_eq!(out.status.code(), Some(75), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("queue full, retry later"),
        "{}",
        text(&out.stderr)
    );

    // The library says the same, with the broker's Retry-After.
    let client = env.client();
    let error = env
        .block_on(async move { client.run(Task::wasip1("hello.wasm")).await })
        .unwrap_err();
    assert!(error.is_queue_full(), "{error}");
    assert!(matches!(
        error,
        wasimoff_client::Error::QueueFull { retry_after: Some(d), .. } if d == Duration::from_secs(1)
    ));

    // With --retry the CLI keeps trying; a provider arrives and drains the queue.
    let child = env
        .cli()
        .args(["--retry", "run", "hello.wasm", "--", "second"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    env.add_provider("late", 1);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains(r#"args = ["hello.wasm", "second"]"#));
}

/// A full storage quota (HTTP 507) is not a full queue: waiting does not free it, so it is its
/// own error and is not retried (it used to be "unavailable", which is).
#[test]
fn a_full_quota_is_not_a_full_queue() {
    let mut config = config(16);
    config.client_tokens = vec!["quota-token".into()];
    config.limits.client_quota = Some(64 << 10);
    let env = Env::start(config);
    let client = wasimoff_client::Client::builder(env.url.clone())
        .token("quota-token")
        .build()
        .unwrap();
    // A valid module of 128 KiB: the header and one custom section.
    let mut module = wasm_encoder::Module::new();
    module.section(&wasm_encoder::CustomSection {
        name: "x".into(),
        data: vec![0; 128 << 10].into(),
    });
    let module = module.finish();
    let error = env
        .block_on(async move { client.upload(module, Some("big.wasm")).await })
        .unwrap_err();
    assert!(
        matches!(error, wasimoff_client::Error::StorageFull(_)),
        "{error:?}"
    );
    assert!(!error.is_queue_full() && !error.is_retryable(), "{error}");
    assert_eq!(error.code(), "resource_exhausted");
    assert!(error.to_string().contains("quota"), "{error}");
}
